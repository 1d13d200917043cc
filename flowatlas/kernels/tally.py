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
def _find(keys, used, mask, k):  # pragma: no cover - compiled
    """The slot of key ``k``: where it is, or the empty slot where it goes."""
    s = np.int64(mix64(np.uint64(k)) & np.uint64(mask))
    while used[s] and keys[s] != k:
        s = (s + 1) & mask
    return s


@numba.njit(nogil=True, cache=True)
def _grow(keys, sums, used):  # pragma: no cover - compiled
    """The same entries in a table twice the size."""
    cap = keys.size * 2
    mask = cap - 1
    n_keys = np.empty(cap, np.int64)
    n_sums = np.zeros((cap, 3), np.uint64)
    n_used = np.zeros(cap, np.bool_)
    for z in range(keys.size):
        if used[z]:
            s = _find(n_keys, n_used, mask, keys[z])
            n_used[s] = True
            n_keys[s] = keys[z]
            n_sums[s, 0] = sums[z, 0]
            n_sums[s, 1] = sums[z, 1]
            n_sums[s, 2] = sums[z, 2]
    return n_keys, n_sums, n_used


@numba.njit(nogil=True, cache=True)
def _sorted_entries(keys, sums, used):  # pragma: no cover - compiled
    idx = np.flatnonzero(used)
    k = keys[idx]
    order = np.argsort(k)
    return k[order], sums[idx[order]]


@numba.njit(inline="always", nogil=True, cache=True)
def _add(keys, sums, used, k, v, p):  # pragma: no cover - compiled
    """Add (v, p, one record) to key ``k``'s sums: (whether ``k`` is new, whether a sum
    wrapped)."""
    s = _find(keys, used, keys.size - 1, k)
    new = not used[s]
    if new:
        used[s] = True
        keys[s] = k
    a = sums[s, 0] + v
    b = sums[s, 1] + p
    sums[s, 0] = a
    sums[s, 1] = b
    sums[s, 2] += np.uint64(1)
    return new, a < v or b < p


@numba.njit(nogil=True, cache=True)
def _tally(cell, link, geo, vol, pk, bucket_us, want_link, want_geo):  # pragma: no cover
    cap = 1024
    l_keys = np.empty(cap, np.int64)
    l_sums = np.zeros((cap, 3), np.uint64)
    l_used = np.zeros(cap, np.bool_)
    l_n = 0
    g_keys = np.empty(cap, np.int64)
    g_sums = np.zeros((cap, 3), np.uint64)
    g_used = np.zeros(cap, np.bool_)
    g_n = 0
    overflow = False
    dim_mask = np.int64((1 << DIM_BITS) - 1)
    last_bucket = np.int64(-(2**62))
    day = np.int64(0)
    for i in range(cell.size):
        c = cell[i]
        if want_link and link[i] >= 0:
            new, wrapped = _add(l_keys, l_sums, l_used, (c << LINK_BITS) | np.int64(link[i]),
                                vol[i], pk[i])  # fmt: skip
            overflow |= wrapped
            l_n += new
            if 2 * l_n > l_keys.size:
                l_keys, l_sums, l_used = _grow(l_keys, l_sums, l_used)
        if want_geo:
            bucket = c >> DIM_BITS
            if bucket != last_bucket:  # records come in runs of one bucket: one division each
                last_bucket = bucket
                day = (bucket * bucket_us) // US_PER_DAY  # floor, also before 1970
            k = (day << GEO_DAY_SHIFT) | ((c & dim_mask) << GEO_BITS) | np.int64(geo[i])
            new, wrapped = _add(g_keys, g_sums, g_used, k, vol[i], pk[i])
            overflow |= wrapped
            g_n += new
            if 2 * g_n > g_keys.size:
                g_keys, g_sums, g_used = _grow(g_keys, g_sums, g_used)
    lk, ls = _sorted_entries(l_keys, l_sums, l_used)
    gk, gs = _sorted_entries(g_keys, g_sums, g_used)
    return lk, ls, gk, gs, overflow


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
