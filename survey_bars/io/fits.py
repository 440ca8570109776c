"""Reading FITS cutouts, single- or multi-band: :class:`FitsReader`.

FITS files may hold several bands, as a cube (bands x y x x) or as one image extension per band
(e.g. HSC or Euclid files, with MASK and VARIANCE extensions beside the image). ``band`` picks
one (see :func:`select_band` for the names matched and the default per survey); a MASK (or
FLAGS/DQ/BITMASK) extension masks pixels, and a VARIANCE (or IVAR/INVVAR/WEIGHT, or
RMS/SIGMA/ERR) extension gives the per-pixel noise used for the S/N. Plain, gzip-compressed
(``.gz``) and tile-compressed (``.fz``) files are read; damaged headers and decompression
bombs are refused before astropy parses them.
"""

from __future__ import annotations

import gzip
import re

import numpy as np

from ..flags import Flag
from .cutout import Cutout, CutoutError, Reader, check_pixels

__all__ = ["FitsReader", "FITS_SUFFIXES", "DEFAULT_BANDS", "select_band"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")
_GZIP_RATIO_LIMIT = 200  # a compressed file that unpacks beyond this ratio (and 50 MB) is refused as a bomb
_BOMB_MIN_BYTES = 50_000_000
_MAX_REDSHIFT = 20.0  # header redshifts above this are ignored (a "Z" keyword holding cz in km/s, junk)
_MAX_HDUS = 64  # HDUs searched for the image: damaged files can parse as thousands of pseudo-HDUs


def _object_id(header, default):
    for key in ("OBJID", "OBJECT_ID", "OBJECT", "ID"):
        try:
            value = str(header[key]).strip() if key in header else ""
        except Exception:  # an unparsable card (astropy VerifyError): try the next key
            continue
        if value:
            return value
    return default


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
    # (SIP coefficients without the -SIP suffix on CTYPE are common in archive files; astropy
    # applies them and logs an INFO line: survey_bars.errors.filter_input_warnings quiets it)
    try:
        w = WCS(hdr, naxis=2, fix=True)
    except Exception:  # astropy raises several types on malformed WCS
        return None, None, None, int(Flag.NO_WCS), None
    if not w.has_celestial:
        return None, None, None, int(Flag.NO_WCS | Flag.NON_CELESTIAL_WCS), None
    # a 2-axis celestial WCS is its own celestial part (sub-setting it would build a second WCS)
    wc = w if (w.naxis == 2 and w.wcs.lng == 0 and w.wcs.lat == 1) else w.celestial
    try:
        # absurd CD values overflow here; the results are checked for finiteness below
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
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


#: default band per survey, tried in order: first an exact (case-insensitive) name, then a name
#: one of whose ``-``/``_``/``.``/space-separated parts is it (``r`` finds ``HSC-R``)
DEFAULT_BANDS = ("HSC-I2", "HSC-I", "VIS", "r", "i", "z", "g")
_GENERIC_EXTNAMES = {"", "PRIMARY", "IMAGE", "SCI", "SCIENCE", "DATA", "COMPRESSED_IMAGE", "FLUX"}
_MASK_TOKENS = {"MASK", "MSK", "FLAGS", "FLAG", "FLG", "BITMASK", "DQ", "BPM"}
_VARIANCE_TOKENS = {"VARIANCE": "variance", "VAR": "variance", "IVAR": "ivar", "INVVAR": "ivar", "IVM": "ivar",
                    "WEIGHT": "ivar", "WHT": "ivar", "WT": "ivar", "RMS": "sigma", "SIGMA": "sigma",
                    "ERR": "sigma", "ERROR": "sigma", "STD": "sigma", "NOISE": "sigma", "UNC": "sigma"}
_IGNORED_TOKENS = {"PSF", "MODEL", "CHI", "RESID", "RESIDUAL", "BKG", "BACKGROUND", "SKY", "EXPOSURE", "EXPMAP",
                   "EXP", "NEXP", "DEPTH", "SEG", "SEGMAP", "SEGMENTATION", "COVERAGE"}
#: HSC/LSST mask planes (MP_<NAME> header keywords give their bits) that make a pixel unusable
_BAD_MASK_PLANES = {"BAD", "SAT", "CR", "NO_DATA", "SUSPECT", "UNMASKEDNAN"}


def _tokens(name):
    return [t for t in re.split(r"[-_.\s]+", str(name).upper()) if t]


def _band_matches(query, name):
    """0: no match, 2: exact (case-insensitive), 1: one of the name's parts."""
    if name is None:
        return 0
    q = str(query).strip().upper()
    if q == str(name).strip().upper():
        return 2
    return 1 if q in _tokens(name) else 0


def select_band(names, band=None):
    """Choose the band to use among a file's bands.

    Parameters
    ----------
    names : list of str or None
        The bands' names in file order (None for an unnamed band).
    band : str or int, optional
        ``--band``: a name (matched case-insensitively against the whole name, then against its
        ``-``/``_``/``.``-separated parts, so ``i`` finds ``HSC-I``) or an index (an int or a
        string of digits, 0-based in file order). None takes the first of
        :data:`DEFAULT_BANDS` that the file has (HSC-I for HSC, VIS for Euclid, r for SDSS, the
        Legacy Surveys and Rubin), else the first band.

    Returns
    -------
    index : int
        The chosen band's position in ``names``.
    defaulted : bool
        True when neither ``band`` nor a default name chose it (the first band was taken).

    Raises
    ------
    CutoutError
        ``band_not_found`` when ``band`` matches no band (or, by parts, several).
    """
    listed = ", ".join(n if n is not None else f"#{k}" for k, n in enumerate(names))
    if band is not None and (isinstance(band, (int, np.integer)) or str(band).strip().isdigit()):
        k = int(band)
        if not 0 <= k < len(names):
            msg = f"--band {k} asks for band index {k}, but the file has {len(names)} band(s) ({listed}). Give an index below {len(names)} or a band name."
            raise CutoutError("band_not_found", msg)
        return k, False
    queries = [band] if band is not None else list(DEFAULT_BANDS)
    for q in queries:
        for level in (2, 1):
            hits = [k for k, n in enumerate(names) if _band_matches(q, n) == level]
            if len(hits) == 1 or (hits and level == 2):
                return hits[0], False
            if len(hits) > 1 and band is not None:
                msg = f"--band {band!r} matches several bands of the file ({', '.join(names[k] for k in hits)}). Give the full name."
                raise CutoutError("band_not_found", msg)
    if band is not None:
        msg = f"The file has no band {band!r}; its bands are: {listed}. Pass --band with one of these names, or an index."
        raise CutoutError("band_not_found", msg)
    return 0, len(names) > 1


def _role(hdu_name):
    """'mask', ('variance', kind), 'ignore' or 'science' from an extension name."""
    toks = _tokens(hdu_name)
    if any(t in _MASK_TOKENS for t in toks):
        return "mask", None
    for t in toks:
        if t in _VARIANCE_TOKENS:
            return "variance", _VARIANCE_TOKENS[t]
    if any(t in _IGNORED_TOKENS for t in toks):
        return "ignore", None
    return "science", None


def _header_str(header, key):
    try:
        v = header.get(key)
    except Exception:  # an unparsable card
        return None
    v = str(v).strip() if v is not None else ""
    return v or None


def _cube_band_names(header, n):
    """Names of the planes of a cube: BANDS = 'grz' (or 'g,r,z'), BAND0.. / BAND1.., FILTER1.."""
    bands = _header_str(header, "BANDS")
    if bands:
        parts = [p for p in re.split(r"[\s,;/]+", bands) if p]
        if len(parts) == 1 and len(parts[0]) == n:
            parts = list(parts[0])
        if len(parts) == n:
            return parts
    for key, start in (("BAND", 0), ("BAND", 1), ("FILTER", 1), ("FILTER", 0)):
        names = [_header_str(header, f"{key}{k}") for k in range(start, start + n)]
        if all(names):
            return names
    return [None] * n


class _Image:
    """One image plane of a FITS file: an HDU and, for a cube, the index of the plane."""

    def __init__(self, hdu, index, dims, name, role=None, kind=None):
        self.hdu, self.index, self.dims, self.name, self.role, self.kind = hdu, index, dims, name, role, kind

    def read(self):
        from astropy.io import fits

        hdu, dims = self.hdu, self.dims
        if len(dims) > 2:
            lead = (self.index or 0,) + (0,) * (len(dims) - 3)
            idx = tuple(reversed(lead)) + (slice(None), slice(None))
            section = hdu.section if not isinstance(hdu, fits.CompImageHDU) else None
            data = section[idx] if section is not None else hdu.data[idx]
        else:
            data = hdu.data
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
        return data.astype(np.float64)


def _scan_hdus(hdul, primary_header):
    """Sort a FITS file's image HDUs into science planes, masks and variances."""
    science, aux = [], []
    n_sci_hdus = 0
    one_d = None
    try:
        for n_hdu, h in enumerate(hdul):
            if n_hdu >= _MAX_HDUS:
                if science:
                    break
                msg = f"No 2-D image in the first {_MAX_HDUS} HDUs; a cutout keeps its image in one of its first HDUs. The file may be damaged."
                raise CutoutError("no_image", msg)
            if not h.is_image:
                continue
            dims = _header_pixels(h)
            if len(dims) == 1 and dims[0] > 0 and one_d is None:
                one_d = dims[0]
            if not (len(dims) >= 2 and all(d > 0 for d in dims)):
                continue
            extname = _header_str(h.header, "EXTNAME") or ""
            role, kind = _role(extname) if n_hdu > 0 else ("science", None)
            if role == "ignore":
                continue
            own = _header_str(h.header, "BAND") or _header_str(h.header, "FILTER")
            name = own or (extname if extname.upper() not in _GENERIC_EXTNAMES else None)
            n_planes = dims[2] if len(dims) > 2 else 1
            if role == "science":
                n_sci_hdus += 1
                if len(dims) > 2:
                    cube_names = _cube_band_names(h.header, n_planes)
                    science.extend(_Image(h, k, dims, cube_names[k]) for k in range(n_planes))
                else:
                    science.append(_Image(h, None, dims, name))
            else:
                planes = range(n_planes) if len(dims) > 2 else [None]
                aux.extend(_Image(h, k, dims, extname, role, kind) for k in planes)
    except CutoutError:
        raise
    except Exception as exc:
        if not science:
            msg = f"The FITS structure is damaged ({type(exc).__name__}: {exc}); the file may be truncated."
            raise CutoutError("corrupt", msg) from None
        # a damaged tail after a good image: use what was found
    if not science:
        if one_d is not None:
            msg = f"The image is 1-D ({one_d} values); a 2-D cutout is needed. Check that this is an image, not a spectrum or a table."
            raise CutoutError("not_2d", msg)
        msg = "The file holds no image data (zero-size or table-only HDUs). Supply a 2-D image cutout."
        raise CutoutError("no_image", msg)
    if n_sci_hdus == 1 and len(science) == 1 and science[0].name is None:
        # one band, named (if at all) in the primary header, as HSC cutouts do
        science[0].name = _header_str(primary_header, "BAND") or _header_str(primary_header, "FILTER")
    return science, aux


def _companion(aux, role, chosen, science):
    """The mask or variance plane that belongs to the chosen science plane, or None."""
    cands = [a for a in aux if a.role == role and a.dims[:2] == chosen.dims[:2]]
    if not cands:
        return None
    if chosen.index is not None:  # a cube: the same plane of a cube companion
        cube = [a for a in cands if a.index == chosen.index and len(a.dims) > 2 and a.dims[2] == chosen.dims[2]]
        if cube:
            return cube[0]
    if chosen.name is not None:
        want = set(_tokens(chosen.name))
        named = [a for a in cands if a.index is None and want & (set(_tokens(a.name)) - _MASK_TOKENS - set(_VARIANCE_TOKENS))]
        if named:
            return named[0]
    plain = [a for a in cands if a.index is None and not (set(_tokens(a.name)) - _MASK_TOKENS - set(_VARIANCE_TOKENS))]
    n_bands = len({(id(s.hdu), s.index) for s in science})
    if len(plain) == 1 and (n_bands == 1 or chosen.index is None and len([s for s in science if s.index is None]) == 1):
        return plain[0]
    return None


def _bad_pixels(mask_plane):
    """Boolean bad-pixel array from a mask plane (HSC/LSST MP_* planes honoured)."""
    m = mask_plane.read()
    planes = {}
    for card in mask_plane.hdu.header.cards:
        if card.keyword.startswith("MP_"):
            try:
                planes[card.keyword[3:]] = int(card.value)
            except (TypeError, ValueError):
                continue
    m = np.nan_to_num(m, nan=1.0)
    if planes:
        bits = 0
        for name, bit in planes.items():
            if name in _BAD_MASK_PLANES and 0 <= bit < 63:
                bits |= 1 << bit
        return (m.astype(np.int64) & bits) != 0
    return m != 0


def _variance(var_plane):
    """Variance array (NaN where unusable) and a bool array of no-data pixels (ivar == 0)."""
    v = var_plane.read()
    with np.errstate(divide="ignore", invalid="ignore"):
        if var_plane.kind == "ivar":
            nodata = ~(v > 0)
            var = np.where(v > 0, 1.0 / v, np.nan)
        elif var_plane.kind == "sigma":
            nodata = np.zeros(v.shape, bool)
            var = np.where(v > 0, v * v, np.nan)
        else:
            nodata = np.zeros(v.shape, bool)
            var = np.where(v > 0, v, np.nan)
    return var, nodata


def _merged_header(header, primary):
    """The extension header plus the primary header's cards it lacks (for ids, redshifts, WCS)."""
    out = header.copy()
    if primary is None or primary is header:
        return out
    for card in primary.cards:
        if card.keyword and card.keyword not in out and card.keyword not in ("SIMPLE", "EXTEND", "NAXIS", "BITPIX", "COMMENT", "HISTORY", ""):
            try:
                out.append(card, end=True)
            except Exception:  # an unparsable card: leave it out
                continue
    return out


_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZ", b"\xfd7zXZ\x00", b"PK\x03\x04")


class FitsReader(Reader):
    """FITS files: plain, gzip- or tile-compressed; single-band, cubes or one extension per band."""

    name = "fits"
    suffixes = FITS_SUFFIXES

    def sniff(self, magic):
        return magic.startswith(b"SIMPLE") or magic.startswith(_COMPRESSED_MAGIC)

    def read(self, path, st, magic, *, pixel_scale, max_pixels, band, object_id):
        return _read_fits(path, st, magic, pixel_scale=pixel_scale, max_pixels=max_pixels, band=band,
                          object_id=object_id)


def _check_signature(path, st, magic):
    """Refuse what is not FITS, and damaged or bomb-like compression, before astropy parses the file."""
    head = _check_compressed(path, magic, st.st_size)
    if not (magic if head is None else head).startswith(b"SIMPLE"):
        # astropy checks this for plain files only; a damaged compressed header would otherwise
        # be scanned block by block as thousands of pseudo-HDUs
        msg = "Not a FITS file: it does not start with the SIMPLE card. Check that it is FITS (or a JPEG or PNG image) and not damaged."
        raise CutoutError("not_fits", msg)
    if head is None:
        try:
            _scan_plain(path)
        except OSError as exc:
            msg = f"The file could not be read: {exc.strerror}. Fix its permissions or storage."
            raise CutoutError("unreadable", msg) from None


def _open(path):
    """Open the file lazily with astropy; CutoutError ``not_fits`` when astropy cannot."""
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False, lazy_load_hdus=True, ignore_missing_simple=False)
    except OSError as exc:
        msg = f"Not a readable FITS file ({exc}). Check that it is FITS and not truncated."
        raise CutoutError("not_fits", msg) from None
    except Exception as exc:
        msg = f"Not a readable FITS file ({type(exc).__name__}: {exc})."
        raise CutoutError("not_fits", msg) from None
    return hdul


def _read_band(hdul, band, max_pixels):
    """Choose the band, read its pixels with its mask and variance planes, and its headers.

    Returns ``(data, variance, header, meta, inherit, flags, notes, band_name)``: ``header`` is the
    chosen HDU's, ``meta`` the header that ids and redshifts are read from (merged with the
    primary's in a multi-extension file), ``inherit`` whether its WCS comes from the primary.
    """
    flags = 0
    notes = []
    variance = None
    primary_header = hdul[0].header
    science, aux = _scan_hdus(hdul, primary_header)
    names = [s.name for s in science]
    # --band chooses among several bands; a single-band file is used as it is
    k, defaulted = select_band(names, band) if len(science) > 1 else (0, False)
    chosen = science[k]
    dims = chosen.dims
    plane_pix = dims[0] * dims[1]
    if plane_pix > max_pixels:
        msg = (
            f"The image has {dims[0]} x {dims[1]} = {plane_pix} pixels, over --max-pixels "
            f"{max_pixels}; it was not read. Make a smaller cutout or raise --max-pixels."
        )
        raise CutoutError("too_large", msg)
    band_name = chosen.name if chosen.name is not None else (f"#{k}" if len(science) > 1 else None)
    if len(science) > 1:
        notes.append(f"{len(science)} bands ({', '.join(n or f'#{i}' for i, n in enumerate(names))}); {band_name} used")
    if defaulted:
        flags |= int(Flag.FIRST_PLANE_OF_CUBE)
    if len(dims) > 3 and any(d > 1 for d in dims[3:]):
        flags |= int(Flag.FIRST_PLANE_OF_CUBE)
        notes.append(f"data cube of shape {tuple(reversed(dims))}; first plane of the extra axes used")
    try:
        data = chosen.read()
        mask_plane = _companion(aux, "mask", chosen, science)
        var_plane = _companion(aux, "variance", chosen, science)
        if mask_plane is not None:
            bad = _bad_pixels(mask_plane)
            data[bad] = np.nan
            notes.append(f"mask {mask_plane.name}: {int(bad.sum())} pixels masked")
        if var_plane is not None:
            variance, nodata = _variance(var_plane)
            data[nodata] = np.nan
            notes.append(f"noise from {var_plane.name} ({var_plane.kind})")
    except CutoutError:
        raise
    except (OSError, ValueError, TypeError, EOFError, gzip.BadGzipFile, IndexError) as exc:
        msg = f"The image data could not be read ({type(exc).__name__}: {exc}); the file is probably truncated."
        raise CutoutError("truncated", msg) from None
    except Exception as exc:  # damaged tile-compression tables raise astropy's VerifyError, AttributeError...
        msg = f"The image data could not be decoded ({type(exc).__name__}: {exc}); the file is damaged. Download or copy it again."
        raise CutoutError("corrupt", msg) from None
    header = chosen.hdu.header.copy()
    # ids and redshifts may sit in the primary header of a multi-extension file
    meta = header if chosen.hdu is hdul[0] else _merged_header(header, primary_header)
    inherit = meta is not header and "INHERIT" in header and bool(header.get("INHERIT", False))
    return data, variance, header, meta, inherit, flags, notes, band_name


def _header_redshift(meta):
    """``REDSHIFT`` or ``Z`` from the header when it is a number in (0, 20] (a Z of 3000 is a velocity cz)."""
    redshift = None
    for key in ("REDSHIFT", "Z"):
        if key in meta:
            try:
                z = float(meta[key])
            except Exception:  # not a number, or an unparsable card
                continue
            if np.isfinite(z) and 0 < z <= _MAX_REDSHIFT:  # a Z of 3000 is a velocity cz, not a redshift
                redshift = z
                break
    return redshift


def _read_fits(path, st, magic, *, pixel_scale, max_pixels, band, object_id):
    """Check, open, read the band, then the pixels, the WCS and the header values: the Cutout."""
    _check_signature(path, st, magic)
    hdul = _open(path)
    try:
        data, variance, header, meta, inherit, flags, notes, band_name = _read_band(hdul, band, max_pixels)
    finally:
        hdul.close()
    data = check_pixels(data)
    scale, ra, dec, wflags, cd = _celestial_wcs(meta if inherit else header, data.shape)
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
    redshift = _header_redshift(meta)
    return Cutout(
        path=path,
        object_id=_object_id(meta, object_id),
        data=data,
        pixel_scale_arcsec=scale,
        ra=ra,
        dec=dec,
        redshift=redshift,
        cd=cd,
        flags=flags,
        notes=notes,
        band=band_name,
        variance=variance,
    )
