"""Precedence in the build: user overrides > private-link rules > prefix lists > Unknown."""

from __future__ import annotations

import pyarrow as pa

from flowatlas.addresses import text_to_bytes16
from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import open_cube
from flowatlas.io.archive import ArchiveWriter
from flowatlas.schema import FLOW_SCHEMA_V1, TIMESTAMP

CONFIG = """
[[regions]]
name = "East"
prefixes = ["192.0.2.0/24"]
exporters = ["10.0.0.1"]

[[links]]
exporter = "10.0.0.1"
interfaces = [501]
network_type = "Migration"

[[classify.sources]]
path = "prefixes.csv"
format = "prefix-csv"

[[classify.sources]]
path = "overrides.toml"
format = "overrides"
"""

PREFIXES = "prefix,network_type,asn,org\n203.0.113.0/24,Hosting,64500,Listed Hosting\n"
PREFIXES += "198.51.100.0/24,Hosting,64501,Listed Too\n"
OVERRIDES = '[[prefix]]\nprefix = "198.51.100.0/24"\nnetwork_type = "Neocloud"\n'


def test_user_override_beats_link_rule_beats_prefix_list(tmp_path) -> None:
    (tmp_path / "flowatlas.toml").write_text(CONFIG)
    (tmp_path / "prefixes.csv").write_text(PREFIXES)
    (tmp_path / "overrides.toml").write_text(OVERRIDES)
    # (remote source, in_if): every flow is ingress to 192.0.2.10
    rows = [
        ("203.0.113.9", 501),  # listed, on the private link: Migration
        ("198.51.100.7", 501),  # overridden by the user, on the private link: Neocloud
        ("203.0.113.9", 1),  # listed, on an ordinary interface: Hosting
        ("100.64.0.1", 1),  # nowhere: Unknown
    ]
    n = len(rows)
    t = pa.table(
        {
            "time_start": pa.array([1_700_000_000_000_000] * n, pa.int64()).cast(TIMESTAMP),
            "time_end": pa.array([1_700_000_000_000_000] * n, pa.int64()).cast(TIMESTAMP),
            "exporter": text_to_bytes16(["10.0.0.1"] * n),
            "in_if": pa.array([r[1] for r in rows], pa.uint32()),
            "out_if": pa.array([100] * n, pa.uint32()),
            "src_addr": text_to_bytes16([r[0] for r in rows]),
            "dst_addr": text_to_bytes16(["192.0.2.10"] * n),
            "src_port": pa.array([443] * n, pa.uint16()),
            "dst_port": pa.array([5000] * n, pa.uint16()),
            "proto": pa.array([6] * n, pa.uint8()),
            "bytes": pa.array([1000 * (i + 1) for i in range(n)], pa.uint64()),
            "packets": pa.array([1] * n, pa.uint64()),
            "sampling_rate": pa.array([1] * n, pa.uint32()),
            "src_as": pa.array([0] * n, pa.uint32()),
            "dst_as": pa.array([0] * n, pa.uint32()),
        },
        schema=FLOW_SCHEMA_V1,
    )
    with ArchiveWriter(tmp_path / "archive") as w:
        w.write(t)
    build_cube(
        tmp_path / "archive", tmp_path / "cube", config=tmp_path / "flowatlas.toml", workers=0
    )
    by_type = open_cube(tmp_path / "cube").volume(by=("network_type",)).set_index("network_type")
    got = {str(k): int(v) for k, v in by_type["bytes"].items() if v}
    assert got == {"Migration": 1000, "Neocloud": 2000, "Hosting": 3000, "Unknown": 4000}
