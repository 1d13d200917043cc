"""What a page shows (cube, filters, statistic, scale, tab, selected cell, the what-if tab's
scenario and sliders) and its URL form.

The page's query string carries the whole state, so a view can be shared as a link. Parsing
never fails: a malformed or unknown argument is dropped with a message the page shows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from flowatlas.viz.query import RESOLUTIONS, STATS, Filters

SCALES = ("log", "linear")
LIST_SEP = ","
CELL_SEP = "|"
PAIR_SEP = ":"
#: the what-if tab's choices that a URL may name: the scenario picked when none is, the
#: statistic of bucket rates ("" = the scenario's own) and the growth sliders' range
BASELINE = "baseline"
PERCENTILES = ("", "95", "99", "max", "mean")
GROWTH_RANGE = (-5.0, 20.0)


@dataclass
class WhatIfState:
    """The what-if tab's choices: the scenario, the growth sliders not at zero (percent a
    month per network type and per region), the statistic and the link sides drawn."""

    scenario: str = BASELINE
    grow_types: dict[str, float] = field(default_factory=dict)
    grow_regions: dict[str, float] = field(default_factory=dict)
    percentile: str = ""
    links: tuple[str, ...] = ()


@dataclass
class State:
    """One page's choices. ``cell`` is (region or None for a whole type, network type)."""

    cube: str
    filters: Filters = field(default_factory=Filters)
    stat: str = "mean"
    resolution: str = "day"
    scale: str = "log"
    tab: str = "overview"
    cell: tuple[str | None, str] | None = None
    whatif: WhatIfState = field(default_factory=WhatIfState)


@dataclass(frozen=True)
class Choices:
    """The values a URL may name (what the served cubes hold)."""

    cubes: tuple[str, ...]
    regions: tuple[str, ...]
    directions: tuple[str, ...]
    types: tuple[str, ...]
    tabs: tuple[str, ...]
    scenarios: tuple[str, ...] = (BASELINE,)


def _text(raw: list[bytes] | list[str]) -> str:
    v = raw[-1] if raw else b""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def parse_args(args: dict, choices: Choices) -> tuple[State, list[str]]:
    """A state from a request's query arguments, and one message per argument ignored."""
    state = State(cube=choices.cubes[0])
    messages: list[str] = []
    f: dict = {}

    def bad(key: str, value: str, why: str) -> None:
        shown = value if len(value) <= 60 else value[:57] + "..."
        messages.append(f"ignored URL argument {key}={shown!r}: {why}")

    def listed(key: str, value: str, allowed: tuple) -> tuple | None:
        items = [v for v in value.split(LIST_SEP) if v]
        unknown = [v for v in items if v not in allowed]
        if unknown or not items:
            bad(key, value, f"expected a comma-separated list of {', '.join(map(str, allowed))}")
            return None
        return tuple(items)

    enums = {
        "stat": ("stat", STATS),
        "res": ("resolution", RESOLUTIONS),
        "scale": ("scale", SCALES),
        "tab": ("tab", choices.tabs),
    }
    for key in sorted(args):
        value = _text(args[key])
        if key == "cube":
            if value in choices.cubes:
                state.cube = value
            else:
                bad(key, value, f"not one of the served cubes ({', '.join(choices.cubes)})")
        elif key in ("start", "end"):
            try:
                f[key] = _date(value)
            except ValueError:
                bad(key, value, "expected a day as YYYY-MM-DD")
        elif key == "regions":
            if (v := listed(key, value, choices.regions)) is not None:
                f["regions"] = v
        elif key == "directions":
            if (v := listed(key, value, choices.directions)) is not None:
                f["directions"] = v
        elif key == "types":
            if (v := listed(key, value, choices.types)) is not None:
                f["types"] = v
        elif key == "ip":
            if value in ("4", "6"):
                f["ip_versions"] = (int(value),)
            elif value != "all":
                bad(key, value, "expected 4, 6 or all")
        elif key in enums:
            attr, allowed = enums[key]
            if value in allowed:
                setattr(state, attr, value)
            else:
                bad(key, value, f"expected one of {', '.join(allowed)}")
        elif key == "scenario":
            if value in choices.scenarios:
                state.whatif.scenario = value
            else:
                bad(key, value, f"not one of the scenarios ({', '.join(choices.scenarios)})")
        elif key in ("grow_types", "grow_regions"):
            allowed = choices.types if key == "grow_types" else choices.regions
            if (v := _growth(value, allowed)) is not None:
                setattr(state.whatif, key, v)
            else:
                bad(key, value, f"expected NAME{PAIR_SEP}PERCENT,... with names of "
                    f"{', '.join(allowed)} and percents from {GROWTH_RANGE[0]:g} to "
                    f"{GROWTH_RANGE[1]:g}")  # fmt: skip
        elif key == "pct":
            if value in PERCENTILES[1:]:
                state.whatif.percentile = value
            else:
                bad(key, value, f"expected one of {', '.join(PERCENTILES[1:])}")
        elif key == "links":
            state.whatif.links = tuple(v for v in value.split(LIST_SEP) if v)
        elif key == "cell":
            region, _, t = value.rpartition(CELL_SEP)
            if t in choices.types and (not region or region in choices.regions):
                state.cell = (region or None, t)
            else:
                bad(key, value, "expected NETWORK_TYPE or REGION|NETWORK_TYPE of this cube")
        elif key != "bokeh-autoload-element" and not key.startswith("bokeh-"):
            messages.append(f"ignored unknown URL argument {key!r}")
    if "start" in f and "end" in f and f["start"] > f["end"]:
        bad("end", f["end"].isoformat(), "before start")
        del f["end"]
    state.filters = replace(state.filters, **f)
    return state, messages


def _growth(value: str, allowed: tuple[str, ...]) -> dict[str, float] | None:
    """'Neocloud:2,CDN:-1.5' -> {'Neocloud': 2.0, 'CDN': -1.5}; None if any item is bad."""
    out: dict[str, float] = {}
    for item in (v for v in value.split(LIST_SEP) if v):
        name, _, number = item.rpartition(PAIR_SEP)
        try:
            pct = float(number)
        except ValueError:
            return None
        if name not in allowed or not GROWTH_RANGE[0] <= pct <= GROWTH_RANGE[1]:
            return None
        out[name] = pct
    return out or None


def encode(state: State, default_cube: str) -> str:
    """The query string of ``state`` (only what differs from the defaults)."""
    f = state.filters
    q: list[tuple[str, str]] = []
    if state.cube != default_cube:
        q.append(("cube", state.cube))
    if f.start is not None:
        q.append(("start", f.start.isoformat()))
    if f.end is not None:
        q.append(("end", f.end.isoformat()))
    for key, values in (("regions", f.regions), ("directions", f.directions), ("types", f.types)):
        if values:
            q.append((key, LIST_SEP.join(values)))
    if len(f.ip_versions) == 1:
        q.append(("ip", str(f.ip_versions[0])))
    for key, value, default in (
        ("stat", state.stat, "mean"),
        ("res", state.resolution, "day"),
        ("scale", state.scale, "log"),
        ("tab", state.tab, "overview"),
    ):
        if value != default:
            q.append((key, value))
    if state.cell is not None:
        region, t = state.cell
        q.append(("cell", f"{region}{CELL_SEP}{t}" if region else t))
    w = state.whatif
    if w.scenario != BASELINE:
        q.append(("scenario", w.scenario))
    for key, growth in (("grow_types", w.grow_types), ("grow_regions", w.grow_regions)):
        items = [f"{name}{PAIR_SEP}{pct:g}" for name, pct in growth.items() if pct]
        if items:
            q.append((key, LIST_SEP.join(items)))
    if w.percentile:
        q.append(("pct", w.percentile))
    if w.links:
        q.append(("links", LIST_SEP.join(w.links)))
    return urlencode(q, safe=LIST_SEP + CELL_SEP + PAIR_SEP + "-")
