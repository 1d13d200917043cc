"""``flowatlas rewrite``: an archive's files re-encoded in place, the same rows, the same cubes.

Every file is rewritten or left as it was, never half; the import manifest, ``verify`` and a
later import still agree with the files; damaged files and full disks are one clear line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_integrity as integrity

import flowatlas.io.rewrite as rw
from flowatlas.cli import main
from flowatlas.engine.build import build_cube
from flowatlas.errors import OutputError
from flowatlas.io import archive as archive_mod
from flowatlas.io.archive import ArchiveWriter, open_archive, read_parquet
from flowatlas.io.commands import import_sources
from flowatlas.io.manifest import Manifest
from flowatlas.io.verify import verify_archive
from flowatlas.schema import COUNTS_RAW
from flowatlas.synth import SYNTH_MARKER, synthesize


@pytest.fixture(scope="module")
def synth_archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rewrite") / "archive"
    # the layout of an archive written before "auto" became the default
    synthesize(root, records=30_000, days=6, start="2025-09-01", seed=7, workers=1,
               compression="zstd")  # fmt: skip
    return root


@pytest.fixture(scope="module")
def multi_archive(synth_archive, tmp_path_factory) -> Path:
    """Files of several row groups each, with extra columns (one with nulls, one text)."""
    root = tmp_path_factory.mktemp("rewrite-multi") / "archive"
    table = open_archive(synth_archive)
    parts = [read_parquet(f.path) for f in table.files]
    rng = np.random.default_rng(3)
    with ArchiveWriter(root, counts=COUNTS_RAW, row_group_size=1_700, compression="zstd") as w:
        for t in parts:
            n = t.num_rows
            tos = pa.array(rng.integers(0, 255, n), pa.uint8())
            note = pa.array([None if i % 7 == 0 else f"n{i % 13}" for i in range(n)], pa.string())
            w.write(t.append_column("tos", tos).append_column("note", note))
    shutil.copy(synth_archive / "flowatlas.toml", root / "flowatlas.toml")
    shutil.copy(synth_archive / "prefixes.csv", root / "prefixes.csv")
    return root


def data_files(root: Path) -> list[Path]:
    return sorted(root.glob("day=*/*.parquet"))


def codecs(path: Path) -> set[str]:
    meta = pq.ParquetFile(path).metadata
    return {
        meta.row_group(i).column(c).compression
        for i in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    }


def file_state(root: Path) -> dict[str, tuple[int, list[int], pa.Table]]:
    """Each file's rows per row group, key-value metadata size and content."""
    out = {}
    for p in data_files(root):
        pf = pq.ParquetFile(p)
        rgs = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        out[p.relative_to(root).as_posix()] = (pf.schema_arrow, rgs, pf.read())
    return out


def same_files(a: Path, b: Path) -> None:
    sa, sb = file_state(a), file_state(b)
    assert sa.keys() == sb.keys()
    for rel in sa:
        (schema_a, rg_a, t_a), (schema_b, rg_b, t_b) = sa[rel], sb[rel]
        assert schema_a.equals(schema_b, check_metadata=True), rel
        assert rg_a == rg_b, rel
        assert t_a.equals(t_b), rel


def cube_digest(path: Path) -> dict[str, str]:
    """sha256 of every cube file; cube.json without its record of the archive's files
    (their sizes and footers are what a rewrite changes)."""
    out = {}
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name == "cube.json":
            meta = json.loads(data)
            archive = meta.pop("archive")
            meta["archive_rows"] = archive["rows"]
            meta["archive_paths"] = [f["path"] for f in archive["files"]]
            data = json.dumps(meta, sort_keys=True).encode()
        out[p.relative_to(path).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def copy(src: Path, tmp_path: Path, name: str = "archive") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def no_temporaries(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith(rw.TMP_SUFFIX)]


# --------------------------------------------------------------------------- the rows


@pytest.mark.parametrize("workers", [0, None], ids=["eager", "threads"])
def test_lz4_archive_builds_the_same_cube(synth_archive, tmp_path, workers):
    arch = copy(synth_archive, tmp_path)
    build_cube(arch, tmp_path / "before", workers=workers)  # the same paths in both cubes
    s = rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    assert len(s.rewritten) == len(data_files(arch)) == 6 and not s.failed and not s.skipped
    assert s.rows == 30_000 and s.bytes_after > s.bytes_before
    assert all(codecs(p) == {"LZ4"} for p in data_files(arch))
    same_files(synth_archive, arch)
    no_temporaries(arch)
    build_cube(arch, tmp_path / "after", workers=workers)
    assert cube_digest(tmp_path / "before") == cube_digest(tmp_path / "after")


def test_row_groups_extra_columns_and_metadata_kept(multi_archive, tmp_path):
    arch = copy(multi_archive, tmp_path)
    before = {p: pq.ParquetFile(p).metadata.metadata for p in data_files(arch)}
    assert all(pq.ParquetFile(p).num_row_groups > 1 for p in before)
    s = rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    assert len(s.rewritten) == len(before) and not s.failed
    same_files(multi_archive, arch)
    for p, kv in before.items():
        assert pq.ParquetFile(p).metadata.metadata == kv
    assert verify_archive(arch).ok
    again = rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    assert not again.rewritten and len(again.skipped) == len(before)


def test_processes_write_the_same_bytes(multi_archive, tmp_path):
    one = copy(multi_archive, tmp_path, "one")
    two = copy(multi_archive, tmp_path, "two")
    rw.rewrite_archive(one, compression="lz4", jobs=1, progress=False)
    s = rw.rewrite_archive(two, compression="lz4", jobs=2, progress=False)
    assert len(s.rewritten) == len(data_files(two)) and not s.failed
    for a, b in zip(data_files(one), data_files(two), strict=True):
        assert a.read_bytes() == b.read_bytes()
    no_temporaries(two)


def test_second_run_does_nothing(synth_archive, tmp_path):
    arch = copy(synth_archive, tmp_path)
    first = rw.rewrite_archive(arch, compression="lz4", progress=False)
    assert len(first.rewritten) == 6
    inodes = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in data_files(arch)}
    again = rw.rewrite_archive(arch, compression="lz4", progress=False)
    assert not again.rewritten and len(again.skipped) == 6 and not again.failed
    assert inodes == {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in data_files(arch)}
    # the archive's own codec: nothing to do either
    z = rw.rewrite_archive(copy(synth_archive, tmp_path, "z"), compression="zstd")
    assert not z.rewritten and len(z.skipped) == 6


def test_a_layout_of_encodings_is_recognised_once_written(synth_archive, tmp_path, monkeypatch):
    """Per-column codecs and encodings (what a layout like "auto" sets): files written with
    them are taken as done, so a second run does nothing."""

    def layout(compression: str, page_checksums: bool = True) -> dict:
        return {
            "compression": {n: ("lz4" if "addr" in n else "zstd") for n in COLUMNS},
            "write_statistics": True,
            "use_dictionary": ["proto", "sampling_rate", "in_if", "out_if"],
            "column_encoding": {
                "time_start": "DELTA_BINARY_PACKED",
                "bytes": "DELTA_BINARY_PACKED",
            },
            "write_page_checksum": page_checksums,
        }

    COLUMNS = pq.ParquetFile(data_files(synth_archive)[0]).schema_arrow.names
    monkeypatch.setattr(rw, "writer_options", layout)
    arch = copy(synth_archive, tmp_path)
    s = rw.rewrite_archive(arch, compression="zstd", progress=False)
    assert len(s.rewritten) == 6
    meta = pq.ParquetFile(data_files(arch)[0]).metadata.row_group(0)
    by_name = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert "DELTA_BINARY_PACKED" in by_name["bytes"].encodings
    assert by_name["src_addr"].compression == "LZ4"
    same_files(synth_archive, arch)
    again = rw.rewrite_archive(arch, compression="zstd", progress=False)
    assert not again.rewritten and len(again.skipped) == 6


def test_digest_sees_values_not_chunks():
    a = pa.table({"x": pa.array(np.arange(100, dtype=np.uint64)), "s": ["a", None] * 50})
    chunked = pa.concat_tables([a.slice(0, 37), a.slice(37)])
    assert rw._digest(a) == rw._digest(chunked) == rw._digest(a.combine_chunks())
    assert rw._digest(a.slice(10, 20)) == rw._digest(
        pa.concat_tables([a.slice(10, 5), a.slice(15, 15)])
    )
    changed = a.set_column(
        0, "x", pa.array(np.arange(100, dtype=np.uint64) ^ (np.arange(100) == 99))
    )
    assert rw._digest(changed)[0] != rw._digest(a)[0] and rw._digest(changed)[1] == rw._digest(a)[1]
    other = a.set_column(1, "s", pa.array(["a", "b"] * 50))
    assert rw._digest(other)[1] != rw._digest(a)[1]


def test_a_copy_that_differs_is_not_put_in_place(synth_archive, tmp_path, monkeypatch):
    """The read-back check: a writer that changes one value leaves every file as it was."""
    arch = copy(synth_archive, tmp_path)
    pristine = {p: p.read_bytes() for p in data_files(arch)}
    real = pq.ParquetWriter

    class Tampering(real):
        def write_table(self, table, *args, **kw):
            col = table.column("bytes").to_numpy().copy()
            col[len(col) // 2] += 1
            table = table.set_column(
                table.schema.get_field_index("bytes"),
                table.schema.field("bytes"),
                pa.array(col, pa.uint64()),
            )
            super().write_table(table, *args, **kw)

    monkeypatch.setattr(rw.pq, "ParquetWriter", Tampering)
    with pytest.raises(OutputError, match=r"rewritten copy differs \(row group 0, column bytes\)"):
        rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    assert {p: p.read_bytes() for p in data_files(arch)} == pristine
    no_temporaries(arch)


# --------------------------------------------------------------------------- interruptions


def test_interrupted_rewrite_leaves_whole_files_and_resumes(multi_archive, tmp_path, monkeypatch):
    arch = copy(multi_archive, tmp_path)
    real = rw._replace
    done: list[str] = []

    def replace(tmp: str, final: str) -> None:
        if len(done) == 3:
            raise KeyboardInterrupt  # killed after three files
        real(tmp, final)
        done.append(final)

    monkeypatch.setattr(rw, "_replace", replace)
    with pytest.raises(KeyboardInterrupt):
        rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    no_temporaries(arch)
    kinds = [codecs(p) for p in data_files(arch)]
    assert kinds.count({"LZ4"}) == 3 and kinds.count({"ZSTD"}) == len(kinds) - 3
    same_files(multi_archive, arch)  # every file whole, old or new
    monkeypatch.setattr(rw, "_replace", real)
    s = rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    assert len(s.rewritten) == len(kinds) - 3 and len(s.skipped) == 3
    assert all(codecs(p) == {"LZ4"} for p in data_files(arch))
    same_files(multi_archive, arch)


def test_leftover_temporary_files_are_removed(synth_archive, tmp_path):
    arch = copy(synth_archive, tmp_path)
    victim = data_files(arch)[0]
    stale = victim.with_name(f".{victim.name}{rw.TMP_SUFFIX}")
    stale.write_bytes(b"half a file")  # a rewrite killed mid-file
    rw.rewrite_archive(arch, compression="lz4", progress=False)
    assert not stale.exists()


# --------------------------------------------------------------------------- errors


def flip_in_column(path: Path, name: str) -> None:
    meta = pq.ParquetFile(path).metadata.row_group(0)
    col = next(
        meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == name
    )
    start = col.dictionary_page_offset or col.data_page_offset
    raw = bytearray(path.read_bytes())
    raw[start + col.total_compressed_size - 10] ^= 1
    path.write_bytes(bytes(raw))


def test_damaged_file_is_named_left_alone_and_the_others_rewritten(synth_archive, tmp_path, capsys):
    arch = copy(synth_archive, tmp_path)
    victim = data_files(arch)[2]
    flip_in_column(victim, "packets")
    damaged = victim.read_bytes()
    assert main(["rewrite", str(arch), "--compression", "lz4", "-j", "1"]) == 2
    out, err = capsys.readouterr()
    assert f"{victim}: row group 0, column packets: page checksum mismatch" in err
    assert err.startswith("flowatlas: error: 1 of 6 files failed; first: ")
    assert "rewritten 5 files" in out and "failed 1" in out
    assert victim.read_bytes() == damaged
    assert [codecs(p) for p in data_files(arch)].count({"LZ4"}) == 5
    no_temporaries(arch)


def test_full_disk_stops_and_keeps_the_old_file(synth_archive, tmp_path, monkeypatch):
    arch = copy(synth_archive, tmp_path)
    pristine = {p: p.read_bytes() for p in data_files(arch)}
    real = pq.ParquetWriter

    class Full(real):
        def write_table(self, *args, **kw):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rw.pq, "ParquetWriter", Full)
    with pytest.raises(
        OutputError, match=r"rewrite stopped: .*cannot write: No space left on device"
    ):
        rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    assert {p: p.read_bytes() for p in data_files(arch)} == pristine
    no_temporaries(arch)


def test_unwritable_directory_is_an_output_error(synth_archive, tmp_path, monkeypatch):
    arch = copy(synth_archive, tmp_path)
    victim = data_files(arch)[0]
    pristine = victim.read_bytes()
    if os.geteuid() == 0:  # root writes into read-only directories: refuse as the system would
        real = pq.ParquetWriter

        class Refused(real):
            def __init__(self, where, *args, **kw):
                if isinstance(where, Path | str) and Path(where).parent == victim.parent:
                    raise PermissionError(errno.EACCES, "Permission denied")
                super().__init__(where, *args, **kw)

        monkeypatch.setattr(rw.pq, "ParquetWriter", Refused)
    victim.parent.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=f"{victim.parent}/.*Permission denied"):
            rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    finally:
        victim.parent.chmod(0o755)
    assert victim.read_bytes() == pristine
    no_temporaries(arch)


def test_links(synth_archive, tmp_path):
    """A symbolic link is left as it is (nothing outside the archive is written); a file with
    another hard link becomes a new file, the other name keeps the old content."""
    arch = copy(synth_archive, tmp_path)
    outside = tmp_path / "outside.parquet"
    files = data_files(arch)
    shutil.move(files[0], outside)
    files[0].symlink_to(outside)
    kept = outside.read_bytes()
    other = tmp_path / "other-name.parquet"
    os.link(files[1], other)
    old = other.read_bytes()
    s = rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    assert s.links == [str(files[0])] and len(s.rewritten) == 5
    assert outside.read_bytes() == kept and files[0].is_symlink()
    assert other.read_bytes() == old and files[1].stat().st_ino != other.stat().st_ino
    assert codecs(files[1]) == {"LZ4"}
    assert "symbolic links left as they are 1" in s.render()


def test_not_an_archive(tmp_path, synth_archive, capsys):
    assert main(["rewrite", str(tmp_path / "nowhere")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    cube = tmp_path / "cube"
    build_cube(synth_archive, cube, workers=0)
    assert main(["rewrite", str(cube)]) == 2
    assert "is a flowatlas cube, not an archive" in capsys.readouterr().err
    assert main(["rewrite", str(synth_archive), "--compression", "brotli"]) == 2


# --------------------------------------------------------------------------- beside the files


def write_csv(path: Path, n: int, seed: int) -> Path:
    """test_integrity's CSV source, and a line that is no record (quarantined)."""
    integrity.write_csv(path, n, seed)
    with open(path, "a") as fh:
        fh.write("not,a,row\n")
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, list[Path]]:
    d = tmp_path_factory.mktemp("rewrite-import")
    sources = [write_csv(d / f"s{k}.csv", 2_000, k) for k in range(4)]
    out = d / "archive"
    s = import_sources(sources[:3], out, progress=False, compression="zstd")  # an older layout
    assert len(s.imported) == 3
    return out, sources


def test_imported_archive_verifies_and_imports_after(imported, tmp_path, capsys):
    src, sources = imported
    arch = copy(src, tmp_path)
    quarantine = sorted((arch / "_import" / "quarantine").glob("*.parquet"))
    q_before = [p.read_bytes() for p in quarantine]
    assert main(["rewrite", str(arch), "--compression", "lz4"]) == 0
    assert "rewritten 6 files (6,000 records)" in capsys.readouterr().out
    assert [p.read_bytes() for p in quarantine] == q_before  # not archive data: kept as is
    assert main(["verify", str(arch)]) == 0
    assert "every file against the import manifest" in capsys.readouterr().out
    m = json.loads((arch / "_import" / "manifest.json").read_text())
    assert "rewriting" not in m
    for e in m["files"]:
        for rel, info in e["output_files"].items():
            if rel.startswith("day="):
                assert info["sha256"] == hashlib.sha256((arch / rel).read_bytes()).hexdigest()
    s = import_sources(sources, arch, progress=False)
    assert len(s.skipped_known) == 3 and len(s.imported) == 1 and not s.failed
    assert verify_archive(arch).ok
    build_cube(arch, tmp_path / "cube", workers=0)
    again = rw.rewrite_archive(arch, compression="lz4", progress=False)
    assert len(again.rewritten) == 2 and len(again.skipped) == 6  # the new source's days


@pytest.mark.parametrize("stop", ["before rename", "after rename"])
def test_interrupted_rewrite_of_an_imported_archive(imported, tmp_path, monkeypatch, stop):
    """Killed between the manifest's two saves: the files are old or new, each one what the
    manifest accepts (builds and verify go on), and the next rewrite settles the record."""
    src, _ = imported
    arch = copy(src, tmp_path)
    real_replace, real_save = rw._replace, Manifest.save
    saves: list[int] = []

    def replace(tmp: str, final: str) -> None:
        if stop == "before rename":
            raise KeyboardInterrupt
        real_replace(tmp, final)

    def save(self) -> None:
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt  # the save after the renames
        real_save(self)

    monkeypatch.setattr(rw, "_replace", replace)
    monkeypatch.setattr(Manifest, "save", save)
    with pytest.raises(KeyboardInterrupt):
        rw.rewrite_archive(arch, compression="lz4", jobs=1, progress=False)
    monkeypatch.setattr(Manifest, "save", real_save)
    monkeypatch.setattr(rw, "_replace", real_replace)
    no_temporaries(arch)
    assert Manifest.open(arch).rewriting  # the marks of the files being replaced
    want = {"LZ4"} if stop == "after rename" else {"ZSTD"}
    assert all(codecs(p) == want for p in data_files(arch))
    assert verify_archive(arch).ok
    build_cube(arch, tmp_path / "cube", workers=0)
    s = rw.rewrite_archive(arch, compression="lz4", progress=False)
    assert len(s.rewritten) == (0 if stop == "after rename" else 6)
    assert not Manifest.open(arch).rewriting
    assert verify_archive(arch).ok


def test_refuses_an_archive_the_manifest_disowns(imported, tmp_path, capsys):
    src, _ = imported
    arch = copy(src, tmp_path)
    files = data_files(arch)
    shutil.copy(files[1], files[0])  # another file's bytes under this one's name
    assert main(["rewrite", str(arch)]) == 2
    err = capsys.readouterr().err
    assert f"cannot rewrite {arch}: {files[0]}: changed since it was imported" in err


def test_synth_marker_names_the_codec(synth_archive, tmp_path):
    assert SYNTH_MARKER == rw.SYNTH_MARKER
    arch = copy(synth_archive, tmp_path)
    original = json.loads((synth_archive / SYNTH_MARKER).read_text())
    assert original["compression"] == "zstd"

    def marker() -> dict:
        return json.loads((arch / SYNTH_MARKER).read_text())

    rw.rewrite_archive(arch, compression="lz4", progress=False)
    assert marker() == {**original, "compression": "lz4"}
    rw.rewrite_archive(arch, compression=archive_mod.DEFAULT_COMPRESSION, progress=False)
    assert marker() == {**original, "compression": archive_mod.DEFAULT_COMPRESSION}
    rw.rewrite_archive(arch, compression="zstd", progress=False)
    assert marker() == original  # what flowatlas synth wrote for a zstd archive


def test_default_layout_rewrite_then_nothing_to_do(synth_archive, tmp_path):
    """An older archive rewritten in the default layout: every file in it, footers as new
    archives have them, and a second run finds nothing to do."""
    from flowatlas.io.archive import file_layout

    arch = copy(synth_archive, tmp_path)
    first = rw.rewrite_archive(arch, progress=False)
    assert len(first.rewritten) == 6 and not first.failed
    layouts = {file_layout(pq.ParquetFile(p).metadata) for p in data_files(arch)}
    assert layouts == {archive_mod.DEFAULT_COMPRESSION}
    again = rw.rewrite_archive(arch, progress=False)
    assert not again.rewritten and len(again.skipped) == 6


def test_default_is_the_archive_default(synth_archive, tmp_path, monkeypatch, capsys):
    arch = copy(synth_archive, tmp_path)
    monkeypatch.setattr(archive_mod, "DEFAULT_COMPRESSION", "lz4")
    s = rw.rewrite_archive(arch, progress=False)
    assert s.compression == "lz4" and len(s.rewritten) == 6


def test_one_writer_at_a_time(synth_archive, tmp_path):
    from flowatlas.io.manifest import archive_lock

    arch = copy(synth_archive, tmp_path)
    with archive_lock(arch), pytest.raises(OutputError, match="import \\(or rewrite\\) is writing"):
        rw.rewrite_archive(arch, compression="lz4", progress=False)
    assert all(codecs(p) == {"ZSTD"} for p in data_files(arch))


def test_summary_line(synth_archive, tmp_path, capsys):
    arch = copy(synth_archive, tmp_path)
    assert main(["rewrite", str(arch), "--compression", "lz4", "-j", "1"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f"flowatlas rewrite -> {arch} (lz4): rewritten 6 files (30,000 records)")
    assert "already lz4 0, failed 0; " in out and out.count("\n") == 1
    assert main(["rewrite", str(arch), "--compression", "lz4", "-q"]) == 0
    assert capsys.readouterr() == ("", "")


def test_incremental_build_after_a_rewrite(synth_archive, tmp_path):
    """A cube kept with its state reads the rewritten files again (their footers changed)
    and gives the same cube."""
    arch = copy(synth_archive, tmp_path)
    cube = tmp_path / "cube"
    build_cube(arch, cube, workers=0, keep_state=True)
    before = cube_digest(cube)
    rw.rewrite_archive(arch, compression="lz4", progress=False)
    s = build_cube(arch, cube, workers=0, incremental=True)
    assert s.mapped == s.records == 30_000
    assert cube_digest(cube) == before


def test_bench_rewrite_runs(synth_archive, tmp_path, capsys):
    """bench/bench_rewrite.py measures a copy, leaves the archive and no copy behind."""
    import sys

    from flowatlas.testing import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        import bench_rewrite
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    before = {p: p.read_bytes() for p in data_files(synth_archive)}
    argv = ["--archive", str(synth_archive), "--work", str(tmp_path / "w"), "--phases"]
    assert bench_rewrite.main(argv) == 0
    out = capsys.readouterr().out
    assert "| lz4 |" in out and "| zstd |" in out and "already zstd 6" in out
    assert {p: p.read_bytes() for p in data_files(synth_archive)} == before
    assert not list((tmp_path / "w").iterdir())


def test_a_file_stopped_midway_leaves_no_temporary(multi_archive, tmp_path):
    arch = copy(multi_archive, tmp_path)
    victim = data_files(arch)[0]
    f = open_archive(arch).files[0]
    task = rw.RewriteTask(str(victim), f.size, f.footer_sha256, f.num_rows, "lz4")

    def stop(rows: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C after the first row group

    with pytest.raises(KeyboardInterrupt):
        rw.rewrite_file(task, stop)
    no_temporaries(arch)
    assert codecs(victim) == {"ZSTD"}


def test_a_directory_without_archive_files_is_an_error(tmp_path, capsys):
    """The wrong directory (no day files under it) is said, not "rewritten 0 files"."""
    (tmp_path / "notes").mkdir()
    assert main(["rewrite", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"flowatlas: error: {tmp_path}: archive is empty: no Parquet files under it\n"
