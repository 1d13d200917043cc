"""What every importer provides, and the registry ``flowatlas import`` picks from.

An importer turns one source file (an nfcapd file, a goflow2 JSON log, a pcap of NetFlow
exports, a CSV, ...) into batches of flow schema v1 rows. Rows it cannot turn into records
are not dropped: they go into the batch's quarantine table with the file, the position and a
reason, so that records read = records written + records quarantined, always.

Every batch of every importer then passes :func:`screen_counters` on its way into the archive
(``flowatlas import`` calls it; a new importer gets it for free): records whose counters
cannot be true (more packets than bytes, more bytes than packets x 65,535, a rate above the
configured line rate) are moved to the quarantine with their reason. Bit rot and broken
exporters produce such records; one of them would outweigh a month of real traffic.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from flowatlas.config import DEFAULT_MAX_LINE_RATE_GBPS
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


#: the most bytes one IP packet can carry (the IPv4 total length, the IPv6 payload length)
MAX_PACKET_BYTES = 65_535
#: a flow record lasting less than this counts as lasting this long for its rate (exporters
#: round times to milliseconds, so a one-packet flow often lasts "0" ms)
RATE_MIN_DURATION_US = 1_000

R_PACKETS_OVER_BYTES = "more_packets_than_bytes"
R_BYTES_PER_PACKET = "over_65535_bytes_per_packet"
R_LINE_RATE = "above_line_rate"
#: the counter screen's quarantine reasons, with what they mean
COUNTER_REASONS: dict[str, str] = {
    R_PACKETS_OVER_BYTES: "more packets than bytes (every packet carries at least one byte)",
    R_BYTES_PER_PACKET: "more bytes than packets x 65,535 (the largest IP packet)",
    R_LINE_RATE: "bytes x 8 / duration (at least 1 ms) above [import] max_line_rate_gbps",
}


def screen_counters(
    batch: Batch,
    source_file: str | os.PathLike[str],
    *,
    first_record: int = 1,
    max_line_rate_gbps: float = DEFAULT_MAX_LINE_RATE_GBPS,
) -> Batch:
    """Move records with impossible counters from ``batch.table`` to its quarantine.

    Counters are checked as exported (before any sampling correction): ``packets > bytes``
    and ``bytes > packets x 65,535`` where both are counted, and a rate ``bytes x 8 /
    duration`` above ``max_line_rate_gbps`` (a duration under a millisecond, zero or negative
    counts as one millisecond, so a flow without a duration is judged, never divided by 0).
    A zero counter is taken as not exported, not as impossible: Cisco ASA (NSEL) records,
    for one, carry bytes and no packet count.
    ``first_record`` is the number of the batch's first record among the file's good ones:
    a quarantined record's position is ``decoded record N``, and its detail gives its
    counters, duration and addresses. Returns ``batch`` itself when every record passes.
    """
    table = batch.table
    if table.num_rows == 0:
        return batch
    nbytes = table.column("bytes").to_numpy().astype(np.uint64, copy=False)
    npkts = table.column("packets").to_numpy().astype(np.uint64, copy=False)
    start = table.column("time_start").cast(pa.int64()).to_numpy()
    end = table.column("time_end").cast(pa.int64()).to_numpy()
    duration = np.maximum(end - start, RATE_MIN_DURATION_US).astype(np.float64)
    over_bytes = (nbytes > 0) & (npkts > nbytes)
    # bytes > packets x 65,535, without the product (it could overflow 64 bits)
    div = np.maximum(npkts, 1)
    quotient = nbytes // div
    per_packet = (npkts > 0) & (
        (quotient > MAX_PACKET_BYTES) | ((quotient == MAX_PACKET_BYTES) & (nbytes % div > 0))
    )
    rate = nbytes.astype(np.float64) * 8e6 / duration
    too_fast = rate > float(max_line_rate_gbps) * 1e9
    bad = over_bytes | per_packet | too_fast
    if not bad.any():
        return batch
    rows = np.flatnonzero(bad)
    reason = np.where(
        over_bytes[rows],
        R_PACKETS_OVER_BYTES,
        np.where(per_packet[rows], R_BYTES_PER_PACKET, R_LINE_RATE),
    )
    from flowatlas.addresses import format_addresses

    bad_t = table.take(pa.array(rows))
    src = format_addresses(bad_t.column("src_addr"))
    dst = format_addresses(bad_t.column("dst_addr"))
    details = [
        f"bytes {int(nbytes[r])}, packets {int(npkts[r])}, "
        f"{(int(end[r]) - int(start[r])) / 1000:g} ms, {s} -> {d}, "
        f"{rate[r] / 1e9:.4g} Gbit/s"
        for r, s, d in zip(rows.tolist(), src, dst, strict=True)
    ]
    positions = [f"decoded record {first_record + r}" for r in rows.tolist()]
    moved = quarantine_rows(source_file, positions, reason.tolist(), details)
    keep = table.filter(pa.array(~bad))
    quarantine = pa.concat_tables([batch.quarantine.cast(QUARANTINE_SCHEMA), moved])
    return Batch(keep, quarantine, batch.records_read)


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
