"""The compiled goflow2 protobuf walk against the Python wire-format reader (the oracle).

Every stream, well formed or not, must give the same chunks through the compiled walk as
through the Python reader: the same message numbers, the same columns (types and values) and
the same bad messages with the same words, whatever the block size the walk reads with and
however many messages a chunk holds. Streams are random FlowMessages (v1 and v2 fields, kept
fields repeated or of the wrong wire type, addresses of odd lengths, values up to and past
2^64), with and without goflow2's newline separator, then truncated or with bytes flipped.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pyarrow as pa
import pytest
from test_importers_goflow2 import varint

from flowatlas.io.importers import goflow2
from flowatlas.io.importers.base import ImportOptions, get_importer
from flowatlas.io.importers.goflow2 import _pb_columns, pb_chunks_compiled
from flowatlas.io.importers.goflow2_scan import ADDRESS_FIELDS, NUMERIC_FIELDS

T0_NS = 1_767_324_720_000_000_000
NOW_US = 1_790_000_000 * 1_000_000


def field(number: int, wire: int, value: int | bytes) -> bytes:
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(int(value))  # type: ignore[arg-type]
    if wire == 2:
        return key + varint(len(value)) + bytes(value)  # type: ignore[arg-type]
    return key + (b"\x01" * (8 if wire == 1 else 4))


def good_message(rng: random.Random, v1: bool = False) -> bytes:
    """A FlowMessage as goflow2 writes it (v2 numbers, or v1 times in seconds)."""
    msg = bytearray(field(1, 0, 4))
    if v1:
        msg += field(2, 0, T0_NS // 10**9 + rng.randrange(100))
        msg += field(38, 0, rng.choice([0, T0_NS // 10**9]))
        msg += field(5, 0, T0_NS // 10**9 + 5)
    else:
        msg += field(110, 0, T0_NS + rng.randrange(10**9))
        msg += field(111, 0, rng.choice([0, T0_NS, T0_NS + 17]))
        msg += field(112, 0, T0_NS + 2 * 10**9)
    for number in (11, 6, 7):
        msg += field(number, 2, rng.randbytes(rng.choice([4, 16])))
    for number in (9, 10, 3, 20, 21, 22, 18, 19, 14, 15):
        if rng.random() < 0.8:
            msg += field(number, 0, rng.choice([0, 1, 6, 443, rng.randrange(1 << 32)]))
    return bytes(msg)


#: values that sit on the edges the walk must treat as the reader does
EDGE_VALUES = [0, 1, 127, 128, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, (1 << 70) - 1]


def odd_message(rng: random.Random) -> bytes:
    """A message with whatever fields, wire types and values."""
    msg = bytearray()
    numbers = [*NUMERIC_FIELDS, *ADDRESS_FIELDS, 1, 4, 99, 200, 1 << 20]
    for _ in range(rng.randrange(12)):
        number = rng.choice(numbers)
        wire = rng.choice([0, 0, 0, 2, 2, 1, 5])
        if wire == 2:
            value: int | bytes = rng.randbytes(rng.choice([0, 3, 4, 4, 16, 16, 17]))
        else:
            value = rng.choice([*EDGE_VALUES, rng.randrange(1 << 40), T0_NS, T0_NS // 10**9])
        msg += field(number, wire, value)
    if rng.random() < 0.1:
        msg += bytes([rng.randrange(256) | 0x80] * rng.randrange(1, 12))  # a broken varint
    if rng.random() < 0.05:
        msg += varint(rng.choice([3, 4, 6, 7]) | 8 * rng.randrange(1, 30))  # unused wire type
    return bytes(msg)


def stream(rng: random.Random, messages: list[bytes], newline: bool) -> bytearray:
    out = bytearray()
    for m in messages:
        out += varint(len(m)) + m
        if newline:
            out += b"\n"
    return out


def damage(rng: random.Random, data: bytearray) -> bytearray:
    data = bytearray(data)
    how = rng.randrange(5)
    if how == 0 and data:
        del data[rng.randrange(len(data)) :]  # truncated
    elif how == 1:
        for _ in range(rng.randrange(1, 6)):  # flipped bytes
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == 2:
        data += varint(rng.choice([(1 << 20) + 1, 1 << 64, 1 << 69]))  # implausible length
    elif how == 3:
        data += bytes([0xFF] * rng.randrange(1, 12))  # a broken length prefix at the end
    return data


def chunks(reader, data: bytes, **kw) -> list:
    out = []
    for numbers, records, bad in reader(io.BytesIO(bytes(data)), Path("x.bin"), **kw):
        cols = _pb_columns(records) if numbers else {}
        out.append((list(numbers), dict(cols), list(bad)))
    return out


def python_chunks(data: bytes, chunk_messages: int, monkeypatch) -> list:
    monkeypatch.setattr(goflow2, "JSON_CHUNK_LINES", chunk_messages)
    return chunks(lambda fh, path: goflow2.Goflow2PbImporter._chunks(fh, path), data)


def assert_same(got: list, want: list) -> None:
    """The same chunks: numbers, bad records and columns (types and values)."""
    assert len(got) == len(want)
    for (n1, c1, b1), (n2, c2, b2) in zip(got, want, strict=True):
        assert n1 == n2
        assert b1 == b2
        assert set(c1) == set(c2)
        for name in c2:
            assert c1[name].type == c2[name].type, name
            assert c1[name].equals(c2[name]), (name, c1[name], c2[name])


def assert_same_batches(got: list, want: list) -> None:
    """The same batches out of an importer: records read, rows and quarantine."""
    assert len(got) == len(want) > 1
    for a, b in zip(got, want, strict=True):
        assert a.records_read == b.records_read
        assert a.table.equals(b.table)
        assert a.quarantine.equals(b.quarantine)


@pytest.mark.parametrize("seed", range(60))
def test_random_streams_match_the_python_reader(seed, monkeypatch):
    rng = random.Random(seed)
    odd_share = [0.0, 0.05, 0.5][seed % 3]
    messages = [
        odd_message(rng) if rng.random() < odd_share else good_message(rng, v1=rng.random() < 0.2)
        for _ in range(rng.randrange(1, 120))
    ]
    data = stream(rng, messages, newline=seed % 2 == 0)
    if seed % 4 == 3:
        data = damage(rng, data)
    chunk_messages = rng.choice([1, 7, 64, 65_536])
    want = python_chunks(bytes(data), chunk_messages, monkeypatch)
    for block in (1, 13, 4096, 8 << 20):
        got = chunks(pb_chunks_compiled, bytes(data), chunk_messages=chunk_messages, block=block)
        assert_same(got, want)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"\x00",  # one empty message
        b"\x00\n\x00\n",
        b"\x80",  # a length prefix cut short
        b"\xff" * 11,  # a length prefix too long
        varint((1 << 20) + 1) + b"x",  # implausible length
        varint(5) + b"ab",  # a message cut short
        varint(3) + field(9, 0, 1) + b"\n" + b"\n",  # a second newline: a message of 10 bytes
    ],
)
def test_edge_streams_match_the_python_reader(data, monkeypatch):
    want = python_chunks(data, 65_536, monkeypatch)
    for block in (1, 8 << 20):
        assert_same(chunks(pb_chunks_compiled, data, block=block), want)


def test_whole_import_is_the_same_through_either_reader(tmp_path, monkeypatch):
    """Batches, rows and quarantine of a whole file: the importer with the compiled walk
    against the importer with the Python reader."""
    rng = random.Random(5)
    messages = [good_message(rng) for _ in range(3000)]
    messages[100] = odd_message(rng)
    messages[2000] = field(9, 2, b"12")  # bytes as text: a mixed chunk
    path = tmp_path / "flows.bin"
    path.write_bytes(bytes(stream(rng, messages, newline=True)))
    opts = ImportOptions(batch_rows=1000, extra=(("now_us", NOW_US),))

    def read() -> list:
        return list(get_importer("goflow2-pb")().read(path, opts))

    monkeypatch.setattr(goflow2, "JSON_CHUNK_LINES", 256)
    fast = read()
    monkeypatch.setattr(
        goflow2, "pb_chunks_compiled", lambda fh, path: goflow2.Goflow2PbImporter._chunks(fh, path)
    )
    assert_same_batches(fast, read())
    written = pa.concat_tables([b.table for b in fast]).num_rows
    assert written > 1000 and written + sum(b.quarantine.num_rows for b in fast) == 3000


@pytest.mark.parametrize("number", [110, 111, 112, 2, 38, 5])
def test_a_time_that_is_not_a_number_is_a_bad_message(tmp_path, number):
    """Before, such a message stopped the import with a TypeError (or, for v1's seconds,
    multiplied a byte string by 10^9): now it is quarantined like any undecodable message."""
    rng = random.Random(number)
    bad = field(number, 2, b"1234") + good_message(rng, v1=number < 100)
    path = tmp_path / "flows.bin"
    path.write_bytes(bytes(stream(rng, [good_message(rng), bad, good_message(rng)], False)))
    opts = ImportOptions(extra=(("now_us", NOW_US),))
    (batch,) = get_importer("goflow2-pb")().read(path, opts)
    assert batch.records_read == 3
    q = [r for r in batch.quarantine.to_pylist() if r["reason"] == "bad_protobuf"]
    assert [r["position"] for r in q] == ["message 2"]
    assert "is not a varint" in q[0]["detail"]
