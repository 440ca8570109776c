"""Models: torch networks, training and ONNX export (``survey-bars[train]``), and the bundle format.

Only :mod:`survey_bars.models.bundle` is needed at inference time, and it never imports torch;
:mod:`~survey_bars.models.nets`, :mod:`~survey_bars.models.train` and
:mod:`~survey_bars.models.export` need torch and are imported explicitly.
"""

from .bundle import DEFAULT_BUNDLE, Bundle, BundleError, list_bundles, load_bundle, write_card

__all__ = ["DEFAULT_BUNDLE", "Bundle", "BundleError", "list_bundles", "load_bundle", "write_card"]
