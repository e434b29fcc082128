"""FDI label maps <-> segmentation nodes: one named, coloured, coded segment per tooth.

A tooth segment is named ``fdi.tooth(n).label`` ("36 lower left first molar"), has label value
n, the colour of :mod:`ToothMCLCore.fdi` and a terminology entry carrying its SNOMED CT code
(:func:`ToothMCLCore.io.segnrrd.terminology_entry`); metal is segment 99. All tooth segments
share one binary-labelmap layer on the reference geometry (the input volume's grid), so saving
the node as ``.seg.nrrd`` writes FDI numbers as voxel values. Provenance lives in node attributes
``ToothMCL.<key>``.

Label arrays are ``(K, J, I)`` uint8 on the reference geometry; matrices are IJK-to-RAS.
"""

from __future__ import annotations

import logging
import weakref

import numpy as np
import slicer
import vtk

from .VolumeConversion import arrayFromImage, arrayFromVTKMatrix, orientedImageFromLabels, vtkMatrixFromArray

logger = logging.getLogger(__name__)

#: node reference roles from a segmentation to the nodes it was made from
PREDICTION_ROLE = "ToothMCLPrediction"
INPUT_ROLE = "ToothMCLInput"
#: hidden volume nodes of the network's teeth on the segmented crop, for the click tools
KEPT_PROBABILITY_ROLE = "ToothMCLKeptToothProbability"
KEPT_CLASS_ROLE = "ToothMCLKeptToothClass"


def _binaryLabelmapName() -> str:
    return slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


def attributePrefix() -> str:
    from ToothMCLCore.io.segnrrd import ATTRIBUTE_PREFIX

    return ATTRIBUTE_PREFIX


def fdiOfSegment(segment) -> int | None:
    """Label value of a segment: its FDI number (or 99 metal, or a structure's value such as the
    jaws of an nnU-Net model), from its name, else its terminology's code."""
    from ToothMCLCore.io.segnrrd import label_value_of_segment

    return label_value_of_segment(segment.GetName() or "", segment.GetTerminology() or "")


def toothSegments(segmentationNode) -> list[tuple[str, int]]:
    """``(segmentId, fdi)`` of every segment that names a tooth or metal, in segment order."""
    segmentation = segmentationNode.GetSegmentation()
    found = []
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        value = fdiOfSegment(segmentation.GetSegment(segmentId))
        if value is not None:
            found.append((segmentId, value))
    return found


def _referenceImage(segmentationNode):
    """Empty ``vtkOrientedImageData`` (no voxels allocated) with the reference geometry and extent."""
    from ToothMCLCore.errors import InvalidInputError

    segmentation = segmentationNode.GetSegmentation()
    text = segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    geometryImage = slicer.vtkOrientedImageData()
    if not text or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, geometryImage, False):
        raise InvalidInputError(
            f"segmentation {segmentationNode.GetName()} has no reference geometry; set it to the "
            "CBCT volume in the Segmentations module (or segment the volume again)"
        )
    return geometryImage


def referenceGeometry(segmentationNode) -> tuple[np.ndarray, tuple[int, int, int]]:
    """IJK-to-RAS matrix and ``(K, J, I)`` shape of a segmentation's reference geometry.

    Raises:
        InvalidInputError: the segmentation has no reference geometry.
    """
    geometryImage = _referenceImage(segmentationNode)
    matrix = vtk.vtkMatrix4x4()
    geometryImage.GetImageToWorldMatrix(matrix)
    ijkToRas = arrayFromVTKMatrix(matrix)
    extent = geometryImage.GetExtent()
    if extent[0] != 0 or extent[2] != 0 or extent[4] != 0:  # fold a non-zero extent start into the origin
        ijkToRas[:3, 3] = (ijkToRas @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return ijkToRas, shape


def _layerOnReference(layer, segmentationNode):
    """``(K, J, I)`` array of one labelmap layer resampled (nearest) onto the reference geometry.

    The array may share memory with the layer: read it, do not modify it.
    """
    _, shape = referenceGeometry(segmentationNode)
    reference = _referenceImage(segmentationNode)
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            layer, reference, resampled, False, False):
        raise RuntimeError(f"cannot resample a layer of {segmentationNode.GetName()} to its reference geometry")
    array = arrayFromImage(resampled)
    if array.shape != tuple(shape):
        raise RuntimeError(f"resampled layer has shape {array.shape}, expected {tuple(shape)}")
    return array


def segmentLayers(segmentationNode):
    """Yield ``(layerArray, {segmentId: labelValue})`` for every binary-labelmap layer.

    ``layerArray`` is ``(K, J, I)`` on the reference geometry; read it, do not modify it.
    """
    from ToothMCLCore.errors import InvalidInputError

    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetNumberOfSegments() and segmentation.GetSourceRepresentationName() != _binaryLabelmapName():
        raise InvalidInputError(
            f"segmentation {segmentationNode.GetName()} is stored as "
            f"{segmentation.GetSourceRepresentationName()}; convert its source representation to "
            "binary labelmap in the Segmentations module"
        )
    for layerIndex in range(segmentation.GetNumberOfLayers()):
        layer = segmentation.GetLayerDataObject(layerIndex)
        segmentIds = segmentation.GetSegmentIDsForLayer(layerIndex)
        values = {sid: segmentation.GetSegment(sid).GetLabelValue() for sid in segmentIds}
        if layer is None or layer.GetPointData().GetScalars() is None:
            continue
        yield _layerOnReference(layer, segmentationNode), values


def labelsFromSegmentation(segmentationNode) -> tuple[np.ndarray, np.ndarray]:
    """FDI label map of a segmentation: ``((K, J, I) uint8, IJK-to-RAS (4, 4))``.

    Each tooth segment paints its FDI number (from its name, else its SNOMED code); segments
    without an FDI number are ignored. Where segments overlap, the later segment wins.
    """
    ijkToRas, shape = referenceGeometry(segmentationNode)
    labels = np.zeros(shape, dtype=np.uint8)
    teeth = dict(toothSegments(segmentationNode))
    for layerArray, values in segmentLayers(segmentationNode):
        lut = np.zeros(max(int(layerArray.max()), max(values.values(), default=0)) + 1, dtype=np.uint8)
        for segmentId, labelValue in values.items():
            if segmentId in teeth and labelValue > 0:
                lut[labelValue] = teeth[segmentId]
        painted = lut[layerArray]
        overlap = np.count_nonzero((painted > 0) & (labels > 0))
        if overlap:
            logger.warning("%s: %d voxels belong to several tooth segments; the later one wins",
                           segmentationNode.GetName(), overlap)
        np.copyto(labels, painted, where=painted > 0)
    return labels, ijkToRas


def _newToothSegment(value: int, image):
    from ToothMCLCore import fdi
    from ToothMCLCore.io.segnrrd import segment_name, terminology_entry

    segment = slicer.vtkSegment()
    segment.SetName(segment_name(value))
    segment.SetNameAutoGenerated(False)
    segment.SetColor(*fdi.label_color(value))
    segment.SetColorAutoGenerated(False)
    segment.SetTerminology(terminology_entry(value))
    segment.SetLabelValue(int(value))
    segment.AddRepresentation(_binaryLabelmapName(), image)
    return segment


def setToothLabels(segmentationNode, labels: np.ndarray) -> None:
    """Make the tooth segments of a segmentation show exactly an FDI label map.

    Teeth that stay keep their segment (ID, display settings); teeth that appear get a new
    segment ``Segment_<fdi>``; teeth that vanish lose theirs. Segments that are not teeth are left
    alone. Afterwards the tooth segments share one layer with label value = FDI number, ordered
    by FDI number before the other segments.

    Raises:
        InvalidInputError: the label map does not fit the reference geometry, or holds values that
            are neither FDI numbers nor 99.
    """
    from ToothMCLCore import fdi, structures
    from ToothMCLCore.errors import InvalidInputError

    ijkToRas, shape = referenceGeometry(segmentationNode)
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise InvalidInputError(
            f"label map has shape (K, J, I) {labels.shape} but the segmentation's reference geometry "
            f"is {tuple(shape)}; labels must be on the input volume's grid"
        )
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=256)
    present = [int(v) for v in np.nonzero(counts)[0] if v != 0]
    bad = [v for v in present if not fdi.is_valid_fdi(v) and v != fdi.METAL_LABEL and not structures.is_structure(v)]
    if bad:
        raise InvalidInputError(
            f"label values {bad[:10]} are neither FDI tooth numbers, {fdi.METAL_LABEL} (metal) nor structures; "
            "convert network class indices with ToothMCLCore.fdi.class_index_to_fdi"
        )

    segmentation = segmentationNode.GetSegmentation()
    surfaceName = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    hadSurface = segmentation.ContainsRepresentation(surfaceName)
    existing: dict[int, list[str]] = {}
    for segmentId, value in toothSegments(segmentationNode):
        existing.setdefault(value, []).append(segmentId)
    oldLayers = [segmentation.GetLayerDataObject(n) for n in range(segmentation.GetNumberOfLayers())]

    image = orientedImageFromLabels(labels, ijkToRas)
    wasModifying = segmentationNode.StartModify()
    try:
        for value, segmentIds in existing.items():
            for segmentId in segmentIds[0 if value not in present else 1:]:
                segmentation.RemoveSegment(segmentId)  # vanished teeth and duplicates of a number
        for value in present:
            if value in existing:
                segment = segmentation.GetSegment(existing[value][0])
                names: list[str] = []
                segment.GetContainedRepresentationNames(names)
                for name in names:
                    if name != _binaryLabelmapName():
                        segment.RemoveRepresentation(name)
                segment.SetLabelValue(value)
                segment.AddRepresentation(_binaryLabelmapName(), image)
            else:
                segmentId = f"Segment_{value}"
                if segmentation.GetSegment(segmentId) is not None:
                    segmentId = segmentation.GenerateUniqueSegmentID(segmentId)
                segmentation.AddSegment(_newToothSegment(value, image), segmentId)
        _orderTeethFirst(segmentationNode)
        _clearOrphanVoxels(segmentation, oldLayers)
    finally:
        segmentationNode.EndModify(wasModifying)
    if hadSurface:
        segmentationNode.CreateClosedSurfaceRepresentation()


def _orderTeethFirst(segmentationNode) -> None:
    segmentation = segmentationNode.GetSegmentation()
    teeth = sorted(toothSegments(segmentationNode), key=lambda item: item[1])
    for index, (segmentId, _) in enumerate(teeth):
        if segmentation.GetSegmentIndex(segmentId) != index:
            segmentation.SetSegmentIndex(segmentId, index)


def _clearOrphanVoxels(segmentation, oldLayers) -> None:
    """Zero voxels of old layers that no remaining segment of that layer owns any more."""
    for layerIndex in range(segmentation.GetNumberOfLayers()):
        layer = segmentation.GetLayerDataObject(layerIndex)
        if not any(layer is old for old in oldLayers) or layer.GetPointData().GetScalars() is None:
            continue
        keep = [segmentation.GetSegment(sid).GetLabelValue() for sid in segmentation.GetSegmentIDsForLayer(layerIndex)]
        array = arrayFromImage(layer)
        orphan = (array != 0) & ~np.isin(array, keep)
        if orphan.any():
            array[orphan] = 0
            layer.Modified()


def createSegmentationNode(scene, labels: np.ndarray, referenceVolumeNode, name: str = "Teeth",
                           provenance: dict | None = None):
    """New segmentation node with one segment per tooth of ``labels``, on ``referenceVolumeNode``'s grid.

    The node gets the volume's parent transform (the labels are in the volume's own RAS frame),
    a display node, and provenance attributes ``ToothMCL.<key>``.
    """
    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    segmentationNode.SetNodeReferenceID(INPUT_ROLE, referenceVolumeNode.GetID())
    segmentationNode.SetAndObserveTransformNodeID(referenceVolumeNode.GetTransformNodeID())
    setToothLabels(segmentationNode, labels)
    setProvenance(segmentationNode, provenance or {})
    return segmentationNode


def storePrediction(segmentationNode, labels: np.ndarray) -> None:
    """Keep the network's label map in a hidden label-map node referenced by the segmentation.

    Corrections are saved as (prediction, corrected) pairs; the prediction must survive edits.
    """
    ijkToRas, _ = referenceGeometry(segmentationNode)
    _storeHiddenVolume(segmentationNode, PREDICTION_ROLE, "vtkMRMLLabelMapVolumeNode", "prediction", labels, ijkToRas)


#: the hidden volumes a segmentation references (they go when it goes: :func:`removeHiddenWithSegmentations`)
HIDDEN_ROLES = (PREDICTION_ROLE, KEPT_PROBABILITY_ROLE, KEPT_CLASS_ROLE)
_watchedScenes = weakref.WeakSet()


def removeHiddenWithSegmentations(scene) -> None:
    """From now on, when a node of ``scene`` that references hidden volumes of ours (the network's
    label map, its kept teeth) is removed, remove them too: they are the segmentation's working
    data, tens of MB, and nothing else refers to them (otherwise they would be saved with every
    scene after the segmentation was deleted). Once per scene; not while the scene closes."""
    if scene is None or scene in _watchedScenes:
        return

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def aboutToRemove(caller, event, node):
        if node is None or caller is None or caller.IsClosing():  # no caller: the scene is being deleted
            return
        for role in HIDDEN_ROLES:
            hidden = node.GetNodeReference(role) if node.IsA("vtkMRMLSegmentationNode") else None
            if hidden is not None and hidden.GetHideFromEditors():
                caller.RemoveNode(hidden)

    scene.AddObserver(scene.NodeAboutToBeRemovedEvent, aboutToRemove)
    _watchedScenes.add(scene)


def _storeHiddenVolume(segmentationNode, role: str, className: str, what: str, array, ijkToRas):
    """The hidden volume node the segmentation references as ``role`` (made, named after the
    segmentation and ``what``, if there is none) holding ``array`` as uint8 on ``ijkToRas``."""
    node = segmentationNode.GetNodeReference(role)
    if node is None:
        removeHiddenWithSegmentations(segmentationNode.GetScene())
        node = segmentationNode.GetScene().AddNewNodeByClass(className, f"{segmentationNode.GetName()} {what}")
        node.SetHideFromEditors(True)
        segmentationNode.SetNodeReferenceID(role, node.GetID())
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array, dtype=np.uint8))
    node.SetIJKToRASMatrix(vtkMatrixFromArray(ijkToRas))
    return node


def predictionLabels(segmentationNode) -> np.ndarray | None:
    """The stored network label map of a segmentation (a copy), or None."""
    node = segmentationNode.GetNodeReference(PREDICTION_ROLE)
    if node is None or node.GetImageData() is None:
        return None
    return np.array(slicer.util.arrayFromVolume(node), dtype=np.uint8, copy=True)


def storeSegmentedTeeth(segmentationNode, segmented) -> None:
    """Keep the network's teeth on the segmented crop (a
    :class:`~ToothMCLCore.inference.cbct_cache.SegmentedTeeth`) in two hidden volume nodes
    referenced by the segmentation, saved with the scene: the tooth probability in 1/255 steps and
    the most probable tooth class, uint8 on the crop's grid. The volume's digest and the model's
    SHA-256 are attributes of the probability node. After a scene reload the click tools read their
    windows from there (:func:`segmentedTeeth`) instead of running the network."""
    probability, toothClass = segmented.quantised()
    matrix = segmented.geometry.ijk_to_ras
    node = _storeHiddenVolume(segmentationNode, KEPT_PROBABILITY_ROLE, "vtkMRMLScalarVolumeNode", "tooth probability",
                              probability, matrix)
    _storeHiddenVolume(segmentationNode, KEPT_CLASS_ROLE, "vtkMRMLScalarVolumeNode", "tooth class", toothClass, matrix)
    node.SetAttribute(f"{attributePrefix()}volume_key", segmented.key)
    node.SetAttribute(f"{attributePrefix()}model_sha256", segmented.model_sha256)


def segmentedTeeth(segmentationNode):
    """The kept teeth that :func:`storeSegmentedTeeth` stored with the segmentation (a
    :class:`~ToothMCLCore.inference.cbct_cache.SegmentedTeeth`), or None: none stored, or their
    nodes emptied or of different grids (the click tools then run the network)."""
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.inference.cbct_cache import SegmentedTeeth
    from ToothMCLCore.types import Geometry

    probabilityNode = segmentationNode.GetNodeReference(KEPT_PROBABILITY_ROLE)
    classNode = segmentationNode.GetNodeReference(KEPT_CLASS_ROLE)
    if probabilityNode is None or classNode is None or probabilityNode.GetImageData() is None \
            or classNode.GetImageData() is None:
        return None
    key = probabilityNode.GetAttribute(f"{attributePrefix()}volume_key")
    if not key:
        return None
    matrices = []
    for node in (probabilityNode, classNode):
        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        matrices.append(arrayFromVTKMatrix(m))
    if not np.allclose(matrices[0], matrices[1], atol=1e-6):
        logger.warning("the kept tooth probability and class of %s lie on different grids; ignoring them",
                       segmentationNode.GetName())
        return None
    try:
        return SegmentedTeeth.from_quantised(
            key, Geometry.from_ijk_to_ras(matrices[0]), slicer.util.arrayFromVolume(probabilityNode),
            slicer.util.arrayFromVolume(classNode),
            probabilityNode.GetAttribute(f"{attributePrefix()}model_sha256") or "")
    except InvalidInputError as exc:
        logger.warning("ignoring the kept teeth of %s: %s", segmentationNode.GetName(), exc)
        return None


def keptTeethKey(segmentationNode) -> str | None:
    """The volume digest of the kept teeth stored with the segmentation, or None (cheap: no voxels read)."""
    node = segmentationNode.GetNodeReference(KEPT_PROBABILITY_ROLE)
    return (node.GetAttribute(f"{attributePrefix()}volume_key") or None) if node is not None else None


def setProvenance(node, provenance: dict) -> None:
    """Store each item as node attribute ``ToothMCL.<key>`` (string value)."""
    prefix = attributePrefix()
    for key, value in provenance.items():
        node.SetAttribute(prefix + str(key), str(value))


def getProvenance(node) -> dict[str, str]:
    """All ``ToothMCL.<key>`` attributes of a node, keyed without the prefix."""
    prefix = attributePrefix()
    return {name[len(prefix):]: node.GetAttribute(name)
            for name in (node.GetAttributeNames() or ()) if name.startswith(prefix)}
