"""Small-stamp copies of the simulations: cut like survey service stamps, the bar kept, the truth kept."""

import numpy as np
import pandas as pd
import pytest

from survey_bars import simulate as sim
from survey_bars.io import read_cutout


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    out = tmp_path_factory.mktemp("sims")
    df = sim.simulate(out, 10, seed=11, class_mix={"barred": 1.0})
    return out, df


def test_copies_are_small_keep_the_bar_and_the_truth(sims, tmp_path):
    out, df = sims
    small = sim.small_stamp_copies(out, tmp_path / "small", seed=3)
    assert list(small.file) == list(df.file)
    assert small.drop(columns="stamp_size").equals(df.drop(columns="stamp_size"))
    assert pd.read_parquet(tmp_path / "small" / "truth.parquet").stamp_size.tolist() == small.stamp_size.tolist()
    for _, row in small.iterrows():
        big = read_cutout(out / row.file)
        cut = read_cutout(tmp_path / "small" / row.file)
        side = cut.data.shape[0]
        assert cut.data.shape == (side, side) and side == row.stamp_size
        assert side <= big.data.shape[0]
        half_r50 = 0.5 * side * row.pixel_scale_arcsec / row.r50_arcsec
        half_bar = 0.5 * row.bar_length_arcsec / row.pixel_scale_arcsec
        assert half_r50 >= 1.6 - 0.2 or side >= 32  # drawn in [1.6, 3.2] r50, or widened/clipped
        assert 0.5 * side >= half_bar + 1.0  # the bar is never cut
        # the same sky: the centre pixel's position agrees, and the pixel scale is kept
        assert cut.ra == pytest.approx(big.ra, abs=2 * row.pixel_scale_arcsec / 3600)
        assert cut.dec == pytest.approx(big.dec, abs=2 * row.pixel_scale_arcsec / 3600)
        assert cut.pixel_scale_arcsec == pytest.approx(big.pixel_scale_arcsec, rel=1e-6)
        assert cut.object_id == big.object_id
        c, cb = side // 2, big.data.shape[0] // 2  # the galaxy's core is still at the centre
        assert np.nanmax(cut.data[c - 2 : c + 3, c - 2 : c + 3]) == pytest.approx(
            np.nanmax(big.data[cb - 2 : cb + 3, cb - 2 : cb + 3]), rel=0.05)


def test_copies_are_seeded_per_galaxy_and_need_a_sane_range(sims, tmp_path):
    out, _ = sims
    a = sim.small_stamp_copies(out, tmp_path / "a", seed=5)
    b = sim.small_stamp_copies(out, tmp_path / "b", seed=5, workers=2)
    assert a.stamp_size.tolist() == b.stamp_size.tolist()
    with pytest.raises(ValueError, match="half_width"):
        sim.small_stamp_copies(out, tmp_path / "c", half_width=(3.0, 1.0))


def test_the_cli_draws_display_copies_from_the_small_stamps(tmp_path):
    from survey_bars.cli import main

    code = main(["simulate", "--out", str(tmp_path / "s"), "-n", "4", "--seed", "2",
                 "--small-stamp-copies", str(tmp_path / "small"), "--display-copies", str(tmp_path / "jpg")])
    assert code == 0
    small = pd.read_parquet(tmp_path / "small" / "truth.parquet")
    for f, side in zip(small.file, small.stamp_size):
        jpg = read_cutout(tmp_path / "jpg" / f.replace(".fits", ".jpg"), pixel_scale=0.262)
        assert jpg.data.shape == (side, side)


def test_finished_copies_are_reused_and_unfinished_ones_made_again(sims, tmp_path):
    out, _ = sims
    dst = tmp_path / "small"
    calls = []

    def make():
        calls.append(1)
        return sim.small_stamp_copies(out, dst, seed=3, workers=2)  # the process pool

    first = sim.finished_copies(out, dst, make)
    again = sim.finished_copies(out, dst, make)
    assert len(calls) == 1 and again.equals(first)
    pd.read_parquet(dst / "truth.parquet").iloc[:4].to_parquet(dst / "truth.parquet")  # an interrupted copy
    assert sim.finished_copies(out, dst, make).equals(first) and len(calls) == 2
    # the pool and this process cut the same stamps
    assert sim.small_stamp_copies(out, tmp_path / "one", seed=3, workers=1).equals(first)
