"""The ``flowatlas serve`` command: explore cubes in a Bokeh server."""

from __future__ import annotations

from pathlib import Path

import click

from flowatlas.viz.server import DEFAULT_HOST, DEFAULT_PORT


@click.command()
@click.argument("cubes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--previous", type=click.Path(path_type=Path), default=None,
              help="An earlier cube to compare shares with (quarter over quarter).")  # fmt: skip
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on (non-local needs --allow-websocket-origin).")  # fmt: skip
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option("--allow-websocket-origin", "origins", multiple=True, metavar="HOST[:PORT]",
              help="Origin browsers use to reach the server (repeatable).")  # fmt: skip
@click.option("--scenario", "scenarios", multiple=True, type=click.Path(path_type=Path),
              help="A scenario file (TOML or JSON) the what-if tab offers besides the "
              "baseline and the shipped example (repeatable).")  # fmt: skip
@click.option("--show", is_flag=True, help="Open the page in a browser.")
def serve(cubes, previous, host, port, origins, scenarios, show) -> None:
    """Explore CUBE(s) in a Bokeh server: overview, heatmaps, shares, drill-down.

    Loads each cube once; the set of cubes (and of scenarios) is fixed at start. Filters and
    the what-if tab's choices live in the page URL.
    Stop with Ctrl-C.
    """
    from flowatlas.viz.server import serve as run

    def ready(url: str) -> None:
        click.echo(f"serving {', '.join(map(str, cubes))} at {url} (Ctrl-C stops)", err=True)

    run(cubes, previous=previous, host=host, port=port, allow_websocket_origin=origins,
        scenarios=scenarios, show=show, ready=ready)  # fmt: skip
