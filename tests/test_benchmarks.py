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


def _fake_gz2(root, n=40):
    """A tiny sdss-gz2-bars set: barred galaxies carry a bright elongated bar, unbarred ones not."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from survey_bars.training import realdata

    d = root / realdata.GZ2_DIR / "images"
    d.mkdir(parents=True)
    yy, xx = np.mgrid[:64, :64] - 31.5
    rows = []
    for i in range(n):
        barred = i % 2 == 0
        img = 120 * np.exp(-np.hypot(xx, yy) / 6.0)
        if barred:
            img += 100 * np.exp(-(xx / 10.0) ** 2 - (yy / 2.0) ** 2)
        name = f"sdss_{i:05d}.jpeg"
        Image.fromarray(np.dstack([np.clip(img, 0, 255).astype(np.uint8)] * 3)).save(d / name)
        rows.append({"file": name, "ra": 10.0 + i, "dec": 0.0, "pixel_scale": 0.3, "z": np.nan,
                     "gz2_bar_fraction": 0.9 if barred else 0.0, "gz2_no_bar_fraction": 0.1 if barred else 1.0,
                     "hoyle_bar_length_arcsec": np.nan, "hoyle_bar_length_kpc": np.nan,
                     "hoyle_length_stdev_frac": np.nan, "objid": ""})
    pd.DataFrame(rows).to_csv(root / realdata.GZ2_DIR / "labels.csv", index=False)
    return root


def test_bar_ablation_trains_on_the_training_folds_and_scores_the_test_fold(tmp_path):
    pytest.importorskip("torch")
    from benchmarks import bar_ablation
    from survey_bars.training import realdata

    root = _fake_gz2(tmp_path)
    folds = realdata.load_gz2_bars(root)["fold"]
    res = bar_ablation.run("raw", "skip", epochs=1, seed=0, root=root)
    assert res["n_train"] == int(folds.isin(realdata.TRAIN_FOLDS).sum())
    assert res["n_test"] == int((folds == realdata.TEST_FOLD).sum()) > 0
    assert 0.0 <= res["auc"] <= 1.0 and res["net"] == "skip" and res["input"] == "raw"
    from survey_bars.training.nets import SKIP_ARCH, forward_flops

    assert res["forward_mflop"] == pytest.approx(forward_flops(SKIP_ARCH) / 1e6, rel=0.02)
    with pytest.raises(ValueError, match="--colour needs"):
        bar_ablation.run("frame", "plain", colour=True, root=root)


def test_bar_ablation_says_where_the_data_are_missing(tmp_path, monkeypatch, capsys):
    from benchmarks import bar_ablation

    monkeypatch.setenv("SURVEY_BARS_REAL_DEV", str(tmp_path / "nowhere"))
    assert bar_ablation.main([]) == 2
    assert "SURVEY_BARS_REAL_DEV" in capsys.readouterr().err


def test_head_real_cross_validates_on_the_training_folds(tmp_path):
    pytest.importorskip("torch")
    from benchmarks import head_real
    from survey_bars.testing import tiny_bundle
    from survey_bars.training import realdata

    from .training.test_real_lengths import fake_real_lengths_root

    root = fake_real_lengths_root(tmp_path / "real-dev")
    res = head_real.run(tiny_bundle(), n=40, workdir=str(tmp_path / "sims"), epochs=1, real_epochs=1, mixes=(0, 5),
                        threads=1, root=str(root), p_bar_min=0.0, log=lambda msg: None)
    labels = realdata.load_gz2_bars(root)
    assert res["n_real"] == int(labels["fold"].isin(realdata.TRAIN_FOLDS).sum())  # never the test fold
    assert res["folds"] == [0, 1, 2, 3] and res["n_sim_holdout"] > 0
    assert set(res["results"]) == {"none", "mix=0", "mix=5"}
    for r in res["results"].values():
        assert -1.0 <= r["pearson_r"] <= 1.0 and r["median_rel_err"] >= 0 and r["median_ratio"] > 0
    # with the small-stamp display copies the head trains on more maps, but none of a held-out simulation
    more = head_real.run(tiny_bundle(), n=40, workdir=str(tmp_path / "sims"), epochs=1, real_epochs=1, mixes=(0,),
                         threads=1, root=str(root), p_bar_min=0.0, stamp_copies=True, log=lambda msg: None)
    assert more["stamp_copies"] is True and res["stamp_copies"] is False
    assert more["n_sim_holdout"] == res["n_sim_holdout"]
    assert res["n_sim_train"] < more["n_sim_train"] <= 2 * res["n_sim_train"]
    # with the format copies too: four kinds of input, each scored on its held-out simulations
    every = head_real.run(tiny_bundle(), n=40, workdir=str(tmp_path / "sims"), epochs=1, real_epochs=1, mixes=(0,),
                          threads=1, root=str(root), p_bar_min=0.0, stamp_copies=True, format_copies=True,
                          log=lambda msg: None)
    assert every["format_copies"] is True and every["n_sim_holdout"] == res["n_sim_holdout"]
    assert more["n_sim_train"] < every["n_sim_train"] <= 4 * res["n_sim_train"]
    kinds = {"full_fits", "small_display", "small_fits", "full_display"}
    assert set(every["results"]["none"]["sim_by_input"]) == kinds == set(every["results"]["mix=0"]["sim_by_input"])
    assert all(v["median_ratio"] > 0 for v in every["results"]["mix=0"]["sim_by_input"].values())
    # with linear copies of the real JPEGs: every head also scored on them, and a second cross-validation learns them
    lin = head_real.run(tiny_bundle(), n=40, workdir=str(tmp_path / "sims"), epochs=1, real_epochs=1, mixes=(5,),
                        threads=1, root=str(root), p_bar_min=0.0, linear_copies=1, log=lambda msg: None)
    assert lin["n_real"] == res["n_real"] and lin["n_real_copies"] == res["n_real"] and lin["linear_copies"] == 1
    assert lin["length_frame"] == "measured"  # the build's frame unless --length-frame says otherwise
    assert set(lin["results"]) == {"none", "mix=5", "mix=5+copies"}
    for r in lin["results"].values():
        assert -1.0 <= r["copies_pearson_r"] <= 1.0 and r["copies_median_ratio"] > 0
    assert lin["results"]["mix=5"]["pearson_r"] == pytest.approx(res["results"]["mix=5"]["pearson_r"])  # the JPEGs alone


def test_length_frame_scores_both_frames_on_the_training_folds_and_simulations(tmp_path, monkeypatch):
    from benchmarks import length_frame
    from survey_bars import pipeline
    from survey_bars.testing import tiny_bundle
    from survey_bars.training import realdata

    from .training.test_real_lengths import fake_real_lengths_root

    root = fake_real_lengths_root(tmp_path / "real-dev")
    res = length_frame.run(tiny_bundle(), n=16, softenings=(3.0, 10.0), root=str(root), p_bar_min=0.0, log=lambda msg: None)
    labels = realdata.load_gz2_bars(root)
    train = labels["fold"].isin(realdata.TRAIN_FOLDS) & labels["hoyle_bar_length_arcsec"].notna()
    assert set(res["real"]) == {"measured", "auto s=3", "softened s=3", "softened s=10"} == set(res["sims"])
    assert 0 <= res["real_cut"] <= 1 and 0 <= res["sims_cut"] <= 1
    for kind in ("fits", "jpeg"):
        f = res["real_in_model_frame"][kind]
        assert f["n"] == int(train.sum()) and f["median_px"] > 0 and 0 <= f["longer_than_frame"] <= f["n"]
    assert all(r["n"] == int(train.sum()) for r in res["real"].values())  # every training-fold bar, never fold 4
    assert res["sims"]["measured"]["over_measured_median"] == 1.0 and res["n_sims"] == 16
    assert pipeline.LENGTH_FRAME_SOFTENING == 3.0  # put back


def test_head_real_says_where_the_data_are_missing(tmp_path, monkeypatch, capsys):
    from benchmarks import head_real

    monkeypatch.setenv("SURVEY_BARS_REAL_DEV", str(tmp_path / "nowhere"))
    assert head_real.main([]) == 2
    assert "SURVEY_BARS_REAL_DEV" in capsys.readouterr().err


def test_benchmarks_that_train_say_how_to_install_torch(monkeypatch, capsys):
    import importlib.util

    from benchmarks import common

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    assert common.has_torch("benchmarks.head_real") is False
    assert 'pip install -e ".[train]"' in capsys.readouterr().err


def test_formats_compares_every_length_of_the_same_bars():
    import pandas as pd

    from benchmarks import formats

    def cat(scale):
        return pd.DataFrame({"object_id": ["a", "b", "c"], "status": ["ok", "ok", "ok"], "p_bar": [0.9, 0.8, 0.1],
                             "p_smooth": 0.1, "p_edge_on": 0.0, "p_spiral": 0.5,
                             "bar_length_arcsec": [4.0 * scale, 6.0 * scale, None],
                             "bar_length_moments_arcsec": [5.0 * scale ** 2, 5.0 * scale ** 2, None],
                             "bar_length_direct_arcsec": [3.0, 3.0, 3.0]})

    res = formats.compare(cat(1.0), cat(1.5))
    assert res["n_ok_both"] == 3 and res["n_lengths_both"] == 2 and res["same_bar_decision"] == 1.0
    assert res["length_ratio_median"] == pytest.approx(1.5)
    assert res["moments_length_ratio_median"] == pytest.approx(2.25)
    assert res["direct_length_ratio_median"] == pytest.approx(1.0)
