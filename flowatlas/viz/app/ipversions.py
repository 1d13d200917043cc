"""IP versions tab: IPv4 against IPv6, volume and uniqueness (/128 addresses and /64 prefixes).

IPv6 privacy addresses inflate per-address counts; the /64 column counts each IPv6 /64 once
(IPv4 addresses count as themselves).
"""

from __future__ import annotations

import html

import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource

from flowatlas.viz import units
from flowatlas.viz.charts import (
    WIDTH,
    div,
    html_table,
    ipv_data,
    ipv_figure,
    ipv_volume_data,
    ipv_volume_figure,
)

NAME = "ipversions"
TITLE = "IPv4 / IPv6"


def ipv_rows(table: pd.DataFrame) -> list[list[str]]:
    return [
        [f"IPv{int(v)}", units.fmt(float(r.bytes), "volume"), units.share(float(r.share)),
         units.fmt(float(r.uniques), "count"), units.fmt(float(r.uniques_prefix), "count"),
         units.fmt(float(r.bytes) * 8 / float(r.uniques), "magnitude") if r.uniques > 0 else "-"]
        for v, r in zip(table.index, table.itertuples(), strict=True)
    ]  # fmt: skip


class View:
    TITLE = TITLE
    NAME = NAME

    def __init__(self, page) -> None:
        empty = pd.DataFrame({"bytes": [], "share": [], "uniques": [], "uniques_prefix": []})
        self.vol_source = ColumnDataSource(ipv_volume_data(empty), name="ipv-volume")
        self.uq_source = ColumnDataSource(ipv_data(empty), name="ipv-uniques")
        self.vol_fig = ipv_volume_figure(self.vol_source, "ipv-volume-figure")
        self.uq_fig = ipv_figure(self.uq_source, "ipv-uniques-figure")
        self.table = div(text="", name="ipv-table", width=WIDTH)
        self.layout = column(row(self.vol_fig, self.uq_fig), self.table)

    def update(self, page) -> None:
        q, _ = page.query()
        table, how = q.ip_versions_table(page.filters)
        vol = ipv_volume_data(table)
        self.vol_fig.x_range.factors = list(vol["x"])
        self.vol_source.data = vol
        uq = ipv_data(table)
        self.uq_fig.x_range.factors = list(uq["x"])
        self.uq_source.data = uq
        header = ["IP version", "volume", "share", "distinct /128", "distinct /64 (v6)",
                  "magnitude per IP"]  # fmt: skip
        note = f"distinct counts: {how}"
        if not q.uniques(page.filters, ("ip_version",)).exact:
            note += "; /64 prefixes are counted exactly only for whole stored periods"
        self.table.text = html_table(header, ipv_rows(table), "fa-ipv") + (
            f"<p class='fa-note'>{html.escape(note)}</p>"
        )
