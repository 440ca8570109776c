"""Galaxy-size normalisation and stretch, shared by training and inference.

One function, :func:`normalise`, turns a raw 2-D cutout into the model's input frame:

1. background: a plane fitted to the stamp border with sigma clipping (handles residual sky and
   sky gradients), subtracted; the noise is the border's robust standard deviation;
2. NaN, inf and masked pixels are set to the background (zero after subtraction) and counted;
3. the galaxy is found as the smoothed peak nearest the stamp centre, segmented from the
   neighbours, and its half-light radius ``r50`` is measured in circular apertures (or taken
   from the caller, e.g. an input-catalogue size);
4. a square frame of half-width ``half_width_r50 * r50`` around the galaxy is resampled to
   ``size x size`` pixels (anti-aliased when shrinking), so the galaxy fills the same fraction
   of the frame whatever its angular size or the survey's pixel scale. The resampling scale
   (input pixels per model pixel) is recorded so that lengths convert back to arcsec;
5. a robust arcsinh stretch relative to the galaxy's central brightness.

The parameters live in :class:`NormaliseConfig`, which is stored in each model bundle's card,
so inference always applies exactly the preprocessing that the model was trained with.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import pixel_grid

__all__ = ["NormaliseConfig", "Normalised", "normalise", "estimate_background"]

#: largest measured half-light radius accepted, as a fraction of the stamp's shorter side
MAX_R50_FRAC = 0.25


@dataclass(frozen=True)
class NormaliseConfig:
    """Parameters of the preprocessing.

    Parameters
    ----------
    size : int
        Side of the square model frame in pixels.
    half_width_r50 : float
        Half-width of the frame in units of the galaxy's half-light radius. 3 keeps the long
        bars of bulge-dominated galaxies (whose r50 is small) inside the frame: with 2.5, 4 %
        of simulated bars were longer than the frame.
    asinh_beta : float
        Softening of the arcsinh stretch; larger values compress bright cores more.
    border_frac : float
        Width of the stamp border used for the background, as a fraction of the stamp side.
    detect_nsigma : float
        Detection threshold of the segmentation, in units of the smoothed noise.
    min_r50_pix : float
        Smallest half-light radius accepted, in input pixels (PSF-sized galaxies).
    """

    size: int = 64
    half_width_r50: float = 3.0
    asinh_beta: float = 25.0
    border_frac: float = 0.1
    detect_nsigma: float = 2.0
    min_r50_pix: float = 1.0

    def __post_init__(self):
        problems = []
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < 16:
            problems.append(f"size must be an integer of at least 16 pixels, got {self.size!r}")
        def number(v):
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)

        for name in ("half_width_r50", "asinh_beta", "detect_nsigma"):
            if not number(getattr(self, name)) or getattr(self, name) <= 0:
                problems.append(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if not number(self.border_frac) or not 0 < self.border_frac < 0.5:
            problems.append(f"border_frac must lie between 0 and 0.5, got {self.border_frac!r}")
        if not number(self.min_r50_pix) or self.min_r50_pix < 0:
            problems.append(f"min_r50_pix must be a non-negative number, got {self.min_r50_pix!r}")
        if problems:
            raise ValueError("Invalid preprocessing configuration: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict:
        """Return the configuration as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NormaliseConfig:
        """Build a configuration from :meth:`to_dict` output, rejecting unknown keys.

        Parameters
        ----------
        data : dict
            Mapping of field names to values.

        Returns
        -------
        NormaliseConfig
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            msg = (
                f"Unknown preprocessing parameters {sorted(unknown)}; this model bundle was made "
                "by a newer survey-bars. Upgrade survey-bars or use a compatible bundle."
            )
            raise ValueError(msg)
        return cls(**data)


@dataclass
class Normalised:
    """A cutout in the model frame, with what is needed to map results back.

    Attributes
    ----------
    image : ndarray
        float32 array of shape ``(size, size)``: the stretched model input.
    scale : float
        Input pixels per model pixel. A length of ``L`` model pixels is ``L * scale`` input
        pixels.
    x0, y0 : float
        Centre of the model frame in 0-based input pixel coordinates (x along columns).
    r50_pix : float
        Half-light radius in input pixels.
    background : float
        Background level at the galaxy centre (input units).
    noise : float
        Robust per-pixel noise of the background (input units).
    snr : float
        Integrated signal-to-noise ratio of the segmented galaxy.
    bad_centre_frac : float
        Fraction of pixels within ``r50`` of the centre that were non-finite or masked.
    bad_frac : float
        Fraction of all stamp pixels that were non-finite or masked.
    outside_frac : float
        Fraction of the model frame that lies outside the stamp.
    centre_offset_frac : float
        Distance of the galaxy centre from the stamp centre, as a fraction of the stamp side.
    size_from_fallback : bool
        True when no galaxy could be segmented and a fallback size was used, or when the
        measured size was implausibly large (over a quarter of the stamp) and was clamped.
    segment_at_edge : bool
        True when the galaxy's segment reaches the edge of the stamp: the stamp cuts the galaxy,
        and the half-light radius of what it holds is smaller than the galaxy's.
    length_frame : Normalised or None
        A second, wider frame of the same cutout that the bar is measured in (the pipeline's
        ``RunOptions.length_frame``, for inputs in linear fluxes), or None: this one.
    """

    image: np.ndarray
    scale: float
    x0: float
    y0: float
    r50_pix: float
    background: float
    noise: float
    snr: float
    bad_centre_frac: float
    bad_frac: float
    outside_frac: float
    centre_offset_frac: float
    size_from_fallback: bool
    segment_at_edge: bool = False
    length_frame: Normalised | None = None

    def model_to_input(self, xm, ym):
        """Map model-frame pixel coordinates to input pixel coordinates.

        Parameters
        ----------
        xm, ym : float or ndarray
            0-based model-frame coordinates (x along columns).

        Returns
        -------
        tuple of (float or ndarray)
            Input pixel coordinates ``(x, y)``.
        """
        c = (self.image.shape[0] - 1) / 2.0
        return self.x0 + (np.asarray(xm) - c) * self.scale, self.y0 + (np.asarray(ym) - c) * self.scale


@functools.lru_cache(maxsize=32)
def _border_mask(shape, frac):
    """Read-only mask of the stamp border (cached per shape)."""
    ny, nx = shape
    w = max(2, int(round(frac * min(ny, nx))))
    m = np.zeros(shape, dtype=bool)
    m[:w, :] = m[-w:, :] = True
    m[:, :w] = m[:, -w:] = True
    m.flags.writeable = False
    return m


def _plane_design(xx, yy, nx, ny):
    """Design matrix ``[1, x, y]`` of a plane fit, coordinates relative to the stamp centre."""
    xs = (xx - nx / 2.0) / max(nx, 1)
    ys = (yy - ny / 2.0) / max(ny, 1)
    return np.column_stack([np.ones_like(xs), xs, ys])


@functools.lru_cache(maxsize=32)
def _border_design(shape, frac):
    """Flat indices of the border pixels and their plane design matrix (cached per shape)."""
    yy, xx = np.nonzero(_border_mask(shape, frac))
    flat = yy * shape[1] + xx
    A = _plane_design(xx, yy, shape[1], shape[0])
    flat.flags.writeable = False
    A.flags.writeable = False
    return flat, A


@functools.lru_cache(maxsize=32)
def _centre_distance(ny, nx):
    """Read-only distance of each pixel from the stamp centre (cached per shape)."""
    Y, X = pixel_grid(ny, nx)
    rc = np.hypot(X - (nx - 1) / 2.0, Y - (ny - 1) / 2.0)
    rc.flags.writeable = False
    return rc


def estimate_background(data, good, border_frac=0.1, n_iter=4, clip=3.0):
    """Fit a sigma-clipped plane to the stamp border.

    Parameters
    ----------
    data : ndarray
        2-D image.
    good : ndarray of bool
        Mask of finite, unmasked pixels.
    border_frac : float
        Border width as a fraction of the shorter side.
    n_iter : int
        Sigma-clipping iterations.
    clip : float
        Clipping threshold in robust standard deviations.

    Returns
    -------
    plane : ndarray
        The background model, same shape as ``data``.
    noise : float
        Robust standard deviation of the clipped border pixels (0 when it cannot be measured).
    """
    ny, nx = data.shape
    border = _border_mask(data.shape, border_frac)
    flat, A_border = _border_design(data.shape, border_frac)
    if good.ravel()[flat].all():  # the usual case: a clean border, whose design matrix is cached
        v = data.ravel()[flat].astype(np.float64)
        A = A_border
    else:
        sel = border & good
        if sel.sum() < 10:
            sel = good
        if sel.sum() < 3:
            return np.zeros(data.shape), 0.0
        yy, xx = np.nonzero(sel)
        v = data[sel].astype(np.float64)
        A = _plane_design(xx, yy, nx, ny)
    keep = np.ones(v.size, dtype=bool)
    coef = np.array([np.median(v), 0.0, 0.0])
    noise = 0.0
    for _ in range(n_iter):
        if keep.sum() < 3:
            break
        Ak = A[keep]
        try:
            coef = np.linalg.solve(Ak.T @ Ak, Ak.T @ v[keep])
        except np.linalg.LinAlgError:
            coef, *_ = np.linalg.lstsq(Ak, v[keep], rcond=None)
        resid = v - A @ coef
        mad = np.median(np.abs(resid[keep] - np.median(resid[keep])))
        noise = 1.4826 * mad
        if noise <= 0:
            noise = float(np.std(resid[keep]))
            break
        new_keep = np.abs(resid) < clip * noise
        if np.array_equal(new_keep, keep):
            break  # converged: another pass would give the same plane and noise
        keep = new_keep
    gx = coef[1] * (np.arange(nx) - nx / 2.0) / max(nx, 1)
    gy = coef[2] * (np.arange(ny) - ny / 2.0) / max(ny, 1)
    plane = coef[0] + gy[:, None] + gx[None, :]
    return plane, float(noise)


def _deblend(smooth, sub, seg, iy, ix, thresh, min_flux_frac=0.05):
    """Split touching sources (stars, neighbours) off the target's segment.

    A watershed of the smoothed image, seeded at its local maxima, cuts the segment into
    regions. Regions holding less than ``min_flux_frac`` of the segment's flux (star-forming
    clumps, arm knots) stay with the target; brighter ones that do not hold the target's peak
    are separate sources and are removed.
    """
    from skimage.segmentation import watershed

    # work in the segment's bounding box: stamps are several times larger than the galaxy
    ys, xs = np.nonzero(seg)
    y0, y1 = max(int(ys.min()) - 1, 0), int(ys.max()) + 2
    x0, x1 = max(int(xs.min()) - 1, 0), int(xs.max()) + 2
    box = (slice(y0, y1), slice(x0, x1))
    sm, sg = smooth[box], seg[box]
    # local maxima of the smoothed image within the segment (7 x 7 neighbourhood, as a
    # peak finder with a minimum distance of 3 pixels); plateaus keep their first pixel
    vals = np.where(sg, sm, -np.inf)
    peak = (vals == ndimage.maximum_filter(vals, size=7, mode="constant", cval=-np.inf)) & sg & (sm > max(thresh, 0.0))
    lab, npk = ndimage.label(peak)
    if npk < 2:
        return seg
    markers = np.zeros(sg.shape, dtype=np.int32)
    first = ndimage.minimum_position(np.arange(peak.size).reshape(peak.shape), lab, np.arange(1, npk + 1))
    for k, (py, px) in enumerate(first, start=1):
        markers[py, px] = k
    ty, tx = iy - y0, ix - x0
    if markers[ty, tx] == 0:
        markers[ty, tx] = npk + 1
    ws = watershed(-sm, markers, mask=sg)
    target = ws[ty, tx]
    pos = np.clip(sub[box], 0, None)
    total = float(pos[sg].sum())
    if total <= 0:
        return seg
    n = int(ws.max())
    fluxes = ndimage.sum_labels(pos, ws, np.arange(1, n + 1))
    keep = (fluxes < min_flux_frac * total) | (np.arange(1, n + 1) == target)
    out = np.zeros_like(seg)
    out[box] = sg & keep[np.clip(ws - 1, 0, n - 1)] & (ws > 0)
    out[iy, ix] = True
    return out


def _find_galaxy(sub, noise, cfg):
    """Return (x0, y0, r50, segment mask, fallback flag, snr)."""
    ny, nx = sub.shape
    smooth = ndimage.gaussian_filter(sub, 1.5)
    # noise of the smoothed image (white noise through a Gaussian of sigma s: / (2 sqrt(pi) s))
    snoise = noise / (2.0 * np.sqrt(np.pi) * 1.5) if noise > 0 else 0.0
    Y, X = pixel_grid(ny, nx)
    rc = _centre_distance(ny, nx)
    search = rc <= 0.25 * min(nx, ny)
    thresh = cfg.detect_nsigma * snoise if snoise > 0 else 0.0
    det = smooth > thresh
    lab, nlab = ndimage.label(det)
    fallback = False
    seg = None
    if nlab:
        # the target is the detected source with the most flux near the stamp centre: a
        # cosmic ray or a faint neighbour closer to the centre does not win over the galaxy
        idx = np.arange(1, nlab + 1)
        flux = ndimage.sum_labels(np.clip(sub, 0, None), lab, idx)
        dmin = ndimage.minimum(rc, lab, idx)
        score = np.where(dmin <= 0.25 * min(nx, ny), flux / (1.0 + (dmin / (0.1 * min(nx, ny))) ** 2), -1.0)
        k = int(np.argmax(score))
        if score[k] > 0:
            seg = lab == idx[k]
            cand = np.where(seg & search, smooth, -np.inf)
            if not np.isfinite(cand).any():
                cand = np.where(seg, smooth, -np.inf)
            iy, ix = np.unravel_index(int(np.argmax(cand)), cand.shape)
    if seg is None:
        fallback = True
        seg = np.ones_like(det)
        cand = np.where(search, smooth, -np.inf)
        iy, ix = np.unravel_index(int(np.argmax(cand)), cand.shape)
    if not fallback:
        seg = _deblend(smooth, sub, seg, iy, ix, thresh)
    # flux-weighted centroid within a small radius of the peak
    win = (slice(max(iy - 3, 0), iy + 4), slice(max(ix - 3, 0), ix + 4))
    Xw, Yw = X[win], Y[win]
    w = np.clip(smooth[win], 0, None) * (np.hypot(Xw - ix, Yw - iy) <= 3) * seg[win]
    if w.sum() > 0:
        x0 = float((w * Xw).sum() / w.sum())
        y0 = float((w * Yw).sum() / w.sum())
    else:
        x0, y0 = float(ix), float(iy)
    flux_img = np.where(seg, sub, 0.0)
    total = float(flux_img.sum())
    npix = int(seg.sum())
    snr = total / (noise * np.sqrt(npix)) if noise > 0 and npix > 0 else float("inf") if total > 0 else 0.0
    if fallback or total <= 0:
        return x0, y0, min(nx, ny) / 8.0, seg, True, max(snr, 0.0)
    sy, sx = np.nonzero(seg)
    r = np.hypot(sx - x0, sy - y0)
    f = sub[sy, sx]
    order = np.argsort(r)
    cum = np.cumsum(f[order])
    k = int(np.searchsorted(cum, 0.5 * total))
    k = min(max(k, 0), r.size - 1)
    r50 = float(r[order][k])
    return x0, y0, max(r50, cfg.min_r50_pix), seg, False, snr


def _softened_r50(sub, seg, x0, y0, softening):
    """Half-light radius of ``arcsinh(flux / softening)`` over the segment ``seg`` (input pixels)."""
    sy, sx = np.nonzero(seg)
    r = np.hypot(sx - x0, sy - y0)
    order = np.argsort(r)
    cum = np.cumsum(np.arcsinh(np.clip(sub[sy, sx], 0.0, None) / softening)[order])
    if cum.size == 0 or cum[-1] <= 0:
        return None
    k = min(int(np.searchsorted(cum, 0.5 * cum[-1])), r.size - 1)
    return float(r[order][k])


def normalise(data, config=None, *, mask=None, r50_pix=None, variance=None, r50_softening=None,
              length_frame_softening=None, length_frame_always=False):
    """Bring a cutout into the model frame.

    Parameters
    ----------
    data : array_like
        2-D image. NaN and inf pixels are treated as masked.
    config : NormaliseConfig, optional
        Preprocessing parameters (default: ``NormaliseConfig()``). Inference must use the
        configuration stored in the model bundle.
    mask : array_like of bool, optional
        True where pixels are bad (e.g. removed stars).
    r50_pix : float, optional
        The galaxy's half-light radius in input pixels, e.g. from an input catalogue. When
        omitted it is measured from the image.
    variance : array_like, optional
        Per-pixel variance of ``data`` (e.g. from a VARIANCE or IVAR extension). When given,
        the S/N uses it over the galaxy's segment instead of the border's noise; it changes
        nothing else.
    r50_softening : float, optional
        Size the frame by the half-light radius of the galaxy's softened light,
        ``arcsinh(flux / (r50_softening * noise))`` over the same segment, instead of its flux's
        (when ``r50_pix`` is not given). The softening flattens a bright core the way a display
        stretch does, so a concentrated galaxy in linear fluxes gets about the frame its display
        image gets (:data:`survey_bars.pipeline.LENGTH_FRAME_SOFTENING`). Without a noise
        estimate, or when the result is not wider, the flux's radius is used.
    length_frame_softening : float, optional
        Also make the wider frame that ``r50_softening`` would give (from the same background and
        segment, without measuring them again) and attach it as ``length_frame``, where the
        segment reaches the stamp's edge (``segment_at_edge``), or always with
        ``length_frame_always``. It is attached only when it is wider, and never when
        ``r50_pix`` is given (the pipeline's ``RunOptions.length_frame``).
    length_frame_always : bool, optional
        Make that frame whether or not the stamp cuts the galaxy.

    Returns
    -------
    Normalised
        The model input and the geometry needed to map results back to the cutout.

    Raises
    ------
    ValueError
        If ``data`` is not a 2-D array of at least 8 x 8 pixels, or has no finite pixel.
    """
    cfg = config or NormaliseConfig()
    arr = np.asarray(data)
    if arr.ndim != 2:
        msg = f"normalise() needs a 2-D image, got an array of shape {arr.shape}."
        raise ValueError(msg)
    if min(arr.shape) < 8:
        msg = f"The image is {arr.shape[1]} x {arr.shape[0]} pixels; at least 8 x 8 are needed."
        raise ValueError(msg)
    arr = arr.astype(np.float64, copy=False)
    good = np.isfinite(arr)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)
    if not good.any():
        msg = "The image has no finite, unmasked pixel."
        raise ValueError(msg)
    ny, nx = arr.shape
    plane, noise = estimate_background(np.where(good, arr, 0.0), good, cfg.border_frac)
    sub = np.where(good, arr - plane, 0.0)

    x0, y0, r50, seg, fallback, snr = _find_galaxy(sub, noise, cfg)
    at_edge = not fallback and bool(seg[0].any() or seg[-1].any() or seg[:, 0].any() or seg[:, -1].any())
    if variance is not None:
        var = np.asarray(variance, dtype=np.float64)
        if var.shape == arr.shape:
            use = seg & good & np.isfinite(var) & (var > 0)
            total_var = float(var[use].sum())
            if total_var > 0:
                snr = max(float(sub[use].sum()) / np.sqrt(total_var), 0.0)
    given = r50_pix is not None and np.isfinite(r50_pix) and r50_pix > 0

    def softened(s):
        """The softened light's half-light radius where it is wider, else the flux's."""
        if s is None or given or fallback or not noise > 0:
            return r50
        soft = _softened_r50(sub, seg, x0, y0, float(s) * noise)
        return max(soft, cfg.min_r50_pix) if soft is not None and soft > r50 else r50

    def frame(r50):
        return _frame(sub, good, plane, cfg, x0, y0, r50, fallback, noise, snr, at_edge, clamp=not given)

    out = frame(float(r50_pix) if given else softened(r50_softening))
    if length_frame_softening is not None and (at_edge or length_frame_always):
        wide = frame(softened(length_frame_softening))
        if wide.scale > out.scale:  # the bar is measured in the wider frame
            out = dataclasses.replace(out, length_frame=wide)
    return out


def _frame(sub, good, plane, cfg, x0, y0, r50, fallback, noise, snr, at_edge, clamp=True):
    """The model frame of the background-subtracted ``sub`` for a half-light radius ``r50``."""
    ny, nx = sub.shape
    if clamp and r50 > MAX_R50_FRAC * min(nx, ny):
        # a half-light radius over a quarter of the stamp means the segmentation merged the
        # galaxy with something else (masked regions, bleed trails): clamp it and flag it
        r50 = MAX_R50_FRAC * min(nx, ny)
        fallback = True

    # pixels within r50 of the centre, counted in the circle's bounding box
    rad = max(r50, 2.0)
    ys = slice(max(int(np.floor(y0 - rad)), 0), max(int(np.ceil(y0 + rad)) + 1, 0))
    xs = slice(max(int(np.floor(x0 - rad)), 0), max(int(np.ceil(x0 + rad)) + 1, 0))
    Y, X = pixel_grid(ny, nx)
    within = np.hypot(X[ys, xs] - x0, Y[ys, xs] - y0) <= rad
    bad_centre_frac = float((~good[ys, xs] & within).sum() / max(within.sum(), 1))
    bad_frac = float((~good).sum() / good.size)

    n = cfg.size
    scale = cfg.half_width_r50 * r50 / (n / 2.0)
    src = sub
    if scale > 1.0:
        src = ndimage.gaussian_filter(sub, 0.5 * np.sqrt(scale**2 - 1.0))
    c = (n - 1) / 2.0
    grid = (np.arange(n) - c) * scale
    yy = y0 + grid[:, None] + np.zeros((1, n))
    xx = x0 + grid[None, :] + np.zeros((n, 1))
    out = ndimage.map_coordinates(src, [yy, xx], order=1, mode="constant", cval=0.0)
    inside = (xx >= -0.5) & (xx <= nx - 0.5) & (yy >= -0.5) & (yy <= ny - 0.5)
    outside_frac = float(1.0 - inside.mean())

    # robust stretch relative to the galaxy's central brightness in the frame
    core = out[int(c) - 2 : int(c) + 4, int(c) - 2 : int(c) + 4]
    ref = float(np.max(core)) if core.size else 0.0
    if not np.isfinite(ref) or ref <= 0:
        ref = float(np.max(out)) if np.max(out) > 0 else 1.0
    img = np.arcsinh(cfg.asinh_beta * out / ref) / np.arcsinh(cfg.asinh_beta)
    img = np.clip(img, -0.5, 1.5).astype(np.float32)

    offset = float(np.hypot(x0 - (nx - 1) / 2.0, y0 - (ny - 1) / 2.0) / min(nx, ny))
    return Normalised(
        image=img,
        scale=float(scale),
        x0=float(x0),
        y0=float(y0),
        r50_pix=float(r50),
        background=float(plane[int(np.clip(round(y0), 0, ny - 1)), int(np.clip(round(x0), 0, nx - 1))]),
        noise=float(noise),
        snr=float(snr),
        bad_centre_frac=bad_centre_frac,
        bad_frac=bad_frac,
        outside_frac=outside_frac,
        centre_offset_frac=offset,
        size_from_fallback=bool(fallback),
        segment_at_edge=bool(at_edge),
    )
