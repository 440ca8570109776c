"""Rendering a galaxy's light: GalSim bulge and disc, numpy bar, arms, rings, clumps and dust,
convolved with the PSF and binned to the survey pixels (:func:`render_components`).
"""

from __future__ import annotations

import math

import numpy as np


def _psf(params):
    import galsim

    if params.psf_type == "kolmogorov":
        psf = galsim.Kolmogorov(fwhm=params.psf_fwhm)
    else:
        psf = galsim.Moffat(beta=params.psf_beta, fwhm=params.psf_fwhm)
    return psf.shear(g1=params.psf_g1, g2=params.psf_g2)


def psf_image(params):
    """The PSF image on the oversampled grid (odd side, unit sum, centred).

    Parameters
    ----------
    params : GalaxyParams

    Returns
    -------
    ndarray
    """
    sub = params.pixel_scale / params.oversample
    half = int(math.ceil(4 * params.psf_fwhm / sub))
    k = min(2 * half + 1, params.stamp_size * params.oversample - 1)
    img = _psf(params).drawImage(nx=k, ny=k, scale=sub, method="no_pixel").array.astype(np.float64)
    return img / img.sum()


def _draw_galsim(prof, M, sub, off, refine=False):
    """Draw a GalSim profile (no PSF) with an accurately integrated centre."""
    if not refine:
        return prof.drawImage(nx=M, ny=M, scale=sub, method="auto", offset=off).array.astype(np.float64)
    im = prof.drawImage(nx=M, ny=M, scale=sub, method="no_pixel", offset=off).array.astype(np.float64)
    cx, cy = (M - 1) / 2 + off[0], (M - 1) / 2 + off[1]
    ix, iy = int(round(cx)), int(round(cy))
    r, f = 3, 15
    k = 2 * r + 1
    if not (r <= ix < M - r and r <= iy < M - r):
        return im
    fine = prof.drawImage(nx=k * f, ny=k * f, scale=sub / f, method="no_pixel",
                          offset=((cx - ix) * f, (cy - iy) * f)).array
    im[iy - r: iy + r + 1, ix - r: ix + r + 1] = fine.reshape(k, f, k, f).sum((1, 3))
    return im


def _grid(params):
    """Sky offsets (east, north; arcsec) of the sub-pixel centres from the galaxy centre."""
    N, os_, s = params.stamp_size, params.oversample, params.pixel_scale
    t = ((np.arange(N * os_) + 0.5) / os_ - 0.5).astype(np.float32)
    xc, yc = (N - 1) / 2 + params.dx, (N - 1) / 2 + params.dy
    east = -(t[None, :] - xc) * s
    north = (t[:, None] - yc) * s
    return east, north


def _disc_coords(params, east, north):
    """Disc-plane coordinates (X along the line of nodes, Y perpendicular), arcsec."""
    th = math.radians(params.disc_pa)
    u = east * math.sin(th) + north * math.cos(th)
    v = east * math.cos(th) - north * math.sin(th)
    ci = max(math.cos(math.radians(params.inclination)), 0.05)
    return u, v / ci, u, v


def _norm(img, flux):
    tot = img.sum()
    if tot <= 0:
        img = np.zeros_like(img)
        c = img.shape[0] // 2
        img[c, c] = 1.0
        tot = 1.0
    return img * (flux / tot)


def _bar_image(params, X, Y):
    p = math.radians(params.bar_phi)
    a, b = params.bar_a, params.bar_a * params.bar_q
    bp = X * math.cos(p) + Y * math.sin(p)
    bq = -X * math.sin(p) + Y * math.cos(p)
    m2 = (bp / a) ** 2 + (bq / b) ** 2
    return np.where(m2 < 1, (1 - np.minimum(m2, 1)) ** 2, 0.0)


def _arm_phase(params, R, psi, shift=0.0):
    lnr = np.log(np.maximum(R, 1e-6) / params.arm_r0)
    return params.n_arms * (psi - math.radians(params.arm_phase) - lnr / math.tan(math.radians(params.arm_pitch)) - shift)


def render_components(params, *, psf=True, components=True):
    """Render the noiseless components of one galaxy.

    Parameters
    ----------
    params : GalaxyParams
        From :func:`draw_params`.
    psf : bool, optional
        Also convolve with the PSF (keys ``"galaxy_psf"`` and ``"convolved"``).
    components : bool, optional
        Return the separate native-pixel components; when False only ``galaxy_fine``,
        ``galaxy_psf`` and ``convolved`` are returned (faster; used by :func:`simulate`).

    Returns
    -------
    dict of ndarray
        Native-pixel images (nanomaggies per pixel), all PSF-free unless named ``*_psf`` or
        ``convolved``: ``bulge``, ``disc``, ``bar``, ``arms``, ``rings``, ``clumps`` (as drawn,
        before dust), ``transmission`` (dust, per pixel mean), ``galaxy`` (sum after dust),
        ``contaminants`` (stars and neighbours), ``galaxy_psf`` and ``convolved`` (everything
        with the PSF), plus ``galaxy_fine`` (the oversampled galaxy) for size measurements.
    """
    import galsim

    N, os_, s = params.stamp_size, params.oversample, params.pixel_scale
    M, sub = N * os_, s / os_
    east, north = _grid(params)
    off = (params.dx * os_, params.dy * os_)
    F = params.total_flux
    beta = (90.0 + params.disc_pa) * galsim.degrees
    bulge = galsim.Sersic(n=params.sersic_n, half_light_radius=params.bulge_r50).shear(q=params.bulge_q, beta=beta)
    fine = {"bulge": _draw_galsim(bulge.withFlux(F * params.bulge_frac), M, sub, off, refine=True)}
    if params.cls != "smooth":
        X, Y, u, v = _disc_coords(params, east, north)
        R, psi = np.hypot(X, Y), np.arctan2(Y, X)
        h = params.disc_scale
        extras = params.bar_frac + params.arm_frac + params.ring_in_frac + params.ring_out_frac + params.clump_frac
        scale_x = min(1.0, 0.85 * (1 - params.bulge_frac) / extras) if extras > 0 else 1.0
        fdisc = F * (1 - params.bulge_frac - extras * scale_x)
        disc = galsim.InclinedExponential(params.inclination * galsim.degrees, scale_radius=h,
                                          scale_height=params.disc_hz, flux=fdisc).rotate(beta)
        loff = (off[0] - params.lop_dx / sub, off[1] + params.lop_dy / sub)  # east is -x
        fine["disc"] = _draw_galsim(disc, M, sub, loff)
        if params.has_bar:
            fine["bar"] = _norm(_bar_image(params, X, Y), F * params.bar_frac * scale_x)
        if params.has_spiral:
            onset = 1.0 / (1.0 + np.exp(-(R - params.arm_r0) / (0.15 * params.arm_r0)))
            arms = (0.5 * (1 + np.cos(_arm_phase(params, R, psi)))) ** params.arm_sharp
            arms *= np.exp(-R / h) * onset * (1 + params.arm_asym * np.cos(psi - math.radians(params.arm_phase)))
            fine["arms"] = _norm(arms, F * params.arm_frac * scale_x)
        if params.has_ring:
            p = math.radians(params.bar_phi if params.has_bar else params.arm_phase)
            rp, rq = X * math.cos(p) + Y * math.sin(p), -X * math.sin(p) + Y * math.cos(p)
            rell = np.hypot(rp, rq / params.ring_q)
            ring = np.zeros_like(X)
            for frac, rr in ((params.ring_in_frac, params.ring_in_r), (params.ring_out_frac, params.ring_out_r)):
                if frac > 0:
                    w = max(0.12 * rr, 0.5 * sub)
                    ring += _norm(np.exp(-0.5 * ((rell - rr) / w) ** 2), F * frac * scale_x)
            fine["rings"] = ring
        if params.clumps:
            cl = np.zeros_like(X)
            th, ci = math.radians(params.disc_pa), math.cos(math.radians(params.inclination))
            jc0, ic0 = (M - 1) / 2 + off[1], (M - 1) / 2 + off[0]
            for (cx, cy, sig, wt) in params.clumps:
                sig = max(sig, 0.5 * sub)
                cu, cv = cx, cy * ci  # clump centre on the sky: (east, north) -> sub-pixel (i, j)
                ic = ic0 - (cu * math.sin(th) + cv * math.cos(th)) / sub
                jc = jc0 + (cu * math.cos(th) - cv * math.sin(th)) / sub
                w = int(math.ceil(5 * sig / sub)) + 1
                sl = np.s_[max(int(jc) - w, 0): int(jc) + w + 1, max(int(ic) - w, 0): int(ic) + w + 1]
                if X[sl].size:
                    cl[sl] += (0.3 + wt) * np.exp(-0.5 * ((X[sl] - cx) ** 2 + (Y[sl] - cy) ** 2) / sig**2)
            fine["clumps"] = _norm(cl, F * params.clump_frac * scale_x)
        trans = np.ones_like(X)
        if params.dust == "lane":
            # the dust disc (thinner than the stars) projects to a lane offset to the near side,
            # as wide as its thickness plus its foreshortened radial extent
            ci = math.cos(math.radians(params.inclination))
            w = max(0.4 * params.disc_hz + 0.3 * h * ci, sub)
            v0 = 0.3 * params.disc_hz + 0.25 * h * ci
            trans = 1 - params.dust_tau * np.exp(-0.5 * ((v - v0) / w) ** 2) * np.exp(-np.abs(u) / (4 * h))
        elif params.dust == "arms":
            onset = 1.0 / (1.0 + np.exp(-(R - params.arm_r0) / (0.15 * params.arm_r0)))
            lanes = (0.5 * (1 + np.cos(_arm_phase(params, R, psi, shift=0.25)))) ** (2 * params.arm_sharp)
            trans = 1 - params.dust_tau * lanes * onset * np.exp(-R / (3 * h))
    else:
        trans = np.ones((M, M))
    gal_fine = sum(fine.values()) * trans
    bin_ = lambda a: a.reshape(N, os_, N, os_).sum((1, 3))  # noqa: E731
    out = {"galaxy_fine": gal_fine}
    if components:
        out.update({k: bin_(v) for k, v in fine.items()})
        out["transmission"] = bin_(trans) / os_**2
        out["galaxy"] = bin_(gal_fine)

    # contaminants (pre-PSF, oversampled): stars as points, neighbours as Sersic ellipses
    cont = np.zeros((M, M))
    pts = list(params.stars) + ([params.bright_star[:3]] if params.bright_star else [])
    for (x, y, f) in pts:
        j, i = int(round((y + 0.5) * os_ - 0.5)), int(round((x + 0.5) * os_ - 0.5))
        if 0 <= i < M and 0 <= j < M:
            cont[j, i] += f
    if params.neighbours:
        t = (np.arange(M) + 0.5) / os_ - 0.5
        for (x, y, f, r50, n, q, pa) in params.neighbours:
            th = math.radians(pa)
            ddx, ddy = t[None, :] - x, t[:, None] - y
            a1 = -ddx * math.sin(th) + ddy * math.cos(th)
            a2 = -ddx * math.cos(th) - ddy * math.sin(th)
            bn = 2 * n - 1 / 3 + 0.009876 / n
            r = np.sqrt(a1**2 + (a2 / q) ** 2) / r50
            prof = np.exp(-bn * (r ** (1 / n) - 1))
            tot = 2 * math.pi * n * math.exp(bn) * bn ** (-2 * n) * math.gamma(2 * n) * r50**2 * q * os_**2
            cont += prof * (f / tot)
    if components:
        out["contaminants"] = bin_(cont)
    if psf:
        from scipy.signal import fftconvolve

        k = psf_image(params)
        gconv = fftconvolve(gal_fine, k, mode="same")
        out["galaxy_psf"] = bin_(gconv)
        out["convolved"] = out["galaxy_psf"] + (bin_(fftconvolve(cont, k, mode="same")) if cont.any() else 0.0)
    return out


def _half_light_radius(fine, params):
    """Circular half-light radius (arcsec) of an oversampled image about the galaxy centre."""
    east, north = _grid(params)
    r = np.hypot(east, north).ravel()
    sub = params.pixel_scale / params.oversample
    idx = np.minimum((r / (0.25 * sub)).astype(np.int64), 10**7)
    prof = np.bincount(idx, weights=fine.ravel())
    cum = np.cumsum(prof)
    k = int(np.searchsorted(cum, 0.5 * cum[-1]))
    lo = cum[k - 1] if k > 0 else 0.0
    frac = (0.5 * cum[-1] - lo) / max(cum[k] - lo, 1e-300)
    return float((k + frac) * 0.25 * sub)
