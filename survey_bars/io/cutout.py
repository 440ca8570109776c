"""The cutout, its errors, and the interface that every input format's reader implements.

A reader turns one file into a :class:`Cutout` or raises :class:`CutoutError` with a short
machine-readable ``reason`` and a message that says what was wrong and what to do. The
pipeline turns a ``CutoutError`` into a ``status="error"`` catalogue row, so a bad file never
stops a job and never loses its row. The readers themselves are in :mod:`.fits` and
:mod:`.image`; :mod:`.readers` chooses one by the file's content.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

__all__ = ["Cutout", "CutoutError", "Reader", "DEFAULT_MAX_PIXELS", "check_file", "check_pixels", "safe_name"]

DEFAULT_MAX_PIXELS = 64_000_000

_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class CutoutError(Exception):
    """A cutout that cannot be used.

    Parameters
    ----------
    reason : str
        Short machine-readable cause, e.g. ``"not_fits"`` or ``"no_image"``.
    message : str
        Human-readable explanation with the remedy.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"{self.reason}: {self.message}"


@dataclass
class Cutout:
    """A validated 2-D cutout.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    object_id : str
        ``OBJID`` (or ``OBJECT``/``ID``) header keyword, else the file name without suffix.
    data : ndarray
        float64 image; NaN where pixels were non-finite.
    pixel_scale_arcsec : float or None
        Pixel scale from the WCS (geometric mean of the two axes) or the assumed value.
    ra, dec : float or None
        Sky position of the stamp centre in degrees (ICRS), from the WCS.
    redshift : float or None
        ``REDSHIFT`` or ``Z`` header keyword, when present and in (0, 20].
    cd : ndarray or None
        2x2 pixel-to-sky matrix of the celestial WCS in degrees per pixel (None without one):
        turns angles in pixel coordinates into position angles.
    flags : int
        Quality-flag bits already known from reading (see :mod:`survey_bars.flags`).
    notes : list of str
        What the reader did that a person may want to know (the plane or band used...).
    band : str or None
        The band used: the FITS band name (or ``"#k"``, its index, when unnamed),
        ``"rgb-mean"`` for a colour image (the mean of its channels) or ``"grey"``; None for a
        single-band FITS file that names no band.
    display : bool
        True for display images (JPEG, PNG): stretched and quantised values, no photometry.
    variance : ndarray or None
        Per-pixel variance of ``data`` (from a VARIANCE/IVAR/RMS extension), or None.
    colour : ndarray or None
        ``(ny, nx, 3)`` uint8 RGB pixels of a colour image, in the orientation of ``data``,
        for display.
    """

    path: str
    object_id: str
    data: np.ndarray
    pixel_scale_arcsec: float | None
    ra: float | None
    dec: float | None
    redshift: float | None = None
    cd: np.ndarray | None = None
    flags: int = 0
    notes: list[str] = field(default_factory=list)
    band: str | None = None
    display: bool = False
    variance: np.ndarray | None = None
    colour: np.ndarray | None = None


class Reader:
    """The interface of an input format's reader. Subclass it in a module of its own and add it
    to :data:`survey_bars.io.readers.READERS`.

    Class attributes
    ----------------
    name : str
        The format's name (``"fits"``, ``"image"``).
    suffixes : tuple of str
        Lower-case file-name endings that input discovery picks up for this format.
    """

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple] = ()

    def sniff(self, magic):
        """Whether the file's first bytes are this format's signature.

        Parameters
        ----------
        magic : bytes
            The file's first 80 bytes.

        Returns
        -------
        bool
        """
        raise NotImplementedError

    def read(self, path, st, magic, *, pixel_scale, max_pixels, band, object_id):
        """Read one checked file.

        Parameters
        ----------
        path : str
            Absolute path of an existing, non-empty, readable regular file.
        st : os.stat_result
            Its stat.
        magic : bytes
            Its first 80 bytes.
        pixel_scale : float or None
            Pixel scale (arcsec) to assume when the file carries none.
        max_pixels : int
            Refuse larger images before reading their pixels.
        band : str or int or None
            The band of a multi-band file (formats without bands ignore it).
        object_id : str
            The id to use when the file names none (its name without the suffix).

        Returns
        -------
        Cutout
            ``data`` already checked by :func:`check_pixels`.

        Raises
        ------
        CutoutError
        """
        raise NotImplementedError


def safe_name(text):
    """``text`` with the characters unsafe in file names replaced by ``_`` (``"object"`` if empty).

    Parameters
    ----------
    text : object
        Usually an object id.

    Returns
    -------
    str
    """
    return _SAFE.sub("_", str(text)) or "object"


def check_file(path):
    """Stat and open checks shared by every format.

    Parameters
    ----------
    path : str
        Absolute path.

    Returns
    -------
    tuple
        ``(os.stat_result, first 80 bytes)``.

    Raises
    ------
    CutoutError
        ``missing``, ``symlink_loop``, ``unreadable``, ``not_a_file`` or ``empty_file``.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            msg = f"Cannot open {path!r}: its symbolic links form a loop. Point the link at a real file."
            raise CutoutError("symlink_loop", msg) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            msg = f"Cannot open {path!r}: {exc.strerror}. Fix the permissions of the file or its directories."
            raise CutoutError("unreadable", msg) from None
        what = "a symbolic link to a missing file" if os.path.islink(path) else "missing"
        msg = f"Cannot open {path!r}: {exc.strerror} ({what}). Check that the file exists."
        raise CutoutError("missing", msg) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "not a regular file")
        msg = f"{path!r} is {kind}, not a cutout file; it was not read. Give regular FITS, JPEG or PNG files."
        raise CutoutError("not_a_file", msg)
    if st.st_size == 0:
        raise CutoutError("empty_file", "The file is empty (0 bytes). Re-create the cutout.")
    if not os.access(path, os.R_OK):
        msg = "The file is not readable (permission denied). Fix its permissions (chmod +r)."
        raise CutoutError("unreadable", msg)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(80)
    except OSError as exc:
        msg = f"The file could not be read: {exc.strerror}. Fix its permissions or storage."
        raise CutoutError("unreadable", msg) from None
    return st, magic


def check_pixels(data):
    """Refuse images too small, without finite pixels, or constant.

    Parameters
    ----------
    data : ndarray
        The 2-D image.

    Returns
    -------
    ndarray
        ``data``, with NaN for its non-finite pixels.

    Raises
    ------
    CutoutError
        ``too_small``, ``all_nan`` or ``constant_image``.
    """
    if min(data.shape) < 8:
        msg = f"The image is only {data.shape[1]} x {data.shape[0]} pixels; at least 8 x 8 are needed."
        raise CutoutError("too_small", msg)
    finite = np.isfinite(data)
    if not finite.any():
        msg = "Every pixel is NaN, infinite or masked. Check the cutout's source image (and its MASK extension, if any)."
        raise CutoutError("all_nan", msg)
    vals = data[finite]
    if float(vals.max()) == float(vals.min()):
        msg = f"Every finite pixel has the same value ({vals.max():g}): there is no image. Check the cutout's source image."
        raise CutoutError("constant_image", msg)
    return data if finite.all() else np.where(finite, data, np.nan)
