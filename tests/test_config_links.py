"""[[links]]: named links with capacities, selection links, the one-link-per-flow rule, and
every refusal (one line naming the file and the key or both links)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowatlas.config import (
    Config,
    LinkRule,
    assign_links,
    catch_all_name,
    config_from_dict,
    dump_config,
    link_names,
    load_config,
)
from flowatlas.errors import ConfigError
from flowatlas.vocab import NETWORK_TYPES

REGIONS = """
[[regions]]
name = "US-West"
prefixes = ["198.51.100.0/24"]
exporters = ["10.10.0.1", "10.10.0.2"]

[[regions]]
name = "US-East"
prefixes = ["203.0.113.0/24"]
exporters = ["10.20.0.1"]
"""

LINKS = """
[[links]]
name = "usw-transit-a"
region = "US-West"
capacity_gbps = 400
exporter = "10.10.0.1"
interfaces = [1, 2]

[[links]]
name = "use-neocloud-pni"
region = "US-East"
capacity_gbps = 100
capacity_mode = "shared"
select = { network_types = ["Neocloud"], directions = ["egress"] }

[[links]]
name = "use-hyperscalers"
region = "US-East"
capacity_gbps = 200.5
select = { network_types = ["Hyperscaler", "CDN"] }

[[links]]
exporter = "10.20.0.1"
interfaces = [501, 502]
description = "private fibre"

[[links]]
name = "usw-ix"
exporter = "::ffff:10.10.0.2"
interfaces = [7]
network_type = "Hosting"
"""


def _load(tmp_path, text: str, name: str = "links.toml") -> Config:
    p = tmp_path / name
    p.write_text(text)
    return load_config(p)


def test_links_parse(tmp_path) -> None:
    cfg = _load(tmp_path, REGIONS + LINKS)
    a, pni, hyper, fibre, ix = cfg.links
    assert (a.name, a.region, a.capacity_gbps, a.capacity_mode) == (
        "usw-transit-a", "US-West", 400.0, "per-direction"
    )  # fmt: skip
    assert a.is_interface_link and a.network_type is None  # a named link only measures
    assert pni.is_selection_link and pni.capacity_mode == "shared"
    assert pni.select_network_types == ("Neocloud",) and pni.select_directions == ("egress",)
    assert hyper.capacity_gbps == 200.5 and hyper.select_directions == ()
    # the original form: derived name, Migration, no capacity, region of its exporter
    assert fibre.name == "10.20.0.1:501,502" and fibre.network_type == "Migration"
    assert fibre.capacity_gbps is None and fibre.region == "US-East"
    # an IPv4-mapped spelling of a configured exporter is that exporter
    assert ix.region == "US-West" and ix.network_type == "Hosting"
    assert link_names(cfg) == [
        "usw-transit-a", "use-neocloud-pni", "use-hyperscalers", "10.20.0.1:501,502", "usw-ix",
        "Unknown/other", "US-West/other", "US-East/other",
    ]  # fmt: skip
    assert cfg.network_types == NETWORK_TYPES  # a named link without a type adds none


def test_backward_compatible_form(tmp_path) -> None:
    """Today's form keeps working: no name, no capacity, Migration by default; an exporter in
    no region gives a link in Unknown; IPv6 exporters get bracketed names."""
    cfg = _load(
        tmp_path,
        REGIONS + '[[links]]\nexporter = "10.10.0.9"\ninterfaces = [501, 502]\n'
        '[[links]]\nexporter = "2001:db8::2"\ninterfaces = [3]\nnetwork_type = "Migration"\n',
    )
    one, two = cfg.links
    assert one == LinkRule("10.10.0.9", (501, 502), "Migration", "", "10.10.0.9:501,502", "Unknown")
    assert two.name == "[2001:db8::2]:3" and two.network_type == "Migration"
    # positional construction, as the synthetic world does it
    rule = LinkRule("10.10.0.9", (501,), "Migration", "fibre")
    assert rule.name == "10.10.0.9:501" and rule.is_interface_link


def test_link_in_python_config_gets_exporter_region() -> None:
    from flowatlas.config import Region

    cfg = Config(
        regions=(Region("A", (), ("10.0.0.1",)),),
        links=(LinkRule("10.0.0.1", (5,)), LinkRule("10.0.0.2", (5,))),
    )
    assert [lk.region for lk in cfg.links] == ["A", "Unknown"]


@pytest.mark.parametrize(
    ("links", "message"),
    [
        (
            '[[links]]\nname = "a"\nexporter = "10.10.0.1"\ninterfaces = [1]\n'
            '[[links]]\nname = "a"\nexporter = "10.10.0.1"\ninterfaces = [2]\n',
            r"links\[1\]\.name: 'a' is also the name of links\[0\]",
        ),
        (
            '[[links]]\nname = "US-East/other"\nregion = "US-East"\n',
            r"links\[0\]\.name: 'US-East/other' is the catch-all link of region 'US-East'",
        ),
        (
            '[[links]]\nname = "a"\nexporter = "10.10.0.1"\ninterfaces = [1, 2]\n'
            '[[links]]\nname = "b"\nexporter = "::ffff:10.10.0.1"\ninterfaces = [2]\n',
            r"links\[0\] \('a'\) and links\[1\] \('b'\) both claim exporter ::ffff:10.10.0.1 "
            r"interface 2",
        ),
        (
            '[[links]]\nname = "a"\nregion = "US-East"\nselect = { network_types = ["CDN"] }\n'
            '[[links]]\nname = "b"\nregion = "US-East"\n'
            'select = { network_types = ["Hosting", "CDN"], directions = ["ingress"] }\n',
            r"links\[0\] \('a'\) and links\[1\] \('b'\) both select US-East flows of type CDN "
            r"going ingress",
        ),
        (
            '[[links]]\nname = "a"\nregion = "US-East"\n'
            '[[links]]\nname = "b"\nregion = "US-East"\nselect = { directions = ["egress"] }\n',
            r"links\[0\] \('a'\) and links\[1\] \('b'\) both select",
        ),
        (
            '[[links]]\nname = "a"\nregion = "US-North"\nselect = {}\n',
            r"links\[0\]\.region: unknown region 'US-North'",
        ),
        (
            '[[links]]\nname = "a"\nregion = "US-East"\nexporter = "10.10.0.1"\ninterfaces = [1]\n',
            r"links\[0\]\.region: link 'a' says 'US-East' but its exporter 10.10.0.1 is in "
            r"region 'US-West'",
        ),
        (
            '[[links]]\nname = "a"\ncapacity_gbps = 0\nexporter = "10.10.0.1"\ninterfaces = [1]\n',
            r"links\[0\]\.capacity_gbps: 0 is not a positive capacity",
        ),
        (
            '[[links]]\nname = "a"\ncapacity_gbps = -10.5\nregion = "US-West"\n',
            r"links\[0\]\.capacity_gbps: -10.5 is not a positive capacity",
        ),
        (
            '[[links]]\nname = "a"\ncapacity_gbps = "100G"\nregion = "US-West"\n',
            r"links\[0\]\.capacity_gbps: expected a number",
        ),
        (
            '[[links]]\nname = "a"\ncapacity_gbps = nan\nregion = "US-West"\n',
            r"links\[0\]\.capacity_gbps: nan is not a positive capacity",
        ),
        (
            '[[links]]\nname = "a"\ncapacity_mode = "half"\nregion = "US-West"\n',
            r"links\[0\]\.capacity_mode: 'half' is not one of per-direction, shared",
        ),
        (
            '[[links]]\nexporter = "10.10.0.9"\ninterfaces = [501]\nnetwork_type = "Migrashun"\n',
            r"links\[0\]\.network_type: unknown network type 'Migrashun' \(declare it",
        ),
        (
            '[[links]]\nname = "a"\nregion = "US-West"\nselect = { network_types = ["Neoclod"] }\n',
            r"links\[0\]\.select\.network_types\[0\]: unknown network type 'Neoclod'",
        ),
        (
            '[[links]]\nname = "a"\nregion = "US-West"\nselect = { directions = ["internal"] }\n',
            r"links\[0\]\.select\.directions\[0\]: 'internal' is not one of ingress, egress, "
            r"transit \(internal flows go to the catch-all\)",
        ),
        (
            '[[links]]\nname = "a"\nregion = "US-West"\nselect = { regions = ["US-West"] }\n',
            r"links\[0\]\.select: unknown key 'regions'",
        ),
        (
            '[[links]]\nname = "a"\nexporter = "10.10.0.1"\ninterfaces = [1]\nspeed = 10\n',
            r"links\[0\]: unknown key 'speed'",
        ),
        (
            '[[links]]\nname = "a"\nexporter = "10.10.0.1"\ninterfaces = [1]\n'
            'select = { directions = ["egress"] }\n',
            r"links\[0\]\.select: a link is defined by exporter \+ interfaces or by select",
        ),
        (
            '[[links]]\nname = "a"\nselect = {}\n',
            r"links\[0\]\.region: a selection link needs its region",
        ),
        (
            '[[links]]\nregion = "US-West"\ncapacity_gbps = 10\n',
            r"links\[0\]: a link needs exporter \+ interfaces, or a name",
        ),
        (
            '[[links]]\nname = "a"\nregion = "US-West"\nnetwork_type = "CDN"\n',
            r"links\[0\]\.network_type: only interface links set a network type",
        ),
        (
            '[[links]]\nname = ""\nexporter = "10.10.0.1"\ninterfaces = [1]\n',
            r"links\[0\]\.name: a link's name cannot be empty",
        ),
        (
            '[[links]]\nexporter = "10.10.0.1"\ninterfaces = [1, 1]\n',
            r"links\[0\]\.interfaces: an interface is listed twice",
        ),
        (
            '[[links]]\nexporter = "10.10.0.300"\ninterfaces = [1]\n',
            r"links\[0\]\.exporter: row 1: not an IP address",
        ),
    ],
)
def test_link_refusals(tmp_path, links: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(REGIONS + links)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(p)
    text = str(exc.value)
    assert text.startswith(f"{p}: ") and "\n" not in text


def test_exporter_in_two_regions_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"regions\[2\]\.exporters: exporter 10.10.0.1 is also"):
        _load(tmp_path, REGIONS + '[[regions]]\nname = "CA-East"\nexporters = ["10.10.0.1"]\n')


def test_declared_extra_type_accepted(tmp_path) -> None:
    cfg = _load(
        tmp_path,
        REGIONS + '[[links]]\nexporter = "10.10.0.9"\ninterfaces = [5]\n'
        'network_type = "Satellite"\n[classify]\nnetwork_types = ["Satellite"]\n',
    )
    assert cfg.links[0].network_type == "Satellite"
    assert cfg.network_types == (*NETWORK_TYPES, "Satellite")


def test_disjoint_selections_accepted(tmp_path) -> None:
    cfg = _load(
        tmp_path,
        REGIONS + '[[links]]\nname = "a"\nregion = "US-East"\n'
        'select = { network_types = ["CDN"], directions = ["egress"] }\n'
        '[[links]]\nname = "b"\nregion = "US-East"\n'
        'select = { network_types = ["CDN"], directions = ["ingress", "transit"] }\n'
        '[[links]]\nname = "c"\nregion = "US-West"\nselect = {}\n',
    )
    assert [lk.name for lk in cfg.links] == ["a", "b", "c"]


def test_assign_links(tmp_path) -> None:
    cfg = _load(tmp_path, REGIONS + LINKS)
    rows = [
        # (interface link, region, network type, direction) -> link
        ("usw-transit-a", "US-West", "CDN", "ingress", "usw-transit-a"),
        (None, "US-East", "Neocloud", "egress", "use-neocloud-pni"),
        (None, "US-East", "Neocloud", "ingress", "US-East/other"),
        (None, "US-East", "CDN", "transit", "use-hyperscalers"),
        (None, "US-East", "Hyperscaler", "egress", "use-hyperscalers"),
        (None, "US-West", "Neocloud", "egress", "US-West/other"),  # selection is US-East only
        (None, "US-East", "Internal", "internal", "US-East/other"),
        (None, "US-East", "CDN", "internal", "US-East/other"),  # internal: always catch-all
        (float("nan"), "Unknown", "ISP Tier1", "transit", "Unknown/other"),
        ("10.20.0.1:501,502", "US-East", "Migration", "ingress", "10.20.0.1:501,502"),
        # the interface link wins over a matching selection
        ("10.20.0.1:501,502", "US-East", "Neocloud", "egress", "10.20.0.1:501,502"),
    ]
    got = assign_links(cfg, *zip(*[r[:4] for r in rows], strict=True))
    assert list(got) == [r[4] for r in rows]
    assert set(got) <= set(link_names(cfg))
    assert catch_all_name("CA-East") == "CA-East/other"


def test_dump_check_roundtrip(tmp_path) -> None:
    cfg = _load(tmp_path, REGIONS + LINKS)
    text = dump_config(cfg)
    assert "[links.select]" in text or "select = " in text
    assert "# [[links]]: none configured" not in text
    again = _load(tmp_path, text, "again.toml")
    assert again.links == cfg.links
    assert again.to_dict() == cfg.to_dict() and again.digest() == cfg.digest()


def test_dump_shows_links_form_without_links() -> None:
    text = dump_config(Config())
    for key in ("name", "region", "capacity_gbps", "capacity_mode", "exporter", "interfaces",
                "network_type", "select", "description"):  # fmt: skip
        assert f"#   {key} " in text
    # the form is comments only: the dump still loads as the defaults
    assert config_from_dict(__import__("tomllib").loads(text)).to_dict() == Config().to_dict()


def test_cli_check(tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(REGIONS + LINKS)
    r = subprocess.run(
        [sys.executable, "-m", "flowatlas", "config", "--check", str(good)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert 'name = "use-neocloud-pni"' in r.stdout and "OK" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(REGIONS + '[[links]]\nexporter = "10.10.0.9"\ninterfaces = [1]\n'
                   'network_type = "Migrashun"\n')  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "flowatlas", "config", "--check", str(bad)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.toml" in lines[0] and "links[0].network_type" in lines[0]
    assert "Traceback" not in r.stderr


def test_link_from_dict(tmp_path) -> None:
    """Cube.links reads links back from cube.json: every form round-trips, and the original
    form's keys alone (cubes built before links had names) give the derived link."""
    cfg = _load(tmp_path, REGIONS + LINKS)
    assert tuple(LinkRule.from_dict(lk.to_dict()) for lk in cfg.links) == cfg.links
    old = {"exporter": "10.0.0.9", "interfaces": [501, 502], "network_type": "Migration",
           "description": "fibre"}  # fmt: skip
    rule = LinkRule.from_dict(old)
    assert rule == LinkRule("10.0.0.9", (501, 502), "Migration", "fibre")
    assert rule.name == "10.0.0.9:501,502" and rule.capacity_gbps is None
