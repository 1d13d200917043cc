"""Importers for NetFlow v5/v9 and IPFIX exports as they were sent: captures and raw payloads.

``--format netflow-pcap`` reads pcap/pcapng captures of export traffic: every UDP datagram,
to any port, whose payload looks like NetFlow or IPFIX (version field and a sane header) is
decoded by :class:`flowatlas.io.netflow.NetflowDecoder`; other UDP traffic is counted and
skipped. The exporter of each record is the source address of its UDP packet.

``--format netflow-payload`` reads files that each hold one raw UDP payload (or several back
to back, as ``nc -l -u > file`` writes them), such as the test files of logstash's netflow
codec. The exporter is the option ``exporter`` (default ``0.0.0.0``). Option ``templates``
names payload files to read first for their templates only (their records are not imported
from here; import those files on their own).

Counts are raw, as exported, with ``sampling_rate`` filled in: ``flowatlas.counts = raw``.
Records that cannot be imported are quarantined (see docs/importing-netflow.md for the
reasons); packets the capture lost (cut by the snap length, fragments that never completed)
are quarantined too when what is left of them looks like NetFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from flowatlas.addresses import text_to_bytes16
from flowatlas.errors import InputError
from flowatlas.io.importers.base import (
    Batch,
    Importer,
    ImportOptions,
    quarantine_rows,
    register,
)
from flowatlas.io.netflow import DecoderStats, NetflowDecoder, looks_like_netflow
from flowatlas.io.pcap import CaptureStats, is_capture, iter_datagrams
from flowatlas.schema import COUNTS_RAW

log = logging.getLogger(__name__)

#: how many packets of a capture sniff() looks at for a NetFlow datagram
SNIFF_PACKETS = 10_000

__all__ = ["NetflowPayloadImporter", "NetflowPcapImporter"]


def _decoder(path: Path, options: ImportOptions) -> NetflowDecoder:
    return NetflowDecoder(
        str(path),
        max_held_flowsets=int(options.get("max_held_flowsets", 64)),
        max_held_bytes=int(options.get("max_held_bytes", 32 << 20)),
    )


def _log_summary(path: Path, decoder: DecoderStats, capture: CaptureStats | None) -> None:
    parts = [
        f"{decoder.flow_records} flow records in {decoder.packets - decoder.not_netflow} "
        f"NetFlow/IPFIX packets"
    ]
    if decoder.not_netflow:
        parts.append(f"{decoder.not_netflow} other UDP payloads skipped")
    if capture is not None:
        lost = capture.truncated + capture.unreadable_fragments + capture.malformed
        if lost or capture.truncated_file or capture.corrupt_records:
            parts.append(
                f"capture: {capture.truncated} truncated packets, "
                f"{capture.unreadable_fragments} unreadable fragments, "
                f"{capture.malformed} malformed, "
                f"{capture.corrupt_records} corrupt records skipped"
                + (", file cut short (quarantined)" if capture.truncated_file else "")
            )
    log.info("%s: %s", path, "; ".join(parts))


@register
class NetflowPcapImporter(Importer):
    """pcap/pcapng captures of NetFlow v5/v9/IPFIX export packets."""

    format: ClassVar[str] = "netflow-pcap"
    counts: ClassVar[str] = COUNTS_RAW
    description: ClassVar[str] = (
        "pcap/pcapng captures of NetFlow v5/v9/IPFIX exports (UDP to any port)"
    )

    def __init__(self) -> None:
        #: counts from the last file read, for reports and tests
        self.capture_stats: CaptureStats | None = None
        self.decoder_stats: DecoderStats | None = None

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        """A capture with a NetFlow/IPFIX datagram among its first packets.

        Exports may follow other traffic (pmacct's captures open with BMP over TCP), so up to
        :data:`SNIFF_PACKETS` packets of the file are looked at, not only ``head``.
        """
        if not is_capture(head):
            return False
        stats = CaptureStats()
        try:
            for _, datagram in iter_datagrams(path, stats):
                if looks_like_netflow(datagram.payload):
                    return True
                if stats.packets >= SNIFF_PACKETS:
                    break
        except InputError:
            return False
        return False

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        """Decode every NetFlow/IPFIX datagram of the capture at ``path``."""
        decoder = _decoder(path, options)
        stats = CaptureStats()
        self.capture_stats, self.decoder_stats = stats, decoder.stats
        for number, datagram in iter_datagrams(path, stats):
            decoder.feed(datagram.payload, datagram.src_ip, f"packet {number}")
            if decoder.pending_rows >= options.batch_rows:
                yield decoder.take()
        decoder.finish()
        last = decoder.take()
        lost = _capture_losses(path, stats)
        if lost.num_rows:
            quarantine = pa.concat_tables([last.quarantine, lost])
            last = Batch(last.table, quarantine, last.table.num_rows + quarantine.num_rows)
        _log_summary(path, decoder.stats, stats)
        yield last


def _capture_losses(path: Path, stats: CaptureStats) -> pa.Table:
    """Quarantine rows for what the capture lost: damage to the file itself (a corrupt record
    header skipped over, the file cut short) and UDP packets that may have been NetFlow."""
    positions, reasons, details = [], [], []
    for number, reason, detail in stats.damage:
        positions.append(f"packet {number}")
        reasons.append(reason)
        details.append(detail)
    for number, reason, head in stats.problems:
        if head is not None and not looks_like_netflow(head):
            continue  # what is left of it is not NetFlow: other traffic
        positions.append(f"packet {number}")
        reasons.append(reason)
        details.append(None if head is None else f"starts {bytes(head[:4]).hex()}")
    if stats.problems_dropped:
        positions.append("after the listed packets")
        reasons.append("more lost packets")
        details.append(f"{stats.problems_dropped} more UDP packets lost (not listed one by one)")
    return quarantine_rows(path, positions, reasons, details)


@register
class NetflowPayloadImporter(Importer):
    """Files holding raw NetFlow/IPFIX UDP payloads, one export (or several) per file."""

    format: ClassVar[str] = "netflow-payload"
    counts: ClassVar[str] = COUNTS_RAW
    description: ClassVar[str] = (
        "raw NetFlow v5/v9/IPFIX UDP payloads, one per file (option exporter=ADDRESS)"
    )

    def __init__(self) -> None:
        self.decoder_stats: DecoderStats | None = None

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        """A file that starts with a NetFlow/IPFIX header whose lengths fit the file."""
        if is_capture(head):
            return False
        version = looks_like_netflow(head)
        if not version:
            return False
        try:
            size = path.stat().st_size
        except OSError:
            size = len(head)
        if version == 5:
            return 24 + 48 * ((head[2] << 8) | head[3]) <= size
        if version == 10:
            return ((head[2] << 8) | head[3]) <= size
        return size <= 0xFFFF * 16

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        """Decode the payload(s) in ``path`` as sent by the ``exporter`` option's address."""
        exporter = _exporter(options.get("exporter", "0.0.0.0"))
        decoder = _decoder(path, options)
        self.decoder_stats = decoder.stats
        templates = options.get("templates", ())
        if isinstance(templates, str | Path):
            templates = (templates,)
        for tpl in templates:
            decoder.feed(_read(Path(tpl)), exporter, f"{tpl} packet 1")
        if templates:
            decoder.finish()
            decoder.take()  # their records belong to their own files
            decoder.stats.flow_records = 0
        decoder.feed(_read(path), exporter, "packet 1", require_netflow=True)
        decoder.finish()
        _log_summary(path, decoder.stats, None)
        yield decoder.take()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def _exporter(text: str | bytes) -> bytes:
    if isinstance(text, bytes) and len(text) == 16:
        return text
    return text_to_bytes16([str(text)], source="option exporter")[0].as_py()
