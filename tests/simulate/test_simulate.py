"""Tests of the simulator's truth, files and arguments (survey_bars.simulate)."""

import math
import os

import numpy as np
import pandas as pd
import pytest

from survey_bars import simulate as sim

TRUTH_COLUMNS = [
    "object_id", "file", "survey", "class", "has_bar", "has_spiral", "has_ring", "bar_length_arcsec",
    "bar_pa_deg", "bar_axis_ratio", "bar_light_frac", "disc_scale_arcsec", "inclination_deg", "disc_pa_deg",
    "bulge_frac", "sersic_n", "bulge_r50_arcsec", "r50_arcsec", "psf_fwhm_arcsec", "psf_type", "noise_sigma",
    "snr", "pixel_scale_arcsec", "stamp_size", "ra", "dec", "redshift",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sims")
    df = sim.simulate(out, 8, seed=7, stamp_size=None)
    return out, df


def _moments(img):
    """Centroid-free second-moment matrix of a non-negative image (pixel units)."""
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    w = img / img.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    cxx = (w * (x - mx) ** 2).sum()
    cyy = (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    return np.array([[cxx, cxy], [cxy, cyy]])


def test_projected_bar_thin_limit_matches_endpoint_formula():
    a, phi, inc, pa = 3.0, 40.0, 55.0, 20.0
    full, ppa, q = sim.projected_bar(a, 1e-4, phi, inc, pa)
    p, ci = math.radians(phi), math.cos(math.radians(inc))
    assert full == pytest.approx(2 * a * math.sqrt(math.cos(p) ** 2 + math.sin(p) ** 2 * ci**2), rel=1e-6)
    assert ppa == pytest.approx((pa + math.degrees(math.atan2(math.sin(p) * ci, math.cos(p)))) % 180, abs=1e-3)
    assert q < 1e-3
    # face-on: length 2a at PA = disc_pa + phi
    full, ppa, q = sim.projected_bar(a, 0.3, phi, 0.0, pa)
    assert full == pytest.approx(2 * a) and ppa == pytest.approx(pa + phi) and q == pytest.approx(0.3)


def test_bar_moments_recover_truth_length_and_pa():
    """Second moments of the PSF-free bar image give the recorded projected length and PA.

    For the Ferrers profile I = (1 - m^2)^n inside an ellipse of semi-axes (a, b), the second
    moment along the major axis is <x^2> = a^2 / (2 (n + 2)) (substitute t = m^2: the ratio of
    Beta integrals is 1 / (n + 2)), i.e. a = sqrt(8 <x^2>) for n = 2. An inclined projection is
    linear, so the projected bar is again an elliptical Ferrers profile and the same factor holds
    for its eigenvalues. Binning to pixels adds 1/12 pix^2 (removed). Tolerance: 2 % in
    length, 1.5 deg in PA (bars >= 10 pixels long whose projection is not rounder than 0.8).
    """
    checked = 0
    for k in range(40):
        rng = np.random.default_rng([11, k])
        survey = sorted(sim.SURVEYS)[k % 4]
        p = sim.draw_params(rng, survey, "barred")
        full, pa, q = sim.projected_bar(p.bar_a, p.bar_q, p.bar_phi, p.inclination, p.disc_pa)
        if full / p.pixel_scale < 10 or q > 0.8:
            continue
        bar = sim.render_components(p, psf=False)["bar"]
        assert bar.sum() == pytest.approx(p.total_flux * p.bar_frac, rel=0.2)
        w, v = np.linalg.eigh(_moments(bar) - np.eye(2) / 12.0)
        length = 2 * math.sqrt(8 * w[1]) * p.pixel_scale
        # eigenvector (x, y) in pixels -> PA east of north: east = -x, north = +y
        mpa = math.degrees(math.atan2(-v[0, 1], v[1, 1])) % 180
        assert length == pytest.approx(full, rel=0.02), (k, survey)
        dpa = abs((mpa - pa + 90) % 180 - 90)
        assert dpa < 1.5, (k, survey, mpa, pa)
        checked += 1
        if checked >= 8:
            break
    assert checked >= 5


def test_flux_conserved_through_psf_and_pixels():
    for k in range(6):
        rng = np.random.default_rng([3, k])
        p = sim.draw_params(rng, sorted(sim.SURVEYS)[k % 4], ["disc", "barred"][k % 2])
        p.dust = "none"
        c = sim.render_components(p)
        gal = c["galaxy"].sum()
        assert c["galaxy_psf"].sum() == pytest.approx(gal, rel=5e-3)
        # the drawn components add up to the model flux (disc wings beyond the stamp aside)
        assert gal == pytest.approx(p.total_flux, rel=0.03)
        parts = sum(c[k2].sum() for k2 in ("bulge", "disc", "bar", "arms", "rings", "clumps") if k2 in c)
        assert parts == pytest.approx(gal, rel=1e-5)


def test_truth_table_and_files(run):
    out, df = run
    assert list(df.columns[: len(TRUTH_COLUMNS)]) == TRUTH_COLUMNS or set(TRUTH_COLUMNS) <= set(df.columns)
    assert len(df) == 8 and df["object_id"].tolist() == [f"sim7-{i:07d}" for i in range(8)]
    back = pd.read_parquet(os.path.join(out, "truth.parquet"))
    pd.testing.assert_frame_equal(back, df)
    assert set(df["class"]) <= set(sim.CLASSES)
    assert (df["has_bar"] == (df["class"] == "barred")).all()
    assert df.loc[df.has_bar, "bar_length_arcsec"].notna().all()
    assert df.loc[~df.has_bar, "bar_length_arcsec"].isna().all()
    assert ((df["redshift"] >= 0.01) & (df["redshift"] <= 0.1)).all()
    assert ((df.bar_pa_deg.dropna() >= 0) & (df.bar_pa_deg.dropna() < 180)).all()
    for f in df["file"]:
        assert os.path.exists(os.path.join(out, f))


def test_wcs_scale_and_centre(run):
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    out, df = run
    for row in df.itertuples():
        with fits.open(os.path.join(out, row.file)) as h:
            hdr, data = h[0].header, h[0].data
        assert data.dtype == np.dtype(">f4") and data.shape == (row.stamp_size, row.stamp_size)
        assert hdr["BUNIT"] == "nanomaggy" and hdr["OBJID"] == row.object_id and hdr["SURVEY"] == row.survey
        assert hdr["REDSHIFT"] == pytest.approx(row.redshift)
        w = WCS(hdr)
        scale = proj_plane_pixel_scales(w) * 3600
        assert scale == pytest.approx([sim.SURVEYS[row.survey].pixel_scale] * 2, rel=1e-9)
        assert hdr["CD1_1"] < 0 < hdr["CD2_2"]  # north up, east left
        c = (row.stamp_size - 1) / 2.0
        ra, dec = w.all_pix2world([[c, c]], 0)[0]
        assert ra == pytest.approx(row.ra, abs=1e-9) and dec == pytest.approx(row.dec, abs=1e-9)


def test_reads_back_with_pipeline(run):
    from survey_bars.io import read_cutout
    from survey_bars.normalise import normalise

    out, df = run
    for row in df.itertuples():
        cut = read_cutout(os.path.join(out, row.file))
        assert cut.object_id == row.object_id
        assert cut.pixel_scale_arcsec == pytest.approx(row.pixel_scale_arcsec)
        assert cut.redshift == pytest.approx(row.redshift)
        n = normalise(cut.data)
        assert n.image.shape == (64, 64) and np.isfinite(n.image).all()


def test_deterministic_and_independent_of_workers(tmp_path):
    from astropy.io import fits

    kw = dict(seed=5, class_mix={"barred": 1, "smooth": 1}, start_index=3)
    a = sim.simulate(tmp_path / "a", 6, workers=1, **kw)
    b = sim.simulate(tmp_path / "b", 6, workers=2, **kw)
    c = sim.simulate(tmp_path / "c", 2, workers=1, **{**kw, "start_index": 5})
    pd.testing.assert_frame_equal(a, b)
    assert set(a["class"]) <= {"barred", "smooth"}
    assert a.object_id.iloc[0] == "sim5-0000003"
    for f in a["file"]:
        da = open(tmp_path / "a" / f, "rb").read()
        assert da == open(tmp_path / "b" / f, "rb").read()
    # a galaxy depends only on (seed, i): the same object in a run that starts elsewhere
    for f in c["file"]:
        assert np.array_equal(fits.getdata(tmp_path / "a" / f), fits.getdata(tmp_path / "c" / f), equal_nan=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "positive integer"),
        (dict(n=-3), "positive integer"),
        (dict(n=2, survey="lsst"), "Unknown survey"),
        (dict(n=2, class_mix={"spiral": 1}), "Unknown classes"),
        (dict(n=2, class_mix={"barred": 0}), "not all zero"),
        (dict(n=2, seed=-1), "non-negative"),
        (dict(n=2, workers=0), "workers"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        sim.simulate(tmp_path / "x", n, **kwargs)


def test_unwritable_directory_and_cli(tmp_path, capsys):
    from survey_bars.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="output directory"):
        sim.simulate(blocker / "sub", 1)
    assert main(["simulate", "--out", str(blocker / "sub"), "-n", "1"]) == 2
    assert "output directory" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "o"), "-n", "0"]) == 2
    assert main(["simulate", "--out", str(tmp_path / "o"), "-n", "1", "--survey", "lsst"]) == 2
    assert main(["simulate", "--out", str(tmp_path / "o"), "-n", "1", "--class-mix", "barred"]) == 2
    assert main(["simulate", "--out", str(tmp_path / "o"), "-n", "2", "--survey", "hsc", "--class-mix", "barred=1"]) == 0
    df = pd.read_parquet(tmp_path / "o" / "truth.parquet")
    assert (df["survey"] == "hsc").all() and df["has_bar"].all()


def test_disc_and_smooth_orientation_matches_truth_pa():
    """The GalSim-drawn disc (edge-on) and smooth profiles lie along the recorded PA (1.5 deg)."""
    for k, cls in enumerate(["edge_on", "edge_on", "smooth", "smooth"]):
        rng = np.random.default_rng([13, k])
        p = sim.draw_params(rng, "hsc", cls)
        if cls == "smooth":
            p.bulge_q = 0.5
        c = sim.render_components(p, psf=False)
        img = c["disc"] if cls == "edge_on" else c["bulge"]
        # a circular aperture: the square stamp would pull the moments of Sersic wings toward 45 deg
        n = img.shape[0]
        y, x = np.mgrid[:n, :n]
        img = img * (np.hypot(x - (n - 1) / 2, y - (n - 1) / 2) < 0.4 * n)
        w, v = np.linalg.eigh(_moments(img))
        mpa = math.degrees(math.atan2(-v[0, 1], v[1, 1])) % 180
        assert abs((mpa - p.disc_pa + 90) % 180 - 90) < 1.5, (cls, mpa, p.disc_pa)


def test_display_copies_look_like_service_jpegs_and_keep_the_truth(run, tmp_path):
    from survey_bars.io import read_cutout
    from survey_bars.flags import Flag

    out, df = run
    a = sim.display_copies(out, tmp_path / "jpeg", seed=3)
    sim.display_copies(out, tmp_path / "jpeg2", seed=3, workers=2)
    assert list(a.file) == [f.replace(".fits", ".jpg") for f in df.file]
    assert a.drop(columns="file").equals(df.drop(columns="file"))
    assert pd.read_parquet(tmp_path / "jpeg" / "truth.parquet").file.tolist() == a.file.tolist()
    for f in a.file:
        assert (tmp_path / "jpeg" / f).read_bytes() == (tmp_path / "jpeg2" / f).read_bytes()  # seeded per galaxy
        cut = read_cutout(tmp_path / "jpeg" / f, pixel_scale=0.3)
        assert cut.display and cut.flags & Flag.DISPLAY_IMAGE and cut.colour is not None
        src = read_cutout(out / f.replace(".jpg", ".fits")).data
        assert cut.data.shape == src.shape
        n = cut.data.shape[0]
        sky = np.median(np.concatenate([cut.data[:n // 10].ravel(), cut.data[-(n // 10):].ravel()]))
        assert sky < 25 and cut.data.max() > 100  # a dark sky and a bright core, as SDSS JPEGs
