"""A compiled fast path for plain CSV flow files: one numba pass over a block's bytes.

pyarrow's CSV reader splits text into string columns, and every field is then parsed a second
time (ISO timestamps, addresses, integers) by the column converter: two passes and several
copies per field. Most flow CSVs are plain: ASCII, one record per line, numbers as digits,
ISO times, addresses as text. For those, :func:`scan_block` tokenizes a block of whole lines
and parses the mapped fields straight into typed arrays, which the column converter then checks
as it checks any typed column (same ranges, same reasons).

The fast path accepts only what it is sure the text path reads the same way. Anything else
in a block (a quote around a delimiter or a newline, a doubled quote, a byte outside printable
ASCII, an empty line, a wrong number of fields, an empty or signed number, 20 digits or more,
a time not in the form ``YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z]`` between 1900 and 2199, an
address that does not parse) makes the whole block *not plain*, and the caller reads that
block and the rest of the file through the text path. Bailing out is always exact: it only
costs speed.
"""

from __future__ import annotations

import numba
import numpy as np

from flowatlas import kernel_cache
from flowatlas.addresses import _parse_one, _parse_v4

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

#: what a CSV column becomes: skipped, an ISO time, an address or an unsigned integer
SKIP, TIME, ADDRESS, UINT = 0, 1, 2, 3
#: years the fast path parses (inside the nanosecond range the text path casts through)
MIN_YEAR, MAX_YEAR = 1900, 2199
#: digits the fast path parses (below 2^64 whatever they are); longer numbers take the text path
MAX_DIGITS = 19


@numba.njit(cache=True, nogil=True)
def _days_from_civil(y, m, d):  # pragma: no cover - compiled
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@numba.njit(cache=True, nogil=True)
def _digits(data, at, count):  # pragma: no cover - compiled
    """The number written by ``count`` ASCII digits at ``at``, or -1 if one is not a digit."""
    v = 0
    for i in range(at, at + count):
        c = int(data[i])
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@numba.njit(cache=True, nogil=True)
def _parse_time(data, s, e):  # pragma: no cover - compiled
    """``YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z]`` in data[s:e] as UTC microseconds; ok flag."""
    n = e - s
    if n < 19 or n > 30:
        return np.int64(0), False
    if data[s + 4] != 45 or data[s + 7] != 45 or data[s + 13] != 58 or data[s + 16] != 58:
        return np.int64(0), False
    if data[s + 10] != 84 and data[s + 10] != 32:  # 'T' or ' '
        return np.int64(0), False
    year = _digits(data, s, 4)
    month = _digits(data, s + 5, 2)
    day = _digits(data, s + 8, 2)
    hour = _digits(data, s + 11, 2)
    minute = _digits(data, s + 14, 2)
    second = _digits(data, s + 17, 2)
    if year < MIN_YEAR or year > MAX_YEAR or month < 1 or month > 12 or day < 1:
        return np.int64(0), False
    if hour < 0 or hour > 23 or minute < 0 or minute > 59 or second < 0 or second > 59:
        return np.int64(0), False
    leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
    dim = 31
    if month == 2:
        dim = 29 if leap else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        dim = 30
    if day > dim:
        return np.int64(0), False
    i = s + 19
    if i < e and data[e - 1] == 90:  # 'Z'
        e -= 1
    frac_ns = 0
    if i < e:
        if data[i] != 46:  # '.'
            return np.int64(0), False
        nd = e - i - 1
        if nd < 1 or nd > 9:
            return np.int64(0), False
        f = _digits(data, i + 1, nd)
        if f < 0:
            return np.int64(0), False
        for _ in range(9 - nd):
            f *= 10
        frac_ns = f
    days = _days_from_civil(year, month, day)
    secs = days * 86400 + hour * 3600 + minute * 60 + second
    ns = np.int64(secs) * np.int64(1_000_000_000) + np.int64(frac_ns)
    return ns // np.int64(1000), True


@numba.njit(cache=True, nogil=True)
def _parse_uint(data, s, e):  # pragma: no cover - compiled
    """Plain decimal digits (1 to MAX_DIGITS of them) in data[s:e]; ok flag."""
    n = e - s
    if n < 1 or n > MAX_DIGITS:
        return np.uint64(0), False
    v = np.uint64(0)
    for i in range(s, e):
        c = data[i]
        if c < 48 or c > 57:
            return np.uint64(0), False
        v = v * np.uint64(10) + np.uint64(c - 48)
    return v, True


#: byte classes of the tokenizer (:func:`byte_classes`)
_PLAIN, _DELIM, _LF, _CR, _QUOTE, _OTHER = 0, 1, 2, 3, 4, 5


def byte_classes(delimiter: int) -> np.ndarray:
    """The tokenizer's class of each byte value: printable ASCII is plain, except the
    delimiter, the double quote; line ends are themselves; the rest (controls, bytes of
    UTF-8 sequences) is other, which makes a block not plain."""
    lut = np.full(256, _OTHER, dtype=np.uint8)
    lut[32:127] = _PLAIN
    lut[34] = _QUOTE
    lut[10] = _LF
    lut[13] = _CR
    lut[delimiter] = _DELIM
    return lut


@numba.njit(cache=True, nogil=True)
def _parse_address(data, s, e):  # pragma: no cover - compiled
    """An address in data[s:e]: a dotted quad directly, anything else through _parse_one."""
    v, ok = _parse_v4(data, s, e)
    if ok:  # no ':' in it, so _parse_one would read it the same way
        return np.uint64(0), np.uint64(0xFFFF00000000) | np.uint64(v), True
    return _parse_one(data, s, e)


@numba.njit(cache=True, nogil=True)
def _plain_run(data, i, lut):  # pragma: no cover - compiled
    """Where the plain bytes from ``i`` end, and the class of the byte there (LF at the end)."""
    n = data.size
    while i < n:
        cls = lut[data[i]]
        if cls != _PLAIN:
            return i, cls
        i += 1
    return n, _LF


@numba.njit(cache=True, nogil=True)
def scan_block(data, lut, kinds, slots, times, hi, lo, uints):  # pragma: no cover - compiled
    """Parse the whole lines in ``data`` (uint8) into the output arrays; return (rows, plain).

    ``lut`` is :func:`byte_classes` of the delimiter. ``kinds[c]`` says what CSV column ``c``
    is (SKIP, TIME, ADDRESS, UINT) and ``slots[c]`` which row of ``times``, ``hi``/``lo`` or
    ``uints`` (each [slot, row], all with the same number of rows: the block's capacity) it
    fills. Every line must hold ``len(kinds)`` fields and end with ``\\n`` or ``\\r\\n`` (the
    last one may end at the end of ``data``). ``plain`` is False as soon as anything is not
    plain (see the module docstring); the outputs are then meaningless.
    """
    n = data.size
    ncols = kinds.size
    capacity = uints.shape[1]
    row = 0
    i = 0
    while i < n:
        if row >= capacity:
            return row, False
        for c in range(ncols):
            # ---- one field: [s, e) its content; i ends on what follows it
            if i < n and data[i] == 34:  # a quoted field, plain inside
                s = i + 1
                e, cls = _plain_run(data, s, lut)
                if cls != _QUOTE:
                    return row, False
                i = e + 1
                cls = lut[data[i]] if i < n else _LF
            else:
                s = i
                e, cls = _plain_run(data, s, lut)
                i = e
            # ---- what follows: the delimiter, or the end of the line after the last field
            if c < ncols - 1:
                if cls != _DELIM:
                    return row, False
                i += 1
            elif cls == _CR:
                if i + 1 >= n or data[i + 1] != 10:
                    return row, False
                i += 2
            elif cls == _LF:
                i += 1
            else:
                return row, False
            kind = kinds[c]
            if kind == SKIP:
                continue
            if kind == TIME:
                t, ok = _parse_time(data, s, e)
                times[slots[c], row] = t
            elif kind == ADDRESS:
                h, low, ok = _parse_address(data, s, e)
                hi[slots[c], row] = h
                lo[slots[c], row] = low
            else:
                v, ok = _parse_uint(data, s, e)
                uints[slots[c], row] = v
            if not ok:
                return row, False
        row += 1
    return row, True


__all__ = ["ADDRESS", "SKIP", "TIME", "UINT", "byte_classes", "scan_block"]
