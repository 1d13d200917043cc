"""Damaged nfcapd files: what cannot be read is quarantined with a reason, never dropped.

Corrupt blocks, truncated files, impossible records, block headers that are garbage, unknown
record types and extension elements; then a bounded fuzz of real files (bit flips,
truncations, block-header corruption) that asserts no crash, no hang, and every record
accounted for. Oracles: nfdump's reading of the undamaged parts (files cut at a block
boundary, which nfdump reads), parsed by tests/nfcapd_oracle.py.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from nfcapd_oracle import (
    HEADER,
    blocks,
    expected,
    nfdump_lines,
    parse_line,
    recompress,
    table_rows,
)
from test_nfcapd import NOW_US, read_native

from flowatlas.errors import InputError
from flowatlas.io.commands import import_sources
from flowatlas.testing import need_data, need_tools

DOMINATE = "flow_exports/generated_nfcapd/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng/nfcapd.202611250000"
EAQ = "flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000"


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> dict[str, Path]:
    """A 4-block file (4 copies of a real one merged by nfdump) in each compression."""
    need_tools("nfdump")
    src = need_data(DOMINATE) / DOMINATE
    root = tmp_path_factory.mktemp("multi")
    copies = root / "copies"
    copies.mkdir()
    for i in range(4):
        (copies / f"nfcapd.20260101000{i}").write_bytes(src.read_bytes())
    out = {}
    for name, flags in (("none", []), ("lz4", ["-y"]), ("lzo", ["-z"]), ("bz2", ["-j"])):
        out[name] = root / f"multi.{name}"
        subprocess.run(["nfdump", "-R", str(copies), *flags, "-w", str(out[name])], check=True)
    out["zstd"] = root / "multi.zstd"
    recompress(out["none"], out["zstd"], 4)
    assert len(blocks(out["none"].read_bytes())) == 4
    return out


def keep_blocks(src: Path, dst: Path, keep: list[int]) -> None:
    """A copy of ``src`` with only the data blocks numbered in ``keep`` (1-based), no appendix.

    nfdump reads such a file, so it is the oracle for what survives a damaged block.
    """
    data = src.read_bytes()
    h = list(HEADER.unpack_from(data, 0))
    body = b"".join(
        data[off : off + 12 + size]
        for i, (off, _n, size, _t, _f) in enumerate(blocks(data), start=1)
        if i in keep
    )
    h[10], h[6], h[8] = len(keep), 0, 0
    dst.write_bytes(HEADER.pack(*h) + body)


def reasons(quarantine) -> Counter:
    return Counter(quarantine.column("reason").to_pylist())


def test_a_corrupt_block_is_quarantined_with_its_record_count(multi, tmp_path):
    data = bytearray(multi["lz4"].read_bytes())
    off, nrec, size, _t, _f = blocks(bytes(data))[1]
    data[off + 12 : off + 12 + size] = bytes(size)  # not an LZ4 stream any more
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    table, quarantine, _ = read_native(bad)
    assert reasons(quarantine) == {"nfcapd_corrupt_block": nrec}
    positions = quarantine.column("position").to_pylist()
    assert positions[0] == "block 2 record 1" and positions[-1] == f"block 2 record {nrec}"
    assert "lz4" in quarantine.column("detail")[0].as_py()
    survivors = tmp_path / "survivors"
    keep_blocks(multi["none"], survivors, [1, 3, 4])
    rows, _ = expected(survivors, NOW_US)
    assert table_rows(table) == rows
    # the import summary and the manifest say it: read = written + quarantined
    summary = import_sources([bad], tmp_path / "archive", progress=False, now_us=NOW_US)
    assert summary.reasons == {"nfcapd_corrupt_block": nrec}
    assert summary.records_read == summary.records_written + nrec == len(rows) + nrec
    entry = json.loads((tmp_path / "archive/_import/manifest.json").read_text())["files"][0]
    assert entry["quarantine_reasons"] == {"nfcapd_corrupt_block": nrec}
    assert entry["records_read"] == entry["records_written"] + entry["records_quarantined"]


@pytest.mark.parametrize("comp", ["none", "lzo", "bz2", "zstd"])
def test_a_corrupt_block_in_each_compression(multi, tmp_path, comp):
    data = bytearray(multi[comp].read_bytes())
    off, nrec, size, _t, _f = blocks(bytes(data))[2]
    if comp == "none":  # the first record's size: below a record header's
        struct.pack_into("<H", data, off + 12 + 2, 2)
    else:
        data[off + 12 : off + 12 + size] = bytes(size)
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    table, quarantine, _ = read_native(bad)
    assert reasons(quarantine) == {"nfcapd_corrupt_block": nrec}
    survivors = tmp_path / "survivors"
    keep_blocks(multi["none"], survivors, [1, 2, 4])
    assert table.num_rows == len(expected(survivors, NOW_US)[0])


def test_a_truncated_file(multi, tmp_path):
    data = multi["none"].read_bytes()
    off, nrec, _size, _t, _f = blocks(data)[2]
    cut = tmp_path / "cut"
    cut.write_bytes(data[: off + 5000])  # into block 3; block 4 and the appendix are gone
    table, quarantine, reader = read_native(cut)
    assert reasons(quarantine) == {"nfcapd_truncated": nrec + 1}
    details = quarantine.column("detail").to_pylist()
    assert details[0].startswith("the file ends")
    assert "record count unknown" in details[-1]
    assert quarantine.column("position").to_pylist()[-1] == "block 4"
    survivors = tmp_path / "survivors"
    keep_blocks(multi["none"], survivors, [1, 2])
    assert table_rows(table) == expected(survivors, NOW_US)[0]
    assert any("truncated" in note for note in reader.stats.notes)
    # cut inside a block header
    cut.write_bytes(data[: off + 6])
    table, quarantine, _ = read_native(cut)
    assert reasons(quarantine) == {"nfcapd_truncated": 2}  # blocks 3 and 4, counts unknown


def test_a_garbage_block_header_is_counted_from_the_stat_record(multi, tmp_path):
    data = bytearray(multi["none"].read_bytes())
    off = blocks(bytes(data))[1][0]
    struct.pack_into("<I", data, off + 4, 0xFFFFFFF0)  # block 2's size: impossible
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    table, quarantine, reader = read_native(bad)
    total = len(nfdump_lines(multi["none"]))
    assert reader.stats.stat is not None and reader.stats.stat[0] == total
    assert reasons(quarantine) == {"nfcapd_corrupt_block": total - table.num_rows}
    assert "per the file's stat record" in quarantine.column("detail")[0].as_py()
    survivors = tmp_path / "survivors"
    keep_blocks(multi["none"], survivors, [1])
    assert table.num_rows == len(expected(survivors, NOW_US)[0])


def element(data: bytes, record: int, etype: int) -> int:
    """The offset of the first element of type ``etype`` in the V3 record at ``record``."""
    p = record + 12
    for _ in range(struct.unpack_from("<H", data, record + 4)[0]):
        et, el = struct.unpack_from("<HH", data, p)
        if et == etype:
            return p
        p += el
    raise AssertionError(f"no element {etype} in the record at {record}")


def test_impossible_records_and_unknown_types(tmp_path, capsys):
    need_tools("nfdump")
    src = need_data(EAQ) / EAQ
    data = bytearray(src.read_bytes())
    block = blocks(bytes(data))[0]
    pos = block[0] + 12
    seen = []
    for _ in range(block[1]):
        rtype, rsize = struct.unpack_from("<HH", data, pos)
        seen.append((pos, rtype, rsize))
        pos += rsize
    v3 = [p for p, t, _ in seen if t == 11]
    exporter = [p for p, t, _ in seen if t == 7]
    # 1st flow: its generic flow element 4 bytes shorter than its fields
    generic = element(data, v3[0], 1)
    assert struct.unpack_from("<H", data, generic + 2)[0] == 52
    struct.pack_into("<H", data, generic + 2, 48)
    struct.pack_into("<HH", data, generic + 48, 0, 4)  # the sizes still add up
    # 2nd flow: an element nobody defines (its flow-misc element, which holds no data here)
    struct.pack_into("<H", data, element(data, v3[1], 4), 200)
    # the exporter record: a record type nobody defines
    struct.pack_into("<H", data, exporter[0], 99)
    bad = tmp_path / "nfcapd.202611250000"
    bad.write_bytes(bytes(data))
    table, quarantine, reader = read_native(bad)
    assert reasons(quarantine) == {"nfcapd_bad_record": 1, "nfcapd_unknown_record": 1}
    got = dict(
        zip(
            quarantine.column("reason").to_pylist(),
            quarantine.column("detail").to_pylist(),
            strict=True,
        )
    )
    assert got["nfcapd_bad_record"] == "element shorter than its fields: element 1 (EXgenericFlow)"
    assert got["nfcapd_unknown_record"] == "record type 99 (unknown)"
    assert reader.stats.unknown == {"extension 200": 1, "record type 99": 1}
    lines = nfdump_lines(src)
    assert table_rows(table) == sorted(parse_line(ln) for ln in lines[1:])
    # through the importer: the unknown names are reported on stderr, one line
    summary = import_sources([bad], tmp_path / "a", progress=False, now_us=NOW_US)
    err = capsys.readouterr().err
    assert "not understood, skipped by their length: extension 200 x 1, record type 99 x 1" in err
    assert summary.records_read == len(lines) + 1  # 41 flows and the unknown record


# --------------------------------------------------------------------------- fuzz


def _mutate(data: bytes, rng: random.Random, kind: str) -> bytes:
    out = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(HEADER.size, len(out))
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        out = out[: rng.randrange(HEADER.size, len(out))]
    elif kind == "block_header":
        offs = [b[0] for b in blocks(data)]
        off = rng.choice(offs) + rng.choice((0, 4, 8, 10))
        value = rng.choice((0, 1, 0xFFFF, 0xFFFFFFFF, rng.getrandbits(32), rng.getrandbits(16)))
        struct.pack_into("<I", out, off, value & 0xFFFFFFFF)
    elif kind == "header":
        i = rng.randrange(4, HEADER.size)
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _fuzz(sources: dict[str, Path], tmp_path: Path, rounds: int, seed: int) -> Counter:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    f = tmp_path / "fuzzed"
    originals = {name: p.read_bytes() for name, p in sources.items()}
    announced = {name: sum(b[1] for b in blocks(d)) for name, d in originals.items()}
    for i in range(rounds):
        name = rng.choice(sorted(originals))
        kind = rng.choice(("flip", "flip", "truncate", "block_header", "header"))
        f.write_bytes(_mutate(originals[name], rng, kind))
        t0 = time.perf_counter()
        try:
            table, quarantine, reader = read_native(f)
        except InputError as exc:  # only a file header that is no header may refuse
            assert kind == "header", (i, name, kind, exc)
            outcomes["refused"] += 1
            continue
        finally:
            assert time.perf_counter() - t0 < 20, (i, name, kind)
        read = table.num_rows + quarantine.num_rows
        if kind == "flip" and _headers_intact(originals[name], f.read_bytes()):
            # every record a block announces is a row, a non-flow record, or quarantined
            assert read + reader.stats.non_flow_records == announced[name], (i, name)
        outcomes[kind] += 1
    return outcomes


def _headers_intact(original: bytes, mutated: bytes) -> bool:
    """File header, block headers and appendix as they were (only block payloads differ)."""
    if original[: HEADER.size] != mutated[: HEADER.size]:
        return False
    appendix = HEADER.unpack_from(original, 0)[8]
    if original[appendix:] != mutated[appendix:]:
        return False
    return all(original[o : o + 12] == mutated[o : o + 12] for o, *_ in blocks(original))


def test_fuzz_bounded(multi, tmp_path):
    """A few hundred mutations of real files in every compression: no crash, no hang."""
    sources = {name: multi[name] for name in ("none", "lz4", "lzo", "bz2", "zstd")}
    outcomes = _fuzz(sources, tmp_path, rounds=300, seed=16)
    assert sum(outcomes.values()) == 300 and outcomes["flip"] > 50


@pytest.mark.slow
def test_fuzz_long(multi, tmp_path):
    sources = {name: multi[name] for name in ("none", "lz4", "lzo", "bz2", "zstd")}
    outcomes = _fuzz(sources, tmp_path, rounds=5000, seed=1616)
    assert sum(outcomes.values()) == 5000


def test_wrong_block_count_or_appendix_offset_in_the_header(multi, tmp_path, capsys):
    """The blocks are read from the header to the appendix, whatever the header counts."""
    rows, _ = expected(multi["none"], NOW_US)
    data = bytearray(multi["none"].read_bytes())
    for field, value, note in (
        (10, 2, "the header announces 2 data blocks; the file holds 4"),
        (10, 9, "the header announces 9 data blocks; the file holds 4"),
        (8, blocks(bytes(data))[1][0] + 100, "no appendix at byte"),
    ):
        h = list(HEADER.unpack_from(data, 0))
        h[field] = value
        bad = tmp_path / f"bad{field}-{value}"
        bad.write_bytes(HEADER.pack(*h) + bytes(data[HEADER.size :]))
        table, quarantine, reader = read_native(bad)
        assert table_rows(table) == rows and quarantine.num_rows == 0
        assert any(n.startswith(note) for n in reader.stats.notes), reader.stats.notes
        assert not reader.stats.unknown
