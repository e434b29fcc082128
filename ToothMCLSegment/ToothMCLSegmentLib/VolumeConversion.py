"""MRML <-> ToothMCLCore conversion: volume and model nodes to core types, label maps to images.

Volume arrays are indexed ``[k, j, i]``, as ``slicer.util.arrayFromVolume`` returns them; the
geometry is the node's IJK-to-RAS matrix, i.e. the node's own RAS frame. A parent transform is
not applied to the voxels: the segmentation made from a volume is put under the same transform.

ToothMCLCore is imported inside the functions, after the module's dependency check.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support


def arrayFromVTKMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """(4, 4) float64 copy of a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def vtkMatrixFromArray(array) -> vtk.vtkMatrix4x4:
    """``vtkMatrix4x4`` holding a (4, 4) array."""
    a = np.asarray(array, dtype=np.float64).reshape(4, 4)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(a[r, c]))
    return matrix


def ijkToRasOfVolumeNode(volumeNode) -> np.ndarray:
    """(4, 4) float64 IJK-to-RAS matrix of a volume node: RAS = M @ (i, j, k, 1)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return arrayFromVTKMatrix(matrix)


def nodeFilePath(node) -> str:
    """File the node was loaded from, or "" when it was made in memory."""
    storage = node.GetStorageNode() if node is not None else None
    return (storage.GetFileName() or "") if storage is not None else ""


def volumeFromNode(volumeNode):
    """ToothMCLCore ``Volume`` of a scalar volume node: a copy of its voxels and its RAS geometry.

    The array is copied so that a worker thread can read it while the scene changes.

    Raises:
        InvalidInputError: no node, a non-scalar (vector, tensor) volume, or no voxels.
    """
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.types import Geometry, Volume

    if volumeNode is None:
        raise InvalidInputError("no input volume is selected; load a CBCT volume and select it")
    image = volumeNode.GetImageData()
    vector = volumeNode.IsA("vtkMRMLVectorVolumeNode") or volumeNode.IsA("vtkMRMLTensorVolumeNode") or (
        image is not None and image.GetNumberOfScalarComponents() > 1)
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or vector:
        raise InvalidInputError(
            f"{volumeNode.GetName()} is a {volumeNode.GetClassName()}, not a scalar volume; "
            "select a grey-value CBCT volume (convert colour images with Vector to Scalar Volume)"
        )
    if image is None or image.GetNumberOfPoints() == 0:
        raise InvalidInputError(f"volume {volumeNode.GetName()} has no voxels; load the CBCT again")
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    geometry = Geometry.from_ijk_to_ras(ijkToRasOfVolumeNode(volumeNode))
    source = nodeFilePath(volumeNode) or volumeNode.GetName()
    return Volume(array, geometry, source=source, metadata={"node": volumeNode.GetName()})


def addVolumeNode(scene, volume, name: str, className: str = "vtkMRMLScalarVolumeNode"):
    """Add a volume node holding a ToothMCLCore ``Volume`` (array ``[k, j, i]``, RAS geometry)."""
    node = scene.AddNewNodeByClass(className, name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    node.SetIJKToRASMatrix(vtkMatrixFromArray(volume.geometry.ijk_to_ras))
    return node


def orientedImageFromLabels(labels: np.ndarray, ijkToRas) -> slicer.vtkOrientedImageData:
    """``vtkOrientedImageData`` (unsigned char) holding a ``(K, J, I)`` label map on a grid."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    k, j, i = labels.shape
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(i, j, k)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    arrayFromImage(image)[:] = labels
    image.SetImageToWorldMatrix(vtkMatrixFromArray(ijkToRas))
    return image


def arrayFromImage(image) -> np.ndarray:
    """``(K, J, I)`` view (not a copy) of the scalars of a ``vtkImageData``."""
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)


def surfaceMeshFromModelNode(modelNode):
    """ToothMCLCore ``SurfaceMesh`` of a model node: vertices in the node's RAS and triangles.

    Raises:
        InvalidInputError: no node or no points.
    """
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.types import SurfaceMesh

    polyData = modelNode.GetPolyData() if modelNode is not None else None
    if polyData is None or polyData.GetNumberOfPoints() == 0:
        name = modelNode.GetName() if modelNode is not None else "the input"
        raise InvalidInputError(f"{name} has no surface points; load an intraoral scan (STL, PLY, OBJ)")
    vertices = numpy_support.vtk_to_numpy(polyData.GetPoints().GetData()).astype(np.float64)
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputData(polyData)
    triangles.PassVertsOff()
    triangles.PassLinesOff()
    triangles.Update()
    polys = triangles.GetOutput().GetPolys()
    if polys.GetNumberOfCells():
        faces = numpy_support.vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    else:
        faces = np.zeros((0, 3), dtype=np.int64)
    return SurfaceMesh(vertices, faces, source=nodeFilePath(modelNode) or modelNode.GetName())
