"""The real-dev loaders, their fixed split, and the metric functions of benchmarks/real.py.

The tests of the real data skip when ``../shared/data/real-dev`` is absent; the others use
small synthetic tables and numbers.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from benchmarks import real as bench
from survey_bars.training import realdata

ROOT = realdata.default_root()
HAVE_GZ2 = (ROOT / realdata.GZ2_DIR / "labels.csv").is_file()
HAVE_GZ1 = (ROOT / realdata.GZ1_DIR / "labels.csv").is_file()
needs_gz2 = pytest.mark.skipif(not HAVE_GZ2, reason=f"real-dev sdss-gz2-bars not found under {ROOT}")
needs_gz1 = pytest.mark.skipif(not HAVE_GZ1, reason=f"real-dev sdss-gz1-morphology not found under {ROOT}")


# ----------------------------------------------------------------------------- the split


def test_fold_of_is_the_documented_hash():
    for key in ("587741709414039693", "sdss_00001.jpeg", "gz1_00000.jpeg", "x"):
        want = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 5
        assert realdata.fold_of(key) == want


def test_fold_of_is_pinned():
    # the split must never change silently: later work trains on folds 0-3 and reports on 4
    assert realdata.fold_of("587741709414039693") == 2
    assert realdata.fold_of("sdss_00001.jpeg") == 3
    assert realdata.fold_of("gz1_00000.jpeg") == 1
    assert realdata.fold_of("587742589332357200") == 1
    assert realdata.fold_of(587741709414039693) == 2
    assert realdata.fold_of("a", n_folds=3) == 1
    assert realdata.TEST_FOLD == 4 and realdata.TRAIN_FOLDS == (0, 1, 2, 3) and realdata.N_FOLDS == 5


def test_fold_of_spreads_keys_evenly():
    folds = np.array([realdata.fold_of(f"key{i}") for i in range(5000)])
    counts = np.bincount(folds, minlength=5)
    assert counts.min() > 900 and counts.max() < 1100
    with pytest.raises(ValueError):
        realdata.fold_of("x", n_folds=0)


def test_split_key_prefers_the_objid():
    assert realdata.split_key("587741709414039693", "/a/b/sdss_00000.jpeg") == "587741709414039693"
    for missing in (None, float("nan"), "", "nan"):
        assert realdata.split_key(missing, "/a/b/sdss_00001.jpeg") == "sdss_00001.jpeg"


def _fake_root(tmp_path):
    gz2 = tmp_path / realdata.GZ2_DIR
    (gz2 / "images").mkdir(parents=True)
    pd.DataFrame({
        "file": ["sdss_00000.jpeg", "sdss_00001.jpeg", "sdss_00002.jpeg"],
        "ra": [160.365, 146.394, 10.0], "dec": [25.6841, 2.46454, -1.0], "pixel_scale": [0.3, 0.3, 0.3],
        "z": [0.05362, np.nan, np.nan],
        "gz2_bar_fraction": [0.833, 0.0, 0.3], "gz2_no_bar_fraction": [0.167, 1.0, 0.7],
        "hoyle_bar_length_arcsec": [5.78201, np.nan, np.nan], "hoyle_bar_length_kpc": [6.03518, np.nan, np.nan],
        "hoyle_length_stdev_frac": [0.140327, np.nan, np.nan],
        "objid": ["587741709414039693", "", ""],
    }).to_csv(gz2 / "labels.csv", index=False)
    gz1 = tmp_path / realdata.GZ1_DIR
    (gz1 / "images").mkdir(parents=True)
    pd.DataFrame({
        "file": [f"gz1_{i:05d}.jpeg" for i in range(6)],
        "sdss_dr7_objid": ["587742589332357200", "587736899576266903", "587736941988938002", "1", "2", "3"],
        "gz1_class": ["elliptical", "spiral_anticlockwise", "edge_on", "spiral_clockwise", "merger", "dont_know"],
    }).to_csv(gz1 / "labels.csv", index=False)
    return tmp_path


def test_loaders_parse_a_small_labels_file(tmp_path):
    root = _fake_root(tmp_path)
    g = realdata.load_gz2_bars(root)
    assert list(g["has_bar"].astype("float").fillna(-1)) == [1, 0, -1]  # 0.3: neither barred nor unbarred
    assert g["object_id"].tolist() == ["587741709414039693", "sdss_00001", "sdss_00002"]
    assert g["split_key"].tolist() == ["587741709414039693", "sdss_00001.jpeg", "sdss_00002.jpeg"]
    assert g["fold"].tolist() == [2, 3, realdata.fold_of("sdss_00002.jpeg")]
    assert g["redshift"].iloc[0] == pytest.approx(0.05362) and np.isnan(g["redshift"].iloc[1])
    assert g["file"].iloc[0] == str((root / realdata.GZ2_DIR / "images" / "sdss_00000.jpeg").resolve())
    for col in ("file", "object_id", "ra", "dec", "pixel_scale", "redshift", "has_bar", "gz2_bar_fraction",
                "hoyle_bar_length_arcsec", "hoyle_length_stdev_frac", "fold"):
        assert col in g.columns
    m = realdata.load_gz1_morphology(root)
    assert m["morph"].tolist() == ["elliptical", "spiral", "edge_on", "spiral", "merger", "dont_know"]
    assert m["scored"].tolist() == [True, True, True, True, False, False]
    assert m["object_id"].iloc[0] == "587742589332357200"  # read as text: 18 digits survive
    assert m["fold"].iloc[0] == 1


def test_training_labels_give_each_set_only_its_own_labels(tmp_path):
    root = _fake_root(tmp_path)
    t = realdata.training_labels(root, folds=range(5))
    gz2, gz1 = t[t.source == "gz2"], t[t.source == "gz1"]
    assert gz2["class"].tolist() == ["disc", "disc"]  # the undecided 0.3 galaxy is left out
    assert gz2["has_bar"].tolist() == [1.0, 0.0] and gz2["has_spiral"].isna().all()
    assert gz2["bar_length_arcsec"].iloc[0] == pytest.approx(5.78201) and gz2["pixel_scale_arcsec"].eq(0.3).all()
    assert gz1["class"].tolist() == ["smooth", "disc", "edge_on", "disc"]  # no merger, no don't-know
    assert gz1["has_bar"].tolist()[0] == 0.0 and np.isnan(gz1["has_bar"].tolist()[1])
    assert gz1["has_spiral"].tolist()[:2] == [0.0, 1.0] and gz1["pixel_scale_arcsec"].isna().all()
    only = realdata.training_labels(root, folds=[2])
    in_fold = {f for d in (realdata.load_gz2_bars(root), realdata.load_gz1_morphology(root)) for f, k in zip(d.file, d.fold) if k == 2}
    assert 0 < len(only) < len(t) and set(only["file"]) <= in_fold


def test_loaders_say_where_the_data_are_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="SURVEY_BARS_REAL_DEV"):
        realdata.load_gz2_bars(tmp_path)
    with pytest.raises(FileNotFoundError):
        realdata.load_gz1_morphology(tmp_path)


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SURVEY_BARS_REAL_DEV", str(tmp_path))
    assert realdata.default_root() == tmp_path.resolve()
    monkeypatch.delenv("SURVEY_BARS_REAL_DEV")
    assert realdata.default_root().parts[-3:] == ("shared", "data", "real-dev")


def test_input_catalogue_is_what_process_reads(tmp_path):
    from survey_bars.io.inputs import read_input_catalogue

    root = _fake_root(tmp_path)
    g = realdata.load_gz2_bars(root)
    items = read_input_catalogue(realdata.write_input_catalogue(g, tmp_path / "cat" / "gz2.csv"))
    it = items[g["file"].iloc[0]]
    assert it.pixel_scale == 0.3 and it.object_id == "587741709414039693" and it.redshift == pytest.approx(0.05362)
    assert it.ra == pytest.approx(160.365)
    assert items[g["file"].iloc[1]].redshift is None
    m = realdata.load_gz1_morphology(root)
    path = realdata.write_input_catalogue(m, tmp_path / "gz1.csv")
    assert list(pd.read_csv(path).columns) == ["file", "object_id"]  # no pixel scale: morphology only
    items = read_input_catalogue(path)
    assert all(i.pixel_scale is None for i in items.values()) and len(items) == 6


# ----------------------------------------------------------------------------- the real data


@needs_gz2
def test_gz2_labels_and_split():
    g = realdata.load_gz2_bars()
    assert len(g) == 4238
    assert (g["has_bar"] == 1).sum() == 2115 and (g["has_bar"] == 0).sum() == 2123 and g["has_bar"].isna().sum() == 0
    assert (g.loc[g["has_bar"] == 1, "gz2_bar_fraction"] >= 0.8).all()
    assert g["hoyle_bar_length_arcsec"].notna().sum() == 576
    assert (g.loc[g["hoyle_bar_length_arcsec"].notna(), "has_bar"] == 1).all()
    assert (g["pixel_scale"] == 0.3).all()
    assert g["split_key"].is_unique and g["file"].is_unique
    share = g["fold"].value_counts(normalize=True)
    assert sorted(share.index) == [0, 1, 2, 3, 4] and share.between(0.17, 0.23).all()
    test = realdata.select_folds(g, realdata.TEST_FOLD)
    assert test["has_bar"].mean() == pytest.approx(0.5, abs=0.05)
    assert ((test["hoyle_bar_length_arcsec"] <= 15).sum()) > 60  # enough volunteer bars to score lengths
    again = realdata.load_gz2_bars()
    pd.testing.assert_frame_equal(g, again)
    for f in g["file"].iloc[:: 500]:
        assert f.startswith("/") and __import__("os").path.isfile(f)


@needs_gz1
def test_gz1_labels_and_split():
    m = realdata.load_gz1_morphology()
    assert len(m) == 5363
    assert m["gz1_class"].value_counts().to_dict() == {"elliptical": 4145, "edge_on": 598, "spiral_anticlockwise": 232,
                                                       "spiral_clockwise": 217, "merger": 115, "dont_know": 56}
    assert (m["morph"] == "spiral").sum() == 449 and m["scored"].sum() == 4145 + 598 + 449
    assert m["objid"].str.fullmatch(r"\d{18}").all()
    share = m["fold"].value_counts(normalize=True)
    assert share.between(0.17, 0.23).all()
    pd.testing.assert_frame_equal(m, realdata.load_gz1_morphology())


@needs_gz1
@needs_gz2
def test_no_galaxy_in_two_folds():
    g, m = realdata.load_gz2_bars(), realdata.load_gz1_morphology()
    both = pd.concat([g[["object_id", "fold"]], m[["object_id", "fold"]]])
    assert (both.groupby("object_id")["fold"].nunique() == 1).all()
    folds = [set(realdata.select_folds(g, f)["file"]) for f in range(5)]
    assert sum(len(s) for s in folds) == len(g)
    assert all(not (folds[i] & folds[j]) for i in range(5) for j in range(i + 1, 5))


# ----------------------------------------------------------------------------- benchmark metrics


def test_length_metrics_of_a_perfect_and_a_doubling_method():
    true = np.array([4.0, 6.0, 8.0, 10.0, 12.0, 14.0])
    m = bench.length_metrics(true.copy(), true)
    assert m["pearson_r"] == pytest.approx(1.0) and m["median_ratio"] == pytest.approx(1.0)
    assert m["rmse_arcsec"] == pytest.approx(0.0) and m["median_rel_err"] == pytest.approx(0.0)
    assert m["frac_measured"] == 1.0 and m["n"] == 6
    m2 = bench.length_metrics(2 * true, true)
    assert m2["median_ratio"] == pytest.approx(2.0) and m2["median_rel_err"] == pytest.approx(1.0)
    assert m2["pearson_r"] == pytest.approx(1.0) and m2["rmse_arcsec"] == pytest.approx(np.sqrt(np.mean(true**2)))
    pred = true.copy()
    pred[:2] = np.nan
    pred[2] = 16.0  # one wrong
    m3 = bench.length_metrics(pred, np.append(true[:-1], np.nan))
    assert m3["n"] == 5 and m3["n_measured"] == 3 and m3["frac_measured"] == pytest.approx(0.6)
    assert m3["median_ratio"] == pytest.approx(1.0) and m3["pearson_r"] < 1
    anti = bench.length_metrics(true[::-1].copy(), true)
    assert anti["pearson_r"] == pytest.approx(-1.0)
    none = bench.length_metrics(np.full(3, np.nan), np.array([5.0, 6.0, 7.0]))
    assert none["frac_measured"] == 0 and np.isnan(none["pearson_r"]) and np.isnan(none["median_ratio"])


def test_binned_length_metrics_put_each_bar_in_its_bin():
    true = np.array([3.0, 5.9, 6.0, 8.0, 9.5, 12.0, 15.0])
    pred = np.array([3.0, np.nan, 12.0, 8.0, 9.5, 12.0, 15.0])
    bins = {b["bin"]: b for b in bench.binned_length_metrics(pred, true)}
    assert list(bins) == ["0-6", "6-9", "9-12", "12-15"]
    assert (bins["0-6"]["n"], bins["0-6"]["n_measured"]) == (2, 1)
    assert bins["6-9"]["n"] == 2 and bins["6-9"]["median_ratio"] == pytest.approx(1.5)
    assert bins["12-15"]["n"] == 2  # 15 is in the last bin


def test_coverage_counts_pulls():
    true = np.full(100, 10.0)
    pred = true + np.linspace(-3, 3, 100)
    c = bench.coverage(pred, np.full(100, 1.0), true)
    assert c["n"] == 100 and c["within_1sigma"] == pytest.approx(34 / 100) and c["within_2sigma"] == pytest.approx(66 / 100)
    wide = bench.coverage(pred, np.full(100, 10.0), true)
    assert wide["within_1sigma"] == 1.0
    # the volunteers' spread in quadrature: sqrt(1 + (sqrt(8))^2) = 3 covers everything at 1 sigma
    both = bench.coverage(pred, np.full(100, 1.0), true, extra_sigma=np.full(100, np.sqrt(8.0)))
    assert both["within_1sigma"] == 1.0
    assert bench.coverage([np.nan], [1.0], [1.0])["n"] == 0


def test_auc_with_interval_and_ratio_interval():
    y = np.array([0] * 30 + [1] * 30, bool)
    s = y.astype(float) + np.linspace(0, 0.5, 60)
    a = bench.auc_with_interval(s, y, n_boot=50)
    assert a["auc"] == 1.0 and a["ci95"] == [1.0, 1.0] and a["n_pos"] == 30
    inv = bench.auc_with_interval(-s, y, n_boot=50)
    assert inv["auc"] == 0.0
    s2 = s.copy()
    s2[0] = np.nan
    assert bench.auc_with_interval(s2, y, n_boot=10)["n"] == 59
    rng = np.random.default_rng(1)
    true = rng.uniform(4, 15, 80)
    ri = bench.ratio_interval(1.5 * true, true, n_boot=100)
    assert ri["median_ratio_ci95"] == pytest.approx([1.5, 1.5]) and ri["pearson_r_ci95"][0] == pytest.approx(1.0)


def test_morphology_metrics_and_confusion():
    morph = np.array(["elliptical"] * 4 + ["spiral"] * 3 + ["edge_on"] * 2 + ["merger"])
    p_smooth = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.1, 0.2, 0.99])
    p_edge_on = np.array([0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.8, 0.7, 0.0])
    p_spiral = np.array([0.0, 0.0, 0.0, 0.1, 0.9, 0.8, 0.7, 0.1, 0.1, 0.0])
    r = bench.morphology_metrics(p_smooth, p_edge_on, p_spiral, morph, n_boot=20)
    assert r["p_smooth"]["auc"] == 1.0 and r["p_edge_on"]["auc"] == 1.0 and r["p_spiral"]["auc"] == 1.0
    assert r["p_smooth"]["n"] == 9 and r["p_smooth"]["n_pos"] == 4  # the merger is not scored
    assert r["p_spiral"]["n"] == 7
    assert r["confusion"] == {"elliptical": {"smooth": 4, "edge_on": 0, "disc": 0},
                              "spiral": {"smooth": 0, "edge_on": 0, "disc": 3},
                              "edge_on": {"smooth": 0, "edge_on": 2, "disc": 0}}
    bad = bench.morphology_metrics(1 - p_smooth, p_edge_on, p_spiral, morph, n_boot=20)
    assert bad["p_smooth"]["auc"] == 0.0 and bad["confusion"]["elliptical"] == {"smooth": 0, "edge_on": 0, "disc": 4}
    assert list(bench.predicted_morph([0.5, 0.4, 0.4, np.nan], [0.9, 0.5, 0.1, 0.1])) == ["smooth", "edge_on", "disc", "none"]


def test_bundle_note_checks_the_training_folds():
    note, ok = bench.bundle_note({"name": "b", "version": "1", "training": {"data": {"directories": ["/sims"]}}}, [4])
    assert ok and "simulations only" in note
    card = {"name": "b", "version": "2", "training": {"real": {"split": realdata.SPLIT_ID, "folds": [0, 1, 2, 3]}}}
    assert bench.bundle_note(card, [4])[1]
    assert not bench.bundle_note(card, [3])[1]
    card["training"]["real"]["split"] = "another"
    assert not bench.bundle_note(card, [4])[1]
    # a length fit on real bars (calibrate_real) must have left the scored fold out too
    card["training"]["real"]["split"] = realdata.SPLIT_ID
    card["calibration"] = {"moments": {"slope": 1.0, "real": {"split": realdata.SPLIT_ID, "folds": [0, 1, 2, 3]}}}
    assert bench.bundle_note(card, [4])[1]
    card["calibration"]["moments"]["real"]["folds"] = [0, 1, 2, 3, 4]
    note, ok = bench.bundle_note(card, [4])
    assert not ok and "lengths were fitted on real-dev folds" in note
    # so must a length head fine-tuned on real lengths (calibrate_head's real_training)
    card["calibration"]["moments"]["real"]["folds"] = [0, 1, 2, 3]
    card["calibration"]["head"] = {"real_training": {"split": realdata.SPLIT_ID, "folds": [0, 1, 2]},
                                   "real": {"split": realdata.SPLIT_ID, "folds": [3]}}
    assert bench.bundle_note(card, [4])[1]
    card["calibration"]["head"]["real_training"]["folds"] = [0, 1, 2, 4]
    note, ok = bench.bundle_note(card, [4])
    assert not ok and "[0, 1, 2, 4]" in note


def test_gz2_scores_and_figure_on_a_synthetic_catalogue(tmp_path):
    rng = np.random.default_rng(3)
    n = 40
    hoyle = np.where(np.arange(n) < 20, rng.uniform(4, 18, n), np.nan)
    labels = pd.DataFrame({
        "file": [f"/x/sdss_{i:05d}.jpeg" for i in range(n)], "object_id": [str(i) for i in range(n)],
        "ra": 1.0, "dec": 2.0, "redshift": np.nan,
        "has_bar": pd.array([1] * 20 + [0] * 20, dtype="Int8"),
        "hoyle_bar_length_arcsec": hoyle, "hoyle_length_stdev_frac": np.where(np.isfinite(hoyle), 0.15, np.nan),
    })
    measured = np.isfinite(hoyle) & (np.arange(n) % 4 != 0)  # a quarter of the bars left unmeasured
    length = np.where(measured, hoyle, np.nan)
    cat = pd.DataFrame({
        "file": [f"/elsewhere/sdss_{i:05d}.jpeg" for i in range(n)], "object_id": "other", "status": "ok",
        "p_bar": np.where(measured, 0.9, np.r_[np.full(20, 0.2), np.full(20, 0.1)]),
        "quality_flags": 0, "bar_length_arcsec": length, "bar_length_err_arcsec": np.where(measured, 1.0, np.nan),
        "bar_length_moments_arcsec": 2 * length, "bar_length_moments_err_arcsec": np.where(measured, 1.0, np.nan),
        "bar_length_bhambra2022_arcsec": 0.5 * length, "bar_length_direct_arcsec": length + 1.0,
    })
    cat["name"] = [f.rsplit("/", 1)[1] for f in cat["file"]]
    d = bench.join(labels, cat)
    assert d["file"].tolist() == labels["file"].tolist()  # the labels' paths are kept, rows matched by name
    r = bench.gz2_scores(d)
    fit = np.isfinite(hoyle) & (hoyle <= 15)
    assert r["n_hoyle"] == 20 and r["n_hoyle_fit"] == int(fit.sum())
    assert r["bar_auc"]["auc"] > 0.8 and r["unbarred_given_a_length"] == 0
    lm = r["lengths"]
    assert lm["default"]["overall"]["pearson_r"] == pytest.approx(1.0) and lm["default"]["overall"]["median_ratio"] == pytest.approx(1.0)
    assert lm["default"]["overall"]["n_measured"] == int((fit & measured).sum())
    assert lm["moments"]["overall"]["median_ratio"] == pytest.approx(2.0)
    assert lm["bhambra2022"]["overall"]["median_ratio"] == pytest.approx(0.5)
    assert lm["direct"]["overall"]["rmse_arcsec"] == pytest.approx(1.0)
    assert lm["default"]["coverage"]["within_1sigma"] == 1.0 and "coverage" not in lm["direct"]
    assert r["hoyle_not_measured"]["p_bar_below_0.5"] == int((fit & ~measured).sum())
    path = tmp_path / "fig.png"
    bench.scatter_figure(d, r, path, d_all=d)
    assert path.stat().st_size > 10_000


def test_linear_from_display_undoes_the_lupton_stretch():
    """The channels of a Lupton et al. (2004) composite give back each band's flux and their mean."""
    rng = np.random.default_rng(3)
    flux = rng.uniform(0.0, 20.0, (6, 7, 3))
    q = 8.0
    intensity = flux.mean(axis=2)
    colour = 255.0 * flux * (np.arcsinh(q * intensity) / (q * intensity))[..., None]
    np.testing.assert_allclose(realdata.linear_from_display(colour, q, "gri"), intensity, rtol=1e-10)
    for band, k in (("i", 0), ("r", 1), ("g", 2)):
        np.testing.assert_allclose(realdata.linear_from_display(colour, q, band), flux[..., k], rtol=1e-10)
    # a black pixel stays black; the faint end is nearly linear in the JPEG value
    assert realdata.linear_from_display(np.zeros((2, 2, 3)), q, "r").max() == 0.0
    faint = realdata.linear_from_display(np.full((1, 1, 3), 3.0), q, "r")[0, 0]
    assert faint == pytest.approx(3.0 / 255.0, rel=0.01)


@pytest.mark.parametrize("kw, match", [
    (dict(colour=np.zeros((4, 4))), "needs \\(ny, nx, 3\\) RGB"),
    (dict(colour=np.zeros((4, 4, 3)), q=0.0), "positive number"),
    (dict(colour=np.zeros((4, 4, 3)), band="z"), "band must be one of"),
])
def test_linear_from_display_says_what_is_wrong(kw, match):
    with pytest.raises(ValueError, match=match):
        realdata.linear_from_display(**kw)


def test_write_linear_fits_flips_and_carries_the_scale(tmp_path):
    """The FITS copy is the JPEG's band, bottom row first, with a TAN WCS of the given scale, or none."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales
    from PIL import Image

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    path = realdata.write_linear_fits(tmp_path / "c.png", tmp_path / "c.fits", 6.0, "g", pixel_scale=0.4, ra=150.0)
    with fits.open(path) as h:
        data, hdr = h[0].data, h[0].header
    np.testing.assert_allclose(data, realdata.linear_from_display(rgb, 6.0, "g")[::-1], rtol=1e-6)
    w = WCS(hdr)
    assert w.wcs.ctype[0] == "RA---TAN" and w.wcs.crval[0] == 150.0 and w.wcs.crval[1] == 0.0
    np.testing.assert_allclose(proj_plane_pixel_scales(w) * 3600.0, [0.4, 0.4])
    plain = realdata.write_linear_fits(tmp_path / "c.png", tmp_path / "p.fits")
    with fits.open(plain) as h:
        assert "CTYPE1" not in h[0].header and h[0].header["BITPIX"] == -32
    with pytest.raises(ValueError, match="pixel_scale must be a positive"):
        realdata.write_linear_fits(tmp_path / "c.png", tmp_path / "x.fits", pixel_scale=0.0)
    (tmp_path / "bad.jpeg").write_bytes(b"not an image")
    with pytest.raises(OSError):
        realdata.write_linear_fits(tmp_path / "bad.jpeg", tmp_path / "y.fits")


def test_linear_frames_are_reproducible_and_skip_greyscale(tmp_path):
    """linear_frames: copies per colour image, the same for the same seed, none for a greyscale image."""
    from PIL import Image

    from survey_bars.training.data import linear_frames

    yy, xx = np.mgrid[:48, :48] - 23.5
    gal = 200.0 * np.exp(-np.hypot(xx / 6.0, yy / 3.0)) + 3.0
    rgb = np.clip(np.dstack([gal * 0.9, gal, gal * 1.1]), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb[..., 1]).save(tmp_path / "g.png")
    paths = [str(tmp_path / "c.png"), str(tmp_path / "g.png"), str(tmp_path / "c.png")]
    a, ok = linear_frames(paths, copies=2, seed=5)
    b, _ = linear_frames(paths, copies=2, seed=5)
    assert ok.tolist() == [True, False, True] and a.shape == (4, 64, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # two copies, two stretches
    r, _ = linear_frames(paths[:1], copies=1, q_range=(8.0, 8.0), bands=("r",))
    assert r.shape == (1, 64, 64) and np.isfinite(r).all()
    with pytest.raises(ValueError, match="bands must be among"):
        linear_frames(paths[:1], bands=("u",))
    with pytest.raises(ValueError, match="copies >= 1"):
        linear_frames(paths[:1], copies=0)
