"""Multi-band FITS: cubes and one extension per band, --band, MASK and VARIANCE extensions."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from survey_bars.io import CutoutError, read_cutout
from survey_bars.io.fits import DEFAULT_BANDS, select_band
from survey_bars.flags import Flag
from survey_bars.normalise import normalise
from survey_bars.testing import _tan_wcs

from ..conftest import galaxy_image

N = 64


def _bands(k):
    """k different, distinguishable images: band j is the galaxy times (j + 1)."""
    g = galaxy_image(n=N, seed=4)
    return [g * (j + 1) for j in range(k)]


def _legacy_cube(path, bands="grz", ivar=False, keyword="BANDS"):
    """A Legacy-Survey-like cube (bands x y x x), optionally with an inverse-variance cube."""
    data = np.stack(_bands(len(bands))).astype(np.float32)
    hdr = fits.Header(_tan_wcs((N, N)))
    if keyword == "BANDS":
        hdr["BANDS"] = bands
    elif keyword == "BANDn":
        for k, b in enumerate(bands):
            hdr[f"BAND{k}"] = b
    hdus = [fits.PrimaryHDU(data, header=hdr)]
    if ivar:
        iv = np.full(data.shape, 1.0 / 0.02**2, np.float32)
        iv[:, :3, :] = 0.0  # no coverage along the bottom rows
        hdus.append(fits.ImageHDU(iv, header=fits.Header(_tan_wcs((N, N))), name="INVVAR"))
    fits.HDUList(hdus).writeto(path)
    return path


def _hsc_file(path, *, mask=None, variance=0.02**2, filt="HSC-I"):
    """An HSC-like file: empty primary with FILTER, then IMAGE, MASK (with MP_ planes), VARIANCE."""
    g = galaxy_image(n=N, seed=5).astype(np.float32)
    prim = fits.PrimaryHDU()
    prim.header["FILTER"] = filt
    prim.header["OBJID"] = "hsc-object"
    img = fits.ImageHDU(g, header=fits.Header(_tan_wcs((N, N), scale=0.168)), name="IMAGE")
    m = np.zeros((N, N), np.int32) if mask is None else mask
    mh = fits.Header([("MP_BAD", 0), ("MP_SAT", 1), ("HIERARCH MP_DETECTED", 5), ("MP_EDGE", 4)])
    msk = fits.ImageHDU(m, header=mh, name="MASK")
    var = fits.ImageHDU(np.full((N, N), variance, np.float32), name="VARIANCE")
    fits.HDUList([prim, img, msk, var]).writeto(path)
    return path


def test_cube_defaults_to_r_and_band_picks_others(tmp_path):
    p = _legacy_cube(tmp_path / "ls.fits")
    ref = _bands(3)
    cut = read_cutout(p)
    assert cut.band == "r" and not cut.flags & Flag.FIRST_PLANE_OF_CUBE
    np.testing.assert_allclose(cut.data, ref[1], rtol=1e-6)
    assert cut.pixel_scale_arcsec == pytest.approx(0.262)
    for band, k in (("g", 0), ("Z", 2), ("2", 2), (0, 0)):
        np.testing.assert_allclose(read_cutout(p, band=band).data, ref[k], rtol=1e-6)


def test_cube_band_keywords(tmp_path):
    p = _legacy_cube(tmp_path / "ls.fits", bands="gri", keyword="BANDn")
    assert read_cutout(p).band == "r"
    assert read_cutout(p, band="i").band == "i"


def test_unnamed_cube_uses_its_first_plane_and_says_so(tmp_path):
    p = _legacy_cube(tmp_path / "cube.fits", bands="abc", keyword=None)
    cut = read_cutout(p)
    assert cut.band == "#0" and cut.flags & Flag.FIRST_PLANE_OF_CUBE
    cut = read_cutout(p, band=1)  # an explicit index is a choice: no flag
    assert cut.band == "#1" and not cut.flags & Flag.FIRST_PLANE_OF_CUBE


def test_unknown_band_is_an_error_that_lists_the_bands(tmp_path):
    p = _legacy_cube(tmp_path / "ls.fits")
    with pytest.raises(CutoutError) as exc:
        read_cutout(p, band="y")
    assert exc.value.reason == "band_not_found"
    assert "g, r, z" in exc.value.message and "--band" in exc.value.message
    with pytest.raises(CutoutError) as exc:
        read_cutout(p, band=7)
    assert exc.value.reason == "band_not_found"


def test_ivar_cube_gives_noise_and_masks_uncovered_pixels(tmp_path):
    p = _legacy_cube(tmp_path / "ls.fits", ivar=True)
    cut = read_cutout(p, band="z")
    assert cut.variance is not None
    np.testing.assert_allclose(cut.variance[10:], 0.02**2, rtol=1e-5)
    assert np.isnan(cut.data[:3]).all() and np.isfinite(cut.data[3:]).all()


def test_hsc_file_mask_planes_and_variance(tmp_path):
    mask = np.zeros((N, N), np.int32)
    mask[20:44, 20:44] |= 1 << 5  # DETECTED over the galaxy: informational, not bad
    mask[0:2, :] |= 1 << 0  # BAD rows
    mask[5, 5] |= 1 << 1  # one SATurated pixel
    p = _hsc_file(tmp_path / "hsc.fits", mask=mask)
    cut = read_cutout(p)
    assert cut.band == "HSC-I" and cut.object_id == "hsc-object"
    assert cut.pixel_scale_arcsec == pytest.approx(0.168)
    bad = np.isnan(cut.data)
    assert bad[0:2].all() and bad[5, 5] and bad.sum() == 2 * N + 1
    np.testing.assert_allclose(cut.variance, 0.02**2, rtol=1e-5)
    assert any("MASK" in n for n in cut.notes) and any("VARIANCE" in n for n in cut.notes)


def test_variance_sets_the_snr(tmp_path):
    """Four times the variance halves the S/N; without a variance the border noise is used."""
    s1 = normalise(read_cutout(_hsc_file(tmp_path / "a.fits")).data, variance=read_cutout(tmp_path / "a.fits").variance).snr
    cut4 = read_cutout(_hsc_file(tmp_path / "b.fits", variance=4 * 0.02**2))
    s4 = normalise(cut4.data, variance=cut4.variance).snr
    assert s1 / s4 == pytest.approx(2.0, rel=1e-6)
    s0 = normalise(cut4.data).snr
    assert s0 == pytest.approx(s1, rel=0.35)  # the file's noise is the image's true noise


def test_mask_without_planes_masks_every_nonzero_pixel(tmp_path):
    g = galaxy_image(n=N, seed=6)
    m = np.zeros((N, N), np.uint8)
    m[:, :4] = 1
    fits.HDUList([fits.PrimaryHDU(g, header=fits.Header(_tan_wcs((N, N)))), fits.ImageHDU(m, name="MASK")]).writeto(tmp_path / "m.fits")
    cut = read_cutout(tmp_path / "m.fits")
    assert np.isnan(cut.data[:, :4]).all() and np.isfinite(cut.data[:, 4:]).all()


def test_one_extension_per_band_with_band_masks(tmp_path):
    g = _bands(3)
    hdus = [fits.PrimaryHDU()]
    for name, img in zip("GRI", g):
        hdus.append(fits.ImageHDU(img, header=fits.Header(_tan_wcs((N, N))), name=name))
    for name in "GRI":
        m = np.zeros((N, N), np.uint8)
        m[{"G": 1, "R": 2, "I": 3}[name], :] = 1  # a different masked row per band
        hdus.append(fits.ImageHDU(m, name=f"MASK_{name}"))
    fits.HDUList(hdus).writeto(tmp_path / "mef.fits")
    cut = read_cutout(tmp_path / "mef.fits")
    assert cut.band == "R"
    np.testing.assert_allclose(cut.data[3:], g[1][3:])
    assert np.isnan(cut.data[2]).all() and np.isfinite(cut.data[1]).all()
    cut = read_cutout(tmp_path / "mef.fits", band="i")
    assert cut.band == "I" and np.isnan(cut.data[3]).all() and np.isfinite(cut.data[2]).all()


def test_single_band_file_records_its_filter(tmp_path):
    from survey_bars.testing import write_cutout

    p = write_cutout(tmp_path / "one.fits", galaxy_image(n=N), extra={"FILTER": "r"})
    assert read_cutout(p).band == "r"
    assert read_cutout(p, band="g").band == "r"  # one band: --band does not apply
    p = write_cutout(tmp_path / "plain.fits", galaxy_image(n=N))
    assert read_cutout(p).band is None


def test_everything_masked_is_an_error(tmp_path):
    g = galaxy_image(n=N, seed=7)
    fits.HDUList([fits.PrimaryHDU(g, header=fits.Header(_tan_wcs((N, N)))),
                  fits.ImageHDU(np.ones((N, N), np.uint8), name="MASK")]).writeto(tmp_path / "all.fits")
    with pytest.raises(CutoutError) as exc:
        read_cutout(tmp_path / "all.fits")
    assert exc.value.reason == "all_nan" and "MASK" in exc.value.message


@pytest.mark.parametrize(
    "names, band, expect",
    [
        (["g", "r", "z"], None, 1),
        (["HSC-G", "HSC-R", "HSC-I"], None, 2),
        (["VIS", "NIR_Y", "NIR_J"], None, 0),
        (["u", "g", "r", "i", "z", "y"], None, 2),
        (["HSC-G", "HSC-R"], None, 1),  # no HSC-I: r by its part
        ([None, None], None, 0),
        (["HSC-G", "HSC-R", "HSC-I"], "r", 1),
        (["HSC-G", "HSC-R", "HSC-I"], "hsc-g", 0),
        (["NIR_Y", "NIR_J"], "j", 1),
    ],
)
def test_select_band(names, band, expect):
    assert select_band(names, band)[0] == expect


def test_select_band_ambiguous_part_is_an_error():
    with pytest.raises(CutoutError, match="several bands"):
        select_band(["HSC-R", "DECAM-R"], "r")


def test_defaults_are_documented():
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "--band" in readme
    for b in DEFAULT_BANDS:
        assert f"`{b}`" in readme
