"""CUDA drivers for the kernels' shared per-row bodies.

Imported only when a GPU path is taken (never at package import), so CPU-only machines never
load CUDA. Each driver is a grid-stride loop around a body that is also compiled for the CPU
in its own module; under ``NUMBA_ENABLE_CUDASIM=1`` they run in numba's simulator.
"""

from __future__ import annotations

from numba import cuda

from flowatlas.kernels.lpm import _lpm_body

_lpm_device = cuda.jit(device=True)(_lpm_body)


@cuda.jit
def lpm_kernel(
    hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, nodes, shift6
):  # pragma: no cover - compiled
    """out[i] = network id of address (hi[i], lo[i]) (the LPM body in lpm.py)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < hi.size:
        out[i] = _lpm_device(hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, nodes, shift6)
        i += stride


# --------------------------------------------------------------------------- orientation, cells

from flowatlas.kernels.orient import _cell_body, _orient_body  # noqa: E402

_orient_device = cuda.jit(device=True)(_orient_body)
_cell_device = cuda.jit(device=True)(_cell_body)


@cuda.jit
def orient_kernel(src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types,
                  direction, region, remote_is_dst, link_type):  # fmt: skip  # pragma: no cover
    """Per record: direction, region, which end is remote, private-link type (orient.py)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < src_reg.size:
        d, r, rd, lt = _orient_device(
            src_reg[i],
            dst_reg[i],
            exp_reg[i],
            exp_id[i],
            in_if[i],
            out_if[i],
            rule_keys,
            rule_types,
        )
        direction[i] = d
        region[i] = r
        remote_is_dst[i] = rd
        link_type[i] = lt
        i += stride


@cuda.jit
def cell_kernel(t_us, bucket_us, region, ntype, direction, is_v6, nbytes, npackets, rate, scaled,
                cell, vol, pk, reason):  # fmt: skip  # pragma: no cover
    """Per record: packed cell key, sampling-corrected volume and packets, quarantine reason."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < t_us.size:
        c, v, p, q = _cell_device(
            t_us[i],
            bucket_us,
            region[i],
            ntype[i],
            direction[i],
            is_v6[i],
            nbytes[i],
            npackets[i],
            rate[i],
            scaled,
        )
        cell[i] = c
        vol[i] = v
        pk[i] = p
        reason[i] = q
        i += stride


def _grid(n: int, threads: int = 256) -> tuple[int, int]:
    return max(1, min((n + threads - 1) // threads, 65_535)), threads


def orient_cuda(src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types):
    """Device twin of :func:`flowatlas.kernels.orient.orient_cpu` (device arrays in and out)."""
    import numpy as np

    n = src_reg.shape[0]
    direction = cuda.device_array(n, np.uint8)
    region = cuda.device_array(n, np.int16)
    remote_is_dst = cuda.device_array(n, np.bool_)
    link_type = cuda.device_array(n, np.int16)
    if n:
        blocks, threads = _grid(n)
        orient_kernel[blocks, threads](
            src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types,
            direction, region, remote_is_dst, link_type,
        )  # fmt: skip
    return direction, region, remote_is_dst, link_type


def cells_cuda(t_us, bucket_us, region, ntype, direction, is_v6, nbytes, npackets, rate, scaled):
    """Device twin of :func:`flowatlas.kernels.orient.cells_cpu` (device arrays in and out)."""
    import numpy as np

    n = t_us.shape[0]
    cell = cuda.device_array(n, np.int64)
    vol = cuda.device_array(n, np.uint64)
    pk = cuda.device_array(n, np.uint64)
    reason = cuda.device_array(n, np.uint8)
    if n:
        blocks, threads = _grid(n)
        cell_kernel[blocks, threads](
            t_us, np.int64(bucket_us), region, ntype, direction, is_v6, nbytes, npackets, rate,
            bool(scaled), cell, vol, pk, reason,
        )  # fmt: skip
    return cell, vol, pk, reason
