"""Fitting the length calibration's error model (calibrate.fit_error_model)."""

from __future__ import annotations

import numpy as np
import pytest

from survey_bars.training.calibrate import fit_error_model


def lengths(n=4000, a=0.08, b=1.5, c=1.0, seed=0, outliers=0.0):
    """Measured lengths whose errors are a fraction ``a``, a floor of ``c`` model pixels and one of ``b`` input pixels."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(8, 60, n)
    scale = rng.uniform(0.3, 3.0, n)
    stat = 0.02 * true
    sigma = np.sqrt(stat**2 + (a * true) ** 2 + c**2 + (b / scale) ** 2)
    meas = true + sigma * rng.standard_normal(n)
    bad = rng.random(n) < outliers
    meas[bad] = true[bad] * rng.uniform(1.5, 2.5, bad.sum())
    return meas, true, stat, scale


def test_fit_error_model_recovers_the_fraction_and_the_floors():
    meas, true, stat, scale = lengths()
    m = fit_error_model(meas, true, stat, scale)
    assert m["scatter_frac"] == pytest.approx(0.08, rel=0.1)
    assert m["floor_native_px"] == pytest.approx(1.5, rel=0.15)
    assert m["floor_model_px"] == pytest.approx(1.0, abs=0.3)
    assert m["within_1sigma"] == pytest.approx(0.683, abs=0.01)
    assert m["within_2sigma"] == pytest.approx(0.954, abs=0.015)


def test_fit_error_model_keeps_the_coverage_with_outliers():
    m = fit_error_model(*lengths(outliers=0.1))
    # the Student-t likelihood keeps the outliers from dominating the fit, so the scatter stays
    # near the true fraction; the coverage scaling then makes 68.3 % of all lengths, outliers
    # included, lie within one sigma, and the 2-sigma fraction shows the heavy tail
    assert 0.07 < m["scatter_frac"] < 0.13
    assert m["within_1sigma"] == pytest.approx(0.683, abs=0.01)
    assert m["within_2sigma"] < 0.9


def test_fit_error_model_without_floors_and_with_too_few_lengths():
    meas, true, stat, scale = lengths(b=0.0, c=0.0)
    m = fit_error_model(meas, true, stat, scale)
    assert m["floor_native_px"] < 0.5 and m["floor_model_px"] < 0.5 and m["scatter_frac"] == pytest.approx(0.08, rel=0.1)
    with pytest.raises(ValueError, match="too few to fit an error model"):
        fit_error_model(meas[:9], true[:9], stat[:9], scale[:9])
    meas[:] = np.nan
    with pytest.raises(ValueError, match="Only 0 usable"):
        fit_error_model(meas, true, stat, scale)


def test_fit_error_model_adds_nothing_when_the_spread_alone_covers():
    meas, true, stat, scale = lengths(a=0.0, b=0.0, c=0.0)
    m = fit_error_model(meas, true, 3.0 * stat, scale)  # an overestimated statistical spread
    assert m["coverage_scale"] == 0.0 and m["scatter_frac"] == m["floor_model_px"] == m["floor_native_px"] == 0.0
    assert m["within_1sigma"] > 0.9
