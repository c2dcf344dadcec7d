"""``mmseg segment INPUT...``: segment images with one model load.

Everything that can be refused is refused before the model loads and before anything is written:
an unknown ``--modality``, an output path that is a file or not writable, an ambiguous DICOM folder,
an output that would replace an input. Outputs get one name per input (see :mod:`.inputs`); the
output folder is created only when the first result is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError, OutputError
from .inputs import IMAGE_SUFFIXES, CaseInput, case_name, expand_inputs, is_image_file, plan_inputs

__all__ = ["IMAGE_SUFFIXES", "OUTPUT_FORMATS", "case_name", "expand_inputs", "is_image_file", "register", "run"]

OUTPUT_FORMATS = ("seg.nrrd", "nii.gz", "nrrd")

TRUST_HELP = (
    "bundle path or models-manifest name (default: the default model). A manifest name is always the "
    "manifest's model, checked against its sha256; a bundle given by path is verified when its sha256 is "
    "the manifest's, trusted when it is in your trusted list (`mmseg models trust PATH`), otherwise loaded "
    "with an 'unverified' warning; an altered copy of a manifest model is refused"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment CT or MR images with a joint model")
    p.add_argument("inputs", nargs="+", help="image files, DICOM folders, folders of images or of case folders, or .txt/.csv lists")
    p.add_argument("--output", "-o", required=True, help="output folder (created when the first result is written)")
    p.add_argument("--modality", default="auto", help="CT, MR, ... or auto (DICOM tag, else intensities)")
    p.add_argument("--model", help=TRUST_HELP)
    p.add_argument("--series", metavar="UID", help="the SeriesInstanceUID to segment in DICOM folders holding several, or 'all' for one output per series")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quality", default="normal", choices=("normal", "fast"))
    p.add_argument("--format", default="seg.nrrd", choices=OUTPUT_FORMATS, help="output file format")
    p.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    p.add_argument("--no-largest-component", action="store_true", help="keep every connected piece of each organ")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them); never an input")
    p.add_argument("--progress", action="store_true", help="print JSON progress lines on stdout")
    p.set_defaults(func=run)


def _targets(case: CaseInput, out_dir: Path, fmt: str, probabilities: bool) -> list[Path]:
    from ..io import probabilities_path

    target = out_dir / f"{case.name}.{fmt}"
    return [target, probabilities_path(target)] if probabilities else [target]


def check_targets(cases: list[CaseInput], out_dir: Path, fmt: str, probabilities: bool) -> None:
    """Refuse, before any work, an output that is an input or that two cases would share."""
    inputs = {c.path.resolve(): c.path for c in cases}
    owner: dict[Path, CaseInput] = {}
    for case in cases:
        for target in _targets(case, out_dir, fmt, probabilities):
            resolved = target.resolve()
            if resolved in inputs:
                raise InputError(
                    f"{target}: this output would replace the input {inputs[resolved]}; "
                    "choose another --output folder or another --format."
                )
            if resolved in owner:
                raise InputError(
                    f"{target}: both {owner[resolved].path} and {case.path} would be written here; rename one input."
                )
            owner[resolved] = case


def _check_modality(name: str) -> None:
    if name.lower() != "auto":
        from ..modalities import get_modality

        get_modality(name)  # an unknown name raises InputError listing the known ones


def _check_model_modality(segmenter, name: str) -> None:
    """Refuse a ``--modality`` the model was not trained for, before any image is read."""
    if name.lower() == "auto":
        return
    from ..modalities import get_modality

    modality = get_modality(name).name
    if modality not in segmenter.modalities:
        raise InputError(
            f"--modality {modality}: model {segmenter.bundle.name!r} was trained for {segmenter.modalities}; "
            "choose a model for this modality or another --modality."
        )


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_output_folder
    from ..device import resolve_device
    from ..inference import Segmenter
    from ..training.distributed import launch_info, shard_index, worker_device
    from ..trust import UNVERIFIED

    _check_modality(args.modality)
    out_dir = check_output_folder(args.output)
    cases = plan_inputs(args.inputs, args.series)
    check_targets(cases, out_dir, args.format, args.probabilities)
    device = args.device
    launch = launch_info()
    if launch is not None:  # under torchrun each rank segments cases rank::world, on its own GPU; no communication
        total = len(cases)
        cases = [cases[i] for i in shard_index(total, launch.rank, launch.world_size)]
        device = str(worker_device(resolve_device(args.device)))
        print(f"rank {launch.rank} of {launch.world_size}: {len(cases)} of {total} inputs", file=sys.stderr)
    segmenter = Segmenter(
        args.model, device=device, quality=args.quality, largest_component=not args.no_largest_component
    )
    print(f"model: {segmenter.bundle.name} ({segmenter.bundle.path}) on {segmenter.device}", file=sys.stderr)
    if segmenter.provenance.status == UNVERIFIED:
        print(f"mmseg segment: warning: {segmenter.provenance.message}.", file=sys.stderr)
    _check_model_modality(segmenter, args.modality)
    failures = 0
    for i, case in enumerate(cases):
        target = _targets(case, out_dir, args.format, False)[0]
        if target.exists() and not args.overwrite:
            print(f"{case.path}: {target} exists, skipped (--overwrite replaces it)")
            continue

        def progress(fraction: float, message: str, i: int = i) -> None:
            if args.progress:
                print(json.dumps({"case": i, "cases": len(cases), "fraction": round(fraction, 3), "message": message}), flush=True)

        existed = target.exists()
        try:
            seg, written = segmenter.segment_file(
                case.path, target, args.modality, probabilities=args.probabilities, overwrite=args.overwrite,
                progress=progress, series=case.series,
            )  # fmt: skip
        except OutputError:
            if not existed:  # a case is written whole or not at all: its new segmentation goes too
                target.unlink(missing_ok=True)
            raise
        except InputError as exc:
            failures += 1
            print(f"{case.path}: error: {exc}", file=sys.stderr)
            continue
        vols = ", ".join(f"{k} {v:.0f} mL" for k, v in seg.volumes_ml().items())
        print(f"{case.path}: {seg.modality} ({seg.modality_reason}); {seg.seconds:.1f} s; {vols} -> {', '.join(map(str, written))}")
    if failures:
        print(f"{failures} of {len(cases)} inputs failed", file=sys.stderr)
    return 1 if failures else 0
