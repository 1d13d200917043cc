"""Built-in importers; importing this package registers them (see base.py).

Each module registers its importer with :func:`flowatlas.io.importers.base.register`. A module
that is not there yet is simply not offered.
"""

from __future__ import annotations

import importlib

_BUILTIN = ("nfdump", "goflow2", "pmacct", "csv", "netflow_pcap")

for _name in _BUILTIN:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:  # only a missing module of ours is tolerated
        if exc.name != f"{__name__}.{_name}":
            raise
