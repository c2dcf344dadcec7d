"""Seconds per training step on the CPU in float32 and under bfloat16 autocast (a recipe's ``cpu_bfloat16``),
side by side, with the loss each gives on the same batch from the same weights.

    python benchmarks/training_precision.py                      # the recipe of v23, 2 threads
    python benchmarks/training_precision.py --config training/configs/abdomen_synth_default.json
    python benchmarks/training_precision.py --quick              # a tiny network (used by the tests)

The recipe's method and network train on random batches of its patch and batch size, the two precisions
alternating step by step (``benchmarks/recipe_step.py``); a precision's figure is the median of its timed
steps, and the ratio is float32's over bfloat16's.
Before timing, both compute the loss of one batch from the same weights: their difference says how far
bfloat16 moves what the optimiser sees. bfloat16 is only worth asking for where the processor computes it
(AVX512-BF16 or AMX, ``MultiModalSegLib.device.cpu_bfloat16_native``); elsewhere PyTorch emulates it and
the ratio falls below 1, which the table then shows. Results: ``benchmarks/results/training_precision*.{json,md}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.recipe_step import alternate, command_line, machine, recipe_method, timed_step  # noqa: E402

DEFAULT_CONFIG = REPO / "training" / "configs" / "abdomen_synth_v23.json"


def measure(config: Path, steps: int, threads: int, quick: bool = False) -> dict:
    """Median seconds per step in each precision, their ratio, and the two losses of one batch."""
    import torch

    from MultiModalSegLib.device import cpu_bfloat16_native

    torch.set_num_threads(threads)
    cfg, method, batches = recipe_method(config, quick)
    optimiser = torch.optim.AdamW(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loss(bfloat16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            return method.training_step(batches)["loss"]

    with torch.no_grad():
        losses = {"float32": float(loss(False)), "bfloat16": float(loss(True))}
    times, median = alternate({name: lambda b=bfloat16: timed_step(method, optimiser, lambda: loss(b))
                               for name, bfloat16 in (("float32", False), ("bfloat16", True))}, steps)
    return {"config": config.name, "quick": quick, "threads": threads, "native_bfloat16": cpu_bfloat16_native(),
            "patch_size_zyx": list(cfg.patch_size), "batch_size": cfg.batch_size, "modalities": list(cfg.modalities),
            "network": cfg.network, "method": cfg.method, "seconds": times, "median_s": median,
            "speedup": round(median["float32"] / median["bfloat16"], 3), "loss": losses,
            "loss_difference": round(abs(losses["float32"] - losses["bfloat16"]), 5), "machine": machine()}


def markdown(record: dict) -> str:
    m = record["median_s"]
    return "\n".join([
        "# Training step on the CPU: float32 against bfloat16 autocast",
        "",
        f"Recipe `{record['config']}`{' (quick: a tiny network)' if record['quick'] else ''}: method {record['method']}, "
        f"{record['batch_size']} patch(es) of {' x '.join(map(str, record['patch_size_zyx']))} (z y x) per modality "
        f"({', '.join(record['modalities'])}), {record['threads']} thread(s); processor computes bfloat16 natively: "
        f"{'yes' if record['native_bfloat16'] else 'no'}. Median of {len(record['seconds']['float32'])} alternating steps "
        "each. Regenerate: `python benchmarks/training_precision.py`.",
        "",
        "| precision | seconds per step | loss of one batch |",
        "|---|---:|---:|",
        f"| float32 | {m['float32']:.3f} | {record['loss']['float32']:.5f} |",
        f"| bfloat16 autocast | {m['bfloat16']:.3f} | {record['loss']['bfloat16']:.5f} |",
        "",
        f"float32 / bfloat16: **{record['speedup']:.2f}x**; loss difference {record['loss_difference']:.5f}.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, __doc__.splitlines()[0], DEFAULT_CONFIG, 5, "precision", measure, markdown, "training_precision",
                        REPO / "benchmarks" / "results")


if __name__ == "__main__":
    raise SystemExit(main())
