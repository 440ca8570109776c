"""The package's own exceptions and warning categories.

Errors of one input file are :class:`survey_bars.io.cutout.CutoutError` (they become error
rows, never stop a job); a problem with the whole job is a :class:`JobError`. Warnings have
categories of their own, so that a caller filters ours without touching anyone else's::

    warnings.filterwarnings("ignore", category=survey_bars.errors.SurveyBarsWarning)

Library code never changes the warning filters or log levels: ``warnings.catch_warnings()``
swaps the process-wide filter list, and on a multi-threaded Dask worker two readers doing so
at once can leave every warning silenced for good. Astropy and Pillow warn about the damaged
or unusual files that the readers already report as error rows or flags; the callers that own
their process decide whether to hear that: the ``survey-bars`` command and the workers of a
job's own LocalCluster call :func:`filter_input_warnings` once, at start. With your own
``distributed.Client`` the workers are yours: call it there (``client.run(filter_input_warnings)``)
if you want them quiet too.
"""

from __future__ import annotations

import warnings

__all__ = ["JobError", "OptionError", "SurveyBarsWarning", "InputWarning", "ModelWarning", "filter_input_warnings"]


class JobError(RuntimeError):
    """A fatal problem with a catalogue job (no inputs, bad model, unreachable scheduler...)."""


class OptionError(ValueError):
    """An option out of range; ``option`` names it (the field of the options dataclass).

    Parameters
    ----------
    option : str
        The option's field name, e.g. ``"p_bar_min"``.
    message : str
        What it must be, and what it was.
    """

    def __init__(self, option, message):
        super().__init__(message)
        self.option = option


class SurveyBarsWarning(UserWarning):
    """Base class of the warnings that survey-bars issues."""


class InputWarning(SurveyBarsWarning):
    """Something about the inputs that a person may want to fix (the job goes on)."""


class ModelWarning(SurveyBarsWarning):
    """Something about a model bundle that a person may want to know (the job goes on)."""


def filter_input_warnings():
    """Silence, for this process, what astropy and Pillow say about damaged or unusual input files.

    Ignores :class:`astropy.utils.exceptions.AstropyWarning` (FITS verification, WCS fixes)
    and Pillow's ``DecompressionBombWarning`` (survey-bars checks the pixel count itself), and
    lowers astropy's logger to WARNING (its INFO line per file with SIP distortion). What these
    say about a file is in its catalogue row already (the error, or the flags).

    Call it only where you own the process (a script, a worker you started); the
    ``survey-bars`` command and a job's own LocalCluster workers do. Calling it again does
    nothing more.
    """
    from astropy import log as astropy_log
    from astropy.utils.exceptions import AstropyWarning
    from PIL import Image

    for category in (AstropyWarning, Image.DecompressionBombWarning):
        warnings.filterwarnings("ignore", category=category)  # filterwarnings drops a duplicate first
    if astropy_log.level < 30:  # logging.WARNING
        astropy_log.setLevel("WARNING")
