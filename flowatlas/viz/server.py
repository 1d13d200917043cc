"""Start the ``flowatlas serve`` Bokeh server: Bokeh's own Server with our application.

Everything that can be wrong with the command line (a missing or corrupt cube, a host
without a websocket origin, a port in use) fails here with one line, before the server
starts. Cubes are named on the command line only; pages choose among them by name.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from flowatlas.errors import ConfigError, InputError, OutputError

_ORIGIN = re.compile(r"[A-Za-z0-9*.\-]+(:[0-9]+)?")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5006


def check_host(host: str, allow_websocket_origin: Sequence[str]) -> None:
    """Refuse a non-local --host without an explicit --allow-websocket-origin, or a bad origin."""
    if host not in LOCAL_HOSTS and not allow_websocket_origin:
        raise ConfigError(
            f"--host {host} makes the server reachable from other machines; name the origin "
            "browsers will use with --allow-websocket-origin HOST[:PORT]"
        )
    from bokeh.server.util import create_hosts_allowlist

    for origin in allow_websocket_origin:
        try:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(origin)
            create_hosts_allowlist([origin], DEFAULT_PORT)
        except ValueError:
            raise ConfigError(
                f"--allow-websocket-origin {origin!r}: expected HOST or HOST:PORT"
            ) from None


def check_port(host: str, port: int) -> None:
    """Fail now, with one line, if ``host:port`` cannot be listened on."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, not {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OutputError(f"port {port} on {host} is already in use (try --port)") from None
            raise OutputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def origins(host: str, port: int, allow_websocket_origin: Sequence[str]) -> list[str]:
    """The websocket origins the server accepts: the local names, or exactly those given."""
    if allow_websocket_origin:
        return list(allow_websocket_origin)
    return [f"127.0.0.1:{port}", f"localhost:{port}"]


def serve(
    cubes: Sequence[str | Path],
    *,
    previous: str | Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_websocket_origin: Sequence[str] = (),
    scenarios: Sequence[str | Path] = (),
    show: bool = False,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Load ``cubes`` and serve them until interrupted (Ctrl-C).

    ``scenarios``: scenario files the what-if tab offers besides the baseline and the
    shipped examples; each is read and projected on every cube before the server starts,
    so a bad one fails here with one line. ``ready(url)`` is called once the server listens
    (the CLI prints the address).
    """
    check_host(host, allow_websocket_origin)
    check_port(host, port)
    from flowatlas.viz.app.cubes import CubeSet
    from flowatlas.viz.app.whatif import EXAMPLES, check_scenarios, scenario_catalogue

    if not cubes:
        raise InputError("no cube to serve")
    catalogue = scenario_catalogue(scenarios)
    cube_set = CubeSet([Path(c) for c in cubes], Path(previous) if previous else None)
    check_scenarios(cube_set, {k: v for k, v in catalogue.items() if k not in EXAMPLES})

    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server

    from flowatlas.viz.app.page import make_document

    app = Application(FunctionHandler(partial(make_document, cubes=cube_set, scenarios=catalogue)))
    try:
        server = Server(
            {"/": app},
            address=host,
            port=port,
            allow_websocket_origin=origins(host, port, allow_websocket_origin),
            num_procs=1,
            check_unused_sessions_milliseconds=5_000,
            unused_session_lifetime_milliseconds=30_000,
        )
    except OSError as exc:  # lost a race for the port since check_port
        raise OutputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.start()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if ready is not None:
        ready(url)
    if show:
        server.io_loop.add_callback(server.show, "/")
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
