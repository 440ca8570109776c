import numpy as np
import pytest
from scipy import ndimage

from survey_bars.measure import measure_bar, measure_bhambra2022, measure_moments
from survey_bars.flags import Flag


def bar_map(length, angle_deg, n=64, width=1.5, seed=0, floor=0.02):
    m = np.zeros((n, n))
    t = np.linspace(-length / 2, length / 2, 400)
    th = np.radians(angle_deg)
    c = (n - 1) / 2
    m[np.round(c + t * np.sin(th)).astype(int), np.round(c + t * np.cos(th)).astype(int)] = 1
    m = ndimage.gaussian_filter(m, width)
    return m / m.max() + floor * np.random.default_rng(seed).random((n, n))


@pytest.mark.parametrize("angle", [0, 17, 45, 90, 120, 179])
def test_moments_rotation_invariant(angle):
    m = measure_moments(bar_map(30, angle))
    assert m.length == pytest.approx(30, abs=2.5)
    d = (m.pa_deg - angle + 90) % 180 - 90
    assert abs(d) < 2.5
    assert m.axis_ratio < 0.5
    assert not m.flags & Flag.BAR_NOT_ELONGATED


@pytest.mark.parametrize("length", [10, 20, 30, 40])
def test_moments_length_tracks_the_rod(length):
    """The raw length is that of a uniform rod with the map's excess major-axis variance."""
    assert measure_moments(bar_map(length, 33)).length == pytest.approx(length, rel=0.12, abs=1.5)


def test_moments_blur_cancels():
    """Isotropic blur adds the same variance along both axes and leaves the length alone."""
    sharp = measure_moments(bar_map(24, 60, width=1.0)).length
    blurred = measure_moments(bar_map(24, 60, width=4.0)).length
    assert blurred == pytest.approx(sharp, rel=0.1)


def test_moments_bar_split_by_a_bulge():
    """Saliency with a dark centre (the bulge hides the bar's middle) still measures the bar."""
    m = bar_map(36, 20)
    yy, xx = np.mgrid[0:64, 0:64]
    m = m * (1 - np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / (2 * 4.0**2)))
    whole = measure_moments(bar_map(36, 20)).length
    assert 0.85 * whole < measure_moments(m).length < 1.3 * whole  # not one lobe's length


def test_bhambra2022_fails_for_axis_aligned_bar_as_published():
    """The published sweep never stops on linearity along an axis: r ~ 0 there."""
    diag = measure_bhambra2022(bar_map(30, 45))
    axis = measure_bhambra2022(bar_map(30, 0))
    assert diag.linearity > 0.85 and diag.npix >= 40
    assert axis.linearity < 0.85 and axis.npix < 40  # it ran down to the pixel floor


def test_round_and_diffuse_maps_flagged():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    blob = np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / (2 * 6.0**2))
    assert measure_moments(blob).flags & Flag.BAR_NOT_ELONGATED
    noise = np.random.default_rng(1).random((n, n))
    assert measure_moments(noise).flags & Flag.DIFFUSE_SALIENCY


def test_bar_reaching_frame_limit_flagged():
    assert measure_moments(bar_map(62, 0)).flags & Flag.BAR_AT_FRAME_LIMIT


def test_empty_map_and_bad_input():
    assert np.isnan(measure_bar(np.zeros((64, 64))).length)
    with pytest.raises(ValueError, match="square"):
        measure_bar(np.zeros((10, 20)))
    with pytest.raises(ValueError, match="Unknown bar measuring method"):
        measure_bar(np.zeros((8, 8)), method="nope")
