"""Package a finished training run as a shipped model: report, measured figures, manifest entry.

    python training/package_model.py --run training/runs/abdomen-ummkd \
        --out Resources/Models/abdomen-ummkd-1.0.0.zip --default

Writes, from the run folder alone (nothing is typed by hand):
- ``training/reports/<name>/loss.png`` and ``report.md``: loss curves, validation Dice per organ per
  modality on held-out phantoms (from ``progress.jsonl``), Dice / HD95 / ASSD on the real samples;
- the bundle zip with the report inside and the measured figures in ``metadata.json``;
- the entry of ``Resources/Models.json`` (sha256 of the zip, CPU seconds measured here).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MultiModalSegLib.bundle import file_sha256, load_bundle, save_bundle  # noqa: E402
from MultiModalSegLib.cli.demo import SAMPLES, score_sample  # noqa: E402
from MultiModalSegLib.inference import Segmenter  # noqa: E402
from MultiModalSegLib.metrics import format_markdown_table  # noqa: E402
from MultiModalSegLib.models import add_to_manifest  # noqa: E402
from MultiModalSegLib.training.progress import read_progress  # noqa: E402


def loss_plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r["event"] == "step"]
    vals = [r for r in records if r["event"] == "validation"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in steps[-1]["losses"]:
        a.plot([r["step"] for r in steps], [r["losses"][key] for r in steps], label=key, lw=1)
    a.set_xlabel("step")
    a.set_title("training losses")
    a.legend()
    for modality in vals[-1]["dice"] if vals else []:
        b.plot([r["step"] for r in vals], [r["dice"][modality]["mean"] for r in vals], marker="o", label=modality)
    b.set_ylim(0, 1)
    b.set_xlabel("step")
    b.set_title("validation Dice (held-out phantoms, mean of 4 organs)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def training_seconds(records: list[dict]) -> float:
    """Wall seconds of training summed over the sessions of a run (each ``start`` opens one)."""
    total, session = 0.0, 0.0
    for r in records:
        if r["event"] == "start":
            total, session = total + session, 0.0
        elif r["event"] == "step":
            session = max(session, r.get("elapsed_s", 0.0))
    return total + session


def validation_table(dice: dict) -> str:
    organs = [k for k in next(iter(dice.values())) if k != "mean"]
    lines = ["| modality | " + " | ".join(organs) + " | mean |", "|---" * (len(organs) + 2) + "|"]
    for modality, row in dice.items():
        lines.append(f"| {modality} | " + " | ".join(f"{row[o]:.3f}" for o in [*organs, "mean"]) + " |")
    return "\n".join(lines)


def real_sample_metrics(bundle_path: Path, repeats: int = 2) -> tuple[dict, dict]:
    """Metrics against the shipped pseudo-labels, and the best of ``repeats`` CPU timings."""
    seg = Segmenter(bundle_path, device="cpu")
    results, seconds = {}, {}
    for case in SAMPLES:
        times = []
        for _ in range(repeats):
            image, out, _, results[case] = score_sample(seg, case)
            times.append(out.seconds)
        seconds[f"{case} ({'x'.join(map(str, image.size))})"] = round(min(times), 2)
    return results, seconds


def manifest_metrics(validation: dict, real: dict) -> dict:
    """The manifest's accuracy summary: mean validation Dice per modality (held-out phantoms) and
    mean Dice over organs per real sample (pseudo-labels), both from the figures in the report."""
    def mean_dice(organs: dict) -> float:
        values = [m["dice"] for m in organs.values() if m.get("dice") is not None and not np.isnan(m["dice"])]
        return round(float(np.mean(values)), 4)

    return {
        "validation_mean_dice": {m: round(float(row["mean"]), 4) for m, row in validation.items()},
        "real_samples_mean_dice": {case: mean_dice(organs) for case, organs in real.items()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="bundle zip to write (under Resources/Models/)")
    p.add_argument("--default", action="store_true", help="make it the manifest's default model")
    p.add_argument("--note", default="", help="a paragraph for the report (e.g. what changed between sessions)")
    p.add_argument("--training-data", help="the manifest's training_data text")
    p.add_argument("--intended-use", help="the manifest's intended_use text")
    p.add_argument("--limitations", help="the manifest's limitations text")
    args = p.parse_args()

    bundle = load_bundle(args.run / "bundle")
    meta = dict(bundle.metadata)
    name = meta["name"]
    records = read_progress(args.run / "progress.jsonl")
    report_dir = REPO / "training" / "reports" / name
    report_dir.mkdir(parents=True, exist_ok=True)
    loss_plot(records, report_dir / "loss.png")

    real, cpu_seconds = real_sample_metrics(args.run / "bundle")
    validation = meta.get("metrics", {}).get("validation_dice") or {}
    train_seconds = training_seconds(records)
    meta["metrics"] = {
        "validation_dice": validation,
        "validation_source": f"held-out synthetic phantoms, model space (training/reports/{name}/report.md)",
        "real_samples": {c: {o: {k: (None if v is None or np.isnan(v) else round(v, 4)) for k, v in m.items()} for o, m in r.items()} for c, r in real.items()},
        "real_samples_source": "Resources/SampleData against TotalSegmentator pseudo-labels; these two scans were also training cases",
    }
    meta["training"]["cpu_seconds_measured"] = cpu_seconds
    cfg = meta["training"].get("config", {})
    config_file = Path(meta["training"].get("config_file") or "training/configs/abdomen_ummkd_default.json")
    config_arg = config_file.relative_to(REPO) if config_file.is_absolute() and config_file.is_relative_to(REPO) else config_file
    run_arg = args.run.resolve().relative_to(REPO) if args.run.resolve().is_relative_to(REPO) else args.run
    warm = next((r for r in records if r["event"] == "warm_start"), None)
    warm_line = (
        f"Started from the weights of `{Path(warm['bundle']).name}` (method `{warm['method']}`, sha256 {warm['sha256'][:12]}...): "
        f"{warm['copied']} tensors copied, {warm['averaged']} averaged over modalities, {warm['fresh']} freshly initialised "
        "(`MultiModalSegLib/training/warm_start.py`)."
        if warm else None
    )
    report = [
        f"# {name} {meta['version']}: training report",
        "",
        f"Method `{meta['method']}`, network `{meta['network']['name']}` {meta['network']['params'].get('features')}, "
        f"spacing {meta['spacing']} mm, patch {meta['patch_size']} (z, y, x), {meta['training']['steps']} steps, "
        f"batch {cfg.get('batch_size')} per modality, trained on {meta['training']['device']} "
        f"({platform.processor() or platform.machine()}); training cases per modality: {meta['training']['cases']}.",
        f"Training wall time, all sessions of the run: {train_seconds / 60:.0f} min "
        "in sessions (start step -> planned length): "
        + ", ".join(f"{r['step']} -> {r['steps']}" for r in records if r["event"] == "start")
        + ". A resumed session with a longer planned length continues the cosine schedule at the new length.",
        "",
        f"Regenerate: `mmseg train --config {config_arg} --out {run_arg}` "
        f"then `python training/package_model.py --run {run_arg} --out Resources/Models/"
        f"{args.out.name}{' --default' if args.default else ''}`.",
        "",
        *([warm_line, ""] if warm_line else []),
        *([args.note, ""] if args.note else []),
        "![losses](loss.png)",
        "",
        "## Validation Dice on held-out phantoms (last validation, model space)",
        "",
        validation_table(validation) if validation else "(no validation cases)",
        "",
        "## Real samples (Resources/SampleData) against TotalSegmentator pseudo-labels",
        "",
        "Both scans were in the training set (weighted 8x): these figures show that the model fits real",
        "anatomy it has seen, not how it generalises to new patients. The reference labels are model",
        "outputs, not manual annotations.",
        "",
        format_markdown_table(real),
        "",
        "## CPU inference seconds (best of 2, this machine)",
        "",
        *[f"- {k}: {v} s" for k, v in cpu_seconds.items()],
        "",
    ]
    (report_dir / "report.md").write_text("\n".join(report))
    out = save_bundle(
        args.out,
        meta,
        bundle.state_dict,
        extra_files={"report.md": report_dir / "report.md", "loss.png": report_dir / "loss.png"},
        overwrite=True,
    )
    entry = {
        "name": name,
        "version": meta["version"],
        "description": meta["description"],
        "method": meta["method"],
        "modalities": list(meta["modalities"]),
        "labels": [lab["name"] for lab in meta["labels"]],
        "spacing": meta["spacing"],
        "sha256": file_sha256(out),
        "file": str(out.resolve().relative_to((REPO / "Resources").resolve())),
        "size": out.stat().st_size,
        "licence": meta["licence"],
        "cpu_seconds": cpu_seconds,
        "metrics": manifest_metrics(meta["metrics"]["validation_dice"], meta["metrics"]["real_samples"]),
        "default": bool(args.default),
    }
    for key in ("training_data", "intended_use", "limitations"):
        if getattr(args, key):
            entry[key] = getattr(args, key)
    add_to_manifest(entry)
    print(json.dumps(entry, indent=2))
    print((report_dir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
