"""Progress: the build's callback sees every task on every path; the reporter's two modes."""

from __future__ import annotations

import io

import pytest

from flowatlas.engine.build import build_cube
from flowatlas.progress import Progress, build_progress
from flowatlas.synth import synthesize


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress") / "archive"
    synthesize(root, records=30_000, days=6, seed=5)
    return root


@pytest.mark.parametrize(
    "how",
    [
        {"workers": 0},  # eager
        {"workers": 2},  # the threads of this process
        {"workers": 2, "shuffle": "disk"},  # threads, shuffle through the work directory
        {"workers": 0, "shuffle": "disk"},
        {"workers": 2, "processes": True},  # a local cluster of worker processes
    ],
    ids=["eager", "threads", "threads-disk", "eager-disk", "processes"],
)
def test_the_callback_sees_every_task_and_reaches_all(archive, tmp_path, how):
    calls: list[tuple[str, int, int]] = []
    s = build_cube(
        archive,
        tmp_path / "cube",
        partition_rows=4_000,
        partitions=4,
        progress=lambda stage, done, total: calls.append((stage, done, total)),
        **how,
    )
    total = s.tasks + 4
    assert s.tasks >= 6  # several map tasks, so the count means something
    # one call per map and reduce task, counting up to the total, maps before reduces
    assert [c[1] for c in calls] == list(range(1, total + 1))
    assert {c[2] for c in calls} == {total}
    assert [c[0] for c in calls] == ["map"] * s.tasks + ["reduce"] * 4


def test_the_build_bar_moves_to_the_end(archive, tmp_path):
    out = io.StringIO()
    said: list[str] = []
    bar = Progress("build", "tasks", stream=out, tty=True)
    build_cube(
        archive,
        tmp_path / "cube",
        workers=2,
        partition_rows=4_000,
        partitions=4,
        progress=build_progress(bar, said.append),
    )
    assert bar.total >= 10 and bar.done == bar.total
    assert bar.desc == "build: reduce"
    bar.close()
    assert "tasks" in out.getvalue()  # the bar was drawn


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_at_most_every_interval():
    clock, out = Clock(), io.StringIO()
    p = Progress("synth", "records", 1000, stream=out, tty=False, clock=clock, interval=10)
    for _ in range(50):  # 50 updates over 49 s: a line at 10, 20, 30 and 40 s
        p.update(20)
        clock.now += 1
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    # at 10 s, 11 updates were done: 220 of 1000 records at 22/s, 36 s to go
    assert lines[0] == "synth: 220/1,000 records (22%), 22.0 records/s, ETA 35 s, 10 s elapsed"
    assert lines[-1].startswith("synth: 820/1,000 records (82%)")


def test_plain_line_with_unknown_total_and_long_waits():
    clock, out = Clock(), io.StringIO()
    p = Progress("import", "files", stream=out, tty=False, clock=clock)
    clock.now += 3600 * 2 + 125
    p.set(7, postfix="records 1,234")
    assert out.getvalue() == "import: 7 files, 0.0 files/s, 2 h 02 min elapsed, records 1,234\n"


def test_quiet_and_terminal_modes():
    out = io.StringIO()
    p = Progress("x", "tasks", 10, stream=out, tty=False, quiet=True, clock=Clock(), interval=0)
    p.set(5)
    p.close()
    assert out.getvalue() == ""
    out = io.StringIO()
    with Progress("build", "tasks", 4, stream=out, tty=True) as bar:
        for _ in range(4):
            bar.update()
        assert bar._bar.n == 4 and bar._bar.total == 4
    assert "build:   0%" in out.getvalue() and " 0/4 " in out.getvalue()


def test_threads_report_each_map_task_as_it_completes(archive, tmp_path, monkeypatch):
    """On the threads runner a map task's completion reaches the callback while later tasks
    are still to run: a task after the first waits (up to 5 s) for the first one's report,
    which came only once every map task had finished when the runner waited for all."""
    import threading

    import flowatlas.engine.execution as execution

    reported = threading.Event()
    finished: list[int] = []
    real = execution.map_task

    def map_task(fragments, plan):
        if finished:  # every task after the first
            reported.wait(5)
        out = real(fragments, plan)
        finished.append(1)
        return out

    monkeypatch.setattr(execution, "map_task", map_task)
    seen: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "map":
            seen.append(len(finished))
            reported.set()

    s = build_cube(
        archive, tmp_path / "cube", workers=1, partition_rows=4_000, partitions=4,
        progress=progress,
    )  # fmt: skip
    assert s.tasks >= 6
    assert seen[0] < s.tasks, seen  # the first report came before the last task ended
