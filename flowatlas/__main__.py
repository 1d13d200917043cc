"""``python -m flowatlas`` runs the CLI."""

from flowatlas.cli import run

run()
