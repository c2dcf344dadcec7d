"""Reading and writing images and label maps with their exact geometry (SimpleITK)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path, file_suffix
from .dicom import DICOM_MODALITY_TAG, read_dicom_series  # noqa: F401 (DICOM_MODALITY_TAG re-exported)
from .errors import InputError, OutputError
from .labels import LabelInfo
from .nifti import check_nifti_file
from .terminology import snomed_from_entry, terminology_entry


@dataclass
class Volume:
    """A 3D image with its physical geometry.

    ``array`` is indexed ``[z, y, x]`` (SimpleITK's array order); ``spacing``, ``origin`` and
    ``direction`` are in SimpleITK's ``(x, y, z)`` order and LPS physical space.
    ``modality_tag`` is the DICOM Modality (0008,0060) when the volume came from a DICOM series.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    modality_tag: str | None = None

    @classmethod
    def from_sitk(cls, image: sitk.Image, modality_tag: str | None = None) -> Volume:
        return cls(
            sitk.GetArrayFromImage(image),
            tuple(image.GetSpacing()),
            tuple(image.GetOrigin()),
            tuple(image.GetDirection()),
            modality_tag,
        )

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        self.copy_geometry_to(image)
        return image

    def copy_geometry_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @property
    def size(self) -> tuple[int, int, int]:
        """Grid size in ``(x, y, z)`` order, like SimpleITK's ``GetSize``."""
        return tuple(int(s) for s in self.array.shape[::-1])

    def same_grid(self, other: Volume, tol: float = 1e-4) -> bool:
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def describe_grid(self) -> str:
        """One-line description of the grid: size, spacing, origin and direction."""
        return (
            f"size {self.size}, spacing {_fmt(self.spacing)}, origin {_fmt(self.origin)}, "
            f"direction {_fmt(self.direction)}"
        )


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


# --------------------------------------------------------------------------- reading images


def read_image(path: str | Path, series: str | None = None) -> Volume:
    """Read one 3D scalar image (NIfTI, NRRD, MHA, or a DICOM series folder) keeping its geometry.

    A DICOM folder must hold one series, or ``series`` names the SeriesInstanceUID to read; its
    slices must be evenly spaced (a missing or unreadable slice is refused). ``modality_tag`` is
    set from tag (0008,0060). A NIfTI file must hold the bytes its header declares and a non-zero
    voxel spacing. Raises ``InputError`` for a missing, truncated or unreadable path, a 2D, 4D or
    multi-component image, and for NaN or infinite voxel values.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path.")
    if path.is_dir():
        image, tag = read_dicom_series(path, series)
    else:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            check_nifti_file(path)
        image, tag = _read_file(path), None
    image = _as_3d_scalar(image, path)
    volume = Volume.from_sitk(image, tag)
    _check_finite(volume.array, path)
    if np.issubdtype(volume.array.dtype, np.floating) and path.name.lower().endswith((".nii", ".nii.gz")):
        _check_finite(_raw_nifti_data(path), path)
    return volume


def _raw_nifti_data(path: Path) -> np.ndarray:
    """The voxel values as stored in a NIfTI file (SimpleITK's NIfTI reader turns NaN into 0)."""
    import nibabel

    return np.asanyarray(nibabel.load(str(path)).dataobj)


def _read_file(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(
            f"{path}: not a readable image ({_first_line(exc)}); give a NIfTI, NRRD, MHA file or a DICOM folder."
        ) from exc


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else exc.__class__.__name__


def _as_3d_scalar(image: sitk.Image, path: Path) -> sitk.Image:
    """Return a 3D scalar image; a 4D image with a single time point is reduced to 3D."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "MultiModalSeg needs one 3D scalar volume; save a single channel."
        )
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
        size = image.GetSize()
    if image.GetDimension() == 3 and min(size) > 1:
        return image
    if image.GetDimension() < 3 or min(size) <= 1:
        raise InputError(
            f"{path}: is 2D (size {tuple(size)}); MultiModalSeg needs one 3D volume; give the whole scan "
            "(a DICOM series folder, or a NIfTI/NRRD file holding every slice), not a single slice."
        )
    raise InputError(
        f"{path}: is {image.GetDimension()}D (size {tuple(size)}); MultiModalSeg needs one 3D volume; "
        f"split the {image.GetDimension()}D series into its 3D volumes and give one of them."
    )


def _check_finite(array: np.ndarray, path: Path) -> None:
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad == 0:
        return
    if bad == array.size:
        raise InputError(f"{path}: every voxel is NaN; the image is empty or corrupt; export the scan again.")
    raise InputError(
        f"{path}: {bad} of {array.size} voxels are NaN or infinite; fix the file "
        "(replace them with the background value) and try again."
    )


# --------------------------------------------------------------------------- label maps


def read_labelmap(
    path: str | Path, reference: Volume | None = None, *, reference_name: str = "the image"
) -> Volume:
    """Read an integer label map; with ``reference``, insist that it lies on the reference's grid.

    Float files whose values are all whole numbers are accepted and converted to integers.
    ``reference_name`` names the reference in error messages (e.g. the image's path).
    """
    path = Path(path)
    volume = read_image(path)
    volume.array = _integer_labels(volume.array, path)
    if reference is not None and not _grids_match(volume, reference):
        raise InputError(
            f"{path}: label map grid ({volume.describe_grid()}) differs from {reference_name} "
            f"({reference.describe_grid()}); resample the label map onto the image with nearest neighbour."
        )
    return volume


def _integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.bool_):
        return array.astype(np.uint8)
    if not np.all(array == np.round(array)):
        raise InputError(
            f"{path}: label map has non-integer values; give an integer label map, not an image or probabilities."
        )
    low, high = float(array.min()), float(array.max())
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype)
    return array.astype(np.int64)


def _grids_match(a: Volume, b: Volume, rtol: float = 1e-4) -> bool:
    if a.size != b.size:
        return False
    scale = max(max(a.spacing), max(b.spacing))
    return (
        np.allclose(a.spacing, b.spacing, rtol=rtol, atol=0)
        and np.allclose(a.origin, b.origin, rtol=rtol, atol=rtol * scale)
        and np.allclose(a.direction, b.direction, rtol=rtol, atol=rtol)
    )


# --------------------------------------------------------------------------- writing


def _write_atomic(image: sitk.Image, path: Path, *, overwrite: bool, compress: bool = True) -> Path:
    """Write ``image`` to a temporary file beside ``path`` and rename it into place."""
    if path.exists() and not overwrite:
        raise InputError(f"{path}: file exists; choose another name or pass --overwrite (overwrite=True) to replace it.")
    return write_image_atomic(image, path, compress)


def write_image_atomic(image: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write any SimpleITK image atomically (the suffix of ``path`` chooses the format).

    SimpleITK's writers report a failed write (a full disk) only on the console, so the temporary
    file is read back and compared voxel by voxel before it replaces ``path``; a difference raises
    ``OutputError`` and leaves any existing ``path`` untouched.
    """
    path = Path(path)
    with atomic_path(path, suffix=file_suffix(path)) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
        _verify_written(image, tmp, path)
    return path


def _verify_written(image: sitk.Image, tmp: Path, path: Path) -> None:
    """Read ``tmp`` back and check it holds ``image``'s voxels (sizes declared in the header included)."""
    incomplete = OutputError(
        f"{path}: the file was not written completely (is the disk full?); free space or choose another "
        "output folder; nothing was replaced."
    )
    try:
        if tmp.name.lower().endswith((".nii", ".nii.gz")):
            check_nifti_file(tmp)
        back = sitk.ReadImage(str(tmp))
    except (RuntimeError, InputError) as exc:
        raise incomplete from exc
    if back.GetSize() != image.GetSize() or back.GetNumberOfComponentsPerPixel() != image.GetNumberOfComponentsPerPixel():
        raise incomplete
    if not np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image)):
        raise incomplete


def probabilities_path(output: str | Path) -> Path:
    """Where the class probabilities of the segmentation ``output`` go: ``<case>_probabilities.nii.gz``
    beside it, ``<case>`` being ``output``'s name without its format suffix (``patient.1.seg.nrrd`` ->
    ``patient.1_probabilities.nii.gz``)."""
    output = Path(output)
    name = output.name
    suffix = file_suffix(output)
    stem = name[: -len(suffix)] if suffix and name.lower().endswith(suffix.lower()) else name
    return output.with_name(f"{stem}_probabilities.nii.gz")


def write_labelmap(volume: Volume, path: str | Path) -> Path:
    """Write a label map (uint8) atomically: a temporary file in the same folder, then a rename."""
    return _write_atomic(_uint8_labels(volume, Path(path)), Path(path), overwrite=True)


def _uint8_labels(volume: Volume, path: Path) -> sitk.Image:
    array = np.asarray(volume.array)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InputError(
            f"{path}: label values span {array.min()}..{array.max()}; a label map file holds 0..255; remap the labels."
        )
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    return volume.copy_geometry_to(image)


PLAIN_SUFFIXES = (".nii.gz", ".nii", ".nrrd")
SEGMENTATION_SUFFIX = ".seg.nrrd"


def write_segmentation(
    labels: Volume, path: str | Path, label_info: Sequence[LabelInfo], *, overwrite: bool = False
) -> Path:
    """Write a label map on ``labels``' grid: a plain uint8 file, or a 3D Slicer ``.seg.nrrd``.

    The suffix chooses the format: ``.seg.nrrd`` gives a Slicer segmentation (one segment per
    ``LabelInfo`` plus any unlisted value found in the map); ``.nii.gz``, ``.nii`` and ``.nrrd``
    give a plain label map. The write is atomic and refuses an existing file unless ``overwrite``.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(SEGMENTATION_SUFFIX):
        image = _uint8_labels(labels, path)
        segments = _segments_for(labels.array, label_info, path)
        _set_segment_metadata(image, labels.array, segments)
        _write_atomic(image, path, overwrite=overwrite)
        _verify_segment_metadata(path, len(segments))
        return path
    if name.endswith(PLAIN_SUFFIXES):
        return _write_atomic(_uint8_labels(labels, path), path, overwrite=overwrite)
    raise InputError(
        f"{path}: unknown output format; use a name ending in .seg.nrrd, .nii.gz, .nii or .nrrd."
    )


def _segments_for(array: np.ndarray, label_info: Sequence[LabelInfo], path: Path) -> list[LabelInfo]:
    values = [lab.value for lab in label_info]
    if len(set(values)) != len(values):
        raise InputError(f"{path}: label definitions repeat a value ({values}); give each label one value.")
    segments = [lab for lab in label_info if lab.value != 0]
    present = {int(v) for v in np.unique(array)} - {0} - set(values)
    segments += [LabelInfo(v, f"label_{v}", (128, 128, 128)) for v in sorted(present)]
    return sorted(segments, key=lambda lab: lab.value)


def _terminology_entry(label: LabelInfo) -> str:
    """Slicer's terminology entry string for a structure with a SNOMED CT code (type + laterality)."""
    return terminology_entry(label.snomed, label.name)


def _segment_tags(label: LabelInfo) -> str:
    tags = "Segmentation.Status:completed|"
    if label.snomed:
        tags += f"TerminologyEntry:{_terminology_entry(label)}|"
    return tags


def _extent(array: np.ndarray, value: int) -> str:
    """Voxel index extent ``x0 x1 y0 y1 z0 z1`` of a segment (``0 -1 ...`` when empty)."""
    idx = np.nonzero(array == value)
    if idx[0].size == 0:
        return "0 -1 0 -1 0 -1"
    z, y, x = ((int(i.min()), int(i.max())) for i in idx)
    return f"{x[0]} {x[1]} {y[0]} {y[1]} {z[0]} {z[1]}"


def _set_segment_metadata(image: sitk.Image, array: np.ndarray, segments: list[LabelInfo]) -> None:
    for i, lab in enumerate(segments):
        key = f"Segment{i}_"
        image.SetMetaData(key + "ID", f"Segment_{lab.value}")
        image.SetMetaData(key + "Name", lab.name)
        image.SetMetaData(key + "NameAutoGenerated", "0")
        image.SetMetaData(key + "Color", " ".join(f"{c / 255:.6g}" for c in lab.color))
        image.SetMetaData(key + "ColorAutoGenerated", "0")
        image.SetMetaData(key + "LabelValue", str(lab.value))
        image.SetMetaData(key + "Layer", "0")
        image.SetMetaData(key + "Extent", _extent(array, lab.value))
        image.SetMetaData(key + "Tags", _segment_tags(lab))
    image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    image.SetMetaData("Segmentation_SourceRepresentation", "Binary labelmap")
    image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")


def _verify_segment_metadata(path: Path, n_segments: int) -> None:
    """Read the header back and check that the segment fields survived the writer."""
    header = _read_header(path)
    keys = ["Segmentation_MasterRepresentation"]
    keys += [f"Segment{i}_{field}" for i in range(n_segments) for field in ("LabelValue", "Name", "Extent")]
    lost = [key for key in keys if not header.HasMetaDataKey(key)]
    if lost:
        raise InputError(f"{path}: segment fields {lost} were lost on writing; write a .nii.gz instead.")


def _read_header(path: Path) -> sitk.ImageFileReader:
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"{path}: not a readable image ({_first_line(exc)}); give a .seg.nrrd file."
        ) from exc
    return reader


def read_segmentation_info(path: str | Path) -> list[LabelInfo]:
    """Segments of a 3D Slicer ``.seg.nrrd`` (single layer) as ``LabelInfo``, in file order."""
    path = Path(path)
    reader = _read_header(path)
    segments = []
    i = 0
    while reader.HasMetaDataKey(f"Segment{i}_LabelValue"):
        get = lambda field, i=i: reader.GetMetaData(f"Segment{i}_{field}")  # noqa: E731
        has = lambda field, i=i: reader.HasMetaDataKey(f"Segment{i}_{field}")  # noqa: E731
        name = get("Name") if has("Name") else get("ID") if has("ID") else f"segment_{i}"
        color = (
            tuple(round(float(c) * 255) for c in get("Color").split()) if has("Color") else (128, 128, 128)
        )
        snomed = _snomed_from_tags(get("Tags")) if has("Tags") else None
        segments.append(LabelInfo(int(get("LabelValue")), name, color, snomed))
        i += 1
    if not segments:
        raise InputError(f"{path}: holds no segment fields; give a 3D Slicer segmentation (.seg.nrrd).")
    return segments


def _snomed_from_tags(tags: str) -> str | None:
    for tag in tags.split("|"):
        if tag.startswith("TerminologyEntry:"):
            return snomed_from_entry(tag[len("TerminologyEntry:"):])
    return None


def read_segmentation_names(path: str | Path) -> dict[int, str]:
    """Segment names of a 3D Slicer ``.seg.nrrd`` by label value."""
    return {lab.value: lab.name for lab in read_segmentation_info(path)}
