"""The default analytic measurement: second moments of the central saliency.

Rotation invariant, restricted to the central structure, and robust to a saliency map whose
bar is split by a bright bulge. The map is smoothed (``3`` pixels for a 64-pixel frame),
rescaled to [0, 1] within the search radius, and every pixel above a low floor weighs in with
its excess. The weighted second moments about the galaxy centre (the frame centre) give the
major and minor variances ``l1 >= l2`` and the position angle. Blur (the smoothing and the
network's gradient footprint) adds about the same variance along both axes, so the difference
``l1 - l2`` measures the bar alone: the raw length is ``sqrt(12 (l1 - l2))``, the full length
of a thin uniform rod with that variance. The axis ratio is ``sqrt(l2 / l1)``. A calibration
measured on simulations (stored in the model bundle under ``calibration["moments"]``) maps the
raw length to the true one.

The ``moments`` measurement of survey-bars < 0.2 (a threshold sweep keeping the component
nearest the centre, length = its extent) is version 1; calibrations record the version they
were fitted for (:data:`MOMENTS_VERSION`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import ndimage

from ..flags import Flag
from .base import (
    BarMeasurement,
    MeasuringMethod,
    check_map,
    frame_grid,
    nan_measurement,
)
from .calibration import calibrated_length

__all__ = ["Moments", "measure_moments", "moments_pa_q", "MOMENTS_VERSION"]

#: Version of the ``moments`` measurement; a bundle's calibration must have been fitted for it.
MOMENTS_VERSION = 2


def _moments(xs, ys, w=None):
    w = np.ones(xs.size) if w is None else w
    sw = w.sum()
    mx, my = (w * xs).sum() / sw, (w * ys).sum() / sw
    dx, dy = xs - mx, ys - my
    cxx = (w * dx * dx).sum() / sw + 1.0 / 12.0  # + pixel size
    cyy = (w * dy * dy).sum() / sw + 1.0 / 12.0
    cxy = (w * dx * dy).sum() / sw
    tr = cxx + cyy
    det = cxx * cyy - cxy * cxy
    disc = np.sqrt(max(tr * tr / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, max(tr / 2 - disc, 0.0)
    theta = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    return mx, my, l1, l2, theta


def moments_pa_q(xs, ys):
    """Position angle (degrees from +x towards +y, in [0, 180)) and axis ratio of a pixel set."""
    if xs.size < 2:
        return np.nan, np.nan
    _, _, l1, l2, theta = _moments(xs.astype(float), ys.astype(float))
    return float(np.degrees(theta) % 180.0), float(np.sqrt(l2 / l1)) if l1 > 0 else np.nan


def measure_moments(
    saliency,
    *,
    smooth=None,
    floor=0.1,
    search_radius=0.9,
    diffuse_contrast=1.5,
    round_axis_ratio=0.9,
    edge_fraction=0.05,
):
    """Rotation-invariant second-moment measurement of the central structure (the default).

    Parameters
    ----------
    saliency : ndarray
        2-D square saliency map with the galaxy at its centre.
    smooth : float, optional
        Gaussian smoothing in pixels before measuring (default ``3 * S / 64`` for an ``S``-pixel
        map; 0 for none).
    floor : float, optional
        Pixels weigh in with their excess over this fraction of the smoothed map's range within
        the search region.
    search_radius : float, optional
        Only pixels within this fraction of the frame half-width are considered.
    diffuse_contrast : float, optional
        ``DIFFUSE_SALIENCY`` is set when the mean saliency within half the search radius is
        less than this times the mean outside it.
    round_axis_ratio : float, optional
        ``BAR_NOT_ELONGATED`` is set when the axis ratio exceeds this.
    edge_fraction : float, optional
        ``BAR_AT_FRAME_LIMIT`` is set when more than this fraction of the weight lies within
        two smoothing lengths of the search radius.

    Returns
    -------
    BarMeasurement
        ``length`` is the raw (uncalibrated) full length in model pixels, ``threshold`` the
        floor, ``npix`` the number of weighted pixels and ``linearity`` ``(l1 - l2) / (l1 + l2)``.
    """
    m = check_map(saliency)
    n = m.shape[0]
    if not m.any():
        return nan_measurement(Flag.DIFFUSE_SALIENCY)
    sm = 3.0 * n / 64.0 if smooth is None else float(smooth)
    if sm > 0:
        m = ndimage.gaussian_filter(m, sm)
    yy, xx, rr = frame_grid(n)
    rmax = search_radius * n / 2.0
    region = rr <= rmax
    inner = rr <= rmax / 2.0
    flags = 0
    mean_in = m[inner].mean()
    ring = region & ~inner
    mean_out = m[ring].mean() if ring.any() else 0.0
    if mean_in < diffuse_contrast * mean_out:
        flags |= Flag.DIFFUSE_SALIENCY
    peak = m[region].max()
    base = m[region].min()
    if peak <= base:
        return nan_measurement(flags | Flag.DIFFUSE_SALIENCY)
    w = np.where(region, np.clip((m - base) / (peak - base) - floor, 0.0, None), 0.0)
    sw = w.sum()
    if sw <= 0:
        return nan_measurement(flags | Flag.DIFFUSE_SALIENCY)
    c = (n - 1) / 2.0
    dx, dy = xx - c, yy - c
    cxx = (w * dx * dx).sum() / sw
    cyy = (w * dy * dy).sum() / sw
    cxy = (w * dx * dy).sum() / sw
    tr = cxx + cyy
    disc = np.sqrt(max(tr * tr / 4.0 - (cxx * cyy - cxy * cxy), 0.0))
    l1, l2 = tr / 2.0 + disc, max(tr / 2.0 - disc, 0.0)
    theta = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    length = float(np.sqrt(12.0 * (l1 - l2)))
    q = float(np.sqrt(l2 / l1)) if l1 > 0 else np.nan
    if not q <= round_axis_ratio:
        flags |= Flag.BAR_NOT_ELONGATED
    if w[rr > rmax - 2.0 * max(sm, 1.0)].sum() > edge_fraction * sw:
        flags |= Flag.BAR_AT_FRAME_LIMIT
    lin = float((l1 - l2) / (l1 + l2)) if l1 + l2 > 0 else 0.0
    return BarMeasurement(length, float(np.degrees(theta) % 180.0), q, float(floor), int((w > 0).sum()), lin, int(flags))



class Moments(MeasuringMethod):
    """Calibrated second moments of the central saliency (:func:`measure_moments`)."""

    name = "moments"
    version = MOMENTS_VERSION
    summary = "calibrated second moments of the central saliency."
    columns = {
        "bar_length_moments_arcsec": (pa.float64(), "arcsec", "Bar length from the second moments of the same saliency map, linearly calibrated on simulations (the bundle's 'moments' calibration, with its real-galaxy scale where it has one): an analytic cross-check of a learned head, and bar_length_arcsec itself under --method moments."),
        "bar_length_moments_err_arcsec": (pa.float64(), "arcsec", "Uncertainty of bar_length_moments_arcsec, made like bar_length_err_arcsec."),
    }

    def measure(self, saliency):
        return measure_moments(saliency)

    def column_values(self, measures, calibration, resample_scale, to_arcsec):
        if calibration is None:  # fitted for another version: the cross-check stays null
            return {"bar_length_moments_arcsec": np.nan, "bar_length_moments_err_arcsec": np.nan}
        subs = measures.subset_lengths(self.name) if len(measures.result.subsets) > 1 else []
        length, err = calibrated_length(measures.get(self.name).length, subs, calibration, resample_scale)
        return {"bar_length_moments_arcsec": length * to_arcsec, "bar_length_moments_err_arcsec": err * to_arcsec}
