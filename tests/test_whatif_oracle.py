"""The engine against a naive oracle: every month materialised, step by step, then summed.

The engine never materialises a month: it keeps a weight and a month shape per group and
sums per link side and shape. The oracle here does the obvious thing instead: for each month
end it copies every series, applies the steps in order to the arrays (a step starting later
is skipped before its month; growth multiplies by (1 + g) to the months since its start),
sums per link side and bucket, and sorts for the nearest rank. Placement of moved or added
traffic uses the rule of docs/whatif.md: in proportion to the bytes each link carries with
the steps before at full effect (their start months and growth aside).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_whatif import (
    FAILURES,
    LINKS,
    REGIONS,
    SHIFTS_BY_LINK,
    SHIFTS_BY_REGION,
    TYPES,
    random_traffic,
)

from flowatlas.whatif import Add, Fail, Grow, Scale, Scenario, Shift, whatif
from flowatlas.whatif.model import SIDE, Horizon

LINK = {lk.name: lk for lk in LINKS}


def materialise(traffic, steps, month: int, full: bool, horizon: Horizon):
    """[(series, link, region, type, direction)] after the steps, at the end of ``month``
    (``full``: every step at full effect, no growth: the state placement reads)."""
    g = traffic.groups
    rows = [
        [
            traffic.series[i].copy(),
            g["link"][i],
            g["region"][i],
            g["network_type"][i],
            g["direction"][i],
        ]
        for i in range(len(g))
    ]
    for i, step in enumerate(steps):
        first = 0 if step.start is None else horizon.month_index(step.start, "start")
        active = full or month >= first
        if isinstance(step, Grow):
            if not full:
                months = max(0, month - max(first - 1, 0))
                for r in rows:
                    if selected(r, step):
                        r[0] = r[0] * (1 + step.monthly_percent / 100) ** months
            continue
        if not active:
            continue
        if isinstance(step, Scale):
            for r in rows:
                if selected(r, step):
                    r[0] = r[0] * step.factor
        elif isinstance(step, Shift):
            src = [
                r
                for r in rows
                if selected(r, step)
                and (r[2] == step.from_region if step.from_region else r[1] == step.from_link)
            ]
            placed = state_for_placement(traffic, steps[:i], horizon)
            new = []
            for r in src:
                moved = r[0] * (step.share / 100)
                for link, region, frac in targets(placed, step.to_region, step.to_link, r):
                    new.append([moved * frac, link, region, r[3], r[4]])
                r[0] = r[0] - moved
            rows += new
        elif isinstance(step, Add):
            from flowatlas.whatif.scenarios import workload_series

            series = workload_series(step, traffic)
            probe = [None, None, step.region, step.network_type, step.direction]
            placed = state_for_placement(traffic, steps[:i], horizon)
            for link, region, frac in targets(placed, step.region, step.link, probe):
                rows.append([series * frac, link, region, step.network_type, step.direction])
        elif isinstance(step, Fail):
            caps = [LINK[b].capacity_gbps for b in step.backups]
            shares = [c / sum(caps) for c in caps]
            new = []
            for r in rows:
                if r[1] == step.link:
                    for b, s in zip(step.backups, shares, strict=True):
                        new.append([r[0] * s, b, LINK[b].region, r[3], r[4]])
                    r[0] = r[0] * 0
            rows += new
    return rows


def state_for_placement(traffic, steps, horizon):
    return materialise(traffic, steps, 0, True, horizon)


def targets(placed, region, link, r):
    """(link, region, fraction) where traffic like ``r`` lands in ``region`` or on ``link``.

    (Shifted traffic comes from another region, so it is never among ``placed``'s rows of
    the destination.)"""
    if link is not None:
        return [(link, LINK[link].region, 1.0)]
    carried: dict[str, float] = {}
    for p in placed:
        if p[2] == region and p[3] == r[3] and p[4] == r[4] and p[0].sum() > 0:
            carried[p[1]] = carried.get(p[1], 0.0) + float(p[0].sum())
    total = sum(carried.values())
    if total > 0:
        return [(lk, region, b / total) for lk, b in sorted(carried.items())]
    return [(f"{region}/other", region, 1.0)]


def selected(r, step) -> bool:
    return (
        (not getattr(step, "regions", ()) or r[2] in step.regions)
        and (not step.network_types or r[3] in step.network_types)
        and (not step.directions or r[4] in step.directions)
        and (not getattr(step, "links", ()) or r[1] in step.links)
    )


def oracle_rates(traffic, steps, months: int, pct: float):
    horizon = Horizon.after(traffic.end, months)
    out = {}
    for m in range(months + 1):
        per: dict[tuple[str, str], np.ndarray] = {}
        for s, link, _, _, d in materialise(traffic, steps, m, False, horizon):
            lk = LINK.get(link)
            side = "both" if lk is not None and lk.capacity_mode == "shared" else SIDE[d]
            per[(link, side)] = per.get((link, side), 0) + s
        for key, s in per.items():
            srt = np.sort(np.asarray(s, dtype=float))
            out[(key, m)] = (
                srt[math.ceil(pct / 100 * len(srt)) - 1] * 8 / traffic.bucket_seconds / 1e9
            )
    return out


_start = st.one_of(st.none(), st.sampled_from(["2026-02", "2026-03"]))
_steps = st.one_of(
    st.builds(
        lambda f, nt, s: Scale(f, network_types=[nt], start=s),
        st.floats(0, 4),
        st.sampled_from(TYPES),
        _start,
    ),
    st.builds(
        lambda g, r, s: Grow(g, regions=[r], start=s),
        st.floats(-20, 50),
        st.sampled_from(REGIONS),
        _start,
    ),
    SHIFTS_BY_REGION,
    SHIFTS_BY_LINK,
    st.builds(
        lambda rate, r, nt, d: Add(rate, region=r, network_type=nt, direction=d, hours="8-20"),
        st.floats(0.1, 50),
        st.sampled_from(REGIONS),
        st.sampled_from(TYPES),
        st.sampled_from(["ingress", "egress"]),
    ),
    FAILURES,
)


@given(random_traffic(), st.lists(_steps, max_size=5), st.sampled_from([95.0, 50.0, 100.0]))
@settings(max_examples=80, deadline=None)
@pytest.mark.filterwarnings("ignore::flowatlas.whatif.WhatIfWarning")
def test_engine_matches_the_naive_oracle_month_by_month(traffic, steps, pct) -> None:
    months = 4
    r = whatif(traffic, Scenario(steps), horizon=months, percentile=pct)
    expected = oracle_rates(traffic, steps, months, pct)
    p = r.projection[r.projection["case"] == "scenario"]
    got = {((a, b), t): v for a, b, t, v in zip(p.link, p.direction, p.t, p.rate_gbps, strict=True)}
    for key, value in expected.items():
        assert got.get(key, 0.0) == pytest.approx(value, rel=1e-9, abs=1e-9), key
    for key, value in got.items():
        if key not in expected:
            assert value == 0.0, key
