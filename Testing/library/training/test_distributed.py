"""DDP training with two CPU processes (gloo) against one process on the same global batch.

The two ranks are forked from the test process (so they skip the imports) and find each other as
``torchrun`` workers do, through RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in their
environment. BatchNorm choice: the test
config keeps UMMKD's per-modality BatchNorm, which DDP on CPUs computes per rank (SyncBatchNorm
needs GPUs). So the exact reference is one process that runs ``training_step`` on each rank's
shard and averages (what DDP's gradient averaging computes); the plain one-process run on the
whole batch differs by per-rank BatchNorm statistics and batch Dice, and is compared loosely.
"""

import json
import multiprocessing
import os
import signal
import socket
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from MultiModalSegLib.errors import ConfigError
from MultiModalSegLib.training import Trainer, distributed, engine
from MultiModalSegLib.training.config import config_from_dict
from MultiModalSegLib.training.progress import read_progress

STEPS, STOP_AFTER = 4, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShardMeanTrainer(Trainer):
    """One process computing what two DDP ranks compute: the mean of the losses (so of the
    gradients) of ``training_step`` on items 0::2 and 1::2 of the global batch."""

    def _optimiser_step(self, batches):
        self.optimizer.zero_grad(set_to_none=True)
        parts = [self.method.training_step({k: {n: t[r::2] for n, t in b.items()} for k, b in batches.items()}) for r in range(2)]
        loss = (parts[0]["loss"] + parts[1]["loss"]) / 2
        loss.backward()
        self.optimizer.step()
        return {k: float((parts[0][k] + parts[1][k]).detach()) / 2 for k in parts[0]}


def step_losses(run_dir: Path) -> dict[int, dict[str, float]]:
    return {r["step"]: r["losses"] for r in read_progress(run_dir / "progress.jsonl") if r["event"] == "step"}


def reference(trainer: Trainer) -> dict[int, dict[str, float]]:
    trainer.build()
    return {s + 1: trainer.train_step() for s in range(STEPS)}


def worker(rank: int, port: int, raw: dict, run_dir: Path, report: Path) -> None:
    """One rank: trains until rank 1 sends itself SIGTERM after step STOP_AFTER (every rank must
    stop after that step), then runs the same configuration again, which resumes from rank 0's
    checkpoint and finishes. Reports each phase and which files this rank wrote."""
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        writes: list[str] = []
        save_checkpoint, save_bundle = engine.save_checkpoint, engine.save_bundle
        engine.save_checkpoint = lambda *a, **k: (writes.append("checkpoint"), save_checkpoint(*a, **k))[1]
        engine.save_bundle = lambda *a, **k: (writes.append("bundle"), save_bundle(*a, **k))[1]
        cfg = config_from_dict(raw)
        first = Trainer(cfg, run_dir, quiet=True)
        step = first.train_step

        def step_then_signal(*batches):  # the run passes the step's batches, made ahead or not
            losses = step(*batches)
            if rank == 1 and first.step == STOP_AFTER:
                os.kill(os.getpid(), signal.SIGTERM)
            return losses

        first.train_step = step_then_signal
        stopped = first.run()
        second = Trainer(cfg, run_dir, quiet=True)
        second.build()
        resumed_from = second.step
        done = second.run()
        out = {
            "world": distributed.world_size(),
            "device": str(second.device),
            "find_unused_parameters": second.find_unused_parameters,
            "first": {"status": stopped.status, "step": stopped.step},
            "resumed_from": resumed_from,
            "second": {"status": done.status, "step": done.step, "losses": done.last_losses},
            "writes": writes,
        }
        distributed.teardown()
    except BaseException:  # noqa: BLE001 - the test shows the rank's traceback
        out = {"error": traceback.format_exc()}
    report.write_text(json.dumps(out))


@pytest.fixture(scope="module")
def ddp_run(phantom_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    raw = tiny_config(phantom_dir, steps=STEPS, checkpoint_every=100, batch_size=4, threads=1)
    port, fork = free_port(), multiprocessing.get_context("fork")
    procs = [fork.Process(target=worker, args=(r, port, raw, tmp / "run", tmp / f"rank{r}.json")) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    reports = [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]
    assert not any("error" in rep for rep in reports), [rep.get("error") for rep in reports]
    assert [p.exitcode for p in procs] == [0, 0]
    return raw, tmp / "run", reports


def test_two_processes_match_one_process_on_the_same_global_batch(ddp_run, tmp_path):
    raw, run_dir, reports = ddp_run
    logged = step_losses(run_dir)
    assert sorted(logged) == list(range(1, STEPS + 1))  # steps 1-3 before the stop, 4-6 after the resume
    exact = reference(ShardMeanTrainer(config_from_dict(raw), tmp_path / "shard_mean", quiet=True))
    plain = reference(Trainer(config_from_dict(raw), tmp_path / "plain", quiet=True))
    for s in range(1, STEPS + 1):
        for key in ("loss", "seg_CT", "seg_MR"):
            np.testing.assert_allclose(logged[s][key], exact[s][key], rtol=1e-4, err_msg=f"step {s} {key}")
            np.testing.assert_allclose(logged[s][key], plain[s][key], rtol=0.03, err_msg=f"step {s} {key}")
    # the losses each rank returns are the mean over the ranks: the same on both
    assert reports[0]["second"]["losses"] == pytest.approx(reports[1]["second"]["losses"])
    assert reports[0]["second"]["losses"]["loss"] == pytest.approx(logged[STEPS]["loss"])


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step_and_both_resume(ddp_run):
    _, run_dir, reports = ddp_run
    for rep in reports:
        assert rep["world"] == 2 and rep["device"] == "cpu"
        assert rep["first"] == {"status": "stopped", "step": STOP_AFTER}
        assert rep["resumed_from"] == STOP_AFTER
        assert rep["second"]["status"] == "done" and rep["second"]["step"] == STEPS
    events = [r["event"] for r in read_progress(run_dir / "progress.jsonl")]
    assert events.count("stopped") == 1 and events.count("start") == 2 and events[-1] == "done"
    assert [r["processes"] for r in read_progress(run_dir / "progress.jsonl") if r["event"] == "start"] == [2, 2]


def test_only_rank_zero_writes_files(ddp_run):
    _, run_dir, reports = ddp_run
    assert reports[0]["writes"] == ["checkpoint", "checkpoint", "bundle"]  # at the stop, at the end, the bundle
    assert reports[1]["writes"] == []
    assert (run_dir / "bundle" / "metadata.json").exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["bundle", "checkpoints", "progress.jsonl"]


def test_joint_steps_of_ummkd_need_no_unused_parameter_search(ddp_run):
    _, _, reports = ddp_run
    assert [r["find_unused_parameters"] for r in reports] == [False, False]


def test_without_a_launcher_there_is_one_process():
    assert distributed.launch_info() is None
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.any_rank(True, torch.device("cpu")) is True
    assert distributed.mean_over_ranks({"loss": 2.0}, torch.device("cpu")) == {"loss": 2.0}


def test_launch_environment_is_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launch_info() == distributed.LaunchInfo(3, 4, 1)
    assert distributed.shard_index(10) == [3, 7]
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4"):
        distributed.launch_info()


def test_shards_cover_the_global_batch_once():
    batch = {"image": torch.arange(6).view(6, 1), "label": torch.arange(6).view(6, 1) * 10}
    parts = [distributed.shard(batch, r, 3) for r in range(3)]
    assert sorted(int(i) for p in parts for i in p["image"].flatten()) == list(range(6))
    assert all(torch.equal(p["label"], p["image"] * 10) for p in parts)
    with pytest.raises(ConfigError, match="multiple of 4"):
        distributed.check_batch_size(6, 4)


def test_sync_batchnorm_keeps_the_tensors_and_the_state_dict_keys(phantom_dir, tmp_path):
    trainer = Trainer(config_from_dict(tiny_config(phantom_dir)), tmp_path, quiet=True)
    trainer.build()
    method = trainer.method
    params = {n: id(p) for n, p in method.named_parameters()}
    keys = list(method.state_dict())
    batchnorms = [n for n, m in method.named_modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert batchnorms  # UMMKD: one BatchNorm set per modality inside ModalityNorm layers
    assert distributed.sync_batchnorm(method) is method
    assert all(isinstance(method.get_submodule(n), torch.nn.SyncBatchNorm) for n in batchnorms)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in method.modules())
    # the optimiser's tensors are the model's tensors, and a plain network loads the state dict
    assert {n: id(p) for n, p in method.named_parameters()} == params and list(method.state_dict()) == keys
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert set(params.values()) <= optimised
    plain = type(method).build_inference_network(method.network_spec, method.modalities)
    plain.load_state_dict(method.inference_network().state_dict())


LSSC_TINY = {"network": {"name": "transformer_unet3d", "params": {"embed_dim": 8, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2],
             "window": 2, "patch": [2, 4, 4]}}, "method_params": {"eam_heads": 2}}  # fmt: skip


@pytest.mark.parametrize(("method", "overrides"), [("ummkd", {}), ("lssc", LSSC_TINY)])
def test_unused_parameter_probe_matches_a_plain_backward_and_leaves_no_trace(method, overrides, phantom_dir, tmp_path):
    trainer = Trainer(config_from_dict(tiny_config(phantom_dir, method=method, **overrides)), tmp_path, quiet=True)
    trainer.build()
    trainer.method.train()
    batches = trainer.batches(0)
    state = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    rng = torch.get_rng_state()
    unused = trainer.unused_parameters([batches])
    assert all(torch.equal(v, state[k]) for k, v in trainer.method.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in trainer.method.parameters())
    trainer.method.training_step(batches)["loss"].backward()
    assert unused == {n for n, p in trainer.method.named_parameters() if p.requires_grad and p.grad is None}
    assert bool(unused) == (method == "lssc"), sorted(unused)[:5]
