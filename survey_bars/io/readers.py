"""Choosing the reader of a file, by its content: one entry point, :func:`read_cutout`.

The format is told by the file's content first (each reader's signature, :meth:`Reader.sniff`),
then by its name (:attr:`Reader.suffixes`); whatever neither tells is read as FITS, the
last of :data:`READERS`, whose checks say what is wrong with it. So JPEG and PNG images go to
:class:`~survey_bars.io.image.ImageReader`, and ``.fits``, ``.fit``, ``.fts``, gzip-compressed
(``.gz``) and tile-compressed (``.fz``) files to :class:`~survey_bars.io.fits.FitsReader`.

Adding a format: write its reader (a :class:`~survey_bars.io.cutout.Reader`) in a module of
its own and put it in :data:`READERS`, before the FITS reader.
"""

from __future__ import annotations

import os

from .cutout import DEFAULT_MAX_PIXELS, CutoutError, check_file
from .fits import FitsReader
from .image import ImageReader

__all__ = ["READERS", "INPUT_SUFFIXES", "get_reader", "read_cutout", "file_stem", "is_input_file"]

#: The readers, in the order they are asked; the last takes what no other claims.
READERS = (ImageReader(), FitsReader())
#: every suffix that input discovery picks up in directories and globs
INPUT_SUFFIXES = tuple(s for r in READERS for s in r.suffixes)


def get_reader(path, magic):
    """The reader of a file.

    Parameters
    ----------
    path : str
        Absolute path.
    magic : bytes
        The file's first 80 bytes.

    Returns
    -------
    survey_bars.io.cutout.Reader
        The first whose signature matches, else the first whose suffix matches, else the last
        (FITS), whose checks then say what is wrong with the file.
    """
    for reader in READERS:
        if reader.sniff(magic):
            return reader
    low = path.lower()
    for reader in READERS:
        if low.endswith(reader.suffixes):
            return reader
    return READERS[-1]


def read_cutout(path, *, pixel_scale=None, max_pixels=DEFAULT_MAX_PIXELS, band=None):
    """Read and validate one cutout: FITS, JPEG or PNG.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Its content decides the format: JPEG and PNG images are read by
        :mod:`survey_bars.io.image`, anything else as FITS.
    pixel_scale : float, optional
        Pixel scale in arcsec to assume when the file has no celestial WCS (always, for
        images). The row is then flagged ``ASSUMED_PIXEL_SCALE``.
    max_pixels : int, optional
        Images with more pixels (per plane) than this are refused before their data are read.
    band : str or int, optional
        The band of a multi-band FITS file (see :func:`survey_bars.io.fits.select_band`); ignored by single-band
        files and images.

    Returns
    -------
    Cutout

    Raises
    ------
    CutoutError
        When the file cannot be used; ``reason`` names the cause. No other exception
        escapes: an unforeseen failure inside astropy or Pillow is reported as ``corrupt``.
    """
    try:
        return _read_cutout(path, pixel_scale=pixel_scale, max_pixels=max_pixels, band=band)
    except CutoutError:
        raise
    except MemoryError:
        msg = "Reading the file ran out of memory. Lower --max-pixels or give the workers more memory."
        raise CutoutError("out_of_memory", msg) from None
    except Exception as exc:  # astropy and Pillow raise many types (VerifyError, OverflowError...) on damaged files
        msg = f"The file is damaged and could not be read ({type(exc).__name__}: {exc}). Download or copy it again."
        raise CutoutError("corrupt", msg) from None


def _read_cutout(path, *, pixel_scale, max_pixels, band):
    path = os.path.abspath(os.fspath(path))
    st, magic = check_file(path)
    reader = get_reader(path, magic)
    return reader.read(path, st, magic, pixel_scale=pixel_scale, max_pixels=max_pixels, band=band,
                       object_id=file_stem(path))


def is_input_file(name):
    """True when a file name has a suffix that input discovery reads (FITS or image).

    Parameters
    ----------
    name : str
        File name or path.

    Returns
    -------
    bool
    """
    low = os.fspath(name).lower()
    return any(low.endswith(s) for s in INPUT_SUFFIXES)


def file_stem(path):
    """The file name without its FITS or image suffix: the object id of a file without one.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
    """
    name = os.path.basename(os.fspath(path))
    for suf in sorted(INPUT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return os.path.splitext(name)[0] or name
