"""Item 10: ``mmseg models show PATH`` prints the manifest's facts (sha256, source) only for the very
file the manifest lists; any other file is shown as unverified."""

from __future__ import annotations

from MultiModalSegLib.bundle import bundle_sha256
from Testing.library.hostile.helpers import manifest_with, run, tampered_copy, tiny_zip


def test_show_path_tells_a_tampered_copy_from_the_genuine_model(tmp_path, capsys):
    genuine = tiny_zip(tmp_path / "zoo" / "Models" / "tiny.zip")
    manifest = manifest_with(tmp_path / "zoo", "tiny", genuine)
    genuine_sha = bundle_sha256(genuine)
    fake = tampered_copy(tmp_path / "download" / "tiny.zip")  # same name and version, other weights

    code, out, err = run(["models", "show", fake, "--manifest", manifest], capsys)
    assert code == 0, err
    assert genuine_sha not in out and "Models/tiny.zip" not in out
    assert "**unverified**" in out and bundle_sha256(fake) in out

    code, out, err = run(["models", "show", genuine, "--manifest", manifest], capsys)
    assert code == 0, err
    assert genuine_sha in out and "verified" in out and "unverified" not in out
