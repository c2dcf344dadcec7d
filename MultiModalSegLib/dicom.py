"""Reading one DICOM series from a folder: the series chosen explicitly when there are several,
and the slices checked to be complete and evenly spaced before the volume is used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

DICOM_MODALITY_TAG = "0008|0060"
_SERIES_DESCRIPTION_TAG = "0008|103e"
_POSITION_TAG = "0020|0032"
_ORIENTATION_TAG = "0020|0037"
SPACING_TOLERANCE = 0.05  # a gap between slices may differ from the median by this fraction


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a DICOM folder: its SeriesInstanceUID, modality, description and file count."""

    uid: str
    modality: str
    description: str
    files: int

    def describe(self) -> str:
        text = f"{self.uid} ({self.modality or '?'}, {self.files} files"
        return text + (f", '{self.description}')" if self.description else ")")


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (by their ``DICM`` marker), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """Every DICOM series of ``folder`` (empty when it holds no DICOM file)."""
    folder = Path(folder)
    if not dicom_files(folder):
        return []
    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.LoadPrivateTagsOff()
        try:
            reader.ReadImageInformation()
            modality, description = _tag(reader, DICOM_MODALITY_TAG), _tag(reader, _SERIES_DESCRIPTION_TAG)
        except RuntimeError:
            modality, description = "", ""
        out.append(SeriesInfo(uid, modality, description, len(files)))
    return out


def choose_series(folder: Path, series: str | None) -> SeriesInfo:
    """The series to read: the only one, or the one named ``series``; otherwise one sentence listing them."""
    found = list_series(folder)
    if not found:
        raise InputError(f"{folder}: folder holds no DICOM series; give a folder of DICOM slices or an image file.")
    if series is not None:
        match = [s for s in found if s.uid == series]
        if not match:
            listing = "; ".join(s.describe() for s in found)
            raise InputError(f"{folder}: holds no DICOM series {series} (it holds: {listing}); check --series.")
        return match[0]
    if len(found) > 1:
        listing = "; ".join(s.describe() for s in found)
        raise InputError(
            f"{folder}: holds {len(found)} DICOM series ({listing}); choose one with --series UID, "
            "or give --series all for one output per series."
        )
    return found[0]


def _unreadable(folder: Path, files: list[str]) -> list[Path]:
    """DICOM-marked files of ``folder`` that belong to no readable series."""
    used = {Path(f).resolve() for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
            for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)}  # fmt: skip
    used |= {Path(f).resolve() for f in files}
    return [p for p in dicom_files(folder) if p.resolve() not in used]


def _check_slice_spacing(folder: Path, reader: sitk.ImageSeriesReader, n: int) -> None:
    """Refuse a series whose slice positions are not evenly spaced (a missing or unreadable slice)."""
    if n < 3 or not all(reader.HasMetaDataKey(i, _POSITION_TAG) for i in range(n)):
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, _POSITION_TAG).split("\\")] for i in range(n)])
        cosines = [float(v) for v in reader.GetMetaData(0, _ORIENTATION_TAG).split("\\")]
    except (ValueError, RuntimeError):
        return
    normal = np.cross(cosines[:3], cosines[3:6])
    along = np.sort(positions @ normal)
    gaps = np.diff(along)
    median = float(np.median(gaps))
    if median <= 0:
        raise InputError(f"{folder}: several slices share one position; the series is not one 3D volume, export it again.")
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > SPACING_TOLERANCE * median:
        raise InputError(
            f"{folder}: slices are not evenly spaced ({gaps[worst]:.3g} mm between slices {worst + 1} and {worst + 2}, "
            f"{median:.3g} mm elsewhere): a slice is missing or unreadable; copy the complete series again."
        )


def read_dicom_series(folder: Path, series: str | None = None) -> tuple[sitk.Image, str | None]:
    """Read one series of ``folder`` (see :func:`choose_series`) with its modality tag, after
    checking that no DICOM file of the folder was left unread and that the slices are evenly spaced."""
    chosen = choose_series(folder, series)
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen.uid))
    bad = _unreadable(folder, files)
    if bad:
        raise InputError(
            f"{folder}: {len(bad)} DICOM file(s) cannot be read (first: {bad[0].name}); copy the complete series again."
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else exc.__class__.__name__
        raise InputError(f"{folder}: DICOM series could not be read ({reason}); check the files.") from exc
    _check_slice_spacing(folder, reader, len(files))
    tag = None
    if reader.HasMetaDataKey(0, DICOM_MODALITY_TAG):
        tag = reader.GetMetaData(0, DICOM_MODALITY_TAG).strip() or None
    return image, tag
