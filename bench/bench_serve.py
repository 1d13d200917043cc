"""Serve load: concurrent bokeh.client sessions drive `flowatlas serve` on 127.0.0.1.

Builds (or takes) a cube of a quarter at 5-minute buckets, starts the server from the CLI,
opens N sessions at once (bokeh.client.pull_session, one thread each) and has every session
drive the same mix of interactions: filter changes (regions, directions, IP version, network
types, statistic, period) and heatmap cell selections. Each interaction is timed from the
client's change to the server's answer arriving (the page's status line, written last in
each refresh, counts refreshes), and the server's own time per refresh is read from that
line. The script ends by itself: a bounded number of interactions per session and a
deadline. It prints a table and writes nothing into git (``--results`` appends a section
to a file you name).

    python bench/bench_serve.py                      # 20 sessions, a quarter at 5 minutes
    python bench/bench_serve.py --cube CUBE          # an existing cube
    python bench/bench_serve.py --smoke              # tiny: CI checks the script still runs
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, markdown_table, provenance, write_section

STATUS = re.compile(r"generation (\d+): updated in (\d+) ms")


# --------------------------------------------------------------------------- the cube


def build_quarter(where: Path, records: int, days: int, bucket: str, seed: int) -> Path:
    """A synthetic archive of ``days`` days from 2025-10-01, built at ``bucket`` buckets."""
    from flowatlas.engine.build import build_cube
    from flowatlas.synth import synthesize

    archive = where / "archive"
    synthesize(archive, records=records, start="2025-10-01", days=days, seed=seed)
    config = (archive / "flowatlas.toml").read_text()
    config, n = re.subn(r'(?m)^bucket = "[^"]*"', f'bucket = "{bucket}"', config)
    if n != 1:
        raise SystemExit("bench_serve: the synthetic config has no [cube] bucket line")
    (archive / "flowatlas.toml").write_text(config)  # our own archive: its config, rebucketed
    return build_cube(archive, where / "cube").out


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cube: Path, port: int, log: Path, timeout: float) -> subprocess.Popen:
    """``flowatlas serve CUBE`` on 127.0.0.1:port, once it answers HTTP."""
    out = open(log, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowatlas", "serve", str(cube), "--port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench_serve: server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"bench_serve: server did not answer in {timeout} s")


# --------------------------------------------------------------------------- a session


@dataclass
class Result:
    kind: str
    round_trip_ms: float
    server_ms: float


@dataclass
class SessionLog:
    results: list[Result] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    open_ms: float = float("nan")


def _interactions(doc, rng: random.Random):
    """Yield (kind, change) pairs: each change sets one widget or selection on ``doc``."""
    regions = doc.select_one({"name": "filter-regions"})
    dirs = doc.select_one({"name": "filter-directions"})
    types = doc.select_one({"name": "filter-types"})
    ip = doc.select_one({"name": "filter-ip"})
    stat = doc.select_one({"name": "filter-stat"})
    period = doc.select_one({"name": "filter-period"})
    heat = doc.select_one({"name": "heatmap-volume"})

    def subset(widget) -> list[int]:
        """A different non-empty choice of boxes (the same one would change nothing)."""
        n = len(widget.labels)
        while True:
            pick = sorted(rng.sample(range(n), rng.randint(1, n)))
            if pick != sorted(widget.active) or n == 1:
                return pick

    def other_cell() -> list[int]:
        n = len(heat.data["region"])
        now = list(heat.selected.indices)
        return [rng.choice([i for i in range(n) if [i] != now])]

    while True:
        kinds = ["regions", "directions", "types", "ip", "stat", "period"]
        if heat is not None:  # a session on the heatmaps tab: selections are half its moves
            kinds += ["cell"] * len(kinds)
        kind = rng.choice(kinds)
        if kind == "regions":
            yield kind, lambda: setattr(regions, "active", subset(regions))
        elif kind == "directions":
            yield kind, lambda: setattr(dirs, "active", subset(dirs))
        elif kind == "types":
            yield kind, lambda: setattr(types, "active", subset(types))
        elif kind == "ip":
            yield kind, lambda: setattr(ip, "active", (ip.active + 1 + rng.randint(0, 1)) % 3)
        elif kind == "stat":
            yield kind, lambda: setattr(stat, "active", (stat.active + 1) % 3)
        elif kind == "period":
            values = [v for v, _ in period.options if v not in (period.value, "custom")]
            yield kind, lambda values=values: setattr(period, "value", rng.choice(values))
        elif len(heat.data["region"]) > 1:
            yield kind, lambda: setattr(heat.selected, "indices", other_cell())


def run_session(url: str, n: int, seed: int, tab: int, start: threading.Barrier,
                deadline: float, log: SessionLog) -> None:  # fmt: skip
    """One client: open the page, wait for the others, then ``n`` timed interactions."""
    from bokeh.client import pull_session

    t0 = time.perf_counter()
    try:
        session = pull_session(url=url)
    except Exception as exc:  # a refused or failed session is a result, not a crash
        log.errors.append(f"open: {exc}")
        start.abort()
        return
    log.open_ms = 1000 * (time.perf_counter() - t0)
    doc = session.document
    status = doc.select_one({"name": "status"})
    conn = session._connection  # bokeh.client runs its loop only while we wait on it

    def generation() -> int:
        m = STATUS.match(status.text or "")
        return int(m.group(1)) if m else 0

    def wait_past(g: int) -> bool:
        limit = time.monotonic() + 60
        timer = conn._loop.call_later(max(0.0, min(limit, deadline) - time.monotonic()),
                                      conn._loop.stop)  # fmt: skip
        try:
            conn._loop_until(lambda: generation() > g or time.monotonic() > min(limit, deadline))
        finally:
            conn._loop.remove_timeout(timer)
        return generation() > g

    rng = random.Random(seed)
    try:
        if tab:
            g = generation()
            doc.select_one({"name": "tabs"}).active = tab
            wait_past(g)
        start.wait(timeout=max(1.0, deadline - time.monotonic()))
        steps = _interactions(doc, rng)
        for _ in range(n):
            if time.monotonic() > deadline:
                log.errors.append("deadline reached")
                break
            kind, change = next(steps)
            g = generation()
            t = time.perf_counter()
            change()
            if not wait_past(g):
                log.errors.append(f"{kind}: no answer")
                break
            rt = 1000 * (time.perf_counter() - t)
            text = status.text or ""
            if "error" in text:
                log.errors.append(f"{kind}: {text}")
            m = STATUS.match(text)
            log.results.append(Result(kind, rt, float(m.group(2)) if m else float("nan")))
    except threading.BrokenBarrierError:
        log.errors.append("another session failed to open")
    finally:
        session.close()


# --------------------------------------------------------------------------- the run


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cube", type=Path, help="serve this cube (default: build a quarter)")
    ap.add_argument("--records", type=int, default=3_000_000, help="records of the built cube")
    ap.add_argument("--days", type=int, default=92, help="days of the built cube (a quarter)")
    ap.add_argument("--bucket", default="5m", help="bucket of the built cube")
    ap.add_argument("--keep", type=Path, help="build the cube here and keep it (for reruns)")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--interactions", type=int, default=15, help="per session")
    ap.add_argument("--deadline", type=float, default=600, help="seconds for the whole load")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="tiny run: 2 sessions, a week")
    ap.add_argument("--results", type=Path, help="also write a section into this file")
    args = ap.parse_args()
    if args.smoke:
        args.records, args.days, args.sessions, args.interactions = 5_000, 7, 2, 4

    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    proc = None
    try:
        cube = args.cube
        if cube is None:
            where = args.keep or tmp
            if args.keep and (args.keep / "cube" / "cube.json").exists():
                cube = args.keep / "cube"
            else:
                print(f"building {args.records:,} records over {args.days} days at "
                      f"{args.bucket} buckets ...", flush=True)  # fmt: skip
                t = time.perf_counter()
                cube = build_quarter(where, args.records, args.days, args.bucket, args.seed)
                print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)
        from flowatlas.engine.cube import open_cube

        c = open_cube(cube)
        cells, bucket = len(c.cells), c.meta["bucket"]
        del c
        port = free_port()
        t = time.perf_counter()
        proc = start_server(cube, port, tmp / "serve.log", timeout=300)
        load_s = time.perf_counter() - t
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + args.deadline
        logs = [SessionLog() for _ in range(args.sessions)]
        start = threading.Barrier(args.sessions)
        threads = [
            threading.Thread(
                target=run_session,
                args=(url, args.interactions, args.seed * 1000 + i, 1 if i % 2 else 0, start,
                      deadline, logs[i]),
                daemon=True,
            )
            for i in range(args.sessions)
        ]  # fmt: skip
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=max(1.0, deadline - time.monotonic() + 30))
        wall = time.perf_counter() - t
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    results = [r for log in logs for r in log.results]
    errors = [e for log in logs for e in log.errors]
    rows = []
    for kind in ["all", *sorted({r.kind for r in results})]:
        sel = [r for r in results if kind == "all" or r.kind == kind]
        rt = [r.round_trip_ms for r in sel]
        sv = [r.server_ms for r in sel if np.isfinite(r.server_ms)]
        rows.append([kind, len(sel), f"{percentile(rt, 50):.0f}", f"{percentile(rt, 95):.0f}",
                     f"{max(rt, default=float('nan')):.0f}", f"{percentile(sv, 50):.0f}",
                     f"{percentile(sv, 95):.0f}"])  # fmt: skip
    opens = [log.open_ms for log in logs if np.isfinite(log.open_ms)]
    table = markdown_table(
        ["interaction", "n", "round trip p50 ms", "p95 ms", "max ms", "server p50 ms",
         "server p95 ms"],
        rows,
    )  # fmt: skip
    argv = " ".join(sys.argv[1:])
    text = (
        f"{args.sessions} concurrent sessions x {args.interactions} interactions on a cube of "
        f"{cells:,} cells ({bucket} buckets); server start (cube loaded) {load_s:.1f} s; "
        f"session open p50 {percentile(opens, 50):.0f} ms; {wall:.1f} s wall; "
        f"{len(errors)} errors.\n\n{table}\n\n"
        "Round trip: from the client's change to the server's answer applied in the client "
        "(bokeh.client, all sessions in this process). Server: the page's refresh, as its "
        "status line reports it (Bokeh's serialisation not included).\n\n"
        + "\n".join(
            provenance(
                ["flowatlas", "bokeh", "tornado", "pandas", "numpy"],
                load_before,
                f"python bench/bench_serve.py {argv}".strip(),
            )
        )
        + "\n"
    )
    print(text)
    for e in errors[:10]:
        print("error:", e)
    if args.results:
        write_section(args.results, "Serve load (bench_serve.py)", text)
    if errors or not results:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
