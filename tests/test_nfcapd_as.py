"""AS numbers, next to interfaces, through a real nfcapd: the fields no shared file exercises.

Every nfcapd file in the shared data has AS 0 (softflowd) or the same AS on both ends, so a
reader that swapped ``src_as`` and ``dst_as`` passed every test (bench/mutate.py found it).
Here NetFlow v5 packets with distinct AS numbers and interfaces on each end are built by hand,
sent over loopback to Debian's nfcapd, and the file it writes is read by the native reader and
by nfdump: the two must agree field for field, and with what was sent.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from test_import_pipeline import collected_file, nfcapd_collector
from test_nfcapd import assert_matches_nfdump, read_native

from flowatlas.addresses import format_addresses
from flowatlas.testing import need_tools

UNIX_SECS = 1_767_225_600  # 2026-01-01 00:00:00 UTC
UPTIME_MS = 3_600_000


def v5_packet(records: list[dict], sequence: int) -> bytes:
    """A NetFlow v5 export: the 24-byte header, then 48 bytes per record (RFC-less, Cisco's
    documented layout)."""
    head = struct.pack(">HHIIIIBBH", 5, len(records), UPTIME_MS, UNIX_SECS, 0, sequence, 0, 0, 0)
    body = b"".join(
        struct.pack(
            ">4s4s4sHHIIIIHHBBBBHHBBH",
            socket.inet_aton(r["src"]),
            socket.inet_aton(r["dst"]),
            socket.inet_aton("192.0.2.254"),
            r["in_if"],
            r["out_if"],
            r["packets"],
            r["bytes"],
            UPTIME_MS - 5_000,
            UPTIME_MS - 1_000,
            r["sport"],
            r["dport"],
            0,
            0x18,
            6,
            0,
            r["src_as"],
            r["dst_as"],
            24,
            16,
            0,
        )
        for r in records
    )
    return head + body


RECORDS = [
    {
        "src": f"198.51.100.{i}",
        "dst": f"203.0.113.{100 + i}",
        "in_if": 10 + i,
        "out_if": 200 + i,
        "packets": 10 + i,
        "bytes": 1_000 * (10 + i),
        "sport": 40_000 + i,
        "dport": 443,
        "src_as": 64_500 + i,
        "dst_as": 65_000 + 2 * i,
    }
    for i in range(1, 25)
]


def collect(workdir: Path) -> Path:
    """Send RECORDS to a real nfcapd on loopback; return the file it wrote."""
    with nfcapd_collector(workdir) as (flowdir, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for n, chunk in enumerate((RECORDS[:12], RECORDS[12:])):
                s.sendto(v5_packet(chunk, sequence=12 * n), ("127.0.0.1", port))
    return collected_file(flowdir)


@pytest.mark.tools
def test_as_numbers_and_interfaces_through_a_real_nfcapd(tmp_path) -> None:
    need_tools("nfcapd", "nfdump")
    path = collect(tmp_path)
    assert assert_matches_nfdump(path) == len(RECORDS)  # native == nfdump, field for field
    table, quarantine, _ = read_native(path)
    assert quarantine.num_rows == 0
    got = {
        (src, row["src_as"], row["dst_as"], row["in_if"], row["out_if"], row["bytes"])
        for src, row in zip(format_addresses(table["src_addr"]), table.to_pylist(), strict=True)
    }
    sent = {
        (r["src"], r["src_as"], r["dst_as"], r["in_if"], r["out_if"], r["bytes"]) for r in RECORDS
    }
    assert got == sent
