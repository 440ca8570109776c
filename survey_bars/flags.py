"""Quality-flag bits of the catalogue's ``quality_flags`` column.

Each flag is one bit of an unsigned 32-bit integer. A row with ``quality_flags == 0`` had no
known trouble. The meanings are also written into the Parquet file metadata, so a catalogue
explains itself without this package.

Examples
--------
>>> from survey_bars.flags import Flag, describe
>>> value = Flag.LOW_SNR | Flag.BAR_AT_FRAME_LIMIT
>>> describe(int(value))
['LOW_SNR', 'BAR_AT_FRAME_LIMIT']
"""

from __future__ import annotations

import enum

__all__ = ["Flag", "FLAG_DESCRIPTIONS", "describe", "flag_table"]


class Flag(enum.IntFlag):
    """Quality-flag bits. Combine with ``|``; test with ``(value & Flag.X) != 0``."""

    NO_WCS = 1 << 0
    ASSUMED_PIXEL_SCALE = 1 << 1
    NAN_NEAR_CENTRE = 1 << 2
    LOW_SNR = 1 << 3
    OFF_CENTRE = 1 << 4
    TRUNCATED = 1 << 5
    DIFFUSE_SALIENCY = 1 << 6
    BAR_NOT_ELONGATED = 1 << 7
    BAR_AT_FRAME_LIMIT = 1 << 8
    P_BAR_AMBIGUOUS = 1 << 9
    LARGE_RESAMPLING = 1 << 10
    FIRST_PLANE_OF_CUBE = 1 << 11
    DUPLICATE_OBJECT_ID = 1 << 12
    NON_CELESTIAL_WCS = 1 << 13
    SIZE_FROM_FALLBACK = 1 << 14
    BAR_NOT_MEASURED = 1 << 15
    DISPLAY_IMAGE = 1 << 16
    NO_PIXEL_SCALE = 1 << 17


FLAG_DESCRIPTIONS: dict[str, str] = {
    "NO_WCS": "The file has no usable celestial WCS; ra/dec are null unless an input catalogue gave them.",
    "ASSUMED_PIXEL_SCALE": "The pixel scale came from --pixel-scale or the input catalogue, not from a WCS.",
    "NAN_NEAR_CENTRE": "More than 5 % of the pixels within the half-light radius were NaN, inf or masked.",
    "LOW_SNR": "The galaxy's integrated signal-to-noise ratio is below 20.",
    "OFF_CENTRE": "The galaxy centre lies more than 10 % of the stamp size from the stamp centre.",
    "TRUNCATED": "More than 5 % of the model frame falls outside the stamp: the galaxy is cut by its edge.",
    "DIFFUSE_SALIENCY": "The saliency map has no concentrated central structure; the bar length is unreliable.",
    "BAR_NOT_ELONGATED": "The central saliency structure is nearly round (axis ratio > 0.9); no bar-like shape was found, and lengths of such bars are the least accurate.",
    "BAR_AT_FRAME_LIMIT": "The measured bar reaches the edge of the region searched; the length may be a lower limit.",
    "P_BAR_AMBIGUOUS": "p_bar lies between 0.35 and 0.65, near the decision boundary.",
    "LARGE_RESAMPLING": "The cutout was resampled by more than a factor 4 (up or down) to fill the model frame.",
    "FIRST_PLANE_OF_CUBE": "The input held several planes (a data cube, or one image extension per band) and neither --band nor a survey default named one; only the first was used.",
    "DUPLICATE_OBJECT_ID": "Another input file carries the same object_id.",
    "NON_CELESTIAL_WCS": "The WCS is not celestial (e.g. a spectral or pixel-only WCS); it was ignored.",
    "SIZE_FROM_FALLBACK": "The galaxy size could not be measured from the image, or came out implausibly large (over a quarter of the stamp, e.g. merged with residual background) and was clamped; the frame scale, and so every length, is uncertain.",
    "BAR_NOT_MEASURED": "No bar length was measured (p_bar too low, or the measurement failed).",
    "DISPLAY_IMAGE": "The input is a display image (JPEG or PNG): its pixel values are stretched and quantised, not fluxes, so snr is null and LOW_SNR is not assessed.",
    "NO_PIXEL_SCALE": "The pixel scale is unknown (an image without a pixel_scale in the input catalogue or --pixel-scale): morphology is given, lengths in arcsec and kpc are null.",
}


def describe(value: int) -> list[str]:
    """Return the names of the flags set in ``value``.

    Parameters
    ----------
    value : int
        A ``quality_flags`` value.

    Returns
    -------
    list of str
        Flag names in bit order.
    """
    value = int(value)
    return [f.name for f in Flag if value & int(f)]


def flag_table() -> list[dict]:
    """Return every flag as ``{"bit", "value", "name", "description"}``, in bit order.

    Returns
    -------
    list of dict
        One entry per flag, suitable for JSON metadata.
    """
    return [
        {
            "bit": int(f).bit_length() - 1,
            "value": int(f),
            "name": f.name,
            "description": FLAG_DESCRIPTIONS[f.name],
        }
        for f in Flag
    ]
