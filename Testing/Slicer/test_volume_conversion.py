"""MRML volume and model nodes become ToothMCLCore data with the right axes and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from slicer_test_data import add_volume


def _oblique_ijk_to_ras() -> np.ndarray:
    a, b = np.radians(20.0), np.radians(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = (rz @ ry) * np.array([0.3, 0.45, 0.6])  # columns: i, j, k directions times spacing
    m[:3, 3] = [-12.5, 40.0, 7.25]
    return m


def test_volume_node_keeps_oblique_geometry_and_voxel_order(scene):
    """An oblique, anisotropic volume node gives a core Volume whose voxels and RAS positions match the node."""
    import slicer
    from ToothMCLSegmentLib.VolumeConversion import volumeFromNode

    m = _oblique_ijk_to_ras()
    node = add_volume(scene, (4, 5, 6), m)
    slicer.util.arrayFromVolume(node)[:] = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)

    volume = volumeFromNode(node)

    assert volume.array.shape == (4, 5, 6)
    np.testing.assert_allclose(volume.geometry.ijk_to_ras, m, atol=1e-9)
    np.testing.assert_allclose(volume.geometry.spacing, [0.3, 0.45, 0.6])
    image = node.GetImageData()
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    for i, j, k in [(0, 0, 0), (5, 0, 0), (0, 4, 0), (0, 0, 3), (5, 4, 3), (2, 1, 3)]:
        assert volume.array[k, j, i] == image.GetScalarComponentAsDouble(i, j, k, 0)
        ras_node = ijk_to_ras.MultiplyPoint((i, j, k, 1))[:3]
        ras_core = (volume.geometry.ijk_to_ras @ [i, j, k, 1])[:3]
        np.testing.assert_allclose(ras_core, ras_node, atol=1e-9)


def test_volume_is_a_snapshot_the_worker_can_read_safely(scene):
    """Editing the node after conversion does not change the voxels being segmented."""
    import slicer
    from ToothMCLSegmentLib.VolumeConversion import volumeFromNode

    node = add_volume(scene, (3, 3, 3))
    volume = volumeFromNode(node)
    slicer.util.arrayFromVolume(node)[:] = 7
    assert volume.array.max() == 0


def test_vector_volume_is_refused_with_a_message(scene):
    """A colour (vector) volume is refused with a message that says what to select."""
    import slicer
    from ToothMCLSegmentLib.VolumeConversion import volumeFromNode

    from ToothMCLCore.errors import InvalidInputError

    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    slicer.util.updateVolumeFromArray(node, np.zeros((2, 3, 4, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="scalar volume"):
        volumeFromNode(node)


def test_segmentation_sits_under_the_volume_transform_and_on_its_grid(scene):
    """A transformed oblique volume gives a segmentation with the same transform and reference grid."""
    from ToothMCLSegmentLib.SegmentDisplay import createSegmentationNode, referenceGeometry

    m = _oblique_ijk_to_ras()
    node = add_volume(scene, (4, 5, 6), m)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    node.SetAndObserveTransformNodeID(transform.GetID())
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 11

    segmentation = createSegmentationNode(scene, labels, node)

    assert segmentation.GetTransformNodeID() == transform.GetID()
    ijk_to_ras, shape = referenceGeometry(segmentation)
    np.testing.assert_allclose(ijk_to_ras, m, atol=1e-6)
    assert shape == (4, 5, 6)


def test_model_node_becomes_a_triangle_mesh(scene):
    """A model node gives its vertices in RAS and its polygons as triangles over the same vertices."""
    from ToothMCLSegmentLib.VolumeConversion import surfaceMeshFromModelNode

    cube = vtk.vtkCubeSource()
    cube.SetCenter(10, -5, 3)
    cube.Update()
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "scan")
    model.SetAndObservePolyData(cube.GetOutput())

    mesh = surfaceMeshFromModelNode(model)

    assert mesh.vertices_ras.shape == (cube.GetOutput().GetNumberOfPoints(), 3)
    assert mesh.faces.shape == (12, 3)  # 6 quads -> 12 triangles
    np.testing.assert_allclose(mesh.vertices_ras.mean(axis=0), [10, -5, 3])
    assert mesh.faces.max() < mesh.n_vertices
