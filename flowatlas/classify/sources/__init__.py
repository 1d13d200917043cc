"""Readers that turn classification sources into compiler layers and ASN tables.

Each format has one small reader ``reader(path, name, options) -> [Layer | AsnTable, ...]``
in a module by kind: routing tables and plain lists (:mod:`.routing`), cloud ranges
(:mod:`.clouds`), ASN tables (:mod:`.asns`), user overrides (:mod:`.overrides`), MaxMind DB
(:mod:`.mmdb`, optional). Errors name the file and line. :func:`detect_format` guesses a
format from a file's name and first bytes for the CLI and ``format = "auto"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flowatlas.classify.compiler import AsnTable, Layer
from flowatlas.classify.sources._common import file_sha256, read_bytes
from flowatlas.classify.sources.asns import read_asn_list, read_bgptools_asns, read_bgptools_tags
from flowatlas.classify.sources.clouds import (
    read_aws,
    read_cloudcheck,
    read_gcp,
    read_provider_json,
)
from flowatlas.classify.sources.mmdb import read_mmdb
from flowatlas.classify.sources.overrides import read_overrides
from flowatlas.classify.sources.routing import (
    read_cidr_list,
    read_libloc,
    read_prefix_csv,
    read_pyasn,
    read_range_csv,
)
from flowatlas.errors import InputError

Reader = Callable[[Path, str, Mapping[str, Any]], list[Layer | AsnTable]]

#: format name -> reader; the names used in config (``format = ...``) and on the CLI
READERS: dict[str, Reader] = {
    "prefix-csv": read_prefix_csv,
    "cidr-list": read_cidr_list,
    "range-csv": read_range_csv,
    "pyasn": read_pyasn,
    "libloc": read_libloc,
    "aws-ip-ranges": read_aws,
    "gcp-cloud-json": read_gcp,
    "cloudcheck": read_cloudcheck,
    "provider-json": read_provider_json,
    "bgptools-asns": read_bgptools_asns,
    "bgptools-tags": read_bgptools_tags,
    "asn-list": read_asn_list,
    "overrides": read_overrides,
    "mmdb": read_mmdb,
}

_ADDR = r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)"


def detect_format(path: Path) -> str:
    """Guess a source's format from its name and content; an error if nothing fits."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if any(path.glob("tags-*.csv")):
            return "bgptools-tags"
        if any(path.glob("*.json")):
            return "provider-json"
        raise InputError(f"{path}: cannot tell the format of this folder; name it (FORMAT:PATH)")
    if name.endswith(".mmdb"):
        return "mmdb"
    if name.endswith(".toml"):
        return "overrides"
    if name.startswith("tags-") and name.endswith(".csv"):
        return "bgptools-tags"
    data = read_bytes(path)
    head = data[:65536].decode("utf-8", errors="replace")
    stripped = head.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            prefixes = doc.get("prefixes")
            if isinstance(prefixes, list) and prefixes and isinstance(prefixes[0], dict):
                if "ip_prefix" in prefixes[0] or "ipv6_prefixes" in doc:
                    return "aws-ip-ranges"
                if "ipv4Prefix" in prefixes[0] or "ipv6Prefix" in prefixes[0]:
                    return "gcp-cloud-json"
            if "ipv4" in doc or "ipv6" in doc:
                return "provider-json"
            if doc and all(isinstance(v, dict) and "cidrs" in v for v in doc.values()):
                return "cloudcheck"
        raise InputError(f"{path}: JSON of an unknown layout; name its format (FORMAT:PATH)")
    if "IP-ASN32-DAT" in head[:200]:
        return "pyasn"
    lines = [ln for ln in head.splitlines() if ln.strip()]
    data_lines = [ln for ln in lines if not ln.startswith(("#", ";"))]
    if any(ln.startswith(("net:", "aut-num:")) for ln in data_lines[:50]):
        return "libloc"
    if lines and lines[0].startswith("# prefix\tasn"):
        return "libloc"
    first = data_lines[0] if data_lines else ""
    low = first.lower().replace(" ", "")
    if low.startswith("asn,name,class"):
        return "bgptools-asns"
    if low.startswith("prefix,") or low == "prefix":
        return "prefix-csv"
    if re.match(rf"^\"?{_ADDR}\"?,\"?{_ADDR}\"?(,|$)", first):
        return "range-csv"
    if re.match(rf"^{_ADDR}(/\d+)?\t\d+\s*$", first):
        return "pyasn"
    if re.match(rf"^{_ADDR}(/\d+)?\s*(#.*)?$", first):
        return "cidr-list"
    if (
        re.match(r"^(AS)?\d+\s*([#,].*)?$", first, re.I)
        or "asn" in low.split(",")[:1] + low.split("\t")[:3]
    ):
        return "asn-list"
    raise InputError(
        f"{path}: cannot tell the format from its first line {first[:60]!r}; "
        f"name it (FORMAT:PATH, formats: {', '.join(READERS)})"
    )


def read_source(
    path: str | Path, fmt: str = "auto", name: str | None = None, options: Mapping[str, Any] = ()
) -> list[Layer | AsnTable]:
    """Read one source file into layers and ASN tables (``fmt`` "auto" detects it)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: classification source not found")
    if fmt in ("auto", "", None):
        fmt = detect_format(path)
    reader = READERS.get(fmt)
    if reader is None:
        raise InputError(
            f"{path}: unknown source format {fmt!r} (known: {', '.join(sorted(READERS))})"
        )
    return reader(path, name or path.name, dict(options))


__all__ = [
    "READERS",
    "Reader",
    "detect_format",
    "file_sha256",
    "read_prefix_csv",
    "read_source",
]
