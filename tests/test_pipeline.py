"""One partition on the worker path, with the shipped model bundle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from survey_bars.flags import Flag
from survey_bars.geometry import kpc_per_arcsec
from survey_bars.inference.runtime import get_runtime
from survey_bars.inference.saliency import object_seed, smoothgrad_batch
from survey_bars.io.inputs import InputItem
from survey_bars.pipeline import RunOptions, process_items

from .conftest import galaxy_image, write_fits

OPTS = RunOptions(smoothgrad_samples=16)


@pytest.fixture(scope="module")
def runtime():
    return get_runtime(None)


@pytest.fixture
def mixed_inputs(tmp_path):
    good = [write_fits(tmp_path / f"g{i}.fits", galaxy_image(n=96, r50=8, bar_len=24 if i % 2 else None, seed=i), objid=f"G{i}", extra={"REDSHIFT": 0.05}) for i in range(4)]
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"not fits" * 100)
    missing = str(tmp_path / "missing.fits")
    return good + [str(bad), missing]


def test_one_row_per_input_in_order(runtime, mixed_inputs):
    t = process_items(mixed_inputs, OPTS, runtime=runtime).to_pandas()
    assert list(t.file) == [str(p) for p in mixed_inputs]
    assert list(t.status) == ["ok"] * 4 + ["error", "error"]
    assert t.error[4].startswith("not_fits:") and t.error[5].startswith("missing:")
    ok = t[t.status == "ok"]
    for col in ["p_smooth", "p_disc", "p_edge_on", "p_bar", "p_spiral"]:
        assert ok[col].between(0, 1).all()
    assert np.allclose(ok.p_smooth + ok.p_disc, 1, atol=1e-5)
    assert ok.ra.notna().all() and ok.pixel_scale_arcsec.notna().all()


def test_measured_bars_have_lengths_and_kpc(runtime, tmp_path):
    p = write_fits(tmp_path / "b.fits", galaxy_image(n=96, r50=8, bar_len=24), objid="B", extra={"REDSHIFT": 0.05})
    row = process_items([p], RunOptions(smoothgrad_samples=16, p_bar_min=0.0), runtime=runtime).to_pandas().iloc[0]
    assert row.status == "ok"
    assert row.bar_length_arcsec > 0 and row.bar_length_err_arcsec >= 0
    assert 0 <= row.bar_pa_deg < 180
    assert row.bar_length_kpc == pytest.approx(row.bar_length_arcsec * kpc_per_arcsec(np.array([0.05]))[0])


def test_catalogue_overrides_and_assumed_scale(runtime, tmp_path):
    p = write_fits(tmp_path / "nowcs.fits", galaxy_image(), wcs=False)
    item = InputItem(file=p, object_id="X1", ra=10.0, dec=-5.0, redshift=0.03, pixel_scale=0.4)
    row = process_items([item], OPTS, runtime=runtime).to_pandas().iloc[0]
    assert row.status == "ok" and row.object_id == "X1" and row.ra == 10.0 and row.redshift == 0.03
    assert row.quality_flags & Flag.ASSUMED_PIXEL_SCALE and row.quality_flags & Flag.NO_WCS
    err = process_items([p], OPTS, runtime=runtime).to_pandas().iloc[0]
    assert err.status == "error" and "--pixel-scale" in err.error


def test_deterministic_across_partitioning(runtime, mixed_inputs):
    a = process_items(mixed_inputs, OPTS, runtime=runtime).to_pandas()
    b = process_items(mixed_inputs[::-1], OPTS, runtime=runtime).to_pandas().iloc[::-1].reset_index(drop=True)
    c = process_items(mixed_inputs, RunOptions(smoothgrad_samples=16, chunk_size=1), runtime=runtime).to_pandas()
    import pandas as pd

    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


def test_smoothgrad_seeded_by_object_id(runtime):
    img = np.stack([galaxy_image(n=64, r50=5)] * 2)
    rt = runtime
    from survey_bars.normalise import normalise

    frames = np.stack([normalise(i).image for i in img])
    a = smoothgrad_batch(rt, frames, ["A", "B"], n_samples=8, n_subsets=2)
    b = smoothgrad_batch(rt, frames[:1], ["A"], n_samples=8, n_subsets=2)
    assert np.allclose(a[0].map, b[0].map, atol=1e-6)
    assert not np.allclose(a[0].map, a[1].map)  # same image, other id, other noise
    assert a[0].map.min() == 0 and a[0].map.max() == 1 and a[0].subsets.shape == (2, 64, 64)
    assert object_seed("A") == object_seed("A") != object_seed("B")


def test_save_saliency(runtime, tmp_path):
    from astropy.io import fits

    p = write_fits(tmp_path / "s.fits", galaxy_image(bar_len=20), objid="obj/with space")
    sal = tmp_path / "sal"
    process_items([p], RunOptions(smoothgrad_samples=8, p_bar_min=0.0, save_saliency=str(sal)), runtime=runtime)
    files = list(sal.glob("*.fits"))
    assert len(files) == 1 and " " not in files[0].name and "/" not in files[0].name[:-5]
    with fits.open(files[0]) as h:
        assert h[0].data.shape == (64, 64) and h["IMAGE"].data.shape == (64, 64)
        assert h[0].header["OBJID"] == "obj/with space" and h[0].header["SCALE"] > 0


def test_saliency_only_where_a_bar_is_measured(runtime, tmp_path):
    """SmoothGrad runs for galaxies with p_bar >= p_bar_min, unless saliency_all asks for all."""
    paths = [write_fits(tmp_path / f"s{i}.fits", galaxy_image(n=96, r50=8, bar_len=24 if i % 2 else None, seed=10 + i), objid=f"S{i}") for i in range(4)]
    calls = []
    real = runtime.gradient

    class Counting:
        def __getattr__(self, name):
            return getattr(runtime, name)

        def gradient(self, images):
            calls.append(len(images))
            return real(images)

    rt = Counting()
    t = process_items(paths, RunOptions(smoothgrad_samples=8, p_bar_min=1.0, n_subsets=1), runtime=rt).to_pandas()
    assert calls == [] and (t.quality_flags & int(Flag.BAR_NOT_MEASURED)).astype(bool).all()
    t_all = process_items(paths, RunOptions(smoothgrad_samples=8, p_bar_min=1.0, n_subsets=1, saliency_all=True, save_saliency=str(tmp_path / "sal")), runtime=rt).to_pandas()
    assert sum(calls) == 4 * 8 and len(list((tmp_path / "sal").glob("*"))) >= 4
    assert t_all.bar_length_arcsec.isna().all()
    calls.clear()
    t0 = process_items(paths, RunOptions(smoothgrad_samples=8, p_bar_min=0.0, n_subsets=1), runtime=rt).to_pandas()
    assert sum(calls) == 4 * 8 and t0.bar_length_arcsec.notna().all()


def test_calibration_version_is_checked():
    from survey_bars.measure import MOMENTS_VERSION, calibration_for

    card = {"calibration": {"moments": {"slope": 2.0, "intercept": 1.0, "measurement_version": MOMENTS_VERSION}}}
    assert calibration_for(card, "moments")["slope"] == 2.0
    assert calibration_for({}, "moments") == {}
    card["calibration"]["moments"]["measurement_version"] = MOMENTS_VERSION - 1
    with pytest.raises(ValueError, match="survey-bars calibrate"):
        calibration_for(card, "moments")


def test_smoothgrad_symmetrisation_follows_the_card(runtime, tmp_path, monkeypatch):
    """The bundle card's ``smoothgrad.symmetrise`` reaches SmoothGrad (old cards: off)."""
    import survey_bars.pipeline as pl

    seen = []
    real = pl.smoothgrad_batch

    def spy(*args, **kwargs):
        seen.append(kwargs.get("symmetrise"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pl, "smoothgrad_batch", spy)
    p = write_fits(tmp_path / "b.fits", galaxy_image(n=96, r50=8, bar_len=24, seed=3), objid="B")
    opts = RunOptions(smoothgrad_samples=8, p_bar_min=0.0, n_subsets=1)

    class WithCard:
        def __init__(self, sg):
            self.bundle = type("B", (), {"smoothgrad": sg, "preprocessing": runtime.bundle.preprocessing})()

        def __getattr__(self, name):
            return getattr(runtime, name)

    for sg, want in (({**runtime.bundle.smoothgrad, "symmetrise": True}, True), ({"samples": 8}, False)):
        seen.clear()
        process_items([p], opts, runtime=WithCard(sg))
        assert seen == [want]


def _pedestal():
    img = galaxy_image(n=96, r50=5.0, noise=0.001)
    img[6:90, 6:90] += 0.05  # unsubtracted background merged with the galaxy
    return img


#: Inputs that trigger each image-level flag (issue #4: every flag is tested by an input that
#: triggers it; NO_WCS, ASSUMED_PIXEL_SCALE, NAN_NEAR_CENTRE, NON_CELESTIAL_WCS,
#: FIRST_PLANE_OF_CUBE and DUPLICATE_OBJECT_ID are in the bad-input corpus of
#: tests/test_reliability.py, the saliency flags in tests/test_bars.py).
FLAG_INPUTS = {
    "off_centre": (lambda: np.roll(galaxy_image(n=96, r50=6, seed=1), 16, axis=1), Flag.OFF_CENTRE),
    "truncated": (lambda: galaxy_image(n=96, r50=22, seed=1, flux=5000), Flag.TRUNCATED),
    "large_resampling_big": (lambda: galaxy_image(n=320, r50=48, seed=1, flux=20000), Flag.LARGE_RESAMPLING),
    "large_resampling_tiny": (lambda: galaxy_image(n=96, r50=2, seed=1), Flag.LARGE_RESAMPLING),
    "low_snr": (lambda: galaxy_image(n=96, r50=8, seed=1, flux=3.0, noise=0.05), Flag.LOW_SNR),
    "size_from_fallback": (_pedestal, Flag.SIZE_FROM_FALLBACK),
}


@pytest.mark.parametrize("case", sorted(FLAG_INPUTS))
def test_image_flags_are_set_by_inputs_that_trigger_them(runtime, tmp_path, case):
    make, flag = FLAG_INPUTS[case]
    p = write_fits(tmp_path / f"{case}.fits", make(), objid=case)
    row = process_items([p], RunOptions(smoothgrad_samples=8, n_subsets=1), runtime=runtime).to_pandas().iloc[0]
    assert row.status == "ok", row.error
    assert row.quality_flags & flag, f"{case}: flags {row.quality_flags:#x} lack {flag.name}"


def test_a_clean_galaxy_has_none_of_the_image_flags(runtime, tmp_path):
    p = write_fits(tmp_path / "clean.fits", galaxy_image(n=96, r50=8, seed=1), objid="clean")
    row = process_items([p], RunOptions(smoothgrad_samples=8, n_subsets=1), runtime=runtime).to_pandas().iloc[0]
    image_flags = 0
    for _, flag in FLAG_INPUTS.values():
        image_flags |= int(flag)
    assert row.status == "ok" and row.quality_flags & image_flags == 0
    assert not row.quality_flags & (Flag.NO_WCS | Flag.ASSUMED_PIXEL_SCALE | Flag.NAN_NEAR_CENTRE)


@pytest.mark.parametrize(("p_bar", "ambiguous"), [(0.2, False), (0.36, True), (0.5, True), (0.64, True), (0.9, False)])
def test_p_bar_near_the_decision_boundary_is_flagged(runtime, tmp_path, p_bar, ambiguous):
    """P_BAR_AMBIGUOUS marks 0.35 <= p_bar <= 0.65 (the model's output is set by a wrapper)."""
    p = write_fits(tmp_path / "g.fits", galaxy_image(n=96, r50=8, bar_len=24, seed=2), objid="G")
    j = runtime.class_names.index("p_bar")

    class FixedPBar:
        def __getattr__(self, name):
            return getattr(runtime, name)

        def forward(self, images):
            out = runtime.forward(images)
            out["probs"] = out["probs"].copy()
            out["probs"][:, j] = p_bar
            return out

    row = process_items([p], RunOptions(smoothgrad_samples=8, n_subsets=1), runtime=FixedPBar()).to_pandas().iloc[0]
    assert row.p_bar == pytest.approx(p_bar)
    assert bool(row.quality_flags & Flag.P_BAR_AMBIGUOUS) is ambiguous
    assert bool(row.quality_flags & Flag.BAR_NOT_MEASURED) is (p_bar < 0.5)


def test_kpc_follows_the_catalogue_redshift_the_header_and_the_cosmology(runtime, tmp_path):
    """bar_length_kpc: the input catalogue's redshift wins over the header's (REDSHIFT or Z);
    the cosmology is the run's choice; no redshift, no kpc."""
    img = galaxy_image(n=96, r50=8, bar_len=24, seed=4)
    z_hdr = write_fits(tmp_path / "z.fits", img, objid="Z", extra={"Z": 0.08})
    none = write_fits(tmp_path / "none.fits", img, objid="N")
    opts = RunOptions(smoothgrad_samples=8, n_subsets=1, p_bar_min=0.0)
    t = process_items([z_hdr, InputItem(file=z_hdr, object_id="CAT", redshift=0.02), none], opts,
                      runtime=runtime).to_pandas()
    assert t.redshift.iloc[0] == pytest.approx(0.08) and t.redshift.iloc[1] == pytest.approx(0.02)
    for i, z in ((0, 0.08), (1, 0.02)):
        want = t.bar_length_arcsec.iloc[i] * kpc_per_arcsec(np.array([z]))[0]
        assert t.bar_length_kpc.iloc[i] == pytest.approx(want, rel=1e-9)
    assert np.isfinite(t.bar_length_arcsec.iloc[2]) and t.bar_length_kpc.isna().iloc[2]
    # the same items, so the same batches: float32 results can differ with the batch's size
    w = process_items([z_hdr, InputItem(file=z_hdr, object_id="CAT", redshift=0.02), none],
                      dataclasses.replace(opts, cosmology="WMAP9"), runtime=runtime).to_pandas()
    assert w.bar_length_arcsec.iloc[0] == pytest.approx(t.bar_length_arcsec.iloc[0], rel=1e-12)
    ratio = kpc_per_arcsec(np.array([0.08]), "WMAP9")[0] / kpc_per_arcsec(np.array([0.08]), "Planck18")[0]
    assert abs(ratio - 1) > 1e-3  # the two cosmologies differ, so the test can tell them apart
    assert w.bar_length_kpc.iloc[0] == pytest.approx(t.bar_length_kpc.iloc[0] * ratio, rel=1e-9)


def test_calibrate_head_without_torch_says_what_to_install(monkeypatch, capsys):
    import argparse
    import sys

    from survey_bars.training import calibrate

    monkeypatch.setitem(sys.modules, "torch", None)  # as on a worker-only install
    monkeypatch.delitem(sys.modules, "survey_bars.training.head", raising=False)
    parser = argparse.ArgumentParser()
    calibrate.configure_parser(parser)
    assert calibrate.run_cli(parser.parse_args(["--model", "unused", "--method", "head"])) == 2
    err = capsys.readouterr().err
    assert "needs torch" in err and "survey-bars[train]" in err


def test_calibrate_real_dev_without_the_data_says_where_it_looked(tmp_path, capsys):
    import argparse

    from survey_bars.inference.bundle import DEFAULT_BUNDLE
    from survey_bars.training import calibrate

    parser = argparse.ArgumentParser()
    calibrate.configure_parser(parser)
    args = parser.parse_args(["--model", str(DEFAULT_BUNDLE), "--real-dev", str(tmp_path / "none")])
    assert calibrate.run_cli(args) == 2
    err = capsys.readouterr().err
    assert "No sdss-gz2-bars/labels.csv under" in err and "SURVEY_BARS_REAL_DEV" in err
    args = parser.parse_args(["--model", str(DEFAULT_BUNDLE), "--method", "head-errors", "--real-dev", "auto"])
    assert calibrate.run_cli(args) == 2 and "use --method moments or head" in capsys.readouterr().err


def _jpeg(path, img, *, colour=True, quality=95):
    """Write a FITS-orientation image as an 8-bit JPEG (top row first), linearly scaled."""
    from PIL import Image

    lo, hi = float(np.min(img)), float(np.max(img))
    u8 = np.clip(np.round((img - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)[::-1]
    im = Image.fromarray(np.dstack([u8, u8, u8]) if colour else u8)
    im.save(path, quality=quality)
    return str(path)


def test_jpeg_rows_are_display_images_without_snr(runtime, tmp_path):
    p = _jpeg(tmp_path / "gal.jpg", galaxy_image(n=96, r50=8, bar_len=24, seed=2))
    item = InputItem(file=p, object_id="J1", ra=150.0, dec=2.0, redshift=0.05, pixel_scale=0.262)
    row = process_items([item], RunOptions(smoothgrad_samples=16, p_bar_min=0.0), runtime=runtime).to_pandas().iloc[0]
    assert row.status == "ok" and row.band == "rgb-mean" and row.ra == 150.0
    assert row.snr is None or np.isnan(row.snr)
    assert row.quality_flags & Flag.DISPLAY_IMAGE and not row.quality_flags & Flag.LOW_SNR
    assert row.pixel_scale_arcsec == 0.262 and row.bar_length_arcsec > 0 and row.bar_length_kpc > 0


def test_image_without_a_scale_gets_morphology_but_no_lengths(runtime, tmp_path):
    p = _jpeg(tmp_path / "noscale.png", galaxy_image(n=96, r50=8, bar_len=24, seed=2), colour=False)
    row = process_items([p], RunOptions(smoothgrad_samples=16, p_bar_min=0.0), runtime=runtime).to_pandas().iloc[0]
    assert row.status == "ok" and row.band == "grey" and row.object_id == "noscale"
    assert 0 <= row.p_bar <= 1 and 0 <= row.p_smooth <= 1
    assert np.isnan(row.pixel_scale_arcsec) and np.isnan(row.bar_length_arcsec) and np.isnan(row.r50_arcsec)
    assert row.quality_flags & Flag.NO_PIXEL_SCALE
    assert 0 <= row.bar_pa_deg < 180  # the angle needs no scale


def test_fits_and_jpeg_of_the_same_pixels_agree(runtime, tmp_path):
    """The same galaxy as FITS and as an 8-bit colour JPEG: same bar decision, close probabilities."""
    img = galaxy_image(n=96, r50=8, bar_len=26, seed=11)
    f = write_fits(tmp_path / "g.fits", img, objid="G", scale=0.262)
    j = _jpeg(tmp_path / "g.jpg", img)
    t = process_items([InputItem(file=f), InputItem(file=j, object_id="G", pixel_scale=0.262)], OPTS, runtime=runtime).to_pandas()
    assert list(t.status) == ["ok", "ok"]
    for col in ("p_bar", "p_smooth", "p_edge_on"):
        assert abs(t[col][0] - t[col][1]) < 0.1, (col, t[col].tolist())
    assert (t.p_bar[0] >= 0.5) == (t.p_bar[1] >= 0.5)


def test_band_option_reaches_the_reader(runtime, tmp_path):
    from astropy.io import fits

    from survey_bars.testing import _tan_wcs

    g = galaxy_image(n=96, r50=8, seed=3)
    hdr = fits.Header(_tan_wcs((96, 96)))
    hdr["BANDS"] = "grz"
    fits.PrimaryHDU(np.stack([g, g, g]).astype(np.float32), header=hdr).writeto(tmp_path / "c.fits")
    rows = [process_items([str(tmp_path / "c.fits")], dataclasses.replace(OPTS, band=b), runtime=runtime).to_pandas().iloc[0]
            for b in (None, "z", "y")]
    assert [r.band for r in rows[:2]] == ["r", "z"] and rows[0].status == rows[1].status == "ok"
    assert rows[2].status == "error" and rows[2].error.startswith("band_not_found:")


def test_softened_length_frame_measures_a_fits_bar_in_a_wider_frame(runtime, tmp_path):
    """``length_frame="softened"``: a FITS galaxy's bar measured in a wider frame (the map and every length, the
    direct CNN's too), its probabilities unchanged; a display image has one frame either way."""
    from astropy.io import fits

    from survey_bars.io.readers import read_cutout
    from survey_bars.normalise import normalise
    from survey_bars.pipeline import LENGTH_FRAME_SOFTENING

    from .test_normalise import _concentrated

    img = _concentrated()
    img += galaxy_image(n=128, r50=8, bar_len=40, noise=0.0, seed=3, flux=300.0)
    f = write_fits(tmp_path / "c.fits", img, objid="C", scale=0.262)
    j = _jpeg(tmp_path / "c.jpg", img)
    items = [InputItem(file=f), InputItem(file=j, object_id="J", pixel_scale=0.262)]
    rows, scales = {}, {}
    for frame in ("measured", "softened"):
        sal = tmp_path / frame
        opts = RunOptions(smoothgrad_samples=8, p_bar_min=0.0, save_saliency=str(sal), length_frame=frame)
        rows[frame] = process_items(items, opts, runtime=runtime).to_pandas()
        for oid in ("C", "J"):
            with fits.open(sal / f"{oid}.fits") as h:
                scales[frame, oid] = h[0].header["SCALE"]
    m, s = rows["measured"], rows["softened"]
    assert list(s.status) == ["ok", "ok"] and (s.bar_length_arcsec > 0).all()
    for col in ("p_bar", "p_smooth", "p_edge_on", "r50_arcsec", "resample_scale"):
        np.testing.assert_allclose(s[col], m[col], err_msg=col)  # the model frame's
    assert scales["softened", "C"] > 1.5 * scales["measured", "C"]  # the bar's frame is wider
    assert scales["softened", "J"] == scales["measured", "J"]  # a display image: one frame
    assert s.bar_length_arcsec[1] == m.bar_length_arcsec[1]
    # the direct CNN reads the bar's frame too: the FITS galaxy's wider one, in that frame's pixels
    cut = read_cutout(f)
    wide = normalise(cut.data, runtime.bundle.preprocessing, variance=cut.variance, r50_softening=LENGTH_FRAME_SOFTENING)
    expected = float(runtime.forward(wide.image[None])["bar_length_direct"][0]) * wide.scale * 0.262
    assert s.bar_length_direct_arcsec[0] == pytest.approx(expected, rel=1e-4)
    assert s.bar_length_direct_arcsec[0] != pytest.approx(m.bar_length_direct_arcsec[0], rel=1e-3)
    assert s.bar_length_direct_arcsec[1] == m.bar_length_direct_arcsec[1]
    # "auto": the wider frame only where the stamp cuts the galaxy
    cut = write_fits(tmp_path / "cut.fits", _concentrated(n=48) + galaxy_image(n=48, r50=14, noise=0.0, flux=300.0),
                     objid="CUT", scale=0.262)
    whole = write_fits(tmp_path / "whole.fits", _concentrated(n=160), objid="WHOLE", scale=0.262)
    for frame in ("measured", "auto"):
        process_items([cut, whole], RunOptions(smoothgrad_samples=8, p_bar_min=0.0, save_saliency=str(tmp_path / f"a-{frame}"),
                                              length_frame=frame), runtime=runtime)
        for oid in ("CUT", "WHOLE"):
            with fits.open(tmp_path / f"a-{frame}" / f"{oid}.fits") as h:
                scales[frame, oid] = h[0].header["SCALE"]
    assert scales["auto", "CUT"] > scales["measured", "CUT"] and scales["auto", "WHOLE"] == scales["measured", "WHOLE"]
    # an r50 from the input catalogue sizes the one frame
    given = InputItem(file=f, r50_arcsec=float(m.r50_arcsec[0]))
    one = process_items([given], RunOptions(smoothgrad_samples=8, p_bar_min=0.0, length_frame="softened"),
                        runtime=runtime).to_pandas()
    assert one.bar_length_arcsec[0] == pytest.approx(m.bar_length_arcsec[0])
