"""Item 1: a full disk never leaves a corrupt result under the final name, and the command fails.

A real write failure stands in for the full disk: the process's file-size limit (``RLIMIT_FSIZE``,
with ``SIGXFSZ`` ignored) makes the operating system refuse the bytes past the limit, exactly as a
full disk does (SimpleITK prints an error and raises nothing). A second test injects the other way
a writer can fail silently: a file cut short after the writer returned.
"""

from __future__ import annotations

import contextlib
import resource
import signal

import pytest
import SimpleITK as sitk

from MultiModalSegLib.bundle import load_bundle, save_bundle
from MultiModalSegLib.errors import MMSegError
from Testing.library.hostile.helpers import TINY, one_error, run, snapshot, write_scan


@contextlib.contextmanager
def file_size_limit(limit: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_full_disk_keeps_the_previous_result_and_exits_1(tmp_path, capsys):
    scan = write_scan(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    code, _, err = run(["segment", scan, "--model", TINY, "-o", out], capsys)
    assert code == 0, err
    before = snapshot(out)
    assert list(before) == ["scan.seg.nrrd"]

    with file_size_limit(1000):  # the segmentation needs a few kB: the write fails part-way
        code, _, err = run(["segment", scan, "--model", TINY, "-o", out, "--overwrite"], capsys)
    assert code == 1
    one_error(err, "scan.seg.nrrd", "disk")
    assert snapshot(out) == before  # the previous result is intact and no temporary file is left
    sitk.ReadImage(str(out / "scan.seg.nrrd"))


def test_a_file_cut_short_after_the_writer_returned_is_not_renamed_into_place(tmp_path, capsys, monkeypatch):
    import MultiModalSegLib.io as io

    real_write = io.sitk.WriteImage

    def write_then_lose_half(image, path, *args):
        real_write(image, path, *args)
        if str(path).endswith(".nii.gz"):  # the probability file: its second half never reached the disk
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])

    scan = write_scan(tmp_path / "in" / "patient.nii.gz")
    monkeypatch.setattr(io.sitk, "WriteImage", write_then_lose_half)
    out = tmp_path / "out"
    code, _, err = run(["segment", scan, "--model", TINY, "-o", out, "--probabilities"], capsys)
    assert code == 1
    one_error(err, "patient_probabilities.nii.gz", "not written completely")
    # the case is written whole or not at all: no probability file, no segmentation without it, no temp file
    assert not out.exists() or snapshot(out) == {}


def test_bundle_written_to_a_full_disk_is_refused_and_the_old_one_kept(tmp_path):
    bundle = load_bundle(TINY)
    target = save_bundle(tmp_path / "model.zip", bundle.metadata, bundle.state_dict)
    before = snapshot(tmp_path)
    with file_size_limit(4096), pytest.raises(MMSegError, match="model.zip"):
        save_bundle(target, {**bundle.metadata, "version": "0.2.0"}, bundle.state_dict, overwrite=True)
    assert snapshot(tmp_path) == before
    assert load_bundle(target).metadata["version"] == bundle.metadata["version"]
