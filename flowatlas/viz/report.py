"""The report: one self-contained HTML page of Bokeh charts, PNGs of its figures, a summary.

The page needs no network to view (Bokeh's JavaScript is inlined). ``write_out`` writes a
directory: ``report.html``, one PNG per figure (drawn by headless Chromium through Bokeh's
``export_png``) and ``summary.md``, whose sentences are computed from the cube.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path

from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div
from bokeh.resources import INLINE

from flowatlas.errors import OutputError
from flowatlas.viz import units
from flowatlas.viz.charts import (
    WIDTH,
    Heatmap,
    StackedArea,
    div,
    html_table,
    ipv_data,
    ipv_figure,
    ipv_volume_data,
    ipv_volume_figure,
    log_range,
    magnitude_data,
    magnitude_figure,
    metro_data,
    metro_figure,
    metro_rows,
    shares_data,
    shares_figure,
)
from flowatlas.viz.query import OTHER_CLOUDS, Filters
from flowatlas.viz.summary import sentences
from flowatlas.viz.views import Views

HEATMAPS = (
    ("heatmap-volume", "Volume: region x network type (bytes)", "volume", "volume"),
    ("heatmap-magnitude", "Magnitude: bits per unique remote IP", "magnitude", "magnitude"),
    ("heatmap-uniqueness", "Uniqueness: distinct remote IPs", "count", "uniqueness"),
    ("heatmap-top10", "Concentration: top-10 remote IPs' share of volume", "share", "top10"),
    ("heatmap-hhi", "Concentration: Herfindahl-Hirschman index over remote IPs", "index", "hhi"),
)


def _note(text: str) -> Div:
    return div(text=f"<p class='fa-note'>{html.escape(text)}</p>", width=WIDTH)


def figures(views: Views, *, toolbars: bool = True) -> dict[str, object]:
    """Every figure of the report by name (the PNG file names), in page order."""
    figs: dict[str, object] = {}
    types = views.types
    area = StackedArea(types, "Traffic by network type (daily mean, bits per second)")
    area.update(views.daily, types)
    figs["overview"] = area.figure
    for name, title, kind, attr in HEATMAPS:
        h = Heatmap(title, kind, name, log=True)
        h.update(getattr(views, attr))
        figs[name] = h.figure
    cats = [*types, OTHER_CLOUDS]
    qs = views.quarterly_share
    sh = shares_figure(ColumnDataSource(shares_data(qs, cats)), "shares")
    sh.x_range.factors = [(c, str(p)) for c in cats if c in qs.columns for p in qs.index]
    figs["shares"] = sh
    for log in (True, False):
        data = magnitude_data(views.magnitude_by_type, log=log)
        name = "magnitude-log" if log else "magnitude-linear"
        p = magnitude_figure(ColumnDataSource(data), log=log, name=name)
        p.x_range.factors = list(data["network_type"])
        if log:
            p.y_range.start, p.y_range.end = log_range(data)
        figs[name] = p
    vol = ipv_volume_data(views.ip_versions)
    p = ipv_volume_figure(ColumnDataSource(vol), "ipv-volume")
    p.x_range.factors = list(vol["x"])
    figs["ipv-volume"] = p
    uq = ipv_data(views.ip_versions)
    p = ipv_figure(ColumnDataSource(uq), "ipv-uniques")
    p.x_range.factors = list(uq["x"])
    figs["ipv-uniques"] = p
    key = next((k for k in ("Neocloud", "all") if len(views.metros.get(k, ((),))[0])), None)
    if key is not None:
        who = "all traffic" if key == "all" else f"{key} traffic"
        source = ColumnDataSource(metro_data(views.metros[key][0]))
        figs["metros"] = metro_figure(source, f"Top metros of {who}'s remote endpoints",
                                      "metros")  # fmt: skip
    if not toolbars:
        for fig in figs.values():
            fig.toolbar_location = None
    return figs


def _share_table(views: Views) -> Div:
    qs, cmp = views.quarterly_share, views.comparison
    header = ["category", *[str(p) for p in qs.index], "change"]
    rows = [
        [c, *[units.share(float(v)) for v in qs[c]],
         units.points(float(cmp.deltas[c])) if cmp is not None else "-"]
        for c in [*views.types, OTHER_CLOUDS] if c in qs.columns
    ]  # fmt: skip
    return div(text=html_table(header, rows, "fa-shares"), width=WIDTH)


def metro_section(views: Views) -> Div:
    """Tables of the top metros: of each type of METRO_TYPES, then of all traffic."""
    parts = ["<h2>Metros of the remote endpoints</h2>"]
    for key, (df, note) in views.metros.items():
        parts.append(f"<h3>{html.escape('All traffic' if key == 'all' else key)}</h3>")
        parts.append(html_table(["metro", "country", "volume", "share"], metro_rows(df),
                                "fa-metros"))  # fmt: skip
        parts.append(f"<p class='fa-note'>{html.escape(note)}</p>")
    return div(text="".join(parts), width=WIDTH, name="metros")


def report_layout(views: Views, title: str, figs: dict[str, object] | None = None):
    """The report page: header, every figure with its note, the share and metro tables."""
    figs = figs or figures(views)
    span = f"{views.first:%Y-%m-%d} to {views.last:%Y-%m-%d}" if views.first is not None else ""
    q = views.query
    summary = "".join(f"<li>{html.escape(s)}</li>" for s in sentences(views))
    header = div(
        text=f"<h1>{html.escape(title)}</h1><p>{html.escape(span)}. Volume is "
        "sampling-corrected; magnitude is bits per unique remote IP over the whole range; "
        "uniqueness counts distinct remote IPs exactly.</p>"
        f"<ul class='fa-summary'>{summary}</ul>",
        width=WIDTH,
    )
    days, gaps = q.days_with_data(Filters())
    overview_note = f"{days} days with data" + (
        f"; {gaps} days without any record are gaps, not zeros" if gaps else ""
    )
    items = [header, figs["overview"], _note(overview_note)]
    for name, *_ in HEATMAPS:
        items.append(figs[name])
    items += [figs["shares"], _share_table(views)]
    items.append(row(figs["magnitude-log"], figs["magnitude-linear"]))
    items.append(row(figs["ipv-volume"], figs["ipv-uniques"]))
    items.append(metro_section(views))
    if "metros" in figs:
        items.append(figs["metros"])
    return column(*items)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the suffix PIL goes by
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def write_html(
    views: Views, path: str | os.PathLike[str], *, title: str = "flowatlas network report"
) -> Path:
    """Write the self-contained HTML report (Bokeh's JavaScript inlined)."""
    path = Path(path)
    if path.is_dir() or str(path).endswith(os.sep):
        raise OutputError(f"{path}: is a directory; give a file name (or use --out DIR)")
    page = file_html(report_layout(views, title), INLINE, title)
    _atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))
    return path


def write_pngs(
    figs: dict[str, object], out: Path, *, done: Callable[[], None] | None = None
) -> list[Path]:
    """One PNG per figure, drawn by headless Chromium (Bokeh's export_png); ``done`` is
    called after each (a second or more apiece: the long part of ``report --out``)."""
    from bokeh.io import export_png

    from flowatlas.viz.browser import chrome

    driver = chrome(WIDTH + 200, 1000)
    paths = []
    try:
        for name, fig in figs.items():
            path = out / f"{name}.png"
            _atomic_write(path, lambda p, fig=fig: _export(export_png, fig, p, driver))
            paths.append(path)
            if done is not None:
                done()
    finally:
        driver.quit()
    return paths


def _export(export_png, fig, path: Path, driver) -> None:
    export_png(fig, filename=str(path), webdriver=driver, timeout=60)


def write_out(
    views: Views,
    out: str | os.PathLike[str],
    *,
    title: str = "flowatlas network report",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Write OUT/report.html, OUT/<figure>.png and OUT/summary.md; returns what was written.

    ``progress(files written, files to write)`` is called after each file.
    """
    from flowatlas.viz.browser import check_browser
    from flowatlas.viz.summary import markdown

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    check_browser()
    figs = figures(views, toolbars=False)
    total, written = len(figs) + 2, 0
    if progress is not None:
        progress(0, total)

    def done() -> None:
        nonlocal written
        written += 1
        if progress is not None:
            progress(written, total)

    page = out / "report.html"
    write_html(views, page, title=title)
    done()
    pngs = write_pngs(figs, out, done=done)
    md = out / "summary.md"
    text = markdown(views, title=title, pngs=[p.name for p in pngs])
    _atomic_write(md, lambda p: p.write_text(text, encoding="utf-8"))
    done()
    return {"html": page, "pngs": pngs, "summary": md}
