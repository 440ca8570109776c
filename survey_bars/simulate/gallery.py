"""A gallery figure of simulated galaxies per survey and class (:func:`make_gallery`)."""

from __future__ import annotations

import math

import numpy as np

from .params import CLASSES, SURVEYS
from .write import simulate_one


def make_gallery(out_png, seed=2022, per_cell=2):
    """Plot example simulations per class (rows) and survey (columns) with the truth bars.

    Parameters
    ----------
    out_png : str
        Output PNG path.
    seed : int, optional
        Seed of the examples (the same seed gives the same figure).
    per_cell : int, optional
        Examples per (class, survey) cell.

    Returns
    -------
    str
        ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    surveys = list(SURVEYS)
    fig, axes = plt.subplots(len(CLASSES), len(surveys) * per_cell,
                             figsize=(2.0 * len(surveys) * per_cell, 2.15 * len(CLASSES)))
    for r, cls in enumerate(CLASSES):
        for c, sv in enumerate(surveys):
            for k in range(per_cell):
                ax = axes[r, c * per_cell + k]
                i = 1000 * r + 10 * c + k
                row, img, p = simulate_one(seed, i, sv, {cls: 1.0})
                good = np.isfinite(img)
                sig = row["noise_sigma"]
                peak = np.nanpercentile(img[good], 99.7)
                shown = np.arcsinh(np.where(good, img, 0) / (2 * sig)) / np.arcsinh(max(peak, 3 * sig) / (2 * sig))
                N = p.stamp_size
                ax.imshow(shown, origin="lower", cmap="gray", vmin=-0.05, vmax=1.0, interpolation="nearest")
                if row["has_bar"]:
                    L = row["bar_length_arcsec"] / p.pixel_scale / 2
                    th = math.radians(row["bar_pa_deg"])
                    x0, y0 = (N - 1) / 2 + p.dx, (N - 1) / 2 + p.dy
                    ax.plot([x0 + L * math.sin(th), x0 - L * math.sin(th)], [y0 - L * math.cos(th), y0 + L * math.cos(th)],
                            color="orangered", lw=0.9, alpha=0.65)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlim(-0.5, N - 0.5)
                ax.set_ylim(-0.5, N - 0.5)
                txt = f"{sv} r50={row['r50_arcsec']:.1f}\" S/N={row['snr']:.0f}"
                ax.set_title(txt, fontsize=6.5, pad=2)
                if c == 0 and k == 0:
                    ax.set_ylabel(cls, fontsize=10)
    fig.suptitle("survey-bars simulate: classes (rows) x surveys (columns); red = truth bar (full length, PA); "
                 "north up, east left", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
