"""The model bundle format and loader (no torch needed), and the shipped default bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from survey_bars.inference import bundle as bundle_mod
from survey_bars.inference.bundle import (
    DEFAULT_BUNDLE,
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    BundleError,
    list_bundles,
    load_bundle,
    sha256_file,
    write_card,
)
from survey_bars.normalise import NormaliseConfig

REPO = Path(__file__).resolve().parents[2]
HAVE_DEFAULT = (DEFAULT_BUNDLE / "card.json").is_file()


def _card(**over):
    card = {
        "schema_version": SCHEMA_VERSION,
        "name": "test-bundle",
        "version": "0.0",
        "input_shape": [1, 64, 64],
        "preprocessing": NormaliseConfig().to_dict(),
        "inputs": {"image": {"shape": ["B", 1, 64, 64]}},
        "output_names": {"forward": ["probs", "bar_logit", "bar_length_direct"], "saliency": ["grad"]},
        "class_names": ["p_smooth", "p_disc", "p_edge_on", "p_bar", "p_spiral"],
        "training": {"command": "test"},
        "metrics": {"bar_auc_discs": 0.99},
        "files": {},
        "calibration": {},
        "smoothgrad": {"samples": 32, "noise_frac": 0.1},
    }
    card.update(over)
    return card


@pytest.fixture
def fake_bundle(tmp_path):
    """A bundle directory with placeholder graph files (the loader does not parse ONNX)."""
    d = tmp_path / "b"
    d.mkdir()
    (d / "forward.onnx").write_bytes(b"forward-graph-bytes")
    (d / "saliency.onnx").write_bytes(b"saliency-graph-bytes")
    write_card(d, _card())
    return d


def test_write_and_load_round_trip(fake_bundle):
    b = load_bundle(fake_bundle)
    assert b.path == fake_bundle.resolve()
    assert b.card["files"]["forward.onnx"] == sha256_file(fake_bundle / "forward.onnx")
    assert b.preprocessing == NormaliseConfig()
    assert b.class_names[3] == "p_bar"
    assert b.calibration == {} and b.smoothgrad["samples"] == 32
    assert b.input_shape == (1, 64, 64)
    # the card path itself is accepted too
    assert load_bundle(fake_bundle / "card.json").path == b.path
    assert not list(fake_bundle.glob(".card-*")), "temporary card left behind"


def test_write_card_records_new_hash(fake_bundle):
    (fake_bundle / "saliency.onnx").write_bytes(b"changed")
    with pytest.raises(BundleError, match="saliency.onnx is corrupt"):
        load_bundle(fake_bundle)
    card = json.loads((fake_bundle / "card.json").read_text())
    card["calibration"] = {"moments": {"slope": 1.1, "intercept": 0.2}}
    write_card(fake_bundle, card)
    b = load_bundle(fake_bundle)
    assert b.calibration["moments"]["slope"] == 1.1


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="does not exist.*survey-bars models"):
        load_bundle(tmp_path / "nope")


def test_not_a_directory(tmp_path):
    f = tmp_path / "file.onnx"
    f.write_bytes(b"x")
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(f)


def test_missing_card(tmp_path):
    with pytest.raises(BundleError, match="has no card.json"):
        load_bundle(tmp_path)


@pytest.mark.parametrize("fname", ["forward.onnx", "saliency.onnx"])
def test_missing_graph(fake_bundle, fname):
    (fake_bundle / fname).unlink()
    with pytest.raises(BundleError, match=f"{fname} is missing.*re-export"):
        load_bundle(fake_bundle)


def test_corrupt_graph_hash_mismatch(fake_bundle):
    p = fake_bundle / "forward.onnx"
    p.write_bytes(p.read_bytes()[:-1] + b"X")
    with pytest.raises(BundleError, match="forward.onnx is corrupt or was changed.*sha256"):
        load_bundle(fake_bundle)
    # without verification the (deliberately) changed file loads
    assert load_bundle(fake_bundle, verify=False).forward_path == p.resolve()


@pytest.mark.parametrize("version,match", [(2, "newer survey-bars"), (0, "older survey-bars"), ("1", "not an integer"), (None, "not an integer")])
def test_wrong_schema_version(fake_bundle, version, match):
    card = json.loads((fake_bundle / "card.json").read_text())
    card["schema_version"] = version
    (fake_bundle / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match=match):
        load_bundle(fake_bundle)


def test_bad_json(fake_bundle):
    (fake_bundle / "card.json").write_text('{"schema_version": 1, "name": ')
    with pytest.raises(BundleError, match="not valid JSON.*line 1"):
        load_bundle(fake_bundle)
    (fake_bundle / "card.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="JSON list, not an object"):
        load_bundle(fake_bundle)


@pytest.mark.parametrize("key", ["class_names", "files", "preprocessing", "metrics"])
def test_missing_key(fake_bundle, key):
    card = json.loads((fake_bundle / "card.json").read_text())
    del card[key]
    (fake_bundle / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match=f"lacks the keys.*{key}"):
        load_bundle(fake_bundle)


def test_incompatible_preprocessing(fake_bundle):
    card = json.loads((fake_bundle / "card.json").read_text())
    card["preprocessing"]["new_knob"] = 3
    (fake_bundle / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="preprocessing parameters are unusable.*Upgrade"):
        load_bundle(fake_bundle)
    card["preprocessing"] = NormaliseConfig(size=32).to_dict()
    (fake_bundle / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="frame size 32 differs"):
        load_bundle(fake_bundle)


def test_required_keys_are_written(fake_bundle):
    card = json.loads((fake_bundle / "card.json").read_text())
    assert set(REQUIRED_KEYS) <= set(card)
    assert card["schema_version"] == SCHEMA_VERSION


def test_list_bundles_and_cli(fake_bundle, tmp_path, capsys):
    other = tmp_path / "many"
    (other / "x").mkdir(parents=True)
    for f in ("forward.onnx", "saliency.onnx"):
        (other / "x" / f).write_bytes(f.encode())
    write_card(other / "x", _card(name="second"))
    names = {b.name for b in list_bundles([fake_bundle, other])}
    assert {"test-bundle", "second"} <= names

    import argparse

    parser = argparse.ArgumentParser()
    bundle_mod.configure_parser(parser)
    rc = bundle_mod.run_cli(parser.parse_args(["--json", str(fake_bundle), str(other)]))
    doc = json.loads(capsys.readouterr().out)
    listed = {e["card"]["name"] for e in doc["bundles"]}
    assert {"test-bundle", "second"} <= listed
    assert rc == (1 if doc["errors"] else 0)

    (fake_bundle / "forward.onnx").write_bytes(b"tampered")
    rc = bundle_mod.run_cli(parser.parse_args([str(fake_bundle)]))
    err = capsys.readouterr().err
    assert rc == 1 and "NOT LOADABLE" in err and "corrupt" in err


# ---------------------------------------------------------------------------------------------
# the shipped default bundle, on the inference path with torch made unimportable

_NO_TORCH = r"""
import sys, pickle
sys.modules["torch"] = None          # any `import torch` now raises ImportError
def _no_pickle(*a, **k):
    raise RuntimeError("pickle used on the bundle load path")
pickle.load = pickle.loads = _no_pickle
pickle.Unpickler = _no_pickle
import json
import numpy as np
import onnxruntime as ort
from survey_bars.inference.bundle import load_bundle
from survey_bars.normalise import normalise
b = load_bundle(sys.argv[1] if len(sys.argv) > 1 else None)
so = ort.SessionOptions(); so.intra_op_num_threads = 1
fwd = ort.InferenceSession(str(b.forward_path), so, providers=["CPUExecutionProvider"])
sal = ort.InferenceSession(str(b.saliency_path), so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:100, 0:100]
img = 50 * np.exp(-np.hypot(xx - 50, yy - 50) / 6) + rng.normal(0, 0.1, (100, 100))
x = np.stack([normalise(img, b.preprocessing).image] * 3)[:, None].astype(np.float32)
probs, logit, length = fwd.run(["probs", "bar_logit", "bar_length_direct"], {"image": x})
(grad,) = sal.run(["grad"], {"image": x})
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print(json.dumps({"probs": probs.shape, "grad": grad.shape, "p": probs[0].tolist(),
                  "finite": bool(np.isfinite(grad).all() and np.isfinite(probs).all()),
                  "len": float(length[0])}))
"""


def _run_no_torch(path=None):
    cmd = [sys.executable, "-c", _NO_TORCH] + ([str(path)] if path else [])
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not HAVE_DEFAULT, reason="the default bundle has not been built yet")
def test_default_bundle_runs_without_torch():
    res = _run_no_torch()
    assert res["probs"] == [3, 5] and res["grad"] == [3, 1, 64, 64] and res["finite"]
    p = res["p"]
    assert all(0 <= v <= 1 for v in p) and abs(p[0] + p[1] - 1) < 1e-5
    assert res["len"] > 0


@pytest.mark.skipif(not HAVE_DEFAULT, reason="the default bundle has not been built yet")
def test_forward_runs_in_bounded_calls():
    """``ModelRuntime.forward`` splits a batch into calls of ``forward_max_batch`` frames (the
    flip-averaging graph holds four copies of each), with the same outputs as one call."""
    from survey_bars.inference.runtime import ModelRuntime

    rt = ModelRuntime(load_bundle())
    x = np.random.default_rng(1).normal(0.2, 0.4, size=(37, 64, 64)).astype(np.float32)
    calls, session = [], rt._fwd

    class Spy:
        def run(self, names, feeds):
            calls.append(len(feeds["image"]))
            return session.run(names, feeds)

    rt._fwd = Spy()
    split = rt.forward(x)
    assert calls == [16, 16, 5]
    rt.forward_max_batch = 64
    whole = rt.forward(x)
    assert calls[3:] == [37]
    for k in ("probs", "bar_logit", "bar_length_direct"):
        assert split[k].shape == whole[k].shape
        np.testing.assert_allclose(split[k], whole[k], rtol=1e-5, atol=1e-5)
    assert rt.forward(x[:0])["probs"].shape == (0, 5)


@pytest.mark.skipif(not HAVE_DEFAULT, reason="the default bundle has not been built yet")
def test_default_bundle_card():
    b = load_bundle()
    assert b.name and b.version
    assert b.class_names == ["p_smooth", "p_disc", "p_edge_on", "p_bar", "p_spiral"]
    m = b.card["metrics"]
    assert m["ece_bar"] <= 0.05 and m["ece_morph"] <= 0.05 and m["ece_spiral"] <= 0.05
    assert "command" in b.card["training"] and "wall_time_s" in b.card["training"]
    total = sum(os.path.getsize(b.path / f) for f in ("forward.onnx", "saliency.onnx", "card.json"))
    assert total < 5e6
    assert np.isfinite(m["direct_length_pearson_r"])


@pytest.mark.skipif(not HAVE_DEFAULT, reason="the default bundle has not been built yet")
def test_default_bundle_bar_auc_floor():
    """Regression guard on the shipped bundle's held-out bar ROC AUC, and on where its real data came from.

    Bundle 4.0 trains on simulations, their small-stamp and display copies and the real-dev
    training folds. The card's ``metrics`` come from the training run's test split of that mix
    (5926 images, real JPEGs among them: 0.949 over all, 0.929 among discs); ``evaluation`` scores
    the exported forward graph on 2000 fresh simulations of the training survey mix (1433 discs:
    0.954, 95 % interval 0.943-0.963). Issue 3's >= 0.97 on simulations was met by the
    simulation-only bundle 3.0 (0.975) and is not by 4.0: the price of the real galaxies
    (``benchmarks/RESULTS.md``). ``survey-bars models`` shows both.
    """
    from survey_bars.training import realdata

    b = load_bundle()
    m = b.card["metrics"]
    assert m["bar_auc_discs"] >= 0.92, m["bar_auc_discs"]
    assert m["bar_auc"] >= 0.94, m["bar_auc"]
    ev = b.card["evaluation"]
    assert ev["data"]["simulated"] and ev["data"]["seed"] != b.card["training"]["seed"] and ev["metrics"]["n_discs"] >= 1000
    assert ev["metrics"]["bar_auc_discs"] >= 0.95, ev["metrics"]
    lo, hi = ev["metrics"]["bar_auc_discs_ci95"]
    assert lo <= ev["metrics"]["bar_auc_discs"] <= hi and hi - lo < 0.025
    assert f"evaluation ({ev['metrics']['n']} galaxies): bar_auc_discs=" in bundle_mod._summary(b)
    real = b.card["training"].get("real")
    if real is not None:  # the real test fold never trained or calibrated the shipped bundle
        assert real["split"] == realdata.SPLIT_ID and realdata.TEST_FOLD not in real["folds"]
        for method, cal in b.card["calibration"].items():
            if "real" in cal:
                assert cal["real"]["split"] == realdata.SPLIT_ID and realdata.TEST_FOLD not in cal["real"]["folds"], method


def test_length_definition_defaults_to_formal_and_refuses_unknown_names():
    """A card without ``length_definition`` (bundle 3.0) measures formal lengths; 'visible' is the half-peak extent."""
    from survey_bars.inference.bundle import VISIBLE_BAR_FRACTION, length_definition

    assert length_definition({}) == {"name": "formal", "fraction_of_formal": 1.0}
    visible = length_definition({"length_definition": {"name": "visible", "how": "..."}})
    assert visible == {"name": "visible", "fraction_of_formal": VISIBLE_BAR_FRACTION}
    m = VISIBLE_BAR_FRACTION  # the Ferrers n = 2 profile (1 - m^2)^2 falls to half its peak there
    assert (1 - m**2) ** 2 == pytest.approx(0.5) and m == pytest.approx(0.541, abs=5e-4)
    with pytest.raises(BundleError, match="'isophotal' is not one of"):
        length_definition({"length_definition": {"name": "isophotal"}})
