"""The half-peak extent of the saliency along the bar's axis: a bar length as the eye reads it.

Astronomers mark a bar's ends where its light stops standing out; Hoyle et al. (2011)
volunteers drew them by eye. On a SmoothGrad map the analogous length is the extent along the
bar's major axis over which the (smoothed) saliency stays above a fraction ``frac`` (0.5) of its
peak: the full width at half maximum of the map along the bar. The axis comes from the
``moments`` measurement of the same map, as do the position angle, the axis ratio and the
flags. The profile is sampled through the frame centre every quarter pixel out to the search
radius; on each side the walk starts at that side's peak (so a map split by a bright bulge
still gives the whole bar) and ends at the interpolated crossing of the level
``base + frac (peak - base)``, where ``base`` is the profile's minimum. A profile that never
falls to the level within the search radius is flagged ``BAR_AT_FRAME_LIMIT``.

Like the moments, the raw length is in model-frame pixels, and a linear calibration on
simulations (``survey-bars calibrate --method profile``; the card's ``calibration["profile"]``)
maps it to the true length; a bundle without one gives raw lengths.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..flags import Flag
from .base import BarMeasurement, MeasuringMethod, check_map, nan_measurement
from .moments import measure_moments

__all__ = ["Profile", "measure_profile"]


def _crossing(t, prof, start, stop, level):
    """The ``t`` where ``prof`` first falls below ``level`` walking from index ``start`` towards ``stop``."""
    step = 1 if stop > start else -1
    for i in range(start, stop + step, step):
        if prof[i] < level:
            j = i - step  # the last sample at or above the level
            f = (prof[j] - level) / (prof[j] - prof[i])
            return t[j] + f * (t[i] - t[j]), False
    return t[stop], True


def measure_profile(saliency, *, frac=0.5, smooth=None, search_radius=0.9, step=0.25):
    """Half-peak extent of the saliency along the bar's major axis.

    Parameters
    ----------
    saliency : ndarray
        2-D square saliency map with the galaxy at its centre.
    frac : float, optional
        The level, as a fraction of the profile's range above its minimum.
    smooth : float, optional
        Gaussian smoothing in pixels before sampling (default ``3 * S / 64`` for an ``S``-pixel
        map, as the moments; 0 for none).
    search_radius : float, optional
        The profile runs out to this fraction of the frame half-width.
    step : float, optional
        Sampling step along the axis, pixels.

    Returns
    -------
    BarMeasurement
        ``length`` the raw full extent in model pixels; position angle, axis ratio and flags
        from :func:`~survey_bars.measure.moments.measure_moments` (plus ``BAR_AT_FRAME_LIMIT``
        when the profile stays above the level to the search radius); ``threshold`` is ``frac``,
        ``npix`` the profile samples above the level and ``linearity`` the moments'.
    """
    m = check_map(saliency)
    if not 0.0 < frac < 1.0:
        msg = f"frac must lie in (0, 1); got {frac}."
        raise ValueError(msg)
    geo = measure_moments(m)
    if not np.isfinite(geo.pa_deg):
        return nan_measurement(geo.flags)
    n = m.shape[0]
    sm = 3.0 * n / 64.0 if smooth is None else float(smooth)
    if sm > 0:
        m = ndimage.gaussian_filter(m, sm)
    c = (n - 1) / 2.0
    rmax = search_radius * n / 2.0
    k = int(np.floor(rmax / step))
    t = np.arange(-k, k + 1) * step
    th = np.radians(geo.pa_deg)
    prof = ndimage.map_coordinates(m, [c + t * np.sin(th), c + t * np.cos(th)], order=1, mode="nearest")
    base = float(prof.min())
    peak = float(prof.max())
    if not peak > base:
        return nan_measurement(geo.flags | Flag.DIFFUSE_SALIENCY)
    level = base + frac * (peak - base)
    mid = k  # t = 0
    right_peak = mid + int(np.argmax(prof[mid:]))
    left_peak = int(np.argmax(prof[: mid + 1]))
    t_right, open_right = _crossing(t, prof, right_peak, len(t) - 1, level)
    t_left, open_left = _crossing(t, prof, left_peak, 0, level)
    flags = int(geo.flags)
    if open_right or open_left:
        flags |= int(Flag.BAR_AT_FRAME_LIMIT)
    return BarMeasurement(float(t_right - t_left), geo.pa_deg, geo.axis_ratio, float(frac), int((prof >= level).sum()),
                          geo.linearity, flags)


class Profile(MeasuringMethod):
    """The half-peak extent of the saliency along the bar's axis (:func:`measure_profile`)."""

    name = "profile"
    version = 1
    summary = "the half-peak extent of the saliency along the bar's axis (calibrated like the moments)."

    def measure(self, saliency):
        return measure_profile(saliency)
