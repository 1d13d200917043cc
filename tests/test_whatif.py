"""What-if engine: answers computed by hand, on small traffic frames (no cube needed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowatlas.errors import ConfigError
from flowatlas.whatif import (
    Add,
    Fail,
    Grow,
    Link,
    Scale,
    Scenario,
    ScenarioError,
    Shift,
    WhatIfWarning,
    nearest_rank,
    parse_horizon,
    percentile_of,
    scenario_from_dict,
    traffic_from_frame,
    whatif,
)
from flowatlas.whatif.model import Horizon

B = 300  # 5-minute buckets
GBPS = 1e9 / 8 * B  # bytes in a bucket at 1 Gbps


def frame(rows: list[tuple[str, str, str, str, np.ndarray]], start="2025-12-01") -> pd.DataFrame:
    """(link, region, network type, direction, bytes per bucket) -> a long traffic frame."""
    parts = []
    for link, region, nt, d, vol in rows:
        t = pd.date_range(start, periods=len(vol), freq=f"{B}s", tz="UTC")
        parts.append(
            pd.DataFrame(
                {
                    "bucket_start": t,
                    "link": link,
                    "region": region,
                    "network_type": nt,
                    "direction": d,
                    "bytes": vol,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


LINKS = [
    Link("E", "US-East", 10.0),
    Link("E2", "US-East", 30.0),
    Link("C", "CA-East", 10.0),
    Link("W", "US-West", 100.0, "shared"),
]
REGIONS = ("US-West", "US-East", "CA-East")
TYPES = ("CDN", "Neocloud", "Migration", "Hyperscaler")
WEEK = 7 * 288


def constant(gbps: float, n: int = WEEK) -> np.ndarray:
    return np.full(n, gbps * GBPS)


def traffic(rows, **kw):
    return traffic_from_frame(
        frame(rows, **kw), LINKS, B, regions=REGIONS, network_types=TYPES, origin="t"
    )


def row(summary: pd.DataFrame, link: str, side: str) -> pd.Series:
    return summary.set_index(["link", "direction"]).loc[(link, side)]


# --------------------------------------------------------------------------- percentile


def test_nearest_rank_percentile_matches_a_hand_sorted_example() -> None:
    values = np.array([15, 3, 9, 27, 1, 12, 6, 21, 18, 24], dtype=float)
    # sorted: 1 3 6 9 12 15 18 21 24 27; rank ceil(p/100 * 10)
    assert percentile_of(values, 95) == 27  # rank 10
    assert percentile_of(values, 90) == 24  # rank 9
    assert percentile_of(values, 50) == 12  # rank 5
    assert percentile_of(values, 10) == 1  # rank 1
    assert percentile_of(values, 11) == 3  # rank 2 (1.1 rounds up)
    assert percentile_of(values, 100) == 27
    assert percentile_of(values, "mean") == 13.6  # 136 / 10
    # exact rank arithmetic: 95 % of 100 samples is the 95th (0.95 * 100 is 95.00000000000001)
    assert nearest_rank(100, 95) == 94
    assert percentile_of(np.arange(1, 101, dtype=float), 95) == 95
    assert percentile_of(np.arange(1, 1001, dtype=float), 99.9) == 999
    # billing: 30 days of 5-minute samples, the top 432 dropped
    assert nearest_rank(8640, 95) == 8640 - 432 - 1


def test_constant_traffic_times_a_factor_gives_an_exact_percentile() -> None:
    t = traffic([("E", "US-East", "Neocloud", "egress", constant(2.0))])
    r = whatif(t, Scenario([Scale(2.5, network_types=["Neocloud"])]), horizon=3)
    e = row(r.summary, "E", "out")
    assert e["baseline_now_gbps"] == 2.0 and e["scenario_now_gbps"] == 5.0
    assert e["scenario_util_now"] == 0.5 and e["scenario_util_end"] == 0.5
    assert e["scenario_over_threshold"] is None and pd.isna(e["scenario_runout"])
    p = r.projection
    assert (
        p[(p.case == "scenario") & (p.link == "E") & (p.direction == "out")].rate_gbps == 5
    ).all()
    assert row(r.summary, "E", "in")["scenario_now_gbps"] == 0  # nothing came in


def test_shared_capacity_adds_both_directions() -> None:
    t = traffic(
        [
            ("W", "US-West", "CDN", "egress", constant(30.0)),
            ("W", "US-West", "CDN", "ingress", constant(20.0)),
        ]
    )
    w = row(whatif(t, horizon=1).summary, "W", "both")
    assert w["baseline_now_gbps"] == 50.0 and w["baseline_util_now"] == 0.5


# --------------------------------------------------------------------------- growth and run-out


def test_compound_growth_and_run_out_match_the_closed_form() -> None:
    t = traffic([("E", "US-East", "Neocloud", "egress", constant(5.0))])  # 50 % of 10 Gbps
    r = whatif(t, Scenario([Grow(10.0)]), horizon=12, threshold=80)
    e = row(r.summary, "E", "out")
    # u(m) = 0.5 * 1.1^m; over 80 % once m >= ln 1.6 / ln 1.1 = 4.93: month 5
    anchor = pd.Timestamp("2025-12-08", tz="UTC")  # a week from Dec 1: the next month boundary
    h = Horizon.after(t.end, 12)
    assert h.anchor == pd.Timestamp("2026-01-01", tz="UTC") and t.end == anchor
    assert e["scenario_over_threshold"] == "2026-05"
    t_star = math.log(2) / math.log(1.1)  # 7.2725 months
    assert e["scenario_runout_months"] == pytest.approx(t_star, rel=1e-12)
    expected = pd.Timestamp("2026-08-01", tz="UTC") + pd.Timedelta(days=31) * (t_star - 7)
    assert abs(e["scenario_runout"] - expected) < pd.Timedelta(seconds=1)
    assert e["scenario_util_end"] == pytest.approx(0.5 * 1.1**12, rel=1e-12)
    p = r.projection
    sc = p[(p.case == "scenario") & (p.link == "E") & (p.direction == "out")]
    assert np.allclose(sc.rate_gbps, 5.0 * 1.1 ** np.arange(13), rtol=1e-12)
    assert list(sc.month[:3]) == ["now", "2026-01", "2026-02"]
    assert pd.isna(e["baseline_runout"]) and e["baseline_util_end"] == 0.5
    assert r.summary.iloc[0]["link"] == "E"  # the only link running out ranks first


def test_a_step_starting_later_runs_out_at_the_start_of_its_month() -> None:
    t = traffic([("E", "US-East", "Neocloud", "egress", constant(6.0))])
    r = whatif(t, Scenario([Scale(2.0, start="2026-03")]), horizon=6)
    e = row(r.summary, "E", "out")
    assert e["scenario_runout_months"] == 2.0  # the start of March: 2 months after Jan 1
    assert e["scenario_runout"] == pd.Timestamp("2026-03-01", tz="UTC")
    assert e["scenario_over_threshold"] == "2026-03"
    p = r.projection
    sc = p[(p.case == "scenario") & (p.link == "E") & (p.direction == "out")]
    assert list(sc.rate_gbps) == [6.0, 6.0, 6.0, 12.0, 12.0, 12.0, 12.0]


def test_fitted_growth_recovers_a_clean_exponential() -> None:
    # four whole months of traffic whose level grows by exactly 5 % a month
    t_idx = pd.date_range("2025-09-01", "2025-12-31 23:55", freq="5min", tz="UTC")
    month = (t_idx.month - 9).to_numpy()
    vol = 2.0 * GBPS * 1.05**month
    t = traffic([("E", "US-East", "Neocloud", "egress", vol)], start="2025-09-01")
    r = whatif(t, Scenario([Grow(fitted=True, network_types=["Neocloud"])]), horizon=2)
    step = r.steps.iloc[0]
    assert step["monthly_percent"] == pytest.approx(5.0, rel=1e-9)
    assert step["r2"] == pytest.approx(1.0)
    e = row(r.summary, "E", "out")
    assert e["scenario_end_gbps"] == pytest.approx(2.0 * 1.05**3 * 1.05**2, rel=1e-9)


# --------------------------------------------------------------------------- shift, fail, order


def test_shift_moves_a_share_and_conserves_traffic() -> None:
    t = traffic(
        [
            ("E", "US-East", "Migration", "ingress", constant(4.0)),
            ("C", "CA-East", "Migration", "ingress", constant(1.0)),
            ("E", "US-East", "CDN", "ingress", constant(2.0)),
        ]
    )
    sc = Scenario(
        [Shift(75, network_types=["Migration"], from_region="US-East", to_region="CA-East")]
    )
    r = whatif(t, sc, horizon=1, percentile="mean")
    assert row(r.summary, "E", "in")["scenario_now_gbps"] == pytest.approx(1.0 + 2.0)
    assert row(r.summary, "C", "in")["scenario_now_gbps"] == pytest.approx(1.0 + 3.0)
    s = r.summary
    assert s["scenario_now_gbps"].sum() == pytest.approx(s["baseline_now_gbps"].sum(), rel=1e-12)
    assert r.steps.iloc[0]["bytes"] == pytest.approx(3.0 * GBPS * WEEK)


def test_shift_to_a_region_spreads_over_its_links_in_proportion() -> None:
    t = traffic(
        [
            ("E", "US-East", "Migration", "ingress", constant(3.0)),
            ("E2", "US-East", "Migration", "ingress", constant(1.0)),
            ("C", "CA-East", "Migration", "ingress", constant(8.0)),
        ]
    )
    sc = Scenario(
        [Shift(50, network_types=["Migration"], from_region="CA-East", to_region="US-East")]
    )
    r = whatif(t, sc, horizon=1, percentile="mean")
    assert row(r.summary, "E", "in")["scenario_now_gbps"] == pytest.approx(3.0 + 4.0 * 0.75)
    assert row(r.summary, "E2", "in")["scenario_now_gbps"] == pytest.approx(1.0 + 4.0 * 0.25)
    assert row(r.summary, "C", "in")["scenario_now_gbps"] == pytest.approx(4.0)


def test_link_failure_moves_everything_to_the_backups_by_capacity() -> None:
    t = traffic(
        [
            ("E", "US-East", "Neocloud", "egress", constant(4.0)),
            ("E", "US-East", "CDN", "ingress", constant(2.0)),
            ("E2", "US-East", "CDN", "egress", constant(1.0)),
        ]
    )
    r = whatif(t, Scenario([Fail("E", backups=["E2", "C"])]), horizon=1, percentile="mean")
    # capacities 30 and 10: three quarters to E2, one quarter to C
    assert row(r.summary, "E", "out")["scenario_now_gbps"] == 0
    assert row(r.summary, "E2", "out")["scenario_now_gbps"] == pytest.approx(1.0 + 3.0)
    assert row(r.summary, "E2", "in")["scenario_now_gbps"] == pytest.approx(1.5)
    assert row(r.summary, "C", "out")["scenario_now_gbps"] == pytest.approx(1.0)
    s = r.summary
    assert s["scenario_now_gbps"].sum() == pytest.approx(s["baseline_now_gbps"].sum(), rel=1e-12)
    r2 = whatif(t, Scenario([Fail("E", backups=["E2", "C"], shares=[10, 90])]), horizon=1,
                percentile="mean")  # fmt: skip
    assert row(r2.summary, "C", "out")["scenario_now_gbps"] == pytest.approx(3.6)


def test_steps_compose_in_the_order_written() -> None:
    t = traffic([("E", "US-East", "Neocloud", "egress", constant(1.0))])
    scale = Scale(2.0, regions=["US-East"], network_types=["Neocloud"])
    shift = Shift(50, network_types=["Neocloud"], from_region="US-East", to_link="C")
    a = whatif(t, Scenario([scale, shift]), horizon=1).summary
    b = whatif(t, Scenario([shift, scale]), horizon=1).summary
    # scale then shift: 2 Gbps, half of it moves; shift then scale: only US-East doubles
    assert row(a, "E", "out")["scenario_now_gbps"] == 1.0
    assert row(a, "C", "out")["scenario_now_gbps"] == 1.0
    assert row(b, "E", "out")["scenario_now_gbps"] == 1.0
    assert row(b, "C", "out")["scenario_now_gbps"] == 0.5
    # growth after an added workload grows it too; before, it does not
    add = Add(1.0, region="US-East", network_type="Neocloud", direction="egress", link="E")
    grow = Grow(100.0, links=["E"])
    c = whatif(t, Scenario([add, grow]), horizon=1).summary
    d = whatif(t, Scenario([grow, add]), horizon=1).summary
    assert row(c, "E", "out")["scenario_end_gbps"] == 4.0
    assert row(d, "E", "out")["scenario_end_gbps"] == 3.0


def test_added_workload_follows_its_hours_and_days() -> None:
    t = traffic([("E", "US-East", "CDN", "ingress", constant(0.0))])  # Dec 1 2025 is a Monday
    add = Add(8.0, region="US-East", network_type="Neocloud", direction="egress",
              hours="9-17", days="mon-fri", link="E")  # fmt: skip
    mean = row(whatif(t, Scenario([add]), horizon=1, percentile="mean").summary, "E", "out")
    assert mean["scenario_now_gbps"] == pytest.approx(8.0 * 5 * 8 / (7 * 24))
    p95 = row(whatif(t, Scenario([add]), horizon=1).summary, "E", "out")
    assert p95["scenario_now_gbps"] == 8.0  # active 23.8 % of the buckets: p95 sees the plateau
    p50 = row(whatif(t, Scenario([add]), horizon=1, percentile=50).summary, "E", "out")
    assert p50["scenario_now_gbps"] == 0.0
    # placed without a link: where that region's traffic of its type already goes
    t2 = traffic([("E2", "US-East", "Neocloud", "egress", constant(1.0))])
    placed = Add(2.0, region="US-East", network_type="Neocloud", direction="egress")
    s = whatif(t2, Scenario([placed]), horizon=1, percentile="mean").summary
    assert row(s, "E2", "out")["scenario_now_gbps"] == pytest.approx(3.0)


# --------------------------------------------------------------------------- properties

_LINK_NAMES = ("E", "E2", "C", "W")
_REGION_OF = {lk.name: lk.region for lk in LINKS}


@st.composite
def random_traffic(draw):
    n = draw(st.integers(1, 40))
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        link = draw(st.sampled_from(_LINK_NAMES))
        vol = np.array(draw(st.lists(st.floats(0, 1e12), min_size=n, max_size=n)))
        rows.append(
            (
                link,
                _REGION_OF[link],
                draw(st.sampled_from(TYPES)),
                draw(st.sampled_from(("ingress", "egress", "transit"))),
                vol,
            )
        )
    return traffic(rows)


@given(random_traffic(), st.sampled_from([95.0, 99.0, 100.0, 50.0, "mean"]))
@settings(max_examples=60, deadline=None)
def test_an_empty_scenario_gives_the_baseline_exactly(t, pct) -> None:
    r = whatif(t, Scenario([]), horizon=3, percentile=pct)
    p = r.projection
    base = p[p.case == "baseline"].drop(columns="case").reset_index(drop=True)
    scen = p[p.case == "scenario"].drop(columns="case").reset_index(drop=True)
    pd.testing.assert_frame_equal(base, scen)
    s = r.summary
    for col in ("now_gbps", "util_now", "util_end", "runout_months"):
        assert s[f"baseline_{col}"].equals(s[f"scenario_{col}"])


SHIFTS_BY_REGION = st.builds(
    lambda share, src, dst, nt: Shift(share, network_types=[nt], from_region=src, to_region=dst),
    st.floats(0, 100),
    st.sampled_from(REGIONS),
    st.sampled_from(REGIONS),
    st.sampled_from(TYPES),
).filter(lambda s: s.from_region != s.to_region)
SHIFTS_BY_LINK = st.builds(
    lambda share, src, dst: Shift(share, from_link=src, to_link=dst),
    st.floats(0, 100),
    st.sampled_from(_LINK_NAMES),
    st.sampled_from(_LINK_NAMES),
).filter(lambda s: s.from_link != s.to_link)
FAILURES = st.builds(
    lambda link, backups: Fail(link, backups=backups),
    st.sampled_from(_LINK_NAMES),
    st.lists(st.sampled_from(_LINK_NAMES), min_size=1, max_size=3, unique=True),
).filter(lambda f: f.link not in f.backups)


@given(
    random_traffic(), st.lists(st.one_of(SHIFTS_BY_REGION, SHIFTS_BY_LINK, FAILURES), max_size=5)
)
@settings(max_examples=60, deadline=None)
@pytest.mark.filterwarnings("ignore::flowatlas.whatif.WhatIfWarning")  # shifts of nothing
def test_shifts_and_failures_conserve_bytes(t, steps) -> None:
    r = whatif(t, Scenario(steps), horizon=1, percentile="mean")
    s = r.summary
    total = s["baseline_now_gbps"].sum()
    assert s["scenario_now_gbps"].sum() == pytest.approx(total, rel=1e-9, abs=1e-9)


@given(random_traffic(), st.sampled_from([95.0, 99.0, 100.0, 12.5]))
@settings(max_examples=40, deadline=None)
def test_observed_percentiles_match_pandas(t, pct) -> None:
    """Oracle: per link side, sum the groups per bucket with pandas and sort by hand."""
    g = t.groups.copy()
    side = np.where(g["direction"] == "egress", "out", "in")
    side = np.where(g["link"] == "W", "both", side)  # W is shared
    long = pd.DataFrame(t.series.T).melt(var_name="g", value_name="bytes")
    long["bucket"] = np.tile(np.arange(t.n_buckets), len(g))
    long["key"] = [f"{g['link'][i]}|{side[i]}" for i in long["g"]]
    per = long.groupby(["key", "bucket"])["bytes"].sum().unstack(fill_value=0.0)
    r = whatif(t, horizon=1, percentile=pct).summary
    for key, values in per.iterrows():
        srt = sorted(values.to_numpy() * 8 / B / 1e9)
        expected = srt[math.ceil(pct / 100 * len(srt)) - 1]
        link, d = key.split("|")
        assert row(r, link, d)["baseline_now_gbps"] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"stepz": []}, "s.toml: unknown key 'stepz'"),
        ({"steps": [{"op": "scale", "factor": 2, "regionz": ["x"]}]},
         "steps[0]: unknown key 'regionz'"),
        ({"steps": [{"op": "scale", "factor": -1}]}, "steps[0].factor: -1.0 is not a number >= 0"),
        ({"steps": [{"op": "zoom"}]}, "steps[0].op: 'zoom'"),
        ({"steps": [{"op": "shift", "share": 101, "from_region": "a", "to_region": "b"}]},
         "steps[0].share: 101.0 is not a percentage"),
        ({"steps": [{"op": "shift", "share": -1, "from_region": "a", "to_region": "b"}]},
         "steps[0].share"),
        ({"steps": [{"op": "fail", "link": "E", "backups": ["C"], "shares": [60]}]},
         "steps[0].shares: they add up to 60"),
        ({"steps": [{"op": "add", "rate_gbps": 0, "region": "a", "network_type": "CDN",
                     "direction": "egress"}]}, "steps[0].rate_gbps: 0.0 is not a rate > 0"),
        ({"steps": [{"op": "add", "rate_gbps": 1, "region": "a", "network_type": "CDN",
                     "direction": "egress", "hours": "9-25"}]}, "steps[0].hours: '9-25'"),
        ({"steps": [{"op": "grow"}]}, "steps[0]: give exactly one of monthly_percent"),
        ({"horizon": "twelve"}, "s.toml: horizon: 'twelve' is not a horizon"),
        ({"threshold": 120}, "s.toml: threshold: 120"),
        ({"percentile": 0}, "s.toml: percentile: 0"),
    ],
)  # fmt: skip
def test_bad_scenarios_name_the_file_and_key(data, needle) -> None:
    with pytest.raises(ConfigError) as exc:  # ScenarioError, or ConfigError for unknown keys
        scenario_from_dict(data, origin="s.toml")
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("step", "needle"),
    [
        (Scale(2, regions=["US-Central"]), "steps[0].regions[0]: unknown region 'US-Central'"),
        (Scale(2, network_types=["Neoclod"]), "unknown network type 'Neoclod'"),
        (Fail("X", backups=["E"]), "steps[0].link: unknown link 'X'"),
        (Fail("E", backups=["Y"]), "steps[0].backups[0]: unknown link 'Y'"),
        (Shift(5, from_region="US-East", to_link="Z"), "steps[0].to_link: unknown link 'Z'"),
    ],
)
def test_names_unknown_to_the_traffic_are_refused(step, needle) -> None:
    t = traffic([("E", "US-East", "CDN", "egress", constant(1.0, 10))])
    with pytest.raises(ScenarioError) as exc:
        whatif(t, Scenario([step], origin="s.toml"))
    assert needle in str(exc.value) and str(exc.value).startswith("s.toml: ")


def test_horizons_parse_or_fail_clearly() -> None:
    assert parse_horizon("12m") == 12 and parse_horizon("1y") == 12 and parse_horizon(18) == 18
    assert parse_horizon("2 years") == 24 and parse_horizon("6 months") == 6
    for bad in ("12x", "", "0m", "11y", True, "-3m"):
        with pytest.raises(ScenarioError, match="--horizon"):
            parse_horizon(bad)


def test_bad_capacities_are_refused() -> None:
    for cap in (0, -10, float("nan")):
        with pytest.raises(ScenarioError, match="capacity_gbps"):
            Link("x", "US-East", cap)


def test_window_replays_only_the_last_days_and_json_scenarios_work(tmp_path) -> None:
    vol = np.concatenate([constant(1.0), constant(3.0)])  # two weeks: 1 Gbps, then 3 Gbps
    t = traffic([("E", "US-East", "CDN", "egress", vol)])
    assert row(whatif(t, horizon=1).summary, "E", "out")["baseline_now_gbps"] == 3.0
    assert row(whatif(t, horizon=1, percentile=50).summary, "E", "out")["baseline_now_gbps"] == 1.0
    last = whatif(t, horizon=1, percentile=50, window="7d")
    assert row(last.summary, "E", "out")["baseline_now_gbps"] == 3.0
    assert last.settings["window_start"].startswith("2025-12-08")
    f = tmp_path / "s.json"
    f.write_text('{"steps": [{"op": "scale", "factor": 2, "start": 2}], "horizon": "3m"}')
    p = whatif(t, f).projection
    sc = p[(p.case == "scenario") & (p.link == "E") & (p.direction == "out")]
    assert list(sc.rate_gbps) == [3.0, 3.0, 6.0, 6.0]  # month 2 of the horizon on
    with pytest.raises(ScenarioError, match="window: '7x'"):
        whatif(t, window="7x")


def test_a_step_that_selects_nothing_is_reported() -> None:
    t = traffic([("E", "US-East", "CDN", "egress", constant(1.0, 10))])
    with pytest.warns(WhatIfWarning, match=r"t: steps\[0\]: scale selects no traffic"):
        r = whatif(t, Scenario([Scale(3, network_types=["Neocloud"])], origin="t"), horizon=1)
    assert any("selects no traffic" in w for w in r.warnings)


# --------------------------------------------------------------------------- dense series


def _groupby_oracle(df: pd.DataFrame) -> pd.Series:
    """Bytes per (link, region, network type, direction, bucket), by pandas' groupby."""
    b = ((df["bucket_start"] - df["bucket_start"].min()) // pd.Timedelta(seconds=B)).astype(int)
    keys = [df[c].astype(str) for c in ("link", "region", "network_type", "direction")]
    return df["bytes"].astype(float).groupby([*keys, b.rename("b")]).sum()


@pytest.mark.parametrize("labels", [3, 40, 50_000])
def test_dense_series_equal_a_groupby_oracle(labels) -> None:
    """Few labels (counted), many (sorted), and so many that the packed key must be renumbered
    before it overflows 64 bits: the same series as pandas' groupby, group for group."""
    rng = np.random.default_rng(labels)
    n = max(2_000, labels)
    names = np.array([f"x{i}" for i in range(labels)], dtype=object)
    df = pd.DataFrame(
        {
            "bucket_start": pd.Timestamp("2025-12-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 50, n) * B, unit="s"),
            "link": np.where(rng.random(n) < 0.2, None, names[rng.integers(0, labels, n)]),
            "region": names[rng.integers(0, labels, n)],
            "network_type": names[rng.integers(0, labels, n)],
            "direction": names[rng.integers(0, labels, n)],
            "bytes": rng.integers(1, 10**12, n).astype(np.uint64),
        }
    )
    t = traffic_from_frame(df, [], B, place=lambda r, nt, d: f"{r}/other")
    want = _groupby_oracle(df.assign(link=df["link"].fillna(df["region"] + "/other")))
    keys = list(t.groups.itertuples(index=False, name=None))
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    g, b = np.nonzero(t.series)
    index = [*(t.groups[c].to_numpy()[g] for c in t.groups.columns), b]
    got = pd.Series(t.series[g, b], index=pd.MultiIndex.from_arrays(index, names=want.index.names))
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_exact=True,
                                   check_names=False, check_index_type=False)  # fmt: skip
