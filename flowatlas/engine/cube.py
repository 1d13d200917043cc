"""The cube: what a build produces and everything interactive reads.

A cube is a directory::

    CUBE/cube.json        metadata: dimensions, rollups, record accounting, provenance
    CUBE/cells.parquet    one row per (time bucket, region, network type, direction, IP version)
    CUBE/rollups.parquet  exact distinct remote IPs (and sums) per rollup period and grouping

Volume, packets and flows add up over any dimension, so they are read from the cells.
Distinct remote IPs do not add up (an address seen in two hours is one address), so they
come from the rollups, computed exactly at build time for each grouping set. Magnitude (bits
per unique remote IP) and shares are derived on read, never stored. See docs/cube.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flowatlas.errors import InputError, OutputError
from flowatlas.io.archive import fsync_file, read_parquet
from flowatlas.io.swap import fsync_dir, partial_path, recover_output, swap_into_place
from flowatlas.vocab import DIRECTIONS

if TYPE_CHECKING:  # pandas loads on first use: a build never needs it (~0.13 s)
    import pandas as pd

    from flowatlas.config import LinkRule
    from flowatlas.engine.pipeline import PartitionResult

# The kernels and the pipeline (numba: ~0.3 s to import) are imported where the tables
# are written, in a build: readers (open_cube, what-if, the server) never load them.

FORMAT = "flowatlas-cube"
FORMAT_VERSION = 1
DIMENSIONS = ("region", "network_type", "direction", "ip_version")
MEASURES = ("bytes", "packets", "flows", "uniques", "uniques_prefix")
TIMESTAMP = pa.timestamp("us", tz="UTC")
#: the cube's columns Parquet stores dictionary-encoded (low-cardinality strings)
DICTIONARY_COLUMNS = ("region", "network_type", "direction", "rollup", "grouping")
#: rows per Parquet row group of a cube file
ROW_GROUP_ROWS = 1 << 20
#: the in-memory type of the cube's string dimensions: codes into their names (see _strings)
DICTIONARY = pa.dictionary(pa.int32(), pa.string())


def grouping_name(grouping: Iterable[str]) -> str:
    """The stored name of a grouping set: its dimensions in canonical order, comma-joined."""
    g = set(grouping)
    unknown = g - set(DIMENSIONS)
    if unknown:
        raise InputError(f"unknown cube dimension(s): {', '.join(sorted(unknown))}")
    return ",".join(d for d in DIMENSIONS if d in g) or "total"


# --------------------------------------------------------------------------- assembling


def _strings(names: Sequence[str], codes: np.ndarray) -> pa.DictionaryArray:
    """``names[codes]`` as an Arrow dictionary array (:data:`DICTIONARY`): the cube's string
    columns stay codes until written (:func:`_write_parquet` stores them as the strings)."""
    return pa.DictionaryArray.from_arrays(
        pa.array(codes, pa.int32()), pa.array(list(names), pa.string())
    )


def _dims_columns(codes: dict[str, np.ndarray], regions, types, keep: Sequence[str]) -> dict:
    n = codes["region"].size
    cols: dict[str, pa.Array] = {}
    names = {"region": regions, "network_type": types, "direction": DIRECTIONS}
    for d in ("region", "network_type", "direction"):
        if d in keep:
            cols[d] = _strings(names[d], codes[d])
        else:
            cols[d] = pa.nulls(n, DICTIONARY)
    if "ip_version" in keep:
        cols["ip_version"] = pa.array(np.where(codes["is_v6"] == 1, 6, 4).astype(np.uint8))
    else:
        cols["ip_version"] = pa.nulls(n, pa.uint8())
    return cols


def _measures(sums: np.ndarray) -> dict[str, pa.Array]:
    return {
        m: pa.array(np.ascontiguousarray(sums[:, i]), pa.uint64()) for i, m in enumerate(MEASURES)
    }


def cells_table(result: PartitionResult, regions, types, bucket_us: int) -> pa.Table:
    """The cells of a combined build result as an Arrow table, sorted by key."""
    from flowatlas.kernels.orient import unpack_cells

    codes = unpack_cells(result.cell_keys)
    start = pa.array(codes["bucket"] * np.int64(bucket_us), pa.int64()).cast(TIMESTAMP)
    cols = {"bucket_start": start, **_dims_columns(codes, regions, types, DIMENSIONS)}
    cols.update(_measures(result.cell_sums))
    return pa.table(cols)


def _key_columns(keys: np.ndarray, rollup: str, regions, types) -> list[tuple[np.ndarray, dict]]:
    """Per grouping set: the rows of ``keys`` in it, and their key columns."""
    from flowatlas.engine.pipeline import GROUPINGS, ROLLUP_CODE_SHIFT, period_start
    from flowatlas.kernels.orient import DIM_BITS, unpack_cells

    code = keys >> ROLLUP_CODE_SHIFT
    grouping = (keys >> DIM_BITS) & 7
    codes = unpack_cells(keys & ((1 << DIM_BITS) - 1))
    out = []
    for g, dims in enumerate(GROUPINGS):
        sel = np.flatnonzero(grouping == g)
        if sel.size == 0:
            continue
        sub = {k: v[sel] for k, v in codes.items()}
        starts = period_start(code[sel], rollup).astype(np.int64)
        start_arr = pa.array(starts, pa.int64(), mask=np.isnat(starts.view("datetime64[us]")))
        cols = {
            "rollup": _strings([rollup], np.zeros(sel.size, np.int32)),
            "period_start": start_arr.cast(TIMESTAMP),
            "grouping": _strings([grouping_name(dims)], np.zeros(sel.size, np.int32)),
            **_dims_columns(sub, regions, types, dims),
        }
        out.append((sel, cols))
    return out


def sketches_table(result: PartitionResult, regions, types, bucket_us: int) -> pa.Table | None:
    """One HyperLogLog blob per sketch key (a cell, or a day of one), with the key's columns."""
    if result.sketches is None or result.sketch_keys is None:
        return None
    return sketch_blobs_table(result.sketch_keys, result.sketches, regions, types, bucket_us)


def sketch_blobs_table(
    sketch_keys: np.ndarray,
    sketches: tuple[np.ndarray, np.ndarray],
    regions: Sequence[str],
    types: Sequence[str],
    bucket_us: int,
) -> pa.Table:
    """:func:`sketches_table` of sketch keys and their blobs ``(offsets, data)`` as
    :meth:`~flowatlas.engine.combine.Combiner.sketch_result` gives them."""
    from flowatlas.kernels.orient import unpack_cells

    offsets, data = sketches
    blobs = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(offsets) - 1,
        [None, pa.py_buffer(np.ascontiguousarray(offsets, np.int64)), pa.py_buffer(data)],
    )
    codes = unpack_cells(sketch_keys)
    start = pa.array(codes["bucket"] * np.int64(bucket_us), pa.int64()).cast(TIMESTAMP)
    cols = {"bucket_start": start, **_dims_columns(codes, regions, types, DIMENSIONS)}
    return pa.table({**cols, "sketch": blobs})


def rollups_table(result: PartitionResult, regions, types, rollups: Sequence[str]) -> pa.Table:
    """The rollups of a combined build result as an Arrow table, sorted by rollup and key."""
    parts = []
    for rollup in rollups:
        keys = result.rollup_keys[rollup]
        sums = result.rollup_sums[rollup]
        top = result.rollup_top_bytes.get(rollup)
        hhi = result.rollup_hhi.get(rollup)
        for sel, cols in _key_columns(keys, rollup, regions, types):
            cols.update(_measures(sums[sel]))
            if top is not None:
                cols["top_bytes"] = pa.array(top[sel], pa.uint64())
                cols["hhi"] = pa.array(hhi[sel], pa.float64())
            parts.append(pa.table(cols))
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts)


def top_tables(
    result: PartitionResult, regions, types, describe_asn, describe_ip
) -> tuple[pa.Table, pa.Table]:
    """The top remote addresses and ASNs of each rollup key, ranked by volume.

    ``describe_asn(asns) -> orgs`` and ``describe_ip(hi, lo) -> (asns, orgs)`` name them.
    """
    from flowatlas.addresses import hilo_to_text

    ip_parts, asn_parts = [], []
    for rollup, (key, rank, vol, hi, lo) in result.top_ips.items():
        asns, orgs = describe_ip(hi, lo)
        for sel, cols in _key_columns(key, rollup, regions, types):
            cols.update(
                {
                    "rank": pa.array(rank[sel] + 1, pa.uint8()),
                    "remote_ip": hilo_to_text(hi[sel], lo[sel]).cast(pa.string()),
                    "bytes": pa.array(vol[sel], pa.uint64()),
                    "asn": pa.array(asns[sel], pa.uint32()),
                    "org": pa.array(orgs[sel], pa.string()),
                }
            )
            ip_parts.append(pa.table(cols))
    for rollup, (key, rank, asn, vol) in result.top_asns.items():
        if key is None:
            continue
        orgs = describe_asn(asn)
        for sel, cols in _key_columns(key, rollup, regions, types):
            cols.update(
                {
                    "rank": pa.array(rank[sel] + 1, pa.uint8()),
                    "asn": pa.array(asn[sel], pa.uint32()),
                    "org": pa.array(orgs[sel], pa.string()),
                    "bytes": pa.array(vol[sel], pa.uint64()),
                }
            )
            asn_parts.append(pa.table(cols))
    ips = pa.concat_tables(ip_parts) if ip_parts else pa.table({})
    asns_t = pa.concat_tables(asn_parts) if asn_parts else pa.table({})
    return ips, asns_t


def links_table(
    result: PartitionResult, regions, types, bucket_us: int, link_names: Sequence[str]
) -> pa.Table:
    """Volume per (cell, interface link) as an Arrow table: ``links.parquet``.

    The records no interface link carries are one row per cell with a null ``link`` (the
    cell's sums less its links'), so the rows of a bucket sum to its cells exactly. Sorted by
    cell, then link index (null last).
    """
    from flowatlas.kernels.accumulate import run_starts
    from flowatlas.kernels.orient import unpack_cells
    from flowatlas.kernels.tally import LINK_BITS, MAX_LINKS, link_key_parts

    cells, csums = result.cell_keys, result.cell_sums[:, :3]
    if result.link_sums is not None and result.link_sums[0].size:
        lkeys, lsums = result.link_sums
    else:
        lkeys, lsums = np.empty(0, np.int64), np.empty((0, 3), np.uint64)
    # link keys are sorted (cell << LINK_BITS | link): each cell's links are one run, so
    # their sums are one reduceat (they never exceed the cell's, whose sums did not wrap)
    l_cell = link_key_parts(lkeys)[0]
    rest = csums.copy()
    if l_cell.size:
        first = run_starts(l_cell)
        rest[np.searchsorted(cells, l_cell[first])] -= np.add.reduceat(lsums, first, axis=0)
    keep = rest[:, 2] > 0
    # a cell's rest as link MAX_LINKS (after its links): both runs sorted, so a stable sort
    # of the joined keys is a merge
    key = np.concatenate([lkeys, (cells[keep] << LINK_BITS) | MAX_LINKS])
    order = np.argsort(key, kind="stable")
    cell, link = link_key_parts(key[order])
    sums = np.take(np.concatenate([lsums, rest[keep]]), order, axis=0)  # rows: 6 -> 3.5 ms
    codes = unpack_cells(cell)
    start = pa.array(codes["bucket"] * np.int64(bucket_us), pa.int64()).cast(TIMESTAMP)
    unlinked = link >= len(link_names)
    link_col = pa.DictionaryArray.from_arrays(
        pa.array(np.where(unlinked, 0, link).astype(np.int32), mask=unlinked),
        pa.array(list(link_names) or [""], pa.string()),
    ).cast(pa.string())
    cols = {"bucket_start": start, "link": link_col}
    cols.update(_dims_columns(codes, regions, types, DIMENSIONS))
    cols.update({m: pa.array(np.ascontiguousarray(sums[:, i]), pa.uint64())
                 for i, m in enumerate(("bytes", "packets", "flows"))})  # fmt: skip
    return pa.table(cols)


def geo_table(
    result: PartitionResult, regions, types, geo_names: Sequence[tuple[str | None, str | None]]
) -> pa.Table | None:
    """Volume per (day, dimensions, remote country and metro): ``geo.parquet``, sorted by
    day, dimensions, country, metro (unknown last). None where the build tracked none."""
    from flowatlas.kernels.orient import unpack_cells
    from flowatlas.kernels.tally import US_PER_DAY, geo_key_parts

    if result.geo_sums is None:
        return None
    keys, sums = result.geo_sums
    day, dims, geo = geo_key_parts(keys)
    codes = unpack_cells(dims)
    start = pa.array(day * np.int64(US_PER_DAY), pa.int64()).cast(TIMESTAMP)
    country = np.asarray([c for c, _ in geo_names] or [None], dtype=object)
    metro = np.asarray([m for _, m in geo_names] or [None], dtype=object)
    cols = {"day": start, **_dims_columns(codes, regions, types, DIMENSIONS)}
    cols["country"] = pa.array(country[geo], pa.string())
    cols["metro"] = pa.array(metro[geo], pa.string())
    cols.update({m: pa.array(np.ascontiguousarray(sums[:, i]), pa.uint64())
                 for i, m in enumerate(("bytes", "packets", "flows"))})  # fmt: skip
    return pa.table(cols)


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write a cube table to ``path`` (options: :func:`_write_options`).

    The :data:`DICTIONARY_COLUMNS` may come as strings or as dictionary arrays
    (:data:`DICTIONARY`; a build's tables do, from their codes): either way the file holds
    the same bytes, those of the string columns (:func:`_dictionary_parts` says how).
    Encoding a string column hashes every row's text: a build's tables had the codes
    already, and cast them to text only for the writer to hash it back (world 5 M: ~50 ms
    of casts, and ~15 ms more of hashing in the writer).
    """
    if not hasattr(pq.ParquetWriter, "add_key_value_metadata"):  # pyarrow < 16
        table = _decoded(table, range(table.num_columns))
    coded = [
        i for i, f in enumerate(table.schema)
        if pa.types.is_dictionary(f.type) and f.name in DICTIONARY_COLUMNS
    ]  # fmt: skip
    table = _decoded(table, [i for i in range(table.num_columns) if i not in coded])
    if not coded:
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, **_write_options(table.schema))
        return
    # the schema pyarrow stores (store_schema) is the string columns' one
    strings = _as_strings_schema(table.schema)
    stored = {b"ARROW:schema": base64.b64encode(strings.serialize().to_pybytes())}
    starts = range(0, max(table.num_rows, 1), ROW_GROUP_ROWS)
    parts = {i: _dictionary_parts(table.column(i), starts) for i in coded}
    schema = pa.schema(
        [strings.field(i) if parts.get(i) is None else f for i, f in enumerate(table.schema)]
    )
    table = _decoded(table, [i for i, p in parts.items() if p is None])
    options = _write_options(schema)
    with pq.ParquetWriter(path, schema, store_schema=False, **options) as writer:
        for g, start in enumerate(starts):
            part = table.slice(start, ROW_GROUP_ROWS)
            for i, p in parts.items():
                if p is not None:
                    part = part.set_column(i, schema.field(i), p[g])
            writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
        writer.add_key_value_metadata(stored)


def _write_options(schema: pa.Schema) -> dict[str, Any]:
    """The Parquet options of a cube table: page checksums and statistics; the
    :data:`DICTIONARY_COLUMNS` dictionary-encoded; the counters (every uint64 column: bytes,
    packets, flows, uniques, top bytes) delta-encoded and not compressed, the rest zstd.

    Chosen by measurement (bench/RESULTS.md, thirteenth round, the cube write): zstd over
    plain 8-byte counters was half of the writers' CPU (world 5 M: 0.31 s of the cube's
    files, 0.22 with delta), and delta alone makes files as small (19.6 MB for 19.8) that
    read faster.
    """
    counters = {f.name for f in schema if pa.types.is_uint64(f.type)}
    return {
        "compression": {f.name: "none" if f.name in counters else "zstd" for f in schema},
        "compression_level": {f.name: 3 for f in schema if f.name not in counters},
        "column_encoding": {name: "DELTA_BINARY_PACKED" for name in sorted(counters)},
        "use_dictionary": list(DICTIONARY_COLUMNS),
        "write_statistics": True,
        "write_page_checksum": True,
    }


#: rows per data page, pyarrow's default (``max_rows_per_page``): a dictionary-encoded
#: page's index width is that of the dictionary when the page ends
PAGE_ROWS = 20_000


def _as_strings_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with each dictionary column as its values' type."""
    return pa.schema(
        [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema],
        metadata=schema.metadata,
    )


def _decoded(table: pa.Table, columns: Iterable[int]) -> pa.Table:
    """``table`` with those of ``columns`` that are dictionary arrays decoded."""
    for i in columns:
        f = table.schema.field(i)
        if pa.types.is_dictionary(f.type):
            col = table.column(i).cast(f.type.value_type)
            table = table.set_column(i, f.with_type(f.type.value_type), col)
    return table


def _index_width(entries: np.ndarray) -> np.ndarray:
    """The bit width of a dictionary page's indices for dictionaries of ``entries`` values
    (Parquet's RLE encoder: 0 for none, 1 for one, else ceil(log2))."""
    e = np.asarray(entries, dtype=np.int64)
    return np.where(e <= 1, e, np.ceil(np.log2(np.maximum(e, 1))).astype(np.int64))


def _dictionary_parts(
    column: pa.ChunkedArray, starts: Sequence[int]
) -> list[pa.DictionaryArray] | None:
    """A dictionary column as Parquet's writer makes the dictionary of its strings, one
    array per row group (from ``starts``): the values each row group uses, in the order
    they first appear in it. Written as it is, it gives the bytes the strings give.

    Except in two cases, where the strings are the only way to those bytes and None is
    returned (the column goes to the writer as strings):

    - a row group's values first appear late: the writer encodes each data page
      (:data:`PAGE_ROWS` rows) with the dictionary as it stands when the page ends, so the
      index width of a page may be less than the whole dictionary's (the rollups' ``rollup``
      column: ``day`` alone in its first pages);
    - nulls: pyarrow's statistics of coded data take a write batch with nulls and all values
      but one as using them all (arrow's ``Unique`` counts the null as a value), and a page
      of nulls alone gets a minimum and maximum. Only the rollups and top lists have null
      dimensions (those a grouping set rolls up), and they are small.
    """
    from flowatlas.kernels.accumulate import first_seen

    if column.null_count:
        return None
    col = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not isinstance(col, pa.DictionaryArray):  # no chunks: an empty column
        col = pa.array([], column.type)
    out = []
    for start in starts:
        part = col.slice(start, ROW_GROUP_ROWS)
        codes = part.indices.to_numpy()
        order, first, new = first_seen(codes, len(part.dictionary))
        page_ends = np.arange(PAGE_ROWS, codes.size, PAGE_ROWS)
        seen = np.searchsorted(first, page_ends, side="left")  # values before each page end
        if (_index_width(seen) != _index_width(np.array([order.size]))).any():
            return None
        out.append(
            pa.DictionaryArray.from_arrays(
                pa.array(new, pa.int32()), part.dictionary.take(pa.array(order))
            )
        )
    return out


def check_output(out: Path, *, overwrite: bool) -> None:
    """Fail early (before any work) if the cube cannot be written to ``out``.

    Leftovers of a build of ``out`` that died are repaired first (:func:`recover_output`).
    """
    recover_output(out)
    if out.exists():
        if not overwrite:
            raise OutputError(f"{out}: already exists (use --overwrite to replace it)")
        if not out.is_dir() or not (out / "cube.json").exists():
            raise OutputError(f"{out}: exists and is not a flowatlas cube; refusing to replace it")
    parent = out.resolve().parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{parent}: cannot create directory: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot write here ({parent} is not writable)")


STATE_DIR = "_state"
#: cube.json's record of each file's size and SHA-256 (what ``flowatlas verify`` checks)
FILES_KEY = "files"


class CubeWriter:
    """A cube written file by file as its tables are made, then swapped into place whole.

    :meth:`add` starts writing a table at once on a pool of threads (one per core: pyarrow
    encodes and compresses, and hashlib hashes, without the GIL), so a build makes its next
    tables while the ones before are written (or its reducers run); each file's bytes are
    what writing it alone gives. A table may also be handed over as the function that makes
    it, to be made on the pool too. :meth:`commit` waits for them, writes cube.json
    (``meta`` with every file's size and SHA-256; every Parquet page carries a checksum too)
    and swaps the cube into place. Leaving the ``with`` block without a commit (an error)
    removes everything written; nothing half-written is ever at ``out``. Errors writing are
    an :class:`OutputError`.

    The files go to a hidden sibling directory first, so that whenever the process dies
    ``out`` holds the old cube or the new one, complete: the swap is one
    ``renameat2(RENAME_EXCHANGE)`` where the file system has it; elsewhere, the old cube
    waits in ``.OUT.old-PID`` between two renames and the next build puts it back if the
    process died in between (:func:`recover_output`).
    """

    def __init__(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out = Path(out)
        check_output(self.out, overwrite=overwrite)
        self.tmp = partial_path(self.out)
        self._writes: dict[str, Future[dict[str, Any] | None]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def _start(self) -> None:
        """The hidden folder the files go to, made on the first file (a build hands its
        first table over once its maps are done: one killed before leaves nothing behind)."""
        if self._pool is not None:
            return
        try:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp.mkdir()
        except OSError as exc:
            raise self._failed(exc) from None
        self._pool = ThreadPoolExecutor(os.cpu_count() or 1, "flowatlas-cube")

    def add(self, name: str, table: pa.Table | Callable[[], pa.Table | None] | None) -> None:
        """Start writing ``table`` as the cube's file ``name`` (None: no such file).

        ``table`` may be a function returning the table (or None): it is called on the
        writer's threads, so work that releases the GIL (numba kernels, Arrow) runs beside
        the caller's.
        """
        if table is None:
            return
        self._start()
        assert self._pool is not None
        if callable(table):
            self._writes[name] = self._pool.submit(_make_and_write, table, self.tmp / name)
        else:
            self._writes[name] = self._pool.submit(_write_and_hash, table, self.tmp / name)

    def commit(self, meta: Mapping[str, Any]) -> Path:
        """Wait for the files, write cube.json and swap the cube into place; returns ``out``."""
        self._start()
        tmp = self.tmp
        try:
            written = {name: w.result() for name, w in self._writes.items()}
            hashes = {name: h for name, h in written.items() if h is not None}
            meta = dict(meta)
            meta[FILES_KEY] = {name: hashes[name] for name in sorted(hashes)}
            with open(tmp / "cube.json", "w") as fh:
                fh.write(json.dumps(meta, indent=1, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(tmp)
            swap_into_place(tmp, self.out)
        except OSError as exc:
            raise self._failed(exc) from None
        return self.out

    def _failed(self, exc: OSError) -> OutputError:
        """What to raise for ``exc``, after removing what was written."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        return OutputError(f"{self.out}: cannot write cube: {exc.strerror or exc}")

    def __enter__(self) -> CubeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is not None:  # the writes under way finish (or fail) first
            self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _make_and_write(make: Callable[[], pa.Table | None], path: Path) -> dict[str, Any] | None:
    """:func:`_write_and_hash` of the table ``make()`` returns; None (no file) for None."""
    table = make()
    return None if table is None else _write_and_hash(table, path)


def _write_and_hash(table: pa.Table, path: Path) -> dict[str, Any]:
    """Write one of the cube's files, on disk before the cube is swapped in, and return its
    size and SHA-256 (for cube.json)."""
    _write_parquet(table, path)
    fsync_file(path)
    return _file_hash(path)


def _file_hash(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


# --------------------------------------------------------------------------- reading


class Cube:
    """A built cube, read into memory (cubes are small); the API reports and servers use."""

    def __init__(
        self, path: Path, meta: dict[str, Any], cells: pd.DataFrame, rollups: pd.DataFrame
    ):
        self.path = path
        self.meta = meta
        self.cells = cells
        self.rollups = rollups
        self._cache: dict[str, Any] = {}  # top lists and sketches, read on first use

    # ------------------------------------------------------------------ vocabulary
    @property
    def regions(self) -> list[str]:
        return list(self.meta["dimensions"]["region"])

    @property
    def network_types(self) -> list[str]:
        return list(self.meta["dimensions"]["network_type"])

    @property
    def groupings(self) -> list[str]:
        return [grouping_name(g) for g in self.meta["groupings"]]

    # ------------------------------------------------------------------ queries
    def volume(
        self, by: Sequence[str] = ("region", "network_type"), where: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Bytes, packets and flows summed over the whole range by ``by`` (from the cells)."""
        df = _filter(self.cells, where)
        by = list(by)
        if not by:
            return df[["bytes", "packets", "flows"]].sum().to_frame().T
        return df.groupby(by, observed=True)[["bytes", "packets", "flows"]].sum().reset_index()

    def rollup(
        self,
        by: Sequence[str] = ("region", "network_type"),
        period: str = "all",
        where: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Exact sums, distinct remote IPs and magnitude for a stored grouping and period.

        ``by`` plus the dimensions named in ``where`` must be one of the stored grouping sets
        (distinct counts cannot be added up over other dimensions). Magnitude is bits per
        unique remote IP over the period.
        """
        where = dict(where or {})
        name = grouping_name(set(by) | set(where))
        if name not in self.groupings:
            raise InputError(
                f"no exact distinct counts stored for grouping {name!r} "
                f"(stored: {', '.join(self.groupings)})"
            )
        if period not in self.meta["rollups"]:
            raise InputError(
                f"rollup {period!r} not in this cube (has: {', '.join(self.meta['rollups'])})"
            )
        df = self.rollups[(self.rollups["rollup"] == period) & (self.rollups["grouping"] == name)]
        df = _filter(df, where)
        keep = (["period_start"] if period != "all" else []) + list(by)
        out = df[keep + list(MEASURES)].reset_index(drop=True)
        out["magnitude"] = magnitude(out["bytes"], out["uniques"])
        return out

    def matrix(
        self,
        measure: str,
        *,
        rows: str = "region",
        cols: str = "network_type",
        period: str = "all",
        where: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """A rows x cols matrix of bytes, uniques or magnitude (the report's heatmaps)."""
        df = self.rollup((rows, cols), period=period, where=where)
        if period != "all":
            raise InputError("matrix() needs period='all'; use rollup() for periods")
        m = df.pivot_table(index=rows, columns=cols, values=measure, aggfunc="sum", observed=True)
        order_r = [r for r in self._order(rows) if r in m.index]
        order_c = [c for c in self._order(cols) if c in m.columns]
        return m.reindex(index=order_r, columns=order_c)

    def timeseries(
        self,
        by: str = "network_type",
        freq: str = "D",
        measure: str = "bytes",
        where: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """A measure summed per time period (pandas frequency) and ``by`` (wide frame)."""
        if measure == "uniques":
            raise InputError("uniques do not add up over time; use rollup(period=...)")
        df = _filter(self.cells, where)
        t = df["bucket_start"].dt.tz_convert(None).dt.to_period(freq).dt.start_time
        wide = df.assign(t=t).pivot_table(
            index="t", columns=by, values=measure, aggfunc="sum", observed=True
        )
        order = [c for c in self._order(by) if c in wide.columns]
        return wide.reindex(columns=order).fillna(0)

    def top_ips(
        self,
        by: Sequence[str] | None = None,
        period: str = "all",
        where: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The heaviest remote addresses per key (rank, remote_ip, bytes, asn, org).

        ``by`` (plus the dimensions in ``where``) picks one stored grouping set; None keeps
        every grouping. Lists exist for the rollups in cube.json's ``top_list_rollups``.
        """
        return self._top("top_ips.parquet", by, period, where)

    def top_asns(
        self,
        by: Sequence[str] | None = None,
        period: str = "all",
        where: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The remote networks (ASNs) carrying the most volume per key (rank, asn, org, bytes)."""
        return self._top("top_asns.parquet", by, period, where)

    def _top(self, name, by, period, where) -> pd.DataFrame:
        if period not in self.meta.get("top_list_rollups", []):
            raise InputError(
                f"no top lists for rollup {period!r} "
                f"(this cube has them for: {', '.join(self.meta.get('top_list_rollups', []))})"
            )
        if name not in self._cache:
            self._cache[name] = read_parquet(self.path / name).to_pandas()
        df = self._cache[name]
        df = df[df["rollup"] == period]
        if by is not None:
            df = df[df["grouping"] == grouping_name(set(by) | set(where or {}))]
        return self._report_order(_filter(df, where))

    def _report_order(self, df: pd.DataFrame) -> pd.DataFrame:
        """Top-list rows in the report's order (Unknown region and type last, then by rank),
        with "unknown" for the organisation of addresses no source names."""
        keys = []
        for dim in ("region", "network_type", "direction", "ip_version"):
            order = [v for v in self._order(dim) if v != "Unknown"]
            order += [v for v in self._order(dim) if v == "Unknown"]
            pos = {v: i for i, v in enumerate(order)}
            keys.append(df[dim].map(pos).fillna(-1).to_numpy())  # -1: the dimension is rolled up
        keys.append(df["rank"].to_numpy())
        df = df.iloc[np.lexsort(keys[::-1])].reset_index(drop=True)
        return df.assign(org=df["org"].fillna("unknown"))

    def estimate_uniques(
        self,
        by: Sequence[str] = (),
        start: Any = None,
        end: Any = None,
        where: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Distinct remote addresses for any time range and grouping, from the cells' sketches.

        ``start`` (inclusive) and ``end`` (exclusive) bound ``bucket_start`` (anything pandas
        reads as a timestamp; UTC). Uses the HyperLogLog sketch of every cell in range, so it
        works for ranges and groupings the exact rollups do not store; its standard error
        is in cube.json (``sketch.standard_error``, 1.6 % at the default precision). Returns
        ``by`` columns, ``uniques_estimate`` and ``cells``.
        """
        from flowatlas.kernels import hll

        sketch = self.meta.get("sketch")
        if not sketch:
            raise InputError(f"{self.path}: this cube was built without sketches")
        if "sketches" not in self._cache:
            t = read_parquet(self.path / "sketches.parquet")
            df = t.drop_columns(["sketch"]).to_pandas()
            df["ip_version"] = df["ip_version"].astype("UInt8")
            col = t.column("sketch").combine_chunks()
            self._cache["sketches"] = (df, col)
        df, col = self._cache["sketches"]
        mask = np.ones(len(df), dtype=bool)
        if start is not None:
            mask &= (df["bucket_start"] >= _utc(start)).to_numpy()
        if end is not None:
            mask &= (df["bucket_start"] < _utc(end)).to_numpy()
        for k, v in (where or {}).items():
            if k not in DIMENSIONS:
                raise InputError(f"unknown dimension {k!r} in filter")
            values = v if isinstance(v, list | tuple | set) else [v]
            mask &= df[k].astype(object).isin(values).to_numpy()
        rows = np.flatnonzero(mask)
        by = list(by)
        sel = df.iloc[rows]
        if by:
            groups = sel.groupby(by, observed=True, sort=True).ngroup().to_numpy()
            labels = sel[by].drop_duplicates().sort_values(by).reset_index(drop=True)
        else:
            import pandas as pd

            groups = np.zeros(rows.size, dtype=np.int64)
            labels = pd.DataFrame(index=[0])
        n_groups = int(groups.max()) + 1 if rows.size else 0
        p = int(sketch["precision"])
        if "sketch_entries" not in self._cache:  # decoded once: the server asks many times
            offsets = np.frombuffer(col.buffers()[1], dtype=np.int64)[
                col.offset : col.offset + len(col) + 1
            ]
            data = np.frombuffer(col.buffers()[2], dtype=np.uint8)
            self._cache["sketch_entries"] = hll.decode_cells(offsets, data, p)
        keys, entries = self._cache["sketch_entries"]
        # keep the chosen cells; each cell's entries go to its group
        group_of_cell = np.full(len(df), -1, dtype=np.int64)
        group_of_cell[rows] = groups
        g = group_of_cell[keys]
        keep = g >= 0
        est = hll.estimate(hll.to_dense(g[keep], entries[keep], n_groups, p)) if n_groups else []
        out = labels.copy()
        out["uniques_estimate"] = np.asarray(est, dtype=np.float64)
        out["cells"] = np.bincount(groups, minlength=n_groups) if n_groups else []
        return out

    # ------------------------------------------------------------------ links
    @property
    def links(self) -> tuple[LinkRule, ...]:
        """The links the cube was built with, as cube.json records them (configured order)."""
        from flowatlas.config import LinkRule

        recorded = self.meta.get("links")
        if recorded is None:  # cubes from before links had names: the original form
            recorded = self.meta.get("config", {}).get("links", [])
        return tuple(LinkRule.from_dict(d) for d in recorded)

    @property
    def link_names(self) -> list[str]:
        """Every link a flow can fall to: the configured ones, then each region's catch-all."""
        from flowatlas.config import catch_all_name

        return [lk.name for lk in self.links] + [catch_all_name(r) for r in self.regions]

    def link_cells(self, assign: bool = False) -> pd.DataFrame:
        """Volume per (bucket, interface link, region, network type, direction, IP version).

        ``link`` is the interface link that carried the flows, null where none did (from
        ``links.parquet``; a cube without interface links has none, and this is its cells
        with a null link). With ``assign``, ``link`` is instead the link each row falls to by
        the configuration's rule (interface link, else selection link, else the region's
        catch-all: :func:`flowatlas.config.assign_links`), so every row has one. Bytes,
        packets and flows summed over ``link`` are the cells' exactly.
        """
        if "links.parquet" not in self._cache:
            path = self.path / "links.parquet"
            if path.exists():
                df = _read_frame(path, self.meta)
            else:
                df = self.cells[["bucket_start", *DIMENSIONS, "bytes", "packets", "flows"]].copy()
                df.insert(1, "link", _none_strings(len(df)))
            self._cache["links.parquet"] = df
        df = self._cache["links.parquet"]
        if not assign:
            return df.copy()
        from flowatlas.config import Config, assign_links

        out = df.copy()
        config = Config(links=self.links)
        out["link"] = assign_links(
            config, out["link"], out["region"], out["network_type"], out["direction"]
        )
        return out

    # ------------------------------------------------------------------ geography
    def top_metros(
        self,
        by: Sequence[str] = (),
        where: Mapping[str, Any] | None = None,
        start: Any = None,
        end: Any = None,
        n: int = 10,
    ) -> pd.DataFrame:
        """The ``n`` remote metros carrying the most volume per ``by`` group, over the days
        from ``start`` (inclusive) to ``end`` (exclusive; default: the whole range).

        Columns: ``by``, ``rank`` (1 = heaviest), ``metro``, ``country``, ``bytes``,
        ``packets``, ``flows`` and ``share`` (of the group's volume, unknown metros
        included; they are not ranked). Empty where the prefix table had no metros.
        """
        return self._top_geo(("country", "metro"), by, where, start, end, n)

    def top_countries(self, by: Sequence[str] = (), **options: Any) -> pd.DataFrame:
        """The remote countries carrying the most volume per ``by`` group: :meth:`top_metros`
        with countries (the same options and columns, without ``metro``)."""
        return self._top_geo(("country",), by, **options)

    def _top_geo(self, level, by, where=None, start=None, end=None, n: int = 10) -> pd.DataFrame:
        import pandas as pd

        by = list(by)
        for d in [*by, *(where or {})]:
            if d not in DIMENSIONS:
                raise InputError(f"unknown dimension {d!r} (use {', '.join(DIMENSIONS)})")
        name = level[-1]
        keys = [*by, *level]
        columns = [*by, "rank", name, *[c for c in level if c != name], "bytes", "packets",
                   "flows", "share"]  # fmt: skip
        if "geo.parquet" not in self._cache:
            path = self.path / "geo.parquet"
            self._cache["geo.parquet"] = _read_frame(path, self.meta) if path.exists() else None
        df = self._cache["geo.parquet"]
        if df is None:
            return pd.DataFrame({c: [] for c in columns})
        df = _filter(df, where)
        if start is not None:
            df = df[df["day"] >= _utc(start).floor("D")]
        if end is not None:
            df = df[df["day"] < _utc(end)]
        sums = ["bytes", "packets", "flows"]
        if by:
            total = df.groupby(by, observed=True)["bytes"].sum().rename("total").reset_index()
        else:
            total = pd.DataFrame({"total": [df["bytes"].sum()]})
        known = df[df[name].notna()]
        g = known.groupby(keys, observed=True, dropna=False)[sums].sum().reset_index()
        g = g[g["flows"] > 0]
        g = g.merge(total, on=by) if by else g.assign(total=total["total"].iloc[0])
        g = g.sort_values([*by, "bytes", *level], ascending=[True] * len(by) + [False]
                          + [True] * len(level), kind="stable")  # fmt: skip
        g["rank"] = g.groupby(by, observed=True).cumcount() + 1 if by else range(1, len(g) + 1)
        g = g[g["rank"] <= n]
        g["share"] = g["bytes"].astype("float64") / g["total"].astype("float64")
        return g[columns].reset_index(drop=True)

    def whatif(self, scenario: Any = None, **options: Any) -> Any:
        """Capacity what-if: :func:`flowatlas.whatif.whatif` on this cube (docs/whatif.md)."""
        from flowatlas.whatif import whatif

        return whatif(self, scenario, **options)

    def _order(self, dim: str) -> list[Any]:
        if dim == "region":
            return self.regions
        if dim == "network_type":
            return self.network_types
        if dim == "direction":
            return list(DIRECTIONS)
        if dim == "ip_version":
            return [4, 6]
        raise InputError(f"unknown dimension {dim!r}")


def _none_strings(n: int) -> Any:
    """A column of ``n`` missing strings (the null link of a cube without links.parquet)."""
    return np.full(n, None, dtype=object)


def _read_frame(path: Path, meta: dict[str, Any]) -> pd.DataFrame:
    """A cube table (cells, rollups, links, geo) as pandas with its dimensions categorical
    in the cube's order; page checksums verified, errors name the file.

    The dimensions are read as Parquet stores them, dictionary-encoded: pandas then builds
    each categorical from a few labels instead of hashing every row's text (4x faster).
    """
    import pandas as pd

    dims = {
        "region": meta["dimensions"]["region"],
        "network_type": meta["dimensions"]["network_type"],
        "direction": list(DIRECTIONS),
    }
    df = read_parquet(path, dictionary=list(dims)).to_pandas()
    if "ip_version" in df.columns:
        df["ip_version"] = df["ip_version"].astype("UInt8")
    for d, values in dims.items():
        if d in df.columns:
            df[d] = pd.Categorical(df[d], categories=values)
    return df


def _utc(when: Any) -> pd.Timestamp:
    """A timestamp in UTC; naive ones are taken as UTC."""
    import pandas as pd

    t = pd.Timestamp(when)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def magnitude(volume_bytes: pd.Series, uniques: pd.Series) -> pd.Series:
    """Bits per unique remote IP (NaN where there are no IPs)."""
    u = uniques.astype("float64")
    return (volume_bytes.astype("float64") * 8.0 / u.where(u > 0)).astype("float64")


def _filter(df: pd.DataFrame, where: Mapping[str, Any] | None) -> pd.DataFrame:
    if not where:
        return df
    mask = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        if k not in df.columns:
            raise InputError(f"unknown dimension {k!r} in filter")
        values = v if isinstance(v, list | tuple | set) else [v]
        mask &= df[k].isin(values).to_numpy()
    return df[mask]


#: what readers take from cube.json: key path -> (type, element type of a list or None)
REQUIRED_META: dict[str, tuple[type, type | None]] = {
    "dimensions": (dict, None),
    "dimensions.region": (list, str),
    "dimensions.network_type": (list, str),
    "rollups": (list, str),
    "groupings": (list, list),
}


def check_meta(meta: dict[str, Any], where: str | os.PathLike[str]) -> None:
    """An InputError naming the first key cube.json lacks (or holds as the wrong type)."""
    for key, (typ, item) in REQUIRED_META.items():
        value: Any = meta
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            raise InputError(f"{where}: missing key {key!r}; the cube is damaged: rebuild it")
        if not isinstance(value, typ) or (item and not all(isinstance(v, item) for v in value)):
            raise InputError(
                f"{where}: key {key!r} is not a {typ.__name__}"
                + (f" of {item.__name__}" if item else "")
                + "; the cube is damaged: rebuild it"
            )
    sketch = meta.get("sketch")
    if sketch is not None and not (
        isinstance(sketch, dict) and isinstance(sketch.get("precision"), int)
    ):
        raise InputError(
            f"{where}: key 'sketch.precision' missing; the cube is damaged: rebuild it"
        )


def open_cube(path: str | os.PathLike[str]) -> Cube:
    """Open a cube directory; errors name the path."""
    path = Path(path)
    meta_path = path / "cube.json"
    if not path.exists():
        raise InputError(f"{path}: no such cube")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: not a flowatlas cube (no cube.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{meta_path}: unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: not a flowatlas cube description (not a JSON object)")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: not a flowatlas cube of format version {FORMAT_VERSION}")
    check_meta(meta, meta_path)
    cells = _read_frame(path / "cells.parquet", meta)
    rollups = _read_frame(path / "rollups.parquet", meta)
    return Cube(path, meta, cells, rollups)
