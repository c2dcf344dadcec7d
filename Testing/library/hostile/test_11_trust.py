"""Item 11: the trust model of a bundle given by path.

Verified (its sha256 is the manifest's) or trusted (its sha256 is in the user's trusted list):
loaded silently. Otherwise loaded with an "unverified" warning naming it. A copy that claims a
manifest model's name and version with other weights (and a recomputed ``model_sha256``) is refused.
"""

from __future__ import annotations

import pytest

from MultiModalSegLib.bundle import bundle_sha256
from Testing.library.hostile.helpers import manifest_with, one_error, run, tampered_copy, tiny_zip, write_scan


@pytest.fixture()
def zoo(tmp_path, monkeypatch):
    genuine = tiny_zip(tmp_path / "zoo" / "Models" / "tiny.zip")
    monkeypatch.setenv("MMSEG_MODELS_MANIFEST", str(manifest_with(tmp_path / "zoo", "tiny", genuine)))
    monkeypatch.setenv("MMSEG_TRUSTED_MODELS", str(tmp_path / "trusted.txt"))
    return genuine


def test_altered_copy_of_a_manifest_model_is_refused(tmp_path, capsys, zoo):
    fake = tampered_copy(tmp_path / "tiny-copy.zip")
    scan = write_scan(tmp_path / "scan.nii.gz")
    code, _, err = run(["segment", scan, "--model", fake, "-o", tmp_path / "out"], capsys)
    assert code == 1
    one_error(err, "tiny-copy.zip", "altered", "--model tiny")
    assert not (tmp_path / "out").exists()


def test_unknown_bundle_warns_until_trusted_and_genuine_copy_is_verified(tmp_path, capsys, zoo):
    scan = write_scan(tmp_path / "scan.nii.gz")
    mine = tampered_copy(tmp_path / "mine.zip", name="my-model", version="0.0.1")
    code, _, err = run(["segment", scan, "--model", mine, "-o", tmp_path / "a"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line and "model bundle" in line]
    assert len(warnings) == 1 and "unverified" in warnings[0] and "mine.zip" in warnings[0]

    code, out, err = run(["models", "trust", mine], capsys)
    assert code == 0, err
    assert bundle_sha256(mine) in (tmp_path / "trusted.txt").read_text()
    code, _, err = run(["segment", scan, "--model", mine, "-o", tmp_path / "b"], capsys)
    assert code == 0 and "unverified" not in err

    copy = tmp_path / "copy-of-genuine.zip"
    copy.write_bytes(zoo.read_bytes())
    code, _, err = run(["segment", scan, "--model", copy, "-o", tmp_path / "c"], capsys)
    assert code == 0 and "unverified" not in err
