"""goflow2's output: JSON lines (``-format=json``) and length-prefixed protobuf (``-format=bin``).

goflow2 v2 writes one JSON object per line with snake_case keys (``time_received_ns``,
``sampler_address``, ``sampling_rate``, ``time_flow_start_ns``, ``bytes``, ``src_addr``,
``proto`` as a name such as ``"TCP"``, ...); v1 wrote CamelCase keys (``TimeReceived``,
``SamplerAddress``, ``TimeFlowStart`` in seconds, ``Proto`` as a number). Both are read: for
each field the first key present wins, and epoch times are told apart by their size (ns, us,
ms or s), so v1 seconds and v2 nanoseconds need no option. A flow whose start time is 0 (some
sFlow samples) takes the time goflow2 received it.

goflow2 keeps counts as exported (sampled) and says the rate, so archive files are ``raw``:
volume = bytes x sampling_rate (0 = unknown, read as unsampled).

The binary form is the ``FlowMessage`` protobuf of goflow2's ``pb/flow.proto``, each message
prefixed by its length as a varint (``-format=bin`` in v2, ``-format=pb
-format.protobuf.fixedlen=true`` in v1), optionally followed by the file transport's newline.
It is read by a compiled walk over whole buffers into typed columns (``goflow2_scan.py``, about
2 M messages per CPU-second), which hands any message it is not sure of to the small Python
wire-format reader here (no protobuf dependency), the walk's oracle in the tests. A message
the reader cannot decode (a field running past its end, a time that is not a number, ...) is
quarantined as ``bad_protobuf`` with its number and first bytes.

The JSON-lines reader is shared with pmacct's JSON output (see ``pmacct.py``). Chunks of lines
are parsed by ``pyarrow.json`` (:func:`json_chunks_fast`, about 5x ``json.loads`` line by
line) wherever its columns are exactly what the line-by-line reader (:func:`read_json_lines`,
the oracle in the tests) would give; a chunk with a bad line, a line that is not an object, a
value it would keep as text (a boolean, a float, an integer past 2^63) or keys of two goflow2
versions is read line by line, so every bad line is still quarantined with its number.
"""

from __future__ import annotations

import gzip
import io
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowatlas.errors import InputError
from flowatlas.io.importers.base import Batch, Importer, ImportOptions, register
from flowatlas.io.importers.csv import (
    BatchAccumulator,
    ColumnConverter,
    first_line,
    invalid_lines_quarantine,
)
from flowatlas.schema import COUNTS_RAW, empty_table

JSON_CHUNK_LINES = 65_536

#: v1 field -> JSON keys to try, v2 names first
GOFLOW2_KEYS: dict[str, tuple[str, ...]] = {
    "time_start": ("time_flow_start_ns", "TimeFlowStartNs", "TimeFlowStartMs", "TimeFlowStart"),
    "time_end": ("time_flow_end_ns", "TimeFlowEndNs", "TimeFlowEndMs", "TimeFlowEnd"),
    "time_received": ("time_received_ns", "TimeReceivedNs", "TimeReceived"),
    "exporter": ("sampler_address", "SamplerAddress"),
    "in_if": ("in_if", "InIf"),
    "out_if": ("out_if", "OutIf"),
    "src_addr": ("src_addr", "SrcAddr"),
    "dst_addr": ("dst_addr", "DstAddr"),
    "src_port": ("src_port", "SrcPort"),
    "dst_port": ("dst_port", "DstPort"),
    "proto": ("proto", "Proto"),
    "bytes": ("bytes", "Bytes"),
    "packets": ("packets", "Packets"),
    "sampling_rate": ("sampling_rate", "SamplingRate"),
    "src_as": ("src_as", "SrcAS"),
    "dst_as": ("dst_as", "DstAS"),
}


# --------------------------------------------------------------------------- JSON lines


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading bytes, gunzipping ``*.gz``; errors name the file."""
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def read_json_lines(
    path: Path, chunk_lines: int = JSON_CHUNK_LINES
) -> Iterator[tuple[list[int], list[dict[str, Any]], list[tuple[int, str]]]]:
    """Yield (line numbers, objects, bad lines) for chunks of a JSON-lines file.

    Blank lines are not records. A line that is not a JSON object is a bad line: it is
    returned with its number and text for the quarantine, never dropped.
    """
    fh = open_binary(path)
    numbers: list[int] = []
    objects: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    try:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            _read_line(lineno, raw, numbers, objects, bad)
            if len(numbers) + len(bad) >= chunk_lines:
                yield numbers, objects, bad
                numbers, objects, bad = [], [], []
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: read failed: {exc}") from None
    finally:
        fh.close()
    if numbers or bad:
        yield numbers, objects, bad


def _read_line(
    lineno: int,
    raw: bytes,
    numbers: list[int],
    objects: list[dict[str, Any]],
    bad: list[tuple[int, str]],
) -> None:
    """Add a non-blank line to the objects, or to the bad lines with its text."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        bad.append((lineno, raw.decode("utf-8", "replace").strip()))
    else:
        if isinstance(obj, dict):
            numbers.append(lineno)
            objects.append(obj)
        else:
            bad.append((lineno, raw.decode("utf-8", "replace").strip()))


def column(values: Sequence[Any]) -> pa.Array:
    """An Arrow column from decoded JSON values, typed if they agree, else as text."""
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, UnicodeEncodeError):
        return pa.array([None if v is None else _as_text(v) for v in values], pa.string())
    if pa.types.is_null(arr.type) or pa.types.is_string(arr.type):
        return arr
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return arr
    if pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    # booleans, lists, objects: keep as text so the converter rejects them with the value
    return pa.array([None if v is None else _as_text(v) for v in values], pa.string())


def _as_text(v: Any) -> str:
    if isinstance(v, str):  # a lone surrogate (JSON "\ud800") shown escaped, not a crash
        return v.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(v, bytes | bytearray):  # a protobuf field of the wrong wire type
        return f"bytes 0x{bytes(v[:32]).hex()}"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return json.dumps(v)
    return str(v)


def pick(objects: list[dict[str, Any]], keys: Sequence[str]) -> list[Any]:
    """For each object, the value of the first of ``keys`` it has (None if none)."""
    if len(keys) == 1:
        k = keys[0]
        return [o.get(k) for o in objects]
    out = []
    for o in objects:
        v = None
        for k in keys:
            if k in o:
                v = o[k]
                break
        out.append(v)
    return out


def _zero_to_none(values: list[Any]) -> list[Any]:
    return [None if (v == 0 or v == "" or v == "0") else v for v in values]


def goflow2_columns(objects: list[dict[str, Any]]) -> dict[str, pa.Array]:
    """Columns named after v1 fields from goflow2 JSON objects (v1 or v2 keys)."""
    cols: dict[str, pa.Array] = {}
    received = pick(objects, GOFLOW2_KEYS["time_received"])
    for fname, keys in GOFLOW2_KEYS.items():
        if fname == "time_received":
            continue
        values = pick(objects, keys)
        if fname in ("time_start", "time_end"):
            starts = _zero_to_none(values)
            values = [r if s is None else s for s, r in zip(starts, received, strict=True)]
        cols[fname] = column(values)
    return cols


def convert_chunks(
    chunks: Iterator[tuple[list[int], Any, list[tuple[int, str]]]],
    to_columns: Any,
    converter: ColumnConverter,
    batch_rows: int,
    label: str = "line",
    bad_reason: str = "bad_json",
) -> Iterator[Batch]:
    """Convert decoded chunks (numbers, records, bad records) into accumulated batches."""
    acc = BatchAccumulator(batch_rows)
    where = converter.source_file
    for numbers, records, bad in chunks:
        extra = invalid_lines_quarantine(where, bad, reason=bad_reason, label=label)
        if numbers:
            cols = to_columns(records)
            batch = converter.convert(
                cols, np.asarray(numbers, dtype=np.int64), label=label, extra_quarantine=extra
            )
        else:
            batch = Batch(empty_table(), extra, records_read=extra.num_rows)
        yield from acc.add(batch)
    yield from acc.flush()


def _converter(path: Path, options: ImportOptions) -> ColumnConverter:
    return ColumnConverter(str(path), now_us=options.get("now_us") or time.time_ns() // 1000)


@register
class Goflow2JsonImporter(Importer):
    """goflow2 JSON lines (v2 snake_case or v1 CamelCase keys), gzip or not."""

    format: ClassVar[str] = "goflow2-json"
    counts: ClassVar[str] = COUNTS_RAW
    description: ClassVar[str] = "goflow2 JSON lines (v1 or v2)"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        line = first_line(head)
        if line is None or not line.startswith("{"):
            return False
        return any(
            key in line for key in ('"sampler_address"', '"time_received_ns"', '"SamplerAddress"')
        )

    def counts_for(self, options: ImportOptions) -> str:
        """Always ``raw``: goflow2 reports sampled counts and the sampling rate."""
        return COUNTS_RAW

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        converter = _converter(path, options)
        yield from convert_chunks(
            json_chunks_fast(path, goflow2_table_columns),
            columns_of(goflow2_columns),
            converter,
            options.batch_rows,
        )


# --------------------------------------------------------------------------- protobuf

#: FlowMessage field numbers (goflow2 v2 ``pb/flow.proto``)
_PB_V2 = {
    110: "time_received",
    111: "time_start",
    112: "time_end",
    11: "exporter",
    9: "bytes",
    10: "packets",
    3: "sampling_rate",
    6: "src_addr",
    7: "dst_addr",
    20: "proto",
    21: "src_port",
    22: "dst_port",
    18: "in_if",
    19: "out_if",
    14: "src_as",
    15: "dst_as",
}
#: goflow2 v1 kept times in seconds under other numbers (38 is ip_flags in v2)
_PB_V1_TIMES = {2: "time_received", 38: "time_start", 5: "time_end"}
_ADDR_FIELDS = {"exporter", "src_addr", "dst_addr"}
_TIME_FIELDS = ("time_received", "time_start", "time_end")
#: field numbers by name, for the column-wise decoder
_PB_V2_NUMBER = {name: number for number, name in _PB_V2.items()}
_PB_V1_NUMBER = {name: number for number, name in _PB_V1_TIMES.items()}
_V4_PREFIX = b"\x00" * 10 + b"\xff\xff"


class _Truncated(Exception):
    pass


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def decode_flow_message(msg: bytes | memoryview) -> dict[str, Any]:
    """Decode one FlowMessage into v1-field values (times in ns, addresses as 16 bytes)."""
    raw: dict[int, Any] = {}
    pos = 0
    n = len(msg)
    while pos < n:
        key, pos = _varint(msg, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(msg, pos)
        elif wire == 2:
            length, pos = _varint(msg, pos)
            if pos + length > n:
                raise ValueError("length-delimited field runs past the message")
            value = bytes(msg[pos : pos + length])
            pos += length
        elif wire == 1:
            pos += 8
            value = None
        elif wire == 5:
            pos += 4
            value = None
        else:
            raise ValueError(f"wire type {wire} not used by FlowMessage")
        if pos > n:
            raise ValueError("field runs past the message")
        if number in raw and number not in _PB_V2:
            continue
        raw.setdefault(number, value)  # repeated fields: keep the first
    return _named_fields(raw)


def _named_fields(raw: dict[int, Any]) -> dict[str, Any]:
    """A FlowMessage's fields by name from its (first) value per field number: v1 times
    (seconds) as ns where no v2 time is set, addresses as 16 bytes (``b"?"``: malformed)."""
    out: dict[str, Any] = {}
    v2 = 110 in raw or 111 in raw
    for number, name in _PB_V2.items():
        if number in raw:
            out[name] = raw[number]
    if not v2:
        for number, name in _PB_V1_TIMES.items():
            if number in raw:
                if not isinstance(raw[number], int):
                    raise ValueError(f"{name} (field {number}) is not a varint")
                out[name] = raw[number] * 1_000_000_000  # seconds -> ns
    for name in _TIME_FIELDS:
        if name in out and not isinstance(out[name], int):
            raise ValueError(f"{name} is not a varint")
    for name in _ADDR_FIELDS:
        if name in out:
            value = out[name]
            if isinstance(value, bytes) and len(value) == 4:
                out[name] = _V4_PREFIX + value
            elif not (isinstance(value, bytes) and len(value) == 16):
                out[name] = b"?"  # marks a bad address
    return out


#: longest length prefix believed: a FlowMessage is a few hundred bytes, so anything longer
#: is a corrupt prefix (or not goflow2 data), and the framing is lost from there on
MAX_MESSAGE = 1 << 20


def iter_delimited(
    source: bytes | IO[bytes], chunk: int = 1 << 20
) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Yield (message number, message bytes or None, problem) for varint-delimited messages.

    Reads ``source`` (bytes or a binary file) a chunk at a time, so memory stays bounded. A
    newline after each message (goflow2's file transport separator) is skipped when the file
    uses one; that is decided on the first message. A length prefix over
    :data:`MAX_MESSAGE` ends the stream with a problem, as a truncated message does.
    """
    fh: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    buf = bytearray()
    pos = 0
    eof = False
    number = 0
    newline_sep: bool | None = None

    def fill(need: int) -> bool:
        """Make sure ``need`` bytes from ``pos`` are buffered (False at end of data)."""
        nonlocal eof, buf, pos
        while len(buf) - pos < need and not eof:
            data = fh.read(chunk)
            if not data:
                eof = True
                break
            if pos > chunk:  # drop what was consumed
                del buf[:pos]
                pos = 0
            buf += data
        return len(buf) - pos >= need

    while fill(1):
        number += 1
        fill(10)
        view = memoryview(buf)
        try:
            length, start = _varint(view, pos)
        except (_Truncated, ValueError):
            view.release()
            yield number, None, "truncated message length"
            return
        view.release()
        if length > MAX_MESSAGE:
            yield number, None, f"implausible message length ({length} bytes)"
            return
        header = start - pos
        if not fill(header + length):
            have = len(buf) - pos - header
            yield number, None, f"truncated message ({have} of {length} bytes)"
            return
        start = pos + header  # fill() may have dropped the consumed bytes and moved pos
        msg = bytes(buf[start : start + length])
        pos = start + length
        yield number, msg, None
        if newline_sep is None:
            fill(1 + _LOOKAHEAD)
            view = memoryview(buf)
            newline_sep = len(buf) > pos and buf[pos] == 0x0A and _next_ok(view, pos + 1, len(buf))
            view.release()
        if newline_sep and fill(1) and buf[pos] == 0x0A:
            pos += 1


_LOOKAHEAD = 1 << 16


def _next_ok(view: memoryview, pos: int, end: int) -> bool:
    """True if a delimited message could start at ``pos`` (or the data ends there)."""
    if pos >= end:
        return True
    try:
        length, start = _varint(view, pos)
    except (_Truncated, ValueError):
        return False
    return start + length <= end


@register
class Goflow2PbImporter(Importer):
    """goflow2 binary output: varint-length-prefixed FlowMessage protobufs."""

    format: ClassVar[str] = "goflow2-pb"
    counts: ClassVar[str] = COUNTS_RAW
    description: ClassVar[str] = "goflow2 protobuf (-format=bin, length-prefixed)"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if path.suffix not in (".pb", ".bin", ".protobuf"):
            return False
        for _, msg, problem in iter_delimited(head):
            if problem is not None or msg is None:
                return False
            try:
                fields = decode_flow_message(msg)
            except (ValueError, _Truncated):
                return False
            return "bytes" in fields or "src_addr" in fields
        return False

    def counts_for(self, options: ImportOptions) -> str:
        """Always ``raw``, as in goflow2's JSON."""
        return COUNTS_RAW

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        converter = _converter(path, options)
        fh = open_binary(path)
        try:
            yield from convert_chunks(
                pb_chunks_compiled(fh, path),
                _pb_columns,
                converter,
                options.batch_rows,
                label="message",
                bad_reason="bad_protobuf",
            )
        finally:
            fh.close()

    @staticmethod
    def _chunks(
        fh: IO[bytes], path: Path
    ) -> Iterator[tuple[list[int], list[dict[str, Any]], list]]:
        """The Python reader's chunks (the oracle of :func:`pb_chunks_compiled`)."""
        numbers: list[int] = []
        records: list[dict[str, Any]] = []
        bad: list[tuple[int, str]] = []
        messages = iter_delimited(fh)
        while True:
            try:
                number, msg, problem = next(messages)
            except StopIteration:
                break
            except (OSError, EOFError) as exc:
                raise InputError(f"{path}: read failed: {exc}") from None
            if msg is None:
                bad.append((number, problem or "unreadable"))
            else:
                try:
                    records.append(decode_flow_message(msg))
                    numbers.append(number)
                except (ValueError, _Truncated) as exc:
                    bad.append((number, f"{exc or 'truncated field'}: {msg[:32].hex()}"))
            if len(numbers) + len(bad) >= JSON_CHUNK_LINES:
                yield numbers, records, bad
                numbers, records, bad = [], [], []
        if numbers or bad:
            yield numbers, records, bad


def _pb_columns(records: list[dict[str, Any]] | dict[str, pa.Array]) -> Mapping[str, pa.Array]:
    if isinstance(records, dict):  # columns the compiled walk made
        return records
    cols: dict[str, pa.Array] = {}
    received = [r.get("time_received") for r in records]
    for name in set(_PB_V2.values()) - {"time_received"}:
        values = [r.get(name) for r in records]
        if name in ("time_start", "time_end"):
            values = [rv if not v else v for v, rv in zip(values, received, strict=True)]
            cols[name] = pa.array(
                [None if v is None else min(v, (1 << 63) - 1) for v in values], pa.int64()
            )
        elif name in _ADDR_FIELDS:
            ok = [v if isinstance(v, bytes) and len(v) == 16 else None for v in values]
            if any(v == b"?" for v in values):  # a wrong-length address: reject as text
                cols[name] = pa.array(
                    [
                        (v.hex() if v == b"?" else _fmt16(v)) if v is not None else None
                        for v in values
                    ],
                    pa.string(),
                )
            else:
                cols[name] = pa.array(ok, pa.binary(16))
        else:
            cols[name] = column(values)
    return cols


def _fmt16(v: bytes) -> str:
    import ipaddress

    addr = ipaddress.IPv6Address(v)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


# --------------------------------------------------------------------------- compiled walk

#: bytes read at a time by the compiled walk (a multiple of ``iter_delimited``'s chunk, so the
#: newline-separator decision sees the same bytes)
PB_BLOCK = 8 << 20


def _newline_separated(head: bytes | bytearray, eof: bool) -> bool | None:
    """``iter_delimited``'s decision, from the first bytes of a stream: is every message
    followed by a newline? False when the first message's framing is broken (the stream ends
    there, the decision never matters); None when more of the stream is needed to decide."""
    view = memoryview(head)
    try:
        length, start = _varint(view, 0)
    except _Truncated:
        return False if eof else None
    except ValueError:
        return False
    end = start + length
    if length > MAX_MESSAGE:
        return False
    # iter_delimited reads 1 MiB at a time until 64 KiB past the first message are buffered
    chunk = 1 << 20
    buffered = -(-(end + 1 + _LOOKAHEAD) // chunk) * chunk
    if buffered > len(head) and not eof:
        return None
    buffered = min(buffered, len(head))
    return buffered > end and head[end] == 0x0A and _next_ok(view, end + 1, buffered)


def _framing_problem(data: bytes | bytearray, pos: int) -> str:
    """What ``iter_delimited`` says of the message at ``pos`` whose framing is broken."""
    view = memoryview(data)
    end = len(data)
    try:
        length, start = _varint(view, pos)
    except (_Truncated, ValueError):
        return "truncated message length"
    if length > MAX_MESSAGE:
        return f"implausible message length ({length} bytes)"
    return f"truncated message ({end - start} of {length} bytes)"


class _PbChunk:
    """Output arrays of the compiled walk for one chunk of messages."""

    def __init__(self, rows: int) -> None:
        from flowatlas.io.importers.goflow2_scan import ADDRESS_FIELDS, NUMERIC_FIELDS

        self.values = np.zeros((rows, len(NUMERIC_FIELDS)), np.uint64)
        self.present = np.zeros((rows, len(NUMERIC_FIELDS)), np.bool_)
        self.addr = np.zeros((rows, len(ADDRESS_FIELDS), 16), np.uint8)
        self.addr_present = np.zeros((rows, len(ADDRESS_FIELDS)), np.bool_)
        self.status = np.zeros(rows, np.int8)
        self.msg_start = np.zeros(rows, np.int64)
        self.msg_len = np.zeros(rows, np.int64)
        #: decode_flow_message's result (or error) for each slow message, by row
        self.slow: dict[int, dict[str, Any] | str] = {}


def pb_chunks_compiled(
    fh: IO[bytes], path: Path, chunk_messages: int | None = None, block: int = PB_BLOCK
) -> Iterator[tuple[list[int], Any, list[tuple[int, str]]]]:
    """(message numbers, records, bad messages) per ``chunk_messages`` messages, as
    ``Goflow2PbImporter._chunks`` yields them, read by the compiled walk.

    ``records`` is a dict of columns when every good message was walked, else a list of
    decoded messages (as the Python reader gives them) for :func:`_pb_columns`.
    """
    from flowatlas.io.importers.goflow2_scan import (
        BROKEN,
        END,
        FULL,
        SLOW,
        field_slots,
        walk_messages,
    )

    slots = field_slots()
    chunk_messages = chunk_messages or JSON_CHUNK_LINES

    def read() -> bytes:
        try:
            return fh.read(block)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: read failed: {exc}") from None

    data = bytearray(read())
    eof = not data
    while (newline_sep := _newline_separated(data, eof)) is None:
        more = read()
        eof = not more
        data += more
    pos, pending, number = 0, False, 0
    chunk = _PbChunk(chunk_messages)
    row = 0
    problem: str | None = None
    while True:
        buf = np.frombuffer(data, np.uint8)
        pos, row2, pending, state = walk_messages(
            buf, pos, len(data), eof, newline_sep, pending, slots, row, chunk.values,
            chunk.present, chunk.addr, chunk.addr_present, chunk.status, chunk.msg_start,
            chunk.msg_len,
        )  # fmt: skip
        for r in np.flatnonzero(chunk.status[row:row2] == SLOW) + row:
            msg = bytes(data[chunk.msg_start[r] : chunk.msg_start[r] + chunk.msg_len[r]])
            try:
                chunk.slow[int(r)] = decode_flow_message(msg)
            except (ValueError, _Truncated) as exc:
                chunk.slow[int(r)] = f"{exc or 'truncated field'}: {msg[:32].hex()}"
        row = row2
        del buf
        if state == BROKEN:
            problem = _framing_problem(data, pos)
        if state == FULL or state == END or state == BROKEN:
            if row or problem is not None:
                yield _pb_chunk_out(chunk, row, number, problem)
                number += row + (problem is not None)
            if state != FULL:
                return
            chunk, row = _PbChunk(chunk_messages), 0
            continue
        # NEED_MORE: drop what was walked, read on
        del data[:pos]
        pos = 0
        more = read()
        eof = not more
        data += more


def _pb_chunk_out(
    chunk: _PbChunk, rows: int, first: int, problem: str | None
) -> tuple[list[int], Any, list[tuple[int, str]]]:
    """One chunk's (numbers, records, bad), numbering messages from ``first + 1``."""
    bad: list[tuple[int, str]] = []
    good = np.ones(rows, np.bool_)
    mixed = False
    for r, got in sorted(chunk.slow.items()):
        if isinstance(got, str):
            good[r] = False
            bad.append((first + r + 1, got))
        else:
            mixed = True
    if problem is not None:
        bad.append((first + rows + 1, problem))
    idx = np.flatnonzero(good)
    numbers = (idx + first + 1).tolist()
    if not len(idx):
        return numbers, [], bad
    if mixed:
        records = [
            chunk.slow[int(r)] if int(r) in chunk.slow else _pb_row_dict(chunk, int(r)) for r in idx
        ]
        return numbers, records, bad
    return numbers, _pb_arrays(chunk, idx), bad


def _pb_row_dict(chunk: _PbChunk, r: int) -> dict[str, Any]:
    """A walked message as ``decode_flow_message`` gives it."""
    from flowatlas.io.importers.goflow2_scan import ADDRESS_FIELDS, NUMERIC_FIELDS

    raw: dict[int, Any] = {}
    for s, number in enumerate(NUMERIC_FIELDS):
        if chunk.present[r, s]:
            raw[number] = int(chunk.values[r, s])
    for a, number in enumerate(ADDRESS_FIELDS):
        if chunk.addr_present[r, a]:
            raw[number] = chunk.addr[r, a].tobytes()
    return _named_fields(raw)


_INT64_MAX = (1 << 63) - 1


def _pb_arrays(chunk: _PbChunk, idx: np.ndarray) -> dict[str, pa.Array]:
    """The columns :func:`_pb_columns` makes of these walked messages (none of them slow)."""
    from flowatlas.io.importers.goflow2_scan import ADDRESS_FIELDS, NUMERIC_FIELDS

    slot = {number: s for s, number in enumerate(NUMERIC_FIELDS)}
    values = chunk.values[idx]
    present = chunk.present[idx]

    def field(number: int) -> tuple[np.ndarray, np.ndarray]:
        return values[:, slot[number]], present[:, slot[number]]

    v2 = present[:, slot[110]] | present[:, slot[111]]
    times: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in _TIME_FIELDS:
        val, has = field(_PB_V2_NUMBER[name])
        val1, has1 = field(_PB_V1_NUMBER[name])
        use1 = ~v2 & has1
        # seconds -> ns, capped as _pb_columns caps every time (min(v, 2^63 - 1))
        ns1 = np.where(
            val1 > np.uint64(_INT64_MAX // 1_000_000_000),
            np.uint64(_INT64_MAX),
            val1 * np.uint64(1_000_000_000),
        )
        times[name] = (np.where(use1, ns1, val), np.where(use1, True, has))
    cols: dict[str, pa.Array] = {}
    rv, rh = times["time_received"]
    for name in ("time_start", "time_end"):
        v, h = times[name]
        take = ~h | (v == 0)  # absent or 0: the time goflow2 received it
        v, h = np.where(take, rv, v), np.where(take, rh, h)
        v = np.minimum(v, np.uint64(_INT64_MAX)).astype(np.int64)
        cols[name] = pa.array(v, pa.int64(), mask=~h)
    for a, number in enumerate(ADDRESS_FIELDS):
        name = _PB_V2[number]
        data = np.ascontiguousarray(chunk.addr[idx, a])
        has = chunk.addr_present[idx, a]
        arr = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(16), len(idx), [None, pa.py_buffer(data)]
        )
        if not has.all():
            arr = pc.if_else(pa.array(has), arr, pa.scalar(None, pa.binary(16)))
        cols[name] = arr
    for number, name in _PB_V2.items():
        if name in cols or name == "time_received":
            continue
        v, h = field(number)
        if not h.any():
            cols[name] = pa.nulls(len(idx))
        elif (v[h] > np.uint64(_INT64_MAX)).any():  # as column() does with such ints
            cols[name] = column([int(x) if p else None for x, p in zip(v, h, strict=True)])
        else:
            cols[name] = pa.array(v.astype(np.int64), pa.int64(), mask=~h)
    return cols


# --------------------------------------------------------------------------- JSON lines, fast

#: bytes the JSON-lines fast path reads at a time
JSON_BLOCK = 16 << 20


class NotPlain(Exception):
    """A chunk the fast JSON path cannot read as the Python reader would: it takes that path."""


def _lines_objects(
    data: bytes | bytearray, lines: list[tuple[int, int, int]]
) -> tuple[list[int], list[dict[str, Any]], list[tuple[int, str]]]:
    """What :func:`read_json_lines` makes of these lines: (line number, start, end) each,
    ``end`` past the newline where there is one."""
    numbers: list[int] = []
    objects: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for lineno, start, end in lines:
        raw = bytes(data[start:end])
        if raw.strip():
            _read_line(lineno, raw, numbers, objects, bad)
    return numbers, objects, bad


def json_chunks_fast(
    path: Path,
    table_columns: Any,
    chunk_lines: int | None = None,
    block: int = JSON_BLOCK,
) -> Iterator[tuple[list[int], Any, list[tuple[int, str]]]]:
    """:func:`read_json_lines`'s chunks, read by ``pyarrow.json`` where that is exact.

    Each chunk of ``chunk_lines`` non-blank lines is parsed by ``pyarrow.json`` and turned
    into columns by ``table_columns(table)``, which raises :class:`NotPlain` where the result
    could differ from the Python reader's (a type it would keep as text, keys it would pick
    row by row). Such a chunk, and any chunk ``pyarrow.json`` refuses or reads into another
    number of rows (a bad line, two objects on a line), is read line by line as before: its
    records are a list of objects then, its bad lines named by number.
    """
    from flowatlas.io.importers.goflow2_scan import line_table

    chunk_lines = chunk_lines or JSON_CHUNK_LINES
    fh = open_binary(path)
    data = bytearray()
    eof = False
    first_line = 1  # the number of data's first line
    cap = 1 << 16
    per_line = 0.0  # bytes per line in the last chunk
    text_keys: set[str] = set()

    def read(size: int) -> bytes:
        try:
            return fh.read(size)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"{path}: read failed: {exc}") from None

    try:
        while True:
            short = int(per_line * chunk_lines * 1.05) - len(data)
            if not eof and per_line and short > 0:  # less than a chunk at the last chunk's rate
                more = read(max(block, short))
                eof = not more
                data += more
            buf = np.frombuffer(data, np.uint8)
            starts = np.empty(cap, np.int64)
            ends = np.empty_like(starts)
            kinds = np.empty(len(starts), np.int8)
            n = line_table(buf, eof, starts, ends, kinds)
            del buf
            nonblank = np.flatnonzero(kinds[:n] != 0)
            if len(nonblank) < chunk_lines and n == len(starts):
                cap *= 2  # many blank lines: list more of them
                continue
            if len(nonblank) < chunk_lines and not eof:
                # enough for the rest of the chunk at once, so its lines are listed once
                more = read(max(block, int(per_line * (chunk_lines - len(nonblank)) * 1.05)))
                eof = not more
                data += more
                continue
            if not len(nonblank):
                return
            last = int(nonblank[min(chunk_lines, len(nonblank)) - 1])
            stop = np.minimum(ends[: last + 1] + 1, len(data))
            yield _json_chunk(
                data,
                first_line,
                starts[: last + 1],
                stop,
                kinds[: last + 1],
                table_columns,
                text_keys,
            )
            first_line += last + 1
            per_line = max(1.0, int(stop[-1]) / (last + 1))
            del data[: int(stop[-1])]
            if eof and not data:
                return
    finally:
        fh.close()


def _json_chunk(
    data: bytearray,
    first_line: int,
    starts: np.ndarray,
    stops: np.ndarray,
    kinds: np.ndarray,
    table_columns: Any,
    text_keys: set[str],
) -> tuple[list[int], Any, list[tuple[int, str]]]:
    """One chunk of lines (``stops`` past the newline), through ``pyarrow.json`` where exact,
    else line by line; ``first_line`` is the number of the first. ``text_keys``: keys whose
    values pyarrow took for times (in this chunk or an earlier one), read as text."""
    from flowatlas.io.importers.goflow2_scan import MAX_DEPTH, OBJECT, OTHER

    if not (kinds == OTHER).any():
        numbers = (np.flatnonzero(kinds == OBJECT) + first_line).tolist()
        view = memoryview(data)[int(starts[0]) : int(stops[-1])]
        try:
            table = _read_json_text(view, text_keys)
            dated = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
            if dated:  # pyarrow took text for times: read it again, keeping the text
                text_keys.update(dated)
                table = _read_json_text(view, text_keys)
            deep = max((type_depth(f.type) for f in table.schema), default=0) > MAX_DEPTH
            if table.num_rows == len(numbers) and not deep:
                return numbers, table_columns(table), []
        except (pa.ArrowInvalid, UnicodeDecodeError, NotPlain):
            pass
        finally:
            view.release()  # data is resized after
    lines = [
        (first_line + i, int(s), int(e)) for i, (s, e) in enumerate(zip(starts, stops, strict=True))
    ]
    return _lines_objects(data, lines)


def type_depth(t: pa.DataType) -> int:
    """How deeply an Arrow type nests lists and structs (a plain value: 0), without
    recursion (pyarrow.json reads thousands of levels)."""
    deepest = 0
    todo = [(t, 0)]
    while todo:
        t, depth = todo.pop()
        deepest = max(deepest, depth)
        if pa.types.is_struct(t):
            todo += [(t.field(i).type, depth + 1) for i in range(t.num_fields)]
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            todo.append((t.value_type, depth + 1))
    return deepest


def _read_json_text(view: memoryview, text_keys: set[str]) -> pa.Table:
    """``pyarrow.json`` of JSON lines; ``text_keys`` stay text (pyarrow would make times of
    some), and a key of them no line holds comes back as nulls."""
    import pyarrow.json as pajson

    parse = pajson.ParseOptions(
        explicit_schema=pa.schema([(k, pa.string()) for k in sorted(text_keys)])
        if text_keys
        else None
    )
    return pajson.read_json(
        pa.BufferReader(pa.py_buffer(view)),
        read_options=pajson.ReadOptions(block_size=1 << 22),
        parse_options=parse,
    )


_PLAIN_TYPES = (pa.int64(), pa.string(), pa.null())


def plain_column(table: pa.Table, name: str) -> pa.Array:
    """A column of a ``pyarrow.json`` table, if :func:`column` would make the same of the
    Python reader's values (integers that fit, text, nothing); else :class:`NotPlain`."""
    col = table.column(name)
    if col.type not in _PLAIN_TYPES:
        raise NotPlain(name)
    if col.null_count == len(col):  # the Python reader's None everywhere: a null column
        return pa.nulls(len(col))
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_string(arr.type):
        arr.validate(full=True)  # pyarrow.json passes bytes that are no UTF-8, json refuses them
    return arr


def _picked(table: pa.Table, keys: Sequence[str]) -> pa.Array:
    """:func:`pick` then :func:`column`, on a table: the one of ``keys`` it holds."""
    held = [k for k in keys if k in table.column_names]
    if len(held) > 1:
        raise NotPlain(f"both {held}: the Python reader picks row by row")
    if not held:
        return pa.nulls(table.num_rows)
    return plain_column(table, held[0])


def _start_or_received(start: pa.Array, received: pa.Array) -> pa.Array:
    """``[r if s in (0, "", "0", None) else s]`` as :func:`goflow2_columns` makes it."""
    n = len(start)
    if pa.types.is_null(start.type):
        out = received
    else:
        if pa.types.is_integer(start.type):
            unset = pc.equal(start, 0)
        else:
            unset = pc.is_in(start, pa.array(["", "0"]))
        unset = pc.fill_null(unset, True)
        if pa.types.is_null(received.type):
            out = pc.if_else(unset, pa.scalar(None, start.type), start)
        elif received.type == start.type:
            out = pc.if_else(unset, received, start)
        elif pc.all(pc.or_(pc.invert(unset), pc.is_null(received))).as_py() is not False:
            out = pc.if_else(unset, pa.scalar(None, start.type), start)
        else:
            raise NotPlain("start and received times of two types")
    if out.null_count == n:
        return pa.nulls(n)
    return out


def goflow2_table_columns(table: pa.Table) -> dict[str, pa.Array]:
    """:func:`goflow2_columns` of a ``pyarrow.json`` table (or :class:`NotPlain`)."""
    cols: dict[str, pa.Array] = {}
    received = _picked(table, GOFLOW2_KEYS["time_received"])
    for fname, keys in GOFLOW2_KEYS.items():
        if fname == "time_received":
            continue
        values = _picked(table, keys)
        if fname in ("time_start", "time_end"):
            values = _start_or_received(values, received)
        cols[fname] = values
    return cols


def columns_of(objects_columns: Any) -> Any:
    """``to_columns`` for :func:`convert_chunks` over :func:`json_chunks_fast`: its columns
    as they are, its lists of objects through ``objects_columns`` (the Python reader's)."""

    def to_columns(records: Any) -> Mapping[str, pa.Array]:
        return records if isinstance(records, dict) else objects_columns(records)

    return to_columns
