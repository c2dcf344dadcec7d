"""Where a model goes wrong on a real labelled scan: what each organ was called, what each predicted
organ lies on, and how much of each organ is found from its lower to its upper end.

    python training/error_analysis.py --scan abdomen_mr_01 \
        --bundle training/runs-in-progress/abdomen-ummkd-synth-6/bundle \
        --bundle Resources/Models/abdomen-ummkd-synth-3.0.0.zip \
        --out training/reports/abdomen-synth-v6/errors_abdomen_mr_01

Dice says how much is wrong; this says what: an organ called background or another organ, a
prediction that sits on a neighbouring structure of the full TotalSegmentator map (fat, stomach,
heart), an organ found in its middle but lost at one pole, and whether the voxels it misses lie in a
thin rim along the predicted organ (a border drawn too tight) or in whole parts of it (farther away).
Writes ``errors.md`` (the three tables per bundle) and ``errors.png`` (reference outlines solid,
prediction dashed, on the axial slices through each organ's centre) to ``--out``. Reference labels are
TotalSegmentator pseudo-labels (see ``../shared/data/README.md``).

``--spacing-scale FACTOR`` and ``--window-scale K`` segment under another sliding-window setting (the
network at its voxel size times FACTOR; windows up to K times the patch), as ``window_settings.py`` and
``probability_ensembles.py`` score them. ``--pieces`` adds a fourth table from a second segmentation
with every piece kept (the ``Segmenter`` otherwise keeps each organ's largest): each predicted organ's
largest pieces, their volume and what they lie on, so that a false piece that can outgrow the true
organ (and win the largest-piece step at another voxel size or window placement) is seen before it does.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from MultiModalSegLib.atomic import write_text_atomic  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from MultiModalSegLib.visualization import display_colours  # noqa: E402
from training.real_scans import SHARED_DATA, abdomen_labels, real_scan  # noqa: E402

ORGANS = {lab.value: lab.name for lab in ABDOMEN_LABELS}
BANDS = 5  # parts of an organ's extent from its lower to its upper end
RIM_MM = 3.0  # a missed voxel this near the predicted organ counts as its border (one voxel of the 3 mm models)
COLOURS = {value: tuple(c / 255 for c in rgb) for value, rgb in display_colours(ABDOMEN_LABELS).items()}


def where_each_organ_went(pred: np.ndarray, ref: np.ndarray) -> dict[str, dict[str, float]]:
    """For each reference organ: the share of its voxels that the prediction calls each label."""
    out = {}
    for value, name in ORGANS.items():
        voxels = pred[ref == value]
        if voxels.size:
            counts = np.bincount(voxels.ravel(), minlength=len(ORGANS) + 1)
            out[name] = {("background" if v == 0 else ORGANS[v]): float(c / voxels.size) for v, c in enumerate(counts) if c}
    return out


def what_each_prediction_covers(pred: np.ndarray, structures: np.ndarray, names: dict[int, str],
                                top: int = 4) -> dict[str, list[tuple[str, float]]]:
    """For each predicted organ: the structures of the full reference map under it, largest share
    first (``unlabelled`` for voxels the map leaves out)."""
    out = {}
    for value, name in ORGANS.items():
        under = structures[pred == value]
        if under.size:
            out[name] = shares_under(under, names, top)
    return out


def shares_under(under: np.ndarray, names: dict[int, str], top: int) -> list[tuple[str, float]]:
    """The ``top`` structure ids of ``under`` (the full map's voxels beneath a prediction) by share, named."""
    ids, counts = np.unique(under, return_counts=True)
    order = np.argsort(-counts)[:top]
    return [(names.get(int(ids[i]), "unlabelled" if ids[i] == 0 else f"structure {int(ids[i])}"), float(counts[i] / under.size))
            for i in order]


def superior_axis(direction: tuple[float, ...]) -> tuple[int, int]:
    """The array axis (``[z, y, x]`` order) closest to the body's long axis, and +1 when a higher
    index is more superior (LPS: superior is +z), -1 otherwise."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    index_axis = int(np.argmax(np.abs(matrix[2])))  # columns: index axes x, y, z
    return 2 - index_axis, (1 if matrix[2, index_axis] > 0 else -1)


def recall_by_height(pred: np.ndarray, ref: np.ndarray, value: int, axis: int, sign: int,
                     bands: int = BANDS) -> list[float]:
    """Share of the organ's reference voxels found, in ``bands`` equal parts of its extent along
    ``axis``, from the lower (inferior) to the upper (superior) end."""
    organ = ref == value
    if not organ.any():
        return []
    other = tuple(a for a in range(3) if a != axis)
    per_slice = organ.sum(axis=other)
    found = (organ & (pred == value)).sum(axis=other)
    slices = np.flatnonzero(per_slice)
    if sign < 0:
        slices = slices[::-1]
    parts = np.array_split(slices, min(bands, len(slices)))
    return [float(found[p].sum() / per_slice[p].sum()) for p in parts]


def missed_near_prediction(pred: np.ndarray, ref: np.ndarray, value: int, spacing: tuple[float, ...],
                           mm: float = RIM_MM) -> float | None:
    """Share of the organ's missed reference voxels that lie within ``mm`` of the predicted organ
    (``spacing``: x, y, z mm): near 1, a border drawn too tight; low, whole parts missed. ``None``
    when nothing is missed or the organ is not predicted at all."""
    from scipy.ndimage import distance_transform_edt

    organ, predicted = ref == value, pred == value
    missed = organ & ~predicted
    if not missed.any() or not predicted.any():
        return None
    distance = distance_transform_edt(~predicted, sampling=tuple(float(s) for s in spacing[::-1]))
    return float((distance[missed] <= mm).mean())


def pieces(pred: np.ndarray, structures: np.ndarray, names: dict[int, str], voxel_ml: float,
           largest: int = 3) -> dict[str, list[tuple[float, list[tuple[str, float]]]]]:
    """For each predicted organ: its ``largest`` 26-connected pieces, largest first, each as its volume
    (ml) and the structures of the full reference map under it (:func:`what_each_prediction_covers`' shares)."""
    from scipy import ndimage

    out = {}
    for value, name in ORGANS.items():
        comp, n = ndimage.label(pred == value, structure=np.ones((3, 3, 3), bool))
        if not n:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        out[name] = []
        for index in np.argsort(-sizes, kind="stable")[:largest]:
            out[name].append((float(sizes[index] * voxel_ml), shares_under(structures[comp == index + 1], names, top=3)))
    return out


def pieces_markdown(found: dict) -> str:
    lines = ["| predicted organ, every piece kept | piece | ml | lies on (share of its voxels) |", "|---|---:|---:|---|"]
    for organ, listed in found.items():
        for i, (ml, under) in enumerate(listed, 1):
            lines.append(f"| {organ} | {i} | {ml:.1f} | {', '.join(f'{n} {s:.2f}' for n, s in under)} |")
    return "\n".join(lines) + "\n"


def structure_names(scan_folder: Path) -> dict[int, str]:
    """TotalSegmentator ids to names from the scan's ``structures.csv`` (columns ``id`` and
    ``structure``), when it has one; else the ids shared by the "total" and "total_mr" sets."""
    names = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
             7: "pancreas", 8: "adrenal_gland_right", 9: "adrenal_gland_left"}
    table = scan_folder / "structures.csv"
    if table.is_file():
        with table.open() as f:
            for row in csv.DictReader(f):
                if str(row.get("id", "")).strip().isdigit() and row.get("structure"):
                    names[int(row["id"])] = row["structure"].strip()
    return names


def markdown(label: str, went: dict, covers: dict, heights: dict, rims: dict | None = None) -> str:
    rims = rims or {}
    lines = [f"### {label}", "", "| reference organ | called (share of its voxels) | found, lower to upper fifth "
             f"| missed within {RIM_MM:g} mm of the prediction |", "|---|---|---|---|"]
    for organ, shares in went.items():
        called = ", ".join(f"{k} {v:.2f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
        rim = "-" if rims.get(organ) is None else f"{rims[organ]:.2f}"
        lines.append(f"| {organ} | {called} | {' / '.join(f'{r:.2f}' for r in heights.get(organ, []))} | {rim} |")
    lines += ["", "| predicted organ | lies on (share of its voxels) |", "|---|---|"]
    for organ, under in covers.items():
        lines.append(f"| {organ} | {', '.join(f'{n} {s:.2f}' for n, s in under)} |")
    return "\n".join(lines) + "\n"


def draw(image: np.ndarray, ref: np.ndarray, preds: dict[str, np.ndarray], axis: int, out: Path,
         window: tuple[float, float] | None = None) -> None:
    """Reference (solid) and prediction (dashed) outlines on the slices through each organ's centre;
    grey levels over ``window`` (default: the image's 0.5-99.5 percentiles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = sorted({int(np.argwhere(ref == v)[:, axis].mean()) for v in ORGANS if (ref == v).any()})
    fig, axes = plt.subplots(len(preds), len(centres), figsize=(3.2 * len(centres), 3.2 * len(preds)), squeeze=False)
    low, high = window or np.percentile(image, [0.5, 99.5])
    for row, (label, pred) in enumerate(preds.items()):
        for col, index in enumerate(centres):
            ax = axes[row, col]
            ax.imshow(np.take(image, index, axis=axis), cmap="gray", vmin=low, vmax=high)
            for value, colour in COLOURS.items():
                for array, style in ((ref, "solid"), (pred, "dashed")):
                    mask = np.take(array, index, axis=axis) == value
                    if mask.any():
                        ax.contour(mask, levels=[0.5], colors=[colour], linestyles=style, linewidths=1)
            ax.set_title(f"{label}\nslice {index}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=70)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", required=True, help="a real scan of ../shared/data (e.g. abdomen_mr_01)")
    parser.add_argument("--bundle", action="append", required=True, type=Path, help="a bundle (repeatable)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--spacing-scale", type=float, default=1.0, metavar="FACTOR",
                        help="run the network at its bundle's voxel size times FACTOR (default 1: normal quality)")
    parser.add_argument("--window-scale", type=int, default=1, metavar="K",
                        help="let the sliding windows grow to K times the training patch per axis (default 1)")
    parser.add_argument("--pieces", action="store_true",
                        help="also segment with every piece kept and list each organ's largest pieces and what they lie on")
    args = parser.parse_args(argv)

    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.inference.segmenter import Quality
    from MultiModalSegLib.io import read_image

    if not (args.spacing_scale > 0 and args.window_scale >= 1):
        parser.error("--spacing-scale must be positive and --window-scale 1 or more")
    quality = Quality(spacing_scale=args.spacing_scale, window_scale=args.window_scale)
    setting = "".join([f", {args.spacing_scale:g} times its voxel size" if args.spacing_scale != 1 else "",
                       f", windows up to {args.window_scale} times the patch" if args.window_scale != 1 else ""])

    scan = real_scan(args.scan)
    volume = read_image(scan.image(args.data))
    structures = np.asarray(scan.structures(volume, args.data))
    ref = np.asarray(abdomen_labels(structures))
    names = structure_names(args.data / scan.name)
    axis, sign = superior_axis(volume.direction)
    sections, preds = [f"# Where the models go wrong on `{scan.name}` ({scan.modality})", ""], {}
    for bundle in args.bundle:
        segmenter = Segmenter(bundle, device="cpu", amp=False, quality=quality)
        label = f"{segmenter.bundle.metadata['name']} {segmenter.bundle.metadata['version']}{setting}"
        pred = np.asarray(segmenter.segment(volume, scan.modality).labels.array)
        preds[label] = pred
        heights = {ORGANS[v]: recall_by_height(pred, ref, v, axis, sign) for v in ORGANS}
        rims = {ORGANS[v]: missed_near_prediction(pred, ref, v, volume.spacing) for v in ORGANS}
        sections.append(markdown(f"`{label}` ({bundle.name})", where_each_organ_went(pred, ref),
                                 what_each_prediction_covers(pred, structures, names), heights, rims))
        if args.pieces:
            whole = Segmenter(bundle, device="cpu", amp=False, quality=quality, largest_component=False)
            every = np.asarray(whole.segment(volume, scan.modality).labels.array)
            sections.append(pieces_markdown(pieces(every, structures, names, float(np.prod(volume.spacing)) / 1000.0)))
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "errors.md", "\n".join(sections))
    window = (-200.0, 300.0) if scan.modality == "CT" else None  # CT: a soft-tissue window in HU
    draw(np.asarray(volume.array, dtype=np.float32), ref, preds, axis, args.out / "errors.png", window)
    print(args.out / "errors.md")


if __name__ == "__main__":
    main()
