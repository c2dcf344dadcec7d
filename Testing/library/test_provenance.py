"""Provenance without paths (``MultiModalSegLib.provenance``): the shipped bundles name their data by
name and sha256, never a builder's path; a recorded data set is found again by its sha256."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import load_script

from MultiModalSegLib.bundle import bundle_sha256, file_sha256
from MultiModalSegLib.data.phantoms import phantom_dataset_document
from MultiModalSegLib.models import load_manifest, read_bundle_metadata
from MultiModalSegLib.provenance import find_dataset, looks_like_path, path_like_strings, provenance_sections
from MultiModalSegLib.resources import resources_dir

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "Resources" / "Models").glob("*.zip"))
TINY = REPO / "Testing" / "library" / "training" / "data" / "tiny-ctmr-ummkd"


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


@pytest.mark.parametrize("bundle", [*SHIPPED, TINY], ids=lambda p: p.name)
def test_no_bundle_we_ship_records_a_path(bundle):
    """Nowhere in the metadata an absolute path or a '..' part (any word of any text); in the
    provenance (training, parent) nothing that looks like a path at all."""
    meta = read_bundle_metadata(bundle)
    for text in _strings(meta):
        for word in re.split(r"[\s,;()`'\"]+", text):
            assert not (word.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", word)), (bundle.name, text)
            assert ".." not in re.split(r"[\\/]", word), (bundle.name, text)
    assert path_like_strings(provenance_sections(meta)) == [], bundle.name
    for record in meta["training"]["datasets"]:
        assert re.fullmatch(r"[0-9a-f]{64}", record["sha256"]) and record["name"] and record["origin"] in ("real", "phantom")


def test_the_manifest_and_the_recipe_name_the_rewritten_files():
    for entry in load_manifest():
        assert bundle_sha256(resources_dir() / entry.file) == entry.sha256, entry.name
    recipe = json.loads((REPO / "training" / "configs" / "abdomen_cmc_default.json").read_text())
    assert recipe["init"]["sha256"] == file_sha256(REPO / "Resources" / "Models" / "abdomen-ummkd-1.0.0.zip")
    # the warm start is recorded by the sha256 it was loaded with and by its weights, which the rewrite kept
    cmc = read_bundle_metadata(REPO / "Resources" / "Models" / "abdomen-cmc-2.0.0.zip")
    ummkd = read_bundle_metadata(REPO / "Resources" / "Models" / "abdomen-ummkd-1.0.0.zip")
    init = cmc["training"]["config"]["init"]
    assert init["bundle"] == "abdomen-ummkd-1.0.0.zip" and init["model_sha256"] == ummkd["model_sha256"]
    assert init["sha256"] == ummkd["training"]["provenance_rewritten"]["sha256_before"]


def test_the_rewrite_script_finds_nothing_left_to_rewrite(capsys):
    script = load_script("training/scrub_provenance.py")
    assert script.main(["--check"]) == 0
    assert capsys.readouterr().out.count("provenance names no path") == len(script.DEFAULT_BUNDLES)


def test_the_phantom_document_is_the_one_written(phantom_dir):
    """The phantoms' dataset.json follows from the generator settings alone (so its sha256 does too)."""
    assert json.loads((phantom_dir / "dataset.json").read_text()) == phantom_dataset_document(2, 2, 11, 1)
    text = json.dumps(phantom_dataset_document(2, 2, 11, 1), indent=2) + "\n"
    assert (phantom_dir / "dataset.json").read_text() == text


def test_find_dataset_by_sha256(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "dataset.json").write_text('{"name": "mine"}')
    (tmp_path / "a" / "other.json").write_text("{}")
    sha = file_sha256(deep / "dataset.json")
    assert find_dataset(sha, [tmp_path / "missing", tmp_path]) == deep / "dataset.json"
    assert find_dataset("0" * 64, [tmp_path]) is None


@pytest.mark.parametrize(
    ("text", "path"),
    [("/work/main/Resources/SampleData/dataset.json", True), ("training/runs/x/phantoms/dataset.json", True),
     ("../../Resources/Models/a.zip", True), ("C:\\data\\dataset.json", True), ("~/data", True),
     ("dataset.json", False), ("abdomen-real-samples", False), ("CC-BY-3.0 / CC-BY-4.0", False),
     ("https://example.org/m.zip", False), ("held-out phantoms, model space (report)", False)],
)  # fmt: skip
def test_looks_like_path(text, path):
    assert looks_like_path(text) is path
