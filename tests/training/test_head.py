"""The learned length head: training, ONNX export, the bundle's third graph and the 'head' method."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from survey_bars.measure import MOMENTS_VERSION
from survey_bars.training.calibrate import (
    calibrate_head,
    calibrate_head_errors,
    uncalibrated_head,
)
from survey_bars.inference.bundle import BundleError, load_bundle
from survey_bars.training.head import export_head, train_head
from survey_bars.measure import calibration_for, resolve_method
from survey_bars.pipeline import RunOptions, process_items
from survey_bars.inference.runtime import ModelRuntime
from survey_bars.testing import tiny_bundle


def rods(n, size=64, seed=0):
    """Blurred rods of known full length at random angles: maps whose length a head can learn."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    lengths = rng.uniform(8, 40, n)
    maps = np.empty((n, size, size), np.float32)
    for i, (length, t) in enumerate(zip(lengths, rng.uniform(0, np.pi, n))):
        u = x * np.cos(t) + y * np.sin(t)
        v = -x * np.sin(t) + y * np.cos(t)
        along = np.clip(np.abs(u) - length / 2, 0, None)
        maps[i] = np.exp(-(along**2 + v**2) / (2 * 3.0**2)) * rng.uniform(0.5, 2.0)
    return maps, lengths


@pytest.fixture(scope="module")
def head_bundle(tmp_path_factory):
    """A copy of the tiny random bundle with a length head trained on its own maps (1 epoch)."""
    d = tmp_path_factory.mktemp("head")
    shutil.copytree(tiny_bundle(), d / "bundle")
    rec = calibrate_head(str(d / "bundle"), n=40, seed=77, workdir=str(d / "sims"), epochs=1, threads=1,
                         holdout_frac=0.25, p_bar_min=0.0, log=lambda msg: None)
    return d / "bundle", d / "sims", rec


def test_head_learns_lengths_and_exports_identically(tmp_path):
    maps, lengths = rods(240)
    head = train_head(maps[:200], lengths[:200], epochs=12, seed=0, threads=1)
    err = export_head(head, tmp_path / "length_head.onnx", size=64, check_maps=maps[200:])
    assert err < 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "length_head.onnx"), providers=["CPUExecutionProvider"])
    (pred,) = sess.run(["length"], {"saliency": maps[200:, None]})
    # the brightness of a map does not matter (it is peak-normalised), its length does
    (scaled,) = sess.run(["length"], {"saliency": 7.0 * maps[200:, None]})
    np.testing.assert_allclose(scaled, pred, rtol=1e-5)
    assert np.corrcoef(pred, lengths[200:])[0, 1] > 0.9


def test_train_head_rejects_bad_training_data():
    maps, lengths = rods(12)
    with pytest.raises(ValueError, match="positive and finite"):
        train_head(maps, np.where(np.arange(12) == 3, np.nan, lengths), epochs=1)
    with pytest.raises(ValueError, match="one length each"):
        train_head(maps, lengths[:5], epochs=1)
    with pytest.raises(ValueError, match="too few"):
        train_head(maps[:4], lengths[:4], epochs=1)


def test_calibrate_head_adds_a_verified_graph_and_its_record(head_bundle):
    path, _, rec = head_bundle
    b = load_bundle(path)
    assert b.head_path is not None and b.head_path.name == "length_head.onnx"
    assert set(b.card["files"]) == {"forward.onnx", "saliency.onnx", "length_head.onnx"}
    card_rec = b.card["calibration"]["head"]
    assert card_rec == json.loads(json.dumps(rec))
    assert rec["seed"] == 77 and rec["n_train"] + rec["n_holdout"] == 40 and rec["scatter_frac"] >= 0
    # the error model is fitted on the held-out bars so that 68.3 % lie within one sigma
    assert rec["floor_native_px"] >= 0 and rec["floor_model_px"] >= 0 and rec["errors"]["source"] == "the held-out bars"
    assert rec["errors"]["n"] == rec["n_holdout"] and rec["errors"]["within_1sigma"] == pytest.approx(0.7, abs=0.11)
    assert rec["export_max_rel_err"] < 1e-4


def test_calibrate_head_errors_refits_only_the_uncertainty(head_bundle, tmp_path):
    path, _, rec = head_bundle
    shutil.copytree(path, tmp_path / "b")
    head_graph = (tmp_path / "b" / "length_head.onnx").read_bytes()
    with pytest.raises(ValueError, match="the head was trained on"):
        calibrate_head_errors(str(tmp_path / "b"), n=30, seed=77)
    new = calibrate_head_errors(str(tmp_path / "b"), n=30, seed=78, survey="sdss", workdir=str(tmp_path / "sims"), threads=1,
                                p_bar_min=0.0)
    card = load_bundle(tmp_path / "b").card
    assert card["calibration"]["head"] == json.loads(json.dumps(new))
    assert (tmp_path / "b" / "length_head.onnx").read_bytes() == head_graph  # the head itself is kept
    e = new["errors"]
    assert e["source"] == "fresh simulations" and e["seed"] == 78 and e["survey"] == "sdss" and e["n"] >= 10
    assert e["within_1sigma"] == pytest.approx(0.683, abs=0.06)
    assert new["n_train"] == rec["n_train"] and new["scatter_frac"] != rec["scatter_frac"]
    with pytest.raises(ValueError, match="no learned length head"):
        calibrate_head_errors(tiny_bundle(), n=30, seed=78)


def test_uncalibrated_head_ignores_the_cards_head_calibration(head_bundle):
    """The error fit's statistical spread must not include an earlier head's systematic error."""
    path, sims, _ = head_bundle
    files = sorted(str(p) for p in sims.glob("*.fits"))[:3]
    rt = ModelRuntime(load_bundle(path))
    card = rt.card
    rt.card = {**card, "calibration": {**card["calibration"], "head": {"scatter_frac": 5.0, "floor_model_px": 50.0}}}
    stale = dict(rt.card)
    got = uncalibrated_head(rt, files)
    assert rt.card == stale  # restored
    rt.card = {**card, "calibration": {}}
    want = process_items(files, RunOptions(method="head", p_bar_min=0.0), runtime=rt).to_pandas()
    pd.testing.assert_frame_equal(got, want)
    assert (got.bar_length_err_arcsec < got.bar_length_arcsec).all()


def test_length_head_is_orientation_invariant(head_bundle):
    path, _, _ = head_bundle
    rt = ModelRuntime(load_bundle(path))
    maps, _ = rods(3, seed=1)
    views = np.stack([maps[0], np.rot90(maps[0]), maps[0][:, ::-1], np.rot90(maps[0], 3)[::-1]])
    out = rt.length_head(views, orientations=8)
    np.testing.assert_allclose(out, out[0], rtol=1e-5)
    rt.head_max_batch = 3  # calls of a few maps give the same lengths
    np.testing.assert_allclose(rt.length_head(views, orientations=8), out, rtol=1e-6)
    assert np.all(np.isfinite(rt.length_head(maps, orientations=1)))
    with pytest.raises(ValueError, match="orientations"):
        rt.length_head(maps, orientations=3)
    with pytest.raises(ValueError, match="shape"):
        rt.length_head(maps[:, :32, :32])


def test_head_method_measures_with_the_head(head_bundle):
    path, sims, rec = head_bundle
    files = sorted(str(p) for p in sims.glob("*.fits"))[:4]
    rt = ModelRuntime(load_bundle(path))
    seen = []
    real = rt.length_head

    def spy(maps, orientations=8):
        out = real(maps, orientations)
        seen.append((orientations, out))
        return out

    rt.length_head = spy
    opts = RunOptions(method="head", p_bar_min=0.0, smoothgrad_samples=8, n_subsets=4)
    t = process_items(files, opts, runtime=rt).to_pandas()
    assert (t.status == "ok").all() and t.bar_length_arcsec.notna().all()
    (o_main, main), (o_sub, subs) = seen
    assert o_main == 8 and o_sub == 1 and len(main) == 4 and len(subs) == 16
    to_arcsec = t.pixel_scale_arcsec * t.resample_scale
    np.testing.assert_allclose(t.bar_length_arcsec / to_arcsec, main, rtol=1e-6)
    # uncertainty: the spread of the subsets' head lengths, the fitted scatter and the floor in input pixels
    stat = subs.reshape(4, 4).std(axis=1, ddof=1) / 2.0
    want = np.sqrt(stat**2 + (rec["scatter_frac"] * main) ** 2 + rec["floor_model_px"] ** 2
                   + (rec["floor_native_px"] / t.resample_scale) ** 2) * to_arcsec
    np.testing.assert_allclose(t.bar_length_err_arcsec, want, rtol=1e-5)
    # position angle and axis ratio come from the moments measurement of the same map
    m = process_items(files, RunOptions(method="moments", p_bar_min=0.0, smoothgrad_samples=8), runtime=rt).to_pandas()
    np.testing.assert_allclose(t.bar_pa_deg, m.bar_pa_deg)
    np.testing.assert_allclose(t.bar_axis_ratio, m.bar_axis_ratio)


def test_auto_is_the_head_when_the_bundle_has_one(head_bundle):
    path, sims, _ = head_bundle
    files = sorted(str(p) for p in sims.glob("*.fits"))[:3]
    with_head, without = load_bundle(path), load_bundle(tiny_bundle())
    assert resolve_method(with_head.card, "auto") == "head" and resolve_method(without.card, "auto") == "moments"
    assert resolve_method(with_head.card, "bhambra2022") == "bhambra2022"
    with pytest.raises(ValueError, match="Unknown bar measuring method 'median'; choose one of auto"):
        resolve_method(with_head.card, "median")
    assert RunOptions().method == "auto"
    for bundle, method in ((with_head, "head"), (without, "moments")):
        rt = ModelRuntime(bundle)
        auto = process_items(files, RunOptions(p_bar_min=0.0, smoothgrad_samples=8), runtime=rt).to_pandas()
        named = process_items(files, RunOptions(method=method, p_bar_min=0.0, smoothgrad_samples=8), runtime=rt).to_pandas()
        assert auto.bar_length_arcsec.notna().all()
        pd.testing.assert_frame_equal(auto, named)
    # on the bundle with a head the two methods differ, so the equality above says which one ran
    rt = ModelRuntime(with_head)
    head, moments = (process_items(files, RunOptions(method=m, p_bar_min=0.0, smoothgrad_samples=8), runtime=rt).to_pandas()
                     for m in ("head", "moments"))
    assert not np.allclose(head.bar_length_arcsec, moments.bar_length_arcsec)


def test_every_run_carries_the_calibrated_moments_length(head_bundle):
    """bar_length_moments_arcsec is the moments measurement of the same map whatever the method."""
    path, sims, _ = head_bundle
    files = sorted(str(p) for p in sims.glob("*.fits"))[:3]
    bundle = load_bundle(path)
    rt = ModelRuntime(bundle)
    # a moments calibration of its own, so that the check below is not the identity
    moments = {"slope": 0.9, "intercept": 2.0, "scatter_frac": 0.1, "measurement_version": MOMENTS_VERSION}
    rt.card = card = {**bundle.card, "calibration": {**bundle.card["calibration"], "moments": moments}}
    runs = {m: process_items(files, RunOptions(method=m, p_bar_min=0.0, smoothgrad_samples=8), runtime=rt).to_pandas()
            for m in ("head", "moments", "bhambra2022")}
    mom = runs["moments"]
    assert mom.bar_length_arcsec.notna().all() and (mom.bar_length_err_arcsec > 0).all()
    for m, df in runs.items():
        np.testing.assert_allclose(df.bar_length_moments_arcsec, mom.bar_length_arcsec, rtol=1e-12, err_msg=m)
        np.testing.assert_allclose(df.bar_length_moments_err_arcsec, mom.bar_length_err_arcsec, rtol=1e-12, err_msg=m)
    assert not np.allclose(runs["head"].bar_length_arcsec, mom.bar_length_arcsec)
    # a moments calibration made for another version of the measurement leaves the column null
    # in a head run (and still fails a moments run, as before)
    rt.card = {**card, "calibration": {**card["calibration"], "moments": {**moments, "measurement_version": 1}}}
    df = process_items(files, RunOptions(method="head", p_bar_min=0.0, smoothgrad_samples=8), runtime=rt).to_pandas()
    with pytest.raises(ValueError, match="measurement version 1"):
        process_items(files, RunOptions(method="moments", p_bar_min=0.0, smoothgrad_samples=8), runtime=rt)
    pd.testing.assert_series_equal(df.bar_length_arcsec, runs["head"].bar_length_arcsec)
    assert df.bar_length_moments_arcsec.isna().all() and df.bar_length_moments_err_arcsec.isna().all()


def test_head_method_needs_a_head():
    b = load_bundle(tiny_bundle())
    assert b.head_path is None
    with pytest.raises(ValueError, match="length head"):
        calibration_for(b.card, "head")
    with pytest.raises(ValueError, match="calibrate --model DIR --method head"):
        ModelRuntime(b).length_head(np.zeros((1, 64, 64), np.float32))


def test_a_listed_head_must_be_present_and_intact(head_bundle, tmp_path):
    path, _, _ = head_bundle
    shutil.copytree(path, tmp_path / "b")
    data = (tmp_path / "b" / "length_head.onnx").read_bytes()
    (tmp_path / "b" / "length_head.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BundleError, match="length_head.onnx is corrupt"):
        load_bundle(tmp_path / "b")
    (tmp_path / "b" / "length_head.onnx").unlink()
    with pytest.raises(BundleError, match="length_head.onnx is missing"):
        load_bundle(tmp_path / "b")


def test_calibrate_head_with_stamp_copies_trains_on_the_display_maps_too(tmp_path):
    """``stamp_copies`` adds the maps of small-stamp display JPEGs, measured with the truth's pixel scale."""
    shutil.copytree(tiny_bundle(), tmp_path / "bundle")
    rec = calibrate_head(str(tmp_path / "bundle"), n=20, seed=79, workdir=str(tmp_path / "sims"), epochs=1, threads=1,
                         holdout_frac=0.5, p_bar_min=0.0, log=lambda msg: None, stamp_copies=True)
    jpegs = sorted((tmp_path / "sims" / "small-stamps-display").glob("*.jpg"))
    assert len(jpegs) == 20 and len(list((tmp_path / "sims" / "small-stamps").glob("*.fits"))) == 20
    assert rec["stamp_copies"] and rec["n_train"] + rec["n_holdout"] == 40  # every FITS stamp and every JPEG copy
    assert rec["errors"]["n"] == rec["n_holdout"]  # the held-out JPEGs were measured too (they have a pixel scale)
    assert load_bundle(tmp_path / "bundle").card["calibration"]["head"]["stamp_copies"] is True


def test_calibrate_head_with_format_copies_learns_every_stamp_and_format(tmp_path):
    """``format_copies`` adds the small FITS stamps and full-size display JPEGs: four kinds of input in all."""
    from survey_bars.training.calibrate import head_sources

    shutil.copytree(tiny_bundle(), tmp_path / "bundle")
    rec = calibrate_head(str(tmp_path / "bundle"), n=20, seed=79, workdir=str(tmp_path / "sims"), epochs=1, threads=1,
                         holdout_frac=0.5, p_bar_min=0.0, log=lambda msg: None, stamp_copies=True, format_copies=True)
    sims = tmp_path / "sims"
    assert len(list((sims / "display").glob("*.jpg"))) == 20  # full-size display copies, made inside the simulations
    assert rec["format_copies"] and rec["n_train"] + rec["n_holdout"] == 80  # 20 bars x 4 kinds of input
    assert load_bundle(tmp_path / "bundle").card["calibration"]["head"]["format_copies"] is True
    # the order is fixed, the copies are made once and reused
    stamp = (sims / "display" / "truth.parquet").stat().st_mtime_ns
    assert head_sources(str(sims), 79, stamp_copies=True, format_copies=True) == [
        str(sims), str(sims / "small-stamps-display"), str(sims / "small-stamps"), str(sims / "display")]
    assert head_sources(str(sims), 79, format_copies=True)[1:] == [str(sims / "small-stamps"), str(sims / "display")]
    # the format copies alone make no small-stamp display JPEGs they do not use
    other = tmp_path / "other"
    shutil.copytree(sims, other, ignore=shutil.ignore_patterns("small-stamps-display"))
    assert head_sources(str(other), 79, format_copies=True)[1:] == [str(other / "small-stamps"), str(other / "display")]
    assert not (other / "small-stamps-display").exists()
    assert head_sources(str(sims), 79) == [str(sims)]
    assert (sims / "display" / "truth.parquet").stat().st_mtime_ns == stamp


def test_calibrate_cli_passes_the_head_copies(monkeypatch, tmp_path):
    """``survey-bars calibrate --method head --stamp-copies --format-copies`` trains on both kinds of copies."""
    from survey_bars.cli import main
    from survey_bars.training import calibrate

    seen = {}

    def spy(model, **kw):
        seen.update(kw)
        return {"n_train": 1}

    monkeypatch.setattr(calibrate, "calibrate_head", spy)
    assert main(["calibrate", "--model", str(tmp_path), "--method", "head", "--stamp-copies", "--format-copies"]) == 0
    assert seen["stamp_copies"] is True and seen["format_copies"] is True
    seen.clear()
    assert main(["calibrate", "--model", str(tmp_path), "--method", "head"]) == 0
    assert seen["stamp_copies"] is False and seen["format_copies"] is False
