"""From a raw length on the saliency map to a calibrated length with an uncertainty.

Every method's lengths go through the same steps: a linear calibration fitted on
simulations (``slope``, ``intercept``), an error model (the SmoothGrad subsets' spread plus
systematic terms) and, where the bundle has one, a correction fitted on real galaxies' lengths
(``real``: a scale and an error scale). The fits that make these numbers live in
:mod:`survey_bars.training.calibrate`; they use :func:`length_sigma` too, so the two sides
cannot drift apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["apply_calibration", "length_sigma", "calibrated_length"]


def apply_calibration(length_raw, calibration):
    """Map a raw saliency length (model pixels) to a calibrated one.

    Parameters
    ----------
    length_raw : float or ndarray
        Raw lengths in model-frame pixels.
    calibration : dict
        ``{"slope": a, "intercept": b}`` from the bundle card (identity when empty).

    Returns
    -------
    float or ndarray
    """
    if not calibration:
        return length_raw
    return calibration.get("slope", 1.0) * np.asarray(length_raw) + calibration.get("intercept", 0.0)


def length_sigma(stat, length, resample_scale, scatter_frac=0.0, floor_model_px=0.0, floor_native_px=0.0):
    """The error model of a saliency length: ``sqrt(stat^2 + (a L)^2 + c^2 + (b / scale)^2)``.

    :func:`survey_bars.training.calibrate.fit_error_model` fits ``a``, ``b`` and ``c`` with this same
    function, and :func:`calibrated_length` applies them, so the two cannot drift apart.

    Parameters
    ----------
    stat : float or ndarray
        Statistical error (the SmoothGrad subsets' standard error), model-frame pixels.
    length : float or ndarray
        Calibrated length, model-frame pixels.
    resample_scale : float or ndarray
        Input pixels per model pixel of the normalised frame.
    scatter_frac, floor_model_px, floor_native_px : float, optional
        ``a`` (fraction of the length), ``c`` (model-frame pixels) and ``b`` (input-image pixels).

    Returns
    -------
    float or ndarray
        The uncertainty in model-frame pixels.
    """
    return np.sqrt(stat**2 + (scatter_frac * length) ** 2 + floor_model_px**2 + (floor_native_px / resample_scale) ** 2)


def calibrated_length(raw, subset_lengths, calibration, resample_scale):
    """Calibrate a raw length and give it an uncertainty (both in model-frame pixels).

    Parameters
    ----------
    raw : float
        Length measured on the whole SmoothGrad map, model-frame pixels.
    subset_lengths : sequence of float
        Lengths measured on the maps of disjoint subsets of the SmoothGrad samples (non-finite
        ones are ignored; fewer than two give no statistical term).
    calibration : dict
        The method's calibration from the bundle card (:func:`survey_bars.measure.calibration_for`): ``slope``,
        ``intercept`` and the systematic terms ``scatter_frac`` (fraction of the length),
        ``floor_model_px`` (model-frame pixels) and ``floor_native_px`` (input-image pixels);
        optionally ``real``: ``{"scale": s, "error_scale": k}``, fitted on real galaxies by
        :func:`survey_bars.training.calibrate.calibrate_real`, which multiplies the length by
        ``s`` and its uncertainty by ``s * k``.
    resample_scale : float
        Input pixels per model pixel of the normalised frame (turns ``floor_native_px`` into
        model pixels).

    Returns
    -------
    length, err : float
        The calibrated length and its uncertainty, added in quadrature: the subsets' standard
        error (scaled by the slope) and the systematic terms.
    """
    calibration = calibration or {}
    subs = np.asarray([s for s in subset_lengths if np.isfinite(s)], dtype=float)
    length = float(apply_calibration(raw, calibration))
    slope = float(calibration.get("slope", 1.0))
    err_stat = abs(slope) * float(subs.std(ddof=1)) / np.sqrt(len(subs)) if subs.size >= 2 else 0.0
    err = length_sigma(err_stat, length, resample_scale, **{k: float(calibration.get(k, 0.0)) for k in
                                                           ("scatter_frac", "floor_model_px", "floor_native_px")})
    real = calibration.get("real") or {}
    if real:  # fitted on real galaxies' lengths (the real-dev training folds): one scale, one error scale
        scale = float(real.get("scale", 1.0))
        length, err = scale * length, scale * float(real.get("error_scale", 1.0)) * err
    return length, float(err)
