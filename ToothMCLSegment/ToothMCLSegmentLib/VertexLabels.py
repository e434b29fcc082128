"""Per-vertex FDI labels of an intraoral scan (model node): the ``FDI`` point array and its colours.

Label values: 0 gingiva, FDI numbers for teeth, 99 metal. The model is coloured through a shared
colour table ``ToothMCL FDI`` indexed by label value, with the colours of
:mod:`ToothMCLCore.fdi`, so that the scan and a CBCT segmentation of the same patient agree.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

FDI_ARRAY_NAME = "FDI"
PREDICTION_ARRAY_NAME = "FDI prediction"
#: attribute of a per-tooth model node: the ID of the scan it was cut from
TOOTH_OF_ATTRIBUTE = "ToothMCL.toothOf"
COLOR_TABLE_NAME = "ToothMCL FDI"
COLOR_TABLE_SINGLETON = "ToothMCLFDIColors"
GINGIVA_COLOR = (0.93, 0.66, 0.66)


def fdiColorTableNode(scene):
    """The scene's ``ToothMCL FDI`` colour table (made once): entry n = label value n, 0..99."""
    from ToothMCLCore import fdi

    node = scene.GetSingletonNode(COLOR_TABLE_SINGLETON, "vtkMRMLColorTableNode")
    if node is not None:
        return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(COLOR_TABLE_NAME)
    node.SetSingletonTag(COLOR_TABLE_SINGLETON)
    node.SetTypeToUser()
    node.SetNumberOfColors(fdi.METAL_LABEL + 1)
    for value in range(fdi.METAL_LABEL + 1):
        if value == 0:
            node.SetColor(value, "gingiva", *GINGIVA_COLOR, 1.0)
        elif fdi.is_valid_fdi(value) or value == fdi.METAL_LABEL:
            node.SetColor(value, fdi.tooth(value).label if value != fdi.METAL_LABEL else "99 metal",
                          *fdi.label_color(value), 1.0)
        else:  # not a label value: transparent, and marked undefined where Slicer supports it
            node.SetColor(value, "", 0.0, 0.0, 0.0, 0.0)
            if hasattr(node, "SetColorDefined"):
                node.SetColorDefined(value, False)
    scene.AddNode(node)
    return node


def applyVertexLabels(modelNode, labelsPerVertex) -> None:
    """Store one FDI label per vertex as point array ``FDI`` and colour the model by it.

    Args:
        modelNode: the scan.
        labelsPerVertex: ``(N,)`` integers for the N vertices: 0 gingiva, FDI numbers, 99 metal.

    Raises:
        InvalidInputError: wrong length, or values that are not 0, FDI numbers or 99.
    """
    from ToothMCLCore import fdi
    from ToothMCLCore.errors import InvalidInputError

    polyData = modelNode.GetPolyData() if modelNode is not None else None
    if polyData is None:
        raise InvalidInputError("the model has no surface; load an intraoral scan first")
    labels = np.asarray(labelsPerVertex).ravel()
    if labels.shape[0] != polyData.GetNumberOfPoints():
        raise InvalidInputError(
            f"got {labels.shape[0]} labels for a scan with {polyData.GetNumberOfPoints()} vertices; "
            "give exactly one label per vertex"
        )
    values = {int(v) for v in np.unique(labels)}
    bad = sorted(v for v in values if v not in (0, fdi.METAL_LABEL) and not fdi.is_valid_fdi(v))
    if bad:
        raise InvalidInputError(
            f"vertex labels {bad[:10]} are not FDI numbers; use 0 for gingiva, 11-48 (51-85) for teeth"
        )
    array = numpy_support.numpy_to_vtk(labels.astype(np.int32), deep=True, array_type=vtk.VTK_INT)
    array.SetName(FDI_ARRAY_NAME)
    pointData = polyData.GetPointData()
    pointData.RemoveArray(FDI_ARRAY_NAME)
    pointData.AddArray(array)
    polyData.Modified()

    modelNode.CreateDefaultDisplayNodes()
    display = modelNode.GetDisplayNode()
    colors = fdiColorTableNode(modelNode.GetScene())
    display.SetActiveScalar(FDI_ARRAY_NAME, vtk.vtkAssignAttribute.POINT_DATA)
    display.SetAndObserveColorNodeID(colors.GetID())
    display.SetScalarRangeFlag(slicer.vtkMRMLDisplayNode.UseColorNodeScalarRange)
    display.SetScalarVisibility(True)


def vertexLabels(modelNode) -> np.ndarray | None:
    """``(N,)`` int32 copy of the model's ``FDI`` point array, or None when it has none."""
    polyData = modelNode.GetPolyData() if modelNode is not None else None
    array = polyData.GetPointData().GetArray(FDI_ARRAY_NAME) if polyData is not None else None
    return None if array is None else numpy_support.vtk_to_numpy(array).astype(np.int32)


def setVertexLabels(modelNode, labelsPerVertex) -> None:
    """Replace the ``FDI`` values of a labelled scan in place (corrections, undo)."""
    polyData = modelNode.GetPolyData()
    array = polyData.GetPointData().GetArray(FDI_ARRAY_NAME) if polyData is not None else None
    if array is None:
        applyVertexLabels(modelNode, labelsPerVertex)
        return
    numpy_support.vtk_to_numpy(array)[:] = np.asarray(labelsPerVertex, dtype=np.int32).ravel()
    array.Modified()
    polyData.Modified()
    modelNode.Modified()


def storeVertexPrediction(modelNode, labelsPerVertex) -> None:
    """Keep the network's per-vertex labels as point array ``FDI prediction``.

    Corrections are saved as (prediction, corrected) pairs, so the prediction must survive
    edits of ``FDI``; as a point array it is also saved with the model (``.vtk``/``.vtp``).
    """
    storePointArray(modelNode, PREDICTION_ARRAY_NAME, np.asarray(labelsPerVertex, dtype=np.int32), vtk.VTK_INT)


def storePointArray(modelNode, name: str, values: np.ndarray, arrayType: int) -> None:
    """Put ``values`` (one per vertex) on a model as point array ``name``, replacing one of that name."""
    array = numpy_support.numpy_to_vtk(np.ascontiguousarray(values).ravel(), deep=True, array_type=arrayType)
    array.SetName(name)
    pointData = modelNode.GetPolyData().GetPointData()
    pointData.RemoveArray(name)
    pointData.AddArray(array)


def vertexPrediction(modelNode) -> np.ndarray | None:
    """``(N,)`` int32 copy of the stored network prediction of a scan, or None."""
    polyData = modelNode.GetPolyData() if modelNode is not None else None
    array = polyData.GetPointData().GetArray(PREDICTION_ARRAY_NAME) if polyData is not None else None
    return None if array is None else numpy_support.vtk_to_numpy(array).astype(np.int32)


def modelPointsWorld(modelNode) -> np.ndarray:
    """``(N, 3)`` float64 vertex positions in world (RAS) coordinates, through a linear parent transform."""
    points = np.array(slicer.util.arrayFromModelPoints(modelNode), dtype=np.float64)
    transformNode = modelNode.GetParentTransformNode()
    if transformNode is not None:
        if not transformNode.IsTransformToWorldLinear():
            from ToothMCLCore.errors import InvalidInputError

            raise InvalidInputError(f"{modelNode.GetName()} is under a non-linear transform; harden it first")
        matrix = vtk.vtkMatrix4x4()
        transformNode.GetMatrixTransformToWorld(matrix)
        m = slicer.util.arrayFromVTKMatrix(matrix)
        points = points @ m[:3, :3].T + m[:3, 3]
    return points


def verticesInROI(modelNode, roiNode) -> np.ndarray:
    """Indices (int64, ascending) of the scan's vertices inside a markups ROI box (world coordinates).

    Follows the ROI's rotation (its object-to-world matrix) and its "inside out" flag, as
    ``vtkMRMLMarkupsROINode.IsPointInROIWorld`` does, but for all vertices at once.
    """
    from ToothMCLCore.errors import InvalidInputError

    if roiNode is None or not roiNode.IsA("vtkMRMLMarkupsROINode"):
        raise InvalidInputError("select a markups ROI (box) around the vertices to relabel")
    points = modelPointsWorld(modelNode)
    toObject = np.linalg.inv(slicer.util.arrayFromVTKMatrix(roiNode.GetObjectToWorldMatrix()))
    local = points @ toObject[:3, :3].T + toObject[:3, 3]
    inside = np.all(np.abs(local) <= np.asarray(roiNode.GetSize()) / 2.0, axis=1)
    if roiNode.GetInsideOut():
        inside = ~inside
    return np.flatnonzero(inside)


def createToothModels(modelNode) -> list:
    """One model node per labelled tooth of a scan (cells whose three vertices share the label).

    Named like the CBCT segments (``fdi.tooth(n).label``), coloured from the FDI table, with
    attribute ``ToothMCL.fdi``. Earlier tooth models made from the same scan are replaced.
    Returns the new nodes sorted by FDI number.
    """
    from ToothMCLCore import fdi

    labels = vertexLabels(modelNode)
    if labels is None:
        from ToothMCLCore.errors import InvalidInputError

        raise InvalidInputError(f"{modelNode.GetName()} has no FDI labels; segment the scan first")
    scene = modelNode.GetScene()
    for node in list(scene.GetNodesByClass("vtkMRMLModelNode")):
        if node.GetAttribute(TOOTH_OF_ATTRIBUTE) == modelNode.GetID():
            scene.RemoveNode(node)
    nodes = []
    for value in sorted(int(v) for v in np.unique(labels) if fdi.is_valid_fdi(int(v))):
        threshold = vtk.vtkThreshold()
        threshold.SetInputData(modelNode.GetPolyData())
        threshold.SetInputArrayToProcess(0, 0, 0, vtk.vtkDataObject.FIELD_ASSOCIATION_POINTS, FDI_ARRAY_NAME)
        threshold.SetLowerThreshold(value)
        threshold.SetUpperThreshold(value)
        threshold.SetThresholdFunction(vtk.vtkThreshold.THRESHOLD_BETWEEN)
        threshold.AllScalarsOn()
        surface = vtk.vtkGeometryFilter()
        surface.SetInputConnection(threshold.GetOutputPort())
        surface.Update()
        if surface.GetOutput().GetNumberOfCells() == 0:
            continue
        tooth = scene.AddNewNodeByClass("vtkMRMLModelNode", fdi.tooth(value).label)
        tooth.SetAndObservePolyData(surface.GetOutput())
        tooth.SetAttribute(TOOTH_OF_ATTRIBUTE, modelNode.GetID())
        tooth.SetAttribute("ToothMCL.fdi", str(value))
        tooth.SetAndObserveTransformNodeID(modelNode.GetTransformNodeID())
        tooth.CreateDefaultDisplayNodes()
        tooth.GetDisplayNode().SetColor(*fdi.label_color(value))
        tooth.GetDisplayNode().SetScalarVisibility(False)
        nodes.append(tooth)
    return nodes
