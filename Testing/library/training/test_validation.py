"""In-run validation predicts each modality as the bundle will (the polarity and normalisation ensembles) and scores it plain and as the bundle keeps it (largest piece)."""

import numpy as np
import pytest
import torch

from MultiModalSegLib.data.loading import PreparedCase
from MultiModalSegLib.labels import LabelInfo
from MultiModalSegLib.training.validation import dice_both_ways, dice_summary, predict_cases, validate


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


def test_a_case_with_the_passes_of_a_normalisation_ensemble_is_predicted_from_their_mean_probabilities():
    """One pass calls the organ barely (0.69), two call it background firmly (0.002 each): the mean says background;
    without the passes the same image gives the organ."""
    image = np.full((16, 16, 16), 0.9, np.float32)
    image[4:12, 4:12, 4:12] = 0.45  # barely darker than the middle
    label = (image < 0.5).astype(np.uint8)
    bright = np.full_like(image, 0.9)
    passes = PreparedCase("mr", "MR", image, label, 1.0, passes=(bright, bright))
    labels = [LabelInfo(1, "organ", (1.0, 0.0, 0.0))]
    net, cpu = DarkIsOrgan(), torch.device("cpu")
    assert validate(net, [PreparedCase("mr", "MR", image, label, 1.0)], labels, (16, 16, 16), cpu, amp=False)["MR"]["organ"] == 1.0
    [pred] = predict_cases(net, [passes], (16, 16, 16), cpu, amp=False)
    assert not pred.any()
    one_bright = PreparedCase("mr", "MR", image, label, 1.0, passes=(np.full_like(image, 0.52),))  # 0.69 and 0.42 average above 0.5
    assert np.array_equal(predict_cases(net, [one_bright], (16, 16, 16), cpu, amp=False)[0], label)


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
    both = dice_both_ways(preds, cases, labels)
    assert both["dice"]["CT"]["organ"] == plain and both["dice_largest_piece"]["CT"]["organ"] == kept
    assert validate(DarkIsOrgan(), cases, labels, (16, 16, 16), torch.device("cpu"), amp=False)["CT"]["organ"] == plain


def test_the_in_run_check_runs_the_sliding_window_its_bundle_declares(monkeypatch, tmp_path):
    """The check's windows are the bundle's (overlap, blending): a network whose output moves with where its
    windows fall is scored as it will segment, and a run's bundle declares the same windows."""
    import MultiModalSegLib.training.validation as validation
    from MultiModalSegLib.inference.sliding_window import BUNDLE_WINDOWS, predict_logits

    seen = []

    def recording(*args, **kwargs):
        seen.append({k: kwargs[k] for k in ("overlap", "mode", "sw_batch_size")})
        return predict_logits(*args, **kwargs)

    monkeypatch.setattr(validation, "predict_logits", recording)
    image = np.full((16, 16, 16), 0.9, np.float32)
    predict_cases(DarkIsOrgan(), [PreparedCase("ct", "CT", image, None, 1.0)], (8, 8, 8), torch.device("cpu"), amp=False)
    assert seen == [BUNDLE_WINDOWS] and BUNDLE_WINDOWS["overlap"] == 0.5 and BUNDLE_WINDOWS["mode"] == "gaussian"


def test_as_delivered_scores_the_piece_the_segmenter_keeps():
    """The training CT's organs (model space, LPS-aligned at 3 mm) predicted with a larger false spleen far below
    them: the largest piece scores the spleen 0, the piece kept as delivered (the organ layout) scores it 1."""
    from MultiModalSegLib.io import read_labelmap
    from MultiModalSegLib.labels import ABDOMEN_LABELS, LABEL_REMAPS
    from MultiModalSegLib.metrics import remap_labels
    from MultiModalSegLib.preprocessing import to_model_space
    from Testing.conftest import REAL_CT

    found = to_model_space(read_labelmap(REAL_CT.parent / "label_totalseg.nii.gz"), [3.0, 3.0, 3.0], is_label=True)
    truth = remap_labels(found.array, LABEL_REMAPS["totalsegmentator"]).astype(np.uint8)
    pred = truth.copy()
    side = round((1.3 * (truth == 2).sum()) ** (1 / 3))
    block = (slice(2, 2 + side), slice(40, 40 + side), slice(50, 50 + side))
    assert not pred[block].any()
    pred[block] = 2
    cases = [PreparedCase("ct", "CT", np.zeros(truth.shape, np.float32), truth, 1.0)]
    scores = dice_both_ways([pred], cases, list(ABDOMEN_LABELS), spacing=(3.0, 3.0, 3.0))
    assert scores["dice_largest_piece"]["CT"]["spleen"] == 0.0 and scores["dice_as_delivered"]["CT"]["spleen"] == 1.0
    assert scores["dice_as_delivered"]["CT"]["liver"] == scores["dice_largest_piece"]["CT"]["liver"] == 1.0
    assert "dice_as_delivered" not in dice_both_ways([pred], cases, list(ABDOMEN_LABELS))  # no grid given
    organ = [LabelInfo(1, "organ", (1.0, 0.0, 0.0))]
    assert "dice_as_delivered" not in dice_both_ways([pred], cases, organ, spacing=(3.0, 3.0, 3.0))  # no layout known
