"""MR training items shown as their negative (a recipe's ``polarity``)."""

import numpy as np
import pytest
import torch
from conftest import SAMPLES

from MultiModalSegLib.data.dataset import load_dataset
from MultiModalSegLib.data.loading import PreparedCase
from MultiModalSegLib.data.polarity import check_polarity, negated
from MultiModalSegLib.data.sampling import ModalitySampler
from MultiModalSegLib.data.synthesis import SynthSampler, prepare_source
from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.modalities import CT, MR

SPACING = [6.0, 6.0, 6.0]
PATCH = [16, 32, 32]


def test_the_choice_is_drawn_from_the_item_seed_for_the_share_asked():
    assert not negated(None, 1.0) and not negated(5, 0.0)
    assert all(negated(seed, 1.0) for seed in range(50))
    chosen = np.array([negated(seed, 0.3) for seed in range(4000)])
    assert abs(float(chosen.mean()) - 0.3) < 0.03
    assert [negated(s, 0.3) for s in range(50)] == chosen[:50].tolist()  # a function of the seed


def test_a_recipe_block_is_checked():
    profiles = {"CT": CT, "MR": MR}
    assert check_polarity({"MR": 0.5}, ["CT", "MR"], profiles) == {"MR": 0.5}
    assert check_polarity({}, ["CT", "MR"], profiles) == {}
    for block, message in (({"CT": 0.5}, "fixes the order"), ({"MR": 0}, r"\(0, 1\]"), ({"MR": 1.5}, r"\(0, 1\]"),
                           ({"MR": True}, r"\(0, 1\]"), ([0.5], "must be"), ({"MR": 0.5}, "does not train")):
        with pytest.raises(ConfigError, match=message):
            check_polarity(block, ["CT"] if message == "does not train" else ["CT", "MR"],
                           {"CT": CT} if message == "does not train" else profiles)


def _mr_case() -> PreparedCase:
    image = np.random.default_rng(3).random((24, 24, 24), dtype=np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[8:16, 8:16, 8:16] = 1
    return PreparedCase("mr", "MR", image, label, 1.0)


def test_a_sampler_negates_the_share_asked_and_changes_nothing_else():
    plain = ModalitySampler([_mr_case()], (8, 8, 8), 6, seed=2).batch(4)
    zero = ModalitySampler([_mr_case()], (8, 8, 8), 6, seed=2, polarity=0.0).batch(4)
    every = ModalitySampler([_mr_case()], (8, 8, 8), 6, seed=2, polarity=1.0).batch(4)
    half = ModalitySampler([_mr_case()], (8, 8, 8), 6, seed=2, polarity=0.5).batch(4)
    assert torch.equal(plain["image"], zero["image"]) and torch.equal(plain["label"], zero["label"])
    assert torch.equal(plain["label"], every["label"]) and torch.equal(plain["label"], half["label"])
    assert torch.allclose(every["image"], 1.0 - plain["image"])
    flipped = [torch.allclose(h, 1.0 - p) for h, p in zip(half["image"], plain["image"], strict=True)]
    kept = [torch.equal(h, p) for h, p in zip(half["image"], plain["image"], strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    unaugmented = ModalitySampler([_mr_case()], (8, 8, 8), 3, augment=False, polarity=1.0).batch(4)
    assert torch.equal(unaugmented["image"], ModalitySampler([_mr_case()], (8, 8, 8), 3, augment=False).batch(4)["image"])


def test_synthesised_items_are_negated_after_everything_else():
    case = next(c for c in load_dataset(SAMPLES / "dataset.json").cases("training") if c.modality == "CT")
    source = prepare_source(case, SPACING, [1, 2, 3, 4])
    plain = SynthSampler([source], "MR", PATCH, 2, SPACING, seed=5, generator=2).batch(3)
    every = SynthSampler([source], "MR", PATCH, 2, SPACING, seed=5, generator=2, polarity=1.0).batch(3)
    assert torch.equal(plain["label"], every["label"])
    assert torch.allclose(every["image"], 1.0 - plain["image"])
    assert float(every["image"].min()) >= 0.0 and float(every["image"].max()) <= 1.0
