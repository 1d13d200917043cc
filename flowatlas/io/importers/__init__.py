"""Built-in importers (see base.py for the protocol).

Each module registers its importer with :func:`flowatlas.io.importers.base.register` when it
is imported; :func:`load_builtin` imports them on first need, so importing this package (or
``base``) imports no importer, and importers may import ``base`` at module level.
"""

from __future__ import annotations

import importlib

_BUILTIN = ("nfdump", "goflow2", "pmacct", "csv", "netflow_pcap")
_loaded = False


def load_builtin() -> None:
    """Import (and so register) every built-in importer, once."""
    global _loaded
    if _loaded:
        return
    for name in _BUILTIN:
        importlib.import_module(f"{__name__}.{name}")
    _loaded = True
