"""Unlabelled cases reach the batches of semi-supervised methods (``uses_unlabelled``), and only theirs."""

import json

import pytest
import torch
from conftest import tiny_config, write_json

from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.config import config_from_dict


def _dataset(phantom_dir, tmp_path):
    """The phantom training cases, each listed twice: labelled, and again without its label."""
    raw = json.loads((phantom_dir / "dataset.json").read_text())
    training = []
    for c in raw["training"]:
        image, label = str(phantom_dir / c["image"]), str(phantom_dir / c["label"])
        training.append({"name": c["modality"] + "_a", "image": image, "label": label, "modality": c["modality"]})
        training.append({"name": c["modality"] + "_b", "image": image, "label": label, "modality": c["modality"]})
        training.append({"name": c["modality"] + "_u", "image": image, "modality": c["modality"]})
    return write_json(tmp_path / "dataset.json", {"labels": raw["labels"], "training": training})


def _trainer(tmp_path, dataset, **overrides):
    cfg = tiny_config(tmp_path, datasets=[str(dataset)], patch_size=[8, 16, 16], **overrides)
    trainer = Trainer(config_from_dict(cfg), tmp_path / "run", quiet=True)
    trainer.build()
    return trainer


@pytest.mark.slow
def test_unlabelled_cases_flow_from_dataset_json_into_the_batches(phantom_dir, tmp_path):
    trainer = _trainer(tmp_path, _dataset(phantom_dir, tmp_path), method="cmc")
    assert trainer.case_counts == {"CT": 2, "MR": 2, "CT:unlabelled": 1, "MR:unlabelled": 1}
    batches = trainer.batches(3)
    assert set(batches) == {"CT", "MR", "CT:unlabelled", "MR:unlabelled"}
    for m in ("CT", "MR"):
        assert set(batches[f"{m}:unlabelled"]) == {"image"}
        assert batches[f"{m}:unlabelled"]["image"].shape == batches[m]["image"].shape
    # stateless: the same step gives the same batches again, another step other ones
    torch.testing.assert_close(trainer.batches(3)["CT:unlabelled"]["image"], batches["CT:unlabelled"]["image"])
    assert not torch.equal(trainer.batches(4)["CT:unlabelled"]["image"], batches["CT:unlabelled"]["image"])
    # the engine tells the method where it is before each step
    trainer.train_step()
    trainer.train_step()
    assert (trainer.method.step, trainer.method.total_steps) == (1, trainer.cfg.steps)


def test_few_shot_keeps_the_surplus_as_unlabelled_for_semi_supervised_methods(phantom_dir, tmp_path):
    dataset = _dataset(phantom_dir, tmp_path)
    trainer = _trainer(tmp_path / "cmc", dataset, method="cmc", few_shot={"CT": 1})
    assert trainer.case_counts == {"CT": 1, "MR": 2, "CT:unlabelled": 2, "MR:unlabelled": 1}


def test_supervised_methods_get_labelled_batches_only(phantom_dir, tmp_path):
    trainer = _trainer(tmp_path, _dataset(phantom_dir, tmp_path), method="ummkd", few_shot={"CT": 1})
    assert trainer.case_counts == {"CT": 1, "MR": 2}
    assert set(trainer.batches(0)) == {"CT", "MR"}
