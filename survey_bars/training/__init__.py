"""Training: the torch networks, their training, ONNX export, calibration and evaluation.

Everything here is build-time (``survey-bars[train]``); the worker path never imports it.
:mod:`.nets`, :mod:`.train`, :mod:`.head` and :mod:`.export` need torch and are imported
explicitly; :mod:`.calibrate` and :mod:`.evaluate` run the ONNX bundle through the same
pipeline as ``process``. The bundle format itself is :mod:`survey_bars.inference.bundle`.
"""
