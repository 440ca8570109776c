"""Export trained networks to an ONNX model bundle: the forward graph and the gradient graph.

``torch.onnx.export`` cannot export ``torch.autograd.grad``. The input gradient of the bar logit
is therefore traced into an ordinary graph first (the route of ``DESIGN.md``):

1. ``torch.func.grad`` of ``sum(bar_logit(image))`` with respect to the image (the sum gives
   each item its own gradient) is traced by ``make_fx`` with symbolic shapes (dynamic batch)
   and ``core_aten_decompositions()``;
2. our own decompositions replace the backward ops by forward ops that onnxruntime runs fast:

   * ``convolution_backward`` (input gradient only): a stride-1 convolution's input gradient
     is a plain convolution with the flipped, transposed kernel (onnxruntime runs it in its
     blocked NCHWc layout); a strided one is a transposed convolution; an unpadded
     transposed convolution's (the skip connection's nearest upsampling) is the forward
     convolution with the same weight;
   * ``threshold_backward`` (ReLU): ``grad * float(result > 0)``, which is several times
     faster in onnxruntime than ``Where``;
   * ``avg_pool2d_backward`` (non-overlapping pools): nearest upsampling divided by the area;

3. the traced graph, with the weights registered as buffers, is exported by the dynamo
   exporter with a dynamic batch dimension.

Batch norm is folded into the convolutions before either graph is exported. Every export is
checked against torch on random inputs before the bundle is written.

``survey-bars export --checkpoint CKPT --out DIR`` exports a checkpoint saved by
``survey-bars train --checkpoint``. Checkpoints are torch files (loaded with
``weights_only=True``); bundles contain no pickle.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import pathlib
import shutil
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..inference.bundle import SCHEMA_VERSION, load_bundle, write_card
from ..normalise import NormaliseConfig
from .nets import (
    CLASS_NAMES,
    DEFAULT_ARCH,
    EVIDENCE_EPS,
    FLIP_AVERAGE,
    LENGTH_ARCH,
    LengthNet,
    MorphologyNet,
    flip_average,
    fold_batchnorm,
    forward_flops,
)

__all__ = [
    "gradient_decompositions",
    "ForwardGraph",
    "trace_saliency",
    "export_forward",
    "export_saliency",
    "relative_error",
    "check_graphs",
    "torch_reference",
    "torch_from_bundle",
    "export_bundle",
    "save_checkpoint",
    "load_checkpoint",
    "configure_parser",
    "run_cli",
]

aten = torch.ops.aten
FORWARD_OUTPUTS = ("probs", "bar_logit", "bar_length_direct")


# --------------------------------------------------------------------------------------------
# decompositions of the backward ops into fast forward ops


def _conv_input_grad(grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed,
                     output_padding, groups, output_mask):
    """``aten.convolution_backward`` reduced to the input gradient, as a forward convolution."""
    if not output_mask[0]:
        return None, None, None
    if transposed:
        # the input gradient of a transposed convolution is the forward convolution with the
        # same weight (supported for the unpadded, undilated case: nearest upsampling)
        if any(p != 0 for p in padding) or any(d != 1 for d in dilation) or any(p != 0 for p in output_padding):
            msg = "The gradient export supports only unpadded, undilated transposed convolutions."
            raise NotImplementedError(msg)
        gi = aten.convolution(grad_out, weight, None, list(stride), [0, 0], [1, 1], False, [0, 0], groups)
        return gi, None, None
    H, W = input.shape[-2:]
    kh, kw = weight.shape[-2:]
    oh, ow = grad_out.shape[-2:]
    if list(stride) == [1, 1] and groups == 1:
        # correlation with the flipped kernel, channels swapped: a plain Conv (NCHWc in ORT)
        wt = aten.flip(aten.permute(weight, [1, 0, 2, 3]), [2, 3])
        pt = dilation[0] * (kh - 1) - padding[0]
        pl = dilation[1] * (kw - 1) - padding[1]
        pb = H - (oh + pt - dilation[0] * (kh - 1))
        pr = W - (ow + pl - dilation[1] * (kw - 1))
        if pt == pb and pl == pr and pt >= 0 and pl >= 0:
            gi = aten.convolution(grad_out, wt, None, [1, 1], [pt, pl], list(dilation), False, [0, 0], 1)
        else:
            g = aten.constant_pad_nd(grad_out, [pl, pr, pt, pb], 0.0)
            gi = aten.convolution(g, wt, None, [1, 1], [0, 0], list(dilation), False, [0, 0], 1)
        return gi, None, None
    # strided: transposed convolution, with the output padding that restores the input size
    op = [
        H - ((oh - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + 1),
        W - ((ow - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + 1),
    ]
    gi = aten.convolution(grad_out, weight, None, list(stride), list(padding), list(dilation), True, op, groups)
    return gi, None, None


def _relu_grad(grad, self, threshold):
    """``aten.threshold_backward`` as ``grad * float(self > threshold)``."""
    mask = aten._to_copy(aten.gt(self, threshold), dtype=grad.dtype)
    return aten.mul(grad, mask)


def _avg_pool_grad(grad_output, self, kernel_size, stride, padding, ceil_mode, count_include_pad,
                   divisor_override):
    """``aten.avg_pool2d_backward`` for non-overlapping pools: nearest upsampling / area."""
    kh, kw = (list(kernel_size) * 2)[:2]
    st = list(stride) or [kh, kw]
    if st != [kh, kw] or any(p != 0 for p in padding) or ceil_mode or divisor_override:
        msg = "The gradient export supports only non-overlapping, unpadded average pools."
        raise NotImplementedError(msg)
    H, W = self.shape[-2:]
    up = aten.upsample_nearest2d.vec(grad_output, None, [float(kh), float(kw)])
    ph, pw = H - up.shape[-2], W - up.shape[-1]
    if ph or pw:
        up = aten.constant_pad_nd(up, [0, pw, 0, ph], 0.0)
    return aten.mul(up, 1.0 / (kh * kw))


def gradient_decompositions():
    """Return the decomposition table used to trace the gradient graph.

    Returns
    -------
    dict
        ``core_aten_decompositions()`` plus our decompositions of ``convolution_backward``,
        ``threshold_backward`` and ``avg_pool2d_backward`` (see the module docstring).
    """
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    table[aten.convolution_backward.default] = _conv_input_grad
    table[aten.threshold_backward.default] = _relu_grad
    table[aten.avg_pool2d_backward.default] = _avg_pool_grad
    for op in (aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default):
        table.pop(op, None)
    return table


# --------------------------------------------------------------------------------------------
# graphs


class ForwardGraph(nn.Module):
    """The exported forward computation: calibrated probabilities, bar logit and direct length.

    Parameters
    ----------
    morph : MorphologyNet
        Morphology network (batch norm folded), its temperatures set.
    length : LengthNet
        Direct bar-length regressor (batch norm folded).
    flips : bool, optional
        Average the logits and the log length over four flips of the frame
        (:func:`~survey_bars.training.nets.flip_average`) before the temperatures.
    """

    def __init__(self, morph, length, flips=False):
        super().__init__()
        self.morph = morph
        self.length = length
        self.flips = bool(flips)

    def forward(self, image):
        """Return ``probs`` (B, 5), ``bar_logit`` (B,) and ``bar_length_direct`` (B,)."""
        if self.flips:
            z = flip_average(self.morph, image)
            length = torch.exp(flip_average(self.length.log_length, image))
        else:
            z = self.morph(image)
            length = self.length(image)
        pm = torch.softmax(z[:, :3] / self.morph.t_morph, dim=1)
        p_smooth = pm[:, 0]
        p_edge = pm[:, 1]
        p_disc = 1.0 - p_smooth
        p_bar = torch.sigmoid(z[:, 3] / self.morph.t_bar)
        p_spiral = torch.sigmoid(z[:, 4] / self.morph.t_spiral)
        probs = torch.stack([p_smooth, p_disc, p_edge, p_bar, p_spiral], dim=1)
        return probs, z[:, 3], length


class _BarLogit(nn.Module):
    """The function whose input gradient is the saliency: the network's bar logit.

    For a pooled network only the bar row of the head is kept; a bar-evidence network's bar
    logit needs only the body and the evidence map, not the morphology tail. A 1 x 1 skip fuse
    is traced factorised (upsampling after the convolution): the same gradient, but the
    upsampling's backward sums the fused channels instead of the body's.
    """

    def __init__(self, morph):
        super().__init__()
        self.morph = morph
        self.pooled = not morph.evidence_design
        if self.pooled:
            self.bar = nn.Linear(morph.head.in_features, 1)
            with torch.no_grad():
                self.bar.weight.copy_(morph.head.weight[3:4])
                self.bar.bias.copy_(morph.head.bias[3:4])

    def forward(self, x):
        if self.pooled:
            return self.bar(self.morph.trunk(x))[:, 0]
        return self.morph.bar_logit(x, factorised=True)


class _SaliencyGraph(nn.Module):
    """A traced gradient graph with its weights registered as buffers."""

    def __init__(self, gm, params):
        super().__init__()
        self.gm = gm
        self._names = list(params)
        for i, name in enumerate(self._names):
            self.register_buffer(f"w{i}", params[name].detach().clone())

    def forward(self, image):
        params = {name: getattr(self, f"w{i}") for i, name in enumerate(self._names)}
        return self.gm(params, image)


def trace_saliency(morph, size=64):
    """Trace the input gradient of the bar logit into a plain graph module.

    Parameters
    ----------
    morph : MorphologyNet
        The morphology network; batch norm is folded if present.
    size : int, optional
        Frame side.

    Returns
    -------
    torch.nn.Module
        ``module(image) -> grad``, ``grad = d sum(bar_logit(image)) / d image``, built from
        forward ops only (no autograd), with a symbolic batch dimension.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    folded = fold_batchnorm(morph) if _has_bn(morph) else morph.eval()
    bar = _BarLogit(folded).eval()
    params = {k: v.detach() for k, v in bar.named_parameters()
              if not k.startswith(("morph.head", "morph.tail", "morph.bar_context"))}

    def total_logit(p, x):
        return torch.func.functional_call(bar, p, (x,)).sum()

    grad_fn = torch.func.grad(total_logit, argnums=1)
    example = torch.zeros(4, 1, size, size)
    gm = make_fx(grad_fn, decomposition_table=gradient_decompositions(), tracing_mode="symbolic")(params, example)
    return _SaliencyGraph(gm, params).eval()


def _has_bn(model):
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@contextlib.contextmanager
def _quiet_export():
    """Silence the exporter's chatter (torchvision registry notes, deprecation warnings)."""
    names = ["torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export", "onnxscript"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # build time, one thread: never on a worker
            for category in (UserWarning, DeprecationWarning, FutureWarning):  # TracerWarning is a UserWarning
                warnings.filterwarnings("ignore", category=category)
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export(module, path, size, output_names, input_name="image"):
    example = torch.zeros(4, 1, size, size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet_export(), contextlib.redirect_stdout(open(os.devnull, "w")):
        torch.onnx.export(
            module, (example,), str(path), input_names=[input_name], output_names=list(output_names),
            dynamic_shapes={input_name: {0: batch}}, dynamo=True, optimize=True, external_data=False,
            verbose=False,
        )
    _strip_export_details(path)


def _strip_export_details(path):
    """Drop what describes the export machine rather than the model, for a small, stable file.

    The exporter records, per node, a doc string and metadata (the source stack trace with
    absolute paths and line numbers, the torch module hierarchy, the FX node). None of it is
    read back; kept, it would embed local paths in a shipped bundle and change its hashes with
    every edit of the exporting code.
    """
    import onnx

    m = onnx.load(str(path))
    for g in (m.graph, *m.functions):
        for node in g.node:
            node.doc_string = ""
            del node.metadata_props[:]
    for vi in (*m.graph.input, *m.graph.output, *m.graph.value_info):
        vi.doc_string = ""
        del vi.metadata_props[:]
    m.doc_string = ""
    m.graph.doc_string = ""
    onnx.save(m, str(path))


def export_forward(morph, length, path, size=64, flips=False):
    """Export the forward graph.

    Parameters
    ----------
    morph : MorphologyNet
        Morphology network (temperatures set).
    length : LengthNet
        Direct bar-length regressor.
    path : str or os.PathLike
        Output ``.onnx`` file.
    size : int, optional
        Frame side.
    flips : bool, optional
        Average over four flips inside the graph (see :class:`ForwardGraph`).
    """
    fm = fold_batchnorm(morph) if _has_bn(morph) else morph.eval()
    fl = fold_batchnorm(length) if _has_bn(length) else length.eval()
    _export(ForwardGraph(fm, fl, flips).eval(), path, size, FORWARD_OUTPUTS)


def export_saliency(morph, path, size=64):
    """Export the gradient graph ``image -> grad`` of the bar logit.

    Parameters
    ----------
    morph : MorphologyNet
        Morphology network.
    path : str or os.PathLike
        Output ``.onnx`` file.
    size : int, optional
        Frame side.
    """
    _export(trace_saliency(morph, size), path, size, ("grad",))


# --------------------------------------------------------------------------------------------
# checks


def _session(path, threads=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def relative_error(test, ref):
    """Largest per-item relative error of a batch of gradients.

    Parameters
    ----------
    test, ref : ndarray
        Arrays of shape ``(B, ...)``.

    Returns
    -------
    float
        ``max_b max|test_b - ref_b| / max|ref_b|`` (items whose reference is all zero use an
        absolute error).
    """
    t = np.asarray(test, dtype=np.float64).reshape(len(test), -1)
    r = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    num = np.abs(t - r).max(axis=1)
    den = np.abs(r).max(axis=1)
    den = np.where(den > 0, den, 1.0)
    return float((num / den).max())


def torch_reference(morph, length, images, flips=False):
    """Torch forward outputs and autograd input gradients for a batch.

    Parameters
    ----------
    morph : MorphologyNet
    length : LengthNet
    images : ndarray
        ``(B, 1, S, S)`` float32.
    flips : bool, optional
        Flip-averaged forward outputs (the gradient is always that of the plain bar logit).

    Returns
    -------
    dict
        ``probs``, ``bar_logit``, ``bar_length_direct`` and ``grad`` as numpy arrays.
    """
    m = morph.eval()
    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32)).clone().requires_grad_(True)
    with torch.no_grad():
        probs, logit, length_px = ForwardGraph(m, length.eval(), flips)(x.detach())
    (g,) = torch.autograd.grad(m.bar_logit(x).sum(), x)
    return {"probs": probs.numpy(), "bar_logit": logit.numpy(), "bar_length_direct": length_px.numpy(),
            "grad": g.numpy()}


def check_graphs(morph, length, forward_path, saliency_path, images, flips=False):
    """Compare the ONNX graphs with torch on a batch.

    Parameters
    ----------
    morph : MorphologyNet
    length : LengthNet
    forward_path, saliency_path : str or os.PathLike
        The exported graphs.
    images : ndarray
        ``(B, 1, S, S)`` inputs.
    flips : bool, optional
        Whether the forward graph averages over flips.

    Returns
    -------
    dict
        ``forward_max_abs`` (largest absolute difference over the three forward outputs, the
        length taken relative to its value) and ``grad_rel_err`` (see :func:`relative_error`).
    """
    ref = torch_reference(morph, length, images, flips)
    x = np.ascontiguousarray(images, dtype=np.float32)
    probs, logit, length_px = _session(forward_path).run(list(FORWARD_OUTPUTS), {"image": x})
    (grad,) = _session(saliency_path).run(["grad"], {"image": x})
    fwd = max(
        float(np.abs(probs - ref["probs"]).max()),
        float(np.abs(logit - ref["bar_logit"]).max()),
        float((np.abs(length_px - ref["bar_length_direct"]) / np.maximum(np.abs(ref["bar_length_direct"]), 1.0)).max()),
    )
    return {"forward_max_abs": fwd, "grad_rel_err": relative_error(grad, ref["grad"])}


# --------------------------------------------------------------------------------------------
# bundle


def _default_card(morph, length, size):
    cfg = NormaliseConfig(size=size)
    context = getattr(morph, "bar_context", None) is not None
    return {
        "schema_version": SCHEMA_VERSION,
        "name": "survey-bars-model",
        "version": "0",
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "software": {"survey_bars": __version__, "torch": str(torch.__version__)},
        "input_shape": [1, size, size],
        "preprocessing": cfg.to_dict(),
        "inputs": {
            "image": {
                "shape": ["B", 1, size, size], "dtype": "float32",
                "description": "survey_bars.normalise.normalise(data, preprocessing).image, one band",
            }
        },
        "output_names": {
            "forward": {
                "probs": "float32 [B, 5], columns named by class_names; p_disc = 1 - p_smooth; temperatures folded in",
                "bar_logit": ("float32 [B], raw bar logit (before temperature); "
                              + ("the evidence logit plus the context term (architecture.bar_pooling); the saliency is "
                                 "the gradient of the evidence logit alone" if context else
                                 "its input gradient is the saliency")),
                "bar_length_direct": "float32 [B], full bar length in model-frame pixels (direct regression baseline)",
            },
            "saliency": {"grad": ("float32 [B, 1, S, S], d evidence logit / d image for each item (the bar logit without "
                                  "its context term)" if context else
                                  "float32 [B, 1, S, S], d bar_logit / d image for each item")},
        },
        "class_names": list(CLASS_NAMES),
        "architecture": {
            "morphology": morph.arch, "length": length.arch,
            "forward_mflop_morphology": forward_flops(morph.arch, size) / 1e6,
            "forward_mflop_bar_logit": forward_flops(morph.arch, size, part="bar") / 1e6,
            "forward_mflop_length": forward_flops(length.arch, size) / 1e6,
            "temperatures": {"morph": float(morph.t_morph), "bar": float(morph.t_bar), "spiral": float(morph.t_spiral)},
        },
        "training": {},
        "metrics": {},
        "files": {},
        "calibration": {},
        "smoothgrad": {"samples": 16, "noise_frac": 0.05, "symmetrise": True},
        "forward": {"flip_average": False},
    }


def _pooling_card(morph):
    """The bar-evidence pooling of a bar-evidence network (None for a pooled one)."""
    if not morph.evidence_design:
        return None

    out = {"formula": "bar_logit = scale * log(mean(softplus(evidence)) + eps) + shift",
           "scale": float(morph.bar_scale.detach()), "shift": float(morph.bar_shift.detach()), "eps": EVIDENCE_EPS}
    if getattr(morph, "bar_context", None) is not None:
        out["formula"] += " + context"
        out["context"] = ("a linear function (bar_context) of the pooled morphology-tail features; the saliency is the "
                          "gradient of the evidence logit, the formula without it")
    return out


def export_bundle(model, regressor, out_dir, card_extra=None, *, check=True, seed=0):
    """Export a morphology network and a length regressor as a model bundle.

    Parameters
    ----------
    model : MorphologyNet
        Trained morphology network (temperatures set).
    regressor : LengthNet
        Trained direct bar-length regressor.
    out_dir : str or os.PathLike
        The bundle directory (created; an existing bundle there is replaced).
    card_extra : dict, optional
        Card entries to add or override (e.g. ``name``, ``version``, ``preprocessing``,
        ``training``, ``metrics``). ``preprocessing`` must be a ``NormaliseConfig.to_dict()``.
    check : bool, optional
        Compare both graphs with torch on random inputs (batch 3) and refuse to write the
        bundle when the forward differs by more than 1e-4 or the gradient's relative error
        exceeds 1e-3.
    seed : int, optional
        Seed of the check inputs.

    The forward graph averages over four flips (:func:`~survey_bars.training.nets.flip_average`)
    when ``card_extra["forward"]["flip_average"]`` is true, as :func:`survey_bars.training.train.train`
    writes it; the temperatures must then have been fitted on flip-averaged logits.

    Returns
    -------
    Bundle
        The written bundle, loaded and verified. The card records the check's errors under
        ``export_check``.

    Raises
    ------
    RuntimeError
        When the check fails.
    """
    card_extra = dict(card_extra or {})
    size = NormaliseConfig.from_dict(card_extra["preprocessing"]).size if "preprocessing" in card_extra else 64
    card = _default_card(model, regressor, size)
    pooling = _pooling_card(model)
    if pooling:
        card["architecture"]["bar_pooling"] = pooling
    card.update(card_extra)
    flips = bool((card.get("forward") or {}).get("flip_average", False))
    card["forward"] = {**(card.get("forward") or {}), "flip_average": flips}
    if flips:
        card["forward"]["about"] = FLIP_AVERAGE
    out = pathlib.Path(os.fspath(out_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700 directories
        export_forward(model, regressor, tmp / "forward.onnx", size, flips)
        export_saliency(model, tmp / "saliency.onnx", size)
        if check:
            rng = np.random.default_rng(seed)
            x = rng.normal(0.2, 0.4, size=(3, 1, size, size)).astype(np.float32)
            res = check_graphs(model, regressor, tmp / "forward.onnx", tmp / "saliency.onnx", x, flips)
            if not (res["forward_max_abs"] <= 1e-4 and res["grad_rel_err"] <= 1e-3):
                msg = (
                    f"The exported graphs disagree with torch (forward max abs diff "
                    f"{res['forward_max_abs']:.2e}, limit 1e-4; gradient relative error "
                    f"{res['grad_rel_err']:.2e}, limit 1e-3); the bundle was not written. "
                    "The network probably uses an op the gradient export does not support."
                )
                raise RuntimeError(msg)
            card["export_check"] = {"inputs": "3 random frames N(0.2, 0.4)", **res}
        write_card(tmp, card)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)


def torch_from_bundle(bundle):
    """Rebuild the torch networks of a bundle from its forward graph (for checks and benchmarks).

    The forward graph keeps the torch parameter names of the (batch-norm folded) networks; a
    bias that the exporter renamed (identical constants are merged) is found as the third
    input of the Conv/Gemm node that uses the matching weight. The temperatures come from the
    card.

    Parameters
    ----------
    bundle : Bundle or str or os.PathLike
        A bundle, or its directory.

    Returns
    -------
    tuple
        ``(morph, length)``: :class:`MorphologyNet` and :class:`LengthNet` without batch norm,
        in eval mode, numerically equal to the bundle's graphs.

    Raises
    ------
    ValueError
        When a parameter cannot be found in the graph.
    """
    import onnx
    from onnx import numpy_helper

    if not hasattr(bundle, "card"):
        bundle = load_bundle(bundle)
    card = bundle.card
    morph = fold_batchnorm(MorphologyNet(card["architecture"]["morphology"]))
    length = fold_batchnorm(LengthNet(card["architecture"]["length"]))
    graph = onnx.load(str(bundle.forward_path)).graph
    inits = {t.name: t for t in graph.initializer}
    bias_of = {n.input[1]: n.input[2] for n in graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2}
    for prefix, net in (("morph.", morph), ("length.", length)):
        state = net.state_dict()
        for k in state:
            name = prefix + k
            if name not in inits and k.endswith(".bias"):
                name = bias_of.get(name[: -len(".bias")] + ".weight", name)
            if name in inits:
                arr = numpy_helper.to_array(inits[name]).reshape(tuple(state[k].shape))
                state[k] = torch.as_tensor(arr.copy())
            elif k.startswith("t_"):
                state[k] = torch.tensor(float(card["architecture"]["temperatures"][k[2:]]))
            elif k in ("bar_scale", "bar_shift") and "bar_pooling" in card["architecture"]:
                state[k] = torch.tensor(float(card["architecture"]["bar_pooling"][k[4:]]))
            else:
                msg = f"The parameter {name} was not found in {bundle.forward_path}; the bundle cannot be rebuilt in torch."
                raise ValueError(msg)
        net.load_state_dict(state)
    return morph.eval(), length.eval()


# --------------------------------------------------------------------------------------------
# checkpoints and the CLI


def save_checkpoint(path, model, regressor, card_extra=None):
    """Save a training checkpoint (torch state dicts plus the card entries).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.pt``).
    model : MorphologyNet
    regressor : LengthNet
    card_extra : dict, optional
        JSON-serialisable card entries to carry to :func:`export_bundle`.
    """
    torch.save(
        {
            "format": "survey-bars-checkpoint-1",
            "morph_arch": model.arch,
            "length_arch": regressor.arch,
            # a fine-tuned network (train(..., finetune=...)) has its batch norm folded
            "morph_folded": not _has_bn(model),
            "morph": model.state_dict(),
            "length": regressor.state_dict(),
            # JSON round trip: plain types only, so weights_only loading accepts it
            "card_extra": json.loads(json.dumps(card_extra or {})),
        },
        os.fspath(path),
    )


def load_checkpoint(path):
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    tuple
        ``(model, regressor, card_extra)``.
    """
    try:
        ck = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        msg = f"The checkpoint {os.fspath(path)!r} does not exist. Train one with `survey-bars train --checkpoint`."
        raise FileNotFoundError(msg) from None
    if not isinstance(ck, dict) or ck.get("format") != "survey-bars-checkpoint-1":
        msg = f"{os.fspath(path)!r} is not a survey-bars checkpoint (written by `survey-bars train --checkpoint`)."
        raise ValueError(msg)
    morph = MorphologyNet(ck.get("morph_arch") or DEFAULT_ARCH)
    if ck.get("morph_folded"):
        morph = fold_batchnorm(morph)
    morph.load_state_dict(ck["morph"])
    length = LengthNet(ck.get("length_arch") or LENGTH_ARCH)
    length.load_state_dict(ck["length"])
    return morph.eval(), length.eval(), dict(ck.get("card_extra") or {})


def configure_parser(parser):
    """Add the ``survey-bars export`` arguments to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("--checkpoint", required=True, help="checkpoint from `survey-bars train --checkpoint`")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--name", help="bundle name for the card")
    parser.add_argument("--version", dest="bundle_version", help="bundle version for the card")


def run_cli(args):
    """Run ``survey-bars export``.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    int
        Exit code.
    """
    torch.set_num_threads(1)
    model, regressor, extra = load_checkpoint(args.checkpoint)
    if args.name:
        extra["name"] = args.name
    if args.bundle_version:
        extra["version"] = args.bundle_version
    b = export_bundle(model, regressor, args.out, extra)
    chk = b.card.get("export_check", {})
    print(f"wrote {b.path} (forward max abs diff {chk.get('forward_max_abs', float('nan')):.1e}, "
          f"gradient relative error {chk.get('grad_rel_err', float('nan')):.1e})")
    return 0
