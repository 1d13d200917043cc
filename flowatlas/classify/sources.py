"""Readers that turn classification sources into compiler layers.

Each reader takes a file and returns a :class:`~flowatlas.classify.compiler.Layer` (address
ranges with attributes). Errors name the file and line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from flowatlas.addresses import AddressError, parse_prefixes, prefix_bounds
from flowatlas.classify.compiler import Layer
from flowatlas.errors import InputError


def file_sha256(path: Path) -> str:
    """Content hash of a source file, recorded in every table and cube built from it."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_prefix_csv(path: Path, name: str | None = None) -> Layer:
    """A CSV prefix list with a header: ``prefix`` and any of network_type, asn, org, country.

    The simplest source, and the one ``flowatlas synth`` writes for its world.
    """
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={
                    "prefix": pa.string(),
                    "network_type": pa.string(),
                    "asn": pa.uint32(),
                    "org": pa.string(),
                    "country": pa.string(),
                },
                strings_can_be_null=True,
            ),
        )
    except FileNotFoundError:
        raise InputError(f"{path}: classification source not found") from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: not a prefix CSV: {exc}") from None
    if "prefix" not in table.column_names:
        raise InputError(f"{path}: prefix CSV needs a 'prefix' column")
    try:
        # header is line 1, so data row r is line r + 1
        hi, lo, length, _ = parse_prefixes(table.column("prefix"), source=f"{path}")
    except AddressError as exc:
        msg = str(exc)
        raise InputError(msg.replace(": row ", ": data row ", 1)) from None
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, length)
    attrs = table.select(
        [c for c in ("network_type", "asn", "org", "country") if c in table.column_names]
    )
    return Layer(
        name or path.name,
        s_hi,
        s_lo,
        e_hi,
        e_lo,
        attrs,
        {
            "name": name or path.name,
            "path": str(path),
            "format": "prefix-csv",
            "sha256": file_sha256(path),
            "rows": table.num_rows,
        },
    )


READERS = {"prefix-csv": read_prefix_csv}
