"""Fine-tuning (``MultiModalSegLib.training.finetune``): provenance, versioning, refusals, clear errors,
and the few-shot claim from the default model (slow)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from MultiModalSegLib.bundle import bundle_sha256, file_sha256, load_bundle
from MultiModalSegLib.errors import BundleError, ConfigError
from MultiModalSegLib.training.finetune import FinetuneOptions, bump_minor, finetune, table_paths
from MultiModalSegLib.training.progress import read_progress

REPO = Path(__file__).resolve().parents[3]


def _options(parent: Path, data: list, out: Path, run: Path, **kw) -> FinetuneOptions:
    base = dict(init=str(parent), data=[str(d) for d in data], out=out, run_dir=run, steps=2, lr=1e-3,
                phantoms=0, heldout_phantoms=0, quiet=True, threads=2, device="cpu")  # fmt: skip
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
    # every training file used, with its sha256: the phantom set's training split (1 CT, 1 MR)
    files = new.metadata["training"]["case_files"]
    assert sorted(f["modality"] for f in files) == ["CT", "MR"]
    for f in files:
        assert f["image_sha256"] == file_sha256(f["image"]) and f["label_sha256"] == file_sha256(f["label"])
        assert Path(f["image"]).parent.parent == phantom_dir
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


@pytest.mark.slow
def test_few_shot_from_the_default_model(tmp_path):
    """The issue's few-shot claim, rerun: ``training/finetune_fewshot.py`` with its default settings
    (those of the committed report: 12 steps at lr 5e-5) fine-tunes the DEFAULT model on one
    labelled real MR plus CT phantoms; MR Dice on held-out phantom MR goes up and CT Dice on
    held-out phantom CT drops by at most 0.02; the numbers reproduce the committed table
    (``training/reports/finetune-fewshot/before_after.json``); the only labelled MR is the real sample."""
    spec = importlib.util.spec_from_file_location("finetune_fewshot", REPO / "training" / "finetune_fewshot.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--run", str(tmp_path / "run"), "--out-dir", str(tmp_path / "report"), "--quiet", "--device", "cpu"]
    assert script.main(args) == 0
    report = json.loads((tmp_path / "report" / "before_after.json").read_text())
    claims = report["claims"]
    assert claims["mr_mean_after"] > claims["mr_mean_before"] and claims["mr_raised"] is True
    assert claims["ct_mean_after"] >= claims["ct_mean_before"] - script.CT_TOLERANCE and claims["ct_kept"] is True
    committed = json.loads((REPO / "training" / "reports" / "finetune-fewshot" / "before_after.json").read_text())
    assert report["settings"] == committed["settings"]
    for key in ("mr_mean_before", "mr_mean_after", "ct_mean_before", "ct_mean_after"):
        assert report["claims"][key] == pytest.approx(committed["claims"][key], abs=0.005), key
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
    plan = _plan(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", phantoms=None, few_shot={"MR": 1}), tmp_path / "run", parent, sha)
    kinds = {s.kind: [(c.name, c.modality, labelled) for c, labelled in s.training] for s in plan.sources}
    assert kinds["data"] == [("mr_001", "MR", True)]
    assert sorted(kinds["parent"]) == [("ct_000", "CT", True), ("mr_000", "MR", False)]
    assert "phantoms" not in kinds and plan.replay["parent_data"] == [str(phantom_dir / "dataset.json")]
    plan = _plan(_options(tiny_bundle, [data], tmp_path / "new", tmp_path / "run", parent_data="no", phantoms=None), tmp_path / "run", parent, sha)
    assert plan.replay["phantoms"] == {"CT": 4, "MR": 4, "seed": 0} and "parent" not in {s.kind for s in plan.sources}
