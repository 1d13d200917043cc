"""The compiled plain-CSV fast path against the text path it stands in for (the oracle).

Two levels: each value the kernel accepts must be one the text path's parsers accept with the
same result (random and mutated times, addresses, integers); and whole files, plain or not,
cut into many small blocks so that the fast path hands over to the text path in the middle,
must import to the same rows and the same quarantine as through the text path alone.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flowatlas.addresses import parse_addresses
from flowatlas.io.importers import csv as csvmod
from flowatlas.io.importers.base import ImportOptions, empty_quarantine, get_importer
from flowatlas.io.importers.csv import (
    _OK,
    ColumnConverter,
    _text,
    parse_time,
    parse_uint,
    read_mapped_csv,
)
from flowatlas.io.importers.csv_scan import (
    ADDRESS,
    SKIP,
    TIME,
    UINT,
    byte_classes,
    scan_block,
)
from flowatlas.schema import FLOW_SCHEMA_V1

NOW_US = 1_790_000_000 * 1_000_000
MUTATIONS = "0123456789-:.TZz +/ab\"',\t"


def kernel(kind: int, text: bytes) -> tuple[bool, object]:
    """One value through scan_block (as the first of two columns): (accepted, value)."""
    data = np.frombuffer(text + b",x\n", dtype=np.uint8)
    times = np.zeros((1, 4), np.int64)
    hi, lo = np.zeros((1, 4), np.uint64), np.zeros((1, 4), np.uint64)
    uints = np.zeros((1, 4), np.uint64)
    kinds = np.array([kind, SKIP], np.int8)
    rows, plain = scan_block(data, byte_classes(44), kinds, np.zeros(2, np.int64), times, hi,
                             lo, uints)  # fmt: skip
    if not plain:
        return False, None
    assert rows == 1
    value = {TIME: int(times[0, 0]), ADDRESS: (int(hi[0, 0]), int(lo[0, 0]))}.get(kind)
    return True, int(uints[0, 0]) if kind == UINT else value


def text_path(kind: int, text: str) -> tuple[bool, object]:
    """The same value through the text path's parsers: (ok, value)."""
    arr = pa.array([text], pa.string())
    if kind == TIME:
        us, state = parse_time(arr)
        return state[0] == _OK, int(us[0])
    if kind == ADDRESS:
        hi, lo, ok = parse_addresses(_text(arr), strict=False)
        return bool(ok[0]) and text != "", (int(hi[0]), int(lo[0]))
    v, state = parse_uint(arr, (1 << 64) - 1)
    return state[0] == _OK, int(v[0])


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(3)
        at = rng.randrange(len(chars) + 1)
        if op == 0 and chars:
            del chars[min(at, len(chars) - 1)]
        elif op == 1:
            chars.insert(at, rng.choice(MUTATIONS))
        elif chars:
            chars[min(at, len(chars) - 1)] = rng.choice(MUTATIONS)
    return "".join(chars)


def random_time(rng: random.Random) -> str:
    parts = [rng.randint(1900, 2199), rng.randint(1, 12), rng.randint(1, 28),
             rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)]  # fmt: skip
    if rng.random() < 0.3:  # one part at or past its edge
        k = rng.randrange(6)
        parts[k] = rng.choice([[1899, 1970, 2200, 2024], [0, 13], [0, 29, 30, 31, 32],
                               [23, 24], [59, 60], [59, 60]][k])  # fmt: skip
    y, mo, d, h, mi, s = parts
    text = f"{y:04d}-{mo:02d}-{d:02d}{rng.choice('T ')}{h:02d}:{mi:02d}:{s:02d}"
    digits = rng.choice([0, 0, 1, 3, 6, 9, 10])
    if digits:
        text += "." + "".join(rng.choice("0123456789") for _ in range(digits))
    return text + rng.choice(["", "Z", "Z", "+00:00", "+0130"])


def random_address(rng: random.Random) -> str:
    if rng.random() < 0.6:
        text = str(ipaddress.IPv4Address(rng.getrandbits(32)))
    else:
        a = ipaddress.IPv6Address(rng.getrandbits(128) >> rng.choice([0, 64, 96, 112]))
        text = rng.choice([str(a), a.exploded, str(a).upper()])
    return text


def random_uint(rng: random.Random) -> str:
    digits = rng.choice([1, 2, 5, 10, 18, 19, 20, 21])
    return "".join(rng.choice("0123456789") for _ in range(digits))


@pytest.mark.parametrize(
    ("kind", "make"), [(TIME, random_time), (ADDRESS, random_address), (UINT, random_uint)]
)
def test_kernel_accepts_only_what_the_text_path_reads_the_same(kind, make):
    rng = random.Random(kind)
    accepted = 0
    for i in range(4000):
        text = make(rng)
        if i % 2:
            text = mutate(rng, text)
        ok, value = kernel(kind, text.encode())
        if ok:
            accepted += 1
            assert text_path(kind, text) == (True, value), text
    assert accepted > 500  # the fast path does take the common forms


@pytest.mark.parametrize(
    "text",
    ["2024-02-29 00:00:00Z", "2023-02-29 00:00:00", "2024-03-01T10:00:00.123456789Z",
     "2024-03-01T10:00:00.1234567891", "1900-01-01 00:00:00", "2199-12-31T23:59:59.999999Z",
     "2024-03-01T10:00:60", "2024-03-01 10:00:00.", "2024-03-01", "2024-03-01T10:00Z"],
)  # fmt: skip
def test_kernel_times_at_the_edges(text):
    ok, value = kernel(TIME, text.encode())
    if ok:
        assert text_path(TIME, text) == (True, value)
    else:  # not plain: the text path reads it (or quarantines it)
        assert text in {"2023-02-29 00:00:00", "2024-03-01T10:00:00.1234567891",
                        "2024-03-01T10:00:60", "2024-03-01 10:00:00.", "2024-03-01",
                        "2024-03-01T10:00Z"}  # fmt: skip


HEADER = "time_start,time_end,src_addr,dst_addr,src_port,dst_port,proto,bytes,packets,note\n"


def plain_row(rng: random.Random, plain: bool = False) -> str:
    """A row of good values; some quoted, some (unless ``plain``) not plain (``"a,b"``)."""
    t0 = rng.randint(1_600_000_000, 1_700_000_000)
    frac = rng.choice(["", f".{rng.randint(0, 999999):06d}"])

    def iso(t: int) -> str:
        return np.datetime64(t, "s").astype(str).replace("T", rng.choice("T ")) + frac + "Z"

    src, dst = random_address(rng), random_address(rng)
    quote = rng.random() < 0.2
    if quote:
        src, dst = f'"{src}"', f'"{dst}"'
    nums = [rng.randint(0, 65535), rng.randint(0, 65535), rng.choice([6, 17, 1]),
            rng.randint(40, 10**7), rng.randint(1, 1000)]  # fmt: skip
    note = rng.choice(["", "x", "ok"] if plain else ["", "x", '"a,b"', "ok"])
    return ",".join([iso(t0), iso(t0 + rng.randint(0, 100)), src, dst, *map(str, nums), note])


ODD_ROWS = [
    "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,not-an-ip,1,2,6,100,1,",
    "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,6,100,1",  # a field short
    "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,tcp,100,1,",
    "1980-03-01T10:00:00Z,1980-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,6,100,1,",  # before 1990
    "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,70000,6,100,1,",
    "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z, 192.0.2.1 ,192.0.2.2,1,2,6,100,1,",
    "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,6,-5,1,",
    "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,6,100,200,",  # pk > by
    '2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,6,100,1,"two\nlines"',
    '2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,6,100,1,"say ""hi"""',
    "2024-03-01T10:00:00+02:00,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,6,100,1,",
    "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,192.0.2.2,1,2,6,100,1,caf\u00e9",
    "",
]


def write_csv(path: Path, rng: random.Random, rows: int, odd: float, crlf: bool) -> None:
    lines = [HEADER.rstrip("\n")]
    for _ in range(rows):
        lines.append(rng.choice(ODD_ROWS) if rng.random() < odd else plain_row(rng))
    end = "\r\n" if crlf else "\n"
    text = end.join(lines) + rng.choice([end, ""])
    data = text.encode()
    if rng.random() < 0.2:  # a byte that is not UTF-8 somewhere in a data row
        at = rng.randrange(len(HEADER), len(data))
        data = data[:at] + b"\xff" + data[at:]
    path.write_bytes(data)


def import_fast(path: Path) -> tuple[pa.Table, pa.Table, int]:
    opts = ImportOptions(batch_rows=500, extra=(("now_us", NOW_US),))
    batches = list(get_importer("csv")().read(path, opts))
    return _joined(batches)


def import_text(path: Path) -> tuple[pa.Table, pa.Table, int]:
    conv = ColumnConverter(str(path), now_us=NOW_US)
    header = HEADER.strip().split(",")
    mapping = {c: c for c in header if c != "note"}
    batches = list(read_mapped_csv(path, conv, mapping, delimiter=",", batch_rows=500))
    return _joined(batches)


def _joined(batches: list) -> tuple[pa.Table, pa.Table, int]:
    table = pa.concat_tables([FLOW_SCHEMA_V1.empty_table(), *(b.table for b in batches)])
    quarantine = pa.concat_tables([empty_quarantine(), *(b.quarantine for b in batches)])
    table, quarantine = table.combine_chunks(), quarantine.combine_chunks()
    n = sum(b.records_read for b in batches)
    assert n == table.num_rows + quarantine.num_rows  # nothing dropped
    return table, quarantine, n


@pytest.mark.parametrize("seed", range(16))
def test_files_import_as_through_the_text_path(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    monkeypatch.setattr(csvmod, "SCAN_BLOCK_BYTES", rng.choice([97, 300, 1000, 1 << 20]))
    path = tmp_path / "flows.csv"
    write_csv(path, rng, rows=rng.randint(1, 400), odd=rng.choice([0.0, 0.01, 0.1]),
              crlf=rng.random() < 0.3)  # fmt: skip
    fast, text = import_fast(path), import_text(path)
    assert fast[2] == text[2]
    assert fast[0].equals(text[0])
    # the same quarantined rows; their order within a batch follows pyarrow's blocks (rows
    # it could not split come first), so both are compared in file order
    assert in_file_order(fast[1]).equals(in_file_order(text[1]))


def in_file_order(quarantine: pa.Table) -> pa.Table:
    number = [int(p.split()[-1]) for p in quarantine["position"].to_pylist()]
    return quarantine.take(pa.array(np.argsort(number, kind="stable")))


def test_plain_blocks_take_the_fast_path(tmp_path):
    rng = random.Random(7)
    rows = "\n".join(plain_row(rng, plain=True) for _ in range(50)) + "\n"
    kinds, slots, fields = csvmod._scan_plan(HEADER.strip().split(","), {
        c: c for c in HEADER.strip().split(",") if c != "note"})  # fmt: skip
    conv = ColumnConverter("x.csv", now_us=NOW_US)
    batch = csvmod._scan(memoryview(rows.encode()), ",", kinds, slots, fields, conv, 0)
    assert batch is not None and batch.table.num_rows == 50
    odd = rows + ODD_ROWS[0] + "\n"
    assert csvmod._scan(memoryview(odd.encode()), ",", kinds, slots, fields, conv, 0) is None


GOOD = "2024-03-01T10:00:00Z,2024-03-01T10:00:01Z,192.0.2.1,2001:db8::2,1,2,6,100,1,x"


@pytest.mark.parametrize(
    "body",
    [
        b"",  # a header and nothing else
        GOOD.encode(),  # no line end at the end of the file
        (GOOD + "\r\n" + GOOD + "\r\n").encode(),
        (GOOD + ",extra\n" + GOOD + "\n").encode(),  # a field too many
        (GOOD + "\n\n" + GOOD + "\n").encode(),  # an empty line
        (GOOD + "\r" + GOOD + "\n").encode(),  # a bare carriage return
        (GOOD + "\n" + "9" * (2 << 20) + "\n" + GOOD + "\n").encode(),  # a line over 1 MiB
        ("\n".join([GOOD] * 30) + '\n"' + GOOD + "\n").encode(),  # an unclosed quote
        ("\n".join([GOOD] * 30) + "\n" + GOOD.replace(",1,2,", ",01,2,") + "\n").encode(),
    ],
)
def test_edge_files_import_as_through_the_text_path(tmp_path, monkeypatch, body):
    monkeypatch.setattr(csvmod, "SCAN_BLOCK_BYTES", 256)
    path = tmp_path / "flows.csv"
    path.write_bytes(HEADER.encode() + body)
    fast, text = import_fast(path), import_text(path)
    assert fast[2] == text[2]
    assert fast[0].equals(text[0])
    assert in_file_order(fast[1]).equals(in_file_order(text[1]))


def test_gzip_and_tab_delimited_files(tmp_path, monkeypatch):
    import gzip

    monkeypatch.setattr(csvmod, "SCAN_BLOCK_BYTES", 512)
    rng = random.Random(3)
    rows = [plain_row(rng, plain=True) for _ in range(200)]
    path = tmp_path / "flows.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "\n".join(rows) + "\n").encode()))
    fast, text = import_fast(path), import_text(path)
    assert fast[2] == text[2] == 200 and fast[0].equals(text[0])
    tab = tmp_path / "flows.tsv"
    tab.write_text((HEADER + "\n".join(rows) + "\n").replace(",", "\t"))
    spec = tmp_path / "map.toml"
    spec.write_text('[options]\ndelimiter = "\\t"\n')
    opts = ImportOptions(batch_rows=500, extra=(("now_us", NOW_US), ("csv_map", str(spec))))
    got = _joined(list(get_importer("csv")().read(tab, opts)))
    assert got[2] == 200 and got[0].equals(fast[0])
