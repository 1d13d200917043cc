"""Orientation, cell and accumulation kernels against slow, obvious Python references."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from flowatlas.addresses import is_v4
from flowatlas.kernels import distinct
from flowatlas.kernels.accumulate import CounterOverflow, group_by_key, sum_by_key
from flowatlas.kernels.distinct import dedup_per_ip, dense_sums, map_rows, partition_of
from flowatlas.kernels.orient import cells_cpu, orient_cpu, unpack_cells

U64 = 2**64


def orient_reference(src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rules):
    out = []
    for s, d, er, eid, i_if, o_if in zip(
        src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, strict=True
    ):
        if d >= 0 and s < 0:
            direction, region, rd, ext = 0, d, False, i_if
        elif s >= 0 and d < 0:
            direction, region, rd, ext = 1, s, True, o_if
        elif s >= 0:
            direction, region, rd, ext = 2, s, True, i_if
        else:
            direction, region, rd, ext = 3, 0, False, i_if
        if er > 0:
            region = er
        link = rules.get((int(eid), int(ext)), -1) if eid >= 0 else -1
        # the interface link carrying it (its rule's position here), never for internal flows
        rule = sorted(rules).index((int(eid), int(ext))) if link >= 0 and direction != 2 else -1
        out.append((direction, region, rd, link, rule))
    return out


def test_orient_matches_reference() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    src_reg = rng.integers(-1, 4, size=n).astype(np.int32)
    dst_reg = rng.integers(-1, 4, size=n).astype(np.int32)
    exp_reg = rng.integers(0, 4, size=n).astype(np.int16)
    exp_id = rng.integers(-1, 6, size=n).astype(np.int32)
    in_if = rng.integers(0, 10, size=n).astype(np.uint32)
    out_if = rng.integers(0, 10, size=n).astype(np.uint32)
    rules = {(1, 3): 7, (1, 4): 7, (5, 0): 2, (2, 9): 9}
    keys = sorted(rules)
    rule_keys = np.array([(e << 32) | i for e, i in keys], dtype=np.uint64)
    rule_types = np.array([rules[k] for k in keys], dtype=np.int16)
    d, r, rd, lt, lk = orient_cpu(
        src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys, rule_types
    )
    want = orient_reference(src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rules)
    got = list(zip(d.tolist(), r.tolist(), rd.tolist(), lt.tolist(), lk.tolist(), strict=True))
    assert got == [tuple(w) for w in want]
    assert (lk >= 0).any() and ((lt >= 0) & (d == 2)).any()  # links, and internal ones
    # rules mapped to links: two interfaces of one link give one index
    links = np.array([0, 0, 3, 1], np.int16)
    *_, lk2 = orient_cpu(src_reg, dst_reg, exp_reg, exp_id, in_if, out_if, rule_keys,
                         rule_types, links)  # fmt: skip
    np.testing.assert_array_equal(lk2, np.where(lk >= 0, links[np.maximum(lk, 0)], -1))


def test_cells_match_reference_including_overflow_and_old_times() -> None:
    rng = np.random.default_rng(2)
    n = 5000
    t = rng.integers(-10 * 86_400_000_000, 60 * 86_400_000_000, size=n)
    region = rng.integers(0, 64, size=n).astype(np.int16)
    ntype = rng.integers(0, 64, size=n).astype(np.int16)
    direction = rng.integers(0, 4, size=n).astype(np.uint8)
    v6 = rng.integers(0, 2, size=n).astype(np.uint8)
    nbytes = rng.integers(0, 2**62, size=n, dtype=np.uint64)
    nbytes[:50] = np.uint64(2**64 - 1)
    npk = rng.integers(0, 2**40, size=n, dtype=np.uint64)
    rate = rng.choice(np.array([0, 1, 2, 1000, 2**31], dtype=np.uint32), size=n)
    for scaled in (False, True):
        cell, vol, pk, reason = cells_cpu(
            t, 3_600_000_000, region, ntype, direction, v6, nbytes, npk, rate, scaled
        )
        dims = unpack_cells(cell)
        for i in range(n):
            mult = 1 if scaled or rate[i] <= 1 else int(rate[i])
            over = int(nbytes[i]) * mult >= U64 or int(npk[i]) * mult >= U64
            assert reason[i] == (1 if over else 0)
            if not over:
                assert int(vol[i]) == int(nbytes[i]) * mult and int(pk[i]) == int(npk[i]) * mult
            assert dims["bucket"][i] == int(t[i]) // 3_600_000_000  # floor, also before 1970
            assert (dims["region"][i], dims["network_type"][i]) == (region[i], ntype[i])
            assert (dims["direction"][i], dims["is_v6"][i]) == (direction[i], v6[i])


def test_cells_overflow_exactly_past_each_rates_limit() -> None:
    """Counts at a rate's limit (2^64 - 1) // rate, one below and one above, in either count:
    only those whose product exceeds 64 bits are quarantined (and zeroed)."""
    nb, npk, rate = [], [], []
    for r in (2, 3, 7, 1000, 2**31, 2**32 - 1):
        limit = (U64 - 1) // r
        for a in (limit - 1, limit, limit + 1):
            nb += [a, 5]
            npk += [5, a]
            rate += [r, r]
    nb, npk = np.array(nb, np.uint64), np.array(npk, np.uint64)
    rate = np.array(rate, np.uint32)
    n = nb.size
    zeros = np.zeros(n, np.int16)
    _, vol, pk, reason = cells_cpu(
        np.zeros(n, np.int64), 1, zeros, zeros, zeros.astype(np.uint8),
        zeros.astype(np.uint8), nb, npk, rate, False,
    )  # fmt: skip
    over = [
        int(b) * int(r) >= U64 or int(p) * int(r) >= U64
        for b, p, r in zip(nb, npk, rate, strict=True)
    ]
    assert reason.tolist() == [int(o) for o in over] and 0 < sum(over) < n
    for i in range(n):
        want = (0, 0) if over[i] else (int(nb[i]) * int(rate[i]), int(npk[i]) * int(rate[i]))
        assert (int(vol[i]), int(pk[i])) == want


def random_rows(rng, n, n_keys, n_ips):
    key = rng.integers(0, n_keys, size=n).astype(np.int64) * 7919 - 1000
    ip = rng.integers(0, n_ips, size=n)
    hi = (ip % 3).astype(np.uint64) * np.uint64(0x2001_0DB8_0000_0000)
    lo = (ip * 2654435761).astype(np.uint64)
    vol = rng.integers(0, 2**40, size=n, dtype=np.uint64)
    pk = rng.integers(0, 2**20, size=n, dtype=np.uint64)
    return key, hi, lo, vol, pk


def test_group_by_key_matches_pandas() -> None:
    rng = np.random.default_rng(3)
    key, _, _, vol, pk = random_rows(rng, 200_000, 300, 20_000)
    uk, sums, counts = group_by_key(key, np.stack([vol, pk], axis=1))
    df = pd.DataFrame({"key": key, "vol": vol, "pk": pk})
    ref = df.groupby("key").agg(vol=("vol", "sum"), pk=("pk", "sum"), n=("vol", "size"))
    np.testing.assert_array_equal(uk, ref.index.to_numpy())
    np.testing.assert_array_equal(sums[:, 0], ref["vol"].to_numpy())
    np.testing.assert_array_equal(sums[:, 1], ref["pk"].to_numpy())
    np.testing.assert_array_equal(counts, ref["n"].to_numpy())
    # keys already strictly ascending (the combiner's concatenated map keys) are their own
    # groups, returned as copies; one repeat or step back anywhere takes the hash path
    cols = np.stack([vol, pk], axis=1).astype(np.uint64)
    for k in (np.unique(key), np.unique(key)[:1], np.unique(key)[:0]):
        c = cols[: k.size]
        got = group_by_key(k, c)
        np.testing.assert_array_equal(got[0], k)
        np.testing.assert_array_equal(got[1], c)
        np.testing.assert_array_equal(got[2], np.ones(k.size, np.uint64))
        assert got[2].dtype == np.uint64 and not np.shares_memory(got[1], c)
    for k in (np.r_[np.unique(key), key.max()], np.r_[np.unique(key)[1:], key.min()]):
        got = group_by_key(k, cols[: k.size])
        ref = pd.DataFrame({"k": k, "v": cols[: k.size, 0]}).groupby("k")["v"].agg(["sum", "size"])
        np.testing.assert_array_equal(got[0], ref.index.to_numpy())
        np.testing.assert_array_equal(got[1][:, 0], ref["sum"].to_numpy())
        np.testing.assert_array_equal(got[2], ref["size"].to_numpy())


def test_dedup_per_ip_matches_pandas_and_ignores_order() -> None:
    rng = np.random.default_rng(4)
    key, hi, lo, vol, _ = random_rows(rng, 100_000, 50, 5000)
    cell = (key - key.min()) // 7919
    rep, ucell, uvol = dedup_per_ip(hi, lo, cell, vol, int(cell.max()) + 1)
    got = pd.DataFrame({"hi": hi[rep], "lo": lo[rep], "cell": ucell, "vol": uvol})
    want = (
        pd.DataFrame({"hi": hi, "lo": lo, "cell": cell, "vol": vol})
        .groupby(["hi", "lo", "cell"], as_index=False)["vol"]
        .sum()
    )
    cols = ["hi", "lo", "cell"]
    got = got.sort_values(cols).reset_index(drop=True)
    np.testing.assert_array_equal(got.to_numpy(), want.sort_values(cols).to_numpy())
    perm = rng.permutation(cell.size)
    rep2, ucell2, uvol2 = dedup_per_ip(
        hi[perm], lo[perm], cell[perm], vol[perm], int(cell.max()) + 1
    )
    got2 = pd.DataFrame({"hi": hi[perm][rep2], "lo": lo[perm][rep2], "cell": ucell2, "vol": uvol2})
    np.testing.assert_array_equal(got2.sort_values(cols).to_numpy(), got.to_numpy())


def test_overflow_raises_instead_of_wrapping() -> None:
    key = np.zeros(2, np.int64)
    big = np.array([2**63, 2**63], np.uint64)
    with pytest.raises(CounterOverflow):
        sum_by_key(key, big)
    with pytest.raises(CounterOverflow):
        dense_sums(key, big, np.zeros(2, np.uint64), 1)
    with pytest.raises(CounterOverflow):
        dedup_per_ip(np.zeros(2, np.uint64), np.zeros(2, np.uint64), key, big, 1)


def _dims() -> tuple[np.ndarray, np.ndarray]:
    """A dense numbering of 40 scattered 15-bit dimension codes (as pipeline.dim_tables)."""
    code = np.sort(np.random.default_rng(0).choice(1 << 15, 40, replace=False)).astype(np.int64)
    index = np.full(1 << 15, -1, np.int64)
    index[code] = np.arange(code.size)
    return index, code


def _map_rows_oracle(key, hi, lo, vol, pk):
    df = pd.DataFrame({"key": key, "hi": hi, "lo": lo, "vol": vol, "pk": pk})
    cells = df.groupby("key").agg(vol=("vol", "sum"), pk=("pk", "sum"), n=("vol", "size"))
    pairs = df.groupby(["key", "hi", "lo"], as_index=False)["vol"].sum()
    return cells, pairs


#: map_rows' fold sampling: never skip the probe, the default, skip in short runs after
#: short samples, and skip (nearly) every row
FOLDS = [(1, 0, 0), None, (3, 2, 5), (1, 2, 10**9)]


@pytest.mark.parametrize("fold", FOLDS)
@pytest.mark.parametrize("cache_bits", [1, 4, 16, 22])
@pytest.mark.parametrize("span", ["narrow", "wide"])
def test_map_rows_matches_pandas_whatever_the_cache(cache_bits, span, fold) -> None:
    """Per-cell sums exactly as pandas; rows that, once repeats are summed, are pandas'
    distinct (cell, address) pairs, each in its address's partition, first-seen order; the
    same whether the buckets are summed densely (narrow span) or hashed (wide span), and
    whether or not the probe is skipped where little folds."""
    rng = np.random.default_rng(11)
    index, code = _dims()
    n = 60_000
    bucket = rng.integers(0, 30, n) * (1 if span == "narrow" else 10**9) - 5
    key = (bucket << 15) | code[rng.integers(0, code.size, n)]
    _, hi, lo, vol, pk = random_rows(rng, n, 1, 4000)
    lo[::3] = (lo[::3] & np.uint64(0xFFFFFFFF)) | np.uint64(0xFFFF << 32)  # IPv4-mapped
    hi[::3] = 0
    cells, sums, cell, ohi, olo, ovol, bounds = map_rows(
        key, hi, lo, vol, pk, index, code, 15, 7, cache_bits=cache_bits, fold=fold
    )
    want_cells, want_pairs = _map_rows_oracle(key, hi, lo, vol, pk)
    o = np.argsort(cells)
    if span == "narrow":
        assert (o == np.arange(cells.size)).all()  # dense: key order
    np.testing.assert_array_equal(cells[o], want_cells.index.to_numpy())
    np.testing.assert_array_equal(sums[o], want_cells.to_numpy().astype(np.uint64))
    got = pd.DataFrame({"key": cell, "hi": ohi, "lo": olo, "vol": ovol})
    summed = got.groupby(["key", "hi", "lo"], as_index=False)["vol"].sum()
    np.testing.assert_array_equal(summed.to_numpy(), want_pairs.to_numpy())
    if cache_bits >= 22 and fold == FOLDS[0]:  # a table far larger than the input, always
        assert cell.size <= 1.01 * len(want_pairs)  # probed, folds nearly every repeat
    if fold == FOLDS[-1]:  # the probe skipped after the first row: every row goes out
        assert cell.size == n
    if cache_bits == 1:  # two entries: few repeats fold
        assert cell.size > 0.9 * n
    assert bounds[0] == 0 and bounds[-1] == cell.size and (np.diff(bounds) >= 0).all()
    # each partition holds its addresses' rows, each pair's first row where the pair first
    # appears in the input (first-seen order)
    first = (
        pd.DataFrame({"key": key, "hi": hi, "lo": lo, "row": np.arange(n)})
        .groupby(["key", "hi", "lo"])["row"]
        .min()
    )
    for j in range(7):
        a, b = bounds[j], bounds[j + 1]
        assert (partition_of(ohi[a:b], olo[a:b], 7) == j).all()
        part = pd.DataFrame({"key": cell[a:b], "hi": ohi[a:b], "lo": olo[a:b]})
        part = part[~part.duplicated()]
        rows = first.loc[list(part.itertuples(index=False, name=None))].to_numpy()
        assert (np.diff(rows) > 0).all()


def test_map_rows_adversarial_inputs() -> None:
    index, code = _dims()
    e = np.empty(0, np.uint64)
    cells, sums, cell, *_, bounds = map_rows(np.empty(0, np.int64), e, e, e, e, index, code, 15, 3)
    assert cells.size == 0 and sums.shape == (0, 3) and cell.size == 0 and list(bounds) == [0] * 4
    key = np.full(2, int(code[0]), np.int64)
    big = np.array([2**63, 2**63], np.uint64)
    zero = np.zeros(2, np.uint64)
    with pytest.raises(CounterOverflow):  # volume per cell
        map_rows(key, zero, zero, big, zero, index, code, 15, 3)
    with pytest.raises(CounterOverflow):  # packets per cell
        map_rows(key, zero, zero, zero, big, index, code, 15, 3)
    bad = np.setdiff1d(np.arange(50), code)[:1]
    with pytest.raises(ValueError, match="dimension code"):
        map_rows(bad, zero[:1], zero[:1], zero[:1], zero[:1], index, code, 15, 3)
    with pytest.raises(ValueError, match="v6_prefix"):
        map_rows(key, zero, zero, zero, zero, index, code, 15, 3, v6_prefix=0)
    for bits in (0, 40):
        with pytest.raises(ValueError, match="cache_bits"):
            map_rows(key, zero, zero, zero, zero, index, code, 15, 3, cache_bits=bits)
    for fold in ((0, 1, 1), (1, 1, -1)):
        with pytest.raises(ValueError, match="fold"):
            map_rows(key, zero, zero, zero, zero, index, code, 15, 3, fold=fold)
    # all rows one pair: one row, volume summed exactly up to the last bit
    vol = np.full(1000, 2**53 + 1, np.uint64)
    _, sums, cell, _, _, ovol, _ = map_rows(
        np.full(1000, int(code[3]), np.int64), np.zeros(1000, np.uint64), np.ones(1000, np.uint64),
        vol, vol, index, code, 15, 3,
    )  # fmt: skip
    assert cell.size == 1 and int(ovol[0]) == 1000 * (2**53 + 1) == int(sums[0, 0])


def _time_ordered_rows(rng, pairs_per_bucket):
    """Rows in bucket order (as an archive holds them): bucket b has ``pairs_per_bucket[b]``
    distinct (cell, address) pairs, each repeated 1-6 times, repeats shuffled in the bucket."""
    index, code = _dims()
    keys, his, los = [], [], []
    for b, m in enumerate(pairs_per_bucket):
        dims = code[rng.integers(0, code.size, m)]
        ip = rng.choice(10 * m + 10, m, replace=False).astype(np.uint64)
        k = (np.int64(b + 3) << 15) | dims
        rep = rng.integers(1, 7, m)
        order = rng.permutation(int(rep.sum()))
        keys.append(np.repeat(k, rep)[order])
        his.append(np.repeat(ip % np.uint64(2), rep)[order])
        los.append(np.repeat(ip * np.uint64(0x9E3779B1), rep)[order])
    key, hi, lo = (np.concatenate(a) for a in (keys, his, los))
    vol = rng.integers(0, 2**40, key.size, dtype=np.uint64)
    pk = rng.integers(0, 2**20, key.size, dtype=np.uint64)
    return index, code, key, hi, lo, vol, pk


def _assert_pairs(key, hi, lo, vol, pk, cells, sums, cell, ohi, olo, ovol) -> int:
    """Cell sums and summed pairs as pandas gives them; returns the distinct pairs."""
    want_cells, want_pairs = _map_rows_oracle(key, hi, lo, vol, pk)
    o = np.argsort(cells)
    np.testing.assert_array_equal(cells[o], want_cells.index.to_numpy())
    np.testing.assert_array_equal(sums[o], want_cells.to_numpy().astype(np.uint64))
    got = pd.DataFrame({"key": cell, "hi": ohi, "lo": olo, "vol": ovol})
    summed = got.groupby(["key", "hi", "lo"], as_index=False)["vol"].sum()
    np.testing.assert_array_equal(summed.to_numpy(), want_pairs.to_numpy())
    return len(want_pairs)


def test_map_rows_folds_every_repeat_of_time_ordered_records() -> None:
    """Records in bucket order: every repeat of a pair folds while a bucket's pairs fit the
    table (half its largest size; it doubles, keeping its pairs, as one bucket overfills
    it), fewer where they cannot; the sums stay exact either way."""
    rng = np.random.default_rng(21)
    small = rng.integers(50, distinct.CACHE_START_BITS**3 // 2, 40)  # < 1,024 pairs each
    index, code, key, hi, lo, vol, pk = _time_ordered_rows(rng, small)
    out = map_rows(key, hi, lo, vol, pk, index, code, 15, 5)
    assert out[2].size == _assert_pairs(key, hi, lo, vol, pk, *out[:6]) == int(small.sum())
    big = [30_000, 200, 25_000, 9_000]  # more pairs than 2^12 slots hold: it doubles
    index, code, key, hi, lo, vol, pk = _time_ordered_rows(rng, big)
    out = map_rows(key, hi, lo, vol, pk, index, code, 15, 5)
    assert out[2].size == _assert_pairs(key, hi, lo, vol, pk, *out[:6]) == sum(big)
    # capped at 2^12 slots: no growth, so the big buckets fold less (sums still exact)
    capped = map_rows(key, hi, lo, vol, pk, index, code, 15, 5, cache_bits=12)
    assert _assert_pairs(key, hi, lo, vol, pk, *capped[:6]) == sum(big)
    assert capped[2].size > 1.5 * sum(big)


def test_map_rows_probes_only_where_pairs_repeat() -> None:
    """The default sampling: records whose pairs repeat (each 1-6 times) fold all their
    repeats, exactly as an always-probed table does; records that never repeat a pair go
    out one row each, the probe skipped but for the samples; where the two alternate, both
    happen; the sums and summed pairs stay exact throughout."""
    rng = np.random.default_rng(31)
    index, code, key, hi, lo, vol, pk = _time_ordered_rows(rng, [1000] * 40)
    out = map_rows(key, hi, lo, vol, pk, index, code, 15, 5)
    assert out[2].size == _assert_pairs(key, hi, lo, vol, pk, *out[:6]) == 40_000
    never = map_rows(key, hi, lo, vol, pk, index, code, 15, 5, fold=FOLDS[0])
    for a, b in zip(out, never, strict=True):
        np.testing.assert_array_equal(a, b)
    n = 400_000  # distinct pairs only: nothing to fold
    key = (np.arange(n, dtype=np.int64) // 4000 + 3 << 15) | code[rng.integers(0, 40, n)]
    hi = np.zeros(n, np.uint64)
    lo = rng.permutation(n).astype(np.uint64)
    vol, pk = rng.integers(0, 2**40, (2, n), dtype=np.uint64)
    out = map_rows(key, hi, lo, vol, pk, index, code, 15, 5)
    assert out[2].size == _assert_pairs(key, hi, lo, vol, pk, *out[:6]) == n
    # a run of repeats after one without: the sample after the skip folds them again
    *_, r_key, r_hi, r_lo, r_vol, r_pk = _time_ordered_rows(rng, [4000] * 40)
    r_key = r_key + (np.int64(200) << 15)  # later buckets
    both = [np.concatenate(a) for a in ((key, r_key), (hi, r_hi), (lo, r_lo), (vol, r_vol),
                                        (pk, r_pk))]  # fmt: skip
    out = map_rows(*both, index, code, 15, 5)
    distinct_pairs = _assert_pairs(*both, *out[:6])
    assert distinct_pairs == n + 160_000
    assert n + 160_000 < out[2].size < n + 0.5 * r_key.size


@pytest.mark.parametrize("fold", [(1, 0, 0), (3, 2, 5)])
@pytest.mark.parametrize("bits", [1, 3, 12, 14])
@pytest.mark.parametrize("gen_max", [1, 2])
def test_map_rows_table_wiped_when_generations_wrap(bits, gen_max, fold) -> None:
    """A table whose generation numbers run out is wiped: the rows are exactly those of a
    table whose generations never run out (stale slots never fold, nor block a probe, and a
    table that doubles as they run out keeps its pairs), the probe always made or skipped
    in short runs (a new generation after each)."""
    rng = np.random.default_rng(bits)
    sizes = [3000, 5000, 100, 7000, 2500, *rng.integers(1, 3000, 30)]
    index, code, key, hi, lo, vol, pk = _time_ordered_rows(rng, sizes)
    tail = np.arange(key.size // 2, key.size)
    key[tail] = key[rng.permutation(tail)]  # the second half out of bucket order
    b0 = int(key.min()) >> 15
    nb = (int(key.max()) >> 15) - b0 + 1
    cid, _ = distinct._dense_cell_ids(key, index, 15, b0, code.size)

    def run(gen_max):
        return distinct._split_sum(cid, nb * code.size, key, hi, lo, vol, pk, 5, np.uint64(0),
                                   bits, np.int64(15), np.uint64(gen_max),
                                   *(np.int64(x) for x in fold),
                                   np.int64(distinct._V4_CELLS))  # fmt: skip

    want, got = run(distinct._GEN_MAX), run(gen_max)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert want[3].size < key.size or bits == 1


_M1, _M2, _G = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15
_W = (1 << 64) - 1


def _unmix64(x: int) -> int:
    """The inverse of splitmix64's finaliser (``accumulate.mix64``), in plain Python."""
    x ^= (x >> 31) ^ (x >> 62)
    x = x * pow(_M2, -1, 1 << 64) & _W
    x ^= (x >> 27) ^ (x >> 54)
    x = x * pow(_M1, -1, 1 << 64) & _W
    return x ^ (x >> 30) ^ (x >> 60)


def _mix64(x: int) -> int:
    x = (x ^ (x >> 30)) * _M1 & _W
    x = (x ^ (x >> 27)) * _M2 & _W
    return x ^ (x >> 31)


def _run_split_sum(key, hi, lo, vol, pk, index, code, v4_cells, bits=16, fold=(1, 0, 0)):
    b0 = int(key.min()) >> 15
    nb = (int(key.max()) >> 15) - b0 + 1
    cid, _ = distinct._dense_cell_ids(key, index, 15, b0, code.size)
    return distinct._split_sum(cid, nb * code.size, key, hi, lo, vol, pk, 5, np.uint64(0), bits,
                               np.int64(15), np.uint64(distinct._GEN_MAX),
                               *(np.int64(x) for x in fold), np.int64(v4_cells))  # fmt: skip


def test_map_rows_pairs_whose_slot_tags_collide_stay_apart() -> None:
    """The dedup table keeps a hash, not the pair, for IPv6 pairs: pairs built to share that
    hash (and so their first slot and tag: IPv6 addresses whose ``ip_hash`` differs by the
    cell ids' hash terms, found by inverting splitmix64) fold each only with itself, the
    rows summed exactly as pandas sums them, and an IPv4 pair whose packed tag equals an
    IPv6 pair's hash does not fold with it either."""
    rng = np.random.default_rng(41)
    index, code = _dims()
    n_cells = 6
    cells = (np.int64(3) << 15) | code[:n_cells]  # one bucket: cell ids 0..5
    target = 0x9ABC_DEF0  # below 2^32: an IPv4 pair of cell 0 can pack to it
    keys, his, los = [], [], []
    for c in range(n_cells):
        for z in range(3):  # three addresses a cell, all with the same tag for their cell
            lw = (0x2001_0DB8 << 32) + 1000 * c + z
            a_hash = target ^ (c * _G & _W)
            h = _unmix64(a_hash) ^ _mix64((lw + _G) & _W)
            keys.append(cells[c])
            his.append(h)
            los.append(lw)
    n6 = len(keys)
    # IPv4 pairs: one (cell 0) whose packed tag (0 << 32 | address) is the IPv6 pairs' hash
    # without its top bit (tags differ in that bit only), the same address in the other
    # cells, and addresses that differ from it in one high bit only
    for c, a in [(c, target) for c in range(n_cells)] + [(0, target ^ (1 << 31)),
                                                          (0, target ^ (1 << 28))]:  # fmt: skip
        keys.append(cells[c])
        his.append(0)
        los.append((0xFFFF << 32) | a)
    base = len(keys)
    pick = rng.integers(0, base, 4000)  # each pair repeated, shuffled
    key = np.asarray(keys, np.int64)[pick]
    hi = np.asarray(his, np.uint64)[pick]
    lo = np.asarray(los, np.uint64)[pick]
    assert (is_v4(hi, lo) == (pick >= n6)).all()
    vol, pk = rng.integers(0, 2**40, (2, key.size), dtype=np.uint64)
    _, want = _map_rows_oracle(key, hi, lo, vol, pk)
    assert len(want) == base
    # 2^16 slots hold every pair; 4 slots (2 pairs a generation) put nearly every pair that
    # follows another in the same probe run as it
    for bits, v4_cells in itertools.product((2, 16), (distinct._V4_CELLS, 0)):
        out = _run_split_sum(key, hi, lo, vol, pk, index, code, v4_cells, bits)
        *_, o_cell, o_hi, o_lo, o_vol, _, overflow = out
        assert not overflow
        got = pd.DataFrame({"key": o_cell, "hi": o_hi, "lo": o_lo, "vol": o_vol})
        if bits == 16:
            assert not got.duplicated(["key", "hi", "lo"]).any()  # every repeat folded
        else:
            assert base < len(got) < key.size
        got = got.groupby(["key", "hi", "lo"], as_index=False)["vol"].sum()
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


@pytest.mark.parametrize("fold", [(1, 0, 0), (3, 2, 5)])
@pytest.mark.parametrize("bits", [3, 12])
def test_map_rows_cell_ids_past_the_packed_range_hash_their_tags(bits, fold) -> None:
    """Cell ids too large to pack with an IPv4 address take the hashed tags (all of them
    with ``v4_cells`` 0, some with 20): the same rows, in the same order, as packed tags
    give, through doubling tables and new generations."""
    rng = np.random.default_rng(bits)
    index, code, key, hi, lo, vol, pk = _time_ordered_rows(rng, [3000, 500, 7000, 40, 2500])
    v4 = rng.random(key.size) < 0.7
    hi[v4] = 0
    lo[v4] = (lo[v4] & np.uint64(0xFFFFFFFF)) | np.uint64(0xFFFF << 32)
    want = _run_split_sum(key, hi, lo, vol, pk, index, code, distinct._V4_CELLS, bits, fold)
    for v4_cells in (0, 20):
        got = _run_split_sum(key, hi, lo, vol, pk, index, code, v4_cells, bits, fold)
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b)
    assert want[3].size < key.size or bits < 12


def test_partition_depends_on_the_address_or_its_ipv6_prefix_only() -> None:
    rng = np.random.default_rng(5)
    _, hi, lo, _, _ = random_rows(rng, 100_000, 1, 3000)
    p = partition_of(hi, lo, 7)
    assert p.min() >= 0 and p.max() < 7
    df = pd.DataFrame({"hi": hi, "lo": lo, "p": p})
    assert (df.groupby(["hi", "lo"])["p"].nunique() == 1).all()
    v6 = ~is_v4(hi, lo)
    assert (df[v6].groupby("hi")["p"].nunique() == 1).all()  # a /64 stays together
    counts = np.bincount(
        partition_of(np.zeros(50_000, np.uint64), lo[:50_000] | np.uint64(0xFFFF << 32), 7),
        minlength=7,
    )
    assert counts.min() > 0.5 * counts.mean()  # spread, not piled up
    # against a plain-Python splitmix64 finaliser with the published constants (Steele et
    # al.), so a changed hash or prefix rule is caught rather than compared with itself
    sample = np.r_[np.flatnonzero(v6)[:500], np.flatnonzero(~v6)[:500]]
    want = [_partition_reference(int(hi[i]), int(lo[i]), 7) for i in sample]
    np.testing.assert_array_equal(p[sample], want)
    assert partition_of(hi[sample], lo[sample], 7, v6_prefix=48).tolist() == [
        _partition_reference(int(hi[i]), int(lo[i]), 7, 48) for i in sample
    ]


def _splitmix64_finaliser(x: int) -> int:
    mask = (1 << 64) - 1
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def _partition_reference(hi: int, lo: int, parts: int, v6_prefix: int = 64) -> int:
    """docs/cube.md's rule: IPv4 by the whole address, IPv6 by its /v6_prefix."""
    if hi == 0 and lo >> 32 == 0xFFFF:
        gold = 0x9E3779B97F4A7C15
        return _splitmix64_finaliser(hi ^ _splitmix64_finaliser((lo + gold) & (2**64 - 1))) % parts
    return _splitmix64_finaliser(hi >> (64 - v6_prefix)) % parts


CUDASIM = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from flowatlas.kernels import cuda as K
    from flowatlas.kernels.orient import cells_cpu, orient_cpu
    rng = np.random.default_rng(6)
    n = 1500
    src = rng.integers(-1, 4, size=n).astype(np.int32)
    dst = rng.integers(-1, 4, size=n).astype(np.int32)
    er = rng.integers(0, 4, size=n).astype(np.int16)
    eid = rng.integers(-1, 4, size=n).astype(np.int32)
    iif = rng.integers(0, 6, size=n).astype(np.uint32)
    oif = rng.integers(0, 6, size=n).astype(np.uint32)
    rk = np.array([(1 << 32) | 3, (2 << 32) | 5], np.uint64)
    rt = np.array([7, -1], np.int16)
    rl = np.array([4, 2], np.int16)
    want = orient_cpu(src, dst, er, eid, iif, oif, rk, rt, rl)
    assert (want[4] == 2).any() and (want[4] == 4).any()
    got = K.orient_cuda(*(cuda.to_device(a) for a in (src, dst, er, eid, iif, oif, rk, rt, rl)))
    for w, g in zip(want, got):
        assert (w == g.copy_to_host()).all()
    t = rng.integers(-10**12, 10**13, size=n)
    nb = rng.integers(0, 2**62, size=n, dtype=np.uint64)
    npk = rng.integers(0, 2**30, size=n, dtype=np.uint64)
    rate = rng.choice(np.array([0, 1, 1000, 2**31], np.uint32), size=n)
    v6 = rng.integers(0, 2, size=n).astype(np.uint8)
    ntype = rng.integers(0, 9, size=n).astype(np.int16)
    args = (t, 3_600_000_000, want[1], ntype, want[0], v6, nb, npk, rate)
    nb[:40] = np.uint64(2**64 - 1)  # past the limit of every rate above 1
    dev = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    for scaled in (False, True):
        want_c = cells_cpu(*args, scaled)
        assert (want_c[3] == 1).any() != scaled and (want_c[3] == 0).any()
        got_c = K.cells_cuda(*dev, scaled)
        for w, g in zip(want_c, got_c):
            assert (w == g.copy_to_host()).all()
    print("OK")
    """
)


def test_cuda_drivers_under_simulator() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    p = subprocess.run(
        [sys.executable, "-c", CUDASIM], env=env, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().endswith("OK")


def test_counting_order_equals_a_stable_argsort() -> None:
    """The map step's split by partition: a counting sort, exactly a stable argsort's order."""
    from flowatlas.kernels.distinct import counting_order

    rng = np.random.default_rng(11)
    for n, k in [(0, 4), (1, 1), (5000, 1), (100_000, 7), (100_000, 1000)]:
        ids = rng.integers(0, k, n).astype(np.int32)
        order, start = counting_order(ids, k)
        want = np.argsort(ids, kind="stable")
        np.testing.assert_array_equal(order, want)
        np.testing.assert_array_equal(start, np.searchsorted(ids[want], np.arange(k + 1)))
    with pytest.raises(ValueError, match="ids must lie in"):
        counting_order(np.array([0, 3]), 3)


def test_range_ids_are_dense_ranks_in_key_order() -> None:
    """Narrow ranges use a presence table, wide ones hashing; both give ascending ranks."""
    from flowatlas.kernels.distinct import range_ids

    rng = np.random.default_rng(12)
    cases = [
        np.empty(0, np.int64),
        np.array([5], np.int64),
        rng.integers(490_000, 494_416, 100_000),  # hour buckets: narrow
        rng.integers(-(2**40), 2**40, 1000),  # wide: the hashing path
        np.array([2**62, -(2**62), 0, 2**62], np.int64),
    ]
    for key in cases:
        ids, uniq = range_ids(key)
        want_uniq, want_ids = np.unique(key, return_inverse=True)
        np.testing.assert_array_equal(uniq, want_uniq)
        np.testing.assert_array_equal(ids, want_ids.reshape(-1))


def _assert_same_walk(got: tuple, want: tuple) -> None:
    """Two walks' answers equal: counts, IPv6 counts, squares and top lists array for
    array, (key, ASN) volumes as sums per (key, ASN) (their order follows the walk's)."""
    for a, b in zip(got[:6], want[:6], strict=True):
        np.testing.assert_array_equal(a, b)

    def asn_sums(r):
        df = pd.DataFrame({"k": r[6], "a": r[7], "v": r[8].astype(np.float64)})
        return df.groupby(["k", "a"])["v"].sum().to_dict()

    assert asn_sums(got) == asn_sums(want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_walk_fused_and_copied_levels_equal_one_segment_at_a_time(seed: int) -> None:
    """The reducers' walk takes a level's grouping sets in one pass and copies levels with
    the periods of the level below (one month = one quarter = the whole range): the same
    answers as walking each segment alone (segments given in reverse order neither fuse nor
    copy), and distinct counts equal to a Python count."""
    from flowatlas.kernels.distinct import walk

    rng = np.random.default_rng(seed)
    n = 4000
    pool_hi = np.concatenate([np.zeros(200, np.uint64), rng.integers(1, 2**63, 60, np.uint64)])
    pool_lo = np.concatenate(
        [0xFFFF00000000 + rng.integers(0, 2**32, 200, np.uint64), rng.integers(0, 2**63, 60)]
    ).astype(np.uint64)
    pick = rng.zipf(1.3, n) % pool_hi.size
    hi, lo = pool_hi[pick], pool_lo[pick]
    v6 = hi != 0
    bucket = rng.integers(0, 48, n)  # two days of hours
    dims = rng.integers(0, 6, n)
    vol = rng.integers(1, 1 << 40, n).astype(np.uint64)
    vol[rng.random(n) < 0.2] = 1000  # ties in the top lists
    asn = (pick % 17).astype(np.uint32)
    # levels: bucket, day, then month, quarter and all (one period each: copies)
    pidx = np.stack([np.arange(48), np.arange(48) // 24, *(np.zeros(48, np.int64),) * 3])
    gmap = np.stack([np.arange(6), np.arange(6) % 2, np.zeros(6, np.int64)])
    widths = (6, 2, 1)
    periods = pidx.max(axis=1) + 1
    segments = [(0, 0, 0, 6, -1)]
    off, coff, asn_from = 48 * 6, 0, -1
    for lev in range(1, 5):
        if lev == 2:
            asn_from = coff
        for g, w in enumerate(widths):
            segments.append((lev, g, off, w, coff))
            off += int(periods[lev]) * w
            coff += int(periods[lev]) * w
    args = (hi, lo, bucket, dims, v6, vol, asn, pidx, gmap)
    got = walk(*args, segments, off, coff, 3, asn_from)
    want = walk(*args, segments[::-1], off, coff, 3, asn_from)
    _assert_same_walk(got, want)
    addr = (hi.astype(object) << 64) | lo.astype(object)
    for lev, g, o, w, _co in segments:
        period = pidx[lev][bucket]
        for p in range(int(periods[lev])):
            for k in range(w):
                sel = (period == p) & (gmap[g][dims] == k)
                assert got[0][o + p * w + k] == len(set(addr[sel]))
                assert got[1][o + p * w + k] == len(set(addr[sel & v6]))


def test_ip_ids_first_at_the_table_growth_points() -> None:
    """ip_ids_first against a dict numbering addresses as first seen, for address counts at
    and around each point where the table doubles (it runs rows until it is half full, then
    grows: 512, 1,024, ... addresses), with each address's rows spread over the input and
    its first row anywhere, IPv4-mapped and IPv6 addresses mixed, and addresses that differ
    in one bit of either word."""
    from flowatlas.kernels.distinct import ip_ids_first

    rng = np.random.default_rng(5)
    for m in (1, 2, 511, 512, 513, 1023, 1024, 1025, 2048, 4097, 20_000):
        base_hi = np.where(rng.random(m) < 0.3, rng.integers(1, 1 << 62, m), 0).astype(np.uint64)
        base_lo = np.where(
            base_hi == 0,
            0xFFFF_0000_0000 | rng.integers(0, 1 << 32, m),
            rng.integers(0, 1 << 63, m),
        ).astype(np.uint64)
        # pairs one bit apart: the same hi and lo but bit 0 of lo, or the top bit of hi
        base_lo[1::4] = base_lo[0:-1:4] ^ np.uint64(1)
        base_hi[1::4] = base_hi[0:-1:4]
        base_hi[2::4] = base_hi[1:-1:4] ^ np.uint64(1 << 63)
        base_lo[2::4] = base_lo[1:-1:4]
        pick = np.concatenate([rng.permutation(m), rng.integers(0, m, 3 * m)])
        rng.shuffle(pick[m // 2 :])  # some first rows late in the input
        hi, lo = base_hi[pick], base_lo[pick]
        seen: dict[tuple[int, int], int] = {}
        want = np.array(
            [
                seen.setdefault((h, x), len(seen))
                for h, x in zip(hi.tolist(), lo.tolist(), strict=True)
            ]
        )
        first_want = np.unique(want, return_index=True)[1]
        ids, n_ids, first = ip_ids_first(hi, lo)
        assert n_ids == len(seen)
        np.testing.assert_array_equal(ids, want)
        np.testing.assert_array_equal(first, first_want)


def test_ip_ids_first_rows_and_stamp_counts_by_ids() -> None:
    """Address ids in first-seen order with each address's first row (against np.unique),
    across the table's growth and for addresses differing in one word only; and the IPv6
    prefix pass as the reducers run it (prefixes numbered per distinct address, ids given,
    no addresses) counting what a Python count of distinct prefixes per key gives."""
    from flowatlas.kernels.distinct import ip_ids, ip_ids_first, stamp_counts, v6_prefix_of

    rng = np.random.default_rng(21)
    n = 30_000
    pool_hi = rng.integers(0, 4, 5000).astype(np.uint64)  # hi shared by many addresses
    pool_lo = rng.integers(0, 3, 5000).astype(np.uint64) << np.uint64(63)
    pool_lo |= np.arange(5000, dtype=np.uint64) % np.uint64(1300)  # lo shared too
    pick = rng.integers(0, pool_hi.size, n)
    hi, lo = pool_hi[pick], pool_lo[pick]
    ids, m, first = ip_ids_first(hi, lo)
    addr = (hi.astype(object) << 64) | lo.astype(object)
    uniq, at, inv = np.unique(addr, return_index=True, return_inverse=True)
    assert m == uniq.size == first.size
    np.testing.assert_array_equal(np.sort(first), np.sort(at))  # the first rows...
    np.testing.assert_array_equal(ids[first], np.arange(m))  # ...numbered as seen
    np.testing.assert_array_equal(ids, ids[at][inv.reshape(-1)])  # one id per address
    np.testing.assert_array_equal(first, np.sort(first))  # ids in first-seen order
    assert ip_ids(hi, lo)[1] == m
    e = np.empty(0, np.uint64)
    assert ip_ids_first(e, e)[1] == 0

    # prefix pass: /8 prefixes of these addresses, numbered per address, counted per key
    bucket = rng.integers(0, 48, n)
    dims = rng.integers(0, 6, n)
    pidx = np.stack([np.arange(48), np.arange(48) // 24])
    gmap = np.stack([np.arange(6), np.arange(6) % 2])
    segments = [(0, 0, 0, 6), (1, 0, 288, 6), (1, 1, 300, 2)]
    p_hi, p_lo = v6_prefix_of(hi[first] | np.uint64(1 << 62), lo[first], 8)
    p_of, n_p = ip_ids(p_hi, p_lo)
    got = stamp_counts(None, None, bucket, dims, pidx, gmap, segments, 304, ids=(p_of[ids], n_p))
    want = stamp_counts(
        *v6_prefix_of(hi | np.uint64(1 << 62), lo, 8), bucket, dims, pidx, gmap, segments, 304
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    pref = p_hi[p_of[ids]]
    for lev, g, o, w in segments:
        period = pidx[lev][bucket]
        for p in range(int(pidx[lev].max()) + 1):
            for k in range(w):
                sel = (period == p) & (gmap[g][dims] == k)
                assert got[0][o + p * w + k] == len(set(pref[sel]))
    with pytest.raises(ValueError, match="addresses or their ids"):
        stamp_counts(None, None, bucket, dims, pidx, gmap, segments, 304)


def test_walk_copies_no_level_of_volumes_alone_into_one_of_addresses() -> None:
    """One day of rows: the month, quarter and whole range have the day's periods, so the
    walk copies them from the level below. With the day's top lists of volumes alone
    (``volumes_only``), the month's lists of addresses are walked, not copied from the
    day's; the quarter's are still copied from the month's. The same answers as the
    segments walked one at a time (given in reverse order: no copies), where the day's
    lists hold its k_top largest volumes."""
    from flowatlas.kernels.distinct import _copied_segments, walk

    rng = np.random.default_rng(8)
    n = 2000
    pool_hi = np.where(rng.random(300) < 0.4, rng.integers(1, 2**63, 300), 0).astype(np.uint64)
    pool_lo = rng.integers(0, 2**63, 300).astype(np.uint64)
    pick = rng.zipf(1.4, n) % 300
    hi, lo = pool_hi[pick], pool_lo[pick]
    bucket = rng.integers(0, 24, n)  # one day of hours
    dims = rng.integers(0, 6, n)
    vol = rng.integers(0, 50, n).astype(np.uint64)  # ties, and volumes 0
    asn = (pick % 7).astype(np.uint32)
    z = np.zeros(24, np.int64)
    pidx = np.stack([np.arange(24), z, z, z, z])
    gmap = np.stack([np.arange(6), np.arange(6) % 2, np.zeros(6, np.int64)])
    segments = [(0, 0, 0, 6, -1)]
    off, coff = 24 * 6, 0
    for lev in range(1, 5):
        for g, w in enumerate((6, 2, 1)):
            segments.append((lev, g, off, w, coff))
            off += w
            coff += w
    seg = np.array(segments, np.int64)
    # (key, ASN) volumes of the whole range's grouping 0: walked, not copied either
    copies = dict(_copied_segments(seg, pidx, 27, 33, volumes_only=(1,)))
    assert copies == {7: 4, 8: 5, 9: 6, 11: 8, 12: 9}  # the month's lists: walked
    assert dict(_copied_segments(seg, pidx, 27, 33))[4] == 1  # else the day's copies
    args = (hi, lo, bucket, dims, hi != 0, vol, asn, pidx, gmap)
    k_top = 3
    got = walk(*args, segments, off, coff, k_top, 27, 33, volumes_only=(1,))
    want = walk(*args, segments[::-1], off, coff, k_top, 27, 33, volumes_only=(1,))
    _assert_same_walk(got, want)
    addr = (hi.astype(object) << 64) | lo.astype(object)
    for lev, g, _o, w, co in segments[1:]:
        for k in range(w):
            sel = gmap[g][dims] == k
            by: dict = {}
            for a, v in zip(addr[sel], vol[sel], strict=True):
                by[a] = by.get(a, 0) + int(v)
            best = sorted(by.items(), key=lambda av: (-av[1], av[0]))[:k_top]
            if lev == 1:
                assert [int(v) for v in got[4][co + k] if v] == [v for _a, v in best if v]
                assert (got[5][co + k] == -1).all()
            else:
                assert [(addr[r], int(v)) for r, v in zip(got[5][co + k], got[4][co + k],
                        strict=True) if r >= 0] == best  # fmt: skip


def _walk_oracle(hi, lo, bucket, dims, v6, vol, asn, pidx, gmap, segments, k_top, asn_range):
    """The walk's answers, key by key, the obvious way: per key, each address's total volume."""
    addr = [(int(h) << 64) | int(lw) for h, lw in zip(hi, lo, strict=True)]
    want = {}
    for lev, g, off, w, co in segments:
        per_key: dict[int, dict[int, int]] = {}
        six: dict[int, set[int]] = {}
        first: dict[int, int] = {}
        for i in range(len(addr)):
            key = int(pidx[lev][bucket[i]]) * w + int(gmap[g][dims[i]])
            per_key.setdefault(key, {})
            per_key[key][addr[i]] = per_key[key].get(addr[i], 0) + int(vol[i])
            first.setdefault(addr[i], i)
            if v6[i]:
                six.setdefault(key, set()).add(addr[i])
        for key, by_addr in per_key.items():
            top = sorted(by_addr.items(), key=lambda av: (-av[1], av[0]))[:k_top]
            asns: dict[int, int] = {}
            for a, v in by_addr.items():
                asns[int(asn[first[a]])] = asns.get(int(asn[first[a]]), 0) + v
            want[(off + key, co + key if co >= 0 else -1)] = (
                len(by_addr),
                len(six.get(key, ())),
                sum(v * v for v in by_addr.values()),
                top,
                asns if co >= 0 and asn_range[0] <= co + key < asn_range[1] else None,
            )
    return want


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_walk_matches_a_python_oracle(seed: int) -> None:
    """Counts, IPv6 counts, sums of squared per-address volumes, top lists and (key, ASN)
    volumes of the walk equal a per-key Python computation: on rows mostly alone in their
    (address, period) (the walk sums those per (period, dimensions) before spreading them
    over the grouping sets) mixed with addresses seen in several cells of a period, exact
    repeats, equal volumes (ties broken by address), volumes near 2^64 (squares past 2^64),
    and an ASN range that cuts a segment in two. The same with each address's first row and
    ASN handed over (``addr``, as the pipeline calls it) instead of an ASN per row."""
    from flowatlas.kernels.distinct import walk

    rng = np.random.default_rng(100 + seed)
    n = 3000
    n_addr = 400
    pool_hi = np.where(rng.random(n_addr) < 0.3, rng.integers(1, 2**63, n_addr), 0).astype(
        np.uint64
    )
    pool_lo = rng.integers(0, 2**63, n_addr).astype(np.uint64)
    pick = rng.integers(0, n_addr, n)
    hi, lo = pool_hi[pick], pool_lo[pick]
    n_b, n_d = 72, 6  # three days of hours
    bucket = rng.integers(0, n_b, n)
    dims = rng.integers(0, n_d, n)
    lone = rng.random(n_addr) < 0.7  # most addresses: one cell per day
    day_cell = rng.integers(0, n_d, (n_addr, 3))
    keep = lone[pick]
    dims[keep] = day_cell[pick[keep], bucket[keep] // 24]
    vol = rng.integers(1, 1 << 20, n).astype(np.uint64)
    vol[rng.random(n) < 0.3] = 777  # ties
    vol[rng.random(n) < 0.02] = 0  # in a top list of addresses, not in one of volumes alone
    big = rng.random(n) < 0.02
    vol[big] = np.uint64(2**44) + rng.integers(0, 2**20, int(big.sum())).astype(np.uint64)
    rep = rng.random(n) < 0.05  # exact repeats of earlier rows
    src = rng.integers(0, n, n)
    for col in (hi, lo, bucket, dims):
        col[rep] = col[src[rep]]
    v6 = hi != 0
    asn = (pick % 11).astype(np.uint32)
    asn[rep] = asn[src[rep]]
    hour, dim = np.arange(n_b), np.arange(n_d)
    pidx = np.stack([hour, hour // 24, hour // 48, np.zeros(n_b, np.int64)])  # hour, day...
    gmap = np.stack([dim, dim % 3, dim // 3, np.zeros(n_d, np.int64)])
    widths = (n_d, 3, 2, 1)
    periods = pidx.max(axis=1) + 1
    segments = [(0, 0, 0, n_d, -1)]
    off = n_b * n_d
    coff = 0
    for lev in range(1, 4):
        for g, w in enumerate(widths):
            segments.append((lev, g, off, w, coff if lev != 3 or g != 2 else -1))
            off += int(periods[lev]) * w
            if lev != 3 or g != 2:
                coff += int(periods[lev]) * w
    # an ASN range from the middle of the day level's grouping 1 into its grouping 2
    asn_from = int(periods[1]) * n_d + 2
    asn_to = int(periods[1]) * (n_d + 3) + 3
    k_top = 4
    got = walk(hi, lo, bucket, dims, v6, vol, asn, pidx, gmap, segments, off, coff, k_top,
               asn_from, asn_to)  # fmt: skip
    counts, counts6, sq_hi, sq_lo, top_v, top_r, a_key, a_asn, a_vol = got
    # the pipeline's call: each address's first row and ASN handed over, no ASN per row
    row_id, n_ids, first = distinct.ip_ids_first(hi, lo)
    by_addr = walk(hi, lo, bucket, dims, v6, vol, None, pidx, gmap, segments, off, coff, k_top,
                   asn_from, asn_to, (row_id, n_ids), addr=(first, asn[first]))  # fmt: skip
    for a, b in zip(got, by_addr, strict=True):
        np.testing.assert_array_equal(a, b)
    # and each address's IPv6 flag handed over too, no flag per row
    flags = (first, asn[first], v6[first])
    by_flag = walk(hi, lo, bucket, dims, None, vol, None, pidx, gmap, segments, off, coff,
                   k_top, asn_from, asn_to, (row_id, n_ids), addr=flags)  # fmt: skip
    for a, b in zip(got, by_flag, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        walk(hi, lo, bucket, dims, v6, vol, None, pidx, gmap, segments, off, coff, k_top, 0)
    with pytest.raises(ValueError):
        walk(hi, lo, bucket, dims, None, vol, asn, pidx, gmap, segments, off, coff, k_top, 0)
    want = _walk_oracle(hi, lo, bucket, dims, v6, vol, asn, pidx, gmap, segments, k_top,
                        (asn_from, asn_to))  # fmt: skip
    addr = (hi.astype(object) << 64) | lo.astype(object)
    got_asn: dict[tuple[int, int], int] = {}
    for k, a, v in zip(a_key, a_asn, a_vol, strict=True):
        got_asn[(int(k), int(a))] = got_asn.get((int(k), int(a)), 0) + int(v)
    seen = np.zeros(off, bool)
    for (k, ck), (n_addr_k, n6, sq, top, asns) in want.items():
        seen[k] = True
        assert counts[k] == n_addr_k and counts6[k] == n6
        if ck < 0:
            continue
        assert (int(sq_hi[ck]) << 64) | int(sq_lo[ck]) == sq
        rows = [r for r in top_r[ck] if r >= 0]
        assert [(addr[r], int(v)) for r, v in zip(rows, top_v[ck], strict=False)] == top
        if asns is not None:
            assert {a: v for (kk, a), v in got_asn.items() if kk == ck} == asns
    assert not counts[~seen].any()
    assert all(asn_from <= k < asn_to for k, _ in got_asn)

    # top lists of volumes alone (volumes_only) on the day level, and on the day and the
    # two-day level (their fine keys' records reused): those levels' lists are their k_top
    # largest volumes (an address of volume 0 left out), no addresses; every other answer
    # (counts, squares, (key, ASN) volumes, the other levels' lists) unchanged
    for levels in ((1,), (1, 2)):
        vo = walk(hi, lo, bucket, dims, v6, vol, asn, pidx, gmap, segments, off, coff, k_top,
                  asn_from, asn_to, volumes_only=levels)  # fmt: skip
        for i in (0, 1, 2, 3, 6, 7, 8):
            np.testing.assert_array_equal(vo[i], got[i])
        alone = {co + j for lev, _g, _o, w, co in segments if lev in levels and co >= 0
                 for j in range(int(periods[lev]) * w)}  # fmt: skip
        for (_k, ck), (*_c, top, _asns) in want.items():
            if ck < 0:
                continue
            if ck in alone:
                assert (vo[5][ck] == -1).all()
                vols = [int(v) for v in vo[4][ck]]
                assert vols == ([v for _a, v in top if v > 0] + [0] * k_top)[:k_top]
            else:
                np.testing.assert_array_equal(vo[4][ck], top_v[ck])
                np.testing.assert_array_equal(vo[5][ck], top_r[ck])


def test_sorted_positions_equal_searchsorted() -> None:
    """The combiner's key lookup (a galloping merge) against np.searchsorted: dense and
    sparse subsets, repeats, the first and last keys, no keys, keys out of order (the
    binary-search path); a missing key raises KeyError. And its fold, add_rows_at, against
    np.add.at with repeated rows."""
    from flowatlas.kernels.accumulate import add_rows_at, sorted_positions

    rng = np.random.default_rng(31)
    universe = np.unique(rng.integers(-(2**40), 2**40, 200_000))
    cases = [
        universe[np.sort(rng.choice(universe.size, 150_000, replace=False))],
        universe[np.sort(rng.choice(universe.size, 30, replace=False))],
        np.sort(rng.choice(universe, 50_000)),
        universe[[0, universe.size - 1]],
        universe[:0],
        rng.choice(universe, 1000, replace=False),
    ]
    for keys in cases:
        np.testing.assert_array_equal(
            sorted_positions(universe, keys), np.searchsorted(universe, keys)
        )
    for missing in ([universe[0] - 1], [universe[-1] + 1], [universe[3], universe[3] + 1]):
        if missing[-1] in universe:
            continue
        with pytest.raises(KeyError):
            sorted_positions(universe, np.array(missing, np.int64))
    with pytest.raises(KeyError):
        sorted_positions(universe, np.array([universe[5] + 1, universe[2]], np.int64))

    acc = rng.integers(0, 2**62, (100, 2)).astype(np.uint64)
    want = acc.copy()
    idx = rng.integers(0, 100, 5000)
    vals = rng.integers(0, 2**62, (5000, 2)).astype(np.uint64)
    np.add.at(want, idx, vals)
    add_rows_at(acc, idx, vals)
    np.testing.assert_array_equal(acc, want)  # wraps alike
    with pytest.raises(IndexError):
        add_rows_at(acc, np.array([100]), vals[:1])


def test_run_starts_equal_a_loop() -> None:
    """``run_starts`` against a Python loop over rows, on one and two columns with long and
    one-row runs, equal neighbours in one column only, and no rows."""
    from flowatlas.kernels.accumulate import run_starts

    rng = np.random.default_rng(5)
    for n in (0, 1, 2, 1000):
        a = np.sort(rng.integers(0, 8, n))
        b = rng.integers(0, 2, n)
        for cols in ((a,), (a, b), (b,)):
            rows = list(zip(*(c.tolist() for c in cols), strict=True))
            want = [i for i in range(n) if i == 0 or rows[i] != rows[i - 1]]
            got = run_starts(*cols)
            assert got.dtype == np.int64 and got.tolist() == want


def test_asn_order_is_the_stable_argsort() -> None:
    """The walk's address order (ASN, then id) from one packed sort equals NumPy's stable
    argsort: many ties, ASNs at both ends of 32 bits, no addresses, and values outside 32
    bits (the fallback)."""
    from flowatlas.kernels.distinct import _asn_order

    rng = np.random.default_rng(3)
    cases = [
        rng.integers(0, 5, 1000),
        rng.integers(0, 1 << 32, 1000),
        np.array([(1 << 32) - 1, 0, (1 << 32) - 1, 0, 7]),
        np.zeros(300, np.int64),
        np.empty(0, np.int64),
        np.array([5, -1, 5, 1 << 40, 0]),
    ]
    for asn in cases:
        asn = asn.astype(np.int64)
        got = _asn_order(asn)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, np.argsort(asn, kind="stable"))


@pytest.mark.parametrize("shift", [0, 1, 3, 8, 31])
def test_scatter_by_asn_matches_a_stable_sort(shift: int) -> None:
    """The walk's rows grouped by address in ASN order, first by their rank's bits above
    the low ``shift`` ones, then by rank: equal to a stable argsort of each row's ASN rank,
    with each address's ASN, first row and IPv6 flag, on random rows, one address holding
    every row but one, addresses of one row each, and groups left empty by the ranks."""
    from flowatlas.kernels.distinct import _asn_order, _scatter_by_asn

    rng = np.random.default_rng(shift)
    cases = [rng.integers(0, 700, 20_000), np.r_[np.zeros(5000, np.int64), 1],
             rng.permutation(3000), np.zeros(1, np.int64)]  # fmt: skip
    for raw in cases:
        _, ids = np.unique(raw, return_inverse=True)  # dense ids, every one with rows
        ids = ids.astype(np.int64)
        n, n_ids = ids.size, int(ids.max()) + 1
        first = np.array([np.flatnonzero(ids == k)[0] for k in range(n_ids)], np.int64)
        id_asn = rng.integers(0, 4, n_ids).astype(np.int64)
        id_v6 = rng.integers(0, 2, n_ids).astype(bool)
        bucket = rng.integers(0, 1 << 30, n)
        dims = rng.integers(0, 300, n)
        vol = rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2)
        by_asn = _asn_order(id_asn)
        got = _scatter_by_asn(ids, first, id_asn, id_v6, by_asn, bucket, dims, vol, shift)
        kk_asn, kk_rep, kk_six, rstart, b_g, d_g, v_g = got
        rank = np.empty(n_ids, np.int64)
        rank[by_asn] = np.arange(n_ids)
        order = np.argsort(rank[ids], kind="stable")
        np.testing.assert_array_equal(kk_asn, id_asn[by_asn])
        np.testing.assert_array_equal(kk_rep, first[by_asn])
        np.testing.assert_array_equal(kk_six, id_v6[by_asn])
        np.testing.assert_array_equal(rstart, np.r_[0, np.cumsum(np.bincount(rank[ids]))])
        assert b_g.dtype == d_g.dtype == np.int32 and v_g.dtype == np.uint64
        np.testing.assert_array_equal(b_g, bucket[order])
        np.testing.assert_array_equal(d_g, dims[order])
        np.testing.assert_array_equal(v_g, vol[order])


@pytest.mark.parametrize("dense", [True, False])
def test_cell_ids_match_a_sort(dense: bool, monkeypatch) -> None:
    """Each row's cell numbered in ascending key order, its dense dimension index and the
    distinct cells as (bucket, dimension index): against NumPy's unique, through the dense
    table and through the fallback for wide spans (the table's limit set to 0 here), on
    random rows, one row, rows of one cell, buckets far apart, no rows, and a dimension
    code the table lacks."""
    from flowatlas.kernels import distinct

    if not dense:
        monkeypatch.setattr(distinct, "CELL_IDS_DENSE_MAX", 0)
    rng = np.random.default_rng(11)
    index = np.full(1 << 15, -1, np.int64)
    codes = np.sort(rng.choice(1 << 15, 40, replace=False))
    index[codes] = np.arange(codes.size)
    b0 = 480_000
    cases = [
        (b0 + rng.integers(0, 300, 5000), rng.choice(codes, 5000)),
        (np.array([b0]), codes[-1:]),
        (np.full(100, b0 + 7), np.full(100, codes[3])),
        (np.array([b0, b0 + 3, b0 + 3, b0]), codes[[39, 0, 39, 0]]),
    ]
    if not dense:  # buckets far apart: over the table's limit whatever it is
        cases.append((np.array([1, 1 << 40, 1, 77]), codes[[5, 5, 6, 6]]))
    for bucket, code in cases:
        cell = (bucket.astype(np.int64) << 15) | code
        cid, dims, c_bucket, c_dim = distinct.cell_ids(cell, index, 15, codes.size)
        uniq, inv = np.unique(cell, return_inverse=True)
        np.testing.assert_array_equal(cid, inv.reshape(-1))
        np.testing.assert_array_equal(dims, index[code])
        np.testing.assert_array_equal(c_bucket, uniq >> 15)
        np.testing.assert_array_equal(c_dim, index[uniq & ((1 << 15) - 1)])
        assert cid.dtype == dims.dtype == c_bucket.dtype == c_dim.dtype == np.int64
    got = distinct.cell_ids(np.empty(0, np.int64), index, 15, codes.size)
    assert all(a.size == 0 for a in got)
    missing = int(np.setdiff1d(np.arange(1 << 15), codes)[0])
    with pytest.raises(ValueError, match="dim_index"):
        distinct.cell_ids(np.array([(b0 << 15) | missing]), index, 15, codes.size)


def _group_case(rng, kind: str):
    """Rows and a group label per address for walk's ``groups``: (hi, lo, bucket, dims,
    vol, row ids, n_ids, first rows, label per address, ASN per address)."""
    n = {"one": 50, "empty": 0}.get(kind, 3000)
    n_addr = {"one": 1, "distinct": n}.get(kind, 300)
    pool_hi = np.where(rng.random(n_addr) < 0.6, rng.integers(1, 2**63, n_addr), 0)
    pool_hi = pool_hi.astype(np.uint64)
    pool_lo = np.where(pool_hi == 0, 0xFFFF_0000_0000 | rng.integers(0, 2**32, n_addr),
                       rng.integers(0, 2**63, n_addr)).astype(np.uint64)  # fmt: skip
    if n_addr > 3:  # pairs one bit apart (in lo, and in hi's top bit)
        pool_lo[1::3] = pool_lo[0:-1:3] ^ np.uint64(1)
        pool_hi[1::3] = pool_hi[0:-1:3]
        pool_hi[2::3] = pool_hi[1:-1:3] ^ np.uint64(1 << 63)
        pool_lo[2::3] = pool_lo[1:-1:3]
    pick = rng.permutation(n) % n_addr if kind == "distinct" else rng.integers(0, n_addr, n)
    hi, lo = pool_hi[pick], pool_lo[pick]
    bucket = rng.integers(0, 72, n)  # three days of hours
    dims = rng.integers(0, 6, n)
    lone = rng.random(n) < 0.5  # many rows alone in their (address, day): fine keys
    dims[lone] = pick[lone] % 6
    vol = rng.integers(1, 1 << 20, n).astype(np.uint64)
    row_id, n_ids, first = distinct.ip_ids_first(hi, lo)
    n_groups = {"one": 1, "distinct": 40}.get(kind, 7)
    label = rng.integers(0, n_groups, n_ids)
    label[rng.random(n_ids) < 0.3] = -1  # ungrouped addresses (IPv4, lone prefixes)
    asn = rng.integers(0, 5, n_ids)
    # one ASN per group (its addresses' networks), groups and ASNs interleaved
    grouped = label >= 0
    asn[grouped] = rng.integers(0, 5, n_groups)[label[grouped]]
    return hi, lo, bucket, dims, vol, row_id, n_ids, first, label, asn


@pytest.mark.parametrize("kind", ["random", "one", "distinct", "empty"])
@pytest.mark.parametrize("seed", [0, 1])
def test_walk_groups_count_distinct_groups_per_key(kind: str, seed: int) -> None:
    """walk's ``groups``: the distinct groups per key from the walk's own levels equal a
    Python count of the grouped addresses' labels per key, and stamp_counts given the labels
    as ids; the walk's other answers are those without groups (the order of a group's
    addresses within their ASN changes, nothing else). A group whose addresses have
    different ASNs cannot be one run: None. Levels copied from the one below (one month =
    one quarter = the whole range) are counted too."""
    from flowatlas.kernels.distinct import stamp_counts, walk

    rng = np.random.default_rng([seed, len(kind)])
    hi, lo, bucket, dims, vol, row_id, n_ids, first, label, asn = _group_case(rng, kind)
    v6 = np.zeros(n_ids, bool)
    v6[rng.random(n_ids) < 0.5] = True
    hour, dim = np.arange(72), np.arange(6)
    pidx = np.stack([hour, hour // 24, np.zeros(72, np.int64), np.zeros(72, np.int64)])
    gmap = np.stack([dim, dim % 3, np.zeros(6, np.int64)])
    widths = (6, 3, 1)
    periods = pidx.max(axis=1) + 1
    segments = [(0, 0, 0, 6, -1)]
    off, coff = 72 * 6, 0
    for lev in range(1, 4):
        for g, w in enumerate(widths):
            segments.append((lev, g, off, w, coff))
            off += int(periods[lev]) * w
            coff += int(periods[lev]) * w
    args = (hi, lo, bucket, dims, None, vol, None, pidx, gmap, segments, off, coff, 3, 0)
    addr = (first, asn, v6)
    plain = walk(*args, ids=(row_id, n_ids), addr=addr)
    got = walk(*args, ids=(row_id, n_ids), addr=addr, groups=label)
    _assert_same_walk(got, plain)
    g_counts = got[-1]
    row_label = label[row_id]
    sel = np.flatnonzero(row_label >= 0)
    want = stamp_counts(None, None, bucket[sel], dims[sel], pidx, gmap,
                        [s[:4] for s in segments], off, ids=(row_label[sel], 40))[0]  # fmt: skip
    np.testing.assert_array_equal(g_counts, want)
    for lev, g, o, w, _co in segments:
        period = pidx[lev][bucket]
        for p in range(int(periods[lev])):
            for k in range(w):
                at = (period == p) & (gmap[g][dims] == k) & (row_label >= 0)
                assert g_counts[o + p * w + k] == len(set(row_label[at].tolist()))
    # a group split between two networks
    if (label >= 0).sum() > 1 and np.unique(label[label >= 0]).size < (label >= 0).sum():
        split = asn.copy()
        g0 = label[np.flatnonzero(label >= 0)[0]]
        members = np.flatnonzero(label == g0)
        if members.size > 1:
            split[members[-1]] = split[members[0]] + 1
            got = walk(*args, ids=(row_id, n_ids), addr=(first, split, v6), groups=label)
            assert got[-1] is None
    per_row = (v6[row_id], vol, asn[row_id].astype(np.uint32))
    with pytest.raises(ValueError, match="groups need the ids"):
        walk(hi, lo, bucket, dims, *per_row, *args[7:], groups=label)
