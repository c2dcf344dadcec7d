"""The panel's .ui file loads with a real Qt loader (PySide6 ``QUiLoader``, offscreen).

Slicer's CTK / qMRML classes are not in PySide6: the loader builds each one as the base class the
.ui file declares for it (``<customwidgets>``), which is what makes the file loadable here.
Running this file as a script writes the panel screenshot shown in the README.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6-Essentials is in the test extra")
QtUiTools = pytest.importorskip("PySide6.QtUiTools")
QtCore = pytest.importorskip("PySide6.QtCore")

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "MultiModalSeg"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MultiModalSeg.ui"
SCREENSHOT = REPO / "Resources" / "Screenshots" / "panel.png"
sys.path.insert(0, str(MODULE_DIR))


def app() -> QtWidgets.QApplication:
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def load_panel() -> QtWidgets.QWidget:
    app()
    ui_file = QtCore.QFile(str(UI_FILE))
    assert ui_file.open(QtCore.QIODevice.ReadOnly)
    loader = QtUiTools.QUiLoader()
    widget = loader.load(ui_file)
    ui_file.close()
    assert widget is not None, loader.errorString()
    return widget


def fill_like_the_widget(panel: QtWidgets.QWidget) -> None:
    """Fill the combo boxes from the Logic, as the Widget does on start-up."""
    from MultiModalSegModuleLib import segmentation_logic as L

    find = lambda cls, name: panel.findChild(cls, name)  # noqa: E731
    find(QtWidgets.QComboBox, "modalityComboBox").addItems(["auto", *L.modality_names()])
    find(QtWidgets.QLabel, "detectedModalityLabel").setText("detected: CT")
    models = find(QtWidgets.QComboBox, "modelComboBox")
    for m in L.available_models():
        models.addItem(f"{m['name']} {m['version']}" + (" (default)" if m["default"] else ""))
    info = L.model_info(None)
    find(QtWidgets.QLabel, "modelInfoLabel").setText(
        f"labels: {', '.join(info['labels'])} | modalities: {', '.join(info['modalities'])} | licence: {info['licence']}"
    )
    find(QtWidgets.QTextBrowser, "modelCardBrowser").setMarkdown(L.MultiModalSegLogic().modelCard(info["name"]))
    find(QtWidgets.QComboBox, "deviceComboBox").addItems(["auto", "CPU", "GPU"])
    find(QtWidgets.QComboBox, "qualityComboBox").addItems(["normal", "fast (low resolution)"])
    find(QtWidgets.QProgressBar, "progressBar").setValue(42)
    find(QtWidgets.QLabel, "statusLabel").setText("running the network")
    fill_train_section(panel, info["labels"])


def fill_train_section(panel: QtWidgets.QWidget, labels: list[str]) -> None:
    """The Train section as the Widget fills it: two pairs, their segments mapped to the model's labels."""
    from MultiModalSegModuleLib import train_logic as T

    find = lambda cls, name: panel.findChild(cls, name)  # noqa: E731
    pairs = find(QtWidgets.QTableWidget, "pairsTable")
    rows = [("abdomen CT", "CT segmentation", "CT", False), ("abdomen MR", "MR segmentation", "MR", True)]
    pairs.setRowCount(len(rows))
    for r, (volume, segmentation, modality, held) in enumerate(rows):
        pairs.setItem(r, 0, QtWidgets.QTableWidgetItem(volume))
        pairs.setItem(r, 1, QtWidgets.QTableWidgetItem(segmentation))
        combo = QtWidgets.QComboBox()
        combo.addItems(["CT", "MR"])
        combo.setCurrentText(modality)
        pairs.setCellWidget(r, 2, combo)
        box = QtWidgets.QCheckBox()
        box.setChecked(held)
        pairs.setCellWidget(r, 3, box)
    mapping = find(QtWidgets.QTableWidget, "mappingTable")
    segments = [("Liver", "liver"), ("Right Kidney", "kidney_right"), ("tumour", "(ignore)")]
    mapping.setRowCount(len(segments))
    for r, (segment, label) in enumerate(segments):
        mapping.setItem(r, 0, QtWidgets.QTableWidgetItem(segment))
        combo = QtWidgets.QComboBox()
        combo.addItems(["(ignore)", *labels])
        combo.setCurrentText(label)
        mapping.setCellWidget(r, 1, combo)
    find(QtWidgets.QComboBox, "trainMethodComboBox").addItems(["(the model's own)", *T.methodNames()])
    find(QtWidgets.QComboBox, "trainDeviceComboBox").addItems(["auto", "CPU", "GPU"])
    find(QtWidgets.QProgressBar, "trainProgressBar").setValue(30)
    find(QtWidgets.QLabel, "trainStatusLabel").setText("step 60/200: loss 0.8123, 420 s left")


def widget_names_used_by_the_module() -> set[str]:
    source = (MODULE_DIR / "MultiModalSeg.py").read_text(encoding="utf-8")
    return set(re.findall(r"self\.ui\.(\w+)", source))


EXPECTED = {
    "inputVolumeSelector": "QWidget",  # qMRMLNodeComboBox placeholder
    "outputSegmentationSelector": "QWidget",
    "inputsCollapsibleButton": "QWidget",  # ctkCollapsibleButton placeholder
    "modalityComboBox": "QComboBox",
    "modelComboBox": "QComboBox",
    "deviceComboBox": "QComboBox",
    "qualityComboBox": "QComboBox",
    "loadModelButton": "QPushButton",
    "downloadModelButton": "QPushButton",
    "importModelButton": "QPushButton",
    "modelCardCollapsibleButton": "QWidget",
    "modelCardBrowser": "QTextBrowser",
    "applyButton": "QPushButton",
    "cancelButton": "QPushButton",
    "editButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "modelInfoLabel": "QLabel",
    "deviceInfoLabel": "QLabel",
    "detectedModalityLabel": "QLabel",
    "trainCollapsibleButton": "QWidget",  # ctkCollapsibleButton placeholder
    "trainSegmentationSelector": "QWidget",  # qMRMLNodeComboBox placeholder
    "addPairButton": "QPushButton",
    "removePairButton": "QPushButton",
    "pairsTable": "QTableWidget",
    "mappingTable": "QTableWidget",
    "trainMethodComboBox": "QComboBox",
    "trainStepsSpinBox": "QSpinBox",
    "trainDeviceComboBox": "QComboBox",
    "newModelNameLineEdit": "QLineEdit",
    "startTrainingButton": "QPushButton",
    "stopTrainingButton": "QPushButton",
    "resumeTrainingButton": "QPushButton",
    "trainProgressBar": "QProgressBar",
    "trainStatusLabel": "QLabel",
    "trainingPlotWidget": "QWidget",  # qMRMLPlotWidget placeholder
}


def test_ui_loads_offscreen_with_every_widget_the_module_uses():
    panel = load_panel()
    for name, cls in EXPECTED.items():
        child = panel.findChild(QtWidgets.QWidget, name)
        assert child is not None, name
        assert child.inherits(cls), (name, child.metaObject().className())
    used = widget_names_used_by_the_module()
    assert used >= {"applyButton", "cancelButton", "editButton", "loadModelButton", "downloadModelButton",
                    "importModelButton", "modelCardBrowser"}
    missing = sorted(n for n in used if panel.findChild(QtCore.QObject, n) is None)
    assert missing == [], f"MultiModalSeg.py uses widgets the .ui lacks: {missing}"
    assert not panel.findChild(QtWidgets.QPushButton, "cancelButton").isEnabled()
    assert not panel.findChild(QtWidgets.QPushButton, "editButton").isEnabled()
    assert not panel.findChild(QtWidgets.QPushButton, "downloadModelButton").isEnabled()  # until a model needs it
    assert not panel.findChild(QtWidgets.QPushButton, "stopTrainingButton").isEnabled()  # until a training runs
    assert not panel.findChild(QtWidgets.QPushButton, "resumeTrainingButton").isEnabled()
    header = panel.findChild(QtWidgets.QTableWidget, "pairsTable").horizontalHeaderItem
    assert [header(i).text() for i in range(4)] == ["Volume", "Segmentation", "Modality", "Held out"]


def render(path: Path) -> Path:
    panel = load_panel()
    fill_like_the_widget(panel)
    panel.resize(460, 1180)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert panel.grab().save(str(path))
    return path


def test_panel_renders_to_a_screenshot(tmp_path):
    out = render(tmp_path / "panel.png")
    from PySide6.QtGui import QImage

    image = QImage(str(out))
    assert image.width() >= 460 and image.height() >= 420
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 5  # text and widgets were drawn, not a blank rectangle
    assert SCREENSHOT.is_file(), "run `python Testing/slicer/test_ui.py` to write the README screenshot"


if __name__ == "__main__":
    print(render(SCREENSHOT))
