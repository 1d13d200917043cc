"""The prefix table file: opened memory-mapped with its stored lookup index, never rebuilt;
damaged or foreign files are clear errors; version 1 (zip) files still load."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pyarrow as pa
import pytest
from test_lpm import (
    CHAIN_PREFIXES,
    chain_probes,
    compile_prefixes,
    probe_addresses,
    random_prefixes,
    skip_count,
)

from flowatlas.classify import table as table_module
from flowatlas.classify.table import PrefixTable
from flowatlas.errors import InputError
from flowatlas.kernels.lpm import SMALL_V4_INTERVALS, build_index


@pytest.fixture(scope="module", params=[None, 24])
def compiled(request):
    """A small table with the IPv4 root its size asks for (2^16) and with the 2^24 one."""
    rng = np.random.default_rng(21)
    prefixes = random_prefixes(rng, 1500)
    table, asn_of = compile_prefixes(prefixes, request.param)
    hi, lo = probe_addresses(prefixes, rng, 20_000)
    return table, asn_of, hi, lo


def _no_index_build(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the lookup index was built again")

    monkeypatch.setattr(table_module, "build_index", refuse)


def test_loaded_table_is_mapped_and_uses_its_stored_index(compiled, tmp_path, monkeypatch):
    table, _, hi, lo = compiled
    path = table.save(tmp_path / "t.fatable")
    _no_index_build(monkeypatch)
    loaded = PrefixTable.load(path)
    assert loaded.digest == table.digest
    np.testing.assert_array_equal(loaded.lookup(hi, lo), table.lookup(hi, lo))
    want = build_index(table.starts_hi, table.starts_lo, table.values, table.bits6, table.bits4)
    for got_a, want_a in zip(loaded.index.arrays(), want.arrays(), strict=True):
        np.testing.assert_array_equal(got_a, want_a)
    # the arrays lie in the file's mapping (no copy), writable (same kernel types), aligned;
    # the two roots are expanded from their runs into NumPy memory
    ix = loaded.index
    for a in (ix.starts_hi, ix.starts_lo, ix.values, ix.heads, ix.runs):
        assert not a.flags.owndata and a.flags.writeable
    assert ix.idx4.flags.owndata and ix.idx6.flags.owndata
    assert ix.idx4.size == 1 << (table.bits4 or 16)
    assert path.stat().st_size < (4 << 24) // 8  # never a 64 MiB IPv4 root, its runs
    assert loaded.index.heads.ctypes.data % 64 == 0
    assert loaded.networks.equals(table.networks)
    assert loaded.meta["path"] == str(path)
    # computed while the roots expand: the same as computed on first use
    early = PrefixTable.load(path, precompute=True)
    derived = {"_network_type_index", "asn_names", "_user_override", "geography"}
    assert derived <= set(early.__dict__)
    assert early.network_types_used == table.network_types_used
    np.testing.assert_array_equal(early.type_codes(), table.type_codes())
    for got_a, want_a in zip(early.asn_names, table.asn_names, strict=True):
        np.testing.assert_array_equal(got_a, want_a)
    np.testing.assert_array_equal(early.user_override_mask(), table.user_override_mask())
    assert (early.geography is None) == (table.geography is None)
    if table.geography is not None:
        np.testing.assert_array_equal(early.geography[0], table.geography[0])
        assert early.geography[1] == table.geography[1]


def test_saved_bytes_do_not_depend_on_how_the_table_was_opened(compiled, tmp_path):
    table, *_ = compiled
    a = table.save(tmp_path / "a.fatable")
    b = PrefixTable.load(a).save(tmp_path / "b.fatable")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[:8] == table_module.MAGIC


def test_a_mapped_table_pickles_as_its_file_and_falls_back_to_its_arrays(
    compiled, tmp_path, monkeypatch
):
    table, _, hi, lo = compiled
    path = table.save(tmp_path / "t.fatable")
    blob = pickle.dumps(PrefixTable.load(path))
    steps = (table.starts_hi, table.starts_lo, table.values, table.networks, table.meta)
    assert len(blob) < len(pickle.dumps(steps)) + 4096  # no index in the pickle
    _no_index_build(monkeypatch)
    again = pickle.loads(blob)
    assert "index" in again.__dict__  # mapped from the file, with its index
    np.testing.assert_array_equal(again.lookup(hi, lo), table.lookup(hi, lo))
    monkeypatch.undo()
    path.unlink()  # a worker without the file: the pickled arrays, index built on use
    moved = pickle.loads(blob)
    assert "index" not in moved.__dict__
    assert moved.digest == table.digest
    np.testing.assert_array_equal(moved.lookup(hi, lo), table.lookup(hi, lo))


def _version1_bytes(table: PrefixTable) -> bytes:
    """A table file as flowatlas wrote it before format version 2 (a zip archive)."""

    def ipc(t: pa.Table) -> bytes:
        sink = io.BytesIO()
        with pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)
        return sink.getvalue()

    steps = pa.table(
        {
            "start_hi": pa.array(table.starts_hi, pa.uint64()),
            "start_lo": pa.array(table.starts_lo, pa.uint64()),
            "network": pa.array(table.values, pa.int32()),
        }
    )
    meta = dict(table.meta, format="flowatlas-prefix-table", format_version=1)
    meta["digest"] = table.digest
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.json", json.dumps(meta))
        zf.writestr("steps.arrow", ipc(steps))
        zf.writestr("networks.arrow", ipc(table.networks))
    return out.getvalue()


def test_version_1_files_still_load(compiled, tmp_path):
    table, _, hi, lo = compiled
    old = tmp_path / "old.fatable"
    old.write_bytes(_version1_bytes(table))
    loaded = PrefixTable.load(old)
    assert loaded.digest == table.digest
    np.testing.assert_array_equal(loaded.lookup(hi, lo), table.lookup(hi, lo))


#: IPv4 /32s, one per /24 of 10/8: more IPv4 intervals than the small IPv4 root takes
MANY_V4 = [f"10.{i >> 8 & 255}.{i & 255}.1/32" for i in range(SMALL_V4_INTERVALS // 2 + 1)]


def test_version_2_files_load_and_get_their_skips(tmp_path, monkeypatch):
    """A file from before skips (version 2: its index has none) loads with the skips made
    in memory, the file untouched; saved again it is the version 4 file of the same table.
    A table too big for the small IPv4 root: its stored 2^24 root is used, not rebuilt."""
    from flowatlas.kernels import lpm

    rng = np.random.default_rng(22)
    prefixes = sorted(set(random_prefixes(rng, 400)) | set(CHAIN_PREFIXES) | set(MANY_V4))
    table, asn_of = compile_prefixes(prefixes)
    with monkeypatch.context() as m:  # as a flowatlas before skips wrote it
        m.setattr(lpm, "skip_chains", lambda index, min_bits=8: 0)
        m.setattr(table_module, "FORMAT_VERSION", 2)
        old, _ = compile_prefixes(prefixes)
        path = old.save(tmp_path / "v2.fatable")
        assert skip_count(old.index) == 0
    data = path.read_bytes()
    assert int.from_bytes(data[8:12], "little") == 2
    with monkeypatch.context() as m:
        _no_index_build(m)
        loaded = PrefixTable.load(path)
    assert loaded.index.stats()["bits4"] == 24
    assert skip_count(loaded.index) > 0
    want = build_index(table.starts_hi, table.starts_lo, table.values, table.bits6)
    for got_a, want_a in zip(loaded.index.arrays(), want.arrays(), strict=True):
        np.testing.assert_array_equal(got_a, want_a)
    hi, lo = chain_probes(prefixes, rng, 5000)
    np.testing.assert_array_equal(loaded.lookup(hi, lo), table.lookup(hi, lo))
    np.testing.assert_array_equal(
        asn_of[table.lookup(hi, lo)], asn_of[old.lookup(hi, lo)]
    )  # with skips and without: the same answers
    assert path.read_bytes() == data
    again = loaded.save(tmp_path / "again.fatable").read_bytes()
    assert int.from_bytes(again[8:12], "little") == 4
    assert again == table.save(tmp_path / "fresh.fatable").read_bytes()


def _version3_file(table: PrefixTable, path, monkeypatch) -> bytes:
    """``table`` saved as a flowatlas before format version 4 wrote it: the 2^24 IPv4 root
    and no ``shift4`` in the header."""
    old = PrefixTable(table.starts_hi, table.starts_lo, table.values, table.networks, table.meta)
    old.__dict__["index"] = build_index(old.starts_hi, old.starts_lo, old.values, old.bits6, 24)
    real_dumps = json.dumps

    def dumps(obj, **kwargs):
        if isinstance(obj, dict) and "shift4" in obj:
            assert obj["shift4"] == 8
            obj = {k: v for k, v in obj.items() if k != "shift4"}
        return real_dumps(obj, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(table_module, "FORMAT_VERSION", 3)
        m.setattr(table_module.json, "dumps", dumps)
        old.save(path)
    data = path.read_bytes()
    assert int.from_bytes(data[8:12], "little") == 3 and b"shift4" not in data[:4096]
    return data


@pytest.mark.parametrize("big", [False, True])
def test_version_3_files_load_with_the_ipv4_root_their_table_asks_for(big, tmp_path, monkeypatch):
    """A version 3 file stores a 2^24 IPv4 root and no root size: a small table's index is
    built again with the 2^16 root (not the 64 MiB one expanded), a big table's stored root
    is used as it is; both answer as the table does. Saved again: version 4, the same bytes
    as a fresh save."""
    rng = np.random.default_rng(23)
    prefixes = sorted(set(random_prefixes(rng, 300)) | (set(MANY_V4) if big else set()))
    table, _ = compile_prefixes(prefixes)
    path = tmp_path / "v3.fatable"
    data = _version3_file(table, path, monkeypatch)
    with monkeypatch.context() as m:
        if big:
            _no_index_build(m)
        loaded = PrefixTable.load(path)
    assert loaded.index.stats()["bits4"] == (24 if big else 16)
    want = build_index(table.starts_hi, table.starts_lo, table.values, table.bits6)
    for got_a, want_a in zip(loaded.index.arrays(), want.arrays(), strict=True):
        np.testing.assert_array_equal(got_a, want_a)
    hi, lo = probe_addresses(prefixes, rng, 5000)
    np.testing.assert_array_equal(loaded.lookup(hi, lo), table.lookup(hi, lo))
    assert path.read_bytes() == data
    again = loaded.save(tmp_path / "again.fatable").read_bytes()
    assert int.from_bytes(again[8:12], "little") == 4
    assert again == table.save(tmp_path / "fresh.fatable").read_bytes()


def test_an_older_flowatlas_refuses_version_4(compiled, tmp_path, monkeypatch):
    """What a flowatlas that reads versions 2 and 3 says of a version 4 file."""
    table, *_ = compiled
    path = table.save(tmp_path / "new.fatable")
    monkeypatch.setattr(table_module, "_MAPPED_VERSIONS", (2, 3))
    monkeypatch.setattr(table_module, "FORMAT_VERSION", 3)
    with pytest.raises(InputError, match=r"format version 4, .* reads 1 to 3: compile it again"):
        PrefixTable.load(path)


def test_damaged_files_are_clear_errors(compiled, tmp_path):
    table, *_ = compiled
    good = table.save(tmp_path / "good.fatable").read_bytes()
    header_len = int.from_bytes(good[16:24], "little")
    header = json.loads(good[24 : 24 + header_len])
    base = -(-(24 + header_len) // 4096) * 4096
    cases = {
        "empty": (b"", r"empty\.fatable: not a flowatlas prefix table"),
        "text": (b"not a table at all, just text", r"text\.fatable: not a flowatlas prefix"),
        "future": (
            good[:8] + (9).to_bytes(4, "little") + good[12:],
            r"future\.fatable: prefix table format version 9.*flowatlas classify compile",
        ),
        "cut": (good[: len(good) // 2], r"cut\.fatable: prefix table is corrupt"),
        "huge_header": (  # a header length no table has: an error, not an OverflowError
            good[:16] + (2**64 - 1).to_bytes(8, "little") + good[24:],
            r"huge_header\.fatable: not a flowatlas prefix table: a header of 18446744073709551615",
        ),
    }
    for section in header["sections"]:  # one flipped byte in any section is caught
        at = base + section["offset"] + section["nbytes"] // 2
        flipped = good[:at] + bytes([good[at] ^ 0x40]) + good[at + 1 :]
        name = f"flip_{section['name']}"
        cases[name] = (flipped, rf"{name}\.fatable: .*corrupt.*{section['name']}")
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.fatable"
        path.write_bytes(data)
        with pytest.raises(InputError, match=message):
            PrefixTable.load(path)


def test_builds_from_a_table_file_give_the_same_cube(tmp_path):
    """Eager, threads and worker processes (which map the file again) build the same bytes
    from a table file, and the same cells as from the configuration's sources."""
    from flowatlas.classify import load_table
    from flowatlas.config import load_config
    from flowatlas.engine.build import build_cube
    from flowatlas.synth import synthesize

    archive = tmp_path / "archive"
    synthesize(archive, records=20_000, days=10, start="2025-09-15", seed=8)
    path = load_table(load_config(archive / "flowatlas.toml")).save(tmp_path / "w.fatable")
    runs = {
        "sources": {"workers": 0},
        "eager": {"workers": 0, "table": path},
        "threads": {"workers": 2, "table": path},
        "processes": {"workers": 2, "processes": True, "table": path},
    }
    got = {}
    for name, how in runs.items():
        out = tmp_path / name
        build_cube(archive, out, partition_rows=4_000, **how)
        got[name] = {f: (out / f).read_bytes() for f in ("cells.parquet", "rollups.parquet")}
        if name != "sources":
            got[name]["cube.json"] = (out / "cube.json").read_bytes()
    assert got["eager"] == got["threads"] == got["processes"]
    assert got["sources"]["cells.parquet"] == got["eager"]["cells.parquet"]
    assert got["sources"]["rollups.parquet"] == got["eager"]["rollups.parquet"]


@pytest.mark.parametrize("bits", [1, 8, 16])
def test_root_runs_round_trip_against_numpy_repeat(bits):
    """expand_runs (a numba loop) against np.repeat, the oracle, on random runs."""
    from flowatlas.kernels.lpm import expand_runs

    rng = np.random.default_rng(bits)
    size = 1 << bits
    for _ in range(20):
        root = rng.integers(0, 4, size=size).astype(np.uint32)
        root = np.repeat(root, rng.integers(1, 5, size=size))[:size]  # runs of 1 to 4
        starts, entries = table_module._as_runs(root)
        want = np.repeat(entries, np.diff(starts.astype(np.int64), append=size))
        np.testing.assert_array_equal(want, root)
        np.testing.assert_array_equal(expand_runs(starts, entries, size), root)
    for starts in ([1], [0, 0], [0, size]):  # not from 0, not ascending, past the end
        with pytest.raises(ValueError, match="out of order"):
            expand_runs(np.array(starts), np.zeros(len(starts)), size)


def test_vectorised_table_attributes_against_python_loops():
    """Type codes, override mask and the top lists' ASN / organisation names, computed with
    Arrow and NumPy over the whole table, equal the per-network loops they replace."""
    from flowatlas.engine.build import _describers

    rng = np.random.default_rng(4)
    n = 3000
    types = ["Hosting", "CDN", "ISP Tier1", "Neocloud"]
    networks = pa.table(
        {
            "network_type": pa.array([types[i] for i in rng.integers(0, 4, n)]),
            "asn": pa.array(rng.choice([0, 7, 8, 9, 64500, 64501], n), pa.uint32()),
            "org": pa.array([None if r < 0.3 else f"org{r:.1f}" for r in rng.random(n)]),
            "tier": pa.array(rng.choice(["list", "override", "asn", "override-asn", None], n)),
        }
    )
    starts = np.arange(n, dtype=np.uint64) << np.uint64(40)
    table = PrefixTable(np.zeros(n, np.uint64), starts, np.arange(n, dtype=np.int32), networks)
    vocab = ("Unknown", "CDN", "Hosting", "Hyperscaler", "ISP Tier1", "Neocloud")
    names = networks.column("network_type").to_pylist()
    want = [vocab.index(t) for t in names] + [0]
    np.testing.assert_array_equal(table.type_codes(vocab), want)
    assert table.network_types_used == list(dict.fromkeys(names))
    with pytest.raises(InputError, match="not configured: Neocloud"):
        table.type_codes(vocab[:-1])
    tiers = networks.column("tier").to_pylist()
    want_mask = [t in ("override", "override-asn") for t in tiers] + [False]
    np.testing.assert_array_equal(table.user_override_mask(), want_mask)

    describe_asn, describe_ip = _describers(table)
    first_org: dict[int, str] = {}
    for a, o in zip(networks.column("asn").to_pylist(), networks.column("org").to_pylist(),
                    strict=True):  # fmt: skip
        if a and o is not None:
            first_org.setdefault(a, o)
    asks = np.array([0, 7, 8, 9, 64500, 64501, 12345], np.uint32)
    assert describe_asn(asks).tolist() == [first_org.get(int(a)) for a in asks]
    ids = rng.integers(0, n, 500)
    hi = np.zeros(ids.size, np.uint64)
    lo = starts[ids] + np.uint64(5)
    hi = np.append(hi, np.uint64(1) << np.uint64(63))  # past every start: the last network
    lo = np.append(lo, np.uint64(0))
    ids = np.append(ids, n - 1)
    asns, orgs = describe_ip(hi, lo)
    np.testing.assert_array_equal(asns, networks.column("asn").to_numpy()[ids])
    assert orgs.tolist() == [networks.column("org")[int(i)].as_py() for i in ids]
    empty = PrefixTable(np.zeros(1, np.uint64), np.zeros(1, np.uint64), np.array([-1], np.int32),
                        networks.slice(0, 0))  # fmt: skip
    e_asn, e_ip = _describers(empty)
    assert e_asn(asks).tolist() == [None] * asks.size
    assert e_ip(hi[:3], lo[:3])[1].tolist() == [None] * 3
    np.testing.assert_array_equal(empty.type_codes(vocab), [0])


@pytest.mark.parametrize(
    "case", ["random", "few", "all-equal", "one", "empty", "sorted", "reversed"]
)
def test_first_of_each_against_a_loop(case):
    """``first_of_each`` (unstable argsort, least position per run) equals the obvious loop:
    each distinct value, ascending, with the index of its first occurrence."""
    from flowatlas.classify.table import first_of_each

    rng = np.random.default_rng(len(case))
    values = {
        "random": rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32),
        "few": rng.integers(0, 7, 20_000).astype(np.uint32),  # long runs: unstable order shows
        "all-equal": np.full(3000, 64500, np.uint32),
        "one": np.array([9], np.uint32),
        "empty": np.zeros(0, np.uint32),
        "sorted": np.repeat(np.arange(50, dtype=np.uint32), 40),
        "reversed": np.repeat(np.arange(50, dtype=np.uint32), 40)[::-1].copy(),
    }[case]
    first: dict[int, int] = {}
    for i, v in enumerate(values.tolist()):
        first.setdefault(v, i)
    uniq, where = first_of_each(values)
    assert uniq.dtype == values.dtype
    assert uniq.tolist() == sorted(first)
    assert where.tolist() == [first[v] for v in sorted(first)]


def test_a_table_opened_while_the_build_starts_reports_like_one_opened_after(tmp_path):
    """build_cube starts opening a table file before it reads the configuration: a damaged
    or missing table is still the same clear error, and a broken configuration is still
    reported first (as when the table was opened after it)."""
    from flowatlas.engine.build import build_cube
    from flowatlas.errors import ConfigError
    from flowatlas.synth import synthesize

    archive = tmp_path / "archive"
    synthesize(archive, records=2_000, days=2, seed=3)
    bad = tmp_path / "bad.fatable"
    bad.write_bytes(b"not a table")
    with pytest.raises(InputError, match=r"bad\.fatable: not a flowatlas prefix table"):
        build_cube(archive, tmp_path / "c1", table=bad, workers=0)
    with pytest.raises(InputError, match=r"gone\.fatable: prefix table not found"):
        build_cube(archive, tmp_path / "c2", table=tmp_path / "gone.fatable", workers=0)
    config = tmp_path / "broken.toml"
    config.write_text('[cube]\nbucket = "7 minutes"\n')
    with pytest.raises(ConfigError):
        build_cube(archive, tmp_path / "c3", table=bad, config=config, workers=0)
    assert not any((tmp_path / c).exists() for c in ("c1", "c2", "c3"))
