"""Bar-measuring methods and their registry.

A method turns a SmoothGrad saliency map into a bar length. Each lives in a module of its own
here, as a :class:`~survey_bars.measure.base.MeasuringMethod` with a name, a version, the
catalogue columns it fills and its calibration key in the bundle card:

========================  ===========================================================
``head``                  :mod:`.head`: the bundle's learned length head (geometry from moments)
``moments``               :mod:`.moments`: calibrated second moments of the central saliency
``bhambra2022``           :mod:`.bhambra2022`: the paper's published threshold sweep
``profile``               :mod:`.profile`: the half-peak extent of the saliency along the bar
========================  ===========================================================

``"auto"`` (the default of a run) takes the first of :data:`AUTO_ORDER` that the bundle can
run. :mod:`.isophote` is the classic comparator of the QA benchmarks: it fits the galaxy image,
not a saliency map, so it is not a run method.

Adding a method: write its module (a ``MeasuringMethod`` subclass), add it to
:data:`BUILT_IN` below, and give it tests and a line in the README's method table. The CLI's
``--method`` choices, the catalogue schema (its :attr:`~MeasuringMethod.columns`), the
calibration checks and the pipeline all read the registry.
"""

from __future__ import annotations

from .base import BarMeasurement, MapMeasures, MeasuringMethod
from .bhambra2022 import Bhambra2022, measure_bhambra2022
from .calibration import apply_calibration, calibrated_length, length_sigma
from .head import LearnedHead
from .moments import MOMENTS_VERSION, Moments, measure_moments
from .profile import Profile

__all__ = [
    "AUTO_ORDER", "BUILT_IN", "BarMeasurement", "MapMeasures", "MeasuringMethod", "MOMENTS_VERSION",
    "apply_calibration", "calibrated_length", "calibration_for", "catalogue_columns", "get_method",
    "length_sigma", "map_methods", "measure_bar", "measure_bhambra2022", "measure_moments", "method_names", "register",
    "resolve_method", "run_methods",
]

#: The built-in methods, in registry order (the order of their catalogue columns).
BUILT_IN = (LearnedHead, Moments, Bhambra2022, Profile)
#: ``"auto"`` resolves to the first of these that a bundle can run.
AUTO_ORDER = ("head", "moments")

_REGISTRY: dict[str, MeasuringMethod] = {}


def register(method):
    """Add a measuring method to the registry.

    Parameters
    ----------
    method : MeasuringMethod
        An instance; its ``name`` must be new, and not ``"auto"``.

    Returns
    -------
    MeasuringMethod
        ``method``.
    """
    if not method.name or method.name == "auto" or method.name in _REGISTRY:
        msg = f"Cannot register a measuring method named {method.name!r}: the name is empty, reserved or taken."
        raise ValueError(msg)
    _REGISTRY[method.name] = method
    return method


for _cls in BUILT_IN:
    register(_cls())


def method_names():
    """Names of the registered methods, in registry order.

    Returns
    -------
    tuple of str
    """
    return tuple(_REGISTRY)


def map_methods():
    """Names of the registered methods that read one saliency map alone (calibrated on simulations).

    Returns
    -------
    tuple of str
    """
    return tuple(n for n, m in _REGISTRY.items() if m.reads_maps)


def run_methods():
    """What a run's ``method`` may be: ``"auto"`` and every registered name.

    Returns
    -------
    tuple of str
    """
    return ("auto", *_REGISTRY)


def get_method(name):
    """The registered method called ``name``.

    Parameters
    ----------
    name : str

    Returns
    -------
    MeasuringMethod

    Raises
    ------
    ValueError
        For a name that is not registered (the message lists the choices).
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        msg = f"Unknown bar measuring method {name!r}; choose one of {', '.join(run_methods())}."
        raise ValueError(msg) from None


def resolve_method(card, method):
    """Return the measuring method a run with ``method`` uses on a bundle.

    Parameters
    ----------
    card : dict
        The bundle card.
    method : str
        One of :func:`run_methods`. ``"auto"`` becomes the first of :data:`AUTO_ORDER` that
        the bundle can run (``"head"`` when it has a learned length head, else
        ``"moments"``); the others are returned as they are.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For a method that is not registered.
    """
    if method == "auto":
        return next(n for n in AUTO_ORDER if get_method(n).unavailable(card) is None)
    return get_method(method).name


def calibration_for(card, method):
    """Return a bundle's length calibration for a measuring method, checking its version.

    Parameters
    ----------
    card : dict
        The bundle card.
    method : str
        A registered method or ``"auto"`` (resolved first with :func:`resolve_method`).

    Returns
    -------
    dict
        ``{"slope": ..., "intercept": ..., "scatter_frac": ...}``, or ``{}`` when the bundle has
        none for this method (lengths are then raw).

    Raises
    ------
    ValueError
        When the bundle cannot run the method, or its calibration was fitted for another
        version of the measurement.
    """
    m = get_method(resolve_method(card, method))
    reason = m.unavailable(card)
    if reason is not None:
        raise ValueError(reason)
    calib = dict((card.get("calibration") or {}).get(m.name) or {})
    if calib and int(calib.get("measurement_version", 1)) != m.version:
        msg = (
            f"The bundle's '{m.name}' length calibration was fitted for measurement version "
            f"{calib.get('measurement_version', 1)}, but this survey-bars measures with version "
            f"{m.version}. Recalibrate the bundle with `survey-bars calibrate --model DIR`, "
            "or use a bundle made for this version."
        )
        raise ValueError(msg)
    return calib


def catalogue_columns():
    """The catalogue columns that the registered methods fill, in registry order.

    Returns
    -------
    dict
        ``name -> (arrow type, unit, description)``.
    """
    out = {}
    for m in _REGISTRY.values():
        out.update(m.columns)
    return out


def measure_bar(saliency, method="moments"):
    """Measure the bar on one saliency map with the named method.

    Parameters
    ----------
    saliency : ndarray
        2-D square saliency map.
    method : str
        A registered method that reads single maps (``"moments"``, ``"bhambra2022"``).

    Returns
    -------
    BarMeasurement
    """
    return get_method(method).measure(saliency)
