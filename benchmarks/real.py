"""Real-data benchmark: a bundle on real SDSS galaxies with Galaxy Zoo labels, and two Spitzer bars.

The galaxies (``../shared/data/real-dev``, read by :mod:`survey_bars.training.realdata`; nothing
is copied into the repository) go through ``survey-bars process`` (:func:`survey_bars.cluster.process`
on a 2-worker LocalCluster: the product's own path, JPEGs read directly, pixel scale and position
from an input catalogue), with the default options. Only the held-out test fold is scored:

* the split is fixed: 5 folds by sha256 of the SDSS objid (else the file name), see
  :mod:`survey_bars.training.realdata`; **fold 4 is the test fold**, folds 0-3 are for training,
  tuning and calibration;
* ``sdss-gz2-bars``: bar ROC AUC (``p_bar``, GZ2 barred against unbarred) with a stratified
  bootstrap 95 % interval; for the Hoyle et al. (2011) volunteer bars that fit the 19.2" stamp
  (<= 15"): the fraction measured, Pearson r, RMSE, median relative error and median ratio
  (ours / volunteers), overall and per length bin, for ``bar_length_arcsec`` and the moments,
  bhambra2022 and direct columns; how often the reported uncertainty covers the difference (1 and
  2 sigma; also with the volunteers' spread added in quadrature); a scatter figure like Bhambra
  et al. (2022) Fig. 4; and, for diagnosis, the same volunteer bars again with ``--p-bar-min 0``
  (every bar gets a length whatever its ``p_bar``: the length measurement without the detector
  in front of it);
* ``sdss-gz1-morphology``: ROC AUC of ``p_smooth`` (ellipticals against discs = spirals and
  edge-on), ``p_edge_on`` (edge-on against ellipticals and spirals) and ``p_spiral`` (spirals
  against ellipticals), each with a bootstrap interval, and the confusion matrix at 0.5;
* the two Spitzer IRAC galaxies of ``../shared/data/real``: ``p_bar`` and every length column
  against the published bar sizes (lengths measured with ``--p-bar-min 0``, so that they are
  given whatever ``p_bar`` is);
* **the FITS path on real galaxies** (``--no-fits`` leaves it out): the same held-out galaxies
  again as linear single-band FITS files, the r band recovered from each JPEG by undoing its
  asinh display stretch (:func:`survey_bars.training.realdata.linear_from_display`, Lupton et
  al. 2004 with Q = 8), with a TAN WCS (0.3"/px at the galaxy's position; the Galaxy Zoo 1
  images, whose scale is unknown, get a nominal 0.3"/px and only their morphology is scored).
  What a user's survey FITS cutouts of these galaxies would show, with the JPEG's 8-bit
  quantisation: the bar AUC, the length figures and the GZ1 AUCs again.

Run::

    python -m benchmarks.real                 # the test fold; writes RESULTS.md's `real` block
    python -m benchmarks.real --max-n 60      # a quick look (a deterministic subsample)

It writes ``benchmarks/results/real.json``, the ``real`` block of ``benchmarks/RESULTS.md`` and
``docs/real_lengths.png``. ``--model DIR --out-json FILE`` scores a candidate bundle instead:
the result goes to ``FILE``, the figure beside it (``FILE`` with a ``.png`` suffix) and the
block is printed. Work files (input catalogues, catalogues) go to ``$SURVEY_BARS_BENCH_DIR/real``
(default ``/tmp/survey-bars-bench/real``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import save, table
from survey_bars.training.realdata import MAX_HOYLE_ARCSEC  # the Hoyle bars that fit the 19.2" stamps

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("SURVEY_BARS_BENCH_DIR", "/tmp/survey-bars-bench")) / "real"
#: length bins (arcsec) of the per-bin table
LENGTH_BINS = (0.0, 6.0, 9.0, 12.0, 15.0)
#: (name, length column, uncertainty column or None)
LENGTH_METHODS = (
    ("default", "bar_length_arcsec", "bar_length_err_arcsec"),
    ("moments", "bar_length_moments_arcsec", "bar_length_moments_err_arcsec"),
    ("bhambra2022", "bar_length_bhambra2022_arcsec", None),
    ("direct", "bar_length_direct_arcsec", None),
)
N_BOOT = 1000


# ----------------------------------------------------------------------------- metrics


def auc_with_interval(score, label, n_boot=N_BOOT, seed=0):
    """ROC AUC with a stratified bootstrap 95 % interval, over the rows with a finite score.

    Parameters
    ----------
    score : array_like
        Scores, higher meaning positive (NaN rows are left out).
    label : array_like of bool
        True labels.
    n_boot : int, optional
        Bootstrap replicates.
    seed : int, optional
        Seed of the resampling.

    Returns
    -------
    dict
        ``n``, ``n_pos``, ``auc`` and ``ci95`` (``[low, high]``; NaNs when a class is absent).
    """
    from survey_bars.training.metrics import roc_auc, roc_auc_interval

    s = np.asarray(score, float)
    y = np.asarray(label, bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    auc = roc_auc(s, y)
    ci = roc_auc_interval(s, y, n_boot=n_boot, seed=seed) if np.isfinite(auc) else (float("nan"), float("nan"))
    return {"n": int(ok.sum()), "n_pos": int(y.sum()), "auc": float(auc), "ci95": [float(ci[0]), float(ci[1])]}


def length_metrics(pred, true):
    """Agreement of measured lengths with reference lengths.

    Parameters
    ----------
    pred : array_like
        Our lengths (NaN where not measured).
    true : array_like
        Reference lengths (rows with a non-finite or non-positive one are left out).

    Returns
    -------
    dict
        ``n`` (references), ``n_measured``, ``frac_measured``, ``pearson_r``, ``rmse_arcsec``,
        ``median_rel_err`` (median of ``|pred - true| / true``) and ``median_ratio`` (median of
        ``pred / true``), over the measured rows (NaN when too few).
    """
    p = np.asarray(pred, float)
    t = np.asarray(true, float)
    ref = np.isfinite(t) & (t > 0)
    m = ref & np.isfinite(p)
    n, k = int(ref.sum()), int(m.sum())
    pm, tm = p[m], t[m]
    r = float("nan")
    if k > 2 and np.std(pm) > 0 and np.std(tm) > 0:
        r = float(np.corrcoef(pm, tm)[0, 1])
    return {
        "n": n,
        "n_measured": k,
        "frac_measured": float(k / n) if n else float("nan"),
        "pearson_r": r,
        "rmse_arcsec": float(np.sqrt(np.mean((pm - tm) ** 2))) if k else float("nan"),
        "median_rel_err": float(np.median(np.abs(pm - tm) / tm)) if k else float("nan"),
        "median_ratio": float(np.median(pm / tm)) if k else float("nan"),
    }


def binned_length_metrics(pred, true, edges=LENGTH_BINS):
    """:func:`length_metrics` per bin of the reference length.

    Parameters
    ----------
    pred, true : array_like
        As for :func:`length_metrics`.
    edges : sequence of float
        Bin edges; a bin is ``lo <= true < hi`` (the last one includes ``hi``).

    Returns
    -------
    list of dict
        One per bin, with ``bin`` (e.g. ``'6-9'``) added.
    """
    p = np.asarray(pred, float)
    t = np.asarray(true, float)
    out = []
    for j, (lo, hi) in enumerate(itertools.pairwise(edges)):
        last = j == len(edges) - 2
        sel = (t >= lo) & ((t <= hi) if last else (t < hi))
        out.append({"bin": f"{lo:g}-{hi:g}", **length_metrics(p[sel], t[sel])})
    return out


def ratio_interval(pred, true, n_boot=N_BOOT, seed=0):
    """Bootstrap 95 % intervals of the median ratio and of Pearson r over the measured rows.

    Parameters
    ----------
    pred, true : array_like
        As for :func:`length_metrics`.
    n_boot : int, optional
        Replicates.
    seed : int, optional
        Seed.

    Returns
    -------
    dict
        ``median_ratio_ci95`` and ``pearson_r_ci95`` (``[low, high]``, NaNs with < 3 rows).
    """
    p = np.asarray(pred, float)
    t = np.asarray(true, float)
    m = np.isfinite(p) & np.isfinite(t) & (t > 0)
    pm, tm = p[m], t[m]
    nan2 = [float("nan"), float("nan")]
    if m.sum() < 3:
        return {"median_ratio_ci95": nan2, "pearson_r_ci95": nan2}
    rng = np.random.default_rng(seed)
    ratios, rs = [], []
    for _ in range(n_boot):
        i = rng.integers(0, len(pm), len(pm))
        ratios.append(np.median(pm[i] / tm[i]))
        if np.std(pm[i]) > 0 and np.std(tm[i]) > 0:
            rs.append(np.corrcoef(pm[i], tm[i])[0, 1])
    q = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else nan2
    return {"median_ratio_ci95": q(ratios), "pearson_r_ci95": q(rs)}


def coverage(pred, err, true, extra_sigma=None):
    """How often the stated uncertainty covers the difference from the reference.

    Parameters
    ----------
    pred, err, true : array_like
        Our lengths, their uncertainties and the reference lengths.
    extra_sigma : array_like, optional
        An uncertainty of the reference, added to ``err`` in quadrature.

    Returns
    -------
    dict
        ``n`` (rows with finite values and a positive total sigma), ``within_1sigma`` and
        ``within_2sigma`` (0.683 and 0.954 for Gaussian errors of the stated size) and
        ``median_abs_pull`` (0.674).
    """
    p = np.asarray(pred, float)
    e = np.asarray(err, float)
    t = np.asarray(true, float)
    if extra_sigma is not None:
        x = np.asarray(extra_sigma, float)
        e = np.sqrt(e**2 + np.where(np.isfinite(x), x, 0.0) ** 2)
    ok = np.isfinite(p) & np.isfinite(e) & (e > 0) & np.isfinite(t)
    if not ok.any():
        return {"n": 0, "within_1sigma": float("nan"), "within_2sigma": float("nan"), "median_abs_pull": float("nan")}
    pull = np.abs(p[ok] - t[ok]) / e[ok]
    return {"n": int(ok.sum()), "within_1sigma": float((pull <= 1).mean()), "within_2sigma": float((pull <= 2).mean()),
            "median_abs_pull": float(np.median(pull))}


#: rows and columns of the morphology confusion matrix
TRUE_CLASSES = ("elliptical", "spiral", "edge_on")
PRED_CLASSES = ("smooth", "edge_on", "disc")


def predicted_morph(p_smooth, p_edge_on, threshold=0.5):
    """The class a catalogue user reads off at a threshold.

    Parameters
    ----------
    p_smooth, p_edge_on : array_like
        The catalogue's probabilities.
    threshold : float, optional
        Default 0.5.

    Returns
    -------
    numpy.ndarray of str
        ``smooth`` where ``p_smooth >= threshold``, else ``edge_on`` where ``p_edge_on >=
        threshold``, else ``disc`` (a face-on disc); ``none`` where ``p_smooth`` is NaN.
    """
    ps = np.asarray(p_smooth, float)
    pe = np.asarray(p_edge_on, float)
    out = np.where(ps >= threshold, "smooth", np.where(pe >= threshold, "edge_on", "disc")).astype(object)
    out[~np.isfinite(ps)] = "none"
    return out


def confusion(true_class, pred_class):
    """Counts of (true, predicted) classes.

    Parameters
    ----------
    true_class : array_like of str
        True classes (rows not in :data:`TRUE_CLASSES` are left out).
    pred_class : array_like of str
        Predicted classes (from :func:`predicted_morph`; rows not in :data:`PRED_CLASSES` are
        left out).

    Returns
    -------
    dict
        ``{true: {pred: count}}`` over :data:`TRUE_CLASSES` x :data:`PRED_CLASSES`.
    """
    t = np.asarray(true_class, object)
    p = np.asarray(pred_class, object)
    return {tc: {pc: int(((t == tc) & (p == pc)).sum()) for pc in PRED_CLASSES} for tc in TRUE_CLASSES}


def morphology_metrics(p_smooth, p_edge_on, p_spiral, morph, n_boot=N_BOOT):
    """The Galaxy Zoo 1 scores.

    Parameters
    ----------
    p_smooth, p_edge_on, p_spiral : array_like
        The catalogue's probabilities.
    morph : array_like of str
        ``elliptical``, ``spiral``, ``edge_on`` (others are left out).
    n_boot : int, optional
        Bootstrap replicates of the intervals.

    Returns
    -------
    dict
        ``p_smooth`` (ellipticals against spirals + edge-on), ``p_edge_on`` (edge-on against
        ellipticals + spirals), ``p_spiral`` (spirals against ellipticals): each
        :func:`auc_with_interval`; ``confusion`` at 0.5; ``median_p_smooth`` per class.
    """
    ps, pe, psp = (np.asarray(v, float) for v in (p_smooth, p_edge_on, p_spiral))
    m = np.asarray(morph, object)
    ell, spi, edge = m == "elliptical", m == "spiral", m == "edge_on"
    scored = ell | spi | edge
    res = {
        "p_smooth": auc_with_interval(ps[scored], ell[scored], n_boot=n_boot),
        "p_edge_on": auc_with_interval(pe[scored], edge[scored], n_boot=n_boot),
        "p_spiral": auc_with_interval(psp[ell | spi], spi[ell | spi], n_boot=n_boot),
        "confusion": confusion(m, predicted_morph(ps, pe)),
        "median_p_smooth": {c: float(np.nanmedian(ps[m == c])) if np.isfinite(ps[m == c]).any() else float("nan") for c in TRUE_CLASSES},
    }
    return res


# ----------------------------------------------------------------------------- running


def subsample(df, max_n, seed=0):
    """A deterministic subsample of at most ``max_n`` rows (all rows when ``max_n`` is None)."""
    if max_n is None or len(df) <= max_n:
        return df.reset_index(drop=True)
    idx = np.sort(np.random.default_rng(seed).choice(len(df), size=max_n, replace=False))
    return df.iloc[idx].reset_index(drop=True)


def write_linear_fits(df, out_dir, pixel_scale=None):
    """Write each JPEG of ``df`` as a linear r-band FITS file (see the module docstring); the table of the copies.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of :func:`survey_bars.training.realdata.load_gz2_bars` or ``load_gz1_morphology``.
    out_dir : pathlib.Path
        Receives ``<stem>.fits`` per row.
    pixel_scale : float, optional
        The WCS scale (arcsec/px) for rows without a ``pixel_scale`` column (the GZ1 images: a
        nominal scale, so that the files read; their lengths are not scored).

    Returns
    -------
    pandas.DataFrame
        ``df`` with ``file`` pointing at the FITS copies.
    """
    from survey_bars.training.realdata import LUPTON_Q
    from survey_bars.training.realdata import write_linear_fits as write_one

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for _, r in df.iterrows():
        scale = float(r["pixel_scale"]) if "pixel_scale" in r and np.isfinite(r["pixel_scale"]) else float(pixel_scale)
        files.append(write_one(r["file"], out_dir / (Path(r["file"]).stem + ".fits"), LUPTON_Q, "r", pixel_scale=scale,
                               ra=r["ra"] if "ra" in r else None, dec=r["dec"] if "dec" in r else None))
    out = df.copy()
    out["file"] = files
    return out


def run_process(client, out, options, catalogue=None, inputs=()):
    """``survey_bars.cluster.process`` on the given client; the catalogue as a DataFrame, keyed by file name."""
    from survey_bars.cluster import process

    summary = process(list(inputs), str(out), client=client, catalogue=str(catalogue) if catalogue else None, options=options,
                      overwrite=True, progress=False)
    print(summary, flush=True)
    cat = pd.read_parquet(out)
    cat["name"] = [os.path.basename(f) for f in cat["file"]]
    return cat, summary


def join(labels, cat):
    """The labels with their catalogue rows (by file name); rows the catalogue lacks get NaNs."""
    lab = labels.copy()
    lab["name"] = [os.path.basename(f) for f in lab["file"]]
    keep = [c for c in cat.columns if c not in ("file", "object_id", "ra", "dec", "redshift")]
    return lab.merge(cat[keep], on="name", how="left", validate="one_to_one")


def flag_names(value):
    """Names of the quality flags set in ``value``."""
    from survey_bars.flags import Flag

    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return []
    return [f.name for f in Flag if int(value) & int(f)]


def length_scores(d):
    """Every length method against the Hoyle bars that fit the stamp (<= 15"), in a joined table.

    Returns
    -------
    dict
        ``{method: {"column", "overall" (with bootstrap intervals), "bins", "coverage",
        "coverage_with_volunteer_spread"}}`` (the coverage only for methods with an uncertainty).
    """
    hoyle = d["hoyle_bar_length_arcsec"].astype(float).to_numpy()
    fits = np.isfinite(hoyle) & (hoyle <= MAX_HOYLE_ARCSEC)
    spread = (d["hoyle_length_stdev_frac"].astype(float) * d["hoyle_bar_length_arcsec"].astype(float)).to_numpy()
    methods = {}
    for name, col, errcol in LENGTH_METHODS:
        pred = d[col].astype(float).to_numpy()
        m = {"column": col, "overall": length_metrics(pred[fits], hoyle[fits]), "bins": binned_length_metrics(pred[fits], hoyle[fits])}
        m["overall"].update(ratio_interval(pred[fits], hoyle[fits]))
        if errcol is not None:
            err = d[errcol].astype(float).to_numpy()
            m["coverage"] = coverage(pred[fits], err[fits], hoyle[fits])
            m["coverage_with_volunteer_spread"] = coverage(pred[fits], err[fits], hoyle[fits], extra_sigma=spread[fits])
        methods[name] = m
    return methods


def gz2_scores(d):
    """All the sdss-gz2-bars figures of a joined table (:func:`join`)."""
    from survey_bars.flags import Flag

    ok = (d["status"] == "ok").to_numpy()
    has_bar = d["has_bar"].astype("float").to_numpy()
    lab = np.isfinite(has_bar)
    pbar = d["p_bar"].astype(float).to_numpy()
    res = {"n": len(d), "n_ok": int(ok.sum()), "n_barred": int((has_bar == 1).sum()), "n_unbarred": int((has_bar == 0).sum())}
    res["bar_auc"] = auc_with_interval(pbar[lab], has_bar[lab] == 1)
    res["median_p_bar"] = {"barred": float(np.nanmedian(pbar[has_bar == 1])) if (has_bar == 1).any() else float("nan"),
                           "unbarred": float(np.nanmedian(pbar[has_bar == 0])) if (has_bar == 0).any() else float("nan")}
    says = pbar >= 0.5
    res["accuracy_at_0.5"] = float(((says & (has_bar == 1)) | (~says & (has_bar == 0)))[lab & np.isfinite(pbar)].mean()) if (lab & np.isfinite(pbar)).any() else float("nan")
    length = d["bar_length_arcsec"].astype(float).to_numpy()
    res["unbarred_given_a_length"] = float(np.isfinite(length[has_bar == 0]).mean()) if (has_bar == 0).any() else float("nan")

    hoyle = d["hoyle_bar_length_arcsec"].astype(float).to_numpy()
    fits = np.isfinite(hoyle) & (hoyle <= MAX_HOYLE_ARCSEC)
    res["n_hoyle"] = int(np.isfinite(hoyle).sum())
    res["n_hoyle_fit"] = int(fits.sum())
    res["lengths"] = length_scores(d)
    # why the Hoyle bars that fit are not measured
    flags = d["quality_flags"].fillna(0).astype(np.int64).to_numpy()
    notm = fits & ~np.isfinite(length)
    res["hoyle_not_measured"] = {
        "n": int(notm.sum()),
        "error_rows": int((notm & ~ok).sum()),
        "p_bar_below_0.5": int((notm & ok & (pbar < 0.5)).sum()),
        "p_bar_at_least_0.5_no_length": int((notm & ok & (pbar >= 0.5)).sum()),
    }
    res["hoyle_fit_truncated_frac"] = float(((flags & int(Flag.TRUNCATED)) != 0)[fits].mean()) if fits.any() else float("nan")
    res["hoyle_fit_median_p_bar"] = float(np.nanmedian(pbar[fits])) if fits.any() else float("nan")
    return res


def gz1_scores(d):
    """All the sdss-gz1-morphology figures of a joined table (:func:`join`)."""
    ok = (d["status"] == "ok").to_numpy()
    res = {"n": len(d), "n_ok": int(ok.sum()), "classes": {str(k): int(v) for k, v in d["morph"].value_counts().items()}}
    res.update(morphology_metrics(d["p_smooth"].astype(float), d["p_edge_on"].astype(float), d["p_spiral"].astype(float),
                                  d["morph"].to_numpy(object)))
    return res


def spitzer_rows(cat):
    """The Spitzer galaxies' rows against their references."""
    from survey_bars.training.realdata import SPITZER_REFERENCES

    rows = []
    for _, r in cat.sort_values("name").iterrows():
        stem = r["name"].split(".")[0]
        ref = SPITZER_REFERENCES.get(stem, {})
        rl = ref.get("full_length_arcsec", float("nan"))
        row = {"file": r["name"], "galaxy": ref.get("galaxy", stem), "status": r["status"], "p_bar": _f(r.get("p_bar")),
               "reference_arcsec": rl, "reference_lower_limit": bool(ref.get("lower_limit", False)), "reference": ref.get("reference", ""),
               "quality_flags": flag_names(r.get("quality_flags"))}
        for name, col, errcol in LENGTH_METHODS:
            v = _f(r.get(col))
            row[col] = v
            row[f"{name}_ratio"] = v / rl if np.isfinite(v) and np.isfinite(rl) else float("nan")
            if errcol:
                row[errcol] = _f(r.get(errcol))
        rows.append(row)
    return rows


def _f(v):
    try:
        return float(v) if v is not None and not pd.isna(v) else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def bundle_note(card, folds):
    """What the bundle's card says it learned from, against the scored folds.

    Returns
    -------
    (str, bool)
        A sentence for the report, and True when the scored folds are held out from the
        bundle's training as far as its card says.
    """
    from survey_bars.training.realdata import SPLIT_ID

    training = card.get("training") or {}
    real = training.get("real") if isinstance(training, dict) else None
    name = f"`{card.get('name', '?')}` {card.get('version', '?')}"
    # a length fit on real bars (calibrate_real), or a length head that learned real lengths
    # (calibrate_head's real_training), must not have seen the scored folds either
    fits = [c[k] for c in (card.get("calibration") or {}).values() if isinstance(c, dict)
            for k in ("real", "real_training") if c.get(k)]
    for fit in fits:
        bad = sorted(set(int(f) for f in fit.get("folds", [])) & set(folds))
        if fit.get("split") != SPLIT_ID or bad:
            return (f"WARNING: bundle {name}'s lengths were fitted on real-dev folds {fit.get('folds')} of split "
                    f"{fit.get('split')!r}; the scored folds {sorted(folds)} are not held out from that fit."), False
    if real:
        used = sorted(int(f) for f in real.get("folds", []))
        split = real.get("split", "?")
        overlap = sorted(set(used) & set(folds))
        if split != SPLIT_ID or overlap:
            return (f"WARNING: bundle {name} trained on real-dev folds {used} of split {split!r}; the scored folds {sorted(folds)} "
                    "are not held out from it, so these are not held-out figures."), False
        return f"Bundle {name} trained on real-dev folds {used} of this split (its card says), never on the scored fold(s) {sorted(folds)}.", True
    text = json.dumps(training).lower()
    if any(s in text for s in ("real-dev", "sdss-gz2", "sdss-gz1", "galaxy zoo", "gz2", "gz1")):
        return (f"WARNING: bundle {name}'s card mentions real labelled data without recording its folds (`training.real`); "
                "it cannot be shown that the scored fold was held out."), False
    return f"Bundle {name} trained on simulations only (its card lists no real data): it never saw any of these galaxies.", True


def scatter_figure(d, res, path, d_all=None):
    """Ours against the volunteers' bar lengths, one panel per method (cf. Bhambra et al. 2022, Fig. 4).

    ``d`` is the joined table of the default run; ``d_all`` (optional) that of the run with
    ``--p-bar-min 0``, whose lengths of the bars that the default run left unmeasured are drawn
    as small open circles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hoyle = d["hoyle_bar_length_arcsec"].astype(float).to_numpy()
    xerr = (d["hoyle_length_stdev_frac"].astype(float) * d["hoyle_bar_length_arcsec"].astype(float)).to_numpy()
    has = np.isfinite(hoyle)
    fits = has & (hoyle <= MAX_HOYLE_ARCSEC)
    ys = [d[col].astype(float).to_numpy() for _, col, _ in LENGTH_METHODS]
    extra = {}
    if d_all is not None and len(d_all):
        h_all = d_all["hoyle_bar_length_arcsec"].astype(float).to_numpy()
        default_measured = set(d.loc[np.isfinite(d["bar_length_arcsec"].astype(float)), "name"])
        new = ~d_all["name"].isin(default_measured).to_numpy() & np.isfinite(h_all)
        extra = {col: (h_all[new], d_all[col].astype(float).to_numpy()[new]) for _, col, _ in LENGTH_METHODS}
    allv = np.concatenate([hoyle[has]] + [y[has & np.isfinite(y)] for y in ys] + [v[np.isfinite(v)] for _, v in extra.values()])
    hi = max(float(np.nanpercentile(allv, 99.5)) * 1.05 if allv.size else 20.0, 20.0)
    ncol = 2
    nrow = -(-len(LENGTH_METHODS) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 5.2 * nrow), squeeze=False, constrained_layout=True)
    fmt = lambda v: "n/a" if not np.isfinite(v) else f"{v:.2f}"
    for ax, (name, col, errcol), y in zip(axes.ravel(), LENGTH_METHODS, ys):
        yerr = d[errcol].astype(float).to_numpy() if errcol else None
        sel = fits & np.isfinite(y)
        out = has & ~fits & np.isfinite(y)
        if col in extra:
            hx, hy = extra[col]
            ax.scatter(hx, hy, s=9, facecolors="none", edgecolors="tab:orange", alpha=0.6, lw=0.7,
                       label="p_bar < 0.5: length with --p-bar-min 0")
        ax.errorbar(hoyle[sel], y[sel], xerr=xerr[sel], yerr=None if yerr is None else yerr[sel], fmt="o", ms=4, alpha=0.8,
                    elinewidth=0.6, capsize=0, color="tab:blue", label=f'measured by default, Hoyle <= {MAX_HOYLE_ARCSEC:g}"')
        if out.any():
            ax.scatter(hoyle[out], y[out], s=14, facecolors="none", edgecolors="0.4", label='Hoyle > 15" (not scored)')
        ax.plot([0, hi], [0, hi], "k-", lw=1, label="one to one")
        ax.axvline(MAX_HOYLE_ARCSEC, color="0.6", ls=":", lw=1)
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_aspect("equal")
        ax.set_xlabel("volunteers (Hoyle et al. 2011) [arcsec]")
        ax.set_ylabel(f"{col} [arcsec]")
        m = res["lengths"][name]["overall"]
        ax.set_title(f"{name}: r={fmt(m['pearson_r'])}, median ratio={fmt(m['median_ratio'])}, measured {m['n_measured']}/{m['n']}",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.ravel()[len(LENGTH_METHODS):]:
        ax.set_visible(False)
    fig.suptitle("sdss-gz2-bars, held-out fold: bar lengths against the Galaxy Zoo volunteers", fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- report


def _fmt(v, nd=3):
    if v is None:
        return "n/a"
    if isinstance(v, (float, np.floating)):
        return "n/a" if not np.isfinite(v) else f"{v:.{nd}f}"
    return str(v)


def _ci(a):
    return f"{_fmt(a['auc'])} ({_fmt(a['ci95'][0])}-{_fmt(a['ci95'][1])})"


def _overall_table(lengths):
    head = ["method (column)", "measured", "Pearson r (95 %)", "RMSE [\"]", "median rel. err", "median ratio ours/volunteers (95 %)"]
    rows = []
    for name, m in lengths.items():
        o = m["overall"]
        rows.append([f"{name} (`{m['column']}`)", f"{o['n_measured']}/{o['n']} ({_fmt(o['frac_measured'], 2)})",
                     f"{_fmt(o['pearson_r'])} ({_fmt(o['pearson_r_ci95'][0], 2)}-{_fmt(o['pearson_r_ci95'][1], 2)})",
                     _fmt(o["rmse_arcsec"], 2), _fmt(o["median_rel_err"]),
                     f"{_fmt(o['median_ratio'])} ({_fmt(o['median_ratio_ci95'][0], 2)}-{_fmt(o['median_ratio_ci95'][1], 2)})"])
    return table(head, rows)


def markdown(info, gz2, gz1, spitzer, fig_link, fits_res=None):
    md = [
        (f"Real galaxies that the scored bundle never trained on: fold(s) {info['folds_text']} of 5 of `../shared/data/real-dev`, "
         f"split by sha256 of the SDSS objid, else the file name (`{info['split_id']}`, `survey_bars.training.realdata`; folds 0-3 are for "
         f"training, tuning and calibration). {info['bundle_note']}"),
        "",
        (f"Scored through `survey-bars process` (`survey_bars.cluster.process`, a 2-worker LocalCluster, JPEGs read directly, "
         f"pixel scale and position from an input catalogue), default options: `--method {info['method']}`, `--p-bar-min 0.5`, "
         f"SmoothGrad {info['samples']} samples"
         + (f", `--length-frame {info['length_frame']}`." if info.get("length_frame", "auto") != "auto" else ".")
         + (f" Subsample: at most {info['max_n']} galaxies per set (`--max-n`)." if info["max_n"] else "")),
    ]
    if gz2:
        a = gz2["bar_auc"]
        md += ["", (f"**sdss-gz2-bars** (64 x 64 SDSS gri JPEGs at 0.3\"/px): {gz2['n']} galaxies ({gz2['n_barred']} GZ2-barred, "
                    f"{gz2['n_unbarred']} unbarred; {gz2['n_ok']} processed ok). Bar ROC AUC (`p_bar`) **{_ci(a)}** (95 % bootstrap); "
                    f"accuracy at 0.5 {_fmt(gz2['accuracy_at_0.5'])}; median `p_bar` {_fmt(gz2['median_p_bar']['barred'])} (barred) against "
                    f"{_fmt(gz2['median_p_bar']['unbarred'])} (unbarred); {_fmt(gz2['unbarred_given_a_length'])} of the unbarred get a length.")]
        hm = gz2["hoyle_not_measured"]
        md += ["", (f"Bar lengths against the Galaxy Zoo volunteers (Hoyle et al. 2011): {gz2['n_hoyle']} bars, {gz2['n_hoyle_fit']} of "
                    f"them <= {MAX_HOYLE_ARCSEC:g}\" (the ones that fit the 19.2\" stamp; the rest are not scored). Of those, {hm['n']} get no "
                    f"length: {hm['p_bar_below_0.5']} have `p_bar` < 0.5, {hm['p_bar_at_least_0.5_no_length']} have `p_bar` >= 0.5 but no "
                    f"measurement, {hm['error_rows']} error rows; median `p_bar` of these bars {_fmt(gz2['hoyle_fit_median_p_bar'])}; "
                    f"{_fmt(gz2['hoyle_fit_truncated_frac'])} are flagged TRUNCATED."), ""]
        md += [_overall_table(gz2["lengths"]), "", "Per bin of the volunteers' length (arcsec):", ""]
        rows = []
        for name, m in gz2["lengths"].items():
            for b in m["bins"]:
                rows.append([name, b["bin"], f"{b['n_measured']}/{b['n']}", _fmt(b["pearson_r"]), _fmt(b["rmse_arcsec"], 2),
                             _fmt(b["median_rel_err"]), _fmt(b["median_ratio"])])
        md += [table(["method", "volunteers [\"]", "measured", "Pearson r", "RMSE [\"]", "median rel. err", "median ratio"], rows)]
        cov_rows = []
        for name, m in gz2["lengths"].items():
            if "coverage" in m:
                c, cv = m["coverage"], m["coverage_with_volunteer_spread"]
                cov_rows.append([name, c["n"], _fmt(c["within_1sigma"]), _fmt(c["within_2sigma"]), _fmt(c["median_abs_pull"]),
                                 _fmt(cv["within_1sigma"]), _fmt(cv["within_2sigma"]), _fmt(cv["median_abs_pull"])])
        md += ["", ("Uncertainties: the share of |ours - volunteers| within 1 and 2 sigma (0.683 and 0.954 if the errors were "
                    "Gaussian and of the stated size; median |pull| 0.674), with our sigma alone and with the volunteers' spread "
                    "(`hoyle_length_stdev_frac` x length) added in quadrature:"), "",
               table(["method", "n", "1 sigma", "2 sigma", "median pull", "1 sigma (+ volunteers)", "2 sigma (+ volunteers)",
                      "median pull (+ volunteers)"], cov_rows)]
        if gz2.get("lengths_p_bar_min_0"):
            l0 = gz2["lengths_p_bar_min_0"]
            cov0 = "; ".join(f"{n} {_fmt(m['coverage']['within_1sigma'], 2)} / {_fmt(m['coverage']['within_2sigma'], 2)}"
                             for n, m in l0.items() if "coverage" in m)
            md += ["", ("The length measurement without the detector in front of it (for diagnosis; not what the catalogue "
                        "gives by default): the same volunteer bars processed again with `--p-bar-min 0`, so that every one gets "
                        f"a length whatever its `p_bar`. Within 1 / 2 sigma: {cov0}."), "", _overall_table(l0)]
    if gz1:
        md += ["", (f"**sdss-gz1-morphology** (423 x 423 SDSS colour JPEGs, no pixel scale: morphology only): {gz1['n']} galaxies "
                    f"({', '.join(f'{v} {k}' for k, v in gz1['classes'].items())}; mergers and don't-know are not scored; {gz1['n_ok']} "
                    "processed ok). ROC AUC with 95 % bootstrap intervals:"), "",
               table(["score", "positives against", "n (positives)", "ROC AUC (95 %)"], [
                   ["`p_smooth`", "ellipticals against discs (spirals + edge-on)", f"{gz1['p_smooth']['n']} ({gz1['p_smooth']['n_pos']})", _ci(gz1["p_smooth"])],
                   ["`p_edge_on`", "edge-on against ellipticals + spirals", f"{gz1['p_edge_on']['n']} ({gz1['p_edge_on']['n_pos']})", _ci(gz1["p_edge_on"])],
                   ["`p_spiral`", "spirals against ellipticals", f"{gz1['p_spiral']['n']} ({gz1['p_spiral']['n_pos']})", _ci(gz1["p_spiral"])],
               ]), "",
               ("Confusion at 0.5 (predicted smooth where `p_smooth` >= 0.5, else edge-on where `p_edge_on` >= 0.5, else disc); "
                f"median `p_smooth` per true class: {', '.join(f'{k} {_fmt(v)}' for k, v in gz1['median_p_smooth'].items())}:"), "",
               table(["true \\ predicted", *PRED_CLASSES], [[tc, *[gz1["confusion"][tc][pc] for pc in PRED_CLASSES]] for tc in TRUE_CLASSES])]
    if spitzer:
        md += ["", ("**Spitzer IRAC 3.6 um** (`../shared/data/real`, FITS; lengths with `--p-bar-min 0`, so they are given whatever "
                    "`p_bar` is; ratio = ours / reference full length):"), "",
               table(["galaxy", "p_bar", "bar_length [\"] (err)", "moments [\"] (err)", "bhambra2022 [\"]", "direct [\"]",
                      "ratio default / moments / bhambra / direct", "reference", "flags"],
                     [[r["galaxy"], _fmt(r["p_bar"]), f"{_fmt(r['bar_length_arcsec'], 1)} ({_fmt(r['bar_length_err_arcsec'], 1)})",
                       f"{_fmt(r['bar_length_moments_arcsec'], 1)} ({_fmt(r['bar_length_moments_err_arcsec'], 1)})",
                       _fmt(r["bar_length_bhambra2022_arcsec"], 1), _fmt(r["bar_length_direct_arcsec"], 1),
                       " / ".join(_fmt(r[f"{n}_ratio"], 2) for n, _, _ in LENGTH_METHODS), r["reference"],
                       ", ".join(r["quality_flags"]) or "-"] for r in spitzer])]
    if fits_res:
        md += ["", fits_markdown(gz2, gz1, fits_res)]
    md += ["", f"Figure: {fig_link}. Wall time {info['seconds']:.0f} s ({info['process_seconds']:.0f} s in `process`)."]
    return "\n".join(md)


def fits_markdown(gz2, gz1, fits_res):
    """The FITS-path section: the same galaxies as JPEGs and as linear r-band FITS, side by side."""
    f2, f1 = fits_res.get("gz2"), fits_res.get("gz1")
    rows = []
    if gz2 and f2:
        rows.append(["GZ2 bar AUC", _ci(gz2["bar_auc"]), _ci(f2["bar_auc"])])
        for name, _, _ in LENGTH_METHODS:
            a, b = gz2["lengths"][name]["overall"], f2["lengths"][name]["overall"]
            rows.append([f"Hoyle <= {MAX_HOYLE_ARCSEC:g}\": {name}: measured, r, median rel. err, ratio",
                         f"{a['n_measured']}/{a['n']}, {_fmt(a['pearson_r'], 2)}, {_fmt(a['median_rel_err'], 2)}, {_fmt(a['median_ratio'], 2)}",
                         f"{b['n_measured']}/{b['n']}, {_fmt(b['pearson_r'], 2)}, {_fmt(b['median_rel_err'], 2)}, {_fmt(b['median_ratio'], 2)}"])
        if "coverage" in f2["lengths"]["default"]:
            rows.append(["default: within 1 / 2 sigma",
                         f"{_fmt(gz2['lengths']['default']['coverage']['within_1sigma'], 2)} / {_fmt(gz2['lengths']['default']['coverage']['within_2sigma'], 2)}",
                         f"{_fmt(f2['lengths']['default']['coverage']['within_1sigma'], 2)} / {_fmt(f2['lengths']['default']['coverage']['within_2sigma'], 2)}"])
    if gz1 and f1:
        for k in ("p_smooth", "p_edge_on", "p_spiral"):
            rows.append([f"GZ1 `{k}` AUC", _ci(gz1[k]), _ci(f1[k])])
    return "\n".join([
        ("**The FITS path on the same held-out galaxies.** Each JPEG again as a linear single-band FITS file: the r band (the "
         "green channel) with the asinh display stretch undone (Lupton et al. 2004, Q = 8; "
         "`survey_bars.training.realdata.linear_from_display`), a TAN WCS at 0.3\"/px (the GZ1 images a nominal one), "
         "through `survey-bars process` like the JPEGs. It is what a survey's FITS cutout of the galaxy shows, up to the "
         "JPEG's 8-bit quantisation and clipped cores:"), "",
        table(["", "colour JPEG", "linear r-band FITS"], rows)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", default="4", help="comma-separated folds to score (default 4, the held-out test fold)")
    ap.add_argument("--model", default=None, help="bundle directory (default: the shipped bundle)")
    ap.add_argument("--method", default="auto", help="bar measuring method of bar_length_arcsec (default auto: the bundle's)")
    ap.add_argument("--out-json", default=None, metavar="FILE",
                    help="write the result here (and the figure beside it) and print it, instead of recording it in "
                         "benchmarks/results, RESULTS.md and docs/")
    ap.add_argument("--max-n", type=int, default=None, help="at most this many galaxies per set (a deterministic subsample)")
    ap.add_argument("--root", default=None, help="the real-dev directory (default: $SURVEY_BARS_REAL_DEV or ../shared/data/real-dev)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    ap.add_argument("--workdir", default=None, help=f"work files (default {WORK})")
    ap.add_argument("--length-frame", default="auto", choices=("auto", "measured", "softened"),
                    help="survey-bars process --length-frame: the frame FITS inputs' bars are measured in (default auto, "
                         "the product's)")
    ap.add_argument("--fits", action=argparse.BooleanOptionalAction, default=True,
                    help="also score the same galaxies as linear r-band FITS files (default: yes)")
    args = ap.parse_args(argv)

    from survey_bars.cluster import local_cluster
    from survey_bars.training import realdata
    from survey_bars.inference.bundle import load_bundle
    from survey_bars.measure import resolve_method
    from survey_bars.pipeline import RunOptions

    t0 = time.time()
    folds = sorted({int(f) for f in args.folds.split(",") if f.strip()})
    bad = [f for f in folds if not 0 <= f < realdata.N_FOLDS]
    if not folds or bad:
        ap.error(f"--folds takes folds 0-{realdata.N_FOLDS - 1}; got {args.folds!r}")
    root = Path(args.root) if args.root else realdata.default_root()
    if not (root / realdata.GZ2_DIR).is_dir() and not (root / realdata.GZ1_DIR).is_dir():
        print(f"benchmarks.real: no real-dev data under {root}; nothing to score.", file=sys.stderr)
        return 1
    work = Path(args.workdir) if args.workdir else WORK
    work.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.model)
    note, held_out = bundle_note(bundle.card, folds)
    if any(f in realdata.TRAIN_FOLDS for f in folds):
        note += f" NOTE: fold(s) {[f for f in folds if f in realdata.TRAIN_FOLDS]} are training folds, not the held-out test fold."
    samples = int((bundle.smoothgrad or {}).get("samples", 16))
    method = resolve_method(bundle.card, args.method)
    options = RunOptions(model=args.model, method=args.method, length_frame=args.length_frame)

    sets = {}
    if (root / realdata.GZ2_DIR).is_dir():
        sets["gz2"] = subsample(realdata.select_folds(realdata.load_gz2_bars(root), folds), args.max_n)
    if (root / realdata.GZ1_DIR).is_dir():
        sets["gz1"] = subsample(realdata.select_folds(realdata.load_gz1_morphology(root), folds), args.max_n)
    spitzer_root = realdata.default_spitzer_root()
    spitzer_files = sorted(str(p) for p in spitzer_root.glob("*.fits")) if spitzer_root.is_dir() else []

    from distributed import Client

    joined, t_proc, summaries = {}, 0.0, {}
    cluster = local_cluster(n_workers=args.workers)
    client = Client(cluster)
    try:
        for key, df in sets.items():
            cat_csv = realdata.write_input_catalogue(df, work / f"{key}-input.csv")
            t = time.time()
            cat, summary = run_process(client, work / f"{key}.parquet", options, catalogue=cat_csv)
            t_proc += time.time() - t
            summaries[key] = dict(summary)
            joined[key] = join(df, cat)
        if "gz2" in sets and sets["gz2"]["hoyle_bar_length_arcsec"].notna().any():
            # the volunteer bars again with --p-bar-min 0: the length measurement without the detector in front of it
            hoyle_df = sets["gz2"][sets["gz2"]["hoyle_bar_length_arcsec"].notna()].reset_index(drop=True)
            cat_csv = realdata.write_input_catalogue(hoyle_df, work / "gz2-hoyle-input.csv")
            t = time.time()
            cat, summary = run_process(client, work / "gz2-hoyle-pbar0.parquet",
                                       dataclasses.replace(options, p_bar_min=0.0), catalogue=cat_csv)
            t_proc += time.time() - t
            summaries["gz2_hoyle_p_bar_min_0"] = dict(summary)
            joined["gz2_hoyle_pbar0"] = join(hoyle_df, cat)
        fits_joined = {}
        for key, df in sets.items() if args.fits else ():
            fdf = write_linear_fits(df, work / f"{key}-fits", pixel_scale=0.3)
            cat_csv = realdata.write_input_catalogue(fdf, work / f"{key}-fits-input.csv")
            t = time.time()
            cat, summary = run_process(client, work / f"{key}-fits.parquet", options, catalogue=cat_csv)
            t_proc += time.time() - t
            shutil.rmtree(work / f"{key}-fits", ignore_errors=True)  # ~0.8 GB for GZ1's 423 x 423 images
            summaries[f"{key}_fits"] = dict(summary)
            fits_joined[key] = join(fdf, cat)
        spitzer_cat = None
        if spitzer_files:
            t = time.time()
            spitzer_cat, summary = run_process(client, work / "spitzer.parquet", dataclasses.replace(options, p_bar_min=0.0),
                                               inputs=spitzer_files)
            t_proc += time.time() - t
            summaries["spitzer"] = dict(summary)
    finally:
        client.close()
        cluster.close()

    gz2 = gz2_scores(joined["gz2"]) if "gz2" in joined else None
    if gz2 and "gz2_hoyle_pbar0" in joined:
        gz2["lengths_p_bar_min_0"] = length_scores(joined["gz2_hoyle_pbar0"])
    gz1 = gz1_scores(joined["gz1"]) if "gz1" in joined else None
    spitzer = spitzer_rows(spitzer_cat) if spitzer_cat is not None else []
    fits_res = {}
    if "gz2" in fits_joined:
        fits_res["gz2"] = gz2_scores(fits_joined["gz2"])
    if "gz1" in fits_joined:
        fits_res["gz1"] = gz1_scores(fits_joined["gz1"])

    figpath = Path(args.out_json).with_suffix(".png") if args.out_json else ROOT / "docs" / "real_lengths.png"
    if gz2:
        figpath.parent.mkdir(parents=True, exist_ok=True)
        scatter_figure(joined["gz2"], gz2, figpath, d_all=joined.get("gz2_hoyle_pbar0"))
    fig_link = (str(figpath) if args.out_json else "[docs/real_lengths.png](../docs/real_lengths.png)") if gz2 else "none"
    info = {"folds": folds, "folds_text": ", ".join(str(f) for f in folds), "split_id": realdata.SPLIT_ID, "split": realdata.SPLIT_DESCRIPTION,
            "bundle_note": note, "held_out": held_out and all(f not in realdata.TRAIN_FOLDS for f in folds),
            "bundle": {"name": bundle.name, "version": bundle.version, "path": str(bundle.path)}, "method": method, "samples": samples,
            "max_n": args.max_n, "length_frame": args.length_frame, "seconds": time.time() - t0, "process_seconds": t_proc, "summaries": summaries}
    md = markdown(info, gz2, gz1, spitzer, fig_link, fits_res)
    command = "python -m benchmarks.real" + ("" if not (argv if argv is not None else sys.argv[1:]) else " " + " ".join(argv if argv is not None else sys.argv[1:]))
    save("real", {**info, "sdss_gz2_bars": gz2, "sdss_gz1_morphology": gz1, "spitzer": spitzer,
                   "linear_fits": fits_res or None}, md, command, json_path=args.out_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
