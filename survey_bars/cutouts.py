"""Reading and validating one FITS cutout.

:func:`read_cutout` returns a :class:`Cutout` or raises :class:`CutoutError` with a short
machine-readable ``reason`` and a message that says what was wrong and what to do. The
pipeline turns a ``CutoutError`` into an ``status="error"`` catalogue row, so a bad file never
stops a job and never loses its row.

Supported: ``.fits``, ``.fit``, ``.fts``, gzip-compressed (``.gz``) and tile-compressed
(``.fz``) files; the first HDU with 2-D (or higher) image data is used.
"""

from __future__ import annotations

import gzip
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .flags import Flag

__all__ = ["Cutout", "CutoutError", "read_cutout", "FITS_SUFFIXES", "DEFAULT_MAX_PIXELS"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")
DEFAULT_MAX_PIXELS = 64_000_000
_GZIP_RATIO_LIMIT = 200  # a .gz that claims to unpack beyond this ratio is refused as a bomb


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
        ``REDSHIFT`` or ``Z`` header keyword, when present.
    cd : ndarray or None
        2x2 pixel-to-sky matrix of the celestial WCS in degrees per pixel (None without one):
        turns angles in pixel coordinates into position angles.
    flags : int
        Quality-flag bits already known from reading (see :mod:`survey_bars.flags`).
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


def _object_id(header, path):
    for key in ("OBJID", "OBJECT_ID", "OBJECT", "ID"):
        if key in header and str(header[key]).strip():
            return str(header[key]).strip()
    name = os.path.basename(path)
    for suf in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return os.path.splitext(name)[0]


def _check_gzip(path):
    """Refuse gzip files whose declared size is implausibly large (decompression bombs)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")  # uncompressed size mod 2**32
    except OSError:
        return
    if size > 0 and isize > _GZIP_RATIO_LIMIT * size and isize > 50_000_000:
        msg = (
            f"The gzip file unpacks to {isize} bytes from {size} ({isize / size:.0f}x); this "
            "looks like a decompression bomb and was not read. Recompress the cutout normally."
        )
        raise CutoutError("gzip_bomb", msg)


def _header_pixels(hdu):
    h = hdu.header
    n = int(h.get("ZNAXIS", h.get("NAXIS", 0)) or 0)
    prefix = "ZNAXIS" if "ZNAXIS" in h else "NAXIS"
    dims = [int(h.get(f"{prefix}{i}", 0) or 0) for i in range(1, n + 1)]
    return dims


def _celestial_wcs(header, shape):
    """Return (pixel_scale_arcsec, ra, dec, flags, cd) from the header's WCS."""
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales

    flags = 0
    has_wcs_keys = any(k in header for k in ("CTYPE1", "CD1_1", "CDELT1", "PC1_1"))
    if not has_wcs_keys:
        return None, None, None, int(Flag.NO_WCS), None
    hdr = header.copy()
    # SIP coefficients without the -SIP suffix on CTYPE are common in archive files; astropy
    # applies them and logs an INFO message per file, which we silence (the distortion is
    # negligible over a cutout either way).
    from astropy import log as astropy_log

    old_level = astropy_log.level
    astropy_log.setLevel("WARNING")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(hdr, naxis=2, fix=True)
    except Exception:  # astropy raises several types on malformed WCS
        return None, None, None, int(Flag.NO_WCS), None
    finally:
        astropy_log.setLevel(old_level)
    if not w.has_celestial:
        return None, None, None, int(Flag.NO_WCS | Flag.NON_CELESTIAL_WCS), None
    wc = w.celestial
    try:
        scales = proj_plane_pixel_scales(wc)
        scale = float(np.sqrt(abs(scales[0] * scales[1]))) * 3600.0
        ny, nx = shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ra, dec = wc.all_pix2world([[(nx - 1) / 2.0, (ny - 1) / 2.0]], 0)[0]
        ra, dec = float(ra) % 360.0, float(dec)
        cd = np.asarray(wc.pixel_scale_matrix, dtype=float)
    except Exception:
        return None, None, None, int(Flag.NO_WCS), None
    if not (np.isfinite(scale) and scale > 0 and np.isfinite(ra) and np.isfinite(dec) and np.isfinite(cd).all()):
        return None, None, None, int(Flag.NO_WCS), None
    return scale, ra, dec, flags, cd


def read_cutout(path, *, pixel_scale=None, max_pixels=DEFAULT_MAX_PIXELS):
    """Read and validate one FITS cutout.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    pixel_scale : float, optional
        Pixel scale in arcsec to assume when the file has no celestial WCS. The row is then
        flagged ``ASSUMED_PIXEL_SCALE``.
    max_pixels : int, optional
        Images with more pixels than this are refused before their data are read.

    Returns
    -------
    Cutout

    Raises
    ------
    CutoutError
        When the file cannot be used; ``reason`` names the cause.
    """
    from astropy.io import fits

    path = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(path)
    except OSError as exc:
        msg = f"Cannot open {path!r}: {exc.strerror}. Check that the file exists."
        raise CutoutError("missing", msg) from None
    if st.st_size == 0:
        raise CutoutError("empty_file", "The file is empty (0 bytes). Re-create the cutout.")
    if not os.access(path, os.R_OK):
        msg = "The file is not readable (permission denied). Fix its permissions (chmod +r)."
        raise CutoutError("unreadable", msg)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        msg = f"The file could not be read: {exc.strerror}. Fix its permissions or storage."
        raise CutoutError("unreadable", msg) from None
    if magic == b"\x1f\x8b":
        _check_gzip(path)

    flags = 0
    notes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=True, ignore_missing_simple=False)
    except OSError as exc:
        msg = f"Not a readable FITS file ({exc}). Check that it is FITS and not truncated."
        raise CutoutError("not_fits", msg) from None
    except Exception as exc:
        msg = f"Not a readable FITS file ({type(exc).__name__}: {exc})."
        raise CutoutError("not_fits", msg) from None

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdu = None
            try:
                for h in hdul:
                    dims = _header_pixels(h)
                    if len(dims) >= 2 and all(d > 0 for d in dims) and h.is_image:
                        hdu = h
                        break
                    if len(dims) >= 1 and h.is_image and any(d > 0 for d in dims) and hdu is None:
                        if len(dims) == 1:
                            msg = (
                                f"The image is 1-D ({dims[0]} values); a 2-D cutout is needed. "
                                "Check that this is an image, not a spectrum or a table."
                            )
                            raise CutoutError("not_2d", msg)
            except CutoutError:
                raise
            except Exception as exc:
                msg = f"The FITS structure is damaged ({type(exc).__name__}: {exc}); the file may be truncated."
                raise CutoutError("corrupt", msg) from None
            if hdu is None:
                msg = "The file holds no image data (zero-size or table-only HDUs). Supply a 2-D image cutout."
                raise CutoutError("no_image", msg)
            dims = _header_pixels(hdu)
            npix = int(np.prod(dims, dtype=np.int64))
            plane_pix = dims[0] * dims[1]
            if plane_pix > max_pixels:
                msg = (
                    f"The image has {dims[0]} x {dims[1]} = {plane_pix} pixels, over --max-pixels "
                    f"{max_pixels}; it was not read. Make a smaller cutout or raise --max-pixels."
                )
                raise CutoutError("too_large", msg)
            header = hdu.header
            try:
                if len(dims) > 2:
                    section = hdu.section if not isinstance(hdu, fits.CompImageHDU) else None
                    idx = (0,) * (len(dims) - 2) + (slice(None), slice(None))
                    data = section[idx] if section is not None else hdu.data[idx]
                    flags |= int(Flag.FIRST_PLANE_OF_CUBE)
                    notes.append(f"data cube of shape {tuple(reversed(dims))}; first plane used")
                else:
                    data = hdu.data
            except (OSError, ValueError, TypeError, EOFError, gzip.BadGzipFile, IndexError) as exc:
                msg = f"The image data could not be read ({type(exc).__name__}: {exc}); the file is probably truncated."
                raise CutoutError("truncated", msg) from None
            if data is None:
                raise CutoutError("no_image", "The image HDU has no data. Supply a 2-D image cutout.")
            data = np.asarray(data)
            if data.ndim != 2:
                msg = f"Expected a 2-D image, got shape {data.shape}."
                raise CutoutError("not_2d", msg)
            expected = (dims[1], dims[0])
            if data.shape != expected:
                msg = f"The data shape {data.shape} does not match the header {expected}; the file is probably truncated."
                raise CutoutError("truncated", msg)
            # native float64 whatever BITPIX/BSCALE/BZERO/endianness the file used
            data = data.astype(np.float64)
            header = header.copy()
    finally:
        hdul.close()

    if min(data.shape) < 8:
        msg = f"The image is only {data.shape[1]} x {data.shape[0]} pixels; at least 8 x 8 are needed."
        raise CutoutError("too_small", msg)
    finite = np.isfinite(data)
    if not finite.any():
        msg = "Every pixel is NaN or infinite. Check the cutout's source image."
        raise CutoutError("all_nan", msg)
    vals = data[finite]
    if float(vals.max()) == float(vals.min()):
        msg = f"Every finite pixel has the same value ({vals.max():g}): there is no image. Check the cutout's source image."
        raise CutoutError("constant_image", msg)
    data = np.where(finite, data, np.nan)

    scale, ra, dec, wflags, cd = _celestial_wcs(header, data.shape)
    flags |= wflags
    if scale is None:
        if pixel_scale is None:
            msg = (
                "The file has no usable celestial WCS, so its pixel scale is unknown. Pass "
                "--pixel-scale ARCSEC (or a pixel_scale column in --catalogue) to assume one."
            )
            raise CutoutError("no_wcs", msg)
        scale = float(pixel_scale)
        flags |= int(Flag.ASSUMED_PIXEL_SCALE)
    redshift = None
    for key in ("REDSHIFT", "Z"):
        if key in header:
            try:
                z = float(header[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(z) and z > 0:
                redshift = z
                break
    return Cutout(
        path=path,
        object_id=_object_id(header, path),
        data=data,
        pixel_scale_arcsec=scale,
        ra=ra,
        dec=dec,
        redshift=redshift,
        cd=cd,
        flags=flags,
        notes=notes,
    )
