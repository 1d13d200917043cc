"""What-if scenarios: steps that change the observed traffic, applied in the order written.

Five kinds of step (docs/whatif.md has the file format and the rules):

- ``Scale``: multiply a selection's traffic by a factor;
- ``Shift``: move a share of a selection's traffic from one region or link to another;
- ``Add``: a new workload (a rate, on some hours of some days) in a region;
- ``Grow``: compound monthly growth of a selection, at a stated rate or at the rate fitted
  to the selection's own history (a log-linear fit of its monthly percentile);
- ``Fail``: a link fails and its traffic moves to named backup links.

A scenario is a TOML or JSON file, or built in Python from these objects. Applying it never
touches the observed series: each group of traffic carries a weight and a *shape* (how its
weight changes month by month), and the projection sums weighted series per link.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flowatlas.config import _check_keys  # one wording for unknown keys everywhere
from flowatlas.vocab import DIRECTIONS
from flowatlas.whatif.model import (
    Horizon,
    ScenarioError,
    Traffic,
    parse_horizon,
    parse_percentile,
    percentile_of,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SETS = {"all": tuple(range(7)), "weekdays": tuple(range(5)), "weekends": (5, 6)}
#: fitted growth uses the calendar months the history covers at least this much of
FIT_MIN_COVERAGE = 0.5


# --------------------------------------------------------------------------- steps


def _tuple(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str | int | float):
        return (value,)
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class Step:
    """What every step has: an optional first month and a note for the reader."""

    start: str | int | None = None  # 'YYYY-MM' (or a month number): the first month it acts
    note: str = ""
    op: ClassVar[str] = ""

    def describe(self) -> str:
        """One line saying what the step does."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Selected(Step):
    """A step acting on a selection: every listed key must match (empty = any value)."""

    regions: Sequence[str] = ()
    network_types: Sequence[str] = ()
    directions: Sequence[str] = ()
    links: Sequence[str] = ()

    def __post_init__(self) -> None:
        for k in ("regions", "network_types", "directions", "links"):
            object.__setattr__(self, k, _tuple(getattr(self, k)))

    def selection_text(self) -> str:
        parts = [
            f"{k}={','.join(map(str, getattr(self, k)))}"
            for k in ("regions", "network_types", "directions", "links")
            if getattr(self, k)
        ]
        return " ".join(parts) or "all traffic"


@dataclass(frozen=True)
class Scale(Selected):
    """Multiply the selection's traffic by ``factor`` (0 removes it)."""

    factor: float
    op: ClassVar[str] = "scale"

    def describe(self) -> str:
        return f"scale x{self.factor:g}: {self.selection_text()}"


@dataclass(frozen=True)
class Shift(Selected):
    """Move ``share`` percent of the selection's traffic from a region or link to another.

    Moved traffic keeps its network type, direction and time profile. Sent to a region, it
    lands on the links that already carry that region's traffic of the same network type
    and direction, in proportion to their bytes (or, if none do, where the configuration
    places such traffic); sent to a link, on that link.
    """

    share: float
    from_region: str | None = None
    from_link: str | None = None
    to_region: str | None = None
    to_link: str | None = None
    op: ClassVar[str] = "shift"

    def describe(self) -> str:
        src = self.from_region or self.from_link
        dst = self.to_region or self.to_link
        return f"shift {self.share:g}% {src} -> {dst}: {self.selection_text()}"


@dataclass(frozen=True)
class Add(Step):
    """A new workload: ``rate_gbps`` during ``hours`` (UTC + ``utc_offset``) on ``days``."""

    rate_gbps: float
    region: str
    network_type: str
    direction: str
    hours: Sequence[int] | str | None = None  # None: all day
    days: Sequence[str] | str | None = None  # None: every day
    utc_offset: float = 0.0
    link: str | None = None
    op: ClassVar[str] = "add"

    def describe(self) -> str:
        when = []
        if self.hours is not None:
            when.append(f"hours {_text(self.hours)}")
        if self.days is not None:
            when.append(f"days {_text(self.days)}")
        at = f" on {self.link}" if self.link else ""
        return (
            f"add {self.rate_gbps:g} Gbps {self.region} {self.network_type} "
            f"{self.direction}{at}{' (' + ', '.join(when) + ')' if when else ''}"
        )


@dataclass(frozen=True)
class Grow(Selected):
    """Compound monthly growth: ``monthly_percent`` a month, or the fitted rate if ``fitted``."""

    monthly_percent: float | None = None
    fitted: bool = False
    op: ClassVar[str] = "grow"

    def describe(self) -> str:
        rate = "fitted" if self.fitted else f"{self.monthly_percent:g}%"
        return f"grow {rate}/month: {self.selection_text()}"


@dataclass(frozen=True)
class Fail(Step):
    """``link`` fails; its traffic moves to ``backups`` (``shares`` percent; default: in
    proportion to the backups' capacities, or evenly where a backup has none)."""

    link: str
    backups: Sequence[str] = ()
    shares: Sequence[float] | None = None
    op: ClassVar[str] = "fail"

    def __post_init__(self) -> None:
        object.__setattr__(self, "backups", _tuple(self.backups))
        if self.shares is not None:
            object.__setattr__(self, "shares", _tuple(self.shares))

    def describe(self) -> str:
        return f"fail {self.link} -> {', '.join(self.backups)}"


STEP_TYPES: dict[str, type[Step]] = {s.op: s for s in (Scale, Shift, Add, Grow, Fail)}


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ",".join(map(str, v))


@dataclass(frozen=True)
class Scenario:
    """An ordered list of steps, with optional defaults for the projection's settings."""

    steps: Sequence[Step] = ()
    name: str = ""
    description: str = ""
    horizon: str | int | None = None
    percentile: float | str | None = None
    threshold: float | None = None  # percent of capacity
    origin: str = "<python>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))


# --------------------------------------------------------------------------- reading

_TOP_KEYS = {"name", "description", "horizon", "percentile", "threshold", "steps"}


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file (.toml, or .json); every error names the file and the key."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{p}: scenario file not found") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{p}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise ScenarioError(f"{p}: invalid {kind}: {exc}") from None
    return scenario_from_dict(data, origin=str(p))


def _expect(value: Any, types: tuple[type, ...], where: str, what: str) -> Any:
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise ScenarioError(f"{where}: expected {what}, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    return float(_expect(value, (int, float), where, "a number"))


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    _expect(value, (list,), where, "a list of names")
    for i, v in enumerate(value):
        _expect(v, (str,), f"{where}[{i}]", "a name")
    return tuple(value)


def scenario_from_dict(data: Mapping[str, Any], *, origin: str = "<dict>") -> Scenario:
    """Validate plain data (parsed TOML or JSON) into a :class:`Scenario`."""
    _expect(data, (dict,), origin, "a table of scenario settings")
    _check_keys(data, _TOP_KEYS, origin)
    steps_d = _expect(data.get("steps", []), (list,), f"{origin}: steps", "a list of steps")
    steps = [_step_from_dict(d, f"{origin}: steps[{i}]") for i, d in enumerate(steps_d)]
    horizon = data.get("horizon")
    if horizon is not None:
        parse_horizon(horizon, f"{origin}: horizon")
    pct = data.get("percentile")
    if pct is not None:
        parse_percentile(pct, f"{origin}: percentile")
    thr = data.get("threshold")
    if thr is not None:
        check_threshold(_number(thr, f"{origin}: threshold"), f"{origin}: threshold")
    return Scenario(
        steps=steps,
        name=_expect(data.get("name", ""), (str,), f"{origin}: name", "text"),
        description=_expect(data.get("description", ""), (str,), f"{origin}: description", "text"),
        horizon=horizon,
        percentile=pct,
        threshold=thr,
        origin=origin,
    )


def check_threshold(value: float, where: str) -> float:
    """A utilisation threshold in percent: above 0, at most 100."""
    if not 0 < value <= 100:
        raise ScenarioError(f"{where}: {value!r} is not a percentage in (0, 100]")
    return value


_COMMON = {"op", "start", "note"}
_SELECT = {"regions", "network_types", "directions", "links"}
_STEP_KEYS = {
    "scale": _COMMON | _SELECT | {"factor"},
    "shift": _COMMON
    | {"network_types", "directions", "share", "from_region", "from_link", "to_region", "to_link"},
    "add": _COMMON
    | {"rate_gbps", "region", "network_type", "direction", "hours", "days", "utc_offset", "link"},
    "grow": _COMMON | _SELECT | {"monthly_percent", "fitted"},
    "fail": _COMMON | {"link", "backups", "shares"},
}


def _step_from_dict(d: Any, where: str) -> Step:
    _expect(d, (dict,), where, "a table with an 'op' key")
    op = d.get("op")
    if op not in STEP_TYPES:
        raise ScenarioError(
            f"{where}.op: {op!r} is not one of {', '.join(repr(k) for k in STEP_TYPES)}"
        )
    _check_keys(d, _STEP_KEYS[op], where)
    kw: dict[str, Any] = {}
    for k, v in d.items():
        w = f"{where}.{k}"
        if k == "op":
            continue
        if k in _SELECT or k == "backups":
            kw[k] = _names(v, w)
        elif k in ("factor", "share", "rate_gbps", "monthly_percent", "utc_offset"):
            kw[k] = _number(v, w)
        elif k == "fitted":
            kw[k] = _expect(v, (bool,), w, "true or false")
        elif k == "shares":
            _expect(v, (list,), w, "a list of percentages")
            kw[k] = tuple(_number(x, f"{w}[{i}]") for i, x in enumerate(v))
        elif k == "hours":
            kw[k] = v if isinstance(v, str) else _expect(v, (list,), w, "hours like '9-17'")
        elif k == "days":
            kw[k] = v if isinstance(v, str) else _names(v, w)
        elif k == "start":
            kw[k] = _expect(v, (str, int), w, "a month like '2026-03'")
        else:  # names and notes
            kw[k] = _expect(v, (str,), w, "text")
    required = {
        "scale": ["factor"],
        "shift": ["share"],
        "add": ["rate_gbps", "region", "network_type", "direction"],
        "grow": [],
        "fail": ["link", "backups"],
    }[op]
    for k in required:
        if k not in kw:
            raise ScenarioError(f"{where}: missing key {k!r} (op = {op!r})")
    step = STEP_TYPES[op](**kw)
    check_step(step, where)
    return step


def check_step(step: Step, where: str) -> None:
    """The checks that need no traffic: values in range, keys that go together."""
    if isinstance(step, Scale):
        if not math.isfinite(step.factor) or step.factor < 0:
            raise ScenarioError(f"{where}.factor: {step.factor!r} is not a number >= 0")
    elif isinstance(step, Shift):
        if step.regions or step.links:
            raise ScenarioError(
                f"{where}: a shift selects its source with from_region or from_link, "
                "not regions or links"
            )
        _share(step.share, f"{where}.share")
        if (step.from_region is None) == (step.from_link is None):
            raise ScenarioError(f"{where}: give exactly one of from_region and from_link")
        if (step.to_region is None) == (step.to_link is None):
            raise ScenarioError(f"{where}: give exactly one of to_region and to_link")
        if step.from_region is not None and step.from_region == step.to_region:
            raise ScenarioError(f"{where}.to_region: the same region as from_region")
        if step.from_link is not None and step.from_link == step.to_link:
            raise ScenarioError(f"{where}.to_link: the same link as from_link")
    elif isinstance(step, Add):
        if not math.isfinite(step.rate_gbps) or step.rate_gbps <= 0:
            raise ScenarioError(f"{where}.rate_gbps: {step.rate_gbps!r} is not a rate > 0")
        if step.direction not in DIRECTIONS:
            raise ScenarioError(
                f"{where}.direction: {step.direction!r} is not one of {', '.join(DIRECTIONS)}"
            )
        parse_hours(step.hours, f"{where}.hours")
        parse_days(step.days, f"{where}.days")
        if not -12 <= step.utc_offset <= 14:
            raise ScenarioError(f"{where}.utc_offset: {step.utc_offset!r} is not -12 to 14 hours")
    elif isinstance(step, Grow):
        if step.fitted == (step.monthly_percent is not None):
            raise ScenarioError(f"{where}: give exactly one of monthly_percent and fitted = true")
        if step.monthly_percent is not None and not (
            math.isfinite(step.monthly_percent) and step.monthly_percent > -100
        ):
            raise ScenarioError(
                f"{where}.monthly_percent: {step.monthly_percent!r} is not a rate above -100"
            )
    elif isinstance(step, Fail):
        if not step.backups:
            raise ScenarioError(f"{where}.backups: name at least one backup link")
        if step.link in step.backups:
            raise ScenarioError(f"{where}.backups: {step.link!r} cannot back itself up")
        if len(set(step.backups)) != len(step.backups):
            raise ScenarioError(f"{where}.backups: a link is named twice")
        if step.shares is not None:
            if len(step.shares) != len(step.backups):
                raise ScenarioError(f"{where}.shares: one share per backup link")
            for i, s in enumerate(step.shares):
                _share(s, f"{where}.shares[{i}]")
            if not math.isclose(sum(step.shares), 100.0, abs_tol=1e-9):
                raise ScenarioError(f"{where}.shares: they add up to {sum(step.shares):g}, not 100")
    if isinstance(step, Selected):
        for i, d in enumerate(step.directions):
            if d not in DIRECTIONS:
                raise ScenarioError(
                    f"{where}.directions[{i}]: {d!r} is not one of {', '.join(DIRECTIONS)}"
                )


def _share(value: float, where: str) -> None:
    if not (math.isfinite(value) and 0 <= value <= 100):
        raise ScenarioError(f"{where}: {value!r} is not a percentage from 0 to 100")


def parse_hours(value: Any, where: str) -> np.ndarray:
    """Hours of the day -> 24 booleans. '9-17' is 09:00 to 17:00; '22-6' wraps; lists of
    hours (0-23) and comma-separated ranges work too; None is the whole day."""
    on = np.zeros(24, dtype=bool)
    if value is None:
        on[:] = True
        return on
    if isinstance(value, str):
        for part in value.split(","):
            m = re.fullmatch(r"\s*(\d{1,2})\s*-\s*(\d{1,2})\s*", part)
            if not m or int(m.group(1)) > 23 or int(m.group(2)) > 24:
                raise ScenarioError(f"{where}: {part.strip()!r} is not hours like '9-17'")
            a, b = int(m.group(1)), int(m.group(2))
            hours = range(a, b) if a < b else [*range(a, 24), *range(0, b)]
            on[list(hours)] = True
        return on
    for i, h in enumerate(value):
        if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h <= 23:
            raise ScenarioError(f"{where}[{i}]: {h!r} is not an hour from 0 to 23")
        on[h] = True
    if not on.any():
        raise ScenarioError(f"{where}: no hours")
    return on


def parse_days(value: Any, where: str) -> np.ndarray:
    """Days of the week -> 7 booleans (Monday first): 'mon-fri', 'sat,sun', 'weekdays',
    'weekends', 'all', or a list of day names; None is every day."""
    on = np.zeros(7, dtype=bool)
    if value is None:
        on[:] = True
        return on
    parts = value.split(",") if isinstance(value, str) else list(value)
    for part in parts:
        p = part.strip().lower()
        if p in _DAY_SETS:
            on[list(_DAY_SETS[p])] = True
            continue
        ends = [e.strip()[:3] for e in p.split("-")]
        if len(ends) > 2 or any(e not in DAY_NAMES for e in ends):
            raise ScenarioError(f"{where}: {part.strip()!r} is not days like 'mon-fri' or 'sat'")
        a, b = DAY_NAMES.index(ends[0]), DAY_NAMES.index(ends[-1])
        on[[d % 7 for d in range(a, b + 1 if a <= b else b + 8)]] = True
    return on


# --------------------------------------------------------------------------- applying

#: a token of a group's shape: (kind, first month, parameter, step index); see shape_values
Token = tuple[str, int, float, int]


@dataclass
class Group:
    """One slice of traffic as the scenario stands: a series, where it is, how much of it."""

    src: int  # row of Traffic.series, or -1 - k for the k-th added workload
    link: str
    region: str
    network_type: str
    direction: str
    weight: float = 1.0
    shape: tuple[Token, ...] = ()


@dataclass
class Plan:
    """A scenario applied to traffic: the groups it leaves, and what each step did."""

    traffic: Traffic
    horizon: Horizon
    groups: list[Group]
    extra: list[np.ndarray] = field(default_factory=list)
    report: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def series(self, src: int) -> np.ndarray:
        return self.traffic.series[src] if src >= 0 else self.extra[-1 - src]

    def total(self, g: Group) -> float:
        """A group's bytes over the window at full effect (weight x its series' sum)."""
        if g.src >= 0:
            totals = self.traffic._cache.get("totals")
            if totals is None:
                totals = self.traffic._cache["totals"] = self.traffic.series.sum(axis=1)
            return g.weight * float(totals[g.src])
        return g.weight * float(self.extra[-1 - g.src].sum())


def shape_values(shape: tuple[Token, ...], month: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """A shape's factor at each evaluation point (a month index, and a growth exponent).

    ``on``: 1 from the first month; ``off``: 1 - p from it; ``scale``: p from it, else 1;
    ``grow``: (1 + p) to the months of growth since the start of the first month.
    """
    out = np.ones(month.shape, dtype=np.float64)
    for kind, first, p, _ in shape:
        active = month >= first
        if kind == "on":
            out = out * active
        elif kind == "off":
            out = out * np.where(active, 1.0 - p, 1.0)
        elif kind == "scale":
            out = out * np.where(active, p, 1.0)
        else:  # grow
            out = out * (1.0 + p) ** np.maximum(0.0, exponent - max(first - 1, 0))
    return out


def baseline_plan(traffic: Traffic, horizon: Horizon) -> Plan:
    """The observed traffic replayed unchanged: one group per observed group."""
    g = traffic.groups
    rows = zip(g["link"], g["region"], g["network_type"], g["direction"], strict=True)
    return Plan(traffic, horizon, [Group(i, *r) for i, r in enumerate(rows)])


def apply_scenario(
    scenario: Scenario,
    traffic: Traffic,
    horizon: Horizon,
    *,
    history: Traffic | None = None,
    percentile: float | str = 95.0,
) -> Plan:
    """Apply the steps in order to the baseline; ``history`` (default: ``traffic``) is
    what fitted growth is fitted to, at the projection's ``percentile``."""
    plan = baseline_plan(traffic, horizon)
    for i, step in enumerate(scenario.steps):
        where = f"{scenario.origin}: steps[{i}]"
        check_step(step, where)
        _check_names(step, traffic, where)
        first = 0 if step.start is None else horizon.month_index(step.start, f"{where}.start")
        if first > horizon.months:
            plan.warnings.append(
                f"{where}: starts in {step.start}, after the horizon ends "
                f"({horizon.label(horizon.months)}); it changes nothing"
            )
        note = {"step": i + 1, "op": step.op, "what": step.describe(), "start": _first(plan, first)}
        note.update(_APPLY[step.op](plan, step, i, first, history or traffic, percentile, where))
        if step.op != "add" and note["bytes"] == 0:
            plan.warnings.append(f"{where}: {step.op} selects no traffic; it changes nothing")
        plan.report.append(note)
    return plan


def _first(plan: Plan, first: int) -> str:
    return "now" if first == 0 else plan.horizon.label(first)


def _check_names(step: Step, traffic: Traffic, where: str) -> None:
    def known(values, vocab, key, what):
        vocab = list(vocab)
        for j, v in enumerate(values):
            if v not in vocab:
                idx = f"[{j}]" if len(values) > 1 or key.endswith("s") else ""
                raise ScenarioError(
                    f"{where}.{key}{idx}: unknown {what} {v!r} (known: {', '.join(vocab)})"
                )

    regions, types, links = traffic.regions, traffic.network_types, traffic.links
    for key, what, vocab in (
        ("regions", "region", regions),
        ("network_types", "network type", types),
        ("links", "link", links),
        ("backups", "link", links),
    ):
        if hasattr(step, key):
            known(getattr(step, key), vocab, key, what)
    for key, what, vocab in (
        ("from_region", "region", regions),
        ("to_region", "region", regions),
        ("region", "region", regions),
        ("network_type", "network type", types),
        ("from_link", "link", links),
        ("to_link", "link", links),
        ("link", "link", links),
    ):
        value = getattr(step, key, None)
        if value is not None:
            known([value], vocab, key, what)


def _matches(g: Group, step: Selected) -> bool:
    return (
        (not step.regions or g.region in step.regions)
        and (not step.network_types or g.network_type in step.network_types)
        and (not step.directions or g.direction in step.directions)
        and (not step.links or g.link in step.links)
    )


def _scale(plan: Plan, step: Scale, i: int, first: int, history, pct, where) -> dict:
    affected = 0.0
    for g in plan.groups:
        if _matches(g, step) and g.weight > 0:
            affected += plan.total(g)
            if first == 0:
                g.weight *= step.factor
            else:
                g.shape = (*g.shape, ("scale", first, step.factor, i))
    return {"bytes": affected}


def _destinations(
    plan: Plan, region: str | None, link: str | None, g: Group, exclude: set[int]
) -> list[tuple[str, str, float]]:
    """Where traffic of ``g``'s type and direction lands: (link, region, fraction) each."""
    links = plan.traffic.links
    if link is not None:
        return [(link, links[link].region, 1.0)]
    assert region is not None
    carried: dict[str, float] = {}
    for j, h in enumerate(plan.groups):
        if (
            j not in exclude
            and h.region == region
            and h.network_type == g.network_type
            and h.direction == g.direction
            and h.weight > 0
        ):
            carried[h.link] = carried.get(h.link, 0.0) + plan.total(h)
    total = sum(carried.values())
    if total > 0:
        return [(lk, region, b / total) for lk, b in sorted(carried.items()) if b > 0]
    placed = plan.traffic.place(region, g.network_type, g.direction)
    if placed not in links:
        from flowatlas.whatif.model import Link

        links[placed] = Link(placed, region)
    return [(placed, region, 1.0)]


def _move(
    plan: Plan,
    chosen: list[int],
    share: float,
    targets,
    i: int,
    first: int,
) -> float:
    """Move ``share`` (0-1) of each chosen group to ``targets(g)``; returns the bytes moved."""
    moved = 0.0
    new: list[Group] = []
    for j in chosen:
        g = plan.groups[j]
        moved += share * plan.total(g)
        for link, region, frac in targets(g):
            if first == 0:
                new.append(replace(g, link=link, region=region, weight=g.weight * share * frac))
            else:
                new.append(
                    replace(
                        g,
                        link=link,
                        region=region,
                        weight=g.weight * share * frac,
                        shape=(*g.shape, ("on", first, 1.0, i)),
                    )
                )
        if first == 0:
            g.weight *= 1.0 - share
        else:
            g.shape = (*g.shape, ("off", first, share, i))
    plan.groups.extend(new)
    plan.groups[:] = [g for g in plan.groups if g.weight > 0]
    return moved


def _shift(plan: Plan, step: Shift, i: int, first: int, history, pct, where) -> dict:
    chosen = [
        j
        for j, g in enumerate(plan.groups)
        if g.weight > 0
        and _matches(g, step)
        and (g.region == step.from_region if step.from_region else g.link == step.from_link)
    ]
    exclude = set(chosen)
    moved = _move(
        plan,
        chosen,
        step.share / 100.0,
        lambda g: _destinations(plan, step.to_region, step.to_link, g, exclude),
        i,
        first,
    )
    return {"bytes": moved}


def _fail(plan: Plan, step: Fail, i: int, first: int, history, pct, where) -> dict:
    links = plan.traffic.links
    if step.shares is not None:
        shares = [s / 100.0 for s in step.shares]
    else:
        caps = [links[b].capacity_gbps for b in step.backups]
        if all(c is not None for c in caps):
            shares = [c / sum(caps) for c in caps]
        else:
            shares = [1.0 / len(caps)] * len(caps)
    targets = [(b, links[b].region, s) for b, s in zip(step.backups, shares, strict=True) if s > 0]
    chosen = [j for j, g in enumerate(plan.groups) if g.link == step.link and g.weight > 0]
    moved = _move(plan, chosen, 1.0, lambda g: targets, i, first)
    return {"bytes": moved, "shares": dict(zip(step.backups, shares, strict=True))}


def workload_series(step: Add, traffic: Traffic) -> np.ndarray:
    """Bytes per bucket of an added workload: its rate during its hours and days."""
    hours = parse_hours(step.hours, "hours")
    days = parse_days(step.days, "days")
    b = traffic.bucket_seconds
    sub = math.gcd(b, 3600)  # sub-steps on which the hour and day are constant
    k = b // sub
    start_s = traffic.start.value // 1_000_000_000 + round(step.utc_offset * 3600)
    t = start_s + np.arange(traffic.n_buckets, dtype=np.int64)[:, None] * b + np.arange(k) * sub
    hour = (t // 3600) % 24
    weekday = (t // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    active = (hours[hour] & days[weekday]).mean(axis=1)
    return active * (step.rate_gbps * 1e9 / 8.0 * b)


def _add(plan: Plan, step: Add, i: int, first: int, history, pct, where) -> dict:
    series = workload_series(step, plan.traffic)
    plan.extra.append(series)
    src = -len(plan.extra)
    probe = Group(src, "", step.region, step.network_type, step.direction)
    shape = () if first == 0 else (("on", first, 1.0, i),)
    for link, region, frac in _destinations(
        plan, None if step.link else step.region, step.link, probe, set()
    ):
        plan.groups.append(Group(src, link, region, step.network_type, step.direction, frac, shape))
    return {"bytes": float(series.sum())}


def _grow(plan: Plan, step: Grow, i: int, first: int, history, pct, where) -> dict:
    out: dict[str, Any] = {}
    if step.fitted:
        fit = fit_growth(history, step, pct, where)
        rate = fit["monthly_percent"] / 100.0
        out.update(fit)
    else:
        rate = step.monthly_percent / 100.0
        out["monthly_percent"] = step.monthly_percent
    affected = 0.0
    for g in plan.groups:
        if _matches(g, step) and g.weight > 0:
            affected += plan.total(g)
            g.shape = (*g.shape, ("grow", max(first, 1), rate, i))
    out["bytes"] = affected
    return out


_APPLY = {"scale": _scale, "shift": _shift, "add": _add, "grow": _grow, "fail": _fail}


# --------------------------------------------------------------------------- fitted growth


def monthly_percentiles(series: np.ndarray, traffic: Traffic, pct: float | str):
    """The percentile of a bytes-per-bucket series in each calendar month the traffic
    covers at least half of: (month starts as datetime64[M], bits/s)."""
    b = traffic.bucket_seconds
    start = np.datetime64(traffic.start.tz_convert(None).to_datetime64(), "s")
    t = start + np.arange(series.size, dtype=np.int64) * np.timedelta64(b, "s")
    month = t.astype("datetime64[M]")
    cuts = np.flatnonzero(np.diff(month.astype(np.int64))) + 1
    bounds = [0, *cuts.tolist(), series.size]
    months, values = [], []
    for a, z in itertools.pairwise(bounds):
        m = month[a]
        full = ((m + 1).astype("datetime64[s]") - m.astype("datetime64[s]")).astype(np.int64) // b
        if (z - a) >= FIT_MIN_COVERAGE * full:
            months.append(m)
            values.append(float(percentile_of(series[a:z], pct)) * 8.0 / b)
    return np.array(months, dtype="datetime64[M]"), np.array(values)


def fit_growth(history: Traffic, step: Selected, pct: float | str, where: str) -> dict:
    """The compound monthly growth of a selection's monthly percentile: a least-squares
    line through log(percentile) against the month, with its R² (in log space)."""
    g = history.groups
    mask = np.ones(len(g), dtype=bool)
    for key, col in (
        ("regions", "region"),
        ("network_types", "network_type"),
        ("directions", "direction"),
        ("links", "link"),
    ):
        values = getattr(step, key)
        if values:
            mask &= g[col].isin(values).to_numpy()
    series = history.series[mask].sum(axis=0)
    months, values = monthly_percentiles(series, history, pct)
    keep = values > 0
    months, values = months[keep], values[keep]
    if months.size < 2:
        raise ScenarioError(
            f"{where}: fitted growth needs at least 2 months with traffic of the selection in "
            f"the cube's history (it has {months.size}); give monthly_percent instead"
        )
    x = months.astype(np.int64).astype(np.float64)
    y = np.log(values)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return {
        "monthly_percent": float(math.expm1(slope) * 100.0),
        "r2": r2,
        "fit_months": [str(m) for m in months],
    }


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """A scenario as plain data (what a scenario file holds)."""
    out: dict[str, Any] = {}
    for k in ("name", "description", "horizon", "percentile", "threshold"):
        v = getattr(scenario, k)
        if v not in (None, ""):
            out[k] = v
    steps = []
    for s in scenario.steps:
        d: dict[str, Any] = {"op": s.op}
        for f in fields(s):
            v = getattr(s, f.name)
            if v in (None, "", ()) or (f.name == "utc_offset" and v == 0):
                continue
            if f.name == "fitted" and not v:
                continue
            d[f.name] = list(v) if isinstance(v, tuple) else v
        steps.append(d)
    out["steps"] = steps
    return out
