"""How far a finished run's validation Dice moves over its last checks, beside its final figure.

    python training/in_run_spread.py --run 3.0.0=training/runs-in-progress/abdomen-ummkd-synth \
        --run v11=training/runs-in-progress/abdomen-ummkd-synth-11 --out training/reports/in-run-spread

A candidate is judged on its finished model (the weights of the last step), scored once on the
unseen real scans. Whether one figure can rank two candidates depends on how much it would have
moved had training stopped a little earlier: each run's ``progress.jsonl`` holds the validation
Dice (model space) every few hundred steps, so this script gives, per run, the final check and the
lowest and highest value over the checks of the last part of training (``--last``, a fraction of
the planned steps; default the last quarter), for the left-out MR's mean and spleen and the
validation CT's liver and spleen. A run whose in-run validation had no CT (runs made on a machine
without the validation scan) shows "-" there. Writes ``in_run_spread.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.results_files import save_results  # noqa: E402
from MultiModalSegLib.training.progress import read_progress  # noqa: E402
from training.run_status import validations  # noqa: E402

OUT = REPO / "training" / "reports" / "in-run-spread"
MEASURES = (("MR", "mean"), ("MR", "spleen"), ("CT", "liver"), ("CT", "spleen"))


def named_run(text: str) -> tuple[str, Path]:
    """``name=folder`` (or a folder, named by itself) from the command line."""
    name, sep, folder = text.partition("=")
    return (name, Path(folder)) if sep else (Path(text).name, Path(text))


def spread(records: list[dict], last: float = 0.25) -> dict:
    """The final check's step and, per measure of :data:`MEASURES`, the final value and the range over the
    checks at or after ``1 - last`` of the planned steps (None where the run did not validate it)."""
    checks = validations(records)  # a step checked again after a resume: its last record
    starts = [r for r in records if r["event"] == "start"]
    planned = starts[-1]["steps"] if starts else max(checks, default=0)
    late = [s for s in sorted(checks) if s >= (1.0 - last) * planned]
    row: dict = {"planned": planned, "final_step": max(checks, default=None), "late_steps": late, "measures": {}}
    for modality, organ in MEASURES:
        values = [checks[s][modality][organ] for s in late if checks[s].get(modality, {}).get(organ) is not None]
        row["measures"][f"{modality} {organ}"] = (
            {"final": round(values[-1], 4), "low": round(min(values), 4), "high": round(max(values), 4)} if values else None
        )
    return row


def _cell(measure: dict | None) -> str:
    return "-" if measure is None else f"{measure['final']:.2f} ({measure['low']:.2f}-{measure['high']:.2f})"


def markdown(rows: dict[str, dict], command: str) -> str:
    head = ["run", "final check", "checks in the last part"] + [
        ("left-out MR " if m == "MR" else "validation CT ") + o for m, o in MEASURES]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|" + "---:|" * len(MEASURES)]
    for name, row in rows.items():
        cells = [_cell(row["measures"][f"{m} {o}"]) for m, o in MEASURES]
        lines.append(f"| {name} | {row['final_step']} of {row['planned']} | "
                     f"{len(row['late_steps'])} ({', '.join(map(str, row['late_steps']))}) | " + " | ".join(cells) + " |")
    widths = {key: [r["measures"][key]["high"] - r["measures"][key]["low"] for r in rows.values() if r["measures"][key]]
              for key in (f"{m} {o}" for m, o in MEASURES)}
    summary = "; ".join(f"{key}: {max(w):.2f}" for key, w in widths.items() if w)
    return (
        "# Validation Dice over the last checks of each run\n\n"
        "Each cell: the Dice at the run's final check (the weights it exports), then in brackets the lowest and "
        "highest over its checks in the last part of training (model space, as `progress.jsonl` records them; "
        "'-': not validated in-run). Regenerate: `" + command + "`.\n\n" + "\n".join(lines) + "\n\n"
        f"Widest range over those checks, any run: {summary}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, type=named_run, help="name=run folder (repeatable)")
    parser.add_argument("--last", type=float, default=0.25, help="the part of the planned steps whose checks count (default 0.25)")
    parser.add_argument("--out", type=Path, default=OUT, help="writes in_run_spread.md and .json here (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 0.0 < args.last <= 1.0:
        parser.error(f"--last {args.last}: give a fraction of the planned steps above 0 and at most 1, e.g. 0.25")
    runs = dict(args.run)
    if len(runs) != len(args.run):
        parser.error("give each run its own name (name=folder)")
    missing = [str(f / "progress.jsonl") for f in runs.values() if not (f / "progress.jsonl").is_file()]
    if missing:
        parser.error(f"no training progress at {', '.join(missing)}; give run folders made by `mmseg train`")
    rows = {name: spread(read_progress(folder / "progress.jsonl"), args.last) for name, folder in runs.items()}
    command = ("python training/in_run_spread.py " + " ".join(f"--run {n}={f}" for n, f in runs.items())
               + (f" --last {args.last:g}" if args.last != 0.25 else "") + (f" --out {args.out}" if args.out != OUT else ""))
    text = markdown(rows, command)
    save_results(args.out, "in_run_spread", rows, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
