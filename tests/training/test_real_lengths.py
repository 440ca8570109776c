"""The length head learns the volunteers' lengths of the real training folds, and is calibrated on another."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from survey_bars.inference.bundle import load_bundle
from survey_bars.inference.runtime import ModelRuntime
from survey_bars.io.inputs import InputItem
from survey_bars.pipeline import RunOptions, process_items
from survey_bars.testing import tiny_bundle
from survey_bars.training import realdata
from survey_bars.training.calibrate import calibrate_head, calibrate_head_errors, calibrate_real, real_length_maps
from survey_bars.training.head import LengthHead, train_head


def _objids_by_fold(per_fold):
    """SDSS-like objids, ``per_fold[k]`` of them in each fold ``k`` of the real-dev split."""
    out, want, i = [], dict(per_fold), 0
    while any(want.values()):
        objid = str(587741709414000000 + i)
        k = realdata.fold_of(realdata.split_key(objid, ""))
        if want.get(k, 0):
            out.append((objid, k))
            want[k] -= 1
        i += 1
    return out


def fake_real_lengths_root(root):
    """A small real-dev directory in ``root``: JPEG stamps of barred discs with volunteer lengths in every fold."""
    from PIL import Image

    images = root / realdata.GZ2_DIR / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:64, 0:64] - 31.5
    rows = []
    for i, (objid, _) in enumerate(_objids_by_fold({0: 9, 1: 9, 2: 9, 3: 8, 4: 4})):
        half, t = rng.uniform(4, 12), rng.uniform(0, np.pi)
        u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
        img = np.exp(-np.hypot(x, y) / 8.0) + 0.8 * np.exp(-(np.clip(np.abs(u) - half, 0, None) ** 2 + v**2) / 4.0)
        rgb = np.clip(255 * img / img.max() + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        name = f"sdss_{i:05d}.jpeg"
        Image.fromarray(np.stack([rgb] * 3, axis=-1)).save(images / name, quality=90)
        rows.append({"file": name, "ra": 150.0, "dec": 2.0, "pixel_scale": 0.3, "z": 0.05, "gz2_bar_fraction": 0.8,
                     "gz2_no_bar_fraction": 0.2, "hoyle_bar_length_arcsec": 2 * half * 0.3, "hoyle_bar_length_kpc": np.nan,
                     "hoyle_length_stdev_frac": 0.1, "objid": objid})
    pd.DataFrame(rows).to_csv(root / realdata.GZ2_DIR / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    return fake_real_lengths_root(tmp_path_factory.mktemp("real-dev"))


def test_real_length_maps_are_the_volunteer_lengths_in_model_pixels(real_root):
    rt = ModelRuntime(load_bundle(tiny_bundle()), threads=1)
    maps, lengths, ids = real_length_maps(rt, real_root, (0, 1, 2))
    labels = realdata.load_gz2_bars(real_root)
    want = labels[labels["fold"].isin([0, 1, 2])]
    assert sorted(ids) == sorted(want["object_id"].astype(str))
    assert maps.shape == (27, 64, 64) and np.all(np.isfinite(maps))
    # each length is the volunteer's arcsec over the frame's arcsec per model pixel (0.3" x the resample scale)
    want = want.set_index(want["object_id"].astype(str)).loc[ids]
    items = [InputItem(file=f, object_id=o, pixel_scale=0.3) for f, o in zip(want["file"], ids)]
    cat = process_items(items, RunOptions(p_bar_min=0.0), runtime=rt).to_pandas()
    np.testing.assert_allclose(lengths, want["hoyle_bar_length_arcsec"].to_numpy(float) / (0.3 * cat["resample_scale"].to_numpy(float)),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="test fold"):
        real_length_maps(rt, real_root, (3, realdata.TEST_FOLD))


def test_real_length_maps_with_linear_copies(real_root):
    """Each bar also goes through as linear FITS copies: its id again, and its length over the copy's own frame."""
    from survey_bars.training.data import linear_copy_settings

    rt = ModelRuntime(load_bundle(tiny_bundle()), threads=1)
    maps0, lengths0, ids0 = real_length_maps(rt, real_root, (0, 1))
    maps, lengths, ids = real_length_maps(rt, real_root, (0, 1), linear_copies=2, seed=4)
    n = len(ids0)
    assert maps.shape == (3 * n, 64, 64) and np.all(np.isfinite(maps))
    np.testing.assert_array_equal(maps[:n], maps0)  # the JPEGs' maps first, as without copies
    np.testing.assert_array_equal(lengths[:n], lengths0)
    assert ids[:n] == ids0 and sorted(ids[n:]) == sorted(ids0 * 2)
    assert np.all(lengths > 0) and not np.allclose(lengths[n:], np.repeat(lengths0, 2))  # other frames, other scales
    # the same copies for the same seed
    again = real_length_maps(rt, real_root, (0, 1), linear_copies=2, seed=4, return_is_copy=True)
    np.testing.assert_array_equal(again[0], maps)
    np.testing.assert_array_equal(again[3], np.arange(3 * n) >= n)  # which maps are the copies'
    assert real_length_maps(rt, real_root, (0, 1), return_is_copy=True)[3].tolist() == [False] * n
    assert linear_copy_settings(4, 0, 0) != linear_copy_settings(4, 0, 1)
    # in the pipeline's softened length frame: the JPEGs' maps unchanged, the copies' frames wider
    soft, soft_len, soft_ids = real_length_maps(rt, real_root, (0, 1), linear_copies=2, seed=4, length_frame="softened")
    assert soft_ids == ids
    np.testing.assert_array_equal(soft[:n], maps0)
    np.testing.assert_array_equal(soft_len[:n], lengths0)
    assert np.all(soft_len[n:] <= lengths[n:] * (1 + 1e-9)) and np.any(soft_len[n:] < 0.9 * lengths[n:])


def test_calibrate_cli_real_linear_copies_need_real_lengths(tmp_path, capsys):
    from survey_bars.cli import main

    shutil.copytree(tiny_bundle(), tmp_path / "bundle")
    assert main(["calibrate", "--model", str(tmp_path / "bundle"), "--method", "head", "--real-linear-copies", "2"]) == 2
    assert "--real-linear-copies goes with --real-lengths" in capsys.readouterr().err


def test_train_head_from_init_fine_tunes_a_copy():
    rng = np.random.default_rng(0)
    maps = rng.random((24, 64, 64)).astype(np.float32)
    lengths = rng.uniform(5, 30, 24)
    first = train_head(maps, lengths, epochs=1, seed=0)
    before = {k: v.clone() for k, v in first.state_dict().items()}
    tuned = train_head(maps, 2 * lengths, epochs=2, seed=1, init=first)
    assert isinstance(tuned, LengthHead) and tuned is not first
    for k, v in first.state_dict().items():  # the initial head is left as it was
        assert (v == before[k]).all(), k
    assert float(tuned.offset) == pytest.approx(float(first.offset))  # it keeps the offset it started from
    changed = [k for k, v in tuned.state_dict().items() if v.dtype.is_floating_point and not (v == before[k]).all()]
    assert changed


def test_head_fine_tuned_on_real_folds_is_calibrated_on_the_fold_it_never_saw(real_root, tmp_path, monkeypatch):
    shutil.copytree(tiny_bundle(), tmp_path / "bundle")
    b = str(tmp_path / "bundle")
    rec = calibrate_head(b, n=40, seed=77, workdir=str(tmp_path / "sims"), epochs=1, threads=1, holdout_frac=0.25,
                         p_bar_min=0.0, log=lambda msg: None, real_root=str(real_root), real_epochs=1, real_sims=8)
    rt = rec["real_training"]
    assert rt["folds"] == list(realdata.LENGTH_TRAIN_FOLDS) == [0, 1, 2]
    assert rt["n_bars"] == 27 and rt["n_simulated_maps"] <= 8 and rt["simulated_length_scale"] > 0
    assert rt["split"] == realdata.SPLIT_ID
    assert load_bundle(b).card["calibration"]["head"]["real_training"] == rt
    # the real scale and uncertainty come from fold 3, which the head did not learn from
    real = calibrate_real(b, str(real_root), method="head", min_bars=5)
    assert real["folds"] == [3] and real["n_bars"] == 8
    card = load_bundle(b).card["calibration"]["head"]
    assert card["real"]["folds"] == [3] and card["real_training"] == rt  # the fit keeps the training record
    # the head's errors on simulations compare it with their truth in the units it learned
    import survey_bars.training.calibrate as cal

    seen = {}
    real_errors = cal._head_errors

    def spy(df, true):
        seen["ratio"] = np.asarray(true, float) / df["true_length_model"].to_numpy(float)
        return real_errors(df, true)

    monkeypatch.setattr(cal, "_head_errors", spy)
    calibrate_head_errors(b, n=40, seed=78, workdir=str(tmp_path / "err-sims"), threads=1, p_bar_min=0.0)
    np.testing.assert_allclose(seen["ratio"], rt["simulated_length_scale"])
    with pytest.raises(ValueError, match="learned the volunteer lengths of folds"):
        calibrate_real(b, str(real_root), method="head", folds=(0, 3), min_bars=5)
    with pytest.raises(ValueError, match="test fold"):
        calibrate_real(b, str(real_root), method="head", folds=(realdata.TEST_FOLD,), min_bars=5)


def test_fine_tuning_needs_enough_real_bars(real_root, tmp_path):
    shutil.copytree(tiny_bundle(), tmp_path / "bundle")
    with pytest.raises(ValueError, match="too few to fine-tune"):
        calibrate_head(str(tmp_path / "bundle"), n=40, seed=77, workdir=str(tmp_path / "sims"), epochs=1, threads=1,
                       holdout_frac=0.25, p_bar_min=0.0, log=lambda msg: None, real_root=str(real_root),
                       real_folds=(3,), real_epochs=1)


def test_cross_fitted_head_learns_every_training_fold_and_is_fitted_out_of_fold(real_root, tmp_path, monkeypatch):
    import json

    import survey_bars.training.calibrate as cal

    shutil.copytree(tiny_bundle(), tmp_path / "bundle")
    b, cf = str(tmp_path / "bundle"), tmp_path / "crossfit"
    rec = calibrate_head(b, n=40, seed=77, workdir=str(tmp_path / "sims"), epochs=1, threads=1, holdout_frac=0.25,
                         p_bar_min=0.0, log=lambda msg: None, real_root=str(real_root), real_epochs=1, real_sims=8,
                         crossfit_dir=str(cf), real_linear_copies=1)
    rt = rec["real_training"]
    assert rt["folds"] == list(realdata.TRAIN_FOLDS) and rt["n_bars"] == 35  # fold 4 never
    assert rt["linear_copies"]["copies"] == 1 and rt["linear_copies"]["n_maps"] == 35  # one linear copy of each
    assert rt["linear_copies"]["length_frame"] == cal.HEAD_REAL_FRAME == "auto"  # the copies' frame: process's
    assert rt["cross_fitted"]["folds"] == [0, 1, 2, 3]
    assert rt["n_scale_maps"] == 35  # the simulations' units from the JPEGs' maps alone
    # each fold's JPEGs and copies read by the head without that fold
    assert rt["out_of_fold"]["jpeg"]["n"] == 35 and rt["out_of_fold"]["linear_copies"]["n"] == 35
    assert all(-1 <= v["pearson_r"] <= 1 and v["median_ratio"] > 0 for v in rt["out_of_fold"].values())
    meta = json.loads((cf / cal.CROSSFIT_FILE).read_text())
    assert sorted(meta["files"]) == ["0", "1", "2", "3"] and all((cf / f).is_file() for f in meta["files"].values())
    assert not list((tmp_path / "bundle").glob("*fold*"))  # the out-of-fold heads are not part of the bundle
    # without the out-of-fold heads no fold is left to fit on
    with pytest.raises(ValueError, match="every training fold"):
        calibrate_real(b, str(real_root), method="head", min_bars=5)
    # with them, each fold is measured by the head that never saw it
    used = []

    class Spy(cal.ModelRuntime):
        def __init__(self, bundle, threads=1):
            used.append(bundle.head_path.name)
            super().__init__(bundle, threads)

    monkeypatch.setattr(cal, "ModelRuntime", Spy)
    real = calibrate_real(b, str(real_root), method="head", min_bars=5, crossfit_dir=str(cf))
    assert sorted(used) == sorted(meta["files"].values())
    assert real["folds"] == [0, 1, 2, 3] and real["n_bars"] == 35 and real["cross_fitted"] is True
    assert real["crossfit_folds"] == [0, 1, 2, 3] and real["scale"] > 0 and real["error_scale"] > 0
    assert load_bundle(b).card["calibration"]["head"]["real"]["folds"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="test fold"):
        calibrate_real(b, str(real_root), method="head", folds=(3, realdata.TEST_FOLD), min_bars=5, crossfit_dir=str(cf))
    # heads cross-fitted with another head are refused
    meta["head_sha256"] = "0" * 64
    (cf / cal.CROSSFIT_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another length head"):
        calibrate_real(b, str(real_root), method="head", min_bars=5, crossfit_dir=str(cf))
    with pytest.raises(FileNotFoundError, match="crossfit"):
        calibrate_real(b, str(real_root), method="head", min_bars=5, crossfit_dir=str(tmp_path))


def test_crossfit_dir_is_for_a_head_that_learned_real_lengths(real_root, tmp_path):
    shutil.copytree(tiny_bundle(), tmp_path / "bundle")
    with pytest.raises(ValueError, match="learned none"):
        calibrate_real(str(tmp_path / "bundle"), str(real_root), method="moments", min_bars=5,
                       crossfit_dir=str(tmp_path))


def test_calibrate_cli_crossfit_needs_real_lengths_or_real_dev(tmp_path, capsys):
    from survey_bars.cli import main

    shutil.copytree(tiny_bundle(), tmp_path / "bundle")
    assert main(["calibrate", "--model", str(tmp_path / "bundle"), "--method", "head", "--crossfit", str(tmp_path)]) == 2
    assert "--crossfit goes with --real-lengths" in capsys.readouterr().err


def test_out_of_fold_fine_tuning_needs_bars_in_and_out_of_each_fold():
    from survey_bars.training.head import fine_tune_out_of_fold

    rng = np.random.default_rng(1)
    maps, lengths = rng.random((30, 64, 64)).astype(np.float32), rng.uniform(5, 30, 30)
    head = train_head(maps, lengths, epochs=1, seed=0)
    fold = np.repeat([0, 1, 2], 10)
    kw = {"epochs": 1, "lr": 1e-3, "n_sims": 4}
    with pytest.raises(ValueError, match="at least 20 real bars outside fold 3"):
        fine_tune_out_of_fold(head, maps, lengths, fold, (0, 3), maps, lengths, **kw)  # fold 3 has none
    with pytest.raises(ValueError, match="outside fold 0"):
        fine_tune_out_of_fold(head, maps, lengths, np.repeat([0, 1], 15), (0,), maps, lengths, **kw)  # 15 outside
    heads = fine_tune_out_of_fold(head, maps, lengths, fold, (0, 1, 2), maps, lengths, **kw)
    assert sorted(heads) == [0, 1, 2] and all(isinstance(h, LengthHead) for h, _ in heads.values())


def test_fine_tuning_takes_the_simulations_scale_from_the_maps_it_is_told():
    import torch

    from survey_bars.training.head import HeadGraph, fine_tune_head, fine_tune_out_of_fold

    rng = np.random.default_rng(2)
    maps, lengths = rng.random((30, 64, 64)).astype(np.float32), rng.uniform(5, 30, 30)
    head = train_head(maps, lengths, epochs=1, seed=0)
    with torch.no_grad():
        before = HeadGraph(head)(torch.as_tensor(maps[:, None])).numpy().astype(float)
    # two thirds are "copies" whose lengths the head reads three times too short
    jpeg = np.arange(30) % 3 == 0
    real = np.where(jpeg, before * 1.2, before * 3.6)
    kw = {"epochs": 1, "lr": 1e-3, "n_sims": 4}
    _, every = fine_tune_head(head, maps, real, maps, lengths, **kw)
    _, some = fine_tune_head(head, maps, real, maps, lengths, scale_mask=jpeg, **kw)
    assert some["simulated_length_scale"] == pytest.approx(1.2, rel=1e-4) and some["n_scale_maps"] == 10
    assert every["simulated_length_scale"] == pytest.approx(3.6, rel=1e-4) and every["n_scale_maps"] == 30
    for bad in (jpeg[:20], np.zeros(30, bool)):
        with pytest.raises(ValueError, match="scale_mask must hold one boolean per real map"):
            fine_tune_head(head, maps, real, maps, lengths, scale_mask=bad, **kw)
    # each out-of-fold head takes its scale from its own part of the mask
    heads = fine_tune_out_of_fold(head, maps, real, np.repeat([0, 1, 2], 10), (0, 2), maps, lengths, scale_mask=jpeg, **kw)
    assert heads[0][1]["n_scale_maps"] == 6 and heads[2][1]["n_scale_maps"] == 7
    assert all(info["simulated_length_scale"] == pytest.approx(1.2, rel=1e-4) for _, info in heads.values())
