"""Running the build's map and reduce steps: in one process, or on a Dask cluster.

Both paths call the same pure functions (:mod:`flowatlas.engine.pipeline`) and combine
their results the same way, so the cube does not depend on how it ran. The Dask path uses
public APIs only (futures: ``scatter``, ``map``, ``submit``); a worker lost mid-build makes
Dask recompute its tasks, which is safe because every task is a pure function of its inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from flowatlas.classify.table import PrefixTable, file_digest
from flowatlas.engine.backends import GpuFallbackWarning
from flowatlas.engine.combine import Combiner
from flowatlas.engine.pipeline import (
    Counts,
    FragmentStats,
    MapResult,
    map_task,
    reduce_partition,
)
from flowatlas.engine.plan import BuildPlan
from flowatlas.engine.workdir import WorkDir, map_step, reduce_counts, reduce_step
from flowatlas.errors import FlowatlasError
from flowatlas.io.archive import Fragment
from flowatlas.kernels import serial_kernels

Progress = Callable[[str, int, int], None]  # (stage, done, total)
#: called with the combiner once every map result is in it, before the reducers' counts
#: are: what depends on the map side only (links, geography) is made then, while reducers run
OnMaps = Callable[[Combiner], None]
CONNECT_TIMEOUT = "10s"  # how long to wait for a --scheduler before giving up


class SchedulerError(FlowatlasError):
    """A Dask scheduler that cannot be reached or that fails."""


def run_eager(
    tasks: list[list[Fragment]],
    plan: BuildPlan,
    progress: Progress | None,
    work: WorkDir | None,
    on_maps: OnMaps | None = None,
) -> tuple[Combiner, FragmentStats]:
    """Run the whole build in this process, one task at a time (debugging, tests).

    Map results go to the work directory and reducers read them back, so memory stays
    bounded and the build can resume; without a work directory they stay in memory.
    Returns the combiner with every partition folded in (:meth:`Combiner.result` is the
    cube's arrays) and the records' accounting; ``on_maps`` (:data:`OnMaps`) is called
    after the maps, before the first reducer.
    """
    total = len(tasks) + plan.partitions
    if work is None:
        results = []
        for i, task in enumerate(tasks):
            results.append(map_task(task, plan))
            if progress:
                progress("map", i + 1, total)
        combiner = _combiner(results, plan, on_maps)
        for j in range(plan.partitions):
            combiner.add(reduce_in_memory(j, plan, results))
            if progress:
                progress("reduce", len(tasks) + j + 1, total)
        return combiner, _stats(m.stats for m in results)
    heads = []
    for i, (key, task) in enumerate(zip(work.keys, tasks, strict=True)):
        heads.append(map_step(key, task, plan, work))
        if progress:
            progress("map", i + 1, total)
    combiner = _combiner(heads, plan, on_maps)
    for j in range(plan.partitions):
        combiner.add(reduce_counts(j, work.keys, plan, work))
        if progress:
            progress("reduce", len(tasks) + j + 1, total)
    return combiner, _stats(m.stats for m in heads)


def run_threads(
    tasks: list[list[Fragment]],
    plan: BuildPlan,
    workers: int,
    progress: Progress | None,
    work: WorkDir | None,
    on_maps: OnMaps | None = None,
) -> tuple[Combiner, FragmentStats]:
    """Run the build on ``workers`` threads of this process: the maps, then the reducers.

    The kernels release the GIL, so threads use every core without serialising results or
    starting processes; CPU kernels run serially inside each task (tasks are the parallelism).
    Without a work directory, reducers take their rows straight from the map results in
    memory. This thread folds each partition into the combiner as soon as it and the ones
    before it are reduced (in partition order, as every other runner does), while the other
    reducers run: no serial tail but the last fold. ``on_maps`` runs on this thread too,
    once the reducers are started. Returns what :func:`run_eager` does.

    A thread pool, not Dask's threaded scheduler: the graph is two fixed stages, and
    importing Dask cost 35-45 ms of every build's start-up (a 1 M-record build takes ~1.4 s).
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    total = len(tasks) + plan.partitions
    done = 0

    def finish(futures: list[Any], stage: str) -> list[Any]:
        """Each future's result, in order; progress counts them as they complete (not all
        at once when the last one does: the map phase is most of a long build). The first
        failure is raised here."""
        nonlocal done
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                if f.exception() is not None:
                    raise f.exception()
                done += 1
                if progress:
                    progress(stage, done, total)
        return [f.result() for f in futures]

    with serial_kernels(), ThreadPoolExecutor(max(1, workers), "flowatlas-build") as pool:
        try:
            if work is None:
                maps = [pool.submit(map_task, t, plan) for t in tasks]
            else:
                maps = [
                    pool.submit(map_step, k, t, plan, work)
                    for k, t in zip(work.keys, tasks, strict=True)
                ]
            heads = finish(maps, "map")
            if work is None:
                reduces = [
                    pool.submit(reduce_in_memory, j, plan, heads) for j in range(plan.partitions)
                ]
            else:  # the counts come back in memory too (and are saved for a resume)
                reduces = [
                    pool.submit(reduce_counts, j, work.keys, plan, work)
                    for j in range(plan.partitions)
                ]
            combiner = _combiner(heads, plan, on_maps)
            for i, r in enumerate(reduces):
                combiner.add(finish([r], "reduce")[0])
                reduces[i] = None  # its counts are folded: let them go
        except BaseException:
            # none left to start; the running ones finish on the way out (cleaning up their
            # temporary files) before the error goes on
            pool.shutdown(cancel_futures=True)
            raise
    return combiner, _stats(m.stats for m in heads)


def _combiner(heads: list[MapResult], plan: BuildPlan, on_maps: OnMaps | None) -> Combiner:
    """A combiner of the map results, handed to ``on_maps`` (if any) before it is returned."""
    combiner = Combiner(heads, plan)
    if on_maps is not None:
        on_maps(combiner)
    return combiner


def reduce_in_memory(j: int, plan: BuildPlan, maps: list[MapResult]) -> Counts:
    """Reducer ``j`` over map results held in memory: its piece of each, in task order."""
    return reduce_partition([m.pieces[j] for m in maps], plan)


def _combine(
    heads: list[MapResult],
    counts: Any,
    plan: BuildPlan,
    work: WorkDir | None,
    on_maps: OnMaps | None = None,
) -> tuple[Combiner, FragmentStats]:
    """Fold partition results one at a time (read back from the work directory if there)."""
    combiner = _combiner(heads, plan, on_maps)
    for c in counts:
        combiner.add(work.load_counts(c) if work is not None else c)
    return combiner, _stats(m.stats for m in heads)


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
    installed (the ``gpu-cluster`` extra), the cluster is dask-cuda's ``LocalCUDACluster``: one
    worker process per GPU (``workers`` of them at most), each pinned to its own device.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(f"cannot reach Dask scheduler at {scheduler}: {exc}") from None
        except (ValueError, TypeError) as exc:  # not an address at all ("notaurl")
            raise SchedulerError(
                f"--scheduler {scheduler!r} is not a Dask scheduler address ({exc}); "
                "give one like tcp://HOST:8786"
            ) from None
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
            "default GPU (pip install 'flowatlas[gpu-cluster]' for one worker per GPU)",
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
    on_maps: OnMaps | None = None,
) -> tuple[Combiner, FragmentStats]:
    """Run the build on a Dask cluster through ``client``: map, shuffle by IP, reduce.

    With a work directory (which every worker must see: local clusters, or a shared file
    system) the shuffle goes through disk and the build can resume; without one, through
    worker memory. Returns what :func:`run_eager` does; ``on_maps`` runs here once the
    counts are gathered.
    """
    from distributed import as_completed

    # the plan as a task's result, not scattered data: if every worker dies at once, Dask
    # recomputes it like any other task instead of failing the build (scattered data is lost);
    # its prefix tables go beside it (by path, or scattered once: :func:`send_tables`)
    shipped, tables = send_tables(client, plan)
    plan_f = client.submit(_the_plan, shipped, tables, pure=False)
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
    except Exception as exc:
        if not _is_cluster_failure(exc):
            raise  # a bug in a task keeps its traceback
        raise SchedulerError(
            f"the Dask cluster lost the build ({type(exc).__name__}: {_first_line(exc)}); "
            "run it again" + (" (it resumes from the work directory)" if work else "")
        ) from None
    return _combine(results, counts, plan, work, on_maps)


def _the_plan(plan: BuildPlan, tables: dict[str, PrefixTable] | None = None) -> BuildPlan:
    """The plan, as a task result every map and reduce task depends on, with the prefix
    tables that were sent beside it (:func:`send_tables`) put back."""
    return dataclasses.replace(plan, **tables) if tables else plan


def send_tables(client: Any, plan: BuildPlan) -> tuple[BuildPlan, dict[str, Any]]:
    """How the plan's prefix tables reach the workers: the plan to submit, and the tables
    (futures of scattered data) to submit beside it.

    A full prefix-to-ASN table is large (a 877 k-network table: 123 MiB pickled); inside
    the plan it made the task graph that large (distributed's "Sending large graph"
    warning), went through the scheduler and then from worker to worker with the plan. A
    table opened from its file therefore goes by path (:meth:`PrefixTable.by_path`) where
    every worker reads the same table in that file (:func:`file_digest`, asked of each
    worker: a local cluster, or a file system they share): each worker process maps the
    file itself, once. Where some worker does not (a remote cluster without the file), the
    table is scattered to every worker once, outside the graph. A table built in memory (the
    configuration's own region prefixes: small) stays in the plan.
    """
    by_path: dict[str, PrefixTable] = {}
    scattered: dict[str, Any] = {}
    for name in ("local_table", "class_table"):
        table: PrefixTable = getattr(plan, name)
        path = table.path
        if path is None:
            continue
        seen = client.run(file_digest, path)  # {worker address: its file's digest, or None}
        if not seen:  # no worker yet (an adaptive cluster scales up for the tasks): in the plan
            continue
        if all(d == table.digest for d in seen.values()):
            by_path[name] = table.by_path()
        else:
            scattered[name] = client.scatter(table, broadcast=True, hash=False)
    if by_path or scattered:
        plan = dataclasses.replace(plan, **by_path, **dict.fromkeys(scattered))
    return plan, scattered


def _is_cluster_failure(exc: BaseException) -> bool:
    """True for Dask's own errors (workers killed, futures lost), not a task's exception."""
    import asyncio
    import concurrent.futures

    if isinstance(exc, asyncio.CancelledError | concurrent.futures.CancelledError):
        return True
    return type(exc).__module__.split(".")[0] == "distributed"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
