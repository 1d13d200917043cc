"""The capacity model: links with capacities, and the observed traffic each one carries.

A link has a name, a region and a capacity in Gbps, either per direction (ingress and egress
each have the capacity) or shared (both directions together). Traffic is held as one dense
row of bytes per time bucket for each *group*: a (link, region, network type, direction)
combination of the cube (IP versions summed). Scenarios act on the groups; projections sum
them per link. See docs/whatif.md.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from flowatlas.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

#: how the cube's directions load a link: ingress and transit come in, egress goes out;
#: internal (cross-region replication) leaves the region that exported it
SIDE: dict[str, str] = {"ingress": "in", "transit": "in", "egress": "out", "internal": "out"}
PER_DIRECTION = "per-direction"
SHARED = "shared"
CAPACITY_MODES = (PER_DIRECTION, SHARED)
GROUP_COLUMNS = ("link", "region", "network_type", "direction")


class ScenarioError(ConfigError):
    """A scenario, horizon or capacity setting that is wrong; names the file and key."""


@dataclass(frozen=True)
class Link:
    """A link of ours: what it is called, where it is and how much it can carry.

    ``capacity_gbps`` is None for a link without a stated capacity (a region's catch-all,
    usually): its rate is reported, its utilisation is not.
    """

    name: str
    region: str
    capacity_gbps: float | None = None
    capacity_mode: str = PER_DIRECTION

    def __post_init__(self) -> None:
        c = self.capacity_gbps
        if c is not None and (not isinstance(c, int | float) or not c > 0 or math.isinf(c)):
            raise ScenarioError(f"link {self.name!r}: capacity_gbps {c!r} is not a positive number")
        if self.capacity_mode not in CAPACITY_MODES:
            raise ScenarioError(
                f"link {self.name!r}: capacity_mode {self.capacity_mode!r} is not "
                f"{' or '.join(repr(m) for m in CAPACITY_MODES)}"
            )

    @property
    def sides(self) -> tuple[str, ...]:
        """The directions its capacity applies to: ('in', 'out') or ('both',)."""
        return ("in", "out") if self.capacity_mode == PER_DIRECTION else ("both",)


def catch_all(region: str) -> str:
    """The name of a region's catch-all link (what no other link claims)."""
    return f"{region}/other"


def default_placement(region: str, network_type: str, direction: str) -> str:
    """Where traffic without a measured link goes when no selection link is known."""
    return catch_all(region)


# --------------------------------------------------------------------------- parameters

_HORIZON = re.compile(r"^\s*(\d+)\s*(m|mo|month|months|y|yr|year|years)?\s*$", re.IGNORECASE)


def parse_horizon(text: Any, where: str = "--horizon") -> int:
    """'12m', '18 months', '1y', '2y' or an integer number of months -> months (1 to 120)."""
    if isinstance(text, bool):
        raise ScenarioError(f"{where}: {text!r} is not a horizon like '12m' or '1y'")
    if isinstance(text, int):
        months = text
    else:
        m = _HORIZON.match(str(text))
        if not m:
            raise ScenarioError(f"{where}: {text!r} is not a horizon like '12m', '18m' or '1y'")
        months = int(m.group(1)) * (12 if (m.group(2) or "m").lower().startswith("y") else 1)
    if not 1 <= months <= 120:
        raise ScenarioError(f"{where}: {text!r} must be 1 to 120 months")
    return months


def parse_percentile(value: Any, where: str = "--percentile") -> float | str:
    """A percentile setting: a number in (0, 100], 'p95', 'max' (= 100) or 'mean'."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("max", "mean"):
            return 100.0 if v == "max" else "mean"
        v = v.removeprefix("p")
        try:
            value = float(v)
        except ValueError:
            raise ScenarioError(
                f"{where}: {value!r} is not a percentile (a number in (0, 100], 'max' or 'mean')"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise ScenarioError(f"{where}: {value!r} is not a percentile in (0, 100]")
    return float(value)


def percentile_label(p: float | str) -> str:
    """'p95', 'p99.9', 'max' or 'mean'."""
    if p == "mean":
        return "mean"
    if p == 100:
        return "max"
    return f"p{p:g}"


@functools.lru_cache(maxsize=1024)
def nearest_rank(n: int, p: float) -> int:
    """The 0-based index of the nearest-rank ``p``-th percentile of ``n`` sorted values.

    Nearest rank, as 95th-percentile billing uses: sort the samples ascending and take the
    ceil(p/100 * n)-th (1-based), i.e. drop the top (100 - p) % and keep the largest left.
    Computed in exact rational arithmetic, so 95 % of 100 samples is the 95th, not the 96th.
    """
    if n <= 0:
        raise ValueError("no samples")
    k = math.ceil(Fraction(str(p)) * n / 100)
    return min(max(k, 1), n) - 1


def percentile_of(values: np.ndarray, p: float | str, axis: int = -1) -> np.ndarray:
    """The nearest-rank percentile (or the mean) of ``values`` along ``axis``."""
    return percentiles_of(values, (p,), axis)[0]


def percentiles_of(
    values: np.ndarray, ps: Sequence[float | str], axis: int = -1
) -> list[np.ndarray]:
    """:func:`percentile_of` for each of ``ps``, with one partial sort for all of them."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    ranks = sorted({nearest_rank(n, float(p)) for p in ps if p != "mean"})
    part = np.partition(values, ranks, axis=axis) if ranks else values
    return [
        values.mean(axis=axis)
        if p == "mean"
        else np.take(part, nearest_rank(n, float(p)), axis=axis)
        for p in ps
    ]


# --------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    """Observed bytes per time bucket for each (link, region, network type, direction) group.

    ``series[g, b]`` is group ``g``'s bytes in bucket ``b`` (buckets from ``start``, every
    ``bucket_seconds``, empty ones zero). ``links`` holds every link any group is on or any
    scenario may name, with its capacity. ``place(region, network_type, direction)`` names
    the link that traffic without a measured link falls to (the configuration's rule).
    """

    groups: pd.DataFrame
    series: np.ndarray
    start: pd.Timestamp
    bucket_seconds: int
    links: dict[str, Link]
    regions: tuple[str, ...] = ()
    network_types: tuple[str, ...] = ()
    place: Callable[[str, str, str], str] = default_placement
    origin: str = "<traffic>"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_buckets(self) -> int:
        return int(self.series.shape[1])

    @property
    def end(self) -> pd.Timestamp:
        """The end of the last bucket (exclusive)."""
        import pandas as pd

        return self.start + pd.Timedelta(seconds=self.bucket_seconds * self.n_buckets)

    def bucket_starts(self) -> pd.DatetimeIndex:
        import pandas as pd

        return pd.date_range(
            self.start, periods=self.n_buckets, freq=pd.Timedelta(seconds=self.bucket_seconds)
        )

    def window(self, days: float | None) -> Traffic:
        """The last ``days`` of the traffic (all of it for None), as a Traffic of its own."""
        if days is None:
            return self
        keep = min(self.n_buckets, max(1, round(days * 86400 / self.bucket_seconds)))
        first = self.n_buckets - keep
        if first == 0:
            return self
        cached = self._cache.get(("window", first))
        if cached is not None:
            return cached
        import pandas as pd

        self._cache[("window", first)] = out = Traffic(
            self.groups,
            self.series[:, first:],
            self.start + pd.Timedelta(seconds=self.bucket_seconds * first),
            self.bucket_seconds,
            self.links,
            self.regions,
            self.network_types,
            self.place,
            self.origin,
        )
        return out


def traffic_from_frame(
    frame: pd.DataFrame,
    links: Sequence[Link] | Mapping[str, Link],
    bucket_seconds: int,
    *,
    start: Any = None,
    end: Any = None,
    regions: Sequence[str] | None = None,
    network_types: Sequence[str] | None = None,
    place: Callable[[str, str, str], str] = default_placement,
    origin: str = "<frame>",
) -> Traffic:
    """Dense per-group series from a long frame of bytes per bucket.

    ``frame`` has columns bucket_start, link, region, network_type, direction and bytes (any
    other column, e.g. ip_version, is summed over). Rows whose link is null are placed with
    ``place``. The buckets run from ``start`` (default: the first bucket) to ``end``
    (exclusive; default: after the last), every ``bucket_seconds``; buckets without rows
    are zero. Links that carry traffic but are not in ``links`` get no capacity.
    """
    import pandas as pd

    links = dict(links) if isinstance(links, Mapping) else {lk.name: lk for lk in links}
    missing = [c for c in ("bucket_start", *GROUP_COLUMNS, "bytes") if c not in frame.columns]
    if missing:
        raise InputError(f"{origin}: traffic frame lacks column(s) {', '.join(missing)}")
    t = pd.to_datetime(frame["bucket_start"], utc=True)
    step = pd.Timedelta(seconds=bucket_seconds)
    first = _utc(start) if start is not None else (t.min() if len(t) else None)
    if first is None:
        raise InputError(f"{origin}: no traffic")
    last = _utc(end) if end is not None else t.max() + step
    n_buckets = int(-(-(last - first) // step))
    if n_buckets <= 0:
        raise InputError(f"{origin}: empty time range")
    bucket = ((t - first) // step).to_numpy(dtype=np.int64)
    inside = (bucket >= 0) & (bucket < n_buckets)

    # the distinct combinations first (few hundred), then each row's code: fast on big cubes
    combo_code, uniq = _combinations(frame, inside)
    link = uniq["link"].to_numpy(dtype=object, copy=True)
    for j in np.flatnonzero(pd.isna(link)):
        link[j] = place(uniq["region"][j], uniq["network_type"][j], uniq["direction"][j])
    uniq["link"] = link
    keys = uniq.astype(str)
    final = keys.groupby(list(GROUP_COLUMNS), sort=True)
    groups = final.size().index.to_frame(index=False)
    code = final.ngroup().to_numpy(dtype=np.int64)[combo_code]
    n_groups = len(groups)
    vol = frame["bytes"].to_numpy(dtype=np.float64)[inside]
    flat = np.bincount(
        code * n_buckets + bucket[inside], weights=vol, minlength=n_groups * n_buckets
    )
    series = flat.reshape(n_groups, n_buckets)
    for name, region in groups.drop_duplicates("link")[["link", "region"]].itertuples(index=False):
        if name not in links:  # its first group's region
            links[name] = Link(name, region)
    regions = tuple(regions) if regions is not None else tuple(sorted(set(groups["region"])))
    types = (
        tuple(network_types)
        if network_types is not None
        else tuple(sorted(set(groups["network_type"])))
    )
    return Traffic(groups, series, first, int(bucket_seconds), links, regions, types, place, origin)


def _combinations(frame: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """Each selected row's code and the distinct (link, region, network type, direction)
    combinations the codes index (object labels, NaN where null, as a groupby gives).

    Every column is factorized (categoricals for free) and the codes packed into one
    integer; its distinct values are found by counting when the packed space is small (it
    is for a cube: tens of links, a few regions, types and directions), else by sorting.
    """
    import pandas as pd

    codes, labels = [], []
    packed, space = np.zeros(int(rows.sum()), np.int64), 1
    for c in GROUP_COLUMNS:
        code, values = pd.factorize(frame[c], use_na_sentinel=True)
        code = np.asarray(code, dtype=np.int64)[rows] + 1  # 0: null
        codes.append(code)
        labels.append(np.asarray([np.nan, *np.asarray(values, dtype=object)], dtype=object))
        if space * (len(values) + 1) >= 1 << 62:  # renumber before the product overflows
            packed = np.unique(packed, return_inverse=True)[1].astype(np.int64).ravel()
            space = int(packed.max()) + 1 if len(packed) else 1
        packed = packed * (len(values) + 1) + code
        space *= len(values) + 1
    if space <= max(1 << 20, 4 * len(packed)):
        distinct = np.flatnonzero(np.bincount(packed, minlength=space))
        index = np.zeros(space, np.int64)
        index[distinct] = np.arange(distinct.size)
        inverse = index[packed]
    else:
        distinct, inverse = np.unique(packed, return_inverse=True)
        inverse = inverse.astype(np.int64).ravel()
    some_row = np.zeros(distinct.size, np.int64)
    some_row[inverse] = np.arange(len(packed))  # any row of a combination has its labels
    uniq = pd.DataFrame(
        {c: lab[code[some_row]] for c, lab, code in zip(GROUP_COLUMNS, labels, codes, strict=True)},
        dtype=object,
    )
    return inverse, uniq


def _utc(when: Any) -> pd.Timestamp:
    import pandas as pd

    ts = pd.Timestamp(when)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# --------------------------------------------------------------------------- calendar


@dataclass(frozen=True)
class Horizon:
    """The months a projection covers, counted from the end of the observed traffic.

    ``anchor`` is the first month boundary at or after the end of the last bucket: t = 0
    ("now") is the observed traffic as it is; month m (1 to ``months``) is the calendar
    month starting m - 1 months after the anchor, evaluated at its end (t = m).
    """

    anchor: pd.Timestamp
    months: int

    @classmethod
    def after(cls, end: pd.Timestamp, months: int) -> Horizon:
        """The horizon of ``months`` after traffic that ends (exclusive) at ``end``."""
        import pandas as pd

        end = _utc(end)
        first = pd.Timestamp(year=end.year, month=end.month, day=1, tz="UTC")
        anchor = first if end == first else first + pd.DateOffset(months=1)
        return cls(anchor, months)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (few horizons, each small)
    def month_start(self, m: int) -> pd.Timestamp:
        """The first instant of month ``m`` (1-based; m = 0 gives the month before)."""
        import pandas as pd

        return self.anchor + pd.DateOffset(months=m - 1)

    def label(self, m: int) -> str:
        """'now' for m = 0, else the month as 'YYYY-MM'."""
        return "now" if m == 0 else self.month_start(m).strftime("%Y-%m")

    def labels(self) -> list[str]:
        return [self.label(m) for m in range(self.months + 1)]

    def month_index(self, text: Any, where: str) -> int:
        """'YYYY-MM' (or a month number) -> month index; 0 if it is not after now."""
        import pandas as pd

        if isinstance(text, int) and not isinstance(text, bool):
            if text < 0:
                raise ScenarioError(f"{where}: month {text} is negative")
            return text
        m = re.fullmatch(r"(\d{4})-(\d{2})", str(text).strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ScenarioError(f"{where}: {text!r} is not a month like '2026-03'")
        month = pd.Timestamp(year=int(m.group(1)), month=int(m.group(2)), day=1, tz="UTC")
        delta = (month.year - self.anchor.year) * 12 + month.month - self.anchor.month
        return max(0, delta + 1)

    def date(self, t: float) -> pd.Timestamp:
        """The instant ``t`` months after the anchor (a fraction of a month by its days)."""
        import pandas as pd

        whole = math.floor(t)
        base = self.anchor + pd.DateOffset(months=whole)
        nxt = self.anchor + pd.DateOffset(months=whole + 1)
        return base + (nxt - base) * (t - whole)
