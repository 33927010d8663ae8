"""Offline training package: samplers, GTSRB data, spatial-transformer models, training, evaluation, export.

Kept thin on purpose: importing ``training`` does not import torch.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
