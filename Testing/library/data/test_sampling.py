"""Stateless per-modality patch sampling: determinism, streams, foreground centring, case weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MultiModalSegLib.data.loading import PreparedCase
from MultiModalSegLib.data.sampling import ModalitySampler, extract_patch
from MultiModalSegLib.errors import ConfigError

torch.set_num_threads(1)

PATCH = (8, 8, 8)


def make_case(name: str = "a", value: float | None = None, weight: float = 1.0, seed: int = 0) -> PreparedCase:
    """A 32^3 volume with a single 2^3 labelled cube (label 2) at (20..21, 6..7, 25..26)."""
    rng = np.random.default_rng(seed)
    image = rng.random((32, 32, 32), dtype=np.float32) if value is None else np.full((32, 32, 32), value, np.float32)
    label = np.zeros((32, 32, 32), np.uint8)
    label[20:22, 6:8, 25:27] = 2
    return PreparedCase(name, "CT", image, label, weight)


def sampler(cases=None, **kw) -> ModalitySampler:
    params = {"patch_size": PATCH, "batch_size": 3, "seed": 7, **kw}
    return ModalitySampler(cases or [make_case("a", seed=1), make_case("b", seed=2)], **params)


def assert_batches_equal(x: dict, y: dict) -> None:
    for key in ("image", "label"):
        assert torch.equal(x[key], y[key]), key


def batches_differ(x: dict, y: dict) -> bool:
    return not torch.equal(x["image"], y["image"])


@pytest.mark.parametrize("augment", [False, True])
def test_same_step_gives_bitwise_identical_batches(augment):
    first = sampler(augment=augment)
    second = sampler(augment=augment)  # a fresh sampler, as after resuming a run
    b3 = first.batch(3)
    first.batch(4)
    first.batch(0)
    assert_batches_equal(first.batch(3), b3)  # no hidden state advanced by other calls
    assert_batches_equal(second.batch(3), b3)


def test_different_steps_streams_and_seeds_differ():
    base = sampler(augment=True)
    assert batches_differ(base.batch(0), base.batch(1))
    assert batches_differ(base.batch(5), sampler(augment=True, stream=1).batch(5))
    assert batches_differ(base.batch(5), sampler(augment=True, seed=8).batch(5))


@pytest.mark.parametrize("augment", [False, True])
def test_batch_shapes_and_dtypes(augment):
    batch = sampler(augment=augment, batch_size=2).batch(0)
    assert set(batch) == {"image", "label"}
    for key in ("image", "label"):
        assert batch[key].shape == (2, 1, *PATCH)
        assert batch[key].dtype == torch.float32
        assert type(batch[key]) is torch.Tensor  # no MONAI metadata
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 2.0}  # labels stay integral


def test_sampler_modality_and_empty_case_list():
    assert sampler().modality == "CT"
    with pytest.raises(ConfigError):
        ModalitySampler([], PATCH, 2)


def test_foreground_ratio_one_centres_every_patch_on_a_labelled_voxel():
    s = sampler(foreground_ratio=1.0, augment=False, batch_size=4)
    centre = tuple(p // 2 for p in PATCH)
    for step in range(6):
        labels = s.batch(step)["label"]
        for item in labels:
            assert item[0][centre] == 2.0
            assert int((item > 0).sum()) == 8  # the whole cube fits into the patch around any of its voxels


def test_foreground_ratio_zero_mostly_misses_the_small_organ():
    s = sampler(foreground_ratio=0.0, augment=False, batch_size=4)
    hits = sum(int((item > 0).any()) for step in range(6) for item in s.batch(step)["label"])
    assert hits < 6  # of 24 patches, the 2^3 cube in a 32^3 volume is rarely seen


def test_zero_weight_case_is_never_drawn():
    one = make_case("ones", value=1.0, weight=1.0)
    five = make_case("fives", value=5.0, weight=0.0)
    s = sampler([one, five], augment=False, foreground_ratio=0.5, batch_size=4)
    np.testing.assert_allclose(s.probabilities, [1.0, 0.0])
    seen = set()
    for step in range(10):
        seen |= set(torch.unique(s.batch(step)["image"]).tolist())
    assert seen <= {0.0, 1.0} and 1.0 in seen  # 0 only where a patch is padded


def test_weights_set_how_often_a_case_is_drawn():
    one = make_case("ones", value=1.0, weight=1.0)
    five = make_case("fives", value=5.0, weight=3.0)
    s = sampler([one, five], augment=False, batch_size=8)
    np.testing.assert_allclose(s.probabilities, [0.25, 0.75])
    images = torch.cat([s.batch(step)["image"] for step in range(25)])
    from_five = (images.amax(dim=(1, 2, 3, 4)) == 5.0).float().mean()
    assert 0.6 < float(from_five) < 0.9


def padded_reference(array: np.ndarray, center, size) -> np.ndarray:
    pad = 2 * max(*size, *array.shape)
    padded = np.pad(array, pad)
    starts = [int(c) - s // 2 + pad for c, s in zip(center, size, strict=True)]
    return padded[tuple(slice(st, st + s) for st, s in zip(starts, size, strict=True))]


@pytest.mark.parametrize(
    ("center", "size"),
    [
        ((3, 4, 5), (4, 4, 4)),  # inside
        ((0, 0, 0), (4, 4, 4)),  # low corner
        ((6, 7, 9), (5, 6, 3)),  # high corner, odd sizes
        ((1, 6, 2), (9, 3, 7)),  # larger than the array along z
        ((-2, 3, 12), (3, 3, 3)),  # centre outside the array
    ],
)
def test_extract_patch_matches_a_zero_padded_reference(center, size):
    array = np.arange(1, 7 * 8 * 10 + 1, dtype=np.int32).reshape(7, 8, 10)
    patch = extract_patch(array, center, size)
    assert patch.shape == size and patch.dtype == array.dtype
    np.testing.assert_array_equal(patch, padded_reference(array, center, size))


def test_extract_patch_at_a_corner_explicitly():
    array = np.arange(1, 5 * 5 * 5 + 1, dtype=np.float32).reshape(5, 5, 5)
    patch = extract_patch(array, (0, 0, 0), (4, 4, 4))
    np.testing.assert_array_equal(patch[2:, 2:, 2:], array[:2, :2, :2])
    assert not patch[:2].any() and not patch[:, :2].any() and not patch[:, :, :2].any()
    inner = extract_patch(array, (2, 2, 2), (3, 3, 3))
    np.testing.assert_array_equal(inner, array[1:4, 1:4, 1:4])


def test_foreground_centres_are_balanced_across_classes():
    from MultiModalSegLib.data.loading import PreparedCase

    label = np.zeros((40, 40, 40), np.uint8)
    label[:20] = 1  # a huge organ
    label[35:37, 35:37, 35:37] = 2  # 8 voxels of a tiny one
    case = PreparedCase("c", "CT", np.zeros(label.shape, np.float32), label)
    s = ModalitySampler([case], (4, 4, 4), batch_size=1, foreground_ratio=1.0, augment=False)
    centres = [s._center(case, np.random.default_rng(i)) for i in range(400)]
    tiny = sum(label[c] == 2 for c in centres)
    # voxel-proportional sampling would hit the tiny organ 8 / 32008 of the time
    assert 150 < tiny < 250


@pytest.mark.parametrize("unlabelled", [False, True])
def test_positions_give_exactly_those_items_of_the_whole_batch(unlabelled):
    from MultiModalSegLib.data.sampling import UnlabelledSampler

    cases = [make_case("a", seed=1), make_case("b", seed=2)]
    kw = {"patch_size": PATCH, "batch_size": 4, "seed": 7, "augment": True}
    s = UnlabelledSampler(cases, **kw) if unlabelled else ModalitySampler(cases, **kw)
    whole = s.batch(5)
    shares = [s.batch(5, range(r, 4, 2)) for r in range(2)]  # two DDP ranks' shares
    for key in whole:
        for r in range(2):
            assert torch.equal(shares[r][key], whole[key][r::2]), key
        assert not torch.equal(shares[0][key], shares[1][key])
