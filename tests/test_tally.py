"""kernels/tally.py: per-link and per-geography sums against pandas, on adversarial keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowatlas.kernels.accumulate import CounterOverflow
from flowatlas.kernels.orient import DIM_BITS
from flowatlas.kernels.tally import (
    GEO_BITS,
    LINK_BITS,
    MAX_LINKS,
    US_PER_DAY,
    geo_key_parts,
    link_key_parts,
    tally,
)

HOUR_US = 3_600_000_000


def _records(rng, n, bucket_us):
    # buckets before and after 1970, runs of one bucket and scattered ones
    bucket = rng.integers(-5000, 5000, n).astype(np.int64) * (HOUR_US // bucket_us)
    bucket[: n // 2] = np.repeat(rng.integers(-50, 50, n // 100), 50)[: n // 2]
    dims = rng.integers(0, 1 << DIM_BITS, n).astype(np.int64)
    cell = (bucket << DIM_BITS) | dims
    link = rng.integers(-1, 6, n).astype(np.int16)
    link[::7] = MAX_LINKS - 1  # the highest index there is
    geo = rng.integers(0, 40, n).astype(np.int32)
    geo[::11] = (1 << GEO_BITS) - 1
    vol = rng.integers(0, 2**50, n, dtype=np.uint64)
    pk = rng.integers(0, 2**30, n, dtype=np.uint64)
    return cell, link, geo, vol, pk


@pytest.mark.parametrize("bucket_us", [HOUR_US, 300_000_000, 2 * US_PER_DAY])
def test_tally_equals_pandas(bucket_us) -> None:
    rng = np.random.default_rng(bucket_us % 97)
    n = 60_000
    cell, link, geo, vol, pk = _records(rng, n, bucket_us)
    links, geos = tally(cell, vol, pk, bucket_us, link, geo)
    df = pd.DataFrame({"cell": cell, "link": link, "geo": geo, "vol": vol, "pk": pk})
    df["vol"] = df["vol"].map(int)
    df["pk"] = df["pk"].map(int)

    on = df[df["link"] >= 0]
    want = on.groupby(["cell", "link"]).agg(v=("vol", "sum"), p=("pk", "sum"), f=("vol", "size"))
    c, lk = link_key_parts(links[0])
    got = pd.DataFrame({"cell": c, "link": lk, "v": links[1][:, 0].astype(object),
                        "p": links[1][:, 1].astype(object), "f": links[1][:, 2]})  # fmt: skip
    assert (np.diff(links[0]) > 0).all()  # sorted, distinct
    assert [tuple(map(int, r)) for r in got.itertuples(index=False)] == [
        (int(a), int(b), int(v), int(p), int(f)) for (a, b), (v, p, f) in zip(
            want.index, want.itertuples(index=False), strict=True)
    ]  # fmt: skip

    day = np.floor_divide((cell >> DIM_BITS) * bucket_us, US_PER_DAY)  # floor before 1970
    df["day"] = day
    df["dims"] = cell & ((1 << DIM_BITS) - 1)
    want = df.groupby(["day", "dims", "geo"]).agg(
        v=("vol", "sum"), p=("pk", "sum"), f=("vol", "size")
    )
    d, dims, g = geo_key_parts(geos[0])
    assert (np.diff(geos[0]) > 0).all()
    sums = [geos[1][:, i].tolist() for i in range(3)]
    got = list(zip(d.tolist(), dims.tolist(), g.tolist(), *sums, strict=True))
    assert got == [
        (int(a), int(b), int(c_), int(v), int(p), int(f))
        for (a, b, c_), (v, p, f) in zip(want.index, want.itertuples(index=False), strict=True)
    ]
    assert (d < 0).any()


def test_tally_skips_what_is_not_asked() -> None:
    rng = np.random.default_rng(1)
    cell, link, geo, vol, pk = _records(rng, 1000, HOUR_US)
    assert tally(cell, vol, pk, HOUR_US) == (None, None)
    links, geos = tally(cell, vol, pk, HOUR_US, link=link)
    assert geos is None and links[0].size
    links2, _ = tally(cell[::-1], vol[::-1], pk[::-1], HOUR_US, link=link[::-1])
    assert (links[0] == links2[0]).all() and (links[1] == links2[1]).all()  # order-free
    empty = tally(cell[:0], vol[:0], pk[:0], HOUR_US, link[:0], geo[:0])
    assert all(part[0].size == 0 and part[1].shape == (0, 3) for part in empty)
    assert LINK_BITS == 12


def test_tally_overflow_raises() -> None:
    cell = np.zeros(3, np.int64)
    vol = np.array([2**63, 2**63, 1], np.uint64)
    pk = np.ones(3, np.uint64)
    with pytest.raises(CounterOverflow):
        tally(cell, vol, pk, HOUR_US, link=np.zeros(3, np.int16))
    with pytest.raises(CounterOverflow):
        tally(cell, vol, pk, HOUR_US, geo=np.zeros(3, np.int32))
    # records without a link are not summed per link: no overflow there
    links, _ = tally(cell, vol, pk, HOUR_US, link=np.array([0, -1, 0], np.int16))
    assert links[1].tolist() == [[2**63 + 1, 2, 2]]


@pytest.mark.parametrize("near_bits", [1, 3, 12])
def test_tally_near_tables_change_nothing(near_bits) -> None:
    """Records summed through near tables of any size (2 slots: nearly every record moves a
    key to the whole table) give the sums of one whole table, in time order or not."""
    from flowatlas.kernels.tally import _tally

    rng = np.random.default_rng(near_bits)
    cell, link, geo, vol, pk = _records(rng, 20_000, HOUR_US)
    want = tally(cell, vol, pk, HOUR_US, link, geo)
    for order in (
        np.arange(cell.size),
        np.argsort(cell, kind="stable"),
        rng.permutation(cell.size),
    ):
        got = _tally(cell[order], link[order], geo[order], vol[order], pk[order],
                     np.int64(HOUR_US), True, True, near_bits)  # fmt: skip
        assert not got[4]
        for (wk, ws), gk, gs in ((want[0], got[0], got[1]), (want[1], got[2], got[3])):
            assert (wk == gk).all() and (ws == gs).all()


def test_tally_overflow_across_near_and_whole_tables() -> None:
    """A sum that wraps only once a near slot's part reaches the whole table still raises."""
    from flowatlas.kernels.tally import _near_slot, _tally

    for near_bits in (1, 2, 12):
        # two cells whose link keys take the same near slot: they evict each other
        first = _near_slot(0, near_bits)
        other = next(b << DIM_BITS for b in range(1, 10_000)
                     if _near_slot((b << DIM_BITS) << LINK_BITS, near_bits) == first)  # fmt: skip
        for turns, wraps in ((3, False), (4, True)):
            # 2^62 a record for the first key, in turns with the other: its fourth record
            # wraps its sum where the other key evicts it
            cell = np.array([0, other] * turns, np.int64)
            n = cell.size
            vol = np.where(cell == 0, 2**62, 1).astype(np.uint64)
            *_, overflow = _tally(cell, np.zeros(n, np.int16), np.zeros(n, np.int32), vol,
                                  np.ones(n, np.uint64), np.int64(HOUR_US), True, False,
                                  near_bits)  # fmt: skip
            assert overflow == wraps


def test_tally_tables_kept_for_the_next_call_only_while_small(monkeypatch) -> None:
    """The emptied tables stay with the thread for its next call unless one grew past
    KEEP_SLOTS; either way each call's sums are its own records' alone."""
    from flowatlas.kernels import tally as tally_module

    rng = np.random.default_rng(7)
    big = _records(rng, 30_000, HOUR_US)
    small = _records(rng, 500, HOUR_US)
    want = [tally(*(r[i] for i in (0, 3, 4)), HOUR_US, r[1], r[2]) for r in (big, small)]
    monkeypatch.setattr(tally_module, "KEEP_SLOTS", 4096)
    for r, w, kept in ((big, want[0], False), (small, want[1], True), (big, want[0], False)):
        got = tally(r[0], r[3], r[4], HOUR_US, r[1], r[2])
        assert (getattr(tally_module._SCRATCH, "tables", None) is not None) == kept
        for (wk, ws), (gk, gs) in zip(w, got, strict=True):
            assert (wk == gk).all() and (ws == gs).all()


def test_tally_whole_tables_stay_half_empty_after_the_near_tables_drain() -> None:
    """A near table holding more keys than the whole table has room for (thousands of keys
    of one bucket, each once) is drained into a grown whole table: every table the call
    keeps is at most half full (linear probing needs the room), and each key's sums are its
    record's."""
    from flowatlas.kernels import tally as tally_module

    n = 4000
    dims = np.arange(n, dtype=np.int64)  # one bucket: every record a new key
    cell, link, geo = dims, np.zeros(n, np.int16), dims.astype(np.int32) % (1 << GEO_BITS)
    vol, pk = np.arange(1, n + 1, dtype=np.uint64), np.ones(n, np.uint64)
    got = tally(cell, vol, pk, HOUR_US, link, geo)
    lt, gt, l_near, g_near = tally_module._SCRATCH.tables
    assert not l_near[:, 3].any() and not g_near[:, 3].any()  # drained
    for (keys, sums), table in zip(got, (lt, gt), strict=True):
        assert keys.size == n and 2 * keys.size <= table.shape[0]
        # keys ascend with the record's cell: one record each
        assert (sums[:, 0] == vol).all() and (sums[:, 1] == 1).all() and (sums[:, 2] == 1).all()


def _filled_table(keys, slots, rng):
    """A whole table of ``slots`` slots holding ``keys`` (each placed where ``_find`` puts
    it, so probe chains run as they do in a build) with random sums; and a dict oracle."""
    from flowatlas.kernels.tally import _add

    table = np.zeros((slots, 4), np.uint64)
    want = {}
    for k in keys:
        v, p, f = (int(x) for x in rng.integers(1, 2**62, 3))
        _add(table, np.int64(k), np.uint64(v), np.uint64(p), np.uint64(f))
        want[int(k)] = (v, p, f)
    return table, want


@pytest.mark.parametrize("case", ["empty", "one", "random", "negative", "one_chain", "wrap"])
def test_taken_entries_gives_sorted_keys_and_their_sums_and_empties_the_table(case) -> None:
    """``_taken_entries`` against a dict of what went in: every key once, ascending as
    int64 (negative keys first), its own sums, and the table all zeros afterwards (the next
    task starts from it). Adversarial tables: keys all hashing to one slot (one long probe
    chain, emptied slot by slot: emptying a slot before the keys past it are found would lose
    them), chains that wrap past the table's last slot, a table half full."""
    from flowatlas.kernels.accumulate import _M1, _M2
    from flowatlas.kernels.tally import _taken_entries

    rng = np.random.default_rng(len(case))
    slots = 1024
    if case == "empty":
        keys = np.empty(0, np.int64)
    elif case == "one":
        keys = np.array([-(2**62)], np.int64)
    elif case == "random":
        keys = np.unique(rng.integers(-(2**62), 2**62, slots // 2))
    elif case == "negative":
        keys = -np.arange(1, slots // 2 + 1, dtype=np.int64) * 4099
    else:  # keys whose hash lands on one slot: the last one (wrap) or the first
        target = slots - 2 if case == "wrap" else 0
        cand = rng.integers(-(2**40), 2**40, 400_000)
        x = cand.view(np.uint64)  # mix64, as _find hashes a key (arrays wrap silently)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        x ^= x >> np.uint64(31)
        keys = np.unique(cand[(x & np.uint64(slots - 1)) == target])[:300]
        assert keys.size > 100
    table, want = _filled_table(rng.permutation(keys), slots, rng)
    got_keys, got_sums = _taken_entries(table)
    assert got_keys.dtype == np.int64 and got_sums.shape == (keys.size, 3)
    assert got_keys.tolist() == sorted(want)
    assert [tuple(int(x) for x in row) for row in got_sums] == [want[k] for k in sorted(want)]
    assert not table.any()
