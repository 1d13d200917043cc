"""goflow2 protobuf files larger than one read chunk: every message survives the boundaries.

Found by bench/bench_import.py: a 1 M-message file imported 29,794 records. When reading the
next message needed more data, the reader dropped the bytes already consumed and kept using
the message's start offset from before, so the message at the first chunk boundary was
mis-framed and the rest of the file was lost.
"""

from __future__ import annotations

import io

from flowatlas.io.importers.goflow2 import decode_flow_message, iter_delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_messages_across_many_chunks():
    messages = []
    for i in range(20_000):
        body = (
            b"\x08\x04"
            + _varint(9 << 3) + _varint(1000 + i)  # bytes
            + _varint(10 << 3) + _varint(1 + i % 7)  # packets
            + _varint(6 << 3 | 2) + b"\x04" + bytes([10, 0, i % 256, i // 256 % 256])
        )  # fmt: skip
        messages.append(_varint(len(body)) + body)
    data = b"".join(messages)
    for chunk in (64, 1000, 4096):  # many boundaries, inside prefixes and bodies
        got = list(iter_delimited(io.BytesIO(data), chunk=chunk))
        assert [p for _, _, p in got] == [None] * 20_000, chunk
        decoded = [decode_flow_message(m) for _, m, _ in got]
        assert [d["bytes"] for d in decoded] == [1000 + i for i in range(20_000)]
