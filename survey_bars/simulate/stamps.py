"""Small-stamp copies: the simulations cut to the stamps that survey cutout services serve.

The simulator draws a stamp of about nine half-light radii on each side of the galaxy; the
Galaxy Zoo SDSS cutouts reach only about two, so the galaxy fills the stamp, the model frame
runs past its edge (95 % of the real-dev Hoyle bars are flagged ``TRUNCATED``) and the disc is
cut. A network that has only seen whole discs reads such stamps poorly (issue 23, items 4 and
5). :func:`small_stamp_copies` cuts every simulated cutout to a square of half-width drawn
between ``1.6`` and ``3.2`` half-light radii about the galaxy, never cutting the bar, with
the WCS and the truth kept; :func:`~survey_bars.simulate.display.display_copies` then draws
them as JPEGs like any simulation directory.
"""

from __future__ import annotations

import os

import numpy as np

from .write import _map, _write_truth

__all__ = ["small_stamp_copies", "SMALL_STAMP_HALF_WIDTH"]

#: Half-width of the small stamps, in true half-light radii: uniform between these.
SMALL_STAMP_HALF_WIDTH = (1.6, 3.2)


def _crop_side(row, rng, n, half_width, min_size):
    """The side of the small stamp: the drawn half-width, widened to keep the bar, within [min_size, n]."""
    scale = float(row["pixel_scale_arcsec"])
    half = rng.uniform(*half_width) * float(row["r50_arcsec"]) / scale
    length = row.get("bar_length_arcsec")
    if bool(row.get("has_bar")) and length is not None and np.isfinite(length):
        half = max(half, 0.5 * float(length) / scale + 2.0)  # the bar stays inside
    return int(np.clip(2 * round(half), min(min_size, n), n))


def _crop_one(args):
    import warnings

    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS

    src, dst, row, seed, i, half_width, min_size = args
    rng = np.random.default_rng([seed, i])
    with fits.open(src, memmap=False) as hdul:
        data = np.asarray(hdul[0].data)
        header = hdul[0].header.copy()
    n = min(data.shape)
    side = _crop_side(row, rng, n, half_width, min_size)
    centre = ((data.shape[1] - 1) / 2.0, (data.shape[0] - 1) / 2.0)  # the galaxy sits at the stamp centre
    with warnings.catch_warnings():  # one process of our own pool: no worker's filters are touched
        warnings.filterwarnings("ignore", category=AstropyWarning)
        cut = Cutout2D(data, centre, (side, side), wcs=WCS(header), mode="trim")
    new = cut.wcs.to_header()
    for key, value in header.items():  # everything but the image geometry and the WCS
        if key not in new and key not in ("SIMPLE", "BITPIX", "EXTEND", "COMMENT", "HISTORY", "") \
                and not key.startswith("NAXIS"):
            new[key] = value
    fits.PrimaryHDU(cut.data, header=new).writeto(dst, overwrite=True)
    return side


def small_stamp_copies(sim_dir, out_dir, *, seed=0, half_width=SMALL_STAMP_HALF_WIDTH, min_size=32, workers=1):
    """Write a small-stamp FITS copy of every simulated cutout, with the same truth.

    Parameters
    ----------
    sim_dir : str
        A directory written by :func:`~survey_bars.simulate.simulate`.
    out_dir : str
        Receives the cut FITS files (same names) and a ``truth.parquet`` whose ``stamp_size``
        holds the new sides; every other truth column (the bar's length and angle among them)
        is the simulation's.
    seed : int, optional
        Galaxy ``i`` draws its half-width from ``default_rng([seed, i])``.
    half_width : tuple of float, optional
        The half-width's range, in the galaxy's true half-light radii.
    min_size : int, optional
        The smallest side, pixels (the stamp's own size when that is smaller).
    workers : int, optional
        Processes.

    Returns
    -------
    pandas.DataFrame
        The truth table of the copies.
    """
    import pandas as pd

    lo, hi = half_width
    if not 0 < lo <= hi:
        msg = f"half_width must be (low, high) with 0 < low <= high; got {half_width!r}."
        raise ValueError(msg)
    truth = pd.read_parquet(os.path.join(sim_dir, "truth.parquet"))
    os.makedirs(out_dir, exist_ok=True)
    rows = truth.to_dict("records")
    jobs = [(os.path.join(sim_dir, r["file"]), os.path.join(out_dir, r["file"]), r, seed, i, (lo, hi), min_size)
            for i, r in enumerate(rows)]
    sides = _map(_crop_one, jobs, workers, chunksize=64)
    out = truth.copy()
    out["stamp_size"] = np.asarray(sides, dtype=out["stamp_size"].dtype)
    _write_truth(out, os.path.join(out_dir, "truth.parquet"))
    return out
