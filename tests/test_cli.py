"""The CLI as a user meets it: real subprocesses, one-line errors, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(*args: str, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "flowatlas", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("flowatlas: error: "), lines[0]
    for n in needles:
        assert n in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_help_lists_commands() -> None:
    p = run("--help")
    assert p.returncode == 0
    for cmd in ("demo", "synth", "build", "report", "config"):
        assert cmd in p.stdout
    for cmd in ("demo", "synth", "build", "report", "config"):
        assert run(cmd, "--help").returncode == 0


def test_demo_end_to_end(tmp_path) -> None:
    p = run("demo", "--records", "30000", "--workers", "0", "--out", str(tmp_path / "d"), "-q")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for title in (
        "Share of traffic by network type",
        "Volume: region x network type",
        "Magnitude: region x network type",
        "Uniqueness: region x network type",
        "Volume by month",
        "Neocloud",
        "Migration",
        "capacity what-if: neocloud-migration",
        "links, soonest run-out first (scenario)",
    ):
        assert title in out
    # the run-out table is the cube's: its first link is the API's soonest run-out
    import re
    import warnings

    from flowatlas.engine.cube import open_cube
    from flowatlas.whatif import WhatIfWarning, example_scenario

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WhatIfWarning)  # 1 h buckets understate peaks
        summary = open_cube(tmp_path / "d" / "cube").whatif(example_scenario()).summary
    first = summary.iloc[0]
    assert re.search(rf"^\s*1\s+{re.escape(first['link'])}\s+{first['direction']}\s", out, re.M)
    assert out.rstrip().endswith(f"flowatlas serve {tmp_path / 'd' / 'cube'}")
    html = (tmp_path / "d" / "report.html").read_text()
    assert "Bokeh" in html and "<script" in html and "cdn.bokeh.org" not in html  # inlined JS
    # running it again reuses its own directory
    assert (
        run(
            "demo", "--records", "2000", "--workers", "0", "--out", str(tmp_path / "d"), "-q"
        ).returncode
        == 0
    )


def test_synth_build_report_and_config(tmp_path) -> None:
    a, c = tmp_path / "a", tmp_path / "c"
    assert run("synth", "--records", "5000", "--days", "5", "--out", str(a), "-q").returncode == 0
    p = run("build", str(a), "--out", str(c), "--workers", "0")
    assert p.returncode == 0, p.stderr
    assert "records/s" in p.stderr and (c / "cube.json").exists()
    assert "shuffle in memory" in p.stderr  # 5,000 records fit
    p = run("build", str(a), "--out", str(tmp_path / "c2"), "--shuffle", "disk")
    assert p.returncode == 0 and "shuffle on disk" in p.stderr, p.stderr
    assert (tmp_path / "c2" / "cells.parquet").read_bytes() == (c / "cells.parquet").read_bytes()
    p = run("report", str(c), "--html", str(tmp_path / "r.html"))
    assert p.returncode == 0 and "Uniqueness" in p.stdout and (tmp_path / "r.html").exists()
    p = run("config", "--dump")
    assert p.returncode == 0 and "[cube]" in p.stdout
    p = run("config", "--check", str(a / "flowatlas.toml"))
    assert p.returncode == 0 and "US-West" in p.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("build", "{tmp}/missing", "--out", "{tmp}/c"), ("missing: no such file or directory",)),
        (("build", "{tmp}/empty", "--out", "{tmp}/c"), ("empty: archive is empty",)),
        (("build", "{tmp}/wrong", "--out", "{tmp}/c"), ("x.parquet", "not a flow archive file")),
        (
            ("build", "{tmp}/synth", "-o", "{tmp}/c", "--shuffle", "memory", "--keep-state"),
            ("shuffle 'memory' cannot go with keeping the build state",),
        ),
        (("report", "{tmp}/missing"), ("missing: no such cube",)),
        (("config", "--check", "{tmp}/bad.toml"), ("bad.toml", "unknown key 'colour'")),
        (("synth", "--records", "10", "--start", "soon", "--out", "{tmp}/s"), ("--start",)),
        (("demo", "--out", "{tmp}/occupied"), ("occupied", "not a flowatlas demo directory")),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, needles) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "empty").mkdir()
    (tmp_path / "wrong").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "wrong" / "x.parquet")
    (tmp_path / "bad.toml").write_text("colour = 'blue'\n")
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "thesis.tex").write_text("precious")
    if "{tmp}/synth" in args:
        from flowatlas.synth import synthesize

        synthesize(tmp_path / "synth", records=200, days=1, seed=1)
    p = run(*(a.format(tmp=tmp_path) for a in args))
    one_line_error(p, *needles)


def test_unwritable_output(tmp_path) -> None:
    a = tmp_path / "a"
    assert run("synth", "--records", "500", "--days", "2", "--out", str(a), "-q").returncode == 0
    (tmp_path / "blocker").write_text("a file where a directory should be")
    p = run("build", str(a), "--out", str(tmp_path / "blocker" / "cube"), "--workers", "0")
    one_line_error(p, "blocker")
    assert not (tmp_path / "blocker" / "cube").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("build", "x", "-o", "y", "--backend", "tpu"), "Invalid value for '--backend'"),
        (("build",), "Missing argument 'ARCHIVE'"),
        (("frobnicate",), "No such command 'frobnicate'"),
        (("synth", "--records", "lots", "-o", "z"), "'lots' is not a valid integer"),
    ],
)
def test_usage_errors_are_one_line_too(args, needle) -> None:
    one_line_error(run(*args), needle, "--help")
