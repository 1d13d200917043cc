"""The seed report's views, computed from a cube as plain tables.

Both the terminal tables and the Bokeh charts are drawn from these frames, so they always
agree. Views exclude our own cross-region traffic (network type Internal): the report is about
traffic with other networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowatlas.engine.cube import Cube
from flowatlas.vocab import CLOUD_TYPES, INTERNAL, NETWORK_TYPES, UNKNOWN, UNKNOWN_REGION

#: network types the report shows (in vocabulary order, Unknown last); others after them
REPORT_TYPES = (*(t for t in NETWORK_TYPES if t not in (UNKNOWN, INTERNAL)), UNKNOWN)


@dataclass
class Views:
    """Every table of the report."""

    types: list[str]
    regions: list[str]
    share: pd.DataFrame  # network_type -> bytes, share
    volume: pd.DataFrame  # region x type, bytes
    magnitude: pd.DataFrame  # region x type, bits per unique remote IP
    uniqueness: pd.DataFrame  # region x type, distinct remote IPs
    magnitude_by_type: pd.DataFrame  # network_type -> magnitude (all regions)
    daily: pd.DataFrame  # day x type, average Gbps
    monthly: pd.DataFrame  # month x type, bytes
    quarterly_share: pd.DataFrame  # quarter x type, share of all traffic
    region_uniques: pd.DataFrame  # region -> distinct remote IPs
    first: pd.Timestamp | None
    last: pd.Timestamp | None


def _types(cube: Cube) -> list[str]:
    present = set(cube.cells["network_type"].astype(str).unique())
    ordered = [t for t in REPORT_TYPES if t in present]
    extra = [t for t in cube.network_types if t in present and t not in ordered and t != INTERNAL]
    return ordered + extra


def compute_views(cube: Cube) -> Views:
    """All report tables for ``cube``."""
    types = _types(cube)
    cells = cube.cells[cube.cells["network_type"].isin(types)]
    regions = [r for r in cube.regions if r in set(cells["region"].astype(str))]
    if UNKNOWN_REGION in regions and len(regions) > 1:
        regions = [r for r in regions if r != UNKNOWN_REGION] + [UNKNOWN_REGION]

    by_type = cells.groupby("network_type", observed=True)["bytes"].sum().reindex(types).fillna(0)
    total = float(by_type.sum()) or 1.0
    share = pd.DataFrame({"bytes": by_type, "share": by_type.astype(float) / total})

    def matrix(measure: str) -> pd.DataFrame:
        m = cube.matrix(measure, rows="region", cols="network_type")
        return m.reindex(index=regions, columns=types)

    mag_t = cube.rollup(("network_type",)).set_index("network_type").reindex(types)

    day = cells["bucket_start"].dt.tz_convert(None).dt.floor("D")
    daily = cells.assign(day=day).pivot_table(
        index="day", columns="network_type", values="bytes", aggfunc="sum", observed=True
    )
    daily = daily.reindex(columns=types).fillna(0) * 8 / 86_400 / 1e9  # average Gbps

    month = cells["bucket_start"].dt.tz_convert(None).dt.to_period("M")
    monthly = cells.assign(month=month).pivot_table(
        index="month", columns="network_type", values="bytes", aggfunc="sum", observed=True
    )
    monthly = monthly.reindex(columns=types).fillna(0)

    quarter = cells["bucket_start"].dt.tz_convert(None).dt.to_period("Q")
    q = cells.assign(quarter=quarter).pivot_table(
        index="quarter", columns="network_type", values="bytes", aggfunc="sum", observed=True
    )
    q = q.reindex(columns=types).fillna(0)
    quarterly_share = q.div(q.sum(axis=1).replace(0, np.nan), axis=0)
    clouds = [t for t in CLOUD_TYPES if t in quarterly_share.columns]
    quarterly_share["Other clouds"] = quarterly_share[clouds].sum(axis=1) if clouds else 0.0

    region_uniques = cube.rollup(("region",)).set_index("region").reindex(regions)
    t = cells["bucket_start"]
    return Views(
        types=types,
        regions=regions,
        share=share,
        volume=matrix("bytes"),
        magnitude=matrix("magnitude"),
        uniqueness=matrix("uniques"),
        magnitude_by_type=mag_t[["bytes", "uniques", "magnitude"]],
        daily=daily,
        monthly=monthly,
        quarterly_share=quarterly_share,
        region_uniques=region_uniques[["uniques"]],
        first=t.min() if len(t) else None,
        last=t.max() if len(t) else None,
    )


# --------------------------------------------------------------------------- formatting

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str = "") -> str:
    """1.23e15 -> '1.23 P' + unit: numbers people can read at a glance."""
    if value is None or not np.isfinite(value):
        return "-"
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()
