"""Bad (and good) JPEG and PNG cutouts, read directly with ``read_cutout``.

The files are the image cases of the bad-input corpus (:func:`survey_bars.testing.make_bad_corpus`,
written by Pillow at run time), so these tests, ``tests/test_reliability.py`` (the same files
through ``process_items`` and a whole job) and ``python -m benchmarks.reliability`` check the
same cases. Each bad image must raise :class:`CutoutError` with the right ``reason`` and a
message that says what to do; the oversized PNGs must be refused from their headers, without
a pixel decoded.
"""

from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest

from survey_bars.io import CutoutError, read_cutout
from survey_bars.flags import Flag
from survey_bars.testing import galaxy_display, make_bad_corpus, write_cutout, write_png_declaring

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@pytest.fixture(scope="module")
def image_cases(tmp_path_factory):
    """The corpus' JPEG and PNG cases, by name (the FITS bombs are left out: not needed here)."""
    cases = make_bad_corpus(tmp_path_factory.mktemp("corpus") / "inputs", bombs=False)
    return {c.name: c for c in cases if c.paths[0].lower().endswith(IMAGE_SUFFIXES)}


def _refusal(case):
    (path,) = case.paths
    with pytest.raises(CutoutError) as e:
        read_cutout(path, pixel_scale=case.pixel_scale)
    return e.value


# case name -> (reason, words of the remedy the message must give)
BAD = {
    "truncated JPEG": ("truncated", ["ends early", "Download or copy the cutout again"]),
    "not an image (HTML saved as .png)": ("not_image", ["not an image", "Download the cutout again"]),
    "empty .jpg": ("empty_file", ["empty", "Re-create the cutout"]),
    "PNG declaring 10000 x 10000 (over the pixel limit)": ("too_large", ["10000 x 10000", "not decoded", "raise --max-pixels"]),
    "PNG decompression bomb (declares 30000 x 30000)": ("too_large", ["--max-pixels", "not decoded", "Make a smaller cutout"]),
    "PNG bomb under the pixel limit (declares 3000 x 3000 in ~100 bytes)": ("decompression_bomb", ["pixels per byte", "not decoded", "Download the cutout again"]),
    "1-bit (bilevel) PNG": ("unsupported_mode", ["bilevel", "Give an 8- or 16-bit greyscale or colour cutout"]),
    "GIF saved as .png": ("unsupported_format", ["GIF", "Convert it to PNG or FITS"]),
    "JPEG with garbage over its data (another JPEG's header)": ("corrupt", ["cannot be decoded", "Download or copy the cutout again"]),
}


def test_every_bad_image_case_is_listed_here(image_cases):
    assert sorted(c.name for c in image_cases.values() if c.status == "error") == sorted(BAD)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_image(image_cases, name):
    reason, remedy = BAD[name]
    case = image_cases[name]
    assert case.reason == reason  # the corpus (and so the job-level tests) expects the same
    err = _refusal(case)
    assert err.reason == reason, (name, err.reason, err.message)
    for words in remedy:
        assert words in err.message, (name, words, err.message)


def test_missing_and_directory_named_png(tmp_path):
    with pytest.raises(CutoutError) as e:
        read_cutout(tmp_path / "nowhere.png")
    assert e.value.reason == "missing" and "Check that the file exists" in e.value.message
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(CutoutError) as e:
        read_cutout(tmp_path / "folder.png")
    assert e.value.reason == "not_a_file" and "Give regular FITS, JPEG or PNG files" in e.value.message


# ------------------------------------------------------------------ refused without decoding


@pytest.fixture
def decoding_spy(monkeypatch):
    """Record every attempt to decode pixels: ``Image.load``, ``ImageFile.load`` and Pillow's decoders."""
    from PIL import Image, ImageFile

    calls = []

    def spy(name, real):
        def wrapper(*a, **k):
            calls.append(name)
            return real(*a, **k)

        return wrapper

    monkeypatch.setattr(Image.Image, "load", spy("Image.load", Image.Image.load))
    monkeypatch.setattr(ImageFile.ImageFile, "load", spy("ImageFile.load", ImageFile.ImageFile.load))
    monkeypatch.setattr(Image, "_getdecoder", spy("_getdecoder", Image._getdecoder))
    return calls


def test_spy_sees_a_good_image_decoded(image_cases, decoding_spy):
    """The control: reading a good PNG goes through the hooks that the refusals must not reach."""
    read_cutout(image_cases["greyscale PNG, no pixel scale"].paths[0])
    assert "ImageFile.load" in decoding_spy and "_getdecoder" in decoding_spy


@pytest.mark.parametrize("name", ["PNG declaring 10000 x 10000 (over the pixel limit)", "PNG decompression bomb (declares 30000 x 30000)"])
def test_oversized_png_refused_without_decoding(image_cases, decoding_spy, name):
    case = image_cases[name]
    (path,) = case.paths
    assert os.path.getsize(path) < 1000
    tracemalloc.start()
    t0 = time.perf_counter()
    err = _refusal(case)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert err.reason == case.reason
    assert decoding_spy == [], decoding_spy
    # decoded, 10000 x 10000 grey is 100 MB (800 MB as float64); the bounds are sanity checks only
    assert peak < 5_000_000 and dt < 1.0, (peak, dt)


def test_max_pixels_is_honoured_for_images(tmp_path, decoding_spy):
    p = write_png_declaring(tmp_path / "wide.png", 4000, 3000)  # 12 Mpix: under the default, over this limit
    decoding_spy.clear()  # writing it went through Image.load
    with pytest.raises(CutoutError) as e:
        read_cutout(p, max_pixels=1_000_000)
    assert e.value.reason == "too_large" and "--max-pixels 1000000" in e.value.message
    assert decoding_spy == []


def test_png_bomb_over_max_pixels_is_too_large(tmp_path):
    p = write_png_declaring(tmp_path / "bomb.png", 30_000, 30_000)
    with pytest.raises(CutoutError) as e:
        read_cutout(p)
    assert e.value.reason == "too_large" and "--max-pixels" in e.value.message


def test_pillow_limit_above_max_pixels_is_a_bomb(tmp_path):
    """--max-pixels above Pillow's own cap: the message says Pillow's cap applies."""
    p = write_png_declaring(tmp_path / "bomb.png", 30_000, 30_000)
    with pytest.raises(CutoutError) as e:
        read_cutout(p, max_pixels=10**10)
    assert e.value.reason == "decompression_bomb" and "whatever --max-pixels says" in e.value.message


def test_small_file_declaring_a_huge_image_is_refused_unread(tmp_path, decoding_spy):
    """A ~100-byte PNG declaring 3000 x 3000 (under --max-pixels) is a bomb by its pixels per byte."""
    p = write_png_declaring(tmp_path / "ratio.png", 3000, 3000)
    decoding_spy.clear()
    with pytest.raises(CutoutError) as e:
        read_cutout(p)
    assert e.value.reason == "decompression_bomb" and "pixels per byte" in e.value.message
    assert decoding_spy == []


@pytest.mark.parametrize("damage", ["bad_ihdr_crc", "signature_only", "jpeg_3_bytes"])
def test_damaged_header_with_an_image_signature_is_corrupt_not_text(tmp_path, damage):
    from PIL import Image as _Image

    good = tmp_path / "g.png"
    _Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(good)
    raw = good.read_bytes()
    if damage == "bad_ihdr_crc":
        raw = raw[:29] + bytes([raw[29] ^ 0xFF]) + raw[30:]
        name, reasons = "crc.png", ("corrupt",)
    elif damage == "signature_only":
        raw = raw[:8]
        name, reasons = "sig.png", ("truncated",)
    else:
        raw = b"\xff\xd8\xff"
        name, reasons = "cut.jpg", ("truncated",)
    p = tmp_path / name
    p.write_bytes(raw)
    with pytest.raises(CutoutError) as e:
        read_cutout(p)
    assert e.value.reason in reasons and "Download or copy the cutout again" in e.value.message


def test_colour_key_transparency_masks_pixels(tmp_path):
    from PIL import Image as _Image

    arr = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    arr[:4] = 0
    _Image.fromarray(arr).save(tmp_path / "trns.png", transparency=0)
    cut = read_cutout(tmp_path / "trns.png")
    assert np.isnan(cut.data[-4:]).all()  # the top rows (stored first) are the last rows of data
    assert np.isnan(cut.data[:, 0]).all()  # column 0 is value 0 too
    assert np.isfinite(cut.data[:-4, 1:]).all()


# ------------------------------------------------------------------------------ good images

GOOD = ["RGB JPEG, pixel scale given", "greyscale PNG, no pixel scale", "RGBA PNG (transparent corner)", "palette (P mode) PNG",
        "16-bit greyscale PNG (I;16)", "CMYK JPEG", "JPEG with an EXIF orientation tag"]


def test_every_good_image_case_is_listed_here(image_cases):
    assert sorted(c.name for c in image_cases.values() if c.status == "ok") == sorted(GOOD)


@pytest.mark.parametrize("name", GOOD)
def test_good_image(image_cases, name):
    case = image_cases[name]
    cut = read_cutout(case.paths[0], pixel_scale=case.pixel_scale)
    assert cut.display and cut.data.dtype == np.float64 and cut.data.ndim == 2
    assert cut.flags & case.flags == case.flags and not cut.flags & case.forbid, (name, Flag(cut.flags))
    assert cut.flags & Flag.DISPLAY_IMAGE and cut.flags & Flag.NO_WCS
    if case.pixel_scale is None:
        assert cut.pixel_scale_arcsec is None and cut.cd is None and cut.flags & Flag.NO_PIXEL_SCALE
    else:
        assert cut.pixel_scale_arcsec == pytest.approx(case.pixel_scale) and cut.flags & Flag.ASSUMED_PIXEL_SCALE
        assert cut.cd[0, 0] < 0 < cut.cd[1, 1]  # north up, east left
    assert cut.ra is None and cut.dec is None
    grey = "greyscale" in name
    assert cut.band == ("grey" if grey else "rgb-mean")
    assert (cut.colour is None) if grey else (cut.colour.shape == cut.data.shape + (3,) and cut.colour.dtype == np.uint8)


def test_png_rows_flipped_to_fits_orientation(image_cases):
    """A lossless greyscale PNG comes back exactly, its top row last (row 0 at the bottom, as in FITS)."""
    cut = read_cutout(image_cases["greyscale PNG, no pixel scale"].paths[0])
    np.testing.assert_array_equal(cut.data, galaxy_display(96, colour=False, seed=22)[::-1].astype(np.float64))


def test_16_bit_levels_kept(image_cases):
    cut = read_cutout(image_cases["16-bit greyscale PNG (I;16)"].paths[0])
    np.testing.assert_array_equal(cut.data, galaxy_display(96, colour=False, bits=16, seed=23)[::-1].astype(np.float64))
    assert cut.data.max() > 255


def test_transparent_pixels_masked(image_cases):
    cut = read_cutout(image_cases["RGBA PNG (transparent corner)"].paths[0], pixel_scale=0.262)
    nan = ~np.isfinite(cut.data)
    assert nan[-6:, :6].all() and nan.sum() == 36  # the file's top-left 6 x 6, now at the top of the array


def test_exif_orientation_honoured(image_cases):
    cut = read_cutout(image_cases["JPEG with an EXIF orientation tag"].paths[0], pixel_scale=0.262)
    assert cut.data.shape == (96, 88)  # upright: 96 high, 88 wide (stored 88 high, 96 wide)
    upright = galaxy_display(96, seed=21)[:, :88].mean(axis=2)[::-1]
    r = np.corrcoef(cut.data.ravel(), upright.ravel())[0, 1]
    wrong = np.corrcoef(cut.data.ravel(), upright[::-1].ravel())[0, 1]  # mirrored: the bar at -30 degrees
    assert r > 0.9 and r > wrong + 0.1, (r, wrong)


def test_content_decides_not_the_name(tmp_path, image_cases):
    """A FITS file named .png is FITS (with its WCS); a PNG named .fits is an image."""
    from survey_bars.testing import galaxy_image

    p = write_cutout(tmp_path / "fits_named.png", galaxy_image(seed=3))
    cut = read_cutout(p)
    assert not cut.display and not cut.flags & Flag.NO_WCS and cut.pixel_scale_arcsec == pytest.approx(0.262)
    q = tmp_path / "png_named.fits"
    q.write_bytes(open(image_cases["greyscale PNG, no pixel scale"].paths[0], "rb").read())
    cut = read_cutout(q)
    assert cut.display and cut.flags & Flag.DISPLAY_IMAGE and cut.object_id == "png_named"
