"""CSV with a column mapping: mappings, time formats, bad rows with row numbers, bad files."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pyarrow as pa
import pytest

from flowatlas.addresses import format_addresses
from flowatlas.errors import ConfigError, InputError
from flowatlas.io.importers.base import ImportOptions, detect_format, get_importer
from flowatlas.io.importers.csv import parse_csv_map

NOW = {"now_us": 1_790_000_000 * 1_000_000}


def read(path: Path, **extra) -> tuple[pa.Table, pa.Table, int]:
    opts = ImportOptions(batch_rows=1000, extra=tuple({**NOW, **extra}.items()))
    batches = list(get_importer("csv")().read(path, opts))
    table = pa.concat_tables([b.table for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    read_ = sum(b.records_read for b in batches)
    assert read_ == table.num_rows + quarantine.num_rows
    return table, quarantine, read_


def test_identity_mapping_and_sniff(tmp_path):
    f = tmp_path / "flows.csv"
    f.write_text(
        "time_start,time_end,src_addr,dst_addr,bytes,packets,proto,dst_port\n"
        "2024-03-01T10:00:00Z,2024-03-01T10:00:05Z,192.0.2.1,198.51.100.7,1000,2,6,443\n"
        "2024-03-01T10:01:00Z,,2001:db8::1,2001:db8::2,10,1,udp,53\n"
    )
    assert detect_format(f) == "csv"
    t, q, n = read(f)
    assert n == 2 and q.num_rows == 0
    assert t["bytes"].to_pylist() == [1000, 10]
    assert t["proto"].to_pylist() == [6, 17]
    assert format_addresses(t["dst_addr"]) == ["198.51.100.7", "2001:db8::2"]


def test_mapping_string_epoch_ms_and_row_numbers(tmp_path):
    f = tmp_path / "export.csv"
    f.write_text(
        "ts;sa;da;byt;pkt\n"
        "1709287200000;10.0.0.1;10.0.0.2;100;1\n"
        "1709287200000;10.0.0.1;not-an-ip;100;1\n"
        "1709287200000;10.0.0.1;10.0.0.2\n"  # too few fields
        "1709287200000;10.0.0.1;10.0.0.2;-7;1\n"
        "1709287260000;10.0.0.3;10.0.0.4;18446744073709551616;1\n"
        "1709287200000;10.0.0.1;10.0.0.2;5;1\n"
    )
    spec = tmp_path / "map.toml"
    spec.write_text(
        "[columns]\ntime_start='ts'\nsrc_addr='sa'\ndst_addr='da'\nbytes='byt'\npackets='pkt'\n"
        "[constants]\nsampling_rate = 100\n"
        "[options]\ntime_unit='ms'\ndelimiter=';'\n"
    )
    t, q, n = read(f, csv_map=str(spec))
    assert n == 6 and t.num_rows == 2
    assert t["sampling_rate"].to_pylist() == [100, 100]
    got = sorted(zip(q["position"].to_pylist(), q["reason"].to_pylist(), strict=True))
    assert got == [
        ("row 2", "bad_address"),
        ("row 3", "malformed_line"),
        ("row 4", "negative_counter"),
        ("row 5", "counter_overflow"),
    ]


def test_gzip_and_duration(tmp_path):
    f = tmp_path / "f.csv.gz"
    with gzip.open(f, "wt") as fh:
        fh.write("start,dur,s,d,b\n2024-03-01 10:00:00,2.5,10.0.0.1,10.0.0.2,9\n")
    t, q, _ = read(f, csv_map="time_start=start,duration=dur,src_addr=s,dst_addr=d,bytes=b")
    assert q.num_rows == 0
    delta = t["time_end"][0].as_py() - t["time_start"][0].as_py()
    assert delta.total_seconds() == 2.5


def test_bad_mappings_and_files_are_clear_errors(tmp_path):
    f = tmp_path / "f.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no column mapped to time_start"):
        read(f)
    with pytest.raises(InputError, match="no column 'zz'"):
        read(f, csv_map="time_start=zz,src_addr=a,dst_addr=b,bytes=a")
    with pytest.raises(ConfigError, match="not a flow field"):
        parse_csv_map("when=a")
    with pytest.raises(ConfigError, match="FIELD=COLUMN"):
        parse_csv_map("time_start")
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 50)
    with pytest.raises(InputError, match=re.escape(str(garbage))):
        read(garbage, csv_map="time_start=a,src_addr=b,dst_addr=c,bytes=d")


def test_malformed_row_with_bad_bytes_is_quarantined_not_fatal(tmp_path, capfd):
    # pyarrow decodes a row it cannot split as UTF-8 before our handler sees it; without the
    # guard stream that failed the whole file after an "Exception ignored" traceback
    f = tmp_path / "both.csv"
    f.write_bytes(
        b"time_start,src_addr,dst_addr,bytes\n"
        b"2024-03-01T10:00:00Z,10.0.0.1,10.0.0.2,5\n"
        b"2024-03-01T10:00:00Z,10.0.0.\xff,10.0.0.2,5,extra\n"
        b"2024-03-01T10:00:00Z,10.0.0.3,10.0.0.2,7\n"
        b"2024-03-01T10:00:00Z,10.0.0.4,10.0.0.\xfe2,8\n"
        b"2024-03-01T10:00:00Z,10.0.0.5,10.0.0.2,9\n"
    )
    t, q, n = read(f)
    assert n == 5 and t["bytes"].to_pylist() == [5, 7, 9]
    assert q.select(["position", "reason"]).to_pylist() == [
        {"position": "row 2", "reason": "malformed_line"},
        {"position": "row 4", "reason": "bad_encoding"},
    ]
    assert "Exception ignored" not in capfd.readouterr().err


@pytest.mark.parametrize("seed", range(40))
def test_utf8_guard_matches_whole_stream_replacement(seed):
    import io
    import random

    from flowatlas.io.importers.csv import Utf8Guard

    rng = random.Random(seed)
    alphabet = [0x41, 0x0A, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0xED]
    raw = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
    guard = Utf8Guard(io.BytesIO(raw))
    out = b""
    while chunk := guard.read(rng.randint(1, 9)):
        out += chunk
    assert out == raw.decode("utf-8", "replace").encode("utf-8")
    assert guard.replaced == (out != raw)
    text = "a,é,€,😀\n" * 3
    assert Utf8Guard(io.BytesIO(text.encode())).read(-1) == text.encode()


def test_csv_map_toml_validation(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text("[options]\ncounts='maybe'\n")
    with pytest.raises(ConfigError, match="counts"):
        parse_csv_map(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        parse_csv_map(str(tmp_path / "missing.toml"))
    ok = tmp_path / "ok.toml"
    ok.write_text("[columns]\nbytes='b'\n[options]\ncounts='scaled'\n")
    assert parse_csv_map(str(ok)).counts == "scaled"


def test_bad_encoding_is_quarantined_and_truncated_gzip_is_an_error(tmp_path):
    f = tmp_path / "enc.csv"
    f.write_bytes(
        b"time_start,src_addr,dst_addr,bytes\n"
        b"2024-03-01T10:00:00Z,10.0.0.1,10.0.0.2,5\n"
        b"2024-03-01T10:00:00Z,10.0.0.\xff,10.0.0.2,5\n"
        b"2024-03-01T10:00:00Z,10.0.0.3,10.0.0.2,7\n"
    )
    t, q, n = read(f)
    assert n == 3 and t["bytes"].to_pylist() == [5, 7]
    assert q.select(["position", "reason"]).to_pylist() == [
        {"position": "row 2", "reason": "bad_encoding"}
    ]
    body = (
        "time_start,src_addr,dst_addr,bytes\n" + "2024-03-01T10:00:00Z,10.0.0.1,10.0.0.2,5\n" * 9000
    )
    data = gzip.compress(body.encode())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.csv\.gz"):
        read(cut)


def test_binary_data_and_quoted_headers(tmp_path):
    """A file whose first line is not text fails at once, naming the byte; the header alone
    is parsed for column names, quotes and all."""
    from flowatlas.io.importers.csv import csv_header

    f = tmp_path / "blob.csv"
    f.write_bytes(b"time_start,src\x00_addr\n1,2\n")
    with pytest.raises(
        InputError, match=r"blob.csv: not a text CSV file \(binary data at byte 14\)"
    ):
        csv_header(f)
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="binary data at byte 0"):
        csv_header(f)
    f.write_bytes(b"")
    with pytest.raises(InputError, match="no header line"):
        csv_header(f)
    f.write_text('"time_start","src, addr";dst\nx\n')
    assert csv_header(f) == ["time_start", "src, addr;dst"]
    assert csv_header(f, ";") == ['time_start,"src, addr"', "dst"]
    # a header line that ends inside a multi-byte character cut by the head is still text
    f.write_bytes(b"a,b," + "é".encode() * 40_000)
    assert csv_header(f)[:2] == ["a", "b"]
