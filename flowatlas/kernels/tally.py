"""Sums of the map step's extra dimensions: interface links, and the remote end's geography.

The cube's cells key volume by (bucket, region, network type, direction, IP version). Two
tables add one dimension each, and need their own sums (they add up over map tasks like the
cells do):

- links: per (cell, interface link), for the records an interface link carries::

      link key = cell << LINK_BITS | link

- geography: per (day, dimensions, (country, metro) code of the remote network)::

      geo key = day << GEO_DAY_SHIFT | dimension code << GEO_BITS | geo code

One pass over a task's records fills both with exact uint64 sums (volume, packets, records),
in hash tables that grow with the distinct keys (a few thousand per task), not the records,
so they stay in cache. Keys come out sorted: the result does not depend on record order.
"""

from __future__ import annotations

import numba
import numpy as np

from flowatlas.kernels.accumulate import CounterOverflow, mix64
from flowatlas.kernels.orient import DIM_BITS

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


def _sorted_entries(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The used slots' keys, ascending, and their sums (volume, packets, records).

    NumPy, not numba: a sort of distinct keys is as fast here, and numba's sort and 2-D
    gather cost the first run after an install about two seconds of compiling.
    """
    idx = np.flatnonzero(table[:, 3] != 0)
    k = table[idx, 0].view(np.int64)
    order = np.argsort(k)
    return k[order], table[idx[order], 1:]


@numba.njit(inline="always", nogil=True, cache=True)
def _add(table, k, v, p):  # pragma: no cover - compiled
    """Add (v, p, one record) to key ``k``'s sums: (whether ``k`` is new, whether a sum
    wrapped)."""
    s = _find(table, k)
    new = table[s, 3] == 0
    if new:
        table[s, 0] = np.uint64(k)
    a = table[s, 1] + v
    b = table[s, 2] + p
    table[s, 1] = a
    table[s, 2] = b
    table[s, 3] += np.uint64(1)
    return new, a < v or b < p


@numba.njit(nogil=True, cache=True)
def _run(start, cell, link, geo, vol, pk, bucket_us, want_link, want_geo, l_table, l_n,
         g_table, g_n):  # fmt: skip  # pragma: no cover
    """Sum records from ``start`` on until a table is half full: (next record, keys in each
    table, whether a sum wrapped). The tables are never reassigned here: arrays rebound in
    a loop cost numba reference counting on every record."""
    overflow = False
    dim_mask = np.int64((1 << DIM_BITS) - 1)
    last_bucket = np.int64(-(2**62))
    day = np.int64(0)
    for i in range(start, cell.size):
        c = cell[i]
        if want_link and link[i] >= 0:
            new, wrapped = _add(l_table, (c << LINK_BITS) | np.int64(link[i]), vol[i], pk[i])
            overflow |= wrapped
            l_n += new
        if want_geo:
            bucket = c >> DIM_BITS
            if bucket != last_bucket:  # records come in runs of one bucket: one division each
                last_bucket = bucket
                day = (bucket * bucket_us) // US_PER_DAY  # floor, also before 1970
            k = (day << GEO_DAY_SHIFT) | ((c & dim_mask) << GEO_BITS) | np.int64(geo[i])
            new, wrapped = _add(g_table, k, vol[i], pk[i])
            overflow |= wrapped
            g_n += new
        if 2 * l_n > l_table.shape[0] or 2 * g_n > g_table.shape[0]:
            return i + 1, l_n, g_n, overflow
    return cell.size, l_n, g_n, overflow


def _tally(cell, link, geo, vol, pk, bucket_us, want_link, want_geo):
    """Both tables' sorted keys and sums, and whether a sum wrapped: runs of :func:`_run`,
    each table doubled when it is half full."""
    lt = np.zeros((1024, 4), np.uint64)
    gt = np.zeros((1024, 4), np.uint64)
    l_n = g_n = 0
    i = 0
    overflow = False
    while i < cell.size:
        i, l_n, g_n, wrapped = _run(i, cell, link, geo, vol, pk, bucket_us, want_link,
                                    want_geo, lt, l_n, gt, g_n)  # fmt: skip
        overflow |= wrapped
        if 2 * l_n > lt.shape[0]:
            lt = _grow(lt)
        if 2 * g_n > gt.shape[0]:
            gt = _grow(gt)
    return (*_sorted_entries(lt), *_sorted_entries(gt), overflow)


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
