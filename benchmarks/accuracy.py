"""Accuracy benchmark: the paper's table on a held-out simulated set, plus the real galaxies.

Four bar-length methods on the same galaxies, five when the bundle has a learned length head:

* ``default`` -- what ``survey-bars process`` measures by default (``--method auto``): the
  learned length head reading the SmoothGrad map when the bundle has one (``length_head.onnx``;
  the shipped bundle has), else the moments measurement;
* ``moments`` -- SmoothGrad + the rotation-invariant moments measurement, calibrated
  (``--method moments``, and the ``bar_length_moments_arcsec`` column of every catalogue; its own
  row only when the default is the head);
* ``bhambra2022`` -- SmoothGrad + the published threshold sweep, as published (uncalibrated);
* ``direct`` -- the CNN that regresses the length directly (the paper's baseline);
* ``isophote`` -- photutils isophote fitting (ellipticity peak confirmed by a drop/turn).

The held-out set uses a seed and a survey mix never used in training (training: uniform mix,
seed 1; here: SDSS-heavy, seed 777). Run::

    python -m benchmarks.accuracy --n 800

It writes ``benchmarks/results/accuracy.json``, the ``accuracy`` block of
``benchmarks/RESULTS.md`` and ``docs/accuracy.png``. To score a candidate bundle without
touching any of them, give ``--model DIR --out-json FILE``: the result goes to ``FILE``, the
figure beside it (``FILE`` with a ``.png`` suffix) and the block is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import save, table

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
MIX = {"sdss": 0.4, "decals": 0.3, "hsc": 0.2, "euclid": 0.1}


def auc(score, label):
    """ROC AUC (:func:`survey_bars.training.train.roc_auc`) over the galaxies with a finite score."""
    from survey_bars.training.metrics import roc_auc

    score = np.asarray(score, float)
    ok = np.isfinite(score)
    return roc_auc(score[ok], np.asarray(label, bool)[ok])


def simulate_heldout(workdir, n, seed):
    """Simulate the held-out set (cached in workdir)."""
    from survey_bars.simulate import simulate

    frames = []
    start = 0
    for survey, w in MIX.items():
        k = int(round(n * w))
        d = Path(workdir) / survey
        tp = d / "truth.parquet"
        if tp.exists() and len(pd.read_parquet(tp)) == k:
            t = pd.read_parquet(tp)
        else:
            t = simulate(d, k, survey=survey, seed=seed, workers=2, start_index=start, class_mix={"smooth": 0.2, "edge_on": 0.1, "disc": 0.3, "barred": 0.4})
        t = t.copy()
        t["dir"] = str(d)
        frames.append(t)
        start += k
    return frames


def method_columns(default):
    """(name, column) of the length methods in a catalogue whose ``bar_length_arcsec`` is ``default``'s.

    Every catalogue carries the moments length (``bar_length_moments_arcsec``); it gets a row of
    its own when the default is another method.
    """
    cols = [("default", "bar_length_arcsec"), ("bhambra2022", "bar_length_bhambra2022_arcsec"), ("direct", "bar_length_direct_arcsec")]
    if default != "moments":
        cols.insert(1, ("moments", "bar_length_moments_arcsec"))
    return cols


def measure(frames, rt, samples, method="auto"):
    from survey_bars.training.calibrate import measure_simulation
    from survey_bars.pipeline import RunOptions

    out = []
    for t in frames:
        df = measure_simulation(t["dir"].iloc[0], rt, RunOptions(smoothgrad_samples=samples, method=method), calibrated=True)
        out.append(df)
    return pd.concat(out, ignore_index=True)


def isophote_lengths(df, max_n, seed=0):
    """Isophote bar lengths (arcsec) and scores for a random subset of rows."""
    from survey_bars.io import read_cutout
    from survey_bars.measure.isophote import measure_isophote_bar
    from survey_bars.normalise import estimate_background, normalise

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(df), size=min(max_n, len(df)), replace=False))
    length = np.full(len(df), np.nan)
    score = np.full(len(df), np.nan)
    status = np.array([None] * len(df), dtype=object)
    for i in idx:
        row = df.iloc[i]
        if row.status != "ok":
            continue
        c = read_cutout(row.file)
        n = normalise(c.data)
        good = np.isfinite(c.data)
        plane, _ = estimate_background(np.where(good, c.data, 0.0), good)
        b = measure_isophote_bar(c.data - plane, n.x0, n.y0, n.r50_pix, psf_fwhm_pix=row.true_psf_fwhm_arcsec / c.pixel_scale_arcsec)
        length[i] = b.length_pix * c.pixel_scale_arcsec
        score[i] = b.score
        status[i] = b.status
    return length, score, status, idx


def metrics(pred, true, measured, has_bar, score, disc):
    """The paper's table row for one method."""
    tb = has_bar & measured & np.isfinite(pred) & np.isfinite(true)
    p, t = pred[tb], true[tb]
    r = float(np.corrcoef(p, t)[0, 1]) if tb.sum() > 2 else float("nan")
    rmse = float(np.sqrt(np.mean((p - t) ** 2))) if tb.sum() else float("nan")
    mre = float(np.median(np.abs(p - t) / t)) if tb.sum() else float("nan")
    return {
        "n_true_bars": int(has_bar.sum()),
        "n_measured": int(tb.sum()),
        "pearson_r": r,
        "rmse_arcsec": rmse,
        "median_rel_err": mre,
        "frac_bars_measured": float(tb.sum() / max(has_bar.sum(), 1)),
        "false_bar_rate": float((measured & ~has_bar).sum() / max((~has_bar).sum(), 1)),
        "bar_auc": auc(score, has_bar),
        "bar_auc_discs": auc(score[disc], has_bar[disc]),
    }


def missed_bars(df, says_bar):
    """Where the true bars the detector misses are: the fraction measured by bar length in PSF
    FWHMs, by the bar's share of the light and by survey (rows of ``(group, n, measured)``)."""
    bars = df.true_has_bar.to_numpy(bool)
    measured = says_bar & np.isfinite(df.bar_length_arcsec.to_numpy(float))
    d = pd.DataFrame({"res": df.true_bar_length_arcsec / df.true_psf_fwhm_arcsec, "light": df.true_bar_light_frac,
                      "survey": df.true_survey, "measured": measured})[bars]
    out = []
    for name, col, edges in (("length / PSF FWHM", "res", [0, 2, 4, 8, np.inf]), ("bar light fraction", "light", [0, 0.1, 0.15, 0.2, 1.0])):
        for lo, hi in zip(edges[:-1], edges[1:]):
            g = d[(d[col] >= lo) & (d[col] < hi)]
            out.append({"group": f"{name} {lo:g}-{hi:g}", "n": len(g), "measured": float(g.measured.mean()) if len(g) else float("nan")})
    for sv, g in d.groupby("survey"):
        out.append({"group": f"survey {sv}", "n": len(g), "measured": float(g.measured.mean())})
    return out


def coverage(pred, err, true, sel):
    """How honest the reported uncertainties are: the fractions of measured true bars within
    1 and 2 sigma of the truth (0.683 and 0.954 for Gaussian errors of the stated size) and
    the median absolute pull (0.674)."""
    ok = sel & np.isfinite(pred) & np.isfinite(err) & (err > 0) & np.isfinite(true)
    pull = np.abs(pred[ok] - true[ok]) / err[ok]
    if not ok.any():
        return {"n": 0, "within_1sigma": float("nan"), "within_2sigma": float("nan"), "median_abs_pull": float("nan")}
    return {"n": int(ok.sum()), "within_1sigma": float((pull <= 1).mean()), "within_2sigma": float((pull <= 2).mean()),
            "median_abs_pull": float(np.median(pull))}


def scatter_figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2))
    for ax, (name, (p, t, m)) in zip(axes, results.items()):
        ok = np.isfinite(p) & np.isfinite(t)
        ax.scatter(t[ok], p[ok], s=6, alpha=0.6)
        hi = np.nanpercentile(np.concatenate([t[ok], p[ok]]), 99.5) if ok.any() else 1
        ax.plot([0, hi], [0, hi], "k--", lw=1)
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("true bar length [arcsec]")
        ax.set_ylabel("measured [arcsec]")
        ax.set_title(f"{name}\nr={m['pearson_r']:.3f} RMSE={m['rmse_arcsec']:.2f}\" n={m['n_measured']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def real_galaxies(rt, samples):
    from survey_bars.pipeline import RunOptions, process_items

    files = sorted(REAL.glob("*.fits")) if REAL.is_dir() else []
    if not files:
        return []
    t = process_items([str(f) for f in files], RunOptions(smoothgrad_samples=samples, p_bar_min=0.0), runtime=rt).to_pandas()
    ref = {"ngc4643_irac1": "bar semi-major axis 49.9\" (full ~99.8\")", "ngc4608_irac1": "eps peak at ~44\" sma (full >= ~88\")"}
    rows = []
    for i, r in t.iterrows():
        rows.append({
            "object_id": r.object_id,
            "file": os.path.basename(r.file),
            "status": r.status,
            "p_bar": r.p_bar,
            "bar_length_arcsec": r.bar_length_arcsec,
            "bar_length_err_arcsec": r.bar_length_err_arcsec,
            "bar_length_moments_arcsec": r.bar_length_moments_arcsec,
            "bar_length_moments_err_arcsec": r.bar_length_moments_err_arcsec,
            "bar_length_bhambra2022_arcsec": r.bar_length_bhambra2022_arcsec,
            "bar_length_direct_arcsec": r.bar_length_direct_arcsec,
            "bar_pa_deg": r.bar_pa_deg,
            "r50_arcsec": r.r50_arcsec,
            "quality_flags": int(r.quality_flags) if pd.notna(r.quality_flags) else None,
            "reference": ref.get(Path(r.file).name.split(".")[0], ""),
        })
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--samples", type=int, default=None, help="SmoothGrad samples (default: the bundle's)")
    ap.add_argument("--sweep", default="8,16,32,64", help="SmoothGrad sample counts to compare ('' to skip)")
    ap.add_argument("--isophote-n", type=int, default=250, help="galaxies given to the (slow) isophote method")
    ap.add_argument("--workdir", default="/tmp/survey-bars-accuracy")
    ap.add_argument("--model", default=None, help="bundle directory (default: the shipped bundle)")
    ap.add_argument("--out-json", default=None, metavar="FILE",
                    help="write the result here (and the figure beside it) and print it, instead of recording "
                         "it in benchmarks/results, RESULTS.md and docs/")
    args = ap.parse_args(argv)

    from survey_bars.inference.bundle import load_bundle
    from survey_bars.measure import resolve_method
    from survey_bars.inference.runtime import ModelRuntime

    t0 = time.time()
    bundle = load_bundle(args.model)
    rt = ModelRuntime(bundle)
    samples = args.samples or int((bundle.smoothgrad or {}).get("samples", 32))
    frames = simulate_heldout(args.workdir, args.n, args.seed)
    default = resolve_method(bundle.card, "auto")
    df = measure(frames, rt, samples)
    ok = (df.status == "ok").to_numpy()
    df = df[ok].reset_index(drop=True)
    has_bar = df.true_has_bar.to_numpy(bool)
    disc = df.true_class.isin(["disc", "barred"]).to_numpy()
    true = df.true_bar_length_arcsec.to_numpy(float)
    pbar = df.p_bar.to_numpy(float)
    says_bar = pbar >= 0.5
    res, figs = {}, {}
    for name, col in method_columns(default):
        pred = df[col].to_numpy(float)
        res[name] = metrics(pred, true, says_bar, has_bar, pbar, disc)
        figs[name] = (np.where(has_bar & says_bar, pred, np.nan), true, res[name])
    # completeness against purity: the detection threshold of `survey-bars process --p-bar-min`
    thresholds = []
    for thr in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        mt = metrics(df["bar_length_arcsec"].to_numpy(float), true, pbar >= thr, has_bar, pbar, disc)
        thresholds.append({"p_bar_min": thr, **{k: mt[k] for k in ("frac_bars_measured", "false_bar_rate", "pearson_r", "rmse_arcsec", "median_rel_err", "n_measured")}})
    from survey_bars.training.metrics import roc_auc_interval

    okd = disc & np.isfinite(pbar)
    auc_ci = roc_auc_interval(pbar[okd], has_bar[okd])
    missed = missed_bars(df, says_bar)
    cov = coverage(df.bar_length_arcsec.to_numpy(float), df.bar_length_err_arcsec.to_numpy(float), true, has_bar & says_bar)
    cov_moments = (coverage(df.bar_length_moments_arcsec.to_numpy(float), df.bar_length_moments_err_arcsec.to_numpy(float), true,
                            has_bar & says_bar) if default != "moments" else None)
    t_iso = time.time()
    iso_len, iso_score, iso_status, idx = isophote_lengths(df, args.isophote_n)
    sub = np.zeros(len(df), bool)
    sub[idx] = True
    m = metrics(iso_len[sub], true[sub], (iso_status[sub] == "bar"), has_bar[sub], iso_score[sub], disc[sub])
    m["n_galaxies"] = int(sub.sum())
    m["status_counts"] = pd.Series(iso_status[sub]).value_counts().to_dict()
    m["seconds"] = round(time.time() - t_iso, 1)
    res["isophote"] = m
    figs["isophote"] = (np.where(has_bar & (iso_status == "bar"), iso_len, np.nan), true, m)
    # the same galaxies for every method (the isophote subset)
    same = {}
    for name, col in method_columns(default):
        same[name] = metrics(df[col].to_numpy(float)[sub], true[sub], says_bar[sub], has_bar[sub], pbar[sub], disc[sub])
    same["isophote"] = m

    sweep = []
    if args.sweep:
        for k in [int(x) for x in args.sweep.split(",")]:
            d = measure(frames, rt, k)
            d = d[(d.status == "ok") & d.true_has_bar]
            mm = metrics(d.bar_length_arcsec.to_numpy(float), d.true_bar_length_arcsec.to_numpy(float), d.p_bar.to_numpy(float) >= 0.5, np.ones(len(d), bool), d.p_bar.to_numpy(float), np.ones(len(d), bool))
            sweep.append({"samples": k, "pearson_r": mm["pearson_r"], "median_rel_err": mm["median_rel_err"], "rmse_arcsec": mm["rmse_arcsec"]})
    real = real_galaxies(rt, samples)

    figpath = Path(args.out_json).with_suffix(".png") if args.out_json else ROOT / "docs" / "accuracy.png"
    scatter_figure(figs, figpath)
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    head = ["method", "Pearson r", "RMSE [arcsec]", "median rel. err", "true bars measured", "false-bar rate", "bar AUC (all)", "bar AUC (discs)", "n measured"]
    rows = [[k, fmt(v["pearson_r"]), fmt(v["rmse_arcsec"]), fmt(v["median_rel_err"]), fmt(v["frac_bars_measured"]), fmt(v["false_bar_rate"]), fmt(v["bar_auc"]), fmt(v["bar_auc_discs"]), v["n_measured"]] for k, v in res.items()]
    rows_same = [[k, fmt(v["pearson_r"]), fmt(v["rmse_arcsec"]), fmt(v["median_rel_err"]), fmt(v["frac_bars_measured"]), fmt(v["false_bar_rate"]), fmt(v["bar_auc"]), fmt(v["bar_auc_discs"]), v["n_measured"]] for k, v in same.items()]
    md = [
        f"Held-out simulations: {len(df)} usable galaxies ({int(has_bar.sum())} barred), seed {args.seed}, survey mix {MIX}; SmoothGrad {samples} samples; model `{bundle.name}` {bundle.version}; the default method (`--method auto`) is `{default}`.",
        "",
        "All galaxies (isophote: a random subset of %d, see below):" % int(sub.sum()),
        "",
        table(head, rows),
        "",
        (f"Bar AUC among discs (p_bar, {int(okd.sum())} discs): {fmt(res['default']['bar_auc_discs'])}, 95 % bootstrap "
         f"interval {fmt(auc_ci[0])}-{fmt(auc_ci[1])}."),
        "",
        (f"Uncertainties of the default method (`bar_length_err_arcsec`, {cov['n']} measured true bars): "
        f"{fmt(cov['within_1sigma'])} lie within 1 sigma of the truth and {fmt(cov['within_2sigma'])} within 2 sigma "
        f"(0.683 and 0.954 if the errors are Gaussian and of the stated size); median |pull| {fmt(cov['median_abs_pull'])} (0.674)."
        + (f" The moments method's (`--method moments`): {fmt(cov_moments['within_1sigma'])} and {fmt(cov_moments['within_2sigma'])}, "
           f"median |pull| {fmt(cov_moments['median_abs_pull'])}." if cov_moments else "")),
        "",
        f"The same {int(sub.sum())} galaxies for all {len(same)} methods:",
        "",
        table(head, rows_same),
        "",
        f"Isophote outcomes: {m['status_counts']} ({m['seconds']} s).",
    ]
    md += ["", ("Detection threshold (`--p-bar-min`, default 0.5) against completeness and purity; the lengths "
                "are the default method's, calibrated as shipped:"), "",
           table(["p_bar_min", "true bars measured", "false-bar rate", "Pearson r", "RMSE [arcsec]", "median rel. err", "n measured"],
                 [[t["p_bar_min"], fmt(t["frac_bars_measured"]), fmt(t["false_bar_rate"]), fmt(t["pearson_r"]), fmt(t["rmse_arcsec"]),
                   fmt(t["median_rel_err"]), t["n_measured"]] for t in thresholds])]
    md += ["", "True bars measured (p_bar >= 0.5 and a length), by how resolved and how bright the bar is and by survey:", "",
           table(["true bars", "n", "measured"], [[m_["group"], m_["n"], fmt(m_["measured"])] for m_ in missed])]
    if sweep:
        md += ["", "SmoothGrad samples against accuracy (default method, true bars):", "", table(["samples", "Pearson r", "median rel. err", "RMSE [arcsec]"], [[s["samples"], fmt(s["pearson_r"]), fmt(s["median_rel_err"]), fmt(s["rmse_arcsec"])] for s in sweep])]
    if real:
        md += ["", "Real Spitzer 3.6 um images (`../shared/data/real`):", "", table(["galaxy", "p_bar", "bar length [\"]", "err [\"]", "moments [\"]", "moments err [\"]", "bhambra2022 [\"]", "direct [\"]", "PA [deg]", "flags", "reference"], [[r["object_id"], fmt(r["p_bar"]), fmt(r["bar_length_arcsec"]), fmt(r["bar_length_err_arcsec"]), fmt(r["bar_length_moments_arcsec"]), fmt(r["bar_length_moments_err_arcsec"]), fmt(r["bar_length_bhambra2022_arcsec"]), fmt(r["bar_length_direct_arcsec"]), fmt(r["bar_pa_deg"]), r["quality_flags"], r["reference"]] for r in real])]
    fig_link = str(figpath) if args.out_json else "[docs/accuracy.png](../docs/accuracy.png)"
    md += ["", f"Figure: {fig_link}. Wall time {time.time() - t0:.0f} s."]
    save("accuracy", {"n": len(df), "seed": args.seed, "mix": MIX, "samples": samples, "methods": res, "default_method": default, "uncertainty_coverage": cov, "uncertainty_coverage_moments": cov_moments, "bar_auc_discs_ci95": list(auc_ci), "thresholds": thresholds, "missed_bars": missed, "same_subset": same, "sweep": sweep, "real": real}, "\n".join(md), "python -m benchmarks.accuracy " + " ".join(argv if argv is not None else sys.argv[1:]),
         json_path=args.out_json)


if __name__ == "__main__":
    main()
