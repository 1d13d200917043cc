"""Archive and cube integrity: page checksums, the manifest's file hashes, ``flowatlas verify``.

Before (issue 13) one flipped byte in an archive file's address or bytes column built a
wrong cube with exit status 0 in 9 of 25 tries, a build ignored imports that never finished,
and a cube.json missing a key ended in a KeyError. Now a build gives the right cube or one
line naming the damaged file, and ``verify`` finds every such problem.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flowatlas.cli import main
from flowatlas.engine.build import build_cube
from flowatlas.errors import InputError
from flowatlas.io.commands import import_sources
from flowatlas.io.manifest import Manifest, output_name
from flowatlas.io.verify import verify_path

HEADER = "time_start,time_end,src_addr,dst_addr,src_port,dst_port,proto,bytes,packets\n"


def write_csv(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(1, 250, n), rng.integers(1, 250, n)
    size, pkts = rng.integers(40, 1500, n), rng.integers(1, 9, n)
    lines = [
        f"2024-03-0{1 + i % 2}T{i % 24:02d}:{i % 60:02d}:00Z,2024-03-0{1 + i % 2}T{i % 24:02d}:"
        f"{i % 60:02d}:30Z,10.{seed}.{a[i]}.{b[i]},{b[i]}.{a[i]}.7.1,{1000 + i % 999},443,6,"
        f"{size[i] * pkts[i]},{pkts[i]}\n"
        for i in range(n)
    ]
    path.write_text(HEADER + "".join(lines))
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("integrity")
    sources = [write_csv(d / f"s{k}.csv", 3_000, k) for k in range(3)]
    out = d / "archive"
    s = import_sources(sources, out, progress=False)
    assert len(s.imported) == 3
    return out


@pytest.fixture(scope="module")
def reference(imported, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "cube"
    build_cube(imported, out, workers=0)
    return cube_bytes(out)


def cube_bytes(path: Path) -> dict[str, bytes]:
    return {n: (path / n).read_bytes() for n in ("cells.parquet", "rollups.parquet")}


def data_files(archive: Path) -> list[Path]:
    return sorted(p for p in archive.glob("day=*/*.parquet"))


def column_span(path: Path, name: str) -> tuple[int, int]:
    meta = pq.ParquetFile(path).metadata
    rg = meta.row_group(0)
    for i in range(rg.num_columns):
        col = rg.column(i)
        if col.path_in_schema == name:
            start = col.dictionary_page_offset or col.data_page_offset
            return start, start + col.total_compressed_size
    raise KeyError(name)


def flip(path: Path, at: int, bit: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 1 << bit
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------------- bit rot


def test_flipped_byte_in_a_column_is_named(imported, tmp_path, capsys):
    copy = tmp_path / "archive"
    shutil.copytree(imported, copy)
    victim = data_files(copy)[0]
    _, hi = column_span(victim, "bytes")
    flip(victim, hi - 10)  # inside the page data, past its header
    assert main(["build", str(copy), "--out", str(tmp_path / "cube"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{victim}: row group 0, column bytes: page checksum mismatch" in err
    assert not (tmp_path / "cube").exists()
    assert main(["verify", str(copy)]) == 2
    out, err = capsys.readouterr()
    assert f"{victim}: row group 0, column bytes: page checksum mismatch" in out
    assert "content differs from the import manifest" in out  # the file hash says so too
    assert err.startswith("flowatlas: error: ") and "2 problem(s)" in err


@pytest.mark.parametrize("column", ["src_addr", "dst_addr", "bytes", "packets"])
def test_bit_rot_never_gives_a_wrong_cube(imported, reference, tmp_path, column):
    """Random single-bit flips in a column: the build fails naming the file, or is exact."""
    rng = np.random.default_rng(sum(column.encode()))
    copy = tmp_path / "archive"
    shutil.copytree(imported, copy)
    victim = data_files(copy)[1]
    pristine = victim.read_bytes()
    lo, hi = column_span(victim, column)
    outcomes = []
    for k in range(4):
        victim.write_bytes(pristine)
        flip(victim, int(rng.integers(lo, hi)), int(rng.integers(0, 8)))
        out = tmp_path / f"cube{k}"
        try:
            build_cube(copy, out, workers=0)
        except InputError as exc:
            assert str(victim) in str(exc)
            outcomes.append("refused")
            continue
        assert cube_bytes(out) == reference, f"flip {k} built a wrong cube"
        outcomes.append("exact")
    assert "refused" in outcomes


# --------------------------------------------------------------------------- the manifest


def test_build_refuses_an_unfinished_import(imported, tmp_path, capsys):
    copy = tmp_path / "archive"
    shutil.copytree(imported, copy)
    m = Manifest.open(copy)
    e = next(iter(m.entries.values()))
    m.forget(e.sha256)  # as if killed before it finished: pending, its files half there
    m.begin(e.sha256, output_name(e.format, e.sha256), e.path)
    m.save()
    assert main(["build", str(copy), "--out", str(tmp_path / "cube"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"cannot build from {copy}: {e.path}: its import did not finish" in err
    assert main(["verify", str(copy)]) == 2
    assert "its import did not finish" in capsys.readouterr().out
    # importing again finishes it, and then the build is exact
    s = import_sources([e.path], copy, progress=False)
    assert s.recovered == [e.path]
    assert main(["build", str(copy), "--out", str(tmp_path / "cube"), "-q"]) == 0


def test_build_refuses_changed_missing_and_stray_files(imported, tmp_path, capsys):
    copy = tmp_path / "archive"
    shutil.copytree(imported, copy)
    files = data_files(copy)
    # changed: another file's bytes under this one's name
    shutil.copy(files[1], files[0])
    assert main(["build", str(copy), "--out", str(tmp_path / "c"), "-q"]) == 2
    assert f"{files[0]}: changed since it was imported" in capsys.readouterr().err
    # missing
    files[0].unlink()
    assert main(["build", str(copy), "--out", str(tmp_path / "c"), "-q"]) == 2
    assert f"{files[0]}: in the import manifest but missing" in capsys.readouterr().err
    # stray: an import's file the manifest does not list (a worker that outlived its import)
    shutil.rmtree(copy)
    shutil.copytree(imported, copy)
    m = Manifest.open(copy)
    e = next(iter(m.entries.values()))
    m.entries.pop(e.sha256)
    m.save()
    assert main(["build", str(copy), "--out", str(tmp_path / "c"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "written by an import but not in the import manifest" in err
    assert "more: flowatlas verify" in err  # the import wrote two days: two stray files


def test_manifest_records_every_output(imported):
    m = Manifest.open(imported)
    for e in m.entries.values():
        assert set(e.outputs) <= set(e.output_files)
        for rel, info in e.output_files.items():
            data = (imported / rel).read_bytes()
            assert info["size"] == len(data)
            import hashlib

            assert info["sha256"] == hashlib.sha256(data).hexdigest()


def test_verify_a_clean_archive_and_cube(imported, tmp_path, capsys):
    assert main(["verify", str(imported)]) == 0
    out = capsys.readouterr().out
    assert "OK (archive: 6 files, 9,000 rows" in out
    assert "every file against the import manifest" in out
    build_cube(imported, tmp_path / "cube", workers=0)
    assert main(["verify", str(tmp_path / "cube")]) == 0
    assert "every file against cube.json" in capsys.readouterr().out
    v = verify_path(tmp_path / "cube")
    assert v.ok and v.kind == "cube" and v.files == 5


# --------------------------------------------------------------------------- cubes


def test_damaged_cube_file_is_named(imported, tmp_path, capsys):
    cube = tmp_path / "cube"
    build_cube(imported, cube, workers=0)
    _, hi = column_span(cube / "cells.parquet", "bytes")
    flip(cube / "cells.parquet", hi - 3)
    assert main(["report", str(cube), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{cube / 'cells.parquet'}: row group 0, column bytes: page checksum mismatch" in err
    assert main(["verify", str(cube)]) == 2
    out = capsys.readouterr().out
    assert "cells.parquet: row group 0, column bytes: page checksum mismatch" in out


@pytest.mark.parametrize(
    ("drop", "key"),
    [
        (("dimensions",), "dimensions"),
        (("dimensions", "region"), "dimensions.region"),
        (("rollups",), "rollups"),
        (("groupings",), "groupings"),
    ],
)
def test_cube_json_missing_a_key_is_one_line(imported, tmp_path, capsys, drop, key):
    cube = tmp_path / "cube"
    build_cube(imported, cube, workers=0)
    meta = json.loads((cube / "cube.json").read_text())
    holder = meta
    for part in drop[:-1]:
        holder = holder[part]
    del holder[drop[-1]]
    (cube / "cube.json").write_text(json.dumps(meta))
    assert main(["report", str(cube), "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"flowatlas: error: {cube / 'cube.json'}: missing key {key!r}; the cube is " \
        "damaged: rebuild it\n"  # fmt: skip
    assert main(["verify", str(cube), "-q"]) == 2
    assert f"missing key {key!r}" in capsys.readouterr().out


def test_cube_json_wrong_type_is_one_line(imported, tmp_path, capsys):
    cube = tmp_path / "cube"
    build_cube(imported, cube, workers=0)
    meta = json.loads((cube / "cube.json").read_text())
    meta["rollups"] = "all"
    (cube / "cube.json").write_text(json.dumps(meta))
    assert main(["report", str(cube), "-q"]) == 2
    assert "key 'rollups' is not a list of str" in capsys.readouterr().err
