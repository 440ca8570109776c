"""SmoothGrad in numpy around a runtime's gradient: orientation symmetrisation."""

from __future__ import annotations

import numpy as np
import pytest

from survey_bars.inference.saliency import _dihedral, _dihedral_inverse, smoothgrad_batch


class _Runtime:
    """Stands in for ModelRuntime: the gradient is ``grad_fn(images)``."""

    def __init__(self, grad_fn):
        self.grad_fn = grad_fn

    def gradient(self, images):
        return np.asarray(self.grad_fn(np.asarray(images)), dtype=np.float32)


def _bar(angle_deg=30.0, n=32):
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    t = np.radians(angle_deg)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    return (np.exp(-0.5 * ((u / 8) ** 2 + (v / 2) ** 2)) + 0.1 * np.exp(-0.5 * (xx**2 + yy**2) / 25)).astype(np.float32)


@pytest.mark.parametrize("k", range(8))
def test_dihedral_inverse(k):
    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    np.testing.assert_array_equal(_dihedral_inverse(_dihedral(x, k), k), x)
    assert k == 0 or not np.array_equal(_dihedral(x, k), x)


def test_symmetrised_gradients_are_rotated_back():
    """For f(x) = |x|^2 / 2 the gradient is the (noisy) input itself, in the input's own frame:
    the symmetrised map must be identical to the plain one. Rotating a gradient the wrong way
    (or not at all) would turn the 30-degree bar by 90 degrees or mirror it."""
    rt = _Runtime(lambda x: x)
    img = _bar(30.0)
    img[5:8, 20:24] += 0.5  # an off-centre knot: no rotation or flip maps the image onto itself
    img = img[None]
    plain = smoothgrad_batch(rt, img, ["g"], n_samples=16, noise_frac=0.05, n_subsets=2)[0]
    sym = smoothgrad_batch(rt, img, ["g"], n_samples=16, noise_frac=0.05, n_subsets=2, symmetrise=True)[0]
    np.testing.assert_allclose(sym.map, plain.map, atol=1e-6)
    np.testing.assert_allclose(sym.subsets, plain.subsets, atol=1e-6)


def test_symmetrisation_averages_an_orientation_dependent_footprint():
    """A network whose gradient is a fixed anisotropic pattern whatever the input: with
    symmetrisation over the eight rotations/flips the map has the square's symmetry (and so
    isotropic second moments), without it it keeps the pattern's orientation."""
    pattern = _bar(20.0)
    rt = _Runtime(lambda x: np.broadcast_to(pattern, x.shape))
    img = np.zeros((1, 32, 32), np.float32)
    plain = smoothgrad_batch(rt, img, ["g"], n_samples=8, n_subsets=1)[0].map
    sym = smoothgrad_batch(rt, img, ["g"], n_samples=8, n_subsets=1, symmetrise=True)[0].map
    for k in range(1, 8):
        np.testing.assert_allclose(_dihedral(sym, k), sym, atol=1e-6)
    assert not np.allclose(np.rot90(plain), plain, atol=1e-3)
    yy, xx = np.mgrid[0:32, 0:32] - 15.5
    cxx, cyy, cxy = ((sym * xx * xx).sum(), (sym * yy * yy).sum(), (sym * xx * yy).sum())
    assert cxx == pytest.approx(cyy, rel=1e-5) and abs(cxy) < 1e-4 * cxx


def test_defaults_are_the_bundles_settings():
    """Without explicit settings, smoothgrad_batch() uses the bundle card's (samples, noise,
    symmetrisation), so a direct call gives the maps the pipeline measures; a runtime without
    a card gets the fallback."""
    from survey_bars.inference.saliency import FALLBACK_SETTINGS, bundle_settings

    pattern = _bar(20.0)

    class WithCard(_Runtime):
        bundle = type("B", (), {"smoothgrad": {"samples": 8, "noise_frac": 0.05, "symmetrise": True}})()

    rt = WithCard(lambda x: np.broadcast_to(pattern, x.shape) * (1 + x.mean()))
    img = _bar(50.0)[None]
    got = smoothgrad_batch(rt, img, ["g"], n_subsets=1)[0]
    want = smoothgrad_batch(rt, img, ["g"], n_samples=8, noise_frac=0.05, n_subsets=1, symmetrise=True)[0]
    np.testing.assert_array_equal(got.map, want.map)
    assert not np.allclose(got.map, smoothgrad_batch(rt, img, ["g"], n_samples=8, noise_frac=0.05, n_subsets=1,
                                                     symmetrise=False)[0].map, atol=1e-3)
    assert bundle_settings(rt) == {"samples": 8, "noise_frac": 0.05, "symmetrise": True}
    assert bundle_settings(_Runtime(lambda x: x)) == FALLBACK_SETTINGS


def test_smoothgrad_map_is_the_mean_absolute_gradient():
    """smoothgrad_batch() averages |g| of exactly the gradients smoothgrad_gradients() returns
    (the building block the saliency-limits benchmark uses for its variants)."""
    from survey_bars.inference.saliency import normalise_map, smoothgrad_gradients

    pattern = _bar(20.0)
    rt = _Runtime(lambda x: np.broadcast_to(pattern, x.shape) * x)
    img = np.stack([_bar(50.0), _bar(10.0)])
    g = smoothgrad_gradients(rt, img, ["a", "b"], n_samples=8, noise_frac=0.05, symmetrise=True)
    assert g.shape == (2, 8, 32, 32) and (g < 0).any()
    res = smoothgrad_batch(rt, img, ["a", "b"], n_samples=8, noise_frac=0.05, n_subsets=2, symmetrise=True)
    for i in range(2):
        np.testing.assert_allclose(res[i].map, normalise_map(np.abs(g[i]).mean(0)), atol=1e-6)
        np.testing.assert_allclose(res[i].subsets[1], normalise_map(np.abs(g[i, 4:]).mean(0)), atol=1e-6)
