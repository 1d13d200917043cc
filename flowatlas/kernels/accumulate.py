"""Per-(key, remote IP) accumulation: the heart of the cube build. Arrays in, arrays out.

``aggregate`` folds rows with the same (key, hi, lo) into one, summing volume, packets and
flows in uint64 (integer sums, so every backend and every order gives the same answer) and
flagging 64-bit overflow instead of wrapping. The key is a packed cell or rollup group. Its
output has one row per distinct (key, remote IP): the number of rows per key is the exact
count of distinct remote IPs.

``ip_partition`` assigns every remote IP to one of P partitions by a hash of the address
alone, so each address lives in exactly one partition and per-partition distinct counts add
up to the global ones.
"""

from __future__ import annotations

import numba
import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(inline="always", nogil=True, cache=True)
def mix64(x):  # pragma: no cover - compiled
    """splitmix64's finaliser: a fast, well-spread 64-bit hash."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@numba.njit(inline="always", nogil=True, cache=True)
def ip_hash(hi, lo):  # pragma: no cover - compiled
    return mix64(hi ^ mix64(lo + _GOLD))


@numba.njit(nogil=True, cache=True)
def _aggregate(key, hi, lo, vol, pk, fl):  # pragma: no cover - compiled
    n = key.size
    cap = 16
    while cap < 2 * n:
        cap <<= 1
    mask = np.uint64(cap - 1)
    slots = np.full(cap, -1, dtype=np.int64)
    o_key = np.empty(n, np.int64)
    o_hi = np.empty(n, np.uint64)
    o_lo = np.empty(n, np.uint64)
    o_vol = np.empty(n, np.uint64)
    o_pk = np.empty(n, np.uint64)
    o_fl = np.empty(n, np.uint64)
    m = 0
    overflow = False
    for i in range(n):
        k = key[i]
        h = hi[i]
        lw = lo[i]
        s = mix64(np.uint64(k) ^ ip_hash(h, lw)) & mask
        while True:
            j = slots[s]
            if j < 0:
                slots[s] = m
                o_key[m] = k
                o_hi[m] = h
                o_lo[m] = lw
                o_vol[m] = vol[i]
                o_pk[m] = pk[i]
                o_fl[m] = fl[i]
                m += 1
                break
            if o_key[j] == k and o_hi[j] == h and o_lo[j] == lw:
                a = o_vol[j] + vol[i]
                b = o_pk[j] + pk[i]
                c = o_fl[j] + fl[i]
                if a < o_vol[j] or b < o_pk[j] or c < o_fl[j]:
                    overflow = True
                o_vol[j] = a
                o_pk[j] = b
                o_fl[j] = c
                break
            s = (s + np.uint64(1)) & mask
    return o_key[:m], o_hi[:m], o_lo[:m], o_vol[:m], o_pk[:m], o_fl[:m], overflow


class CounterOverflow(ArithmeticError):
    """A uint64 sum overflowed; the caller names what was being summed."""


def aggregate(
    key: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    vol: np.ndarray,
    pk: np.ndarray,
    fl: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """One row per distinct (key, hi, lo) with summed volume, packets and flows.

    ``fl`` defaults to one flow per row. Rows come out in first-seen order; callers sort
    when order matters. Raises :class:`CounterOverflow` if a uint64 sum would wrap.
    """
    n = key.size
    if fl is None:
        fl = np.ones(n, dtype=np.uint64)
    out = _aggregate(
        np.ascontiguousarray(key, np.int64),
        np.ascontiguousarray(hi, np.uint64),
        np.ascontiguousarray(lo, np.uint64),
        np.ascontiguousarray(vol, np.uint64),
        np.ascontiguousarray(pk, np.uint64),
        np.ascontiguousarray(fl, np.uint64),
    )
    if out[-1]:
        raise CounterOverflow("a uint64 sum of bytes, packets or flows overflowed")
    return out[:-1]


@numba.njit(parallel=True, nogil=True, cache=True)
def _partition_ids(hi, lo, parts, out):  # pragma: no cover - compiled
    p = np.uint64(parts)
    for i in numba.prange(hi.size):
        out[i] = np.int32(ip_hash(hi[i], lo[i]) % p)


def ip_partition(hi: np.ndarray, lo: np.ndarray, parts: int) -> np.ndarray:
    """Partition id (0..parts-1) of each address: a function of the address alone."""
    out = np.empty(hi.size, dtype=np.int32)
    if hi.size:
        _partition_ids(
            np.ascontiguousarray(hi, np.uint64), np.ascontiguousarray(lo, np.uint64), parts, out
        )
    return out


@numba.njit(nogil=True, cache=True)
def _group_by_key(key, cols):  # pragma: no cover - compiled
    """Hash group-by on int64 keys: first-seen unique keys, column sums, row counts."""
    n = key.size
    k = cols.shape[1]
    cap = 16
    while cap < 2 * n:
        cap <<= 1
    mask = np.uint64(cap - 1)
    slots = np.full(cap, -1, dtype=np.int64)
    o_key = np.empty(n, np.int64)
    sums = np.zeros((n, k), np.uint64)
    counts = np.zeros(n, np.uint64)
    m = 0
    overflow = False
    for i in range(n):
        kv = key[i]
        s = mix64(np.uint64(kv)) & mask
        while True:
            j = slots[s]
            if j < 0:
                j = m
                slots[s] = m
                o_key[m] = kv
                m += 1
                break
            if o_key[j] == kv:
                break
            s = (s + np.uint64(1)) & mask
        for c in range(k):
            a = sums[j, c] + cols[i, c]
            if a < sums[j, c]:
                overflow = True
            sums[j, c] = a
        counts[j] += np.uint64(1)
    return o_key[:m], sums[:m], counts[:m], overflow


def group_by_key(key: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct keys, exact uint64 column sums per key, and rows per key.

    Hashing does the grouping; only the distinct keys are sorted (they are few). A sum that
    would wrap raises :class:`CounterOverflow`.
    """
    cols = np.ascontiguousarray(cols, np.uint64)
    if cols.ndim == 1:
        cols = cols[:, None]
    uniq, sums, counts, overflow = _group_by_key(np.ascontiguousarray(key, np.int64), cols)
    if overflow:
        raise CounterOverflow("a uint64 sum of bytes, packets or flows overflowed")
    order = np.argsort(uniq, kind="stable")
    return uniq[order], sums[order], counts[order]


def sum_by_key(key: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and exact uint64 column sums per key (overflow raises)."""
    uniq, sums, _ = group_by_key(key, cols)
    return uniq, sums


def group_sums(
    key: np.ndarray, vol: np.ndarray, pk: np.ndarray, fl: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Sorted distinct keys with exact uint64 sums and row counts (= distinct IPs when the
    rows are distinct (key, IP) pairs)."""
    uniq, sums, counts = group_by_key(key, np.stack([vol, pk, fl], axis=1))
    return uniq, sums[:, 0], sums[:, 1], sums[:, 2], counts
