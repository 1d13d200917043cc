"""Import throughput: every importer next to its reference, in one run, with peak memory.

Each importer is measured as ``flowatlas import FILE -j 1`` (to Parquet, start-up included)
next to the tool or decoder it should be compared with, on the same records:

- nfcapd: an nfcapd file of N records (copies of one softflowd output in
  ../shared/data/flow_exports/generated_nfcapd, pkt.TCP.DOMINATE, merged with ``nfdump -R DIR
  -w``, as issue 16 measured it) next to
  nfdump's binary read (``nfdump -r FILE -q -s srcip -n 5``), the native reader alone
  (decoding into Arrow, no Parquet) and the old path through nfdump's text (``--reader
  nfdump``); then ``--split-records`` (default six times ``--records``) in ``--files`` files
  of a few million records each, imported with ``-j 1`` and ``-j 2`` in the same run (the -j
  scaling case: each file must be big enough that a worker's start-up does not dominate);
- CSV: ``pyarrow.csv.read_csv`` alone;
- NetFlow/IPFIX in a pcap (IPFIX messages, IPv4 and IPv6 templates, as a router sends them):
  the native decoder alone (capture reading and decoding, no Parquet);
- goflow2 JSON lines and pmacct JSON lines: ``pyarrow.json.read_json`` alone;
- goflow2 protobuf: the pure-Python wire-format decoder alone (the importer's old path, still
  its oracle and its fallback for odd messages).

Every format is also measured in-process, start-up excluded (the work alone, after a first
run on a small file), next to its in-process reference: pyarrow's CSV or JSON reader, the
capture decoding alone, the compiled protobuf walk alone.

The CSV, JSON, protobuf and pcap files hold the first ``--other-records`` records of the
nfcapd file's archive, written here. Inputs are generated into bench/_data (git-ignored) and
reused. Every case runs as a child process (bench/_common.py: wall time, CPU time of the
process tree, peak RSS of the tree, polled); cases are interleaved and repeated, and the
median is reported. Usage::

    python bench/bench_import.py [--records N] [--other-records M] [--repeat R]
                                 [--files K] [--split-records S] [--skip-slow]
                                 [--results FILE | --no-results]
    python bench/bench_import.py --pipeline 100000000 --files 16   # import, then build

``--pipeline N`` measures the acceptance case of issue 16 instead: N records in ``--files``
nfcapd files imported with the defaults (one worker per core), then the archive built, each
timed as a child process: import + build next to the build alone.

Needs nfdump (Debian package) and the shared data folder (FLOWATLAS_DATA).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from _common import (
    Measurement,
    git_revision,
    load_average,
    machine,
    markdown_table,
    mib,
    rate,
    run_measured,
    versions,
    write_section,
)

from flowatlas.addresses import bytes16_to_hilo, format_addresses
from flowatlas.io.commands import import_sources
from flowatlas.io.importers.nfdump import nfdump_binary, nfdump_env, nfdump_version
from flowatlas.testing import REPO_ROOT, shared_data_dir, shared_data_missing

SOURCES = "flow_exports/generated_nfcapd"
#: the softflowd output copied into the big file, as issue 16 measured (400 copies: 3.88 M)
SOURCE = f"{SOURCES}/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng/nfcapd.202611250000"
DATA = Path(__file__).resolve().parent / "_data"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "Import throughput (bench/bench_import.py)"
NOW_US = 1_790_000_000 * 1_000_000
#: records of the small file each in-process case reads first (loads modules and kernels)
WARM_RECORDS = 2000


# --------------------------------------------------------------------------- inputs


def nfdump_count(binary: str, path: Path) -> int:
    """Records in an nfcapd file, as nfdump counts them."""
    out = subprocess.run(
        [binary, "-r", str(path), "-q", "-N", "-o", "null", "-I"],
        capture_output=True,
        text=True,
        env=nfdump_env(),
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Flows:"):
            return int(line.split(":")[1])
    raise SystemExit(f"bench_import: cannot count the records of {path}: {out[:200]!r}")


def build_nfcapd(binary: str, workdir: Path, records: int) -> tuple[Path, int]:
    """One nfcapd file of at least ``records`` flows: copies of a softflowd output merged."""
    why = shared_data_missing(SOURCE)
    if why:
        raise SystemExit(f"bench_import: {why}")
    target = workdir / f"nfcapd-{records}"
    if target.exists():
        return target, nfdump_count(binary, target)
    sources = [shared_data_dir() / SOURCE]
    per_round = sum(nfdump_count(binary, s) for s in sources)
    rounds = max(1, -(-records // per_round))
    indir = workdir / "copies"
    shutil.rmtree(indir, ignore_errors=True)
    indir.mkdir(parents=True)
    k = 0
    for _ in range(rounds):
        for s in sources:
            shutil.copy(s, indir / f"nfcapd.2026{k:08d}")
            k += 1
    tmp = workdir / f".nfcapd.{records}.tmp"
    subprocess.run([binary, "-R", str(indir), "-w", str(tmp)], check=True, env=nfdump_env())
    shutil.rmtree(indir)
    tmp.rename(target)
    return target, nfdump_count(binary, target)


def archive_rows(nfcapd: Path, workdir: Path, limit: int) -> pa.Table:
    """The first ``limit`` records of ``nfcapd`` as flow schema v1 (imported natively)."""
    seed = workdir / f"{nfcapd.name}.archive"
    if not seed.is_dir():
        import_sources([nfcapd], seed, jobs=1, progress=False, now_us=NOW_US)
    table = pq.read_table(seed).drop_columns(["day"])
    return table.slice(0, min(limit, table.num_rows))


def write_csv(rows: pa.Table, path: Path) -> None:
    """Plain CSV: ISO times, text addresses, numbers."""
    text = pa.table(
        {
            "time_start": rows["time_start"],
            "time_end": rows["time_end"],
            "src_addr": pa.array(format_addresses(rows["src_addr"])),
            "dst_addr": pa.array(format_addresses(rows["dst_addr"])),
            "src_port": rows["src_port"],
            "dst_port": rows["dst_port"],
            "proto": rows["proto"],
            "bytes": rows["bytes"],
            "packets": rows["packets"],
            "in_if": rows["in_if"],
            "out_if": rows["out_if"],
        }
    )
    pacsv.write_csv(text, path)


def _text_columns(rows: pa.Table) -> dict[str, list]:
    ns = {k: rows[k].cast(pa.int64()).to_numpy() * 1000 for k in ("time_start", "time_end")}
    return {
        "start_ns": ns["time_start"].tolist(),
        "end_ns": ns["time_end"].tolist(),
        "exporter": format_addresses(rows["exporter"]),
        "src": format_addresses(rows["src_addr"]),
        "dst": format_addresses(rows["dst_addr"]),
        **{
            k: rows[k].to_pylist()
            for k in rows.column_names
            if k not in ns and k not in ("exporter", "src_addr", "dst_addr")
        },
    }


#: JSON key -> column of _text_columns(), per format
GOFLOW2_KEYS = {
    "time_received_ns": "end_ns",
    "sampler_address": "exporter",
    "time_flow_start_ns": "start_ns",
    "time_flow_end_ns": "end_ns",
    "bytes": "bytes",
    "packets": "packets",
    "src_addr": "src",
    "dst_addr": "dst",
    "proto": "proto",
    "src_port": "src_port",
    "dst_port": "dst_port",
    "in_if": "in_if",
    "out_if": "out_if",
    "src_as": "src_as",
    "dst_as": "dst_as",
}
PMACCT_KEYS = {
    "peer_ip_src": "exporter",
    "iface_in": "in_if",
    "iface_out": "out_if",
    "ip_src": "src",
    "ip_dst": "dst",
    "port_src": "src_port",
    "port_dst": "dst_port",
    "ip_proto": "proto",
    "timestamp_start": "start_s",
    "timestamp_end": "end_s",
    "packets": "packets",
    "bytes": "bytes",
}


def write_json_lines(
    rows: pa.Table, path: Path, keys: dict[str, str], constants: dict[str, object]
) -> None:
    """JSON lines: ``constants`` and, for each key, the value of its column."""
    c = _text_columns(rows)
    c["start_s"] = [f"{t / 1e9:.6f}" for t in c["start_ns"]]  # pmacct: timestamps_since_epoch
    c["end_s"] = [f"{t / 1e9:.6f}" for t in c["end_ns"]]
    with open(path, "w") as fh:
        for i in range(rows.num_rows):
            record = {**constants, **{k: c[col][i] for k, col in keys.items()}}
            fh.write(json.dumps(record) + "\n")


def write_goflow2_json(rows: pa.Table, path: Path) -> None:
    """goflow2 v2 JSON lines (``-format=json``)."""
    write_json_lines(rows, path, GOFLOW2_KEYS, {"type": "IPFIX", "sampling_rate": 0})


def write_pmacct_json(rows: pa.Table, path: Path) -> None:
    """pmacct JSON lines (print plugin / Kafka, ``timestamps_since_epoch: true``)."""
    write_json_lines(rows, path, PMACCT_KEYS, {"event_type": "purge"})


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_goflow2_pb(rows: pa.Table, path: Path) -> None:
    """goflow2 v2 binary: varint-length-prefixed ``FlowMessage`` protobufs (``-format=bin``)."""
    ns = {
        k: (rows[k].cast(pa.int64()).to_numpy() * 1000).tolist() for k in ("time_start", "time_end")
    }
    addr = {k: rows[k].to_pylist() for k in ("exporter", "src_addr", "dst_addr")}
    nums = {k: rows[k].to_pylist() for k in rows.column_names if k not in ns and k not in addr}

    def packed(b: bytes) -> bytes:
        return b[12:] if b[:12] == b"\x00" * 10 + b"\xff\xff" else b

    fields_v = ((9, "bytes"), (10, "packets"), (20, "proto"), (21, "src_port"), (22, "dst_port"),
                (18, "in_if"), (19, "out_if"), (14, "src_as"), (15, "dst_as"))  # fmt: skip
    with open(path, "wb") as fh:
        for i in range(rows.num_rows):
            msg = bytearray(b"\x08\x04")  # type = IPFIX
            for number, value in ((110, ns["time_end"][i]), (111, ns["time_start"][i]),
                                  (112, ns["time_end"][i])):  # fmt: skip
                msg += _varint(number << 3) + _varint(value)
            for number, name in ((11, "exporter"), (6, "src_addr"), (7, "dst_addr")):
                b = packed(addr[name][i])
                msg += _varint(number << 3 | 2) + _varint(len(b)) + b
            for number, name in fields_v:
                value = nums[name][i]
                if value:
                    msg += _varint(number << 3) + _varint(value)
            fh.write(_varint(len(msg)) + bytes(msg))


_IPFIX_V4 = [(152, 8), (153, 8), (8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8),
             (10, 4), (14, 4), (16, 4), (17, 4)]  # fmt: skip
_IPFIX_V6 = [(27, 16) if ie == 8 else (28, 16) if ie == 12 else (ie, n) for ie, n in _IPFIX_V4]


def _ipfix_records(rows: pa.Table, v6: bool) -> np.ndarray:
    """Fixed-layout IPFIX data records (big endian) for ``rows``."""
    alen = 16 if v6 else 4
    dtype = np.dtype([("t0", ">u8"), ("t1", ">u8"), ("sa", f"S{alen}"), ("da", f"S{alen}"),
                      ("sp", ">u2"), ("dp", ">u2"), ("pr", "u1"), ("by", ">u8"), ("pk", ">u8"),
                      ("ii", ">u4"), ("oi", ">u4"), ("sas", ">u4"), ("das", ">u4")])  # fmt: skip
    rec = np.zeros(rows.num_rows, dtype)
    rec["t0"] = rows["time_start"].cast(pa.int64()).to_numpy() // 1000
    rec["t1"] = rows["time_end"].cast(pa.int64()).to_numpy() // 1000
    for name, col in (("sa", "src_addr"), ("da", "dst_addr")):
        raw = np.frombuffer(rows[col].combine_chunks().buffers()[1], np.uint8)
        raw = raw[: rows.num_rows * 16].reshape(-1, 16)
        rec[name] = raw[:, 16 - alen :].copy().view(f"S{alen}").ravel()
    for name, col in (("sp", "src_port"), ("dp", "dst_port"), ("pr", "proto"), ("by", "bytes"),
                      ("pk", "packets"), ("ii", "in_if"), ("oi", "out_if"), ("sas", "src_as"),
                      ("das", "dst_as")):  # fmt: skip
        rec[name] = rows[col].to_numpy()
    return rec


def write_ipfix_pcap(rows: pa.Table, path: Path) -> None:
    """IPFIX export packets in a pcap: a template set every 64 messages, ~1400-byte packets."""
    from flowatlas.io.pcap import UdpDatagram, write_pcap

    hi, lo = bytes16_to_hilo(rows["src_addr"])
    is4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    hi, lo = bytes16_to_hilo(rows["dst_addr"])
    is4 &= (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))

    def template(tid: int, fields: list[tuple[int, int]]) -> bytes:
        specs = b"".join(struct.pack(">HH", *f) for f in fields)
        body = struct.pack(">HH", tid, len(fields)) + specs
        return struct.pack(">HH", 2, 4 + len(body)) + body

    templates = template(256, _IPFIX_V4) + template(257, _IPFIX_V6)
    exporter = b"\x00" * 10 + b"\xff\xff" + bytes([192, 0, 2, 1])
    datagrams = []
    seq = 0
    for tid, mask in ((256, is4), (257, ~is4)):
        sub = rows.filter(pa.array(mask))
        if not sub.num_rows:
            continue
        recs = _ipfix_records(sub, tid == 257)
        per = 1380 // recs.dtype.itemsize
        export_s = int(sub["time_end"].cast(pa.int64()).to_numpy().max() // 1_000_000) + 1
        for k, start in enumerate(range(0, len(recs), per)):
            chunk = recs[start : start + per].tobytes()
            data_set = struct.pack(">HH", tid, 4 + len(chunk)) + chunk
            body = (templates if k % 64 == 0 else b"") + data_set
            msg = struct.pack(">HHIII", 10, 16 + len(body), export_s, seq, 0) + body
            seq += min(per, len(recs) - start)
            datagrams.append(UdpDatagram(export_s * 1_000_000, exporter, 4739, 4739, msg))
    write_pcap(path, datagrams)


def nfcapd_files(binary: str, records: int, files: int) -> Path:
    """A folder of ``files`` nfcapd files of about ``records`` records in all.

    Each file holds the same records (an nfcapd file of records/files records); their
    headers' creation times differ, so each has its own content and none is skipped as a
    duplicate.
    """
    folder = DATA / f"nfcapd-{records}.x{files}"
    if folder.is_dir():
        return folder
    part, _ = build_nfcapd(binary, DATA, -(-records // files))
    tmp = DATA / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    data = bytearray(part.read_bytes())
    for i in range(files):
        data[8:16] = struct.pack("<q", 1_700_000_000 + i)  # created: content differs
        (tmp / f"nfcapd.20260101{i:04d}").write_bytes(bytes(data))
    tmp.rename(folder)
    return folder


def pipeline(binary: str, records: int, files: int, results: Path | None) -> int:
    """``flowatlas import`` of nfcapd files, then ``flowatlas build`` of the archive."""
    DATA.mkdir(exist_ok=True)
    folder = nfcapd_files(binary, records, files)
    n = sum(nfdump_count(binary, f) for f in sorted(folder.iterdir()))
    archive, cube = DATA / "_pipeline_archive", DATA / "_pipeline_cube"
    shutil.rmtree(archive, ignore_errors=True)
    fa = [sys.executable, "-m", "flowatlas"]
    load_before = load_average()
    imp = run_measured([*fa, "import", str(folder), "--out", str(archive), "-q"])
    imp.check("flowatlas import")
    build = run_measured([*fa, "build", str(archive), "--out", str(cube), "-q", "--overwrite"])
    build.check("flowatlas build")
    load_after = load_average()
    shutil.rmtree(archive, ignore_errors=True)
    shutil.rmtree(cube, ignore_errors=True)
    rows = [
        [name, f"{n:,}", rate(n, m.seconds), f"{m.seconds:.1f}", f"{m.cpu_seconds:.1f}",
         mib(m.peak_rss)]
        for name, m in (("flowatlas import DIR (nfcapd, default -j)", imp),
                        ("flowatlas build ARCHIVE (the build alone)", build))
    ]  # fmt: skip
    total = imp.seconds + build.seconds
    rows.append(["import + build", f"{n:,}", rate(n, total), f"{total:.1f}",
                 f"{imp.cpu_seconds + build.cpu_seconds:.1f}", "-"])  # fmt: skip
    m = machine()
    body = "\n".join(
        [
            f"{n:,} records in {files} nfcapd files (copies of the softflowd output "
            f"`{SOURCE}`), imported with the defaults, then built with the defaults; "
            "each a child process, one run.",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}; flowatlas "
            f"{git_revision(REPO_ROOT)}. Load average {load_before} before, {load_after} after.",
            "",
            markdown_table(["step", "records", "records/s", "wall s", "CPU s", "peak RSS"], rows),
        ]
    )
    heading = "Import then build from nfcapd (bench/bench_import.py --pipeline)"
    print(f"## {heading}\n\n{body}")
    if results is not None:
        write_section(results, heading, body)
    return 0


def prepare(
    binary: str, records: int, other: int, files: int, split_records: int
) -> dict[str, object]:
    """Every input file (made once into bench/_data, then reused)."""
    DATA.mkdir(exist_ok=True)
    big, n = build_nfcapd(binary, DATA, records)
    inputs: dict[str, object] = {"nfcapd": big, "n_nfcapd": n}
    split = nfcapd_files(binary, split_records, files)
    inputs["split"] = split
    inputs["n_split"] = sum(nfdump_count(binary, f) for f in sorted(split.iterdir()))
    rows = archive_rows(big, DATA, other)
    inputs["n_other"] = rows.num_rows
    writers: dict[str, tuple[str, Callable[[pa.Table, Path], None]]] = {
        "csv": ("flows.csv", write_csv),
        "goflow2-json": ("goflow2.json", write_goflow2_json),
        "goflow2-pb": ("goflow2.bin", write_goflow2_pb),
        "pmacct-json": ("pmacct.json", write_pmacct_json),
        "netflow-pcap": ("ipfix.pcap", write_ipfix_pcap),
    }
    warm = rows.slice(0, min(WARM_RECORDS, rows.num_rows))
    for fmt, (name, writer) in writers.items():
        for key, part in ((fmt, rows), (f"warm {fmt}", warm)):
            path = DATA / f"{part.num_rows}.{name}"
            if not path.exists():
                tmp = path.with_name("." + path.name + ".tmp")
                writer(part, tmp)
                tmp.rename(path)
            inputs[key] = path
    return inputs


# --------------------------------------------------------------------------- cases


def py_case(code: str) -> list[str]:
    return [sys.executable, "-c", code]


#: the native reader alone; it also times itself after start-up (a first read of a small
#: file loads numba's compiled kernel) and prints that as ``inner WALL CPU``
NATIVE_READER = (
    "import time\n"
    "from flowatlas.io.nfcapd import NfcapdReader\n"
    "def read(path):\n"
    "    return sum(b.records_read for b in NfcapdReader(path, now_us={now}).batches())\n"
    "read({warm!r})\n"
    "w, c = time.perf_counter(), time.process_time()\n"
    "n = read({path!r})\n"
    "print('inner', time.perf_counter() - w, time.process_time() - c)\n"
)
#: the same work in-process after a first run on a small file of the same format (start-up,
#: imports and numba's kernel loading excluded): prints ``inner WALL CPU``
IN_PROCESS = (
    "import shutil, time\n"
    "{setup}\n"
    "def run(path, out):\n"
    "    {work}\n"
    "run({warm!r}, {out!r} + '.warm')\n"
    "w, c = time.perf_counter(), time.process_time()\n"
    "run({path!r}, {out!r})\n"
    "print('inner', time.perf_counter() - w, time.process_time() - c)\n"
    "shutil.rmtree({out!r} + '.warm', ignore_errors=True)\n"
)
IMPORT_WORK = (
    "from flowatlas.io.commands import import_sources",
    "import_sources([path], out, fmt={fmt!r}, jobs=1, progress=False, now_us={now})",
)
CSV_WORK = ("import pyarrow.csv as pacsv", "pacsv.read_csv(path)")
PCAP_WORK = (
    "from flowatlas.io.netflow import NetflowDecoder\n"
    "from flowatlas.io.pcap import CaptureStats, iter_datagrams",
    "d = NetflowDecoder(path)\n"
    "    for k, g in iter_datagrams(path, CaptureStats()):\n"
    "        d.feed(g.payload, g.src_ip, k)\n"
    "        if d.pending_rows >= 1 << 20:\n"
    "            d.take()\n"
    "    d.finish()\n"
    "    d.take()",
)
#: an importer's read() alone: reading and checking every record, no Parquet, no manifest
READ_WORK = (
    "from pathlib import Path\nfrom flowatlas.io.importers.base import ImportOptions, get_importer",
    "opts = ImportOptions(extra=(('now_us', {now}),))\n"
    "    sum(b.records_read for b in get_importer({fmt!r})().read(Path(path), opts))",
)
#: formats whose import and reference also run in-process, start-up excluded: the targets
#: of issue 16 are rates per core of the work itself
JSON_WORK = ("import pyarrow.json as pajson", "pajson.read_json(path)")
#: the compiled protobuf walk alone: every message into typed columns, no checks, no Parquet
PB_WALK_WORK = (
    "from pathlib import Path\nfrom flowatlas.io.importers.goflow2 import open_binary, "
    "pb_chunks_compiled, _pb_columns",
    "with open_binary(Path(path)) as fh:\n"
    "        for n, r, _ in pb_chunks_compiled(fh, Path(path)):\n"
    "            _pb_columns(r) if n else None",
)
#: format: (its in-process reference, that reference's work)
IN_PROCESS_FORMATS = {
    "csv": ("pyarrow.csv.read_csv(FILE)", CSV_WORK),
    "netflow-pcap": ("decoding alone (IPFIX capture)", PCAP_WORK),
    "goflow2-json": ("pyarrow.json.read_json(FILE)", JSON_WORK),
    "goflow2-pb": ("compiled wire-format walk alone, to columns", PB_WALK_WORK),
    "pmacct-json": ("pyarrow.json.read_json(FILE)", JSON_WORK),
}


def in_process(work: tuple[str, str], path: str, warm: str, out: str, **fmt: object) -> list[str]:
    """A python -c case: ``work`` (set-up code, code run on ``path`` and ``out``) timed after
    a first run on ``warm``."""
    setup, body = (w.format(**fmt) for w in work)
    return py_case(IN_PROCESS.format(setup=setup, work=body, path=path, warm=warm, out=out))


#: the row of the native reader's own timing (its case prints ``inner`` too)
INNER = "nfcapd: native reader alone, start-up excluded (in-process)"
PCAP_DECODER = (
    "from flowatlas.io.netflow import NetflowDecoder\n"
    "from flowatlas.io.pcap import CaptureStats, iter_datagrams\n"
    "d = NetflowDecoder({path!r})\n"
    "n = 0\n"
    "for k, g in iter_datagrams({path!r}, CaptureStats()):\n"
    "    d.feed(g.payload, g.src_ip, k)\n"
    "    if d.pending_rows >= 1 << 20:\n"
    "        n += d.take().records_read\n"
    "d.finish()\n"
    "n += d.take().records_read\n"
)
PB_DECODER = (
    "from flowatlas.io.importers.goflow2 import decode_flow_message, iter_delimited\n"
    "with open({path!r}, 'rb') as fh:\n"
    "    n = sum(1 for _, m, _ in iter_delimited(fh) if m is not None and decode_flow_message(m))\n"
)


def cases(inputs: dict[str, object], binary: str, out: Path, skip_slow: bool) -> list[tuple]:
    """(group, name, argv, records) for every case, reference first in each group.

    A case whose name ends in ``(in-process, start-up excluded)`` reports what its child
    printed as ``inner WALL CPU``, not the child's own time.
    """
    fa = [sys.executable, "-m", "flowatlas", "import"]
    big, split = str(inputs["nfcapd"]), str(inputs["split"])
    n, n_split, n_other = inputs["n_nfcapd"], inputs["n_split"], inputs["n_other"]

    def imp(path: object, *extra: str) -> list[str]:
        return [*fa, str(path), "--out", str(out), "-q", *extra]

    rows = [
        ("-", "python start-up (import flowatlas.io.commands)",
         py_case("import flowatlas.io.commands, flowatlas.io.importers"), 0),
        ("nfcapd", "nfcapd: nfdump -r FILE -q -s srcip -n 5 (binary read, reference)",
         ["sh", "-c", f"{binary} -r {big} -q -s srcip -n 5 > /dev/null"], n),
        ("nfcapd", "nfcapd: native reader alone (python -c, to Arrow)",
         py_case(NATIVE_READER.format(path=big, now=NOW_US, warm=str(inputs["warm"]))), n),
        ("nfcapd", "nfcapd: flowatlas import FILE -j 1 (to Parquet)", imp(big, "-j", "1"), n),
    ]  # fmt: skip
    if not skip_slow:
        rows.append(
            ("nfcapd", "nfcapd: flowatlas import FILE -j 1 --reader nfdump (text path)",
             imp(big, "-j", "1", "--reader", "nfdump"), n)
        )  # fmt: skip
    for jobs in ("1", "2"):
        name = f"nfcapd files: flowatlas import DIR -j {jobs} ({Path(split).name})"
        rows.append(("nfcapd files", name, imp(split, "-j", jobs), n_split))
    read_json = "import pyarrow.json as j; j.read_json({path!r})"
    references = {  # format: (reference case, its python code)
        "csv": ("python -c pyarrow.csv.read_csv(FILE)",
                "import pyarrow.csv as c; c.read_csv({path!r})"),
        "netflow-pcap": ("decoding alone (IPFIX capture, python -c)", PCAP_DECODER),
        "goflow2-json": ("python -c pyarrow.json.read_json(FILE)", read_json),
        "goflow2-pb": ("Python wire-format decoder alone (the old path, python -c)",
                       PB_DECODER),
        "pmacct-json": ("python -c pyarrow.json.read_json(FILE)", read_json),
    }  # fmt: skip
    for fmt, (ref_name, code) in references.items():
        path = str(inputs[fmt])
        rows.append((fmt, f"{fmt}: {ref_name}", py_case(code.format(path=path)), n_other))
        how = "--format csv " if fmt == "csv" else ""
        name = f"{fmt}: flowatlas import FILE {how}-j 1 (to Parquet)"
        rows.append((fmt, name, imp(path, "--format", fmt, "-j", "1"), n_other))
        if fmt in IN_PROCESS_FORMATS:
            warm = str(inputs[f"warm {fmt}"])
            ref_name, ref_work = IN_PROCESS_FORMATS[fmt]
            ref = in_process(ref_work, path, warm, str(out))
            work = in_process(IMPORT_WORK, path, warm, str(out), fmt=fmt, now=NOW_US)
            rows.append((fmt, f"{fmt}: {ref_name}{IN_PROCESS_SUFFIX}", ref, n_other))
            if fmt == "csv":  # the importer's own reading, next to pyarrow's
                read = in_process(READ_WORK, path, warm, str(out), fmt=fmt, now=NOW_US)
                rows.append((fmt, f"{fmt}: importer read() alone, reading and checks"
                             f"{IN_PROCESS_SUFFIX}", read, n_other))  # fmt: skip
            rows.append((fmt, f"{fmt}: import_sources(FILE), to Parquet{IN_PROCESS_SUFFIX}",
                         work, n_other))  # fmt: skip
    return rows


IN_PROCESS_SUFFIX = " (in-process, start-up excluded)"


def scaling_line(runs: dict[str, list[Measurement]], inputs: dict, files: int) -> str:
    """How ``-j 2`` compares with ``-j 1`` on the multi-file import."""
    name = Path(str(inputs["split"])).name
    one, two = (runs[f"nfcapd files: flowatlas import DIR -j {j} ({name})"] for j in (1, 2))
    w1, w2 = (statistics.median(m.seconds for m in ms) for ms in (one, two))
    c1, c2 = (statistics.median(m.cpu_seconds for m in ms) for ms in (one, two))
    n = int(inputs["n_split"])
    return (
        f"-j scaling, {n:,} records in {files} nfcapd files: -j 2 takes {w2:.2f} s against "
        f"{w1:.2f} s with -j 1 (speed-up {w1 / w2:.2f}x; CPU {c2:.2f} s against {c1:.2f} s: "
        f"the second process's start-up and the shared cores cost {c2 - c1:+.2f} CPU-s). "
        "With -j 2 this process imports files next to one worker process. With other work "
        "on the machine (see the load average), two processes do not get two cores to "
        "themselves."
    )


def inner_row(name: str, n: int, ms: list[Measurement]) -> list[str]:
    """The table row of what the runs of an in-process case printed (``inner WALL CPU``)."""
    inner = [line.split()[1:] for m in ms for line in m.stdout.splitlines()
             if line.startswith("inner ")]  # fmt: skip
    wall = statistics.median(float(w) for w, _ in inner)
    cpu = statistics.median(float(c) for _, c in inner)
    return [name, f"{n:,}", rate(n, wall), rate(n, cpu), f"{wall:.2f}", f"{cpu:.2f}", "-"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=4_000_000, help="nfcapd records [4,000,000]")
    ap.add_argument(
        "--other-records", type=int, default=1_000_000, help="records of the other formats"
    )
    ap.add_argument("--files", type=int, default=4, help="files for the -j scaling case [4]")
    ap.add_argument(
        "--split-records",
        type=int,
        help="records of the -j scaling case, in --files files [six times --records]",
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-slow", action="store_true", help="leave out --reader nfdump")
    ap.add_argument("--results", type=Path, default=None, help=f"results file [{RESULTS}]")
    ap.add_argument("--no-results", action="store_true", help="print only")
    ap.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--pipeline",
        type=int,
        metavar="N",
        help="instead: import N records of nfcapd files (--files of them), then build",
    )
    args = ap.parse_args(argv)

    split_records = args.split_records or 6 * args.records
    binary = nfdump_binary()
    nf_version = ".".join(map(str, nfdump_version(binary)))
    if args.pipeline:
        target = None if args.no_results else (args.results or RESULTS)
        return pipeline(binary, args.pipeline, args.files, target)
    if args.prepare_only:  # in a child: the tables it loads stay out of the parent's memory
        inputs = prepare(binary, args.records, args.other_records, args.files, split_records)
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in inputs.items()}))
        return 0
    child = [sys.executable, __file__, "--prepare-only", "--records", str(args.records)]
    child += ["--other-records", str(args.other_records), "--files", str(args.files)]
    child += ["--split-records", str(split_records)]
    prepared = subprocess.run(child, capture_output=True, text=True, check=False)
    if prepared.returncode != 0:
        raise SystemExit(f"bench_import: preparing the inputs failed:\n{prepared.stderr}")
    inputs = json.loads(prepared.stdout.strip().splitlines()[-1])
    inputs["warm"] = shared_data_dir() / SOURCES / "EAQ.pcap/nfcapd.202611250000"
    out = DATA / "_out"
    todo = cases(inputs, binary, out, args.skip_slow)
    runs: dict[str, list[Measurement]] = {name: [] for _, name, _, _ in todo}
    load_before = load_average()
    for _ in range(args.repeat):
        for _group, name, cmd, _n in todo:
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append(run_measured(cmd, env=nfdump_env()).check(name))
    shutil.rmtree(out, ignore_errors=True)
    load_after = load_average()

    table_rows = []
    for _group, name, _cmd, n in todo:
        ms = runs[name]
        if name.endswith(IN_PROCESS_SUFFIX):
            table_rows.append(inner_row(name, n, ms))
            continue
        wall = statistics.median(m.seconds for m in ms)
        cpu = statistics.median(m.cpu_seconds for m in ms)
        peak = statistics.median(m.peak_rss for m in ms)
        table_rows.append(
            [
                name,
                f"{n:,}" if n else "-",
                rate(n, wall) if n else "-",
                rate(n, cpu) if n else "-",
                f"{wall:.2f}",
                f"{cpu:.2f}",
                mib(peak),
            ]
        )
        if name.startswith("nfcapd: native reader alone"):
            table_rows.append(inner_row(INNER, n, ms))
    m = machine()
    v = versions("pyarrow", "numpy", "numba")
    body = "\n".join(
        [
            f"nfcapd: {inputs['n_nfcapd']:,} records in one file (copies of the softflowd "
            f"output `{SOURCE}` merged with `nfdump -R`), and {inputs['n_split']:,} in "
            f"{args.files} files (the -j scaling case); the other formats: the first "
            f"{inputs['n_other']:,} of those records written in each format. Median of "
            f"{args.repeat} interleaved runs, each a child process.",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, "
            f"Python {m['python']}; nfdump {nf_version}, pyarrow {v['pyarrow']}, "
            f"numpy {v['numpy']}, numba {v['numba']}; flowatlas {git_revision(REPO_ROOT)}. "
            f"Load average {load_before} before, {load_after} after (other work on the "
            "machine slows every case alike; compare rows, not runs).",
            "",
            markdown_table(
                ["case", "records", "records/s", "records/CPU-s", "wall s", "CPU s", "peak RSS"],
                table_rows,
            ),
            "",
            "records/s = records / median wall time, start-up included; records/CPU-s = "
            "records / CPU time of the process tree (nfdump and workers included), the "
            "per-core rate, which moves less when other work shares the cores. Peak RSS: the "
            "process tree's resident memory, polled every 10 ms. Rows marked in-process time "
            f"the work alone, in a process that first did the same on {WARM_RECORDS:,} "
            "records (Python's start-up, imports and numba's kernel loading excluded).",
            "",
            scaling_line(runs, inputs, args.files),
        ]
    )
    print(f"## {HEADING}\n\n{body}")
    if not args.no_results:
        write_section(args.results or RESULTS, HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
