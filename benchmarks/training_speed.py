"""Seconds per training step of every registered method relative to ``joint``, and peak memory.

    python benchmarks/training_speed.py                      # every method, 3 timed steps, 2 rounds
    python benchmarks/training_speed.py --device cuda        # the same on a GPU
    python benchmarks/training_speed.py --quick --methods joint ummkd   # a tiny run (used by the tests)

Setting (the same for every method): phantom data written once (3 CT and 3 MR patients; 2 labelled
per modality, the third unlabelled, which only the semi-supervised methods see), 3 mm voxels,
patch 32 x 64 x 64 (z y x), 2 patches per modality a step, no augmentation, the engine's AdamW
and AMP setting. Each method trains its own network at the same widths, taken from
``Method.reference_network(features)`` (the U-Net 8-16-32-64 for the U-Net methods; LSSC: the
Transformer U-Net of the same stage widths; CMC: its two-encoder network); MulModSeg uses one-hot
class embeddings (no text encoder: the embedding is frozen and does not change the step's cost).

Each method is measured in its own child process, forked from a fresh interpreter once the
libraries are imported (start-up is shared; that interpreter never runs PyTorch itself, so every
child starts with an unused thread pool), and each child's peak resident set size comes from ``wait4``. The child builds
the ``Trainer``, draws the batches of every step beforehand (so sampling is not timed), checks that
its labelled batches are the same as every other method's (a checksum), runs one warm-up step, then
times ``Trainer.train_step`` (forward, losses, backward, optimiser step, scheduler step; an
alternating method's two optimiser steps count as one step). The methods run in ``rounds`` rounds,
the order reversed each round so that a drift in machine load is shared; a method's figure is the
median over all its timed steps, and its ratio is that median over ``joint``'s. On CUDA the timings
synchronise the GPU, and the largest CUDA allocation of each child is reported as well.
Results: ``benchmarks/results/training_speed*.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_files import save_results  # noqa: E402

REFERENCE = "joint"
COMMAND = "python benchmarks/training_speed.py"
FULL = {"features": [8, 16, 32, 64], "patch_size": [32, 64, 64], "spacing": [3.0, 3.0, 3.0], "steps": 3, "rounds": 2, "cases": 3}
QUICK = {"features": [4, 8, 16, 32], "patch_size": [16, 32, 32], "spacing": [6.0, 6.0, 6.0], "steps": 1, "rounds": 1, "cases": 2}
METHOD_PARAMS = {"mulmodseg": {"embedding": "onehot"}}


def registered_methods() -> list[str]:
    """Every method in the registry, ``joint`` first (the reference)."""
    from MultiModalSegLib.methods import METHODS

    return sorted(METHODS, key=lambda name: (name != REFERENCE, name))


def method_config(name: str, setting: dict, dataset: Path, device: str, threads: int) -> dict:
    from MultiModalSegLib.methods import get_method

    n_labelled = setting["cases"] - 1
    return {
        "name": f"speed-{name}",
        "method": name,
        "method_params": METHOD_PARAMS.get(name, {}),
        "network": get_method(name).reference_network(setting["features"]),
        "datasets": [str(dataset)],
        "few_shot": {"CT": n_labelled, "MR": n_labelled},
        "spacing": setting["spacing"],
        "patch_size": setting["patch_size"],
        "batch_size": 2,
        "augment": False,
        "steps": 1000,
        "validate_every": 10**6,
        "checkpoint_every": 10**6,
        "device": device,
        "threads": threads,
        "schedule": {"name": "cosine", "warmup_steps": 0},
    }


def _checksum(batches: list[dict]) -> str:
    """A fingerprint (sha256) of the labelled batches: images and labels of every step, in order."""
    digest = hashlib.sha256()
    for step in batches:
        for key in sorted(k for k in step if ":" not in k):  # "<modality>:unlabelled" batches are method-specific
            for name in sorted(step[key]):
                digest.update(f"{key}/{name}".encode())
                digest.update(step[key][name].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def measure_method(name: str, setting: dict, dataset: Path, run_dir: Path, device: str, threads: int) -> dict:
    """In this (child) process: build the method's Trainer and time its steps."""
    import torch

    from MultiModalSegLib.training import Trainer
    from MultiModalSegLib.training.config import config_from_dict

    trainer = Trainer(config_from_dict(method_config(name, setting, dataset, device, threads)), run_dir, quiet=True)
    trainer.build()
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    warmup, steps = 1, setting["steps"]
    batches = [trainer.batches(s) for s in range(warmup + steps)]
    trainer.batches = lambda step: batches[step]  # the same batches, drawn before timing
    trainer.train_step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = [], []
    for _ in range(steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        losses = trainer.train_step()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "step_seconds": [round(t, 4) for t in wall],
        "step_cpu_seconds": [round(t, 4) for t in cpu],
        "loss": round(losses["loss"], 4),
        "batch_keys": sorted(batches[0]),
        "labelled_checksum": _checksum(batches),
        "parameters": sum(p.numel() for p in trainer.method.parameters()),
        "device": str(trainer.device),
        "torch_threads": torch.get_num_threads(),
        "cuda_max_allocated_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 3) if cuda else None,
    }


def fork_measure(name: str, setting: dict, dataset: Path, run_dir: Path, device: str, threads: int) -> tuple[dict, float]:
    """``measure_method`` in a forked child; returns its record and its peak RSS in GB (``wait4``)."""
    result = run_dir.with_suffix(".json")
    pid = os.fork()
    if pid == 0:  # the child: measure, write the record, leave without running the parent's clean-up
        code = 0
        try:
            result.write_text(json.dumps(measure_method(name, setting, dataset, run_dir, device, threads)))
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"measuring method {name!r} failed (see the traceback above).")
    return json.loads(result.read_text()), usage.ru_maxrss / 1024**2  # Linux reports kilobytes


def markdown(record: dict) -> str:
    s = record["setting"]
    lines = [
        f"| method | parameters | s / step (median) | relative to {REFERENCE} | CPU s / step | CPU relative to {REFERENCE} | peak RSS (GB) |"
        + (" CUDA max allocated (GB) |" if record["device"] == "cuda" else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if record["device"] == "cuda" else ""),
    ]
    for m in record["methods"]:
        row = (
            f"| {m['method']} | {m['parameters']:,} | {m['median_step_s']:.3f} | {m['relative_to_joint']:.2f}x | "
            f"{m['median_step_cpu_s']:.3f} | {m['relative_cpu_to_joint']:.2f}x | {m['peak_rss_gb']:.2f} |"
        )
        if record["device"] == "cuda":
            row += f" {m['cuda_max_allocated_gb']:.2f} |"
        lines.append(row)
    lines.append("")
    lines.append(
        f"Device {record['device']} ({record['machine']}, {record['torch_threads']} PyTorch threads); features "
        f"{'-'.join(map(str, s['features']))}, patch {'x'.join(map(str, s['patch_size']))} (z y x) at "
        f"{s['spacing'][0]:g} mm, 2 patches per modality a step; median of {s['steps'] * s['rounds']} timed steps "
        f"({s['rounds']} rounds of {s['steps']}). Regenerate: `{record['command']}`."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="seconds per training step of every method relative to joint, and peak memory")
    p.add_argument("--quick", action="store_true", help="tiny network and patch, one timed step, one round")
    p.add_argument("--methods", nargs="+", help=f"methods to measure (default: every registered one; {REFERENCE} is always added)")
    p.add_argument("--steps", type=int, help="timed steps per method and round")
    p.add_argument("--rounds", type=int, help="rounds over the methods (order reversed each round)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads (0: PyTorch's default)")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.fresh:
        # PyTorch's CPU thread pool does not survive a fork once it has run: fork the children from
        # a fresh interpreter that imports the libraries but never computes with them itself
        argv = sys.argv[1:] if argv is None else list(argv)
        return subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--fresh"], env={**os.environ, "PYTHONPATH": str(REPO)}).returncode

    from MultiModalSegLib.data.phantoms import write_phantom_dataset
    from MultiModalSegLib.device import resolve_device
    from MultiModalSegLib.methods import get_method
    from MultiModalSegLib.training import Trainer  # noqa: F401  (imported once, before the children fork)

    setting = dict(QUICK if args.quick else FULL)
    setting["steps"] = args.steps or setting["steps"]
    setting["rounds"] = args.rounds or setting["rounds"]
    device = resolve_device(args.device).type
    methods = registered_methods() if not args.methods else [REFERENCE] + [get_method(m).name for m in args.methods if m != REFERENCE]
    per_method: dict[str, list[tuple[dict, float]]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "phantoms"
        write_phantom_dataset(data, setting["cases"], setting["cases"], seed=3)
        for r in range(setting["rounds"]):
            for name in methods if r % 2 == 0 else methods[::-1]:
                rec, peak = fork_measure(name, setting, data / "dataset.json", Path(tmp) / f"{name}_{r}", device, args.threads)
                per_method[name].append((rec, peak))
                print(f"round {r + 1}: {name}: {statistics.median(rec['step_seconds']):.3f} s/step, peak RSS {peak:.2f} GB", flush=True)

    checksums = {name: {rec["labelled_checksum"] for rec, _ in runs} for name, runs in per_method.items()}
    same_batches = len(set().union(*checksums.values())) == 1
    rows = []
    for name, runs in per_method.items():
        steps = [t for rec, _ in runs for t in rec["step_seconds"]]
        cpu = [t for rec, _ in runs for t in rec["step_cpu_seconds"]]
        first = runs[0][0]
        rows.append(
            {
                "method": name,
                "parameters": first["parameters"],
                "network": get_method(name).reference_network(setting["features"])["name"],
                "batch_keys": first["batch_keys"],
                "step_seconds": steps,
                "step_cpu_seconds": cpu,
                "median_step_s": round(statistics.median(steps), 4),
                "median_step_cpu_s": round(statistics.median(cpu), 4),
                "peak_rss_gb": round(max(peak for _, peak in runs), 3),
                "cuda_max_allocated_gb": max((rec["cuda_max_allocated_gb"] or 0.0) for rec, _ in runs) if device == "cuda" else None,
                "last_loss": first["loss"],
            }
        )
    reference = next(r for r in rows if r["method"] == REFERENCE)
    for row in rows:
        row["relative_to_joint"] = round(row["median_step_s"] / reference["median_step_s"], 4)
        row["relative_cpu_to_joint"] = round(row["median_step_cpu_s"] / reference["median_step_cpu_s"], 4)
    first = per_method[REFERENCE][0][0]
    record = {
        "benchmark": "training_speed",
        "command": COMMAND + (" --quick" if args.quick else "") + (f" --device {args.device}" if args.device != "auto" else "")
        + (f" --threads {args.threads}" if args.threads else ""),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "device": device,
        "torch_threads": first["torch_threads"],
        "setting": {**setting, "batch_per_modality": 2, "method_params": METHOD_PARAMS},
        "timing": "median over rounds x steps of Trainer.train_step after one warm-up step; batches drawn before timing",
        "same_labelled_batches": same_batches,
        "reference": REFERENCE,
        "methods": rows,
    }
    stem = "training_speed" + ("_quick" if args.quick else "") + ("" if device == "cpu" else f"_{device}")
    md = markdown(record)
    save_results(args.results, stem, record, md)
    print(md)
    if not same_batches:
        print(f"the methods did not get the same labelled batches: {checksums}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
