"""A build dies at any moment, runs out of disk, races another: the output stays whole.

Before (issue 13): a crash between the two renames of ``build --overwrite`` left no cube at
``--out`` (the old one hid in ``.CUBE.old-PID``, never restored), a full disk during a disk
shuffle, ``--scheduler notaurl``, both ``--processes`` workers killed at once and two builds
of one ``--out`` ended in tracebacks, and ``config --check`` said OK for an exporter listed
in two regions, which ``build`` then rejected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from flowatlas.cli import main
from flowatlas.config import Config, Region, config_from_dict
from flowatlas.engine.build import build_cube
from flowatlas.errors import ConfigError
from flowatlas.io.swap import RecoveryWarning, output_lock, recover_output
from flowatlas.synth import synthesize
from flowatlas.testing import mounted_tmpfs

CUBE_FILES = ("cells.parquet", "rollups.parquet", "cube.json")


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> tuple[Path, Path]:
    """Two different archives: the cube of one (old) is replaced by the other's (new)."""
    d = tmp_path_factory.mktemp("swap")
    synthesize(d / "old", records=6_000, days=3, seed=1)
    synthesize(d / "new", records=7_000, days=3, seed=2)
    return d / "old", d / "new"


@pytest.fixture(scope="module")
def cubes(archives, tmp_path_factory) -> tuple[dict, dict]:
    d = tmp_path_factory.mktemp("cubes")
    build_cube(archives[0], d / "old", workers=0)
    build_cube(archives[1], d / "new", workers=0)
    return cube_bytes(d / "old"), cube_bytes(d / "new")


def cube_bytes(path: Path) -> dict[str, bytes]:
    return {n: (path / n).read_bytes() for n in CUBE_FILES}


def hidden(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# --------------------------------------------------------------------------- --overwrite


DRIVER = """
import os, signal, sys
import flowatlas.io.swap as swap
from flowatlas.engine.build import build_cube

point, exchange, archive, out = sys.argv[1:5]
if exchange == "no":
    swap._exchange = lambda a, b: False  # a file system without RENAME_EXCHANGE

def fault(at):
    if at == point:
        os.kill(os.getpid(), signal.SIGKILL)

swap._fault = fault
build_cube(archive, out, workers=0, overwrite=True)
"""


@pytest.mark.parametrize(
    ("point", "exchange"),
    [
        ("written", "yes"),
        ("swapped", "yes"),
        ("written", "no"),
        ("old-moved", "no"),
        ("swapped", "no"),
    ],
)
def test_killed_overwrite_leaves_old_or_new_cube(archives, cubes, tmp_path, point, exchange):
    old, new = cubes
    out = tmp_path / "cube"
    build_cube(archives[0], out, workers=0)
    r = subprocess.run(
        [sys.executable, "-c", DRIVER, point, exchange, str(archives[1]), str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    # the moment the process died: the old cube, the new one, or (between the two renames of
    # a file system that cannot swap) the old one waiting beside it
    if out.exists():
        assert cube_bytes(out) in (old, new)
    else:
        assert point == "old-moved"
        [waiting] = [p for p in tmp_path.iterdir() if ".old-" in p.name]
        assert cube_bytes(waiting) == old
    # the next run repairs what the dead one left, and says so
    with pytest.warns(RecoveryWarning) as said:
        recover_output(out)
    assert said, "nothing was recovered"
    assert cube_bytes(out) == (new if point == "swapped" else old)
    assert hidden(tmp_path, "cube") in ([], [".cube.lock"])  # a lock nobody holds


def test_leftovers_of_a_live_build_are_left_alone(tmp_path):
    out = tmp_path / "cube"
    mine = tmp_path / f".cube.partial-{os.getpid()}"
    mine.mkdir()
    assert recover_output(out) == []
    assert mine.exists()


@pytest.mark.filterwarnings("always::flowatlas.io.swap.RecoveryWarning")
def test_next_build_recovers_and_says_so(archives, cubes, tmp_path, capsys):
    new = cubes[1]
    out = tmp_path / "cube"
    build_cube(archives[0], out, workers=0)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    os.rename(out, tmp_path / f".cube.old-{dead}")
    (tmp_path / f".cube.partial-{dead}").mkdir()
    assert main(["build", str(archives[1]), "--out", str(out), "--overwrite", "-q"]) == 0
    said = capsys.readouterr().err.splitlines()
    assert said == [
        f"flowatlas: warning: {out}: restored the cube an interrupted --overwrite had moved to "
        f"{tmp_path / f'.cube.old-{dead}'}",
        f"flowatlas: warning: {out}: removed .cube.partial-{dead}, left by a run that died",
    ]
    assert cube_bytes(out) == new
    assert hidden(tmp_path, "cube") == []


# --------------------------------------------------------------------------- one build per --out


def test_second_build_of_one_output_is_refused(archives, tmp_path, capsys):
    out = tmp_path / "cube"
    with output_lock(out):
        code = main(["build", str(archives[0]), "--out", str(out), "--shuffle", "disk", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{out}: another flowatlas build is writing it (pid {os.getpid()} on " in err
    assert not out.exists() and not (tmp_path / ".cube.work").exists()
    assert main(["build", str(archives[0]), "--out", str(out), "--shuffle", "disk", "-q"]) == 0
    assert hidden(tmp_path, "cube") == []  # no lock file, no work directory left


def test_two_builds_at_once_with_a_disk_shuffle(archives, cubes, tmp_path):
    """Really concurrent: one of the two is refused at once, the other builds the cube."""
    out = tmp_path / "cube"
    cmd = [sys.executable, "-m", "flowatlas", "build", str(archives[0]), "--out", str(out)]
    cmd += ["--shuffle", "disk", "--workers", "0", "-q"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    if codes == [0, 0]:  # one finished before the other started: then it found the cube
        pytest.fail("both builds succeeded: the second should have found the cube there")
    assert codes == [0, 2], results
    [why] = [err for code, err in results if code == 2]
    assert "another flowatlas build is writing it" in why or "already exists" in why
    assert why.count("\n") == 1
    assert cube_bytes(out) == cubes[0]


# --------------------------------------------------------------------------- full disk


@pytest.fixture
def tiny_disk(tmp_path):
    with mounted_tmpfs(tmp_path / "tiny", "64k") as mnt:
        yield mnt


def test_full_disk_in_the_shuffle_is_one_line(archives, cubes, tmp_path, tiny_disk, capsys):
    out = tmp_path / "cube"
    work = tiny_disk / "work"
    argv = ["build", str(archives[0]), "--out", str(out), "--work-dir", str(work), "-q"]
    assert main([*argv, "--partition-rows", "500"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{work}: cannot write the build's work directory: No space left on device" in err
    assert not out.exists()
    assert not [p for p in work.rglob("*") if ".tmp" in p.name]  # nothing half-written
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    assert main([*argv, "--partition-rows", "500"]) == 0  # resumes
    assert cube_bytes(out) == cubes[0]


def test_full_disk_for_the_cube_itself_is_one_line(archives, tmp_path, tiny_disk, capsys):
    (tiny_disk / "fill").write_bytes(b"\0" * 60_000)  # nearly full
    out = tiny_disk / "cube"
    assert main(["build", str(archives[0]), "--out", str(out), "--shuffle", "memory", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{out}: cannot write cube: " in err and "No space left on device" in err
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["fill"]  # nothing half-written


# --------------------------------------------------------------------------- Dask


def test_scheduler_that_is_not_an_address(archives, tmp_path, capsys):
    out = tmp_path / "cube"
    assert main(["build", str(archives[0]), "--out", str(out), "--scheduler", "notaurl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--scheduler 'notaurl' is not a Dask scheduler address" in err


def test_cluster_failures_are_told_from_bugs():
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    from flowatlas.engine.execution import _is_cluster_failure

    assert _is_cluster_failure(KilledWorker("map-1", "tcp://127.0.0.1:1", 3))
    assert _is_cluster_failure(FutureCancelledError("reduce-1", "lost"))
    assert not _is_cluster_failure(ValueError("a bug in a task"))


def test_both_worker_processes_killed_at_once(archives, cubes, tmp_path):
    """The build survives losing every worker at once, with the same cube."""
    out = tmp_path / "cube"
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "flowatlas", "build", str(archives[0]), "--out", str(out)]
    cmd += ["--processes", "--workers", "2", "--partition-rows", "300", "--work-dir", str(work)]
    proc = subprocess.Popen([*cmd, "-q"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # wait for the map stage: both workers up, some map results written
        while not (work / "map").is_dir() or len(list((work / "map").iterdir())) < 2:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the build never started mapping"
            time.sleep(0.02)
        workers = [
            c
            for c in psutil.Process(proc.pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        assert len(workers) == 2, workers
        for w in workers:
            w.kill()
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert cube_bytes(out) == cubes[0]


# --------------------------------------------------------------------------- regions


REGIONS_TOML = """
[[regions]]
name = "US-West"
prefixes = ["198.18.0.0/17"]
exporters = ["10.0.0.1"]
[[regions]]
name = "US-East"
prefixes = ["{prefix}"]
exporters = ["{exporter}"]
"""


@pytest.mark.parametrize(
    ("prefix", "exporter", "what"),
    [
        ("198.18.0.0/17", "10.0.0.2", "prefix 198.18.0.0/17"),
        ("198.18.128.0/17", "10.0.0.1", "exporter 10.0.0.1"),
    ],
)
def test_config_check_and_build_agree_on_two_regions(archives, tmp_path, capsys, prefix,
                                                     exporter, what):  # fmt: skip
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent(REGIONS_TOML.format(prefix=prefix, exporter=exporter)))
    assert main(["config", "--check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"flowatlas: error: {cfg}: {what} is listed in two regions, 'US-West' and 'US-East'\n"
    )
    out = tmp_path / "cube"
    assert main(["build", str(archives[0]), "--out", str(out), "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == err
    # a configuration made in Python is checked the same way by the build
    regions = (Region("A", ("198.18.0.0/17",), ()), Region("B", ("198.18.0.0/17",), ()))
    with pytest.raises(ConfigError, match="listed in two regions, 'A' and 'B'"):
        build_cube(archives[0], out, config=Config(regions=regions), workers=0)


def test_nested_prefixes_in_two_regions_are_fine():
    cfg = config_from_dict(
        {
            "regions": [
                {"name": "A", "prefixes": ["198.18.0.0/15"]},
                {"name": "B", "prefixes": ["198.18.0.0/17"]},
            ]
        }
    )
    assert [r.name for r in cfg.regions] == ["A", "B"]


# --------------------------------------------------------------------------- synth --overwrite

SYNTH_DRIVER = """
import os, signal, sys
import flowatlas.io.swap as swap
from flowatlas.synth import synthesize

point, exchange, out = sys.argv[1:4]
if exchange == "no":
    swap._exchange = lambda a, b: False

def fault(at):
    if at == point:
        os.kill(os.getpid(), signal.SIGKILL)

swap._fault = fault
synthesize(out, records=7_000, days=3, seed=2, workers=1, overwrite=True)
"""


def archive_bytes(path: Path) -> dict[str, bytes]:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


@pytest.mark.parametrize(
    ("point", "exchange"),
    [("written", "yes"), ("swapped", "yes"), ("old-moved", "no"), ("swapped", "no")],
)
def test_killed_synth_overwrite_leaves_old_or_new_archive(archives, tmp_path, point, exchange):
    """Before: ``synth --overwrite`` deleted the old archive first; a crash left half a new one."""
    old, new = archive_bytes(archives[0]), archive_bytes(archives[1])
    out = tmp_path / "archive"
    synthesize(out, records=6_000, days=3, seed=1, workers=1)
    r = subprocess.run(
        [sys.executable, "-c", SYNTH_DRIVER, point, exchange, str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    if out.exists():
        assert archive_bytes(out) in (old, new)
    else:
        assert point == "old-moved"
    with pytest.warns(RecoveryWarning):
        recover_output(out, marker="_synth.json", what="archive")
    assert archive_bytes(out) == (new if point == "swapped" else old)
    assert hidden(tmp_path, "archive") in ([], [".archive.lock"])


@pytest.mark.filterwarnings("always::flowatlas.io.swap.RecoveryWarning")
def test_next_synth_recovers_and_says_so(archives, tmp_path, capsys):
    out = tmp_path / "archive"
    synthesize(out, records=6_000, days=3, seed=1, workers=1)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    os.rename(out, tmp_path / f".archive.old-{dead}")
    (tmp_path / f".archive.partial-{dead}").mkdir()
    args = ["--records", "7000", "--days", "3", "--seed", "2", "--workers", "1", "--overwrite"]
    args.append("-q")
    assert main(["synth", "--out", str(out), *args]) == 0
    said = capsys.readouterr().err.splitlines()
    assert said == [
        f"flowatlas: warning: {out}: restored the archive an interrupted --overwrite had moved "
        f"to {tmp_path / f'.archive.old-{dead}'}",
        f"flowatlas: warning: {out}: removed .archive.partial-{dead}, left by a run that died",
    ]
    assert archive_bytes(out) == archive_bytes(archives[1])
    assert hidden(tmp_path, "archive") == []


def test_failed_synth_keeps_the_old_archive(tmp_path, capsys):
    """A full disk half-way through a new archive: one line, and the old archive untouched."""
    with mounted_tmpfs(tmp_path / "small", "1m") as disk:
        out = disk / "archive"
        synthesize(out, records=2_000, days=2, seed=1, workers=1)
        before = archive_bytes(out)
        args = ["--records", "300000", "--days", "3", "--workers", "1", "--overwrite", "-q"]
        assert main(["synth", "--out", str(out), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(out) in err[0] and "No space left" in err[0], err
        assert archive_bytes(out) == before
        assert hidden(disk, "archive") == []


def test_counts_of_another_reduce_format_are_recounted(tmp_path, monkeypatch) -> None:
    """A work directory's reducer counts from a build whose counts meant something else
    (another REDUCE_FORMAT) are dropped when it is reopened; its map results stay."""
    from flowatlas.engine import workdir

    work = workdir.WorkDir(tmp_path / "w", {"plan": "p"})
    work.open(["task-a"])
    work._reduce_path(0).write_bytes(b"old counts")
    assert workdir.WorkDir(tmp_path / "w", {"plan": "p"}).open(["task-a"]) == 0
    again = workdir.WorkDir(tmp_path / "w", {"plan": "p"})
    again.open(["task-a"])
    assert again.reduce_done(0)
    monkeypatch.setattr(workdir, "REDUCE_FORMAT", workdir.REDUCE_FORMAT + 1)
    newer = workdir.WorkDir(tmp_path / "w", {"plan": "p"})
    newer.open(["task-a"])
    assert not newer.reduce_done(0)
    assert not any((tmp_path / "w" / "reduce").iterdir())


def test_threads_resume_from_saved_reducer_counts(archives, cubes, tmp_path, monkeypatch):
    """A threaded disk-shuffle build that dies in a reducer resumes from the counts the
    reducers before it saved (read back, not recounted) and gives the same cube; the
    reducers' counts reach the combiner in memory otherwise."""
    from flowatlas.engine import pipeline, workdir

    real = pipeline.reduce_partition
    reduced: list[int] = []
    fail = [True]

    def failing(pieces, plan):
        reduced.append(1)
        if fail[0] and len(reduced) == 3:
            raise RuntimeError("reducer killed")
        return real(pieces, plan)

    monkeypatch.setattr(pipeline, "reduce_partition", failing)
    work, out = tmp_path / "w", tmp_path / "cube"
    kw = dict(workers=1, partitions=6, work_dir=work, shuffle="disk")
    with pytest.raises(RuntimeError, match="reducer killed"):
        build_cube(archives[0], out, **kw)
    saved = sorted(int(p.name[:4]) for p in (work / "reduce").iterdir())
    # the two reducers before the failing one, and any the worker started meanwhile
    assert 2 <= len(saved) < 6 and 2 not in saved
    loads: list[int] = []
    real_load = workdir.WorkDir.load_counts
    monkeypatch.setattr(
        workdir.WorkDir, "load_counts", lambda self, j: loads.append(j) or real_load(self, j)
    )
    reduced.clear()
    fail[0] = False
    build_cube(archives[0], out, **kw)
    assert len(reduced) == 6 - len(saved) and sorted(loads) == saved  # saved ones read back
    assert cube_bytes(out) == cubes[0]


def test_rows_dropped_before_the_cube_resume_from_the_counts(
    archives, cubes, tmp_path, monkeypatch
):
    """The map tasks' rows go once every reducer's counts are saved, while the cube is made:
    a build that dies then (some rows files gone, some not) resumes from the map heads and
    the saved counts alone, with no map task or reducer run again, and gives the same cube;
    a build that returns leaves no work directory behind."""
    from flowatlas.engine import build, pipeline, workdir

    real_unlink, real_rollups = workdir._unlink_rows, build.rollups_table
    monkeypatch.setattr(workdir, "_unlink_rows", lambda root, keys: real_unlink(root, keys[::2]))

    def dying(*a, **k):
        raise RuntimeError("killed while the cube is written")

    monkeypatch.setattr(build, "rollups_table", dying)
    work, out = tmp_path / "w", tmp_path / "cube"
    kw = dict(workers=2, partitions=6, work_dir=work, shuffle="disk", partition_rows=1_000)
    with pytest.raises(RuntimeError, match="killed while"):
        build_cube(archives[0], out, **kw)
    tasks = sorted((work / "map").iterdir())
    rows = [(t / workdir.ROWS_FILE).exists() for t in tasks]
    assert len(tasks) > 2 and any(rows) and not all(rows)  # half of them dropped
    assert len(list((work / "reduce").iterdir())) == 6
    monkeypatch.setattr(workdir, "_unlink_rows", real_unlink)
    monkeypatch.setattr(build, "rollups_table", real_rollups)
    ran: list[str] = []
    for name in ("map_task", "reduce_partition"):
        real = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name, lambda *a, _r=real, _n=name: ran.append(_n) or _r(*a))
    build_cube(archives[0], out, **kw)
    assert ran == []
    assert cube_bytes(out) == cubes[0]
    assert not work.exists()


@pytest.mark.parametrize("case", ["counted", "one count missing", "keep rows", "no partitions"])
def test_map_results_without_rows_are_redone_where_a_reducer_needs_them(tmp_path, case):
    """A map result whose rows file was dropped counts as done only while every reducer's
    counts of the build's task set are saved and the build keeps no state."""
    from flowatlas.engine import workdir

    sig = {"plan": "p"} if case == "no partitions" else {"plan": "p", "partitions": 3}
    keys = ["task-a", "task-b"]
    work = workdir.WorkDir(tmp_path / "w", sig)
    work.open(keys)
    for k in keys:
        (work.root / "map" / k).mkdir()
        (work.root / "map" / k / "sums.npz").write_bytes(b"")
    (work.root / "map" / "task-a" / workdir.ROWS_FILE).write_bytes(b"")
    for j in range(3):
        if not (case == "one count missing" and j == 1):
            work._reduce_path(j).write_bytes(b"counts")
    again = workdir.WorkDir(tmp_path / "w", sig)
    done = again.open(keys, keep_rows=case == "keep rows")
    assert done == (2 if case == "counted" else 1)
    assert again.map_done("task-a")
    assert again.map_done("task-b") == (case == "counted")
