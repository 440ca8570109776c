"""The profile method: the half-peak extent of the saliency along the bar's axis."""

import numpy as np
import pytest

from survey_bars.flags import Flag
from survey_bars.measure import measure_bar
from survey_bars.measure.profile import measure_profile

from .test_methods import bar_map


@pytest.mark.parametrize("angle", [0, 30, 90, 135])
def test_rotation_invariant(angle):
    ref = measure_profile(bar_map(30, 0)).length
    assert measure_profile(bar_map(30, angle)).length == pytest.approx(ref, rel=0.06)


@pytest.mark.parametrize("length", [20, 30, 40])
def test_the_half_peak_extent_is_the_rod(length):
    """A rod blurred by much less than its length keeps its length at half its peak."""
    got = measure_profile(bar_map(length, 33))
    assert got.length == pytest.approx(length, rel=0.1)
    assert np.isfinite(got.pa_deg) and got.threshold == 0.5


def test_short_rods_keep_their_order():
    """Blur sets a floor (about 2.4 sigma of the blur) that the calibration on simulations removes;
    the order of the lengths survives it."""
    got = [measure_profile(bar_map(n, 33)).length for n in (6, 10, 14, 18, 22)]
    assert np.all(np.diff(got) > 0)


def test_a_bar_split_by_a_central_dip_is_measured_whole():
    m = bar_map(32, 20)
    n = m.shape[0]
    yy, xx = np.mgrid[0:n, 0:n]
    m = m * (1 - 0.7 * np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / (2 * 3.0**2)))  # a hole at the centre
    assert measure_profile(m).length == pytest.approx(32, rel=0.15)


def test_a_profile_that_runs_off_the_frame_is_flagged():
    assert measure_profile(bar_map(56, 0), search_radius=0.5).flags & Flag.BAR_AT_FRAME_LIMIT


def test_empty_maps_and_bad_levels():
    assert np.isnan(measure_bar(np.zeros((64, 64)), "profile").length)
    with pytest.raises(ValueError, match="frac"):
        measure_profile(bar_map(20, 0), frac=1.5)


def test_a_run_measures_with_it(tmp_path):
    """``--method profile`` through the pipeline with the shipped bundle (no calibration for it: raw lengths)."""
    from survey_bars.inference.runtime import get_runtime
    from survey_bars.pipeline import RunOptions, process_items
    from survey_bars.testing import galaxy_image, write_cutout

    p = write_cutout(tmp_path / "g.fits", galaxy_image(n=96, r50=8, bar_len=24, seed=2), objid="G")
    opts = RunOptions(method="profile", smoothgrad_samples=8, p_bar_min=0.0)
    row = process_items([p], opts, runtime=get_runtime(None)).to_pylist()[0]
    assert row["status"] == "ok" and row["bar_length_arcsec"] > 0 and row["bar_length_err_arcsec"] >= 0
    assert np.isfinite(row["bar_pa_deg"]) and row["bar_length_moments_arcsec"] is not None
