"""Shared fixtures: small synthetic FITS cutouts written in the test's tmp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from survey_bars import testing as _testing

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


# the synthetic galaxy and FITS writer live in survey_bars.testing (shared with the bad-input
# corpus and the reliability benchmark)
galaxy_image = _testing.galaxy_image
write_fits = _testing.write_cutout


@pytest.fixture(autouse=True, scope="session")
def _preprocessing_cache(tmp_path_factory):
    """The training preprocessing cache goes to a temporary directory, not the user's ~/.cache."""
    old = os.environ.get("SURVEY_BARS_CACHE_DIR")
    os.environ["SURVEY_BARS_CACHE_DIR"] = str(tmp_path_factory.mktemp("survey-bars-cache"))
    yield
    if old is None:
        os.environ.pop("SURVEY_BARS_CACHE_DIR", None)
    else:
        os.environ["SURVEY_BARS_CACHE_DIR"] = old


@pytest.fixture
def real_dir():
    """The shared real Spitzer images; the test is skipped when they are absent."""
    if not REAL_DIR.is_dir() or not list(REAL_DIR.glob("*.fits")):
        pytest.skip(f"real images not found in {REAL_DIR}")
    return REAL_DIR
