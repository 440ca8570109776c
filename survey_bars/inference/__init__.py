"""Inference without torch: the model bundle, its onnxruntime sessions, and SmoothGrad.

:mod:`.bundle` reads and checks a bundle (the shipped default is in ``default/``),
:mod:`.runtime` holds one onnxruntime session per graph and worker process, and
:mod:`.saliency` computes the SmoothGrad maps from the bundle's gradient graph.
"""
