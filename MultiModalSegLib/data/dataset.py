"""The ``dataset.json`` format (MSD-like) for unpaired multi-modal data.

```json
{"name": "...", "description": "...", "licence": "...",
 "labels": {"0": "background", "1": "liver", ...},
 "label_remaps": {"totalsegmentator": {"5": 1, "1": 2, "2": 3, "3": 4}},
 "training":   [{"image": "imagesTr/ct_000.nii.gz", "label": "labelsTr/ct_000.nii.gz",
                 "modality": "CT", "label_remap": "totalsegmentator"}, ...],
 "validation": [...], "test": [...]}
```

Paths are relative to the file. ``label`` is optional (unlabelled cases). ``label_remap`` names a
table of ``label_remaps`` (or of the library's built-in :data:`~MultiModalSegLib.labels.LABEL_REMAPS`)
mapping the file's label ids to the dataset's ``labels``; ids the table does not list become
background. Without a remap, label values must be among ``labels``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..labels import LABEL_REMAPS
from ..modalities import get_modality

SPLITS = ("training", "validation", "test")


@dataclass(frozen=True)
class Case:
    """One scan of one modality, with its optional label map."""

    name: str
    image: Path
    modality: str
    label: Path | None = None
    label_remap: dict[int, int] | None = None
    weight: float = 1.0  # relative chance of being drawn by a sampler
    # True when label_remap only renumbers the dataset's own label table (not a user's remap table):
    # then a value outside the table is an error rather than background
    remap_is_table: bool = False

    @property
    def labelled(self) -> bool:
        return self.label is not None


@dataclass
class DatasetSpec:
    """A parsed ``dataset.json``: label names and cases per split."""

    path: Path
    name: str
    labels: dict[int, str]
    splits: dict[str, list[Case]] = field(default_factory=dict)
    licence: str = ""

    def cases(self, split: str = "training", modality: str | None = None, labelled: bool | None = None) -> list[Case]:
        out = self.splits.get(split, [])
        if modality is not None:
            out = [c for c in out if c.modality == modality]
        if labelled is not None:
            out = [c for c in out if c.labelled == labelled]
        return out

    @property
    def modalities(self) -> list[str]:
        seen: dict[str, None] = {}
        for cases in self.splits.values():
            for c in cases:
                seen.setdefault(c.modality)
        return list(seen)


def _parse_remap(table: dict, where: str) -> dict[int, int]:
    try:
        return {int(k): int(v) for k, v in table.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{where}: a label remap must map integer ids to integer labels.") from exc


def _case(entry: dict, root: Path, remaps: dict[str, dict[int, int]], where: str, index: int) -> Case:
    if not isinstance(entry, dict) or "image" not in entry or "modality" not in entry:
        raise ConfigError(f"{where}: case {index} needs at least \"image\" and \"modality\".")
    modality = get_modality(entry["modality"]).name
    remap = entry.get("label_remap")
    if isinstance(remap, str):
        if remap not in remaps:
            raise ConfigError(f"{where}: case {index} uses label_remap {remap!r}, which is not defined; known: {sorted(remaps)}.")
        remap = remaps[remap]
    elif isinstance(remap, dict):
        remap = _parse_remap(remap, where)
    image = (root / entry["image"]).resolve()
    label = (root / entry["label"]).resolve() if entry.get("label") else None
    name = entry.get("name") or Path(entry["image"]).name.split(".")[0]
    return Case(name, image, modality, label, remap)


def load_dataset(path: str | Path) -> DatasetSpec:
    """Parse and check a ``dataset.json`` (the file, or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no dataset.json here; create one (see MultiModalSegLib.data.dataset) or run `mmseg phantom`.")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); fix the file.") from exc
    if "labels" not in raw:
        raise ConfigError(f"{path}: missing \"labels\" (a map of label value to name).")
    labels = {int(k): str(v) for k, v in raw["labels"].items()}
    remaps = {k: dict(v) for k, v in LABEL_REMAPS.items()}
    remaps.update({k: _parse_remap(v, str(path)) for k, v in raw.get("label_remaps", {}).items()})
    splits = {
        split: [_case(e, path.parent, remaps, str(path), i) for i, e in enumerate(raw.get(split, []))] for split in SPLITS
    }
    if not any(splits.values()):
        raise ConfigError(f"{path}: no cases in \"training\", \"validation\" or \"test\".")
    for split, cases in splits.items():
        for c in cases:
            for p in (c.image, c.label):
                if p is not None and not p.exists():
                    raise ConfigError(f"{path}: {split} case {c.name!r} points to {p}, which does not exist.")
    return DatasetSpec(path, raw.get("name", path.parent.name), labels, splits, raw.get("licence", ""))


def labelled_subset(cases: Iterable[Case], n: int, seed: int = 0) -> list[Case]:
    """Few-shot: keep the labels of ``n`` cases chosen with ``seed``; the others become unlabelled."""
    cases = list(cases)
    labelled = [i for i, c in enumerate(cases) if c.labelled]
    if n > len(labelled):
        raise ConfigError(f"few-shot asks for {n} labelled cases but only {len(labelled)} have labels.")
    keep = set(np.random.default_rng(seed).choice(labelled, size=n, replace=False).tolist()) if n else set()
    return [c if i in keep or not c.labelled else Case(c.name, c.image, c.modality, None, None, c.weight) for i, c in enumerate(cases)]
