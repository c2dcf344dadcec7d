"""Contrast polarity: MR training items shown as their negative, and the ensemble inference makes of it.

An MR scan's brightness order is the sequence's choice, not the anatomy's: the same liver, spleen and
kidneys are darker than fat in a T1-weighted or Dixon fat image and brighter than it in a Dixon water
or T2-weighted one. A recipe's ``"polarity": {"MR": share}`` shows that share of the modality's
training items (real, phantom and synthesised) as ``1 - x`` after normalisation, so the network learns
each anatomy under both orders; the exported bundle then records ``"polarity_ensemble": ["MR"]`` in its
``inference`` block and the Segmenter averages the class probabilities of the image and of its negative
(:func:`..inference.sliding_window.predict_logits`). This extends SynthSeg's intensity randomisation
(Billot et al., Medical Image Analysis 86, 2023, Sec. 3.1: a network must not depend on what the
generative model draws at random) with a test-time ensemble over the one symmetry every drawn contrast
family shares; the negation and the plain mean of the two probabilities are our choices.

Whether an item is shown negated is drawn from its own seed on a stream of its own
(:data:`POLARITY_STREAM`): no other random draw of the item changes, a resumed run draws the same items,
and a recipe without the key draws exactly what it drew before.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..modalities import ModalityProfile
from .recipe_shares import modality_shares

POLARITY_STREAM = 12  # the random stream of an item's polarity (apart from the item's other draws)


def negated(seed: int | None, share: float) -> bool:
    """Whether item ``seed`` is shown as its negative: for a ``share`` of the items, never for an item
    without a seed (not augmented)."""
    if seed is None or share <= 0.0:
        return False
    return bool(np.random.default_rng([seed, POLARITY_STREAM]).random() < share)


def check_polarity(polarity: dict, modalities: list[str], profiles: dict[str, ModalityProfile]) -> dict[str, float]:
    """A recipe's ``polarity`` block as ``{modality: share}``; one sentence for a malformed one. Only a
    modality of arbitrary units (a ``percentile`` profile) may be negated: CT's Hounsfield scale has one
    order."""
    shares = modality_shares(polarity, "polarity", modalities, profiles, zero=False)
    for modality in shares:
        if profiles[modality].kind != "percentile":
            raise ConfigError(f"\"polarity\" names {modality}, whose {profiles[modality].kind} profile fixes the order of "
                              "its tissues; only modalities of arbitrary units (percentile profiles) can be negated.")
    return shares
