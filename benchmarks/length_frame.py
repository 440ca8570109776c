"""Which frame should a FITS input's bar be measured in? The real training folds against the simulations.

``survey-bars process --length-frame`` chooses the frame in which a linear (FITS) input's
SmoothGrad map and bar lengths are made (:class:`survey_bars.pipeline.RunOptions`):
``measured``, the model frame, sized by the half-light radius of the galaxy's flux,
``softened``, a wider frame sized by the half-light radius of ``arcsinh(flux / (s * noise))``,
or ``auto`` (the default), softened where the stamp cuts the galaxy. This benchmark scores
them, the softened frame with each softening ``s`` of ``--softening`` and ``auto`` with the
first, on

1. the volunteer-measured bars (Hoyle et al. 2011, <= 15") of the real-dev **training folds 0-3**,
   each JPEG written as a linear r-band FITS file (the display stretch undone, Q = 8, as
   ``benchmarks.real`` does for fold 4; :func:`survey_bars.training.realdata.write_linear_fits`):
   Pearson r, median ratio (ours / volunteers), median relative error and the share within
   1 sigma, with ``--p-bar-min 0``, and the rows flagged ``BAR_AT_FRAME_LIMIT``; and, for the
   FITS files and their JPEGs, the volunteers' lengths in the pixels of the model frame
   (``real_in_model_frame``: the median, and how many bars are longer than the frame);
2. ``--n`` simulations of seed 4242 (``--sims``, e.g. the build's ``evaluation-4242-2000``
   directory; simulated here when not given): the same figures for the true bars that reach
   ``p_bar >= 0.5`` and are measured in every frame, against 0.541 times the formal length
   (the visible length's mean ratio), and the ratio of each frame's lengths to the measured ones.

Each set also reports the share of its stamps that cut their galaxy (``real_cut``, ``sims_cut``).

The test fold 4 is never read. Run::

    python -m benchmarks.length_frame [--model DIR --sims DIR --n 800 --softening 3,10 --out-json FILE]

It writes ``benchmarks/results/length_frame.json`` (or ``--out-json``) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np

from .common import print_json_line, real_dev_root

#: the visible bar length's mean ratio to the simulator's formal length (README, "Bar length")
VISIBLE_OVER_FORMAL = 0.541


def _scores(length, err, ref, keep):
    k = keep & np.isfinite(length)
    if k.sum() < 2:
        return {"n": int(k.sum()), "pearson_r": float("nan"), "median_ratio": float("nan"),
                "median_rel_err": float("nan"), "within_1sigma": float("nan")}
    rel = np.abs(length[k] - ref[k]) / ref[k]
    return {"n": int(k.sum()), "pearson_r": float(np.corrcoef(length[k], ref[k])[0, 1]),
            "median_ratio": float(np.median(length[k] / ref[k])), "median_rel_err": float(np.median(rel)),
            "within_1sigma": float(np.mean(np.abs(length[k] - ref[k]) <= err[k]))}


def _cut_share(items):
    """The share of the items' stamps whose galaxy segment reaches the edge (``Normalised.segment_at_edge``)."""
    from survey_bars.io.readers import read_cutout
    from survey_bars.normalise import normalise

    cut = [normalise(read_cutout(it.file, pixel_scale=it.pixel_scale).data).segment_at_edge for it in items]
    return float(np.mean(cut)) if cut else float("nan")


def _in_frame(cat, ref_arcsec, size):
    """The reference lengths in the pixels of each row's model frame: median, and how many exceed the frame."""
    px = ref_arcsec / (cat["resample_scale"].to_numpy(float) * cat["pixel_scale_arcsec"].to_numpy(float))
    ok = np.isfinite(px)
    return {"n": int(ok.sum()), "frame_px": int(size), "median_px": float(np.median(px[ok])) if ok.any() else float("nan"),
            "longer_than_frame": int((px[ok] > size).sum())}


def _run(items, frame, softening, runtime, p_bar_min):
    """The catalogue of ``items`` with one length frame (and softening), as a DataFrame."""
    import survey_bars.pipeline as pl

    old = pl.LENGTH_FRAME_SOFTENING
    pl.LENGTH_FRAME_SOFTENING = float(softening)  # the in-process pipeline reads it per item
    try:
        opts = pl.RunOptions(method="auto", p_bar_min=p_bar_min, threads=2, length_frame=frame)
        return pl.process_items(items, opts, runtime=runtime).to_pandas()
    finally:
        pl.LENGTH_FRAME_SOFTENING = old


def run(model=None, *, sims=None, n=800, softenings=(3.0, 10.0), root=None, p_bar_min=0.5, log=None):
    """Score the measured frame and each softened one on real folds 0-3 (as FITS) and on simulations.

    Parameters
    ----------
    model : str, optional
        Bundle directory (default: the shipped bundle).
    sims : str, optional
        A simulated directory with ``truth.parquet`` (default: ``n`` simulated here, seed 4242).
    n : int, optional
        Simulations scored (the first ``n``).
    softenings : sequence of float, optional
        Softenings of the softened frame, in units of the background noise.
    root : str, optional
        The real-dev directory.
    p_bar_min : float, optional
        The simulated bars are measured from this ``p_bar`` (the real ones always).
    log : callable, optional
        Progress lines (default: standard error).

    Returns
    -------
    dict
        ``real`` and ``sims``: per frame (``measured``, ``auto s=...``, ``softened s=...``), the scores.
    """
    import pandas as pd

    from survey_bars.flags import Flag
    from survey_bars.inference.bundle import DEFAULT_BUNDLE, load_bundle
    from survey_bars.inference.runtime import ModelRuntime
    from survey_bars.io.inputs import InputItem
    from survey_bars.simulate import simulate
    from survey_bars.training import realdata
    from survey_bars.training.calibrate import _real_bars

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.time()
    rt = ModelRuntime(load_bundle(model or DEFAULT_BUNDLE), threads=2)
    frames = ([("measured", 0.0), (f"auto s={softenings[0]:g}", float(softenings[0]))]
              + [(f"softened s={s:g}", float(s)) for s in softenings])
    limit = int(Flag.BAR_AT_FRAME_LIMIT)
    size = rt.bundle.preprocessing.size
    out = {"model": str(rt.bundle.path), "version": rt.bundle.card.get("version"), "split": realdata.SPLIT_ID,
           "folds": list(realdata.TRAIN_FOLDS), "real": {}, "sims": {}}
    with tempfile.TemporaryDirectory(prefix="survey-bars-length-frame-") as tmp:
        bars, items = _real_bars(root, realdata.TRAIN_FOLDS, realdata.MAX_HOYLE_ARCSEC)
        ref = bars["hoyle_bar_length_arcsec"].to_numpy(float)
        lin = [dataclasses.replace(it, file=realdata.write_linear_fits(it.file, os.path.join(tmp, f"{it.object_id}.fits"),
                                                                      realdata.LUPTON_Q, "r"))
               for it in items]
        for name, s in frames:
            d = _run(lin, name.split()[0], s or 3.0, rt, 0.0)
            res = _scores(d["bar_length_arcsec"].to_numpy(float), d["bar_length_err_arcsec"].to_numpy(float), ref,
                          np.ones(len(ref), bool))
            res["at_frame_limit"] = int(((d["quality_flags"].to_numpy(int) & limit) != 0).sum())
            out["real"][name] = res
            log(f"length_frame: real folds 0-3 as FITS, {name}: {res}")
            if name == "measured":
                out["real_in_model_frame"] = {"fits": _in_frame(d, ref, size)}
        # the same bars' JPEGs, whose one frame the display stretch makes wider
        out["real_in_model_frame"]["jpeg"] = _in_frame(_run(items, "measured", 3.0, rt, 0.0), ref, size)
        log(f"length_frame: the volunteers' lengths in the model frame's pixels: {out['real_in_model_frame']}")
        out["real_cut"] = _cut_share(lin)
        if sims is None:
            sims = os.path.join(tmp, "sims")
            simulate(sims, n, survey="mixed", seed=4242, workers=2)
        truth = pd.read_parquet(os.path.join(sims, "truth.parquet")).head(n)
        sim_items = [InputItem(file=os.path.join(sims, f), object_id=str(o)) for f, o in zip(truth["file"], truth["object_id"])]
        cats = {name: _run(sim_items, name.split()[0], s or 3.0, rt, p_bar_min) for name, s in frames}
        out["sims_cut"] = _cut_share(sim_items)
        out["sims_barred_cut"] = _cut_share([it for it, b in zip(sim_items, truth["has_bar"]) if b])
    visible = VISIBLE_OVER_FORMAL * truth["bar_length_arcsec"].to_numpy(float)
    keep = truth["has_bar"].to_numpy(bool).copy()
    for d in cats.values():
        keep &= np.isfinite(d["bar_length_arcsec"].to_numpy(float))
    base = cats["measured"]["bar_length_arcsec"].to_numpy(float)
    for name, d in cats.items():
        length = d["bar_length_arcsec"].to_numpy(float)
        res = _scores(length, d["bar_length_err_arcsec"].to_numpy(float), visible, keep)
        ratio = length[keep] / base[keep] if keep.any() else np.full(1, np.nan)
        res.update(over_measured_median=float(np.median(ratio)), over_measured_16_84=np.percentile(ratio, [16, 84]).tolist(),
                   at_frame_limit=int(((d["quality_flags"].to_numpy(int) & limit) != 0)[keep].sum()))
        out["sims"][name] = res
        log(f"length_frame: simulations, {name}: {res}")
    out.update(n_sims=int(len(truth)), sims_dir=str(sims), seconds=round(time.time() - t0, 1))
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.length_frame", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="bundle directory (default: the shipped bundle)")
    p.add_argument("--sims", help="a simulated directory (truth.parquet) to score; default: --n simulated here, seed 4242")
    p.add_argument("--n", type=int, default=800, help="simulations scored (default %(default)s)")
    p.add_argument("--softening", default="3,10", help="softenings of the softened frame, comma-separated (default %(default)s)")
    p.add_argument("--out-json", help="write the result here (default benchmarks/results/length_frame.json)")
    a = p.parse_args(argv)
    root = real_dev_root("benchmarks.length_frame")
    if root is None:
        return 2
    res = run(a.model, sims=a.sims, n=a.n, softenings=[float(s) for s in a.softening.split(",") if s.strip()], root=root)
    res["command"] = "python -m benchmarks.length_frame " + " ".join(argv if argv is not None else sys.argv[1:])
    from .common import RESULTS_DIR

    print_json_line(res, a.out_json or str(RESULTS_DIR / "length_frame.json"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
