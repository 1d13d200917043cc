"""UDP datagrams out of packet captures (classic pcap and pcapng), for flow exports on the wire.

Routers export NetFlow/IPFIX over UDP, and captures of that traffic (tcpdump, Wireshark,
pmacct's test suite) are the most common way such exports are shared. This module reads just
enough of a capture to hand the UDP payloads to a decoder: no dependency beyond the standard
library, and nothing that is not needed for that job.

Supported:

- classic pcap in both byte orders, microsecond and nanosecond resolution;
- pcapng: several sections, per-interface link types, ``if_tsresol`` and ``if_tsoffset``;
  Enhanced, Simple and (obsolete) Packet blocks;
- link types Ethernet (with 802.1Q / 802.1ad / QinQ tags), Linux cooked SLL and SLL2,
  raw IPv4/IPv6 and BSD null/loopback;
- IPv4 and IPv6 (hop-by-hop, routing, destination-options, AH and fragment headers), UDP only;
- IPv4 and IPv6 fragments are reassembled when the capture holds all of them.

A damaged or cut-short capture never raises once its header has been recognised: packets cut
by the snap length are still yielded with what was captured (the decoder sees a short payload
and reports what is missing), and everything that could not be yielded is counted in
:class:`CaptureStats`, with the packet numbers of UDP packets that were lost. A corrupt packet
record header (a length the file cannot hold) does not end the capture: the reader skips to
the next run of plausible record headers and goes on, and the damage (where, how many bytes
skipped, a file cut short) is listed in :attr:`CaptureStats.damage` so that an importer can
quarantine it. Only a file that is not a capture at all raises
:class:`~flowatlas.errors.InputError`.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np

from flowatlas import kernel_cache
from flowatlas.errors import InputError

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

__all__ = [
    "CaptureStats",
    "UdpDatagram",
    "is_capture",
    "iter_datagrams",
    "read_udp",
    "write_pcap",
]

# classic pcap magic numbers, as read little-endian
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D

# link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_DLT_RAW_ALIASES = (12, 14)  # DLT_RAW on some BSDs / OpenBSD

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = (0x8100, 0x88A8, 0x9100, 0x9200)

_IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
_PROTO_UDP = 17
_MAX_RECORD = 1 << 26  # a packet record larger than this is corruption, not data
#: a packet longer than this on the wire is corruption (jumbo frames and offloaded segments
#: of up to 256 KiB are real)
_MAX_WIRE = 1 << 18
#: how far (seconds) a record's time may lie from the last good one for the reader to take it
#: as the next record after a corrupt header
_RESYNC_SECONDS = 7 * 86_400
#: bytes looked at per step while searching for the next record after a corrupt header
_RESYNC_WINDOW = 1 << 20

#: at most this many datagrams wait for their missing fragments
MAX_PENDING_DATAGRAMS = 1024
#: at most this many fragments make one datagram
MAX_FRAGMENTS = 128
#: at most this many lost-packet notes are kept in CaptureStats.problems
MAX_PROBLEMS = 10_000

#: reasons for damage to the capture file (see CaptureStats.damage)
R_CORRUPT_RECORD = "corrupt capture record"
R_CUT_SHORT = "capture cut short"

_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
_HEAD_BYTES = 64  # how much of a lost payload CaptureStats.problems keeps


class UdpDatagram(NamedTuple):
    """One UDP datagram: when it was captured, who sent it, and its payload."""

    timestamp_us: int  # capture time, microseconds since the Unix epoch (UTC)
    src_ip: bytes  # 16 bytes, IPv4 as IPv4-mapped IPv6
    src_port: int
    dst_port: int
    payload: bytes


@dataclass
class CaptureStats:
    """What a capture held and what could not be turned into UDP datagrams.

    ``problems`` lists ``(packet number, reason, payload head or None)`` for UDP packets that
    could not be yielded (up to :data:`MAX_PROBLEMS`), so that an importer can report them
    rather than lose them silently. Packet numbers start at 1, as in Wireshark.
    """

    packets: int = 0  # packet records in the capture
    udp: int = 0  # UDP datagrams yielded
    other: int = 0  # IP packets of other protocols, and non-IP frames
    unsupported_link: int = 0  # packets on link types this reader does not decode
    malformed: int = 0  # headers that contradict themselves (bad lengths)
    truncated: int = 0  # packets cut short by the snap length or the end of the file
    fragments: int = 0  # IP fragments seen (of UDP datagrams)
    reassembled: int = 0  # datagrams rebuilt from fragments
    unreadable_fragments: int = 0  # fragments whose datagram could not be rebuilt
    truncated_file: bool = False  # the capture ends inside a packet record or block
    corrupt_records: int = 0  # record headers (or blocks) that could not be what they say
    problems: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    problems_dropped: int = 0  # UDP packets lost beyond MAX_PROBLEMS (counted, not listed)
    #: damage to the capture file itself, ``(packet number, reason, detail)``: a corrupt
    #: record header skipped over, the file cut short. Whatever packets sat there are lost.
    damage: list[tuple[int, str, str]] = field(default_factory=list)

    def note(self, packet: int, reason: str, head: bytes | None = None) -> None:
        """Remember a UDP packet that could not be yielded."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((packet, reason, head))
        else:
            self.problems_dropped += 1

    def cut_short(self, packet: int, offset: int, size: int) -> None:
        """The capture ends inside packet record ``packet`` (at byte ``offset`` of ``size``)."""
        if not self.truncated_file:
            self.truncated_file = True
            self.damage.append(
                (packet, R_CUT_SHORT, f"file ends inside it, {size - offset} of its bytes left")
            )


def is_capture(head: bytes) -> bool:
    """True if ``head`` starts like a classic pcap or a pcapng file."""
    if head[:4] in _PCAP_MAGICS:
        return True
    return (
        len(head) >= 12
        and head[:4] == b"\x0a\x0d\x0d\x0a"
        and head[8:12]
        in (
            b"\x1a\x2b\x3c\x4d",
            b"\x4d\x3c\x2b\x1a",
        )
    )


def read_udp(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    stats: CaptureStats | None = None,
) -> Iterator[UdpDatagram]:
    """Yield the UDP datagrams of a capture, in capture order (see :func:`iter_datagrams`)."""
    for _, datagram in iter_datagrams(source, stats):
        yield datagram


def iter_datagrams(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    stats: CaptureStats | None = None,
) -> Iterator[tuple[int, UdpDatagram]]:
    """Yield ``(packet number, datagram)`` for every UDP datagram of a capture.

    ``source`` is a path (memory-mapped, so large captures cost no memory) or the capture's
    bytes. A reassembled datagram carries the number of the fragment that completed it.
    Counts of everything else go into ``stats``. Raises InputError only when the source is
    not a capture at all.
    """
    stats = stats if stats is not None else CaptureStats()
    if isinstance(source, bytes | bytearray | memoryview):
        yield from _iter_buffer(memoryview(source).cast("B"), stats, "capture")
        return
    path = Path(source)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise InputError(f"{path}: empty file, not a pcap or pcapng capture")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    yield from _iter_buffer(view, stats, str(path))
                finally:
                    view.release()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def write_pcap(
    path: str | os.PathLike[str],
    datagrams: Iterator[UdpDatagram] | list[UdpDatagram],
    *,
    dst_ip: bytes = _V4_MAPPED + bytes([127, 0, 0, 1]),
) -> int:
    """Write UDP datagrams as a classic pcap (link type raw IP); return how many were written.

    For tests, synthetic inputs, and replaying payload files with standard tools (tshark,
    nfcapd). IPv4-mapped sources are written as IPv4 packets to the last four bytes of
    ``dst_ip``, others as IPv6 packets to all 16. UDP checksums are 0 (none), as IPv4 allows.
    """
    n = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFF, LINKTYPE_RAW))
        for ts_us, src, sport, dport, payload in datagrams:
            udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
            if src[:12] == _V4_MAPPED:
                ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0)
                packet = ip + src[12:] + dst_ip[12:] + udp
            else:
                ip = struct.pack(">IHBB", 6 << 28, len(udp), 17, 64)
                packet = ip + src + dst_ip + udp
            sec, usec = divmod(ts_us, 1_000_000)
            fh.write(struct.pack("<IIII", sec, usec, len(packet), len(packet)) + packet)
            n += 1
    return n


# --------------------------------------------------------------------------- container formats


def _iter_buffer(
    buf: memoryview, stats: CaptureStats, where: str, fast: bool = True
) -> Iterator[tuple[int, UdpDatagram]]:
    head = bytes(buf[:12])
    net = _Network(stats)
    if head[:4] in _PCAP_MAGICS:
        packets = _classic_packets(buf, stats, where, fast)
    elif is_capture(head):
        packets = _pcapng_packets(buf, stats)
    else:
        raise InputError(f"{where}: not a pcap or pcapng capture (magic {head[:4].hex()})")
    for item in packets:
        if len(item) == 2:  # a datagram the fast pass found (see _scan_classic)
            yield item
        else:
            yield from net.packet(*item)
    net.finish()


def _classic_packets(
    buf: memoryview, stats: CaptureStats, where: str, fast: bool = True
) -> Iterator[tuple]:
    """The packet records of a classic pcap, as ``(number, ts_us, linktype, data, wire)``.

    With ``fast``, runs of plain records (whole, IPv4 UDP, not fragmented, lengths that
    agree) are walked by :func:`_scan_classic` in one compiled pass and yielded as
    ``(number, UdpDatagram)`` directly, exactly as :class:`_Network` would have made them;
    every other record takes the path below.
    """
    if len(buf) < 24:
        raise InputError(f"{where}: pcap header cut short ({len(buf)} bytes)")
    order, ns_per_tick = _PCAP_MAGICS[bytes(buf[:4])]
    snaplen, network = struct.unpack_from(order + "II", buf, 16)
    linktype = network & 0x03FF_FFFF  # upper bits may carry FCS information
    # a record holding more than the snap length is corrupt (as Wireshark, allowing 256 KiB
    # whatever the header says: some writers put a smaller snap length there than they use)
    limit = max(snaplen, _MAX_WIRE) if snaplen <= _MAX_RECORD else _MAX_RECORD
    rec = struct.Struct(order + "IIII")
    frac_limit = 1_000_000_000 // ns_per_tick
    pos = 24
    end = len(buf)
    last_sec: int | None = None
    scan = fast and linktype in _FAST_LINKS
    if scan:
        raw = np.frombuffer(buf, dtype=np.uint8)
        found = np.empty((_SCAN_CHUNK, 6), dtype=np.int64)
    while pos < end:
        if scan:
            while True:
                pos, count, sec = _scan_classic(
                    raw, pos, order == ">", limit, linktype, ns_per_tick, found
                )
                if count == 0:
                    break
                last_sec = sec
                for ts_us, src, sport, dport, at, size in found[:count].tolist():
                    # counted one by one, as the consumer goes (a sniffer stops part-way)
                    stats.packets += 1
                    stats.udp += 1
                    src_ip = _V4_MAPPED + buf[src : src + 4]
                    payload = bytes(buf[at : at + size])
                    yield stats.packets, UdpDatagram(ts_us, src_ip, sport, dport, payload)
                if count < _SCAN_CHUNK:
                    break
            if pos >= end:
                return
        if end - pos < 16:
            stats.packets += 1
            stats.cut_short(stats.packets, pos, end)
            return
        ts_sec, ts_frac, incl, orig = rec.unpack_from(buf, pos)
        if incl > limit:
            # a record header that cannot be right: what it says about lengths is not to be
            # trusted, so go on at the next run of plausible headers
            stats.packets += 1
            stats.corrupt_records += 1
            nxt = _resync_classic(buf, pos + 1, rec, limit, frac_limit, last_sec)
            skipped = (nxt if nxt is not None else end) - pos
            stats.damage.append(
                (
                    stats.packets,
                    R_CORRUPT_RECORD,
                    f"record header at byte {pos} (captured length {incl}, wire length {orig}); "
                    + (
                        f"{skipped} bytes skipped"
                        if nxt is not None
                        else f"no record found after it: the last {skipped} bytes skipped"
                    ),
                )
            )
            if nxt is None:
                return
            pos = nxt
            continue
        pos += 16
        stats.packets += 1
        last_sec = ts_sec
        ts_us = ts_sec * 1_000_000 + (ts_frac * ns_per_tick) // 1_000
        if pos + incl > end:
            stats.cut_short(stats.packets, pos - 16, pos + incl)
            yield stats.packets, ts_us, linktype, buf[pos:end], max(orig, incl)
            return
        yield stats.packets, ts_us, linktype, buf[pos : pos + incl], max(orig, incl)
        pos += incl


#: link types whose plain records the compiled pass walks (Ethernet and raw IP)
_FAST_LINKS = (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4, *_DLT_RAW_ALIASES)
#: datagrams found per call of the compiled pass
_SCAN_CHUNK = 4096


@numba.njit(nogil=True, cache=True)
def _be16(raw: np.ndarray, at: int) -> int:
    return (int(raw[at]) << 8) | int(raw[at + 1])


@numba.njit(nogil=True, cache=True)
def _u32(raw: np.ndarray, at: int, big: bool) -> int:
    if big:
        return (int(raw[at]) << 24) | (int(raw[at + 1]) << 16) | _be16(raw, at + 2)
    return (
        (int(raw[at + 3]) << 24) | (int(raw[at + 2]) << 16) | (int(raw[at + 1]) << 8) | int(raw[at])
    )


@numba.njit(nogil=True, cache=True)
def _scan_classic(
    raw: np.ndarray,
    pos: int,
    big: bool,
    limit: int,
    linktype: int,
    ns_per_tick: int,
    found: np.ndarray,
) -> tuple[int, int, int]:
    """Walk plain classic pcap records from ``pos``: ``(where it stopped, datagrams, last
    record's seconds)``.

    A plain record is whole and not cut by the snap length, and holds an unfragmented IPv4
    UDP datagram whose IP and UDP lengths agree with each other and with what was captured
    (over Ethernet with any VLAN tags, or raw IP). For each, ``found`` gets a row ``(ts_us,
    offset of the IPv4 source, source port, destination port, offset of the payload, payload
    length)``. The walk stops before the first other record (which the Python path then
    reads) or when ``found`` is full.
    """
    end = raw.size
    count = 0
    sec = 0
    while count < found.shape[0] and end - pos >= 16:
        w0 = _u32(raw, pos, big)
        w1 = _u32(raw, pos + 4, big)
        incl = _u32(raw, pos + 8, big)
        orig = _u32(raw, pos + 12, big)
        if incl > limit or orig > incl or pos + 16 + incl > end:
            break  # corrupt, cut by the snap length, or cut short: not plain
        data = pos + 16
        n = incl
        off = 0
        if linktype == 1:  # Ethernet
            off = 12
            etype = -1
            while True:
                if n < off + 2:
                    etype = -1  # cut inside the link header
                    break
                etype = _be16(raw, data + off)
                if etype == 0x8100 or etype == 0x88A8 or etype == 0x9100 or etype == 0x9200:
                    off += 4
                    continue
                off += 2
                break
            if etype != 0x0800:
                break
        elif linktype != 228 and (n < 1 or raw[data] >> 4 != 4):
            break
        ip = data + off
        avail = n - off
        if avail < 20:
            break
        vihl = int(raw[ip])
        ihl = (vihl & 0x0F) * 4
        total = _be16(raw, ip + 2)
        if vihl >> 4 != 4 or ihl < 20 or raw[ip + 9] != 17 or total < ihl or total > avail:
            break
        if _be16(raw, ip + 6) & 0x3FFF:
            break  # a fragment
        l4 = ip + ihl
        if total - ihl < 8:
            break
        ulen = _be16(raw, l4 + 4)
        if ulen < 8 or ulen > total - ihl:
            break
        sec = w0
        row = found[count]
        row[0] = w0 * 1_000_000 + (w1 * ns_per_tick) // 1_000
        row[1] = ip + 12
        row[2] = _be16(raw, l4)
        row[3] = _be16(raw, l4 + 2)
        row[4] = l4 + 8
        row[5] = ulen - 8
        count += 1
        pos = data + incl
    return pos, count, sec


def _resync_classic(
    buf: memoryview,
    start: int,
    rec: struct.Struct,
    limit: int,
    frac_limit: int,
    last_sec: int | None,
) -> int | None:
    """The offset of the next plausible classic pcap record at or after ``start``, or None.

    A candidate header must hold a plausible length and time, and the record after it must
    be plausible too or end exactly at the end of the file, so that packet data is seldom
    taken for a header. The search is vectorised, a window at a time.
    """
    end = len(buf)
    big = rec.format.startswith(">")
    wire = max(_MAX_WIRE, limit)

    def plausible(at: int) -> bool:
        if end - at < 16:
            return False
        sec, frac, incl, orig = rec.unpack_from(buf, at)
        return (
            0 < incl <= min(limit, orig)
            and orig <= wire
            and frac < frac_limit
            and (last_sec is None or abs(sec - last_sec) <= _RESYNC_SECONDS)
            and at + 16 + incl <= end
        )

    at = start
    while end - at >= 16:
        stop = min(end, at + _RESYNC_WINDOW + 15)
        raw = np.frombuffer(buf[at:stop], dtype=np.uint8)
        n = raw.size - 15
        words = [_u32_at(raw, k, n, big) for k in (0, 4, 8, 12)]
        sec, frac, incl, orig = words
        ok = (incl > 0) & (incl <= limit) & (incl <= orig) & (orig <= wire) & (frac < frac_limit)
        if last_sec is not None:
            ok &= np.abs(sec.astype(np.int64) - last_sec) <= _RESYNC_SECONDS
        for q in np.flatnonzero(ok).tolist():
            cand = at + q
            nxt = cand + 16 + int(incl[q])
            if nxt == end or (nxt < end and plausible(nxt)):
                return cand
        at += n
    return None


def _u32_at(raw: np.ndarray, k: int, n: int, big: bool) -> np.ndarray:
    """The ``n`` 32-bit words starting at bytes ``k``, ``k + 1``, ... of ``raw``."""
    b = [raw[k + i : k + i + n].astype(np.uint32) for i in range(4)]
    if big:
        b.reverse()
    return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    tsresol: int = 6  # 10^-6 s
    tsresol_pow2: bool = False
    tsoffset: int = 0  # seconds

    def to_us(self, ticks: int) -> int:
        if self.tsresol_pow2:
            us = (ticks * 1_000_000) >> self.tsresol
        elif self.tsresol <= 6:
            us = ticks * 10 ** (6 - self.tsresol)
        else:
            us = ticks // 10 ** (self.tsresol - 6)
        return us + self.tsoffset * 1_000_000


def _pcapng_packets(
    buf: memoryview, stats: CaptureStats
) -> Iterator[tuple[int, int, int, memoryview, int]]:
    pos = 0
    end = len(buf)
    order = "<"
    interfaces: list[_Interface] = []
    while pos < end:
        if end - pos < 12:
            stats.cut_short(stats.packets + 1, pos, end)
            return
        btype_le = struct.unpack_from("<I", buf, pos)[0]
        if btype_le == _PCAPNG_SHB:
            bom = bytes(buf[pos + 8 : pos + 12])
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
            if not order:
                order = "<"
                pos = _pcapng_corrupt(buf, pos, stats, order, "section header")
                if pos < 0:
                    return
                continue
            interfaces = []
        btype, blen = struct.unpack_from(order + "II", buf, pos)
        if blen < 12 or blen % 4 or blen > _MAX_RECORD:
            pos = _pcapng_corrupt(buf, pos, stats, order, f"block length {blen}")
            if pos < 0:
                return
            continue
        cut = pos + blen > end
        if not cut and struct.unpack_from(order + "I", buf, pos + blen - 4)[0] != blen:
            # the length at the block's end disagrees with the one at its start
            pos = _pcapng_corrupt(buf, pos, stats, order, f"block length {blen}")
            if pos < 0:
                return
            continue
        body = buf[pos + 8 : min(pos + blen - 4, end)]
        if cut:
            stats.cut_short(stats.packets + (btype in (6, 2, 3)), pos, pos + blen)
        pos += blen
        if btype == _PCAPNG_SHB:
            continue
        if btype == 1:  # Interface Description Block
            if len(body) < 8:
                interfaces.append(_Interface(-1, 0))
                continue
            linktype, _, snaplen = struct.unpack_from(order + "HHI", body, 0)
            iface = _Interface(linktype, snaplen)
            _read_idb_options(body[8:], order, iface)
            interfaces.append(iface)
        elif btype in (6, 2, 3):
            packet = _pcapng_packet(btype, body, order, interfaces)
            if packet is None:
                if cut:
                    return
                stats.malformed += 1
                stats.packets += 1
                continue
            stats.packets += 1
            iface, ticks, data, orig = packet
            yield stats.packets, iface.to_us(ticks), iface.linktype, data, orig
        if cut:
            return


#: pcapng block types the reader knows: a resynchronisation lands only on one of these
_PCAPNG_TYPES = np.array([_PCAPNG_SHB, 1, 2, 3, 4, 5, 6, 7, 9, 10, 0xBAD, 0x40000BAD], np.uint32)


def _pcapng_corrupt(buf: memoryview, pos: int, stats: CaptureStats, order: str, what: str) -> int:
    """Note a corrupt block at ``pos``; the offset of the next good block, or -1 (none)."""
    stats.packets += 1
    stats.corrupt_records += 1
    nxt = _resync_pcapng(buf, pos + 4, order)
    skipped = (nxt if nxt is not None else len(buf)) - pos
    stats.damage.append(
        (
            stats.packets,
            R_CORRUPT_RECORD,
            f"block at byte {pos} ({what}); "
            + (
                f"{skipped} bytes skipped"
                if nxt is not None
                else f"no block found after it: the last {skipped} bytes skipped"
            ),
        )
    )
    return nxt if nxt is not None else -1


def _resync_pcapng(buf: memoryview, start: int, order: str) -> int | None:
    """The offset of the next whole pcapng block of a known type at or after ``start``.

    Blocks are 4-byte aligned and carry their length at both ends: a candidate must be of a
    known type, its two lengths must agree and fit the file.
    """
    end = len(buf)
    big = order == ">"
    at = start
    while end - at >= 12:
        stop = min(end, at + _RESYNC_WINDOW + 7)
        raw = np.frombuffer(buf[at:stop], dtype=np.uint8)
        n = raw.size - 7
        btype = _u32_at(raw, 0, n, big)
        btype_le = _u32_at(raw, 0, n, False)
        blen = _u32_at(raw, 4, n, big)
        ok = (np.isin(btype, _PCAPNG_TYPES) | (btype_le == _PCAPNG_SHB)) & (blen >= 12)
        ok &= (blen % 4 == 0) & (np.arange(n) % 4 == 0) & (at + np.arange(n) + blen <= end)
        for q in np.flatnonzero(ok).tolist():
            cand = at + q
            length = int(blen[q])
            tail_order = order
            if int(btype_le[q]) == _PCAPNG_SHB:  # a new section may change the byte order
                return cand
            if struct.unpack_from(tail_order + "I", buf, cand + length - 4)[0] == length:
                return cand
        at += n - (n % 4)
        if n < 4:
            break
    return None


def _pcapng_packet(
    btype: int, body: memoryview, order: str, interfaces: list[_Interface]
) -> tuple[_Interface, int, memoryview, int] | None:
    if btype == 3:  # Simple Packet Block: interface 0, no timestamp
        if len(body) < 4 or not interfaces:
            return None
        (orig,) = struct.unpack_from(order + "I", body, 0)
        iface = interfaces[0]
        caplen = min(orig, len(body) - 4)
        if iface.snaplen:
            caplen = min(caplen, iface.snaplen)
        return iface, 0, body[4 : 4 + caplen], orig
    if btype == 6:  # Enhanced Packet Block
        if len(body) < 20:
            return None
        if_id, ts_hi, ts_lo, caplen, orig = struct.unpack_from(order + "IIIII", body, 0)
        data_at = 20
    else:  # obsolete Packet Block
        if len(body) < 20:
            return None
        if_id, _, ts_hi, ts_lo, caplen, orig = struct.unpack_from(order + "HHIIII", body, 0)
        data_at = 20
    if if_id >= len(interfaces) or interfaces[if_id].linktype < 0:
        return None
    data = body[data_at : data_at + caplen]
    return interfaces[if_id], (ts_hi << 32) | ts_lo, data, max(orig, len(data))


def _read_idb_options(opts: memoryview, order: str, iface: _Interface) -> None:
    pos = 0
    while pos + 4 <= len(opts):
        code, olen = struct.unpack_from(order + "HH", opts, pos)
        pos += 4
        if code == 0:
            return
        value = opts[pos : pos + olen]
        pos += (olen + 3) & ~3
        if code == 9 and len(value) >= 1:  # if_tsresol
            v = value[0]
            iface.tsresol_pow2 = bool(v & 0x80)
            iface.tsresol = v & 0x7F
            if not iface.tsresol_pow2 and iface.tsresol > 30:
                iface.tsresol = 6  # nonsense resolution: keep the default
        elif code == 14 and len(value) >= 8:  # if_tsoffset, seconds
            (iface.tsoffset,) = struct.unpack_from(order + "q", value, 0)


# --------------------------------------------------------------------------- link, IP, UDP


class _Network:
    """Link layer, IP and UDP for one capture; keeps the fragments that wait for the rest."""

    def __init__(self, stats: CaptureStats) -> None:
        self.stats = stats
        self.pending: OrderedDict[tuple, _Reassembly] = OrderedDict()

    def packet(
        self, number: int, ts_us: int, linktype: int, data: memoryview, wire_len: int
    ) -> Iterator[tuple[int, UdpDatagram]]:
        stats = self.stats
        cut = wire_len > len(data)
        found = _link_payload(linktype, data)
        if found is None:
            stats.unsupported_link += 1
            return
        family, off = found
        if family == 0:
            if cut and off >= len(data):
                stats.truncated += 1
            else:
                stats.other += 1
            return
        if family == 4:
            got = self._ipv4(number, data, off, cut)
        else:
            got = self._ipv6(number, data, off, cut)
        if got is None:
            return
        src, l4, frag = got
        if frag is not None:
            l4 = self._fragment(number, frag, l4)
            if l4 is None:
                return
            cut = False
        yield from self._udp(number, ts_us, src, l4, cut)

    # ----------------------------------------------------------------- IPv4 / IPv6

    def _ipv4(self, number: int, data: memoryview, off: int, cut: bool):
        stats = self.stats
        if len(data) - off < 20:
            stats.truncated += 1
            return None
        vihl = data[off]
        ihl = (vihl & 0x0F) * 4
        total, ident, frag, proto = struct.unpack_from(">HHH xB", data, off + 2)
        if vihl >> 4 != 4 or ihl < 20:
            stats.malformed += 1
            return None
        if proto != _PROTO_UDP:
            stats.other += 1
            return None
        avail = len(data) - off
        if total == 0:  # segmentation offload: the length was never filled in
            total = avail  # only the link layer can tell whether the packet was cut
        elif total < ihl:
            stats.malformed += 1
            return None
        else:
            cut = total > avail  # the IP header knows better than the link layer
        if avail < ihl:
            stats.truncated += 1
            stats.note(number, "truncated packet")
            return None
        src = _V4_MAPPED + bytes(data[off + 12 : off + 16])
        l4 = data[off + ihl : off + min(total, avail)]
        more = bool(frag & 0x2000)
        offset = (frag & 0x1FFF) * 8
        if more or offset:
            if cut:
                stats.fragments += 1
                stats.truncated += 1
                stats.unreadable_fragments += 1
                stats.note(number, "truncated fragment")
                return None
            dst = bytes(data[off + 16 : off + 20])
            return src, l4, ((4, src, dst, ident), offset, more)
        if cut:
            stats.truncated += 1
        return src, l4, None

    def _ipv6(self, number: int, data: memoryview, off: int, cut: bool):
        stats = self.stats
        if len(data) - off < 40:
            stats.truncated += 1
            return None
        if data[off] >> 4 != 6:
            stats.malformed += 1
            return None
        plen = struct.unpack_from(">H", data, off + 4)[0]
        nxt = data[off + 6]
        src = bytes(data[off + 8 : off + 24])
        dst = bytes(data[off + 24 : off + 40])
        avail = len(data) - off - 40
        if plen == 0:  # jumbogram or offload: take what is there
            plen = avail  # only the link layer can tell whether the packet was cut
        else:
            cut = plen > avail
        payload = data[off + 40 : off + 40 + min(plen, avail)]
        pos = 0
        frag = None
        while True:
            if nxt == _PROTO_UDP:
                break
            if nxt in _IPV6_EXT or nxt == 51:
                if len(payload) - pos < 8:
                    stats.truncated += 1
                    return None
                hlen = (payload[pos + 1] + 2) * 4 if nxt == 51 else (payload[pos + 1] + 1) * 8
                nxt = payload[pos]
                pos += hlen
                continue
            if nxt == 44:  # fragment header
                if len(payload) - pos < 8:
                    stats.truncated += 1
                    return None
                nxt = payload[pos]
                offmf, ident = struct.unpack_from(">HI", payload, pos + 2)
                pos += 8
                frag = ((6, src, dst, ident), offmf & 0xFFF8, bool(offmf & 1))
                if frag[1] == 0 and not frag[2]:
                    frag = None  # an atomic fragment: the whole datagram
                if nxt != _PROTO_UDP:
                    stats.other += 1  # headers inside the fragmentable part: not for us
                    return None
                break
            stats.other += 1
            return None
        if pos > len(payload):
            stats.truncated += 1
            return None
        l4 = payload[pos:]
        if frag is not None:
            if cut:
                stats.fragments += 1
                stats.truncated += 1
                stats.unreadable_fragments += 1
                stats.note(number, "truncated fragment")
                return None
            return src, l4, frag
        if cut:
            stats.truncated += 1
        return src, l4, None

    # ----------------------------------------------------------------- fragments

    def _fragment(self, number: int, frag: tuple, data: memoryview) -> memoryview | None:
        stats = self.stats
        stats.fragments += 1
        key, offset, more = frag
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= MAX_PENDING_DATAGRAMS:
                _, old = self.pending.popitem(last=False)
                self._give_up(old)
            entry = self.pending[key] = _Reassembly(number)
        entry.last_packet = number
        if not entry.add(offset, bytes(data), more):
            del self.pending[key]
            stats.malformed += 1
            self._give_up(entry)
            return None
        whole = entry.assemble()
        if whole is None:
            return None
        del self.pending[key]
        stats.reassembled += 1
        return memoryview(whole)

    def _give_up(self, entry: _Reassembly) -> None:
        self.stats.unreadable_fragments += len(entry.parts)
        head = entry.parts.get(0)
        self.stats.note(
            entry.last_packet,
            "incomplete fragments",
            head[8 : 8 + _HEAD_BYTES] if head is not None else None,
        )

    def finish(self) -> None:
        """Count the fragments whose datagrams never completed."""
        for entry in self.pending.values():
            self._give_up(entry)
        self.pending.clear()

    # ----------------------------------------------------------------- UDP

    def _udp(
        self, number: int, ts_us: int, src: bytes, l4: memoryview, cut: bool
    ) -> Iterator[tuple[int, UdpDatagram]]:
        stats = self.stats
        if len(l4) < 8:
            stats.truncated += 1
            stats.note(number, "truncated packet")
            return
        sport, dport, ulen = struct.unpack_from(">HHH", l4, 0)
        if ulen == 0 and len(l4) > 0xFFFF:  # IPv6 jumbogram UDP
            ulen = len(l4)
        if ulen < 8:
            stats.malformed += 1
            stats.note(number, "bad UDP length", bytes(l4[8 : 8 + _HEAD_BYTES]))
            return
        if ulen > len(l4):
            if not cut:
                stats.malformed += 1  # the IP header says the datagram is complete
                stats.note(number, "bad UDP length", bytes(l4[8 : 8 + _HEAD_BYTES]))
                return
            ulen = len(l4)
        stats.udp += 1
        yield number, UdpDatagram(ts_us, src, sport, dport, bytes(l4[8:ulen]))


class _Reassembly:
    """The fragments of one IP datagram seen so far."""

    __slots__ = ("first_packet", "last_packet", "parts", "total")

    def __init__(self, packet: int) -> None:
        self.first_packet = packet
        self.last_packet = packet
        self.parts: dict[int, bytes] = {}
        self.total: int | None = None

    def add(self, offset: int, data: bytes, more: bool) -> bool:
        """Add one fragment; False if the fragments contradict each other."""
        if len(self.parts) >= MAX_FRAGMENTS or offset + len(data) > 0xFFFF + 0xFFFF:
            return False
        if more and len(data) % 8:
            return False
        if not more:
            end = offset + len(data)
            if self.total is not None and self.total != end:
                return False
            self.total = end
        self.parts[offset] = data
        return True

    def assemble(self) -> bytearray | None:
        """The whole datagram once every byte is there, else None."""
        if self.total is None:
            return None
        covered = 0
        for off in sorted(self.parts):
            if off > covered:
                return None
            covered = max(covered, off + len(self.parts[off]))
        if covered < self.total:
            return None
        out = bytearray(self.total)
        for off in sorted(self.parts):
            piece = self.parts[off][: max(0, self.total - off)]
            out[off : off + len(piece)] = piece
        return out


def _link_payload(linktype: int, data: memoryview) -> tuple[int, int] | None:
    """(IP version or 0 for something else, offset of the IP header); None if unsupported."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        off = 12
        while True:
            if n < off + 2:
                return 0, n
            etype = (data[off] << 8) | data[off + 1]
            if etype in _ETH_VLAN:
                off += 4
                continue
            off += 2
            break
        return _ethertype(etype, off)
    if linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return 0, n
        return _ethertype((data[14] << 8) | data[15], 16)
    if linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return 0, n
        return _ethertype((data[0] << 8) | data[1], 20)
    if linktype in (LINKTYPE_RAW, *_DLT_RAW_ALIASES):
        if n < 1:
            return 0, n
        version = data[0] >> 4
        return (version, 0) if version in (4, 6) else (0, 0)
    if linktype == LINKTYPE_IPV4:
        return 4, 0
    if linktype == LINKTYPE_IPV6:
        return 6, 0
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return 0, n
        # the family is in the capturing host's byte order (NULL) or network order (LOOP)
        fam_le = struct.unpack_from("<I", data, 0)[0]
        fam_be = struct.unpack_from(">I", data, 0)[0]
        fam = fam_be if linktype == LINKTYPE_LOOP else (fam_le if fam_le < 256 else fam_be)
        if fam == 2:
            return 4, 4
        if fam in (10, 24, 28, 30):
            return 6, 4
        return 0, 4
    return None


def _ethertype(etype: int, off: int) -> tuple[int, int]:
    if etype == _ETH_IPV4:
        return 4, off
    if etype == _ETH_IPV6:
        return 6, off
    return 0, off
