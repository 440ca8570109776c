"""onnxruntime sessions for a model bundle: the forward pass, the input gradient and, when the
bundle has one, the learned length head.

Workers need only numpy and onnxruntime here (no torch). :func:`get_runtime` caches one
:class:`ModelRuntime` per process and bundle, so a Dask worker loads the model once however
many partitions it runs.
"""

from __future__ import annotations

import threading

import numpy as np

from .bundle import load_bundle

__all__ = ["ModelRuntime", "get_runtime", "clear_cache"]

_CACHE: dict = {}
_LOCK = threading.Lock()


def _session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class ModelRuntime:
    """Forward and saliency sessions of one bundle.

    Parameters
    ----------
    bundle : survey_bars.inference.bundle.Bundle
        A loaded (verified) bundle.
    threads : int, optional
        onnxruntime intra-op threads per session. One thread per Dask worker thread is the
        efficient setting for batch jobs.
    """

    def __init__(self, bundle, threads=1):
        self.bundle = bundle
        self.card = bundle.card
        self.threads = int(threads)
        self._fwd = _session(bundle.forward_path, threads)
        self._sal = _session(bundle.saliency_path, threads)
        head_path = getattr(bundle, "head_path", None)
        self._head = _session(head_path, threads) if head_path is not None else None
        self.class_names = list(bundle.class_names)
        self.size = int(bundle.preprocessing.size)
        self._fwd_outputs = [o.name for o in self._fwd.get_outputs()]
        missing = {"probs", "bar_logit", "bar_length_direct"} - set(self._fwd_outputs)
        if missing:
            msg = (
                f"The forward graph of {bundle.path} lacks outputs {sorted(missing)}; the bundle "
                "is incompatible with this survey-bars. Re-export it with `survey-bars export`."
            )
            raise ValueError(msg)

    def _check(self, images):
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != (1, self.size, self.size):
            msg = f"Model input must have shape (B, 1, {self.size}, {self.size}); got {x.shape}."
            raise ValueError(msg)
        return x

    #: Frames per forward-graph call. The graph averages four flips, so one call holds four
    #: copies of every frame; with bundle 3.0's 32 x 32 skip features a call of 64 frames
    #: took ~590 MB of onnxruntime memory against ~140 MB for 16, at the same speed
    #: (``benchmarks/RESULTS.md``, perf_memory).
    forward_max_batch = 16

    def forward(self, images):
        """Run the forward graph, in calls of at most :attr:`forward_max_batch` frames.

        Parameters
        ----------
        images : ndarray
            Normalised frames, shape ``(B, S, S)`` or ``(B, 1, S, S)``.

        Returns
        -------
        dict
            ``probs`` (B, K) with columns named by ``class_names``, ``bar_logit`` (B,) and
            ``bar_length_direct`` (B,) in model-frame pixels.
        """
        x = self._check(images)
        step = max(1, int(self.forward_max_batch))
        parts = [self._fwd.run(["probs", "bar_logit", "bar_length_direct"], {"image": x[i : i + step]})
                 for i in range(0, max(len(x), 1), step)]
        return {
            "probs": np.concatenate([p[0] for p in parts]),
            "bar_logit": np.concatenate([p[1].reshape(-1) for p in parts]),
            "bar_length_direct": np.concatenate([p[2].reshape(-1) for p in parts]),
        }

    def gradient(self, images):
        """Gradient of the bar logit with respect to each input frame.

        Parameters
        ----------
        images : ndarray
            Frames, shape ``(B, S, S)`` or ``(B, 1, S, S)``.

        Returns
        -------
        ndarray
            float32 gradients of shape ``(B, S, S)``.
        """
        x = self._check(images)
        (g,) = self._sal.run(["grad"], {"image": x})
        return g.reshape(x.shape[0], self.size, self.size)

    #: Maps per length-head call (each orientation of a map counts); bounds onnxruntime's
    #: activation memory (64 maps: about 17 MB in the first stage).
    head_max_batch = 64

    @property
    def has_length_head(self):
        """Whether the bundle has a learned length head (``length_head.onnx``)."""
        return self._head is not None

    def length_head(self, maps, orientations=8):
        """Bar lengths read off SmoothGrad maps by the bundle's learned length head.

        Parameters
        ----------
        maps : ndarray
            Saliency maps, shape ``(B, S, S)``, any positive scale.
        orientations : {1, 4, 8}, optional
            Average the head's log length over this many rotations/flips of each map (the
            length does not depend on orientation; 8 is the most accurate, 1 the fastest).

        Returns
        -------
        ndarray
            Full bar lengths in model-frame pixels, shape ``(B,)``.

        Raises
        ------
        ValueError
            When the bundle has no length head, or the maps have the wrong shape.
        """
        if self._head is None:
            msg = (f"The bundle {self.bundle.path} has no learned length head (length_head.onnx), so the 'head' "
                   "measuring method cannot run. Use --method moments, or add a head with "
                   "`survey-bars calibrate --model DIR --method head`.")
            raise ValueError(msg)
        m = np.asarray(maps, dtype=np.float32)
        if m.ndim != 3 or m.shape[1:] != (self.size, self.size):
            msg = f"Saliency maps must have shape (B, {self.size}, {self.size}); got {m.shape}."
            raise ValueError(msg)
        if orientations not in (1, 4, 8):
            msg = f"orientations must be 1, 4 or 8, not {orientations!r}."
            raise ValueError(msg)
        if len(m) == 0:
            return np.zeros(0)
        views = [np.rot90(m, k, axes=(1, 2)) for k in range(4 if orientations > 1 else 1)]
        if orientations == 8:
            views += [v[:, :, ::-1] for v in views]
        x = np.ascontiguousarray(np.concatenate(views)[:, None])
        step = max(1, int(self.head_max_batch))
        length = np.concatenate([self._head.run(["length"], {"saliency": x[i : i + step]})[0].reshape(-1)
                                 for i in range(0, len(x), step)])
        return np.exp(np.log(np.maximum(length.reshape(len(views), len(m)), 1e-12)).mean(axis=0))


def get_runtime(bundle_path=None, threads=1):
    """Return the process-wide :class:`ModelRuntime` for a bundle, loading it once.

    Parameters
    ----------
    bundle_path : str or Path, optional
        Bundle directory (default: the shipped bundle).
    threads : int, optional
        onnxruntime threads per session.

    Returns
    -------
    ModelRuntime
    """

    key = (str(bundle_path), int(threads))
    with _LOCK:
        rt = _CACHE.get(key)
        if rt is None:
            rt = ModelRuntime(load_bundle(bundle_path), threads=threads)
            _CACHE[key] = rt
    return rt


def clear_cache():
    """Drop the cached runtimes (e.g. after a bundle's card changed)."""
    with _LOCK:
        _CACHE.clear()
