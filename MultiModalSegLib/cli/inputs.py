"""What ``mmseg segment`` was given, as a list of cases, each with an output name unique in the run.

An input is an image file, a ``.txt`` / ``.csv`` list of inputs, or a folder: a folder of image
files gives those files, a folder of DICOM files is one DICOM series (``--series`` picks one when it
holds several, ``all`` gives one case per series), and a folder of case folders gives one case per
case folder (its image file, or its DICOM series), named by the case folder. Names are the file
name without its image suffix; where two inputs would share a name, each is prefixed by its folder
names until the names differ, so no output replaces another.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
ALL_SERIES = "all"


@dataclass(frozen=True)
class CaseInput:
    """One case to segment: the image file or DICOM folder, the series UID (DICOM), the output name."""

    path: Path
    name: str
    series: str | None = None


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.lower().endswith(".seg.nrrd")


def case_name(path: Path) -> str:
    """The file name without its image suffix (a folder: its name)."""
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


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _folder_cases(folder: Path) -> list[tuple[Path, str]]:
    """(path, preferred name) of each case of a folder (see the module docstring)."""
    from ..dicom import dicom_files

    images = _images(folder)
    if images:
        return [(p, case_name(p)) for p in images]
    if dicom_files(folder):
        return [(folder, folder.name)]
    cases: list[tuple[Path, str]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        inner = _images(sub)
        if len(inner) == 1:
            cases.append((inner[0], sub.name))
        elif inner:
            cases += [(p, f"{sub.name}_{case_name(p)}") for p in inner]
        elif dicom_files(sub):
            cases.append((sub, sub.name))
    if not cases:
        raise InputError(
            f"{folder}: holds no image file, no DICOM series and no case folder with either; give image files, "
            "a DICOM folder or a folder of case folders."
        )
    return cases


def _missing(item: Path) -> InputError:
    return InputError(f"{item}: no such file or folder; check the path.")


def check_inputs_exist(inputs: list[str]) -> None:
    """Refuse a missing input, or a missing entry of a ``.txt`` / ``.csv`` list, before anything heavy
    is imported (no image is read and no folder listed here)."""
    for item in map(Path, inputs):
        if not item.exists():
            raise _missing(item)
        if item.is_file() and item.suffix.lower() in (".txt", ".csv"):
            check_inputs_exist([str(p) for p in _from_list(item)])


def _expand_one(item: Path) -> list[tuple[Path, str]]:
    if not item.exists():
        raise _missing(item)
    if item.is_file() and item.suffix.lower() in (".txt", ".csv"):
        out = []
        for listed in _from_list(item):
            out += _expand_one(listed)
        return out
    if item.is_dir():
        return _folder_cases(item)
    return [(item, case_name(item))]


def _with_series(path: Path, name: str, series: str | None) -> list[CaseInput]:
    if not path.is_dir():
        return [CaseInput(path, name)]
    from ..dicom import choose_series, list_series

    if series == ALL_SERIES:
        found = list_series(path)
        if len(found) == 1:
            return [CaseInput(path, name, found[0].uid)]
        return [CaseInput(path, f"{name}_{s.uid}", s.uid) for s in found]
    return [CaseInput(path, name, choose_series(path, series).uid)]  # refuses an ambiguous folder now


def _unique_names(cases: list[CaseInput]) -> list[CaseInput]:
    """Prefix colliding names (case-insensitively: some file systems are) by their folder names."""
    names = [c.name for c in cases]
    depth = [0] * len(cases)
    for _ in range(64):
        seen: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            seen.setdefault(n.lower(), []).append(i)
        clashes = [idx for idx in seen.values() if len(idx) > 1]
        if not clashes:
            break
        for group in clashes:
            for i in group:
                parents = cases[i].path.resolve().parents
                depth[i] += 1
                if depth[i] <= len(parents) - 1:
                    folders = [p.name for p in list(parents)[: depth[i]]][::-1]
                    names[i] = "_".join([*folders, cases[i].name])
                else:
                    names[i] = f"{cases[i].name}_{i + 1}"
    return [CaseInput(c.path, n, c.series) for c, n in zip(cases, names, strict=True)]


def plan_inputs(inputs: list[str], series: str | None = None) -> list[CaseInput]:
    """Every case of ``inputs`` once (the same file given twice is one case), each with a unique name."""
    cases: list[CaseInput] = []
    seen: set[tuple[Path, str | None]] = set()
    for item in inputs:
        for path, name in _expand_one(Path(item)):
            for case in _with_series(path, name, series):
                key = (case.path.resolve(), case.series)
                if key not in seen:
                    seen.add(key)
                    cases.append(case)
    return _unique_names(cases)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """The image files and DICOM folders of ``inputs`` (see :func:`plan_inputs` for their names)."""
    out: list[Path] = []
    for item in inputs:
        out += [path for path, _ in _expand_one(Path(item))]
    return out
