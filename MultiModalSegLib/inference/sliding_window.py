"""Sliding-window prediction of a whole volume with overlapping, Gaussian-blended patches (MONAI)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..device import autocast

# The sliding window a trained bundle declares (its metadata's "inference"), and the one the in-run
# validation runs, so that a run's checks score what its bundle will deliver.
BUNDLE_WINDOWS = {"overlap": 0.5, "sw_batch_size": 2, "mode": "gaussian"}


def predict_logits(
    net: nn.Module,
    image: torch.Tensor,
    modality: str,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    mode: str = "gaussian",
    device: torch.device | None = None,
    amp: bool = True,
    progress: Callable[[float], None] | None = None,
    cpu_bfloat16: bool = False,
    polarity_ensemble: bool = False,
) -> torch.Tensor:
    """Logits ``[1, C, Z, Y, X]`` for a normalised model-space image ``[1, 1, Z, Y, X]``.

    ``cpu_bfloat16``: on a CPU that computes bfloat16 natively, run the network in it (about twice
    as fast); windows are still blended in float32. ``polarity_ensemble``: the image and its
    negative ``1 - x`` are both predicted and the result is the log of the mean of their class
    probabilities (:mod:`..data.polarity`), so a softmax of it gives that mean and its argmax the
    ensemble's labels.

    The image may stay on the CPU while the network runs on ``device``: MONAI moves each window
    (``sw_device``) and accumulates on the image's device, so large volumes do not need GPU memory.
    """
    # imported here: importing any part of MONAI loads all of it, so only a volume that runs pays for it
    from monai.inferers import sliding_window_inference

    if polarity_ensemble:
        settings = {"overlap": overlap, "sw_batch_size": sw_batch_size, "mode": mode, "device": device, "amp": amp,
                    "cpu_bfloat16": cpu_bfloat16}
        mean = 0.5 * torch.softmax(predict_logits(
            net, image, modality, patch_size, progress=None if progress is None else lambda f: progress(0.5 * f), **settings), 1)
        mean += 0.5 * torch.softmax(predict_logits(
            net, 1.0 - image, modality, patch_size, progress=None if progress is None else lambda f: progress(0.5 + 0.5 * f),
            **settings), 1)
        return torch.log(mean.clamp_min_(torch.finfo(mean.dtype).tiny))
    device = device or next(net.parameters()).device
    windows = count_windows(image.shape[2:], patch_size, overlap, sw_batch_size) if progress is not None else 0
    done = [0]

    def predictor(x: torch.Tensor) -> torch.Tensor:
        out = net(x, modality).float()  # bfloat16 / float16 windows are blended in float32
        if progress is not None:
            done[0] += 1
            progress(min(done[0] / windows, 1.0))
        return out

    with torch.inference_mode(), autocast(device, amp, cpu_bfloat16):
        logits = sliding_window_inference(
            image,
            roi_size=tuple(patch_size),
            sw_batch_size=sw_batch_size,
            predictor=predictor,
            overlap=overlap,
            mode=mode,
            sw_device=device,
            device=image.device,
        )
    return torch.as_tensor(logits).float()


def add_pass_probabilities(mean: torch.Tensor | None, logits: torch.Tensor, passes: int) -> torch.Tensor:
    """``mean`` (``None`` before the first pass) plus one of ``passes`` passes' softmax class probabilities,
    each weighted ``1 / passes``: after the last pass, their mean (a normalisation ensemble's passes)."""
    p = torch.softmax(logits.float(), 1) / passes
    return p if mean is None else mean.add_(p)


def count_windows(shape: Sequence[int], patch: Sequence[int], overlap: float, sw_batch_size: int = 1) -> int:
    """How many windows (batches of ``sw_batch_size`` windows) MONAI's sliding window runs over ``shape``."""
    n = 1
    for s, p in zip(shape, patch, strict=True):
        step = max(int(p * (1 - overlap)), 1)
        n *= 1 if s <= p else -(-(s - p) // step) + 1
    return max(-(-n // sw_batch_size), 1)
