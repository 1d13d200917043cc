"""The k largest values of each key's run, for the cube's top lists. Arrays in, arrays out.

The combiner ranks every (rollup key, ASN) pair by volume to keep each key's top ASNs. Sorting
all pairs (np.lexsort, three passes) cost more than everything else the combiner does on a
heavy-tailed archive with a large table (0.5 CPU s of a 1 M-record build); only ``k`` per key
survive, so one pass with a k-slot insertion list per key gives the same rows.
"""

from __future__ import annotations

import numba
import numpy as np

from flowatlas import kernel_cache

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import


@numba.njit(nogil=True, cache=True)
def _top_k_runs(keys, values, k, take, rank):  # pragma: no cover - compiled
    """Fill ``take``/``rank`` with each run's best ``k`` rows (value descending, then row
    order); returns how many were filled."""
    n = keys.size
    best_v = np.empty(k, np.uint64)
    best_i = np.empty(k, np.int64)
    out = 0
    s = 0
    while s < n:
        e = s + 1
        while e < n and keys[e] == keys[s]:
            e += 1
        filled = 0
        for i in range(s, e):
            v = values[i]
            if filled == k and v <= best_v[k - 1]:
                continue  # ties go to the earlier row, already in the list
            pos = filled if filled < k else k - 1
            while pos > 0 and best_v[pos - 1] < v:
                pos -= 1
            last = filled if filled < k else k - 1
            for z in range(last, pos, -1):
                best_v[z] = best_v[z - 1]
                best_i[z] = best_i[z - 1]
            best_v[pos] = v
            best_i[pos] = i
            if filled < k:
                filled += 1
        for z in range(filled):
            take[out] = best_i[z]
            rank[out] = z
            out += 1
        s = e
    return out


def top_k_per_key(keys: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of each key's ``k`` largest values and their ranks (0 = largest).

    ``keys`` must come in runs (sorted); equal values rank by row order. The rows come key
    by key, rank by rank: what sorting by (key, value descending, row) and keeping ranks
    below ``k`` gives.
    """
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.uint64)
    if keys.shape != values.shape or keys.ndim != 1:
        raise ValueError("keys and values must be 1-d arrays of one length")
    if k < 1:
        raise ValueError("k must be at least 1")
    take = np.empty(keys.size, np.int64)
    rank = np.empty(keys.size, np.int64)
    n = _top_k_runs(keys, values, np.int64(k), take, rank) if keys.size else 0
    return take[:n], rank[:n]
