"""``mmseg segment`` under torchrun: each rank segments cases rank::world of the input list.

Sharding needs no communication, so the ranks are simulated by the launch environment alone
(RANK, WORLD_SIZE, LOCAL_RANK), one after the other in this process.
"""

import numpy as np
import pytest
import SimpleITK as sitk

from MultiModalSegLib.cli import main


def tiny_ct(path, seed):
    rng = np.random.default_rng(seed)
    array = np.full((20, 24, 24), -1000, np.int16)
    array[4:16, 5:19, 5:19] = 40 + rng.integers(-20, 20, (12, 14, 14))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((6.0, 6.0, 6.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def four_inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return folder, [tiny_ct(folder / f"case{i}.nii.gz", i) for i in range(4)]


def segment_as(rank, world, folder, out, bundle, monkeypatch, capsys):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    before = {p.name for p in out.iterdir()} if out.exists() else set()
    code = main(["segment", str(folder), "--model", str(bundle), "-o", str(out), "--modality", "CT", "--device", "cpu", "--quality", "fast"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return sorted({p.name for p in out.iterdir()} - before), captured


def test_each_rank_segments_its_share_and_skips_finished_cases(tiny_bundle, four_inputs, tmp_path, monkeypatch, capsys):
    folder, _ = four_inputs
    out = tmp_path / "out"
    written, captured = segment_as(1, 2, folder, out, tiny_bundle, monkeypatch, capsys)
    assert written == ["case1.seg.nrrd", "case3.seg.nrrd"]
    assert "rank 1 of 2: 2 of 4 inputs" in captured.err
    written, _ = segment_as(0, 2, folder, out, tiny_bundle, monkeypatch, capsys)
    assert written == ["case0.seg.nrrd", "case2.seg.nrrd"]
    # a second launch finds every case of its share finished
    written, captured = segment_as(0, 2, folder, out, tiny_bundle, monkeypatch, capsys)
    assert written == [] and captured.out.count("skipped") == 2


def test_more_ranks_than_cases_leaves_a_rank_idle(tiny_bundle, four_inputs, tmp_path, monkeypatch, capsys):
    folder, inputs = four_inputs
    listing = tmp_path / "two.txt"
    listing.write_text("\n".join(str(p) for p in inputs[:2]))
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    code = main(["segment", str(listing), "--model", str(tiny_bundle), "-o", str(tmp_path / "o"), "--modality", "CT", "--device", "cpu"])
    assert code == 0
    assert "rank 2 of 3: 0 of 2 inputs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing to write: the output folder is not even created
