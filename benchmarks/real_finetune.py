"""Which real fine-tuning of the morphology network? Scored on real galaxies its training never saw.

Bundle 5.4 fine-tunes the tail of the morphology network after its training with the real
training folds weighted up (:func:`survey_bars.training.train.train`'s ``finetune``,
``build_default --real-finetune-epochs --real-finetune-part``). This benchmark chooses how. For a bundle that ``build_default`` trained
without the fine-tuning (5.3's networks) and the build's working directory (its
``training_labels.csv``), it

1. reads the training set and the split the bundle was trained with
   (:func:`~survey_bars.training.train.bundle_training_data`: seed 1, 15 % validation, 15 % test);
2. scores the bundle's network on the validation and test rows: the real ones (GZ2 bars and GZ1
   classes of the real-dev folds 0-3) and the simulated discs;
3. for each variant ``repeat,others,epochs,lr[,part]`` fine-tunes the network as the build does
   (:func:`~survey_bars.training.train._finetune_morph`: the real training rows ``repeat`` times
   and ``others`` other training rows per epoch; ``part`` ``all``, the default, or ``tail``, the
   saliency path frozen) and scores it again.

The validation and test rows were never trained on (the validation rows chose the training's
best epoch and fitted the temperatures, which do not change a ROC AUC). The real-dev test fold 4
is never read. A variant with ``repeat`` 1 and every other row is the control: as many more
steps without the real weighting. Scores are ROC AUCs of the flip-averaged logits: ``gz2_bar``
(GZ2 barred against unbarred), ``gz1_smooth`` (ellipticals against the rest), ``gz1_edge_on``
(edge-on discs against the rest), ``gz1_spiral`` (spirals against ellipticals) and
``sim_bar_discs`` (the simulated discs' bars). Run::

    python -m benchmarks.real_finetune --model BUNDLE --workdir DIR [--variant 2,10000,4,5e-4 ...] [--out-json FILE]

About 1 minute per scoring and 30-50 s per fine-tuning epoch on 2 cores. Torch (the ``[train]``
extra) is needed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .common import has_torch, print_json_line

#: The real sources of ``build_default``'s training table.
REAL_SOURCES = ("gz1", "gz2")


def _auc(label, score):
    from survey_bars.training.metrics import roc_auc

    label = np.asarray(label, bool)
    if label.all() or not label.any():
        return None
    return round(float(roc_auc(np.asarray(score, float), label)), 4)


def scores(net, data, idx, sources=REAL_SOURCES):
    """The ROC AUCs of ``net`` on the rows ``idx`` (see the module docstring) and their counts."""
    from survey_bars.training.nets import MORPH_CLASSES, flip_average
    from survey_bars.training.train import _predict

    z = _predict(net, data["images"][idx], flip_average)
    lab = data["labels"]
    src = data["table"]["source"].values[data["keep"]][idx]
    cls, bar, spiral = lab["class"][idx], lab["has_bar"][idx], lab["has_spiral"][idx]
    zm = z[:, :3] - z[:, :3].max(axis=1, keepdims=True)
    p = np.exp(zm) / np.exp(zm).sum(axis=1, keepdims=True)
    k = {c: i for i, c in enumerate(MORPH_CLASSES)}
    g2 = (src == "gz2") & np.isfinite(bar)
    g1 = src == "gz1"
    sp = g1 & ((cls == "smooth") | (spiral == 1))
    sim = ~np.isin(src, sources) & np.isin(cls, ["disc", "barred"]) & np.isfinite(bar)
    out = {"gz2_bar": _auc(bar[g2] > 0.5, z[g2, 3]),
           "gz1_smooth": _auc(cls[g1] == "smooth", p[g1, k["smooth"]]),
           "gz1_edge_on": _auc(cls[g1] == "edge_on", p[g1, k["edge_on"]]),
           "gz1_spiral": _auc(spiral[sp] == 1, z[sp, 4]),
           "sim_bar_discs": _auc(bar[sim] > 0.5, z[sim, 3])}
    out["n"] = {"gz2": int(g2.sum()), "gz1": int(g1.sum()), "sim_discs": int(sim.sum())}
    return out


def parse_variant(text):
    """``"repeat,others,epochs,lr[,part[,linear_copies]]"`` -> the ``finetune`` dict of :func:`survey_bars.training.train.train`."""
    try:
        words = text.split(",")
        if len(words) not in (4, 5, 6) or (len(words) >= 5 and words[4] not in ("all", "tail")):
            raise ValueError
        repeat, others, epochs, lr = words[:4]
        linear = int(words[5]) if len(words) == 6 else 0
        if linear < 0:
            raise ValueError
        return {"repeat": int(repeat), "others": int(others), "epochs": int(epochs), "lr": float(lr),
                "part": words[4] if len(words) >= 5 else "all", "linear_copies": linear}
    except ValueError:
        msg = (f"A variant is repeat,others,epochs,lr[,all|tail[,linear_copies]] (e.g. 2,10000,4,5e-4 or "
               f"4,20000,6,1e-3,tail,2); got {text!r}.")
        raise ValueError(msg) from None


def linear_view(data, idx, cfg, *, workers=1, sources=REAL_SOURCES):
    """``data`` with the real colour frames among the rows ``idx`` replaced by their linear r-band copies.

    The display stretch is undone with Q = :data:`survey_bars.training.realdata.LUPTON_Q`
    (:func:`survey_bars.training.data.linear_frames`): the same galaxies as a survey's linear FITS
    image of the r band would show them. Returns ``(data, n)``, ``n`` the rows replaced.
    """
    from survey_bars.training.data import linear_frames
    from survey_bars.training.realdata import LUPTON_Q

    src = data["table"]["source"].values[data["keep"]]
    rows = np.asarray(idx)[np.isin(src[idx], list(sources))]
    paths = data["table"]["path"].values[data["keep"]][rows]
    frames, ok = linear_frames(list(paths), cfg, copies=1, q_range=(LUPTON_Q, LUPTON_Q), bands=("r",), workers=workers)
    images = data["images"].copy()
    images[rows[ok]] = frames
    return {**data, "images": images}, int(ok.sum())


def run(model, workdir, variants, *, labels=None, seed=1, threads=2, batch_size=128, sources=REAL_SOURCES, log=None):
    """Score a bundle's network and its fine-tuned variants on the unseen rows of its training split.

    Parameters
    ----------
    model : str
        A bundle trained by ``build_default`` without the real fine-tuning.
    workdir : str
        The build's working directory (its simulations and ``training_labels.csv``).
    variants : list of dict
        ``{"repeat", "others", "epochs", "lr", "part"}`` each (:func:`parse_variant`).
    labels : str, optional
        The label table (default ``workdir/training_labels.csv``).
    seed, threads, batch_size : int, optional
        The build's (seed 1, 2 threads, batch 128).
    sources : sequence of str, optional
        The training table's sources to weight up (default the real ones, :data:`REAL_SOURCES`).
    log : callable, optional

    Returns
    -------
    dict
        ``split``, ``base`` and ``variants`` (each with its settings, ``validation`` and ``test``
        scores and ``seconds``).
    """
    import torch

    from survey_bars.inference.bundle import load_bundle
    from survey_bars.training.export import torch_from_bundle
    from survey_bars.training.train import _finetune_morph, _linear_extra, bundle_training_data

    log = log or (lambda m: print(m, file=sys.stderr))
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    bundle = load_bundle(model)
    labels = labels or os.path.join(workdir, "training_labels.csv")
    data, (tr, va, te) = bundle_training_data(bundle, [workdir], labels=labels, seed=seed, workers=threads, log=log)
    focus = np.isin(data["table"]["source"].values[data["keep"]], list(sources))
    out = {"split": {"seed": seed, "train": int(len(tr)), "validation": int(len(va)), "test": int(len(te)),
                     "real_train": int(focus[tr].sum())},
           "real_dev_folds": "0-3 (the bundle's real training folds; fold 4 is never read)"}
    from survey_bars.normalise import NormaliseConfig

    cfg = NormaliseConfig.from_dict(bundle.card["preprocessing"])
    lin, n_lin = linear_view(data, np.concatenate([va, te]), cfg, workers=threads, sources=sources)
    out["linear_rows"] = n_lin

    def all_scores(net):
        return {"validation": scores(net, data, va, sources), "test": scores(net, data, te, sources),
                "validation_linear": scores(net, lin, va, sources), "test_linear": scores(net, lin, te, sources)}

    base = torch_from_bundle(bundle)[0]
    out["base"] = all_scores(base)
    log(f"base: {out['base']}")
    out["variants"] = []
    linear_extra = {}  # the copies' frames, made once per number of copies
    for v in variants:
        t0 = time.time()
        extra, n_copies = None, int(v.get("linear_copies") or 0)
        if n_copies:
            if n_copies not in linear_extra:
                linear_extra[n_copies] = _linear_extra(data, tr[focus[tr]], n_copies, seed=seed, cfg=cfg,
                                                       workers=threads, log=log)[0]
            extra = linear_extra[n_copies]
        net = _finetune_morph(torch_from_bundle(bundle)[0], data["images"], data["labels"], tr, va, focus,
                              epochs=v["epochs"], repeat=v["repeat"], others=v["others"], lr=v["lr"],
                              batch_size=batch_size, seed=seed, log=log, geometry=data["geometry"], part=v["part"],
                              extra=extra)
        res = {**v, "seconds": round(time.time() - t0, 1), **all_scores(net)}
        log(f"variant {v}: {res}")
        out["variants"].append(res)
    return out


def main(argv=None):
    """Command-line entry point.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
    """
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a bundle trained by build_default without the real fine-tuning")
    p.add_argument("--workdir", required=True, help="the build's working directory (its training_labels.csv)")
    p.add_argument("--variant", action="append", default=[], metavar="REPEAT,OTHERS,EPOCHS,LR[,PART[,LINEAR]]",
                   help="a fine-tuning to score (repeatable; e.g. 2,10000,4,5e-4, or 4,20000,6,1e-3,tail,2 with 2 linear copies)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-json", help="also write the result here")
    a = p.parse_args(argv)
    if not has_torch("benchmarks.real_finetune"):
        return 2
    try:
        variants = [parse_variant(v) for v in a.variant]
    except ValueError as exc:
        p.error(str(exc))
    res = run(a.model, a.workdir, variants, seed=a.seed, threads=a.threads)
    res["command"] = "python -m benchmarks.real_finetune " + " ".join(argv if argv is not None else sys.argv[1:])
    print_json_line(res, a.out_json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
