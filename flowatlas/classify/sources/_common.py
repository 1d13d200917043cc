"""What every source reader shares: reading (compressed) files, provenance, line-numbered errors.

A reader turns one file into layers (address ranges with attributes) and/or ASN tables, and
fails with an :class:`~flowatlas.errors.InputError` naming the file and line of the first bad
entry: a table compiled from a source it misread would be silently wrong.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowatlas.addresses import parse_prefixes, prefix_bounds
from flowatlas.classify.compiler import ATTRIBUTES, AsnTable, Layer
from flowatlas.errors import InputError

#: options every reader accepts (besides its own)
COMMON_OPTIONS = {"tier", "network_type", "org", "asn", "country", "metro", "date"}


def file_sha256(path: Path) -> str:
    """Content hash of a source file, recorded in every table and cube built from it."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_bytes(path: Path) -> bytes:
    """A source file's content, decompressed (gzip, bzip2, xz are recognised by content)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: classification source not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a source file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        if raw[:3] == b"BZh":
            # truncated archives (e.g. 'first MB' samples) decompress as far as they go
            return _bz2_partial(raw)
        if raw[:6] == b"\xfd7zXZ\x00":
            return lzma.decompress(raw)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputError(f"{path}: corrupt compressed file: {exc}") from None
    return raw


def _bz2_partial(raw: bytes) -> bytes:
    dec = bz2.BZ2Decompressor()
    out = io.BytesIO()
    try:
        out.write(dec.decompress(raw))
    except EOFError:
        pass
    return out.getvalue()


def read_text(path: Path) -> str:
    """A source file as text (UTF-8, undecodable bytes replaced)."""
    return read_bytes(path).decode("utf-8", errors="replace")


def provenance(
    path: Path, name: str, fmt: str, rows: int, date: str | None = None, **extra: Any
) -> dict[str, Any]:
    """What tables and cubes record about a source: name, path, format, hash, date, rows."""
    p = {
        "name": name,
        "path": str(path),
        "format": fmt,
        "sha256": file_sha256(path),
        "rows": int(rows),
    }
    if date:
        p["date"] = str(date)
    p.update({k: v for k, v in extra.items() if v is not None})
    return p


def option_str(options: Mapping[str, Any], key: str, path: Path) -> str | None:
    """A string option (None when absent); a wrong type is an error naming the source."""
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{path}: option {key!r} must be text, got {value!r}")
    return value


def check_options(options: Mapping[str, Any], allowed: set[str], path: Path, fmt: str) -> None:
    """Unknown options are errors (a typo must not silently change a table)."""
    unknown = sorted(set(options) - allowed - COMMON_OPTIONS)
    if unknown:
        raise InputError(
            f"{path}: option {unknown[0]!r} is not known to format {fmt!r} "
            f"(known: {', '.join(sorted(allowed | COMMON_OPTIONS))})"
        )


def tier_of(options: Mapping[str, Any], default: str) -> str:
    """The layer tier: the ``tier`` option or the format's default."""
    return str(options.get("tier") or default)


def constant_columns(options: Mapping[str, Any], n: int, path: Path) -> dict[str, pa.Array]:
    """Columns set for every row by options (network_type, org, asn, country, metro)."""
    cols: dict[str, pa.Array] = {}
    for key in ("network_type", "org", "country", "metro"):
        v = option_str(options, key, path)
        if v is not None:
            cols[key] = pa.array([v] * n, pa.string())
    if options.get("asn") is not None:
        asn = parse_asn_value(options["asn"])
        if asn is None:
            raise InputError(f"{path}: option 'asn' is not an AS number: {options['asn']!r}")
        cols["asn"] = pa.array(np.full(n, asn, np.uint32), pa.uint32())
    return cols


def with_options(attrs: pa.Table, options: Mapping[str, Any], path: Path) -> pa.Table:
    """``attrs`` with columns that options set for every row replacing the source's own."""
    for key, col in constant_columns(options, attrs.num_rows, path).items():
        if key in attrs.column_names:
            attrs = attrs.set_column(attrs.column_names.index(key), key, col)
        else:
            attrs = attrs.append_column(key, col)
    return attrs.select([c for c in ATTRIBUTES if c in attrs.column_names])


def parse_asn_value(value: Any) -> int | None:
    """'AS13335', 'as13335', '13335' or 13335 -> 13335; None if it is not an AS number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**32 else None
    text = str(value).strip()
    if text[:2].lower() == "as":
        text = text[2:]
    if not text.isdigit():
        return None
    n = int(text)
    return n if n < 2**32 else None


def parse_asn_column(
    values: pa.Array | pa.ChunkedArray, lines: np.ndarray, path: Path, *, allow_blank: bool = True
) -> pa.Array:
    """Text ASNs ('AS123', '123', blank) -> uint32 (blank -> null); errors name the line."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    text = pc.utf8_trim_whitespace(values.cast(pa.string()))
    text = pc.replace_substring_regex(text, r"^[Aa][Ss]", "")
    blank = pc.fill_null(pc.equal(text, ""), True)
    ok = pc.match_substring_regex(text, r"^[0-9]{1,10}$")
    ok = pc.or_(pc.fill_null(ok, False), blank if allow_blank else pa.scalar(False))
    ok_np = np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)
    if not ok_np.all():
        r = int(np.flatnonzero(~ok_np)[0])
        raise InputError(f"{path}: line {int(lines[r])}: not an AS number: {values[r].as_py()!r}")
    nums = pc.if_else(blank, pa.scalar(None, pa.string()), text)
    as_int = pc.cast(nums, pa.int64())
    too_big = pc.fill_null(pc.greater(as_int, 2**32 - 1), False)
    too_big = np.asarray(too_big.to_numpy(zero_copy_only=False), bool)
    if too_big.any():
        r = int(np.flatnonzero(too_big)[0])
        raise InputError(f"{path}: line {int(lines[r])}: AS number too large: {values[r]}")
    return pc.cast(as_int, pa.uint32())


def text_lines(text: str) -> tuple[list[str], np.ndarray]:
    """Data lines of a line-oriented text file and their 1-based line numbers.

    Blank lines and comment lines (starting with '#', ';' or '//') are dropped; a trailing
    comment after '#' is cut.
    """
    out: list[str] = []
    numbers: list[int] = []
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith((";", "//")):
            continue
        out.append(line)
        numbers.append(i)
    return out, np.asarray(numbers, dtype=np.int64)


def prefix_layer(
    path: Path,
    name: str,
    fmt: str,
    prefixes: Sequence[str] | pa.Array,
    lines: np.ndarray,
    attrs: pa.Table,
    options: Mapping[str, Any],
    *,
    tier: str,
    date: str | None = None,
    **extra: Any,
) -> Layer:
    """A layer from CIDR text (one per row); the first bad prefix is an error naming its line."""
    arr = prefixes if isinstance(prefixes, pa.Array) else pa.array(list(prefixes), pa.string())
    arr = pc.utf8_trim_whitespace(arr.cast(pa.string()))
    hi, lo, length, ok = parse_prefixes(arr, source=str(path), strict=False)
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0])
        why = "not a CIDR prefix (or host bits set)"
        raise InputError(f"{path}: line {int(lines[r])}: {why}: {arr[r].as_py()!r}")
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, length)
    attrs = with_options(attrs, options, path)
    return Layer(
        name,
        s_hi,
        s_lo,
        e_hi,
        e_lo,
        attrs,
        provenance(path, name, fmt, len(arr), date or options.get("date"), **extra),
        tier=tier_of(options, tier),
        lines=np.asarray(lines, dtype=np.int64),
    )


def asn_table(
    path: Path,
    name: str,
    fmt: str,
    asns: np.ndarray,
    lines: np.ndarray,
    attrs: pa.Table,
    options: Mapping[str, Any],
    *,
    date: str | None = None,
    **extra: Any,
) -> AsnTable:
    """An ASN table; options network_type / org set every row's value."""
    for key in ("network_type", "org"):
        v = option_str(options, key, path)
        if v is not None:
            col = pa.array([v] * len(asns), pa.string())
            if key in attrs.column_names:
                attrs = attrs.set_column(attrs.column_names.index(key), key, col)
            else:
                attrs = attrs.append_column(key, col)
    tier = str(options.get("tier") or "asn")
    if tier not in ("asn", "override"):
        raise InputError(f"{path}: option 'tier' for an ASN source must be 'asn' or 'override'")
    return AsnTable(
        name,
        np.asarray(asns, dtype=np.uint32),
        attrs.select([c for c in ("network_type", "org") if c in attrs.column_names]),
        provenance(path, name, fmt, len(asns), date or options.get("date"), **extra),
        tier=tier,
        lines=np.asarray(lines, dtype=np.int64),
    )
