"""Magnitude tab: bits per unique remote IP by network type, on a log and a linear scale."""

from __future__ import annotations

import html

import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource

from flowatlas.viz.charts import WIDTH, div, log_range, magnitude_data, magnitude_figure

NAME = "magnitude"
TITLE = "Magnitude"


class View:
    TITLE = TITLE
    NAME = NAME

    def __init__(self, page) -> None:
        empty = pd.DataFrame({"magnitude": [], "uniques": []})
        self.log_source = ColumnDataSource(magnitude_data(empty, log=True), name="magnitude-log")
        self.lin_source = ColumnDataSource(magnitude_data(empty, log=False), name="magnitude-lin")
        self.log_fig = magnitude_figure(self.log_source, log=True, name="magnitude-log-figure")
        self.lin_fig = magnitude_figure(self.lin_source, log=False, name="magnitude-lin-figure")
        self.note = div(text="", name="magnitude-note", width=WIDTH)
        self.layout = column(row(self.log_fig, self.lin_fig), self.note)

    def update(self, page) -> None:
        q, _ = page.query()
        table, how = q.by_type(page.filters)
        for fig, source, log in ((self.log_fig, self.log_source, True),
                                 (self.lin_fig, self.lin_source, False)):  # fmt: skip
            data = magnitude_data(table, log=log)
            fig.x_range.factors = list(data["network_type"])
            if log:
                fig.y_range.start, fig.y_range.end = log_range(data)
            source.data = data
        self.note.text = f"<p class='fa-note'>distinct remote IPs: {html.escape(how)}</p>"
