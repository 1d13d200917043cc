"""The ``flowatlas serve`` application: a page of filters, tabs and a drill-down per session.

A tab is one module with ``NAME``, ``TITLE`` and a ``View(page)`` class that has ``layout``
and ``update(page)`` (and optionally ``show_selection(page)``); add a module to
:data:`TABS` to add a tab.
"""

from __future__ import annotations

from flowatlas.viz.app import heatmaps, ipversions, magnitude, overview, shares, whatif

#: the page's tabs, in order
TABS = [overview, heatmaps, shares, magnitude, ipversions, whatif]
