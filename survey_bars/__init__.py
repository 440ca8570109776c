"""survey-bars: galaxy morphology and saliency-derived bar lengths for survey cutouts.

The method follows Bhambra, Joachimi & Lahav (2022, MNRAS 511, 5032): a CNN trained on
morphology labels, SmoothGrad saliency maps of its bar output, and a measuring step that
turns the saliency map into a bar length.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
