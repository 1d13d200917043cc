"""A compiled walk over goflow2's length-delimited protobuf stream into typed columns.

The wire-format reader in ``goflow2.py`` decodes one ``FlowMessage`` at a time into a Python
dict (about 50 k messages per CPU-second). :func:`walk_messages` walks a whole buffer of
varint-length-prefixed messages in one numba pass and writes the fields flowatlas keeps
straight into arrays: one uint64 and a presence flag per numeric field, 16 bytes per address
(IPv4 mapped), first occurrence winning as in the Python reader.

The walk accepts only what it is sure the Python reader decodes the same way. A message with
anything else (a decoding error, a value of 2^64 or more, a kept field of an unexpected wire
type, an address of neither 4 nor 16 bytes) is marked *slow*: the caller decodes it with the
Python reader, which gives its exact result or its exact error. Framing (the length prefixes,
goflow2's optional newline after each message) follows ``iter_delimited``; where the framing
breaks, the walk stops and the caller words the problem as ``iter_delimited`` does. Bailing
out is always exact: it only costs speed.
"""

from __future__ import annotations

import numba
import numpy as np

from flowatlas import kernel_cache

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

#: FlowMessage field number -> slot of the numeric outputs (goflow2 v2 numbers, then the
#: v1 time fields in seconds)
NUMERIC_FIELDS: tuple[int, ...] = (110, 111, 112, 9, 10, 3, 20, 21, 22, 18, 19, 14, 15, 2, 38, 5)
#: FlowMessage field number -> slot of the address outputs
ADDRESS_FIELDS: tuple[int, ...] = (11, 6, 7)
#: the longest length prefix believed (``goflow2.MAX_MESSAGE``)
MAX_MESSAGE = 1 << 20

#: what a call of :func:`walk_messages` ended with
NEED_MORE, FULL, END, BROKEN = 0, 1, 2, 3
#: what became of each message
FAST, SLOW = 0, 1


def field_slots() -> np.ndarray:
    """Field number -> slot: 0..15 numeric, 16..18 address, -1 not kept (numbers < 128)."""
    slots = np.full(128, -1, dtype=np.int16)
    for i, number in enumerate(NUMERIC_FIELDS):
        slots[number] = i
    for i, number in enumerate(ADDRESS_FIELDS):
        slots[number] = len(NUMERIC_FIELDS) + i
    return slots


@numba.njit(cache=True, nogil=True)
def _varint(buf, pos, end):  # pragma: no cover - compiled
    """(value, next position, state): state 0 ok, 1 ran past ``end``, 2 too long, 3 >= 2^64.

    As ``goflow2._varint``: at most 10 bytes; the 10th may only carry bit 63 to fit.
    """
    result = np.uint64(0)
    shift = 0
    while True:
        if pos >= end:
            return result, pos, 1
        b = np.uint64(buf[pos])
        pos += 1
        if shift == 63 and (b & np.uint64(0x7F)) > np.uint64(1):
            return result, pos, 3
        result |= (b & np.uint64(0x7F)) << np.uint64(shift)
        if not b & np.uint64(0x80):
            return result, pos, 0
        shift += 7
        if shift > 63:
            return result, pos, 2


@numba.njit(cache=True, nogil=True)
def _decode(buf, start, end, slots, values, present, addr, addr_present, row):  # pragma: no cover
    """Decode one message into row ``row``; False if the Python reader must decode it."""
    n_numeric = values.shape[1]
    pos = start
    while pos < end:
        key, pos, st = _varint(buf, pos, end)
        if st != 0:
            return False
        number = key >> np.uint64(3)
        wire = key & np.uint64(7)
        slot = -1
        if number < np.uint64(128):
            slot = slots[number]
        if wire == 0:
            value, pos, st = _varint(buf, pos, end)
            if st != 0:
                return False
            if slot >= 0:
                if slot >= n_numeric:
                    a = slot - n_numeric
                    if not addr_present[row, a]:
                        return False  # first occurrence not bytes: the reader marks it bad
                elif not present[row, slot]:
                    values[row, slot] = value
                    present[row, slot] = True
        elif wire == 2:
            length, pos, st = _varint(buf, pos, end)
            if st != 0 or length > np.uint64(end - pos):
                return False
            ln = np.int64(length)
            if slot >= 0:
                if slot < n_numeric:
                    if not present[row, slot]:
                        return False  # a kept number as bytes: the reader keeps it as text
                else:
                    a = slot - n_numeric
                    if not addr_present[row, a]:
                        if ln == 16:
                            for k in range(16):
                                addr[row, a, k] = buf[pos + k]
                        elif ln == 4:
                            for k in range(10):
                                addr[row, a, k] = 0
                            addr[row, a, 10] = 0xFF
                            addr[row, a, 11] = 0xFF
                            for k in range(4):
                                addr[row, a, 12 + k] = buf[pos + k]
                        else:
                            return False  # neither IPv4 nor IPv6: the reader marks it bad
                        addr_present[row, a] = True
            pos += ln
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            if pos > end:
                return False
            if slot >= 0:
                if slot < n_numeric:
                    if not present[row, slot]:
                        return False  # the reader keeps None for it
                elif not addr_present[row, slot - n_numeric]:
                    return False
        else:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def walk_messages(
    buf, pos, end, at_eof, newline_sep, pending_nl, slots, row, values, present, addr,
    addr_present, status, msg_start, msg_len,
):  # pragma: no cover - compiled  # fmt: skip
    """Walk messages of ``buf[pos:end]`` into rows ``row``.. of the output arrays.

    Returns (position, next row, pending newline, state): ``NEED_MORE`` (a message runs
    past ``end`` and more data may come), ``FULL`` (every output row used), ``END`` (the data
    ended cleanly at ``end``) or ``BROKEN`` (the framing breaks at the position returned: the
    caller words the problem). ``pending_nl``: a message just ended and, in a
    newline-separated stream, one newline after it is skipped.
    """
    cap = values.shape[0]
    while True:
        if pending_nl:
            if pos >= end:
                if at_eof:
                    return pos, row, False, END
                return pos, row, True, NEED_MORE
            if buf[pos] == 0x0A:
                pos += 1
            pending_nl = False
        if pos >= end:
            return pos, row, False, END if at_eof else NEED_MORE
        if row >= cap:
            return pos, row, False, FULL
        length, body, st = _varint(buf, pos, end)
        if st == 1 and not at_eof:
            return pos, row, False, NEED_MORE
        if st != 0 or length > np.uint64(MAX_MESSAGE):
            return pos, row, False, BROKEN
        ln = np.int64(length)
        if body + ln > end:
            return pos, row, False, BROKEN if at_eof else NEED_MORE
        for s in range(values.shape[1]):
            present[row, s] = False
        for a in range(addr_present.shape[1]):
            addr_present[row, a] = False
        ok = _decode(buf, body, body + ln, slots, values, present, addr, addr_present, row)
        status[row] = 0 if ok else 1
        msg_start[row] = body
        msg_len[row] = ln
        row += 1
        pos = body + ln
        pending_nl = newline_sep


# --------------------------------------------------------------------------- JSON lines

#: what a line of a JSON-lines file is, to the fast path
BLANK, OBJECT, OTHER = 0, 1, 2
#: chunks nesting arrays or objects deeper than this go to the Python reader (whose json
#: module stops at the recursion limit, about 1000 levels, where pyarrow.json reads on)
MAX_DEPTH = 100


def line_table(
    buf: np.ndarray, at_eof: bool, starts: np.ndarray, ends: np.ndarray, kinds: np.ndarray
) -> int:
    """Split ``buf`` at newlines into lines (``ends`` exclude the newline); returns how many.

    Only whole lines are listed, and at the end of the data (``at_eof``) the last one without
    its newline. Each line's kind: ``BLANK`` (only the bytes ``bytes.strip()`` removes, which
    the Python reader skips), ``OBJECT`` (after JSON whitespace it opens with ``{``) or
    ``OTHER``. Stops when ``starts`` is full.
    """
    newlines = np.flatnonzero(buf == 10)  # vectorised: the lines' ends in one pass
    return _line_kinds(buf, newlines, at_eof, starts, ends, kinds)


@numba.njit(cache=True, nogil=True)
def _line_kinds(buf, newlines, at_eof, starts, ends, kinds):  # pragma: no cover - compiled
    n = 0
    cap = starts.shape[0]
    size = buf.shape[0]
    start = 0
    k = 0
    while n < cap:
        if k < newlines.shape[0]:
            end = newlines[k]
            k += 1
        elif at_eof and start < size:
            end = size
        else:
            return n
        kind = BLANK
        if end > start and buf[start] == 123:
            kind = OBJECT  # the common case: a line opening with {
        else:
            for pos in range(start, end):
                c = buf[pos]
                if not (c == 32 or c == 9 or c == 13 or c == 11 or c == 12):
                    kind = OBJECT if c == 123 else OTHER
                    if kind == OBJECT:
                        # a leading \v or \f is not JSON whitespace: json.loads refuses it
                        for q in range(start, pos):
                            if buf[q] == 11 or buf[q] == 12:
                                kind = OTHER
                    break
        starts[n] = start
        ends[n] = end
        kinds[n] = kind
        n += 1
        start = end + 1
    return n
