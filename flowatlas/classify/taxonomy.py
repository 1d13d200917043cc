"""The default taxonomy: how names found in sources map to flowatlas network types.

Sources name networks in their own words: a cloud provider ("Amazon", "Google Cloud",
"vultr"), a bgp.tools class ("T1", "Eyeball") or tag ("cdn", "vpsh"), a category in a curated
ASN list ("ai_neocloud"). This module maps those words to the seed's network types, once, so
that every reader agrees; docs/classification.md prints the same tables. Users change any of
it per source with options (``network_type``, ``classes``, ``tags``) or with override rules.

Migration is not here: it is a link type, decided from exporter + interface rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from flowatlas.vocab import NETWORK_TYPES

CDN = "CDN"
HOSTING = "Hosting"
HYPERSCALER = "Hyperscaler"
ISP_REGIONAL = "ISP Regional"
ISP_TIER1 = "ISP Tier1"
NEOCLOUD = "Neocloud"

#: provider names (cloud range files, cloudcheck, nDPI-style owners) -> type; matched on a
#: normalised name (lower case, letters and digits only), first by whole name, then by prefix
PROVIDERS: dict[str, str] = {
    # hyperscalers: large traditional clouds
    "amazon": HYPERSCALER,
    "aws": HYPERSCALER,
    "amazonaws": HYPERSCALER,
    "google": HYPERSCALER,
    "googlecloud": HYPERSCALER,
    "gcp": HYPERSCALER,
    "microsoft": HYPERSCALER,
    "microsoftazure": HYPERSCALER,
    "azure": HYPERSCALER,
    "oracle": HYPERSCALER,
    "oraclecloud": HYPERSCALER,
    "alibaba": HYPERSCALER,
    "tencent": HYPERSCALER,
    "huawei": HYPERSCALER,
    "huaweicloud": HYPERSCALER,
    "ibm": HYPERSCALER,
    "softlayeribm": HYPERSCALER,
    # AI-focused compute ("neoclouds"); see ../shared/data/asn_lists
    "coreweave": NEOCLOUD,
    "lambda": NEOCLOUD,
    "lambdalabs": NEOCLOUD,
    "crusoe": NEOCLOUD,
    "together": NEOCLOUD,
    "togetherai": NEOCLOUD,
    "nebius": NEOCLOUD,
    "vultr": NEOCLOUD,
    "choopa": NEOCLOUD,
    "theconstantcompany": NEOCLOUD,
    "voltagepark": NEOCLOUD,
    "fluidstack": NEOCLOUD,
    "tensorwave": NEOCLOUD,
    "hyperstack": NEOCLOUD,
    "nscale": NEOCLOUD,
    "paperspace": NEOCLOUD,
    "denvr": NEOCLOUD,
    "denvrdataworks": NEOCLOUD,
    "genesiscloud": NEOCLOUD,
    "cudo": NEOCLOUD,
    "cudocompute": NEOCLOUD,
    # content delivery
    "akamai": CDN,
    "cloudflare": CDN,
    "cloudfront": CDN,
    "fastly": CDN,
    "cachefly": CDN,
    "edgecast": CDN,
    "arvancloud": CDN,
    "ddosguard": CDN,
    "qrator": CDN,
    "stormwall": CDN,
    "imperva": CDN,
    "sucuri": CDN,
    "x4b": CDN,
    "quiccloud": CDN,
    "netflix": CDN,
    # hosting: servers for rent, VPS, dedicated, object storage
    "digitalocean": HOSTING,
    "hetzner": HOSTING,
    "ovh": HOSTING,
    "linode": HOSTING,
    "leaseweb": HOSTING,
    "kamatera": HOSTING,
    "rackspace": HOSTING,
    "scaleway": HOSTING,
    "onlinesas": HOSTING,
    "wasabi": HOSTING,
    "backblaze": HOSTING,
    "heroku": HOSTING,
    "herokuaws": HOSTING,
    "verceaws": HOSTING,
    "vercelaws": HOSTING,
    "github": HOSTING,
    "godaddy": HOSTING,
    "dreamhost": HOSTING,
    "a2hosting": HOSTING,
    "nforce": HOSTING,
    "ucloud": HOSTING,
    # eyeball networks with their own range feeds
    "starlink": ISP_REGIONAL,
}

#: cloudcheck provider tags -> type, for providers not named above ("gov" says nothing)
CLOUDCHECK_TAGS: dict[str, str] = {"cdn": CDN, "waf": CDN, "cloud": HOSTING}

#: bgp.tools ``class`` column -> type. Content networks serve content (hosting, cloud, CDN);
#: without a better source they count as Hosting. Carriers sell long-haul transit.
BGPTOOLS_CLASSES: dict[str, str | None] = {
    "T1": ISP_TIER1,
    "Carrier": ISP_TIER1,
    "Eyeball": ISP_REGIONAL,
    "Content": HOSTING,
    "Unknown": None,
}

#: bgp.tools tag lists (tags/tags-<tag>.csv) -> type; tags not here say nothing about type
BGPTOOLS_TAGS: dict[str, str] = {
    "cdn": CDN,
    "vpsh": HOSTING,
    "dsl": ISP_REGIONAL,
    "mobile": ISP_REGIONAL,
    "satnet": ISP_REGIONAL,
}

#: categories of the curated ASN list (asn_lists/neocloud_hyperscaler_cdn_asns.tsv)
ASN_LIST_CATEGORIES: dict[str, str] = {
    "ai_neocloud": NEOCLOUD,
    "neocloud": NEOCLOUD,
    "hyperscaler": HYPERSCALER,
    "cdn": CDN,
    "hosting": HOSTING,
    "isp_reference": ISP_REGIONAL,
    "isp": ISP_REGIONAL,
    "tier1": ISP_TIER1,
}


def normalise(name: str) -> str:
    """Lower case, letters and digits only: 'Google Cloud' -> 'googlecloud'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def provider_type(name: str, extra: Mapping[str, str] | None = None) -> str | None:
    """Network type of a provider name (``extra`` first, then :data:`PROVIDERS`), or None."""
    key = normalise(name)
    for table in (
        {normalise(k): v for k, v in (extra or {}).items()},
        PROVIDERS,
    ):
        if key in table:
            return table[key]
    for table in ({normalise(k): v for k, v in (extra or {}).items()}, PROVIDERS):
        for k in sorted(table, key=len, reverse=True):
            if len(k) >= 4 and key.startswith(k):
                return table[k]
    return None


def check_type(network_type: str, known: tuple[str, ...] = NETWORK_TYPES) -> str:
    """``network_type`` if it is one of ``known`` (configured types), else a ValueError."""
    if network_type not in known:
        raise ValueError(
            f"unknown network type {network_type!r} (known: {', '.join(known)}; "
            "add new ones under [classify] network_types)"
        )
    return network_type


__all__ = [
    "ASN_LIST_CATEGORIES",
    "BGPTOOLS_CLASSES",
    "BGPTOOLS_TAGS",
    "CLOUDCHECK_TAGS",
    "PROVIDERS",
    "check_type",
    "normalise",
    "provider_type",
]
