"""The torch networks: the morphology CNN and the direct bar-length regressor.

Both are small plain CNNs for a single-band ``S x S`` frame (``S = 64`` by default), chosen so
that the *input gradient* of the bar logit is cheap in onnxruntime, because SmoothGrad runs it
several times per galaxy, and so that this gradient shows where the bar is.

The default morphology network is a **bar-evidence network** (arch keys ``body`` / ``tail``):

* a ``body`` of convolutions (a ``4 x 4`` stride-2 stem, then ``3 x 3`` layers, one more
  stride 2) ends in a ``16 x 16`` feature map for a 64-pixel frame;
* a **skip connection** (arch key ``skip``, ``{"after": k, "fuse": [c, kernel]}``) upsamples
  it (nearest, a depthwise transposed convolution with a kernel of ones) to the grid of the
  ``k``-th body layer, concatenates that layer's features and fuses them with a ``c``-channel
  convolution: the default (``{"after": 2, "fuse": [16, 1]}``) works on a ``32 x 32`` grid;
  ``"after": 0`` fuses the input frame itself, on the ``64 x 64`` pixel grid (tried after 3.0:
  its saliency measured worse, ``benchmarks/RESULTS.md``);
* a ``1 x 1`` convolution turns the result into a map of per-cell **bar evidence** ``e`` (a
  logit per cell). Where bar-geometry labels exist, training asks ``sigmoid(e)`` to be the
  bar's projected ellipse (a segmentation loss), so the evidence lives on the bar and nowhere
  else;
* the **bar logit** pools the evidence, ``a * log(mean(softplus(e)) + eps) + b``: cells
  without evidence (``e << 0``) add nothing, so the input gradient of the bar logit (the
  saliency) is a sum of the gradients of the bar's own cells and traces its extent;
* a ``tail`` (one stride-2 convolution and more ``3 x 3`` layers) on the body output, global
  average pooling and a linear layer give the morphology (smooth / edge-on / disc) and spiral
  logits.

Through the skip connection the bar logit's gradient also flows through the shallow layers,
whose footprint is small, and the evidence map is twice as fine. Without it
(:data:`GRID16_ARCH`, bundles 2.x) the evidence is the ``16 x 16`` body output itself. On
10 000 simulations and 20 epochs the skip raised the bar AUC among discs from 0.933 to 0.950
and the saliency length's r from 0.885 to 0.906, replicated with a second seed
(``benchmarks/RESULTS.md``).

The body avoids dilated convolutions and keeps few layers after the last stride: the spatial
spread of each cell's input gradient grows with the receptive field, and a broad spread blurs
short bars in the saliency map into blobs of the same size.

The earlier **pooled network** (arch keys ``stem`` / ``layers``: a patchify stem, ``3 x 3``
layers, global average pooling and one linear head for all five logits) is still supported
for bundles and checkpoints made with it.

ReLU activations only (their derivative is a 0/1 mask) and no max-pool (whose backward is a
scatter). Batch normalisation is used while training and folded into the convolutions before
export (:func:`fold_batchnorm`), so the exported graphs hold only Conv, ReLU, Softplus-like
elementwise ops, means and Gemm.

Torch is imported here; the inference path (:mod:`survey_bars.inference.bundle`,
:mod:`survey_bars.inference.runtime`) never imports this module.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..inference.bundle import CLASS_NAMES as BUNDLE_CLASS_NAMES

__all__ = [
    "DEFAULT_ARCH",
    "GRID16_ARCH",
    "SKIP_ARCH",
    "POOLED_ARCH",
    "LENGTH_ARCH",
    "is_evidence_arch",
    "MORPH_CLASSES",
    "CLASS_NAMES",
    "ConvTrunk",
    "MorphologyNet",
    "LengthNet",
    "fold_batchnorm",
    "forward_flops",
    "FLIP_AVERAGE",
    "flip_average",
]

#: The 3-way morphology softmax: smooth, edge-on disc, face-on (or inclined) disc.
MORPH_CLASSES = ("smooth", "edge_on", "disc")
#: Output columns of the ``probs`` tensor of the exported forward graph (the bundle format's).
CLASS_NAMES = BUNDLE_CLASS_NAMES

#: The bar-evidence network of bundles 2.x: ``body`` layers down to a 16 x 16 evidence map
#: (for a 64-pixel frame) and ``tail`` layers for the morphology heads, each ``[channels,
#: kernel, stride]`` or ``[channels, kernel, stride, dilation]``.
GRID16_ARCH = {
    "body": [[16, 4, 2], [24, 3, 1], [48, 3, 2], [64, 3, 1], [64, 3, 1]],
    "tail": [[64, 3, 2], [64, 3, 1]],
}
#: The morphology architecture of bundles 3.x and 4.0: :data:`GRID16_ARCH` with its evidence on
#: the 32 x 32 grid of the second body layer, fused by a 1 x 1 convolution of 16 channels.
SKIP_ARCH = {**GRID16_ARCH, "skip": {"after": 2, "fuse": [16, 1]}}
#: Default morphology architecture (bundles 5.x): :data:`SKIP_ARCH` whose bar logit also has a
#: context term, a linear function of the pooled morphology-tail features (``bar_context``).
#: The saliency stays the gradient of the bar evidence alone (:meth:`MorphologyNet.bar_logit`).
DEFAULT_ARCH = {**SKIP_ARCH, "bar_context": True}
#: The pooled architecture of bundles before 2.0 (``stem`` then ``layers``; 25.8 MFLOP).
POOLED_ARCH = {
    "stem": [32, 8, 4],
    "layers": [[32, 3, 1], [48, 3, 1], [64, 3, 2], [64, 3, 1], [64, 3, 1]],
}
#: What :func:`flip_average` does, as recorded in a bundle card.
FLIP_AVERAGE = "outputs averaged over the identity, the x flip, the y flip and the 180-degree rotation of the frame"
#: ``eps`` of the evidence pooling ``log(mean(softplus(e)) + eps)``.
EVIDENCE_EPS = 1e-4
#: Default architecture of the direct length regressor (19.1 MFLOP; it runs once per galaxy).
LENGTH_ARCH = {
    "stem": [24, 8, 4],
    "layers": [[32, 3, 1], [32, 3, 1], [48, 3, 2], [64, 3, 1], [64, 3, 1]],
}


def _padding(kernel, stride, dilation=1):
    """Padding that maps ``n`` pixels to ``n / stride`` (for even ``n``)."""
    if stride == 1:
        return dilation * (kernel - 1) // 2
    return (kernel - stride + 1) // 2


def _spec(layer):
    """``[c, k, s]`` or ``[c, k, s, d]`` -> ``(c, k, s, d)``."""
    c, k, s, *rest = layer
    return int(c), int(k), int(s), int(rest[0]) if rest else 1


def is_evidence_arch(arch):
    """True for a bar-evidence architecture (``body``/``tail``), False for a pooled one.

    Parameters
    ----------
    arch : dict
        An architecture dict.

    Returns
    -------
    bool
    """
    if "body" in arch and "tail" in arch:
        return True
    if "stem" in arch and "layers" in arch:
        return False
    msg = f"Unknown architecture {arch!r}: give 'body' and 'tail' (bar evidence) or 'stem' and 'layers' (pooled)."
    raise ValueError(msg)


def _check_skip(arch):
    """Validate the optional ``skip`` entry of a bar-evidence architecture.

    ``{"after": k, "fuse": [c, kernel]}`` computes the evidence map on the grid of the body's
    ``k``-th layer: the body output is upsampled to it (nearest), concatenated with that
    layer's features and fused by a ``c``-channel convolution before the 1 x 1 evidence
    convolution. The bar logit's gradient then has a path through the shallow layers, whose
    footprint is small. ``k = 0`` fuses the input frame itself: the evidence map is on the
    pixel grid.
    """
    skip = arch.get("skip")
    if skip is None:
        return None
    n = len(arch["body"])
    after = int(skip.get("after", -1))  # no default: 0 is a real choice (the input frame)
    fuse = [int(v) for v in skip.get("fuse", ())]
    if not 0 <= after < n or len(fuse) != 2 or min(fuse) < 1 or fuse[1] % 2 == 0:
        msg = (f"A 'skip' needs 'after' between 0 (the input frame) and {n - 1} (a body layer) and 'fuse': "
               f"[channels, odd kernel]; got {skip!r}.")
        raise ValueError(msg)
    return {"after": after, "fuse": fuse}


def _upsample_nearest(x, k):
    """Nearest upsampling by an integer factor ``k``, as a depthwise transposed convolution
    with a ``k x k`` kernel of ones: its input gradient is the matching depthwise convolution
    (a ``k x k`` sum pool), which onnxruntime runs as a convolution."""
    c = x.shape[1]
    return nn.functional.conv_transpose2d(x, torch.ones(c, 1, k, k, dtype=x.dtype), stride=k, groups=c)


def _conv_stack(specs, cin, batchnorm):
    layers = []
    for spec in specs:
        c, k, s, d = _spec(spec)
        layers.append(nn.Conv2d(cin, c, k, s, _padding(k, s, d), dilation=d, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c))
        layers.append(nn.ReLU())
        cin = c
    return nn.Sequential(*layers), cin


class ConvTrunk(nn.Module):
    """Stem and body of convolutions with batch norm and ReLU, then global average pooling.

    Parameters
    ----------
    arch : dict, optional
        ``{"stem": [c, k, s], "layers": [[c, k, s], ...]}`` (default :data:`POOLED_ARCH`).
    in_channels : int, optional
        Input bands.
    batchnorm : bool, optional
        Insert ``BatchNorm2d`` after each convolution (folded away for export).
    """

    def __init__(self, arch=None, in_channels=1, batchnorm=True):
        super().__init__()
        arch = copy.deepcopy(arch or POOLED_ARCH)
        self.arch = arch
        self.features, self.out_channels = _conv_stack([arch["stem"], *arch["layers"]], in_channels, batchnorm)

    def forward(self, x):
        """Return pooled features of shape ``(B, out_channels)``."""
        return self.features(x).mean(dim=(2, 3))


class MorphologyNet(nn.Module):
    """Morphology CNN: a 3-way morphology softmax and bar and spiral sigmoids.

    :meth:`forward` returns five logits: three for :data:`MORPH_CLASSES`, then bar and spiral.
    Temperatures (``t_morph``, ``t_bar``, ``t_spiral``, buffers fitted on a validation split)
    divide the logits in :meth:`probs`; they are folded into the exported forward graph.

    With a bar-evidence architecture (the default, see the module docstring) the bar logit is
    pooled from the evidence map of :meth:`bar_evidence`; with a pooled architecture all five
    logits come from one linear head on globally pooled features.

    Parameters
    ----------
    arch : dict, optional
        ``{"body": [...], "tail": [...]}`` (bar evidence, default :data:`DEFAULT_ARCH`) or
        ``{"stem": [...], "layers": [...]}`` (pooled, see :class:`ConvTrunk`).
    batchnorm : bool, optional
        Use batch norm after each convolution.
    """

    def __init__(self, arch=None, batchnorm=True):
        super().__init__()
        arch = copy.deepcopy(arch or DEFAULT_ARCH)
        self.evidence_design = is_evidence_arch(arch)
        if self.evidence_design:
            self._arch = arch
            self.body, cb = _conv_stack(arch["body"], 1, batchnorm)
            self.skip = _check_skip(arch)
            ce = cb
            if self.skip is not None:
                c_low = _spec(arch["body"][self.skip["after"] - 1])[0] if self.skip["after"] else 1
                self.fuse, ce = _conv_stack([[self.skip["fuse"][0], self.skip["fuse"][1], 1]], cb + c_low, batchnorm)
            self.evidence_conv = nn.Conv2d(ce, 1, 1)
            self.tail, ct = _conv_stack(arch["tail"], cb, batchnorm)
            self.head = nn.Linear(ct, 4)  # smooth, edge-on, disc, spiral
            # the bar's context term: the pooled tail features see the whole frame (the disc,
            # its inclination, rings and arms), where the evidence cells see ~28 pixels each
            self.bar_context = nn.Linear(ct, 1) if arch.get("bar_context") else None
            if self.bar_context is not None:
                with torch.no_grad():  # start as the evidence alone
                    self.bar_context.weight.zero_()
                    self.bar_context.bias.zero_()
            self.bar_scale = nn.Parameter(torch.tensor(1.0))
            self.bar_shift = nn.Parameter(torch.tensor(0.0))
            with torch.no_grad():  # start with little evidence everywhere
                self.evidence_conv.bias.fill_(-2.0)
        else:
            self.trunk = ConvTrunk(arch, batchnorm=batchnorm)
            self.head = nn.Linear(self.trunk.out_channels, 5)
        self.register_buffer("t_morph", torch.tensor(1.0))
        self.register_buffer("t_bar", torch.tensor(1.0))
        self.register_buffer("t_spiral", torch.tensor(1.0))

    @property
    def arch(self):
        """The architecture dict."""
        return self._arch if self.evidence_design else self.trunk.arch

    def _pool_evidence(self, e):
        s = nn.functional.softplus(e).mean(dim=(1, 2))
        return self.bar_scale * torch.log(s + EVIDENCE_EPS) + self.bar_shift

    def outputs(self, x):
        """Return ``(logits, evidence)``: the five raw logits ``(B, 5)`` and the bar-evidence
        logits ``(B, h, w)`` (None for a pooled architecture)."""
        if not self.evidence_design:
            return self.head(self.trunk(x)), None
        f, low = self._body(x)
        e = self._evidence(f, low)
        t = self.tail(f).mean(dim=(2, 3))
        z = self.head(t)
        bar = self._pool_evidence(e)
        if self.bar_context is not None:
            bar = bar + self.bar_context(t)[:, 0]
        return torch.stack([z[:, 0], z[:, 1], z[:, 2], bar, z[:, 3]], dim=1), e

    def forward(self, x):
        """Return the raw logits, shape ``(B, 5)``."""
        return self.outputs(x)[0]

    def bar_evidence(self, x, factorised=None):
        """Return the per-cell bar-evidence logits ``(B, h, w)`` (bar-evidence design only).

        Parameters
        ----------
        x : torch.Tensor
            Images of shape ``(B, 1, S, S)``.
        factorised : bool, optional
            Compute a 1 x 1 skip fuse factorised (:meth:`_fuse_factorised`): the same function,
            cheaper, but its graph does not keep the fuse weight whole. Default: in training
            mode only.

        Returns
        -------
        torch.Tensor
        """
        if not self.evidence_design:
            msg = "bar_evidence() needs a bar-evidence architecture ('body'/'tail'); this network is pooled."
            raise ValueError(msg)
        return self._evidence(*self._body(x), factorised=factorised)

    def _body(self, x):
        """The body's output and, with a skip connection, the features after layer
        ``skip["after"]`` (counted by ReLUs, so that it also works once batch norm is folded)."""
        if self.skip is None:
            return self.body(x), None
        low, relus = (x if self.skip["after"] == 0 else None), 0
        for layer in self.body:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                relus += 1
                if relus == self.skip["after"]:
                    low = x
        return x, low

    def _evidence(self, f, low, factorised=None):
        if low is None:
            return self.evidence_conv(f)[:, 0]
        if low.shape[-1] % f.shape[-1] or low.shape[-2] % f.shape[-2]:
            msg = (f"The skip connection needs the body output ({tuple(f.shape[-2:])}) to divide the grid of body "
                   f"layer {self.skip['after']} ({tuple(low.shape[-2:])}); use a frame side divisible by the strides.")
            raise ValueError(msg)
        k = low.shape[-1] // f.shape[-1]
        if (self.training if factorised is None else factorised) and self.skip["fuse"][1] == 1:
            return self.evidence_conv(self._fuse_factorised(f, low, k))[:, 0]
        up = _upsample_nearest(f, k)
        return self.evidence_conv(self.fuse(torch.cat([up, low], dim=1)))[:, 0]

    def _fuse_factorised(self, f, low, k):
        """``self.fuse(cat([up(f), low]))`` for a 1 x 1 fuse, computed as ``up(W_f f) + W_low low``.

        A 1 x 1 convolution commutes with nearest upsampling, so this is the same function
        (to float rounding, ~1e-6) with the same parameters; it upsamples ``c`` fused channels
        instead of the body's and skips the concatenation, which makes a training step of
        ``{"after": 2, "fuse": [16, 1]}`` 1.5-1.9x faster on a CPU and the exported saliency
        graph faster. The exported forward graph keeps the concatenation, from which
        :func:`survey_bars.training.export.torch_from_bundle` recovers the weights.
        """
        conv, rest = self.fuse[0], list(self.fuse)[1:]
        cf = f.shape[1]
        y = _upsample_nearest(nn.functional.conv2d(f, conv.weight[:, :cf]), k)
        y = y + nn.functional.conv2d(low, conv.weight[:, cf:], conv.bias)
        for layer in rest:
            y = layer(y)
        return y

    def evidence_logit(self, evidence):
        """Return the bar logit of the evidence alone, ``(B,)``, from :meth:`bar_evidence`'s map.

        Parameters
        ----------
        evidence : torch.Tensor
            ``(B, h, w)`` bar-evidence logits.

        Returns
        -------
        torch.Tensor
        """
        return self._pool_evidence(evidence)

    def bar_logit(self, x, factorised=None):
        """Return the raw bar logit of the evidence, shape ``(B,)``: the quantity whose gradient
        is the saliency.

        Without a context term (``bar_context``) this is the bar column of :meth:`forward`.
        With one, :meth:`forward`'s bar logit adds the context term to it, and the saliency
        stays the gradient of the evidence alone: the part of the bar output that is a sum over
        places in the frame.

        ``factorised`` is passed to :meth:`bar_evidence`.
        """
        if self.evidence_design:
            return self._pool_evidence(self.bar_evidence(x, factorised=factorised))
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


def flip_average(fn, x):
    """Average a network output over four flips of the input frame (test-time augmentation).

    A bar, a disc and their lengths do not change when the frame is flipped, but a CNN's
    output does a little; averaging the logits over the identity, the x flip, the y flip and
    the 180-degree rotation removes part of that noise. On the 30-epoch network of bundles
    2.0/2.1 it raised the bar ROC AUC among discs from 0.958 to 0.961 on its test split and
    from 0.941 to 0.951 on the SDSS-heavy accuracy benchmark, for four forward passes instead
    of one (all eight rotations/flips gave 0.9615 against 0.9613 for these four).

    Parameters
    ----------
    fn : callable
        Maps ``(N, 1, S, S)`` images to an ``(N, ...)`` tensor of logits (or log lengths:
        average what is additive, not probabilities).
    x : torch.Tensor
        Images of shape ``(B, 1, S, S)``.

    Returns
    -------
    torch.Tensor
        ``fn``'s output for ``x``, averaged over the four flips, shape ``(B, ...)``.
    """
    b = x.shape[0]
    out = fn(torch.cat([x, torch.flip(x, dims=(3,)), torch.flip(x, dims=(2,)), torch.flip(x, dims=(2, 3))], dim=0))
    return out.reshape(4, b, *out.shape[1:]).mean(dim=0)


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
                layer.padding, dilation=layer.dilation, bias=True,
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
    for name, child in list(m.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.Sequential):
                setattr(child, attr, _fold_sequential(sub))
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _stack_macs(specs, h, cin):
    macs = 0
    for spec in specs:
        c, k, s, d = _spec(spec)
        p = _padding(k, s, d)
        h = (h + 2 * p - d * (k - 1) - 1) // s + 1
        macs += h * h * c * cin * k * k
        cin = c
    return macs, h, cin


def forward_flops(arch=None, size=64, part="all"):
    """Floating-point operations (2 x multiply-adds) of one forward pass.

    Parameters
    ----------
    arch : dict, optional
        Architecture (default :data:`DEFAULT_ARCH`).
    size : int, optional
        Input frame side.
    part : {"all", "bar"}, optional
        ``"bar"`` counts only what the bar logit needs (the body and the evidence map of a
        bar-evidence network; everything for a pooled one): the forward half of a saliency
        gradient.

    Returns
    -------
    int
        FLOPs of the convolutions for one image (heads and pooling are negligible).
    """
    arch = arch or DEFAULT_ARCH
    if not is_evidence_arch(arch):
        return 2 * _stack_macs([arch["stem"], *arch["layers"]], size, 1)[0]
    macs, h, cin = _stack_macs(arch["body"], size, 1)
    skip = _check_skip(arch)
    if skip is None:
        macs += h * h * cin  # the 1 x 1 evidence convolution
    else:
        _, hl, cl = _stack_macs(arch["body"][: skip["after"]], size, 1)
        c, k = skip["fuse"]
        macs += hl * hl * (cin + cl) * c * k * k + hl * hl * c  # fuse and evidence convolutions
    if part == "all":
        tail, _, ct = _stack_macs(arch["tail"], h, cin)
        macs += tail + (ct if arch.get("bar_context") else 0)
    return 2 * macs
