"""Calibrating saliency bar lengths on simulations and recording it in the model bundle.

The raw length of the ``moments`` measuring step is the extent of the thresholded saliency
structure; how it relates to the true bar length depends on the network's receptive field and
the threshold sweep. :func:`calibrate_bundle` simulates galaxies with known bars (a seed never
used in training), measures them without calibration, fits ``true = slope * raw + intercept``
in model-frame pixels with iterative 3-sigma clipping, and writes the fit with its fractional
scatter into the bundle card under ``calibration[method]``. The scatter enters
``bar_length_err_arcsec``.

:func:`calibrate_head` goes further for the ``head`` measuring method: it trains the learned
length head (:mod:`survey_bars.models.head`) on the SmoothGrad maps of fresh simulated bars
and adds it to the bundle as ``length_head.onnx``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

__all__ = ["measure_simulation", "fit_calibration", "calibrate_bundle", "calibrate_head"]


def measure_simulation(sim_dir, runtime, options=None, *, calibrated=False):
    """Run the pipeline in-process over a simulated directory and join the truth.

    Parameters
    ----------
    sim_dir : str
        Directory written by :func:`survey_bars.simulate.simulate` (with ``truth.parquet``).
    runtime : survey_bars.runtime.ModelRuntime
        The model.
    options : survey_bars.pipeline.RunOptions, optional
        Run settings; ``p_bar_min`` is set to 0 so every galaxy is measured.
    calibrated : bool
        Apply the bundle's calibration (False measures raw lengths).

    Returns
    -------
    pandas.DataFrame
        Catalogue columns joined with the truth columns (prefixed ``true_``), plus
        ``raw_length_model`` and ``true_length_model`` in model-frame pixels.
    """
    import dataclasses

    import pandas as pd

    from .pipeline import InputItem, RunOptions, process_items

    options = options or RunOptions()
    options = dataclasses.replace(options, p_bar_min=0.0)
    truth = pd.read_parquet(os.path.join(sim_dir, "truth.parquet"))
    items = [InputItem(file=os.path.join(sim_dir, f)) for f in truth["file"]]
    card = runtime.card
    if not calibrated:
        runtime.card = {**card, "calibration": {}}
    try:
        cat = process_items(items, options, runtime=runtime).to_pandas()
    finally:
        runtime.card = card
    t = truth.add_prefix("true_")
    df = pd.concat([cat.reset_index(drop=True), t.reset_index(drop=True)], axis=1)
    to_model = df["pixel_scale_arcsec"] * df["resample_scale"]
    df["raw_length_model"] = df["bar_length_arcsec"] / to_model
    df["true_length_model"] = df["true_bar_length_arcsec"] / to_model
    return df


def fit_calibration(raw, true, n_iter=5, clip=3.0):
    """Fit ``true = slope * raw + intercept`` with iterative sigma clipping.

    Parameters
    ----------
    raw, true : array_like
        Raw measured and true lengths (same units).
    n_iter : int
        Clipping iterations.
    clip : float
        Clipping threshold in robust standard deviations.

    Returns
    -------
    dict
        ``slope``, ``intercept``, ``scatter_frac`` (robust std of the fractional residual),
        ``n`` (points used) and ``n_clipped``.
    """
    raw = np.asarray(raw, float)
    true = np.asarray(true, float)
    ok = np.isfinite(raw) & np.isfinite(true) & (true > 0)
    x, y = raw[ok], true[ok]
    if x.size < 10:
        msg = f"Only {x.size} measured true bars: too few to calibrate. Simulate more galaxies (--n)."
        raise ValueError(msg)
    keep = np.ones(x.size, bool)
    slope, intercept = 1.0, 0.0
    for _ in range(n_iter):
        slope, intercept = np.polyfit(x[keep], y[keep], 1)
        res = y - (slope * x + intercept)
        s = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep])))
        new = np.abs(res) < clip * max(s, 1e-9)
        if (new == keep).all():
            break
        keep = new
    frac = (y[keep] - (slope * x[keep] + intercept)) / y[keep]
    scatter = 1.4826 * np.median(np.abs(frac - np.median(frac)))
    return {"slope": float(slope), "intercept": float(intercept), "scatter_frac": float(scatter), "n": int(keep.sum()), "n_clipped": int((~keep).sum())}


def calibrate_bundle(bundle_path, *, n=800, seed=90210, survey="mixed", workdir=None, method="moments", workers=1, samples=None):
    """Calibrate a bundle's saliency lengths on fresh simulations and record it in its card.

    Parameters
    ----------
    bundle_path : str
        Bundle directory (its card is rewritten).
    n : int
        Simulated galaxies (all barred discs).
    seed : int
        Simulation seed; must differ from the training seed.
    survey : str
        Survey preset or ``"mixed"``.
    workdir : str, optional
        Where to write the simulations (default: a temporary directory, removed after).
    method : str
        The measuring method to calibrate.
    workers : int
        Simulation processes.
    samples : int, optional
        SmoothGrad samples (default: the bundle's).

    Returns
    -------
    dict
        The calibration written to the card.
    """
    import shutil

    from .bars import MOMENTS_VERSION
    from .models.bundle import load_bundle, write_card
    from .pipeline import RunOptions
    from .runtime import ModelRuntime
    from .simulate import simulate

    bundle = load_bundle(bundle_path)
    _check_seed(bundle, seed, "calibration seed")
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="survey-bars-calib-")
    try:
        t0 = time.time()
        if not _reuse_simulation(workdir, n, seed):
            simulate(workdir, n, survey=survey, seed=seed, workers=workers, class_mix={"barred": 1.0})
        rt = ModelRuntime(bundle)
        df = measure_simulation(workdir, rt, RunOptions(method=method, smoothgrad_samples=samples))
        ok = (df["status"] == "ok") & df["true_has_bar"]
        cal = fit_calibration(df.loc[ok, "raw_length_model"], df.loc[ok, "true_length_model"])
        cal.update(seed=int(seed), n_simulated=int(n), survey=survey, samples=samples or (bundle.smoothgrad or {}).get("samples"),
                   noise_frac=(bundle.smoothgrad or {}).get("noise_frac"),
                   symmetrise=bool((bundle.smoothgrad or {}).get("symmetrise", False)), seconds=round(time.time() - t0, 1),
                   units="model-frame pixels")
        if method == "moments":
            cal["measurement_version"] = MOMENTS_VERSION
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    card = dict(bundle.card)
    calib = dict(card.get("calibration") or {})
    calib[method] = cal
    card["calibration"] = calib
    write_card(bundle.path, card)
    return cal


def _check_seed(bundle, seed, what):
    """Refuse a simulation seed equal to the bundle's training seed (those galaxies were trained on)."""
    if int(bundle.card.get("training", {}).get("seed", -1)) == int(seed):
        msg = f"The {what} {seed} equals the training seed; choose another (--seed)."
        raise ValueError(msg)


def _reuse_simulation(workdir, n, seed):
    """Whether ``workdir`` already holds the ``n`` barred simulations of ``seed``."""
    import pandas as pd

    truth = os.path.join(workdir, "truth.parquet")
    if not os.path.exists(truth):
        return False
    t = pd.read_parquet(truth)
    return len(t) == n and bool(t["object_id"].str.startswith(f"sim{seed}-").all()) and bool((t["class"] == "barred").all())


def calibrate_head(bundle_path, *, n=8000, seed=5150, survey="mixed", workdir=None, workers=1, epochs=30, threads=2,
                   holdout_frac=0.1, p_bar_min=0.5, log=None):
    """Train the learned length head on fresh simulations and add it to a bundle.

    Simulates ``n`` barred galaxies (a seed never used in training), makes their SmoothGrad
    maps with the bundle, keeps the bars the model detects (p_bar >= 0.5), trains a
    :class:`~survey_bars.models.head.LengthHead` on the maps of all but ``holdout_frac`` of
    them, and measures the fractional scatter of its lengths on the rest (it enters
    ``bar_length_err_arcsec`` as the calibration's ``scatter_frac`` does). The head is written
    to the bundle as ``length_head.onnx`` (checked against torch) and the card records it under
    ``calibration["head"]``. Needs torch.

    Parameters
    ----------
    bundle_path : str
        Bundle directory (a graph is added and its card rewritten).
    n : int
        Simulated barred galaxies.
    seed : int
        Simulation seed; must differ from the training seed.
    survey : str
        Survey preset or ``"mixed"``.
    workdir : str, optional
        Where the simulations go (default: a temporary directory, removed after). A simulation
        of the same ``n`` and ``seed`` found there is reused.
    workers : int
        Simulation processes.
    epochs, threads : int
        Training epochs and torch threads.
    holdout_frac : float
        Fraction of the detected bars kept out of training to measure the scatter.
    p_bar_min : float
        Bars count as detected from this p_bar (the pipeline's default threshold).
    log : callable, optional
        Progress lines (default: standard error).

    Returns
    -------
    dict
        The record written to the card's ``calibration["head"]``.
    """
    import shutil

    import numpy as np

    from .models.bundle import load_bundle, write_card
    from .models.head import HEAD_ARCH, export_head, train_head
    from .pipeline import RunOptions
    from .runtime import ModelRuntime, clear_cache
    from .simulate import simulate

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    bundle = load_bundle(bundle_path)
    _check_seed(bundle, seed, "length head's simulation seed")
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="survey-bars-head-")
    maps_dir = tempfile.mkdtemp(prefix="survey-bars-head-maps-")
    try:
        t0 = time.time()
        if not _reuse_simulation(workdir, n, seed):
            simulate(workdir, n, survey=survey, seed=seed, workers=workers, class_mix={"barred": 1.0})
        t_sim = time.time() - t0
        rt = ModelRuntime(bundle, threads=threads)
        df = measure_simulation(workdir, rt, RunOptions(save_saliency=maps_dir, method="moments"), calibrated=True)
        t_maps = time.time() - t0 - t_sim
        keep = (df["status"] == "ok") & df["true_has_bar"] & (df["p_bar"] >= p_bar_min) & np.isfinite(df["true_length_model"]) \
            & (df["true_length_model"] > 0)
        df = df[keep].reset_index(drop=True)
        if len(df) < 20:
            msg = (f"Only {len(df)} of {n} simulated barred galaxies were detected (p_bar >= {p_bar_min}): too few "
                   "to train a length head. Simulate more (-n), or check the bundle's bar detection.")
            raise ValueError(msg)
        maps = _read_maps(maps_dir, df["object_id"])
        true = df["true_length_model"].to_numpy(float)
        order = np.random.default_rng(seed).permutation(len(df))
        n_out = round(holdout_frac * len(df))
        out, fit = order[:n_out], order[n_out:]
        log(f"length head: {len(df)} detected bars, {len(fit)} to train, {len(out)} to measure the scatter")
        t1 = time.time()
        head = train_head(maps[fit], true[fit], epochs=epochs, seed=seed, threads=threads, log=log)
        t_train = time.time() - t1
        path = os.path.join(bundle.path, "length_head.onnx")
        export_err = export_head(head, path, size=maps.shape[-1], check_maps=maps[out[:64]] if len(out) else None)
        write_card(bundle.path, dict(bundle.card))  # records the new graph's hash, so the bundle loads with it
        clear_cache()
        rt = ModelRuntime(load_bundle(bundle.path), threads=threads)
        rec = {"n_simulated": int(n), "seed": int(seed), "survey": survey, "n_train": len(fit),
               "n_holdout": len(out), "epochs": int(epochs), "arch": HEAD_ARCH, "orientations": 8,
               "export_max_rel_err": float(export_err), "units": "model-frame pixels",
               "samples": (bundle.smoothgrad or {}).get("samples"), "noise_frac": (bundle.smoothgrad or {}).get("noise_frac"),
               "symmetrise": bool((bundle.smoothgrad or {}).get("symmetrise", False))}
        if len(out) >= 10:
            pred = rt.length_head(maps[out], orientations=8)
            frac = (pred - true[out]) / true[out]
            rec.update(scatter_frac=float(1.4826 * np.median(np.abs(frac - np.median(frac)))),
                       holdout_median_rel_err=float(np.median(np.abs(frac))),
                       holdout_pearson_r=float(np.corrcoef(pred, true[out])[0, 1]))
        rec.update(seconds={"simulation": round(t_sim, 1), "maps": round(t_maps, 1), "training": round(t_train, 1),
                            "total": round(time.time() - t0, 1)})
    finally:
        shutil.rmtree(maps_dir, ignore_errors=True)
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    bundle = load_bundle(bundle.path)
    card = dict(bundle.card)
    card["calibration"] = {**(card.get("calibration") or {}), "head": rec}
    write_card(bundle.path, card)
    return rec


def _read_maps(directory, object_ids):
    """The saliency maps saved by the pipeline for ``object_ids``, shape (N, S, S)."""
    import numpy as np
    from astropy.io import fits

    from .pipeline import saliency_file

    out = []
    for oid in object_ids:
        with fits.open(saliency_file(directory, oid)) as h:
            out.append(np.asarray(h[0].data, dtype=np.float32))
    return np.stack(out)


def configure_parser(parser):
    """Add the ``calibrate`` options to an argparse parser."""
    parser.add_argument("--model", required=True, help="Bundle directory to calibrate (its card is updated).")
    parser.add_argument("-n", type=int, default=None,
                        help="Simulated barred galaxies (default: 800 for moments, 8000 for head).")
    parser.add_argument("--seed", type=int, default=None,
                        help="Simulation seed, not the training seed (default: 90210 for moments, 5150 for head).")
    parser.add_argument("--survey", default="mixed")
    parser.add_argument("--method", default="moments", choices=["moments", "head"],
                        help="moments: fit the linear calibration of the moments length; head: train the learned "
                             "length head on the simulations' saliency maps and add it to the bundle (needs torch).")
    parser.add_argument("--epochs", type=int, default=30, help="Training epochs of the length head.")
    parser.add_argument("--workers", type=int, default=1, help="Simulation processes.")
    parser.add_argument("--workdir", default=None, help="Keep the simulations here.")


def run_cli(args):
    """Run ``survey-bars calibrate``; returns the exit code."""
    head = args.method == "head"
    n = args.n if args.n is not None else (8000 if head else 800)
    seed = args.seed if args.seed is not None else (5150 if head else 90210)
    try:
        if head:
            rec = calibrate_head(args.model, n=n, seed=seed, survey=args.survey, workdir=args.workdir,
                                 workers=args.workers, epochs=args.epochs)
        else:
            cal = calibrate_bundle(args.model, n=n, seed=seed, survey=args.survey, workdir=args.workdir,
                                   method=args.method, workers=args.workers)
    except ValueError as exc:
        print(f"survey-bars calibrate: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # --method head trains with torch
        print(f"survey-bars calibrate: --method head trains a network and needs {exc.name}: "
              'pip install "survey-bars[train]" (or pip install -e ".[train]" in a checkout).', file=sys.stderr)
        return 2
    if head:
        print(f"length head: trained on {rec['n_train']} maps; held-out median rel. err "
              f"{100 * rec.get('holdout_median_rel_err', float('nan')):.1f} %, scatter {100 * rec.get('scatter_frac', float('nan')):.1f} %")
        return 0
    print(f"calibration ({args.method}): slope {cal['slope']:.3f}, intercept {cal['intercept']:.2f} px, scatter {100 * cal['scatter_frac']:.1f} %, n={cal['n']}")
    return 0
