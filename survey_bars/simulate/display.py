"""Display copies: the simulations as cutout services draw them (asinh colour composites,
8-bit JPEG), with the same truth (:func:`display_copies`).
"""

from __future__ import annotations

import os

import numpy as np

from ..io import read_cutout
from .write import _map, _write_truth


def display_rgb(data, rng):
    """Draw a simulated cutout as a survey cutout service does: an asinh-stretched 8-bit colour image.

    SkyServer and the Legacy Survey viewer serve colour composites with an asinh stretch
    (Lupton et al. 2004) quantised to 8 bits; real SDSS gri JPEGs have a sky near 3 and a noise
    near 3 (of 255) and galaxy cores at 130-195. The stretch's softening (1.5-5 x the sky noise),
    the level that the core reaches (0.5-0.85 of white), a small sky offset and the channel
    weights are drawn from ``rng``, so that a network trained on them does not learn one
    service's settings.

    Parameters
    ----------
    data : ndarray
        A simulated cutout (FITS orientation: row 0 at the bottom).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray
        ``(ny, nx, 3)`` uint8, top row first (as an image file stores it), north up.
    """
    d = np.nan_to_num(np.asarray(data, dtype=float))
    n = min(d.shape)
    k = max(n // 10, 2)
    border = np.concatenate([d[:k].ravel(), d[-k:].ravel(), d[:, :k].ravel(), d[:, -k:].ravel()])
    bkg = float(np.median(border))
    noise = 1.4826 * float(np.median(np.abs(border - bkg))) or 1e-3
    f = np.arcsinh((d - bkg) / (noise * rng.uniform(1.5, 5.0)))
    cy, cx = d.shape[0] // 2, d.shape[1] // 2
    core = float(np.sort(f[cy - 3 : cy + 4, cx - 3 : cx + 4].ravel())[-3])
    v = rng.uniform(0.0, 0.02) + rng.uniform(0.5, 0.85) * f / max(core, 1e-6)
    w = rng.uniform(0.8, 1.2, 3)
    w /= w.mean()
    rgb = [np.clip(np.round(255 * v * wi + rng.normal(0.0, 0.5, v.shape)), 0, 255) for wi in w]
    return np.dstack(rgb).astype(np.uint8)[::-1]


def _display_one(args):
    from PIL import Image

    src, dst, seed, i = args
    rng = np.random.default_rng([seed, i])
    Image.fromarray(display_rgb(read_cutout(src).data, rng)).save(dst, quality=int(rng.integers(75, 96)))


def display_copies(sim_dir, out_dir, *, seed=0, workers=1):
    """Write a JPEG display copy of every simulated cutout, with the same truth.

    Parameters
    ----------
    sim_dir : str
        A directory written by :func:`simulate`.
    out_dir : str
        Receives ``{object_id}.jpg`` per galaxy (see :func:`display_rgb`) and a
        ``truth.parquet`` whose ``file`` column names them (the other columns, the pixel scale
        among them, are the simulation's), so that it trains like any simulation directory.
    seed : int, optional
        Seed of the display settings: galaxy ``i`` uses ``default_rng([seed, i])``.
    workers : int, optional
        Processes.

    Returns
    -------
    pandas.DataFrame
        The truth table of the copies.
    """
    import pandas as pd

    truth = pd.read_parquet(os.path.join(sim_dir, "truth.parquet"))
    os.makedirs(out_dir, exist_ok=True)
    names = [os.path.splitext(f)[0] + ".jpg" for f in truth["file"]]
    jobs = [(os.path.join(sim_dir, f), os.path.join(out_dir, j), seed, i) for i, (f, j) in enumerate(zip(truth["file"], names))]
    _map(_display_one, jobs, workers, chunksize=64)
    out = truth.copy()
    out["file"] = names
    _write_truth(out, os.path.join(out_dir, "truth.parquet"))
    return out
