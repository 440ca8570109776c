"""Sky and pixel geometry (survey_bars.geometry): position angles, directions, angular scales."""

import math

import numpy as np
import pytest

from survey_bars.geometry import kpc_per_arcsec, pixel_angle, pixel_direction, sky_pa


def test_sky_pa_conventions():
    # north up, east left: +y is north (PA 0), -x is east (PA 90)
    assert sky_pa(90.0, None) == pytest.approx(0.0)
    assert sky_pa(0.0, None) == pytest.approx(90.0)
    assert sky_pa(45.0, None) == pytest.approx(135.0)
    flipped = np.array([[1.0, 0.0], [0.0, 1.0]])  # east right
    assert sky_pa(45.0, flipped) == pytest.approx(45.0)
    assert np.isnan(sky_pa(np.nan, None))


def test_kpc_per_arcsec():
    s = kpc_per_arcsec(np.array([0.05, np.nan, -1.0]))
    assert s[0] == pytest.approx(1.0, rel=0.05)  # ~0.98 kpc/arcsec at z=0.05 (Planck18)
    assert np.isnan(s[1:]).all()
    with pytest.raises(ValueError, match="Unknown cosmology"):
        kpc_per_arcsec(np.array([0.1]), "NoSuchCosmo")


def test_pixel_direction_inverts_the_sky_pa_convention():
    rng = np.random.default_rng(0)
    for _ in range(20):
        rot = math.radians(rng.uniform(0, 360))
        s = rng.uniform(0.1, 1.0) / 3600
        flip = rng.choice([-1, 1])
        cd = s * np.array([[-math.cos(rot), math.sin(rot)], [math.sin(rot), math.cos(rot)]]) @ np.diag([1, flip])
        pa = rng.uniform(0, 180)
        d = pixel_direction(pa, cd)
        back = sky_pa(math.degrees(math.atan2(d[1], d[0])), cd)
        assert min(abs(back - pa), 180 - abs(back - pa)) < 1e-6
    # north up, east left: PA 90 (east) points to -x
    assert np.allclose(pixel_direction(90.0), [-1, 0])


def test_pixel_angle_inverts_sky_pa():
    north_up = np.array([[-1e-4, 0.0], [0.0, 1e-4]])
    assert pixel_angle(0.0, north_up) == pytest.approx(90.0)  # north is +y
    assert pixel_angle(90.0, north_up) == pytest.approx(0.0, abs=1e-9)  # east is -x
    rot = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]) @ north_up
    for pa in (0.0, 17.0, 64.0, 133.0, 179.0):
        for cd in (north_up, rot, np.diag([1e-4, 1e-4])):
            assert sky_pa(pixel_angle(pa, cd), cd) == pytest.approx(pa, abs=1e-6)
    assert np.isnan(pixel_angle(np.nan, north_up))
    assert pixel_angle(30.0, None) == pytest.approx(pixel_angle(30.0, north_up))
