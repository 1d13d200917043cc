"""``flowatlas rewrite ARCHIVE``: re-encode an archive's files in place, in another layout.

Archives written by an older flowatlas (or with another ``--compression``) keep the column
layout they were written with: their codecs and encodings. Rewriting gives them the layout
that :func:`~flowatlas.io.archive.writer_options` gives new files today, without importing
the original flow files again. Each archive file (what a build reads:
:func:`~flowatlas.io.archive.open_archive`'s files) is one unit of work:

1. it is skipped where every column already has the requested layout (codec and encodings,
   from its footer, against a one-row file written with the same settings), so a second
   run does nothing and an interrupted run resumes where it stopped;
2. it is read a row group at a time (every page checksum verified; memory is one row group
   and its encoding) and written to a hidden temporary file beside it, ``.NAME.rewrite.tmp``,
   with the same row groups, schema, key-value metadata and extra columns;
3. the temporary file is read back and checked to hold the same rows: its schema and
   metadata, the rows of each row group and a CRC-32 of every column's values in each;
   then it is flushed to the disk (fsync) and renamed over the old file (``os.replace``: a
   reader sees the old file or the new one, never half of one).

Files are rewritten side by side in worker processes (``jobs``), largest first; renames and
the import manifest are this process's. The import manifest (``_import/manifest.json``) lists
each imported file's size, SHA-256 and footer hash: before a file is replaced, the new file's
description is saved under the manifest's ``rewriting`` (so a rewrite killed between the
rename and the next save leaves a file the manifest still accepts), and after, it becomes the
file's record. ``flowatlas verify`` and builds accept either; ``flowatlas import`` still skips
every source it imported (sources are known by their own hashes, not the archive files').

Failures: a damaged file (a page that fails its checksum, an unreadable footer) is that file's
error and it is left as it was; the others are still rewritten, because a long rewrite of a
large archive should not be lost to one bad file, which the summary names (the command exits
2). A failure to write (a full disk, a directory that is not writable, a file that reads back
different) stops the rewrite, since no other file would fare better: the old file stays
intact, the temporary files are removed, and what was replaced stays replaced (run it again
once there is room: it resumes). Files that are symbolic links are not rewritten (the
rename would replace the link, and writing through it would write outside the archive); a
file with other hard links is replaced by a new file (inode), so the other names keep the
old content.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import queue
import stat
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.parquet as pq

from flowatlas.errors import FlowatlasError, InputError, OutputError
from flowatlas.io import archive as _archive
from flowatlas.io.archive import (
    ArchiveFile,
    damaged,
    describe_file,
    footer_sha256,
    fsync_file,
    open_parquet,
    writer_options,
)
from flowatlas.io.manifest import (
    IMPORT_DIR,
    MANIFEST_NAME,
    Manifest,
    archive_lock,
    archive_problems,
    describe_output,
)
from flowatlas.io.swap import fsync_dir

#: the temporary file of a rewrite, beside the file it will replace (hidden: not read)
TMP_SUFFIX = ".rewrite.tmp"
#: below this much to rewrite, by default no worker processes (their start costs more)
SMALL_REWRITE_BYTES = 32 << 20
#: flowatlas.synth.SYNTH_MARKER, written out (importing flowatlas.synth loads numba): the
#: marker of a synthetic archive, which names its codec where that is not the default
SYNTH_MARKER = "_synth.json"
#: at most this many seconds between two saves of the import manifest (one save a file
#: would make a rewrite of many small files quadratic in the manifest's size)
MANIFEST_SAVE_SECONDS = 5.0


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RewriteTask:
    """One archive file to rewrite (plain data, cheap to send to a worker)."""

    path: str
    size: int
    #: the file's footer hash when it was planned: it must not change before it is replaced
    footer_sha256: str
    rows: int
    compression: str
    #: the import manifest lists the file: the new one's SHA-256 is needed for its record
    describe: bool = False


@dataclass
class RewriteResult:
    """What rewriting one file gave: a checked temporary file, or the error that stopped it."""

    path: str
    size_before: int
    footer_before: str = ""
    rows: int = 0
    tmp: str | None = None
    #: the new file's size and footer hash (and SHA-256 where the task asks for it)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: the error is the archive's (a full disk), not the file's: the rewrite stops
    fatal: bool = False
    seconds: float = 0.0

    @property
    def size_after(self) -> int:
        return int(self.info.get("size", 0))


@dataclass
class RewriteSummary:
    """The outcome of one ``flowatlas rewrite`` run."""

    archive: str
    compression: str
    rewritten: list[RewriteResult] = field(default_factory=list)
    #: files already in the requested layout (or without rows: nothing to re-encode)
    skipped: list[str] = field(default_factory=list)
    #: symbolic links: not rewritten (see the module docstring)
    links: list[str] = field(default_factory=list)
    failed: list[RewriteResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.rewritten)

    @property
    def bytes_before(self) -> int:
        return sum(r.size_before for r in self.rewritten)

    @property
    def bytes_after(self) -> int:
        return sum(r.size_after for r in self.rewritten)

    def render(self) -> str:
        """The summary printed after a rewrite: one line, and one per failed file."""
        before, after = self.bytes_before, self.bytes_after
        change = f" ({100 * (after - before) / before:+.1f}%)" if before else ""
        line = (
            f"flowatlas rewrite -> {self.archive} ({self.compression}): rewritten "
            f"{len(self.rewritten)} files ({self.rows:,} records), already "
            f"{self.compression} {len(self.skipped)}, failed {len(self.failed)}"
        )
        if self.links:
            line += f", symbolic links left as they are {len(self.links)}"
        line += f"; {_mb(before)} -> {_mb(after)}{change}, {self.seconds:.1f} s"
        return "\n".join([line] + [f"  FAILED    {r.error}" for r in self.failed])


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


# --------------------------------------------------------------------------- layout


def _layout(meta: pq.FileMetaData) -> tuple[Any, ...] | None:
    """Each column's codec and encodings, where every row group has the same (else None)."""
    seen = None
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        cols = tuple(
            (
                rg.column(c).path_in_schema,
                rg.column(c).compression,
                tuple(sorted(rg.column(c).encodings)),
            )
            for c in range(rg.num_columns)
        )
        if seen is not None and cols != seen:
            return None
        seen = cols
    return seen


def expected_layout(path: str | os.PathLike[str], compression: str) -> tuple[Any, ...] | None:
    """The layout (:func:`_layout`) that ``compression``'s writer settings give a file of
    ``path``'s schema: its first row written with them to memory. None for a file without
    rows."""
    pf = open_parquet(path)
    if not pf.metadata.num_rows:
        return None
    first = next(
        b for rg in range(pf.num_row_groups) for b in pf.iter_batches(batch_size=1, row_groups=[rg])
    )
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, pf.schema_arrow, **writer_options(compression)) as w:
        w.write_batch(first.slice(0, 1))
    return _layout(pq.ParquetFile(pa.BufferReader(sink.getvalue())).metadata)


# --------------------------------------------------------------------------- one file


def _digest(table: pa.Table) -> tuple[int, ...]:
    """A CRC-32 of each column's values, whatever their chunks: what the check compares.

    Columns of fixed-width values without nulls (every flow schema v1 column) are hashed as
    their bytes (about 4 GB/s); any other column (an extra one) as the text of its values.
    """
    out = []
    for col in table.columns:
        crc = 0
        try:
            width = col.type.bit_width
        except ValueError:
            width = 0
        if width and width % 8 == 0 and col.null_count == 0:
            w = width // 8
            for chunk in col.chunks:
                buf = chunk.buffers()[1]
                if buf is None or not len(chunk):
                    continue
                crc = zlib.crc32(
                    memoryview(buf)[chunk.offset * w : (chunk.offset + len(chunk)) * w], crc
                )
        else:
            crc = zlib.crc32(repr(col.to_pylist()).encode(), crc)
        out.append(crc)
    return tuple(out)


def rewrite_file(task: RewriteTask, progress: Callable[[int], None] | None = None) -> RewriteResult:
    """Write ``task``'s file again, in its codec's layout, to a checked temporary file beside
    it (see the module docstring); the caller renames it over the file. ``progress`` is told
    the rows of each row group written. Errors are in the result, never raised; on one no
    temporary file is left."""
    t0 = time.perf_counter()
    path = Path(task.path)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    result = RewriteResult(task.path, task.size, task.footer_sha256)
    writer: pq.ParquetWriter | None = None
    try:
        try:
            pf = open_parquet(path)
            schema = pf.schema_arrow
            kv = dict(pf.metadata.metadata or {})
        except (OSError, pa.ArrowException) as exc:
            raise damaged(path, exc) from None
        digests: list[tuple[int, tuple[int, ...]]] = []
        for i in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(i)
            except (OSError, pa.ArrowException) as exc:
                raise damaged(path, exc, [i]) from None
            if table.num_rows == 0:  # holds nothing: not written (an empty row group)
                continue
            digests.append((table.num_rows, _digest(table)))
            try:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, schema, **writer_options(task.compression))
                writer.write_table(table, row_group_size=table.num_rows)
            except OSError as exc:
                raise OutputError(f"{tmp}: cannot write: {exc.strerror or exc}") from None
            del table
            if progress is not None:
                progress(digests[-1][0])
        if writer is None:
            raise InputError(f"{path}: holds no rows: nothing to rewrite")
        try:
            writer.close()
            writer = None
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
            fsync_file(tmp)
        except OSError as exc:
            raise OutputError(f"{tmp}: cannot write: {exc.strerror or exc}") from None
        _check(tmp, path, schema, kv, digests)
        result.rows = sum(n for n, _ in digests)
        try:
            result.info = describe_output(tmp) if task.describe else _footer_info(tmp)
        except (OSError, InputError) as exc:
            raise OutputError(f"{tmp}: cannot read back what was written: {exc}") from None
        result.tmp = str(tmp)
    except OutputError as exc:
        result.error, result.fatal = str(exc), True
    except FlowatlasError as exc:
        result.error = str(exc)
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        if result.tmp is None:  # failed, or stopped (Ctrl-C, the parent's stop): no file left
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    result.seconds = time.perf_counter() - t0
    return result


def _footer_now(path: Path) -> tuple[int, str] | None:
    """(size, footer hash) of an archive file now, None where it is gone or no Parquet."""
    try:
        size = path.stat().st_size
        return size, footer_sha256(path, size)
    except (OSError, InputError):
        return None


def _footer_info(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    return {"size": size, "footer_sha256": footer_sha256(path, size)}


def _check(
    tmp: Path,
    path: Path,
    schema: pa.Schema,
    kv: dict[bytes, bytes],
    digests: list[tuple[int, tuple[int, ...]]],
) -> None:
    """Raise an :class:`OutputError` unless ``tmp`` holds what ``path`` held: the schema and
    its metadata, the rows of each row group, each column's values (``digests``)."""

    def differs(what: str) -> OutputError:
        return OutputError(
            f"{path}: its rewritten copy differs ({what}); the file is left as it was"
        )

    try:
        nf = open_parquet(tmp)
        if not nf.schema_arrow.equals(schema, check_metadata=True):
            raise differs("schema")
        got = dict(nf.metadata.metadata or {})
        got.pop(b"ARROW:schema", None)
        want = {k: v for k, v in kv.items() if k != b"ARROW:schema"}
        if got != want:
            raise differs("key-value metadata")
        rows = [nf.metadata.row_group(i).num_rows for i in range(nf.num_row_groups)]
        if rows != [n for n, _ in digests]:
            raise differs(f"rows per row group {rows}, not {[n for n, _ in digests]}")
        for i, (_, want_digest) in enumerate(digests):
            got_digest = _digest(nf.read_row_group(i))
            if got_digest != want_digest:
                bad = next(
                    name
                    for name, a, b in zip(schema.names, got_digest, want_digest, strict=True)
                    if a != b
                )
                raise differs(f"row group {i}, column {bad}")
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"{tmp}: cannot read back what was written: {exc}") from None


# --------------------------------------------------------------------------- workers

#: a worker's queue of rows written (read by the parent for its progress bar) and the
#: event that tells it to stop (set by the parent when the rewrite stops early)
_WORKER: list[Any] = []


class _Stopped(Exception):
    """Raised in a worker between two row groups: the rewrite stopped (its file is dropped)."""


def _worker_start(parent_pid: int, arrow_threads: int, rows: Any, stop: Any) -> None:
    """Worker initialiser: die with the rewrite, use its share of the cores, report rows."""
    from flowatlas.io.commands import _worker_start as start

    start(parent_pid, arrow_threads)
    _WORKER[:] = [rows, stop]


def _in_worker(task: RewriteTask) -> RewriteResult:
    """:func:`rewrite_file` in a worker: rows reported to the parent, and stopped between row
    groups once the parent says so (files queued ahead are not started)."""
    rows, stop = _WORKER

    def progress(n: int) -> None:
        rows.put(n)
        if stop.is_set():
            raise _Stopped

    if stop.is_set():
        raise _Stopped
    return rewrite_file(task, progress)


def default_jobs(tasks: list[RewriteTask], cpus: int | None = None) -> int:
    """Processes for ``tasks`` when ``--jobs`` is not given: one per core, at most one per
    file and one per ``SMALL_REWRITE_BYTES`` to rewrite (a worker's start costs more below)."""
    cpus = cpus or os.cpu_count() or 1
    total = sum(t.size for t in tasks)
    return max(1, min(cpus, len(tasks), total // SMALL_REWRITE_BYTES))


def _run(
    tasks: list[RewriteTask], jobs: int, rows: Callable[[int], None]
) -> Generator[RewriteResult, None, None]:
    """Rewrite ``tasks``, largest first; yield each result as it comes. One job: in this
    process; more: in that many spawned worker processes (this one renames and keeps the
    manifest). Closing the generator cancels what has not started and waits for the rest."""
    tasks = sorted(tasks, key=lambda t: (-t.size, t.path))
    if jobs <= 1:
        for task in tasks:
            yield rewrite_file(task, rows)
        return
    ctx = multiprocessing.get_context("spawn")
    rows_queue = ctx.Queue()
    stop = ctx.Event()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = cf.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=ctx,
        initializer=_worker_start,
        initargs=(os.getpid(), threads, rows_queue, stop),
    )

    def drain() -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                rows(rows_queue.get_nowait())

    try:
        waiting = {pool.submit(_in_worker, t) for t in tasks}
        while waiting:
            done, waiting = cf.wait(waiting, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            drain()
            for fut in done:
                try:
                    yield fut.result()
                except cf.process.BrokenProcessPool:
                    raise OutputError(
                        "a rewrite worker process died (killed, or out of memory); "
                        "run the rewrite again: it resumes"
                    ) from None
        drain()
    finally:
        # stopped early (an error, Ctrl-C): the workers drop their files at the next row
        # group instead of finishing them, and the files queued ahead of them are not begun
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        rows_queue.close()


# --------------------------------------------------------------------------- the archive


def _replace(tmp: str, final: str) -> None:
    """Rename a checked temporary file over the archive file (one place, for the tests)."""
    os.replace(tmp, final)


def _leftovers(root: Path) -> Iterator[Path]:
    """Temporary files of rewrites that died, where archive files are (not in ``_`` dirs)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                yield Path(dirpath) / name


def _check_root(root: Path) -> None:
    if not root.exists():
        raise InputError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise InputError(f"{root}: not an archive directory")
    if (root / "cube.json").exists():
        raise InputError(f"{root}: is a flowatlas cube, not an archive")


def rewrite_archive(
    root: str | os.PathLike[str],
    *,
    compression: str | None = None,
    jobs: int | None = None,
    progress: bool | None = None,
) -> RewriteSummary:
    """Re-encode the files of the archive at ``root`` in ``compression``'s layout (default
    :data:`~flowatlas.io.archive.DEFAULT_COMPRESSION`); see the module docstring.

    ``jobs``: processes rewriting files at once (default :func:`default_jobs`; 1: this
    process alone). ``progress``: a bar on stderr (None: on a terminal, else a plain line
    every 10 s; False: nothing). Returns the summary; files that failed are listed in it.
    Raises :class:`OutputError` when a file cannot be written (the rewrite stops; see the
    module docstring) and :class:`InputError` for an archive whose import manifest does not
    match its files (run ``flowatlas verify``) or that is no archive.
    """
    from flowatlas.io.archive import EMPTY, archive_paths, check_compression
    from flowatlas.progress import Progress

    t0 = time.perf_counter()
    compression = check_compression(compression or _archive.DEFAULT_COMPRESSION)
    root = Path(root)
    _check_root(root)
    summary = RewriteSummary(str(root), compression)
    real_root = root.resolve()
    with archive_lock(root):
        for tmp in _leftovers(root):  # a rewrite that died (this one holds the lock)
            tmp.unlink(missing_ok=True)
        paths = archive_paths(root)
        if not paths:  # the wrong directory, most likely: say so rather than "0 files"
            raise InputError(EMPTY.format(root=root))
        files: list[ArchiveFile] = []
        known: dict[tuple[Any, ...], tuple[Any, str]] = {}
        for p in paths:
            if p.is_symlink() or not p.resolve().is_relative_to(real_root):
                summary.links.append(str(p))
                continue
            try:
                files.append(describe_file(p, root, known))
            except InputError as exc:
                summary.failed.append(RewriteResult(str(p), 0, error=str(exc)))
        has_manifest = (root / IMPORT_DIR / MANIFEST_NAME).exists()
        manifest = Manifest.open(root) if has_manifest else None
        if manifest is not None and manifest.settle_rewrites():
            manifest.save()
        problems = archive_problems(root, files)
        if problems:
            more = (
                f" (and {len(problems) - 1} more: flowatlas verify {root})"
                if len(problems) > 1
                else ""
            )
            raise InputError(f"cannot rewrite {root}: {problems[0]}{more}")
        listed = manifest.by_output() if manifest is not None else {}
        tasks = _plan(files, compression, listed, summary)
        if not tasks:
            if not summary.failed and not summary.links:
                _mark_synth_codec(root, compression)
            summary.seconds = time.perf_counter() - t0
            return summary
        workers = max(1, min(jobs or default_jobs(tasks), len(tasks)))
        bar = Progress(
            "rewrite", "records", sum(t.rows for t in tasks),
            quiet=progress is False, tty=True if progress else None,
        )  # fmt: skip
        ready: list[RewriteResult] = []
        last_save = time.monotonic()
        try:
            with contextlib.closing(_run(tasks, workers, bar.update)) as results:
                for result in results:
                    if result.fatal:
                        raise OutputError(f"rewrite stopped: {result.error}")
                    if result.error is not None:
                        summary.failed.append(result)
                        continue
                    ready.append(result)
                    if time.monotonic() - last_save >= MANIFEST_SAVE_SECONDS or manifest is None:
                        _put_in_place(ready, root, manifest, listed, summary)
                        last_save = time.monotonic()
            _put_in_place(ready, root, manifest, listed, summary)
        finally:
            bar.close()
            for r in ready:  # checked but not renamed: the rewrite stopped
                with contextlib.suppress(OSError):
                    Path(r.tmp or "").unlink(missing_ok=True)
            for tmp in _leftovers(root):  # workers that were stopped mid-file
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        if not summary.failed and not summary.links:
            _mark_synth_codec(root, compression)
    summary.failed.sort(key=lambda r: r.path)
    summary.rewritten.sort(key=lambda r: r.path)
    summary.seconds = time.perf_counter() - t0
    return summary


def _mark_synth_codec(root: Path, compression: str) -> None:
    """Make a synthetic archive's marker name the codec its files now have, as
    ``flowatlas synth`` writes it (always: bench caches compare it)."""
    import json

    marker = root / SYNTH_MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return  # no synthetic archive (or not its marker): nothing to say
    if not isinstance(meta, dict):
        return
    want = {**meta, "compression": compression}
    if want == meta:
        return
    tmp = marker.with_name(f".{SYNTH_MARKER}{TMP_SUFFIX}")
    try:
        tmp.write_text(json.dumps(want, indent=1))
        os.replace(tmp, marker)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"{marker}: cannot write: {exc.strerror or exc}") from None


def _plan(
    files: list[ArchiveFile],
    compression: str,
    listed: dict[str, Any],
    summary: RewriteSummary,
) -> list[RewriteTask]:
    """The files not yet in ``compression``'s layout, as tasks (the others are skipped)."""
    expected: dict[str, tuple[Any, ...] | None] = {}
    tasks = []
    for f in files:
        if f.num_rows == 0:
            summary.skipped.append(str(f.path))
            continue
        key = str(f.metadata.schema)
        if key not in expected:
            try:
                expected[key] = expected_layout(f.path, compression)
            except (OSError, pa.ArrowException, StopIteration):
                pass  # the file is damaged: its rewrite will say where
        layout = expected.get(key)
        if layout is not None and _layout(f.metadata) == layout:
            summary.skipped.append(str(f.path))
            continue
        tasks.append(
            RewriteTask(
                str(f.path), f.size, f.footer_sha256, f.num_rows, compression, f.relpath in listed
            )
        )
    return tasks


def _put_in_place(
    ready: list[RewriteResult],
    root: Path,
    manifest: Manifest | None,
    listed: dict[str, Any],
    summary: RewriteSummary,
) -> None:
    """Rename checked files over the old ones, recording them in the import manifest first
    (as ``rewriting``) and after (as the files' records); ``ready`` is emptied."""
    for r in list(ready):
        if _footer_now(Path(r.path)) != (r.size_before, r.footer_before):
            ready.remove(r)
            with contextlib.suppress(OSError):
                Path(r.tmp or "").unlink(missing_ok=True)
            r.tmp, r.info = None, {}
            r.error = f"{r.path}: changed during the rewrite; left as it is (run it again)"
            summary.failed.append(r)
    if not ready:
        return
    rels = {r.path: Path(r.path).relative_to(root).as_posix() for r in ready}
    journal = manifest is not None and any(rels[r.path] in listed for r in ready)
    if journal:
        for r in ready:
            if rels[r.path] in listed:
                manifest.rewriting[rels[r.path]] = dict(r.info)
        manifest.save()
    dirs = set()
    while ready:
        r = ready[0]
        try:
            _replace(r.tmp or "", r.path)
        except OSError as exc:
            raise OutputError(
                f"rewrite stopped: {r.path}: cannot replace: {exc.strerror or exc}"
            ) from None
        ready.pop(0)
        r.tmp = None
        summary.rewritten.append(r)
        dirs.add(Path(r.path).parent)
    for d in sorted(dirs):
        fsync_dir(d)
    if journal:
        for r in summary.rewritten[-len(rels) :]:
            if rels[r.path] in listed:
                manifest.replaced(rels[r.path], r.info, listed)
        manifest.save()


# --------------------------------------------------------------------------- the command


@click.command("rewrite", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("archive", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--compression",
    type=click.Choice(_archive.COMPRESSIONS),
    default=_archive.DEFAULT_COMPRESSION,
    show_default=True,
    help="Layout (Parquet codec) to give the files; files already in it are skipped.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Processes rewriting files at once (default: one per CPU, per file and per 32 MiB).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def rewrite(archive: str, compression: str, jobs: int | None, quiet: bool) -> None:
    """Re-encode an archive's files in place, in the layout new files get.

    Each file is written again beside itself, checked to hold the same rows, and renamed
    over the old one; the import manifest follows. Files already in the layout are skipped,
    so an interrupted rewrite resumes. A file with other hard links is replaced by a new
    file: the other links keep the old one. Needs free space for one file per job.
    """
    summary = rewrite_archive(
        archive, compression=compression, jobs=jobs, progress=False if quiet else None
    )
    if not quiet:
        click.echo(summary.render())
    if summary.failed:
        total = len(summary.failed) + len(summary.rewritten)
        raise InputError(
            f"{len(summary.failed)} of {total} files failed; first: {summary.failed[0].error}"
        )


__all__ = [
    "RewriteResult",
    "RewriteSummary",
    "RewriteTask",
    "expected_layout",
    "rewrite",
    "rewrite_archive",
    "rewrite_file",
]
