"""Scenarios that run the real ``MultiModalSeg.py`` Widget over the Slicer stand-in (``standin.py``).

Each runs in a fresh interpreter (``python -m Testing.slicer.widget_scenarios NAME``), because one of
them blocks ``torch``, ``monai``, ``jsonschema`` and ``nibabel`` as a stock Slicer lacks them, and
prints one JSON line of observations that ``test_widget.py`` checks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "MultiModalSeg"


def _setup_widget(scene):
    from Testing.slicer import standin

    recorder = standin.install(scene)
    module = standin.import_module_file(MODULE_DIR / "MultiModalSeg.py")
    parent = type("ModuleParent", (), {})()
    module.MultiModalSeg(parent)
    widget = module.MultiModalSegWidget()
    widget.setup()
    return module, widget, recorder


def _volume(scene, name: str, ct: bool = True):
    import numpy as np
    import slicer

    rng = np.random.default_rng(len(name))
    array = rng.normal(-100 if ct else 100, 10, (24, 24, 24)).astype(np.int16)
    array[6:16, 4:14, 4:14] = 60 if ct else 400
    node = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array)
    node.SetSpacing(4.0, 4.0, 4.0)
    return node


def _wait(condition, poll, seconds: float = 120.0) -> bool:
    from Testing.slicer import standin

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        poll()
        standin.process_events(0.05)
    return True


def first_open_blocked() -> dict:
    """A stock Slicer: the panel opens, says what is missing, offers Install, then fills the models."""
    from Testing.slicer import standin

    blocker = standin.block_imports()
    from MultiModalSegModuleLib import dependencies, segmentation_logic  # noqa: F401  (the Logic: no Qt)

    out = {"qt_imported_by_logic": "qt" in sys.modules}
    from Testing.slicer.conftest import Scene

    scene = Scene()
    module, widget, recorder = _setup_widget(scene)
    ui = widget.ui
    out.update(
        missing=widget.missing,
        dependencies_visible=not ui.dependenciesCollapsibleButton.isHidden(),
        dependencies_text=ui.dependenciesLabel.text,
        install_enabled=bool(ui.installButton.enabled),
        models_listed=int(ui.modelComboBox.count),
        model_info=ui.modelInfoLabel.text,
        train_methods=[ui.trainMethodComboBox.itemText(i) for i in range(ui.trainMethodComboBox.count)],
        devices=[ui.deviceComboBox.itemText(i) for i in range(ui.deviceComboBox.count)],
        parameter_node=widget._parameterNode is not None and widget._parameterNode.GetSingletonTag(),
    )
    volume = _volume(scene, "ct")
    ui.inputVolumeSelector.setCurrentNode(volume)
    out["apply_enabled"] = bool(ui.applyButton.enabled)
    recorder.confirm_answer = False
    ui.applyButton.click()  # connected: it asks to install instead of failing
    out["apply_confirmation"] = recorder.confirmations[-1] if recorder.confirmations else ""
    out["job_after_apply"] = widget.job is not None

    # Install: the commands the job would run, then a stand-in command (no network here)
    out["install_commands"] = [c[2:] for c in dependencies.install_commands(widget.missing, Path("constraints.txt"))]
    # a failed install (no network): one dialog, the sentence in the panel, Install offered again
    dependencies.install_commands = lambda missing, constraints, python=None: [
        [sys.executable, "-c", "import sys; print('ERROR: No matching distribution found for torch', file=sys.stderr); sys.exit(1)"]]
    ui.installButton.click()
    _wait(lambda: widget.installJob.state != "running", widget.onInstallTimer, 60)
    out.update(failed_install_errors=list(recorder.errors), failed_install_text=ui.dependenciesLabel.text,
               install_enabled_after_failure=bool(ui.installButton.enabled))
    recorder.errors.clear()
    dependencies.install_commands = lambda missing, constraints, python=None: [
        [sys.executable, "-c", "print('Collecting torch>=2.3'); print('Successfully installed torch')"],
        [sys.executable, "-c", "import sys; print('Collecting monai>=1.4'); print('a warning', file=sys.stderr)"],
    ]
    ui.installButton.click()
    out["install_button_while_running"] = bool(ui.installButton.enabled)
    job = widget.installJob
    _wait(lambda: job.index == len(job.commands) - 1 and job.proc.poll() is not None, job.poll, 60)
    standin.unblock_imports(blocker)  # the packages are "installed" now
    _wait(lambda: job.state != "running", widget.onInstallTimer, 60)
    widget.onInstallTimer()
    out.update(
        install_state=job.state,
        install_log=ui.installLog.toPlainText(),
        missing_after=widget.missing,
        dependencies_text_after=ui.dependenciesLabel.text,
        models_after=[ui.modelComboBox.itemData(i) for i in range(ui.modelComboBox.count)],
        selected_model=widget.currentModel(),
        saved_model=widget._parameterNode.GetParameter("model"),
        default_model=widget.logic.defaultModelName(),
        apply_enabled_after=bool(ui.applyButton.enabled),
        errors=recorder.errors,
        estimate=ui.trainEstimateLabel.text,
    )
    return out


def full_flow() -> dict:
    """With the packages: default model, Apply, Show 3D, result in the study, Cancel, Train Start/Stop."""
    import slicer

    from Testing.slicer.conftest import Scene

    scene = Scene()
    module, widget, recorder = _setup_widget(scene)
    ui = widget.ui
    out = {
        "missing": widget.missing,
        "dependencies_visible": not ui.dependenciesCollapsibleButton.isHidden(),
        "selected_model": widget.currentModel(),
        "saved_model": widget._parameterNode.GetParameter("model"),
        "default_model": widget.logic.defaultModelName(),
        "method_tooltips": [ui.trainMethodComboBox.itemData(i, 3) for i in range(1, ui.trainMethodComboBox.count)],
        "estimate": ui.trainEstimateLabel.text,
    }
    ct = _volume(scene, "ct")
    hierarchy = scene.scene.GetSubjectHierarchyNode()
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient"), "study")
    hierarchy.CreateItem(study, ct)  # Slicer's subject-hierarchy logic does this on loading
    ui.inputVolumeSelector.setCurrentNode(ct)
    ui.deviceComboBox.currentIndex = ui.deviceComboBox.findData("cpu")
    out["label_maps_offered"] = any(
        scene.scene.GetNodeByID(ui.inputVolumeSelector.itemData(i)).IsA("vtkMRMLLabelMapVolumeNode")
        for i in range(ui.inputVolumeSelector.count) if ui.inputVolumeSelector.itemData(i))

    ui.applyButton.click()
    out["cancel_enabled_while_running"] = bool(ui.cancelButton.enabled)
    _wait(lambda: widget.job.state != "running", widget.onTimer, 300)
    node = getattr(widget, "lastSegmentation", None)
    segmentation = node.GetSegmentation() if node is not None else None
    out.update(
        apply_state=widget.job.state,
        apply_error=widget.job.error,
        segment_names=[segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        if segmentation else [],
        in_study=bool(node) and hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study,
        show3d_enabled=bool(ui.show3DButton.enabled),
    )
    ui.show3DButton.checked = True
    out["closed_surface"] = bool(node) and segmentation.ContainsRepresentation(
        slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName())

    # Cancel: a new run into a new output, cancelled at once: nothing is added
    ui.outputSegmentationSelector.setCurrentNode(None)
    before = scene.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    ui.applyButton.click()
    ui.cancelButton.click()
    out.update(cancel_state=widget.job.state,
               segmentations_added_by_cancel=scene.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") - before,
               apply_enabled_after_cancel=bool(ui.applyButton.enabled))

    # Train: the result as a labelled pair, Start, Stop after the first step
    ui.trainCollapsibleButton.collapsed = False
    ui.trainSegmentationSelector.setCurrentNode(node)
    ui.addPairButton.click()
    out["pairs"] = int(ui.pairsTable.rowCount)
    ui.trainStepsSpinBox.value = 50
    ui.trainDeviceComboBox.currentIndex = ui.trainDeviceComboBox.findData("cpu")
    ui.newModelNameLineEdit.text = "widget-finetuned"
    ui.startTrainingButton.click()
    job = widget.trainingJob
    out["train_started"] = job is not None and job.state == "running"
    out["train_status"] = ui.trainStatusLabel.text
    if job is not None:
        out["stop_enabled"] = bool(ui.stopTrainingButton.enabled)
        _wait(lambda: any(e["event"] == "start" for e in job.events) or job.state != "running", widget.onTrainTimer, 300)
        ui.stopTrainingButton.click()
        _wait(lambda: job.state != "running", widget.onTrainTimer, 300)
        widget.onTrainTimer()
        out.update(train_state=job.state, train_error=job.error, resume_enabled=bool(ui.resumeTrainingButton.enabled),
                   train_status_after=ui.trainStatusLabel.text)
    out["errors"] = recorder.errors
    widget.cleanup()
    return out


def unsupported_python() -> dict:
    """Slicer 5.8 (Python 3.9): the panel shows one sentence and nothing else."""
    from MultiModalSegModuleLib import compat

    from Testing.slicer.conftest import Scene

    compat_reason = compat.unsupported_reason
    compat.unsupported_reason = lambda python_version=None, slicer_version=None: compat_reason((3, 9, 10), (5, 8))
    module, widget, recorder = _setup_widget(Scene())
    layout = widget.layout
    texts = [layout.itemAt(i).widget().text() for i in range(layout.count()) if layout.itemAt(i).widget()]
    return {"texts": texts, "has_ui": hasattr(widget, "ui"), "errors": recorder.errors}


def panel_minimum_width() -> dict:
    """The panel's minimum width with the stand-in widgets (Slicer's module panel takes it as its own)."""
    from Testing.slicer.conftest import Scene
    from Testing.slicer.standin import unwrap

    module, widget, recorder = _setup_widget(Scene())
    for section in (widget.ui.dependenciesCollapsibleButton, widget.ui.modelCardCollapsibleButton,
                    widget.ui.trainCollapsibleButton):  # every section open
        section.collapsed = False
    widget.ui.dependenciesCollapsibleButton.visible = True
    panel = unwrap(widget.parent)
    panel.show()
    widths = {child.objectName(): child.minimumSizeHint().width() for child in panel.findChildren(type(panel))
              if child.objectName() and child.isVisibleTo(panel)}
    return {"minimum_width": int(panel.minimumSizeHint().width()),
            "widest": sorted(widths.items(), key=lambda item: -item[1])[:8]}


def screenshot() -> dict:
    """The panel at 400 px after opening with the sample CT loaded (``SCREENSHOT_PATH`` names the PNG)."""
    import os

    from Testing.slicer.conftest import Scene
    from Testing.slicer.standin import process_events, unwrap

    scene = Scene()
    volume = scene.load_volume(REPO / "Resources" / "SampleData" / "abdomen_ct_01" / "image.nii.gz", "abdomen CT")
    module, widget, recorder = _setup_widget(scene)
    widget.ui.inputVolumeSelector.setCurrentNode(volume)
    widget.ui.trainCollapsibleButton.collapsed = False
    panel = unwrap(widget.parent)
    panel.resize(400, 10)
    panel.show()
    process_events(0.2)
    panel.resize(400, panel.sizeHint().height())
    process_events(0.2)
    path = os.environ["SCREENSHOT_PATH"]
    saved = panel.grab().save(path)
    return {"saved": saved, "width": panel.width(), "height": panel.height(), "errors": recorder.errors}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(MODULE_DIR))
    print("SCENARIO " + json.dumps(globals()[sys.argv[1]](), default=str), flush=True)
