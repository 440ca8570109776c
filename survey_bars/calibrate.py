"""Calibrating saliency bar lengths on simulations and recording it in the model bundle.

The raw length of the ``moments`` measuring step is the extent of the thresholded saliency
structure; how it relates to the true bar length depends on the network's receptive field and
the threshold sweep. :func:`calibrate_bundle` simulates galaxies with known bars (a seed never
used in training), measures them without calibration, fits ``true = slope * raw + intercept``
in model-frame pixels with iterative 3-sigma clipping, and writes the fit with its fractional
scatter into the bundle card under ``calibration[method]``. The scatter enters
``bar_length_err_arcsec``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

__all__ = ["measure_simulation", "fit_calibration", "calibrate_bundle"]


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
    if int(bundle.card.get("training", {}).get("seed", -1)) == int(seed):
        msg = f"The calibration seed {seed} equals the training seed; choose another (--seed)."
        raise ValueError(msg)
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="survey-bars-calib-")
    try:
        t0 = time.time()
        truth = os.path.join(workdir, "truth.parquet")
        reuse = False
        if os.path.exists(truth):
            import pandas as pd

            t = pd.read_parquet(truth)
            reuse = len(t) == n and bool(t["object_id"].str.startswith(f"sim{seed}-").all()) and bool((t["class"] == "barred").all())
        if not reuse:
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


def configure_parser(parser):
    """Add the ``calibrate`` options to an argparse parser."""
    parser.add_argument("--model", required=True, help="Bundle directory to calibrate (its card is updated).")
    parser.add_argument("-n", type=int, default=800, help="Simulated barred galaxies.")
    parser.add_argument("--seed", type=int, default=90210, help="Simulation seed (not the training seed).")
    parser.add_argument("--survey", default="mixed")
    parser.add_argument("--method", default="moments", choices=["moments"])
    parser.add_argument("--workers", type=int, default=1, help="Simulation processes.")
    parser.add_argument("--workdir", default=None, help="Keep the simulations here.")


def run_cli(args):
    """Run ``survey-bars calibrate``; returns the exit code."""
    try:
        cal = calibrate_bundle(args.model, n=args.n, seed=args.seed, survey=args.survey, workdir=args.workdir, method=args.method, workers=args.workers)
    except ValueError as exc:
        print(f"survey-bars calibrate: {exc}", file=sys.stderr)
        return 2
    print(f"calibration ({args.method}): slope {cal['slope']:.3f}, intercept {cal['intercept']:.2f} px, scatter {100 * cal['scatter_frac']:.1f} %, n={cal['n']}")
    return 0
