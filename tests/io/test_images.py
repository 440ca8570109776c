"""JPEG and PNG cutouts: one test per format and mode, the colour rule, orientation, flags."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from survey_bars.io import CutoutError, file_stem, is_input_file, read_cutout
from survey_bars.flags import Flag
from survey_bars.io.image import COLOUR_RULE, to_band

from ..conftest import galaxy_image


def _u8(img):
    """A FITS-orientation float image as 8-bit, top row first (as images are stored)."""
    lo, hi = float(np.min(img)), float(np.max(img))
    return np.clip(np.round((img - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)[::-1]


@pytest.fixture
def gal():
    return galaxy_image(n=64, seed=3)


def _rgb(gal):
    g = _u8(gal).astype(float)
    return np.stack([g, 0.8 * g, 0.6 * g], axis=-1).astype(np.uint8)


# one test per format and mode: (suffix, save-kwargs, builder of a PIL image, expected band)
CASES = {
    "jpeg_rgb": (".jpg", {"quality": 95}, lambda g: Image.fromarray(_rgb(g), "RGB"), COLOUR_RULE),
    "jpeg_grey": (".jpeg", {"quality": 95}, lambda g: Image.fromarray(_u8(g), "L"), "grey"),
    "jpeg_cmyk": (".jpg", {"quality": 95}, lambda g: Image.fromarray(_rgb(g), "RGB").convert("CMYK"), COLOUR_RULE),
    "png_rgb": (".png", {}, lambda g: Image.fromarray(_rgb(g), "RGB"), COLOUR_RULE),
    "png_rgba": (".png", {}, lambda g: Image.fromarray(_rgb(g), "RGB").convert("RGBA"), COLOUR_RULE),
    "png_grey": (".png", {}, lambda g: Image.fromarray(_u8(g), "L"), "grey"),
    "png_grey_alpha": (".png", {}, lambda g: Image.fromarray(_u8(g), "L").convert("LA"), "grey"),
    "png_palette": (".png", {}, lambda g: Image.fromarray(_rgb(g), "RGB").convert("P", palette=Image.Palette.ADAPTIVE), COLOUR_RULE),
    "png_16bit": (".png", {}, lambda g: Image.fromarray(_u8(g).astype(np.uint16) * 257), "grey"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_format_and_mode_reads(tmp_path, gal, case):
    suffix, kw, build, band = CASES[case]
    p = tmp_path / f"{case}{suffix}"
    build(gal).save(p, **kw)
    cut = read_cutout(p, pixel_scale=0.3)
    assert cut.data.shape == (64, 64) and cut.data.dtype == np.float64
    assert cut.band == band and cut.display
    assert cut.object_id == case
    assert (cut.colour is not None) == (band == COLOUR_RULE)
    assert cut.flags & Flag.DISPLAY_IMAGE and cut.flags & Flag.ASSUMED_PIXEL_SCALE and cut.flags & Flag.NO_WCS
    assert not cut.flags & Flag.NO_PIXEL_SCALE
    assert cut.pixel_scale_arcsec == 0.3 and cut.ra is None
    # the galaxy is where it was: the brightest pixel near the centre, north up
    iy, ix = np.unravel_index(np.nanargmax(cut.data), cut.data.shape)
    jy, jx = np.unravel_index(np.argmax(gal), gal.shape)
    assert abs(iy - jy) <= 2 and abs(ix - jx) <= 2


def test_pixels_are_exact_and_north_up(tmp_path):
    """A lossless PNG keeps every value; the top row of the image becomes the last row (north up)."""
    arr = np.arange(16 * 20, dtype=np.uint8).reshape(16, 20)
    Image.fromarray(arr, "L").save(tmp_path / "ramp.png")
    cut = read_cutout(tmp_path / "ramp.png")
    np.testing.assert_array_equal(cut.data, arr[::-1].astype(float))


def test_colour_rule_is_the_channel_mean(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "c.png")
    cut = read_cutout(tmp_path / "c.png")
    np.testing.assert_allclose(cut.data, rgb[::-1].astype(float).mean(axis=2))
    np.testing.assert_array_equal(cut.colour, rgb[::-1])
    np.testing.assert_allclose(to_band(rgb), rgb.astype(float).mean(axis=2))


def test_sixteen_bit_values_are_kept(tmp_path):
    arr = (np.arange(32 * 32, dtype=np.uint16) * 60).reshape(32, 32)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    cut = read_cutout(tmp_path / "deep.png")
    assert cut.data.max() == arr.max() and cut.data.max() > 255


def test_exif_orientation_is_honoured(tmp_path, gal):
    """A camera-rotated JPEG (orientation tag 6: rotate 90 deg clockwise to view) reads upright."""
    upright = _u8(gal)
    stored = np.rot90(upright, k=1)  # what a camera that needs a clockwise turn stores
    im = Image.fromarray(stored, "L")
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=98)
    cut = read_cutout(tmp_path / "rot.jpg", pixel_scale=0.3)
    assert cut.data.shape == upright.shape
    err = np.abs(cut.data - upright[::-1].astype(float)).mean()
    assert err < 3.0, err  # JPEG noise only, not a rotated image


def test_transparent_pixels_are_masked(tmp_path, gal):
    rgba = np.dstack([_rgb(gal), np.full((64, 64), 255, np.uint8)])
    rgba[:5, :, 3] = 0  # the top five rows (north edge) transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    cut = read_cutout(tmp_path / "a.png")
    assert np.isnan(cut.data[-5:]).all() and np.isfinite(cut.data[:-5]).all()


def test_without_a_pixel_scale_the_image_is_read_and_flagged(tmp_path, gal):
    Image.fromarray(_u8(gal), "L").save(tmp_path / "noscale.png")
    cut = read_cutout(tmp_path / "noscale.png")
    assert cut.pixel_scale_arcsec is None and cut.cd is None
    assert cut.flags & Flag.NO_PIXEL_SCALE and not cut.flags & Flag.ASSUMED_PIXEL_SCALE


def test_content_decides_the_format(tmp_path, gal):
    """A PNG named .fits is read as an image; a text file named .png is refused as not an image."""
    Image.fromarray(_u8(gal), "L").save(tmp_path / "x.png")
    (tmp_path / "x.png").rename(tmp_path / "really_png.fits")
    assert read_cutout(tmp_path / "really_png.fits").display
    (tmp_path / "page.png").write_text("<html>404 not found</html>")
    with pytest.raises(CutoutError) as exc:
        read_cutout(tmp_path / "page.png")
    assert exc.value.reason == "not_image"


def test_a_constant_image_is_refused(tmp_path):
    Image.fromarray(np.full((32, 32), 7, np.uint8), "L").save(tmp_path / "flat.png")
    with pytest.raises(CutoutError) as exc:
        read_cutout(tmp_path / "flat.png")
    assert exc.value.reason == "constant_image"


def test_names_and_stems():
    assert is_input_file("a/b/G1.JPG") and is_input_file("x.png") and is_input_file("y.fits.fz")
    assert not is_input_file("labels.csv") and not is_input_file("notes.txt")
    assert file_stem("/d/gz2_00001.jpeg") == "gz2_00001" and file_stem("/d/n.fits.gz") == "n"
