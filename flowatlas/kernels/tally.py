"""Sums of the map step's extra dimensions: interface links, and the remote end's geography.

The cube's cells key volume by (bucket, region, network type, direction, IP version). Two
tables add one dimension each, and need their own sums (they add up over map tasks like the
cells do):

- links: per (cell, interface link), for the records an interface link carries::

      link key = cell << LINK_BITS | link

- geography: per (day, dimensions, (country, metro) code of the remote network)::

      geo key = day << GEO_DAY_SHIFT | dimension code << GEO_BITS | geo code

One pass over a task's records fills both with exact uint64 sums (volume, packets, records):
each record adds to its key's slot in a small direct-mapped near table (records come in time
order, so a stretch of time's few keys stay there), which hands evicted keys on to hash
tables that grow with the distinct keys, not the records. Keys come out sorted: the result
does not depend on record order.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from flowatlas import kernel_cache
from flowatlas.kernels.accumulate import CounterOverflow, mix64
from flowatlas.kernels.lpm import _jit_no_nrt
from flowatlas.kernels.orient import DIM_BITS

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

#: bits of the interface link index in a link key (at most 4,095 interface links)
LINK_BITS = 12
MAX_LINKS = (1 << LINK_BITS) - 1
#: bits of the (country, metro) code in a geography key (at most 2^20 pairs)
GEO_BITS = 20
MAX_GEO = 1 << GEO_BITS
GEO_DAY_SHIFT = GEO_BITS + DIM_BITS
US_PER_DAY = 86_400_000_000


@numba.njit(inline="always", nogil=True, cache=True)
def _find(table, k):  # pragma: no cover - compiled
    """The slot of key ``k``: where it is, or the empty slot where it goes.

    A slot is one row (key, volume, packets, records): one cache line holds two, so a probe
    reads one line; a used slot has at least one record.
    """
    mask = table.shape[0] - 1
    s = np.int64(mix64(np.uint64(k)) & np.uint64(mask))
    while table[s, 3] != 0 and table[s, 0] != np.uint64(k):
        s = (s + 1) & mask
    return s


@numba.njit(nogil=True, cache=True)
def _grow(table):  # pragma: no cover - compiled
    """The same entries in a table twice the size."""
    out = np.zeros((table.shape[0] * 2, 4), np.uint64)
    for z in range(table.shape[0]):
        if table[z, 3] != 0:
            s = _find(out, np.int64(table[z, 0]))
            for c in range(4):
                out[s, c] = table[z, c]
    return out


@numba.njit(nogil=True, cache=True)
def _used_keys(table):  # pragma: no cover - compiled
    """The keys of a whole table's used slots, in slot order: one pass over the slots'
    record counts, one over the used slots' keys."""
    m = 0
    for z in range(table.shape[0]):
        m += table[z, 3] != 0
    keys = np.empty(m, np.int64)
    j = 0
    for z in range(table.shape[0]):
        if table[z, 3] != 0:
            keys[j] = np.int64(table[z, 0])
            j += 1
    return keys


@numba.njit(nogil=True, cache=True)
def _take_sums(table, keys):  # pragma: no cover - compiled
    """The sums (volume, packets, records) of ``keys``, each in the table, in their order;
    their slots emptied afterwards (a slot emptied earlier would cut the probe of a key
    placed past it)."""
    m = keys.size
    sums = np.empty((m, 3), np.uint64)
    slots = np.empty(m, np.int64)
    for j in range(m):
        s = _find(table, keys[j])
        slots[j] = s
        for c in range(3):
            sums[j, c] = table[s, c + 1]
    for j in range(m):
        for c in range(4):
            table[slots[j], c] = 0
    return sums


def _taken_entries(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The used slots' keys, ascending, and their sums (volume, packets, records); the
    slots are emptied.

    The keys are sorted by NumPy (numba's sort costs the first run after an install about
    two seconds of compiling) and each one's sums found again by its probe: a world 5 M
    task's link table (2^16-2^17 slots, 25-28 k keys) gave them up in 0.8-1.0 ms, against
    1.3-1.5 ms for NumPy's scan, argsort and 2-D gathers (bench/RESULTS.md, fourteenth
    round).
    """
    keys = _used_keys(table)
    keys.sort()
    return keys, _take_sums(table, keys)


@numba.njit(inline="always", nogil=True, cache=True)
def _add(table, k, v, p, f):  # pragma: no cover - compiled
    """Add (v, p, ``f`` > 0 records) to key ``k``'s sums: (whether ``k`` is new, whether a
    sum wrapped)."""
    s = _find(table, k)
    new = table[s, 3] == 0
    if new:
        table[s, 0] = np.uint64(k)
    a = table[s, 1] + v
    b = table[s, 2] + p
    table[s, 1] = a
    table[s, 2] = b
    table[s, 3] += f
    return new, a < v or b < p


@numba.njit(inline="always", nogil=True, cache=True)
def _near_slot(k, bits):  # pragma: no cover - compiled
    """A key's slot in a near table of 2^bits slots (multiply-shift: keys of a stretch of
    time differ in their low bits, which the multiply spreads to the top)."""
    return np.int64((np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


@numba.njit(inline="always", nogil=True, cache=True)
def _add_near(near, bits, table, n, k, v, p):  # pragma: no cover - compiled
    """Add one record (v, p) to key ``k``'s slot in a near table, first moving the key that
    holds it, if another, to the whole table: (keys in the whole table, whether a sum
    wrapped)."""
    s = _near_slot(k, bits)
    wrapped = False
    if near[s, 3] != 0 and near[s, 0] != np.uint64(k):
        new, wrapped = _add(table, np.int64(near[s, 0]), near[s, 1], near[s, 2], near[s, 3])
        n += new
        near[s, 3] = 0
    if near[s, 3] == 0:
        near[s, 0] = np.uint64(k)
        near[s, 1] = 0
        near[s, 2] = 0
    a = near[s, 1] + v
    b = near[s, 2] + p
    near[s, 1] = a
    near[s, 2] = b
    near[s, 3] += np.uint64(1)
    return n, wrapped or a < v or b < p


@_jit_no_nrt(nogil=True, cache=True)
def _run(start, cell, link, geo, vol, pk, bucket_us, want_link, want_geo, l_table, l_n,
         g_table, g_n, l_near, g_near, bits):  # fmt: skip  # pragma: no cover
    """Sum records from ``start`` on until a whole table is half full: (next record, keys in
    each whole table, whether a sum wrapped). The tables are never reassigned here: arrays
    rebound in a loop cost numba reference counting on every record (and numba's reference
    counting is off here: passing arrays to the inlined helpers cost 3 ns a record).

    Each record's sums go to its key's slot in a near table first (:func:`_add_near`:
    direct-mapped, 2^bits slots of key, volume, packets, records; 0 records: empty); a key
    that finds its slot held by another moves that one's sums to the whole table. Records
    come in time order and one stretch of time has few keys (about a hundred links per hour
    bucket on the world workload), so most records add to a slot already theirs, in cache,
    with one multiply and no probing; the whole tables (tens of thousands of keys, megabytes)
    are touched about once per key and stretch of time.
    """
    overflow = False
    dim_mask = np.int64((1 << DIM_BITS) - 1)
    last_bucket = np.int64(-(2**62))
    day = np.int64(0)
    for i in range(start, cell.size):
        c = cell[i]
        if want_link and link[i] >= 0:
            k = (c << LINK_BITS) | np.int64(link[i])
            l_n, wrapped = _add_near(l_near, bits, l_table, l_n, k, vol[i], pk[i])
            overflow |= wrapped
        if want_geo:
            bucket = c >> DIM_BITS
            if bucket != last_bucket:  # records come in runs of one bucket: one division each
                last_bucket = bucket
                day = (bucket * bucket_us) // US_PER_DAY  # floor, also before 1970
            k = (day << GEO_DAY_SHIFT) | ((c & dim_mask) << GEO_BITS) | np.int64(geo[i])
            g_n, wrapped = _add_near(g_near, bits, g_table, g_n, k, vol[i], pk[i])
            overflow |= wrapped
        # each record adds at most one key to each whole table
        if 2 * l_n > l_table.shape[0] or 2 * g_n > g_table.shape[0]:
            return i + 1, l_n, g_n, overflow
    return cell.size, l_n, g_n, overflow


@numba.njit(nogil=True, cache=True)
def _drain(near, table, n):  # pragma: no cover - compiled
    """Move every slot of a near table into the whole table, which has room for all of
    them: (keys in the table, whether a sum wrapped)."""
    overflow = False
    for s in range(near.shape[0]):
        if near[s, 3] != 0:
            new, wrapped = _add(table, np.int64(near[s, 0]), near[s, 1], near[s, 2], near[s, 3])
            overflow |= wrapped
            n += new
            near[s, 3] = 0
    return n, overflow


#: slots of each near table (2^12 x 32 bytes = 128 KiB: the world's keys of a day of
#: geography, of a few hours of links)
NEAR_BITS = 12


#: per thread: the tables of the last call, emptied, kept for the next ...
_SCRATCH = threading.local()
#: ... where no whole table has grown past this many slots (8 MiB: a world 1 M build's
#: tasks of 250 k records reach 2^18 link slots, and regrowing them from 1,024 every task
#: was a third of their tally)
KEEP_SLOTS = 1 << 18


def _tally(cell, link, geo, vol, pk, bucket_us, want_link, want_geo, near_bits=NEAR_BITS):
    """Both tables' sorted keys and sums, and whether a sum wrapped: runs of :func:`_run`,
    each whole table doubled when it is half full, then the near tables drained.

    The tables (empty again once read) stay with the thread for its next call: fresh ones
    cost a zeroed page for every 4 KiB, and a task's whole link table doubles to megabytes.
    """
    tables = getattr(_SCRATCH, "tables", None)
    if tables is None or tables[2].shape[0] != 1 << near_bits:
        near = np.zeros((1 << near_bits, 4), np.uint64)
        tables = [np.zeros((1024, 4), np.uint64) for _ in range(2)] + [near, near.copy()]
    _SCRATCH.tables = None  # until they are empty again
    lt, gt, l_near, g_near = tables
    l_n = g_n = 0
    i = 0
    overflow = False
    while i < cell.size:
        i, l_n, g_n, wrapped = _run(i, cell, link, geo, vol, pk, bucket_us, want_link,
                                    want_geo, lt, l_n, gt, g_n, l_near, g_near,
                                    np.int64(near_bits))  # fmt: skip
        overflow |= wrapped
        if 2 * l_n > lt.shape[0]:
            lt = _grow(lt)
        if 2 * g_n > gt.shape[0]:
            gt = _grow(gt)
    lt, l_n, l_wrapped = _drained(l_near, lt, l_n)
    gt, g_n, g_wrapped = _drained(g_near, gt, g_n)
    out = (*_taken_entries(lt), *_taken_entries(gt), overflow or l_wrapped or g_wrapped)
    if max(lt.shape[0], gt.shape[0]) <= KEEP_SLOTS:  # bigger ones are not held between tasks
        _SCRATCH.tables = [lt, gt, l_near, g_near]
    return out


def _drained(near, table, n):
    """The whole table, grown first to stay at most half full with every near slot added
    (counted as new keys: some may be there already), with the near table's slots moved
    into it: (table, keys in it, whether a sum wrapped)."""
    while 2 * (n + int(np.count_nonzero(near[:, 3]))) > table.shape[0]:
        table = _grow(table)
    n, overflow = _drain(near, table, n)
    return table, n, overflow


def tally(
    cell: np.ndarray,
    vol: np.ndarray,
    pk: np.ndarray,
    bucket_us: int,
    link: np.ndarray | None = None,
    geo: np.ndarray | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray] | None, tuple[np.ndarray, np.ndarray] | None]:
    """Per-link and per-geography sums of records: ``(links, geo)``, each ``(keys, sums)``
    with sorted int64 keys and (m, 3) uint64 sums of volume, packets and records, or None
    where ``link`` (int16 per record, -1: no interface link) or ``geo`` (int32 code per
    record) is not given. Raises :class:`CounterOverflow` where a sum would wrap.
    """
    want_link, want_geo = link is not None, geo is not None
    lk, ls, gk, gs, overflow = _tally(
        np.ascontiguousarray(cell, np.int64),
        np.ascontiguousarray(link if want_link else np.empty(0, np.int16), np.int16),
        np.ascontiguousarray(geo if want_geo else np.empty(0, np.int32), np.int32),
        np.ascontiguousarray(vol, np.uint64),
        np.ascontiguousarray(pk, np.uint64),
        np.int64(bucket_us),
        want_link,
        want_geo,
    )
    if overflow:
        raise CounterOverflow("a uint64 sum of bytes or packets overflowed")
    return ((lk, ls) if want_link else None), ((gk, gs) if want_geo else None)


def link_key_parts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cell key, link index) of link keys."""
    keys = np.asarray(keys, np.int64)
    return keys >> LINK_BITS, keys & MAX_LINKS


def geo_key_parts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(day since 1970, dimension code, geo code) of geography keys."""
    keys = np.asarray(keys, np.int64)
    return keys >> GEO_DAY_SHIFT, (keys >> GEO_BITS) & ((1 << DIM_BITS) - 1), keys & (MAX_GEO - 1)
