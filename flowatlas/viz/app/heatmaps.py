"""Heatmaps tab: region x network type for volume, magnitude, uniqueness and concentration.

Every cell shows its value in its unit (hover too); the colour scale is log or linear.
Selecting a cell in any heatmap selects it in all of them and drills into it.
"""

from __future__ import annotations

import html

from bokeh.layouts import column

from flowatlas.viz.charts import WIDTH, Heatmap, div

NAME = "heatmaps"
TITLE = "Heatmaps"

#: (measure, title, unit kind, source name)
MAPS = (
    ("bytes", "Volume: bytes, sampling-corrected", "volume", "heatmap-volume"),
    ("magnitude", "Magnitude: bits per unique remote IP", "magnitude", "heatmap-magnitude"),
    ("uniques", "Uniqueness: distinct remote IPs", "count", "heatmap-uniqueness"),
    ("top10_share", "Concentration: top-10 remote IPs' share of volume", "share",
     "heatmap-top10"),
    ("hhi", "Concentration: Herfindahl-Hirschman index of volume over remote IPs", "index",
     "heatmap-hhi"),
)  # fmt: skip


class View:
    TITLE = TITLE
    NAME = NAME

    def __init__(self, page) -> None:
        self.maps = []
        self.notes = []
        items = []
        for measure, title, kind, name in MAPS:
            h = Heatmap(title, kind, name, log=page.state.scale == "log")
            h.source.selected.on_change(
                "indices", lambda attr, old, new, h=h: self._on_select(page, h, new)
            )
            note = div(text="", name=f"{name}-note", width=WIDTH)
            self.maps.append((measure, h))
            self.notes.append(note)
            items += [h.figure, note]
        self.layout = column(*items)
        self._syncing = False

    def update(self, page) -> None:
        q, _ = page.query()
        log = page.state.scale == "log"
        for (measure, h), note in zip(self.maps, self.notes, strict=True):
            m, how = q.matrix(page.filters, measure)
            if h.log != log:
                h.set_scale(log)
            h.update(m)
            text = f"{how}"
            if measure in ("top10_share", "hhi") and m.isna().all().all():
                text += (
                    "; concentration is stored for whole periods and single directions only: "
                    "choose a whole day, month or quarter (Period menu)"
                )
            note.text = f"<p class='fa-note'>{html.escape(text)}</p>"
        self.show_selection(page)

    def show_selection(self, page) -> None:
        """Select the page's cell in every heatmap (or clear the selection)."""
        self._syncing = True
        try:
            cell = page.state.cell
            for _, h in self.maps:
                d = h.source.data
                idx = [
                    i
                    for i, (r, t) in enumerate(zip(d["region"], d["network_type"], strict=True))
                    if cell is not None and cell[0] == r and cell[1] == t
                ]
                if list(h.source.selected.indices) != idx:
                    h.source.selected.indices = idx
        finally:
            self._syncing = False

    def _on_select(self, page, h: Heatmap, indices) -> None:
        if self._syncing:
            return
        if not indices:
            return
        i = indices[0]
        d = h.source.data
        page.select((str(d["region"][i]), str(d["network_type"][i])))
