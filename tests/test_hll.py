"""HyperLogLog sketches: accuracy within the stated error, exact merges, blobs, CUDA twin.

Error bounds are stated in standard errors, ``se = 1.04 / sqrt(2**p)`` (docs/hll.md): one
estimate within 4 se, the mean of many within 4 se / sqrt(trials).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flowatlas.kernels import hll, serial_kernels
from flowatlas.kernels.distinct import partition_of

V4 = np.uint64(0xFFFF_0000_0000)


def v4_random(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n distinct random IPv4-mapped addresses (an odd multiplier permutes 2^32)."""
    start = int(rng.integers(0, 2**32))
    a = (np.arange(n, dtype=np.uint64) * np.uint64(2_654_435_761) + np.uint64(start)) & np.uint64(
        0xFFFF_FFFF
    )
    return np.zeros(n, np.uint64), V4 | a


def v6_random(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n random global-unicast IPv6 addresses (a repeat among them has odds of ~2^-80)."""
    hi = np.uint64(0x2000_0000_0000_0000) | rng.integers(0, 2**61, n, dtype=np.uint64)
    return hi, rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)


def structured(name: str, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Address families a flow archive is full of: runs of neighbouring addresses."""
    i = np.arange(start, start + n, dtype=np.uint64)
    zeros = np.zeros(n, np.uint64)
    if name == "v4 sequential":
        return zeros, V4 | (np.uint64(0x0A00_0000) + i)
    if name == "v6 /64s (lo = 0)":  # what v6_prefix_of leaves of IPv6 addresses
        return np.uint64(0x2001_0DB8_0000_0000) + i, zeros
    if name == "v6 /48s (lo = 0)":
        return np.uint64(0x2001_0DB8_0000_0000) + (i << np.uint64(16)), zeros
    if name == "v6 hosts of one /64":
        return np.full(n, 0x2001_0DB8_0000_0001, np.uint64), i
    raise KeyError(name)


STRUCTURED = ["v4 sequential", "v6 /64s (lo = 0)", "v6 /48s (lo = 0)", "v6 hosts of one /64"]


def rel_errors(estimates: np.ndarray, n: int | np.ndarray) -> np.ndarray:
    return np.asarray(estimates, np.float64) / n - 1.0


# --------------------------------------------------------------------------- hash, slots


def test_hash_is_the_partitioning_hash() -> None:
    """IPv4 addresses are partitioned by the very hash the sketches use (IPv6 by prefix)."""
    rng = np.random.default_rng(1)
    hi, lo = v4_random(rng, 5000)
    h = hll.hash_addresses(hi, lo)
    np.testing.assert_array_equal((h % np.uint64(7)).astype(np.int32), partition_of(hi, lo, 7))


@pytest.mark.parametrize("p", [4, 10, 12, 16])
def test_slots_match_a_python_reference(p: int) -> None:
    rng = np.random.default_rng(p)
    hi, lo = v6_random(rng, 3000)
    idx, rank = hll.slots(hi, lo, p)
    for h, j, r in zip(
        hll.hash_addresses(hi, lo).tolist(), idx.tolist(), rank.tolist(), strict=True
    ):
        rest = (h << p) & (2**64 - 1)
        want = min(64 - rest.bit_length() + 1, 65 - p) if rest else 65 - p
        assert (j, r) == (h >> (64 - p), want)
    # the extremes of the rank: no bit set after the index, the first bit set
    assert hll.slot_one(np.uint64(0), p) == (0, 65 - p)
    top = hll.slot_one(np.uint64(2**64 - 1), p)
    assert (int(top[0]), int(top[1])) == (2**p - 1, 1)
    assert 65 - p <= 2**hll.RANK_BITS - 1


@pytest.mark.parametrize("name", STRUCTURED)
def test_index_and_rank_uniform_and_independent_on_structured_addresses(name: str) -> None:
    """Why no second mix is needed: runs of neighbouring addresses give uniform register
    indexes, geometric ranks, and the same rank law in every index range and partition."""
    n, p = 1 << 18, 10
    m = 1 << p
    idx, rank = hll.slots(*structured(name, n), p)
    counts = np.bincount(idx, minlength=m)
    chi2 = float(((counts - n / m) ** 2 / (n / m)).sum())
    assert abs(chi2 - (m - 1)) < 6 * np.sqrt(2 * (m - 1)), chi2
    for part in (idx < m // 2, idx >= m // 2, partition_of(*structured(name, n), 8) == 3):
        r = rank[part]
        for k in range(1, 7):  # P(rank = k) = 2^-k
            q = 0.5**k
            got = float(np.mean(r == k))
            assert abs(got - q) < 5 * np.sqrt(q * (1 - q) / r.size), (k, got)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize(
    "family", ["v4 random", "v6 random", "v4 sequential", "v6 /64s (lo = 0)", "v6 hosts of one /64"]
)
def test_a_million_distinct_addresses_within_four_standard_errors(family: str) -> None:
    n = 1_000_000
    rng = np.random.default_rng(11)
    if family == "v4 random":
        hi, lo = v4_random(rng, n)
    elif family == "v6 random":
        hi, lo = v6_random(rng, n)
    else:
        hi, lo = structured(family, n)
    keys = np.zeros(n, np.int64)
    for p in (4, 10, 12, 16) if family == "v6 random" else (12,):
        e = float(hll.estimate(hll.update(keys, hi, lo, 1, p))[0])
        assert abs(e / n - 1) < 4 * hll.standard_error(p), (p, e)


def test_a_million_mixed_v4_v6_addresses_in_one_sketch() -> None:
    rng = np.random.default_rng(12)
    h4, l4 = v4_random(rng, 600_000)
    h6, l6 = v6_random(rng, 600_000)
    hi, lo = np.concatenate([h4, h6]), np.concatenate([l4, l6])
    e = hll.estimate(hll.update(np.zeros(hi.size, np.int64), hi, lo, 1))[0]
    assert abs(e / hi.size - 1) < 4 * hll.standard_error(12)


def test_mean_relative_error_over_many_trials_is_near_zero() -> None:
    """256 independent sketches of 20,000 addresses (p = 10): unbiased, spread ~ 1.04/sqrt(m)."""
    trials, n, p = 256, 20_000, 10
    se = hll.standard_error(p)
    rng = np.random.default_rng(13)
    h4, l4 = v4_random(rng, trials * n // 2)  # half IPv4-mapped, all distinct
    h6, l6 = v6_random(rng, trials * n // 2)
    hi, lo = np.concatenate([h4, h6]), np.concatenate([l4, l6])
    keys = rng.permutation(np.repeat(np.arange(trials), n))
    err = rel_errors(hll.estimate(hll.update(keys, hi, lo, trials, p)), n)
    assert abs(err.mean()) < 4 * se / np.sqrt(trials), err.mean()
    assert 0.85 < np.sqrt((err**2).mean()) / se < 1.15
    assert np.abs(err).max() < 4.5 * se


@pytest.mark.parametrize("name", STRUCTURED)
def test_structured_families_unbiased_over_many_blocks(name: str) -> None:
    blocks, n, p = 64, 40_000, 10
    se = hll.standard_error(p)
    hi, lo = structured(name, blocks * n)
    keys = np.repeat(np.arange(blocks), n)
    err = rel_errors(hll.estimate(hll.update(keys, hi, lo, blocks, p)), n)
    assert abs(err.mean()) < 4 * se / np.sqrt(blocks)
    assert np.abs(err).max() < 4 * se
    assert 0.7 < np.sqrt((err**2).mean()) / se < 1.3


@pytest.mark.parametrize("p", [12, 16])
def test_small_sets_linear_counting_is_near_exact(p: int) -> None:
    rng = np.random.default_rng(14)
    trials = 20
    for n in (1, 10, 100, 1000):
        hi, lo = v6_random(rng, trials * n)
        keys = np.repeat(np.arange(trials), n)
        est = hll.estimate(hll.update(keys, hi, lo, trials, p))
        # a register shared by two of the n addresses costs about one address
        assert (np.abs(est - n) <= np.maximum(1.5, 0.05 * n)).all(), (n, est)
        assert abs(est.mean() / n - 1) < (0.01 if n > 1 else 0.001), (n, est.mean())
        if n == 1:
            assert (np.round(est) == 1).all()


def reference_estimates(regs: np.ndarray) -> tuple[float, float]:
    """(improved, classic) estimates of one sketch, straight from the papers' formulas."""
    m = regs.size
    q = 64 - (m.bit_length() - 1)
    c = np.bincount(regs, minlength=q + 2).astype(float)

    def sigma(x: float) -> float:
        if x == 1:
            return math.inf
        return x + sum(x ** (2**k) * 2 ** (k - 1) for k in range(1, 40))

    def tau(x: float) -> float:
        if x in (0, 1):
            return 0.0
        return (1 - x - sum((1 - x ** (2**-k)) ** 2 * 2**-k for k in range(1, 60))) / 3

    z = m * tau(1 - c[q + 1] / m) * 2.0**-q
    z += sum(c[k] * 2.0**-k for k in range(1, q + 1)) + m * sigma(c[0] / m)
    improved = m * m / (2 * math.log(2)) / z
    raw = hll.alpha(m) * m * m / sum(c[k] * 2.0**-k for k in range(q + 2))
    classic = m * math.log(m / c[0]) if raw <= 2.5 * m and c[0] > 0 else raw
    return improved, classic


@pytest.mark.parametrize("p", [4, 8, 12])
def test_estimators_match_the_papers_formulas(p: int) -> None:
    rng = np.random.default_rng(22)
    sizes = [0, 1, 7, 2**p // 3, 2**p, 5 * 2**p // 2, 3 * 2**p, 40 * 2**p]
    keys = np.repeat(np.arange(len(sizes)), sizes)
    regs = hll.update(keys, *v6_random(rng, keys.size), len(sizes), p)
    regs[-1, :3] = 65 - p  # saturated registers exercise the tau term
    improved = hll.estimate(regs)
    classic = hll.estimate(regs, method="classic")
    for k in range(len(sizes)):
        want = reference_estimates(regs[k])
        np.testing.assert_allclose([improved[k], classic[k]], want, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="method"):
        hll.estimate(regs, method="hll++")


def test_empty_and_all_equal_addresses() -> None:
    regs = hll.update(np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.uint64), 3)
    assert regs.shape == (3, 4096) and not regs.any()
    np.testing.assert_array_equal(hll.estimate(regs), np.zeros(3))
    assert hll.estimate(np.zeros((0, 64), np.uint8)).shape == (0,)
    n = 100_000
    keys = np.zeros(n, np.int64)
    same = hll.update(keys, np.full(n, 0x2001_0DB8 << 32, np.uint64), np.full(n, 7, np.uint64), 1)
    assert np.count_nonzero(same) == 1
    assert round(float(hll.estimate(same)[0])) == 1


# --------------------------------------------------------------------------- merge, order


def test_merge_is_the_sketch_of_the_union_register_by_register() -> None:
    rng = np.random.default_rng(15)
    hi, lo = v6_random(rng, 60_000)
    hi[::3] = 0
    keys = rng.integers(0, 5, hi.size)
    a = rng.random(hi.size) < 0.6
    b = (rng.random(hi.size) < 0.6) | ~a  # overlapping halves that cover everything
    for p in (4, 12):
        whole = hll.update(keys, hi, lo, 5, p)
        ra = hll.update(keys[a], hi[a], lo[a], 5, p)
        rb = hll.update(keys[b], hi[b], lo[b], 5, p)
        np.testing.assert_array_equal(hll.merge(ra, rb), whole)
        np.testing.assert_array_equal(hll.merge(rb, ra), whole)
        np.testing.assert_array_equal(hll.merge(ra[0], rb[0]), whole[0])
        # the sparse form merges the same way
        ka, ea = hll.sparse_update(keys[a], hi[a], lo[a], p)
        kb, eb = hll.sparse_update(keys[b], hi[b], lo[b], p)
        k, e = hll.merge_sparse(ka, ea, kb, eb, p)
        np.testing.assert_array_equal(hll.to_dense(k, e, 5, p), whole)


def test_registers_do_not_depend_on_order_repeats_or_threads() -> None:
    rng = np.random.default_rng(16)
    hi, lo = v6_random(rng, 150_000)
    hi[::2] = 0
    keys = rng.integers(0, 40, hi.size)
    want = hll.update(keys, hi, lo, 40)
    perm = rng.permutation(hi.size)
    np.testing.assert_array_equal(hll.update(keys[perm], hi[perm], lo[perm], 40), want)
    twice = np.concatenate([perm, perm[: hi.size // 2]])  # repeats change nothing
    big = hll.update(keys[twice], hi[twice], lo[twice], 40)  # >= PARALLEL_MIN: threads
    assert twice.size >= hll.PARALLEL_MIN
    np.testing.assert_array_equal(big, want)
    with serial_kernels():
        np.testing.assert_array_equal(hll.update(keys[twice], hi[twice], lo[twice], 40), want)
        np.testing.assert_array_equal(hll.estimate(want), hll.estimate(big))


# --------------------------------------------------------------------------- sparse form, blobs


def cells_of_many_sizes(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Rows for cells that see 0, 1, a few, up to and past the sparse limit, and many addresses."""
    rng = np.random.default_rng(17 + p)
    sizes = [0, 1, 3, 50, hll.default_sparse_max(p), 2 * hll.default_sparse_max(p), 30_000, 0]
    keys = np.repeat(np.arange(len(sizes)), sizes)
    hi, lo = v6_random(rng, keys.size)
    hi[::2] = 0
    return keys, hi, lo, sizes


@pytest.mark.parametrize("p", [4, 10, 11, 12, 16])
def test_sparse_and_dense_round_trips_are_exact(p: int) -> None:
    keys, hi, lo, sizes = cells_of_many_sizes(p)
    n_keys = len(sizes)
    regs = hll.update(keys, hi, lo, n_keys, p)
    k, e = hll.sparse_update(keys, hi, lo, p)
    k2, e2 = hll.to_sparse(regs)
    np.testing.assert_array_equal(k, k2)
    np.testing.assert_array_equal(e, e2)
    np.testing.assert_array_equal(hll.to_dense(k, e, n_keys, p), regs)
    # the same estimate, to the last bit, from either form
    assert (hll.estimate_sparse(k, e, n_keys, p) == hll.estimate(regs)).all()

    offsets, data = hll.encode_cells(k, e, n_keys, p)
    nnz = np.bincount(k, minlength=n_keys)
    dense = nnz > hll.default_sparse_max(p)
    want_size = 4 + np.where(dense, 1 << p, nnz * hll.entry_bytes(p))
    np.testing.assert_array_equal(np.diff(offsets), want_size)
    k3, e3 = hll.decode_cells(offsets, data, p)
    np.testing.assert_array_equal(k3, k)
    np.testing.assert_array_equal(e3, e)
    for c in range(n_keys):
        blob = data[offsets[c] : offsets[c + 1]].tobytes()
        assert blob[2] == (hll.DENSE if dense[c] else hll.SPARSE)
        assert hll.encode(regs[c]) == blob
        np.testing.assert_array_equal(hll.decode(blob), regs[c])
        assert hll.estimate_blob(blob) == hll.estimate(regs[c])
        # forced the other way: a sparse blob of a big cell, a dense blob of a small one
        other = hll.encode(regs[c], sparse_max=(1 << p) if dense[c] else 0)
        np.testing.assert_array_equal(hll.decode(other), regs[c])
        assert hll.estimate_blob(other) == hll.estimate_blob(blob)
    # an all-sparse and an all-dense encoding decode to the same long form
    for limit in (0, 1 << p):
        o2, d2 = hll.encode_cells(k, e, n_keys, p, sparse_max=limit)
        k4, e4 = hll.decode_cells(o2, d2, p)
        np.testing.assert_array_equal(k4, k)
        np.testing.assert_array_equal(e4, e)


def test_blobs_suit_an_arrow_binary_column() -> None:
    pa = pytest.importorskip("pyarrow")
    keys, hi, lo, sizes = cells_of_many_sizes(12)
    k, e = hll.sparse_update(keys, hi, lo)
    offsets, data = hll.encode_cells(k, e, len(sizes))
    col = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(sizes), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    small = pa.array(col.to_pylist(), pa.binary())  # int32 offsets, as Parquet reads back
    k2, e2 = hll.decode_cells(
        np.frombuffer(small.buffers()[1], np.int32)[: len(small) + 1],
        np.frombuffer(small.buffers()[2], np.uint8),
    )
    np.testing.assert_array_equal(k2, k)
    np.testing.assert_array_equal(e2, e)


def test_merging_sparse_and_dense_blobs() -> None:
    rng = np.random.default_rng(18)
    p = 12
    hi, lo = v6_random(rng, 20_000)
    parts = [(0, 30), (20, 60), (60, 5000), (4000, 20_000)]  # small, small, big, big
    blobs = [hll.encode(hll.update(np.zeros(b - a, np.int64), hi[a:b], lo[a:b], 1, p)[0])
             for a, b in parts]  # fmt: skip
    assert [b[2] for b in blobs] == [hll.SPARSE, hll.SPARSE, hll.DENSE, hll.DENSE]

    def union(*sel: int) -> np.ndarray:
        rows = np.unique(np.concatenate([np.arange(*parts[i]) for i in sel]))
        return hll.update(np.zeros(rows.size, np.int64), hi[rows], lo[rows], 1, p)[0]

    for sel in [(0, 1), (0, 2), (2, 0), (2, 3), (0, 1, 2, 3)]:
        merged = hll.merge_blobs([blobs[i] for i in sel])
        want = union(*sel)
        np.testing.assert_array_equal(hll.decode(merged), want)
        assert merged == hll.encode(want)  # same representation as encoding the union
        assert hll.estimate_blob(merged) == hll.estimate(want)
    assert hll.merge_blobs([blobs[0], blobs[1]])[2] == hll.SPARSE
    # many cells into query groups at once: long form -> groups -> registers
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
    k, e = hll.decode_cells(offsets, b"".join(blobs), p)
    group = np.array([0, 0, 1, 1])[k]
    regs = hll.to_dense(group, e, 2, p)
    np.testing.assert_array_equal(regs[0], union(0, 1))
    np.testing.assert_array_equal(regs[1], union(2, 3))
    gk, ge = hll.reduce_sparse(group, e, p)
    assert (hll.estimate_sparse(gk, ge, 2, p) == hll.estimate(regs)).all()


# --------------------------------------------------------------------------- hostile inputs


@pytest.mark.parametrize("p", [3, 17, -1, 12.0, True, "12", None])
def test_precision_out_of_range_is_refused(p: object) -> None:
    one = np.zeros(1, np.uint64)
    with pytest.raises(ValueError, match="precision p"):
        hll.update(np.zeros(1, np.int64), one, one, 1, p)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision p"):
        hll.sparse_update(np.zeros(1, np.int64), one, one, p)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision p"):
        hll.decode_cells(np.zeros(1, np.int64), np.zeros(0, np.uint8), p)  # type: ignore[arg-type]


def test_bad_arrays_are_refused() -> None:
    one = np.zeros(1, np.uint64)
    with pytest.raises(ValueError, match="differ in length"):
        hll.update(np.zeros(2, np.int64), one, one, 1)
    with pytest.raises(ValueError, match="keys must lie"):
        hll.update(np.array([1]), one, one, 1)
    with pytest.raises(ValueError, match="keys must lie"):
        hll.update(np.array([-1]), one, one, 1)
    with pytest.raises(ValueError, match="n_keys"):
        hll.update(np.zeros(1, np.int64), one, one, -1)
    with pytest.raises(ValueError, match="uint8"):
        hll.estimate(np.zeros((2, 64), np.int32))
    with pytest.raises(ValueError, match="2\\*\\*p registers"):
        hll.estimate(np.zeros((2, 100), np.uint8))
    with pytest.raises(ValueError, match="largest rank"):
        hll.estimate(np.full((1, 4096), 54, np.uint8))
    with pytest.raises(ValueError, match="shapes"):
        hll.merge(np.zeros((2, 64), np.uint8), np.zeros((3, 64), np.uint8))
    with pytest.raises(ValueError, match="shapes"):
        hll.merge(np.zeros(64, np.uint8), np.zeros(128, np.uint8))
    with pytest.raises(ValueError, match="one entry per register"):
        hll.estimate_sparse(np.zeros(2, np.int64), np.array([65, 65], np.uint32), 1)
    with pytest.raises(ValueError, match="rank"):
        hll.to_dense(np.zeros(1, np.int64), np.array([64], np.uint32), 1)


def test_malformed_blobs_are_refused() -> None:
    p = 12
    regs = hll.update(np.zeros(3, np.int64), *v6_random(np.random.default_rng(19), 3), 1, p)[0]
    sparse = hll.encode(regs)
    dense = hll.encode(regs, sparse_max=0)
    bad = {
        "header": sparse[:3],
        "version": b"\x02" + sparse[1:],
        "kind": sparse[:2] + b"\x07" + sparse[3:],
        "reserved": sparse[:3] + b"\x01" + sparse[4:],
        "length": sparse[:-1],
        "dense length": dense[:-1],
        "ascending": sparse[:4] + sparse[8:12] + sparse[4:8] + sparse[12:],
        "twice": sparse[:4] + sparse[4:8] * 2,
        "rank": sparse[:4] + (1 << 6 | 60).to_bytes(4, "little"),
        "zero rank": sparse[:4] + (5 << 6).to_bytes(4, "little"),
        "index": sparse[:4] + (4096 << 6 | 1).to_bytes(4, "little"),
        "dense rank": dense[:10] + b"\x3f" + dense[11:],
    }
    hll.decode(sparse), hll.decode(dense)  # the originals are well formed
    for why, blob in bad.items():
        try:
            hll.decode(blob)
        except ValueError:
            pass
        else:
            pytest.fail(f"{why}: decode accepted a malformed blob")
        try:
            hll.decode_cells(np.array([0, len(sparse), len(sparse) + len(blob)]), sparse + blob)
        except ValueError as exc:
            assert "blob 1 is malformed" in str(exc), (why, str(exc))
        else:
            pytest.fail(f"{why}: decode_cells accepted a malformed blob")
    other_p = sparse[:1] + b"\x0b" + sparse[2:]
    with pytest.raises(ValueError, match="different precision p"):
        hll.decode_cells(np.array([0, len(other_p)]), other_p, p)
    with pytest.raises(ValueError, match="offsets"):
        hll.decode_cells(np.array([0, 100]), sparse, p)
    with pytest.raises(ValueError, match="precision p"):
        hll.merge_blobs([sparse, hll.encode(np.zeros(1024, np.uint8))])
    with pytest.raises(ValueError):
        hll.merge_blobs([])
    assert hll.decode_cells(np.zeros(0, np.int64), b"")[0].size == 0


# --------------------------------------------------------------------------- CUDA twin

CUDASIM = textwrap.dedent(
    """
    import numpy as np
    np.seterr(over="ignore")  # uint64 wrap-around is the hash, not an accident
    from numba import cuda
    from flowatlas.kernels import cuda as K, hll
    rng = np.random.default_rng(20)
    n = 1200
    keys = rng.integers(0, 3, n).astype(np.int64)
    hi = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    hi[::2] = 0
    lo = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    lo[::2] = np.uint64(0xFFFF00000000) | (lo[::2] & np.uint64(0xFFFFFFFF))
    lo[1] = np.uint64(2**64 - 1)  # lo + golden ratio wraps
    dev = [cuda.to_device(a) for a in (keys, hi, lo)]
    for p in (4, 8):
        want = hll.update(keys, hi, lo, 3, p)
        got = K.hll_update_cuda(*dev, 3, p).copy_to_host()
        assert got.dtype == np.uint8 and got.shape == want.shape, (got.dtype, got.shape)
        assert (got == want).all(), p
        rev = K.hll_update_cuda(*(cuda.to_device(a[::-1].copy()) for a in (keys, hi, lo)), 3, p)
        assert (rev.copy_to_host() == want).all()

    @cuda.jit
    def hashes(hi, lo, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = K._ip_hash_device(hi[i], lo[i])

    out = cuda.device_array(64, np.uint64)
    hashes[1, 64](dev[1], dev[2], out)
    assert (out.copy_to_host() == hll.hash_addresses(hi[:64], lo[:64])).all()
    empty = K.hll_update_cuda(*(cuda.to_device(a[:0]) for a in (keys, hi, lo)), 2, 4)
    assert empty.shape == (2, 16) and not empty.copy_to_host().any()
    for bad in ((2, 4), (3, 3)):
        try:
            K.hll_update_cuda(*dev, *bad)
        except ValueError:
            pass
        else:
            raise AssertionError(bad)
    print("OK")
    """
)


def test_cuda_driver_equals_cpu_under_simulator() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    p = subprocess.run(
        [sys.executable, "-c", CUDASIM], env=env, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().endswith("OK")


# --------------------------------------------------------------------------- accuracy study


def _bias_and_spread(p: int, trials: int, ratios: tuple[float, ...], seed: int) -> None:
    """Mean error and RMS error of ``trials`` sketches at n = ratio x m, for each ratio."""
    m = 1 << p
    se = hll.standard_error(p)
    rng = np.random.default_rng(seed)
    for ratio in ratios:
        n = int(ratio * m)
        keys = np.repeat(np.arange(trials), n)
        hi, lo = v6_random(rng, keys.size)
        err = rel_errors(hll.estimate(hll.update(keys, hi, lo, trials, p)), n)
        assert abs(err.mean()) < 4 * se / np.sqrt(trials) + 0.001, (ratio, err.mean())
        assert np.sqrt((err**2).mean()) < 1.3 * se, (ratio, np.sqrt((err**2).mean()))


#: the middle of the range, where linear counting hands over to the raw estimate (2.5 m)
MID_RANGE = (0.3, 0.5, 1, 2, 2.3, 2.5, 2.7, 3, 5, 10)


@pytest.mark.parametrize("p", [8, 10])
def test_bias_and_spread_in_the_middle_of_the_range(p: int) -> None:
    """The bounded form of the accuracy study that CI runs: n from 0.3 m to 10 m, the 2.5 m
    hand-over of the classic rule on both sides, no bias and a spread near 1.04 / sqrt(m)."""
    _bias_and_spread(p, trials=96 if p == 10 else 256, ratios=MID_RANGE, seed=22 + p)


@pytest.mark.slow
@pytest.mark.parametrize("p", [10, 12, 14])
def test_bias_and_spread_across_the_range(p: int) -> None:
    """Mean error and spread from n = m/10 to 20 m: no bias anywhere, the 2.5 m hand-over of
    the classic rule included, and a spread near 1.04 / sqrt(m) (docs/hll.md)."""
    trials = max(16, (1 << 22) // (20 * (1 << p)))
    _bias_and_spread(p, trials, (0.1, 0.5, 1, 2, 2.5, 3, 5, 10, 20), seed=21)


def test_benchmark_smoke_run_writes_only_its_section(tmp_path: Path) -> None:
    """bench/bench_hll.py --quick still runs, and leaves other results sections alone."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Other benchmark\n\nsomeone else's numbers\n")
    bench = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "bench_hll.py")
    p = subprocess.run(
        [sys.executable, bench, "--quick", "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    text = results.read_text()
    assert "## Other benchmark\n\nsomeone else's numbers\n" in text
    assert text.count("## HLL sketches") == 1 and "| update, dense" in text


def test_radix_sort_equals_numpy_sort() -> None:
    """The sparse update's sort: any non-negative int64, constant bytes skipped or not."""
    from flowatlas.kernels.hll import _radix_sort

    rng = np.random.default_rng(5)
    cases = [
        np.empty(0, np.int64),
        np.array([7], np.int64),
        np.full(1000, 123456789, np.int64),
        rng.integers(0, 2**62, 50_000, dtype=np.int64),
        (rng.integers(0, 300, 50_000, dtype=np.int64) << 40) | rng.integers(0, 4096, 50_000),
    ]
    for a in cases:
        np.testing.assert_array_equal(_radix_sort(a), np.sort(a))


def test_sparse_update_with_the_rows_slots_given_is_the_same() -> None:
    """Registers and ranks hashed once per distinct address and gathered per row (what the
    reducers pass) give the sketches that hashing every row gives."""
    rng = np.random.default_rng(5)
    pool_hi = rng.integers(0, 2**63, 500, dtype=np.uint64)
    pool_lo = rng.integers(0, 2**63, 500, dtype=np.uint64)
    pick = rng.integers(0, 500, 20_000)
    keys = rng.integers(0, 40, pick.size)
    idx, rank = hll.slots(pool_hi, pool_lo, 12)
    got = hll.sparse_update(
        keys, pool_hi[pick], pool_lo[pick], 12, row_slots=(idx[pick], rank[pick])
    )
    want = hll.sparse_update(keys, pool_hi[pick], pool_lo[pick], 12)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="one register and rank per row"):
        hll.sparse_update(keys, pool_hi[pick], pool_lo[pick], 12, row_slots=(idx, rank))


@pytest.mark.parametrize("p", [4, 6, 7, 12, 16])
def test_sparse_update_dense_equals_sparse_update(p: int) -> None:
    """The reducers' counting-sort long form against the radix-sort one (the oracle) on the
    same rows: random rows, keys with one register hit many times, keys with every register
    (the bitmap's words all full), repeated rows, periods mapped out of order onto dense
    numbers with gaps, no rows; bad input raises instead of reading out of bounds."""
    rng = np.random.default_rng(p)
    n_addr = 3000
    hi, lo = v6_random(rng, n_addr)
    idx, rank = hll.slots(hi, lo, p)
    key_of_group = np.array([5, 0, 2, 9, 3], np.int64)  # dense period numbers, with gaps
    n_members = 7
    cases = []
    n = 40_000
    cases.append((rng.integers(0, 5, n), rng.integers(0, n_members, n), rng.integers(0, n_addr, n)))
    one = np.flatnonzero(idx == idx[0])  # addresses sharing one register: one key, one register
    cases.append((np.zeros(500, np.int64), np.zeros(500, np.int64), rng.choice(one, 500)))
    full = np.arange(n_addr).repeat(3)  # every address thrice into one key: all registers
    cases.append((np.full(full.size, 3), np.full(full.size, 6), full))
    cases.append((np.empty(0, np.int64),) * 3)
    for group, member, addr in cases:
        got = hll.sparse_update_dense(group, member, key_of_group, n_members, addr, (idx, rank), p)
        keys = key_of_group[group] * n_members + member
        want = hll.sparse_update(keys, hi[addr], lo[addr], p)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
        assert got[0].dtype == np.int64 and got[1].dtype == np.uint32
    g0, m0, a0 = cases[0]
    for bad in ((g0 + 5, m0, a0), (g0, m0 + n_members, a0), (g0, m0, a0 - n_addr)):
        with pytest.raises(ValueError, match="out of range"):
            hll.sparse_update_dense(*bad[:2], key_of_group, n_members, bad[2], (idx, rank), p)
    with pytest.raises(ValueError, match="register is outside"):
        hll.sparse_update_dense(g0, m0, key_of_group, n_members, a0, (idx + (1 << p), rank), p)
    with pytest.raises(ValueError, match="rank outside"):
        hll.sparse_update_dense(g0, m0, key_of_group, n_members, a0, (idx, rank * 0 + 64), p)


@pytest.mark.parametrize("p", [4, 5, 12, 16])
def test_long_form_equals_nonzero_registers(p: int) -> None:
    """long_form (the combiner's last step) against np.nonzero: sparse and full rows,
    all-zero rows and words, nonzero bytes at every position of a word, the largest rank;
    a register above the largest rank raises, 1-D registers are one key."""
    rng = np.random.default_rng(p)
    m = 1 << p
    regs = np.zeros((9, m), np.uint8)
    regs[1] = rng.integers(1, 66 - p, m)  # every register set
    regs[2, rng.integers(0, m, 3)] = 65 - p  # the largest rank
    for pos in range(8):  # one register in each byte position of a word
        regs[3 + pos % 5, 8 * (pos % (m // 8)) + pos] = pos + 1
    sparse = rng.random((9, m)) < 0.02
    regs[sparse] = rng.integers(1, 66 - p, int(sparse.sum()))
    regs[0] = 0
    for r in (regs, regs[:0], regs[0:1], np.zeros((3, m), np.uint8)):
        keys, entries = hll.long_form(r)
        k_want, j_want = np.nonzero(r)
        np.testing.assert_array_equal(keys, k_want)
        np.testing.assert_array_equal(entries >> hll.RANK_BITS, j_want)
        np.testing.assert_array_equal(entries & ((1 << hll.RANK_BITS) - 1), r[k_want, j_want])
    one_k, one_e = hll.long_form(regs[1])
    np.testing.assert_array_equal(one_k, np.zeros(m, np.int64))
    np.testing.assert_array_equal(one_e & ((1 << hll.RANK_BITS) - 1), regs[1])
    bad = regs.copy()
    bad[5, m - 1] = 66 - p
    with pytest.raises(ValueError, match="above the largest rank"):
        hll.long_form(bad)


@pytest.mark.parametrize("p", [4, 12, 16])
def test_max_into_equals_to_dense_and_checks_before_writing(p: int) -> None:
    """max_into (the combiner's fold) against to_dense and np.maximum: repeated registers,
    any order, uint32 and int64 entries; a key, register or rank out of range raises and
    leaves the registers as they were."""
    rng = np.random.default_rng(p)
    n_keys = 9
    regs = np.zeros((n_keys, 1 << p), np.uint8)
    want = regs.copy()
    for part in range(3):
        n = 5000
        keys = rng.integers(0, n_keys, n)
        idx = rng.integers(0, 1 << p, n)
        rank = rng.integers(1, 66 - p, n)
        entries = (idx << hll.RANK_BITS) | rank
        entries = entries.astype(np.uint32 if part != 1 else np.int64)
        hll.max_into(regs, keys, entries)
        want = np.maximum(want, hll.to_dense(keys, entries, n_keys, p))
        np.testing.assert_array_equal(regs, want)
    before = regs.copy()
    good_k, good_e = np.array([0, 1], np.int64), np.array([1 << hll.RANK_BITS | 1] * 2, np.uint32)
    bad = [
        (np.array([0, n_keys]), good_e, "keys must lie in"),
        (np.array([0, -1]), good_e, "keys must lie in"),
        (good_k, np.array([1, (65 - p) + 1], np.uint32), "rank is outside"),
        (good_k, np.array([1, 0], np.uint32), "rank is outside"),
        (good_k, np.array([1, ((1 << p) << hll.RANK_BITS) | 1], np.uint32), "register index"),
    ]
    for k, e, match in bad:
        with pytest.raises(ValueError, match=match):
            hll.max_into(regs, k, e)
        np.testing.assert_array_equal(regs, before)


@pytest.mark.parametrize("p", [4, 10, 12])
def test_encode_registers_equals_encode_cells_of_the_long_form(p: int) -> None:
    """The combiner's last step: dense registers encoded without re-checking their long form
    give the blobs encode_cells gives (sparse and dense cells, empty rows, no rows)."""
    rng = np.random.default_rng(p)
    regs = np.zeros((40, 1 << p), np.uint8)
    for i in range(40):
        hit = rng.random(1 << p) < rng.choice([0.0, 0.01, 0.3, 1.0])
        regs[i, hit] = rng.integers(1, 66 - p, int(hit.sum()))
    for r in (regs, regs[:0]):
        want = hll.encode_cells(*hll.long_form(r), r.shape[0], p)
        for sparse_max in (None, 0, 7):
            got = hll.encode_registers(r, sparse_max)
            w = (
                want
                if sparse_max is None
                else hll.encode_cells(*hll.long_form(r), r.shape[0], p, sparse_max)
            )
            for g, x in zip(got, w, strict=True):
                np.testing.assert_array_equal(g, x)
    with pytest.raises(ValueError, match="sparse_max"):
        hll.encode_registers(regs, -1)


def _blobs_oracle(regs: np.ndarray, p: int, sparse_max: int) -> tuple[np.ndarray, np.ndarray]:
    """The blob format written out one row at a time in Python: header (version, p, kind,
    0), then sparse entries ``idx << 6 | rank`` (little-endian, 2 or 4 bytes, ascending) or
    the 2**p ranks."""
    w = 2 if p <= 10 else 4
    blobs = []
    for row in regs:
        idx = np.flatnonzero(row)
        if idx.size <= sparse_max:
            body = b"".join(
                int((int(j) << hll.RANK_BITS) | int(row[j])).to_bytes(w, "little") for j in idx
            )
            blobs.append(bytes([hll.FORMAT_VERSION, p, hll.SPARSE, 0]) + body)
        else:
            blobs.append(bytes([hll.FORMAT_VERSION, p, hll.DENSE, 0]) + row.tobytes())
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return offsets, np.frombuffer(b"".join(blobs), np.uint8)


@pytest.mark.parametrize("p", [4, 5, 10, 11, 12, 16])
def test_encode_registers_equals_the_format_written_out(p: int) -> None:
    """Rows at the edges: empty, exactly ``sparse_max`` and one more non-zero registers,
    full at the highest rank, a lone register at either end of the row (a sparse blob's
    last entry written right before the next blob's header, or the data's end), sparse
    blobs between dense ones, and random rows."""
    m = 1 << p
    rng = np.random.default_rng(100 + p)
    for sparse_max in (hll.default_sparse_max(p), 0, 1, 3):
        rows = [np.zeros(m, np.uint8) for _ in range(12)]
        for i, n_hit in ((1, sparse_max), (2, sparse_max + 1), (3, min(m, 2 * sparse_max + 2))):
            hit = rng.choice(m, min(n_hit, m), replace=False)
            rows[i][hit] = rng.integers(1, 66 - p, hit.size)
        rows[4][:] = 65 - p  # full, highest rank
        rows[5][-1] = 1  # a lone last register
        rows[6][0] = 65 - p  # a lone first register
        rows[7][-8:] = rng.integers(0, 66 - p, 8)  # the last word only
        rows[8][:] = rng.integers(0, 2, m) * rng.integers(1, 66 - p, m)
        rows[9][rng.random(m) < 0.05] = 3
        rows[11][-1] = 65 - p  # the last row ends on its last register
        for order in (range(12), rng.permutation(12)):
            regs = np.stack([rows[i] for i in order])
            got = hll.encode_registers(regs, sparse_max)
            want = _blobs_oracle(regs, p, sparse_max)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    empty = hll.encode_registers(np.zeros((0, m), np.uint8))
    assert empty[0].tolist() == [0] and empty[1].size == 0
