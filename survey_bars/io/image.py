"""Reading JPEG and PNG cutouts (display images) with Pillow.

Much of the field's labelled data are colour JPEG or PNG cutouts: Galaxy Zoo, the Legacy Survey
and SkyServer cutout services. :func:`read_image` turns one into the same :class:`Cutout` that a
FITS file gives, so everything after reading (normalisation, inference, saliency, measuring) is
the same for both.

The rules, documented in the README:

- **Formats and modes.** JPEG and PNG (the format is sniffed from the file's content, not its
  name); greyscale (``L``, ``LA``, ``I;16``, ``I``), colour (``RGB``, ``RGBA``, palette ``P``/``PA``,
  ``CMYK``, ``YCbCr``), 8- and 16-bit. Alpha is dropped: a fully transparent pixel is masked
  (NaN). A bilevel (1-bit) image carries no brightness levels and is refused.
- **Orientation.** The EXIF orientation tag is honoured; the image is then taken to be north up
  and east left, as cutout services make them, and its rows (top row first) are flipped so that
  the array has FITS's orientation (row 0 at the bottom, north up). Position angles
  (``bar_pa_deg``) rest on that assumption.
- **Colour.** The network sees one band: the **mean of the red, green and blue channels**, with
  equal weights. In an SDSS gri composite (red = i, green = r, blue = g) or a Legacy Survey grz
  composite, that is the sum of the survey's bands, as a detection image is made; a greyscale
  image is used as it is. The colour pixels are kept for display (``survey-bars inspect``).
- **No photometry.** The pixel values are display values (stretched and quantised), not
  fluxes: every image is flagged ``DISPLAY_IMAGE`` and gets no S/N.
- **Pixel scale and position** come from the input catalogue (``pixel_scale``, ``ra``,
  ``dec``) or ``--pixel-scale``, never from the image. Without a scale the morphology is still
  given and the lengths in arcsec are null (flag ``NO_PIXEL_SCALE``).
- **Decompression bombs.** The image's declared size is checked against ``max_pixels`` before
  any pixel is decoded.
"""

from __future__ import annotations

import os

import numpy as np

from ..flags import Flag
from .cutout import Cutout, CutoutError, Reader, check_pixels

__all__ = ["ImageReader", "IMAGE_SUFFIXES", "IMAGE_FORMATS", "COLOUR_RULE", "is_image_magic", "read_image", "to_band"]

#: file-name suffixes that are read as images (the content decides: a FITS file named .png is FITS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png")
#: Pillow format names accepted
IMAGE_FORMATS = ("JPEG", "PNG", "MPO")  # MPO: multi-picture JPEG from cameras; its first picture is a JPEG
#: the ``band`` recorded for colour and greyscale images
COLOUR_RULE = "rgb-mean"
GREY_BAND = "grey"

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_image_magic(magic):
    """True when ``magic`` (a file's first bytes) starts a JPEG or PNG file.

    Parameters
    ----------
    magic : bytes
        The first bytes of the file (at least 8 for PNG).

    Returns
    -------
    bool
    """
    return magic.startswith(_JPEG_MAGIC) or magic.startswith(_PNG_MAGIC)


def to_band(pixels):
    """Turn decoded image pixels into the network's single band.

    Parameters
    ----------
    pixels : ndarray
        ``(ny, nx)`` greyscale or ``(ny, nx, 3)`` RGB values (any numeric type).

    Returns
    -------
    ndarray
        ``(ny, nx)`` float64: the greyscale values, or the mean of the three colour channels.
    """
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim == 3:
        return arr.mean(axis=2)
    return arr


#: a declared size over this many pixels must also be less than this many times the file size:
#: a small file that declares a huge image is a decompression bomb (a JPEG of dark sky packs
#: 10-50 pixels per byte, a PNG of it a few hundred)
_BOMB_MIN_PIXELS = 4_000_000
_BOMB_PIXELS_PER_BYTE = 1000


def _open(path, max_pixels):
    """Open the image lazily (header only) and check its format and declared size."""
    import os

    from PIL import Image, UnidentifiedImageError

    with open(path, "rb") as fh:
        magic = fh.read(16)
    size_bytes = os.path.getsize(path)
    try:
        # (Pillow warns above its own pixel limit; ours, max_pixels, is checked below)
        im = Image.open(path)
    except Image.DecompressionBombError as exc:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        if max_pixels < limit:
            msg = (f"The image declares more than {limit} pixels ({exc}), over --max-pixels {max_pixels}; "
                   "it was not decoded. Make a smaller cutout.")
            raise CutoutError("too_large", msg) from None
        msg = (f"The image declares more pixels than Pillow will decode ({exc}); it looks like a decompression "
               f"bomb and was not read. Pillow refuses images over {limit} pixels whatever --max-pixels says: "
               "make a smaller cutout, or convert it to FITS.")
        raise CutoutError("decompression_bomb", msg) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:  # SyntaxError: Pillow's broken-header error
        if is_image_magic(magic):
            reason = "truncated" if size_bytes < 64 else "corrupt"
            msg = (f"The file starts like a {'PNG' if magic.startswith(_PNG_MAGIC) else 'JPEG'} image but its header "
                   f"is damaged ({type(exc).__name__}: {exc}). Download or copy the cutout again.")
            raise CutoutError(reason, msg) from None
        if isinstance(exc, UnidentifiedImageError):
            msg = ("Not a readable JPEG or PNG image: its content is not an image (a web page or text "
                   "saved under an image name?). Download the cutout again.")
            raise CutoutError("not_image", msg) from None
        msg = f"The image header is damaged ({type(exc).__name__}: {exc}). Download the cutout again."
        raise CutoutError("corrupt", msg) from None
    if im.format not in IMAGE_FORMATS:
        fmt = im.format
        im.close()
        msg = (f"The file is a {fmt} image; survey-bars reads JPEG and PNG images and FITS files. "
               "Convert it to PNG or FITS.")
        raise CutoutError("unsupported_format", msg)
    nx, ny = im.size
    if nx * ny > max_pixels:
        im.close()
        msg = (f"The image declares {nx} x {ny} = {nx * ny} pixels, over --max-pixels {max_pixels}; "
               "it was not decoded (a decompression bomb, or a cutout far larger than a galaxy "
               "stamp). Make a smaller cutout or raise --max-pixels.")
        raise CutoutError("too_large", msg)
    if nx * ny > _BOMB_MIN_PIXELS and nx * ny > _BOMB_PIXELS_PER_BYTE * size_bytes:
        im.close()
        msg = (f"The image declares {nx} x {ny} pixels from a file of only {size_bytes} bytes (over "
               f"{_BOMB_PIXELS_PER_BYTE} pixels per byte): a decompression bomb or a damaged file; it was not "
               "decoded. Download the cutout again.")
        raise CutoutError("decompression_bomb", msg)
    return im


def _decode(im):
    """Decode ``im`` to (band array, colour uint8 array or None, valid mask or None, mode)."""
    from PIL import Image, ImageOps

    mode = im.mode
    if mode == "1":
        msg = ("The image is bilevel (1 bit per pixel): it holds no brightness levels to measure. "
               "Give an 8- or 16-bit greyscale or colour cutout.")
        raise CutoutError("unsupported_mode", msg)
    try:
        im.load()
    except Image.DecompressionBombError as exc:  # pragma: no cover - checked at open
        raise CutoutError("decompression_bomb", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        reason = "truncated" if "truncated" in text.lower() or isinstance(exc, EOFError) else "corrupt"
        what = "ends early" if reason == "truncated" else "cannot be decoded"
        msg = f"The image data {what} ({type(exc).__name__}: {text}). Download or copy the cutout again."
        raise CutoutError(reason, msg) from None
    im = ImageOps.exif_transpose(im)  # honour the camera/scan orientation tag
    alpha = None
    if mode in ("L", "RGB") and "transparency" in im.info:  # a tRNS colour key: its pixels are masked
        im = im.convert("LA" if mode == "L" else "RGBA")
        mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        mode = im.mode
    if mode in ("LA", "RGBA", "La", "RGBa"):
        alpha = np.asarray(im.getchannel("A"))
        im = im.convert("L" if mode.startswith("L") else "RGB")
        mode = im.mode
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
        mode = "RGB"
    if mode == "RGB":
        colour = np.asarray(im, dtype=np.uint8)
        band = to_band(colour)
    elif mode in ("L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        band = to_band(np.asarray(im))
        colour = None
    else:
        msg = f"The image mode {mode!r} is not supported. Give an 8- or 16-bit greyscale or colour (RGB) cutout."
        raise CutoutError("unsupported_mode", msg)
    valid = None if alpha is None else alpha > 0
    return band, colour, valid, mode


def read_image(path, *, pixel_scale=None, max_pixels, object_id=None):
    """Read one JPEG or PNG cutout.

    Parameters
    ----------
    path : str
        Absolute path of an existing, non-empty regular file (checked by the caller).
    pixel_scale : float, optional
        Pixel scale in arcsec (from the input catalogue or ``--pixel-scale``). Without one the
        row is flagged ``NO_PIXEL_SCALE`` and gets no lengths in arcsec.
    max_pixels : int
        Images that declare more pixels are refused before decoding.
    object_id : str, optional
        The row's id (default: the file name without its suffix).

    Returns
    -------
    survey_bars.io.cutout.Cutout
        ``data`` north up in FITS orientation (row 0 at the bottom), ``colour`` the RGB pixels
        in the same orientation (None for greyscale), ``display`` True, ``band`` ``"rgb-mean"``
        or ``"grey"``; ``cd`` is the north-up, east-left matrix of the assumed scale.

    Raises
    ------
    survey_bars.io.cutout.CutoutError
        ``not_image``, ``unsupported_format``, ``unsupported_mode``, ``too_large``,
        ``decompression_bomb``, ``truncated`` or ``corrupt``.
    """
    im = _open(path, max_pixels)
    try:
        n_frames = int(getattr(im, "n_frames", 1) or 1)
        band, colour, valid, mode = _decode(im)
    finally:
        im.close()
    # top row first -> FITS orientation (row 0 at the bottom); north stays up
    band = band[::-1]
    colour = None if colour is None else np.ascontiguousarray(colour[::-1])
    if valid is not None:
        band = np.where(valid[::-1], band, np.nan)
    band = np.ascontiguousarray(band)
    notes = [f"{mode} display image; network band: {COLOUR_RULE if colour is not None else GREY_BAND}"]
    if n_frames > 1:
        notes.append(f"{n_frames} frames; the first was used")
    flags = int(Flag.DISPLAY_IMAGE | Flag.NO_WCS)
    scale = cd = None
    if pixel_scale is not None and np.isfinite(pixel_scale) and pixel_scale > 0:
        scale = float(pixel_scale)
        flags |= int(Flag.ASSUMED_PIXEL_SCALE)
        d = scale / 3600.0
        cd = np.array([[-d, 0.0], [0.0, d]])  # north up, east left
    else:
        flags |= int(Flag.NO_PIXEL_SCALE)
    return Cutout(
        path=path,
        object_id=object_id if object_id is not None else os.path.splitext(os.path.basename(path))[0],
        data=band,
        pixel_scale_arcsec=scale,
        ra=None,
        dec=None,
        cd=cd,
        flags=flags,
        notes=notes,
        band=COLOUR_RULE if colour is not None else GREY_BAND,
        display=True,
        colour=colour,
    )


class ImageReader(Reader):
    """JPEG and PNG display images (:func:`read_image`), told by their signature or name."""

    name = "image"
    suffixes = IMAGE_SUFFIXES

    def sniff(self, magic):
        return is_image_magic(magic)

    def read(self, path, st, magic, *, pixel_scale, max_pixels, band, object_id):
        cut = read_image(path, pixel_scale=pixel_scale, max_pixels=max_pixels, object_id=object_id)
        cut.data = check_pixels(cut.data)
        return cut
