"""`flowatlas inspect` and `config --init`: checked against pandas over the archive, against
a real build's cube, against the synthetic world's own configuration, and on real nfcapd data.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from flowatlas.cli import main
from flowatlas.config import Config, load_config
from flowatlas.engine.build import build_cube
from flowatlas.inspect import inspect_archive, key_prefix, prefix_keys, starter_config
from flowatlas.synth import EXPORTERS, synthesize
from flowatlas.testing import need_data, need_tools


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    synthesize(root / "archive", records=60_000, days=8, seed=3)
    build_cube(root / "archive", root / "cube", workers=0)
    return root


def records(archive: Path) -> pd.DataFrame:
    """The archive's rows, with the oracle's own decoding of addresses and volume."""
    files = sorted(str(p) for p in archive.glob("day=*/*.parquet"))
    df = ds.dataset(files, format="parquet").to_table().to_pandas()

    def addr(b: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        a = ipaddress.IPv6Address(b)
        return a.ipv4_mapped or a

    for side in ("src", "dst"):
        a = df[f"{side}_addr"].map(addr)
        df[f"{side}_net"] = [
            ipaddress.ip_network(f"{x}/{24 if x.version == 4 else 48}", strict=False) for x in a
        ]
        df[f"{side}_v6"] = [x.version == 6 for x in a]
    df["exporter"] = df["exporter"].map(lambda b: str(addr(b)))
    df["volume"] = [
        int(b) * max(int(r), 1) for b, r in zip(df["bytes"], df["sampling_rate"], strict=True)
    ]
    return df


def test_inspection_equals_pandas_over_the_archive(world):
    ins = inspect_archive(world / "archive", top=5, workers=2)
    df = records(world / "archive")
    assert ins.records == len(df) == 60_000 and ins.files == 8
    first = pd.Timestamp(df["time_start"].min()).tz_convert("UTC")
    assert ins.first == first.isoformat().replace("+00:00", "Z")
    assert ins.families == {"IPv4": int((~df["src_v6"]).sum()), "IPv6": int(df["src_v6"].sum())}

    want: dict[str, list[int]] = {}
    for e, b, v in zip(
        df["exporter"], df["bytes"], df["volume"], strict=True
    ):  # exact Python integers
        w = want.setdefault(e, [0, 0, 0])
        w[0], w[1], w[2] = w[0] + 1, w[1] + int(b), w[2] + v
    assert {e.address: [e.records, e.bytes, e.volume] for e in ins.exporters} == want
    truth = {e.address: (e.region, max(e.sampling, 1)) for e in EXPORTERS}
    for e in ins.exporters:  # the synth's world: its regions, one sampling rate per router
        assert (e.region, list(e.sampling)) == (truth[e.address][0], [truth[e.address][1]])
        sub = df[df["exporter"] == e.address]
        in_n = sub.groupby("in_if").size().to_dict()
        out_n = sub.groupby("out_if").size().to_dict()
        assert {i.index: (i.records_in, i.records_out) for i in e.interfaces} == {
            k: (in_n.get(k, 0), out_n.get(k, 0)) for k in set(in_n) | set(out_n)
        }
    for side in ("src", "dst"):
        for fam, v6 in (("v4", False), ("v6", True)):
            sub = df[df[f"{side}_v6"] == v6]
            acc: dict = {}
            for net, v in zip(sub[f"{side}_net"], sub["volume"], strict=True):
                a = acc.setdefault(net, [0, 0])
                a[0], a[1] = a[0] + 1, a[1] + v
            rows = sorted(
                (-n, int(net.network_address), str(net), v) for net, (n, v) in acc.items()
            )
            rows = rows[:5]
            assert [(p.prefix, p.records, p.volume) for p in ins.prefixes[side][fam]] == [
                (p, -n, v) for n, _, p, v in rows
            ]


def test_config_shares_equal_the_cube(world):
    """Region, type and direction counts are what a real build of the archive put in its cube."""
    ins = inspect_archive(world / "archive")
    cells = pq.read_table(world / "cube" / "cells.parquet").to_pandas()
    for dim, got in (
        ("region", ins.regions),
        ("network_type", ins.network_types),
        ("direction", ins.directions),
    ):
        want = cells.groupby(dim, observed=True)[["flows", "bytes"]].sum()
        want = {k: (int(r.flows), int(r.bytes)) for k, r in want.iterrows() if r.flows}
        assert {k: (c.records, c.volume) for k, c in got.items() if c.records} == want, dim
    meta = json.loads((world / "cube" / "cube.json").read_text())
    assert ins.quarantined == meta["records"]["quarantined"]
    s = ins.shares
    assert s.unknown_region == 0 and s.transit < 0.01 * s.records
    assert s.warnings() == []  # the synthetic world's own configuration is right


def test_with_the_defaults_everything_is_unknown_and_it_says_so(world):
    ins = inspect_archive(world / "archive", config=Config())
    assert ins.config_origin == "<defaults>"
    assert {k: c.records for k, c in ins.regions.items()} == {"Unknown": 60_000}
    assert {k: c.records for k, c in ins.directions.items()} == {"transit": 60_000}
    warnings = ins.shares.warnings("ARCH")
    assert any("region Unknown" in w and "[[regions]] exporters" in w for w in warnings)
    assert any("[classify] table" in w for w in warnings)
    assert (
        "flowatlas config --init ARCH" in warnings[-1] and "flowatlas inspect ARCH" in warnings[-1]
    )


def test_prefix_keys_round_trip():
    from flowatlas.addresses import parse_addresses

    texts = ["192.0.2.77", "10.1.2.3", "2001:db8:aa:bb::1", "::ffff:1.2.3.4", "::1"]
    hi, lo, _ = parse_addresses(texts)
    nets = [key_prefix(k) for k in prefix_keys(hi, lo)]
    assert [str(n) for n in nets] == [
        "192.0.2.0/24", "10.1.2.0/24", "2001:db8:aa::/48", "1.2.3.0/24", "::/48",
    ]  # fmt: skip


def test_cli_inspect_json_and_text(world, capsys):
    assert main(["inspect", str(world / "archive"), "--json", "-q", "--top", "3"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["records"] == 60_000 and len(d["prefixes"]["src"]["v4"]) == 3
    assert d["shares"]["unknown_region"] == 0
    assert main(["inspect", str(world / "archive"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "exporters (8)" in out and "busiest IPv4 /24 as src" in out and "region Unknown" in out


def test_init_then_check_then_build(world, tmp_path, capsys):
    """The starter configuration finds the synthetic world's regions and prefixes."""
    bare = tmp_path / "bare"
    shutil.copytree(world / "archive", bare, ignore=shutil.ignore_patterns("*.toml", "*.csv"))
    toml = tmp_path / "starter.toml"
    assert main(["config", "--init", str(bare), "--out", str(toml), "-q"]) == 0
    assert main(["config", "--check", str(toml)]) == 0
    assert main(["config", "--init", str(bare), "--out", str(toml), "-q"]) == 2  # not replaced
    capsys.readouterr()
    cfg = load_config(toml)
    truth = load_config(world / "archive" / "flowatlas.toml")
    # one starter region per true region, with exactly its exporters
    want = sorted(sorted(r.exporters) for r in truth.regions)
    assert sorted(sorted(r.exporters) for r in cfg.regions) == want
    for r in cfg.regions:
        [true] = [t for t in truth.regions if set(t.exporters) == set(r.exporters)]
        ours = [ipaddress.ip_network(p) for p in true.prefixes]
        for p in map(ipaddress.ip_network, r.prefixes):  # inside the region's true space
            assert any(p.version == o.version and p.subnet_of(o) for o in ours), (p, true)
    assert main(["build", str(bare), "-o", str(tmp_path / "cube"), "--config", str(toml)]) == 0
    err = capsys.readouterr().err
    assert "region Unknown 0.0%" in err
    warned = [ln for ln in err.splitlines() if ln.startswith("flowatlas: warning")]
    # regions and prefixes are right; only the (absent) classification table is left to set
    assert "have network type Unknown: set [classify] table" in warned[0] and len(warned) == 2


def test_build_warns_on_a_wrong_set_up_and_not_on_a_right_one(world, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(world / "archive", bare, ignore=shutil.ignore_patterns("*.toml", "*.csv"))
    assert main(["build", str(bare), "-o", str(tmp_path / "c1"), "--workers", "0", "-q"]) == 0
    err = capsys.readouterr().err
    assert "flowatlas: warning: 100.0% of records have region Unknown" in err
    assert f"flowatlas config --init {bare}" in err
    assert (
        main(["build", str(world / "archive"), "-o", str(tmp_path / "c2"), "--workers", "0"]) == 0
    )
    err = capsys.readouterr().err
    assert "region Unknown 0.0%" in err and "transit" in err and "warning" not in err


def test_import_accounting_line_and_warnings(world, tmp_path):
    from flowatlas.io.commands import FileResult, ImportSummary, _setup_lines

    files = sorted(p.relative_to(world / "archive").as_posix()
                   for p in (world / "archive").glob("day=*/*.parquet"))  # fmt: skip
    result = FileResult("x", 0, "0" * 64, "csv", records_read=60_000, records_written=60_000,
                        outputs=files)  # fmt: skip
    summary = ImportSummary(str(world / "archive"), imported=[result])
    lines = _setup_lines(summary, None)  # the archive's own configuration: right
    assert len(lines) == 1 and "region Unknown 0.0%" in lines[0]
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    lines = _setup_lines(summary, str(empty))
    assert "region Unknown 100.0%" in lines[0]
    assert any(ln.startswith("flowatlas: warning: 100.0% of records have region") for ln in lines)


def test_real_nfcapd_import_then_inspect_and_init(tmp_path, capsys):
    need_tools("nfdump")
    data = need_data("flow_exports/generated_nfcapd/netflix.pcap")
    srcs = [data / f"flow_exports/generated_nfcapd/{n}/nfcapd.202611250000"
            for n in ("netflix.pcap", "teams.pcap")]  # fmt: skip
    archive = tmp_path / "archive"
    assert main(["import", *map(str, srcs), "-o", str(archive), "-q"]) == 0
    err = capsys.readouterr().err
    assert "flowatlas: warning: 100.0% of records have region Unknown" in err  # no config yet
    ins = inspect_archive(archive)
    df = records(archive)
    assert ins.records == len(df) > 100
    assert [(e.address, e.records, e.bytes) for e in ins.exporters] == [
        ("127.0.0.1", len(df), int(df["bytes"].sum()))
    ]
    top = df.groupby("src_net").size().sort_values(ascending=False)
    assert ins.prefixes["src"]["v4"][0].prefix == str(top.index[0]) == "192.168.1.0/24"
    text = starter_config(archive)
    (tmp_path / "starter.toml").write_text(text)
    cfg = load_config(tmp_path / "starter.toml")
    assert [(r.prefixes, r.exporters) for r in cfg.regions] == [
        (("192.168.1.0/24",), ("127.0.0.1",))
    ]
    again = inspect_archive(archive, config=cfg)
    local = df["src_net"].map(str).eq("192.168.1.0/24") | df["dst_net"].map(str).eq(
        "192.168.1.0/24"
    )
    assert again.directions.get("transit") is None or again.directions["transit"].records == int(
        (~local).sum()
    )
    assert again.regions["Unknown"].records == 0
    assert np.isclose(again.shares.share(again.shares.transit), (~local).mean())


def test_keep_state_says_where_and_how_big_and_incremental_rates_new_records(world, tmp_path,
                                                                             capsys):  # fmt: skip
    cube = tmp_path / "cube"
    args = ["build", str(world / "archive"), "-o", str(cube), "--workers=0"]
    assert main([*args, "--keep-state"]) == 0
    err = capsys.readouterr().err
    state = tmp_path / ".cube.state"
    size = sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
    assert f"build state for --incremental: {state} ({size / 1e6:.1f} MB" in err
    assert not (cube / "_state").exists()
    assert main([*args, "--incremental"]) == 0
    err = capsys.readouterr().err
    # nothing new: every record reused, none read this time, and the rate says so
    assert "60,000 records, 0 of them read this time (0 records/s)" in err
