"""The package's own exceptions and warning categories.

Errors of one input file are :class:`survey_bars.io.cutout.CutoutError` (they become error
rows, never stop a job); a problem with the whole job is a :class:`JobError`. Warnings have
categories of their own, so that a caller filters ours without touching anyone else's::

    warnings.filterwarnings("ignore", category=survey_bars.errors.SurveyBarsWarning)

The package never changes the process-wide warning filters or log levels: where a library
(astropy, Pillow) warns about a damaged file that we report in the catalogue anyway, the
reader silences that library's warnings inside a ``warnings.catch_warnings()`` block.
"""

from __future__ import annotations

__all__ = ["JobError", "SurveyBarsWarning", "InputWarning", "ModelWarning"]


class JobError(RuntimeError):
    """A fatal problem with a catalogue job (no inputs, bad model, unreachable scheduler...)."""


class SurveyBarsWarning(UserWarning):
    """Base class of the warnings that survey-bars issues."""


class InputWarning(SurveyBarsWarning):
    """Something about the inputs that a person may want to fix (the job goes on)."""


class ModelWarning(SurveyBarsWarning):
    """Something about a model bundle that a person may want to know (the job goes on)."""
