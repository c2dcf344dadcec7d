"""Score bundles on every real labelled scan, with each scan's role for that bundle.

    python training/evaluate_real_scans.py --bundle Resources/Models/abdomen-cmc-2.0.0.zip \
        --bundle Resources/Models/abdomen-ummkd-1.0.0.zip --out training/reports/real-scans

The real scans are the three of ``../shared/data`` (see its README): ``abdomen_ct_01`` and
``abdomen_mr_01`` (the project's training scans) and ``chest_abdomen_ct_02`` (the validation scan:
no recipe trains on it). A scan's role for a bundle is read from the bundle's own training
provenance: **train** when the bundle trained on it, **left out** when it is a training scan that
this bundle's recipe excluded, **validation** for the validation scan. Each bundle segments each
scan through the ordinary ``Segmenter`` at ``normal`` and ``fast`` quality; Dice, HD95 and ASSD per
organ are computed against the TotalSegmentator pseudo-labels. In ``chest_abdomen_ct_02`` both
kidneys are cut off at the lower edge of the scan, so only liver and spleen are scored there.

Writes ``real_scans.md`` and ``real_scans.json`` to ``--out``. Unseen scans (validation and left
out) come first in the table: they measure generalisation; train rows measure fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.results_files import out_option  # noqa: E402
from MultiModalSegLib.atomic import write_text_atomic  # noqa: E402
from MultiModalSegLib.dropped_pieces import DEFAULT_DROPPED_PIECES, DROPPED_PIECES  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from training.dropped_pieces_option import add_dropped_pieces_option, choice_text, row_choice  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA, abdomen_labels  # noqa: E402

SHARED = SHARED_DATA
ORGANS = [lab.name for lab in ABDOMEN_LABELS]
QUALITIES = ("normal", "fast")
README_MARKERS = ("<!-- real-scans:begin -->", "<!-- real-scans:end -->")
ROLE_ORDER = {"validation": 0, "left out": 1, "train": 2}


def real_scans(root: Path = SHARED) -> list[dict]:
    """The real labelled scans (:data:`training.real_scans.REAL_SCANS`) as dicts: name, modality,
    organs scored, project role, image and label paths below ``root``."""
    return [{"name": s.name, "modality": s.modality, "organs": list(s.organs), "project_role": s.project_role,
             "image": s.image(root), "label": s.label(root)} for s in REAL_SCANS]


def _dataset_path(recorded: str) -> Path | None:
    """A dataset file named in a bundle's provenance, found here: as recorded, else by its path
    below the repository (provenance written on another machine)."""
    path = Path(recorded)
    if path.is_file():
        return path
    parts = path.parts
    for anchor in ("Resources", "training"):
        if anchor in parts:
            candidate = REPO.joinpath(*parts[parts.index(anchor):])
            if candidate.is_file():
                return candidate
    return None


def trained_case_names(metadata: dict) -> set[str]:
    """Names of the cases of the bundle's training datasets that its recipe did not exclude
    (training split only: validation cases are scored, not trained on): from the data set records of
    its provenance (name, sha256, cases), or, for an older bundle that recorded paths, from the files."""
    records = metadata.get("training", {}).get("datasets", [])
    if records and all(isinstance(r, dict) for r in records):
        from MultiModalSegLib.provenance import trained_case_names as recorded_names

        return recorded_names(metadata)
    config = metadata.get("training", {}).get("config", {})
    names: set[str] = set()
    for entry in config.get("datasets", []):
        entry = entry if isinstance(entry, dict) else {"path": entry}
        path = _dataset_path(entry["path"])
        if path is None:
            continue
        doc = json.loads(path.read_text())
        names |= {c.get("name") or Path(c["image"]).name.split(".")[0] for c in doc.get("training", [])}
        names -= set(entry.get("exclude", []))
    return names


def role(scan: dict, trained: set[str]) -> str:
    if scan["name"] in trained:
        return "train"
    return "validation" if scan["project_role"] == "validation" else "left out"


def score(bundle: Path, scans: list[dict], qualities: tuple[str, ...] = QUALITIES, largest_piece: bool = True,
          dropped_pieces: tuple[str, ...] = (DEFAULT_DROPPED_PIECES,), voxel_scales: tuple[float, ...] = (1.0,)) -> list[dict]:
    """One row per scan, quality, voxel scale and choice of ``dropped_pieces`` (``Segmenter(dropped_pieces=...)``):
    Dice / HD95 / ASSD per scored organ, seconds, role. Each scan and its reference are read once for every quality.
    ``largest_piece`` False: every piece of each organ scored, not only the largest that the ``Segmenter`` keeps
    by default (what a run's in-run validation scores). ``voxel_scales``: the network also run at the bundle's
    voxel size times each (``Quality.spacing_scale``; organs differ in size between patients)."""
    from MultiModalSegLib.inference import QUALITIES as SETTINGS
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image, read_labelmap
    from MultiModalSegLib.metrics import evaluate_labels

    segmenters = {(quality, scale, dropped): Segmenter(bundle, device="cpu", amp=False, largest_component=largest_piece,
                                                       quality=dataclasses.replace(SETTINGS[quality], spacing_scale=scale),
                                                       dropped_pieces=dropped)
                  for quality in qualities for scale in voxel_scales for dropped in dropped_pieces}
    metadata = next(iter(segmenters.values())).bundle.metadata
    trained = trained_case_names(metadata)
    volumes = {scan["name"]: read_image(scan["image"]) for scan in scans}
    references = {}
    for scan in scans:
        ref = read_labelmap(scan["label"], reference=volumes[scan["name"]])
        references[scan["name"]] = (abdomen_labels(ref.array), ref.spacing)
    rows = []
    for (quality, scale, dropped), seg in segmenters.items():
        for scan in scans:
            t0 = time.perf_counter()
            result = seg.segment(volumes[scan["name"]], scan["modality"])
            seconds = time.perf_counter() - t0
            ref_array, ref_spacing = references[scan["name"]]
            metrics = evaluate_labels(np.asarray(result.labels.array), ref_array, ABDOMEN_LABELS, ref_spacing)
            rows.append({
                "bundle": f"{metadata['name']} {metadata['version']}", "bundle_file": bundle.name,
                "scan": scan["name"], "modality": scan["modality"], "role": role(scan, trained), "quality": quality,
                "organs": scan["organs"], "seconds": round(seconds, 2), "dropped_pieces": dropped,
                **({} if scale == 1.0 else {"voxel_scale": scale}),
                "metrics": {o: {k: (None if math.isnan(v) else round(float(v), 4)) for k, v in metrics[o].items()}
                            for o in scan["organs"]},
                "rival_pieces": {o: list(v) for o, v in result.rival_pieces.items()},  # every organ, scored or not
                "out_of_place": list(result.out_of_place),  # organs whose largest piece was dropped as out of place
            })
    return rows


def mean_dice(row: dict) -> float | None:
    values = [row["metrics"][o]["dice"] for o in row["organs"] if row["metrics"][o]["dice"] is not None]
    return float(np.mean(values)) if values else None


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _quality(row: dict) -> str:
    """The row's quality, and its voxel scale where it is not the bundle's own voxel size."""
    return row["quality"] + (f", voxel x{row['voxel_scale']:g}" if "voxel_scale" in row else "")


def markdown(rows: list[dict]) -> str:
    """The table: unseen scans first, then train; one row per bundle, scan and quality."""
    ordered = sorted(rows, key=lambda r: (ROLE_ORDER[r["role"]], r["scan"], r["bundle"], QUALITIES.index(r["quality"]),
                                          r.get("voxel_scale", 1.0), DROPPED_PIECES.index(row_choice(r))))
    head = ["scan", "role", "model", "quality", *ORGANS, "mean (scored)", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|" + "---:|" * (len(head) - 4)]
    for r in ordered:
        cells = [_f(r["metrics"][o]["dice"]) if o in r["organs"] else "n/s" for o in ORGANS]
        model = f"`{r['bundle']}`" + choice_text(r)
        lines.append("| " + " | ".join([r["scan"], r["role"], model, _quality(r), *cells,
                                        _f(mean_dice(r)), f"{r['seconds']:.1f}"]) + " |")
    rivals = [f"{r['scan']} `{r['bundle']}` {_quality(r)}{choice_text(r, ' ({})')}: {organ} {kept:.0f} mL kept, {dropped:.0f} mL dropped"
              + (" (the largest, out of place)" if organ in r.get("out_of_place", ()) else "")
              for r in ordered for organ, (kept, dropped) in r.get("rival_pieces", {}).items()]
    if rivals:  # where the largest-piece step chose between near equals (the Segmenter warns of each)
        lines += ["", "Organs whose dropped piece was at least half the kept one's volume (model space; the choice between "
                  "them may flip with the voxel size or the windows, see `training/reports/false-pieces/`): "
                  + "; ".join(rivals) + "."]
    return "\n".join(lines)


def command(args: argparse.Namespace, default_out: Path) -> str:
    """The command line that writes this table again (``--out`` only where it is not the default)."""
    parts = ["python training/evaluate_real_scans.py", *(f"--bundle {b}" for b in args.bundle),
             *(f"--quality {q}" for q in args.quality or ()), *(["--every-piece"] if args.every_piece else []),
             *(f"--dropped-pieces {d}" for d in args.dropped_pieces or ()),
             *(f"--voxel-scale {v:g}" for v in args.voxel_scale or ())]
    return " ".join(parts) + out_option(args.out, default_out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score bundles on the real labelled scans (roles from provenance).")
    parser.add_argument("--bundle", action="append", required=True, type=Path, help="a bundle (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "training" / "reports" / "real-scans")
    parser.add_argument("--data", type=Path, default=SHARED, help=f"the real scans' folder (default {SHARED})")
    parser.add_argument("--quality", choices=QUALITIES, action="append", help="default: both")
    parser.add_argument("--readme", action="store_true", help="also copy the table into README.md (real-scans block)")
    parser.add_argument("--every-piece", action="store_true",
                        help="score every piece of each organ, not only its largest (the Segmenter's default keeps the largest)")
    add_dropped_pieces_option(parser)
    parser.add_argument("--voxel-scale", type=float, action="append",
                        help="also run the network at the bundle's voxel size times this (repeatable; default: 1 only)")
    args = parser.parse_args(argv)
    if (args.every_piece or args.voxel_scale) and args.readme:
        parser.error("--every-piece and --voxel-scale score what the module does not deliver; leave out --readme")
    if any(v <= 0 for v in args.voxel_scale or ()):
        parser.error(f"--voxel-scale {min(args.voxel_scale):g}: give a factor above 0, e.g. 0.9 or 1.1")
    scans = real_scans(args.data)
    missing = [str(s["image"]) for s in scans if not Path(s["image"]).is_file()]
    if missing:
        parser.error(f"real scans not found: {missing}; pass --data with the folder of ../shared/data")
    rows = [row for b in args.bundle for row in score(b, scans, tuple(args.quality or QUALITIES), largest_piece=not args.every_piece,
                                                      dropped_pieces=tuple(args.dropped_pieces or (DEFAULT_DROPPED_PIECES,)),
                                                      voxel_scales=tuple(args.voxel_scale or (1.0,)))]
    args.out.mkdir(parents=True, exist_ok=True)
    text = (
        "# Real-scan accuracy\n\n"
        "Dice against TotalSegmentator pseudo-labels, through the ordinary `Segmenter` on the CPU. Role: "
        "`validation` = a scan no recipe trains on; `left out` = a training scan this model's recipe excluded; "
        "`train` = the model trained on it (fit, not generalisation). `n/s`: not scored (the organ is cut off "
        "in that scan). " + ("Every piece of each organ scored (`--every-piece`), not only the largest that the `Segmenter` "
        "keeps by default. " if args.every_piece else "") + f"Regenerate: `{command(args, parser.get_default('out'))}`.\n\n"
        + markdown(rows) + "\n"
    )
    write_text_atomic(args.out / "real_scans.md", text)
    write_text_atomic(args.out / "real_scans.json", json.dumps(rows, indent=1) + "\n")
    if args.readme:
        sys.path.insert(0, str(REPO / "training" / "experiments"))
        from compare_methods import splice_readme

        source = (args.out / "real_scans.md").resolve().relative_to(REPO) if args.out.resolve().is_relative_to(REPO) else args.out
        splice_readme(REPO / "README.md", README_MARKERS, [f"From `{source}` (written by `training/evaluate_real_scans.py`):", "", markdown(rows)])
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
