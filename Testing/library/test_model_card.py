"""Model cards: every section, figures taken from the bundle and the manifest, not-downloaded models."""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from MultiModalSegLib.model_card import model_card, render_model_card
from MultiModalSegLib.models import load_manifest
from Testing.library.model_server import SHIPPED_BUNDLE, manifest_entry, write_manifest

DATA = SHIPPED_BUNDLE.read_bytes()
SECTIONS = ["## Modalities", "## Labels", "## Training data", "## Metrics", "## Intended use and limits",
            "## Licence", "## Inference time (measured)"]


def shipped_metadata() -> dict:
    with zipfile.ZipFile(SHIPPED_BUNDLE) as zf:
        return json.loads(zf.read("metadata.json"))


def test_card_of_shipped_model_has_every_section_and_its_figures():
    card = model_card("abdomen-ummkd")
    meta = shipped_metadata()
    (entry,) = [e for e in load_manifest() if e.name == "abdomen-ummkd"]
    assert card.startswith("# abdomen-ummkd 1.0.0\n")
    positions = [card.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    for lab in meta["labels"]:
        assert f"| {lab['value']} | {lab['name']} | {tuple(lab['color'])} | {lab['snomed']} |" in card
    for modality, profile in meta["modalities"].items():
        assert f"- **{modality}**: {profile['description']}" in card
    dice = meta["metrics"]["validation_dice"]
    row = "| CT | " + " | ".join(f"{dice['CT'][k]:.3f}" for k in dice["CT"]) + " |"
    assert row in card
    assert f"(source: {meta['metrics']['validation_source']})" in card
    assert f"(source: {meta['metrics']['real_samples_source']})" in card
    ct_liver = meta["metrics"]["real_samples"]["abdomen_ct_01"]["liver"]
    assert f"| abdomen_ct_01 | liver | {ct_liver['dice']:.3f} | {ct_liver['hd95']:.3f} | {ct_liver['assd']:.3f} |" in card
    assert f"- intended use: {entry.intended_use}" in card and f"- limits: {entry.limitations}" in card
    assert entry.training_data in card
    assert "\n## Licence\n\nApache-2.0\n" in card
    for name, seconds in entry.cpu_seconds.items():
        assert f"{name}: {seconds:.2f} s" in card
    assert "- GPU: not measured" in card
    assert f"sha256: `{entry.sha256}`" in card


def test_card_of_model_not_downloaded_comes_from_manifest(tmp_path):
    manifest = write_manifest(
        tmp_path / "Models.json",
        [manifest_entry("remote", "https://x.org/remote-2.0.0.zip", DATA, version="2.0.0",
                        gpu_seconds={"ct (512x512x300)": 1.25}, licence="CC-BY-4.0")],
    )
    card = model_card("remote", manifest, tmp_path / "cache")
    assert card.startswith("# remote 2.0.0\n")
    assert "not downloaded yet" in card and "Not available until the model is downloaded." in card
    assert "- **CT**\n- **MR**" in card and "1. liver" in card
    assert "- GPU: ct (512x512x300): 1.25 s" in card and "- CPU: not measured" in card
    assert "\n## Licence\n\nCC-BY-4.0\n" in card and "- source: https://x.org/remote-2.0.0.zip" in card
    assert all(s in card for s in SECTIONS)


def test_card_of_bundle_path_without_manifest_entry(tmp_path):
    manifest = write_manifest(tmp_path / "Models.json", [])
    card = model_card(str(SHIPPED_BUNDLE), manifest)
    assert card.startswith("# abdomen-ummkd 1.0.0\n") and "## Files" not in card
    assert "- intended use: not stated" in card
    assert re.search(r"- CPU: abdomen_ct_01 \(122x101x112\): 9\.43 s", card)  # measured at packaging, in the bundle


def test_render_needs_metadata_or_entry():
    with pytest.raises(ValueError, match="metadata or the manifest entry"):
        render_model_card(None, None)
    assert "## Files" not in render_model_card(shipped_metadata())


def test_card_of_model_not_downloaded_shows_the_manifest_metrics(tmp_path):
    metrics = {"validation_mean_dice": {"CT": 0.8125, "MR": 0.7}, "real_samples_mean_dice": {"abdomen_ct_01": 0.87}}
    manifest = write_manifest(tmp_path / "Models.json",
                              [manifest_entry("remote", "https://x.org/remote-2.0.0.zip", DATA, version="2.0.0", metrics=metrics)])
    card = model_card("remote", manifest, tmp_path / "cache")
    assert "- validation mean dice: CT 0.812, MR 0.700" in card
    assert "- real samples mean dice: abdomen_ct_01 0.870" in card
    assert "Not available until the model is downloaded." not in card


def test_a_card_says_which_modalities_are_predicted_with_the_polarity_ensemble():
    meta = shipped_metadata()
    meta["inference"] = {**meta.get("inference", {}), "polarity_ensemble": ["MR"]}
    card = render_model_card(meta)
    mr = next(line for line in card.splitlines() if line.startswith("- **MR**"))
    ct = next(line for line in card.splitlines() if line.startswith("- **CT**"))
    assert "image and of its negative" in mr and "negative" not in ct
    assert "negative" not in render_model_card(shipped_metadata())


def test_a_card_names_an_ensembles_members():
    meta = shipped_metadata()
    assert "an ensemble of" not in render_model_card(meta)
    meta["members"] = [{"name": "a", "version": "1.0.0", "model_sha256": "0" * 64, "training": {"steps": 5000}},
                       {"name": "b", "version": "2.0.0", "model_sha256": "1" * 64, "training": {"steps": 10000}}]
    line = next(x for x in render_model_card(meta).splitlines() if "an ensemble of" in x)
    assert line.startswith("- an ensemble of 2 networks, their class probabilities averaged: a 1.0.0 ")
    assert "b 2.0.0 (weights sha256 111111111111..., 10000 training steps)" in line
    meta["members"][1]["parent"] = {"name": "c", "version": "1.0.0", "model_sha256": "2" * 64}
    line = next(x for x in render_model_card(meta).splitlines() if "an ensemble of" in x)
    assert "b 2.0.0 (weights sha256 111111111111..., 10000 training steps, fine-tuned from c 1.0.0)" in line


def test_an_ensembles_training_data_is_given_member_by_member():
    meta = shipped_metadata()
    first = {**meta["training"], "config": {"synthesis": {"mix": {"MR": {"synthetic": 0.75, "phantom": 0.25}}}}}
    second = {**meta["training"], "steps": 10000, "weight_average": {"count": 11, "steps": [7500, 10000]},
              "config": {"synthesis": {"mix": {"MR": {"synthetic": 0.5, "textured": 0.25, "phantom": 0.25}}}}}
    meta["members"] = [{"name": "a", "version": "1.0.0", "model_sha256": "0" * 64, "training": first},
                       {"name": "b", "version": "2.0.0", "model_sha256": "1" * 64, "training": second}]
    card = render_model_card(meta)
    section = card[card.index("## Training data"):card.index("## Metrics")]
    assert section.index("- member 1, a 1.0.0:") < section.index("  - item mix: MR: synthetic 0.75, phantom 0.25")
    assert section.index("- member 2, b 2.0.0:") < section.index("  - steps: 10000")
    assert "  - weights: the mean of 11 checkpoints, steps 7500 to 10000" in section
    assert section.count("textured: a real CT's label map") == 1  # said where a member draws such items


def test_an_empty_metric_group_says_so():
    meta = shipped_metadata()
    meta["metrics"] = {"validation_dice": {}, "validation_dice_source": "the run's validation cases"}
    card = render_model_card(meta)
    assert "**validation dice** (source: the run's validation cases)\n\n- not recorded in this bundle" in card


def test_the_default_models_card_states_its_training_data_use_and_limits():
    """What a clinician reads first: the shipped default's manifest entry says what it trained on and where it fails."""
    (entry,) = [e for e in load_manifest() if e.default]
    for text in (entry.training_data, entry.intended_use, entry.limitations):
        assert text and len(text) > 40
    card = render_model_card(None, entry)
    assert entry.limitations in card and entry.training_data in card


def test_real_scan_figures_scored_under_another_dropped_pieces_rule_say_so():
    """The shipped bundles were scored when a dropped piece's voxels became background: their cards say that a
    segmentation now relabels them and where its figures are; a bundle scored under the default says nothing."""
    from MultiModalSegLib.dropped_pieces import SOURCE_PREFIX, scored_choice

    meta = shipped_metadata()
    meta["metrics"] = {"real_scans": {"scan (validation, normal)": {"liver": {"dice": 0.9}}},
                       "real_scans_source": "the real labelled scans"}
    assert scored_choice(meta["metrics"]["real_scans_source"]) == "background"
    note = "scored with the voxels of an organ's dropped piece as background; a segmentation now gives them their next class"
    assert note in render_model_card(meta)
    meta["metrics"]["real_scans_source"] += "; " + SOURCE_PREFIX + "next_class"
    assert "scored with the voxels" not in render_model_card(meta)
