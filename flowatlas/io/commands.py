"""``flowatlas import``: source files (nfcapd, goflow2, pmacct, CSV, ...) into a flow archive.

The Python API is :func:`import_sources`; the click command :func:`import_` is a thin layer
over it. One source file is one unit of work:

1. sources are expanded (directories recursively), hashed (SHA-256, threads) and compared with
   the archive's manifest: content already imported is skipped;
2. each remaining file is read by its importer, in this process or a worker (with ``jobs``
   N: this process and a pool of N - 1, one file per task, largest first), and written to the
   archive under its own names (``<format>-<hash16>``), day by day, in batches of about a
   million rows, so memory stays bounded and the output does not depend on how many processes
   ran or in which order they finished;
3. rows an importer rejects go to ``ARCHIVE/_import/quarantine/<name>.parquet`` with a reason;
   records read = records written + records quarantined, checked for every batch;
4. the manifest records each finished file; an interrupted import resumes where it stopped.

With ``--config``, the configuration is validated and the summary counts the records that
touch none of the configured local prefixes (they are kept: orientation counts them as transit
or unknown at build time).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import errno
import multiprocessing
import os
import queue
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flowatlas.commands import compression_option
from flowatlas.config import DEFAULT_MAX_LINE_RATE_GBPS
from flowatlas.errors import ConfigError, FlowatlasError, InputError, OutputError
from flowatlas.io.manifest import (
    FileEntry,
    Manifest,
    archive_lock,
    content_sha256,
    describe_output,
    output_name,
    remove_outputs,
)

DEFAULT_BATCH_ROWS = 1 << 20
AUTO = "auto"
#: below this much input, the default is to import in this process (no worker start-up)
SMALL_IMPORT_BYTES = 32 << 20
#: quarantine reasons that mean "this is not a record of the format at all"
STRUCTURE_REASONS = frozenset({"bad_json", "malformed_line", "bad_protobuf"})
#: formats offered by --format; importers registered later (plugins) are accepted too
FORMAT_CHOICES = (
    AUTO,
    "nfcapd",
    "nfdump-csv",
    "goflow2-json",
    "goflow2-pb",
    "pmacct-json",
    "pmacct-csv",
    "csv",
    "netflow-pcap",
    "netflow-payload",
)


# --------------------------------------------------------------------------- results


@dataclass
class FileResult:
    """What importing one source file gave (or the error that stopped it)."""

    path: str
    size: int
    sha256: str
    format: str
    counts: str = ""
    records_read: int = 0
    records_written: int = 0
    records_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    quarantine_file: str | None = None
    no_local_prefix: int | None = None
    error: str | None = None
    #: the error is the archive's (a full disk), not the source's: the import stops
    fatal: bool = False
    seconds: float = 0.0
    #: what each output file (archive and quarantine) is: size, content and footer hashes
    output_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the SHA-256 of the file's bytes where ``sha256`` is that of its decompressed content
    file_sha256: str | None = None
    #: the set-up accounting of the records written, counted batch by batch (with
    #: ``setup``): records, quarantined by the build, Unknown region, Unknown type, transit
    setup: tuple[int, int, int, int, int] | None = None
    #: why the set-up could not be counted (a bad configuration; the import still stands)
    setup_error: str | None = None


@dataclass
class ImportSummary:
    """The outcome of one ``flowatlas import`` run."""

    archive: str
    imported: list[FileResult] = field(default_factory=list)
    failed: list[FileResult] = field(default_factory=list)
    skipped_known: list[str] = field(default_factory=list)  # content already in the archive
    skipped_duplicate: list[str] = field(default_factory=list)  # same content twice this run
    skipped_unrecognised: list[str] = field(default_factory=list)  # in a folder, not a format
    recovered: list[str] = field(default_factory=list)  # pending from an interrupted run
    local_prefixes: int = 0
    seconds: float = 0.0

    @property
    def records_read(self) -> int:
        return sum(r.records_read for r in self.imported)

    @property
    def records_written(self) -> int:
        return sum(r.records_written for r in self.imported)

    @property
    def records_quarantined(self) -> int:
        return sum(r.records_quarantined for r in self.imported)

    @property
    def reasons(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for r in self.imported:
            c.update(r.reasons)
        return c

    @property
    def no_local_prefix(self) -> int | None:
        if not self.local_prefixes:
            return None
        return sum(r.no_local_prefix or 0 for r in self.imported)

    def render(self) -> str:
        """The one-screen summary printed after an import."""
        lines = [
            f"flowatlas import -> {self.archive}",
            f"  files     imported {len(self.imported)}, "
            f"skipped {len(self.skipped_known) + len(self.skipped_duplicate)} "
            f"(already imported {len(self.skipped_known)}, "
            f"duplicate content {len(self.skipped_duplicate)}), failed {len(self.failed)}",
        ]
        if self.skipped_unrecognised:
            shown = ", ".join(Path(p).name for p in self.skipped_unrecognised[:3])
            more = "" if len(self.skipped_unrecognised) <= 3 else ", ..."
            lines.append(
                f"            not a flow format (in folders, not imported) "
                f"{len(self.skipped_unrecognised)}: {shown}{more}"
            )
        if self.recovered:
            lines.append(f"            resumed after an interrupted import: {len(self.recovered)}")
        lines += [
            f"  records   read {self.records_read:,}",
            f"            written {self.records_written:,}",
            f"            quarantined {self.records_quarantined:,}",
        ]
        for reason, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"              {reason:<22} {n:>12,}")
        if self.records_quarantined:
            lines.append(f"            (rows and reasons in {self.archive}/_import/quarantine/)")
        nl = self.no_local_prefix
        if nl is not None:
            lines.append(
                f"  local     {nl:,} of {self.records_written:,} written records touch none of "
                f"the {self.local_prefixes} configured local prefixes"
            )
            lines.append("            (kept: the build counts them as transit or unknown)")
        for r in self.failed:
            lines.append(f"  FAILED    {r.error}")
        rate = self.records_read / self.seconds if self.seconds > 0 else 0.0
        lines.append(f"  time      {self.seconds:.1f} s ({rate:,.0f} records/s)")
        return "\n".join(lines)


# --------------------------------------------------------------------------- one file (worker)


@dataclass(frozen=True)
class ImportTask:
    """Everything a worker needs to import one file (plain data, cheap to pickle)."""

    path: str
    size: int
    sha256: str
    format: str
    archive: str
    extra: tuple[tuple[str, Any], ...]
    batch_rows: int
    local_ranges: tuple[tuple[int, int, int, int], ...] = ()
    mtime_ns: int = 0  # with size: the file must not change while it is imported
    max_line_rate_gbps: float = DEFAULT_MAX_LINE_RATE_GBPS
    file_sha256: str | None = None
    #: count the set-up accounting of each batch written (``import``'s last line)
    setup: bool = False
    #: the configuration it is counted under (None: the archive's flowatlas.toml, else the
    #: defaults), as the build will resolve it
    setup_config: str | None = None
    #: the archive files' layout (:data:`flowatlas.io.archive.COMPRESSIONS`)
    compression: str = "auto"


#: this process's set-up counter, made once per (archive, configuration): one at a time (a
#: counter holds the configuration's lookup tables, 64 MiB and more; a process that imports
#: into many archives must not keep one per archive)
_SETUP_COUNTER: list[Any] = []


def _setup_counter(task: ImportTask) -> Any:
    """The :class:`~flowatlas.inspect.SetupCounter` for ``task`` (this process's, kept for
    the next file of the same import); raises :class:`~flowatlas.errors.FlowatlasError`
    where the configuration is bad."""
    key = (task.archive, task.setup_config)
    if not _SETUP_COUNTER or _SETUP_COUNTER[0] != key:
        from flowatlas.engine.build import resolve_config
        from flowatlas.inspect import SetupCounter

        _SETUP_COUNTER.clear()
        counter = SetupCounter(resolve_config(Path(task.archive), task.setup_config))
        _SETUP_COUNTER.extend((key, counter))
    return _SETUP_COUNTER[1]


@contextlib.contextmanager
def _forget_setup() -> Generator[None, None, None]:
    """Drop this process's set-up counter when the import ends (it imported files too)."""
    try:
        yield
    finally:
        _SETUP_COUNTER.clear()


def _in_ranges(hi: np.ndarray, lo: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """True where (hi, lo) lies in any of the [start, end] ranges (rows of 4 uint64)."""
    hit = np.zeros(hi.shape, dtype=bool)
    for s_hi, s_lo, e_hi, e_lo in ranges:
        ge = (hi > s_hi) | ((hi == s_hi) & (lo >= s_lo))
        le = (hi < e_hi) | ((hi == e_hi) & (lo <= e_lo))
        hit |= ge & le
    return hit


def _count_no_local(table: pa.Table, ranges: np.ndarray) -> int:
    from flowatlas.addresses import bytes16_to_hilo

    if table.num_rows == 0:
        return 0
    s_hi, s_lo = bytes16_to_hilo(table.column("src_addr"))
    d_hi, d_lo = bytes16_to_hilo(table.column("dst_addr"))
    local = _in_ranges(s_hi, s_lo, ranges) | _in_ranges(d_hi, d_lo, ranges)
    return int((~local).sum())


def import_one(task: ImportTask) -> FileResult:
    """Import one source file into the archive (runs in a worker process or inline).

    Every batch passes :func:`~flowatlas.io.importers.base.screen_counters`. A failure of
    the source (unreadable, not the format) is the file's error; a failure to write the
    archive (a full disk) is ``fatal``: the import stops. Either way nothing this file wrote
    is left behind.
    """
    from flowatlas.io.archive import ArchiveWriter
    from flowatlas.io.importers.base import (
        QUARANTINE_SCHEMA,
        ImportOptions,
        get_importer,
        screen_counters,
    )

    t0 = time.perf_counter()
    result = FileResult(task.path, task.size, task.sha256, task.format)
    result.file_sha256 = task.file_sha256
    root = Path(task.archive)
    name = output_name(task.format, task.sha256)
    options = ImportOptions(batch_rows=task.batch_rows, extra=task.extra)
    ranges = np.array(task.local_ranges, dtype=np.uint64).reshape(-1, 4)
    writer = None
    qwriter: pq.ParquetWriter | None = None
    qdir = root / "_import" / "quarantine"
    qtmp = qdir / f".{name}.parquet.tmp"
    try:
        importer = get_importer(task.format)()
        counts = _counts_of(importer, options)
        result.counts = counts
        writer = ArchiveWriter(
            root,
            counts=counts,
            source=f"{task.format} sha256:{task.sha256}",
            name=name,
            compression=task.compression,
        )
        reasons: Counter[str] = Counter()
        first_problem: tuple[str, str] | None = None
        no_local = 0
        setup, setup_acc = None, [0, 0, 0, 0, 0]
        if task.setup:
            try:
                setup = _setup_counter(task)
            except FlowatlasError as exc:  # said after the import, which stands
                result.setup_error = str(exc)
        for batch in importer.read(Path(task.path), options):
            read = int(batch.records_read or 0)
            if read != batch.table.num_rows + batch.quarantine.num_rows:  # pragma: no cover
                raise AssertionError(f"{task.path}: importer accounting broken")
            batch = screen_counters(
                batch,
                task.path,
                first_record=result.records_written + 1,
                max_line_rate_gbps=task.max_line_rate_gbps,
            )
            writer.write(batch.table)
            result.records_read += read
            result.records_written += batch.table.num_rows
            if batch.quarantine.num_rows:
                q = batch.quarantine.cast(QUARANTINE_SCHEMA)
                try:
                    if qwriter is None:
                        qdir.mkdir(parents=True, exist_ok=True)
                        qwriter = pq.ParquetWriter(
                            qtmp, QUARANTINE_SCHEMA, compression="zstd", write_page_checksum=True
                        )
                    qwriter.write_table(q)
                except OSError as exc:
                    raise OutputError(f"{qtmp}: cannot write: {exc.strerror or exc}") from None
                result.records_quarantined += q.num_rows
                for item in pc.value_counts(q.column("reason")).to_pylist():
                    reasons[item["values"]] += item["counts"]
                if first_problem is None:
                    first_problem = (q["position"][0].as_py(), q["reason"][0].as_py())
            if len(ranges):
                no_local += _count_no_local(batch.table, ranges)
            if setup is not None and batch.table.num_rows:
                for i, x in enumerate(setup(batch.table, counts)):
                    setup_acc[i] += x
        if (
            result.records_read
            and not result.records_written
            and set(reasons) <= STRUCTURE_REASONS
            and first_problem is not None
        ):
            raise InputError(
                f"{task.path}: not {task.format} data: none of its {result.records_read} "
                f"records could be read ({first_problem[1]} at {first_problem[0]})"
            )
        st = os.stat(task.path)
        if (st.st_size, st.st_mtime_ns) != (task.size, task.mtime_ns):
            raise InputError(f"{task.path}: the file changed while it was being imported")
        files = writer.close()
        writer = None
        if qwriter is not None:
            final = qdir / f"{name}.parquet"
            try:
                qwriter.close()
                qwriter = None
                os.replace(qtmp, final)
            except OSError as exc:
                raise OutputError(f"{qtmp}: cannot write: {exc.strerror or exc}") from None
            result.quarantine_file = final.relative_to(root).as_posix()
            files = [*files, final]
        result.outputs = sorted(p.relative_to(root).as_posix() for p in files if p.parent != qdir)
        result.output_files = {
            p.relative_to(root).as_posix(): describe_output(p) for p in sorted(files)
        }
        result.reasons = dict(sorted(reasons.items()))
        result.no_local_prefix = no_local if len(ranges) else None
        if setup is not None:
            result.setup = tuple(setup_acc)  # type: ignore[assignment]
    except OutputError as exc:  # the archive cannot be written: no file will fare better
        result.error, result.fatal = str(exc), True
    except (FlowatlasError, OSError) as exc:
        if isinstance(exc, OSError):
            if exc.errno in _OUTPUT_ERRNOS:  # e.g. a full disk under pyarrow's writer
                result.error = f"{root}: cannot write: {exc.strerror or exc}"
                result.fatal = True
            else:  # e.g. the file vanished or a disk failed mid-read
                exc = InputError(f"{task.path}: {exc.strerror or exc}")
        if result.error is None:
            result.error = str(exc) if str(task.path) in str(exc) else f"{task.path}: {exc}"
    finally:
        if result.error is not None:
            result.records_read = result.records_written = result.records_quarantined = 0
        if writer is not None:
            writer.abort()
        if qwriter is not None:
            with contextlib.suppress(Exception):
                qwriter.close()
        with contextlib.suppress(OSError):
            if result.error is not None:
                remove_outputs(root, name)
            qtmp.unlink(missing_ok=True)
    result.seconds = time.perf_counter() - t0
    return result


#: errors of writing, not reading: the archive's disk is full, read-only or failing
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def _counts_of(importer: Any, options: Any) -> str:
    """The counts mode an importer writes with these options (``raw`` or ``scaled``)."""
    return importer.counts_for(options)


# --------------------------------------------------------------------------- planning


def _expand(
    sources: Sequence[str | os.PathLike[str]], fmt: str, glob: str | None, out: Path
) -> tuple[list[tuple[Path, str]], list[str]]:
    """(file, format) pairs to import, and files in folders that are no flow format."""
    from flowatlas.io.importers.base import detect_format, get_importer

    chosen = None if fmt == AUTO else get_importer(fmt)
    files: list[tuple[Path, str]] = []
    unrecognised: list[str] = []
    seen: set[Path] = set()
    for src in sources:
        p = Path(src).expanduser()
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        if p.is_file():
            rp = p.resolve()
            if rp not in seen:
                seen.add(rp)
                files.append((rp, fmt if chosen else detect_format(rp)))
            continue
        for child in _walk(p, glob, skip=out.resolve()):
            rp = child.resolve()
            if rp in seen:
                continue
            seen.add(rp)
            if glob is not None:  # the user chose these names: every one must import
                files.append((rp, fmt if chosen else detect_format(rp)))
                continue
            found = _sniff(rp, chosen)
            if found is None:
                unrecognised.append(str(rp))
            else:
                files.append((rp, found))
    return files, unrecognised


def _walk(root: Path, glob: str | None, skip: Path) -> list[Path]:
    """Files under ``root`` in sorted order, not hidden, not inside the archive ``skip``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith((".", "_")) and (Path(dirpath) / d).resolve() != skip
        )
        for fname in sorted(filenames):
            if fname.startswith(".") or fname.startswith("nfcapd.current"):
                continue
            path = Path(dirpath) / fname
            if glob is not None and not path.match(glob):
                continue
            out.append(path)
    return out


def _sniff(path: Path, chosen: Any) -> str | None:
    from flowatlas.io.importers.base import detect_format

    if chosen is not None:
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None
        return chosen.format if chosen.sniff(path, head) else None
    try:
        return detect_format(path)
    except InputError:
        return None


def _local_ranges(config: Any) -> tuple[tuple[int, int, int, int], ...]:
    """The configured local prefixes as (start_hi, start_lo, end_hi, end_lo) ranges."""
    from flowatlas.addresses import parse_prefixes, prefix_bounds

    prefixes = [p for region in config.regions for p in region.prefixes]
    if not prefixes:
        return ()
    hi, lo, length, _ = parse_prefixes(prefixes, source=f"{config.origin}: regions.prefixes")
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, length)
    return tuple(
        (int(a), int(b), int(c), int(d)) for a, b, c, d in zip(s_hi, s_lo, e_hi, e_lo, strict=True)
    )


def _hash_one(path: Path) -> tuple[str, int, int, str | None]:
    """(content sha256, size, mtime_ns, sha256 of the bytes if different) of a file.

    The time is taken before the content is read.
    """
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    sha, size, file_sha = content_sha256(path)
    return sha, size, mtime_ns, file_sha


def _hash_all(paths: list[Path], threads: int) -> list[tuple[str, int, int, str | None]]:
    if len(paths) <= 1 or threads <= 1:
        return [_hash_one(p) for p in paths]
    with cf.ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_hash_one, paths))


def check_archive_dir(root: Path) -> None:
    """Refuse an ``--out`` that is not a flow archive: a cube, or a folder of other things.

    An archive is a new or empty folder, or one holding the import manifest's folder
    (``_import``), day partitions (``day=YYYY-MM-DD``) or an archive's flowatlas.toml.
    Importing into anything else would mix flow files into it.
    """
    if not root.exists():
        return
    if not root.is_dir():
        raise OutputError(f"{root}: exists and is not a directory")
    if (root / "cube.json").exists():
        raise OutputError(f"{root}: is a flowatlas cube, not an archive; import into another --out")
    try:
        names = [n for n in os.listdir(root) if not n.startswith(".")]
    except OSError as exc:
        raise OutputError(f"{root}: cannot list: {exc.strerror or exc}") from None
    if not names:
        return
    from flowatlas.io.archive import DAY_DIR

    if "_import" in names or "flowatlas.toml" in names or any(DAY_DIR.match(n) for n in names):
        return
    shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
    raise OutputError(
        f"{root}: not a flow archive (holds {shown}); import into a new or empty folder"
    )


# --------------------------------------------------------------------------- the API


def import_sources(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    fmt: str = AUTO,
    config: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    csv_map: str | None = None,
    counts: str | None = None,
    time_unit: str | None = None,
    glob: str | None = None,
    reimport: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    nfdump: str | None = None,
    exporter: str | None = None,
    templates: Sequence[str | os.PathLike[str]] = (),
    progress: bool | None = None,
    now_us: int | None = None,
    reader: str | None = None,
    setup: bool = False,
    compression: str = "auto",
) -> ImportSummary:
    """Import flow files into the archive at ``out``; see the module docstring.

    ``fmt`` is a format name or ``auto`` (by content). ``jobs`` is the number of processes
    importing files at once: this one and ``jobs - 1`` workers (default
    :func:`default_jobs`: one per CPU, at most one per file and one per 32 MiB of input;
    1 imports in this process alone).
    ``exporter`` and ``templates`` are for raw NetFlow/IPFIX payload files (netflow-payload):
    the address that sent them, and payload files to read first for their templates only.
    ``progress`` shows a progress bar on stderr (None: on a terminal, else a plain line every
    10 s; False: nothing). ``reader`` picks how nfcapd files are read: ``native`` (default)
    or ``nfdump`` (its text output). ``setup``: count each file's set-up accounting as its
    batches are written (:attr:`FileResult.setup`, under ``config`` as the build resolves
    it), for ``import``'s last line, instead of reading the files back afterwards.
    ``compression``: the column layout of the files written
    (:data:`~flowatlas.io.archive.COMPRESSIONS`; files already there keep theirs). Returns
    the summary; files that failed are listed in it (and raise nothing here).
    """
    from flowatlas.config import load_config
    from flowatlas.io.importers.base import get_importer

    t0 = time.perf_counter()
    if not sources:
        raise InputError("no source files given")
    if fmt != AUTO:
        get_importer(fmt)  # unknown format: error listing the known ones
    if counts not in (None, "raw", "scaled"):
        raise ConfigError(f"--counts {counts!r}: use raw or scaled")
    if reader not in (None, "native", "nfdump"):
        raise ConfigError(f"--reader {reader!r}: use native or nfdump")
    if batch_rows < 1:
        raise ConfigError("--batch-rows must be at least 1")
    from flowatlas.io.archive import check_compression

    check_compression(compression)
    cfg = load_config(config) if config is not None else None
    ranges = _local_ranges(cfg) if cfg is not None else ()
    if csv_map is not None:
        from flowatlas.io.importers.csv import parse_csv_map

        parse_csv_map(csv_map)  # a bad mapping fails before any work
    root = Path(out)
    check_archive_dir(root)
    max_rate = cfg.importing.max_line_rate_gbps if cfg is not None else DEFAULT_MAX_LINE_RATE_GBPS
    summary = ImportSummary(str(root), local_prefixes=len(ranges))
    files, summary.skipped_unrecognised = _expand(sources, fmt, glob, root)
    now = now_us if now_us is not None else time.time_ns() // 1000
    extra: dict[str, Any] = {"now_us": now}
    for key, value in (
        ("csv_map", csv_map),
        ("counts", counts),
        ("time_unit", time_unit),
        ("nfdump", nfdump),
        ("exporter", exporter),
        ("reader", reader),
    ):
        if value is not None:
            extra[key] = value
    if exporter is not None:
        from flowatlas.addresses import AddressError, parse_addresses

        try:
            parse_addresses([exporter], source="--exporter")
        except AddressError as exc:
            raise ConfigError(str(exc)) from None
    if templates:
        missing = [str(t) for t in templates if not Path(t).is_file()]
        if missing:
            raise InputError(f"{missing[0]}: --templates file not found")
        extra["templates"] = tuple(str(Path(t).resolve()) for t in templates)
    extra_t = tuple(sorted(extra.items()))
    _check_formats(files, counts, extra_t, batch_rows)

    root.mkdir(parents=True, exist_ok=True)
    with archive_lock(root):
        manifest = Manifest.open(root)
        summary.recovered = manifest.recover()
        if summary.recovered:
            manifest.save()
        hashes = _hash_all([p for p, _ in files], threads=min(8, os.cpu_count() or 1))
        by_bytes = manifest.by_file_hash()  # compressed files imported before, by their bytes
        tasks: list[ImportTask] = []
        planned: set[str] = set()
        for (path, f), (sha, size, mtime_ns, file_sha) in zip(files, hashes, strict=True):
            known = next(
                (
                    k
                    for k in (sha, file_sha, by_bytes.get(sha), by_bytes.get(file_sha or ""))
                    if k and manifest.has(k)
                ),
                None,
            )
            if known is not None:
                if reimport and sha not in planned:
                    manifest.forget(known)
                else:
                    summary.skipped_known.append(str(path))
                    continue
            if sha in planned:
                summary.skipped_duplicate.append(str(path))
                continue
            planned.add(sha)
            tasks.append(
                ImportTask(
                    str(path),
                    size,
                    sha,
                    f,
                    str(root),
                    extra_t,
                    batch_rows,
                    ranges,
                    mtime_ns,
                    max_rate,
                    file_sha,
                    setup,
                    str(config) if config is not None else None,
                    compression,
                )
            )
        for task in tasks:
            manifest.begin(task.sha256, output_name(task.format, task.sha256), task.path)
        if tasks or reimport:
            manifest.save()
        digest = cfg.digest() if cfg is not None else None
        fatal: FileResult | None = None
        with contextlib.closing(_run(tasks, jobs, progress)) as results, _forget_setup():
            for result in results:
                if result.fatal:
                    fatal = result
                    break
                if result.error is None:
                    manifest.finish(_entry(result, digest))
                    summary.imported.append(result)
                else:
                    manifest.abandon(result.sha256)
                    summary.failed.append(result)
                manifest.save()
        if fatal is not None:
            # every worker has stopped (the pool is shut down): drop what the files not
            # finished left behind, then say why the import stopped
            for sha in list(manifest.pending):
                manifest.abandon(sha)
            with contextlib.suppress(OutputError):
                manifest.save()  # the disk may still be full: the next import recovers
            raise OutputError(f"import stopped: {fatal.error}")
    summary.imported.sort(key=lambda r: r.path)
    summary.failed.sort(key=lambda r: r.path)
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_formats(
    files: list[tuple[Path, str]], counts: str | None, extra: tuple, batch_rows: int
) -> None:
    """Fail early: a format's tool missing, or ``--counts`` for a format that fixes it."""
    from flowatlas.io.importers.base import ImportOptions, get_importer

    options = ImportOptions(batch_rows=batch_rows, extra=extra)
    for fmt in sorted({f for _, f in files}):
        get_importer(fmt).preflight(options)
    if counts is None:
        return
    for fmt in sorted({f for _, f in files}):
        got = _counts_of(get_importer(fmt)(), options)
        if got != counts:
            raise ConfigError(f"--counts {counts}: {fmt} files are always {got}")


def _entry(r: FileResult, digest: str | None) -> FileEntry:
    return FileEntry(
        output_files=dict(r.output_files),
        file_sha256=r.file_sha256,
        path=r.path,
        size=r.size,
        sha256=r.sha256,
        format=r.format,
        counts=r.counts,
        records_read=r.records_read,
        records_written=r.records_written,
        records_quarantined=r.records_quarantined,
        quarantine_reasons=dict(r.reasons),
        outputs=list(r.outputs),
        quarantine_file=r.quarantine_file,
        no_local_prefix=r.no_local_prefix,
        config_digest=digest if r.no_local_prefix is not None else None,
    )


def die_with_parent(parent_pid: int) -> None:
    """Worker initialiser: this process is killed when the import that started it dies.

    Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``): a worker never
    outlives its parent to rename files into the archive after an interrupted import (the
    next import removes what the interrupted one left). Elsewhere, a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: nothing to set
        return
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _worker_start(parent_pid: int, arrow_threads: int) -> None:
    """Worker initialiser: die with the import, and use no more threads than its share."""
    die_with_parent(parent_pid)
    _limit_arrow_threads(arrow_threads)


def _limit_arrow_threads(n: int) -> tuple[int, int]:
    """Set Arrow's CPU and I/O thread pools to ``n`` threads; return the previous sizes.

    With several import processes on the machine, each one's Parquet encoding and
    decompression threads would otherwise compete with the other processes for the cores.
    """
    before = (pa.cpu_count(), pa.io_thread_count())
    pa.set_cpu_count(n)
    pa.set_io_thread_count(n)
    return before


def default_jobs(tasks: Sequence[ImportTask], cpus: int | None = None) -> int:
    """How many processes import ``tasks`` when ``-j`` is not given.

    One per core, at most one per file, and one more process only for each
    ``SMALL_IMPORT_BYTES`` of input: a worker's start-up (Python, imports, numba's kernel
    loading: about 1 CPU-s) costs more than it saves on less.
    """
    cpus = cpus or os.cpu_count() or 1
    total = sum(t.size for t in tasks)
    return max(1, min(cpus, len(tasks), total // SMALL_IMPORT_BYTES))


def _run(
    tasks: list[ImportTask], jobs: int | None, progress: bool | None
) -> Generator[FileResult, None, None]:
    """Run the tasks; yield results as they finish.

    With one job, in this process. With ``jobs`` N > 1, this process imports files too, next
    to a pool of N - 1 spawned worker processes: it would otherwise only wait for them, and
    its start-up is already paid. Files are handed out largest first (to whichever process is
    free), so the processes finish close together; each file's output depends only on the
    file, never on who imported it.
    """
    from flowatlas.progress import Progress

    if not tasks:
        return
    workers = max(1, min(jobs or default_jobs(tasks), len(tasks)))
    bar = Progress(
        "import", "files", len(tasks), quiet=progress is False, tty=True if progress else None
    )
    records = 0

    def done(result: FileResult) -> FileResult:
        nonlocal records
        records += result.records_read
        bar.set(bar.done + 1, postfix=f"{records:,} records")
        return result

    try:
        if workers == 1:
            for task in tasks:
                yield done(import_one(task))
            return
        yield from (done(r) for r in _run_shared(tasks, workers))
    finally:
        bar.close()


def _run_shared(tasks: list[ImportTask], workers: int) -> Generator[FileResult, None, None]:
    """Import ``tasks`` in this process and ``workers - 1`` worker processes."""
    todo = collections.deque(sorted(tasks, key=lambda t: (-t.size, t.path)))
    lock = threading.Lock()
    stop = threading.Event()
    finished: queue.Queue[FileResult | BaseException] = queue.Queue()

    def take() -> ImportTask | None:
        with lock:
            return todo.popleft() if todo and not stop.is_set() else None

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = cf.ProcessPoolExecutor(
        max_workers=workers - 1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
        initargs=(os.getpid(), threads),
    )

    idle: list[int] = []  # feeders with nothing left to hand out
    release = threading.Event()

    def feed() -> None:  # one thread per worker process: hand it files until none are left
        try:
            while (task := take()) is not None:
                finished.put(pool.submit(import_one, task).result())
        except BaseException as exc:  # e.g. BrokenProcessPool: the parent says so
            finished.put(exc)
        idle.append(1)
        # a worker gets its parent-death signal when the *thread* that started it ends (Linux
        # ties PR_SET_PDEATHSIG to threads), and the pool starts workers from the thread that
        # submits: so no feeder ends before the pool has shut down
        release.wait()

    feeders = [threading.Thread(target=feed, daemon=True) for _ in range(workers - 1)]
    for t in feeders:
        t.start()
    before = _limit_arrow_threads(threads)

    def ready(item: FileResult | BaseException) -> FileResult:
        if isinstance(item, cf.process.BrokenProcessPool):
            raise OutputError(
                "an import worker process died (killed, or out of memory); "
                "run the import again: it resumes"
            )
        if isinstance(item, BaseException):
            raise item
        return item

    try:
        while True:
            while not finished.empty():
                yield ready(finished.get())
            task = take()
            if task is not None:
                yield import_one(task)
                continue
            if len(idle) == len(feeders) and finished.empty():
                break
            with contextlib.suppress(queue.Empty):
                yield ready(finished.get(timeout=0.1))
    finally:
        stop.set()
        pa.set_cpu_count(before[0])
        pa.set_io_thread_count(before[1])
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            release.set()
            for t in feeders:
                t.join()


# --------------------------------------------------------------------------- the command


@click.command(
    "import",
    context_settings={"help_option_names": ["-h", "--help"]},
    # \b: click keeps these lines as written (it would break format names at their hyphens)
    epilog="\b\n"
    + textwrap.fill(
        "Formats: nfcapd (native reader; --reader nfdump for nfdump's text output), "
        + ", ".join(f for f in FORMAT_CHOICES if f not in (AUTO, "nfcapd"))
        + ". See docs/importing.md.",
        width=78,
        break_on_hyphens=False,
    ),
)
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--out",
    "-o",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Archive directory to write (created if missing; re-running adds only new files).",
)
@click.option(
    "--format",
    "-f",
    "fmt",
    default=AUTO,
    show_default=True,
    help="Source format: " + "|".join(FORMAT_CHOICES) + ".",
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=str),
    help="flowatlas TOML config: validated; records touching no local prefix are counted.",
)
@click.option(
    "--csv-map",
    help="CSV column mapping, 'time_start=ts,src_addr=sa,...' or a TOML file.",
)
@click.option(
    "--counts",
    type=click.Choice(["raw", "scaled"]),
    help="pmacct/CSV: counts are raw (x sampling_rate later) or already scaled.",
)
@click.option(
    "--time-unit",
    type=click.Choice(["auto", "s", "ms", "us", "ns"]),
    help="Unit of numeric epoch times in CSV (default: guessed from their size).",
)
@click.option("--glob", help="In folders, import only files whose name matches (e.g. 'nfcapd.2*').")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Processes importing files at once (default: one per CPU, per file and per 32 MiB).",
)
@click.option("--reimport", is_flag=True, help="Import files again even if already imported.")
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_ROWS,
    show_default=True,
    help="Rows per batch (bounds memory per worker).",
)
@click.option("--nfdump", help="nfdump executable to use (default: nfdump on PATH).")
@click.option(
    "--reader",
    type=click.Choice(["native", "nfdump"]),
    help="nfcapd: read natively (default) or through nfdump's text output.",
)
@click.option(
    "--exporter",
    help="netflow-payload: address of the router that sent the payloads (default 0.0.0.0).",
)
@click.option(
    "--templates",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="netflow-payload: payload file(s) to read first for their templates (repeatable).",
)
@compression_option("the files written")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def import_(
    sources: tuple[str, ...],
    out: str,
    fmt: str,
    config: str | None,
    csv_map: str | None,
    counts: str | None,
    time_unit: str | None,
    glob: str | None,
    jobs: int | None,
    reimport: bool,
    batch_rows: int,
    nfdump: str | None,
    reader: str | None,
    exporter: str | None,
    templates: tuple[str, ...],
    compression: str,
    quiet: bool,
) -> None:
    """Import flow files (or folders of them) into a day-partitioned flow archive.

    Files already imported (same content) are skipped; an interrupted import resumes. Rows
    that cannot be read are quarantined with a reason, never dropped.
    """
    summary = import_sources(
        sources,
        out,
        fmt=fmt,
        config=config,
        jobs=jobs,
        csv_map=csv_map,
        counts=counts,
        time_unit=time_unit,
        glob=glob,
        reimport=reimport,
        batch_rows=batch_rows,
        nfdump=nfdump,
        exporter=exporter,
        templates=templates,
        progress=False if quiet else None,
        reader=reader,
        setup=True,
        compression=compression,
    )
    if not quiet:
        click.echo(summary.render())
    # the set-up accounting is for an import that went through: after a failure, the one
    # line that says what failed is the whole message
    for line in [] if summary.failed else _setup_lines(summary, config):
        if not quiet or line.startswith("flowatlas: warning"):
            click.echo(line, err=line.startswith("flowatlas: warning"))
    if summary.failed:
        if len(summary.failed) == 1 and not summary.imported and not summary.skipped_known:
            raise InputError(summary.failed[0].error or "import failed")
        raise InputError(
            f"{len(summary.failed)} of {len(summary.failed) + len(summary.imported)} files "
            f"failed; first: {summary.failed[0].error}"
        )


def _setup_lines(summary: ImportSummary, config: str | None) -> list[str]:
    """The set-up accounting of the records this import wrote, and warnings if it looks wrong.

    Under ``config`` (else the archive's flowatlas.toml, else the defaults), as the build
    will see them: the share of Unknown region, Unknown type, transit and quarantined. Each
    file's counts come from its batches as they were written (``setup``); files without
    them are read back.
    """
    from flowatlas.engine.build import resolve_config
    from flowatlas.inspect import SetupShares, shares_of_files

    root = Path(summary.archive)
    if not summary.imported:
        return []
    errors = [r.setup_error for r in summary.imported if r.setup_error]
    if errors:
        return [f"  set-up    not counted: {errors[0]}"]
    try:
        cfg = resolve_config(root, config)
        counted = [r.setup for r in summary.imported if r.setup is not None]
        rest = [root / p for r in summary.imported if r.setup is None for p in r.outputs]
        got = shares_of_files(rest, cfg) if rest else SetupShares(0, 0, 0, 0, 0, cfg.origin)
    except FlowatlasError as exc:  # the import itself succeeded: say why, do not fail it
        return [f"  set-up    not counted: {exc}"]
    total = [sum(c[i] for c in counted) for i in range(5)]
    imp_q = summary.records_quarantined
    shares = SetupShares(
        got.records + total[0] + imp_q,
        got.quarantined + total[1] + imp_q,
        got.unknown_region + total[2],
        got.unknown_type + total[3],
        got.transit + total[4],
        got.config_origin,
    )
    lines = [f"  set-up    {shares.line()}"]
    return lines + [f"flowatlas: warning: {w}" for w in shares.warnings(str(root))]


__all__ = ["FileResult", "ImportSummary", "ImportTask", "import_", "import_one", "import_sources"]
