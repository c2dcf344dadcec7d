"""``training/average_checkpoints.py``: the mean of a run's saved checkpoints as a candidate bundle."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from MultiModalSegLib.bundle import load_bundle
from MultiModalSegLib.training import Trainer
from MultiModalSegLib.training.checkpoint import load_checkpoint
from MultiModalSegLib.training.config import config_from_dict
from Testing.conftest import load_script, tiny_config


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, phantom_dir):
    """A tiny run's checkpoints after steps 2, 4 and 6 (copies), and its bundle."""
    folder = tmp_path_factory.mktemp("run")
    network = {"name": "unet3d", "params": {"features": [4, 8, 16], "norm": "modality_instance"}}
    trainer = Trainer(config_from_dict(tiny_config(phantom_dir, steps=6, checkpoint_every=2, network=network)), folder, quiet=True)
    trainer.build()
    copies = []
    for step in (2, 4, 6):
        while trainer.step < step:
            trainer.train_step()
        trainer.checkpoint()
        copies.append(shutil.copy(folder / "checkpoints" / "last.pt", folder / f"step{step}.pt"))
    trainer.export(None, 0.0)
    return folder, copies


def test_the_bundle_carries_the_mean_of_the_checkpoints_and_says_which(saved_run, tmp_path, monkeypatch):
    folder, copies = saved_run
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(copies[0], repo / "last.pt")
    for command in (["init", "-q"], ["add", "last.pt"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *command], cwd=repo, check=True)
    monkeypatch.chdir(repo)  # REV:PATH is read from the history of the repository one works in
    script = load_script("training/average_checkpoints.py")
    out = tmp_path / "average"
    assert script.main(["--bundle", str(folder / "bundle"), "--checkpoint", "HEAD:last.pt", "--checkpoint", str(copies[1]),
                        "--checkpoint", str(copies[2]), "--version", "9.2.0", "--out", str(out)]) == 0
    states = [load_checkpoint(c)["method"] for c in copies]
    averaged = load_bundle(out).state_dict
    for key, value in averaged.items():
        torch.testing.assert_close(value, torch.stack([s["net." + key] for s in states]).mean(0))
    meta = load_bundle(out).metadata
    record = meta["training"]["weight_average"]
    assert meta["version"] == "9.2.0" and meta["metrics"] == {} and record["steps"] == [2, 4, 6]
    assert [c["source"] for c in record["checkpoints"]] == ["HEAD:last.pt", str(copies[1]), str(copies[2])]
    before = (out / "metadata.json").read_text()
    with pytest.raises(SystemExit, match="already exists"):
        script.main(["--bundle", str(folder / "bundle"), "--checkpoint", str(copies[0]), "--checkpoint", str(copies[1]),
                     "--version", "9.3.0", "--out", str(out)])
    assert (out / "metadata.json").read_text() == before  # nothing lost


def test_checkpoints_that_cannot_be_averaged_are_refused(saved_run, tiny_bundle, tmp_path):
    folder, copies = saved_run
    script = load_script("training/average_checkpoints.py")

    def run(bundle, *checkpoints):
        args = ["--bundle", str(bundle), "--version", "9.4.0", "--out", str(tmp_path / "x")]
        for c in checkpoints:
            args += ["--checkpoint", str(c)]
        return script.main(args)

    with pytest.raises(SystemExit, match="two or more"):
        run(folder / "bundle", copies[0])
    with pytest.raises(SystemExit, match="same step given twice"):
        run(folder / "bundle", copies[0], copies[0])
    with pytest.raises(SystemExit, match="REV:PATH"):
        run(folder / "bundle", copies[0], tmp_path / "missing.pt")
    other = load_checkpoint(copies[1])
    first = next(k for k in other["method"] if k.endswith("weight"))
    other["method"][first] = torch.zeros(1)
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="not those of the bundle's network"):
        run(folder / "bundle", copies[0], tmp_path / "other.pt")  # another network: other shapes
    with pytest.raises(SystemExit, match="BatchNorm running statistics"):
        run(tiny_bundle, copies[0], copies[1])
    assert not (tmp_path / "x").exists()
