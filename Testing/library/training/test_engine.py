import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_config, write_json

from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.modalities import MODALITIES, ModalityProfile
from MultiModalSegLib.training import Trainer, load_config
from MultiModalSegLib.training.config import config_from_dict
from MultiModalSegLib.training.progress import read_progress


def step_losses(run_dir):
    return {r["step"]: r["losses"]["loss"] for r in read_progress(run_dir / "progress.jsonl") if r["event"] == "step"}


@pytest.mark.slow
def test_training_lowers_the_loss(phantom_dir, tmp_path):
    cfg = config_from_dict(tiny_config(phantom_dir, steps=40, checkpoint_every=100, lr=0.01))
    Trainer(cfg, tmp_path, quiet=True).run()
    losses = step_losses(tmp_path)
    first = np.mean([losses[s] for s in range(1, 6)])
    last = np.mean([losses[s] for s in range(36, 41)])
    assert last < 0.85 * first, (first, last)


@pytest.mark.parametrize("cpu_bfloat16", [False, True])
def test_resume_gives_the_same_next_step_as_an_uninterrupted_run(phantom_dir, tmp_path, cpu_bfloat16):
    """Also under bfloat16 autocast (where the processor computes it; float32 elsewhere)."""
    cfg = config_from_dict(tiny_config(phantom_dir, augment=True, cpu_bfloat16=cpu_bfloat16))
    straight = Trainer(cfg, tmp_path / "straight", quiet=True)
    straight.build()
    expected = [straight.train_step()["loss"] for _ in range(5)]

    first = Trainer(cfg, tmp_path / "resumed", quiet=True)
    first.build()
    for _ in range(3):
        first.train_step()
    first.checkpoint()
    del first

    second = Trainer(cfg, tmp_path / "resumed", quiet=True)
    second.build()
    assert second.step == 3
    resumed = [second.train_step()["loss"] for _ in range(2)]
    np.testing.assert_allclose(resumed, expected[3:], rtol=1e-5, atol=1e-6)


def test_a_run_begun_with_amp_off_resumes_with_amp_on(phantom_dir, tmp_path, monkeypatch):
    """A CPU checkpoint holds no scaler state; where AMP comes on (a GPU) the run resumes with a new
    scaler and says so. Here an enabled CPU scaler stands for the GPU's."""
    import MultiModalSegLib.training.engine as engine

    cfg = config_from_dict(tiny_config(phantom_dir, steps=3))
    Trainer(cfg, tmp_path, quiet=True).run()
    monkeypatch.setattr(engine, "grad_scaler", lambda device, amp=True: torch.amp.GradScaler("cpu", enabled=True))
    longer = config_from_dict(tiny_config(phantom_dir, steps=4))
    assert Trainer(longer, tmp_path, quiet=True).run().status == "done"
    starts = [r for r in read_progress(tmp_path / "progress.jsonl") if r["event"] == "start"]
    assert [s["step"] for s in starts] == [0, 3]
    assert "amp_scaler" not in starts[0] and starts[1]["amp_scaler"].startswith("new")


@pytest.mark.slow
def test_resume_refuses_a_different_configuration(phantom_dir, tmp_path):
    Trainer(config_from_dict(tiny_config(phantom_dir, steps=3)), tmp_path, quiet=True).run()
    other = config_from_dict(tiny_config(phantom_dir, steps=3, lr=0.5))
    with pytest.raises(ConfigError, match="different configuration"):
        Trainer(other, tmp_path, quiet=True).build()


def test_resume_refuses_a_changed_intensity_profile(phantom_dir, tmp_path, monkeypatch):
    """A run normalises with the profiles of the library that began it; a changed default profile (or
    a checkpoint from before runs recorded them) is refused rather than changing the run halfway."""
    cfg = config_from_dict(tiny_config(phantom_dir, steps=2))
    Trainer(cfg, tmp_path, quiet=True).run()
    ckpt = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=False)
    assert "intensity_profiles" in state["identity"] and "'foreground': 'all'" in state["identity"]
    legacy = ModalityProfile("MR", "percentile", {"low_percentile": 0.5, "high_percentile": 99.5})
    monkeypatch.setitem(MODALITIES, "MR", legacy)
    with pytest.raises(ConfigError, match="different configuration"):
        Trainer(cfg, tmp_path, quiet=True).build()
    monkeypatch.undo()
    state["identity"] = repr(sorted(cfg.identity().items()))  # as checkpoints were written before
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="before runs recorded their intensity profiles"):
        Trainer(cfg, tmp_path, quiet=True).build()


def test_a_pin_of_the_profile_a_run_used_still_resumes_it(phantom_dir, tmp_path):
    """A recipe that later pins ``intensity_profiles`` to the profile its run normalised with names
    the same run: its checkpoint (identity written without the pin, with or without recorded
    profiles) resumes. A pin of another profile than the run's is still refused."""
    former = {"MR": {"foreground": "above_mean"}}
    pinned = config_from_dict(tiny_config(phantom_dir, steps=2, intensity_profiles=former))
    unpinned = config_from_dict(tiny_config(phantom_dir, steps=2))
    Trainer(pinned, tmp_path, quiet=True).run()
    ckpt = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=False)
    profiles = {m: p.to_dict()["params"] for m, p in Trainer(pinned, tmp_path / "x", quiet=True).profiles.items()}
    assert profiles["MR"]["foreground"] == "above_mean"
    unpinned_items = sorted(unpinned.identity().items())
    longer = config_from_dict(tiny_config(phantom_dir, steps=3, intensity_profiles=former))
    for written in (repr([*unpinned_items, ("intensity_profiles", profiles)]), repr(unpinned_items)):
        state["identity"] = written
        torch.save(state, ckpt)
        resumed = Trainer(longer, tmp_path, quiet=True)
        resumed.build()
        assert resumed.step == 2
    # the run recorded other profiles than the pin names: a different recipe
    state["identity"] = Trainer(unpinned, tmp_path / "y", quiet=True)._identity()
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="different configuration"):
        Trainer(longer, tmp_path, quiet=True).build()
    # from before runs recorded profiles, pinned to the profile of today's library, not the one then used
    today = config_from_dict(tiny_config(phantom_dir, steps=3, intensity_profiles={"MR": {"foreground": "all"}}))
    state["identity"] = repr(sorted(unpinned.identity().items()))
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="different configuration"):
        Trainer(today, tmp_path, quiet=True).build()


@pytest.mark.parametrize(("asked", "native", "computed"), [(True, True, torch.bfloat16), (True, False, torch.float32),
                                                          (False, True, torch.float32)])
def test_cpu_bfloat16_trains_under_bfloat16_autocast_where_the_processor_computes_it(
        phantom_dir, tmp_path, monkeypatch, asked, native, computed):
    """The network's convolutions run in bfloat16 when the recipe asks and the processor computes it
    natively (patched here either way); the start event says what the steps computed in."""
    import MultiModalSegLib.device as device
    import MultiModalSegLib.training.engine as engine

    monkeypatch.setattr(device, "cpu_bfloat16_native", lambda: native)
    monkeypatch.setattr(engine, "cpu_bfloat16_native", lambda: native)
    cfg = config_from_dict(tiny_config(phantom_dir, steps=1, amp=False, cpu_bfloat16=asked))
    trainer = Trainer(cfg, tmp_path, quiet=True)
    trainer.build()
    dtypes = []
    convs = [m for m in trainer.method.modules() if isinstance(m, torch.nn.Conv3d)]
    handle = convs[0].register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    trainer.train_step()
    handle.remove()
    assert dtypes and set(dtypes) == {computed}
    assert all(p.dtype == torch.float32 for p in trainer.method.parameters())  # the weights stay float32
    trainer.run()
    [start] = [r for r in read_progress(tmp_path / "progress.jsonl") if r["event"] == "start"]
    assert start["precision"] == ("bfloat16 (CPU autocast)" if computed == torch.bfloat16 else "float32")


def test_a_run_resumed_in_another_precision_says_so(phantom_dir, tmp_path, monkeypatch):
    """A run begun in bfloat16 (a processor that computes it, patched here) and resumed on one that does
    not computes in float32 from then on: the person is told, and the start event records both."""
    import io

    import MultiModalSegLib.device as device
    import MultiModalSegLib.training.engine as engine
    from MultiModalSegLib.reporting import Reporter

    for module in (device, engine):
        monkeypatch.setattr(module, "cpu_bfloat16_native", lambda: True)
    Trainer(config_from_dict(tiny_config(phantom_dir, steps=1, amp=False, cpu_bfloat16=True)), tmp_path, quiet=True).run()
    for module in (device, engine):
        monkeypatch.setattr(module, "cpu_bfloat16_native", lambda: False)
    longer = config_from_dict(tiny_config(phantom_dir, steps=2, amp=False, cpu_bfloat16=True))
    said = io.StringIO()
    Trainer(longer, tmp_path, reporter=Reporter(err=said)).run()
    starts = [r for r in read_progress(tmp_path / "progress.jsonl") if r["event"] == "start"]
    assert [s["precision"] for s in starts] == ["bfloat16 (CPU autocast)", "float32"]
    assert "precision_before" not in starts[0] and starts[1]["precision_before"] == "bfloat16 (CPU autocast)"
    assert "last session computed in bfloat16 (CPU autocast); this one computes in float32" in said.getvalue()
    assert "steps from 1 on" in said.getvalue()

    quiet = io.StringIO()  # a third session in float32 again: nothing to say
    Trainer(config_from_dict(tiny_config(phantom_dir, steps=3, amp=False, cpu_bfloat16=True)), tmp_path,
            reporter=Reporter(err=quiet)).run()
    assert "computes in" not in quiet.getvalue()
    last = [r for r in read_progress(tmp_path / "progress.jsonl") if r["event"] == "start"][-1]
    assert last["step"] == 2 and "precision_before" not in last

    for module in (device, engine):  # a finished run begun again only exports its bundle: no step to warn about
        monkeypatch.setattr(module, "cpu_bfloat16_native", lambda: True)
    finished = io.StringIO()
    Trainer(config_from_dict(tiny_config(phantom_dir, steps=3, amp=False, cpu_bfloat16=True)), tmp_path,
            reporter=Reporter(err=finished)).run()
    assert "computes in" not in finished.getvalue()
    last = [r for r in read_progress(tmp_path / "progress.jsonl") if r["event"] == "start"][-1]
    assert last["step"] == 3 and "precision_before" not in last


def test_cpu_training_computes_channels_last_and_a_run_resumes_in_either_layout(phantom_dir, tmp_path):
    """On the CPU the 3D convolutions compute channels-last (``cpu_channels_last``, true by default) and each
    start event names the layout; a run begun in the default layout resumes channels-last, and its steps
    follow those of a run kept in one layout to float32 rounding (only the order of the sums differs). A
    batch-normalised network (UMMKD's default) keeps the default layout (``device.cpu_channels_last``)."""
    instance = {"network": {"name": "unet3d", "params": {"features": [4, 8, 16], "norm": "modality_instance"}}}
    trainer = Trainer(config_from_dict(tiny_config(phantom_dir, steps=1, **instance)), tmp_path / "layout", quiet=True)
    trainer.build()
    convs = [m for m in trainer.method.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last_3d) for c in convs)
    outputs = []
    handle = convs[1].register_forward_hook(lambda module, args, out: outputs.append(out))
    trainer.train_step()
    handle.remove()
    assert outputs[0].is_contiguous(memory_format=torch.channels_last_3d) and not outputs[0].is_contiguous()

    straight = tmp_path / "straight"
    Trainer(config_from_dict(tiny_config(phantom_dir, steps=4, cpu_channels_last=False, **instance)), straight, quiet=True).run()
    expected = step_losses(straight)
    [start] = [r for r in read_progress(straight / "progress.jsonl") if r["event"] == "start"]
    assert start["memory_format"] == "contiguous"
    resumed = tmp_path / "resumed"
    first = Trainer(config_from_dict(tiny_config(phantom_dir, steps=4, cpu_channels_last=False, **instance)), resumed, quiet=True)
    first.build()
    assert [first.train_step()["loss"] for _ in range(2)] == [expected[1], expected[2]]
    first.checkpoint()
    Trainer(config_from_dict(tiny_config(phantom_dir, steps=4, **instance)), resumed, quiet=True).run()
    [start] = [r for r in read_progress(resumed / "progress.jsonl") if r["event"] == "start"]
    assert (start["step"], start["memory_format"]) == (2, "channels_last")
    got = step_losses(resumed)
    assert sorted(got) == [3, 4]
    np.testing.assert_allclose([got[3], got[4]], [expected[3], expected[4]], rtol=1e-4)
    from MultiModalSegLib.bundle import load_bundle

    exported = load_bundle(resumed / "bundle")  # trained channels-last, saved in the default layout
    assert all(t.is_contiguous() for t in exported.state_dict.values())
    batch_norm = tmp_path / "batch_norm"
    Trainer(config_from_dict(tiny_config(phantom_dir, steps=1)), batch_norm, quiet=True).run()
    [start] = [r for r in read_progress(batch_norm / "progress.jsonl") if r["event"] == "start"]
    assert start["memory_format"] == "contiguous"
    with pytest.raises(ConfigError, match="cpu_channels_last"):
        config_from_dict(tiny_config(phantom_dir, cpu_channels_last="yes"))


def test_stop_file_ends_the_run_with_a_checkpoint(phantom_dir, tmp_path):
    cfg = config_from_dict(tiny_config(phantom_dir, steps=200, checkpoint_every=1000))
    trainer = Trainer(cfg, tmp_path, quiet=True)
    results = {}
    thread = threading.Thread(target=lambda: results.setdefault("r", trainer.run()))
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and not step_losses(tmp_path):
        time.sleep(0.2)
    (tmp_path / "STOP").touch()
    thread.join(120)
    result = results["r"]
    assert result.status == "stopped" and result.step < 200
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    events = [r["event"] for r in read_progress(tmp_path / "progress.jsonl")]
    assert events[-1] == "stopped"
    again = Trainer(cfg, tmp_path, quiet=True)
    again.build()
    assert again.step == result.step


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_same_command_resumes(phantom_dir, tmp_path):
    config = write_json(tmp_path / "cfg.json", tiny_config(phantom_dir, steps=400, checkpoint_every=1000))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "MultiModalSegLib", "train", "--config", str(config), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not step_losses(out):
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "resume" in stdout
    stopped = read_progress(out / "progress.jsonl")[-1]
    assert stopped["event"] == "stopped"
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == stopped["step"]
    done = subprocess.run([*cmd, "--steps", str(stopped["step"] + 2), "--progress"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])  # --progress: JSON lines, the result last
    assert result["event"] == "result" and result["step"] == stopped["step"] + 2


def test_validation_and_bundle_metadata(phantom_dir, tmp_path):
    cfg = config_from_dict(tiny_config(phantom_dir, steps=2, validate_every=2))
    result = Trainer(cfg, tmp_path, quiet=True).run()
    assert set(result.validation) == {"CT", "MR"}
    assert set(result.validation["CT"]) == {"liver", "spleen", "kidney_right", "kidney_left", "mean"}
    meta = json.loads((result.bundle / "metadata.json").read_text())
    assert meta["method"] == "ummkd" and meta["network"]["params"]["norm"] == "modality_batch"
    assert meta["training"]["steps"] == 2 and meta["metrics"]["validation_dice"]["MR"]
    [check] = [r for r in read_progress(tmp_path / "progress.jsonl") if r["event"] == "validation"]
    assert check["dice"] == result.validation  # the plain figure, as every earlier run logged it
    assert {m: set(d) for m, d in check["dice_largest_piece"].items()} == {m: set(d) for m, d in result.validation.items()}
    assert {m: set(d) for m, d in check["dice_as_delivered"].items()} == {m: set(d) for m, d in result.validation.items()}
    from MultiModalSegLib.inference.sliding_window import BUNDLE_WINDOWS

    assert {k: meta["inference"][k] for k in BUNDLE_WINDOWS} == BUNDLE_WINDOWS  # the windows its checks ran
    assert check["overlap"] == BUNDLE_WINDOWS["overlap"]  # recorded: runs before it checked at overlap 0.25


def test_a_recipe_normalisation_ensemble_validates_and_exports_as_its_bundle_segments(phantom_dir, tmp_path):
    """The MR validation case carries the ensemble's further passes (CT none), the bundle records the ensemble and the
    Segmenter takes it up; being inference only, it may be added to a run when resumed, and a malformed one is refused."""
    plain = config_from_dict(tiny_config(phantom_dir, steps=2))
    Trainer(plain, tmp_path, quiet=True).run()
    ensemble = config_from_dict(tiny_config(phantom_dir, steps=3, validate_every=3, normalisation_ensemble={"MR": [0, 0.5, 1]}))
    trainer = Trainer(ensemble, tmp_path, quiet=True)
    result = trainer.run()
    assert result.step == 3  # resumed from step 2: the same run
    assert {c.modality: len(c.passes) for c in trainer.val_cases} == {"CT": 0, "MR": 2}
    meta = json.loads((result.bundle / "metadata.json").read_text())
    assert meta["inference"]["normalisation_ensemble"] == {"MR": [0.0, 0.5, 1.0]}
    from MultiModalSegLib.inference.segmenter import Segmenter

    assert Segmenter(result.bundle, device="cpu").normalisation_ensemble == {"MR": (0.0, 0.5, 1.0)}
    with pytest.raises(ConfigError, match="does not depend on the image"):
        config_from_dict(tiny_config(phantom_dir, normalisation_ensemble={"CT": [0, 1]}))


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="unknown config keys"):
        config_from_dict({"phantoms": {"ct": 1}, "stepz": 3})
    with pytest.raises(ConfigError, match="names no data"):
        config_from_dict({})


def test_a_label_on_another_grid_than_its_image_is_refused(phantom_dir, tmp_path):
    import SimpleITK as sitk

    from MultiModalSegLib.errors import InputError

    data = json.loads((phantom_dir / "dataset.json").read_text())
    case = data["training"][0]
    label = sitk.ReadImage(str(phantom_dir / case["label"]))
    label.SetSpacing([s * 1.5 for s in label.GetSpacing()])
    sitk.WriteImage(label, str(tmp_path / "shifted.nii.gz"))
    case = {**case, "image": str(phantom_dir / case["image"]), "label": str(tmp_path / "shifted.nii.gz")}
    write_json(tmp_path / "dataset.json", {**data, "training": [case], "validation": []})
    cfg = config_from_dict(tiny_config(tmp_path, modalities=[case["modality"]]))
    with pytest.raises(InputError, match="shifted.nii.gz"):
        Trainer(cfg, tmp_path / "run", quiet=True).build()


def test_a_recipe_with_network_members_trains_them_together_into_an_ensemble_bundle(phantom_dir, tmp_path):
    """``network.members`` 2: two networks trained through their mean probabilities; the run's bundle and its
    last step's are ensembles whose member records match their weights (loading checks them), and the
    ensemble segments as a bundle does."""
    from MultiModalSegLib.bundle import load_bundle, member_state
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image

    network = {"name": "unet3d", "params": {"features": [4, 8, 16], "norm": "modality_instance"}, "members": 2}
    cfg = config_from_dict(tiny_config(phantom_dir, steps=4, network=network, weight_average={"start": 2, "every": 2}))
    result = Trainer(cfg, tmp_path, quiet=True).run()
    for folder in ("bundle", "bundle_last_step"):
        bundle = load_bundle(tmp_path / folder)
        assert [m["name"] for m in bundle.metadata["members"]] == [f"{bundle.name}-member-1", f"{bundle.name}-member-2"]
        assert "members" not in bundle.metadata["network"]  # the members' architecture, as a combined bundle stores it
        first, second = member_state(bundle.state_dict, 0), member_state(bundle.state_dict, 1)
        assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())
    assert load_bundle(result.bundle).metadata["training"]["config"]["network"]["members"] == 2
    case = json.loads((phantom_dir / "dataset.json").read_text())["training"][0]
    labels = Segmenter(result.bundle, device="cpu").segment(read_image(phantom_dir / case["image"]), case["modality"]).labels
    assert labels.array.shape == read_image(phantom_dir / case["image"]).array.shape


@pytest.mark.parametrize("members", [0, 1.5, "2", True])
def test_network_members_must_be_a_whole_number(phantom_dir, members):
    network = {"name": "unet3d", "params": {"features": [4, 8, 16]}, "members": members}
    with pytest.raises(ConfigError, match=r"network \"members\": .*give a whole number"):
        config_from_dict(tiny_config(phantom_dir, network=network))
