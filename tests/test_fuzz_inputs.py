"""Fuzzing ``flowatlas import`` and ``flowatlas build`` with mutated real and built inputs.

For every format (nfcapd, NetFlow v5 / v9 / IPFIX captures, sFlow captures, CSV, goflow2
JSON and protobuf, pmacct JSON and CSV, the archive's own Parquet) seed files are mutated
(bits flipped, spans overwritten, cut, deleted, doubled, inserted, 32-bit fields set to
extremes) and run through the CLI in this process. Whatever the bytes:

- the exit status is 0 or 2, and never a traceback (any other exception fails the test);
- records read = written + quarantined, for every file in the manifest, and the archive and
  quarantine files hold exactly what the manifest says;
- nothing is left half-written: no hidden ``.tmp`` file, no pending import, no output of a
  refused file; a build either refuses (exit 2, no cube) or gives the reference cube.

CI runs 200 mutated inputs per format (60 for the archive, each a build), derandomised;
``--full`` (or FLOWATLAS_FULL=1) runs 2,000 per format and prints the counts.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_importers_goflow2 import V1, V2, flow_message, varint

from flowatlas.cli import main
from flowatlas.io.commands import import_sources
from flowatlas.io.pcap import UdpDatagram, write_pcap
from flowatlas.testing import shared_data_dir, tool_missing

BOUNDED, LONG = 200, 2_000
HEADER = "time_start,time_end,src_addr,dst_addr,src_port,dst_port,proto,bytes,packets\n"
DATA = shared_data_dir()
PMACCT = DATA / "flow_exports/pmacct"


# --------------------------------------------------------------------------- seeds


def v5_payload(count: int, seq: int) -> bytes:
    head = struct.pack(">HHIIIIBBH", 5, count, 60_000, 1_700_000_000, 0, seq, 0, 0, 0)
    recs = b"".join(
        struct.pack(
            ">4s4s4sHHIIIIHHBBBBHHBBH",
            bytes([10, 0, 0, i + 1]),
            bytes([198, 51, 100, i + 1]),
            bytes(4),
            1,
            2,
            2 + i,
            1500 * (2 + i),
            50_000,
            59_000,
            1000 + i,
            443,
            0,
            0,
            6,
            0,
            64500,
            0,
            24,
            24,
            0,
        )
        for i in range(count)
    )
    return head + recs


def v5_capture(path: Path) -> Path:
    grams = [
        UdpDatagram(1_700_000_000_000_000 + k, b"\0" * 10 + b"\xff\xff" + bytes([192, 0, 2, 9]),
                    2055, 2055, v5_payload(5, 5 * k))
        for k in range(6)
    ]  # fmt: skip
    write_pcap(path, grams)
    return path


def csv_seed(path: Path, n: int = 60) -> Path:
    rows = [
        f"2024-03-01T{i % 24:02d}:00:0{i % 10}Z,2024-03-01T{i % 24:02d}:00:09Z,10.0.{i % 250}.1,"
        f"198.51.{i % 100}.{i % 200},{1000 + i % 5000},443,6,{100 + i % 1400},{1 + i % 5}\n"
        for i in range(n)
    ]
    path.write_text(HEADER + "".join(rows))
    return path


def goflow2_json_seed(path: Path) -> Path:
    lines = [json.dumps({**V2, "bytes": 100 + i, "src_port": i}) for i in range(20)]
    path.write_text("\n".join([*lines, json.dumps(V1)]) + "\n")
    return path


def goflow2_pb_seed(path: Path) -> Path:
    msgs = [flow_message(bytes=100 + i, src=bytes([192, 0, 2, i + 1])) for i in range(20)]
    path.write_bytes(b"".join(varint(len(m)) + m for m in msgs))
    return path


def pmacct_csv_seed(path: Path) -> Path:
    head = (
        "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,TIMESTAMP_START,TIMESTAMP_END,"
        "PEER_SRC_IP,SAMPLING_RATE,PACKETS,FLOWS,BYTES\n"
    )
    rows = [
        f"192.0.2.{i + 1},198.51.100.2,443,{50000 + i},tcp,2024-06-01 10:00:0{i % 10}.000000,"
        f"2024-06-01 10:00:1{i % 10}.000000,10.0.0.1,100,3,1,{4500 + i}\n"
        for i in range(20)
    ]
    path.write_text(head + "".join(rows))
    return path


def shared(*rel: str) -> list[Path]:
    paths = [DATA / r for r in rel]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared data missing: {missing[0]}")
    return paths


#: format -> (--format, seed maker); a seed maker returns seed files (built or shared)
FORMATS = {
    "nfcapd": (
        "nfcapd",
        lambda d: shared(
            "flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000",
            "flow_exports/generated_nfcapd/http_ipv6.pcap/nfcapd.202611250000",
        ),
    ),
    "netflow-v5": ("netflow-pcap", lambda d: [v5_capture(d / "v5.pcap")]),
    "netflow-v9": (
        "netflow-pcap",
        lambda d: shared(
            "flow_exports/pmacct/101-NFv9-CISCO-cust_primitives/traffic-00.pcap",
            "flow_exports/pmacct/102-NFv9-CISCO-f2rd-pretag-sampling-reload/traffic-00.pcap",
        ),
    ),
    "ipfix": (
        "netflow-pcap",
        lambda d: shared(
            "flow_exports/pmacct/100-IPFIXv10-CISCO/traffic-00.pcap",
            "flow_exports/pmacct/104-IPFIXv10-IPv6-CISCO-sampling_option/traffic-00.pcap",
        ),
    ),
    "sflow": (  # no sFlow reader: the capture reader and the NetFlow sniffer must cope
        "netflow-pcap",
        lambda d: shared(
            "flow_exports/tcpdump_sflow/sflow_expanded.pcap",
            "flow_exports/tcpdump_sflow/sflow-print-v6.pcap",
        ),
    ),
    "csv": ("csv", lambda d: [csv_seed(d / "flows.csv")]),
    "goflow2-json": ("goflow2-json", lambda d: [goflow2_json_seed(d / "goflow2.log")]),
    "goflow2-pb": ("goflow2-pb", lambda d: [goflow2_pb_seed(d / "goflow2.pb")]),
    "pmacct-json": (
        "pmacct-json",
        lambda d: shared(
            "flow_exports/pmacct/106-IPFIXv10-HUAWEI-vrf_name/output-flow-00.json",
            "flow_exports/pmacct/101-NFv9-CISCO-cust_primitives/output-flow-00.json",
        ),
    ),
    "pmacct-csv": ("pmacct-csv", lambda d: [pmacct_csv_seed(d / "pmacct.csv")]),
}


# --------------------------------------------------------------------------- mutations


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random edits of ``data``: flips, overwrites, cuts, doubles, inserts."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        n = len(out)
        if n == 0:
            out += rng.bytes(int(rng.integers(1, 64)))
            continue
        at = int(rng.integers(0, n))
        span = int(rng.integers(1, max(2, min(64, n - at) + 1)))
        op = int(rng.integers(0, 8))
        if op <= 1:  # the most common damage: bits flipped in place
            for _ in range(int(rng.integers(1, 9))):
                k = int(rng.integers(0, n))
                out[k] ^= 1 << int(rng.integers(0, 8))
        elif op == 2:
            out[at : at + span] = rng.bytes(span)
        elif op == 3:
            del out[at:]
        elif op == 4:
            del out[at : at + span]
        elif op == 5:
            out[at:at] = out[at : at + span]
        elif op == 6:
            out[at:at] = rng.bytes(span)
        else:  # a 32-bit field (a length, a count, a time) set to an extreme
            value = int(rng.choice([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF]))
            out[at : at + 4] = value.to_bytes(4, "big")[: len(out[at : at + 4])]
    return bytes(out)


# --------------------------------------------------------------------------- checks


def rows_in(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def check_import(fmt: str, path: Path, out: Path) -> tuple[int, Counter]:
    """Import one mutant; check the invariants; return (exit status, record counts)."""
    code = main(["import", "-q", "-f", fmt, str(path), "--out", str(out)])
    assert code in (0, 2), code
    counts: Counter = Counter(exit=code)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "half-written file"
    manifest = out / "_import" / "manifest.json"
    entries = json.loads(manifest.read_text())["files"] if manifest.exists() else []
    if manifest.exists():
        assert json.loads(manifest.read_text())["pending"] == []
    assert len(entries) == (1 if code == 0 else 0)
    data_files = sorted(out.glob("day=*/*.parquet"))
    if code == 2:
        assert data_files == [], "a refused file left output"
        return code, counts
    [e] = entries
    assert e["records_read"] == e["records_written"] + e["records_quarantined"]
    assert sum(e["quarantine_reasons"].values()) == e["records_quarantined"]
    assert sorted(p.relative_to(out).as_posix() for p in data_files) == e["outputs"]
    assert sum(rows_in(p) for p in data_files) == e["records_written"]
    q = e["quarantine_file"]
    assert (rows_in(out / q) if q else 0) == e["records_quarantined"]
    counts.update(
        read=e["records_read"], written=e["records_written"], quarantined=e["records_quarantined"]
    )
    return code, counts


@pytest.fixture(autouse=True)
def _quick(monkeypatch):
    """A mutated nfcapd file can make nfdump loop: give up after 5 s, not a minute. And no
    fsync: it guards against power loss, which no check here is about, and is half the time
    of a small import."""
    import os

    import flowatlas.io.importers.nfdump as nfdump

    monkeypatch.setattr(nfdump, "NFDUMP_MIN_SECONDS", 5.0)
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def fuzz_format(name: str, n: int, tmp: Path) -> Counter:
    fmt, seeds_of = FORMATS[name]
    if name == "nfcapd" and tool_missing("nfdump"):
        pytest.skip(tool_missing("nfdump"))
    seeds = [p.read_bytes() for p in seeds_of(tmp)]
    rng = np.random.default_rng(sum(name.encode()))
    totals: Counter = Counter()
    suffix = ".csv" if "csv" in name else ""
    for i in range(n):
        data = mutate(seeds[i % len(seeds)], rng)
        if name == "csv" and i % 10 == 9:  # some compressed, as collectors keep them
            data, suffix = gzip.compress(data, mtime=0), ".csv.gz"
        src = tmp / f"m{i}{suffix}"
        src.write_bytes(data)
        out = tmp / f"a{i}"
        code, counts = check_import(fmt, src, out)
        totals.update(counts)
        totals["inputs"] += 1
        totals[f"exit {code}"] += 1
        shutil.rmtree(out, ignore_errors=True)
        src.unlink()
        suffix = ".csv" if "csv" in name else ""
    return totals


def report(name: str, totals: Counter) -> None:
    keys = ("inputs", "exit 0", "exit 2", "read", "written", "quarantined", "cubes", "refused")
    print(f"\nfuzz {name}: " + ", ".join(f"{k} {totals[k]:,}" for k in keys if k in totals))


@pytest.mark.parametrize("name", list(FORMATS))
def test_fuzz_import(name, tmp_path, capsys):
    totals = fuzz_format(name, BOUNDED, tmp_path)
    assert totals["inputs"] == BOUNDED
    assert totals["written"] > 0 or name == "sflow", "no mutant got through: weak seeds"
    with capsys.disabled():
        report(name, totals)


# --------------------------------------------------------------------------- the archive


@pytest.fixture(scope="module")
def archive_seed(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    d = tmp_path_factory.mktemp("fuzz-archive")
    src = csv_seed(d / "flows.csv", 20_000)  # pages, not the footer, make most of the file
    import_sources([src], d / "archive", progress=False)
    assert main(["build", str(d / "archive"), "--out", str(d / "cube"), "--workers", "0",
                 "-q"]) == 0  # fmt: skip
    return d / "archive", cube_bytes(d / "cube")


def cube_bytes(cube: Path) -> dict[str, bytes]:
    return {n: (cube / n).read_bytes() for n in ("cells.parquet", "rollups.parquet")}


def fuzz_archive(seed: tuple[Path, dict[str, bytes]], n: int, tmp: Path) -> Counter:
    archive, reference = seed
    [victim] = sorted(archive.glob("day=*/*.parquet"))
    pristine = victim.read_bytes()
    rng = np.random.default_rng(7)
    totals: Counter = Counter()
    for i in range(n):
        copy = tmp / "archive"
        shutil.copytree(archive, copy)
        if i % 4:  # bit rot: flips in place (a changed size is refused before any reading)
            data = bytearray(pristine)
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(4, len(data) - 8))
                data[at] ^= 1 << int(rng.integers(0, 8))
            mutant = bytes(data)
        else:
            mutant = mutate(pristine, rng)
        (copy / victim.relative_to(archive)).write_bytes(mutant)
        cube = tmp / "cube"
        code = main(["build", str(copy), "--out", str(cube), "--workers", "0", "-q"])
        assert code in (0, 2), code
        assert not [p for p in tmp.rglob("*") if ".partial-" in p.name or ".old-" in p.name]
        totals["inputs"] += 1
        totals[f"exit {code}"] += 1
        if code == 0:
            assert cube_bytes(cube) == reference, f"mutant {i} built a wrong cube"
            meta = json.loads((cube / "cube.json").read_text())["records"]
            assert meta["read"] == meta["cubed"] + sum(meta["quarantined"].values())
            totals["cubes"] += 1
        else:
            assert not cube.exists(), "a refused build left a cube"
            totals["refused"] += 1
        shutil.rmtree(copy)
        shutil.rmtree(cube, ignore_errors=True)
    return totals


def test_fuzz_archive_parquet(archive_seed, tmp_path, capsys):
    totals = fuzz_archive(archive_seed, 60, tmp_path)
    assert totals["refused"] > 0
    with capsys.disabled():
        report("archive parquet", totals)


# --------------------------------------------------------------------------- the long form


@pytest.mark.slow
def test_fuzz_long(archive_seed, tmp_path, capsys):
    """2,000 mutants per format (--full); prints the counts for bench/RESULTS.md."""
    with capsys.disabled():
        for name in FORMATS:
            d = tmp_path / name
            d.mkdir()
            report(name, fuzz_format(name, LONG, d))
        d = tmp_path / "archive"
        d.mkdir()
        report("archive parquet", fuzz_archive(archive_seed, LONG // 2, d))
