"""The models manifest: validation, default model, name/path resolution, atomic updates."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from MultiModalSegLib.errors import BundleError
from MultiModalSegLib.models import (
    ModelEntry,
    add_to_manifest,
    default_model,
    load_manifest,
    resolve_model,
)
from MultiModalSegLib.resources import resources_dir, schema_path

SHA_A = "a" * 64
SHA_B = "b" * 64


def entry(name: str, **overrides) -> dict:
    d = {
        "name": name,
        "version": "1.0.0",
        "description": f"{name} model",
        "method": "ummkd",
        "modalities": ["ct", "mr"],
        "labels": ["liver", "spleen", "kidney_right", "kidney_left"],
        "spacing": [1.5, 1.5, 2.0],
        "sha256": SHA_A,
        "file": f"Models/{name}.zip",
        "licence": "Apache-2.0",
    }
    d.update(overrides)
    return d


def write_manifest(tmp_path: Path, models: list[dict]) -> Path:
    path = tmp_path / "Models.json"
    path.write_text(json.dumps({"format_version": 1, "models": models}))
    return path


def test_shipped_manifest_is_valid():
    doc = json.loads((resources_dir() / "Models.json").read_text())
    jsonschema.validate(doc, json.loads(schema_path("models_manifest").read_text()))
    assert isinstance(load_manifest(), list)


def test_shipped_models_match_their_bundles():
    """Every shipped entry's sha256 is its file's, and its metrics summary is computed from the
    bundle's own metadata (by ``training/package_model.py``), not typed into the manifest."""
    from MultiModalSegLib.bundle import file_sha256, load_bundle
    from Testing.conftest import load_script

    package_model = load_script("training/package_model.py")
    entries = [e for e in load_manifest() if e.file]
    assert sum(e.default for e in load_manifest()) == 1
    for e in entries:
        path = resources_dir() / e.file
        assert file_sha256(path) == e.sha256, e.name
        if e.metrics:
            meta = load_bundle(path, expected_sha256=e.sha256).metadata
            assert e.metrics == package_model.manifest_metrics(meta["metrics"])


def test_load_entries(tmp_path):
    path = write_manifest(tmp_path, [entry("a", cpu_seconds={"ct_small": 12.5}), entry("b", default=True)])
    entries = load_manifest(path)
    assert [e.name for e in entries] == ["a", "b"]
    assert isinstance(entries[0], ModelEntry)
    assert entries[0].cpu_seconds == {"ct_small": 12.5}
    assert entries[0].resolve_path() == tmp_path / "Models" / "a.zip"


def test_default_model(tmp_path):
    assert default_model(write_manifest(tmp_path, [entry("a"), entry("b", default=True)])).name == "b"
    assert default_model(write_manifest(tmp_path, [entry("a"), entry("b")])).name == "a"


def test_no_model_installed(tmp_path):
    with pytest.raises(BundleError, match="No model is installed"):
        default_model(write_manifest(tmp_path, []))
    with pytest.raises(BundleError, match="No model is installed"):
        resolve_model(None, write_manifest(tmp_path, []))


def test_schema_error_names_entry(tmp_path):
    path = write_manifest(tmp_path, [entry("good"), entry("bad", spacing=[1, 0, 1])])
    with pytest.raises(BundleError, match=r"model entry 1 \('bad'\).*spacing"):
        load_manifest(path)


def test_file_and_url_exclusive(tmp_path):
    path = write_manifest(tmp_path, [entry("both", url="https://example.org/both.zip")])
    with pytest.raises(BundleError, match="exactly one of 'file' or 'url'"):
        load_manifest(path)
    path = write_manifest(tmp_path, [entry("http", file=None)])
    with pytest.raises(BundleError, match="'http'"):
        load_manifest(path)


def test_duplicate_names_rejected(tmp_path):
    with pytest.raises(BundleError, match="more than once"):
        load_manifest(write_manifest(tmp_path, [entry("a"), entry("a")]))


def test_invalid_json(tmp_path):
    path = tmp_path / "Models.json"
    path.write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_manifest(path)


def test_resolve_by_name(tmp_path):
    path = write_manifest(tmp_path, [entry("a"), entry("b", sha256=SHA_B)])
    assert resolve_model("b", path) == (tmp_path / "Models" / "b.zip", SHA_B)


def test_resolve_default(tmp_path):
    path = write_manifest(tmp_path, [entry("a"), entry("b", default=True, sha256=SHA_B)])
    assert resolve_model(None, path) == (tmp_path / "Models" / "b.zip", SHA_B)


def test_resolve_existing_path_used_as_is(tmp_path):
    bundle = tmp_path / "mine"
    bundle.mkdir()
    path = write_manifest(tmp_path, [entry("a")])
    assert resolve_model(str(bundle), path) == (bundle, None)


def test_resolve_unknown_lists_known(tmp_path):
    path = write_manifest(tmp_path, [entry("alpha"), entry("beta")])
    with pytest.raises(BundleError, match="known: alpha, beta"):
        resolve_model("gamma", path)


def test_url_entry_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEG_MODELS_CACHE", str(tmp_path / "cache"))
    path = write_manifest(tmp_path, [entry("remote", file=None, url="https://example.org/remote-1.0.0.zip")])
    path.write_text(path.read_text().replace('"file": null, ', ""))
    (model,) = load_manifest(path)
    with pytest.raises(BundleError, match="not downloaded"):
        model.resolve_path()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "remote-1.0.0.zip").write_bytes(b"zip")
    assert model.resolve_path() == tmp_path / "cache" / "remote-1.0.0.zip"


def test_file_escaping_resources_rejected(tmp_path):
    (model,) = load_manifest(write_manifest(tmp_path, [entry("a", file="../elsewhere.zip")]))
    with pytest.raises(BundleError, match="without '..'"):
        model.resolve_path()


def test_add_to_manifest_replaces_and_moves_default(tmp_path):
    path = tmp_path / "Models.json"
    add_to_manifest(entry("a", default=True), path)
    add_to_manifest(entry("b"), path)
    add_to_manifest(entry("a", version="1.1.0"), path)
    entries = load_manifest(path)
    assert [(e.name, e.version) for e in entries] == [("a", "1.1.0"), ("b", "1.0.0")]
    add_to_manifest(entry("b", default=True), path)
    assert [e.name for e in load_manifest(path) if e.default] == ["b"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_add_invalid_entry_leaves_manifest(tmp_path):
    path = tmp_path / "Models.json"
    add_to_manifest(entry("a"), path)
    before = path.read_text()
    with pytest.raises(BundleError, match="sha256"):
        add_to_manifest(entry("b", sha256="nope"), path)
    assert path.read_text() == before
