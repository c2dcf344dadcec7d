"""3D Slicer module MultiModalSeg: segment a loaded CT or MR with a joint CT+MR model.

Module (metadata), Widget (Qt panel only) and Test (runs inside Slicer). Everything a run does lives
in ``MultiModalSegLogic`` (no Qt), shared with the batch script and the pytest suite: the Widget
starts a ``SegmentationJob`` and polls it from a Qt timer so that Slicer never freezes.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import MultiModalSegLogic as L  # noqa: E402
import MultiModalSegTrainLogic as T  # noqa: E402

DEVICES = (("auto", "auto"), ("CPU", "cpu"), ("GPU", "cuda"))
QUALITIES = (("normal", "normal"), ("fast (low resolution)", "fast"))
LOCAL_MODEL_PREFIX = "file: "


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
            "is a segmentation you can correct in the Segment Editor."
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
        self.modelStates = {}
        self._parameterNode = None
        self._updating = False
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onTimer)
        self.trainingJob = None
        self._plotted = None
        self.trainTimer = qt.QTimer()
        self.trainTimer.setInterval(1000)
        self.trainTimer.connect("timeout()", self.onTrainTimer)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MultiModalSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = L.MultiModalSegLogic()

        self.ui.modalityComboBox.addItems(["auto", *self._safe(L.modality_names, [])])
        for text, value in DEVICES:
            self.ui.deviceComboBox.addItem(text, value)
        gpu, reason = L.gpu_status()
        if not gpu:
            self.ui.deviceComboBox.model().item(2).setEnabled(False)
        self.ui.deviceInfoLabel.text = reason
        for text, value in QUALITIES:
            self.ui.qualityComboBox.addItem(text, value)
        self.fillModels()

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

        self.setupTrain()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.setParameterNode(self.logic.getParameterNode())

    def _safe(self, function, fallback):
        try:
            return function()
        except Exception as exc:  # a broken manifest must not break the panel
            self.ui.statusLabel.text = str(exc)
            return fallback

    # ---- models
    STATE_SUFFIX = {"downloadable": " (download)", "missing": " (missing)"}

    def fillModels(self):
        """Installed and downloadable models of the manifest, with their state in the label."""
        current = self.currentModel() if hasattr(self, "ui") else ""
        self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        self.modelStates = {}
        for model in self._safe(self.logic.listModels, []):
            self.modelStates[model["name"]] = model
            suffix = self.STATE_SUFFIX.get(model["state"], "")
            if model["state"] == "update available":
                suffix = f" (update from {model['installed_version']})"
            label = f"{model['name']} {model['version']}" + suffix + (" (default)" if model["default"] else "")
            self.ui.modelComboBox.addItem(label, model["name"])
        self.ui.modelComboBox.blockSignals(False)
        if current:
            self.selectModel(current)
        self.onModelChanged()

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
        model = self.currentModel()
        status = self.modelStates.get(model)
        state = status["state"] if status else "installed"
        try:
            if state == "installed":
                info = L.model_info(model or None)
            else:  # not on disk yet: what the manifest says (model_info would download it)
                info = {"labels": status["labels"], "modalities": status["modalities"], "licence": state}
            self.ui.modelInfoLabel.text = (
                f"labels: {', '.join(info['labels'])} | modalities: {', '.join(info['modalities'])} | licence: {info['licence']}"
            )
        except L.SegmentationError as exc:
            self.ui.modelInfoLabel.text = str(exc)
        try:
            self.ui.modelCardBrowser.setMarkdown(self.logic.modelCard(model) if model else "")
        except L.SegmentationError as exc:
            self.ui.modelCardBrowser.setPlainText(str(exc))
        self.updateDownloadButton()
        self.updateParameterNodeFromGUI()
        self.updateTrainTables()  # the mapping table lists the selected model's labels

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
            self.selectModel(params.model)
            self.ui.deviceComboBox.currentIndex = max(0, self.ui.deviceComboBox.findData(params.device))
            self.ui.qualityComboBox.currentIndex = max(0, self.ui.qualityComboBox.findData(params.quality))
            running = self.job is not None and self.job.state == "running"
            downloading = self.downloadJob is not None and self.downloadJob.state == "running"
            self.ui.applyButton.enabled = params.inputVolume is not None and not running and not downloading
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
        except L.SegmentationError as exc:
            self.ui.detectedModalityLabel.text = str(exc)

    def onSceneEndClose(self, caller, event):
        self.onCancel()
        self.setParameterNode(self.logic.getParameterNode())

    def onSceneEndImport(self, caller, event):
        self.setParameterNode(self.logic.getParameterNode())

    # ---- running
    def onApply(self):
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
            missing = L.missing_packages()
            if missing:
                if not slicer.util.confirmOkCancelDisplay(
                    f"MultiModalSeg needs {', '.join(missing)}; install now? (Slicer's numpy, SimpleITK and vtk are kept.)"
                ):
                    return
                with slicer.util.tryWithErrorDisplay("Installing dependencies failed.", waitCursor=True):
                    L.install_dependencies(missing)
            self.job = self.logic.start(
                params.inputVolume, params.modality, params.model or None, params.device, params.quality,
                outputSegmentation=output, overwrite=overwrite, progress=self.onProgress,
            )
        except L.SegmentationError as exc:
            self.ui.statusLabel.text = str(exc)
            slicer.util.errorDisplay(str(exc))
            return
        self.ui.editButton.enabled = False
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
                self.lastSegmentation = node
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
        self.ui.trainMethodComboBox.addItem("(the model's own)", "")
        for name in self._safe(T.methodNames, []):
            self.ui.trainMethodComboBox.addItem(name, name)
        for text, value in DEVICES:
            self.ui.trainDeviceComboBox.addItem(text, value)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.removePairButton.connect("clicked(bool)", self.onRemovePair)
        self.ui.startTrainingButton.connect("clicked(bool)", self.onStartTraining)
        self.ui.stopTrainingButton.connect("clicked(bool)", self.onStopTraining)
        self.ui.resumeTrainingButton.connect("clicked(bool)", self.onResumeTraining)
        self.ui.trainCollapsibleButton.collapsed = True
        self.ui.trainCollapsibleButton.connect("contentsCollapsed(bool)", lambda collapsed: collapsed or self.updateTrainTables())

    def updateTrainTables(self):
        """Fill the pairs and mapping tables from the parameter node."""
        node = self._parameterNode
        if node is None or not hasattr(self, "ui"):
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
        except L.SegmentationError as exc:
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
        self.ui.startTrainingButton.enabled = not self.trainingRunning()
        self.ui.stopTrainingButton.enabled = self.trainingRunning()
        # without a job of this session, Resume asks for the folder of an earlier session's training
        self.ui.resumeTrainingButton.enabled = not self.trainingRunning() and (
            job is None or (job.state in ("stopped", "cancelled", "failed") and job.checkpointPath.is_file()))

    def onStartTraining(self):
        missing = L.missing_packages()
        if missing:
            slicer.util.errorDisplay(f"Training needs {', '.join(missing)}; press Apply once to install them.")
            return
        node = self._parameterNode
        settings = T.TrainingSettings(
            init=self.currentModel() or None, method=self.ui.trainMethodComboBox.currentData,
            steps=self.ui.trainStepsSpinBox.value, device=self.ui.trainDeviceComboBox.currentData,
            newModelName=self.ui.newModelNameLineEdit.text.strip(), overrides=T.getLabelOverrides(node),
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
                folder = qt.QFileDialog.getExistingDirectory(self.parent, "Training folder to resume",
                                                             str(T.trainingFolder()))
                if not folder:
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
            self.trainingJob.cancel()  # SIGTERM: the run writes a checkpoint; starting it again resumes
        self.trainTimer.stop()
        self.removeObservers()


class MultiModalSegTest(ScriptedLoadableModuleTest):
    """Runs inside 3D Slicer (Reload and Test): segments the shipped sample CT with the default model."""

    def setUp(self):
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
        self.assertEqual(names, ["liver", "spleen", "kidney_right", "kidney_left"])
        liver = slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentation.GetSegmentIdBySegmentName("liver"), volume)
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
