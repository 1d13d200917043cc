"""``flowatlas verify ARCHIVE|CUBE``: is everything still what was written?

An archive is checked file by file: each Parquet file's footer and schema (flow schema v1),
every data page against its checksum (every row group of every column is read), and the
import manifest against the files (imports that did not finish, files missing, changed, or
left by an import that died, each file's SHA-256 against the one recorded when it was
written). A cube is checked the same way against the sizes and SHA-256 that cube.json
records, and must open as a cube. Every problem is one line naming the file (and the row
group and column for a bad page); the command exits 0 when there are none, 2 otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click
import pyarrow as pa

from flowatlas.errors import FlowatlasError, InputError


@dataclass
class Verdict:
    """What ``verify`` found: what was checked and each problem, one line each."""

    path: Path
    kind: str  # "archive" or "cube"
    #: what the files were checked against besides their page checksums
    against: str = ""
    files: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_all_pages(path: Path) -> tuple[int, str | None]:
    """Read every page of a Parquet file (checksums verified): (rows, problem or None)."""
    from flowatlas.io.archive import damaged, open_parquet

    rows = 0
    try:
        pf = open_parquet(path)
        for rg in range(pf.num_row_groups):
            rows += pf.read_row_group(rg).num_rows
    except (OSError, pa.ArrowException) as exc:
        return rows, str(damaged(path, exc))
    return rows, None


def _read_in_parallel(paths: list[Path]) -> Iterator[tuple[Path, int, str | None]]:
    """Each file's rows and problem, files read side by side (pyarrow frees the GIL)."""
    workers = max(1, min(len(paths), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, (rows, problem) in zip(paths, pool.map(_read_all_pages, paths), strict=True):
            yield path, rows, problem


def verify_archive(root: str | os.PathLike[str]) -> Verdict:
    """Check every file of an archive and its import manifest (see the module docstring)."""
    from flowatlas.io.archive import _list_parquet, describe_file
    from flowatlas.io.manifest import IMPORT_DIR, MANIFEST_NAME, archive_problems

    root = Path(root)
    verdict = Verdict(root, "archive")
    if not root.exists():
        raise InputError(f"{root}: no such file or directory")
    paths = [root] if root.is_file() else list(_list_parquet(root))
    if not paths:
        verdict.problems.append(f"{root}: no Parquet files: not an archive")
        return verdict
    described = []
    for p in paths:
        try:
            described.append(describe_file(p, root))
        except InputError as exc:
            verdict.problems.append(str(exc))
    verdict.files = len(paths)
    for _, rows, problem in _read_in_parallel([f.path for f in described]):
        verdict.rows += rows
        if problem:
            verdict.problems.append(problem)
    if root.is_dir():
        if (root / IMPORT_DIR / MANIFEST_NAME).exists():
            verdict.against = "the import manifest"
        try:
            verdict.problems += archive_problems(root, described, content=True)
        except FlowatlasError as exc:
            verdict.problems.append(str(exc))
        for tmp in sorted(root.glob("day=*/.*.tmp")):
            verdict.problems.append(
                f"{tmp}: unfinished file left by an import or rewrite that died"
            )
    return verdict


def verify_cube(path: str | os.PathLike[str]) -> Verdict:
    """Check a cube's files against cube.json's record of them, and that it opens."""
    from flowatlas.engine.cube import FILES_KEY, open_cube
    from flowatlas.io.manifest import sha256_file

    path = Path(path)
    verdict = Verdict(path, "cube")
    meta_path = path / "cube.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        verdict.problems.append(f"{meta_path}: unreadable: {exc}")
        return verdict
    recorded = meta.get(FILES_KEY) if isinstance(meta, dict) else None
    if not isinstance(recorded, dict):
        recorded = None
        verdict.problems.append(
            f"{meta_path}: records no file hashes (built by an older flowatlas: rebuild it "
            "to make it verifiable); checking page checksums only"
        )
    else:
        verdict.against = "cube.json"
    present = sorted(p.name for p in path.glob("*.parquet"))
    verdict.files = len(present)
    for p, rows, problem in _read_in_parallel([path / n for n in present]):
        verdict.rows += rows
        if problem:
            verdict.problems.append(problem)
            continue
        if recorded is None:
            continue
        info = recorded.get(p.name)
        if not isinstance(info, dict):
            verdict.problems.append(f"{p}: not recorded in cube.json (added after the build?)")
        elif (p.stat().st_size, sha256_file(p)[0]) != (info.get("size"), info.get("sha256")):
            verdict.problems.append(f"{p}: content differs from cube.json's record (SHA-256)")
    for name in sorted(set(recorded or {}) - set(present)):
        verdict.problems.append(f"{path / name}: recorded in cube.json but missing")
    if not verdict.problems or recorded is None:
        try:
            open_cube(path)
        except FlowatlasError as exc:
            verdict.problems.append(str(exc))
    return verdict


def verify_path(path: str | os.PathLike[str]) -> Verdict:
    """Verify ``path`` as a cube (it has a cube.json) or as an archive."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    return verify_cube(p) if (p / "cube.json").exists() else verify_archive(p)


@click.command("verify", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="Print problems only, not the summary.")
def verify(path: Path, quiet: bool) -> None:
    """Check an archive or a cube: page checksums, file hashes, the import manifest.

    Reads every byte; prints each problem on one line and exits 2 if there is any, 0 if
    everything is what was written.
    """
    v = verify_path(path)
    for line in v.problems:
        click.echo(line)
    if v.problems:
        raise InputError(f"{path}: {len(v.problems)} problem(s) found in this {v.kind}")
    if not quiet:
        against = f", every file against {v.against}" if v.against else ""
        click.echo(
            f"{path}: OK ({v.kind}: {v.files:,} files, {v.rows:,} rows; every page checksum "
            f"verified{against})"
        )


__all__ = ["Verdict", "verify", "verify_archive", "verify_cube", "verify_path"]
