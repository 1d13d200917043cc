"""The README's tour runs as written: every command of its code blocks, in order.

A user copies the tour line by line after ``flowatlas demo``; so does this test, in a
temporary folder, with only sizes made small (``--records`` and ``records=``) so that it
fits in CI. A ``NAME=value`` line sets a variable for the commands after it, as a shell
would; ``DATA=`` (the real third-party data beside a checkout) is pointed at
``FLOWATLAS_DATA``. ``flowatlas serve`` runs until the page answers, then is stopped. A
command that fails fails the test, naming the README line.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flowatlas.testing import REPO_ROOT, need_data

README = REPO_ROOT / "README.md"
#: records for every synthetic archive the tour makes (the README shows real sizes)
SMALL_RECORDS = 30_000
_ASSIGN = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S+)$")


def code_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, first line number, body) of each fenced block."""
    blocks = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        blocks.append((m.group(1), text[: m.start()].count("\n") + 2, m.group(2)))
    return blocks


def commands(body: str, first: int) -> list[tuple[int, str]]:
    """(README line, command) of a shell block: comments dropped, continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for i, raw in enumerate(body.splitlines()):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line and not pending:
            continue
        if not pending:
            start = first + i
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, (pending + line).strip()))
        pending = ""
    return out


def small(cmd: str) -> str:
    """The command with its sizes made small enough for CI."""
    cmd = re.sub(r"--records \d[\d_]*", f"--records {SMALL_RECORDS}", cmd)
    if re.match(r"flowatlas demo\b", cmd) and "--records" not in cmd:
        cmd += f" --records {SMALL_RECORDS}"
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_serve(cmd: str, env: dict[str, str], cwd: Path, where: str) -> None:
    """Start ``flowatlas serve``, wait for its page, stop it."""
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {cmd} --port {port}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")
                pytest.fail(f"{where}: {cmd!r} exited with {proc.returncode}: {out[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"{where}: {cmd!r} did not answer on port {port}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.tools
def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    data = need_data()
    text = README.read_text()
    blocks = [b for b in code_blocks(text) if b[0] in ("bash", "python")]
    # the set-up block makes virtual environments: this test runs in one already
    blocks = [b for b in blocks if "python3 -m venv" not in b[2]]
    assert any(lang == "bash" for lang, _, _ in blocks), "README has no tour"
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("CI", None)  # the tour's own output, not the test suite's CI mode
    ran = 0
    for lang, first, body in blocks:
        if lang == "python":
            code = re.sub(r"records=\d[\d_]*", f"records={SMALL_RECORDS}", body)
            p = subprocess.run(
                [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert p.returncode == 0, f"README.md line {first}: python block: {p.stderr[-3000:]}"
            ran += 1
            continue
        for line, cmd in commands(body, first):
            where = f"README.md line {line}"
            m = _ASSIGN.match(cmd)
            if m:
                env[m.group(1)] = str(data) if m.group(1) == "DATA" else m.group(2)
                continue
            cmd = small(cmd)
            if shlex.split(cmd)[:2] == ["flowatlas", "serve"]:
                run_serve(cmd, env, tmp_path, where)
            else:
                p = subprocess.run(
                    ["bash", "-c", cmd],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert p.returncode == 0, (
                    f"{where}: {cmd!r} exited {p.returncode}:\n{p.stderr[-3000:]}"
                )
            ran += 1
    assert ran >= 10
