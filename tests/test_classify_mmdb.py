"""MaxMind DB source (optional ``maxminddb``): a tiny database written here by a minimal MMDB
writer (format: MaxMind DB spec v2.0), read back by maxminddb itself and by our reader."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from flowatlas.addresses import parse_addresses
from flowatlas.classify import build_table
from flowatlas.config import SourceSpec

maxminddb = pytest.importorskip("maxminddb")

_TYPES = {"pointer": 1, "utf8": 2, "uint16": 5, "uint32": 6, "map": 7, "uint64": 9, "array": 11}


def _head(kind: str, size: int) -> bytes:
    t = _TYPES[kind]
    ctrl, ext = (t << 5, b"") if t <= 7 else (0, bytes([t - 7]))
    if size < 29:
        return bytes([ctrl | size]) + ext
    if size < 285:
        return bytes([ctrl | 29]) + ext + bytes([size - 29])
    return bytes([ctrl | 30]) + ext + struct.pack(">H", size - 285)


def _encode(v) -> bytes:
    if isinstance(v, tuple):  # (type, int): metadata fields have fixed integer types
        kind, n = v
        b = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
        return _head(kind, len(b)) + b
    if isinstance(v, dict):
        return _head("map", len(v)) + b"".join(_encode(str(k)) + _encode(x) for k, x in v.items())
    if isinstance(v, list):
        return _head("array", len(v)) + b"".join(_encode(x) for x in v)
    if isinstance(v, str):
        b = v.encode()
        return _head("utf8", len(b)) + b
    if isinstance(v, int):
        b = v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""
        return _head("uint32" if v < 2**32 else "uint64", len(b)) + b
    raise TypeError(v)


def write_mmdb(path, networks: dict[str, dict], database_type: str = "Test-City") -> None:
    """An IPv6 MMDB (record size 32) holding ``networks`` (IPv4 at ::a.b.c.d/96+n)."""
    data = b""
    root: dict = {}
    # less specific first; a more specific network splits its parent's leaf
    for text, record in sorted(
        networks.items(), key=lambda kv: ipaddress.ip_network(kv[0]).prefixlen
    ):
        net = ipaddress.ip_network(text)
        if net.version == 4:
            value, plen = int(net.network_address), net.prefixlen + 96
        else:
            value, plen = int(net.network_address), net.prefixlen
        offset = len(data)
        data += _encode(record)
        node = root
        for depth in range(plen):
            bit = (value >> (127 - depth)) & 1
            if depth == plen - 1:
                node[bit] = ("data", offset)
            else:
                child = node.get(bit)
                if not isinstance(child, dict):
                    node[bit] = {0: child, 1: child} if child is not None else {}
                node = node[bit]
    order, queue = [], [root]
    while queue:
        n = queue.pop(0)
        order.append(n)
        queue.extend(c for c in (n.get(0), n.get(1)) if isinstance(c, dict))
    number = {id(n): i for i, n in enumerate(order)}
    count = len(order)

    def record(child) -> int:
        if child is None:
            return count
        if isinstance(child, dict):
            return number[id(child)]
        return count + 16 + child[1]

    tree = b"".join(struct.pack(">II", record(n.get(0)), record(n.get(1))) for n in order)
    meta = {
        "node_count": ("uint32", count),
        "record_size": ("uint16", 32),
        "ip_version": ("uint16", 6),
        "database_type": database_type,
        "languages": ["en"],
        "binary_format_major_version": ("uint16", 2),
        "binary_format_minor_version": ("uint16", 0),
        "build_epoch": ("uint64", 1_767_225_600),
        "description": {"en": "flowatlas test database"},
    }
    path.write_bytes(tree + b"\x00" * 16 + data + b"\xab\xcd\xefMaxMind.com" + _encode(meta))


def test_mmdb_country_and_metro(tmp_path) -> None:
    db = tmp_path / "city.mmdb"
    write_mmdb(
        db,
        {
            "1.2.3.0/24": {"country": {"iso_code": "AU"}, "city": {"names": {"en": "Sydney"}}},
            "1.2.3.128/25": {"country": {"iso_code": "AU"}, "city": {"names": {"en": "Perth"}}},
            "2001:db8::/32": {"country": {"iso_code": "NL"}},
        },
    )
    with maxminddb.open_database(str(db)) as r:  # the writer is right by maxminddb's account
        assert r.get("1.2.3.4")["city"]["names"]["en"] == "Sydney"
    table = build_table([SourceSpec(str(db), "auto")])
    hi, lo, _ = parse_addresses(["1.2.3.4", "1.2.3.200", "2001:db8::1", "9.9.9.9"])
    got = [table.describe(int(i)) for i in table.lookup(hi, lo)]
    assert [(g["country"], g["metro"]) for g in got] == [
        ("AU", "Sydney"),
        ("AU", "Perth"),
        ("NL", None),
        (None, None),
    ]
    # an MMDB tree splits a /24 around a more specific /25: the matched half is a /25
    assert got[0]["prefix"] == "1.2.3.0/25" and table.sources[0]["format"] == "mmdb"
    assert table.sources[0]["date"] == "2026-01-01T00:00:00Z"


def test_mmdb_asn_database_gives_asn_and_org(tmp_path) -> None:
    db = tmp_path / "asn.mmdb"
    write_mmdb(
        db,
        {"5.6.0.0/16": {"autonomous_system_number": 64500, "autonomous_system_organization": "Ex"}},
        database_type="Test-ASN",
    )
    table = build_table([SourceSpec(str(db), "mmdb")])
    hi, lo, _ = parse_addresses(["5.6.7.8"])
    d = table.describe(int(table.lookup(hi, lo)[0]))
    assert (d["asn"], d["org"]) == (64500, "Ex")
