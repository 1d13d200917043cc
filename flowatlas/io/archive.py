"""Reading and writing flow archives: day-partitioned Parquet in flow schema v1.

Layout (Hive style, so DuckDB, Polars and Spark read it as they are)::

    ARCHIVE/
      day=2025-07-01/part-00000.parquet
      day=2025-07-02/part-00000.parquet
      flowatlas.toml      (optional: the configuration the archive was made for)

Files are written under a hidden temporary name and renamed when complete, so a reader never
sees half a file; names starting with ``.`` or ``_`` are ignored, as Hive does. Every data
page carries a CRC-32 (Parquet page checksums) and every reader here verifies them: a flipped
bit in an archive or a cube is an error naming the file, the row group and the column, never
a wrong number.

Records already in memory (a ``pyarrow.Table`` or RecordBatches in flow schema v1) are read
through :class:`MemoryRecords`: it cuts them into :class:`MemoryFragment` slices that the
build's map tasks read exactly as they read an archive's row groups.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flowatlas.errors import ConfigError, InputError, OutputError
from flowatlas.kernels import parallel_allowed
from flowatlas.schema import (
    COUNTS_RAW,
    COUNTS_SCALED,
    FLOW_SCHEMA_V1,
    META_SOURCE,
    check_schema,
    schema_with_metadata,
)

DAY_DIR = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")
US_PER_DAY = 86_400 * 1_000_000
#: How an archive's files may lay their columns out: "auto" (per column, the codec and
#: encoding of :data:`AUTO_LAYOUT`, chosen by measurement), or one codec for every column
#: ("zstd", "lz4", "none"; dictionary pages for the few-valued columns). Builds read any of
#: them, and files of several layouts in one archive: a file says its own.
COMPRESSIONS = ("auto", "zstd", "lz4", "none")
DEFAULT_COMPRESSION = "auto"
#: The auto layout: column -> (codec, encoding), chosen by bench/bench_codec.py (bench/
#: RESULTS.md, "Archive column layout"). Nearly all of a build's Parquet read was zstd's
#: decompression (an uncompressed column decodes in 1-5 ns a record), so: lz4 everywhere;
#: DELTA_BINARY_PACKED for times, ports and counters (smaller than zstd of the plain values
#: for times, decoded at about 3 ns a record instead of 10-13); PLAIN for the 16-byte
#: addresses and the exporter (Arrow decodes a fixed_size_binary dictionary at 12 ns a
#: record even uncompressed); dictionary pages for the few-valued columns (interfaces,
#: protocol, sampling, AS numbers; a column whose dictionary outgrows its page falls back to
#: PLAIN by itself). On 2^20 records (one thread, pyarrow 26) the build's nine columns read in
#: 39-44 ns a record against zstd's 89-98 on the world workload (44 bytes a record against
#: 37), 30 against 66 on the heavy one (26 against 19), 26 against 44 on real flows (11
#: against 8); whole builds of 5 M records took 7-9% less CPU, of the 103 M-record slice 18%.
#: BYTE_STREAM_SPLIT (as small or smaller for counters) is left out: readers older than
#: Parquet format 2.11 (2024) cannot decode it on integer columns.
AUTO_LAYOUT: dict[str, tuple[str, str]] = {
    "time_start": ("lz4", "DELTA_BINARY_PACKED"),
    "time_end": ("lz4", "DELTA_BINARY_PACKED"),
    "exporter": ("lz4", "PLAIN"),
    "in_if": ("lz4", "DICTIONARY"),
    "out_if": ("lz4", "DICTIONARY"),
    "src_addr": ("lz4", "PLAIN"),
    "dst_addr": ("lz4", "PLAIN"),
    "src_port": ("lz4", "DELTA_BINARY_PACKED"),
    "dst_port": ("lz4", "DELTA_BINARY_PACKED"),
    "proto": ("lz4", "DICTIONARY"),
    "bytes": ("lz4", "DELTA_BINARY_PACKED"),
    "packets": ("lz4", "DELTA_BINARY_PACKED"),
    "sampling_rate": ("lz4", "DICTIONARY"),
    "src_as": ("lz4", "DICTIONARY"),
    "dst_as": ("lz4", "DICTIONARY"),
}
#: the few-valued columns written with dictionary pages in the uniform layouts
_UNIFORM_DICTIONARY = ["exporter", "proto", "sampling_rate", "in_if", "out_if"]


def check_compression(name: str) -> str:
    """``name`` if it is one of :data:`COMPRESSIONS`, else a :class:`ConfigError`."""
    if name not in COMPRESSIONS:
        raise ConfigError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {name!r}")
    return name


# --------------------------------------------------------------------------- writing


def writer_options(compression: str, page_checksums: bool = True) -> dict[str, Any]:
    """The ``pyarrow.parquet.ParquetWriter`` settings of an archive file in the layout
    ``compression`` (one of :data:`COMPRESSIONS`).

    One place for them, so every writer of archive files (:class:`ArchiveWriter`, and anything
    that rewrites an archive's files) lays its columns out alike. For "auto" the codec and
    encoding are per column (:data:`AUTO_LAYOUT`); columns beside flow schema v1's get the
    codec (one string where every column has the same, so extra columns are compressed too)
    and PLAIN.
    """
    opts: dict[str, Any] = {"write_statistics": True, "write_page_checksum": page_checksums}
    if check_compression(compression) != "auto":
        return {"compression": compression, "use_dictionary": list(_UNIFORM_DICTIONARY), **opts}
    codecs = {codec for codec, _ in AUTO_LAYOUT.values()}
    return {
        "compression": (
            codecs.pop() if len(codecs) == 1 else {n: c for n, (c, _) in AUTO_LAYOUT.items()}
        ),
        # pyarrow wants the columns given an encoding left out of use_dictionary
        "use_dictionary": [n for n, (_, e) in AUTO_LAYOUT.items() if e == "DICTIONARY"],
        "column_encoding": {n: e for n, (_, e) in AUTO_LAYOUT.items() if e != "DICTIONARY"},
        **opts,
    }


def _column_layout(column: Any) -> tuple[str, str]:
    """(codec, encoding) of one column chunk's metadata, in :data:`AUTO_LAYOUT`'s terms."""
    codec = column.compression.lower()
    encodings = set(column.encodings)
    if encodings & {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}:
        encoding = "DICTIONARY"
    else:
        encoding = next(
            (e for e in ("DELTA_BINARY_PACKED", "BYTE_STREAM_SPLIT", "DELTA_BYTE_ARRAY",
                         "DELTA_LENGTH_BYTE_ARRAY") if e in encodings),
            "PLAIN",
        )  # fmt: skip
    return ("none" if codec == "uncompressed" else codec, encoding)


def file_layout(meta: pq.FileMetaData) -> str:
    """What a file's footer says of its layout: "auto" where row group 0 lays out every v1
    column as :data:`AUTO_LAYOUT` does, else its codecs in lower case ("zstd", "lz4",
    "uncompressed"; joined by "+" where columns differ); "" without row groups."""
    if not meta.num_row_groups:
        return ""
    rg = meta.row_group(0)
    columns = {rg.column(c).path_in_schema: rg.column(c) for c in range(meta.num_columns)}
    if all(n in columns and _column_layout(columns[n]) == lay for n, lay in AUTO_LAYOUT.items()):
        return "auto"
    return "+".join(sorted({c.compression.lower() for c in columns.values()}))


def _ensure_writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create directory: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: directory is not writable")


class ArchiveWriter:
    """Stream flow records into a day-partitioned archive.

    ``write`` takes tables in flow schema v1 (any order of days); rows are split by the UTC day
    of ``time_start`` and appended to one Parquet file per day, a row group at a time, so memory
    stays bounded by what the caller passes in. ``close`` renames the finished files into place.
    Every data page gets a CRC-32 unless ``page_checksums`` is False (for measuring their cost).
    ``compression`` is one of :data:`COMPRESSIONS` (see :func:`writer_options`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        counts: str = COUNTS_RAW,
        source: str = "flowatlas",
        name: str = "part-00000",
        compression: str = DEFAULT_COMPRESSION,
        row_group_size: int = 1 << 20,
        page_checksums: bool = True,
    ) -> None:
        self.root = Path(root)
        self.page_checksums = page_checksums
        _ensure_writable_dir(self.root)
        self.schema = schema_with_metadata(counts, source)
        self.name = name
        self.compression = check_compression(compression)
        self.row_group_size = row_group_size
        self._writers: dict[str, tuple[pq.ParquetWriter, Path, Path]] = {}
        self.rows_written = 0
        self.files: list[Path] = []

    def _writer(self, day: str, schema: pa.Schema) -> pq.ParquetWriter:
        if day in self._writers and not self._writers[day][0].schema.equals(schema):
            raise InputError(
                f"{self.root}: rows for day {day} arrive with other extra columns than before"
            )
        if day not in self._writers:
            d = self.root / f"day={day}"
            _ensure_writable_dir(d)
            final = d / f"{self.name}.parquet"
            tmp = d / f".{self.name}.parquet.tmp"
            try:
                w = pq.ParquetWriter(
                    tmp, schema, **writer_options(self.compression, self.page_checksums)
                )
            except OSError as exc:
                raise OutputError(f"{tmp}: cannot write: {exc}") from None
            self._writers[day] = (w, tmp, final)
        return self._writers[day][0]

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (flow schema v1) to the archive."""
        table = conform(table, "ArchiveWriter.write")
        if table.num_rows == 0:
            return
        us = table.column("time_start").cast(pa.int64()).to_numpy()
        days = us // US_PER_DAY
        lo, hi = int(days.min()), int(days.max())
        if lo == hi:
            self._write_day(lo, table)
            return
        order = np.argsort(days, kind="stable")
        sorted_days = days[order]
        bounds = np.flatnonzero(np.diff(sorted_days)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(order)]])
        for s, e in zip(starts, ends, strict=True):
            self._write_day(int(sorted_days[s]), table.take(pa.array(order[s:e])))

    def _write_day(self, day_number: int, table: pa.Table) -> None:
        day = str(np.datetime64(day_number, "D"))
        table = table.replace_schema_metadata(self.schema.metadata)
        writer = self._writer(day, table.schema)
        try:
            writer.write_table(table, row_group_size=self.row_group_size)
        except OSError as exc:
            raise OutputError(
                f"{self.root / f'day={day}'}: write failed: {exc.strerror or exc}"
            ) from None
        self.rows_written += table.num_rows

    def close(self) -> list[Path]:
        """Finish every file and move it into place; return the paths written.

        A failure (a full disk) raises :class:`OutputError` naming the file, after removing
        every unfinished file: nothing half-written is left under a final name.
        """
        try:
            for _day, (w, tmp, final) in sorted(self._writers.items()):
                try:
                    w.close()
                    fsync_file(tmp)
                    os.replace(tmp, final)
                except OSError as exc:
                    raise OutputError(f"{tmp}: cannot write: {exc.strerror or exc}") from None
                self.files.append(final)
                del self._writers[_day]
        except OutputError:
            self.abort()
            raise
        return self.files

    def abort(self) -> None:
        """Drop unfinished files (after an error); never raises (the disk may be full)."""
        for w, tmp, _ in self._writers.values():
            with contextlib.suppress(Exception):
                w.close()
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        self._writers.clear()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data to the disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def conform(table: pa.Table, where: str) -> pa.Table:
    """Return ``table`` with the v1 columns first, in order, cast where lossless; extras kept."""
    missing = [f.name for f in FLOW_SCHEMA_V1 if f.name not in table.column_names]
    if missing:
        raise InputError(f"{where}: missing flow schema v1 columns: {', '.join(missing)}")
    cols = []
    for f in FLOW_SCHEMA_V1:
        col = table.column(f.name)
        if not col.type.equals(f.type):
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(f"{where}: column {f.name!r}: {exc}") from None
        if col.null_count:
            raise InputError(f"{where}: column {f.name!r} has {col.null_count} nulls")
        cols.append(col)
    extra = [n for n in table.column_names if n not in FLOW_SCHEMA_V1.names]
    fields = list(FLOW_SCHEMA_V1) + [table.schema.field(n) for n in extra]
    return pa.Table.from_arrays(cols + [table.column(n) for n in extra], schema=pa.schema(fields))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ArchiveFile:
    """One Parquet file of an archive, described from its footer."""

    path: Path
    relpath: str
    day: str | None
    size: int
    num_rows: int
    row_group_rows: tuple[int, ...]
    counts: str
    footer_sha256: str
    #: the file's ``flowatlas.source`` metadata ("<format> sha256:<hash>" for imports)
    source: str = ""
    #: its footer, parsed (``pyarrow.parquet.FileMetaData``): the fragments hand it to
    #: :func:`read_fragment`, which then opens the file without parsing the footer again
    metadata: Any = field(default=None, repr=False, compare=False)

    @property
    def compression(self) -> str:
        """Its layout (:func:`file_layout`): "auto", or its Parquet codec as the footer names
        it in lower case ("zstd", "lz4", "uncompressed"; joined by "+" where columns differ;
        "" without row groups). Worked out when asked (``inspect``), not at an archive's
        open: 20-40 us a file, 4-8 ms of a 184-file archive's."""
        return file_layout(self.metadata) if self.metadata is not None else ""

    def fragment(self, row_groups: list[int], num_rows: int) -> Fragment:
        """The fragment of these row groups (``num_rows`` rows) of this file."""
        return Fragment(
            str(self.path), tuple(row_groups), num_rows, self.counts, self.size,
            self.footer_sha256, self.metadata,
        )  # fmt: skip


@dataclass(frozen=True)
class Fragment:
    """A unit of work: some row groups of one file. Plain data, cheap to ship to workers."""

    path: str
    row_groups: tuple[int, ...]
    num_rows: int
    counts: str
    #: the file as it was when the archive was opened (a file changed since is an error)
    size: int = -1
    footer_sha256: str = ""
    #: the file's parsed footer as it was then, if known (:class:`ArchiveFile`'s ``metadata``)
    metadata: Any = field(default=None, repr=False, compare=False)


@dataclass
class Archive:
    """A flow archive on disk, opened and checked (schema of every file, row counts)."""

    root: Path
    files: list[ArchiveFile] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def days(self) -> list[str]:
        return sorted({f.day for f in self.files if f.day})

    def fragments(self, target_rows: int = 2_000_000) -> list[Fragment]:
        """Split the archive into fragments of about ``target_rows`` rows (whole row groups)."""
        out: list[Fragment] = []
        for f in self.files:
            groups: list[int] = []
            rows = 0
            for i, n in enumerate(f.row_group_rows):
                if groups and rows + n > target_rows:
                    out.append(f.fragment(groups, rows))
                    groups, rows = [], 0
                groups.append(i)
                rows += n
            if groups:
                out.append(f.fragment(groups, rows))
        return out

    def footers(self) -> dict[str, str]:
        """Footer hash of each file, by path (what a map task's key is made of)."""
        return {str(f.path): f.footer_sha256 for f in self.files}

    def describe(self) -> dict[str, object]:
        """The input as cube.json records it: name, rows and the manifest of its files."""
        return {"name": self.root.name, "rows": self.num_rows, "files": self.manifest()}

    def manifest(self) -> list[dict[str, object]]:
        """What the archive held: path, size, rows and footer hash of each file."""
        return [
            {
                "path": f.relpath,
                "size": f.size,
                "rows": f.num_rows,
                "counts": f.counts,
                "footer_sha256": f.footer_sha256,
            }
            for f in self.files
        ]


def footer_sha256(path: Path, size: int) -> str:
    """Hash of the Parquet footer: changes whenever the file's data or layout changes."""
    return hashlib.sha256(_read_footer(path, size)[0]).hexdigest()


def _read_footer(path: Path, size: int) -> tuple[bytes, bytes]:
    """The Parquet footer's bytes (its Thrift metadata) and the 8 after them (its length and
    ``PAR1``); an :class:`InputError` for a file without a footer."""
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 8))
        tail = fh.read(8)
        if len(tail) != 8 or tail[4:] != b"PAR1":
            raise InputError(f"{path}: not a Parquet file (no PAR1 footer)")
        flen = int.from_bytes(tail[:4], "little")
        if flen + 12 > size:
            raise InputError(f"{path}: corrupt Parquet footer (length {flen} > file size {size})")
        fh.seek(size - 8 - flen)
        return fh.read(flen), tail


def _list_parquet(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                yield Path(dirpath) / name


def describe_file(
    path: Path, root: Path, known: dict[tuple[Any, ...], tuple[Any, str]] | None = None
) -> ArchiveFile:
    """Read one file's footer and check its schema; errors name the file.

    ``known`` (a dict, empty at first, shared by the files of one archive) remembers the
    schemas already checked (:func:`_checked_counts`)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    thrift, tail = _read_footer(path, size)
    footer = hashlib.sha256(thrift).hexdigest()
    try:
        # parsed from the bytes just hashed: the metadata is the footer's whatever the file
        # holds before it, and opening the file again through pyarrow's file system layer
        # (resolving the path, a stat, a read) was a third of an archive's open (184 files)
        meta = pq.ParquetFile(pa.BufferReader(b"PAR1" + thrift + tail)).metadata
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: unreadable Parquet file: {exc}") from None
    counts = _checked_counts(meta, str(path), known)
    source = (meta.metadata or {}).get(META_SOURCE, b"").decode(errors="replace")
    rel = path.relative_to(root).as_posix() if path != root else path.name
    day = None
    for part in Path(rel).parts[:-1]:
        m = DAY_DIR.match(part)
        if m:
            day = m.group(1)
    rg = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return ArchiveFile(path, rel, day, size, meta.num_rows, rg, counts, footer, source, meta)


def _checked_counts(
    meta: pq.FileMetaData, where: str, known: dict[tuple[Any, ...], tuple[Any, str]] | None
) -> str:
    """:func:`~flowatlas.schema.check_schema` of a file's schema: how its counters count.

    The files of an archive share their schema: one whose Parquet schema and key-value
    metadata (which holds the Arrow schema) equal a file's in ``known`` has its answer
    without the check (converting and checking a schema is 30 us a file: 6 ms of an
    archive of 184 days, before the first map task). A schema that fails is never kept.
    """
    if known is None:
        return check_schema(meta.schema.to_arrow_schema(), where)
    kv = meta.metadata
    key = tuple(sorted(kv.items())) if kv else ()
    seen = known.get(key)
    if seen is not None and seen[0].equals(meta.schema):
        return seen[1]
    counts = check_schema(meta.schema.to_arrow_schema(), where)
    known[key] = (meta.schema, counts)
    return counts


#: the error of an archive directory without data files
EMPTY = "{root}: archive is empty: no Parquet files under it"


def archive_paths(root: Path) -> list[Path]:
    """The data files of the archive directory ``root`` (:func:`_list_parquet`); a listing
    that fails is an :class:`InputError` naming ``root``."""
    try:
        return list(_list_parquet(root))
    except OSError as exc:
        raise InputError(f"{root}: cannot list: {exc.strerror or exc}") from None


def open_archive(path: str | os.PathLike[str], *, days: Iterable[str] | None = None) -> Archive:
    """Open an archive directory (or a single Parquet file) and check every file's schema.

    Raises :class:`InputError` for a missing path, an archive without rows, or a file that is
    not flow schema v1. ``days`` restricts the archive to those ``YYYY-MM-DD`` partitions.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory")
    if root.is_file():
        files = [describe_file(root, root)]
    else:
        known: dict[tuple[Any, ...], tuple[Any, str]] = {}
        files = [describe_file(p, root, known) for p in archive_paths(root)]
    if days is not None:
        wanted = set(days)
        files = [f for f in files if f.day in wanted]
    archive = Archive(root, files)
    if not files:
        raise InputError(EMPTY.format(root=root))
    if archive.num_rows == 0:
        raise InputError(f"{root}: archive is empty: its Parquet files hold no rows")
    return archive


# --------------------------------------------------------------------------- in memory

MEMORY_WHERE = "in-memory records"
#: flow schema v1 without metadata or non-null flags (nulls are quarantined, as on disk)
_PLAIN_V1 = pa.schema([pa.field(f.name, f.type) for f in FLOW_SCHEMA_V1])


@dataclass(frozen=True, eq=False)
class MemoryFragment:
    """A unit of work over records in memory: a zero-copy slice of a table.

    It has a :class:`Fragment`'s fields (``path`` names the in-memory input, ``row_groups``
    holds the slice's number) so tasks are packed and keyed the same way; it is not cheap to
    ship to another process, so only in-process runners take it.
    """

    path: str
    row_groups: tuple[int, ...]
    num_rows: int
    counts: str
    table: pa.Table = field(repr=False)


@dataclass
class MemoryRecords:
    """Flow records already in memory, checked like an archive's files (see
    :func:`memory_records`). ``runs`` are tables of the v1 columns, each with one counts mode.
    """

    name: str
    runs: list[tuple[pa.Table, str]]
    #: names this input in map task keys; new for every instance, so the work of one build
    #: is never taken for another's
    token: str = field(default_factory=lambda: f"<memory {uuid.uuid4().hex}>")

    @property
    def num_rows(self) -> int:
        return sum(t.num_rows for t, _ in self.runs)

    def fragments(self, target_rows: int = 2_000_000) -> list[MemoryFragment]:
        """Zero-copy slices of at most ``target_rows`` rows (an archive's fragments' analogue)."""
        out: list[MemoryFragment] = []
        for table, counts in self.runs:
            for start in range(0, table.num_rows, max(1, target_rows)):
                piece = table.slice(start, target_rows)
                out.append(MemoryFragment(self.token, (len(out),), piece.num_rows, counts, piece))
        return out

    def footers(self) -> dict[str, str]:
        """No files, so no footers: task keys are made of the token and slice numbers."""
        return {self.token: ""}

    def describe(self) -> dict[str, object]:
        """The input as cube.json records it: no files, and ``in_memory`` says so."""
        return {"name": self.name, "rows": self.num_rows, "files": [], "in_memory": True}


def memory_records(
    records: pa.Table | pa.RecordBatch | pa.RecordBatchReader | Iterable[pa.RecordBatch | pa.Table],
    *,
    counts: str | None = None,
    name: str = "<memory>",
) -> MemoryRecords:
    """Check flow records held in memory and make them a build input.

    ``records`` is a ``pyarrow.Table``, a RecordBatch, a RecordBatchReader or an iterable of
    RecordBatches / Tables, each in flow schema v1 (exact column types, as in an archive file;
    extra columns ride along and are not read). Whether counters still need multiplying by
    ``sampling_rate`` comes from each item's schema metadata (``flowatlas.counts``, default
    ``raw``), as for archive files, unless ``counts`` (``"raw"`` or ``"scaled"``) says it for
    all of them. Raises :class:`InputError` naming the item and the column at fault, or when
    there are no rows at all.
    """
    if counts is not None and counts not in (COUNTS_RAW, COUNTS_SCALED):
        raise InputError(
            f"{MEMORY_WHERE}: counts must be {COUNTS_RAW!r} or {COUNTS_SCALED!r}, not {counts!r}"
        )
    if isinstance(records, (str, bytes, os.PathLike)):
        raise InputError(
            f"{MEMORY_WHERE}: got the path {os.fsdecode(records)!r}; "
            "build an archive on disk with build_cube"
        )
    single = isinstance(records, (pa.Table, pa.RecordBatch))
    if single:
        items: Iterable[object] = [records]
    elif isinstance(records, Iterable):
        items = records
    else:
        raise InputError(
            f"{MEMORY_WHERE}: expected a pyarrow Table or RecordBatches, "
            f"not {type(records).__name__}"
        )
    names = list(FLOW_SCHEMA_V1.names)
    runs: list[tuple[list[pa.Table], str]] = []
    for i, item in enumerate(items):
        where = MEMORY_WHERE if single else f"{MEMORY_WHERE}, item {i}"
        if isinstance(item, pa.RecordBatch):
            item = pa.Table.from_batches([item])
        elif not isinstance(item, pa.Table):
            raise InputError(
                f"{where}: is a {type(item).__name__}, not a pyarrow RecordBatch or Table"
            )
        missing = [n for n in names if n not in item.column_names]
        if missing:
            raise InputError(f"{where}: not flow schema v1: column {missing[0]!r} is missing")
        mode = check_schema(item.schema, where)
        mode = counts or mode
        if item.num_rows == 0:
            continue
        # the v1 columns only, without metadata: consecutive items of one counts mode then
        # concatenate without copying, whatever extra columns they carried
        item = pa.Table.from_arrays([item.column(n) for n in names], schema=_PLAIN_V1)
        if runs and runs[-1][1] == mode:
            runs[-1][0].append(item)
        else:
            runs.append(([item], mode))
    out = MemoryRecords(name, [(pa.concat_tables(ts), mode) for ts, mode in runs])
    if out.num_rows == 0:
        raise InputError(f"{MEMORY_WHERE}: no rows to build a cube from")
    return out


def read_fragment(
    fragment: Fragment | MemoryFragment, columns: list[str] | None = None
) -> pa.Table:
    """Read one fragment; a corrupt row group raises an :class:`InputError` naming the file.

    A file that changed since the archive was opened (another size or Parquet footer) is an
    error too: a build must not mix two versions of an archive. A :class:`MemoryFragment`
    is its slice of the records in memory (no copy).

    Inside :func:`~flowatlas.kernels.serial_kernels` (tasks on every core) the calling
    thread decodes the columns; elsewhere Arrow's thread pool does.
    """
    if isinstance(fragment, MemoryFragment):
        return fragment.table if columns is None else fragment.table.select(columns)
    with _read_errors(fragment, columns):
        # where tasks already run on every core (serial_kernels: the threads runner), the
        # calling thread decodes its columns itself: handing them to Arrow's pool of as many
        # threads left the maps' cores idle at each file's end (world 5 M: 1.56 -> 1.86
        # cores busy); alone (eager) Arrow's threads are the read's parallelism
        return _open_fragment(fragment).read_row_groups(
            list(fragment.row_groups), columns=columns, use_threads=parallel_allowed()
        )


def read_fragment_batches(
    fragment: Fragment | MemoryFragment, columns: list[str] | None, batch_rows: int
) -> Iterator[pa.Table]:
    """:func:`read_fragment`'s rows, in order, as tables of at most ``batch_rows`` rows
    (each column one chunk), decoded one after another; the same checks and errors.

    A map task that classifies each batch as it comes reads the decoded columns while they
    are still in the core's cache, and Arrow reuses its buffers from batch to batch: on the
    103 M-record slice of the 10^9 archive (row groups of 2^20 rows) the per-record kernel
    took 8% less CPU and the decode about 5% less than with whole row groups. ``batch_rows`` 0,
    a :class:`MemoryFragment`, and a fragment of at most ``batch_rows`` rows give the whole
    fragment as one table.
    """
    if isinstance(fragment, MemoryFragment) or batch_rows <= 0:
        yield read_fragment(fragment, columns)
        return
    if 0 < fragment.num_rows <= batch_rows:
        # one batch: the row groups read whole (``read_row_groups``: a chunk per column, as
        # tests/test_archive.py checks), without the batch reader's set-up: world 1 M's
        # files of 5.4 k records 2-4% less CPU, world 5 M's of 27 k no measurable change
        # (bench/RESULTS.md, fourteenth round)
        yield read_fragment(fragment, columns)
        return
    with _read_errors(fragment, columns):
        pf = _open_fragment(fragment)
        batches = pf.iter_batches(
            batch_size=batch_rows, row_groups=list(fragment.row_groups), columns=columns,
            use_threads=parallel_allowed(),
        )  # fmt: skip
        for batch in batches:
            yield pa.Table.from_batches([batch])


def _open_fragment(fragment: Fragment) -> pq.ParquetFile:
    """The fragment's file opened for reading, after checking that it is the file the
    archive was opened with (its size and footer hash, where the fragment has one)."""
    same = False
    if fragment.footer_sha256:
        path = Path(fragment.path)
        try:
            size = path.stat().st_size
            same = size == fragment.size and footer_sha256(path, size) == fragment.footer_sha256
        except FileNotFoundError:
            raise InputError(f"{fragment.path}: file vanished during the build") from None
        except (OSError, InputError):
            same = False
        if not same:
            raise InputError(f"{fragment.path}: file changed during the build; run it again")
    # the footer is the one checked above, so the one parsed at the archive's open (if the
    # fragment has it) is this file's: 35 us a file less than parsing it again
    return open_parquet(fragment.path, metadata=fragment.metadata if same else None)


@contextlib.contextmanager
def _read_errors(fragment: Fragment, columns: list[str] | None) -> Iterator[None]:
    """A fragment's read failing (the file gone, damaged) as one :class:`InputError`
    naming the file (and, for a checksum failure, the page)."""
    try:
        yield
    except FileNotFoundError:
        raise InputError(f"{fragment.path}: file vanished during the build") from None
    except (OSError, pa.ArrowException) as exc:
        raise damaged(fragment.path, exc, fragment.row_groups, columns) from None


# --------------------------------------------------------------------------- integrity

#: what pyarrow says when a page's CRC-32 does not match its data
_CHECKSUM_FAILED = "CRC checksum verification failed"


def open_parquet(
    path: str | os.PathLike[str],
    dictionary: list[str] | None = None,
    metadata: pq.FileMetaData | None = None,
) -> pq.ParquetFile:
    """A Parquet file opened for reading with its page checksums verified; the columns
    named in ``dictionary`` are read as Arrow dictionaries (few distinct values: labels).
    ``metadata``: the file's footer, parsed already (it is not read again)."""
    return pq.ParquetFile(
        path, page_checksum_verification=True, read_dictionary=dictionary, metadata=metadata
    )


def read_parquet(
    path: str | os.PathLike[str],
    columns: list[str] | None = None,
    *,
    dictionary: list[str] | None = None,
) -> pa.Table:
    """Read a whole Parquet file, page checksums verified; errors name the damaged part.
    ``dictionary``: columns to read dictionary-encoded (see :func:`open_parquet`), where
    the file has them."""
    try:
        pf = open_parquet(path)
        if dictionary:
            have = set(pf.schema_arrow.names)
            pf = open_parquet(path, [c for c in dictionary if c in have])
        return pf.read(columns=columns)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, pa.ArrowException) as exc:
        raise damaged(path, exc, None, columns) from None


def damaged(
    path: str | os.PathLike[str],
    exc: BaseException,
    row_groups: Iterable[int] | None = None,
    columns: list[str] | None = None,
) -> InputError:
    """The error for a Parquet file that failed to read: where and why, on one line.

    A page checksum failure is located (row group and column, by reading them one at a
    time) and called what it is: the file's bytes changed after it was written.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _CHECKSUM_FAILED not in text:
        groups = "" if row_groups is None else f"row group(s) {','.join(map(str, row_groups))}: "
        return InputError(f"{path}: {groups}unreadable: {text}")
    where = locate_bad_page(path, row_groups, columns)
    return InputError(
        f"{path}: {where + ': ' if where else ''}page checksum mismatch: the file is damaged "
        "(changed on disk after it was written); restore or re-create it"
    )


def locate_bad_page(
    path: str | os.PathLike[str],
    row_groups: Iterable[int] | None = None,
    columns: list[str] | None = None,
) -> str:
    """``row group R, column C`` of the first page that fails its checksum ('' if none)."""
    try:
        pf = open_parquet(path)
        groups = list(row_groups) if row_groups is not None else range(pf.num_row_groups)
        names = columns or pf.schema_arrow.names
        for rg in groups:
            for name in names:
                try:
                    pf.read_row_group(rg, columns=[name])
                except (OSError, pa.ArrowException) as exc:
                    if _CHECKSUM_FAILED in str(exc):
                        return f"row group {rg}, column {name}"
    except (OSError, pa.ArrowException):
        pass
    return ""
