"""Item 9: a folder in the working directory named like a manifest model cannot stand in for it."""

from __future__ import annotations

from MultiModalSegLib.models import resolve_model
from Testing.library.hostile.helpers import manifest_with, run, snapshot, tampered_copy, tiny_zip, write_scan


def test_manifest_name_is_never_shadowed_by_a_folder(tmp_path, capsys, monkeypatch):
    genuine = tiny_zip(tmp_path / "zoo" / "Models" / "tiny.zip")
    manifest = manifest_with(tmp_path / "zoo", "tiny", genuine)
    work = tmp_path / "work"
    work.mkdir()
    tampered_copy(work / "tiny", name="impostor", version="9.9.9")  # a folder named like the model
    monkeypatch.chdir(work)
    monkeypatch.setenv("MMSEG_MODELS_MANIFEST", str(manifest))

    path, sha = resolve_model("tiny")
    assert path == genuine and sha is not None  # the manifest's file, checked against its sha256

    scan = write_scan(work / "scan.nii.gz")
    code, _, err = run(["segment", scan, "--model", "tiny", "-o", work / "out"], capsys)
    assert code == 0, err
    assert f"model: tiny-ctmr-ummkd ({genuine})" in err and "impostor" not in err and "unverified" not in err
    # the folder is still reachable as a path, written as one
    code, _, err = run(["segment", scan, "--model", "./tiny", "-o", work / "out2"], capsys)
    assert code == 0, err
    assert "model: impostor" in err and "unverified" in err
    assert list(snapshot(work / "out")) == ["scan.seg.nrrd"]
