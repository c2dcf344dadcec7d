"""Acceptance: a tiny CT + MR model fine-tuned (``mmseg finetune``'s :func:`finetune`) with two
labelled cone-beam CT phantoms, mixed with CT and MR phantoms, gains CBCT and keeps the CT and MR
Dice on held-out phantoms within 2 points.

The parent is the committed fixture of ``training/tiny_ctmr_parent.py``. What trains: the
parameters :meth:`Method.add_modality` adds (UMMKD: CBCT's BatchNorm set, copied from CT's) at
the full learning rate, every other parameter at a tenth of it (``Method.added_modality_lr_scale``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_script

from MultiModalSegLib.bundle import load_bundle
from MultiModalSegLib.cli import main
from MultiModalSegLib.data.phantoms import write_phantom_dataset
from MultiModalSegLib.io import read_image
from MultiModalSegLib.training.finetune import FinetuneOptions, finetune

pytestmark = pytest.mark.slow  # fine-tunes a whole model: CI's second step

REPO = Path(__file__).resolve().parents[3]
PARENT = Path(__file__).parent / "data" / "tiny-ctmr-ummkd"
STEPS = 12
ORGANS = ("liver", "spleen", "kidney_right", "kidney_left")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("third_modality")
    # 2 labelled CBCT phantoms to train on, 1 held out
    data = write_phantom_dataset(tmp / "cbct", 0, 0, seed=12, n_validation=1, extra={"CBCT": 3})
    options = FinetuneOptions(
        init=str(PARENT), data=[str(data)], out=tmp / "tiny-ctmr-cbct", run_dir=tmp / "run", like={"CBCT": "CT"},
        steps=STEPS, lr=0.01, phantoms=2, heldout_phantoms=2, parent_data="no", quiet=True, threads=1, device="cpu",
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        return {"result": finetune(options), "data": data, "tmp": tmp}
    finally:
        torch.set_num_threads(threads)  # the run used one thread; later tests keep the session's


def test_bundle_gains_cbct(finetuned):
    result = finetuned["result"]
    assert result.status == "done"
    bundle = load_bundle(result.bundle)
    assert list(bundle.metadata["modalities"]) == ["CT", "MR", "CBCT"]
    assert bundle.metadata["modalities"]["CBCT"]["params"] == {"low": -200.0, "high": 300.0}
    assert bundle.metadata["network"]["params"]["modalities"] == ["CT", "MR", "CBCT"]
    assert bundle.metadata["training"]["finetune"]["new_modalities"] == ["CBCT"]
    parent = load_bundle(PARENT)
    added = sorted(set(bundle.state_dict) - set(parent.state_dict))
    assert added and all(".norms.CBCT." in k for k in added)
    # the training mix: the 2 labelled CBCT phantoms and CT and MR replay phantoms
    files = bundle.metadata["training"]["case_files"]
    assert sorted(f["modality"] for f in files) == ["CBCT", "CBCT", "CT", "CT", "MR", "MR"]


def test_old_modalities_keep_their_dice_on_held_out_phantoms(finetuned):
    """No organ's Dice (nor the mean) of CT or MR drops by more than 0.02 (a rise is fine)."""
    before, after = finetuned["result"].before["phantoms"], finetuned["result"].after["phantoms"]
    for modality in ("CT", "MR"):
        # the tiny parent segments the liver (its small organs stay near 0), so a drop would show
        assert before[modality]["liver"] > 0.5, f"the parent must segment {modality} phantoms for the claim to mean anything"
        for organ in (*ORGANS, "mean"):
            b, a = before[modality][organ], after[modality][organ]
            assert a >= b - 0.02, f"{modality} {organ}: Dice {b:.3f} -> {a:.3f}"
    assert set(finetuned["result"].after["data"]) == {"CBCT"}  # the held-out CBCT is scored after
    assert set(finetuned["result"].after["data"]["CBCT"]) == {*ORGANS, "mean"}


def test_segments_a_cbct_volume(finetuned, capsys):
    case = finetuned["data"].parent / "imagesTr" / "cbct_002.nii.gz"  # the held-out one
    out = finetuned["tmp"] / "seg"
    code = main(["segment", str(case), "--modality", "CBCT", "--model", str(finetuned["result"].bundle), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    seg, ref = read_image(out / "cbct_002.seg.nrrd"), read_image(case)
    assert seg.array.shape == ref.array.shape and seg.spacing == ref.spacing


def test_fixture_script_quick_mode(tmp_path):
    script = load_script("training/tiny_ctmr_parent.py")
    threads = torch.get_num_threads()
    try:
        assert script.main(["--quick", "--quiet", "--out", str(tmp_path / "parent"), "--run", str(tmp_path / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    bundle = load_bundle(tmp_path / "parent")
    assert bundle.name == "tiny-ctmr-ummkd" and bundle.modalities == ["CT", "MR"]
    assert bundle.state_dict.keys() == load_bundle(PARENT).state_dict.keys()  # the fixture matches the script
