"""The command's quick exit (``flowatlas.cli.run``): nothing a normal exit would do is lost.

``run`` ends the process with ``os._exit`` once the command returns, skipping the
interpreter's teardown. Each test runs a real process with buffered (piped) output and
checks what a normal exit guarantees: the exit code, every byte written to stdout and stderr,
the ``atexit`` handlers (with what they print), and a non-daemon thread allowed to finish.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BIG = 1 << 20  # more than any pipe or stdio buffer holds


def harness(tmp_path: Path, body: str, *argv: str, fast: bool = True):
    """Run ``body`` (which may register handlers or start threads), then ``run()`` with
    ``argv``, in a fresh interpreter whose output is piped and buffered."""
    script = tmp_path / "harness.py"
    script.write_text(
        textwrap.dedent(body)
        + "\nimport sys\nsys.argv = ['flowatlas', *"
        + repr(list(argv))
        + "]\nfrom flowatlas.cli import run\nrun()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["FLOWATLAS_FAST_EXIT"] = "1" if fast else "0"
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, env=env, cwd=tmp_path, timeout=120
    )


@pytest.mark.parametrize("fast", [True, False])
def test_output_exit_code_and_atexit_handlers_survive(tmp_path, fast) -> None:
    body = f"""
    import atexit, sys
    sys.stdout.write("o" * {BIG})  # buffered, not yet flushed when the command runs
    atexit.register(lambda: (sys.stdout.write("x" * {BIG}), sys.stderr.write("handler ran")))
    """
    p = harness(tmp_path, body, "--version", fast=fast)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert out.startswith("o" * BIG) and out.endswith("x" * BIG)
    assert "flowatlas" in out[BIG:-BIG]  # the version line, between the two
    assert p.stderr.decode().endswith("handler ran")


def test_an_error_keeps_its_code_and_its_one_line(tmp_path) -> None:
    p = harness(tmp_path, "", "build", str(tmp_path / "missing"), "-o", str(tmp_path / "c"))
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowatlas: error: "), lines


def test_a_running_non_daemon_thread_is_waited_for(tmp_path) -> None:
    done = tmp_path / "thread-finished"
    body = f"""
    import threading, time
    def late():
        time.sleep(0.5)
        open({str(done)!r}, "w").write("yes")
    threading.Thread(target=late).start()
    """
    p = harness(tmp_path, body, "--version")
    assert p.returncode == 0, p.stderr
    assert done.read_text() == "yes"  # os._exit would have killed the thread


def test_the_installed_entry_points_use_it() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["flowatlas"] == "flowatlas.cli:run"
    assert "run()" in (root / "flowatlas" / "__main__.py").read_text()
