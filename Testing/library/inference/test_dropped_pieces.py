"""What the voxels of an organ's dropped piece become (``Segmenter(dropped_pieces=...)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MultiModalSegLib.errors import InputError
from MultiModalSegLib.inference import Segmenter
from MultiModalSegLib.inference.segmenter import largest_pieces, suppress_dropped_pieces


def _logits(shape=(12, 12, 12)) -> tuple[torch.Tensor, np.ndarray]:
    """Logits of 5 classes: a spleen (2) block holding a small cube called left kidney (4) whose second
    class is spleen, a left kidney (4) block elsewhere, and a stray left-kidney voxel pair in background whose
    second class is background."""
    logits = torch.zeros((1, 5, *shape))
    logits[0, 0] = 1.0
    logits[0, 2, 1:7, 1:7, 1:7] = 3.0  # spleen
    logits[0, 4, 3:5, 3:5, 3:5] = 4.0  # inside the spleen: left kidney first, spleen second
    logits[0, 4, 8:11, 8:11, 8:11] = 3.0  # the left kidney
    logits[0, 4, 10, 1, 1:3] = 2.0  # a stray piece: left kidney first, background second
    return logits, logits.argmax(1)[0].numpy().astype(np.uint8)


def test_a_piece_inside_another_organ_goes_to_it_and_a_stray_one_to_background():
    logits, before = _logits()
    after, _ = largest_pieces(before, [1, 2, 3, 4])
    assert (after[3:5, 3:5, 3:5] == 0).all() and (after[10, 1, 1:3] == 0).all()  # both dropped to background
    bbox = (slice(0, 12),) * 3
    suppressed = suppress_dropped_pieces(logits, before, after, bbox)
    relabelled = suppressed.argmax(1)[0].numpy()
    assert (relabelled[3:5, 3:5, 3:5] == 2).all()  # the hole in the spleen is spleen
    assert (relabelled[10, 1, 1:3] == 0).all()  # the stray voxels are background
    assert (relabelled[8:11, 8:11, 8:11] == 4).all() and (relabelled == before)[after == before].all()  # the rest as it was
    assert torch.equal(logits, _logits()[0])  # the input is left alone (inference tensors cannot change in place)


def test_nothing_dropped_changes_nothing_and_a_crop_is_indexed_in_its_box():
    logits, before = _logits()
    assert suppress_dropped_pieces(logits, before, before.copy(), (slice(0, 12),) * 3) is None
    grid = np.zeros((14, 14, 14), dtype=np.uint8)  # the crop sits at (1, 2, 0) of a larger model grid
    bbox = (slice(1, 13), slice(2, 14), slice(0, 12))
    grid[bbox] = before
    after = largest_pieces(grid, [1, 2, 3, 4])[0]
    relabelled = suppress_dropped_pieces(logits, grid, after, bbox).argmax(1)[0].numpy()
    assert (relabelled[3:5, 3:5, 3:5] == 2).all()


def test_the_default_gives_dropped_voxels_their_next_class_and_returns_the_networks_probabilities(tiny_bundle, monkeypatch):
    """Under the default a dropped piece's voxels take their next class; the probabilities returned stay the
    network's (the same as under ``background``), not the lowered ones that drew the labels. The network is
    patched to call a cube inside the spleen left kidney, spleen its second class, beside a larger left kidney."""
    from MultiModalSegLib.inference import segmenter as module
    from MultiModalSegLib.io import read_image
    from Testing.conftest import REAL_CT

    def kidney_in_spleen(net, image, modality, window, **kwargs):
        logits = torch.zeros((1, 5, *image.shape[2:]))
        logits[:, 0] = 5.0
        z, y, x = image.shape[2:]
        logits[0, 2, : z // 2, : y // 2, : x // 2] = 10.0  # spleen
        logits[0, 4, z // 8 : z // 4, y // 8 : y // 4, x // 8 : x // 4] = 12.0  # left kidney inside it, spleen second
        logits[0, 4, z // 2 + 2 :, y // 2 + 2 :, x // 2 + 2 :] = 10.0  # the left kidney
        return logits

    monkeypatch.setattr(module, "predict_logits", kidney_in_spleen)
    volume = read_image(REAL_CT)
    default = Segmenter(tiny_bundle, device="cpu", amp=False)
    assert default.dropped_pieces == "next_class"
    result = default.segment(volume, "CT", probabilities=True)
    plain = Segmenter(tiny_bundle, device="cpu", amp=False, dropped_pieces="background").segment(volume, "CT", probabilities=True)
    spleen = (result.labels.array == 2).sum()
    assert spleen > (plain.labels.array == 2).sum() and (result.labels.array == 4).sum() == (plain.labels.array == 4).sum()
    assert ((plain.labels.array == 0) & (result.labels.array == 2)).sum() == spleen - (plain.labels.array == 2).sum()
    np.testing.assert_array_equal(result.probabilities, plain.probabilities)


def test_an_unknown_choice_is_refused(tiny_bundle):
    with pytest.raises(InputError, match="dropped_pieces 'organ'.*background"):
        Segmenter(tiny_bundle, device="cpu", dropped_pieces="organ")
