"""goflow2 JSON lines (v1 and v2 keys) and length-prefixed protobuf."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from flowatlas.addresses import format_addresses
from flowatlas.io.importers.base import ImportOptions, detect_format, get_importer

NOW_US = 1_790_000_000 * 1_000_000
T0_NS = 1_767_324_720_000_000_000  # 2026-01-02


def read_all(fmt: str, path: Path) -> tuple[pa.Table, pa.Table, int]:
    opts = ImportOptions(batch_rows=2, extra=(("now_us", NOW_US),))
    batches = list(get_importer(fmt)().read(path, opts))
    table = pa.concat_tables([b.table for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    read = sum(b.records_read for b in batches)
    assert read == table.num_rows + quarantine.num_rows
    return table, quarantine, read


V2 = {
    "type": "IPFIX",
    "time_received_ns": T0_NS + 787_460_121,
    "sequence_num": 65361,
    "sampling_rate": 1000,
    "sampler_address": "192.168.88.1",
    "time_flow_start_ns": T0_NS,
    "time_flow_end_ns": T0_NS + 2_000_000_000,
    "bytes": 143,
    "packets": 1,
    "src_addr": "192.168.89.2",
    "dst_addr": "2001:db8::30",
    "etype": "IPv6",
    "proto": "UDP",
    "src_port": 53,
    "dst_port": 55743,
    "in_if": 11,
    "out_if": 12,
    "src_as": 64500,
    "dst_as": 0,
}
V1 = {
    "Type": "SFLOW_5",
    "TimeReceived": 1621820000,
    "TimeFlowStart": 0,
    "TimeFlowEnd": 0,
    "Bytes": 70,
    "Packets": 1,
    "SamplingRate": 100,
    "SamplerAddress": "192.168.1.254",
    "DstAddr": "10.0.0.1",
    "SrcAddr": "192.168.1.1",
    "InIf": 1,
    "OutIf": 2,
    "Etype": 2048,
    "Proto": 6,
    "SrcPort": 443,
    "DstPort": 46344,
}


def test_json_v2_and_v1_and_bad_lines(tmp_path):
    f = tmp_path / "goflow2.log"
    lines = [
        json.dumps(V2),
        json.dumps(V1),
        "",
        '{"type": "IPFIX", "bytes": 5, ',  # cut off mid-object
        "[1, 2, 3]",
        json.dumps({**V2, "bytes": -1}),
        json.dumps({**V2, "bytes": 2**64}),
        json.dumps({**V2, "src_addr": "not.an.ip"}),
        json.dumps({**V2, "time_flow_start_ns": 0, "time_received_ns": 0}),
        json.dumps({**V2, "proto": 6, "bytes": "12"}),
    ]
    f.write_text("\n".join(lines) + "\n")
    assert detect_format(f) == "goflow2-json"
    table, quarantine, read = read_all("goflow2-json", f)
    assert read == 9 and table.num_rows == 3
    q = dict(zip(quarantine["position"].to_pylist(), quarantine["reason"].to_pylist(), strict=True))
    assert q == {
        "line 4": "bad_json",
        "line 5": "bad_json",
        "line 6": "negative_counter",
        "line 7": "counter_overflow",
        "line 8": "bad_address",
        "line 9": "time_before_1990",
    }
    rows = table.to_pylist()
    v2, v1, v2b = rows
    assert (v2["bytes"], v2["sampling_rate"], v2["proto"], v2["in_if"]) == (143, 1000, 17, 11)
    assert v2["time_start"].timestamp() == T0_NS / 1e9
    assert (v2["time_end"] - v2["time_start"]).total_seconds() == 2
    # v1: seconds; a zero flow start takes the time goflow2 received the sample
    assert v1["time_start"].timestamp() == 1621820000 and v1["proto"] == 6
    assert v2b["bytes"] == 12 and v2b["proto"] == 6
    assert format_addresses(table["exporter"]) == ["192.168.88.1", "192.168.1.254", "192.168.88.1"]
    assert format_addresses(table["dst_addr"])[0] == "2001:db8::30"


# ---- protobuf, encoded here by hand (the wire format is small)


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num: int, v: int) -> bytes:
    return varint(num << 3) + varint(v)


def field_bytes(num: int, v: bytes) -> bytes:
    return varint((num << 3) | 2) + varint(len(v)) + v


def flow_message(**kw) -> bytes:
    msg = field_varint(1, 4)  # IPFIX
    msg += field_varint(110, kw.get("received", T0_NS))
    msg += field_varint(111, kw.get("start", T0_NS))
    msg += field_varint(112, kw.get("end", T0_NS + 10**9))
    msg += field_varint(3, kw.get("rate", 512))
    msg += field_bytes(11, bytes([10, 0, 0, 254]))
    msg += field_varint(9, kw.get("bytes", 1500))
    msg += field_varint(10, 3)
    msg += field_bytes(6, kw.get("src", bytes([192, 0, 2, 1])))
    msg += field_bytes(7, bytes(16))
    msg += field_varint(20, 6)
    msg += field_varint(21, 443)
    msg += field_varint(22, 50000)
    msg += field_varint(14, 64500)
    msg += field_varint(102, 64500)  # repeated as_path: ignored
    return msg


@pytest.mark.parametrize("sep", [b"", b"\n"])
def test_protobuf_length_prefixed(tmp_path, sep):
    msgs = [flow_message(), flow_message(bytes=7, src=bytes(range(16))), flow_message(src=b"12")]
    data = b"".join(varint(len(m)) + m + sep for m in msgs)
    f = tmp_path / "flows.pb"
    f.write_bytes(data + varint(500) + b"\x08\x04")  # a cut-off last message
    assert detect_format(f) == "goflow2-pb"
    table, quarantine, read = read_all("goflow2-pb", f)
    assert read == 4 and table.num_rows == 2
    assert sorted(quarantine["reason"].to_pylist()) == ["bad_address", "bad_protobuf"]
    rows = table.to_pylist()
    assert (rows[0]["bytes"], rows[0]["sampling_rate"], rows[0]["src_as"]) == (1500, 512, 64500)
    assert format_addresses(table["src_addr"]) == ["192.0.2.1", "1:203:405:607:809:a0b:c0d:e0f"]
    assert format_addresses(table["exporter"]) == ["10.0.0.254"] * 2
    assert rows[0]["time_start"].timestamp() == T0_NS / 1e9


def test_protobuf_stream_reads_in_small_chunks():
    """Messages split across read boundaries decode the same as from one buffer."""
    import io

    from flowatlas.io.importers.goflow2 import iter_delimited

    msgs = [flow_message(bytes=i) for i in range(50)]
    for sep in (b"", b"\n"):
        data = b"".join(varint(len(m)) + m + sep for m in msgs)
        whole = [m for _, m, _ in iter_delimited(data)]
        for chunk in (1, 3, 7, 64):
            got = [m for _, m, _ in iter_delimited(io.BytesIO(data), chunk=chunk)]
            assert got == whole == msgs


def test_protobuf_corrupt_length_prefix_ends_the_stream_cleanly():
    """A length prefix of 2^63 (random bytes read as goflow2-pb) is a problem, not a read of
    the whole length: no MemoryError, nothing buffered beyond the data."""
    import io

    from flowatlas.io.importers.goflow2 import MAX_MESSAGE, iter_delimited

    ok = flow_message(bytes=7)
    for length in (2**63, MAX_MESSAGE + 1):
        data = varint(len(ok)) + ok + varint(length) + b"\x00" * 100
        got = list(iter_delimited(io.BytesIO(data), chunk=16))
        assert [m for _, m, _ in got] == [ok, None]
        assert got[-1][2] == f"implausible message length ({length} bytes)"
    # a plausible length past the end of the data: truncated, after reading what there is
    data = varint(len(ok)) + ok + varint(5000) + b"\x01" * 10
    got = list(iter_delimited(io.BytesIO(data), chunk=16))
    assert got[-1][1] is None and got[-1][2].startswith("truncated message (")


def test_json_wrong_types_are_quarantined(tmp_path):
    rows = [
        V2,
        {**V2, "bytes": [1, 2]},
        {**V2, "bytes": True},
        {**V2, "src_addr": 12345},
        {**V2, "proto": {"x": 1}},
        {**V2, "bytes": 1.5},
        {**V2, "sampling_rate": -3},
        {**V2, "time_flow_start_ns": "soon"},
        {**V2, "bytes": "1" * 400},
    ]
    f = tmp_path / "types.json"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    table, quarantine, read = read_all("goflow2-json", f)
    assert read == 9 and table.num_rows == 1
    assert quarantine["reason"].to_pylist() == [
        "bad_counter",
        "bad_counter",
        "bad_address",
        "bad_proto",
        "bad_counter",
        "bad_sampling_rate",
        "bad_time",
        "counter_overflow",
    ]


def test_records_without_addresses_are_quarantined(tmp_path):
    f = tmp_path / "noaddr.json"
    no_addr = {k: v for k, v in V2.items() if k not in ("src_addr", "dst_addr")}
    f.write_text(json.dumps(no_addr) + "\n" + json.dumps(no_addr) + "\n")
    table, quarantine, read = read_all("goflow2-json", f)
    assert read == 2 and table.num_rows == 0
    assert quarantine["reason"].to_pylist() == ["missing_address"] * 2
