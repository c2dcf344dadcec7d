"""Shared pieces of the hostile-input suite: tiny scans, the tiny test model, a models manifest
holding it, DICOM series, and the checks every test makes (exit code, one error sentence, no file
lost or changed)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MultiModalSegLib.bundle import load_bundle, save_bundle
from MultiModalSegLib.cli import main

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "Testing" / "library" / "training" / "data" / "tiny-ctmr-ummkd"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    """``mmseg ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str, *words: str) -> str:
    """The single error line of ``err`` (no traceback), which must contain every one of ``words``."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (hidden temporary files included)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def ct_array(shift: int = 0, shape: tuple[int, int, int] = (20, 40, 40)) -> np.ndarray:
    """A small CT-like int16 volume (air around a soft-tissue block)."""
    rng = np.random.default_rng(shift)
    array = (rng.random(shape) * 200).astype(np.int16) - 1000
    z, y, x = shape
    array[z // 4 : 3 * z // 4, y // 4 + shift : 3 * y // 4, x // 4 : 3 * x // 4] = 40
    return array


def write_scan(path: Path, array: np.ndarray | None = None, spacing=(4.0, 4.0, 5.0)) -> Path:
    image = sitk.GetImageFromArray(ct_array() if array is None else array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))
    return path


def write_dicom_series(folder: Path, uid: str, *, modality: str = "CT", slices: int = 10, prefix: str = "s",
                       spacing: float = 4.0) -> list[Path]:  # fmt: skip
    """A DICOM series of ``slices`` 32x32 slices (files ``<prefix>NNN.dcm``) with positions along z."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = ct_array(shape=(slices, 32, 32))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(slices):
        image = sitk.GetImageFromArray(volume[k : k + 1])[:, :, 0]
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{k + 1}", "0008|0060": modality,
            "0008|103e": f"test {modality}", "0020|000d": "1.2.826.0.1.3680043.2.1125.9", "0020|000e": uid,
            "0020|0013": str(k + 1), "0020|0032": f"0\\0\\{k * spacing}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "4\\4", "0018|0050": str(spacing),
        }  # fmt: skip
        for key, value in tags.items():
            image.SetMetaData(key, value)
        files.append(folder / f"{prefix}{k:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(image)
    return files


def tiny_zip(path: Path, **metadata_changes) -> Path:
    """The tiny test model as a zip bundle, with optional metadata fields replaced."""
    bundle = load_bundle(TINY)
    metadata = {**bundle.metadata, **metadata_changes}
    return save_bundle(path, metadata, bundle.state_dict)


def tampered_copy(path: Path, **metadata_changes) -> Path:
    """The tiny model with altered weights and a recomputed ``model_sha256`` (as an attacker would)."""
    bundle = load_bundle(TINY)
    state = {k: (v + 1.0 if v.is_floating_point() else v) for k, v in bundle.state_dict.items()}
    return save_bundle(path, {**bundle.metadata, **metadata_changes}, state)


def manifest_with(folder: Path, name: str, bundle_zip: Path) -> Path:
    """A models manifest in ``folder`` whose model ``name`` is the shipped file ``bundle_zip`` (inside ``folder``)."""
    from MultiModalSegLib.bundle import bundle_sha256

    metadata = load_bundle(bundle_zip).metadata
    entry = {
        "name": name, "version": metadata["version"], "description": "tiny test model", "method": metadata["method"],
        "modalities": list(metadata["modalities"]), "labels": [lab["name"] for lab in metadata["labels"]],
        "spacing": metadata["spacing"], "sha256": bundle_sha256(bundle_zip), "licence": "Apache-2.0",
        "file": bundle_zip.relative_to(folder).as_posix(), "default": True,
    }  # fmt: skip
    path = folder / "Models.json"
    path.write_text(json.dumps({"format_version": 1, "models": [entry]}))
    return path


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest
