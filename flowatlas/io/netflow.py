"""A native decoder for NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) export packets.

Routers send flow records as UDP packets; v9 and IPFIX describe their records with templates
that arrive in the same stream. :class:`NetflowDecoder` keeps that state (templates, options
such as sampling rates and system init times) per exporter address and observation domain
(v9: source id) and turns each packet's data records into rows of flow schema v1.

Design, in short:

- Headers, templates and options records are parsed in plain Python: they are few.
- Data records of one template share one fixed layout, so they are decoded with
  ``np.frombuffer`` on a structured dtype: not one flowset at a time but all the flowsets of
  that layout queued since the last decode (up to ``decode_every`` records), because routers
  send few records per packet and numpy's per-call cost would dominate. Each queued record
  keeps its own packet's context (export time, uptime, exporter, the options state at its
  arrival). Templates with variable-length fields (IPFIX) are split record by record, the
  mapped fields copied into a fixed layout, and decoded the same way.
- Counters are stored raw, as exported, with ``sampling_rate`` filled in (0 = not reported or
  unsampled), so an importer built on this decoder writes ``flowatlas.counts = raw``.
- Nothing is lost silently. A record that cannot become a row goes to the quarantine table
  with a short, stable reason (see :data:`REASONS`); data that arrives before its template is
  held (a bounded number of flowsets per template) and decoded when the template arrives, and
  what is still waiting at :meth:`NetflowDecoder.finish` is quarantined as
  ``"template_never_arrived"``, one row per flowset (its records cannot be counted without
  the template). Options records (sampling, system init time) and records of templates that
  carry no IP address are not flows; they are counted in :class:`DecoderStats`.

Times: v5 and v9 ``FIRST/LAST_SWITCHED`` are router uptimes, turned into UTC with the header's
uptime and export time (the difference is taken as a signed 32-bit value, so uptime wrap and
small clock skews come out right). IPFIX absolute times (seconds, milli-, micro-, nanoseconds)
are used as they are, delta times are relative to the export time, and ``flowStart/End
SysUpTime`` are relative to ``systemInitTimeMilliseconds`` from the record itself or from an
options record. A record with no usable time takes the export time of its packet; with only
one of start and end, the other takes the same value.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from flowatlas.addresses import ADDRESS_TYPE
from flowatlas.schema import FLOW_SCHEMA_V1, TIMESTAMP

if TYPE_CHECKING:
    from flowatlas.io.importers.base import Batch

__all__ = [
    "REASONS",
    "DecoderStats",
    "NetflowDecoder",
    "looks_like_netflow",
]

# --------------------------------------------------------------------------- information elements
# IANA IPFIX information elements (the v9 field types share these numbers)
IE_BYTES = 1  # octetDeltaCount / IN_BYTES
IE_PACKETS = 2  # packetDeltaCount / IN_PKTS
IE_PROTO = 4
IE_SRC_PORT = 7
IE_SRC_V4 = 8
IE_IN_IF = 10
IE_DST_PORT = 11
IE_DST_V4 = 12
IE_OUT_IF = 14
IE_SRC_AS = 16
IE_DST_AS = 17
IE_END_UPTIME = 21  # flowEndSysUpTime / LAST_SWITCHED
IE_START_UPTIME = 22  # flowStartSysUpTime / FIRST_SWITCHED
IE_SRC_V6 = 27
IE_DST_V6 = 28
IE_SAMPLING_INTERVAL = 34
IE_SAMPLING_ALGORITHM = 35
IE_SAMPLER_ID = 48
IE_SAMPLER_MODE = 49
IE_SAMPLER_RANDOM_INTERVAL = 50
IE_BYTES_TOTAL = 85
IE_PACKETS_TOTAL = 86
IE_START_S = 150
IE_END_S = 151
IE_START_MS = 152
IE_END_MS = 153
IE_START_US = 154
IE_END_US = 155
IE_START_NS = 156
IE_END_NS = 157
IE_START_DELTA_US = 158
IE_END_DELTA_US = 159
IE_SYSTEM_INIT_MS = 160
IE_SELECTOR_ID = 302
IE_PACKET_INTERVAL = 305
IE_PACKET_SPACE = 306
IE_SAMPLING_SIZE = 309
IE_SAMPLING_POPULATION = 310

_INT = frozenset(range(1, 9))
#: the lengths each mapped information element may have (reduced-size encoding included)
_LENGTHS: dict[int, frozenset[int]] = {
    IE_BYTES: _INT,
    IE_PACKETS: _INT,
    IE_BYTES_TOTAL: _INT,
    IE_PACKETS_TOTAL: _INT,
    IE_PROTO: _INT,
    IE_SRC_PORT: _INT,
    IE_DST_PORT: _INT,
    IE_IN_IF: _INT,
    IE_OUT_IF: _INT,
    IE_SRC_AS: _INT,
    IE_DST_AS: _INT,
    IE_SRC_V4: frozenset({4}),
    IE_DST_V4: frozenset({4}),
    IE_SRC_V6: frozenset({16}),
    IE_DST_V6: frozenset({16}),
    IE_START_UPTIME: frozenset({4}),
    IE_END_UPTIME: frozenset({4}),
    IE_START_S: frozenset({4, 8}),
    IE_END_S: frozenset({4, 8}),
    IE_START_MS: frozenset({8}),
    IE_END_MS: frozenset({8}),
    IE_START_US: frozenset({8}),
    IE_END_US: frozenset({8}),
    IE_START_NS: frozenset({8}),
    IE_END_NS: frozenset({8}),
    IE_START_DELTA_US: frozenset({4}),
    IE_END_DELTA_US: frozenset({4}),
    IE_SYSTEM_INIT_MS: frozenset({8}),
    IE_SAMPLING_INTERVAL: _INT,
    IE_SAMPLING_ALGORITHM: _INT,
    IE_SAMPLER_MODE: _INT,
    IE_SAMPLER_RANDOM_INTERVAL: _INT,
    IE_SAMPLER_ID: _INT,
    IE_SELECTOR_ID: _INT,
    IE_PACKET_INTERVAL: _INT,
    IE_PACKET_SPACE: _INT,
    IE_SAMPLING_SIZE: _INT,
    IE_SAMPLING_POPULATION: _INT,
}
#: options-record fields that change the decoder's state
_OPTION_IES = frozenset(
    {
        IE_SAMPLING_INTERVAL,
        IE_SAMPLING_ALGORITHM,
        IE_SAMPLER_MODE,
        IE_SAMPLER_RANDOM_INTERVAL,
        IE_SAMPLER_ID,
        IE_SELECTOR_ID,
        IE_PACKET_INTERVAL,
        IE_PACKET_SPACE,
        IE_SAMPLING_SIZE,
        IE_SAMPLING_POPULATION,
        IE_SYSTEM_INIT_MS,
    }
)
_ADDRESS_IES = (IE_SRC_V4, IE_DST_V4, IE_SRC_V6, IE_DST_V6)

# --------------------------------------------------------------------------- quarantine reasons
R_NO_TEMPLATE = "template_never_arrived"
R_FIELD_LENGTH = "wrong_field_length"
R_RANGE = "value_out_of_range"
R_TIME_PAST = "time_before_1990"
R_TIME_FUTURE = "time_in_future"
R_RATE_ZERO = "sampling_rate_zero"
R_SET_OVERRUN = "flowset_overruns_packet"
R_SET_LENGTH = "bad_flowset_length"
R_RECORD_OVERRUN = "record_overruns_flowset"
R_TRUNCATED = "packet_truncated"
R_HEADER = "bad_header"
R_NOT_NETFLOW = "not_netflow"

#: every reason a quarantined row can carry, with what it means
REASONS: dict[str, str] = {
    R_NO_TEMPLATE: "data flowset whose template was not seen (one row per flowset)",
    R_FIELD_LENGTH: "the template gives a mapped field a length it cannot have",
    R_RANGE: "a value does not fit its flow schema column (port > 65535, ...)",
    R_TIME_PAST: "a flow time_before_1990-01-01",
    R_TIME_FUTURE: "a flow time more than a day after the packet's export time",
    R_RATE_ZERO: "a sampling rate of 0 was announced for the record",
    R_SET_OVERRUN: "the flowset's length runs past the end of the packet (rest of it)",
    R_SET_LENGTH: "a flowset header with a length below 4 (rest of the packet)",
    R_RECORD_OVERRUN: "a variable-length record runs past the end of its flowset",
    R_TRUNCATED: "v5 records announced by the header but missing from the packet",
    R_HEADER: "a NetFlow header that contradicts itself (one row per packet)",
    R_NOT_NETFLOW: "a payload that is not NetFlow v5/v9 or IPFIX (payload files only)",
}

_US = 1_000_000
MIN_TIME_US = 631_152_000 * _US  # 1990-01-01T00:00:00Z
FUTURE_SLACK_US = 86_400 * _US
_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_MAX_MS = 32_503_680_000_000  # year 3000: anything later is garbage, not a time
_U32 = 0xFFFF_FFFF
_CLAMP = 1 << 62  # 64-bit values beyond this are nonsense; clamped to fit int64 arithmetic

_V5_HEADER = struct.Struct(">HHIIIIBBH")
_V9_HEADER = struct.Struct(">HHIIII")
_IPFIX_HEADER = struct.Struct(">HHIII")
_SET_HEADER = struct.Struct(">HH")


# --------------------------------------------------------------------------- sniffing


def looks_like_netflow(payload: bytes | memoryview) -> int:
    """The NetFlow version (5, 9 or 10 for IPFIX) if ``payload`` looks like an export, else 0.

    Used to pick NetFlow out of other UDP traffic: the version field and a header that makes
    sense (v5: 1 to 30 records; v9/IPFIX: a first flowset with a valid id and length). A
    packet cut short by a capture still passes, so that its loss gets reported.
    """
    n = len(payload)
    if n < 4:
        return 0
    version = (payload[0] << 8) | payload[1]
    if version == 5:
        count = (payload[2] << 8) | payload[3]
        return 5 if n >= 24 and 1 <= count <= 30 else 0
    if version == 9:
        if n < 24:
            return 0
        sid, slen = _SET_HEADER.unpack_from(payload, 20)
        return 9 if (sid in (0, 1) or sid >= 256) and slen >= 4 else 0
    if version == 10:
        if n < 20:
            return 0
        length = (payload[2] << 8) | payload[3]
        sid, slen = _SET_HEADER.unpack_from(payload, 16)
        ok = length >= 20 and (sid in (2, 3) or sid >= 256) and 4 <= slen <= length - 16
        return 10 if ok else 0
    return 0


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class _Field:
    ie: int
    length: int  # 65535: variable length (IPFIX)
    enterprise: int = 0
    scope: bool = False


_VARLEN = 0xFFFF
_MAX_SHAPES = 4096  # distinct templates remembered for reuse


@dataclass
class _Template:
    fields: tuple[_Field, ...]
    options: bool
    fixed_length: int | None  # None when a field has variable length
    min_length: int
    layout: _Layout | None = None  # for fixed-length flow templates
    flow: bool = False  # carries an IP address: its records are flows
    #: layouts of the mapped fields of variable-length records, by (IE, length) sequence
    varlen_layouts: dict[tuple[tuple[int, int], ...], _Layout] = field(default_factory=dict)

    @classmethod
    def build(cls, fields: list[_Field], options: bool) -> _Template:
        varlen = any(f.length == _VARLEN for f in fields)
        fixed = sum(f.length for f in fields if f.length != _VARLEN)
        mapped = {f.ie for f in fields if f.enterprise == 0 and not f.scope and f.length}
        tpl = cls(
            fields=tuple(fields),
            options=options,
            fixed_length=None if varlen else fixed,
            min_length=fixed + sum(1 for f in fields if f.length == _VARLEN),
            flow=not options and any(ie in mapped for ie in _ADDRESS_IES),
        )
        if tpl.flow and not varlen:
            placed = []
            off = 0
            for f in fields:
                placed.append((f, off))
                off += f.length
            tpl.layout = _Layout.build(placed, fixed)
        return tpl


class _Layout:
    """Where the mapped fields sit in one fixed-length record, as a numpy structured dtype."""

    __slots__ = ("dtype", "error", "lengths", "record_length")

    def __init__(self) -> None:
        self.dtype: np.dtype | None = None
        self.error: str | None = None
        self.lengths: dict[int, int] = {}
        self.record_length = 0

    @classmethod
    def build(cls, placed: Iterable[tuple[_Field, int]], record_length: int) -> _Layout:
        lay = cls()
        lay.record_length = record_length
        names, formats, offsets = [], [], []
        last: dict[int, tuple[_Field, int]] = {}
        for f, off in placed:
            if f.enterprise or f.scope or f.ie not in _LENGTHS or f.length == 0:
                continue  # enterprise, unmapped and zero-length fields are skipped, not misread
            last[f.ie] = (f, off)  # a repeated field: the last one wins (inner header)
        for f, off in last.values():
            if f.length not in _LENGTHS[f.ie]:
                lay.error = lay.error or f"IE {f.ie} length {f.length}"
                continue
            lay.lengths[f.ie] = f.length
            names.append(f"f{f.ie}")
            offsets.append(off)
            if f.length in (1, 2, 4, 8) and f.ie not in _ADDRESS_IES:
                formats.append(f">u{f.length}")
            else:
                formats.append(("u1", (f.length,)))
        lay.dtype = np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": record_length}
        )
        return lay


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class _DomainState:
    """What options records told us about one exporter's observation domain.

    Immutable: an options record replaces the object, so flowsets queued for decoding keep
    the state that held when they arrived.
    """

    default_rate: int | None = None
    rates_by_id: tuple[tuple[int, int], ...] = ()
    system_init_ms: int | None = None

    def fallback_rate(self) -> int | None:
        """The rate for records that name no sampler of their own."""
        if self.default_rate is not None:
            return self.default_rate
        rates = {rate for _, rate in self.rates_by_id}
        # one sampling rate announced, and records that do not say which sampler: it is theirs
        return rates.pop() if len(rates) == 1 else None


@dataclass
class _Packet:
    """The header facts a data record's values are relative to."""

    version: int
    exporter: bytes
    domain: int
    export_us: int
    uptime_ms: int  # v5/v9 header sysUptime (unused for IPFIX)
    position: str
    v5_rate: int = -1  # v5 header sampling interval; -1: none reported


@dataclass
class _Held:
    """A data flowset waiting for its template."""

    body: bytes
    overrun: int  # bytes the flowset claimed beyond the end of the packet
    packet: _Packet
    where: str


@dataclass
class _Queue:
    """Flow records of one layout waiting to be decoded together."""

    layout: _Layout
    version: int
    bufs: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    packets: list[_Packet] = field(default_factory=list)
    states: list[_DomainState | None] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)
    indices: list[np.ndarray | None] = field(default_factory=list)
    records: int = 0


@dataclass
class DecoderStats:
    """Counts over everything fed to a decoder, for reports and tests."""

    packets: int = 0  # messages fed (a payload may hold several)
    not_netflow: int = 0  # payloads skipped because they are not NetFlow/IPFIX
    templates: int = 0  # template records read
    options_templates: int = 0
    bad_templates: int = 0  # template records that do not parse (the rest of the set is skipped)
    withdrawn_templates: int = 0
    flow_records: int = 0  # data records of flow templates (decoded or quarantined)
    options_records: int = 0  # options data records (sampling, init time, ...)
    other_records: int = 0  # data records of templates with no IP address: not flows
    held_flowsets: int = 0  # data flowsets that waited for their template
    unknown_sets: int = 0  # sets with a reserved id (2-255 in v9, 4-255 in IPFIX)
    time_fallbacks: int = 0  # flow records that carried no usable time: export time used
    trailing_bytes: int = 0  # bytes after the last message of a payload that are not NetFlow
    dirty_padding: int = 0  # data sets whose padding is not all zeros (harmless, but odd)


class _Out:
    """Decoded columns and quarantine rows waiting to be taken as a Batch."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []
        self.rows = 0
        self.q_pos: list[str] = []
        self.q_reason: list[str] = []
        self.q_detail: list[str | None] = []

    def quarantine(self, position: str, reason: str, detail: str | None = None) -> None:
        self.q_pos.append(position)
        self.q_reason.append(reason)
        self.q_detail.append(detail)


_TemplateKey = tuple[int, bytes, int, int]  # (version, exporter, domain, template id)
_DomainKey = tuple[int, bytes, int]

# --------------------------------------------------------------------------- decoder


class NetflowDecoder:
    """Stateful decoder of NetFlow v5/v9 and IPFIX packets from any number of exporters.

    Feed packets in arrival order with :meth:`feed`, take decoded rows with :meth:`take`
    whenever convenient (``pending_rows`` tells how many are waiting), and call
    :meth:`finish` at the end of the stream so that data still waiting for a template is
    quarantined rather than forgotten.

    ``max_held_flowsets`` bounds the data flowsets kept per (exporter, domain, template) while
    the template has not arrived, and ``max_held_bytes`` all of them together; the oldest are
    quarantined when a bound is hit. Flow records are decoded in bulk, ``decode_every``
    records of one layout at a time (and at :meth:`take`).
    """

    def __init__(
        self,
        source_file: str = "",
        *,
        max_held_flowsets: int = 64,
        max_held_bytes: int = 32 << 20,
        decode_every: int = 1 << 16,
    ) -> None:
        self.source_file = source_file
        self.max_held_flowsets = max_held_flowsets
        self.max_held_bytes = max_held_bytes
        self.decode_every = decode_every
        self.stats = DecoderStats()
        self._templates: dict[_TemplateKey, _Template] = {}
        self._held: dict[_TemplateKey, deque[_Held]] = {}
        self._held_bytes = 0
        self._domains: dict[_DomainKey, _DomainState] = {}
        self._shapes: dict[tuple[tuple[_Field, ...], bool], _Template] = {}
        self._queues: dict[tuple[int, int], _Queue] = {}
        self._queued = 0
        self._out = _Out()

    # ----------------------------------------------------------------- public API

    @property
    def pending_rows(self) -> int:
        """Flow records and quarantine rows not yet taken."""
        return self._out.rows + len(self._out.q_pos) + self._queued

    def feed(
        self,
        payload: bytes | bytearray | memoryview,
        exporter: bytes,
        position: str,
        *,
        require_netflow: bool = False,
    ) -> int:
        """Decode one UDP payload sent by ``exporter`` (16-byte address); return its version.

        ``position`` names the packet in quarantine rows ("packet 12"). A payload that does
        not look like NetFlow/IPFIX returns 0 and is only counted, unless ``require_netflow``
        (payload files, where every file should be an export): then it is quarantined. A
        payload holding several messages back to back is decoded message by message.
        """
        payload = bytes(payload)
        if len(exporter) != 16:
            raise ValueError("exporter must be a 16-byte address")
        version = first_version = looks_like_netflow(payload)
        if not version:
            self.stats.not_netflow += 1
            if require_netflow:
                head = payload[:2].hex() if payload else "empty"
                reason = R_HEADER if payload[:2] in (b"\0\5", b"\0\x09", b"\0\x0a") else None
                self._out.quarantine(position, reason or R_NOT_NETFLOW, f"starts {head}")
            return 0
        label = position
        rest = payload
        k = 1
        while True:
            self.stats.packets += 1
            if version == 5:
                used = self._feed_v5(rest, exporter, label)
            else:
                used = self._feed_templated(rest, exporter, label, version)
            rest = rest[used:]
            if not rest:
                break
            version = looks_like_netflow(rest)
            if not version:
                self.stats.trailing_bytes += len(rest)
                break
            k += 1
            label = f"{position} message {k}"
        if self._queued >= self.decode_every:
            self._decode_queues()
        return first_version

    def finish(self) -> None:
        """Quarantine every data flowset still waiting for its template."""
        for key in list(self._held):
            for held in self._held.pop(key):
                self._give_up(key, held, "end of input")
        self._held_bytes = 0

    def take(self) -> Batch:
        """The rows decoded and quarantined since the last take, as a :class:`Batch`."""
        # imported here: importing the importers package loads every importer, ours included
        from flowatlas.io.importers.base import Batch, empty_quarantine, quarantine_rows

        self._decode_queues()
        out = self._out
        self._out = _Out()
        table = _table(out.chunks)
        if out.q_pos:
            q = quarantine_rows(self.source_file, out.q_pos, out.q_reason, out.q_detail)
        else:
            q = empty_quarantine()
        return Batch(table=table, quarantine=q, records_read=table.num_rows + q.num_rows)

    # ----------------------------------------------------------------- NetFlow v5

    def _feed_v5(self, p: bytes, exporter: bytes, position: str) -> int:
        _, count, uptime, secs, nsecs, _, _, _, sampling = _V5_HEADER.unpack_from(p, 0)
        interval = sampling & 0x3FFF
        mode = sampling >> 14
        # the interval counts even without a mode (Juniper sends mode 0, interval 1000)
        rate = interval if interval else (0 if mode else -1)
        export_us = secs * _US + min(nsecs, 999_999_999) // 1000
        pkt = _Packet(5, exporter, 0, export_us, uptime, position, rate)
        present = min(count, (len(p) - 24) // 48)
        self.stats.flow_records += count
        if present:
            self._queue_flows(p[24 : 24 + 48 * present], _V5_LAYOUT, present, pkt, position)
        for i in range(present, count):
            self._out.quarantine(
                f"{position} record {i + 1}", R_TRUNCATED, f"{count} records announced"
            )
        return 24 + 48 * present if present == count else len(p)

    # ----------------------------------------------------------------- v9 and IPFIX

    def _feed_templated(self, p: bytes, exporter: bytes, position: str, version: int) -> int:
        """Walk the flowsets of one v9/IPFIX message; return how many bytes it took."""
        if version == 9:
            _, _, uptime, secs, _, domain = _V9_HEADER.unpack_from(p, 0)
            pos, end = 20, len(p)
            pkt = _Packet(9, exporter, domain, secs * _US, uptime, position)
        else:
            _, length, secs, _, domain = _IPFIX_HEADER.unpack_from(p, 0)
            pos, end = 16, min(length, len(p))
            pkt = _Packet(10, exporter, domain, secs * _US, 0, position)
        k = 0
        while end - pos >= 4:
            sid, slen = _SET_HEADER.unpack_from(p, pos)
            reserved = sid < 256 and sid not in ((0, 1) if version == 9 else (2, 3))
            if reserved and looks_like_netflow(p[pos:]):
                return pos  # not a set: the next message of a concatenated payload
            if slen < 4:
                if any(p[pos:end]):
                    self._out.quarantine(
                        f"{position} set {k + 1}", R_SET_LENGTH, f"set {sid} length {slen}"
                    )
                break  # an all-zero tail is padding (some exporters fill packets with zeros)
            k += 1
            where = f"{position} set {k}"
            stop = pos + slen
            body = p[pos + 4 : min(stop, end)]
            overrun = max(0, stop - end)
            if sid >= 256:
                self._data_set(pkt, sid, body, overrun, where)
            elif sid == (0 if version == 9 else 2):
                self._template_set(pkt, body, options=False)
            elif sid == (1 if version == 9 else 3):
                self._template_set(pkt, body, options=True)
            else:
                self.stats.unknown_sets += 1
            pos = stop
        return end

    def _template_set(self, pkt: _Packet, body: bytes, *, options: bool) -> None:
        """Read the templates of one template or options-template set."""
        pos = 0
        n = len(body)
        ipfix = pkt.version == 10
        while n - pos >= 4:
            scope_count = 0
            if options:
                if n - pos < 6:
                    break
                tid, count, third = struct.unpack_from(">HHH", body, pos)
                pos += 6
                if ipfix:
                    scope_count = third
                else:  # v9: scope and option lengths in bytes
                    if tid == 0 and count == 0 and third == 0:
                        break  # padding
                    if count % 4 or third % 4:
                        self.stats.bad_templates += 1
                        return
                    scope_count = count // 4
                    count = scope_count + third // 4
            else:
                tid, count = struct.unpack_from(">HH", body, pos)
                pos += 4
            if tid == 0 and count == 0:
                break  # padding
            if ipfix and count == 0 and tid in (2, 3):  # withdraw all of the domain's templates
                domain = (10, pkt.exporter, pkt.domain)
                for key in [key for key in self._templates if key[:3] == domain]:
                    del self._templates[key]
                    self.stats.withdrawn_templates += 1
                continue
            if tid < 256:
                self.stats.bad_templates += 1
                return
            key = (pkt.version, pkt.exporter, pkt.domain, tid)
            if ipfix and count == 0:  # withdrawal of one template
                self._templates.pop(key, None)
                self.stats.withdrawn_templates += 1
                continue
            fields: list[_Field] = []
            for i in range(count):
                if n - pos < 4:
                    self.stats.bad_templates += 1
                    return
                ie, length = struct.unpack_from(">HH", body, pos)
                pos += 4
                enterprise = 0
                if ipfix and ie & 0x8000:
                    if n - pos < 4:
                        self.stats.bad_templates += 1
                        return
                    (enterprise,) = struct.unpack_from(">I", body, pos)
                    pos += 4
                    ie &= 0x7FFF
                # v9 scope types (system, interface, ...) are not information elements
                fields.append(_Field(ie, length, enterprise, i < scope_count and not ipfix))
            # routers re-send the same templates all the time (and many routers share them):
            # one object per distinct template keeps its layout, so its records decode together
            shape = (tuple(fields), options)
            tpl = self._shapes.get(shape)
            if tpl is None:
                if len(self._shapes) >= _MAX_SHAPES:
                    self._shapes.clear()
                tpl = self._shapes[shape] = _Template.build(fields, options)
            self._templates[key] = tpl
            if options:
                self.stats.options_templates += 1
            else:
                self.stats.templates += 1
            for held in self._held.pop(key, ()):
                self._held_bytes -= len(held.body)
                self._decode_set(tpl, held.packet, held.body, held.overrun, held.where)

    def _data_set(self, pkt: _Packet, tid: int, body: bytes, overrun: int, where: str) -> None:
        key = (pkt.version, pkt.exporter, pkt.domain, tid)
        tpl = self._templates.get(key)
        if tpl is not None:
            self._decode_set(tpl, pkt, body, overrun, where)
            return
        # hold it until the template arrives (bounded)
        self.stats.held_flowsets += 1
        queue = self._held.setdefault(key, deque())
        queue.append(_Held(body, overrun, pkt, where))
        self._held_bytes += len(body)
        if len(queue) > self.max_held_flowsets:
            old = queue.popleft()
            self._held_bytes -= len(old.body)
            self._give_up(key, old, f"more than {self.max_held_flowsets} flowsets waiting")
            if not queue:
                del self._held[key]
        while self._held_bytes > self.max_held_bytes and self._held:
            first = next(iter(self._held))
            old = self._held[first].popleft()
            if not self._held[first]:
                del self._held[first]
            self._held_bytes -= len(old.body)
            self._give_up(first, old, "too much data waiting for templates")

    def _give_up(self, key: _TemplateKey, held: _Held, why: str) -> None:
        self._out.quarantine(held.where, R_NO_TEMPLATE, f"template {key[3]}, {why}")

    def _decode_set(
        self, tpl: _Template, pkt: _Packet, body: bytes, overrun: int, where: str
    ) -> None:
        """Decode a data set whose template is known (options sets update the state)."""
        if tpl.options or not tpl.flow:
            records = self._split_records(tpl, body, values=tpl.options)
            if tpl.options:
                for values in records:
                    self._apply_options(pkt, values)
                self.stats.options_records += len(records)
            else:
                self.stats.other_records += len(records)
            return
        if tpl.fixed_length is not None:  # never 0: a flow template has an address field
            n = len(body) // tpl.fixed_length
            self.stats.flow_records += n
            if n:
                self._queue_flows(body[: n * tpl.fixed_length], tpl.layout, n, pkt, where)
            self._leftover(body[n * tpl.fixed_length :])
        else:
            self._split_varlen(tpl, pkt, body, where)
        if overrun:
            self.stats.flow_records += 1
            self._out.quarantine(where, R_SET_OVERRUN, f"{overrun} bytes missing")

    def _leftover(self, rest: bytes) -> None:
        """Bytes after the last whole record: padding. RFC 7011 wants zeros, but Mikrotik and
        nProbe, among others, leave whatever was in the buffer; they are only counted."""
        if any(rest):
            self.stats.dirty_padding += 1

    # ----------------------------------------------------------------- record splitting

    @staticmethod
    def _record_fields(
        tpl: _Template, body: bytes, pos: int
    ) -> tuple[list[tuple[_Field, int, int]], int] | None:
        """([(field, offset, length)], next position) for the record at pos; None if cut."""
        out = []
        n = len(body)
        for f in tpl.fields:
            length = f.length
            if length == _VARLEN:
                if pos >= n:
                    return None
                length = body[pos]
                pos += 1
                if length == 255:
                    if pos + 2 > n:
                        return None
                    length = (body[pos] << 8) | body[pos + 1]
                    pos += 2
            if pos + length > n:
                return None
            out.append((f, pos, length))
            pos += length
        return out, pos

    def _split_records(self, tpl: _Template, body: bytes, *, values: bool) -> list[dict[int, int]]:
        """The records of a non-flow set, as {IE: value} for the options IEs that matter."""
        if tpl.fixed_length == 0:
            return []
        if tpl.fixed_length is not None and not values:
            return [{}] * (len(body) // tpl.fixed_length)
        records: list[dict[int, int]] = []
        pos = 0
        while len(body) - pos >= max(tpl.min_length, 1):
            got = self._record_fields(tpl, body, pos)
            if got is None:
                break  # options data cut short: no flow record is lost
            fields, pos = got
            found: dict[int, int] = {}
            if values:
                for f, off, length in fields:
                    if (
                        f.ie in _OPTION_IES
                        and not f.enterprise
                        and not f.scope
                        and 1 <= length <= 8
                    ):
                        found[f.ie] = int.from_bytes(body[off : off + length], "big")
            records.append(found)
        return records

    def _apply_options(self, pkt: _Packet, values: dict[int, int]) -> None:
        """Remember the sampling rate / system init time an options record announces."""
        if not values:
            return
        key = (pkt.version, pkt.exporter, pkt.domain)
        state = self._domains.get(key) or _DomainState()
        rate = _rate_of(values)
        if rate is not None:
            sampler = values.get(IE_SELECTOR_ID, values.get(IE_SAMPLER_ID))
            if sampler is None:
                state = replace(state, default_rate=rate)
            else:
                rates = dict(state.rates_by_id)
                rates[sampler] = rate
                state = replace(state, rates_by_id=tuple(rates.items()))
        if IE_SYSTEM_INIT_MS in values:
            state = replace(state, system_init_ms=values[IE_SYSTEM_INIT_MS])
        self._domains[key] = state

    def _split_varlen(self, tpl: _Template, pkt: _Packet, body: bytes, where: str) -> None:
        """Copy each record's mapped fields into a fixed layout and queue them for decoding."""
        groups: dict[tuple[tuple[int, int], ...], tuple[list[bytes], list[int]]] = {}
        pos = 0
        index = 0
        while pos < len(body):
            if len(body) - pos < tpl.min_length:
                self._leftover(body[pos:])
                break
            got = self._record_fields(tpl, body, pos)
            if got is None:  # a length prefix that runs past the end of the set
                self.stats.flow_records += 1
                self._out.quarantine(f"{where} record {index + 1}", R_RECORD_OVERRUN, None)
                break
            index += 1
            self.stats.flow_records += 1
            fields, pos = got
            mapped: dict[int, tuple[int, int]] = {}
            for f, off, length in fields:
                if not (f.enterprise or f.scope or f.ie not in _LENGTHS or length == 0):
                    mapped[f.ie] = (off, length)  # a repeated field: the last one wins
            key = tuple((ie, length) for ie, (_, length) in mapped.items())
            group = groups.setdefault(key, ([], []))
            group[0].append(b"".join(body[off : off + length] for off, length in mapped.values()))
            group[1].append(index)
        for key, (records, indices) in groups.items():
            layout = tpl.varlen_layouts.get(key)
            if layout is None:
                placed = []
                off = 0
                for ie, length in key:
                    placed.append((_Field(ie, length), off))
                    off += length
                layout = tpl.varlen_layouts[key] = _Layout.build(placed, off)
            self._queue_flows(
                b"".join(records), layout, len(records), pkt, where, np.asarray(indices)
            )

    # ----------------------------------------------------------------- flow records

    def _queue_flows(
        self,
        buf: bytes,
        layout: _Layout,
        n: int,
        pkt: _Packet,
        where: str,
        indices: np.ndarray | None = None,
    ) -> None:
        """Queue n fixed-layout flow records; they are decoded in bulk later."""
        # one queue per layout and version: v9 and IPFIX templates may share a layout, but
        # not the meaning of their uptime fields
        key = (id(layout), pkt.version)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(layout, pkt.version)
        queue.bufs.append(buf)
        queue.counts.append(n)
        queue.packets.append(pkt)
        queue.states.append(self._domains.get((pkt.version, pkt.exporter, pkt.domain)))
        queue.wheres.append(where)
        queue.indices.append(indices)
        queue.records += n
        self._queued += n

    def _decode_queues(self) -> None:
        for queue in self._queues.values():
            self._decode_queue(queue)
        self._queues.clear()
        self._queued = 0

    def _decode_queue(self, q: _Queue) -> None:
        """Decode the queued records of one layout at once; quarantine the bad ones."""
        n = q.records
        layout = q.layout
        counts = np.asarray(q.counts, dtype=np.int64)
        flowset = np.repeat(np.arange(len(counts)), counts)  # flowset of each record

        def positions(rows: np.ndarray) -> list[str]:
            starts = np.cumsum(counts) - counts
            out = []
            for i in rows:
                fs = int(flowset[i])
                within = int(i - starts[fs])
                idx = q.indices[fs]
                rec = int(idx[within]) if idx is not None else within + 1
                out.append(f"{q.wheres[fs]} record {rec}")
            return out

        if layout.error is not None:
            for pos in positions(np.arange(n)):
                self._out.quarantine(pos, R_FIELD_LENGTH, layout.error)
            return
        arr = None
        if layout.lengths:
            arr = np.frombuffer(b"".join(q.bufs), dtype=layout.dtype, count=n)
        lengths = layout.lengths

        def col(ie: int) -> np.ndarray | None:
            if ie not in lengths or arr is None:
                return None
            return _as_uint64(arr[f"f{ie}"])

        # the context of each record: its packet header and the options state at arrival
        def per_record(values: list[int]) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=np.int64), counts)

        ctx = _Context(
            version=q.version,
            export_us=per_record([p.export_us for p in q.packets]),
            uptime_ms=per_record([p.uptime_ms for p in q.packets]),
            v5_rate=per_record([p.v5_rate for p in q.packets]),
            states=q.states,
            state_of=flowset,
        )

        bad = np.zeros(n, dtype=np.uint8)  # index into _BAD_REASONS; 0 = good
        detail = np.full(n, None, dtype=object)  # what was wrong, for the quarantine row

        def flag(mask: np.ndarray, code: int, text: str | None) -> None:
            hit = mask & (bad == 0)
            if hit.any():
                bad[hit] = code
                detail[hit] = text

        zeros = np.zeros(n, dtype=np.uint64)

        def first(*ies: int) -> np.ndarray:
            for ie in ies:
                got = col(ie)
                if got is not None:
                    return got
            return zeros

        def bounded(values: np.ndarray, limit: int, name: str) -> np.ndarray:
            flag(values > np.uint64(limit), _BAD_RANGE, f"{name} above {limit}")
            return values

        octets = first(IE_BYTES, IE_BYTES_TOTAL)
        packets = first(IE_PACKETS, IE_PACKETS_TOTAL)
        proto = bounded(first(IE_PROTO), 0xFF, "protocol")
        sport = bounded(first(IE_SRC_PORT), 0xFFFF, "source port")
        dport = bounded(first(IE_DST_PORT), 0xFFFF, "destination port")
        in_if = bounded(first(IE_IN_IF), _U32, "input interface")
        out_if = bounded(first(IE_OUT_IF), _U32, "output interface")
        src_as = bounded(first(IE_SRC_AS), _U32, "source AS")
        dst_as = bounded(first(IE_DST_AS), _U32, "destination AS")
        src = _address(arr, lengths, IE_SRC_V4, IE_SRC_V6, n)
        dst = _address(arr, lengths, IE_DST_V4, IE_DST_V6, n)
        start, end, fallback = _times(col, ctx, flag)
        rate = _sampling(col, ctx, flag)

        good = bad == 0
        ngood = int(good.sum())
        if ngood:
            exporters = {p.exporter for p in q.packets}
            if len(exporters) == 1:
                exporter = np.broadcast_to(np.frombuffer(exporters.pop(), np.uint8), (n, 16))
            else:
                table = np.frombuffer(b"".join(p.exporter for p in q.packets), np.uint8)
                exporter = table.reshape(-1, 16)[flowset]
            chunk = {
                "time_start": start,
                "time_end": end,
                "exporter": exporter,
                "in_if": in_if,
                "out_if": out_if,
                "src_addr": src,
                "dst_addr": dst,
                "src_port": sport,
                "dst_port": dport,
                "proto": proto,
                "bytes": octets,
                "packets": packets,
                "sampling_rate": rate,
                "src_as": src_as,
                "dst_as": dst_as,
            }
            if ngood < n:
                chunk = {k: v[good] for k, v in chunk.items()}
            self._out.chunks.append(chunk)
            self._out.rows += ngood
            self.stats.time_fallbacks += int(fallback[good].sum())
        if ngood < n:
            rows = np.flatnonzero(~good)
            for i, pos in zip(rows, positions(rows), strict=True):
                code = int(bad[i])
                text = detail[i]
                if text is None and code in (_BAD_PAST, _BAD_FUTURE):
                    pick = min if code == _BAD_PAST else max
                    text = _iso(pick(int(start[i]), int(end[i])))
                self._out.quarantine(pos, _BAD_REASONS[code], text)


@dataclass
class _Context:
    """Per-record header facts for a batch of records of one layout."""

    version: int
    export_us: np.ndarray  # int64
    uptime_ms: np.ndarray  # int64 (v5/v9)
    v5_rate: np.ndarray  # int64, -1: none reported
    states: list[_DomainState | None]  # options state per flowset
    state_of: np.ndarray  # flowset index of each record

    def state_values(self, get) -> np.ndarray:
        """A per-record int64 array of get(state) (-1 where there is no state or value)."""
        values = [get(s) if s is not None else None for s in self.states]
        # announced values are up to 64 bits; past 2^62 they are nonsense that later checks
        # reject (a time after year 3000, a rate above 2^32), so clamping loses nothing
        table = np.asarray([-1 if v is None else min(v, _CLAMP) for v in values], np.int64)
        return table[self.state_of]


def _times(col, ctx: _Context, flag) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start_us, end_us, fallback) per record; flags impossible times.

    See the module docstring for which fields are used in which order.
    """
    export = ctx.export_us
    n = export.size
    init_col = col(IE_SYSTEM_INIT_MS)
    if init_col is not None:
        init_ms = init_col
        has_init = np.ones(n, dtype=bool)
    else:
        init = ctx.state_values(lambda s: s.system_init_ms)
        has_init = init >= 0
        init_ms = np.maximum(init, 0).astype(np.uint64)

    def one(ms_ie: int, us_ie: int, ns_ie: int, s_ie: int, delta_ie: int, up_ie: int):
        """(time_us, usable mask, too-big mask) from the first field the layout has."""
        got = col(ms_ie)
        if got is not None:
            big = got > np.uint64(_MAX_MS)
            return np.where(big, 0, got).astype(np.int64) * 1000, None, big
        for ie in (us_ie, ns_ie):
            got = col(ie)
            if got is not None:  # NTP format: seconds since 1900 and a binary fraction
                secs = (got >> np.uint64(32)).astype(np.int64) - _NTP_EPOCH_OFFSET
                frac = ((got & np.uint64(_U32)) * np.uint64(_US)) >> np.uint64(32)
                return secs * _US + frac.astype(np.int64), None, None
        got = col(s_ie)
        if got is not None:
            big = got > np.uint64(_MAX_MS // 1000)
            return np.where(big, 0, got).astype(np.int64) * _US, None, big
        got = col(delta_ie)
        if got is not None:
            return export - got.astype(np.int64), None, None
        got = col(up_ie)
        if got is None:
            return None, None, None
        if ctx.version in (5, 9):  # relative to the header's uptime, as signed 32-bit ms
            diff = (got.astype(np.int64) - ctx.uptime_ms + (1 << 31)) % (1 << 32) - (1 << 31)
            return export + diff * 1000, None, None
        # IPFIX: relative to systemInitTimeMilliseconds, where one is known
        base = init_ms + got
        big = (base > np.uint64(_MAX_MS)) & has_init
        return np.where(big, 0, base).astype(np.int64) * 1000, has_init, big

    start, start_ok, start_big = one(
        IE_START_MS, IE_START_US, IE_START_NS, IE_START_S, IE_START_DELTA_US, IE_START_UPTIME
    )
    end, end_ok, end_big = one(
        IE_END_MS, IE_END_US, IE_END_NS, IE_END_S, IE_END_DELTA_US, IE_END_UPTIME
    )
    all_ok = np.ones(n, dtype=bool)
    none_ok = np.zeros(n, dtype=bool)
    start_ok = none_ok if start is None else (all_ok if start_ok is None else start_ok)
    end_ok = none_ok if end is None else (all_ok if end_ok is None else end_ok)
    start = export if start is None else np.where(start_ok, start, export)
    end = export if end is None else np.where(end_ok, end, export)
    # a record with one time uses it for both; with none, the export time
    start = np.where(~start_ok & end_ok, end, start)
    end = np.where(~end_ok & start_ok, start, end)
    fallback = ~start_ok & ~end_ok
    for big in (start_big, end_big):
        if big is not None:
            flag(big, _BAD_FUTURE, "time beyond year 3000")
    past = (start < MIN_TIME_US) | (end < MIN_TIME_US)
    if past.any():
        flag(past, _BAD_PAST, None)
    future = (start > export + FUTURE_SLACK_US) | (end > export + FUTURE_SLACK_US)
    if future.any():
        flag(future, _BAD_FUTURE, None)
    return start, end, fallback


def _sampling(col, ctx: _Context, flag) -> np.ndarray:
    """The sampling rate of each record: its own fields, then its sampler, then defaults.

    -1 while unknown; 0 (quarantined) where sampling was announced with a rate of 0; stored
    as 0 when nothing was reported.
    """
    n = ctx.export_us.size
    if ctx.version == 5:
        rate = ctx.v5_rate.copy()
    else:
        rate = np.full(n, -1, dtype=np.int64)

        def fill(values: np.ndarray | None) -> None:
            if values is not None:
                unset = rate < 0
                rate[unset] = np.minimum(values[unset], np.uint64(_CLAMP)).astype(np.int64)

        mode = col(IE_SAMPLING_ALGORITHM)
        if mode is None:
            mode = col(IE_SAMPLER_MODE)
        for ie in (IE_SAMPLING_INTERVAL, IE_SAMPLER_RANDOM_INTERVAL):
            values = col(ie)
            if values is not None and mode is not None:
                # an interval of 0 with sampling mode 0 says "not sampled", not "rate 0"
                values = np.where((values == 0) & (mode == 0), np.uint64(1), values)
            fill(values)
        interval, space = col(IE_PACKET_INTERVAL), col(IE_PACKET_SPACE)
        if interval is not None and space is not None:
            interval = np.minimum(interval, np.uint64(_CLAMP))  # no wrap-around in the sum
            space = np.minimum(space, np.uint64(_CLAMP))
            fill(np.where(interval > 0, (interval + space) // np.maximum(interval, 1), 0))
        size, population = col(IE_SAMPLING_SIZE), col(IE_SAMPLING_POPULATION)
        if size is not None and population is not None:
            fill(np.where(size > 0, population // np.maximum(size, 1), 0))
        ids = col(IE_SELECTOR_ID)
        if ids is None:
            ids = col(IE_SAMPLER_ID)
        if ids is not None:
            for k, state in enumerate(ctx.states):
                if state is None or not state.rates_by_id:
                    continue
                mine = (ctx.state_of == k) & (rate < 0)
                for sampler, known in state.rates_by_id:
                    rate[mine & (ids == np.uint64(sampler))] = min(known, _CLAMP)
        default = ctx.state_values(_DomainState.fallback_rate)
        rate = np.where(rate < 0, default, rate)
    flag(rate == 0, _BAD_RATE_ZERO, None)
    flag(rate > _U32, _BAD_RANGE, "sampling rate above 4294967295")
    return np.clip(rate, 0, _U32).astype(np.uint32)


_BAD_REASONS = (None, R_RANGE, R_TIME_PAST, R_TIME_FUTURE, R_RATE_ZERO)
_BAD_RANGE, _BAD_PAST, _BAD_FUTURE, _BAD_RATE_ZERO = 1, 2, 3, 4


def _iso(us: int) -> str:
    """A time in microseconds as ISO 8601 text, for quarantine details."""
    return str(np.datetime64(us, "us")) + "Z"


def _rate_of(values: dict[int, int]) -> int | None:
    """The 1-in-N rate an options record announces, or None if it announces none.

    0 means sampling was announced with an impossible rate, and 1 that sampling is off
    (an interval of 0 with a sampling algorithm / sampler mode of 0).
    """
    mode = values.get(IE_SAMPLING_ALGORITHM, values.get(IE_SAMPLER_MODE))
    for ie in (IE_SAMPLING_INTERVAL, IE_SAMPLER_RANDOM_INTERVAL):
        if ie in values:
            return 1 if values[ie] == 0 and mode == 0 else values[ie]
    if IE_PACKET_INTERVAL in values and IE_PACKET_SPACE in values:
        interval = values[IE_PACKET_INTERVAL]
        return (interval + values[IE_PACKET_SPACE]) // interval if interval else 0
    if IE_SAMPLING_SIZE in values and IE_SAMPLING_POPULATION in values:
        size = values[IE_SAMPLING_SIZE]
        return values[IE_SAMPLING_POPULATION] // size if size else 0
    return None


def _as_uint64(values: np.ndarray) -> np.ndarray:
    """Big-endian unsigned integers of any width (1-8 bytes) as native uint64."""
    if values.ndim == 1:
        return values.astype(np.uint64)
    out = np.zeros(values.shape[0], dtype=np.uint64)
    for k in range(values.shape[1]):
        out = (out << np.uint64(8)) | values[:, k].astype(np.uint64)
    return out


def _address(arr, lengths: dict[int, int], v4_ie: int, v6_ie: int, n: int) -> np.ndarray:
    """(n, 16) uint8 addresses, IPv4 mapped; IPv6 where a record has only IPv6."""
    out = np.zeros((n, 16), dtype=np.uint8)
    if arr is None:
        return out
    has_v4 = v4_ie in lengths
    if v6_ie in lengths:
        out[:] = arr[f"f{v6_ie}"]
    if has_v4:
        v4 = arr[f"f{v4_ie}"]
        if v6_ie not in lengths:  # IPv4 only: every record mapped, no mask to apply
            out[:, 10:12] = 0xFF
            out[:, 12:] = v4
            return out
        # both in one template: IPv4 unless it is empty and IPv6 is not
        use = v4.any(axis=1) | ~out.any(axis=1)
        mapped = np.zeros((n, 16), dtype=np.uint8)
        mapped[:, 10:12] = 0xFF
        mapped[:, 12:] = v4
        out[use] = mapped[use]
    return out


_V5_LAYOUT = _Layout.build(
    [
        (_Field(IE_SRC_V4, 4), 0),
        (_Field(IE_DST_V4, 4), 4),
        (_Field(IE_IN_IF, 2), 12),
        (_Field(IE_OUT_IF, 2), 14),
        (_Field(IE_PACKETS, 4), 16),
        (_Field(IE_BYTES, 4), 20),
        (_Field(IE_START_UPTIME, 4), 24),
        (_Field(IE_END_UPTIME, 4), 28),
        (_Field(IE_SRC_PORT, 2), 32),
        (_Field(IE_DST_PORT, 2), 34),
        (_Field(IE_PROTO, 1), 38),
        (_Field(IE_SRC_AS, 2), 40),
        (_Field(IE_DST_AS, 2), 42),
    ],
    48,
)

_NUMPY_TYPES: dict[str, Any] = {
    "in_if": np.uint32,
    "out_if": np.uint32,
    "src_port": np.uint16,
    "dst_port": np.uint16,
    "proto": np.uint8,
    "bytes": np.uint64,
    "packets": np.uint64,
    "sampling_rate": np.uint32,
    "src_as": np.uint32,
    "dst_as": np.uint32,
}


def _table(chunks: list[dict[str, np.ndarray]]) -> pa.Table:
    """Join decoded chunks into one table in flow schema v1."""
    if not chunks:
        return FLOW_SCHEMA_V1.empty_table()
    columns: dict[str, pa.Array] = {}
    for name in FLOW_SCHEMA_V1.names:
        parts = [c[name] for c in chunks]
        values = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if name in ("time_start", "time_end"):
            columns[name] = pa.array(np.asarray(values, dtype=np.int64), type=TIMESTAMP)
        elif name in ("exporter", "src_addr", "dst_addr"):
            raw = np.ascontiguousarray(values, dtype=np.uint8)
            columns[name] = pa.FixedSizeBinaryArray.from_buffers(
                ADDRESS_TYPE, raw.shape[0], [None, pa.py_buffer(raw)]
            )
        else:
            columns[name] = pa.array(values.astype(_NUMPY_TYPES[name], copy=False))
    return pa.table(columns, schema=FLOW_SCHEMA_V1)
