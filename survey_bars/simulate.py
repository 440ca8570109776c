"""Survey-realistic simulated galaxy cutouts with exact truth.

``survey-bars simulate --out DIR -n N`` (or :func:`simulate`) writes one FITS cutout per galaxy
and a Parquet truth table. Every galaxy is drawn from its own random state,
``numpy.random.default_rng([seed, i])``, so the output is identical for any ``workers``.

Model (all light profiles live in the galaxy's disc plane and are projected with the disc):

* **bulge**: GalSim ``Sersic`` (n quantised to 0.25 so GalSim's per-n tables are reused);
  for the ``smooth`` class it is the whole galaxy;
* **disc**: GalSim ``InclinedExponential`` (a thick exponential disc, sech^2 vertical profile);
* **bar**: a 2-D Ferrers profile ``I = I0 (1 - m^2)^2`` with ``m^2 = (p/a)^2 + (q/b)^2``
  in the disc plane, projected with the disc's inclination and PA;
* **spiral arms**: ``n_arms`` logarithmic arms, starting at the bar ends in barred galaxies;
* **rings**: optional inner (around the bar) and outer rings;
* **clumps**: star-forming knots in the disc (along the arms when there are arms);
* **dust**: a mid-plane lane in edge-on discs, lanes on the leading edges of arms otherwise
  (a multiplicative transmission, so it removes light);
* **lopsidedness**: the disc centre is offset from the bulge/bar centre.

GalSim has no Ferrers, spiral, ring, clump or dust-lane profile and cannot multiply an image by
a transmission map, so those components are evaluated with numpy on an oversampled pixel grid
(``oversample`` x ``oversample`` sub-pixels per pixel) in disc-plane coordinates. GalSim draws
the bulge and disc onto the same grid (without PSF; the cusp of the Sersic profile is
integrated on a finer local grid because GalSim's exact pixel-convolved FFT draw needs
enormous FFTs for n ~ 4 bulges). The summed, dust-attenuated model is convolved with the
GalSim-drawn PSF image (Moffat or Kolmogorov, survey FWHM with scatter, small ellipticity)
by ``scipy.signal.fftconvolve`` and binned to the survey pixels, which integrates the light
over each pixel.

Observation: sky + Poisson noise at the survey's depth (per-galaxy depth scatter), the sky
subtracted as in survey pipelines with a random residual level and gradient, sub-pixel centring
offsets, field stars and neighbour galaxies, occasional saturated bright stars with bleed
trails, cosmic rays and masked regions (NaN, or zeros for a chip edge).

Units: images are in **nanomaggies** per pixel (``BUNIT = 'nanomaggy'``; AB magnitude =
22.5 - 2.5 log10(flux), as in SDSS and the Legacy Surveys). All surveys use r-band-like
surface brightnesses (HSC and Euclid VIS colour terms are ignored).

Conventions: the FITS data have north up and east left (``CD1_1 = -scale/3600``,
``CD2_2 = +scale/3600``); position angles are astronomical (east of north, degrees in [0, 180)).
The truth bar length is the **full projected end-to-end length on the sky**: twice the
semi-major axis of the projected bar ellipse (for a bar of intrinsic semi-axes a, b at angle phi
from the line of nodes in a disc of inclination i, the projected ellipse has shape matrix
``P R diag(a^2, b^2) R^T P^T`` with ``P = diag(1, cos i)``; when b -> 0 its semi-major axis is
``a sqrt(cos^2 phi + sin^2 phi cos^2 i)``). Bars whose projection would be rounder than 0.8
are re-drawn at another phi, since they would not look like bars.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SurveyPreset",
    "display_copies",
    "display_rgb",
    "SURVEYS",
    "CLASSES",
    "DEFAULT_CLASS_MIX",
    "GalaxyParams",
    "draw_params",
    "projected_bar",
    "render_components",
    "observe",
    "simulate_one",
    "simulate",
    "make_gallery",
    "configure_parser",
    "run_cli",
]

CLASSES = ("smooth", "edge_on", "disc", "barred")
DEFAULT_CLASS_MIX = {"smooth": 0.2, "edge_on": 0.1, "disc": 0.3, "barred": 0.4}
STAMP_LIMITS = (48, 256)
ZP_AB = 22.5  # nanomaggy zero point


@dataclass(frozen=True)
class SurveyPreset:
    """Observing parameters of one survey.

    Parameters
    ----------
    name : str
        Key in :data:`SURVEYS`.
    band : str
        Band the preset represents.
    pixel_scale : float
        Pixel scale in arcsec.
    psf_fwhm : float
        Median PSF FWHM in arcsec.
    psf_fwhm_range : tuple of float
        Smallest and largest FWHM drawn (arcsec); the log-normal draw is clipped to them.
    psf_fwhm_scatter : float
        Log-normal scatter of the FWHM (natural log).
    depth5_mag : float
        5-sigma point-source depth (AB), which sets the per-pixel sky noise.
    sky_mu : float
        Sky surface brightness (AB mag / arcsec^2), which sets the Poisson gain.
    psf_types : tuple of str
        PSF profiles drawn from (``"moffat"``, ``"kolmogorov"``).
    cosmic_prob : float
        Probability of cosmic-ray hits in a cutout.
    """

    name: str
    band: str
    pixel_scale: float
    psf_fwhm: float
    psf_fwhm_range: tuple
    psf_fwhm_scatter: float
    depth5_mag: float
    sky_mu: float
    psf_types: tuple = ("moffat", "kolmogorov")
    cosmic_prob: float = 0.05

    def sky_per_pixel(self) -> float:
        """Sky level in nanomaggies per pixel."""
        return 10 ** (-0.4 * (self.sky_mu - ZP_AB)) * self.pixel_scale**2

    def noise_per_pixel(self, fwhm=None) -> float:
        """Sky noise per pixel (nanomaggies) that gives the 5-sigma point-source depth."""
        sig = (fwhm or self.psf_fwhm) / 2.3548
        n_eff = 4 * math.pi * sig**2 / self.pixel_scale**2  # Gaussian-PSF effective area
        f5 = 10 ** (-0.4 * (self.depth5_mag - ZP_AB))
        return f5 / (5 * math.sqrt(max(n_eff, 1.0)))


#: published pixel scales and typical seeing; depths are typical 5-sigma point-source limits
SURVEYS = {
    "sdss": SurveyPreset("sdss", "r", 0.396, 1.3, (0.9, 2.0), 0.15, 22.2, 20.9, cosmic_prob=0.15),
    "decals": SurveyPreset("decals", "r", 0.262, 1.2, (0.8, 1.9), 0.15, 23.6, 20.9),
    "hsc": SurveyPreset("hsc", "i", 0.168, 0.6, (0.42, 1.0), 0.15, 26.2, 20.2),
    "euclid": SurveyPreset("euclid", "VIS", 0.1, 0.17, (0.155, 0.21), 0.05, 26.0, 22.2, ("moffat",), 0.1),
}


@dataclass
class GalaxyParams:
    """Everything needed to render one simulated cutout (angles in degrees, sizes in arcsec).

    Positions of stars and neighbours are 0-based pixel coordinates. ``bar_phi`` is the bar's
    angle in the disc plane from the line of nodes; ``disc_pa`` is the PA (E of N) of the line
    of nodes (the projected major axis).
    """

    object_id: str
    survey: str
    cls: str
    pixel_scale: float
    stamp_size: int
    oversample: int
    dx: float
    dy: float
    ra: float
    dec: float
    redshift: float
    psf_type: str
    psf_fwhm: float
    psf_beta: float
    psf_g1: float
    psf_g2: float
    total_flux: float
    bulge_frac: float
    sersic_n: float
    bulge_r50: float
    bulge_q: float
    disc_scale: float
    disc_hz: float
    inclination: float
    disc_pa: float
    lop_dx: float = 0.0
    lop_dy: float = 0.0
    has_bar: bool = False
    bar_a: float = float("nan")
    bar_q: float = float("nan")
    bar_phi: float = float("nan")
    bar_frac: float = 0.0
    has_spiral: bool = False
    arm_frac: float = 0.0
    n_arms: int = 2
    arm_pitch: float = 15.0
    arm_r0: float = 1.0
    arm_phase: float = 0.0
    arm_sharp: float = 4.0
    arm_asym: float = 0.0
    ring_in_frac: float = 0.0
    ring_in_r: float = 0.0
    ring_out_frac: float = 0.0
    ring_out_r: float = 0.0
    ring_q: float = 1.0
    clump_frac: float = 0.0
    clumps: tuple = ()
    dust: str = "none"
    dust_tau: float = 0.0
    stars: tuple = ()
    bright_star: tuple = ()
    neighbours: tuple = ()
    sky: float = 0.0
    gain: float = 1.0
    has_mask: bool = False
    has_cosmic: bool = False
    has_gradient: bool = False
    noise_seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def has_ring(self) -> bool:
        """True when an inner or outer ring is present."""
        return self.ring_in_frac > 0 or self.ring_out_frac > 0


# --------------------------------------------------------------------------------------------
# geometry helpers


def _kpc_per_arcsec(z, h0=70.0, om=0.3):
    """Angular scale (kpc/arcsec) in flat LCDM, by a small trapezoid integral."""
    zz = np.linspace(0.0, z, 65)
    dc = 299792.458 / h0 * np.trapezoid(1.0 / np.sqrt(om * (1 + zz) ** 3 + 1 - om), zz)  # Mpc
    return dc / (1 + z) * 1e3 * math.pi / (180 * 3600)


def projected_bar(a, q, phi, inclination, disc_pa):
    """Projected geometry of a bar lying in an inclined disc.

    Parameters
    ----------
    a : float
        Intrinsic semi-major axis (any length unit).
    q : float
        Intrinsic axis ratio b/a.
    phi : float
        Bar angle in the disc plane from the line of nodes (degrees).
    inclination : float
        Disc inclination (degrees; 0 = face-on).
    disc_pa : float
        PA of the line of nodes, east of north (degrees).

    Returns
    -------
    full_length : float
        Twice the semi-major axis of the projected bar ellipse (same unit as ``a``).
    pa : float
        PA of the projected major axis, east of north, in [0, 180).
    axis_ratio : float
        Axis ratio of the projected ellipse.
    """
    p, ci = math.radians(phi), math.cos(math.radians(inclination))
    r = np.array([[math.cos(p), -math.sin(p)], [math.sin(p), math.cos(p)]])
    s = np.diag([1.0, ci]) @ r @ np.diag([a * a, (q * a) ** 2]) @ r.T @ np.diag([1.0, ci])
    w, v = np.linalg.eigh(s)
    alpha = math.degrees(math.atan2(v[1, 1], v[0, 1]))  # from the line of nodes toward v
    return 2 * math.sqrt(w[1]), (disc_pa + alpha) % 180.0, math.sqrt(w[0] / w[1])


def _qround(x, step=0.25):
    return round(x / step) * step


# --------------------------------------------------------------------------------------------
# drawing parameters


def _lognormal(rng, median, sigma, lo, hi):
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, hi))


def _stamp_for(r50, fwhm, scale, fixed):
    if fixed:
        return int(fixed)
    size = 8.0 * math.hypot(r50, 0.5 * fwhm) / scale
    return int(np.clip(2 * math.ceil(size / 2), *STAMP_LIMITS))


def draw_params(rng, survey, cls, *, object_id="sim", stamp_size=None):
    """Draw the parameters of one galaxy and its observation.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state (one per galaxy for reproducibility).
    survey : str
        Key of :data:`SURVEYS`.
    cls : str
        One of :data:`CLASSES`.
    object_id : str, optional
        Identifier stored in the parameters.
    stamp_size : int, optional
        Fixed stamp side in pixels; by default about 8 x the (PSF-broadened) r50, clipped to
        [48, 256]. Galaxies that would not fit with a 4 r50 half-width are re-drawn.

    Returns
    -------
    GalaxyParams
    """
    sv = SURVEYS[survey]
    s = sv.pixel_scale
    fwhm = _lognormal(rng, sv.psf_fwhm, sv.psf_fwhm_scatter, *sv.psf_fwhm_range)
    max_stamp = stamp_size or STAMP_LIMITS[1]
    r50_max = max_stamp * s / 8.0
    r50_min = 0.2 * fwhm
    smooth = cls == "smooth"
    # redshift and physical size; re-drawn until the galaxy fits the largest stamp
    for _ in range(30):
        z = float(rng.uniform(0.01, 0.1))
        kpc = _kpc_per_arcsec(z)
        if smooth:
            r50 = _lognormal(rng, 3.5, 0.45, 0.5, 20.0) / kpc  # arcsec
            h = float("nan")
        else:
            h = _lognormal(rng, 3.0, 0.4, 0.8, 10.0) / kpc
            r50 = 1.678 * h
        if r50_min <= r50 <= r50_max:
            break
    r50 = float(np.clip(r50, r50_min, r50_max))
    if not smooth:
        h = r50 / 1.678
    dim = 10 * math.log10(1 + z)  # cosmological surface-brightness dimming

    p = dict(
        object_id=object_id, survey=survey, cls=cls, pixel_scale=s, redshift=z,
        ra=float(rng.uniform(0, 360)), dec=float(math.degrees(math.asin(rng.uniform(-0.5, 0.9)))),
        dx=float(rng.uniform(-0.5, 0.5)), dy=float(rng.uniform(-0.5, 0.5)),
        psf_type=str(rng.choice(sv.psf_types)), psf_fwhm=fwhm, psf_beta=float(rng.uniform(2.5, 4.5)),
        psf_g1=float(rng.normal(0, 0.02)), psf_g2=float(rng.normal(0, 0.02)),
    )
    if smooth:
        n = _qround(float(rng.uniform(2.0, 6.0)))
        q = float(rng.uniform(0.45, 1.0))
        mu_e = float(np.clip(rng.normal(20.4, 0.6), 19.0, 23.5)) + dim  # mean SB within r50
        flux = 2 * math.pi * r50**2 * 10 ** (-0.4 * (mu_e - ZP_AB))
        p.update(total_flux=flux, bulge_frac=1.0, sersic_n=n, bulge_r50=r50, bulge_q=q,
                 disc_scale=float("nan"), disc_hz=float("nan"), inclination=float("nan"),
                 disc_pa=float(rng.uniform(0, 180)))
    else:
        if cls == "edge_on":
            incl = math.degrees(math.acos(rng.uniform(math.cos(math.radians(88)), math.cos(math.radians(75)))))
        else:
            incl = math.degrees(math.acos(rng.uniform(math.cos(math.radians(65)), 1.0)))
        ci = math.cos(math.radians(incl))
        bt = float(rng.choice([rng.uniform(0.0, 0.1), rng.uniform(0.1, 0.5)], p=[0.4, 0.6]))
        n = _qround(float(rng.uniform(1.0, 4.0)))
        mu0 = float(np.clip(rng.normal(21.0, 0.6), 19.5, 23.5)) + dim  # face-on central disc SB
        fdisc = 2 * math.pi * h**2 * 10 ** (-0.4 * (mu0 - ZP_AB))
        q0 = float(rng.uniform(0.6, 0.9))
        p.update(total_flux=fdisc / (1 - bt), bulge_frac=bt, sersic_n=n,
                 bulge_r50=float(rng.uniform(0.1, 0.3) * r50), bulge_q=math.sqrt((q0 * math.sin(math.radians(incl))) ** 2 + ci**2),
                 disc_scale=h, disc_hz=float(rng.uniform(0.08, 0.2) * h), inclination=incl,
                 disc_pa=float(rng.uniform(0, 180)))
        if rng.random() < 0.2:  # lopsided: disc centre offset from the bulge
            off, ang = rng.uniform(0.05, 0.25) * h, rng.uniform(0, 2 * math.pi)
            p.update(lop_dx=off * math.cos(ang), lop_dy=off * math.sin(ang))
        if cls == "barred":
            a = float(rng.uniform(0.5, 2.0) * h)
            bq = float(rng.uniform(0.2, 0.5))
            for _ in range(20):
                phi = float(rng.uniform(0, 180))
                if projected_bar(a, bq, phi, incl, p["disc_pa"])[2] < 0.8:
                    break
            p.update(has_bar=True, bar_a=a, bar_q=bq, bar_phi=phi, bar_frac=float(rng.uniform(0.05, 0.3)))
        if cls != "edge_on" and rng.random() < (0.75 if cls == "barred" else 0.7):
            barred = cls == "barred"
            p.update(has_spiral=True, arm_frac=float(rng.uniform(0.08, 0.3)),
                     n_arms=2 if barred or rng.random() < 0.7 else int(rng.choice([1, 3, 4])),
                     arm_pitch=float(rng.uniform(10, 30) * rng.choice([-1, 1])),
                     arm_r0=p["bar_a"] if barred else float(rng.uniform(0.4, 1.0) * h),
                     arm_phase=p["bar_phi"] if barred else float(rng.uniform(0, 360)),
                     arm_sharp=float(rng.uniform(2, 8)), arm_asym=float(rng.uniform(0, 0.4)))
        if cls != "edge_on":
            ring_in = rng.random() < (0.3 if cls == "barred" else 0.05)
            ring_out = rng.random() < (0.15 if cls == "barred" else 0.05)
            base = p.get("bar_a") if cls == "barred" else float(rng.uniform(0.6, 1.2) * h)
            p.update(ring_q=float(rng.uniform(0.75, 1.0)))
            if ring_in:
                p.update(ring_in_frac=float(rng.uniform(0.03, 0.1)), ring_in_r=float(base * rng.uniform(1.0, 1.15)))
            if ring_out:
                p.update(ring_out_frac=float(rng.uniform(0.03, 0.1)), ring_out_r=float(base * rng.uniform(2.0, 2.5)))
        if cls != "edge_on" and rng.random() < 0.5:
            nc = int(rng.integers(3, 16))
            clumps = []
            for k in range(nc):
                if p.get("has_spiral"):
                    R = p["arm_r0"] * (1 + rng.exponential(1.2))
                    psi = math.radians(p["arm_phase"]) + math.log(R / p["arm_r0"]) / math.tan(math.radians(p["arm_pitch"]))
                    psi += 2 * math.pi * rng.integers(p["n_arms"]) / p["n_arms"] + rng.normal(0, 0.15)
                else:
                    R, psi = rng.gamma(2.0, h), rng.uniform(0, 2 * math.pi)
                clumps.append((R * math.cos(psi), R * math.sin(psi), float(rng.uniform(0.03, 0.1) * h), float(rng.random())))
            p.update(clump_frac=float(rng.uniform(0.02, 0.08)), clumps=tuple(clumps))
        if cls == "edge_on" and rng.random() < 0.6:
            p.update(dust="lane", dust_tau=float(rng.uniform(0.4, 0.95)))
        elif p.get("has_spiral") and rng.random() < 0.35:
            p.update(dust="arms", dust_tau=float(rng.uniform(0.3, 0.8)))

    # stamp
    N = _stamp_for(r50, fwhm, s, stamp_size)
    p.update(stamp_size=N, oversample=2)

    # contaminants (pixel coordinates)
    c = (N - 1) / 2.0
    r50_pix = r50 / s
    if rng.random() < 0.3:
        stars = []
        for _ in range(int(rng.integers(1, 4))):  # field stars, not on top of the galaxy
            ang, d = rng.uniform(0, 2 * math.pi), rng.uniform(min(2 * r50_pix, 0.3 * N), 0.7 * N)
            x, y = np.clip([c + d * math.cos(ang), c + d * math.sin(ang)], 0, N - 1)
            stars.append((float(x), float(y), float(p["total_flux"] * 10 ** (-0.4 * rng.uniform(-1, 5)))))
        p["stars"] = tuple(stars)
    if rng.random() < 0.3:
        nbs = []
        for _ in range(int(rng.integers(1, 3))):
            ang, d = rng.uniform(0, 2 * math.pi), rng.uniform(2.5 * r50_pix, 0.7 * N)
            nbs.append((c + d * math.cos(ang), c + d * math.sin(ang), float(p["total_flux"] * rng.uniform(0.03, 1.0)),
                        float(r50_pix * rng.uniform(0.2, 0.9)), float(rng.uniform(0.7, 4)), float(rng.uniform(0.3, 1)),
                        float(rng.uniform(0, 180))))
        p["neighbours"] = tuple(nbs)
    if rng.random() < 0.05:  # bright saturated star near the edge
        side = rng.integers(4)
        x, y = rng.uniform(0, N - 1, 2)
        x, y = [(x, 0.05 * N), (x, 0.95 * N), (0.05 * N, y), (0.95 * N, y)][side]
        p["bright_star"] = (float(x), float(y), float(p["total_flux"] * rng.uniform(3, 30)), float(rng.uniform(2, 10)))

    # observation: sky, gain (depth scatter), artefacts
    sigma = sv.noise_per_pixel(fwhm) * 10 ** rng.uniform(-0.2, 0.35)  # exposure-depth scatter
    sky = sv.sky_per_pixel()
    p.update(sky=sky, gain=sky / sigma**2, has_mask=bool(rng.random() < 0.1),
             has_cosmic=bool(rng.random() < sv.cosmic_prob), has_gradient=bool(rng.random() < 0.3),
             noise_seed=int(rng.integers(2**62)))
    return GalaxyParams(**p)


# --------------------------------------------------------------------------------------------
# rendering


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


# --------------------------------------------------------------------------------------------
# one galaxy, many galaxies


def _header(params):
    from astropy.io import fits

    N, s = params.stamp_size, params.pixel_scale
    h = fits.Header()
    cards = [
        ("WCSAXES", 2, ""), ("CTYPE1", "RA---TAN", ""), ("CTYPE2", "DEC--TAN", ""),
        ("CRPIX1", (N + 1) / 2.0, "stamp centre"), ("CRPIX2", (N + 1) / 2.0, "stamp centre"),
        ("CRVAL1", params.ra, "[deg]"), ("CRVAL2", params.dec, "[deg]"),
        ("CD1_1", -s / 3600.0, "north up, east left"), ("CD1_2", 0.0, ""),
        ("CD2_1", 0.0, ""), ("CD2_2", s / 3600.0, ""),
        ("CUNIT1", "deg", ""), ("CUNIT2", "deg", ""), ("RADESYS", "ICRS", ""),
        ("BUNIT", "nanomaggy", "AB mag = 22.5 - 2.5 log10(flux)"),
        ("OBJID", params.object_id, ""), ("SURVEY", params.survey, "simulated survey preset"),
        ("BAND", SURVEYS[params.survey].band, ""), ("REDSHIFT", params.redshift, ""),
        ("PIXSCALE", s, "[arcsec/pix]"), ("PSFFWHM", round(params.psf_fwhm, 5), "[arcsec]"),
        ("SIMCLASS", params.cls, "simulated class (truth)"),
        ("ORIGIN", "survey-bars simulate", ""),
    ]
    for k, v, c in cards:
        h[k] = (v, c)
    return h


def _truth_row(params, info, r50):
    blen = bpa = float("nan")
    if params.has_bar:
        blen, bpa, _ = projected_bar(params.bar_a, params.bar_q, params.bar_phi, params.inclination, params.disc_pa)
    nan = float("nan")
    disc = params.cls != "smooth"
    return {
        "object_id": params.object_id, "file": f"{params.object_id}.fits", "survey": params.survey,
        "class": params.cls, "has_bar": bool(params.has_bar), "has_spiral": bool(params.has_spiral),
        "has_ring": bool(params.has_ring),
        "bar_length_arcsec": blen, "bar_pa_deg": bpa,
        "bar_axis_ratio": params.bar_q if params.has_bar else nan,
        "bar_light_frac": params.bar_frac if params.has_bar else 0.0,
        "bar_length_deproj_arcsec": 2 * params.bar_a if params.has_bar else nan,
        "bar_phi_deg": params.bar_phi if params.has_bar else nan,
        "disc_scale_arcsec": params.disc_scale if disc else nan,
        "inclination_deg": params.inclination if disc else nan,
        "disc_pa_deg": params.disc_pa % 180.0,
        "bulge_frac": params.bulge_frac, "sersic_n": params.sersic_n,
        "bulge_r50_arcsec": params.bulge_r50, "r50_arcsec": r50,
        "flux_nmgy": params.total_flux, "mag_ab": ZP_AB - 2.5 * math.log10(params.total_flux),
        "psf_fwhm_arcsec": params.psf_fwhm, "psf_type": params.psf_type,
        "noise_sigma": info["noise_sigma"], "snr": info["snr"],
        "pixel_scale_arcsec": params.pixel_scale, "stamp_size": params.stamp_size,
        "x_offset_pix": params.dx, "y_offset_pix": params.dy,
        "ra": params.ra, "dec": params.dec, "redshift": params.redshift,
        "kpc_per_arcsec": _kpc_per_arcsec(params.redshift),
        "n_arms": params.n_arms if params.has_spiral else 0,
        "arm_pitch_deg": abs(params.arm_pitch) if params.has_spiral else nan,
        "has_clumps": bool(params.clumps), "dust": params.dust,
        "lopsided": bool(params.lop_dx or params.lop_dy),
        "has_star": bool(params.stars), "has_neighbour": bool(params.neighbours),
        "has_bright_star": bool(params.bright_star), "has_bleed": bool(info["has_bleed"]),
        "has_mask": bool(params.has_mask), "has_cosmic": bool(params.has_cosmic),
        "has_gradient": bool(params.has_gradient),
    }


def simulate_one(seed, i, survey="mixed", class_mix=None, stamp_size=None, out_dir=None):
    """Draw, render and (optionally) write galaxy ``i`` of a run.

    Parameters
    ----------
    seed : int
        Run seed; the galaxy's random state is ``default_rng([seed, i])``.
    i : int
        Galaxy index.
    survey : str, optional
        Survey key or ``"mixed"`` (drawn per galaxy).
    class_mix : dict, optional
        Class weights (default :data:`DEFAULT_CLASS_MIX`).
    stamp_size : int, optional
        Fixed stamp side in pixels.
    out_dir : str, optional
        Write ``{object_id}.fits`` here when given.

    Returns
    -------
    row : dict
        The truth-table row.
    image : ndarray
        The float32 image.
    params : GalaxyParams
    """
    rng = np.random.default_rng([seed, i])
    sv = str(rng.choice(sorted(SURVEYS))) if survey == "mixed" else survey
    mix = class_mix or DEFAULT_CLASS_MIX
    names = [c for c in CLASSES if mix.get(c, 0) > 0]
    w = np.array([mix[c] for c in names], dtype=float)
    cls = str(rng.choice(names, p=w / w.sum()))
    params = draw_params(rng, sv, cls, object_id=f"sim{seed}-{i:07d}", stamp_size=stamp_size)
    comps = render_components(params, components=False)
    r50 = _half_light_radius(comps["galaxy_fine"], params)
    params.extra["r50_pix"] = r50 / params.pixel_scale
    image, info = observe(params, comps)
    row = _truth_row(params, info, r50)
    if out_dir is not None:
        from astropy.io import fits

        fits.PrimaryHDU(image, header=_header(params)).writeto(os.path.join(out_dir, row["file"]), overwrite=True)
    return row, image, params


def _chunk(args):
    seed, idx, survey, class_mix, stamp_size, out_dir = args
    return [simulate_one(seed, i, survey, class_mix, stamp_size, out_dir)[0] for i in idx]


_UNITS = {
    "bar_length_arcsec": ("arcsec", "full projected end-to-end bar length on the sky (2 x projected semi-major axis)"),
    "bar_pa_deg": ("deg", "PA of the projected bar, east of north, [0, 180)"),
    "bar_axis_ratio": ("", "intrinsic bar b/a"),
    "bar_light_frac": ("", "fraction of the galaxy light in the bar"),
    "bar_length_deproj_arcsec": ("arcsec", "intrinsic (face-on) full bar length 2a"),
    "bar_phi_deg": ("deg", "bar angle in the disc plane from the line of nodes"),
    "disc_scale_arcsec": ("arcsec", "exponential disc scale length"),
    "inclination_deg": ("deg", "disc inclination (0 face-on)"),
    "disc_pa_deg": ("deg", "PA of the disc (or smooth galaxy) major axis, east of north"),
    "bulge_r50_arcsec": ("arcsec", "bulge half-light radius (circularised)"),
    "r50_arcsec": ("arcsec", "circular half-light radius of the noiseless PSF-free galaxy"),
    "flux_nmgy": ("nanomaggy", "intrinsic total flux before dust"),
    "mag_ab": ("mag", "AB magnitude of flux_nmgy"),
    "psf_fwhm_arcsec": ("arcsec", "PSF FWHM"),
    "noise_sigma": ("nanomaggy", "sky noise per pixel"),
    "snr": ("", "matched-filter S/N of the galaxy, sqrt(sum model^2/variance)"),
    "pixel_scale_arcsec": ("arcsec", "pixel scale"),
    "stamp_size": ("pix", "stamp side"),
    "x_offset_pix": ("pix", "galaxy centre minus stamp centre along x (west)"),
    "y_offset_pix": ("pix", "galaxy centre minus stamp centre along y (north)"),
    "ra": ("deg", "RA of the stamp centre (CRVAL1)"),
    "dec": ("deg", "Dec of the stamp centre (CRVAL2)"),
    "kpc_per_arcsec": ("kpc/arcsec", "angular scale at the redshift (flat LCDM, H0=70, Om=0.3)"),
}


def _write_truth(df, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = []
    for f in table.schema:
        unit, desc = _UNITS.get(f.name, ("", ""))
        fields.append(f.with_metadata({"unit": unit, "description": desc}))
    meta = {b"survey_bars.simulate": b"truth table; images in nanomaggies, north up, east left"}
    table = table.cast(pa.schema(fields, metadata={**(table.schema.metadata or {}), **meta}))
    tmp = path + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _check_args(out_dir, n, survey, seed, workers, class_mix, start_index, stamp_size):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        msg = f"n must be a positive integer (the number of galaxies), got {n!r}."
        raise ValueError(msg)
    if survey != "mixed" and survey not in SURVEYS:
        msg = f"Unknown survey {survey!r}; choose one of {sorted(SURVEYS) + ['mixed']}."
        raise ValueError(msg)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        msg = f"seed must be a non-negative integer, got {seed!r}."
        raise ValueError(msg)
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        msg = f"workers must be an integer >= 1, got {workers!r}."
        raise ValueError(msg)
    if not isinstance(start_index, (int, np.integer)) or start_index < 0:
        msg = f"start_index must be a non-negative integer, got {start_index!r}."
        raise ValueError(msg)
    if stamp_size is not None and not (isinstance(stamp_size, (int, np.integer)) and 16 <= stamp_size <= 1024):
        msg = f"stamp_size must be an integer in [16, 1024] pixels, got {stamp_size!r}."
        raise ValueError(msg)
    if class_mix is not None:
        bad = set(class_mix) - set(CLASSES)
        if bad:
            msg = f"Unknown classes {sorted(bad)} in class_mix; use {list(CLASSES)}."
            raise ValueError(msg)
        vals = [float(v) for v in class_mix.values()]
        if any(not math.isfinite(v) or v < 0 for v in vals) or sum(vals) <= 0:
            msg = f"class_mix weights must be finite, >= 0 and not all zero, got {class_mix!r}."
            raise ValueError(msg)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        msg = f"Cannot create the output directory {out_dir!r}: {exc.strerror}. Choose a writable --out."
        raise ValueError(msg) from None
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK | os.X_OK):
        msg = f"The output directory {out_dir!r} is not writable. Choose a writable --out."
        raise ValueError(msg)


def simulate(out_dir, n, *, survey="mixed", seed=0, workers=1, class_mix=None, start_index=0, stamp_size=None):
    """Write ``n`` simulated cutouts and their truth table.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output directory (created if needed). Receives ``{object_id}.fits`` per galaxy and
        ``truth.parquet``.
    n : int
        Number of galaxies (> 0).
    survey : {"sdss", "decals", "hsc", "euclid", "mixed"}, optional
        Survey preset; ``"mixed"`` draws one per galaxy (equal odds).
    seed : int, optional
        Run seed (>= 0). Galaxy ``i`` depends only on ``(seed, i)``.
    workers : int, optional
        Processes; the output does not depend on it.
    class_mix : dict, optional
        Class -> weight over ``"smooth"``, ``"edge_on"``, ``"disc"``, ``"barred"`` (default
        :data:`DEFAULT_CLASS_MIX`). Missing classes get weight 0.
    start_index : int, optional
        First galaxy index (to extend a run: object ids are ``f"sim{seed}-{i:07d}"``).
    stamp_size : int, optional
        Fixed stamp side in pixels (default: per galaxy, ~8 r50 clipped to [48, 256]).

    Returns
    -------
    pandas.DataFrame
        The truth table (also written to ``out_dir/truth.parquet``), one row per file.

    Raises
    ------
    ValueError
        For bad arguments or an unwritable directory.
    """
    import pandas as pd

    out_dir = os.fspath(out_dir)
    _check_args(out_dir, n, survey, seed, workers, class_mix, start_index, stamp_size)
    idx = list(range(start_index, start_index + n))
    mix = dict(class_mix) if class_mix else None
    chunk = max(1, min(32, n // (4 * workers) or 1))
    jobs = [(seed, idx[k:k + chunk], survey, mix, stamp_size, out_dir) for k in range(0, n, chunk)]
    rows = []
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            rows.extend(_chunk(job))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as ex:
            for part in ex.map(_chunk, jobs):
                rows.extend(part)
    df = pd.DataFrame(rows)
    _write_truth(df, os.path.join(out_dir, "truth.parquet"))
    return df


# --------------------------------------------------------------------------------------------
# display copies: the simulations as cutout services draw them


def display_rgb(data, rng):
    """Draw a simulated cutout as a survey cutout service does: an asinh-stretched 8-bit colour image.

    SkyServer and the Legacy Survey viewer serve colour composites with an asinh stretch
    (Lupton et al. 2004) quantised to 8 bits; real SDSS gri JPEGs have a sky near 3 and a noise
    near 3 (of 255) and galaxy cores at 130-195. The stretch's softening (1.5-5 x the sky noise),
    the level that the core reaches (0.5-0.85 of white), a small sky offset and the channel
    weights are drawn from ``rng``, so that a network trained on them does not learn one
    service's settings.

    Parameters
    ----------
    data : ndarray
        A simulated cutout (FITS orientation: row 0 at the bottom).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray
        ``(ny, nx, 3)`` uint8, top row first (as an image file stores it), north up.
    """
    d = np.nan_to_num(np.asarray(data, dtype=float))
    n = min(d.shape)
    k = max(n // 10, 2)
    border = np.concatenate([d[:k].ravel(), d[-k:].ravel(), d[:, :k].ravel(), d[:, -k:].ravel()])
    bkg = float(np.median(border))
    noise = 1.4826 * float(np.median(np.abs(border - bkg))) or 1e-3
    f = np.arcsinh((d - bkg) / (noise * rng.uniform(1.5, 5.0)))
    cy, cx = d.shape[0] // 2, d.shape[1] // 2
    core = float(np.sort(f[cy - 3 : cy + 4, cx - 3 : cx + 4].ravel())[-3])
    v = rng.uniform(0.0, 0.02) + rng.uniform(0.5, 0.85) * f / max(core, 1e-6)
    w = rng.uniform(0.8, 1.2, 3)
    w /= w.mean()
    rgb = [np.clip(np.round(255 * v * wi + rng.normal(0.0, 0.5, v.shape)), 0, 255) for wi in w]
    return np.dstack(rgb).astype(np.uint8)[::-1]


def _display_one(args):
    from PIL import Image

    from .io import read_cutout

    src, dst, seed, i = args
    rng = np.random.default_rng([seed, i])
    Image.fromarray(display_rgb(read_cutout(src).data, rng)).save(dst, quality=int(rng.integers(75, 96)))


def display_copies(sim_dir, out_dir, *, seed=0, workers=1):
    """Write a JPEG display copy of every simulated cutout, with the same truth.

    Parameters
    ----------
    sim_dir : str
        A directory written by :func:`simulate`.
    out_dir : str
        Receives ``{object_id}.jpg`` per galaxy (see :func:`display_rgb`) and a
        ``truth.parquet`` whose ``file`` column names them (the other columns, the pixel scale
        among them, are the simulation's), so that it trains like any simulation directory.
    seed : int, optional
        Seed of the display settings: galaxy ``i`` uses ``default_rng([seed, i])``.
    workers : int, optional
        Processes.

    Returns
    -------
    pandas.DataFrame
        The truth table of the copies.
    """
    import pandas as pd

    truth = pd.read_parquet(os.path.join(sim_dir, "truth.parquet"))
    os.makedirs(out_dir, exist_ok=True)
    names = [os.path.splitext(f)[0] + ".jpg" for f in truth["file"]]
    jobs = [(os.path.join(sim_dir, f), os.path.join(out_dir, j), seed, i) for i, (f, j) in enumerate(zip(truth["file"], names))]
    if workers == 1:
        for job in jobs:
            _display_one(job)
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as ex:
            list(ex.map(_display_one, jobs, chunksize=64))
    out = truth.copy()
    out["file"] = names
    _write_truth(out, os.path.join(out_dir, "truth.parquet"))
    return out


# --------------------------------------------------------------------------------------------
# gallery


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


# --------------------------------------------------------------------------------------------
# command line


def _parse_mix(text):
    mix = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in part:
            msg = f"--class-mix entries look like smooth=0.2; got {part!r}."
            raise ValueError(msg)
        k, v = part.split("=", 1)
        try:
            mix[k.strip()] = float(v)
        except ValueError:
            msg = f"--class-mix weight for {k.strip()!r} is not a number: {v!r}."
            raise ValueError(msg) from None
    return mix


def configure_parser(parser):
    """Add the ``simulate`` options to an argparse parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (FITS files + truth.parquet)")
    parser.add_argument("-n", type=int, required=True, metavar="N", help="number of galaxies")
    parser.add_argument("--survey", default="mixed", help="sdss, decals, hsc, euclid or mixed (default)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    parser.add_argument("--class-mix", default=None, metavar="MIX",
                        help="class weights, e.g. smooth=0.2,edge_on=0.1,disc=0.3,barred=0.4")
    parser.add_argument("--start-index", type=int, default=0, help="first galaxy index (to extend a run)")
    parser.add_argument("--stamp-size", type=int, default=None, help="fixed stamp side in pixels")
    parser.add_argument("--gallery", default=None, metavar="PNG", help="also write a gallery figure here")
    parser.add_argument("--display-copies", default=None, metavar="DIR",
                        help="also write every cutout as a cutout service draws it (asinh-stretched 8-bit colour JPEG) "
                             "to DIR, with its own truth.parquet")


def run_cli(args):
    """Run ``survey-bars simulate``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options from :func:`configure_parser`.

    Returns
    -------
    int
        0 on success, 2 for bad arguments.
    """
    try:
        mix = _parse_mix(args.class_mix) if args.class_mix else None
        t0 = time.perf_counter()
        df = simulate(args.out, args.n, survey=args.survey, seed=args.seed, workers=args.workers,
                      class_mix=mix, start_index=getattr(args, "start_index", 0),
                      stamp_size=getattr(args, "stamp_size", None))
    except ValueError as exc:
        print(f"survey-bars simulate: error: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"wrote {len(df)} cutouts and truth.parquet to {args.out} in {dt:.1f} s ({len(df) / dt:.1f} galaxies/s)")
    if getattr(args, "display_copies", None):
        display_copies(args.out, args.display_copies, seed=args.seed, workers=args.workers)
        print(f"wrote {len(df)} JPEG display copies and their truth.parquet to {args.display_copies}")
    if getattr(args, "gallery", None):
        make_gallery(args.gallery, seed=args.seed)
        print(f"wrote {args.gallery}")
    return 0


def _main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m survey_bars.simulate", description=__doc__.split("\n")[0])
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--gallery"] and len(argv) >= 2 and "--out" not in argv:
        sp = argparse.ArgumentParser(prog="python -m survey_bars.simulate")
        sp.add_argument("--gallery", required=True)
        sp.add_argument("--seed", type=int, default=2022)
        a = sp.parse_args(argv)
        print(make_gallery(a.gallery, seed=a.seed))
        return 0
    configure_parser(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
