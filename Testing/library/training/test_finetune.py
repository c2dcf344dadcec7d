"""Fine-tuning (``MultiModalSegLib.training.finetune``): provenance, versioning, refusals, clear errors,
and the few-shot claim from the default model (slow)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TORCH_THREADS, load_script, with_inference

from MultiModalSegLib.bundle import bundle_sha256, file_sha256, load_bundle, replace_metadata, save_bundle
from MultiModalSegLib.data.loading import PREPARED
from MultiModalSegLib.errors import BundleError, ConfigError
from MultiModalSegLib.modalities import ModalityProfile
from MultiModalSegLib.provenance import path_like_strings, provenance_sections
from MultiModalSegLib.training.finetune import (
    FinetuneOptions,
    before_after_table,
    bump_minor,
    finetune,
    table_paths,
)
from MultiModalSegLib.training.progress import read_progress

REPO = Path(__file__).resolve().parents[3]


def _options(parent: Path, data: list, out: Path, run: Path, **kw) -> FinetuneOptions:
    base = dict(init=str(parent), data=[str(d) for d in data], out=out, run_dir=run, steps=2, lr=1e-3, parent_data="no",
                phantoms=0, heldout_phantoms=0, quiet=True, threads=TORCH_THREADS, device="cpu", keep_worse=True)  # fmt: skip
    base.update(kw)
    return FinetuneOptions(**base)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_bundle, phantom_dir):
    """One tiny fine-tune (2 steps) of the tiny UMMKD bundle on the phantom data set."""
    tmp = tmp_path_factory.mktemp("finetune")
    parent_sha = bundle_sha256(tiny_bundle)
    parent_bytes = {p.name: p.read_bytes() for p in Path(tiny_bundle).iterdir()}
    out = tmp / "models" / "tiny-ft.zip"
    result = finetune(_options(tiny_bundle, [phantom_dir], out, tmp / "run"))
    return {"result": result, "out": out, "run": tmp / "run", "parent_sha": parent_sha, "parent_bytes": parent_bytes}


def test_new_bundle_has_provenance_and_parent_is_untouched(finetuned, tiny_bundle, phantom_dir):
    result, out = finetuned["result"], finetuned["out"]
    assert result.status == "done" and result.bundle == out
    assert {p.name: p.read_bytes() for p in Path(tiny_bundle).iterdir()} == finetuned["parent_bytes"]
    parent = load_bundle(tiny_bundle)
    new = load_bundle(out)
    assert new.metadata["parent"] == {"name": parent.name, "version": parent.metadata["version"], "sha256": finetuned["parent_sha"]}
    assert new.metadata["version"] == bump_minor(parent.metadata["version"]) == "0.2.0"
    assert new.metadata["labels"] == parent.metadata["labels"] and new.metadata["method"] == "ummkd"
    assert new.state_dict.keys() == parent.state_dict.keys()
    assert any(not torch.equal(new.state_dict[k], parent.state_dict[k]) for k in parent.state_dict)
    # every training file used, by name with its sha256: the phantom set's training split (1 CT, 1 MR)
    files = new.metadata["training"]["case_files"]
    assert sorted(f["modality"] for f in files) == ["CT", "MR"]
    for f in files:
        assert f["image_sha256"] == file_sha256(phantom_dir / "imagesTr" / f["image"])
        assert f["label_sha256"] == file_sha256(phantom_dir / "labelsTr" / f["label"]) and f["dataset"] == "abdomen-phantoms"
    # provenance names data sets and files, never a path of this machine or of the working folder
    assert path_like_strings(provenance_sections(new.metadata)) == []
    data_sha = file_sha256(phantom_dir / "dataset.json")
    assert [(r["name"], r["sha256"], r["role"]) for r in new.metadata["training"]["datasets"]] == [("abdomen-phantoms", data_sha, "data")]
    assert new.metadata["training"]["finetune"]["data"][0]["sha256"] == data_sha
    # a name of its own: the parent's with "-finetuned-<date>-<time>"
    assert re.fullmatch(rf"{parent.name}-finetuned-\d{{8}}-\d{{6}}", new.name)
    # held-out = the data's validation split, scored before and after, per modality per organ
    metrics = new.metadata["metrics"]
    assert metrics["heldout_cases"] == {"data": {"CT": 1, "MR": 1}}
    for phase in ("heldout_dice_before", "heldout_dice_after"):
        assert set(metrics[phase]["data"]) == {"CT", "MR"}
        assert set(metrics[phase]["data"]["MR"]) == {"liver", "spleen", "kidney_right", "kidney_left", "mean"}
    assert metrics["heldout_dice_before"] == result.before and metrics["heldout_dice_after"] == result.after


def test_table_beside_the_bundle_and_progress_events(finetuned):
    out, run = finetuned["out"], finetuned["run"]
    md, js = table_paths(out)
    assert md == out.parent / "tiny-ft.finetune.md" and md.is_file() and js.is_file()
    summary = json.loads(js.read_text())
    assert summary["after"] == finetuned["result"].after and summary["version"] == "0.2.0"
    after_mr = finetuned["result"].after["data"]["MR"]["liver"]
    assert f"| data | MR | 1 | liver | {finetuned['result'].before['data']['MR']['liver']:.3f} | {after_mr:.3f} |" in md.read_text()
    events = [r["event"] for r in read_progress(run / "progress.jsonl")]
    assert events[0] == "finetune" and events[-1] == "finetuned"
    assert events.index("start") < events.index("done") < len(events) - 1
    phases = [r["phase"] for r in read_progress(run / "progress.jsonl") if r["event"] == "evaluation"]
    assert phases == ["before", "after"]


def test_refuses_to_overwrite(finetuned, tiny_bundle, phantom_dir, tmp_path):
    out = finetuned["out"]
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        finetune(_options(tiny_bundle, [phantom_dir], out, tmp_path / "run"))
    with pytest.raises(ConfigError, match="is the parent bundle"):
        finetune(_options(tiny_bundle, [phantom_dir], Path(tiny_bundle), tmp_path / "run", overwrite=True))
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        finetune(_options(tiny_bundle, [phantom_dir], existing, tmp_path / "run"))
    assert existing.read_text() == "mine"


def test_bump_minor():
    assert bump_minor("1.0.0") == "1.1.0"
    assert bump_minor("2.3.7-rc.1+build") == "2.4.0"
    with pytest.raises(BundleError, match="not a semantic version"):
        bump_minor("v1")


def _absolute(phantom_dir: Path) -> dict:
    """The phantom dataset.json with absolute paths."""
    doc = json.loads((phantom_dir / "dataset.json").read_text())
    for split in ("training", "validation"):
        for e in doc[split]:
            e["image"], e["label"] = str(phantom_dir / e["image"]), str(phantom_dir / e["label"])
    return doc


def _dataset(folder: Path, phantom_dir: Path, **changes) -> Path:
    """A copy of the phantom dataset.json (absolute paths) with ``changes`` applied."""
    doc = {**_absolute(phantom_dir), **changes}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(doc))
    return folder / "dataset.json"


def test_clear_errors(tiny_bundle, phantom_dir, tmp_path):
    out, run = tmp_path / "new", tmp_path / "run"
    doc = _absolute(phantom_dir)

    def fails(data, match, exc=ConfigError, **kw):
        with pytest.raises(exc, match=match):
            finetune(_options(kw.pop("parent", tiny_bundle), [data], out, run, **kw))

    pet = [{**e, "modality": "PET"} for e in doc["training"]]
    fails(_dataset(tmp_path / "pet", phantom_dir, training=pet), r"dataset\.json: training case 0 has modality 'PET'.*fix its")
    labels = {**doc["labels"], "5": "pancreas"}
    fails(_dataset(tmp_path / "lab", phantom_dir, labels=labels), r"labels \['pancreas'\] are not in model tiny")
    fails(_dataset(tmp_path / "empty", phantom_dir, training=[]), r"\"training\" list is empty")
    unlabelled = [{k: v for k, v in e.items() if k != "label"} for e in doc["training"]]
    fails(_dataset(tmp_path / "unlab", phantom_dir, training=unlabelled), "no training case has a label")
    fails(phantom_dir, r"--few-shot MR=3: the data has 1 labelled MR training cases", few_shot={"MR": 3})
    fails(phantom_dir, r"do not load into method individual .*use --method ummkd", method="individual")
    fails(phantom_dir, "neither an existing bundle path nor a known model name", BundleError, parent=tmp_path / "missing")
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, tampered)
    weights = bytearray((tampered / "model.pt").read_bytes())
    weights[-20] ^= 0xFF
    (tampered / "model.pt").write_bytes(bytes(weights))
    fails(phantom_dir, "does not match model_sha256", BundleError, parent=tampered)
    assert not out.exists()


def test_new_modality_needs_a_method_that_adds_one(tiny_bundle, phantom_dir, tmp_path, monkeypatch):
    """Data with a modality the parent lacks (CBCT) and a method without ``add_modality``: one clear error."""
    from MultiModalSegLib.methods.registry import METHODS
    from MultiModalSegLib.methods.ummkd import UMMKD

    class NoAdd(UMMKD):
        name = "ummkd_no_add"
        add_modality = None

    monkeypatch.setitem(METHODS, NoAdd.name, NoAdd)
    doc = _absolute(phantom_dir)
    cbct = [{**e, "modality": "CBCT"} for e in doc["training"] if e["modality"] == "CT"]
    data = _dataset(tmp_path / "cbct", phantom_dir, training=doc["training"] + cbct)
    with pytest.raises(ConfigError, match=r"has CBCT cases but model tiny knows only \['CT', 'MR'\] and method ummkd_no_add cannot"):
        finetune(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", method=NoAdd.name))


def test_new_modality_is_added_from_like(tiny_bundle, phantom_dir, tmp_path):
    """CBCT cases (CT phantom images named CBCT) fine-tune the CT+MR parent into a CT+MR+CBCT model:
    the method's add_modality starts CBCT from CT; the parent cannot score CBCT, the new model can."""
    doc = _absolute(phantom_dir)
    cbct = [{**e, "modality": "CBCT"} for e in doc["training"] if e["modality"] == "CT"]
    held = [{**e, "modality": "CBCT"} for e in doc["validation"] if e["modality"] == "CT"]
    data = _dataset(tmp_path / "cbct", phantom_dir, training=doc["training"] + cbct, validation=held)
    result = finetune(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", steps=1, like={"CBCT": "CT"}))
    new = load_bundle(result.bundle)
    assert list(new.metadata["modalities"]) == ["CT", "MR", "CBCT"]
    assert new.metadata["network"]["params"]["modalities"] == ["CT", "MR", "CBCT"]
    assert new.metadata["training"]["finetune"]["new_modalities"] == ["CBCT"]
    assert result.before == {} and set(result.after["data"]) == {"CBCT"}  # the parent cannot score CBCT
    assert "| data | CBCT | 1 | liver | - |" in result.table_md.read_text()


def _report(name: str) -> dict:
    return json.loads((REPO / "training" / "reports" / "finetune-fewshot" / name).read_text())


def test_committed_few_shot_claims_follow_from_its_numbers():
    """The committed few-shot report (``training/finetune_fewshot.py`` at its default settings): its
    settings are the script's defaults, each claim is what :func:`claims` computes from the
    before / after Dice it holds, and the table says the same numbers and verdicts."""
    script = load_script("training/finetune_fewshot.py")
    report = _report("before_after.json")
    assert report["settings"] == script.FULL
    assert report["claims"] == script.claims(report["before"], report["after"])
    assert report["claims"]["mr_raised"] is True and report["claims"]["ct_kept"] is True  # the report's two claims
    table = (REPO / "training" / "reports" / "finetune-fewshot" / "before_after.md").read_text()
    title = table.splitlines()[0].removeprefix("# ")
    labels = ["liver", "spleen", "kidney_right", "kidney_left"]
    assert table.startswith(before_after_table(report["before"], report["after"], {"phantoms": dict.fromkeys(("CT", "MR"), script.FULL["heldout_phantoms"])}, labels, title))
    for line in script.verdict_lines(report["claims"]):
        assert line in table


@pytest.mark.slow
def test_few_shot_from_the_default_model(tmp_path):
    """``training/finetune_fewshot.py --quick`` fine-tunes the parent of the committed report on one
    labelled real MR plus CT phantoms and reproduces the committed quick table
    (``training/reports/finetune-fewshot/before_after_quick.json``: its four means within 0.005 and
    both verdicts); the only labelled MR is the real sample. The default settings' report (12 steps,
    4 held-out phantoms per modality: about 4 minutes on 2 cores) is checked for consistency by
    :func:`test_committed_few_shot_claims_follow_from_its_numbers` and rerun by the script itself."""
    script = load_script("training/finetune_fewshot.py")
    args = ["--quick", "--run", str(tmp_path / "run"), "--out-dir", str(tmp_path / "report"), "--quiet", "--device", "cpu",
            "--threads", str(TORCH_THREADS)]
    assert script.main(args) == 0
    report = json.loads((tmp_path / "report" / "before_after.json").read_text())
    committed = _report("before_after_quick.json")
    assert report["settings"] == committed["settings"] == script.QUICK
    assert report["claims"] == script.claims(report["before"], report["after"])
    for key in ("mr_mean_before", "mr_mean_after", "ct_mean_before", "ct_mean_after"):
        assert report["claims"][key] == pytest.approx(committed["claims"][key], abs=0.005), key
    for key in ("mr_raised", "ct_kept"):
        assert report["claims"][key] == committed["claims"][key], key
    bundle = load_bundle(tmp_path / "run" / "abdomen-ummkd-fewshot-mr1.zip")
    assert bundle.metadata["parent"]["name"] == "abdomen-ummkd"
    mr = [f for f in bundle.metadata["training"]["case_files"] if f["modality"] == "MR"]
    assert [f["name"] for f in mr] == ["abdomen_mr_01"] and "label_sha256" in mr[0]  # the one labelled MR


def test_plan_replays_the_parents_data_and_few_shot_strips_its_labels(tiny_bundle, phantom_dir, tmp_path):
    """The tiny parent's recorded training data (the phantom set) exists, so it is replayed instead of
    new phantoms; with ``--few-shot MR=1`` its MR cases lose their labels, the new MR keeps its own."""
    from MultiModalSegLib.training.finetune import _plan, load_parent

    doc = _absolute(phantom_dir)
    mr = [e for e in doc["validation"] if e["modality"] == "MR"]  # a case the parent did not train on
    data = _dataset(tmp_path / "mr", phantom_dir, training=mr, validation=[])
    parent, sha = load_parent(str(tiny_bundle))
    # --parent-data auto finds the parent's data set by its sha256 under --parent-data-root
    opts = _options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", phantoms=None, few_shot={"MR": 1},
                    parent_data="auto", parent_data_roots=[str(phantom_dir.parent)])  # fmt: skip
    plan = _plan(opts, tmp_path / "run", parent, sha)
    kinds = {s.kind: [(c.name, c.modality, labelled) for c, labelled in s.training] for s in plan.sources}
    assert kinds["data"] == [("mr_001", "MR", True)]
    assert sorted(kinds["parent"]) == [("ct_000", "CT", True), ("mr_000", "MR", False)]
    assert "phantoms" not in kinds
    assert plan.replay["parent_data"] == [{"name": "abdomen-phantoms", "sha256": file_sha256(phantom_dir / "dataset.json")}]
    plan = _plan(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", parent_data="no", phantoms=None), tmp_path / "run", parent, sha)
    assert plan.replay["phantoms"] == {"CT": 4, "MR": 4, "seed": 0} and "parent" not in {s.kind for s in plan.sources}


def test_replayed_phantoms_have_a_thorax_when_the_parents_had(tiny_bundle, phantom_dir, tmp_path):
    """A parent whose phantom data set was drawn with a thorax (or the wider anatomy) gets its replay
    phantoms drawn the same way."""
    from MultiModalSegLib.training.finetune import _plan, load_parent, parent_phantom_drawing

    doc = _absolute(phantom_dir)
    data = _dataset(tmp_path / "mr", phantom_dir, training=[e for e in doc["validation"] if e["modality"] == "MR"], validation=[])
    parent, sha = load_parent(str(tiny_bundle))
    assert parent_phantom_drawing(parent) == {}
    parent.metadata["training"]["datasets"].append({"origin": "phantom", "phantoms": {"ct": 2, "mr": 2, "seed": 0, "thorax": True}})
    assert parent_phantom_drawing(parent) == {"thorax": True}
    plan = _plan(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", parent_data="no", phantoms=1), tmp_path / "run", parent, sha)
    assert plan.replay["phantoms"] == {"CT": 1, "MR": 1, "seed": 0, "thorax": True}
    replay = next(s for s in plan.sources if s.kind == "phantoms")
    assert "lung bases" in json.loads(Path(replay.spec.path).read_text())["description"]
    parent.metadata["training"]["datasets"][-1]["phantoms"]["thorax"] = ["CT"]  # a thorax for CT phantoms only
    assert parent_phantom_drawing(parent) == {"thorax": ["CT"]}
    plan = _plan(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", parent_data="no", phantoms=1), tmp_path / "run", parent, sha)
    assert plan.replay["phantoms"]["thorax"] == ["CT"]
    replay = next(s for s in plan.sources if s.kind == "phantoms")
    assert "(CT only)" in json.loads(Path(replay.spec.path).read_text())["description"]
    parent.metadata["training"]["datasets"][-1]["phantoms"]["anatomy"] = 2  # and the wider organ shapes
    assert parent_phantom_drawing(parent) == {"thorax": ["CT"], "anatomy": 2}
    plan = _plan(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", parent_data="no", phantoms=1), tmp_path / "run", parent, sha)
    assert plan.replay["phantoms"] == {"CT": 1, "MR": 1, "seed": 0, "thorax": ["CT"], "anatomy": 2}
    replay = next(s for s in plan.sources if s.kind == "phantoms")
    assert Path(replay.spec.path).parent.name.endswith("-thorax-ct-anatomy2")
    assert "wider organ shapes" in json.loads(Path(replay.spec.path).read_text())["description"]
    parent.metadata["training"]["datasets"][-1]["phantoms"]["anatomy"] = {"CT": 2}  # wider for CT only
    plan = _plan(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", parent_data="no", phantoms=1), tmp_path / "run", parent, sha)
    assert plan.replay["phantoms"]["anatomy"] == {"CT": 2}
    replay = next(s for s in plan.sources if s.kind == "phantoms")
    assert Path(replay.spec.path).parent.name.endswith("-thorax-ct-anatomy2-ct")
    assert "wider organ shapes (CT only)" in json.loads(Path(replay.spec.path).read_text())["description"]


def test_parent_data_not_found_is_one_error_saying_how_to_give_it(tiny_bundle, phantom_dir, tmp_path):
    """The tiny parent trained on the phantom set; with nowhere to find it, ``auto`` refuses before any work,
    naming the data set and its sha256 and the three ways out; given by path, it is replayed."""
    from MultiModalSegLib.training.finetune import parent_replay_data

    parent = load_bundle(tiny_bundle)
    with pytest.raises(ConfigError) as err:
        finetune(_options(tiny_bundle, [phantom_dir], tmp_path / "new", tmp_path / "run", parent_data="auto"))
    message = str(err.value)
    assert "'abdomen-phantoms' (dataset.json sha256 " + file_sha256(phantom_dir / "dataset.json")[:12] in message
    assert "--parent-data PATH" in message and "--parent-data-root DIR" in message and "--parent-data no" in message
    assert not (tmp_path / "new").exists()
    assert parent_replay_data(parent, [str(phantom_dir)]) == ([phantom_dir], False)
    assert parent_replay_data(parent, "no") == ([], False)
    with pytest.raises(ConfigError, match="not both"):
        parent_replay_data(parent, ["auto", str(phantom_dir)])
    # an older bundle recorded a path, not a sha256: never used as it stands (it may name another checkout)
    legacy = type("B", (), {"name": "old", "metadata": {"training": {"datasets": [str(phantom_dir / "dataset.json")]}}})()
    with pytest.raises(ConfigError, match="recorded only by its path"):
        parent_replay_data(legacy, "auto", [str(phantom_dir)])


def test_the_default_models_data_is_found_by_sha256_in_the_sample_data():
    """The shipped models record the sample data set by sha256 (no path): ``auto`` finds it in
    Resources/SampleData; their phantoms are replayed as fresh ones."""
    from MultiModalSegLib.models import read_bundle_metadata
    from MultiModalSegLib.training.finetune import parent_replay_data

    for zip_path in sorted((REPO / "Resources" / "Models").glob("*.zip")):
        meta = read_bundle_metadata(zip_path)
        parent = type("B", (), {"name": meta["name"], "metadata": meta})()
        found, phantoms = parent_replay_data(parent, "auto")
        assert found == [REPO / "Resources" / "SampleData" / "dataset.json"] and phantoms, zip_path.name


def test_worse_rows():
    from MultiModalSegLib.training.finetune import WORSE_TOLERANCE, worse_rows

    before = {"phantoms": {"CT": {"mean": 0.828}, "MR": {"mean": 0.749}}}
    assert worse_rows(before, {"phantoms": {"CT": {"mean": 0.812}, "MR": {"mean": 0.761}}}) == []  # the report's default run
    assert worse_rows(before, {"phantoms": {"CT": {"mean": 0.716}, "MR": {"mean": 0.749}}}) == ["phantoms CT 0.828 -> 0.716 (-0.112)"]
    assert worse_rows(before, {"phantoms": {"CT": {"mean": 0.828 - WORSE_TOLERANCE - 0.001}}}) != []
    assert worse_rows({}, {"data": {"CBCT": {"mean": 0.5}}}) == []  # nothing to compare with


def test_default_lr_is_the_measured_rate():
    """The default learning rate is the one the few-shot report measured (5e-5), in the library and the command."""
    from MultiModalSegLib.cli.finetune import DEFAULT_LR as CLI_LR
    from MultiModalSegLib.training.finetune import DEFAULT_LR

    committed = json.loads((REPO / "training" / "reports" / "finetune-fewshot" / "before_after.json").read_text())
    assert DEFAULT_LR == CLI_LR == committed["settings"]["lr"] == FinetuneOptions(init="x", data=[], out=Path("y")).lr


def test_name_of_a_manifest_model_is_refused(tiny_bundle, phantom_dir, tmp_path):
    from MultiModalSegLib.models import load_manifest

    shipped = load_manifest()[0].name
    with pytest.raises(ConfigError, match=f"--name {shipped}: a model of the models manifest has this name"):
        finetune(_options(tiny_bundle, [phantom_dir], tmp_path / "new", tmp_path / "run", name=shipped))
    assert not (tmp_path / "run").exists()


def test_fine_tuning_keeps_the_parents_intensity_profiles(tiny_bundle, phantom_dir, tmp_path):
    """A parent trained under a former MR profile (percentiles of the voxels above the mean) is fine-tuned
    on inputs normalised as it was trained, and its child records that profile, not the library's."""
    parent = tmp_path / "legacy"
    shutil.copytree(tiny_bundle, parent)
    metadata = load_bundle(parent).metadata
    legacy = {"low_percentile": 0.5, "high_percentile": 99.5}
    metadata["modalities"]["MR"]["params"] = dict(legacy)
    replace_metadata(parent, metadata)
    seen = []
    original = ModalityProfile.compress  # the last step of every normalisation (profile.normalize, normalize_blended)

    def spy(profile, unit):
        seen.append((profile.name, profile.foreground))
        return original(profile, unit)

    PREPARED.clear()  # every case normalised here, none taken from an earlier test's preparation
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ModalityProfile, "compress", spy)
        result = finetune(_options(parent, [phantom_dir], tmp_path / "child.zip", tmp_path / "run"))
    assert result.status == "done"
    child = load_bundle(tmp_path / "child.zip")
    assert child.metadata["modalities"]["MR"]["params"] == legacy
    assert child.metadata["modalities"]["CT"] == metadata["modalities"]["CT"]
    assert ("MR", "above_mean") in seen and ("MR", "all") not in seen  # training data and held-out scoring alike


def test_a_fine_tune_keeps_its_parents_normalisation_ensemble():
    from MultiModalSegLib.training.finetune import _parent_normalisation

    parent = {"inference": {"normalisation_ensemble": {"MR": [0, 0.5, 1]}}}
    assert _parent_normalisation(parent, ["CT", "MR"]) == {"MR": [0.0, 0.5, 1.0]}
    assert _parent_normalisation(parent, ["CT"]) == {} and _parent_normalisation({"inference": {}}, ["MR"]) == {}


def test_a_parent_with_a_normalisation_ensemble_gives_a_child_with_it_both_scored_with_it(tiny_bundle, phantom_dir, tmp_path):
    """The held-out MR cases carry the ensemble's further passes (scored as parent and child segment), the CT
    none, and the child's recipe names the parent's ensemble, so its bundle records it."""
    import MultiModalSegLib.training.finetune as ft

    parent = with_inference(Path(tiny_bundle), tmp_path, "normalisation_ensemble", {"MR": [0.0, 0.5, 1.0]})
    prepared = []
    with pytest.MonkeyPatch.context() as mp:
        real = ft.prepare_case
        mp.setattr(ft, "prepare_case", lambda case, *a: prepared.append(real(case, *a)) or prepared[-1])
        result = finetune(_options(parent, [phantom_dir], tmp_path / "child.zip", tmp_path / "run", heldout_phantoms=1))
    assert result.status == "done" and {c.modality: len(c.passes) for c in prepared} == {"CT": 0, "MR": 2}
    child = load_bundle(tmp_path / "child.zip").metadata
    assert child["inference"]["normalisation_ensemble"] == {"MR": [0.0, 0.5, 1.0]}
    assert child["training"]["config"]["normalisation_ensemble"] == {"MR": [0.0, 0.5, 1.0]}  # the child's recipe names it


def test_a_fine_tune_keeps_its_parents_polarity_ensemble():
    from MultiModalSegLib.training.finetune import _parent_polarity

    assert _parent_polarity({"inference": {}}, {}, ["CT", "MR"]) == {}
    assert _parent_polarity({"inference": {"polarity_ensemble": ["MR"]}}, {"polarity": {"MR": 0.3}}, ["CT", "MR"]) == {"MR": 0.3}
    assert _parent_polarity({"inference": {"polarity_ensemble": ["MR"]}}, {}, ["CT", "MR"]) == {"MR": 0.5}
    assert _parent_polarity({"inference": {"polarity_ensemble": ["MR"]}}, {}, ["CT"]) == {}


def _tiny_pair(tiny_bundle, tmp_path) -> Path:
    """An ensemble bundle of the tiny model and a noisy copy of it."""
    from MultiModalSegLib.bundle_members import combine_bundles

    first = load_bundle(tiny_bundle)
    noisy = {k: v + 0.2 * torch.randn_like(v) if v.is_floating_point() else v for k, v in first.state_dict.items()}
    second = dataclasses.replace(first, state_dict=noisy, metadata={**first.metadata, "name": "tiny-noisy"})
    meta, state = combine_bundles([first, second], name="tiny-pair", version="1.0.0", description="two members")
    return save_bundle(tmp_path / "pair", meta, state)


def test_an_ensemble_fine_tunes_every_member_into_an_ensemble_scored_whole(tiny_bundle, phantom_dir, tmp_path):
    """An ensemble parent (``bundle_members``): all its members train, together, in one run, and the child is
    an ensemble of as many, each member's record naming its parent member; the plan says so, the recipe records
    the member count, and "before" (the worse-than-parent rule's reference) is the whole parent's held-out Dice."""
    from MultiModalSegLib.bundle import member_state
    from MultiModalSegLib.training.finetune import _plan, _prepare_heldout, evaluate_bundle, load_parent

    parent_path = _tiny_pair(tiny_bundle, tmp_path)
    parent, sha = load_parent(str(parent_path))
    result = finetune(_options(parent_path, [phantom_dir], tmp_path / "new", tmp_path / "run", steps=2))
    new = load_bundle(result.bundle)  # loading checks each member's weights against its record
    assert [m["name"] for m in new.metadata["members"]] == [f"{new.name}-member-1", f"{new.name}-member-2"]
    assert new.state_dict.keys() == parent.state_dict.keys()
    for i, record in enumerate(new.metadata["members"]):
        source = parent.metadata["members"][i]
        assert record["parent"] == {k: source[k] for k in ("name", "version", "model_sha256")}
        assert record["training"] == new.metadata["training"] and "finetune" in record["training"]
        trained, before = member_state(new.state_dict, i), member_state(parent.state_dict, i)
        assert any(not torch.equal(trained[k], before[k]) for k in trained if trained[k].is_floating_point())  # it trained
    assert new.metadata["parent"] == {"name": "tiny-pair", "version": "1.0.0", "sha256": bundle_sha256(parent_path)}
    assert new.metadata["version"] == "1.1.0"
    assert new.metadata["training"]["config"]["network"]["members"] == 2
    plan = next(r for r in read_progress(tmp_path / "run" / "progress.jsonl") if r["event"] == "finetune")
    assert any("ensemble of 2 networks; fine-tuning trains all 2 together" in n for n in plan["notes"])
    opts = _options(parent_path, [phantom_dir], tmp_path / "new2", tmp_path / "plan")
    heldout = _prepare_heldout(_plan(opts, tmp_path / "plan", parent, sha), {})
    cpu = torch.device("cpu")
    assert result.before == evaluate_bundle(parent, heldout, cpu)  # the whole ensemble, where training starts
    assert result.after == evaluate_bundle(new, heldout, cpu) == new.metadata["metrics"]["heldout_dice_after"]


def test_an_ensemble_fine_tune_with_a_method_that_cannot_train_one_is_refused_before_training(tiny_bundle, phantom_dir, tmp_path):
    """A method that reaches into its network's parts cannot train an ensemble: one error naming the methods
    that can, before any case is prepared or step taken."""
    parent_path = _tiny_pair(tiny_bundle, tmp_path)
    with pytest.raises(ConfigError, match=r"method csa uses parts of its network.*methods that can: joint, joint_kd, ummkd"):
        finetune(_options(parent_path, [phantom_dir], tmp_path / "new", tmp_path / "run", steps=1, method="csa"))
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "new").exists()


def test_an_ensemble_gains_a_new_modality_in_every_member(tiny_bundle, tmp_path):
    """CBCT cases and an ensemble parent: every member gets CBCT's normalisation set (copied from CT's), and
    the child, an ensemble of as many, lists CBCT and loads (each member's weights match its record)."""
    from MultiModalSegLib.bundle import member_state
    from MultiModalSegLib.data.phantoms import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "cbct", 0, 0, seed=12, n_validation=0, extra={"CBCT": 1})
    parent = _tiny_pair(tiny_bundle, tmp_path)
    result = finetune(_options(parent, [data], tmp_path / "new", tmp_path / "run", steps=1, like={"CBCT": "CT"}, phantoms=1))
    new = load_bundle(result.bundle)
    assert list(new.metadata["modalities"]) == ["CT", "MR", "CBCT"] and len(new.metadata["members"]) == 2
    for i in range(2):
        added = [k for k in member_state(new.state_dict, i) if ".norms.CBCT." in k]
        assert added, f"member {i + 1} has no CBCT normalisation"
