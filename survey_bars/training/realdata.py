"""The real labelled galaxies of ``../shared/data/real-dev``, and their fixed cross-validation split.

Two sets (see the README beside the data; nothing here is copied into the repository):

* ``sdss-gz2-bars``: 4238 SDSS gri JPEG stamps (64 x 64 at 0.3 arcsec per pixel), half of them
  barred by Galaxy Zoo 2 (bar vote fraction >= 0.8), half unbarred (fraction 0); 576 of the
  barred ones have a volunteer bar length from Hoyle et al. (2011). :func:`load_gz2_bars`.
* ``sdss-gz1-morphology``: 5363 SDSS colour JPEGs (423 x 423, pixel scale unknown) with a clear
  Galaxy Zoo 1 class. :func:`load_gz1_morphology`.

The split
---------
Every galaxy gets a **split key**: its SDSS objid (the decimal digits, as in the labels file)
when the labels give one, else the image's file name (e.g. ``sdss_00001.jpeg``). Its fold is::

    int.from_bytes(sha256(key.encode("utf-8")).digest()[:8], "big") % 5

(:func:`fold_of`). The split depends on nothing but the key: not on the order of the rows, on
which other galaxies are present, or on a random seed, so it is the same on every machine and
stays the same when rows are added. A galaxy that both sets hold under the same objid (two do)
falls in the same fold in both.

**Fold 4 (:data:`TEST_FOLD`) is the held-out test fold** on which ``benchmarks/real.py`` reports.
Folds 0-3 (:data:`TRAIN_FOLDS`) are for training, tuning and calibration. A bundle that learns
from any of these images should record what it used in its card, as
``card["training"]["real"] = {"split": SPLIT_ID, "folds": [0, 1, 2, 3], ...}``, so that the
benchmark can check that the test fold stayed out. The learned length head learns the
volunteers' bar lengths (recorded as ``calibration["head"]["real_training"]``): those of all
four training folds, with its real scale and uncertainty fitted on out-of-fold heads
(cross-fitting, the default build), or those of folds 0-2 (:data:`LENGTH_TRAIN_FOLDS`), with
the fit on fold 3.

This module imports no torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

__all__ = [
    "GZ1_DIR",
    "GZ2_DIR",
    "MORPH_CLASSES",
    "MORPH_SCORED",
    "N_FOLDS",
    "SPITZER_REFERENCES",
    "SPLIT_DESCRIPTION",
    "SPLIT_ID",
    "TEST_FOLD",
    "TRAIN_FOLDS",
    "LENGTH_TRAIN_FOLDS",
    "default_root",
    "default_spitzer_root",
    "fold_of",
    "linear_from_display",
    "LINEAR_BANDS",
    "LUPTON_Q",
    "load_gz1_morphology",
    "load_gz2_bars",
    "select_folds",
    "split_key",
    "training_labels",
    "write_input_catalogue",
]

#: number of folds of the split
N_FOLDS = 5
#: the held-out fold that the real-data benchmark reports on
TEST_FOLD = 4
#: the folds for training, tuning and calibration
TRAIN_FOLDS = (0, 1, 2, 3)
#: the training folds whose volunteer bar lengths fine-tune the learned length head when it is not
#: cross-fitted; the head's real scale and uncertainty are then fitted on the training fold it never
#: saw (fold 3). Cross-fitted (``calibrate_head(..., crossfit_dir=...)``, the default build), it
#: learns every training fold and is fitted on its out-of-fold heads
LENGTH_TRAIN_FOLDS = (0, 1, 2)
#: the longest volunteer bar length (arcsec) scored or fitted on: the bars that fit the 64-pixel
#: (19.2") sdss-gz2-bars stamps
MAX_HOYLE_ARCSEC = 15.0
#: a name for this split, to record in model cards
SPLIT_ID = "real-dev-sha256-5fold-v1"
#: one line that says what the split is (quoted by the benchmark)
SPLIT_DESCRIPTION = (
    "5 folds by sha256 of the SDSS objid (else the file name), fold = first 8 bytes of the digest "
    "(big-endian) mod 5; fold 4 is the held-out test fold, folds 0-3 are for training, tuning and calibration"
)
#: sub-directories of the real-dev root
GZ2_DIR = "sdss-gz2-bars"
GZ1_DIR = "sdss-gz1-morphology"
#: the ``morph`` labels of :func:`load_gz1_morphology`, by Galaxy Zoo 1 class
MORPH_CLASSES = {
    "elliptical": "elliptical",
    "spiral_clockwise": "spiral",
    "spiral_anticlockwise": "spiral",
    "edge_on": "edge_on",
    "merger": "merger",
    "dont_know": "dont_know",
}
#: the ``morph`` labels that the morphology metrics use (mergers and "don't know" are kept in the
#: table but not scored)
MORPH_SCORED = ("elliptical", "spiral", "edge_on")
#: the two Spitzer IRAC 3.6 um galaxies of ``../shared/data/real`` and their reference bar sizes
#: (full end-to-end lengths, arcsec); ``lower_limit`` when the reference only bounds it from below
SPITZER_REFERENCES = {
    "ngc4643_irac1": {
        "galaxy": "NGC 4643",
        "full_length_arcsec": 99.8,
        "lower_limit": False,
        "reference": 'bar semi-major axis 49.9" (visual, Herrera-Endoqui et al. 2015): full length ~100"',
    },
    "ngc4608_irac1": {
        "galaxy": "NGC 4608",
        "full_length_arcsec": 88.0,
        "lower_limit": True,
        "reference": 'ellipticity peak at ~44" semi-major axis: full length >= ~88" (a lower limit)',
    },
}

_REPO = Path(__file__).resolve().parents[2]

#: softening of the asinh stretch assumed when a cutout-service JPEG is turned back into linear
#: flux (Lupton et al. 2004 recommend Q = 8); training draws it from :data:`LINEAR_Q_RANGE`
LUPTON_Q = 8.0
#: the range of Q that the training's linear copies draw from (:func:`linear_from_display`)
LINEAR_Q_RANGE = (4.0, 14.0)
#: the bands a linear copy can take: SDSS composites put i in red, r in green and g in blue;
#: ``gri`` is the stretch's own intensity, the mean of the three
LINEAR_BANDS = {"i": 0, "r": 1, "g": 2, "gri": None}


def linear_from_display(colour, q=LUPTON_Q, band="r"):
    """Undo a cutout service's asinh colour stretch: the linear flux of one band, up to a scale.

    SDSS SkyServer (and the Legacy Survey viewer) draw colour JPEGs with the stretch of Lupton
    et al. (2004): each channel is ``x_k * asinh(Q I) / (Q I)`` with ``I`` the mean of the
    three bands, so the mean of the channels is ``asinh(Q I) / Q`` and
    ``I = sinh(Q m) / Q``. Each band is its channel times ``I / m``. The flux comes back up to
    an overall scale (which :func:`survey_bars.normalise.normalise` removes), as a survey's
    FITS image of that band would give it, with the JPEG's 8-bit quantisation and its clipped
    cores. It lets the real labelled JPEGs stand for the FITS images that users also process.

    Parameters
    ----------
    colour : array_like
        ``(ny, nx, 3)`` RGB pixels, 0-255 (uint8 or float), in any orientation (it is kept).
    q : float, optional
        The stretch's softening ``Q`` (default :data:`LUPTON_Q`).
    band : {"r", "g", "i", "gri"}, optional
        The band to return: a channel (SDSS: red = i, green = r, blue = g), or ``gri``, the
        mean of the three.

    Returns
    -------
    ndarray
        ``(ny, nx)`` float64 linear flux, 0 where the pixel is black.

    Raises
    ------
    ValueError
        If ``colour`` is not an ``(ny, nx, 3)`` array, ``q`` is not positive or ``band`` unknown.
    """
    rgb = np.asarray(colour, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        msg = f"linear_from_display() needs (ny, nx, 3) RGB pixels; got an array of shape {rgb.shape}."
        raise ValueError(msg)
    if not (np.isfinite(q) and q > 0):
        msg = f"The stretch's softening q must be a positive number; got {q!r}."
        raise ValueError(msg)
    if band not in LINEAR_BANDS:
        msg = f"band must be one of {sorted(LINEAR_BANDS)}; got {band!r}."
        raise ValueError(msg)
    rgb = rgb / 255.0
    m = rgb.mean(axis=2)
    intensity = np.sinh(q * m) / q
    k = LINEAR_BANDS[band]
    if k is None:
        return intensity
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(m > 0, intensity / np.where(m > 0, m, 1.0), 1.0)
    return rgb[..., k] * gain


def write_linear_fits(jpeg, path, q=LUPTON_Q, band="r", pixel_scale=None, ra=None, dec=None):
    """Write a colour JPEG as a linear single-band FITS file (:func:`linear_from_display`).

    The image is flipped so that FITS row 0 is the bottom row, as a survey's FITS file has it.
    With ``pixel_scale`` the header carries a TAN WCS of that scale, centred on ``ra``/``dec``
    (180, 0 when not given), so that ``survey-bars process`` reads the scale from the file;
    without it the file has no WCS and the scale must come from the input catalogue.

    Parameters
    ----------
    jpeg : str or path-like
        A colour image that Pillow reads (greyscale images are taken as three equal channels).
    path : str or path-like
        The FITS file to write (replaced if present).
    q : float, optional
        The display stretch's softening ``Q`` to undo (default :data:`LUPTON_Q`).
    band : {"r", "g", "i", "gri"}, optional
        The band to write (see :func:`linear_from_display`).
    pixel_scale : float, optional
        Arcsec per pixel for the WCS.
    ra, dec : float, optional
        The WCS centre in degrees.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    OSError
        If Pillow cannot read ``jpeg``.
    ValueError
        As :func:`linear_from_display`, or if ``pixel_scale`` is given but not positive.
    """
    from astropy.io import fits
    from PIL import Image

    with Image.open(jpeg) as im:
        rgb = np.asarray(im.convert("RGB"))
    data = linear_from_display(rgb, q, band)[::-1].astype(np.float32)
    header = None
    if pixel_scale is not None:
        scale = float(pixel_scale)
        if not (np.isfinite(scale) and scale > 0):
            msg = f"pixel_scale must be a positive number of arcsec per pixel; got {pixel_scale!r}."
            raise ValueError(msg)
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [180.0 if ra is None or not np.isfinite(ra) else float(ra),
                       0.0 if dec is None or not np.isfinite(dec) else float(dec)]
        w.wcs.crpix = [(data.shape[1] + 1) / 2.0, (data.shape[0] + 1) / 2.0]
        w.wcs.cdelt = [-scale / 3600.0, scale / 3600.0]
        header = w.to_header()
        header["BUNIT"] = ("arbitrary", "linear, up to a scale; display stretch undone")
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    return str(path)


def fold_of(key, n_folds=N_FOLDS):
    """The fold of a galaxy from its split key.

    Parameters
    ----------
    key : str or int
        The split key (:func:`split_key`): an SDSS objid or a file name. Integers are taken as
        their decimal digits.
    n_folds : int, optional
        Number of folds (default 5).

    Returns
    -------
    int
        ``int.from_bytes(sha256(str(key).encode("utf-8")).digest()[:8], "big") % n_folds``.

    Examples
    --------
    >>> fold_of("587741709414039693") == fold_of(587741709414039693)
    True
    """
    if n_folds < 1:
        msg = f"n_folds must be >= 1, got {n_folds}."
        raise ValueError(msg)
    digest = hashlib.sha256(str(key).strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % int(n_folds)


def split_key(objid, file):
    """The split key of a galaxy: its objid when known, else its file's name.

    Parameters
    ----------
    objid : str, int or None
        SDSS objid (NaN, None and the empty string mean unknown).
    file : str
        The image file (only its base name is used).

    Returns
    -------
    str
    """
    if objid is not None and not (isinstance(objid, float) and not np.isfinite(objid)):
        s = str(objid).strip()
        if s and s.lower() not in ("nan", "none", "<na>"):
            return s
    return os.path.basename(str(file))


def default_root():
    """Where the real-dev data live.

    Returns
    -------
    pathlib.Path
        ``$SURVEY_BARS_REAL_DEV`` when set, else ``../shared/data/real-dev`` beside the
        repository. It may not exist (tests then skip).
    """
    env = os.environ.get("SURVEY_BARS_REAL_DEV")
    if env:
        return Path(env).expanduser().resolve()
    return _REPO.parent / "shared" / "data" / "real-dev"


def default_spitzer_root():
    """Where the two real Spitzer FITS galaxies live.

    Returns
    -------
    pathlib.Path
        ``$SURVEY_BARS_REAL`` when set, else ``../shared/data/real`` beside the repository
        (it may not exist).
    """
    env = os.environ.get("SURVEY_BARS_REAL")
    if env:
        return Path(env).expanduser().resolve()
    return _REPO.parent / "shared" / "data" / "real"


def _labels(root, sub, dtype):
    import pandas as pd

    root = Path(root) if root is not None else default_root()
    d = root / sub
    labels = d / "labels.csv"
    if not labels.is_file():
        msg = f"No {sub}/labels.csv under {root}; set SURVEY_BARS_REAL_DEV or pass the real-dev directory."
        raise FileNotFoundError(msg)
    df = pd.read_csv(labels, dtype=dtype, keep_default_na=True)
    return d, df


def _objids(values):
    """SDSS objids as text (None where missing or blank), so that 18 digits survive."""
    return [None if (o is None or (isinstance(o, float) and np.isnan(o)) or str(o).strip() == "") else str(o).strip()
            for o in values]


def _abs_files(d, names):
    base = os.path.abspath(d / "images")
    return [os.path.join(base, str(n)) for n in names]


def load_gz2_bars(root=None):
    """The ``sdss-gz2-bars`` set: GZ2 bar labels and Hoyle et al. (2011) bar lengths.

    Parameters
    ----------
    root : str or pathlib.Path, optional
        The real-dev directory (default :func:`default_root`).

    Returns
    -------
    pandas.DataFrame
        One row per image, in the order of ``labels.csv``:

        - ``file``: absolute path of the JPEG;
        - ``object_id``: the SDSS objid when known, else the file's stem (``sdss_00001``);
        - ``objid``: the SDSS DR7 objid as a string, missing (None or NaN) where unknown;
        - ``ra``, ``dec`` (deg), ``pixel_scale`` (0.3 arcsec), ``redshift`` (NaN where unknown);
        - ``has_bar``: 1 when ``gz2_bar_fraction >= 0.5``, 0 when it is 0, missing (``<NA>``)
          in between (the set has no such rows: barred ones have >= 0.8);
        - ``gz2_bar_fraction``;
        - ``hoyle_bar_length_arcsec``, ``hoyle_bar_length_kpc``: the volunteers' full bar
          length (NaN for the galaxies without one);
        - ``hoyle_length_stdev_frac``: the spread between the volunteers, as a fraction of the
          length;
        - ``split_key``, ``fold``: see the module's description of the split.

    Raises
    ------
    FileNotFoundError
        When the labels are absent.
    """
    import pandas as pd

    d, df = _labels(root, GZ2_DIR, {"objid": str, "file": str})
    objid = _objids(df["objid"])
    frac = df["gz2_bar_fraction"].astype(float)
    has_bar = pd.array([1 if f >= 0.5 else (0 if f == 0 else pd.NA) for f in frac], dtype="Int8")
    keys = [split_key(o, f) for o, f in zip(objid, df["file"])]
    out = pd.DataFrame({
        "file": _abs_files(d, df["file"]),
        "object_id": [o if o is not None else os.path.splitext(str(f))[0] for o, f in zip(objid, df["file"])],
        "objid": objid,
        "ra": df["ra"].astype(float),
        "dec": df["dec"].astype(float),
        "pixel_scale": df["pixel_scale"].astype(float),
        "redshift": df["z"].astype(float),
        "has_bar": has_bar,
        "gz2_bar_fraction": frac,
        "hoyle_bar_length_arcsec": df["hoyle_bar_length_arcsec"].astype(float),
        "hoyle_bar_length_kpc": df["hoyle_bar_length_kpc"].astype(float),
        "hoyle_length_stdev_frac": df["hoyle_length_stdev_frac"].astype(float),
        "split_key": keys,
        "fold": np.array([fold_of(k) for k in keys], dtype=np.int64),
    })
    return out


def load_gz1_morphology(root=None):
    """The ``sdss-gz1-morphology`` set: Galaxy Zoo 1 classes.

    Parameters
    ----------
    root : str or pathlib.Path, optional
        The real-dev directory (default :func:`default_root`).

    Returns
    -------
    pandas.DataFrame
        One row per image, in the order of ``labels.csv``:

        - ``file``: absolute path of the JPEG (pixel scale unknown: use it for morphology only);
        - ``object_id``, ``objid``: the SDSS DR7 objid (a string);
        - ``gz1_class``: ``elliptical``, ``spiral_clockwise``, ``spiral_anticlockwise``,
          ``edge_on``, ``merger`` or ``dont_know``;
        - ``morph``: ``elliptical``, ``spiral`` (both spiral classes), ``edge_on``, ``merger``
          or ``dont_know`` (:data:`MORPH_CLASSES`);
        - ``scored``: True for the classes the metrics use (:data:`MORPH_SCORED`);
        - ``split_key``, ``fold``: see the module's description of the split.

    Raises
    ------
    FileNotFoundError
        When the labels are absent.
    ValueError
        When the labels hold a class this module does not know.
    """
    import pandas as pd

    d, df = _labels(root, GZ1_DIR, {"sdss_dr7_objid": str, "file": str, "gz1_class": str})
    cls = df["gz1_class"].astype(str).str.strip()
    unknown = sorted(set(cls) - set(MORPH_CLASSES))
    if unknown:
        msg = f"Unknown Galaxy Zoo 1 classes in {d / 'labels.csv'}: {unknown}."
        raise ValueError(msg)
    objid = _objids(df["sdss_dr7_objid"])
    keys = [split_key(o, f) for o, f in zip(objid, df["file"])]
    morph = cls.map(MORPH_CLASSES)
    return pd.DataFrame({
        "file": _abs_files(d, df["file"]),
        "object_id": [o if o is not None else os.path.splitext(str(f))[0] for o, f in zip(objid, df["file"])],
        "objid": objid,
        "gz1_class": cls,
        "morph": morph,
        "scored": morph.isin(MORPH_SCORED).to_numpy(),
        "split_key": keys,
        "fold": np.array([fold_of(k) for k in keys], dtype=np.int64),
    })


def select_folds(df, folds):
    """The rows of ``df`` in the given folds.

    Parameters
    ----------
    df : pandas.DataFrame
        A table with a ``fold`` column.
    folds : int or iterable of int
        The folds to keep (e.g. :data:`TEST_FOLD`, or :data:`TRAIN_FOLDS`).

    Returns
    -------
    pandas.DataFrame
        A copy with a fresh index.
    """
    folds = [int(folds)] if np.isscalar(folds) else [int(f) for f in folds]
    return df[df["fold"].isin(folds)].reset_index(drop=True)


def write_input_catalogue(df, path):
    """Write the input catalogue that ``survey-bars process --catalogue`` reads.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of :func:`load_gz2_bars` or :func:`load_gz1_morphology` (or any table with a
        ``file`` column). The columns ``file``, ``object_id``, ``ra``, ``dec``,
        ``pixel_scale`` and ``redshift`` that it has are written (``file`` absolute); the
        others are left out. A Galaxy Zoo 1 table has no pixel scale, so those images get
        morphology only (null lengths, flag ``NO_PIXEL_SCALE``).
    path : str or pathlib.Path
        The CSV to write (its directory is created).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    if "file" not in df.columns:
        msg = "write_input_catalogue() needs a 'file' column."
        raise ValueError(msg)
    cols = [c for c in ("file", "object_id", "ra", "dec", "pixel_scale", "redshift") if c in df.columns]
    out = df[cols].copy()
    out["file"] = [os.path.abspath(str(f)) for f in out["file"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path


def training_labels(root=None, folds=TRAIN_FOLDS):
    """The real galaxies of ``folds`` as a label table for :func:`survey_bars.training.train.train`.

    Each set trains only the outputs it has labels for (the others are left missing, so they
    stay out of those losses):

    - ``sdss-gz2-bars``: class ``disc`` (Galaxy Zoo 2 asked the bar question only of featured,
      not edge-on discs), ``has_bar`` from the vote fractions (1 barred, 0 unbarred), the
      volunteers' ``bar_length_arcsec`` where Hoyle et al. (2011) have one (it trains the direct
      length network; without a position angle it is not used by the bar-evidence mask loss), the
      pixel scale (0.3"); ``has_spiral`` unknown;
    - ``sdss-gz1-morphology``: ellipticals are ``smooth`` with ``has_bar = has_spiral = 0``;
      spirals are ``disc`` with ``has_spiral = 1`` and an unknown bar; edge-on discs are
      ``edge_on``, bar and arms unknown; mergers and "don't know" are left out. The pixel scale
      is unknown, so these images train the morphology, bar and spiral outputs only.

    Parameters
    ----------
    root : str or pathlib.Path, optional
        The real-dev directory (default :func:`default_root`).
    folds : iterable of int, optional
        The folds to use (default :data:`TRAIN_FOLDS`; never the test fold when you mean to
        report on it).

    Returns
    -------
    pandas.DataFrame
        Columns ``file`` (absolute), ``class``, ``has_bar``, ``has_spiral``, ``bar_length_arcsec``,
        ``bar_pa_deg``, ``pixel_scale_arcsec`` and ``source`` (``gz2`` or ``gz1``).
    """
    import pandas as pd

    gz2 = select_folds(load_gz2_bars(root), folds)
    gz2 = gz2[gz2["has_bar"].notna()]
    a = pd.DataFrame({
        "file": gz2["file"],
        "class": "disc",
        "has_bar": gz2["has_bar"].astype(float),
        "has_spiral": np.nan,
        "bar_length_arcsec": gz2["hoyle_bar_length_arcsec"],
        "bar_pa_deg": np.nan,
        "pixel_scale_arcsec": gz2["pixel_scale"],
        "source": "gz2",
    })
    gz1 = select_folds(load_gz1_morphology(root), folds)
    labels = {"elliptical": ("smooth", 0.0, 0.0), "spiral": ("disc", np.nan, 1.0), "edge_on": ("edge_on", np.nan, np.nan)}
    gz1 = gz1[gz1["morph"].isin(list(labels))]
    b = pd.DataFrame({
        "file": gz1["file"],
        "class": [labels[m][0] for m in gz1["morph"]],
        "has_bar": [labels[m][1] for m in gz1["morph"]],
        "has_spiral": [labels[m][2] for m in gz1["morph"]],
        "bar_length_arcsec": np.nan,
        "bar_pa_deg": np.nan,
        "pixel_scale_arcsec": np.nan,
        "source": "gz1",
    })
    return pd.concat([a, b], ignore_index=True)
