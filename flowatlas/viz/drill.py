"""The drill-down behind one selection: its time series, distinct addresses, top remote
networks and addresses (the cube's stored lists), and the metros of its remote addresses.

Called through :meth:`CubeQuery.drill` and :meth:`CubeQuery.metros`, which cache the answers;
the arrays read from the cube's top lists and ``geo.parquet`` are kept in the query's
``_extra``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flowatlas.engine.cube import grouping_name
from flowatlas.viz import units
from flowatlas.viz.query import DAY, Filters, Period, Uniques, period_bounds, positions

if TYPE_CHECKING:
    from flowatlas.viz.query import CubeQuery


@dataclass
class TopLists:
    """The drill-down's top remote networks, addresses and metros, and what they cover."""

    asns: pd.DataFrame  # rank, asn, org, bytes
    ips: pd.DataFrame  # rank, remote_ip, asn, org, bytes
    metros: pd.DataFrame  # metro, country, bytes, share
    note: str
    metro_note: str


@dataclass
class Drill:
    """One selection's detail: a region x network type cell, or a network type (region None)."""

    region: str | None
    network_type: str
    series: pd.DataFrame  # day -> mean, peak (bits/s); NaN on days without data
    volume: float
    uniques: Uniques
    tops: TopLists


def drill(q: CubeQuery, f: Filters, network_type: str, region: str | None) -> Drill:
    """One cell's (``region`` x ``network_type``) or one type's (region None) detail."""
    g = replace(f, types=(network_type,) if network_type in q.types else ())
    if region is not None:
        g = replace(g, regions=(region,) if region in q.regions else ())
    mean = q.area(g, "mean", "day")
    series = pd.DataFrame({"mean": mean.sum(axis=1, min_count=1)})
    if q.buckets is not None:
        series["peak"] = q.area(g, "peak", "day").sum(axis=1, min_count=1)
    else:
        series["peak"] = series["mean"]
    by = ("region", "network_type") if region is not None else ("network_type",)
    u = q.uniques(g, by)
    volume = float(q.volume(g, ()).iloc[0])
    return Drill(region, network_type, series, volume, u, top_lists(q, g, region))


def top_lists(q: CubeQuery, f: Filters, region: str | None) -> TopLists:
    """Top ASNs and addresses from the smallest stored list covering the range; metros."""
    cube = q.cube
    levels = cube.meta.get("top_list_rollups", [])
    notes: list[str] = []
    period = None
    if f.start is not None and f.end is not None:
        for level in ("month", "quarter"):
            if level not in levels:
                continue
            lo, hi = period_bounds(f.start, level)
            if f.end <= hi:
                period = Period(level, pd.Timestamp(lo, tz="UTC"), lo, hi)
                break
    if period is None and "all" in levels:
        period = Period("all", None, q.first_day, q.last_day)
    where: dict[str, Any] = {"network_type": f.types[0] if f.types else None}
    if region is not None:
        where["region"] = f.regions[0] if f.regions else None
    proper = q.proper(f)
    for dim in ("direction", "ip_version"):
        if dim in proper and len(proper[dim]) == 1:
            where[dim] = proper[dim][0]
    stored = {grouping_name(g) for g in cube.meta.get("groupings", [])}
    if grouping_name(where) not in stored:
        dropped = [d for d in ("direction", "ip_version") if d in where]
        for d in dropped:
            where.pop(d)
        if dropped:
            notes.append(f"all {' and '.join(d.replace('_', ' ') + 's' for d in dropped)}")
    if region is None and "region" in proper:
        notes.append("all regions")
    if period is None or None in where.values():
        empty_a = pd.DataFrame(columns=["rank", "asn", "org", "bytes"])
        empty_i = pd.DataFrame(columns=["rank", "remote_ip", "asn", "org", "bytes"])
        asns, ips, covered = empty_a, empty_i, "no top lists stored"
    else:
        asns = _top_list(q, "asns", where, period)[["rank", "asn", "org", "bytes"]]
        ips = _top_list(q, "ips", where, period)[["rank", "remote_ip", "asn", "org", "bytes"]]
        covered = f"top lists for {period.label()}"
        if (period.first, period.last) != (
            max(f.start, period.first),
            min(f.end, period.last),
        ) and period.level != "all":
            covered += " (the smallest stored period holding the range)"
        elif period.level == "all" and (f.start, f.end) != (q.first_day, q.last_day):
            covered += " (lists are stored per month, quarter and whole range)"
    note = covered + ("; " + ", ".join(notes) if notes else "")
    metros, metro_note = q.metros(f)
    return TopLists(asns, ips, metros, note, metro_note)


def _top_list(q: CubeQuery, kind: str, where: dict[str, Any], period: Period) -> pd.DataFrame:
    """A stored top list (``asns`` or ``ips``) for one key, by rank.

    The lists are split by grouping once per rollup, so a drill-down filters a few
    hundred rows rather than the whole table.
    """
    key = (kind, period.level)
    if key not in q._extra:
        fn = q.cube.top_asns if kind == "asns" else q.cube.top_ips
        q._extra[key] = dict(tuple(fn(period=period.level).groupby("grouping")))
    df = q._extra[key].get(grouping_name(where))
    if df is None:
        df = (q.cube.top_asns if kind == "asns" else q.cube.top_ips)(
            by=tuple(where), period=period.level, where=where
        )
    if period.start is not None:
        df = df[df["period_start"] == period.start]
    for d, v in where.items():
        df = df[df[d].astype(object) == v]
    return df.sort_values("rank").reset_index(drop=True)


def geo_arrays(q: CubeQuery) -> dict[str, np.ndarray] | None:
    """geo.parquet as arrays: day, cell combination, place (country, metro), bytes."""
    if "geo" in q._extra:
        return q._extra["geo"]
    import pyarrow.parquet as pq

    path = q.cube.path / "geo.parquet"
    geo = None
    if path.exists() and q.first_day is not None:
        try:
            df = pq.read_table(path).to_pandas()
        except Exception as exc:
            q._extra["geo"] = None
            q._extra["geo_error"] = f"{path}: unreadable: {exc}"
            return None
        df = df[df["network_type"].isin(q.types) & (df["flows"] > 0)]
        codes = [
            positions(df["region"], q.regions),
            positions(df["network_type"], q.types),
            positions(df["direction"], q.directions),
            positions(df["ip_version"].astype(int), q.ip_versions),
        ]
        ok = np.all([c >= 0 for c in codes], axis=0) if len(df) else np.zeros(0, bool)
        shape = (len(q.regions), len(q.types), len(q.directions),
                 len(q.ip_versions))  # fmt: skip
        inner = np.ravel_multi_index([np.where(ok, c, 0) for c in codes], shape)
        known = df["metro"].notna().to_numpy()
        places = (
            df.loc[known, ["country", "metro"]].drop_duplicates()
            .sort_values(["country", "metro"], na_position="last").reset_index(drop=True)
        )  # fmt: skip
        place_of = {(c, m): k for k, (c, m) in enumerate(places.itertuples(index=False))}
        place = np.array(
            [place_of[(c, m)] if k else -1 for c, m, k in
             zip(df["country"], df["metro"], known, strict=True)], dtype=np.int64,
        )  # fmt: skip
        t = df["day"].dt.tz_convert(None)
        day = ((t - pd.Timestamp(q.first_day)) // DAY).to_numpy(dtype=np.int64)
        geo = {
            "day": day[ok],
            "inner": inner[ok],
            "place": place[ok],
            "bytes": df["bytes"].to_numpy(dtype=np.float64)[ok],
            "country": places["country"].to_numpy(dtype=object),
            "metro": places["metro"].to_numpy(dtype=object),
            "shape": np.array(shape),
        }
    q._extra["geo"] = geo
    return geo


def metros(q: CubeQuery, f: Filters) -> tuple[pd.DataFrame, str]:
    empty = pd.DataFrame(columns=["metro", "country", "bytes", "share"])
    geo = geo_arrays(q)
    if geo is None:
        return empty, q._extra.get("geo_error", "this cube has no metro table")
    days, ri, ti, di, vi = q._index(f)
    chosen = np.zeros(tuple(geo["shape"]), dtype=bool)
    chosen[np.ix_(ri, ti, di, vi)] = True
    rows = (geo["day"] >= days.start) & (geo["day"] < days.stop)
    rows &= chosen.ravel()[geo["inner"]]
    total = float(geo["bytes"][rows].sum())
    rows &= geo["place"] >= 0
    n_places = len(geo["metro"])
    vol = np.bincount(geo["place"][rows], weights=geo["bytes"][rows], minlength=n_places)
    seen = np.bincount(geo["place"][rows], minlength=n_places) > 0
    order = [k for k in np.argsort(-vol, kind="stable") if seen[k]][:10]
    if not order:
        return empty, "no metro known for these remote addresses (the prefix table has none)"
    out = pd.DataFrame(
        {
            "metro": geo["metro"][order],
            "country": geo["country"][order],
            "bytes": vol[order],
            "share": vol[order] / total if total > 0 else np.nan,
        }
    )
    note = (
        f"metros of the remote addresses by volume; the {len(out)} listed carry "
        f"{units.share(float(out['share'].sum()))} of the selection's volume"
    )
    return out, note
