"""Observing a rendered galaxy: sky, noise, residual background, neighbours, stars, cosmic
rays and masks (:func:`observe`).
"""

from __future__ import annotations

import math

import numpy as np

from .render import psf_image


def observe(params, comps):
    """Add sky, noise, background residuals and artefacts to the noiseless image.

    Parameters
    ----------
    params : GalaxyParams
    comps : dict
        Output of :func:`render_components` (with ``psf=True``).

    Returns
    -------
    image : ndarray
        float32 image in nanomaggies, sky-subtracted, NaN where masked.
    info : dict
        ``noise_sigma`` (sky noise per pixel), ``snr`` (matched-filter S/N of the galaxy) and
        the artefact switches that were applied.
    """
    rng = np.random.default_rng(params.noise_seed)
    N = params.stamp_size
    model = comps["convolved"]
    g, sky = params.gain, params.sky
    img = rng.poisson(g * (np.clip(model, 0, None) + sky)) / g - sky
    sigma = math.sqrt(sky / g)
    gal = comps["galaxy_psf"]
    snr = float(math.sqrt(np.sum(gal**2 / (sigma**2 + np.clip(gal, 0, None) / g))))
    img += rng.normal(0, 0.3) * sigma  # residual sky level
    yy, xx = np.mgrid[0:N, 0:N]
    if params.has_gradient:
        amp, ang = rng.uniform(0.3, 2.0) * sigma, rng.uniform(0, 2 * math.pi)
        img += amp * ((xx - N / 2) * math.cos(ang) + (yy - N / 2) * math.sin(ang)) / N
    info = {"noise_sigma": sigma, "snr": snr, "has_bleed": False}
    if params.bright_star:
        x, y, f, satf = params.bright_star
        star_peak = f * psf_image(params).max() * params.oversample**2
        sat = max(star_peak / satf, 2.0 * float(comps["galaxy_psf"].max()))
        over = img > sat
        if over.any():
            info["has_bleed"] = True
            for col in np.unique(np.nonzero(over)[1]):
                rows = np.nonzero(over[:, col])[0]
                excess = float(np.sum(img[rows, col] - sat))
                ext = int(min(0.25 * excess / sat, N))  # charge spills along the column
                img[max(rows.min() - ext, 0): rows.max() + ext + 1, col] = sat
    if params.has_cosmic:
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = rng.uniform(0, N, 2)
            L, ang = rng.uniform(1, 12), rng.uniform(0, math.pi)
            amp = rng.uniform(5, 60) * sigma
            for t in np.linspace(0, L, int(2 * L) + 2):
                i, j = int(x0 + t * math.cos(ang)), int(y0 + t * math.sin(ang))
                if 0 <= i < N and 0 <= j < N:
                    img[j, i] = amp + rng.normal(0, sigma)
    if params.has_mask:
        r50 = params.extra.get("r50_pix", 0.1 * N)
        c = (N - 1) / 2
        if params.stars and rng.random() < 0.6:  # a removed star: NaN disc
            x, y, _ = params.stars[0]
            if math.hypot(x - c, y - c) > 1.2 * r50:
                rad = rng.uniform(1.5, 3.0) * params.psf_fwhm / params.pixel_scale + 1
                img[np.hypot(xx - x, yy - y) < rad] = np.nan
        else:  # chip edge / missing data: a strip of zeros or NaN along one side
            w = int(rng.uniform(0.05, 0.2) * N)
            val = 0.0 if rng.random() < 0.5 else np.nan
            side = int(rng.integers(4))
            sl = [np.s_[:w, :], np.s_[-w:, :], np.s_[:, :w], np.s_[:, -w:]][side]
            img[sl] = val
    return img.astype(np.float32), info
