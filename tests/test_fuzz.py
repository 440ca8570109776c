"""Fuzzing the readers with hypothesis: mutated FITS (real, simulated, synthetic), JPEG and PNG files.

Each example takes a seed file (the shared real Spitzer images when present, never copied into
the repository; a simulated galaxy; synthetic cutouts: plain, gzip, tile-compressed, scaled
integers with SIP keywords, a cube), mutates it (flipped bytes, header keywords set to nasty
values, cut, spliced, re-gzipped) and checks that

* ``read_cutout`` returns a valid cutout or raises ``CutoutError``, nothing else, within
  ``FUZZ_TIMEOUT_S`` seconds (SIGALRM), and
* ``process_items`` returns exactly one row, ``ok`` or ``error`` with a reason.

The image readers get the same checks from small JPEG and PNG seeds (RGB, greyscale,
progressive, CMYK, RGBA, palette, 16-bit; written by Pillow at run time) with flipped,
inserted, deleted and spliced bytes, cuts, and header fields (PNG IHDR, JPEG SOF) set to nasty
values, PNG chunk CRCs recomputed or not (so that mutations reach the decoders instead of
stopping at a checksum).

``SURVEY_BARS_FUZZ_EXAMPLES`` sets the number of examples (default 300 for each reader, a third
of that for ``process_items`` on FITS, a tenth on images); ``SURVEY_BARS_FUZZ_REPORT`` names a
JSON file that receives the counts and durations (``python -m benchmarks.reliability`` uses it).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from survey_bars.io import Cutout, CutoutError, read_cutout
from survey_bars.io.inputs import InputItem
from survey_bars.pipeline import RunOptions, process_items
from survey_bars.flags import Flag
from survey_bars.testing import galaxy_display, galaxy_image, model_for_tests, write_cutout

N_EXAMPLES = int(os.environ.get("SURVEY_BARS_FUZZ_EXAMPLES", "300"))
N_PIPELINE = max(10, N_EXAMPLES // 3)
N_IMAGE_PIPELINE = max(10, N_EXAMPLES // 10)
TIMEOUT_S = float(os.environ.get("FUZZ_TIMEOUT_S", "10"))
REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"

STATS = {k: {"cases": 0, "seconds": 0.0, "outcomes": {}} for k in ("read_cutout", "process_items", "read_cutout_images", "process_items_images")}

FUZZ_SETTINGS = dict(
    deadline=None,  # the bound is the SIGALRM below, not hypothesis' per-example deadline
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    print_blob=True,
)

#: header keywords the mutator sets to nasty values
KEYWORDS = ["SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BSCALE", "BZERO", "BLANK",
            "CTYPE1", "CTYPE2", "CRPIX1", "CRVAL1", "CRVAL2", "CDELT1", "CD1_1", "CD2_2", "CUNIT1", "A_ORDER", "A_0_2",
            "ZNAXIS1", "ZNAXIS2", "ZBITPIX", "ZCMPTYPE", "ZTILE1", "ZQUANTIZ", "NAXIS1", "TFORM1", "PCOUNT", "GCOUNT",
            "OBJID", "REDSHIFT", "END"]
NASTY = ["0", "-1", "1", "3", "999", "2147483647", "-2147483648", "9223372036854775807", "99999999999999999999",
         "1E308", "-1E308", "1E-320", "NaN", "INF", "T", "F", "''", "'RA---TAN'", "'WAVE'", "'RA---TAN-SIP'",
         "'\u00ff\u00fe'", "8", "16", "-32", "-64", "64", "'RICE_1'", "'GZIP_2'", "'HCOMPRESS_1'", "(1, 2)", "'" + "x" * 70]


class _Hang(BaseException):  # not Exception: read_cutout must not be able to swallow it
    pass


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise _Hang(f"no result within {TIMEOUT_S} s")


def _bounded(fn, *args, **kw):
    """Run fn under a SIGALRM time bound (pytest runs tests in the main thread)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
    try:
        return fn(*args, **kw)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Seed files as (name, bytes); real ones are read from ../shared and never copied."""
    return make_seeds(tmp_path_factory.mktemp("fuzz_seeds"))


def make_seeds(d):
    """Write the synthetic and simulated seeds into ``d``; return [(name, bytes)]."""
    from astropy.io import fits

    img = galaxy_image(n=48, r50=5, bar_len=14, seed=7)
    out = []
    p = write_cutout(d / "plain.fits", img, objid="plain")
    out.append(("plain.fits", Path(p).read_bytes()))
    out.append(("plain.fits.gz", gzip.compress(Path(p).read_bytes())))
    hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0, "CRPIX1": 24.5, "CRPIX2": 24.5,
                       "CD1_1": -7e-5, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 7e-5})
    p = d / "tiled.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img, header=hdr, compression_type="RICE_1")]).writeto(p)
    out.append(("tiled.fits.fz", p.read_bytes()))
    hdu = fits.PrimaryHDU(img.astype(">f4"), header=hdr.copy())
    hdu.header.update({"A_ORDER": 2, "A_0_2": 3e-6, "A_1_1": 2e-5, "A_2_0": -2e-5, "B_ORDER": 2, "B_0_2": 2e-5, "B_1_1": -2e-5, "B_2_0": 2e-6})
    hdu.scale("int16", bscale=0.002, bzero=0.5)
    p = d / "int16_sip.fits"
    hdu.writeto(p)
    out.append(("int16_sip.fits", p.read_bytes()))
    p = write_cutout(d / "cube.fits", np.stack([img, img[::-1]]), objid="cube")
    out.append(("cube.fits", Path(p).read_bytes()))
    try:
        from survey_bars.simulate import simulate_one

        row, _, _ = simulate_one(11, 0, survey="sdss", stamp_size=64, out_dir=str(d))
        sim = next(d.glob(f"{row['object_id']}*.fits"))
        out.append(("simulated.fits", sim.read_bytes()))
    except Exception as exc:  # pragma: no cover - galsim missing
        print(f"no simulated seed: {exc}")
    if REAL_DIR.is_dir():
        for f in sorted(REAL_DIR.glob("*.fits")):
            out.append((f"real:{f.name}", f.read_bytes()))
    return out


class Case:
    """A mutated file; its repr is short, so hypothesis' reports stay readable."""

    def __init__(self, suffix, raw, steps):
        self.suffix, self.raw, self.steps = suffix, raw, steps

    def __repr__(self):
        import hashlib

        return f"Case({self.suffix!r}, {len(self.raw)} bytes, sha256 {hashlib.sha256(self.raw).hexdigest()[:12]}, steps={self.steps})"


@st.composite
def mutated(draw, seeds):
    """Draw a :class:`Case`: a seed file with a few mutations applied."""
    name, raw = draw(st.sampled_from(seeds))
    steps = [name]
    gz = name.endswith(".gz")
    data = bytearray(gzip.decompress(raw) if gz else raw)
    header_end = min(len(data), 2880 * 3)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip_header", "card", "card", "truncate", "splice", "zero_run"]))
        steps.append(kind)
        if not data:
            break
        if kind == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == "flip_header":
            i = draw(st.integers(0, max(0, header_end - 1)))
            if i < len(data):
                data[i] = draw(st.sampled_from([0, 32, 39, 61, 0x80, 0xFF]) | st.integers(0, 255))
        elif kind == "card":
            key = draw(st.sampled_from(KEYWORDS))
            value = draw(st.sampled_from(NASTY))
            card = f"{key:<8}= {value:>20}".encode("latin-1")[:80].ljust(80)
            starts = [k for k in range(0, min(len(data), 2880 * 4), 80) if bytes(data[k:k + 8]).rstrip() == key.encode()]
            if starts:
                k = draw(st.sampled_from(starts))
                data[k:k + 80] = card
                steps[-1] = f"{key}={value}"
            else:  # overwrite an arbitrary card
                k = 80 * draw(st.integers(0, max(0, min(len(data), 2880) // 80 - 1)))
                data[k:k + 80] = card
        elif kind == "truncate":  # past the SIMPLE card: a lost first card is an easy "not_fits"
            del data[draw(st.integers(min(80, len(data)), len(data))):]
        elif kind == "splice":
            i, j = sorted(draw(st.lists(st.integers(0, len(data)), min_size=2, max_size=2)))
            k = draw(st.integers(min(80, len(data)), len(data)))
            data[k:k] = data[i:j]
        elif kind == "zero_run":
            i = draw(st.integers(min(80, len(data)), len(data)))
            m = min(draw(st.integers(1, 5000)), len(data) - i)
            data[i:i + m] = bytes(m)
    out = bytes(data)
    rezip = gz or draw(st.integers(0, 9)) == 0
    if rezip:
        out = gzip.compress(out, compresslevel=1)
        if draw(st.booleans()):  # a damaged gzip stream too
            cut = draw(st.integers(0, len(out)))
            out = out[:cut]
    suffix = ".fits.gz" if rezip else (".fits.fz" if name.endswith(".fz") else ".fits")
    return Case(suffix, out, steps + (["gzip"] if rezip else []))


def _record(which, outcome, dt):
    s = STATS[which]
    s["cases"] += 1
    s["seconds"] += dt
    s["outcomes"][outcome] = s["outcomes"].get(outcome, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report():
    t0 = time.perf_counter()
    yield
    STATS["wall_seconds"] = time.perf_counter() - t0
    STATS["examples_setting"] = N_EXAMPLES
    STATS["real_seeds"] = REAL_DIR.is_dir()
    line = "fuzz: " + ", ".join(f"{k} {STATS[k]['cases']} cases in {STATS[k]['seconds']:.1f} s"
                                for k in ("read_cutout", "process_items", "read_cutout_images", "process_items_images"))
    print("\n" + line)
    path = os.environ.get("SURVEY_BARS_FUZZ_REPORT")
    if path:
        Path(path).write_text(json.dumps(STATS, indent=2))


def test_read_cutout_never_raises_anything_else(seeds, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_read")

    @settings(max_examples=N_EXAMPLES, **FUZZ_SETTINGS)
    @given(case=mutated(seeds))
    def check(case):
        p = d / f"case{case.suffix}"
        p.write_bytes(case.raw)
        t0 = time.perf_counter()
        try:
            c = _bounded(read_cutout, p)
        except CutoutError as exc:
            assert exc.reason and exc.message
            outcome = exc.reason
        else:
            assert isinstance(c, Cutout)
            assert c.data.ndim == 2 and min(c.data.shape) >= 8 and c.data.dtype == np.float64
            assert np.isfinite(c.data).any() and not np.isinf(c.data).any()
            assert c.pixel_scale_arcsec is None or (np.isfinite(c.pixel_scale_arcsec) and c.pixel_scale_arcsec > 0)
            outcome = "ok"
        _record("read_cutout", outcome, time.perf_counter() - t0)

    check()
    assert STATS["read_cutout"]["cases"] >= min(N_EXAMPLES, 50)


@pytest.fixture(scope="module")
def model():
    return model_for_tests()


def _one_row(p, item, opts, rt):
    """``process_items`` on one fuzzed file: exactly one row, an error with its reason or a valid p_bar.

    Returns the outcome (``"ok"`` or the error's reason) and the row.
    """
    t = _bounded(process_items, [item], opts, runtime=rt).to_pandas()
    assert len(t) == 1
    row = t.iloc[0]
    assert row.status in ("ok", "error") and row.file == str(p)
    if row.status == "error":
        assert isinstance(row.error, str) and ": " in row.error and not row.error.startswith("internal:"), row.error
        return row.error.split(":", 1)[0], row
    assert 0 <= row.p_bar <= 1
    return "ok", row


def test_process_items_always_one_row(seeds, model, tmp_path_factory):
    from survey_bars.inference.runtime import get_runtime

    d = tmp_path_factory.mktemp("fuzz_rows")
    opts = RunOptions(model=model, smoothgrad_samples=8, pixel_scale=None)
    rt = get_runtime(model)

    @settings(max_examples=N_PIPELINE, **FUZZ_SETTINGS)
    @given(case=mutated(seeds), with_scale=st.booleans())
    def check(case, with_scale):
        p = d / f"case{case.suffix}"
        p.write_bytes(case.raw)
        t0 = time.perf_counter()
        outcome, _ = _one_row(p, InputItem(file=str(p), pixel_scale=0.3 if with_scale else None), opts, rt)
        _record("process_items", outcome, time.perf_counter() - t0)

    check()
    assert STATS["process_items"]["cases"] >= min(N_PIPELINE, 10)


# ------------------------------------------------------------------------------ JPEG and PNG


def make_image_seeds():
    """Small JPEG and PNG files (24 x 24 galaxies) as [(suffix, bytes)], written by Pillow."""
    import io

    from PIL import Image

    rgb = galaxy_display(24, seed=5, r50=3.0, bar_len=8.0)
    grey = galaxy_display(24, colour=False, seed=6, r50=3.0, bar_len=8.0)
    grey16 = galaxy_display(24, colour=False, bits=16, seed=7, r50=3.0, bar_len=8.0)
    alpha = np.full(grey.shape, 255, np.uint8)
    alpha[:3, :3] = 0
    images = [
        (".jpg", Image.fromarray(rgb), dict(quality=85)),
        (".jpg", Image.fromarray(grey), dict(quality=85)),
        (".jpg", Image.fromarray(rgb), dict(quality=85, progressive=True)),
        (".jpg", Image.fromarray(rgb).convert("CMYK"), dict(quality=85)),
        (".png", Image.fromarray(grey), {}),
        (".png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), {}),
        (".png", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), {}),
        (".png", Image.fromarray(grey16), {}),
    ]
    out = []
    for suffix, im, kw in images:
        buf = io.BytesIO()
        im.save(buf, format="JPEG" if suffix == ".jpg" else "PNG", **kw)
        out.append((f"{im.mode}{'-progressive' if kw.get('progressive') else ''}{suffix}", buf.getvalue()))
    return out


@pytest.fixture(scope="module")
def image_seeds():
    return make_image_seeds()


#: ``max_pixels`` of the image fuzz. A small file declaring a huge image is refused as a bomb by
#: its pixels per byte, but a mutated header can still declare up to a few million pixels that
#: decode (grey past the real rows) in tens of milliseconds each; this limit keeps every example
#: that fast. Sizes over it are refused unread (``too_large``), as with the default.
IMAGE_MAX_PIXELS = 4_000_000
#: values for the size, depth and count fields of PNG IHDR and JPEG SOF headers
NASTY_SIZES = [0, 1, 7, 8, 9, 255, 256, 4096, 8000, 8001, 30000, 65535, 2**31 - 1, 2**32 - 1]
NASTY_SMALL = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 17, 32, 255]


def _png_chunks(data):
    """(offset, length) of each whole chunk of a PNG: offset of its length field."""
    pos, out = 8, []
    while pos + 12 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        if pos + 12 + n > len(data):
            break
        out.append((pos, n))
        pos += 12 + n
    return out


def _fix_png_crcs(data):
    import zlib

    for pos, n in _png_chunks(data):
        data[pos + 8 + n:pos + 12 + n] = zlib.crc32(bytes(data[pos + 4:pos + 8 + n])).to_bytes(4, "big")


@st.composite
def mutated_image(draw, seeds):
    """Draw a :class:`Case`: a JPEG or PNG seed with a few mutations applied."""
    name, raw = draw(st.sampled_from(seeds))
    is_png = name.endswith(".png")
    steps = [name]
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip_head", "flip_head", "header", "header", "truncate", "insert", "delete", "splice", "fill"]))
        steps.append(kind)
        if not data:
            break
        if kind == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == "flip_head":  # the headers: PNG IHDR/PLTE, JPEG quantisation, Huffman and frame tables
            i = draw(st.integers(0, min(len(data), 400) - 1))
            data[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif kind == "header":
            if is_png and len(data) >= 33:  # IHDR: width, height (16:24), bit depth, colour type, compression, filter, interlace
                field = draw(st.sampled_from(["width", "height", "depth", "colour", "compression", "filter", "interlace"]))
                if field in ("width", "height"):
                    off = 16 if field == "width" else 20
                    data[off:off + 4] = draw(st.sampled_from(NASTY_SIZES)).to_bytes(4, "big")
                else:
                    data[24 + ["depth", "colour", "compression", "filter", "interlace"].index(field)] = draw(st.sampled_from(NASTY_SMALL))
                steps[-1] = f"IHDR.{field}"
            else:  # JPEG SOF0/1/2: FF Cx, length (2), precision, height (2), width (2), components, then per component
                sof = [k for k in range(len(data) - 10) if data[k] == 0xFF and data[k + 1] in (0xC0, 0xC1, 0xC2)]
                if sof:
                    k = sof[0]
                    field = draw(st.sampled_from(["height", "width", "precision", "components", "sampling", "table"]))
                    if field in ("height", "width"):
                        off = k + (5 if field == "height" else 7)
                        data[off:off + 2] = (draw(st.sampled_from(NASTY_SIZES)) & 0xFFFF).to_bytes(2, "big")
                    else:
                        off = k + {"precision": 4, "components": 9, "sampling": 11, "table": 12}[field]
                        if off < len(data):
                            data[off] = draw(st.sampled_from(NASTY_SMALL + [0x11, 0x22, 0x44, 0xFF]))
                    steps[-1] = f"SOF.{field}"
        elif kind == "truncate":
            del data[draw(st.integers(1, len(data))):]
        elif kind == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            i = draw(st.integers(0, len(data) - 1))
            del data[i:i + draw(st.integers(1, 256))]
        elif kind == "splice":
            i, j = sorted(draw(st.lists(st.integers(0, len(data)), min_size=2, max_size=2)))
            k = draw(st.integers(0, len(data)))
            data[k:k] = data[i:j]
        elif kind == "fill":  # a run of one byte value (0xFF is JPEG's marker prefix)
            i = draw(st.integers(0, len(data) - 1))
            m = min(draw(st.integers(1, 512)), len(data) - i)
            data[i:i + m] = bytes([draw(st.sampled_from([0, 0xFF]))]) * m
    if is_png and draw(st.booleans()):  # let the mutation past the chunk checksums
        _fix_png_crcs(data)
        steps.append("crc")
    suffix = name[name.rindex("."):]
    if draw(st.integers(0, 9)) == 0:  # the other image suffix: the content decides
        suffix = ".png" if suffix == ".jpg" else ".jpg"
    return Case(suffix, bytes(data), steps)


def test_image_seeds_read(image_seeds, tmp_path):
    """The unmutated seeds are good images (so the fuzz starts from files that read)."""
    for name, raw in image_seeds:
        p = tmp_path / f"seed{name[name.rindex('.'):]}"
        p.write_bytes(raw)
        c = read_cutout(p)
        assert c.display and c.data.shape == (24, 24), name


def test_read_cutout_images_never_raise_anything_else(image_seeds, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_images")

    @settings(max_examples=N_EXAMPLES, **FUZZ_SETTINGS)
    @given(case=mutated_image(image_seeds), with_scale=st.booleans())
    def check(case, with_scale):
        p = d / f"case{case.suffix}"
        p.write_bytes(case.raw)
        t0 = time.perf_counter()
        try:
            c = _bounded(read_cutout, p, pixel_scale=0.262 if with_scale else None, max_pixels=IMAGE_MAX_PIXELS)
        except CutoutError as exc:
            assert exc.reason and exc.message
            outcome = exc.reason
        else:
            assert isinstance(c, Cutout) and c.display
            assert c.data.ndim == 2 and min(c.data.shape) >= 8 and c.data.dtype == np.float64
            assert np.isfinite(c.data).any() and not np.isinf(c.data).any()
            assert c.flags & Flag.DISPLAY_IMAGE and c.flags & Flag.NO_WCS
            assert c.flags & (Flag.ASSUMED_PIXEL_SCALE if with_scale else Flag.NO_PIXEL_SCALE)
            assert c.colour is None or c.colour.shape == c.data.shape + (3,)
            outcome = "ok"
        _record("read_cutout_images", outcome, time.perf_counter() - t0)

    check()
    assert STATS["read_cutout_images"]["cases"] >= min(N_EXAMPLES, 50)


def test_process_items_images_always_one_row(image_seeds, model, tmp_path_factory):
    from survey_bars.inference.runtime import get_runtime

    d = tmp_path_factory.mktemp("fuzz_image_rows")
    opts = RunOptions(model=model, smoothgrad_samples=8, pixel_scale=None, max_pixels=IMAGE_MAX_PIXELS)
    rt = get_runtime(model)

    @settings(max_examples=N_IMAGE_PIPELINE, **FUZZ_SETTINGS)
    @given(case=mutated_image(image_seeds), with_scale=st.booleans())
    def check(case, with_scale):
        p = d / f"case{case.suffix}"
        p.write_bytes(case.raw)
        t0 = time.perf_counter()
        outcome, row = _one_row(p, InputItem(file=str(p), pixel_scale=0.262 if with_scale else None), opts, rt)
        if outcome == "ok":
            assert int(row.quality_flags) & Flag.DISPLAY_IMAGE and not int(row.quality_flags) & Flag.LOW_SNR
            assert row.snr is None or np.isnan(row.snr)  # display values: no S/N
        _record("process_items_images", outcome, time.perf_counter() - t0)

    check()
    assert STATS["process_items_images"]["cases"] >= min(N_IMAGE_PIPELINE, 10)
