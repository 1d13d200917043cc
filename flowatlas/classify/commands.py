"""`flowatlas classify`: compile sources into a prefix table, look addresses up, inspect tables.

A thin layer over :func:`flowatlas.classify.build_table` and :class:`PrefixTable`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from flowatlas.errors import InputError

_WHY = {
    "override": "user override (prefix rule): beats every other source",
    "override-asn": "user override (ASN rule): beats exporter/interface rules and prefix lists",
    "prefix": "explicit prefix list: beats ASN -> type tables",
    "asn": "ASN -> type table, for the ASN that announces the prefix",
    "none": "no source gives a type: Unknown",
}


def parse_source_arg(text: str) -> Any:
    """``[FORMAT:]PATH[,key=value...]`` -> a SourceSpec (FORMAT only if it is a known one)."""
    from flowatlas.classify.sources import READERS
    from flowatlas.config import SourceSpec

    fmt = "auto"
    head, _, rest = text.partition(":")
    if rest and head in READERS:
        fmt, text = head, rest
    path, *opts = text.split(",")
    options: dict[str, Any] = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{opt!r} is not key=value", param_hint="SOURCE")
        options[key.strip()] = value.strip()
    return SourceSpec(path, fmt, "", tuple(sorted(options.items())))


@click.group()
def classify() -> None:
    """Compile classification sources into a prefix table and query it.

    See docs/classification.md for the formats, the default taxonomy and the precedence
    (user overrides > exporter/interface rules > prefix lists > ASN -> type > Unknown).
    """


@classify.command("compile")
@click.argument("sources", nargs=-1)
@click.option(
    "--out",
    "-o",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the table (.fatable).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Also compile the [classify] sources of this configuration (first).",
)
@click.option(
    "--network-type",
    "network_types",
    multiple=True,
    help="An extra network type sources may use (repeatable).",
)
@click.option(
    "--strict", is_flag=True, help="Conflicts inside a source are errors, not counted warnings."
)
def compile_cmd(
    sources: tuple[str, ...],
    out: str,
    config_path: str | None,
    network_types: tuple[str, ...],
    strict: bool,
) -> None:
    """Compile SOURCE files into one prefix table.

    SOURCE is [FORMAT:]PATH[,key=value...]: the format is detected when left out, options
    set attributes for every row (network_type=Hosting, org=..., tier=override) or a reader's
    own settings (asnames=FILE for libloc TSV). Formats: `flowatlas classify formats`.
    """
    from flowatlas.classify import build_table
    from flowatlas.config import load_config
    from flowatlas.vocab import NETWORK_TYPES

    specs = []
    base_dir: str | Path = "."
    known = list(NETWORK_TYPES)
    if config_path:
        cfg = load_config(config_path)
        for s in cfg.classify.sources:
            p = cfg.resolve(s.path)
            specs.append(type(s)(str(p), s.format, s.name, s.options))
        known = list(cfg.network_types)
    specs += [parse_source_arg(s) for s in sources]
    if not specs:
        raise InputError("no sources: give SOURCE files or --config with [classify] sources")
    known += [t for t in network_types if t not in known]
    t0 = time.perf_counter()
    table = build_table(specs, base_dir=base_dir, network_types=known, strict=strict)
    compiled_s = time.perf_counter() - t0
    path = table.save(out)
    for src in table.sources:
        click.echo(
            f"  {src['name']}: {src.get('format')} ({src['tier']}), {src['rows']:,} rows"
            + (f", {src['date']}" if src.get("date") else "")
        )
    for w in table.meta.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
    click.echo(
        f"{path}: {table.starts_hi.size:,} intervals, {table.networks.num_rows:,} networks, "
        f"digest {table.digest[:16]}, compiled in {compiled_s:.1f} s"
    )


@classify.command("lookup")
@click.argument("table_path", metavar="TABLE", type=click.Path(exists=True, dir_okay=False))
@click.argument("addresses", nargs=-1, required=True)
@click.option("--exporter", help="Exporter address, to show exporter/interface (link) rules.")
@click.option("--interface", type=int, help="Interface index on --exporter (in or out).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Configuration whose [[links]] rules --exporter/--interface check.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per address.")
def lookup_cmd(
    table_path: str,
    addresses: tuple[str, ...],
    exporter: str | None,
    interface: int | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Classify ADDRESS(es) with TABLE: type, ASN, organisation, what matched and why."""
    from flowatlas.addresses import AddressError, parse_addresses
    from flowatlas.classify.table import PrefixTable

    table = PrefixTable.load(table_path)
    try:
        hi, lo, _ = parse_addresses(list(addresses), source="ADDRESS")
    except AddressError as exc:
        raise InputError(str(exc)) from None
    link = _link_rule(config_path, exporter, interface)
    for text, nid in zip(addresses, table.lookup(hi, lo).tolist(), strict=True):
        d = table.describe(int(nid))
        result = {"address": text, **d, "why": _WHY.get(d.get("tier") or "none", "")}
        if link is not None:
            i, rule = link
            if d.get("tier") in ("override", "override-asn"):
                result["why"] += f"; it also beats the exporter/interface rule links[{i}]"
            else:
                result["network_type"] = rule.network_type
                result["tier"] = "link"
                result["why"] = (
                    f"exporter/interface rule links[{i}] ({rule.exporter} interface {interface}"
                    f"{': ' + rule.description if rule.description else ''}): beats prefix lists "
                    f"and ASN tables (the address alone says {d['network_type']})"
                )
        if as_json:
            click.echo(json.dumps(result, sort_keys=True))
            continue
        asn = f"AS{d['asn']}" if d.get("asn") else "-"
        click.echo(
            f"{text}: {result['network_type']}  {asn}  {d.get('org') or '-'}"
            f"  country {d.get('country') or '-'}  metro {d.get('metro') or '-'}"
        )
        if d.get("source"):
            click.echo(
                f"  matched {d.get('prefix')} in {d['source']} (line {d.get('source_line')});"
                f" type from {d.get('type_source') or '-'}"
            )
        click.echo(f"  why: {result['why']}")


def _link_rule(config_path: str | None, exporter: str | None, interface: int | None):
    """The [[links]] rule (index, rule) matching exporter + interface, if any."""
    if exporter is None and interface is None:
        return None
    if exporter is None or interface is None or config_path is None:
        raise click.UsageError("--exporter and --interface go together, with --config")
    from flowatlas.addresses import parse_addresses
    from flowatlas.config import load_config

    cfg = load_config(config_path)
    want = parse_addresses([exporter], source="--exporter")
    for i, rule in enumerate(cfg.links):
        if not rule.is_interface_link or rule.network_type is None:
            continue  # only links that set a type take part in classification
        got = parse_addresses([rule.exporter])
        same = got[0][0] == want[0][0] and got[1][0] == want[1][0]
        if same and interface in rule.interfaces:
            return i, rule
    return None


@classify.command("info")
@click.argument("table_path", metavar="TABLE", type=click.Path(exists=True, dir_okay=False))
def info_cmd(table_path: str) -> None:
    """Show a table's provenance: sources, dates, hashes, sizes, warnings."""
    from flowatlas.classify.table import PrefixTable

    table = PrefixTable.load(table_path)
    click.echo(json.dumps({**table.provenance(), "stats": table.meta.get("stats")}, indent=1))


@classify.command("formats")
def formats_cmd() -> None:
    """List the source formats compile reads."""
    from flowatlas.classify.sources import READERS

    for name, reader in READERS.items():
        doc = (reader.__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:15s} {doc}")
