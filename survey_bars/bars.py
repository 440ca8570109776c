"""Measuring the bar on a saliency map.

Two methods work on a min-max normalised SmoothGrad map in the model frame (galaxy centre at
the frame centre):

``"bhambra2022"``
    The published algorithm, kept for reproduction: sweep a threshold ``t`` from 0.5 to 1.0
    in steps of 0.01 and stop when the pixels above ``t`` are linear, ``|Pearson r(x, y)| >
    0.85``, or fewer than 40 remain. The length is the largest distance between two
    remaining pixels. A bar along the image x or y axis has ``r ~ 0``, so the sweep never
    stops on linearity there and runs down to a few pixels: the known flaw.

``"moments"`` (the default)
    Rotation invariant, restricted to the central structure, and robust to a saliency map
    whose bar is split by a bright bulge. The map is smoothed (``3`` pixels for a 64-pixel
    frame), rescaled to [0, 1] within the search radius, and every pixel above a low floor
    weighs in with its excess. The weighted second moments about the galaxy centre (the frame
    centre) give the major and minor variances ``l1 >= l2`` and the position angle. Blur
    (the smoothing and the network's gradient footprint) adds about the same variance along
    both axes, so the difference ``l1 - l2`` measures the bar alone: the raw length is
    ``sqrt(12 (l1 - l2))``, the full length of a thin uniform rod with that variance. The axis
    ratio is ``sqrt(l2 / l1)``. A calibration measured on simulations (stored in the model
    bundle under ``calibration["moments"]``) maps the raw length to the true one.

A third method, ``"head"``, needs the model: the bundle's learned length head (an ONNX graph
trained on the maps of simulated bars, :mod:`survey_bars.models.head`) reads the length off the
map, and ``moments`` still gives its position angle, axis ratio and flags. The pipeline runs
it (``RunOptions(method="head")``, :meth:`survey_bars.runtime.ModelRuntime.length_head`).

The ``moments`` measurement of survey-bars < 0.2 (a threshold sweep keeping the component
nearest the centre, length = its extent) is :data:`MOMENTS_VERSION` 1; calibrations record the
version they were fitted for.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .flags import Flag
from .normalise import _grid

__all__ = ["BarMeasurement", "measure_bar", "measure_bhambra2022", "measure_moments", "METHODS", "MOMENTS_VERSION"]

METHODS = ("moments", "bhambra2022")
#: Version of the ``moments`` measurement; a bundle's calibration must have been fitted for it.
MOMENTS_VERSION = 2


@dataclass
class BarMeasurement:
    """A bar measured on a saliency map, in model-frame pixels.

    Attributes
    ----------
    length : float
        Full end-to-end length (NaN when nothing was measured).
    pa_deg : float
        Angle of the major axis from the frame's +x axis towards +y, in [0, 180).
    axis_ratio : float
        Minor-to-major axis ratio of the structure.
    threshold : float
        The threshold at which the sweep stopped.
    npix : int
        Pixels in the measured structure.
    linearity : float
        ``|r|`` (bhambra2022) or rotation-invariant linearity (moments) at the stop.
    flags : int
        Measurement flags (:class:`survey_bars.flags.Flag`).
    """

    length: float
    pa_deg: float
    axis_ratio: float
    threshold: float
    npix: int
    linearity: float
    flags: int = 0


def _nan_measurement(flags=0):
    return BarMeasurement(np.nan, np.nan, np.nan, np.nan, 0, np.nan, int(flags | Flag.BAR_NOT_MEASURED))


def _max_pairwise_distance(xs, ys):
    pts = np.column_stack([xs, ys]).astype(np.float64)
    if len(pts) < 2:
        return 0.0
    if len(pts) > 8:
        from scipy.spatial import ConvexHull, QhullError

        try:
            pts = pts[ConvexHull(pts).vertices]
        except (QhullError, ValueError):
            pass  # collinear points: fall through to the direct computation
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d**2).sum(-1)).max())


def _check_map(saliency):
    m = np.asarray(saliency, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        msg = f"A square 2-D saliency map is needed; got shape {m.shape}."
        raise ValueError(msg)
    if not np.isfinite(m).all():
        msg = "The saliency map has non-finite values."
        raise ValueError(msg)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


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
    m = _check_map(saliency)
    if not m.any():
        return _nan_measurement()
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
        return _nan_measurement()
    t, xs, ys, r = last
    length = _max_pairwise_distance(xs, ys)
    pa, q = _moments_pa_q(xs, ys)
    return BarMeasurement(length, pa, q, float(t), int(xs.size), abs(r))


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


def _moments_pa_q(xs, ys):
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
    m = _check_map(saliency)
    n = m.shape[0]
    if not m.any():
        return _nan_measurement(Flag.DIFFUSE_SALIENCY)
    sm = 3.0 * n / 64.0 if smooth is None else float(smooth)
    if sm > 0:
        m = ndimage.gaussian_filter(m, sm)
    yy, xx, rr = _frame_grid(n)
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
        return _nan_measurement(flags | Flag.DIFFUSE_SALIENCY)
    w = np.where(region, np.clip((m - base) / (peak - base) - floor, 0.0, None), 0.0)
    sw = w.sum()
    if sw <= 0:
        return _nan_measurement(flags | Flag.DIFFUSE_SALIENCY)
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


@functools.lru_cache(maxsize=8)
def _frame_grid(n):
    """Read-only ``(yy, xx, rr)`` pixel grids of an ``n x n`` frame (rr from the frame centre)."""
    yy, xx = _grid(n, n)
    c = (n - 1) / 2.0
    rr = np.hypot(xx - c, yy - c)
    rr.flags.writeable = False
    return yy, xx, rr


def measure_bar(saliency, method="moments", **kwargs):
    """Measure the bar on a saliency map with the named method.

    Parameters
    ----------
    saliency : ndarray
        2-D square saliency map.
    method : {"moments", "bhambra2022"}
        The measuring step.
    **kwargs
        Passed to the method's function.

    Returns
    -------
    BarMeasurement
    """
    if method == "moments":
        return measure_moments(saliency, **kwargs)
    if method == "bhambra2022":
        return measure_bhambra2022(saliency, **kwargs)
    msg = f"Unknown bar measuring method {method!r}; choose one of {METHODS}."
    raise ValueError(msg)
