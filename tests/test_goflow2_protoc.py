"""goflow2 protobuf, checked against Python protobuf's own encoding and decoding.

goflow2 itself cannot be installed here (no Debian package, no Go module registry), so the
oracle is the next best independent thing: tests/data/goflow2/flow.proto states goflow2's
documented field numbers, Debian's ``protoc`` compiles it, and Google's protobuf runtime
encodes random messages (every field goflow2 has, repeated and nested ones included) and
decodes them again. flowatlas's hand-written decoder must give, field for field, what
protobuf decoded, after the importer's documented conversions (times to microseconds, a
zero flow start replaced by the receive time, IPv4 addresses mapped into IPv6).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from flowatlas.addresses import format_addresses
from flowatlas.io.importers.base import ImportOptions, detect_format, get_importer
from flowatlas.testing import skip_or_fail, tool_missing

PROTO = Path(__file__).parent / "data" / "goflow2" / "flow.proto"
NOW_US = 1_790_000_000 * 1_000_000
T0_NS = 1_767_324_720_000_000_000  # 2026-01-02
U32 = 2**32 - 1


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """The module protoc generates from flow.proto (skips, or fails in CI, without protoc)."""
    why = tool_missing("protoc")
    if why is None:
        try:
            import google.protobuf  # noqa: F401
        except ImportError:
            why = "the protobuf package is not installed (the test extra brings it)"
    if why:
        skip_or_fail(why)
    out = tmp_path_factory.mktemp("protoc")
    subprocess.run(
        ["protoc", f"--proto_path={PROTO.parent}", f"--python_out={out}", PROTO.name],
        check=True,
        capture_output=True,
    )
    spec = importlib.util.spec_from_file_location("flow_pb2", out / "flow_pb2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["flow_pb2"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["flow_pb2"]


def delimited(messages: list[bytes], sep: bytes = b"") -> bytes:
    """goflow2's file transport: a varint length before each message (protobuf's encoder)."""
    from google.protobuf.internal.encoder import _VarintBytes

    return b"".join(_VarintBytes(len(m)) + m + sep for m in messages)


def read_pb(path: Path) -> tuple[pa.Table, pa.Table, int]:
    opts = ImportOptions(batch_rows=7, extra=(("now_us", NOW_US),))
    batches = list(get_importer("goflow2-pb")().read(path, opts))
    table = pa.concat_tables([b.table for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    return table, quarantine, sum(b.records_read for b in batches)


def random_address(rng: np.random.Generator) -> bytes:
    if rng.random() < 0.5:
        return bytes(rng.integers(1, 224, 1).tolist() + rng.integers(0, 256, 3).tolist())
    return bytes([0x20, 0x01]) + rng.integers(0, 256, 14, dtype=np.uint8).tobytes()


def random_v2(pb, rng: np.random.Generator) -> Any:
    """A FlowMessage with every field set to a random value (some left at proto3 defaults)."""
    m = pb.FlowMessage()
    m.type = int(rng.integers(0, 5))
    m.time_received_ns = T0_NS + int(rng.integers(0, 86_400 * 10**9))
    m.sequence_num = int(rng.integers(0, U32))
    m.sampling_rate = int(rng.choice([0, 1, 100, 1000, 2**31]))
    m.sampler_address = random_address(rng)
    if rng.random() < 0.9:  # else 0: the importer takes the receive time
        m.time_flow_start_ns = m.time_received_ns - int(rng.integers(0, 600 * 10**9))
        m.time_flow_end_ns = m.time_flow_start_ns + int(rng.integers(0, 60 * 10**9))
    m.bytes = int(rng.choice([1, 64, 1500, 2**40, 2**63 - 1]))
    m.packets = int(rng.integers(1, 2**20))
    m.src_addr = random_address(rng)
    m.dst_addr = random_address(rng)
    m.etype = 0x86DD if len(m.src_addr) == 16 else 0x0800
    m.proto = int(rng.choice([0, 1, 6, 17, 58, 255]))
    m.src_port, m.dst_port = (int(x) for x in rng.integers(0, 65_536, 2))
    m.in_if, m.out_if = (int(x) for x in rng.integers(0, U32, 2, endpoint=True))
    m.src_as, m.dst_as = (int(x) for x in rng.integers(0, U32, 2, endpoint=True))
    # fields flowatlas does not read: they must be skipped, whatever their wire type
    m.src_mac, m.dst_mac = (int(x) for x in rng.integers(0, 2**48, 2))
    m.src_vlan, m.dst_vlan, m.vlan_id = (int(x) for x in rng.integers(0, 4096, 3))
    m.ip_tos, m.ip_ttl, m.ip_flags, m.tcp_flags = (int(x) for x in rng.integers(0, 256, 4))
    m.forwarding_status, m.icmp_type, m.icmp_code = (int(x) for x in rng.integers(0, 256, 3))
    m.ipv6_flow_label, m.fragment_id, m.fragment_offset = (
        int(x) for x in rng.integers(0, 2**20, 3)
    )
    m.next_hop = random_address(rng)
    m.next_hop_as, m.src_net, m.dst_net = int(rng.integers(0, U32)), 24, 48
    m.bgp_next_hop = random_address(rng)
    m.bgp_communities.extend(int(x) for x in rng.integers(0, U32, int(rng.integers(0, 4))))
    m.as_path.extend(int(x) for x in rng.integers(1, U32, int(rng.integers(0, 6))))
    m.mpls_ttl.extend([64, 63][: int(rng.integers(0, 3))])
    m.mpls_label.extend(int(x) for x in rng.integers(16, 2**20, int(rng.integers(0, 3))))
    m.mpls_ip.extend(random_address(rng) for _ in range(int(rng.integers(0, 3))))
    m.observation_domain_id, m.observation_point_id = (int(x) for x in rng.integers(0, U32, 2))
    m.layer_stack.extend(int(x) for x in rng.integers(0, 12, int(rng.integers(0, 5))))
    m.ipv6_routing_header_addresses.extend(
        random_address(rng) for _ in range(int(rng.integers(0, 2)))
    )
    m.ipv6_routing_header_seg_left = int(rng.integers(0, 4))
    return m


def as_ipv6_text(raw: bytes) -> str:
    """The archive's text form of an address goflow2 sent as 4 or 16 bytes."""
    return str(ipaddress.ip_address(raw))


def expected_v2(m: Any) -> dict[str, Any]:
    start_ns = m.time_flow_start_ns or m.time_received_ns
    end_ns = m.time_flow_end_ns or start_ns
    return {
        "time_start": start_ns // 1000,
        "time_end": end_ns // 1000,
        "exporter": as_ipv6_text(m.sampler_address),
        "src_addr": as_ipv6_text(m.src_addr),
        "dst_addr": as_ipv6_text(m.dst_addr),
        "bytes": m.bytes,
        "packets": m.packets,
        "sampling_rate": m.sampling_rate,
        "proto": m.proto,
        "src_port": m.src_port,
        "dst_port": m.dst_port,
        "in_if": m.in_if,
        "out_if": m.out_if,
        "src_as": m.src_as,
        "dst_as": m.dst_as,
    }


def archive_rows(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for name in ("exporter", "src_addr", "dst_addr"):
        for row, text in zip(rows, format_addresses(table[name]), strict=True):
            row[name] = text
    for row in rows:
        for name in ("time_start", "time_end"):
            ts = row[name]
            row[name] = int(ts.timestamp()) * 1_000_000 + ts.microsecond
    return rows


@pytest.mark.tools
@pytest.mark.parametrize("sep", [b"", b"\n"])
def test_v2_messages_field_for_field_against_protobuf(pb, tmp_path, sep) -> None:
    rng = np.random.default_rng(7)
    messages = [random_v2(pb, rng) for _ in range(400)]
    blobs = [m.SerializeToString() for m in messages]
    f = tmp_path / "flows.pb"
    f.write_bytes(delimited(blobs, sep))
    assert detect_format(f) == "goflow2-pb"
    table, quarantine, read = read_pb(f)
    assert read == len(messages) and quarantine.num_rows == 0, quarantine.to_pylist()[:3]
    decoded = [pb.FlowMessage.FromString(b) for b in blobs]  # protobuf's own decoding
    assert decoded == messages
    got = archive_rows(table)
    for i, (row, m) in enumerate(zip(got, decoded, strict=True)):
        want = expected_v2(m)
        assert {k: row[k] for k in want} == want, f"message {i}"


@pytest.mark.tools
def test_v1_messages_times_in_seconds(pb, tmp_path) -> None:
    """goflow (v1) kept times in seconds under other field numbers."""
    rng = np.random.default_rng(8)
    messages = []
    for _ in range(100):
        m = pb.FlowMessageV1()
        m.Type = 3
        m.TimeReceived = T0_NS // 10**9 + int(rng.integers(0, 86_400))
        m.TimeFlowStart = m.TimeReceived - int(rng.integers(1, 600))
        m.TimeFlowEnd = m.TimeFlowStart + int(rng.integers(0, 60))
        m.SamplingRate = int(rng.choice([1, 512]))
        m.SamplerAddress = random_address(rng)
        m.Bytes, m.Packets = int(rng.integers(1, 2**32)), int(rng.integers(1, 2**16))
        m.SrcAddr, m.DstAddr = random_address(rng), random_address(rng)
        m.Proto, m.SrcPort, m.DstPort = 6, int(rng.integers(0, 65_536)), 443
        m.InIf, m.OutIf = int(rng.integers(0, 100)), int(rng.integers(100, 200))
        m.SrcAS, m.DstAS = int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32))
        m.SrcMac = int(rng.integers(0, 2**48))
        messages.append(m)
    blobs = [m.SerializeToString() for m in messages]
    f = tmp_path / "v1.pb"
    f.write_bytes(delimited(blobs))
    table, quarantine, read = read_pb(f)
    assert read == 100 and quarantine.num_rows == 0
    for row, m in zip(archive_rows(table), map(pb.FlowMessageV1.FromString, blobs), strict=True):
        assert row["time_start"] == m.TimeFlowStart * 1_000_000
        assert row["time_end"] == m.TimeFlowEnd * 1_000_000
        assert (row["src_addr"], row["dst_addr"], row["exporter"]) == (
            as_ipv6_text(m.SrcAddr),
            as_ipv6_text(m.DstAddr),
            as_ipv6_text(m.SamplerAddress),
        )
        assert (row["bytes"], row["packets"], row["sampling_rate"]) == (
            m.Bytes,
            m.Packets,
            m.SamplingRate,
        )
        assert (row["in_if"], row["out_if"], row["src_as"], row["dst_as"]) == (
            m.InIf,
            m.OutIf,
            m.SrcAS,
            m.DstAS,
        )
        assert (row["proto"], row["src_port"], row["dst_port"]) == (m.Proto, m.SrcPort, m.DstPort)


@pytest.mark.tools
def test_zero_counters_are_quarantined_not_dropped(pb, tmp_path) -> None:
    """proto3 leaves a zero out of the message, so a flow of 0 bytes arrives without the
    field; it is quarantined with a reason and counted, never dropped."""
    rng = np.random.default_rng(9)
    good = random_v2(pb, rng)
    empty = random_v2(pb, rng)
    empty.bytes = 0
    f = tmp_path / "zero.pb"
    f.write_bytes(delimited([m.SerializeToString() for m in (good, empty)]))
    table, quarantine, read = read_pb(f)
    assert read == 2
    assert [r["bytes"] for r in archive_rows(table)] == [good.bytes]
    assert quarantine["reason"].to_pylist() == ["missing_counter"]
    assert quarantine["position"].to_pylist() == ["message 2"]
