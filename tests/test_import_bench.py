"""The import benchmark runs (a small size, so it cannot rot unnoticed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from flowatlas.testing import REPO_ROOT, need_data, need_tools


@pytest.mark.tools
@pytest.mark.shared_data
def test_bench_import_smoke(tmp_path, capsys):
    need_tools("nfdump")
    need_data("flow_exports/generated_nfcapd")
    spec = importlib.util.spec_from_file_location(
        "bench_import", Path(REPO_ROOT) / "bench" / "bench_import.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "results.md"
    argv = ["--records", "5000", "--other-records", "2000", "--files", "2", "--repeat", "1"]
    argv.append("--skip-slow")
    assert bench.main([*argv, "--results", str(results)]) == 0
    text = results.read_text()
    assert "| nfcapd: flowatlas import FILE -j 1 (to Parquet)" in text
    assert "| csv: python -c pyarrow.csv.read_csv(FILE)" in text
    assert "| nfcapd: native reader alone (python -c, to Arrow)" in text
    assert "| goflow2-pb: flowatlas import FILE -j 1 (to Parquet)" in text
    assert "| csv: import_sources(FILE), to Parquet (in-process, start-up excluded)" in text
    assert "nfcapd files: -j 2 takes" in text
    assert "## Import throughput" in text
