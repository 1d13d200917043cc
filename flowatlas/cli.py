"""The ``flowatlas`` command: a thin layer over the Python API.

Subcommands live beside the code they drive (``flowatlas.<area>.commands``) and are imported
only when used, so ``flowatlas --help`` is quick and no subcommand pays for another's imports.
Errors caused by input print one line (``flowatlas: error: ...``) and exit 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import warnings

import click

from flowatlas import __version__
from flowatlas.errors import FlowatlasError

#: name -> (module, attribute, one-line help shown in ``flowatlas --help``)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "flowatlas.commands",
        "demo",
        "Synthesize a half-year, build its cube, show the report.",
    ),
    "synth": ("flowatlas.commands", "synth", "Generate a synthetic flow archive (deterministic)."),
    "build": ("flowatlas.commands", "build", "Build a cube from a flow archive."),
    "report": ("flowatlas.commands", "report", "Print a cube's tables and write its HTML report."),
    "serve": (
        "flowatlas.viz.commands",
        "serve",
        "Explore cubes in a Bokeh server (filters, drill-down).",
    ),
    "config": (
        "flowatlas.commands",
        "config",
        "Show or check the configuration; --init writes a starter one.",
    ),
    "inspect": (
        "flowatlas.commands",
        "inspect",
        "What an archive holds and what the configuration makes of it.",
    ),
    "import": (
        "flowatlas.io.commands",
        "import_",
        "Import nfcapd, goflow2, pmacct, CSV into an archive.",
    ),
    "classify": ("flowatlas.classify.commands", "classify", "Compile and query prefix tables."),
    "whatif": (
        "flowatlas.whatif.commands",
        "whatif",
        "Capacity what-if: which links run out under a scenario, and when.",
    ),
    "verify": (
        "flowatlas.io.verify",
        "verify",
        "Check an archive or a cube: page checksums, file hashes, manifest.",
    ),
    "rewrite": (
        "flowatlas.io.rewrite",
        "rewrite",
        "Re-encode an archive's files in place, in the layout new files get.",
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowatlas")
def cli() -> None:
    """flowatlas: where your network's traffic goes, by region and remote network type.

    Start with `flowatlas demo`; see `flowatlas COMMAND --help` for each command.
    """


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """flowatlas's own warnings as one plain line; others as Python shows them."""
    if category.__module__.startswith("flowatlas"):
        click.echo(f"flowatlas: warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning FlowatlasError into a one-line message."""
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="flowatlas", standalone_mode=False)
    except FlowatlasError as exc:
        click.echo(f"flowatlas: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("flowatlas: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("flowatlas: interrupted", err=True)
        return 130
    except click.UsageError as exc:
        # a wrong option or value: one line, like every other input error
        where = (
            f"flowatlas {exc.ctx.command_path.split(' ', 1)[1]}"
            if exc.ctx and " " in (exc.ctx.command_path)
            else "flowatlas"
        )
        click.echo(f"flowatlas: error: {exc.format_message()} (see '{where} --help')", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


def run() -> None:
    """The installed ``flowatlas`` command and ``python -m flowatlas``: :func:`main`, then a
    quick exit.

    Tearing the interpreter down after a command (collecting and freeing every object,
    numba's and llvmlite's among them) took about 0.12 s of a 1 s build, for nothing: by the
    time :func:`main` returns, every output file is written, synced and closed. So once it
    returns, the standard streams are flushed, the ``atexit`` handlers run (multiprocessing's
    children are joined, temporary files removed) and the process ends with ``os._exit``.
    The normal exit is kept where something may still need it: while a non-daemon thread is
    alive (the interpreter would wait for it), and with ``FLOWATLAS_FAST_EXIT=0``. An
    exception that escapes :func:`main` (a bug) exits the normal way, with its traceback.
    """
    code = main()
    if os.environ.get("FLOWATLAS_FAST_EXIT", "1") == "0" or _threads_alive():
        sys.exit(code)
    _fast_exit(code)


def _threads_alive() -> bool:
    """Whether a thread other than this one would keep the interpreter from exiting."""
    me = threading.current_thread()
    return any(t is not me and t.is_alive() and not t.daemon for t in threading.enumerate())


def _fast_exit(code: int) -> None:  # pragma: no cover - ends the process (tests run it)
    import atexit

    code = _flushed(code)
    atexit._run_exitfuncs()
    os._exit(_flushed(code))


def _flushed(code: int) -> int:
    """``code`` once stdout and stderr are flushed; 1 for a success whose output could not
    be (a closed or broken pipe: what Python's own exit would report)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return code or 1
    return code


if __name__ == "__main__":  # pragma: no cover
    run()
