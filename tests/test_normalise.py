import numpy as np
import pytest

from survey_bars.normalise import NormaliseConfig, estimate_background, normalise

from .conftest import galaxy_image


def test_size_normalisation_is_scale_free():
    """The same galaxy at two angular sizes fills the frame the same way."""
    small = normalise(galaxy_image(n=96, r50=6.0, noise=0.0005, flux=200))
    big = normalise(galaxy_image(n=192, r50=12.0, noise=0.0005, flux=200))
    assert small.r50_pix == pytest.approx(6.0, rel=0.1)
    assert big.r50_pix == pytest.approx(12.0, rel=0.1)
    assert big.scale / small.scale == pytest.approx(2.0, rel=0.1)
    assert np.abs(small.image - big.image).max() < 0.15
    assert np.abs(small.image - big.image).mean() < 0.03


def test_frame_geometry_maps_back():
    n = normalise(galaxy_image(n=101, r50=7.0, noise=0.001))
    cfg = NormaliseConfig()
    assert n.image.shape == (cfg.size, cfg.size) and n.image.dtype == np.float32
    x, y = n.model_to_input((cfg.size - 1) / 2, (cfg.size - 1) / 2)
    assert x == pytest.approx(50.0, abs=0.5) and y == pytest.approx(50.0, abs=0.5)
    assert n.scale == pytest.approx(cfg.half_width_r50 * n.r50_pix / (cfg.size / 2))


def test_background_plane_and_gradient_removed():
    img = galaxy_image(n=96, r50=6.0, noise=0.01).astype(float)
    yy, xx = np.mgrid[0:96, 0:96]
    sky = 5.0 + 0.02 * xx - 0.01 * yy
    plane, noise = estimate_background(img + sky, np.ones(img.shape, bool))
    assert np.abs(plane - sky).max() < 0.05
    assert noise == pytest.approx(0.01, rel=0.3)
    a = normalise(img)
    b = normalise(img + sky)
    assert np.abs(a.image - b.image).max() < 0.1


def test_nan_pixels_counted_and_replaced():
    img = galaxy_image(n=96, r50=6.0)
    img[44:52, 44:52] = np.nan
    n = normalise(img)
    assert np.isfinite(n.image).all()
    assert n.bad_centre_frac > 0.05


def test_off_centre_and_truncation_measured():
    img = galaxy_image(n=96, r50=17.0, noise=0.001)
    shifted = np.roll(img, 20, axis=1)
    n = normalise(shifted)
    assert n.centre_offset_frac > 0.15
    assert n.outside_frac > 0.05


def test_size_override_and_errors():
    img = galaxy_image(n=96, r50=6.0)
    assert normalise(img, r50_pix=10.0).r50_pix == 10.0
    with pytest.raises(ValueError, match="2-D"):
        normalise(np.zeros((3, 32, 32)))
    with pytest.raises(ValueError, match="8 x 8"):
        normalise(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="no finite"):
        normalise(np.full((16, 16), np.nan))


def test_config_roundtrip_rejects_unknown():
    cfg = NormaliseConfig(size=48)
    assert NormaliseConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="newer survey-bars"):
        NormaliseConfig.from_dict({**cfg.to_dict(), "new_knob": 1})


@pytest.mark.parametrize(("kw", "match"), [
    ({"size": 8}, "size must be an integer of at least 16"),
    ({"size": 64.5}, "size must be an integer"),
    ({"half_width_r50": 0.0}, "half_width_r50 must be a positive"),
    ({"asinh_beta": float("nan")}, "asinh_beta must be a positive"),
    ({"asinh_beta": "1"}, "asinh_beta must be a positive"),  # e.g. a hand-edited card
    ({"border_frac": None}, "border_frac must lie between 0 and 0.5"),
    ({"border_frac": 0.5}, "border_frac must lie between 0 and 0.5"),
    ({"min_r50_pix": -1.0}, "min_r50_pix must be a non-negative"),
])
def test_config_rejects_bad_values(kw, match):
    """A bad setting (from a card, ``survey-bars train --size`` or code) is named when it is made."""
    with pytest.raises(ValueError, match=match):
        NormaliseConfig(**kw)


def test_real_images_normalise(real_dir):
    from survey_bars.io import read_cutout

    for f in sorted(real_dir.glob("*.fits")):
        c = read_cutout(f)
        n = normalise(c.data)
        # both galaxies fill the stamp generously: half-light radii of tens of arcsec
        assert 15 < n.r50_pix * c.pixel_scale_arcsec < 60
        assert n.outside_frac < 0.05 and n.centre_offset_frac < 0.05
        assert n.scale > 1.5  # large galaxies are shrunk into the frame


def test_implausible_size_clamped_and_flagged():
    """A galaxy merged with a large pedestal (residual background) must not blow the frame up."""
    img = galaxy_image(n=96, r50=5.0, noise=0.001)
    img[6:90, 6:90] += 0.05  # unsubtracted pedestal, connected to the galaxy
    n = normalise(img)
    assert n.r50_pix == pytest.approx(0.25 * 96) and n.size_from_fallback
    clean = normalise(galaxy_image(n=96, r50=5.0, noise=0.001))
    assert clean.r50_pix == pytest.approx(5.0, rel=0.15) and not clean.size_from_fallback


def _concentrated(n=128, seed=0):
    """A faint exponential disc (r50 16 px) with a bright compact core: most of the flux in the core."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    r = np.hypot(xx, yy)
    rng = np.random.default_rng(seed)
    return 2.0 * np.exp(-r / 9.5) + 400.0 * np.exp(-0.5 * (r / 1.5) ** 2) + rng.normal(0, 0.05, (n, n))


def test_softened_light_sizes_a_wider_frame_for_a_concentrated_galaxy():
    img = _concentrated()
    flux = normalise(img)
    soft = normalise(img, r50_softening=3.0)
    assert soft.scale > 2 * flux.scale  # the core sets the flux's half-light radius, not the disc
    assert (soft.x0, soft.y0) == (flux.x0, flux.y0) and soft.length_frame is None and flux.length_frame is None
    # a galaxy image given a size keeps it
    assert normalise(img, r50_pix=5.0, r50_softening=3.0).r50_pix == pytest.approx(5.0)
    # never narrower than the flux's frame (an image without a bright core barely changes)
    plain = galaxy_image(n=96, r50=8)
    assert normalise(plain, r50_softening=3.0).scale >= normalise(plain).scale


def test_segment_at_edge_says_when_the_stamp_cuts_the_galaxy():
    assert not normalise(galaxy_image(n=128, r50=6)).segment_at_edge  # a small galaxy in a large stamp
    assert normalise(galaxy_image(n=40, r50=12, noise=0.005)).segment_at_edge  # a disc wider than its stamp


def test_length_frame_is_the_softened_frame_made_from_one_measurement():
    """``length_frame_softening``: the softened frame attached as ``length_frame``, the same as a second call gives."""
    img = _concentrated()  # a stamp that holds its galaxy
    plain = normalise(img)
    for always, want in ((False, False), (True, True)):
        n = normalise(img, length_frame_softening=3.0, length_frame_always=always)
        np.testing.assert_array_equal(n.image, plain.image)  # the model frame is untouched
        assert (n.length_frame is not None) == want and not n.segment_at_edge
    wide, soft = normalise(img, length_frame_softening=3.0, length_frame_always=True).length_frame, normalise(img, r50_softening=3.0)
    np.testing.assert_array_equal(wide.image, soft.image)
    assert wide.scale == soft.scale > plain.scale and wide.length_frame is None
    # a stamp that cuts its galaxy gets it without being asked; a given size keeps one frame
    cut = _concentrated(n=48) + galaxy_image(n=48, r50=14, noise=0.0, flux=300.0)
    assert normalise(cut).segment_at_edge and normalise(cut, length_frame_softening=3.0).length_frame is not None
    assert normalise(img, r50_pix=5.0, length_frame_softening=3.0, length_frame_always=True).length_frame is None
