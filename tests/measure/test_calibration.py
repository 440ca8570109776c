"""The calibration steps every method's lengths go through (``survey_bars.measure.calibration``)."""

import numpy as np
import pytest

from survey_bars.measure.calibration import calibrated_length, length_sigma


def test_calibrated_length_applies_the_simulation_fit_then_the_real_one():
    sims = {"slope": 1.5, "intercept": 2.0, "scatter_frac": 0.1, "floor_model_px": 0.5, "floor_native_px": 1.0}
    subsets = [9.0, 10.0, 11.0, 10.0]
    length, err = calibrated_length(10.0, subsets, sims, resample_scale=2.0)
    stat = 1.5 * np.std(subsets, ddof=1) / 2.0
    assert length == pytest.approx(17.0)
    assert err == pytest.approx(length_sigma(stat, 17.0, 2.0, 0.1, 0.5, 1.0))
    real_length, real_err = calibrated_length(10.0, subsets, {**sims, "real": {"scale": 1.2, "error_scale": 1.5}}, 2.0)
    assert real_length == pytest.approx(1.2 * 17.0)
    assert real_err == pytest.approx(1.2 * 1.5 * err)


def test_calibrated_length_without_a_calibration_is_raw():
    length, err = calibrated_length(7.0, [], {}, resample_scale=1.0)
    assert length == 7.0 and err == 0.0
