"""Model bundles: round trips, hashes, schema, version and consistency checks, zip safety."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from MultiModalSegLib import bundle as bundle_mod
from MultiModalSegLib.bundle import (
    CURRENT_FORMAT_VERSION,
    Bundle,
    bundle_sha256,
    check_output_channels,
    file_sha256,
    folder_sha256,
    load_bundle,
    save_bundle,
    weights_sha256,
)
from MultiModalSegLib.errors import BundleError
from MultiModalSegLib.labels import ABDOMEN_LABELS


def make_metadata(**overrides) -> dict:
    meta = {
        "name": "abdomen-test",
        "version": "0.1.0",
        "description": "tiny test model",
        "method": "ummkd",
        "network": {"name": "unet", "params": {"in_channels": 1, "out_channels": 5}},
        "modalities": {
            "ct": {"name": "ct", "kind": "ct_window", "params": {"lower": -175, "upper": 250}, "description": "CT"},
            "mr": {"name": "mr", "kind": "percentile", "params": {"lower": 0.5, "upper": 99.5}},
        },
        "labels": [lab.to_dict() for lab in ABDOMEN_LABELS],
        "spacing": [1.5, 1.5, 2.0],
        "patch_size": [64, 64, 32],
        "inference": {"overlap": 0.5, "sw_batch_size": 2, "mode": "gaussian"},
        "training": {"datasets": ["amos"], "steps": 10, "seed": 0},
        "licence": "Apache-2.0",
    }
    meta.update(overrides)
    return meta


def make_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(5, 1, 3, 3, 3, generator=g), "conv.bias": torch.arange(5.0)}


def assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def write_raw_bundle(folder: Path, metadata: dict, weights: bytes | None = None) -> Path:
    """A bundle folder written by hand (bypassing save_bundle's validation)."""
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps(metadata))
    if weights is not None:
        (folder / "model.pt").write_bytes(weights)
    return folder


def state_bytes(tmp_path: Path) -> bytes:
    path = save_bundle(tmp_path / "src", make_metadata(), make_state())
    return (path / "model.pt").read_bytes()


# ----------------------------------------------------------------------------- round trips


def test_folder_round_trip(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    state = make_state()
    out = save_bundle(tmp_path / "model", make_metadata(), state, extra_files={"report.md": report})
    assert out.is_dir() and (out / "report.md").read_text() == "# report\n"
    loaded = load_bundle(out)
    assert isinstance(loaded, Bundle)
    assert_state_equal(loaded.state_dict, state)
    assert loaded.metadata["format_version"] == CURRENT_FORMAT_VERSION
    assert loaded.metadata["model_sha256"] == file_sha256(out / "model.pt")
    assert [lab.name for lab in loaded.labels] == [lab.name for lab in ABDOMEN_LABELS]
    assert loaded.labels[0] == ABDOMEN_LABELS[0]
    assert loaded.modalities == ["ct", "mr"]
    assert (loaded.name, loaded.method) == ("abdomen-test", "ummkd")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_zip_round_trip_and_sha(tmp_path):
    state = make_state()
    out = save_bundle(tmp_path / "model.zip", make_metadata(), state)
    assert out.is_file() and zipfile.is_zipfile(out)
    assert sorted(zipfile.ZipFile(out).namelist()) == ["metadata.json", "model.pt"]
    loaded = load_bundle(out, expected_sha256=file_sha256(out))
    assert_state_equal(loaded.state_dict, state)
    assert bundle_sha256(out) == hashlib.sha256(out.read_bytes()).hexdigest()


def test_as_zip_overrides_suffix(tmp_path):
    out = save_bundle(tmp_path / "model.bundle", make_metadata(), make_state(), as_zip=True)
    assert zipfile.is_zipfile(out)
    out2 = save_bundle(tmp_path / "folder.zip", make_metadata(), make_state(), as_zip=False)
    assert out2.is_dir()


def test_zip_with_one_top_folder_loads(tmp_path):
    folder = save_bundle(tmp_path / "model", make_metadata(), make_state())
    zpath = tmp_path / "nested.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, arcname=f"model/{f.name}")
    assert load_bundle(zpath).name == "abdomen-test"


def test_folder_sha256_depends_on_names_and_bytes(tmp_path):
    folder = save_bundle(tmp_path / "model", make_metadata(), make_state())
    before = folder_sha256(folder)
    assert before == bundle_sha256(folder)
    (folder / "notes.txt").write_text("x")
    after = folder_sha256(folder)
    assert after != before
    (folder / "notes.txt").rename(folder / "other.txt")
    assert folder_sha256(folder) != after


# ----------------------------------------------------------------------------- overwrite


def test_refuses_overwrite(tmp_path):
    out = save_bundle(tmp_path / "model", make_metadata(), make_state())
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(out, make_metadata(), make_state())
    new_state = {k: v + 1 for k, v in make_state().items()}
    save_bundle(out, make_metadata(), new_state, overwrite=True)
    assert_state_equal(load_bundle(out).state_dict, new_state)


def test_overwrite_refuses_non_bundle_folder(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(BundleError, match="not a model bundle"):
        save_bundle(precious, make_metadata(), make_state(), overwrite=True)
    assert (precious / "thesis.tex").read_text() == "keep me"


def test_save_validates_before_writing(tmp_path):
    with pytest.raises(BundleError, match="spacing"):
        save_bundle(tmp_path / "bad", make_metadata(spacing=[1.0, -1.0, 1.0]), make_state())
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- integrity


def test_tampered_weights_not_loaded(tmp_path, monkeypatch):
    out = save_bundle(tmp_path / "model", make_metadata(), make_state())
    raw = bytearray((out / "model.pt").read_bytes())
    raw[-20] ^= 0xFF
    (out / "model.pt").write_bytes(bytes(raw))
    calls = []
    monkeypatch.setattr(bundle_mod.torch, "load", lambda *a, **k: calls.append(1))
    with pytest.raises(BundleError, match="altered or corrupted"):
        load_bundle(out)
    assert calls == []


def test_tampered_zip_weights_not_loaded(tmp_path):
    src = save_bundle(tmp_path / "model", make_metadata(), make_state())
    zpath = tmp_path / "model.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(src / "metadata.json", "metadata.json")
        zf.writestr("model.pt", (src / "model.pt").read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleError, match="altered or corrupted"):
        load_bundle(zpath)


def test_expected_sha256_checked_first(tmp_path, monkeypatch):
    out = save_bundle(tmp_path / "model.zip", make_metadata(), make_state())
    monkeypatch.setattr(bundle_mod, "_parse_metadata", lambda *a: pytest.fail("metadata read before sha check"))
    with pytest.raises(BundleError, match="manifest expects"):
        load_bundle(out, expected_sha256="0" * 64)


def test_expected_sha256_of_folder(tmp_path):
    out = save_bundle(tmp_path / "model", make_metadata(), make_state())
    load_bundle(out, expected_sha256=folder_sha256(out))
    with pytest.raises(BundleError, match="manifest expects"):
        load_bundle(out, expected_sha256=file_sha256(out / "model.pt"))


def test_missing_path(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nothing")


def test_missing_metadata(tmp_path):
    out = save_bundle(tmp_path / "model", make_metadata(), make_state())
    (out / "metadata.json").unlink()
    with pytest.raises(BundleError, match="no metadata.json"):
        load_bundle(out)


def test_missing_weights(tmp_path):
    out = save_bundle(tmp_path / "model", make_metadata(), make_state())
    (out / "model.pt").unlink()
    with pytest.raises(BundleError, match="no model.pt"):
        load_bundle(out)


def test_invalid_json(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "metadata.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(folder)


def _saved_metadata(tmp_path: Path) -> tuple[dict, bytes]:
    src = save_bundle(tmp_path / "src", make_metadata(), make_state())
    return json.loads((src / "metadata.json").read_text()), (src / "model.pt").read_bytes()


def test_schema_violation_names_field(tmp_path):
    meta, weights = _saved_metadata(tmp_path)
    meta["spacing"] = [1.5, -1.0, 2.0]
    folder = write_raw_bundle(tmp_path / "bad", meta, weights)
    with pytest.raises(BundleError, match=r"spacing\[1\]") as info:
        load_bundle(folder)
    assert "-1.0" in str(info.value)


def test_schema_missing_required_field(tmp_path):
    meta, weights = _saved_metadata(tmp_path)
    del meta["licence"]
    folder = write_raw_bundle(tmp_path / "bad", meta, weights)
    with pytest.raises(BundleError, match="licence"):
        load_bundle(folder)


def test_schema_label_colour_out_of_range(tmp_path):
    meta, weights = _saved_metadata(tmp_path)
    meta["labels"][2]["color"] = [0, 300, 0]
    folder = write_raw_bundle(tmp_path / "bad", meta, weights)
    with pytest.raises(BundleError, match=r"labels\[2\]\.color\[1\]"):
        load_bundle(folder)


def test_newer_format_version(tmp_path):
    meta, weights = _saved_metadata(tmp_path)
    meta["format_version"] = CURRENT_FORMAT_VERSION + 1
    meta["brand_new_field"] = {"anything": 1}
    meta.pop("patch_size")  # a newer format may drop fields; the version is reported first
    folder = write_raw_bundle(tmp_path / "new", meta, weights)
    with pytest.raises(BundleError, match=r"newer MultiModalSeg \(format 2\); upgrade MultiModalSeg"):
        load_bundle(folder)


# ----------------------------------------------------------------------------- zip safety


@pytest.mark.parametrize("entry", ["../evil", "/abs/evil", "sub/../../evil"])
def test_zip_slip_rejected(tmp_path, entry):
    src = save_bundle(tmp_path / "model", make_metadata(), make_state())
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(src / "metadata.json", "metadata.json")
        zf.write(src / "model.pt", "model.pt")
        zf.writestr(zipfile.ZipInfo(entry), b"pwned")
    with pytest.raises(BundleError, match="zip-slip") as info:
        load_bundle(zpath)
    assert entry in str(info.value)
    assert not (tmp_path / "evil").exists()


def test_not_a_zip(tmp_path):
    bogus = tmp_path / "model.zip"
    bogus.write_bytes(b"plain text")
    with pytest.raises(BundleError, match="not a readable zip"):
        load_bundle(bogus)


# ----------------------------------------------------------------------------- consistency


def test_non_contiguous_labels_rejected(tmp_path):
    meta, weights = _saved_metadata(tmp_path)
    meta["labels"] = meta["labels"][:2] + [dict(meta["labels"][3], value=4)]
    meta["network"]["params"]["out_channels"] = 4
    folder = write_raw_bundle(tmp_path / "bad", meta, weights)
    with pytest.raises(BundleError, match=r"\[1, 2, 4\]"):
        load_bundle(folder)


def test_duplicate_label_values_rejected(tmp_path):
    labels = [lab.to_dict() for lab in ABDOMEN_LABELS]
    labels[1]["value"] = 1
    with pytest.raises(BundleError, match="unique"):
        save_bundle(tmp_path / "m", make_metadata(labels=labels), make_state())


def test_out_channels_disagreeing_rejected(tmp_path):
    meta, weights = _saved_metadata(tmp_path)
    meta["network"]["params"]["out_channels"] = 3
    folder = write_raw_bundle(tmp_path / "bad", meta, weights)
    with pytest.raises(BundleError, match="out_channels is 3"):
        load_bundle(folder)
    with pytest.raises(BundleError, match="disagree"):
        save_bundle(tmp_path / "m2", make_metadata(network={"name": "unet", "params": {"out_channels": 7}}), make_state())


def test_check_output_channels(tmp_path):
    loaded = load_bundle(save_bundle(tmp_path / "model", make_metadata(), make_state()))
    check_output_channels(loaded, 5)
    with pytest.raises(BundleError, match="outputs 3 classes"):
        check_output_channels(loaded, 3)


def test_non_tensor_state_dict_rejected(tmp_path):
    with pytest.raises(BundleError, match="state_dict"):
        save_bundle(tmp_path / "m", make_metadata(), {"w": [1, 2, 3]})


def test_pickled_object_not_loaded(tmp_path):
    import io

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1), "x": Payload()}, buf)
    weights = buf.getvalue()
    meta, _ = _saved_metadata(tmp_path)
    meta["model_sha256"] = hashlib.sha256(weights).hexdigest()
    folder = write_raw_bundle(tmp_path / "bad", meta, weights)
    with pytest.raises(BundleError, match="not a loadable state dict"):
        load_bundle(folder)


def test_weights_trained_channels_last_save_as_the_same_bytes():
    """Training on the CPU keeps 3D kernels channels-last (``device.cpu_channels_last``); a bundle's weights
    are serialised in the default layout, so their sha256 does not depend on the layout they were trained in."""
    torch.manual_seed(0)
    state = {"conv.weight": torch.randn(4, 3, 3, 3, 3), "conv.bias": torch.randn(4)}
    channels_last = {**state, "conv.weight": state["conv.weight"].contiguous(memory_format=torch.channels_last_3d)}
    assert not channels_last["conv.weight"].is_contiguous()
    assert weights_sha256(channels_last) == weights_sha256(state)
