"""The pyarrow.json path for goflow2 and pmacct JSON lines against the Python reader (oracle).

``json_chunks_fast`` must give every file the chunks ``read_json_lines`` gives it: the same
line numbers, the same columns (types and values) and the same bad lines with their text,
whatever its chunk and block sizes. Files are random goflow2 (v1 and v2) and pmacct records,
then mutated the ways real and broken files differ: blank and whitespace lines, CRLF, a
missing last newline, bad JSON, lines that are not objects, two objects on a line, a BOM,
invalid UTF-8, duplicate keys, integers past 2^63, floats, booleans, nested and deeply nested
values, keys of two goflow2 versions in one file, strings where numbers were and unset times.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_goflow2_scan import assert_same, assert_same_batches
from test_importers_goflow2 import V1, V2

from flowatlas.io.importers import goflow2, pmacct
from flowatlas.io.importers.base import ImportOptions, get_importer
from flowatlas.io.importers.goflow2 import columns_of, json_chunks_fast, read_json_lines

NOW_US = 1_790_000_000 * 1_000_000
PMACCT = {
    "event_type": "purge",
    "peer_ip_src": "192.0.2.1",
    "iface_in": 3,
    "iface_out": 4,
    "ip_src": "198.51.100.7",
    "ip_dst": "10.1.2.3",
    "port_src": 443,
    "port_dst": 51000,
    "ip_proto": "tcp",
    "timestamp_start": "1767324720.000000",
    "timestamp_end": "1767324722.500000",
    "packets": 3,
    "bytes": 1800,
}
FORMATS = {
    "goflow2": (goflow2.goflow2_table_columns, goflow2.goflow2_columns),
    "pmacct": (pmacct._table_columns, pmacct._json_columns),
}


def record(rng: random.Random, fmt: str) -> dict:
    if fmt == "pmacct":
        rec = dict(PMACCT)
        rec["bytes"] = rng.randrange(1, 10**6)
        if rng.random() < 0.3:
            rec["timestamp_start"] = rng.choice(["0", "0.000000", "0000-00-00 00:00:00", ""])
            rec["timestamp_arrival"] = "2026-01-02 03:04:05"
        return rec
    rec = dict(V1 if rng.random() < 0.2 else V2)
    key = "bytes" if "bytes" in rec else "Bytes"
    rec[key] = rng.randrange(1, 10**6)
    return rec


#: values put under a random key, each a way JSON values differ from plain ints and text
ODD_VALUES = [0, "", "0", None, 1 << 63, -(1 << 63) - 1, 1 << 64, 1.5, 1e3, -0.0, True, False,
              [1, 2], {"x": 1}, "TCP", "2001:db8::1", "1767324720", 2**62]  # fmt: skip


def line(rng: random.Random, fmt: str) -> bytes:
    rec = record(rng, fmt)
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        key = rng.choice([*rec, "extra", "TimeFlowStart", "time_flow_start_ns"])
        rec[key] = rng.choice(ODD_VALUES)
    text = json.dumps(rec, separators=rng.choice([(",", ":"), (", ", ": ")])).encode()
    how = rng.randrange(40)
    if how == 0:
        text = text[: rng.randrange(len(text))]  # cut short
    elif how == 1:
        text = rng.choice([b"[1, 2]", b"5", b'"text"', b"null", b"{}", b"{} {}", b"x"])
    elif how == 2:
        text = text + b" " + text  # two objects on a line
    elif how == 3:
        text = b"\xef\xbb\xbf" + text  # a byte order mark
    elif how == 4:
        text = text.replace(b'"', b'"\xff', 1)  # invalid UTF-8 in a key
    elif how == 5:
        text = text[:-1] + b', "bytes": 7}'  # a duplicate key
    elif how == 6:
        text = text[:-1] + b', "deep": ' + b"[" * 150 + b"]" * 150 + b"}"
    elif how == 7:
        text = text[:-1] + b', "deep": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    elif how == 8:
        text = b"\x0b" + text  # \v before the object: not JSON whitespace
    elif how == 9:
        text = text.replace(b'"bytes"', b'"byt\\u0065s"')  # an escape in a key
    elif how == 10:
        text = b"  \t" + text + b" \r"
    elif how == 11:
        text = text.replace(b'"', b'"\xff', 3)  # invalid UTF-8 in a value
    elif how == 12:
        text = text.replace(b'.1"', b'.1\\ud800"').replace(b'"tcp"', b'"\\udc00tcp"')
    return text


def json_file(rng: random.Random, fmt: str, n: int) -> bytes:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append(rng.choice([b"", b"   ", b"\t\r", b"\x0b", b"\x0c \x0b"]))  # blank
        out.append(line(rng, fmt))
    end = rng.choice([b"\n", b"\r\n"])
    text = end.join(out)
    return text + (end if rng.random() < 0.7 else b"")


def fast_chunks(path: Path, fmt: str, **kw) -> list:
    table_cols, obj_cols = FORMATS[fmt]
    to = columns_of(obj_cols)
    return [
        (n, dict(to(r)) if n else {}, b) for n, r, b in json_chunks_fast(path, table_cols, **kw)
    ]


def slow_chunks(path: Path, fmt: str, chunk_lines: int) -> list:
    obj_cols = FORMATS[fmt][1]
    return [
        (n, dict(obj_cols(r)) if n else {}, b)
        for n, r, b in read_json_lines(path, chunk_lines=chunk_lines)
    ]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("seed", range(30))
def test_random_files_match_the_python_reader(tmp_path, fmt, seed):
    rng = random.Random(seed)
    path = tmp_path / "flows.json"
    path.write_bytes(json_file(rng, fmt, rng.randrange(1, 300)))
    chunk_lines = rng.choice([7, 64, 65_536])
    want = slow_chunks(path, fmt, chunk_lines)
    for block in (97, 1 << 20):
        assert_same(fast_chunks(path, fmt, chunk_lines=chunk_lines, block=block), want)


def test_plain_files_take_the_fast_path(tmp_path):
    rng = random.Random(1)
    path = tmp_path / "flows.json"
    path.write_bytes(b"\n".join(json.dumps(record(rng, "pmacct")).encode() for _ in range(500)))
    chunks = list(json_chunks_fast(path, pmacct._table_columns, chunk_lines=100))
    assert len(chunks) == 5 and all(isinstance(r, dict) for _, r, _ in chunks)


@pytest.mark.parametrize("fmt", ["goflow2-json", "pmacct-json"])
def test_whole_import_is_the_same_through_either_reader(tmp_path, monkeypatch, fmt):
    """Batches, rows and quarantine of a whole (gzipped) file, either way."""
    import gzip

    rng = random.Random(3)
    path = tmp_path / "flows.json.gz"
    path.write_bytes(gzip.compress(json_file(rng, fmt.split("-")[0], 3000)))
    opts = ImportOptions(batch_rows=1000, extra=(("now_us", NOW_US),))

    def read() -> list:
        return list(get_importer(fmt)().read(path, opts))

    monkeypatch.setattr(goflow2, "JSON_CHUNK_LINES", 256)
    fast = read()
    for module in (goflow2, pmacct):
        monkeypatch.setattr(
            module, "json_chunks_fast", lambda path, cols: read_json_lines(path, chunk_lines=256)
        )
    assert_same_batches(fast, read())
    assert sum(b.quarantine.num_rows for b in fast) > 10
