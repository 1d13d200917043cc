"""End to end with real tools: capture -> softflowd -> nfcapd -> import -> build -> cube.

Per direction, the cube's volume, packets, flows, distinct remote IPs and top remote IPs equal
nfdump's own statistics of the same nfcapd file (``nfdump -s srcip/bytes`` for inbound flows,
``-s dstip/bytes`` for outbound ones).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from test_import_pipeline import CAPTURES, capture_to_nfcapd

from flowatlas.cli import main
from flowatlas.engine.cube import open_cube
from flowatlas.engine.pipeline import TOP_K
from flowatlas.io.importers.nfdump import nfdump_binary, stats_by_ip
from flowatlas.testing import need_data, need_tools


def canonical(ip: str) -> str:
    a = ipaddress.ip_address(ip)
    if a.version == 6 and a.ipv4_mapped:
        return str(a.ipv4_mapped)
    return str(a)


def addr_key(ip: str) -> int:
    a = ipaddress.ip_address(ip)
    return (0xFFFF << 32) | int(a) if a.version == 4 else int(a)


@pytest.mark.tools
@pytest.mark.shared_data
@pytest.mark.parametrize(("capture", "local"), CAPTURES, ids=[Path(c).name for c, _ in CAPTURES])
def test_capture_to_cube_matches_nfdump(tmp_path, capture, local) -> None:
    need_tools("softflowd", "nfcapd", "nfdump")
    root = need_data(capture)
    nfcapd_file = capture_to_nfcapd(root / capture, tmp_path)
    cfg = tmp_path / "flowatlas.toml"
    cfg.write_text(f'[[regions]]\nname = "Lab"\nprefixes = ["{local}"]\n')
    archive, cube_dir = tmp_path / "archive", tmp_path / "cube"
    assert main(["import", str(nfcapd_file), "-o", str(archive), "--config", str(cfg), "-q"]) == 0
    assert main(["build", str(archive), "-o", str(cube_dir), "--config", str(cfg), "-q"]) == 0
    cube = open_cube(cube_dir)
    binary = nfdump_binary()
    by_dir = cube.rollup(("region", "direction")).set_index("direction")
    top = cube.top_ips()
    for direction, element, flt in (
        ("ingress", "srcip", f"dst net {local} and not src net {local}"),
        ("egress", "dstip", f"src net {local} and not dst net {local}"),
    ):
        stats = {
            canonical(ip): v for ip, v in stats_by_ip(binary, nfcapd_file, element, flt).items()
        }
        flows = sum(v[0] for v in stats.values())
        packets = sum(v[1] for v in stats.values())
        volume = sum(v[2] for v in stats.values())
        if not stats:
            assert direction not in by_dir.index
            continue
        row = by_dir.loc[direction]
        assert (int(row["flows"]), int(row["packets"]), int(row["bytes"])) == (
            flows,
            packets,
            volume,
        )
        assert int(row["uniques"]) == len(stats)
        ranked = sorted(stats.items(), key=lambda kv: (-kv[1][2], addr_key(kv[0])))[:TOP_K]
        mine = top[(top["grouping"] == "region,direction") & (top["direction"] == direction)]
        mine = mine.sort_values("rank")
        assert [(ip, int(b)) for ip, b in zip(mine["remote_ip"], mine["bytes"], strict=True)] == [
            (ip, v[2]) for ip, v in ranked
        ]
