import numpy as np
import pytest

from survey_bars.io import CutoutError, read_cutout
from survey_bars.flags import Flag

from ..conftest import galaxy_image, write_fits


def test_reads_wcs_scale_position_and_id(tmp_path):
    p = write_fits(tmp_path / "g.fits", galaxy_image(), scale=0.262, ra=150.1, dec=2.2, objid="G1", extra={"REDSHIFT": 0.05})
    c = read_cutout(p)
    assert c.object_id == "G1"
    assert c.pixel_scale_arcsec == pytest.approx(0.262, rel=1e-6)
    assert c.ra == pytest.approx(150.1, abs=1e-6) and c.dec == pytest.approx(2.2, abs=1e-6)
    assert c.redshift == pytest.approx(0.05)
    assert c.flags == 0 and c.data.dtype == np.float64


def test_object_id_falls_back_to_file_stem(tmp_path):
    p = write_fits(tmp_path / "my galaxy ü.fits", galaxy_image())
    assert read_cutout(p).object_id == "my galaxy ü"


def test_no_wcs_needs_pixel_scale(tmp_path):
    p = write_fits(tmp_path / "n.fits", galaxy_image(), wcs=False)
    with pytest.raises(CutoutError) as e:
        read_cutout(p)
    assert e.value.reason == "no_wcs" and "--pixel-scale" in e.value.message
    c = read_cutout(p, pixel_scale=0.4)
    assert c.pixel_scale_arcsec == 0.4
    assert c.flags & Flag.ASSUMED_PIXEL_SCALE and c.flags & Flag.NO_WCS


def test_absurd_wcs_is_no_wcs_without_warnings(tmp_path):
    """A CD matrix of 1e200 degrees per pixel overflows inside astropy: the file is treated
    as having no usable WCS, quietly (no RuntimeWarning reaches the user)."""
    import warnings

    p = write_fits(tmp_path / "huge.fits", galaxy_image(), extra={"CD1_1": -1e200, "CD2_2": 1e200})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CutoutError) as e:
            read_cutout(p)
        assert e.value.reason == "no_wcs"
        assert read_cutout(p, pixel_scale=0.3).flags & Flag.NO_WCS
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty_file"), (b"this is not a FITS file at all" * 200, "not_fits")],
)
def test_not_fits(tmp_path, content, reason):
    p = tmp_path / "bad.fits"
    p.write_bytes(content)
    with pytest.raises(CutoutError) as e:
        read_cutout(p)
    assert e.value.reason == reason


def test_truncated_file(tmp_path):
    p = write_fits(tmp_path / "t.fits", galaxy_image(n=128))
    raw = open(p, "rb").read()
    open(p, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(CutoutError) as e:
        read_cutout(p)
    assert e.value.reason in {"truncated", "corrupt", "not_fits"}


def test_cube_takes_first_plane(tmp_path):
    cube = np.stack([galaxy_image(), galaxy_image(seed=1)])
    p = write_fits(tmp_path / "c.fits", cube)
    c = read_cutout(p)
    assert c.data.shape == cube.shape[1:]
    assert c.flags & Flag.FIRST_PLANE_OF_CUBE


def test_too_large_refused_before_reading(tmp_path):
    p = write_fits(tmp_path / "big.fits", galaxy_image(n=128))
    with pytest.raises(CutoutError) as e:
        read_cutout(p, max_pixels=1000)
    assert e.value.reason == "too_large"


def test_all_nan_and_constant(tmp_path):
    with pytest.raises(CutoutError) as e:
        read_cutout(write_fits(tmp_path / "nan.fits", np.full((32, 32), np.nan, np.float32)))
    assert e.value.reason == "all_nan"
    with pytest.raises(CutoutError) as e:
        read_cutout(write_fits(tmp_path / "zero.fits", np.zeros((32, 32), np.float32)))
    assert e.value.reason == "constant_image"


def test_scaled_integer_and_big_endian(tmp_path):
    from astropy.io import fits

    img = galaxy_image()
    hdu = fits.PrimaryHDU(img.astype(">f4"))
    hdu.scale("int16", bscale=0.001, bzero=10.0)
    p = tmp_path / "int.fits"
    hdu.writeto(p)
    c = read_cutout(p, pixel_scale=0.2)
    assert np.allclose(c.data, img, atol=0.002)


def test_real_sip_headers(real_dir):
    for f in sorted(real_dir.glob("*.fits")):
        c = read_cutout(f)
        assert c.flags == 0
        assert c.pixel_scale_arcsec in (pytest.approx(0.75, rel=1e-3), pytest.approx(0.6, rel=1e-3))
        assert 180 < c.ra < 200 and 0 < c.dec < 20
