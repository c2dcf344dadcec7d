"""The command line of the benchmarks that time a trained model on the real scans (``fast_quality.py``,
``inference_memory_format.py``): which model, how many repeats, how many threads, where results go."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def model_run_arguments(argv: list[str] | None, description: str, *, repeats: int, threads: int) -> argparse.Namespace:
    """Parse ``--model``, ``--repeats``, ``--threads`` and ``--results``, and give PyTorch that many threads."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=None, help="manifest name or bundle (default: the default model)")
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.repeats = max(1, args.repeats)
    import torch

    torch.set_num_threads(args.threads)
    return args


def model_label(model: str | None) -> str:
    """``name version`` of a manifest name or bundle path (``None``: the default model)."""
    from MultiModalSegLib.bundle import load_bundle
    from MultiModalSegLib.models import resolve_model

    meta = load_bundle(resolve_model(model)[0]).metadata
    return f"{meta['name']} {meta['version']}"
