"""Archive flow schema v1: the one shape every flow record takes on disk.

Importers (nfcapd, goflow2, pmacct, CSV) and the synthetic generator all write this schema;
``flowatlas build`` reads nothing else. Addresses are 16-byte values with IPv4 stored
IPv4-mapped (see :mod:`flowatlas.addresses`). Counters are stored as exported; whether they
still need multiplying by ``sampling_rate`` is recorded per file in the Parquet key-value
metadata under ``flowatlas.counts`` (``raw``: multiply; ``scaled``: already multiplied, as
nfdump writes them). See docs/archive-schema.md.
"""

from __future__ import annotations

import pyarrow as pa

from flowatlas.errors import InputError

SCHEMA_VERSION = 1
TIMESTAMP = pa.timestamp("us", tz="UTC")
ADDRESS = pa.binary(16)

#: metadata keys written into every archive file
META_VERSION = b"flowatlas.schema_version"
META_COUNTS = b"flowatlas.counts"
META_SOURCE = b"flowatlas.source"
COUNTS_RAW = "raw"
COUNTS_SCALED = "scaled"

_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("time_start", TIMESTAMP, "first packet of the flow, UTC"),
    ("time_end", TIMESTAMP, "last packet of the flow, UTC"),
    ("exporter", ADDRESS, "address of the router that exported the record"),
    ("in_if", pa.uint32(), "input interface index (SNMP ifIndex) on the exporter"),
    ("out_if", pa.uint32(), "output interface index on the exporter"),
    ("src_addr", ADDRESS, "source address, IPv4-mapped for IPv4"),
    ("dst_addr", ADDRESS, "destination address, IPv4-mapped for IPv4"),
    ("src_port", pa.uint16(), "source transport port (0 where none)"),
    ("dst_port", pa.uint16(), "destination transport port (0 where none)"),
    ("proto", pa.uint8(), "IP protocol number"),
    ("bytes", pa.uint64(), "bytes as exported (see flowatlas.counts)"),
    ("packets", pa.uint64(), "packets as exported (see flowatlas.counts)"),
    ("sampling_rate", pa.uint32(), "1 in N packet sampling; 0 or 1 = unsampled"),
    ("src_as", pa.uint32(), "source AS as exported; 0 = unknown"),
    ("dst_as", pa.uint32(), "destination AS as exported; 0 = unknown"),
]

FLOW_SCHEMA_V1: pa.Schema = pa.schema(
    [pa.field(name, typ, nullable=False, metadata={"doc": doc}) for name, typ, doc in _FIELDS]
)
COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _FIELDS)


def file_metadata(counts: str = COUNTS_RAW, source: str = "unknown") -> dict[bytes, bytes]:
    """The key-value metadata every archive file carries."""
    if counts not in (COUNTS_RAW, COUNTS_SCALED):
        raise ValueError(f"counts must be {COUNTS_RAW!r} or {COUNTS_SCALED!r}, not {counts!r}")
    return {
        META_VERSION: str(SCHEMA_VERSION).encode(),
        META_COUNTS: counts.encode(),
        META_SOURCE: source.encode(),
    }


def schema_with_metadata(counts: str = COUNTS_RAW, source: str = "unknown") -> pa.Schema:
    """FLOW_SCHEMA_V1 carrying the file metadata for ``counts`` and ``source``."""
    return FLOW_SCHEMA_V1.with_metadata(file_metadata(counts, source))


def check_schema(schema: pa.Schema, where: str) -> str:
    """Check that ``schema`` holds flow schema v1; return its counts mode.

    Extra columns may ride along. A missing column, a column of another type or an unknown
    schema version raises an :class:`InputError` naming ``where`` and the column.
    """
    meta = schema.metadata or {}
    version = meta.get(META_VERSION)
    if version is not None and version != str(SCHEMA_VERSION).encode():
        raise InputError(
            f"{where}: archive schema version {version.decode(errors='replace')} is not "
            f"supported (this flowatlas reads version {SCHEMA_VERSION})"
        )
    for field in FLOW_SCHEMA_V1:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise InputError(f"{where}: not a flow archive file: column {field.name!r} is missing")
        got = schema.field(idx).type
        if not got.equals(field.type):
            raise InputError(
                f"{where}: column {field.name!r} has type {got}, flow schema v1 wants {field.type}"
            )
    counts = meta.get(META_COUNTS, COUNTS_RAW.encode()).decode(errors="replace")
    if counts not in (COUNTS_RAW, COUNTS_SCALED):
        raise InputError(f"{where}: unknown flowatlas.counts value {counts!r}")
    return counts


def empty_table() -> pa.Table:
    """A zero-row table in flow schema v1."""
    return FLOW_SCHEMA_V1.empty_table()
