"""CUDA drivers for the map step's accumulation: per-cell sums and distinct (cell, IP) rows.

Device twins of ``key_ids`` + ``dense_sums`` (volume, packets and flows per packed cell key)
and of ``dedup_per_ip`` (one row per distinct (cell, remote address) with its summed volume),
all three in :mod:`flowatlas.kernels.distinct`. Imported only on the GPU path (it imports
``numba.cuda``); under ``NUMBA_ENABLE_CUDASIM=1`` everything runs in numba's simulator.

How the device hash aggregation works, and why it agrees with the CPU exactly:

- One open-addressing table per aggregation, at most half full (capacity: a power of two
  >= 2 x rows). A slot is claimed by an atomic compare-and-swap of the claiming *row number*
  into the slot (-1 = empty). The key itself is never written: a thread compares its key
  with the key of the row that owns the slot, read from the (immutable) input columns. So a
  192-bit (cell, hi, lo) key needs no 192-bit atomic and no "slot being written" state:
  once the CAS has landed, the owner's key is readable.
- Slots are found with the project's one hash (``mix64`` for cell keys, ``ip_hash`` mixed
  with the cell for (cell, address) keys; their device twins live in ``kernels/cuda.py``)
  and linear probing, as the CPU tables do.
- Sums are uint64 ``cuda.atomic.add``; the old value it returns flags a wrap-around
  (``old + v < old``). All addends are non-negative, so a total >= 2**64 wraps at some step
  in *every* order, and :class:`~flowatlas.kernels.accumulate.CounterOverflow` is raised
  exactly when the CPU raises it.
- Atomics make slot order racy, so nothing is read out in slot order: ``cuda.atomic.min``
  keeps each slot's first row, and the distinct keys come out in *first-seen row order*
  (a row is output when it is its slot's first row; an exclusive prefix sum over those
  flags gives its output position). That is the order ``key_ids`` gives on the CPU, so
  the per-cell keys and sums are identical to the CPU's, array for array. Distinct
  (cell, address) rows come out in their first-seen order too, where the CPU groups them
  by address; the reduce step does not depend on that order (tests/test_cuda_accumulate.py
  checks the cube is byte-for-byte the same for any order of the rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import config, cuda, int64

from flowatlas.kernels.accumulate import _GOLD, CounterOverflow
from flowatlas.kernels.cuda import _grid, _ip_hash_device, _mix64_device
from flowatlas.kernels.orient import DIM_BITS
from flowatlas.kernels.tally import GEO_BITS, GEO_DAY_SHIFT, LINK_BITS, US_PER_DAY

#: "no row yet" in a slot's first-row (atomic min) column
_NO_ROW = np.int64(0x7FFF_FFFF_FFFF_FFFF)
#: numba's simulator runs every CUDA thread as a Python thread: there, small prefix-sum
#: blocks (grid-stride kernels get few threads from ``_grid`` too)
_SIMULATED = bool(config.ENABLE_CUDASIM)
#: threads per block of the prefix sum, elements per thread, elements per block (tile)
SCAN_THREADS = 4 if _SIMULATED else 256
SCAN_ITEMS = 128 if _SIMULATED else 8
SCAN_TILE = SCAN_THREADS * SCAN_ITEMS


def table_capacity(n: int) -> int:
    """Slots for ``n`` rows: a power of two, at least 16 and at least 2n (load <= 1/2)."""
    cap = 16
    while cap < 2 * n:
        cap <<= 1
    return cap


# --------------------------------------------------------------------------- per-row bodies


def _wrapped(old, v):  # pragma: no cover - compiled
    """Whether adding ``v`` to a uint64 ``old`` wrapped around (the CPU kernels' rule)."""
    return old + v < old


_wrapped_device = cuda.jit(device=True)(_wrapped)


@cuda.jit(device=True)
def _pair_hash_device(cell, hi, lo):  # pragma: no cover - compiled
    """Slot hash of a (cell, address) key: the address's ``ip_hash`` mixed with the cell."""
    return _mix64_device(_ip_hash_device(hi, lo) ^ (np.uint64(cell) * _GOLD))


# --------------------------------------------------------------------------- kernels


@cuda.jit
def _init_kernel(t_row, t_min, t_sum):  # pragma: no cover - compiled
    """Empty table: no owner row, no first row, zero sums (device memory is not cleared)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < t_row.size:
        t_row[i] = -1
        t_min[i] = _NO_ROW
        for c in range(t_sum.shape[1]):
            t_sum[i, c] = 0
        i += stride


@cuda.jit
def _cell_insert_kernel(
    key, vol, pk, mask, t_row, t_min, t_sum, slot_of, overflow
):  # pragma: no cover - compiled
    """Add each row's volume, packets and one flow to its cell key's slot."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < key.size:
        k = key[i]
        row = np.int64(i)
        s = np.int64(_mix64_device(np.uint64(k)) & np.uint64(mask))
        while True:
            r = t_row[s]
            if r < 0:
                r = cuda.atomic.cas(t_row, s, np.int64(-1), row)
                if r < 0:  # claimed: this row owns the slot
                    r = row
            if key[r] == k:
                break
            s = (s + np.int64(1)) & mask
        slot_of[i] = s
        if row < t_min[s]:  # only ever lowered: a stale read just costs the atomic
            cuda.atomic.min(t_min, s, row)
        v = vol[i]
        if _wrapped_device(cuda.atomic.add(t_sum, (s, 0), v), v):
            overflow[0] = 1
        p = pk[i]
        if _wrapped_device(cuda.atomic.add(t_sum, (s, 1), p), p):
            overflow[0] = 1
        cuda.atomic.add(t_sum, (s, 2), np.uint64(1))
        i += stride


@cuda.jit
def _pair_insert_kernel(
    cell, hi, lo, vol, mask, t_row, t_min, t_sum, slot_of, overflow
):  # pragma: no cover - compiled
    """Add each row's volume to the slot of its (cell, remote address) key."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < cell.size:
        c = cell[i]
        h = hi[i]
        lw = lo[i]
        row = np.int64(i)
        s = np.int64(_pair_hash_device(c, h, lw) & np.uint64(mask))
        while True:
            r = t_row[s]
            if r < 0:
                r = cuda.atomic.cas(t_row, s, np.int64(-1), row)
                if r < 0:
                    r = row
            if cell[r] == c and hi[r] == h and lo[r] == lw:
                break
            s = (s + np.int64(1)) & mask
        slot_of[i] = s
        if row < t_min[s]:  # only ever lowered: a stale read just costs the atomic
            cuda.atomic.min(t_min, s, row)
        v = vol[i]
        if _wrapped_device(cuda.atomic.add(t_sum, (s, 0), v), v):
            overflow[0] = 1
        i += stride


@cuda.jit
def _first_kernel(slot_of, t_min, flag):  # pragma: no cover - compiled
    """flag[i] = 1 where row i is the first row of its slot (the row the CPU keeps)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < slot_of.size:
        flag[i] = 1 if t_min[slot_of[i]] == i else 0
        i += stride


@cuda.jit
def _cell_out_kernel(key, slot_of, t_min, pos, t_sum, out_key, out_sum):  # pragma: no cover
    """Write each cell's key and sums at its first row's rank (pos: inclusive prefix sum)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < key.size:
        s = slot_of[i]
        if t_min[s] == i:
            j = pos[i] - 1
            out_key[j] = key[i]
            for c in range(3):
                out_sum[j, c] = t_sum[s, c]
        i += stride


@cuda.jit
def _pair_out_kernel(cell, hi, lo, slot_of, t_min, pos, t_sum, rep, out_cell, out_hi, out_lo,
                     out_vol):  # fmt: skip  # pragma: no cover
    """Write each distinct (cell, address) row, at its first row's rank."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < cell.size:
        s = slot_of[i]
        if t_min[s] == i:
            j = pos[i] - 1
            rep[j] = i
            out_cell[j] = cell[i]
            out_hi[j] = hi[i]
            out_lo[j] = lo[i]
            out_vol[j] = t_sum[s, 0]
        i += stride


@cuda.jit
def _scan_block_kernel(a, block_sums):  # pragma: no cover - compiled
    """Inclusive prefix sum of each block's SCAN_TILE elements, in place; block totals.

    Each thread scans SCAN_ITEMS consecutive elements on its own, the block scans the
    threads' totals in shared memory (Hillis-Steele), and each thread adds its offset.
    """
    tmp = cuda.shared.array(SCAN_THREADS, int64)
    t = cuda.threadIdx.x
    base = cuda.blockIdx.x * SCAN_TILE + t * SCAN_ITEMS
    acc = 0
    for k in range(SCAN_ITEMS):
        j = base + k
        if j < a.size:
            acc += a[j]
            a[j] = acc
    tmp[t] = acc
    cuda.syncthreads()
    d = 1
    while d < SCAN_THREADS:
        v = tmp[t - d] if t >= d else 0
        cuda.syncthreads()
        tmp[t] += v
        cuda.syncthreads()
        d *= 2
    if t > 0:
        off = tmp[t - 1]
        for k in range(SCAN_ITEMS):
            j = base + k
            if j < a.size:
                a[j] += off
    if t == SCAN_THREADS - 1:
        block_sums[cuda.blockIdx.x] = tmp[t]


@cuda.jit
def _scan_add_kernel(a, block_sums):  # pragma: no cover - compiled
    """Add the (scanned) totals of the tiles before each element's tile."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < a.size:
        b = i // SCAN_TILE
        if b > 0:
            a[i] += block_sums[b - 1]
        i += stride


@cuda.jit
def _keep_kernel(reason, flag, dropped):  # pragma: no cover - compiled
    """flag[i] = 1 for rows without a quarantine reason; count the others per reason."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < reason.size:
        r = reason[i]
        if r == 0:
            flag[i] = 1
        else:
            flag[i] = 0
            cuda.atomic.add(dropped, np.int64(r), 1)
        i += stride


@cuda.jit
def _compact_kernel(reason, pos, src, dst):  # pragma: no cover - compiled
    """dst[pos[i] - 1] = src[i] for the kept rows (reason 0), in row order."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < reason.size:
        if reason[i] == 0:
            dst[pos[i] - 1] = src[i]
        i += stride


@cuda.jit
def _link_key_kernel(cell, link, out_key, drop):  # pragma: no cover - compiled
    """The (cell, interface link) key of each record; drop[i] = 1 where no link carries it."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < cell.size:
        lk = link[i]
        if lk >= 0:
            out_key[i] = (cell[i] << LINK_BITS) | int64(lk)
            drop[i] = 0
        else:
            out_key[i] = 0
            drop[i] = 1
        i += stride


@cuda.jit
def _geo_key_kernel(cell, geo, bucket_us, out_key):  # pragma: no cover - compiled
    """The (day, dimensions, geography) key of each record (as ``tally._tally`` makes it)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < cell.size:
        c = cell[i]
        day = ((c >> DIM_BITS) * bucket_us) // US_PER_DAY
        out_key[i] = (
            (day << GEO_DAY_SHIFT) | ((c & int64((1 << DIM_BITS) - 1)) << GEO_BITS) | int64(geo[i])
        )
        i += stride


# --------------------------------------------------------------------------- drivers


def inclusive_scan_cuda(a: Any) -> None:
    """In-place inclusive prefix sum of a device int64 array (tiles, then tile totals)."""
    n = a.shape[0]
    if n == 0:
        return
    tiles = (n + SCAN_TILE - 1) // SCAN_TILE
    tile_sums = cuda.device_array(tiles, np.int64)
    _scan_block_kernel[tiles, SCAN_THREADS](a, tile_sums)
    if tiles > 1:
        inclusive_scan_cuda(tile_sums)
        blocks, threads = _grid(n)
        _scan_add_kernel[blocks, threads](a, tile_sums)


def _last(a: Any) -> int:
    """The last element of a non-empty device array, on the host."""
    return int(a[a.shape[0] - 1 :].copy_to_host()[0])


def _table(n: int, n_sums: int) -> tuple[Any, Any, Any, int]:
    cap = table_capacity(n)
    t_row = cuda.device_array(cap, np.int64)
    t_min = cuda.device_array(cap, np.int64)
    t_sum = cuda.device_array((cap, n_sums), np.uint64)
    blocks, threads = _grid(cap)
    _init_kernel[blocks, threads](t_row, t_min, t_sum)
    return t_row, t_min, t_sum, cap - 1


def _first_rows(slot_of: Any, t_min: Any) -> tuple[Any, int]:
    """Output rank (1-based, at each slot's first row) and the number of distinct keys."""
    n = slot_of.shape[0]
    pos = cuda.device_array(n, np.int64)
    blocks, threads = _grid(n)
    _first_kernel[blocks, threads](slot_of, t_min, pos)
    inclusive_scan_cuda(pos)
    return pos, _last(pos)


def cell_sums_cuda(key: Any, vol: Any, pk: Any) -> tuple[Any, Any]:
    """Distinct int64 keys in first-seen order and their (m, 3) uint64 sums, on the device.

    The device twin of ``key_ids`` followed by ``dense_sums`` (volume, packets, rows per key),
    array for array. ``key`` (int64), ``vol`` and ``pk`` (uint64) are device arrays (or
    anything with ``__cuda_array_interface__``); the results stay on the device. A sum that
    would wrap raises :class:`CounterOverflow` with the CPU's message.
    """
    n = key.shape[0]
    if n == 0:
        return cuda.device_array(0, np.int64), cuda.device_array((0, 3), np.uint64)
    t_row, t_min, t_sum, mask = _table(n, 3)
    slot_of = cuda.device_array(n, np.int64)
    overflow = cuda.to_device(np.zeros(1, np.int64))
    blocks, threads = _grid(n)
    _cell_insert_kernel[blocks, threads](
        key, vol, pk, np.int64(mask), t_row, t_min, t_sum, slot_of, overflow
    )
    if overflow.copy_to_host()[0]:
        raise CounterOverflow("a uint64 sum of bytes or packets overflowed")
    pos, m = _first_rows(slot_of, t_min)
    out_key = cuda.device_array(m, np.int64)
    out_sum = cuda.device_array((m, 3), np.uint64)
    _cell_out_kernel[blocks, threads](key, slot_of, t_min, pos, t_sum, out_key, out_sum)
    return out_key, out_sum


def dedup_pairs_cuda(cell: Any, hi: Any, lo: Any, vol: Any) -> tuple[Any, ...]:
    """Distinct (cell, address) rows with summed volume, on the device, first-seen order.

    Returns device arrays (rep, cell, hi, lo, vol): ``rep`` is each distinct row's first
    input row, exactly the representative row :func:`~flowatlas.kernels.distinct.dedup_per_ip`
    picks; ``cell`` is the key itself (any int64, no dense numbering needed). The CPU groups
    its output by address; here rows come in first-seen order (sort both by ``rep`` to
    compare). A volume sum that would wrap raises :class:`CounterOverflow`.
    """
    n = cell.shape[0]
    if n == 0:
        return (
            cuda.device_array(0, np.int64),
            cuda.device_array(0, np.int64),
            cuda.device_array(0, np.uint64),
            cuda.device_array(0, np.uint64),
            cuda.device_array(0, np.uint64),
        )
    t_row, t_min, t_sum, mask = _table(n, 1)
    slot_of = cuda.device_array(n, np.int64)
    overflow = cuda.to_device(np.zeros(1, np.int64))
    blocks, threads = _grid(n)
    _pair_insert_kernel[blocks, threads](
        cell, hi, lo, vol, np.int64(mask), t_row, t_min, t_sum, slot_of, overflow
    )
    if overflow.copy_to_host()[0]:
        raise CounterOverflow("a uint64 sum of bytes overflowed")
    pos, m = _first_rows(slot_of, t_min)
    out = (
        cuda.device_array(m, np.int64),
        cuda.device_array(m, np.int64),
        cuda.device_array(m, np.uint64),
        cuda.device_array(m, np.uint64),
        cuda.device_array(m, np.uint64),
    )
    _pair_out_kernel[blocks, threads](cell, hi, lo, slot_of, t_min, pos, t_sum, *out)
    return out


def select_ok_cuda(reason: Any, *cols: Any) -> tuple[dict[int, int], tuple[Any, ...]]:
    """The rows without a quarantine reason (reason 0), in row order, and the others' count.

    ``reason`` is a device uint8 array, ``cols`` device arrays of the same length. Returns
    ``{reason code: rows}`` for the dropped rows (host ints) and the kept rows of each column
    (device arrays): the device twin of the filtering in ``pipeline._accept``.
    """
    n = reason.shape[0]
    dropped = cuda.to_device(np.zeros(256, np.int64))
    if n == 0:
        return {}, tuple(cols)
    pos = cuda.device_array(n, np.int64)
    blocks, threads = _grid(n)
    _keep_kernel[blocks, threads](reason, pos, dropped)
    counts = dropped.copy_to_host()
    if not counts.any():
        return {}, tuple(cols)
    inclusive_scan_cuda(pos)
    m = _last(pos)
    kept = []
    for col in cols:
        out = cuda.device_array(m, col.dtype)
        _compact_kernel[blocks, threads](reason, pos, col, out)
        kept.append(out)
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts)}, tuple(kept)


def concat_cuda(arrays: list[Any]) -> Any:
    """One device array holding ``arrays`` (device arrays of one dtype) end to end."""
    if len(arrays) == 1:
        return arrays[0]
    n = sum(a.shape[0] for a in arrays)
    out = cuda.device_array(n, arrays[0].dtype)
    at = 0
    for a in arrays:
        m = a.shape[0]
        if m:
            out[at : at + m].copy_to_device(a)
        at += m
    return out


def tally_cuda(
    cell: Any, vol: Any, pk: Any, bucket_us: int, link: Any = None, geo: Any = None
) -> tuple[tuple[np.ndarray, np.ndarray] | None, tuple[np.ndarray, np.ndarray] | None]:
    """Device twin of :func:`flowatlas.kernels.tally.tally`: the same sorted host arrays,
    from device columns (keys are made and summed on the device; only the sums come back)."""
    n = cell.shape[0]
    blocks, threads = _grid(max(n, 1))

    def summed(key: Any, v: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
        keys, sums = cell_sums_cuda(key, v, p)
        keys, sums = keys.copy_to_host(), sums.copy_to_host()
        order = np.argsort(keys, kind="stable")
        return keys[order], sums[order]

    links = geos = None
    if link is not None:
        key = cuda.device_array(n, np.int64)
        drop = cuda.device_array(n, np.uint8)
        if n:
            _link_key_kernel[blocks, threads](cell, link, key, drop)
        _dropped, (key, v, p) = select_ok_cuda(drop, key, vol, pk)
        links = summed(key, v, p)
    if geo is not None:
        key = cuda.device_array(n, np.int64)
        if n:
            _geo_key_kernel[blocks, threads](cell, geo, np.int64(bucket_us), key)
        geos = summed(key, vol, pk)
    return links, geos
