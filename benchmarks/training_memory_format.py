"""Seconds per float32 training step on the CPU with the convolutions in the default layout and
channels-last (a recipe's ``cpu_channels_last``, true by default), side by side, with the loss each
gives on the same batch from the same weights.

    python benchmarks/training_memory_format.py                  # the recipe of v35, 2 threads
    python benchmarks/training_memory_format.py --config training/configs/abdomen_synth_default.json
    python benchmarks/training_memory_format.py --quick          # a tiny network (used by the tests)

Two copies of the recipe's method start from the same weights, one left in PyTorch's default layout, one
made channels-last as ``Trainer`` makes it (``MultiModalSegLib.device.cpu_channels_last``), each with its
own AdamW; they alternate step by step on the same random batches (``benchmarks/recipe_step.py``). A
layout's figure is the median of its timed steps, and the ratio is the default layout's over
channels-last's. Both compute in float32: their losses on one batch differ only by the order of the sums.
Results: ``benchmarks/results/training_memory_format*.{json,md}``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.recipe_step import alternate, command_line, machine, recipe_method, timed_step  # noqa: E402

DEFAULT_CONFIG = REPO / "training" / "configs" / "abdomen_synth_v35.json"
LAYOUTS = ("contiguous", "channels_last")


def measure(config: Path, steps: int, threads: int, quick: bool = False) -> dict:
    """Median seconds per step in each layout, their ratio, and the two losses of one batch."""
    import torch

    from MultiModalSegLib.device import cpu_channels_last

    torch.set_num_threads(threads)
    cfg, method, batches = recipe_method(config, quick)
    methods = {"contiguous": method, "channels_last": copy.deepcopy(method)}
    cpu_channels_last(methods["channels_last"], torch.device("cpu"))
    optimisers = {name: torch.optim.AdamW(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) for name, m in methods.items()}
    with torch.no_grad():
        losses = {name: float(m.training_step(batches)["loss"]) for name, m in methods.items()}
    times, median = alternate({name: lambda n=name: timed_step(methods[n], optimisers[n], lambda: methods[n].training_step(batches)["loss"])
                               for name in LAYOUTS}, steps)
    return {"config": config.name, "quick": quick, "threads": threads, "patch_size_zyx": list(cfg.patch_size),
            "batch_size": cfg.batch_size, "modalities": list(cfg.modalities), "network": cfg.network, "method": cfg.method,
            "seconds": times, "median_s": median, "speedup": round(median["contiguous"] / median["channels_last"], 3),
            "loss": losses, "loss_difference": abs(losses["contiguous"] - losses["channels_last"]), "machine": machine()}


def markdown(record: dict) -> str:
    m = record["median_s"]
    return "\n".join([
        "# Training step on the CPU: convolutions in the default layout against channels-last",
        "",
        f"Recipe `{record['config']}`{' (quick: a tiny network)' if record['quick'] else ''}: method {record['method']}, "
        f"network {record['network']['name']} {record['network'].get('params', {})}, {record['batch_size']} patch(es) of "
        f"{' x '.join(map(str, record['patch_size_zyx']))} (z y x) per modality ({', '.join(record['modalities'])}), "
        f"float32, {record['threads']} thread(s), processor {record['machine']['processor']}, torch {record['machine']['torch']}. "
        f"Median of {len(record['seconds']['contiguous'])} alternating steps each. "
        "Regenerate: `python benchmarks/training_memory_format.py`.",
        "",
        "| layout | seconds per step | loss of one batch |",
        "|---|---:|---:|",
        f"| default (contiguous) | {m['contiguous']:.3f} | {record['loss']['contiguous']:.6f} |",
        f"| channels-last (`cpu_channels_last`) | {m['channels_last']:.3f} | {record['loss']['channels_last']:.6f} |",
        "",
        f"default / channels-last: **{record['speedup']:.2f}x**; loss difference {record['loss_difference']:.1e}.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, __doc__.splitlines()[0], DEFAULT_CONFIG, 6, "layout", measure, markdown, "training_memory_format",
                        REPO / "benchmarks" / "results")


if __name__ == "__main__":
    raise SystemExit(main())
