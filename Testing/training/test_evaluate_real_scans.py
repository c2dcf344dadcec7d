"""``training/evaluate_real_scans.py``: roles read from provenance, the committed table and the
README block regenerated from the committed per-scan numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from Testing.conftest import load_script

REPO = Path(__file__).resolve().parents[2]


def _module():
    return load_script("training/evaluate_real_scans.py")


def test_roles_come_from_the_models_own_provenance():
    e = _module()
    samples = str(REPO / "Resources" / "SampleData" / "dataset.json")
    scans = {s["name"]: s for s in e.real_scans()}
    both = {"training": {"config": {"datasets": [{"path": samples, "weight": 8}]}}}
    left_out = {"training": {"config": {"datasets": [{"path": samples, "exclude": ["abdomen_mr_01"]}]}}}
    # a provenance path from another machine is found by its place in the repository
    elsewhere = {"training": {"config": {"datasets": ["/home/builder/MultiModalSeg/Resources/SampleData/dataset.json"]}}}
    assert e.role(scans["abdomen_mr_01"], e.trained_case_names(both)) == "train"
    assert e.role(scans["abdomen_mr_01"], e.trained_case_names(left_out)) == "left out"
    assert e.role(scans["abdomen_ct_01"], e.trained_case_names(left_out)) == "train"
    assert e.role(scans["abdomen_mr_01"], e.trained_case_names(elsewhere)) == "train"
    for metadata in (both, left_out, elsewhere):
        assert e.role(scans["chest_abdomen_ct_02"], e.trained_case_names(metadata)) == "validation"


def test_committed_table_and_readme_block_match_the_committed_numbers():
    e = _module()
    rows = json.loads((REPO / "training" / "reports" / "real-scans" / "real_scans.json").read_text())
    table = e.markdown(rows)
    assert table in (REPO / "training" / "reports" / "real-scans" / "real_scans.md").read_text()
    begin, end = e.README_MARKERS
    block = (REPO / "README.md").read_text().split(begin, 1)[1].split(end, 1)[0]
    assert table in block
    # unseen scans come first; the kidneys of the validation scan are not scored
    roles = [r["role"] for r in sorted(rows, key=lambda r: e.ROLE_ORDER[r["role"]])]
    assert table.index("| validation |") < table.index("| train |") and roles[0] == "validation"
    first = next(r for r in rows if r["scan"] == "chest_abdomen_ct_02")
    assert set(first["metrics"]) == {"liver", "spleen"}
    assert abs(e.mean_dice(first) - (first["metrics"]["liver"]["dice"] + first["metrics"]["spleen"]["dice"]) / 2) < 1e-9


def test_score_reads_each_scan_once_and_scores_what_the_segmenter_returns(tiny_bundle, monkeypatch):
    import MultiModalSegLib.io as io
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.labels import ABDOMEN_LABELS
    from MultiModalSegLib.metrics import evaluate_labels

    e = _module()
    samples = REPO / "Resources" / "SampleData"
    scans = [s for s in e.real_scans(samples) if s["image"].is_file()]
    assert [s["name"] for s in scans] == ["abdomen_ct_01", "abdomen_mr_01"]
    reads, read_image = [], io.read_image
    monkeypatch.setattr(io, "read_image", lambda path, *a, **k: reads.append(path) or read_image(path, *a, **k))
    rows = e.score(tiny_bundle, scans)
    # each image and label map once for both qualities (read_labelmap reads through read_image)
    assert sorted(reads) == sorted([s["image"] for s in scans] + [s["label"] for s in scans])
    assert [(r["scan"], r["quality"]) for r in rows] == [(s["name"], q) for q in e.QUALITIES for s in scans]
    mr = next(s for s in scans if s["name"] == "abdomen_mr_01")
    volume = read_image(mr["image"])
    labels = Segmenter(tiny_bundle, device="cpu", amp=False, quality="fast").segment(volume, "MR").labels.array
    reference = e.abdomen_labels(io.read_labelmap(mr["label"], reference=volume).array)
    expected = evaluate_labels(labels, reference, ABDOMEN_LABELS, volume.spacing)
    row = next(r for r in rows if r["scan"] == "abdomen_mr_01" and r["quality"] == "fast")
    assert row["role"] == "left out" and row["organs"] == list(mr["organs"])
    assert row["rival_pieces"] == {o: list(v) for o, v in Segmenter(tiny_bundle, device="cpu", amp=False, quality="fast")
                                   .segment(volume, "MR").rival_pieces.items()}
    for organ in mr["organs"]:
        dice = expected[organ]["dice"]
        assert row["metrics"][organ]["dice"] == (None if dice != dice else round(float(dice), 4))


def test_every_piece_scores_without_the_largest_piece_step_and_never_goes_to_the_readme(tiny_bundle, monkeypatch, capsys):
    import MultiModalSegLib.inference as inference

    made = []

    class Recording(inference.Segmenter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.largest_component)

    monkeypatch.setattr(inference, "Segmenter", Recording)
    e = _module()
    mr = [s for s in e.real_scans(REPO / "Resources" / "SampleData") if s["name"] == "abdomen_mr_01"]
    e.score(tiny_bundle, mr, ("fast",), largest_piece=False)
    e.score(tiny_bundle, mr, ("fast",))
    assert made == [False, True]
    with pytest.raises(SystemExit):
        e.main(["--bundle", str(tiny_bundle), "--every-piece", "--readme"])
    assert "leave out --readme" in capsys.readouterr().err


def test_the_regenerate_command_carries_every_option_given():
    import argparse

    e = _module()
    default = Path("training/reports/real-scans")
    given = argparse.Namespace(bundle=[Path("a.zip"), Path("b")], quality=["fast"], every_piece=True, out=Path("x"),
                               dropped_pieces=["background", "next_class"], voxel_scale=[0.9, 1.0])
    assert e.command(given, default) == ("python training/evaluate_real_scans.py --bundle a.zip --bundle b --quality fast "
                                         "--every-piece --dropped-pieces background --dropped-pieces next_class "
                                         "--voxel-scale 0.9 --voxel-scale 1 --out x")
    plain = argparse.Namespace(bundle=[Path("a.zip")], quality=None, every_piece=False, out=default, dropped_pieces=None,
                               voxel_scale=None)
    assert e.command(plain, default) == "python training/evaluate_real_scans.py --bundle a.zip"


def test_a_dropped_pieces_choice_other_than_the_default_is_named_in_its_row():
    e = _module()
    row = {"bundle": "m 1.0.0", "scan": "chest_abdomen_ct_02", "role": "validation", "quality": "normal",
           "organs": ["liver"], "seconds": 1.0, "metrics": {"liver": {"dice": 0.9}}}
    table = e.markdown([{**row, "dropped_pieces": "background"}, {**row, "dropped_pieces": "next_class"}, row]).splitlines()
    assert "| `m 1.0.0` |" in table[2]  # the default (next_class) first
    # a row written before the choice existed had background
    assert table[3] == table[4] and "| `m 1.0.0`, dropped pieces: background |" in table[3]


def test_organs_whose_dropped_piece_rivalled_the_kept_one_are_listed_under_the_table():
    e = _module()
    row = {"bundle": "m 1.0.0", "scan": "chest_abdomen_ct_02", "role": "validation", "quality": "normal",
           "organs": ["liver"], "seconds": 1.0, "metrics": {"liver": {"dice": 0.9}}}
    row["dropped_pieces"] = "next_class"  # the default: not named
    assert "dropped" not in e.markdown([row]) and "dropped" not in e.markdown([{**row, "rival_pieces": {}}])
    table = e.markdown([{**row, "rival_pieces": {"kidney_left": [51.2, 42.0]}}])
    assert table.endswith("chest_abdomen_ct_02 `m 1.0.0` normal: kidney_left 51 mL kept, 42 mL dropped.")
    moved = e.markdown([{**row, "rival_pieces": {"spleen": [69.5, 77.4]}, "out_of_place": ["spleen"]}])
    assert moved.endswith("normal: spleen 70 mL kept, 77 mL dropped (the largest, out of place).")


def test_voxel_scales_run_the_network_at_other_voxel_sizes_and_never_go_to_the_readme(tiny_bundle, capsys):
    import dataclasses

    from MultiModalSegLib.inference import QUALITIES, Segmenter
    from MultiModalSegLib.io import read_image, read_labelmap
    from MultiModalSegLib.labels import ABDOMEN_LABELS
    from MultiModalSegLib.metrics import dice_scores

    e = _module()
    mr = [s for s in e.real_scans(REPO / "Resources" / "SampleData") if s["name"] == "abdomen_mr_01"]
    rows = e.score(tiny_bundle, mr, ("normal",), voxel_scales=(1.5, 1.0))
    assert [r.get("voxel_scale") for r in rows] == [1.5, None]  # the bundle's own size carries no mark
    volume = read_image(mr[0]["image"])
    reference = e.abdomen_labels(read_labelmap(mr[0]["label"], reference=volume).array)
    for row, scale in zip(rows, (1.5, 1.0), strict=True):
        quality = dataclasses.replace(QUALITIES["normal"], spacing_scale=scale)
        labels = Segmenter(tiny_bundle, device="cpu", amp=False, quality=quality).segment(volume, "MR").labels.array
        dice = dice_scores(labels, reference, ABDOMEN_LABELS)
        assert [row["metrics"][o]["dice"] for o in mr[0]["organs"]] == [None if dice[o] != dice[o] else round(float(dice[o]), 4)
                                                                         for o in mr[0]["organs"]]
    table = e.markdown(rows)
    assert "| normal, voxel x1.5 |" in table and "| normal |" in table
    for bad in (["--voxel-scale", "0.9", "--readme"], ["--voxel-scale", "0"]):
        with pytest.raises(SystemExit):
            e.main(["--bundle", str(tiny_bundle), *bad])
    assert "leave out --readme" in capsys.readouterr().err
