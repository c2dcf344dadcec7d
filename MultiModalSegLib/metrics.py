"""Per-label Dice, HD95 and ASSD (mm) between a predicted and a reference label map (MONAI metrics).

Conventions:

* a label absent from both maps is not scored: Dice, HD95 and ASSD are all NaN;
* a label absent from one map only gets Dice 0 and NaN distances (a surface distance to nothing
  is undefined; the Dice of 0 already records the miss). Means skip NaN values.
* arrays are indexed ``[z, y, x]`` while spacings are given in SimpleITK's ``(x, y, z)`` order.
* NaN is written as ``nan`` in ``metrics.csv``, ``null`` in ``metrics.json`` and ``n/a`` in ``metrics.md``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

from .atomic import write_text_atomic
from .errors import InputError
from .io import read_labelmap
from .labels import LabelInfo

METRIC_NAMES = ("dice", "hd95", "assd")
CASE_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_NAN = float("nan")


def remap_labels(array: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Map source label values to model values; values not in ``mapping`` become 0."""
    out = np.zeros(array.shape, dtype=np.int32)
    for src, dst in mapping.items():
        out[array == src] = dst
    return out


def _binary_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def _label_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, ...]) -> dict[str, float]:
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return {"dice": _NAN, "hd95": _NAN, "assd": _NAN}
    if not (has_pred and has_ref):
        return {"dice": 0.0, "hd95": _NAN, "assd": _NAN}
    p, r = _binary_tensor(pred), _binary_tensor(ref)
    dice = compute_dice(p, r, include_background=True, ignore_empty=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing_zyx))
        assd = compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=list(spacing_zyx))
    return {"dice": float(dice.item()), "hd95": float(hd95.item()), "assd": float(assd.item())}


def dice_scores(pred: np.ndarray, ref: np.ndarray, labels: Sequence[LabelInfo]) -> dict[str, float]:
    """Dice only, per label, in NumPy (fast enough for validation during training); a label absent
    from both maps is not scored (NaN), absent from one only scores 0, as in :func:`evaluate_labels`."""
    out = {}
    for lab in labels:
        p, r = pred == lab.value, ref == lab.value
        denom = int(p.sum()) + int(r.sum())
        out[lab.name] = float(2 * np.logical_and(p, r).sum() / denom) if denom else float("nan")
    return out


def evaluate_labels(
    pred: np.ndarray, ref: np.ndarray, labels: Sequence[LabelInfo], spacing_xyz: Sequence[float]
) -> dict[str, dict[str, float]]:
    """Label name -> ``{"dice", "hd95", "assd"}`` for two label maps ``[z, y, x]`` of the same shape."""
    if pred.shape != ref.shape:
        raise InputError(f"Prediction shape {pred.shape} differs from reference shape {ref.shape}; resample one onto the other.")
    if pred.ndim != len(spacing_xyz):
        raise InputError(f"Spacing {tuple(spacing_xyz)} has {len(spacing_xyz)} values for a {pred.ndim}D label map; give one per axis.")
    spacing_zyx = tuple(float(s) for s in reversed(spacing_xyz))
    return {lab.name: _label_metrics(pred == lab.value, ref == lab.value, spacing_zyx) for lab in labels}


def evaluate_files(
    pred_path: str | Path,
    ref_path: str | Path,
    labels: Sequence[LabelInfo],
    ref_remap: dict[int, int] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of one predicted label map file against a reference file on the same grid."""
    ref = read_labelmap(ref_path)
    pred = read_labelmap(pred_path, reference=ref, reference_name=f"the reference {ref_path}")
    ref_array = remap_labels(ref.array, ref_remap) if ref_remap else ref.array
    return evaluate_labels(np.asarray(pred.array), np.asarray(ref_array), labels, ref.spacing)


def case_name(path: str | Path) -> str | None:
    """File name without a known image suffix, or None for a file that is not a label map."""
    name = Path(path).name
    for suffix in CASE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _cases(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; check the path.")
    found: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        case = case_name(file)
        if case is not None and file.is_file() and not file.name.startswith("."):
            found.setdefault(case, file)
    return found


def _pairs(pred_dir: Path, ref_dir: Path) -> list[tuple[str, Path, Path]]:
    preds, refs = _cases(pred_dir), _cases(ref_dir)
    if not preds:
        raise InputError(f"{pred_dir}: no label maps (.nii.gz, .nii, .nrrd, .seg.nrrd) found; check the folder.")
    missing = sorted(set(preds) - set(refs))
    if missing:
        raise InputError(
            f"No reference in {ref_dir} for predicted case(s) {', '.join(missing)}; add them or remove the predictions."
        )
    return [(case, preds[case], refs[case]) for case in sorted(preds)]


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path,
    labels: Sequence[LabelInfo],
    ref_remap: dict[int, int] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate every prediction against the reference of the same case name; write metrics.csv/json/md.

    Cases pair by file name without suffix (``case1.nii.gz`` pairs with ``case1.nrrd``); every
    prediction needs a reference, references without a prediction are ignored.
    Returns case -> label -> metrics.
    """
    results = {
        case: evaluate_files(pred, ref, labels, ref_remap) for case, pred, ref in _pairs(Path(pred_dir), Path(ref_dir))
    }
    write_results(results, out_dir)
    return results


def mean_metrics(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Label -> metric -> mean over cases, skipping NaN (NaN if no case scores it)."""
    labels = list(dict.fromkeys(label for case in results.values() for label in case))
    means: dict[str, dict[str, float]] = {}
    for label in labels:
        means[label] = {}
        for metric in METRIC_NAMES:
            values = [c[label][metric] for c in results.values() if label in c and not math.isnan(c[label][metric])]
            means[label][metric] = float(np.mean(values)) if values else _NAN
    return means


def _fmt(value: float, metric: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if metric == "dice" else f"{value:.2f}"


def format_markdown_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per case and a final mean row; columns Dice, HD95 (mm), ASSD (mm) per label."""
    labels = list(dict.fromkeys(label for case in results.values() for label in case))
    header = ["case"] + [f"{lab} {m}" for lab in labels for m in ("Dice", "HD95 mm", "ASSD mm")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [*results.items(), ("**mean**", mean_metrics(results))]
    for case, per_label in rows:
        cells = [_fmt(per_label.get(lab, {}).get(m, _NAN), m) for lab in labels for m in METRIC_NAMES]
        lines.append("| " + " | ".join([case, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _to_json(value: float) -> float | None:
    return None if math.isnan(value) else value


def _csv_text(results: dict[str, dict[str, dict[str, float]]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "label", *METRIC_NAMES])
    for case, per_label in results.items():
        for label, values in per_label.items():
            writer.writerow([case, label, *(repr(float(values[m])) for m in METRIC_NAMES)])
    return buf.getvalue()


def _json_text(results: dict[str, dict[str, dict[str, float]]]) -> str:
    def clean(d: dict[str, dict[str, float]]) -> dict:
        return {label: {m: _to_json(v[m]) for m in METRIC_NAMES} for label, v in d.items()}

    doc = {"cases": {case: clean(r) for case, r in results.items()}, "mean": clean(mean_metrics(results))}
    return json.dumps(doc, indent=2) + "\n"


def write_results(results: dict[str, dict[str, dict[str, float]]], out_dir: str | Path) -> list[Path]:
    """Write ``metrics.csv``, ``metrics.json`` and ``metrics.md`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "metrics.csv": _csv_text(results),
        "metrics.json": _json_text(results),
        "metrics.md": format_markdown_table(results),
    }
    for name, text in texts.items():
        write_text_atomic(out / name, text)
    return [out / name for name in texts]
