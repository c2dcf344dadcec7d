"""The model zoo: states, updates that keep the old copy until the new one verifies, offline import,
export, remove, verify and invalid manifest entries."""

from __future__ import annotations

import zipfile

import pytest

from MultiModalSegLib.bundle import load_bundle
from MultiModalSegLib.download import DownloadError
from MultiModalSegLib.errors import BundleError
from MultiModalSegLib.model_zoo import (
    DOWNLOADABLE,
    INSTALLED,
    UPDATE_AVAILABLE,
    download_model,
    export_model,
    import_model,
    list_models,
    remove_model,
    verify_models,
    version_newer,
)
from MultiModalSegLib.models import load_manifest, resolve_model
from Testing.library.model_server import (
    SHIPPED_BUNDLE,
    ModelServer,
    bundle_version,
    closed_port,
    manifest_entry,
    sha256,
    write_manifest,
)

DATA = SHIPPED_BUNDLE.read_bytes()
V1 = "/m/abdomen-ummkd-1.0.0.zip"
V2 = "/m/abdomen-ummkd-1.1.0.zip"


@pytest.fixture()
def v2(tmp_path):
    return bundle_version(SHIPPED_BUNDLE, tmp_path / "v2.zip", "1.1.0")


def states(manifest, cache):
    return [(m.name, m.state, m.installed_version) for m in list_models(manifest, cache)]


def test_version_order():
    assert version_newer("1.1.0", "1.0.0") and version_newer("1.0.0", "1.0.0-rc.1") and version_newer("2.0.0", "1.9.9")
    assert not version_newer("1.0.0", "1.0.0") and not version_newer("1.0.0", "1.0.1")


def test_states_download_and_update_keep_old_until_verified(tmp_path, v2):
    cache = tmp_path / "cache"
    with ModelServer({V1: DATA, V2: v2}) as server:
        manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", server.url(V1), DATA)])
        assert states(manifest, cache) == [("abdomen-ummkd", DOWNLOADABLE, None)]
        old = download_model("abdomen-ummkd", manifest, cache)
        assert states(manifest, cache) == [("abdomen-ummkd", INSTALLED, "1.0.0")]
        assert list_models(manifest, cache)[0].path == str(old)

        # the manifest moves to 1.1.0: an update is offered
        entry = manifest_entry("abdomen-ummkd", server.url(V2), v2, version="1.1.0")
        write_manifest(manifest, [entry])
        assert states(manifest, cache) == [("abdomen-ummkd", UPDATE_AVAILABLE, "1.0.0")]

        # a damaged update is refused and the old copy stays
        server.files[V2] = v2[:-10] + b"0123456789"
        with pytest.raises(DownloadError, match="sha256"):
            download_model("abdomen-ummkd", manifest, cache)
        assert old.read_bytes() == DATA
        assert states(manifest, cache) == [("abdomen-ummkd", UPDATE_AVAILABLE, "1.0.0")]

        server.files[V2] = v2
        new = download_model("abdomen-ummkd", manifest, cache)
        assert new.read_bytes() == v2 and not old.exists()
        assert states(manifest, cache) == [("abdomen-ummkd", INSTALLED, "1.1.0")]
        assert load_bundle(new, expected_sha256=sha256(v2)).metadata["version"] == "1.1.0"


def test_import_hand_copied_file_makes_model_usable_offline(tmp_path):
    cache = tmp_path / "cache"
    url = f"http://127.0.0.1:{closed_port()}{V1}"  # nothing answers: no network
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", url, DATA)])
    with pytest.raises(DownloadError, match="mmseg models import"):
        resolve_model("abdomen-ummkd", manifest, cache_dir=cache)
    copied = tmp_path / "usb" / "whatever-name.zip"
    copied.parent.mkdir()
    copied.write_bytes(DATA)
    entry, path = import_model(copied, manifest, cache)
    assert entry.name == "abdomen-ummkd" and path == cache / "abdomen-ummkd-1.0.0.zip"
    assert states(manifest, cache) == [("abdomen-ummkd", INSTALLED, "1.0.0")]
    resolved, sha = resolve_model("abdomen-ummkd", manifest, cache_dir=cache)
    assert resolved == path
    assert load_bundle(resolved, expected_sha256=sha).name == "abdomen-ummkd"
    assert copied.exists()  # the user's copy is left alone


def test_import_refuses_other_version_or_unknown_model(tmp_path, v2):
    cache = tmp_path / "cache"
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", "https://x.org/a.zip", DATA)])
    # an intact bundle of another model under the manifest model's name: a name clash, said as one
    clash = r"a different model that has the same name as the manifest's model 'abdomen-ummkd' \(a name clash, not a damaged"
    with pytest.raises(BundleError, match=clash + r".*version 1\.1\.0.*is version 1\.0\.0.*not imported.*--model PATH.*--name"):
        import_model(tmp_path / "v2.zip", manifest, cache)
    damaged = tmp_path / "damaged.zip"  # a readable zip whose weights no longer match its own metadata
    with zipfile.ZipFile(SHIPPED_BUNDLE) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[:-16] + bytes(16) if info.filename.endswith("model.pt") else data)
    with pytest.raises(BundleError, match=r"weights do not match its own metadata.*\(the copy is damaged\)"):
        import_model(damaged, manifest, cache)
    other = write_manifest(tmp_path / "Other.json", [manifest_entry("liver-only", "https://x.org/b.zip", b"x")])
    with pytest.raises(BundleError, match=r"matches no model .*known: liver-only.*--model PATH"):
        import_model(SHIPPED_BUNDLE, other, cache)
    not_a_bundle = tmp_path / "notes.zip"
    not_a_bundle.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a readable model bundle"):
        import_model(not_a_bundle, manifest, cache)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_export_remove_verify(tmp_path):
    cache = tmp_path / "cache"
    manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", "https://x.org/a-1.0.0.zip", DATA)])
    with pytest.raises(BundleError, match="not installed .*mmseg models download abdomen-ummkd"):
        export_model("abdomen-ummkd", tmp_path / "out.zip", manifest, cache)
    assert [(r.name, r.ok) for r in verify_models(None, manifest, cache)] == [("abdomen-ummkd", None)]
    _, path = import_model(SHIPPED_BUNDLE, manifest, cache)
    out = export_model("abdomen-ummkd", tmp_path, manifest, cache)
    assert out == tmp_path / "a-1.0.0.zip" and out.read_bytes() == DATA
    assert [(r.name, r.ok) for r in verify_models("abdomen-ummkd", manifest, cache)] == [("abdomen-ummkd", True)]

    damaged = bytearray(DATA)
    damaged[100] ^= 1
    path.write_bytes(bytes(damaged))
    (result,) = verify_models(None, manifest, cache)
    assert result.ok is False and "mmseg models remove abdomen-ummkd" in result.message
    with pytest.raises(BundleError, match="does not match its sha256 .*not exported"):
        export_model("abdomen-ummkd", tmp_path / "again.zip", manifest, cache)
    with pytest.raises(BundleError, match="expects"):
        load_bundle(path, expected_sha256=sha256(DATA))

    assert remove_model("abdomen-ummkd", manifest, cache) == [path]
    assert not path.exists() and states(manifest, cache) == [("abdomen-ummkd", DOWNLOADABLE, None)]


def test_shipped_model_cannot_be_removed():
    with pytest.raises(BundleError, match="shipped with MultiModalSeg"):
        remove_model("abdomen-ummkd")
    assert [m.state for m in list_models()] == [INSTALLED] * len(load_manifest())


@pytest.mark.parametrize(
    "change, words",
    [
        ({"url": "http://example.org/a.zip"}, r"field 'url' is invalid"),
        ({"url": "ftp://example.org/a.zip"}, r"field 'url' is invalid"),
        ({"sha256": "abc"}, r"field 'sha256' is invalid"),
        ({"size": 0}, r"field 'size' is invalid"),
        ({"gpu_seconds": {"ct": -1}}, r"field 'gpu_seconds.ct' is invalid"),
    ],
)
def test_invalid_manifest_entry(tmp_path, change, words):
    manifest = write_manifest(
        tmp_path / "Models.json",
        [manifest_entry("good", "https://x.org/g.zip", DATA), {**manifest_entry("bad", "https://x.org/b.zip", DATA), **change}],
    )
    with pytest.raises(BundleError, match=r"model entry 1 \('bad'\): " + words + ".*fix the manifest"):
        list_models(manifest, tmp_path / "cache")


def test_manifest_override_by_environment(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path / "Mine.json", [manifest_entry("mine", "https://x.org/m.zip", DATA)])
    monkeypatch.setenv("MMSEG_MODELS_MANIFEST", str(manifest))
    monkeypatch.setenv("MMSEG_MODELS_CACHE", str(tmp_path / "cache"))
    assert states(None, None) == [("mine", DOWNLOADABLE, None)]
    monkeypatch.setenv("MMSEG_MODELS_MANIFEST", str(tmp_path / "missing.json"))
    with pytest.raises(BundleError, match="cannot be read"):
        list_models()


def test_update_under_the_same_file_name_replaces_only_once_verified(tmp_path, v2):
    cache = tmp_path / "cache"
    with ModelServer({V1: DATA}) as server:
        manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("abdomen-ummkd", server.url(V1), DATA)])
        path = download_model("abdomen-ummkd", manifest, cache)
        server.files[V1] = v2  # the server now holds 1.1.0 at the same URL
        write_manifest(manifest, [manifest_entry("abdomen-ummkd", server.url(V1), b"not what is served", version="1.1.0")])
        assert states(manifest, cache) == [("abdomen-ummkd", UPDATE_AVAILABLE, "1.0.0")]
        with pytest.raises(DownloadError, match="bytes but the models manifest expects"):
            resolve_model("abdomen-ummkd", manifest, cache_dir=cache)
        assert path.read_bytes() == DATA  # the old copy survives a failed update
        write_manifest(manifest, [manifest_entry("abdomen-ummkd", server.url(V1), v2, version="1.1.0")])
        assert resolve_model("abdomen-ummkd", manifest, cache_dir=cache) == (path, sha256(v2))
        assert path.read_bytes() == v2 and states(manifest, cache) == [("abdomen-ummkd", INSTALLED, "1.1.0")]
