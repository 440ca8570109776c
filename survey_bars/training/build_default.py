"""Rebuild the shipped default bundle end to end from a seed: simulate -> train -> calibrate -> evaluate.

This is the documented, reproducible command for ``survey_bars/inference/default``::

    python -m survey_bars.training.build_default --workdir /tmp/sb-build

With the defaults (:data:`DEFAULTS`, bundle 5.5) it

1. simulates ``n`` = 8000 galaxies (mixed surveys) with ``survey_bars.simulate.simulate(..., seed=S)``;
2. makes a small-stamp copy of each (:func:`survey_bars.simulate.small_stamp_copies`, seed S + 1) and
   a display JPEG of the simulations and of the small stamps
   (:func:`survey_bars.simulate.display_copies`, seeds S and S + 2);
3. adds the real labelled galaxies of the real-dev training folds 0-3
   (:func:`survey_bars.training.realdata.training_labels`; ``--real-dev auto`` finds
   ``$SURVEY_BARS_REAL_DEV`` or ``../shared/data/real-dev``, and without them the build trains
   on the simulations alone and says so);
4. trains both networks with :func:`survey_bars.training.train.train` (the same seed) on that
   mix, with the simulated lengths scaled to the *visible* bar (``--length-definition``); the
   morphology network's bar logit has a context term (``--bar-context``,
   :data:`survey_bars.training.nets.DEFAULT_ARCH`);
5. calibrates the saliency lengths with :func:`survey_bars.training.calibrate.calibrate_bundle` on
   ``--calibrate-n`` fresh barred simulations (seed 90210), trains the learned length head with
   :func:`survey_bars.training.calibrate.calibrate_head` on the SmoothGrad maps of ``--head-n``
   fresh barred simulations (seed 5150) and of their copies: small-stamp display JPEGs
   (``--head-stamp-copies``), small FITS stamps and full-size display JPEGs
   (``--head-format-copies``), so that it has seen every stamp size and format; fine-tunes it on the volunteers' bar lengths of the real training
   folds 0-3 with some of those maps mixed in (``--head-real-lengths``), and fine-tunes one
   out-of-fold head without each fold (``--head-crossfit``, kept in ``workdir/head-crossfit``);
   then it fits the head's uncertainty with
   :func:`survey_bars.training.calibrate.calibrate_head_errors` on 1500 more simulations (seed
   6160);
6. fits the moments' and the head's lengths and uncertainties to the volunteers' bar lengths of
   the real training folds 0-3 (:func:`survey_bars.training.calibrate.calibrate_real`): the
   head's with each fold measured by the out-of-fold head that never saw it;
7. fine-tunes the tail of the morphology network (the morphology heads and the bar's context
   term, which the saliency does not pass through) for ``--real-finetune-epochs`` 6 more epochs
   with the real training images weighted up, and two linear single-band FITS copies of each
   real training JPEG (``--real-linear-copies 2``) beside them (``--real-finetune-part tail``,
   :data:`survey_bars.training.train.FINETUNE_DEFAULTS`, chosen with ``python -m
   benchmarks.real_finetune`` on the training split's unseen rows). The saliency graph, and so
   the calibrations, the head and the real fits of steps 5 and 6, stay those of the trained
   network; only the forward graph's probabilities change (bundle 5.5; ``--real-linear-copies
   0``: without the copies, as 5.4; ``--real-finetune-epochs 0``: none, as 5.3;
   ``--real-finetune-part all`` fine-tunes every weight, before step 5: the first 5.4 candidate,
   not shipped);
8. scores the exported forward graph on ``--evaluate-n`` fresh simulations of the training mix
   (seed 4242) with :func:`survey_bars.training.evaluate.evaluate_bundle`: the card's
   ``evaluation``.

No simulation seed of a calibration or evaluation is used in training, and the real test fold 4
is never read. Given the same seed, thread count, software versions and real-dev data the
weights are identical; the card records the command, the seed, the data, the calibrations and
the wall times (``end_to_end_wall_time_s`` spans everything). Bundle 3.0 (simulations only,
formal lengths) was ``--n 20000 --epochs 45 --length-epochs 40 --head-n 16000 --evaluate-n 6000
--no-display --no-small-stamps --real-dev none --length-definition formal --no-bar-context
--no-head-stamp-copies --no-head-format-copies``,
bundle 5.4 this module's defaults with ``--real-linear-copies 0``, bundle 5.3 with
``--real-finetune-epochs 0``, and with that, bundle 4.0 with
``--no-bar-context --no-head-stamp-copies --no-head-real-lengths --no-head-format-copies``, bundle
5.0 with ``--no-head-stamp-copies --no-head-real-lengths --no-head-format-copies``, bundle 5.1 with
``--no-head-stamp-copies --no-head-crossfit --no-head-format-copies`` and bundle 5.2 with
``--no-head-format-copies``. The first 5.4 candidate was ``--real-finetune-part all``.

``--networks-from BUNDLE`` takes the two networks of a bundle that this command trained with the
same network settings, and redoes only the steps that follow the training (5 to 8): for a change
to the calibrations or the head, an hour less on 2 cores, and the same bundle, since the training
is deterministic. A bundle trained without the real fine-tuning (5.3) serves a build with it: its
morphology network is fine-tuned here (:func:`survey_bars.training.train.finetune_bundle`), from
the same folded weights and on the same split as the full command, which gives the same bytes
(tested on a small build). ``--calibrations-from BUNDLE`` also takes steps 5 and 6 from a bundle
made with the same networks and settings; bundles 5.4 and 5.5 were built as ``--networks-from
<bundle 5.3> --calibrations-from <bundle 5.3>``, so that only their fine-tuning and evaluation
were run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..inference.bundle import DEFAULT_BUNDLE, LENGTH_DEFINITIONS, length_definition, load_bundle, write_card
from ..simulate import display_copies, finished_copies, simulate, small_stamp_copies
from . import realdata
from .calibrate import calibrate_bundle, calibrate_head, calibrate_head_errors, calibrate_real
from .evaluate import evaluate_bundle

__all__ = ["DEFAULTS", "build_default", "main"]

#: Settings of the shipped default bundle.
DEFAULTS = {
    "n": 8000,
    "seed": 1,
    "survey": "mixed",
    "epochs": 36,
    "length_epochs": 16,
    "batch_size": 128,
    "lr": 3e-3,
    "threads": 2,
    "name": "survey-bars-default",
    "version": "5.5",
    "calibrate_n": 800,
    "calibrate_seed": 90210,
    "head_n": 4000,
    # bundle 5.2: the head also learns its simulations' small-stamp display copies (5.1 and before:
    # the full-size simulations only); benchmarks.head_real chose it on the real training folds
    "head_stamp_copies": True,
    # bundle 5.3: and the two other combinations of stamp and format, the small FITS stamps and
    # display copies of the full-size stamps, so that it reads every input alike
    "head_format_copies": True,
    "head_seed": 5150,
    "head_epochs": 30,
    "head_errors_n": 1500,
    "head_errors_seed": 6160,
    "evaluate_n": 2000,
    "evaluate_seed": 4242,
    # bundle 4.0 (issue 23): the simulations, their small stamps, the display copies of both, the
    # real training folds, and visible lengths. Bundle 3.0 was: n 20000, epochs 45 + 40, head_n
    # 16000, evaluate_n 6000, simulations only, formal lengths.
    "display_copies": True,
    "real_dev": "auto",
    "small_stamps": True,
    "length_definition": "visible",
    # bundle 5.0: the bar logit's context term (4.0 and before: the bar evidence alone)
    "bar_context": True,
    # bundle 5.1: the length head is fine-tuned on the volunteer lengths of the real folds 0-2
    # (5.0 and before: simulations only)
    "head_real_lengths": True,
    # bundle 5.2: cross-fitted, it learns those of all four training folds, and its real scale and
    # uncertainty are fitted on its out-of-fold heads (5.1: learns folds 0-2, fitted on fold 3)
    "head_crossfit": True,
    # bundle 5.4 (and 5.5): after the training, the morphology network fine-tuned for 6 epochs with the real
    # training folds weighted up (train.FINETUNE_DEFAULTS: each real training image four times and
    # 20000 other images per epoch, peak lr 1e-3); 0 epochs: none, as 5.3 and before
    "real_finetune_epochs": 6,
    # what that fine-tuning trains: only the tail, the morphology heads and the bar's context term,
    # which the saliency does not pass through, so that the saliency graph, the calibrations and the
    # length head stay the trained network's (bundle 5.4). "all" (the first 5.4 candidate) raised
    # the real AUCs more but changed the maps and lowered the head's real length r (RESULTS.md)
    "real_finetune_part": "tail",
    # bundle 5.5: each real training JPEG is also learned as this many linear single-band FITS copies
    # (its display stretch undone, realdata.linear_from_display) by that fine-tuning, so that real
    # FITS images are read as well as the JPEGs; 0: none (bundle 5.4)
    "real_linear_copies": 2,
    # the same for the length head's real fine-tuning; 0: the JPEGs alone (bundle 5.5 and before). Heads
    # built with 2 in the model frame read real JPEG and, above all, simulated lengths worse. The copies'
    # maps are now made in the frame the pipeline gives them (calibrate.HEAD_REAL_FRAME), where the
    # cross-validation finds them learned without that cost to the simulations. A bundle built so read
    # fold 4 as FITS at r 0.73 (5.5: 0.41) but cut simulated stamps, in the wide frame, 2-4 times too
    # long (accuracy set r 0.73 against 0.90), so it was not shipped (RESULTS.md, "Real galaxies as FITS files")
    "head_real_linear_copies": 0,
}


def build_default(n=DEFAULTS["n"], seed=DEFAULTS["seed"], workdir=None, out=None, *, threads=DEFAULTS["threads"],
                  epochs=DEFAULTS["epochs"], length_epochs=DEFAULTS["length_epochs"], command=None, arch=None,
                  length_arch=None, calibrate_n=DEFAULTS["calibrate_n"], evaluate_n=DEFAULTS["evaluate_n"],
                  head_n=DEFAULTS["head_n"], display=DEFAULTS["display_copies"], real_dev=DEFAULTS["real_dev"],
                  small_stamps=DEFAULTS["small_stamps"], length_def=DEFAULTS["length_definition"],
                  head_stamp_copies=DEFAULTS["head_stamp_copies"], bar_context=DEFAULTS["bar_context"],
                  head_real_lengths=DEFAULTS["head_real_lengths"], head_crossfit=DEFAULTS["head_crossfit"],
                  head_format_copies=DEFAULTS["head_format_copies"], networks_from=None,
                  real_finetune_epochs=DEFAULTS["real_finetune_epochs"], real_finetune_part=DEFAULTS["real_finetune_part"],
                  calibrations_from=None, real_linear_copies=DEFAULTS["real_linear_copies"],
                  head_real_linear_copies=DEFAULTS["head_real_linear_copies"]):
    """Simulate, train and export the default bundle.

    Parameters
    ----------
    n : int, optional
        Simulated galaxies.
    seed : int, optional
        Seed of the simulation and of the training.
    workdir : str, optional
        Where the simulations go (default ``$TMPDIR/survey-bars-default-<seed>-<n>``). A
        simulation made there by an earlier run with the same ``n`` and ``seed`` (recorded in
        ``build_default.json``) is reused.
    out : str, optional
        Bundle directory (default: the package's ``default`` bundle).
    threads : int, optional
        Torch threads and simulation/preprocessing processes.
    epochs, length_epochs : int, optional
        Epochs of the morphology and length networks.
    command : str, optional
        Command line recorded in the card.
    arch, length_arch : dict, optional
        Architectures (defaults :data:`survey_bars.training.nets.DEFAULT_ARCH` and
        :data:`~survey_bars.training.nets.LENGTH_ARCH`; for tests). ``arch`` overrides
        ``bar_context``.
    calibrate_n : int, optional
        Barred simulations for the saliency-length calibration (0 skips it).
    head_n : int, optional
        Barred simulations (seed 5150) whose saliency maps train the learned length head (0
        skips it, and the head's error fit on 1500 more, seed 6160).
    evaluate_n : int, optional
        Fresh simulations (seed 4242) on which :func:`survey_bars.training.evaluate.evaluate_bundle`
        scores the exported forward graph, recorded as the card's ``evaluation`` (0 skips it).
    display : bool, optional
        Also train on a display copy of every simulation (an asinh-stretched 8-bit colour JPEG,
        :func:`survey_bars.simulate.display_copies`), as survey cutout services draw them.
    real_dev : str, None or "auto", optional
        The real labelled galaxies (``../shared/data/real-dev``): their training folds
        (:data:`survey_bars.training.realdata.TRAIN_FOLDS`, never the test fold) train the outputs
        they have labels for, beside the simulations (:func:`survey_bars.training.realdata.training_labels`).
        ``"auto"`` (the default) uses :func:`survey_bars.training.realdata.default_root` when it
        exists; None (as bundle 3.0 was built) trains on simulations only. With real data, the
        calibrated methods' lengths and uncertainties are then fitted to the volunteers' bar
        lengths of the same training folds (:func:`survey_bars.training.calibrate.calibrate_real`).
    small_stamps : bool, optional
        Also train on a small-stamp copy of every simulation
        (:func:`survey_bars.simulate.small_stamp_copies`: half-width 1.6-3.2 half-light radii, the
        bar kept whole), as Galaxy Zoo and survey cutout services serve them, and, with
        ``display``, on display copies of those.
    head_stamp_copies : bool, optional
        Train the length head on the maps of small-stamp display copies of its simulations too
        (:func:`survey_bars.training.calibrate.calibrate_head`; bundle 5.2: a head that then
        learns real lengths reads them better, ``benchmarks/head_real.py --stamp-copies``).
    length_def : str, optional
        What the bundle's bar lengths mean, a key of
        :data:`survey_bars.inference.bundle.LENGTH_DEFINITIONS`: ``"formal"`` (bundle 3.0) or
        ``"visible"`` (the extent where the bar's own light stays above half its peak). The
        simulated lengths that train the direct CNN, and those the calibrations and the
        evaluation compare with, are scaled to it; it is recorded as the card's
        ``length_definition``.
    bar_context : bool, optional
        Give the bar logit a context term, a linear function of the pooled morphology-tail
        features (:data:`survey_bars.training.nets.DEFAULT_ARCH`, bundle 5.0); False trains
        :data:`~survey_bars.training.nets.SKIP_ARCH`, the bar evidence alone (bundles 3.0 and 4.0).
    head_real_lengths : bool, optional
        With real data, fine-tune the length head on the volunteer lengths of real training folds
        after the simulations (``calibrate_head(real_root=...)``, bundle 5.1 and later): all four
        with ``head_crossfit``, else :data:`survey_bars.training.realdata.LENGTH_TRAIN_FOLDS`
        (0-2), its real scale and uncertainty then fitted on fold 3 alone (bundle 5.1). False:
        the head learns from simulations only (bundle 5.0).
    head_crossfit : bool, optional
        With ``head_real_lengths``, cross-fit the head (bundle 5.2): it learns the volunteer
        lengths of all four training folds, one out-of-fold head per fold is fine-tuned without
        that fold (kept in ``workdir/head-crossfit``, not in the bundle), and the head's real
        scale and uncertainty are fitted on each fold's bars as measured by the head that did not
        learn them. False: folds 0-2, fitted on fold 3 (bundle 5.1).
    head_format_copies : bool, optional
        Train the length head on the maps of its simulations' small FITS stamps and full-size
        display copies too (``calibrate_head(..., format_copies=True)``, bundle 5.3), so that it has
        seen every combination of stamp size and format.
    networks_from : str, optional
        A bundle whose two networks this build takes instead of training them, to redo only the
        steps after the training (the calibrations, the head and the evaluation). Its card's
        recorded command must name the same network settings as this build's (simulations,
        seed, threads, epochs, training data and architecture) and its torch version must be
        this one's: training is deterministic, so the networks are those the full command
        trains, byte for byte (bundles 5.0, 5.1 and 5.2 were trained three times and are
        identical). The card records the reuse under ``training["networks_reused_from"]``.
        A bundle trained without the real fine-tuning may be the source of a build with it: its
        networks are then fine-tuned here (:func:`survey_bars.training.train.finetune_bundle`),
        which gives what the full command gives.
    real_finetune_epochs : int, optional
        With real data, fine-tune the morphology network for this many epochs after the training,
        with the real training folds weighted up (``train(..., finetune=...)``,
        :data:`survey_bars.training.train.FINETUNE_DEFAULTS`; 6, the default: bundles 5.4 and 5.5). 0: no
        fine-tuning (bundle 5.3 and before).
    real_finetune_part : str, optional
        What the fine-tuning trains (:data:`survey_bars.training.train.FINETUNE_PARTS`): ``"all"``
        the weights (the first 5.4 candidate, not shipped), or ``"tail"`` (the default, bundle
        5.4) only what the saliency does not pass through (the tail, the morphology heads and the
        bar's context term), so that the saliency graph stays the trained network's. With
        ``"tail"``, everything the saliency maps decide
        (the calibrations, the length head and the real fits) is made with the trained network,
        before the fine-tuning, which then changes only the forward graph's morphology and bar
        probabilities; the evaluation scores the fine-tuned forward graph.
    calibrations_from : str, optional
        A bundle whose calibrations, length head and real fits this build takes instead of making
        them: they must have been made with this build's networks (before any tail fine-tuning:
        the same ``forward.onnx`` and ``saliency.onnx``, byte for byte, and SmoothGrad settings)
        and by this build's settings (simulations, copies, real lengths, cross-fitting). Each
        step is seeded, so they are what this build would make. With ``networks_from``, it saves
        the head's half hour, e.g. ``--networks-from B --calibrations-from B
        --real-finetune-epochs 6 --real-finetune-part tail``. Recorded as
        ``training["calibrations_reused_from"]``.
    real_linear_copies : int, optional
        With real data: each real training JPEG is also learned as this many linear single-band
        FITS copies, its display stretch undone (:func:`survey_bars.training.realdata.linear_from_display`),
        by the morphology network's fine-tuning (``finetune["linear_copies"]``), so that the real
        galaxies are learned in both forms users give them (2, the default: bundle 5.5; 0: the
        JPEGs alone, as bundle 5.4).
    head_real_linear_copies : int, optional
        The same for the length head's real fine-tuning
        (``calibrate_head(real_linear_copies=...)``; the simulated maps mixed in are put in real
        units by the JPEGs' maps alone). 0, the default: the JPEGs alone (bundle 5.5 and before);
        heads built with 2 read the copies better but the real bars' JPEGs and the simulations
        worse.

    Returns
    -------
    Bundle
    """
    import tempfile

    import pandas as pd

    from .train import FINETUNE_DEFAULTS, finetune_bundle, train

    if length_def not in LENGTH_DEFINITIONS:
        msg = f"length_def must be one of {sorted(LENGTH_DEFINITIONS)}; got {length_def!r}."
        raise ValueError(msg)
    for name, value in (("real_linear_copies", real_linear_copies), ("head_real_linear_copies", head_real_linear_copies)):
        if int(value) < 0:
            msg = f"{name} takes 0 or more copies; got {value!r}."
            raise ValueError(msg)
    workdir = workdir or os.path.join(tempfile.gettempdir(), f"survey-bars-default-{seed}-{n}")
    out = out or str(DEFAULT_BUNDLE)
    t0 = time.time()
    truth = os.path.join(workdir, "truth.parquet")
    marker = os.path.join(workdir, "build_default.json")
    spec = {"n": int(n), "seed": int(seed), "survey": DEFAULTS["survey"]}
    reused = False
    if os.path.isfile(truth) and os.path.isfile(marker):
        with open(marker, encoding="utf-8") as fh:
            reused = json.load(fh) == spec and len(pd.read_parquet(truth, columns=["file"])) == n
    if reused:
        print(f"reusing the simulation in {workdir} ({spec})", file=sys.stderr)
    else:
        simulate(workdir, n, survey=DEFAULTS["survey"], seed=seed, workers=threads)
        with open(marker, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
    t_sim = time.time() - t0
    finetune_on = real_dev is not None and int(real_finetune_epochs) > 0
    command = command or (f"python -m survey_bars.training.build_default --n {n} --seed {seed} "
                          f"--threads {threads} --epochs {epochs} --length-epochs {length_epochs} "
                          f"--calibrate-n {calibrate_n} --head-n {head_n} --evaluate-n {evaluate_n}"
                          + (" --display" if display else " --no-display")
                          + (" --small-stamps" if small_stamps else " --no-small-stamps")
                          + f" --real-dev {'none' if real_dev is None else real_dev} --length-definition {length_def}"
                          + ((" --head-stamp-copies" if head_stamp_copies else " --no-head-stamp-copies") if head_n else "")
                          + ("" if bar_context else " --no-bar-context")
                          + ("" if head_real_lengths else " --no-head-real-lengths")
                          + ("" if head_crossfit or not head_real_lengths else " --no-head-crossfit")
                          + ("" if head_format_copies or not head_n else " --no-head-format-copies")
                          + (f" --real-finetune-epochs {real_finetune_epochs}" if finetune_on else "")
                          + (f" --real-finetune-part {real_finetune_part}"
                             if finetune_on and real_finetune_part != DEFAULTS["real_finetune_part"] else "")
                          + (f" --real-linear-copies {real_linear_copies}" if real_dev is not None else "")
                          + (f" --head-real-linear-copies {head_real_linear_copies}"
                             if real_dev is not None and head_n and head_real_lengths else "")
                          + (f" --networks-from {networks_from}" if networks_from else "")
                          + (f" --calibrations-from {calibrations_from}" if calibrations_from else ""))
    if arch is None and not bar_context:
        from .nets import SKIP_ARCH

        arch = SKIP_ARCH
    definition = length_definition({"length_definition": {"name": length_def}})
    if display or real_dev or small_stamps or length_def != "formal":
        labels, mix = _training_table(workdir, seed, threads, display, real_dev, small_stamps, definition)
    else:  # simulations only (bundle 3.0's recipe): the directory's own truth table, exactly as before
        labels, mix = None, {}
    finetune = None
    tail_first = finetune_on and real_finetune_part == "tail"  # the saliency's steps before the fine-tuning
    if finetune_on:
        finetune = {**FINETUNE_DEFAULTS, "epochs": int(real_finetune_epochs), "part": real_finetune_part,
                    "sources": ["gz1", "gz2"], "linear_copies": int(real_linear_copies)}
    if networks_from:
        if arch is not None or length_arch is not None:
            msg = "networks_from reuses trained networks; it cannot be combined with another architecture (arch, length_arch)."
            raise ValueError(msg)
        b = _reuse_networks(networks_from, out, command, {
            "n": n, "seed": seed, "threads": threads, "epochs": epochs, "length_epochs": length_epochs,
            "display": display, "small_stamps": small_stamps, "real_dev": "none" if real_dev is None else real_dev,
            "length_definition": length_def, "bar_context": bar_context}, mix.get("sources"))
        was = b.card["training"].get("finetune")
        if was and tail_first:
            msg = (f"The networks of {networks_from} are already fine-tuned ({was}), but with --real-finetune-part tail "
                   "the calibrations and the length head are made with the network before its fine-tuning; take the "
                   "bundle they were fine-tuned from.")
            raise ValueError(msg)
        if finetune and not was:  # the source stopped before the fine-tuning: do it here (tail: after the calibrations)
            if not tail_first:
                b = finetune_bundle(b.path, out, [workdir], labels=labels, finetune=finetune, seed=seed, threads=threads,
                                    workers=threads, batch_size=DEFAULTS["batch_size"])
                card = dict(b.card)
                card["training"]["networks_reused_from"]["how"] += "; the morphology network then fine-tuned here"
                write_card(b.path, card)
        elif _finetune_spec(was) != _finetune_spec(finetune):
            msg = (f"The networks of {networks_from} were fine-tuned otherwise ({was}) than this build asks "
                   f"({finetune}); take a bundle without fine-tuning, or train (drop --networks-from).")
            raise ValueError(msg)
    else:
        b = train([workdir], out, labels=labels, epochs=epochs, length_epochs=length_epochs, seed=seed, threads=threads,
                  workers=threads, batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"], name=DEFAULTS["name"],
                  version=DEFAULTS["version"], command=command, arch=arch,
                  length_arch=length_arch, finetune=None if tail_first else finetune)
    card = dict(b.card)
    card["training"] = {**card["training"], "simulation": {"n": n, "seed": seed, "survey": DEFAULTS["survey"],
                                                            "workers": threads, "reused_existing": bool(reused),
                                                            "wall_time_s": round(t_sim, 1)},
                        **mix,
                        "end_to_end_wall_time_s": round(time.time() - t0, 1)}
    if length_def != "formal":  # bundle 3.0's card has none: formal
        card["length_definition"] = {**definition, "how": (
            "the extent over which the bar's own light stays above half its peak; simulated lengths are the "
            "simulator's formal Ferrers length times fraction_of_formal")}
    write_card(b.path, card)
    real_root = _real_root(real_dev)
    crossfit = os.path.join(workdir, "head-crossfit") if head_n and head_real_lengths and head_crossfit and real_root else None
    if calibrations_from:
        _reuse_calibrations(calibrations_from, b.path, {
            "calibrate_n": int(calibrate_n), "head_n": int(head_n),
            "head_stamp_copies": bool(head_n and head_stamp_copies), "head_format_copies": bool(head_n and head_format_copies),
            "head_real_lengths": bool(head_n and head_real_lengths and real_root), "head_crossfit": bool(crossfit),
            "real_fit": bool(real_root and (calibrate_n or head_n)),
            "head_real_linear_copies": int(head_real_linear_copies) if head_n and head_real_lengths and real_root else 0})
    else:
        if calibrate_n:

            calibrate_bundle(str(b.path), n=calibrate_n, seed=DEFAULTS["calibrate_seed"],
                             workdir=os.path.join(workdir, f"calibration-{DEFAULTS['calibrate_seed']}-{calibrate_n}"),
                             workers=threads)
        if head_n:

            calibrate_head(str(b.path), n=head_n, seed=DEFAULTS["head_seed"], epochs=DEFAULTS["head_epochs"],
                           workdir=os.path.join(workdir, f"head-{DEFAULTS['head_seed']}-{head_n}"), workers=threads,
                           threads=threads, stamp_copies=head_stamp_copies, format_copies=head_format_copies,
                           real_root=real_root if head_real_lengths else None, crossfit_dir=crossfit,
                           real_linear_copies=int(head_real_linear_copies))
            # its uncertainty, fitted on fresh simulations (1500 bars rather than the 10 % held out)
            calibrate_head_errors(str(b.path), n=DEFAULTS["head_errors_n"], seed=DEFAULTS["head_errors_seed"],
                                  workdir=os.path.join(workdir, f"head-errors-{DEFAULTS['head_errors_seed']}-{DEFAULTS['head_errors_n']}"),
                                  workers=threads, threads=threads)
        if real_root is not None:  # the lengths and uncertainties, fitted on the real training folds' volunteer lengths
            for method in ("moments", "head"):
                if method in (load_bundle(b.path).card.get("calibration") or {}):
                    calibrate_real(str(b.path), real_root, method=method, threads=threads,
                                   crossfit_dir=crossfit if method == "head" else None)
    if tail_first:  # the saliency path stays the trained network's, and so do its calibrations and head
        before = load_bundle(b.path)
        head = before.head_path.read_bytes() if before.head_path is not None else None
        b = finetune_bundle(b.path, out, [workdir], labels=labels, finetune=finetune, seed=seed, threads=threads,
                            workers=threads, batch_size=DEFAULTS["batch_size"])  # writes the bundle afresh
        if head is not None:
            (b.path / "length_head.onnx").write_bytes(head)
        before, card = before.card, dict(b.card)
        for key in ("calibration", "smoothgrad"):
            if key in before:
                card[key] = before[key]
        card["training"]["finetune"]["saliency_steps"] = (
            "the calibrations, the length head and the real fits were made with the network before this fine-tuning, "
            "whose saliency graph it leaves as it is")
        if networks_from:
            card["training"]["networks_reused_from"]["how"] += "; the morphology network's tail then fine-tuned here"
        write_card(b.path, card)
    if evaluate_n:

        evaluate_bundle(str(b.path), n=evaluate_n, seed=DEFAULTS["evaluate_seed"], survey=DEFAULTS["survey"],
                        workdir=os.path.join(workdir, f"evaluation-{DEFAULTS['evaluate_seed']}-{evaluate_n}"),
                        workers=threads, write=True)
    if calibrate_n or head_n or evaluate_n or real_root is not None or tail_first:
        card = dict(load_bundle(b.path).card)
        card["training"] = {**card["training"], "end_to_end_wall_time_s": round(time.time() - t0, 1)}
        write_card(b.path, card)
    return load_bundle(b.path)


#: The settings of the recorded command that decide the networks (the rest only changes what follows the training).
_NETWORK_SETTINGS = ("n", "seed", "threads", "epochs", "length_epochs", "display", "small_stamps", "real_dev",
                     "length_definition", "bar_context")


def _reuse_networks(src, out, command, settings, sources):
    """Copy the two trained networks of the bundle ``src`` into ``out``, with a card made for this build.

    Refuses, naming the difference, a bundle whose recorded command trained its networks with
    other settings, on another training set, or with another torch version: the full command
    would not give the same networks.
    """
    import datetime
    import shlex
    import shutil

    import torch

    from .. import __version__

    old = load_bundle(src)
    card = json.loads(json.dumps(old.card))
    recorded = (card.get("training") or {}).get("command") or ""
    words = shlex.split(recorded)
    if words[:3] != ["python", "-m", "survey_bars.training.build_default"]:
        msg = f"{src} was not trained by build_default (its card's command is {recorded!r}); train the networks (drop --networks-from)."
        raise ValueError(msg)
    try:
        was, unknown = _parser().parse_known_args(words[3:])
    except SystemExit:  # argparse has printed why
        unknown = ["(unreadable)"]
    if unknown:
        msg = (f"The command recorded in {src}'s card ({recorded!r}) has options this version does not know "
               f"({' '.join(unknown)}), so its network settings cannot be checked; train the networks (drop --networks-from).")
        raise ValueError(msg)
    was = vars(was)
    differ = [f"{k}: {was[k]!r} there, {settings[k]!r} here" for k in _NETWORK_SETTINGS if was[k] != settings[k]]
    if (card["training"].get("sources") or None) != (sources or None):
        differ.append(f"training sources: {card['training'].get('sources')} there, {sources} here")
    if card["training"].get("torch") != str(torch.__version__):
        differ.append(f"torch {card['training'].get('torch')} there, {torch.__version__} here")
    if differ:
        msg = (f"The networks of {src} were trained with other settings than this build's, so the full command would "
               f"not reproduce them: {'; '.join(differ)}. Train them (drop --networks-from).")
        raise ValueError(msg)
    os.makedirs(out, exist_ok=True)
    if not os.path.samefile(src, out):
        for name in ("forward.onnx", "saliency.onnx"):
            shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
    if os.path.exists(os.path.join(out, "length_head.onnx")):
        os.remove(os.path.join(out, "length_head.onnx"))  # the head is trained again
    files = {k: v for k, v in card["files"].items() if k in ("forward.onnx", "saliency.onnx")}
    card.update(name=DEFAULTS["name"], version=DEFAULTS["version"], files=files, calibration={},
                created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                software={**card.get("software", {}), "survey_bars": __version__})
    for key in ("evaluation", "length_definition"):
        card.pop(key, None)
    card["training"] = {**card["training"], "command": command, "networks_reused_from": {
        "version": old.card.get("version"), "command": recorded, "files": files,
        "how": "forward.onnx and saliency.onnx copied from a bundle trained by build_default with the same network "
               "settings; training is deterministic, so the full command trains the same bytes"}}
    write_card(out, card)
    return load_bundle(out)


def _finetune_spec(ft):
    """What decides a fine-tuning (a ``finetune`` argument or a card's ``training.finetune``), or None."""
    if not ft:
        return None
    linear = ft.get("linear_copies") or 0  # the argument's count, or the card's record of the copies
    return (sorted(ft["sources"]), int(ft["epochs"]), int(ft["repeat"]), int(ft["others"]),
            float(ft.get("learning_rate", ft.get("lr"))), ft.get("part", "all"),
            int(linear["copies"] if isinstance(linear, dict) else linear))


def _calibration_spec(card):
    """What decided a bundle card's calibrations, in :func:`build_default`'s terms."""
    cal = card.get("calibration") or {}
    m, h = cal.get("moments") or {}, cal.get("head") or {}
    rt = h.get("real_training") or {}
    return {"calibrate_n": int(m.get("n_simulated", 0)), "head_n": int(h.get("n_simulated", 0)),
            "head_stamp_copies": bool(h.get("stamp_copies")), "head_format_copies": bool(h.get("format_copies")),
            "head_real_lengths": bool(rt), "head_crossfit": "cross_fitted" in rt,
            "real_fit": any("real" in c for c in (m, h)),
            "head_real_linear_copies": int((rt.get("linear_copies") or {}).get("copies", 0))}


def _reuse_calibrations(src, dst, expect):
    """Copy the calibrations, length head and real fits of the bundle ``src`` into the bundle ``dst``.

    Refuses, naming the difference, when they were not made with ``dst``'s networks (the same
    graph files and SmoothGrad settings) or not by the settings ``expect``
    (:func:`_calibration_spec`'s keys): they would not be what the build makes.
    """
    import shutil

    old, new = load_bundle(src), load_bundle(dst)
    differ = [f"{name} differs" for name in ("forward.onnx", "saliency.onnx")
              if old.card["files"].get(name) != new.card["files"].get(name)]
    if old.smoothgrad != new.smoothgrad:
        differ.append(f"SmoothGrad settings: {old.smoothgrad} there, {new.smoothgrad} here")
    got = _calibration_spec(old.card)
    differ += [f"{k}: {got[k]!r} there, {v!r} here" for k, v in expect.items() if got[k] != v]
    if differ:
        msg = (f"The calibrations of {src} were not made with this build's networks and settings, so they are not what "
               f"the build would make: {'; '.join(differ)}. Make them (drop --calibrations-from).")
        raise ValueError(msg)
    head = os.path.join(dst, "length_head.onnx")
    if old.head_path is not None:
        shutil.copyfile(old.head_path, head)
    elif os.path.exists(head):
        os.remove(head)
    card = dict(new.card)
    card["calibration"] = json.loads(json.dumps(old.card.get("calibration") or {}))
    card["training"] = {**card["training"], "calibrations_reused_from": {
        "version": old.card.get("version"), "command": (old.card.get("training") or {}).get("command"),
        "how": "the calibrations, the length head and the real fits copied from a bundle with the same networks, made "
               "by the same settings; each step is seeded, so they are what this build would make"}}
    write_card(dst, card)


def _real_root(real_dev):
    """The real-dev directory to train on: ``real_dev``, or the default one for ``"auto"`` when it exists; else None."""
    if real_dev is None:
        return None
    if real_dev != "auto":
        return real_dev
    root = realdata.default_root()
    return root if os.path.isdir(os.path.join(root, realdata.GZ2_DIR)) else None


def _training_table(workdir, seed, threads, display, real_dev, small_stamps=False, definition=None):
    """The label table of the training set (simulations, their copies, the real folds) and its card entry."""
    import pandas as pd

    cols = ["file", "class", "has_bar", "has_spiral", "bar_length_arcsec", "bar_pa_deg", "pixel_scale_arcsec"]
    scale = (definition or {"fraction_of_formal": 1.0})["fraction_of_formal"]
    truth = pd.read_parquet(os.path.join(workdir, "truth.parquet"))
    n = len(truth)

    def table(t, d, source):
        t = t.assign(file=[os.path.join(d, f) for f in t["file"]], bar_length_arcsec=t["bar_length_arcsec"] * scale)
        return t[cols].assign(source=source)

    parts = [table(truth, workdir, "simulation")]
    mix = {"sources": {"simulation": n}}
    if small_stamps:  # seeds: the display copies use seed, the stamps seed + 1 and their display copies seed + 2
        sdir = os.path.join(workdir, "small-stamps")
        stamps = finished_copies(workdir, sdir, lambda: small_stamp_copies(workdir, sdir, seed=seed + 1, workers=threads))
        parts.append(table(stamps, sdir, "small_stamp"))
        mix["sources"]["small_stamp"] = n
        mix["small_stamps"] = {"seed": int(seed) + 1, "how": "survey_bars.simulate.small_stamp_copies: half-width "
                               "1.6-3.2 true half-light radii, the bar kept whole"}
    if display:
        dirs = [(workdir, os.path.join(workdir, "display"), seed, "display")]
        if small_stamps:
            dirs.append((sdir, os.path.join(workdir, "small-stamps-display"), seed + 2, "small_stamp_display"))
        for src, ddir, s, source in dirs:
            copies = finished_copies(src, ddir, lambda: display_copies(src, ddir, seed=s, workers=threads))
            parts.append(table(copies, ddir, source))
            mix["sources"][source] = n
        mix["display_copies"] = {"seed": int(seed), "how": "survey_bars.simulate.display_copies: asinh-stretched 8-bit colour JPEG"}
    root = _real_root(real_dev)
    if root is not None:
        real = realdata.training_labels(root, realdata.TRAIN_FOLDS)
        parts.append(real)
        counts = {str(k): int(v) for k, v in real["source"].value_counts().items()}
        mix["sources"].update(counts)
        mix["real"] = {"split": realdata.SPLIT_ID, "folds": list(realdata.TRAIN_FOLDS), "root": str(root), "n": counts,
                       "labels": "survey_bars.training.realdata.training_labels"}
    else:
        print("build_default: no real-dev data found; training on simulations only", file=sys.stderr)
    table = pd.concat(parts, ignore_index=True)
    path = os.path.join(workdir, "training_labels.csv")
    table.to_csv(path, index=False)
    return path, mix


def main(argv=None):
    """Command line of :func:`build_default`.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
    """
    a = _parser().parse_args(argv)
    b = build_default(a.n, a.seed, a.workdir, a.out, threads=a.threads, epochs=a.epochs, length_epochs=a.length_epochs,
                      calibrate_n=a.calibrate_n, evaluate_n=a.evaluate_n, head_n=a.head_n, display=a.display,
                      real_dev=None if a.real_dev == "none" else a.real_dev, small_stamps=a.small_stamps, length_def=a.length_definition,
                      head_stamp_copies=a.head_stamp_copies, bar_context=a.bar_context,
                      head_real_lengths=a.head_real_lengths, head_crossfit=a.head_crossfit,
                      head_format_copies=a.head_format_copies, networks_from=a.networks_from,
                      real_finetune_epochs=a.real_finetune_epochs, real_finetune_part=a.real_finetune_part,
                      calibrations_from=a.calibrations_from, real_linear_copies=a.real_linear_copies,
                      head_real_linear_copies=a.head_real_linear_copies)
    print(f"wrote {b.path}")
    return 0


def _parser():
    """The command line's parser (also reads the command a bundle's card records)."""
    p = argparse.ArgumentParser(prog="python -m survey_bars.training.build_default", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=DEFAULTS["n"], help="simulated galaxies (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="simulation and training seed (default %(default)s)")
    p.add_argument("--workdir", help="directory for the simulations")
    p.add_argument("--out", help="bundle directory (default: the package's default bundle)")
    p.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="threads/processes (default %(default)s)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--length-epochs", type=int, default=DEFAULTS["length_epochs"])
    p.add_argument("--calibrate-n", type=int, default=DEFAULTS["calibrate_n"],
                   help="barred simulations for the length calibration (default %(default)s; 0 skips it)")
    p.add_argument("--head-n", type=int, default=DEFAULTS["head_n"],
                   help="barred simulations whose maps train the learned length head (default %(default)s; 0 skips it)")
    p.add_argument("--evaluate-n", type=int, default=DEFAULTS["evaluate_n"],
                   help="fresh simulations for the card's independent evaluation (default %(default)s; 0 skips it)")
    p.add_argument("--display", action=argparse.BooleanOptionalAction, default=DEFAULTS["display_copies"],
                   help="also train on display (asinh-stretched 8-bit JPEG) copies of the simulations (default %(default)s)")
    p.add_argument("--real-dev", default=DEFAULTS["real_dev"], metavar="DIR",
                   help="also train on the training folds of these real labelled galaxies, and fit the lengths to their "
                        "volunteer lengths ('auto', the default: $SURVEY_BARS_REAL_DEV or ../shared/data/real-dev when "
                        "it exists; 'none': simulations only)")
    p.add_argument("--small-stamps", action=argparse.BooleanOptionalAction, default=DEFAULTS["small_stamps"],
                   help="also train on small-stamp copies of the simulations (half-width 1.6-3.2 r50, the bar kept), "
                        "and with --display on their display copies (default %(default)s)")
    p.add_argument("--length-definition", choices=sorted(LENGTH_DEFINITIONS), default=DEFAULTS["length_definition"],
                   help="what the bar lengths mean: 'formal', the simulator's Ferrers end (bundle 3.0), or 'visible', "
                        "where the bar's light stays above half its peak (default %(default)s)")
    p.add_argument("--bar-context", action=argparse.BooleanOptionalAction, default=DEFAULTS["bar_context"],
                   help="give the bar logit a context term from the pooled morphology features (bundle 5.0; "
                        "--no-bar-context: the bar evidence alone, as bundles 3.0 and 4.0) (default %(default)s)")
    p.add_argument("--head-stamp-copies", action=argparse.BooleanOptionalAction, default=DEFAULTS["head_stamp_copies"],
                   help="train the length head on the maps of small-stamp display copies too (default %(default)s)")
    p.add_argument("--head-real-lengths", action=argparse.BooleanOptionalAction, default=DEFAULTS["head_real_lengths"],
                   help="with real data, fine-tune the length head on the volunteer lengths of the real training folds "
                        "(bundle 5.1 and after; --no-head-real-lengths: simulations only, as bundle 5.0) "
                        "(default %(default)s)")
    p.add_argument("--head-crossfit", action=argparse.BooleanOptionalAction, default=DEFAULTS["head_crossfit"],
                   help="with --head-real-lengths, cross-fit the head: it learns the real folds 0-3, and its real scale "
                        "and uncertainty are fitted on out-of-fold heads (bundle 5.2; --no-head-crossfit: folds 0-2, "
                        "fitted on fold 3, as bundle 5.1) (default %(default)s)")
    p.add_argument("--head-format-copies", action=argparse.BooleanOptionalAction, default=DEFAULTS["head_format_copies"],
                   help="train the length head on the maps of the small FITS stamps and full-size display copies too, so "
                        "that it has seen every stamp size and format (bundle 5.3) (default %(default)s)")
    p.add_argument("--real-finetune-epochs", type=int, default=DEFAULTS["real_finetune_epochs"], metavar="N",
                   help="with real data, fine-tune the morphology network for N epochs after the training with the real "
                        "training folds weighted up (bundles 5.4 and 5.5: 6; 0: none, as bundle 5.3) (default %(default)s)")
    p.add_argument("--real-finetune-part", choices=["all", "tail"], default=DEFAULTS["real_finetune_part"],
                   help="what that fine-tuning trains: all the weights (the first 5.4 candidate), or only the tail, the "
                        "morphology heads and the context term, leaving the saliency, calibrations and head as trained "
                        "(bundle 5.4) (default %(default)s)")
    p.add_argument("--networks-from", metavar="BUNDLE",
                   help="take the two networks of this bundle instead of training them (its card's command must name the "
                        "same network settings); redoes only the calibrations, the head and the evaluation")
    p.add_argument("--calibrations-from", metavar="BUNDLE",
                   help="take the calibrations, the length head and the real fits of this bundle instead of making them "
                        "(made with these networks, before any tail fine-tuning, and by these settings); with "
                        "--networks-from, redoes only the fine-tuning and the evaluation")
    p.add_argument("--real-linear-copies", type=int, default=DEFAULTS["real_linear_copies"], metavar="N",
                   help="with real data, also learn each real training JPEG as N linear single-band FITS copies (its "
                        "display stretch undone) in the fine-tuning (bundle 5.5: 2; 0: the JPEGs alone, as bundle 5.4) "
                        "(default %(default)s)")
    p.add_argument("--head-real-linear-copies", type=int, default=DEFAULTS["head_real_linear_copies"], metavar="N",
                   help="the same in the length head's real fine-tuning (0: the JPEGs alone, as bundle 5.5 and before) "
                        "(default %(default)s)")
    return p


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
