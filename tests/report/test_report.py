"""Tests of ``survey-bars inspect``: streaming statistics, the report, and the page in Chromium.

The catalogue is built here: FITS cutouts with a TAN WCS and a fake barred galaxy, rows from
``catalogue.empty_row`` written with ``write_part`` + ``assemble``, and a saliency directory in
the ``process --save-saliency`` format. The page is loaded in headless Chromium (Debian
package ``chromium``); those tests are skipped when it is absent.

Set ``SURVEY_BARS_UPDATE_SCREENSHOT=1`` to rewrite ``docs/report-screenshot.png``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import survey_bars.pipeline as pipeline_mod
import survey_bars.report as sbi
import survey_bars.report.tiles as tiles_mod
from survey_bars.flags import Flag
from survey_bars.io.catalogue import assemble, empty_row, rows_to_table, write_part
from survey_bars.normalise import normalise
from survey_bars.report.html import tile_name

ROOT = Path(__file__).resolve().parents[2]
SCALE = 0.262  # arcsec / pixel
N_OK = 14
N_GAL = 4


# ------------------------------------------------------------------------------ fixtures


def _pixel_angle(pa_deg):
    """Pixel angle (from +x towards +y) of a sky PA for a north-up, east-left image."""
    t = math.radians(pa_deg)
    return math.degrees(math.atan2(math.cos(t), -math.sin(t)))


def _galaxy(n, bar_len_pix, pa_deg, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(float)
    c = (n - 1) / 2.0
    th = math.radians(_pixel_angle(pa_deg))
    u = (x - c) * math.cos(th) + (y - c) * math.sin(th)
    v = -(x - c) * math.sin(th) + (y - c) * math.cos(th)
    disc = np.exp(-np.hypot(x - c, (y - c) / 0.8) / 5.0)
    a = bar_len_pix / 2.0
    bar = 0.9 * np.clip(1 - (u / a) ** 2 - (v / (0.25 * a)) ** 2, 0, None) ** 1.5
    return (100 * (disc + bar) + rng.normal(0, 0.4, (n, n))).astype(np.float32), (u, v)


def _write_fits(path, data, objid):
    from astropy.io import fits

    n = data.shape[0]
    hdr = fits.Header()
    hdr.update(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0,
        CRPIX1=(n + 1) / 2, CRPIX2=(n + 1) / 2,
        CD1_1=-SCALE / 3600, CD1_2=0.0, CD2_1=0.0, CD2_2=SCALE / 3600, OBJID=objid,
    )
    fits.PrimaryHDU(data, header=hdr).writeto(path, overwrite=True)


def _write_saliency(path, norm, bar_len_pix, pa_deg):
    """A ``process --save-saliency`` file: an elongated blob along the bar, in the model frame."""
    from astropy.io import fits

    s = norm.image.shape[0]
    y, x = np.mgrid[0:s, 0:s].astype(float)
    c = (s - 1) / 2.0
    th = math.radians(_pixel_angle(pa_deg))
    u = (x - c) * math.cos(th) + (y - c) * math.sin(th)
    v = -(x - c) * math.sin(th) + (y - c) * math.cos(th)
    a = 0.5 * bar_len_pix / norm.scale
    sal = np.exp(-0.5 * ((u / (0.6 * a)) ** 2 + (v / (0.18 * a)) ** 2))
    hdr = fits.Header()
    hdr["SCALE"], hdr["X0"], hdr["Y0"] = norm.scale, norm.x0, norm.y0
    fits.HDUList([fits.PrimaryHDU(sal.astype(np.float32), header=hdr), fits.ImageHDU(norm.image, name="IMAGE")]).writeto(path)


def make_catalogue(root, n_ok=N_OK):
    """Write cutouts, saliency maps and a two-part catalogue under ``root``; return paths."""
    root = Path(root)
    fits_dir, sal_dir, staging = root / "fits", root / "saliency", root / "staging"
    fits_dir.mkdir()
    sal_dir.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n_ok):
        oid = f"gal{i:03d}"
        bar_pix = float(rng.uniform(14, 26))
        pa = float(rng.uniform(0, 180))
        data, _ = _galaxy(72, bar_pix, pa, seed=i)
        path = fits_dir / f"{oid}.fits"
        _write_fits(path, data, oid)
        norm = normalise(data)
        if i % 5 != 4:  # every fifth map "not saved"
            _write_saliency(sal_dir / f"{oid}.fits", norm, bar_pix, pa)
        p_bar = float(np.clip(0.3 + 0.05 * i, 0, 0.99))
        flags = 0
        if i % 3 == 0:
            flags |= Flag.LOW_SNR
        if i % 4 == 0:
            flags |= Flag.OFF_CENTRE | Flag.BAR_AT_FRAME_LIMIT
        L = bar_pix * SCALE
        rows.append(
            empty_row(
                object_id=oid, file=str(path), partition=i % 2, status="ok", ra=150.0, dec=2.0,
                pixel_scale_arcsec=SCALE, r50_arcsec=norm.r50_pix * SCALE, resample_scale=norm.scale,
                p_bar=p_bar, p_smooth=0.1, p_disc=0.9, bar_length_arcsec=L, bar_length_err_arcsec=0.3,
                bar_pa_deg=pa, bar_axis_ratio=0.3, bar_length_direct_arcsec=L * float(rng.uniform(0.8, 1.2)),
                bar_length_bhambra2022_arcsec=L * float(rng.uniform(0.7, 1.1)), quality_flags=int(flags),
                bar_length_moments_arcsec=L * float(rng.uniform(0.9, 1.3)),
            )
        )
    # a galaxy without a bar, and rows that could not be used
    rows[1].update(bar_length_arcsec=None, bar_pa_deg=None, bar_length_err_arcsec=None, quality_flags=int(Flag.BAR_NOT_MEASURED))
    (fits_dir / "broken.fits").write_bytes(b"not a fits file")
    rows.append(empty_row(object_id="broken", file=str(fits_dir / "broken.fits"), partition=1, status="error", error="not_fits: Not a readable FITS file.", quality_flags=0))
    rows.append(empty_row(object_id="gone", file=str(fits_dir / "gone.fits"), partition=1, status="error", error="missing: Cannot open it.", quality_flags=0))
    for part in (0, 1):
        write_part(rows_to_table([r for r in rows if r["partition"] == part]), str(staging), part)
    out = root / "catalogue.parquet"
    assemble(
        str(staging), [0, 1], str(out),
        metadata={
            "model_card": {"name": "test-model", "version": "0.0.1", "description": "A <fake> model for tests.", "metrics": {"r": 0.8}},
            "run_config": {"smoothgrad_samples": 8, "partition_size": 10, "save_saliency": str(sal_dir)},
        },
    )
    return out, sal_dir, rows


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return make_catalogue(tmp_path_factory.mktemp("inspect"))


@pytest.fixture(scope="module")
def report(catalogue, tmp_path_factory):
    out_cat, sal_dir, _ = catalogue
    out = tmp_path_factory.mktemp("report")
    index = sbi.build_report(str(out_cat), str(out), query="p_bar > 0.5 and bar_length_arcsec > 4", n_gallery=N_GAL, saliency_dir=str(sal_dir), seed=3)
    return Path(index)


# ------------------------------------------------------------------------ streaming scan


def test_scan_matches_pandas_and_streams(catalogue, monkeypatch):
    import pandas as pd

    out_cat, _, rows = catalogue
    full = pd.DataFrame(rows)

    def forbidden(*a, **k):
        raise AssertionError("inspect must stream batches, not read whole tables")

    monkeypatch.setattr(pq, "read_table", forbidden)
    monkeypatch.setattr(pd, "read_parquet", forbidden)
    scan = sbi.scan_catalogue(str(out_cat), query="p_bar > 0.5", n_gallery=3, batch_size=4, seed=0)

    assert scan.n_rows == len(full)
    assert dict(scan.status_counts) == full["status"].value_counts().to_dict()
    assert scan.error_reasons == {"not_fits": 1, "missing": 1}
    q = full["quality_flags"].fillna(0).astype(int)
    for f in Flag:
        assert scan.flag_counts[f.name] == int(((q & int(f)) != 0).sum())
    assert scan.n_unflagged == int((q == 0).sum())
    assert scan.popcount_counts.sum() == len(full)
    assert scan.p_bar_hist.sum() == full["p_bar"].notna().sum()
    assert scan.length_hists["bar_length_arcsec"].sum() == full["bar_length_arcsec"].notna().sum()
    # galleries: exact streaming top-k and a reservoir of the right size
    top = full.sort_values("p_bar", ascending=False, kind="stable")["object_id"].head(3).tolist()
    assert [r["object_id"] for r in scan.galleries["top_p_bar"]] == top
    assert len(scan.galleries["random"]) == 3 and len({r["object_id"] for r in scan.galleries["random"]}) == 3
    most = [r["object_id"] for r in scan.galleries["most_flagged"]]
    pop = q.map(lambda v: bin(v).count("1"))
    assert min(pop[full["object_id"].isin(most)]) >= sorted(pop, reverse=True)[2]
    assert scan.n_query_matches == int((full["p_bar"] > 0.5).sum())
    assert all(r["p_bar"] > 0.5 for r in scan.galleries["query"])
    # exact Pearson r over all rows, whatever the batching
    both = full.dropna(subset=["bar_length_arcsec", "bar_length_direct_arcsec"])
    r = np.corrcoef(both["bar_length_arcsec"], both["bar_length_direct_arcsec"])[0, 1]
    assert scan.pairs["bar_length_direct_arcsec"]["r"] == pytest.approx(r, rel=1e-9)
    assert set(scan.pairs) == {"bar_length_moments_arcsec", "bar_length_direct_arcsec", "bar_length_bhambra2022_arcsec"}
    # deterministic for a seed
    again = sbi.scan_catalogue(str(out_cat), n_gallery=3, batch_size=7, seed=0)
    assert [r["object_id"] for r in again.galleries["top_p_bar"]] == top


def test_recompute_saliency_with_a_runtime(catalogue):
    _, _, rows = catalogue
    from survey_bars.normalise import NormaliseConfig

    class Bundle:
        preprocessing = NormaliseConfig()
        smoothgrad = {"samples": 4, "noise_frac": 0.1}

    class Runtime:  # gradient of sum(x^2): the map follows the image
        bundle = Bundle()

        def gradient(self, images):
            return 2 * np.asarray(images)

    got = sbi.recompute_saliency(rows[:2] + rows[-1:], metadata={"run_config": {"smoothgrad_samples": 4}}, runtime=Runtime())
    assert set(got) == {rows[0]["object_id"], rows[1]["object_id"], "gone"}
    m = got[rows[0]["object_id"]]
    assert m["map"].shape == (64, 64) and m["image"].shape == (64, 64)
    assert m["map"].max() == pytest.approx(1.0) and m["scale"] > 0
    assert isinstance(got["gone"], str)


def test_recomputed_saliency_is_the_pipelines(tmp_path):
    """The report's recomputed maps (no saved saliency) are the maps the catalogue was
    measured on: same noise, samples and symmetrisation as the pipeline (the shipped card
    symmetrises, which the recomputation once left out)."""
    from astropy.io import fits

    from survey_bars.inference.runtime import get_runtime
    from survey_bars.pipeline import RunOptions, process_items

    from ..conftest import galaxy_image, write_fits

    rt = get_runtime(None)
    assert rt.bundle.smoothgrad.get("symmetrise")
    p = write_fits(tmp_path / "b.fits", galaxy_image(n=96, r50=8, bar_len=24, seed=5), objid="B5")
    sal = tmp_path / "sal"
    cat = process_items([p], RunOptions(p_bar_min=0.0, save_saliency=str(sal)), runtime=rt).to_pylist()
    with fits.open(sal / "B5.fits") as h:
        saved = np.asarray(h[0].data)
    got = sbi.recompute_saliency(cat, runtime=rt)["B5"]["map"]
    np.testing.assert_allclose(got, saved, atol=1e-4)


# ------------------------------------------------------------------------ the report


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src = []
        self.scripts = 0
        self.external = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.src.append(a.get("src"))
        if tag == "script":
            self.scripts += 1
        for k in ("src", "href"):
            v = a.get(k) or ""
            if re.match(r"^(https?:)?//", v):
                self.external.append(v)


def _img_sources(text):
    p = _Imgs()
    p.feed(text)
    return p


def test_report_files(report, catalogue):
    import matplotlib.image as mpimg

    text = report.read_text()
    parsed = _img_sources(text)
    assert parsed.scripts == 0 and parsed.external == []  # self-contained, no JS, no network
    assert {"flags.png", "distributions.png", "length_comparison.png"} <= set(parsed.src)
    tiles = [s for s in parsed.src if s.startswith("tile-")]
    assert len(tiles) >= N_GAL
    for src in parsed.src:
        assert "/" not in src  # relative, same directory
        png = report.parent / src
        assert png.stat().st_size > 1000, src
        img = mpimg.imread(png)
        assert img.ndim == 3 and min(img.shape[:2]) >= 100 and img.std() > 0.01, src
    for s in ("Gallery: Random", "Gallery: Highest p_bar", "Gallery: Most flagged", "Gallery: Query", "test-model", "LOW_SNR", "not_fits", "Run configuration"):
        assert s in text, s
    assert "A &lt;fake&gt; model" in text  # metadata is escaped
    assert "saliency not saved" in text or "gal004" not in text
    assert re.search(r"\d+ rows match <code>p_bar &gt; 0.5 and bar_length_arcsec &gt; 4</code>", text)


def test_missing_saliency_note(catalogue, tmp_path):
    out_cat, _, _ = catalogue
    index = sbi.build_report(str(out_cat), str(tmp_path), n_gallery=2, saliency_dir=str(tmp_path), seed=1)
    text = Path(index).read_text()
    assert "saliency not saved" in text


def test_cli_errors(tmp_path, capsys):
    from survey_bars.cli import main

    bad = tmp_path / "bad.parquet"
    bad.write_text("hello")
    assert main(["inspect", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "not a readable Parquet file" in capsys.readouterr().err

    import pyarrow as pa

    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), plain)
    assert main(["inspect", str(plain), "--out", str(tmp_path / "r")]) == 2
    assert "not a survey-bars catalogue" in capsys.readouterr().err

    assert main(["inspect", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_bad_query(catalogue, tmp_path, capsys):
    from survey_bars.cli import main

    out_cat, _, _ = catalogue
    rc = main(["inspect", str(out_cat), "--out", str(tmp_path / "r"), "--n-gallery", "1", "--query", "no_such_column > 3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--query" in err and "bar_length_arcsec" in err


# ------------------------------------------------------------------------ Chromium

_PROBE = """<script>
window.addEventListener("load", function () {
  var ok = 0, bad = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    if (im.complete && im.naturalWidth > 0) { ok++; }
    else { bad.push(im.getAttribute("src")); console.error("broken image: " + im.getAttribute("src")); }
  }
  document.body.setAttribute("data-images-ok", String(ok));
  document.body.setAttribute("data-images-broken", bad.join(" "));
});
</script>"""


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")


def load_in_chromium(url, profile, *, screenshot=None, window="1280,2000"):
    """Load a page in headless Chromium; return (dumped DOM, console lines).

    Chromium writes every console message and uncaught exception of the page to stderr
    with ``--enable-logging=stderr`` as ``...:CONSOLE:<line>] "<message>", source: ...``.
    """
    cmd = [
        _chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
        "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", f"--window-size={window}",
    ]
    cmd += [f"--screenshot={screenshot}", "--hide-scrollbars"] if screenshot else ["--dump-dom"]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return proc.stdout, console


def test_console_check_catches_errors(tmp_path):
    """The console capture is not vacuous: it sees errors, exceptions and broken images."""
    page = tmp_path / "canary.html"
    page.write_text(
        "<!DOCTYPE html><html><body><img src='missing.png'>"
        "<script>console.error('canary-error'); undefinedFunction();</script>" + _PROBE + "</body></html>"
    )
    dom, console = load_in_chromium(page.as_uri(), tmp_path / "profile")
    text = "\n".join(console)
    assert "canary-error" in text and "Uncaught ReferenceError" in text and "broken image: missing.png" in text
    assert 'data-images-broken="missing.png"' in dom


def test_report_in_chromium(report, tmp_path):
    text = report.read_text()
    srcs = _img_sources(text).src
    # 1) the report as shipped: no console output at all, every <img> in the DOM
    dom, console = load_in_chromium(report.as_uri(), tmp_path / "profile")
    assert console == [], "console messages:\n" + "\n".join(console)
    assert _img_sources(dom).src == srcs
    assert "Gallery: Highest p_bar" in dom
    # 2) a copy with a probe script in the same directory: every image decoded by Chromium
    probe = report.parent / "_probe.html"
    probe.write_text(text.replace("</body>", _PROBE + "</body>"))
    try:
        dom, console = load_in_chromium(probe.as_uri(), tmp_path / "profile")
    finally:
        probe.unlink()
    assert console == [], "console messages:\n" + "\n".join(console)
    assert f'data-images-ok="{len(srcs)}"' in dom
    assert 'data-images-broken=""' in dom


@pytest.mark.skipif(os.environ.get("SURVEY_BARS_UPDATE_SCREENSHOT") != "1", reason="set SURVEY_BARS_UPDATE_SCREENSHOT=1 to rewrite docs/report-screenshot.png")
def test_update_screenshot(tmp_path):  # pragma: no cover - maintenance helper
    out_cat, sal_dir, _ = make_catalogue(tmp_path, n_ok=24)
    index = sbi.build_report(str(out_cat), str(tmp_path / "report"), query="p_bar > 0.9 and bar_length_arcsec > 5", n_gallery=6, saliency_dir=str(sal_dir), seed=4, title="survey-bars QA: example catalogue")
    shot = ROOT / "docs" / "report-screenshot.png"
    load_in_chromium(Path(index).as_uri(), tmp_path / "profile", screenshot=str(shot))
    assert shot.stat().st_size > 10_000


# ------------------------------------------------------------------------ JPEG and PNG rows


def _to_uint8(img):
    """A display stretch of a float image to 0..255, as a cutout service makes it."""
    img = np.asarray(img, dtype=float)
    return np.clip(255 * np.arcsinh(img / 0.05) / np.arcsinh(img.max() / 0.05), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_catalogue(tmp_path_factory):
    """A catalogue made by the pipeline from a colour JPEG (with a pixel scale), a greyscale PNG
    without one and a FITS file, in a run with ``--band r``."""
    from PIL import Image

    from survey_bars.inference.runtime import get_runtime
    from survey_bars.io.inputs import InputItem
    from survey_bars.pipeline import RunOptions, process_items

    from ..conftest import galaxy_image, write_fits

    root = tmp_path_factory.mktemp("images")
    u8 = _to_uint8(galaxy_image(n=96, r50=8, bar_len=26, seed=3))
    # a magenta galaxy, images are written top row first (north up): flip the FITS-orientation array
    picture = np.stack([u8, (0.3 * u8).astype(np.uint8), u8], axis=-1)[::-1].copy()
    picture[2:12, 2:12] = [230, 20, 20]  # a red marker in the picture's top-left (north-east) corner
    Image.fromarray(picture).save(root / "colour.jpg", quality=95)
    Image.fromarray(_to_uint8(galaxy_image(n=80, r50=7, bar_len=22, seed=4))[::-1]).save(root / "grey.png")
    write_fits(root / "f.fits", galaxy_image(n=96, r50=8, bar_len=24, seed=5), objid="F1")
    options = RunOptions(p_bar_min=0.0, band="r")
    items = [InputItem(file=str(root / "colour.jpg"), pixel_scale=0.262), str(root / "grey.png"), str(root / "f.fits")]
    rt = get_runtime(None)
    rows = process_items(items, options, runtime=rt).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 3, rows
    staging = root / "staging"
    write_part(rows_to_table(rows), str(staging), 0)
    out = root / "catalogue.parquet"
    assemble(str(staging), [0], str(out), metadata={"model_card": rt.card, "run_config": options.to_dict()})
    return out, {r["object_id"]: r for r in rows}


def _cutout_panel(png):
    """The RGB pixels (0..255) of a tile's first panel (the cutout)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    rgb = (img[..., :3] * 255 if img.dtype.kind == "f" else img[..., :3]).astype(float)
    return rgb[:, : rgb.shape[1] // 3]


def _magenta(rgb):
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 100) & (b > 100) & (g < 0.6 * np.minimum(r, b))


def test_report_shows_colour_images_in_colour(image_catalogue, tmp_path, monkeypatch):
    """A colour JPEG tile shows the RGB pixels, north up (the picture's top-left corner at the
    top left); greyscale and FITS tiles stay grey; a PNG without a pixel scale renders (its bar,
    which has no length, is not drawn); every cutout is read in the run's band, for the tiles and
    the recomputed saliency maps alike."""
    out_cat, rows = image_catalogue
    assert rows["colour"]["band"] == "rgb-mean" and rows["grey"]["band"] == "grey"
    assert rows["grey"]["pixel_scale_arcsec"] is None and rows["grey"]["bar_length_arcsec"] is None
    assert rows["grey"]["quality_flags"] & Flag.NO_PIXEL_SCALE
    bands = []
    real = tiles_mod.read_cutout

    def spy(path, **kw):
        bands.append(kw.get("band"))
        return real(path, **kw)

    monkeypatch.setattr(tiles_mod, "read_cutout", spy)  # the tiles' cutouts
    monkeypatch.setattr(pipeline_mod, "read_cutout", spy)  # the recomputed maps read as process does
    empty = tmp_path / "no-maps"
    empty.mkdir()
    index = sbi.build_report(str(out_cat), str(tmp_path / "report"), n_gallery=3, saliency_dir=str(empty),
                             recompute_saliency=True, seed=0)
    text = Path(index).read_text()
    assert len(bands) >= 6 and set(bands) == {"r"}, bands  # 3 tiles + 3 recomputed maps
    assert "recomputing failed" not in text and "cutout unreadable" not in text

    colour = _cutout_panel(Path(index).parent / tile_name(rows["colour"]))
    mag = _magenta(colour)
    assert mag.sum() > 200  # the galaxy, in colour
    r, g, b = colour[..., 0], colour[..., 1], colour[..., 2]
    red = (r > 180) & (g < 80) & (b < 80)
    assert red.sum() > 50
    (ry, rx), (my, mx) = (np.argwhere(m).mean(axis=0) for m in (red, mag))
    assert ry < my - 20 and rx < mx - 20  # the marker stays at the top left: not flipped or mirrored
    for oid in ("grey", "F1"):
        panel = _cutout_panel(Path(index).parent / tile_name(rows[oid]))
        assert _magenta(panel).sum() == 0, oid
        assert panel.std() > 10, oid  # an image was drawn
    assert "bar not drawn: no pixel scale" in text

