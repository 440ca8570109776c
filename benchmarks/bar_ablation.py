"""Where is real bar detection lost? A small ablation on the real GZ2 bars.

Each run trains one network from scratch on the ``sdss-gz2-bars`` galaxies of the real-dev training
folds 0-3 (3383 images, bar / no bar from the Galaxy Zoo 2 votes; nothing else) and scores the bar
ROC AUC on the held-out fold 4 (855 images), so that one choice of the product can be changed at
a time:

* ``--input raw``: the 64 x 64 JPEG itself (values / 255); ``frame``: the product's model frame,
  :func:`survey_bars.normalise.normalise` through :func:`survey_bars.training.data.preprocess`
  (what the shipped networks see);
* ``--colour``: the three colour channels of the JPEG (raw input only); otherwise their mean, the
  product's colour rule (``rgb-mean``);
* ``--net plain``: an 8-layer CNN (32-128 channels, global pooling), like the baseline in the
  real-dev README; ``skip``: the product's morphology network of bundles 3.0 and 4.0
  (:data:`survey_bars.training.nets.SKIP_ARCH`), its bar logit the pooled bar evidence; ``context``:
  the same with the bar logit's context term (:data:`~survey_bars.training.nets.DEFAULT_ARCH`,
  bundle 5.0).

Every run: batch 64, AdamW (lr 2e-3, weight decay 1e-4) with a one-cycle schedule, right-angle
rotations and flips, the test images scored as the mean probability over four rotations, 2 torch
threads. It is an experiment, not a product path: the networks are not exported.

Run::

    python -m benchmarks.bar_ablation --input frame --net context [--epochs 14 --seed 0]

It prints one JSON line (and writes it to ``--out-json`` when given), with the network's forward
cost for one frame (``forward_mflop``). The real-dev data are read
from ``$SURVEY_BARS_REAL_DEV`` or ``../shared/data/real-dev``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .common import has_torch, print_json_line, real_dev_root


def _images(df, inp, colour):
    if inp == "raw":
        from PIL import Image

        x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in df["file"]])
        x = x.transpose(0, 3, 1, 2)
        return x if colour else x.mean(1, keepdims=True)
    from survey_bars.normalise import NormaliseConfig
    from survey_bars.training.data import preprocess

    d = preprocess(list(df["file"]), df["pixel_scale"].to_numpy(), NormaliseConfig(), workers=1)
    return d["images"][:, None].astype(np.float32)


def _network(kind, channels):
    from torch import nn

    def block(i, o, s):
        return [nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.ReLU()]

    if kind == "plain":
        net = nn.Sequential(*block(channels, 32, 1), *block(32, 32, 2), *block(32, 64, 1), *block(64, 64, 2),
                            *block(64, 96, 1), *block(96, 96, 2), *block(96, 128, 1), *block(128, 128, 2),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, 1))
        return net, lambda x: net(x).squeeze(1)
    from survey_bars.training.nets import DEFAULT_ARCH, SKIP_ARCH, MorphologyNet

    net = MorphologyNet(DEFAULT_ARCH if kind == "context" else SKIP_ARCH)
    return net, lambda x: net(x)[:, 3]


def run(inp="frame", net_kind="context", colour=False, epochs=14, seed=0, root=None):
    """Train one network on the GZ2 bars of folds 0-3 and score it on fold 4.

    Parameters
    ----------
    inp : {"raw", "frame"}
        The JPEG itself or the product's model frame.
    net_kind : {"plain", "skip", "context"}
        The network (see the module's description).
    colour : bool
        Three colour channels (raw input with the plain network only).
    epochs, seed : int
        Training length and seed.
    root : str, optional
        The real-dev directory.

    Returns
    -------
    dict
        The settings, ``auc`` on the test fold and the training wall time ``s``.
    """
    import torch
    from torch import nn

    from survey_bars.training import realdata
    from survey_bars.training.metrics import roc_auc

    if colour and (inp != "raw" or net_kind != "plain"):
        msg = "--colour needs --input raw and --net plain (the product's networks take one band)"
        raise ValueError(msg)
    torch.set_num_threads(2)
    df = realdata.load_gz2_bars(root)
    df = df[df["has_bar"].notna()].reset_index(drop=True)
    x = _images(df, inp, colour)
    y = df["has_bar"].astype(float).to_numpy().astype(np.float32)
    fold = df["fold"].to_numpy()
    train_idx = np.where(np.isin(fold, realdata.TRAIN_FOLDS))[0]
    test = fold == realdata.TEST_FOLD
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net, fwd = _network(net_kind, x.shape[1])
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * (len(train_idx) // 64 + 1))
    t0 = time.time()
    for _ in range(epochs):
        net.train()
        rng.shuffle(train_idx)
        for b in range(0, len(train_idx), 64):
            j = train_idx[b : b + 64]
            if len(j) < 2:  # batch norm needs two
                continue
            xb = np.rot90(x[j], rng.integers(4), (2, 3))
            if rng.random() < 0.5:
                xb = xb[:, :, :, ::-1]
            out = fwd(torch.from_numpy(np.ascontiguousarray(xb)))
            loss = nn.functional.binary_cross_entropy_with_logits(out, torch.from_numpy(y[j]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        p = sum(torch.sigmoid(fwd(torch.from_numpy(np.ascontiguousarray(np.rot90(x[test], k, (2, 3)))))).numpy()
                for k in range(4))
    return {"input": inp, "net": net_kind, "colour": bool(colour), "epochs": epochs, "seed": seed,
            "n_train": int(len(train_idx)), "n_test": int(test.sum()), "auc": float(roc_auc(p, y[test])),
            "s": round(time.time() - t0, 1), "forward_mflop": forward_mflop(net, x.shape[1], x.shape[-1])}


def forward_mflop(net, channels=1, size=64):
    """A network's forward cost for one frame, in MFLOP, as torch's FLOP counter gives it.

    Parameters
    ----------
    net : torch.nn.Module
    channels, size : int
        The input frame's channels and side.

    Returns
    -------
    float
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was = net.training
    net.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, channels, size, size))
    net.train(was)
    return round(fc.get_total_flops() / 1e6, 1)


def main(argv=None):
    """Command-line entry point.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
    """
    p = argparse.ArgumentParser(prog="python -m benchmarks.bar_ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", choices=("raw", "frame"), default="frame")
    p.add_argument("--net", choices=("plain", "skip", "context"), default="context")
    p.add_argument("--colour", action="store_true", help="three colour channels (raw input, plain network)")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-json", help="also write the result here")
    a = p.parse_args(argv)
    root = real_dev_root("benchmarks.bar_ablation")
    if root is None or not has_torch("benchmarks.bar_ablation"):
        return 2
    print_json_line(run(a.input, a.net, a.colour, a.epochs, a.seed, root), a.out_json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
