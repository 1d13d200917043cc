"""Running the build's map and reduce steps: in one process, or on a Dask cluster.

Both paths call the same pure functions (:mod:`flowatlas.engine.pipeline`) and combine
their results the same way, so the cube does not depend on how it ran. The Dask path uses
public APIs only (futures: ``scatter``, ``map``, ``submit``); a worker lost mid-build makes
Dask recompute its tasks, which is safe because every task is a pure function of its inputs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from flowatlas.engine.backends import GpuFallbackWarning
from flowatlas.engine.combine import Combiner
from flowatlas.engine.pipeline import (
    Counts,
    FragmentStats,
    MapResult,
    PartitionResult,
    map_task,
    reduce_partition,
)
from flowatlas.engine.plan import BuildPlan
from flowatlas.engine.workdir import WorkDir, map_step, reduce_step
from flowatlas.errors import FlowatlasError
from flowatlas.io.archive import Fragment
from flowatlas.kernels import serial_kernels

Progress = Callable[[str, int, int], None]  # (stage, done, total)
CONNECT_TIMEOUT = "10s"  # how long to wait for a --scheduler before giving up


class SchedulerError(FlowatlasError):
    """A Dask scheduler that cannot be reached or that fails."""


def run_eager(
    tasks: list[list[Fragment]],
    plan: BuildPlan,
    progress: Progress | None,
    work: WorkDir | None,
) -> tuple[PartitionResult, FragmentStats]:
    """Run the whole build in this process, one task at a time (debugging, tests).

    Map results go to the work directory and reducers read them back, so memory stays
    bounded and the build can resume; without a work directory they stay in memory.
    """
    total = len(tasks) + plan.partitions
    if work is None:
        results = []
        for i, task in enumerate(tasks):
            results.append(map_task(task, plan))
            if progress:
                progress("map", i + 1, total)
        combiner = Combiner(results, plan)
        for j in range(plan.partitions):
            combiner.add(reduce_in_memory(j, plan, results))
            if progress:
                progress("reduce", len(tasks) + j + 1, total)
        return combiner.result(), _stats(m.stats for m in results)
    heads = []
    for i, (key, task) in enumerate(zip(work.keys, tasks, strict=True)):
        heads.append(map_step(key, task, plan, work))
        if progress:
            progress("map", i + 1, total)
    combiner = Combiner(heads, plan)
    for j in range(plan.partitions):
        reduce_step(j, work.keys, plan, work)
        combiner.add(work.load_counts(j))
        if progress:
            progress("reduce", len(tasks) + j + 1, total)
    return combiner.result(), _stats(m.stats for m in heads)


def run_threads(
    tasks: list[list[Fragment]],
    plan: BuildPlan,
    workers: int,
    progress: Progress | None,
    work: WorkDir | None,
) -> tuple[PartitionResult, FragmentStats]:
    """Run the build with Dask's threaded scheduler: ``workers`` tasks at once in this process.

    The kernels release the GIL, so threads use every core without serialising results or
    starting processes; CPU kernels run serially inside each task (tasks are the parallelism).
    Without a work directory, reducers take their rows straight from the map results in
    memory.
    """
    import dask
    import dask.threaded
    from dask.callbacks import Callback

    total = len(tasks) + plan.partitions
    done = [0]

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            name = key[0] if isinstance(key, tuple) else str(key)
            if name.startswith(("map-", "reduce-")) and progress:
                done[0] += 1
                progress("map" if done[0] <= len(tasks) else "reduce", done[0], total)

    delayed = functools.partial(dask.delayed, pure=False)
    # the plan and the fragment lists as opaque values: dask would otherwise walk every field
    # of every dataclass in them, for every task that takes them (a tenth of a second)
    plan_d = dask.delayed(plan, traverse=False, name="plan")
    frags = [dask.delayed(t, traverse=False, name=f"fragments-{i}") for i, t in enumerate(tasks)]
    if work is None:
        maps = [delayed(map_task, name=f"map-{i}")(t, plan_d) for i, t in enumerate(frags)]
    else:
        keys = work.keys
        maps = [
            delayed(map_step, name=f"map-{i}")(k, t, plan_d, work)
            for i, (k, t) in enumerate(zip(keys, frags, strict=True))
        ]
    # one node stands for all the maps, so each reducer's call holds one dependency, not P
    # (building the graph stays a few milliseconds)
    heads = delayed(_all, name="maps-done")(maps)
    if work is None:
        reduces = [
            delayed(reduce_in_memory, name=f"reduce-{j}")(j, plan_d, heads)
            for j in range(plan.partitions)
        ]
    else:
        reduces = [
            delayed(_reduce_after, name=f"reduce-{j}")(j, keys, plan_d, work, heads)
            for j in range(plan.partitions)
        ]
    # the combiner starts once the maps are done and folds each partition in as soon as it
    # is reduced (in partition order), while the other reducers run: no serial tail but the
    # last fold and the result
    combiner = delayed(Combiner, name="combine-start")(heads, plan_d)
    for j, r in enumerate(reduces):
        combiner = delayed(_fold_in, name=f"combine-{j}")(combiner, r, work)
    # the threaded scheduler itself: naming it "threads" would import distributed (0.2 s) to
    # look for a client first
    with serial_kernels(), _Progress():
        results, combined = dask.compute(
            heads, combiner, scheduler=dask.threaded.get, num_workers=workers
        )
    return combined.result(), _stats(m.stats for m in results)


def _all(results: list[MapResult]) -> list[MapResult]:
    """The map results as one value (the reducers' one dependency)."""
    return results


def _reduce_after(j: int, keys: list[str], plan: BuildPlan, work: WorkDir, _maps: Any) -> int:
    """Reducer ``j`` through the work directory, once ``_maps`` (every map) is done."""
    return reduce_step(j, keys, plan, work)


def reduce_in_memory(j: int, plan: BuildPlan, maps: list[MapResult]) -> Counts:
    """Reducer ``j`` over map results held in memory: its piece of each, in task order."""
    return reduce_partition([m.pieces[j] for m in maps], plan)


def _fold_in(combiner: Combiner, j: int | Counts, work: WorkDir | None) -> Combiner:
    """Fold reducer ``j``'s counts (from the work directory, or as given) into the combiner."""
    combiner.add(work.load_counts(j) if work is not None else j)
    return combiner


def _combine(heads: list[MapResult], counts: Any, plan: BuildPlan, work: WorkDir | None):
    """Fold partition results one at a time (read back from the work directory if there)."""
    combiner = Combiner(heads, plan)
    for c in counts:
        combiner.add(work.load_counts(c) if work is not None else c)
    return combiner.result(), _stats(m.stats for m in heads)


def _stats(parts) -> FragmentStats:
    stats = FragmentStats()
    for st in parts:
        stats.add(st)
    return stats


def _piece(result: MapResult, j: int) -> Any:
    return result.pieces[j]


def _without_pieces(result: MapResult) -> MapResult:
    return result.head()


@contextlib.contextmanager
def dask_client(
    scheduler: str | None, workers: int | None, processes: bool = False, gpu: bool = False
) -> Iterator[Any]:
    """A distributed Client: to ``scheduler`` if given, else to a new local cluster.

    The local cluster runs ``workers`` tasks at once (default: one per core). By default they
    are threads of this process: the kernels release the GIL, and results pass between tasks
    without being copied. With ``processes`` each worker is its own process (isolation from
    crashes, at the cost of serialising every result); with ``gpu`` too, and dask-cuda
    installed (the ``gpu`` extra), the cluster is dask-cuda's ``LocalCUDACluster``: one
    worker process per GPU (``workers`` of them at most), each pinned to its own device.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(f"cannot reach Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or os.cpu_count() or 1
    cluster = _cuda_cluster(workers) if processes and gpu else None
    if cluster is None and processes:
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        )
    elif cluster is None:
        cluster = LocalCluster(
            n_workers=1,
            threads_per_worker=n,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    client = Client(cluster)
    try:
        with serial_kernels() if not processes else contextlib.nullcontext():
            yield client
    finally:
        client.close()
        cluster.close()


def _cuda_cluster(workers: int | None) -> Any:
    """dask-cuda's LocalCUDACluster, or None (with a warning) where dask-cuda is missing."""
    try:
        from dask_cuda import LocalCUDACluster
    except Exception as exc:  # any failure of the GPU stack: plain processes instead
        warnings.warn(
            f"dask-cuda unusable ({type(exc).__name__}: {exc}); worker processes share the "
            "default GPU (pip install 'flowatlas[gpu]' for one worker per GPU)",
            GpuFallbackWarning,
            stacklevel=3,
        )
        return None
    return LocalCUDACluster(
        n_workers=workers,  # None: one per visible GPU
        threads_per_worker=1,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )


def run_dask(
    client: Any,
    tasks: list[list[Fragment]],
    plan: BuildPlan,
    progress: Progress | None = None,
    work: WorkDir | None = None,
) -> tuple[PartitionResult, FragmentStats]:
    """Run the build on a Dask cluster through ``client``: map, shuffle by IP, reduce.

    With a work directory (which every worker must see: local clusters, or a shared file
    system) the shuffle goes through disk and the build can resume; without one, through
    worker memory.
    """
    from distributed import as_completed

    [plan_f] = client.scatter([plan], broadcast=True, hash=False)
    if work is not None:
        maps = client.map(map_step, work.keys, tasks, plan=plan_f, work=work, pure=False)
        heads = maps
        reduces = [
            client.submit(reduce_step, j, work.keys, plan_f, work, *maps, pure=False)
            for j in range(plan.partitions)
        ]
    else:
        maps = client.map(map_task, tasks, plan=plan_f, pure=False)
        heads = [client.submit(_without_pieces, m, pure=False) for m in maps]
        reduces = []
        for j in range(plan.partitions):
            pieces = [client.submit(_piece, m, j, pure=False) for m in maps]
            reduces.append(client.submit(reduce_partition, pieces, plan_f, pure=False))

    total = len(maps) + len(reduces)
    done = 0
    try:
        for fut in as_completed(maps + reduces):
            if fut.status == "error":
                fut.result()  # raises the task's exception here
            done += 1
            if progress:
                progress("map" if done <= len(maps) else "reduce", done, total)
        counts = client.gather(reduces)
        results = client.gather(heads)
    except FlowatlasError:
        raise
    except OSError as exc:
        raise SchedulerError(f"Dask cluster failed during the build: {exc}") from None
    return _combine(results, counts, plan, work)
