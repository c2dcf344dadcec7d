"""Shared fixtures: paths to the shipped sample scans, a tiny UMMKD model trained on phantoms, and the
repository's scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from MultiModalSegLib import monai_start

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "Resources" / "SampleData"
# the smallest Transformer U-Net LSSC trains (tests of every method use it)
TINY_LSSC_NETWORK = {"name": "transformer_unet3d", "params": {"embed_dim": 8, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "window": 2, "patch": [2, 4, 4]}}
REAL_CT = SAMPLES / "abdomen_ct_01" / "image.nii.gz"
REAL_MR = SAMPLES / "abdomen_mr_01" / "image.nii.gz"

# Two pytest-xdist workers (the README's test command) share two cores: one torch thread each, and the
# processes they start (mmseg, training, Slicer's background runs) one OpenMP thread each. A serial run
# takes both cores.
TORCH_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
torch.set_num_threads(TORCH_THREADS)
if TORCH_THREADS == 1:
    os.environ["OMP_NUM_THREADS"] = "1"
# the tests import MONAI as the mmseg command does: without the optional packages it would load for parts
# of it the library never uses (see monai_start)
monai_start.install()


def load_script(relative: str, name: str | None = None) -> ModuleType:
    """The repository's script ``relative`` (``benchmarks/startup.py``, ``training/x.py``) as a module
    called ``name`` (default: its stem), registered in ``sys.modules`` (dataclasses look it up there)."""
    path = REPO / relative
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_config(data_dir: Path, **overrides) -> dict:
    """A training config small enough for a test: 3-level U-Net with 4-16 channels at 6 mm."""
    cfg = {
        "name": "tiny",
        "method": "ummkd",
        "network": {"name": "unet3d", "params": {"features": [4, 8, 16]}},
        "datasets": [str(data_dir / "dataset.json")],
        "spacing": [6.0, 6.0, 6.0],
        "patch_size": [16, 32, 32],
        "batch_size": 2,
        "augment": False,
        "lr": 0.01,
        "steps": 6,
        "validate_every": 1000,
        "checkpoint_every": 3,
        "log_every": 1,
        "threads": TORCH_THREADS,
        "schedule": {"name": "cosine", "warmup_steps": 0},
    }
    cfg.update(overrides)
    return cfg


SYNTHESIS_MIX = {"sources": ["datasets"], "mix": {"CT": {"real": 0.5, "synthetic": 0.5}, "MR": {"synthetic": 1.0}}}


def synthesis_config(**overrides):
    """A tiny config on the sample scans with the real MR left out: CT batches half real, half
    synthesised; MR batches synthesised from the CT's label map alone."""
    from MultiModalSegLib.training.config import config_from_dict

    datasets = [{"path": str(SAMPLES / "dataset.json"), "exclude": ["abdomen_mr_01"]}]
    return config_from_dict(tiny_config(SAMPLES, datasets=datasets, **{"synthesis": SYNTHESIS_MIX, **overrides}))


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with :data:`TORCH_THREADS` (a trainer or script that sets its own keeps it only for its test)."""
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    from MultiModalSegLib.data.phantoms import write_phantom_dataset

    out = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(out, 2, 2, seed=11, n_validation=1)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, phantom_dir) -> Path:
    """A bundle of a tiny UMMKD model (a few steps: it runs, it is not accurate)."""
    from MultiModalSegLib.training import Trainer
    from MultiModalSegLib.training.config import config_from_dict

    out = tmp_path_factory.mktemp("tiny_run")
    result = Trainer(config_from_dict(tiny_config(phantom_dir)), out, quiet=True).run()
    assert result.status == "done"
    return result.bundle


def sub_volume(path: Path, z: slice, y: slice, x: slice):
    """Voxels ``[z, y, x]`` of the image at ``path`` on its own grid (origin moved to the first kept voxel)."""
    import numpy as np

    from MultiModalSegLib.io import Volume, read_image

    image = read_image(path)
    first = tuple(int(s.start or 0) for s in (x, y, z))
    return Volume(np.ascontiguousarray(image.array[z, y, x]), image.spacing, image.to_sitk().TransformIndexToPhysicalPoint(first),
                  image.direction)


def real_mr_crop():
    """The real MR's 64 x 96 voxels of each slice that hold its four organs (x 7-102, y 12-75, every slice)
    on its own grid: a partial field of view on which the default model's networks run one batch of two
    windows (the whole slice takes three batches)."""
    return sub_volume(REAL_MR, slice(None), slice(12, 76), slice(7, 103))


def real_ct_organ_slab():
    """The real training CT's 52 slices that hold its four organs (z 60-111 of 112, whole slices) on its own
    grid: the default model runs on it in about half the time of the whole scan."""
    return sub_volume(REAL_CT, slice(60, None), slice(None), slice(None))


def with_inference(bundle: Path, tmp_path: Path, key: str, value) -> Path:
    """A copy of the folder ``bundle`` whose metadata's ``inference`` block has ``key`` set to ``value``."""
    import shutil

    copy = tmp_path / f"{key}-{abs(hash(str(value)))}"
    shutil.copytree(bundle, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    meta["inference"][key] = value
    (copy / "metadata.json").write_text(json.dumps(meta))
    return copy


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path
