"""Configuration: defaults, validation errors that name file and key, dump round trip."""

from __future__ import annotations

import pytest

from flowatlas.config import Config, config_from_dict, dump_config, load_config, parse_duration
from flowatlas.errors import ConfigError
from flowatlas.vocab import NETWORK_TYPES

GOOD = """
[cube]
bucket = "15m"
rollups = ["day", "all"]

[[regions]]
name = "US-West"
prefixes = ["198.51.100.0/24", "2001:db8:100::/48"]
exporters = ["192.0.2.1"]

[[links]]
exporter = "192.0.2.1"
interfaces = [501, 502]
network_type = "Migration"
description = "private fibre"

[classify]
network_types = ["Research"]

[[classify.sources]]
path = "prefixes.csv"
format = "prefix-csv"
"""


def test_load_dump_roundtrip(tmp_path) -> None:
    p = tmp_path / "flowatlas.toml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert cfg.cube.bucket_seconds == 900
    assert cfg.regions[0].name == "US-West"
    assert cfg.links[0].interfaces == (501, 502)
    assert cfg.network_types == (*NETWORK_TYPES, "Research")
    assert cfg.resolve("prefixes.csv") == tmp_path / "prefixes.csv"
    again = tmp_path / "again.toml"
    again.write_text(dump_config(cfg))
    cfg2 = load_config(again)
    assert cfg2.to_dict() == cfg.to_dict()
    assert cfg2.digest() == cfg.digest()


def test_defaults_dump() -> None:
    text = dump_config(Config())
    assert 'bucket = "1h"' in text
    assert config_from_dict({}).to_dict() == Config().to_dict()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[cube]\nbuckett = '1h'\n", r"\[cube\]: unknown key 'buckett'"),
        ("[cube]\nbucket = '7m'\n", r"cube.bucket: '7m' must divide a day"),
        ("[cube]\nbucket = 'soon'\n", r"cube.bucket: 'soon' is not a duration"),
        ("[cube]\nrollups = ['week']\n", r"unknown rollup 'week'"),
        (
            "[[regions]]\nname = 'A'\nprefixes = ['10.0.0.1/8']\n",
            r"regions\[0\].prefixes: row 1: host bits set",
        ),
        (
            "[[regions]]\nname = 'A'\nexporters = ['10.0.0.300']\n",
            r"regions\[0\].exporters: row 1: not an IP address",
        ),
        (
            "[[regions]]\nname = 'A'\n[[regions]]\nname = 'A'\n",
            r"regions\[1\].name: region 'A' is defined twice",
        ),
        (
            "[[links]]\nexporter = '10.0.0.1'\ninterfaces = [-1]\n",
            r"links\[0\].interfaces\[0\]: -1 is not an interface",
        ),
        (
            "[[links]]\nexporter = '10.0.0.1'\ninterfaces = 5\n",
            r"links\[0\].interfaces: expected list",
        ),
        ("regions = 3\n", r"regions: expected list, got int"),
        ("colour = 'blue'\n", r"unknown key 'colour'"),
        ("[cube\n", r"invalid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, toml: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(p)
    assert "bad.toml" in str(exc.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: configuration file not found"):
        load_config(tmp_path / "nope.toml")


def test_durations() -> None:
    assert parse_duration("1h", "k") == 3600
    assert parse_duration("1d", "k") == 86400
    assert parse_duration("2d", "k") == 172800
    assert parse_duration("30s", "k") == 30
    with pytest.raises(ConfigError):
        parse_duration("0h", "k")
