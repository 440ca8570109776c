"""The FITS saliency maps that ``survey-bars process --save-saliency DIR`` writes, and reading them back.

One file per object, ``DIR/<object id>.fits`` (characters unsafe in file names become ``_``):
the primary HDU holds the SmoothGrad map in the model frame with the frame's geometry in its
header (``SCALE`` input pixels per model pixel, ``X0``/``Y0`` the frame centre in the input,
the raw bar length and angle); an ``IMAGE`` extension holds the normalised frame the network saw.
``survey-bars inspect`` and the calibration read them.
"""

from __future__ import annotations

import os

import numpy as np

from .cutout import safe_name

__all__ = ["saliency_file", "write_saliency_map", "find_saliency_map", "read_saliency_map"]


def saliency_file(directory, object_id):
    """Path of the FITS file that ``--save-saliency DIR`` writes for ``object_id``.

    Parameters
    ----------
    directory : str
        The ``--save-saliency`` directory.
    object_id : str
        The catalogue's object id (characters unsafe in file names become ``_``).

    Returns
    -------
    str
    """
    return os.path.join(directory, safe_name(object_id) + ".fits")


def write_saliency_map(directory, object_id, sal, norm, meas):
    """Write one object's saliency map atomically.

    Parameters
    ----------
    directory : str
        Created if needed.
    object_id : str
        The catalogue's object id.
    sal : ndarray
        The SmoothGrad map (model frame).
    norm : survey_bars.normalise.Normalised
        The normalised frame (its image and geometry go in the file).
    meas : survey_bars.measure.BarMeasurement or None
        The map's measurement (raw length and angle in the header; -1 when unknown).
    """
    from astropy.io import fits

    os.makedirs(directory, exist_ok=True)
    name = safe_name(object_id)
    length = getattr(meas, "length", np.nan)
    pa = getattr(meas, "pa_deg", np.nan)
    hdr = fits.Header()
    hdr["OBJID"] = str(object_id)
    hdr["SCALE"] = (norm.scale, "input pixels per model pixel")
    hdr["X0"] = (norm.x0, "frame centre, 0-based input x")
    hdr["Y0"] = (norm.y0, "frame centre, 0-based input y")
    hdr["BARLEN_M"] = (float(length) if np.isfinite(length) else -1.0, "raw bar length, model px")
    hdr["BARPA_M"] = (float(pa) if np.isfinite(pa) else -1.0, "bar angle from +x, deg")
    hdul = fits.HDUList([fits.PrimaryHDU(sal.astype(np.float32), header=hdr), fits.ImageHDU(norm.image, name="IMAGE")])
    tmp = os.path.join(directory, f".tmp-{name}-{os.getpid()}.fits")
    hdul.writeto(tmp, overwrite=True)
    os.replace(tmp, saliency_file(directory, object_id))


def find_saliency_map(directory, object_id):
    """The saliency file of ``object_id`` in ``directory``, or None.

    Parameters
    ----------
    directory : str or None
    object_id : str

    Returns
    -------
    str or None
    """
    if not directory:
        return None
    for name in (str(object_id), safe_name(object_id)):
        p = os.path.join(directory, f"{name}.fits")
        if os.path.isfile(p):
            return p
    return None


def read_saliency_map(path):
    """Read a ``process --save-saliency`` map.

    Parameters
    ----------
    path : str

    Returns
    -------
    dict
        ``map``, ``image`` (or None), ``scale``, ``x0``, ``y0``.

    Raises
    ------
    ValueError
        When the file is not such a map (the message says what is missing).
    """
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        sal = np.asarray(hdul[0].data, dtype=float)
        hdr = hdul[0].header
        image = np.asarray(hdul["IMAGE"].data, dtype=float) if "IMAGE" in hdul else None
    if sal.ndim != 2 or sal.shape[0] != sal.shape[1]:
        msg = f"{path}: the saliency map must be a square 2-D image, got shape {sal.shape}."
        raise ValueError(msg)
    for key in ("SCALE", "X0", "Y0"):
        if key not in hdr:
            msg = f"{path}: header keyword {key} is missing; was it written by `survey-bars process --save-saliency`?"
            raise ValueError(msg)
    return {"map": sal, "image": image, "scale": float(hdr["SCALE"]), "x0": float(hdr["X0"]), "y0": float(hdr["Y0"])}
