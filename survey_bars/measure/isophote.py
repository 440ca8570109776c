"""The classic comparator: a bar length from isophote ellipse fitting (photutils.isophote).

The bar end is placed at the peak of the ellipticity profile, accepted only when the profile
confirms it further out: the ellipticity drops by at least 0.1, or the position angle turns by
at least 10 degrees (e.g. Erwin & Sparke 2003; Aguerri et al. 2009; Menendez-Delmestre et al.
2007). The bar's full length is twice the semi-major axis at the peak.

The fit is fragile on survey cutouts, so each step is guarded and reported: a failed first
isophote is retried with other starting ellipses; a profile with too few good isophotes, a
peak at the innermost isophotes (inside the PSF) or at the outermost ones ("stopped at the
bar") is reported with a status instead of a length. Needs the ``[qa]`` extra (photutils).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["IsophoteBar", "measure_isophote_bar"]


@dataclass
class IsophoteBar:
    """Result of the isophote method.

    Attributes
    ----------
    length_pix : float
        Full bar length in input pixels (NaN when no bar was confirmed).
    pa_deg : float
        Isophote position angle at the peak, degrees from +x towards +y.
    eps_peak : float
        Peak ellipticity (0 when the fit failed).
    score : float
        Bar score for ROC curves: the ellipticity drop after the peak (0 without a peak).
    status : str
        ``"bar"``, ``"no_bar"``, ``"fit_failed"``, ``"too_few_isophotes"``,
        ``"peak_inside_psf"`` or ``"peak_at_edge"``.
    """

    length_pix: float
    pa_deg: float
    eps_peak: float
    score: float
    status: str


def _fit(data, x0, y0, sma0, maxsma):
    from astropy.utils.exceptions import AstropyWarning
    from photutils.isophote import Ellipse, EllipseGeometry

    for eps0, pa0, s0 in ((0.2, 0.0, sma0), (0.4, np.pi / 2, sma0), (0.1, np.pi / 4, 2 * sma0), (0.3, 0.0, 0.6 * sma0)):
        geom = EllipseGeometry(x0=x0, y0=y0, sma=max(s0, 2.0), eps=eps0, pa=pa0)
        try:
            with warnings.catch_warnings():  # the QA comparator runs in one thread, never on a worker
                warnings.filterwarnings("ignore", category=AstropyWarning)  # a failed isophote is reported below
                warnings.filterwarnings("ignore", category=RuntimeWarning)
                isolist = Ellipse(data, geom).fit_image(minsma=1.0, maxsma=maxsma, step=0.2, maxit=30, fix_center=False, nclip=2)
        except (ValueError, IndexError, TypeError, RuntimeError):
            continue
        if len(isolist) >= 4:
            return isolist
    return None


def measure_isophote_bar(data, x0, y0, r50_pix, *, psf_fwhm_pix=2.0, min_drop=0.1, min_turn_deg=10.0, min_eps=0.25):
    """Measure a bar by isophote fitting.

    Parameters
    ----------
    data : ndarray
        Background-subtracted 2-D image; NaN pixels are masked.
    x0, y0 : float
        Galaxy centre (0-based pixels).
    r50_pix : float
        Half-light radius in pixels: sets the starting ellipse and the outermost isophote
        (4 r50).
    psf_fwhm_pix : float
        Isophotes inside one PSF FWHM cannot hold a bar end.
    min_drop : float
        Ellipticity drop after the peak that confirms a bar.
    min_turn_deg : float
        Position-angle turn after the peak that confirms a bar.
    min_eps : float
        Smallest peak ellipticity accepted as a bar.

    Returns
    -------
    IsophoteBar
    """
    img = np.ma.masked_invalid(np.asarray(data, dtype=float))
    ny, nx = img.shape
    maxsma = min(4.0 * r50_pix, 0.5 * min(nx, ny) - 2)
    if maxsma < 4:
        return IsophoteBar(np.nan, np.nan, 0.0, 0.0, "too_few_isophotes")
    isolist = _fit(img, x0, y0, max(0.5 * r50_pix, 2.0), maxsma)
    if isolist is None:
        return IsophoteBar(np.nan, np.nan, 0.0, 0.0, "fit_failed")
    sma = np.asarray(isolist.sma)
    eps = np.asarray(isolist.eps)
    pa = np.degrees(np.asarray(isolist.pa)) % 180.0
    stop = np.asarray(isolist.stop_code)
    good = (stop <= 2) & np.isfinite(eps) & (sma > 0)
    sma, eps, pa = sma[good], eps[good], pa[good]
    if sma.size < 4:
        return IsophoteBar(np.nan, np.nan, 0.0, 0.0, "too_few_isophotes")
    usable = sma >= psf_fwhm_pix
    if usable.sum() < 3:
        return IsophoteBar(np.nan, np.nan, float(eps.max()), 0.0, "peak_inside_psf")
    k = int(np.flatnonzero(usable)[np.argmax(eps[usable])])
    e_pk = float(eps[k])
    after = slice(k + 1, None)
    if sma[after].size == 0:
        return IsophoteBar(np.nan, float(pa[k]), e_pk, 0.0, "peak_at_edge")
    drop = e_pk - float(eps[after].min())
    dpa = np.abs((pa[after] - pa[k] + 90.0) % 180.0 - 90.0)
    turn = float(dpa.max())
    score = max(drop, 0.0) + (0.05 if turn >= min_turn_deg else 0.0)
    if e_pk < min_eps or not (drop >= min_drop or turn >= min_turn_deg):
        return IsophoteBar(np.nan, float(pa[k]), e_pk, score, "no_bar")
    return IsophoteBar(float(2.0 * sma[k]), float(pa[k]), e_pk, score, "bar")
