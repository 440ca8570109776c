"""Shared fixtures: small synthetic FITS cutouts written in the test's tmp dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def galaxy_image(n=96, r50=8.0, bar_len=None, bar_pa_deg=30.0, noise=0.02, seed=0, flux=100.0):
    """A round exponential galaxy (optionally with a bar-like elongated component) plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2.0
    r = np.hypot(x - c, y - c)
    h = r50 / 1.678
    img = np.exp(-r / h)
    if bar_len:
        t = np.radians(bar_pa_deg)
        u = (x - c) * np.cos(t) + (y - c) * np.sin(t)
        v = -(x - c) * np.sin(t) + (y - c) * np.cos(t)
        a = bar_len / 2.0
        m2 = (u / a) ** 2 + (v / (0.3 * a)) ** 2
        img = img + 0.8 * np.clip(1 - m2, 0, None) ** 2
    img = flux * img / img.sum()
    return (img + noise * rng.standard_normal(img.shape)).astype(np.float32)


def write_fits(path, data, *, scale=0.262, ra=150.0, dec=2.0, objid=None, wcs=True, extra=None):
    """Write a FITS cutout with a TAN WCS (north up, east left)."""
    from astropy.io import fits

    hdr = fits.Header()
    if wcs:
        ny, nx = np.shape(data)[-2:]
        hdr.update(
            CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=ra, CRVAL2=dec,
            CRPIX1=(nx + 1) / 2.0, CRPIX2=(ny + 1) / 2.0,
            CD1_1=-scale / 3600.0, CD1_2=0.0, CD2_1=0.0, CD2_2=scale / 3600.0,
        )
    if objid is not None:
        hdr["OBJID"] = objid
    hdr["BUNIT"] = "nanomaggy"
    for k, v in (extra or {}).items():
        hdr[k] = v
    fits.PrimaryHDU(data, header=hdr).writeto(path, overwrite=True)
    return str(path)


@pytest.fixture
def real_dir():
    """The shared real Spitzer images; the test is skipped when they are absent."""
    if not REAL_DIR.is_dir() or not list(REAL_DIR.glob("*.fits")):
        pytest.skip(f"real images not found in {REAL_DIR}")
    return REAL_DIR
