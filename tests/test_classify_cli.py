"""`flowatlas classify compile | lookup | info | formats` end to end on small files."""

from __future__ import annotations

import json

from click.testing import CliRunner

from flowatlas.classify.commands import classify, parse_source_arg
from flowatlas.classify.table import PrefixTable
from flowatlas.cli import main


def _files(tmp_path):
    routes = tmp_path / "routes.csv"
    routes.write_text("prefix,asn,org\n10.0.0.0/8,64500,Routed\n2001:db8::/32,64501,Six\n")
    cloud = tmp_path / "cloud.txt"
    cloud.write_text("10.1.0.0/16\n")
    over = tmp_path / "over.toml"
    over.write_text('[[prefix]]\nprefix = "10.1.1.0/24"\nnetwork_type = "CDN"\n')
    cfg = tmp_path / "flowatlas.toml"
    cfg.write_text(
        '[[links]]\nexporter = "192.0.2.1"\ninterfaces = [7]\ndescription = "fibre to DC2"\n'
    )
    return routes, cloud, over, cfg


def test_source_argument_syntax() -> None:
    s = parse_source_arg("cidr-list:dc.txt,network_type=Hosting,org=X Y")
    assert (s.path, s.format, dict(s.options)) == (
        "dc.txt",
        "cidr-list",
        {"network_type": "Hosting", "org": "X Y"},
    )
    assert parse_source_arg("c:/data/x.csv").format == "auto"  # not a known format name


def test_compile_then_lookup(tmp_path) -> None:
    routes, cloud, over, cfg = _files(tmp_path)
    out = tmp_path / "t.fatable"
    runner = CliRunner()
    res = runner.invoke(
        classify,
        [
            "compile",
            str(routes),
            f"cidr-list:{cloud},network_type=Hyperscaler",
            str(over),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "intervals" in res.output and out.exists()
    table = PrefixTable.load(out)
    assert [s["tier"] for s in table.sources] == ["override", "prefix", "prefix"]

    res = runner.invoke(classify, ["lookup", str(out), "10.1.1.1", "10.1.2.3", "10.9.9.9", "::1"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "10.1.1.1: CDN" in text and "user override (prefix rule)" in text
    assert "10.1.2.3: Hyperscaler  AS64500  Routed" in text and "matched 10.1.0.0/16" in text
    assert "10.9.9.9: Unknown  AS64500" in text and "::1: Unknown" in text

    res = runner.invoke(
        classify,
        [
            "lookup",
            str(out),
            "10.1.2.3",
            "10.1.1.1",
            "--exporter",
            "192.0.2.1",
            "--interface",
            "7",
            "--config",
            str(cfg),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    a, b = (json.loads(x) for x in res.output.splitlines())
    assert (a["network_type"], a["tier"]) == ("Migration", "link")
    assert "exporter/interface rule links[0]" in a["why"] and "says Hyperscaler" in a["why"]
    assert b["network_type"] == "CDN" and "beats the exporter/interface rule" in b["why"]

    res = runner.invoke(classify, ["info", str(out)])
    assert res.exit_code == 0 and json.loads(res.output)["digest"] == table.digest
    res = runner.invoke(classify, ["formats"])
    assert "libloc" in res.output and "bgptools-asns" in res.output


def test_same_sources_give_the_same_bytes(tmp_path) -> None:
    routes, cloud, over, _ = _files(tmp_path)
    args = [str(routes), f"cidr-list:{cloud},network_type=Hosting", str(over)]
    for name in ("a", "b"):
        assert main(["classify", "compile", *args, "--out", str(tmp_path / f"{name}.fatable")]) == 0
    assert (tmp_path / "a.fatable").read_bytes() == (tmp_path / "b.fatable").read_bytes()


def test_bad_input_is_one_line_error(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("10.0.0.0/8\n10.0.0.0/33\n")
    code = main(["classify", "compile", f"cidr-list:{bad}", "--out", str(tmp_path / "x.fatable")])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.txt: line 2: not a CIDR prefix" in err and err.count("\n") == 1
    assert main(["classify", "compile", "--out", str(tmp_path / "y.fatable")]) == 2


def test_load_table_from_config_sources_and_from_a_compiled_file(tmp_path) -> None:
    from flowatlas.classify import load_table
    from flowatlas.config import load_config

    _files(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[classify]\nnetwork_types = ["Partner"]\n'
        '[[classify.sources]]\npath = "cloud.txt"\nformat = "cidr-list"\n'
        'network_type = "Partner"\norg = "Pals"\n'
        '[[classify.sources]]\npath = "routes.csv"\n'
    )
    table = load_table(load_config(cfg))
    codes = table.type_codes(load_config(cfg).network_types)
    assert len(codes) == table.networks.num_rows + 1
    from flowatlas.addresses import parse_addresses

    hi, lo, _ = parse_addresses(["10.1.0.1"])
    d = table.describe(int(table.lookup(hi, lo)[0]))
    assert (d["network_type"], d["org"], d["asn"]) == ("Partner", "Pals", 64500)
    table.save(tmp_path / "saved.fatable")
    (tmp_path / "d.toml").write_text('[classify]\ntable = "saved.fatable"\n')
    again = load_table(load_config(tmp_path / "d.toml"))
    assert again.digest == table.digest and again.provenance()["sources"] == table.sources
