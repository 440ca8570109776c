"""One streaming pass over a catalogue: counts, histograms, correlation sums, a scatter sample
and the gallery rows (:func:`scan_catalogue`), reading only the columns the report needs.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..flags import flag_table
from ..io.catalogue import read_metadata

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

P_BINS = np.linspace(0.0, 1.0, 51)
# fine log-spaced bins for lengths (0.01 to 10^4 arcsec, 500 per decade): streaming
# histograms that are re-binned for display once the range is known
L_EDGES = np.logspace(-2, 4, 6 * 500 + 1)
LENGTHS = {
    "bar_length_arcsec": ("saliency (this model)", "#1f77b4"),
    "bar_length_moments_arcsec": ("saliency moments", "#8c564b"),
    "bar_length_direct_arcsec": ("direct CNN", "#ff7f0e"),
    "bar_length_bhambra2022_arcsec": ("Bhambra et al. 2022 sweep", "#2ca02c"),
}
_QUERY_WORDS = {"and", "or", "not", "in", "is", "True", "False", "None", "nan", "inf"}



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
    p_bar_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(P_BINS) - 1, dtype=np.int64))
    length_hists: dict = field(default_factory=dict)
    length_missing: dict = field(default_factory=dict)
    pairs: dict = field(default_factory=dict)
    scatter: dict = field(default_factory=dict)
    galleries: dict = field(default_factory=dict)
    query: str | None = None
    n_query_matches: int = 0


def _catalogue_files(path):

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
    files, metadata, available, columns, lengths = _open_catalogue(path, query)
    flags = metadata.get("flags") or flag_table()
    scan = CatalogueScan(path=os.fspath(path), files=files, metadata=metadata, columns=available, query=query or None)
    scan.flag_counts = {f["name"]: 0 for f in flags}
    scan.length_hists = {c: np.zeros(len(L_EDGES) - 1, dtype=np.int64) for c in lengths}
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
            _count_status(scan, batch, columns)
            pop = _count_flags(scan, batch, flags)
            p = _add_distributions(scan, batch, lengths, low, moments, samples, rng)
            _offer_galleries(scan, picks, batch, p, pop, rng, query, available)
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


def _open_catalogue(path, query):
    """The catalogue's files, metadata and columns: ``(files, metadata, available, read, lengths)``.

    Raises ValueError when the files are not a survey-bars catalogue this version can report on.
    """
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
    lengths = [c for c in LENGTHS if c in available]
    return files, metadata, available, columns, lengths


def _count_status(scan, batch, columns):
    """Counts by status, and by error reason with one example message each."""
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


def _count_flags(scan, batch, flags):
    """Counts by quality flag and by number of flags set; return the flags set per row."""
    q = _numpy(batch, "quality_flags", np.uint32)
    for fl in flags:
        scan.flag_counts[fl["name"]] += int(np.count_nonzero(q & np.uint32(fl["value"])))
    pop = _popcount(q)
    scan.n_unflagged += int(np.count_nonzero(pop == 0))
    scan.popcount_counts += np.bincount(pop, minlength=33)[:33]
    return pop


def _add_distributions(scan, batch, lengths, low, moments, samples, rng):
    """The p_bar and length histograms, the length-pair sums and their scatter sample; return p_bar."""
    n = batch.num_rows
    p = _numpy(batch, "p_bar")
    fin = np.isfinite(p)
    scan.p_bar_hist += np.histogram(np.clip(p[fin], 0, 1), bins=P_BINS)[0]
    vals = {c: _numpy(batch, c) for c in lengths}
    for c, v in vals.items():
        ok = np.isfinite(v)
        scan.length_missing[c] += int(n - ok.sum())
        low[c] += int(np.count_nonzero(v[ok] < L_EDGES[0]))
        scan.length_hists[c] += np.histogram(v[ok], bins=L_EDGES)[0]
    for c in moments:
        x, y = vals["bar_length_arcsec"], vals[c]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            moments[c].add(x[ok], y[ok])
            keys = np.where(ok, rng.random(n), np.nan)
            samples[c].offer(keys, pa.table({"x": x, "y": y}))
    return p


def _offer_galleries(scan, picks, batch, p, pop, rng, query, available):
    """Offer the batch's rows to each gallery's streaming selection."""
    n = batch.num_rows
    picks["random"].offer(rng.random(n), batch)
    picks["top_p_bar"].offer(np.where(np.isfinite(p), p, np.nan), batch)
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
