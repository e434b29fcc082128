"""Click tools on a labelled scan in Slicer: the model node and markups around
:mod:`ToothMCLCore.interactive.ios_tools`.

After segmentation the scan keeps the model's per-vertex tooth probability as point array
``Tooth probability`` (saved with the model like ``FDI``), which the add tool needs. Clicks are
the control points of a markups fiducial node, in world (RAS) coordinates; the scan's vertices
are taken in world coordinates too, so a linear transform on either is honoured. The click graph
of a scan is built once and reused until the scan's points change.

:meth:`CorrectionCapture.applyClickTool <.CorrectionCapture.CorrectionCapture.applyClickTool>`
runs a tool, writes the labels, makes it undoable and records the interaction (clicks included)
with the corrections that are saved.
"""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

PROBABILITY_ARRAY_NAME = "Tooth probability"
#: the tools (name -> how many clicks they take: exactly, or at least one)
TOOLS = {"add": "one click on the missed tooth", "split": "one click on each of the two teeth",
         "refine": "clicks where the tooth should reach (and, as negative, where it should not)",
         "brush": "one click where to paint", "sam": "one click on the missed tooth's crown"}

_graphs: dict[str, tuple[tuple, object]] = {}
_sam: list = []  # the SAM prompter, loaded once per session


def samPrompter():
    """SAM for the ``sam`` tool (:mod:`ToothMCLCore.interactive.sam_tools`): the checkpoint SOFTooth
    would use (``$TOOTHMCL_SAM_CHECKPOINT``, else the ToothMCL cache's ``sam_checkpoints`` folder),
    loaded once; None when there is none (the tool then says how to give one)."""
    from ToothMCLCore.errors import WeightsError
    from ToothMCLCore.inference.softooth import SOFToothSettings, resolve_sam_checkpoint
    from ToothMCLCore.interactive.sam_tools import SAMPrompter

    if not _sam:
        settings = SOFToothSettings()
        try:
            path = resolve_sam_checkpoint(settings)
        except WeightsError:
            return None
        _sam.append(SAMPrompter(path, model_type=settings.sam_model_type, device="cpu"))
    return _sam[0]


def storeToothProbability(modelNode, probability) -> None:
    """Keep the model's per-vertex tooth probability as point array ``Tooth probability``."""
    from .VertexLabels import storePointArray

    storePointArray(modelNode, PROBABILITY_ARRAY_NAME, np.asarray(probability, dtype=np.float32), vtk.VTK_FLOAT)


def toothProbability(modelNode) -> np.ndarray | None:
    """``(N,)`` float32 copy of the stored tooth probability, or None."""
    polyData = modelNode.GetPolyData() if modelNode is not None else None
    array = polyData.GetPointData().GetArray(PROBABILITY_ARRAY_NAME) if polyData is not None else None
    return None if array is None else numpy_support.vtk_to_numpy(array).astype(np.float32)


def clickPoints(markupsNode) -> list[np.ndarray]:
    """World (RAS) positions of a markups node's control points, in order.

    Raises:
        InvalidInputError: no markups node, or no point placed.
    """
    from ToothMCLCore.errors import InvalidInputError

    if markupsNode is None or markupsNode.GetNumberOfControlPoints() == 0:
        raise InvalidInputError("place the click points first (a markups point list on the scan)")
    points = []
    for index in range(markupsNode.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPositionWorld(index, position)
        points.append(np.array(position, dtype=np.float64))
    return points


def scanGraph(modelNode):
    """The click graph (:class:`~ToothMCLCore.interactive.ios_tools.ScanGraph`) of a labelled scan,
    built on its world vertices with its jaw and tooth probability, cached until its points change.

    Raises:
        InvalidInputError: no surface, or the scan's jaw is unknown (segment it first).
    """
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.interactive.ios_tools import ScanGraph
    from ToothMCLCore.types import SurfaceMesh

    from .SegmentDisplay import getProvenance
    from .VertexLabels import modelPointsWorld
    from .VolumeConversion import surfaceMeshFromModelNode

    jaw = getProvenance(modelNode).get("jaw")
    if jaw not in ("upper", "lower"):
        raise InvalidInputError(f"{modelNode.GetName()} has no jaw recorded; segment the scan first")
    polyData = modelNode.GetPolyData()
    transform = modelNode.GetParentTransformNode()
    probability = polyData.GetPointData().GetArray(PROBABILITY_ARRAY_NAME)
    key = (polyData.GetPoints().GetMTime(), polyData.GetNumberOfCells(), jaw,
           transform.GetMTime() if transform is not None else 0, probability.GetMTime() if probability else 0)
    cached = _graphs.get(modelNode.GetID())
    if cached is not None and cached[0] == key:
        return cached[1]
    faces = surfaceMeshFromModelNode(modelNode).faces
    graph = ScanGraph(SurfaceMesh(modelPointsWorld(modelNode), faces, jaw=jaw), jaw=jaw,
                      tooth_probability=toothProbability(modelNode))
    _graphs[modelNode.GetID()] = (key, graph)
    return graph


def runTool(modelNode, labels: np.ndarray, tool: str, clicks: list, tooth=None, value=None,
            negative: list | None = None, radiusMm: float | None = None):
    """Run one tool on ``labels``; returns (new labels, the interaction).

    Raises:
        InvalidInputError: an unknown tool, the wrong number of clicks, or what the tool refuses.
    """
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.interactive import ios_tools

    graph = scanGraph(modelNode)
    if tool not in TOOLS:
        raise InvalidInputError(f"unknown click tool {tool!r}; use one of {', '.join(TOOLS)}")
    if tool == "add":
        _count(clicks, 1, tool)
        return ios_tools.add_tooth(graph, labels, clicks[0], number=tooth)
    if tool == "sam":
        from ToothMCLCore.interactive.sam_tools import sam_add_tooth

        _count(clicks, 1, tool)
        return sam_add_tooth(graph, labels, clicks[0], samPrompter(), number=tooth)
    if tool == "split":
        _count(clicks, 2, tool)
        return ios_tools.split_tooth(graph, labels, clicks[0], clicks[1])
    if tool == "refine":
        if tooth is None:
            raise InvalidInputError("say which tooth to refine (its FDI number)")
        options = {} if radiusMm is None else {"radius_mm": float(radiusMm)}
        return ios_tools.refine_tooth(graph, labels, int(tooth), positive=clicks, negative=negative or [], **options)
    _count(clicks, 1, tool)
    if value is None:
        raise InvalidInputError("say what the brush paints: an FDI number, or 0 for gingiva")
    return ios_tools.brush(graph, labels, clicks[0], int(value), **({} if radiusMm is None else
                                                                     {"radius_mm": float(radiusMm)}))


def _count(clicks: list, n: int, tool: str) -> None:
    from ToothMCLCore.errors import InvalidInputError

    if len(clicks) != n:
        raise InvalidInputError(f"the {tool} tool takes {TOOLS[tool]} ({n}); {len(clicks)} placed")
