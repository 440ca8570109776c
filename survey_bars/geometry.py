"""Sky and pixel geometry: position angles, directions, angular scales.

Position angles are east of north on the sky and measured from the +x pixel axis towards +y
in a frame. A 2x2 CD matrix (degrees per pixel) maps pixel offsets to (east, north)
projection-plane offsets; ``None`` (an image without a WCS) means north up, east left.
The pipeline, the trainer (bar masks from catalogue PAs) and the QA report all convert here.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["pixel_grid", "sky_pa", "pixel_angle", "pixel_direction", "kpc_per_arcsec", "check_cosmology", "NORTH_UP"]

#: The CD matrix assumed without a WCS: north up, east left (unit pixels).
NORTH_UP = ((-1.0, 0.0), (0.0, 1.0))


def sky_pa(pa_pix_deg, cd):
    """Convert an angle in pixel coordinates to a position angle east of north.

    Parameters
    ----------
    pa_pix_deg : float
        Angle from the +x pixel axis towards +y, degrees.
    cd : ndarray or None
        2x2 CD matrix (degrees per pixel). None assumes north up, east left.

    Returns
    -------
    float
        Position angle in [0, 180).
    """
    if not np.isfinite(pa_pix_deg):
        return np.nan
    t = np.radians(pa_pix_deg)
    d = np.array([np.cos(t), np.sin(t)])
    if cd is None:
        cd = np.array(NORTH_UP)
    xi, eta = np.asarray(cd) @ d
    pa = float(np.degrees(np.arctan2(xi, eta)) % 180.0)
    return 0.0 if pa > 180.0 - 1e-9 else pa


def pixel_angle(pa_deg, cd):
    """Convert a position angle east of north to an angle in pixel coordinates.

    The inverse of :func:`sky_pa` (modulo 180 degrees).

    Parameters
    ----------
    pa_deg : float
        Position angle, east of north, degrees.
    cd : ndarray or None
        2x2 CD matrix (degrees per pixel). None (or non-finite) assumes north up, east left.

    Returns
    -------
    float
        Angle from the +x pixel axis towards +y, in [0, 180); NaN for a NaN angle.
    """
    if not np.isfinite(pa_deg):
        return np.nan
    cd = None if cd is None else np.asarray(cd, dtype=float).reshape(2, 2)
    if cd is None or not np.isfinite(cd).all() or abs(np.linalg.det(cd)) == 0:
        cd = np.array(NORTH_UP)
    t = np.radians(pa_deg)
    dx, dy = np.linalg.solve(cd, np.array([np.sin(t), np.cos(t)]))
    ang = float(np.degrees(np.arctan2(dy, dx)) % 180.0)
    return 0.0 if ang > 180.0 - 1e-9 else ang


def kpc_per_arcsec(redshift, cosmology="Planck18"):
    """Proper kpc per arcsec at each redshift.

    Parameters
    ----------
    redshift : ndarray
        Redshifts (NaN where unknown).
    cosmology : str
        Name of an astropy.cosmology realisation.

    Returns
    -------
    ndarray
        NaN where the redshift is missing or not positive.
    """
    z = np.asarray(redshift, dtype=float)
    out = np.full(z.shape, np.nan)
    ok = np.isfinite(z) & (z > 0)
    if ok.any():  # astropy.cosmology takes ~1 s to import: only when a redshift needs it
        out[ok] = _cosmology(cosmology).kpc_proper_per_arcmin(z[ok]).value / 60.0
    return out


def _cosmology(name):
    """The astropy.cosmology realisation called ``name`` (ValueError naming the choices)."""
    from astropy import cosmology as cosmo_mod

    try:
        return getattr(cosmo_mod, name)
    except AttributeError:
        msg = f"Unknown cosmology {name!r}; use one of {list(cosmo_mod.realizations.available)}."
        raise ValueError(msg) from None


def check_cosmology(name):
    """Raise ValueError unless ``name`` is an astropy.cosmology realisation.

    Parameters
    ----------
    name : str
        E.g. ``"Planck18"``.
    """
    _cosmology(name)


def pixel_direction(pa_deg, cd=None):
    """Unit pixel-frame direction of a sky position angle.

    Parameters
    ----------
    pa_deg : float
        Position angle east of north, degrees.
    cd : array_like, optional
        2x2 CD (pixel scale) matrix of the image in degrees per pixel, mapping pixel offsets
        to (east, north) projection-plane offsets. ``None`` assumes north up, east left.

    Returns
    -------
    ndarray
        ``(dx, dy)`` of unit length, in pixel coordinates (x along columns).
    """
    cd = np.array(NORTH_UP) if cd is None else np.asarray(cd, dtype=float)
    t = math.radians(float(pa_deg))
    d = np.linalg.solve(cd, [math.sin(t), math.cos(t)])
    return d / np.hypot(*d)


@functools.lru_cache(maxsize=32)
def pixel_grid(ny, nx):
    """Read-only pixel coordinate grids ``(Y, X)`` of an ``ny x nx`` image, cached (stamps repeat shapes).

    Parameters
    ----------
    ny, nx : int

    Returns
    -------
    tuple of ndarray
        float64 row and column indices.
    """
    Y, X = np.mgrid[0:ny, 0:nx].astype(np.float64)
    Y.flags.writeable = False
    X.flags.writeable = False
    return Y, X
