"""The combiner's sort orders of (key, ASN) pairs equal the np.lexsort calls they replace."""

from __future__ import annotations

import numpy as np
import pytest

from flowatlas.engine.combine import _by_key_asn, _by_key_volume


@pytest.mark.parametrize("seed", range(6))
def test_orders_equal_lexsort(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 5000))
    ak = rng.integers(0, 50, n).astype(np.int64)
    aa = rng.choice([0, 1, 7, 2**32 - 1, 64500], n).astype(np.int64)  # repeats and extremes
    np.testing.assert_array_equal(_by_key_asn(ak, aa), np.lexsort((aa, ak)))
    # pairs made unique and sorted, as _asn_sums leaves them, volumes with ties
    both = np.unique(np.stack([ak, aa], axis=1), axis=0)
    ak, aa = both[:, 0], both[:, 1]
    av = np.array([0, 5, 5, 9, 2**64 - 1], np.uint64)[rng.integers(0, 5, ak.size)]
    np.testing.assert_array_equal(_by_key_volume(ak, av), np.lexsort((aa, ~av, ak)))


def test_keys_past_32_bits_fall_back_to_lexsort():
    ak = np.array([2**40, 3, 2**40, 3], np.int64)
    aa = np.array([5, 6, 1, 6], np.int64)
    np.testing.assert_array_equal(_by_key_asn(ak, aa), np.lexsort((aa, ak)))
