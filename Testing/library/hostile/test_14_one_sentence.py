"""Item 14: what used to end in a traceback, a silent success or a stray file now gets one sentence,
before any work where it can be known before."""

from __future__ import annotations

import errno
import os
import pickle
import zipfile
from fractions import Fraction

import numpy as np
import pytest

import MultiModalSegLib.atomic as atomic
from MultiModalSegLib.bundle import bundle_sha256, load_bundle, save_bundle
from MultiModalSegLib.errors import ConfigError, InputError, MMSegError
from MultiModalSegLib.io import read_image, write_segmentation
from MultiModalSegLib.labels import ABDOMEN_LABELS
from MultiModalSegLib.methods import build_method
from Testing.library.hostile.helpers import TINY, one_error, run, snapshot, tiny_zip, write_scan
from Testing.library.model_server import ModelServer, manifest_entry, write_manifest


def test_flipped_byte_in_a_bundle_zip(tmp_path, capsys):
    bundle = tiny_zip(tmp_path / "model.zip")
    info = zipfile.ZipFile(bundle).getinfo("model.pt")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = bytearray(bundle.read_bytes())
    data[start] ^= 0xFF  # the first byte of the compressed weights: zlib cannot even start
    bundle.write_bytes(bytes(data))
    code, _, err = run(["segment", write_scan(tmp_path / "scan.nii.gz"), "--model", bundle, "-o", tmp_path / "out"], capsys)
    assert code == 1
    one_error(err, "model.zip", "damaged")
    assert not (tmp_path / "out").exists()


def test_read_only_output_folder_is_refused_before_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: the operating system's refusal is injected instead
        real = atomic.tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and os.path.realpath(dir) == os.path.realpath(out):
                raise PermissionError(errno.EACCES, "Permission denied", str(out))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    code, _, err = run(["segment", write_scan(tmp_path / "scan.nii.gz"), "--model", TINY, "-o", out], capsys)
    out.chmod(0o755)
    assert code == 1
    one_error(err, "readonly", "not writable")
    assert "model:" not in err and snapshot(out) == {}


def test_output_naming_an_existing_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    code, _, err = run(["segment", write_scan(tmp_path / "scan.nii.gz"), "--model", TINY, "-o", target], capsys)
    assert code == 1
    one_error(err, "results.txt", "existing file")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("content", [pickle.dumps({"w": Fraction(1, 3)}, protocol=2), b"not a state dict at all"])
def test_bad_pretrained_encoder_for_cmc(tmp_path, content):
    path = tmp_path / "encoder.pt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="encoder.pt") as caught:
        build_method("cmc", {"name": "unet3d", "params": {"features": [4, 8, 16]}}, ["CT", "MR"], 5,
                     pretrained_encoder=str(path))  # fmt: skip
    assert isinstance(caught.value, MMSegError) and "\n" not in str(caught.value)


def test_download_replaces_a_damaged_cached_copy(tmp_path, capsys):
    data = tiny_zip(tmp_path / "tiny.zip").read_bytes()
    cache = tmp_path / "cache"
    with ModelServer({"/m/tiny.zip": data}) as server:
        manifest = write_manifest(tmp_path / "Models.json", [manifest_entry("tiny-ctmr-ummkd", server.url("/m/tiny.zip"), data, version="0.1.0")])  # noqa: E501
        args = ["models", "download", "tiny-ctmr-ummkd", "--manifest", manifest, "--cache", cache]
        code, _, err = run(args, capsys)
        assert code == 0, err
        cached = cache / "tiny.zip"
        damaged = bytearray(cached.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF  # same size, other bytes
        cached.write_bytes(bytes(damaged))
        code, _, err = run(args, capsys)
        assert code == 0, err
        assert cached.read_bytes() == data and server.full_gets("/m/tiny.zip") == 2


def test_outputs_follow_the_umask(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        code, _, err = run(["segment", write_scan(tmp_path / "scan.nii.gz"), "--model", TINY, "-o", tmp_path / "out"], capsys)
        bundle = load_bundle(TINY)
        zipped = save_bundle(tmp_path / "b.zip", bundle.metadata, bundle.state_dict)
        folder = save_bundle(tmp_path / "b", bundle.metadata, bundle.state_dict)
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "out" / "scan.seg.nrrd").stat().st_mode & 0o777 == 0o644
    assert zipped.stat().st_mode & 0o777 == 0o644 and folder.stat().st_mode & 0o777 == 0o755


def test_messages_name_the_command_line_flag(tmp_path):
    existing = write_scan(tmp_path / "result.nii.gz", np.zeros((20, 40, 40), np.uint8))
    with pytest.raises(InputError, match="--overwrite"):
        write_segmentation(read_image(existing), existing, ABDOMEN_LABELS)
    bundle = load_bundle(TINY)
    with pytest.raises(MMSegError, match="--overwrite"):
        save_bundle(tiny_zip(tmp_path / "b.zip"), bundle.metadata, bundle.state_dict)
    assert bundle_sha256(tmp_path / "b.zip")


def test_modality_is_checked_before_the_model_and_the_images(tmp_path, capsys):
    scans = [write_scan(tmp_path / f"scan{i}.nii.gz") for i in (1, 2)]
    code, _, err = run(["segment", *scans, "--modality", "XR", "--model", tmp_path / "no-such-model", "-o", tmp_path / "a"], capsys)  # noqa: E501
    assert code == 1
    one_error(err, "unknown modality 'XR'")
    code, _, err = run(["segment", *scans, "--modality", "CBCT", "--model", TINY, "-o", tmp_path / "b"], capsys)
    assert code == 1
    one_error(err, "--modality CBCT", "trained for")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_no_empty_output_folder_when_every_input_fails(tmp_path, capsys):
    scans = []
    for i in (1, 2):
        scan = write_scan(tmp_path / f"bad{i}.nii")
        scan.write_bytes(scan.read_bytes()[:400])
        scans.append(scan)
    code, _, err = run(["segment", *scans, "--model", TINY, "-o", tmp_path / "out"], capsys)
    assert code == 1 and "2 of 2 inputs failed" in err
    assert not (tmp_path / "out").exists()
