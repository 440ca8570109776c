"""The torch networks: the morphology CNN and the direct bar-length regressor.

Both are small plain CNNs for a single-band ``S x S`` frame (``S = 64`` by default), chosen so
that the *input gradient* of the bar logit is cheap in onnxruntime, because SmoothGrad runs it
tens of times per galaxy:

* a **patchify stem**: an ``8 x 8`` convolution with stride 4 (overlapping patches), so the
  only backward step at full resolution is one transposed convolution with a single output
  channel;
* a body of ``3 x 3`` convolutions, mostly stride 1, whose input gradient is again a plain
  convolution (flipped, transposed kernel) that onnxruntime runs in its blocked NCHWc layout;
* ReLU activations (their derivative is a 0/1 mask) and no max-pool (whose backward is a
  scatter);
* global average pooling and linear heads.

Batch normalisation is used while training and folded into the convolutions before export
(:func:`fold_batchnorm`), so the exported graphs hold only Conv, ReLU, mean and Gemm.

Torch is imported here; the inference path (:mod:`survey_bars.models.bundle`,
:mod:`survey_bars.runtime`) never imports this module.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = [
    "DEFAULT_ARCH",
    "LENGTH_ARCH",
    "MORPH_CLASSES",
    "CLASS_NAMES",
    "ConvTrunk",
    "MorphologyNet",
    "LengthNet",
    "fold_batchnorm",
    "forward_flops",
]

#: The 3-way morphology softmax: smooth, edge-on disc, face-on (or inclined) disc.
MORPH_CLASSES = ("smooth", "edge_on", "disc")
#: Output columns of the ``probs`` tensor of the exported forward graph.
CLASS_NAMES = ("p_smooth", "p_disc", "p_edge_on", "p_bar", "p_spiral")

#: Default morphology architecture: the stem ``[channels, kernel, stride]`` and the body
#: layers, each ``[channels, kernel, stride]`` (25.8 MFLOP per 64 x 64 frame).
DEFAULT_ARCH = {
    "stem": [32, 8, 4],
    "layers": [[32, 3, 1], [48, 3, 1], [64, 3, 2], [64, 3, 1], [64, 3, 1]],
}
#: Default architecture of the direct length regressor (19.1 MFLOP; it runs once per galaxy).
LENGTH_ARCH = {
    "stem": [24, 8, 4],
    "layers": [[32, 3, 1], [32, 3, 1], [48, 3, 2], [64, 3, 1], [64, 3, 1]],
}


def _padding(kernel, stride):
    """Padding that maps ``n`` pixels to ``n / stride`` (for even ``n``)."""
    if stride == 1:
        return kernel // 2
    return (kernel - stride + 1) // 2


class ConvTrunk(nn.Module):
    """Stem and body of convolutions with batch norm and ReLU, then global average pooling.

    Parameters
    ----------
    arch : dict, optional
        ``{"stem": [c, k, s], "layers": [[c, k, s], ...]}`` (default :data:`DEFAULT_ARCH`).
    in_channels : int, optional
        Input bands.
    batchnorm : bool, optional
        Insert ``BatchNorm2d`` after each convolution (folded away for export).
    """

    def __init__(self, arch=None, in_channels=1, batchnorm=True):
        super().__init__()
        arch = copy.deepcopy(arch or DEFAULT_ARCH)
        self.arch = arch
        specs = [arch["stem"], *arch["layers"]]
        layers = []
        cin = in_channels
        for c, k, s in specs:
            layers.append(nn.Conv2d(cin, c, k, s, _padding(k, s), bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU())
            cin = c
        self.features = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x):
        """Return pooled features of shape ``(B, out_channels)``."""
        return self.features(x).mean(dim=(2, 3))


class MorphologyNet(nn.Module):
    """Morphology CNN: a 3-way morphology softmax and bar and spiral sigmoids.

    The head returns five logits: three for :data:`MORPH_CLASSES`, then bar and spiral.
    Temperatures (``t_morph``, ``t_bar``, ``t_spiral``, buffers fitted on a validation split)
    divide the logits in :meth:`probs`; they are folded into the exported forward graph.

    Parameters
    ----------
    arch : dict, optional
        Trunk architecture (see :class:`ConvTrunk`).
    batchnorm : bool, optional
        Use batch norm in the trunk.
    """

    def __init__(self, arch=None, batchnorm=True):
        super().__init__()
        self.trunk = ConvTrunk(arch, batchnorm=batchnorm)
        self.head = nn.Linear(self.trunk.out_channels, 5)
        self.register_buffer("t_morph", torch.tensor(1.0))
        self.register_buffer("t_bar", torch.tensor(1.0))
        self.register_buffer("t_spiral", torch.tensor(1.0))

    @property
    def arch(self):
        """The trunk architecture dict."""
        return self.trunk.arch

    def forward(self, x):
        """Return the raw logits, shape ``(B, 5)``."""
        return self.head(self.trunk(x))

    def bar_logit(self, x):
        """Return the raw bar logit, shape ``(B,)``: the quantity whose gradient is the saliency."""
        return self.forward(x)[:, 3]

    def probs(self, x):
        """Return calibrated probabilities ``(B, 5)`` in the order of :data:`CLASS_NAMES`.

        Parameters
        ----------
        x : torch.Tensor
            Images of shape ``(B, 1, S, S)``.

        Returns
        -------
        torch.Tensor
            Columns ``p_smooth, p_disc, p_edge_on, p_bar, p_spiral``; ``p_disc = 1 - p_smooth``.
        """
        z = self.forward(x)
        pm = torch.softmax(z[:, :3] / self.t_morph, dim=1)
        p_smooth = pm[:, 0]
        p_edge = pm[:, 1]
        p_disc = pm[:, 1] + pm[:, 2]
        p_bar = torch.sigmoid(z[:, 3] / self.t_bar)
        p_spiral = torch.sigmoid(z[:, 4] / self.t_spiral)
        return torch.stack([p_smooth, p_disc, p_edge, p_bar, p_spiral], dim=1)


class LengthNet(nn.Module):
    """The paper's baseline: a CNN that regresses the full bar length directly.

    It predicts ``log`` of the length in model-frame pixels; :meth:`forward` returns the length.

    Parameters
    ----------
    arch : dict, optional
        Trunk architecture (default :data:`LENGTH_ARCH`; see :class:`ConvTrunk`).
    batchnorm : bool, optional
        Use batch norm in the trunk.
    """

    def __init__(self, arch=None, batchnorm=True):
        super().__init__()
        self.trunk = ConvTrunk(arch or LENGTH_ARCH, batchnorm=batchnorm)
        self.head = nn.Linear(self.trunk.out_channels, 1)

    @property
    def arch(self):
        """The trunk architecture dict."""
        return self.trunk.arch

    def log_length(self, x):
        """Return the predicted natural log of the length in model pixels, shape ``(B,)``."""
        return self.head(self.trunk(x))[:, 0]

    def forward(self, x):
        """Return the predicted full bar length in model-frame pixels, shape ``(B,)``."""
        return torch.exp(self.log_length(x))


def _fold_sequential(seq):
    layers = list(seq)
    out = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            bn = nxt
            w = layer.weight.detach()
            b = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0])
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            conv = nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                layer.padding, bias=True,
            )
            with torch.no_grad():
                conv.weight.copy_(w * scale[:, None, None, None])
                conv.bias.copy_((b - bn.running_mean) * scale + bn.bias.detach())
            out.append(conv)
            i += 2
        else:
            out.append(copy.deepcopy(layer))
            i += 1
    return nn.Sequential(*out)


def fold_batchnorm(model):
    """Return an eval-mode copy of ``model`` with every batch norm folded into its convolution.

    Parameters
    ----------
    model : MorphologyNet or LengthNet
        A trained model (train or eval mode; running statistics are used).

    Returns
    -------
    torch.nn.Module
        An equivalent model without ``BatchNorm2d`` layers, in eval mode, with
        ``requires_grad`` switched off on every parameter.
    """
    m = copy.deepcopy(model).eval()
    m.trunk.features = _fold_sequential(m.trunk.features)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def forward_flops(arch=None, size=64):
    """Floating-point operations (2 x multiply-adds) of one trunk forward pass.

    Parameters
    ----------
    arch : dict, optional
        Trunk architecture (default :data:`DEFAULT_ARCH`).
    size : int, optional
        Input frame side.

    Returns
    -------
    int
        FLOPs of the convolutions for one image (heads and pooling are negligible).
    """
    arch = arch or DEFAULT_ARCH
    h = size
    cin = 1
    macs = 0
    for c, k, s in [arch["stem"], *arch["layers"]]:
        p = _padding(k, s)
        h = (h + 2 * p - k) // s + 1
        macs += h * h * c * cin * k * k
        cin = c
    return 2 * macs
