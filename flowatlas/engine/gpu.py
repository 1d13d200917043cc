"""The map step's per-record kernels on a GPU (numba.cuda): lookups, orientation, cells.

The same per-row bodies as the CPU drivers run on the device; only their drivers differ, so
the rows handed on (and so the cube) are identical. Tables (the prefix indexes, type codes,
private-link rules) are copied to the device once per process and reused. Imported only when
the GPU backend was chosen (see :mod:`flowatlas.engine.backends`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_DEVICE_TABLES: dict[str, Any] = {}


def _on_device(plan: Any) -> dict[str, Any]:
    """The plan's lookup tables on the device (cached per plan content: one GPU per process,
    as dask-cuda runs it)."""
    from numba import cuda

    key = plan.digest()
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = {
            "local": plan.local_table.index.to_device(),
            "local_region": cuda.to_device(np.ascontiguousarray(plan.local_region, np.int32)),
            "class": plan.class_table.index.to_device(),
            "type_codes": cuda.to_device(np.ascontiguousarray(plan.type_codes, np.int16)),
            "user_override": cuda.to_device(np.ascontiguousarray(plan.user_override, np.bool_)),
            "rule_keys": cuda.to_device(np.ascontiguousarray(plan.rule_keys, np.uint64)),
            "rule_types": cuda.to_device(np.ascontiguousarray(plan.rule_types, np.int16)),
        }
    return _DEVICE_TABLES[key]


def orient_cells_gpu(
    plan: Any,
    src_hi: np.ndarray,
    src_lo: np.ndarray,
    dst_hi: np.ndarray,
    dst_lo: np.ndarray,
    exp_reg: np.ndarray,
    exp_id: np.ndarray,
    in_if: np.ndarray,
    out_if: np.ndarray,
    t_us: np.ndarray,
    nbytes: np.ndarray,
    npackets: np.ndarray,
    rate: np.ndarray,
    scaled: bool,
) -> tuple[np.ndarray, ...]:
    """(cell, remote hi, remote lo, volume, packets, reason) per record, computed on the GPU."""
    from numba import cuda

    from flowatlas.kernels import cuda as K
    from flowatlas.kernels.lpm import lookup_cuda

    dev = _on_device(plan)
    n = src_hi.size
    blocks, threads = K._grid(n)

    def put(a: np.ndarray, dtype: Any) -> Any:
        return cuda.to_device(np.ascontiguousarray(a, dtype))

    d_src_hi, d_src_lo = put(src_hi, np.uint64), put(src_lo, np.uint64)
    d_dst_hi, d_dst_lo = put(dst_hi, np.uint64), put(dst_lo, np.uint64)
    src_reg = cuda.device_array(n, np.int32)
    dst_reg = cuda.device_array(n, np.int32)
    for hi_, lo_, reg in ((d_src_hi, d_src_lo, src_reg), (d_dst_hi, d_dst_lo, dst_reg)):
        net = lookup_cuda(dev["local"], hi_, lo_)
        K.gather_kernel[blocks, threads](dev["local_region"], net, reg)
    direction, region, remote_is_dst, link_type = K.orient_cuda(
        src_reg, dst_reg, put(exp_reg, np.int16), put(exp_id, np.int32), put(in_if, np.uint32),
        put(out_if, np.uint32), dev["rule_keys"], dev["rule_types"],
    )  # fmt: skip
    r_hi = cuda.device_array(n, np.uint64)
    r_lo = cuda.device_array(n, np.uint64)
    is_v6 = cuda.device_array(n, np.uint8)
    K.remote_kernel[blocks, threads](
        remote_is_dst, d_src_hi, d_src_lo, d_dst_hi, d_dst_lo, r_hi, r_lo, is_v6
    )
    net = lookup_cuda(dev["class"], r_hi, r_lo)
    ntype = cuda.device_array(n, np.int16)
    K.type_kernel[blocks, threads](
        net,
        dev["type_codes"],
        dev["user_override"],
        link_type,
        direction,
        np.int16(plan.internal_type),
        ntype,
    )
    cell, vol, pk, reason = K.cells_cuda(
        put(t_us, np.int64), plan.bucket_us, region, ntype, direction, is_v6,
        put(nbytes, np.uint64), put(npackets, np.uint64), put(rate, np.uint32), scaled,
    )  # fmt: skip
    return (
        cell.copy_to_host(),
        r_hi.copy_to_host(),
        r_lo.copy_to_host(),
        vol.copy_to_host(),
        pk.copy_to_host(),
        reason.copy_to_host(),
    )
