"""Calibrating saliency bar lengths on simulations and recording it in the model bundle.

The raw length of the ``moments`` measuring step is the extent of the thresholded saliency
structure; how it relates to the true bar length depends on the network's receptive field and
the threshold sweep. :func:`calibrate_bundle` simulates galaxies with known bars (a seed never
used in training), measures them without calibration, fits ``true = slope * raw + intercept``
in model-frame pixels with iterative 3-sigma clipping, and writes the fit with its fractional
scatter into the bundle card under ``calibration[method]``. The scatter enters
``bar_length_err_arcsec``.

:func:`calibrate_head` goes further for the ``head`` measuring method: it trains the learned
length head (:mod:`survey_bars.training.head`) on the SmoothGrad maps of fresh simulated bars
and adds it to the bundle as ``length_head.onnx``. With ``real_root`` it then fine-tunes the head
on the volunteers' bar lengths of real training folds; with ``crossfit_dir`` as well, on all of
them, with one out-of-fold head per fold for :func:`calibrate_real` (cross-fitting).

:func:`calibrate_real` fits what simulations cannot: how a method's lengths relate to the bars
that astronomers measure on real images. It measures the volunteer-measured bars (Hoyle et al.
2011) of the real-dev *training* folds, never the test fold, and records a scale (the median
ratio of the volunteers' length to the measured one) and an error scale (so that 68.3 % of them
fall within one sigma) under ``calibration[method]["real"]``. A head that learned some folds'
lengths is fitted on the other folds, or on every fold through its out-of-fold heads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from ..inference.bundle import length_definition, load_bundle, write_card
from ..inference.runtime import ModelRuntime, clear_cache
from ..io.inputs import InputItem
from ..io.saliency_maps import saliency_file
from ..measure import get_method, length_sigma, map_methods, resolve_method
from ..pipeline import RunOptions, process_items
from ..simulate import simulate

__all__ = ["measure_simulation", "fit_calibration", "fit_error_model", "calibrate_bundle", "calibrate_head", "calibrate_head_errors",
           "calibrate_real", "detected_bar_maps", "head_sources", "real_length_maps", "uncalibrated_head"]

#: How :func:`calibrate_head` fine-tunes the head on real volunteer lengths: epochs, peak
#: learning rate, batch size, and the simulated maps mixed in, which keep the head reading
#: simulated (FITS-like) maps at some cost on the real stamps; ``python -m benchmarks.head_real``
#: measures both by cross-validation on the training folds 0-3 (``benchmarks/RESULTS.md``).
REAL_HEAD = {"epochs": 30, "lr": 1e-3, "batch_size": 32, "sims": 600}
#: the frame every calibration and real fit measures bars in, and the simulated maps the length
#: head learns (``RunOptions.length_frame``): the flux's half-light radius, as for every bundle so
#: far, so that the build still makes its bundles byte for byte, whatever the pipeline's default.
CALIBRATION_FRAME = "measured"
#: the frame of the real bars' maps that fine-tune the length head (:func:`real_length_maps`): the
#: one ``survey-bars process`` measures them in by default. A JPEG has one frame, so a head that
#: learns the JPEGs alone is the same in any; a linear FITS copy cuts its galaxy (as 98 % of the
#: real-dev stamps do) and gets the wider frame, which keeps its bar inside it. Learned in the
#: model frame the copies' bars overran it, and the head forgot the simulations; learned in the
#: wider frames they were read well, but cut simulated stamps in wide frames were not, as the
#: head's simulated maps are all in :data:`CALIBRATION_FRAME` (``benchmarks/RESULTS.md``)
HEAD_REAL_FRAME = "auto"


def measure_simulation(sim_dir, runtime, options=None, *, calibrated=False):
    """Run the pipeline in-process over a simulated directory and join the truth.

    Parameters
    ----------
    sim_dir : str
        Directory written by :func:`survey_bars.simulate.simulate` (with ``truth.parquet``).
    runtime : survey_bars.inference.runtime.ModelRuntime
        The model.
    options : survey_bars.pipeline.RunOptions, optional
        Run settings; ``p_bar_min`` is set to 0 so every galaxy is measured.
    calibrated : bool
        Apply the bundle's calibration (False measures raw lengths).

    Returns
    -------
    pandas.DataFrame
        Catalogue columns joined with the truth columns (prefixed ``true_``), plus
        ``raw_length_model`` and ``true_length_model`` in model-frame pixels. The true lengths
        are the simulator's, scaled to the bundle's
        :func:`~survey_bars.inference.bundle.length_definition`.
    """
    import dataclasses

    import pandas as pd

    options = options or RunOptions()
    options = dataclasses.replace(options, p_bar_min=0.0)
    truth = pd.read_parquet(os.path.join(sim_dir, "truth.parquet"))
    items = [_sim_item(os.path.join(sim_dir, f), s) for f, s in zip(truth["file"], truth["pixel_scale_arcsec"])]
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
    # the simulator's formal length, as the bundle defines its lengths (bundle.length_definition)
    df["true_bar_length_arcsec"] = df["true_bar_length_arcsec"] * length_definition(card)["fraction_of_formal"]
    df["true_length_model"] = df["true_bar_length_arcsec"] / to_model
    return df


def _sim_item(path, pixel_scale):
    """A simulated cutout as a pipeline input: display copies (JPEG/PNG, no WCS) get the truth's pixel scale."""
    image = os.path.splitext(path)[1].lower() in (".jpg", ".jpeg", ".png")
    return InputItem(file=path, pixel_scale=float(pixel_scale) if image else None)


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

    bundle = load_bundle(bundle_path)
    _check_seed(bundle, seed, "calibration seed")
    t0 = time.time()
    with _barred_simulations(workdir, n, seed, survey, workers, "survey-bars-calib-") as sim_dir:
        opts = RunOptions(method=method, smoothgrad_samples=samples, length_frame=CALIBRATION_FRAME)
        df = measure_simulation(sim_dir, ModelRuntime(bundle), opts)
    ok = (df["status"] == "ok") & df["true_has_bar"]
    cal = fit_calibration(df.loc[ok, "raw_length_model"], df.loc[ok, "true_length_model"])
    cal.update(seed=int(seed), n_simulated=int(n), survey=survey, samples=samples or (bundle.smoothgrad or {}).get("samples"),
               noise_frac=(bundle.smoothgrad or {}).get("noise_frac"),
               symmetrise=bool((bundle.smoothgrad or {}).get("symmetrise", False)), seconds=round(time.time() - t0, 1),
               units="model-frame pixels")
    cal["measurement_version"] = get_method(method).version
    card = dict(bundle.card)
    calib = dict(card.get("calibration") or {})
    calib[method] = cal
    card["calibration"] = calib
    write_card(bundle.path, card)
    return cal


def fit_error_model(length, true, stat, scale, coverage=0.683, dof=3.0):
    """Fit the systematic part of a length uncertainty so that it covers the truth as stated.

    The uncertainty of a length ``L`` (model-frame pixels) is modelled as
    ``sqrt(stat**2 + (a * L)**2 + c**2 + (b / scale)**2)``: the measured statistical spread
    ``stat``, a fractional scatter ``a``, a floor of ``c`` model-frame pixels (the blur of the
    saliency map), and a floor of ``b`` pixels of the input image (``scale`` input pixels per
    model pixel), which makes poorly resolved bars -- few input pixels long -- less certain.
    ``a``, ``b`` and ``c`` are fitted by maximum likelihood on the residuals with a Student-t
    distribution of ``dof`` degrees of freedom (robust to outliers, which a sigma-clipped
    Gaussian fit can drift into admitting), then scaled together so that a fraction ``coverage``
    of all the residuals, outliers included, lies within one sigma.

    Parameters
    ----------
    length, true : array_like
        Measured and true lengths, model-frame pixels.
    stat : array_like
        Statistical uncertainty of each measured length (e.g. the SmoothGrad subsets' spread),
        model-frame pixels.
    scale : array_like
        Input-image pixels per model-frame pixel of each galaxy (``resample_scale``).
    coverage : float
        Fraction of residuals to be within one sigma (0.683 for Gaussian errors).
    dof : float
        Degrees of freedom of the Student-t likelihood.

    Returns
    -------
    dict
        ``scatter_frac`` (a), ``floor_model_px`` (c), ``floor_native_px`` (b), ``n``, the
        scaling applied (``coverage_scale``) and the achieved fractions
        within 1 and 2 sigma (``within_1sigma``, ``within_2sigma``).

    Raises
    ------
    ValueError
        With fewer than 10 usable lengths.
    """
    from scipy.optimize import brentq, minimize

    length, true, stat, scale = (np.asarray(v, float) for v in (length, true, stat, scale))
    ok = np.isfinite(length) & np.isfinite(true) & np.isfinite(stat) & np.isfinite(scale) & (scale > 0) & (length > 0)
    if ok.sum() < 10:
        msg = f"Only {int(ok.sum())} usable lengths: too few to fit an error model. Simulate more galaxies (-n)."
        raise ValueError(msg)
    L, r, st, sc = length[ok], (length - true)[ok], stat[ok], scale[ok]

    def sigma(a, b, c):
        return length_sigma(st, L, sc, scatter_frac=a, floor_model_px=c, floor_native_px=b)

    def nll(q):
        s = sigma(*np.exp(q))
        return float(np.sum(np.log(s) + 0.5 * (dof + 1.0) * np.log1p((r / s) ** 2 / dof)))

    f = r / L
    mad = max(1.4826 * np.median(np.abs(f - np.median(f))), 1e-3)
    p = minimize(nll, np.log([mad / 2, 0.5, 0.5]), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000}).x
    a, b, c = np.exp(p)

    def within(k, n_sigma=1.0):
        return float(np.mean(np.abs(r) <= n_sigma * sigma(k * a, k * b, k * c)))

    lo, hi = 1e-3, 1e3
    # where the statistical spread alone already covers enough, the systematic terms vanish
    k = 0.0 if within(lo) >= coverage else (hi if within(hi) < coverage else brentq(lambda x: within(x) - coverage, lo, hi, xtol=1e-4))
    return {"scatter_frac": float(k * a), "floor_model_px": float(k * c), "floor_native_px": float(k * b), "n": int(L.size),
            "coverage_scale": float(k), "within_1sigma": within(k), "within_2sigma": within(k, 2.0)}


def _check_seed(bundle, seed, what):
    """Refuse a simulation seed equal to the bundle's training seed (those galaxies were trained on)."""
    if int(bundle.card.get("training", {}).get("seed", -1)) == int(seed):
        msg = f"The {what} {seed} equals the training seed; choose another (--seed)."
        raise ValueError(msg)


@contextlib.contextmanager
def _barred_simulations(workdir, n, seed, survey, workers, prefix):
    """Yield a directory holding the ``n`` barred simulations of ``seed`` (simulated unless ``workdir`` has them).

    Without ``workdir`` they go to a temporary directory, removed afterwards.
    """
    import shutil

    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix=prefix)
    try:
        if not _reuse_simulation(workdir, n, seed):
            simulate(workdir, n, survey=survey, seed=seed, workers=workers, class_mix={"barred": 1.0})
        yield workdir
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def _detected_bars(df, p_bar_min):
    """Rows of a :func:`measure_simulation` table that are true bars the model detects, with a usable true length."""
    return (df["status"] == "ok") & df["true_has_bar"] & (df["p_bar"] >= p_bar_min) & np.isfinite(df["true_length_model"]) \
        & (df["true_length_model"] > 0)


def detected_bar_maps(sim_dir, runtime, maps_dir, p_bar_min=0.5):
    """The SmoothGrad maps of the simulated bars that a bundle detects, with their truth.

    Parameters
    ----------
    sim_dir : str
        A simulated directory (with ``truth.parquet``).
    runtime : survey_bars.inference.runtime.ModelRuntime
        The model.
    maps_dir : str
        Where the pipeline saves the maps (one FITS file per galaxy).
    p_bar_min : float, optional
        Bars count as detected from this ``p_bar``.

    Returns
    -------
    table : pandas.DataFrame
        :func:`measure_simulation`'s rows of the detected bars (``true_length_model`` is their
        length in model-frame pixels).
    maps : ndarray
        Their maps, ``(N, S, S)``.
    """
    opts = RunOptions(save_saliency=maps_dir, method="moments", length_frame=CALIBRATION_FRAME)
    d = measure_simulation(sim_dir, runtime, opts, calibrated=True)
    d = d[_detected_bars(d, p_bar_min)].reset_index(drop=True)
    return d, _read_maps(maps_dir, d["object_id"])


def _reuse_simulation(workdir, n, seed):
    """Whether ``workdir`` already holds the ``n`` barred simulations of ``seed``."""
    import pandas as pd

    truth = os.path.join(workdir, "truth.parquet")
    if not os.path.exists(truth):
        return False
    t = pd.read_parquet(truth)
    return len(t) == n and bool(t["object_id"].str.startswith(f"sim{seed}-").all()) and bool((t["class"] == "barred").all())


def calibrate_head(bundle_path, *, n=16000, seed=5150, survey="mixed", workdir=None, workers=1, epochs=30, threads=2,
                   holdout_frac=0.1, p_bar_min=0.5, log=None, stamp_copies=False, real_root=None, real_folds=None,
                   real_epochs=REAL_HEAD["epochs"], real_lr=REAL_HEAD["lr"], real_sims=REAL_HEAD["sims"],
                   crossfit_dir=None, format_copies=False, real_linear_copies=0):
    """Train the learned length head on fresh simulations and add it to a bundle.

    Simulates ``n`` barred galaxies (a seed never used in training), makes their SmoothGrad
    maps with the bundle, keeps the bars the model detects (p_bar >= 0.5), trains a
    :class:`~survey_bars.training.head.LengthHead` on the maps of all but ``holdout_frac`` of
    them, and fits the systematic part of its uncertainty on the rest with
    :func:`fit_error_model` (a fractional scatter and floors in model and input pixels, scaled so that
    68.3 % of the held-out lengths lie within one sigma; they enter ``bar_length_err_arcsec``
    with the SmoothGrad subsets' spread). The head is written
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
    stamp_copies : bool, optional
        Also train on the maps of a small-stamp display copy of every simulation
        (:func:`survey_bars.simulate.small_stamp_copies`, seed ``seed + 1``, then
        :func:`survey_bars.simulate.display_copies`, seed ``seed + 2``): the stamps and the
        8-bit stretch of the survey cutout services, which the full FITS stamps do not show.
    format_copies : bool, optional
        Also train on the maps of the small FITS stamps and of display JPEGs of the full-size
        stamps (seed ``seed + 3``), so that the head has seen every combination of stamp and
        format (:func:`head_sources`). A head shown only full FITS stamps and small display JPEGs
        reads full-size display JPEGs of the same bars 1.24 times longer and small FITS stamps
        0.91 times shorter (bundle 5.2's head; ``benchmarks/RESULTS.md``).
    real_root : str, optional
        A real-dev directory: after the simulations, fine-tune the head on the volunteer
        lengths (Hoyle et al. 2011) of its bars in ``real_folds``, made from their maps
        (:func:`real_length_maps`), with ``real_sims`` of the simulated maps mixed in so that
        it keeps what it learned there. Their lengths are scaled by the median of volunteer /
        head on the real bars before the fine-tuning, so that both speak of one length.
        Recorded as ``real_training``; :func:`calibrate_real` then fits the head's real scale and
        uncertainty on the other training folds. None (the default): simulations only.
    real_folds : sequence of int, optional
        Default :data:`survey_bars.training.realdata.LENGTH_TRAIN_FOLDS` (0-2, so that
        :func:`calibrate_real` has fold 3 left to fit on), or with ``crossfit_dir`` every
        training fold (:data:`survey_bars.training.realdata.TRAIN_FOLDS`).
    real_epochs, real_lr, real_sims : optional
        Fine-tuning epochs, peak learning rate, and simulated maps mixed in
        (default :data:`REAL_HEAD`).
    crossfit_dir : str, optional
        With ``real_root``: also fine-tune, for every fold k of ``real_folds``, an out-of-fold head
        on the other folds only (the same recipe), and write them here
        (:func:`write_crossfit_heads`). :func:`calibrate_real` measures each fold's bars with the
        head that never saw them, so the real scale and uncertainty are fitted on every fold the
        shipped head learned from, without fitting on what it learned. They are not part of the
        bundle.
    real_linear_copies : int, optional
        With ``real_root``: each real bar is also learned as this many linear single-band FITS
        copies of its JPEG (:func:`real_length_maps`), so that the head reads the real bars of
        FITS images too. The simulated maps mixed in are put in real units by the JPEGs' maps
        alone (:func:`~survey_bars.training.head.fine_tune_head`'s ``scale_mask``), and the card
        records how the out-of-fold heads read each fold's JPEGs and copies
        (``real_training["out_of_fold"]``). 0 (the default): the JPEGs alone, as every shipped
        head. Heads built with 2 read the copies better (out of fold r 0.36, against -0.12) but
        the real JPEGs and, above all, the simulations worse (fresh simulations r 0.33, against
        0.82; ``benchmarks/RESULTS.md``, "Real galaxies as FITS files").

    Returns
    -------
    dict
        The record written to the card's ``calibration["head"]``.
    """
    import shutil

    import numpy as np
    import pandas as pd

    from .head import HEAD_ARCH, export_head, train_head

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    bundle = load_bundle(bundle_path)
    _check_seed(bundle, seed, "length head's simulation seed")
    maps_dir = tempfile.mkdtemp(prefix="survey-bars-head-maps-")
    t0 = time.time()
    try:
        with _barred_simulations(workdir, n, seed, survey, workers, "survey-bars-head-") as sim_dir:
            sources = head_sources(sim_dir, seed, workers, stamp_copies=stamp_copies, format_copies=format_copies)
            t_sim = time.time() - t0
            rt = ModelRuntime(bundle, threads=threads)
            frames, stacks = [], []
            for k, src in enumerate(sources):  # one maps directory per source: the copies share the object ids
                d, m = detected_bar_maps(src, rt, os.path.join(maps_dir, str(k)), p_bar_min)
                frames.append(d)
                stacks.append(m)
            t_maps = time.time() - t0 - t_sim
            df = pd.concat(frames, ignore_index=True)
            if len(df) < 20:
                msg = (f"Only {len(df)} of {n} simulated barred galaxies were detected (p_bar >= {p_bar_min}): too few "
                       "to train a length head. Simulate more (-n), or check the bundle's bar detection.")
                raise ValueError(msg)
            maps = np.concatenate(stacks)
            true = df["true_length_model"].to_numpy(float)
            order = np.random.default_rng(seed).permutation(len(df))
            n_out = round(holdout_frac * len(df))
            out, fit = order[:n_out], order[n_out:]
            log(f"length head: {len(df)} detected bars, {len(fit)} to train, {len(out)} to measure the scatter")
            t1 = time.time()
            head = train_head(maps[fit], true[fit], epochs=epochs, seed=seed, threads=threads, log=log)
            real_rec, oof_heads = None, {}
            if real_root is not None:
                real_rec, head, oof_heads = _fine_tune_real(head, rt, real_root, real_folds, maps[fit], true[fit],
                                                            epochs=real_epochs, lr=real_lr, n_sims=real_sims, seed=seed,
                                                            threads=threads, log=log, crossfit=crossfit_dir is not None,
                                                            linear_copies=real_linear_copies)
            t_train, t_err = time.time() - t1, 0.0
            path = os.path.join(bundle.path, "length_head.onnx")
            export_err = export_head(head, path, size=maps.shape[-1], check_maps=maps[out[:64]] if len(out) else None)
            if oof_heads:
                real_rec["cross_fitted"] = write_crossfit_heads(crossfit_dir, oof_heads, path, size=maps.shape[-1],
                                                                check_maps=maps[out[:64]] if len(out) else None)
            write_card(bundle.path, dict(bundle.card))  # records the new graph's hash, so the bundle loads with it
            clear_cache()
            rt = ModelRuntime(load_bundle(bundle.path), threads=threads)
            rec = {"n_simulated": int(n), "seed": int(seed), "survey": survey, "stamp_copies": bool(stamp_copies),
                   "format_copies": bool(format_copies),
                   "n_train": len(fit),
                   "n_holdout": len(out), "epochs": int(epochs), "arch": HEAD_ARCH, "orientations": 8,
                   "export_max_rel_err": float(export_err), "units": "model-frame pixels",
                   "samples": (bundle.smoothgrad or {}).get("samples"), "noise_frac": (bundle.smoothgrad or {}).get("noise_frac"),
                   "symmetrise": bool((bundle.smoothgrad or {}).get("symmetrise", False))}
            if real_rec is not None:
                rec["real_training"] = real_rec
            if len(out) >= 10:
                # the held-out bars through the pipeline's own 'head' measurement
                t2 = time.time()
                held = [_sim_item(f, s) for f, s in zip(df["file"].iloc[out], df["true_pixel_scale_arcsec"].iloc[out])]
                # in the units the head learned: a head fine-tuned on real lengths speaks of them
                unit = real_rec["simulated_length_scale"] if real_rec is not None else 1.0
                errs = _head_errors(uncalibrated_head(rt, held), unit * true[out])
                rec.update(scatter_frac=errs.pop("scatter_frac"), floor_model_px=errs.pop("floor_model_px"),
                           floor_native_px=errs.pop("floor_native_px"), holdout_median_rel_err=errs["median_rel_err"], holdout_pearson_r=errs["pearson_r"],
                           errors={"source": "the held-out bars", **errs})
                t_err = time.time() - t2
            rec.update(seconds={"simulation": round(t_sim, 1), "maps": round(t_maps, 1), "training": round(t_train, 1),
                                "errors": round(t_err, 1), "total": round(time.time() - t0, 1)})
    finally:
        shutil.rmtree(maps_dir, ignore_errors=True)
    bundle = load_bundle(bundle.path)
    card = dict(bundle.card)
    card["calibration"] = {**(card.get("calibration") or {}), "head": rec}
    write_card(bundle.path, card)
    return rec


def _fine_tune_real(head, runtime, root, folds, sim_maps, sim_lengths, *, epochs, lr, n_sims, seed, threads, log,
                    crossfit=False, linear_copies=0):
    """Fine-tune a head trained on simulations on the real volunteer lengths: (record, head, out-of-fold heads).

    With ``crossfit``, also one head per fold k fine-tuned without fold k's bars (``{k: head}``).
    With ``linear_copies``, each real bar's linear FITS copies are learned beside its JPEG
    (:func:`real_length_maps`); an out-of-fold head leaves out a fold's copies with it.
    """
    from . import realdata
    from .head import fine_tune_head, fine_tune_out_of_fold, head_lengths, length_scores

    t0 = time.time()
    if folds is None:  # cross-fitted, the head may learn every training fold
        folds = realdata.TRAIN_FOLDS if crossfit else realdata.LENGTH_TRAIN_FOLDS
    folds = tuple(int(f) for f in folds)
    maps, lengths, ids, is_copy = real_length_maps(runtime, root, folds, threads=threads, linear_copies=linear_copies,
                                                   seed=seed, return_is_copy=True, length_frame=HEAD_REAL_FRAME)
    if len(maps) < 20:
        msg = (f"Only {len(maps)} real bars with a volunteer length in folds {list(folds)}: too few to fine-tune the "
               "length head on. Check the real-dev directory, or leave the real lengths out.")
        raise ValueError(msg)
    kw = {"epochs": epochs, "lr": lr, "n_sims": n_sims, "batch_size": REAL_HEAD["batch_size"], "seed": seed,
          "threads": threads}
    # the simulations' units come from the JPEGs' maps alone: the head of simulations reads the copies'
    # maps much shorter, and a scale set by them taught the simulated maps a second, wrong scale
    tuned, info = fine_tune_head(head, maps, lengths, sim_maps, sim_lengths, scale_mask=~is_copy, log=log, **kw)
    n_bars = len(set(ids))
    rec = {"source": "sdss-gz2-bars: Hoyle et al. (2011) volunteer bar lengths", "split": realdata.SPLIT_ID,
           "folds": list(folds), "max_length_arcsec": realdata.MAX_HOYLE_ARCSEC, "n_bars": n_bars, **info,
           "epochs": int(epochs), "lr": float(lr), "batch_size": REAL_HEAD["batch_size"]}
    if linear_copies:
        rec["linear_copies"] = {"copies": int(linear_copies), "n_maps": int(is_copy.sum()), "seed": int(seed),
                                "scale_from": "the JPEGs' maps (fine_tune_head's scale_mask)",
                                "length_frame": HEAD_REAL_FRAME,
                                "how": ("each bar's JPEG also as linear single-band FITS copies "
                                        "(survey_bars.training.realdata.linear_from_display; Q and band from "
                                        "survey_bars.training.data.linear_copy_settings)")}
    if log is not None:
        log(f"length head: fine-tuned on {len(maps)} maps of {n_bars} real bars (folds {list(folds)}) and {info['n_simulated_maps']} "
            f"simulated maps (lengths x {info['simulated_length_scale']:.3f})")
    oof = {}
    if crossfit:
        labels = realdata.load_gz2_bars(root).set_index("object_id")
        labels.index = labels.index.astype(str)
        fold = labels.loc[list(ids), "fold"].to_numpy(int)
        oof = {k: h for k, (h, _) in fine_tune_out_of_fold(head, maps, lengths, fold, folds, sim_maps, sim_lengths,
                                                           scale_mask=~is_copy, **kw).items()}
        # how the out-of-fold heads read each fold's bars, before any real fit: the JPEGs', and the copies'
        arcsec = labels.loc[list(ids), "hoyle_bar_length_arcsec"].to_numpy(float)
        pred = np.full(len(lengths), np.nan)
        for k, h in oof.items():
            pred[fold == k] = head_lengths(h, maps[fold == k])
        rec["out_of_fold"] = {"jpeg": length_scores(pred[~is_copy], lengths[~is_copy], arcsec[~is_copy])}
        if is_copy.any():
            rec["out_of_fold"]["linear_copies"] = length_scores(pred[is_copy], lengths[is_copy], arcsec[is_copy])
        if log is not None:
            log(f"length head: {len(oof)} out-of-fold heads (one without each of folds {list(folds)}): "
                + "; ".join(f"{kind} r {v['pearson_r']:.3f}, ratio {v['median_ratio']:.3f}" for kind, v in rec["out_of_fold"].items()))
    rec["seconds"] = round(time.time() - t0, 1)
    return rec, tuned, oof


#: the file :func:`write_crossfit_heads` describes the out-of-fold heads in
CROSSFIT_FILE = "crossfit.json"


def write_crossfit_heads(directory, heads, head_path, *, size, check_maps=None):
    """Export out-of-fold length heads and tie them to the bundle head they were cross-fitted with.

    Parameters
    ----------
    directory : str
        Output directory (created; earlier heads there are replaced).
    heads : dict
        ``{fold: LengthHead}``: the head fine-tuned without that fold's real bars.
    head_path : str
        The bundle's ``length_head.onnx`` (fine-tuned on all the folds): its sha256 is recorded,
        and :func:`calibrate_real` refuses these heads for any other head.
    size : int
        Side of the model frame.
    check_maps : ndarray, optional
        Maps to compare onnxruntime with torch on (:func:`survey_bars.training.head.export_head`).

    Returns
    -------
    dict
        The card's record, ``folds`` and ``head_sha256``; ``crossfit.json`` in ``directory``
        also names each fold's ``files``.
    """
    from ..inference.bundle import sha256_file
    from .head import export_head

    os.makedirs(directory, exist_ok=True)
    files = {}
    for k, h in sorted(heads.items()):
        files[str(k)] = f"length_head.fold{k}.onnx"
        export_head(h, os.path.join(directory, files[str(k)]), size=size, check_maps=check_maps)
    rec = {"folds": sorted(int(k) for k in heads), "files": files, "head_sha256": sha256_file(head_path)}
    with open(os.path.join(directory, CROSSFIT_FILE), "w") as fh:
        json.dump(rec, fh, indent=1)
    return {"folds": rec["folds"], "head_sha256": rec["head_sha256"]}


def _crossfit_heads(directory, bundle):
    """``{fold: path}`` of the out-of-fold heads in ``directory``, checked against the bundle's head."""
    from ..inference.bundle import sha256_file

    f = os.path.join(directory, CROSSFIT_FILE)
    if not os.path.isfile(f):
        msg = (f"No {CROSSFIT_FILE} in {directory}: it is written by `survey-bars calibrate --method head --real-lengths "
               "... --crossfit DIR` (calibrate_head(..., crossfit_dir=DIR)).")
        raise FileNotFoundError(msg)
    with open(f) as fh:
        rec = json.load(fh)
    if bundle.head_path is None or rec.get("head_sha256") != sha256_file(bundle.head_path):
        msg = (f"The out-of-fold heads in {directory} were cross-fitted with another length head than the bundle's "
               f"{bundle.path}; retrain the head with --crossfit, or fit without it.")
        raise ValueError(msg)
    return {int(k): os.path.join(directory, name) for k, name in rec["files"].items()}


def head_sources(sim_dir, seed, workers=1, *, stamp_copies=False, format_copies=False):
    """The directories whose maps train the length head: the simulations, then the copies asked for.

    The copies are made once, inside ``sim_dir``, and share the simulations' object ids and truth.

    Parameters
    ----------
    sim_dir : str
        The head's barred simulations (full-size FITS stamps).
    seed : int
        Their seed; the copies use ``seed + 1`` (small stamps), ``seed + 2`` (their display copies)
        and ``seed + 3`` (display copies of the full-size stamps).
    workers : int, optional
        Processes that make the copies.
    stamp_copies : bool, optional
        Add the small-stamp display JPEGs (``small-stamps-display``, bundle 5.2).
    format_copies : bool, optional
        Add the two other combinations of stamp and format: the small FITS stamps
        (``small-stamps``) and display JPEGs of the full-size stamps (``display``), so that
        the head learns every input it meets, not only the two it was shown (bundle 5.3).

    Returns
    -------
    list of str
        ``[sim_dir, ...]``, in the order above.
    """
    from ..simulate import display_copies, finished_copies, small_stamp_copies

    def copies(src, name, make):  # made once; reused when finished
        out = os.path.join(sim_dir, name)
        finished_copies(src, out, lambda: make(src, out))
        return out

    sources = [sim_dir]
    if stamp_copies or format_copies:
        stamps = copies(sim_dir, "small-stamps", lambda a, b: small_stamp_copies(a, b, seed=seed + 1, workers=workers))
        if stamp_copies:
            sources.append(copies(stamps, "small-stamps-display",
                                  lambda a, b: display_copies(a, b, seed=seed + 2, workers=workers)))
        if format_copies:
            sources += [stamps, copies(sim_dir, "display", lambda a, b: display_copies(a, b, seed=seed + 3, workers=workers))]
    return sources


def uncalibrated_head(runtime, files):
    """Measure files with the learned head, ignoring any head calibration the bundle card holds.

    The rows' ``bar_length_err_arcsec`` is then the spread of the SmoothGrad subsets alone:
    what :func:`fit_error_model` needs as ``stat`` (a bundle whose head is retrained or
    recalibrated may still carry the old head's record).

    Parameters
    ----------
    runtime : survey_bars.inference.runtime.ModelRuntime
        A runtime of a bundle with a learned length head.
    files : list of str or InputItem
        Cutouts (display images need an :class:`~survey_bars.io.inputs.InputItem` with their pixel scale).

    Returns
    -------
    pandas.DataFrame
        The catalogue rows, in order, measured at ``p_bar_min=0``.
    """

    card = runtime.card
    runtime.card = {**card, "calibration": {k: v for k, v in (card.get("calibration") or {}).items() if k != "head"}}
    try:
        return process_items(list(files), RunOptions(method="head", p_bar_min=0.0, length_frame=CALIBRATION_FRAME), runtime=runtime).to_pandas()
    finally:
        runtime.card = card


def _head_errors(cat, true_model):
    """Fit the head's error model on a catalogue measured with ``method="head"`` and no head calibration.

    ``cat`` holds the pipeline's rows of true bars (its ``bar_length_err_arcsec`` is then the
    SmoothGrad subsets' spread alone); ``true_model`` their true lengths in model pixels.
    Returns :func:`fit_error_model`'s record plus the accuracy on these bars.
    """
    to_model = (cat["pixel_scale_arcsec"] * cat["resample_scale"]).to_numpy(float)
    pred = cat["bar_length_arcsec"].to_numpy(float) / to_model
    stat = cat["bar_length_err_arcsec"].to_numpy(float) / to_model
    true = np.asarray(true_model, float)
    rec = fit_error_model(pred, true, stat, cat["resample_scale"].to_numpy(float))
    ok = np.isfinite(pred) & np.isfinite(true) & (true > 0)
    frac = (pred[ok] - true[ok]) / true[ok]
    rec.update(median_rel_err=float(np.median(np.abs(frac))), robust_scatter=float(1.4826 * np.median(np.abs(frac - np.median(frac)))),
               pearson_r=float(np.corrcoef(pred[ok], true[ok])[0, 1]))
    return rec


def calibrate_head_errors(bundle_path, *, n=1500, seed=6160, survey="mixed", workdir=None, workers=1, threads=2, p_bar_min=0.5):
    """Refit a bundle's learned-head uncertainty on fresh simulations, without retraining the head.

    Simulates ``n`` barred galaxies of ``survey`` (a seed used neither for training nor for the
    head), measures them with ``method="head"``, and fits :func:`fit_error_model` to the
    detected bars (p_bar >= ``p_bar_min``). The fit replaces ``scatter_frac``,
    ``floor_model_px`` and ``floor_native_px`` in the card's ``calibration["head"]``, which also records the
    simulations under ``errors``. Use it to fit the uncertainties to your own survey
    (``survey="sdss"``, ...). For a head fine-tuned on real lengths the simulated truth is
    taken in the units it learned (times its ``real_training["simulated_length_scale"]``).
    Needs no torch.

    Parameters
    ----------
    bundle_path : str
        Bundle directory with a learned length head (its card is rewritten).
    n : int
        Simulated barred galaxies.
    seed : int
        Simulation seed; must differ from the training seed and from the head's.
    survey : str
        Survey preset or ``"mixed"``.
    workdir : str, optional
        Where the simulations go (default: a temporary directory, removed after); reused when
        it holds the same ``n`` and ``seed``.
    workers, threads : int
        Simulation processes and onnxruntime threads.
    p_bar_min : float
        Bars count as detected from this p_bar.

    Returns
    -------
    dict
        The new ``calibration["head"]`` record.

    Raises
    ------
    ValueError
        A bundle without a head, a reused seed, or too few detected bars.
    """

    bundle = load_bundle(bundle_path)
    head = dict((bundle.card.get("calibration") or {}).get("head") or {})
    if bundle.head_path is None or not head:
        msg = "This bundle has no learned length head to calibrate; train one with `survey-bars calibrate --model DIR --method head`."
        raise ValueError(msg)
    _check_seed(bundle, seed, "error calibration seed")
    if int(head.get("seed", -1)) == int(seed):
        msg = f"The error calibration seed {seed} is the one the head was trained on; choose another (--seed)."
        raise ValueError(msg)
    t0 = time.time()
    with _barred_simulations(workdir, n, seed, survey, workers, "survey-bars-head-errors-") as sim_dir:
        # calibrated=False: the spread of the SmoothGrad subsets alone, without the head's current errors
        df = measure_simulation(sim_dir, ModelRuntime(bundle, threads=threads), RunOptions(method="head", length_frame=CALIBRATION_FRAME), calibrated=False)
    keep = _detected_bars(df, p_bar_min)
    if keep.sum() < 10:
        msg = f"Only {int(keep.sum())} of {n} simulated bars were detected: too few to fit the errors. Simulate more (-n)."
        raise ValueError(msg)
    # a head fine-tuned on real lengths learned the simulated ones in the volunteers' units
    unit = float((head.get("real_training") or {}).get("simulated_length_scale", 1.0))
    errs = _head_errors(df[keep], unit * df.loc[keep, "true_length_model"])
    head.update(scatter_frac=errs.pop("scatter_frac"), floor_model_px=errs.pop("floor_model_px"), floor_native_px=errs.pop("floor_native_px"),
                errors={"source": "fresh simulations", "seed": int(seed), "n_simulated": int(n), "survey": survey, **errs,
                        "seconds": round(time.time() - t0, 1)})
    card = dict(bundle.card)
    card["calibration"] = {**(card.get("calibration") or {}), "head": head}
    write_card(bundle.path, card)
    return head


def calibrate_real(bundle_path, root=None, *, method="auto", folds=None, max_length_arcsec=None,
                   threads=1, min_bars=30, crossfit_dir=None):
    """Fit a method's lengths and uncertainties to the volunteers' lengths of real bars, and record it.

    The real-dev ``sdss-gz2-bars`` galaxies of the training folds that have a Hoyle et al.
    (2011) length (at most ``max_length_arcsec``) are measured through the pipeline with the
    bundle's simulation calibration of ``method`` (any earlier real fit left out) and
    ``p_bar_min`` 0. Then

    - ``scale`` is the median of ``volunteer / measured``: measured lengths are multiplied by it;
    - ``error_scale`` is the 68.3rd percentile of ``|scale * measured - volunteer| / (scale * sigma)``:
      the uncertainties are multiplied by ``scale * error_scale``, so that 68.3 % of these bars
      lie within one sigma.

    A length head fine-tuned on real lengths (its card's ``real_training``) must not be fitted
    on the bars it learned. Without ``crossfit_dir`` it is fitted on the training folds it did
    not learn from; with the out-of-fold heads of :func:`calibrate_head` (``crossfit_dir``),
    each fold's bars are measured by the head that was fine-tuned without them, and every
    training fold is used (cross-fitting).

    Both go into the card as ``calibration[method]["real"]``, which
    :func:`survey_bars.measure.calibration.calibrated_length` applies to every input. A later
    simulation calibration of the method replaces the whole entry, this fit with it.

    Parameters
    ----------
    bundle_path : str
        Bundle directory (its card is rewritten).
    root : str, optional
        The real-dev directory (default :func:`survey_bars.training.realdata.default_root`).
    method : str, optional
        A calibrated measuring method, or ``"auto"`` (the bundle's default method).
    folds : sequence of int, optional
        Folds to fit on (default: :data:`survey_bars.training.realdata.TRAIN_FOLDS`, less the
        folds whose lengths a fine-tuned head learned, its card's ``real_training["folds"]``);
        the test fold, and for such a head the folds it learned from, are refused.
    max_length_arcsec : float, optional
        Longest volunteer length used (default
        :data:`survey_bars.training.realdata.MAX_HOYLE_ARCSEC`, the benchmark's cut).
    threads : int, optional
        onnxruntime threads.
    min_bars : int, optional
        Fewest measured bars to fit on.
    crossfit_dir : str, optional
        The out-of-fold heads of a head fine-tuned on real lengths
        (:func:`write_crossfit_heads`). The folds then default to every training fold.

    Returns
    -------
    dict
        The ``real`` entry written to the card.

    Raises
    ------
    ValueError
        For the test fold, a fold the method learned the lengths of, a method the bundle has
        no simulation calibration for, or too few measured bars.
    """
    import pandas as pd

    from . import realdata

    t0 = time.time()
    bundle = load_bundle(bundle_path)
    name = resolve_method(bundle.card, method)
    calib = dict(bundle.card.get("calibration") or {})
    learned = tuple((calib.get(name) or {}).get("real_training", {}).get("folds", ()))  # a head fine-tuned on real lengths
    oof = {}
    if crossfit_dir is not None:
        if not learned:
            msg = (f"crossfit_dir holds out-of-fold heads of a length head fine-tuned on real lengths, and the bundle's "
                   f"'{name}' method learned none; fit without it.")
            raise ValueError(msg)
        oof = _crossfit_heads(crossfit_dir, bundle)
    if folds is None:
        folds = tuple(f for f in realdata.TRAIN_FOLDS if f not in learned or f in oof)
    folds = tuple(int(f) for f in folds)
    if realdata.TEST_FOLD in folds:
        msg = (f"Fold {realdata.TEST_FOLD} is the real-dev test fold ({realdata.SPLIT_ID}); a real calibration "
               f"must be fitted on the training folds {list(realdata.TRAIN_FOLDS)} only.")
        raise ValueError(msg)
    if set(folds) & (set(learned) - set(oof)):
        msg = (f"The bundle's '{name}' method learned the volunteer lengths of folds {list(learned)}, so its real scale "
               f"and uncertainty must be fitted on other folds (got {list(folds)}), or on out-of-fold heads "
               f"(crossfit_dir; these have {sorted(oof)}); leave folds unset to use "
               f"{[f for f in realdata.TRAIN_FOLDS if f not in learned or f in oof]}.")
        raise ValueError(msg)
    if not folds:
        msg = (f"The bundle's '{name}' method learned the volunteer lengths of every training fold {list(learned)}, so "
               "its real scale must be fitted on its out-of-fold heads: pass the directory they were written to "
               "(`--crossfit DIR`; calibrate_real(crossfit_dir=DIR)). They are not part of the bundle; to make them, "
               "retrain the head with `survey-bars calibrate --method head --real-lengths auto --crossfit DIR` (or "
               "build_default, which keeps them in WORKDIR/head-crossfit).")
        raise ValueError(msg)
    own = {k: v for k, v in (calib.get(name) or {}).items() if k != "real"}
    if not own:
        msg = (f"The bundle has no simulation calibration for the '{name}' method; run `survey-bars calibrate "
               f"--model {bundle_path} --method {name}` first.")
        raise ValueError(msg)
    max_length_arcsec = realdata.MAX_HOYLE_ARCSEC if max_length_arcsec is None else float(max_length_arcsec)
    bars, items = _real_bars(root, folds, max_length_arcsec)
    card = {**bundle.card, "calibration": {**calib, name: own}}
    opts = RunOptions(method=name, p_bar_min=0.0, threads=threads, length_frame=CALIBRATION_FRAME)
    fold = bars["fold"].to_numpy(int)
    parts = []
    # each learned fold through the head that did not learn it (cross-fitting); the others through the bundle's
    for group in [[f] for f in folds if f in learned] + [[f for f in folds if f not in learned]]:
        sel = np.flatnonzero(np.isin(fold, group))
        if not len(sel):
            continue
        b = dataclasses.replace(bundle, head_path=pathlib.Path(oof[group[0]])) if group[0] in learned else bundle
        rt = ModelRuntime(b, threads=threads)
        rt.card = card
        parts.append(process_items([items[i] for i in sel], opts, runtime=rt).to_pandas())
    cat = pd.concat(parts).set_index("object_id").loc[[it.object_id for it in items]].reset_index()
    true = bars["hoyle_bar_length_arcsec"].to_numpy(float)
    meas = pd.to_numeric(cat["bar_length_arcsec"]).to_numpy(float)
    err = pd.to_numeric(cat["bar_length_err_arcsec"]).to_numpy(float)
    ok = np.isfinite(meas) & (meas > 0) & np.isfinite(err) & (err > 0)
    if ok.sum() < min_bars:
        msg = (f"Only {int(ok.sum())} of {len(items)} real bars were measured (need {min_bars}); "
               "check the real-dev directory and the bundle.")
        raise ValueError(msg)
    m, e, t = meas[ok], err[ok], true[ok]
    scale = float(np.median(t / m))
    z = np.abs(scale * m - t) / (scale * e)
    k = float(np.quantile(z, 0.683))
    rec = {
        "scale": scale,
        "error_scale": k,
        "source": "sdss-gz2-bars: Hoyle et al. (2011) volunteer bar lengths",
        "split": realdata.SPLIT_ID,
        "folds": list(folds),
        "max_length_arcsec": float(max_length_arcsec),
        "n_bars": len(items),
        "n_measured": int(ok.sum()),
        "pearson_r": float(np.corrcoef(m, t)[0, 1]),
        "within_1sigma_before": float(np.mean(np.abs(m - t) <= e)),
        "within_1sigma": float(np.mean(z <= k)),
        "within_2sigma": float(np.mean(z <= 2 * k)),
        "median_rel_err": float(np.median(np.abs(scale * m - t) / t)),
        "measurement_version": get_method(name).version,
        **({"cross_fitted": True, "crossfit_folds": sorted(set(folds) & set(oof))} if oof else {}),
        "seconds": round(time.time() - t0, 1),
    }
    card = dict(bundle.card)
    calib[name] = {**own, "real": rec}
    card["calibration"] = calib
    write_card(bundle.path, card)
    return rec


def _real_bars(root, folds, max_length_arcsec):
    """The real-dev bars of ``folds`` with a volunteer length up to ``max_length_arcsec``: table and pipeline items."""
    from . import realdata

    gz2 = realdata.select_folds(realdata.load_gz2_bars(root), folds)
    hoyle = gz2["hoyle_bar_length_arcsec"].to_numpy(float)
    bars = gz2[np.isfinite(hoyle) & (hoyle > 0) & (hoyle <= max_length_arcsec)].reset_index(drop=True)
    items = [InputItem(file=r.file, object_id=str(r.object_id), pixel_scale=float(r.pixel_scale),
                       redshift=float(r.redshift) if np.isfinite(r.redshift) else None) for r in bars.itertuples()]
    return bars, items


def real_length_maps(runtime, root=None, folds=None, *, max_length_arcsec=None, threads=1, linear_copies=0, seed=0,
                     return_is_copy=False, length_frame=None):
    """SmoothGrad maps of the real-dev bars with a volunteer length, and that length in model pixels.

    The ``sdss-gz2-bars`` galaxies of ``folds`` with a Hoyle et al. (2011) length (at most
    ``max_length_arcsec``) go through the pipeline (``p_bar_min`` 0, so every one gets a map);
    each volunteer length is divided by the arcseconds per model-frame pixel of its frame.
    With ``linear_copies``, each bar also goes through as that many linear single-band FITS
    copies of its JPEG (:func:`survey_bars.training.realdata.linear_from_display`, with the
    stretch and band of :func:`survey_bars.training.data.linear_copy_settings` ``(seed, i, c)``),
    each with its own frame and so its own length in model pixels.

    Parameters
    ----------
    runtime : survey_bars.inference.runtime.ModelRuntime
        The model that makes the maps.
    root : str, optional
        The real-dev directory (default :func:`survey_bars.training.realdata.default_root`).
    folds : sequence of int, optional
        Folds to use (default :data:`survey_bars.training.realdata.LENGTH_TRAIN_FOLDS`); the test
        fold is refused.
    max_length_arcsec : float, optional
        Longest volunteer length used (default :data:`survey_bars.training.realdata.MAX_HOYLE_ARCSEC`).
    threads : int, optional
        onnxruntime threads.
    linear_copies : int, optional
        Linear FITS copies per bar (default 0: the JPEGs alone).
    seed : int, optional
        Seed of the copies' stretches and bands.
    return_is_copy : bool, optional
        Also return which maps are of linear copies.
    length_frame : str, optional
        The pipeline's ``RunOptions.length_frame`` for the maps and the model pixels (default
        :data:`CALIBRATION_FRAME`; the build's head fine-tuning passes :data:`HEAD_REAL_FRAME`).
        ``"auto"`` measures a linear copy that cuts its galaxy in the wider frame that
        ``survey-bars process`` gives it; the JPEGs have one frame either way.

    Returns
    -------
    maps : ndarray
        ``(N, S, S)`` float32 maps of the bars that got one (the JPEGs', then the copies').
    lengths : ndarray
        Their volunteer lengths in model-frame pixels, ``(N,)``.
    object_ids : list of str
        Their object ids (a copy has its galaxy's).
    is_copy : ndarray of bool
        ``(N,)``: True for a linear copy's map, False for a JPEG's; only with ``return_is_copy``.

    Raises
    ------
    ValueError
        For the test fold.
    """
    import shutil

    from astropy.io import fits

    from . import realdata

    folds = tuple(int(f) for f in (realdata.LENGTH_TRAIN_FOLDS if folds is None else folds))
    if realdata.TEST_FOLD in folds:
        msg = (f"Fold {realdata.TEST_FOLD} is the real-dev test fold ({realdata.SPLIT_ID}); no length may be learned "
               f"from it. Use folds among {list(realdata.TRAIN_FOLDS)}.")
        raise ValueError(msg)
    max_length_arcsec = realdata.MAX_HOYLE_ARCSEC if max_length_arcsec is None else float(max_length_arcsec)
    bars, items = _real_bars(root, folds, max_length_arcsec)
    tmp = tempfile.mkdtemp(prefix="survey-bars-real-maps-")
    try:
        rows = list(bars.itertuples())
        owner = [(item, r, item.object_id) for item, r in zip(items, rows)]
        n_jpeg = len(owner)
        if linear_copies:
            owner += _linear_copy_items(rows, os.path.join(tmp, "linear"), int(linear_copies), seed)
        run_items = [item for item, _, _ in owner]
        maps_dir = os.path.join(tmp, "maps")
        process_items(run_items, RunOptions(method="moments", p_bar_min=0.0, threads=threads, save_saliency=maps_dir,
                                         length_frame=length_frame or CALIBRATION_FRAME),
                      runtime=runtime)
        maps, lengths, ids, is_copy = [], [], [], []
        for i, (item, r, galaxy) in enumerate(owner):
            path = saliency_file(maps_dir, item.object_id)
            if not os.path.isfile(path):  # an unreadable image: a flagged row without a map
                continue
            is_copy.append(i >= n_jpeg)
            with fits.open(path) as h:
                maps.append(np.asarray(h[0].data, dtype=np.float32))
                arcsec_per_px = float(h[0].header["SCALE"]) * float(r.pixel_scale)
            lengths.append(float(r.hoyle_bar_length_arcsec) / arcsec_per_px)
            ids.append(galaxy)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = (np.stack(maps) if maps else np.zeros((0, 0, 0), np.float32)), np.asarray(lengths, float), ids
    return (*out, np.asarray(is_copy, dtype=bool)) if return_is_copy else out


def _linear_copy_items(rows, directory, copies, seed):
    """Linear FITS copies of the real bars' JPEGs, as pipeline items: ``[(item, row, galaxy id), ...]``."""
    from .data import linear_copy_settings
    from .realdata import write_linear_fits

    os.makedirs(directory, exist_ok=True)
    out = []
    for i, r in enumerate(rows):
        for c in range(copies):
            q, band = linear_copy_settings(seed, i, c)
            oid = f"{r.object_id}~linear{c}"
            try:
                path = write_linear_fits(r.file, os.path.join(directory, f"{oid}.fits"), q, band)
            except OSError:  # unreadable: the JPEG's own row is flagged already
                break
            out.append((InputItem(file=path, object_id=oid, pixel_scale=float(r.pixel_scale),
                                  redshift=float(r.redshift) if np.isfinite(r.redshift) else None), r, str(r.object_id)))
    return out


def _read_maps(directory, object_ids):
    """The saliency maps saved by the pipeline for ``object_ids``, shape (N, S, S)."""
    import numpy as np
    from astropy.io import fits

    out = []
    for oid in object_ids:
        with fits.open(saliency_file(directory, oid)) as h:
            out.append(np.asarray(h[0].data, dtype=np.float32))
    return np.stack(out)


#: ``survey-bars calibrate`` defaults per method: simulated barred galaxies and their seed.
#: ``--method`` -> default simulations and seed: every method that reads maps alone (the
#: registry's), the learned head, and the head's errors alone
CLI_DEFAULTS = {**{m: {"n": 800, "seed": 90210} for m in map_methods()},
                "head": {"n": 16000, "seed": 5150}, "head-errors": {"n": 1500, "seed": 6160}}


def configure_parser(parser):
    """Add the ``calibrate`` options to an argparse parser."""
    parser.add_argument("--model", required=True, help="Bundle directory to calibrate (its card is updated).")
    parser.add_argument("-n", type=int, default=None,
                        help="Simulated barred galaxies (default: 800 for moments, 16000 for head, 1500 for head-errors).")
    parser.add_argument("--seed", type=int, default=None,
                        help="Simulation seed, not the training seed (default: 90210 for moments, 5150 for head, "
                             "6160 for head-errors).")
    parser.add_argument("--survey", default="mixed", help="Survey preset of the simulations, or mixed.")
    parser.add_argument("--method", default="moments", choices=list(CLI_DEFAULTS),
                        help="moments (or another map method): fit the linear calibration of its length; head: train the learned "
                             "length head on the simulations' saliency maps and add it to the bundle (needs torch); "
                             "head-errors: refit only the head's uncertainty, e.g. on your survey (--survey sdss).")
    parser.add_argument("--epochs", type=int, default=30, help="Training epochs of the length head.")
    parser.add_argument("--stamp-copies", action="store_true",
                        help="--method head: also train on the maps of small-stamp display (JPEG) copies of the simulations.")
    parser.add_argument("--format-copies", action="store_true",
                        help="--method head: also train on the maps of small FITS stamps and full-size display (JPEG) "
                             "copies of the simulations, so that the head has seen every stamp size and format.")
    parser.add_argument("--workers", type=int, default=1, help="Simulation processes.")
    parser.add_argument("--workdir", default=None, help="Keep the simulations here.")
    parser.add_argument("--real-lengths", default=None, metavar="DIR",
                        help="--method head: after the simulations, fine-tune the head on the volunteer bar lengths of these "
                             "real labelled galaxies' folds 0-2 ('auto': $SURVEY_BARS_REAL_DEV or ../shared/data/real-dev); "
                             "then fit its real scale with --real-dev, which uses fold 3. With --crossfit, folds 0-3.")
    parser.add_argument("--real-dev", default=None, metavar="DIR",
                        help="Instead of simulations, fit the real-galaxy scale and error scale of --method (moments "
                             "or head) on the volunteer bar lengths of these real labelled galaxies' training folds "
                             "('auto': $SURVEY_BARS_REAL_DEV or ../shared/data/real-dev).")
    parser.add_argument("--crossfit", default=None, metavar="DIR",
                        help="Cross-fit the length head: with --real-lengths, it learns every training fold and an "
                             "out-of-fold head per fold is written to DIR (not to the bundle); with --real-dev, each "
                             "fold's bars are measured by the DIR head that did not learn them.")
    parser.add_argument("--real-linear-copies", type=int, default=0, metavar="N",
                        help="With --real-lengths: also learn each real bar as N linear single-band FITS copies of its "
                             "JPEG (the display stretch undone), so that the head reads real FITS images too; the "
                             "simulated lengths' units come from the JPEGs alone (default 0, as every shipped head; "
                             "2 made the head worse on real JPEGs and simulations, benchmarks/RESULTS.md).")


def run_cli(args):
    """Run ``survey-bars calibrate``; returns the exit code."""
    head = args.method == "head"
    n = args.n if args.n is not None else CLI_DEFAULTS[args.method]["n"]
    seed = args.seed if args.seed is not None else CLI_DEFAULTS[args.method]["seed"]
    try:
        if args.real_dev is not None:
            if args.method == "head-errors":
                raise ValueError("--real-dev fits a method's lengths: use --method moments or head.")
            rec = calibrate_real(args.model, None if args.real_dev == "auto" else args.real_dev, method=args.method,
                                 crossfit_dir=args.crossfit)
            print(f"real calibration ({args.method}): scale {rec['scale']:.3f}, error scale {rec['error_scale']:.2f} "
                  f"({rec['n_measured']} of {rec['n_bars']} bars, folds {rec['folds']}); r {rec['pearson_r']:.2f}, "
                  f"within 1 sigma {100 * rec['within_1sigma_before']:.0f} % before, {100 * rec['within_1sigma']:.0f} % after")
            return 0
        if args.method == "head-errors":
            rec = calibrate_head_errors(args.model, n=n, seed=seed, survey=args.survey, workdir=args.workdir, workers=args.workers)
            e = rec["errors"]
            print(f"length head errors: scatter {100 * rec['scatter_frac']:.1f} % + floors {rec['floor_model_px']:.2f} model px "
                  f"and {rec['floor_native_px']:.2f} input px "
                  f"({e['n']} bars); within 1 sigma {100 * e['within_1sigma']:.1f} %, 2 sigma {100 * e['within_2sigma']:.1f} %")
            return 0
        if args.real_lengths is not None and not head:
            raise ValueError("--real-lengths fine-tunes the learned length head: use it with --method head.")
        if args.crossfit is not None and args.real_lengths is None:
            raise ValueError("--crossfit goes with --real-lengths (to write the out-of-fold heads) or --real-dev "
                             "(to fit on them).")
        if args.real_linear_copies and args.real_lengths is None:
            raise ValueError("--real-linear-copies goes with --real-lengths: the copies are of the real bars it learns.")
        if args.real_linear_copies < 0:
            raise ValueError(f"--real-linear-copies takes 0 or more copies; got {args.real_linear_copies}.")
        if head:
            real_root = None
            if args.real_lengths is not None:
                from .realdata import default_root

                real_root = default_root() if args.real_lengths == "auto" else args.real_lengths
            rec = calibrate_head(args.model, n=n, seed=seed, survey=args.survey, workdir=args.workdir,
                                 workers=args.workers, epochs=args.epochs, stamp_copies=args.stamp_copies,
                                 format_copies=args.format_copies, real_root=real_root, crossfit_dir=args.crossfit,
                                 real_linear_copies=args.real_linear_copies)
        else:
            cal = calibrate_bundle(args.model, n=n, seed=seed, survey=args.survey, workdir=args.workdir,
                                   method=args.method, workers=args.workers)
    except (ValueError, FileNotFoundError) as exc:  # FileNotFoundError: no real-dev labels where --real-dev says
        print(f"survey-bars calibrate: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # --method head trains with torch
        print(f"survey-bars calibrate: --method head trains a network and needs {exc.name}: "
              'pip install "survey-bars[train]" (or pip install -e ".[train]" in a checkout).', file=sys.stderr)
        return 2
    if head:
        print(f"length head: trained on {rec['n_train']} maps; held-out median rel. err "
              f"{100 * rec.get('holdout_median_rel_err', float('nan')):.1f} %; errors: scatter {100 * rec.get('scatter_frac', float('nan')):.1f} % "
              f"+ floors {rec.get('floor_model_px', float('nan')):.2f} model px and {rec.get('floor_native_px', float('nan')):.2f} input px")
        return 0
    print(f"calibration ({args.method}): slope {cal['slope']:.3f}, intercept {cal['intercept']:.2f} px, scatter {100 * cal['scatter_frac']:.1f} %, n={cal['n']}")
    return 0
