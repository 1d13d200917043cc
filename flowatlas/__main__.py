"""``python -m flowatlas`` runs the CLI."""

import sys

from flowatlas.cli import main

sys.exit(main())
