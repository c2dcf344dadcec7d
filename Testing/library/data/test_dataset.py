"""dataset.json parsing, few-shot label subsets, label remapping and case preparation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MultiModalSegLib.data.dataset import Case, labelled_subset, load_dataset
from MultiModalSegLib.data.loading import prepare_case, remap_label_array
from MultiModalSegLib.data.phantoms import write_phantom_dataset
from MultiModalSegLib.errors import ConfigError, InputError
from MultiModalSegLib.labels import LABEL_REMAPS

LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left"}


def write(root: Path, data: dict, files: tuple[str, ...] = ()) -> Path:
    """A dataset.json in ``root``, with empty placeholder files for the paths it names."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("training", "validation", "test"):
        for entry in data.get(split, []):
            for key in ("image", "label"):
                if entry.get(key) and entry[key] not in files:
                    (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
                    (root / entry[key]).touch()
    path = root / "dataset.json"
    path.write_text(json.dumps(data))
    return path


def base(**extra) -> dict:
    return {
        "name": "toy",
        "licence": "CC0-1.0",
        "labels": LABELS,
        "training": [
            {"image": "imagesTr/ct_000.nii.gz", "label": "labelsTr/ct_000.nii.gz", "modality": "CT"},
            {"image": "imagesTr/mr_000.nii.gz", "modality": "mr", "name": "patient7"},
        ],
        "validation": [{"image": "imagesTr/ct_001.nii.gz", "label": "labelsTr/ct_001.nii.gz", "modality": "CT"}],
        **extra,
    }


def test_paths_are_resolved_relative_to_the_file(tmp_path):
    path = write(tmp_path / "ds", base())
    for where in (path, path.parent):  # the file or its folder
        spec = load_dataset(where)
        ct = spec.splits["training"][0]
        assert ct.image == (tmp_path / "ds" / "imagesTr" / "ct_000.nii.gz").resolve()
        assert ct.label == (tmp_path / "ds" / "labelsTr" / "ct_000.nii.gz").resolve()
        assert ct.image.is_absolute()


def test_labels_splits_names_and_modalities(tmp_path):
    spec = load_dataset(write(tmp_path, base()))
    assert spec.name == "toy" and spec.licence == "CC0-1.0"
    assert spec.labels == {0: "background", 1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}
    assert [c.name for c in spec.cases("training")] == ["ct_000", "patient7"]
    assert [c.name for c in spec.cases("validation")] == ["ct_001"]
    assert spec.cases("test") == []
    mr = spec.splits["training"][1]
    assert mr.modality == "MR" and mr.label is None and not mr.labelled  # modality name normalised
    assert [c.name for c in spec.cases("training", modality="CT")] == ["ct_000"]
    assert [c.name for c in spec.cases("training", labelled=False)] == ["patient7"]
    assert spec.modalities == ["CT", "MR"]
    assert all(c.label_remap is None and c.weight == 1.0 for c in spec.cases("training"))


def test_label_remap_by_builtin_name_by_file_name_and_inline(tmp_path):
    data = base(label_remaps={"mine": {"7": 1, "8": "2"}})
    data["training"][0]["label_remap"] = "totalsegmentator"
    data["validation"][0]["label_remap"] = "mine"
    data["test"] = [
        {"image": "imagesTs/a.nii.gz", "label": "labelsTs/a.nii.gz", "modality": "MR", "label_remap": {"9": 4, "10": 3}}
    ]
    spec = load_dataset(write(tmp_path, data))
    assert spec.splits["training"][0].label_remap == {5: 1, 1: 2, 2: 3, 3: 4}
    assert spec.splits["validation"][0].label_remap == {7: 1, 8: 2}
    assert spec.splits["test"][0].label_remap == {9: 4, 10: 3}


def test_a_file_table_overrides_a_builtin_of_the_same_name(tmp_path):
    data = base(label_remaps={"totalsegmentator": {"1": 1}})
    data["training"][0]["label_remap"] = "totalsegmentator"
    assert load_dataset(write(tmp_path, data)).splits["training"][0].label_remap == {1: 1}
    assert LABEL_REMAPS["totalsegmentator"] == {5: 1, 1: 2, 2: 3, 3: 4}  # built-in untouched


def test_unknown_remap_name_is_a_config_error(tmp_path):
    data = base()
    data["training"][0]["label_remap"] = "nnunet"
    with pytest.raises(ConfigError, match="nnunet"):
        load_dataset(write(tmp_path, data))


def test_non_integer_inline_remap_is_a_config_error(tmp_path):
    data = base()
    data["training"][0]["label_remap"] = {"liver": 1}
    with pytest.raises(ConfigError, match="integer"):
        load_dataset(write(tmp_path, data))


def test_missing_file_is_a_config_error_naming_it(tmp_path):
    path = write(tmp_path, base(), files=("labelsTr/ct_001.nii.gz",))
    with pytest.raises(ConfigError, match="ct_001.nii.gz") as err:
        load_dataset(path)
    assert "validation" in str(err.value)


def test_missing_dataset_json_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="no dataset.json"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_dataset(tmp_path)


def test_missing_labels_key_is_a_config_error(tmp_path):
    data = base()
    del data["labels"]
    with pytest.raises(ConfigError, match="labels"):
        load_dataset(write(tmp_path, data))


def test_case_without_image_or_modality_and_empty_dataset(tmp_path):
    data = base()
    del data["training"][1]["modality"]
    with pytest.raises(ConfigError, match="case 1"):
        load_dataset(write(tmp_path / "a", data))
    with pytest.raises(ConfigError, match="no cases"):
        load_dataset(write(tmp_path / "b", {"labels": LABELS, "training": []}))


def test_unknown_modality_is_an_input_error(tmp_path):
    data = base()
    data["training"][1]["modality"] = "PET"
    with pytest.raises(InputError, match="PET"):
        load_dataset(write(tmp_path, data))


def make_cases(n_labelled: int, n_unlabelled: int) -> list[Case]:
    cases = [Case(f"l{i}", Path(f"/d/l{i}.nii.gz"), "CT", Path(f"/d/l{i}_seg.nii.gz"), {5: 1}, 2.0) for i in range(n_labelled)]
    cases += [Case(f"u{i}", Path(f"/d/u{i}.nii.gz"), "CT") for i in range(n_unlabelled)]
    return cases


@pytest.mark.parametrize("n", [0, 1, 3, 6])
def test_labelled_subset_keeps_exactly_n_labels(n):
    cases = make_cases(6, 2)
    out = labelled_subset(cases, n, seed=1)
    assert [c.name for c in out] == [c.name for c in cases]  # same cases, same order
    kept = [c for c in out if c.labelled]
    assert len(kept) == n
    assert all(c.name.startswith("l") for c in kept)
    for old, new in zip(cases, out, strict=True):
        assert new.image == old.image and new.modality == old.modality and new.weight == old.weight
        if new.labelled:
            assert new == old
        else:
            assert new.label_remap is None


def test_labelled_subset_is_seeded():
    cases = make_cases(8, 0)

    def chosen(seed: int) -> list[str]:
        return [c.name for c in labelled_subset(cases, 3, seed=seed) if c.labelled]

    assert chosen(4) == chosen(4)
    assert len({tuple(chosen(s)) for s in range(6)}) > 1


def test_labelled_subset_cannot_invent_labels():
    with pytest.raises(ConfigError, match="only 2"):
        labelled_subset(make_cases(2, 5), 3)


def test_remap_totalsegmentator_ids():
    array = np.array([[[0, 1, 2, 3, 4, 5, 6, 7, 104]]], dtype=np.int16)
    out = remap_label_array(array, LABEL_REMAPS["totalsegmentator"], [1, 2, 3, 4], "tseg.nii.gz")
    assert out.dtype == np.uint8 and out.shape == array.shape
    np.testing.assert_array_equal(out, [[[0, 2, 3, 4, 0, 1, 0, 0, 0]]])


def test_remap_table_with_ids_above_the_data_maximum():
    out = remap_label_array(np.array([0, 1, 1], dtype=np.uint8), {1: 2, 200: 3}, [1, 2, 3], "x")
    np.testing.assert_array_equal(out, [0, 2, 2])


def test_labels_without_remap_must_be_valid():
    ok = np.array([0, 1, 4, 4], dtype=np.int32)
    out = remap_label_array(ok, None, [1, 2, 3, 4], "a.nii.gz")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, ok)
    with pytest.raises(InputError, match="labels_bad.nii.gz") as err:
        remap_label_array(np.array([0, 1, 5, 9]), None, [1, 2, 3, 4], "labels_bad.nii.gz")
    assert "[5, 9]" in str(err.value) and "label_remap" in str(err.value)


@pytest.fixture(scope="module")
def phantom_cases(tmp_path_factory) -> list[Case]:
    path = write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), 1, 1)
    return load_dataset(path).cases("training")


def organ_volumes_ml(label: np.ndarray, voxel_mm3: float) -> np.ndarray:
    return np.bincount(label.ravel(), minlength=5)[1:5] * voxel_mm3 / 1000.0


@pytest.mark.parametrize("spacing", [4.0, 6.0])
def test_prepare_case_on_phantoms(phantom_cases, spacing):
    assert [c.modality for c in phantom_cases] == ["CT", "MR"]
    for case in phantom_cases:
        prepared = prepare_case(case, (spacing,) * 3, [1, 2, 3, 4])
        assert prepared.name == case.name and prepared.modality == case.modality
        assert prepared.image.dtype == np.float32 and prepared.image.ndim == 3
        assert prepared.image.min() >= -1e-3 and prepared.image.max() <= 1.0 + 1e-3
        assert prepared.image.max() > 0.5  # not all background
        assert prepared.label.dtype == np.uint8 and prepared.label.shape == prepared.image.shape
        assert set(np.unique(prepared.label).tolist()) == {0, 1, 2, 3, 4}
        # The voxels are spacing^3 mm^3: organ volumes match those of the source label map.
        source = sitk.ReadImage(str(case.label))
        src_ml = organ_volumes_ml(sitk.GetArrayFromImage(source).astype(np.int64), float(np.prod(source.GetSpacing())))
        got_ml = organ_volumes_ml(prepared.label, spacing**3)
        np.testing.assert_allclose(got_ml, src_ml, rtol=0.15)
        assert prepared.foreground.size == np.count_nonzero(prepared.label)


def test_prepare_case_applies_the_remap_and_keeps_the_weight(phantom_cases):
    case = phantom_cases[0]
    plain = prepare_case(case, (6.0,) * 3, [1, 2, 3, 4])
    swapped = Case(case.name, case.image, case.modality, case.label, {1: 2, 2: 1}, weight=3.5)
    remapped = prepare_case(swapped, (6.0,) * 3, [1, 2, 3, 4])
    assert remapped.weight == 3.5
    np.testing.assert_array_equal(remapped.image, plain.image)
    np.testing.assert_array_equal(remapped.label == 2, plain.label == 1)
    np.testing.assert_array_equal(remapped.label == 1, plain.label == 2)
    assert not np.isin(remapped.label, [3, 4]).any()  # ids not in the table become background


def test_prepare_case_without_label(phantom_cases):
    case = phantom_cases[1]
    prepared = prepare_case(Case(case.name, case.image, case.modality), (6.0,) * 3, [1, 2, 3, 4])
    assert prepared.label is None and prepared.foreground.size == 0
