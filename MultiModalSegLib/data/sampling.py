"""Per-modality patch samplers for unpaired training.

Every training step draws one batch per modality, independently: a CT batch from the CT cases and
an MR batch from the MR cases, whatever their counts. A sampler is stateless: the batch of step
``s`` is a pure function of ``(seed, stream, s)``, so a resumed run draws exactly the batches an
uninterrupted run would, with no generator state to save.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import convert_to_tensor

from ..errors import ConfigError
from .loading import PreparedCase
from .polarity import negated
from .profile_jitter import jitter_fraction, jitter_normalised


def augmentations() -> Compose:
    """MONAI spatial and intensity augmentations. No left-right flips: they would swap the
    kidneys' sides. Rotations mostly in the axial plane."""
    keys = ("image", "label")
    return Compose(
        [
            RandAffined(
                keys,
                prob=0.5,
                rotate_range=(0.26, 0.08, 0.08),
                scale_range=(0.1, 0.1, 0.1),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandGaussianSmoothd("image", prob=0.1, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            RandScaleIntensityd("image", factors=0.1, prob=0.3),
            RandShiftIntensityd("image", offsets=0.05, prob=0.3),
            RandAdjustContrastd("image", gamma=(0.8, 1.25), prob=0.3),
            RandGaussianNoised("image", prob=0.2, std=0.03),
        ]
    )


def extract_patch(array: np.ndarray, center: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The ``size`` patch of ``array`` centred on ``center``, zero-padded where it leaves the array."""
    out = np.zeros(tuple(size), dtype=array.dtype)
    src, dst = [], []
    for c, s, n in zip(center, size, array.shape, strict=True):
        start = int(c) - s // 2
        lo = min(max(start, 0), n)
        hi = max(min(start + s, n), lo)  # empty when the patch misses the array along this axis
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = array[tuple(src)]
    return out


class ModalitySampler:
    """Random patches of one modality's labelled cases; a share ``foreground_ratio`` of them is
    centred on a labelled voxel, the rest anywhere in the volume. Foreground centres are
    class-balanced: first a label present in the case, uniformly, then one of its voxels, so a
    small organ far from a large one (the spleen, the left kidney) is seen as often as the liver. Cases are drawn with probability
    proportional to their ``weight`` (e.g. to show a few real scans as often as many phantoms). A share ``jitter`` of the
    items is re-normalised between the two foreground choices of its profile (:mod:`.profile_jitter`), a share ``polarity``
    shown as its negative (:mod:`.polarity`; augmented items only, both)."""

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        patch_size: Sequence[int],
        batch_size: int,
        foreground_ratio: float = 0.67,
        augment: bool = True,
        seed: int = 0,
        stream: int = 0,
        jitter: float = 0.0,
        polarity: float = 0.0,
    ) -> None:
        if not cases:
            raise ConfigError("a modality sampler needs at least one labelled case.")
        self.jitter = float(jitter)
        self.polarity = float(polarity)
        self.cases = list(cases)
        self.modality = self.cases[0].modality
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.foreground_ratio = foreground_ratio
        self.seed = seed
        self.stream = stream
        self.transform = augmentations() if augment else None
        weights = np.array([c.weight for c in self.cases], dtype=np.float64)
        self.probabilities = weights / weights.sum()

    def _center(self, case: PreparedCase, rng: np.random.Generator) -> tuple[int, ...]:
        by_class = case.class_voxels
        if by_class and rng.random() < self.foreground_ratio:
            voxels = by_class[list(by_class)[int(rng.integers(len(by_class)))]]
            return tuple(int(i) for i in np.unravel_index(voxels[rng.integers(voxels.size)], case.image.shape))
        return tuple(int(rng.integers(0, n)) for n in case.image.shape)

    def draw(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...], int | None]:
        """The random choices of one item, in this order: case index, patch centre, augmentation seed."""
        index = int(rng.choice(len(self.cases), p=self.probabilities))
        center = self._center(self.cases[index], rng)
        return index, center, int(rng.integers(2**31 - 1)) if self.transform is not None else None

    def make(self, index: int, center: tuple[int, ...], seed: int | None) -> dict[str, torch.Tensor]:
        """The item that :meth:`draw`'s choices describe (patch extraction and augmentation)."""
        case = self.cases[index]
        image = jitter_normalised(extract_patch(case.image, center, self.patch_size), case.alternate, jitter_fraction(seed, self.jitter))
        item = {
            "image": torch.from_numpy(image)[None],
            "label": torch.from_numpy(extract_patch(case.label, center, self.patch_size).astype(np.float32))[None],
        }
        if seed is not None:
            self.transform.set_random_state(seed=seed)
            item = self.transform(item)
        return self.finish(item, seed)

    def finish(self, item: dict, seed: int | None) -> dict[str, torch.Tensor]:
        """An item's arrays as float tensors, the image negated when :func:`.polarity.negated` says so."""
        out = {k: convert_to_tensor(v, track_meta=False).float() for k, v in item.items()}
        if negated(seed, self.polarity):
            out["image"] = 1.0 - out["image"]
        return out

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return self.make(*self.draw(rng))

    def items(self, step: int, positions: Sequence[int] | None = None) -> list[dict[str, torch.Tensor]]:
        """The items of step ``step``'s batch at ``positions`` (default: all). Every item's random
        choices are drawn, so an item is the same whichever positions are asked for (a DDP rank
        builds only its share of the global batch)."""
        rng = np.random.default_rng([self.seed, self.stream, step])
        draws = [self.draw(rng) for _ in range(self.batch_size)]
        return [self.make(*draws[i]) for i in (range(self.batch_size) if positions is None else positions)]

    def batch(self, step: int, positions: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """The batch of training step ``step``: ``{"image": [B,1,...], "label": [B,1,...]}``
        (only the items at ``positions`` when given)."""
        items = self.items(step, positions)
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class UnlabelledSampler(ModalitySampler):
    """Random patches of one modality's unlabelled cases, centred anywhere in the volume; batches
    hold images only. Stateless like :class:`ModalitySampler` (give it its own ``stream``)."""

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        patch_size: Sequence[int],
        batch_size: int,
        augment: bool = True,
        seed: int = 0,
        stream: int = 0,
    ) -> None:
        if not cases:
            raise ConfigError("an unlabelled sampler needs at least one case.")
        super().__init__(cases, patch_size, batch_size, 0.0, augment, seed, stream)

    def draw(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...], int | None]:
        index = int(rng.choice(len(self.cases), p=self.probabilities))
        center = tuple(int(rng.integers(0, n)) for n in self.cases[index].image.shape)
        return index, center, int(rng.integers(2**31 - 1)) if self.transform is not None else None

    def make(self, index: int, center: tuple[int, ...], seed: int | None) -> dict[str, torch.Tensor]:
        case = self.cases[index]
        # the augmentations transform an image and a label together: an empty label rides along
        item = {"image": extract_patch(case.image, center, self.patch_size)[None], "label": np.zeros((1, *self.patch_size), np.float32)}
        if seed is not None:
            self.transform.set_random_state(seed=seed)
            item = self.transform(item)
        return {"image": convert_to_tensor(item["image"], track_meta=False).float()}

    def batch(self, step: int, positions: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """The unlabelled batch of training step ``step``: ``{"image": [B,1,...]}`` (only the items
        at ``positions`` when given)."""
        return super().batch(step, positions)
