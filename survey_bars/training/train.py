"""Training the morphology CNN and the direct bar-length CNN, then exporting a bundle.

``survey-bars train --data DIR [DIR ...] [--labels TABLE] --out BUNDLE_DIR`` trains on

* directories written by ``survey-bars simulate`` (FITS cutouts plus ``truth.parquet`` with
  ``file``, ``class`` in {smooth, edge_on, disc, barred}, ``has_bar``, ``has_spiral``,
  ``bar_length_arcsec`` (full length), ``bar_pa_deg`` (east of north) and
  ``pixel_scale_arcsec``), or
* any labelled set of FITS, JPEG or PNG cutouts: ``--labels`` names a CSV or Parquet table
  with a ``file`` column (absolute, or relative to a ``--data`` directory or to the table) and
  any of the label columns ``class``, ``has_bar``, ``has_spiral``, ``bar_length_arcsec``,
  ``bar_pa_deg``, ``pixel_scale_arcsec`` (or ``pixel_scale``). Missing labels are left out of
  the corresponding loss; the bar-evidence mask loss needs both ``bar_length_arcsec`` and
  ``bar_pa_deg`` of a bar. JPEG and PNG images carry no WCS: their pixel scale comes from the
  table, and an image without one still trains the morphology, bar and spiral heads, while its
  bar length (known only in arcsec) is left out of the length and mask losses.

Every file goes through :func:`survey_bars.io.read_cutout` and
:func:`survey_bars.normalise.normalise`, the functions the inference path uses, in a
process pool; the frames are cached in an ``.npz`` keyed by a hash of the file list (with
each file's size and contents), the preprocessing configuration and the preprocessing code.
Truth lengths are converted to model-frame pixels as
``bar_length_arcsec / pixel_scale_arcsec / scale``.

The data are split (from the seed) into train, validation and test sets. The networks train
with the eight 90-degree rotations and flips as augmentation (bar length is invariant), the
temperatures are fitted on the validation set, and the held-out metrics (bar ROC AUC among
discs and overall, ECE per head, direct-length Pearson r and median relative error) are
measured on the test set and written into the bundle card. Training is deterministic for a
given seed and thread count.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import sys
import time

import numpy as np

from ..geometry import pixel_angle
from ..inference.bundle import load_bundle, write_card
from ..normalise import NormaliseConfig
from .data import load_labels, log, preprocess
from .evaluate import score_forward
from .metrics import expected_calibration_error, fit_temperature

__all__ = ["FINETUNE_DEFAULTS", "bar_masks", "bundle_training_data", "configure_parser", "finetune_bundle", "inner_angle",
           "run_cli", "train"]

_log = log  # the trainer's progress lines


# --------------------------------------------------------------------------------------------
# training


def _augment(x, rng, *others):
    """Apply one of the eight rotations/flips to each item of ``(B, C, H, W)`` batches.

    ``others`` (e.g. bar masks) get the same transformation per item as ``x``; returns ``x``
    alone, or a tuple of ``x`` and the others.
    """
    import torch

    k = rng.integers(0, 8, size=x.shape[0])
    outs = [t.clone() for t in (x, *others)]
    for t in range(8):
        sel = np.nonzero(k == t)[0]
        if sel.size == 0:
            continue
        idx = torch.as_tensor(sel)
        for src, out in zip((x, *others), outs):
            v = src[idx]
            if t >= 4:
                v = torch.flip(v, dims=(3,))
            out[idx] = torch.rot90(v, t % 4, dims=(2, 3))
    return outs[0] if not others else tuple(outs)


def bar_masks(length_px, angle_deg, has_bar, size, cells, axis_ratio=0.35, supersample=8):
    """Bar masks on the evidence grid: the fraction of each cell inside the projected bar.

    The bar is an ellipse centred on the frame centre (the galaxy centre) with full length
    ``length_px`` (model pixels), the given angle and a fixed minor-to-major axis ratio (at
    least 1.5 model pixels half-width).

    Parameters
    ----------
    length_px : array_like
        Full bar lengths in model-frame pixels (NaN where unknown).
    angle_deg : array_like
        Bar angles in the model frame, from +x towards +y (NaN where unknown).
    has_bar : array_like
        1 for barred, 0 for unbarred (an all-zero mask), NaN when unknown.
    size : int
        Model frame side in pixels.
    cells : int
        Side of the evidence grid (``size`` must be a multiple).
    axis_ratio : float, optional
        Minor-to-major axis ratio of the mask ellipse.
    supersample : int, optional
        Sub-samples per cell side.

    Returns
    -------
    ndarray
        float32 ``(N, cells, cells)``; rows are NaN where the geometry is unknown (a barred
        galaxy without a length or angle, or an unknown bar label).
    """
    length_px = np.asarray(length_px, dtype=float)
    angle = np.radians(np.asarray(angle_deg, dtype=float))
    has_bar = np.asarray(has_bar, dtype=float)
    if size % cells:
        msg = f"The frame side {size} is not a multiple of the evidence grid {cells}."
        raise ValueError(msg)
    n = length_px.size
    out = np.full((n, cells, cells), np.nan, dtype=np.float32)
    out[has_bar == 0] = 0.0
    step = size / cells
    sub = (np.arange(cells * supersample) + 0.5) * step / supersample - 0.5 - (size - 1) / 2.0
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    ok = (has_bar > 0) & np.isfinite(length_px) & (length_px > 0) & np.isfinite(angle)
    for i in np.nonzero(ok)[0]:
        a = length_px[i] / 2.0
        b = max(a * axis_ratio, 1.5)
        u = xx * np.cos(angle[i]) + yy * np.sin(angle[i])
        v = -xx * np.sin(angle[i]) + yy * np.cos(angle[i])
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        out[i] = inside.reshape(cells, supersample, cells, supersample).mean(axis=(1, 3))
    return out


def inner_angle(images, length_px, min_radius=3.0):
    """Angle of the light's second moments within half a bar length of the frame centre.

    A bar dominates the elongation of a barred galaxy's inner light, so this estimates the
    angle of a bar whose length is known but whose position angle is not.

    Parameters
    ----------
    images : ndarray
        ``(N, size, size)`` model-frame images (galaxy at the centre).
    length_px : array_like
        Full bar lengths in model pixels.
    min_radius : float, optional
        Smallest radius (model pixels) of the region.

    Returns
    -------
    ndarray
        Angles in degrees from +x towards +y, in [0, 180); NaN where the region holds no light.
    """
    images = np.asarray(images, dtype=float)
    n, ny, nx = images.shape
    yy, xx = np.mgrid[:ny, :nx]
    xx = xx - (nx - 1) / 2.0
    yy = yy - (ny - 1) / 2.0
    rr = np.hypot(xx, yy)
    out = np.full(n, np.nan)
    for i, (img, length) in enumerate(zip(images, np.asarray(length_px, dtype=float))):
        w = np.clip(img, 0, None) * (rr <= max(length / 2.0, min_radius))
        if not w.sum() > 0:
            continue
        cxx, cyy, cxy = (w * xx * xx).sum(), (w * yy * yy).sum(), (w * xx * yy).sum()
        out[i] = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)) % 180.0
    return out


def _predict(net, images, fn, batch=512):
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            outs.append(fn(net, torch.as_tensor(images[i : i + batch][:, None])).numpy())
    return np.concatenate(outs) if outs else np.zeros((0,))


def _check_frame(arch, length_arch, size):
    """Refuse an architecture, or a frame size it cannot take, before the (slow) preprocessing."""
    import torch

    from .nets import LengthNet, MorphologyNet

    for option, make, spec in (("--arch", MorphologyNet, arch), ("--length-arch", LengthNet, length_arch)):
        net = make(spec).eval()  # a malformed architecture raises its own message here
        try:
            with torch.no_grad():
                net(torch.zeros(1, 1, size, size))
        except (ValueError, RuntimeError) as exc:
            msg = f"The network of {option} cannot take a {size}-pixel frame (--size): {exc}"
            raise ValueError(msg) from None


#: Weight of the evidence logit's own bar loss when the bar logit has a context term (``bar_context``):
#: it keeps the evidence map, whose gradient is the saliency, a bar detector by itself.
EVIDENCE_LOSS_WEIGHT = 1.0


def _morph_step(net, images, lab, geometry, rng, *, bar_weight, mask_weight, evidence_weight, log):
    """The morphology network's training step and loss: ``(step, loss_fn)``.

    ``step(idx)`` augments the frames ``idx`` and returns the batch loss to back-propagate: the
    morphology cross-entropy, the bar and spiral BCEs (``bar_weight`` on the bar), with a context
    term the evidence logit's own bar BCE (``evidence_weight``), and where ``geometry`` gives bar
    masks the evidence map's segmentation loss (``mask_weight``). ``loss_fn(logits, idx)`` is
    the label part alone (the validation loss).
    """
    import torch
    import torch.nn.functional as F

    masks = None
    if net.evidence_design and geometry is not None and mask_weight > 0:
        with torch.no_grad():
            cells = int(net.bar_evidence(torch.zeros(1, 1, images.shape[-1], images.shape[-1])).shape[-1])
        m = bar_masks(geometry["length_px"], geometry["angle_deg"], lab["has_bar"], images.shape[-1], cells)
        masks = torch.as_tensor(m[:, None])
        log(f"bar-evidence masks on a {cells} x {cells} grid: {int(np.isfinite(m[:, 0, 0]).sum())} of {len(m)} "
            f"galaxies ({int(np.nansum(m.reshape(len(m), -1).max(axis=1) > 0))} with a bar)")
        if not np.nansum(m) > 0:  # only unbarred masks: the loss would push the evidence down alone
            log("no barred galaxy has a bar length and PA: training without the bar-evidence mask loss")
            masks = None
    morph = torch.as_tensor(lab["morph"], dtype=torch.long)
    bar = torch.as_tensor(lab["has_bar"], dtype=torch.float32)
    spiral = torch.as_tensor(lab["has_spiral"], dtype=torch.float32)

    def loss_fn(z, idx):
        loss = 0.0
        m = morph[idx]
        if (m >= 0).any():
            loss = loss + F.cross_entropy(z[:, :3], m, ignore_index=-1)
        for col, y, w in ((3, bar[idx], bar_weight), (4, spiral[idx], 1.0)):
            ok = torch.isfinite(y)
            if ok.any():
                loss = loss + w * F.binary_cross_entropy_with_logits(z[ok, col], y[ok])
        return loss

    context = getattr(net, "bar_context", None) is not None

    def step(idx):
        if masks is None and not context:
            x = _augment(torch.as_tensor(images[idx][:, None]), rng)
            return loss_fn(net(x), torch.as_tensor(idx))
        if masks is None:
            x, mk = _augment(torch.as_tensor(images[idx][:, None]), rng), None
        else:
            x, mk = _augment(torch.as_tensor(images[idx][:, None]), rng, masks[idx])
        z, e = net.outputs(x)
        ti = torch.as_tensor(idx)
        loss = loss_fn(z, ti)
        if context:  # the evidence alone must still tell a bar (its gradient is the saliency)
            y = bar[ti]
            ok = torch.isfinite(y)
            if ok.any():
                loss = loss + evidence_weight * F.binary_cross_entropy_with_logits(net.evidence_logit(e)[ok], y[ok])
        if mk is not None:
            known = torch.isfinite(mk[:, 0, 0, 0])
            if known.any():
                loss = loss + mask_weight * F.binary_cross_entropy_with_logits(e[known], mk[known, 0])
        return loss

    return step, loss_fn


def _train_morph(images, lab, tr, va, *, epochs, batch_size, lr, seed, arch, log, bar_weight=2.0, geometry=None,
                 mask_weight=1.0, evidence_weight=EVIDENCE_LOSS_WEIGHT):
    import torch

    from .nets import MorphologyNet

    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])
    net = MorphologyNet(arch)
    step, loss_fn = _morph_step(net, images, lab, geometry, rng, bar_weight=bar_weight, mask_weight=mask_weight,
                                evidence_weight=evidence_weight, log=log)

    def validate(train_loss):
        vz = _predict(net, images[va], lambda m, x: m(x))
        vloss = float(loss_fn(torch.as_tensor(vz), torch.as_tensor(va))) if len(va) else train_loss
        return vloss, f"validation loss {vloss:.4f}"

    steps = epochs * int(np.ceil(len(tr) / batch_size))
    return _fit(net, tr, rng, epochs=epochs, batch_size=batch_size, lr=lr, steps=steps, step=step, validate=validate,
                log=log, what="morphology")


#: The fine-tuning stage of :func:`train` (``finetune``) that bundles 5.4 and 5.5 run on the real folds:
#: ``epochs`` passes over the focus rows repeated ``repeat`` times plus ``others`` other rows
#: drawn afresh each epoch, at a peak learning rate ``lr`` (one cycle), from the trained
#: network with its batch norm folded; the last epoch is kept. ``part`` is what trains: ``all``
#: the weights (the first 5.4 candidate, not shipped), or ``tail`` only the tail, the morphology
#: heads and the bar's context term, what the saliency does not pass through (:data:`FINETUNE_PARTS`;
#: bundles 5.4 and 5.5, whose ``build_default`` asks for it). ``linear_copies`` adds, per epoch, that many
#: linear copies of each focus training row that is a colour display image (a real survey JPEG),
#: its display stretch undone (:func:`survey_bars.training.data.linear_frames`), so that the real
#: galaxies are learned as linear FITS images too (2: bundle 5.5, whose ``build_default`` asks for
#: it; RESULTS.md); 0: none.
FINETUNE_DEFAULTS = {"epochs": 6, "repeat": 4, "others": 20000, "lr": 1e-3, "part": "all", "linear_copies": 0}

#: The parameter-name prefixes each fine-tuning ``part`` trains (None: all of them).
FINETUNE_PARTS = {"all": None, "tail": ("tail.", "head.", "bar_context.")}


def _finetune_morph(net, images, lab, tr, va, focus, *, epochs, repeat, others, lr, batch_size, seed, log,
                    bar_weight=2.0, geometry=None, mask_weight=1.0, evidence_weight=EVIDENCE_LOSS_WEIGHT, part="all",
                    extra=None):
    """Fine-tune a trained morphology network with the rows ``focus`` weighted up (see :data:`FINETUNE_DEFAULTS`).

    The network's batch norm is folded first (:func:`~survey_bars.training.nets.fold_batchnorm`),
    so that the stage starts from exactly the weights a bundle's forward graph holds: fine-tuning
    the networks of a bundle (:func:`finetune_bundle`) and fine-tuning them right after their
    training give the same network. The loss is the training's (:func:`_morph_step`).
    ``extra`` is ``(frames, rows)``: more frames, each trained once per epoch with the labels of
    the training row ``rows[j]`` (the linear copies of :data:`FINETUNE_DEFAULTS`); they carry no
    bar geometry.

    Returns
    -------
    MorphologyNet
        The fine-tuned network (batch norm folded), in eval mode.
    """
    import torch

    from .nets import fold_batchnorm

    if part not in FINETUNE_PARTS:
        msg = f"The fine-tuning part must be one of {sorted(FINETUNE_PARTS)}; got {part!r}."
        raise ValueError(msg)
    prefixes = FINETUNE_PARTS[part]
    net = fold_batchnorm(net)
    for name, p in net.named_parameters():
        p.requires_grad_(prefixes is None or name.startswith(prefixes))
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 7])
    focus = np.asarray(focus, bool)
    f_tr, o_tr = tr[focus[tr]], tr[~focus[tr]]
    if len(f_tr) == 0:
        msg = "The fine-tuning has no training rows of its focus sources; check the label table's source column."
        raise ValueError(msg)
    n_other = min(int(others), len(o_tr))
    n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
    x_idx = np.zeros(0, dtype=np.int64)
    if extra is not None and len(extra[1]):
        frames, rows = np.asarray(extra[0], np.float32), np.asarray(extra[1], np.int64)
        if len(frames) != len(rows) or not np.isin(rows, tr).all():
            msg = "extra frames need one training row each (rows within the training split)."
            raise ValueError(msg)
        n0 = len(images)
        x_idx = np.arange(n0, n0 + len(rows))
        images = np.concatenate([images, frames])
        lab = {k: np.concatenate([v, v[rows]]) for k, v in lab.items()}
        if geometry is not None:
            geometry = {k: np.concatenate([v, np.full(len(rows), np.nan)]) for k, v in geometry.items()}
    log(f"fine-tuning: {len(f_tr)} focus rows x {repeat}{f', {len(x_idx)} extra frames' if len(x_idx) else ''} and "
        f"{n_other} of {len(o_tr)} other rows per epoch, {epochs} epochs, peak lr {lr}, {part} ({n_train} of "
        f"{sum(p.numel() for p in net.parameters())} weights)")
    step, loss_fn = _morph_step(net, images, lab, geometry, rng, bar_weight=bar_weight, mask_weight=mask_weight,
                                evidence_weight=evidence_weight, log=log)

    def order(rng):
        return rng.permutation(np.concatenate([np.tile(f_tr, int(repeat)), x_idx,
                                               rng.choice(o_tr, n_other, replace=False)]))

    f_va, o_va = va[focus[va]], va[~focus[va]]

    def validate(train_loss):
        text = []
        for what, idx in (("focus", f_va), ("others", o_va)):
            if len(idx):
                vz = _predict(net, images[idx], lambda m, x: m(x))
                text.append(f"{what} {float(loss_fn(torch.as_tensor(vz), torch.as_tensor(idx))):.4f}")
        return train_loss, "validation loss " + ", ".join(text)

    steps = int(epochs) * int(np.ceil((int(repeat) * len(f_tr) + len(x_idx) + n_other) / batch_size))
    return _fit(net, tr, rng, epochs=int(epochs), batch_size=batch_size, lr=lr, steps=steps, step=step,
                validate=validate, log=log, what="fine-tuning", order=order, keep_best=False)


def _fit(net, tr, rng, *, epochs, batch_size, lr, steps, step, validate, log, what, min_batch=1, order=None,
         keep_best=True):
    """The epoch loop both networks train with: AdamW with a one-cycle schedule, the best epoch kept.

    Parameters
    ----------
    net : torch.nn.Module
    tr : ndarray
        Training indices; shuffled each epoch by ``rng`` and cut into sorted batches.
    rng : numpy.random.Generator
    epochs, batch_size : int
    lr : float
        Peak learning rate.
    steps : int
        Optimiser steps of the schedule.
    step : callable
        ``step(idx) -> loss`` of one batch (a tensor to back-propagate).
    validate : callable
        ``validate(train_loss) -> (validation loss, text for the log)`` after each epoch.
    log : callable
    what : str
        Name of the network in the log lines.
    min_batch : int, optional
        Smaller batches (the last of an epoch) are skipped.
    order : callable, optional
        ``order(rng) -> indices`` of one epoch (default: ``tr`` shuffled).
    keep_best : bool, optional
        Keep the weights of the best validation epoch (default); False keeps the last.

    Returns
    -------
    torch.nn.Module
        ``net`` with the weights of its best validation epoch (or its last), in eval mode.
    """
    import torch

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    best, best_state = np.inf, None
    for ep in range(epochs):
        net.train()
        epoch = rng.permutation(tr) if order is None else order(rng)
        tot, n = 0.0, 0
        for i in range(0, len(epoch), batch_size):
            idx = np.sort(epoch[i : i + batch_size])
            if len(idx) < min_batch:
                continue
            loss = step(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        net.eval()
        vloss, text = validate(tot / max(n, 1))
        log(f"{what} epoch {ep + 1}/{epochs}: train loss {tot / max(n, 1):.4f}, {text}")
        if vloss < best and keep_best:
            best = vloss
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval()


def _train_length(images, logl, tr, va, *, epochs, batch_size, lr, seed, arch, log):
    import torch
    import torch.nn.functional as F

    from .nets import LengthNet

    torch.manual_seed(seed + 1)
    rng = np.random.default_rng([seed, 2])
    net = LengthNet(arch)
    with torch.no_grad():
        net.head.bias.fill_(float(np.mean(logl[tr])) if len(tr) else 2.5)
    y_all = torch.as_tensor(logl, dtype=torch.float32)

    def step(idx):
        x = _augment(torch.as_tensor(images[idx][:, None]), rng)
        return F.smooth_l1_loss(net.log_length(x), y_all[idx], beta=0.1)

    def validate(train_loss):
        if not len(va):
            return train_loss, f"validation median rel. error {train_loss:.4f}"
        pv = _predict(net, images[va], lambda m, x: m.log_length(x))
        vloss = float(np.median(np.abs(np.exp(pv - logl[va]) - 1)))
        return vloss, f"validation median rel. error {vloss:.4f}"

    steps = epochs * int(np.ceil(max(len(tr), 1) / batch_size))
    return _fit(net, tr, rng, epochs=epochs, batch_size=batch_size, lr=lr, steps=steps, step=step, validate=validate,
                log=log, what="length", min_batch=2)


def _split(n, seed, val_frac, test_frac):
    rng = np.random.default_rng([seed, 0])
    perm = rng.permutation(n)
    n_test = int(round(test_frac * n))
    n_val = int(round(val_frac * n))
    if n >= 6:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
    test = np.sort(perm[:n_test])
    val = np.sort(perm[n_test : n_test + n_val])
    train = np.sort(perm[n_test + n_val :])
    return train, val, test


def _metrics(net, length_net, images, lab, idx, lidx, logl, scale_to_arcsec, flips=False):
    """Held-out metrics on the test indices (the card's ``metrics``).

    The networks' outputs are turned into the forward graph's (probabilities calibrated with
    the net's temperatures; with ``flips``, averaged over four flips) and scored by
    :func:`~survey_bars.training.evaluate.score_forward`, as ``survey-bars evaluate`` scores the
    exported graph. Added here, since only the torch networks give them: the ECEs before
    temperature scaling, the smooth and edge-on ECEs, and the direct length's Pearson r in
    model pixels and median bias.
    """
    import pandas as pd
    import torch

    from .export import ForwardGraph
    from .nets import CLASS_NAMES, flip_average

    out = {"n_test": int(len(idx))}
    if len(idx) == 0:
        return out

    def graph_outputs(m, x):
        probs, _, length = m(x)
        return torch.cat([probs, length[:, None]], dim=1)

    out_g = _predict(ForwardGraph(net, length_net, flips).eval(), images[idx], graph_outputs)
    probs, length = out_g[:, :-1], out_g[:, -1]
    z = _predict(net, images[idx], flip_average if flips else (lambda m, x: m(x)))
    labels = pd.DataFrame({"class": lab["class"][idx], "morph": lab["morph"][idx], "has_bar": lab["has_bar"][idx],
                           "has_spiral": lab["has_spiral"][idx],
                           "bar_length_arcsec": np.exp(logl[idx]) * scale_to_arcsec[idx]})
    scores = score_forward(probs, list(CLASS_NAMES), length, labels, scale_to_arcsec[idx])
    scores.pop("n")
    if "n_discs" in scores:
        scores["n_test_discs"] = scores.pop("n_discs")
    out.update(scores)
    # what only the torch networks give
    col = {c: i for i, c in enumerate(CLASS_NAMES)}
    morph, bar, sp = lab["morph"][idx], lab["has_bar"][idx], lab["has_spiral"][idx]
    ok = morph >= 0
    if ok.any():
        out["ece_smooth"] = expected_calibration_error(probs[ok, col["p_smooth"]], morph[ok] == 0)
        out["ece_edge_on"] = expected_calibration_error(probs[ok, col["p_edge_on"]], morph[ok] == 1)
        zr = z[ok, :3] - z[ok, :3].max(axis=1, keepdims=True)
        pr = np.exp(zr) / np.exp(zr).sum(axis=1, keepdims=True)
        out["ece_morph_uncalibrated"] = expected_calibration_error(pr.max(axis=1), pr.argmax(axis=1) == morph[ok])
    for key, y, zc in (("ece_bar_uncalibrated", bar, z[:, 3]), ("ece_spiral_uncalibrated", sp, z[:, 4])):
        okk = np.isfinite(y)
        if okk.any():
            out[key] = expected_calibration_error(1 / (1 + np.exp(-zc[okk])), y[okk] > 0.5)
    with_len = np.isin(idx, lidx)
    if len(lidx) >= 3:
        pred, true = length[with_len], np.exp(logl[idx[with_len]])
        out["direct_length_pearson_r_model_px"] = float(np.corrcoef(pred, true)[0, 1])
        out["direct_length_median_bias"] = float(np.median((pred - true) / true))
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else round(v, 5) if isinstance(v, float) else v)
            for k, v in out.items()}


def train(data_dirs, out, *, labels=None, epochs=12, length_epochs=None, seed=0, threads=1, workers=None,
          val_frac=0.15, test_frac=0.15, batch_size=128, lr=3e-3, arch=None, length_arch=None, bar_weight=2.0,
          mask_weight=1.0, bar_pa_from_image=False, checkpoint=None, name="survey-bars-model", version="0", command=None,
          cache=True,
          preprocessing=None, flips=True, finetune=None, log=_log):
    """Train both networks and export a bundle.

    Parameters
    ----------
    data_dirs : list of str
        Simulation directories, or directories of FITS, JPEG or PNG files with ``labels``.
    out : str
        Bundle directory to write.
    labels : str, optional
        Label table for user data (see :func:`load_labels`).
    epochs : int, optional
        Epochs of the morphology network.
    length_epochs : int, optional
        Epochs of the length regressor (default ``2 * epochs``; it sees only barred galaxies).
    seed : int, optional
        Seed of the split, the initialisation, the batch order and the augmentation.
    threads : int, optional
        Torch intra-op threads.
    workers : int, optional
        Preprocessing processes (default ``threads``).
    val_frac, test_frac : float, optional
        Fractions for the calibration (validation) and the held-out (test) sets.
    batch_size : int, optional
    lr : float, optional
        Peak learning rate (one-cycle schedule).
    arch, length_arch : dict, optional
        Architectures of the morphology and length networks (default
        :data:`survey_bars.training.nets.DEFAULT_ARCH` and :data:`~survey_bars.training.nets.LENGTH_ARCH`).
        Without ``length_arch``, a pooled ``arch`` (``stem``/``layers``) also serves the length
        network; a bar-evidence ``arch`` does not (the length network is always pooled).
    bar_weight : float, optional
        Weight of the bar loss relative to the morphology and spiral losses.
    mask_weight : float, optional
        Weight of the bar-evidence segmentation loss (bar-evidence architectures only): where
        a barred galaxy's ``bar_length_arcsec`` and ``bar_pa_deg`` are known, the evidence map
        is asked to be the bar's projected ellipse; unbarred galaxies are asked for none. 0
        trains on morphology labels alone.
    bar_pa_from_image : bool, optional
        For barred galaxies with a length but no position angle (e.g. volunteer lengths), take
        the angle of the second moments of the frame's light within half the bar length (see
        :func:`inner_angle`), so that their bar-evidence mask can be drawn. False (the default)
        leaves them out of the mask loss.
    checkpoint : str, optional
        Also save a torch checkpoint here (for ``survey-bars export``).
    name, version : str, optional
        Recorded in the card.
    command : str, optional
        The command line recorded in the card (default: this process's).
    cache : bool, optional
        Use the preprocessing cache.
    preprocessing : NormaliseConfig, optional
        Preprocessing (default ``NormaliseConfig()``).
    flips : bool, optional
        Average the forward outputs over four flips of the frame
        (:func:`survey_bars.training.nets.flip_average`), in the exported forward graph, in the
        temperature fit and in the card's metrics alike.
    finetune : dict, optional
        After both networks have trained, fine-tune the morphology network with some rows
        weighted up: ``{"sources": [...], "epochs", "repeat", "others", "lr", "part"}`` (see
        :data:`FINETUNE_DEFAULTS`); ``sources`` are values of the label table's ``source``
        column (bundle 5.4: the real galaxies, ``gz1`` and ``gz2``). The temperatures are then
        fitted again, and the card records the stage under ``training.finetune``.
    log : callable, optional
        Progress messages.

    Returns
    -------
    Bundle
        The exported bundle.
    """
    import torch

    from .export import export_bundle, save_checkpoint
    from .nets import DEFAULT_ARCH, LENGTH_ARCH, is_evidence_arch

    t_start = time.time()
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    cfg = preprocessing or NormaliseConfig()
    workers = int(workers or threads)
    arch = arch or DEFAULT_ARCH
    length_arch = length_arch or (LENGTH_ARCH if is_evidence_arch(arch) else arch)
    _check_frame(arch, length_arch, cfg.size)
    data = _training_set(data_dirs, labels, cfg, workers=workers, cache=cache, bar_pa_from_image=bar_pa_from_image,
                         log=log)
    keep, images, lab = data["keep"], data["images"], data["labels"]
    scale_to_arcsec, has_len, logl = data["scale_to_arcsec"], data["has_len"], data["logl"]

    tr, va, te = _split(len(keep), seed, val_frac, test_frac)
    ltr, lva, lte = (s[has_len[s]] for s in (tr, va, te))
    log(f"split: {len(tr)} train, {len(va)} validation, {len(te)} test; bar lengths {len(ltr)}/{len(lva)}/{len(lte)}")

    t0 = time.time()
    net = _train_morph(images, lab, tr, va, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, arch=arch, log=log,
                       bar_weight=bar_weight, geometry=data["geometry"], mask_weight=mask_weight,
                       evidence_weight=EVIDENCE_LOSS_WEIGHT)
    t_morph = time.time() - t0
    _fit_temperatures(net, images, lab, va, flips)
    log(f"temperatures: morph {float(net.t_morph):.3f}, bar {float(net.t_bar):.3f}, spiral {float(net.t_spiral):.3f}")
    t0 = time.time()
    length_net = _train_length(images, logl, ltr, lva, epochs=length_epochs or 2 * epochs, batch_size=min(batch_size, 64),
                               lr=lr, seed=seed, arch=length_arch, log=log)
    t_length = time.time() - t0
    ft_record = None
    if finetune:
        net, ft_record = _finetune_stage(net, data, (tr, va), finetune, batch_size=batch_size, seed=seed,
                                         bar_weight=bar_weight, mask_weight=mask_weight, flips=flips, log=log,
                                         cfg=cfg, workers=workers)
    metrics = _metrics(net, length_net, images, lab, te, lte, logl, scale_to_arcsec, flips=flips)
    log("held-out metrics: " + json.dumps(metrics))
    card_extra = _training_card(name=name, version=version, cfg=cfg, command=command, seed=seed, data_dirs=data_dirs,
                                labels=labels, data=data, split=(tr, va, te), epochs=epochs, length_epochs=length_epochs,
                                batch_size=batch_size, lr=lr, bar_weight=bar_weight, mask_weight=mask_weight,
                                threads=threads, times=(t_morph, t_length), flips=flips, metrics=metrics,
                                context=net.evidence_design and net.bar_context is not None)
    if ft_record:
        card_extra["training"]["finetune"] = ft_record
    if checkpoint:
        save_checkpoint(checkpoint, net, length_net, card_extra)
    card_extra["training"]["wall_time_s"] = round(time.time() - t_start, 1)
    bundle = export_bundle(net, length_net, out, card_extra, seed=seed)
    # the wall time includes the export

    card = dict(bundle.card)
    card["training"] = {**card["training"], "wall_time_s": round(time.time() - t_start, 1)}
    write_card(bundle.path, card)
    log(f"wrote {bundle.path} in {time.time() - t_start:.0f} s")
    return load_bundle(bundle.path)


def _finetune_stage(net, data, split, finetune, *, batch_size, seed, bar_weight, mask_weight, flips, log, cfg=None,
                    workers=1):
    """Run :func:`_finetune_morph` on ``data`` and refit the temperatures: ``(net, card record)``.

    ``cfg`` (the preprocessing) and ``workers`` make the linear copies of ``finetune["linear_copies"]``.
    """
    spec = {**FINETUNE_DEFAULTS, **{k: v for k, v in finetune.items() if k != "sources"}}
    sources = sorted({str(x) for x in finetune.get("sources") or []})
    if not sources:
        msg = "finetune needs 'sources': the values of the label table's source column to weight up (e.g. gz1, gz2)."
        raise ValueError(msg)
    tr, va = split
    images, lab = data["images"], data["labels"]
    present = data["table"]["source"].values[data["keep"]]
    focus = np.isin(present, sources)
    if not focus[tr].any():
        have = sorted({str(x) for x in present} - {""}) or ["none: the label table has no 'source' column"]
        msg = (f"The fine-tuning sources {sources} have no training rows; the label table's sources are "
               f"{', '.join(have)}. Name some of those (--finetune-sources).")
        raise ValueError(msg)
    if int(spec["linear_copies"]) < 0:
        msg = f"finetune's linear_copies takes 0 or more copies per colour image; got {spec['linear_copies']!r}."
        raise ValueError(msg)
    t0 = time.time()
    extra, linear = None, {}
    if int(spec["linear_copies"]) > 0:
        extra, linear = _linear_extra(data, tr[focus[tr]], int(spec["linear_copies"]), seed=seed, cfg=cfg,
                                      workers=workers, log=log)
    net = _finetune_morph(net, images, lab, tr, va, focus, epochs=spec["epochs"], repeat=spec["repeat"],
                          others=spec["others"], lr=spec["lr"], batch_size=batch_size, seed=seed, log=log,
                          bar_weight=bar_weight, geometry=data["geometry"], mask_weight=mask_weight, part=spec["part"],
                          extra=extra)
    _fit_temperatures(net, images, lab, va, flips)
    log(f"temperatures after fine-tuning: morph {float(net.t_morph):.3f}, bar {float(net.t_bar):.3f}, "
        f"spiral {float(net.t_spiral):.3f}")
    record = {"sources": sources, "epochs": int(spec["epochs"]), "repeat": int(spec["repeat"]),
              "others": int(spec["others"]), "learning_rate": float(spec["lr"]), "part": str(spec["part"]),
              "batch_size": int(batch_size),
              "n_focus_train": int(focus[tr].sum()), "seconds": round(time.time() - t0, 1),
              **({"linear_copies": linear} if linear else {}),
              "how": ("after the training, the morphology network (batch norm folded) trains for `epochs` more passes "
                      "over its training split's focus rows repeated `repeat` times and `others` other rows drawn "
                      "afresh each epoch (one-cycle schedule, the training's losses, the last epoch kept); the "
                      "temperatures are fitted again on the validation split")}
    return net, record


def _linear_extra(data, rows, copies, *, seed, cfg, workers, log):
    """The linear copies of the focus training ``rows`` that are colour display images: ``(extra, card record)``."""
    from .data import linear_frames
    from .realdata import LINEAR_Q_RANGE

    paths = data["table"]["path"].values[data["keep"]][rows]
    t0 = time.time()
    frames, ok = linear_frames(list(paths), cfg, copies=copies, seed=seed, q_range=LINEAR_Q_RANGE, workers=workers)
    used = np.repeat(rows[ok], copies)
    log(f"linear copies: {len(frames)} frames of {int(ok.sum())} of {len(rows)} focus training rows (the others are not "
        f"colour images) in {time.time() - t0:.0f} s")
    record = {"copies": int(copies), "q_range": [float(q) for q in LINEAR_Q_RANGE], "n_rows": int(ok.sum()),
              "how": ("survey_bars.training.data.linear_frames: each colour display image of the focus training rows "
                      "with its asinh stretch undone (Lupton et al. 2004; Q uniform in q_range, band g, r, i or their "
                      "mean at random), normalised as a FITS image; each copy trains once per epoch")}
    return (frames, used), record


def bundle_training_data(bundle, data_dirs, *, labels, seed, val_frac=0.15, test_frac=0.15, workers=1, cache=True,
                         log=_log):
    """The training set and split of a bundle that :func:`train` wrote without ``finetune``.

    Parameters
    ----------
    bundle : Bundle
    data_dirs, labels, seed, val_frac, test_frac, workers, cache, log
        As for :func:`train`; they must be the bundle's.

    Returns
    -------
    tuple
        ``(data, (train, validation, test))``: the frames and labels (as :func:`train` reads them,
        with ``data["table"]["source"]``) and the split's row indices.

    Raises
    ------
    ValueError
        When the bundle was already fine-tuned, or its card's training data (file counts, split
        sizes) are not these.
    """
    card = bundle.card
    if (card.get("training") or {}).get("finetune"):
        msg = f"{bundle.path} was already fine-tuned ({card['training']['finetune']}); use the bundle it came from."
        raise ValueError(msg)
    cfg = NormaliseConfig.from_dict(card["preprocessing"])
    data = _training_set(data_dirs, labels, cfg, workers=workers, cache=cache, bar_pa_from_image=False, log=log)
    split = _split(len(data["keep"]), seed, val_frac, test_frac)
    rec = (card.get("training") or {}).get("data") or {}
    want = {"n_files": len(data["table"]), "n_used": len(data["keep"]),
            "split": {"train": len(split[0]), "validation": len(split[1]), "test": len(split[2])}}
    differ = [f"{k}: {rec.get(k)} there, {v} here" for k, v in want.items() if rec.get(k) != v]
    if differ:
        msg = (f"{bundle.path} was trained on other data than {list(map(str, data_dirs))} with {labels}: "
               f"{'; '.join(differ)}. Use the bundle's own training data, seed and split fractions.")
        raise ValueError(msg)
    return data, split


def finetune_bundle(bundle, out, data_dirs, *, labels, finetune, seed, threads=1, workers=None, val_frac=0.15,
                    test_frac=0.15, batch_size=128, bar_weight=2.0, mask_weight=1.0, cache=True, log=_log):
    """Fine-tune the morphology network of a trained bundle, as :func:`train`'s ``finetune`` does.

    For a bundle that :func:`train` wrote without ``finetune``, with the same data, labels, seed,
    split fractions, batch size and loss weights, this gives the bundle that :func:`train` with
    ``finetune`` writes, without training again: both start from the same folded weights (the
    forward graph's), on the same split. The length network and the bundle's card are kept;
    the temperatures, the metrics and ``training.finetune`` are new. Calibrations and the
    length head, which depend on the morphology network, are dropped.

    Parameters
    ----------
    bundle : str or os.PathLike
        The trained bundle.
    out : str or os.PathLike
        Where to write the fine-tuned bundle (may be ``bundle``).
    data_dirs, labels, seed, threads, workers, val_frac, test_frac, batch_size, bar_weight, mask_weight, cache
        As for :func:`train`; they must be the bundle's training settings.
    finetune : dict
        As for :func:`train`.
    log : callable, optional

    Returns
    -------
    Bundle
        The fine-tuned bundle.

    Raises
    ------
    ValueError
        When the bundle's training data do not match ``data_dirs``/``labels`` (file counts or split
        sizes), or it was already fine-tuned.
    """
    import torch

    from .export import export_bundle, torch_from_bundle

    t_start = time.time()
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    old = load_bundle(bundle)
    card = json.loads(json.dumps(old.card))
    data, (tr, va, te) = bundle_training_data(old, data_dirs, labels=labels, seed=seed, val_frac=val_frac,
                                              test_frac=test_frac, workers=int(workers or threads), cache=cache, log=log)
    morph, length_net = torch_from_bundle(old)
    flips = bool((card.get("forward") or {}).get("flip_average", False))
    net, ft_record = _finetune_stage(morph, data, (tr, va), finetune, batch_size=batch_size, seed=seed,
                                     bar_weight=bar_weight, mask_weight=mask_weight, flips=flips, log=log,
                                     cfg=NormaliseConfig.from_dict(card["preprocessing"]), workers=int(workers or threads))
    lte = te[data["has_len"][te]]
    metrics = _metrics(net, length_net, data["images"], data["labels"], te, lte, data["logl"], data["scale_to_arcsec"],
                       flips=flips)
    log("held-out metrics after fine-tuning: " + json.dumps(metrics))
    keep = ("name", "version", "preprocessing", "training", "forward", "length_definition")
    card_extra = {k: card[k] for k in keep if k in card}
    card_extra["training"] = {**card["training"], "finetune": ft_record}
    card_extra["metrics"] = metrics
    b = export_bundle(net, length_net, out, card_extra, seed=seed)
    log(f"wrote {b.path} in {time.time() - t_start:.0f} s")
    return b


def _training_set(data_dirs, labels, cfg, *, workers, cache, bar_pa_from_image, log=_log):
    """The labelled frames and what training needs of their labels.

    Returns a dict: ``table`` (the label table), ``keep`` (its usable rows), ``images``,
    ``labels`` (morph, has_bar, has_spiral, class), ``scale_to_arcsec`` (arcsec per model
    pixel, NaN without a pixel scale), ``has_len`` and ``logl`` (the bars with a length, and
    its log in model pixels) and ``geometry`` (bar length and angle in the frame, for the masks).
    """
    lab_df = load_labels(data_dirs, labels)
    log(f"{len(lab_df)} labelled files from {len(data_dirs)} director{'y' if len(data_dirs) == 1 else 'ies'}")
    prep = preprocess(lab_df["path"].tolist(), lab_df["pixel_scale_arcsec"].values, cfg, workers=workers, cache=cache)
    good = prep["error"] == ""
    if (~good).any():
        log(f"{int((~good).sum())} files could not be used, e.g. {lab_df['path'][np.argmax(~good)]}: "
            f"{prep['error'][np.argmax(~good)]}")
    keep = np.nonzero(good)[0]
    if len(keep) < 8:
        msg = f"Only {len(keep)} usable labelled files; at least 8 are needed to train."
        raise ValueError(msg)
    images = prep["images"][keep]
    lab = {
        "morph": lab_df["morph"].values[keep].astype(np.int64),
        "has_bar": lab_df["has_bar"].values[keep].astype(np.float64),
        "has_spiral": lab_df["has_spiral"].values[keep].astype(np.float64),
        "class": lab_df["class"].values[keep].astype(str),
    }
    pix = np.where(np.isfinite(lab_df["pixel_scale_arcsec"].values[keep]),
                   lab_df["pixel_scale_arcsec"].values[keep], prep["pixel_scale"][keep])
    scale_to_arcsec = prep["scale"][keep] * pix  # arcsec per model pixel (NaN without a pixel scale)
    no_scale = ~np.isfinite(pix)
    if no_scale.any():
        log(f"{int(no_scale.sum())} files have no pixel scale (images without a pixel_scale label): they train the "
            "morphology, bar and spiral outputs, and their bar lengths are left out of the length and mask losses")
    with np.errstate(invalid="ignore", divide="ignore"):
        length_px = lab_df["bar_length_arcsec"].values[keep] / scale_to_arcsec
    has_len = np.isfinite(length_px) & (length_px > 0) & (np.nan_to_num(lab["has_bar"], nan=1.0) > 0.5)
    logl = np.where(has_len, np.log(np.where(has_len, length_px, 1.0)), np.nan)

    pa = lab_df["bar_pa_deg"].values[keep]
    cds = prep["cd"][keep]
    angle = np.array([pixel_angle(a, c) for a, c in zip(pa, cds)])
    if bar_pa_from_image:
        need = has_len & ~np.isfinite(angle)
        if need.any():
            angle[need] = inner_angle(images[need], length_px[need])
            log(f"{int(need.sum())} bars with a length but no position angle: angle from the frame's inner light")
    return {"table": lab_df, "keep": keep, "images": images, "labels": lab, "scale_to_arcsec": scale_to_arcsec,
            "has_len": has_len, "logl": logl, "geometry": {"length_px": length_px, "angle_deg": angle}}


def _fit_temperatures(net, images, lab, va, flips):
    """Temperatures on the validation split, from the logits the forward graph will average."""
    import torch

    from .nets import flip_average

    if len(va):
        z = _predict(net, images[va], flip_average if flips else (lambda m, x: m(x)))
        with torch.no_grad():
            mk = lab["morph"][va] >= 0
            if mk.sum() >= 2:
                net.t_morph.fill_(fit_temperature(z[mk, :3], lab["morph"][va][mk], "softmax"))
            for col, key, buf in ((3, "has_bar", net.t_bar), (4, "has_spiral", net.t_spiral)):
                y = lab[key][va]
                ok = np.isfinite(y)
                if ok.sum() >= 2:
                    buf.fill_(fit_temperature(z[ok, col], y[ok], "binary"))


def _training_card(*, name, version, cfg, command, seed, data_dirs, labels, data, split, epochs, length_epochs, batch_size,
                   lr, bar_weight, mask_weight, threads, times, flips, metrics, context=False):
    """The card's training record: the data, the split, the settings, the times, the held-out metrics."""
    import torch

    lab_df, keep, lab, has_len = data["table"], data["keep"], data["labels"], data["has_len"]
    tr, va, te = split
    t_morph, t_length = times
    classes = {str(k): int(v) for k, v in zip(*np.unique(lab["class"], return_counts=True))}
    card_extra = {
        "name": name,
        "version": version,
        "preprocessing": cfg.to_dict(),
        "training": {
            "command": command or " ".join(shlex.quote(a) for a in ["survey-bars", *sys.argv[1:]]),
            "seed": int(seed),
            "data": {
                "directories": [str(pathlib.Path(d).resolve()) for d in data_dirs],
                "labels": str(labels) if labels else "truth.parquet of each directory (survey-bars simulate)",
                "n_files": int(len(lab_df)),
                "n_used": int(len(keep)),
                "classes": classes,
                "n_barred_with_length": int(has_len.sum()),
                "split": {"train": int(len(tr)), "validation": int(len(va)), "test": int(len(te))},
            },
            "epochs": int(epochs),
            "length_epochs": int(length_epochs or 2 * epochs),
            "batch_size": int(batch_size),
            "learning_rate": float(lr),
            "bar_loss_weight": float(bar_weight),
            "bar_mask_loss_weight": float(mask_weight),
            "bar_mask": "ellipse of the labelled length and PA, axis ratio 0.35, on the evidence grid",
            **({"bar_evidence_loss_weight": EVIDENCE_LOSS_WEIGHT,
                "bar_evidence_loss": "the bar labels' BCE on the evidence logit alone (without the context term)"}
               if context else {}),
            "augmentation": "8 rotations/flips",
            "threads": int(threads),
            "wall_time_s": None,
            "morphology_train_s": round(t_morph, 1),
            "length_train_s": round(t_length, 1),
            "torch": str(torch.__version__),
            "calibration": "temperature scaling on the validation split, folded into the forward graph",
            "metrics_on": "test split (held out from training and calibration)",
        },
        "forward": {"flip_average": bool(flips)},
        "metrics": metrics,
    }
    return card_extra


def configure_parser(parser):
    """Add the ``survey-bars train`` arguments to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR",
                        help="directories from `survey-bars simulate`, or of FITS, JPEG or PNG files named in --labels")
    parser.add_argument("--labels", metavar="TABLE",
                        help="CSV/Parquet label table for your own FITS, JPEG or PNG files: a 'file' column and labels "
                             "(class, has_bar, has_spiral, bar_length_arcsec, bar_pa_deg, pixel_scale_arcsec or "
                             "pixel_scale)")
    parser.add_argument("--out", required=True, metavar="BUNDLE_DIR", help="bundle directory to write")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the morphology CNN (default 12)")
    parser.add_argument("--length-epochs", type=int, help="epochs of the length CNN (default 2 x --epochs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, initialisation and augmentation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--workers", type=int, help="preprocessing processes (default --threads)")
    parser.add_argument("--val-frac", type=float, default=0.15, help="validation (calibration) fraction")
    parser.add_argument("--test-frac", type=float, default=0.15, help="held-out test fraction for the card's metrics")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--size", type=int, default=NormaliseConfig.size,
                        help="side of the model frame in pixels (default %(default)s); the pipeline reads it from "
                             "the bundle's card")
    parser.add_argument("--arch", help="morphology trunk architecture as JSON (default: nets.DEFAULT_ARCH)")
    parser.add_argument("--length-arch", help="length trunk architecture as JSON (default: nets.LENGTH_ARCH)")
    parser.add_argument("--bar-weight", type=float, default=2.0, help="weight of the bar loss (default 2)")
    parser.add_argument("--bar-mask-weight", type=float, default=1.0,
                        help="weight of the bar-evidence segmentation loss from bar_length_arcsec + bar_pa_deg "
                             "labels (default 1; 0 = morphology labels only)")
    parser.add_argument("--checkpoint", help="also save a torch checkpoint here (for `survey-bars export`)")
    parser.add_argument("--name", default="survey-bars-model", help="bundle name for the card")
    parser.add_argument("--version", dest="bundle_version", default="0", help="bundle version for the card")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the preprocessing cache")
    parser.add_argument("--finetune-sources", nargs="+", metavar="SOURCE",
                        help="after the training, fine-tune the morphology network with the rows of these values of the "
                             "label table's 'source' column weighted up (e.g. your real galaxies beside simulations)")
    parser.add_argument("--finetune-epochs", type=int, default=FINETUNE_DEFAULTS["epochs"],
                        help="fine-tuning epochs (default %(default)s)")
    parser.add_argument("--finetune-repeat", type=int, default=FINETUNE_DEFAULTS["repeat"],
                        help="times each focus row is seen per fine-tuning epoch (default %(default)s)")
    parser.add_argument("--finetune-others", type=int, default=FINETUNE_DEFAULTS["others"],
                        help="other rows drawn per fine-tuning epoch (default %(default)s)")
    parser.add_argument("--finetune-lr", type=float, default=FINETUNE_DEFAULTS["lr"],
                        help="fine-tuning peak learning rate (default %(default)s)")
    parser.add_argument("--finetune-part", choices=sorted(FINETUNE_PARTS), default=FINETUNE_DEFAULTS["part"],
                        help="what the fine-tuning trains: all the weights, or only the tail, the morphology heads "
                             "and the bar's context term, so that the saliency stays as it was (default %(default)s)")
    parser.add_argument("--finetune-linear-copies", type=int, default=FINETUNE_DEFAULTS["linear_copies"], metavar="N",
                        help="also learn each colour JPEG/PNG among the fine-tuning's training rows as N linear "
                             "single-band copies, its asinh display stretch undone (Q 4-14, band g, r, i or their mean "
                             "at random), so that FITS images of such galaxies are read as well (bundle 5.5: 2) "
                             "(default %(default)s)")
    parser.add_argument("--no-flip-average", action="store_true",
                        help="one forward pass per galaxy instead of the average over four flips (faster, "
                             "slightly less accurate)")


def _command_from_args(args):
    """The canonical ``survey-bars train`` command line of parsed arguments."""
    parts = ["survey-bars", "train", "--data", *args.data]
    if args.labels:
        parts += ["--labels", args.labels]
    parts += ["--out", args.out, "--epochs", str(args.epochs)]
    if args.length_epochs:
        parts += ["--length-epochs", str(args.length_epochs)]
    parts += ["--seed", str(args.seed), "--threads", str(args.threads)]
    if args.workers:
        parts += ["--workers", str(args.workers)]
    parts += ["--val-frac", str(args.val_frac), "--test-frac", str(args.test_frac),
              "--batch-size", str(args.batch_size), "--lr", str(args.lr)]
    if args.size != NormaliseConfig.size:
        parts += ["--size", str(args.size)]
    if args.arch:
        parts += ["--arch", args.arch]
    if args.length_arch:
        parts += ["--length-arch", args.length_arch]
    parts += ["--bar-weight", str(args.bar_weight), "--bar-mask-weight", str(args.bar_mask_weight)]
    if args.checkpoint:
        parts += ["--checkpoint", args.checkpoint]
    parts += ["--name", args.name, "--version", args.bundle_version]
    if args.finetune_sources:
        parts += ["--finetune-sources", *args.finetune_sources, "--finetune-epochs", str(args.finetune_epochs),
                  "--finetune-repeat", str(args.finetune_repeat), "--finetune-others", str(args.finetune_others),
                  "--finetune-lr", str(args.finetune_lr), "--finetune-part", args.finetune_part]
        if args.finetune_linear_copies:
            parts += ["--finetune-linear-copies", str(args.finetune_linear_copies)]
    if args.no_flip_average:
        parts += ["--no-flip-average"]
    return " ".join(shlex.quote(str(p)) for p in parts)


def run_cli(args):
    """Run ``survey-bars train``.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    int
        Exit code.
    """
    arch = json.loads(args.arch) if args.arch else None
    length_arch = json.loads(args.length_arch) if args.length_arch else None
    bad = None  # refused before the training, not after it
    if args.finetune_linear_copies < 0:
        bad = f"--finetune-linear-copies takes 0 or more copies per colour image; got {args.finetune_linear_copies}."
    elif args.finetune_linear_copies and not args.finetune_sources:
        bad = ("--finetune-linear-copies goes with --finetune-sources: the copies are of the fine-tuning's colour "
               "images. Name the sources to fine-tune on.")
    if bad:
        print(f"survey-bars train: {bad}", file=sys.stderr)
        return 2
    finetune = None
    if args.finetune_sources:
        finetune = {"sources": args.finetune_sources, "epochs": args.finetune_epochs, "repeat": args.finetune_repeat,
                    "others": args.finetune_others, "lr": args.finetune_lr, "part": args.finetune_part,
                    "linear_copies": args.finetune_linear_copies}
    try:
        preprocessing = NormaliseConfig(size=args.size)
        b = train(args.data, args.out, labels=args.labels, epochs=args.epochs, length_epochs=args.length_epochs,
                  seed=args.seed, threads=args.threads, workers=args.workers, val_frac=args.val_frac,
                  test_frac=args.test_frac, batch_size=args.batch_size, lr=args.lr, arch=arch,
                  length_arch=length_arch, bar_weight=args.bar_weight, mask_weight=args.bar_mask_weight,
                  checkpoint=args.checkpoint, name=args.name, version=args.bundle_version, cache=not args.no_cache,
                  flips=not args.no_flip_average, preprocessing=preprocessing, command=_command_from_args(args),
                  finetune=finetune)
    except ValueError as exc:
        print(f"survey-bars train: {exc}", file=sys.stderr)
        return 2
    m = b.card["metrics"]
    print(json.dumps({"bundle": str(b.path), "metrics": m}, indent=2))
    return 0
