"""Reading and validating one FITS cutout.

:func:`read_cutout` returns a :class:`Cutout` or raises :class:`CutoutError` with a short
machine-readable ``reason`` and a message that says what was wrong and what to do. The
pipeline turns a ``CutoutError`` into an ``status="error"`` catalogue row, so a bad file never
stops a job and never loses its row.

Supported: ``.fits``, ``.fit``, ``.fts``, gzip-compressed (``.gz``) and tile-compressed
(``.fz``) files; the first HDU with 2-D (or higher) image data is used.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import stat
import warnings
from dataclasses import dataclass, field

import numpy as np

from .flags import Flag

__all__ = ["Cutout", "CutoutError", "read_cutout", "FITS_SUFFIXES", "DEFAULT_MAX_PIXELS"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")
DEFAULT_MAX_PIXELS = 64_000_000
_GZIP_RATIO_LIMIT = 200  # a compressed file that unpacks beyond this ratio (and 50 MB) is refused as a bomb
_BOMB_MIN_BYTES = 50_000_000
_MAX_REDSHIFT = 20.0  # header redshifts above this are ignored (a "Z" keyword holding cz in km/s, junk)
_MAX_HDUS = 64  # HDUs searched for the image: damaged files can parse as thousands of pseudo-HDUs


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
        try:
            value = str(header[key]).strip() if key in header else ""
        except Exception:  # an unparsable card (astropy VerifyError): try the next key
            continue
        if value:
            return value
    return _file_stem(path)


def _file_stem(path):
    """The file name without its FITS suffix: the object id of a file without one."""
    name = os.path.basename(os.fspath(path))
    for suf in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return os.path.splitext(name)[0] or name


class _CardScanner:
    """Refuse headers whose NAXIS, ZNAXIS or TFIELDS is outside 0..999 (the FITS limit).

    Astropy builds a list over ``range(NAXIS)`` when it opens an HDU, so ``NAXIS = 2**63``
    in a damaged header hangs the reader and eats all memory. Cards are 80-byte records at
    80-byte offsets, so the (unpacked) bytes are scanned as records, fed in any chunk sizes.
    """

    _KEYS = (b"NAXIS   =", b"ZNAXIS  =", b"TFIELDS =")

    def __init__(self):
        self._rest = b""
        self._keys = [np.frombuffer(k, dtype=np.uint8) for k in self._KEYS]

    def feed(self, chunk):
        buf = self._rest + chunk
        n = len(buf) - len(buf) % 80
        self._rest = buf[n:]
        if not n:
            return
        rec = np.frombuffer(buf, dtype=np.uint8, count=n).reshape(-1, 80)[:, :9]
        hit = np.zeros(len(rec), dtype=bool)
        for k in self._keys:
            hit |= (rec == k).all(axis=1)
        for r in np.flatnonzero(hit):
            card = buf[80 * r : 80 * r + 80]
            try:
                value = int(card[10:].split(b"/")[0].strip() or b"0")
            except ValueError:
                continue  # not an integer: astropy reports it
            if not 0 <= value <= 999:
                key = card[:8].decode("latin-1").strip()
                msg = f"The header says {key} = {value}; FITS allows 0 to 999. The file is damaged and was not read."
                raise CutoutError("corrupt", msg)


def _scan_plain(path, chunk=2880 * 364):
    scanner = _CardScanner()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return
            scanner.feed(block)


def _decompressed_stream(path, magic, stack):
    """Open the decompressed content of a file that astropy would decompress, or return None.

    Astropy decompresses gzip, bzip2 (any file starting with ``BZ``), xz and single-member
    zip files whatever their names, so every one of them is checked, not only ``.gz``.
    """
    if magic.startswith(b"\x1f\x8b"):
        return "gzip", stack.enter_context(gzip.open(path, "rb"))
    if magic.startswith(b"BZ"):
        import bz2

        return "bzip2", stack.enter_context(bz2.open(path, "rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        import lzma

        return "xz", stack.enter_context(lzma.open(path, "rb"))
    if magic.startswith(b"PK\x03\x04"):
        import zipfile

        zf = stack.enter_context(zipfile.ZipFile(path))
        names = zf.namelist()
        if len(names) != 1:
            msg = f"The zip archive holds {len(names)} members; a zipped cutout must hold exactly one FITS file."
            raise CutoutError("not_fits", msg)
        return "zip", stack.enter_context(zf.open(names[0]))
    return None, None


def _check_compressed(path, magic, size):
    """Refuse compressed files that unpack implausibly large (decompression bombs).

    Returns the first 80 unpacked bytes (None for an uncompressed file).

    The whole stream is decompressed in 1 MB chunks, counting bytes and keeping none (its
    header cards are checked on the way, see :class:`_CardScanner`), and
    abandoned as soon as it passes ``max(50 MB, 200 x the file size)``. The gzip size field
    is not trusted: it is only the last member's size modulo 2**32, so a bomb with a trailing
    empty member, or one over 4 GiB, would pass a check that read it.
    """
    import contextlib

    limit = max(_BOMB_MIN_BYTES, _GZIP_RATIO_LIMIT * size)
    total = 0
    kind = "compressed"
    head = b""
    try:
        with contextlib.ExitStack() as stack:
            kind, stream = _decompressed_stream(path, magic, stack)
            if stream is None:
                return None
            scanner = _CardScanner()
            while True:
                chunk = stream.read(2880 * 364)
                if not chunk:
                    break
                scanner.feed(chunk)
                if len(head) < 80:
                    head += chunk[: 80 - len(head)]
                total += len(chunk)
                if total > limit:
                    msg = (
                        f"The {kind} file unpacks to more than {limit} bytes from {size} (over "
                        f"{total / max(size, 1):.0f}x); this looks like a decompression bomb and was "
                        "not read. Recompress the cutout normally or give it uncompressed."
                    )
                    raise CutoutError("decompression_bomb", msg)
    except CutoutError:
        raise
    except EOFError as exc:
        msg = f"The {kind} stream ends early ({exc}); the file is truncated. Download or copy it again."
        raise CutoutError("truncated", msg) from None
    except Exception as exc:  # OSError, zlib.error, lzma.LZMAError, zipfile.BadZipFile...
        msg = f"The {kind} stream is corrupt ({type(exc).__name__}: {exc}). Download or copy the file again."
        raise CutoutError("corrupt", msg) from None
    return head


def _header_pixels(hdu):
    h = hdu.header
    n = int(h.get("ZNAXIS", h.get("NAXIS", 0)) or 0)
    prefix = "ZNAXIS" if "ZNAXIS" in h else "NAXIS"
    dims = [int(h.get(f"{prefix}{i}", 0) or 0) for i in range(1, n + 1)]
    return dims


#: keywords that can matter to a celestial WCS (FITS WCS papers I-III, SIP, TPV, TNX/ZPX)
_WCS_KEY = re.compile(
    r"^(WCSAXES|NAXIS\d*|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+"
    r"|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|MJD-OBS|MJDREF.?|DATE-OBS|DATEREF|WCSNAME|CNAME\d"
    r"|[AB]P?_ORDER|[AB]P?_\d+_\d+|A_DMAX|B_DMAX|WAT\d_\d+|SPECSYS|RESTFRQ|RESTWAV|VELREF)$"
)


def _wcs_cards(header):
    """A header holding only the WCS-relevant cards.

    astropy's WCS re-serialises and verifies every card of the header it is given, which for
    long survey headers costs more than the rest of the read; the WCS depends on these cards
    only.
    """
    from astropy.io import fits

    out = fits.Header()
    for card in header.cards:
        if _WCS_KEY.match(card.keyword):
            out.append(card, end=True)
    return out


def _celestial_wcs(header, shape):
    """Return (pixel_scale_arcsec, ra, dec, flags, cd) from the header's WCS."""
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    flags = 0
    has_wcs_keys = any(k in header for k in ("CTYPE1", "CD1_1", "CDELT1", "PC1_1"))
    if not has_wcs_keys:
        return None, None, None, int(Flag.NO_WCS), None
    hdr = _wcs_cards(header)
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
    # a 2-axis celestial WCS is its own celestial part (sub-setting it would build a second WCS)
    wc = w if (w.naxis == 2 and w.wcs.lng == 0 and w.wcs.lat == 1) else w.celestial
    try:
        # absurd CD values overflow here; the results are checked for finiteness below
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            scales = proj_plane_pixel_scales(wc)
            scale = float(np.sqrt(abs(scales[0] * scales[1]))) * 3600.0
            ny, nx = shape
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
        When the file cannot be used; ``reason`` names the cause. No other exception
        escapes: an unforeseen failure inside astropy is reported as ``corrupt``.
    """
    try:
        return _read_cutout(path, pixel_scale=pixel_scale, max_pixels=max_pixels)
    except CutoutError:
        raise
    except MemoryError:
        msg = "Reading the file ran out of memory. Lower --max-pixels or give the workers more memory."
        raise CutoutError("out_of_memory", msg) from None
    except Exception as exc:  # astropy raises many types (VerifyError, OverflowError...) on damaged files
        msg = f"The file is damaged and could not be read ({type(exc).__name__}: {exc}). Download or copy it again."
        raise CutoutError("corrupt", msg) from None


def _read_cutout(path, *, pixel_scale, max_pixels):
    from astropy.io import fits

    path = os.path.abspath(os.fspath(path))
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
        msg = f"{path!r} is {kind}, not a FITS file; it was not read. Give regular FITS files."
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
    head = _check_compressed(path, magic, st.st_size)
    if not (magic if head is None else head).startswith(b"SIMPLE"):
        # astropy checks this for plain files only; a damaged compressed header would otherwise
        # be scanned block by block as thousands of pseudo-HDUs
        msg = "Not a FITS file: it does not start with the SIMPLE card. Check that it is FITS and not damaged."
        raise CutoutError("not_fits", msg)
    if head is None:
        try:
            _scan_plain(path)
        except OSError as exc:
            msg = f"The file could not be read: {exc.strerror}. Fix its permissions or storage."
            raise CutoutError("unreadable", msg) from None

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
                for n_hdu, h in enumerate(hdul):
                    if n_hdu >= _MAX_HDUS:
                        msg = f"No 2-D image in the first {_MAX_HDUS} HDUs; a cutout keeps its image in one of its first HDUs. The file may be damaged."
                        raise CutoutError("no_image", msg)
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
            except Exception as exc:  # damaged tile-compression tables raise astropy's VerifyError, AttributeError...
                msg = f"The image data could not be decoded ({type(exc).__name__}: {exc}); the file is damaged. Download or copy it again."
                raise CutoutError("corrupt", msg) from None
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
            except Exception:  # not a number, or an unparsable card
                continue
            if np.isfinite(z) and 0 < z <= _MAX_REDSHIFT:  # a Z of 3000 is a velocity cz, not a redshift
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
