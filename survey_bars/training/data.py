"""Training data: label tables, and the cached preprocessing of every labelled cutout.

:func:`load_labels` reads ``survey-bars simulate`` truth tables or any labelled table of FITS,
JPEG or PNG cutouts; :func:`preprocess` reads and normalises every file with the functions the
inference path uses (:func:`survey_bars.io.read_cutout`, :func:`survey_bars.normalise.normalise`)
in a process pool, and caches the frames in an ``.npz`` keyed by a hash of the file list (with
each file's size and contents), the preprocessing configuration and the preprocessing code.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from .. import normalise as normalise_module
from ..io import CutoutError, cutout, fits, image, read_cutout, readers
from ..normalise import NormaliseConfig, normalise

__all__ = ["CLASS_MAP", "cache_dir", "linear_copy_settings", "linear_frames", "load_labels", "preprocess", "log"]

#: Accepted spellings of the morphology class -> index in the 3-way softmax.
CLASS_MAP = {
    "smooth": 0, "elliptical": 0, "early": 0,
    "edge_on": 1, "edge-on": 1, "edgeon": 1,
    "disc": 2, "disk": 2, "barred": 2, "spiral": 2, "featured": 2, "face_on": 2,
}
_CACHE_VERSION = 3
_LABEL_COLUMNS = ("class", "has_bar", "has_spiral", "bar_length_arcsec", "bar_pa_deg", "pixel_scale_arcsec")
#: accepted names of the label table's pixel-scale column (arcsec per pixel), first found first used
_PIXEL_SCALE_COLUMNS = ("pixel_scale_arcsec", "pixel_scale")


def log(msg):
    """Print a time-stamped training progress line to stderr."""
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)



def _read_table(path):
    import pandas as pd

    p = str(path)
    if p.endswith((".parquet", ".pq")):
        return pd.read_parquet(p)
    if p.endswith((".csv", ".txt")):
        return pd.read_csv(p)
    if p.endswith((".fits", ".fit")):
        from astropy.table import Table

        return Table.read(p).to_pandas()
    msg = f"Cannot read the label table {p!r}: use a .csv, .parquet or .fits table."
    raise ValueError(msg)


def load_labels(data_dirs, labels=None):
    """Collect the training files and their labels.

    Parameters
    ----------
    data_dirs : list of str
        Directories written by ``survey-bars simulate`` (each with ``truth.parquet``), or
        directories of the FITS, JPEG or PNG files named in ``labels``.
    labels : str, optional
        CSV/Parquet/FITS table with a ``file`` column and label columns (see the module
        docstring; the pixel scale may be ``pixel_scale_arcsec`` or ``pixel_scale``). Without
        it each directory's ``truth.parquet`` is used.

    Returns
    -------
    pandas.DataFrame
        Columns ``path`` (absolute), ``morph`` (0/1/2 or -1 when unknown), ``has_bar`` and
        ``has_spiral`` (1.0/0.0 or NaN), ``bar_length_arcsec``, ``bar_pa_deg`` and
        ``pixel_scale_arcsec`` (NaN when unknown: a FITS file's is then taken from its WCS; an
        image without one gives no bar length), ``class`` (the original label or "") and
        ``source`` (the table's optional ``source`` column, e.g. ``simulation`` or ``gz2``, or "";
        :func:`survey_bars.training.train.train`'s ``finetune`` focuses on some of them).

    Raises
    ------
    ValueError
        When no table is found, a required column is missing or files are missing.
    """
    import pandas as pd

    dirs = [pathlib.Path(d).expanduser().resolve() for d in data_dirs]
    for d in dirs:
        if not d.is_dir():
            msg = f"The data directory {str(d)!r} does not exist."
            raise ValueError(msg)
    frames = []
    if labels is None:
        for d in dirs:
            truth = d / "truth.parquet"
            if not truth.is_file():
                msg = (f"{str(d)!r} has no truth.parquet. Pass a directory written by `survey-bars "
                       "simulate`, or give --labels TABLE for your own FITS, JPEG or PNG files.")
                raise ValueError(msg)
            t = pd.read_parquet(truth)
            t["path"] = [str(d / f) for f in t["file"]]
            frames.append(t)
    else:
        t = _read_table(labels)
        if "file" not in t.columns:
            msg = f"The label table {labels!r} has no 'file' column (columns: {list(t.columns)})."
            raise ValueError(msg)
        bases = dirs + [pathlib.Path(labels).resolve().parent]
        paths = []
        for f in t["file"].astype(str):
            p = pathlib.Path(f).expanduser()
            if not p.is_absolute():
                p = next((b / f for b in bases if (b / f).exists()), bases[0] / f)
            paths.append(str(p))
        t["path"] = paths
        if not any(c in t.columns for c in ("class", "has_bar", "has_spiral", "bar_length_arcsec")):
            msg = (f"The label table {labels!r} has no label column; give at least one of class, "
                   "has_bar, has_spiral, bar_length_arcsec.")
            raise ValueError(msg)
        frames.append(t)
    t = pd.concat(frames, ignore_index=True)
    missing = [p for p in t["path"] if not os.path.exists(p)]
    if missing:
        msg = f"{len(missing)} labelled files are missing, e.g. {missing[0]!r}. Check --data and the 'file' column."
        raise ValueError(msg)
    out = pd.DataFrame({"path": t["path"].astype(str)})
    cls = t["class"].astype(str).str.strip().str.lower() if "class" in t.columns else pd.Series([""] * len(t))
    unknown = sorted(set(cls) - set(CLASS_MAP) - {"", "nan", "none"})
    if unknown:
        msg = f"Unknown class labels {unknown}; use one of {sorted(set(CLASS_MAP))}."
        raise ValueError(msg)
    out["class"] = cls.where(cls.isin(list(CLASS_MAP)), "").values
    out["morph"] = [CLASS_MAP.get(c, -1) for c in out["class"]]

    def _float(col):
        if col not in t.columns:
            return np.full(len(t), np.nan)
        v = t[col]
        if not pd.api.types.is_numeric_dtype(v):  # True/False, yes/no as text (a CSV of booleans): not NaN
            words = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0, "t": 1.0, "f": 0.0, "y": 1.0, "n": 0.0}
            v = v.map(lambda x: words.get(x.strip().lower(), x) if isinstance(x, str) else x)
        return pd.to_numeric(v, errors="coerce").astype(float).values

    out["has_bar"] = _float("has_bar")
    if "has_bar" not in t.columns and "class" in t.columns:
        out["has_bar"] = np.where(out["class"] == "barred", 1.0, np.where(out["morph"] >= 0, 0.0, np.nan))
    out["has_spiral"] = _float("has_spiral")
    out["bar_length_arcsec"] = _float("bar_length_arcsec")
    out["bar_pa_deg"] = _float("bar_pa_deg")
    scale = np.full(len(t), np.nan)
    for col in _PIXEL_SCALE_COLUMNS:  # pixel_scale_arcsec first; pixel_scale fills its gaps
        scale = np.where(np.isfinite(scale), scale, _float(col))
    out["pixel_scale_arcsec"] = np.where(scale > 0, scale, np.nan)  # 0 or negative: unknown
    # where each row comes from (e.g. simulation, gz2): what a fine-tuning stage may focus on
    out["source"] = t["source"].fillna("").astype(str).values if "source" in t.columns else ""
    return out


def _prep_one(args):
    path, pixel_scale, cfg_dict = args

    cfg = NormaliseConfig.from_dict(cfg_dict)
    try:
        # no usable scale: a FITS file's comes from its WCS; an image then has none (NaN), so
        # its bar length cannot be put in model pixels and is left out of the length loss
        ps = float(pixel_scale) if np.isfinite(pixel_scale) and pixel_scale > 0 else None
        cut = read_cutout(path, pixel_scale=ps)
        norm = normalise(cut.data, cfg)
        scale = ps if ps is not None else cut.pixel_scale_arcsec
        cd = np.asarray(cut.cd, dtype=float).ravel() if cut.cd is not None else np.full(4, np.nan)
        return norm.image, float(norm.scale), float(scale or np.nan), cd, ""
    except (CutoutError, ValueError) as exc:
        return np.zeros((cfg.size, cfg.size), np.float32), np.nan, np.nan, np.full(4, np.nan), str(exc)[:200]


def _code_digest():
    """Hash of the preprocessing code, so a changed normalise() or reader invalidates the cache."""

    h = hashlib.sha256()
    for mod in (cutout, readers, fits, image, normalise_module):
        with open(mod.__file__, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


def _file_digest(path):
    """BLAKE2b digest of a file's contents (read in 1 MiB blocks)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_key(paths, pixel_scales, cfg):
    """Key of a file list's cache: each path, size and content digest, the pixel scales, the configuration and the code.

    The contents, not the modification times: a data directory that is copied, synced or checked
    out again keeps its cache, and a file rewritten with other pixels loses it.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"v": _CACHE_VERSION, "cfg": cfg.to_dict(), "code": _code_digest()}, sort_keys=True).encode())
    for p, s in zip(paths, pixel_scales):
        try:
            stamp = f"{os.stat(p).st_size}\0{_file_digest(p)}"
        except OSError as exc:  # unreadable: preprocessing gives it an error row; the key records why
            stamp = f"{type(exc).__name__}"
        h.update(f"{p}\0{stamp}\0{s!r}\n".encode())
    return h.hexdigest()[:20]


def cache_dir():
    """The directory the preprocessing cache is written to.

    ``$SURVEY_BARS_CACHE_DIR`` when set, else ``survey-bars`` under ``$XDG_CACHE_HOME`` or
    ``~/.cache``. The data directories are inputs and are never written to (they may be shared
    or read-only).

    Returns
    -------
    pathlib.Path
    """
    env = os.environ.get("SURVEY_BARS_CACHE_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache").expanduser() / "survey-bars"


def _cache_dirs(paths):
    """Where a cache is looked for: the user's cache, then (read only) where earlier versions of survey-bars wrote it."""
    return [cache_dir(), pathlib.Path(paths[0]).parent / ".survey-bars-cache"]


def _pool_map(fn, jobs, workers):
    """``[fn(j) for j in jobs]``, in a spawned pool of ``workers`` processes when there is more than one."""
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            return pool.map(fn, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers))))
    return [fn(j) for j in jobs]


def preprocess(paths, pixel_scales, config=None, *, workers=1, cache=True, log=log):
    """Read and normalise every file, with a cache.

    Parameters
    ----------
    paths : list of str
        FITS, JPEG or PNG cutouts.
    pixel_scales : array_like
        Pixel scale (arcsec) per file to use, NaN to take it from the WCS (a JPEG or PNG image
        then has none: its ``pixel_scale`` is NaN, and its frame is still made).
    config : NormaliseConfig, optional
        Preprocessing (default ``NormaliseConfig()``).
    workers : int, optional
        Processes of the preprocessing pool.
    cache : bool, optional
        Read and write the ``.npz`` cache, in :func:`cache_dir` (``~/.cache/survey-bars`` by
        default; one file per file list, which for a full training set is several hundred MB).
        A cache that an earlier version left in ``.survey-bars-cache/`` next to the data is still
        read.
    log : callable, optional
        Progress messages (default: the training log on standard error).

    Returns
    -------
    dict
        ``images`` float32 ``(N, S, S)``, ``scale`` (input pixels per model pixel),
        ``pixel_scale`` (arcsec), ``cd`` ``(N, 4)`` (the WCS CD matrix in degrees per pixel,
        row-major, NaN without a celestial WCS) and ``error`` (empty string when the file was
        usable).
    """
    cfg = config or NormaliseConfig()
    paths = [str(p) for p in paths]
    scales = [float(s) for s in np.asarray(pixel_scales, dtype=float)]
    key = _cache_key(paths, scales, cfg)
    if cache:
        for d in _cache_dirs(paths):
            f = d / f"prep-{key}.npz"
            if f.is_file():
                try:
                    with np.load(f, allow_pickle=False) as z:
                        res = {k: z[k] for k in ("images", "scale", "pixel_scale", "cd", "error")}
                    log(f"preprocessed frames read from the cache {f}")
                    return res
                except (OSError, ValueError, KeyError):
                    pass
    t0 = time.time()
    jobs = [(p, s, cfg.to_dict()) for p, s in zip(paths, scales)]
    results = _pool_map(_prep_one, jobs, workers)
    res = {
        "images": np.stack([r[0] for r in results]).astype(np.float32),
        "scale": np.array([r[1] for r in results], dtype=np.float64),
        "pixel_scale": np.array([r[2] for r in results], dtype=np.float64),
        "cd": np.array([r[3] for r in results], dtype=np.float64).reshape(len(results), 4),
        "error": np.array([r[4] for r in results], dtype=str),
    }
    log(f"preprocessed {len(paths)} files in {time.time() - t0:.1f} s with {workers} worker(s)")
    if cache:
        d = cache_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, suffix=".npz.tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, **res)
                os.replace(tmp, d / f"prep-{key}.npz")
            except OSError:
                pathlib.Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log(f"the preprocessed frames were not cached ({exc}); set SURVEY_BARS_CACHE_DIR to a writable directory")
    return res


def linear_copy_settings(seed, i, c, q_range=None, bands=None):
    """The stretch softening ``Q`` and the band of linear copy ``c`` of the ``i``-th image: ``(q, band)``.

    Drawn from ``numpy.random.default_rng([seed, i, c])``: ``Q`` uniform in ``q_range`` (default
    :data:`survey_bars.training.realdata.LINEAR_Q_RANGE`), the band among ``bands`` (default all
    of :data:`survey_bars.training.realdata.LINEAR_BANDS`).
    """
    from .realdata import LINEAR_BANDS, LINEAR_Q_RANGE

    q_range = q_range or LINEAR_Q_RANGE
    bands = sorted(bands or LINEAR_BANDS)
    rng = np.random.default_rng([seed, i, c])
    q = float(rng.uniform(*q_range))
    return q, bands[int(rng.integers(len(bands)))]


def _linear_one(args):
    from .realdata import linear_from_display

    path, i, copies, seed, q_range, bands, cfg_dict = args
    cfg = NormaliseConfig.from_dict(cfg_dict)
    out = []
    try:
        cut = read_cutout(path)
        if cut.colour is None:
            return None
        for c in range(copies):
            q, band = linear_copy_settings(seed, i, c, q_range, bands)
            out.append(normalise(linear_from_display(cut.colour, q, band), cfg).image)
    except (CutoutError, ValueError):
        return None
    return np.stack(out)


def linear_frames(paths, config=None, *, copies=1, seed=0, q_range=None, bands=None, workers=1):
    """Model frames of linear copies of colour display cutouts (real survey JPEGs).

    Each colour cutout is turned back into the linear flux of one band by undoing the display
    stretch (:func:`survey_bars.training.realdata.linear_from_display`), with the stretch's
    softening ``Q`` drawn uniformly from ``q_range`` and the band (``g``, ``r``, ``i`` or their
    mean) drawn at random, and normalised as a FITS image of that band would be. Training on
    them as well as on the JPEGs teaches the networks the real galaxies in both of the forms
    users give them: display JPEGs, and linear FITS.

    Parameters
    ----------
    paths : list of str
        Colour JPEG or PNG cutouts.
    config : NormaliseConfig, optional
        Preprocessing (default ``NormaliseConfig()``; use the bundle's).
    copies : int, optional
        Linear copies per cutout, each with its own ``Q`` and band.
    seed : int, optional
        Copy ``c`` of the ``i``-th path takes :func:`linear_copy_settings` ``(seed, i, c)``.
    q_range : tuple of float, optional
        The range of ``Q`` (default :data:`survey_bars.training.realdata.LINEAR_Q_RANGE`).
    bands : sequence of str, optional
        The bands to draw from (default all of
        :data:`survey_bars.training.realdata.LINEAR_BANDS`; ``("r",)``: the r band only).
    workers : int, optional
        Processes of the pool.

    Returns
    -------
    tuple
        ``(images, ok)``: float32 frames ``(n_ok * copies, S, S)``, copy-major per path
        (``images[j * copies + c]`` is copy ``c`` of the ``j``-th usable path), and a boolean
        array over ``paths``, False where a cutout is unreadable or has no colour.
    """
    from .realdata import LINEAR_BANDS, LINEAR_Q_RANGE

    cfg = config or NormaliseConfig()
    q_range = tuple(float(q) for q in (q_range or LINEAR_Q_RANGE))
    if copies < 1 or len(q_range) != 2 or not 0 < q_range[0] <= q_range[1]:
        msg = f"linear_frames() needs copies >= 1 and 0 < q_min <= q_max; got copies={copies}, q_range={q_range}."
        raise ValueError(msg)
    bands = tuple(bands) if bands else None
    if bands is not None and not set(bands) <= set(LINEAR_BANDS):
        msg = f"linear_frames() bands must be among {sorted(LINEAR_BANDS)}; got {list(bands)}."
        raise ValueError(msg)
    jobs = [(str(p), i, int(copies), int(seed), q_range, bands, cfg.to_dict()) for i, p in enumerate(paths)]
    results = _pool_map(_linear_one, jobs, workers)
    ok = np.array([r is not None for r in results], dtype=bool)
    if not ok.any():
        return np.zeros((0, cfg.size, cfg.size), np.float32), ok
    return np.concatenate([r for r in results if r is not None]).astype(np.float32), ok
