"""nfcapd through nfdump (``--reader nfdump``): every real file matches nfdump's own reading.

Also: both nfdump text layouts (1.7.1's fixed CSV, 1.7.5+'s named columns), forced UTC, and
clear errors for truncated or foreign files and for a missing nfdump. The native reader (the
default) has its own tests in test_nfcapd*.py; these pin ``reader=nfdump``.
"""

from __future__ import annotations

import gzip
import ipaddress
import os
import stat
import subprocess
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flowatlas.addresses import format_addresses
from flowatlas.errors import InputError
from flowatlas.io.importers.base import ImportOptions, detect_format, get_importer
from flowatlas.io.importers.nfdump import (
    NfdumpMissing,
    nfdump_binary,
    nfdump_version,
    stats_by_ip,
    summary_totals,
)
from flowatlas.testing import need_data, need_tools

NOW_US = 1_790_000_000 * 1_000_000
#: the window of times flowatlas accepts, in nfdump's -t syntax
VALID_WINDOW = ("1990/01/01.00:00:00", "2026/09/22.00:00:00")


def nfcapd_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "flow_exports").rglob("nfcapd.2*") if p.is_file())


def read_all(fmt: str, path: Path, **extra) -> tuple[pa.Table, pa.Table, int]:
    opts = ImportOptions(extra=tuple({"now_us": NOW_US, "reader": "nfdump", **extra}.items()))
    batches = list(get_importer(fmt)().read(path, opts))
    if not batches:
        return pa.table({}), pa.table({}), 0
    table = pa.concat_tables([b.table for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    read = sum(b.records_read for b in batches)
    assert read == table.num_rows + quarantine.num_rows
    return table, quarantine, read


def canonical(ip: str) -> str:
    """An address as both sides can agree on it.

    nfdump 1.7.1 prints some IPv4 as ``::a.b.c.d`` (flowatlas stores them as IPv4), and its
    statistics print the IPv6 unspecified address ``::`` as ``0.0.0.0``.
    """
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and (1 << 24) <= int(addr) < (1 << 32):
        return str(ipaddress.IPv4Address(int(addr)))
    if addr.version == 6 and int(addr) == 0:
        return "0.0.0.0"
    return str(addr)


def archive_stats_by_ip(table: pa.Table) -> dict[str, tuple[int, int, int]]:
    """(flows, packets, bytes) per IP, counting a flow for its source and its destination."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for col in ("src_addr", "dst_addr"):
        g = (
            pa.table({"ip": table[col], "p": table["packets"], "b": table["bytes"]})
            .group_by("ip")
            .aggregate([("p", "count"), ("p", "sum"), ("b", "sum")])
        )
        for ip, n, p, b in zip(
            format_addresses(g["ip"]),
            g["p_count"].to_pylist(),
            g["p_sum"].to_pylist(),
            g["b_sum"].to_pylist(),
            strict=True,
        ):
            acc = out[ip]
            acc[0] += n
            acc[1] += p
            acc[2] += b
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for ip, v in out.items():
        m = merged[canonical(ip)]
        for i in range(3):
            m[i] += v[i]
    return {ip: tuple(v) for ip, v in merged.items()}


@pytest.mark.tools
@pytest.mark.shared_data
def test_every_flow_export_matches_nfdump():
    """Each nfcapd file in flow_exports imports; totals equal nfdump's, per file and per IP."""
    need_tools("nfdump")
    root = need_data("flow_exports")
    binary = nfdump_binary()
    files = nfcapd_files(root)
    assert len(files) >= 30
    for f in files:
        assert detect_format(f) == "nfcapd"
        table, quarantine, read = read_all("nfcapd", f)
        flows, packets, byts = summary_totals(binary, f)
        assert read == flows, f
        # rows outside the accepted time window are quarantined, never dropped
        if quarantine.num_rows:
            assert set(quarantine["reason"].to_pylist()) == {"time_before_1990"}, f
        flows, packets, byts = summary_totals(binary, f, window=VALID_WINDOW)
        assert table.num_rows == flows, f
        if flows:
            assert pc.sum(table["bytes"]).as_py() == byts, f
            assert pc.sum(table["packets"]).as_py() == packets, f
        if quarantine.num_rows == 0:
            want = {canonical(ip): v for ip, v in stats_by_ip(binary, f).items()}
            assert archive_stats_by_ip(table) == want, f


@pytest.mark.tools
@pytest.mark.shared_data
def test_times_are_utc_whatever_the_local_zone(monkeypatch):
    need_tools("nfdump")
    root = need_data("flow_exports/generated_nfcapd/EAQ.pcap")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    f = root / "flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000"
    table, _, _ = read_all("nfcapd", f)
    first = pc.min(table["time_start"]).as_py()
    assert first.isoformat().startswith("2015-05-28T13:49:08")
    # milliseconds survive (nfdump's own CSV of 1.7.1 drops them)
    assert any(t.microsecond for t in table["time_start"].to_pylist())


@pytest.mark.tools
@pytest.mark.shared_data
def test_nfdump_csv_text_of_1_7_1(tmp_path):
    """flows.nfdump.csv.gz is `nfdump -o csv` of nfdump 1.7.1: same totals as the binary."""
    need_tools("nfdump")
    root = need_data("flow_exports/generated_nfcapd/teams.pcap")
    d = root / "flow_exports/generated_nfcapd/teams.pcap"
    assert detect_format(d / "flows.nfdump.csv.gz") == "nfdump-csv"
    table, quarantine, read = read_all("nfdump-csv", d / "flows.nfdump.csv.gz")
    flows, packets, byts = summary_totals(nfdump_binary(), d / "nfcapd.202611250000")
    assert read == table.num_rows == flows and quarantine.num_rows == 0
    assert pc.sum(table["bytes"]).as_py() == byts
    assert pc.sum(table["packets"]).as_py() == packets


def test_nfdump_csv_text_of_1_7_5(tmp_path):
    """nfdump >= 1.7.5 prints named columns (firstSeen, duration, ...) and a summary."""
    f = tmp_path / "new.csv.gz"
    with gzip.open(f, "wt") as fh:
        fh.write(
            "firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows\n"
            "2024-06-01 10:00:00.125,1.500,TCP,192.0.2.1,443,198.51.100.9,51000,10,9000,1\n"
            "2024-06-01 10:00:01.000,0.000,ICMP,2001:db8::1,0,2001:db8::2,8.0,1,84,1\n"
            "Summary\nflows,bytes,packets,avg_bps,avg_pps,avg_bpp\n2,9084,11,0,0,0\n"
        )
    assert detect_format(f) == "nfdump-csv"
    table, quarantine, read = read_all("nfdump-csv", f)
    assert read == 2 and quarantine.num_rows == 0
    rows = table.to_pylist()
    assert rows[0]["proto"] == 6 and rows[1]["proto"] == 1 and rows[1]["dst_port"] == 2048
    assert (rows[0]["time_end"] - rows[0]["time_start"]).total_seconds() == 1.5
    assert rows[0]["time_start"].microsecond == 125_000


def fake_nfdump(tmp_path: Path, version: str, body: str) -> str:
    """An executable that answers -V with ``version`` and prints ``body`` for -r."""
    script = tmp_path / "fake-nfdump"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-V" ]; then echo "nfdump: Version: {version}"; exit 0; fi\n'
        'echo "$@" > "$(dirname "$0")/args"\n'
        f"cat <<'EOF'\n{body}EOF\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def nfcapd_stub(tmp_path: Path) -> Path:
    f = tmp_path / "nfcapd.202406011000"
    f.write_bytes(b"\x0c\xa5\x02\x00" + b"\x00" * 60)  # the header nfdump files start with
    return f


def test_nfdump_1_7_5_csv_output_with_header(tmp_path):
    """With nfdump >= 1.7.5 the importer asks for csv:<tokens> and skips the header line."""
    body = (
        "firstSeen,lastSeen,routerIP,input,output,srcAddr,dstAddr,srcPort,dstPort,proto,"
        "inBytes,inPackets,srcAS,dstAS\n"
        "2024-06-01 10:00:00.125,2024-06-01 10:00:02.000,192.0.2.254,3,4,192.0.2.1,"
        "198.51.100.9,443,51000,6,9000,10,64500,64501\n"
        "2024-06-01 10:00:00.125,2024-06-01 10:00:02.000,192.0.2.254,3,4,192.0.2.1,"
        "198.51.100.9,443,51000,6,-1,10,64500,64501\n"
        "this line is not a record\n"
    )
    nf = fake_nfdump(tmp_path, "1.7.6-372af73 Options: ZSTD", body)
    table, quarantine, read = read_all("nfcapd", nfcapd_stub(tmp_path), nfdump=nf)
    args = (tmp_path / "args").read_text()
    assert "csv:%ts,%te,%ra" in args and "-6" in args and "-N" in args
    assert read == 3 and table.num_rows == 1
    assert sorted(quarantine["reason"].to_pylist()) == ["malformed_line", "negative_counter"]
    row = table.to_pylist()[0]
    assert (row["src_as"], row["dst_as"], row["in_if"], row["out_if"]) == (64500, 64501, 3, 4)
    assert format_addresses(table["exporter"]) == ["192.0.2.254"]


@pytest.mark.tools
@pytest.mark.shared_data
def test_nfdump_1_7_1_fmt_output_of_the_real_nfdump() -> None:
    """The installed nfdump (1.7.1 on Debian 12), not a stand-in: its fmt output prints some
    Cisco NFv9 IPv4 addresses as ``::138.187.x.y``, which the importer stores as IPv4."""
    need_tools("nfdump")
    case = "flow_exports/pmacct/101-NFv9-CISCO-cust_primitives/nfcapd_replay/nfcapd.202611250000"
    f = need_data(case) / case
    assert nfdump_version(nfdump_binary())[:2] == (1, 7)  # the fmt-output path
    text = subprocess.run(
        [nfdump_binary(), "-q", "-N", "-r", str(f), "-o", "fmt:%sa"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "::138.187." in text  # the quirk is really there in this nfdump's output
    table, quarantine, read = read_all("nfcapd", f)
    assert read == 51 and quarantine.num_rows == 0
    src = format_addresses(table["src_addr"])
    assert "138.187.57.3" in src and not any(a.startswith("::138.") for a in src)
    assert all(ipaddress.ip_address(a).version == 4 for a in src)


@pytest.mark.tools
@pytest.mark.shared_data
def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    need_tools("nfdump")
    root = need_data("flow_exports/generated_nfcapd/amp.UDP.isakmp.pcap")
    good = root / "flow_exports/generated_nfcapd/amp.UDP.isakmp.pcap/nfcapd.202611250000"
    cut = tmp_path / "nfcapd.truncated"
    cut.write_bytes(good.read_bytes()[:200_000])
    with pytest.raises(InputError, match=r"nfcapd.truncated: nfdump cannot read it"):
        read_all("nfcapd", cut)
    tiny = tmp_path / "nfcapd.tiny"
    tiny.write_bytes(good.read_bytes()[:100])
    with pytest.raises(InputError, match=r"nfcapd\.tiny"):
        read_all("nfcapd", tiny)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(5000))
    with pytest.raises(InputError, match="not an nfcapd file"):
        read_all("nfcapd", garbage)


def test_missing_nfdump_says_what_to_install(tmp_path):
    with pytest.raises(NfdumpMissing, match="apt-get install nfdump"):
        read_all("nfcapd", nfcapd_stub(tmp_path), nfdump="no-such-nfdump-binary")


def test_header_decides_the_columns_and_a_strange_header_is_an_error(tmp_path):
    """If a later nfdump orders its columns differently, the header still maps them."""
    body = (
        "srcAddr,dstAddr,firstSeen,inBytes,lastSeen,proto\n"
        "192.0.2.1,198.51.100.9,2024-06-01 10:00:00.125,9000,2024-06-01 10:00:02.000,17\n"
    )
    nf = fake_nfdump(tmp_path, "1.7.7", body)
    table, _, read = read_all("nfcapd", nfcapd_stub(tmp_path), nfdump=nf)
    assert read == 1 and table["bytes"].to_pylist() == [9000] and table["proto"][0].as_py() == 17
    nf = fake_nfdump(tmp_path, "1.7.7", "when,who,what\n1,2,3\n")
    with pytest.raises(InputError, match="unexpected header"):
        read_all("nfcapd", nfcapd_stub(tmp_path), nfdump=nf)


def test_cli_without_nfdump_fails_before_any_work(tmp_path, capsys):
    from flowatlas.cli import main

    stub = nfcapd_stub(tmp_path)
    out = tmp_path / "archive"
    argv = ["import", str(stub), "--out", str(out), "--nfdump", "no-such-nfdump"]
    assert main([*argv, "--reader", "nfdump"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "install the Debian package nfdump" in err
    assert not (out / "_import" / "manifest.json").exists()
