"""Readers for prefix and range tables: CSV prefix lists, plain CIDR lists, ip-location-db range
CSVs, pyasn .dat files and IPFire libloc dumps.

These are the "who announces this address" sources (ASN, organisation, country) and the
simplest user lists. Each keeps the line number of every row so errors and
`flowatlas classify lookup` can point at the line that matched.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from flowatlas.addresses import is_v4, parse_addresses
from flowatlas.classify.compiler import AsnTable, Layer
from flowatlas.classify.sources._common import (
    asn_table,
    check_options,
    parse_asn_column,
    prefix_layer,
    provenance,
    read_bytes,
    read_text,
    text_lines,
    tier_of,
    with_options,
)
from flowatlas.errors import InputError


def _nonblank_lines(data: bytes) -> np.ndarray:
    """1-based numbers of the non-blank lines of ``data`` (how CSV rows map to lines)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [arr.size]])
    length = stops - starts
    # a line of only '\r' is blank too
    only_cr = (length == 1) & (arr[np.minimum(starts, max(arr.size - 1, 0))] == 13)
    keep = (length > 0) & ~only_cr
    return np.flatnonzero(keep).astype(np.int64) + 1


def _read_csv(data: bytes, path: Path, **kwargs: Any) -> pa.Table:
    try:
        return pacsv.read_csv(pa.BufferReader(data), **kwargs)
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: not a well-formed CSV file: {exc}") from None


# --------------------------------------------------------------------------- prefix-csv


def read_prefix_csv(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer]:
    """A CSV prefix list with a header: ``prefix`` and any of network_type, asn, org, country,
    metro.

    The simplest source, and the one ``flowatlas synth`` writes for its world.
    """
    check_options(options, set(), path, "prefix-csv")
    data = read_bytes(path)
    table = _read_csv(
        data,
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={
                c: pa.string() for c in ("prefix", "network_type", "asn", "org", "country", "metro")
            },
            strings_can_be_null=True,
        ),
    )
    if "prefix" not in table.column_names:
        raise InputError(f"{path}: prefix CSV needs a 'prefix' column (line 1)")
    lines = _nonblank_lines(data)[1 : table.num_rows + 1]
    cols = {}
    for c in ("network_type", "org", "country", "metro"):
        if c in table.column_names:
            cols[c] = table.column(c)
    if "asn" in table.column_names:
        cols["asn"] = parse_asn_column(table.column("asn"), lines, path)
    attrs = pa.table(cols) if cols else pa.table({"_": pa.nulls(table.num_rows)}).drop(["_"])
    prefixes = table.column("prefix").combine_chunks().fill_null("")
    return [prefix_layer(path, name, "prefix-csv", prefixes, lines, attrs, options, tier="prefix")]


# --------------------------------------------------------------------------- cidr-list


def read_cidr_list(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer]:
    """One prefix (or address) per line; '#', ';' and '//' start comments.

    Every prefix gets the attributes the options give (network_type, org, asn, ...): such lists
    (cloud ranges, datacenter lists, a team's own list) say only "these are X".
    """
    check_options(options, set(), path, "cidr-list")
    rows, lines = text_lines(read_text(path))
    rows = [r.split()[0] if r else r for r in rows]
    n = len(rows)
    attrs = pa.table({"_": pa.nulls(n)}).drop(["_"])
    return [prefix_layer(path, name, "cidr-list", rows, lines, attrs, options, tier="prefix")]


# --------------------------------------------------------------------------- range-csv


def read_range_csv(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer]:
    """ip-location-db style ranges: ``start,end,asn,org`` (asn files) or ``start,end,country``
    (country files), inclusive, no header; ``columns`` (an option) names other layouts.
    """
    check_options(options, {"columns"}, path, "range-csv")
    data = read_bytes(path)
    first_line = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    first = next(csv.reader([first_line]), [])
    columns = options.get("columns")
    header = False
    if columns is None:
        probe = parse_addresses([first[0].strip().strip('"')], strict=False)[2][0]
        header = not probe and len(first) >= 2
        if header:
            columns = [c.strip().strip('"').lower() for c in first]
            columns = ["start", "end", *columns[2:]]
        elif len(first) == 4:
            columns = ["start", "end", "asn", "org"]
        elif len(first) == 3:
            columns = ["start", "end", "country"]
        else:
            raise InputError(
                f"{path}: line 1: expected start,end,asn,org or start,end,country "
                f"(set the 'columns' option for other layouts), got {len(first)} columns"
            )
    columns = [str(c) for c in columns]
    known = {"start", "end", "asn", "org", "country", "metro", "network_type"}
    for c in columns:
        if c not in known and not c.startswith("_"):
            raise InputError(f"{path}: unknown range-csv column {c!r} (known: {sorted(known)})")
    table = _read_csv(
        data,
        path,
        read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1 if header else 0),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns}, strings_can_be_null=True
        ),
    )
    lines = _nonblank_lines(data)[(1 if header else 0) :][: table.num_rows]
    s_hi, s_lo, s_ok = parse_addresses(table.column("start").fill_null(""), strict=False)
    e_hi, e_lo, e_ok = parse_addresses(table.column("end").fill_null(""), strict=False)
    bad = ~(s_ok & e_ok)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        which = "start" if not s_ok[r] else "end"
        raise InputError(
            f"{path}: line {int(lines[r])}: {which} is not an IP address: "
            f"{table.column(which)[r].as_py()!r}"
        )
    mixed = is_v4(s_hi, s_lo) != is_v4(e_hi, e_lo)
    if mixed.any():
        r = int(np.flatnonzero(mixed)[0])
        raise InputError(f"{path}: line {int(lines[r])}: range mixes IPv4 and IPv6")
    cols: dict[str, Any] = {}
    for c in ("network_type", "org", "country", "metro"):
        if c in columns:
            cols[c] = table.column(c)
    if "asn" in columns:
        cols["asn"] = parse_asn_column(table.column("asn"), lines, path)
    attrs = with_options(pa.table(cols), options, path)
    return [
        Layer(
            name,
            s_hi,
            s_lo,
            e_hi,
            e_lo,
            attrs,
            provenance(path, name, "range-csv", table.num_rows, options.get("date")),
            tier=tier_of(options, "routing"),
            lines=lines,
        )
    ]


# --------------------------------------------------------------------------- pyasn


def read_pyasn(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer]:
    """pyasn IPASN .dat files: ``prefix<TAB>asn`` lines, ';' comments (IPv4 and IPv6)."""
    check_options(options, set(), path, "pyasn")
    text = read_text(path)
    prefixes, asns, lines = [], [], []
    date = None
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(";"):
            if "Converted on" in line and date is None:
                date = line.split(":", 1)[1].strip()
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"{path}: line {i}: expected 'prefix<TAB>asn', got {raw!r}")
        prefixes.append(parts[0])
        asns.append(parts[1])
        lines.append(i)
    line_arr = np.asarray(lines, dtype=np.int64)
    asn = parse_asn_column(pa.array(asns, pa.string()), line_arr, path, allow_blank=False)
    return [
        prefix_layer(
            path,
            name,
            "pyasn",
            prefixes,
            line_arr,
            pa.table({"asn": asn}),
            options,
            tier="routing",
            date=date,
        )
    ]


# --------------------------------------------------------------------------- libloc


def read_libloc(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer | AsnTable]:
    """IPFire libloc data: the text of ``location dump`` (Debian's libloc-database), or its
    tab-separated export ``prefix, asn, country, flags`` (optionally with ``asnames``, a
    tab-separated ``asn, name`` file, as an option).

    The dump holds AS names (``aut-num:`` / ``name:`` blocks) and networks (``net:`` blocks
    with ``aut-num:``, ``country:`` and flags); it gives a routing layer and an ASN table of
    organisation names.
    """
    check_options(options, {"asnames"}, path, "libloc")
    text = read_text(path)
    head = text[:4096]
    if "\nnet:" in head or "\naut-num:" in head or head.startswith(("net:", "aut-num:")):
        return _libloc_dump(path, name, options, text)
    return _libloc_tsv(path, name, options, text)


def _libloc_dump(
    path: Path, name: str, options: Mapping[str, Any], text: str
) -> list[Layer | AsnTable]:
    lines = pa.array(text.split("\n"), pa.string())
    stripped = pc.utf8_trim_whitespace(lines)
    is_comment = pc.starts_with(stripped, "#")
    blank = np.asarray(
        pc.or_(pc.equal(stripped, ""), is_comment).to_numpy(zero_copy_only=False), dtype=bool
    )
    parts = pc.split_pattern(stripped, ":", max_splits=1)
    key = pc.list_element(parts, 0)
    nparts = np.asarray(pc.list_value_length(parts).to_numpy(zero_copy_only=False), dtype=np.int64)
    bad = ~blank & (nparts != 2)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path}: line {r + 1}: expected 'key: value', got {lines[r].as_py()!r}")
    value = pc.utf8_trim_whitespace(
        pc.list_element(pc.if_else(pa.array(blank), pa.scalar(["", ""]), parts), 1)
    )
    key_np = np.asarray(key.to_numpy(zero_copy_only=False), dtype=object)
    block = np.cumsum(blank)  # lines of one block share a number
    n_blocks = int(block[-1]) + 1 if block.size else 1

    def by_block(k: str) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero((key_np == k) & ~blank)
        pos = np.full(n_blocks, -1, dtype=np.int64)
        pos[block[idx]] = idx
        return idx, pos

    net_idx, _ = by_block("net")
    asnum_idx, asnum_pos = by_block("aut-num")
    _, name_pos = by_block("name")
    _, country_pos = by_block("country")
    net_blocks = np.zeros(n_blocks, dtype=bool)
    net_blocks[block[net_idx]] = True

    def column(pos: np.ndarray, rows: np.ndarray) -> pa.Array:
        p = pos[block[rows]]
        return value.take(pa.array(p, pa.int64(), mask=p < 0))

    out: list[Layer | AsnTable] = []
    # AS blocks: aut-num + name, in blocks without 'net:'
    as_rows = asnum_idx[~net_blocks[block[asnum_idx]]]
    if as_rows.size:
        as_lines = as_rows + 1
        as_nums = parse_asn_column(value.take(pa.array(as_rows)), as_lines, path, allow_blank=False)
        out.append(
            asn_table(
                path,
                f"{name} (AS names)",
                "libloc",
                np.asarray(as_nums.to_numpy(), np.uint32),
                as_lines,
                pa.table({"org": column(name_pos, as_rows)}),
                {k: v for k, v in options.items() if k in ("date",)},
            )
        )
    if net_idx.size:
        net_lines = net_idx + 1
        asn = parse_asn_column(column(asnum_pos, net_idx), net_lines, path)
        attrs = pa.table({"asn": asn, "country": column(country_pos, net_idx)})
        date = None
        for line in text[:2048].splitlines():
            if line.startswith("# Generated:"):
                date = line.split(":", 1)[1].strip()
        out.insert(
            0,
            prefix_layer(
                path,
                name,
                "libloc",
                value.take(pa.array(net_idx)),
                net_lines,
                attrs,
                options,
                tier="routing",
                date=date,
            ),
        )
    if not out:
        raise InputError(f"{path}: no 'net:' or 'aut-num:' blocks: not a libloc dump")
    return out


def _libloc_tsv(
    path: Path, name: str, options: Mapping[str, Any], text: str
) -> list[Layer | AsnTable]:
    data = text.encode()
    head = 0  # leading comment lines (the export's header)
    for line in text[:65536].split("\n"):
        if not line.startswith("#"):
            break
        head += 1
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(
                column_names=["prefix", "asn", "country", "flags"], skip_rows=head
            ),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in ("prefix", "asn", "country", "flags")},
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(
            f"{path}: expected tab-separated 'prefix, asn, country, flags' "
            f"(or a `location dump`): {exc}"
        ) from None
    line_arr = _nonblank_lines(data)[head:][: table.num_rows]
    prefixes = table.column("prefix").combine_chunks().fill_null("")
    attrs = pa.table(
        {
            "asn": parse_asn_column(table.column("asn"), line_arr, path),
            "country": table.column("country"),
        }
    )
    out: list[Layer | AsnTable] = [
        prefix_layer(
            path,
            name,
            "libloc",
            prefixes,
            line_arr,
            attrs,
            {k: v for k, v in options.items() if k != "asnames"},
            tier="routing",
        )
    ]
    names_path = options.get("asnames")
    if names_path:
        npath = Path(str(names_path))
        if not npath.is_absolute():
            npath = path.parent / npath
        nums, orgs, nlines = [], [], []
        for i, raw in enumerate(read_text(npath).split("\n"), start=1):
            if not raw.strip() or raw.startswith("#"):
                continue
            parts = raw.rstrip("\r").split("\t", 1)
            nums.append(parts[0])
            orgs.append(parts[1].strip() if len(parts) > 1 and parts[1].strip() else None)
            nlines.append(i)
        nl = np.asarray(nlines, dtype=np.int64)
        asn_col = parse_asn_column(pa.array(nums, pa.string()), nl, npath, allow_blank=False)
        out.append(
            asn_table(
                npath,
                f"{name} (AS names)",
                "libloc-asnames",
                np.asarray(asn_col.to_numpy()),
                nl,
                pa.table({"org": pa.array(orgs, pa.string())}),
                {},
            )
        )
    return out
