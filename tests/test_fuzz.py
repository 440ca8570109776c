"""Fuzzing the FITS reader with hypothesis: mutated real, simulated and synthetic files.

Each example takes a seed file (the shared real Spitzer images when present, never copied into
the repository; a simulated galaxy; synthetic cutouts: plain, gzip, tile-compressed, scaled
integers with SIP keywords, a cube), mutates it (flipped bytes, header keywords set to nasty
values, cut, spliced, re-gzipped) and checks that

* ``read_cutout`` returns a valid cutout or raises ``CutoutError``, nothing else, within
  ``FUZZ_TIMEOUT_S`` seconds (SIGALRM), and
* ``process_items`` returns exactly one row, ``ok`` or ``error`` with a reason.

``SURVEY_BARS_FUZZ_EXAMPLES`` sets the number of examples (default 300 for the reader, a third
of that for ``process_items``); ``SURVEY_BARS_FUZZ_REPORT`` names a JSON file that receives the
counts and durations (``python -m benchmarks.reliability`` uses it).
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

from survey_bars.cutouts import Cutout, CutoutError, read_cutout
from survey_bars.pipeline import InputItem, RunOptions, process_items
from survey_bars.testing import galaxy_image, model_for_tests, write_cutout

N_EXAMPLES = int(os.environ.get("SURVEY_BARS_FUZZ_EXAMPLES", "300"))
N_PIPELINE = max(10, N_EXAMPLES // 3)
TIMEOUT_S = float(os.environ.get("FUZZ_TIMEOUT_S", "10"))
REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"

STATS = {"read_cutout": {"cases": 0, "seconds": 0.0, "outcomes": {}}, "process_items": {"cases": 0, "seconds": 0.0, "outcomes": {}}}

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
    line = (f"fuzz: read_cutout {STATS['read_cutout']['cases']} cases in {STATS['read_cutout']['seconds']:.1f} s, "
            f"process_items {STATS['process_items']['cases']} cases in {STATS['process_items']['seconds']:.1f} s")
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


def test_process_items_always_one_row(seeds, model, tmp_path_factory):
    from survey_bars.runtime import get_runtime

    d = tmp_path_factory.mktemp("fuzz_rows")
    opts = RunOptions(model=model, smoothgrad_samples=8, pixel_scale=None)
    rt = get_runtime(model)

    @settings(max_examples=N_PIPELINE, **FUZZ_SETTINGS)
    @given(case=mutated(seeds), with_scale=st.booleans())
    def check(case, with_scale):
        p = d / f"case{case.suffix}"
        p.write_bytes(case.raw)
        t0 = time.perf_counter()
        item = InputItem(file=str(p), pixel_scale=0.3 if with_scale else None)
        t = _bounded(process_items, [item], opts, runtime=rt).to_pandas()
        assert len(t) == 1
        row = t.iloc[0]
        assert row.status in ("ok", "error") and row.file == str(p)
        if row.status == "error":
            assert isinstance(row.error, str) and ": " in row.error and not row.error.startswith("internal:"), row.error
            outcome = row.error.split(":", 1)[0]
        else:
            assert 0 <= row.p_bar <= 1
            outcome = "ok"
        _record("process_items", outcome, time.perf_counter() - t0)

    check()
    assert STATS["process_items"]["cases"] >= min(N_PIPELINE, 10)
