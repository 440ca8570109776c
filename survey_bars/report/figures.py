"""The report's summary figures: flags, distributions, and the length comparison.
"""

from __future__ import annotations

import html
import os

import numpy as np

from .scan import L_EDGES, LENGTHS, P_BINS


def new_figure(w, h, layout=None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout=layout)
    fig.patch.set_facecolor("white")
    return fig


def save_figure(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=fig.dpi, facecolor=fig.get_facecolor())
    os.replace(tmp, path)


def fmt(v, spec=".2f", none="–"):
    if v is None:
        return none
    try:
        if not np.isfinite(v):
            return none
    except TypeError:
        return html.escape(str(v))
    return format(v, spec)


def plot_flags(scan, path):
    names = list(scan.flag_counts)
    counts = np.array([scan.flag_counts[n] for n in names], dtype=float)
    fig = new_figure(5.8, 0.22 * len(names) + 0.7, layout="constrained")
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
    save_figure(fig, path)


def _display_bins(hists, n_bins=40):
    """Re-bin fine log-spaced length histograms into linear bins up to a robust maximum."""
    total = sum(h for h in hists.values())
    centres = np.sqrt(L_EDGES[:-1] * L_EDGES[1:])
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


def plot_distributions(scan, path):
    fig = new_figure(10.0, 3.3, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.stairs(scan.p_bar_hist, P_BINS, fill=True, color="#9467bd", alpha=0.8)
    ax1.set_xlabel("p_bar", fontsize=9)
    ax1.set_ylabel("rows", fontsize=9)
    ax1.set_title(f"p_bar ({int(scan.p_bar_hist.sum()):,} rows with a value)", fontsize=10)
    ax1.set_xlim(0, 1)
    edges, hists, over = _display_bins(scan.length_hists)
    for c, h in hists.items():
        label, color = LENGTHS[c]
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
    save_figure(fig, path)


def plot_comparison(scan, path):
    cols = [c for c in scan.scatter]
    if not cols:
        return False
    fig = new_figure(3.1 * len(cols), 3.2, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(cols)))
    for ax, c in zip(axes, cols):
        x, y = scan.scatter[c]
        st = scan.pairs[c]
        label, color = LENGTHS[c]
        if x.size:
            lim = float(np.nanpercentile(np.concatenate([x, y]), 99.5)) * 1.08 or 1.0
            ax.scatter(x, y, s=6 if x.size > 500 else 14, alpha=0.5 if x.size > 500 else 0.8, color=color, edgecolors="none")
            ax.plot([0, lim], [0, lim], color="0.3", lw=1, ls="--", label="1:1")
            ax.set_xlim(0, lim)
            ax.set_ylim(0, lim)
        ax.set_xlabel("saliency bar_length_arcsec", fontsize=9)
        ax.set_ylabel(f"{c}", fontsize=9)
        ax.set_title(f"{label}\nr = {fmt(st['r'])}, RMS = {fmt(st['rms'])}\", N = {st['n']:,}", fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=8)
    save_figure(fig, path)
    return True
