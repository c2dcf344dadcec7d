"""``mmseg train --config FILE``: train a model; rerunning the same command resumes it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a JSON config (resumes an interrupted run)")
    p.add_argument("--config", required=True, help="training config (see training/configs/)")
    p.add_argument("--out", help="run folder (default: training/runs/<config name>)")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--device", help="auto, cpu or cuda (overrides the config)")
    p.add_argument("--restart", action="store_true", help="discard the run folder's checkpoint and start again")
    p.add_argument("--bundle", help="also copy the finished bundle here (.zip for a zip file)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import load_bundle, save_bundle
    from ..training import Trainer, distributed, load_config

    overrides = {k: v for k, v in (("steps", args.steps), ("device", args.device)) if v is not None}
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("training") / "runs" / cfg.name
    result = Trainer(cfg, out, restart=args.restart, quiet=args.quiet).run()
    main = distributed.is_main()  # under torchrun rank 0 alone reports and copies the bundle
    distributed.teardown()
    if not main:
        return 0 if result.status == "done" else 3
    print(json.dumps({"status": result.status, "step": result.step, "run": str(out), "losses": result.last_losses}))
    if result.status != "done":
        print(f"stopped at step {result.step}; run the same command again to resume from {out}/checkpoints/last.pt")
        return 3
    print(f"bundle: {result.bundle}")
    if args.bundle:
        b = load_bundle(result.bundle)
        extra = {p.name: p for p in Path(result.bundle).iterdir() if p.name not in ("metadata.json", "model.pt")}
        print(f"copied to: {save_bundle(args.bundle, b.metadata, b.state_dict, extra_files=extra, overwrite=True)}")
    return 0
