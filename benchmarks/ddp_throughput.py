"""Training throughput of one process against two DDP processes (gloo, CPU) on the same global batch.

    python benchmarks/ddp_throughput.py            # 3 repeats, 12 timed steps each, results in benchmarks/results/
    python benchmarks/ddp_throughput.py --quick --out /tmp/ddp   # seconds; what the test runs

Both settings train the same configuration (UMMKD, a small U-Net, phantoms) with the same global
batch: one process draws and trains the whole batch; two processes each train half of it behind
DistributedDataParallel and average gradients (see ``MultiModalSegLib/training/distributed.py``).
Every process gets the same number of threads (``--threads-per-process``, default 1), as every DDP
worker gets its own GPU: the question is what a second worker adds. (One process with two threads
is no fair baseline on a loaded machine: OpenMP threads that wait for a busy core stall the step.)
Every measurement runs in processes forked from this one (the imports are done once) that find each
other through the environment ``torchrun`` would set. Steps are timed after warm-up steps, between
barriers, so start-up is excluded. The two settings alternate (1, 2, 1, 2, ...) to spread any drift
in the machine's load evenly; the reported ratio is the median over repeats of
(samples/s with 2 processes) / (samples/s with 1 process), measured in this one run.
A sample is one patch of one modality (a step trains ``batch_size`` CT and ``batch_size`` MR patches).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.results_files import save_results  # noqa: E402
from MultiModalSegLib.data.phantoms import write_phantom_dataset  # noqa: E402
from MultiModalSegLib.training import Trainer, distributed  # noqa: E402
from MultiModalSegLib.training.config import config_from_dict  # noqa: E402

JOIN_SECONDS = 1800  # one measurement, every process together

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

SETTINGS = {
    # features, patch (z, y, x), global batch per modality, spacing, warm-up steps, timed steps, repeats, phantoms per modality
    "full": {"features": [8, 16, 32], "patch": [32, 48, 48], "batch": 4, "spacing": 5.0, "warmup": 2, "steps": 12, "repeats": 3, "cases": 2},
    "quick": {"features": [4, 8], "patch": [16, 16, 16], "batch": 2, "spacing": 8.0, "warmup": 1, "steps": 2, "repeats": 1, "cases": 1},
}


def config(data: Path, s: dict, threads: int) -> dict:
    return {
        "name": "ddp-throughput",
        "method": "ummkd",
        "network": {"name": "unet3d", "params": {"features": s["features"]}},
        "datasets": [str(data / "dataset.json")],
        "spacing": [s["spacing"]] * 3,
        "patch_size": s["patch"],
        "batch_size": s["batch"],
        "augment": True,
        "steps": s["warmup"] + s["steps"],
        "validate_every": 10**6,
        "checkpoint_every": 10**6,
        "threads": threads,
        "device": "cpu",
        "schedule": {"name": "cosine", "warmup_steps": 0},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, world: int, port: int, raw: dict, run_dir: Path, warmup: int, report: Path) -> None:
    """One process of a measurement: build, warm up, time the steps between barriers."""
    for key in LAUNCH_VARIABLES:
        os.environ.pop(key, None)
    if world > 1:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        trainer = Trainer(config_from_dict(raw), run_dir, quiet=True, restart=True)
        trainer.build()
        for _ in range(warmup):
            trainer.train_step()
        distributed.barrier()
        t0 = time.perf_counter()
        while trainer.step < raw["steps"]:
            losses = trainer.train_step()
        distributed.barrier()
        seconds = time.perf_counter() - t0
        out = {"seconds": seconds, "last_loss": losses["loss"]}
        distributed.teardown()
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        out = {"error": f"{exc.__class__.__name__}: {exc}"}
    if rank == 0:
        report.write_text(json.dumps(out))
    # End the forked rank here, before the trainer's DistributedDataParallel and its gloo process group are
    # destroyed: PyTorch's gloo destructor joins its run-loop thread while holding the GIL, and a thread that
    # is still releasing a tensor waits for the GIL, so that teardown can hang for ever (seen in CI).
    os._exit(0)


def measure(world: int, raw: dict, work: Path, warmup: int) -> dict:
    """Samples per second of ``world`` processes training ``raw``."""
    fork = multiprocessing.get_context("fork")
    run_dir, report = work / f"run{world}", work / f"report{world}.json"
    report.unlink(missing_ok=True)
    port = free_port()
    procs = [fork.Process(target=_rank, args=(r, world, port, raw, run_dir, warmup, report)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_SECONDS
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    stuck = [p for p in procs if p.is_alive()]
    for p in stuck:  # a rank that never returns (e.g. a lost peer) must not hold the caller forever
        p.kill()
        p.join()
    if stuck:
        raise SystemExit(f"the {world}-process measurement did not finish within {JOIN_SECONDS} s; stopped it")
    if not report.exists():
        raise SystemExit(f"the {world}-process measurement wrote no report (exit codes {[p.exitcode for p in procs]})")
    result = json.loads(report.read_text())
    if "error" in result:
        raise SystemExit(f"the {world}-process measurement failed: {result['error']}")
    timed = raw["steps"] - warmup
    samples = timed * raw["batch_size"] * 2  # CT and MR patches per step
    return {
        "processes": world,
        "threads_per_process": raw["threads"],
        "timed_steps": timed,
        "seconds": round(result["seconds"], 6),
        "samples_per_s": round(samples / result["seconds"], 3),
        "last_loss": round(result["last_loss"], 5),
    }


def run(quick: bool, threads: int, out: Path) -> dict:
    s = SETTINGS["quick" if quick else "full"]
    if threads < 1:
        raise SystemExit(f"--threads-per-process must be at least 1, not {threads}")
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_phantom_dataset(work / "phantoms", s["cases"], s["cases"], seed=3)
        for repeat in range(s["repeats"]):
            one = measure(1, config(work / "phantoms", s, threads), work, s["warmup"])
            two = measure(2, config(work / "phantoms", s, threads), work, s["warmup"])
            ratio = two["samples_per_s"] / one["samples_per_s"]
            ratios.append(ratio)
            rows += [{"repeat": repeat, **one}, {"repeat": repeat, **two}]
            print(f"repeat {repeat}: 1 process {one['samples_per_s']:.2f} samples/s, 2 processes {two['samples_per_s']:.2f} samples/s, ratio {ratio:.3f}")
    result = {
        "benchmark": "ddp_throughput",
        "mode": "quick" if quick else "full",
        "setting": {**s, "method": "ummkd", "global_batch_per_modality": s["batch"], "backend": "gloo", "device": "cpu"},
        "threads_per_process": threads,
        "ratio_2_over_1_median": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "runs": rows,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    name = "ddp_throughput_quick" if quick else "ddp_throughput"
    save_results(out, name, result, markdown(result))
    print(f"ratio (2 processes / 1 process, median of {len(ratios)}): {result['ratio_2_over_1_median']:.3f}")
    print(f"written: {out / (name + '.json')}, {out / (name + '.md')}")
    return result


def markdown(r: dict) -> str:
    s, m = r["setting"], r["machine"]
    lines = [
        f"# DDP throughput: 1 against 2 CPU processes ({r['mode']} mode, {r['date']})",
        "",
        f"UMMKD, U-Net features {s['features']}, patch {s['patch']} (z, y, x), global batch {s['batch']} CT + {s['batch']} MR patches "
        f"per step, augmentation on, gloo backend, {r['threads_per_process']} thread(s) per process; "
        f"{s['warmup']} warm-up and {s['steps']} timed steps per run; {m['cpu_count']} CPU cores, load average "
        f"{m['load_average_before'][0]} before and {m['load_average_after'][0]} after; torch {m['torch']}.",
        "",
        "| repeat | processes | threads each | seconds | samples/s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {x['repeat']} | {x['processes']} | {x['threads_per_process']} | {x['seconds']} | {x['samples_per_s']} |" for x in r["runs"]]
    lines += ["", f"Samples/s with 2 processes / with 1 process: **{r['ratio_2_over_1_median']}** (median of {r['ratios']}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny network and 2 timed steps (seconds)")
    p.add_argument("--threads-per-process", type=int, default=1, help="CPU threads of each process")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for the JSON and markdown")
    args = p.parse_args(argv)
    run(args.quick, args.threads_per_process, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
