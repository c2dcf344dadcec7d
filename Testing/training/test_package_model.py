"""``training/package_model.py`` ships a run's bundle with clean provenance: the recipe's name, data sets
by name and sha256, and a refusal for a bundle that still records a path."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest

from MultiModalSegLib.bundle import file_sha256, load_bundle
from MultiModalSegLib.provenance import path_like_strings, provenance_sections
from Testing.conftest import load_script

REPO = Path(__file__).resolve().parents[2]


def _package_model():
    return load_script("training/package_model.py")


def test_packaging_a_run_writes_no_path(tiny_bundle, phantom_dir):
    package_model = _package_model()
    run_meta = load_bundle(tiny_bundle).metadata
    # what the training engine recorded: the data set by name and sha256, the cases trained on and scored
    [record] = run_meta["training"]["datasets"]
    assert record["sha256"] == file_sha256(phantom_dir / "dataset.json") and record["origin"] == "real"
    assert record["training"] == ["ct_000", "mr_000"] and record["validation"] == ["ct_001", "mr_001"]
    derived = copy.deepcopy(run_meta)
    derived["name"] = "tiny-trained-20260101-000000"  # as a run of a manifest model's recipe exports it
    derived["training"]["config"]["bundle"] = {"name": "tiny", "description": "the recipe's model"}
    meta = package_model.packaged_metadata(derived, {}, [], {"ct": 1.0}, 3600.0)
    assert meta["name"] == "tiny" and meta["description"] == "the recipe's model"
    assert path_like_strings(provenance_sections(meta)) == []
    assert package_model.validation_case_names(meta["training"]) == ["ct_001", "mr_001"]
    assert meta["training"]["training_hours"]["wall_hours"] == 1.0
    dirty = copy.deepcopy(run_meta)
    dirty["training"]["datasets"] = [str(phantom_dir / "dataset.json")]
    with pytest.raises(SystemExit, match="records paths in its provenance"):
        package_model.packaged_metadata(dirty, {}, [], {}, 0.0)


def test_a_run_bundle_with_paths_from_an_older_version_is_rewritten(tiny_bundle):
    """A run exported before provenance named data by sha256 (paths of its machine and working folder)
    is packaged with the repository data set's name and sha256 and the phantoms' settings instead."""
    package_model = _package_model()
    meta = copy.deepcopy(load_bundle(tiny_bundle).metadata)
    elsewhere = "/home/builder/checkout/Resources/SampleData/dataset.json"
    meta["training"]["datasets"] = [elsewhere, "training/runs/x/phantoms/dataset.json"]
    meta["training"]["config"]["datasets"] = [{"path": elsewhere, "weight": 8}]
    meta["training"]["config"]["phantoms"] = {"ct": 2, "mr": 2, "validation": 1, "seed": 0}
    meta["training"]["config_file"] = "/home/builder/checkout/training/configs/recipe.json"
    packaged = package_model.packaged_metadata(meta, {}, [], {}, 0.0, bundle=Path(tiny_bundle))
    assert path_like_strings(provenance_sections(packaged)) == []
    real, phantoms = packaged["training"]["datasets"]
    assert (real["name"], real["sha256"]) == ("abdomen-real-samples", file_sha256(REPO / "Resources" / "SampleData" / "dataset.json"))
    assert phantoms["origin"] == "phantom" and phantoms["phantoms"]["ct"] == 2 and phantoms["training"] == ["ct_000", "mr_000"]
    assert packaged["training"]["config"]["datasets"] == [{"name": "abdomen-real-samples", "sha256": real["sha256"], "weight": 8}]
    assert packaged["training"]["config_file"] == "recipe.json"


def test_a_release_sets_its_version_and_polarity_ensemble_and_nothing_else(tiny_bundle):
    package_model = _package_model()
    meta = load_bundle(tiny_bundle).metadata
    released = package_model.released_metadata(meta, "3.1.0", ["MR", "MR"])
    assert released["version"] == "3.1.0" and released["inference"]["polarity_ensemble"] == ["MR"]
    assert {k: v for k, v in released.items() if k not in ("version", "inference")} == {
        k: v for k, v in meta.items() if k not in ("version", "inference")}
    assert {k: v for k, v in released["inference"].items() if k != "polarity_ensemble"} == meta["inference"]
    assert "polarity_ensemble" not in meta["inference"]  # the source is not changed
    assert package_model.released_metadata(meta, None, []) == meta


def test_a_release_can_record_a_normalisation_ensemble(tiny_bundle):
    package_model = _package_model()
    meta = load_bundle(tiny_bundle).metadata
    released = package_model.released_metadata(meta, "3.1.0", [], {"MR": [0.0, 0.5, 1.0]})
    assert released["inference"]["normalisation_ensemble"] == {"MR": [0.0, 0.5, 1.0]}
    assert "polarity_ensemble" not in released["inference"] and "normalisation_ensemble" not in meta["inference"]
    assert package_model.normalisation_option("MR=0,0.5,1") == ("MR", [0.0, 0.5, 1.0])
    for bad in ("MR", "MR=0.5", "MR=0,2", "MR=0,0", "=0,1", "MR=a,b"):
        with pytest.raises(argparse.ArgumentTypeError, match="MODALITY=t1,t2"):
            package_model.normalisation_option(bad)


def test_the_regeneration_command_names_every_option_of_the_release(tmp_path):
    package_model = _package_model()
    args = argparse.Namespace(bundle=tmp_path / "b.zip", version="3.1.0", polarity_ensemble=[], normalisation_ensemble=[("MR", [0.0, 0.5, 1.0])],
                              report=None, description="d", note="n")
    assert package_model.release_args(args) == (f" --bundle {tmp_path / 'b.zip'} --version 3.1.0 --normalisation-ensemble MR=0,0.5,1"
                                                ' --description "..." --note "..."')
    assert package_model.release_args(argparse.Namespace(**{**vars(args), "note": "", "description": None, "bundle": None})) == (
        " --version 3.1.0 --normalisation-ensemble MR=0,0.5,1")


def test_an_ensemble_is_packaged_with_one_run_per_member(tiny_bundle, tmp_path):
    """An ensemble bundle (``bundle_members``) takes one ``--run`` per member, in order: the report gives each
    member's recipe, sessions and last validation, the figure a row per member."""
    from MultiModalSegLib.bundle import save_bundle
    from MultiModalSegLib.bundle_members import combine_bundles

    package_model = _package_model()
    member = load_bundle(tiny_bundle)
    meta, state = combine_bundles([member, member], name="pair", version="1.0.0", description="d")
    pair = load_bundle(save_bundle(tmp_path / "pair", meta, state))
    run = Path(tiny_bundle).parent
    with pytest.raises(SystemExit, match=r"holds 2 network\(s\) .*give one --run per network, in that order \(got 1\)"):
        package_model.member_runs(pair, [run])
    with pytest.raises(SystemExit, match="holds 1 network"):
        package_model.member_runs(member, [run, run])
    assert package_model.member_runs(member, [run]) == []
    members = package_model.member_runs(pair, [run, run])
    lines = "\n".join(package_model.member_lines(members))
    assert lines.count(f"{member.metadata['training']['steps']} steps") == 2 and "- **member 2, " in lines
    assert f"--out {run}" in lines
    package_model.loss_plot([m["records"] for m in members], tmp_path / "loss.png", ["a: ", "b: "])
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_a_default_model_is_not_packaged_without_its_card_texts(monkeypatch, capsys):
    package_model = _package_model()
    monkeypatch.setattr("sys.argv", ["package_model.py", "--run", "r", "--out", "o.zip", "--default", "--intended-use", "x"])
    with pytest.raises(SystemExit):
        package_model.main()
    assert "a default model's manifest entry needs --training-data, --limitations" in capsys.readouterr().err


def test_the_card_names_the_overlap_the_runs_checks_ran_at():
    """Runs whose checks record their windows' overlap (the bundle's, 0.5) say it; older runs checked at 0.25."""
    package_model = _package_model()
    assert package_model.check_overlap([{"event": "step"}, {"event": "validation", "overlap": 0.5}]) == 0.5
    assert package_model.check_overlap([{"event": "validation", "dice": {}}]) == 0.25
    assert package_model.check_overlap([]) == 0.25


def test_the_sessions_name_their_precision_where_it_changed():
    """A run resumed in another precision says which steps computed in which; a run in one precision does not."""
    package_model = _package_model()
    one = [{"event": "start", "step": 0, "steps": 10, "precision": "bfloat16 (CPU autocast)"},
           {"event": "step", "step": 1}, {"event": "start", "step": 4, "steps": 10, "precision": "bfloat16 (CPU autocast)"}]
    assert package_model.session_list(one) == "0 -> 10, 4 -> 10"
    mixed = [*one, {"event": "start", "step": 7, "steps": 10, "precision": "float32"}]
    assert package_model.session_list(mixed) == ("0 -> 10 in bfloat16 (CPU autocast), 4 -> 10 in bfloat16 (CPU autocast), "
                                                 "7 -> 10 in float32")
    older = [{"event": "start", "step": 0, "steps": 10}, {"event": "start", "step": 5, "steps": 10, "precision": "float32"}]
    assert package_model.session_list(older) == "0 -> 10, 5 -> 10"  # before the field: float32
    exported = [*one, {"event": "start", "step": 10, "steps": 10, "precision": "float32"}]  # a finished run exported again
    assert package_model.session_list(exported) == "0 -> 10, 4 -> 10, 10 -> 10"
