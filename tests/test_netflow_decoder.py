"""The NetFlow v5/v9/IPFIX decoder and the netflow-pcap / netflow-payload importers.

Three kinds of evidence:

1. logstash's netflow codec test payloads: every file decodes, and the flows its spec
   (netflow_spec.rb) expects are found with the same values for the fields flow schema v1
   carries. The expectations are parsed from the spec itself.
2. pmacct's test captures: per-flow fields and totals equal pmacct's own output, and where
   nfdump is installed, equal what nfcapd stored when the same payloads were replayed to it.
3. Hand-built packets for every rule: templates, sampling, times, and each quarantine reason.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import struct
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from flowatlas.addresses import format_addresses, text_to_bytes16
from flowatlas.io.importers.base import ImportOptions, detect_format, get_importer
from flowatlas.io.importers.netflow_pcap import NetflowPayloadImporter, NetflowPcapImporter
from flowatlas.io.netflow import REASONS, NetflowDecoder, looks_like_netflow
from flowatlas.io.pcap import UdpDatagram, write_pcap
from flowatlas.schema import COUNTS_RAW, FLOW_SCHEMA_V1
from flowatlas.testing import need_data, need_tools, shared_data_dir

LOGSTASH = "flow_exports/logstash_netflow_payloads"
PMACCT = "flow_exports/pmacct"
EXPORTER = text_to_bytes16(["192.0.2.1"])[0].as_py()
EXPORT = 1_700_000_000  # seconds: the export time of hand-built packets
US = 1_000_000

# --------------------------------------------------------------------------- packet builders


def v5_record(
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    sport: int = 1234,
    dport: int = 80,
    proto: int = 6,
    packets: int = 3,
    octets: int = 300,
    first: int = 9_000,
    last: int = 9_500,
    in_if: int = 1,
    out_if: int = 2,
    src_as: int = 64500,
    dst_as: int = 64501,
) -> bytes:
    return (
        _ip4(src)
        + _ip4(dst)
        + b"\0" * 4
        + struct.pack(">HHIIIIHHxBBBHHBBxx", in_if, out_if, packets, octets, first, last,
                      sport, dport, 0, proto, 0, src_as, dst_as, 24, 24)
    )  # fmt: skip


def v5_packet(
    records: list[bytes], *, uptime: int = 10_000, secs: int = EXPORT, nsecs: int = 0,
    sampling: int = 0, count: int | None = None,
) -> bytes:  # fmt: skip
    count = len(records) if count is None else count
    head = struct.pack(">HHIIIIBBH", 5, count, uptime, secs, nsecs, 1, 0, 0, sampling)
    return head + b"".join(records)


def v9_packet(
    *flowsets: bytes, uptime: int = 10_000, secs: int = EXPORT, source_id: int = 0
) -> bytes:
    return struct.pack(">HHIIII", 9, len(flowsets), uptime, secs, 1, source_id) + b"".join(flowsets)


def ipfix_message(*sets: bytes, export: int = EXPORT, domain: int = 0) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), export, 1, domain) + body


def flowset(set_id: int, body: bytes, pad_to: int = 4) -> bytes:
    body += b"\0" * (-(len(body) + 4) % pad_to)
    return struct.pack(">HH", set_id, 4 + len(body)) + body


def template(tid: int, fields: list[tuple[int, int] | tuple[int, int, int]], set_id: int) -> bytes:
    """A template (set id 0 for v9, 2 for IPFIX); (ie, length, enterprise) for IPFIX PENs."""
    body = struct.pack(">HH", tid, len(fields))
    for f in fields:
        if len(f) == 3 and f[2]:
            body += struct.pack(">HHI", f[0] | 0x8000, f[1], f[2])
        else:
            body += struct.pack(">HH", f[0], f[1])
    return flowset(set_id, body)


def v9_options_template(
    tid: int, scope: list[tuple[int, int]], options: list[tuple[int, int]]
) -> bytes:
    body = struct.pack(">HHH", tid, 4 * len(scope), 4 * len(options))
    body += b"".join(struct.pack(">HH", *f) for f in scope + options)
    return flowset(1, body)


def ipfix_options_template(
    tid: int, scope: list[tuple[int, int]], options: list[tuple[int, int]]
) -> bytes:
    body = struct.pack(">HHH", tid, len(scope) + len(options), len(scope))
    body += b"".join(struct.pack(">HH", *f) for f in scope + options)
    return flowset(3, body)


def _ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def _ip6(text: str) -> bytes:
    return text_to_bytes16([text])[0].as_py()


def u(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


#: a v9/IPFIX flow template used by many tests: (ie, length)
BASIC = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4), (10, 2), (14, 2)]


def basic_record(src: str = "10.1.1.1", dst: str = "10.2.2.2", octets: int = 1500) -> bytes:
    return (
        _ip4(src)
        + _ip4(dst)
        + u(5000, 2)
        + u(443, 2)
        + u(6, 1)
        + u(octets, 4)
        + u(2, 4)
        + (u(3, 2) + u(4, 2))
    )


def decode(*payloads: bytes, exporter: bytes = EXPORTER, **kw: Any):
    """Feed payloads in order; return (table rows as dicts, quarantine rows, decoder)."""
    dec = NetflowDecoder("test", **kw)
    for i, p in enumerate(payloads):
        dec.feed(p, exporter, f"packet {i + 1}", require_netflow=True)
    dec.finish()
    batch = dec.take()
    rows = batch.table.to_pylist()
    for row, src, dst in zip(
        rows,
        format_addresses(batch.table["src_addr"]),
        format_addresses(batch.table["dst_addr"]),
        strict=True,
    ):
        row["src_addr"], row["dst_addr"] = src, dst
        row["time_start"] = _us(row["time_start"])
        row["time_end"] = _us(row["time_end"])
    assert batch.table.schema.equals(FLOW_SCHEMA_V1)
    assert set(batch.quarantine["reason"].to_pylist()) <= set(REASONS)
    return rows, batch.quarantine.to_pylist(), dec


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * US + ts.microsecond


def reasons(quarantine: list[dict]) -> list[str]:
    return [q["reason"] for q in quarantine]


# --------------------------------------------------------------------------- logstash payloads

#: logstash field names -> flow schema v1 column
LOGSTASH_FIELDS = {
    "ipv4_src_addr": "src_addr",
    "ipv4_dst_addr": "dst_addr",
    "ipv6_src_addr": "src_addr",
    "ipv6_dst_addr": "dst_addr",
    "sourceIPv4Address": "src_addr",
    "destinationIPv4Address": "dst_addr",
    "sourceIPv6Address": "src_addr",
    "destinationIPv6Address": "dst_addr",
    "l4_src_port": "src_port",
    "l4_dst_port": "dst_port",
    "sourceTransportPort": "src_port",
    "destinationTransportPort": "dst_port",
    "protocol": "proto",
    "protocolIdentifier": "proto",
    "in_bytes": "bytes",
    "octetDeltaCount": "bytes",
    "in_pkts": "packets",
    "packetDeltaCount": "packets",
    "input_snmp": "in_if",
    "output_snmp": "out_if",
    "ingressInterface": "in_if",
    "egressInterface": "out_if",
    "src_as": "src_as",
    "dst_as": "dst_as",
    "bgpSourceAsNumber": "src_as",
    "bgpDestinationAsNumber": "dst_as",
    "first_switched": "time_start",
    "last_switched": "time_end",
    "flowStartMilliseconds": "time_start",
    "flowEndMilliseconds": "time_end",
    "flowStartSeconds": "time_start",
    "flowEndSeconds": "time_end",
}
#: logstash's uptime arithmetic for v5/v9 mixes milliseconds and microseconds (its spec
#: expects 19:03:47.140 for the first record of netflow9_test_valid01.dat, where the header's
#: uptime 45.076 s and FIRST_SWITCHED 1.216 s give 19:03:46.140, as Wireshark also says), so
#: times derived from uptime are compared within this many microseconds; absolute IPFIX times
#: are compared exactly. test_uptime_times_match_wireshark pins exact values.
UPTIME_SLACK_US = 1_200_000
#: flows the spec shows that flow schema v1 must quarantine (logstash does not check times)
LOGSTASH_QUARANTINED = {
    # the exporter's clock says 1970-01-01T00:08:22: its flows are before 1990
    "Netflow 9 nprobe DPI L7": "time_before_1990",
    # exported 2017-07-18T05:41:59 about a flow that started 2017-07-25: a week in the future
    "Netflow 9 Fortigate FortiOS 5.2.1": "time_in_future",
}
#: contexts where logstash reads FIRST_SWITCHED across an uptime wrap as 49.7 days later
#: (netflow5.dat); test_uptime_times_match_wireshark pins the right values instead
LOGSTASH_WRAPPED_TIMES = {"Netflow 5 valid 01"}
#: files that hold several messages back to back (netcat captures), of which logstash reads
#: only the first: decode.size counts only those records
LOGSTASH_FIRST_MESSAGE_ONLY = {"Netflow 5 valid 01", "IPFIX"}


def _logstash_contexts() -> list[tuple[str, list[str], int | None, list[dict], int]]:
    """(context name, payload files in order, expected decode.size, expected events, line)."""
    path = shared_data_dir() / LOGSTASH / "netflow_spec.rb"
    if not path.exists():
        return []
    text = path.read_text()
    out = []
    for m in re.finditer(r'\n  context "([^"]+)" do\n', text):
        start = m.end()
        nxt = re.search(r'\n  context "|\ndescribe ', text[start:])
        block = text[start : start + nxt.start()] if nxt else text[start:]
        files = re.findall(r'File\.dirname\(__FILE__\), "([^"]+)"\)', block)
        size = re.search(r"expect\(decode\.size\)\.to eq\((\d+)\)", block)
        events = []
        for ev in re.findall(r"events << <<-END\n(.*?)\n\s*END", block, re.S):
            events.append(json.loads(re.sub(r"#\{\w+\}", "", ev))["netflow"])
        line = text[: m.start()].count("\n") + 2
        out.append((m.group(1), files, int(size.group(1)) if size else None, events, line))
    return out


_CONTEXTS = _logstash_contexts()


def _iso_us(value: Any) -> int:
    if isinstance(value, int):
        return value * US
    text = value.rstrip("Z")
    if "." in text:
        whole, frac = text.split(".")
        frac = (frac + "000000")[:6]
    else:
        whole, frac = text, "0"
    dt = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * US + int(frac)


def _expected_flow(event: dict) -> dict[str, Any] | None:
    """The flow schema v1 values a logstash event states, or None if it is not a flow."""
    want: dict[str, Any] = {}
    for key, value in event.items():
        column = LOGSTASH_FIELDS.get(key)
        if column is None:
            continue
        want[column] = _iso_us(value) if column.startswith("time") else value
    if event.get("version") == 5 and "sampling_interval" in event:
        want["sampling_rate"] = event["sampling_interval"]
    if "src_addr" not in want and "dst_addr" not in want:
        return None  # an options record (sampling, exporter statistics, ...)
    return want


def _matches(row: dict, want: dict, uptime_times: bool) -> bool:
    for key, value in want.items():
        if key.startswith("time") and uptime_times:
            if abs(row[key] - value) > UPTIME_SLACK_US:
                return False
        elif row[key] != value:
            return False
    return True


@pytest.mark.shared_data
def test_logstash_spec_was_parsed() -> None:
    need_data(LOGSTASH)
    assert len(_CONTEXTS) >= 50
    assert sum(len(c[3]) for c in _CONTEXTS) >= 60


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "context", _CONTEXTS or [("(no data)", [], None, [], 0)], ids=lambda c: c[0].strip()
)
def test_logstash_payloads_decode_as_the_spec_expects(context) -> None:
    name, files, size, events, line = context
    root = need_data(LOGSTASH) / LOGSTASH
    rows, quarantine, dec = decode(*[(root / f).read_bytes() for f in files])
    where = f"netflow_spec.rb line {line} ({name})"
    quarantined = [q for q in quarantine if q["reason"] != "template_never_arrived"]
    if name in LOGSTASH_QUARANTINED:
        assert reasons(quarantined) == [LOGSTASH_QUARANTINED[name]], where
    elif "invalid" in name and not rows:
        assert reasons(quarantine) in ([], ["bad_header"]), where
    else:
        assert not quarantined, (where, quarantined)
    if size is not None:
        # logstash emits flows and options records alike; so does this count
        ours = len(rows) + len(quarantined) + dec.stats.options_records + dec.stats.other_records
        if name in LOGSTASH_FIRST_MESSAGE_ONLY:
            assert ours >= size, where
        else:
            assert ours == size, where
    for i, event in enumerate(events):
        want = _expected_flow(event)
        if want is None or name in LOGSTASH_QUARANTINED:
            continue
        uptime_times = "first_switched" in event or "last_switched" in event
        if name in LOGSTASH_WRAPPED_TIMES:
            want = {k: v for k, v in want.items() if not k.startswith("time")}
        found = [r for r in rows if _matches(r, want, uptime_times)]
        assert found, f"{where}: event {i} {want} not among {len(rows)} decoded flows"


@pytest.mark.shared_data
def test_every_logstash_payload_decodes_alone() -> None:
    """Each file on its own (templates missing): no error, and every record is accounted for."""
    root = need_data(LOGSTASH) / LOGSTASH
    files = sorted(root.glob("*.dat"))
    assert len(files) >= 90
    importer = NetflowPayloadImporter()
    for path in files:
        if looks_like_netflow(path.read_bytes()):  # two v5 files announce 0xd91e records
            assert detect_format(path) == "netflow-payload", path
        batches = list(importer.read(path, ImportOptions()))
        stats = importer.decoder_stats
        assert stats is not None
        records = sum(b.records_read for b in batches)
        held = stats.held_flowsets
        # every flow record is a row or a quarantine row; held flowsets count one row each
        assert records >= stats.flow_records - held, path


@pytest.mark.shared_data
def test_uptime_times_match_wireshark() -> None:
    """Exact v5/v9 times, as Wireshark 4.0 decodes the same packets."""
    root = need_data(LOGSTASH) / LOGSTASH
    rows, _, _ = decode((root / "netflow9_test_valid01.dat").read_bytes())
    # header uptime 45.076 s at 2015-10-08T19:04:30Z; FIRST/LAST_SWITCHED 1.216 / 1.217 s
    assert (rows[0]["time_start"], rows[0]["time_end"]) == (
        _iso_us("2015-10-08T19:03:46.140Z"),
        _iso_us("2015-10-08T19:03:46.141Z"),
    )
    rows, _, _ = decode((root / "netflow5_test_juniper_mx80.dat").read_bytes())
    # uptime 190649.064 s at 13:52:52; the last record started and ended at 190631.000 s
    assert rows[-1]["time_start"] == rows[-1]["time_end"] == _iso_us("2016-07-21T13:52:33.936Z")
    assert {r["sampling_rate"] for r in rows} == {1000}  # interval 1000, mode bits 0
    rows, _, _ = decode((root / "netflow5.dat").read_bytes())
    # softflowd, 3.381 s after start: FIRST_SWITCHED 0xffffffff is 1 ms before uptime 0 (a
    # wrap, not 49.7 days later as logstash prints it); the header has nanoseconds
    assert rows[0]["time_start"] == _iso_us("2015-05-02T18:38:04.898328Z")
    assert rows[0]["time_end"] == _iso_us("2015-05-02T18:38:07.476328Z")


@pytest.mark.shared_data
def test_netscaler_microsecond_times() -> None:
    root = need_data(LOGSTASH) / LOGSTASH
    rows, _, _ = decode(
        (root / "ipfix_test_netscaler_tpl.dat").read_bytes(),
        (root / "ipfix_test_netscaler_data.dat").read_bytes(),
    )
    # netflow_spec.rb line 2113: flowEndMicroseconds 2016-11-11T12:09:19.000127768Z
    ends = sorted(r["time_end"] for r in rows)
    assert _iso_us("2016-11-11T12:09:19.000127Z") in ends


# --------------------------------------------------------------------------- pmacct captures

PMACCT_TESTS = [
    "100-IPFIXv10-CISCO",
    "101-NFv9-CISCO-cust_primitives",
    "102-NFv9-CISCO-f2rd-pretag-sampling-reload",
    "104-IPFIXv10-IPv6-CISCO-sampling_option",
    "106-IPFIXv10-HUAWEI-vrf_name",
    "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources",
    "112-IPFIXv10-CISCO-options-map-reassignment",
    "401-IPFIXv10-BMP-IPv6-CISCO-MPLS-multiple-sources",
]
PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ipv6-icmp": 58}
PROTOCOLS |= {"ospf": 89, "pim": 103, "vrrp": 112, "sctp": 132}


@pytest.mark.shared_data
def test_every_pmacct_folder_is_compared() -> None:
    root = need_data(PMACCT) / PMACCT
    assert sorted(p.parent.name for p in root.glob("*/traffic-00.pcap")) == PMACCT_TESTS


def _import_pcaps(folder: Path) -> tuple[pa.Table, pa.Table]:
    tables, quarantines = [], []
    for pcap_path in sorted(folder.glob("traffic-*.pcap")):
        importer = get_importer("netflow-pcap")()
        for batch in importer.read(pcap_path, ImportOptions()):
            assert batch.records_read == batch.table.num_rows + batch.quarantine.num_rows
            tables.append(batch.table)
            quarantines.append(batch.quarantine)
    return pa.concat_tables(tables), pa.concat_tables(quarantines)


def _rows(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    for row, src, dst in zip(
        rows, format_addresses(table["src_addr"]), format_addresses(table["dst_addr"]), strict=True
    ):
        row["src_addr"], row["dst_addr"] = src, dst
    return rows


@pytest.mark.shared_data
@pytest.mark.parametrize("name", PMACCT_TESTS)
def test_pmacct_captures_match_pmacct_output(name: str) -> None:
    folder = need_data(f"{PMACCT}/{name}") / PMACCT / name
    table, quarantine = _import_pcaps(folder)
    conf = (folder / "nfacctd-00.conf").read_text()
    renormalize = re.search(r"^nfacctd_renormalize:\s*true", conf, re.M) is not None
    # pmacct aggregates on more primitives than flow schema v1 has: compare sums per 5-tuple
    # and interfaces; with renormalize, pmacct multiplies by the sampling rate, as must we
    ours: collections.Counter = collections.Counter()
    our_times: dict[tuple, list] = collections.defaultdict(list)
    for r in _rows(table):
        key = (r["src_addr"], r["dst_addr"], r["src_port"], r["dst_port"], r["proto"],
               r["in_if"], r["out_if"])  # fmt: skip
        scale = max(r["sampling_rate"], 1) if renormalize else 1
        ours[(*key, "bytes")] += r["bytes"] * scale
        ours[(*key, "packets")] += r["packets"] * scale
        our_times[key].append((int(r["time_start"].timestamp()), int(r["time_end"].timestamp())))
    theirs: collections.Counter = collections.Counter()
    their_times: dict[tuple, list] = collections.defaultdict(list)
    for line in (folder / "output-flow-00.json").read_text().splitlines():
        e = json.loads(line)
        proto = int(e["ip_proto"]) if e["ip_proto"].isdigit() else PROTOCOLS[e["ip_proto"]]
        key = (e["ip_src"], e["ip_dst"], e["port_src"], e["port_dst"], proto,
               e["iface_in"], e["iface_out"])  # fmt: skip
        theirs[(*key, "bytes")] += e["bytes"]
        theirs[(*key, "packets")] += e["packets"]
        if "timestamp_start" in e:
            their_times[key].append((float(e["timestamp_start"]), float(e["timestamp_end"])))
    assert ours == theirs
    assert sum(v for k, v in ours.items() if k[-1] == "bytes") == sum(
        v for k, v in theirs.items() if k[-1] == "bytes"
    )
    # pmacct prints whole seconds and, for NetFlow v9, truncates the uptime difference before
    # subtracting it, so its v9 times can be a second later than the exact ones (nfdump agrees
    # with ours to the millisecond; see test_pmacct_captures_match_nfdump)
    for key, pairs in their_times.items():
        mine = sorted(our_times[key])
        assert len(mine) >= len(pairs), key
        for (s, e), (ps, pe) in zip(mine, sorted(pairs), strict=True):
            assert 0 <= ps - s <= 1 and 0 <= pe - e <= 1, key
    # only flowsets whose templates this capture never carries may be lost
    assert set(quarantine["reason"].to_pylist()) <= {"template_never_arrived"}


@pytest.mark.shared_data
def test_pmacct_sampling_option_is_applied() -> None:
    """104: an options record announces 1-in-256 sampling; raw counts keep it as a rate."""
    name = "104-IPFIXv10-IPv6-CISCO-sampling_option"
    table, _ = _import_pcaps(need_data(f"{PMACCT}/{name}") / PMACCT / name)
    assert table["sampling_rate"].to_pylist() == [256, 256, 256]
    assert pa.compute.sum(table["bytes"]).as_py() == 10632  # as exported (nfcapd agrees)


def _nfdump(path: Path, fmt: str) -> list[list[str]]:
    out = subprocess.run(
        ["nfdump", "-r", str(path), "-q", "-N", "-6", "-o", f"fmt:{fmt}"],
        capture_output=True, text=True, check=True, env={**os.environ, "TZ": "UTC"},
    ).stdout  # fmt: skip
    return [[x.strip() for x in line.split(",")] for line in out.splitlines() if line.strip()]


def _nf_number(text: str, base: int) -> int:
    """nfdump prints ICMP type.code as a 'port' and 4-byte AS numbers in asdot."""
    if "." in text:
        hi, lo = text.split(".")
        return int(hi) * base + int(lo)
    return int(text)


def _nf_ms(text: str) -> int:
    dt = datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    return round(dt.timestamp() * 1000)


@pytest.mark.shared_data
@pytest.mark.tools
@pytest.mark.parametrize("name", PMACCT_TESTS)
def test_pmacct_captures_match_nfdump(name: str) -> None:
    """The same payloads replayed to nfcapd 1.7.1: same flows, fields and totals."""
    need_tools("nfdump")
    folder = need_data(f"{PMACCT}/{name}/nfcapd_replay") / PMACCT / name
    (nfcapd,) = glob.glob(str(folder / "nfcapd_replay" / "nfcapd.2*"))
    table, _ = _import_pcaps(folder)
    fields = "%ts,%te,%sa,%da,%sp,%dp,%pr,%in,%out,%ibyt,%ipkt,%sas,%das"
    theirs = collections.Counter()
    their_times = collections.Counter()
    their_addresses = collections.Counter()
    for ts, te, sa, da, sp, dp, *rest in _nfdump(Path(nfcapd), fields):
        numbers = [_nf_number(sp, 256), _nf_number(dp, 256), *map(int, rest[:5])]
        theirs[(*numbers, *(_nf_number(x, 65536) for x in rest[5:]))] += 1
        if not ts.startswith("1970"):  # nfcapd found no time it understands
            # nfdump 1.7.1 swaps start and end of IPFIX SysUpTime-based times: compare sets
            their_times[tuple(sorted((_nf_ms(ts), _nf_ms(te))))] += 1
        # nfdump 1.7.1 prints some IPv6 addresses as '::' and NFv9 IPv4 as '::a.b.c.d'
        for addr in (sa, da):
            if addr != "::":
                their_addresses[addr.removeprefix("::") if "." in addr else addr] += 1
    rows = _rows(table)
    ours = collections.Counter(
        (r["src_port"], r["dst_port"], r["proto"], r["in_if"], r["out_if"], r["bytes"],
         r["packets"], r["src_as"], r["dst_as"])
        for r in rows
    )  # fmt: skip
    assert ours == theirs
    our_times = collections.Counter(
        tuple(sorted((_us(r["time_start"]) // 1000, _us(r["time_end"]) // 1000))) for r in rows
    )
    assert not their_times - our_times
    our_addresses = collections.Counter(a for r in rows for a in (r["src_addr"], r["dst_addr"]))
    assert not their_addresses - our_addresses
    # totals, as nfdump -I states them for the file
    info = subprocess.run(
        ["nfdump", "-r", nfcapd, "-I"], capture_output=True, text=True, check=True
    ).stdout
    stat = dict(re.findall(r"^(Flows|Packets|Bytes): (\d+)$", info, re.M))
    assert int(stat["Flows"]) == table.num_rows
    assert int(stat["Bytes"]) == pa.compute.sum(table["bytes"]).as_py()
    assert int(stat["Packets"]) == pa.compute.sum(table["packets"]).as_py()


# --------------------------------------------------------------------------- NetFlow v5


def test_v5_fields_times_and_sampling() -> None:
    packet = v5_packet(
        [v5_record(), v5_record(src="10.0.0.9", first=0xFFFF_FF00, last=100)],
        uptime=10_000, nsecs=250_000_000, sampling=(1 << 14) | 100,
    )  # fmt: skip
    rows, quarantine, dec = decode(packet)
    assert not quarantine and dec.stats.flow_records == 2
    r = rows[0]
    export = EXPORT * US + 250_000
    assert (r["src_addr"], r["dst_addr"], r["src_port"], r["dst_port"], r["proto"]) == (
        "10.0.0.1", "10.0.0.2", 1234, 80, 6,
    )  # fmt: skip
    assert (r["bytes"], r["packets"], r["in_if"], r["out_if"]) == (300, 3, 1, 2)
    assert (r["src_as"], r["dst_as"], r["sampling_rate"]) == (64500, 64501, 100)
    assert r["time_start"] == export - 1_000_000 and r["time_end"] == export - 500_000
    assert r["exporter"] == EXPORTER
    # FIRST_SWITCHED before an uptime wrap: 256 ms before uptime 0
    assert rows[1]["time_start"] == export - (10_000 + 256) * 1000


def test_v5_sampling_mode_without_interval_is_quarantined() -> None:
    rows, quarantine, _ = decode(v5_packet([v5_record()], sampling=1 << 14))
    assert not rows and reasons(quarantine) == ["sampling_rate_zero"]


def test_v5_missing_records_are_quarantined_one_by_one() -> None:
    packet = v5_packet([v5_record(), v5_record()], count=5)
    rows, quarantine, _ = decode(packet)
    assert len(rows) == 2
    assert reasons(quarantine) == ["packet_truncated"] * 3
    assert [q["position"] for q in quarantine] == [f"packet 1 record {i}" for i in (3, 4, 5)]


def test_v5_insane_count_is_a_bad_header() -> None:
    rows, quarantine, _ = decode(v5_packet([v5_record()], count=31))
    assert not rows and reasons(quarantine) == ["bad_header"]


# --------------------------------------------------------------------------- templates


def test_v9_template_then_data_in_one_packet_and_several_flowsets() -> None:
    packet = v9_packet(
        template(256, BASIC, 0),
        flowset(256, basic_record() + basic_record("10.1.1.2")),
        flowset(256, basic_record("10.1.1.3")),
    )
    rows, quarantine, dec = decode(packet)
    assert [r["src_addr"] for r in rows] == ["10.1.1.1", "10.1.1.2", "10.1.1.3"]
    assert not quarantine and dec.stats.templates == 1
    r = rows[0]
    assert (r["dst_addr"], r["src_port"], r["dst_port"], r["proto"]) == ("10.2.2.2", 5000, 443, 6)
    assert (r["bytes"], r["packets"], r["in_if"], r["out_if"]) == (1500, 2, 3, 4)
    assert r["time_start"] == r["time_end"] == EXPORT * US  # no times: the export time
    assert dec.stats.time_fallbacks == 3


def test_data_before_template_is_held_and_decoded_later() -> None:
    data = v9_packet(flowset(256, basic_record()))
    tpl = v9_packet(template(256, BASIC, 0))
    rows, quarantine, dec = decode(data, data, tpl)
    assert len(rows) == 2 and not quarantine
    assert dec.stats.held_flowsets == 2


def test_template_that_never_arrives_is_quarantined_per_flowset() -> None:
    data = v9_packet(flowset(300, basic_record()), flowset(301, basic_record() * 3))
    rows, quarantine, _ = decode(data, data)
    assert not rows
    assert reasons(quarantine) == ["template_never_arrived"] * 4
    assert quarantine[0]["position"] == "packet 1 set 1"
    assert quarantine[0]["detail"].startswith("template 300")


def test_held_flowsets_are_bounded() -> None:
    data = v9_packet(flowset(300, basic_record()))
    dec = NetflowDecoder("test", max_held_flowsets=3)
    for i in range(5):
        dec.feed(data, EXPORTER, f"packet {i + 1}")
    batch = dec.take()
    assert batch.quarantine["position"].to_pylist() == ["packet 1 set 1", "packet 2 set 1"]
    dec.feed(v9_packet(template(300, BASIC, 0)), EXPORTER, "packet 6")
    dec.finish()
    assert dec.take().table.num_rows == 3


def test_held_bytes_are_bounded() -> None:
    dec = NetflowDecoder("test", max_held_bytes=100)
    for tid in range(300, 306):
        dec.feed(v9_packet(flowset(tid, basic_record())), EXPORTER, f"packet {tid}")
    assert dec.take().quarantine.num_rows == 3  # 6 flowsets of 28 bytes: 3 fit


def test_templates_are_kept_per_exporter_and_domain() -> None:
    other = text_to_bytes16(["2001:db8::99"])[0].as_py()
    short = [(8, 4), (12, 4), (1, 4)]
    dec = NetflowDecoder("test")
    dec.feed(ipfix_message(template(256, BASIC, 2), domain=1), EXPORTER, "p1")
    dec.feed(ipfix_message(template(256, short, 2), domain=2), EXPORTER, "p2")
    dec.feed(ipfix_message(template(256, short, 2), domain=1), other, "p3")
    record = _ip4("10.9.9.9") + _ip4("10.8.8.8") + u(77, 4)
    dec.feed(ipfix_message(flowset(256, basic_record()), domain=1), EXPORTER, "p4")
    dec.feed(ipfix_message(flowset(256, record), domain=2), EXPORTER, "p5")
    dec.feed(ipfix_message(flowset(256, record), domain=1), other, "p6")
    dec.feed(v9_packet(flowset(256, record), source_id=1), EXPORTER, "p7")  # v9: no template
    dec.finish()
    batch = dec.take()
    rows = batch.table.to_pylist()
    assert sorted(r["bytes"] for r in rows) == [77, 77, 1500]
    assert {r["exporter"] for r in rows} == {EXPORTER, other}
    assert batch.quarantine["reason"].to_pylist() == ["template_never_arrived"]


def test_template_withdrawal() -> None:
    withdraw = flowset(2, struct.pack(">HH", 256, 0))
    rows, quarantine, dec = decode(
        ipfix_message(template(256, BASIC, 2), flowset(256, basic_record())),
        ipfix_message(withdraw, flowset(256, basic_record())),
    )
    assert len(rows) == 1 and reasons(quarantine) == ["template_never_arrived"]
    assert dec.stats.withdrawn_templates == 1


def test_template_redefinition_applies_to_later_data() -> None:
    first = [(8, 4), (12, 4), (1, 4)]
    second = [(8, 4), (12, 4), (1, 8)]
    rows, _, _ = decode(
        ipfix_message(template(256, first, 2), flowset(256, _ip4("1.1.1.1") * 2 + u(5, 4))),
        ipfix_message(template(256, second, 2), flowset(256, _ip4("1.1.1.1") * 2 + u(6, 8))),
    )
    assert [r["bytes"] for r in rows] == [5, 6]


def test_zero_length_fields_and_padding() -> None:
    fields = [(8, 4), (95, 0), (12, 4), (1, 0), (85, 4)]  # octetDeltaCount present but empty
    record = _ip4("10.0.0.1") + _ip4("10.0.0.2") + u(999, 4)
    rows, quarantine, _ = decode(
        v9_packet(template(256, fields, 0), flowset(256, record * 2, pad_to=16))
    )
    assert [r["bytes"] for r in rows] == [999, 999] and not quarantine  # octetTotalCount used


def test_template_of_only_empty_fields() -> None:
    rows, quarantine, dec = decode(
        v9_packet(template(256, [(8, 0), (12, 0)], 0), flowset(256, b"\1" * 8))
    )
    # no address field carries anything: not a flow template, so not flow records either
    assert not rows and not quarantine and dec.stats.other_records == 0


def test_leftover_bytes_are_padding() -> None:
    tpl = template(256, BASIC, 0)
    rows, quarantine, dec = decode(v9_packet(tpl, flowset(256, basic_record() + b"\0" * 7)))
    assert len(rows) == 1 and not quarantine and dec.stats.dirty_padding == 0
    # Mikrotik and nProbe leave buffer garbage in the padding (logstash test payloads)
    rows, quarantine, dec = decode(v9_packet(tpl, flowset(256, basic_record() + b"\1" * 7)))
    assert len(rows) == 1 and not quarantine and dec.stats.dirty_padding == 1


def test_wrong_field_length_quarantines_every_record() -> None:
    fields = [(8, 3), (12, 4), (1, 4)]
    record = b"\1\2\3" + _ip4("10.0.0.2") + u(9, 4)
    rows, quarantine, _ = decode(v9_packet(template(256, fields, 0), flowset(256, record * 3)))
    assert not rows
    assert reasons(quarantine) == ["wrong_field_length"] * 3
    assert quarantine[0]["detail"] == "IE 8 length 3"
    assert [q["position"] for q in quarantine] == [f"packet 1 set 2 record {i}" for i in (1, 2, 3)]


def test_field_length_65535_is_variable_length() -> None:
    """IPFIX variable-length fields (short and long form) between fixed ones."""
    fields = [(8, 4), (96, 0xFFFF), (12, 4), (82, 0xFFFF), (1, 4)]
    rec1 = _ip4("10.0.0.1") + b"\x03abc" + _ip4("10.0.0.2") + b"\xff\x01\x00" + b"x" * 256
    rec1 += u(10, 4)
    rec2 = _ip4("10.0.0.3") + b"\x00" + _ip4("10.0.0.4") + b"\x01y" + u(20, 4)
    rows, quarantine, _ = decode(ipfix_message(template(256, fields, 2), flowset(256, rec1 + rec2)))
    assert [(r["src_addr"], r["bytes"]) for r in rows] == [("10.0.0.1", 10), ("10.0.0.3", 20)]
    assert not quarantine


def test_variable_length_mapped_field_and_overrun() -> None:
    fields = [(8, 0xFFFF), (12, 4), (1, 4)]
    good = b"\x04" + _ip4("10.0.0.1") + _ip4("10.0.0.2") + u(5, 4)
    odd = b"\x03" + b"\1\2\3" + _ip4("10.0.0.2") + u(6, 4)  # an IPv4 address of 3 bytes
    cut = b"\x20" + _ip4("10.0.0.1") + b"\0" * 6  # a 32-byte value in 10 bytes
    rows, quarantine, _ = decode(
        ipfix_message(template(256, fields, 2), flowset(256, good + odd + cut, pad_to=1))
    )
    assert [r["bytes"] for r in rows] == [5]
    assert sorted(reasons(quarantine)) == ["record_overruns_flowset", "wrong_field_length"]


def test_enterprise_fields_are_skipped_not_misread() -> None:
    # PEN 9 field 1 sits where octetDeltaCount would be; the standard one comes later
    fields = [(8, 4, 0), (12, 4, 0), (1, 4, 9), (2, 4, 29305), (1, 4, 0)]
    record = _ip4("10.0.0.1") + _ip4("10.0.0.2") + u(111, 4) + u(222, 4) + u(333, 4)
    rows, _, _ = decode(ipfix_message(template(256, fields, 2), flowset(256, record)))
    assert (rows[0]["bytes"], rows[0]["packets"]) == (333, 0)


def test_repeated_fields_take_the_last_one() -> None:
    """Tunnels: Huawei exports the outer and then the inner header's fields (pmacct test 106)."""
    fields = [(4, 1), (7, 2), (11, 2), (8, 4), (12, 4), (4, 1), (7, 2), (11, 2)]
    record = u(4, 1) + u(0, 2) + u(0, 2) + _ip4("10.0.0.1") + _ip4("10.0.0.2") + u(17, 1)
    record += u(2222, 2) + u(1111, 2)
    rows, _, _ = decode(ipfix_message(template(256, fields, 2), flowset(256, record)))
    assert (rows[0]["proto"], rows[0]["src_port"], rows[0]["dst_port"]) == (17, 2222, 1111)


def test_ipv6_and_mixed_address_templates() -> None:
    fields = [(8, 4), (12, 4), (27, 16), (28, 16), (1, 4)]
    v4 = _ip4("10.0.0.1") + _ip4("10.0.0.2") + b"\0" * 32 + u(1, 4)
    v6 = b"\0" * 8 + _ip6("2001:db8::1") + _ip6("2001:db8::2") + u(2, 4)
    rows, _, _ = decode(ipfix_message(template(256, fields, 2), flowset(256, v4 + v6)))
    assert [(r["src_addr"], r["dst_addr"]) for r in rows] == [
        ("10.0.0.1", "10.0.0.2"),
        ("2001:db8::1", "2001:db8::2"),
    ]


def test_reduced_size_encoding_and_out_of_range_values() -> None:
    fields = [(8, 4), (12, 4), (1, 3), (2, 5), (7, 4), (10, 8)]
    ok = _ip4("10.0.0.1") * 2 + u(0xABCDEF, 3) + u(2**33, 5) + u(80, 4) + u(7, 8)
    big_port = _ip4("10.0.0.1") * 2 + u(1, 3) + u(1, 5) + u(70000, 4) + u(7, 8)
    big_if = _ip4("10.0.0.1") * 2 + u(1, 3) + u(1, 5) + u(80, 4) + u(2**32, 8)
    rows, quarantine, _ = decode(
        ipfix_message(template(256, fields, 2), flowset(256, ok + big_port + big_if))
    )
    assert [(r["bytes"], r["packets"], r["src_port"], r["in_if"]) for r in rows] == [
        (0xABCDEF, 2**33, 80, 7)
    ]
    assert reasons(quarantine) == ["value_out_of_range"] * 2
    assert [q["detail"] for q in quarantine] == [
        "source port above 65535",
        "input interface above 4294967295",
    ]


def test_counters_use_total_counts_when_delta_absent_and_keep_uint64() -> None:
    fields = [(8, 4), (12, 4), (85, 8), (86, 8)]
    record = _ip4("10.0.0.1") * 2 + u(2**64 - 1, 8) + u(2**63, 8)
    rows, _, _ = decode(ipfix_message(template(256, fields, 2), flowset(256, record)))
    assert (rows[0]["bytes"], rows[0]["packets"]) == (2**64 - 1, 2**63)


# --------------------------------------------------------------------------- flowsets


def test_flowset_overrunning_the_packet() -> None:
    packet = v9_packet(template(256, BASIC, 0), flowset(256, basic_record() * 3))
    cut = packet[:-30]  # the third record and a bit of the second are gone
    rows, quarantine, _ = decode(cut)
    assert len(rows) == 1
    assert reasons(quarantine) == ["flowset_overruns_packet"]
    assert quarantine[0]["detail"] == "30 bytes missing"


def test_bad_flowset_length_and_zero_padding() -> None:
    good = v9_packet(template(256, BASIC, 0), flowset(256, basic_record()))
    rows, quarantine, _ = decode(good + b"\0" * 100)  # zero fill after the last flowset
    assert len(rows) == 1 and not quarantine
    rows, quarantine, _ = decode(good + struct.pack(">HH", 256, 2) + b"junk")
    assert len(rows) == 1 and reasons(quarantine) == ["bad_flowset_length"]


def test_ipfix_length_shorter_than_payload_and_concatenated_messages() -> None:
    one = ipfix_message(template(256, BASIC, 2), flowset(256, basic_record("10.0.0.1")))
    two = ipfix_message(flowset(256, basic_record("10.0.0.2")))
    v5 = v5_packet([v5_record(src="10.0.0.3")])
    rows, quarantine, dec = decode(one + two + v5)
    assert [r["src_addr"] for r in rows] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert dec.stats.packets == 3 and not quarantine
    rows, _, dec = decode(one + b"trailing")
    assert len(rows) == 1 and dec.stats.trailing_bytes == 8


def test_truncated_headers() -> None:
    for payload in (b"\x00\x05\x00\x01" + b"\0" * 10, b"\x00\x09\x00", b"\x00\x0a" + b"\0" * 8):
        rows, quarantine, _ = decode(payload)
        assert not rows and reasons(quarantine) == ["bad_header"]
    rows, quarantine, _ = decode(b"GET / HTTP/1.1\r\n")
    assert reasons(quarantine) == ["not_netflow"]
    dec = NetflowDecoder()
    assert dec.feed(b"\x00\x09\x00", EXPORTER, "p") == 0  # not required: only counted
    assert dec.stats.not_netflow == 1 and dec.take().records_read == 0


def test_bad_templates_are_counted_and_skipped() -> None:
    bad_id = flowset(0, struct.pack(">HHHH", 12, 1, 8, 4))  # template id below 256
    cut = flowset(0, struct.pack(">HHHH", 256, 5, 8, 4))  # 5 fields announced, 1 present
    rows, quarantine, dec = decode(v9_packet(bad_id, cut))
    assert dec.stats.bad_templates == 2 and not rows and not quarantine


def test_looks_like_netflow() -> None:
    assert looks_like_netflow(v5_packet([v5_record()])) == 5
    assert looks_like_netflow(v9_packet(template(256, BASIC, 0))) == 9
    assert looks_like_netflow(ipfix_message(template(256, BASIC, 2))) == 10
    assert looks_like_netflow(b"\x00\x05\x00\x00" + b"\0" * 20) == 0  # no records
    assert looks_like_netflow(b"\x12\x34\x01\x00\x00\x01") == 0  # a DNS query
    assert looks_like_netflow(ipfix_message(flowset(7, b"xxxx"))) == 0  # reserved set id


# --------------------------------------------------------------------------- times


def _timed(fields: list[tuple[int, int]], values: bytes, *extra: bytes, v9: bool = False):
    """Decode one record of BASIC + fields; return its (start, end) and the quarantine."""
    record = basic_record() + values
    if v9:
        packet = v9_packet(template(256, BASIC + fields, 0), flowset(256, record), uptime=50_000)
        rows, quarantine, _ = decode(*extra, packet)
    else:
        msg = ipfix_message(template(256, BASIC + fields, 2), flowset(256, record))
        rows, quarantine, _ = decode(*extra, msg)
    return ((rows[0]["time_start"], rows[0]["time_end"]) if rows else None), quarantine


def _ntp(us: int) -> bytes:
    secs, frac = divmod(us, US)
    return u(secs + 2_208_988_800, 4) + u((frac << 32) // US + 1, 4)


def test_ipfix_absolute_times() -> None:
    t0 = (EXPORT - 60) * US
    t1 = (EXPORT - 1) * US + 123_456
    assert _timed([(150, 4), (151, 4)], u(t0 // US, 4) + u(t1 // US, 4))[0] == (
        t0, t1 - 123_456,
    )  # fmt: skip
    assert _timed([(152, 8), (153, 8)], u(t0 // 1000, 8) + u(t1 // 1000, 8))[0] == (
        t0, t1 - 456,
    )  # fmt: skip
    assert _timed([(154, 8), (155, 8)], _ntp(t0) + _ntp(t1))[0] == (t0, t1)
    assert _timed([(156, 8), (157, 8)], _ntp(t0) + _ntp(t1))[0] == (t0, t1)
    delta = _timed([(158, 4), (159, 4)], u(60 * US, 4) + u(1000, 4))[0]
    assert delta == (EXPORT * US - 60 * US, EXPORT * US - 1000)


def test_ipfix_sysuptime_times_with_init_time() -> None:
    init = (EXPORT - 3600) * 1000  # booted an hour before the export
    fields = [(22, 4), (21, 4)]
    # systemInitTimeMilliseconds in the record itself
    got, _ = _timed([*fields, (160, 8)], u(1000, 4) + u(2000, 4) + u(init, 8))
    assert got == ((init + 1000) * 1000, (init + 2000) * 1000)
    # announced by an options record first
    options = ipfix_message(
        ipfix_options_template(300, [(149, 4)], [(160, 8)]), flowset(300, u(0, 4) + u(init, 8))
    )
    got, _ = _timed(fields, u(1000, 4) + u(2000, 4), options)
    assert got == ((init + 1000) * 1000, (init + 2000) * 1000)
    # nothing to relate them to: the export time
    got, _ = _timed(fields, u(1000, 4) + u(2000, 4))
    assert got == (EXPORT * US, EXPORT * US)


def test_v9_uptime_times() -> None:
    got, _ = _timed([(22, 4), (21, 4)], u(40_000, 4) + u(49_000, 4), v9=True)
    assert got == (EXPORT * US - 10_000_000, EXPORT * US - 1_000_000)
    # a flow that started before the exporter's uptime counter wrapped
    got, _ = _timed([(22, 4), (21, 4)], u(2**32 - 5_000, 4) + u(49_000, 4), v9=True)
    assert got == (EXPORT * US - 55_000_000, EXPORT * US - 1_000_000)


def test_one_time_serves_for_both() -> None:
    got, _ = _timed([(153, 8)], u((EXPORT - 5) * 1000, 8))
    assert got == ((EXPORT - 5) * US, (EXPORT - 5) * US)


def test_impossible_times_are_quarantined() -> None:
    got, quarantine = _timed([(150, 4), (151, 4)], u(400_000_000, 4) * 2)  # 1982
    assert got is None and reasons(quarantine) == ["time_before_1990"]
    assert quarantine[0]["detail"] == "1982-09-04T15:06:40.000000Z"
    got, quarantine = _timed([(150, 4), (151, 4)], u(EXPORT, 4) + u(EXPORT + 90_000, 4))
    assert got is None and reasons(quarantine) == ["time_in_future"]
    got, _ = _timed([(150, 4), (151, 4)], u(EXPORT, 4) + u(EXPORT + 80_000, 4))
    assert got is not None  # less than a day ahead: clocks differ
    got, quarantine = _timed([(152, 8), (153, 8)], u(2**64 - 1, 8) * 2)
    assert got is None and quarantine[0]["detail"] == "time beyond year 3000"
    rows, quarantine, _ = decode(v5_packet([v5_record()], secs=0))  # a router with no clock
    assert not rows and reasons(quarantine) == ["time_before_1990"]


# --------------------------------------------------------------------------- sampling


def _rates(*packets: bytes) -> tuple[list[int], list[str]]:
    rows, quarantine, _ = decode(*packets)
    return [r["sampling_rate"] for r in rows], reasons(quarantine)


def test_v9_options_sampling_interval_for_the_domain() -> None:
    options = v9_packet(
        v9_options_template(300, [(1, 4)], [(34, 4), (35, 1)]),
        flowset(300, u(0, 4) + u(1000, 4) + u(2, 1)),
    )
    data = v9_packet(template(256, BASIC, 0), flowset(256, basic_record()))
    assert _rates(data, options, data) == ([0, 1000], [])  # only after it was announced
    other_domain = v9_packet(template(256, BASIC, 0), flowset(256, basic_record()), source_id=5)
    assert _rates(options, other_domain) == ([0], [])


def test_v9_sampler_id_mapping() -> None:
    options = v9_packet(
        v9_options_template(300, [(1, 4)], [(48, 1), (49, 1), (50, 4)]),
        flowset(300, u(0, 4) + u(1, 1) + u(2, 1) + u(100, 4) + u(0, 4) + u(2, 1) + u(2, 1)
                + u(10, 4)),
    )  # fmt: skip
    data = v9_packet(
        template(256, [*BASIC, (48, 1)], 0),
        flowset(256, basic_record() + u(2, 1) + basic_record() + u(1, 1) + basic_record()
                + u(3, 1)),
    )  # fmt: skip
    # sampler 3 was never announced and two different rates were: unknown, so 0
    assert _rates(options, data) == ([10, 100, 0], [])


def test_ipfix_selector_id_and_packet_interval_space() -> None:
    options = ipfix_message(
        ipfix_options_template(300, [(302, 8)], [(305, 4), (306, 4)]),
        flowset(300, u(7, 8) + u(1, 4) + u(255, 4)),
    )
    data = ipfix_message(
        template(256, [*BASIC, (302, 8)], 2), flowset(256, basic_record() + u(7, 8))
    )
    assert _rates(options, data) == ([256], [])
    # records that name no selector take the one rate announced
    plain = ipfix_message(template(257, BASIC, 2), flowset(257, basic_record()))
    assert _rates(options, plain) == ([256], [])


def test_per_record_sampling_fields() -> None:
    fields = [(34, 4), (35, 1)]
    packet = ipfix_message(
        template(256, BASIC + fields, 2),
        flowset(256, basic_record() + u(64, 4) + u(1, 1) + basic_record() + u(0, 4) + u(0, 1)),
    )
    # H3C sends interval 0 with algorithm 0: not sampled (1), not an impossible rate
    assert _rates(packet) == ([64, 1], [])
    bad = ipfix_message(
        template(256, BASIC + fields, 2), flowset(256, basic_record() + u(0, 4) + u(1, 1))
    )
    assert _rates(bad) == ([], ["sampling_rate_zero"])
    space = ipfix_message(
        template(256, [*BASIC, (305, 4), (306, 4)], 2),
        flowset(256, basic_record() + u(1, 4) + u(99, 4) + basic_record() + u(0, 4) + u(9, 4)),
    )
    assert _rates(space) == ([100], ["sampling_rate_zero"])


def test_announced_rate_zero_is_quarantined() -> None:
    options = ipfix_message(
        ipfix_options_template(300, [(149, 4)], [(34, 4)]), flowset(300, u(0, 4) + u(0, 4))
    )
    data = ipfix_message(template(256, BASIC, 2), flowset(256, basic_record()))
    assert _rates(options, data) == ([], ["sampling_rate_zero"])
    off = ipfix_message(
        ipfix_options_template(300, [(149, 4)], [(34, 4), (35, 1)]),
        flowset(300, u(0, 4) + u(0, 4) + u(0, 1)),
    )
    assert _rates(off, data) == ([1], [])  # "sampling off" stated explicitly


def test_absurd_64_bit_announcements() -> None:
    """Options may announce any 64-bit value; the records relying on them are quarantined."""
    options = ipfix_message(
        ipfix_options_template(300, [(149, 4)], [(160, 8), (34, 8)]),
        flowset(300, u(0, 4) + u(2**64 - 1, 8) + u(2**64 - 2, 8)),
    )
    got, quarantine = _timed([(22, 4), (21, 4)], u(1, 4) * 2, options)
    assert got is None and reasons(quarantine) == ["time_in_future"]
    rows, quarantine, _ = decode(
        options, ipfix_message(template(256, BASIC, 2), flowset(256, basic_record()))
    )
    assert not rows and reasons(quarantine) == ["value_out_of_range"]


# --------------------------------------------------------------------------- bulk decoding


def test_bulk_decoding_keeps_each_records_context() -> None:
    """Records queued together still use their own packet's times, exporter and sampling."""
    other = text_to_bytes16(["198.51.100.5"])[0].as_py()
    dec = NetflowDecoder("test", decode_every=1 << 30)
    tpl = template(256, [*BASIC, (22, 4)], 0)
    opts = v9_options_template(300, [(1, 4)], [(34, 4)])
    for i in range(50):
        exporter = EXPORTER if i % 2 else other
        sets = [tpl, flowset(256, basic_record(octets=i) + u(1000 * i, 4))]
        if i == 10:
            sets.append(flowset(300, u(0, 4) + u(8, 4)))
        if i == 0:
            sets.insert(0, opts)
        packet = v9_packet(*sets, uptime=100_000 + i, secs=EXPORT + i)
        dec.feed(packet, exporter, f"packet {i}")
    dec.feed(v9_packet(opts, secs=EXPORT), EXPORTER, "options")
    assert dec.pending_rows == 50
    rows = dec.take().table.to_pylist()
    by_bytes = {r["bytes"]: r for r in rows}
    for i in range(50):
        r = by_bytes[i]
        assert r["exporter"] == (EXPORTER if i % 2 else other)
        expect = (EXPORT + i) * US - (100_000 + i - 1000 * i) * 1000
        assert _us(r["time_start"]) == expect
        # exporter "other" (even packets) announced 1-in-8 in packet 10, EXPORTER never did
        assert r["sampling_rate"] == (8 if i % 2 == 0 and i > 10 else 0)


def test_v9_and_ipfix_with_the_same_template_keep_their_time_rules() -> None:
    fields = [*BASIC, (22, 4)]
    v9 = v9_packet(
        template(256, fields, 0), flowset(256, basic_record() + u(40_000, 4)), uptime=50_000
    )
    ipfix = ipfix_message(template(256, fields, 2), flowset(256, basic_record() + u(40_000, 4)))
    rows, _, _ = decode(v9, ipfix)
    assert len(rows) == 2
    # v9: 10 s before the header's uptime of 50 s; IPFIX: no system init time, the export time
    assert sorted(r["time_start"] for r in rows) == [EXPORT * US - 10 * US, EXPORT * US]


def test_take_flushes_and_batches_balance() -> None:
    dec = NetflowDecoder("test")
    dec.feed(v5_packet([v5_record()] * 30), EXPORTER, "p1")
    assert dec.pending_rows == 30
    batch = dec.take()
    assert batch.table.num_rows == 30 and batch.records_read == 30
    assert dec.pending_rows == 0 and dec.take().records_read == 0


def test_exporter_must_be_16_bytes() -> None:
    with pytest.raises(ValueError, match="16-byte"):
        NetflowDecoder().feed(v5_packet([v5_record()]), b"\1\2\3\4", "p")


# --------------------------------------------------------------------------- importers


def _exports_pcap(tmp_path: Path) -> Path:
    """Two exporters (IPv4 and IPv6), v5, v9 and IPFIX, plus DNS noise."""
    v6 = _ip6("2001:db8::7")
    v4 = EXPORTER
    items = [
        UdpDatagram(EXPORT * US, v4, 5000, 2055, v5_packet([v5_record()] * 2)),
        UdpDatagram(EXPORT * US + 1, v4, 53, 5353, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 20),
        UdpDatagram(EXPORT * US + 2, v6, 6000, 4739, ipfix_message(template(256, BASIC, 2))),
        UdpDatagram(EXPORT * US + 3, v6, 6000, 4739, ipfix_message(flowset(256, basic_record()))),
        UdpDatagram(EXPORT * US + 4, v4, 5001, 9995, v9_packet(flowset(400, basic_record()))),
    ]
    path = tmp_path / "exports.pcap"
    write_pcap(path, items)
    return path


def test_netflow_pcap_importer(tmp_path: Path) -> None:
    path = _exports_pcap(tmp_path)
    assert detect_format(path) == "netflow-pcap"
    importer = get_importer("netflow-pcap")()
    assert importer.counts == COUNTS_RAW
    batches = list(importer.read(path, ImportOptions()))
    table = pa.concat_tables([b.table for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    exporters = format_addresses(table["exporter"])
    assert sorted(exporters) == ["192.0.2.1", "192.0.2.1", "2001:db8::7"]
    assert quarantine.to_pylist() == [
        {
            "source_file": str(path),
            "position": "packet 5 set 1",
            "reason": "template_never_arrived",
            "detail": "template 400, end of input",
        }
    ]
    assert importer.decoder_stats.not_netflow == 1


def test_netflow_pcap_importer_batches(tmp_path: Path) -> None:
    items = [
        UdpDatagram(EXPORT * US + i, EXPORTER, 1, 2, v5_packet([v5_record(octets=i)] * 30))
        for i in range(10)
    ]
    path = tmp_path / "many.pcap"
    write_pcap(path, items)
    batches = list(NetflowPcapImporter().read(path, ImportOptions(batch_rows=100)))
    assert len(batches) >= 3
    assert sum(b.table.num_rows for b in batches) == 300


def test_netflow_pcap_reports_lost_fragments_of_exports(tmp_path: Path) -> None:
    """An IPv4-fragmented export with a fragment missing is quarantined, not dropped."""
    payload = v9_packet(template(256, BASIC, 0), flowset(256, basic_record() * 40))
    udp = struct.pack(">HHHH", 1000, 2055, 8 + len(payload), 0) + payload

    def frag(off: int, data: bytes, more: bool) -> bytes:
        flags = (0x2000 if more else 0) | off // 8
        return struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(data), 5, flags, 64, 17, 0) + (
            _ip4("192.0.2.1") + _ip4("192.0.2.2") + data
        )

    whole = [frag(0, udp[:600], True), frag(600, udp[600:], False)]
    cap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    for i, pkt in enumerate([*whole, whole[0]]):  # second datagram: last fragment lost
        cap += struct.pack("<IIII", EXPORT, i, len(pkt), len(pkt)) + pkt
    path = tmp_path / "frag.pcap"
    path.write_bytes(cap)
    batches = list(NetflowPcapImporter().read(path, ImportOptions()))
    assert sum(b.table.num_rows for b in batches) == 40
    q = pa.concat_tables([b.quarantine for b in batches]).to_pylist()
    assert [(x["position"], x["reason"]) for x in q] == [("packet 3", "incomplete fragments")]


def test_netflow_pcap_sniff(tmp_path: Path) -> None:
    path = _exports_pcap(tmp_path)
    head = path.read_bytes()[:4096]
    assert NetflowPcapImporter.sniff(path, head)
    late = tmp_path / "late.pcap"  # exports after 4 KiB of other traffic
    noise = UdpDatagram(0, EXPORTER, 53, 53, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 500)
    write_pcap(late, [noise] * 20 + [UdpDatagram(0, EXPORTER, 1, 2, v5_packet([v5_record()]))])
    assert NetflowPcapImporter.sniff(late, late.read_bytes()[:4096])
    dns_only = tmp_path / "dns.pcap"
    write_pcap(
        dns_only, [UdpDatagram(0, EXPORTER, 53, 53, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 9)]
    )
    assert not NetflowPcapImporter.sniff(dns_only, dns_only.read_bytes())
    assert not NetflowPayloadImporter.sniff(path, head)


def test_netflow_payload_importer(tmp_path: Path) -> None:
    tpl = tmp_path / "tpl.dat"
    tpl.write_bytes(v9_packet(template(256, BASIC, 0), flowset(256, basic_record("10.0.0.8"))))
    data = tmp_path / "data.dat"
    data.write_bytes(v9_packet(flowset(256, basic_record() * 2)))
    assert detect_format(data) == "netflow-payload"
    importer = get_importer("netflow-payload")()
    alone = list(importer.read(data, ImportOptions()))
    assert alone[0].quarantine["reason"].to_pylist() == ["template_never_arrived"]
    opts = ImportOptions(extra=(("exporter", "2001:db8::5"), ("templates", str(tpl))))
    (batch,) = importer.read(data, opts)
    assert batch.table.num_rows == 2 and batch.quarantine.num_rows == 0  # tpl.dat's own record
    assert format_addresses(batch.table["exporter"]) == ["2001:db8::5"] * 2  # is not re-imported
    assert importer.decoder_stats.flow_records == 2
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"\x00\x05garbage")
    (batch,) = importer.read(garbage, ImportOptions())
    assert batch.quarantine["reason"].to_pylist() == ["bad_header"]


def test_table_types() -> None:
    dec = NetflowDecoder()
    dec.feed(v5_packet([v5_record()]), EXPORTER, "p")
    table = dec.take().table
    assert table.schema.equals(FLOW_SCHEMA_V1)
    assert table["src_addr"].type == pa.binary(16)
    assert np.asarray(table["bytes"]).dtype == np.uint64
