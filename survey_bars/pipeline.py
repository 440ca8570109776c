"""The work of one partition, as a worker does it.

``read -> normalise -> infer -> saliency -> measure -> flag -> row``: :func:`process_items`
takes a list of :class:`InputItem` and returns an Arrow table with exactly one catalogue row per
item, in input order. Files that cannot be used get ``status="error"`` rows with the reason;
nothing a single file does can stop the partition.

This module (like everything on the worker path) imports no torch.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from dataclasses import dataclass

import numpy as np

from .errors import OptionError
from .flags import Flag
from .geometry import check_cosmology, kpc_per_arcsec, sky_pa
from .inference.bundle import CLASS_NAMES
from .inference.runtime import get_runtime
from .inference.saliency import bundle_settings, smoothgrad_batch
from .io import DEFAULT_MAX_PIXELS, CutoutError, file_stem, read_cutout
from .io.catalogue import empty_row, rows_to_table
from .io.inputs import InputItem
from .io.saliency_maps import write_saliency_map
from .measure import (
    MapMeasures,
    calibrated_length,
    calibration_for,
    get_method,
    method_names,
    resolve_method,
    run_methods,
)
from .normalise import normalise

__all__ = ["RunOptions", "prepare_item", "process_items"]

#: thresholds of the image-level flags
LOW_SNR = 20.0
NAN_CENTRE_FRAC = 0.05
OFF_CENTRE_FRAC = 0.10
TRUNCATED_FRAC = 0.05
LARGE_RESAMPLING = 4.0
P_BAR_AMBIGUOUS = (0.35, 0.65)
#: ``RunOptions.length_frame``: the frame a bar is measured in, for inputs in linear fluxes (FITS)
LENGTH_FRAMES = ("auto", "measured", "softened")
#: the softening of the ``"softened"`` length frame, in units of the background noise
#: (:func:`survey_bars.normalise.normalise`'s ``length_frame_softening``). Chosen on the real-dev training
#: folds 0-3 as linear FITS files (3 against 10; benchmarks/RESULTS.md, "Real galaxies as FITS files")
LENGTH_FRAME_SOFTENING = 3.0
#: Bar measuring methods of ``RunOptions.method`` (``auto`` resolves per bundle:
#: :func:`survey_bars.measure.resolve_method`); the registry of :mod:`survey_bars.measure`.
METHODS = run_methods()


@dataclass(frozen=True)
class RunOptions:
    """Settings of a catalogue run (recorded in the catalogue metadata).

    Every value is checked when the options are made: a bad one raises
    :class:`survey_bars.errors.OptionError` (a ValueError) that names the option and what it takes.

    Parameters
    ----------
    model : str or None
        Bundle directory; None for the shipped default.
    smoothgrad_samples : int or None
        Noisy copies per galaxy; None takes the bundle's recommendation.
    noise_frac : float or None
        SmoothGrad noise as a fraction of the input range; None takes the bundle's value.
    n_subsets : int
        Disjoint SmoothGrad subsets for the length uncertainty.
    method : str
        Bar measuring method for ``bar_length_arcsec``: ``"auto"`` (default: ``"head"`` when
        the bundle has a learned length head, else ``"moments"``), ``"head"`` (the bundle's
        learned length head reads the length off the map; position angle, axis ratio and the
        map flags come from ``moments``), ``"moments"`` (calibrated second moments of the
        central saliency) or ``"bhambra2022"`` (the paper's published algorithm).
    pixel_scale : float or None
        Pixel scale (arcsec) to assume for files without a WCS.
    band : str or None
        Band of multi-band FITS files: a name or an index (see
        :func:`survey_bars.io.fits.select_band`); None takes the survey default.
    max_pixels : int
        Larger images are refused unread.
    save_saliency : str or None
        Directory for FITS saliency maps.
    cosmology : str
        An ``astropy.cosmology`` realisation name for ``bar_length_kpc``.
    threads : int
        onnxruntime threads per session.
    chunk_size : int
        Files normalised and inferred together; bounds the worker's memory.
    p_bar_min : float
        Bars are measured only where ``p_bar`` reaches this (in [0, 1]).
    length_frame : {"auto", "measured", "softened"}
        The frame the bar is measured in (the SmoothGrad map and every length) for an input in
        linear fluxes (a FITS file; a display image has one frame). ``"measured"``: the model
        frame, sized by the half-light radius of the galaxy's flux, which the probabilities come
        from and every bundle's calibrations were made in. ``"softened"``: a second, wider
        frame, sized by the half-light radius of the galaxy's asinh-softened light
        (:data:`LENGTH_FRAME_SOFTENING`), about the frame the galaxy's display image gets.
        ``"auto"`` (the default): ``"softened"`` where the stamp cuts the galaxy (its segment
        reaches the stamp's edge, ``Normalised.segment_at_edge``), else ``"measured"``. A stamp
        that cuts the disc holds too little of its light, its flux's half-light radius comes out
        small, and the bar runs to or past the measured frame's edge. Real bars given as linear
        FITS stamps (the real-dev stamps cut 98 % of their galaxies) came out at r 0.05 and 0.79
        of the volunteers' lengths on the held-out fold with ``"measured"``, and at r 0.41 and
        0.97 with ``"auto"``. Simulated stamps seldom cut their galaxies (5-8 % of the barred
        ones), and the softened frame reads them less well (r 0.83 against 0.94 for all), so
        ``"auto"`` keeps it for cut galaxies (``benchmarks/RESULTS.md``, "Real galaxies as FITS
        files"). An ``r50_arcsec`` from the input catalogue sizes the one frame.
    saliency_all : bool
        Compute SmoothGrad maps for every galaxy, not only for those whose ``p_bar`` reaches
        ``p_bar_min`` (the only ones whose bar is measured). Costs time; useful with
        ``save_saliency`` to keep maps of unbarred galaxies too.
    """

    model: str | None = None
    smoothgrad_samples: int | None = None
    noise_frac: float | None = None
    n_subsets: int = 4
    method: str = "auto"
    pixel_scale: float | None = None
    band: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    save_saliency: str | None = None
    cosmology: str = "Planck18"
    threads: int = 1
    chunk_size: int = 64
    p_bar_min: float = 0.5
    saliency_all: bool = False
    length_frame: str = "auto"

    def __post_init__(self):
        _check_options(self)

    def to_dict(self):
        """Return the options as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _check_options(o):
    """Raise OptionError (a ValueError), naming the option and what it takes, for a value out of range."""

    def bad(name, value, want):
        msg = f"{name} must be {want}; got {value!r}."
        raise OptionError(name, msg)

    def number(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)

    def count(name, minimum=1):
        v = getattr(o, name)
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum):
            bad(name, v, f"an integer >= {minimum}")

    if o.length_frame not in LENGTH_FRAMES:
        bad("length_frame", o.length_frame, f"one of {', '.join(LENGTH_FRAMES)}")
    if o.method not in METHODS:
        bad("method", o.method, f"one of {', '.join(METHODS)}")
    if not (number(o.p_bar_min) and 0.0 <= o.p_bar_min <= 1.0):
        bad("p_bar_min", o.p_bar_min, "a number in [0, 1]")
    for name in ("n_subsets", "threads", "chunk_size", "max_pixels"):
        count(name)
    if o.smoothgrad_samples is not None:
        count("smoothgrad_samples")
    for name in ("noise_frac", "pixel_scale"):
        v = getattr(o, name)
        if v is not None and not (number(v) and v > 0):
            bad(name, v, "a positive number or None")
    if o.band is not None and not isinstance(o.band, (str, int, np.integer)):
        bad("band", o.band, "a band name, an index or None")
    if o.cosmology != "Planck18":  # the default needs no check (and no astropy.cosmology import)
        try:
            check_cosmology(o.cosmology)
        except ValueError as exc:
            raise OptionError("cosmology", str(exc)) from None


def prepare_item(item, options, prep_cfg):
    """Read and normalise one file, and start its catalogue row: the pipeline's first two stages.

    Parameters
    ----------
    item : InputItem
        The file and what the input catalogue says about it.
    options : RunOptions
        The run's settings (pixel scale, band, pixel limit).
    prep_cfg : survey_bars.normalise.NormaliseConfig
        The bundle's preprocessing.

    Returns
    -------
    tuple
        ``(row, normalised, cd)``: the row with the reading's fields and image-level flags, the
        :class:`~survey_bars.normalise.Normalised` frame, and the cutout's CD matrix; or
        ``(error row, None, None)`` when the file cannot be used. Never raises.
    """
    try:
        cut = read_cutout(item.file, pixel_scale=item.pixel_scale or options.pixel_scale, max_pixels=options.max_pixels,
                          band=options.band)
    except CutoutError as exc:
        return _error_row(item, f"{exc.reason}: {exc.message}"), None, None
    except Exception as exc:  # never lose a row, whatever the file does
        return _error_row(item, f"internal: {type(exc).__name__}: {exc}"), None, None
    flags = int(cut.flags)
    row = empty_row(
        object_id=item.object_id or cut.object_id,
        file=cut.path,
        status="ok",
        ra=item.ra if item.ra is not None else cut.ra,
        dec=item.dec if item.dec is not None else cut.dec,
        redshift=item.redshift if item.redshift is not None else cut.redshift,
        pixel_scale_arcsec=cut.pixel_scale_arcsec,
        band=cut.band,
    )
    r50_pix = None
    if item.r50_arcsec is not None and np.isfinite(item.r50_arcsec) and item.r50_arcsec > 0 and cut.pixel_scale_arcsec:
        r50_pix = item.r50_arcsec / cut.pixel_scale_arcsec
    try:
        # a FITS input's bar may be measured in a wider frame (RunOptions.length_frame); a display has one
        soft = None if cut.display or options.length_frame == "measured" else LENGTH_FRAME_SOFTENING
        norm = normalise(cut.data, prep_cfg, r50_pix=r50_pix, variance=cut.variance, length_frame_softening=soft,
                         length_frame_always=options.length_frame == "softened")
    except ValueError as exc:
        row.update(status="error", error=f"normalise: {exc}")
        return row, None, None
    # a display image has no photometry: no S/N and no LOW_SNR (flag DISPLAY_IMAGE says why)
    snr = None if cut.display or not np.isfinite(norm.snr) else float(norm.snr)
    if snr is not None and snr < LOW_SNR:
        flags |= Flag.LOW_SNR
    if norm.bad_centre_frac > NAN_CENTRE_FRAC:
        flags |= Flag.NAN_NEAR_CENTRE
    if norm.centre_offset_frac > OFF_CENTRE_FRAC:
        flags |= Flag.OFF_CENTRE
    if norm.outside_frac > TRUNCATED_FRAC:
        flags |= Flag.TRUNCATED
    if norm.scale > LARGE_RESAMPLING or norm.scale < 1.0 / LARGE_RESAMPLING:
        flags |= Flag.LARGE_RESAMPLING
    if norm.size_from_fallback:
        flags |= Flag.SIZE_FROM_FALLBACK
    row.update(
        r50_arcsec=norm.r50_pix * cut.pixel_scale_arcsec if cut.pixel_scale_arcsec else None,
        resample_scale=norm.scale,
        snr=snr,
        quality_flags=flags,
    )
    return row, norm, cut.cd


def _error_row(item, error):
    """The catalogue row of a file that could not be used (the id a readable file without OBJID gets)."""
    return empty_row(object_id=item.object_id or file_stem(item.file), file=os.path.abspath(item.file), status="error",
                     error=error, ra=item.ra, dec=item.dec, redshift=item.redshift)


def _finite_or_none(v):
    v = float(v)
    return v if np.isfinite(v) else None


def process_items(items, options=None, *, runtime=None):
    """Process one partition's files into catalogue rows.

    Parameters
    ----------
    items : list of InputItem or str
        The partition's inputs, in order.
    options : RunOptions, optional
        Run settings.
    runtime : survey_bars.inference.runtime.ModelRuntime, optional
        A runtime to use (default: the per-process cached runtime of ``options.model``).

    Returns
    -------
    pyarrow.Table
        Exactly ``len(items)`` rows in input order, with the catalogue schema.
    """

    options = options or RunOptions()
    items = [it if isinstance(it, InputItem) else InputItem(file=str(it)) for it in items]
    rt = runtime or get_runtime(options.model, threads=options.threads)
    card = rt.card
    prep_cfg = rt.bundle.preprocessing
    sg = bundle_settings(rt)
    n_samples = int(options.smoothgrad_samples or sg["samples"])
    noise_frac = float(options.noise_frac or sg["noise_frac"])
    n_subsets = options.n_subsets if n_samples % options.n_subsets == 0 and n_samples >= options.n_subsets else 1
    symmetrise = bool(sg["symmetrise"])
    options = dataclasses.replace(options, method=resolve_method(card, options.method))
    calib = calibration_for(card, options.method)
    columns = _column_calibrations(card)
    names = rt.class_names
    rows = []
    for start in range(0, len(items), options.chunk_size):
        chunk = items[start : start + options.chunk_size]
        prepared = [prepare_item(it, options, prep_cfg) for it in chunk]
        ok = [i for i, (_, norm, _) in enumerate(prepared) if norm is not None]
        if ok:
            try:
                _infer_chunk(rt, prepared, ok, names, options, n_samples, noise_frac, n_subsets, calib, symmetrise,
                             columns)
            except Exception as exc:  # a model failure marks the chunk's rows, never loses them
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                for i in ok:
                    prepared[i][0].update(status="error", error=f"inference: {tb}")
        rows.extend(r for r, _, _ in prepared)
    # kpc for the whole partition at once
    z = np.array([r["redshift"] if r["redshift"] is not None else np.nan for r in rows], dtype=float)
    if np.isfinite(z).any():
        scale = kpc_per_arcsec(z, options.cosmology)
        for r, s in zip(rows, scale):
            if r["bar_length_arcsec"] is not None and np.isfinite(s):
                r["bar_length_kpc"] = r["bar_length_arcsec"] * s
    return rows_to_table(rows)


def _column_calibrations(card):
    """``[(method, calibration or None)]`` of the methods that fill catalogue columns of their own.

    Every measured bar gets these columns whatever the run's method; a calibration made for
    another version of a method's measurement leaves its columns null instead of failing the run.
    """
    out = []
    for name in method_names():
        m = get_method(name)
        if not m.columns:
            continue
        try:
            out.append((m, calibration_for(card, name)))
        except ValueError:
            out.append((m, None))
    return out


def _infer_chunk(rt, prepared, ok, names, options, n_samples, noise_frac, n_subsets, calib, symmetrise=False,
                 columns=()):
    imgs = np.stack([prepared[i][1].image for i in ok])
    # the frames the bars are measured in (a FITS input's wider length frame, when it has one)
    frames = [prepared[i][1].length_frame or prepared[i][1] for i in ok]
    fwd = rt.forward(imgs)
    probs = fwd["probs"]
    col = {n: j for j, n in enumerate(names)}
    p_bar_all = probs[:, col["p_bar"]] if "p_bar" in col else np.zeros(len(ok))
    # SmoothGrad only where a bar will be measured (or everywhere when asked)
    want = np.ones(len(ok), bool) if options.saliency_all else p_bar_all >= options.p_bar_min
    sel = np.nonzero(want)[0]
    sal = {}
    if sel.size:
        ids = [prepared[ok[k]][0]["object_id"] for k in sel]
        maps = smoothgrad_batch(rt, np.stack([frames[k].image for k in sel]), ids, n_samples=n_samples,
                                noise_frac=noise_frac, n_subsets=n_subsets, symmetrise=symmetrise)
        sal = dict(zip(sel.tolist(), maps))
    # the direct CNN's length comes from the map's frame too: one more forward pass per wider frame mapped
    direct_px = np.asarray(fwd["bar_length_direct"], dtype=float).copy()
    wide = [k for k in sel.tolist() if frames[k] is not prepared[ok[k]][1]]
    if wide:
        direct_px[wide] = rt.forward(np.stack([frames[k].image for k in wide]))["bar_length_direct"]
    method = get_method(options.method)
    geometry = method.geometry or method.name  # position angle, axis ratio and map flags
    measures = {k: MapMeasures(sg, get_method) for k, sg in sal.items()}
    candidates = {k: sg for k, sg in sal.items() if p_bar_all[k] >= options.p_bar_min}
    raws = None
    for k, i in enumerate(ok):
        row, norm, cd = prepared[i]
        flags = int(row["quality_flags"] or 0)
        for n, j in col.items():
            if n in CLASS_NAMES:
                row[n] = float(probs[k, j])
        p_bar = row.get("p_bar")
        if p_bar is not None and P_BAR_AMBIGUOUS[0] <= p_bar <= P_BAR_AMBIGUOUS[1]:
            flags |= Flag.P_BAR_AMBIGUOUS
        # no pixel scale (an image without one): lengths in arcsec stay null (flag NO_PIXEL_SCALE)
        frame = frames[k]  # the map's frame: the bar's lengths are in its pixels
        map_to_arcsec = frame.scale * (row["pixel_scale_arcsec"] or np.nan)
        direct = float(direct_px[k])  # in the pixels of the map's frame, as the other lengths
        sg = sal.get(k)
        meas = measures[k].get(geometry) if sg is not None else None
        measured = p_bar is not None and p_bar >= options.p_bar_min and meas is not None and np.isfinite(meas.length)
        if measured:
            if raws is None:  # every candidate's raw length at once (a learned head reads them batched)
                raws = method.raw_lengths(rt, candidates, n_subsets, measures)
            raw, subs = raws[k]
            length, err = calibrated_length(raw, subs, calib, frame.scale)
            own = {}
            for m, m_calib in columns:
                own.update(m.column_values(measures[k], m_calib, frame.scale, map_to_arcsec))
            row.update(
                bar_length_arcsec=_finite_or_none(length * map_to_arcsec),
                bar_length_err_arcsec=_finite_or_none(err * map_to_arcsec),
                bar_pa_deg=_finite_or_none(sky_pa(meas.pa_deg, cd)),
                bar_axis_ratio=_finite_or_none(meas.axis_ratio),
                bar_length_direct_arcsec=_finite_or_none(direct * map_to_arcsec),
                **{c: _finite_or_none(v) for c, v in own.items()},
            )
            flags |= meas.flags & ~int(Flag.BAR_NOT_MEASURED)
        else:
            flags |= Flag.BAR_NOT_MEASURED | (meas.flags & int(Flag.DIFFUSE_SALIENCY) if meas is not None else 0)
        row["quality_flags"] = flags
        if options.save_saliency and sg is not None:
            write_saliency_map(options.save_saliency, row["object_id"], sg.map, frame, meas)
