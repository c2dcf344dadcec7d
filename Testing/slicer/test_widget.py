"""The real ``MultiModalSeg.py`` Widget, run over the Slicer stand-in (``standin.py``) in a fresh
interpreter per scenario (``widget_scenarios.py``): first open in a Python where torch, monai,
jsonschema and nibabel cannot be imported, then the whole flow with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from Testing.slicer.conftest import REPO

pytest.importorskip("PySide6.QtUiTools", reason="PySide6-Essentials is in the test extra")


def run_scenario(name: str, env: dict | None = None, timeout: float = 600) -> dict:
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "Testing.slicer.widget_scenarios", name], cwd=REPO,
                            env=environment, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("SCENARIO ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1][len("SCENARIO "):])


@pytest.fixture()
def user_cache(tmp_path):
    """The per-user folders of the subprocess (model cache, training runs) in the test's folder."""
    return {"MMSEG_MODELS_CACHE": str(tmp_path / "cache"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}


def test_first_open_without_torch_monai_jsonschema_offers_install_then_fills_the_models(user_cache):
    out = run_scenario("first_open_blocked", user_cache)
    assert out["qt_imported_by_logic"] is False  # the Logic package imports no Qt
    assert out["missing"] == ["torch", "monai", "jsonschema", "nibabel"]
    assert out["dependencies_visible"] and out["install_enabled"]
    assert "PyTorch, MONAI, jsonschema, NiBabel" in out["dependencies_text"] and "Install" in out["dependencies_text"]
    assert out["models_listed"] == 0 and "once the packages" in out["model_info"]
    assert out["parameter_node"] == "MultiModalSeg"  # set up, a singleton
    assert len(out["train_methods"]) > 5  # the Train section was set up too
    # Apply is connected: with a volume it offers the install instead of failing
    assert out["apply_enabled"] and out["apply_confirmation"].endswith("Install now?") and not out["job_after_apply"]
    # without the PyTorch extension: pip, a version floor, the constraints file, torch first
    assert out["install_commands"] == [["pip", "install", "-c", "constraints.txt", "torch>=2.3"],
                                       ["pip", "install", "-c", "constraints.txt", "monai>=1.4", "jsonschema>=4.0",
                                        "nibabel>=5.0"]]
    # a failed install is said once (one dialog, the same sentence in the panel) and can be retried
    assert len(out["failed_install_errors"]) == 1 and "No matching distribution found for torch" in out["failed_install_errors"][0]
    assert out["failed_install_text"] == out["failed_install_errors"][0] and out["install_enabled_after_failure"]
    # Install ran in the background with a visible log (stdout and stderr), then the list filled
    assert out["install_button_while_running"] is False and out["install_state"] == "done"
    log = out["install_log"]
    assert "Collecting torch>=2.3" in log and "Successfully installed torch" in log and "a warning" in log
    assert out["missing_after"] == [] and "are installed" in out["dependencies_text_after"]
    assert out["models_after"] and out["apply_enabled_after"] and out["errors"] == []
    # the manifest's default model is the one selected and saved, as the CLI and the self-test use
    models = json.loads((REPO / "Resources" / "Models.json").read_text())["models"]
    manifest_default = next(m["name"] for m in models if m.get("default"))
    assert out["selected_model"] == out["default_model"] == out["saved_model"] == manifest_default
    assert out["estimate"].startswith("About ") and "s per step" in out["estimate"]


def test_older_slicer_gets_one_sentence(user_cache):
    out = run_scenario("unsupported_python", user_cache)
    assert out["has_ui"] is False and out["errors"] == []
    assert out["texts"] == ["MultiModalSeg needs 3D Slicer 5.10 or later; this is Slicer 5.8: install a newer "
                            "Slicer from download.slicer.org."]


def test_panel_fits_400_pixels(user_cache):
    assert run_scenario("panel_minimum_width", user_cache)["minimum_width"] <= 400


@pytest.fixture()
def tiny_zoo(tmp_path, user_cache):
    """A manifest whose default model is a tiny untrained one: Apply and Train take seconds."""
    from Testing.slicer.test_logic_train import tiny_manifest

    manifest = tiny_manifest(tmp_path / "zoo")
    return {**user_cache, "MMSEG_MODELS_MANIFEST": str(manifest)}


def test_apply_show3d_cancel_train_start_stop(tiny_zoo):
    out = run_scenario("full_flow", tiny_zoo)
    assert out["missing"] == [] and out["dependencies_visible"] is False and out["errors"] == []
    assert out["selected_model"] == out["saved_model"] == out["default_model"] == "tiny-init"
    assert out["label_maps_offered"] is False
    assert out["cancel_enabled_while_running"] and out["apply_state"] == "done", out["apply_error"]
    assert out["segment_names"] == ["Liver", "Spleen", "Right kidney", "Left kidney"]
    assert out["in_study"] and out["show3d_enabled"] and out["closed_surface"]
    assert out["cancel_state"] == "cancelled" and out["segmentations_added_by_cancel"] == 0
    assert out["apply_enabled_after_cancel"]
    assert out["pairs"] == 1 and out["train_started"] and out["stop_enabled"], out["train_status"]
    assert out["train_state"] == "stopped", out["train_error"]
    assert out["resume_enabled"] and "press Resume" in out["train_status_after"]
    # plain-language method names, the paper in the tooltip
    assert any("UMMKD: Dou et al." in tip for tip in out["method_tooltips"])
