"""Faults: a worker killed mid-build must not change the cube."""

from __future__ import annotations

import os
import signal

import pytest

from flowatlas.engine.build import build_cube
from flowatlas.synth import synthesize

CUBE_FILES = ("cells.parquet", "rollups.parquet", "cube.json")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "archive"
    synthesize(root, records=60_000, days=30, seed=9)
    return root


def test_worker_killed_mid_build_gives_the_same_cube(archive, tmp_path):
    from distributed import Client, LocalCluster

    build_cube(archive, tmp_path / "undisturbed", workers=0, partitions=4)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    killed: list[int] = []
    try:
        pids = client.run(os.getpid)

        def kill_one(stage: str, done: int, total: int) -> None:
            # after the first map task finishes, kill the worker process of another
            if not killed and done >= 1:
                victim = sorted(pids.values())[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        build_cube(
            archive,
            tmp_path / "disturbed",
            scheduler=cluster.scheduler_address,
            partitions=4,
            partition_rows=4_000,
            progress=kill_one,
        )
    finally:
        client.close()
        cluster.close()
    assert killed, "the test never killed a worker"
    for name in CUBE_FILES:
        assert (tmp_path / "disturbed" / name).read_bytes() == (
            tmp_path / "undisturbed" / name
        ).read_bytes(), name


#: runs ``flowatlas build`` in a child that stops itself (SIGSTOP) right after its fifth map
#: result is in place, so the test kills it at a known state, however fast the machine
STOP_AFTER_FIVE_MAPS = """
import os, signal, sys
from flowatlas.engine import workdir
from flowatlas.cli import main
save = workdir.WorkDir.save_map
saved = []
def save_then_stop(self, key, result):
    save(self, key, result)
    saved.append(key)
    if len(saved) == 5:
        os.kill(os.getpid(), signal.SIGSTOP)
workdir.WorkDir.save_map = save_then_stop
sys.exit(main(sys.argv[1:]))
"""


def _wait_stopped(pid: int, timeout: float = 120.0) -> None:
    """Wait until process ``pid`` is stopped (state T in /proc), without racing its work."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        if state == "Z":
            raise AssertionError("the build finished before it stopped itself")
        time.sleep(0.01)
    raise AssertionError("the build did not reach its fifth map result")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")
def test_interrupted_build_resumes_without_double_counting(archive, tmp_path):
    import subprocess
    import sys

    build_cube(archive, tmp_path / "undisturbed", workers=0)
    out = tmp_path / "cube"
    work = tmp_path / ".cube.work"
    cmd = [sys.executable, "-c", STOP_AFTER_FIVE_MAPS, "build", str(archive), "-o", str(out)]
    cmd += ["--workers", "0", "--partition-rows", "1500", "--shuffle", "disk", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_stopped(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and work.exists()
    finished_before = len(list((work / "map").glob("[!.]*")))
    resumed: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "resume":
            resumed.append(done)

    build_cube(archive, out, workers=0, partition_rows=1500, shuffle="disk", progress=progress)
    assert resumed and resumed[0] >= finished_before >= 5
    assert not work.exists()
    for name in CUBE_FILES:
        assert (out / name).read_bytes() == (tmp_path / "undisturbed" / name).read_bytes(), name
