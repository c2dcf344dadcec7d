"""Inference: the :class:`Segmenter` and sliding-window prediction.

Importing it imports no training code (methods, losses, engine) and no MONAI: a model's network is
built by :mod:`..networks.exported` when the model loads, MONAI's sliding window when a volume runs.
"""

from .segmenter import QUALITIES, Quality, Segmentation, Segmenter, keep_largest_component
from .sliding_window import predict_logits

__all__ = ["QUALITIES", "Quality", "Segmentation", "Segmenter", "keep_largest_component", "predict_logits"]
