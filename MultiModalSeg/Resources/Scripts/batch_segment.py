"""Segment many volumes with the MultiModalSeg Logic inside 3D Slicer, headless.

    Slicer --no-main-window --python-script batch_segment.py --input DIR_OR_CSV --output DIR \
        [--modality auto|CT|MR] [--model NAME_OR_BUNDLE] [--device auto|cpu|cuda] [--quality normal|fast]

Each volume is loaded into the scene, segmented by ``MultiModalSegLogic.process`` (the same code
path as the module's Apply button), saved as ``OUTPUT/<case>.seg.nrrd`` (written to a temporary
name, then renamed) and removed from the scene. A case whose output exists is skipped, so a rerun
finishes an interrupted batch; ``--overwrite`` redoes it. Inputs are expanded like
``mmseg segment``'s (image files, folders of images, ``.txt`` / ``.csv`` lists with an ``image``
column); on a machine without Slicer, ``mmseg segment DIR_OR_CSV --output DIR`` does the same job.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import slicer

MODULE_DIR = Path(__file__).resolve().parents[2]
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from MultiModalSegModuleLib import segmentation_logic as L  # noqa: E402  (conftest puts the module folder on sys.path)

L.ensure_library_importable()
from MultiModalSegLib.cli.segment import case_name, expand_inputs  # noqa: E402
from MultiModalSegLib.errors import MMSegError  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="batch_segment.py", description="Segment many volumes with MultiModalSeg in Slicer.")
    p.add_argument("--input", required=True, nargs="+", help="folder of images, image files, or .txt/.csv lists")
    p.add_argument("--output", required=True, help="output folder for <case>.seg.nrrd files")
    p.add_argument("--modality", default="auto")
    p.add_argument("--model", default=None, help="models-manifest name or bundle path (default: the default model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quality", default="normal", choices=("normal", "fast"))
    p.add_argument("--overwrite", action="store_true", help="redo cases whose output exists")
    p.add_argument("--no-install", action="store_true",
                   help="fail instead of installing missing Python packages (PyTorch, MONAI, ...) into Slicer")
    return p.parse_args(argv)


def slicer_volume_loader(path: Path):
    """Load an image file into the application's scene (inside Slicer)."""
    return slicer.util.loadVolume(str(path), {"show": False})


def save_segmentation(node, target: Path) -> Path:
    """Write a segmentation node to ``target`` (.seg.nrrd) atomically."""
    partial = target.with_name(f".{target.name[: -len('.seg.nrrd')]}.partial.seg.nrrd")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(partial))
    if not storage.WriteData(node):
        partial.unlink(missing_ok=True)
        raise L.SegmentationError(f"{target} could not be written; check the output folder.")
    os.replace(partial, target)
    return target


def run_batch(
    inputs: list[str],
    output: str | Path,
    *,
    logic: L.MultiModalSegLogic,
    load_volume: Callable[[Path], object],
    modality: str = "auto",
    model: str | None = None,
    device: str = "auto",
    quality: str = "normal",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, list[str]]:
    """Segment every input; returns the case names that were ``done``, ``skipped`` and ``failed``."""
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
    try:
        paths = expand_inputs(list(inputs))
    except MMSegError as exc:
        log(f"error: {exc}")
        summary["failed"].append(str(inputs))
        return summary
    scene = logic.mrmlScene
    for i, path in enumerate(paths, 1):
        case = case_name(path)
        target = out_dir / f"{case}.seg.nrrd"
        if target.exists() and not overwrite:
            summary["skipped"].append(case)
            log(f"[{i}/{len(paths)}] {case}: {target} exists, skipped")
            continue
        t0 = time.perf_counter()
        volume = segmentation = None
        try:
            volume = load_volume(path)
            if volume is None:
                raise L.SegmentationError(f"{path} could not be loaded as a volume; give a NIfTI, NRRD or MHA file.")
            job = logic.start(volume, modality, model, device, quality)
            job.wait()
            segmentation = job.segmentationNode
            save_segmentation(segmentation, target)
        except (L.SegmentationError, MMSegError) as exc:
            summary["failed"].append(case)
            log(f"[{i}/{len(paths)}] {case}: error: {exc}")
        else:
            summary["done"].append(case)
            warnings = "".join(f"; warning: {w}" for w in job.warnings)  # every organ empty, a contradicted modality
            log(f"[{i}/{len(paths)}] {case}: {time.perf_counter() - t0:.1f} s -> {target}{warnings}")
        finally:
            for node in (segmentation, volume):
                if node is not None and node.GetScene() is not None:
                    scene.RemoveNode(node)
    log(
        f"summary: {len(summary['done'])} segmented, {len(summary['skipped'])} skipped (already done), "
        f"{len(summary['failed'])} failed" + (f": {', '.join(summary['failed'])}" if summary["failed"] else "")
    )
    return summary


def ensure_dependencies(install: bool = True, log: Callable[[str], None] = print) -> list[str]:
    """Install the packages a stock Slicer lacks (as the panel's Install does), printing pip's output;
    returns what was installed. With ``install=False`` a missing package is an error."""
    missing = L.missing_packages()
    if not missing:
        return []
    if not install:
        raise L.SegmentationError(f"Slicer's Python lacks {', '.join(missing)}; run without --no-install to install them.")
    log(f"installing {', '.join(missing)} into Slicer's Python (once; a few minutes)")
    return L.install_dependencies(missing, log=log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        ensure_dependencies(install=not args.no_install)
    except L.SegmentationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = run_batch(
        args.input, args.output, logic=L.MultiModalSegLogic(), load_volume=slicer_volume_loader,
        modality=args.modality, model=args.model, device=args.device, quality=args.quality, overwrite=args.overwrite,
    )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    code = main()
    if hasattr(slicer, "app"):
        slicer.util.exit(code)
    else:
        sys.exit(code)
