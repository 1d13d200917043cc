"""A native reader for nfcapd files (the format nfdump 1.7 writes), block by block into Arrow.

nfdump's text output runs at a few hundred thousand records a second; the build that reads the
archive runs at millions. This module reads the binary files directly:

- the file header (``LAYOUT_VERSION_2``: magic ``0xA50C``, compression, number of data blocks,
  the offset of the appendix), the appendix (the ident and stat records), then the data blocks,
  each a 12-byte header (records, size, type, flags) and a payload compressed as the file
  header says (none, LZO, BZ2, LZ4 or ZSTD; a block flagged uncompressed is read as it is);
- decompression through packages: ``lzokay`` (LZO1X), ``lz4`` (raw LZ4 blocks), the standard
  library's ``bz2`` and ``zstandard``;
- record decoding in numba over a whole decompressed block at once: every V3 record (type 11)
  is walked element by element and its fields land in preallocated NumPy columns that become
  Arrow arrays without a copy. Python touches blocks, never records.

What a record becomes matches what ``flowatlas import --reader nfdump`` (nfdump 1.7.1's text
output) gives, field for field, and the test suite checks that on every nfcapd file in the
shared data and on copies rewritten by nfdump in each compression it supports:

- ``time_start``/``time_end``: the generic flow element's first/last milliseconds (for NSEL/NEL
  events without them, the event time, as nfdump does);
- ``src_addr``/``dst_addr``: the IPv4 or IPv6 flow element, with nfdump's own precedence when a
  record carries both (the IPv6 element wins; nfdump prints an IPv4 address stored in it as
  ``::a.b.c.d``, which flowatlas stores as IPv4); no address element reads as 0.0.0.0;
- ``exporter``: the address the collector received the record from (``%ra``), 0.0.0.0 if the
  record has none; ``sampling_rate`` is 0: nfcapd has already scaled the counters (the
  exporter and sampler records of the file are read and counted, not applied);
- ``bytes``/``packets``: the input counters; ``in_if``/``out_if``, ``src_as``/``dst_as``,
  ports and protocol from their elements, 0 where a record has none.

Nothing is dropped in silence. A record that cannot be a flow is quarantined with a reason; a
block that does not decompress or whose records do not add up is quarantined as
``nfcapd_corrupt_block``, one row per record its header announces; the records of a block cut
off by the end of the file as ``nfcapd_truncated``. Where even the count is lost (a block header
that is garbage, blocks missing past the end of the file) the file's stat record supplies it
when it survives, and otherwise each lost block counts as one quarantined row whose detail says
that its record count is unknown. Extension elements and record types the reader does not know
are skipped by their length and counted by name (:attr:`NfcapdReader.unknown`).

A file the reader does not handle at all (nfdump 1.6's ``LAYOUT_VERSION_1``, encrypted files,
a compression it does not know) raises :class:`NfcapdUnsupported` before any record is read;
the nfcapd importer then reads that file through nfdump instead and prints why.
"""

from __future__ import annotations

import bz2
import os
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numba
import numpy as np
import pyarrow as pa

from flowatlas import kernel_cache
from flowatlas.errors import InputError
from flowatlas.schema import ADDRESS, FLOW_SCHEMA_V1, TIMESTAMP

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

__all__ = [
    "COMPRESSIONS",
    "REASONS",
    "FileHeader",
    "NfcapdReader",
    "NfcapdUnsupported",
    "read_header",
]

MAGIC = 0xA50C
LAYOUT_VERSION_1 = 1
LAYOUT_VERSION_2 = 2
#: compression codes of the file header (nfdump's nffileV2.h)
COMPRESSIONS: dict[int, str] = {0: "none", 1: "lzo", 2: "bz2", 3: "lz4", 4: "zstd"}
#: the largest block nfdump reads or writes (BUFFSIZE): the bound for sizes and decompression
MAX_BLOCK_BYTES = 5 * 1024 * 1024
#: a record is at least its 4-byte header, so a block holds at most this many
MAX_BLOCK_RECORDS = MAX_BLOCK_BYTES // 4
FLAG_BLOCK_UNCOMPRESSED = 0x1
DATA_BLOCK_TYPE_2 = 2
DATA_BLOCK_TYPE_3 = 3
TYPE_IDENT = 0x8001
TYPE_STAT = 0x8002

_HEADER = struct.Struct("<HHIqBBHIqII")  # fileHeaderV2_t, 40 bytes
_BLOCK = struct.Struct("<IIHH")  # dataBlock_t: records, size, type, flags
_STAT = struct.Struct("<17QI")  # stat_record_t: 17 counters/times, sequence failures

#: record types (nfdump's id.h) by number
RECORD_TYPES: dict[int, str] = {
    1: "CommonRecordV0",
    2: "ExtensionMap",
    3: "PortHistogram",
    4: "BppHistogram",
    5: "LegacyRecord1",
    6: "LegacyRecord2",
    7: "ExporterInfo",
    8: "ExporterStat",
    9: "SamplerLegacy",
    10: "CommonRecord",
    11: "V3Record",
    12: "NbarRecord",
    13: "IfNameRecord",
    14: "VrfNameRecord",
    15: "SamplerRecord",
}
#: V3 extension elements (nfdump's nfxV3.h) by number
ELEMENTS: dict[int, str] = {
    1: "EXgenericFlow",
    2: "EXipv4Flow",
    3: "EXipv6Flow",
    4: "EXflowMisc",
    5: "EXcntFlow",
    6: "EXvLan",
    7: "EXasRouting",
    8: "EXbgpNextHopV4",
    9: "EXbgpNextHopV6",
    10: "EXipNextHopV4",
    11: "EXipNextHopV6",
    12: "EXipReceivedV4",
    13: "EXipReceivedV6",
    14: "EXmplsLabel",
    15: "EXmacAddr",
    16: "EXasAdjacent",
    17: "EXlatency",
    18: "EXsamplerInfo",
    19: "EXnselCommon",
    20: "EXnselXlateIPv4",
    21: "EXnselXlateIPv6",
    22: "EXnselXlatePort",
    23: "EXnselAcl",
    24: "EXnselUser",
    25: "EXnelCommon",
    26: "EXnelXlatePort",
    27: "EXnbarApp",
    28: "EXlabel",
    29: "EXinPayload",
    30: "EXoutPayload",
    31: "EXtunIPv4",
    32: "EXtunIPv6",
    33: "EXobservation",
    34: "EXifname",
    35: "EXvrfname",
    36: "EXvrf",
    37: "EXpfinfo",
}
_MAX_KNOWN_ELEMENT = max(ELEMENTS)
#: record and element types counted one by one; larger ones share one counter
_COUNT_SLOTS = 256
#: record types that are no flows: exporter/sampler info and stats, extension maps,
#: histograms, nbar/interface/vrf names
_NON_FLOW_RECORDS = (2, 3, 4, 7, 8, 9, 12, 13, 14, 15)

#: quarantine reasons this reader gives (beyond the shared time checks), with what they mean
REASONS: dict[str, str] = {
    "nfcapd_corrupt_block": "a data block that does not decompress or whose records do not "
    "add up; one row per record its header announces",
    "nfcapd_truncated": "records of a block cut off by the end of the file",
    "nfcapd_bad_record": "a V3 record whose elements are shorter than their fields or do not "
    "add up to the record's size",
    "nfcapd_unsupported_record": "an nfdump 1.6 flow record (CommonRecord) inside a 1.7 file: "
    "read that file with --reader nfdump",
    "nfcapd_unknown_record": "a record type nfdump 1.7 does not define",
}

# --- per-row status codes written by the kernel (0 = a good flow record)
_OK = 0
_TS_OLD = 1
_TS_FUTURE = 2
_TE_OLD = 3
_TE_FUTURE = 4
_BAD_RECORD = 5
_UNSUPPORTED = 6
_UNKNOWN_RECORD = 7
# --- sub-codes of _BAD_RECORD (kept in the aux column with the element id)
_SUB_SHORT_HEADER = 1
_SUB_ELEMENT_PAST_END = 2
_SUB_ELEMENT_LENGTH = 3
_SUB_NULL_ELEMENT = 4
_SUB_SHORT_ELEMENT = 5
_SUB_SIZE_MISMATCH = 6
_SUB_TEXT = {
    _SUB_SHORT_HEADER: "record shorter than the V3 header",
    _SUB_ELEMENT_PAST_END: "element header past the end of the record",
    _SUB_ELEMENT_LENGTH: "element length below 4 or past the end of the record",
    _SUB_NULL_ELEMENT: "element of type 0 (EXnull)",
    _SUB_SHORT_ELEMENT: "element shorter than its fields",
    _SUB_SIZE_MISMATCH: "elements do not add up to the record size",
}
# --- block status returned by the kernel
_BLOCK_OK = 0
_BLOCK_RECORD_PAST_END = 1
_BLOCK_RECORD_SIZE = 2

#: records whose time is before this are quarantined (same bound as every importer)
MIN_TIME_US = 631_152_000 * 1_000_000
FUTURE_SLACK_US = 86_400 * 1_000_000
_MAX_MS = np.uint64((2**63 - 1) // 1000)


class NfcapdUnsupported(InputError):
    """The native reader does not read this file (it says why); nfdump may."""


@dataclass(frozen=True)
class FileHeader:
    """The fields of an nfcapd file header (``fileHeaderV2_t``) the reader uses."""

    layout: int
    nfdump_version: int
    created: int
    compression: int
    encryption: int
    appendix_blocks: int
    creator: int
    appendix_offset: int
    block_size: int
    num_blocks: int

    @property
    def compression_name(self) -> str:
        return COMPRESSIONS.get(self.compression, f"unknown ({self.compression})")


def read_header(fh: BinaryIO, where: str | os.PathLike[str]) -> FileHeader:
    """Read and check the file header; :class:`NfcapdUnsupported` for what is not read here."""
    raw = fh.read(_HEADER.size)
    if len(raw) < 4 or raw[:2] != b"\x0c\xa5":
        raise InputError(f"{where}: not an nfcapd file (no nfdump file header)")
    layout = int.from_bytes(raw[2:4], "little")
    if layout == LAYOUT_VERSION_1:
        raise NfcapdUnsupported(
            f"{where}: nfdump 1.6 file layout (LAYOUT_VERSION_1) is not read natively"
        )
    if layout != LAYOUT_VERSION_2:
        raise NfcapdUnsupported(f"{where}: nfcapd file layout {layout} is not read natively")
    if len(raw) < _HEADER.size:
        raise InputError(f"{where}: truncated nfcapd file: {len(raw)} of 40 header bytes")
    f = _HEADER.unpack(raw)
    header = FileHeader(
        layout=f[1],
        nfdump_version=f[2],
        created=f[3],
        compression=f[4],
        encryption=f[5],
        appendix_blocks=f[6],
        creator=f[7],
        appendix_offset=f[8],
        block_size=f[9],
        num_blocks=f[10],
    )
    if header.encryption:
        raise NfcapdUnsupported(f"{where}: encrypted nfcapd file ({header.encryption})")
    if header.compression not in COMPRESSIONS:
        raise NfcapdUnsupported(f"{where}: unknown nfcapd compression {header.compression}")
    return header


# --------------------------------------------------------------------------- decompression


class _Corrupt(Exception):
    """A block payload that does not decompress (the message says why)."""


def _decompress(compression: int, payload: bytes) -> bytes:
    """One block payload, decompressed as nfdump compressed it (raises _Corrupt)."""
    try:
        if compression == 0:
            return payload
        if compression == 3:
            import lz4.block

            return lz4.block.decompress(payload, uncompressed_size=MAX_BLOCK_BYTES)
        if compression == 1:
            import lzokay

            # lzokay returns the whole buffer it was given; the records say where data ends
            return lzokay.decompress(payload, MAX_BLOCK_BYTES)
        if compression == 4:
            import zstandard

            return zstandard.ZstdDecompressor().decompress(payload, max_output_size=MAX_BLOCK_BYTES)
        if compression == 2:
            d = bz2.BZ2Decompressor()
            out = d.decompress(payload, max_length=MAX_BLOCK_BYTES)
            if not d.eof:
                raise _Corrupt("bz2 stream incomplete or larger than 5 MiB")
            return out
    except _Corrupt:
        raise
    except Exception as exc:  # each library has its own error types
        raise _Corrupt(f"{COMPRESSIONS[compression]}: {type(exc).__name__}: {exc}") from None
    raise _Corrupt(f"unknown compression {compression}")  # pragma: no cover - checked earlier


# --------------------------------------------------------------------------- the kernel


@numba.njit(inline="always", nogil=True, cache=True)
def _u16(b, o):  # pragma: no cover - compiled
    """Little-endian unsigned 16 bits at ``b[o]``, as int64 (for indexing and arithmetic)."""
    return np.int64(b[o]) | (np.int64(b[o + 1]) << 8)


@numba.njit(inline="always", nogil=True, cache=True)
def _u32(b, o):  # pragma: no cover - compiled
    """Little-endian unsigned 32 bits at ``b[o]``, as int64."""
    return (
        np.int64(b[o])
        | (np.int64(b[o + 1]) << 8)
        | (np.int64(b[o + 2]) << 16)
        | (np.int64(b[o + 3]) << 24)
    )


@numba.njit(inline="always", nogil=True, cache=True)
def _u64(b, o):  # pragma: no cover - compiled
    """Little-endian unsigned 64 bits at ``b[o]``."""
    return np.uint64(_u32(b, o)) | (np.uint64(_u32(b, o + 4)) << np.uint64(32))


@numba.njit(inline="always", nogil=True, cache=True)
def _bswap64(w):  # pragma: no cover - compiled
    """Byte-swap a 64-bit word (LLVM emits one BSWAP): host order to network order."""
    w = ((w & np.uint64(0x00FF00FF00FF00FF)) << np.uint64(8)) | (
        (w >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF)
    )
    w = ((w & np.uint64(0x0000FFFF0000FFFF)) << np.uint64(16)) | (
        (w >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF)
    )
    return (w << np.uint64(32)) | (w >> np.uint64(32))


@numba.njit(inline="always", nogil=True, cache=True)
def _put_addr(out, row, is6, w0, w1):  # pragma: no cover - compiled
    """Store an address as nfdump prints it, in flowatlas' 16-byte form (network order).

    ``w0``/``w1`` are nfdump's two 64-bit halves of the address union: an IPv4 address is the
    low 32 bits of ``w1``; ``is6`` says an IPv6 element was seen. IPv4-compatible IPv6
    (``::a.b.c.d``, as nfdump 1.7.1 prints some IPv4) is stored IPv4-mapped, as the
    nfdump-text importer does.
    """
    if is6:
        hi = w0
        lo = w1
        if hi == 0 and (lo >> np.uint64(32)) == 0 and lo >= np.uint64(1 << 24):
            lo = lo | np.uint64(0xFFFF00000000)
    else:
        hi = np.uint64(0)
        lo = np.uint64(0xFFFF00000000) | (w1 & np.uint64(0xFFFFFFFF))
    out[row, 0] = _bswap64(hi)
    out[row, 1] = _bswap64(lo)


@numba.njit(nogil=True, cache=True)
def _decode_block(
    b, end, nrec, row0, min_us, max_us,
    ts, te, exporter, in_if, out_if, src, dst, sport, dport, proto, nbytes, npackets,
    src_as, dst_as, rec_no, status, aux, rtype_counts, elem_counts, meta,
):  # fmt: skip  # pragma: no cover - compiled
    """Decode the ``nrec`` records of one decompressed block ``b[:end]``.

    Every V3 record (and every record that may be a flow but cannot be read) takes one output
    row from ``row0`` on, with its 1-based number in the block (``rec_no``) and a status (0:
    a good flow). Exporter and sampler records are listed in ``meta`` (their offsets) for the
    caller; other known metadata records are skipped. ``rtype_counts`` and ``elem_counts``
    count record and element types (index = type; see NfcapdReader for the last slots).
    Returns (next row, records walked, block status, metadata records listed).
    """
    pos = 0
    row = row0
    nmeta = 0
    n_rt = rtype_counts.shape[0] - 1
    n_el = elem_counts.shape[0] - 1
    for r in range(nrec):
        if pos + 4 > end:
            return row, r, 1, nmeta
        rtype = _u16(b, pos)
        rsize = _u16(b, pos + 2)
        if rsize < 4 or pos + rsize > end:
            return row, r, 2, nmeta
        if rtype < n_rt - 1:
            rtype_counts[rtype] += 1
        elif rtype == 0x8001 or rtype == 0x8002:  # ident/stat: appendix records
            rtype_counts[n_rt - 1] += 1
        else:
            rtype_counts[n_rt] += 1
        if rtype == 11:
            st = 0
            sub = 0
            ts_ms = np.uint64(0)
            te_ms = np.uint64(0)
            evt = np.uint64(0)
            s0 = np.uint64(0)
            s1 = np.uint64(0)
            d0 = np.uint64(0)
            d1 = np.uint64(0)
            x0 = np.uint64(0)
            x1 = np.uint64(0)
            a6 = False
            x6 = False
            byt = np.uint64(0)
            pkt = np.uint64(0)
            sp = 0
            dp = 0
            pr = 0
            ii = 0
            oi = 0
            sa = 0
            da = 0
            if rsize < 12:
                st = 5
                sub = 1 << 16
            else:
                nel = _u16(b, pos + 4)
                p = pos + 12
                rend = pos + rsize
                for _k in range(nel):
                    if p + 4 > rend:
                        st = 5
                        sub = 2 << 16
                        break
                    et = _u16(b, p)
                    el = _u16(b, p + 2)
                    if el < 4 or p + el > rend:
                        st = 5
                        sub = (3 << 16) | et
                        break
                    elem_counts[min(et, n_el)] += 1
                    q = p + 4
                    blen = el - 4
                    need = 0
                    if et == 1:  # EXgenericFlow
                        need = 48
                        if blen >= need:
                            ts_ms = _u64(b, q)
                            te_ms = _u64(b, q + 8)
                            pkt = _u64(b, q + 24)
                            byt = _u64(b, q + 32)
                            sp = _u16(b, q + 40)
                            dp = _u16(b, q + 42)
                            pr = np.int64(b[q + 44])
                    elif et == 2:  # EXipv4Flow
                        need = 8
                        if blen >= need:
                            s0 = np.uint64(0)
                            s1 = np.uint64(_u32(b, q))
                            d0 = np.uint64(0)
                            d1 = np.uint64(_u32(b, q + 4))
                    elif et == 3:  # EXipv6Flow
                        need = 32
                        if blen >= need:
                            s0 = _u64(b, q)
                            s1 = _u64(b, q + 8)
                            d0 = _u64(b, q + 16)
                            d1 = _u64(b, q + 24)
                            a6 = True
                    elif et == 4:  # EXflowMisc
                        need = 8
                        if blen >= need:
                            ii = _u32(b, q)
                            oi = _u32(b, q + 4)
                    elif et == 7:  # EXasRouting
                        need = 8
                        if blen >= need:
                            sa = _u32(b, q)
                            da = _u32(b, q + 4)
                    elif et == 12:  # EXipReceivedV4
                        need = 4
                        if blen >= need:
                            x0 = np.uint64(0)
                            x1 = np.uint64(_u32(b, q))
                    elif et == 13:  # EXipReceivedV6
                        need = 16
                        if blen >= need:
                            x0 = _u64(b, q)
                            x1 = _u64(b, q + 8)
                            x6 = True
                    elif et == 19 or et == 25:  # EXnselCommon, EXnelCommon: event time
                        need = 8
                        if blen >= need:
                            evt = _u64(b, q)
                    elif et == 0:
                        st = 5
                        sub = 4 << 16
                        break
                    if blen < need:
                        st = 5
                        sub = (5 << 16) | et
                        break
                    p += el
                if st == 0 and p != rend:
                    st = 5
                    sub = 6 << 16
            if st == 0:
                # nfdump (NSEL build) takes the event time for missing flow times
                if ts_ms == 0:
                    ts_ms = evt
                if te_ms == 0:
                    te_ms = evt
                t0 = np.int64(min(ts_ms, _MAX_MS)) * 1000
                t1 = np.int64(min(te_ms, _MAX_MS)) * 1000
                if t0 < min_us:
                    st = 1
                elif ts_ms > _MAX_MS or t0 > max_us:
                    st = 2
                elif t1 < min_us:
                    st = 3
                elif te_ms > _MAX_MS or t1 > max_us:
                    st = 4
                ts[row] = t0
                te[row] = t1
            _put_addr(src, row, a6, s0, s1)
            _put_addr(dst, row, a6, d0, d1)
            _put_addr(exporter, row, x6, x0, x1)
            in_if[row] = ii
            out_if[row] = oi
            sport[row] = sp
            dport[row] = dp
            proto[row] = pr
            nbytes[row] = byt
            npackets[row] = pkt
            src_as[row] = sa
            dst_as[row] = da
            rec_no[row] = r + 1
            status[row] = st
            aux[row] = sub
            row += 1
        elif rtype == 7 or rtype == 8 or rtype == 9 or rtype == 15:
            meta[nmeta] = pos
            nmeta += 1
        elif (
            rtype == 2
            or rtype == 3
            or rtype == 4
            or (rtype >= 12 and rtype <= 14)
            or rtype == 0x8001
            or rtype == 0x8002
        ):
            pass  # extension maps, histograms, nbar/ifname/vrf names, ident/stat: no flows
        else:
            # a flow record of nfdump 1.6 (1, 5, 6, 10) or a type nobody defines: a
            # quarantined row (the other columns of a quarantined row are never read)
            rec_no[row] = r + 1
            legacy = rtype == 1 or rtype == 5 or rtype == 6 or rtype == 10
            status[row] = 6 if legacy else 7
            aux[row] = rtype
            row += 1
        pos += rsize
    return row, nrec, 0, nmeta


# --------------------------------------------------------------------------- columns


class _Columns:
    """Preallocated output columns for one batch (a fresh set per batch: Arrow keeps them)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ts = np.empty(capacity, np.int64)
        self.te = np.empty(capacity, np.int64)
        self.exporter = np.empty((capacity, 2), np.uint64)
        self.in_if = np.empty(capacity, np.uint32)
        self.out_if = np.empty(capacity, np.uint32)
        self.src = np.empty((capacity, 2), np.uint64)
        self.dst = np.empty((capacity, 2), np.uint64)
        self.sport = np.empty(capacity, np.uint16)
        self.dport = np.empty(capacity, np.uint16)
        self.proto = np.empty(capacity, np.uint8)
        self.nbytes = np.empty(capacity, np.uint64)
        self.npackets = np.empty(capacity, np.uint64)
        self.src_as = np.empty(capacity, np.uint32)
        self.dst_as = np.empty(capacity, np.uint32)
        self.rec_no = np.empty(capacity, np.uint32)
        self.status = np.empty(capacity, np.uint8)
        self.aux = np.empty(capacity, np.uint32)
        self.block = np.empty(capacity, np.uint32)
        self.rows = 0

    def kernel_args(self) -> tuple[np.ndarray, ...]:
        return (
            self.ts, self.te, self.exporter, self.in_if, self.out_if, self.src, self.dst,
            self.sport, self.dport, self.proto, self.nbytes, self.npackets, self.src_as,
            self.dst_as, self.rec_no, self.status, self.aux,
        )  # fmt: skip

    def table(self, mask: np.ndarray | None) -> pa.Table:
        """The first ``rows`` rows as flow schema v1 (zero-copy where no row is dropped)."""
        n = self.rows

        def addr(a: np.ndarray) -> pa.Array:
            return pa.FixedSizeBinaryArray.from_buffers(ADDRESS, n, [None, pa.py_buffer(a[:n])])

        def num(a: np.ndarray, typ: pa.DataType) -> pa.Array:
            return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(a[:n])])

        cols = [
            num(self.ts, TIMESTAMP),
            num(self.te, TIMESTAMP),
            addr(self.exporter),
            num(self.in_if, pa.uint32()),
            num(self.out_if, pa.uint32()),
            addr(self.src),
            addr(self.dst),
            num(self.sport, pa.uint16()),
            num(self.dport, pa.uint16()),
            num(self.proto, pa.uint8()),
            num(self.nbytes, pa.uint64()),
            num(self.npackets, pa.uint64()),
            pa.array(np.zeros(n, np.uint32)),  # sampling_rate: counts are scaled
            num(self.src_as, pa.uint32()),
            num(self.dst_as, pa.uint32()),
        ]
        table = pa.Table.from_arrays(cols, schema=FLOW_SCHEMA_V1)
        if mask is not None:
            table = table.filter(pa.array(mask))
        return table


# --------------------------------------------------------------------------- the reader


@dataclass
class _Lost:
    """Records that could not be read, to be quarantined.

    ``first`` > 0: records ``first .. first + count - 1`` of block ``block``. ``first`` == 0:
    ``count`` records lost from block ``block`` on (their count from the file's stat record),
    or, with ``per_block``, ``count`` whole blocks whose record count is unknown (one row each).
    """

    block: int
    first: int
    count: int
    reason: str
    detail: str
    per_block: bool = False
    offset: int = 0  # for a piece of a stat-counted loss: rows before it

    def split(self, size: int) -> list[_Lost]:
        """Pieces of at most ``size`` rows (batches stay bounded)."""
        if self.count <= size:
            return [self]
        out = []
        for k in range(0, self.count, size):
            part = min(size, self.count - k)
            if self.first:
                out.append(_Lost(self.block, self.first + k, part, self.reason, self.detail))
            elif self.per_block:
                out.append(_Lost(self.block + k, 0, part, self.reason, self.detail, True))
            else:
                out.append(_Lost(self.block, 0, part, self.reason, self.detail, offset=k))
        return out

    def positions(self) -> list[str]:
        if self.first:
            return [f"block {self.block} record {self.first + k}" for k in range(self.count)]
        if self.per_block:
            return [f"block {self.block + k}" for k in range(self.count)]
        return [f"block {self.block}+ lost record {self.offset + k + 1}" for k in range(self.count)]


@dataclass
class ReadStats:
    """What reading one file found, besides its flow records."""

    blocks: int = 0
    records: int = 0  # records decoded into rows (written or quarantined)
    metadata_records: int = 0  # exporter and sampler records
    #: records walked that are no flows (metadata, extension maps, names): with ``records``
    #: and the records quarantined as lost, they add up to the records the blocks announce
    non_flow_records: int = 0
    #: record types and extension elements the reader does not know, by name, with counts
    unknown: Counter[str] = field(default_factory=Counter)
    #: exporter info records: sysid -> (NetFlow version, exporter address text, id)
    exporters: dict[int, tuple[int, str, int]] = field(default_factory=dict)
    #: sampler records: (exporter sysid, sampler id) -> (algorithm, packet interval)
    samplers: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    #: the file's own totals from its stat record: (flows, bytes, packets), if it has one
    stat: tuple[int, int, int] | None = None
    notes: list[str] = field(default_factory=list)


class NfcapdReader:
    """Read one nfcapd file into batches of flow schema v1 rows (see the module docstring).

    The header is read (and checked) when the reader is made, so :class:`NfcapdUnsupported`
    comes before any batch. ``now_us`` bounds the times accepted (a day later is the future).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, batch_rows: int = 1 << 20, now_us: int
    ) -> None:
        self.path = Path(path)
        self.where = str(path)
        self.batch_rows = max(1, int(batch_rows))
        self.now_us = int(now_us)
        self.stats = ReadStats()
        try:
            self._fh: BinaryIO = open(self.path, "rb")  # closed by batches()
        except OSError as exc:
            raise InputError(f"{self.path}: {exc.strerror or exc}") from None
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            self.header = read_header(self._fh, self.where)
        except BaseException:
            self._fh.close()
            raise
        # record types: one slot each up to 255, then ident/stat, then any other;
        # element types: one slot each up to 255, then any other
        self._rtype_counts = np.zeros(_COUNT_SLOTS + 2, np.uint64)
        self._elem_counts = np.zeros(_COUNT_SLOTS + 1, np.uint64)

    # ---------------------------------------------------------------- appendix

    def _read_appendix(self) -> bool:
        """Read the appendix (ident, stat record); True if it is one (it ends the data)."""
        h = self.header
        if not h.appendix_blocks:
            return False
        if h.appendix_offset < _HEADER.size or h.appendix_offset + _BLOCK.size > self.size:
            self.stats.notes.append(
                f"appendix at byte {h.appendix_offset} is past the end of the file "
                f"({self.size} bytes): the file is truncated"
            )
            return False
        found = False
        fh = self._fh
        fh.seek(h.appendix_offset)
        for i in range(h.appendix_blocks):
            raw = fh.read(_BLOCK.size)
            if len(raw) < _BLOCK.size:
                self.stats.notes.append(f"appendix block {i + 1} is cut off")
                return found
            nrec, size, _btype, flags = _BLOCK.unpack(raw)
            payload = fh.read(size) if 0 < size <= MAX_BLOCK_BYTES else b""
            if len(payload) != size or not size:
                self.stats.notes.append(f"appendix block {i + 1} is unreadable")
                return found
            comp = 0 if flags & FLAG_BLOCK_UNCOMPRESSED else h.compression
            try:
                data = _decompress(comp, payload)
            except _Corrupt as exc:
                self.stats.notes.append(f"appendix block {i + 1} does not decompress: {exc}")
                return found
            pos = 0
            for _ in range(min(nrec, MAX_BLOCK_RECORDS)):
                if pos + 4 > len(data):
                    break
                rtype, rsize = struct.unpack_from("<HH", data, pos)
                if rsize < 4 or pos + rsize > len(data):
                    break
                if rtype == TYPE_STAT and rsize - 4 >= _STAT.size:
                    v = _STAT.unpack_from(data, pos + 4)
                    self.stats.stat = (v[0], v[1], v[2])
                    found = True
                elif rtype == TYPE_IDENT:
                    found = True
                else:
                    self.stats.unknown[f"appendix record type {rtype:#x}"] += 1
                pos += rsize
        if not found:
            self.stats.notes.append(
                f"no appendix at byte {h.appendix_offset} (the header's offset is wrong): "
                "blocks are read to the end of the file"
            )
        return found

    # ---------------------------------------------------------------- metadata records

    def _metadata(self, data: np.ndarray, offsets: np.ndarray) -> None:
        buf = data.tobytes() if offsets.size else b""
        for off in offsets.tolist():
            rtype, rsize = struct.unpack_from("<HH", buf, off)
            self.stats.metadata_records += 1
            if rtype == 7 and rsize >= 32:  # exporter_info_record_t
                version, w0, w1, family, sysid, ident = struct.unpack_from("<IQQHHI", buf, off + 4)
                if family == 10:  # AF_INET6
                    import ipaddress

                    addr = str(ipaddress.IPv6Address((w0 << 64) | w1))
                else:
                    v4 = w1 & 0xFFFFFFFF
                    addr = ".".join(str((v4 >> s) & 0xFF) for s in (24, 16, 8, 0))
                self.stats.exporters[sysid] = (version, addr, ident)
            elif rtype == 15 and rsize >= 24:  # sampler_record_t
                sysid, algorithm, ident, interval, _space = struct.unpack_from(
                    "<HHqII", buf, off + 4
                )
                self.stats.samplers[(sysid, ident)] = (algorithm, interval)
            elif rtype == 9 and rsize >= 20:  # legacy sampler_info_record_t
                ident, interval, algorithm, sysid = struct.unpack_from("<iIHH", buf, off + 4)
                self.stats.samplers[(sysid, ident)] = (algorithm, interval)

    # ---------------------------------------------------------------- blocks

    def _blocks(self) -> Iterator[tuple[int, int, np.ndarray | None, _Lost | None]]:
        """(block number, records announced, decompressed payload or None, loss or None)."""
        h = self.header
        fh = self._fh
        pos = _HEADER.size
        fh.seek(pos)
        # the data blocks run from the header to the appendix (or the end of the file);
        # the header's block count is checked against them, not trusted to stop early
        limit = h.appendix_offset if self._appendix_ok else self.size
        expected = h.num_blocks
        if expected == 0 and limit > pos:
            self.stats.notes.append(
                f"the header announces no data blocks but {limit - pos} bytes follow it "
                "(a file nfcapd did not finish): read to the end"
            )
        n = 0
        while pos < limit:
            n += 1
            raw = fh.read(_BLOCK.size)
            if len(raw) < _BLOCK.size:
                yield (
                    n,
                    0,
                    None,
                    self._rest(n, "nfcapd_truncated", "the file ends in a block header"),
                )
                return
            nrec, size, btype, flags = _BLOCK.unpack(raw)
            if size == 0 or size > MAX_BLOCK_BYTES:
                why = f"block header says {size} bytes: the blocks cannot be followed"
                yield n, 0, None, self._rest(n, "nfcapd_corrupt_block", why)
                return
            payload = fh.read(size)
            pos += _BLOCK.size + len(payload)
            if nrec == 0 or nrec > MAX_BLOCK_RECORDS:
                why = f"block header announces {nrec} records: record count unknown"
                yield n, 0, None, _Lost(n, 0, 1, "nfcapd_corrupt_block", why, per_block=True)
                continue
            if len(payload) < size:
                why = f"the file ends {size - len(payload)} bytes into this block"
                yield n, nrec, None, _Lost(n, 1, nrec, "nfcapd_truncated", why)
                if expected > n:
                    yield (
                        n,
                        0,
                        None,
                        self._rest(n + 1, "nfcapd_truncated", "past the end of the file"),
                    )
                return
            if btype not in (DATA_BLOCK_TYPE_2, DATA_BLOCK_TYPE_3):
                why = f"block type {btype} (nfdump 1.7 writes type 3)"
                yield n, nrec, None, _Lost(n, 1, nrec, "nfcapd_corrupt_block", why)
                continue
            comp = 0 if flags & FLAG_BLOCK_UNCOMPRESSED else h.compression
            try:
                data = _decompress(comp, payload)
            except _Corrupt as exc:
                yield n, nrec, None, _Lost(n, 1, nrec, "nfcapd_corrupt_block", str(exc))
                continue
            yield n, nrec, np.frombuffer(data, np.uint8), None
        if expected and n != expected:
            self.stats.notes.append(
                f"the header announces {expected} data blocks; the file holds {n}"
            )

    def _rest(self, first_block: int, reason: str, why: str) -> _Lost:
        """Blocks from ``first_block`` on that cannot be read: the records they held.

        The file's stat record counts them where it survives (and is consistent with what was
        read); otherwise each missing block is one row whose detail says the count is unknown.
        """
        h = self.header
        missing = max(h.num_blocks - first_block + 1, 1)
        # a damaged header can announce billions of blocks: a file holds at most one block per
        # block header and byte, so a count beyond what a file of this size holds is not
        # believed, and the loss is one row saying so (never billions of rows)
        room = max(1, self.size // (_BLOCK.size + 1))
        if missing > room:
            detail = (
                f"{why}: the header announces {h.num_blocks} data blocks, more than "
                f"{self.size} bytes can hold: record count unknown (one row)"
            )
            return _Lost(first_block, 0, 1, reason, detail, per_block=True)
        stat = self.stats.stat
        if stat is not None and self._accounted <= stat[0]:
            left = stat[0] - self._accounted
            if left <= missing * MAX_BLOCK_RECORDS:
                detail = f"{why}: {left} records lost per the file's stat record"
                return _Lost(first_block, 0, left, reason, detail)
        detail = f"{why}: {missing} block(s) unreadable, record count unknown (one row each)"
        return _Lost(first_block, 0, missing, reason, detail, per_block=True)

    # ---------------------------------------------------------------- batches

    def batches(self) -> Iterator[Any]:
        """Yield :class:`~flowatlas.io.importers.base.Batch` objects of about ``batch_rows``."""
        try:
            yield from self._batches()
        finally:
            self._fh.close()
            self._finish_counts()

    def _batches(self) -> Iterator[Any]:
        self._appendix_ok = self._read_appendix()
        self._accounted = 0
        min_us = MIN_TIME_US
        max_us = self.now_us + FUTURE_SLACK_US
        cols = _Columns(self.batch_rows)
        lost: list[_Lost] = []
        n_lost = 0
        meta = np.empty(MAX_BLOCK_RECORDS, np.int64)
        for n, nrec, data, loss in self._blocks():
            self.stats.blocks += 1
            if loss is not None:
                lost.append(loss)
                n_lost += loss.count
                self._accounted += loss.count
            if data is not None:
                if cols.rows + nrec > cols.capacity:
                    if cols.rows or lost:
                        yield from self._emit(cols, lost)
                        lost, n_lost = [], 0
                    cols = _Columns(max(self.batch_rows, nrec))
                row0 = cols.rows
                row, done, bstatus, nmeta = _decode_block(
                    data, data.size, nrec, row0, min_us, max_us, *cols.kernel_args(),
                    self._rtype_counts, self._elem_counts, meta,
                )  # fmt: skip
                cols.block[row0:row] = n
                cols.rows = row
                self.stats.records += row - row0
                self._accounted += row - row0
                if nmeta:
                    self._metadata(data, meta[:nmeta])
                if bstatus != _BLOCK_OK:
                    what = (
                        "a record header past the end of the block"
                        if bstatus == _BLOCK_RECORD_PAST_END
                        else "a record size below 4 or past the end of the block"
                    )
                    why = f"{what} at record {done + 1}"
                    lost.append(_Lost(n, done + 1, nrec - done, "nfcapd_corrupt_block", why))
                    n_lost += nrec - done
                    self._accounted += nrec - done
            if cols.rows + n_lost >= self.batch_rows:
                yield from self._emit(cols, lost)
                lost, n_lost = [], 0
                cols = _Columns(self.batch_rows)
        if cols.rows or lost:
            yield from self._emit(cols, lost)

    def _emit(self, cols: _Columns, lost: list[_Lost]) -> Iterator[Any]:
        """The batch of ``cols``, then the lost records in pieces of at most ``batch_rows``."""
        if cols.rows:
            yield self._batch(cols, [])
        for loss in lost:
            for piece in loss.split(self.batch_rows):
                yield self._batch(_Columns(0), [piece])

    def _batch(self, cols: _Columns, lost: list[_Lost]) -> Any:
        from flowatlas.io.importers.base import Batch, empty_quarantine

        n = cols.rows
        status = cols.status[:n]
        bad = status != _OK
        if not bad.any():
            table = cols.table(None)
            quarantine = empty_quarantine()
        else:
            table = cols.table(~bad)
            quarantine = self._quarantine(cols, np.flatnonzero(bad))
        if lost:
            quarantine = pa.concat_tables([quarantine, *(self._lost_rows(x) for x in lost)])
        return Batch(table, quarantine, records_read=table.num_rows + quarantine.num_rows)

    def _quarantine(self, cols: _Columns, idx: np.ndarray) -> pa.Table:
        """Quarantine rows for the flagged rows ``idx`` (vectorised: there may be many)."""
        import pyarrow.compute as pc

        from flowatlas.io.importers.base import QUARANTINE_SCHEMA

        status = cols.status[idx]
        positions = pc.binary_join_element_wise(
            "block ",
            pa.array(cols.block[idx]).cast(pa.string()),
            " record ",
            pa.array(cols.rec_no[idx]).cast(pa.string()),
            "",
        )
        reasons = np.empty(idx.size, object)
        details = np.empty(idx.size, object)
        for codes, fname, values in (
            ((_TS_OLD, _TS_FUTURE), "time_start", cols.ts),
            ((_TE_OLD, _TE_FUTURE), "time_end", cols.te),
        ):
            sel = np.flatnonzero(np.isin(status, codes))
            if sel.size:
                old = status[sel] == codes[0]
                reasons[sel] = np.where(old, "time_before_1990", "time_in_future")
                details[sel] = [f"{fname}: {t}" for t in _format_times(values[idx[sel]])]
        for k in np.flatnonzero(status >= _BAD_RECORD).tolist():
            st, a = int(status[k]), int(cols.aux[idx[k]])
            if st == _BAD_RECORD:
                sub, elem = a >> 16, a & 0xFFFF
                text = _SUB_TEXT.get(sub, "malformed record")
                if elem and sub in (_SUB_ELEMENT_LENGTH, _SUB_SHORT_ELEMENT):
                    text += f": element {elem} ({ELEMENTS.get(elem, 'unknown')})"
                reasons[k], details[k] = "nfcapd_bad_record", text
            else:
                unsupported = st == _UNSUPPORTED
                reasons[k] = "nfcapd_unsupported_record" if unsupported else "nfcapd_unknown_record"
                details[k] = f"record type {a} ({RECORD_TYPES.get(a, 'unknown')})"
        return pa.table(
            {
                "source_file": pa.array(np.full(idx.size, self.where, object), pa.string()),
                "position": positions,
                "reason": pa.array(reasons, pa.string()),
                "detail": pa.array(details, pa.string()),
            },
            schema=QUARANTINE_SCHEMA,
        )

    def _lost_rows(self, loss: _Lost) -> pa.Table:
        from flowatlas.io.importers.base import quarantine_rows

        n = loss.count
        return quarantine_rows(self.where, loss.positions(), [loss.reason] * n, [loss.detail] * n)

    def _finish_counts(self) -> None:
        stats = self.stats
        counts = self._rtype_counts
        non_flow = (*_NON_FLOW_RECORDS, _COUNT_SLOTS)
        stats.non_flow_records = int(sum(int(counts[t]) for t in non_flow))
        for rtype in np.flatnonzero(counts[:_COUNT_SLOTS]).tolist():
            if rtype not in RECORD_TYPES:
                stats.unknown[f"record type {rtype}"] += int(counts[rtype])
        if counts[_COUNT_SLOTS + 1]:
            stats.unknown["record type > 255"] += int(counts[_COUNT_SLOTS + 1])
        for et in np.flatnonzero(self._elem_counts).tolist():
            if et not in ELEMENTS and et != 0:
                name = f"extension {et}" if et < _COUNT_SLOTS else "extension > 255"
                stats.unknown[name] += int(self._elem_counts[et])


def _format_times(us: np.ndarray) -> list[str]:
    """Times for quarantine details (microseconds since the epoch, UTC, ISO 8601)."""
    import datetime as dt

    import pyarrow.compute as pc

    try:
        stamps = pa.array(us, pa.timestamp("us", tz="UTC"))
        return pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # beyond what Arrow prints
        pass
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    out = []
    for t in us.tolist():
        try:
            out.append((epoch + dt.timedelta(microseconds=t)).isoformat().replace("+00:00", "Z"))
        except OverflowError:
            out.append(f"{t // 1000} ms after the epoch")
    return out
