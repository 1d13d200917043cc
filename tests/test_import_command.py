"""``flowatlas import``: idempotent, resumable, deterministic, and honest about every record."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flowatlas.cli import main
from flowatlas.errors import ConfigError, OutputError
from flowatlas.io.archive import open_archive
from flowatlas.io.commands import ImportTask, default_jobs, import_sources
from flowatlas.io.importers.base import QUARANTINE_SCHEMA
from flowatlas.io.manifest import Manifest, archive_lock, output_name, sha256_file
from flowatlas.testing import need_data, need_tools

HEADER = "time_start,time_end,src_addr,dst_addr,src_port,dst_port,proto,bytes,packets\n"


def write_csv(path: Path, n: int, day: int = 1, bad: int = 0, seed: int = 0) -> Path:
    """``n`` good flows over two days from ``2024-03-<day>``, then ``bad`` hostile rows."""
    lines = [HEADER]
    for i in range(n):
        d = day + (i % 2)
        lines.append(
            f"2024-03-{d:02d}T{i % 24:02d}:00:0{i % 10}Z,2024-03-{d:02d}T{i % 24:02d}:00:09Z,"
            f"10.{seed}.{i % 250}.1,198.51.100.{i % 200},{1000 + i},443,6,{100 + i},{1 + i % 5}\n"
        )
    hostile = [
        "1970-01-01T00:00:00Z,,10.0.0.1,10.0.0.2,1,2,6,5,1\n",
        "2024-03-01T00:00:00Z,,10.0.0.1,10.0.0.2,1,2,6,-5,1\n",
        "2024-03-01T00:00:00Z,,10.0.0.1,10.0.0.2,1,2,6,18446744073709551616,1\n",
        "2024-03-01T00:00:00Z,,10.0.0.999,10.0.0.2,1,2,6,5,1\n",
        "2999-03-01T00:00:00Z,,10.0.0.1,10.0.0.2,1,2,6,5,1\n",
        "garbage line\n",
    ]
    lines += hostile[:bad]
    path.write_text("".join(lines))
    return path


def files_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every archive Parquet file (not the _import folder)."""
    out = {}
    for p in sorted(root.rglob("*.parquet")):
        rel = p.relative_to(root).as_posix()
        if not rel.startswith("_"):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_import_is_idempotent_and_partitioned_by_day(tmp_path, capsys):
    src = write_csv(tmp_path / "a.csv", 40, bad=6)
    out = tmp_path / "archive"
    assert main(["import", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "imported 1" in text and "read 46" in text and "written 40" in text
    assert "quarantined 6" in text and "negative_counter" in text
    archive = open_archive(out)
    assert archive.num_rows == 40 and archive.days == ["2024-03-01", "2024-03-02"]
    assert all(f.counts == "raw" for f in archive.files)
    first = files_digest(out)

    # the same content again, under another name: nothing added
    copy = tmp_path / "copy.csv"
    copy.write_bytes(src.read_bytes())
    assert main(["import", str(src), str(copy), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "imported 0" in text and "already imported 2" in text
    assert files_digest(out) == first

    # quarantine: the hostile rows, with positions and reasons
    q = pq.read_table(
        out / "_import/quarantine" / f"{output_name('csv', sha256_file(src)[0])}.parquet"
    )
    assert q.schema.equals(QUARANTINE_SCHEMA)
    assert sorted(q["reason"].to_pylist()) == sorted(
        [
            "time_before_1990",
            "negative_counter",
            "counter_overflow",
            "bad_address",
            "time_in_future",
            "malformed_line",
        ]
    )
    entry = Manifest.open(out).entries[sha256_file(src)[0]]
    assert (entry.records_read, entry.records_written, entry.records_quarantined) == (46, 40, 6)
    assert entry.path == str(src.resolve()) and entry.size == src.stat().st_size


def test_interrupted_import_resumes(tmp_path):
    a = write_csv(tmp_path / "a.csv", 30, seed=1)
    b = write_csv(tmp_path / "b.csv", 20, day=5, seed=2)
    out = tmp_path / "archive"
    import_sources([a], out, progress=False)
    # leave the state a killed import of b would: pending in the manifest, a finished day
    # file with the wrong content and a half-written temporary file
    m = Manifest.open(out)
    sha_b = sha256_file(b)[0]
    name = output_name("csv", sha_b)
    m.begin(sha_b, name, str(b))
    m.save()
    stale = out / "day=2024-03-05" / f"{name}.parquet"
    stale.parent.mkdir()
    stale.write_bytes(next((out / "day=2024-03-01").glob("*.parquet")).read_bytes())
    (out / "day=2024-03-06").mkdir()
    (out / "day=2024-03-06" / f".{name}.parquet.tmp").write_bytes(b"half a file")

    summary = import_sources([a, b], out, progress=False)
    assert summary.recovered == [str(b)]
    assert [r.path for r in summary.imported] == [str(b.resolve())]
    assert summary.skipped_known == [str(a.resolve())]
    assert open_archive(out).num_rows == 50
    assert not list(out.rglob("*.tmp"))
    assert not Manifest.open(out).pending


def test_output_does_not_depend_on_worker_count(tmp_path):
    """The archive is byte-identical whatever -j: files are shared out between this process
    and the workers largest first, and each file's output depends on the file alone. More
    files than workers: a worker must live on after the thread that started it ran out of
    files to hand out (Linux sends the parent-death signal when that thread ends)."""
    srcs = [write_csv(tmp_path / f"s{i}.csv", 25 + i, day=1 + i, seed=i, bad=2) for i in range(9)]
    one = tmp_path / "one"
    s1 = import_sources(srcs, one, jobs=1, progress=False)
    assert s1.records_read == s1.records_written + s1.records_quarantined == 9 * 25 + 36 + 18
    threads = (pa.cpu_count(), pa.io_thread_count())
    for jobs in (2, 3):
        out = tmp_path / f"j{jobs}"
        s = import_sources(srcs, out, jobs=jobs, progress=False)
        assert files_digest(one) == files_digest(out) != {}
        assert (s1.records_read, s1.records_written) == (s.records_read, s.records_written)
        assert [r.path for r in s.imported] == [r.path for r in s1.imported]
    assert (pa.cpu_count(), pa.io_thread_count()) == threads  # this process's, restored


def test_default_jobs_pays_a_worker_only_for_enough_input():
    def tasks(*sizes: int) -> list[ImportTask]:
        return [ImportTask(f"f{i}", n, "", "csv", "", (), 1) for i, n in enumerate(sizes)]

    mib = 1 << 20
    assert default_jobs(tasks(10 * mib, 10 * mib), cpus=8) == 1  # 20 MiB: no worker
    assert default_jobs(tasks(*[40 * mib] * 4), cpus=8) == 4  # one per file
    assert default_jobs(tasks(*[40 * mib] * 4), cpus=2) == 2  # one per core
    assert default_jobs(tasks(*[10 * mib] * 10), cpus=8) == 3  # one per 32 MiB


def test_config_counts_records_touching_no_local_prefix(tmp_path, capsys):
    src = write_csv(tmp_path / "a.csv", 20, seed=7)  # sources 10.7.x.1, destinations 198.51.100.x
    cfg = tmp_path / "flowatlas.toml"
    cfg.write_text('[[regions]]\nname = "US-East"\nprefixes = ["10.7.0.0/24", "2001:db8::/32"]\n')
    out = tmp_path / "archive"
    assert main(["import", str(src), "--out", str(out), "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    # i % 250 = 0..19: only 10.7.0.1 is inside 10.7.0.0/24 -> 19 of 20 touch no local prefix
    assert "19 of 20 written records touch none of the 2 configured local prefixes" in text
    assert open_archive(out).num_rows == 20  # counted, never dropped
    bad = tmp_path / "bad.toml"
    bad.write_text('[[regions]]\nname = "X"\nprefixes = ["10.0.0.1/8"]\n')
    assert main(["import", str(src), "--out", str(out), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "host bits set" in err


def hostile_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    garbage = tmp_path / "garbage.bin"
    # random bytes, the same every run (os.urandom once made goflow2-pb read a length prefix
    # of 2^60 bytes: see test_protobuf_corrupt_length_prefix_ends_the_stream_cleanly)
    garbage.write_bytes(random.Random(4096).randbytes(4096))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    return [
        ([str(garbage)], "cannot tell the format"),
        ([str(garbage), "--format", "csv"], "garbage.bin"),
        ([str(garbage), "--format", "goflow2-json"], "not goflow2-json data"),
        ([str(garbage), "--format", "goflow2-pb"], "not goflow2-pb data"),
        ([str(empty), "--format", "csv"], "empty.csv"),
        ([str(tmp_path / "missing.csv")], "no such file"),
        ([str(garbage), "--format", "netflow-v42"], "unknown import format"),
    ]


def test_hostile_inputs_give_one_line_errors(tmp_path, capsys):
    for args, message in hostile_inputs(tmp_path):
        code = main(["import", *args, "--out", str(tmp_path / "arch"), "-q"])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        if message is None:
            assert code == 0
            continue
        assert code == 2, args
        assert captured.err.startswith("flowatlas: error: ") and captured.err.count("\n") == 1
        assert message in captured.err, captured.err


def test_folders_duplicates_and_unrecognised_files(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    write_csv(d / "a.csv", 10)
    (d / "sub" / "b.csv").write_bytes((d / "a.csv").read_bytes())
    (d / "notes.log").write_text("not flows\n")
    (d / ".hidden.csv").write_text("x")
    summary = import_sources([d], d / "archive", progress=False)
    assert len(summary.imported) == 1 and len(summary.skipped_duplicate) == 1
    assert [Path(p).name for p in summary.skipped_unrecognised] == ["notes.log"]
    assert "not a flow format" in summary.render()
    # the archive inside the folder it imports from is never read as input
    again = import_sources([d], d / "archive", progress=False)
    assert [Path(p).name for p in again.skipped_unrecognised] == ["notes.log"]
    assert len(again.skipped_known) == 2


def test_reimport_and_counts_option_and_lock(tmp_path):
    src = write_csv(tmp_path / "a.csv", 10)
    out = tmp_path / "out"
    import_sources([src], out, progress=False)
    again = import_sources([src], out, reimport=True, progress=False)
    assert len(again.imported) == 1 and open_archive(out).num_rows == 10
    scaled = import_sources([src], tmp_path / "s", counts="scaled", progress=False)
    assert scaled.imported[0].counts == "scaled"
    assert {f.counts for f in open_archive(tmp_path / "s").files} == {"scaled"}
    with archive_lock(out), pytest.raises(OutputError, match="another flowatlas import"):
        import_sources([src], out, progress=False)


@pytest.mark.tools
@pytest.mark.shared_data
def test_nfcapd_failure_is_reported_and_others_continue(tmp_path, capsys):
    """Through nfdump a truncated file fails (the native reader quarantines what is lost)."""
    need_tools("nfdump")
    root = need_data("flow_exports/generated_nfcapd/EAQ.pcap")
    good = root / "flow_exports/generated_nfcapd/EAQ.pcap/nfcapd.202611250000"
    cut = tmp_path / "nfcapd.202401010000"
    cut.write_bytes(good.read_bytes()[:3000])
    out = tmp_path / "out"
    code = main(["import", str(good), str(cut), "--out", str(out), "--reader", "nfdump"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert "1 of 2 files failed" in captured.err and "nfcapd.202401010000" in captured.err
    assert "FAILED" in captured.out
    assert open_archive(out).num_rows == 41
    # the failed file left nothing behind and can be tried again
    manifest = json.loads((out / "_import/manifest.json").read_text())
    assert len(manifest["files"]) == 1 and manifest["pending"] == []
    assert main(["import", str(good), str(cut), "--out", str(out), "-q", "--reader", "nfdump"]) == 2
    assert main(["import", str(good), "--out", str(out), "--counts", "raw", "-q"]) == 2
    assert "always scaled" in capsys.readouterr().err
    assert pc.sum(pq.read_table(out)["bytes"]).as_py() == 19077


def test_a_file_that_changes_during_import_is_not_recorded(tmp_path):
    from flowatlas.io.commands import ImportTask, import_one

    src = write_csv(tmp_path / "a.csv", 5)
    sha, size = sha256_file(src)
    task = ImportTask(str(src), size, sha, "csv", str(tmp_path / "out"), (), 100, (), 1)
    result = import_one(task)
    assert result.error is not None and "changed while it was being imported" in result.error
    assert not list((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize("jobs", [1, 2])
def test_setup_counted_per_batch_equals_the_files_read_back(tmp_path, jobs):
    """``import`` counts its set-up accounting batch by batch as it writes (in each worker);
    the oracle reads the written files back and counts them under the same configuration.
    Small batches, several files, a configuration that puts some records in a region, some
    out (Unknown region), some in transit, and hostile rows quarantined by the import."""
    from flowatlas.config import load_config
    from flowatlas.inspect import shares_of_files
    from flowatlas.io.commands import _setup_lines

    srcs = [write_csv(tmp_path / f"s{i}.csv", 40 + 7 * i, day=1 + i, seed=i, bad=3)
            for i in range(5)]  # fmt: skip
    cfg = tmp_path / "flowatlas.toml"
    cfg.write_text(
        '[[regions]]\nname = "A"\nprefixes = ["10.1.0.0/16", "198.51.100.0/26"]\n'
        '[[regions]]\nname = "B"\nprefixes = ["10.3.0.0/16"]\n'
    )
    out = tmp_path / "archive"
    s = import_sources(srcs, out, config=cfg, jobs=jobs, batch_rows=16, progress=False,
                       setup=True)  # fmt: skip
    assert all(r.setup is not None and r.setup_error is None for r in s.imported)
    files = [out / p for r in s.imported for p in r.outputs]
    want = shares_of_files(files, load_config(cfg))
    got = [sum(r.setup[i] for r in s.imported) for i in range(5)]
    assert got == [want.records, want.quarantined, want.unknown_region, want.unknown_type,
                   want.transit]  # fmt: skip
    assert 0 < want.unknown_region < want.records and 0 < want.transit
    # the line import prints, from the counts and from the files read back, is the same
    line = _setup_lines(s, str(cfg))
    for r in s.imported:
        r.setup = None
    assert _setup_lines(s, str(cfg)) == line and "region Unknown" in line[0]


def test_setup_with_a_bad_configuration_is_said_and_the_import_stands(tmp_path):
    """The archive's own flowatlas.toml is broken: the set-up cannot be counted, which the
    import's last line says, and the records are imported all the same."""
    from flowatlas.io.commands import _setup_lines

    out = tmp_path / "archive"
    out.mkdir()
    (out / "flowatlas.toml").write_text("[[regions]\nname = \n")
    for jobs in (1, 2):
        srcs = [write_csv(tmp_path / f"{jobs}-{i}.csv", 20 + i, seed=jobs * 10 + i)
                for i in range(2)]  # fmt: skip
        s = import_sources(srcs, out, jobs=jobs, progress=False, setup=True)
        assert len(s.imported) == 2 and s.records_written == 41 and not s.failed
        assert all(r.setup is None and "flowatlas.toml" in r.setup_error for r in s.imported)
        [line] = _setup_lines(s, None)
        assert line.startswith("  set-up    not counted: ") and "flowatlas.toml" in line


def test_setup_counter_is_not_kept_after_an_import(tmp_path):
    """A process importing into many archives (a service, a test) keeps no configuration's
    lookup tables (64 MiB and more each) once an import has ended."""
    from flowatlas.io import commands

    for i in range(3):
        s = import_sources([write_csv(tmp_path / f"{i}.csv", 10, seed=i)], tmp_path / f"a{i}",
                           progress=False, setup=True)  # fmt: skip
        assert s.imported[0].setup is not None
        assert commands._SETUP_COUNTER == []


def test_compression_option_changes_the_codec_not_the_records(tmp_path, capsys):
    """--compression zstd / lz4 / none: every file written in that codec (as the footer and
    `inspect` say), the same rows as the default auto layout (which `inspect` names as
    such); an unknown codec is refused."""
    from flowatlas.io.archive import AUTO_LAYOUT

    src = write_csv(tmp_path / "a.csv", 30)
    tables = {}
    for codec, footer in (("auto", "lz4"), ("zstd", "zstd"), ("lz4", "lz4"),
                          ("none", "uncompressed")):  # fmt: skip
        out = tmp_path / codec
        argv = ["import", str(src), "--out", str(out), "-q"]
        assert main(argv + ([] if codec == "auto" else ["--compression", codec])) == 0
        arch = open_archive(out)
        assert {f.compression for f in arch.files} == {codec if codec == "auto" else footer}
        assert len(arch.files) == 2
        for f in arch.files:
            meta = pq.read_metadata(f.path)
            assert {meta.row_group(0).column(c).compression.lower()
                    for c in range(meta.num_columns)} == {footer}  # fmt: skip
            delta = {
                meta.row_group(0).column(c).path_in_schema
                for c in range(meta.num_columns)
                if "DELTA_BINARY_PACKED" in meta.row_group(0).column(c).encodings
            }
            want = {n for n, (_, e) in AUTO_LAYOUT.items() if e == "DELTA_BINARY_PACKED"}
            assert delta == (want if codec == "auto" else set())
        tables[codec] = pa.concat_tables(pq.read_table(f.path) for f in arch.files)
        capsys.readouterr()
        assert main(["inspect", str(out)]) == 0
        name = codec if codec == "auto" else footer
        assert f"layout    {name} (2 files)" in capsys.readouterr().out
    for codec in ("zstd", "lz4", "none"):
        assert tables[codec].equals(tables["auto"])
    assert main(["import", str(src), "--out", str(tmp_path / "x"), "--compression", "gzip"]) == 2
    with pytest.raises(ConfigError, match="compression must be one of auto, zstd, lz4, none"):
        import_sources([src], tmp_path / "y", compression="snappy", progress=False)
