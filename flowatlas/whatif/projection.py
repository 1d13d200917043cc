"""Projections: each link's percentile rate, utilisation and headroom month by month, the
first month over a threshold and the run-out date, for the baseline and a scenario.

Month m of the horizon is evaluated at its end (t = m, growth of m months) and at its start
(t = m - 1, with the steps that start in month m already acting), so a step that begins in
a month and growth within it both place the run-out inside the right month. Within a month
utilisation moves geometrically (compound growth), so for pure growth the run-out date is
the closed-form answer ln(1/u0) / ln(1 + g) months after now.

Work per link: the groups on it are summed into one series per distinct shape (usually
one); a link with one shape scales a single percentile by its factors (exact, because the
nearest-rank percentile commutes with a positive factor); otherwise each distinct column of
factors is summed and partitioned once, all months of the link in one NumPy call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from flowatlas.whatif.model import (
    SHARED,
    SIDE,
    Horizon,
    percentile_label,
    percentiles_of,
)
from flowatlas.whatif.scenarios import Plan, shape_values

if TYPE_CHECKING:
    import pandas as pd

CASES = ("baseline", "scenario")


def evaluation_points(months: int) -> tuple[np.ndarray, np.ndarray]:
    """(month index, growth exponent) of the points evaluated: the ends of months 0..H,
    then the starts of months 1..H."""
    ends = np.arange(months + 1, dtype=np.float64)
    starts = np.arange(1, months + 1, dtype=np.float64)
    return np.concatenate([ends, starts]), np.concatenate([ends, starts - 1])


@dataclass
class LinkRates:
    """The percentile rate (bits/s) of every link side at every evaluation point."""

    keys: list[tuple[str, str]]  # (link, side): side 'in', 'out' or 'both'
    rates: np.ndarray  # (keys, points) bits/s


def link_rates(plan: Plan, percentile: float | str) -> LinkRates:
    """Sum the plan's groups per link side and shape, and take the percentile at each point."""
    return link_rates_many(plan, (percentile,))[0]


def link_rates_many(plan: Plan, percentiles: Sequence[float | str]) -> list[LinkRates]:
    """:func:`link_rates` for each of ``percentiles``, summing the groups once for all."""
    traffic = plan.traffic
    links = traffic.links
    month, exponent = evaluation_points(plan.horizon.months)
    per_key: dict[tuple[str, str], dict[tuple, tuple[list[int], list[float]]]] = {}
    for name in sorted(links):
        for side in links[name].sides:
            per_key[(name, side)] = {}
    for g in plan.groups:
        if g.weight <= 0:
            continue
        lk = links[g.link]
        side = "both" if lk.capacity_mode == SHARED else SIDE[g.direction]
        idx, w = per_key[(g.link, side)].setdefault(g.shape, ([], []))
        idx.append(g.src)
        w.append(g.weight)
    keys = list(per_key)
    rates = np.zeros((len(percentiles), len(keys), month.size), dtype=np.float64)
    for r, key in enumerate(keys):
        classes = per_key[key]
        if not classes:
            continue
        shapes = list(classes)
        series = [_combine(plan, *classes[s]) for s in shapes]
        if len(shapes) == 1:
            factor = shape_values(shapes[0], month, exponent)
            for i, base in enumerate(percentiles_of(series[0], percentiles)):
                rates[i, r] = factor * float(base)
            continue
        factors = np.stack([shape_values(s, month, exponent) for s in shapes])  # K x P
        cols, inverse = np.unique(factors.T, axis=0, return_inverse=True)
        total = cols @ np.stack(series)  # distinct columns x buckets
        for i, values in enumerate(percentiles_of(total, percentiles, axis=1)):
            rates[i, r] = values[inverse.ravel()]
    return [
        LinkRates(keys, rates[i] * 8.0 / traffic.bucket_seconds) for i in range(len(percentiles))
    ]


def _combine(plan: Plan, srcs: list[int], weights: list[float]) -> np.ndarray:
    """The weighted sum of the groups' series (observed rows in one gather and product)."""
    src = np.asarray(srcs)
    w = np.asarray(weights, dtype=np.float64)
    observed = src >= 0
    out = w[observed] @ plan.traffic.series[src[observed]] if observed.any() else 0.0
    for s, wk in zip(src[~observed], w[~observed], strict=True):
        out = out + wk * plan.extra[-1 - s]
    return np.asarray(out, dtype=np.float64)


def crossing(u_end: np.ndarray, u_start: np.ndarray, level: float) -> tuple[float, int]:
    """When utilisation first reaches ``level``: (months from now, the month it happens
    in; 0 = now), or (NaN, -1) if it does not within the horizon.

    ``u_end[m]`` is utilisation at the end of month m (m = 0: now), ``u_start[m - 1]`` at
    its start. Inside a month it moves geometrically from start to end.
    """
    if not np.isfinite(u_end[0]):
        return math.nan, -1
    if u_end[0] >= level:
        return 0.0, 0
    over = np.flatnonzero(u_end[1:] >= level)
    if over.size == 0:
        return math.nan, -1
    m = int(over[0]) + 1
    a, b = float(u_start[m - 1]), float(u_end[m])
    if a >= level:
        return float(m - 1), m
    if a > 0 and b > a:
        return min(m - 1 + math.log(level / a) / math.log(b / a), float(m)), m
    return m - 1 + (level - a) / (b - a), m


@dataclass
class WhatIf:
    """A what-if answer: the projection, the run-out table and what each step did.

    - ``projection``: one row per case (baseline, scenario), link side and month (t = 0 is
      now): rate_gbps (the percentile), utilisation (0-1), headroom_gbps;
    - ``summary``: one row per link side, baseline and scenario side by side (rate and
      utilisation now and at the horizon's end, the first month over the threshold, the
      run-out date), ranked by how soon the scenario runs the link out;
    - ``steps``: each step, its bytes affected (over the window at full effect) and, for
      fitted growth, the rate and R²;
    - ``observed``: each link side's rate over the window: mean, p95, p99 and max (Gbps);
    - ``warnings``: what the reader must know (coarse buckets, steps that change nothing).
    """

    projection: pd.DataFrame
    summary: pd.DataFrame
    steps: pd.DataFrame
    observed: pd.DataFrame
    warnings: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (timestamps as ISO text, NaN as null)."""
        return {
            "settings": self.settings,
            "warnings": self.warnings,
            "steps": _records(self.steps),
            "summary": _records(self.summary),
            "observed": _records(self.observed),
            "projection": _records(self.projection),
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    import pandas as pd

    out = []
    for row in df.to_dict(orient="records"):
        clean = {}
        for k, v in row.items():
            if isinstance(v, pd.Timestamp):
                v = v.isoformat()
            elif v is pd.NaT or (isinstance(v, float) and not math.isfinite(v)):
                v = None
            elif isinstance(v, np.integer | np.floating | np.bool_):
                v = v.item()
            clean[k] = v
        out.append(clean)
    return out


def project(
    baseline: Plan,
    scenario: Plan,
    *,
    percentile: float | str,
    threshold: float,
    base_rates: LinkRates | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The projection (long) and summary (wide, ranked) frames of two plans."""
    import pandas as pd

    horizon: Horizon = scenario.horizon
    h = horizon.months
    links = scenario.traffic.links
    by_case = {
        "baseline": base_rates or link_rates(baseline, percentile),
        "scenario": link_rates(scenario, percentile),
    }
    keys = by_case["scenario"].keys
    labels = horizon.labels()
    starts = [pd.NaT, *(horizon.month_start(m) for m in range(1, h + 1))]
    rows: dict[str, list] = {
        k: []
        for k in (
            "case",
            "link",
            "region",
            "direction",
            "capacity_gbps",
            "t",
            "month",
            "month_start",
            "rate_gbps",
            "utilisation",
            "headroom_gbps",
        )
    }
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    thr = threshold / 100.0
    for case in CASES:
        lr = by_case[case]
        index = {k: i for i, k in enumerate(lr.keys)}
        for key in keys:
            link = links[key[0]]
            cap = link.capacity_gbps
            gbps = lr.rates[index[key]] / 1e9 if key in index else np.zeros(2 * h + 1)
            util = gbps / cap if cap else np.full(gbps.shape, np.nan)
            u_end, u_start = util[: h + 1], util[h + 1 :]
            for col, values in (
                ("case", [case] * (h + 1)),
                ("link", [key[0]] * (h + 1)),
                ("region", [link.region] * (h + 1)),
                ("direction", [key[1]] * (h + 1)),
                ("capacity_gbps", [cap if cap else math.nan] * (h + 1)),
                ("t", list(range(h + 1))),
                ("month", labels),
                ("month_start", starts),
                ("rate_gbps", gbps[: h + 1].tolist()),
                ("utilisation", u_end.tolist()),
                ("headroom_gbps", ((cap - gbps[: h + 1]) if cap else u_end).tolist()),
            ):
                rows[col].extend(values)
            s = summary.setdefault(
                key,
                {
                    "link": key[0],
                    "region": link.region,
                    "direction": key[1],
                    "capacity_gbps": cap if cap else math.nan,
                },
            )
            _, m_over = crossing(u_end, u_start, thr)
            t_out, _ = crossing(u_end, u_start, 1.0)
            s[f"{case}_now_gbps"] = float(gbps[0])
            s[f"{case}_util_now"] = float(u_end[0])
            s[f"{case}_end_gbps"] = float(gbps[h])
            s[f"{case}_util_end"] = float(u_end[h])
            s[f"{case}_over_threshold"] = None if m_over < 0 else labels[m_over]
            s[f"{case}_runout_months"] = t_out
            s[f"{case}_runout"] = pd.NaT if math.isnan(t_out) else horizon.date(t_out)
    projection = pd.DataFrame(rows)
    table = pd.DataFrame(list(summary.values()))
    if len(table):
        table = table.sort_values(
            ["scenario_runout_months", "scenario_util_end", "link", "direction"],
            ascending=[True, False, True, True],
            na_position="last",
            kind="stable",
        ).reset_index(drop=True)
        table.insert(0, "rank", np.arange(1, len(table) + 1))
    return projection, table


def observed_rates(plan: Plan) -> pd.DataFrame:
    """Each link side's observed rate over the window: mean, p95, p99 and max (Gbps)."""
    import pandas as pd

    stats = ("mean", 95.0, 99.0, 100.0)
    by_stat = link_rates_many(plan, stats)
    cols = {percentile_label(p): lr.rates[:, 0] / 1e9 for p, lr in zip(stats, by_stat, strict=True)}
    lr = by_stat[-1]
    links = plan.traffic.links
    keys = lr.keys
    df = pd.DataFrame(
        {
            "link": [k[0] for k in keys],
            "region": [links[k[0]].region for k in keys],
            "direction": [k[1] for k in keys],
            "capacity_gbps": [links[k[0]].capacity_gbps or math.nan for k in keys],
            **{f"{name}_gbps": v for name, v in cols.items()},
        }
    )
    return df
