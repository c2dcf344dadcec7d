"""The README's table of default-model candidates, its figures read from the checks' committed result files.

    python training/candidates_table.py            # rewrite the README block
    python training/candidates_table.py --check    # exit 1 if the README block differs from the result files

``training/reports/candidates.json`` lists each candidate in order: what it changes, its state, the result
folders (under ``training/reports``) that scored it and the model names those files give it (a model exported
twice may carry two names; every figure must then agree, see ``scorecard.read_folder``). Figures come from
``real_scans.json`` (validation CT liver / spleen and fast liver, left-out MR as the bundle segments it),
``external_liver_ct.json`` (LiTS, mean over the assumed voxel sizes) and a normalisation-ensemble benchmark
(``normalisation_ensemble.json`` in the folder or its ``ensemble/``: the left-out MR under that ensemble, for a
model that does not declare it). A candidate without result files (stopped, not started, training) shows ``-``:
its in-run figures are in its report's ``status.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "training"))

from experiments.compare_methods import splice_readme  # noqa: E402
from scorecard import read_folder  # noqa: E402

CANDIDATES = REPO / "training" / "reports" / "candidates.json"
README_MARKERS = ("<!-- candidates:begin -->", "<!-- candidates:end -->")
ENSEMBLE_FILES = ("normalisation_ensemble.json", "ensemble/normalisation_ensemble.json")
HEADER = [
    "| candidate | change (3.0.0's recipe plus) | state | validation CT liver / spleen (fast liver) "
    "| left-out MR mean (liver / spleen / kidneys) | left-out MR, normalisation ensemble | LiTS liver | report |",
    "|---|---|---|---|---|---:|---:|---|",
]


def ensemble_means(folder: Path) -> dict[str, float | str]:
    """Model -> the left-out real MR's mean Dice under the normalisation ensemble ("declared" where the
    model's bundle asks for it: its ``real_scans.json`` figure is then that ensemble's)."""
    found: dict[str, float | str] = {}
    for name in ENSEMBLE_FILES:
        if (path := folder / name).is_file():
            for r in json.loads(path.read_text())["rows"]:
                if r.get("role") == "left out" and r.get("image") == "real":
                    found[r["model"]] = "declared" if r.get("model_asks") else r["mean"]["ensemble"]
    return found


def figures(entry: dict, reports: Path) -> dict:
    """The checks' figures for one candidate, merged over its result folders and model names."""
    card: dict = {}
    ensemble: dict[str, float | str] = {}
    for folder in entry.get("results", []):
        path = reports / folder
        if not path.is_dir():
            raise SystemExit(f"{CANDIDATES.name}: {entry['candidate']}: no result folder {path}")
        read_folder(path, card)
        ensemble.update(ensemble_means(path))
    merged: dict = {}
    for model in entry.get("models", []):
        if model not in card and model not in ensemble:
            raise SystemExit(f"{entry['candidate']}: {model!r} is in none of {entry.get('results')}; models there: {sorted(card)}")
        for key, value in {**card.get(model, {}), **({"ensemble": ensemble[model]} if model in ensemble else {})}.items():
            if key in merged and merged[key] != value:
                raise SystemExit(f"{entry['candidate']}: {key} is {value} for {model} and {merged[key]} for another of its names")
            merged[key] = value
    return merged


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def row(entry: dict, reports: Path) -> str:
    f = figures(entry, reports)
    ct, mr = f.get("validation CT organs"), f.get("left-out MR organs")
    ct_cell = " / ".join(_f(ct.get(o)) for o in ("liver", "spleen")) if ct else "-"
    if "validation CT fast liver" in f:
        ct_cell += f" ({_f(f['validation CT fast liver'])})"
    mr_cell = f"{_f(f['left-out MR'])} ({' / '.join(_f(d) for d in mr.values())})" if mr else "-"
    ens = f.get("ensemble")
    ens_cell = "its own" if ens == "declared" else _f(ens)
    report = entry.get("report")
    return (f"| {entry['candidate']} | {entry['change']} | {entry['state']} | {ct_cell} | {mr_cell} | {ens_cell} "
            f"| {_f(f.get('LiTS'))} | {f'`training/reports/{report}/`' if report else '-'} |")


def table(candidates: list[dict], reports: Path) -> list[str]:
    return [
        "From the result files that `training/reports/candidates.json` names (written by "
        "`training/candidates_table.py`; normal quality unless marked fast):",
        "",
        *HEADER,
        *(row(entry, reports) for entry in candidates),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare the README block with the result files, write nothing")
    p.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = p.parse_args(argv)
    if not args.readme.is_file():
        raise SystemExit(f"{args.readme}: no such file; give the README that holds the markers {README_MARKERS}")
    body = table(json.loads(CANDIDATES.read_text()), CANDIDATES.parent)
    if args.check:
        begin, end = README_MARKERS
        text = args.readme.read_text(encoding="utf-8")
        current = text.split(begin, 1)[1].split(end, 1)[0] if begin in text and end in text else None
        if current != "\n" + "\n".join(body) + "\n":
            print(f"{args.readme}: the candidates block differs from the result files; run python training/candidates_table.py")
            return 1
        return 0
    if not splice_readme(args.readme, README_MARKERS, body) and README_MARKERS[0] not in args.readme.read_text():
        raise SystemExit(f"{args.readme} lacks the markers {README_MARKERS}")
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
