"""The checks of the module's self-test ("Reload and Test"), runnable on any MRML scene.

``ToothMCLSegmentTest`` runs them inside Slicer; ``Testing/Slicer/test_self_test.py`` runs the
same functions with pytest on a ``slicer-core`` scene, so they cannot rot unnoticed. Each check
raises ``AssertionError`` with what went wrong. They use the demo models shipped with
ToothMCLCore and small synthetic phantoms, so they need no data and no network.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def _require(condition, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def checkCorrectionsOnALabelMap(scene, logic) -> None:
    """Swap two teeth of a small label map, check the voxels, undo, check they are back."""
    import slicer

    from .SegmentDisplay import createSegmentationNode, labelsFromSegmentation

    labels = np.zeros((8, 10, 12), dtype=np.uint8)
    labels[2:5, 2:5, 1:4], labels[2:5, 2:5, 6:9] = 36, 37
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "self-test volume")
    slicer.util.updateVolumeFromArray(volume, np.zeros(labels.shape, dtype=np.int16))
    segmentation = createSegmentationNode(scene, labels, volume)
    logic.applyCorrection(segmentation, "swap", tooth=36, target=37)
    swapped, _ = labelsFromSegmentation(segmentation)
    _require(int(swapped[3, 3, 2]) == 37 and int(swapped[3, 3, 7]) == 36, "swap did not exchange 36 and 37")
    logic.undoCorrection(segmentation)
    restored, _ = labelsFromSegmentation(segmentation)
    _require(np.array_equal(restored, labels), "undo did not restore the label map exactly")


def checkScanSegmentationAndCorrection(scene, logic) -> None:
    """Segment a phantom lower-jaw scan with the phantom IOS model, correct it, save it to a temporary store.

    The phantom model (``ios_pt_demo_v1``, by name) is the one trained on such phantoms: this check is about
    the module's machinery; the default model, trained on real scans, is checked on real scans by
    ``Testing/Slicer/test_real_scan.py``."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    from ToothMCLCore import fdi
    from ToothMCLCore.corrections import CorrectionStore
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    from .VertexLabels import vertexLabels, vertexPrediction

    mesh = make_ios_phantom(3, jaw="lower", resolution_mm=0.8)
    poly = vtk.vtkPolyData()
    points = vtk.vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(mesh.vertices_ras, dtype=np.float64), deep=True))
    poly.SetPoints(points)
    cells = vtk.vtkCellArray()
    offsets = np.arange(0, 3 * len(mesh.faces) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_support.numpy_to_vtkIdTypeArray(mesh.faces.astype(np.int64).ravel(), deep=True))
    poly.SetPolys(cells)
    scan = scene.AddNewNodeByClass("vtkMRMLModelNode", "self-test scan")
    scan.SetAndObservePolyData(poly)

    logic.segmentModel(scan, model="ios_pt_demo_v1", device="cpu")
    labels = vertexLabels(scan)
    teeth = sorted(int(v) for v in np.unique(labels) if v)
    _require(labels is not None and len(labels) == mesh.n_vertices, "the scan did not get one label per vertex")
    _require(set(teeth) <= set(fdi.teeth_of_jaw("lower")), f"upper-jaw numbers on a lower scan: {teeth}")
    _require(len(teeth) >= 10, f"the demo model found only {len(teeth)} teeth on the phantom scan")
    logic.applyCorrection(scan, "delete", tooth=teeth[0])
    _require(not (vertexLabels(scan) == teeth[0]).any(), f"tooth {teeth[0]} is still there after delete")
    _require(np.array_equal(vertexPrediction(scan), labels), "the stored prediction changed with a correction")
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        logic.saveCorrection(scan, store, "self-test", "deleted one tooth", patient_id="self-test patient")
        loaded = CorrectionStore(store).load("self-test scan")
        _require(loaded.revision.modality == "ios", "the scan was not saved as an IOS correction")
        _require(np.array_equal(loaded.corrected, vertexLabels(scan)), "the saved correction differs from the scan")
    slicer.util.arrayFromModelPoints(scan)  # the scan is still a valid model


CHECKS = (checkCorrectionsOnALabelMap, checkScanSegmentationAndCorrection)
