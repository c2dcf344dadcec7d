"""Few-shot fine-tuning evidence: the first default model fine-tuned with ONE labelled real MR.

Starting from the first default model (``abdomen-ummkd`` 1.0.0; the default is now
``abdomen-ummkd-synth``), ``mmseg finetune`` trains on the shipped real MR
(``Resources/SampleData/abdomen_mr_01`` with its TotalSegmentator label; ``--few-shot MR=1``, so
it is the only labelled MR) plus CT phantoms replaying the parent's data, and scores the parent
and the new model on held-out phantoms of both modalities (a seed no recipe trains on). The claims
checked, and written with the table into ``training/reports/finetune-fewshot/``:

1. MR: the mean Dice over organs on held-out phantom MR goes up;
2. CT: the mean Dice over organs on held-out phantom CT drops by at most 0.02 (2 points).

Each claim is reported as measured, true or not (see the report's last lines).

Run (about 10 to 30 minutes on 2 shared CPU cores; the run folder resumes if interrupted)::

    python training/finetune_fewshot.py                  # the committed report
    python training/finetune_fewshot.py --quick --out-dir /tmp/fewshot   # a few steps (the CI test)

The new bundle (about 5 MB) stays in the run folder, not in the repository.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MultiModalSegLib.atomic import write_text_atomic  # noqa: E402
from MultiModalSegLib.training.finetune import FinetuneOptions, finetune  # noqa: E402

MR_CASE = REPO / "Resources" / "SampleData" / "abdomen_mr_01"
FULL = {"steps": 12, "lr": 5e-5, "phantoms": 8, "heldout_phantoms": 4}  # the committed report (2 shared CPU cores)
QUICK = {"steps": 6, "lr": 5e-4, "phantoms": 2, "heldout_phantoms": 1}
CT_TOLERANCE = 0.02


def mr_dataset(folder: Path) -> Path:
    """A dataset.json holding only the real sample MR and its label (absolute paths)."""
    doc = {
        "name": "sample-mr",
        "description": "The shipped real MR sample with its TotalSegmentator pseudo-label (CC BY 4.0, see Resources/SampleData).",
        "licence": "CC-BY-4.0",
        "labels": {"0": "background", "1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left"},
        "training": [{"name": "abdomen_mr_01", "image": str(MR_CASE / "image.nii.gz"),
                      "label": str(MR_CASE / "label_totalseg.nii.gz"), "modality": "MR", "label_remap": "totalsegmentator"}],
    }  # fmt: skip
    return write_text_atomic(folder / "dataset.json", json.dumps(doc, indent=2) + "\n")


def claims(before: dict, after: dict) -> dict:
    """The two claims on the held-out phantoms' mean Dice over organs."""
    b, a = before["phantoms"], after["phantoms"]
    return {
        "mr_mean_before": b["MR"]["mean"], "mr_mean_after": a["MR"]["mean"],
        "ct_mean_before": b["CT"]["mean"], "ct_mean_after": a["CT"]["mean"],
        "mr_raised": a["MR"]["mean"] > b["MR"]["mean"],
        "ct_kept": a["CT"]["mean"] >= b["CT"]["mean"] - CT_TOLERANCE,
    }  # fmt: skip


def verdict_lines(verdict: dict) -> list[str]:
    """The report's two closing lines: each claim's means before and after, and whether it holds."""
    return [
        f"- MR mean Dice on held-out phantoms: {verdict['mr_mean_before']:.3f} -> {verdict['mr_mean_after']:.3f}: "
        f"{'raised' if verdict['mr_raised'] else 'NOT raised'}",
        f"- CT mean Dice on held-out phantoms: {verdict['ct_mean_before']:.3f} -> {verdict['ct_mean_after']:.3f}: "
        f"{'within' if verdict['ct_kept'] else 'NOT within'} {CT_TOLERANCE:.2f} of before",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few steps and one held-out phantom per modality")
    p.add_argument("--init", default="abdomen-ummkd", help="parent model (default: the first default model, abdomen-ummkd)")
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--phantoms", type=int, help="CT phantoms replayed")
    p.add_argument("--heldout-phantoms", type=int)
    p.add_argument("--run", help="run folder (default training/runs/finetune-fewshot[-quick])")
    p.add_argument("--out-dir", default=str(REPO / "training" / "reports" / "finetune-fewshot"), help="where the table goes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--norm-stats", choices=("frozen", "train"), default="frozen", help="BatchNorm statistics (mmseg finetune --norm-stats)")
    p.add_argument("--restart", action="store_true", help="discard the run folder's checkpoint (the parent's scores are kept)")
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    run = Path(args.run) if args.run else REPO / "training" / "runs" / ("finetune-fewshot-quick" if args.quick else "finetune-fewshot")
    out_dir = Path(args.out_dir)
    data = mr_dataset(run / "sample-mr")
    t0 = time.time()
    result = finetune(FinetuneOptions(
        init=args.init, data=[str(data)], out=run / "abdomen-ummkd-fewshot-mr1.zip", few_shot={"MR": 1},
        phantoms=settings["phantoms"], heldout_phantoms=settings["heldout_phantoms"], parent_data="no",
        steps=settings["steps"], lr=settings["lr"], device=args.device, run_dir=run, quiet=args.quiet, restart=args.restart, norm_stats=args.norm_stats,
        overwrite=True, threads=args.threads, keep_worse=True,  # an experiment: its report states the result either way
    ))  # fmt: skip
    if result.status != "done":
        print(f"stopped at step {result.step}; run the same command again to resume")
        return 3
    verdict = claims(result.before, result.after)
    table = result.table_md.read_text()
    lines = [
        table,
        f"Settings: {json.dumps(settings)}, norm_stats {args.norm_stats}; parent `{args.init}`; the only labelled MR is the real sample "
        f"`abdomen_mr_01`; CT phantoms replayed; device {args.device} on {platform.machine()}; "
        f"{time.time() - t0:.0f} s this session.",
        "",
        *verdict_lines(verdict),
        "",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "before_after.md", "\n".join(lines))
    write_text_atomic(out_dir / "before_after.json", json.dumps(
        {"settings": settings, "claims": verdict, "before": result.before, "after": result.after}, indent=2) + "\n")  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
