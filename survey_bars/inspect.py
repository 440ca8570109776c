"""Visual QA: ``survey-bars inspect``, a static HTML report for a catalogue.

The report (``index.html`` and PNG figures in one directory, relative links, no JavaScript)
shows:

- counts by status, by quality flag and by error reason;
- the distributions of ``p_bar`` and of the bar lengths, and the saliency lengths compared
  with the direct-CNN lengths (and the published Bhambra et al. 2022 sweep, when present);
- galleries (random, highest ``p_bar``, most flagged, and a user ``--query``): each tile shows
  the cutout, the model input and the SmoothGrad saliency map, with the measured bar drawn
  at its position angle and length;
- the model card and the run metadata stored in the catalogue.

It is built for catalogues of millions of rows: one streaming pass over only the needed
columns (``pyarrow.parquet.ParquetFile.iter_batches``) accumulates the counts, histograms and
correlation sums, keeps a uniform sample for the scatter plots, and keeps the gallery rows
with streaming top-k selections (a uniform reservoir is a top-k on random keys). Only the
few galleried objects are read from their cutout files (FITS, JPEG or PNG; the band of
multi-band FITS files is the run's ``--band``, and colour images are shown in colour).

Examples
--------
>>> from survey_bars.inspect import build_report                      # doctest: +SKIP
>>> build_report("catalogue.parquet", "report/", query="p_bar > 0.9")  # doctest: +SKIP
'report/index.html'
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .geometry import pixel_direction
from .io import CutoutError, read_cutout
from .io.cutout import safe_name
from .io.saliency_maps import find_saliency_map, read_saliency_map

__all__ = [
    "GALLERIES",
    "CatalogueScan",
    "scan_catalogue",
    "build_report",
    "configure_parser",
    "run_cli",
]

#: columns the report reads when the catalogue has them (plus those a --query names)
REPORT_COLUMNS = [
    "object_id",
    "file",
    "status",
    "error",
    "pixel_scale_arcsec",
    "r50_arcsec",
    "p_bar",
    "bar_length_arcsec",
    "bar_length_err_arcsec",
    "bar_pa_deg",
    "bar_axis_ratio",
    "bar_length_moments_arcsec",
    "bar_length_direct_arcsec",
    "bar_length_bhambra2022_arcsec",
    "quality_flags",
]
#: columns without which the file is not a usable survey-bars catalogue
REQUIRED_COLUMNS = ["object_id", "file", "status", "quality_flags", "p_bar", "bar_length_arcsec", "bar_pa_deg"]

#: gallery key -> (title, explanation)
GALLERIES = {
    "random": ("Random", "A uniform random sample of all rows."),
    "top_p_bar": ("Highest p_bar", "The galaxies the model is most confident are barred."),
    "most_flagged": ("Most flagged", "The rows with the most quality flags set (ties broken at random)."),
    "query": ("Query", "A uniform random sample of the rows matching the query."),
}

_P_BINS = np.linspace(0.0, 1.0, 51)
# fine log-spaced bins for lengths (0.01 to 10^4 arcsec, 500 per decade): streaming
# histograms that are re-binned for display once the range is known
_L_EDGES = np.logspace(-2, 4, 6 * 500 + 1)
_LENGTHS = {
    "bar_length_arcsec": ("saliency (this model)", "#1f77b4"),
    "bar_length_moments_arcsec": ("saliency moments", "#8c564b"),
    "bar_length_direct_arcsec": ("direct CNN", "#ff7f0e"),
    "bar_length_bhambra2022_arcsec": ("Bhambra et al. 2022 sweep", "#2ca02c"),
}
_QUERY_WORDS = {"and", "or", "not", "in", "is", "True", "False", "None", "nan", "inf"}


# ------------------------------------------------------------------------ streaming pieces


class _TopK:
    """Keep the ``k`` rows with the largest keys seen so far (NaN keys are never kept)."""

    def __init__(self, k):
        self.k = int(k)
        self.keys = np.empty(0)
        self.rows = []

    def offer(self, keys, batch):
        if self.k <= 0:
            return
        keys = np.asarray(keys, dtype=float)
        idx = np.flatnonzero(np.isfinite(keys))
        if len(self.rows) >= self.k and idx.size:
            idx = idx[keys[idx] > self.keys.min()]
        if not idx.size:
            return
        if idx.size > self.k:
            idx = idx[np.argpartition(-keys[idx], self.k - 1)[: self.k]]
        idx = np.sort(idx)
        rows = batch.take(idx).to_pylist()
        allkeys = np.concatenate([self.keys, keys[idx]])
        allrows = self.rows + rows
        order = np.argsort(-allkeys, kind="stable")[: self.k]
        self.keys = allkeys[order]
        self.rows = [allrows[i] for i in order]


class _Moments:
    """Streaming sums for Pearson r and the RMS difference of two columns."""

    def __init__(self):
        self.n = 0
        self.s = np.zeros(5)  # x, y, xx, yy, xy

    def add(self, x, y):
        self.n += x.size
        self.s += [x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()]

    def stats(self):
        if self.n < 2:
            return {"n": self.n, "r": float("nan"), "rms": float("nan"), "bias": float("nan")}
        n = self.n
        sx, sy, sxx, syy, sxy = self.s
        vx, vy = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
        cov = sxy / n - sx * sy / n**2
        r = cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")
        msd = (sxx - 2 * sxy + syy) / n
        return {"n": n, "r": float(r), "rms": math.sqrt(max(msd, 0.0)), "bias": float((sy - sx) / n)}


def _popcount(q):
    q = np.asarray(q, dtype=np.uint32)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(q).astype(np.int64)
    out = np.zeros(q.shape, dtype=np.int64)  # pragma: no cover - numpy < 2
    for b in range(32):
        out += (q >> np.uint32(b)) & np.uint32(1)
    return out


def _numpy(batch, name, dtype=float):
    col = batch.column(name)
    if dtype is float:
        return col.to_numpy(zero_copy_only=False).astype(float)  # nulls -> nan
    import pyarrow.compute as pc

    return pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(dtype)


@dataclass
class CatalogueScan:
    """Everything the report needs from one streaming pass over a catalogue.

    Attributes
    ----------
    path : str
        The catalogue.
    files : list of str
        Its Parquet files.
    metadata : dict
        The ``survey_bars`` file metadata.
    columns : list of str
        All columns of the catalogue.
    n_rows : int
        Rows scanned.
    status_counts : collections.Counter
        Rows per ``status`` value.
    error_reasons : collections.Counter
        Error rows per reason (the text before the first colon of ``error``).
    error_examples : dict
        One full error message per reason.
    flag_counts : dict
        Rows per flag name.
    n_unflagged : int
        Rows with ``quality_flags == 0``.
    popcount_counts : ndarray
        Rows per number of flags set (index = number of flags).
    p_bar_hist : ndarray
        Counts of ``p_bar`` in 50 bins on [0, 1].
    length_hists : dict
        Column -> counts on the fine log-spaced length bins.
    length_missing : dict
        Column -> rows with a null length.
    pairs : dict
        Column -> ``{"n", "r", "rms", "bias"}`` of that length against ``bar_length_arcsec``,
        over the whole catalogue.
    scatter : dict
        Column -> ``(x, y)`` arrays: a uniform sample of the pairs for plotting.
    galleries : dict
        Gallery key -> list of row dicts.
    query : str or None
        The user query.
    n_query_matches : int
        Rows matching the query.
    """

    path: str
    files: list
    metadata: dict
    columns: list
    n_rows: int = 0
    status_counts: Counter = field(default_factory=Counter)
    error_reasons: Counter = field(default_factory=Counter)
    error_examples: dict = field(default_factory=dict)
    flag_counts: dict = field(default_factory=dict)
    n_unflagged: int = 0
    popcount_counts: np.ndarray = field(default_factory=lambda: np.zeros(33, dtype=np.int64))
    p_bar_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(_P_BINS) - 1, dtype=np.int64))
    length_hists: dict = field(default_factory=dict)
    length_missing: dict = field(default_factory=dict)
    pairs: dict = field(default_factory=dict)
    scatter: dict = field(default_factory=dict)
    galleries: dict = field(default_factory=dict)
    query: str | None = None
    n_query_matches: int = 0


def _catalogue_files(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.fspath(path)
    if not os.path.exists(path):
        msg = f"The catalogue {path!r} does not exist. Pass the file (or directory) written by `survey-bars process --out`."
        raise FileNotFoundError(msg)
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f) for f in os.listdir(path) if f.endswith(".parquet") and not f.startswith(".")
        )
        if not files:
            msg = f"The directory {path!r} holds no .parquet files; is it a survey-bars catalogue directory?"
            raise ValueError(msg)
    else:
        files = [path]
    for f in files:
        try:
            pq.ParquetFile(f).close()
        except (pa.ArrowException, OSError) as exc:
            msg = f"{f!r} is not a readable Parquet file ({exc}). Pass a catalogue written by `survey-bars process`."
            raise ValueError(msg) from None
    return files


def _query_columns(query, available):
    names = set(re.findall(r"`([^`]+)`", query))
    names |= set(re.findall(r"\b([A-Za-z_]\w*)\b", re.sub(r"`[^`]+`|'[^']*'|\"[^\"]*\"", " ", query)))
    return [n for n in available if n in names]


def scan_catalogue(path, *, query=None, n_gallery=12, seed=0, batch_size=65_536, n_scatter=5000):
    """Stream a catalogue once and collect the report's statistics and gallery rows.

    Only the columns in :data:`REPORT_COLUMNS` (and those the query names) are read, batch by
    batch; memory does not grow with the number of rows.

    Parameters
    ----------
    path : str
        Catalogue file or directory of catalogue files.
    query : str, optional
        A ``pandas.DataFrame.query`` expression selecting the rows of the "query" gallery,
        e.g. ``"p_bar > 0.9 and bar_length_arcsec > 5"``.
    n_gallery : int, optional
        Rows per gallery.
    seed : int, optional
        Seed of the random sample and of the tie-breaks.
    batch_size : int, optional
        Rows per Arrow batch.
    n_scatter : int, optional
        Points kept for each comparison scatter plot.

    Returns
    -------
    CatalogueScan

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a survey-bars catalogue, or the query is invalid.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .io.catalogue import read_metadata
    from .flags import flag_table

    files = _catalogue_files(path)
    try:
        metadata = read_metadata(files[0])
    except ValueError:
        msg = (
            f"{files[0]!r} is a Parquet file but not a survey-bars catalogue: it has no "
            "'survey_bars' file metadata. Pass the output of `survey-bars process`."
        )
        raise ValueError(msg) from None
    available = pq.read_schema(files[0]).names
    missing = [c for c in REQUIRED_COLUMNS if c not in available]
    if missing:
        msg = f"The catalogue {path!r} lacks the columns {missing}; it was not written by this survey-bars. Re-run `survey-bars process`."
        raise ValueError(msg)
    columns = [c for c in REPORT_COLUMNS if c in available]
    if query:
        columns += [c for c in _query_columns(query, available) if c not in columns]
    lengths = [c for c in _LENGTHS if c in available]

    flags = metadata.get("flags") or flag_table()
    scan = CatalogueScan(path=os.fspath(path), files=files, metadata=metadata, columns=available, query=query or None)
    scan.flag_counts = {f["name"]: 0 for f in flags}
    scan.length_hists = {c: np.zeros(len(_L_EDGES) - 1, dtype=np.int64) for c in lengths}
    scan.length_missing = {c: 0 for c in lengths}
    low = {c: 0 for c in lengths}
    moments = {c: _Moments() for c in lengths if c != "bar_length_arcsec"}
    samples = {c: _TopK(n_scatter) for c in moments}

    rng = np.random.default_rng(seed)
    picks = {
        "random": _TopK(n_gallery),
        "top_p_bar": _TopK(n_gallery),
        "most_flagged": _TopK(n_gallery),
    }
    if query:
        picks["query"] = _TopK(n_gallery)

    for f in files:
        pf = pq.ParquetFile(f)
        for rb in pf.iter_batches(batch_size=batch_size, columns=columns):
            batch = pa.Table.from_batches([rb])
            n = batch.num_rows
            if n == 0:
                continue
            scan.n_rows += n
            # status and error reasons
            status = batch.column("status")
            for item in pc.value_counts(pc.fill_null(status, "null")).to_pylist():
                scan.status_counts[item["values"]] += item["counts"]
            if "error" in columns:
                err = pc.filter(batch.column("error"), pc.equal(pc.fill_null(status, ""), "error"))
                err = pc.drop_null(err)
                if len(err):
                    reasons = pc.list_element(pc.split_pattern(err, ":", max_splits=1), 0)
                    reasons = pc.utf8_trim_whitespace(reasons)
                    for item in pc.value_counts(reasons).to_pylist():
                        reason = item["values"]
                        if reason not in scan.error_reasons and len(scan.error_reasons) >= 50:
                            reason = "other"
                        scan.error_reasons[reason] += item["counts"]
                        if reason not in scan.error_examples:
                            i = pc.index(reasons, item["values"]).as_py()
                            scan.error_examples[reason] = err[i].as_py()
            # flags
            q = _numpy(batch, "quality_flags", np.uint32)
            for fl in flags:
                scan.flag_counts[fl["name"]] += int(np.count_nonzero(q & np.uint32(fl["value"])))
            pop = _popcount(q)
            scan.n_unflagged += int(np.count_nonzero(pop == 0))
            scan.popcount_counts += np.bincount(pop, minlength=33)[:33]
            # distributions
            p = _numpy(batch, "p_bar")
            fin = np.isfinite(p)
            scan.p_bar_hist += np.histogram(np.clip(p[fin], 0, 1), bins=_P_BINS)[0]
            vals = {c: _numpy(batch, c) for c in lengths}
            for c, v in vals.items():
                ok = np.isfinite(v)
                scan.length_missing[c] += int(n - ok.sum())
                low[c] += int(np.count_nonzero(v[ok] < _L_EDGES[0]))
                scan.length_hists[c] += np.histogram(v[ok], bins=_L_EDGES)[0]
            for c in moments:
                x, y = vals["bar_length_arcsec"], vals[c]
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.any():
                    moments[c].add(x[ok], y[ok])
                    keys = np.where(ok, rng.random(n), np.nan)
                    samples[c].offer(keys, pa.table({"x": x, "y": y}))
            # galleries
            picks["random"].offer(rng.random(n), batch)
            picks["top_p_bar"].offer(np.where(fin, p, np.nan), batch)
            picks["most_flagged"].offer(np.where(pop > 0, pop + 0.5 * rng.random(n), np.nan), batch)
            if query:
                df = batch.to_pandas()
                try:
                    hit = df.query(query).index.to_numpy()
                except Exception as exc:
                    msg = (
                        f"The --query {query!r} failed on the catalogue: {type(exc).__name__}: {exc}. "
                        f"Write a pandas DataFrame.query expression over the columns {available}, "
                        "e.g. \"p_bar > 0.9 and bar_length_arcsec > 5\"."
                    )
                    raise ValueError(msg) from None
                scan.n_query_matches += int(hit.size)
                keys = np.full(n, np.nan)
                keys[hit] = rng.random(hit.size)
                picks["query"].offer(keys, batch)
        pf.close()

    for c in lengths:  # values below 0.01" go to the first bin
        scan.length_hists[c][0] += low[c]
    scan.pairs = {c: m.stats() for c, m in moments.items()}
    for c, s in samples.items():
        scan.scatter[c] = (
            np.array([r["x"] for r in s.rows], dtype=float),
            np.array([r["y"] for r in s.rows], dtype=float),
        )
    scan.galleries = {k: v.rows for k, v in picks.items()}
    return scan


# ------------------------------------------------------------------------ saliency maps


def _recompute_saliency(rows, model=None, *, metadata=None, runtime=None, band=None):
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
    from .normalise import normalise
    from .inference.saliency import smoothgrad_batch

    metadata = metadata or {}
    run = metadata.get("run_config") or {}
    if band is None:
        band = run.get("band")
    if runtime is None:
        from .inference.runtime import get_runtime

        runtime = get_runtime(model or metadata.get("model_path") or run.get("model"))
    prep = runtime.bundle.preprocessing
    # the run's overrides, else the bundle's settings (symmetrisation included)
    n_samples = int(run["smoothgrad_samples"]) if run.get("smoothgrad_samples") else None
    noise_frac = float(run["noise_frac"]) if run.get("noise_frac") else None
    out, frames, ids = {}, [], []
    for row in rows:
        oid = row["object_id"]
        try:
            cut = read_cutout(row["file"], pixel_scale=row.get("pixel_scale_arcsec"), band=band)
            r50 = row.get("r50_arcsec")
            scale = row.get("pixel_scale_arcsec") or cut.pixel_scale_arcsec
            r50_pix = r50 / scale if r50 and scale else None
            norm = normalise(cut.data, prep, r50_pix=r50_pix)
        except (CutoutError, ValueError, OSError) as exc:
            out[oid] = f"cannot recompute: {exc}"
            continue
        frames.append(norm)
        ids.append(oid)
    if frames:
        res = smoothgrad_batch(runtime, np.stack([f.image for f in frames]), ids, n_samples=n_samples, noise_frac=noise_frac, n_subsets=1)
        for oid, norm, r in zip(ids, frames, res):
            out[oid] = {"map": r.map, "image": norm.image, "scale": norm.scale, "x0": norm.x0, "y0": norm.y0}
    return out


# ------------------------------------------------------------------------ figures


def _figure(w, h, layout=None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout=layout)
    fig.patch.set_facecolor("white")
    return fig


def _save(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=fig.dpi, facecolor=fig.get_facecolor())
    os.replace(tmp, path)


def _fmt(v, spec=".2f", none="–"):
    if v is None:
        return none
    try:
        if not np.isfinite(v):
            return none
    except TypeError:
        return html.escape(str(v))
    return format(v, spec)


def _plot_flags(scan, path):
    names = list(scan.flag_counts)
    counts = np.array([scan.flag_counts[n] for n in names], dtype=float)
    fig = _figure(5.8, 0.22 * len(names) + 0.7, layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    frac = counts / max(scan.n_rows, 1)
    ax.barh(y, frac * 100, color=np.where(counts > 0, "#d62728", "#cccccc"), height=0.7)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("rows flagged (%)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlim(0, max(5.0, frac.max() * 115) if counts.size else 5.0)
    for yy, c, fr in zip(y, counts, frac):
        if c:
            ax.text(fr * 100, yy, f" {int(c):,}", va="center", fontsize=7)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    _save(fig, path)


def _display_bins(hists, n_bins=40):
    """Re-bin fine log-spaced length histograms into linear bins up to a robust maximum."""
    total = sum(h for h in hists.values())
    centres = np.sqrt(_L_EDGES[:-1] * _L_EDGES[1:])
    if total.sum() == 0:
        return np.linspace(0, 1, n_bins + 1), {c: np.zeros(n_bins) for c in hists}, {c: 0 for c in hists}
    cum = np.cumsum(total) / total.sum()
    hi = centres[min(np.searchsorted(cum, 0.995), len(centres) - 1)] * 1.05
    edges = np.linspace(0.0, hi, n_bins + 1)
    out, over = {}, {}
    for c, h in hists.items():
        k = np.clip(np.searchsorted(edges, centres, side="right") - 1, 0, n_bins - 1)
        keep = centres <= hi
        out[c] = np.bincount(k[keep], weights=h[keep], minlength=n_bins)
        over[c] = int(h[~keep].sum())
    return edges, out, over


def _plot_distributions(scan, path):
    fig = _figure(10.0, 3.3, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.stairs(scan.p_bar_hist, _P_BINS, fill=True, color="#9467bd", alpha=0.8)
    ax1.set_xlabel("p_bar", fontsize=9)
    ax1.set_ylabel("rows", fontsize=9)
    ax1.set_title(f"p_bar ({int(scan.p_bar_hist.sum()):,} rows with a value)", fontsize=10)
    ax1.set_xlim(0, 1)
    edges, hists, over = _display_bins(scan.length_hists)
    for c, h in hists.items():
        label, color = _LENGTHS[c]
        n = int(scan.length_hists[c].sum())
        extra = f", {over[c]:,} beyond" if over[c] else ""
        ax2.stairs(h, edges, color=color, lw=1.8, label=f"{label} (N={n:,}{extra})")
    ax2.set_xlabel("bar length (arcsec, full end-to-end)", fontsize=9)
    ax2.set_ylabel("rows", fontsize=9)
    ax2.set_title("Bar lengths", fontsize=10)
    ax2.set_xlim(edges[0], edges[-1])
    ax2.legend(fontsize=7, frameon=False)
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=8)
        for s in ("top", "right"):
            ax.spines[s].set_visible(False)
    _save(fig, path)


def _plot_comparison(scan, path):
    cols = [c for c in scan.scatter]
    if not cols:
        return False
    fig = _figure(3.1 * len(cols), 3.2, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(cols)))
    for ax, c in zip(axes, cols):
        x, y = scan.scatter[c]
        st = scan.pairs[c]
        label, color = _LENGTHS[c]
        if x.size:
            lim = float(np.nanpercentile(np.concatenate([x, y]), 99.5)) * 1.08 or 1.0
            ax.scatter(x, y, s=6 if x.size > 500 else 14, alpha=0.5 if x.size > 500 else 0.8, color=color, edgecolors="none")
            ax.plot([0, lim], [0, lim], color="0.3", lw=1, ls="--", label="1:1")
            ax.set_xlim(0, lim)
            ax.set_ylim(0, lim)
        ax.set_xlabel("saliency bar_length_arcsec", fontsize=9)
        ax.set_ylabel(f"{c}", fontsize=9)
        ax.set_title(f"{label}\nr = {_fmt(st['r'])}, RMS = {_fmt(st['rms'])}\", N = {st['n']:,}", fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=8)
    _save(fig, path)
    return True


def _stretch_cutout(data):
    """Arcsinh stretch relative to the galaxy's peak: faint outskirts and the bright core both show."""
    d = np.asarray(data, dtype=float)
    fin = np.isfinite(d)
    if not fin.any():
        return np.zeros_like(d), 0, 1
    v = d[fin]
    bkg = float(np.median(v))
    noise = 1.4826 * float(np.median(np.abs(v - bkg))) or float(np.std(v)) or 1.0
    peak = max(float(np.percentile(v, 99.9)) - bkg, 3 * noise)
    soft = max(0.03 * peak, noise)
    img = np.arcsinh((d - bkg) / soft)
    return img, float(np.arcsinh(-1.5 * noise / soft)), float(np.arcsinh(peak / soft))


def _bar_segment(cx, cy, direction, length_pix):
    half = 0.5 * length_pix * np.asarray(direction)
    return [cx - half[0], cx + half[0]], [cy - half[1], cy + half[1]]


def _draw_bar(ax, xs, ys, *, lw=1.4, solid=False):
    """The measured bar: a (dashed) line with perpendicular end ticks, outlined for contrast."""
    from matplotlib import patheffects

    stroke = [patheffects.withStroke(linewidth=lw + 1.6, foreground="black")]
    ax.plot(xs, ys, color="#00e5ff", lw=lw, ls="-" if solid else (0, (3, 2)), solid_capstyle="round", path_effects=stroke)
    dx, dy = xs[1] - xs[0], ys[1] - ys[0]
    norm = math.hypot(dx, dy) or 1.0
    tx, ty = -dy / norm, dx / norm
    tick = 0.12 * norm + 1.0
    for x, y in zip(xs, ys):
        ax.plot([x - tick * tx, x + tick * tx], [y - tick * ty, y + tick * ty], color="#00e5ff", lw=lw + 0.6, solid_capstyle="round", path_effects=stroke)


def _note(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color="0.3", wrap=True, transform=ax.transAxes)
    ax.set_facecolor("#f2f2f2")


def _render_tile(row, path, *, saliency=None, saliency_note=None, prep=None, band=None):
    """Draw one gallery tile (cutout, model input, saliency) and return notes for the caption.

    ``band`` is the run's ``--band`` (the band of multi-band FITS files the catalogue measured).
    A colour JPEG/PNG is shown in colour; greyscale images and FITS with an arcsinh stretch.
    Without a pixel scale (an image without one) the bar length is unknown in pixels and the
    bar is not drawn.
    """
    from matplotlib.patches import Ellipse, Rectangle

    from .normalise import normalise

    notes = []
    fig = _figure(6.6, 2.35)
    axes = [fig.add_axes([0.005 + i / 3, 0.02, 1 / 3 - 0.01, 0.86]) for i in range(3)]
    for ax, title in zip(axes, ("cutout", "model input", "saliency")):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8, pad=2)

    cut = None
    try:
        cut = read_cutout(row["file"], pixel_scale=row.get("pixel_scale_arcsec"), band=band)
    except CutoutError as exc:
        notes.append(f"cutout unreadable: {exc.reason}")
        _note(axes[0], f"cutout unreadable\n({exc.reason})")
    except Exception as exc:  # never let one file stop the report
        notes.append(f"cutout unreadable: {type(exc).__name__}")
        _note(axes[0], "cutout unreadable")

    length = row.get("bar_length_arcsec")
    pa_deg = row.get("bar_pa_deg")
    has_bar = length is not None and pa_deg is not None and np.isfinite(length) and np.isfinite(pa_deg)
    scale_arcsec = row.get("pixel_scale_arcsec") or (cut.pixel_scale_arcsec if cut else None)
    if cut is not None and not scale_arcsec:
        scale_arcsec = cut.pixel_scale_arcsec

    frame = None
    if saliency is not None:
        frame = dict(scale=saliency["scale"], x0=saliency["x0"], y0=saliency["y0"], image=saliency.get("image"))
    if cut is not None and (frame is None or frame["image"] is None):
        try:
            r50 = row.get("r50_arcsec")
            norm = normalise(cut.data, prep, r50_pix=(r50 / scale_arcsec) if r50 and scale_arcsec else None)
            if frame is None:
                frame = dict(scale=norm.scale, x0=norm.x0, y0=norm.y0, image=norm.image)
            else:
                frame["image"] = norm.image
        except ValueError as exc:
            notes.append(f"normalisation failed: {exc}")

    # the reader's matrix is the one the pipeline turned the bar angle into a PA with (that of
    # the band read; north up, east left for an image with a scale)
    cd = cut.cd if cut is not None else None
    direction = pixel_direction(pa_deg, cd) if has_bar else None
    length_pix = None
    if has_bar and cd is not None:
        # exact for any pixel grid: the sky offset of the bar end mapped back to pixels
        t = math.radians(pa_deg)
        length_pix = (length / 3600.0) * float(np.hypot(*np.linalg.solve(cd, [math.sin(t), math.cos(t)])))
    elif has_bar and scale_arcsec:
        length_pix = length / scale_arcsec  # no WCS: square pixels of the catalogue's scale

    if cut is not None:
        ax = axes[0]
        ny, nx = cut.data.shape
        colour = getattr(cut, "colour", None)
        if colour is not None and np.shape(colour) == (ny, nx, 3):
            # a colour JPEG/PNG as it is (uint8 RGB, rows in the orientation of data)
            ax.imshow(colour, origin="lower", interpolation="nearest")
        else:
            img, lo, hi = _stretch_cutout(cut.data)
            ax.imshow(img, origin="lower", cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        if frame is not None:
            half = 0.5 * (frame["image"].shape[0] if frame["image"] is not None else 64) * frame["scale"]
            ax.add_patch(Rectangle((frame["x0"] - half, frame["y0"] - half), 2 * half, 2 * half, fill=False, ec="#ffcc00", lw=0.8, ls="--"))
            cx, cy = frame["x0"], frame["y0"]
        else:
            cx, cy = (nx - 1) / 2, (ny - 1) / 2
        if length_pix:
            _draw_bar(ax, *_bar_segment(cx, cy, direction, length_pix), lw=1.0)
        # compass: north and east arrows
        size = 0.16 * min(nx, ny)
        ox, oy = 0.82 * nx, 0.1 * ny
        for lab, vec in (("N", pixel_direction(0.0, cd)), ("E", pixel_direction(90.0, cd))):
            ax.annotate("", xy=(ox + size * vec[0], oy + size * vec[1]), xytext=(ox, oy), arrowprops=dict(arrowstyle="-|>", color="#ffcc00", lw=1))
            ax.text(ox + 1.3 * size * vec[0], oy + 1.3 * size * vec[1], lab, color="#ffcc00", fontsize=7, ha="center", va="center")
        ax.set_xlim(-0.5, nx - 0.5)
        ax.set_ylim(-0.5, ny - 0.5)
    if not has_bar and row.get("status") == "ok":
        no_scale = not scale_arcsec and pa_deg is not None and np.isfinite(pa_deg)
        text = "no pixel scale: bar length unknown" if no_scale else "no bar measured"
        axes[0].text(0.03, 0.95, text, color="#ffcc00", fontsize=7, va="top", transform=axes[0].transAxes)
        if no_scale:
            notes.append("bar not drawn: no pixel scale, so no length in arcsec")

    size = None
    if frame is not None and frame["image"] is not None:
        im = frame["image"]
        size = im.shape[0]
        axes[1].imshow(im, origin="lower", cmap="gray", vmin=-0.05, vmax=1.0, interpolation="nearest")
    else:
        _note(axes[1], "no model input")

    if saliency is not None:
        sal = saliency["map"]
        size = sal.shape[0]
        axes[2].imshow(sal, origin="lower", cmap="inferno", vmin=0, vmax=max(float(np.nanmax(sal)), 1e-9), interpolation="nearest")
    elif row.get("status") != "ok":
        _note(axes[2], f"status '{row.get('status')}':\nnot measured")
    else:
        _note(axes[2], saliency_note or "saliency not saved")

    if length_pix and frame is not None and size:
        c = (size - 1) / 2.0
        seg = _bar_segment(c, c, direction, length_pix / frame["scale"])
        targets = [axes[1]] + ([axes[2]] if saliency is not None else [])
        for ax in targets:
            _draw_bar(ax, *seg, lw=1.3)
        q = row.get("bar_axis_ratio")
        if saliency is not None and q is not None and np.isfinite(q):
            ang = math.degrees(math.atan2(direction[1], direction[0]))
            L = length_pix / frame["scale"]
            axes[2].add_patch(Ellipse((c, c), L, L * q, angle=ang, fill=False, ec="white", lw=0.8, ls=":"))
        for ax in axes[1:]:
            ax.set_xlim(-0.5, size - 0.5)
            ax.set_ylim(-0.5, size - 0.5)
    _save(fig, path)
    return notes


# ------------------------------------------------------------------------ HTML

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#e3e6ec; --accent:#1f5fbf; --bad:#b3261e; --ok:#1b7f3b; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color:var(--fg); background:#f6f7f9; }
header { background:#16213a; color:#fff; padding:18px 32px 14px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .sub { color:#b9c3d8; font-size:13px; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; position:sticky; top:0; z-index:2; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:13px; }
main { padding:8px 32px 40px; max-width:1400px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 20px 18px; margin:16px 0; }
h2 { font-size:18px; margin:4px 0 10px; }
h3 { font-size:15px; margin:14px 0 6px; }
section > h3[id] { font-size:16px; margin-top:22px; padding-top:10px; border-top:1px solid var(--line); }
.muted { color:var(--muted); }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:6px 0 10px; }
.card { border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:130px; }
.card .v { font-size:22px; font-weight:600; }
.card .k { color:var(--muted); font-size:12px; }
.card.bad .v { color:var(--bad); } .card.ok .v { color:var(--ok); }
table { border-collapse:collapse; font-size:13px; margin:4px 0 8px; }
th, td { text-align:left; padding:3px 12px 3px 0; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.n { text-align:right; font-variant-numeric:tabular-nums; }
.cols { display:flex; flex-wrap:wrap; gap:40px; align-items:flex-start; }
.cols > div { min-width:0; }
td.muted { max-width:520px; }
img.fig { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(420px, 1fr)); gap:12px; }
figure.tile { margin:0; border:1px solid var(--line); border-radius:6px; padding:6px; background:#fff; }
figure.tile img { width:100%; height:auto; display:block; }
figcaption { font-size:12px; margin-top:4px; line-height:1.5; }
figcaption .id { font-weight:600; font-family:ui-monospace, Menlo, Consolas, monospace; }
.badge { display:inline-block; background:#fdecea; color:var(--bad); border-radius:3px; padding:0 5px; margin:1px 3px 1px 0; font-size:11px; }
.badge.okb { background:#e7f4ea; color:var(--ok); }
.badge.err { background:#b3261e; color:#fff; }
pre { background:#f3f4f7; padding:10px; border-radius:6px; overflow:auto; font-size:12px; max-height:420px; }
code { font-family:ui-monospace, Menlo, Consolas, monospace; font-size:12px; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
footer { color:var(--muted); font-size:12px; padding:0 32px 24px; }
"""


def _e(x):
    return html.escape(str(x), quote=True)


def _kv_table(d):
    rows = []
    nested = {}
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            nested[k] = v
            continue
        rows.append(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>")
    out = f"<table>{''.join(rows)}</table>" if rows else ""
    for k, v in nested.items():
        out += f"<details><summary>{_e(k)}</summary><pre>{_e(json.dumps(v, indent=2, default=str))}</pre></details>"
    return out


def _tile_name(row):
    h = hashlib.sha1(f"{row.get('object_id')}|{row.get('file')}".encode()).hexdigest()[:8]
    return f"tile-{safe_name(row.get('object_id'))[:60]}-{h}.png"


def _caption(row, flag_names, notes):
    from .flags import describe

    parts = [f"<span class='id'>{_e(row.get('object_id'))}</span>"]
    if row.get("status") != "ok":
        parts.append(f"<span class='badge err'>{_e(row.get('status'))}</span> {_e(row.get('error') or '')}")
    else:
        p = row.get("p_bar")
        parts.append(f"p_bar <b>{_fmt(p, '.3f')}</b>")
        L = row.get("bar_length_arcsec")
        if L is not None and np.isfinite(L):
            err = row.get("bar_length_err_arcsec")
            txt = f"L = <b>{_fmt(L)}″</b>"
            if err is not None and np.isfinite(err):
                txt += f" ± {_fmt(err)}″"
            parts.append(txt)
            parts.append(f"PA {_fmt(row.get('bar_pa_deg'), '.0f')}°")
        elif row.get("bar_pa_deg") is not None and np.isfinite(row["bar_pa_deg"]):
            parts.append(f"PA {_fmt(row['bar_pa_deg'], '.0f')}°")  # a bar without a length (no pixel scale)
        mo = row.get("bar_length_moments_arcsec")
        if mo is not None and np.isfinite(mo) and mo != L:
            parts.append(f"moments {_fmt(mo)}″")
        d = row.get("bar_length_direct_arcsec")
        if d is not None and np.isfinite(d):
            parts.append(f"direct {_fmt(d)}″")
        b = row.get("bar_length_bhambra2022_arcsec")
        if b is not None and np.isfinite(b):
            parts.append(f"B22 {_fmt(b)}″")
    q = int(row.get("quality_flags") or 0)
    names = [flag_names.get(v, f"bit{v.bit_length() - 1}") for v in (1 << i for i in range(32)) if q & v] if flag_names else describe(q)
    badges = "".join(f"<span class='badge'>{_e(n)}</span>" for n in names) or "<span class='badge okb'>no flags</span>"
    note = "".join(f"<br><span class='muted'>{_e(n)}</span>" for n in notes)
    return " · ".join(parts) + "<br>" + badges + note


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def build_report(
    catalogue,
    out,
    *,
    query=None,
    n_gallery=12,
    saliency_dir=None,
    seed=0,
    batch_size=65_536,
    recompute_saliency=False,
    model=None,
    title=None,
):
    """Write the HTML QA report of a catalogue.

    Parameters
    ----------
    catalogue : str
        Catalogue file or directory written by ``survey-bars process``.
    out : str
        Report directory (created); receives ``index.html`` and PNG figures.
    query : str, optional
        ``pandas.DataFrame.query`` expression for the query gallery, e.g.
        ``"p_bar > 0.9 and bar_length_arcsec > 5"``.
    n_gallery : int, optional
        Galaxies per gallery.
    saliency_dir : str, optional
        Directory of ``{object_id}.fits`` maps from ``process --save-saliency`` (default:
        the run's ``save_saliency`` directory, when it still exists).
    seed : int, optional
        Seed of the random gallery and sampling.
    batch_size : int, optional
        Rows per streamed batch.
    recompute_saliency : bool, optional
        Recompute the maps that were not saved, with the model runtime.
    model : str, optional
        Model bundle for ``recompute_saliency`` (default: the one the catalogue was made with).
    title : str, optional
        Report title.

    Returns
    -------
    str
        Path of ``index.html``.

    Raises
    ------
    FileNotFoundError
        If the catalogue does not exist.
    ValueError
        If it is not a survey-bars catalogue or the query is invalid.
    """
    from .normalise import NormaliseConfig

    if n_gallery < 0:
        msg = f"--n-gallery must be 0 or more, got {n_gallery}."
        raise ValueError(msg)
    scan = scan_catalogue(catalogue, query=query, n_gallery=n_gallery, seed=seed, batch_size=batch_size)
    meta = scan.metadata
    run = meta.get("run_config") or {}
    band = run.get("band")  # the --band of the run: the report reads the band the catalogue measured
    card = meta.get("model_card") or {}
    if saliency_dir is None and run.get("save_saliency") and os.path.isdir(run["save_saliency"]):
        saliency_dir = run["save_saliency"]
    if saliency_dir is not None and not os.path.isdir(saliency_dir):
        msg = f"--saliency-dir {saliency_dir!r} is not a directory; pass the directory given to `process --save-saliency`."
        raise FileNotFoundError(msg)
    prep = None
    if isinstance(card.get("preprocessing"), dict):
        try:
            prep = NormaliseConfig.from_dict(card["preprocessing"])
        except (TypeError, ValueError):
            prep = None

    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # stale tiles of an earlier report
        if f.startswith("tile-") and f.endswith(".png"):
            os.unlink(os.path.join(out, f))

    _plot_flags(scan, os.path.join(out, "flags.png"))
    _plot_distributions(scan, os.path.join(out, "distributions.png"))
    has_comparison = _plot_comparison(scan, os.path.join(out, "length_comparison.png"))

    # saliency maps for the shown rows
    shown = {}
    for rows in scan.galleries.values():
        for r in rows:
            shown.setdefault(_tile_name(r), r)
    maps, notes = {}, {}
    for name, r in shown.items():
        p = find_saliency_map(saliency_dir, r["object_id"])
        if p:
            try:
                maps[name] = read_saliency_map(p)
            except Exception as exc:
                notes[name] = f"saliency unreadable: {exc}"
    if recompute_saliency:
        todo = {n: r for n, r in shown.items() if n not in maps and r.get("status") == "ok"}
        if todo:
            try:
                got = _recompute_saliency(list(todo.values()), model, metadata=meta, band=band)
            except Exception as exc:
                got = {}
                print(f"survey-bars inspect: could not recompute saliency maps ({type(exc).__name__}: {exc}).", file=sys.stderr)
                for n in todo:
                    notes[n] = "saliency not saved (recomputing failed)"
            for n, r in todo.items():
                g = got.get(r["object_id"])
                if isinstance(g, dict):
                    maps[n] = g
                elif isinstance(g, str):
                    notes[n] = g

    flag_list = meta.get("flags") or []
    flag_names = {int(f["value"]): f["name"] for f in flag_list}
    tile_html = {}
    for name, r in shown.items():
        tnotes = _render_tile(r, os.path.join(out, name), saliency=maps.get(name), saliency_note=notes.get(name), prep=prep,
                              band=band)
        if name not in maps and r.get("status") == "ok":
            tnotes.append(notes.get(name, "saliency not saved"))
        tile_html[name] = (
            f"<figure class='tile'><img src='{_e(name)}' width='660' height='235' "
            f"alt='{_e(r.get('object_id'))}: cutout, model input and saliency map'>"
            f"<figcaption>{_caption(r, flag_names, tnotes)}</figcaption></figure>"
        )

    # ---- assemble the page
    n = scan.n_rows
    n_ok = scan.status_counts.get("ok", 0)
    n_err = n - n_ok
    n_bar = int(scan.length_hists.get("bar_length_arcsec", np.zeros(1)).sum())
    title = title or f"survey-bars QA: {os.path.basename(os.path.normpath(os.fspath(catalogue)))}"
    created = meta.get("created", "")
    sub = (
        f"{_e(os.path.abspath(catalogue))} · {n:,} rows in {len(scan.files)} file(s) · "
        f"survey-bars {_e(meta.get('software_version', '?'))}"
        + (f" · catalogue made {_e(created)}" if created else "")
        + f" · report {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
    )

    def pct(k):
        return f"{100.0 * k / n:.1f}%" if n else "–"

    cards = (
        f"<div class='card'><div class='v'>{n:,}</div><div class='k'>rows</div></div>"
        f"<div class='card ok'><div class='v'>{n_ok:,}</div><div class='k'>status ok ({pct(n_ok)})</div></div>"
        f"<div class='card{' bad' if n_err else ''}'><div class='v'>{n_err:,}</div><div class='k'>not ok ({pct(n_err)})</div></div>"
        f"<div class='card'><div class='v'>{n_bar:,}</div><div class='k'>bar lengths measured</div></div>"
        f"<div class='card'><div class='v'>{scan.n_unflagged:,}</div><div class='k'>rows without flags ({pct(scan.n_unflagged)})</div></div>"
    )
    status_rows = "".join(
        f"<tr><td>{_e(s)}</td><td class='n'>{c:,}</td><td class='n'>{pct(c)}</td></tr>" for s, c in scan.status_counts.most_common()
    )
    descr = {f["name"]: f.get("description", "") for f in flag_list}
    bits = {f["name"]: f.get("bit", "") for f in flag_list}
    flag_rows = "".join(
        f"<tr><td class='n'>{_e(bits.get(k, ''))}</td><td><code>{_e(k)}</code></td><td class='n'>{c:,}</td>"
        f"<td class='n'>{pct(c)}</td><td class='muted'>{_e(descr.get(k, ''))}</td></tr>"
        for k, c in scan.flag_counts.items()
    )
    pop_rows = "".join(
        f"<tr><td class='n'>{k}</td><td class='n'>{int(c):,}</td><td class='n'>{pct(int(c))}</td></tr>" for k, c in enumerate(scan.popcount_counts) if c
    )
    err_rows = "".join(
        f"<tr><td><code>{_e(k)}</code></td><td class='n'>{c:,}</td><td class='muted'>{_e(scan.error_examples.get(k, ''))}</td></tr>"
        for k, c in scan.error_reasons.most_common()
    )
    summary = (
        f"<section id='summary'><h2>Summary</h2><div class='cards'>{cards}</div>"
        "<div class='cols'><div>"
        f"<h3>By status</h3><table><tr><th>status</th><th>rows</th><th>share</th></tr>{status_rows}</table>"
        f"<h3>Flags set per row</h3><table><tr><th>flags</th><th>rows</th><th>share</th></tr>{pop_rows}</table>"
        + (f"<h3>Error reasons</h3><table><tr><th>reason</th><th>rows</th><th>example</th></tr>{err_rows}</table>" if err_rows else "")
        + "</div><div><h3>By quality flag</h3><img class='fig' src='flags.png' alt='Rows per quality flag'>"
        f"<details><summary>Flag table</summary><table><tr><th>bit</th><th>flag</th><th>rows</th><th>share</th><th>meaning</th></tr>{flag_rows}</table></details>"
        "</div></div></section>"
    )
    pair_rows = "".join(
        f"<tr><td>{_e(_LENGTHS[c][0])}<br><code>{_e(c)}</code></td><td class='n'>{st['n']:,}</td><td class='n'>{_fmt(st['r'], '.3f')}</td>"
        f"<td class='n'>{_fmt(st['rms'])}″</td><td class='n'>{_fmt(st['bias'], '+.2f')}″</td></tr>"
        for c, st in scan.pairs.items()
    )
    dist = (
        "<section id='distributions'><h2>Distributions</h2>"
        "<img class='fig' src='distributions.png' alt='Distributions of p_bar and bar lengths'>"
        + (
            "<h3>Saliency lengths against the other measurements</h3><div class='cols'><div>"
            "<p class='muted'>Over every row with both lengths (the plots show a uniform sample).<br>"
            "Bias is the mean of (other − saliency).</p>"
            f"<table><tr><th>compared with</th><th>N</th><th>Pearson r</th><th>RMS diff.</th><th>bias</th></tr>{pair_rows}</table></div>"
            "<div><img class='fig' src='length_comparison.png' alt='Saliency bar length against direct and published-method lengths'></div></div>"
            if has_comparison
            else "<p class='muted'>No rows have both a saliency and a direct bar length.</p>"
        )
        + "</section>"
    )
    gal_html = []
    nav_gal = []
    for key, rows in scan.galleries.items():
        gtitle, gdesc = GALLERIES[key]
        if key == "query":
            gdesc = f"{scan.n_query_matches:,} rows match <code>{_e(scan.query)}</code>; showing a random {min(len(rows), n_gallery)}."
        tiles = "".join(tile_html[_tile_name(r)] for r in rows) or "<p class='muted'>No rows.</p>"
        gal_html.append(f"<h3 id='gallery-{key}'>Gallery: {_e(gtitle)}</h3><p class='muted'>{gdesc}</p><div class='gallery'>{tiles}</div>")
        nav_gal.append(f"<a href='#gallery-{key}'>{_e(gtitle)}</a>")
    legend = (
        "<p class='muted'>Each tile: the cutout (dashed square: the model frame; compass: north and east; a colour "
        "JPEG/PNG in its own colours, other cutouts with an arcsinh stretch), "
        "the normalised model input, and the SmoothGrad saliency map of the bar output. The cyan line is the "
        "measured bar: full length <code>bar_length_arcsec</code> at position angle <code>bar_pa_deg</code> "
        "(east of north); the dotted ellipse has the measured axis ratio."
        + (f" Saliency maps from <code>{_e(os.path.abspath(saliency_dir))}</code>." if saliency_dir else " No saliency directory was given (<code>--saliency-dir</code>).")
        + "</p>"
    )
    model_name = card.get("name") or card.get("model") or "model"
    meta_html = (
        "<section id='metadata'><h2>Model card and run</h2>"
        f"<h3>Model card: {_e(model_name)}</h3>{_kv_table(card) if card else '<p class=muted>No model card in the catalogue.</p>'}"
        f"<h3>Run configuration</h3>{_kv_table(run) if run else '<p class=muted>No run configuration in the catalogue.</p>'}"
        f"<h3>Software</h3><table><tr><th>survey-bars</th><td>{_e(meta.get('software_version', '?'))}</td></tr>"
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta.items() if k not in ("model_card", "run_config", "flags", "columns", "software_version") and not isinstance(v, (dict, list)))
        + "</table>"
        + (
            "<details><summary>Columns, units and descriptions</summary><table><tr><th>column</th><th>unit</th><th>description</th></tr>"
            + "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_e(v.get('unit', ''))}</td><td class='muted'>{_e(v.get('description', ''))}</td></tr>" for k, v in (meta.get("columns") or {}).items())
            + "</table></details>"
            if meta.get("columns")
            else ""
        )
        + "</section>"
    )
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><div class='sub'>{sub}</div></header>"
        "<nav><a href='#summary'>Summary</a><a href='#distributions'>Distributions</a>"
        + "".join(nav_gal)
        + "<a href='#metadata'>Model &amp; run</a></nav><main>"
        + summary
        + dist
        + (f"<section id='galleries'><h2>Galleries</h2>{legend}{''.join(gal_html)}</section>" if gal_html else "")
        + meta_html
        + "</main><footer>Generated by <code>survey-bars inspect</code>. Static page: no scripts, no network access.</footer></body></html>\n"
    )
    index = os.path.join(out, "index.html")
    _write(index, page)
    return index


# ------------------------------------------------------------------------ CLI


def configure_parser(parser):
    """Add the ``inspect`` options to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    """
    parser.add_argument("catalogue", help="Catalogue .parquet file (or directory) written by `survey-bars process`.")
    parser.add_argument("--out", required=True, metavar="DIR", help="Report directory; receives index.html and PNG figures.")
    parser.add_argument("--query", default=None, help="pandas query for an extra gallery, e.g. \"p_bar > 0.9 and bar_length_arcsec > 5\".")
    parser.add_argument("--n-gallery", type=int, default=12, metavar="N", help="Galaxies per gallery (default 12).")
    parser.add_argument("--saliency-dir", default=None, metavar="DIR", help="Maps written by `process --save-saliency` (default: the run's directory if it exists).")
    parser.add_argument("--recompute-saliency", action="store_true", help="Recompute the maps that were not saved (needs the model bundle).")
    parser.add_argument("--model", default=None, metavar="BUNDLE", help="Bundle for --recompute-saliency (default: the catalogue's).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random gallery (default 0).")
    parser.add_argument("--batch-size", type=int, default=65_536, help="Rows read per batch (default 65536).")
    parser.add_argument("--title", default=None, help="Report title.")


def run_cli(args):
    """Run ``survey-bars inspect``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments from :func:`configure_parser`.

    Returns
    -------
    int
        0 on success, 2 when the input or the options are invalid.
    """
    try:
        index = build_report(
            args.catalogue,
            args.out,
            query=args.query,
            n_gallery=args.n_gallery,
            saliency_dir=args.saliency_dir,
            seed=args.seed,
            batch_size=args.batch_size,
            recompute_saliency=args.recompute_saliency,
            model=args.model,
            title=args.title,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"survey-bars inspect: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {index}")
    return 0
