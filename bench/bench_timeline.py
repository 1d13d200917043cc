"""A build's timeline: when each map task, reducer and the cube write ran, and how many cores
the process kept busy meanwhile (issue 15, goal 4: at least 1.8 of 2 cores from the first map
task to the cube write).

Runs ``flowatlas.build_cube`` in this process, as ``flowatlas build`` does, with the engine's
map, reduce, combine and cube-write functions wrapped to record their start and end (thread
and time), while a sampler reads the process's CPU time (every thread, user + system), its
anonymous resident memory and its minor page faults every ``--sample`` seconds. Times count
from the process start, so imports show as the first gap.

Prints one line per time slice: the cores busy in it (CPU seconds / wall seconds), the peak
anonymous memory and the page faults in it, and the tasks that ran in it; then the summary
the issue asks for, and memory, faults and system CPU by phase. Every page of anonymous
memory was fresh when first touched, and on a VM that hands idle memory back to its host
(virtio-balloon free page reporting) fresh pages are what a build after idle pays in system
time: the peak is the number to cut.

    python bench/bench_timeline.py ARCHIVE --table ARCHIVE.fatable [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from _common import build_arguments


def _process_start() -> float:
    """When this process started, as a ``time.time()`` value, to the clock tick.

    psutil's ``create_time()`` adds the start tick to the boot time, which Linux gives in
    whole seconds, so it can be up to a second early; /proc/self/stat's start tick and
    /proc/uptime count from the same boot, so their difference is exact.
    """
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        now_wall = time.time()
        return now_wall - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # not Linux
        return psutil.Process().create_time()


T0 = _process_start()


def now() -> float:
    """Seconds since this process started."""
    return time.time() - T0


@dataclass
class Span:
    what: str
    thread: int
    start: float
    end: float


def traced(spans: list[Span], what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` recording a span per call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = now()
        try:
            return fn(*args, **kwargs)
        finally:
            spans.append(Span(what, threading.get_ident(), start, now()))

    return wrapper


def memory_now() -> tuple[float, float]:
    """(anonymous resident MB, minor page faults so far) of this process, every thread (Linux;
    else 0). Anonymous memory (``RssAnon``: heap, numpy arrays, Arrow's buffers), not the
    mapped libraries and files: each of its pages was fresh when the build first touched it.
    Faults count pages mapped, 4 KiB or 2 MiB (numpy advises arrays of 4 MiB and more for
    huge pages, as the huge-page heap does), so they are not bytes."""
    try:
        with open("/proc/self/status") as f:
            rss = next(int(x.split()[1]) for x in f if x.startswith("RssAnon:")) / 1e3
        with open("/proc/self/stat") as f:
            minflt = float(f.read().rsplit(")", 1)[1].split()[7])  # field 10 of proc(5)
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    return rss, minflt


@dataclass
class Sample:
    t: float
    cpu: float  # process CPU seconds, user + system
    sys: float  # of which system
    rss: float  # anonymous resident MB
    minflt: float  # minor faults so far


class CpuSampler(threading.Thread):
    """CPU seconds (user, system), resident memory and minor faults every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def _sample(self) -> None:
        t = os.times()
        self.samples.append(Sample(now(), t.user + t.system, t.system, *memory_now()))

    def run(self) -> None:
        while not self.stop.is_set():
            self._sample()
            self.stop.wait(self.every)
        self._sample()


def delta(samples: list[Sample], field: str, a: float, b: float) -> float:
    """How much ``field`` of the samples grew over [a, b] (linear between samples)."""
    import numpy as np

    t = np.array([s.t for s in samples])
    c = np.array([getattr(s, field) for s in samples])
    return float(np.interp(b, t, c) - np.interp(a, t, c))


def busy_between(samples: list[Sample], a: float, b: float) -> float:
    """Mean cores busy over [a, b] from the samples (linear between them)."""
    if b <= a:
        return 0.0
    return delta(samples, "cpu", a, b) / (b - a)


def peak_rss(samples: list[Sample], a: float, b: float) -> float:
    """The highest resident MB sampled in [a, b] (the last one before ``a`` if none)."""
    inside = [s.rss for s in samples if a <= s.t <= b]
    return max(inside or [s.rss for s in samples if s.t <= a][-1:] or [0.0])


def memory_line(samples: list[Sample], what: str, a: float, b: float) -> str:
    """Resident memory and faults over one phase: RSS at its start and peak, faults, sys s."""
    start = [s.rss for s in samples if s.t <= a][-1:] or [0.0]
    return (
        f"  {what:9} {a:5.2f}-{b:5.2f} s: anon RSS {start[0]:6.0f} -> peak "
        f"{peak_rss(samples, a, b):6.0f} MB, {delta(samples, 'minflt', a, b) / 1e3:7.1f} k "
        f"minor faults, {delta(samples, 'sys', a, b):5.2f} s system of "
        f"{delta(samples, 'cpu', a, b):5.2f} s CPU"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    build_arguments(p, "/tmp/flowatlas-timeline-cube")
    p.add_argument("--slice", type=float, default=0.25, help="seconds per timeline line")
    p.add_argument("--sample", type=float, default=0.02, help="seconds between CPU samples")
    args = p.parse_args(argv)

    try:  # as the build command does, before any thread (checkouts before it have none)
        from flowatlas.engine.allocator import choose_pages
    except ImportError:
        try:
            from flowatlas.engine.allocator import huge_page_heap
        except ImportError:
            huge_page_heap = bool
        choose_pages = lambda _archive: huge_page_heap()  # noqa: E731
    choose_pages(args.archive)
    sampler = CpuSampler(args.sample)
    sampler.start()
    t_import = now()
    from flowatlas.numba_start import start_numba

    start_numba()  # as the build command does
    from flowatlas.engine import build, combine, cube, execution

    spans: list[Span] = []
    execution.map_task = traced(spans, "map", execution.map_task)
    execution.reduce_in_memory = traced(spans, "reduce", execution.reduce_in_memory)
    combine.Combiner.add = traced(spans, "combine", combine.Combiner.add)
    # the cube's files are written as their tables are made: each file, then cube.json and
    # the swap (the commit) are the write
    cube._write_and_hash = traced(spans, "write", cube._write_and_hash)
    cube.CubeWriter.commit = traced(spans, "write", cube.CubeWriter.commit)
    try:  # as the build command does (checkouts before it have no such guard)
        from flowatlas.pandas_guard import implicit_pandas_refused
    except ImportError:
        implicit_pandas_refused = contextlib.nullcontext
    t_start = now()
    with implicit_pandas_refused():
        build.build_cube(
            args.archive, args.out, table=args.table, workers=args.workers, overwrite=True,
            shuffle="memory", trim_memory=False,
        )  # fmt: skip
    t_end = now()
    sampler.stop.set()
    sampler.join()

    samples = sampler.samples
    threads: dict[int, int] = {}
    for span in sorted(spans, key=lambda s: s.start):  # threads numbered as they first ran
        threads.setdefault(span.thread, len(threads))
    letters = {"map": "M", "reduce": "R", "combine": "c", "write": "W"}
    lines = [f"{'t (s)':>7}  cores  {'':20}  anonMB  kfault  running (thread: task)"]
    t = 0.0
    while t < t_end:
        b = busy_between(samples, t, t + args.slice)
        running = sorted({(threads[s.thread], letters[s.what]) for s in spans
                          if s.start < t + args.slice and s.end > t})  # fmt: skip
        bar = "#" * round(b * 10)
        mem = f"{peak_rss(samples, t, t + args.slice):6.0f}  "
        mem += f"{delta(samples, 'minflt', t, t + args.slice) / 1e3:6.1f}  "
        lines.append(
            f"{t:7.2f}  {b:5.2f}  {bar:20}  {mem}" + " ".join(f"{th}:{x}" for th, x in running)
        )
        t += args.slice
    maps = [s for s in spans if s.what == "map"]
    writes = [s for s in spans if s.what == "write"]
    first_map = min(s.start for s in maps)
    last_map = max(s.end for s in maps)
    write_end = max(s.end for s in writes)
    reduces = [s for s in spans if s.what == "reduce"]
    last_reduce = max(s.end for s in reduces)
    summary = [
        f"process start -> imports done (flowatlas.engine): {t_start:.2f} s "
        f"(interpreter {t_import:.2f} s)",
        f"build_cube called at {t_start:.2f} s, first map task starts at {first_map:.2f} s",
        f"maps: {len(maps)} tasks, {first_map:.2f} - {last_map:.2f} s, "
        f"{busy_between(samples, first_map, last_map):.2f} cores busy",
        f"reducers: {len(reduces)}, {min(s.start for s in reduces):.2f} - "
        f"{max(s.end for s in reduces):.2f} s",
        f"cube write: {min(s.start for s in writes):.2f} - {write_end:.2f} s",
        f"tail, last reducer's end to cube written: {write_end - last_reduce:.2f} s, "
        f"{busy_between(samples, last_reduce, write_end):.2f} cores busy",
        f"first map task to cube written: {write_end - first_map:.2f} s wall, "
        f"{busy_between(samples, first_map, write_end):.2f} cores busy on average",
        f"whole process until build_cube returned: {t_end:.2f} s, "
        f"{samples[-1].cpu / t_end:.2f} cores busy, {samples[-1].sys:.2f} s of it system",
        "memory by phase (phases overlap; faults and CPU are the whole process's):",
        memory_line(samples, "imports", 0.0, first_map),
        memory_line(samples, "maps", first_map, last_map),
        memory_line(samples, "reducers", min(s.start for s in reduces), last_reduce),
        memory_line(samples, "write", min(s.start for s in writes), write_end),
        memory_line(samples, "all", 0.0, t_end),
    ]
    print("\n".join(lines))
    print()
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
