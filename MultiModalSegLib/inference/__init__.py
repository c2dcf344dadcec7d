"""Inference: the :class:`Segmenter` and sliding-window prediction."""

from .segmenter import QUALITIES, Quality, Segmentation, Segmenter, keep_largest_component
from .sliding_window import predict_logits

__all__ = ["QUALITIES", "Quality", "Segmentation", "Segmenter", "keep_largest_component", "predict_logits"]
