"""Overview tab: traffic by network type over time, stacked (bits/s).

Mean, 95th percentile or peak of each day's bucket rates, or every bucket. Hover gives the
time's values; the legend (outside the plot) hides a series on click and the stack closes
up; clicking a series drills into that network type.
"""

from __future__ import annotations

from bokeh.events import Tap
from bokeh.layouts import column

from flowatlas.viz import units
from flowatlas.viz.charts import WIDTH, StackedArea, div

NAME = "overview"
TITLE = "Overview"
_STAT_TEXT = {"mean": "daily mean", "p95": "daily 95th percentile", "peak": "daily peak"}


class View:
    TITLE = TITLE
    NAME = NAME

    def __init__(self, page) -> None:
        self.types = list(page.all_types)
        self.area = StackedArea(self.types, "Traffic by network type")
        self.figure = self.area.figure
        self.figure.on_event(Tap, lambda event: self._on_tap(page, event))
        self.note = div(text="", name="overview-note", width=WIDTH)
        self.layout = column(self.figure, self.note)

    def update(self, page) -> None:
        q, _ = page.query()
        f = q.normalize(page.filters)
        s = page.state
        table = q.area(f, s.stat, s.resolution)
        self.area.update(table, list(f.types))
        what = "every bucket" if s.resolution == "bucket" else _STAT_TEXT[s.stat]
        self.figure.title.text = f"Traffic by network type ({what}, bits per second)"
        days, gaps = q.days_with_data(f)
        total = q.volume(f, ()).iloc[0]
        note = f"{units.fmt(total, 'volume')} over {days} days with data"
        if gaps:
            note += f"; {gaps} days without any record are left as gaps"
        self.note.text = f"<p class='fa-note fa-overview-note'>{note}</p>"

    def _on_tap(self, page, event) -> None:
        """Drill into the network type whose band holds the clicked point."""
        if event.x is None or event.y is None:
            return
        name = self.area.band_at(float(event.x), float(event.y))
        if name is not None:
            page.select((None, name))
