"""No import worker outlives its parent: kill the import, and nothing writes after it.

Before (issue 13), SIGKILL or SIGTERM of ``flowatlas import`` left its worker processes
running: they finished their files, renamed them into the archive after the parent was dead
and then sat idle. Workers now die with the import (Linux's parent-death signal), and the
next import resumes to the same archive as an undisturbed one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_import_damage import big_csv

from flowatlas.io.commands import import_sources

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's"
)


def finished(archive: Path) -> set[str]:
    """The archive files renamed into place (not hidden, not in _import)."""
    return {
        p.relative_to(archive).as_posix()
        for p in archive.glob("day=*/*.parquet")
        if not p.name.startswith(".")
    }


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    """Poll a state (never a fixed sleep) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Four CSVs of about 33 MB: each spans several of the fast CSV path's 8 MiB blocks, so a
    worker is still writing for a good while after its first hidden file appears (at 30,000
    rows one block held a whole file, which a worker could finish between the test's look at
    the archive and its signal)."""
    d = tmp_path_factory.mktemp("sources")
    return [big_csv(d / f"s{i}.csv", 300_000 + i, days=2) for i in range(4)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_import_leaves_no_worker_and_no_late_file(sources, tmp_path, sig):
    out = tmp_path / "a"
    cmd = [sys.executable, "-m", "flowatlas", "import", "-q", "-j", "2", "--batch-rows", "2000"]
    proc = subprocess.Popen([*cmd, *map(str, sources), "--out", str(out)])
    try:
        # a worker is writing (its hidden .tmp file exists), none has finished a file yet
        wait_for(lambda: any(out.glob("day=*/.*.tmp")) or proc.poll() is not None, "a worker")
        assert proc.poll() is None, "the import finished before it could be killed"
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "no worker processes"
        at_kill = finished(out)
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"workers outlived the import: {[p.pid for p in alive]}"
    assert finished(out) == at_kill, "a worker renamed a file into the archive after the kill"

    # the next import removes what the killed one left and gives the undisturbed archive
    s = import_sources(sources, out, jobs=2, batch_rows=2000, progress=False)
    assert not s.failed and len(s.imported) + len(s.skipped_known) == len(sources)
    ref = tmp_path / "ref"
    import_sources(sources, ref, jobs=1, batch_rows=2000, progress=False)
    assert finished(out) == finished(ref)
    for rel in finished(ref):
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
    assert not list(out.rglob(".*.tmp"))


def test_a_worker_killed_mid_import_is_one_line_and_resumes(sources, tmp_path):
    """A worker dying (the OOM killer, a kill -9) stops the import with one line."""
    out = tmp_path / "a"
    cmd = [sys.executable, "-m", "flowatlas", "import", "-q", "-j", "2", "--batch-rows", "2000"]
    proc = subprocess.Popen(
        [*cmd, *map(str, sources), "--out", str(out)], stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: any(out.glob("day=*/.*.tmp")) or proc.poll() is not None, "a worker")
        assert proc.poll() is None, "the import finished before a worker could be killed"
        workers = [
            c
            for c in psutil.Process(proc.pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        workers[0].kill()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "an import worker process died" in err
    s = import_sources(sources, out, jobs=2, batch_rows=2000, progress=False)
    assert not s.failed
    assert not list(out.rglob(".*.tmp"))
    m = json.loads((out / "_import" / "manifest.json").read_text())
    assert m["pending"] == [] and len(m["files"]) == len(sources)
