"""ToothMCL Segment: one segment per tooth, numbered FDI, for CBCT volumes (and intraoral scans).

Module, parameter node, widget, logic and test, in that order. The work is done by
``ToothMCLSegmentLib`` (see its ``__init__``); torch and ToothMCLCore are imported only inside
logic methods, after the dependency check. Without the Slicer application (plain Python with
the ``slicer-core`` wheel) this file still imports, so that tests and scripts can use the logic.
"""

import enum
import logging
import traceback
from typing import Union

import slicer
import vtk
from slicer import vtkMRMLModelNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.util import VTKObservationMixin
from ToothMCLSegmentLib import Dependencies
from ToothMCLSegmentLib.SegmentationJob import stageLabel
from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

try:  # the Slicer application: Qt, CTK and the scripted-module base classes
    import ctk  # noqa: F401  (loaded for the .ui's custom widgets)
    import qt
    from slicer.i18n import tr as _
    from slicer.parameterNodeWrapper import parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:  # plain Python (slicer-core): no GUI; only the logic is usable
    qt = None

    def _(text):
        return text

    def parameterNodeWrapper(cls):
        return cls

    class ScriptedLoadableModule:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleWidget(ScriptedLoadableModule):
        pass

    class ScriptedLoadableModuleLogic(ScriptedLoadableModule):
        pass

    class ScriptedLoadableModuleTest(ScriptedLoadableModule):
        pass


logger = logging.getLogger(__name__)


#
# ToothMCLSegment
#


class ToothMCLSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ToothMCL Segment")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["ToothMCL contributors"]
        self.parent.helpText = _(
            "Segments every tooth of a CBCT volume (one segment per tooth named by its FDI number) "
            "or of an intraoral scan (an FDI label per vertex), then lets you fix the numbering "
            "(reassign, swap, merge, delete, renumber a quadrant, relabel a region of a scan, undo) "
            "and save the correction for retraining. "
            "The intraoral model was trained on 24 patients' real scans (MeshSegNet); the bundled CBCT "
            "model was trained on synthetic phantoms. Research use only, not for clinical decisions.")
        self.parent.acknowledgementText = _(
            "Implements ToothMCL (multimodal contrastive pretraining for CBCT and intraoral scans) "
            "and SOFTooth's FDI order-aware assignment, on MONAI's SwinUNETR.")


#
# ToothMCLSegmentParameterNode
#


class ToothMCLSegmentDevice(enum.Enum):
    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"

    def label(self):
        return {"auto": _("Auto (GPU if available)"), "cuda": _("CUDA GPU"), "cpu": _("CPU")}[self.value]


@parameterNodeWrapper
class ToothMCLSegmentParameterNode:
    """inputNode: CBCT volume or scan; modelName/weightsPath: the network; segmentation: the result."""

    inputNode: Union[vtkMRMLScalarVolumeNode, vtkMRMLModelNode]  # noqa: UP007 (the wrapper reads typing.Union)
    device: ToothMCLSegmentDevice = ToothMCLSegmentDevice.AUTO
    modelName: str = ""
    weightsPath: str = ""
    segmentation: vtkMRMLSegmentationNode
    storePath: str = ""
    annotator: str = ""


#
# ToothMCLSegmentWidget
#


class ToothMCLSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self.teethPanel = None
        self._patientCase = None  # the input node whose patient ID the field shows

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ToothMCLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ToothMCLSegmentLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.onPollJob)
        from ToothMCLSegmentLib.TeethPanel import TeethPanel  # Qt: GUI only

        self.teethPanel = TeethPanel(self.ui, self.logic, lambda: self._parameterNode)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.onWeightsChanged)
        self.ui.storePathLineEdit.connect("currentPathChanged(QString)", self.onStorePathChanged)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.saveCorrectionButton.connect("clicked(bool)", self.onSaveCorrection)
        self._setRunning(False)
        self._fillModels()
        self.initializeParameterNode()
        qt.QTimer.singleShot(0, self._updateDeviceWarning)  # after the panel is shown: may import torch

    def cleanup(self):
        if self._job is not None:
            self._job.cancel()
        self._timer.stop()
        self.teethPanel.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputNode:
            self._parameterNode.inputNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self.ui.weightsPathLineEdit.currentPath = self._parameterNode.weightsPath
            self.ui.storePathLineEdit.currentPath = self._parameterNode.storePath
            name = self._parameterNode.modelName
            index = self.ui.modelComboBox.findText(name) if name else 0
            if index >= 0:
                self.ui.modelComboBox.currentIndex = index
        self._updateButtons()

    # -- inputs -----------------------------------------------------------------------------
    def _fillModels(self):
        """"Automatic" first (the default model of the selected input's kind), then every registered model."""
        self.ui.modelComboBox.clear()
        try:
            names = self.logic.availableModels()
            automatic = _("Automatic: {scan} for scans, {volume} for volumes").format(**self.logic.defaultModels())
        except Exception as exc:  # noqa: BLE001 (a broken registry file must not break the panel)
            logger.error("ToothMCL model registry: %s", exc)
            names = []
        if not names:
            self.ui.modelComboBox.addItem(_("(no registered model: choose a weights file)"))
            self.ui.modelComboBox.enabled = False
            return
        self.ui.modelComboBox.addItem(automatic)
        for name in names:
            self.ui.modelComboBox.addItem(name)
        self.ui.modelComboBox.currentIndex = 0

    def onModelChanged(self, index):
        if self._parameterNode and self.ui.modelComboBox.enabled:
            self._parameterNode.modelName = "" if index <= 0 else self.ui.modelComboBox.currentText

    def onWeightsChanged(self, path):
        if self._parameterNode:
            self._parameterNode.weightsPath = path

    def onStorePathChanged(self, path):
        if self._parameterNode:
            self._parameterNode.storePath = path

    def _updateDeviceWarning(self):
        if not Dependencies.isImportable("torch"):
            text = _("PyTorch is not installed yet: you will be asked to install it when you segment.")
        else:
            text = "" if self.logic.cudaAvailable() else _(
                "No CUDA GPU found: segmentation runs on the CPU (the estimate below is for the CPU).")
        self.ui.deviceWarningLabel.text = text
        self.ui.deviceWarningLabel.visible = bool(text)
        self._updatePipelineLabel()

    def _updatePipelineLabel(self):
        p = self._parameterNode
        node = p.inputNode if p else None
        cuda = Dependencies.isImportable("torch") and self.logic.cudaAvailable()
        text = self.logic.pipelineSummary(node, cuda=cuda, model=p.modelName) if node is not None else ""
        self.ui.pipelineLabel.text = text
        self.ui.pipelineLabel.visible = bool(text)

    def _updateButtons(self, caller=None, event=None):
        p = self._parameterNode
        running = self._job is not None
        canRun = bool(p and p.inputNode) and not running
        self._updatePipelineLabel()
        self.ui.segmentButton.enabled = canRun
        self.ui.segmentButton.toolTip = _("Segment and number every tooth") if canRun else (
            _("Segmentation is running") if running else _("Select a CBCT volume or an intraoral scan"))
        storeAvailable, storeMessage = self.logic.correctionStoreStatus()
        subject = self.teethPanel.subject() if self.teethPanel is not None else None
        self.ui.saveCorrectionButton.enabled = bool(storeAvailable and subject)
        self.ui.saveCorrectionButton.toolTip = storeMessage
        caseNode = self.logic.inputNodeOf(subject) if subject is not None else None
        if caseNode is not None and caseNode is not self._patientCase:
            # another input (a new case): its DICOM patient ID, else empty for the user to enter; segmenting
            # the same input again keeps what was typed
            self._patientCase = caseNode
            self.ui.patientLineEdit.text = self.logic.patientIdOf(subject)
        if self.teethPanel is not None:
            self.teethPanel.update()

    # -- segmentation ------------------------------------------------------------------------
    def onSegmentButton(self):
        p = self._parameterNode
        if not p.weightsPath and not self.ui.modelComboBox.enabled:
            slicer.util.errorDisplay(_("No model is registered: choose a weights file (.safetensors with "
                                       "its .json model card next to it)."))
            return
        with slicer.util.tryWithErrorDisplay(_("Tooth segmentation could not start."), waitCursor=True):
            self.logic.checkDependencies(confirm=lambda text: slicer.util.confirmOkCancelDisplay(
                text, windowTitle=_("ToothMCL: install Python packages")))
            weights = p.weightsPath or None
            model = None if weights else (p.modelName or None)
            self._job = self.logic.startSegmentation(p.inputNode, weights=weights, model=model,
                                                     device=p.device.value)
            self._setRunning(True)
            self._timer.start()

    def onCancelButton(self):
        if self._job is not None:
            self._job.cancel()
            self.ui.stageLabel.text = _("Cancelling…")

    def onPollJob(self):
        job = self._job
        status = job.poll()
        self.ui.progressBar.value = round(100 * status.fraction)
        self.ui.stageLabel.text = stageLabel(status.stage)
        if not status.done:
            return
        self._timer.stop()
        self._job = None
        self._setRunning(False)
        from ToothMCLCore.errors import CancelledError

        try:
            result = self.logic.finishSegmentation(job)
        except CancelledError:
            self.ui.stageLabel.text = _("Cancelled: nothing was added to the scene.")
            return
        except Exception as exc:  # noqa: BLE001 (shown to the user with its traceback)
            self.ui.stageLabel.text = _("Failed.")
            details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            slicer.util.errorDisplay(_("Tooth segmentation failed.") + f"\n\n{exc}", detailedText=details)
            return
        if result.IsA("vtkMRMLSegmentationNode"):
            result.CreateClosedSurfaceRepresentation()
            self._parameterNode.segmentation = result  # observers refresh the buttons and the table
        else:
            self.teethPanel.refresh()
            self._updateButtons()

    def _setRunning(self, running):
        self.ui.progressBar.visible = running
        self.ui.cancelButton.visible = running
        self.ui.cancelButton.enabled = running
        if running:
            self.ui.progressBar.value = 0
        self._updateButtons()

    def onSaveCorrection(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("The correction could not be saved."), waitCursor=True):
            self.logic.saveCorrection(self.teethPanel.subject(), p.storePath, p.annotator,
                                      self.ui.noteLineEdit.text, patient_id=self.ui.patientLineEdit.text)
            self.ui.noteLineEdit.text = ""
            slicer.util.showStatusMessage(_("Correction saved."), 3000)


#
# ToothMCLSegmentLogic
#


class ToothMCLSegmentLogic(ScriptedLoadableModuleLogic, SegmentationLogic):
    """All computation, usable without the widget (see ``ToothMCLSegmentLib.SegmentationLogic``)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        SegmentationLogic.__init__(self)

    def getParameterNode(self):
        return ToothMCLSegmentParameterNode(super().getParameterNode())


#
# ToothMCLSegmentTest
#


class ToothMCLSegmentTest(ScriptedLoadableModuleTest):
    """Self test inside Slicer: the checks of ``ToothMCLSegmentLib.SelfTest``, which pytest also runs.

    The full suite is ``python -m pytest Testing/Slicer`` (real MRML from the slicer-core wheel).
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from ToothMCLSegmentLib.SelfTest import CHECKS

        logic = ToothMCLSegmentLogic()
        for check in CHECKS:
            self.setUp()
            self._say(f"{check.__name__}: {check.__doc__.splitlines()[0]}")
            check(slicer.mrmlScene, logic)
        self._say("ToothMCLSegment self-test passed")

    def _say(self, message):
        say = getattr(self, "delayDisplay", None)  # Slicer's test base class shows it; slicer-core has none
        if say is not None:
            say(message)
        else:
            logger.info(message)
