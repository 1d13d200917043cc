"""The map side of a build alone: every map task of an archive, one after another, in this
process, with the CPU time of each of its steps per record.

A map task reads its row groups (``read_fragment_batches``, a batch at a time), classifies,
orients and buckets each record (``orient_and_cell``, of which the fused kernel
``records_cpu``), sums cells and folds (cell, remote address) repeats into the partitions'
rows (``map_rows``), and sums the link and geography tables (``tally``). The build runs the
same tasks on its threads, its reducers after them: this isolates the part of its cost that
grows with the records read.
Tasks are cut as ``flowatlas build`` cuts them (its ``partition_rows`` rule). One warm-up
task first (kernel loads), then the best of ``--repeat`` passes by CPU time.

    python bench/bench_maps.py ARCHIVE [--table ARCHIVE.fatable] [--repeat 3]

The tasks run under the C allocator settings a build uses (``engine.allocator``: freed
memory kept for the next task instead of fresh, zeroed pages); without them the page faults
of fresh arrays add about 30 ns a record on the world workload that builds do not pay.

Prints one line per step: CPU seconds (of this process: Arrow's decoding threads included),
wall seconds and CPU nanoseconds per record. Steps nest (``records_cpu`` is inside
``orient_and_cell``); "maps" is the whole. Compare checkouts by running it with
``PYTHONPATH`` set to each, alternately, on the same archive.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _timed(mod: Any, name: str, label: str, acc: dict[str, list[float]]) -> None:
    """Replace ``mod.name`` by a wrapper that adds its CPU and wall time to ``acc[label]``."""
    fn: Callable[..., Any] = getattr(mod, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        c, w = time.process_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            x = acc.setdefault(label, [0.0, 0.0])
            x[0] += time.process_time() - c
            x[1] += time.perf_counter() - w

    setattr(mod, name, wrapper)


def _timed_batches(mod: Any, name: str, label: str, acc: dict[str, list[float]]) -> None:
    """Like :func:`_timed` for a generator (``read_fragment_batches``): the time spent
    producing each item, not the caller's time between items."""
    fn: Callable[..., Any] = getattr(mod, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        it = iter(fn(*args, **kwargs))
        while True:
            c, w = time.process_time(), time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                x = acc.setdefault(label, [0.0, 0.0])
                x[0] += time.process_time() - c
                x[1] += time.perf_counter() - w
            yield item

    setattr(mod, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive", type=Path)
    ap.add_argument("--table", type=Path, help="compiled prefix table [ARCHIVE.fatable]")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    import flowatlas.kernels.records as records
    from flowatlas.classify.table import PrefixTable
    from flowatlas.engine import build, pipeline
    from flowatlas.engine.allocator import build_allocator
    from flowatlas.engine.plan import make_plan
    from flowatlas.io.archive import open_archive

    archive = open_archive(args.archive)
    table = PrefixTable.load(args.table or args.archive.with_name(args.archive.name + ".fatable"))
    n = archive.num_rows
    # as build._build sizes them (eager: no rounding of partitions to the workers)
    partitions, rows = build.default_sizes(n)
    plan = make_plan(build.resolve_config(args.archive, None), table, partitions=partitions)
    tasks = pipeline.pack(archive.fragments(rows), rows)
    acc: dict[str, list[float]] = {}
    steps = (
        (pipeline, "read_fragment_batches", "read_fragment"),
        (pipeline, "orient_and_cell", "orient_and_cell"),
        (records, "records_cpu", "  records_cpu"),
        (pipeline, "map_rows", "map_rows"),
        (pipeline, "tally", "tally"),
    )
    for mod, name, label in steps:
        (_timed_batches if name == "read_fragment_batches" else _timed)(mod, name, label, acc)
    best: tuple[float, float, dict[str, list[float]]] | None = None
    with build_allocator():  # as a build runs its tasks
        pipeline.map_task(tasks[0], plan)  # kernel loads, caches
        for _ in range(max(1, args.repeat)):
            acc.clear()
            c, w = time.process_time(), time.perf_counter()
            for task in tasks:
                pipeline.map_task(task, plan)
            c, w = time.process_time() - c, time.perf_counter() - w
            if best is None or c < best[0]:
                best = (c, w, {k: list(v) for k, v in acc.items()})
    assert best is not None
    total, wall, times = best
    print(f"{args.archive.name}: {n:,} records, {len(tasks)} map tasks, best of {args.repeat}")
    rows_out = [("maps", (total, wall))] + [(s[2], times[s[2]]) for s in steps if s[2] in times]
    for label, (c, w) in rows_out:
        print(f"  {label:18s} {c:7.3f} CPU s {w:7.3f} s wall {c / n * 1e9:6.0f} ns/record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
