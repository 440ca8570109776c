"""Helpers for tests and benchmarks: synthetic cutouts, the bad-input corpus, a test model.

Nothing here runs in a catalogue job. :func:`make_bad_corpus` writes the messy inputs that
survey archives really contain (truncated, not FITS, empty, cubes, NaN, no WCS, gzip bombs,
symbolic link loops, and JPEG/PNG images: truncated, HTML named .png, GIF named .png, 1-bit,
PNG bombs, colour modes and EXIF orientation...) and says what the catalogue must do with each
one, so that the tests
(``tests/test_reliability.py``) and the benchmark (``python -m benchmarks.reliability``) check
and report the same cases.

:func:`model_for_tests` returns a model bundle for tests: the shipped default when it loads,
otherwise a tiny random-weight bundle exported once and cached on disk (this needs torch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import hashlib
import os
import pathlib
import shutil
import tempfile
import zlib
from dataclasses import dataclass

import numpy as np

from .flags import Flag, describe
from .inference.bundle import BundleError, load_bundle

__all__ = [
    "BadCase",
    "galaxy_image",
    "galaxy_display",
    "write_cutout",
    "write_png_declaring",
    "write_raw_fits",
    "make_bad_corpus",
    "corpus_inputs",
    "check_row",
    "model_for_tests",
    "tiny_bundle",
    "is_root",
    "full_disk",
    "forget_tasks",
]


def is_root():
    """Whether this process runs as root, where file permission bits do not block reads.

    Returns
    -------
    bool
    """
    return hasattr(os, "geteuid") and os.geteuid() == 0


def galaxy_image(n=96, r50=8.0, bar_len=None, bar_pa_deg=30.0, noise=0.02, seed=0, flux=100.0):
    """A round exponential galaxy, optionally with an elongated bar, plus Gaussian noise.

    Parameters
    ----------
    n : int
        Stamp size in pixels.
    r50 : float
        Half-light radius in pixels.
    bar_len : float, optional
        Full bar length in pixels (no bar when None).
    bar_pa_deg : float
        Bar angle from the +x axis in degrees.
    noise : float
        Noise sigma per pixel.
    seed : int
        Seed of the noise.
    flux : float
        Total flux.

    Returns
    -------
    ndarray
        float32 image of shape (n, n).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2.0
    r = np.hypot(x - c, y - c)
    img = np.exp(-r / (r50 / 1.678))
    if bar_len:
        t = np.radians(bar_pa_deg)
        u = (x - c) * np.cos(t) + (y - c) * np.sin(t)
        v = -(x - c) * np.sin(t) + (y - c) * np.cos(t)
        a = bar_len / 2.0
        m2 = (u / a) ** 2 + (v / (0.3 * a)) ** 2
        img = img + 0.8 * np.clip(1 - m2, 0, None) ** 2
    img = flux * img / img.sum()
    return (img + noise * rng.standard_normal(img.shape)).astype(np.float32)


def galaxy_display(n=96, *, colour=True, bits=8, seed=1, bar_len=24.0, r50=8.0):
    """A galaxy as a cutout service draws it: asinh-stretched, quantised display pixels.

    Parameters
    ----------
    n : int
        Stamp size in pixels.
    colour : bool
        An ``(n, n, 3)`` RGB composite (three noise realisations, blue the most extended, as
        in a gri composite) instead of an ``(n, n)`` greyscale image.
    bits : int
        8 (uint8) or 16 (uint16, greyscale only).
    seed : int
        Seed of the noise.
    bar_len, r50 : float
        As :func:`galaxy_image`.

    Returns
    -------
    ndarray
        uint8 or uint16 pixels, top row first (as an image file stores them).
    """
    top = 255 if bits == 8 else 65535
    dtype = np.uint8 if bits == 8 else np.uint16

    def stretch(img):
        lo = np.percentile(img, 5)
        x = np.arcsinh(np.clip(img - lo, 0, None) / (0.05 * (img.max() - lo)))
        return np.round(top * x / x.max()).astype(dtype)

    if not colour:
        return stretch(galaxy_image(n=n, r50=r50, bar_len=bar_len, seed=seed))
    if bits != 8:
        raise ValueError("colour display images are 8-bit")
    bands = [galaxy_image(n=n, r50=r50 * f, bar_len=bar_len, seed=seed + k) for k, f in enumerate((0.8, 1.0, 1.2))]
    return np.stack([stretch(b) for b in bands], axis=-1)


def write_png_declaring(path, width, height):
    """Write a tiny valid PNG whose header then declares ``width`` x ``height`` pixels.

    A decompression bomb as a reader meets it: 8 x 8 pixels of data (under 100 bytes on disk)
    under an IHDR chunk (with a correct CRC) that claims the size given, so only a reader that
    checks the declared size before decoding stays safe.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    width, height : int
        Declared size in pixels.

    Returns
    -------
    str
        The path.
    """
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    # signature (8 bytes), then IHDR: length (4), b"IHDR" (4), width, height, 5 more bytes, CRC
    if raw[12:16] != b"IHDR":  # pragma: no cover - Pillow always writes IHDR first
        raise RuntimeError("unexpected PNG layout")
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    with open(path, "wb") as fh:
        fh.write(bytes(raw))
    return os.fspath(path)


def _tan_wcs(shape, scale=0.262, ra=150.0, dec=2.0):
    ny, nx = shape[-2:]
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec,
        "CRPIX1": (nx + 1) / 2.0, "CRPIX2": (ny + 1) / 2.0,
        "CD1_1": -scale / 3600.0, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": scale / 3600.0,
    }


def write_cutout(path, data, *, wcs=True, scale=0.262, ra=150.0, dec=2.0, objid=None, extra=None):
    """Write a FITS cutout, by default with a TAN WCS (north up, east left).

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    data : ndarray
        The image (any dimensionality astropy can write).
    wcs : bool or dict
        True for a TAN WCS, False for none, or a dict of WCS keywords to use instead.
    scale, ra, dec : float
        Pixel scale (arcsec) and centre of the TAN WCS.
    objid : str, optional
        ``OBJID`` keyword.
    extra : dict, optional
        More header keywords.

    Returns
    -------
    str
        The path.
    """
    from astropy.io import fits

    hdr = fits.Header()
    if wcs is True:
        hdr.update(_tan_wcs(np.shape(data), scale, ra, dec))
    elif isinstance(wcs, dict):
        hdr.update(wcs)
    if objid is not None:
        hdr["OBJID"] = objid
    for k, v in (extra or {}).items():
        hdr[k] = v
    fits.PrimaryHDU(data, header=hdr).writeto(path, overwrite=True)
    return os.fspath(path)


def write_raw_fits(path, cards, data=b""):
    """Write a FITS file from header cards and raw data bytes, without any consistency check.

    Astropy fixes ``NAXIS`` from the data it is given; this writes exactly the header asked
    for, so files whose header lies about their data can be made.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    cards : dict
        Keyword -> value, in order (``SIMPLE`` first).
    data : bytes
        Data written after the header, padded to a multiple of 2880 bytes.

    Returns
    -------
    str
        The path.
    """
    from astropy.io import fits

    hdr = fits.Header()
    for k, v in cards.items():
        hdr[k] = v
    raw = hdr.tostring().encode("ascii")
    if data:
        raw += data + b"\0" * (-len(data) % 2880)
    with open(path, "wb") as fh:
        fh.write(raw)
    return os.fspath(path)


@dataclass
class BadCase:
    """One case of the bad-input corpus and what the catalogue must do with it.

    Attributes
    ----------
    name : str
        Short case name.
    paths : list of str
        The case's input files (usually one; two for duplicate object ids).
    status : str
        Expected ``status`` of each of the case's rows: ``"ok"`` or ``"error"``.
    reason : str or None
        Expected error reason (``error`` starts with ``"<reason>:"``) for error rows.
    flags : int
        Flag bits that must be set on the rows (file-level, set by :func:`process_items`).
    job_flags : int
        Flag bits that only the whole job sets (``DUPLICATE_OBJECT_ID``, by ``process``).
    forbid : int
        Flag bits that must not be set.
    pixel_scale : float or None
        Pixel scale the input catalogue gives for the file (as ``--catalogue``'s column).
    listed : bool
        True when the path is not found by walking the corpus directory and must be named
        in an ``@list`` file (e.g. a directory named ``*.fits``).
    description : str
        What the case is.
    """

    name: str
    paths: list
    status: str
    reason: str | None = None
    flags: int = 0
    job_flags: int = 0
    forbid: int = 0
    pixel_scale: float | None = None
    listed: bool = False
    description: str = ""

    def expected_text(self, job=True):
        """Return the expected outcome as ``status / reason / flags`` text.

        Parameters
        ----------
        job : bool
            Include the job-level flags.

        Returns
        -------
        str
        """

        f = self.flags | (self.job_flags if job else 0)
        parts = [self.status]
        if self.reason:
            parts.append(self.reason)
        if f:
            parts.append("+".join(describe(f)))
        return " / ".join(parts)

    def to_dict(self):
        """Return the case as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


#: side of the bombs' float32 image of zeros: 4096**2 * 4 bytes = 67 MB unpacked
BOMB_SIDE = 4096


def _gzip_bytes(raw, level=6):
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(raw) + c.flush()


def _bomb_payload(n_side=BOMB_SIDE):
    """A valid FITS file (header + n x n float32 zeros) as bytes, for the bombs."""
    from astropy.io import fits

    hdr = fits.Header()
    for k, v in {"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": n_side, "NAXIS2": n_side, **_tan_wcs((n_side, n_side))}.items():
        hdr[k] = v
    nbytes = n_side * n_side * 4
    return hdr.tostring().encode("ascii") + bytes(nbytes + (-nbytes % 2880))


def _write_bombs(d):
    """Write gzip, 2-member gzip, bzip2 (named .fits), xz and zip bombs; return [(name, path, note)]."""
    import bz2
    import lzma
    import zipfile

    payload = _bomb_payload()
    mb = len(payload) / 1e6
    out = []
    gz = _gzip_bytes(payload)
    p = d / "gzip_bomb.fits.gz"
    p.write_bytes(gz)
    out.append(("gzip bomb", p, f"{len(gz) / 1e3:.0f} kB -> {mb:.0f} MB of zeros"))
    p = d / "gzip_bomb_two_members.fits.gz"
    p.write_bytes(gz + _gzip_bytes(b""))
    out.append(("gzip bomb hiding its size (2 members)", p, "a trailing empty gzip member makes the gzip size field read 0"))
    p = d / "bzip2_bomb.fits"
    raw = bz2.compress(payload, 9)
    p.write_bytes(raw)
    out.append(("bzip2 bomb named .fits", p, f"{len(raw)} bytes -> {mb:.0f} MB (astropy unpacks bzip2 whatever the name)"))
    c = lzma.LZMACompressor(preset=0)
    raw = c.compress(payload) + c.flush()
    p = d / "xz_bomb.fits"
    p.write_bytes(raw)
    out.append(("xz bomb named .fits", p, f"{len(raw) / 1e3:.0f} kB -> {mb:.0f} MB"))
    p = d / "zip_bomb.fits"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cutout.fits", payload)
    out.append(("zip bomb named .fits", p, f"{p.stat().st_size / 1e3:.0f} kB -> {mb:.0f} MB (astropy reads a zip member whole)"))
    return out


#: what every good JPEG or PNG row must not carry: display values have no S/N
_IMAGE_FORBID = int(Flag.LOW_SNR)


def _write_image_cases(d, add):
    """Write the JPEG and PNG cases with Pillow (nothing is stored in the repository)."""
    from PIL import Image

    rgb = galaxy_display(96, seed=21)
    grey = galaxy_display(96, colour=False, seed=22)
    scaled = int(Flag.DISPLAY_IMAGE | Flag.NO_WCS | Flag.ASSUMED_PIXEL_SCALE)
    unscaled = int(Flag.DISPLAY_IMAGE | Flag.NO_WCS | Flag.NO_PIXEL_SCALE)

    # --- bad images -----------------------------------------------------------------------
    p = d / "truncated_image.jpg"
    Image.fromarray(rgb).save(p, quality=90)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    add("truncated JPEG", [p], "error", reason="truncated", description="a valid JPEG cut to half its bytes (an interrupted download)")

    p = d / "html_page.png"
    p.write_bytes(b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>\n" * 20)
    add("not an image (HTML saved as .png)", [p], "error", reason="not_image", description="a cutout service's error page saved under a .png name")

    p = d / "empty_image.jpg"
    p.write_bytes(b"")
    add("empty .jpg", [p], "error", reason="empty_file", description="0 bytes")

    p = write_png_declaring(d / "png_over_max_pixels.png", 10_000, 10_000)
    add("PNG declaring 10000 x 10000 (over the pixel limit)", [p], "error", reason="too_large",
        description=f"{os.path.getsize(p)} bytes that claim 1e8 pixels: refused from the header, never decoded")

    p = write_png_declaring(d / "png_bomb.png", 30_000, 30_000)
    # Pillow refuses images over 2 x Image.MAX_IMAGE_PIXELS (~179 Mpix) when it opens them;
    # under the default --max-pixels that is reported as over the limit, like the FITS header
    add("PNG decompression bomb (declares 30000 x 30000)", [p], "error", reason="too_large",
        description=f"{os.path.getsize(p)} bytes that claim 9e8 pixels (2.7 GB as RGB): refused from the header, never decoded")

    p = write_png_declaring(d / "png_small_bomb.png", 3000, 3000)
    add("PNG bomb under the pixel limit (declares 3000 x 3000 in ~100 bytes)", [p], "error", reason="decompression_bomb",
        description=f"{os.path.getsize(p)} bytes that claim 9e6 pixels, under --max-pixels: refused by pixels per byte, never decoded")

    p = d / "bilevel.png"
    Image.fromarray(grey > np.median(grey)).save(p)
    add("1-bit (bilevel) PNG", [p], "error", reason="unsupported_mode", description="a thresholded mask, no brightness levels")

    p = d / "gif_named_png.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(p, format="GIF")
    add("GIF saved as .png", [p], "error", reason="unsupported_format", description="the content is a GIF; the name says PNG")

    p = d / "spliced_image.jpg"
    Image.fromarray(rgb).save(p, quality=90)
    raw = p.read_bytes()
    sos = raw.index(b"\xff\xda")  # start of scan: the entropy-coded data follows its header
    mid = (sos + len(raw)) // 2
    p.write_bytes(raw[:mid] + raw[:256] + raw[mid + 256:])
    add("JPEG with garbage over its data (another JPEG's header)", [p], "error", reason="corrupt",
        description="256 bytes in the middle of the entropy-coded data overwritten with a JPEG header; libjpeg stops at the second "
                    "start-of-image marker (random garbage is mostly decoded as noise, so it is not a case)")

    # --- good images ------------------------------------------------------------------------
    p = d / "colour_sdss.jpg"
    Image.fromarray(rgb).save(p, quality=90)
    add("RGB JPEG, pixel scale given", [p], "ok", flags=scaled, forbid=_IMAGE_FORBID | int(Flag.NO_PIXEL_SCALE), pixel_scale=0.396,
        description="an SDSS-like gri composite; the pixel scale comes from the input catalogue")

    p = d / "grey_no_scale.png"
    Image.fromarray(grey).save(p)
    add("greyscale PNG, no pixel scale", [p], "ok", flags=unscaled, forbid=_IMAGE_FORBID | int(Flag.ASSUMED_PIXEL_SCALE),
        description="morphology only: lengths in arcsec are null")

    p = d / "rgba.png"
    alpha = np.full(grey.shape, 255, np.uint8)
    alpha[:6, :6] = 0  # a transparent corner: masked pixels
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(p)
    add("RGBA PNG (transparent corner)", [p], "ok", flags=scaled, forbid=_IMAGE_FORBID, pixel_scale=0.262,
        description="alpha dropped; fully transparent pixels masked")

    p = d / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(p)
    add("palette (P mode) PNG", [p], "ok", flags=unscaled, forbid=_IMAGE_FORBID, description="128-colour indexed image")

    p = d / "grey16.png"
    Image.fromarray(galaxy_display(96, colour=False, bits=16, seed=23)).save(p)
    add("16-bit greyscale PNG (I;16)", [p], "ok", flags=scaled, forbid=_IMAGE_FORBID, pixel_scale=0.262)

    p = d / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(p, quality=90)
    add("CMYK JPEG", [p], "ok", flags=unscaled, forbid=_IMAGE_FORBID, description="as print workflows save them")

    p = d / "exif_rotated.jpg"
    im = Image.fromarray(np.ascontiguousarray(np.rot90(rgb[:, :88], 1)))  # stored on its side...
    exif = im.getexif()
    exif[0x0112] = 6  # ...with Orientation = 6 (rotate 90 degrees clockwise to view)
    im.save(p, quality=90, exif=exif.tobytes())
    add("JPEG with an EXIF orientation tag", [p], "ok", flags=scaled, forbid=_IMAGE_FORBID, pixel_scale=0.262,
        description="stored on its side (96 wide x 88 high) with Orientation = 6; read upright, 88 wide x 96 high")


def make_bad_corpus(directory, *, bombs=True):
    """Write the bad-input corpus into ``directory`` and return its cases.

    Every case yields exactly one catalogue row per file: an error row whose reason names the
    cause, or an ``ok`` row with the flags listed. Files that need an assumed pixel scale get
    it from an input catalogue (see :func:`corpus_inputs`).

    Parameters
    ----------
    directory : str or os.PathLike
        An empty or new directory.
    bombs : bool, optional
        Include the FITS decompression bombs (gzip, two-member gzip, bzip2, xz, zip; about
        0.3 MB on disk in all, 67 MB unpacked each, ~2 s to make). The PNG bombs (a few
        hundred bytes, refused from their headers) are always written.

    Returns
    -------
    list of BadCase
    """

    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cases = []
    good = galaxy_image(n=96, r50=8, bar_len=24, seed=1)

    def add(name, paths, status, **kw):
        cases.append(BadCase(name=name, paths=[os.fspath(p) for p in paths], status=status, **kw))

    _write_broken_cases(d, add, good, bombs)
    _write_pixel_cases(d, add, good, bombs)
    _write_wcs_cases(d, add, good, bombs)
    _write_size_cases(d, add, good, bombs)
    _write_filesystem_cases(d, add, good, bombs)

    # --- JPEG and PNG images ------------------------------------------------------------
    _write_image_cases(d, add)

    # a plain good file, as a control
    p = write_cutout(d / "control.fits", good, objid="control")
    add("control (good cutout)", [p], "ok", forbid=int(Flag.NO_WCS))
    return cases


def _write_broken_cases(d, add, good, bombs):
    """Files that are not FITS, or FITS broken in their structure."""
    from astropy.io import fits

    p = write_cutout(d / "truncated.fits", galaxy_image(n=128, seed=2), objid="truncated")
    raw = open(p, "rb").read()
    open(p, "wb").write(raw[: 2880 + (len(raw) - 2880) // 2])
    add("truncated file", [p], "error", reason="truncated", description="a valid cutout cut in the middle of its data")

    p = d / "not_fits.fits"
    p.write_bytes(b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n" * 40)
    add("not FITS (HTML saved as .fits)", [p], "error", reason="not_fits", description="a web server's error page saved under a .fits name")

    p = d / "empty.fits"
    p.write_bytes(b"")
    add("empty file", [p], "error", reason="empty_file", description="0 bytes")

    p = write_raw_fits(d / "zero_size.fits", {"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": 0, "NAXIS2": 64})
    add("zero-size image (NAXIS1=0)", [p], "error", reason="no_image")

    p = write_cutout(d / "one_d.fits", np.linspace(0, 1, 500).astype(np.float32), wcs=False)
    add("1-D data", [p], "error", reason="not_2d", description="a spectrum-like 1-D array")

    p = write_cutout(d / "tiny.fits", galaxy_image(n=4), objid="tiny")
    add("4 x 4 image", [p], "error", reason="too_small")

    p = write_raw_fits(d / "naxis_mismatch.fits", {"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": 128, "NAXIS2": 128, **_tan_wcs((128, 128))},
                       galaxy_image(n=64).astype(">f4").tobytes())
    add("header NAXIS larger than the data", [p], "error", reason="truncated", description="header says 128 x 128, file holds 64 x 64")

    p = write_cutout(d / "naxis_huge.fits", galaxy_image(n=48, seed=15), objid="naxis_huge")
    raw = bytearray(open(p, "rb").read())
    k = raw.find(b"NAXIS   =")
    raw[k:k + 80] = f"{'NAXIS':<8}= {2**63 - 1:>20}".encode("ascii").ljust(80)
    open(p, "wb").write(bytes(raw))
    add("NAXIS = 2**63-1 (found by the fuzz)", [p], "error", reason="corrupt",
        description="astropy loops over range(NAXIS) on open: a hang and unbounded memory without the check")

    p = d / "table_only.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(10.0))])]).writeto(p)
    add("table-only FITS", [p], "error", reason="no_image")


def _write_pixel_cases(d, add, good, bombs):
    """Cubes, multi-band files, masks, and pixel values no image can have."""
    from astropy.io import fits

    cube = np.stack([galaxy_image(seed=3), galaxy_image(seed=4), galaxy_image(seed=5)])
    p = write_cutout(d / "cube.fits", cube, objid="cube")
    add("3-D cube", [p], "ok", flags=int(Flag.FIRST_PLANE_OF_CUBE), description="3 planes; the first is used")

    p = write_cutout(d / "cube_grz.fits", cube.astype(np.float32), objid="cube_grz", extra={"BANDS": "grz"})
    add("g/r/z cube (Legacy Survey)", [p], "ok", forbid=int(Flag.FIRST_PLANE_OF_CUBE),
        description="bands named by BANDS = 'grz': the default r band is used, no first-plane flag")

    hsc = galaxy_image(seed=16).astype(np.float32)
    mask = np.zeros(hsc.shape, np.int32)
    mask[:3] = 1  # BAD rows; MP_DETECTED (bit 5) over the galaxy must not mask it
    mask[30:66, 30:66] |= 1 << 5
    prim = fits.PrimaryHDU()
    prim.header["FILTER"] = "HSC-I"
    fits.HDUList([prim, fits.ImageHDU(hsc, header=fits.Header(_tan_wcs(hsc.shape, 0.168)), name="IMAGE"),
                  fits.ImageHDU(mask, header=fits.Header([("MP_BAD", 0), ("HIERARCH MP_DETECTED", 5)]), name="MASK"),
                  fits.ImageHDU(np.full(hsc.shape, 0.02**2, np.float32), name="VARIANCE")]).writeto(d / "hsc_mef.fits")
    add("HSC-like file (IMAGE, MASK, VARIANCE extensions)", [d / "hsc_mef.fits"], "ok", forbid=int(Flag.NAN_NEAR_CENTRE),
        description="band from the primary FILTER; BAD rows masked, DETECTED not; S/N from the VARIANCE")

    fits.HDUList([fits.PrimaryHDU(hsc, header=fits.Header(_tan_wcs(hsc.shape))),
                  fits.ImageHDU(np.ones(hsc.shape, np.uint8), name="MASK")]).writeto(d / "all_masked.fits")
    add("MASK extension masks every pixel", [d / "all_masked.fits"], "error", reason="all_nan",
        description="a mask of the other convention (1 = good) or a blank exposure")

    p = write_cutout(d / "all_nan.fits", np.full((64, 64), np.nan, np.float32))
    add("all NaN", [p], "error", reason="all_nan")

    p = write_cutout(d / "all_inf.fits", np.where(np.arange(64 * 64).reshape(64, 64) % 2, np.inf, -np.inf).astype(np.float32))
    add("all +-inf", [p], "error", reason="all_nan")

    p = write_cutout(d / "all_zero.fits", np.zeros((64, 64), np.float32))
    add("all zero", [p], "error", reason="constant_image")

    img = good.copy()
    img[5, 5], img[90, 10], img[10, 88], img[0, :8] = np.inf, -np.inf, np.inf, -np.inf
    p = write_cutout(d / "inf_pixels.fits", img, objid="inf_pixels")
    add("+-inf pixels", [p], "ok", description="a few +inf/-inf pixels away from the galaxy (treated as NaN)")

    img = good.copy()
    yy, xx = np.mgrid[0:96, 0:96]
    img[np.hypot(xx - 47.5, yy - 47.5) < 4] = np.nan
    p = write_cutout(d / "nan_centre.fits", img, objid="nan_centre")
    add("NaN blob over the centre", [p], "ok", flags=int(Flag.NAN_NEAR_CENTRE))

    hdu = fits.PrimaryHDU(good.astype(">f4"), header=fits.Header(_tan_wcs(good.shape)))
    hdu.scale("int16", bscale=0.002, bzero=20.0)
    hdu.header["OBJID"] = "int16_scaled"
    p = d / "int16_bscale.fits"
    hdu.writeto(p)
    add("integer BITPIX with BSCALE/BZERO", [p], "ok", forbid=int(Flag.NO_WCS))

    p = write_cutout(d / "big_endian.fits", good.astype(">f8"), objid="big_endian")
    add("big-endian float64 data", [p], "ok", forbid=int(Flag.NO_WCS))


def _write_wcs_cases(d, add, good, bombs):
    """World coordinate systems missing, partial, non-celestial or absurd."""

    p = write_cutout(d / "no_wcs.fits", galaxy_image(seed=6), wcs=False, objid="no_wcs")
    add("no WCS, no --pixel-scale", [p], "error", reason="no_wcs")

    p = write_cutout(d / "no_wcs_scaled.fits", galaxy_image(seed=7), wcs=False, objid="no_wcs_scaled")
    add("no WCS, pixel scale given", [p], "ok", flags=int(Flag.NO_WCS | Flag.ASSUMED_PIXEL_SCALE), pixel_scale=0.262)

    spectral = {"CTYPE1": "WAVE", "CTYPE2": "LINEAR", "CRVAL1": 5000.0, "CRPIX1": 1.0, "CDELT1": 2.5, "CUNIT1": "Angstrom", "CRVAL2": 0.0, "CRPIX2": 1.0, "CDELT2": 1.0}
    p = write_cutout(d / "non_celestial.fits", galaxy_image(seed=8), wcs=spectral, objid="non_celestial")
    add("non-celestial WCS (WAVE/LINEAR)", [p], "error", reason="no_wcs")
    p = write_cutout(d / "non_celestial_scaled.fits", galaxy_image(seed=9), wcs=spectral, objid="non_celestial_scaled")
    add("non-celestial WCS, pixel scale given", [p], "ok", flags=int(Flag.NON_CELESTIAL_WCS | Flag.ASSUMED_PIXEL_SCALE), pixel_scale=0.262)

    sip = {**_tan_wcs((96, 96), scale=0.75, ra=190.9, dec=16.2), "A_ORDER": 2, "A_0_2": 2.97e-06, "A_1_1": 2.19e-05, "A_2_0": -2.39e-05,
           "B_ORDER": 2, "B_0_2": 2.31e-05, "B_1_1": -2.44e-05, "B_2_0": 2.12e-06,
           "AP_ORDER": 2, "AP_0_2": -2.94e-06, "AP_1_1": -2.23e-05, "AP_2_0": 2.41e-05,
           "BP_ORDER": 2, "BP_0_2": -2.34e-05, "BP_1_1": 2.48e-05, "BP_2_0": -2.15e-06}
    p = write_cutout(d / "sip_no_suffix.fits", good, wcs=sip, objid="sip_no_suffix")
    add("SIP keywords without -SIP suffix", [p], "ok", forbid=int(Flag.NO_WCS | Flag.NON_CELESTIAL_WCS), description="TAN + A/B/AP/BP like the real Spitzer files")

    singular = {**_tan_wcs((96, 96)), "CD1_1": 0.0, "CD2_2": 0.0}
    p = write_cutout(d / "singular_cd.fits", good, wcs=singular, objid="singular_cd")
    add("zero (singular) CD matrix", [p], "error", reason="no_wcs")

    zero_cdelt = {k: v for k, v in _tan_wcs((96, 96)).items() if not k.startswith("CD")}
    zero_cdelt.update(CDELT1=0.0, CDELT2=-0.0)
    p = write_cutout(d / "zero_cdelt.fits", good, wcs=zero_cdelt, objid="zero_cdelt")
    add("zero CDELT", [p], "error", reason="no_wcs")

    garbage = {**_tan_wcs((96, 96)), "CTYPE1": "RA---QQQ", "CTYPE2": "DEC--QQQ", "CRVAL2": 123.0}
    p = write_cutout(d / "garbage_wcs.fits", good, wcs=garbage, objid="garbage_wcs")
    add("garbage WCS (unknown projection, dec 123)", [p], "error", reason="no_wcs")


def _write_size_cases(d, add, good, bombs):
    """Images too large, and decompression bombs."""
    from astropy.io import fits

    p = write_raw_fits(d / "huge_header_only.fits", {"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": 200_000, "NAXIS2": 200_000})
    add("huge image over --max-pixels (header only)", [p], "error", reason="too_large", description="claims 200000 x 200000 (160 GB); 2880 bytes on disk")

    if bombs:
        for name, p, note in _write_bombs(d):
            add(name, [p], "error", reason="decompression_bomb", description=note)

    p = d / "good.fits.gz"
    raw = open(write_cutout(d / "tmp_for_gz.fits", good, objid="gzipped"), "rb").read()
    os.unlink(d / "tmp_for_gz.fits")
    p.write_bytes(gzip.compress(raw))
    add("gzip-compressed cutout (.fits.gz)", [p], "ok")

    p = d / "truncated_gz.fits.gz"
    p.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    add("truncated .fits.gz", [p], "error", reason="truncated")

    p = d / "tile_compressed.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(good, header=fits.Header({**_tan_wcs(good.shape), "OBJID": "tile_compressed"}), compression_type="RICE_1", quantize_level=64)]).writeto(p)
    add("tile-compressed .fz", [p], "ok", forbid=int(Flag.NO_WCS))

    p = d / "image_in_extension.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(good, header=fits.Header({**_tan_wcs(good.shape), "OBJID": "image_in_ext"}))]).writeto(p)
    add("image in an extension HDU", [p], "ok")


def _write_filesystem_cases(d, add, good, bombs):
    """Permissions, links, pipes, directories and names."""

    p = write_cutout(d / "unreadable.fits", galaxy_image(seed=10), objid="unreadable")
    os.chmod(p, 0)
    if is_root():
        add("unreadable file (chmod 000)", [p], "ok", description="running as root: permission bits do not block reads (the EACCES path is tested with a simulated error)")
    else:
        add("unreadable file (chmod 000)", [p], "error", reason="unreadable")

    a = write_cutout(d / "dup_a.fits", galaxy_image(seed=11), objid="DUPLICATE-1")
    b = write_cutout(d / "dup_b.fits", galaxy_image(seed=12), objid="DUPLICATE-1")
    add("duplicate object ids", [a, b], "ok", job_flags=int(Flag.DUPLICATE_OBJECT_ID), description="two files with OBJID DUPLICATE-1")

    u = d / "dir with spaces ü" / "ünïcødé галактика №1.fits"
    u.parent.mkdir()
    p = write_cutout(u, galaxy_image(seed=13))
    add("unicode and spaces in the path", [p], "ok")

    p = write_cutout(d / "g`id`$(touch PWNED);*?[x] ~$HOME.fits", galaxy_image(seed=14))
    add("shell metacharacters in the name", [p], "ok", description="never expanded: no PWNED file appears")

    loop = d / "loop"
    loop.mkdir()
    os.symlink("..", loop / "up")  # loop/up -> corpus dir -> loop -> ...
    os.symlink(".", loop / "self")
    p = loop / "self_link.fits"
    os.symlink("self_link.fits", p)
    add("symlink loop (file linking to itself)", [p], "error", reason="symlink_loop", description="plus loop/up -> .. and loop/self -> . in the tree")

    p = d / "dangling.fits"
    os.symlink("nowhere/does_not_exist.fits", p)
    add("dangling symlink", [p], "error", reason="missing")

    if hasattr(os, "mkfifo"):
        p = d / "fifo.fits"
        os.mkfifo(p)
        add("named pipe called .fits", [p], "error", reason="not_a_file", description="would block a reader forever")

    p = d / "listed" / "directory.fits"
    p.mkdir(parents=True)
    add("directory named .fits (from an @list)", [p], "error", reason="not_a_file", listed=True)

    a, b = d / "ngc4608.v1.fits", d / "ngc4608.v2.fits"
    a.write_bytes(b"SIMPLE  = garbage" * 200)
    b.write_bytes(b"SIMPLE  = garbage" * 200)
    add("dotted names, both unreadable", [a, b], "error", reason="not_fits", forbid=int(Flag.DUPLICATE_OBJECT_ID),
        description="error rows keep the ids ngc4608.v1 and ngc4608.v2 (not both ngc4608)")


def corpus_inputs(directory, cases):
    """Write the ``@list`` file and the input catalogue that a job over the corpus needs.

    Parameters
    ----------
    directory : str or os.PathLike
        Where to write ``listed.txt`` and ``catalogue.csv`` (outside the corpus directory,
        so that they are not inputs themselves).
    cases : list of BadCase
        From :func:`make_bad_corpus`.

    Returns
    -------
    tuple
        ``(extra_inputs, catalogue)``: the ``@list`` argument (a list, possibly empty) to add
        to the inputs, and the CSV path with the per-file pixel scales (or None).
    """
    import csv

    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    listed = [p for c in cases if c.listed for p in c.paths]
    extra = []
    if listed:
        lst = d / "listed.txt"
        lst.write_text("".join(os.path.abspath(p) + "\n" for p in listed), encoding="utf-8")
        extra.append("@" + str(lst))
    scaled = [(p, c.pixel_scale) for c in cases if c.pixel_scale is not None for p in c.paths]
    catalogue = None
    if scaled:
        catalogue = d / "catalogue.csv"
        with open(catalogue, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "pixel_scale"])
            for p, s in scaled:
                w.writerow([os.path.abspath(p), s])
        catalogue = str(catalogue)
    return extra, catalogue


def check_row(case, row, *, job=True):
    """Compare one catalogue row with a case's expectation.

    Parameters
    ----------
    case : BadCase
        The case.
    row : dict or pandas.Series
        The row.
    job : bool
        Whether the row comes from a whole job (so job-level flags must be set).

    Returns
    -------
    list of str
        Problems found (empty when the row is as expected).
    """
    problems = []
    status, error = row["status"], row["error"]
    error = error if isinstance(error, str) else None
    flags = row["quality_flags"]
    flags = 0 if flags is None or not np.isfinite(float(flags)) else int(flags)
    if status != case.status:
        problems.append(f"status {status!r} (error {error!r}), expected {case.status!r}")
    if case.status == "error" and case.reason and not str(error or "").startswith(case.reason + ":"):
        problems.append(f"error {error!r}, expected reason {case.reason!r}")
    if case.status == "ok" and error:
        problems.append(f"ok row with error {error!r}")
    need = case.flags | (case.job_flags if job else 0)
    if flags & need != need:
        problems.append(f"flags {flags:#x} lack {need & ~flags:#x}")
    if flags & case.forbid:
        problems.append(f"flags {flags:#x} have forbidden {flags & case.forbid:#x}")
    return problems


# --------------------------------------------------------------------------------------------
# fault injection


@contextlib.contextmanager
def full_disk(partition=None, *, at_assembly=False):
    """Simulate a full disk (ENOSPC) for Parquet writes made in this process.

    Parameters
    ----------
    partition : int, optional
        Fail the staging write of this partition's part: half a file is written to the
        temporary name, then ``OSError(ENOSPC)`` is raised, as a filling disk does.
    at_assembly : bool
        Fail the final catalogue's writer after its first row group instead.

    Yields
    ------
    list
        The paths whose writes failed, appended as they fail.

    Notes
    -----
    Patches ``pyarrow.parquet.write_table`` and ``pyarrow.parquet.ParquetWriter``, so the
    tasks must run in this process (e.g. ``LocalCluster(processes=False)``).
    """
    import pyarrow.parquet as pq

    real_write, real_writer = pq.write_table, pq.ParquetWriter
    failed = []

    def write_table(table, where, *a, **k):
        if partition is not None and "partition" in table.column_names and table.num_rows and table.column("partition")[0].as_py() == partition:
            failed.append(str(where))
            with open(where, "wb") as fh:
                fh.write(b"PAR1" + b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real_write(table, where, *a, **k)

    class Writer(real_writer):
        def __init__(self, where, *a, **k):
            super().__init__(where, *a, **k)
            self._assembling = at_assembly and os.path.basename(str(where)).startswith(".tmp-catalogue-")
            self._where = str(where)

        def write_table(self, table, *a, **k):
            super().write_table(table, *a, **k)
            if self._assembling:
                failed.append(self._where)
                raise OSError(errno.ENOSPC, "No space left on device", self._where)

    pq.write_table, pq.ParquetWriter = write_table, Writer
    try:
        yield failed
    finally:
        pq.write_table, pq.ParquetWriter = real_write, real_writer


def forget_tasks(cluster, timeout=20.0):
    """Wait until an in-process scheduler has forgotten every ``survey-bars-partition`` task.

    ``process`` names a task by its partition's digest, which leaves out the output path, and
    cancels a failed job's futures without waiting. In one long-lived client, a job submitted
    while anything still holds the old futures (e.g. a kept traceback) gets the old task's
    cancellation or its result (no part in the new staging directory). The command line uses
    a new client per run and never meets this.

    Parameters
    ----------
    cluster : distributed.LocalCluster
        A cluster whose scheduler runs in this process.
    timeout : float
        Seconds to wait.
    """
    import gc
    import time

    gc.collect()
    t0 = time.time()
    while any(str(k).startswith("survey-bars-partition") for k in cluster.scheduler.tasks):
        if time.time() - t0 > timeout:
            msg = f"the scheduler still holds {sorted(map(str, cluster.scheduler.tasks))}"
            raise TimeoutError(msg)
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# a model bundle for tests


def _bundle_key():
    h = hashlib.sha256()
    here = pathlib.Path(__file__).resolve().parent
    for name in ("training/nets.py", "training/export.py", "inference/bundle.py"):
        try:
            h.update((here / name).read_bytes())
        except OSError:
            pass
    try:
        import torch

        h.update(torch.__version__.encode())
    except ImportError:  # pragma: no cover - torch is needed to build the bundle anyway
        pass
    return h.hexdigest()[:16]


def tiny_bundle(cache_dir=None):
    """Return the path of a tiny random-weight model bundle, exporting it once (needs torch).

    The bundle is cached under ``cache_dir`` (default: ``$SURVEY_BARS_TEST_BUNDLE_CACHE`` or
    the system temporary directory), keyed by the source of the nets and the exporter, so
    test modules and benchmark runs share one export (~25 s).

    Parameters
    ----------
    cache_dir : str, optional
        Directory for the cached bundle.

    Returns
    -------
    str
        The bundle directory (loads with :func:`survey_bars.inference.bundle.load_bundle`).
    """

    cache_dir = cache_dir or os.environ.get("SURVEY_BARS_TEST_BUNDLE_CACHE") or tempfile.gettempdir()
    path = pathlib.Path(cache_dir) / f"survey-bars-tiny-bundle-{_bundle_key()}"
    try:
        load_bundle(path)
        return str(path)
    except BundleError:
        shutil.rmtree(path, ignore_errors=True)
    import torch

    from .training.export import export_bundle
    from .training.nets import LengthNet, MorphologyNet

    torch.manual_seed(0)
    work = pathlib.Path(tempfile.mkdtemp(prefix=".tiny-bundle-", dir=cache_dir))
    try:
        export_bundle(MorphologyNet(), LengthNet(), work / "bundle", card_extra={"name": "tiny-random-test-bundle"}, check=False)
        try:
            os.rename(work / "bundle", path)
        except OSError:  # another process got there first
            load_bundle(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return str(path)


def model_for_tests():
    """Return the ``RunOptions.model`` value for tests: None for the default bundle, if it loads.

    Returns
    -------
    str or None
        None when the shipped default bundle loads, else the path of :func:`tiny_bundle`.
    """

    try:
        load_bundle()
        return None
    except BundleError:
        return tiny_bundle()
