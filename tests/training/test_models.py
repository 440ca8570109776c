"""Networks, training helpers, and a training smoke test that produces a loadable bundle."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from survey_bars.inference.bundle import load_bundle  # noqa: E402
from survey_bars.normalise import NormaliseConfig
from survey_bars.training.data import cache_dir, load_labels, preprocess  # noqa: E402
from survey_bars.training.metrics import (  # noqa: E402
    expected_calibration_error,
    fit_temperature,
    roc_auc,
    roc_auc_interval,
)
from survey_bars.training.nets import (  # noqa: E402
    CLASS_NAMES,
    DEFAULT_ARCH,
    GRID16_ARCH,
    LENGTH_ARCH,
    SKIP_ARCH,
    LengthNet,
    MorphologyNet,
    forward_flops,
)
from survey_bars.training.train import _augment, _split  # noqa: E402

from ..conftest import galaxy_image, write_fits  # noqa: E402

TINY = {"stem": [8, 8, 4], "layers": [[8, 3, 1], [16, 3, 2]]}
TINY_EVIDENCE = {"body": [[8, 4, 2], [16, 3, 2]], "tail": [[16, 3, 2]]}


def test_default_architecture_is_small():
    mflop = forward_flops(DEFAULT_ARCH) / 1e6
    assert 10 <= mflop <= 60
    assert forward_flops(DEFAULT_ARCH, part="bar") < forward_flops(DEFAULT_ARCH)
    net = MorphologyNet()
    assert net.evidence_design
    assert sum(p.numel() for p in net.parameters()) < 200_000
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    assert net.bar_evidence(torch.zeros(2, 1, 64, 64)).shape == (2, 32, 32)
    assert MorphologyNet(GRID16_ARCH).bar_evidence(torch.zeros(2, 1, 64, 64)).shape == (2, 16, 16)


def test_flop_count_matches_torch():
    from torch.utils.flop_counter import FlopCounterMode

    net = MorphologyNet().eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, 1, 64, 64))
    assert fc.get_total_flops() == pytest.approx(forward_flops(DEFAULT_ARCH), rel=0.02)



def test_default_architecture_is_the_skip_design():
    assert SKIP_ARCH == {**GRID16_ARCH, "skip": {"after": 2, "fuse": [16, 1]}}
    assert DEFAULT_ARCH == {**SKIP_ARCH, "bar_context": True}


def test_bar_context_adds_to_the_evidence_logit_and_stays_out_of_the_saliency():
    """With ``bar_context`` the forward bar logit is the evidence logit plus a linear function of
    the pooled tail; it starts at zero, and ``bar_logit`` (whose gradient is the saliency) is the
    evidence alone."""
    torch.manual_seed(0)
    net = MorphologyNet(DEFAULT_ARCH).eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x)[:, 3], net.bar_logit(x), atol=1e-6)  # a new network: evidence alone
        net.bar_context.weight.normal_()
        net.bar_context.bias.fill_(0.5)
        z, e = net.outputs(x)
        t = net.tail(net._body(x)[0]).mean(dim=(2, 3))
        assert torch.allclose(z[:, 3], net.evidence_logit(e) + net.bar_context(t)[:, 0], atol=1e-5)
        assert torch.allclose(net.bar_logit(x), net.evidence_logit(e), atol=1e-6)
        assert not torch.allclose(z[:, 3], net.bar_logit(x), atol=1e-3)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net.bar_logit(xg).sum(), xg)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert MorphologyNet(SKIP_ARCH).bar_context is None
    assert forward_flops(DEFAULT_ARCH) - forward_flops(SKIP_ARCH) == 2 * 64  # one 64 -> 1 linear
    assert forward_flops(DEFAULT_ARCH, part="bar") == forward_flops(SKIP_ARCH, part="bar")


def test_skip_architecture_evidence_grid_and_flops():
    """A skip connection puts the evidence on the second body layer's 32 x 32 grid; the FLOP
    count includes the fuse convolution and matches torch's."""
    from torch.utils.flop_counter import FlopCounterMode

    net = MorphologyNet(SKIP_ARCH).eval()
    assert net.bar_evidence(torch.zeros(2, 1, 64, 64)).shape == (2, 32, 32)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, 1, 64, 64))
    flops = forward_flops(SKIP_ARCH)
    assert fc.get_total_flops() == pytest.approx(flops, rel=0.03)
    assert 1.0 < flops / forward_flops(GRID16_ARCH) < 1.1  # a 1 x 1 fuse of 16 channels costs ~5 %


def test_skip_from_the_input_frame_puts_the_evidence_on_the_pixel_grid():
    """``after: 0`` fuses the (1-channel) input frame: a 64 x 64 evidence map, whose factorised
    training form equals the concatenation, and whose FLOP count matches torch's."""
    from torch.utils.flop_counter import FlopCounterMode

    arch = {**GRID16_ARCH, "skip": {"after": 0, "fuse": [16, 1]}}
    torch.manual_seed(0)
    net = MorphologyNet(arch, batchnorm=False).eval()
    x = torch.randn(2, 1, 64, 64)
    e = net.bar_evidence(x)
    assert e.shape == (2, 64, 64)
    torch.testing.assert_close(net.bar_evidence(x, factorised=True), e, rtol=1e-5, atol=1e-5)
    f, low = net._body(x)
    assert low is x and f.shape[-1] == 16
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, 1, 64, 64))
    assert fc.get_total_flops() == pytest.approx(forward_flops(arch), rel=0.03)


@pytest.mark.parametrize("batchnorm", [True, False])
def test_skip_training_path_equals_the_exported_form(batchnorm):
    """In training mode a 1 x 1 fuse runs factorised (upsample after the convolution); it is
    the same function, with the same parameter gradients, as the concatenation that is exported."""
    torch.manual_seed(0)
    net = MorphologyNet(SKIP_ARCH, batchnorm=batchnorm)
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()  # fixed statistics, so both forms see the same normalisation
    x = torch.randn(3, 1, 64, 64)
    f, low = net._body(x)
    k = low.shape[-1] // f.shape[-1]
    cat_form = net.fuse(torch.cat([torch.nn.functional.interpolate(f, scale_factor=k), low], dim=1))
    fact_form = net._fuse_factorised(f, low, k)
    torch.testing.assert_close(fact_form, cat_form, rtol=1e-5, atol=1e-5)
    g_cat = torch.autograd.grad(cat_form.square().sum(), net.fuse[0].weight)[0]
    g_fact = torch.autograd.grad(fact_form.square().sum(), net.fuse[0].weight)[0]
    torch.testing.assert_close(g_fact, g_cat, rtol=1e-4, atol=1e-4)
    e_eval = net.bar_evidence(x)
    net.train()  # the factorised path, with batch norm kept on the same fixed statistics
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    calls, factorised = [], net._fuse_factorised
    net._fuse_factorised = lambda *a: calls.append(1) or factorised(*a)
    torch.testing.assert_close(net.bar_evidence(x), e_eval, rtol=1e-5, atol=1e-5)
    assert calls == [1]


def test_skip_upsampling_is_nearest():
    from survey_bars.training.nets import _upsample_nearest

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    torch.testing.assert_close(_upsample_nearest(x, 2), torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


@pytest.mark.parametrize("skip", [{"after": -1, "fuse": [8, 1]}, {"after": 5, "fuse": [8, 1]}, {"after": 2, "fuse": [8, 2]},
                                  {"after": 2, "fuse": [8]}, {"after": 2}, {"fuse": [8, 1]}])
def test_bad_skip_is_refused(skip):
    with pytest.raises(ValueError, match="'skip' needs"):
        MorphologyNet({**GRID16_ARCH, "skip": skip})


def test_bar_logit_pools_the_evidence():
    """The bar logit grows with the evidence and ignores cells without it."""
    torch.manual_seed(0)
    net = MorphologyNet().eval()
    e = torch.full((2, 16, 16), -8.0)
    e[1, 6:10, 4:12] = 3.0
    with torch.no_grad():
        z = net._pool_evidence(e)
    assert z[1] > z[0] + 3
    e2 = e.clone()
    e2[1, 0, 0] = -20.0  # a cell without evidence changes nothing
    with torch.no_grad():
        assert float(net._pool_evidence(e2)[1]) == pytest.approx(float(z[1]), abs=1e-4)


def test_bar_masks_geometry():
    from survey_bars.training.train import bar_masks

    m = bar_masks([32.0, 20.0, np.nan, np.nan], [0.0, 90.0, 0.0, np.nan], [1, 1, 0, 1], 64, 16)
    assert m.shape == (4, 16, 16) and m.dtype == np.float32
    # horizontal bar of 32 px: 8 cells long, centred, along x
    cols = np.nonzero(m[0].max(axis=0) > 0.5)[0]
    rows = np.nonzero(m[0].max(axis=1) > 0)[0]
    assert cols.min() == 4 and cols.max() == 11 and set(rows) <= {6, 7, 8, 9}
    assert m[0].sum() * 16 == pytest.approx(np.pi * 16 * (16 * 0.35), rel=0.05)  # the ellipse area
    assert m[1].max(axis=1).sum() > m[1].max(axis=0).sum()  # vertical
    np.testing.assert_array_equal(m[2], 0)  # unbarred: no evidence anywhere
    assert np.isnan(m[3]).all()  # barred without geometry: left out of the loss
    with pytest.raises(ValueError, match="multiple"):
        bar_masks([10.0], [0.0], [1], 64, 15)


def test_augment_moves_masks_with_images():
    rng = np.random.default_rng(3)
    x = torch.randn(16, 1, 8, 8)
    y, m = _augment(x, rng, x.clone())
    torch.testing.assert_close(y, m)


def test_output_shapes_and_probabilities():
    torch.manual_seed(0)
    net, reg = MorphologyNet(TINY).eval(), LengthNet(TINY).eval()
    x = torch.randn(5, 1, 64, 64)
    with torch.no_grad():
        z = net(x)
        p = net.probs(x)
        length = reg(x)
    assert z.shape == (5, 5) and p.shape == (5, len(CLASS_NAMES)) and length.shape == (5,)
    assert torch.all((p >= 0) & (p <= 1))
    torch.testing.assert_close(p[:, 0] + p[:, 1], torch.ones(5))
    assert torch.all(p[:, 2] <= p[:, 1] + 1e-6)  # edge-on discs are discs
    assert torch.all(length > 0)
    torch.testing.assert_close(net.bar_logit(x), z[:, 3])


def test_roc_auc_and_ece():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5], [0, 1]) == 0.5
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = rng.uniform(size=p.size) < p
    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(np.clip(p * 1.5, 0, 1), y) > 0.05


def test_roc_auc_interval_covers_the_true_auc():
    from scipy.stats import norm

    # Gaussian scores, positives shifted by d: the true AUC is Phi(d / sqrt(2))
    d = 1.5
    true = norm.cdf(d / np.sqrt(2))
    hits, widths = 0, []
    for k in range(40):
        rng = np.random.default_rng(k)
        y = rng.uniform(size=600) < 0.4
        s = rng.normal(size=600) + d * y
        lo, hi = roc_auc_interval(s, y, n_boot=300, seed=k)
        assert lo <= roc_auc(s, y) <= hi
        hits += lo <= true <= hi
        widths.append(hi - lo)
    assert hits >= 34  # 95 % intervals: 38 of 40 expected
    # four times the galaxies halve the width
    rng = np.random.default_rng(99)
    y = rng.uniform(size=2400) < 0.4
    s = rng.normal(size=2400) + d * y
    lo, hi = roc_auc_interval(s, y, n_boot=300)
    assert 0.35 < (hi - lo) / np.median(widths) < 0.7
    assert roc_auc_interval(s, y, n_boot=50, seed=3) == roc_auc_interval(s, y, n_boot=50, seed=3)
    assert np.isnan(roc_auc_interval([0.1, 0.2], [1, 1])).all()
    with pytest.raises(ValueError, match="level"):
        roc_auc_interval(s, y, level=95)


@pytest.mark.parametrize("kind", ["binary", "softmax"])
def test_fit_temperature_recovers_overconfidence(kind):
    rng = np.random.default_rng(1)
    n = 20_000
    if kind == "binary":
        z = rng.normal(0, 2, n)
        y = rng.uniform(size=n) < 1 / (1 + np.exp(-z))
        t = fit_temperature(3.0 * z, y, "binary")
    else:
        z = rng.normal(0, 1.5, (n, 3))
        pz = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        y = np.array([rng.choice(3, p=q) for q in pz])
        t = fit_temperature(3.0 * z, y, "softmax")
    assert t == pytest.approx(3.0, rel=0.1)


def test_augment_is_a_dihedral_transform():
    rng = np.random.default_rng(0)
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(8, 1, 1, 1)
    y = _augment(x, rng)
    for a, b in zip(x, y):
        variants = [torch.rot90(v, k, (1, 2)) for v in (a, torch.flip(a, (2,))) for k in range(4)]
        assert any(torch.equal(b, v) for v in variants)


def test_split_is_deterministic_and_disjoint():
    a = _split(100, 3, 0.15, 0.15)
    b = _split(100, 3, 0.15, 0.15)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    assert len(a[1]) == 15 and len(a[2]) == 15


def test_user_label_table_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_BARS_CACHE_DIR", str(tmp_path / "cache"))
    d = tmp_path / "fits"
    d.mkdir()
    rows = []
    for i in range(4):
        write_fits(d / f"g{i}.fits", galaxy_image(n=80, r50=6.0, bar_len=16.0 if i % 2 else None, seed=i), scale=0.25)
        rows.append({"file": f"g{i}.fits", "class": "disc" if i % 2 else "smooth", "has_bar": i % 2,
                     "bar_length_arcsec": 4.0 if i % 2 else np.nan})
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    lab = load_labels([d], str(tmp_path / "labels.csv"))
    assert lab["morph"].tolist() == [0, 2, 0, 2]
    assert lab["has_bar"].tolist() == [0, 1, 0, 1]
    assert np.isnan(lab["has_spiral"]).all()
    prep = preprocess(lab["path"], lab["pixel_scale_arcsec"], workers=1)
    assert prep["images"].shape == (4, 64, 64) and (prep["error"] == "").all()
    assert prep["pixel_scale"] == pytest.approx(0.25, rel=1e-3)
    cached = list(cache_dir().glob("prep-*.npz"))
    assert len(cached) == 1 and cache_dir() == tmp_path / "cache"
    assert not (d / ".survey-bars-cache").exists()  # the data directory is never written to
    lines = []
    again = preprocess(lab["path"], lab["pixel_scale_arcsec"], workers=1, log=lines.append)
    np.testing.assert_array_equal(again["images"], prep["images"])
    assert lines and "read from the cache" in lines[0]
    # the key is the files' contents: new modification times keep the cache, new pixels miss it
    for f in d.glob("*.fits"):
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**12))
    lines = []
    preprocess(lab["path"], lab["pixel_scale_arcsec"], workers=1, log=lines.append)
    assert lines and "read from the cache" in lines[0]
    write_fits(d / "g0.fits", galaxy_image(n=80, r50=6.0, seed=99), scale=0.25)
    lines = []
    changed = preprocess(lab["path"], lab["pixel_scale_arcsec"], workers=1, log=lines.append)
    assert not any("read from the cache" in m for m in lines)
    assert not np.array_equal(changed["images"][0], prep["images"][0])
    np.testing.assert_array_equal(changed["images"][1:], prep["images"][1:])
    write_fits(d / "g0.fits", galaxy_image(n=80, r50=6.0, seed=0), scale=0.25)  # back as it was
    for f in cache_dir().glob("prep-*.npz"):
        if f != cached[0]:
            f.unlink()
    # a cache an earlier version wrote next to the data is still read
    (d / ".survey-bars-cache").mkdir()
    cached[0].rename(d / ".survey-bars-cache" / cached[0].name)
    lines = []
    old = preprocess(lab["path"], lab["pixel_scale_arcsec"], workers=1, log=lines.append)
    np.testing.assert_array_equal(old["images"], prep["images"])
    assert lines and str(d / ".survey-bars-cache") in lines[0]
    # an unwritable cache directory costs the cache, not the run
    monkeypatch.setenv("SURVEY_BARS_CACHE_DIR", str(tmp_path / "labels.csv" / "sub"))
    lines = []
    fresh = preprocess(lab["path"][:2], lab["pixel_scale_arcsec"][:2], workers=1, log=lines.append)
    assert fresh["images"].shape == (2, 64, 64)
    assert any("not cached" in m and "SURVEY_BARS_CACHE_DIR" in m for m in lines)

    bad = pd.DataFrame([{"file": "g0.fits", "class": "blob"}])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="Unknown class labels"):
        load_labels([d], str(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="no truth.parquet"):
        load_labels([d])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``build_default`` end to end (simulate -> train -> export) on 24 galaxies, tiny net, 1 epoch.

    It builds with the options of the shipped bundle: display and small-stamp copies, visible lengths.
    """
    from survey_bars.training.build_default import build_default

    root = tmp_path_factory.mktemp("build")
    torch.set_num_threads(1)
    b = build_default(n=24, seed=11, workdir=str(root / "sims"), out=str(root / "bundle"), threads=1, epochs=1,
                      length_epochs=1, arch=TINY_EVIDENCE, length_arch=TINY, calibrate_n=12, evaluate_n=16, head_n=0,
                      display=True, small_stamps=True, length_def="visible", real_dev=None)
    return root, b


def test_build_default_training_table_mixes_the_real_training_folds(built, tmp_path):
    """With real-dev data the table holds the real training folds (never the test fold) beside the simulations."""
    import pandas as pd

    from survey_bars.training import realdata
    from survey_bars.training.build_default import _training_table

    from .test_realdata import _fake_root

    root, _ = built
    fake = _fake_root(tmp_path)
    path, mix = _training_table(str(root / "sims"), 11, 1, True, str(fake))
    t = pd.read_csv(path)
    assert "small_stamp" not in mix["sources"]
    assert mix["real"]["folds"] == list(realdata.TRAIN_FOLDS) and mix["real"]["split"] == realdata.SPLIT_ID
    real = t[t.source.isin(["gz1", "gz2"])]
    folds = {f: k for d in (realdata.load_gz2_bars(fake), realdata.load_gz1_morphology(fake)) for f, k in zip(d.file, d.fold)}
    assert len(real) > 0 and all(folds[f] != realdata.TEST_FOLD for f in real.file)
    assert (t.source == "simulation").sum() == 24 and (t.source == "display").sum() == 24


def test_build_default_training_table_scales_simulated_lengths_to_the_definition(built):
    """Simulated lengths (and those of their copies) are scaled to the bundle's definition; real ones are not."""
    import pandas as pd

    from survey_bars.inference.bundle import VISIBLE_BAR_FRACTION
    from survey_bars.training.build_default import _training_table

    root, _ = built
    sims = str(root / "sims")
    truth = pd.read_parquet(root / "sims" / "truth.parquet").set_index("file")["bar_length_arcsec"]
    f = pd.read_csv(_training_table(sims, 11, 1, False, None)[0])
    visible, mix = _training_table(sims, 11, 1, True, None, True, {"name": "visible", "fraction_of_formal": VISIBLE_BAR_FRACTION})
    v = pd.read_csv(visible)
    want = truth.to_numpy()
    np.testing.assert_allclose(f["bar_length_arcsec"].to_numpy(), want)
    for source in ("simulation", "small_stamp", "display", "small_stamp_display"):
        got = v.loc[v.source == source, "bar_length_arcsec"].to_numpy()
        np.testing.assert_allclose(got, want * VISIBLE_BAR_FRACTION, err_msg=source)
    assert v.loc[v.source == "small_stamp", "file"].str.contains("small-stamps").all()
    assert mix["small_stamps"]["seed"] == 12


def test_build_default_smoke(built):
    """The reproducible build command produces a loadable, consistent bundle."""
    root, b = built
    card = load_bundle(b.path).card
    assert card["name"] == "survey-bars-default" and card["training"]["seed"] == 11
    # the simulations, their small stamps, and the display copies of both
    assert card["training"]["data"]["n_files"] == 96
    assert card["training"]["sources"] == {"simulation": 24, "small_stamp": 24, "display": 24,
                                           "small_stamp_display": 24} and "real" not in card["training"]
    assert card["length_definition"]["name"] == "visible"
    assert card["training"]["simulation"]["n"] == 24
    assert "python -m survey_bars.training.build_default --n 24 --seed 11" in card["training"]["command"]
    assert card["training"]["command"].endswith("--display --small-stamps --real-dev none --length-definition visible")
    assert card["training"]["wall_time_s"] > 0
    # the end-to-end time spans the evaluation too (it ends the build)
    assert card["training"]["end_to_end_wall_time_s"] >= card["training"]["wall_time_s"] + card["evaluation"]["seconds"] - 0.2
    assert card["export_check"]["grad_rel_err"] <= 1e-3
    assert card["architecture"]["morphology"] == TINY_EVIDENCE and "bar_pooling" in card["architecture"]
    assert card["training"]["bar_mask_loss_weight"] == 1.0
    assert "bar_evidence_loss_weight" not in card["training"]  # no context term in this architecture
    cal = card["calibration"]["moments"]
    assert cal["measurement_version"] == 2 and cal["seed"] == 90210 and cal["n_simulated"] == 12
    assert "--calibrate-n 12 --head-n 0 --evaluate-n 16" in card["training"]["command"]
    assert "head" not in card["calibration"] and load_bundle(b.path).head_path is None  # --head-n 0 skips the head
    ev = card["evaluation"]
    assert ev["data"] == {"simulated": True, "n": 16, "seed": 4242, "survey": "mixed"} and ev["metrics"]["n"] == 16
    assert (root / "sims" / "evaluation-4242-16" / "truth.parquet").is_file()
    for key in ("bar_auc", "ece_bar", "ece_morph", "n_test"):
        assert key in card["metrics"]
    assert not (root / "sims" / ".survey-bars-cache").exists()  # the cache goes to cache_dir()
    assert not list(b.path.glob("*.pt")) and not list(b.path.glob("*.pkl"))


def test_build_default_networks_from_reuses_the_trained_networks(built, tmp_path):
    """``networks_from`` takes the networks of a bundle trained with the same settings and redoes what follows."""
    import hashlib

    from survey_bars.training.build_default import build_default

    root, b = built
    kw = dict(n=24, seed=11, workdir=str(root / "sims"), threads=1, epochs=1, length_epochs=1, calibrate_n=12,
              evaluate_n=0, head_n=0, display=True, small_stamps=True, length_def="visible", real_dev=None)
    again = build_default(out=str(tmp_path / "again"), networks_from=str(b.path), **kw)
    card, old = again.card, load_bundle(b.path).card
    for name in ("forward.onnx", "saliency.onnx"):
        assert hashlib.sha256((again.path / name).read_bytes()).hexdigest() == old["files"][name]
    assert card["version"] == "5.5" and card["training"]["command"].endswith(f"--networks-from {b.path}")
    reused = card["training"]["networks_reused_from"]
    assert reused["command"] == old["training"]["command"] and set(reused["files"]) == {"forward.onnx", "saliency.onnx"}
    assert card["calibration"]["moments"]["n_simulated"] == 12 and "evaluation" not in card  # redone, or skipped
    assert card["metrics"] == old["metrics"] and card["length_definition"]["name"] == "visible"
    # other network settings would train other networks: refused, naming the difference
    with pytest.raises(ValueError, match="epochs: 1 there, 2 here"):
        build_default(out=str(tmp_path / "other"), networks_from=str(b.path), **{**kw, "epochs": 2})
    with pytest.raises(ValueError, match="training sources"):
        build_default(out=str(tmp_path / "other"), networks_from=str(b.path), **{**kw, "small_stamps": False})
    # a recorded command with options this version does not know cannot be checked
    import shutil

    shutil.copytree(b.path, tmp_path / "odd")
    odd = json.loads((tmp_path / "odd" / "card.json").read_text())
    odd["training"]["command"] += " --no-such-option 3"
    (tmp_path / "odd" / "card.json").write_text(json.dumps(odd))
    with pytest.raises(ValueError, match="does not know"):
        build_default(out=str(tmp_path / "other"), networks_from=str(tmp_path / "odd"), **kw)


def test_train_cli_smoke(built, tmp_path, capsys):
    """``survey-bars train`` on the same simulations (cached frames), with a checkpoint."""
    from survey_bars.cli import main

    root, _ = built
    out = tmp_path / "bundle"
    rc = main(["train", "--data", str(root / "sims"), "--out", str(out), "--epochs", "1", "--length-epochs", "1",
               "--seed", "3", "--arch", json.dumps(TINY), "--batch-size", "16", "--checkpoint",
               str(tmp_path / "ck.pt"), "--name", "smoke", "--size", "48"])
    assert rc == 0
    card = load_bundle(out).card
    assert card["name"] == "smoke" and card["training"]["seed"] == 3
    assert card["training"]["command"].startswith("survey-bars train --data")
    assert card["preprocessing"]["size"] == 48 and card["input_shape"][-2:] == [48, 48]
    assert "--size 48" in card["training"]["command"]
    assert (tmp_path / "ck.pt").is_file()
    assert not list(out.glob("*.pt"))
    # with a fine-tuning stage on some sources of the label table, and a clear error without them
    labels = str(root / "sims" / "training_labels.csv")
    rc = main(["train", "--data", str(root / "sims"), "--labels", labels, "--out", str(tmp_path / "ft"), "--epochs", "1",
               "--length-epochs", "1", "--arch", json.dumps(TINY_EVIDENCE), "--length-arch", json.dumps(TINY),
               "--finetune-sources", "display", "--finetune-epochs", "1", "--finetune-others", "10",
               "--finetune-linear-copies", "1", "--checkpoint", str(tmp_path / "ft.pt")])
    assert rc == 0
    # its checkpoint holds the fine-tuned (batch-norm folded) network, and exports to the same forward graph
    assert main(["export", "--checkpoint", str(tmp_path / "ft.pt"), "--out", str(tmp_path / "ft-export")]) == 0
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(0.2, 0.4, (2, 1, 64, 64)).astype(np.float32)
    outs = [ort.InferenceSession(str(d / "forward.onnx")).run(None, {"image": x})[0]
            for d in (tmp_path / "ft", tmp_path / "ft-export")]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    card = load_bundle(tmp_path / "ft").card
    assert card["training"]["finetune"]["sources"] == ["display"] and card["training"]["finetune"]["others"] == 10
    assert "--finetune-sources display --finetune-epochs 1" in card["training"]["command"]
    # the display JPEGs also trained as linear copies, and the command says so
    linear = card["training"]["finetune"]["linear_copies"]
    assert linear["copies"] == 1 and linear["n_rows"] > 0
    assert card["training"]["command"].endswith("--finetune-linear-copies 1")
    rc = main(["train", "--data", str(root / "sims"), "--labels", labels, "--out", str(tmp_path / "ft2"), "--epochs", "1",
               "--length-epochs", "1", "--arch", json.dumps(TINY_EVIDENCE), "--length-arch", json.dumps(TINY),
               "--finetune-sources", "gz2"])
    assert rc == 2
    rc = main(["train", "--data", str(root / "sims"), "--labels", labels, "--out", str(tmp_path / "ft3"), "--epochs", "1",
               "--length-epochs", "1", "--arch", json.dumps(TINY_EVIDENCE), "--length-arch", json.dumps(TINY),
               "--finetune-sources", "display", "--finetune-linear-copies", "-1"])
    assert rc == 2 and "--finetune-linear-copies takes 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "ft3").exists()  # refused before any training
    rc = main(["train", "--data", str(root / "sims"), "--labels", labels, "--out", str(tmp_path / "ft4"), "--epochs", "1",
               "--finetune-linear-copies", "2"])
    assert rc == 2 and "goes with --finetune-sources" in capsys.readouterr().err
    assert not (tmp_path / "ft4").exists()


def test_train_cli_refuses_a_bad_frame_size(built, tmp_path, capsys):
    """``--size`` below the smallest frame is an error message, not a traceback."""
    from survey_bars.cli import main

    root, _ = built
    rc = main(["train", "--data", str(root / "sims"), "--out", str(tmp_path / "b"), "--epochs", "1", "--size", "8"])
    assert rc == 2
    assert "size must be an integer of at least 16" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_train_refuses_a_frame_the_network_cannot_take(built, tmp_path):
    """A frame size that breaks the skip connection's grids is refused before any preprocessing,
    naming the option and the size."""
    from survey_bars.training.train import train

    root, _ = built
    msgs = []
    arch = {**TINY_EVIDENCE, "skip": {"after": 1, "fuse": [8, 1]}}
    with pytest.raises(ValueError, match=r"--arch cannot take a 62-pixel frame \(--size\): The skip connection needs"):
        train([str(root / "sims")], tmp_path / "bundle", epochs=1, arch=arch, preprocessing=NormaliseConfig(size=62),
              log=msgs.append)
    assert msgs == [] and not (tmp_path / "bundle").exists()


def test_train_with_a_skip_architecture(built, tmp_path):
    """Training builds the bar masks on the skip connection's finer grid and exports it."""
    from survey_bars.training.train import train

    root, _ = built
    arch = {**TINY_EVIDENCE, "skip": {"after": 1, "fuse": [8, 1]}}
    msgs = []
    b = train([str(root / "sims")], tmp_path / "bundle", epochs=1, length_epochs=1, seed=5, arch=arch, batch_size=16,
              log=msgs.append)
    assert any("masks on a 32 x 32 grid" in m for m in msgs), msgs
    assert b.card["architecture"]["morphology"]["skip"] == {"after": 1, "fuse": [8, 1]}
    assert b.card["export_check"]["grad_rel_err"] <= 1e-3


def test_train_without_bar_geometry_skips_the_mask_loss(built, tmp_path):
    """A label table with bars but no bar PA: no bar can be drawn, so no mask loss (logged)."""
    import pandas as pd

    from survey_bars.training.train import train

    root, _ = built
    truth = pd.read_parquet(root / "sims" / "truth.parquet").drop(columns=["bar_pa_deg"])
    labels = tmp_path / "labels.csv"
    truth.to_csv(labels, index=False)
    msgs = []
    b = train([str(root / "sims")], tmp_path / "bundle", labels=str(labels), epochs=1, length_epochs=1, seed=5,
              arch=TINY_EVIDENCE, batch_size=16, log=msgs.append)
    assert any("without the bar-evidence mask loss" in m for m in msgs), msgs
    assert b.card["architecture"]["length"] == LENGTH_ARCH  # an evidence arch never serves the length CNN


@pytest.mark.parametrize("flips", [False, True])
def test_card_metrics_are_the_evaluate_scores_of_the_forward_graph(flips):
    """The training run's held-out metrics (the card's ``metrics``) are what ``survey-bars
    evaluate`` computes from the forward graph's outputs on the same galaxies, plus the
    torch-only extras (ECEs before temperature scaling, median bias, r in model pixels)."""
    import pandas as pd

    from survey_bars.training.evaluate import score_forward
    from survey_bars.training.export import ForwardGraph
    from survey_bars.training.train import _metrics

    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    net, reg = MorphologyNet(TINY_EVIDENCE).eval(), LengthNet(TINY).eval()
    with torch.no_grad():
        net.t_morph.fill_(1.3)
        net.t_bar.fill_(0.8)
        net.t_spiral.fill_(1.1)
    n = 60
    images = rng.normal(size=(n, 64, 64)).astype(np.float32)
    cls = rng.choice(["smooth", "edge_on", "disc", "barred"], size=n)
    lab = {"morph": np.array([{"smooth": 0, "edge_on": 1}.get(c, 2) for c in cls]),
           "has_bar": (cls == "barred").astype(float), "has_spiral": rng.integers(0, 2, n).astype(float),
           "class": cls}
    logl = np.where(cls == "barred", rng.uniform(1.5, 3.5, n), np.nan)
    scale = rng.uniform(0.1, 0.5, n)
    idx = np.arange(10, n)
    lidx = idx[np.isfinite(logl[idx])]
    m = _metrics(net, reg, images, lab, idx, lidx, logl, scale, flips=flips)

    with torch.no_grad():
        probs, _, length = (t.numpy() for t in ForwardGraph(net, reg, flips)(torch.as_tensor(images[idx][:, None])))
    labels = pd.DataFrame({"class": cls[idx], "morph": lab["morph"][idx], "has_bar": lab["has_bar"][idx],
                           "has_spiral": lab["has_spiral"][idx], "bar_length_arcsec": np.exp(logl[idx]) * scale[idx]})
    s = score_forward(probs, list(CLASS_NAMES), length, labels, scale[idx])
    assert m["n_test"] == s["n"] == len(idx) and m["n_test_discs"] == s["n_discs"]
    shared = sorted(set(m) & set(s))
    assert {"bar_auc", "bar_auc_discs", "bar_auc_discs_ci95", "morph_accuracy", "ece_bar",
            "direct_length_pearson_r", "direct_length_median_rel_err", "direct_length_rmse_arcsec"} <= set(shared)
    for k in shared:
        assert m[k] == pytest.approx(s[k], abs=2e-5), k
    for k in ("ece_morph_uncalibrated", "ece_bar_uncalibrated", "ece_spiral_uncalibrated", "ece_smooth",
              "ece_edge_on", "direct_length_pearson_r_model_px", "direct_length_median_bias"):
        assert k in m


def test_finetune_bundle_gives_what_train_with_finetune_gives(built, tmp_path):
    """The real fine-tuning stage: weights up the focus sources, and fine-tuning a bundle later gives the same bundle."""
    import hashlib

    from survey_bars.training.train import finetune_bundle, train

    root, _ = built
    sims, labels = root / "sims", str(root / "sims" / "training_labels.csv")
    kw = dict(labels=labels, epochs=1, length_epochs=1, seed=11, threads=1, arch=TINY_EVIDENCE, length_arch=TINY)
    ft = {"sources": ["display"], "epochs": 2, "repeat": 2, "others": 20, "lr": 1e-3}
    base = train([sims], str(tmp_path / "base"), **kw)
    lines = []
    full = train([sims], str(tmp_path / "full"), finetune=ft, log=lines.append, **kw)
    later = finetune_bundle(base.path, str(tmp_path / "later"), [sims], labels=labels, finetune=ft, seed=11, threads=1)
    rec = full.card["training"]["finetune"]
    n_display_train = rec["n_focus_train"]
    assert rec["sources"] == ["display"] and rec["epochs"] == 2 and rec["repeat"] == 2 and rec["others"] == 20
    assert 0 < n_display_train < 24  # the display copies of the training split only
    assert any(f"{n_display_train} focus rows x 2 and 20 of" in m for m in lines)
    # the same network either way, byte for byte, and the same card metrics
    sha = {k: {n: hashlib.sha256((b.path / n).read_bytes()).hexdigest() for n in ("forward.onnx", "saliency.onnx")}
           for k, b in (("base", base), ("full", full), ("later", later))}
    assert sha["full"] == sha["later"] and sha["full"]["forward.onnx"] != sha["base"]["forward.onnx"]
    assert later.card["metrics"] == full.card["metrics"]
    assert later.card["training"]["finetune"]["n_focus_train"] == n_display_train
    assert later.card["training"]["command"] == base.card["training"]["command"]
    # once is enough; and the focus must exist
    with pytest.raises(ValueError, match="already fine-tuned"):
        finetune_bundle(later.path, str(tmp_path / "twice"), [sims], labels=labels, finetune=ft, seed=11, threads=1)
    with pytest.raises(ValueError, match="have no training rows; the label table's sources are .*display"):
        train([sims], str(tmp_path / "none"), finetune={**ft, "sources": ["gz2"]}, **kw)
    with pytest.raises(ValueError, match="trained on other data"):
        finetune_bundle(base.path, str(tmp_path / "other"), [sims], labels=labels, finetune=ft, seed=11, threads=1,
                        val_frac=0.3)
    # the tail alone: the saliency graph stays the trained network's, byte for byte; the forward graph moves
    tail = finetune_bundle(base.path, str(tmp_path / "tail"), [sims], labels=labels, finetune={**ft, "part": "tail"},
                           seed=11, threads=1)
    assert tail.card["training"]["finetune"]["part"] == "tail" and full.card["training"]["finetune"]["part"] == "all"
    assert hashlib.sha256((tail.path / "saliency.onnx").read_bytes()).hexdigest() == sha["base"]["saliency.onnx"]
    assert hashlib.sha256((tail.path / "forward.onnx").read_bytes()).hexdigest() != sha["base"]["forward.onnx"]
    with pytest.raises(ValueError, match="part must be one of"):
        finetune_bundle(base.path, str(tmp_path / "bad"), [sims], labels=labels, finetune={**ft, "part": "body"},
                        seed=11, threads=1)
    # linear copies of the focus rows (colour display JPEGs here) train beside them: recorded, and they move the
    # network; the tail alone still leaves the saliency graph the trained network's
    lines = []
    lin = finetune_bundle(base.path, str(tmp_path / "linear"), [sims], labels=labels,
                          finetune={**ft, "part": "tail", "linear_copies": 2}, seed=11, threads=1, log=lines.append)
    rec = lin.card["training"]["finetune"]["linear_copies"]
    assert rec["copies"] == 2 and rec["n_rows"] == n_display_train and len(rec["q_range"]) == 2
    assert any(f"{2 * n_display_train} extra frames" in m for m in lines)
    assert hashlib.sha256((lin.path / "saliency.onnx").read_bytes()).hexdigest() == sha["base"]["saliency.onnx"]
    assert hashlib.sha256((lin.path / "forward.onnx").read_bytes()).hexdigest() != hashlib.sha256(
        (tail.path / "forward.onnx").read_bytes()).hexdigest()
    assert "linear_copies" not in tail.card["training"]["finetune"]


def test_real_finetune_benchmark_scores_the_builds_fine_tuning(built, tmp_path):
    """benchmarks.real_finetune fine-tunes as train(finetune=...) does and scores rows the training never saw."""
    from benchmarks import real_finetune
    from survey_bars.training.export import torch_from_bundle
    from survey_bars.training.train import bundle_training_data, train

    root, _ = built
    sims, labels = root / "sims", str(root / "sims" / "training_labels.csv")
    kw = dict(labels=labels, epochs=1, length_epochs=1, seed=11, threads=1, arch=TINY_EVIDENCE, length_arch=TINY)
    base = train([sims], str(tmp_path / "base"), **kw)
    v = real_finetune.parse_variant("2,20,2,1e-3")
    assert v == {"repeat": 2, "others": 20, "epochs": 2, "lr": 1e-3, "part": "all", "linear_copies": 0}
    assert real_finetune.parse_variant("2,20,2,1e-3,tail")["part"] == "tail"
    assert real_finetune.parse_variant("2,20,2,1e-3,tail,2")["linear_copies"] == 2
    res = real_finetune.run(str(base.path), str(sims), [v], seed=11, threads=1, sources=("display",))
    assert res["split"]["validation"] + res["split"]["test"] + res["split"]["train"] == 96
    assert res["base"]["test"]["gz2_bar"] is None and res["base"]["test"]["n"]["gz2"] == 0  # no real rows here
    full = train([sims], str(tmp_path / "full"), finetune={**v, "sources": ["display"]}, **kw)
    data, (_, va, te) = bundle_training_data(base, [sims], labels=labels, seed=11)
    net = torch_from_bundle(full)[0]
    assert res["variants"][0]["test"] == real_finetune.scores(net, data, te, ("display",))
    assert res["variants"][0]["validation"] == real_finetune.scores(net, data, va, ("display",))
    # the same rows as linear copies: the colour display rows change, the simulations' do not
    assert res["linear_rows"] > 0
    lin = res["base"]["test_linear"]
    assert lin["n"] == res["base"]["test"]["n"] and lin["sim_bar_discs"] == res["base"]["test"]["sim_bar_discs"]
    for bad in ("2,20", "2,20,2,1e-3,body", "2,20,2,1e-3,tail,-1", "2,20,2,1e-3,tail,2,3"):
        with pytest.raises(ValueError, match="repeat,others,epochs,lr"):
            real_finetune.parse_variant(bad)


def _real_dev_from_simulations(root, sims):
    """A real-dev directory whose 'sdss-gz2-bars' are the display JPEGs of simulated barred galaxies, their
    visible lengths standing in for the volunteers'."""
    import shutil

    import pandas as pd

    from survey_bars.inference.bundle import VISIBLE_BAR_FRACTION
    from survey_bars.training import realdata

    truth = pd.read_parquet(sims / "display" / "truth.parquet")
    gz2 = root / realdata.GZ2_DIR
    (gz2 / "images").mkdir(parents=True)
    for f in truth["file"]:
        shutil.copy(sims / "display" / f, gz2 / "images" / f)
    barred = truth["has_bar"].astype(bool)
    length = np.where(barred, truth["bar_length_arcsec"] * VISIBLE_BAR_FRACTION, np.nan)
    pd.DataFrame({
        "file": truth["file"], "ra": 10.0, "dec": 0.0, "pixel_scale": truth["pixel_scale_arcsec"], "z": np.nan,
        "gz2_bar_fraction": np.where(barred, 0.9, 0.0), "gz2_no_bar_fraction": np.where(barred, 0.1, 1.0),
        "hoyle_bar_length_arcsec": length, "hoyle_bar_length_kpc": np.nan, "hoyle_length_stdev_frac": 0.1, "objid": "",
    }).to_csv(gz2 / "labels.csv", index=False)
    return root


def test_calibrate_real_fits_scale_and_coverage_on_the_training_folds_only(built, tmp_path):
    """The real fit makes the training folds' median ratio 1 and their 1-sigma coverage 68 %, through the pipeline."""
    import shutil

    import pandas as pd

    from survey_bars.inference.runtime import ModelRuntime
    from survey_bars.io.inputs import InputItem
    from survey_bars.pipeline import RunOptions, process_items
    from survey_bars.training import realdata
    from survey_bars.training.calibrate import calibrate_real

    root, b = built
    bundle = tmp_path / "bundle"
    shutil.copytree(b.path, bundle)
    real = _real_dev_from_simulations(tmp_path / "real-dev", root / "sims")
    with pytest.raises(ValueError, match="test fold"):
        calibrate_real(str(bundle), real, folds=[0, realdata.TEST_FOLD], min_bars=1)
    with pytest.raises(ValueError, match="no simulation calibration for the 'profile'"):
        calibrate_real(str(bundle), real, method="profile", min_bars=1)
    before = load_bundle(bundle).card["calibration"]["moments"]
    rec = calibrate_real(str(bundle), real, method="moments", max_length_arcsec=1e3, min_bars=3)
    card = load_bundle(bundle).card
    assert card["calibration"]["moments"] == {**before, "real": rec}
    assert rec["folds"] == list(realdata.TRAIN_FOLDS) and rec["split"] == realdata.SPLIT_ID
    bars = realdata.select_folds(realdata.load_gz2_bars(real), realdata.TRAIN_FOLDS)
    bars = bars[np.isfinite(bars["hoyle_bar_length_arcsec"])]
    assert rec["n_bars"] == len(bars) >= 3
    # measured again with the recorded fit, the same bars have median ratio 1 and 68 % within 1 sigma
    items = [InputItem(file=f, pixel_scale=p) for f, p in zip(bars["file"], bars["pixel_scale"])]
    cat = process_items(items, RunOptions(method="moments", p_bar_min=0.0), runtime=ModelRuntime(load_bundle(bundle))).to_pandas()
    meas = pd.to_numeric(cat["bar_length_arcsec"]).to_numpy(float)
    err = pd.to_numeric(cat["bar_length_err_arcsec"]).to_numpy(float)
    true = bars["hoyle_bar_length_arcsec"].to_numpy(float)
    ok = np.isfinite(meas)
    assert ok.sum() == rec["n_measured"]
    assert np.median(true[ok] / meas[ok]) == pytest.approx(1.0, rel=1e-6)
    within = np.mean(np.abs(meas[ok] - true[ok]) <= err[ok] * (1 + 1e-9))
    assert within == pytest.approx(rec["within_1sigma"]) and abs(within - 0.683) <= 1.0 / ok.sum()


def test_measure_simulation_compares_with_the_bundles_length_definition(built):
    """Calibrations on simulations compare a 'visible' bundle's lengths with the simulator's truth x 0.541."""
    import pandas as pd

    from survey_bars.inference.bundle import VISIBLE_BAR_FRACTION
    from survey_bars.inference.runtime import ModelRuntime
    from survey_bars.training.calibrate import measure_simulation

    root, b = built
    truth = pd.read_parquet(root / "sims" / "truth.parquet")
    df = measure_simulation(str(root / "sims"), ModelRuntime(load_bundle(b.path)))
    np.testing.assert_allclose(df["true_bar_length_arcsec"], truth["bar_length_arcsec"] * VISIBLE_BAR_FRACTION)
    to_model = df["pixel_scale_arcsec"] * df["resample_scale"]
    np.testing.assert_allclose(df["true_length_model"], df["true_bar_length_arcsec"] / to_model)


def test_build_default_calibrations_from_takes_a_bundles_calibrations_and_head(built, tmp_path):
    """``calibrations_from`` copies the calibrations, the length head and the real fits of a bundle made with the
    same networks and settings, and refuses any other."""
    import hashlib
    import shutil

    from survey_bars.training.build_default import build_default
    from survey_bars.training.calibrate import calibrate_head

    root, b = built
    src = tmp_path / "src"
    shutil.copytree(b.path, src)
    calibrate_head(str(src), n=20, seed=5150, workdir=str(tmp_path / "head-sims"), epochs=1, threads=1,
                   holdout_frac=0.25, p_bar_min=0.0, log=lambda msg: None)
    made = load_bundle(src).card
    kw = dict(n=24, seed=11, workdir=str(root / "sims"), threads=1, epochs=1, length_epochs=1, calibrate_n=12,
              evaluate_n=0, head_n=20, display=True, small_stamps=True, length_def="visible", real_dev=None,
              head_stamp_copies=False, head_format_copies=False)
    again = build_default(out=str(tmp_path / "again"), networks_from=str(src), calibrations_from=str(src), **kw)
    card = again.card
    assert card["calibration"] == made["calibration"]
    assert hashlib.sha256((again.path / "length_head.onnx").read_bytes()).hexdigest() == made["files"]["length_head.onnx"]
    assert card["training"]["calibrations_reused_from"]["version"] == made["version"]
    assert card["training"]["command"].endswith(f"--networks-from {src} --calibrations-from {src}")
    # made by other settings, or with other networks: refused, naming the difference
    with pytest.raises(ValueError, match="head_n: 20 there, 40 here"):
        build_default(out=str(tmp_path / "other"), networks_from=str(src), calibrations_from=str(src), **{**kw, "head_n": 40})
    with pytest.raises(ValueError, match="head_stamp_copies: False there, True here"):
        build_default(out=str(tmp_path / "other"), networks_from=str(src), calibrations_from=str(src),
                      **{**kw, "head_stamp_copies": True})
    import onnx

    odd = tmp_path / "odd"
    shutil.copytree(src, odd)
    g = onnx.load(str(odd / "saliency.onnx"))
    g.doc_string = "another network"
    onnx.save(g, str(odd / "saliency.onnx"))
    from survey_bars.inference.bundle import write_card

    write_card(odd, json.loads((odd / "card.json").read_text()))
    with pytest.raises(ValueError, match="saliency.onnx differs"):
        build_default(out=str(tmp_path / "other"), networks_from=str(src), calibrations_from=str(odd), **kw)
    with pytest.raises(ValueError, match="head_real_linear_copies takes 0 or more copies"):
        build_default(out=str(tmp_path / "other"), head_real_linear_copies=-1, **kw)


def test_build_default_tail_finetuning_makes_the_saliency_steps_with_the_trained_network(built, tmp_path):
    """With ``real_finetune_part="tail"`` the calibrations and real fits are made before the fine-tuning, which then
    changes only the forward graph: they and the saliency graph are those of the same build without it."""
    import hashlib
    import shutil

    import pandas as pd

    from survey_bars.training import realdata
    from survey_bars.training.build_default import build_default
    from survey_bars.training.calibrate import calibrate_head

    from .test_real_lengths import fake_real_lengths_root

    root, _ = built
    fake = fake_real_lengths_root(tmp_path / "real-dev")
    gz1 = fake / realdata.GZ1_DIR / "images"  # and a few GZ1 galaxies: the GZ2 stamps, classified
    gz1.mkdir(parents=True)
    stamps = sorted((fake / realdata.GZ2_DIR / "images").iterdir())[:12]
    for i, f in enumerate(stamps):
        shutil.copyfile(f, gz1 / f"gz1_{i:05d}.jpeg")
    pd.DataFrame({"file": [f"gz1_{i:05d}.jpeg" for i in range(len(stamps))],
                  "sdss_dr7_objid": [str(100 + i) for i in range(len(stamps))],
                  "gz1_class": ["elliptical", "spiral_clockwise", "edge_on"] * (len(stamps) // 3)}).to_csv(
        fake / realdata.GZ1_DIR / "labels.csv", index=False)
    kw = dict(n=24, seed=11, workdir=str(root / "sims"), threads=1, epochs=1, length_epochs=1, arch=TINY_EVIDENCE,
              length_arch=TINY, calibrate_n=12, evaluate_n=0, head_n=0, display=True, small_stamps=True,
              length_def="visible", real_dev=str(fake))
    plain = build_default(out=str(tmp_path / "plain"), real_finetune_epochs=0, **kw)
    tail = build_default(out=str(tmp_path / "tail"), real_finetune_epochs=1, real_finetune_part="tail",
                         real_linear_copies=2, **kw)
    plain_calibration = plain.card["calibration"]

    def sha(b, name):
        return hashlib.sha256((b.path / name).read_bytes()).hexdigest()

    assert sha(tail, "saliency.onnx") == sha(plain, "saliency.onnx")
    assert sha(tail, "forward.onnx") != sha(plain, "forward.onnx")

    def timeless(d):
        return {k: timeless(v) if isinstance(v, dict) else v for k, v in d.items() if k != "seconds"}

    assert timeless(tail.card["calibration"]) == timeless(plain_calibration)
    assert "real" in tail.card["calibration"]["moments"]
    ft = tail.card["training"]["finetune"]
    assert ft["part"] == "tail" and "before this fine-tuning" in ft["saliency_steps"]
    # the real JPEGs' linear copies train beside them
    assert ft["linear_copies"]["copies"] == 2 and ft["linear_copies"]["n_rows"] == ft["n_focus_train"]
    assert "--real-linear-copies 2" in tail.card["training"]["command"]
    assert "--head-real-linear-copies" not in tail.card["training"]["command"]  # no head in this build
    assert tail.card["smoothgrad"] == plain.card["smoothgrad"]
    # the same from the bundle without the fine-tuning, its networks and calibrations (a length head added) reused:
    # the same bytes, and the head kept
    calibrate_head(str(plain.path), n=20, seed=5150, workdir=str(tmp_path / "head-sims"), epochs=1, threads=1,
                   holdout_frac=0.25, p_bar_min=0.0, log=lambda msg: None)
    plain = load_bundle(plain.path)
    kw.pop("arch"), kw.pop("length_arch")
    kw.update(head_n=20, head_stamp_copies=False, head_format_copies=False, head_real_lengths=False)
    again = build_default(out=str(tmp_path / "again"), real_finetune_epochs=1, real_finetune_part="tail",
                          networks_from=str(plain.path), calibrations_from=str(plain.path), real_linear_copies=2, **kw)
    for name in ("forward.onnx", "saliency.onnx"):
        assert sha(again, name) == sha(tail, name)
    assert again.card["calibration"] == plain.card["calibration"]
    assert again.card["files"]["length_head.onnx"] == plain.card["files"]["length_head.onnx"] == sha(again, "length_head.onnx")
    assert again.card["training"]["networks_reused_from"]["how"].endswith("tail then fine-tuned here")
    with pytest.raises(ValueError, match="already fine-tuned"):
        build_default(out=str(tmp_path / "other"), real_finetune_epochs=1, real_finetune_part="tail",
                      networks_from=str(tail.path), **kw)
