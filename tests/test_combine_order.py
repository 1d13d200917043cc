"""The combiner's sums of (key, ASN) pairs equal the sort-and-reduce code they replace, and the
top-k kernel keeps the rows a full sort would (oracle: sort everything, keep ranks below k)."""

from __future__ import annotations

import numpy as np
import pytest

from flowatlas.engine.combine import _sum_by_key_asn
from flowatlas.kernels.topk import top_k_per_key


def _oracle(ak: np.ndarray, aa: np.ndarray, av: np.ndarray, k: int):
    """What the combiner did before: sort all pairs by key, volume descending, ASN; rank."""
    order = np.lexsort((aa, ~av, ak))
    ak = ak[order]
    start = np.flatnonzero(np.r_[True, ak[1:] != ak[:-1]]) if ak.size else ak
    run = np.repeat(start, np.diff(np.r_[start, ak.size])) if ak.size else ak
    rank = np.arange(ak.size) - run
    keep = rank < k
    return order[keep], rank[keep]


def _sums_oracle(ak: np.ndarray, aa: np.ndarray, av: np.ndarray):
    """What the combiner did before: sort every pair, sum runs with np.add.reduceat."""
    if not ak.size:
        return ak, aa, av
    order = np.lexsort((aa, ak))
    ak, aa, av = ak[order], aa[order], av[order]
    start = np.flatnonzero(np.r_[True, (ak[1:] != ak[:-1]) | (aa[1:] != aa[:-1])])
    return ak[start], aa[start], np.add.reduceat(av, start)


@pytest.mark.parametrize("seed", range(8))
def test_orders_equal_lexsort(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 5000)) if seed else 0
    ak = rng.integers(0, 50, n).astype(np.int64)
    aa = rng.choice([0, 1, 7, 2**32 - 1, 64500], n).astype(np.int64)  # repeats and extremes
    vol = rng.integers(0, 2**40, n).astype(np.uint64)
    for got, want in zip(_sum_by_key_asn(ak, aa, vol), _sums_oracle(ak, aa, vol), strict=True):
        np.testing.assert_array_equal(got, want)
    # pairs made unique and sorted, as _asn_sums leaves them; volumes with ties, extremes
    both = np.unique(np.stack([ak, aa], axis=1), axis=0)
    ak, aa = both[:, 0], both[:, 1]
    av = np.array([0, 5, 5, 9, 2**64 - 1], np.uint64)[rng.integers(0, 5, ak.size)]
    for k in (1, 3, 10):
        want_rows, want_rank = _oracle(ak, aa, av, k)
        rows, rank = top_k_per_key(ak, av, k)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(rank, want_rank)


def test_long_runs_of_distinct_and_equal_volumes():
    rng = np.random.default_rng(99)
    ak = np.repeat(np.arange(40, dtype=np.int64), rng.integers(1, 400, 40))
    aa = np.arange(ak.size, dtype=np.int64)
    for av in (rng.permutation(ak.size).astype(np.uint64), np.full(ak.size, 3, np.uint64)):
        rows, rank = top_k_per_key(ak, av, 10)
        want_rows, want_rank = _oracle(ak, aa, av, 10)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(rank, want_rank)


def test_keys_past_31_bits_take_the_sorting_path():
    ak = np.array([2**40, 3, 2**40, 3], np.int64)
    aa = np.array([5, 6, 1, 6], np.int64)
    av = np.array([1, 2, 3, 4], np.uint64)
    for got, want in zip(_sum_by_key_asn(ak, aa, av), _sums_oracle(ak, aa, av), strict=True):
        np.testing.assert_array_equal(got, want)


def test_distinct_is_numpys_unique() -> None:
    """The combiner's sketch keys (``combine._distinct``) equal ``np.unique``'s: repeats,
    negatives, one key, none, already sorted."""
    from flowatlas.engine.combine import _distinct

    rng = np.random.default_rng(11)
    for keys in (
        rng.integers(-50, 50, 1000),
        rng.integers(0, 1 << 62, 500),
        np.arange(10),
        np.array([7]),
        np.empty(0, np.int64),
        np.full(9, 3),
    ):
        keys = keys.astype(np.int64)
        np.testing.assert_array_equal(_distinct(keys), np.unique(keys))
