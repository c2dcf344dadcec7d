"""Every registered method: trains on phantoms with a decreasing loss, exports a bundle, and that
bundle segments a real CT and a real MR through the ordinary ``mmseg segment`` (no method flag)."""

from __future__ import annotations

import pytest
import torch
from conftest import REAL_CT, REAL_MR, TINY_LSSC_NETWORK, tiny_config

from MultiModalSegLib.cli import main
from MultiModalSegLib.io import read_image, read_segmentation_names
from MultiModalSegLib.methods import METHODS
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.config import config_from_dict

# A method whose networks are not the tiny U-Net of ``tiny_config`` names its own tiny network
# (and method parameters) here; every other method trains the tiny U-Net.
TINY_OVERRIDES: dict[str, dict] = {
    "cmc": {"phantoms": {"ct": 1, "mr": 1, "seed": 5}, "few_shot": {"CT": 1, "MR": 1}},  # one more case per modality, kept unlabelled
    "lssc": {"network": TINY_LSSC_NETWORK, "method_params": {"eam_heads": 2}},
}

STEPS = 8


def _loss_on(trainer: Trainer, step: int) -> float:
    """The method's total loss on the batches of ``step``, without updating anything."""
    batches = trainer.batches(step)
    torch.manual_seed(123)
    with torch.no_grad():
        return float(trainer.method.training_step(batches)["loss"])


# The default model's method and the shared-everything baseline run in every test run; the other
# methods' end-to-end runs (10-40 s each) are ``slow`` (CI's second step).
QUICK = {"ummkd", "joint"}


@pytest.mark.parametrize("name", [m if m in QUICK else pytest.param(m, marks=pytest.mark.slow) for m in sorted(METHODS)])
def test_method_trains_exports_and_segments_ct_and_mr(name, phantom_dir, tmp_path, capsys):
    cfg = config_from_dict(tiny_config(phantom_dir, method=name, steps=STEPS, lr=0.01, **TINY_OVERRIDES.get(name, {})))
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    trainer.build()
    before = _loss_on(trainer, 0)
    result = trainer.run()
    assert result.status == "done" and result.bundle is not None
    after = _loss_on(trainer, 0)
    assert after < before, f"{name}: loss on the first batches went from {before:.4f} to {after:.4f}"

    out = tmp_path / "seg"
    code = main(["segment", str(REAL_CT), "--modality", "CT", "--model", str(result.bundle), "-o", str(out / "ct")])
    assert code == 0, capsys.readouterr().err
    code = main(["segment", str(REAL_MR), "--modality", "MR", "--model", str(result.bundle), "-o", str(out / "mr")])
    assert code == 0, capsys.readouterr().err
    for modality, source in (("ct", REAL_CT), ("mr", REAL_MR)):
        written = out / modality / "image.seg.nrrd"
        seg, ref = read_image(written), read_image(source)
        assert seg.array.shape == ref.array.shape and seg.spacing == ref.spacing and seg.origin == ref.origin
        assert set(read_segmentation_names(written).values()) <= {"liver", "spleen", "kidney_right", "kidney_left"}
