"""The Slicer Logic's model zoo: list states, download in a background process (and cancel it),
import a hand-copied file, and the model card, against a loopback HTTP server."""

from __future__ import annotations

import time

import pytest

from Testing.library.model_server import (
    SHIPPED_BUNDLE,
    ModelServer,
    bundle_version,
    manifest_entry,
    write_manifest,
)

DATA = SHIPPED_BUNDLE.read_bytes()
NAME = "abdomen-ummkd"  # the name in the shipped bundle's metadata
URL_PATH = "/m/abdomen-ummkd-1.0.0.zip"


@pytest.fixture()
def zoo(tmp_path, monkeypatch):
    """A Logic on a temporary manifest and cache, and the server of that manifest's one model."""
    from MultiModalSegModuleLib import segmentation_logic as L

    cache = tmp_path / "cache"
    monkeypatch.setenv("MMSEG_MODELS_CACHE", str(tmp_path / "not-this-cache"))  # the Logic's own setting wins
    with ModelServer({URL_PATH: DATA}) as server:
        manifest = write_manifest(tmp_path / "Models.json", [manifest_entry(NAME, server.url(URL_PATH), DATA)])
        yield L, L.MultiModalSegLogic(modelsManifest=manifest, modelsCache=cache), server, cache


def states(logic):
    return [(m["name"], m["state"]) for m in logic.listModels()]


def test_download_in_background_process_then_installed(zoo):
    L, logic, server, cache = zoo
    assert states(logic) == [(NAME, "downloadable")]
    seen = []
    job = logic.startModelDownload(NAME, progress=lambda f, m: seen.append((f, m)))
    assert isinstance(job, L.ProcessJob) and job.proc.pid > 0
    job.wait()
    assert job.state == "done" and job.path is not None and job.path.read_bytes() == DATA
    assert job.path.parent == cache
    assert states(logic) == [(NAME, "installed")]
    assert logic.listModels()[0]["path"] == str(job.path)
    assert any("MB" in m for _, m in seen) and seen[-1] == (1.0, "done")
    assert server.full_gets(URL_PATH) == 1


def test_cancel_mid_download_leaves_no_model_in_cache(zoo):
    _, logic, server, cache = zoo
    server.delay = 0.2  # 64 KiB chunks, slowly
    fractions = []
    job = logic.startModelDownload(NAME, progress=lambda f, m: fractions.append(f))
    deadline = time.monotonic() + 60
    while not any(0 < f < 1 for f in fractions):  # wait for real progress before cancelling
        assert not job.poll(), job.error
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.cancel()
    assert job.state == "cancelled" and job.proc.returncode is not None
    assert not list(cache.glob("*.zip"))  # only the library's resumable .part (and its lock) may remain
    assert {p.suffix for p in cache.iterdir()} <= {".part", ".lock"}
    assert states(logic) == [(NAME, "downloadable")]

    server.delay = 0.0  # the next download resumes from the kept .part with a Range request
    path = logic.downloadModel(NAME)
    assert path.read_bytes() == DATA and any(p == URL_PATH and r for p, r in server.requests)
    assert states(logic) == [(NAME, "installed")]


def test_update_keeps_old_copy_until_new_one_verifies(zoo, tmp_path):
    L, logic, server, _ = zoo
    old = logic.downloadModel(NAME)
    v2 = bundle_version(SHIPPED_BUNDLE, tmp_path / "v2.zip", "1.1.0")
    v2_path = "/m/abdomen-ummkd-1.1.0.zip"
    server.files[v2_path] = v2[:-10] + b"0123456789"  # altered on the way
    write_manifest(tmp_path / "Models.json",
                   [manifest_entry(NAME, server.url(v2_path), v2, version="1.1.0")])
    listed = logic.listModels()[0]
    assert (listed["state"], listed["installed_version"]) == ("update available", "1.0.0")
    with pytest.raises(L.SegmentationError, match="sha256"):
        logic.downloadModel(NAME)
    assert old.read_bytes() == DATA and logic.listModels()[0]["state"] == "update available"
    server.files[v2_path] = v2
    new = logic.downloadModel(NAME)
    assert new.read_bytes() == v2 and not old.exists()
    assert states(logic) == [(NAME, "installed")]


def test_failed_download_reports_the_library_sentence(zoo):
    L, logic, server, _ = zoo
    server.status = 503
    job = logic.startModelDownload(NAME)
    with pytest.raises(L.SegmentationError, match=NAME):
        job.wait()
    assert job.state == "failed" and "mmseg models import" in job.error
    assert states(logic) == [(NAME, "downloadable")]


def test_import_file_makes_model_installed(zoo, tmp_path):
    L, logic, _, cache = zoo
    copied = tmp_path / "usb" / "copied.zip"
    copied.parent.mkdir()
    copied.write_bytes(DATA)
    info = logic.importModelFile(copied)
    assert info["name"] == NAME and info["version"] == "1.0.0"
    assert states(logic) == [(NAME, "installed")]
    assert (cache / "abdomen-ummkd-1.0.0.zip").read_bytes() == DATA
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a bundle")
    with pytest.raises(L.SegmentationError, match="bad.zip"):
        logic.importModelFile(bad)


def test_model_card_lists_labels_and_licence(zoo, tmp_path):
    _, logic, _, _ = zoo
    card = logic.modelCard(NAME)  # not installed yet: the manifest's facts
    for word in (NAME, "liver", "spleen", "kidney_left", "Apache-2.0"):
        assert word in card, word
    copied = tmp_path / "copied.zip"
    copied.write_bytes(DATA)
    logic.importModelFile(copied)
    installed = logic.modelCard(NAME)  # installed: the bundle's metadata too
    assert "liver" in installed and "Apache-2.0" in installed and installed != card
