"""`flowatlas serve`: bad input before the server starts, reloading, sessions over bokeh.client."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
from serve_support import Served, free_port, make_cube

from flowatlas.viz.app import cubes as cubes_mod
from flowatlas.viz.app.cubes import CubeSet


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return make_cube(tmp_path_factory.mktemp("serve"), records=5_000)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowatlas", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowatlas: error: "), p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_cube(tmp_path) -> None:
    one_line_error(run("serve", str(tmp_path / "nope")), "no such cube")


def test_corrupt_cube(tmp_path, cube) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(cube, bad)
    (bad / "cells.parquet").write_bytes(b"not parquet at all")
    one_line_error(run("serve", str(bad)), "unreadable")
    (bad / "cube.json").write_text("{")
    one_line_error(run("serve", str(bad)), "cube.json")


def test_a_file_is_not_a_cube(tmp_path, cube) -> None:
    one_line_error(run("serve", str(cube / "cells.parquet")), "is a file, not a cube directory")


def test_port_in_use(cube) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        one_line_error(run("serve", str(cube), "--port", str(port)), "already in use")


def test_unknown_option(cube) -> None:
    one_line_error(run("serve", str(cube), "--bogus"), "--bogus")


def test_other_hosts_need_an_explicit_origin(cube) -> None:
    port = str(free_port())
    one_line_error(run("serve", str(cube), "--host", "0.0.0.0", "--port", port),
                   "--allow-websocket-origin")  # fmt: skip
    for origin in ("a b/c", "a:b:c", "http://x"):
        p = run("serve", str(cube), "--host", "127.0.0.2", "--port", port,
                "--allow-websocket-origin", origin)  # fmt: skip
        one_line_error(p, "--allow-websocket-origin")


def test_reload_when_replaced_and_stale_when_unreadable(tmp_path, cube, monkeypatch) -> None:
    monkeypatch.setattr(cubes_mod, "CHECK_EVERY", 0.0)
    path = tmp_path / "c"
    shutil.copytree(cube, path)
    cs = CubeSet([path])
    q1, stale = cs.get("c")
    assert stale is None
    # replaced on disk (as build --overwrite does: a new directory renamed into place)
    other = make_cube(tmp_path / "other", records=3_000, seed=9)
    shutil.rmtree(path)
    shutil.copytree(other, path)
    q2, stale = cs.get("c")
    assert stale is None and q2 is not q1
    assert q2.cube.meta["records"] == json.loads((other / "cube.json").read_text())["records"]
    # half-written: the copy in memory stays, and says why it is stale
    time.sleep(0.01)
    (path / "cells.parquet").write_bytes(b"partial")
    q3, stale = cs.get("c")
    assert q3 is q2 and stale and "stale" in stale and "cannot be read" in stale
    # the same file back: the copy in memory is current again
    shutil.copy2(other / "cells.parquet", path / "cells.parquet")
    q4, stale = cs.get("c")
    assert stale is None and q4 is q2
    # a third cube replaces it: reloaded
    third = make_cube(tmp_path / "third", records=2_000, seed=11)
    shutil.rmtree(path)
    shutil.copytree(third, path)
    q5, stale = cs.get("c")
    assert stale is None and q5 is not q2


def test_names_are_fixed_at_start(tmp_path, cube) -> None:
    shutil.copytree(cube, tmp_path / "a" / "cube")
    shutil.copytree(cube, tmp_path / "b" / "cube")
    cs = CubeSet([tmp_path / "a" / "cube", tmp_path / "b" / "cube"], previous=cube)
    assert cs.names == ["a", "b"]
    with pytest.raises(KeyError):
        cs.get(str(tmp_path / "a" / "cube"))  # a path is not a name


def test_sessions_drive_callbacks_over_bokeh_client(tmp_path, cube) -> None:
    """A client session changes a filter and selects a cell; the server's answers come back."""
    from bokeh.client import pull_session

    from flowatlas.engine.cube import open_cube

    srv = Served([cube], tmp_path / "serve.log")
    try:
        session = pull_session(url=srv.url)
        doc = session.document
        status = doc.select_one({"name": "status"})
        assert status.text.startswith("generation 1")

        def wait(pred, timeout=30):
            deadline = time.monotonic() + timeout
            conn = session._connection
            while not pred():
                assert time.monotonic() < deadline, status.text
                conn._loop.call_later(0.5, lambda: None)
                conn._loop_until(lambda: pred() or time.monotonic() > deadline)

        assert doc.select_one({"name": "heatmap-volume"}) is None  # built when first shown
        doc.select_one({"name": "tabs"}).active = 1
        wait(lambda: status.text.startswith("generation 2"))
        doc.select_one({"name": "filter-ip"}).active = 2  # IPv6 only
        wait(lambda: status.text.startswith("generation 3"))
        assert "error" not in status.text
        heat = doc.select_one({"name": "heatmap-volume"})
        d = heat.data
        i = next(k for k, (r, t) in enumerate(zip(d["region"], d["network_type"], strict=True))
                 if (r, t) == ("US-East", "Neocloud"))  # fmt: skip
        heat.selected.indices = [i]
        wait(lambda: status.text.startswith("generation 4"))  # the status is written last
        assert "US-East x Neocloud" in doc.select_one({"name": "drill-title"}).text
        # no list is stored per (region, type, IP version): the cell's list, saying so
        want = open_cube(cube).top_asns(
            by=("region", "network_type"), where={"region": "US-East", "network_type": "Neocloud"}
        )
        html = doc.select_one({"name": "drill-asns"}).text
        assert f"AS{int(want.sort_values('rank')['asn'].iloc[0])}<" in html
        assert "all ip versions" in html
        session.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.output()


def test_port_is_free_after_stop(tmp_path, cube) -> None:
    srv = Served([cube], tmp_path / "serve.log")
    srv.stop()
    assert srv.proc.returncode is not None
    assert free_port()


def _page(cubes, tab: str = "overview", args: dict | None = None, scenarios=None):
    """A page built in-process, as the server builds one per session (``scenarios``: the
    what-if tab's, as ``flowatlas serve --scenario`` gives them)."""
    from bokeh.document import Document

    from flowatlas.viz.app import TABS
    from flowatlas.viz.app.page import Page

    class Request:
        def __init__(self) -> None:
            self.arguments = {k: [v.encode()] for k, v in (args or {}).items()}

    class Context:
        request = Request()

    doc = Document()
    doc._session_context = lambda: Context()  # what a served session has: the request
    page = Page(doc, cubes, TABS, scenarios)
    page.tabs.active = [m.NAME for m in TABS].index(tab)
    return page


def test_shares_against_a_previous_cube(tmp_path, cube) -> None:
    prev = make_cube(tmp_path / "prev", records=3_000, seed=5)
    page = _page(CubeSet([cube], previous=prev), "shares")
    view = page.views[page.tabs.active]
    text = view.table.text
    assert "<th>prev (previous)</th>" in text and "change from prev (previous)" in text
    assert view.source.data["x"][0][1] == "prev (previous)"
    assert "error" not in page.status.text


def test_page_says_when_its_cube_is_stale(tmp_path, cube, monkeypatch) -> None:
    monkeypatch.setattr(cubes_mod, "CHECK_EVERY", 0.0)
    path = tmp_path / "c"
    shutil.copytree(cube, path)
    page = _page(CubeSet([path]), args={"start": "2025-13-01"})
    assert "ignored URL argument start=&#x27;2025-13-01&#x27;" in page.notice.text
    page.w_regions.active = [0]  # a filter the reload keeps
    (path / "cells.parquet").write_bytes(b"half")
    page._check_stale()
    assert "stale" in page.notice.text and "cannot be read" in page.notice.text
    assert page.status.text.startswith("generation") and "error" not in page.status.text
    # a whole new cube in place: reloaded, the page redrawn from it, filters kept
    before = page.query()[0]
    new = make_cube(tmp_path / "new", records=3_000, seed=8)
    shutil.rmtree(path)
    shutil.copytree(new, path)
    page._check_stale()
    q, stale = page.query()
    assert q is not before and stale is None and "stale" not in page.notice.text
    assert page.state.filters.regions == (q.regions[0],)
    assert "error" not in page.status.text and " loaded " in page.status.text


def test_bench_serve_smoke(tmp_path) -> None:
    """bench/bench_serve.py still runs end to end (2 sessions, a week): no speed asserted."""
    from flowatlas.testing import REPO_ROOT

    results = tmp_path / "RESULTS.md"
    p = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_serve.py"), "--smoke",
                        "--results", str(results)], capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    text = results.read_text()
    assert "## Serve load (bench_serve.py)" in text and "0 errors" in text
    assert re.search(r"\| all +\| 8 +\|", text), text


def test_switching_cubes(tmp_path, cube) -> None:
    other = make_cube(tmp_path / "second", records=3_000, seed=4)
    page = _page(CubeSet([cube, other]), "heatmaps")
    assert page.w_cube.visible and page.w_cube.options == [cube.parent.name, "second"]
    page.w_cube.value = "second"
    assert page.state.cube == "second" and "error" not in page.status.text
    assert "cube=second" in page.url.text
    q, _ = page.query()
    total = q.volume(q.normalize(page.filters), ("region", "network_type"))
    heat = page.views[1].maps[0][1].source.data
    assert sum(v for v in heat["value"] if v == v) == pytest.approx(float(total.sum()))
