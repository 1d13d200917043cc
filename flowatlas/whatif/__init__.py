"""Capacity planning on the cube: links with capacities, what-if scenarios, projections.

The question it answers: "if neocloud egress from US-East doubles and migration moves to
CA-East, which links run out, and when?". It reads cubes (never archives), as the report
and the server do. Pieces:

- :mod:`flowatlas.whatif.model`: links, capacities, the observed traffic as dense series;
- :mod:`flowatlas.whatif.scenarios`: the steps (scale, shift, add, grow, fail) and files;
- :mod:`flowatlas.whatif.projection`: percentile rates, utilisation, run-out per month;
- :mod:`flowatlas.whatif.cubes`: a cube's links and traffic (cached per cube).

``cube.whatif(scenario)`` and :func:`whatif` return a :class:`WhatIf` of pandas frames.
See docs/whatif.md.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from flowatlas.whatif.model import (
    Horizon,
    Link,
    ScenarioError,
    Traffic,
    nearest_rank,
    parse_horizon,
    parse_percentile,
    percentile_label,
    percentile_of,
    traffic_from_frame,
)
from flowatlas.whatif.projection import WhatIf, observed_rates, project
from flowatlas.whatif.scenarios import (
    Add,
    Fail,
    Grow,
    Scale,
    Scenario,
    Shift,
    apply_scenario,
    baseline_plan,
    check_threshold,
    load_scenario,
    scenario_from_dict,
)

if TYPE_CHECKING:
    from flowatlas.config import Config
    from flowatlas.engine.cube import Cube

DEFAULT_HORIZON = 12
DEFAULT_PERCENTILE = 95.0
DEFAULT_THRESHOLD = 80.0
#: the sampling interval the 95th-percentile convention assumes; coarser buckets average
#: peaks away
CONVENTION_SECONDS = 300
EXAMPLES = Path(__file__).parent / "examples"


class WhatIfWarning(UserWarning):
    """Something the reader of a projection must know (shown as one line by the CLI)."""


def example_scenario(name: str = "neocloud-migration") -> Path:
    """The path of a scenario shipped with flowatlas (``EXAMPLES/<name>.toml``)."""
    path = EXAMPLES / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in EXAMPLES.glob("*.toml")))
        raise ScenarioError(f"no example scenario {name!r} (shipped: {known})")
    return path


def _resolve(scenario: Scenario | str | Path | dict | None) -> Scenario:
    if scenario is None:
        return Scenario(name="baseline")
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, dict):
        return scenario_from_dict(scenario)
    return load_scenario(scenario)


def whatif(
    source: Cube | Traffic,
    scenario: Scenario | str | Path | dict | None = None,
    *,
    horizon: str | int | None = None,
    percentile: float | str | None = None,
    threshold: float | None = None,
    window: str | None = None,
    config: Config | str | os.PathLike[str] | None = None,
) -> WhatIf:
    """Project every link's utilisation under ``scenario`` and under the baseline.

    ``source`` is a cube (its links come from the configuration it was built with, or from
    ``config``) or a :class:`Traffic`. ``scenario`` is a :class:`Scenario`, a file path or
    plain data; None projects the baseline alone. ``horizon`` ('12m', '1y', or months),
    ``percentile`` (95, 99, 'max', 'mean') and ``threshold`` (percent) default to the
    scenario's settings, else 12 months, p95 and 80 %. ``window`` ('90d', 'all') limits the
    observed period replayed to its last days; fitted growth still uses all of it.
    """
    sc = _resolve(scenario)
    months = parse_horizon(
        horizon if horizon is not None else (sc.horizon or DEFAULT_HORIZON),
        "horizon" if horizon is not None or sc.horizon is None else f"{sc.origin}: horizon",
    )
    pct = parse_percentile(
        percentile if percentile is not None else (sc.percentile or DEFAULT_PERCENTILE),
        "percentile" if percentile is not None else f"{sc.origin}: percentile",
    )
    thr = check_threshold(
        float(threshold if threshold is not None else (sc.threshold or DEFAULT_THRESHOLD)),
        "threshold" if threshold is not None else f"{sc.origin}: threshold",
    )
    if isinstance(source, Traffic):
        if config is not None:
            raise ScenarioError("config: a Traffic carries its own links; config is for cubes")
        history = source
    else:
        from flowatlas.whatif.cubes import cube_traffic

        history = cube_traffic(source, config=config)
    traffic = history.window(parse_window(window))
    return run(sc, traffic, history, months=months, percentile=pct, threshold=thr)


def parse_window(window: str | None, where: str = "window") -> float | None:
    """'90d', '4w' or 'all' -> days (None for all)."""
    import re

    if window is None or str(window).strip().lower() == "all":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(d|w)\s*", str(window).lower())
    if not m or int(m.group(1)) == 0:
        raise ScenarioError(f"{where}: {window!r} is not a window like '90d', '4w' or 'all'")
    return int(m.group(1)) * (7 if m.group(2) == "w" else 1)


def run(
    scenario: Scenario,
    traffic: Traffic,
    history: Traffic | None = None,
    *,
    months: int = DEFAULT_HORIZON,
    percentile: float | str = DEFAULT_PERCENTILE,
    threshold: float = DEFAULT_THRESHOLD,
) -> WhatIf:
    """The projection of ``scenario`` over ``traffic`` (settings already parsed)."""
    import pandas as pd

    horizon = Horizon.after(traffic.end, months)
    notes: list[str] = []
    if traffic.bucket_seconds > CONVENTION_SECONDS:
        msg = (
            f"{traffic.origin}: buckets of {_duration(traffic.bucket_seconds)} average peaks "
            f"away: a {percentile_label(percentile)} of them understates the "
            f"{percentile_label(percentile)} of 5-minute rates (build the cube with "
            '[cube] bucket = "5m" for capacity planning; docs/whatif.md says by how much)'
        )
        notes.append(msg)
        warnings.warn(msg, WhatIfWarning, stacklevel=2)
    cache_key = ("baseline", percentile, months)
    cached = traffic._cache.get(cache_key)
    if cached is None:
        base = baseline_plan(traffic, horizon)
        from flowatlas.whatif.projection import link_rates

        cached = traffic._cache[cache_key] = (base, link_rates(base, percentile))
    base, base_rates = cached
    plan = apply_scenario(
        scenario, traffic, horizon, history=history or traffic, percentile=percentile
    )
    for w in plan.warnings:
        warnings.warn(w, WhatIfWarning, stacklevel=2)
    notes.extend(plan.warnings)
    projection, summary = project(
        base, plan, percentile=percentile, threshold=threshold, base_rates=base_rates
    )
    steps = pd.DataFrame(
        plan.report, columns=["step", "op", "what", "start", "bytes", "monthly_percent", "r2"]
    )
    obs_key = ("observed",)
    observed = traffic._cache.get(obs_key)
    if observed is None:
        observed = traffic._cache[obs_key] = observed_rates(base)
    settings = {
        "scenario": scenario.name,
        "description": scenario.description,
        "origin": scenario.origin,
        "percentile": percentile_label(percentile),
        "threshold_percent": threshold,
        "horizon_months": months,
        "first_month": horizon.label(1),
        "last_month": horizon.label(months),
        "window_start": traffic.start.isoformat(),
        "window_end": traffic.end.isoformat(),
        "bucket_seconds": traffic.bucket_seconds,
    }
    return WhatIf(projection, summary, steps, observed.copy(), notes, settings)


def _duration(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % n == 0:
            return f"{seconds // n} {unit}"
    return f"{seconds} s"


__all__ = [
    "Add",
    "Fail",
    "Grow",
    "Horizon",
    "Link",
    "Scale",
    "Scenario",
    "ScenarioError",
    "Shift",
    "Traffic",
    "WhatIf",
    "WhatIfWarning",
    "apply_scenario",
    "example_scenario",
    "load_scenario",
    "nearest_rank",
    "parse_horizon",
    "parse_percentile",
    "percentile_of",
    "run",
    "scenario_from_dict",
    "traffic_from_frame",
    "whatif",
]
