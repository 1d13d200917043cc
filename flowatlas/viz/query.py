"""Every view's table for any set of filters, computed from one cube and cached.

The report and the server both draw from here. A :class:`CubeQuery` reads a cube once into
dense arrays of volume (time x region x network type x direction x IP version), so a filter
change is an array slice and a sum, not a scan of the cells. Results are memoised per
filter set (:class:`Filters` is hashable), so twenty sessions asking for the same view cost
one computation.

Distinct remote addresses do not add up. :meth:`CubeQuery.uniques` answers from the exact
rollups where the date range is one whole stored period (a day, month, quarter or the whole
range) and a stored grouping holds the filters (summing IPv4 and IPv6 is exact: an address
is one or the other); otherwise it unions the daily HyperLogLog sketches and says so, with
the estimator's standard error.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flowatlas.engine.cube import Cube, grouping_name
from flowatlas.viz import units
from flowatlas.vocab import CLOUD_TYPES, INTERNAL, NETWORK_TYPES, UNKNOWN, UNKNOWN_REGION

if TYPE_CHECKING:
    from flowatlas.viz.drill import Drill

#: network types the views show (in vocabulary order, Unknown last); others after them
REPORT_TYPES = (*(t for t in NETWORK_TYPES if t not in (UNKNOWN, INTERNAL)), UNKNOWN)
OTHER_CLOUDS = "Other clouds"
DIMS = ("region", "network_type", "direction", "ip_version")
STATS = ("mean", "p95", "peak")
RESOLUTIONS = ("day", "bucket")
MEASURES = ("bytes", "uniques", "uniques_prefix", "magnitude", "top10_share", "hhi")
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Filters:
    """One set of filters: what every view of a page shows. Empty tuples mean "all".

    ``start`` and ``end`` are whole days (UTC), both included.
    """

    start: dt.date | None = None
    end: dt.date | None = None
    regions: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()
    ip_versions: tuple[int, ...] = ()
    types: tuple[str, ...] = ()


@dataclass
class Uniques:
    """Distinct remote addresses per key, and how they were obtained."""

    table: pd.DataFrame  # key columns, uniques, uniques_prefix, top10_share, hhi
    exact: bool
    how: str  # "exact (rollup quarter 2025-07-01)" / "estimate (HyperLogLog, 1.6% std. error)"


def _nbytes(value: Any) -> int:
    """About how much memory a cached answer holds (frames, arrays, and what holds them)."""
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=False).sum())
    if isinstance(value, pd.Series):
        return int(value.memory_usage(deep=False))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, f)) for f in value.__dataclass_fields__)
    return 64


class _Memo:
    """A least-recently-used cache of computed tables, bounded by entries and by bytes."""

    def __init__(self, size: int = 512, max_bytes: int = 256 << 20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key in self.data:
            self.data.move_to_end(key)
            self.hits += 1
            return self.data[key][0]
        self.misses += 1
        value = compute()
        if key in self.data:  # computing it asked for it too (a nested view)
            return value
        n = _nbytes(value)
        self.data[key] = (value, n)
        self.bytes += n
        while len(self.data) > 1 and (len(self.data) > self.size or self.bytes > self.max_bytes):
            _, (_, dropped) = self.data.popitem(last=False)
            self.bytes -= dropped
        return value


def _report_types(cube: Cube) -> list[str]:
    present = set(cube.cells["network_type"].astype(str).unique())
    ordered = [t for t in REPORT_TYPES if t in present]
    extra = [t for t in cube.network_types if t in present and t not in ordered and t != INTERNAL]
    return ordered + extra


def positions(values: pd.Series, vocab: Sequence[Any]) -> np.ndarray:
    """Each value's position in ``vocab`` (-1 where absent)."""
    pos = {v: i for i, v in enumerate(vocab)}
    return values.astype(object).map(pos).fillna(-1).to_numpy(dtype=np.int64)


@dataclass
class Period:
    """A stored rollup period: its level, start in the rollups, and days (clipped to data)."""

    level: str  # day, month, quarter, all
    start: pd.Timestamp | None  # period_start in the rollups (None for "all")
    first: dt.date  # first and last day the period covers (clipped to the data)
    last: dt.date

    def label(self) -> str:
        if self.level == "all":
            return "the whole range"
        ts = self.start
        if self.level == "quarter":
            return f"quarter {ts.year}Q{(ts.month - 1) // 3 + 1}"
        if self.level == "month":
            return f"month {ts:%Y-%m}"
        return f"day {ts:%Y-%m-%d}"


def period_bounds(day: dt.date, level: str) -> tuple[dt.date, dt.date]:
    """First and last day of the day, month or quarter holding ``day``."""
    if level == "day":
        return day, day
    if level == "month":
        first = day.replace(day=1)
    else:
        first = day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)
    months = 1 if level == "month" else 3
    y, m = divmod(first.month - 1 + months, 12)
    nxt = dt.date(first.year + y, m + 1, 1)
    return first, nxt - dt.timedelta(days=1)


class CubeQuery:
    """One cube's views for any :class:`Filters`; loads once, memoises its answers."""

    def __init__(self, cube: Cube, name: str | None = None) -> None:
        self.cube = cube
        self.name = name or cube.path.name
        self.loaded_at = time.time()
        self.types = _report_types(cube)
        cells = cube.cells[cube.cells["network_type"].isin(self.types)]
        present_regions = {str(r) for r in cells["region"].unique()}
        regions = [r for r in cube.regions if r in present_regions]
        if UNKNOWN_REGION in regions and len(regions) > 1:
            regions = [r for r in regions if r != UNKNOWN_REGION] + [UNKNOWN_REGION]
        self.regions = regions
        present_dirs = {str(d) for d in cells["direction"].unique()}
        self.directions = [d for d in cube._order("direction") if d in present_dirs]
        present_v = {int(v) for v in cells["ip_version"].dropna().unique()}
        self.ip_versions = [v for v in (4, 6) if v in present_v]
        self.bucket_seconds = int(cube.meta.get("bucket_seconds", 3600))
        self.sketch_error = float((cube.meta.get("sketch") or {}).get("standard_error", np.nan))
        present = set(cube.cells["network_type"].astype(str).unique())
        #: types in the cube the views leave out (Internal): a stored grouping without a network
        #: type counts their addresses too (our own, never another type's: see _exact)
        self.hidden_types = sorted(present - set(self.types))
        self._memo = _Memo()
        self._extra: dict[str, Any] = {}  # tables read on first use (geo)
        self._rollups: dict[tuple[str, str], pd.DataFrame] = {
            key: df for key, df in cube.rollups.groupby(["rollup", "grouping"], observed=True)
        }
        self._load(cells)

    # ------------------------------------------------------------------ loading
    def _load(self, cells: pd.DataFrame) -> None:
        all_t = self.cube.cells["bucket_start"]
        if len(all_t) == 0:
            self.first_day = self.last_day = None
            self.days = pd.DatetimeIndex([])
            self.per_day = max(1, 86_400 // self.bucket_seconds)
            self.buckets = np.zeros((0, 1, 1, 1, 1))
            self.daily = np.zeros((0, 1, 1, 1, 1))
            self.day_has_data = np.zeros(0, dtype=bool)
            return
        t_all = all_t.dt.tz_convert(None)
        first = t_all.min().floor("D")
        self.first_day = first.date()
        self.last_day = t_all.max().floor("D").date()
        n_days = (self.last_day - self.first_day).days + 1
        self.days = pd.date_range(first, periods=n_days, freq="D")
        day_all = ((t_all - first) // DAY).to_numpy(dtype=np.int64)
        self.day_has_data = np.bincount(day_all, minlength=n_days) > 0

        shape = (len(self.regions), len(self.types), len(self.directions), len(self.ip_versions))
        t = cells["bucket_start"].dt.tz_convert(None)
        secs = ((t - first) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
        aligned = 86_400 % self.bucket_seconds == 0
        self.per_day = 86_400 // self.bucket_seconds if aligned else 0
        codes = [
            positions(cells["region"], self.regions),
            positions(cells["network_type"], self.types),
            positions(cells["direction"], self.directions),
            positions(cells["ip_version"], self.ip_versions),
        ]
        inner = np.ravel_multi_index(codes, shape) if len(cells) else np.zeros(0, np.int64)
        n_inner = int(np.prod(shape))
        weights = cells["bytes"].to_numpy(dtype=np.float64)
        day = secs // 86_400
        flat = day * n_inner + inner
        self.daily = np.bincount(flat, weights=weights, minlength=n_days * n_inner).reshape(
            (n_days, *shape)
        )
        if aligned:
            n_b = n_days * self.per_day
            flat = (secs // self.bucket_seconds) * n_inner + inner
            self.buckets = np.bincount(flat, weights=weights, minlength=n_b * n_inner).reshape(
                (n_b, *shape)
            )
        else:  # buckets that do not divide a day: day views only
            self.buckets = None

    # ------------------------------------------------------------------ filters
    def normalize(self, f: Filters) -> Filters:
        """``f`` with values this cube lacks dropped, "all" made explicit, days clipped."""

        def pick(chosen, allowed):
            if not chosen:
                return tuple(allowed)
            return tuple(v for v in allowed if v in set(chosen))

        start, end = f.start, f.end
        if self.first_day is not None:
            start = max(start or self.first_day, self.first_day)
            end = min(end or self.last_day, self.last_day)
        return Filters(
            start=start,
            end=end,
            regions=pick(f.regions, self.regions),
            directions=pick(f.directions, self.directions),
            ip_versions=pick(f.ip_versions, self.ip_versions),
            types=pick(f.types, self.types),
        )

    def sparse(self, f: Filters) -> Filters:
        """``f`` with "all" written as empty and the whole range as no dates (for URLs)."""
        f = self.normalize(f)
        whole = (f.start, f.end) == (self.first_day, self.last_day)
        return Filters(
            start=None if whole else f.start,
            end=None if whole else f.end,
            regions=() if set(f.regions) == set(self.regions) else f.regions,
            directions=() if set(f.directions) == set(self.directions) else f.directions,
            ip_versions=() if set(f.ip_versions) == set(self.ip_versions) else f.ip_versions,
            types=() if set(f.types) == set(self.types) else f.types,
        )

    def _index(self, f: Filters) -> tuple[slice, list[int], list[int], list[int], list[int]]:
        if self.first_day is None or f.start is None or f.end is None or f.start > f.end:
            days = slice(0, 0)
        else:
            days = slice((f.start - self.first_day).days, (f.end - self.first_day).days + 1)
        return (
            days,
            [self.regions.index(r) for r in f.regions],
            [self.types.index(t) for t in f.types],
            [self.directions.index(d) for d in f.directions],
            [self.ip_versions.index(v) for v in f.ip_versions],
        )

    def _subset(self, arr: np.ndarray, rows: slice, f: Filters) -> np.ndarray:
        """``arr[rows]`` restricted to the filters' regions, types, directions, IP versions."""
        _, ri, ti, di, vi = self._index(f)
        x = arr[rows]
        for axis, idx, n in (
            (1, ri, len(self.regions)),
            (2, ti, len(self.types)),
            (3, di, len(self.directions)),
            (4, vi, len(self.ip_versions)),
        ):
            if len(idx) != n:
                x = np.take(x, idx, axis=axis)
        return x

    def proper(self, f: Filters) -> dict[str, tuple]:
        """The filters that select part of a dimension (the ones distinct counts must honour)."""
        out: dict[str, tuple] = {}
        for dim, chosen, allowed in (
            ("region", f.regions, self.regions),
            ("network_type", f.types, self.types),
            ("direction", f.directions, self.directions),
            ("ip_version", f.ip_versions, self.ip_versions),
        ):
            if set(chosen) != set(allowed):
                out[dim] = tuple(chosen)
        return out

    def period(self, f: Filters) -> Period | None:
        """The stored rollup period whose days (within the data) are exactly ``f``'s, if any."""
        f = self.normalize(f)
        if self.first_day is None or f.start is None or f.end is None or f.start > f.end:
            return None
        levels = self.cube.meta.get("rollups", [])
        if "all" in levels and (f.start, f.end) == (self.first_day, self.last_day):
            return Period("all", None, f.start, f.end)
        for level in ("quarter", "month", "day"):
            if level not in levels:
                continue
            lo, hi = period_bounds(f.start, level)
            lo, hi = max(lo, self.first_day), min(hi, self.last_day)
            if (lo, hi) == (f.start, f.end):
                first = period_bounds(f.start, level)[0]
                return Period(level, pd.Timestamp(first, tz="UTC"), lo, hi)
        return None

    def cached(self, kind: str, f: Filters, *extra: Hashable, compute: Callable[[], Any]) -> Any:
        """Memoise ``compute()`` under (kind, normalised filters, extra)."""
        return self._memo.get((kind, f, *extra), compute)

    # ------------------------------------------------------------------ volume over time
    def area(self, f: Filters, stat: str = "mean", resolution: str = "day") -> pd.DataFrame:
        """Traffic by network type over time, in bits/s (a column per type, index = time).

        ``resolution`` day: each day's mean, 95th percentile or peak of its bucket rates;
        bucket: every bucket's rate. Days without any record in the cube are NaN (a gap, not
        a zero: missing data is not silence); within a day with data, no traffic is zero.
        """
        if stat not in STATS:
            raise ValueError(f"stat must be one of {STATS}, not {stat!r}")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, not {resolution!r}")
        f = self.normalize(f)
        return self.cached(
            "area", f, stat, resolution, compute=lambda: self._area(f, stat, resolution)
        )

    def _area(self, f: Filters, stat: str, resolution: str) -> pd.DataFrame:
        days, *_ = self._index(f)
        has = self.day_has_data[days]
        index = self.days[days]
        if self.buckets is None:  # buckets that do not divide a day: daily means only
            stat, resolution = "mean", "day"
        if resolution == "day" and stat == "mean":
            x = self._subset(self.daily, days, f).sum(axis=(1, 3, 4)) * 8 / 86_400
            x[~has] = np.nan
            return pd.DataFrame(x, index=index, columns=list(f.types))
        rows = slice(days.start * self.per_day, days.stop * self.per_day)
        x = self._subset(self.buckets, rows, f).sum(axis=(1, 3, 4)) * 8 / self.bucket_seconds
        x = x.reshape(len(index), self.per_day, len(f.types))
        x[~has] = np.nan
        if resolution == "day":
            x = x.max(axis=1) if stat == "peak" else np.percentile(x, 95, axis=1)
            return pd.DataFrame(x, index=index, columns=list(f.types))
        times = pd.DatetimeIndex(
            (index.to_numpy()[:, None] + np.arange(self.per_day) * np.timedelta64(
                self.bucket_seconds, "s")).ravel()
        )  # fmt: skip
        return pd.DataFrame(x.reshape(-1, len(f.types)), index=times, columns=list(f.types))

    def days_with_data(self, f: Filters) -> tuple[int, int]:
        """(days with any record, days without) in ``f``'s date range."""
        days, *_ = self._index(self.normalize(f))
        has = self.day_has_data[days]
        return int(has.sum()), int((~has).sum())

    def volume(self, f: Filters, by: Sequence[str] = ("region", "network_type")) -> pd.Series:
        """Bytes over the date range, summed by ``by`` (exact, from the cells)."""
        f = self.normalize(f)
        by = tuple(by)
        return self.cached("volume", f, by, compute=lambda: self._volume(f, by))

    def _volume(self, f: Filters, by: tuple[str, ...]) -> pd.Series:
        days, *_ = self._index(f)
        x = self._subset(self.daily, days, f).sum(axis=0)
        labels = {
            "region": list(f.regions),
            "network_type": list(f.types),
            "direction": list(f.directions),
            "ip_version": list(f.ip_versions),
        }
        keep = [DIMS.index(d) for d in by]
        x = x.sum(axis=tuple(i for i in range(4) if i not in keep))
        if not by:
            return pd.Series([float(x)], index=["total"], name="bytes")
        if len(by) == 1:
            index = pd.Index(labels[by[0]], name=by[0])
        else:
            index = pd.MultiIndex.from_product([labels[d] for d in by], names=list(by))
        return pd.Series(x.ravel(), index=index, name="bytes")

    # ------------------------------------------------------------------ distinct counts
    def uniques(self, f: Filters, by: Sequence[str]) -> Uniques:
        """Distinct remote addresses per ``by`` key: exact where stored, else a sketch estimate."""
        f = self.normalize(f)
        by = tuple(by)
        return self.cached("uniques", f, by, compute=lambda: self._uniques(f, by))

    def _grouping(self, by: tuple[str, ...], proper: dict[str, tuple]) -> tuple[str, bool] | None:
        """A stored grouping that answers ``by`` under ``proper`` exactly, and whether rows add up.

        Extra dimensions must be fixed to one value by a filter, or be the IP version (IPv4
        and IPv6 addresses are disjoint, so their distinct counts add up).
        """
        need = set(by) | set(proper)
        best = None
        for g in self.cube.meta.get("groupings", []):
            g = set(g)
            if not need <= g:
                continue
            extra = g - set(by)
            single = {d for d in extra if d in proper and len(proper[d]) == 1}
            if all(d in single or d == "ip_version" for d in extra):
                summed = bool(extra - single)
                if best is None or len(g) < len(best[0]):
                    best = (g, summed)
        if best is None:
            return None
        return grouping_name(best[0]), best[1]

    def _uniques(self, f: Filters, by: tuple[str, ...]) -> Uniques:
        proper = self.proper(f)
        period = self.period(f)
        found = self._grouping(by, proper) if period is not None else None
        if found is not None:
            return self._exact(f, by, proper, period, *found)
        return self._estimate(f, by, proper)

    def _exact(self, f, by, proper, period: Period, grouping: str, summed: bool) -> Uniques:
        df = self._rollups.get((period.level, grouping))
        cols = [*by, "uniques", "uniques_prefix", "top10_share", "hhi"]
        if df is None:
            return Uniques(pd.DataFrame(columns=cols), True, f"exact ({period.label()})")
        if period.start is not None:
            df = df[df["period_start"] == period.start]
        for d, values in proper.items():
            if d in df.columns:
                df = df[df[d].astype(object).isin(values)]
        if by:
            g = df.groupby(list(by), observed=True)
            out = g[["uniques", "uniques_prefix", "bytes"]].sum()
            if summed:
                out["top10_share"] = np.nan
                out["hhi"] = np.nan
            else:
                out["top10_share"] = g["top_bytes"].sum() / out["bytes"].where(out["bytes"] > 0)
                out["hhi"] = g["hhi"].sum()
            out = out.reset_index()
        else:
            one = len(df) == 1 and not summed
            out = pd.DataFrame(
                {
                    "uniques": [df["uniques"].sum()],
                    "uniques_prefix": [df["uniques_prefix"].sum()],
                    "top10_share": [_ratio(df["top_bytes"], df["bytes"]) if one else np.nan],
                    "hhi": [float(df["hhi"].iloc[0]) if one else np.nan],
                }
            )
        for c in ("uniques", "uniques_prefix"):
            out[c] = out[c].astype(np.float64)
        out = out[cols]
        if "ip_version" in out.columns:
            out["ip_version"] = out["ip_version"].astype(int)
        for d in ("region", "network_type", "direction"):
            if d in out.columns:
                out[d] = out[d].astype(str)
        how = f"exact ({period.label()})"
        if "network_type" not in grouping.split(",") and self.hidden_types:
            how += self._hidden_note(period)
        return Uniques(out.reset_index(drop=True), True, how)

    def _hidden_note(self, period: Period) -> str:
        """What a count without a network type includes of the types the views leave out.

        Internal traffic's remote addresses are our own (both ends in our prefixes), so no
        other type ever counts them: the overcount is at most their own exact count.
        """
        df = self._rollups.get((period.level, "network_type"))
        n = 0.0
        if df is not None:
            if period.start is not None:
                df = df[df["period_start"] == period.start]
            n = float(df[df["network_type"].astype(str).isin(self.hidden_types)]["uniques"].sum())
        return f", including at most {units.fmt(n, 'count')} of our own addresses " + (
            f"({', '.join(self.hidden_types)} traffic)"
        )

    def _estimate(self, f: Filters, by: tuple[str, ...], proper: dict[str, tuple]) -> Uniques:
        cols = [*by, "uniques", "uniques_prefix", "top10_share", "hhi"]
        if not self.cube.meta.get("sketch") or f.start is None or f.start > f.end:
            return Uniques(pd.DataFrame(columns=cols), False, "not available (no sketches)")
        where = {d: list(v) for d, v in proper.items()}
        where.setdefault("network_type", list(self.types))
        est = self.cube.estimate_uniques(
            by=by,
            start=pd.Timestamp(f.start, tz="UTC"),
            end=pd.Timestamp(f.end, tz="UTC") + DAY,
            where=where,
        )
        out = est.rename(columns={"uniques_estimate": "uniques"})
        out["uniques_prefix"] = np.nan
        out["top10_share"] = np.nan
        out["hhi"] = np.nan
        for d in ("region", "network_type", "direction"):
            if d in out.columns:
                out[d] = out[d].astype(str)
        if "ip_version" in out.columns:
            out["ip_version"] = out["ip_version"].astype(int)
        how = f"estimate (HyperLogLog, {100 * self.sketch_error:.1f}% standard error)"
        return Uniques(out[cols].reset_index(drop=True), False, how)

    # ------------------------------------------------------------------ matrices
    def matrix(self, f: Filters, measure: str) -> tuple[pd.DataFrame, str]:
        """Region x network type of one measure (see :data:`MEASURES`), and how it was counted."""
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, not {measure!r}")
        f = self.normalize(f)
        return self.cached("matrix", f, measure, compute=lambda: self._matrix(f, measure))

    def _matrix(self, f: Filters, measure: str) -> tuple[pd.DataFrame, str]:
        vol = self.volume(f, ("region", "network_type")).unstack("network_type")
        vol = vol.reindex(index=list(f.regions), columns=list(f.types))
        if measure == "bytes":
            return vol.where(vol > 0), "exact (summed from the cells)"
        u = self.uniques(f, ("region", "network_type"))
        t = u.table.set_index(["region", "network_type"])
        col = "uniques" if measure == "magnitude" else measure
        m = t[col].unstack("network_type") if len(t) else pd.DataFrame()
        m = m.reindex(index=list(f.regions), columns=list(f.types)).astype(float)
        if measure == "magnitude":
            m = vol * 8 / m.where(m > 0)
        return m, u.how

    # ------------------------------------------------------------------ by type, by version
    def by_type(self, f: Filters) -> tuple[pd.DataFrame, str]:
        """Per network type: bytes, share, distinct remote IPs, /64 prefixes and magnitude."""
        return self.per(f, "network_type")

    def ip_versions_table(self, f: Filters) -> tuple[pd.DataFrame, str]:
        """Per IP version: bytes, share, distinct /128 addresses, /64 prefixes and magnitude."""
        return self.per(f, "ip_version")

    def per(self, f: Filters, dim: str) -> tuple[pd.DataFrame, str]:
        """Per value of one dimension: bytes, share, uniques, uniques_prefix, magnitude."""
        f = self.normalize(f)
        return self.cached("per", f, dim, compute=lambda: self._per(f, dim))

    def _per(self, f: Filters, dim: str) -> tuple[pd.DataFrame, str]:
        vol = self.volume(f, (dim,))
        u = self.uniques(f, (dim,))
        t = u.table.set_index(dim).reindex(vol.index)
        uq = t["uniques"].astype(float)
        total = float(vol.sum())
        out = pd.DataFrame(
            {
                "bytes": vol,
                "share": vol / total if total > 0 else np.nan,
                "uniques": uq,
                "uniques_prefix": t["uniques_prefix"].astype(float),
                "magnitude": vol * 8 / uq.where(uq > 0),
            }
        )
        out.index.name = dim
        return out, u.how

    # ------------------------------------------------------------------ shares by period
    def quarter_shares(self, f: Filters) -> pd.DataFrame:
        """Each network type's (and other clouds') share of traffic per quarter in the range.

        A quarter the range or the data covers only in part is labelled with its days.
        """
        f = self.normalize(f)
        return self.cached("qshares", f, compute=lambda: self._quarter_shares(f))

    def _quarter_shares(self, f: Filters) -> pd.DataFrame:
        days, *_ = self._index(f)
        x = self._subset(self.daily, days, f).sum(axis=(1, 3, 4))  # day x type
        idx = self.days[days]
        rows, labels = [], []
        if len(idx):
            q = idx.to_period("Q")
            for period in q.unique():
                sel = np.asarray(q == period)
                lo, hi = idx[sel][0].date(), idx[sel][-1].date()
                whole = (lo, hi) == period_bounds(lo, "quarter")
                labels.append(str(period) if whole else f"{period} ({lo:%b %d}-{hi:%b %d})")
                rows.append(x[sel].sum(axis=0))
        return shares_frame(np.array(rows).reshape(len(rows), len(f.types)), labels, f.types)

    def total_shares(self, f: Filters, label: str) -> pd.DataFrame:
        """One row: each type's share of all traffic over the whole filtered range."""
        f = self.normalize(f)
        vol = self.volume(f, ("network_type",))
        return shares_frame(vol.to_numpy()[None, :], [label], f.types)

    # ------------------------------------------------------------------ drill-down
    def drill(self, f: Filters, network_type: str, region: str | None = None) -> Drill:
        """One cell's (or one type's) time series, distinct addresses and top lists."""
        from flowatlas.viz import drill

        f = self.normalize(f)
        key = (network_type, region)
        return self.cached(
            "drill", f, key, compute=lambda: drill.drill(self, f, network_type, region)
        )

    def metros(
        self, f: Filters, network_type: str | None = None, region: str | None = None
    ) -> tuple[pd.DataFrame, str]:
        """The 10 metros whose remote addresses carry the most of a selection's volume.

        Every filter applies (days, regions, directions, IP versions, types), narrowed to
        ``network_type`` and ``region`` when given. Columns metro, country, bytes, share (of
        the selection's volume, unknown metros included), heaviest first; ties by country,
        then metro, as :meth:`Cube.top_metros` ranks them.
        """
        from flowatlas.viz import drill

        f = self.normalize(f)
        if network_type is not None:
            f = replace(f, types=(network_type,) if network_type in self.types else ())
        if region is not None:
            f = replace(f, regions=(region,) if region in self.regions else ())
        return self.cached("metros", f, compute=lambda: drill.metros(self, f))


def _ratio(num: pd.Series, den: pd.Series) -> float:
    d = float(den.iloc[0])
    return float(num.iloc[0]) / d if d > 0 else np.nan


def shares_frame(rows: np.ndarray, labels: Sequence[str], types: Sequence[str]) -> pd.DataFrame:
    """Rows of volume per type as shares of each row's total, with an "Other clouds" column."""
    df = pd.DataFrame(rows, index=list(labels), columns=list(types), dtype=np.float64)
    total = df.sum(axis=1)
    df = df.div(total.where(total > 0), axis=0)
    clouds = [t for t in CLOUD_TYPES if t in df.columns]
    df[OTHER_CLOUDS] = df[clouds].sum(axis=1, min_count=1) if clouds else np.nan
    df.index.name = "period"
    return df


@dataclass
class Comparison:
    """Shares of the previous period (a previous cube, or the first quarter) and this one."""

    before: pd.Series
    after: pd.Series
    before_label: str
    after_label: str
    deltas: pd.Series = field(init=False)

    def __post_init__(self) -> None:
        self.deltas = self.after - self.before


def compare(query: CubeQuery, f: Filters, previous: CubeQuery | None = None) -> Comparison | None:
    """This range's shares against the previous cube's, or its last quarter against its first."""
    if previous is not None:
        g = replace(f, start=None, end=None)
        before = previous.total_shares(g, previous.name).iloc[0]
        after = query.total_shares(f, query.name).iloc[0]
        return Comparison(before, after, _span(previous, g), _span(query, f))
    qs = query.quarter_shares(f)
    if len(qs) < 2:
        return None
    return Comparison(qs.iloc[0], qs.iloc[-1], str(qs.index[0]), str(qs.index[-1]))


def _span(query: CubeQuery, f: Filters) -> str:
    g = query.normalize(f)
    if g.start is None:
        return query.name
    return f"{query.name} ({g.start:%Y-%m-%d} to {g.end:%Y-%m-%d})"
