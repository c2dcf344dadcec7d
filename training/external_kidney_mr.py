"""Segment two real kidney MR scans that the project does not hold, and compare kidney volumes, side by side.

    pip download --no-deps renalsegmentor==2.0.0 -d /tmp/renal
    python training/external_kidney_mr.py --wheel /tmp/renal/renalsegmentor-2.0.0-py3-none-any.whl \
        --bundle Resources/Models/abdomen-ummkd-synth-3.0.0.zip --bundle training/runs-in-progress/abdomen-ummkd-synth-19/bundle

The ``renalsegmentor`` 2.0.0 wheel (PyPI, GPL-3.0) carries two real abdominal MR scans of two people
as its test data: coronal-oblique T2-weighted turbo spin echo with fat suppression, one breath hold,
240 x 240 x 13 at 1.46 x 1.46 x 5.5 mm and 256 x 256 x 17 at 1.5 x 1.5 x 5.5 mm, tilted about 18 degrees
about the left-right axis. Both kidneys lie wholly in the slab; liver and spleen in part. The
project's left-out MR is a fat-dominated axial slab in which the organs are darker than fat: here
fat is suppressed and the kidneys are among the brightest tissues, another sequence and another
geometry. The wheel holds no manual labels. Its tests hold the total kidney volume that its own
network (a 2D CNN trained on such scans) measures on each, which this script reads from the wheel
(``segment/tests/test_tkv.py``, the ``tkv_cleaned`` of each scan) rather than typing it.

So what is measured is weaker than Dice and says so: per model and quality, each organ's volume
(ml), the total kidney volume beside that network's and their ratio, whether each kidney lies on
its own side of the body (the right kidney's centre to the patient's right of the left kidney's),
how far apart the two kidneys' centres lie from head to foot, how many pieces each kidney has, and a figure of the coronal slices with each model's outlines for a reader to judge. A model that
finds no kidney, swaps the sides, or calls the spleen a kidney shows it here; a ratio near one does
not prove a good outline. The wheel is read where it lies (its licence allows the use, not the
copy into this project): the figure shows the scans, so it is written for the reader and kept out of
the repository (``.gitignore``); no recipe trains on it.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import tempfile
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

WHEEL_NAME = "renalsegmentor-2.0.0-py3-none-any.whl"
WHEEL_REQUIREMENT = "renalsegmentor==2.0.0"
WHEEL_SHA256 = "9a9385b49d488497ae17e49a6492224888c16f14523b6bd85628200f528a84c0"  # the file PyPI serves
SCANS = ("test_sub_01", "test_sub_02")
SCAN_MEMBER = "segment/data/test_data/{}.nii.gz"
TESTS_MEMBER = "segment/tests/test_tkv.py"
ORGANS = ("liver", "spleen", "kidney_right", "kidney_left")
# one case of the wheel's test_get_mask: the NIfTI path of scan N, three lists of image statistics, the volume in ml
_TKV_CASE = re.compile(r"\(fetch\.Sub(\d+)\('nii\.gz'\)\.path,\s*(?:\[[^\]]*\],\s*){3}([0-9.eE+-]+)\s*\)")


def _not_the_wheel(wheel: Path, why: str) -> InputError:
    return InputError(f"{wheel}: not the renalsegmentor 2.0.0 wheel ({why}); fetch it with "
                      "`pip download --no-deps renalsegmentor==2.0.0`.")


def reference_volumes(tests_text: str, wheel: Path = Path(WHEEL_NAME)) -> dict[str, float]:
    """The total kidney volume (ml) that the wheel's own network measures on each scan, read from its tests."""
    found = {f"test_sub_{int(n):02d}": float(ml) for n, ml in _TKV_CASE.findall(tests_text)}
    missing = [s for s in SCANS if s not in found]
    if missing:
        raise _not_the_wheel(wheel, f"its tests give no kidney volume for {', '.join(missing)}")
    return {s: found[s] for s in SCANS}


def read_wheel(wheel: Path) -> tuple[dict[str, object], dict[str, float]]:
    """(scan name -> :class:`Volume`, scan name -> reference total kidney volume in ml) from the wheel."""
    from MultiModalSegLib.io import read_image

    try:
        with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as tmp:
            references = reference_volumes(archive.read(TESTS_MEMBER).decode("utf-8"), wheel)
            volumes = {}
            for scan in SCANS:
                path = Path(tmp) / f"{scan}.nii.gz"
                path.write_bytes(archive.read(SCAN_MEMBER.format(scan)))
                volumes[scan] = read_image(path)
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError) as error:
        raise _not_the_wheel(wheel, str(error)) from None
    return volumes, references


def centre_lps(mask: np.ndarray, volume) -> np.ndarray | None:
    """The physical centre (LPS, mm) of a mask on ``volume``'s grid (arrays ``[z, y, x]``), None if empty."""
    if not mask.any():
        return None
    index_xyz = np.argwhere(mask).mean(axis=0)[::-1]
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    return np.asarray(volume.origin, dtype=float) + direction @ (index_xyz * np.asarray(volume.spacing, dtype=float))


def measure(labels: np.ndarray, volume, label_values: dict[str, int], reference_ml: float) -> dict:
    """Organ volumes (ml), the total kidney volume against the reference, whether the sides hold, how far
    the right kidney's centre lies above the left one's (mm, head-foot; kidneys lie at about one level,
    so a large offset flags another organ called kidney) and how many separate pieces each kidney has."""
    from scipy import ndimage

    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    masks = {organ: labels == label_values[organ] for organ in ORGANS}
    ml = {organ: round(float(masks[organ].sum()) * voxel_ml, 1) for organ in ORGANS}
    kidneys = ml["kidney_right"] + ml["kidney_left"]
    right, left = centre_lps(masks["kidney_right"], volume), centre_lps(masks["kidney_left"], volume)
    both = right is not None and left is not None
    # LPS: x grows toward the patient's left (the right kidney's centre has the smaller x), z toward the head
    sides = bool(right[0] < left[0]) if both else None
    above = round(float(right[2] - left[2]), 1) if both else None
    pieces = {organ: int(ndimage.label(masks[organ], structure=np.ones((3, 3, 3)))[1]) for organ in ORGANS[2:]}
    return {"ml": ml, "kidneys_ml": round(kidneys, 1), "reference_ml": reference_ml,
            "ratio": round(kidneys / reference_ml, 3), "sides_right": sides, "right_above_left_mm": above,
            "pieces": pieces}


def score(bundle: Path, volumes: dict[str, object], references: dict[str, float],
          qualities: tuple[str, ...] = ("normal", "fast"), polarity_ensemble: bool | None = None,
          dropped_pieces: str | None = None) -> tuple[list[dict], dict]:
    """One row per quality and scan (``bundle``: one bundle, or ``A+B`` averaged); and the normal-quality label
    arrays per scan, for the figure. ``polarity_ensemble``: None, each model's declared inference; True or False,
    the MR polarity ensemble on or off whatever the bundle declares (the row's name says so). ``dropped_pieces``:
    the ``Segmenter``'s choice (None: its default; another is named in the row)."""
    segmenters = {quality: segmenter(bundle, device="cpu", amp=False, quality=quality, **dropped_option(dropped_pieces))
                  for quality in qualities}
    for seg in segmenters.values():
        for member in getattr(seg, "members", [seg]):
            if polarity_ensemble is not None:
                member.polarity_ensemble = frozenset({"MR"}) if polarity_ensemble else frozenset()
    suffix = {None: "", True: " (polarity ensemble on)", False: " (polarity ensemble off)"}[polarity_ensemble]
    metadata = segmenters[qualities[0]].bundle.metadata
    label_values = {lab["name"]: int(lab["value"]) for lab in metadata["labels"]}
    unknown = [o for o in ORGANS if o not in label_values]
    if unknown:
        raise InputError(f"{bundle}: the model has no label {', '.join(unknown)}; give an abdomen model.")
    names = {label_values[o]: o for o in ORGANS}  # the figure's label value -> organ, one for every scan
    rows, figure = [], {}
    for quality, seg in segmenters.items():
        for scan, volume in volumes.items():
            t0 = time.perf_counter()
            labels = np.asarray(seg.segment(volume, "MR").labels.array)
            seconds = round(time.perf_counter() - t0, 2)
            rows.append({"bundle": described(seg) + suffix, "dropped_pieces": seg.dropped_pieces, "quality": quality, "scan": scan,
                         "seconds": seconds, **measure(labels, volume, label_values, references[scan])})
            if quality == "normal":
                figure[scan] = names, labels
    return rows, figure


def _sides(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "**swapped**")


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Two real kidney MR scans the project does not hold (renalsegmentor 2.0.0 test data)",
        "",
        "Coronal-oblique T2-weighted fat-suppressed MR of two people (see `training/external_kidney_mr.py`), through "
        "the ordinary `Segmenter` on the CPU with each model's declared inference. No manual labels exist: the "
        "reference is the total kidney volume that the wheel's own network measures (read from its tests), "
        "so the ratio checks size, not outline; `sides` says whether the right kidney lies to the patient's right "
        "of the left one; `right above left` is the head-foot distance between the two kidneys' centres (kidneys lie "
        "at about one level: tens of millimetres mean another organ called kidney); `pieces` counts each kidney's "
        "separate parts; `external_kidney_mr.png`, written beside this table by the command below, shows the outlines "
        "(normal quality; it shows the scans, so the project does not keep it). Liver and spleen are only "
        "partly in the slab: their volumes are not comparable with a whole organ. No model trained on these scans. "
        f"Regenerate (after `pip download --no-deps renalsegmentor==2.0.0 -d /tmp/renal`): `{command}`.",
        "",
        "| model | quality | scan | kidney right ml | kidney left ml | kidneys ml | reference ml | ratio | sides "
        "| right above left mm | pieces right / left | liver ml (part) | spleen ml (part) | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        ml, above = r["ml"], r["right_above_left_mm"]
        lines.append(f"| `{r['bundle']}`{choice_text(r)} | {r['quality']} | {r['scan']} | {ml['kidney_right']:.1f} | {ml['kidney_left']:.1f} "
                     f"| {r['kidneys_ml']:.1f} | {r['reference_ml']:.1f} | {r['ratio']:.2f} | {_sides(r['sides_right'])} "
                     f"| {'-' if above is None else f'{above:.0f}'} | {r['pieces']['kidney_right']} / {r['pieces']['kidney_left']} "
                     f"| {ml['liver']:.1f} | {ml['spleen']:.1f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def short_name(model: str) -> str:
    """A model's name for a figure: a trained run's export stamp (``-trained-YYYYMMDD-HHMMSS``) dropped."""
    return re.sub(r"-trained-\d{8}-\d{6}", "", model)


def kidney_slices(found: list[tuple[dict, np.ndarray]], depth: int, slices: int) -> list[int]:
    """The ``slices`` slices (first array axis, in order) with the most kidney voxels over every model's
    labels; evenly spread slices where no model found a kidney."""
    counts = np.zeros(depth)
    for names, labels in found:
        kidney_values = [v for v, organ in names.items() if organ.startswith("kidney")]
        counts += np.isin(labels, kidney_values).sum(axis=(1, 2))
    if not counts.any():
        return [int(z) for z in np.linspace(0, depth - 1, slices)]
    return sorted(int(z) for z in np.argsort(-counts, kind="stable")[:slices])


def figure_png(volumes: dict[str, object], figures: dict[str, dict], path: Path, slices: int = 4) -> None:
    """Per model (row) and scan, ``slices`` coronal slices through the kidneys with every organ's outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from MultiModalSegLib.labels import ABDOMEN_LABELS
    from MultiModalSegLib.visualization import display_colours

    # the project's figure colours (each organ distinct), by organ name: models may number organs differently
    colours = {lab.name: tuple(c / 255 for c in display_colours(ABDOMEN_LABELS)[lab.value]) for lab in ABDOMEN_LABELS}

    models = list(figures)
    scans = list(volumes)
    through_kidneys = {scan: kidney_slices([figures[m][scan] for m in models], volumes[scan].array.shape[0], slices)
                       for scan in scans}
    fig, axes = plt.subplots(len(models), len(scans) * slices, figsize=(2.0 * len(scans) * slices, 2.1 * len(models) + 0.3),
                             squeeze=False)
    for row, model in enumerate(models):
        for s, scan in enumerate(scans):
            image = np.asarray(volumes[scan].array, dtype=np.float32)
            names, labels = figures[model][scan]
            picks = through_kidneys[scan]
            top = float(np.percentile(image, 99.5)) or 1.0
            for k, z in enumerate(picks):
                ax = axes[row, s * slices + k]
                ax.imshow(image[z], cmap="gray", vmin=0.0, vmax=top)
                for value, organ in names.items():
                    if (labels[z] == value).any():
                        ax.contour(labels[z] == value, levels=[0.5], colors=[colours[organ]], linewidths=0.8)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{scan} slice {z}", fontsize=7)
                if s == 0 and k == 0:
                    ax.set_ylabel(short_name(model), fontsize=7)
    handles = [Line2D([], [], color=colours[organ], label=organ.replace("_", " ")) for organ in ORGANS]
    fig.legend(handles=handles, loc="upper center", ncol=len(ORGANS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # 0.3 inch for the legend
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help=WHEEL_NAME)
    parser.add_argument("--bundle", action="append", required=True, type=Path, help="a bundle, or bundles joined by + to average their probabilities (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "training" / "reports" / "external-kidney-mr",
                        help="writes external_kidney_mr.md, .json and .png here (default: %(default)s)")
    parser.add_argument("--polarity-ensemble", action="store_true",
                        help="score each bundle twice, the MR polarity ensemble off and on, whatever it declares")
    add_dropped_pieces_option(parser)
    args = parser.parse_args(argv)
    try:
        check_wheel(args.wheel, WHEEL_SHA256, WHEEL_REQUIREMENT)
        volumes, references = read_wheel(args.wheel)
    except InputError as error:
        parser.error(str(error))
    rows, figures = [], {}
    for bundle in args.bundle:
        for polarity, dropped in itertools.product((False, True) if args.polarity_ensemble else (None,), args.dropped_pieces or (None,)):
            found, figure = score(bundle, volumes, references, polarity_ensemble=polarity, dropped_pieces=dropped)
            rows += found
            figures[found[0]["bundle"] + choice_text(found[0])] = figure
    command = ("python training/external_kidney_mr.py --wheel /tmp/renal/" + args.wheel.name + " "
               + " ".join(f"--bundle {b}" for b in args.bundle) + (" --polarity-ensemble" if args.polarity_ensemble else "")
               + "".join(f" --dropped-pieces {d}" for d in args.dropped_pieces or ())
               + out_option(args.out, parser.get_default("out"), REPO))
    text = markdown(rows, command)
    save_results(args.out, "external_kidney_mr", {"references_ml": references, "rows": rows}, text)
    figure_png(volumes, figures, args.out / "external_kidney_mr.png")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
