"""What a simulated galaxy is: the survey presets, the classes, and drawing each galaxy's parameters.

:func:`draw_params` draws one galaxy's :class:`GalaxyParams` from its own random state; the
truth bar length is the full projected end-to-end length on the sky (:func:`projected_bar`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

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
    z, r50, h = _draw_size(rng, sv, fwhm, cls, stamp_size)
    dim = 10 * math.log10(1 + z)  # cosmological surface-brightness dimming

    p = dict(
        object_id=object_id, survey=survey, cls=cls, pixel_scale=s, redshift=z,
        ra=float(rng.uniform(0, 360)), dec=float(math.degrees(math.asin(rng.uniform(-0.5, 0.9)))),
        dx=float(rng.uniform(-0.5, 0.5)), dy=float(rng.uniform(-0.5, 0.5)),
        psf_type=str(rng.choice(sv.psf_types)), psf_fwhm=fwhm, psf_beta=float(rng.uniform(2.5, 4.5)),
        psf_g1=float(rng.normal(0, 0.02)), psf_g2=float(rng.normal(0, 0.02)),
    )
    if cls == "smooth":
        _draw_smooth(rng, p, r50, dim)
    else:
        _draw_disc(rng, p, cls, h, r50, dim)

    # stamp
    N = _stamp_for(r50, fwhm, s, stamp_size)
    p.update(stamp_size=N, oversample=2)

    _draw_contaminants(rng, p, r50 / s, N)
    _draw_observation(rng, p, sv, fwhm)
    return GalaxyParams(**p)


def _draw_size(rng, sv, fwhm, cls, stamp_size):
    """Redshift and size, re-drawn until the galaxy fits the largest stamp: ``(z, r50 arcsec, disc scale h)``."""
    s = sv.pixel_scale
    smooth = cls == "smooth"
    max_stamp = stamp_size or STAMP_LIMITS[1]
    r50_max = max_stamp * s / 8.0
    r50_min = 0.2 * fwhm
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
    return z, r50, h


def _draw_smooth(rng, p, r50, dim):
    """The light of an elliptical: one Sersic profile."""
    n = _qround(float(rng.uniform(2.0, 6.0)))
    q = float(rng.uniform(0.45, 1.0))
    mu_e = float(np.clip(rng.normal(20.4, 0.6), 19.0, 23.5)) + dim  # mean SB within r50
    flux = 2 * math.pi * r50**2 * 10 ** (-0.4 * (mu_e - ZP_AB))
    p.update(total_flux=flux, bulge_frac=1.0, sersic_n=n, bulge_r50=r50, bulge_q=q,
             disc_scale=float("nan"), disc_hz=float("nan"), inclination=float("nan"),
             disc_pa=float(rng.uniform(0, 180)))


def _draw_disc(rng, p, cls, h, r50, dim):
    """A disc galaxy: disc and bulge, lopsidedness, and its bar, arms, rings, clumps and dust."""
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


def _draw_contaminants(rng, p, r50_pix, N):
    """Field stars, neighbour galaxies and a bright saturated star, in pixel coordinates."""
    c = (N - 1) / 2.0
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


def _draw_observation(rng, p, sv, fwhm):
    """Sky, gain (depth scatter) and artefacts."""
    sigma = sv.noise_per_pixel(fwhm) * 10 ** rng.uniform(-0.2, 0.35)  # exposure-depth scatter
    sky = sv.sky_per_pixel()
    p.update(sky=sky, gain=sky / sigma**2, has_mask=bool(rng.random() < 0.1),
             has_cosmic=bool(rng.random() < sv.cosmic_prob), has_gradient=bool(rng.random() < 0.3),
             noise_seed=int(rng.integers(2**62)))
