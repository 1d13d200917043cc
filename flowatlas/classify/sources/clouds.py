"""Readers for cloud providers' published ranges: AWS ip-ranges.json, Google cloud.json,
cloudcheck's provider file and per-provider JSON lists (disposable/cloud-ip-ranges layout).

These are the "explicit prefix lists" of the precedence: a provider saying "this prefix is
ours" beats whatever the ASN of the announcing network suggests. Types come from the default
taxonomy (:mod:`flowatlas.classify.taxonomy`) unless the ``network_type`` option says.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
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
    read_bytes,
)
from flowatlas.classify.taxonomy import CLOUDCHECK_TAGS, provider_type
from flowatlas.errors import InputError


def load_json(path: Path) -> Any:
    """A (possibly compressed) JSON file; a parse error names the line."""
    try:
        return json.loads(read_bytes(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 JSON: {exc}") from None


def _json_line_finder(path: Path) -> Callable[[str], int]:
    """Line numbers of values in a JSON file, found by searching its text (JSON has none).

    Searches go forward from the last hit, as readers walk a file in order.
    """
    text = read_bytes(path).decode("utf-8", errors="replace")
    state = {"pos": 0, "line": 1}

    def find(value: str) -> int:
        needle = json.dumps(value)
        pos = text.find(needle, state["pos"])
        if pos < 0:
            pos = text.find(needle)
            if pos < 0:
                return 0
            state["pos"], state["line"] = 0, 1
        state["line"] += text.count("\n", state["pos"], pos)
        state["pos"] = pos
        return state["line"]

    return find


def _type_option(options: Mapping[str, Any], provider: str) -> str | None:
    t = options.get("network_type")
    return str(t) if t is not None else provider_type(provider)


# --------------------------------------------------------------------------- AWS


def read_aws(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer]:
    """AWS ``ip-ranges.json``: prefixes and ipv6_prefixes, with region -> metro."""
    check_options(options, set(), path, "aws-ip-ranges")
    doc = load_json(path)
    if not isinstance(doc, dict) or "prefixes" not in doc:
        raise InputError(f"{path}: not an AWS ip-ranges.json (no 'prefixes')")
    find = _json_line_finder(path)
    seen: dict[str, str] = {}
    prefixes, regions, lines = [], [], []
    for key, field in (("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")):
        for i, entry in enumerate(doc.get(key, [])):
            if not isinstance(entry, dict) or field not in entry:
                raise InputError(f"{path}: {key}[{i}]: entry has no {field!r}")
            p = str(entry[field])
            region = str(entry.get("region") or "") or None
            # one prefix is listed once per AWS service; the region is what we keep
            if p in seen:
                continue
            seen[p] = region or ""
            prefixes.append(p)
            regions.append(region)
            lines.append(find(p))
    n = len(prefixes)
    org = str(options.get("org") or "Amazon")
    attrs = pa.table(
        {
            "network_type": pa.array([_type_option(options, "Amazon")] * n, pa.string()),
            "org": pa.array([org] * n, pa.string()),
            "metro": pa.array(regions, pa.string()),
        }
    )
    opts = {k: v for k, v in options.items() if k not in ("network_type", "org")}
    return [
        prefix_layer(
            path,
            name,
            "aws-ip-ranges",
            prefixes,
            np.asarray(lines),
            attrs,
            opts,
            tier="prefix",
            date=doc.get("createDate"),
            sync_token=doc.get("syncToken"),
        )
    ]


# --------------------------------------------------------------------------- Google


def read_gcp(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer]:
    """Google's ``cloud.json`` (or ``goog.json``): ipv4Prefix / ipv6Prefix with scope -> metro."""
    check_options(options, set(), path, "gcp-cloud-json")
    doc = load_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("prefixes"), list):
        raise InputError(f"{path}: not a Google cloud.json (no 'prefixes' list)")
    find = _json_line_finder(path)
    prefixes, scopes, lines = [], [], []
    for i, entry in enumerate(doc["prefixes"]):
        p = entry.get("ipv4Prefix") or entry.get("ipv6Prefix") if isinstance(entry, dict) else None
        if not p:
            raise InputError(f"{path}: prefixes[{i}]: entry has no ipv4Prefix or ipv6Prefix")
        prefixes.append(str(p))
        scopes.append(entry.get("scope"))
        lines.append(find(str(p)))
    n = len(prefixes)
    org = str(options.get("org") or "Google")
    attrs = pa.table(
        {
            "network_type": pa.array([_type_option(options, "Google")] * n, pa.string()),
            "org": pa.array([org] * n, pa.string()),
            "metro": pa.array(scopes, pa.string()),
        }
    )
    opts = {k: v for k, v in options.items() if k not in ("network_type", "org")}
    return [
        prefix_layer(
            path,
            name,
            "gcp-cloud-json",
            prefixes,
            np.asarray(lines),
            attrs,
            opts,
            tier="prefix",
            date=doc.get("creationTime"),
            sync_token=doc.get("syncToken"),
        )
    ]


# --------------------------------------------------------------------------- cloudcheck


def read_cloudcheck(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer | AsnTable]:
    """cloudcheck's provider file: per provider, cidrs (a prefix layer) and asns (an ASN table).

    A provider's type comes from its name (taxonomy) or, failing that, its tags
    (cdn/waf -> CDN, cloud -> Hosting); government networks get no type.
    """
    check_options(options, {"providers"}, path, "cloudcheck")
    doc = load_json(path)
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise InputError(f"{path}: not a cloudcheck provider file (a JSON object of providers)")
    wanted = options.get("providers")
    find = _json_line_finder(path)
    prefixes, ptypes, porgs, lines = [], [], [], []
    asns, atypes, aorgs, alines = [], [], [], []
    newest = 0.0
    for key in sorted(doc):
        prov = doc[key]
        pname = str(prov.get("name") or key)
        if wanted is not None and pname not in wanted and key not in wanted:
            continue
        ptype = provider_type(pname)
        if ptype is None:
            for tag in prov.get("tags") or []:
                if tag in CLOUDCHECK_TAGS:
                    ptype = CLOUDCHECK_TAGS[tag]
                    break
        if options.get("network_type") is not None:
            ptype = str(options["network_type"])
        find(key)
        for cidr in prov.get("cidrs") or []:
            prefixes.append(str(cidr))
            ptypes.append(ptype)
            porgs.append(pname)
            lines.append(find(str(cidr)))
        for i, a in enumerate(prov.get("asns") or []):
            num = parse_asn_value(a)
            if num is None:
                raise InputError(f"{path}: {key}.asns[{i}]: not an AS number: {a!r}")
            asns.append(num)
            atypes.append(ptype)
            aorgs.append(pname)
            alines.append(0)
        try:
            newest = max(newest, float(prov.get("last_updated") or 0))
        except (TypeError, ValueError):
            pass
    date = (
        datetime.fromtimestamp(newest, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if newest
        else None
    )
    opts = {k: v for k, v in options.items() if k not in ("network_type", "providers")}
    out: list[Layer | AsnTable] = [
        prefix_layer(
            path,
            name,
            "cloudcheck",
            prefixes,
            np.asarray(lines, np.int64),
            pa.table(
                {"network_type": pa.array(ptypes, pa.string()), "org": pa.array(porgs, pa.string())}
            ),
            opts,
            tier="prefix",
            date=date,
        )
    ]
    if asns:
        asn_opts = {k: v for k, v in opts.items() if k in ("date",)}
        if options.get("tier") == "override":
            asn_opts["tier"] = "override"
        out.append(
            asn_table(
                path,
                f"{name} (ASNs)",
                "cloudcheck",
                np.asarray(asns, np.uint32),
                np.asarray(alines, np.int64),
                pa.table(
                    {
                        "network_type": pa.array(atypes, pa.string()),
                        "org": pa.array(aorgs, pa.string()),
                    }
                ),
                asn_opts,
                date=date,
            )
        )
    return out


# --------------------------------------------------------------------------- provider JSON


def read_provider_json(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer]:
    """One provider's ranges: ``{provider, ipv4: [...], ipv6: [...], last_update}``.

    A folder of such files reads every ``*.json`` in it (sorted), one layer per file.
    """
    check_options(options, set(), path, "provider-json")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".json", ".json.gz")))
        if not files:
            raise InputError(f"{path}: folder holds no .json files")
        out: list[Layer] = []
        for f in files:
            out.extend(read_provider_json(f, f"{name}/{f.name.split('.')[0]}", options))
        return out
    doc = load_json(path)
    if not isinstance(doc, dict) or not ({"ipv4", "ipv6"} & set(doc)):
        raise InputError(f"{path}: not a provider range file (no 'ipv4' / 'ipv6' lists)")
    provider = str(doc.get("provider") or path.name.split(".")[0])
    find = _json_line_finder(path)
    prefixes = [str(p) for key in ("ipv4", "ipv6") for p in (doc.get(key) or [])]
    lines = np.asarray([find(p) for p in prefixes], np.int64)
    n = len(prefixes)
    attrs = pa.table(
        {
            "network_type": pa.array([_type_option(options, provider)] * n, pa.string()),
            "org": pa.array([str(options.get("org") or provider)] * n, pa.string()),
        }
    )
    opts = {k: v for k, v in options.items() if k not in ("network_type", "org")}
    return [
        prefix_layer(
            path,
            name,
            "provider-json",
            prefixes,
            lines,
            attrs,
            opts,
            tier="prefix",
            date=doc.get("last_update"),
            provider=provider,
        )
    ]
