"""``mmseg segment INPUT...``: segment images with one model load.

Everything that can be refused is refused before the model loads and before anything is written:
a missing input, a misspelt ``--device`` and an output path that is a file or not writable before
anything heavy is imported (:func:`check`); then an unknown ``--modality``, an ambiguous DICOM
folder, an output that would replace an input. Existing outputs are skipped before the model loads.
Outputs get one name per input (see :mod:`.inputs`); the output folder is created only when the
first result is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..device import check_device_name
from ..dropped_pieces import DEFAULT_DROPPED_PIECES, DROPPED_PIECES
from ..errors import InputError, OutputError
from .inputs import (
    IMAGE_SUFFIXES,
    CaseInput,
    case_name,
    check_inputs_exist,
    expand_inputs,
    is_image_file,
    plan_inputs,
)
from .options import DEVICE_HELP, OUTPUT_FLAGS

__all__ = ["IMAGE_SUFFIXES", "OUTPUT_FORMATS", "case_name", "expand_inputs", "is_image_file", "register", "run"]

OUTPUT_FORMATS = ("seg.nrrd", "nii.gz", "nrrd")

TRUST_HELP = (
    "bundle path or models-manifest name (default: the default model). A manifest name is always the "
    "manifest's model, checked against its sha256; a bundle given by path is verified when its sha256 is "
    "the manifest's, trusted when it is in your trusted list (`mmseg models trust PATH`), otherwise loaded "
    "with an 'unverified' warning; an altered copy of a manifest model is refused"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment CT or MR images with a joint model",
        description="Segment image files, DICOM folders, folders of them or .txt/.csv lists with one model load. "
        "Each input gets one output in the output folder; existing outputs are skipped before the model loads. "
        "A result in which every organ is empty, or a given --modality that detection contradicts, is reported on "
        "stderr and in the summary line. Exit code: 0 when every input was segmented or skipped, 1 when one failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, DICOM folders, folders of images or of case folders, or .txt/.csv lists")  # fmt: skip
    p.add_argument(*OUTPUT_FLAGS, dest="output", metavar="FOLDER", required=True,
                   help="output folder, created when the first result is written (--out is an alias)")  # fmt: skip
    p.add_argument("--modality", default="auto",
                   help="CT, MR, ... or auto: the DICOM tag, else the intensities (default: auto); a given CT or MR "
                   "that detection contradicts is reported")  # fmt: skip
    p.add_argument("--model", help=TRUST_HELP)
    p.add_argument("--series", metavar="UID",
                   help="the SeriesInstanceUID to segment in DICOM folders holding several, or 'all' for one output per "
                   "series (default: a folder's only series; a folder holding several is refused)")  # fmt: skip
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")
    p.add_argument("--quality", default="normal", choices=("normal", "fast"),
                   help="normal: overlapping windows blended with Gaussian weights; fast: training-size windows side by side, "
                   "each voxel computed about once (a small volume, where that saves little, runs as normal) (default: normal)")  # fmt: skip
    p.add_argument("--format", default="seg.nrrd", choices=OUTPUT_FORMATS, help="output file format (default: seg.nrrd)")
    p.add_argument("--probabilities", action="store_true", help="also write class probabilities (default: off)")
    p.add_argument("--no-largest-component", action="store_true",
                   help="keep every connected piece of each organ (default: only each organ's largest piece)")  # fmt: skip
    p.add_argument("--no-organ-layout", action="store_true",
                   help="keep each organ's largest piece even where it lies far from where the organ lies among the "
                        "others (default: such a piece is dropped for one of at least half its size that lies there)")  # fmt: skip
    p.add_argument("--dropped-pieces", default=DEFAULT_DROPPED_PIECES, choices=DROPPED_PIECES,
                   help="what the voxels of an organ's dropped piece become: their next most probable class (a piece of "
                        f"one organ inside another goes to that organ), or background (default: {DEFAULT_DROPPED_PIECES})")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them); never an input")
    p.add_argument("--strict", action="store_true",
                   help="a result in which every organ is empty is a failure: nothing is written for it and the exit "
                   "code is 1 (default: written, with a warning)")  # fmt: skip
    p.add_argument("--progress", action="store_true",
                   help="stdout carries JSON lines only: progress records ({\"fraction\": ...}), then one record per "
                   "input ({\"summary\": ...}) (default: off, human-readable lines)")  # fmt: skip
    p.set_defaults(func=run, check=check)


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


def check(args: argparse.Namespace) -> None:
    """What is refused before anything heavy (SimpleITK, PyTorch, MONAI) is imported: a misspelt
    ``--device``, an output folder that cannot be written, a missing input."""
    from ..atomic import check_output_folder

    check_device_name(args.device)
    check_output_folder(args.output)
    check_inputs_exist(args.inputs)


def _emit(args: argparse.Namespace, line: str, record: dict) -> None:
    """One stdout line: ``line``, or under ``--progress`` the JSON ``record`` carrying it as ``summary``."""
    print(json.dumps({**record, "summary": line}) if args.progress else line, flush=True)


def naming_once(path: Path, message: str) -> str:
    """``message`` prefixed by ``path`` unless it names it already (an error names its file once)."""
    return message if str(path) in message else f"{path}: {message}"


def summary_line(path: Path, seg, written: list[Path]) -> str:
    """``INPUT: MODALITY (why); seconds; organ volumes -> outputs``, then any warning in a few words."""
    vols = ", ".join(f"{k} {v:.0f} mL" for k, v in seg.volumes_ml().items())
    line = f"{path}: {seg.modality} ({seg.modality_reason}); {seg.seconds:.1f} s; {vols} -> {', '.join(map(str, written))}"
    flags = []
    if seg.modality_disagrees:
        flags.append(f"the image looks like {seg.detected_modality}")
    if seg.all_empty:
        flags.append("no organ found (every label is empty)")
    flags += [f"{organ}: its largest piece, about {dropped:.0f} mL, dropped as out of place for one of {kept:.0f} mL, check it"
              if organ in seg.out_of_place else f"{organ}: a piece of about {dropped:.0f} mL dropped beside one of {kept:.0f} mL, check it"
              for organ, (kept, dropped) in seg.rival_pieces.items()]
    return line + (f"; warning: {'; '.join(flags)}" if flags else "")


def result_record(index: int, total: int, path: Path, seg, written: list[Path]) -> dict:
    """The ``--progress`` record of one segmented input (the facts of :class:`..inference.Segmentation`)."""
    return {
        "case": index, "cases": total, "input": str(path), "outputs": [str(w) for w in written],
        "modality": seg.modality, "modality_reason": seg.modality_reason,
        "detected_modality": seg.detected_modality, "detected_reason": seg.detected_reason,
        "modality_disagrees": seg.modality_disagrees, "all_empty": seg.all_empty,
        "rival_pieces": {organ: {"kept_ml": kept, "dropped_ml": dropped, "out_of_place": organ in seg.out_of_place}
                         for organ, (kept, dropped) in seg.rival_pieces.items()},
        "seconds": round(seg.seconds, 3), "volumes_ml": {k: round(v, 3) for k, v in seg.volumes_ml().items()},
        "warnings": seg.warnings(),
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_output_folder
    from ..launch import launch_info, shard_index

    _check_modality(args.modality)
    out_dir = check_output_folder(args.output)
    cases = plan_inputs(args.inputs, args.series)
    check_targets(cases, out_dir, args.format, args.probabilities)
    launch = launch_info()
    if launch is not None:  # under torchrun each rank segments cases rank::world, on its own GPU; no communication
        total = len(cases)
        cases = [cases[i] for i in shard_index(total, launch.rank, launch.world_size)]
        print(f"rank {launch.rank} of {launch.world_size}: {len(cases)} of {total} inputs", file=sys.stderr)
    todo = []
    for i, case in enumerate(cases):
        target = _targets(case, out_dir, args.format, False)[0]
        if target.exists() and not args.overwrite:
            _emit(args, f"{case.path}: {target} exists, skipped (--overwrite replaces it)",
                  {"case": i, "cases": len(cases), "input": str(case.path), "skipped": str(target)})  # fmt: skip
        else:
            todo.append((i, case, target))
    if not todo:  # every output exists: no model is loaded
        return 0
    return _segment(args, todo, len(cases), launched=launch is not None)


def _segment(args: argparse.Namespace, todo: list[tuple[int, CaseInput, Path]], total: int, launched: bool) -> int:
    """Load the model once and segment the inputs still to do; 1 when one of them failed."""
    from ..device import resolve_device
    from ..inference import Segmenter
    from ..launch import worker_device
    from ..trust import UNVERIFIED

    device = str(worker_device(resolve_device(args.device))) if launched else args.device
    segmenter = Segmenter(
        args.model, device=device, quality=args.quality, largest_component=not args.no_largest_component,
        organ_layout=not args.no_organ_layout, dropped_pieces=args.dropped_pieces,
    )
    print(f"model: {segmenter.bundle.name} ({segmenter.bundle.path}) on {segmenter.device}", file=sys.stderr)
    if segmenter.provenance.status == UNVERIFIED:
        print(f"mmseg segment: warning: {segmenter.provenance.message}.", file=sys.stderr)
    _check_model_modality(segmenter, args.modality)
    failures = 0
    for i, case, target in todo:

        def progress(fraction: float, message: str, i: int = i) -> None:
            if args.progress:
                print(json.dumps({"case": i, "cases": total, "fraction": round(fraction, 3), "message": message}), flush=True)

        existed = target.exists()
        try:
            seg, written = segmenter.segment_file(
                case.path, target, args.modality, probabilities=args.probabilities, overwrite=args.overwrite,
                progress=progress, series=case.series, refuse_empty=args.strict,
            )  # fmt: skip
        except OutputError:
            if not existed:  # a case is written whole or not at all: its new segmentation goes too
                target.unlink(missing_ok=True)
            raise
        except InputError as exc:
            failures += 1
            message = naming_once(case.path, str(exc))
            print(f"mmseg segment: error: {message}", file=sys.stderr)
            if args.progress:
                _emit(args, f"{message} (failed)", {"case": i, "cases": total, "input": str(case.path), "error": message})
            continue
        for warning in seg.warnings():
            print(f"mmseg segment: warning: {case.path}: {warning}.", file=sys.stderr)
        _emit(args, summary_line(case.path, seg, written), result_record(i, total, case.path, seg, written))
    if failures:
        print(f"{failures} of {len(todo)} inputs failed", file=sys.stderr)
    return 1 if failures else 0
