"""pmacct output: the print plugin's CSV and JSON, and nfacctd/sfacctd JSON lines (Kafka dumps).

pmacct names its fields ("primitives") the same way in every output; JSON uses lower-case keys
(``ip_src``, ``port_dst``, ``ip_proto``, ``peer_ip_src``, ``iface_in``, ``as_src``,
``timestamp_start``, ...), the print plugin's CSV header the upper-case names (``SRC_IP``,
``DST_PORT``, ``PROTOCOL``, ``PEER_SRC_IP``, ``IN_IFACE``, ``SRC_AS``, ``TIMESTAMP_START``,
...). Which primitives exist depends on the ``aggregate`` setting; addresses, bytes and a time
are needed.

Time: ``timestamp_start``, else ``timestamp_arrival``, else ``stamp_inserted`` (the start of
the print plugin's time bin); a record with none of them is quarantined as ``missing_time``.
Times may be epoch text (``timestamps_since_epoch: true``) or ``YYYY-MM-DD HH:MM:SS[.us]``,
read as UTC (set ``timestamps_utc: true`` in pmacct).

Counts: pmacct multiplies bytes and packets by the sampling rate only with
``nfacctd_renormalize: true`` / ``sfacctd_renormalize: true``. The default here follows
pmacct's default (no renormalisation): counts are ``raw`` and ``sampling_rate`` (if
aggregated) is kept; for renormalised output give ``--counts scaled``. The ``flows`` primitive
(a count of aggregated flows) has no place in flow schema v1 and is not kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from flowatlas.errors import ConfigError, InputError
from flowatlas.io.importers.base import Batch, Importer, ImportOptions, register
from flowatlas.io.importers.csv import (
    BatchAccumulator,
    ColumnConverter,
    CsvRowReader,
    csv_header,
    first_line,
    invalid_lines_quarantine,
    open_text_stream,
)
from flowatlas.io.importers.goflow2 import (
    column,
    columns_of,
    convert_chunks,
    json_chunks_fast,
    pick,
    plain_column,
)
from flowatlas.schema import COUNTS_RAW, COUNTS_SCALED

#: v1 field -> pmacct primitive (JSON key)
PRIMITIVES: dict[str, str] = {
    "src_addr": "ip_src",
    "dst_addr": "ip_dst",
    "src_port": "port_src",
    "dst_port": "port_dst",
    "proto": "ip_proto",
    "bytes": "bytes",
    "packets": "packets",
    "exporter": "peer_ip_src",
    "in_if": "iface_in",
    "out_if": "iface_out",
    "src_as": "as_src",
    "dst_as": "as_dst",
    "sampling_rate": "sampling_rate",
    "time_end": "timestamp_end",
}
#: where time_start comes from, in order of preference
START_TIMES: tuple[str, ...] = ("timestamp_start", "timestamp_arrival", "stamp_inserted")

#: print plugin CSV header (upper case) -> JSON key
CSV_NAMES: dict[str, str] = {
    "SRC_IP": "ip_src",
    "DST_IP": "ip_dst",
    "SRC_PORT": "port_src",
    "DST_PORT": "port_dst",
    "PROTOCOL": "ip_proto",
    "BYTES": "bytes",
    "PACKETS": "packets",
    "PEER_SRC_IP": "peer_ip_src",
    "IN_IFACE": "iface_in",
    "OUT_IFACE": "iface_out",
    "SRC_AS": "as_src",
    "DST_AS": "as_dst",
    "SAMPLING_RATE": "sampling_rate",
    "TIMESTAMP_START": "timestamp_start",
    "TIMESTAMP_END": "timestamp_end",
    "TIMESTAMP_ARRIVAL": "timestamp_arrival",
    "STAMP_INSERTED": "stamp_inserted",
}


def _unset_time_to_null(arr: pa.Array) -> pa.Array:
    """pmacct prints unset times as 0, 0.000000 or 0000-00-00 ...: make them null (as text)."""
    text = arr if pa.types.is_string(arr.type) else arr.cast(pa.string())
    text = pc.utf8_trim_whitespace(text)
    unset = pc.or_(
        pc.match_substring_regex(text, r"^(0+(\.0*)?|0000-00-00.*|)$"),
        pc.is_null(text),
    )
    return pc.if_else(unset, pa.scalar(None, pa.string()), text)


def pmacct_columns(raw: dict[str, pa.Array]) -> dict[str, pa.Array]:
    """Columns named after v1 fields from columns named after pmacct primitives."""
    cols = {f: raw[p] for f, p in PRIMITIVES.items() if p in raw}
    starts = [_unset_time_to_null(raw[k]) for k in START_TIMES if k in raw]
    if starts:
        cols["time_start"] = pc.coalesce(*starts) if len(starts) > 1 else starts[0]
    if "time_end" in cols:
        cols["time_end"] = _unset_time_to_null(cols["time_end"])
    return cols


def _counts(options: ImportOptions) -> str:
    counts = options.get("counts") or COUNTS_RAW
    if counts not in (COUNTS_RAW, COUNTS_SCALED):
        raise ConfigError(f"--counts {counts!r}: use {COUNTS_RAW!r} or {COUNTS_SCALED!r}")
    return counts


def _converter(path: Path, options: ImportOptions) -> ColumnConverter:
    return ColumnConverter(str(path), now_us=options.get("now_us") or time.time_ns() // 1000)


_JSON_KEYS = (*PRIMITIVES.values(), *START_TIMES)


def _json_columns(objects: list[dict[str, Any]]) -> dict[str, pa.Array]:
    raw = {}
    for key in _JSON_KEYS:
        values = pick(objects, (key,))
        if any(v is not None for v in values):
            raw[key] = column(values)
    cols = pmacct_columns(raw)
    if "time_start" not in cols:  # no time primitive at all: every record lacks one
        cols["time_start"] = pa.nulls(len(objects), pa.string())
    return cols


def _table_columns(table: pa.Table) -> dict[str, pa.Array]:
    """:func:`_json_columns` of a ``pyarrow.json`` table (or ``NotPlain``)."""
    raw = {}
    for key in _JSON_KEYS:
        if key in table.column_names:
            col = plain_column(table, key)
            if col.null_count < len(col):
                raw[key] = col
    cols = pmacct_columns(raw)
    if "time_start" not in cols:
        cols["time_start"] = pa.nulls(table.num_rows, pa.string())
    return cols


@register
class PmacctJsonImporter(Importer):
    """pmacct JSON: print plugin ``print_output: json`` and nfacctd/sfacctd Kafka JSON lines."""

    format: ClassVar[str] = "pmacct-json"
    counts: ClassVar[str] = COUNTS_RAW
    description: ClassVar[str] = "pmacct JSON lines (print plugin, Kafka)"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        line = first_line(head)
        if line is None or not line.startswith("{"):
            return False
        return '"ip_src"' in line or '"peer_ip_src"' in line

    def counts_for(self, options: ImportOptions) -> str:
        """``raw`` (pmacct's default, no renormalisation) or ``scaled`` with --counts."""
        return _counts(options)

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        converter = _converter(path, options)
        yield from convert_chunks(
            json_chunks_fast(path, _table_columns),
            columns_of(_json_columns),
            converter,
            options.batch_rows,
        )


@register
class PmacctCsvImporter(Importer):
    """pmacct print plugin CSV (``print_output: csv``), header line included."""

    format: ClassVar[str] = "pmacct-csv"
    counts: ClassVar[str] = COUNTS_RAW
    description: ClassVar[str] = "pmacct print plugin CSV"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        line = first_line(head)
        if line is None:
            return False
        names = {c.strip().upper() for c in line.split(",")}
        return {"SRC_IP", "DST_IP", "BYTES"} <= names

    def counts_for(self, options: ImportOptions) -> str:
        """``raw`` (pmacct's default, no renormalisation) or ``scaled`` with --counts."""
        return _counts(options)

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        delimiter = options.get("delimiter") or ","
        header = csv_header(path, delimiter)
        by_key = {}
        for name in header:
            key = CSV_NAMES.get(name.strip().upper())
            if key and key not in by_key:
                by_key[key] = name
        needed = {"ip_src", "ip_dst", "bytes"}
        if not needed <= set(by_key):
            raise InputError(
                f"{path}: not pmacct CSV: no {', '.join(sorted(needed - set(by_key)))} column "
                f"(header: {', '.join(header[:12])})"
            )
        converter = _converter(path, options)
        reader = CsvRowReader(
            open_text_stream(path), str(path), columns=list(by_key.values()), delimiter=delimiter
        )
        acc = BatchAccumulator(options.batch_rows)
        for block, numbers, invalid in reader:
            raw = {key: block.column(name) for key, name in by_key.items()}
            cols = pmacct_columns(raw)
            if "time_start" not in cols:
                cols["time_start"] = pa.nulls(block.num_rows, pa.string())
            extra = invalid_lines_quarantine(str(path), invalid, label="row")
            batch = converter.convert(cols, numbers, label="row", extra_quarantine=extra)
            yield from acc.add(batch)
        yield from acc.flush()
