"""Damaged input is accounted for, never dropped; a failed import leaves nothing behind.

Each case here lost records silently, or ended in a traceback, before (issue 13): a pcap with
a corrupt record header or cut mid-packet, records with impossible counters, a CSV with one
huge line, a .gz copy of an imported file, an ``--out`` that is not an archive, a full disk.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowatlas.addresses import text_to_bytes16
from flowatlas.cli import main
from flowatlas.config import DEFAULT_MAX_LINE_RATE_GBPS, config_from_dict, load_config
from flowatlas.errors import ConfigError
from flowatlas.io.commands import import_sources
from flowatlas.io.importers.base import (
    MAX_PACKET_BYTES,
    RATE_MIN_DURATION_US,
    Batch,
    screen_counters,
)
from flowatlas.io.pcap import CaptureStats, iter_datagrams
from flowatlas.schema import FLOW_SCHEMA_V1
from flowatlas.testing import mounted_tmpfs, need_data

PCAP_101 = "flow_exports/pmacct/101-NFv9-CISCO-cust_primitives/traffic-00.pcap"
HEADER = "time_start,time_end,src_addr,dst_addr,src_port,dst_port,proto,bytes,packets\n"


def manifest_of(archive: Path) -> dict:
    return json.loads((archive / "_import" / "manifest.json").read_text())


def quarantine_of(archive: Path) -> list[dict]:
    rows: list[dict] = []
    for f in sorted((archive / "_import" / "quarantine").glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def archive_rows(archive: Path) -> int:
    return sum(
        pq.ParquetFile(p).metadata.num_rows
        for p in archive.rglob("*.parquet")
        if not p.relative_to(archive).as_posix().startswith("_")
    )


def record_offsets(data: bytes) -> list[int]:
    """Where each classic pcap record header starts."""
    pos, out = 24, []
    while pos + 16 <= len(data):
        out.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return out


# --------------------------------------------------------------------------- damaged pcaps


def test_corrupt_pcap_record_header_is_skipped_and_quarantined(tmp_path):
    """The issue's case: caplen 0xffffff at packet 10 lost 40 of 51 records silently."""
    data = (need_data(PCAP_101) / PCAP_101).read_bytes()
    offsets = record_offsets(data)
    damaged = bytearray(data)
    struct.pack_into("<I", damaged, offsets[9] + 8, 0xFFFFFF)
    src = tmp_path / "damaged.pcap"
    src.write_bytes(bytes(damaged))
    clean = import_sources([need_data(PCAP_101) / PCAP_101], tmp_path / "clean", progress=False)
    assert clean.records_written == 51 and clean.records_quarantined == 0

    out = tmp_path / "a"
    assert main(["import", "-q", str(src), "--out", str(out)]) == 0
    [entry] = manifest_of(out)["files"]
    # packet 10 held one record: it is lost with its header, and said so; the other 50 import
    assert entry["records_written"] == 50
    assert entry["records_quarantined"] == 1
    assert entry["records_read"] == 51
    assert entry["quarantine_reasons"] == {"corrupt capture record": 1}
    [q] = quarantine_of(out)
    assert q["position"] == "packet 10"
    assert "captured length 16777215" in q["detail"] and "bytes skipped" in q["detail"]
    assert archive_rows(out) == 50


def test_pcap_cut_mid_packet_is_quarantined(tmp_path):
    data = (need_data(PCAP_101) / PCAP_101).read_bytes()
    offsets = record_offsets(data)
    src = tmp_path / "cut.pcap"
    src.write_bytes(data[: offsets[20] + 9])  # inside the 21st record's header
    out = tmp_path / "a"
    assert main(["import", "-q", str(src), "--out", str(out)]) == 0
    [entry] = manifest_of(out)["files"]
    assert entry["quarantine_reasons"] == {"capture cut short": 1}
    assert entry["records_read"] == entry["records_written"] + 1
    [q] = quarantine_of(out)
    assert q["position"] == "packet 21"


def pcap_records(payloads: list[bytes]) -> bytes:
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    body = b"".join(
        struct.pack("<IIII", 1_700_000_000 + i, 0, len(p), len(p)) + p
        for i, p in enumerate(payloads)
    )
    return head + body


def ipv4_udp(payload: bytes) -> bytes:
    udp = struct.pack(">HHHH", 1000, 2055, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\1\2\3\4",
                     b"\5\6\7\x08")  # fmt: skip
    return ip + udp


@pytest.mark.parametrize("field", [8, 12, 4])
def test_resync_finds_every_packet_after_a_corrupt_header(field):
    """Whatever the corrupt field, the packets after it are all read again."""
    packets = [ipv4_udp(bytes([i]) * (30 + i)) for i in range(12)]
    cap = bytearray(pcap_records(packets))
    at = record_offsets(bytes(cap))[4]
    struct.pack_into("<I", cap, at + field, 0xFFFFFFF0)
    stats = CaptureStats()
    got = [d.payload for _, d in iter_datagrams(bytes(cap), stats)]
    if field == 8:  # the captured length: packet 5 is lost, the rest found again
        assert got == [bytes([i]) * (30 + i) for i in range(12) if i != 4]
        assert [d[:2] for d in stats.damage] == [(5, "corrupt capture record")]
    else:  # the wire length or the time: the data is still where the header says
        assert got == [bytes([i]) * (30 + i) for i in range(12)]
        assert stats.damage == []


def test_pcapng_corrupt_block_length_resyncs():
    def block(btype: int, body: bytes) -> bytes:
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 101, 0, 0))
    epbs = []
    for i in range(6):
        pkt = ipv4_udp(bytes([i]) * 40)
        pkt += b"\0" * (-len(pkt) % 4)
        epbs.append(block(6, struct.pack("<IIIII", 0, 0, i, len(pkt), len(pkt)) + pkt))
    cap = bytearray(shb + idb + b"".join(epbs))
    at = len(shb) + len(idb) + len(epbs[0]) + len(epbs[1])
    struct.pack_into("<I", cap, at + 4, 0x7FFF_FFF0)  # block 3's length
    stats = CaptureStats()
    got = [d.payload for _, d in iter_datagrams(bytes(cap), stats)]
    assert got == [bytes([i]) * 40 for i in (0, 1, 3, 4, 5)]
    assert [d[1] for d in stats.damage] == ["corrupt capture record"]


# --------------------------------------------------------------------------- impossible counters


def flows(n: int, nbytes, npkts, dur_us, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = 1_700_000_000_000_000 + rng.integers(0, 10**9, n)
    addr = text_to_bytes16([f"10.0.{i % 250}.{i % 200 + 1}" for i in range(n)])
    cols = {
        "time_start": pa.array(start, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "time_end": pa.array(start + np.asarray(dur_us), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")
        ),
        "exporter": addr,
        "in_if": pa.array(np.zeros(n, np.uint32)),
        "out_if": pa.array(np.zeros(n, np.uint32)),
        "src_addr": addr,
        "dst_addr": addr,
        "src_port": pa.array(np.zeros(n, np.uint16)),
        "dst_port": pa.array(np.zeros(n, np.uint16)),
        "proto": pa.array(np.full(n, 6, np.uint8)),
        "bytes": pa.array(np.asarray(nbytes, np.uint64)),
        "packets": pa.array(np.asarray(npkts, np.uint64)),
        "sampling_rate": pa.array(np.ones(n, np.uint32)),
        "src_as": pa.array(np.zeros(n, np.uint32)),
        "dst_as": pa.array(np.zeros(n, np.uint32)),
    }
    return pa.Table.from_pydict(cols, schema=pa.schema([f for f in FLOW_SCHEMA_V1]))


def screen_oracle(b: int, p: int, dur_us: int, gbps: float) -> str | None:
    """The rules, one record at a time, in exact integer arithmetic."""
    if b > 0 and p > b:
        return "more_packets_than_bytes"
    if p > 0 and b > p * MAX_PACKET_BYTES:
        return "over_65535_bytes_per_packet"
    d = max(dur_us, RATE_MIN_DURATION_US)
    if b * 8 * 1_000_000 > gbps * 1e9 * d:
        return "above_line_rate"
    return None


@pytest.mark.parametrize("seed", range(4))
def test_counter_screen_matches_the_oracle(seed):
    rng = np.random.default_rng(seed)
    n = 4_000
    choices = np.array([0, 1, 2, 1000, 2**32, 2**50, 2**63, 2**64 - 1], dtype=np.uint64)
    npkts = rng.choice(choices, n, p=[0.1, 0.3, 0.2, 0.2, 0.1, 0.05, 0.025, 0.025])
    per = rng.choice(np.array([0, 1, 40, 1500, 65535, 65536, 2**20], dtype=np.uint64), n)
    with np.errstate(over="ignore"):  # wraps: adversarial
        nbytes = npkts * per + rng.integers(0, 3, n).astype(np.uint64)
    nbytes[rng.random(n) < 0.05] = np.uint64(2**64 - 1)
    dur = rng.choice([-5_000, 0, 1, 999, 1000, 10**6, 3_600 * 10**6], n)
    gbps = float(rng.choice([1.0, 100.0, DEFAULT_MAX_LINE_RATE_GBPS]))
    table = flows(n, nbytes, npkts, dur, seed)
    batch = screen_counters(Batch(table), "x.csv", first_record=11, max_line_rate_gbps=gbps)
    want = [
        screen_oracle(int(b), int(p), int(d), gbps)
        for b, p, d in zip(nbytes.tolist(), npkts.tolist(), dur.tolist(), strict=True)
    ]
    bad = [i for i, w in enumerate(want) if w]
    assert bad, "the inputs never exercised the screen"
    assert batch.table.num_rows == n - len(bad)
    assert batch.records_read == n
    assert batch.quarantine.column("reason").to_pylist() == [want[i] for i in bad]
    assert batch.quarantine.column("position").to_pylist() == [
        f"decoded record {11 + i}" for i in bad
    ]
    kept = batch.table.column("bytes").to_pylist()
    assert kept == [int(nbytes[i]) for i in range(n) if not want[i]]


def test_clean_batch_passes_untouched():
    table = flows(3, [100, 0, 1500], [1, 0, 1], [0, 0, 10])
    batch = Batch(table)
    assert screen_counters(batch, "x") is batch


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_impossible_counters_are_quarantined_by_import(tmp_path):
    """The issue's nfcapd bit flip gave one flow of 26,388,279,066,856 bytes in 1 packet."""
    src = write_csv(
        tmp_path / "f.csv",
        [
            "2024-03-01T00:00:00Z,2024-03-01T00:00:01Z,10.0.0.1,10.0.0.2,1,2,6,1500,1",
            "2024-03-01T00:00:00Z,2024-03-01T00:00:01Z,10.0.0.1,10.0.0.2,1,2,6,26388279066856,1",
            "2024-03-01T00:00:00Z,2024-03-01T00:00:00Z,10.0.0.1,10.0.0.2,1,2,6,5,9",
            # 10^15 bytes in 10^11 packets within one second: 8 Pbit/s
            "2024-03-01T00:00:00Z,2024-03-01T00:00:01Z,10.0.0.1,10.0.0.2,1,2,6,"
            "1000000000000000,100000000000",
            # the same in a flow without duration: judged over one millisecond
            "2024-03-01T00:00:00Z,2024-03-01T00:00:00Z,10.0.0.1,10.0.0.2,1,2,6,250000000,200000",
            "2024-03-01T00:00:00Z,2024-03-01T00:00:00Z,10.0.0.1,10.0.0.2,1,2,6,1500,1",
        ],
    )
    out = tmp_path / "a"
    assert main(["import", "-q", str(src), "--out", str(out)]) == 0
    [entry] = manifest_of(out)["files"]
    assert entry["records_read"] == 6 and entry["records_written"] == 2
    assert entry["quarantine_reasons"] == {
        "above_line_rate": 2,
        "more_packets_than_bytes": 1,
        "over_65535_bytes_per_packet": 1,
    }
    q = {r["reason"]: r for r in quarantine_of(out)}
    assert "bytes 26388279066856, packets 1" in q["over_65535_bytes_per_packet"]["detail"]
    assert "10.0.0.1 -> 10.0.0.2" in q["over_65535_bytes_per_packet"]["detail"]
    assert archive_rows(out) == 2

    # the line rate is a setting: at 10,000 Gbit/s the 2 Tbit/s flow passes
    cfg = tmp_path / "c.toml"
    cfg.write_text("[import]\nmax_line_rate_gbps = 10000\n")
    out2 = tmp_path / "b"
    assert main(["import", "-q", str(src), "--out", str(out2), "--config", str(cfg)]) == 0
    [entry] = manifest_of(out2)["files"]
    assert entry["quarantine_reasons"]["above_line_rate"] == 1


def test_line_rate_setting_is_checked():
    assert load_config(None).importing.max_line_rate_gbps == DEFAULT_MAX_LINE_RATE_GBPS
    cfg = config_from_dict({"import": {"max_line_rate_gbps": 400}})
    assert cfg.importing.max_line_rate_gbps == 400.0
    assert cfg.digest() == load_config(None).digest()  # it changes no cube
    for bad in (0, -1, "fast", True):
        with pytest.raises(ConfigError, match="max_line_rate_gbps"):
            config_from_dict({"import": {"max_line_rate_gbps": bad}})
    with pytest.raises(ConfigError, match="unknown key 'rate'"):
        config_from_dict({"import": {"rate": 1}})


def test_no_impossible_record_from_a_flipped_nfcapd_file(tmp_path):
    """Single byte flips in an nfcapd file: whatever imports, no impossible counter does."""
    from flowatlas.testing import need_tools

    need_tools("nfdump")
    base = need_data("flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000")
    data = (base / "flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000").read_bytes()
    rng = np.random.default_rng(13)
    sources = []
    for k in range(12):
        d = bytearray(data)
        at = int(rng.integers(len(d) // 4, len(d)))
        d[at] ^= 1 << int(rng.integers(0, 8))
        p = tmp_path / "in" / f"nfcapd.2026112500{k:02d}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(bytes(d))
        sources.append(p)
    out = tmp_path / "a"
    code = main(["import", "-q", "-f", "nfcapd", *map(str, sources), "--out", str(out)])
    assert code in (0, 2)
    for p in out.rglob("*.parquet"):
        if p.relative_to(out).as_posix().startswith("_"):
            continue
        t = pq.read_table(p)
        b = np.array(t.column("bytes").to_pylist(), dtype=object)
        k = np.array(t.column("packets").to_pylist(), dtype=object)
        both = (b > 0) & (k > 0)
        assert not ((k > b) & both).any()
        assert not ((b > k * MAX_PACKET_BYTES) & both).any()
    m = manifest_of(out)
    for e in m["files"]:
        assert e["records_read"] == e["records_written"] + e["records_quarantined"]


# --------------------------------------------------------------------------- CSV


def test_csv_with_one_huge_line_keeps_every_good_row(tmp_path):
    """A 40 MB line refused all 200,000 good rows of its file; now only it is quarantined."""
    good = 200_000
    i = np.arange(good)
    lines = [
        f"2024-03-01T{h:02d}:00:00Z,2024-03-01T{h:02d}:00:09Z,10.0.{a}.1,198.51.100.{b},"
        f"{1000 + a},443,6,{100 + k % 1000},{1 + k % 5}\n"
        for k, h, a, b in zip(i, i % 24, i % 250, i % 200, strict=True)
    ]
    huge = "2024-03-01T00:00:00Z,2024-03-01T00:00:01Z,10.0.0.1,10.0.0.2,1,2,6," + "9" * 40_000_000
    src = tmp_path / "big.csv"
    with open(src, "w") as fh:
        fh.write(HEADER)
        fh.writelines(lines[:123_456])
        fh.write(huge + ",1\n")
        fh.writelines(lines[123_456:])
    out = tmp_path / "a"
    assert main(["import", "-q", str(src), "--out", str(out)]) == 0
    [entry] = manifest_of(out)["files"]
    assert entry["records_written"] == good
    assert entry["quarantine_reasons"] == {"line_too_long": 1}
    [q] = quarantine_of(out)
    assert q["position"] == "row 123457"
    assert q["detail"] == f"a line of {len(huge) + 2} bytes"
    assert archive_rows(out) == good


@pytest.mark.parametrize("at_end", [False, True])
def test_line_length_guard_streams_the_rest(at_end):
    from flowatlas.io.importers.csv import LineLengthGuard

    class Chunks:
        def __init__(self, data: bytes, size: int) -> None:
            self.parts = [data[i : i + size] for i in range(0, len(data), size)]

        def read(self, size: int = -1) -> bytes:
            return self.parts.pop(0) if self.parts else b""

        def close(self) -> None:
            pass

    long_line = b"x" * 5000
    data = b"a,b\n1,2\n" + long_line + (b"" if at_end else b"\n3,4\n")
    for chunk in (1, 7, 100, 4096, 10**6):
        guard = LineLengthGuard(Chunks(data, chunk), limit=1000)
        out = b""
        while piece := guard.read(chunk):
            out += piece
        want = b"a,b\n1,2\n<flowatlas:line_too_long:5000>" + (b"" if at_end else b"\n3,4\n")
        assert out == want, chunk


# --------------------------------------------------------------------------- duplicates


def test_gz_copy_of_an_imported_csv_is_not_counted_twice(tmp_path):
    src = write_csv(
        tmp_path / "f.csv",
        [f"2024-03-01T00:00:0{i}Z,2024-03-01T00:00:09Z,10.0.0.{i},10.0.1.1,1,2,6,100,1"
         for i in range(5)],
    )  # fmt: skip
    gz = tmp_path / "copy" / "f.csv.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(src.read_bytes()))
    out = tmp_path / "a"
    assert main(["import", "-q", str(src), "--out", str(out)]) == 0
    s = import_sources([gz], out, progress=False)
    assert s.skipped_known == [str(gz.resolve())] and not s.imported
    assert archive_rows(out) == 5
    # both in one run, the other way round: one is imported, the other is a duplicate
    s = import_sources([gz, src], tmp_path / "b", progress=False)
    assert len(s.imported) == 1 and len(s.skipped_duplicate) == 1
    assert archive_rows(tmp_path / "b") == 5
    [entry] = manifest_of(tmp_path / "b")["files"]
    assert entry["file_sha256"] is not None and entry["file_sha256"] != entry["sha256"]


# --------------------------------------------------------------------------- --out


def test_import_refuses_an_unrelated_folder_or_a_cube(tmp_path, capsys):
    src = write_csv(tmp_path / "f.csv", ["2024-03-01T00:00:00Z,,10.0.0.1,10.0.0.2,1,2,6,5,1"])
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.txt").write_text("mine")
    assert main(["import", "-q", str(src), "--out", str(docs)]) == 2
    err = capsys.readouterr().err
    assert "not a flow archive (holds notes.txt)" in err and err.count("\n") == 1
    assert sorted(p.name for p in docs.iterdir()) == ["notes.txt"]
    cube = tmp_path / "cube"
    cube.mkdir()
    (cube / "cube.json").write_text("{}")
    assert main(["import", "-q", str(src), "--out", str(cube)]) == 2
    assert "is a flowatlas cube, not an archive" in capsys.readouterr().err
    assert sorted(p.name for p in cube.iterdir()) == ["cube.json"]
    # an archive, an empty folder and a new one are fine
    for ok in (tmp_path / "new", tmp_path / "empty"):
        if ok.name == "empty":
            ok.mkdir()
        assert main(["import", "-q", str(src), "--out", str(ok)]) == 0
    assert main(["import", "-q", str(src), "--out", str(tmp_path / "new")]) == 0


# --------------------------------------------------------------------------- full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 600 KiB tmpfs (root only: skipped with the reason elsewhere)."""
    with mounted_tmpfs(tmp_path / "tiny", "600k") as mnt:
        yield mnt


def big_csv(path: Path, n: int, days: int = 3) -> Path:
    i = np.arange(n)
    with open(path, "w") as fh:
        fh.write(HEADER)
        fh.writelines(
            f"2024-03-0{1 + k % days}T{k % 24:02d}:00:00Z,2024-03-0{1 + k % days}T{k % 24:02d}"
            f":00:09Z,10.0.{k % 250}.{k % 199},198.51.{k % 97}.{k % 200},{1000 + k % 5000},443,6,"
            f"{100 + k % 1000},{1 + k % 5}\n"
            for k in i.tolist()
        )
    return path


def test_full_disk_during_import_is_one_line_and_leaves_nothing(tmp_path, tiny_disk, capsys):
    small = write_csv(tmp_path / "small.csv", ["2024-03-01T00:00:00Z,,10.0.0.1,10.0.0.2,1,2,6,5,1"])
    big = big_csv(tmp_path / "big.csv", 200_000)
    out = tiny_disk / "a"
    assert main(["import", "-q", str(small), "--out", str(out)]) == 0
    before = manifest_of(out)
    capsys.readouterr()  # the first import's own output (its set-up warning)
    assert main(["import", "-q", str(big), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowatlas: error: import stopped: ") and err.count("\n") == 1
    assert "No space left on device" in err
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    # nothing half-written: the small file's outputs and the import's own files, no more
    assert [n for n in left if not n.startswith("_import/")] == before["files"][0]["outputs"]
    assert not [n for n in left if n.endswith(".tmp")]
    m = manifest_of(out)
    assert [e["path"] for e in m["files"]] == [str(small.resolve())]
    # with room again, the import completes as if nothing had happened
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    assert main(["import", "-q", str(big), "--out", str(out)]) == 0
    ref = tmp_path / "ref"
    import_sources([small], ref, progress=False)
    import_sources([big], ref, progress=False)
    for p in ref.rglob("*.parquet"):
        rel = p.relative_to(ref)
        if not rel.as_posix().startswith("_"):
            assert (out / rel).read_bytes() == p.read_bytes(), rel


def test_nfdump_that_never_finishes_is_stopped(tmp_path, monkeypatch, capsys):
    """Some corrupt nfcapd files make nfdump loop forever; the import must not hang."""
    import flowatlas.io.importers.nfdump as nfdump

    base = need_data("flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000")
    src = base / "flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000"
    looping = tmp_path / "nfdump"
    looping.write_text(
        '#!/bin/sh\ncase "$1" in -V) echo "nfdump: Version: 1.7.1";; *) exec sleep 600;; esac\n'
    )
    looping.chmod(0o755)
    monkeypatch.setattr(nfdump, "NFDUMP_MIN_SECONDS", 1.0)
    out = tmp_path / "a"
    argv = ["import", "-q", "-f", "nfcapd", "--reader", "nfdump", "--nfdump", str(looping)]
    argv += [str(src), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{src}: nfdump did not finish reading it in 1 s" in err
    assert not list(out.glob("day=*/*"))


def test_epoch_times_beyond_64_bits_are_quarantined_not_a_traceback(tmp_path):
    """Found by the fuzz test: a goflow2 time of 9,767,324,720,000,000,000 ns (a flipped digit)
    failed the import with a pyarrow error; seconds beyond 2^63 / 10^6 wrapped around."""
    from flowatlas.io.importers.csv import parse_time

    us, state = parse_time(pa.array(["9767324720000000000", "-9999999999999999999"]))
    assert state.tolist() == [0, 0] and us[0] > 2**52 and us[1] < -(2**52)  # far from now
    us, _ = parse_time(pa.array([10**13, 1_700_000_000]), "s")  # 10^19 us: saturates
    assert us.tolist() == [2**63 - 1, 1_700_000_000 * 10**6]
    src = tmp_path / "f.csv"
    src.write_text(
        HEADER
        + "1700000000,1700000001,10.0.0.1,10.0.0.2,1,2,6,100,1\n"
        + "99999999999999,99999999999999,10.0.0.1,10.0.0.2,1,2,6,100,1\n"
        + "97673247200000000000,1700000001,10.0.0.1,10.0.0.2,1,2,6,100,1\n"
    )
    out = tmp_path / "a"
    assert main(["import", "-q", "--time-unit", "s", str(src), "--out", str(out)]) == 0
    [entry] = manifest_of(out)["files"]
    assert entry["records_written"] == 1 and entry["records_quarantined"] == 2
