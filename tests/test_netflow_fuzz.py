"""Fuzzing the NetFlow decoder and the pcap reader with random and mutated real input.

Whatever the bytes, two things must hold: no exception other than
:class:`flowatlas.errors.InputError` escapes (and the decoder raises none at all), and every
flow record read is either decoded or quarantined. CI runs a bounded number of examples,
derandomised so that it is repeatable; ``--full`` (or FLOWATLAS_FULL=1) runs a long,
random search.
"""

from __future__ import annotations

import functools
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowatlas.errors import InputError
from flowatlas.io.importers.base import ImportOptions
from flowatlas.io.importers.netflow_pcap import NetflowPcapImporter
from flowatlas.io.netflow import REASONS, NetflowDecoder
from flowatlas.io.pcap import CaptureStats, iter_datagrams
from flowatlas.schema import FLOW_SCHEMA_V1
from flowatlas.testing import need_data

#: a failing example of real packets is large; its repr must not turn into the failure
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

EXPORTER = b"\x00" * 10 + b"\xff\xff" + bytes([192, 0, 2, 1])
#: quarantine reasons whose rows stand for flowsets or packets, not for counted flow records
NOT_RECORDS = {
    "template_never_arrived",
    "bad_flowset_length",
    "bad_header",
    "not_netflow",
}
BOUNDED = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG = settings(
    max_examples=5_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- seeds


def _set(set_id: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(">HH", set_id, 4 + len(body)) + body


def _template(set_id: int, tid: int, fields: list[tuple[int, int]]) -> bytes:
    return _set(set_id, struct.pack(">HH", tid, len(fields)) + b"".join(
        struct.pack(">HH", *f) for f in fields
    ))  # fmt: skip


FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4), (22, 4), (21, 4), (34, 4)]
RECORD = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack(">HHBIIIII", 1, 2, 6, 100, 2, 9000,
                                                          9500, 1)  # fmt: skip
V9 = [
    struct.pack(">HHIIII", 9, 2, 10_000, 1_700_000_000, 1, 0)
    + _template(0, 256, FIELDS)
    + _set(256, RECORD * 3),
    struct.pack(">HHIIII", 9, 1, 10_000, 1_700_000_000, 2, 0)
    + _set(1, struct.pack(">HHHHHHHHH", 300, 4, 8, 1, 4, 34, 4, 35, 1))
    + _set(300, struct.pack(">IIB", 0, 100, 2)),
]
IPFIX_BODY = _template(2, 256, [(8, 4), (12, 4), (152, 8), (153, 8), (1, 8), (96, 0xFFFF)]) + _set(
    256, bytes(8) + struct.pack(">QQQ", 1_700_000_000_000, 1_700_000_000_500, 7) + b"\3abc"
)
IPFIX = struct.pack(">HHIII", 10, 16 + len(IPFIX_BODY), 1_700_000_001, 1, 0) + IPFIX_BODY
V5 = struct.pack(">HHIIIIBBH", 5, 2, 10_000, 1_700_000_000, 0, 1, 0, 0, 100) + (
    bytes(range(48)) * 2
)
#: sequences of payloads, in the order an exporter would send them
BUILT_SEEDS: list[list[bytes]] = [V9, [IPFIX, IPFIX], [V5], [V9[1], V9[0], IPFIX, V5]]


def _pcap(payloads: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, p in enumerate(payloads):
        udp = struct.pack(">HHHH", 1000, 2055, 8 + len(p), 0) + p
        ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0) + EXPORTER[12:] * 2
        frame = b"\2" * 6 + b"\4" * 6 + b"\x81\x00\x00\x07\x08\x00" + ip + udp
        out += struct.pack("<IIII", 1_700_000_000, i, len(frame), len(frame)) + frame
    return out


def _pcapng(payloads: list[bytes]) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 101, 0, 0) + struct.pack("<HHB3xHH", 9, 1, 9, 0, 0))
    out += block(1, struct.pack("<HHI", 1, 0, 0))
    for i, p in enumerate(payloads):
        udp = struct.pack(">HHHH", 1000, 2055, 8 + len(p), 0) + p
        ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0) + EXPORTER[12:] * 2
        data = ip if i % 2 == 0 else b"\2" * 12 + b"\x08\x00" + ip
        out += block(6, struct.pack("<IIIII", i % 2, 0, i, len(data), len(data)) + data)
    return out


BUILT_CAPTURES = [_pcap([*V9, IPFIX, V5]), _pcapng([*V9, IPFIX, V5])]


@functools.lru_cache(maxsize=1)
def _real_seeds() -> tuple[list[list[bytes]], list[bytes]]:
    """(payload sequences, capture heads) from the shared data; need_data has run."""
    from flowatlas.testing import shared_data_dir

    root = shared_data_dir()
    logstash = root / "flow_exports/logstash_netflow_payloads"
    groups = [
        ["netflow9_test_cisco_asr9k_tpl260.dat", "netflow9_test_cisco_asr9k_data260.dat"],
        ["ipfix_test_netscaler_tpl.dat", "ipfix_test_netscaler_data.dat"],
        ["ipfix_test_mikrotik_tpl.dat", "ipfix_test_mikrotik_data258.dat"],
        ["netflow9_test_h3c_netstream_varstring_tpl3281.dat",
         "netflow9_test_h3c_netstream_varstring_data3281.dat"],
        ["ipfix_test_vmware_vds_tpl.dat", "ipfix_test_vmware_vds_data266_267.dat"],
        ["netflow9_test_juniper_srx_tplopt.dat"],
        ["netflow5_test_juniper_mx80.dat"],
        ["ipfix.dat"],
    ]  # fmt: skip
    sequences = [[(logstash / f).read_bytes() for f in g] for g in groups]
    pmacct = root / "flow_exports/pmacct"
    captures = []
    for name in ("104-IPFIXv10-IPv6-CISCO-sampling_option", "106-IPFIXv10-HUAWEI-vrf_name",
                 "112-IPFIXv10-CISCO-options-map-reassignment"):  # fmt: skip
        data = (pmacct / name / "traffic-00.pcap").read_bytes()
        captures.append(data)
        sequences.append([d.payload for _, d in iter_datagrams(data)])
    captures.append((root / "pcaps/ndpi/sites.pcapng").read_bytes()[:65536])
    return sequences, captures


# --------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """data with a few bytes flipped, fields set to edge values, cut, or spliced."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not out:
            break
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(out) - 1))
        if op == 0:  # flip a byte
            out[pos] = draw(st.integers(0, 255))
        elif op == 1:  # a 16-bit field (length, id, count) to an edge value
            value = draw(st.sampled_from([0, 1, 2, 3, 4, 8, 255, 256, 0x7FFF, 0x8000, 0xFFFF]))
            out[pos : pos + 2] = value.to_bytes(2, "big")
        elif op == 2:  # cut short
            del out[pos:]
        elif op == 3:  # delete a few bytes
            del out[pos : pos + draw(st.integers(1, 8))]
        elif op == 4:  # insert random bytes
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:  # repeat a slice (a duplicated record or flowset)
            end = min(len(out), pos + draw(st.integers(1, 64)))
            out[pos:pos] = out[pos:end]
    return bytes(out)


#: information elements the decoder maps or reads from options, and a few it ignores
IES = [
    1,
    2,
    4,
    7,
    8,
    10,
    11,
    12,
    14,
    16,
    17,
    21,
    22,
    27,
    28,
    34,
    35,
    48,
    49,
    50,
    85,
    86,
    150,
    151,
    152,
    153,
    154,
    155,
    156,
    157,
    158,
    159,
    160,
    302,
    305,
    306,
    309,
    310,
    5,
    6,
    95,
    96,
]
LENGTHS = [0, 1, 2, 3, 4, 5, 8, 16, 0xFFFF]
#: the lengths the decoder accepts for an IE, where they are not 1 to 8
VALID = {8: [4], 12: [4], 27: [16], 28: [16], 21: [4], 22: [4], 150: [4], 151: [4],
         158: [4], 159: [4], 160: [8]} | {ie: [8] for ie in range(152, 158)}  # fmt: skip


@st.composite
def field_spec(draw: st.DrawFn) -> tuple[int, int, bool]:
    """(IE, length, enterprise): mostly a length the IE may have, sometimes any."""
    ie = draw(st.sampled_from(IES))
    if draw(st.integers(0, 4)):
        length = draw(st.sampled_from(VALID.get(ie, [1, 2, 3, 4, 8])))
    else:
        length = draw(st.sampled_from(LENGTHS))
    return ie, length, draw(st.integers(0, 5)) == 0


@st.composite
def templated(draw: st.DrawFn) -> list[bytes]:
    """Well-formed v9/IPFIX messages with a random template (or options template) and data."""
    ipfix = draw(st.booleans())
    options = draw(st.booleans())
    fields = draw(st.lists(field_spec(), min_size=1, max_size=12))
    if not options and draw(st.booleans()):
        fields.insert(0, (8, 4, False))  # an address: a flow template
    tid = draw(st.integers(256, 260))
    spec = b""
    for ie, length, enterprise in fields:
        if ipfix and enterprise:
            spec += struct.pack(">HHI", ie | 0x8000, length, 9)
        else:
            spec += struct.pack(">HH", ie, length)
    if options and ipfix:
        tpl = _set(3, struct.pack(">HHH", tid, len(fields), 1) + spec)
    elif options:
        tpl = _set(1, struct.pack(">HHH", tid, 4, 4 * (len(fields) - 1)) + spec)
    else:
        tpl = _set(2 if ipfix else 0, struct.pack(">HH", tid, len(fields)) + spec)
    records = b""
    for _ in range(draw(st.integers(0, 5))):
        for _, length, _ in fields:
            if length == 0xFFFF:
                size = draw(st.sampled_from([0, 1, 4, 16, 300]))
                head = bytes([size]) if size < 255 else b"\xff" + size.to_bytes(2, "big")
                records += head + draw(st.binary(min_size=size, max_size=size))
            else:
                records += draw(st.binary(min_size=length, max_size=length))
    data = _set(tid, records + draw(st.binary(max_size=3)))
    export = draw(st.sampled_from([0, 1_700_000_000, 0xFFFFFFFF]))
    messages = []
    for body in ([tpl, data], [data], [tpl]) if draw(st.booleans()) else ([tpl + data],):
        joined = b"".join(body)
        if ipfix:
            messages.append(struct.pack(">HHIII", 10, 16 + len(joined), export, 1, 0) + joined)
        else:
            head = struct.pack(">HHIII", 9, len(body), draw(st.integers(0, 2**32 - 1)), export, 1)
            messages.append(head + struct.pack(">I", 0) + joined)
    return messages


# --------------------------------------------------------------------------- invariants


def check_decoder(payloads: list[bytes]) -> None:
    """Decode payloads; every flow record read is a row or a quarantine row."""
    dec = NetflowDecoder("fuzz", max_held_flowsets=4, decode_every=64)
    rows, reasons = 0, []
    for i, payload in enumerate(payloads):
        dec.feed(payload, EXPORTER, f"packet {i + 1}", require_netflow=i % 2 == 1)
        if i == 1:  # taking in between must not lose anything either
            early = dec.take()
            rows += early.table.num_rows
            reasons += early.quarantine["reason"].to_pylist()
    dec.finish()
    batch = dec.take()  # Batch itself checks records_read = rows + quarantine rows
    assert batch.table.schema.equals(FLOW_SCHEMA_V1)
    reasons += batch.quarantine["reason"].to_pylist()
    assert set(reasons) <= set(REASONS)
    record_rows = sum(1 for r in reasons if r not in NOT_RECORDS)
    assert dec.stats.flow_records == rows + batch.table.num_rows + record_rows
    assert dec.pending_rows == 0
    if batch.table.num_rows:
        starts = batch.table["time_start"].cast("int64").to_numpy()
        assert (starts >= 631_152_000 * 1_000_000).all()


def check_capture(data: bytes) -> None:
    """Read a capture; only InputError may escape, and its datagrams decode with accounting."""
    stats = CaptureStats()
    try:
        got = list(iter_datagrams(data, stats))
    except InputError:
        return
    assert stats.udp == len(got)
    for number, datagram in got:
        assert 1 <= number <= stats.packets
        assert len(datagram.src_ip) == 16
        assert 0 <= datagram.src_port <= 0xFFFF and 0 <= datagram.dst_port <= 0xFFFF
    check_decoder([d.payload for _, d in got])


def check_importer(data: bytes) -> None:
    """The netflow-pcap importer on a file: InputError at most, batches that balance."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.pcap"
        path.write_bytes(data)
        try:
            batches = list(NetflowPcapImporter().read(path, ImportOptions(batch_rows=16)))
        except InputError:
            return
    for batch in batches:
        assert batch.records_read == batch.table.num_rows + batch.quarantine.num_rows


def _sequences(seeds: list[list[bytes]]) -> st.SearchStrategy[list[bytes]]:
    return st.sampled_from(seeds).flatmap(
        lambda seq: st.tuples(*[st.one_of(st.just(p), mutated(p)) for p in seq]).map(list)
    )


# --------------------------------------------------------------------------- bounded (CI)


@BOUNDED
@given(st.lists(st.binary(max_size=300), max_size=4))
def test_random_payloads(payloads: list[bytes]) -> None:
    check_decoder(payloads)


@BOUNDED
@given(
    st.lists(
        st.sampled_from([b"\x00\x05", b"\x00\x09", b"\x00\x0a"]).flatmap(
            lambda head: st.binary(max_size=200).map(lambda tail: head + tail)
        ),
        max_size=4,
    )
)
def test_random_payloads_with_netflow_versions(payloads: list[bytes]) -> None:
    check_decoder(payloads)


@BOUNDED
@given(_sequences(BUILT_SEEDS))
def test_mutated_built_packets(payloads: list[bytes]) -> None:
    check_decoder(payloads)


@BOUNDED
@given(templated())
def test_random_templates_and_records(payloads: list[bytes]) -> None:
    check_decoder(payloads)


@BOUNDED
@given(st.binary(max_size=400))
def test_random_captures(data: bytes) -> None:
    check_capture(data)


@BOUNDED
@given(st.sampled_from(BUILT_CAPTURES).flatmap(mutated))
def test_mutated_built_captures(data: bytes) -> None:
    check_capture(data)


@settings(BOUNDED, max_examples=40)
@given(st.sampled_from(BUILT_CAPTURES).flatmap(mutated))
def test_mutated_captures_through_the_importer(data: bytes) -> None:
    check_importer(data)


@pytest.mark.shared_data
def test_mutated_real_packets() -> None:
    need_data("flow_exports/logstash_netflow_payloads", "flow_exports/pmacct", "pcaps/ndpi")
    sequences, _ = _real_seeds()
    _run(BOUNDED, _sequences(sequences), check_decoder)


@pytest.mark.shared_data
def test_mutated_real_captures() -> None:
    need_data("flow_exports/pmacct", "pcaps/ndpi")
    _, captures = _real_seeds()
    _run(settings(BOUNDED, max_examples=100), st.sampled_from(captures).flatmap(mutated),
         check_capture)  # fmt: skip


def _run(config: settings, strategy: st.SearchStrategy, check: Callable[[object], None]) -> None:
    """Run a property inside a test that first checked its data is there."""
    config(given(strategy)(check))()


# --------------------------------------------------------------------------- long (--full)


@pytest.mark.slow
def test_long_fuzz(full_size: bool) -> None:
    if not full_size:
        pytest.skip("long fuzz run: give --full or set FLOWATLAS_FULL=1")
    seeds = list(BUILT_SEEDS)
    captures = list(BUILT_CAPTURES)
    try:
        need_data("flow_exports/logstash_netflow_payloads", "flow_exports/pmacct", "pcaps/ndpi")
        real_sequences, real_captures = _real_seeds()
        seeds += real_sequences
        captures += real_captures
    except pytest.skip.Exception:
        pass
    _run(LONG, _sequences(seeds), check_decoder)
    _run(LONG, st.sampled_from(captures).flatmap(mutated), check_capture)
    _run(LONG, st.lists(st.binary(max_size=1500), max_size=6), check_decoder)
    _run(LONG, templated(), check_decoder)
    _run(settings(LONG, max_examples=500), st.sampled_from(captures).flatmap(mutated),
         check_importer)  # fmt: skip
