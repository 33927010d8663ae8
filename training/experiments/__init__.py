"""Experiments beyond training a classifier (issue 5): image alignment by gradient descent through a sampler.

Modules import torch lazily where they can; see :mod:`training.experiments.alignment`.
"""
