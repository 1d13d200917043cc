"""Small operator-facing fixes: top-list order, `classify formats` text, `import --help`."""

from __future__ import annotations

import inspect as pyinspect

import pytest

from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import open_cube
from flowatlas.synth import synthesize


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    synthesize(root / "archive", records=20_000, days=4, seed=2)
    build_cube(root / "archive", root / "cube", workers=0)
    return open_cube(root / "cube")


def test_top_ips_in_report_order_unknown_last_and_named(cube):
    df = cube.top_ips(by=("region", "network_type"))
    assert not df["org"].isna().any()
    assert (df.loc[df["asn"] == 0, "org"] == "unknown").all() and (df["asn"] == 0).any()
    types = [t for t in cube.network_types if t != "Unknown"] + ["Unknown"]
    regions = [r for r in cube.regions if r != "Unknown"] + ["Unknown"]
    seen = list(dict.fromkeys(zip(df["region"], df["network_type"], strict=True)))
    assert seen == sorted(seen, key=lambda k: (regions.index(k[0]), types.index(k[1])))
    assert seen[0][1] != "Unknown" and "Unknown" in {t for _, t in seen}
    for _, g in df.groupby(["region", "network_type"], observed=True):
        assert g["rank"].tolist() == sorted(g["rank"].tolist())
        assert g["bytes"].is_monotonic_decreasing
    # every row is still there: the order changed, nothing else
    raw = cube._cache["top_ips.parquet"]
    assert len(df) == ((raw["rollup"] == "all") & (raw["grouping"] == "region,network_type")).sum()


def test_top_asns_name_unknown_organisations(cube):
    df = cube.top_asns(by=("network_type",))
    assert not df["org"].isna().any()
    assert df["network_type"].iloc[0] != "Unknown"


def test_classify_formats_gives_whole_sentences(capsys):
    from flowatlas.classify.commands import format_summary, formats_cmd
    from flowatlas.classify.sources import READERS

    formats_cmd.main([], standalone_mode=False)
    out = capsys.readouterr().out
    joined = " ".join(out.split())
    for name, reader in READERS.items():
        summary = format_summary(reader.__doc__)
        first_par = pyinspect.cleandoc(reader.__doc__).split("\n\n")[0]
        assert summary == " ".join(first_par.split())
        assert summary.endswith((".", ")")), (name, summary)
        assert f"{name} {summary}" in joined, name  # printed whole, wrapped, not cut


def test_import_help_lists_every_format(capsys):
    from flowatlas.cli import main
    from flowatlas.io.commands import AUTO, FORMAT_CHOICES

    assert main(["import", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    epilog = text.split("Formats:", 1)[1]
    for fmt in FORMAT_CHOICES:
        if fmt != AUTO:
            assert fmt in epilog, fmt
    assert "netflow-payload" in epilog
