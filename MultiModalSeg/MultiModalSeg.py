"""3D Slicer module MultiModalSeg: segment a loaded CT or MR with a joint CT+MR model.

Module (metadata), Widget (the Qt panel) and Test (runs inside Slicer). Everything a run does lives
in the ``MultiModalSegModuleLib`` package beside this file (no Qt), shared with the batch script and
the pytest suite: the Widget starts jobs (segmentation, download, training, dependency install) and
polls them from Qt timers so that Slicer never freezes.

Supported: 3D Slicer 5.10 and later (Python 3.12). This file and ``MultiModalSegModuleLib.compat``
stay importable by an older Slicer, whose panel shows one sentence saying so. ``setup()`` imports
nothing a stock Slicer lacks: without PyTorch, MONAI, jsonschema or NiBabel the panel opens, says
what is missing and offers Install.
"""

from __future__ import annotations

import os
import sys

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)
from MultiModalSegModuleLib import compat  # noqa: E402  (Python 3.9-safe: the version check)

QUALITIES = (("normal", "normal"), ("fast (no window overlap)", "fast"))
LOCAL_MODEL_PREFIX = "file: "
L = T = D = None  # the helper modules, imported by load_helpers() once the version check passed


def load_helpers() -> None:
    """Import the Logic modules (Python 3.10+ code) into this module's globals."""
    global L, T, D
    from MultiModalSegModuleLib import dependencies, segmentation_logic, train_logic

    L, T, D = segmentation_logic, train_logic, dependencies


class MultiModalSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MultiModalSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["MultiModalSeg contributors"]
        self.parent.helpText = (
            "Segment a CT or MR volume with one joint model trained on unpaired CT and MR scans. "
            "Choose the volume, check the detected modality, pick a model and press Apply; the result "
            "is a segmentation you can correct in the Segment Editor. Needs 3D Slicer 5.10 or later; on first "
            "use press Install in the Dependencies section (PyTorch, MONAI, jsonschema, NiBabel)."
        )
        self.parent.acknowledgementText = (
            "Methods: UMMKD (Dou et al. 2020), CSA, LSSC, MulModSeg (Li et al. 2024), CMC (Zhou et al. 2024)."
        )


class MultiModalSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. It only reads and writes widgets and the parameter node; runs go through the Logic."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.job = None
        self.downloadJob = None
        self.installJob = None
        self.modelStates = {}
        self.missing = []
        self.unsupported = None
        self._parameterNode = None
        self._updating = False
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onTimer)
        self.installTimer = qt.QTimer()
        self.installTimer.setInterval(300)
        self.installTimer.connect("timeout()", self.onInstallTimer)
        self.trainingJob = None
        self._plotted = None
        self.trainTimer = qt.QTimer()
        self.trainTimer.setInterval(1000)
        self.trainTimer.connect("timeout()", self.onTrainTimer)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.unsupported = compat.unsupported_reason(slicer_version=compat.running_slicer_version(slicer))
        if self.unsupported:  # an older Slicer: one sentence instead of a traceback
            label = qt.QLabel(self.unsupported)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        load_helpers()
        self.missing = D.missing_packages()  # until they are installed, nothing asks the library
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MultiModalSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = L.MultiModalSegLogic()

        for text, value in QUALITIES:
            self.ui.qualityComboBox.addItem(text, value)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        for combo in (self.ui.modalityComboBox, self.ui.deviceComboBox, self.ui.qualityComboBox):
            combo.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModel)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.modelCardCollapsibleButton.collapsed = True
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.editButton.connect("clicked(bool)", self.onEdit)
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.ui.installButton.connect("clicked(bool)", self.onInstall)

        self.setupTrain()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.setParameterNode(self.logic.getParameterNode())
        self.refreshDependencies()

    def _safe(self, function, fallback):
        try:
            return function()
        except Exception as exc:  # a broken manifest or library must not break the panel
            self.ui.statusLabel.text = str(exc)
            return fallback

    # ---- dependencies (PyTorch, MONAI, jsonschema, NiBabel): checked without importing them
    def refreshDependencies(self):
        """Show what is missing and offer Install; once nothing is, fill what the library provides."""
        self.missing = D.missing_packages()
        ready = not self.missing
        self.ui.dependenciesCollapsibleButton.visible = not ready or self.installJob is not None
        self.ui.dependenciesCollapsibleButton.collapsed = ready
        installing = self.installJob is not None and self.installJob.state == "running"
        self.ui.installButton.enabled = not ready and not installing
        if ready:
            self.ui.dependenciesLabel.text = "All the Python packages MultiModalSeg needs are installed."
        else:
            self.ui.dependenciesLabel.text = D.describe_missing(self.missing)
            self.ui.statusLabel.text = "Press Install above: the model list fills once the packages are in."
        for widget in (self.ui.modelComboBox, self.ui.loadModelButton, self.ui.importModelButton,
                       self.ui.startTrainingButton):
            widget.enabled = ready
        self.fillDevices()
        if ready:
            self.fillModalities()
            self.fillModels()
        else:
            self.ui.modelInfoLabel.text = "The models are listed once the packages above are installed."
        self.updateGUIFromParameterNode()

    def fillDevices(self):
        status = L.device_status()
        current = self.ui.deviceComboBox.currentData or "auto"
        self.ui.deviceComboBox.blockSignals(True)
        self.ui.deviceComboBox.clear()
        for text, value in L.DEVICES:
            self.ui.deviceComboBox.addItem(text, value)
            usable, reason = status.get(value, (False, ""))
            index = self.ui.deviceComboBox.count - 1
            self.ui.deviceComboBox.setItemData(index, reason, qt.Qt.ToolTipRole)
            self.ui.deviceComboBox.model().item(index).setEnabled(usable or value in ("auto", "cpu"))
        self.ui.deviceComboBox.currentIndex = max(0, self.ui.deviceComboBox.findData(current))
        self.ui.deviceComboBox.blockSignals(False)
        self.ui.deviceInfoLabel.text = status["auto"][1]
        self.ui.trainDeviceComboBox.clear()
        for text, value in L.DEVICES:
            self.ui.trainDeviceComboBox.addItem(text, value)

    def fillModalities(self):
        names = self._safe(L.modality_names, [])
        current = self.ui.modalityComboBox.currentText
        self.ui.modalityComboBox.blockSignals(True)
        self.ui.modalityComboBox.clear()
        self.ui.modalityComboBox.addItems(["auto", *names])
        self.ui.modalityComboBox.currentIndex = max(0, self.ui.modalityComboBox.findText(current))
        self.ui.modalityComboBox.blockSignals(False)
        self.ui.fewShotModalityComboBox.clear()
        self.ui.fewShotModalityComboBox.addItems(names)
        self.ui.fewShotModalityComboBox.currentIndex = max(0, self.ui.fewShotModalityComboBox.findText("MR"))

    def onInstall(self):
        if self.installJob is not None and self.installJob.state == "running":
            return
        self.ui.installLog.clear()
        try:
            self.installJob = D.DependencyInstallJob(self.missing or None, log=self.appendInstallLog,
                                                     progress=self.onProgress)
        except L.SegmentationError as exc:
            self.ui.dependenciesLabel.text = str(exc)
            return
        self.ui.installButton.enabled = False
        self.ui.dependenciesLabel.text = "Installing in the background; Slicer stays usable. The log below follows it."
        self.installTimer.start()

    def appendInstallLog(self, line):
        self.ui.installLog.appendPlainText(line)

    def onInstallTimer(self):
        job = self.installJob
        if job is None:
            self.installTimer.stop()
            return
        try:
            done = job.poll()
        except L.SegmentationError as exc:
            self.installTimer.stop()
            self.refreshDependencies()
            self.ui.dependenciesLabel.text = str(exc)
            self.ui.statusLabel.text = str(exc)
            slicer.util.errorDisplay(str(exc))  # the one dialog of a failed install
            return
        if done:
            self.installTimer.stop()
            self.refreshDependencies()
            self.ui.statusLabel.text = "Dependencies installed; choose a volume and press Apply."

    # ---- models
    STATE_SUFFIX = {"downloadable": " (download)", "missing": " (missing)"}

    def fillModels(self):
        """Shipped, downloadable and fine-tuned models, with their state in the label; the current
        choice kept, else the parameter node's, else the manifest's default model."""
        params = L.MultiModalSegParameters.load(self._parameterNode) if self._parameterNode is not None else None
        current = self.currentModel() or (params.model if params else "")
        self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        self.modelStates = {}
        default = ""
        for model in self._safe(self.logic.listModels, []):
            self.modelStates[model["name"]] = model
            suffix = self.STATE_SUFFIX.get(model["state"], "")
            if model["state"] == "update available":
                suffix = f" (update from {model['installed_version']})"
            if model.get("user"):
                suffix += " (yours)"
            label = f"{model['name']} {model['version']}" + suffix + (" (default)" if model["default"] else "")
            self.ui.modelComboBox.addItem(label, model["name"])
            if model["default"]:
                default = model["name"]
        self.ui.modelComboBox.blockSignals(False)
        self.selectModel(current or default)
        self.onModelChanged()

    def defaultModel(self):
        return next((name for name, m in self.modelStates.items() if m.get("default")), "")

    def currentModel(self):
        return self.ui.modelComboBox.currentData or ""

    def onLoadModel(self):
        path = qt.QFileDialog.getOpenFileName(self.parent, "Load model bundle", "", "Model bundles (*.zip);;All files (*)")
        if path:
            self.selectModel(path)

    def selectModel(self, model):
        index = self.ui.modelComboBox.findData(model)
        if index < 0 and model:
            self.ui.modelComboBox.addItem(LOCAL_MODEL_PREFIX + os.path.basename(model), model)
            index = self.ui.modelComboBox.count - 1
        if index >= 0:
            self.ui.modelComboBox.currentIndex = index

    def onModelChanged(self, _=None):
        if self.missing:  # the library cannot be asked yet
            return
        model = self.currentModel()
        status = self.modelStates.get(model)
        state = status["state"] if status else "installed"
        try:
            if state == "installed":
                info = self.logic.modelInfo(model or None)
            else:  # not on disk yet: what the manifest says (model_info would download it)
                info = {"labels": status["labels"], "modalities": status["modalities"], "licence": state}
            self.ui.modelInfoLabel.text = (
                f"labels: {', '.join(info['labels'])} | modalities: {', '.join(info['modalities'])} | licence: {info['licence']}"
            )
        except Exception as exc:  # SegmentationError, or a broken bundle: said in the panel
            self.ui.modelInfoLabel.text = str(exc)
        try:
            self.ui.modelCardBrowser.setMarkdown(self.logic.modelCard(model) if model else "")
        except Exception as exc:
            self.ui.modelCardBrowser.setPlainText(str(exc))
        self.updateDownloadButton()
        self.updateParameterNodeFromGUI()
        self.updateTrainTables()  # the mapping table lists the selected model's labels
        self.updateTrainEstimate()

    def updateDownloadButton(self):
        status = self.modelStates.get(self.currentModel())
        state = status["state"] if status else ""
        busy = any(job is not None and job.state == "running" for job in (self.downloadJob, self.job))
        self.ui.downloadModelButton.text = "Update" if state == "update available" else "Download"
        self.ui.downloadModelButton.enabled = state in ("downloadable", "update available") and not busy

    def onDownloadModel(self):
        name = self.currentModel()
        try:
            self.downloadJob = self.logic.startModelDownload(name, progress=self.onProgress)
        except L.SegmentationError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.updateGUIFromParameterNode()
        self.timer.start()

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(self.parent, "Import model file", "", "Model bundles (*.zip);;All files (*)")
        if not path:
            return
        try:
            info = self.logic.importModelFile(path)
        except L.SegmentationError as exc:
            self.ui.statusLabel.text = str(exc)
            slicer.util.errorDisplay(str(exc))
            return
        self.fillModels()
        self.selectModel(info["name"])
        self.ui.statusLabel.text = f"Imported {info['name']} {info['version']} (sha256 verified)."

    # ---- parameter node <-> GUI
    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()
        self.updateTrainTables()  # the Train section's tables follow the scene's pairs

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updating:
            return
        self._updating = True
        try:
            params = L.MultiModalSegParameters.load(self._parameterNode)
            self.ui.inputVolumeSelector.setCurrentNode(params.inputVolume)
            self.ui.outputSegmentationSelector.setCurrentNode(params.outputSegmentation)
            self.ui.modalityComboBox.currentIndex = max(0, self.ui.modalityComboBox.findText(params.modality))
            if not self.missing:
                self.selectModel(params.model or self.defaultModel())
            self.ui.deviceComboBox.currentIndex = max(0, self.ui.deviceComboBox.findData(params.device))
            self.ui.qualityComboBox.currentIndex = max(0, self.ui.qualityComboBox.findData(params.quality))
            running = self.job is not None and self.job.state == "running"
            downloading = self.downloadJob is not None and self.downloadJob.state == "running"
            installing = self.installJob is not None and self.installJob.state == "running"
            self.ui.applyButton.enabled = params.inputVolume is not None and not running and not downloading and not installing
            self.ui.cancelButton.enabled = running or downloading
            self.updateDownloadButton()
        finally:
            self._updating = False

    def updateParameterNodeFromGUI(self, *_):
        if self._parameterNode is None or self._updating:
            return
        L.MultiModalSegParameters(
            self.ui.inputVolumeSelector.currentNode(),
            self.ui.modalityComboBox.currentText,
            self.currentModel(),
            self.ui.deviceComboBox.currentData,
            self.ui.qualityComboBox.currentData,
            self.ui.outputSegmentationSelector.currentNode(),
        ).save(self._parameterNode)

    def onInputChanged(self, node):
        self.updateParameterNodeFromGUI()
        if node is None:
            self.ui.detectedModalityLabel.text = "detected: -"
            return
        try:
            name, reason = L.detect_modality(node)
            self.ui.detectedModalityLabel.text = f"detected: {name}"
            self.ui.detectedModalityLabel.toolTip = reason
        except Exception as exc:  # SegmentationError, or a library that cannot load yet
            self.ui.detectedModalityLabel.text = str(exc)

    def onSceneEndClose(self, caller, event):
        self.onCancel()
        self.setParameterNode(self.logic.getParameterNode())

    def onSceneEndImport(self, caller, event):
        self.setParameterNode(self.logic.getParameterNode())

    # ---- running
    def onApply(self):
        if self.missing:  # nothing can run yet: point at Install (one dialog)
            self.ui.dependenciesCollapsibleButton.collapsed = False
            if slicer.util.confirmOkCancelDisplay(D.describe_missing(self.missing) + " Install now?",
                                                  windowTitle="MultiModalSeg"):
                self.onInstall()
            return
        params = L.MultiModalSegParameters.load(self._parameterNode)
        output = params.outputSegmentation
        overwrite = False
        if output is not None and output.GetSegmentation().GetNumberOfSegments():
            if not slicer.util.confirmOkCancelDisplay(
                f"Replace the segments of '{output.GetName()}' with the new result?", windowTitle="MultiModalSeg"
            ):
                return
            overwrite = True
        try:
            self.job = self.logic.start(
                params.inputVolume, params.modality, params.model or None, params.device, params.quality,
                outputSegmentation=output, overwrite=overwrite, progress=self.onProgress,
            )
        except L.SegmentationError as exc:
            self.ui.statusLabel.text = str(exc)
            slicer.util.errorDisplay(str(exc))
            return
        self.ui.editButton.enabled = False
        self.ui.show3DButton.enabled = False
        self.updateGUIFromParameterNode()
        self.timer.start()

    def onProgress(self, fraction, message):
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message

    def onTimer(self):
        if self.downloadJob is not None and self.downloadJob.state == "running":
            self.pollDownload()
            return
        if self.job is None:
            self.timer.stop()
            return
        try:
            done = self.job.poll()
        except L.SegmentationError as exc:
            self.showJobError(exc)
            return
        if done:
            self.timer.stop()
            node = self.job.segmentationNode
            if node is not None:
                self.ui.statusLabel.text = self.job.summary or f"Done: {node.GetName()}"
                self.ui.outputSegmentationSelector.setCurrentNode(node)
                self.ui.editButton.enabled = True
                self.ui.show3DButton.enabled = True
                self.lastSegmentation = node
                self.onShow3D(self.ui.show3DButton.checked)
            self.updateGUIFromParameterNode()

    def showJobError(self, exc: Exception):
        """A failed segmentation or download: stop polling, say why in the panel and in a dialog."""
        self.timer.stop()
        self.ui.statusLabel.text = str(exc)
        self.updateGUIFromParameterNode()
        slicer.util.errorDisplay(str(exc))

    def pollDownload(self):
        job = self.downloadJob
        try:
            done = job.poll()
        except L.SegmentationError as exc:
            self.showJobError(exc)
            return
        if done:
            self.timer.stop()
            self.ui.statusLabel.text = f"Downloaded {job.name} (sha256 verified)."
            self.fillModels()
            self.updateGUIFromParameterNode()

    def onCancel(self):
        if self.downloadJob is not None and self.downloadJob.state == "running":
            self.downloadJob.cancel()
            self.ui.statusLabel.text = "Download cancelled; it resumes where it stopped next time."
        if self.job is not None and self.job.state == "running":
            self.job.cancel()
            self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
        self.timer.stop()
        self.updateGUIFromParameterNode()

    def onShow3D(self, show):
        node = getattr(self, "lastSegmentation", None) or self.ui.outputSegmentationSelector.currentNode()
        if node is not None and (show or node.GetDisplayNode() is not None):
            L.showIn3D(node, bool(show))

    def onEdit(self):
        node = getattr(self, "lastSegmentation", None)
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(node)
        editor.setSourceVolumeNode(self.ui.inputVolumeSelector.currentNode())

    # ---- Train section: everything it does is in MultiModalSegTrainLogic (T)
    def setupTrain(self):
        # the .ui has no mrmlSceneChanged connections: give every MRML widget the scene here
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector,
                       self.ui.trainSegmentationSelector, self.ui.trainingPlotWidget):
            widget.setMRMLScene(slicer.mrmlScene)
        self.ui.trainingPlotWidget.plotController().setVisible(False)
        self.ui.trainMethodComboBox.addItem("the model's own method", "")
        for name in self._safe(T.methodNames, []):
            title, paper = T.methodTitle(name)
            self.ui.trainMethodComboBox.addItem(title, name)
            self.ui.trainMethodComboBox.setItemData(self.ui.trainMethodComboBox.count - 1, paper, qt.Qt.ToolTipRole)
        self.ui.trainStepsSpinBox.connect("valueChanged(int)", self.updateTrainEstimate)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.removePairButton.connect("clicked(bool)", self.onRemovePair)
        self.ui.startTrainingButton.connect("clicked(bool)", self.onStartTraining)
        self.ui.stopTrainingButton.connect("clicked(bool)", self.onStopTraining)
        self.ui.resumeTrainingButton.connect("clicked(bool)", self.onResumeTraining)
        self.ui.trainCollapsibleButton.collapsed = True
        self.ui.trainCollapsibleButton.connect("contentsCollapsed(bool)", lambda collapsed: collapsed or self.updateTrainTables())

    def updateTrainEstimate(self, *_):
        """How long Start would take, from the seconds measured when the selected model was trained."""
        if self.missing or not hasattr(self, "ui"):
            return
        try:
            text = T.trainingEstimate(self.logic, self.currentModel() or None, self.ui.trainStepsSpinBox.value)
        except Exception as exc:
            text = str(exc)
        self.ui.trainEstimateLabel.text = text

    def updateTrainTables(self):
        """Fill the pairs and mapping tables from the parameter node."""
        node = self._parameterNode
        if node is None or not hasattr(self, "ui") or self.missing:
            return
        pairs = T.getTrainingPairs(node)
        modalities = self._safe(L.modality_names, [])
        table = self.ui.pairsTable
        table.setRowCount(len(pairs))
        for row, pair in enumerate(pairs):
            for column, text in enumerate((pair.volumeNode.GetName(), pair.segmentationNode.GetName())):
                item = qt.QTableWidgetItem(text)
                item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                table.setItem(row, column, item)
            combo = qt.QComboBox()
            combo.addItems(modalities)
            combo.currentText = pair.modality
            combo.connect("currentIndexChanged(int)", lambda _, r=row, c=combo: self.onPairChanged(r, modality=c.currentText))
            table.setCellWidget(row, 2, combo)
            box = qt.QCheckBox()
            box.checked = pair.heldOut
            box.connect("toggled(bool)", lambda checked, r=row: self.onPairChanged(r, heldOut=checked))
            table.setCellWidget(row, 3, box)
        mapping = self.ui.mappingTable
        try:
            labels = T.modelLabels(self.logic, self.currentModel() or None)
            rows = T.mappingRows(pairs, labels, T.getLabelOverrides(node))
        except Exception as exc:  # SegmentationError, or a model not on disk yet
            self.ui.trainStatusLabel.text = str(exc)
            labels, rows = [], []
        mapping.setRowCount(len(rows))
        for row, (segment, label) in enumerate(rows):
            item = qt.QTableWidgetItem(segment)
            item.setFlags(qt.Qt.ItemIsEnabled)
            mapping.setItem(row, 0, item)
            combo = qt.QComboBox()
            combo.addItem("(ignore)", "")
            for lab in labels:
                combo.addItem(lab["name"], lab["name"])
            combo.currentIndex = max(0, combo.findData(label or ""))
            combo.connect("currentIndexChanged(int)", lambda _, s=segment, c=combo: self.onMappingChanged(s, c.currentData))
            mapping.setCellWidget(row, 1, combo)
        self.updateTrainButtons()

    def onAddPair(self):
        params = L.MultiModalSegParameters.load(self._parameterNode)
        try:
            T.addTrainingPair(self._parameterNode, params.inputVolume, self.ui.trainSegmentationSelector.currentNode(),
                              params.modality)
        except L.SegmentationError as exc:
            self.ui.trainStatusLabel.text = str(exc)
            return
        self.updateTrainTables()

    def onRemovePair(self):
        T.removeTrainingPair(self._parameterNode, self.ui.pairsTable.currentRow())
        self.updateTrainTables()

    def onPairChanged(self, row, modality=None, heldOut=None):
        T.updateTrainingPair(self._parameterNode, row, modality, heldOut)

    def onMappingChanged(self, segment, label):
        T.setLabelOverride(self._parameterNode, segment, label or None)

    def trainingRunning(self):
        return self.trainingJob is not None and self.trainingJob.state == "running"

    def updateTrainButtons(self):
        job = self.trainingJob
        ready = not self.missing
        self.ui.startTrainingButton.enabled = ready and not self.trainingRunning()
        self.ui.stopTrainingButton.enabled = self.trainingRunning()
        if job is None:  # after a restart: the stopped trainings of earlier sessions, by model name
            runs = self._safe(T.resumableTrainings, []) if ready else []
            self.ui.resumeRunComboBox.clear()
            for name, folder in runs:
                self.ui.resumeRunComboBox.addItem(name, str(folder))
            self.ui.resumeRunComboBox.enabled = bool(runs)
            self.ui.resumeTrainingButton.enabled = bool(runs)
        else:
            self.ui.resumeTrainingButton.enabled = not self.trainingRunning() and (
                job.state in ("stopped", "cancelled", "failed") and job.checkpointPath.is_file())

    def onStartTraining(self):
        if self.missing:
            self.ui.trainStatusLabel.text = "Training needs the packages listed under Dependencies: press Install there."
            return
        node = self._parameterNode
        fewShot = {}
        if self.ui.fewShotSpinBox.value > 0 and self.ui.fewShotModalityComboBox.currentText:
            fewShot[self.ui.fewShotModalityComboBox.currentText] = int(self.ui.fewShotSpinBox.value)
        settings = T.TrainingSettings(
            init=self.currentModel() or None, method=self.ui.trainMethodComboBox.currentData,
            steps=self.ui.trainStepsSpinBox.value, device=self.ui.trainDeviceComboBox.currentData,
            fewShot=fewShot, newModelName=self.ui.newModelNameLineEdit.text.strip(), overrides=T.getLabelOverrides(node),
        )
        try:
            with slicer.util.WaitCursor():
                self.trainingJob = T.startTraining(self.logic, T.getTrainingPairs(node), settings, progress=self.onTrainProgress)
        except L.SegmentationError as exc:
            self.ui.trainStatusLabel.text = str(exc)
            slicer.util.errorDisplay(str(exc))
            return
        self._plotted = None
        self.trainTimer.start()
        self.updateTrainButtons()

    def onStopTraining(self):
        if self.trainingRunning():
            self.trainingJob.stop()

    def onResumeTraining(self):
        try:
            if self.trainingJob is None:
                folder = self.ui.resumeRunComboBox.currentData
                if not folder:
                    self.ui.trainStatusLabel.text = "There is no stopped training to resume."
                    return
                self.trainingJob = T.resumeTraining(self.logic, folder, progress=self.onTrainProgress)
                self._plotted = None
            else:
                self.trainingJob.resume()
        except L.SegmentationError as exc:
            self.ui.trainStatusLabel.text = str(exc)
            return
        self.trainTimer.start()
        self.updateTrainButtons()

    def onTrainProgress(self, fraction, message):
        self.ui.trainProgressBar.value = int(round(100 * fraction))
        self.ui.trainStatusLabel.text = message

    def onTrainTimer(self):
        job = self.trainingJob
        if job is None:
            self.trainTimer.stop()
            return
        try:
            done = job.poll()
        except L.SegmentationError as exc:
            self.trainTimer.stop()
            self.ui.trainStatusLabel.text = str(exc)
            self.updateTrainButtons()
            slicer.util.errorDisplay(str(exc))
            return
        self.updateTrainPlot()
        if not done:
            return
        self.trainTimer.stop()
        if job.state == "done" and job.model:
            self.fillModels()
            self.selectModel(job.model)
            self.ui.trainStatusLabel.text = f"Installed model '{job.model}' and selected it above: press Apply to segment with it."
            if job.worse:
                self.ui.trainStatusLabel.text += " Warning: it is worse than the model it started from on " + "; ".join(job.worse) + "."
        elif job.state == "stopped":
            self.ui.trainStatusLabel.text = f"Stopped at step {job.step}; the checkpoint is kept: press Resume to continue."
        self.updateTrainButtons()

    def updateTrainPlot(self):
        history = self.trainingJob.history
        size = (len(history["loss"]), sum(len(v) for v in history["dice"].values()))
        if size == self._plotted:
            return
        self._plotted = size
        chart = T.updateTrainingPlot(slicer.mrmlScene, history)
        view = T.trainingPlotViewNode(slicer.mrmlScene, chart, self._parameterNode)
        if self.ui.trainingPlotWidget.mrmlPlotViewNode() is not view:
            self.ui.trainingPlotWidget.setMRMLPlotViewNode(view)

    def cleanup(self):
        self.onCancel()
        if self.trainingRunning():
            self.trainingJob.cancel()  # STOP file first: the run writes a checkpoint (Resume continues), then it is killed if need be
        self.trainTimer.stop()
        self.removeObservers()


class MultiModalSegTest(ScriptedLoadableModuleTest):
    """Runs inside 3D Slicer (Reload and Test): segments the shipped sample CT with the default model."""

    def setUp(self):
        load_helpers()
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_sample_ct()
        self.setUp()
        self.test_train_pair_export()

    def test_sample_ct(self):
        root = L.library_parent()
        candidates = [root / "Resources" / "SampleData" / "abdomen_ct_01" / "image.nii.gz",
                      root.parent / "Resources" / "SampleData" / "abdomen_ct_01" / "image.nii.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        self.assertIsNotNone(path, "the shipped sample CT was not found")
        volume = slicer.util.loadVolume(str(path))
        self.delayDisplay("Segmenting the sample CT")
        progress = []
        node = L.MultiModalSegLogic().process(volume, "auto", None, progress=lambda f, m: progress.append(f))
        segmentation = node.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(names, ["Liver", "Spleen", "Right kidney", "Left kidney"])
        liver = slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentation.GetSegmentIdBySegmentName("Liver"), volume)
        self.assertGreater(int(liver.sum()), 1000)
        self.assertEqual(progress[-1], 1.0)
        with self.assertRaises(L.SegmentationError):
            L.MultiModalSegLogic().process(None)
        self.delayDisplay("Test passed")

    def test_train_pair_export(self):
        """Train section: a segment drawn in Slicer maps to the model's label and exports on the volume's grid."""
        import json
        import tempfile

        import numpy as np
        import SimpleITK as sitk

        root = L.library_parent()
        path = next(p for p in (root / "Resources" / "SampleData" / "abdomen_ct_01" / "image.nii.gz",
                                root.parent / "Resources" / "SampleData" / "abdomen_ct_01" / "image.nii.gz") if p.is_file())
        volume = slicer.util.loadVolume(str(path))
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentId = segmentation.GetSegmentation().AddEmptySegment("", "Liver")
        array = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
        array[40:60, 40:60, 40:60] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(array, segmentation, segmentId, volume)
        logic = L.MultiModalSegLogic()
        node = logic.getParameterNode()
        T.setTrainingPairs(node, [])
        T.addTrainingPair(node, volume, segmentation, "auto")
        pairs = T.getTrainingPairs(node)
        labels = T.modelLabels(logic, None)
        self.assertEqual([p.modality for p in pairs], ["CT"])
        self.assertEqual(T.mappingRows(pairs, labels), [("Liver", "liver")])
        with tempfile.TemporaryDirectory() as folder:
            dataset = json.loads(T.exportTrainingDataset(pairs, folder, labels).read_text())
            label = sitk.GetArrayFromImage(sitk.ReadImage(f"{folder}/{dataset['training'][0]['label']}"))
        self.assertEqual(label.shape, array.shape)
        self.assertEqual(int((label == 1).sum()), 20 * 20 * 20)
        self.delayDisplay("Train export test passed")
