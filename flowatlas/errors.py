"""Errors that reach users as one clear line.

Every failure caused by input (a path, a file, a row, a setting) raises a
:class:`FlowatlasError` whose message names the thing at fault; the CLI prints it on one line
and exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FlowatlasError(Exception):
    """A user-facing error: the message names the file, row, address or setting at fault."""

    exit_code = 2


class InputError(FlowatlasError):
    """Bad input data: a missing path, an empty archive, a corrupt or mis-shaped file."""


class ConfigError(FlowatlasError):
    """A configuration file or option that is wrong; names the key or option."""


class OutputError(FlowatlasError):
    """An output location that cannot be written."""
