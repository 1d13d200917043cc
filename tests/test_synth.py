"""The synthetic generator: deterministic, bounded, and shaped like the seed report's world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import flowatlas.synth as synth
from flowatlas.addresses import bytes16_to_hilo, is_v4
from flowatlas.config import load_config
from flowatlas.errors import ConfigError, OutputError
from flowatlas.io.archive import open_archive


def archive_bytes(root) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path) -> None:
    a = synth.synthesize(tmp_path / "a", records=30_000, days=10, seed=7, workers=1)
    b = synth.synthesize(tmp_path / "b", records=30_000, days=10, seed=7, workers=2)
    assert a.records == b.records == 30_000
    assert archive_bytes(tmp_path / "a") == archive_bytes(tmp_path / "b")
    c = synth.synthesize(tmp_path / "c", records=30_000, days=10, seed=8, workers=1)
    assert c.records == 30_000
    assert archive_bytes(tmp_path / "a") != archive_bytes(tmp_path / "c")


def test_chunking_does_not_change_records(tmp_path, monkeypatch) -> None:
    """A day larger than one chunk is written in row groups; the records are the same."""
    synth.synthesize(tmp_path / "a", records=6_000, days=1, seed=3, workers=1)
    monkeypatch.setattr(synth, "CHUNK_ROWS", 1000)
    synth.synthesize(tmp_path / "b", records=6_000, days=1, seed=3, workers=1)
    ta = pq.read_table(next((tmp_path / "a").rglob("*.parquet")))
    tb = pq.read_table(next((tmp_path / "b").rglob("*.parquet")))
    assert pq.ParquetFile(next((tmp_path / "b").rglob("*.parquet"))).num_row_groups >= 6
    assert ta.num_rows == tb.num_rows == 6000
    # per-chunk randomness differs, but every stream keeps its volume for the day
    key = ["exporter", "sampling_rate"]
    va = ta.group_by(key).aggregate([("bytes", "sum")]).sort_by([(k, "ascending") for k in key])
    vb = tb.group_by(key).aggregate([("bytes", "sum")]).sort_by([(k, "ascending") for k in key])
    ratio = np.array(vb["bytes_sum"].to_pylist(), float) / np.array(
        va["bytes_sum"].to_pylist(), float
    )
    assert np.all(np.abs(ratio - 1) < 0.35), ratio


def test_archive_shape(tmp_path) -> None:
    s = synth.synthesize(tmp_path / "a", records=40_000, days=184, seed=1)
    arch = open_archive(tmp_path / "a")
    assert arch.num_rows == 40_000 == s.records
    assert len(arch.days) == 184 and arch.days[0] == "2025-07-01" and arch.days[-1] == "2025-12-31"
    t = pa.concat_tables(pq.read_table(f.path) for f in arch.files)
    rates = set(t.column("sampling_rate").to_pylist())
    assert rates == {1, 1000}  # sampled and unsampled exporters
    hi, lo = bytes16_to_hilo(t.column("src_addr"))
    v6 = ~is_v4(hi, lo)
    assert 0.05 < v6.mean() < 0.5  # IPv4 and IPv6
    assert set(t.column("in_if").to_pylist()) & set(synth.MIGRATION_IFS)  # private links
    # the archive carries its configuration and prefix table, and they load
    cfg = load_config(tmp_path / "a" / "flowatlas.toml")
    assert [r.name for r in cfg.regions] == ["US-West", "US-East", "CA-East"]
    assert cfg.links and cfg.classify.sources[0].format == "prefix-csv"
    assert (tmp_path / "a" / "prefixes.csv").read_text().startswith("prefix,network_type,asn,org")
    # counts are raw and time ordering holds inside each file
    assert all(f.counts == "raw" for f in arch.files)
    ts = pq.read_table(arch.files[0].path).column("time_start")
    assert pc.all(pc.greater_equal(ts.slice(1), ts.slice(0, len(ts) - 1))).as_py()


def test_world_nests_prefixes_like_the_internet() -> None:
    import ipaddress

    world = synth.build_world(1)
    cdn = [
        ipaddress.ip_network(p) for o in world.orgs if o.network_type == "CDN" for p in o.prefixes
    ]
    isp = [
        ipaddress.ip_network(p)
        for o in world.orgs
        if o.network_type == "ISP Regional"
        for p in o.prefixes
    ]
    nested = sum(1 for c in cdn if any(c.version == i.version and c.subnet_of(i) for i in isp))
    assert nested >= 10
    # neoclouds have few endpoints, ISPs many
    assert world.pools[("US-East", "Neocloud")].hi.size < 100
    assert world.pools[("US-West", "ISP Regional")].hi.size > 50_000


def test_records_per_day_sums() -> None:
    assert synth.records_per_day(10, 3) == [4, 3, 3]
    assert sum(synth.records_per_day(1_000_003, 184)) == 1_000_003


def test_trend_shapes() -> None:
    def month_mean(t: str, month: int) -> float:
        days = np.arange(
            np.datetime64(f"2025-{month:02d}-01"), np.datetime64(f"2025-{month:02d}-28")
        )
        return float(np.mean([synth.trend(t, d) for d in days]))

    neo = [month_mean("Neocloud", m) for m in range(7, 13)]
    assert int(np.argmax(neo)) == 3  # October
    assert neo[5] > neo[0]  # a higher baseline after the peak
    assert neo[1] > 1.5 * neo[0]  # a sharp rise
    mig = [month_mean("Migration", m) for m in range(7, 13)]
    assert min(mig[1:4]) > 2 * max(mig[0], mig[4], mig[5])  # August to October
    hyper = [month_mean("Hyperscaler", m) for m in range(7, 13)]
    assert min(hyper[3:5]) > 4 * max(hyper[:3])  # quiet summer, heavy October and November
    for t in ("ISP Regional", "ISP Tier1", "CDN", "Hosting"):  # near their norms
        assert max(month_mean(t, m) for m in range(7, 13)) < 1.2, t


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--start"):
        synth.synthesize(tmp_path / "x", records=10, start="July")
    with pytest.raises(ConfigError, match="--days"):
        synth.synthesize(tmp_path / "x", records=10, days=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        synth.synthesize(tmp_path / "full", records=10)
    with pytest.raises(OutputError, match="not a flowatlas synth archive"):
        synth.synthesize(tmp_path / "full", records=10, overwrite=True)
    assert (tmp_path / "full" / "keep.txt").exists()


def world_table(world: synth.World, tmp_path):
    """The world's prefix table as `flowatlas synth` writes it, read back by the classifier."""
    from flowatlas.classify import build_table
    from flowatlas.config import SourceSpec

    path = world.write_prefix_table(tmp_path / "prefixes.csv")
    return build_table([SourceSpec(str(path), "prefix-csv", "world")])


def test_prefix_table_places_every_network(tmp_path) -> None:
    world = synth.build_world(1)
    path = world.write_prefix_table(tmp_path / "prefixes.csv")
    assert path.read_text().splitlines()[0] == "prefix,network_type,asn,org,country,metro"
    rows = world.prefix_table_rows()
    assert [r[:5] for r in rows] == world.prefix_rows()
    assert all(r[4] in ("US", "CA") and r[5] for r in rows)
    for t in ("Neocloud", "Hyperscaler"):
        assert {r[5] for r in rows if r[1] == t} == set(synth.NEOCLOUD_METROS), t
    # CDN caches nested in an ISP's prefix are where that ISP is
    table = world_table(world, tmp_path)
    nets = table.networks.to_pandas()
    assert set(nets["metro"].dropna()) == {r[5] for r in rows}
    canadian = {r[5] for r in rows if r[4] == "CA"}
    assert canadian == set(synth.METRO_COUNTRY)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cloud_volume_is_placed_in_the_seeds_metros_skewed_east(seed, tmp_path) -> None:
    """By expected bytes (each pool address's popularity x its region's baseline), not only by
    count of prefixes; for any seed."""
    world = synth.build_world(seed)
    table = world_table(world, tmp_path)
    metro = np.array([*table.networks.column("metro").to_pylist(), None], dtype=object)
    for t, shares in synth.CLOUD_METRO_SHARE.items():
        load: dict[str, float] = {}
        for ri, region in enumerate(synth.REGIONS):
            pool = world.pools[(region, t)]
            for m, w in zip(metro[table.lookup(pool.hi, pool.lo)], pool.weight, strict=True):
                load[m] = load.get(m, 0.0) + w * synth.BASE_GBPS[t][ri]
        total = sum(load.values())
        assert set(load) == set(synth.NEOCLOUD_METROS)
        east = sum(load[m] for m in synth.EAST_COAST_METROS) / total
        assert east > 0.55, (seed, t, east)
        for m, want in zip(synth.NEOCLOUD_METROS, shares, strict=True):
            assert load[m] / total == pytest.approx(want, abs=0.05), (seed, t, m)


def test_regional_isp_pools_are_near_their_regions_people(tmp_path) -> None:
    world = synth.build_world(1)
    table = world_table(world, tmp_path)
    metro = np.array([*table.networks.column("metro").to_pylist(), None], dtype=object)
    country = np.array([*table.networks.column("country").to_pylist(), None], dtype=object)
    for region, metros in synth.REGION_METROS.items():
        pool = world.pools[(region, "ISP Regional")]
        ids = table.lookup(pool.hi, pool.lo)
        near = np.isin(metro[ids], metros)
        assert near.mean() > 0.8 and pool.weight[near].sum() > 0.8, region
        in_canada = (country[ids] == "CA").mean()
        assert (0.4 < in_canada < 0.95) if region == "CA-East" else in_canada < 0.1, region


def test_world_links_measured_and_sized(tmp_path) -> None:
    """The world's links (transit per region, the US-West IX, US-East neocloud interconnects,
    migration fibre) have capacities; the records carry their interfaces, so the cube
    measures each; their p95 hourly utilisation sits mid-range, the interconnects near the
    80% threshold."""
    from flowatlas.engine.build import build_cube
    from flowatlas.engine.cube import open_cube

    synth.synthesize(tmp_path / "a", records=60_000, days=28, start="2025-10-01", seed=2)
    cfg = load_config(tmp_path / "a" / "flowatlas.toml")
    names = [lk.name for lk in cfg.links]
    assert names == [
        "usw-transit-1", "usw-ix-1", "usw-transit-2", "usw-ix-2", "usw-migration",
        "use-transit-1", "use-neocloud-pni-1", "use-transit-2", "use-neocloud-pni-2",
        "use-migration", "cae-transit", "cae-migration",
    ]  # fmt: skip
    assert all(lk.capacity_gbps and lk.capacity_gbps > 0 for lk in cfg.links)
    assert {lk.network_type for lk in cfg.links} == {None, "Migration"}
    build_cube(tmp_path / "a", tmp_path / "c", workers=0)
    cube = open_cube(tmp_path / "c")
    lc = cube.link_cells()
    per_link = lc.groupby("link")["bytes"].sum()
    assert set(per_link.index) == set(names) and (per_link > 0).all()
    # the unnamed peerings and internal traffic fall to the catch-alls
    assert lc["link"].isna().any()
    hours = pd.date_range("2025-10-01", periods=28 * 24, freq="h", tz="UTC")
    util = {}
    for lk in cfg.links:
        sel = lc[lc["link"] == lk.name]
        side = np.where(sel["direction"] == "egress", "out", "in")
        rates = []
        for d in ("in", "out"):
            s = sel[side == d].groupby("bucket_start")["bytes"].sum()
            gbps = s.reindex(hours, fill_value=0).to_numpy(np.float64) * 8 / 3600 / 1e9
            rates.append(np.sort(gbps)[int(np.ceil(0.95 * gbps.size)) - 1])
        util[lk.name] = max(rates) / lk.capacity_gbps
    tight = [n for n in names if "pni" in n]
    assert all(0.6 <= util[n] <= 0.8 for n in tight), util
    others = [u for n, u in util.items() if n not in tight]
    assert all(0.15 <= u <= 0.55 for u in others), sorted(util.items())
    assert sum(0.3 <= u <= 0.55 for u in others) >= len(others) * 0.7, util


def test_first_of_each_pair_is_numpys_unique():
    """The world's address draws keep the first of each distinct (hi, lo) pair: the same
    positions as np.unique over rows (the oracle), on pairs with many repeats."""
    from flowatlas.synth import _first_of_each

    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 17, 5_000):
        hi = rng.choice(np.array([0, 1, 2**63 + 5], np.uint64), n)
        lo = rng.integers(0, 40, n).astype(np.uint64) << np.uint64(40)
        _, want = np.unique(np.stack([hi, lo], axis=1), axis=0, return_index=True)
        assert np.array_equal(_first_of_each(hi, lo), np.sort(want)), n


def test_compression_changes_the_codec_not_the_records_nor_the_cube(tmp_path) -> None:
    """synth --compression lz4 writes lz4 files holding the default (zstd) archive's records
    and giving a byte-identical cube; the CLI offers exactly the archive's codecs."""
    from click.testing import CliRunner

    from flowatlas.commands import synth as synth_cli
    from flowatlas.engine.build import build_cube
    from flowatlas.io.archive import COMPRESSIONS

    runner = CliRunner()
    for codec in ("zstd", "lz4"):
        argv = ["--records", "4000", "--days", "2", "-q", "--workers", "1"]
        res = runner.invoke(synth_cli, [*argv, "--compression", codec, "-o", str(tmp_path / codec)])
        assert res.exit_code == 0, res.output
        build_cube(tmp_path / codec, tmp_path / f"cube-{codec}", workers=0)
    assert {f.compression for f in open_archive(tmp_path / "lz4").files} == {"lz4"}
    assert {f.compression for f in open_archive(tmp_path / "zstd").files} == {"zstd"}
    # the marker names the layout always, so a cache written in another layout is told apart
    assert '"compression": "lz4"' in (tmp_path / "lz4" / synth.SYNTH_MARKER).read_text()
    assert '"compression": "zstd"' in (tmp_path / "zstd" / synth.SYNTH_MARKER).read_text()
    for z in sorted((tmp_path / "zstd").glob("day=*/*.parquet")):
        lz = tmp_path / "lz4" / z.relative_to(tmp_path / "zstd")
        assert pq.read_table(lz).equals(pq.read_table(z))
    for f in sorted((tmp_path / "cube-zstd").glob("*.parquet")):
        assert f.read_bytes() == (tmp_path / "cube-lz4" / f.name).read_bytes()
    choices = next(p for p in synth_cli.params if p.name == "compression").type.choices
    assert tuple(choices) == COMPRESSIONS
    with pytest.raises(ConfigError, match="compression"):
        synth.synthesize(tmp_path / "x", records=10, days=1, compression="brotli")
