"""Exact distinct counting by remote IP, and dense per-cell sums. Arrays in, arrays out.

The cube needs, for every cell and every rollup (period x grouping set), the number of
distinct remote IPs. Hash sets per key would touch memory at random for every row and key.
Instead rows are first *grouped by IP* (a hash pass gives each address a dense id, a counting
sort brings an address's rows together); then, walking one address's rows, a key is counted
the first time that address reaches it: a "stamp" array per key remembers the last address
counted. Every key lives in a small dense array (periods x dimension combinations), so the
walk stays in cache and costs a few nanoseconds per row and key.

Sums (volume, packets, flows) add up, so they go straight into dense arrays per cell.
"""

from __future__ import annotations

import numba
import numpy as np

from flowatlas.kernels.accumulate import CounterOverflow, ip_hash, mix64

U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)


@numba.njit(nogil=True, cache=True)
def _dense_sums(cell, vol, pk, n_cells):  # pragma: no cover - compiled
    s_vol = np.zeros(n_cells, np.uint64)
    s_pk = np.zeros(n_cells, np.uint64)
    s_fl = np.zeros(n_cells, np.uint64)
    overflow = False
    for i in range(cell.size):
        c = cell[i]
        a = s_vol[c] + vol[i]
        b = s_pk[c] + pk[i]
        if a < s_vol[c] or b < s_pk[c]:
            overflow = True
        s_vol[c] = a
        s_pk[c] = b
        s_fl[c] += np.uint64(1)
    return s_vol, s_pk, s_fl, overflow


def dense_sums(cell: np.ndarray, vol: np.ndarray, pk: np.ndarray, n_cells: int) -> np.ndarray:
    """(n_cells, 3) uint64: volume, packets and flows (rows) per dense cell index."""
    s_vol, s_pk, s_fl, overflow = _dense_sums(
        np.ascontiguousarray(cell, np.int64),
        np.ascontiguousarray(vol, np.uint64),
        np.ascontiguousarray(pk, np.uint64),
        int(n_cells),
    )
    if overflow:
        raise CounterOverflow("a uint64 sum of bytes or packets overflowed")
    return np.stack([s_vol, s_pk, s_fl], axis=1)


@numba.njit(nogil=True, cache=True)
def add_dense(total, part, offset):  # pragma: no cover - compiled
    """total[offset + i] += part[i] (rows of uint64 columns); returns True on overflow."""
    overflow = False
    for i in range(part.shape[0]):
        for k in range(part.shape[1]):
            a = total[offset + i, k] + part[i, k]
            if a < total[offset + i, k]:
                overflow = True
            total[offset + i, k] = a
    return overflow


@numba.njit(nogil=True, cache=True)
def _ip_ids(hi, lo):  # pragma: no cover - compiled
    """Dense id per distinct address, in first-seen order, and the number of addresses."""
    n = hi.size
    cap = 16
    while cap < 2 * n:
        cap <<= 1
    mask = np.uint64(cap - 1)
    slots = np.full(cap, -1, dtype=np.int64)
    first = np.empty(n, np.int64)  # row of each id's first appearance
    ids = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        h = hi[i]
        lw = lo[i]
        s = ip_hash(h, lw) & mask
        while True:
            j = slots[s]
            if j < 0:
                slots[s] = m
                first[m] = i
                ids[i] = m
                m += 1
                break
            r = first[j]
            if hi[r] == h and lo[r] == lw:
                ids[i] = j
                break
            s = (s + np.uint64(1)) & mask
    return ids, m


@numba.njit(nogil=True, cache=True)
def _counting_order(ids, n_ids):  # pragma: no cover - compiled
    """Row order that groups rows by id (ids ascending, rows in their original order)."""
    start = np.zeros(n_ids + 1, np.int64)
    for i in range(ids.size):
        start[ids[i] + 1] += 1
    for k in range(n_ids):
        start[k + 1] += start[k]
    pos = start[:-1].copy()
    order = np.empty(ids.size, np.int64)
    for i in range(ids.size):
        k = ids[i]
        order[pos[k]] = i
        pos[k] += 1
    return order, start


def group_by_ip(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, start): rows of address k are order[start[k]:start[k + 1]], ids first-seen."""
    ids, m = _ip_ids(np.ascontiguousarray(hi, np.uint64), np.ascontiguousarray(lo, np.uint64))
    return _counting_order(ids, m)


@numba.njit(nogil=True, cache=True)
def _dedup(order, start, cell, vol, n_cells):  # pragma: no cover - compiled
    """One row per distinct (address, cell), volumes summed; rows grouped by address."""
    n = order.size
    stamp = np.full(n_cells, -1, np.int64)
    slot = np.empty(n_cells, np.int64)
    rep = np.empty(n, np.int64)  # a row of the original input for each output row
    out_cell = np.empty(n, np.int64)
    out_vol = np.empty(n, np.uint64)
    m = 0
    overflow = False
    for k in range(start.size - 1):
        for t in range(start[k], start[k + 1]):
            i = order[t]
            c = cell[i]
            if stamp[c] != k:
                stamp[c] = k
                slot[c] = m
                rep[m] = i
                out_cell[m] = c
                out_vol[m] = vol[i]
                m += 1
            else:
                j = slot[c]
                a = out_vol[j] + vol[i]
                if a < out_vol[j]:
                    overflow = True
                out_vol[j] = a
    return rep[:m], out_cell[:m], out_vol[:m], overflow


def dedup_per_ip(
    hi: np.ndarray, lo: np.ndarray, cell: np.ndarray, vol: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (address, cell) rows with summed volume: (row of a representative, cell, vol).

    ``cell`` must be a dense index below ``n_cells``. Output rows are grouped by address in
    first-seen order, cells in first-seen order within an address (deterministic).
    """
    order, start = group_by_ip(hi, lo)
    rep, out_cell, out_vol, overflow = _dedup(
        order, start, np.ascontiguousarray(cell, np.int64), np.ascontiguousarray(vol, np.uint64),
        int(n_cells),
    )  # fmt: skip
    if overflow:
        raise CounterOverflow("a uint64 sum of bytes overflowed")
    return rep, out_cell, out_vol


@numba.njit(nogil=True, cache=True)
def _partition(hi, lo, parts, v6_shift):  # pragma: no cover - compiled
    """Partition of each address: by the whole IPv4 address, by the top bits of IPv6.

    IPv6 addresses that share their upper (64 - v6_shift) bits (a /64 by default) land in
    the same partition, so distinct prefixes are counted exactly too.
    """
    p = np.uint64(parts)
    out = np.empty(hi.size, np.int32)
    for i in range(hi.size):
        h = hi[i]
        lw = lo[i]
        if h == 0 and (lw >> np.uint64(32)) == np.uint64(0xFFFF):
            out[i] = np.int32(ip_hash(h, lw) % p)
        else:
            out[i] = np.int32(mix64(h >> np.uint64(v6_shift)) % p)
    return out


def partition_of(hi: np.ndarray, lo: np.ndarray, parts: int, v6_prefix: int = 64) -> np.ndarray:
    """Partition id (0..parts-1) of each address; IPv6 by its /``v6_prefix``."""
    if not 1 <= v6_prefix <= 64:
        raise ValueError("v6_prefix must be between 1 and 64")
    return _partition(
        np.ascontiguousarray(hi, np.uint64), np.ascontiguousarray(lo, np.uint64), int(parts),
        np.uint64(64 - v6_prefix),
    )  # fmt: skip


@numba.njit(nogil=True, cache=True)
def _stamp_counts(order, start, bucket, dims, v6, pidx, gmap, seg_level, seg_group, seg_off,
                  seg_width, n_total):  # fmt: skip  # pragma: no cover - compiled
    counts = np.zeros(n_total, np.int64)
    counts6 = np.zeros(n_total, np.int64)
    stamp = np.full(n_total, -1, np.int64)
    n_seg = seg_off.size
    for k in range(start.size - 1):
        for t in range(start[k], start[k + 1]):
            i = order[t]
            b = bucket[i]
            d = dims[i]
            for s in range(n_seg):
                idx = seg_off[s] + pidx[seg_level[s], b] * seg_width[s] + gmap[seg_group[s], d]
                if stamp[idx] != k:
                    stamp[idx] = k
                    counts[idx] += 1
                    if v6[i]:
                        counts6[idx] += 1
    return counts, counts6


def stamp_counts(
    hi: np.ndarray,
    lo: np.ndarray,
    bucket: np.ndarray,
    dims: np.ndarray,
    pidx: np.ndarray,
    gmap: np.ndarray,
    segments: list[tuple[int, int, int, int]],
    n_total: int,
    v6: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct addresses per key for several (period level, grouping) segments at once.

    ``bucket`` (relative, >= 0) and ``dims`` (dense) describe each row; ``pidx[level, bucket]``
    is the row's period index at a level and ``gmap[group, dims]`` its grouped dimension index.
    ``segments`` lists (level, group, offset, width): key ``pidx * width + gmap`` of that
    segment lives at ``offset + key`` of the returned counts (``n_total`` long). Rows may
    repeat (an address in a cell twice): each address counts once per key. The second array
    counts only rows flagged ``v6`` (the IPv6 share of each count).
    """
    order, start = group_by_ip(hi, lo)
    seg = np.asarray(segments, dtype=np.int64).reshape(-1, 4)
    if v6 is None:
        v6 = np.zeros(np.asarray(hi).size, dtype=np.bool_)
    return _stamp_counts(
        order,
        start,
        np.ascontiguousarray(bucket, np.int64),
        np.ascontiguousarray(dims, np.int64),
        np.ascontiguousarray(v6, np.bool_),
        np.ascontiguousarray(pidx, np.int64),
        np.ascontiguousarray(gmap, np.int64),
        seg[:, 0].copy(),
        seg[:, 1].copy(),
        seg[:, 2].copy(),
        seg[:, 3].copy(),
        int(n_total),
    )


@numba.njit(nogil=True, cache=True)
def _key_ids(key):  # pragma: no cover - compiled
    n = key.size
    cap = 16
    while cap < 2 * n:
        cap <<= 1
    mask = np.uint64(cap - 1)
    slots = np.full(cap, -1, dtype=np.int64)
    uniq = np.empty(n, np.int64)
    ids = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        k = key[i]
        s = mix64(np.uint64(k)) & mask
        while True:
            j = slots[s]
            if j < 0:
                slots[s] = m
                uniq[m] = k
                ids[i] = m
                m += 1
                break
            if uniq[j] == k:
                ids[i] = j
                break
            s = (s + np.uint64(1)) & mask
    return ids, uniq[:m].copy()


def key_ids(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense id of each int64 key (first-seen order) and the distinct keys by id."""
    return _key_ids(np.ascontiguousarray(key, np.int64))


def v6_prefix_of(hi: np.ndarray, lo: np.ndarray, prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """IPv6 addresses cut to their /``prefix`` (at most 64); IPv4-mapped ones unchanged."""
    if not 1 <= prefix <= 64:
        raise ValueError("the IPv6 uniqueness prefix must be between 1 and 64")
    hi = np.asarray(hi, np.uint64)
    lo = np.asarray(lo, np.uint64)
    v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    mask = (
        np.uint64(0xFFFF_FFFF_FFFF_FFFF) << np.uint64(64 - prefix)
        if prefix < 64
        else np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    )
    return np.where(v4, hi, hi & mask), np.where(v4, lo, np.uint64(0))
