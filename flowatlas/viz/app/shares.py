"""Shares tab: each destination category's share of all traffic, quarter over quarter.

Rows are the quarters in the date range (and the previous cube's whole range with
``--previous``); the table gives the change between the first and the last, in points.
"""

from __future__ import annotations

import html

import pandas as pd
from bokeh.layouts import column
from bokeh.models import ColumnDataSource

from flowatlas.viz import units
from flowatlas.viz.charts import WIDTH, div, html_table, shares_data, shares_figure
from flowatlas.viz.query import OTHER_CLOUDS, compare

NAME = "shares"
TITLE = "Shares"


def share_rows(table: pd.DataFrame, categories, comparison) -> list[list[str]]:
    """One row per category: each period's share, then the change first -> last."""
    rows = []
    for c in categories:
        if c not in table.columns:
            continue
        cells = [units.share(float(v)) for v in table[c]]
        delta = units.points(float(comparison.deltas[c])) if comparison is not None else "-"
        rows.append([c, *cells, delta])
    return rows


class View:
    TITLE = TITLE
    NAME = NAME

    def __init__(self, page) -> None:
        self.categories = [*page.all_types, OTHER_CLOUDS]
        self.source = ColumnDataSource(shares_data(pd.DataFrame(), []), name="shares-source")
        self.figure = shares_figure(self.source, "shares-figure")
        self.table = div(text="", name="shares-table", width=WIDTH)
        self.layout = column(self.figure, self.table)

    def update(self, page) -> None:
        q, _ = page.query()
        prev = page.previous()
        table = q.quarter_shares(page.filters)
        if prev is not None:
            from dataclasses import replace

            before = prev.total_shares(replace(page.filters, start=None, end=None),
                                       prev.name)  # fmt: skip
            table = pd.concat([before, table])
        cmp = compare(q, page.filters, prev)
        self.figure.x_range.factors = [
            (c, str(p)) for c in self.categories if c in table.columns for p in table.index
        ]
        self.source.data = shares_data(table, self.categories)
        header = ["category", *[str(p) for p in table.index], "change"]
        caption = (
            f"change from {cmp.before_label} to {cmp.after_label}"
            if cmp is not None
            else "one period only: choose a range over two quarters, or serve with --previous"
        )
        self.table.text = html_table(header, share_rows(table, self.categories, cmp),
                                     "fa-shares") + (
            f"<p class='fa-note'>{html.escape(caption)}</p>"
        )  # fmt: skip
