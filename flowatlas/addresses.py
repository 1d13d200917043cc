"""IP addresses as flowatlas stores them, and vectorised conversions between forms.

Every address is 128 bits. IPv4 is stored IPv4-mapped (``::ffff:a.b.c.d``), as ClickHouse
and Akvorado do, so one column and one kernel serve both families. Three forms exist:

- text: ``"192.0.2.1"``, ``"2001:db8::1"`` (what people and CSV files use);
- 16 bytes, network order: the archive's ``fixed_size_binary(16)`` columns;
- ``(hi, lo)``: two ``uint64`` arrays, the upper and lower 64 bits, which kernels use.

All conversions work on whole arrays (NumPy views or numba loops over Arrow buffers), never
per row in Python, because archives hold billions of addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numba
import numpy as np
import pyarrow as pa

from flowatlas import kernel_cache
from flowatlas.errors import FlowatlasError

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

V4_MAPPED_HI = np.uint64(0)
V4_MAPPED_LO_TAG = np.uint64(0x0000_FFFF_0000_0000)
ADDRESS_TYPE = pa.binary(16)

__all__ = [
    "ADDRESS_TYPE",
    "AddressError",
    "bytes16_to_hilo",
    "format_addresses",
    "hilo_to_bytes16",
    "hilo_to_text",
    "is_v4",
    "parse_addresses",
    "parse_prefixes",
    "prefix_bounds",
    "text_to_bytes16",
]


class AddressError(FlowatlasError):
    """An address or prefix that does not parse; names the offending entry."""


# --------------------------------------------------------------------------- 16 bytes <-> hi/lo


def _as_byte_matrix(values: pa.Array | pa.ChunkedArray | np.ndarray | bytes) -> np.ndarray:
    """Return an (n, 16) uint8 matrix over fixed_size_binary(16) data, copying only if needed."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        if not pa.types.is_fixed_size_binary(values.type) or values.type.byte_width != 16:
            raise AddressError(f"expected fixed_size_binary(16) addresses, got {values.type}")
        if values.null_count:
            raise AddressError(f"{values.null_count} null addresses where none are allowed")
        buf = values.buffers()[1]
        raw = np.frombuffer(buf, dtype=np.uint8)
        start = values.offset * 16
        return raw[start : start + 16 * len(values)].reshape(-1, 16)
    if isinstance(values, bytes | bytearray):
        arr = np.frombuffer(values, dtype=np.uint8)
        return arr.reshape(-1, 16)
    arr = np.asarray(values)
    if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == 16:
        return arr
    if arr.dtype.kind == "S" and arr.dtype.itemsize == 16:
        return arr.view(np.uint8).reshape(-1, 16)
    if arr.dtype == object:
        return np.frombuffer(b"".join(arr.tolist()), dtype=np.uint8).reshape(-1, 16)
    raise AddressError(f"cannot read 16-byte addresses from an array of {arr.dtype}")


def bytes16_to_hilo(
    values: pa.Array | pa.ChunkedArray | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Split 16-byte network-order addresses into (hi, lo) native uint64 arrays."""
    mat = np.ascontiguousarray(_as_byte_matrix(values))
    words = mat.view(">u8").reshape(-1, 2)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def bytes16_words(values: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """16-byte addresses as an (n, 2) uint64 array of their raw network-order bytes.

    A view of the data (Arrow buffer or array) where it is 8-byte aligned, else one copy; on
    a little-endian machine each word still needs a byte swap (kernels do it on the fly, which
    saves :func:`bytes16_to_hilo`'s two converted copies).
    """
    mat = np.ascontiguousarray(_as_byte_matrix(values))
    if mat.ctypes.data % 8:
        mat = mat.copy()
    return mat.view(np.uint64).reshape(-1, 2)


def hilo_to_bytes16(hi: np.ndarray, lo: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Join (hi, lo) uint64 arrays into a fixed_size_binary(16) Arrow array (network order)."""
    hi = np.asarray(hi, dtype=np.uint64)
    lo = np.asarray(lo, dtype=np.uint64)
    if hi.shape != lo.shape:
        raise AddressError(f"hi and lo differ in length: {hi.shape} vs {lo.shape}")
    words = np.empty((hi.size, 2), dtype=">u8")
    words[:, 0] = hi
    words[:, 1] = lo
    return pa.FixedSizeBinaryArray.from_buffers(
        ADDRESS_TYPE, hi.size, [None, pa.py_buffer(words.tobytes())]
    )


def is_v4(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """True where an address is IPv4-mapped (``::ffff:0:0/96``)."""
    hi = np.asarray(hi, dtype=np.uint64)
    lo = np.asarray(lo, dtype=np.uint64)
    return (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))


# --------------------------------------------------------------------------- text -> hi/lo


@numba.njit(cache=True, nogil=True)
def _hexval(c: int) -> int:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


@numba.njit(cache=True, nogil=True)
def _parse_v4(data, start, end):  # pragma: no cover - compiled
    """Parse a dotted quad in data[start:end]; return (value, ok)."""
    value = 0
    octet = 0
    digits = 0
    dots = 0
    i = start
    while i < end:
        c = int(data[i])  # not uint8: uncompiled (NUMBA_DISABLE_JIT), octet * 10 would wrap
        if c == 46:  # '.'
            if digits == 0 or dots == 3:
                return 0, False
            value = (value << 8) | octet
            dots += 1
            octet = 0
            digits = 0
        elif 48 <= c <= 57:
            if digits > 0 and octet == 0:
                return 0, False  # leading zero: ambiguous (octal in some parsers)
            octet = octet * 10 + (c - 48)
            digits += 1
            if octet > 255 or digits > 3:
                return 0, False
        else:
            return 0, False
        i += 1
    if dots != 3 or digits == 0:
        return 0, False
    return (value << 8) | octet, True


@numba.njit(cache=True, nogil=True)
def _parse_one(data, start, end):  # pragma: no cover - compiled
    """Parse one IPv4 or IPv6 address in data[start:end]; return (hi, lo, ok)."""
    n = end - start
    if n <= 0 or n > 45:
        return np.uint64(0), np.uint64(0), False
    has_colon = False
    for i in range(start, end):
        if data[i] == 58:
            has_colon = True
            break
    if not has_colon:
        v, ok = _parse_v4(data, start, end)
        if not ok:
            return np.uint64(0), np.uint64(0), False
        return np.uint64(0), np.uint64(0xFFFF00000000) | np.uint64(v), True

    groups = np.zeros(8, dtype=np.uint32)
    ngroups = 0
    gap = -1  # index in groups where '::' sits
    i = start
    if n >= 2 and data[start] == 58:
        if data[start + 1] != 58:
            return np.uint64(0), np.uint64(0), False
        gap = 0
        i = start + 2
        if i == end:
            return np.uint64(0), np.uint64(0), True
    while i < end:
        # read one group, or an embedded IPv4 tail
        j = i
        val = 0
        nd = 0
        while j < end and data[j] != 58 and data[j] != 46:
            h = _hexval(int(data[j]))
            if h < 0:
                return np.uint64(0), np.uint64(0), False
            val = (val << 4) | h
            nd += 1
            if nd > 4:
                return np.uint64(0), np.uint64(0), False
            j += 1
        if j < end and data[j] == 46:
            # IPv4 tail: from i to end
            if ngroups > 6:
                return np.uint64(0), np.uint64(0), False
            v4, ok = _parse_v4(data, i, end)
            if not ok:
                return np.uint64(0), np.uint64(0), False
            groups[ngroups] = (v4 >> 16) & 0xFFFF
            groups[ngroups + 1] = v4 & 0xFFFF
            ngroups += 2
            i = end
            break
        if nd == 0:
            return np.uint64(0), np.uint64(0), False
        if ngroups >= 8:
            return np.uint64(0), np.uint64(0), False
        groups[ngroups] = val
        ngroups += 1
        if j == end:
            i = end
            break
        # data[j] == ':'
        if j + 1 < end and data[j + 1] == 58:
            if gap >= 0:
                return np.uint64(0), np.uint64(0), False
            gap = ngroups
            i = j + 2
            if i == end:
                break
        else:
            i = j + 1
            if i == end:
                return np.uint64(0), np.uint64(0), False  # trailing single ':'
    if gap >= 0:
        if ngroups > 7:
            return np.uint64(0), np.uint64(0), False
        shift = 8 - ngroups
        for k in range(ngroups - 1, gap - 1, -1):
            groups[k + shift] = groups[k]
        for k in range(gap, gap + shift):
            groups[k] = 0
    elif ngroups != 8:
        return np.uint64(0), np.uint64(0), False
    hi = np.uint64(0)
    lo = np.uint64(0)
    for k in range(4):
        hi = (hi << np.uint64(16)) | np.uint64(groups[k])
    for k in range(4, 8):
        lo = (lo << np.uint64(16)) | np.uint64(groups[k])
    return hi, lo, True


@numba.njit(cache=True, nogil=True)
def _parse_many(data, offsets, valid, hi, lo, ok):  # pragma: no cover - compiled
    for r in range(hi.size):
        if not valid[r]:
            ok[r] = False
            continue
        s = offsets[r]
        e = offsets[r + 1]
        # trim ASCII blanks, which CSV exports often carry
        while s < e and (data[s] == 32 or data[s] == 9):
            s += 1
        while e > s and (data[e - 1] == 32 or data[e - 1] == 9 or data[e - 1] == 13):
            e -= 1
        h, low, good = _parse_one(data, s, e)
        hi[r] = h
        lo[r] = low
        ok[r] = good


def _string_buffers(values) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """Return (data, offsets, valid, array) for anything string-like, via Arrow's layout."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(
            list(values) if not isinstance(values, list) else values, type=pa.string()
        )
    if pa.types.is_string(values.type) or pa.types.is_binary(values.type):
        values = (
            values.cast(pa.large_string())
            if pa.types.is_string(values.type)
            else values.cast(pa.large_binary())
        )
    elif pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type):
        pass
    elif pa.types.is_string_view(values.type):
        values = values.cast(pa.large_string())
    else:
        raise AddressError(f"expected text addresses, got {values.type}")
    bufs = values.buffers()
    n = len(values)
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[values.offset : values.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    if values.null_count:
        valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    else:
        valid = np.ones(n, dtype=np.bool_)
    return data, offsets, valid, values


def parse_addresses(
    values: Iterable[str] | pa.Array | pa.ChunkedArray,
    *,
    source: str = "input",
    strict: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse text IPv4/IPv6 addresses into (hi, lo, ok).

    IPv4 becomes IPv4-mapped. With ``strict`` (the default) the first bad entry raises an
    :class:`AddressError` naming ``source`` and the row; otherwise ``ok`` marks the good rows and
    bad rows hold ``(0, 0)`` so callers can quarantine them.
    """
    data, offsets, valid, arr = _string_buffers(values)
    n = len(arr)
    hi = np.empty(n, dtype=np.uint64)
    lo = np.empty(n, dtype=np.uint64)
    ok = np.empty(n, dtype=np.bool_)
    if n:
        _parse_many(data, offsets, valid, hi, lo, ok)
    if strict and n and not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise AddressError(f"{source}: row {bad + 1}: not an IP address: {arr[bad].as_py()!r}")
    return hi, lo, ok


def text_to_bytes16(values: Iterable[str] | pa.Array, *, source: str = "input") -> pa.Array:
    """Parse text addresses straight into the archive's 16-byte form (strict)."""
    hi, lo, _ = parse_addresses(values, source=source)
    return hilo_to_bytes16(hi, lo)


# --------------------------------------------------------------------------- prefixes


def parse_prefixes(
    values: Sequence[str] | pa.Array, *, source: str = "input", strict: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse CIDR prefixes into (hi, lo, length, ok) over the 128-bit space.

    IPv4 ``a.b.c.d/n`` becomes ``::ffff:a.b.c.d/(96+n)``; a bare address is a host route.
    A prefix with host bits set is malformed (strict: an error naming source and row).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(list(values), type=pa.string())
    import pyarrow.compute as pc

    parts = pc.split_pattern(values, "/", max_splits=1)
    addr_txt = pc.list_element(parts, 0)
    n_parts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    hi, lo, ok = parse_addresses(addr_txt, source=source, strict=False)
    v4 = is_v4(hi, lo)
    # an IPv6-written address inside ::ffff:0:0/96 counts as IPv6 text for its length
    wrote_v4 = ~np.asarray(
        pc.match_substring(addr_txt, ":").fill_null(False).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    length = np.full(len(values), 128, dtype=np.int16)  # a bare address is a host route
    has_len = n_parts == 2
    if has_len.any():
        len_txt = pc.list_element(parts.filter(pa.array(has_len)), 1)
        len_txt = pc.utf8_trim_whitespace(len_txt)
        is_num = np.asarray(
            pc.match_substring_regex(len_txt, r"^[0-9]{1,3}$")
            .fill_null(False)
            .to_numpy(zero_copy_only=False),
            dtype=bool,
        )
        raw = np.full(len(len_txt), -1, dtype=np.int64)
        if is_num.any():
            raw[is_num] = np.asarray(
                pc.cast(len_txt.filter(pa.array(is_num)), pa.int64()).to_numpy(), dtype=np.int64
            )
        idx = np.flatnonzero(has_len)
        maxlen = np.where(wrote_v4[idx], 32, 128)
        good = (raw >= 0) & (raw <= maxlen)
        ok[idx[~good]] = False
        length[idx] = np.where(wrote_v4[idx], raw + 96, raw).clip(0, 128).astype(np.int16)
    # IPv4 text gets a v4 length; a v4 prefix must stay inside ::ffff:0:0/96
    ok &= ~(wrote_v4 & ~v4)
    net_hi, net_lo = _mask(hi, lo, length)
    host_bits = (net_hi != hi) | (net_lo != lo)
    bad = ~ok | host_bits
    if strict and bad.any():
        r = int(np.flatnonzero(bad)[0])
        why = "host bits set" if ok[r] else "not a CIDR prefix"
        raise AddressError(f"{source}: row {r + 1}: {why}: {values[r].as_py()!r}")
    return net_hi, net_lo, length, ok & ~host_bits


def _mask(hi: np.ndarray, lo: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clear the host bits of (hi, lo) beyond ``length``."""
    length = np.asarray(length, dtype=np.int64)
    hi_bits = np.clip(length, 0, 64)
    lo_bits = np.clip(length - 64, 0, 64)
    ones = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    with np.errstate(over="ignore"):
        hi_mask = np.where(
            hi_bits == 0, np.uint64(0), ones << (np.uint64(64) - hi_bits.astype(np.uint64)) % 64
        )
        hi_mask = np.where(hi_bits == 64, ones, hi_mask)
        lo_mask = np.where(
            lo_bits == 0, np.uint64(0), ones << (np.uint64(64) - lo_bits.astype(np.uint64)) % 64
        )
        lo_mask = np.where(lo_bits == 64, ones, lo_mask)
    return hi & hi_mask.astype(np.uint64), lo & lo_mask.astype(np.uint64)


def prefix_bounds(
    hi: np.ndarray, lo: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First and last address of each prefix: (start_hi, start_lo, end_hi, end_lo)."""
    s_hi, s_lo = _mask(np.asarray(hi, np.uint64), np.asarray(lo, np.uint64), length)
    ones = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    m_hi, m_lo = _mask(np.full_like(s_hi, ones), np.full_like(s_lo, ones), length)
    return s_hi, s_lo, s_hi | ~m_hi, s_lo | ~m_lo


# --------------------------------------------------------------------------- hi/lo -> text


@numba.njit(cache=True, nogil=True)
def _write_dec(out, pos, v):  # pragma: no cover - compiled
    if v >= 100:
        out[pos] = 48 + v // 100
        out[pos + 1] = 48 + (v // 10) % 10
        out[pos + 2] = 48 + v % 10
        return pos + 3
    if v >= 10:
        out[pos] = 48 + v // 10
        out[pos + 1] = 48 + v % 10
        return pos + 2
    out[pos] = 48 + v
    return pos + 1


@numba.njit(cache=True, nogil=True)
def _format_many(hi, lo, out, offsets):  # pragma: no cover - compiled
    hexd = np.array([48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102], np.uint8)
    groups = np.zeros(8, dtype=np.int64)
    pos = np.int64(0)  # not a literal 0: _write_dec would compile a second time for it
    for r in range(hi.size):
        offsets[r] = pos
        h = hi[r]
        low = lo[r]
        if h == 0 and (low >> np.uint64(32)) == np.uint64(0xFFFF):
            v = np.int64(low & np.uint64(0xFFFFFFFF))
            pos = _write_dec(out, pos, (v >> 24) & 255)
            out[pos] = 46
            pos = _write_dec(out, pos + 1, (v >> 16) & 255)
            out[pos] = 46
            pos = _write_dec(out, pos + 1, (v >> 8) & 255)
            out[pos] = 46
            pos = _write_dec(out, pos + 1, v & 255)
            continue
        for k in range(4):
            groups[k] = np.int64((h >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF))
            groups[4 + k] = np.int64((low >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF))
        # RFC 5952: compress the longest run (>= 2) of zero groups, the first on ties
        best_s = -1
        best_n = 1
        k = 0
        while k < 8:
            if groups[k] == 0:
                s = k
                while k < 8 and groups[k] == 0:
                    k += 1
                if k - s > best_n:
                    best_n = k - s
                    best_s = s
            else:
                k += 1
        k = 0
        while k < 8:
            if k == best_s:
                out[pos] = 58
                pos += 1
                if k == 0:
                    out[pos] = 58
                    pos += 1
                k += best_n
                continue
            g = groups[k]
            started = False
            for sh in (12, 8, 4, 0):
                d = (g >> sh) & 15
                if d != 0 or started or sh == 0:
                    out[pos] = hexd[d]
                    pos += 1
                    started = True
            k += 1
            if k < 8:
                out[pos] = 58
                pos += 1
    offsets[hi.size] = pos
    return pos


def hilo_to_text(hi: np.ndarray, lo: np.ndarray) -> pa.LargeStringArray:
    """Format (hi, lo) as text: dotted quad for IPv4-mapped, RFC 5952 for IPv6."""
    hi = np.ascontiguousarray(hi, dtype=np.uint64)
    lo = np.ascontiguousarray(lo, dtype=np.uint64)
    out = np.empty(hi.size * 39 + 1, dtype=np.uint8)
    offsets = np.empty(hi.size + 1, dtype=np.int64)
    used = _format_many(hi, lo, out, offsets)
    return pa.LargeStringArray.from_buffers(
        hi.size, pa.py_buffer(offsets.tobytes()), pa.py_buffer(out[:used].tobytes())
    )


def format_addresses(values: pa.Array | pa.ChunkedArray | np.ndarray) -> list[str]:
    """Text for 16-byte addresses, as a Python list (for display and small outputs)."""
    hi, lo = bytes16_to_hilo(values)
    return hilo_to_text(hi, lo).to_pylist()
