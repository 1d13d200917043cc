"""The map step on a GPU (numba.cuda): lookups, orientation, cells, quarantine, accumulation.

The same per-row bodies as the CPU drivers run on the device; only their drivers differ, so
the rows handed on (and so the cube) are identical. Tables (the prefix indexes, type codes,
private-link rules) are copied to the device once per process and reused. In ``map_task`` a
record's columns go to the device once; oriented rows, the quarantine filter, the per-cell
sums and the reduction to distinct (cell, remote IP) rows stay there, and only those results
come back. Imported only when the GPU backend was chosen (see :mod:`flowatlas.engine.backends`).
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
            "rule_links": cuda.to_device(np.ascontiguousarray(plan.rule_links, np.int16)),
            "geo_of": cuda.to_device(
                np.ascontiguousarray(plan.geo_of if plan.track_geo else np.zeros(1), np.int32)
            ),
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
    on_device: bool = False,
) -> tuple[Any, ...]:
    """(cell, remote hi, remote lo, volume, packets, reason) per record, computed on the GPU,
    then the interface link (int16) and the geography code (int32) where the plan tracks them.

    Host arrays, or with ``on_device`` the device arrays themselves (for the device-side
    quarantine filter and accumulation in :func:`accept_on_device`, :func:`accumulate_gpu`).
    """
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
    direction, region, remote_is_dst, link_type, link = K.orient_cuda(
        src_reg, dst_reg, put(exp_reg, np.int16), put(exp_id, np.int32), put(in_if, np.uint32),
        put(out_if, np.uint32), dev["rule_keys"], dev["rule_types"], dev["rule_links"],
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
    out: tuple[Any, ...] = (cell, r_hi, r_lo, vol, pk, reason)
    if plan.track_links:
        out = (*out, link)
    if plan.track_geo:
        geo = cuda.device_array(n, np.int32)
        K.gather_kernel[blocks, threads](dev["geo_of"], net, geo)
        out = (*out, geo)
    if on_device:
        return out
    return tuple(a.copy_to_host() for a in out)


def accept_on_device(
    shape: Any, cell: Any, r_hi: Any, r_lo: Any, vol: Any, pk: Any, reason: Any, *extra: Any
) -> tuple[Any, dict[int, int]]:
    """The records without a quarantine reason, still on the device, and the others' count.

    The device twin of ``pipeline._accept``: returns a :class:`~flowatlas.engine.pipeline.Partial`
    shaped like ``shape`` (``extra``: its link and geography columns, where it has them)
    whose columns are device arrays (rows in record order) and ``{reason code: records}``.
    """
    from flowatlas.kernels.cuda_accumulate import select_ok_cuda

    dropped, kept = select_ok_cuda(reason, cell, r_hi, r_lo, vol, pk, *extra)
    return shape.with_columns(list(kept)), dropped


def accumulate_gpu(parts: list[Any], plan: Any) -> tuple[Any, ...]:
    """The map step's accumulation on the device, results on the host.

    ``parts``: :class:`~flowatlas.engine.pipeline.Partial` rows of a task's fragments (device
    columns; empty ones may be host arrays). Returns (cell keys, (n, 3) sums of volume,
    packets and flows, remote hi, remote lo, cell key, volume, link sums, geography sums)
    exactly as the CPU path of ``map_task`` computes them: per-cell keys and sums identical
    array for array (first-seen order); the distinct (cell, remote IP) rows are the same
    rows, in first-seen order rather than grouped by address (the reduce step does not
    depend on that order); the link and geography sums as
    :func:`~flowatlas.kernels.tally.tally` gives them (None where the plan tracks none).
    """
    from numba import cuda

    from flowatlas.kernels.cuda_accumulate import (
        cell_sums_cuda,
        concat_cuda,
        dedup_pairs_cuda,
        tally_cuda,
    )
    from flowatlas.kernels.tally import tally

    parts = [p for p in parts if p.key.shape[0]]
    if not parts:
        e = np.empty(0, np.uint64)
        empty = np.empty(0, np.int64)
        tracked = _tracked(plan, np.empty(0, np.int16), np.empty(0, np.int32))
        link, geo = tally(empty, e, e, plan.bucket_us, *tracked)
        return (empty, np.empty((0, 3), np.uint64), e, e.copy(), empty.copy(), e.copy(), link,
                geo)  # fmt: skip

    def column(name: str) -> Any:
        cols = [getattr(p, name) for p in parts]
        return concat_cuda([cuda.to_device(c) if isinstance(c, np.ndarray) else c for c in cols])

    key, hi, lo, vol, pk = (column(f) for f in ("key", "hi", "lo", "vol", "pk"))
    cells, sums = cell_sums_cuda(key, vol, pk)
    _rep, cell, u_hi, u_lo, u_vol = dedup_pairs_cuda(key, hi, lo, vol)
    tracked = _tracked(plan, "link", "geo")
    link_sums, geo_sums = tally_cuda(
        key, vol, pk, plan.bucket_us, *(column(c) if c else None for c in tracked)
    )
    host = tuple(a.copy_to_host() for a in (cells, sums, u_hi, u_lo, cell, u_vol))
    return (*host, link_sums, geo_sums)


def _tracked(plan: Any, link: Any, geo: Any) -> tuple[Any, Any]:
    """``link`` and ``geo`` where the plan tracks them, else None."""
    return (link if plan.track_links else None), (geo if plan.track_geo else None)
