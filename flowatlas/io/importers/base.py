"""What every importer provides, and the registry ``flowatlas import`` picks from.

An importer turns one source file (an nfcapd file, a goflow2 JSON log, a pcap of NetFlow
exports, a CSV, ...) into batches of flow schema v1 rows. Rows it cannot turn into records
are not dropped: they go into the batch's quarantine table with the file, the position and a
reason, so that records read = records written + records quarantined, always.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from flowatlas.errors import InputError

#: the quarantine table every importer writes rejected rows into
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("position", pa.string(), nullable=False),  # "row 17", "packet 3 record 2"
        pa.field("reason", pa.string(), nullable=False),  # short, stable, countable
        pa.field("detail", pa.string()),  # the offending text or value, truncated
    ]
)


def empty_quarantine() -> pa.Table:
    """A zero-row quarantine table."""
    return QUARANTINE_SCHEMA.empty_table()


def quarantine_rows(
    source_file: str | os.PathLike[str],
    positions: list[str],
    reasons: list[str],
    details: list[str | None] | None = None,
) -> pa.Table:
    """Build a quarantine table for rows of ``source_file``."""
    n = len(positions)
    if len(reasons) != n or (details is not None and len(details) != n):
        raise ValueError("positions, reasons and details must have the same length")
    return pa.table(
        {
            "source_file": pa.array([str(source_file)] * n, pa.string()),
            "position": pa.array(positions, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details if details is not None else [None] * n, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


@dataclass
class Batch:
    """Some records of one source file: the good ones in flow schema v1, the rest quarantined.

    ``records_read`` counts what the source held for this batch (rows, records in packets);
    it must equal ``table.num_rows + quarantine.num_rows``.
    """

    table: pa.Table
    quarantine: pa.Table = field(default_factory=empty_quarantine)
    records_read: int | None = None

    def __post_init__(self) -> None:
        if self.records_read is None:
            self.records_read = self.table.num_rows + self.quarantine.num_rows
        elif self.records_read != self.table.num_rows + self.quarantine.num_rows:
            raise AssertionError(
                f"importer accounting broken: read {self.records_read}, wrote "
                f"{self.table.num_rows}, quarantined {self.quarantine.num_rows}"
            )


@dataclass(frozen=True)
class ImportOptions:
    """Options common to importers; ``extra`` holds format-specific ones (e.g. CSV mapping)."""

    batch_rows: int = 1 << 20
    extra: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.extra).get(key, default)


class Importer(abc.ABC):
    """One source format. Subclasses set ``format`` and ``counts`` and implement read()."""

    #: the name used with --format
    format: ClassVar[str]
    #: COUNTS_RAW if bytes/packets must still be multiplied by sampling_rate, else COUNTS_SCALED
    counts: ClassVar[str]
    #: one line for ``flowatlas import --help``
    description: ClassVar[str] = ""
    #: order in which --format auto asks importers (lower first): binary formats with magic
    #: numbers before text formats, the generic CSV reader last
    sniff_priority: ClassVar[int] = 50

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        """True if the file (its first bytes in ``head``) looks like this format."""
        return False

    @classmethod
    def preflight(cls, options: ImportOptions) -> None:
        """Check, once before any file, what this format needs (a tool, an option)."""
        return None

    def counts_for(self, options: ImportOptions) -> str:
        """The counts mode this importer writes with these options (default: ``counts``)."""
        return type(self).counts

    @abc.abstractmethod
    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        """Yield batches of records from ``path``; raise InputError for an unusable file."""


_REGISTRY: dict[str, type[Importer]] = {}


def register(cls: type[Importer]) -> type[Importer]:
    """Class decorator: make an importer available to ``flowatlas import --format``."""
    if cls.format in _REGISTRY and _REGISTRY[cls.format] is not cls:
        raise ValueError(f"importer format {cls.format!r} registered twice")
    _REGISTRY[cls.format] = cls
    return cls


def importers() -> dict[str, type[Importer]]:
    """All registered importers by format name (loads the built-in ones)."""
    from flowatlas.io.importers import load_builtin

    load_builtin()
    return dict(_REGISTRY)


def get_importer(fmt: str) -> type[Importer]:
    """The importer for ``fmt``; an unknown format is an error listing the known ones."""
    known = importers()
    if fmt not in known:
        raise InputError(f"unknown import format {fmt!r} (known: {', '.join(sorted(known))})")
    return known[fmt]


def detect_format(path: Path) -> str:
    """The format of ``path`` by content (--format auto); an error names the file if none fits."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    for name, cls in sorted(importers().items(), key=lambda kv: (kv[1].sniff_priority, kv[0])):
        if cls.sniff(path, head):
            return name
    raise InputError(f"{path}: cannot tell the format; give --format")
