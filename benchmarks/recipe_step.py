"""A recipe's training step on random batches, for the benchmarks that time variants of it side by side.

The recipe's method and network train on random batches of its patch and batch size (the cost of a step
does not depend on what the voxels hold): forward, losses, backward and an AdamW step, as ``Trainer``
does. Variants alternate step by step after a warm-up of each, so that a drift in machine load is shared.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.results_files import save_results

QUICK = {"network": {"name": "unet3d", "params": {"features": [4, 8, 16]}}, "patch_size": [16, 32, 32], "batch_size": 1}


def recipe_method(config: Path, quick: bool = False):
    """The recipe (with :data:`QUICK`'s tiny network and patch when ``quick``), its method in training
    mode, and one random batch per modality."""
    import torch

    from MultiModalSegLib.training import load_config
    from MultiModalSegLib.training.engine import build_configured_method

    torch.manual_seed(0)
    cfg = load_config(config)
    for key, value in (QUICK if quick else {}).items():
        setattr(cfg, key, value)
    method = build_configured_method(cfg, list(cfg.modalities), cfg.label_info)
    method.train()
    generator = torch.Generator().manual_seed(0)
    shape = (cfg.batch_size, 1, *cfg.patch_size)
    batches = {m: {"image": torch.rand(shape, generator=generator),
                   "label": torch.randint(0, len(cfg.label_info) + 1, shape, generator=generator)} for m in cfg.modalities}
    return cfg, method, batches


def timed_step(method, optimiser, loss: Callable[[], object]) -> float:
    """Seconds for one optimiser step of ``method`` on the loss ``loss()`` computes."""
    t0 = time.perf_counter()
    optimiser.zero_grad(set_to_none=True)
    loss().backward()
    optimiser.step()
    return time.perf_counter() - t0


def alternate(steps: dict[str, Callable[[], float]], count: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each variant's ``count`` timed steps, taken in turn after one warm-up step of each, and their medians."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(count):
        for name, step in steps.items():
            times[name].append(round(step(), 4))
    return times, {name: statistics.median(t) for name, t in times.items()}


def processor_name() -> str:
    """The processor's model name where the system says it (Linux ``/proc/cpuinfo``), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    return {"processor": processor_name(), "python": platform.python_version(), "torch": torch.__version__}


def command_line(argv: list[str] | None, description: str, default_config: Path, default_steps: int, what: str,
                 measure: Callable[[Path, int, int, bool], dict], markdown: Callable[[dict], str], stem: str,
                 results: Path) -> int:
    """The command line every recipe-step benchmark shares: time ``what`` side by side with ``measure``,
    write ``<stem>[_quick].{json,md}`` in ``--results`` and print the table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=default_config, help="the recipe whose network and patch are timed")
    parser.add_argument("--steps", type=int, default=default_steps, help=f"timed steps per {what} (default {default_steps})")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="a tiny network and patch (for the tests)")
    parser.add_argument("--results", type=Path, default=results)
    args = parser.parse_args(argv)
    record = measure(args.config, max(1, args.steps), args.threads, args.quick)
    text = markdown(record)
    save_results(args.results, f"{stem}_quick" if args.quick else stem, record, text)
    print(text, end="")
    return 0
