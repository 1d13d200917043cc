"""MaxMind DB (.mmdb) files through the optional ``maxminddb`` package: country, metro, ASN.

GeoLite2/GeoIP2 City and Country databases give country (ISO code) and metro (city name);
ASN databases give ASN and organisation. The whole tree is walked once at compile time, so
lookups stay in the LPM kernel. Without ``maxminddb`` installed this format is an error that
says how to install it; nothing else in flowatlas needs it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flowatlas.classify.compiler import Layer
from flowatlas.classify.sources._common import check_options, prefix_layer
from flowatlas.errors import InputError


def _import_maxminddb():
    try:
        import maxminddb
    except Exception:
        raise InputError(
            "format 'mmdb' needs the optional package maxminddb (pip install maxminddb)"
        ) from None
    return maxminddb


def _record_fields(rec: Any) -> tuple[str | None, str | None, int | None, str | None]:
    """(country, metro, asn, org) from a GeoIP2/GeoLite2 City, Country or ASN record."""
    if not isinstance(rec, dict):
        return None, None, None, None
    country = (rec.get("country") or rec.get("registered_country") or {}).get("iso_code")
    city = (rec.get("city") or {}).get("names", {}).get("en")
    asn = rec.get("autonomous_system_number")
    org = rec.get("autonomous_system_organization")
    return country, city, (int(asn) if asn else None), org


def read_mmdb(path: Path, name: str, options: Mapping[str, Any]) -> list[Layer]:
    """Every network of a MaxMind DB as a geo layer (country, metro; ASN and org if present)."""
    check_options(options, set(), path, "mmdb")
    maxminddb = _import_maxminddb()
    try:
        reader = maxminddb.open_database(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: classification source not found") from None
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise InputError(f"{path}: not a MaxMind DB: {exc}") from None
    prefixes, cols = [], {"country": [], "metro": [], "asn": [], "org": []}
    aliases = [ipaddress.ip_network("::ffff:0:0/96"), ipaddress.ip_network("2002::/16")]
    with reader:
        meta = reader.metadata()
        for net, rec in reader:
            if net.version == 6 and any(net.subnet_of(a) for a in aliases):
                continue  # the IPv4 data again, aliased by the database
            if net.version == 6 and net.prefixlen >= 96 and int(net.network_address) >> 32 == 0:
                # IPv4 stored at ::a.b.c.d/96+n in an IPv6 database
                net = ipaddress.ip_network(
                    (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96)
                )
            prefixes.append(str(net))
            country, metro, asn, org = _record_fields(rec)
            cols["country"].append(country)
            cols["metro"].append(metro)
            cols["asn"].append(asn)
            cols["org"].append(org)
    attrs = {k: pa.array(v, pa.string()) for k, v in cols.items() if k != "asn"}
    if any(a is not None for a in cols["asn"]):
        attrs["asn"] = pa.array(cols["asn"], pa.uint32())
    attrs = {k: v for k, v in attrs.items() if v.null_count < len(v)}
    if not attrs:
        attrs = {"country": pa.array(cols["country"], pa.string())}
    date = None
    if getattr(meta, "build_epoch", None):
        import datetime as _dt

        date = _dt.datetime.fromtimestamp(meta.build_epoch, _dt.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return [
        prefix_layer(
            path,
            name,
            "mmdb",
            prefixes,
            np.zeros(len(prefixes), np.int64),
            pa.table(attrs),
            options,
            tier="geo",
            date=date,
            database_type=getattr(meta, "database_type", None),
        )
    ]
