"""One reducer (``pipeline.reduce_partition``) against a Python oracle.

The reducer walks the partition's distinct cells (not every bucket x dimensions pair) and
counts IPv6 prefixes shared by several addresses in a second walk; the oracle counts each
key's addresses and prefixes with sets, sums each address's volume per key for the squares
and the top lists, on random and adversarial partitions: IPv6 prefixes shared within a
cell, across cells and not at all, a single row, no rows.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest

from flowatlas.engine.pipeline import (
    DIM_BITS,
    GROUP_MASKS,
    ROLLUP_CHAIN,
    TOP_K,
    TOP_LIST_ROLLUPS,
    Piece,
    _tables,
    period_codes_us,
    reduce_partition,
    rollup_key,
    sketch_keys,
)
from flowatlas.kernels import hll
from flowatlas.kernels.distinct import v6_prefix_of

V4_TAG = np.uint64(0xFFFF << 32)


@pytest.fixture(scope="module")
def plan(small_plan):
    return small_plan


def _rows(plan, rng, n: int, kind: str) -> Piece:
    """``n`` distinct (cell, address) rows over 100 days of hours (three months, two
    quarters): IPv4, IPv6 in a few /64s (shared), IPv6 each in its own /64, or a mix."""
    codes = _tables(plan).code
    b0 = np.datetime64("2025-08-01", "us").astype(np.int64) // plan.bucket_us
    n_b = int(100 * 86_400_000_000 // plan.bucket_us)
    # few buckets and dimensions: addresses meet in cells, periods and grouped keys
    buckets = b0 + rng.choice(n_b, size=max(1, n // 8 + 1), replace=False)
    dims = rng.choice(codes, size=min(codes.size, 6), replace=False)
    cell = (rng.choice(buckets, n) << DIM_BITS) | rng.choice(dims, n)
    n_addr = max(1, n // 3)
    v4_lo = V4_TAG | rng.integers(0, 1 << 32, n_addr, dtype=np.uint64)
    shared_hi = rng.integers(1, 1 << 63, 3, dtype=np.uint64)[rng.integers(0, 3, n_addr)]
    lone_hi = rng.integers(1, 1 << 63, n_addr, dtype=np.uint64)
    v6_lo = rng.integers(0, 1 << 63, n_addr, dtype=np.uint64)
    z = np.zeros(n_addr, np.uint64)
    pools = {
        "v4": (z, v4_lo),
        "shared": (shared_hi, v6_lo),
        "lone": (lone_hi, v6_lo),
    }
    if kind == "mix":
        pick = rng.integers(0, 3, n_addr)
        hi = np.choose(pick, [z, shared_hi, lone_hi])
        lo = np.choose(pick, [v4_lo, v6_lo, v6_lo])
    else:
        hi, lo = pools[kind]
    a = rng.integers(0, n_addr, n)
    hi, lo = hi[a], lo[a]
    _, keep = np.unique(np.stack([cell, hi.view(np.int64), lo.view(np.int64)]), axis=1,
                        return_index=True)  # fmt: skip
    keep = np.sort(keep)
    vol = rng.integers(1, 50, n, dtype=np.uint64) * rng.choice([1, 1_000_000], n).astype(np.uint64)
    vol[rng.random(n) < 0.03] = 0  # an address of volume 0: in an address top list, no volume's
    return Piece(cell[keep].astype(np.int64), hi[keep], lo[keep], vol[keep])


def _oracle(rows: Piece, plan):
    """Per cell: (addresses, IPv4 addresses + IPv6 prefixes); per rollup key: the same, the
    sum of squared per-address volumes and the top list (volume down, address up)."""
    p_hi, p_lo = v6_prefix_of(rows.hi, rows.lo, plan.v6_prefix)
    cells: dict[int, tuple[set, set]] = defaultdict(lambda: (set(), set()))
    keys: dict = defaultdict(lambda: (set(), set(), defaultdict(int)))
    for i in range(rows.cell.size):
        addr = (int(rows.hi[i]), int(rows.lo[i]))
        pref = (int(p_hi[i]), int(p_lo[i]))
        c = int(rows.cell[i])
        cells[c][0].add(addr)
        cells[c][1].add(pref)
        start = np.array([(c >> DIM_BITS) * plan.bucket_us], np.int64)
        for r in ROLLUP_CHAIN:
            if r not in plan.rollups:
                continue
            code = period_codes_us(start, r)
            for g, mask in enumerate(GROUP_MASKS):
                k = int(rollup_key(code, g, np.array([c & mask]))[0])
                keys[r, k][0].add(addr)
                keys[r, k][1].add(pref)
                keys[r, k][2][addr] += int(rows.vol[i])
    return cells, keys


def _check(rows: Piece, pieces: list[Piece], plan) -> None:
    got = reduce_partition(pieces, plan)
    cells, keys = _oracle(rows, plan)
    assert got.cell_keys.tolist() == sorted(cells)
    assert [tuple(c) for c in got.cell_counts.tolist()] == [
        (len(a), len(p)) for a, p in (cells[k] for k in sorted(cells))
    ]
    for r in (r for r in ROLLUP_CHAIN if r in plan.rollups):
        want = sorted(k for rr, k in keys if rr == r)
        assert got.rollup_keys[r].tolist() == want
        counts = got.rollup_counts[r].tolist()
        sq_hi, sq_lo = got.rollup_sq[r]
        tk, tv, th, tl = got.top_ips[r]
        tops = defaultdict(list)
        for k, v, h, lw in zip(tk.tolist(), tv.tolist(), th.tolist(), tl.tolist(), strict=True):
            tops[k].append((v, (h, lw)))
        for j, k in enumerate(want):
            addrs, prefs, vols = keys[r, k]
            assert tuple(counts[j]) == (len(addrs), len(prefs)), (r, k)
            assert (int(sq_hi[j]) << 64) | int(sq_lo[j]) == sum(v * v for v in vols.values())
            best = sorted(((v, a) for a, v in vols.items()), key=lambda t: (-t[0], t[1]))
            if r not in TOP_LIST_ROLLUPS:  # the top volumes alone (read for top_bytes)
                best = [(v, (0, 0)) for v, _a in best if v > 0]
            assert tops[k] == best[:TOP_K], (r, k)
    if plan.sketch_p:
        _check_sketch(rows, got.sketch, plan)


def _check_sketch(rows: Piece, sketch, plan) -> None:
    """The sketches' long form: per sketch key (the row's day and dimensions, or its
    cell), each register's largest entry (register << RANK_BITS | rank) over the key's
    addresses, keys ascending, then registers."""
    idx, rank = hll.slots(rows.hi, rows.lo, plan.sketch_p)
    best: dict[tuple[int, int], int] = {}
    for key, i, r in zip(sketch_keys(rows.cell, plan).tolist(), idx.tolist(), rank.tolist(),
                         strict=True):  # fmt: skip
        e = (i << hll.RANK_BITS) | r
        best[key, i] = max(best.get((key, i), 0), e)
    want = sorted(best.items())
    keys, entries = sketch
    assert list(zip(keys.tolist(), entries.tolist(), strict=True)) == [
        (k, e) for (k, _i), e in want
    ]


@pytest.mark.parametrize("kind", ["mix", "v4", "shared", "lone"])
@pytest.mark.parametrize("seed", [0, 1])
def test_reduce_partition_matches_a_python_oracle(plan, kind: str, seed: int) -> None:
    rng = np.random.default_rng([seed, len(kind)])
    rows = _rows(plan, rng, 600, kind)
    # the rows split over three map tasks' pieces, as a reducer receives them
    cut = np.sort(rng.integers(0, rows.cell.size, 2))
    pieces = [
        Piece(*(getattr(rows, f)[a:b] for f in ("cell", "hi", "lo", "vol")))
        for a, b in zip([0, *cut], [*cut, rows.cell.size], strict=True)
    ]
    _check(rows, pieces, plan)


@pytest.mark.parametrize("period", ["day", "bucket"])
@pytest.mark.parametrize("seed", [0, 1])
def test_reduce_partition_sketches_per_day_and_per_cell(plan, period: str, seed: int) -> None:
    """The sketches from the day level's rows (a sketch per day) and from the rows
    themselves (a sketch per cell, finer than any rollup level), against the oracle."""
    rng = np.random.default_rng([seed, 9])
    p = dataclasses.replace(plan, sketch_period=period)
    rows = _rows(p, rng, 900, "mix")
    # repeats of (cell, address) rows (as a reducer receives them from several map tasks)
    again = rng.integers(0, rows.cell.size, 300)
    rows = Piece(*(np.concatenate([getattr(rows, f), getattr(rows, f)[again]])
                   for f in ("cell", "hi", "lo", "vol")))  # fmt: skip
    half = rows.cell.size // 2
    pieces = [Piece(*(getattr(rows, f)[a:b] for f in ("cell", "hi", "lo", "vol")))
              for a, b in ((0, half), (half, rows.cell.size))]  # fmt: skip
    _check(rows, pieces, p)


@pytest.mark.parametrize("kind", ["v4", "shared", "lone"])
def test_reduce_partition_single_row_and_none(plan, kind: str) -> None:
    rng = np.random.default_rng(7)
    one = _rows(plan, rng, 1, kind)
    _check(one, [one], plan)
    empty = Piece.concat([])
    got = reduce_partition([empty], plan)
    assert got.cell_keys.size == 0 and got.cell_counts.shape == (0, 2)
    assert all(k.size == 0 for k in got.rollup_keys.values())
    got = reduce_partition([], plan)
    assert got.cell_keys.size == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_reduce_partition_prefix_split_between_networks(plan, seed: int) -> None:
    """IPv6 prefixes (here /32) whose addresses lie in networks of different ASNs (the
    table's 2403:ef44::/32 and its 2403:ef44:2629::/48, 2406:19b0::/32 and its
    2406:19b0:5b9a::/48): the walk cannot take such a prefix as one run of addresses, so the
    reducer counts the prefixes apart. Against the oracle, with IPv4 addresses, prefixes
    within one network and addresses one bit apart mixed in."""
    p = dataclasses.replace(plan, v6_prefix=32)
    rng = np.random.default_rng([seed, 32])
    tops = np.array([0x2403_EF44_2629_0000, 0x2403_EF44_0001_0000, 0x2406_19B0_5B9A_0000,
                     0x2406_19B0_0007_0000, 0x2400_4A79_3000_0000], np.uint64)  # fmt: skip
    n_addr = 120
    hi = tops[rng.integers(0, tops.size, n_addr)] | rng.integers(0, 1 << 16, n_addr).astype(
        np.uint64
    )
    lo = rng.integers(0, 1 << 63, n_addr).astype(np.uint64)
    lo[1::4] = lo[0:-1:4] ^ np.uint64(1)
    hi[1::4] = hi[0:-1:4]
    v4 = rng.random(n_addr) < 0.2
    hi[v4] = 0
    lo[v4] = V4_TAG | rng.integers(0, 1 << 32, int(v4.sum())).astype(np.uint64)
    base = _rows(p, rng, 700, "v4")
    a = rng.integers(0, n_addr, base.cell.size)
    rows = Piece(base.cell, hi[a], lo[a], base.vol)
    _check(rows, [rows], p)
