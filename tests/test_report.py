"""`flowatlas report`: --out (page, PNGs, computed summary), --html, sparse cubes, bad input."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from serve_support import colourful, keep_artefact, make_cube, make_sparse_cube, need_browser

from flowatlas.engine.cube import open_cube
from flowatlas.progress import Progress
from flowatlas.viz import units
from flowatlas.viz.charts import stack
from flowatlas.viz.report import HEATMAPS, write_html
from flowatlas.viz.summary import and_list, sentences
from flowatlas.viz.views import compute_views
from flowatlas.vocab import CLOUD_TYPES

FIGURES = ["overview", *[h[0] for h in HEATMAPS], "shares", "magnitude-log", "magnitude-linear",
           "ipv-volume", "ipv-uniques", "metros"]  # fmt: skip


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return make_cube(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    return make_sparse_cube(tmp_path_factory.mktemp("sparse"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowatlas", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_sentences_are_the_cubes_numbers(cube) -> None:
    """Every number in the summary, recomputed here from the cube's cells with pandas."""
    c = open_cube(cube)
    views = compute_views(c)
    text = sentences(views)
    cells = c.cells[c.cells["network_type"] != "Internal"]
    quarter = cells["bucket_start"].dt.tz_convert(None).dt.to_period("Q")
    vol = cells.assign(q=quarter).pivot_table(index="q", columns="network_type", values="bytes",
                                              aggfunc="sum", observed=True)  # fmt: skip
    share = vol.div(vol.sum(axis=1), axis=0)
    clouds = share[[t for t in CLOUD_TYPES if t in share.columns]].sum(axis=1)
    verb = "rose" if clouds.iloc[1] > clouds.iloc[0] else "fell"
    clouds_named = and_list([t for t in CLOUD_TYPES if t in share.columns])
    assert text[0] == (
        f"Traffic to other clouds ({clouds_named}) {verb} from "
        f"{100 * clouds.iloc[0]:.1f}% to {100 * clouds.iloc[1]:.1f}% of all traffic "
        "(from 2025Q3 to 2025Q4)."
    )
    for t in CLOUD_TYPES:
        s = next(x for x in text if x.startswith(f"{t}'s share"))
        assert f"{100 * share[t].iloc[0]:.1f}% to {100 * share[t].iloc[1]:.1f}%" in s
    cell = cells.groupby(["region", "network_type"], observed=True)["bytes"].sum().astype(float)
    (r, t), top = cell.idxmax(), cell.max()
    s = next(x for x in text if x.startswith("The largest volume"))
    assert s == (f"The largest volume is {r} <-> {t}: {units.fmt(float(top), 'volume')}, "
                 f"{100 * top / cell.sum():.1f}% of all traffic.")  # fmt: skip
    top = c.top_metros(by=("network_type",), where={"network_type": "Neocloud"}).head(6)
    metro = next(x for x in text if x.startswith("Neocloud endpoints cluster in"))
    assert (
        metro
        == "Neocloud endpoints cluster in "
        + ", ".join(
            f"{m} ({100 * sh:.1f}%)" for m, sh in zip(top["metro"], top["share"], strict=True)
        )
        + "."
    )
    v6 = float(cells[cells["ip_version"] == 6]["bytes"].sum()) / float(cells["bytes"].sum())
    assert any(x.startswith(f"IPv6 carries {100 * v6:.1f}% of the volume") for x in text)


def test_previous_cube_comparison(cube, tmp_path) -> None:
    prev = make_cube(tmp_path, records=5_000, seed=7)
    views = compute_views(open_cube(cube), open_cube(prev))
    assert views.quarterly_share.index[0] == f"{tmp_path.name} (previous)"
    assert f"from {tmp_path.name} (previous) (2025-07-01 to 2025-12-31)" in sentences(views)[0]
    cmp = views.comparison
    want = views.quarterly_share.iloc[0]
    np.testing.assert_allclose(cmp.before.to_numpy(), want.to_numpy())


def test_out_writes_page_pngs_and_summary(cube, tmp_path) -> None:
    need_browser()
    out = tmp_path / "rep"
    p = run("report", str(cube), "--out", str(out), "-q")
    assert p.returncode == 0, p.stderr
    assert (out / "report.html").stat().st_size > 100_000
    page = (out / "report.html").read_text()
    for title in (
        "Traffic by network type",
        "Volume: region x network type",
        "Magnitude: bits",
        "Uniqueness: distinct",
        "Concentration: top-10",
        "Herfindahl",
        "Share of all",
        "Magnitude by network type, log",
        "Magnitude by network type, linear",
        "Volume by IP version",
        "Distinct remote addresses by IP version",
        "Metros of the remote",
    ):
        assert title in page, title  # fmt: skip
    for name in FIGURES:
        png = out / f"{name}.png"
        keep_artefact(png)
        colours, busy = colourful(png)
        assert colours > 20 and busy > 0.05, (name, colours, busy)
    summary = (out / "summary.md").read_text()
    views = compute_views(open_cube(cube))
    for s in sentences(views):
        assert f"- {s}" in summary
    assert all(f"]({n}.png)" in summary for n in FIGURES)
    assert "| Other clouds |" in summary


#: every drawn axis (colour bars' too): [figure name, axis type, tick labels as drawn]
AXES_JS = """
if (!(window.Bokeh && Bokeh.index)) return null;
const axes = [...Bokeh.index.all_views()].filter(v => typeof v.compute_labels === "function");
if (!axes.length) return null;
return axes.map(v => [v.plot_view && v.plot_view.model ? v.plot_view.model.name : "colorbar",
                      v.model.type || v.model.constructor.name,
                      v.compute_labels(v.tick_coords.major[v.dimension]).items.map(b => b.text)]);
"""


def test_sparse_cube_renders_with_sane_axes(sparse, tmp_path) -> None:
    """A few hundred records over days with gaps: gaps stay gaps, axes read in units."""
    need_browser()
    from flowatlas.viz.browser import chrome

    views = compute_views(open_cube(sparse))
    gaps = views.daily.isna().all(axis=1)
    assert gaps.sum() == 16 and not views.daily[~gaps].isna().any().any()
    # each band is one polygon per run of days with data: three runs, two NaN breaks
    _, bands, _ = stack(views.daily, views.types, views.types, [True] * len(views.types))
    for i in range(len(views.types)):
        assert np.isnan(bands[f"x{i}"]).sum() == 2 and np.isnan(bands[f"y{i}"]).sum() == 2
    page = write_html(views, tmp_path / "sparse.html")
    d = chrome(1400, 1000)
    try:
        d.get(page.as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        axes = WebDriverWait(d, 60).until(lambda d: d.execute_script(AXES_JS))
        png = tmp_path / "report-sparse.png"
        d.save_screenshot(str(png))
        keep_artefact(png)
    finally:
        d.quit()
    by = {(name, kind): labels for name, kind, labels in axes}
    rate = by[("area", "LinearAxis")]
    assert len(rate) >= 3 and len(set(rate)) == len(rate), rate
    assert all(re.fullmatch(r"-?[\d.]+ [kMGTP]?bps", x) for x in rate), rate
    mag = by[("magnitude-linear", "LinearAxis")]
    assert len(set(mag)) == len(mag) and all(re.fullmatch(r"[\d.]+ [kMGTP]?b", x) for x in mag)
    vol = by[("ipv-volume", "LinearAxis")]
    assert len(set(vol)) == len(vol) and all(re.fullmatch(r"[\d.]+ [kMGTP]?B", x) for x in vol)
    for _, _, labels in axes:
        flat = [x if isinstance(x, str) else " ".join(x) for x in labels]
        assert not any(re.search(r"\de[+-]\d", x) for x in flat), flat
        assert len(set(flat)) == len(flat), flat


def test_html_option_and_bad_paths(cube, tmp_path) -> None:
    p = run("report", str(cube), "--html", str(tmp_path / "r.html"), "-q")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "r.html").stat().st_size > 100_000
    (tmp_path / "d").mkdir()
    for target in (str(tmp_path / "d"), str(tmp_path / "new") + "/"):
        p = run("report", str(cube), "--html", target, "-q")
        assert p.returncode == 2 and "use --out DIR" in p.stderr, p.stderr
    assert not (tmp_path / "new").exists()
    p = run("report", str(cube / "cells.parquet"))
    assert p.returncode == 2
    assert p.stderr.strip().endswith("directory that `flowatlas build` writes)"), p.stderr
    assert "is a file, not a cube directory" in p.stderr


def test_terminal_tables_use_the_units_module(cube) -> None:
    p = run("report", str(cube))
    assert p.returncode == 0, p.stderr
    assert re.search(r"\d+(\.\d+)? [EP]B", p.stdout)  # volume in bytes units
    assert re.search(r"\d+(\.\d+)? [PT]b", p.stdout)  # magnitude in bits per IP
    assert "Findings" in p.stdout and "pp" in p.stdout
    assert "Pbit" not in p.stdout and "e+" not in p.stdout


def test_demo_ends_with_the_serve_command(tmp_path) -> None:
    out = tmp_path / "demo dir"
    p = run("demo", "--records", "20000", "--out", str(out), "-q")
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last == f"explore it in a browser: flowatlas serve '{out / 'cube'}'"
    assert (out / "report.html").exists()


def test_out_without_a_browser_writes_nothing(tmp_path, cube) -> None:
    out = tmp_path / "rep"
    env = {**os.environ, "FLOWATLAS_CHROMIUM": str(tmp_path / "nope")}
    p = subprocess.run([sys.executable, "-m", "flowatlas", "report", str(cube), "--out",
                        str(out), "-q"], capture_output=True, text=True, timeout=120,
                       env=env)  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (
        "flowatlas: error: PNG export needs Chromium (Debian: apt-get install chromium "
        "chromium-driver)"
    )
    assert not out.exists()


def _report_lines(cube, **files) -> tuple[list[str], Progress]:
    """``report``'s progress as plain lines (no terminal), one per update."""
    from flowatlas.commands import _show_report

    stream = io.StringIO()
    bar = Progress("report", "steps", stream=stream, tty=False, interval=0)
    _show_report(cube, quiet=True, title="t", bar=bar, **files)
    return stream.getvalue().splitlines(), bar


def test_report_progress_counts_every_step(cube, tmp_path) -> None:
    lines, bar = _report_lines(cube, html=tmp_path / "r.html", previous=cube)
    steps = [line.split(",")[0] for line in lines]
    assert steps == [
        "report: open: 0/4 steps (0%)",
        "report: views: 2/4 steps (50%)",
        "report: views: 3/4 steps (75%)",
        "report: html: 3/4 steps (75%)",
        "report: html: 4/4 steps (100%)",
    ]
    assert bar.done == bar.total == 4 and (tmp_path / "r.html").exists()
    out = io.StringIO()
    from flowatlas.commands import _show_report

    _show_report(cube, None, True, "t", bar=Progress("report", "steps", stream=out, tty=True))
    assert "report" in out.getvalue() and "steps" in out.getvalue()  # a bar was drawn


def test_report_progress_counts_each_file_of_out(cube, tmp_path) -> None:
    need_browser()
    lines, bar = _report_lines(cube, html=None, out=tmp_path / "rep")
    files = [line.split(",")[0] for line in lines if line.startswith("report: files")]
    n = len(FIGURES) + 2  # the page, a PNG per figure, the summary
    assert files == [f"report: files: {2 + k}/{2 + n} steps ({100 * (2 + k) / (2 + n):.0f}%)"
                     for k in range(n + 1)]  # fmt: skip
    assert bar.done == bar.total == 2 + n
