"""The views for any filters (viz/query.py) against pandas oracles on the cube's own tables."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serve_support import make_cube, make_sparse_cube

from flowatlas.engine.cube import open_cube
from flowatlas.viz import units
from flowatlas.viz.app.state import Choices, State, WhatIfState, encode, parse_args
from flowatlas.viz.query import OTHER_CLOUDS, CubeQuery, Filters, compare
from flowatlas.vocab import CLOUD_TYPES


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return open_cube(make_cube(tmp_path_factory.mktemp("q")))


@pytest.fixture(scope="module")
def q(cube):
    return CubeQuery(cube)


def _cells(cube, q, f: Filters) -> pd.DataFrame:
    """The oracle's cells: the report's types, filtered with plain pandas."""
    f = q.normalize(f)
    c = cube.cells
    day = c["bucket_start"].dt.tz_convert(None).dt.floor("D").dt.date
    m = (
        c["network_type"].isin(f.types)
        & c["region"].isin(f.regions)
        & c["direction"].isin(f.directions)
        & c["ip_version"].isin(f.ip_versions)
        & (day >= f.start)
        & (day <= f.end)
    )
    return c[m.to_numpy()]


FILTERS = [
    Filters(),
    Filters(regions=("US-East",), directions=("egress",)),
    Filters(start=dt.date(2025, 8, 3), end=dt.date(2025, 9, 20), ip_versions=(6,)),
    Filters(types=("Neocloud", "Hyperscaler"), regions=("US-West", "CA-East")),
]


@pytest.mark.parametrize("f", FILTERS)
def test_daily_mean_matches_pandas(cube, q, f) -> None:
    got = q.area(f, "mean", "day")
    cells = _cells(cube, q, f)
    day = cells["bucket_start"].dt.tz_convert(None).dt.floor("D")
    want = cells.assign(day=day).pivot_table(
        index="day", columns="network_type", values="bytes", aggfunc="sum", observed=True
    )
    want = want.reindex(index=got.index, columns=got.columns).fillna(0) * 8 / 86_400
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("stat", ["p95", "peak"])
def test_daily_p95_and_peak_of_bucket_rates(cube, q, stat) -> None:
    f = Filters(regions=("US-East",), types=("Neocloud", "CDN"))
    got = q.area(f, stat, "day")
    cells = _cells(cube, q, f)
    per_bucket = cells.pivot_table(index="bucket_start", columns="network_type", values="bytes",
                                   aggfunc="sum", observed=True)  # fmt: skip
    grid = pd.date_range(f"{q.first_day}", periods=len(q.days) * 24, freq="h", tz="UTC")
    rates = per_bucket.reindex(index=grid, columns=got.columns).fillna(0) * 8 / 3600
    by_day = rates.groupby(rates.index.tz_convert(None).floor("D"))
    want = by_day.max() if stat == "peak" else by_day.quantile(0.95)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9)


def test_sparse_days_are_gaps_not_zeros(tmp_path) -> None:
    cube = open_cube(make_sparse_cube(tmp_path))
    q = CubeQuery(cube)
    area = q.area(Filters())
    have = set(cube.cells["bucket_start"].dt.tz_convert(None).dt.floor("D"))
    for day, row in area.iterrows():
        if day in have:
            assert row.notna().all() and row.sum() > 0
        else:
            assert row.isna().all(), day
    assert area.isna().all(axis=1).sum() == 16  # the two runs of days removed
    assert q.days_with_data(Filters()) == (24, 16)
    # every bucket of a day without data is a gap too; a day with data has no gap
    buckets = q.area(Filters(), "mean", "bucket")
    gap_days = set(buckets.index[buckets.isna().all(axis=1)].floor("D"))
    assert gap_days == set(area.index[area.isna().all(axis=1)])
    assert len(buckets.index[buckets.isna().all(axis=1)]) == 16 * 24


@pytest.mark.parametrize("f", FILTERS)
def test_volume_matches_cube(cube, q, f) -> None:
    got = q.volume(f, ("region", "network_type"))
    want = _cells(cube, q, f).groupby(["region", "network_type"], observed=True)["bytes"].sum()
    got = got[got > 0]
    assert got.to_dict() == pytest.approx(want.astype(float).to_dict(), rel=1e-12)


def test_whole_range_matrices_are_the_cubes(cube, q) -> None:
    for measure in ("bytes", "uniques", "magnitude"):
        m, how = q.matrix(Filters(), measure)
        want = cube.matrix(measure).reindex(index=m.index, columns=m.columns).astype(float)
        if measure == "bytes":
            want = want.where(want > 0)
        np.testing.assert_allclose(m.to_numpy(), want.to_numpy(), rtol=1e-12)
        assert how.startswith("exact")
    top, _ = q.matrix(Filters(), "top10_share")
    r = cube.rollup(("region", "network_type"))
    rows = cube.rollups[(cube.rollups["rollup"] == "all")
                        & (cube.rollups["grouping"] == "region,network_type")]  # fmt: skip
    want = rows.set_index(["region", "network_type"])
    for (region, t), row in want.iterrows():
        if t in top.columns and region in top.index and row["bytes"] > 0:
            assert top.loc[region, t] == pytest.approx(row["top_bytes"] / row["bytes"])
    assert len(r)


def test_periods(q) -> None:
    assert q.period(Filters()).level == "all"
    p = q.period(Filters(start=dt.date(2025, 7, 1), end=dt.date(2025, 9, 30)))
    assert (p.level, p.start) == ("quarter", pd.Timestamp("2025-07-01", tz="UTC"))
    p = q.period(Filters(start=dt.date(2025, 8, 1), end=dt.date(2025, 8, 31)))
    assert p.level == "month"
    assert q.period(Filters(start=dt.date(2025, 8, 9), end=dt.date(2025, 8, 9))).level == "day"
    assert q.period(Filters(start=dt.date(2025, 8, 9), end=dt.date(2025, 8, 10))) is None
    # a range reaching past the data is the period the data holds
    p = q.period(Filters(start=dt.date(2025, 10, 1), end=dt.date(2026, 3, 1)))
    assert p.level == "quarter"


def test_grouping_rules(q) -> None:
    g = q._grouping
    assert g(("region", "network_type"), {}) == ("region,network_type", False)
    # one direction: the full grouping, summed over IP versions (disjoint: still exact)
    assert g(("region", "network_type"), {"direction": ("egress",)}) == (
        "region,network_type,direction,ip_version", True)  # fmt: skip
    # two regions of three: their distinct counts overlap, nothing stored answers exactly
    assert g(("network_type",), {"region": ("US-West", "US-East")}) is None
    assert g(("ip_version",), {}) == ("ip_version", False)


def test_exact_uniques_with_a_direction_filter(cube, q) -> None:
    f = Filters(start=dt.date(2025, 10, 1), end=dt.date(2025, 12, 31), directions=("egress",))
    u = q.uniques(f, ("region", "network_type"))
    assert u.exact and "quarter 2025Q4" in u.how
    r = cube.rollups
    rows = r[(r["rollup"] == "quarter") & (r["grouping"] == "region,network_type,direction,"
             "ip_version") & (r["period_start"] == pd.Timestamp("2025-10-01", tz="UTC"))
             & (r["direction"] == "egress")]  # fmt: skip
    want = rows.groupby(["region", "network_type"], observed=True)["uniques"].sum()
    got = u.table.set_index(["region", "network_type"])["uniques"]
    assert got.to_dict() == {(str(a), str(b)): float(v) for (a, b), v in want.items()}
    assert u.table["top10_share"].isna().all()  # summed over IP versions: not a top-10


def test_estimates_where_no_rollup_answers(cube, q) -> None:
    f = Filters(start=dt.date(2025, 8, 1), end=dt.date(2025, 8, 31))
    by = ("region", "network_type")
    exact = q.uniques(f, by).table.set_index(list(by))["uniques"]
    est = q._estimate(q.normalize(f), by, {}).table.set_index(list(by))["uniques"]
    assert q.uniques(f, by).exact
    for key, v in exact[exact >= 100].items():
        assert est[key] == pytest.approx(v, rel=6 * q.sketch_error), key
    # views leave Internal out; a stored count without a network type includes Internal's
    # addresses (our own, no other type's), and says by how many at most
    assert q.hidden_types == ["Internal"]
    u = q.uniques(f, ("region",))
    assert u.exact and "of our own addresses (Internal traffic)" in u.how
    r = cube.rollups
    internal = r[(r["rollup"] == "month") & (r["grouping"] == "network_type")
                 & (r["network_type"] == "Internal")
                 & (r["period_start"] == pd.Timestamp("2025-08-01", tz="UTC"))]  # fmt: skip
    bound = float(internal["uniques"].sum())
    assert f"at most {units.fmt(bound, 'count')} of our own" in u.how
    est = q._estimate(q.normalize(f), ("region",), {}).table.set_index("region")["uniques"]
    for region, v in u.table.set_index("region")["uniques"].items():
        tol = 6 * q.sketch_error * v
        assert v - bound - tol <= est[region] <= v + tol, (region, v, bound, est[region])
    odd = q.uniques(Filters(start=dt.date(2025, 8, 3), end=dt.date(2025, 8, 17)), ("region",))
    assert not odd.exact and "estimate" in odd.how and "1.6%" in odd.how


def test_quarter_shares_and_comparison(cube, q) -> None:
    qs = q.quarter_shares(Filters())
    assert list(qs.index) == ["2025Q3", "2025Q4"]
    c = cube.cells[cube.cells["network_type"].isin(q.types)]
    quarter = c["bucket_start"].dt.tz_convert(None).dt.to_period("Q").astype(str)
    vol = c.assign(q=quarter).pivot_table(index="q", columns="network_type", values="bytes",
                                          aggfunc="sum", observed=True)  # fmt: skip
    share = vol.div(vol.sum(axis=1), axis=0)
    for t in q.types:
        np.testing.assert_allclose(qs[t].to_numpy(), share[t].to_numpy(), rtol=1e-12)
    clouds = [t for t in CLOUD_TYPES if t in share.columns]
    np.testing.assert_allclose(qs[OTHER_CLOUDS], share[clouds].sum(axis=1), rtol=1e-12)
    cmp = compare(q, Filters())
    assert cmp.deltas[OTHER_CLOUDS] == pytest.approx(qs[OTHER_CLOUDS].iloc[1]
                                                     - qs[OTHER_CLOUDS].iloc[0])  # fmt: skip


def test_drill_top_lists_are_the_cubes(cube, q) -> None:
    d = q.drill(Filters(), "Neocloud", "US-East")
    want = cube.top_asns(by=("region", "network_type"),
                         where={"region": "US-East", "network_type": "Neocloud"})  # fmt: skip
    assert list(d.tops.asns["asn"]) == list(want.sort_values("rank")["asn"])
    assert d.uniques.exact and "whole range" in d.tops.note
    # a range inside one month: that month's list
    f = Filters(start=dt.date(2025, 9, 3), end=dt.date(2025, 9, 17))
    d = q.drill(f, "Neocloud", "US-East")
    want = cube.top_ips(by=("region", "network_type"), period="month",
                        where={"region": "US-East", "network_type": "Neocloud"})  # fmt: skip
    want = want[want["period_start"] == pd.Timestamp("2025-09-01", tz="UTC")]
    assert list(d.tops.ips["remote_ip"]) == list(want.sort_values("rank")["remote_ip"])
    assert "month 2025-09" in d.tops.note and "smallest stored period" in d.tops.note
    assert not d.uniques.exact
    # one direction and one IP version: the full grouping's list
    f = Filters(directions=("egress",), ip_versions=(4,))
    d = q.drill(f, "Neocloud", "US-East")
    where = {"region": "US-East", "network_type": "Neocloud", "direction": "egress",
             "ip_version": 4}  # fmt: skip
    want = cube.top_asns(by=tuple(where), where=where)
    assert list(d.tops.asns["asn"]) == list(want.sort_values("rank")["asn"])
    # one direction, both versions: not stored, so the list covers all directions, and says so
    d = q.drill(Filters(directions=("egress",)), "Neocloud", "US-East")
    assert "all directions" in d.tops.note


def test_drill_metros_are_the_cubes(cube, q) -> None:
    f = Filters(start=dt.date(2025, 8, 1), end=dt.date(2025, 9, 14), directions=("egress",))
    d = q.drill(f, "Neocloud", "US-East")
    where = {"region": "US-East", "network_type": "Neocloud", "direction": "egress"}
    want = cube.top_metros(by=tuple(where), where=where, start="2025-08-01",
                           end="2025-09-15", n=10)  # fmt: skip
    assert list(d.tops.metros["metro"]) == list(want["metro"]) and len(want) >= 3
    np.testing.assert_allclose(d.tops.metros["share"], want["share"])
    assert "carry" in d.tops.metro_note
    # every filter applies: two regions of three, IPv4, types Neocloud and Hyperscaler
    f = Filters(regions=("US-West", "US-East"), ip_versions=(4,),
                types=("Neocloud", "Hyperscaler"))  # fmt: skip
    metros, _ = q.metros(f)
    where = {"region": ["US-West", "US-East"], "ip_version": [4],
             "network_type": ["Neocloud", "Hyperscaler"]}  # fmt: skip
    want = cube.top_metros(where=where)
    assert list(metros["metro"]) == list(want["metro"])
    np.testing.assert_allclose(metros["bytes"], want["bytes"].astype(float))
    np.testing.assert_allclose(metros["share"], want["share"])


CHOICES = Choices(
    cubes=("a", "b"),
    regions=("US-West", "US-East"),
    directions=("ingress", "egress"),
    types=("CDN", "Neocloud"),
    tabs=("overview", "heatmaps"),
)


def test_url_round_trip() -> None:
    state = State(cube="b", filters=Filters(start=dt.date(2025, 7, 1), end=dt.date(2025, 7, 31),
                                            regions=("US-East",), ip_versions=(6,)),
                  stat="p95", tab="heatmaps", cell=("US-East", "Neocloud"))  # fmt: skip
    text = encode(state, "a")
    args = {k: [v.encode()] for k, v in (p.split("=") for p in text.split("&"))}
    back, messages = parse_args(args, CHOICES)
    assert messages == [] and back == state
    assert encode(State(cube="a"), "a") == ""


def test_url_round_trip_of_the_whatif_tab() -> None:
    from urllib.parse import parse_qs

    choices = replace(CHOICES, scenarios=("baseline", "neocloud-migration", "mine"))
    whatif = WhatIfState(scenario="mine", grow_types={"CDN": 2.5, "Neocloud": -1.0},
                         grow_regions={"US-East": 5.0}, percentile="99",
                         links=("usw-transit in", "b out"))  # fmt: skip
    state = State(cube="a", tab="heatmaps", whatif=whatif)
    text = encode(state, "a")
    assert "scenario=mine" in text and "grow_types=CDN:2.5,Neocloud:-1" in text
    back, messages = parse_args(parse_qs(text), choices)
    assert messages == [] and back == state
    # what a page without the tab's choices writes: nothing
    assert encode(State(cube="a", whatif=WhatIfState()), "a") == ""


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("scenario", "../etc/passwd.toml", "not one of the scenarios"),
        ("grow_types", "Mars:2", "NAME:PERCENT"),
        ("grow_regions", "US-East:50", "percents from -5 to 20"),
        ("grow_regions", "US-East:fast", "NAME:PERCENT"),
        ("pct", "42", "expected one of 95, 99, max, mean"),
    ],
)
def test_malformed_whatif_url_arguments_are_ignored_with_a_message(key, value, message) -> None:
    state, messages = parse_args({"pct": [b"max"], key: [value.encode()]}, CHOICES)
    assert len(messages) == 1 and message in messages[0], messages
    assert state.whatif == WhatIfState(percentile="max" if key != "pct" else "")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("start", "2025-13-45", "expected a day as YYYY-MM-DD"),
        ("regions", "US-West,Mars", "comma-separated list"),
        ("ip", "5", "expected 4, 6 or all"),
        ("cube", "../../etc/passwd", "not one of the served cubes"),
        ("stat", "median", "expected one of mean, p95, peak"),
        ("cell", "Nowhere|CDN", "NETWORK_TYPE"),
        ("zzz", "1", "unknown URL argument 'zzz'"),
    ],
)
def test_malformed_url_arguments_are_ignored_with_a_message(key, value, message) -> None:
    state, messages = parse_args({key: [value.encode()], "types": [b"CDN"]}, CHOICES)
    assert len(messages) == 1 and message in messages[0], messages
    assert state.cube == "a" and state.filters.types == ("CDN",)  # the rest still applies


def test_the_cache_is_bounded_by_bytes() -> None:
    from flowatlas.viz.query import _Memo

    memo = _Memo(size=100, max_bytes=10_000)
    for i in range(20):
        memo.get(i, lambda: np.zeros(500))  # 4,000 bytes each
    assert len(memo.data) == 2 and memo.bytes == 8_000 and list(memo.data) == [18, 19]
    assert memo.get(19, lambda: 1 / 0).shape == (500,) and memo.hits == 1


@settings(max_examples=300, deadline=None)
@given(
    args=st.dictionaries(
        st.sampled_from(["cube", "start", "end", "regions", "directions", "types", "ip", "stat",
                         "res", "scale", "tab", "cell", "zzz", "bokeh-session-id", "scenario",
                         "grow_types", "grow_regions", "pct", "links"]),
        st.lists(st.binary(max_size=40), min_size=1, max_size=3),
        max_size=8,
    )
)  # fmt: skip
def test_any_url_arguments_parse_without_error(args) -> None:
    """Whatever a URL holds, parsing gives a usable state and one message per bad argument."""
    state, messages = parse_args(args, CHOICES)
    assert state.cube in CHOICES.cubes
    assert set(state.filters.regions) <= set(CHOICES.regions)
    assert set(state.filters.types) <= set(CHOICES.types)
    assert state.whatif.scenario in CHOICES.scenarios
    assert set(state.whatif.grow_types) <= set(CHOICES.types)
    assert set(state.whatif.grow_regions) <= set(CHOICES.regions)
    f = state.filters
    assert f.start is None or f.end is None or f.start <= f.end
    assert len(messages) <= len(args)
    encode(state, "a")  # and it writes back as a URL
