"""The compiled walk of classic pcap records (pcap._scan_classic) against the Python walk.

The fast pass must change nothing: the same datagrams with the same packet numbers, and the
same CaptureStats (counts, lost-packet notes, damage), on the shared real captures and on
random and mutated synthetic ones.
"""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest
from test_pcap import SRC6, TS, ether, ipv4, ipv6, ipv6_fragment, pcap, udp

from flowatlas.errors import InputError
from flowatlas.io import pcap as pcap_mod
from flowatlas.io.pcap import CaptureStats, _iter_buffer
from flowatlas.testing import need_data


def walk(data: bytes, fast: bool, stop: int | None = None) -> tuple[list, dict]:
    """Every (number, datagram) and the final stats; with ``stop``, only that many items are
    taken (a consumer that stops part-way, as the importer's sniffer does)."""
    stats = CaptureStats()
    out = []
    try:
        for item in _iter_buffer(memoryview(data), stats, "capture", fast):
            out.append(item)
            if stop is not None and len(out) >= stop:
                break
    except InputError as exc:
        return [("error", str(exc))], {}
    return out, dataclasses.asdict(stats)


def assert_same(data: bytes, stop: int | None = None) -> None:
    assert walk(data, True, stop) == walk(data, False, stop)


def _captures() -> list:
    root = need_data("pcaps")
    kinds = (".pcap", ".cap", ".pcapng")
    files = sorted(p for p in root.rglob("*") if p.suffix in kinds and p.is_file())
    assert files
    return files


def test_shared_captures_unchanged() -> None:
    """Every capture of the shared data, read whole and read part-way."""
    for path in _captures():
        data = path.read_bytes()
        assert_same(data)
        assert_same(data, stop=3)


def test_shared_captures_mutated_unchanged() -> None:
    """The shared classic captures with bytes flipped and the tail cut off."""
    rng = random.Random(16)
    for path in _captures():
        data = bytearray(path.read_bytes())
        if data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1"):
            continue
        head = bytes(data[:24])
        body = data[24 : 24 + 200_000]
        for _ in range(2):
            mutated = bytearray(body)
            for _ in range(rng.randint(1, 12)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            cut = rng.randint(len(mutated) // 2, len(mutated))
            assert_same(head + bytes(mutated[:cut]))


def _random_packet(rng: random.Random, ethernet: bool) -> bytes | tuple[bytes, int]:
    payload = rng.randbytes(rng.choice((0, 1, 7, 8, 40, 300)))
    kind = rng.randrange(12)
    length = None if rng.random() < 0.85 else rng.randrange(0, 400)
    l4 = udp(payload, sport=rng.randrange(65536), dport=rng.randrange(65536), length=length)
    if kind == 0:
        ip = ipv6(l4)
    elif kind == 1:
        ip = ipv6_fragment(l4[:16], 0, True)
    elif kind == 2:
        ip = ipv4(l4[:16], offset=0, more=True, ident=rng.randrange(4))
    elif kind == 3:
        ip = ipv4(l4[16:], offset=16, more=False, ident=rng.randrange(4))
    elif kind == 4:
        ip = ipv4(l4, proto=6)
    elif kind == 5:
        ip = ipv4(l4, total=rng.choice((0, 10, 19, 20, 27, 28, len(l4) + 20 + 5)))
    elif kind == 6:
        ip = bytes([rng.choice((0x44, 0x46, 0x65))]) + ipv4(l4)[1:]
    else:
        ip = ipv4(l4, src=rng.randbytes(4))
    frame = ether(ip, vlans=tuple(rng.randrange(4096) for _ in range(rng.randrange(3))))
    if not ethernet:
        frame = ip
    if rng.random() < 0.05:
        frame = frame[: rng.randrange(len(frame) + 1)]
    if rng.random() < 0.05:
        return frame[: rng.randrange(len(frame) + 1)], len(frame)
    return frame


@pytest.mark.parametrize("seed", range(40))
def test_random_captures_unchanged(seed: int) -> None:
    """Random mixes of plain and other packets, over Ethernet (with VLAN tags) and raw IP,
    in both byte orders, then mutated: bytes flipped, the file cut, a record header broken."""
    rng = random.Random(seed)
    ethernet = seed % 2 == 0
    packets = [_random_packet(rng, ethernet) for _ in range(rng.randint(1, 60))]
    data = pcap(
        packets,
        linktype=1 if ethernet else rng.choice((101, 12, 14, 228)),
        order=rng.choice("<>"),
        nanos=rng.random() < 0.3,
        ts_us=TS + rng.randrange(10**9),
    )
    assert_same(data)
    assert_same(data, stop=rng.randint(1, 5))
    for _ in range(6):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(24, len(mutated))
            mutated[at] = rng.randrange(256)
        if rng.random() < 0.3:  # a record length the file cannot hold
            struct.pack_into("<I", mutated, 24 + 8, 0xFFFFFF)
        cut = rng.randint(24, len(mutated)) if rng.random() < 0.5 else len(mutated)
        assert_same(bytes(mutated[:cut]))


def test_chunk_boundaries_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of plain packets longer than one call of the compiled pass, broken by others."""
    monkeypatch.setattr(pcap_mod, "_SCAN_CHUNK", 3)
    plain = ether(ipv4(udp(b"x" * 20)))
    other = ether(ipv6(udp(b"y" * 20), src=SRC6))
    packets = [plain] * 7 + [other] + [plain] * 3 + [other, other] + [plain] * 6
    data = pcap(packets)
    assert_same(data)
    for stop in range(1, len(packets) + 1):
        assert_same(data, stop=stop)
    fast, _ = walk(data, True)
    assert [n for n, _ in fast] == list(range(1, len(packets) + 1))
