"""Source readers: small hand-made files of each format, the real files in shared data, and
bad sources (errors that name file and line, or counted warnings)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from flowatlas.addresses import parse_addresses
from flowatlas.classify import build_table
from flowatlas.classify.compiler import AsnTable, Layer
from flowatlas.classify.sources import detect_format, read_source
from flowatlas.config import SourceSpec
from flowatlas.errors import InputError
from flowatlas.testing import need_data


def lookup(table, *addresses: str) -> list[dict]:
    hi, lo, _ = parse_addresses(list(addresses))
    return [table.describe(int(i)) for i in table.lookup(hi, lo)]


def spec(path, fmt: str = "auto", **options) -> SourceSpec:
    return SourceSpec(str(path), fmt, "", tuple(sorted(options.items())))


# --------------------------------------------------------------------------- small files


def test_cidr_list_with_comments_and_options(tmp_path) -> None:
    f = tmp_path / "dc.txt"
    f.write_text("# datacenters\n\n192.0.2.0/24  # lab\n2001:db8::/32\n; old\n198.51.100.7\n")
    (layer,) = read_source(f, options={"network_type": "Hosting", "org": "Lab"})
    assert isinstance(layer, Layer)
    assert layer.lines.tolist() == [3, 4, 6]
    t = build_table([spec(f, network_type="Hosting", org="Lab")])
    a, b, c, d = lookup(t, "192.0.2.9", "2001:db8:1::1", "198.51.100.7", "198.51.100.8")
    assert (a["network_type"], a["org"], a["prefix"]) == ("Hosting", "Lab", "192.0.2.0/24")
    assert b["prefix"] == "2001:db8::/32" and c["prefix"] == "198.51.100.7/32"
    assert d["network_type"] == "Unknown"


def test_range_csv_ip_location_db_layout(tmp_path) -> None:
    f = tmp_path / "asn-ipv4.csv"
    f.write_text('1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."\n1.0.4.0,1.0.7.255,38803,Gtelecom\n')
    t = build_table([spec(f)])
    a, b, c = lookup(t, "1.0.0.1", "1.0.6.1", "1.0.8.0")
    assert (a["asn"], a["org"], a["prefix"]) == (13335, "Cloudflare, Inc.", "1.0.0.0/24")
    assert (b["asn"], b["source_line"]) == (38803, 2)
    assert c["asn"] == 0
    f2 = tmp_path / "odd.csv"
    f2.write_text("10.0.0.3,10.0.0.9,64500,X\n")
    assert lookup(build_table([spec(f2)]), "10.0.0.5")[0]["prefix"] == "10.0.0.3 - 10.0.0.9"


def test_pyasn_dat(tmp_path) -> None:
    f = tmp_path / "ipasn.dat"
    f.write_text(
        "; IP-ASN32-DAT file\n; Converted on  : Mon\n1.0.0.0/24\t15169\n2001:db8::/32\t64500\n"
    )
    assert detect_format(f) == "pyasn"
    t = build_table([spec(f)])
    assert [d["asn"] for d in lookup(t, "1.0.0.1", "2001:db8::1")] == [15169, 64500]


LIBLOC_DUMP = """#
# Location Database Export
#
# Generated: Sat, 29 Oct 2022 05:59:54 GMT
#

aut-num:                 AS13335
name:                    CLOUDFLARENET

aut-num:                 AS38803
name:                    GTELECOM-AUSTRALIA

net:                     1.0.0.0/8
country:                 AU

net:                     1.0.0.0/24
country:                 AU
aut-num:                 13335
is-anycast:              yes

net:                     1.0.4.0/22
country:                 AU
aut-num:                 38803

net:                     2001:db8::/32
aut-num:                 13335
"""


def test_libloc_dump_gives_networks_and_as_names(tmp_path) -> None:
    f = tmp_path / "location.dump"
    f.write_text(LIBLOC_DUMP)
    assert detect_format(f) == "libloc"
    items = read_source(f)
    assert [type(i).__name__ for i in items] == ["Layer", "AsnTable"]
    layer = items[0]
    assert layer.lines.tolist() == [13, 16, 21, 25]
    t = build_table([spec(f)])
    a, b, c, d = lookup(t, "1.0.0.1", "1.2.3.4", "1.0.5.1", "2001:db8::1")
    assert (a["asn"], a["org"], a["country"]) == (13335, "CLOUDFLARENET", "AU")
    assert (b["asn"], b["country"], b["prefix"]) == (0, "AU", "1.0.0.0/8")
    assert (c["org"], d["org"]) == ("GTELECOM-AUSTRALIA", "CLOUDFLARENET")


def test_libloc_tsv_with_asnames(tmp_path) -> None:
    (tmp_path / "names.tsv").write_text("# asn\tname\n13335\tCLOUDFLARENET\n")
    f = tmp_path / "v4.tsv"
    f.write_text(
        "# prefix\tasn\tcountry\tflags\n1.0.0.0/8\t\tAU\t\n1.0.0.0/24\t13335\tAU\tis-anycast\n"
    )
    t = build_table([spec(f, "libloc", asnames="names.tsv")])
    a, b = lookup(t, "1.0.0.9", "1.9.9.9")
    assert (a["asn"], a["org"], b["asn"], b["country"]) == (13335, "CLOUDFLARENET", 0, "AU")


def test_cloud_json_formats(tmp_path) -> None:
    aws = tmp_path / "ip-ranges.json"
    aws.write_text(
        json.dumps(
            {
                "syncToken": "1",
                "createDate": "2026-01-01-00-00-00",
                "prefixes": [
                    {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON"},
                    {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "S3"},
                ],
                "ipv6_prefixes": [{"ipv6_prefix": "2406:da00::/24", "region": "GLOBAL"}],
            },
            indent=1,
        )
    )
    gcp = tmp_path / "cloud.json"
    gcp.write_text(
        json.dumps(
            {
                "prefixes": [
                    {
                        "ipv4Prefix": "34.1.208.0/20",
                        "service": "Google Cloud",
                        "scope": "africa-south1",
                    }
                ]
            }
        )
    )
    prov = tmp_path / "vultr.json"
    prov.write_text(json.dumps({"provider": "Vultr", "ipv4": ["45.76.0.0/15"], "ipv6": []}))
    cc = tmp_path / "cloudcheck.json"
    cc.write_text(
        json.dumps(
            {
                "Fastly": {
                    "name": "Fastly",
                    "tags": ["cdn"],
                    "asns": [54113],
                    "cidrs": ["151.101.0.0/16"],
                },
                "Gov": {"name": "SomeGov", "tags": ["gov"], "asns": [], "cidrs": ["6.0.0.0/8"]},
            }
        )
    )
    assert [detect_format(p) for p in (aws, gcp, prov, cc)] == [
        "aws-ip-ranges",
        "gcp-cloud-json",
        "provider-json",
        "cloudcheck",
    ]
    t = build_table([spec(p) for p in (aws, gcp, prov, cc)])
    a, g, v, f, gov = lookup(t, "3.5.141.1", "34.1.209.1", "45.77.1.1", "151.101.1.1", "6.1.1.1")
    assert (a["network_type"], a["org"], a["metro"]) == ("Hyperscaler", "Amazon", "ap-northeast-2")
    assert (g["network_type"], g["metro"]) == ("Hyperscaler", "africa-south1")
    assert (v["network_type"], v["org"]) == ("Neocloud", "Vultr")
    assert (f["network_type"], gov["network_type"], gov["org"]) == ("CDN", "Unknown", "SomeGov")
    assert t.meta["stats"]["ip-ranges.json"]["duplicates"] == 0  # AWS repeats are folded


def test_asn_sources(tmp_path) -> None:
    bgp = tmp_path / "asns.csv"
    bgp.write_text("asn,name,class,cc\nAS3356,Lumen,T1,US\nAS7922,Comcast,Eyeball,US\n")
    tag = tmp_path / "tags-vpsh.csv"
    tag.write_text("AS64500,Some VPS\n")
    lst = tmp_path / "dc.txt"
    lst.write_text("AS64501 # Rack Co\n64502\n")
    assert [detect_format(p) for p in (bgp, tag)] == ["bgptools-asns", "bgptools-tags"]
    routes = tmp_path / "routes.csv"
    routes.write_text(
        "prefix,asn\n4.0.0.0/9,3356\n24.0.0.0/12,7922\n10.1.0.0/16,64500\n10.2.0.0/16,64501\n"
        "10.3.0.0/16,64502\n"
    )
    t = build_table(
        [spec(routes), spec(bgp), spec(tag), spec(lst, "asn-list", network_type="Hosting")]
    )
    got = [d["network_type"] for d in lookup(t, "4.1.1.1", "24.1.1.1", "10.1.0.1", "10.2.0.1")]
    assert got == ["ISP Tier1", "ISP Regional", "Hosting", "Hosting"]
    assert lookup(t, "10.2.0.1")[0]["org"] == "Rack Co"  # org from the ASN table's name


def test_overrides_toml(tmp_path) -> None:
    f = tmp_path / "overrides.toml"
    f.write_text(
        'network_types = ["Partner"]\n\n[[prefix]]\nprefix = "192.0.2.0/24"\n'
        'network_type = "Partner"\norg = "Friends"\n\n[[asn]]\nasns = [64500, "AS64501"]\n'
        'network_type = "Neocloud"\n'
    )
    items = read_source(f)
    assert [i.tier for i in items] == ["override", "override"]
    assert isinstance(items[1], AsnTable) and items[1].asns.tolist() == [64500, 64501]
    t = build_table([spec(f)])
    assert lookup(t, "192.0.2.1")[0]["network_type"] == "Partner"
    assert lookup(t, "192.0.2.1")[0]["source_line"] == 4


def test_mmdb_needs_maxminddb_or_reads(tmp_path) -> None:
    f = tmp_path / "x.mmdb"
    f.write_bytes(b"\x00" * 64)
    try:
        import maxminddb  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="needs the optional package maxminddb"):
            read_source(f)
        return
    with pytest.raises(InputError, match="not a MaxMind DB"):
        read_source(f)


# --------------------------------------------------------------------------- bad sources


@pytest.mark.parametrize(
    ("name", "content", "fmt", "message"),
    [
        ("a.txt", "192.0.2.0/24\n192.0.2.300/24\n", "cidr-list", r"a\.txt: line 2: not a CIDR"),
        ("b.txt", "10.0.0.0/8\n\n10.1.0.1/8\n", "cidr-list", r"b\.txt: line 3: .*host bits"),
        ("c.csv", "prefix,asn\n10.0.0.0/8,AS12x\n", "prefix-csv", r"c\.csv: line 2: not an AS"),
        ("d.csv", "1.0.0.0,1.0.0.255,1,x\n1.0.1.0,nope,2,y\n", "range-csv", r"d\.csv: line 2: end"),
        ("e.dat", "1.0.0.0/24\t15169\n1.0.1.0/24\tfoo\n", "pyasn", r"e\.dat: line 2: not an AS"),
        ("f.csv", "asn,name,class,cc\nAS1,x,Weird,US\n", "bgptools-asns", r"line 2: unknown bgp"),
        ("g.txt", "net: 1.0.0.0/8\nbroken line\n", "libloc", r"g\.txt: line 2: expected 'key"),
        ("h.json", '{"prefixes": [\n{"ip_prefix": 1,,}]}', "aws-ip-ranges", r"h\.json: line 2"),
        ("i.toml", '[[prefix]]\nprefix = "10.0.0.0/8"\ntype = "X"\n', "overrides", r"line 1: pre"),
        ("j.csv", "1.0.0.0,::1,1,x\n", "range-csv", r"j\.csv: line 1: range mixes IPv4"),
    ],
)
def test_bad_sources_name_file_and_line(tmp_path, name, content, fmt, message) -> None:
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(InputError, match=message):
        read_source(f, fmt)


def test_unknown_format_and_type_are_errors(tmp_path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("10.0.0.0/8\n")
    with pytest.raises(InputError, match="unknown source format 'nope'"):
        read_source(f, "nope")
    with pytest.raises(InputError, match=r"x\.txt: line 1: unknown network type 'Cloudy'"):
        build_table([spec(f, "cidr-list", network_type="Cloudy")])
    with pytest.raises(InputError, match="not known to format 'cidr-list'"):
        read_source(f, "cidr-list", options={"colour": "red"})
    g = tmp_path / "weird.bin"
    g.write_bytes(b"\x01\x02 hello")
    with pytest.raises(InputError, match="cannot tell the format"):
        read_source(g)


def test_conflicting_entries_are_counted_or_strict_errors(tmp_path) -> None:
    f = tmp_path / "conf.csv"
    f.write_text("prefix,network_type\n10.0.0.0/8,Hosting\n10.0.0.0/8,Hosting\n10.0.0.0/8,CDN\n")
    t = build_table([spec(f)])
    assert t.meta["stats"]["conf.csv"] == {
        "rows": 3,
        "duplicates": 2,
        "conflicts": 1,
        "overlaps": 0,
    }
    assert any("conf.csv: line 4: the same range appears again" in w for w in t.meta["warnings"])
    with pytest.raises(InputError, match=r"conf\.csv: line 4: the same range"):
        build_table([spec(f)], strict=True)
    g = tmp_path / "ranges.csv"
    g.write_text("10.0.0.0,10.0.0.9,1,a\n10.0.0.5,10.0.0.20,2,b\n")
    t = build_table([spec(g)])
    assert t.meta["stats"]["ranges.csv"]["overlaps"] == 1
    with pytest.raises(InputError, match=r"ranges\.csv: line 2: range overlaps"):
        build_table([spec(g)], strict=True)
    h = tmp_path / "asns.txt"
    h.write_text("asn,network_type\n64500,Hosting\n64500,CDN\n")
    t = build_table([spec(h, "asn-list")])
    assert t.meta["stats"]["asns.txt"]["conflicts"] == 1
    assert any("asns.txt: line 3: AS64500 appears again" in w for w in t.meta["warnings"])


# --------------------------------------------------------------------------- real files


REAL = [
    ("prefix2asn/ip-location-db_asn/asn-ipv4.csv.gz", "range-csv", 411_961),
    ("prefix2asn/ip-location-db_asn/asn-ipv6.csv.gz", "range-csv", 103_197),
    ("prefix2asn/pyasn_2014/ipasn6_20151101.dat.gz", "pyasn", 606_138 + 27_693),
    ("prefix2asn/libloc_ipfire/libloc-prefix2as-v6.tsv.gz", "libloc", 220_103),
    ("cloud_ranges/aws_seligman/ip-ranges.json.gz", "aws-ip-ranges", None),
    ("cloud_ranges/cloudcheck/cloud_providers_v2.json", "cloudcheck", None),
    ("cloud_ranges/disposable_cloud-ip-ranges", "provider-json", None),
    ("cloud_ranges/x4bnet_lists_vpn/output_datacenter_ipv4.txt", "cidr-list", None),
    ("asn_org_type/bgptools_opendb/asns.csv.gz", "bgptools-asns", 120_793),
    ("asn_org_type/bgptools_opendb/tags", "bgptools-tags", None),
    ("asn_lists/neocloud_hyperscaler_cdn_asns.tsv", "asn-list", None),
]


@pytest.mark.parametrize(("rel", "fmt", "rows"), REAL, ids=[r[1] for r in REAL])
def test_real_sources_are_detected_and_read(rel: str, fmt: str, rows: int | None) -> None:
    root = need_data(rel)
    assert detect_format(root / rel) == fmt
    options = {"network_type": "Hosting"} if fmt == "cidr-list" else {}
    items = read_source(root / rel, options=options)
    assert items and all(len(i) > 0 for i in items)
    if rows is not None:
        assert len(items[0]) == rows
    for item in items:
        assert item.provenance["sha256"] and item.provenance["format"] == fmt


def test_real_asn_lists_with_options() -> None:
    root = need_data("asn_org_type/bad-asn-list/bad-asn-list.csv")
    (t,) = read_source(
        root / "asn_org_type/bad-asn-list/bad-asn-list.csv",
        "asn-list",
        options={"network_type": "Hosting"},
    )
    assert len(t) > 700 and t.attrs.column("org")[0].as_py().startswith("INULOGIC")
    (x,) = read_source(
        root / "cloud_ranges/x4bnet_lists_vpn/input_datacenter_ASN.txt",
        "asn-list",
        options={"network_type": "Hosting"},
    )
    assert x.asns[0] == 45090 and x.attrs.column("org")[0].as_py().startswith("Tencent")


def test_gzip_and_plain_give_the_same_layer(tmp_path) -> None:
    text = "192.0.2.0/24\n2001:db8::/32\n"
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(text.encode()))
    a = read_source(tmp_path / "a.txt", "cidr-list")[0]
    b = read_source(tmp_path / "a.txt.gz", "cidr-list")[0]
    np.testing.assert_array_equal(a.start_lo, b.start_lo)
    np.testing.assert_array_equal(a.end_hi, b.end_hi)
