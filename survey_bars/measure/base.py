"""What every bar-measuring method shares: the result type, the method interface, map helpers.

A measuring method turns a SmoothGrad saliency map (model frame, galaxy at the centre) into a
bar length. Each method lives in its own module of :mod:`survey_bars.measure` as a subclass
of :class:`MeasuringMethod` and is registered in :mod:`survey_bars.measure` (the registry).
The pipeline and the calibration never compare method names: they ask the registry.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..flags import Flag
from ..geometry import pixel_grid

__all__ = ["BarMeasurement", "MeasuringMethod", "MapMeasures", "check_map", "frame_grid", "nan_measurement",
           "max_pairwise_distance"]


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


def nan_measurement(flags=0):
    """A :class:`BarMeasurement` of nothing: NaN everywhere, ``BAR_NOT_MEASURED`` set.

    Parameters
    ----------
    flags : int, optional
        Further flags to set.

    Returns
    -------
    BarMeasurement
    """
    return BarMeasurement(np.nan, np.nan, np.nan, np.nan, 0, np.nan, int(flags | Flag.BAR_NOT_MEASURED))


def max_pairwise_distance(xs, ys):
    """The largest distance between two of the points ``(xs, ys)`` (0 for fewer than two).

    Parameters
    ----------
    xs, ys : ndarray
        Point coordinates.

    Returns
    -------
    float
    """
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


def check_map(saliency):
    """Check a saliency map and min-max normalise it to [0, 1].

    Parameters
    ----------
    saliency : array_like
        A square, finite 2-D map.

    Returns
    -------
    ndarray
        float64; all zeros for a constant map.

    Raises
    ------
    ValueError
        For a map that is not square and 2-D, or has non-finite values.
    """
    m = np.asarray(saliency, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        msg = f"A square 2-D saliency map is needed; got shape {m.shape}."
        raise ValueError(msg)
    if not np.isfinite(m).all():
        msg = "The saliency map has non-finite values."
        raise ValueError(msg)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


@functools.lru_cache(maxsize=8)
def frame_grid(n):
    """Read-only ``(yy, xx, rr)`` pixel grids of an ``n x n`` frame (rr from the frame centre).

    Parameters
    ----------
    n : int
        Side of the frame.

    Returns
    -------
    tuple of ndarray
    """
    yy, xx = pixel_grid(n, n)
    c = (n - 1) / 2.0
    rr = np.hypot(xx - c, yy - c)
    rr.flags.writeable = False
    return yy, xx, rr


class MeasuringMethod:
    """The interface of a bar-measuring method. Subclass it in a module of its own and register it.

    Class attributes
    ----------------
    name : str
        What ``--method`` and ``RunOptions.method`` call it, and its key in a bundle card's
        ``calibration``.
    version : int
        Version of the measurement. A bundle's calibration records the version it was fitted
        for (``measurement_version``, 1 when absent) and is refused for another one.
    summary : str
        One line for the ``--method`` help.
    geometry : str or None
        Another method whose measurement gives this one's position angle, axis ratio and
        flags (the learned head takes them from ``moments``); None: its own :meth:`measure`.
    columns : dict
        Catalogue columns that this method fills for every measured bar, whatever the run's
        method: ``name -> (arrow type, unit, description)``. They are added to the catalogue
        schema in registry order.
    reads_maps : bool
        True when :meth:`measure` reads one map alone (the method can then be calibrated on
        simulations with ``survey-bars calibrate --method NAME``); False for a method that
        needs the model (the learned head).
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    summary: ClassVar[str] = ""
    geometry: ClassVar[str | None] = None
    columns: ClassVar[dict] = {}
    reads_maps: ClassVar[bool] = True

    def unavailable(self, card):
        """Why a bundle cannot run this method, or None when it can.

        Parameters
        ----------
        card : dict
            The bundle card.

        Returns
        -------
        str or None
        """
        return None

    def measure(self, saliency):
        """Measure the bar on one saliency map.

        Parameters
        ----------
        saliency : ndarray
            2-D square map in the model frame.

        Returns
        -------
        BarMeasurement
            Lengths are raw (uncalibrated), in model-frame pixels.
        """
        msg = f"The measuring method {self.name!r} reads no single map; use raw_lengths()."
        raise NotImplementedError(msg)

    def raw_lengths(self, runtime, maps, n_subsets, measures):
        """Raw lengths of every map of a chunk, with the lengths of their SmoothGrad subsets.

        Parameters
        ----------
        runtime : survey_bars.inference.runtime.ModelRuntime
            The model (methods that read maps with a network use it).
        maps : dict
            ``key -> SmoothGradResult``.
        n_subsets : int
            Subsets per map; 1 means none.
        measures : dict
            ``key -> MapMeasures``, the per-map cache of measurements.

        Returns
        -------
        dict
            ``key -> (raw length, list of subset lengths)``, model-frame pixels.
        """
        out = {}
        for k in maps:
            subs = measures[k].subset_lengths(self.name) if n_subsets > 1 else []
            out[k] = (measures[k].get(self.name).length, subs)
        return out

    def column_values(self, measures, calibration, resample_scale, to_arcsec):
        """The values of this method's own catalogue :attr:`columns` for one measured bar.

        Parameters
        ----------
        measures : MapMeasures
            The map's measurements.
        calibration : dict or None
            This method's calibration from the bundle; None when the bundle's cannot be used.
        resample_scale : float
            Input pixels per model pixel.
        to_arcsec : float
            Arcsec per model pixel (NaN without a pixel scale).

        Returns
        -------
        dict
            ``column -> float`` (NaN for a missing value).
        """
        return {}


class MapMeasures:
    """The measurements of one SmoothGrad result, made once per method and reused.

    Parameters
    ----------
    result : survey_bars.inference.saliency.SmoothGradResult
        The map and its subset maps.
    registry : callable
        ``name -> MeasuringMethod`` (:func:`survey_bars.measure.get_method`).
    """

    def __init__(self, result, registry):
        self.result = result
        self._registry = registry
        self._main = {}
        self._subsets = {}

    def get(self, name):
        """The named method's :class:`BarMeasurement` of the whole map."""
        if name not in self._main:
            self._main[name] = self._registry(name).measure(self.result.map)
        return self._main[name]

    def subset_lengths(self, name):
        """The named method's raw lengths of the subset maps."""
        if name not in self._subsets:
            self._subsets[name] = [self._registry(name).measure(m).length for m in self.result.subsets]
        return self._subsets[name]
