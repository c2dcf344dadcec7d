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
    "dependenciesCollapsibleButton": "QWidget",
    "dependenciesLabel": "QLabel",
    "installButton": "QPushButton",
    "installLog": "QPlainTextEdit",
    "show3DButton": "QPushButton",
    "fewShotSpinBox": "QSpinBox",
    "fewShotModalityComboBox": "QComboBox",
    "trainEstimateLabel": "QLabel",
    "resumeRunComboBox": "QComboBox",
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


def test_object_names_are_identifiers():
    """``childWidgetVariables`` makes each name an attribute: a colon or space would hide the widget."""
    names = re.findall(r'<(?:widget|layout) class="\w+" name="([^"]*)"', UI_FILE.read_text(encoding="utf-8"))
    assert names and [n for n in names if not n.isidentifier()] == []


def test_input_selector_hides_label_maps():
    assert load_panel().findChild(QtWidgets.QWidget, "inputVolumeSelector").property("showChildNodeTypes") is False


def test_panel_screenshot_is_rendered_at_400_pixels(tmp_path):
    """The README's screenshot: the real Widget over the stand-in (a rendering, not Slicer)."""
    from PySide6.QtGui import QImage

    from Testing.slicer.test_widget import run_scenario

    out = run_scenario("screenshot", {"SCREENSHOT_PATH": str(tmp_path / "panel.png")})
    assert out["saved"] and out["width"] == 400 and out["errors"] == []
    for path in (tmp_path / "panel.png", SCREENSHOT):
        image = QImage(str(path))
        assert image.width() == 400 and image.height() >= 900
        colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
        assert len(colours) > 5  # text and widgets were drawn, not a blank rectangle


if __name__ == "__main__":  # writes the README screenshot
    import subprocess

    subprocess.run([sys.executable, "-m", "Testing.slicer.widget_scenarios", "screenshot"], cwd=REPO, check=True,
                   env={**os.environ, "SCREENSHOT_PATH": str(SCREENSHOT)})
