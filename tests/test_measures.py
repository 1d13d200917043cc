"""Distinct counts, IPv6 prefix uniqueness and concentration against pandas.

The per-record rows (cell, remote IP, volume) come from the engine's map step, whose
orientation and classification tests/test_build_oracle.py checks independently. Here pandas
and plain Python recompute everything the reduce and combine steps derive from them: distinct
IPs per cell and per rollup key (by /128 and by IPv6 /64), top remote IPs and ASNs, top-k
share and HHI, with Python integers so sums and squares are exact.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flowatlas.classify import load_table
from flowatlas.engine.build import build_cube, resolve_config
from flowatlas.engine.pipeline import COLUMNS, GROUPINGS, TOP_K, orient_and_cell
from flowatlas.engine.plan import make_plan
from flowatlas.io.archive import open_archive, read_fragment
from flowatlas.kernels.orient import unpack_cells
from flowatlas.synth import synthesize
from flowatlas.vocab import DIRECTIONS

DIMS = ["region", "network_type", "direction", "ip_version"]


@pytest.fixture(scope="module", params=["months", "one-month"])
def built(request, tmp_path_factory):
    """A cube over 70 days (three months, two quarters), and one within a single month,
    whose month, quarter and whole-range levels the reducers walk once and copy."""
    root = tmp_path_factory.mktemp("measures")
    if request.param == "months":
        synthesize(root / "a", records=25_000, days=70, start="2025-08-20", seed=21)
    else:
        synthesize(root / "a", records=12_000, days=9, start="2025-10-05", seed=22)
    build_cube(root / "a", root / "c", workers=0, partitions=3)
    return root


@pytest.fixture(scope="module")
def records(built) -> pd.DataFrame:
    """One row per record: dimensions, hour/month, remote address and its /64, volume, ASN."""
    archive = open_archive(built / "a")
    cfg = resolve_config(built / "a", None)
    table = load_table(cfg)
    plan = make_plan(cfg, table)
    parts = [
        orient_and_cell(read_fragment(f, COLUMNS), plan, f.counts)[0] for f in archive.fragments()
    ]
    key = np.concatenate([p.key for p in parts])
    hi = np.concatenate([p.hi for p in parts])
    lo = np.concatenate([p.lo for p in parts])
    vol = np.concatenate([p.vol for p in parts])
    d = unpack_cells(key)
    start = pd.to_datetime(d["bucket"] * plan.bucket_us, unit="us")
    addr = [(int(h) << 64) | int(lw) for h, lw in zip(hi, lo, strict=True)]
    v6 = [(a >> 32) != 0xFFFF for a in addr]
    asn_of = np.append(table.networks.column("asn").to_numpy(), 0)
    return pd.DataFrame(
        {
            "region": np.array(plan.regions, dtype=object)[d["region"]],
            "network_type": np.array(plan.network_types, dtype=object)[d["network_type"]],
            "direction": np.array(DIRECTIONS, dtype=object)[d["direction"]],
            "ip_version": np.where(d["is_v6"] == 1, 6, 4),
            "hour": start,
            "month": start.to_period("M").start_time,
            "addr": addr,  # the 128-bit value, IPv4-mapped
            "prefix": [a >> 64 << 64 if six else a for a, six in zip(addr, v6, strict=True)],
            "vol": [int(v) for v in vol],
            "asn": asn_of[table.lookup(hi, lo)].astype(int),
        }
    )


def text(addr: int) -> str:
    a = ipaddress.IPv6Address(addr)
    return str(a.ipv4_mapped or a)


def expected(records: pd.DataFrame, by: list[str]) -> dict[tuple, dict[str, object]]:
    """Per key: uniques, prefix uniques, bytes, sum of squared per-IP bytes, top-k bytes."""
    out: dict[tuple, dict[str, object]] = {}
    groups = records.groupby(by, sort=False) if by else [((), records)]
    for key, grp in groups:
        key = key if isinstance(key, tuple) else (key,)
        per_ip: dict[int, int] = {}
        for a, v in zip(grp["addr"], grp["vol"], strict=True):
            per_ip[a] = per_ip.get(a, 0) + v
        ranked = sorted(per_ip.items(), key=lambda kv: (-kv[1], kv[0]))
        out[key] = {
            "uniques": len(per_ip),
            "uniques_prefix": grp["prefix"].nunique(),
            "bytes": sum(per_ip.values()),
            "sumsq": sum(v * v for v in per_ip.values()),
            "top": ranked[:TOP_K],
        }
    return out


def got_rows(built, rollup: str, grouping: tuple[str, ...]) -> pd.DataFrame:
    df = pq.read_table(built / "c" / "rollups.parquet").to_pandas()
    name = ",".join(grouping) or "total"
    df = df[(df["rollup"] == rollup) & (df["grouping"] == name)]
    return df.assign(month=df["period_start"].dt.tz_convert(None))


def key_of(row, by: list[str]) -> tuple:
    return tuple(row[c] for c in by)


@pytest.mark.parametrize("grouping", GROUPINGS, ids=lambda g: ",".join(g) or "total")
@pytest.mark.parametrize("rollup", ["all", "month"])
def test_rollup_measures_match_pandas(built, records, rollup, grouping) -> None:
    by = (["month"] if rollup == "month" else []) + list(grouping)
    want = expected(records, by)
    got = got_rows(built, rollup, grouping)
    assert len(got) == len(want)
    for _, row in got.iterrows():
        w = want[key_of(row, by)]
        assert int(row["uniques"]) == w["uniques"]
        assert int(row["uniques_prefix"]) == w["uniques_prefix"]
        assert int(row["bytes"]) == w["bytes"]
        assert int(row["top_bytes"]) == sum(v for _, v in w["top"])
        assert row["hhi"] == pytest.approx(w["sumsq"] / w["bytes"] ** 2, rel=1e-12)


def test_cell_uniques_match_pandas(built, records) -> None:
    cells = pq.read_table(built / "c" / "cells.parquet").to_pandas()
    cells = cells.assign(hour=cells["bucket_start"].dt.tz_convert(None))
    want = records.groupby(["hour", *DIMS]).agg(
        uniques=("addr", "nunique"), uniques_prefix=("prefix", "nunique")
    )
    got = cells.set_index(["hour", *DIMS])[["uniques", "uniques_prefix"]].astype(int)
    got.index = got.index.set_levels(
        [lvl.astype(str) if i in (1, 2, 3) else lvl for i, lvl in enumerate(got.index.levels)]
    )
    want = want.reindex(got.index)
    assert len(got) == len(records.groupby(["hour", *DIMS]))
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


def _top_rows(built, name: str, rollup: str, grouping: str) -> pd.DataFrame:
    df = pq.read_table(built / "c" / name).to_pandas()
    df = df[(df["rollup"] == rollup) & (df["grouping"] == grouping)]
    return df.assign(month=df["period_start"].dt.tz_convert(None))


@pytest.mark.parametrize("grouping", [("region", "network_type"), ("network_type",), ()])
@pytest.mark.parametrize("rollup", ["all", "month"])
def test_top_lists_match_pandas(built, records, rollup, grouping) -> None:
    """Top addresses and top ASNs; the combiner sums every rollup's and grouping set's
    (key, ASN) volumes from the month's full-dimension ones."""
    name = ",".join(grouping) or "total"
    by = (["month"] if rollup == "month" else []) + list(grouping)
    top = _top_rows(built, "top_ips.parquet", rollup, name)
    asns = _top_rows(built, "top_asns.parquet", rollup, name)
    want = expected(records, by)
    for key, w in want.items():
        mine = top
        for col, v in zip(by, key, strict=True):
            mine = mine[mine[col] == v]
        mine = mine.sort_values("rank")
        got = [(row.remote_ip, int(row.bytes)) for row in mine.itertuples()]
        assert got == [(text(a), v) for a, v in w["top"]], key
    groups = records.groupby(by) if by else [((), records)]
    for key, grp in groups:
        key = key if isinstance(key, tuple) else (key,)
        per_asn: dict[int, int] = {}
        for a, v in zip(grp["asn"], grp["vol"], strict=True):
            per_asn[a] = per_asn.get(a, 0) + v
        ranked = sorted(per_asn.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_K]
        mine = asns
        for col, v in zip(by, key, strict=True):
            mine = mine[mine[col] == v]
        mine = mine.sort_values("rank")
        assert [(int(r.asn), int(r.bytes)) for r in mine.itertuples()] == ranked, key


def test_measures_do_not_depend_on_partitions(built, tmp_path) -> None:
    build_cube(built / "a", tmp_path / "c7", workers=2, partitions=7)
    for name in ("cells.parquet", "rollups.parquet", "top_ips.parquet", "top_asns.parquet"):
        assert (built / "c" / name).read_bytes() == (tmp_path / "c7" / name).read_bytes(), name


def test_sketch_estimates_agree_with_exact_rollups(built) -> None:
    from flowatlas.engine.cube import open_cube

    cube = open_cube(built / "c")
    se = cube.meta["sketch"]["standard_error"]
    exact = cube.rollup(("region", "network_type")).set_index(["region", "network_type"])
    est = cube.estimate_uniques(("region", "network_type")).set_index(["region", "network_type"])
    for key, row in exact.iterrows():
        u = int(row["uniques"])
        e = est.loc[key, "uniques_estimate"]
        assert abs(e - u) <= max(4 * se * u, 2), (key, u, e)
    # an ad-hoc range: the September buckets, against the exact September rollup
    month = cube.rollup(("region",), period="month")
    sept = month[month["period_start"] == pd.Timestamp("2025-09-01", tz="UTC")]
    est = cube.estimate_uniques(("region",), start="2025-09-01", end="2025-10-01")
    est = est.set_index("region")["uniques_estimate"]
    for _, row in sept.iterrows():
        u = int(row["uniques"])
        assert abs(est[row["region"]] - u) <= max(4 * se * u, 2)


def test_sketches_do_not_depend_on_partitions(built, tmp_path) -> None:
    build_cube(built / "a", tmp_path / "c5", workers=0, partitions=5)
    a = (built / "c" / "sketches.parquet").read_bytes()
    assert a == (tmp_path / "c5" / "sketches.parquet").read_bytes()


def test_sketches_radix_sorted_when_keys_are_many(built, tmp_path, monkeypatch) -> None:
    """Reducers with more sketch keys than SKETCH_DENSE_KEYS_MAX and twice their rows
    radix-sort the packed keys instead of numbering them: the same sketches either way."""
    from flowatlas.engine import pipeline

    monkeypatch.setattr(pipeline, "SKETCH_DENSE_KEYS_MAX", 0)
    monkeypatch.setattr(pipeline, "SKETCH_DENSE_KEYS_PER_ROW", 0)
    calls = []
    radix = pipeline.hll.sparse_update
    monkeypatch.setattr(
        pipeline.hll, "sparse_update", lambda *a, **k: calls.append(1) or radix(*a, **k)
    )
    monkeypatch.setattr(pipeline.hll, "sparse_update_dense", None)  # must not be called
    build_cube(built / "a", tmp_path / "c", workers=0, partitions=3)
    assert calls
    a = (built / "c" / "sketches.parquet").read_bytes()
    assert a == (tmp_path / "c" / "sketches.parquet").read_bytes()


def test_sketches_per_bucket_answer_hourly_ranges(built, tmp_path) -> None:
    from dataclasses import replace

    from flowatlas.config import load_config
    from flowatlas.engine.cube import open_cube

    cfg = load_config(built / "a" / "flowatlas.toml")
    cfg = replace(cfg, cube=replace(cfg.cube, sketch_period="bucket"))
    build_cube(built / "a", tmp_path / "c", config=cfg, workers=0)
    cube = open_cube(tmp_path / "c")
    assert cube.meta["sketch"]["period"] == "bucket"
    cells = cube.cells
    busiest = cells.sort_values("uniques").iloc[-1]
    hour = busiest["bucket_start"]
    where = {d: busiest[d] for d in ("region", "network_type", "direction", "ip_version")}
    est = cube.estimate_uniques(start=hour, end=hour + pd.Timedelta(hours=1), where=where)
    u = int(busiest["uniques"])
    se = cube.meta["sketch"]["standard_error"]
    assert abs(float(est["uniques_estimate"].iloc[0]) - u) <= max(4 * se * u, 2)


def test_top_asns_split_over_cores_change_nothing(built, tmp_path, monkeypatch) -> None:
    """The combiner splits the top-ASN work by ASN over the cores once it is large: three
    shares of a small build give the same files as one."""
    from flowatlas.engine import combine

    monkeypatch.setattr(combine, "ASN_SHARE_ROWS", 1)
    monkeypatch.setattr(combine.os, "cpu_count", lambda: 3)
    build_cube(built / "a", tmp_path / "c3", workers=0, partitions=3)
    for name in ("top_asns.parquet", "rollups.parquet"):
        assert (built / "c" / name).read_bytes() == (tmp_path / "c3" / name).read_bytes(), name


@pytest.mark.parametrize("seed", [0, 1])
def test_merged_top_lists_of_asn_shares_equal_one_ranking(seed) -> None:
    """Top lists ranked per share of the ASNs and merged equal one ranking of all pairs,
    ties (equal volumes) included: volume descending, then ASN ascending."""
    from flowatlas.engine.combine import _merge_top_lists
    from flowatlas.kernels.topk import top_k_per_key

    rng = np.random.default_rng(seed)
    pairs = {
        (int(k), int(a))
        for k, a in zip(rng.integers(0, 30, 3000), rng.integers(0, 400, 3000), strict=True)
    }
    key, asn = np.array(sorted(pairs), np.int64).T if pairs else (np.empty(0, np.int64),) * 2
    vol = rng.integers(1, 6, key.size).astype(np.uint64)  # many ties
    keep, rank = top_k_per_key(key, vol, TOP_K)
    want = (key[keep], rank, asn[keep], vol[keep])
    lists = []
    for share in range(3):
        sel = asn % 3 == share
        k_keep, k_rank = top_k_per_key(key[sel], vol[sel], TOP_K)
        lists.append((key[sel][k_keep], k_rank, asn[sel][k_keep], vol[sel][k_keep]))
    got = _merge_top_lists(lists)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
