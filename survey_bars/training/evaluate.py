"""Evaluate a model bundle on a labelled set, with the exported ONNX graph (no torch).

The card's ``metrics`` come from the training run's test split (15 % of the training
simulations, ~2000 discs for the default bundle), so the bar AUC among discs is known to about
+-0.006. ``survey-bars evaluate`` measures the shipped artefact itself, the ONNX forward graph
run by onnxruntime exactly as the workers run it, on any labelled set:

- with no ``--data``, on fresh simulations of the training survey mix under a seed that is not
  the training seed (default 6000 galaxies, seed 4242), which narrows the interval;
- with ``--data`` (and ``--labels``), on the user's own labelled cutouts, in the label format
  of ``survey-bars train``.

``--write-card`` records the result in the card's ``evaluation`` object (the ONNX files and
their hashes are unchanged).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

from ..inference.bundle import CLASS_NAMES, length_definition, load_bundle, write_card
from ..inference.runtime import ModelRuntime
from ..normalise import NormaliseConfig
from ..simulate import simulate
from .data import CLASS_MAP, load_labels, preprocess
from .metrics import expected_calibration_error, roc_auc, roc_auc_interval

__all__ = ["evaluate_bundle", "score_forward", "configure_parser", "run_cli"]

#: Classes counted as discs for the bar AUC among discs (as in the training metrics).
DISC_CLASSES = ("disc", "barred", "disk", "spiral", "featured", "face_on")


def _log(msg):
    print(f"[evaluate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def score_forward(probs, class_names, length_direct_px, labels, arcsec_per_model_px):
    """Held-out metrics of a forward graph's outputs against labels.

    Parameters
    ----------
    probs : ndarray
        (N, K) calibrated probabilities, columns named by ``class_names`` (which must include
        ``p_smooth``, ``p_edge_on``, ``p_disc``, ``p_bar`` and ``p_spiral``).
    class_names : list of str
        Column names of ``probs``.
    length_direct_px : ndarray
        (N,) direct bar length in model-frame pixels.
    labels : pandas.DataFrame
        :func:`survey_bars.training.train.load_labels` rows of the same galaxies.
    arcsec_per_model_px : ndarray
        (N,) model-frame pixel size in arcsec.

    Returns
    -------
    dict
        Counts, morphology accuracy and ECE, bar AUC (all and among discs, the latter with a
        95 % bootstrap interval), bar and spiral ECE, and the direct length's Pearson r,
        median relative error and RMSE (arcsec). Metrics whose labels are absent are left out.
        Discs are the galaxies whose ``class`` is one of :data:`DISC_CLASSES`; where no galaxy
        has a known class, every galaxy with a bar label counts.
    """

    col = {c: i for i, c in enumerate(class_names)}
    missing = [c for c in CLASS_NAMES if c not in col]
    if missing:
        msg = f"The forward graph has no {missing} columns (class_names {class_names}); it cannot be scored."
        raise ValueError(msg)
    probs = np.asarray(probs, dtype=float)
    out = {"n": int(len(probs))}
    # the three exclusive classes: smooth, edge-on disc, face-on disc (p_edge_on <= p_disc)
    p3 = np.stack([probs[:, col["p_smooth"]], probs[:, col["p_edge_on"]],
                   np.clip(probs[:, col["p_disc"]] - probs[:, col["p_edge_on"]], 0, 1)], axis=1)
    morph = labels["morph"].to_numpy()
    ok = morph >= 0
    if ok.any():
        pred = p3[ok].argmax(axis=1)
        out["morph_accuracy"] = float((pred == morph[ok]).mean())
        out["ece_morph"] = expected_calibration_error(p3[ok].max(axis=1), pred == morph[ok])
        out["smooth_auc"] = roc_auc(p3[ok, 0], morph[ok] == 0)
        out["edge_on_auc"] = roc_auc(p3[ok, 1], morph[ok] == 1)
    bar = labels["has_bar"].to_numpy(float)
    p_bar = probs[:, col["p_bar"]]
    okb = np.isfinite(bar)
    if okb.any():
        out["bar_auc"] = roc_auc(p_bar[okb], bar[okb] > 0.5)
        out["ece_bar"] = expected_calibration_error(p_bar[okb], bar[okb] > 0.5)
        discs = okb & labels["class"].isin(DISC_CLASSES).to_numpy()
        if not labels["class"].isin(list(CLASS_MAP)).any():
            discs = okb  # no morphology classes given: every galaxy with a bar label counts
        out["n_discs"] = int(discs.sum())
        out["n_barred_discs"] = int((bar[discs] > 0.5).sum())
        out["bar_auc_discs"] = roc_auc(p_bar[discs], bar[discs] > 0.5)
        out["bar_auc_discs_ci95"] = list(roc_auc_interval(p_bar[discs], bar[discs] > 0.5))
        out["bar_accuracy"] = float(((p_bar[okb] > 0.5) == (bar[okb] > 0.5)).mean())
    sp = labels["has_spiral"].to_numpy(float)
    oks = np.isfinite(sp)
    if oks.any():
        out["spiral_auc"] = roc_auc(probs[oks, col["p_spiral"]], sp[oks] > 0.5)
        out["ece_spiral"] = expected_calibration_error(probs[oks, col["p_spiral"]], sp[oks] > 0.5)
    true = labels["bar_length_arcsec"].to_numpy(float)
    pred = np.asarray(length_direct_px, dtype=float) * np.asarray(arcsec_per_model_px, dtype=float)
    okl = np.isfinite(true) & (true > 0) & (np.nan_to_num(bar, nan=1.0) > 0.5) & np.isfinite(pred)
    if okl.sum() >= 3:
        out["direct_length_n"] = int(okl.sum())
        out["direct_length_pearson_r"] = float(np.corrcoef(pred[okl], true[okl])[0, 1])
        out["direct_length_median_rel_err"] = float(np.median(np.abs(pred[okl] - true[okl]) / true[okl]))
        out["direct_length_rmse_arcsec"] = float(np.sqrt(np.mean((pred[okl] - true[okl]) ** 2)))

    def _clean(v):
        if isinstance(v, list):
            return [_clean(x) for x in v]
        if isinstance(v, float):
            return round(v, 5) if np.isfinite(v) else None
        return v

    return {k: _clean(v) for k, v in out.items()}


def evaluate_bundle(bundle_path=None, data_dirs=None, *, labels=None, n=6000, seed=4242, survey="mixed", workdir=None,
                    workers=1, write=False, batch=512):
    """Score a bundle's ONNX forward graph on a labelled set.

    Parameters
    ----------
    bundle_path : str, optional
        Bundle directory (default: the shipped default bundle).
    data_dirs : list of str, optional
        Labelled data, as for ``survey-bars train``. None simulates ``n`` galaxies instead.
    labels : str, optional
        Label table for ``data_dirs`` (default: each directory's ``truth.parquet``, whose
        simulated lengths are scaled to the bundle's
        :func:`~survey_bars.inference.bundle.length_definition`; a table's lengths are taken as given).
    n : int, optional
        Galaxies to simulate when ``data_dirs`` is None.
    seed : int, optional
        Simulation seed; must differ from the bundle's training seed.
    survey : str, optional
        Survey preset of the simulations.
    workdir : str, optional
        Keep the simulations here (reused by a later call with the same ``n`` and ``seed``);
        default a temporary directory, removed after.
    workers : int, optional
        Simulation and preprocessing processes.
    write : bool, optional
        Record the result in the card's ``evaluation`` object.
    batch : int, optional
        Galaxies per onnxruntime call.

    Returns
    -------
    dict
        ``data`` (what was scored), ``metrics`` (see :func:`score_forward`), ``seconds``,
        ``n_unusable`` (files preprocessing rejected; they are left out and counted).

    Raises
    ------
    ValueError
        For a seed equal to the training seed, unreadable labels, or no usable file.
    """
    import shutil

    import pandas as pd

    t0 = time.time()
    bundle = load_bundle(bundle_path)
    own = False
    if data_dirs is None:
        if int(bundle.card.get("training", {}).get("seed", -1)) == int(seed):
            msg = f"The evaluation seed {seed} equals the training seed; choose another (--seed)."
            raise ValueError(msg)
        own = workdir is None
        workdir = workdir or tempfile.mkdtemp(prefix="survey-bars-eval-")
        truth = os.path.join(workdir, "truth.parquet")
        reuse = False
        if os.path.isfile(truth):
            t = pd.read_parquet(truth, columns=["object_id"])
            reuse = len(t) == n and bool(t["object_id"].str.startswith(f"sim{seed}-").all())
        if not reuse:

            simulate(workdir, n, survey=survey, seed=seed, workers=workers)
        data = {"simulated": True, "n": int(n), "seed": int(seed), "survey": survey}
        dirs = [workdir]
    else:
        dirs = [os.fspath(d) for d in data_dirs]
        data = {"simulated": False, "directories": [os.path.abspath(d) for d in dirs],
                "labels": os.path.abspath(labels) if labels else "truth.parquet of each directory"}
    try:
        lab = load_labels(dirs, labels)
        if labels is None:  # the simulator's truth: its formal lengths, as the bundle defines its own
            lab["bar_length_arcsec"] = lab["bar_length_arcsec"] * length_definition(bundle.card)["fraction_of_formal"]
        cfg = NormaliseConfig.from_dict(bundle.card["preprocessing"])
        prep = preprocess(lab["path"].tolist(), lab["pixel_scale_arcsec"].to_numpy(), cfg, workers=workers, cache=False,
                          log=_log)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    good = prep["error"] == ""
    if not good.any():
        msg = f"None of the {len(lab)} labelled files could be preprocessed, e.g. {lab['path'].iloc[0]}: {prep['error'][0]}"
        raise ValueError(msg)
    rt = ModelRuntime(bundle)
    images = prep["images"][good]
    probs, length = [], []
    for i in range(0, len(images), batch):
        o = rt.forward(images[i : i + batch])
        probs.append(o["probs"])
        length.append(o["bar_length_direct"])
    lab_ok = lab[good].reset_index(drop=True)
    pix = np.where(np.isfinite(lab_ok["pixel_scale_arcsec"].to_numpy()), lab_ok["pixel_scale_arcsec"].to_numpy(),
                   prep["pixel_scale"][good])
    metrics = score_forward(np.concatenate(probs), bundle.class_names, np.concatenate(length), lab_ok,
                            prep["scale"][good] * pix)
    result = {"data": data, "metrics": metrics, "n_unusable": int((~good).sum()), "graph": "forward.onnx (onnxruntime)",
              "seconds": round(time.time() - t0, 1)}
    if write:
        card = dict(bundle.card)
        card["evaluation"] = result
        write_card(bundle.path, card)
    return result


def configure_parser(parser):
    """Add the ``evaluate`` options to an argparse parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("--model", default=None, help="Bundle directory (default: the shipped default bundle).")
    parser.add_argument("--data", nargs="+", default=None,
                        help="Labelled directories (as for 'survey-bars train'); default: fresh simulations.")
    parser.add_argument("--labels", default=None, help="Label table for --data (default: each directory's truth.parquet).")
    parser.add_argument("-n", type=int, default=6000, help="Galaxies to simulate without --data (default %(default)s).")
    parser.add_argument("--seed", type=int, default=4242, help="Simulation seed, not the training seed (default %(default)s).")
    parser.add_argument("--survey", default="mixed", help="Survey preset of the simulations (default %(default)s).")
    parser.add_argument("--workers", type=int, default=1, help="Simulation and preprocessing processes.")
    parser.add_argument("--workdir", default=None, help="Keep the simulations here.")
    parser.add_argument("--write-card", action="store_true", help="Record the result in the card's 'evaluation'.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")


def run_cli(args):
    """Run ``survey-bars evaluate``.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    int
        Exit code (2 for bad input).
    """
    import json

    try:
        res = evaluate_bundle(args.model, args.data, labels=args.labels, n=args.n, seed=args.seed, survey=args.survey,
                              workdir=args.workdir, workers=args.workers, write=args.write_card)
    except (ValueError, FileNotFoundError) as exc:
        print(f"survey-bars evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    m = res["metrics"]
    print(f"scored {m['n']} galaxies ({res['n_unusable']} unusable) in {res['seconds']} s")
    for k, v in m.items():
        if k != "n":
            print(f"  {k}: {v}")
    return 0
