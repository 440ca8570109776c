"""ONNX export of the forward and gradient graphs, checked against torch."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from survey_bars.inference.bundle import DEFAULT_BUNDLE, load_bundle  # noqa: E402
from survey_bars.training.export import (  # noqa: E402
    export_bundle,
    load_checkpoint,
    relative_error,
    save_checkpoint,
    torch_from_bundle,
    torch_reference,
)
from survey_bars.training.nets import LengthNet, MorphologyNet, fold_batchnorm  # noqa: E402

from ..inference.test_bundle import _run_no_torch  # noqa: E402

TINY = {"stem": [8, 8, 4], "layers": [[8, 3, 1], [16, 3, 2], [16, 3, 1]]}
#: a tiny bar-evidence network (the default design), with a dilated layer to cover that path
TINY_EVIDENCE = {"body": [[8, 4, 2], [8, 3, 1, 2], [16, 3, 2]], "tail": [[16, 3, 2]]}
#: the same with the evidence map on the 32 x 32 grid of the second body layer (a skip
#: connection), fused by a 1 x 1 convolution (the factorised path) or a 3 x 3 one
TINY_SKIP = {**TINY_EVIDENCE, "skip": {"after": 2, "fuse": [8, 1]}}
TINY_SKIP3 = {**TINY_EVIDENCE, "skip": {"after": 2, "fuse": [8, 3]}}
#: the evidence on the 64 x 64 pixel grid, the input frame fused with the upsampled body
TINY_SKIP0 = {**TINY_EVIDENCE, "skip": {"after": 0, "fuse": [8, 1]}}
#: the skip design with a context term in the bar logit (the default design since bundle 5.0)
TINY_CONTEXT = {**TINY_SKIP, "bar_context": True}
ARCHS = {"pooled": TINY, "evidence": TINY_EVIDENCE, "skip": TINY_SKIP, "skip3": TINY_SKIP3, "skip0": TINY_SKIP0,
         "context": TINY_CONTEXT}
LENGTH_TINY = {"stem": [8, 8, 4], "layers": [[8, 3, 1], [16, 3, 2]]}
FWD_TOL = 1e-4
GRAD_TOL = 1e-3


def _randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(0.0, 0.2, generator=gen)


@pytest.fixture(scope="module", params=list(ARCHS))
def tiny(request, tmp_path_factory):
    """A tiny random-weight morphology net (each design) and regressor, exported once."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    arch = ARCHS[request.param]
    morph, length = MorphologyNet(arch), LengthNet(LENGTH_TINY)
    if morph.evidence_design:
        with torch.no_grad():  # some cells with evidence, so that the gradient is not ~0
            morph.evidence_conv.bias.fill_(0.5)
            morph.bar_scale.fill_(1.7)
            if morph.bar_context is not None:  # a context term that changes the forward bar logit
                morph.bar_context.weight.normal_(0.0, 0.5, generator=gen)
                morph.bar_context.bias.fill_(-0.3)
    _randomise_bn(morph, gen)
    _randomise_bn(length, gen)
    with torch.no_grad():
        morph.t_morph.fill_(1.3)
        morph.t_bar.fill_(0.8)
        morph.t_spiral.fill_(1.1)
    morph.eval()
    length.eval()
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    b = export_bundle(morph, length, out, {"name": "tiny", "version": "t"})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    fwd = ort.InferenceSession(str(b.forward_path), so, providers=["CPUExecutionProvider"])
    sal = ort.InferenceSession(str(b.saliency_path), so, providers=["CPUExecutionProvider"])
    return {"morph": morph, "length": length, "bundle": b, "fwd": fwd, "sal": sal, "arch": arch}


def _compare(tiny, x):
    ref = torch_reference(tiny["morph"], tiny["length"], x, flips=tiny.get("flips", False))
    probs, logit, length = tiny["fwd"].run(["probs", "bar_logit", "bar_length_direct"], {"image": x})
    (grad,) = tiny["sal"].run(["grad"], {"image": x})
    assert probs.shape == (len(x), 5) and logit.shape == (len(x),) and length.shape == (len(x),)
    assert grad.shape == x.shape and grad.dtype == np.float32
    assert np.abs(probs - ref["probs"]).max() <= FWD_TOL
    assert np.abs(logit - ref["bar_logit"]).max() <= FWD_TOL
    assert np.abs(length - ref["bar_length_direct"]).max() <= FWD_TOL * max(1.0, np.abs(length).max())
    assert relative_error(grad, ref["grad"]) <= GRAD_TOL
    assert np.abs(ref["grad"]).max() > 0
    return probs, grad


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_random_inputs_match_torch(tiny, batch):
    x = np.random.default_rng(batch).normal(0.2, 0.5, size=(batch, 1, 64, 64)).astype(np.float32)
    probs, _ = _compare(tiny, x)
    np.testing.assert_allclose(probs[:, 0] + probs[:, 1], 1.0, atol=1e-6)


def _real_frames(real_dir, n):
    from survey_bars.io import read_cutout
    from survey_bars.normalise import normalise

    frames = [normalise(read_cutout(p).data).image for p in sorted(real_dir.glob("*.fits"))]
    out = [np.rot90(frames[i % len(frames)], k=i // len(frames)) for i in range(n)]
    return np.ascontiguousarray(np.stack(out)[:, None], dtype=np.float32)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_real_images_match_torch(tiny, real_dir, batch):
    _compare(tiny, _real_frames(real_dir, batch))


def test_gradient_is_per_item(tiny):
    """Each item's gradient depends on that item only (batch composition does not leak)."""
    x = np.random.default_rng(5).normal(0.2, 0.5, size=(8, 1, 64, 64)).astype(np.float32)
    (g8,) = tiny["sal"].run(["grad"], {"image": x})
    (g1,) = tiny["sal"].run(["grad"], {"image": x[5:6]})
    assert relative_error(g8[5:6], g1) < 1e-5


def test_bundle_card_from_export(tiny):
    b = load_bundle(tiny["bundle"].path)
    card = b.card
    assert card["name"] == "tiny" and card["export_check"]["grad_rel_err"] <= GRAD_TOL
    assert card["architecture"]["morphology"] == tiny["arch"]
    assert card["architecture"]["temperatures"]["bar"] == pytest.approx(0.8)
    assert [o.name for o in tiny["fwd"].get_outputs()] == ["probs", "bar_logit", "bar_length_direct"]
    assert [i.name for i in tiny["sal"].get_inputs()] == ["image"]
    for f in ("forward.onnx", "saliency.onnx"):
        assert (b.path / f).stat().st_size < 3e6


def test_bundle_runs_without_torch(tiny):
    res = _run_no_torch(tiny["bundle"].path)
    assert res["probs"] == [3, 5] and res["grad"] == [3, 1, 64, 64] and res["finite"]


def test_fold_batchnorm_is_exact(tiny):
    x = torch.randn(4, 1, 64, 64)
    folded = fold_batchnorm(tiny["morph"])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), tiny["morph"](x), atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip(tiny, tmp_path):
    ck = tmp_path / "ck.pt"
    save_checkpoint(ck, tiny["morph"], tiny["length"], {"name": "from-ckpt"})
    morph, length, extra = load_checkpoint(ck)
    assert extra == {"name": "from-ckpt"}
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(morph.probs(x), tiny["morph"].probs(x))
        torch.testing.assert_close(length(x), tiny["length"](x))
    with pytest.raises(ValueError, match="not a survey-bars checkpoint"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
        load_checkpoint(tmp_path / "other.pt")


@pytest.mark.skipif(not (DEFAULT_BUNDLE / "card.json").is_file(), reason="default bundle not built yet")
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_default_bundle_matches_torch(batch, real_dir):
    b = load_bundle()
    morph, length = torch_from_bundle(b)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sessions = {
        "fwd": ort.InferenceSession(str(b.forward_path), so, providers=["CPUExecutionProvider"]),
        "sal": ort.InferenceSession(str(b.saliency_path), so, providers=["CPUExecutionProvider"]),
        "morph": morph, "length": length, "flips": bool((b.card.get("forward") or {}).get("flip_average")),
    }
    rnd = np.random.default_rng(batch).normal(0.2, 0.5, size=(batch, 1, 64, 64)).astype(np.float32)
    _compare(sessions, rnd)
    _compare(sessions, _real_frames(real_dir, batch))


def test_weights_recoverable_from_forward_graph(tiny):
    """The forward graph keeps the torch parameter names, so a bundle can be re-checked later."""
    morph, length = torch_from_bundle(tiny["bundle"])
    x = np.random.default_rng(9).normal(0.2, 0.5, size=(3, 1, 64, 64)).astype(np.float32)
    _compare({**tiny, "morph": morph, "length": length}, x)


def test_flip_averaged_forward_graph(tmp_path):
    """``forward.flip_average`` bundles average the forward outputs over four flips inside the
    graph: it matches torch, is invariant under those flips, and differs from one pass."""
    torch.manual_seed(1)
    morph, length = MorphologyNet(TINY_EVIDENCE), LengthNet(LENGTH_TINY)
    gen = torch.Generator().manual_seed(1)
    _randomise_bn(morph, gen)
    _randomise_bn(length, gen)
    with torch.no_grad():
        morph.evidence_conv.bias.fill_(0.5)
    morph.eval()
    length.eval()
    b = export_bundle(morph, length, tmp_path / "flips", {"name": "flips", "version": "t", "forward": {"flip_average": True}})
    assert b.card["forward"]["flip_average"] is True and "flip" in b.card["forward"]["about"]
    sess = ort.InferenceSession(str(b.forward_path), providers=["CPUExecutionProvider"])
    names = ["probs", "bar_logit", "bar_length_direct"]
    x = np.random.default_rng(3).normal(0.2, 0.5, size=(3, 1, 64, 64)).astype(np.float32)
    out = sess.run(names, {"image": x})
    ref = torch_reference(morph, length, x, flips=True)
    for o, n in zip(out, names):
        np.testing.assert_allclose(o, ref[n], atol=FWD_TOL, rtol=FWD_TOL)
    for xf in (x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1]):
        for o, of in zip(out, sess.run(names, {"image": np.ascontiguousarray(xf)})):
            np.testing.assert_allclose(of, o, atol=1e-5, rtol=1e-5)
    plain = torch_reference(morph, length, x)
    assert np.abs(plain["bar_logit"] - out[1]).max() > 1e-4
    # the weights are still recoverable from the flip-averaging graph
    m2, l2 = torch_from_bundle(b)
    ref2 = torch_reference(m2, l2, x, flips=True)
    for o, n in zip(out, names):
        np.testing.assert_allclose(o, ref2[n], atol=FWD_TOL, rtol=FWD_TOL)
    # the plain bundle of the same networks records no flip averaging
    b0 = export_bundle(morph, length, tmp_path / "plain", {"name": "plain", "version": "t"})
    assert b0.card["forward"] == {"flip_average": False}


def test_exported_graphs_hold_no_machine_details(tiny):
    """No stack traces, absolute source paths or FX dumps of the exporting machine in the files."""
    import survey_bars

    src = str(pathlib.Path(survey_bars.__file__).resolve().parent).encode()
    for f in ("forward.onnx", "saliency.onnx"):
        raw = (tiny["bundle"].path / f).read_bytes()
        assert src not in raw and b"stack_trace" not in raw and b"fx_node" not in raw
