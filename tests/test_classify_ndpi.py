"""Cross-check against an independent labelling: nDPI's expected results name the owner of
remote addresses from nDPI's own IP lists ([IP: 265/AmazonAWS], [IP: 220/Cloudflare], ...).

For owners both sides know, the organisation our default sources give an address should name
the same provider. The test prints the agreement and every disagreement (tables are pinned by the
shared data, so the result is reproducible). Every disagreement must be one of the understood
kinds listed in EXPLAINED; where the owners agree, the network type must be the seed's.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter, defaultdict

import pytest

from flowatlas.addresses import parse_addresses
from flowatlas.classify import build_table
from flowatlas.config import SourceSpec
from flowatlas.testing import need_data

#: nDPI owner -> words one of which our organisation name must contain
OWNERS: dict[str, tuple[str, ...]] = {
    "AmazonAWS": ("amazon",),
    "Google": ("google",),
    "GoogleCloud": ("google",),
    "Azure": ("microsoft",),
    "Microsoft365": ("microsoft",),
    "Outlook": ("microsoft",),
    "Skype_Teams": ("microsoft",),
    "NetFlix": ("netflix",),
    "Cloudflare": ("cloudflare",),
    "CloudflareWarp": ("cloudflare",),
    "Facebook": ("facebook", "meta"),
    "Alibaba": ("alibaba",),
    "Tencent": ("tencent",),
    "Apple": ("apple",),
    "Edgecast": ("edgecast", "edgio", "verizon"),
    "Twitter": ("twitter",),
    "Zoom": ("zoom",),
    "Webex": ("cisco", "webex"),
    "Telegram": ("telegram",),
    "Github": ("github",),
    "Dropbox": ("dropbox",),
}
#: nDPI owners whose network type is clear in the seed's taxonomy
OWNER_TYPES = {
    "AmazonAWS": "Hyperscaler",
    "Azure": "Hyperscaler",
    "GoogleCloud": "Hyperscaler",
    "Cloudflare": "CDN",
}

#: Disagreements that are understood, as (nDPI owners, words in our organisation, why). Every
#: other disagreement fails the test, and so does a type mismatch where the owners agree.
EXPLAINED: tuple[tuple[frozenset[str], tuple[str, ...], str], ...] = (
    (
        frozenset({"Azure", "Microsoft365", "Outlook", "Skype_Teams"}),
        ("github",),
        "cloudcheck lists GitHub's Azure ranges under GitHub, more specifically than Azure",
    ),
    (
        frozenset({"Zoom"}),
        ("level 3", "amazon"),
        "Zoom meeting servers in Level 3 and AWS address space",
    ),
)
#: single addresses whose nDPI label is itself doubtful
EXPLAINED_ADDRESSES = {
    "2a01:cb01:2049:8b07:991d:ec85:28df:f629": "an Orange France broadband address (nDPI's "
    "GoogleCloud label comes from the flow, not the address)",
}
#: understood disagreements may not grow past this share of the labelled addresses
MAX_EXPLAINED = 0.15

_LINE = re.compile(r" (\S+) <-> (\S+) .*?\[IP: \d+/([A-Za-z0-9_]+)\]")


def _host(endpoint: str) -> str:
    if endpoint.startswith("["):
        return endpoint[1 : endpoint.index("]")]
    return endpoint.rsplit(":", 1)[0]


def ndpi_labels(folder) -> tuple[dict[str, str], int]:
    """Remote address -> nDPI owner, from flows with exactly one global endpoint."""
    labels: dict[str, set[str]] = defaultdict(set)
    ambiguous = 0
    for path in sorted(folder.glob("*.out")):
        for line in path.read_text(errors="replace").splitlines():
            m = _LINE.search(line)
            if not m or m.group(3) == "Unknown":
                continue
            ends = []
            for e in (m.group(1), m.group(2)):
                try:
                    ends.append(ipaddress.ip_address(_host(e)))
                except ValueError:
                    pass
            remote = [a for a in ends if a.is_global]
            if len(remote) != 1:
                ambiguous += 1
                continue
            labels[str(remote[0])].add(m.group(3))
    # an address nDPI labels two ways says nothing clear
    return {a: next(iter(o)) for a, o in labels.items() if len(o) == 1}, ambiguous


@pytest.fixture(scope="module")
def default_table():
    root = need_data(
        "pcaps/ndpi_expected_results",
        "prefix2asn/ip-location-db_asn/asn-ipv4.csv.gz",
        "cloud_ranges/cloudcheck/cloud_providers_v2.json",
    )
    specs = [
        SourceSpec(str(root / p), "auto", n)
        for p, n in (
            ("cloud_ranges/aws_seligman/ip-ranges.json.gz", "aws"),
            ("cloud_ranges/cloudcheck/cloud_providers_v2.json", "cloudcheck"),
            ("prefix2asn/ip-location-db_asn/asn-ipv4.csv.gz", "iplocdb-v4"),
            ("prefix2asn/ip-location-db_asn/asn-ipv6.csv.gz", "iplocdb-v6"),
            ("asn_lists/neocloud_hyperscaler_cdn_asns.tsv", "curated-asns"),
        )
    ]
    return root, build_table(specs)


def test_owner_agreement_with_ndpi(default_table, capsys) -> None:
    root, table = default_table
    labels, ambiguous = ndpi_labels(root / "pcaps/ndpi_expected_results")
    known = {a: o for a, o in labels.items() if o in OWNERS}
    assert len(known) > 100, "nDPI's results should label many addresses of known providers"
    addrs = sorted(known)
    hi, lo, _ = parse_addresses(addrs)
    ids = table.lookup(hi, lo)
    org_ok, type_ok, type_n = Counter(), 0, 0
    disagree, unexplained, wrong_type = [], [], []
    for a, nid in zip(addrs, ids.tolist(), strict=True):
        d = table.describe(int(nid))
        owner = known[a]
        org = (d.get("org") or "").lower()
        ok = any(w in org for w in OWNERS[owner])
        org_ok[ok] += 1
        line = f"{a}: nDPI {owner}, ours {d.get('org')!r} ({d['network_type']})"
        if not ok:
            disagree.append(line)
            why = EXPLAINED_ADDRESSES.get(a) or next(
                (
                    w
                    for owners, words, w in EXPLAINED
                    if owner in owners and any(x in org for x in words)
                ),
                None,
            )
            if why is None:
                unexplained.append(line)
        elif owner in OWNER_TYPES:
            type_n += 1
            type_ok += d["network_type"] == OWNER_TYPES[owner]
            if d["network_type"] != OWNER_TYPES[owner]:
                wrong_type.append(line)
    share = org_ok[True] / len(addrs)
    with capsys.disabled():
        print(
            f"\nnDPI cross-check: {org_ok[True]}/{len(addrs)} addresses agree on the owner "
            f"({share:.1%}); type {type_ok}/{type_n} where the owners agree; "
            f"{ambiguous} flows skipped (two global ends)"
        )
        for line in disagree:
            print("  disagree:", line)
    assert not unexplained, unexplained
    assert not wrong_type, wrong_type
    assert len(disagree) <= MAX_EXPLAINED * len(addrs), len(disagree)
    assert type_n > 50
