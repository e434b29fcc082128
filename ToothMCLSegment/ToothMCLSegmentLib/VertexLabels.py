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
