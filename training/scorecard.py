"""A candidate against the default model on every real-scan check, from the checks' own result files.

    python training/scorecard.py --results training/reports/abdomen-synth-v26 \
        --results training/reports/abdomen-synth-v26/weight-average --default "abdomen-ummkd-synth 3.1.0" \
        --out training/reports/abdomen-synth-v26

Reads, in each ``--results`` folder, whichever of these it holds: ``real_scans.json``
(``evaluate_real_scans.py``), ``external_liver_ct.json`` (``external_liver_ct.py``),
``external_kidney_mr.json`` (``external_kidney_mr.py``) and ``ensemble/normalisation_ensemble.json`` or
``ensemble/polarity_ensemble.json`` (``benchmarks/polarity_ensemble.py``: the bias-field agreement under the
inference each bundle declares) and ``voxel-sizes/voxel_sizes.json`` (``probability_ensembles.py`` with each
bundle at 0.9, 1 and 1.1 times its voxel size: shown beside the rules, judged by none). A model is named as those files name it (``NAME VERSION``;
a row scored with a dropped piece's voxels given their next class, not made background as every check before
that choice, is another model here: ``NAME VERSION (dropped pieces: next_class)``); a figure found in
two folders must agree (the same model scored twice differently is refused). Writes ``scorecard.md`` and
``.json``: a row per model, normal quality, and for each model but the default the rules a new default must
pass (README, "Real scans first"):

1. validation CT: the mean Dice of its scored organs above the default's;
2. left-out MR: the mean Dice of the four organs above the default's;
3. LiTS liver CT: the mean over the assumed voxel sizes no more than 0.02 below the default's;
4. external kidney MR: the mean over its scans of ``|1 - kidney volume / reference|`` no more than 0.05 above
   the default's;
5. bias field: the lowest organ agreement at least 0.85 at every field strength.

A check a folder does not hold is ``-`` and fails its rule ("not measured"). Where ``real_scans.json``
records the organs whose dropped piece rivalled the kept one on an unseen scan (``Segmenter.rival_pieces``),
a line under the table lists them; like the voxel sizes, they judge nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_files import save_results  # noqa: E402
from training.dropped_pieces_option import row_choice  # noqa: E402
from training.real_scans import REAL_SCANS  # noqa: E402

LITS_SLACK = 0.02
KIDNEY_SLACK = 0.05
AGREEMENT = 0.85
ENSEMBLE_FILES = ("ensemble/normalisation_ensemble.json", "ensemble/polarity_ensemble.json")
VOXEL_SIZES_FILE = "voxel-sizes/voxel_sizes.json"
VALIDATION_SCAN = next(s.name for s in REAL_SCANS if s.project_role == "validation")


def model_name(row: dict) -> str:
    """A result row's model, with the ``dropped_pieces`` choice it was scored under where that is not background."""
    choice = row_choice(row)
    return row["bundle"] if choice == "background" else f"{row['bundle']} (dropped pieces: {choice})"


def _put(card: dict, model: str, key: str, value, source: Path) -> None:
    """Record one figure, refusing a second, different figure for the same model and check."""
    row = card.setdefault(model, {})
    if key in row and row[key] != value:
        raise SystemExit(f"{source}: {model} {key} is {value}, another result file says {row[key]}; score each model "
                         "once, or give folders from one evaluation")
    row[key] = value


def read_folder(folder: Path, card: dict) -> None:
    """Add the figures of every result file in ``folder`` to ``card`` (model -> check -> value)."""
    if (path := folder / "real_scans.json").is_file():
        for r in json.loads(path.read_text()):
            if "voxel_scale" in r:  # the network at another voxel size than its bundle's: not what it delivers
                continue
            dice = [m["dice"] for m in r["metrics"].values()]
            model = model_name(r)
            if r["quality"] == "normal" and r["role"] in ("validation", "left out"):
                key = "validation CT" if r["role"] == "validation" else "left-out MR"
                _put(card, model, key, round(sum(dice) / len(dice), 4), path)
                _put(card, model, key + " organs", {o: m["dice"] for o, m in r["metrics"].items()}, path)
                if "rival_pieces" in r:  # recorded since the Segmenter reports them
                    _put(card, model, key + " rival pieces", r["rival_pieces"], path)
            if r["quality"] == "fast" and r["role"] == "validation" and "liver" in r["metrics"]:
                _put(card, model, "validation CT fast liver", r["metrics"]["liver"]["dice"], path)
    if (path := folder / "external_liver_ct.json").is_file():
        for r in json.loads(path.read_text())["rows"]:
            if r["quality"] == "normal":
                _put(card, model_name(r), "LiTS", r["mean"], path)
    if (path := folder / "external_kidney_mr.json").is_file():
        ratios: dict[str, dict[str, float]] = {}
        for r in json.loads(path.read_text())["rows"]:
            if r["quality"] == "normal":
                ratios.setdefault(model_name(r), {})[r["scan"]] = r["ratio"]
        for model, by_scan in ratios.items():
            _put(card, model, "kidney MR ratios", by_scan, path)
    if (path := folder / VOXEL_SIZES_FILE).is_file():
        for r in json.loads(path.read_text()):
            if "model" in r:
                means = {scan: [round(sum(o["by_scale"][i] for o in organs.values()) / len(organs), 4)
                                for i in range(len(r["scales"]))] for scan, organs in r["dice"].items()}
                _put(card, r["model"], "voxel sizes", {"factors": r["scales"], "means": means}, path)
    for name in ENSEMBLE_FILES:
        if (path := folder / name).is_file():
            for r in json.loads(path.read_text())["rows"]:
                if r.get("bias_field"):
                    declared = r["bias_field"]["ensemble" if r.get("model_asks") else "single"]
                    _put(card, r["model"], "bias field", {f: v["lowest_agreement"] for f, v in declared.items()}, path)


def kidney_error(ratios: dict[str, float]) -> float:
    """The mean over the scans of ``|1 - ratio|``: how far the kidney volumes are from the reference."""
    return sum(abs(1.0 - r) for r in ratios.values()) / len(ratios)


def verdicts(row: dict, default: dict) -> dict[str, bool | None]:
    """Each rule of the module's docstring for ``row`` against ``default``: True, False, or None (not measured)."""
    def both(key):
        return key in row and key in default

    return {
        "validation CT": row["validation CT"] > default["validation CT"] if both("validation CT") else None,
        "left-out MR": row["left-out MR"] > default["left-out MR"] if both("left-out MR") else None,
        "LiTS": row["LiTS"] >= default["LiTS"] - LITS_SLACK if both("LiTS") else None,
        "kidney MR": (kidney_error(row["kidney MR ratios"]) <= kidney_error(default["kidney MR ratios"]) + KIDNEY_SLACK
                      if both("kidney MR ratios") else None),
        "bias field": min(row["bias field"].values()) >= AGREEMENT if "bias field" in row else None,
    }


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def sizes_text(row: dict) -> str:
    """The scans' mean Dice at each voxel size (``voxel sizes``), the validation scan first, ``-`` when not run."""
    sizes = row.get("voxel sizes")
    if not sizes:
        return "-"
    scans = sorted(sizes["means"], key=lambda s: (s != VALIDATION_SCAN, s))
    return "; ".join(f"{s}: " + " / ".join(_f(d) for d in sizes["means"][s]) for s in scans)


def markdown(card: dict, default: str, command: str) -> str:
    sizes = any("voxel sizes" in row for row in card.values())
    factors = next((row["voxel sizes"]["factors"] for row in card.values() if "voxel sizes" in row), [])
    sizes_head = f" mean Dice at {' / '.join(f'{f:g}' for f in factors)} times its voxel size (not a rule) |"
    lines = [
        "# Scorecard: every real-scan check beside the default",
        "",
        f"Normal quality; `{default}` is the default. Regenerate: `{command}`. Rules (a new default passes all five): "
        f"validation CT and left-out MR means above the default's; LiTS liver mean no more than {LITS_SLACK} below it; "
        f"external kidney MR mean |1 - volume ratio| no more than {KIDNEY_SLACK} above it; bias-field lowest agreement "
        f"at least {AGREEMENT} at every field (under the inference the bundle declares). `-`: not measured (fails).",
        "",
        "| model | validation CT (liver / spleen) | fast liver | left-out MR (organs) | LiTS | kidney MR ratios "
        "(mean \\|1 - r\\|) | bias-field agreement | passes |" + (sizes_head if sizes else ""),
        "|---|---|---:|---|---:|---|---|---|" + ("---|" if sizes else ""),
    ]
    for model, row in card.items():
        ct = row.get("validation CT organs", {})
        mr = row.get("left-out MR organs", {})
        ratios = row.get("kidney MR ratios")
        bias = row.get("bias field")
        if model == default:
            passes = "(the default)"
        else:
            v = verdicts(row, card.get(default, {}))
            passes = ", ".join(f"{k} {'yes' if ok else ('-' if ok is None else 'no')}" for k, ok in v.items())
        lines.append(
            f"| `{model}` | {_f(row.get('validation CT'))} ({' / '.join(_f(d) for d in ct.values()) or '-'}) "
            f"| {_f(row.get('validation CT fast liver'))} "
            f"| {_f(row.get('left-out MR'))} ({' / '.join(_f(d) for d in mr.values()) or '-'}) "
            f"| {_f(row.get('LiTS'))} "
            f"| {' / '.join(_f(r, 2) for r in ratios.values()) + f' ({_f(kidney_error(ratios))})' if ratios else '-'} "
            f"| {' / '.join(_f(a) for a in bias.values()) if bias else '-'} | {passes} |"
            + (f" {sizes_text(row)} |" if sizes else "")
        )
    rivals = [f"`{model}` {scan}: " + ", ".join(f"{organ} {kept:.0f} / {dropped:.0f} mL" for organ, (kept, dropped) in found.items())
              for model, row in card.items() for scan in ("validation CT", "left-out MR")
              if (found := row.get(scan + " rival pieces"))]
    if rivals:
        lines += ["", "Organs whose dropped piece was at least half the kept one (kept / dropped, model space; not a rule: "
                  "such a choice may flip with the voxel size or the windows, `training/reports/false-pieces/`): "
                  + "; ".join(rivals) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", action="append", required=True, type=Path, help="a folder of check results (repeat)")
    p.add_argument("--default", required=True, help="the default model as the result files name it, e.g. 'NAME 3.1.0'")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    card: dict = {}
    for folder in args.results:
        if not folder.is_dir():
            raise SystemExit(f"{folder}: no such folder of results")
        read_folder(folder, card)
    if args.default not in card:
        raise SystemExit(f"{args.default!r} is in none of the result files; models found: {sorted(card)}")
    card = {args.default: card.pop(args.default), **dict(sorted(card.items()))}
    shown = [str(f.resolve().relative_to(REPO)) if f.resolve().is_relative_to(REPO) else str(f) for f in [*args.results, args.out]]
    command = ("python training/scorecard.py " + " ".join(f"--results {r}" for r in shown[:-1])
               + f" --default \"{args.default}\" --out {shown[-1]}")
    record = {"default": args.default, "models": {m: {**row, **({"passes": verdicts(row, card[args.default])}
                                                             if m != args.default else {})} for m, row in card.items()}}
    text = markdown(card, args.default, command)
    save_results(args.out, "scorecard", record, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
