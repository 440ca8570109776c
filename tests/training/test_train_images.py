"""Training on labelled JPEG and PNG cutouts (``survey-bars train --data DIR --labels TABLE``).

Twelve small galaxies are written as colour JPEGs and greyscale (8- and 16-bit) PNGs, top row
first as cutout services write them, with a label table whose pixel-scale column is named
``pixel_scale`` and left empty for some images: those still give morphology training samples,
and their bar lengths (in arcsec) are left out of the length loss.
"""

from __future__ import annotations

import numpy as np
import pytest

from survey_bars.training import data as tr
from survey_bars.training.train import train

from ..conftest import galaxy_image, write_fits

TINY = {"stem": [8, 8, 4], "layers": [[8, 3, 1], [16, 3, 2]]}
TINY_EVIDENCE = {"body": [[8, 4, 2], [16, 3, 2]], "tail": [[16, 3, 2]]}
N = 48  # stamp side in pixels
SCALE = 0.4  # arcsec / pixel of the images that have a scale


def _edge_on(n, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(float)
    c = (n - 1) / 2.0
    img = np.exp(-np.hypot(x - c, (y - c) / 0.2) / 4.0)
    return (100 * img / img.sum() + 0.02 * rng.standard_normal(img.shape)).astype(np.float32)


def _display(img, bits=8):
    """A display stretch of a float image (FITS orientation) into image rows, top row first."""
    img = np.asarray(img, dtype=float)
    top = 255 if bits == 8 else 65535
    v = np.clip(top * np.arcsinh(img / 0.05) / np.arcsinh(img.max() / 0.05), 0, top)
    return v.astype(np.uint8 if bits == 8 else np.uint16)[::-1]


def _write(path, img, kind):
    from PIL import Image

    if kind == "jpeg":  # colour: a redder bulge would do too; the network sees the channel mean
        u8 = _display(img)
        Image.fromarray(np.stack([u8, (0.8 * u8).astype(np.uint8), (0.6 * u8).astype(np.uint8)], axis=-1)).save(path, quality=92)
    elif kind == "png16":
        Image.fromarray(_display(img, 16)).save(path)
    else:
        Image.fromarray(_display(img)).save(path)


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    """12 labelled images and their label table (CSV): 3 of each class, the last 4 without a scale."""
    import pandas as pd

    root = tmp_path_factory.mktemp("train-images")
    data = root / "cutouts"
    data.mkdir()
    rows = []
    kinds = ("jpeg", "png", "png16")
    for i in range(12):
        cls = ("smooth", "edge_on", "disc", "barred")[i % 4]
        bar_len = 14.0 if cls == "barred" else None
        img = _edge_on(N, i) if cls == "edge_on" else galaxy_image(n=N, r50=5.0, bar_len=bar_len, bar_pa_deg=30.0, seed=i)
        kind = kinds[i % 3]
        name = f"g{i:02d}.{'jpg' if kind == 'jpeg' else 'png'}"
        _write(data / name, img, kind)
        scaled = i < 8  # barred: g03 and g07 with a scale, g11 without
        rows.append({
            "file": name,
            "class": cls,
            "has_bar": int(cls == "barred"),
            "pixel_scale": SCALE if scaled else np.nan,
            "bar_length_arcsec": bar_len * SCALE if bar_len else np.nan,
            # pixel angle 30 deg from +x, north up and east left: PA 300 = 120 (mod 180)
            "bar_pa_deg": 120.0 if bar_len else np.nan,
        })
    labels = root / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return data, labels, pd.DataFrame(rows)


def test_load_labels_of_images(image_set):
    data, labels, table = image_set
    lab = tr.load_labels([data], str(labels))
    assert len(lab) == 12
    assert lab["path"].tolist() == [str(data / f) for f in table["file"]]
    assert lab["morph"].tolist() == [tr.CLASS_MAP[c] for c in table["class"]]
    assert lab["has_bar"].tolist() == table["has_bar"].astype(float).tolist()
    # the scale column may be named pixel_scale: known for the first eight, NaN for the others
    np.testing.assert_allclose(lab["pixel_scale_arcsec"][:8], SCALE)
    assert np.isnan(lab["pixel_scale_arcsec"][8:]).all()
    assert np.isfinite(lab["bar_length_arcsec"]).sum() == 3


def test_pixel_scale_column_names(tmp_path):
    """``pixel_scale_arcsec`` wins where both are given; ``pixel_scale`` fills its gaps; a
    non-positive scale is unknown."""
    import pandas as pd

    for i in range(4):
        write_fits(tmp_path / f"f{i}.fits", galaxy_image(n=32, r50=4.0, seed=i))
    pd.DataFrame({"file": [f"f{i}.fits" for i in range(4)], "class": "smooth",
                  "pixel_scale_arcsec": [0.2, np.nan, np.nan, -1.0],
                  "pixel_scale": [0.3, 0.5, np.nan, np.nan]}).to_csv(tmp_path / "both.csv", index=False)
    lab = tr.load_labels([tmp_path], str(tmp_path / "both.csv"))
    np.testing.assert_array_equal(lab["pixel_scale_arcsec"].to_numpy(), [0.2, 0.5, np.nan, np.nan])


def test_preprocess_images(image_set):
    data, labels, table = image_set
    lab = tr.load_labels([data], str(labels))
    prep = tr.preprocess(lab["path"], lab["pixel_scale_arcsec"], workers=1, cache=False, log=lambda m: None)
    assert (prep["error"] == "").all(), prep["error"]
    assert prep["images"].shape == (12, 64, 64) and np.isfinite(prep["images"]).all()
    assert (prep["images"].reshape(12, -1).std(axis=1) > 0.05).all()
    assert (prep["scale"] > 0).all()
    # images with a scale: that scale and the north-up, east-left matrix; without: NaN
    np.testing.assert_allclose(prep["pixel_scale"][:8], SCALE)
    np.testing.assert_allclose(prep["cd"][:8], np.tile([-SCALE / 3600, 0, 0, SCALE / 3600], (8, 1)))
    assert np.isnan(prep["pixel_scale"][8:]).all() and np.isnan(prep["cd"][8:]).all()
    # the labelled PA is the drawn bar's angle in the frame
    from survey_bars.geometry import pixel_angle

    assert pixel_angle(120.0, prep["cd"][3]) == pytest.approx(30.0)
    assert pixel_angle(120.0, prep["cd"][11]) == pytest.approx(30.0)  # no scale: north up, east left assumed


def test_code_digest_covers_the_image_reader(monkeypatch, tmp_path):
    """A change to io/image.py (how JPEG/PNG are read) invalidates the preprocessing cache."""
    from survey_bars.io import image as images

    before = tr._code_digest()
    changed = tmp_path / "images.py"
    changed.write_bytes(open(images.__file__, "rb").read() + b"\n# changed\n")
    monkeypatch.setattr(images, "__file__", str(changed))
    assert tr._code_digest() != before


@pytest.mark.parametrize("context", [False, True])
def test_train_on_images(image_set, tmp_path, context):
    """One epoch on the twelve images writes a loadable bundle; the images without a scale
    are used, and only the barred images with a scale give bar lengths. With the bar logit's
    context term the card records the evidence logit's own bar loss."""
    torch = pytest.importorskip("torch")
    from survey_bars.inference.bundle import load_bundle

    data, labels, _ = image_set
    torch.set_num_threads(1)
    msgs = []
    b = train([str(data)], tmp_path / "bundle", labels=str(labels), epochs=1, length_epochs=1, seed=2,
                 arch={**TINY_EVIDENCE, "bar_context": True} if context else TINY_EVIDENCE, length_arch=TINY,
                 batch_size=16, cache=False, flips=False, log=msgs.append)
    card = load_bundle(b.path).card
    assert card["architecture"]["morphology"].get("bar_context", False) is context
    assert ("bar_evidence_loss_weight" in card["training"]) is context
    d = card["training"]["data"]
    assert d["n_files"] == 12 and d["n_used"] == 12
    assert d["classes"] == {"barred": 3, "disc": 3, "edge_on": 3, "smooth": 3}
    assert d["n_barred_with_length"] == 2  # g03 and g07; g11 has no scale, so no length in model pixels
    assert any("4 files have no pixel scale" in m for m in msgs), msgs
    assert card["export_check"]["grad_rel_err"] <= 1e-3


def test_boolean_labels_written_as_text_are_read(tmp_path):
    """A labels CSV of True/False (as pandas writes booleans) must not turn into unknown labels."""
    import pandas as pd

    from survey_bars.training.data import load_labels
    from survey_bars.testing import galaxy_image, write_cutout

    for i in range(4):
        write_cutout(tmp_path / f"g{i}.fits", galaxy_image(n=32, seed=i))
    pd.DataFrame({"file": [f"g{i}.fits" for i in range(4)], "class": ["disc"] * 4,
                  "has_bar": [True, False, "yes", None], "has_spiral": ["false", "TRUE", 1, 0]}).to_csv(tmp_path / "l.csv", index=False)
    df = load_labels([str(tmp_path)], str(tmp_path / "l.csv"))
    assert df.has_bar.tolist()[:3] == [1.0, 0.0, 1.0] and np.isnan(df.has_bar.iloc[3])
    assert df.has_spiral.tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("pa", [0.0, 30.0, 75.0, 120.0, 160.0])
def test_inner_angle_finds_the_bar_of_a_frame(pa):
    """The angle of a bar whose length is known but not its PA (volunteer lengths), from the frame's inner light."""
    from survey_bars.training.train import inner_angle
    from survey_bars.normalise import normalise
    from survey_bars.testing import galaxy_image

    norm = normalise(galaxy_image(n=96, r50=8, bar_len=30, bar_pa_deg=pa, seed=1, noise=0.005))
    got = float(inner_angle(norm.image[None], [30 / norm.scale])[0])
    assert min(abs(got - pa), 180 - abs(got - pa)) < 5.0, got
    assert np.isnan(inner_angle(np.zeros((1, 16, 16)), [8.0])[0])
