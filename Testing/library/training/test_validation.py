"""In-run validation predicts each modality as the bundle will (the polarity ensemble) and scores it plain and as the bundle keeps it (largest piece)."""

import numpy as np
import pytest
import torch

from MultiModalSegLib.data.loading import PreparedCase
from MultiModalSegLib.labels import LabelInfo
from MultiModalSegLib.training.validation import dice_summary, predict_cases, validate


class DarkIsOrgan(torch.nn.Module):
    """Organ where the image is dark: right in one pass, wrong on the negative."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, modality=None):
        return torch.cat([8 * (x - 0.5), 8 * (0.5 - x)], 1)


def test_validation_averages_both_polarities_only_for_the_modalities_named():
    image = np.full((16, 16, 16), 0.9, np.float32)
    image[4:12, 4:12, 4:12] = 0.3  # a dark organ
    label = (image < 0.5).astype(np.uint8)
    cases = [PreparedCase("mr", "MR", image, label, 1.0), PreparedCase("ct", "CT", image, label, 1.0)]
    labels = [LabelInfo(1, "organ", (1.0, 0.0, 0.0))]
    single = validate(DarkIsOrgan(), cases, labels, (16, 16, 16), torch.device("cpu"), amp=False)
    both = validate(DarkIsOrgan(), cases, labels, (16, 16, 16), torch.device("cpu"), amp=False, polarity_ensemble=["MR"])
    assert single["MR"]["organ"] == single["CT"]["organ"] == 1.0
    assert both["CT"]["organ"] == 1.0  # CT keeps one pass
    assert both["MR"]["organ"] < 0.5  # the mean of an image and its negative puts this organ at even odds


def test_largest_piece_scores_what_the_bundle_keeps():
    """A stray piece of organ away from the organ lowers the plain Dice and not the largest-piece one."""
    image = np.full((16, 16, 16), 0.9, np.float32)
    image[2:10, 2:10, 2:10] = 0.3  # the organ
    label = (image < 0.5).astype(np.uint8)
    image[13:16, 13:16, 13:16] = 0.3  # a dark spot the model calls organ too, apart from it
    cases = [PreparedCase("ct", "CT", image, label, 1.0)]
    labels = [LabelInfo(1, "organ", (1.0, 0.0, 0.0))]
    preds = predict_cases(DarkIsOrgan(), cases, (16, 16, 16), torch.device("cpu"), amp=False)
    plain = dice_summary(preds, cases, labels)["CT"]["organ"]
    kept = dice_summary(preds, cases, labels, largest_piece=True)["CT"]["organ"]
    assert plain == pytest.approx(2 * 512 / (512 + 512 + 27)) and kept == 1.0
    assert validate(DarkIsOrgan(), cases, labels, (16, 16, 16), torch.device("cpu"), amp=False, largest_piece=True)["CT"]["organ"] == kept
