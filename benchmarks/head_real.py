"""Can the length head read real bar lengths off the saliency maps? Cross-validation on the training folds.

The learned length head of bundles up to 5.0 learns from the maps of simulated bars only. This
benchmark measures what it gains by also learning the volunteers' lengths (Hoyle et al. 2011)
of real bars, as :func:`survey_bars.training.calibrate.calibrate_head` does with ``real_root``
(bundle 5.1), and chooses how much of the simulations to mix in. For a bundle (default: the
shipped one) it

1. makes the SmoothGrad maps of the volunteer-measured bars (<= 15") of the real-dev training
   folds 0-3 through the pipeline (:func:`~survey_bars.training.calibrate.real_length_maps`);
2. makes those of ``--n`` barred simulations (seed 5150, the build's head seed; the bars the
   bundle detects), keeps 10 % of them out, and trains a head on the rest, as the build does;
3. scores that head on the real bars (``none``), then, for each fold k of 0-3 and each
   ``--mix`` m, fine-tunes a copy on the other three folds' real bars with m simulated maps mixed
   in (:func:`survey_bars.training.head.fine_tune_out_of_fold`, the build's settings) and predicts the
   bars of fold k.

It reports, pooled over the out-of-fold predictions: Pearson r against the volunteers' lengths
(arcsec), the median relative error and the median ratio volunteer / head; and the correlation
of log lengths on the held-out simulated bars (the mean over the four fine-tuned heads). The
test fold 4 is never read. Run::

    python -m benchmarks.head_real [--model DIR --n 4000 --mix 0,600 --stamp-copies --format-copies --linear-copies 2
                                    --length-frame auto --workdir DIR --out-json FILE]

Torch (the ``[train]`` extra) trains the heads. The real-dev data are read from
``$SURVEY_BARS_REAL_DEV`` or ``../shared/data/real-dev``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from .common import has_torch, print_json_line, real_dev_root


def _scores(pred_px, true_px, true_arcsec):
    """r (arcsec), median relative error and median ratio volunteer / predicted."""
    pred = np.asarray(pred_px, float) * (true_arcsec / true_px)  # each bar's arcsec per model pixel
    return {"pearson_r": float(np.corrcoef(pred, true_arcsec)[0, 1]),
            "median_rel_err": float(np.median(np.abs(pred - true_arcsec) / true_arcsec)),
            "median_ratio": float(np.median(true_arcsec / pred))}


def _log_r(pred, true):
    return float(np.corrcoef(np.log(pred), np.log(true))[0, 1])


#: The kind of input of each head source directory (:func:`survey_bars.training.calibrate.head_sources`).
_KINDS = {"small-stamps-display": "small_display", "small-stamps": "small_fits", "display": "full_display"}


def run(model=None, *, n=4000, seed=5150, workdir=None, epochs=30, real_epochs=None, lr=None, mixes=(0, 600),
        threads=2, root=None, holdout_frac=0.1, p_bar_min=0.5, stamp_copies=False, format_copies=False, linear_copies=0,
        length_frame=None, log=None):
    """Cross-validate the fine-tuning of a length head on the real training folds.

    Parameters
    ----------
    model : str, optional
        Bundle directory (default: the shipped bundle).
    n, seed : int, optional
        Barred simulations whose maps train the head, and their seed.
    workdir : str, optional
        Where the simulations go (reused when they are already there).
    epochs : int, optional
        Epochs of the head on the simulated maps.
    real_epochs, lr : optional
        Fine-tuning epochs and peak learning rate (default: the build's,
        :data:`survey_bars.training.calibrate.REAL_HEAD`).
    mixes : sequence of int, optional
        Simulated maps mixed into the fine-tuning; one cross-validation each.
    threads : int, optional
        Torch and onnxruntime threads, and simulation processes.
    root : str, optional
        The real-dev directory (default :func:`survey_bars.training.realdata.default_root`).
    holdout_frac : float, optional
        Fraction of the simulated bars kept out of every training, to score on.
    p_bar_min : float, optional
        Simulated bars count as detected, and train the head, from this ``p_bar``.
    stamp_copies : bool, optional
        Also train the head on the maps of the simulations' small-stamp display copies, as
        ``calibrate_head(..., stamp_copies=True)`` does (``build_default --head-stamp-copies``).
        The copies of the held-out simulations are left out of training; the scores are on the
        held-out full-size simulations either way.
    format_copies : bool, optional
        Also train the head on the maps of the small FITS stamps and of display JPEGs of the
        full-size stamps (``calibrate_head(..., format_copies=True)``,
        ``build_default --head-format-copies``); those of held-out simulations are left out too,
        and the scores on the held-out maps are given per kind of input (``sim_by_input``).
    linear_copies : int, optional
        Also make this many linear single-band FITS copies of each real bar's JPEG
        (:func:`~survey_bars.training.calibrate.real_length_maps`, ``build_default
        --head-real-linear-copies``). Every head is then also scored on the copies' maps
        (``copies_*``, out of fold: a fold's copies are predicted by the head without that fold),
        and each mix is cross-validated a second time as ``mix=m+copies``: the copies learned beside
        the JPEGs, with the simulations' units set by the JPEGs' maps alone, as the build does.
    length_frame : str, optional
        The frame of the real maps (``RunOptions.length_frame``; default the build's,
        :data:`survey_bars.training.calibrate.CALIBRATION_FRAME`). Only linear copies that cut
        their galaxy can differ: ``"auto"`` gives them the frame ``survey-bars process`` does.
    log : callable, optional
        Progress lines (default: standard error).

    Returns
    -------
    dict
        ``n_real``, ``n_sim_train``, ``n_sim_holdout`` and, under ``results``, the scores of
        ``"none"`` (the head of the simulations) and of each ``"mix=m"``.
    """
    import torch

    from survey_bars.inference.bundle import DEFAULT_BUNDLE, load_bundle
    from survey_bars.inference.runtime import ModelRuntime
    from survey_bars.training import realdata
    from survey_bars.training.calibrate import CALIBRATION_FRAME, REAL_HEAD, _barred_simulations, detected_bar_maps, head_sources, real_length_maps
    from survey_bars.training.head import HeadGraph, fine_tune_out_of_fold, train_head

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    real_epochs = REAL_HEAD["epochs"] if real_epochs is None else int(real_epochs)
    lr = REAL_HEAD["lr"] if lr is None else float(lr)
    t0 = time.time()
    rt = ModelRuntime(load_bundle(model or DEFAULT_BUNDLE), threads=threads)
    maps, lengths, ids, is_copy = real_length_maps(rt, root, realdata.TRAIN_FOLDS, threads=threads,
                                                   linear_copies=linear_copies, seed=seed, return_is_copy=True,
                                                   length_frame=length_frame)
    labels = realdata.load_gz2_bars(root).set_index("object_id")
    labels.index = labels.index.astype(str)
    fold = labels.loc[ids, "fold"].to_numpy(int)
    arcsec = labels.loc[ids, "hoyle_bar_length_arcsec"].to_numpy(float)
    jpeg = ~is_copy
    log(f"head_real: {int(jpeg.sum())} real bars with a volunteer length in folds {list(realdata.TRAIN_FOLDS)}"
        + (f", and {int(is_copy.sum())} maps of their linear copies" if linear_copies else ""))
    with tempfile.TemporaryDirectory(prefix="survey-bars-head-real-") as tmp, \
            _barred_simulations(workdir, n, seed, "mixed", threads, "survey-bars-head-real-") as sim_dir:
        sources = head_sources(sim_dir, seed, threads, stamp_copies=stamp_copies, format_copies=format_copies)
        kinds = [_KINDS.get(os.path.relpath(src, sim_dir), "full_fits") for src in sources]
        frames, stacks = zip(*(detected_bar_maps(src, rt, os.path.join(tmp, str(k)), p_bar_min)
                               for k, src in enumerate(sources)))
    d = frames[0]  # the full-size simulations; their copies share the object ids
    if len(d) < 20:
        msg = f"Only {len(d)} of {n} simulated bars were detected (p_bar >= {p_bar_min}): too few. Simulate more (--n)."
        raise ValueError(msg)
    sim_maps, sim_len = stacks[0], d["true_length_model"].to_numpy(float)
    order = np.random.default_rng(seed).permutation(len(sim_len))
    n_out = round(holdout_frac * len(sim_len))
    out, fit = order[:n_out], order[n_out:]
    held = set(d["object_id"].iloc[out])
    train_maps = np.concatenate([sim_maps[fit]] + [m[~f["object_id"].isin(held).to_numpy()] for f, m in zip(frames[1:], stacks[1:])])
    train_len = np.concatenate([sim_len[fit]] + [f.loc[~f["object_id"].isin(held), "true_length_model"].to_numpy(float)
                                                 for f in frames[1:]])
    log(f"head_real: {len(sim_len)} detected simulated bars, {len(fit)} to train on ({len(train_len)} maps with the "
        f"copies), {len(out)} held out")
    torch.set_num_threads(int(threads))
    base = train_head(train_maps, train_len, epochs=epochs, seed=seed, threads=threads)

    def predict(head, m):
        with torch.no_grad():
            return HeadGraph(head)(torch.as_tensor(np.asarray(m, np.float32)[:, None])).numpy().astype(float)

    def by_input(head, scale):
        """Held-out simulations per kind of input: median head / truth (in the head's units) and log r."""
        res = {}
        for kind, f, m in zip(kinds, frames, stacks):
            k = f["object_id"].isin(held).to_numpy()
            if k.sum() >= 3:
                p, t = predict(head, m[k]), scale * f.loc[k, "true_length_model"].to_numpy(float)
                res[kind] = {"n": int(k.sum()), "median_ratio": float(np.median(p / t)), "log_r": _log_r(p, t)}
        return res

    def real_scores(pred):
        """Scores on the JPEGs' maps and, with copies, on the copies' (``copies_*``)."""
        res = _scores(pred[jpeg], lengths[jpeg], arcsec[jpeg])
        if is_copy.any():
            res.update({f"copies_{q}": v for q, v in _scores(pred[is_copy], lengths[is_copy], arcsec[is_copy]).items()})
        return res

    results = {"none": {**real_scores(predict(base, maps)),
                        "sim_log_r": _log_r(predict(base, sim_maps[out]), sim_len[out]), "sim_by_input": by_input(base, 1.0)}}
    variants = [(f"mix={mix}", mix, jpeg) for mix in mixes]
    if linear_copies:
        variants += [(f"mix={mix}+copies", mix, np.ones(len(lengths), bool)) for mix in mixes]
    for name, mix, learn in variants:
        oof, sim_r, scales, per_input = np.full(len(lengths), np.nan), [], [], []
        heads = fine_tune_out_of_fold(base, maps[learn], lengths[learn], fold[learn], realdata.TRAIN_FOLDS, train_maps,
                                      train_len, scale_mask=jpeg[learn], epochs=real_epochs, lr=lr, n_sims=mix,
                                      batch_size=REAL_HEAD["batch_size"], seed=seed, threads=threads)
        for k, (tuned, info) in heads.items():
            scale = info["simulated_length_scale"]
            oof[fold == k] = predict(tuned, maps[fold == k])  # a fold's JPEGs and copies, by the head without them
            q = predict(tuned, sim_maps[out])
            sim_r.append(_log_r(q, scale * sim_len[out]))
            scales.append(scale)
            per_input.append(by_input(tuned, scale))
        results[name] = {**real_scores(oof), "sim_log_r": float(np.mean(sim_r)),
                         "simulated_length_scale": float(np.mean(scales)),
                         "sim_by_input": {kind: {q: float(np.mean([r[kind][q] for r in per_input]))
                                                 for q in per_input[0][kind]} for kind in per_input[0]}}
        log(f"head_real: {name}: {results[name]}")
    return {"model": str(rt.bundle.path), "version": rt.bundle.card.get("version"), "split": realdata.SPLIT_ID,
            "folds": list(realdata.TRAIN_FOLDS), "n_real": int(jpeg.sum()), "n_real_copies": int(is_copy.sum()),
            "linear_copies": int(linear_copies), "length_frame": length_frame or CALIBRATION_FRAME, "n_sim_train": len(train_len), "stamp_copies": bool(stamp_copies),
            "format_copies": bool(format_copies), "n_sim_holdout": len(out),
            "n": int(n), "seed": int(seed), "epochs": int(epochs), "real_epochs": real_epochs, "lr": lr,
            "results": results, "seconds": round(time.time() - t0, 1)}


def main(argv=None):
    """Command-line entry point.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
    """
    p = argparse.ArgumentParser(prog="python -m benchmarks.head_real", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="bundle directory (default: the shipped bundle)")
    p.add_argument("--n", type=int, default=4000, help="barred simulations (default %(default)s)")
    p.add_argument("--seed", type=int, default=5150)
    p.add_argument("--workdir", help="where the simulations go (reused when there)")
    p.add_argument("--epochs", type=int, default=30, help="head epochs on the simulated maps (default %(default)s)")
    p.add_argument("--real-epochs", type=int, default=None, help="fine-tuning epochs (default: the build's)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning peak learning rate (default: the build's)")
    p.add_argument("--mix", default="0,600", help="simulated maps mixed in, comma-separated (default %(default)s)")
    p.add_argument("--stamp-copies", action="store_true",
                   help="also train the head on the small-stamp display copies' maps (build_default --head-stamp-copies)")
    p.add_argument("--format-copies", action="store_true",
                   help="also train the head on the small FITS stamps' and full-size display copies' maps "
                        "(build_default --head-format-copies)")
    p.add_argument("--linear-copies", type=int, default=0, metavar="N",
                   help="also N linear FITS copies of each real bar: scored, and learned in a second cross-validation "
                        "per mix (build_default --head-real-linear-copies; default %(default)s)")
    p.add_argument("--length-frame", choices=("auto", "measured", "softened"), default=None,
                   help="frame of the real maps (survey-bars process --length-frame; default: the build's, measured)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-json", help="also write the result here")
    a = p.parse_args(argv)
    root = real_dev_root("benchmarks.head_real")
    if root is None or not has_torch("benchmarks.head_real"):
        return 2
    mixes = [int(m) for m in a.mix.split(",") if m.strip()]
    res = run(a.model, n=a.n, seed=a.seed, workdir=a.workdir, epochs=a.epochs, real_epochs=a.real_epochs, lr=a.lr,
              mixes=mixes, threads=a.threads, root=root, stamp_copies=a.stamp_copies,
              format_copies=a.format_copies, linear_copies=a.linear_copies, length_frame=a.length_frame)
    res["command"] = "python -m benchmarks.head_real " + " ".join(argv if argv is not None else sys.argv[1:])
    print_json_line(res, a.out_json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
