"""Shared fixtures: small synthetic FITS cutouts written in the test's tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from survey_bars import testing as _testing

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


# the synthetic galaxy and FITS writer live in survey_bars.testing (shared with the bad-input
# corpus and the reliability benchmark)
galaxy_image = _testing.galaxy_image
write_fits = _testing.write_cutout


@pytest.fixture
def real_dir():
    """The shared real Spitzer images; the test is skipped when they are absent."""
    if not REAL_DIR.is_dir() or not list(REAL_DIR.glob("*.fits")):
        pytest.skip(f"real images not found in {REAL_DIR}")
    return REAL_DIR
