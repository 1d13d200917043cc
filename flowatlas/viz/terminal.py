"""The report as terminal tables (what `flowatlas demo` and `flowatlas report` print)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TextIO

import pandas as pd

from flowatlas.viz import units
from flowatlas.viz.query import OTHER_CLOUDS
from flowatlas.viz.summary import sentences
from flowatlas.viz.views import Views


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    out.write(f"\n{title}\n")
    out.write(
        "  ".join(
            str(h).rjust(w) if i else str(h).ljust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
        + "\n"
    )
    out.write(line + "\n")
    for r in rows:
        out.write(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            + "\n"
        )


def _matrix(title: str, m: pd.DataFrame, fmt: Callable[[float], str], out: TextIO) -> None:
    header = ["region", *[str(c) for c in m.columns]]
    rows = [[str(idx), *[fmt(v) for v in m.loc[idx].to_numpy()]] for idx in m.index]
    _table(title, header, rows, out)


def _count(v: float) -> str:
    return units.fmt(v, "count")


def print_views(views: Views, out: TextIO, *, title: str = "flowatlas network report") -> None:
    """Write the report's tables to ``out``."""
    span = ""
    if views.first is not None:
        span = f" ({views.first:%Y-%m-%d} to {views.last:%Y-%m-%d})"
    out.write(f"\n{title}{span}\n" + "=" * (len(title) + len(span)) + "\n")

    rows = [
        [t, units.fmt(float(r.bytes), "volume"), units.share(float(r.share))]
        for t, r in views.share.iterrows()
    ]
    _table(
        "Share of traffic by network type (both directions)",
        ["network type", "volume", "share"],
        rows,
        out,
    )

    _matrix("Volume: region x network type", views.volume, lambda v: units.fmt(v, "volume"), out)
    _matrix(
        "Magnitude: region x network type (bits per unique remote IP)",
        views.magnitude,
        lambda v: units.fmt(v, "magnitude"),
        out,
    )
    _matrix(
        "Uniqueness: region x network type (distinct remote IPs)", views.uniqueness, _count, out
    )

    rows = [[str(r), _count(float(v))] for r, v in views.region_uniques["uniques"].items()]
    _table("Distinct remote IPs by region (all types)", ["region", "remote IPs"], rows, out)

    cols = [c for c in ("Neocloud", "Migration", "Hyperscaler") if c in views.monthly.columns]
    if cols:
        rows = [
            [str(m), *[units.fmt(float(views.monthly.loc[m, c]), "volume") for c in cols]]
            for m in views.monthly.index
        ]
        _table("Volume by month", ["month", *cols], rows, out)

    qs = views.quarterly_share
    cols = [c for c in (OTHER_CLOUDS, "Neocloud", "Hyperscaler") if c in qs.columns]
    rows = [[str(q), *[units.share(float(qs.loc[q, c])) for c in cols]] for q in qs.index]
    if views.comparison is not None:
        rows.append(["change", *[units.points(float(views.comparison.deltas[c])) for c in cols]])
    _table("Share of all traffic to other clouds, by quarter", ["quarter", *cols], rows, out)

    ipv = views.ip_versions
    rows = [
        [f"IPv{int(v)}", units.fmt(float(r.bytes), "volume"), units.share(float(r.share)),
         _count(float(r.uniques)), _count(float(r.uniques_prefix))]
        for v, r in zip(ipv.index, ipv.itertuples(), strict=True)
    ]  # fmt: skip
    _table("IPv4 and IPv6", ["version", "volume", "share", "addresses", "/64 prefixes"], rows, out)

    found = sentences(views)
    if found:
        out.write("\nFindings\n" + "".join(f"- {s}\n" for s in found))
    out.write("\n")
