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

The package, in the order a galaxy is made:

================  =============================================================
:mod:`.params`    survey presets, classes, :func:`draw_params`, :func:`projected_bar`
:mod:`.render`    :func:`render_components`: the light, PSF-convolved and binned
:mod:`.observe`   :func:`observe`: sky, noise, neighbours, stars, artefacts
:mod:`.write`     :func:`simulate_one`, :func:`simulate`: cutouts and ``truth.parquet``
:mod:`.display`   :func:`display_copies`: JPEG copies as cutout services draw them
:mod:`.stamps`    :func:`small_stamp_copies`: copies cut to the services' small stamps
:mod:`.gallery`   :func:`make_gallery`
:mod:`.cli`       ``survey-bars simulate``
================  =============================================================
"""

from .display import display_copies, display_rgb
from .gallery import make_gallery
from .observe import observe
from .params import (
    CLASSES,
    DEFAULT_CLASS_MIX,
    SURVEYS,
    GalaxyParams,
    SurveyPreset,
    draw_params,
    projected_bar,
)
from .render import render_components
from .stamps import small_stamp_copies
from .write import finished_copies, simulate, simulate_one

__all__ = [
    "SurveyPreset",
    "display_copies",
    "display_rgb",
    "finished_copies",
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
    "small_stamp_copies",
]
