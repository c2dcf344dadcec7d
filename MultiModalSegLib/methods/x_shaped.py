"""Baseline "X"-shaped: modality-specific encoder and decoder layers, shared middle (UMMKD paper,
Fig. 1 b, Table I-II; Valindria et al., WACV 2018)."""

from __future__ import annotations

from .registry import register_method
from .y_shaped import YShaped


@register_method
class XShaped(YShaped):
    """Each modality has its own encoder, its own decoder and output head; only the middle is
    shared: the second convolution (with its normalisation) of the deepest level, between the last
    down-sampling and the first up-sampling (``specific=("encoder", "down", "decoder", "head")``
    in :mod:`..networks.partly_shared`; the strided convolution into the deepest level is still the
    modality's own, as the end of its encoder).

    The paper's blue lines are in a figure only; it reports that the X shape "almost doubles" the
    Joint model (3389K against 1916K, 1.77x, for its 3D U-Net). Sharing one convolution at the
    bottom of the U is the choice here: about 1.7x Joint for a four-level U-Net (the generated
    methods table gives the ratio for its reference network), whereas sharing the whole deepest
    level would give about 1.5x. The shared layer keeps one BatchNorm for both modalities; the
    loss is the sum of the modalities' Dice + CE. Batches are mixed as for ``y_shaped``.
    """

    name = "x_shaped"
    paper = "Dou et al., TMI 2020 (UMMKD), baseline X-shaped (after Valindria et al., WACV 2018)"
    inference_summary = "the input modality's encoder, one shared convolution at the bottom, the modality's decoder and head"
