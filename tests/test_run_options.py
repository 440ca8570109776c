"""RunOptions check themselves when made; the CLI names the flag of a bad value."""

import pytest

from survey_bars import cli
from survey_bars.errors import OptionError
from survey_bars.pipeline import RunOptions


@pytest.mark.parametrize(
    "kw,option",
    [
        ({"p_bar_min": 1.5}, "p_bar_min"),
        ({"p_bar_min": float("nan")}, "p_bar_min"),
        ({"method": "isophote"}, "method"),
        ({"n_subsets": 0}, "n_subsets"),
        ({"threads": 0}, "threads"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"max_pixels": -1}, "max_pixels"),
        ({"smoothgrad_samples": 0}, "smoothgrad_samples"),
        ({"noise_frac": 0.0}, "noise_frac"),
        ({"pixel_scale": -0.2}, "pixel_scale"),
        ({"band": 1.5}, "band"),
        ({"cosmology": "NoSuchCosmo"}, "cosmology"),
        ({"length_frame": "wide"}, "length_frame"),
    ],
)
def test_bad_values_are_refused_with_the_option_named(kw, option):
    with pytest.raises(OptionError) as e:
        RunOptions(**kw)
    assert e.value.option == option and option in str(e.value)
    assert isinstance(e.value, ValueError)


def test_good_values_pass_and_replace_checks_again():
    import dataclasses

    o = RunOptions(p_bar_min=0.0, method="bhambra2022", band="r", pixel_scale=0.262, cosmology="WMAP9")
    assert o.to_dict()["method"] == "bhambra2022"
    with pytest.raises(OptionError):
        dataclasses.replace(o, p_bar_min=-0.1)


def test_the_cli_names_the_flag(tmp_path, capsys):
    code = cli.main(["process", "--input", str(tmp_path), "--out", str(tmp_path / "c.parquet"), "--p-bar-min", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--p-bar-min" in err and "[0, 1]" in err
    code = cli.main(["process", "--input", str(tmp_path), "--out", str(tmp_path / "c.parquet"), "--smoothgrad-noise", "-1"])
    assert code == 2 and "--smoothgrad-noise" in capsys.readouterr().err
