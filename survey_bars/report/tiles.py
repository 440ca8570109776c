"""Gallery tiles: the cutout, the model input and the saliency map, with the bar drawn.
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry import pixel_direction
from ..io import CutoutError, read_cutout
from ..normalise import normalise
from .figures import new_figure, save_figure


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


def render_tile(row, path, *, saliency=None, saliency_note=None, prep=None, band=None):
    """Draw one gallery tile (cutout, model input, saliency) and return notes for the caption.

    ``band`` is the run's ``--band`` (the band of multi-band FITS files the catalogue measured).
    A colour JPEG/PNG is shown in colour; greyscale images and FITS with an arcsinh stretch.
    Without a pixel scale (an image without one) the bar length is unknown in pixels and the
    bar is not drawn.
    """
    from matplotlib.patches import Ellipse, Rectangle

    notes = []
    fig = new_figure(6.6, 2.35)
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
    save_figure(fig, path)
    return notes
