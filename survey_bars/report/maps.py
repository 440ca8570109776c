"""Saliency maps for the galleried rows, recomputed with the model exactly as ``process`` made them.
"""

from __future__ import annotations

import numpy as np

from ..inference.runtime import get_runtime
from ..inference.saliency import smoothgrad_batch
from ..io.inputs import InputItem
from ..pipeline import RunOptions, prepare_item


def recompute_saliency(rows, model=None, *, metadata=None, runtime=None, band=None):
    """Recompute SmoothGrad maps for a few rows with the model runtime.

    The frames and noise are those of ``survey-bars process``: the same preprocessing (the
    bundle's, with the row's ``r50_arcsec``), the same per-object noise seeds and sample
    count, so the maps equal the ones a ``--save-saliency`` run would have written.

    Parameters
    ----------
    rows : list of dict
        Catalogue rows (``object_id``, ``file``, ``pixel_scale_arcsec``, ``r50_arcsec``).
    model : str, optional
        Model bundle (default: the catalogue's ``model_path``, else the shipped bundle).
    metadata : dict, optional
        The catalogue metadata (for the run's SmoothGrad settings).
    runtime : survey_bars.inference.runtime.ModelRuntime, optional
        A runtime to use instead of loading ``model``.
    band : str or int, optional
        The band of multi-band FITS files (default: the run's ``--band``, ``run_config["band"]``
        of ``metadata``), so the maps are of the band the catalogue measured.

    Returns
    -------
    dict
        ``object_id`` -> ``{"map", "image", "scale", "x0", "y0"}``, or -> an error string
        for rows that could not be recomputed.
    """
    metadata = metadata or {}
    run = metadata.get("run_config") or {}
    if band is None:
        band = run.get("band")
    if runtime is None:
        runtime = get_runtime(model or metadata.get("model_path") or run.get("model"))
    prep = runtime.bundle.preprocessing
    # the run's overrides, else the bundle's settings (symmetrisation included)
    n_samples = int(run["smoothgrad_samples"]) if run.get("smoothgrad_samples") else None
    noise_frac = float(run["noise_frac"]) if run.get("noise_frac") else None
    length_frame = run.get("length_frame") or "measured"  # catalogues made before the option
    options = RunOptions(band=band, length_frame=length_frame)
    out, frames, ids = {}, [], []
    for row in rows:
        oid = row["object_id"]
        # the row's r50 gives the run's frame again; with another length frame the size is measured afresh (the
        # row's r50 is the probabilities' frame), which gives the run's frames unless the input catalogue gave it
        item = InputItem(file=row["file"], object_id=oid, pixel_scale=row.get("pixel_scale_arcsec"),
                         r50_arcsec=row.get("r50_arcsec") if length_frame == "measured" else None)
        got, norm, _ = prepare_item(item, options, prep)  # the pipeline's own reading and normalisation
        if norm is None:
            out[oid] = f"cannot recompute: {got['error']}"
            continue
        frames.append(norm.length_frame or norm)  # the frame the bar was measured in
        ids.append(oid)
    if frames:
        res = smoothgrad_batch(runtime, np.stack([f.image for f in frames]), ids, n_samples=n_samples, noise_frac=noise_frac, n_subsets=1)
        for oid, norm, r in zip(ids, frames, res):
            out[oid] = {"map": r.map, "image": norm.image, "scale": norm.scale, "x0": norm.x0, "y0": norm.y0}
    return out
