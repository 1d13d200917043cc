"""Readers for ASN -> class tables: bgp.tools asns.csv and tag lists, and generic ASN lists.

They give the ASN -> type tier of the precedence (and organisation names): an address whose
type no prefix list gives takes the type of the ASN that announces it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flowatlas.classify.compiler import AsnTable
from flowatlas.classify.sources._common import (
    asn_table,
    check_options,
    parse_asn_column,
    read_text,
)
from flowatlas.classify.taxonomy import ASN_LIST_CATEGORIES, BGPTOOLS_CLASSES, BGPTOOLS_TAGS
from flowatlas.errors import InputError


def _csv_rows(text: str, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """CSV rows (blank and '#' lines skipped) with their 1-based line numbers."""
    rows, lines = [], []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    for row in reader:
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        rows.append(row)
        lines.append(reader.line_num)
    return rows, lines


def read_bgptools_asns(path: Path, name: str, options: Mapping[str, Any]) -> list[AsnTable]:
    """bgp.tools ``asns.csv`` (``asn,name,class,cc``): class -> type, name -> organisation.

    The ``classes`` option (a table class -> type) replaces entries of the default mapping
    (T1 and Carrier -> ISP Tier1, Eyeball -> ISP Regional, Content -> Hosting).
    """
    check_options(options, {"classes"}, path, "bgptools-asns")
    classes: dict[str, str | None] = dict(BGPTOOLS_CLASSES)
    classes.update(dict(options.get("classes") or {}))
    rows, lines = _csv_rows(read_text(path), ",")
    if not rows or [c.strip().lower() for c in rows[0][:3]] != ["asn", "name", "class"]:
        raise InputError(f"{path}: line 1: expected the header 'asn,name,class,cc'")
    rows, lines = rows[1:], lines[1:]
    for r, row in enumerate(rows):
        if len(row) < 3:
            raise InputError(f"{path}: line {lines[r]}: expected asn,name,class,cc, got {row!r}")
        if row[2] not in classes:
            raise InputError(
                f"{path}: line {lines[r]}: unknown bgp.tools class {row[2]!r} "
                f"(known: {', '.join(sorted(classes))}; map it with the 'classes' option)"
            )
    line_arr = np.asarray(lines, np.int64)
    asns = parse_asn_column(pa.array([r[0] for r in rows]), line_arr, path, allow_blank=False)
    attrs = pa.table(
        {
            "network_type": pa.array([classes[r[2]] for r in rows], pa.string()),
            "org": pa.array([r[1].strip() or None for r in rows], pa.string()),
        }
    )
    return [
        asn_table(
            path, name, "bgptools-asns", np.asarray(asns.to_numpy()), line_arr, attrs, options
        )
    ]


def read_bgptools_tags(path: Path, name: str, options: Mapping[str, Any]) -> list[AsnTable]:
    """A bgp.tools tag list ``tags-<tag>.csv`` (``AS<n>,name``): tag -> type by the taxonomy.

    The tag comes from the file name (or the ``tag`` option); tags the taxonomy does not map
    need the ``network_type`` option. A folder reads every tags-*.csv whose tag is mapped.
    """
    check_options(options, {"tag"}, path, "bgptools-tags")
    if path.is_dir():
        out: list[AsnTable] = []
        for f in sorted(path.glob("tags-*.csv")):
            tag = f.name[len("tags-") : -len(".csv")]
            if tag in BGPTOOLS_TAGS:
                out.extend(read_bgptools_tags(f, f"{name}/{tag}", {**options, "tag": tag}))
        if not out:
            raise InputError(f"{path}: no tags-<tag>.csv files with a mapped tag")
        return out
    tag = str(options.get("tag") or path.name.removeprefix("tags-").split(".")[0])
    ntype = options.get("network_type") or BGPTOOLS_TAGS.get(tag)
    if ntype is None:
        raise InputError(
            f"{path}: bgp.tools tag {tag!r} has no network type in the taxonomy "
            f"(mapped: {', '.join(sorted(BGPTOOLS_TAGS))}); set the 'network_type' option"
        )
    rows, lines = _csv_rows(read_text(path), ",")
    line_arr = np.asarray(lines, np.int64)
    asns = parse_asn_column(pa.array([r[0] for r in rows]), line_arr, path, allow_blank=False)
    attrs = pa.table(
        {
            "network_type": pa.array([str(ntype)] * len(rows), pa.string()),
            "org": pa.array([(r[1].strip() if len(r) > 1 else "") or None for r in rows]),
        }
    )
    opts = {k: v for k, v in options.items() if k not in ("tag", "network_type")}
    return [
        asn_table(
            path, name, "bgptools-tags", np.asarray(asns.to_numpy()), line_arr, attrs, opts, tag=tag
        )
    ]


def read_asn_list(path: Path, name: str, options: Mapping[str, Any]) -> list[AsnTable]:
    """A list of ASNs, one type for all (the ``network_type`` option) or per row.

    Layouts: lines ``AS123`` / ``123``, optionally followed by ``# name`` or ``,name``
    (X4BNet's datacenter list, bad-asn-list.csv); or a table with a header holding an ``asn``
    column and optionally ``network_type`` / ``category`` (mapped by the taxonomy, as in
    asn_lists/neocloud_hyperscaler_cdn_asns.tsv) and ``org`` / ``group`` / ``name`` columns.
    """
    check_options(options, set(), path, "asn-list")
    text = read_text(path)
    sample = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")][:1]
    delimiter = "\t" if sample and "\t" in sample[0] else ","
    header = [c.strip().lower() for c in sample[0].split(delimiter)] if sample else []
    fixed_type = options.get("network_type")
    if "asn" in header and len(header) > 1:
        rows, lines = _csv_rows(text, delimiter)
        rows, lines = rows[1:], lines[1:]
        col = {c: i for i, c in enumerate(header)}
        a_i = col["asn"]
        t_i = col.get("network_type", col.get("category", col.get("type")))
        o_i = col.get("org", col.get("group", col.get("name", col.get("entity"))))
        asn_text = [r[a_i] if len(r) > a_i else "" for r in rows]
        types: list[str | None] = []
        for r, row in enumerate(rows):
            if fixed_type is not None:
                types.append(str(fixed_type))
            elif t_i is not None and len(row) > t_i:
                raw = row[t_i].strip()
                types.append(ASN_LIST_CATEGORIES.get(raw, raw) or None)
            else:
                raise InputError(
                    f"{path}: line {lines[r]}: no type for this ASN: add a network_type or "
                    "category column, or set the 'network_type' option"
                )
        orgs = [
            (row[o_i].strip() if o_i is not None and len(row) > o_i else "") or None for row in rows
        ]
    else:
        if fixed_type is None:
            raise InputError(f"{path}: a plain ASN list needs the 'network_type' option")
        asn_text, orgs, lines = [], [], []
        for i, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            org = None
            if "#" in line:
                line, org = line.split("#", 1)
            elif delimiter in line:
                line, org = line.split(delimiter, 1)
            org = org.strip().strip('"').strip() if org else None
            asn_text.append(line.strip())
            orgs.append(org or None)
            lines.append(i)
        types = [str(fixed_type)] * len(asn_text)
    line_arr = np.asarray(lines, np.int64)
    asns = parse_asn_column(pa.array(asn_text, pa.string()), line_arr, path, allow_blank=False)
    attrs = pa.table(
        {"network_type": pa.array(types, pa.string()), "org": pa.array(orgs, pa.string())}
    )
    opts = {k: v for k, v in options.items() if k != "network_type"}
    return [asn_table(path, name, "asn-list", np.asarray(asns.to_numpy()), line_arr, attrs, opts)]
