"""The core CLI commands: demo, synth, build, report, config (thin layers over the API)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import click

from flowatlas.errors import ConfigError, OutputError

DEMO_RECORDS = 3_000_000
DEMO_MARKER = ".flowatlas-demo"


class _Bar:
    """A tqdm progress bar on stderr that can be switched off (--quiet, or not a terminal)."""

    def __init__(self, total: int, desc: str, unit: str, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=True,
            disable=quiet or None,  # None: off when stderr is not a TTY
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, n: int) -> None:
        self.bar.update(n)

    def set(self, done: int, desc: str | None = None) -> None:
        if desc:
            self.bar.set_description(desc, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _echo(msg: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(msg, err=True)


# --------------------------------------------------------------------------- synth


def _run_synth(out: Path, records: int, start: str, days: int, seed: int, workers: int | None,
               overwrite: bool, quiet: bool):  # fmt: skip
    from flowatlas.synth import synthesize

    bar = _Bar(records, "synth", "rec", quiet)
    try:
        return synthesize(
            out,
            records=records,
            start=start,
            days=days,
            seed=seed,
            workers=workers,
            progress=bar.update,
            overwrite=overwrite,
        )
    finally:
        bar.close()


@click.command()
@click.option(
    "--records", type=int, default=DEMO_RECORDS, show_default=True, help="Flow records to write."
)
@click.option(
    "--start", default="2025-07-01", show_default=True, help="First day (UTC), YYYY-MM-DD."
)
@click.option("--days", type=int, default=184, show_default=True, help="Number of days.")
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Random seed (same seed, same bytes)."
)
@click.option(
    "--out",
    "-o",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Archive directory to write.",
)
@click.option(
    "--workers", type=int, default=None, help="Processes generating days in parallel [cores]."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing synthetic archive at --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def synth(records, start, days, seed, out, workers, overwrite, quiet) -> None:
    """Generate a synthetic flow archive of the seed report's world.

    Writes day-partitioned Parquet (flow schema v1), the world's configuration
    (flowatlas.toml: regions, exporters, private links) and its prefix table
    (prefixes.csv). Deterministic from the seed; memory stays bounded for any --records.
    """
    t0 = time.perf_counter()
    s = _run_synth(out, records, start, days, seed, workers, overwrite, quiet)
    _echo(
        f"wrote {s.records:,} records over {s.days} days to {s.out} ({s.files} files) "
        f"in {time.perf_counter() - t0:.1f} s",
        quiet,
    )


# --------------------------------------------------------------------------- build


def _run_build(archive: Path, out: Path, *, config, table, workers, scheduler, partitions,
               partition_rows, overwrite, quiet, processes=False, backend="auto",
               keep_state=False, incremental=False, shuffle="auto",
               work_dir=None):  # fmt: skip
    from flowatlas.engine.build import build_cube

    bar = _Bar(0, "build", "task", quiet)

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "resume":
            _echo(f"reusing {done:,} of {total:,} map tasks already done", quiet)
            return
        if bar.bar.total != total:
            bar.bar.total = total
        bar.set(done, f"build: {stage}")

    try:
        return build_cube(
            archive,
            out,
            config=config,
            table=table,
            workers=workers,
            scheduler=scheduler,
            processes=processes,
            backend=backend,
            keep_state=keep_state,
            incremental=incremental,
            partitions=partitions,
            partition_rows=partition_rows,
            shuffle=shuffle,
            work_dir=work_dir,
            overwrite=overwrite,
            progress=progress,
        )
    finally:
        bar.close()


@click.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Cube directory to write.",
)
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="Configuration TOML [ARCHIVE/flowatlas.toml, else defaults].")  # fmt: skip
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Compiled prefix table (.fatable) instead of the config's sources.")  # fmt: skip
@click.option("--workers", type=int, default=None,
              help="Tasks at once on the local Dask cluster [cores]; 0: no Dask.")  # fmt: skip
@click.option(
    "--scheduler", default=None, help="Address of an existing Dask scheduler (tcp://host:8786)."
)
@click.option("--processes", is_flag=True, help="Local cluster of worker processes, not threads.")
@click.option("--backend", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
              show_default=True, help="Where per-record kernels run.")  # fmt: skip
@click.option(
    "--partitions",
    type=int,
    default=None,
    help="Remote-IP partitions of the shuffle [auto: about 3 M archive rows each, at least 4, "
    "a multiple of the workers].",
)
@click.option("--partition-rows", type=int, default=None,
              help="Archive rows per map task [auto: a few tasks per worker].")  # fmt: skip
@click.option(
    "--shuffle",
    type=click.Choice(["auto", "memory", "disk"]),
    default="auto",
    show_default=True,
    help="Where map results wait for the reducers: memory (faster; an interrupted build starts "
    "again) or a work directory beside the cube (bounded memory; an interrupted build resumes). "
    "auto: memory while the archive's rows fit in a quarter of free memory.",
)
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Work directory of an on-disk shuffle [a hidden sibling of --out]; with "
              "--scheduler, a disk every worker shares.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing cube at --out.")
@click.option("--keep-state", is_flag=True,
              help="Keep the map results in the cube, for later --incremental builds.")  # fmt: skip
@click.option("--incremental", is_flag=True,
              help="Update a --keep-state cube: read only new or changed files.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def build(
    archive, out, config, table, workers, scheduler, processes, backend, partitions,
    partition_rows, shuffle, work_dir, overwrite, keep_state, incremental, quiet,
) -> None:  # fmt: skip
    """Build the cube of a flow archive: orient, classify, bucket, accumulate, count.

    Runs on a local Dask cluster by default (or --scheduler); the cube is the same byte for
    byte however it runs. Nothing is written unless the build succeeds.
    """
    if partition_rows is not None and partition_rows < 1:
        raise ConfigError(f"--partition-rows must be >= 1, not {partition_rows}")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be >= 0, not {workers}")
    t0 = time.perf_counter()
    s = _run_build(
        archive,
        out,
        config=config,
        table=table,
        workers=workers,
        scheduler=scheduler,
        partitions=partitions,
        partition_rows=partition_rows,
        overwrite=overwrite,
        quiet=quiet,
        processes=processes,
        backend=backend,
        keep_state=keep_state,
        incremental=incremental,
        shuffle=shuffle,
        work_dir=work_dir,
    )
    dt = time.perf_counter() - t0
    q = sum(s.quarantined.values())
    _echo(
        f"built {s.out}: {s.records:,} records ({s.records / max(dt, 1e-9):,.0f} records/s), "
        f"{s.cells:,} cells, {q:,} quarantined, config {s.config_origin}, shuffle "
        f"{'in memory' if s.shuffle == 'memory' else 'on disk'}, {dt:.1f} s",
        quiet,
    )
    for reason, n in sorted(s.quarantined.items()):
        _echo(f"  quarantined {n:,}: {reason}", quiet)


# --------------------------------------------------------------------------- report


def _show_report(cube_path: Path, html: Path | None, quiet: bool, title: str,
                 out: Path | None = None, previous: Path | None = None) -> None:  # fmt: skip
    from flowatlas.viz.terminal import print_views
    from flowatlas.viz.views import compute_views, open_cube_dir

    if html is not None:  # the text as typed: Path() would drop a trailing slash
        if str(html).endswith(("/", os.sep)) or Path(html).is_dir():
            raise OutputError(f"{html}: --html takes a file name; for a directory use --out DIR")
        html = Path(html)
    cube = open_cube_dir(cube_path)
    prev = open_cube_dir(previous, "--previous") if previous is not None else None
    views = compute_views(cube, prev)
    if not quiet:
        print_views(views, sys.stdout, title=title)
    if html is not None:
        from flowatlas.viz.report import write_html

        write_html(views, html, title=title)
        click.echo(f"report written to {html}", err=quiet)
    if out is not None:
        from flowatlas.viz.report import write_out

        written = write_out(views, out, title=title)
        click.echo(
            f"report written to {out}: {written['html'].name}, {len(written['pngs'])} PNGs, "
            f"{written['summary'].name}",
            err=quiet,
        )


@click.command()
@click.argument("cube", type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", type=click.Path(path_type=Path), default=None,
              help="Write DIR/report.html, a PNG per figure (headless Chromium) and "
              "DIR/summary.md.")  # fmt: skip
@click.option("--html", type=click.Path(), default=None,
              help="Also write the HTML report to this file.")  # fmt: skip
@click.option("--previous", type=click.Path(path_type=Path), default=None,
              help="An earlier cube: shares are compared with its whole range.")  # fmt: skip
@click.option("--title", default="flowatlas network report", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="Do not print the tables.")
def report(cube, out, html, previous, title, quiet) -> None:
    """Print a cube's report tables; write its HTML page (--html) or a report folder (--out)."""
    _show_report(cube, html, quiet, title, out=out, previous=previous)


# --------------------------------------------------------------------------- demo


@click.command()
@click.option("--records", type=int, default=DEMO_RECORDS, show_default=True,
              help="Synthetic flow records (10^9 works on a 24 GiB machine, slowly).")  # fmt: skip
@click.option("--out", "-o", "out", type=click.Path(path_type=Path), default=Path("flowatlas-demo"),
              show_default=True, help="Directory for the archive, cube and report.")  # fmt: skip
@click.option("--workers", type=int, default=None, help="Worker processes [cores]; 0 = no Dask.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo(records, out, workers, seed, quiet) -> None:
    """Synthesize a half-year of flows, build its cube, and show the Network Stats report.

    Writes OUT/archive (flow records), OUT/cube and OUT/report.html (Bokeh charts, open it
    in a browser), and prints the report's tables.
    """
    if out.exists() and any(out.iterdir()) and not (out / DEMO_MARKER).exists():
        raise OutputError(
            f"{out}: exists and is not a flowatlas demo directory; choose another --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / DEMO_MARKER).write_text("flowatlas demo output; safe to delete\n")
    except OSError as exc:
        raise OutputError(f"{out}: cannot write: {exc.strerror or exc}") from None
    archive, cube, html = out / "archive", out / "cube", out / "report.html"

    t0 = time.perf_counter()
    _echo(
        f"[1/3] synthesizing {records:,} flow records (half a year, seed {seed}) -> {archive}",
        quiet,
    )
    s = _run_synth(archive, records, "2025-07-01", 184, seed, workers or None, True, quiet)
    t1 = time.perf_counter()
    _echo(f"      {s.records:,} records in {t1 - t0:.1f} s", quiet)
    _echo(f"[2/3] building the cube -> {cube}", quiet)
    b = _run_build(
        archive,
        cube,
        config=None,
        table=None,
        workers=workers,
        scheduler=None,
        partitions=None,
        partition_rows=None,
        overwrite=True,
        quiet=quiet,
    )
    t2 = time.perf_counter()
    _echo(
        f"      {b.records:,} records in {t2 - t1:.1f} s "
        f"({b.records / max(t2 - t1, 1e-9):,.0f} records/s), {b.cells:,} cells",
        quiet,
    )
    _echo("[3/3] report", quiet)
    _show_report(cube, html, False, "flowatlas demo: synthetic Network Stats, Jul-Dec 2025")
    click.echo(f"explore it in a browser: flowatlas serve {shlex.quote(str(cube))}")


# --------------------------------------------------------------------------- config


@click.command()
@click.option(
    "--dump", is_flag=True, help="Print the effective configuration as TOML (the default)."
)
@click.option("--check", "check", type=click.Path(path_type=Path), default=None,
              help="Validate this file; print it with defaults filled in.")  # fmt: skip
def config(dump, check) -> None:
    """Show the effective configuration (defaults, or a file's with defaults filled in)."""
    from flowatlas.config import dump_config, load_config

    cfg = load_config(check)
    click.echo(dump_config(cfg), nl=False)
    if check is not None:
        click.echo(f"# {check}: OK", err=True)
