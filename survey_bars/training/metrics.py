"""Scores of the classifiers: ROC AUC with bootstrap intervals, calibration error, temperatures.

Training writes them into the bundle card; ``survey-bars evaluate`` and the benchmarks use
the same functions, so the figures are comparable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["roc_auc", "roc_auc_interval", "expected_calibration_error", "fit_temperature"]


def roc_auc(score, label):
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half).

    Parameters
    ----------
    score : array_like
        Scores, higher meaning positive.
    label : array_like of bool
        True labels.

    Returns
    -------
    float
        NaN when one class is absent.
    """
    from scipy.stats import rankdata

    s = np.asarray(score, dtype=float)
    y = np.asarray(label, dtype=bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def roc_auc_interval(score, label, level=0.95, n_boot=1000, seed=0):
    """Bootstrap confidence interval of :func:`roc_auc`.

    Positives and negatives are resampled separately (a stratified bootstrap), so every
    replicate keeps the class counts; the interval is the percentile interval of the
    replicates. With ~2000 test galaxies the 95 % interval of a bar AUC near 0.97 is about
    +-0.006 wide, which is the precision a card metric can claim.

    Parameters
    ----------
    score : array_like
        Scores, higher meaning positive.
    label : array_like of bool
        True labels.
    level : float, optional
        Confidence level (default 0.95).
    n_boot : int, optional
        Bootstrap replicates.
    seed : int, optional
        Seed of the resampling (the interval is reproducible).

    Returns
    -------
    tuple of float
        ``(low, high)``; NaNs when one class is absent.
    """
    if not 0 < level < 1 or n_boot < 1:
        msg = f"roc_auc_interval() needs 0 < level < 1 and n_boot >= 1; got level={level}, n_boot={n_boot}."
        raise ValueError(msg)
    s = np.asarray(score, dtype=float)
    y = np.asarray(label, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    is_pos = np.arange(len(pos) + len(neg)) < len(pos)
    reps = [roc_auc(np.concatenate([pos[rng.integers(0, len(pos), len(pos))],
                                    neg[rng.integers(0, len(neg), len(neg))]]), is_pos)
            for _ in range(n_boot)]
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def expected_calibration_error(prob, label, n_bins=15):
    """Expected calibration error with equal-width bins.

    Parameters
    ----------
    prob : array_like
        Predicted probability of the event (binary) or confidence of the predicted class.
    label : array_like of bool
        Whether the event happened (or the predicted class was right).
    n_bins : int, optional
        Number of bins on [0, 1].

    Returns
    -------
    float
        ``sum_b (n_b / N) |mean(label_b) - mean(prob_b)|``.
    """
    p = np.asarray(prob, dtype=float)
    y = np.asarray(label, dtype=float)
    if p.size == 0:
        return float("nan")
    idx = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.sum() / p.size * abs(y[sel].mean() - p[sel].mean())
    return float(ece)


def _nll_softmax(z, y, t):
    z = z / t
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def _nll_sigmoid(z, y, t):
    z = z / t
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits, labels, kind="binary"):
    """Fit a temperature by minimising the negative log-likelihood.

    Parameters
    ----------
    logits : ndarray
        ``(N,)`` for ``kind="binary"`` or ``(N, K)`` for ``kind="softmax"``.
    labels : ndarray
        0/1 labels, or class indices.
    kind : {"binary", "softmax"}

    Returns
    -------
    float
        The temperature ``T`` (probabilities are ``sigmoid(z / T)`` or ``softmax(z / T)``).
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if len(y) == 0:
        return 1.0
    f = _nll_softmax if kind == "softmax" else _nll_sigmoid
    if kind != "softmax":
        y = y.astype(np.float64)
    res = minimize_scalar(lambda lt: f(z, y, np.exp(lt)), bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(res.x))
