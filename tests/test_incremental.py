"""Incremental builds: new days added to a cube read only the new files, results stay exact."""

from __future__ import annotations

import shutil

import pytest

import flowatlas.engine.pipeline as pipeline
from flowatlas.engine.build import build_cube
from flowatlas.errors import InputError
from flowatlas.synth import synthesize

CUBE_FILES = ("cells.parquet", "rollups.parquet", "top_ips.parquet", "top_asns.parquet",
              "sketches.parquet", "links.parquet", "geo.parquet")  # fmt: skip


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("incr")
    synthesize(root / "all", records=40_000, days=40, start="2025-09-10", seed=4)
    return root


def first_days(full, dst, n):
    """A copy of the archive holding only its first ``n`` days (and its configuration)."""
    dst.mkdir()
    for p in sorted((full / "all").iterdir()):
        if p.name.startswith("day="):
            if n > 0:
                shutil.copytree(p, dst / p.name)
                n -= 1
        elif p.is_file():
            shutil.copy(p, dst / p.name)
    return dst


def test_adding_days_equals_a_full_build_and_maps_only_new_files(full, tmp_path, monkeypatch):
    build_cube(full / "all", tmp_path / "reference", workers=0)
    archive = first_days(full, tmp_path / "growing", 25)
    cube = tmp_path / "cube"
    build_cube(archive, cube, workers=0, keep_state=True)
    assert (cube / "_state" / "signature.json").exists()
    # the rest of the days arrive
    for p in sorted((full / "all").glob("day=*"))[25:]:
        shutil.copytree(p, archive / p.name)

    mapped: list[str] = []
    real = pipeline.map_task

    def counting_map_task(fragments, plan):
        mapped.extend(f.path for f in fragments)
        return real(fragments, plan)

    monkeypatch.setattr(pipeline, "map_task", counting_map_task)
    resumed: list[int] = []
    build_cube(
        archive,
        cube,
        workers=0,
        incremental=True,
        progress=lambda stage, done, total: resumed.append(done) if stage == "resume" else None,
    )
    assert resumed == [25]
    assert sorted({p.split("/day=")[1][:10] for p in mapped}) == sorted(
        p.name[4:] for p in sorted((full / "all").glob("day=*"))[25:]
    )
    for name in CUBE_FILES:
        assert (cube / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def test_incremental_needs_a_cube_with_state(full, tmp_path):
    with pytest.raises(InputError, match="no cube to add to"):
        build_cube(full / "all", tmp_path / "none", workers=0, incremental=True)
    build_cube(full / "all", tmp_path / "plain", workers=0)
    with pytest.raises(InputError, match="keeps no build state; rebuild it once with --keep-state"):
        build_cube(full / "all", tmp_path / "plain", workers=0, incremental=True)


def test_incremental_refuses_another_configuration(full, tmp_path):
    build_cube(full / "all", tmp_path / "cube", workers=0, keep_state=True)
    cfg = (full / "all" / "flowatlas.toml").read_text().replace('bucket = "1h"', 'bucket = "15m"')
    (tmp_path / "other.toml").write_text(cfg)
    shutil.copy(full / "all" / "prefixes.csv", tmp_path / "prefixes.csv")
    with pytest.raises(InputError, match="another configuration or prefix table"):
        build_cube(
            full / "all", tmp_path / "cube", workers=0, incremental=True,
            config=tmp_path / "other.toml",
        )  # fmt: skip
    assert (tmp_path / "cube" / "cube.json").exists()  # the old cube is untouched
