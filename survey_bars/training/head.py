"""The learned length head: a small CNN that reads a bar length off a SmoothGrad map (torch).

The ``moments`` measurement of :mod:`survey_bars.measure.moments` turns a saliency map into a length with
second moments and a linear calibration. Both lose what the map holds about short bars, whose
maps are footprint-sized blobs. The head instead learns the mapping from the whole map to the
true length, on the maps of simulated barred galaxies the morphology network never saw (like
the calibration), and is exported as a third ONNX graph of the bundle (``length_head.onnx``)
that the workers run with onnxruntime (:meth:`survey_bars.inference.runtime.ModelRuntime.length_head`).

The exported graph takes raw SmoothGrad maps ``saliency`` ``[B, 1, S, S]`` (any positive
scale; it divides each map by its peak) and returns ``length`` ``[B]``, the full bar length in
model-frame pixels. :func:`survey_bars.training.calibrate.calibrate_head` trains, exports and records it.

Only training and export import torch; the worker path does not import this module.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

__all__ = ["HEAD_ARCH", "HeadGraph", "LengthHead", "export_head", "fine_tune_head", "fine_tune_out_of_fold", "head_lengths",
           "length_scores", "peak_normalise", "train_head"]

#: Channels of the four convolution stages and the width of the dense layer.
HEAD_ARCH = {"channels": [16, 32, 64, 64], "hidden": 64}


def _block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


class LengthHead(nn.Module):
    """Log bar length from a peak-normalised saliency map.

    Four stages of two 3 x 3 convolutions with batch norm (max pooling between them), global
    average pooling and two dense layers; the output is added to ``offset`` (the mean log
    length of the training set).

    Parameters
    ----------
    arch : dict, optional
        ``{"channels": [c1, c2, c3, c4], "hidden": h}`` (default :data:`HEAD_ARCH`).
    """

    def __init__(self, arch=None):
        super().__init__()
        arch = dict(arch or HEAD_ARCH)
        ch = [int(c) for c in arch["channels"]]
        layers, cin = [], 1
        for i, c in enumerate(ch):
            layers += _block(cin, c)
            if i < len(ch) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = c
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(cin, int(arch["hidden"])), nn.ReLU(), nn.Linear(int(arch["hidden"]), 1))
        self.register_buffer("offset", torch.zeros(()))
        self.arch = {"channels": ch, "hidden": int(arch["hidden"])}

    def forward(self, x):
        """Log length (model pixels) of each peak-normalised map ``x`` ``[B, 1, S, S]``."""
        return self.body(x)[:, 0] + self.offset


def peak_normalise(saliency):
    """Divide each map ``[B, 1, S, S]`` by its peak (maps of zeros stay zero)."""
    peak = torch.amax(saliency, dim=(2, 3), keepdim=True)
    return saliency / torch.clamp(peak, min=1e-12)


class HeadGraph(nn.Module):
    """The exported head: raw SmoothGrad maps in, bar lengths in model pixels out.

    Parameters
    ----------
    head : LengthHead
        A trained head (put in eval mode).
    """

    def __init__(self, head):
        super().__init__()
        self.head = head.eval()

    def forward(self, saliency):
        """``saliency`` ``[B, 1, S, S]`` -> ``length`` ``[B]`` (model-frame pixels)."""
        return torch.exp(self.head(peak_normalise(saliency)))


def _dihedral(t, k, flip):
    t = torch.rot90(t, k, (2, 3))
    return torch.flip(t, (3,)) if flip else t


def train_head(maps, lengths, *, epochs=30, seed=0, threads=1, batch_size=64, lr=3e-3, arch=None, init=None, log=None):
    """Train a :class:`LengthHead` on saliency maps with known bar lengths.

    AdamW with a one-cycle schedule, smooth-L1 loss on the log length, and a random rotation
    by a multiple of 90 degrees and flip of every batch (a bar's length does not depend on its
    orientation). With ``init``, a copy of a trained head is fine-tuned instead (the real
    volunteer lengths after the simulations: :func:`survey_bars.training.calibrate.calibrate_head`).

    Parameters
    ----------
    maps : ndarray
        SmoothGrad maps, shape ``(N, S, S)`` (any positive scale; each is peak-normalised).
    lengths : ndarray
        True full bar lengths in model-frame pixels, shape ``(N,)``, all positive.
    epochs, seed, threads, batch_size : int, optional
        Training epochs, random seed, torch threads and batch size.
    lr : float, optional
        Peak learning rate.
    arch : dict, optional
        Architecture (default :data:`HEAD_ARCH`); ignored with ``init``.
    init : LengthHead, optional
        Start from a copy of this head (its weights and ``offset``; ``init`` itself is left
        as it is) rather than from random weights.
    log : callable, optional
        Called with a progress line after each epoch.

    Returns
    -------
    LengthHead
        The trained head, in eval mode.

    Raises
    ------
    ValueError
        When the maps and lengths disagree in number, a length is not positive and finite, or
        fewer than 10 maps are given.
    """
    maps = np.asarray(maps, dtype=np.float32)
    lengths = np.asarray(lengths, dtype=np.float64)
    if maps.ndim != 3 or len(maps) != len(lengths):
        msg = f"maps must have shape (N, S, S) with one length each; got {maps.shape} and {lengths.shape}."
        raise ValueError(msg)
    if not np.all(np.isfinite(lengths) & (lengths > 0)):
        msg = "Every training length must be positive and finite; drop the galaxies without a bar length."
        raise ValueError(msg)
    if len(maps) < 10:
        msg = f"Only {len(maps)} maps: too few to train a length head. Simulate more barred galaxies (-n)."
        raise ValueError(msg)
    torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    x = peak_normalise(torch.as_tensor(maps[:, None]))
    y = torch.as_tensor(np.log(lengths), dtype=torch.float32)
    if init is None:
        net = LengthHead(arch)
        with torch.no_grad():
            net.offset.fill_(float(y.mean()))
    else:
        net = copy.deepcopy(init)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)  # OneCycleLR sets the rate
    steps = epochs * int(np.ceil(len(y) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    for ep in range(epochs):
        net.train()
        order = rng.permutation(len(y))
        total, n = 0.0, 0
        for i in range(0, len(order), batch_size):
            b = order[i : i + batch_size]
            if len(b) < 2:  # batch norm needs two
                continue
            xb = _dihedral(x[b], int(rng.integers(4)), bool(rng.random() < 0.5))
            loss = nn.functional.smooth_l1_loss(net(xb), y[b], beta=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            n += len(b)
        if log is not None:
            log(f"length head epoch {ep + 1}/{epochs}: train loss {total / max(n, 1):.4f}")
    return net.eval()


def head_lengths(head, maps):
    """A torch length head's lengths for maps.

    Parameters
    ----------
    head : LengthHead
        The head (left as it is).
    maps : ndarray
        Maps ``(N, S, S)``, any positive scale.

    Returns
    -------
    ndarray
        ``(N,)`` float64 lengths in the head's units.
    """
    with torch.no_grad():
        return HeadGraph(copy.deepcopy(head).eval())(torch.as_tensor(np.asarray(maps, np.float32)[:, None])).numpy().astype(float)


def length_scores(pred_px, true_px, true_arcsec):
    """How predicted lengths agree with reference lengths, in arcseconds.

    Parameters
    ----------
    pred_px, true_px : array_like
        Predicted and reference lengths in each bar's model-frame pixels.
    true_arcsec : array_like
        The reference lengths in arcseconds (which give each bar's arcseconds per pixel).

    Returns
    -------
    dict
        ``n``, ``pearson_r`` (arcsec), ``median_rel_err`` and ``median_ratio`` (predicted /
        reference).
    """
    true_px, true_arcsec = np.asarray(true_px, float), np.asarray(true_arcsec, float)
    pred = np.asarray(pred_px, float) * (true_arcsec / true_px)
    return {"n": len(pred), "pearson_r": float(np.corrcoef(pred, true_arcsec)[0, 1]),
            "median_rel_err": float(np.median(np.abs(pred - true_arcsec) / true_arcsec)),
            "median_ratio": float(np.median(pred / true_arcsec))}


def fine_tune_head(head, maps, lengths, sim_maps, sim_lengths, *, epochs, lr, n_sims, batch_size=32, seed=0, threads=1,
                   scale_mask=None, log=None):
    """Fine-tune a head trained on simulations on real bar lengths, with simulated maps mixed in.

    The simulated lengths are first put in the real lengths' units: multiplied by the median of
    real / predicted over the real maps (the head's own predictions, before the fine-tuning), or
    over those of ``scale_mask`` only.
    Then ``n_sims`` simulated maps, drawn with ``seed``, join the real ones, and
    :func:`train_head` continues from a copy of ``head``.

    Parameters
    ----------
    head : LengthHead
        A head trained on simulated maps (left as it is).
    maps, lengths : ndarray
        Real maps ``(N, S, S)`` and their lengths in model-frame pixels.
    sim_maps, sim_lengths : ndarray
        Simulated maps and their true lengths (model-frame pixels) to draw from.
    epochs, lr, n_sims, batch_size, seed, threads : optional
        Fine-tuning epochs, peak learning rate, simulated maps mixed in (at most all of them),
        batch size, random seed and torch threads.
    scale_mask : array_like of bool, optional
        The real maps whose ratios set the simulated lengths' scale (default: all of them). Give
        the maps of the images the simulations resemble, so that other real maps learned beside them
        (linear FITS copies of display JPEGs, say, which the head reads much shorter before the
        fine-tuning) do not set the simulations' units: the head would be taught two scales at once.
    log : callable, optional
        Progress lines, as for :func:`train_head`.

    Returns
    -------
    tuned : LengthHead
        The fine-tuned head, in eval mode.
    info : dict
        ``simulated_length_scale`` (the factor applied to the simulated lengths),
        ``n_simulated_maps`` (mixed in) and ``pearson_r_before`` (the head's predictions on the
        real maps against their lengths, before the fine-tuning), as the card records them.
    """
    maps = np.asarray(maps, dtype=np.float32)
    lengths = np.asarray(lengths, dtype=np.float64)
    before = head_lengths(head, maps)
    ratio = lengths / before
    if scale_mask is not None:
        scale_mask = np.asarray(scale_mask, dtype=bool)
        if scale_mask.shape != lengths.shape or not scale_mask.any():
            msg = (f"scale_mask must hold one boolean per real map ({len(lengths)}) and select at least one; got shape "
                   f"{scale_mask.shape} with {int(scale_mask.sum())} selected.")
            raise ValueError(msg)
        ratio = ratio[scale_mask]
    scale = float(np.median(ratio))
    pick = np.random.default_rng(seed).permutation(len(sim_maps))[: int(n_sims)]
    x = np.concatenate([maps, np.asarray(sim_maps, np.float32)[pick]])
    y = np.concatenate([lengths, scale * np.asarray(sim_lengths, float)[pick]])
    tuned = train_head(x, y, epochs=epochs, seed=seed, threads=threads, batch_size=batch_size, lr=lr, init=head, log=log)
    return tuned, {"simulated_length_scale": scale, "n_simulated_maps": len(pick), "n_scale_maps": int(len(ratio)),
                   "pearson_r_before": float(np.corrcoef(before, lengths)[0, 1])}


def fine_tune_out_of_fold(head, maps, lengths, fold, folds, sim_maps, sim_lengths, *, scale_mask=None, **kw):
    """One fine-tuned head per fold, each without that fold's real bars (cross-fitting).

    Parameters
    ----------
    head, maps, lengths : LengthHead, ndarray, ndarray
        The head trained on simulations and the real maps and lengths, as for :func:`fine_tune_head`.
    fold : array_like of int
        The fold of each real map.
    folds : sequence of int
        The folds to leave out, one head each.
    sim_maps, sim_lengths : ndarray
        Simulated maps and their true lengths, as for :func:`fine_tune_head`.
    scale_mask : array_like of bool, optional
        One per real map, as for :func:`fine_tune_head`; each head uses the part outside its fold.
    **kw
        :func:`fine_tune_head`'s settings (``epochs``, ``lr``, ``n_sims``, ...).

    Returns
    -------
    dict
        ``{k: (tuned, info)}``: :func:`fine_tune_head`'s result without fold ``k``.

    Raises
    ------
    ValueError
        When a fold has no bars, or fewer than 20 lie outside it.
    """
    fold = np.asarray(fold)
    out = {}
    for k in folds:
        train = fold != k
        if train.sum() < 20 or train.all():
            msg = (f"Out-of-fold fine-tuning needs at least 20 real bars outside fold {k} and some inside it; got "
                   f"{int(train.sum())} and {int((~train).sum())}. Give more folds.")
            raise ValueError(msg)
        mask = None if scale_mask is None else np.asarray(scale_mask, dtype=bool)[train]
        out[int(k)] = fine_tune_head(head, maps[train], lengths[train], sim_maps, sim_lengths, scale_mask=mask, **kw)
    return out


def export_head(head, path, *, size, check_maps=None, atol=1e-4):
    """Export a trained head as ``length_head.onnx`` and check onnxruntime against torch.

    Parameters
    ----------
    head : LengthHead
        The trained head.
    path : str or os.PathLike
        Output file.
    size : int
        Side of the model frame (the maps are ``size x size``).
    check_maps : ndarray, optional
        Maps ``(N, S, S)`` to compare onnxruntime with torch on (default: random maps).
    atol : float, optional
        Largest allowed relative difference of the lengths.

    Returns
    -------
    float
        The largest relative difference between onnxruntime and torch.

    Raises
    ------
    RuntimeError
        When onnxruntime and torch disagree by more than ``atol``.
    """
    import onnxruntime as ort

    from .export import _export

    graph = HeadGraph(head).eval()
    _export(graph, path, int(size), ["length"], input_name="saliency")
    if check_maps is None:
        check_maps = np.random.default_rng(0).random((8, size, size)).astype(np.float32)
    xs = np.asarray(check_maps, dtype=np.float32)[:, None]
    with torch.no_grad():
        want = graph(torch.as_tensor(xs)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["length"], {"saliency": xs})
    err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)))
    if err > atol:
        msg = f"The exported length head differs from torch by {err:.2e} (relative; allowed {atol:.0e})."
        raise RuntimeError(msg)
    return err
