"""``survey-bars evaluate``: scoring the shipped ONNX forward graph on labelled cutouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from survey_bars.cli import main
from survey_bars.inference.bundle import DEFAULT_BUNDLE, load_bundle
from survey_bars.training.evaluate import evaluate_bundle, score_forward
from survey_bars.simulate import simulate

NAMES = ["p_smooth", "p_disc", "p_edge_on", "p_bar", "p_spiral"]


def _labels(cls, has_bar, length=None):
    from survey_bars.training.data import CLASS_MAP

    n = len(cls)
    return pd.DataFrame({"class": cls, "morph": [CLASS_MAP[c] for c in cls], "has_bar": np.asarray(has_bar, float),
                         "has_spiral": np.zeros(n), "bar_length_arcsec": np.full(n, np.nan) if length is None else length})


def test_score_forward_rewards_right_answers_and_punishes_wrong_ones():
    rng = np.random.default_rng(0)
    cls = rng.choice(["smooth", "disc", "barred", "edge_on"], size=400)
    bar = (cls == "barred").astype(float)
    length = np.where(bar > 0, rng.uniform(3, 20, 400), np.nan)
    p = np.zeros((400, 5))
    p[:, 0] = cls == "smooth"
    p[:, 1] = cls != "smooth"
    p[:, 2] = cls == "edge_on"
    p[:, 3] = np.where(bar > 0, 0.8, 0.2) + rng.uniform(-0.1, 0.1, 400)
    px = np.full(400, 0.5)
    good = score_forward(p, NAMES, length / 0.5, _labels(cls, bar, length), px)
    assert good["morph_accuracy"] == 1.0
    assert good["bar_auc"] == 1.0 and good["bar_auc_discs"] == 1.0
    assert good["bar_auc_discs_ci95"] == [1.0, 1.0]
    assert good["n_discs"] == int(np.isin(cls, ["disc", "barred"]).sum())
    assert good["direct_length_median_rel_err"] == 0.0 and good["direct_length_pearson_r"] == pytest.approx(1.0)
    # the bar scores reversed: the AUC flips; a 2x length error shows as 100 % relative error
    p[:, 3] = 1 - p[:, 3]
    bad = score_forward(p, NAMES, 2 * length / 0.5, _labels(cls, bar, length), px)
    assert bad["bar_auc"] == 0.0 and bad["bar_auc_discs_ci95"][1] < 0.05
    assert bad["direct_length_median_rel_err"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="p_spiral"):
        score_forward(p[:, :4], NAMES[:4], length, _labels(cls, bar, length), px)


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval-sims")
    simulate(d, 48, survey="mixed", seed=4242)
    return d


def test_evaluate_default_bundle_on_fresh_simulations(sims, tmp_path):
    model = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, model)
    res = evaluate_bundle(str(model), n=48, seed=4242, workdir=str(sims), write=True)
    m = res["metrics"]
    assert res["data"] == {"simulated": True, "n": 48, "seed": 4242, "survey": "mixed"}
    assert m["n"] == 48 and res["n_unusable"] == 0
    assert m["n_discs"] > 0 and 0.5 < m["bar_auc"] <= 1.0 and 0.8 < m["morph_accuracy"] <= 1.0
    lo, hi = m["bar_auc_discs_ci95"]
    assert lo <= m["bar_auc_discs"] <= hi
    # recorded in the card; the ONNX files and their hashes are untouched, so the bundle still loads
    card = load_bundle(model).card
    assert card["evaluation"]["metrics"] == m
    assert card["files"] == load_bundle(DEFAULT_BUNDLE).card["files"]


def test_evaluate_on_a_labelled_directory_matches_the_simulated_route(sims):
    res = evaluate_bundle(None, [str(sims)])
    assert res["data"]["simulated"] is False
    again = evaluate_bundle(None, n=48, seed=4242, workdir=str(sims))
    assert res["metrics"] == again["metrics"]


def test_evaluate_refuses_the_training_seed_and_says_so(capsys):
    seed = load_bundle(DEFAULT_BUNDLE).card["training"]["seed"]
    with pytest.raises(ValueError, match="training seed"):
        evaluate_bundle(None, n=10, seed=seed)
    assert main(["evaluate", "-n", "10", "--seed", str(seed)]) == 2
    assert "training seed" in capsys.readouterr().err


def test_evaluate_cli_prints_json(sims, capsys):
    assert main(["evaluate", "--data", str(sims), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["n"] == 48


def test_evaluate_runs_without_torch(sims):
    import subprocess
    import sys

    # a finder that refuses torch, as on a machine without it (sys.modules['torch'] = None would
    # break scipy.stats, which probes sys.modules for array libraries)
    code = ("import sys\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('torch is blocked in this test')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from survey_bars.training.evaluate import evaluate_bundle\n"
            f"r = evaluate_bundle(None, [{str(sims)!r}])\n"
            "assert 'torch' not in sys.modules\n"
            "print(r['metrics']['n'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "48"


def test_evaluate_with_a_user_label_table(sims, tmp_path):
    """Labels as a user would have them: a CSV with file names and classes only."""
    t = pd.read_parquet(sims / "truth.parquet")
    csv = tmp_path / "labels.csv"
    t[["file", "class"]].to_csv(csv, index=False)
    res = evaluate_bundle(None, [str(sims)], labels=str(csv))
    m = res["metrics"]
    assert m["n"] == len(t) and m["n_barred_discs"] == int((t["class"] == "barred").sum())
    assert "bar_auc_discs" in m and "direct_length_n" not in m and "spiral_auc" not in m
    assert res["data"]["labels"] == str(csv)


def test_score_forward_without_classes_counts_every_bar_label_as_a_disc():
    rng = np.random.default_rng(2)
    bar = rng.integers(0, 2, 50).astype(float)
    p = np.zeros((50, 5))
    p[:, 1] = 1.0
    p[:, 3] = bar * 0.6 + rng.uniform(0, 0.5, 50)
    labels = pd.DataFrame({"class": [""] * 50, "morph": -np.ones(50, int), "has_bar": bar, "has_spiral": np.nan,
                           "bar_length_arcsec": np.nan})
    s = score_forward(p, NAMES, np.ones(50), labels, np.ones(50))
    assert s["n_discs"] == 50 and s["bar_auc_discs"] == s["bar_auc"]
    assert "morph_accuracy" not in s and "direct_length_pearson_r" not in s
