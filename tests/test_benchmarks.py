"""The accuracy benchmark can score a candidate bundle without overwriting the recorded results."""

import json

import pytest

from benchmarks import accuracy, common


@pytest.mark.slow
def test_accuracy_out_json_leaves_the_recorded_results_alone(tmp_path, monkeypatch):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n")
    monkeypatch.setattr(common, "RESULTS_MD", results_md)
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(accuracy, "REAL", tmp_path / "no-real-images")
    out = tmp_path / "candidate.json"
    accuracy.main(["--n", "24", "--isophote-n", "2", "--sweep", "", "--workdir", str(tmp_path / "sims"),
                   "--out-json", str(out)])
    data = json.loads(out.read_text())
    assert data["n"] > 0 and "default" in data["methods"] and "direct" in data["methods"]
    assert data["command"].endswith(f"--out-json {out}")
    assert out.with_suffix(".png").is_file()
    assert results_md.read_text() == "# Benchmark results\n"
    assert not (tmp_path / "results").exists()
