"""Score bundles on a real liver CT that the project does not hold (LiTS case 117), side by side.

    pip download --no-deps liver-ct-segmentation-package==1.6.0 -d /tmp/lits
    python training/external_liver_ct.py --wheel /tmp/lits/liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl \
        --bundle Resources/Models/abdomen-ummkd-synth-3.0.0.zip --bundle Resources/Models/abdomen-ummkd-1.0.0.zip

The ``liver-ct-segmentation-package`` 1.6.0 wheel (PyPI) carries a 128 x 128 x 128 crop around the
liver of LiTS case 117 (a portal-venous abdominal CT in HU, with a large tumour) and its manual
labels (1 liver, 2 tumour), as MRC files. The LiTS terms (CC BY-NC-SA) allow evaluation, not
redistribution: this script reads the wheel where it lies and the project keeps only the scores. No
recipe trains on it; it is a check of generalisation to a scanner, a patient and a label source
(manual, not TotalSegmentator) that the project's scans do not share.

The MRC files store neither voxel size nor orientation, so both are read off the anatomy and
stated here: the file's first axis runs from the patient's right to left (the liver at its low
end), the second from anterior to posterior (the spine at its high end), the third from inferior to
superior (the kidney below the liver). The voxel size is not known: vertebral bodies with their
discs repeat every 21 voxels along the third axis (about 1.6 mm for thoraco-lumbar levels of 30-35
mm), and a reader without a size takes 1 mm. So every model is scored at four assumed geometries
from 1 mm isotropic to 1.6 x 1.6 x 1.9 mm (:data:`GEOMETRIES`; ``--spacing`` to choose others), and
the mean over them ranks models: a model that finds the liver only at one scale is not robust to
what it will meet. Liver Dice counts the tumour as liver (the models'
liver, like TotalSegmentator's, includes lesions); nothing else is scored (the crop cuts every
other organ).
"""

from __future__ import annotations

import argparse
import functools
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_files import out_option, save_results  # noqa: E402
from MultiModalSegLib.errors import InputError  # noqa: E402
from training.averaged_segmenter import described, segmenter  # noqa: E402
from training.dropped_pieces_option import add_dropped_pieces_option, choice_text, dropped_option  # noqa: E402
from training.wheel_data import check_wheel  # noqa: E402

WHEEL_REQUIREMENT = "liver-ct-segmentation-package==1.6.0"
WHEEL_SHA256 = "67ffa526d8500ce5e3d9f2c96c1690543d811d352d93d531301d35791b9d6bba"  # the file PyPI serves
IMAGE_MEMBER = "liver_ct_segmentation_package/data/img_117.mrc"
LABEL_MEMBER = "liver_ct_segmentation_package/data/lab_117.mrc"
MRC_DTYPES = {0: "<i1", 1: "<i2", 2: "<f4", 6: "<u2"}  # MRC 2014 modes this reader accepts
# assumed voxel sizes in mm along the file's axes 0, 1, 2 (right-left, anterior-posterior, inferior-superior)
GEOMETRIES = ((1.0, 1.0, 1.0), (1.2, 1.2, 1.4), (1.4, 1.4, 1.6), (1.6, 1.6, 1.9))


def read_mrc(data: bytes, name: str = "MRC file") -> np.ndarray:
    """The array of an MRC file's bytes, indexed as stored ``[section, row, column]`` (C order)."""
    if len(data) < 1024:
        raise InputError(f"{name}: {len(data)} bytes is shorter than an MRC header (1024); give an MRC volume.")
    nx, ny, nz, mode = struct.unpack("<4i", data[:16])
    extended = struct.unpack("<i", data[92:96])[0]
    if mode not in MRC_DTYPES or min(nx, ny, nz) < 1 or extended < 0:
        raise InputError(f"{name}: not an MRC volume this reader knows (size {nx} x {ny} x {nz}, mode {mode}); "
                         f"modes read: {sorted(MRC_DTYPES)}.")
    dtype = np.dtype(MRC_DTYPES[mode])
    start, count = 1024 + extended, nx * ny * nz
    if len(data) < start + count * dtype.itemsize:
        raise InputError(f"{name}: the header promises {nx} x {ny} x {nz} voxels but the file is cut short; fetch it again.")
    return np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(nz, ny, nx)


@functools.lru_cache(maxsize=2)
def _lits_arrays(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """The image (float32) and liver mask (uint8, liver and tumour) of the wheel's case, as Volume arrays
    ``[z, y, x]``: read once however many geometries are scored."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            image = read_mrc(archive.read(IMAGE_MEMBER), IMAGE_MEMBER)
            label = read_mrc(archive.read(LABEL_MEMBER), LABEL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise InputError(f"{wheel}: not the liver-ct-segmentation-package 1.6.0 wheel ({error}); "
                         "fetch it with `pip download --no-deps liver-ct-segmentation-package==1.6.0`.") from None
    # file axes (0 right->left, 1 anterior->posterior, 2 inferior->superior) = LPS x, y, z; Volume arrays are [z, y, x]
    to_zyx = (2, 1, 0)
    return (np.ascontiguousarray(image.transpose(to_zyx)).astype(np.float32),
            np.ascontiguousarray(np.isin(label, (1, 2)).transpose(to_zyx)).astype(np.uint8))


def lits_volumes(wheel: Path, spacing: tuple[float, float, float] = GEOMETRIES[0]):
    """(image, liver reference) of LiTS case 117 from the wheel, as :class:`Volume` in LPS (see the module text)."""
    from MultiModalSegLib.io import Volume

    image, liver = _lits_arrays(Path(wheel))
    geometry = {"spacing": tuple(float(s) for s in spacing), "origin": (0.0, 0.0, 0.0), "direction": tuple(np.eye(3).ravel())}
    return Volume(image, **geometry), Volume(liver, **geometry)


def score(bundle: Path, volumes: dict[tuple[float, ...], tuple], dropped_pieces: str | None = None) -> list[dict]:
    """Liver Dice of ``bundle`` (or ``A+B``, their probabilities averaged) at each quality on the volume of each
    assumed geometry, with the seconds it took; ``dropped_pieces``: the ``Segmenter``'s choice (None: its default)."""
    from MultiModalSegLib.labels import LabelInfo
    from MultiModalSegLib.metrics import dice_scores

    rows = []
    for quality in ("normal", "fast"):
        seg = segmenter(bundle, device="cpu", amp=False, quality=quality, **dropped_option(dropped_pieces))
        metadata = seg.bundle.metadata
        liver_label = LabelInfo(next(lab["value"] for lab in metadata["labels"] if lab["name"] == "liver"), "liver", (0, 0, 0))
        references = {spacing: liver.array.astype(np.int32) * liver_label.value for spacing, (_, liver) in volumes.items()}
        row = {"bundle": described(seg), "dropped_pieces": seg.dropped_pieces, "quality": quality, "liver_dice": {}, "seconds": 0.0}
        for spacing, (ct, _) in volumes.items():
            t0 = time.perf_counter()
            result = seg.segment(ct, "CT")
            row["seconds"] = round(row["seconds"] + time.perf_counter() - t0, 2)
            found = dice_scores(np.asarray(result.labels.array), references[spacing], [liver_label])["liver"]
            row["liver_dice"][_name(spacing)] = round(found, 4)
        row["mean"] = round(float(np.mean(list(row["liver_dice"].values()))), 4)
        rows.append(row)
    return rows


def _name(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{s:g}" for s in spacing) + " mm"


def markdown(rows: list[dict], command: str) -> str:
    geometries = list(rows[0]["liver_dice"])
    lines = [
        "# A real liver CT the project does not hold: LiTS case 117",
        "",
        "Liver Dice (tumour counted as liver) against the manual LiTS labels, through the ordinary `Segmenter` on "
        "the CPU, at each assumed voxel size (right-left x anterior-posterior x inferior-superior; the file stores "
        "none: see `training/external_liver_ct.py`), and their mean. No model trained on this scan. Regenerate "
        f"(after `pip download --no-deps liver-ct-segmentation-package==1.6.0 -d /tmp/lits`): `{command}`.",
        "",
        "| model | quality | " + " | ".join(geometries) + " | mean | seconds (all) |",
        "|---|---|" + "---:|" * (len(geometries) + 2),
    ]
    lines += [f"| `{r['bundle']}`{choice_text(r)} | {r['quality']} | " + " | ".join(f"{r['liver_dice'][g]:.3f}" for g in geometries)
              + f" | {r['mean']:.3f} | {r['seconds']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl")
    parser.add_argument("--bundle", action="append", required=True, type=Path, help="a bundle, or bundles joined by + to average their probabilities (repeatable)")
    parser.add_argument("--spacing", type=float, nargs=3, action="append", metavar=("RL", "AP", "IS"),
                        help="an assumed voxel size in mm (repeatable; default: the four of GEOMETRIES)")
    parser.add_argument("--out", type=Path, default=REPO / "training" / "reports" / "real-scans",
                        help="writes external_liver_ct.md and .json here (default: %(default)s)")
    add_dropped_pieces_option(parser)
    args = parser.parse_args(argv)
    geometries = [tuple(s) for s in args.spacing] if args.spacing else list(GEOMETRIES)
    try:
        check_wheel(args.wheel, WHEEL_SHA256, WHEEL_REQUIREMENT)
        volumes = {spacing: lits_volumes(args.wheel, spacing) for spacing in geometries}
    except InputError as error:
        parser.error(str(error))
    rows = [row for bundle in args.bundle for dropped in args.dropped_pieces or (None,) for row in score(bundle, volumes, dropped)]
    command = ("python training/external_liver_ct.py --wheel /tmp/lits/" + args.wheel.name + " "
               + " ".join(f"--bundle {b}" for b in args.bundle)
               + "".join(" --spacing " + " ".join(f"{s:g}" for s in g) for g in geometries if args.spacing)
               + "".join(f" --dropped-pieces {d}" for d in args.dropped_pieces or ())
               + out_option(args.out, parser.get_default("out"), REPO))
    text = markdown(rows, command)
    save_results(args.out, "external_liver_ct", {"geometries": geometries, "rows": rows}, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
