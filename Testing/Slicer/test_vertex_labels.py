"""Intraoral scans: per-vertex FDI labels become a coloured ``FDI`` array; IOS input is routed clearly."""

from __future__ import annotations

import numpy as np
import pytest
import vtk


@pytest.fixture
def scan(scene):
    """A small sphere standing in for a scan: 66 vertices, 128 triangles, centre (0, 0, 10)."""
    sphere = vtk.vtkSphereSource()
    sphere.SetRadius(10.0)
    sphere.SetCenter(0.0, 0.0, 10.0)
    sphere.SetThetaResolution(8)
    sphere.SetPhiResolution(10)
    sphere.Update()
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "lower jaw scan")
    model.SetAndObservePolyData(sphere.GetOutput())
    return model


def _labels_by_side(model):
    """Gingiva below z=6; teeth 31 (patient's left, x<0) and 41 (right, x>0) above."""
    import slicer

    points = slicer.util.arrayFromModelPoints(model)
    labels = np.where(points[:, 0] > 0, 41, 31)
    labels[points[:, 2] < 6] = 0
    return labels


def test_apply_vertex_labels_adds_fdi_array_and_colours_the_scan(scene, scan):
    """Each vertex gets its FDI value in point array 'FDI', and the scan is coloured by the FDI colours."""
    import slicer
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore import fdi

    labels = _labels_by_side(scan)
    SegmentationLogic().applyVertexLabels(scan, labels)

    stored = slicer.util.arrayFromModelPointData(scan, "FDI")
    assert stored.shape == (scan.GetPolyData().GetNumberOfPoints(),)
    np.testing.assert_array_equal(stored, labels)
    display = scan.GetDisplayNode()
    assert display.GetActiveScalarName() == "FDI" and display.GetScalarVisibility()
    colors = display.GetColorNode()
    rgba = [0.0] * 4
    colors.GetColor(31, rgba)
    np.testing.assert_allclose(rgba[:3], fdi.tooth(31).color, atol=1 / 255)  # stored as 8-bit
    assert colors.GetColorName(41) == "41 lower right central incisor"
    assert display.GetScalarRangeFlag() == slicer.vtkMRMLDisplayNode.UseColorNodeScalarRange


def test_relabelling_a_scan_replaces_its_labels(scene, scan):
    """Applying labels twice keeps one FDI array holding the latest labels."""
    import slicer
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    logic = SegmentationLogic()
    logic.applyVertexLabels(scan, _labels_by_side(scan))
    logic.applyVertexLabels(scan, np.zeros(scan.GetPolyData().GetNumberOfPoints(), dtype=int))

    point_data = scan.GetPolyData().GetPointData()
    names = [point_data.GetArrayName(i) for i in range(point_data.GetNumberOfArrays())]
    assert names.count("FDI") == 1
    assert not slicer.util.arrayFromModelPointData(scan, "FDI").any()


def test_wrong_number_of_labels_is_refused(scene, scan):
    """Labels for a different number of vertices are refused with both counts in the message."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.errors import InvalidInputError

    n = scan.GetPolyData().GetNumberOfPoints()
    with pytest.raises(InvalidInputError, match=f"got {n - 1} labels for a scan with {n} vertices"):
        SegmentationLogic().applyVertexLabels(scan, np.zeros(n - 1, dtype=int))


def test_labels_that_are_not_fdi_numbers_are_refused(scene, scan):
    """A class index such as 19 is refused: labels must be FDI numbers."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.errors import InvalidInputError

    labels = _labels_by_side(scan)
    labels[0] = 19
    with pytest.raises(InvalidInputError, match=r"\[19\]"):
        SegmentationLogic().applyVertexLabels(scan, labels)


def test_scan_table_gives_tooth_areas(scene, scan):
    """The table of a labelled scan lists 31 and 41 with areas summing with the gingiva to the sphere's."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    logic = SegmentationLogic()
    logic.applyVertexLabels(scan, _labels_by_side(scan))

    rows = logic.teethTable(scan)

    assert [(row.fdi, row.unit) for row in rows] == [(31, "mm²"), (41, "mm²")]
    assert rows[0].size == pytest.approx(rows[1].size, rel=0.05)  # the two sides are mirror images
    mass = vtk.vtkMassProperties()
    mass.SetInputData(scan.GetPolyData())
    mass.Update()
    assert 0 < rows[0].size + rows[1].size < mass.GetSurfaceArea()
    assert rows[1].centroidRas[0] > 0 > rows[0].centroidRas[0]


def _model_from_mesh(scene, mesh, name):
    """A model node holding a ToothMCLCore SurfaceMesh (RAS points, triangles)."""
    from vtk.util import numpy_support

    points = vtk.vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(mesh.vertices_ras), deep=True))
    cells = vtk.vtkCellArray()
    offsets = np.arange(0, 3 * len(mesh.faces) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_support.numpy_to_vtkIdTypeArray(np.ascontiguousarray(mesh.faces.ravel()), deep=True))
    poly = vtk.vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(cells)
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    model.SetAndObservePolyData(poly)
    return model


def test_segmenting_a_scan_model_labels_every_vertex_with_its_jaws_fdi_numbers(scene, ios_phantoms,
                                                                                tiny_ios_weights):
    """An upper-jaw scan node gets an FDI array, one value per vertex, all upper teeth or gingiva."""
    import slicer
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore import fdi

    mesh = ios_phantoms["upper"]
    model = _model_from_mesh(scene, mesh, "phantom scan")
    SegmentationLogic().segmentModel(model, weights=tiny_ios_weights, device="cpu")
    labels = slicer.util.arrayFromModelPointData(model, "FDI")
    assert len(labels) == mesh.n_vertices
    assert set(np.unique(labels).tolist()) <= {0} | set(fdi.teeth_of_jaw("upper"))
    assert model.GetAttribute("ToothMCL.jaw") == "upper"
