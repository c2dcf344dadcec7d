"""The state of a training run that spans sessions, from its ``progress.jsonl`` alone.

    python training/run_status.py --run training/runs-in-progress/abdomen-ummkd-synth \
        --out training/reports/abdomen-synth

Writes ``status.md`` (steps done, training hours per session, the validation Dice at every
validation step and each modality's mean over the last three checks, then the same for each organ's
largest piece at the checks that logged it, and for the piece the ``Segmenter`` keeps under its organ layout where
the checks logged that, and for a recipe with ``weight_average`` the same for the mean of
its weights so far) and ``status.png`` (loss curves, validation Dice) to ``--out``; ``--name`` sets
their file stem. Each ``--beside OTHER_RUN`` adds that run's validation Dice at the same steps, one
table per modality, so that a run in progress is read against finished ones at equal training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "training"))

from package_model import check_overlap, loss_plot, training_seconds  # noqa: E402

from MultiModalSegLib.atomic import write_text_atomic  # noqa: E402
from MultiModalSegLib.training.progress import read_progress  # noqa: E402


def session_start(record: dict) -> str:
    """``STEP on DEVICE``, and ``in PRECISION`` where the session recorded one other than float32."""
    precision = record.get("precision", "float32")
    return f"{record['step']} on {record.get('device', '?')}" + ("" if precision == "float32" else f" in {precision}")


def status_markdown(records: list[dict], title: str) -> str:
    vals = [r for r in records if r["event"] == "validation"]
    by_step = validations(records)  # one row per step: a check repeated after a resume counts once
    starts = [r for r in records if r["event"] == "start"]
    planned = starts[-1]["steps"] if starts else 0
    done = max([r["step"] for r in records if r["event"] in ("step", "checkpoint", "stopped")], default=0)
    last = {"step": done, "steps": planned}
    lines = [
        f"# {title}",
        "",
        f"Step {last['step']} of {last['steps']}; {training_seconds(records) / 3600:.2f} hours of training over "
        f"{len(starts)} session(s) (start steps: {', '.join(session_start(r) for r in starts)}).",
        "",
        "![curves](" + "{png}" + ")",
        "",
    ]
    if vals:
        cases = ", ".join(vals[-1].get("cases", [])) or "the run's validation cases"
        lines += [f"Validation Dice ({cases}; model space; sliding windows at overlap {check_overlap(records)}):", "",
                  *dice_table(by_step), "", recent_means(by_step)]
        kept = validations(records, LARGEST_PIECE)
        if kept:
            lines += ["", "The same checks scored as the bundle segments, each organ's largest piece alone (at the "
                      "checks that logged it):", "", *dice_table(kept), "", recent_means(kept)]
        delivered = validations(records, AS_DELIVERED)
        if delivered:
            lines += ["", "The same checks scored with the piece the `Segmenter` now keeps (the largest unless the organ "
                      "layout finds it out of place; at the checks that logged it):", "", *dice_table(delivered), "",
                      recent_means(delivered)]
        averaged = validations(records, AVERAGE)
        if averaged:
            lines += ["", "The mean of the weights so far (`weight_average`, what the run's bundle will carry), each "
                      "organ's largest piece alone:", "", *dice_table(averaged), "", recent_means(averaged)]
    return "\n".join(lines) + "\n"


def dice_table(by_step: dict[int, dict]) -> list[str]:
    """Markdown rows: a row per step, a column per organ and modality (those of the last check)."""
    last = by_step[max(by_step)]
    organs = [k for k in next(iter(last.values())) if k != "mean"]
    head = ["step"] + [f"{o} {m}" for m in last for o in organs]
    rows = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for step in sorted(by_step):
        rows.append(f"| {step} | " + " | ".join(f"{by_step[step][m][o]:.3f}" for m in last for o in organs) + " |")
    return rows


def recent_means(by_step: dict[int, dict], last: int = 3) -> str:
    """One line: each modality's mean Dice averaged over the last ``last`` checks, a steadier figure than
    one check where a validation scan is small and the Dice swings from one check to the next."""
    steps = sorted(by_step)[-last:]
    means = {m: [by_step[s][m]["mean"] for s in steps if m in by_step[s]] for m in by_step[steps[-1]]}
    parts = [f"{m} {sum(v) / len(v):.3f}" for m, v in means.items()]
    return f"Mean Dice over the last {len(steps)} checks (steps {', '.join(map(str, steps))}): " + ", ".join(parts) + "."


LARGEST_PIECE = "dice_largest_piece"
AS_DELIVERED = "dice_as_delivered"
AVERAGE = ("weight_average", LARGEST_PIECE)


def validations(records: list[dict], key: str | tuple[str, ...] = "dice") -> dict[int, dict]:
    """Validation Dice by step (the last record of a step counts, as after a resumed run); ``key``
    ``LARGEST_PIECE``: the Dice of each organ's largest piece, where the run logged it; ``AVERAGE``: that
    of the averaged weights (a path of keys)."""
    out = {}
    for r in records:
        value = r if r["event"] == "validation" else None
        for k in (key,) if isinstance(key, str) else key:
            value = value.get(k) if isinstance(value, dict) else None
        if value is not None:
            out[r["step"]] = value
    return out


def _cell(dice: dict, organ: str) -> str:
    """One Dice to two decimals; "-" for an organ that run does not validate."""
    return "-" if dice.get(organ) is None else f"{dice[organ]:.2f}"


def run_names(folders: list[Path]) -> list[str]:
    """A column name per run folder: its name, or its path where two runs share a name."""
    names = [f.name for f in folders]
    return [f.name if names.count(f.name) == 1 else str(f) for f in folders]


def beside_markdown(runs: dict[str, list[dict]]) -> str:
    """One table per modality: each validation step of the first run, every run's Dice at that step.

    A cell is the organs' Dice in the run's organ order, then the mean in brackets; "-" where a run
    has no validation at that step (or of that organ).
    """
    names = list(runs)
    by_step = {name: validations(records) for name, records in runs.items()}
    steps = sorted(by_step[names[0]])
    if not steps:
        return ""
    first = by_step[names[0]][steps[-1]]
    lines = ["## Beside other runs at the same steps", ""]
    overlaps = {name: check_overlap(records) for name, records in runs.items()}
    if len(set(overlaps.values())) > 1:  # a single network's figures move with its windows (reports/window-settings)
        lines += ["Checks at different sliding-window overlaps, so not like for like: "
                  + ", ".join(f"{name} {overlap}" for name, overlap in overlaps.items()) + ".", ""]
    for modality, organs in first.items():
        order = [o for o in organs if o != "mean"]
        lines += [f"{modality} validation Dice ({' / '.join(order)} (mean)):", "",
                  "| step | " + " | ".join(names) + " |", "|---:" + "|---" * len(names) + "|"]
        for step in steps:
            cells = []
            for name in names:
                dice = by_step[name].get(step, {}).get(modality)
                cells.append("-" if dice is None else
                             " / ".join(_cell(dice, o) for o in order) + f" ({_cell(dice, 'mean')})")
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="status")
    parser.add_argument("--title", default=None)
    parser.add_argument("--beside", type=Path, action="append", default=[],
                        help="another run's folder whose validation Dice is shown at the same steps")
    args = parser.parse_args(argv)
    records = read_progress(args.run / "progress.jsonl")
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{args.name}.png"
    loss_plot(records, png)
    text = status_markdown(records, args.title or f"Training run {args.run.name}").replace("{png}", png.name)
    if args.beside:
        folders = [args.run, *args.beside]
        runs = {name: read_progress(f / "progress.jsonl") for name, f in zip(run_names(folders), folders, strict=True)}
        text += "\n" + beside_markdown(runs)
    write_text_atomic(args.out / f"{args.name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
