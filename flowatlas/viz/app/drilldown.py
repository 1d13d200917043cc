"""The drill-down: what lies behind the selected heatmap cell or area series.

Its time series (daily mean and peak), distinct remote addresses for the date range (exact
or a labelled sketch estimate), the top remote networks (ASN, organisation), the top remote
addresses and the metros they sit in.
"""

from __future__ import annotations

import html
import math

from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource

from flowatlas.viz import units
from flowatlas.viz.charts import WIDTH, div, html_table, metro_rows, series_data, series_figure
from flowatlas.viz.drill import Drill

HINT = (
    "<p class='fa-note fa-drill-title'>Select a heatmap cell (Heatmaps tab) or click a series "
    "of the stacked area (Overview tab) to see its time series, top networks, addresses "
    "and metros.</p>"
)


def drill_title(d: Drill) -> str:
    """'US-East x Neocloud' or 'Neocloud (all selected regions)'."""
    return f"{d.region} x {d.network_type}" if d.region else f"{d.network_type} (selected regions)"


def asn_rows(d: Drill) -> list[list[str]]:
    total = d.volume or float("nan")
    return [
        [f"{int(r.rank)}", f"AS{int(r.asn)}" if int(r.asn) else "unknown", r.org or "-",
         units.fmt(float(r.bytes), "volume"), units.share(float(r.bytes) / total)]
        for r in d.tops.asns.itertuples()
    ]  # fmt: skip


def ip_rows(d: Drill) -> list[list[str]]:
    return [
        [f"{int(r.rank)}", r.remote_ip, f"AS{int(r.asn)}" if int(r.asn) else "-", r.org or "-",
         units.fmt(float(r.bytes), "volume")]
        for r in d.tops.ips.itertuples()
    ]  # fmt: skip


def uniques_text(d: Drill) -> str:
    t = d.uniques.table
    if not len(t):
        return f"distinct remote IPs: - ({d.uniques.how})"
    row = t.iloc[0]
    u = units.fmt(float(row["uniques"]), "count")
    if not d.uniques.exact:
        u = "~" + u
    mag = d.volume * 8 / float(row["uniques"]) if float(row["uniques"]) > 0 else float("nan")
    parts = [
        f"volume {units.fmt(d.volume, 'volume')}",
        f"distinct remote IPs {u} ({d.uniques.how})",
        f"magnitude {units.fmt(mag, 'magnitude')} per IP",
    ]
    if math.isfinite(float(row["top10_share"])):
        parts.append(f"top-10 share {units.share(float(row['top10_share']))}")
        parts.append(f"HHI {float(row['hhi']):.3f}")
    return "; ".join(parts)


class DrillDown:
    """The drill-down panel under the tabs."""

    def __init__(self, page) -> None:
        self.title = div(text=HINT, name="drill-title", width=WIDTH)
        self.source = ColumnDataSource(series_data(_empty()), name="drill-series")
        self.figure = series_figure(self.source, "drill-figure")
        self.figure.visible = False
        self.uniques = div(text="", name="drill-uniques", width=WIDTH)
        self.asns = div(text="", name="drill-asns", width=WIDTH // 2 - 10)
        self.ips = div(text="", name="drill-ips", width=WIDTH // 2 - 10)
        self.metros = div(text="", name="drill-metros", width=WIDTH // 2 - 10)
        self.layout = column(
            self.title,
            self.figure,
            self.uniques,
            row(self.asns, self.ips),
            self.metros,
            name="drilldown",
        )

    def update(self, page) -> None:
        cell = page.state.cell
        if cell is None:
            self.title.text = HINT
            self.figure.visible = False
            for div in (self.uniques, self.asns, self.ips, self.metros):
                div.text = ""
            return
        q, _ = page.query()
        region, t = cell
        d = q.drill(page.filters, t, region)
        self.title.text = (
            f"<h3 class='fa-drill-title' style='margin:6px 0'>Drill-down: "
            f"{html.escape(drill_title(d))}</h3>"
        )
        self.figure.visible = True
        self.figure.title.text = f"{drill_title(d)}: daily mean and peak rate"
        self.source.data = series_data(d.series)
        self.uniques.text = (
            f"<p class='fa-note fa-drill-uniques'>{html.escape(uniques_text(d))}</p>"
        )
        note = f"<p class='fa-note'>{html.escape(d.tops.note)}</p>"
        self.asns.text = (
            "<b>Top remote networks</b>"
            + html_table(["#", "ASN", "organisation", "volume", "share"], asn_rows(d), "fa-asns")
            + note
        )
        self.ips.text = (
            "<b>Top remote addresses</b>"
            + html_table(["#", "address", "ASN", "organisation", "volume"], ip_rows(d), "fa-ips")
            + note
        )
        self.metros.text = (
            "<b>Metros</b>"
            + html_table(
                ["metro", "country", "volume", "share"], metro_rows(d.tops.metros), "fa-metros"
            )
            + f"<p class='fa-note'>{html.escape(d.tops.metro_note)}</p>"
        )


def _empty():
    import pandas as pd

    return pd.DataFrame({"mean": [], "peak": []}, index=pd.DatetimeIndex([]))
