"""The command line: optional extras that are not installed."""

from __future__ import annotations

import sys

import pytest

from survey_bars import cli


@pytest.mark.parametrize("command", ["export", "train"])
def test_train_and_export_without_torch_say_what_to_install(command, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a worker-only install
    for mod in ("survey_bars.training.export", "survey_bars.training.train"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    args = {"export": ["export", "--help"], "train": ["train", "--data", "nowhere", "--out", "nowhere"]}[command]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # --help of a command whose module imported fine
        code = exc.code
    err = capsys.readouterr().err
    if command == "export":  # imports torch at module level: even --help needs it
        assert code == 2 and "survey-bars export: needs torch" in err and 'survey-bars[train]' in err
    else:  # imports torch when it trains
        assert code == 2 and "needs torch" in err and 'survey-bars[train]' in err


def test_a_missing_module_that_is_not_an_extra_is_a_real_error():
    assert cli.missing_extra_message("process", ModuleNotFoundError("no", name="numpy")) is None
    assert "survey-bars[qa]" in cli.missing_extra_message("inspect", ModuleNotFoundError("no", name="matplotlib.pyplot"))


@pytest.mark.cluster
def test_process_a_directory_of_jpegs_with_a_catalogue_of_pixel_scales(tmp_path, capsys):
    """The README's example: survey-bars process --input jpegs/ --catalogue cutouts.csv."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from survey_bars.flags import Flag
    from survey_bars.testing import galaxy_display

    d = tmp_path / "jpegs"
    d.mkdir()
    rows = []
    for i in range(3):
        Image.fromarray(galaxy_display(seed=i, colour=True)).save(d / f"gal_{i:04d}.jpeg", quality=90)
        rows.append({"file": f"jpegs/gal_{i:04d}.jpeg", "object_id": f"gal_{i:04d}", "ra": 150.0 + i, "dec": 2.0,
                     "pixel_scale": 0.3, "redshift": 0.05})
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    pd.DataFrame(rows).to_csv(tmp_path / "cutouts.csv", index=False)
    out = tmp_path / "catalogue.parquet"
    code = cli.main(["process", "--input", str(d), "--catalogue", str(tmp_path / "cutouts.csv"), "--out", str(out),
                     "--workers", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    cat = pd.read_parquet(out).set_index("object_id")
    assert sorted(cat.index) == ["broken", "gal_0000", "gal_0001", "gal_0002"]
    ok = cat.drop("broken")
    assert (ok.status == "ok").all() and (ok.band == "rgb-mean").all() and (ok.pixel_scale_arcsec == 0.3).all()
    assert ok.ra.tolist() == [150.0, 151.0, 152.0] and ok.snr.isna().all()
    assert ((ok.quality_flags.astype("int64") & int(Flag.DISPLAY_IMAGE)) != 0).all()
    assert cat.loc["broken", "status"] == "error" and cat.loc["broken", "error"].split(":")[0] in ("corrupt", "truncated")
    assert np.isfinite(ok.p_bar).all()
