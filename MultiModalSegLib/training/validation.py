"""Validation: Dice per modality per class on whole model-space volumes (sliding window)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..data.loading import PreparedCase
from ..inference.organ_layout import layout_for
from ..inference.segmenter import keep_largest_component, organ_pieces
from ..inference.sliding_window import BUNDLE_WINDOWS, add_pass_probabilities, predict_logits
from ..io import Volume
from ..labels import LabelInfo
from ..metrics import dice_scores


def predict_cases(
    net: nn.Module,
    cases: Sequence[PreparedCase],
    patch_size: Sequence[int],
    device: torch.device,
    amp: bool = True,
    polarity_ensemble: Sequence[str] = (),
) -> list[np.ndarray]:
    """The label map of each case (model space), predicted as the bundle will: its sliding window
    (:data:`..inference.sliding_window.BUNDLE_WINDOWS`; a single network's Dice can move by tenths with the
    overlap, ``training/reports/window-settings``), the modalities in
    ``polarity_ensemble`` with image and negative averaged, and a case prepared with the passes of a
    normalisation ensemble (``PreparedCase.passes``) as the argmax of the mean of every pass's probabilities."""
    was_training = net.training
    net.eval()
    preds = []
    for case in cases:
        mean = None
        for array in (case.image, *case.passes):
            logits = predict_logits(net, torch.from_numpy(array)[None, None], case.modality, patch_size, **BUNDLE_WINDOWS,
                                    device=device, amp=amp, polarity_ensemble=case.modality in polarity_ensemble)
            mean = add_pass_probabilities(mean, logits, 1 + len(case.passes))
        preds.append(mean.argmax(1)[0].numpy())
    net.train(was_training)
    return preds


def dice_summary(
    preds: Sequence[np.ndarray], cases: Sequence[PreparedCase], labels: Sequence[LabelInfo], largest_piece: bool = False,
    spacing: Sequence[float] | None = None,
) -> dict[str, dict[str, float]]:
    """Mean Dice per modality per label of ``preds`` against the cases' labels, and each modality's mean
    over its labels. ``largest_piece``: score each organ's largest 26-connected piece alone. ``spacing``
    (the model space's x, y, z mm; it is LPS-aligned) with it: score the piece the ``Segmenter`` keeps, the
    largest unless the organ layout finds it out of place (:mod:`..inference.organ_layout`), so that the
    figure is what the bundle will deliver."""
    per_modality: dict[str, list[dict[str, float]]] = {}
    layout = layout_for(list(labels)) if spacing is not None else None
    for pred, case in zip(preds, cases, strict=True):
        if largest_piece and layout:
            grid = Volume(pred, tuple(float(s) for s in spacing), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
            pred = organ_pieces(pred, list(labels), grid, layout)[0]
        elif largest_piece:
            pred = keep_largest_component(pred, [lab.value for lab in labels])
        per_modality.setdefault(case.modality, []).append(dice_scores(pred, case.label, labels))
    summary = {}
    for modality, rows in per_modality.items():
        summary[modality] = {lab.name: float(np.nanmean([r[lab.name] for r in rows])) if any(
            not np.isnan(r[lab.name]) for r in rows) else float("nan") for lab in labels}
        summary[modality]["mean"] = float(np.nanmean(list(summary[modality].values())))
    return summary


def dice_both_ways(preds: Sequence[np.ndarray], cases: Sequence[PreparedCase], labels: Sequence[LabelInfo],
                   spacing: Sequence[float] | None = None) -> dict[str, dict]:
    """``preds`` scored by :func:`dice_summary`: ``{"dice": every piece (the in-run figure every run logs),
    "dice_largest_piece": each organ's largest piece}``, and with the model space's ``spacing`` for labels that
    have an organ layout ``"dice_as_delivered"``: the piece the ``Segmenter`` keeps (the largest unless out of
    place; older runs logged the largest piece alone as what the bundle delivers)."""
    scores = {"dice": dice_summary(preds, cases, labels), "dice_largest_piece": dice_summary(preds, cases, labels, largest_piece=True)}
    if spacing is not None and layout_for(list(labels)):
        scores["dice_as_delivered"] = dice_summary(preds, cases, labels, largest_piece=True, spacing=spacing)
    return scores


def validate(
    net: nn.Module,
    cases: Sequence[PreparedCase],
    labels: Sequence[LabelInfo],
    patch_size: Sequence[int],
    device: torch.device,
    amp: bool = True,
    polarity_ensemble: Sequence[str] = (),
) -> dict[str, dict[str, float]]:
    """Mean Dice per modality per label over ``cases`` (labelled, model space): :func:`predict_cases`
    scored by :func:`dice_summary`, every piece counted."""
    return dice_summary(predict_cases(net, cases, patch_size, device, amp, polarity_ensemble), cases, labels)


def validation_markdown(dice: dict[str, dict[str, float | None]]) -> str:
    """Markdown table of :func:`validate`'s result: a row per modality, a column per organ and the mean."""
    if not dice:
        return "(no validation cases)"
    organs = [k for k in next(iter(dice.values())) if k != "mean"]
    lines = ["| modality | " + " | ".join(organs) + " | mean |", "|---" * (len(organs) + 2) + "|"]
    for modality, row in dice.items():
        cells = ["-" if row.get(o) is None or np.isnan(row[o]) else f"{row[o]:.3f}" for o in [*organs, "mean"]]
        lines.append(f"| {modality} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
