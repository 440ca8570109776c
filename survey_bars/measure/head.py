"""The learned length head: a small network of the bundle reads the length off the map.

The head (``length_head.onnx``, trained on the maps of simulated bars by
:mod:`survey_bars.training.head`) sees the SmoothGrad map of every bar candidate and its
subset maps, in two batched calls per chunk. It gives only the length: the position angle,
axis ratio and map flags come from the ``moments`` measurement of the same map.
"""

from __future__ import annotations

import numpy as np

from .base import MeasuringMethod

__all__ = ["LearnedHead"]


class LearnedHead(MeasuringMethod):
    """The bundle's learned length head (``length_head.onnx``)."""

    name = "head"
    version = 1
    summary = "the learned head reads the length off the saliency map."
    geometry = "moments"
    reads_maps = False

    def unavailable(self, card):
        if "length_head.onnx" in (card.get("files") or {}):
            return None
        return ("The 'head' measuring method needs a bundle with a learned length head (length_head.onnx), and this "
                "bundle has none. Use --method moments, or train one with `survey-bars calibrate --model DIR --method head`.")

    def raw_lengths(self, runtime, maps, n_subsets, measures):
        keys = sorted(maps)
        if not keys:
            return {}
        main = runtime.length_head(np.stack([maps[k].map for k in keys]), orientations=8)
        subs = {k: [] for k in keys}
        if n_subsets > 1:
            stack = [(k, m) for k in keys for m in maps[k].subsets]
            lengths = runtime.length_head(np.stack([m for _, m in stack]), orientations=1)
            for (k, _), v in zip(stack, lengths):
                subs[k].append(float(v))
        return {k: (float(v), subs[k]) for k, v in zip(keys, main)}
