"""The oracle for the native nfcapd reader: nfdump's own text output, parsed strictly here.

Nothing here comes from the code under test. nfdump prints each record with ``-o fmt:`` (UTC,
plain numbers, full IPv6 addresses); every line is parsed by a regular expression and
``ipaddress``, and a line that does not parse fails the test with the line in the message.
The result is the list of rows flow schema v1 should hold, plus what the shared time checks
quarantine, decided here with the rules docs/importing.md states.

Also here: rewriting an nfcapd file's blocks in another compression (for ZSTD, which the
installed nfdump cannot write) and small surgery helpers for the damage tests.
"""

from __future__ import annotations

import ipaddress
import os
import re
import struct
import subprocess
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

FMT = "%ts|%te|%ra|%in|%out|%sa|%da|%sp|%dp|%pr|%ibyt|%ipkt|%sas|%das"
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")
_UINT = re.compile(r"^\d+$")
_ICMP = re.compile(r"^(\d{1,3})\.(\d{1,3})$")
MIN_US = 631_152_000 * 1_000_000  # 1990-01-01
DAY_US = 86_400 * 1_000_000
#: the columns of flow schema v1, in order: the rows below are tuples in this order
COLUMNS = (
    "time_start",
    "time_end",
    "exporter",
    "in_if",
    "out_if",
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "proto",
    "bytes",
    "packets",
    "sampling_rate",
    "src_as",
    "dst_as",
)


class OracleError(AssertionError):
    """nfdump printed something the oracle cannot read."""


def nfdump_lines(path: Path, binary: str = "nfdump") -> list[str]:
    """nfdump's ``fmt`` output for ``path``: one line per record; stderr must stay empty."""
    env = dict(os.environ, TZ="UTC", LC_ALL="C")
    out = subprocess.run(
        [binary, "-q", "-N", "-6", "-r", str(path), "-o", f"fmt:{FMT}"],
        capture_output=True,
        env=env,
        check=False,
    )
    if out.returncode != 0 or out.stderr.strip():
        raise OracleError(f"{path}: nfdump failed ({out.returncode}): {out.stderr[:300]!r}")
    lines = out.stdout.decode("ascii").splitlines()
    return [ln for ln in lines if ln.strip() != "No matching flows"]


def _time_us(text: str, line: str) -> int:
    m = _TIME.match(text)
    if not m:
        raise OracleError(f"cannot parse time {text!r} in {line!r}")
    y, mo, d, h, mi, s, ms = (int(g) for g in m.groups())
    when = datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc)
    return int(when.timestamp()) * 1_000_000 + ms * 1000


def _address(text: str, line: str) -> bytes:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise OracleError(f"cannot parse address {text!r} in {line!r}") from None
    if addr.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + addr.packed
    value = int(addr)
    if (1 << 24) <= value < (1 << 32):  # nfdump 1.7.1 prints some IPv4 as ::a.b.c.d
        return b"\x00" * 10 + b"\xff\xff" + value.to_bytes(4, "big")
    return addr.packed


def _uint(text: str, line: str, bits: int) -> int:
    if not _UINT.match(text):
        raise OracleError(f"cannot parse number {text!r} in {line!r}")
    value = int(text)
    if value >= 1 << bits:
        raise OracleError(f"{text} does not fit {bits} bits in {line!r}")
    return value


def _port(text: str, line: str) -> int:
    m = _ICMP.match(text)  # ICMP type.code
    if m:
        return int(m.group(1)) * 256 + int(m.group(2))
    return _uint(text, line, 16)


def parse_line(line: str) -> tuple:
    """One line of nfdump's ``fmt`` output as a flow schema v1 row (a tuple in COLUMNS order)."""
    parts = [p.strip() for p in line.split("|")]
    if len(parts) != 14:
        raise OracleError(f"expected 14 fields, got {len(parts)}: {line!r}")
    ts, te, ra, i_in, i_out, sa, da, sp, dp, pr, byt, pkt, sas, das = parts
    return (
        _time_us(ts, line),
        _time_us(te, line),
        _address(ra, line),
        _uint(i_in, line, 32),
        _uint(i_out, line, 32),
        _address(sa, line),
        _address(da, line),
        _uint(sp, line, 16),
        _port(dp, line),
        _uint(pr, line, 8),
        _uint(byt, line, 64),
        _uint(pkt, line, 64),
        0,  # sampling_rate: nfcapd scales the counters
        _uint(sas, line, 32),
        _uint(das, line, 32),
    )


def expected(path: Path, now_us: int, binary: str = "nfdump") -> tuple[list[tuple], Counter]:
    """(rows an import must write, sorted; quarantine reasons it must count) for ``path``."""
    rows: list[tuple] = []
    reasons: Counter[str] = Counter()
    for line in nfdump_lines(path, binary):
        row = parse_line(line)
        why = None
        for t in (row[0], row[1]):
            if t < MIN_US:
                why = "time_before_1990"
            elif t > now_us + DAY_US:
                why = "time_in_future"
            if why:
                break
        if why:
            reasons[why] += 1
        else:
            rows.append(row)
    return sorted(rows), reasons


def table_rows(table: pa.Table) -> list[tuple]:
    """A flow schema v1 table as sorted tuples comparable with :func:`expected`."""
    cols = []
    for name in COLUMNS:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols.append(col.to_pylist())
    return sorted(zip(*cols, strict=True))


# --------------------------------------------------------------------------- file surgery

HEADER = struct.Struct("<HHIqBBHIqII")
BLOCK = struct.Struct("<IIHH")


def blocks(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """(offset, records, size, type, flags) of the data blocks of an nfcapd file's bytes."""
    h = HEADER.unpack_from(data, 0)
    off, out = HEADER.size, []
    for _ in range(h[10]):
        nrec, size, btype, flags = BLOCK.unpack_from(data, off)
        out.append((off, nrec, size, btype, flags))
        off += BLOCK.size + size
    return out


def recompress(src: Path, dst: Path, compression: int, level: int = 3) -> None:
    """Rewrite an uncompressed nfcapd file with every block (and the appendix) compressed.

    Used for ZSTD (4): nfdump 1.7.1 cannot write it; nfdump 1.7.2 and later compress each
    block as one zstd frame, as this does.
    """
    import zstandard

    data = src.read_bytes()
    h = list(HEADER.unpack_from(data, 0))
    if h[4] != 0:
        raise ValueError(f"{src}: not an uncompressed nfcapd file")
    out = bytearray()
    off = HEADER.size
    n_blocks = h[10] + h[6]
    appendix_at = None
    for i in range(n_blocks):
        nrec, size, btype, flags = BLOCK.unpack_from(data, off)
        payload = data[off + BLOCK.size : off + BLOCK.size + size]
        packed = zstandard.ZstdCompressor(level=level).compress(payload)
        if i == h[10]:
            appendix_at = HEADER.size + len(out)
        out += BLOCK.pack(nrec, len(packed), btype, flags) + packed
        off += BLOCK.size + size
    h[4] = compression
    if appendix_at is not None:
        h[8] = appendix_at
    dst.write_bytes(HEADER.pack(*h) + bytes(out))
