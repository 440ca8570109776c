"""One galaxy, many galaxies: the FITS cutout with its header, the truth row, and
:func:`simulate`, which writes a directory of cutouts and ``truth.parquet`` in parallel.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .observe import observe
from .params import (
    CLASSES,
    DEFAULT_CLASS_MIX,
    SURVEYS,
    ZP_AB,
    _kpc_per_arcsec,
    draw_params,
    projected_bar,
)
from .render import _half_light_radius, render_components


def _header(params):
    from astropy.io import fits

    N, s = params.stamp_size, params.pixel_scale
    h = fits.Header()
    cards = [
        ("WCSAXES", 2, ""), ("CTYPE1", "RA---TAN", ""), ("CTYPE2", "DEC--TAN", ""),
        ("CRPIX1", (N + 1) / 2.0, "stamp centre"), ("CRPIX2", (N + 1) / 2.0, "stamp centre"),
        ("CRVAL1", params.ra, "[deg]"), ("CRVAL2", params.dec, "[deg]"),
        ("CD1_1", -s / 3600.0, "north up, east left"), ("CD1_2", 0.0, ""),
        ("CD2_1", 0.0, ""), ("CD2_2", s / 3600.0, ""),
        ("CUNIT1", "deg", ""), ("CUNIT2", "deg", ""), ("RADESYS", "ICRS", ""),
        ("BUNIT", "nanomaggy", "AB mag = 22.5 - 2.5 log10(flux)"),
        ("OBJID", params.object_id, ""), ("SURVEY", params.survey, "simulated survey preset"),
        ("BAND", SURVEYS[params.survey].band, ""), ("REDSHIFT", params.redshift, ""),
        ("PIXSCALE", s, "[arcsec/pix]"), ("PSFFWHM", round(params.psf_fwhm, 5), "[arcsec]"),
        ("SIMCLASS", params.cls, "simulated class (truth)"),
        ("ORIGIN", "survey-bars simulate", ""),
    ]
    for k, v, c in cards:
        h[k] = (v, c)
    return h


def _truth_row(params, info, r50):
    blen = bpa = float("nan")
    if params.has_bar:
        blen, bpa, _ = projected_bar(params.bar_a, params.bar_q, params.bar_phi, params.inclination, params.disc_pa)
    nan = float("nan")
    disc = params.cls != "smooth"
    return {
        "object_id": params.object_id, "file": f"{params.object_id}.fits", "survey": params.survey,
        "class": params.cls, "has_bar": bool(params.has_bar), "has_spiral": bool(params.has_spiral),
        "has_ring": bool(params.has_ring),
        "bar_length_arcsec": blen, "bar_pa_deg": bpa,
        "bar_axis_ratio": params.bar_q if params.has_bar else nan,
        "bar_light_frac": params.bar_frac if params.has_bar else 0.0,
        "bar_length_deproj_arcsec": 2 * params.bar_a if params.has_bar else nan,
        "bar_phi_deg": params.bar_phi if params.has_bar else nan,
        "disc_scale_arcsec": params.disc_scale if disc else nan,
        "inclination_deg": params.inclination if disc else nan,
        "disc_pa_deg": params.disc_pa % 180.0,
        "bulge_frac": params.bulge_frac, "sersic_n": params.sersic_n,
        "bulge_r50_arcsec": params.bulge_r50, "r50_arcsec": r50,
        "flux_nmgy": params.total_flux, "mag_ab": ZP_AB - 2.5 * math.log10(params.total_flux),
        "psf_fwhm_arcsec": params.psf_fwhm, "psf_type": params.psf_type,
        "noise_sigma": info["noise_sigma"], "snr": info["snr"],
        "pixel_scale_arcsec": params.pixel_scale, "stamp_size": params.stamp_size,
        "x_offset_pix": params.dx, "y_offset_pix": params.dy,
        "ra": params.ra, "dec": params.dec, "redshift": params.redshift,
        "kpc_per_arcsec": _kpc_per_arcsec(params.redshift),
        "n_arms": params.n_arms if params.has_spiral else 0,
        "arm_pitch_deg": abs(params.arm_pitch) if params.has_spiral else nan,
        "has_clumps": bool(params.clumps), "dust": params.dust,
        "lopsided": bool(params.lop_dx or params.lop_dy),
        "has_star": bool(params.stars), "has_neighbour": bool(params.neighbours),
        "has_bright_star": bool(params.bright_star), "has_bleed": bool(info["has_bleed"]),
        "has_mask": bool(params.has_mask), "has_cosmic": bool(params.has_cosmic),
        "has_gradient": bool(params.has_gradient),
    }


def simulate_one(seed, i, survey="mixed", class_mix=None, stamp_size=None, out_dir=None):
    """Draw, render and (optionally) write galaxy ``i`` of a run.

    Parameters
    ----------
    seed : int
        Run seed; the galaxy's random state is ``default_rng([seed, i])``.
    i : int
        Galaxy index.
    survey : str, optional
        Survey key or ``"mixed"`` (drawn per galaxy).
    class_mix : dict, optional
        Class weights (default :data:`DEFAULT_CLASS_MIX`).
    stamp_size : int, optional
        Fixed stamp side in pixels.
    out_dir : str, optional
        Write ``{object_id}.fits`` here when given.

    Returns
    -------
    row : dict
        The truth-table row.
    image : ndarray
        The float32 image.
    params : GalaxyParams
    """
    rng = np.random.default_rng([seed, i])
    sv = str(rng.choice(sorted(SURVEYS))) if survey == "mixed" else survey
    mix = class_mix or DEFAULT_CLASS_MIX
    names = [c for c in CLASSES if mix.get(c, 0) > 0]
    w = np.array([mix[c] for c in names], dtype=float)
    cls = str(rng.choice(names, p=w / w.sum()))
    params = draw_params(rng, sv, cls, object_id=f"sim{seed}-{i:07d}", stamp_size=stamp_size)
    comps = render_components(params, components=False)
    r50 = _half_light_radius(comps["galaxy_fine"], params)
    params.extra["r50_pix"] = r50 / params.pixel_scale
    image, info = observe(params, comps)
    row = _truth_row(params, info, r50)
    if out_dir is not None:
        from astropy.io import fits

        fits.PrimaryHDU(image, header=_header(params)).writeto(os.path.join(out_dir, row["file"]), overwrite=True)
    return row, image, params


def _chunk(args):
    seed, idx, survey, class_mix, stamp_size, out_dir = args
    return [simulate_one(seed, i, survey, class_mix, stamp_size, out_dir)[0] for i in idx]


_UNITS = {
    "bar_length_arcsec": ("arcsec", "full projected end-to-end bar length on the sky (2 x projected semi-major axis)"),
    "bar_pa_deg": ("deg", "PA of the projected bar, east of north, [0, 180)"),
    "bar_axis_ratio": ("", "intrinsic bar b/a"),
    "bar_light_frac": ("", "fraction of the galaxy light in the bar"),
    "bar_length_deproj_arcsec": ("arcsec", "intrinsic (face-on) full bar length 2a"),
    "bar_phi_deg": ("deg", "bar angle in the disc plane from the line of nodes"),
    "disc_scale_arcsec": ("arcsec", "exponential disc scale length"),
    "inclination_deg": ("deg", "disc inclination (0 face-on)"),
    "disc_pa_deg": ("deg", "PA of the disc (or smooth galaxy) major axis, east of north"),
    "bulge_r50_arcsec": ("arcsec", "bulge half-light radius (circularised)"),
    "r50_arcsec": ("arcsec", "circular half-light radius of the noiseless PSF-free galaxy"),
    "flux_nmgy": ("nanomaggy", "intrinsic total flux before dust"),
    "mag_ab": ("mag", "AB magnitude of flux_nmgy"),
    "psf_fwhm_arcsec": ("arcsec", "PSF FWHM"),
    "noise_sigma": ("nanomaggy", "sky noise per pixel"),
    "snr": ("", "matched-filter S/N of the galaxy, sqrt(sum model^2/variance)"),
    "pixel_scale_arcsec": ("arcsec", "pixel scale"),
    "stamp_size": ("pix", "stamp side"),
    "x_offset_pix": ("pix", "galaxy centre minus stamp centre along x (west)"),
    "y_offset_pix": ("pix", "galaxy centre minus stamp centre along y (north)"),
    "ra": ("deg", "RA of the stamp centre (CRVAL1)"),
    "dec": ("deg", "Dec of the stamp centre (CRVAL2)"),
    "kpc_per_arcsec": ("kpc/arcsec", "angular scale at the redshift (flat LCDM, H0=70, Om=0.3)"),
}


def _map(fn, jobs, workers, chunksize=1):
    """``fn`` over ``jobs``, in order: in this process for one worker, else in a pool of ``workers`` processes."""
    if workers == 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, jobs, chunksize=chunksize))


def finished_copies(src_dir, out_dir, make):
    """The truth table of a copy of a simulation directory: ``out_dir``'s when it is complete, else ``make()``'s.

    A copy (:func:`~survey_bars.simulate.display_copies`, :func:`~survey_bars.simulate.small_stamp_copies`)
    writes its ``truth.parquet`` last, so a truth table with one row per galaxy of ``src_dir``
    marks a finished copy, which a rerun reuses instead of drawing it again.

    Parameters
    ----------
    src_dir, out_dir : str
        The simulation directory and its copy.
    make : callable
        ``make()`` writes the copy and returns its truth table.

    Returns
    -------
    pandas.DataFrame
    """
    import sys

    import pandas as pd

    marker = os.path.join(out_dir, "truth.parquet")
    n = len(pd.read_parquet(os.path.join(src_dir, "truth.parquet"), columns=["file"]))
    if os.path.isfile(marker) and len(pd.read_parquet(marker, columns=["file"])) == n:
        print(f"reusing the copies in {out_dir}", file=sys.stderr)
        return pd.read_parquet(marker)
    return make()


def _write_truth(df, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = []
    for f in table.schema:
        unit, desc = _UNITS.get(f.name, ("", ""))
        fields.append(f.with_metadata({"unit": unit, "description": desc}))
    meta = {b"survey_bars.simulate": b"truth table; images in nanomaggies, north up, east left"}
    table = table.cast(pa.schema(fields, metadata={**(table.schema.metadata or {}), **meta}))
    tmp = path + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _check_args(out_dir, n, survey, seed, workers, class_mix, start_index, stamp_size):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        msg = f"n must be a positive integer (the number of galaxies), got {n!r}."
        raise ValueError(msg)
    if survey != "mixed" and survey not in SURVEYS:
        msg = f"Unknown survey {survey!r}; choose one of {sorted(SURVEYS) + ['mixed']}."
        raise ValueError(msg)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        msg = f"seed must be a non-negative integer, got {seed!r}."
        raise ValueError(msg)
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        msg = f"workers must be an integer >= 1, got {workers!r}."
        raise ValueError(msg)
    if not isinstance(start_index, (int, np.integer)) or start_index < 0:
        msg = f"start_index must be a non-negative integer, got {start_index!r}."
        raise ValueError(msg)
    if stamp_size is not None and not (isinstance(stamp_size, (int, np.integer)) and 16 <= stamp_size <= 1024):
        msg = f"stamp_size must be an integer in [16, 1024] pixels, got {stamp_size!r}."
        raise ValueError(msg)
    if class_mix is not None:
        bad = set(class_mix) - set(CLASSES)
        if bad:
            msg = f"Unknown classes {sorted(bad)} in class_mix; use {list(CLASSES)}."
            raise ValueError(msg)
        vals = [float(v) for v in class_mix.values()]
        if any(not math.isfinite(v) or v < 0 for v in vals) or sum(vals) <= 0:
            msg = f"class_mix weights must be finite, >= 0 and not all zero, got {class_mix!r}."
            raise ValueError(msg)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        msg = f"Cannot create the output directory {out_dir!r}: {exc.strerror}. Choose a writable --out."
        raise ValueError(msg) from None
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK | os.X_OK):
        msg = f"The output directory {out_dir!r} is not writable. Choose a writable --out."
        raise ValueError(msg)


def simulate(out_dir, n, *, survey="mixed", seed=0, workers=1, class_mix=None, start_index=0, stamp_size=None):
    """Write ``n`` simulated cutouts and their truth table.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output directory (created if needed). Receives ``{object_id}.fits`` per galaxy and
        ``truth.parquet``.
    n : int
        Number of galaxies (> 0).
    survey : {"sdss", "decals", "hsc", "euclid", "mixed"}, optional
        Survey preset; ``"mixed"`` draws one per galaxy (equal odds).
    seed : int, optional
        Run seed (>= 0). Galaxy ``i`` depends only on ``(seed, i)``.
    workers : int, optional
        Processes; the output does not depend on it.
    class_mix : dict, optional
        Class -> weight over ``"smooth"``, ``"edge_on"``, ``"disc"``, ``"barred"`` (default
        :data:`DEFAULT_CLASS_MIX`). Missing classes get weight 0.
    start_index : int, optional
        First galaxy index (to extend a run: object ids are ``f"sim{seed}-{i:07d}"``).
    stamp_size : int, optional
        Fixed stamp side in pixels (default: per galaxy, ~8 r50 clipped to [48, 256]).

    Returns
    -------
    pandas.DataFrame
        The truth table (also written to ``out_dir/truth.parquet``), one row per file.

    Raises
    ------
    ValueError
        For bad arguments or an unwritable directory.
    """
    import pandas as pd

    out_dir = os.fspath(out_dir)
    _check_args(out_dir, n, survey, seed, workers, class_mix, start_index, stamp_size)
    idx = list(range(start_index, start_index + n))
    mix = dict(class_mix) if class_mix else None
    chunk = max(1, min(32, n // (4 * workers) or 1))
    jobs = [(seed, idx[k:k + chunk], survey, mix, stamp_size, out_dir) for k in range(0, n, chunk)]
    rows = [row for part in _map(_chunk, jobs, workers) for row in part]
    df = pd.DataFrame(rows)
    _write_truth(df, os.path.join(out_dir, "truth.parquet"))
    return df
