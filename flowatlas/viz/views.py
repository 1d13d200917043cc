"""The seed report's views over a cube's whole range, as plain tables.

The terminal tables, the report page, its PNGs and its Markdown summary are drawn from these
frames (computed by :mod:`flowatlas.viz.query`, as the server's are), so they always agree.
Views exclude our own cross-region traffic (network type Internal): the report is about
traffic with other networks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flowatlas.engine.cube import Cube, open_cube
from flowatlas.errors import InputError
from flowatlas.viz.query import Comparison, CubeQuery, Filters, compare

#: the network types whose endpoints the metro section lists (the seed's clustering)
METRO_TYPES = ("Neocloud", "Hyperscaler")


def cube_name(path: str | os.PathLike[str]) -> str:
    """A cube's short name: its directory's, or its parent's for a directory named "cube"
    (flowatlas-demo/cube -> flowatlas-demo)."""
    path = Path(path).resolve()
    if path.name == "cube" and path.parent.name:
        return path.parent.name
    return path.name or "cube"


def open_cube_dir(path: str | os.PathLike[str], what: str = "CUBE") -> Cube:
    """Open a cube, saying plainly when ``path`` is a file (a cube is a directory)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"{path}: is a file, not a cube directory ({what} is a directory that "
            "`flowatlas build` writes)"
        )
    return open_cube(path)


@dataclass
class Views:
    """Every table of the report."""

    query: CubeQuery
    types: list[str]
    regions: list[str]
    share: pd.DataFrame  # network_type -> bytes, share
    volume: pd.DataFrame  # region x type, bytes
    magnitude: pd.DataFrame  # region x type, bits per unique remote IP
    uniqueness: pd.DataFrame  # region x type, distinct remote IPs
    top10: pd.DataFrame  # region x type, share of volume of the 10 heaviest remote IPs
    hhi: pd.DataFrame  # region x type, Herfindahl-Hirschman index over remote IPs
    magnitude_by_type: pd.DataFrame  # network_type -> bytes, share, uniques, magnitude
    daily: pd.DataFrame  # day x type, mean bits/s (NaN on days without data)
    monthly: pd.DataFrame  # month x type, bytes
    quarterly_share: pd.DataFrame  # quarter (and previous cube) x type, share of all traffic
    comparison: Comparison | None  # previous cube or first quarter -> last quarter
    ip_versions: pd.DataFrame  # ip_version -> bytes, share, uniques, uniques_prefix
    region_uniques: pd.DataFrame  # region -> distinct remote IPs
    metros: dict[str, tuple[pd.DataFrame, str]]  # METRO_TYPES, "all" -> (top metros, note)
    first: pd.Timestamp | None
    last: pd.Timestamp | None


def compute_views(cube: Cube, previous: Cube | None = None) -> Views:
    """All report tables for ``cube`` (``previous``: an earlier cube to compare shares with)."""
    q = CubeQuery(cube, cube_name(cube.path))
    prev = CubeQuery(previous, f"{cube_name(previous.path)} (previous)") if previous else None
    f = q.normalize(Filters())
    by_type, _ = q.by_type(f)

    qs = q.quarter_shares(f)
    if prev is not None:
        qs = pd.concat([prev.total_shares(Filters(), prev.name), qs])

    monthly = pd.DataFrame(q.daily.sum(axis=(1, 3, 4)), index=q.days, columns=q.types)
    monthly = monthly.groupby(monthly.index.to_period("M")).sum()
    monthly.index.name = "month"

    ru = q.uniques(f, ("region",)).table.set_index("region").reindex(q.regions)[["uniques"]]
    metros = {t: q.metros(f, t) for t in METRO_TYPES if t in q.types}
    metros["all"] = q.metros(f)
    return Views(
        query=q,
        types=list(q.types),
        regions=list(q.regions),
        share=by_type[["bytes", "share"]],
        volume=q.matrix(f, "bytes")[0],
        magnitude=q.matrix(f, "magnitude")[0],
        uniqueness=q.matrix(f, "uniques")[0],
        top10=q.matrix(f, "top10_share")[0],
        hhi=q.matrix(f, "hhi")[0],
        magnitude_by_type=by_type,
        daily=q.area(f),
        monthly=monthly,
        quarterly_share=qs,
        comparison=compare(q, f, prev),
        ip_versions=q.ip_versions_table(f)[0],
        region_uniques=ru,
        metros=metros,
        first=pd.Timestamp(q.first_day) if q.first_day else None,
        last=pd.Timestamp(q.last_day) if q.last_day else None,
    )
