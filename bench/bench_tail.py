"""The build's tail, step by step: the CPU (thread time) and wall of each step that makes and
writes the cube, from the combiner of the map results to cube.json (issue 15's cube write).

Runs ``flowatlas.build_cube`` in this process, as ``flowatlas build`` does (threads, shuffle
in memory), with the combiner's and the cube's functions wrapped to add up, per step, the
thread CPU time (``time.thread_time()``: the calling thread's user + system) and the wall of
each call, and which thread ran it. Steps nest (``cells_table`` calls ``_dims_columns``, which
calls ``_strings``), so the times are inclusive. Then the critical path: when the last map
task and the last reducer ended, and when the cube was written.

    python bench/bench_tail.py ARCHIVE --table ARCHIVE.fatable [--repeat 3]

Runs the build ``--repeat`` times in one process (the first one pays numba's cache loads
and first touches) and prints each step's median CPU and wall over the runs after the first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from _common import build_arguments

#: (module, attribute) of every wrapped step; a class method as "Class.method"
STEPS = [
    ("execution", "_combiner"),
    ("combine", "Combiner.__init__"),
    ("combine", "_sum_maps"),
    ("combine", "_rollups"),
    ("combine", "Combiner.add"),
    ("build", "_write_map_tables"),
    ("build", "links_table"),
    ("build", "geo_table"),
    ("build", "cells_table"),
    ("combine", "Combiner.result"),
    ("combine", "Combiner.top_asns"),
    ("build", "_sketches"),
    ("combine", "Combiner.sketch_result"),
    ("build", "sketch_blobs_table"),
    ("build", "rollups_table"),
    ("build", "top_tables"),
    ("build", "_describers"),
    ("build", "_metadata"),
    ("build", "shares_of_cells"),
    ("cube", "_dims_columns"),
    ("cube", "_strings"),
    ("cube", "_write_and_hash"),
    ("cube", "_write_parquet"),
    ("cube", "fsync_file"),
    ("cube", "_file_hash"),
    ("cube", "CubeWriter.commit"),
]


class Recorder:
    """Per step: CPU seconds, wall seconds, calls and threads of the current run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.threads: dict[str, set[str]] = defaultdict(set)
        self.ends: dict[str, float] = {}
        self.starts: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                c1, w1 = time.thread_time(), time.perf_counter()
                with self.lock:
                    self.cpu[name] += c1 - c0
                    self.wall[name] += w1 - w0
                    self.calls[name] += 1
                    self.threads[name].add(threading.current_thread().name)
                    self.starts[name] = min(self.starts.get(name, w0), w0)
                    self.ends[name] = max(self.ends.get(name, w1), w1)

        return wrapper


def install(rec: Recorder) -> None:
    """Wrap every step (in each module that calls it by name) and the map and reduce tasks."""
    from flowatlas.engine import build, combine, cube, execution

    modules = {"build": build, "combine": combine, "cube": cube, "execution": execution}
    for mod, attr in STEPS:
        m = modules[mod]
        if "." in attr:
            cls, meth = attr.split(".")
            owner = getattr(m, cls)
            setattr(owner, meth, rec.wrap(attr, getattr(owner, meth)))
            continue
        wrapped = rec.wrap(attr, getattr(m, attr))
        for other in modules.values():  # `from cube import cells_table` in build, say
            if getattr(other, attr, None) is getattr(m, attr):
                setattr(other, attr, wrapped)
        setattr(m, attr, wrapped)
    execution.map_task = rec.wrap("map task", execution.map_task)
    execution.reduce_in_memory = rec.wrap("reduce task", execution.reduce_in_memory)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    build_arguments(p, "/tmp/flowatlas-tail-cube")
    p.add_argument("--repeat", type=int, default=3, help="builds; the first is not counted")
    args = p.parse_args(argv)

    from flowatlas.numba_start import start_numba

    start_numba()
    from flowatlas.engine import build

    rec = Recorder()
    install(rec)
    runs: list[dict[str, tuple[float, float, int, str]]] = []
    wholes: list[tuple[float, float]] = []
    paths: list[dict[str, float]] = []
    for i in range(args.repeat):
        rec.reset()
        c0, w0 = time.process_time(), time.perf_counter()
        build.build_cube(
            args.archive, args.out, table=args.table, workers=args.workers, overwrite=True,
            shuffle="memory", trim_memory=False,
        )  # fmt: skip
        c1, w1 = time.process_time(), time.perf_counter()
        wholes.append((c1 - c0, w1 - w0))
        runs.append({k: (rec.cpu[k], rec.wall[k], rec.calls[k], ",".join(sorted(
            t.replace("flowatlas-", "") for t in rec.threads[k]))) for k in rec.cpu})  # fmt: skip
        paths.append({
            "last map end": rec.ends["map task"] - w0,
            "last reducer end": rec.ends["reduce task"] - w0,
            "first table write start": rec.starts["_write_and_hash"] - w0,
            "cube written (commit end)": rec.ends["CubeWriter.commit"] - w0,
        })  # fmt: skip
        print(f"run {i}: build {c1 - c0:.3f} CPU s, {w1 - w0:.3f} s wall", file=sys.stderr)
    counted = runs[1:] or runs
    names = [a for _, a in STEPS if any(a in r for r in counted)]
    print(f"{'step':28} {'CPU s':>7} {'wall s':>7} {'calls':>5}  threads")
    for name in ["map task", "reduce task", *names]:
        cpu = statistics.median(r.get(name, (0, 0, 0, ""))[0] for r in counted)
        wall = statistics.median(r.get(name, (0, 0, 0, ""))[1] for r in counted)
        calls = counted[-1].get(name, (0, 0, 0, ""))[2]
        threads = counted[-1].get(name, (0, 0, 0, ""))[3]
        print(f"{name:28} {cpu:7.3f} {wall:7.3f} {calls:5d}  {threads}")
    n = len(counted)
    print(f"whole build_cube: {statistics.median(c for c, _ in wholes[-n:]):.3f} CPU s, "
          f"{statistics.median(w for _, w in wholes[-n:]):.3f} s wall (median of {n})")  # fmt: skip
    for k in paths[0]:
        print(f"  {k:28} {statistics.median(pth[k] for pth in paths[-n:]):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
