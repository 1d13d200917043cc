"""User overrides: a TOML file of prefix and ASN rules that beat every other source.

Example::

    network_types = ["Partner"]          # new types this file uses (also add them to config)

    [[prefix]]
    prefix = "203.0.113.0/24"            # or prefixes = ["...", "..."]
    network_type = "Neocloud"
    org = "Example GPU Cloud"            # optional: asn, country, metro too

    [[asn]]
    asn = 64500                          # or asns = [64500, "AS64501"]
    network_type = "Hosting"
    org = "Example Hosting"

Prefix rules give the top tier (the most specific rule wins among them); ASN rules come next,
above exporter/interface rules' neighbours, prefix lists and ASN tables. See
docs/classification.md for the whole precedence.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flowatlas.classify.compiler import AsnTable, Layer
from flowatlas.classify.sources._common import (
    asn_table,
    check_options,
    parse_asn_value,
    prefix_layer,
    read_text,
)
from flowatlas.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PREFIX_KEYS = {"prefix", "prefixes", "network_type", "org", "asn", "country", "metro", "note"}
_ASN_KEYS = {"asn", "asns", "network_type", "org", "note"}


def _line_of(text: str, needle: str, start: int = 0) -> int:
    """Line where ``needle`` first appears (TOML parsers keep no line numbers)."""
    pos = text.find(needle, start)
    return text.count("\n", 0, pos) + 1 if pos >= 0 else 0


def read_overrides(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer | AsnTable]:
    """A user override file: [[prefix]] and [[asn]] rules (see the module docstring)."""
    check_options(options, set(), path, "overrides")
    text = read_text(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"prefix", "asn", "network_types"})
    if unknown:
        raise InputError(
            f"{path}: line {_line_of(text, unknown[0])}: unknown key {unknown[0]!r} "
            "(use [[prefix]], [[asn]], network_types)"
        )
    tables = [m.start() for m in re.finditer(r"^\s*\[\[\s*(prefix|asn)\s*\]\]", text, re.M)]
    kinds = re.findall(r"^\s*\[\[\s*(prefix|asn)\s*\]\]", text, re.M)
    starts = {"prefix": [], "asn": []}
    for kind, pos in zip(kinds, tables, strict=True):
        starts[kind].append(text.count("\n", 0, pos) + 1)

    def where(kind: str, i: int) -> str:
        line = starts[kind][i] if i < len(starts[kind]) else 0
        return f"{path}: line {line}: {kind}[{i}]" if line else f"{path}: {kind}[{i}]"

    prefixes, p_attrs, p_lines = (
        [],
        {k: [] for k in ("network_type", "org", "country", "metro")},
        [],
    )
    p_asn: list[int | None] = []
    for i, rule in enumerate(doc.get("prefix", [])):
        if not isinstance(rule, dict):
            raise InputError(f"{where('prefix', i)}: expected a table")
        bad = sorted(set(rule) - _PREFIX_KEYS)
        if bad:
            raise InputError(f"{where('prefix', i)}: unknown key {bad[0]!r}")
        items = rule.get("prefixes", [rule["prefix"]] if "prefix" in rule else [])
        if not items:
            raise InputError(f"{where('prefix', i)}: needs 'prefix' or 'prefixes'")
        asn = None
        if rule.get("asn") is not None:
            asn = parse_asn_value(rule["asn"])
            if asn is None:
                raise InputError(f"{where('prefix', i)}: not an AS number: {rule['asn']!r}")
        for p in items:
            prefixes.append(str(p))
            rule_line = starts["prefix"][i] if i < len(starts["prefix"]) else 0
            p_lines.append(_line_of(text, f'"{p}"') or rule_line)
            p_asn.append(asn)
            for k in p_attrs:
                v = rule.get(k)
                p_attrs[k].append(None if v is None else str(v))
    out: list[Layer | AsnTable] = []
    if prefixes:
        attrs = pa.table(
            {
                **{k: pa.array(v, pa.string()) for k, v in p_attrs.items()},
                "asn": pa.array(p_asn, pa.uint32()),
            }
        )
        out.append(
            prefix_layer(
                path,
                name,
                "overrides",
                prefixes,
                np.asarray(p_lines, np.int64),
                attrs,
                {**options, "tier": "override"},
                tier="override",
            )
        )
    asns, a_types, a_orgs, a_lines = [], [], [], []
    for i, rule in enumerate(doc.get("asn", [])):
        if not isinstance(rule, dict):
            raise InputError(f"{where('asn', i)}: expected a table")
        bad = sorted(set(rule) - _ASN_KEYS)
        if bad:
            raise InputError(f"{where('asn', i)}: unknown key {bad[0]!r}")
        items = rule.get("asns", [rule["asn"]] if "asn" in rule else [])
        if not items:
            raise InputError(f"{where('asn', i)}: needs 'asn' or 'asns'")
        for a in items:
            num = parse_asn_value(a)
            if num is None:
                raise InputError(f"{where('asn', i)}: not an AS number: {a!r}")
            asns.append(num)
            a_types.append(None if rule.get("network_type") is None else str(rule["network_type"]))
            a_orgs.append(None if rule.get("org") is None else str(rule["org"]))
            a_lines.append(starts["asn"][i] if i < len(starts["asn"]) else 0)
    if asns:
        out.append(
            asn_table(
                path,
                f"{name} (ASN rules)",
                "overrides",
                np.asarray(asns, np.uint32),
                np.asarray(a_lines, np.int64),
                pa.table(
                    {
                        "network_type": pa.array(a_types, pa.string()),
                        "org": pa.array(a_orgs, pa.string()),
                    }
                ),
                {"tier": "override"},
            )
        )
    if not out:
        raise InputError(f"{path}: no [[prefix]] or [[asn]] rules")
    return out


def declared_types(path: Path) -> list[str]:
    """The ``network_types`` an override file declares (new types it introduces)."""
    try:
        doc = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError:
        return []
    return [str(t) for t in doc.get("network_types", [])]
