"""``build_cube``: a flow archive in, a cube out (the Python API behind `flowatlas build`).

``build_cube_from_table`` builds the same cube from flow records already in memory (a
``pyarrow.Table`` or RecordBatches); both run the one pipeline below (:func:`_build`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowatlas import __version__
from flowatlas.classify import load_table
from flowatlas.classify.table import PrefixTable
from flowatlas.config import Config, check_regions, load_config
from flowatlas.engine.allocator import build_allocator
from flowatlas.engine.backends import resolve_backend
from flowatlas.engine.cube import (
    FORMAT,
    FORMAT_VERSION,
    STATE_DIR,
    CubeWriter,
    cells_table,
    check_output,
    geo_table,
    links_table,
    rollups_table,
    sketch_blobs_table,
    top_tables,
)
from flowatlas.engine.execution import dask_client, run_dask, run_eager, run_threads
from flowatlas.engine.pipeline import GROUPINGS, TOP_K, TOP_LIST_ROLLUPS, balance, pack
from flowatlas.engine.plan import make_plan
from flowatlas.engine.workdir import WorkDir, default_workdir, task_key
from flowatlas.errors import ConfigError, FlowatlasError, InputError, OutputError
from flowatlas.inspect import SetupShares, shares_of_cells
from flowatlas.io.archive import MEMORY_WHERE, Archive, MemoryRecords, memory_records, open_archive
from flowatlas.io.manifest import archive_problems
from flowatlas.io.swap import output_lock, recover_output
from flowatlas.kernels.accumulate import CounterOverflow
from flowatlas.vocab import DIRECTIONS

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

ARCHIVE_CONFIG = "flowatlas.toml"
#: about this many archive rows per IP partition: a reducer's memory stays bounded, its key
#: arrays stay in cache, and the last round of reducers is short (load balance)
ROWS_PER_PARTITION = 3_000_000
#: where map results wait for the reducers (``shuffle=``): see :func:`shuffle_on_disk`
SHUFFLES = ("auto", "memory", "disk")
#: bytes a shuffle row takes at most (cell key, address as two words, volume): one per
#: archive row at most, since map tasks only ever fold rows together
SHUFFLE_ROW_BYTES = 32
#: ``auto`` keeps the shuffle in memory while its most rows fit in this share of free memory
MEMORY_SHUFFLE_SHARE = 0.25
#: where Linux says how much memory is available (see :func:`available_memory`)
MEMINFO = "/proc/meminfo"


@dataclass
class BuildSummary:
    """What a build did: where the cube is and the record accounting."""

    out: Path
    records: int
    cubed: int
    quarantined: dict[str, int]
    cells: int
    tasks: int
    config_origin: str
    #: where the map results waited for the reducers: "memory" or "disk"
    shuffle: str = "disk"
    #: records read by this run's map tasks: all of them, except in a resumed or incremental
    #: build, whose finished map tasks are reused (the rate a user sees is of these)
    mapped: int = -1
    #: how the configuration sorted the records (Unknown region / type, transit, quarantined)
    setup: SetupShares | None = None
    #: where the state of a ``keep_state`` build is kept, and its size in bytes
    state: Path | None = None
    state_bytes: int = 0


def refuse_problems(archive: Path, problems: list[str]) -> None:
    """Refuse to build from an archive with problems: the first one, and how many more."""
    if problems:
        more = (
            f" (and {len(problems) - 1} more: flowatlas verify {archive} lists them)"
            if len(problems) > 1
            else ""
        )
        raise InputError(f"cannot build from {archive}: {problems[0]}{more}")


def resolve_config(archive: Path, config: Config | str | os.PathLike[str] | None) -> Config:
    """The configuration for a build: given, or the archive's own flowatlas.toml, or defaults."""
    if isinstance(config, Config):
        return config
    if config is not None:
        return load_config(config)
    own = archive / ARCHIVE_CONFIG
    if archive.is_dir() and own.exists():
        return load_config(own)
    return Config()


def build_cube(
    archive: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: Config | str | os.PathLike[str] | None = None,
    table: PrefixTable | str | os.PathLike[str] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    processes: bool = False,
    backend: str = "auto",
    partitions: int | None = None,
    partition_rows: int | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    shuffle: str = "auto",
    keep_state: bool = False,
    incremental: bool = False,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    trim_memory: bool = True,
) -> BuildSummary:
    """Build the cube of ``archive`` into ``out``.

    ``workers=0`` runs in this process, one task at a time. By default a pool of threads
    runs ``workers`` tasks at once (one per core) in this process; ``processes`` starts a
    local Dask cluster of worker processes instead, and ``scheduler`` uses an existing Dask
    cluster.
    The result does not depend on workers, partitions or scheduler. Nothing is written unless
    the whole build succeeds.

    ``shuffle`` says where map results wait for the reducers (:func:`shuffle_on_disk`):
    ``disk``, through ``work_dir`` (default: a hidden sibling of ``out``, removed on
    success), so memory stays bounded and an interrupted build resumes where it stopped;
    ``memory``, faster, not resumable; ``auto`` (default), memory where the shuffle fits in a
    quarter of free memory or runs on ``scheduler`` without ``work_dir`` (remote workers may
    not share this machine's disk), else disk.

    ``keep_state`` keeps the map results beside the cube, in the hidden sibling
    ``.CUBE.state`` (:func:`state_path`; the cube folder itself stays small), and
    ``incremental`` rebuilds such a cube reading only the archive files that are new or
    changed since (same configuration and prefix table required), with exact results.

    ``trim_memory`` returns the memory the build freed to the system at its end
    (:func:`~flowatlas.engine.allocator.build_allocator`); a process that ends right after
    (the ``flowatlas build`` command) has no need to.
    """
    archive = Path(archive)
    out = Path(out)
    prefix_table = _opening(table)
    with output_lock(out):
        recover_output(out)  # before looking at it: an --overwrite that died may hide it
        state_sig = None
        if incremental:
            state_sig = WorkDir.read_signature(_adopt_legacy_state(out))
            if not (out / "cube.json").exists():
                raise InputError(f"{out}: no cube to add to (build it first, with --keep-state)")
            if state_sig is None:
                raise InputError(
                    f"{out}: this cube keeps no build state; rebuild it once with --keep-state"
                )
            keep_state = overwrite = True
        check_output(out, overwrite=overwrite)
        arch = open_archive(archive)
        if arch.root.is_dir():
            refuse_problems(archive, archive_problems(arch.root, arch.files))
        cfg = resolve_config(archive, config)
        # sizes depend on the archive (and the workers) only, so a resumed build finds the
        # same tasks; an incremental build keeps the sizes its state was made with
        if state_sig is not None:
            partitions, partition_rows = state_sig["partitions"], state_sig["partition_rows"]
        return _build(
            arch,
            str(archive),
            out,
            cfg,
            prefix_table(cfg),
            workers=workers,
            scheduler=scheduler,
            processes=processes,
            backend=backend,
            partitions=partitions,
            partition_rows=partition_rows,
            work_dir=work_dir,
            shuffle=shuffle,
            keep_state=keep_state,
            incremental=incremental,
            state_sig=state_sig,
            overwrite=overwrite,
            progress=progress,
            trim_memory=trim_memory,
        )


def build_cube_from_table(
    records: pa.Table | pa.RecordBatch | pa.RecordBatchReader | Iterable[pa.RecordBatch | pa.Table],
    out: str | os.PathLike[str],
    *,
    config: Config | str | os.PathLike[str] | None = None,
    table: PrefixTable | str | os.PathLike[str] | None = None,
    counts: str | None = None,
    name: str = "<memory>",
    workers: int | None = None,
    scheduler: str | None = None,
    processes: bool = False,
    backend: str = "auto",
    partitions: int | None = None,
    partition_rows: int | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    shuffle: str = "auto",
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> BuildSummary:
    """Build the cube of flow records already in memory into ``out``.

    ``records``: a ``pyarrow.Table`` in flow schema v1 (exact column types; extra columns are
    ignored), or RecordBatches / Tables (a list, a generator, a RecordBatchReader). Counters
    are taken as ``flowatlas.counts`` in each item's schema metadata says (default ``raw``:
    multiplied by ``sampling_rate``), or as ``counts`` says for all of them. A missing column
    or a column of another type raises :class:`~flowatlas.errors.InputError` naming it.

    The same records give the same cube as :func:`build_cube` of an archive holding them:
    cells, rollups, top lists and sketches byte for byte, and cube.json except for its
    ``archive`` entry, which says ``name`` (default ``"<memory>"``), the rows, no ``files``
    and ``"in_memory": true``. ``config`` defaults to the built-in configuration (there is no
    archive to hold a flowatlas.toml). Options are :func:`build_cube`'s; the records stay in
    this process, so they run eagerly (``workers=0``) or on a pool of threads (the
    default): ``processes`` and ``scheduler`` raise :class:`~flowatlas.errors.ConfigError`
    (write the records to an archive with :class:`~flowatlas.io.archive.ArchiveWriter` and
    build that instead). ``shuffle`` chooses where map results wait as for an archive
    (``auto``: in memory where they fit in a quarter of free memory); a build from memory is
    never resumed.
    """
    if processes or scheduler:
        option = "processes=True" if processes else f"scheduler={scheduler!r}"
        raise ConfigError(
            f"{option}: in-memory records build in this process only (workers=0, or the "
            "default threads); write them to an archive with ArchiveWriter and build that"
        )
    out = Path(out)
    with output_lock(out):
        check_output(out, overwrite=overwrite)
        source = memory_records(records, counts=counts, name=name)
        cfg = config if isinstance(config, Config) else load_config(config)
        return _build(
            source,
            MEMORY_WHERE,
            out,
            cfg,
            _prefix_table(table, cfg),
            workers=workers,
            backend=backend,
            partitions=partitions,
            partition_rows=partition_rows,
            work_dir=work_dir,
            shuffle=shuffle,
            overwrite=overwrite,
            progress=progress,
        )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cycle collector off within the block (on again after, if it was on)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def shuffle_on_disk(
    shuffle: str,
    rows: int,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    keep_state: bool = False,
    scheduler: str | None = None,
    processes: bool = False,
) -> bool:
    """Whether a build's map results go through a work directory on disk (else memory).

    On disk, memory stays bounded by one task and 1/P of the rows, and an interrupted build
    resumes from the map results already written; in memory, the reducers read the map
    results where they are (no writing and reading back: about 10% faster at 50 M records),
    and an interrupted build starts again. ``auto`` chooses memory for a local build (eager or
    threads) whose shuffle fits in :data:`MEMORY_SHUFFLE_SHARE` of the memory free now
    (:data:`SHUFFLE_ROW_BYTES` per archive row at most), and for ``scheduler`` (remote workers
    may not share this disk); disk otherwise. ``work_dir`` and ``keep_state`` need the disk.
    """
    if shuffle not in SHUFFLES:
        raise ConfigError(f"shuffle must be one of {', '.join(SHUFFLES)}, not {shuffle!r}")
    needs_disk = work_dir is not None or keep_state
    if shuffle == "memory":
        if needs_disk:
            what = "a work directory" if work_dir is not None else "keeping the build state"
            raise ConfigError(f"shuffle 'memory' cannot go with {what}: that needs the disk")
        return False
    if shuffle == "disk" or needs_disk:
        return True
    if scheduler:
        return False
    if processes:  # worker processes would serialise every row between them
        return True
    return rows * SHUFFLE_ROW_BYTES > MEMORY_SHUFFLE_SHARE * available_memory()


def _larger_than_memory(source: Archive | MemoryRecords) -> bool:
    """Whether an archive and its disk shuffle (at most :data:`SHUFFLE_ROW_BYTES` a row)
    together exceed the memory available now: then the map tasks drop the archive's pages
    once read (:func:`~flowatlas.engine.workdir.drop_read_pages`), which could not stay
    cached anyway, and the shuffle keeps its pages for the reducers. Smaller archives keep
    theirs (the next build reads them from memory)."""
    files = getattr(source, "files", None)
    if not files:
        return False
    size = sum(max(f.size, 0) for f in files)
    return size + source.num_rows * SHUFFLE_ROW_BYTES > available_memory()


def available_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable, else psutil's estimate of it).

    Read from /proc/meminfo where there is one: importing psutil for this one number cost
    6-12 ms of every build's start-up.
    """
    try:
        with open(MEMINFO, "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def _prefix_table(table: PrefixTable | str | os.PathLike[str] | None, cfg: Config) -> PrefixTable:
    """The prefix table given, loaded from a path, or compiled from the configuration."""
    if isinstance(table, PrefixTable):
        return table
    if table is not None:
        return PrefixTable.load(table)
    return load_table(cfg)


def _opening(
    table: PrefixTable | str | os.PathLike[str] | None,
) -> Callable[[Config], PrefixTable]:
    """Start opening a prefix table file now, on a thread of its own; the function returned
    gives the table (or raises what opening it raised) given the configuration.

    Opening a large table is ~80 ms of CRC checks and index expansion, and what every build
    then asks of it (``PrefixTable.load(precompute=True)``) ~50 ms more of Arrow and NumPy kernels:
    all of it releases the GIL, while the archive's footers and the configuration (whose
    checks start numba, ~0.25 s of Python) take the build's own thread: the two overlap.
    Without a file there is nothing to start (the configuration names the table, or it is
    given open).
    """
    if table is None or isinstance(table, PrefixTable):
        return functools.partial(_prefix_table, table)
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, "flowatlas-table")
    opened = pool.submit(PrefixTable.load, table, precompute=True)
    pool.shutdown(wait=False)
    return lambda _cfg: opened.result()


def default_sizes(num_rows: int) -> tuple[int, int]:
    """(IP partitions, archive rows per map task) of a build of ``num_rows`` records that
    names neither: about :data:`ROWS_PER_PARTITION` rows per partition (at least 4, before
    rounding up to whole rounds of the workers), and a few map tasks per worker."""
    return max(4, -(-num_rows // ROWS_PER_PARTITION)), min(2_000_000, max(250_000, num_rows // 16))


def _build(
    source: Archive | MemoryRecords,
    where: str,
    out: Path,
    cfg: Config,
    prefix_table: PrefixTable,
    *,
    workers: int | None,
    backend: str,
    partitions: int | None,
    partition_rows: int | None,
    work_dir: str | os.PathLike[str] | None,
    overwrite: bool,
    progress: Callable[[str, int, int], None] | None,
    shuffle: str = "auto",
    scheduler: str | None = None,
    processes: bool = False,
    keep_state: bool = False,
    incremental: bool = False,
    state_sig: dict[str, Any] | None = None,
    trim_memory: bool = True,
) -> BuildSummary:
    """Plan, map, reduce, combine and write: the build of an archive or of in-memory records.

    ``where`` names the input in errors.
    """
    check_regions(cfg)  # as `config --check` does, for configurations made in Python too
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    auto_partitions, auto_rows = default_sizes(source.num_rows)
    if partitions is None:
        partitions = auto_partitions
        if n_workers > 1:  # whole rounds of reducers: none left running alone at the end
            partitions = -(-partitions // n_workers) * n_workers
    if partition_rows is None:
        partition_rows = auto_rows
    plan = make_plan(cfg, prefix_table, partitions=partitions, backend=resolve_backend(backend))
    if state_sig is not None and state_sig.get("plan") != plan.digest():
        raise InputError(
            f"{out}: its state was built with another configuration or prefix table; "
            "rebuild without --incremental"
        )
    if not scheduler and not processes:  # the map tasks run in this process
        _index_ahead(plan.local_table)
    tasks = pack(source.fragments(partition_rows), partition_rows, by_file=keep_state)
    if not keep_state:  # kept state needs tasks that stay as they are when files are added
        tasks = balance(tasks, n_workers)
    work = None
    on_disk = shuffle_on_disk(
        shuffle,
        source.num_rows,
        work_dir=work_dir,
        keep_state=keep_state,
        scheduler=scheduler,
        processes=processes,
    )
    if on_disk:
        root = state_path(out) if incremental else work_dir or default_workdir(out)
        work = WorkDir(
            root,
            {
                "plan": plan.digest(),
                "partitions": plan.partitions,
                "partition_rows": partition_rows,
                "flowatlas": __version__,
            },
            drop_archive_pages=_larger_than_memory(source),
        )
        footers = source.footers()
        keys = [task_key(t, footers) for t in tasks]
        resumed = work.open(keys, keep_rows=keep_state)
        if resumed and progress:
            progress("resume", resumed, len(tasks))
        mapped = sum(
            f.num_rows for k, t in zip(keys, tasks, strict=True) if not work.map_done(k) for f in t
        )
    else:
        mapped = source.num_rows

    # freed arrays reused, not fresh pages (engine/allocator.py), until the cube is written
    # (trimming the heap between the reducers and the cube's tables cost 50 ms); no cycle
    # collections while the scheduler's many small objects come and go. Each of the cube's
    # files is written (on the writer's threads, without the GIL) while the next tables are
    # made: links and geography, which depend on the maps only, while the reducers run
    # (:func:`_write_map_tables`); the sketches' encoding and file beside the other tables
    with build_allocator(trim=trim_memory), CubeWriter(out, overwrite=overwrite) as writer:
        on_maps = functools.partial(_write_map_tables, writer, plan)
        try:
            with _gc_paused():
                if n_workers == 0 and not scheduler:
                    combiner, stats = run_eager(tasks, plan, progress, work, on_maps)
                elif not scheduler and not processes:
                    combiner, stats = run_threads(tasks, plan, n_workers, progress, work, on_maps)
                else:
                    gpu = plan.backend == "gpu"
                    with dask_client(scheduler, n_workers or None, processes, gpu) as client:
                        combiner, stats = run_dask(client, tasks, plan, progress, work, on_maps)
        except CounterOverflow as exc:
            raise InputError(
                f"{where}: {exc}: the records' totals exceed 64-bit counters"
            ) from None
        if work is not None and not keep_state:
            # every reducer's counts are saved: the map tasks' rows go while the cube's
            # tables are made (_settle_state waits for them)
            work.drop_rows()

        if stats.records != stats.cubed + sum(stats.quarantined.values()):
            raise FlowatlasError(  # pragma: no cover - an accounting bug, never bad input
                f"internal error: records {stats.records} != cubed {stats.cubed} + quarantined"
            )
        # the sketches' encoding and file are the tail's longest chain: started first,
        # unless the top-ASN lists run on threads of their own (beside those the sketches
        # grew a heavy-tailed build's peak memory): then after them
        sketches = functools.partial(_sketches, combiner, plan)
        sketches_first = combiner.top_asn_shards() == 1
        if sketches_first:
            writer.add("sketches.parquet", sketches)
        cells = cells_table(
            combiner.cell_result(), plan.regions, plan.network_types, plan.bucket_us
        )
        writer.add("cells.parquet", cells)  # the largest file left
        result = combiner.result(sketches=False)
        if not sketches_first:
            writer.add("sketches.parquet", sketches)
        writer.add(
            "rollups.parquet",
            rollups_table(result, plan.regions, plan.network_types, plan.rollups),
        )
        describe_asn, describe_ip = _describers(prefix_table)
        top_ips, top_asns = top_tables(
            result, plan.regions, plan.network_types, describe_asn, describe_ip
        )
        writer.add("top_ips.parquet", top_ips)
        writer.add("top_asns.parquet", top_asns)
        del top_ips, top_asns
        meta = _metadata(source, cfg, plan, prefix_table, stats, cells)
        quarantined = sum(stats.quarantined.values())
        setup = shares_of_cells(cells, stats.records, quarantined, cfg.origin)
        del result
        writer.commit(meta)
    state = _settle_state(work, out, keep_state)
    return BuildSummary(
        out,
        stats.records,
        stats.cubed,
        dict(stats.quarantined),
        cells.num_rows,
        len(tasks),
        cfg.origin,
        "disk" if on_disk else "memory",
        mapped,
        setup,
        state,
        _tree_bytes(state) if state is not None else 0,
    )


def _index_ahead(table: PrefixTable) -> None:
    """Start building ``table``'s lookup index (:attr:`PrefixTable.index`) on a thread of
    its own, for the map tasks of this process.

    The configuration's own prefixes make a small table whose index the first map task built
    when it first looked an address up: 16-18 ms while its IPv4 root was 64 MiB, touched for
    the first time (now 256 KiB: ~1 ms, numba's first call of the builder most of it), while
    the second task's thread waited for it. Started here, it is built
    while the tasks are handed out and read their first files (the kernel releases the GIL).
    Up to Python 3.11 the property's lock makes a task that needs it first wait for this
    build; later Pythons have no such lock, and that task builds the same index itself.
    A failure is left for the task to meet (and report) again.
    """

    def build() -> None:
        with contextlib.suppress(Exception):
            _ = table.index

    threading.Thread(target=build, name="flowatlas-index", daemon=True).start()


def _write_map_tables(writer: CubeWriter, plan, combiner) -> None:
    """Make links.parquet (where the configuration has interface links) and geo.parquet
    (where the prefix table names countries or metros) from the map results alone, and hand
    them to ``writer``: the runners call this before the reducers' counts come in."""
    maps = combiner.map_result()
    if plan.track_links:
        writer.add(
            "links.parquet",
            links_table(maps, plan.regions, plan.network_types, plan.bucket_us, plan.link_names),
        )
    writer.add("geo.parquet", geo_table(maps, plan.regions, plan.network_types, plan.geo_names))


def _sketches(combiner, plan) -> pa.Table | None:
    """sketches.parquet from the combiner's registers (for the writer's threads: the encoding
    is a numba kernel without the GIL, so it runs beside the other tables' making)."""
    sketched = combiner.sketch_result()
    if sketched is None:
        return None
    return sketch_blobs_table(*sketched, plan.regions, plan.network_types, plan.bucket_us)


def state_path(out: str | os.PathLike[str]) -> Path:
    """Where a ``keep_state`` build keeps its state: ``.CUBE.state`` beside the cube ``CUBE``.

    Beside, not inside: the state (every map task's distinct rows, often 20 times the cube's
    size) would otherwise travel with a cube that is copied, served or archived.
    """
    out = Path(out)
    return out.parent / f".{out.name}.state"


def _adopt_legacy_state(out: Path) -> Path:
    """The state of cube ``out``; one kept inside it (``CUBE/_state``, before) moves beside it."""
    state, legacy = state_path(out), out / STATE_DIR
    if legacy.is_dir() and not state.exists():
        try:
            os.replace(legacy, state)
        except OSError as exc:
            raise OutputError(f"{state}: cannot move the build state here: {exc}") from None
    return state


def _settle_state(work: WorkDir | None, out: Path, keep: bool) -> Path | None:
    """After the cube is written: keep the work as its state (returned), or remove it.

    A cube rebuilt without ``keep_state`` loses the state of its previous build (it no longer
    matches the cube, and would only take disk).
    """
    state = state_path(out)
    if not keep:
        if work is not None:
            work.remove()
        if WorkDir.read_signature(state) is not None:
            shutil.rmtree(state, ignore_errors=True)
        return None
    assert work is not None  # keep_state always shuffles on disk
    work.as_state()
    if work.root.resolve() == state.resolve():
        return state
    shutil.rmtree(state, ignore_errors=True)
    try:
        shutil.move(str(work.root), str(state))
    except OSError as exc:
        raise OutputError(
            f"{state}: cannot keep the build state here ({exc}); the cube is written, "
            f"the state is left in {work.root}"
        ) from None
    return state


def _tree_bytes(root: Path) -> int:
    """Bytes of the files under ``root``."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _describers(table: PrefixTable):
    """Functions naming ASNs and addresses from the prefix table (for the top lists).

    Vectorised over the table, then Python only for the few names asked for: a 900 k-network
    table took 0.4 s of loops here per build.
    """
    import numpy as np
    import pyarrow as pa

    asn_of, known, net_of_known = table.asn_names
    org = table.networks.column("org")

    def orgs_of(ids: np.ndarray) -> np.ndarray:
        out = np.full(ids.size, None, dtype=object)
        has = ids >= 0
        if has.any():
            out[has] = org.take(pa.array(ids[has])).to_pylist()
        return out

    def describe_asn(asns):
        asns = np.asarray(asns, dtype=np.uint32)
        pos = np.minimum(np.searchsorted(known, asns), max(known.size - 1, 0))
        found = known[pos] == asns if known.size else np.zeros(asns.size, bool)
        return orgs_of(np.where(found, net_of_known[pos] if known.size else -1, -1))

    def describe_ip(hi, lo):
        ids = table.lookup(hi, lo)
        return asn_of[ids], orgs_of(ids)

    return describe_asn, describe_ip


#: the epoch, in UTC: bucket starts are microseconds from it
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _iso_utc(us: int) -> str:
    """A UTC timestamp of ``us`` microseconds since the epoch in ISO 8601 form, as
    ``.as_py().isoformat()`` of an Arrow ``timestamp("us", tz="UTC")`` scalar gives it
    (``+00:00``): without Arrow's conversion, whose time zone object imports ``zoneinfo``
    in the build's tail."""
    return (_EPOCH + datetime.timedelta(microseconds=us)).isoformat()


def _metadata(source, cfg: Config, plan, table: PrefixTable, stats, cells) -> dict[str, Any]:
    """cube.json: everything needed to trust, explain and rebuild the cube (no wall-clock)."""
    import pyarrow.compute as pc

    if cells.num_rows:
        mm = pc.min_max(cells.column("bucket_start"))
        first, last = _iso_utc(mm["min"].value), _iso_utc(mm["max"].value)
        totals = {m: int(pc.sum(cells.column(m)).as_py()) for m in ("bytes", "packets", "flows")}
    else:
        first = last = None
        totals = {"bytes": 0, "packets": 0, "flows": 0}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "flowatlas": __version__,
        "bucket": cfg.cube.bucket,
        "bucket_seconds": cfg.cube.bucket_seconds,
        "rollups": list(plan.rollups),
        "ipv6_prefix": plan.v6_prefix,
        "top_k": TOP_K,
        "sketch": (
            {
                "kind": "hyperloglog",
                "precision": plan.sketch_p,
                "estimator": "ertl2017",
                "of": "distinct remote addresses (/128)",
                "period": plan.sketch_period,
                "standard_error": round(1.04 / 2 ** (plan.sketch_p / 2), 5),
            }
            if plan.sketch_p
            else None
        ),
        "top_list_rollups": [r for r in plan.rollups if r in TOP_LIST_ROLLUPS],
        "groupings": [list(g) for g in GROUPINGS],
        "dimensions": {
            "region": list(plan.regions),
            "network_type": list(plan.network_types),
            "direction": list(DIRECTIONS),
            "ip_version": [4, 6],
        },
        "time_range": {"first_bucket": first, "last_bucket": last},
        "records": {
            "read": stats.records,
            "cubed": stats.cubed,
            "quarantined": dict(sorted(stats.quarantined.items())),
        },
        "totals": totals,
        "archive": source.describe(),
        "prefix_table": table.provenance(),
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        # every link with its capacity (Cube.links); interface links are measured in
        # links.parquet, the others assigned on read by the rule in docs/configuration.md
        "links": [lk.to_dict() for lk in cfg.links],
        "geo": (
            {"pairs": len(plan.geo_names), "of": "remote network (prefix table)"}
            if plan.track_geo
            else None
        ),
        "plan_digest": plan.digest(),
    }
