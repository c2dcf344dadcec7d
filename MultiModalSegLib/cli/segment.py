"""``mmseg segment INPUT...``: segment images with one model load."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from ..errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
OUTPUT_FORMATS = ("seg.nrrd", "nii.gz", "nrrd")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment CT or MR images with a joint model")
    p.add_argument("inputs", nargs="+", help="image files, DICOM folders, folders of images, or .txt/.csv lists")
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--modality", default="auto", help="CT, MR, ... or auto (DICOM tag, else intensities)")
    p.add_argument("--model", help="bundle path or models-manifest name (default: the default model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quality", default="normal", choices=("normal", "fast"))
    p.add_argument("--format", default="seg.nrrd", choices=OUTPUT_FORMATS, help="output file format")
    p.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    p.add_argument("--no-largest-component", action="store_true", help="keep every connected piece of each organ")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument("--progress", action="store_true", help="print JSON progress lines on stdout")
    p.set_defaults(func=run)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.lower().endswith(".seg.nrrd")


def case_name(path: Path) -> str:
    name = path.name
    for suffix in (".seg.nrrd", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _from_list(path: Path) -> list[Path]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "image" not in rows[0]:
            raise InputError(f"{path}: a CSV list needs an 'image' column.")
        items = [r["image"] for r in rows]
    else:
        items = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(path.parent / i) if not Path(i).is_absolute() else Path(i) for i in items]


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as they are; a folder holding image files gives those files; any other folder is a
    DICOM series; ``.txt`` / ``.csv`` files list inputs (relative to the list)."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise InputError(f"{item}: no such file or folder; check the path.")
        if item.is_file() and item.suffix.lower() in (".txt", ".csv"):
            out.extend(_from_list(item))
        elif item.is_dir():
            files = sorted(p for p in item.iterdir() if is_image_file(p))
            out.extend(files or [item])
        else:
            out.append(item)
    return out


def run(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..inference import Segmenter
    from ..training.distributed import launch_info, shard_index, worker_device

    inputs = expand_inputs(args.inputs)
    device = args.device
    launch = launch_info()
    if launch is not None:  # under torchrun each rank segments cases rank::world, on its own GPU; no communication
        total = len(inputs)
        inputs = [inputs[i] for i in shard_index(total, launch.rank, launch.world_size)]
        device = str(worker_device(resolve_device(args.device)))
        print(f"rank {launch.rank} of {launch.world_size}: {len(inputs)} of {total} inputs", file=sys.stderr)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(
        args.model, device=device, quality=args.quality, largest_component=not args.no_largest_component
    )
    print(f"model: {segmenter.bundle.name} ({segmenter.bundle.path}) on {segmenter.device}", file=sys.stderr)
    failures = 0
    for i, path in enumerate(inputs):
        target = out_dir / f"{case_name(path)}.{args.format}"
        if target.exists() and not args.overwrite:
            print(f"{path}: {target} exists, skipped (--overwrite replaces it)")
            continue

        def progress(fraction: float, message: str, i: int = i) -> None:
            if args.progress:
                print(json.dumps({"case": i, "cases": len(inputs), "fraction": round(fraction, 3), "message": message}), flush=True)

        try:
            seg, written = segmenter.segment_file(
                path, target, args.modality, probabilities=args.probabilities, overwrite=args.overwrite, progress=progress
            )
        except InputError as exc:
            failures += 1
            print(f"{path}: error: {exc}", file=sys.stderr)
            continue
        vols = ", ".join(f"{k} {v:.0f} mL" for k, v in seg.volumes_ml().items())
        print(f"{path}: {seg.modality} ({seg.modality_reason}); {seg.seconds:.1f} s; {vols} -> {', '.join(map(str, written))}")
    if failures:
        print(f"{failures} of {len(inputs)} inputs failed", file=sys.stderr)
    return 1 if failures else 0
