"""CUDA drivers for the kernels' shared per-row bodies.

Imported only when a GPU path is taken (never at package import), so CPU-only machines never
load CUDA. Each driver is a grid-stride loop around a body that is also compiled for the CPU
in its own module; under ``NUMBA_ENABLE_CUDASIM=1`` they run in numba's simulator.
"""

from __future__ import annotations

import os
import types

import numpy as np
from numba import config, cuda

from flowatlas.kernels.accumulate import _GOLD, mix64
from flowatlas.kernels.hll import _slot_body, check_p
from flowatlas.kernels.lpm import _lpm_body
from flowatlas.kernels.orient import CELL_PIECES, _cell_body, _orient_body

if os.environ.get("FLOWATLAS_CUDA_LAUNCH_LOG"):  # tests only: record launches' argument types
    from flowatlas.kernels.cuda_check import record_launches

    record_launches(os.environ["FLOWATLAS_CUDA_LAUNCH_LOG"])

_lpm_device = cuda.jit(device=True)(_lpm_body)


@cuda.jit
def lpm_kernel(
    hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, heads, runs, shift6, shift4
):  # pragma: no cover - compiled
    """out[i] = network id of address (hi[i], lo[i]) (the LPM body in lpm.py)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < hi.size:
        out[i] = _lpm_device(
            hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, heads, runs, shift6, shift4
        )
        i += stride


# --------------------------------------------------------------------------- orientation, cells


_orient_device = cuda.jit(device=True)(_orient_body)
_cell_device = cuda.jit(device=True)(
    # the same body, its pieces' CPU functions (globals by name) swapped for device twins
    types.FunctionType(
        _cell_body.__code__,
        {**_cell_body.__globals__}
        | {name: cuda.jit(device=True)(body) for name, body in CELL_PIECES.items()},
        _cell_body.__name__,
    )
)


@cuda.jit
def orient_kernel(src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types,
                  rule_links, direction, region, remote_is_dst, link_type,
                  link):  # fmt: skip  # pragma: no cover
    """Per record: direction, region, which end is remote, the interface link and the type it
    gives (orient.py)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < src_reg.size:
        d, r, rd, lt, lk = _orient_device(
            src_reg[i],
            dst_reg[i],
            exp_reg[i],
            exp_id[i],
            in_if[i],
            out_if[i],
            rule_keys,
            rule_types,
            rule_links,
        )
        direction[i] = d
        region[i] = r
        remote_is_dst[i] = rd
        link_type[i] = lt
        link[i] = lk
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
    """(blocks, threads) for the grid-stride kernels here: about one thread per row.

    numba's simulator runs every CUDA thread as a Python thread, so there one block of 32
    threads strides over the rows (still racing each other), at a fraction of the cost.
    """
    if config.ENABLE_CUDASIM:
        return 1, min(threads, 32)
    return max(1, min((n + threads - 1) // threads, 65_535)), threads


def orient_cuda(
    src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types, rule_links
):
    """Device twin of :func:`flowatlas.kernels.orient.orient_cpu` (device arrays in and out)."""
    n = src_reg.shape[0]
    direction = cuda.device_array(n, np.uint8)
    region = cuda.device_array(n, np.int16)
    remote_is_dst = cuda.device_array(n, np.bool_)
    link_type = cuda.device_array(n, np.int16)
    link = cuda.device_array(n, np.int16)
    if n:
        blocks, threads = _grid(n)
        orient_kernel[blocks, threads](
            src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types,
            rule_links, direction, region, remote_is_dst, link_type, link,
        )  # fmt: skip
    return direction, region, remote_is_dst, link_type, link


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


# --------------------------------------------------------------------------- HLL sketches


_mix64_device = cuda.jit(device=True)(mix64.py_func)
_hll_slot_device = cuda.jit(device=True)(_slot_body)


@cuda.jit(device=True)
def _ip_hash_device(hi, lo):  # pragma: no cover - compiled
    """``accumulate.ip_hash`` on the device: the same two splitmix64 finalisers.

    A CPU ``njit`` function cannot be called from a CUDA kernel, so the one-line composition
    is repeated here around the device twin of ``mix64``; tests check it equals ``ip_hash``.
    """
    return _mix64_device(hi ^ _mix64_device(lo + _GOLD))


@cuda.jit
def hll_zero_kernel(words):  # pragma: no cover - compiled
    """words[:] = 0 (device arrays from cuda.device_array are not cleared)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < words.size:
        words[i] = 0
        i += stride


@cuda.jit
def hll_update_kernel(keys, hi, lo, n_keys, p, words, bad):  # pragma: no cover - compiled
    """Racing register max, the CUDA atomic version of ``hll._update_ser``.

    Registers are uint8, four to a uint32 word (little-endian, as the host reads them back);
    CUDA has no byte-wide atomic max, so a compare-and-swap loop on the word raises one byte,
    and stops at once when the register already holds at least this rank (the common case
    once a sketch has filled, so most rows cost one read and no atomic).
    """
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < keys.size:
        k = keys[i]
        if k < 0 or k >= n_keys:
            cuda.atomic.add(bad, 0, 1)
        else:
            idx, rank = _hll_slot_device(_ip_hash_device(hi[i], lo[i]), p)
            flat = (k << p) + np.int64(idx)
            w = flat >> 2
            sh = np.uint32((flat & 3) * 8)
            r = np.uint32(rank)
            old = words[w]
            while ((old >> sh) & np.uint32(0xFF)) < r:
                new = np.uint32((old & ~(np.uint32(0xFF) << sh)) | (r << sh))
                seen = cuda.atomic.cas(words, w, old, new)
                if seen == old:
                    break
                old = seen
        i += stride


def hll_update_cuda(keys, hi, lo, n_keys: int, p: int = 12):
    """Device twin of :func:`flowatlas.kernels.hll.update`: registers ``(n_keys, 2**p)`` uint8.

    ``keys`` (int64, dense in ``[0, n_keys)``), ``hi`` and ``lo`` (uint64) are device arrays
    (or anything with ``__cuda_array_interface__``); the result stays on the device. Rows with
    a key out of range raise ValueError after the kernel (their registers are left alone).
    """
    p = check_p(p)
    if int(n_keys) != n_keys or n_keys < 0:
        raise ValueError(f"n_keys must be a non-negative integer, got {n_keys!r}")
    n_keys = int(n_keys)
    m = 1 << p
    words = cuda.device_array(n_keys * m // 4, np.uint32)
    if words.size:
        blocks, threads = _grid(words.size)
        hll_zero_kernel[blocks, threads](words)
    n = keys.shape[0]
    if n:
        bad = cuda.to_device(np.zeros(1, np.int64))
        blocks, threads = _grid(n)
        hll_update_kernel[blocks, threads](keys, hi, lo, np.int64(n_keys), np.int64(p), words, bad)
        n_bad = int(bad.copy_to_host()[0])
        if n_bad:
            raise ValueError(f"{n_bad} keys lie outside [0, {n_keys})")
    return words.view(np.uint8).reshape(n_keys, m)


# --------------------------------------------------------------------------- remote end, type


@cuda.jit
def remote_kernel(
    remote_is_dst, src_hi, src_lo, dst_hi, dst_lo, r_hi, r_lo, is_v6
):  # pragma: no cover
    """The remote end of each record and whether it is IPv6 (not IPv4-mapped)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < remote_is_dst.size:
        if remote_is_dst[i]:
            h = dst_hi[i]
            lw = dst_lo[i]
        else:
            h = src_hi[i]
            lw = src_lo[i]
        r_hi[i] = h
        r_lo[i] = lw
        v4 = h == 0 and (lw >> np.uint64(32)) == np.uint64(0xFFFF)
        is_v6[i] = np.uint8(0) if v4 else np.uint8(1)
        i += stride


@cuda.jit
def type_kernel(
    net, type_codes, user_override, link_type, direction, internal_type, ntype
):  # pragma: no cover
    """Network type of each record: Internal, else a private-link rule unless a user rule set
    the remote network's type, else the classification."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    last = type_codes.size - 1
    while i < net.size:
        j = net[i] if net[i] >= 0 else last
        t = type_codes[j]
        if link_type[i] >= 0 and not user_override[j]:
            t = link_type[i]
        if direction[i] == 2:
            t = internal_type
        ntype[i] = t
        i += stride


@cuda.jit
def gather_kernel(table, index, out):  # pragma: no cover
    """out[i] = table[index[i]], with index -1 reading the table's last entry."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    last = table.size - 1
    while i < index.size:
        out[i] = table[index[i]] if index[i] >= 0 else table[last]
        i += stride
