"""``mmseg segment`` says what a user must not miss: a result in which every organ is empty, a
given ``--modality`` that detection contradicts; ``--strict`` makes an empty result a failure and
``--progress`` keeps stdout to JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_CT, REAL_MR

from MultiModalSegLib.bundle import load_bundle, save_bundle
from MultiModalSegLib.cli import main


@pytest.fixture(scope="module")
def background_bundle(tiny_bundle, tmp_path_factory):
    """The tiny model with its output layer set so that every voxel is background."""
    bundle = load_bundle(tiny_bundle)
    state = dict(bundle.state_dict)
    state["head.conv.conv.weight"] = torch.zeros_like(state["head.conv.conv.weight"])
    bias = torch.full_like(state["head.conv.conv.bias"], -10.0)
    bias[0] = 10.0
    state["head.conv.conv.bias"] = bias
    return save_bundle(tmp_path_factory.mktemp("background") / "background", dict(bundle.metadata), state)


def run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_organ_empty_is_said_on_stderr_and_in_the_summary_line(background_bundle, tmp_path, capsys):
    code, out, err = run(["segment", str(REAL_CT), "--model", str(background_bundle), "-o", str(tmp_path)], capsys)
    assert code == 0  # written: the user may still want it
    assert (tmp_path / "image.seg.nrrd").is_file()
    assert out.strip().endswith("; warning: no organ found (every label is empty)")
    assert f"mmseg segment: warning: {REAL_CT}: no organ was found: every label (liver, spleen, kidney_right, kidney_left) is empty" in err


def test_strict_makes_an_empty_result_a_failure_and_writes_nothing(background_bundle, tmp_path, capsys):
    code, out, err = run(["segment", str(REAL_CT), "--model", str(background_bundle), "-o", str(tmp_path), "--strict"], capsys)
    assert code == 1 and out == ""
    assert list(tmp_path.iterdir()) == []
    (error,) = [line for line in err.splitlines() if "error" in line]
    assert error.startswith(f"mmseg segment: error: {REAL_CT}: no organ was found") and error.count(str(REAL_CT)) == 1
    assert error.endswith("nothing was written.")


def test_progress_prints_json_only_with_the_facts_in_the_result_record(background_bundle, tmp_path, capsys):
    args = ["segment", str(REAL_CT), "--model", str(background_bundle), "-o", str(tmp_path), "--progress", "--modality", "MR"]
    code, out, _ = run(args, capsys)
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]  # every line is JSON
    assert [r["fraction"] for r in records[:-1]] == sorted(r["fraction"] for r in records[:-1])
    result = records[-1]
    assert result["all_empty"] is True and result["modality_disagrees"] is True
    assert (result["modality"], result["detected_modality"]) == ("MR", "CT")
    assert result["volumes_ml"] == {"liver": 0.0, "spleen": 0.0, "kidney_right": 0.0, "kidney_left": 0.0}
    assert len(result["warnings"]) == 2 and result["outputs"] == [str(tmp_path / "image.seg.nrrd")]
    assert result["summary"].startswith(f"{REAL_CT}: MR (given by the user)")
    # a rerun skips, still in JSON
    code, out, _ = run(args, capsys)
    (skipped,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and skipped["skipped"] == str(tmp_path / "image.seg.nrrd") and "skipped" in skipped["summary"]


def test_a_given_modality_that_detection_contradicts_is_said(tiny_bundle, tmp_path, capsys):
    code, out, err = run(["segment", str(REAL_MR), "--model", str(tiny_bundle), "-o", str(tmp_path), "--modality", "CT"], capsys)
    assert code == 0
    assert "the image looks like MR" in out
    assert f"mmseg segment: warning: {REAL_MR}: the modality was given as CT but the image looks like MR" in err
    code, out, err = run(["segment", str(REAL_MR), "--model", str(tiny_bundle), "-o", str(tmp_path / "auto")], capsys)
    assert code == 0 and "looks like" not in out + err


def test_a_dropped_rival_piece_is_said_in_the_summary_and_the_record(tiny_bundle, tmp_path, capsys, monkeypatch):
    """The network patched to call two separate places of about one size spleen: the larger is kept, and the
    summary line, stderr and the ``--progress`` record say what was dropped."""
    import MultiModalSegLib.inference.segmenter as segmenter_module

    def two_spleens(net, image, modality, window, **kwargs):
        logits = torch.zeros((1, 5, *image.shape[2:]))
        logits[:, 0] = 5.0
        z, y, x = image.shape[2:]
        logits[0, 2, : z // 3, : y // 3, : x // 3] = 10.0
        logits[0, 2, z - z // 4:, y - y // 3:, x - x // 3:] = 10.0
        return logits

    monkeypatch.setattr(segmenter_module, "predict_logits", two_spleens)
    code, out, err = run(["segment", str(REAL_CT), "--model", str(tiny_bundle), "-o", str(tmp_path / "a")], capsys)
    assert code == 0 and "; warning: spleen: a piece of about " in out and "mL, check it" in out
    assert f"mmseg segment: warning: {REAL_CT}: spleen: a separate piece of" in err
    code, out, _ = run(["segment", str(REAL_CT), "--model", str(tiny_bundle), "-o", str(tmp_path / "b"), "--progress"], capsys)
    result = json.loads(out.splitlines()[-1])
    assert set(result["rival_pieces"]) == {"spleen"} and result["rival_pieces"]["spleen"]["dropped_ml"] >= 5.0
    assert any(w.startswith("spleen: a separate piece") for w in result["warnings"])


def test_a_largest_piece_dropped_as_out_of_place_is_said_so():
    """Where the Segmenter dropped an organ's largest piece for lying far from the organ's place, the summary
    line and the record say that, not that a smaller piece was dropped."""
    from MultiModalSegLib.cli.segment import result_record, summary_line
    from MultiModalSegLib.inference import Segmentation
    from MultiModalSegLib.io import Volume
    from MultiModalSegLib.labels import ABDOMEN_LABELS

    labels = Volume(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    seg = Segmentation(labels, list(ABDOMEN_LABELS), "CT", "given", None, 1.0,
                       rival_pieces={"spleen": (70.0, 78.0), "kidney_right": (22.0, 18.0)}, out_of_place=("spleen",))
    line = summary_line(Path("a.nii.gz"), seg, [Path("out/a.seg.nrrd")])
    assert "spleen: its largest piece, about 78 mL, dropped as out of place for one of 70 mL, check it" in line
    assert "kidney_right: a piece of about 18 mL dropped beside one of 22 mL, check it" in line
    record = result_record(1, 1, Path("a.nii.gz"), seg, [Path("out/a.seg.nrrd")])
    assert record["rival_pieces"]["spleen"] == {"kept_ml": 70.0, "dropped_ml": 78.0, "out_of_place": True}
    assert record["rival_pieces"]["kidney_right"]["out_of_place"] is False
    assert any(w.startswith("spleen: its largest piece (about 78 mL) lay far from where the spleen lies") for w in record["warnings"])


@pytest.mark.parametrize(("flags", "layout", "dropped"), [([], True, "next_class"), (["--no-organ-layout"], False, "next_class"),
                                                         (["--dropped-pieces", "background"], True, "background")])
def test_piece_flags_reach_the_segmenter(tmp_path, capsys, monkeypatch, flags, layout, dropped):
    """``--no-organ-layout`` builds the Segmenter without its organ layout (the largest piece kept wherever it lies);
    a dropped piece's voxels take their next most probable class unless ``--dropped-pieces background``."""
    import MultiModalSegLib.inference as inference

    built = {}

    class Stop(Exception):
        pass

    def capture(*args, **kwargs):
        built.update(kwargs)
        raise Stop

    monkeypatch.setattr(inference, "Segmenter", capture)
    with pytest.raises(Stop):
        main(["segment", str(REAL_CT), "-o", str(tmp_path), *flags])
    assert built["organ_layout"] is layout and built["largest_component"] is True and built["dropped_pieces"] == dropped

