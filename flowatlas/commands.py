"""The core CLI commands: demo, synth, build, report, config (thin layers over the API)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowatlas.errors import ConfigError, OutputError
from flowatlas.numba_start import start_numba
from flowatlas.pandas_guard import implicit_pandas_refused
from flowatlas.progress import Progress, build_progress

if TYPE_CHECKING:
    from flowatlas.engine.build import BuildSummary
    from flowatlas.engine.cube import Cube

DEMO_RECORDS = 1_000_000
DEMO_MARKER = ".flowatlas-demo"
#: flowatlas.io.archive.COMPRESSIONS, written out: importing it here would load pyarrow
COMPRESSION_CHOICES = ("auto", "zstd", "lz4", "none")


def compression_option(written: str) -> Any:
    """The ``--compression`` option of a command that writes archive files (``written``)."""
    return click.option(
        "--compression",
        type=click.Choice(COMPRESSION_CHOICES),
        default="auto",
        show_default=True,
        help=f"Column layout of {written}: auto picks each column's codec and encoding by "
        "measurement (lz4 with delta-encoded times and counters: a build decodes it about twice "
        "as fast as zstd, for 20-35% more disk); zstd is the smallest; zstd, lz4 and none put "
        "every column in that one codec.",
    )


def _echo(msg: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(msg, err=True)


# --------------------------------------------------------------------------- synth


def _run_synth(out: Path, records: int, start: str, days: int, seed: int, workers: int | None,
               overwrite: bool, quiet: bool, compression: str = "auto"):  # fmt: skip
    from flowatlas.synth import synthesize

    bar = Progress("synth", "records", records, quiet=quiet)
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
            compression=compression,
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
@compression_option("the archive")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def synth(records, start, days, seed, out, workers, overwrite, compression, quiet) -> None:
    """Generate a synthetic flow archive of the seed report's world.

    Writes day-partitioned Parquet (flow schema v1), the world's configuration
    (flowatlas.toml: regions, exporters, private links) and its prefix table
    (prefixes.csv). Deterministic from the seed; memory stays bounded for any --records.
    """
    t0 = time.perf_counter()
    s = _run_synth(out, records, start, days, seed, workers, overwrite, quiet, compression)
    _echo(
        f"wrote {s.records:,} records over {s.days} days to {s.out} ({s.files} files) "
        f"in {time.perf_counter() - t0:.1f} s",
        quiet,
    )


# --------------------------------------------------------------------------- build


def _run_build(archive: Path, out: Path, *, quiet: bool, **options: Any) -> BuildSummary:
    """:func:`~flowatlas.engine.build.build_cube` with the command line's progress bar and
    messages; ``options`` are its keyword arguments."""
    from flowatlas.engine.build import build_cube

    bar = Progress("build", "tasks", quiet=quiet)
    progress = build_progress(bar, lambda msg: _echo(msg, quiet))
    try:
        return build_cube(archive, out, progress=progress, **options)
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
              help="Tasks at once: threads of this process, or Dask workers with "
              "--processes [cores]; 0: one at a time.")  # fmt: skip
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
              help="Keep the map results for later --incremental builds, beside the cube in "
              "the hidden folder .CUBE.state (often 20x the cube's size).")  # fmt: skip
@click.option("--incremental", is_flag=True,
              help="Update a --keep-state cube: read only new or changed files.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def build(
    archive, out, config, table, workers, scheduler, processes, backend, partitions,
    partition_rows, shuffle, work_dir, overwrite, keep_state, incremental, quiet,
) -> None:  # fmt: skip
    """Build the cube of a flow archive: orient, classify, bucket, accumulate, count.

    Runs on threads of this process by default (a Dask cluster with --processes or
    --scheduler); the cube is the same byte for byte however it runs. Nothing is written
    unless the build succeeds.
    """
    if partition_rows is not None and partition_rows < 1:
        raise ConfigError(f"--partition-rows must be >= 1, not {partition_rows}")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be >= 0, not {workers}")
    t0 = time.perf_counter()
    from flowatlas.engine.allocator import choose_pages

    choose_pages(archive)  # before any thread: huge pages for a large archive only
    start_numba()  # this process runs flowatlas only: numba starts without SciPy's BLAS
    with implicit_pandas_refused():  # and pyarrow converts without importing pandas
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
            trim_memory=False,  # this process ends once the summary is printed
        )
    dt = time.perf_counter() - t0
    for line in _build_summary(s, dt, archive):
        _echo(line, quiet and not line.startswith("flowatlas: warning"))


def _build_summary(s, seconds: float, archive: Path) -> list[str]:
    """The lines a build ends with: what was built, the set-up accounting, any warnings."""
    q = sum(s.quarantined.values())
    mapped = s.mapped if s.mapped >= 0 else s.records
    reused = f", {mapped:,} of them read this time" if mapped != s.records else ""
    lines = [
        f"built {s.out}: {s.records:,} records{reused} "
        f"({mapped / max(seconds, 1e-9):,.0f} records/s), "
        f"{s.cells:,} cells, {q:,} quarantined, config {s.config_origin}, shuffle "
        f"{'in memory' if s.shuffle == 'memory' else 'on disk'}, {seconds:.1f} s"
    ]
    for reason, n in sorted(s.quarantined.items()):
        lines.append(f"  quarantined {n:,}: {reason}")
    if s.state is not None:
        lines.append(
            f"  build state for --incremental: {s.state} ({_size(s.state_bytes)}, beside the "
            "cube; delete it to reclaim the space)"
        )
    if s.setup is not None:
        lines.append(f"  {s.setup.line()}")
        lines += [f"flowatlas: warning: {w}" for w in s.setup.warnings(str(archive))]
    return lines


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


# --------------------------------------------------------------------------- report


def _show_report(cube_path: Path, html: Path | None, quiet: bool, title: str,
                 out: Path | None = None, previous: Path | None = None, *,
                 bar: Progress | None = None) -> Cube:  # fmt: skip
    """Print the report's tables and write its files; returns the cube it opened.

    ``bar`` (default: a "report" bar, silent with ``quiet``) counts the steps: opening the
    cube(s), computing the views, then each file written; the tables are printed once it
    is done, then what was written.
    """
    from flowatlas.viz.terminal import print_views
    from flowatlas.viz.views import compute_views, open_cube_dir

    if html is not None:  # the text as typed: Path() would drop a trailing slash
        if str(html).endswith(("/", os.sep)) or Path(html).is_dir():
            raise OutputError(f"{html}: --html takes a file name; for a directory use --out DIR")
        html = Path(html)
    opens = 1 + (previous is not None)
    steps = opens + 1 + (html is not None)
    said: list[str] = []
    with bar if bar is not None else Progress("report", "steps", quiet=quiet) as bar:
        bar.set(0, steps, "report: open")
        cube = open_cube_dir(cube_path)
        prev = open_cube_dir(previous, "--previous") if previous is not None else None
        bar.set(opens, desc="report: views")
        views = compute_views(cube, prev)
        bar.set(opens + 1)
        if html is not None:
            from flowatlas.viz.report import write_html

            bar.set(opens + 1, desc="report: html")
            write_html(views, html, title=title)
            bar.set(steps)
            said.append(f"report written to {html}")
        if out is not None:
            from flowatlas.viz.report import write_out

            def files(done: int, total: int) -> None:
                bar.set(steps + done, steps + total, "report: files")

            written = write_out(views, out, title=title, progress=files)
            said.append(
                f"report written to {out}: {written['html'].name}, {len(written['pngs'])} "
                f"PNGs, {written['summary'].name}"
            )
    if not quiet:
        print_views(views, sys.stdout, title=title)
    for line in said:
        click.echo(line, err=quiet)
    return cube


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
@click.option("-q", "--quiet", is_flag=True, help="Do not print the tables or a progress bar.")
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
    from flowatlas import warmup

    # first run after an install: the build's kernels compile in a second process while this
    # one synthesizes the archive (flowatlas/warmup.py; FLOWATLAS_WARMUP=0 turns it off)
    warm = warmup.start()
    _echo(
        f"[1/3] synthesizing {records:,} flow records (half a year, seed {seed}) -> {archive}",
        quiet,
    )
    s = _run_synth(archive, records, "2025-07-01", 184, seed, workers or None, True, quiet)
    t1 = time.perf_counter()
    _echo(f"      {s.records:,} records in {t1 - t0:.1f} s", quiet)
    warmup.finish(warm)
    _echo(f"[2/3] building the cube -> {cube}", quiet)
    b = _run_build(archive, cube, workers=workers, overwrite=True, quiet=quiet)
    t2 = time.perf_counter()
    _echo(
        f"      {b.records:,} records in {t2 - t1:.1f} s "
        f"({b.records / max(t2 - t1, 1e-9):,.0f} records/s), {b.cells:,} cells",
        quiet,
    )
    _echo("[3/3] report", quiet)
    title = "flowatlas demo: synthetic Network Stats, Jul-Dec 2025"
    report_bar = Progress("report", "steps", quiet=quiet)
    _demo_whatif(_show_report(cube, html, False, title, bar=report_bar), cube)
    click.echo(f"explore it in a browser: flowatlas serve {shlex.quote(str(cube))}")


def _demo_whatif(cube: Cube, cube_path: Path) -> None:
    """The demo's capacity question, answered on its cube: the example scenario (neocloud
    egress from US-East x2, migration moves to CA-East) and which links run out, when."""
    from flowatlas.whatif import example_scenario
    from flowatlas.whatif.commands import print_whatif

    result = cube.whatif(example_scenario("neocloud-migration"))
    print_whatif(result, sys.stdout, title="capacity what-if")
    click.echo(
        f"the same from the command line: flowatlas whatif {shlex.quote(str(cube_path))} "
        "--scenario neocloud-migration"
    )


# --------------------------------------------------------------------------- config


@click.command()
@click.option(
    "--dump", is_flag=True, help="Print the effective configuration as TOML (the default)."
)
@click.option("--check", "check", type=click.Path(path_type=Path), default=None,
              help="Validate this file; print it with defaults filled in.")  # fmt: skip
@click.option("--init", "init", type=click.Path(path_type=Path), default=None,
              metavar="ARCHIVE",
              help="Write a commented starter configuration for this archive, guessed from "
              "its traffic (regions from exporters, local prefixes from the data).")  # fmt: skip
@click.option("--out", "-o", "out", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="With --init: write here (not over an existing file) "
              "instead of printing.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="With --init: no progress bar.")
def config(dump, check, init, out, quiet) -> None:
    """Show the effective configuration (defaults, or a file's with defaults filled in).

    With --init ARCHIVE, write a starter configuration to edit (then --check it).
    """
    from flowatlas.config import dump_config, load_config

    if init is not None:
        _init_config(init, out, quiet)
        return
    if out is not None:
        raise ConfigError("--out goes with --init ARCHIVE")
    cfg = load_config(check)
    click.echo(dump_config(cfg), nl=False)
    if check is not None:
        click.echo(f"# {check}: OK", err=True)


def _init_config(archive: Path, out: Path | None, quiet: bool) -> None:
    """``config --init``: the starter configuration, printed or written to ``out``."""
    from flowatlas.inspect import starter_config
    from flowatlas.io.archive import open_archive

    if out is not None and out.exists():
        raise OutputError(f"{out}: exists; choose another --out (it is never overwritten)")
    total = open_archive(archive).num_rows
    with Progress("config --init", "records", 2 * total, quiet=quiet) as bar:
        text = starter_config(archive, progress=bar.update)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write: {exc.strerror or exc}") from None
    _echo(f"wrote {out}: edit it (region names, prefixes), then `flowatlas config --check {out}`")


# --------------------------------------------------------------------------- inspect


@click.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="Configuration TOML [ARCHIVE/flowatlas.toml, else defaults].")  # fmt: skip
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Compiled prefix table (.fatable) instead of the config's sources.")  # fmt: skip
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Busiest prefixes and interfaces to list.")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Threads reading the archive [cores].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the tables.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def inspect(archive, config, table, top, workers, as_json, quiet) -> None:
    """What an archive holds, and what the configuration makes of it.

    Time range and records; exporters with records, bytes, sampling rates and interfaces;
    the busiest /24 and /48 prefixes as source and destination; address families; and the
    share of records the configuration puts in each region, network type and direction
    (Unknown region, Unknown type, transit), counted by the build's own kernels.
    """
    import json

    from flowatlas.engine.build import resolve_config
    from flowatlas.inspect import inspect_archive
    from flowatlas.io.archive import open_archive

    total = open_archive(archive).num_rows
    cfg = resolve_config(archive, config)
    with Progress("inspect", "records", total, quiet=quiet) as bar:
        ins = inspect_archive(
            archive, config=cfg, table=table, top=top, workers=workers, progress=bar.update
        )
    if as_json:
        click.echo(json.dumps(ins.to_dict(), indent=1))
    else:
        click.echo(ins.render(top))
