"""The native nfcapd reader equals nfdump, field for field, on every nfcapd file we have.

The oracle is nfdump itself: its ``fmt`` output, parsed strictly by tests/nfcapd_oracle.py
(not by the code under test). Files: every nfcapd file in the shared data (found by their
magic number, wherever they are), and copies rewritten by nfdump's ``-w`` in each compression
the installed nfdump writes (none, LZO ``-z``, LZ4 ``-y``, BZ2 ``-j``), plus ZSTD, which
nfdump 1.7.1 cannot write: the uncompressed copy's blocks are recompressed with zstandard as
later nfdump releases do; and files nfdump aggregates, pairs into bidirectional flows or
anonymises (nfanon). Also: the archive of ``flowatlas import`` with the native reader equals the
one with ``--reader nfdump``, and a file the native reader refuses goes through nfdump.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nfcapd_oracle import COLUMNS, HEADER, expected, recompress, table_rows

from flowatlas.errors import InputError
from flowatlas.io.commands import import_sources
from flowatlas.io.importers.base import ImportOptions, get_importer
from flowatlas.io.nfcapd import NfcapdReader, NfcapdUnsupported
from flowatlas.testing import need_data, need_tools, shared_data_dir

NOW_US = 1_790_000_000 * 1_000_000
#: nfdump's -w flags for each compression code it writes (nfdump 1.7.1: no ZSTD)
NFDUMP_FLAGS = {0: [], 1: ["-z"], 3: ["-y"], 2: ["-j"]}
ZSTD = 4


def shared_nfcapd_files() -> list[Path]:
    """Every nfcapd file in the shared data, by content (magic 0xA50C, layout 1 or 2)."""
    root = need_data("flow_exports")
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as fh:
                head = fh.read(4)
            if head[:2] == b"\x0c\xa5" and head[2:4] in (b"\x01\x00", b"\x02\x00"):
                found.append(path)
    return found


def read_native(path: Path, **kwargs) -> tuple[pa.Table, pa.Table, NfcapdReader]:
    reader = NfcapdReader(path, now_us=NOW_US, **kwargs)
    batches = list(reader.batches())
    for b in batches:
        assert b.records_read == b.table.num_rows + b.quarantine.num_rows
    if not batches:
        from flowatlas.io.importers.base import empty_quarantine
        from flowatlas.schema import empty_table

        return empty_table(), empty_quarantine(), reader
    table = pa.concat_tables([b.table for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    return table, quarantine, reader


def assert_matches_nfdump(path: Path, oracle_path: Path | None = None) -> int:
    """The native reading of ``path`` equals nfdump's reading of ``oracle_path`` (or itself)."""
    rows, reasons = expected(oracle_path or path, NOW_US)
    table, quarantine, reader = read_native(path)
    assert table.schema.equals(pa.schema(table.schema)), path
    got = table_rows(table)
    assert len(got) == len(rows), (path, len(got), len(rows))
    for want_row, got_row in zip(rows, got, strict=True):
        diff = {c: (w, g) for c, w, g in zip(COLUMNS, want_row, got_row, strict=True) if w != g}
        assert got_row == want_row, (path, diff)
    assert Counter(quarantine.column("reason").to_pylist()) == reasons, path
    assert not reader.stats.unknown, (path, reader.stats.unknown)
    return len(rows) + sum(reasons.values())


@pytest.fixture(scope="module")
def shared_files() -> list[Path]:
    need_tools("nfdump")
    files = shared_nfcapd_files()
    assert len(files) >= 41  # 33 softflowd captures, 8 pmacct NetFlow v9/IPFIX replays
    return files


@pytest.mark.tools
@pytest.mark.shared_data
def test_every_shared_nfcapd_file_equals_nfdump(shared_files):
    total = sum(assert_matches_nfdump(f) for f in shared_files)
    assert total > 30_000


@pytest.fixture(scope="module")
def copies(shared_files, tmp_path_factory) -> dict[int, list[tuple[Path, Path]]]:
    """(copy, original) pairs for each compression code, written at test time."""
    out: dict[int, list[tuple[Path, Path]]] = {c: [] for c in (*NFDUMP_FLAGS, ZSTD)}
    root = tmp_path_factory.mktemp("nfcapd-copies")
    for i, src in enumerate(shared_files):
        for comp, flags in NFDUMP_FLAGS.items():
            dst = root / f"{i}.{comp}"
            subprocess.run(["nfdump", "-r", str(src), *flags, "-w", str(dst)], check=True)
            out[comp].append((dst, src))
        zst = root / f"{i}.{ZSTD}"
        recompress(root / f"{i}.0", zst, ZSTD)
        out[ZSTD].append((zst, src))
    return out


@pytest.mark.tools
@pytest.mark.shared_data
@pytest.mark.parametrize("comp", [0, 1, 2, 3, ZSTD], ids=["none", "lzo", "bz2", "lz4", "zstd"])
def test_every_compression_equals_nfdump(copies, comp):
    for copy, original in copies[comp]:
        assert HEADER.unpack_from(copy.read_bytes(), 0)[4] == comp, copy  # really compressed
        assert_matches_nfdump(copy, original)


@pytest.mark.tools
@pytest.mark.shared_data
def test_archive_from_native_reader_equals_archive_through_nfdump(shared_files, tmp_path):
    """``flowatlas import`` both ways: the same Parquet rows, the same manifest counts."""
    src = tmp_path / "src"
    src.mkdir()
    for i, f in enumerate(shared_files):
        shutil.copy(f, src / f"nfcapd.2026010100{i:02d}")
    archives = {}
    for reader in ("native", "nfdump"):
        out = tmp_path / reader
        summary = import_sources(
            [src], out, fmt="nfcapd", reader=reader, progress=False, now_us=NOW_US, jobs=1
        )
        assert not summary.failed, summary.failed
        table = pq.read_table(out, schema=None).drop_columns(["day"])
        manifest = json.loads((out / "_import/manifest.json").read_text())
        counts = {
            Path(e["path"]).name: (
                e["records_read"],
                e["records_written"],
                e["records_quarantined"],
                e["quarantine_reasons"],
            )
            for e in manifest["files"]
        }
        archives[reader] = (table, counts)
    native, through = archives["native"], archives["nfdump"]
    assert native[1] == through[1]
    assert native[0].num_rows == through[0].num_rows > 30_000
    order = [(c, "ascending") for c in COLUMNS]
    a = native[0].select(list(COLUMNS)).sort_by(order)
    b = through[0].select(list(COLUMNS)).sort_by(order)
    for name in COLUMNS:
        assert a.column(name).equals(b.column(name)), name


def test_a_block_flagged_uncompressed_in_a_compressed_file(tmp_path):
    """Bit 0 of a block's flags: stored as it is whatever the file's compression says."""
    need_tools("nfdump")
    src = need_data("flow_exports") / (
        "flow_exports/generated_nfcapd/amp.UDP.isakmp.pcap/nfcapd.202611250000"
    )
    plain = tmp_path / "plain"
    subprocess.run(["nfdump", "-r", str(src), "-w", str(plain)], check=True)
    data = bytearray(plain.read_bytes())
    off = HEADER.size
    nrec, size, btype, flags = struct.unpack_from("<IIHH", data, off)
    struct.pack_into("<IIHH", data, off, nrec, size, btype, flags | 1)
    data[16] = 3  # the file says LZ4; the block says: not compressed
    appendix_off = HEADER.unpack_from(data, 0)[8]
    data = data[:appendix_off]  # the appendix would be LZ4 too: drop it
    struct.pack_into("<H", data, 18, 0)  # no appendix blocks
    mixed = tmp_path / "mixed"
    mixed.write_bytes(bytes(data))
    assert_matches_nfdump(mixed, src)


# --------------------------------------------------------------------------- fallback


def layout_1_file(path: Path) -> None:
    """A file in nfdump 1.6's layout (LAYOUT_VERSION_1) with two flow records.

    No nfdump 1.6 is installed here, so the file is built from the layout (file header,
    stat record, one type 2 block: an extension map and two CommonRecords); nfdump 1.7.1
    reads it, which is what the fallback needs.
    """
    ext = struct.pack("<HHHHHH", 2, 12, 0, 0, 0, 0)

    def common(
        first: int, msec: int, sa: int, da: int, sp: int, dp: int, pr: int, pk: int, by: int
    ):
        body = struct.pack("<IIII", sa, da, pk, by)
        head = struct.pack(
            "<HHHHHHIIBBBBHHHH", 10, 32 + len(body), 0, 0, msec, msec, first, first + 1,
            0, 0x10, pr, 0, sp, dp, 0, 0,
        )  # fmt: skip
        return head + body

    records = [
        ext,
        common(1_700_000_000, 123, 0xC0000201, 0xC6336409, 443, 51000, 6, 10, 9000),
        common(1_700_000_060, 7, 0x0A000001, 0x0A000002, 53, 5353, 17, 1, 80),
    ]
    payload = b"".join(records)
    block = struct.pack("<IIHH", len(records), len(payload), 2, 0) + payload
    header = struct.pack("<HHII", 0xA50C, 1, 0, 1) + b"flowatlas test".ljust(128, b"\0")
    stat = struct.pack("<15Q", 2, 9080, 11, 1, 1, 0, 0, 9000, 80, 0, 0, 10, 1, 0, 0)
    stat += struct.pack("<IIHHI", 1_700_000_000, 1_700_000_061, 123, 8, 0)
    path.write_bytes(header + stat + block)


def test_layout_1_is_refused_natively_and_read_through_nfdump(tmp_path, capsys):
    need_tools("nfdump")
    f = tmp_path / "nfcapd.202311142213"
    layout_1_file(f)
    with pytest.raises(NfcapdUnsupported, match="LAYOUT_VERSION_1"):
        NfcapdReader(f, now_us=NOW_US)
    opts = ImportOptions(extra=(("now_us", NOW_US),))
    batches = list(get_importer("nfcapd")().read(f, opts))
    err = capsys.readouterr().err
    assert "nfdump 1.6 file layout (LAYOUT_VERSION_1) is not read natively" in err
    assert "reading it through" in err and str(f) in err
    table = pa.concat_tables([b.table for b in batches])
    rows, reasons = expected(f, NOW_US)
    assert table_rows(table) == rows and len(rows) == 2 and not reasons
    # the same through the command, and nfdump missing says what the file needs
    summary = import_sources([f], tmp_path / "a", progress=False, now_us=NOW_US)
    assert summary.records_written == 2 and not summary.failed
    summary = import_sources([f], tmp_path / "b", progress=False, nfdump="no-such-nfdump")
    assert "LAYOUT_VERSION_1" in summary.failed[0].error
    assert "apt-get install nfdump" in summary.failed[0].error


def test_native_reader_needs_no_nfdump(tmp_path):
    """--format nfcapd works without nfdump installed (here: a name that is not on PATH)."""
    src = need_data("flow_exports") / ("flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000")
    summary = import_sources([src], tmp_path / "a", nfdump="no-such-nfdump", progress=False)
    assert summary.records_written == 41 and not summary.failed
    with pytest.raises(InputError, match="apt-get install nfdump"):
        import_sources(
            [src], tmp_path / "b", nfdump="no-such-nfdump", reader="nfdump", progress=False
        )


def test_reader_option_is_checked(tmp_path):
    from flowatlas.cli import main
    from flowatlas.errors import ConfigError

    src = shared_data_dir() / "flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000"
    with pytest.raises(ConfigError, match="--reader 'fast'"):
        import_sources([src], tmp_path / "a", reader="fast", progress=False)
    assert main(["import", str(tmp_path), "--out", str(tmp_path / "o"), "--reader", "x"]) == 2


def test_not_an_nfcapd_file_and_a_short_header(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"\x0c\xa5\x02\x00" + b"\x00" * 10)
    with pytest.raises(InputError, match="truncated nfcapd file: 14 of 40 header bytes"):
        NfcapdReader(f, now_us=NOW_US)
    f.write_bytes(b"hello world" * 10)
    with pytest.raises(InputError, match="not an nfcapd file"):
        NfcapdReader(f, now_us=NOW_US)
    f.write_bytes(b"\x0c\xa5\x03\x00" + b"\x00" * 60)
    with pytest.raises(NfcapdUnsupported, match="layout 3"):
        NfcapdReader(f, now_us=NOW_US)
    data = bytearray(b"\x0c\xa5\x02\x00" + b"\x00" * 36)
    data[17] = 1
    f.write_bytes(bytes(data))
    with pytest.raises(NfcapdUnsupported, match="encrypted"):
        NfcapdReader(f, now_us=NOW_US)
    data[17], data[16] = 0, 9
    f.write_bytes(bytes(data))
    with pytest.raises(NfcapdUnsupported, match="unknown nfcapd compression 9"):
        NfcapdReader(f, now_us=NOW_US)


@pytest.mark.tools
@pytest.mark.shared_data
def test_files_nfdump_rewrites_equal_nfdump(tmp_path):
    """Aggregated (-a, -A), bidirectional (-b, -B) and anonymised (nfanon) files: records
    with counters in both directions and with elements left out."""
    need_tools("nfdump", "nfanon")
    root = need_data("flow_exports") / "flow_exports"
    softflowd = root / "generated_nfcapd/alexa-app.pcapng/nfcapd.202611250000"
    ipfix = root / "pmacct/401-IPFIXv10-BMP-IPv6-CISCO-MPLS-multiple-sources"
    ipfix = ipfix / "nfcapd_replay/nfcapd.202611250000"
    for name, src, args in (
        ("a", softflowd, ["-a"]),
        ("b", softflowd, ["-b"]),
        ("B", softflowd, ["-B"]),
        ("srcip", softflowd, ["-A", "srcip"]),
        ("proto-dstport", ipfix, ["-A", "proto,dstport"]),
        ("a-ipfix", ipfix, ["-a"]),
    ):
        out = tmp_path / name
        subprocess.run(["nfdump", "-r", str(src), *args, "-w", str(out)], check=True)
        assert_matches_nfdump(out)
    anon = tmp_path / "anon"
    key = "abcdefghijklmnopqrstuvwxyz012345"
    subprocess.run(
        ["nfanon", "-K", key, "-r", str(softflowd), "-w", str(anon)],
        check=True,
        capture_output=True,
    )
    assert_matches_nfdump(anon)
