"""The module's logic without any GUI: segment, correct, tabulate, save corrections.

Everything here works in plain Python with the ``slicer-core`` wheel (a ``vtkMRMLScene`` and
no application), so the tests drive it exactly as the widget does. torch and ToothMCLCore are
imported inside the methods, after :meth:`SegmentationLogic.checkDependencies`.

Public API (camelCase, Slicer style)::

    logic = SegmentationLogic()
    segmentationNode = logic.segmentVolume(volumeNode, weights=None, model=None, device="cpu",
                                           progress=None, cancel=None)
    job = logic.startSegmentation(inputNode, ...)   # worker thread; poll job, then
    node = logic.finishSegmentation(job)            # in the GUI thread
    logic.applyCorrection(segmentationNode, "swap", tooth=36, target=37)  # -> diff entries
    logic.undoCorrection(segmentationNode)
    rows = logic.teethTable(segmentationNode or modelNode)
    logic.applyVertexLabels(modelNode, labelsPerVertex)
    logic.relabelVertices(scanNode, logic.verticesInROI(scanNode, roiNode), 36)  # scans
    logic.createToothModels(scanNode)
    logic.saveCorrection(segmentationNode or scanNode, store_path, annotator, note, patient_id="P17")
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable

import numpy as np

from . import Dependencies
from .CorrectionCapture import CorrectionCapture, currentLabels
from .SegmentationJob import SegmentationJob
from .SegmentDisplay import (
    INPUT_ROLE,
    createSegmentationNode,
    getProvenance,
    keptTeethKey,
    labelsFromSegmentation,
    predictionLabels,
    removeHiddenWithSegmentations,
    segmentedTeeth,
    setProvenance,
    storePrediction,
    storeSegmentedTeeth,
)
from .TeethTable import teethTableFromModel, teethTableFromSegmentation
from .VertexLabels import (
    applyVertexLabels,
    createToothModels,
    modelPointsWorld,
    storeVertexPrediction,
    vertexPrediction,
    verticesInROI,
)
from .VolumeConversion import nodeFilePath, surfaceMeshFromModelNode, volumeFromNode

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]
STORE_NOT_AVAILABLE = (
    "saving corrections needs the ToothMCL corrections store (ToothMCLCore.corrections), which "
    "could not be imported; reinstall the ToothMCL extension. The corrected segmentation stays in "
    "the scene: save it with File > Save Data"
)


#: seconds on 2 CPU cores with the demo models, fitted to benchmarks/cbct_speed.py (25-28 s for a
#: 40 M-voxel scan with the 0.75 mm SwinUNETR; reading, resampling and restoring grow with the
#: scan, the network with the dentition) and ios_speed.py (9.2 s for 115k vertices, 13.5 s for
#: 360k; 6 passes)
CPU_SECONDS = {"cbct_fixed": 20.0, "cbct_per_mvoxel": 0.16, "ios_fixed": 7.0, "ios_per_100k_vertices": 1.8}
#: a rough GPU factor for the estimate (the network part dominates on a CPU)
GPU_SPEEDUP = 5.0


def _roughDuration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(5, round(seconds / 5.0) * 5)} s"
    return f"{round(seconds / 60.0)} min"


class SegmentationLogic:
    """GUI-free logic of ToothMCLSegment (see module docstring)."""

    def __init__(self):
        self.corrections = CorrectionCapture()
        self._predictor = None  # (key, predictor): reused while weights and device stay the same
        # the application's scene (none without the Slicer application): a segmentation deleted there,
        # one of a scene read back included, takes its hidden working volumes with it
        import slicer

        removeHiddenWithSegmentations(getattr(slicer, "mrmlScene", None))

    # -- dependencies -----------------------------------------------------------------------
    def checkDependencies(self, confirm: Callable[[str], bool] | None = None) -> list[str]:
        """Make sure torch, MONAI, ... are importable; with ``confirm`` offer to install them."""
        return Dependencies.ensureDependencies(confirm)

    def availableModels(self) -> list[str]:
        """Names of the registered models that segment (bundled weights and ``$TOOTHMCL_REGISTRY``):
        a boundary refiner runs inside the IOS model that names it, never on its own."""
        from ToothMCLCore.models.registry import load_registry

        return sorted(name for name, entry in load_registry().items() if entry.task != "ios_boundary")

    def defaultModel(self, inputNode=None) -> str:
        """The model an input is segmented with when none is chosen ("Automatic"): the default IOS
        model for a scan (model node), the default CBCT model for a volume or no input."""
        scan = inputNode is not None and inputNode.IsA("vtkMRMLModelNode")
        return self.defaultModels()["scan" if scan else "volume"]

    def defaultModels(self) -> dict[str, str]:
        """``{"scan": IOS default, "volume": CBCT default}`` registry names."""
        from ToothMCLCore.inference.cbct import DEFAULT_CBCT_MODEL
        from ToothMCLCore.inference.ios import DEFAULT_IOS_MODEL

        return {"scan": DEFAULT_IOS_MODEL, "volume": DEFAULT_CBCT_MODEL}

    def cudaAvailable(self) -> bool:
        """True if torch is installed and sees a CUDA GPU (imports torch)."""
        if not Dependencies.isImportable("torch"):
            return False
        import torch

        return bool(torch.cuda.is_available())

    # -- segmentation -----------------------------------------------------------------------
    def pipelineSummary(self, inputNode, cuda: bool | None = None, model: str = "") -> str:
        """One line for the panel: which pipeline and model this input runs, and a rough time estimate.

        ``model`` is the chosen registry name ("" for "Automatic": :meth:`defaultModel`).

        The estimate scales the figures measured by ``benchmarks/`` on a 2-core CPU (see
        :data:`CPU_SECONDS`) with the input's size; on a GPU it is divided by
        :data:`GPU_SPEEDUP`. It is a hint for the user, not a promise.
        """
        if inputNode is None:
            return ""
        if cuda is None:
            cuda = self.cudaAvailable()
        if inputNode.IsA("vtkMRMLModelNode"):
            polyData = inputNode.GetPolyData()
            vertices = polyData.GetNumberOfPoints() if polyData is not None else 0
            kind = f"Intraoral scan ({vertices:,} vertices): per-vertex FDI labels"
            seconds = CPU_SECONDS["ios_fixed"] + CPU_SECONDS["ios_per_100k_vertices"] * vertices / 1e5
        else:
            image = inputNode.GetImageData()
            voxels = 0 if image is None else int(np.prod(image.GetDimensions()))
            kind = f"CBCT volume ({voxels / 1e6:.0f} M voxels): one segment per tooth"
            seconds = CPU_SECONDS["cbct_fixed"] + CPU_SECONDS["cbct_per_mvoxel"] * voxels / 1e6
        where = "GPU" if cuda else "CPU"
        if cuda:
            seconds /= GPU_SPEEDUP
        return f"{kind} with {model or self.defaultModel(inputNode)}; about {_roughDuration(seconds)} on the {where}"

    def startSegmentation(self, inputNode, weights=None, model: str | None = None, device: str = "auto",
                          progress: ProgressFn | None = None,
                          cancel: threading.Event | None = None) -> SegmentationJob:
        """Start segmenting a volume (CBCT) or a model (IOS) on a worker thread.

        Call in the GUI thread; poll the job; call :meth:`finishSegmentation` when it is done.
        """
        return self._prepareJob(inputNode, weights, model, device, progress, cancel).start()

    def finishSegmentation(self, job: SegmentationJob):
        """Turn a finished job into nodes (GUI thread): a segmentation node, or the labelled model.

        Raises:
            the job's error (``CancelledError`` when cancelled, ``ToothMCLError`` for bad input).
        """
        if not job.done:
            raise RuntimeError("the segmentation job is still running; wait for it before finishing")
        if job.error is not None:
            raise job.error
        kind, node = job.context
        if node.GetScene() is None:
            from ToothMCLCore.errors import InvalidInputError

            raise InvalidInputError(f"{node.GetName()} was removed while it was being segmented; nothing was added")
        if kind == "model":
            labels = getattr(job.result, "labels", None)
            if labels is None:
                from ToothMCLCore.errors import ToothMCLError

                raise ToothMCLError("the IOS pipeline returned no per-vertex labels; update the ToothMCL extension")
            self.applyVertexLabels(node, labels)
            storeVertexPrediction(node, labels)
            if getattr(job.result, "tooth_probability", None) is not None:
                from .ClickTools import storeToothProbability

                storeToothProbability(node, job.result.tooth_probability)
            self.corrections.forget(node)
            setProvenance(node, getattr(job.result, "provenance", {}) or {})
            return node
        result = job.result
        provenance = dict(result.provenance)
        provenance["input"] = node.GetName()
        segmentationNode = createSegmentationNode(node.GetScene(), result.labels.array, node,
                                                  name=f"{node.GetName()} teeth", provenance=provenance)
        storePrediction(segmentationNode, result.labels.array)
        if getattr(result, "segmented", None) is not None:
            storeSegmentedTeeth(segmentationNode, result.segmented)
        return segmentationNode

    def segmentVolume(self, volumeNode, weights=None, model: str | None = None, device: str = "cpu",
                      progress: ProgressFn | None = None, cancel: threading.Event | None = None):
        """Segment a CBCT volume node in the calling thread; returns the new segmentation node."""
        if volumeNode is not None and volumeNode.IsA("vtkMRMLModelNode"):
            from ToothMCLCore.errors import InvalidInputError

            raise InvalidInputError(f"{volumeNode.GetName()} is a surface model; use segmentModel for scans")
        return self.finishSegmentation(self._prepareJob(volumeNode, weights, model, device, progress, cancel).run())

    def segmentModel(self, modelNode, weights=None, model: str | None = None, device: str = "cpu",
                     progress: ProgressFn | None = None, cancel: threading.Event | None = None):
        """Segment an intraoral scan (model node) in the calling thread; returns the labelled node."""
        return self.finishSegmentation(self._prepareJob(modelNode, weights, model, device, progress, cancel).run())

    def _prepareJob(self, inputNode, weights, model, device, progress, cancel) -> SegmentationJob:
        self.checkDependencies()
        from ToothMCLCore.errors import InvalidInputError

        if inputNode is None:
            raise InvalidInputError("no input is selected; select a CBCT volume or an intraoral scan")
        weights = str(weights) if weights else None
        device = str(getattr(device, "value", device) or "auto")
        if inputNode.IsA("vtkMRMLModelNode"):
            from ToothMCLCore.inference.ios import ios_predictor  # Point Transformer or SOFTooth, by the card

            mesh = surfaceMeshFromModelNode(inputNode)
            return SegmentationJob(self._work(ios_predictor, mesh, weights, model, device),
                                   progress, cancel, context=("model", inputNode))
        from ToothMCLCore.inference.cbct_nnunet import cbct_predictor  # ToothMCL model or nnU-Net folder

        volume = volumeFromNode(inputNode)  # GUI thread: the worker never touches MRML
        return SegmentationJob(self._work(cbct_predictor, volume, weights, model, device),
                               progress, cancel, context=("volume", inputNode))

    def _work(self, predictorClass, data, weights, model, device):
        """``predictorClass`` is a predictor class or a factory taking the same arguments."""
        def work(progress: ProgressFn, cancel: threading.Event):
            progress("loading", 0.0)
            key = (predictorClass.__name__, weights, model, device)
            if self._predictor is None or self._predictor[0] != key:
                self._predictor = (key, predictorClass(weights=weights, model=model, device=device))
            return self._predictor[1].predict(data, progress=progress, cancel=cancel)

        return work

    # -- intraoral scans --------------------------------------------------------------------
    def applyVertexLabels(self, modelNode, labelsPerVertex) -> None:
        """Store per-vertex FDI labels as point array ``FDI`` and colour the scan by them."""
        applyVertexLabels(modelNode, labelsPerVertex)

    def verticesInROI(self, modelNode, roiNode) -> np.ndarray:
        """Indices of the scan's vertices inside a markups ROI box (the region to relabel)."""
        return verticesInROI(modelNode, roiNode)

    def relabelVertices(self, modelNode, vertexIndices, target) -> list[dict]:
        """Give a region of a labelled scan the label ``target`` (FDI, or 0 = gingiva); undoable."""
        return self.corrections.relabelVertices(modelNode, vertexIndices, target)

    def applyClickTool(self, modelNode, tool: str, markupsNode, tooth=None, value=None) -> list[dict]:
        """Fix a labelled scan or a CBCT segmentation with the points of ``markupsNode`` as clicks
        (``add``, ``split``, ``refine`` of ``tooth``, ``brush`` with ``value``); undoable, clicks saved
        with the correction. Adding a tooth to a CBCT segmentation runs its model around the click
        (:meth:`clickModel`)."""
        model = None
        if modelNode is not None and not modelNode.IsA("vtkMRMLModelNode"):
            # add needs the model; refine uses it when it is at hand or when the segmentation kept the
            # network's teeth (the walk then follows the network's tooth probability as well as the
            # intensity, read from there), rather than loading it to run a window for one click
            kept = keptTeethKey(modelNode) is not None
            model = self.clickModel(modelNode) if tool == "add" or kept else self._loadedClickModel(modelNode)
            self._handKeptTeeth(modelNode, model)
        return self.corrections.applyClickTool(modelNode, tool, markupsNode, tooth=tooth, value=value, model=model)

    @staticmethod
    def _handKeptTeeth(segmentationNode, model) -> None:
        """Give ``model`` the network's teeth stored with ``segmentationNode``
        (:func:`~.SegmentDisplay.storeSegmentedTeeth`) unless it already keeps them: after a scene
        reload, or after it segmented another volume, its clicks then read the segmentation instead
        of running a window. Teeth of other weights than the model's are left alone."""
        key = keptTeethKey(segmentationNode)
        if key is None or not hasattr(model, "keep"):
            return
        held = getattr(model, "segmented", None)
        if held is not None and held.key == key:
            return
        kept = segmentedTeeth(segmentationNode)
        if kept is not None and kept.model_sha256 == getattr(getattr(model, "card", None), "sha256", None):
            model.keep(kept)

    def _loadedClickModel(self, segmentationNode):
        """The predictor this logic holds if it is the model that made ``segmentationNode`` (name
        and SHA-256 of its provenance), else None; never loads one."""
        provenance = getProvenance(segmentationNode)
        name, sha = provenance.get("model"), provenance.get("model_sha256")
        if self._predictor is None or not name:
            return None
        cached = self._predictor[1]
        cachedName = getattr(getattr(cached, "card", None), "name", getattr(cached, "name", None))
        cachedSha = getattr(getattr(cached, "card", None), "sha256", getattr(cached, "checkpoint_sha256", None))
        if hasattr(cached, "window_probabilities") and cachedName == name and (not sha or cachedSha == sha):
            return cached
        return None

    def clickModel(self, segmentationNode):
        """The CBCT model that made ``segmentationNode``, loaded once and kept: the one this logic
        segmented with if it is the same (name and SHA-256 of its provenance), else the model its
        provenance names (a registry name or an nnU-Net folder), loaded now. None when the
        provenance names none or it cannot be loaded (the add tool then says to segment first)."""
        from ToothMCLCore.errors import ToothMCLError
        from ToothMCLCore.inference.cbct_nnunet import cbct_predictor

        cached = self._loadedClickModel(segmentationNode)
        if cached is not None:
            return cached
        provenance = getProvenance(segmentationNode)
        name = provenance.get("model")
        weights = provenance.get("model_folder") or None
        if not (weights or name):
            return None
        key = ("cbct_predictor", weights, None if weights else name, "cpu")
        try:
            # built in the background: a click that reads the kept teeth does not wait for the network
            predictor = cbct_predictor(weights=weights, model=None if weights else name, device="cpu",
                                       load_in_background=True)
        except ToothMCLError as exc:
            logger.warning("could not load %s for the click tools: %s", weights or name, exc)
            return None
        self._predictor = (key, predictor)
        return predictor

    def createToothModels(self, modelNode) -> list:
        """One model node per tooth of a labelled scan, named and coloured by FDI number."""
        return createToothModels(modelNode)

    # -- corrections ------------------------------------------------------------------------
    def applyCorrection(self, segmentationNode, op: str, tooth=None, target=None, quadrant=None,
                        step=None) -> list[dict]:
        """Apply ``reassign``/``swap``/``merge``/``delete``/``renumber``; returns the diff entries.

        The subject is a segmentation node (CBCT) or a labelled scan (model node).

        ``reassign`` tooth -> target, ``swap`` tooth <-> target, ``merge`` tooth into target,
        ``delete`` tooth, ``renumber`` every tooth of ``quadrant`` by ``step`` (+1/-1).
        """
        return self.corrections.apply(segmentationNode, op, tooth=tooth, target=target,
                                      quadrant=quadrant, step=step)

    def undoCorrection(self, segmentationNode) -> list[dict]:
        """Undo the last correction of this segmentation exactly; returns its diff entries."""
        return self.corrections.undo(segmentationNode)

    def canUndoCorrection(self, segmentationNode) -> bool:
        return self.corrections.canUndo(segmentationNode)

    def correctionDiff(self, segmentationNode) -> list[dict]:
        """All diff entries ``{op, from, to, voxels}`` recorded on this segmentation."""
        return self.corrections.diff(segmentationNode)

    def teethTable(self, node) -> list:
        """Rows (``ToothRow``) of a segmentation node (volumes in mm^3) or a labelled scan (mm^2)."""
        if node is None:
            return []
        if node.IsA("vtkMRMLModelNode"):
            return teethTableFromModel(node)
        return teethTableFromSegmentation(node)

    def correctionStoreStatus(self) -> tuple[bool, str]:
        """(available, message): whether ``ToothMCLCore.corrections.CorrectionStore`` can be imported."""
        try:
            from ToothMCLCore.corrections import CorrectionStore  # noqa: F401
        except ImportError:
            return False, STORE_NOT_AVAILABLE
        return True, "Save the prediction, the corrected segmentation and the list of corrections"

    def inputNodeOf(self, node):
        """The input a result belongs to: a scan (model node) itself, a segmentation's input volume."""
        if node is None:
            return None
        return node if node.IsA("vtkMRMLModelNode") else node.GetNodeReference(INPUT_ROLE)

    def patientIdOf(self, node) -> str:
        """The DICOM patient ID of a segmentation's input volume, or of a scan, when Slicer's DICOM
        import recorded one in the subject hierarchy; "" otherwise (the user must enter it)."""
        if node is None:
            return ""
        return _dicomPatientId(self.inputNodeOf(node)) or _dicomPatientId(node)

    def saveCorrection(self, segmentationNode, store_path, annotator: str, note: str = "",
                       case_id: str | None = None, patient_id: str | None = None):
        """Save (prediction, corrected, diff, provenance) into the corrections store.

        Args:
            segmentationNode: a segmentation made by :meth:`segmentVolume`, or a scan labelled by
                :meth:`segmentModel` (possibly corrected).
            store_path: the store folder (created if needed).
            annotator: who corrected it.
            note: free text.
            case_id: defaults to the input's node name.
            patient_id: the patient, shared by both jaws and the CBCT of one person, so that
                dataset splits never put one patient in training and test. None takes the
                DICOM patient ID of the input (:meth:`patientIdOf`); without one, saving is
                refused: a case id in its place would make every scan a patient of its own.

        Returns:
            the :class:`~ToothMCLCore.corrections.records.Revision` saved.

        Raises:
            ToothMCLError: the store cannot be imported, no store or annotator, or the
                segmentation was not made by ToothMCL in this scene.
        """
        from ToothMCLCore.errors import InvalidInputError, ToothMCLError

        try:
            from ToothMCLCore.corrections import CorrectionStore
        except ImportError:
            raise ToothMCLError(STORE_NOT_AVAILABLE) from None
        if segmentationNode is None:
            raise InvalidInputError("nothing to save: segment a CBCT volume or a scan first")
        if not str(store_path or "").strip():
            raise InvalidInputError("choose a corrections store folder before saving")
        if not str(annotator or "").strip():
            raise InvalidInputError("enter the annotator's name before saving a correction")
        scan = segmentationNode.IsA("vtkMRMLModelNode")
        prediction = vertexPrediction(segmentationNode) if scan else predictionLabels(segmentationNode)
        if prediction is None:
            raise InvalidInputError(
                f"{segmentationNode.GetName()} has no stored prediction (it was not made by ToothMCL in "
                f"this scene); segment the {'scan' if scan else 'volume'} with ToothMCL, correct it, then save"
            )
        patient_id = str(patient_id or "").strip() or self.patientIdOf(segmentationNode)
        if not patient_id:
            raise InvalidInputError(
                "enter the patient ID before saving: both jaws and the CBCT of one patient must share it, so "
                "that training and test data never split a patient (DICOM inputs fill it in)")
        provenance = getProvenance(segmentationNode)
        diff = self.correctionDiff(segmentationNode)
        provenance.pop("corrections", None)
        extra = {"patient_id": patient_id}
        if scan:
            inputNode = segmentationNode
            inputPath = nodeFilePath(inputNode)
            labels = {
                "prediction": prediction, "corrected": currentLabels(segmentationNode), "geometry": None,
                "modality": "ios", "jaw": provenance.get("jaw") or None,
                "vertices": modelPointsWorld(segmentationNode),
                "input_sha256": _fileSha256(inputPath) or _pointsSha256(inputNode),
            }
        else:
            from ToothMCLCore.types import Geometry

            corrected, ijkToRas = labelsFromSegmentation(segmentationNode)
            inputNode = segmentationNode.GetNodeReference(INPUT_ROLE)
            inputPath = nodeFilePath(inputNode)
            labels = {"prediction": prediction, "corrected": corrected,
                      "geometry": Geometry.from_ijk_to_ras(ijkToRas),
                      "input_sha256": _inputSha256(inputNode, inputPath)}
            if not inputPath and inputNode is not None and inputNode.GetImageData() is not None:
                # loaded from DICOM or made in memory: the store keeps its voxels, so the case can
                # be exported as training data later
                labels["input_volume"] = volumeFromNode(inputNode)
        store = CorrectionStore(store_path, create=True)
        return store.save(
            case_id=case_id or (inputNode.GetName() if inputNode is not None else segmentationNode.GetName()),
            input_path=inputPath, model=provenance, annotator=str(annotator).strip(),
            note=str(note or ""), diff=diff, **labels, **extra,
        )


def _dicomPatientId(node) -> str:
    """The ``DICOM.PatientID`` attribute of ``node``'s subject hierarchy item or of an item above
    it (Slicer's DICOM import sets it on the patient item), else ""."""
    import slicer

    if node is None or node.GetScene() is None:
        return ""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    if shNode is None:
        return ""
    item = shNode.GetItemByDataNode(node)
    root = shNode.GetSceneItemID()
    while item and item != root:
        value = shNode.GetItemAttribute(item, "DICOM.PatientID")
        if value:
            return str(value).strip()
        item = shNode.GetItemParent(item)
    return ""


def _pointsSha256(modelNode) -> str:
    """SHA-256 of a scan's float32 vertex positions, for a scan not loaded from a file."""
    import slicer

    points = np.ascontiguousarray(slicer.util.arrayFromModelPoints(modelNode), dtype=np.float32)
    return hashlib.sha256(points.tobytes()).hexdigest()


def _fileSha256(path: str) -> str:
    if path and os.path.isfile(path):
        from ToothMCLCore.models.checkpoint import sha256_of

        return sha256_of(path)
    return ""


def _inputSha256(inputNode, inputPath: str) -> str:
    """SHA-256 of the input file, or of the voxel bytes when the volume was not loaded from a file."""
    if inputPath and os.path.isfile(inputPath):
        return _fileSha256(inputPath)
    if inputNode is None or inputNode.GetImageData() is None:
        return ""
    import slicer

    return hashlib.sha256(np.ascontiguousarray(slicer.util.arrayFromVolume(inputNode)).tobytes()).hexdigest()

