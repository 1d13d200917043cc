"""CSV flow files with a column mapping, and the column conversion every text importer shares.

Two things live here because they are one idea: *a table of text columns becomes flow schema
v1 rows*.

- :class:`ColumnConverter` takes columns named after the v1 fields (text or numbers, as a CSV
  reader or a JSON decoder produced them) and returns a :class:`~.base.Batch`: the rows that
  validate, typed, and the rest in quarantine with their position and a reason. The nfdump,
  pmacct and goflow2 importers all go through it, so every format rejects the same things the
  same way: unparseable addresses, negative or non-integer counters, counters of 2^64 or more,
  timestamps before 1990-01-01 or more than a day after the import started.
- :class:`CsvImporter` (``--format csv``) reads any CSV with pyarrow's streaming reader, maps
  its columns to v1 fields (``--csv-map 'time_start=ts,src_addr=sa,...'`` or a small TOML
  file) and hands the columns to the converter.

All checks are vectorised (Arrow compute and NumPy); Python loops only touch rejected rows.
"""

from __future__ import annotations

import csv as std_csv
import re
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from flowatlas.addresses import bytes16_to_hilo, hilo_to_bytes16, parse_addresses
from flowatlas.errors import ConfigError, InputError
from flowatlas.io.importers.base import (
    Batch,
    Importer,
    ImportOptions,
    empty_quarantine,
    quarantine_rows,
    register,
)
from flowatlas.io.importers.csv_scan import ADDRESS, SKIP, TIME, UINT, byte_classes, scan_block
from flowatlas.schema import COUNTS_RAW, COUNTS_SCALED, FLOW_SCHEMA_V1, TIMESTAMP

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: records whose time is before this are quarantined (flow export did not exist; 0 = unset)
MIN_TIME_US = 631_152_000 * 1_000_000  # 1990-01-01T00:00:00Z
#: records more than this after the import started are quarantined (clock or parse errors)
FUTURE_SLACK_US = 86_400 * 1_000_000
MAX_U64 = (1 << 64) - 1

#: the fields a converter fills, in the order rows are checked (the first failure is reported)
FIELD_ORDER: tuple[str, ...] = (
    "time_start",
    "time_end",
    "exporter",
    "src_addr",
    "dst_addr",
    "bytes",
    "packets",
    "sampling_rate",
    "in_if",
    "out_if",
    "src_port",
    "dst_port",
    "proto",
    "src_as",
    "dst_as",
)
#: pseudo-field: flow duration in seconds, used when a source has no end time
DURATION = "duration"
MAPPABLE_FIELDS: tuple[str, ...] = (*FIELD_ORDER, DURATION)

_UINT_FIELDS: dict[str, tuple[int, str]] = {
    "bytes": (MAX_U64, "counter"),
    "packets": (MAX_U64, "counter"),
    "sampling_rate": ((1 << 32) - 1, "sampling_rate"),
    "in_if": ((1 << 32) - 1, "interface"),
    "out_if": ((1 << 32) - 1, "interface"),
    "src_port": ((1 << 16) - 1, "port"),
    "dst_port": ((1 << 16) - 1, "port"),
    "src_as": ((1 << 32) - 1, "as"),
    "dst_as": ((1 << 32) - 1, "as"),
}

#: IP protocol names as flow tools print them (IANA keywords, nfdump's and goflow2's
#: spellings), lower case. Numbers are always accepted; an unknown name is quarantined.
PROTOCOL_NAMES: dict[str, int] = {
    "hopopt": 0,
    "ip": 0,
    "icmp": 1,
    "igmp": 2,
    "ggp": 3,
    "ipencap": 4,
    "ip-encap": 4,
    "ipip4": 4,
    "ipv4": 4,
    "st": 5,
    "tcp": 6,
    "cbt": 7,
    "egp": 8,
    "igp": 9,
    "pup": 12,
    "udp": 17,
    "hmp": 20,
    "xns-idp": 22,
    "rdp": 27,
    "iso-tp4": 29,
    "dccp": 33,
    "xtp": 36,
    "ddp": 37,
    "idpr-cmtp": 38,
    "ipv6": 41,
    "ipv6-route": 43,
    "rte6": 43,
    "ipv6-frag": 44,
    "frag6": 44,
    "idrp": 45,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ipsec-esp": 50,
    "ah": 51,
    "ipsec-ah": 51,
    "skip": 57,
    "icmp6": 58,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "ipv6icmp": 58,
    "ipv6-nonxt": 59,
    "nohe6": 59,
    "ipv6-opts": 60,
    "opts6": 60,
    "rspf": 73,
    "vmtp": 81,
    "eigrp": 88,
    "ospf": 89,
    "ospfigp": 89,
    "ax.25": 93,
    "ipip": 94,
    "etherip": 97,
    "encap": 98,
    "pim": 103,
    "ipcomp": 108,
    "vrrp": 112,
    "pgm": 113,
    "l2tp": 115,
    "isis": 124,
    "sctp": 132,
    "fc": 133,
    "mobility-header": 135,
    "udplite": 136,
    "udp-l": 136,
    "mpls-in-ip": 137,
    "mpls": 137,
    "hip": 139,
    "shim6": 140,
    "wesp": 141,
    "rohc": 142,
    "ethernet": 143,
}


# --------------------------------------------------------------------------- parsing helpers

_OK, _MISSING, _NEGATIVE, _BAD, _OVERFLOW = 0, 1, 2, 3, 4
_RE_DIGITS = r"^[0-9]+$"
_RE_NEG = r"^-[0-9]+$"
_RE_EPOCH_INT = r"^-?[0-9]{1,19}$"
_RE_EPOCH_DEC = r"^-?[0-9]+\.[0-9]*$"
_RE_ISO = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)? ?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
)
_RE_ZONED = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)? ?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
_ZONED = re.compile(_RE_ZONED)
_RE_ZERO_TIME = r"^0000-00-00"
_RE_ISO_PY = re.compile(_RE_ISO)
_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0}  # 0: divide by 1000
TIME_UNITS = ("auto", "s", "ms", "us", "ns")


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _np_bool(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return _np_bool(arr.is_valid())


def _is_text(arr: pa.Array) -> bool:
    t = arr.type
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def _text(arr: pa.Array) -> pa.Array:
    """Whitespace-trimmed UTF-8 text (fixed-width tools pad their columns)."""
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.string())
    elif pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    return pc.ascii_trim_whitespace(arr)


def _match(arr: pa.Array, pattern: str) -> np.ndarray:
    return _np_bool(pc.match_substring_regex(arr, pattern))


def parse_uint(values: pa.Array, max_value: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned integers from text or numbers: (values as uint64, state per row).

    State is 0 ok, 1 missing (null or empty), 2 negative, 3 not an integer, 4 above
    ``max_value``. Text must be plain decimal digits: ``1e3``, ``1.5`` and ``0x10`` are rejected
    rather than guessed at.
    """
    arr = _flat(values)
    n = len(arr)
    out = np.zeros(n, dtype=np.uint64)
    state = np.zeros(n, dtype=np.int8)
    t = arr.type
    if pa.types.is_null(t):
        state[:] = _MISSING
        return out, state
    if pa.types.is_unsigned_integer(t) and arr.null_count == 0:  # typed sources: no copies
        out = arr.to_numpy().astype(np.uint64)
        if max_value < MAX_U64:
            state[out > np.uint64(max_value)] = _OVERFLOW
        return out, state
    valid = _valid(arr)
    state[~valid] = _MISSING
    if pa.types.is_unsigned_integer(t):
        v = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
        out[:] = v
        state[valid & (v > np.uint64(max_value))] = _OVERFLOW
    elif pa.types.is_signed_integer(t):
        v = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        neg = valid & (v < 0)
        state[neg] = _NEGATIVE
        out[:] = np.where(v < 0, 0, v).astype(np.uint64)
        state[valid & ~neg & (out > np.uint64(max_value))] = _OVERFLOW
    elif pa.types.is_floating(t):
        v = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(v)
            integral = finite & (v == np.floor(np.where(finite, v, 0.0)))
        state[valid & ~integral] = _BAD
        neg = valid & integral & (v < 0)
        state[neg] = _NEGATIVE
        over = valid & integral & ~neg & (v >= float(max_value) + 1.0)
        state[over] = _OVERFLOW
        good = valid & integral & ~neg & ~over
        out[good] = v[good].astype(np.uint64)
    elif _is_text(arr):
        s = _text(arr)
        try:  # fast path: every value is plain digits within 64 bits
            v = pc.cast(s, pa.uint64()).fill_null(0).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        else:
            out[:] = v
            state[valid & (v > np.uint64(max_value))] = _OVERFLOW
            return out, state
        empty = _np_bool(pc.equal(s, ""))
        state[valid & empty] = _MISSING
        digits = _match(s, _RE_DIGITS)
        neg = _match(s, _RE_NEG)
        state[valid & ~empty & ~digits & ~neg] = _BAD
        state[neg] = _NEGATIVE
        if digits.any():
            stripped = pc.utf8_ltrim(s, characters="0")
            length = pc.utf8_length(stripped).fill_null(0).to_numpy(zero_copy_only=False)
            over = digits & (
                (length > 20)
                | ((length == 20) & _np_bool(pc.greater(stripped, "18446744073709551615")))
            )
            state[over] = _OVERFLOW
            castable = digits & ~over
            if castable.any():
                idx = np.flatnonzero(castable)
                vals = pc.cast(s.take(pa.array(idx)), pa.uint64()).to_numpy(zero_copy_only=False)
                out[idx] = vals
                state[idx[vals > np.uint64(max_value)]] = _OVERFLOW
    else:  # booleans, lists, structs: not a count
        state[valid] = _BAD
    return out, state


def _scale_epoch_int(v: np.ndarray, unit: str) -> np.ndarray:
    """Epoch integers (int64) in ``unit`` (or guessed by magnitude) to microseconds."""
    if unit == "auto":
        a = np.abs(v)
        us = np.where(
            a < 100_000_000_000,  # seconds up to the year 5138
            v * 1_000_000,
            np.where(a < 100_000_000_000_000, v * 1_000, np.where(a < 10**17, v, v // 1000)),
        )
        return us.astype(np.int64)
    mult = _UNIT_US[unit]
    if mult == 0:
        return v // 1000
    # saturate, never wrap: a wrapped product could land on a plausible time
    limit = np.iinfo(np.int64).max // mult
    big = (v > limit) | (v < -limit)
    with np.errstate(over="ignore"):
        return np.where(big, np.sign(v) * np.iinfo(np.int64).max, v * mult).astype(np.int64)


def _scale_epoch_float(v: np.ndarray, unit: str) -> np.ndarray:
    if unit == "auto":
        a = np.abs(v)
        factor = np.where(a < 1e11, 1e6, np.where(a < 1e14, 1e3, np.where(a < 1e17, 1.0, 1e-3)))
    else:
        factor = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}[unit]
    with np.errstate(invalid="ignore", over="ignore"):
        us = np.round(v * factor)
        big = ~np.isfinite(us) | (np.abs(us) > 9.2e18)
        us = np.where(big, np.sign(np.nan_to_num(v)) * 9.2e18, us)
    return us.astype(np.int64)


def _cast_iso(s: pa.Array, zoned: bool) -> tuple[np.ndarray, np.ndarray]:
    """ISO 8601 text to (microseconds, ok); naive text is taken as UTC."""
    typ = pa.timestamp("ns", tz="UTC") if zoned else pa.timestamp("ns")
    n = len(s)
    try:
        ns = pc.cast(s, typ).cast(pa.int64()).to_numpy(zero_copy_only=False)
        return ns // 1000, np.ones(n, dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # slow path, only for a batch that holds a bad value: find which
    us = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    for i, text in enumerate(s.to_pylist()):
        try:
            us[i] = pa.array([text]).cast(typ).cast(pa.int64())[0].as_py() // 1000
            ok[i] = True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            year = int(text[:4])
            if year >= 2262:  # beyond the nanosecond range: certainly in the future
                us[i], ok[i] = np.iinfo(np.int64).max, True
            elif year <= 1677:
                us[i], ok[i] = np.iinfo(np.int64).min, True
    return us, ok


def parse_time(values: pa.Array, unit: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Timestamps from ISO 8601 text, epoch numbers or epoch text: (microseconds, state).

    Epoch values are in ``unit`` (s, ms, us, ns) or, with ``auto``, guessed from their size
    (below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds).
    ISO text without a zone is UTC. nfdump's ``0000-00-00 00:00:00.000`` (time not set) reads
    as the epoch, so the range check quarantines it. State: 0 ok, 1 missing, 3 unparseable.
    """
    if unit not in TIME_UNITS:
        raise ConfigError(f"time unit {unit!r}: use one of {', '.join(TIME_UNITS)}")
    arr = _flat(values)
    n = len(arr)
    us = np.zeros(n, dtype=np.int64)
    state = np.zeros(n, dtype=np.int8)
    t = arr.type
    if pa.types.is_null(t):
        state[:] = _MISSING
        return us, state
    valid = _valid(arr)
    state[~valid] = _MISSING
    if pa.types.is_timestamp(t):
        us[:] = arr.cast(pa.timestamp("us", tz=t.tz)).cast(pa.int64()).fill_null(0).to_numpy()
    elif pa.types.is_unsigned_integer(t):
        v = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
        too_big = v > np.uint64(np.iinfo(np.int64).max)
        us[:] = _scale_epoch_int(np.where(too_big, 0, v).astype(np.int64), unit)
        us[too_big] = np.iinfo(np.int64).max
    elif pa.types.is_signed_integer(t):
        us[:] = _scale_epoch_int(arr.fill_null(0).to_numpy(zero_copy_only=False), unit)
    elif pa.types.is_floating(t):
        v = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        state[valid & ~np.isfinite(v)] = _BAD
        us[:] = _scale_epoch_float(np.nan_to_num(v), unit)
    elif _is_text(arr):
        s = _text(arr)
        # fast path: every value ISO 8601 like the first one, with or without a zone (a
        # failed cast is slow, so the first value picks which one to try)
        sample = s.drop_null()
        if len(sample) and _RE_ISO_PY.match(first := sample[0].as_py()):
            zone = "UTC" if _ZONED.search(first) else None
            try:
                ns = pc.cast(s, pa.timestamp("ns", tz=zone)).cast(pa.int64()).fill_null(0)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            else:
                us[:] = ns.to_numpy(zero_copy_only=False) // 1000
                return us, state
        empty = _np_bool(pc.equal(s, ""))
        state[valid & empty] = _MISSING
        is_int = _match(s, _RE_EPOCH_INT)
        is_dec = _match(s, _RE_EPOCH_DEC) & ~is_int
        is_zero = _match(s, _RE_ZERO_TIME)
        is_iso = _match(s, _RE_ISO) & ~is_zero
        state[valid & ~empty & ~(is_int | is_dec | is_zero | is_iso)] = _BAD
        if is_int.any():
            idx = np.flatnonzero(is_int)
            sub = s.take(pa.array(idx))
            try:
                v = pc.cast(sub, pa.int64()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:  # beyond 64 bits: saturate, the range check rejects it
                top = np.iinfo(np.int64).max
                v = np.array([max(-top, min(top, int(x))) for x in sub.to_pylist()], np.int64)
            us[idx] = _scale_epoch_int(v, unit)
        if is_dec.any():
            idx = np.flatnonzero(is_dec)
            v = pc.cast(s.take(pa.array(idx)), pa.float64()).to_numpy(zero_copy_only=False)
            us[idx] = _scale_epoch_float(v, unit)
        if is_iso.any():
            idx = np.flatnonzero(is_iso)
            sub = s.take(pa.array(idx))
            zoned = _match(sub, _RE_ZONED)
            for flag in (False, True):
                part = np.flatnonzero(zoned == flag)
                if part.size:
                    t_us, ok = _cast_iso(sub.take(pa.array(part)), zoned=flag)
                    us[idx[part]] = t_us
                    state[idx[part[~ok]]] = _BAD
    else:
        state[valid] = _BAD
    return us, state


def parse_proto(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """IP protocol numbers from numbers or names (``TCP``, ``udp``, ``ipv6-icmp``, ``17``)."""
    arr = _flat(values)
    if not _is_text(arr):
        return parse_uint(arr, 255)
    s = _text(arr)
    out, state = parse_uint(s, 255)
    named = state == _BAD
    if named.any():
        idx = np.flatnonzero(named)
        names = pc.utf8_lower(s.take(pa.array(idx)))
        keys = pa.array(list(PROTOCOL_NAMES), pa.string())
        nums = np.array(list(PROTOCOL_NAMES.values()), dtype=np.uint64)
        pos = pc.index_in(names, value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False)
        known = pos >= 0
        out[idx[known]] = nums[pos[known]]
        state[idx[known]] = _OK
    return out, state


def parse_port(values: pa.Array, *, icmp_dotted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ports (0..65535); with ``icmp_dotted``, nfdump's ICMP ``type.code`` becomes type*256+code."""
    arr = _flat(values)
    if not (icmp_dotted and _is_text(arr)):
        return parse_uint(arr, 65535)
    s = _text(arr)
    out, state = parse_uint(s, 65535)
    dotted = _match(s, r"^[0-9]{1,3}\.[0-9]{1,3}$")
    if dotted.any():
        idx = np.flatnonzero(dotted)
        parts = pc.split_pattern(s.take(pa.array(idx)), ".")
        typ = pc.cast(pc.list_element(parts, 0), pa.uint64()).to_numpy(zero_copy_only=False)
        code = pc.cast(pc.list_element(parts, 1), pa.uint64()).to_numpy(zero_copy_only=False)
        good = (typ <= 255) & (code <= 255)
        out[idx[good]] = typ[good] * np.uint64(256) + code[good]
        state[idx[good]] = _OK
        state[idx[~good]] = _BAD
    return out, state


# --------------------------------------------------------------------------- the converter


@dataclass
class ColumnConverter:
    """Turn raw columns named after v1 fields into a :class:`Batch` (good rows + quarantine).

    ``columns`` given to :meth:`convert` may hold any subset of :data:`MAPPABLE_FIELDS`; absent
    optional fields take ``constants`` or their default (0, the zero address for the exporter,
    ``time_end = time_start``, or ``time_start + duration``). ``required`` fields that are
    absent make :meth:`convert` raise; present but empty ones quarantine the row.
    """

    source_file: str
    time_unit: str = "auto"
    #: map IPv4-compatible ``::a.b.c.d`` to IPv4 (nfdump 1.7.1 prints some v9 IPv4 that way)
    v4compat: bool = False
    #: read ``type.code`` in dst_port as ICMP type*256+code (nfdump's fmt output)
    icmp_dotted_port: bool = False
    required: tuple[str, ...] = ("time_start", "src_addr", "dst_addr", "bytes")
    constants: Mapping[str, Any] = field(default_factory=dict)
    #: the import's start (microseconds since the epoch), for the "future" check
    now_us: int = field(default_factory=lambda: time.time_ns() // 1000)

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise ConfigError(f"time unit {self.time_unit!r}: use one of {', '.join(TIME_UNITS)}")
        unknown = sorted(set(self.constants) - set(FIELD_ORDER))
        if unknown:
            raise ConfigError(f"constant for unknown field {unknown[0]!r}")

    def _constant(self, name: str, n: int) -> pa.Array | None:
        if name not in self.constants:
            return None
        value = self.constants[name]
        return pa.array([value] * n) if n else pa.array([], pa.string())

    def convert(
        self,
        columns: Mapping[str, pa.Array | pa.ChunkedArray],
        positions: np.ndarray,
        label: str = "row",
        extra_quarantine: pa.Table | None = None,
    ) -> Batch:
        """Validate and type one block of rows; ``positions`` number them for the quarantine."""
        n = len(positions)
        missing = [f for f in self.required if f not in columns and f not in self.constants]
        if missing:
            raise InputError(f"{self.source_file}: no column for required field(s) {missing}")
        cols: dict[str, pa.Array] = {}
        for name in MAPPABLE_FIELDS:
            if name in columns:
                arr = _flat(columns[name])
                if len(arr) != n:
                    raise ValueError(f"column {name!r} has {len(arr)} rows, expected {n}")
                cols[name] = arr
            else:
                const = self._constant(name, n)
                if const is not None:
                    cols[name] = const
        reason = np.full(n, -1, dtype=np.int16)
        culprit = np.full(n, -1, dtype=np.int16)
        reasons: list[str] = []
        fields = [*FIELD_ORDER, DURATION]

        def flag(mask: np.ndarray, why: str, fname: str) -> None:
            if not mask.any():
                return
            new = mask & (reason < 0)
            if new.any():
                if why not in reasons:
                    reasons.append(why)
                reason[new] = reasons.index(why)
                culprit[new] = fields.index(fname)

        out: dict[str, Any] = {}
        # ---- times
        for fname in ("time_start", "time_end"):
            if fname not in cols:
                continue
            us, st = parse_time(cols[fname], self.time_unit)
            if fname == "time_start":
                flag(st == _MISSING, "missing_time", fname)
            flag(st == _BAD, "bad_time", fname)
            present = st == _OK
            flag(present & (us < MIN_TIME_US), "time_before_1990", fname)
            flag(present & (us > self.now_us + FUTURE_SLACK_US), "time_in_future", fname)
            out[fname] = (us, present)
        t0 = out["time_start"][0] if "time_start" in out else np.zeros(n, np.int64)
        if "time_end" in out:
            t1, present = out["time_end"]
            t1 = np.where(present, t1, t0)
        elif DURATION in cols:
            d_us, st = parse_time(cols[DURATION], "s")
            d_ok = st == _OK
            flag(~d_ok & (st != _MISSING), "bad_duration", DURATION)
            flag(d_ok & ((d_us < 0) | (d_us > 366 * 86_400 * 1_000_000)), "bad_duration", DURATION)
            t1 = np.where(d_ok, t0 + np.clip(d_us, 0, None), t0)
        else:
            t1 = t0
        # ---- addresses
        addr: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for fname in ("exporter", "src_addr", "dst_addr"):
            if fname not in cols:
                z = np.zeros(n, dtype=np.uint64)
                addr[fname] = (z, z)
                continue
            arr = cols[fname]
            if pa.types.is_fixed_size_binary(arr.type) and arr.type.byte_width == 16:
                valid = _valid(arr)  # already 16-byte addresses (binary sources)
                hi, lo = bytes16_to_hilo(arr.fill_null(b"\x00" * 16))
                if fname == "exporter":
                    hi, lo = np.where(valid, hi, 0), np.where(valid, lo, 0)
                else:
                    flag(~valid, "missing_address", fname)
                addr[fname] = (hi.astype(np.uint64), lo.astype(np.uint64))
                continue
            if not _is_text(arr):  # numbers, lists, all-null: no address here
                valid = _valid(arr)
                if fname != "exporter":
                    flag(~valid, "missing_address", fname)
                flag(valid, "bad_address", fname)
                z = np.zeros(n, dtype=np.uint64)
                addr[fname] = (z, z)
                continue
            s = _text(arr)
            valid = _valid(s)
            empty = valid & _np_bool(pc.equal(s, ""))
            hi, lo, ok = parse_addresses(s, source=self.source_file, strict=False)
            if fname == "exporter":
                # an absent exporter is the zero address ("unknown"), not an error
                hi = np.where(valid & ~empty, hi, 0).astype(np.uint64)
                lo = np.where(valid & ~empty, lo, 0).astype(np.uint64)
                ok = ok | ~valid | empty
            else:
                flag(~valid | empty, "missing_address", fname)
            flag(valid & ~empty & ~ok, "bad_address", fname)
            if self.v4compat:
                compat = (hi == 0) & (lo >> np.uint64(32) == 0) & (lo >= np.uint64(1 << 24))
                lo = np.where(compat, lo | np.uint64(0xFFFF_0000_0000), lo)
            addr[fname] = (hi, lo)
        # ---- integers
        ints: dict[str, np.ndarray] = {}
        for fname, (max_value, kind) in _UINT_FIELDS.items():
            if fname not in cols:
                ints[fname] = np.zeros(n, dtype=np.uint64)
                continue
            arr = cols[fname]
            if fname == "dst_port":
                v, st = parse_port(arr, icmp_dotted=self.icmp_dotted_port)
            else:
                v, st = parse_uint(arr, max_value)
            if kind == "counter":
                if fname in self.required:
                    flag(st == _MISSING, "missing_counter", fname)
                flag(st == _NEGATIVE, "negative_counter", fname)
                flag(st == _BAD, "bad_counter", fname)
                flag(st == _OVERFLOW, "counter_overflow", fname)
            else:
                flag((st == _NEGATIVE) | (st == _BAD) | (st == _OVERFLOW), f"bad_{kind}", fname)
            ints[fname] = v if not st.any() else np.where(st == _OK, v, 0).astype(np.uint64)
        if "proto" in cols:
            v, st = parse_proto(cols["proto"])
            flag((st == _NEGATIVE) | (st == _BAD) | (st == _OVERFLOW), "bad_proto", "proto")
            proto = np.where(st == _OK, v, 0).astype(np.uint8)
        else:
            proto = np.zeros(n, dtype=np.uint8)

        good = reason < 0
        table = pa.table(
            {
                "time_start": pa.array(t0, pa.int64()).cast(TIMESTAMP),
                "time_end": pa.array(t1, pa.int64()).cast(TIMESTAMP),
                "exporter": hilo_to_bytes16(*addr["exporter"]),
                "in_if": pa.array(ints["in_if"].astype(np.uint32)),
                "out_if": pa.array(ints["out_if"].astype(np.uint32)),
                "src_addr": hilo_to_bytes16(*addr["src_addr"]),
                "dst_addr": hilo_to_bytes16(*addr["dst_addr"]),
                "src_port": pa.array(ints["src_port"].astype(np.uint16)),
                "dst_port": pa.array(ints["dst_port"].astype(np.uint16)),
                "proto": pa.array(proto),
                "bytes": pa.array(ints["bytes"]),
                "packets": pa.array(ints["packets"]),
                "sampling_rate": pa.array(ints["sampling_rate"].astype(np.uint32)),
                "src_as": pa.array(ints["src_as"].astype(np.uint32)),
                "dst_as": pa.array(ints["dst_as"].astype(np.uint32)),
            },
            schema=FLOW_SCHEMA_V1,
        )
        if not good.all():
            table = table.filter(pa.array(good))
        quarantine = self._quarantine(
            ~good, reason, culprit, reasons, fields, cols, positions, label
        )
        if extra_quarantine is not None and extra_quarantine.num_rows:
            quarantine = pa.concat_tables([extra_quarantine, quarantine])
        return Batch(table, quarantine, records_read=table.num_rows + quarantine.num_rows)

    def _quarantine(
        self,
        bad: np.ndarray,
        reason: np.ndarray,
        culprit: np.ndarray,
        reasons: list[str],
        fields: list[str],
        cols: Mapping[str, pa.Array],
        positions: np.ndarray,
        label: str,
    ) -> pa.Table:
        if not bad.any():
            return empty_quarantine()
        idx = np.flatnonzero(bad)
        where = [f"{label} {int(p)}" for p in np.asarray(positions)[idx]]
        why = [reasons[r] for r in reason[idx]]
        detail: list[str | None] = []
        for i, c in zip(idx, culprit[idx], strict=True):
            fname = fields[c]
            value = cols[fname][int(i)].as_py() if fname in cols else None
            detail.append(f"{fname}: {truncate(repr(value))}")
        return quarantine_rows(self.source_file, where, why, detail)


def truncate(text: str, limit: int = 200) -> str:
    """Cut ``text`` for a quarantine detail."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_lines_quarantine(
    source_file: str, rows: list[tuple], reason: str = "malformed_line", label: str = "line"
) -> pa.Table:
    """Quarantine rows a reader could not split into fields (wrong column count, bad JSON).

    ``rows`` holds (number, text) or (number, text, reason) tuples.
    """
    if not rows:
        return empty_quarantine()
    return quarantine_rows(
        source_file,
        [f"{label} {r[0]}" for r in rows],
        [r[2] if len(r) > 2 else reason for r in rows],
        [truncate(r[1]) for r in rows],
    )


class BatchAccumulator:
    """Collect converted batches into ones of about ``batch_rows`` rows.

    Archive row groups are as large as what the writer is given, so small reader blocks are
    merged before they are yielded; memory stays bounded by ``batch_rows``.
    """

    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = max(1, batch_rows)
        self._tables: list[pa.Table] = []
        self._quarantine: list[pa.Table] = []
        self._rows = 0
        self._read = 0

    def add(self, batch: Batch) -> Iterator[Batch]:
        """Add ``batch``; yield a merged batch whenever enough rows have gathered."""
        self._tables.append(batch.table)
        if batch.quarantine.num_rows:
            self._quarantine.append(batch.quarantine)
        self._rows += batch.table.num_rows
        self._read += int(batch.records_read or 0)
        if self._read >= self.batch_rows:  # quarantined rows count too: memory stays bounded
            yield self._take()

    def flush(self) -> Iterator[Batch]:
        """Yield what is left (if anything was read)."""
        if self._read:
            yield self._take()

    def _take(self) -> Batch:
        table = pa.concat_tables(self._tables) if self._tables else FLOW_SCHEMA_V1.empty_table()
        quarantine = pa.concat_tables(self._quarantine) if self._quarantine else empty_quarantine()
        batch = Batch(table.combine_chunks(), quarantine, records_read=self._read)
        self._tables, self._quarantine, self._rows, self._read = [], [], 0, 0
        return batch


# --------------------------------------------------------------------------- text sniffing


def text_head(head: bytes) -> str | None:
    """The first bytes of a file as text (gunzipped if needed), or None if binary."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head)
        except zlib.error:
            return None
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the head
            return None
        return head[: exc.start].decode("utf-8")


def first_line(head: bytes) -> str | None:
    """The first non-empty line of a text file's head."""
    text = text_head(head)
    if text is None:
        return None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


# --------------------------------------------------------------------------- CSV with a mapping


@dataclass(frozen=True)
class CsvMapping:
    """Which CSV column feeds which v1 field, plus how to read times and counts."""

    columns: tuple[tuple[str, str], ...] = ()  # (field, csv column)
    constants: tuple[tuple[str, Any], ...] = ()
    time_unit: str = "auto"
    delimiter: str = ","
    counts: str = COUNTS_RAW

    def field_map(self) -> dict[str, str]:
        return dict(self.columns)


_MAP_ITEM = re.compile(r"^\s*([A-Za-z_]+)\s*=\s*(.+?)\s*$")


def parse_csv_map(spec: str | None) -> CsvMapping:
    """Parse ``--csv-map``: ``'time_start=ts,src_addr=sa,...'`` or the path of a TOML file.

    The TOML form::

        [columns]            # v1 field = CSV column
        time_start = "ts"
        src_addr = "sa"
        [constants]          # v1 field = value for every row
        sampling_rate = 1000
        [options]
        time_unit = "ms"     # epoch unit for numeric times: auto, s, ms, us, ns
        delimiter = ";"
        counts = "raw"       # raw: bytes still need x sampling_rate; scaled: already done
    """
    if not spec:
        return CsvMapping()
    path = Path(spec)
    if spec.endswith(".toml") or (path.suffix == "" and path.is_file()):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{spec}: CSV mapping file not found") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{spec}: cannot read CSV mapping: {exc}") from None
        return _mapping_from_dict(data, spec)
    columns: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        m = _MAP_ITEM.match(item)
        if not m:
            raise ConfigError(f"--csv-map: {item!r} is not FIELD=COLUMN")
        columns[m.group(1)] = m.group(2)
    return _mapping_from_dict({"columns": columns}, "--csv-map")


def _mapping_from_dict(data: dict[str, Any], where: str) -> CsvMapping:
    unknown = sorted(set(data) - {"columns", "constants", "options"})
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r} (columns, constants, options)")
    columns = data.get("columns", {})
    constants = data.get("constants", {})
    options = data.get("options", {})
    for section, table in (("columns", columns), ("constants", constants), ("options", options)):
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
    for fname, col in columns.items():
        if fname not in MAPPABLE_FIELDS:
            raise ConfigError(
                f"{where}: {fname!r} is not a flow field (use {', '.join(MAPPABLE_FIELDS)})"
            )
        if not isinstance(col, str) or not col:
            raise ConfigError(f"{where}: column for {fname!r} must be a column name")
    for fname in constants:
        if fname not in FIELD_ORDER:
            raise ConfigError(f"{where}: constant for unknown field {fname!r}")
    bad_opt = sorted(set(options) - {"time_unit", "delimiter", "counts"})
    if bad_opt:
        raise ConfigError(f"{where}: unknown option {bad_opt[0]!r} (time_unit, delimiter, counts)")
    time_unit = options.get("time_unit", "auto")
    if time_unit not in TIME_UNITS:
        raise ConfigError(f"{where}: time_unit {time_unit!r}: use one of {', '.join(TIME_UNITS)}")
    delimiter = options.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ConfigError(f"{where}: delimiter must be one character")
    counts = options.get("counts", COUNTS_RAW)
    if counts not in (COUNTS_RAW, COUNTS_SCALED):
        raise ConfigError(f"{where}: counts must be {COUNTS_RAW!r} or {COUNTS_SCALED!r}")
    return CsvMapping(
        tuple(columns.items()), tuple(constants.items()), time_unit, delimiter, counts
    )


def open_text_stream(path: Path) -> pa.NativeFile:
    """Open a (possibly gzip/bz2/zstd-compressed, by extension) file for streaming reads."""
    try:
        return pa.input_stream(str(path), compression="detect")
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot open: {exc}") from None


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` begin a UTF-8 sequence that is not finished yet."""
    n = len(data)
    for back in range(1, min(3, n) + 1):
        b = data[n - back]
        if b < 0x80:
            return 0
        if b >= 0xC0:  # a lead byte: its sequence is 2, 3 or 4 bytes long
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return back if need > back else 0
    return 0


#: a CSV line longer than this is not a flow record: it is quarantined (``line_too_long``)
#: without being read into memory, and the rows around it are imported
MAX_LINE_BYTES = 1 << 20
R_LINE_TOO_LONG = "line_too_long"
_LONG_LINE_MARK = "<flowatlas:line_too_long:"


class LineLengthGuard:
    """A byte stream passed through unchanged, except that over-long lines are replaced.

    pyarrow's CSV reader fails a whole file on a row longer than its block size. Reading
    through this guard, a line longer than ``limit`` bytes reaches it as a one-field
    placeholder (``<flowatlas:line_too_long:N>``, N its length in bytes) that has the wrong
    number of fields, so it is handed to the invalid-row handler with its row number and
    quarantined, while the rows around it are read as usual. The long line is never held in
    memory (at most ``limit`` bytes of an unfinished line are).
    """

    def __init__(self, raw: Any, limit: int = MAX_LINE_BYTES) -> None:
        self._raw = raw
        self.limit = limit
        self._pending = b""  # the start of a line not finished yet (at most ``limit`` bytes)
        self._dropping = -1  # bytes of an over-long line dropped so far (-1: not in one)
        self.long_lines = 0
        self.closed = False

    def readable(self) -> bool:
        return True

    def _mark(self, length: int) -> bytes:
        self.long_lines += 1
        return f"{_LONG_LINE_MARK}{length}>".encode()

    def read(self, size: int = -1) -> bytes:
        while True:
            data = self._raw.read(size)
            if not data:  # end of the stream: what is left
                if self._dropping >= 0:
                    out, self._dropping = self._mark(self._dropping), -1
                    return out
                out, self._pending = self._pending, b""
                return out
            out = self._feed(bytes(data))
            if out:
                return out

    def _feed(self, data: bytes) -> bytes:
        parts: list[bytes] = []
        if self._dropping >= 0:
            i = data.find(b"\n")
            if i < 0:
                self._dropping += len(data)
                return b""
            parts.append(self._mark(self._dropping + i) + b"\n")
            self._dropping = -1
            data = data[i + 1 :]
        buf = self._pending + data
        self._pending = b""
        nl = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
        starts = np.concatenate([[0], nl + 1])
        lengths = nl - starts[:-1]
        at = 0
        if lengths.size and int(lengths.max()) > self.limit:
            for k in np.flatnonzero(lengths > self.limit).tolist():
                parts.append(buf[at : int(starts[k])])
                parts.append(self._mark(int(lengths[k])) + b"\n")
                at = int(nl[k]) + 1
        tail_at = int(starts[-1])
        parts.append(buf[at:tail_at])
        tail = buf[tail_at:]
        if len(tail) > self.limit:
            self._dropping = len(tail)
        else:
            self._pending = tail
        return b"".join(parts)

    def close(self) -> None:
        self.closed = True
        self._raw.close()


class Utf8Guard:
    """A byte stream passed through unchanged while it is UTF-8; bytes that are not are replaced.

    pyarrow's CSV reader hands a row it cannot split to ``invalid_row_handler`` as text, and
    fails the whole file (after printing an "Exception ignored" traceback) when that row's bytes
    are not UTF-8. Reading through this guard keeps such a row quarantinable: each chunk is
    checked with one strict decode (memory speed for ASCII) and, only where that fails, every
    byte that is not UTF-8 becomes U+FFFD. ``replaced`` says that happened, so the reader then
    quarantines every row holding U+FFFD as ``bad_encoding``.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._pending = b""
        self.replaced = False
        self.closed = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data is None:
            data = b""
        data = self._pending + bytes(data)
        if not data:
            return b""
        at_end = size is None or size < 0 or len(data) == len(self._pending)
        keep = 0 if at_end else _incomplete_tail(data)
        if keep:
            data, self._pending = data[:-keep], data[-keep:]
        else:
            self._pending = b""
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("utf-8", "replace").encode("utf-8")
            self.replaced = True
        if not data and self._pending:  # a size too small to finish one character
            return self.read(size)
        return data

    def close(self) -> None:
        self.closed = True
        self._raw.close()


class CsvRowReader:
    """Stream a CSV as blocks of text columns, keeping rows it cannot use for quarantine.

    Every selected column is read as bytes and checked as UTF-8 text (no type guessing, so
    one odd value never fails a whole block). Rows with the wrong number of fields
    (``malformed_line``) or bytes that are not UTF-8 (``bad_encoding``) come back with their
    data row number, beside the block they were met in.
    """

    def __init__(
        self,
        source: Any,
        where: str,
        *,
        columns: list[str] | None = None,
        column_names: list[str] | None = None,
        delimiter: str = ",",
        block_size: int = 8 << 20,
        skip_rows: int = 0,
        ignore_line: Any = None,
        row_offset: int = 0,
    ) -> None:
        self.where = where
        self.delimiter = delimiter
        self._invalid: list[tuple] = []  # (row number, text) or (..., reason)
        self._ignore = ignore_line
        self.header_lines = 0 if column_names else 1
        self.header_lines += skip_rows
        types = {c: pa.binary() for c in (columns or column_names or [])}
        read = pacsv.ReadOptions(
            use_threads=False,
            block_size=block_size,
            column_names=column_names,
            skip_rows=skip_rows,
        )
        parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=self._on_invalid)
        convert = pacsv.ConvertOptions(
            include_columns=columns,
            column_types=types,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        self._guard = Utf8Guard(LineLengthGuard(source))
        try:
            self._reader = pacsv.open_csv(
                self._guard, read_options=read, parse_options=parse, convert_options=convert
            )
        except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
            raise InputError(f"{where}: not a readable CSV file: {_first_line(exc)}") from None
        self.schema = pa.schema([pa.field(n, pa.string()) for n in self._reader.schema.names])
        self._rows = row_offset  # the number of the last valid data row so far
        self._row_offset = row_offset
        self._taken: set[int] = set()  # numbers of invalid rows after the last valid one

    def _on_invalid(self, row: Any) -> str:
        text = row.text or ""
        if self._ignore is not None and self._ignore(text):
            return "skip"
        number = row.number if row.number is not None else -1
        if text.startswith(_LONG_LINE_MARK):
            length = text[len(_LONG_LINE_MARK) :].rstrip(">\r\n")
            self._invalid.append((number, f"a line of {length} bytes", R_LINE_TOO_LONG))
        else:
            self._invalid.append((number, text))
        return "skip"

    def _valid_numbers(self, n: int, invalid: list[int]) -> np.ndarray:
        """The data row numbers of the next ``n`` valid rows: the next numbers that are not
        those of invalid rows (``invalid``: the numbers reported since the last block)."""
        self._taken.update(invalid)
        taken = np.array(sorted(t for t in self._taken if t > self._rows), dtype=np.int64)
        numbers = np.arange(self._rows + 1, self._rows + n + len(taken) + 1, dtype=np.int64)
        if len(taken):
            numbers = numbers[~np.isin(numbers, taken)][:n]
        if n:
            self._rows = int(numbers[-1])
        self._taken = {t for t in self._taken if t > self._rows}
        return numbers

    def _number(self, invalid: tuple) -> tuple:
        """An invalid row with its data row number (counted from the file's first data row)."""
        return (max(invalid[0] - self.header_lines, 0) + self._row_offset, *invalid[1:])

    def _as_text(
        self, block: pa.RecordBatch, numbers: np.ndarray
    ) -> tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str, str]]]:
        """The block with text columns; rows that are not UTF-8 split off for quarantine."""
        bad = np.zeros(block.num_rows, dtype=bool)
        if self._guard.replaced:  # the stream met bytes that are not UTF-8: find their rows
            for col in block.columns:
                bad |= _np_bool(pc.match_substring(col, "\ufffd"))
        rejected: list[tuple[int, str, str]] = []
        if bad.any():
            idx = np.flatnonzero(bad)
            for i in idx:
                raw = [c[int(i)].as_py() or b"" for c in block.columns]
                text = self.delimiter.join(v.decode("utf-8", "replace") for v in raw)
                rejected.append((int(numbers[i]), text, "bad_encoding"))
            keep = pa.array(~bad)
            block = block.filter(keep)
            numbers = numbers[~bad]
        cols = [c.cast(pa.string()) for c in block.columns]
        return pa.RecordBatch.from_arrays(cols, schema=self.schema), numbers, rejected

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[tuple]]]:
        """Yield (block, data row numbers of its rows, rejected rows met while reading it)."""
        while True:
            try:
                block = self._reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{self.where}: unreadable CSV: {_first_line(exc)}") from None
            invalid, self._invalid = self._invalid, []
            # row numbers of the invalid rows are physical-ish (counting the header); data rows
            # are numbered from 1 in file order, valid and invalid together. pyarrow may meet
            # an invalid row while reading ahead, before the block it belongs to is yielded
            inv_rows: list[tuple] = [self._number(r) for r in invalid]
            numbers = self._valid_numbers(block.num_rows, [r[0] for r in inv_rows])
            block, numbers, rejected = self._as_text(block, numbers)
            yield block, numbers, inv_rows + rejected
        if self._invalid:  # rows after the last block
            invalid, self._invalid = self._invalid, []
            inv_rows = [self._number(r) for r in invalid]
            yield (
                pa.RecordBatch.from_pydict(
                    {n: pa.array([], pa.string()) for n in self.schema.names}
                ),
                np.zeros(0, dtype=np.int64),
                inv_rows,
            )


def _first_line(exc: BaseException) -> str:
    """The first line of an error, with what a terminal cannot show replaced, cut at 200."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 200 else text[:197] + "..."


def _check_text(path: Path, head: bytes) -> None:
    """An InputError if a CSV file's first line (its header) is not text: binary data.

    Later lines may hold bad bytes; those rows are quarantined (``bad_encoding``).
    """
    line = head.split(b"\n", 1)[0]
    nul = line.find(b"\x00")
    try:
        line.decode("utf-8")
        bad = -1
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the end of the head is fine
        bad = exc.start if exc.start < len(line) - 3 or len(line) < len(head) else -1
    found = [i for i in (nul, bad) if i >= 0]
    if found:
        raise InputError(f"{path}: not a text CSV file (binary data at byte {min(found)})")


def read_mapped_csv(
    path: Path,
    converter: ColumnConverter,
    mapping: dict[str, str],
    *,
    delimiter: str,
    batch_rows: int,
    source: Any = None,
    column_names: list[str] | None = None,
    ignore_line: Any = None,
    row_offset: int = 0,
) -> Iterator[Batch]:
    """Read a CSV whose columns ``mapping`` ties to v1 fields; yield converted batches.

    ``row_offset`` data rows came before ``source`` (their numbers continue from it).
    """
    where = str(path)
    wanted = list(dict.fromkeys(mapping.values()))
    reader = CsvRowReader(
        source if source is not None else open_text_stream(path),
        where,
        columns=wanted,
        column_names=column_names,
        delimiter=delimiter,
        ignore_line=ignore_line,
        row_offset=row_offset,
    )
    acc = BatchAccumulator(batch_rows)
    for block, numbers, invalid in reader:
        cols = {fname: block.column(col) for fname, col in mapping.items()}
        extra = invalid_lines_quarantine(where, invalid, label="row")
        batch = converter.convert(cols, numbers, label="row", extra_quarantine=extra)
        yield from acc.add(batch)
    yield from acc.flush()


#: bytes the plain-CSV fast path parses at a time (as many as pyarrow's blocks)
SCAN_BLOCK_BYTES = 8 << 20
_SCAN_KIND = {
    **dict.fromkeys(("time_start", "time_end"), TIME),
    **dict.fromkeys(("exporter", "src_addr", "dst_addr"), ADDRESS),
    **dict.fromkeys((*_UINT_FIELDS, "proto"), UINT),
}


class _Prefixed:
    """A byte stream: ``head`` first, then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: Any) -> None:
        self._head = head
        self._raw = raw
        self.closed = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                out, self._head = self._head + bytes(self._raw.read()), b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return bytes(self._raw.read(size))

    def close(self) -> None:
        self.closed = True
        self._raw.close()


def _scan_plan(
    header: list[str], mapping: dict[str, str]
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int]]] | None:
    """Per CSV column its kind and output slot, per field its (kind, slot); None: text path.

    The fast path needs every mapped field to be one it parses (not ``duration``), distinct
    column names, and each column read as one kind.
    """
    if len(header) < 2 or len(set(header)) != len(header):
        return None
    kinds = np.zeros(len(header), dtype=np.int8)
    slots = np.zeros(len(header), dtype=np.int64)
    used = {TIME: 0, ADDRESS: 0, UINT: 0}
    fields: dict[str, tuple[int, int]] = {}
    for fname, col in mapping.items():
        kind = _SCAN_KIND.get(fname)
        if kind is None:
            return None
        c = header.index(col)
        if kinds[c] == SKIP:
            kinds[c], slots[c] = kind, used[kind]
            used[kind] += 1
        elif kinds[c] != kind:
            return None
        fields[fname] = (kind, int(slots[c]))
    return kinds, slots, fields


def read_csv_file(
    path: Path,
    converter: ColumnConverter,
    mapping: dict[str, str],
    header: list[str],
    *,
    delimiter: str,
    batch_rows: int,
) -> Iterator[Batch]:
    """Read a CSV file (``header``: its first line) through the fast path while it is plain.

    Blocks of whole lines are parsed by :func:`~.csv_scan.scan_block` into typed columns and
    checked by ``converter`` like any typed source. The first block that is not plain, and
    everything after it, goes through :func:`read_mapped_csv` (the text path), with rows
    numbered on from where the fast path stopped; so does a block whose typed rows would be
    quarantined, so that quarantine details quote the text. The batches are the text path's.
    """
    plan = _scan_plan(header, mapping)
    stream = open_text_stream(path)
    text_path = {"delimiter": delimiter, "batch_rows": batch_rows}
    if plan is None or len(delimiter.encode()) != 1:
        yield from read_mapped_csv(path, converter, mapping, source=stream, **text_path)
        return
    kinds, slots, fields = plan
    pending = _read_block(path, stream)
    end_of_header = pending.find(b"\n") + 1
    if end_of_header == 0 or pending[:end_of_header].count(b'"') % 2:
        source = _Prefixed(pending, stream)
        yield from read_mapped_csv(path, converter, mapping, source=source, **text_path)
        return
    pending = pending[end_of_header:]
    acc = BatchAccumulator(batch_rows)
    rows_done = 0
    while True:
        more = _read_block(path, stream)
        data = pending + more if pending else more
        if more:
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) <= MAX_LINE_BYTES:  # a line not finished yet
                pending = data
                continue
            block, pending = memoryview(data)[:cut], data[cut:]
        else:
            block, pending = memoryview(data), b""
            if not block:
                break
        batch = _scan(block, delimiter, kinds, slots, fields, converter, rows_done)
        if batch is None:  # not plain: this block and the rest through the text path
            yield from acc.flush()
            yield from read_mapped_csv(
                path, converter, mapping, source=_Prefixed(bytes(block) + pending, stream),
                column_names=header, row_offset=rows_done, **text_path
            )  # fmt: skip
            return
        if batch.quarantine.num_rows:  # quote the text in quarantine: the text path's batch
            batch = _text_block(path, block, converter, mapping, header, delimiter, rows_done)
        rows_done += int(batch.records_read or 0)
        yield from acc.add(batch)
        if not more:
            break
    yield from acc.flush()


def _read_block(path: Path, stream: Any) -> bytes:
    """The next bytes of ``stream`` (empty at its end), or an InputError naming ``path``."""
    try:
        return bytes(stream.read(SCAN_BLOCK_BYTES))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: unreadable CSV: {_first_line(exc)}") from None


def _scan(
    block: memoryview,
    delimiter: str,
    kinds: np.ndarray,
    slots: np.ndarray,
    fields: dict[str, tuple[int, int]],
    converter: ColumnConverter,
    rows_done: int,
) -> Batch | None:
    """One block through the fast path, or None if it is not plain."""
    data = np.frombuffer(block, dtype=np.uint8)
    capacity = len(data) // len(kinds) + 1  # a line holds a byte per field at least
    counts = [max(1, int(np.count_nonzero(kinds == k))) for k in (TIME, ADDRESS, UINT)]
    times = np.empty((counts[0], capacity), dtype=np.int64)
    hi = np.empty((counts[1], capacity), dtype=np.uint64)
    lo = np.empty((counts[1], capacity), dtype=np.uint64)
    uints = np.empty((counts[2], capacity), dtype=np.uint64)
    rows, plain = scan_block(data, byte_classes(ord(delimiter)), kinds, slots, times, hi, lo, uints)
    if not plain:
        return None
    columns: dict[str, pa.Array] = {}
    for fname, (kind, slot) in fields.items():
        if kind == TIME:
            columns[fname] = pa.array(times[slot, :rows], pa.timestamp("us", tz="UTC"))
        elif kind == ADDRESS:
            columns[fname] = hilo_to_bytes16(hi[slot, :rows], lo[slot, :rows])
        else:
            columns[fname] = pa.array(uints[slot, :rows], pa.uint64())
    positions = np.arange(rows_done + 1, rows_done + rows + 1, dtype=np.int64)
    return converter.convert(columns, positions, label="row")


def _text_block(
    path: Path,
    block: memoryview,
    converter: ColumnConverter,
    mapping: dict[str, str],
    header: list[str],
    delimiter: str,
    rows_done: int,
) -> Batch:
    """One block of whole lines through the text path, as one batch."""
    batches = list(
        read_mapped_csv(
            path, converter, mapping, delimiter=delimiter, batch_rows=1 << 62,
            source=pa.BufferReader(pa.py_buffer(block)), column_names=header,
            row_offset=rows_done,
        )
    )  # fmt: skip
    (batch,) = batches  # whole lines, one accumulator: one batch
    return batch


def csv_header(path: Path, delimiter: str = ",") -> list[str]:
    """The column names of a CSV file (first line), or an InputError naming the file.

    Only the header is parsed (Python's csv module, for quoting): rows further down, however
    malformed, are the row reader's to quarantine.
    """
    stream = open_text_stream(path)
    try:
        head = stream.read(1 << 16)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable CSV file: {_first_line(exc)}") from None
    finally:
        stream.close()
    _check_text(path, head)
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    if not line.strip():
        raise InputError(f"{path}: not a readable CSV file: no header line")
    try:
        return next(std_csv.reader([line], delimiter=delimiter))
    except std_csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV file: header: {_first_line(exc)}") from None


@register
class CsvImporter(Importer):
    """Any CSV of flows, given which column holds which field (``--csv-map``).

    Without a mapping, columns named like the v1 fields (``time_start``, ``src_addr``, ...) are
    used as they are. Counts are ``raw`` unless the mapping says ``counts = "scaled"``.
    """

    format: ClassVar[str] = "csv"
    counts: ClassVar[str] = COUNTS_RAW
    description: ClassVar[str] = "CSV with a column mapping (--csv-map)"
    sniff_priority: ClassVar[int] = 90  # generic: only when no specific format claims a file

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        line = first_line(head)
        if line is None:
            return False
        names = {c.strip().strip('"') for c in line.split(",")}
        return {"time_start", "src_addr", "dst_addr", "bytes"} <= names

    def counts_for(self, options: ImportOptions) -> str:
        """``raw`` or ``scaled``, as the mapping (or --counts) says."""
        override = options.get("counts")
        if override in (COUNTS_RAW, COUNTS_SCALED):
            return override
        return parse_csv_map(options.get("csv_map")).counts

    def read(self, path: Path, options: ImportOptions) -> Iterator[Batch]:
        spec = parse_csv_map(options.get("csv_map"))
        header = csv_header(path, spec.delimiter)
        mapping = spec.field_map()
        if not mapping:
            mapping = {c: c for c in header if c in MAPPABLE_FIELDS}
        absent = sorted({c for c in mapping.values() if c not in header})
        if absent:
            raise InputError(
                f"{path}: no column {absent[0]!r} in the CSV header "
                f"(columns: {', '.join(header[:20])}); fix --csv-map"
            )
        converter = ColumnConverter(
            str(path),
            time_unit=options.get("time_unit") or spec.time_unit,
            constants=dict(spec.constants),
            now_us=options.get("now_us") or time.time_ns() // 1000,
        )
        missing = [f for f in converter.required if f not in mapping and f not in spec.constants]
        if missing:
            raise InputError(
                f"{path}: no column mapped to {', '.join(missing)} "
                f"(columns: {', '.join(header[:20])}); give --csv-map FIELD=COLUMN,..."
            )
        yield from read_csv_file(
            path,
            converter,
            mapping,
            header,
            delimiter=spec.delimiter,
            batch_rows=options.batch_rows,
        )
