"""The published measuring step of Bhambra, Joachimi & Lahav (2022), kept for reproduction.

Sweep a threshold ``t`` from 0.5 to 1.0 in steps of 0.01 and stop when the pixels above ``t``
are linear, ``|Pearson r(x, y)| > 0.85``, or fewer than 40 remain. The length is the largest
distance between two remaining pixels. A bar along the image x or y axis has ``r ~ 0``, so the
sweep never stops on linearity there and runs down to a few pixels: the known flaw.

Every measured bar gets this length, uncalibrated as published, in
``bar_length_bhambra2022_arcsec``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .base import (
    BarMeasurement,
    MeasuringMethod,
    check_map,
    max_pairwise_distance,
    nan_measurement,
)
from .moments import moments_pa_q

__all__ = ["Bhambra2022", "measure_bhambra2022"]


def measure_bhambra2022(saliency, *, start=0.5, stop=1.0, step=0.01, r_linear=0.85, min_pixels=40):
    """The published measuring step of Bhambra, Joachimi & Lahav (2022).

    Parameters
    ----------
    saliency : ndarray
        2-D saliency map (min-max normalised internally).
    start, stop, step : float, optional
        The threshold sweep.
    r_linear : float, optional
        Stop when ``|Pearson r|`` of the pixel coordinates exceeds this.
    min_pixels : int, optional
        Stop when fewer pixels than this remain above the threshold.

    Returns
    -------
    BarMeasurement
        Length is the largest distance between two remaining pixels.
    """
    m = check_map(saliency)
    if not m.any():
        return nan_measurement()
    last = None
    for t in np.arange(start, stop + 1e-9, step):
        ys, xs = np.nonzero(m > t)
        if xs.size == 0:
            break
        r = 0.0
        if xs.size >= 2 and xs.std() > 0 and ys.std() > 0:
            r = float(np.corrcoef(xs, ys)[0, 1])
        last = (t, xs, ys, r)
        if abs(r) > r_linear or xs.size < min_pixels:
            break
    if last is None:
        return nan_measurement()
    t, xs, ys, r = last
    length = max_pairwise_distance(xs, ys)
    pa, q = moments_pa_q(xs, ys)
    return BarMeasurement(length, pa, q, float(t), int(xs.size), abs(r))



class Bhambra2022(MeasuringMethod):
    """The paper's threshold sweep (:func:`measure_bhambra2022`)."""

    name = "bhambra2022"
    version = 1
    summary = "the paper's published algorithm."
    columns = {
        "bar_length_bhambra2022_arcsec": (pa.float64(), "arcsec", "Bar length by the published Bhambra et al. (2022) threshold sweep, for reproduction."),
    }

    def measure(self, saliency):
        return measure_bhambra2022(saliency)

    def column_values(self, measures, calibration, resample_scale, to_arcsec):
        return {"bar_length_bhambra2022_arcsec": measures.get(self.name).length * to_arcsec}
