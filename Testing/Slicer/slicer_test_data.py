"""Test data for the ToothMCLSegment tests: a toy dental arch of cubes, blank volume nodes, paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "ToothMCLSegment"
#: the toy arch: 4 mm cubes on a U-shaped arch, 1 mm voxels
ARCH_SHAPE_KJI = (24, 56, 76)
ARCH_CUBE_MM = 4


def arch_centre_ijk(number: int) -> np.ndarray:
    """Voxel (i, j, k) centre of tooth ``number`` on the toy arch (RAS-aligned grid, origin 0).

    +i is the patient's right (RAS x), +j anterior; upper teeth lie above lower teeth.
    """
    from ToothMCLCore import fdi

    tooth = fdi.tooth(number)
    angle = np.radians(11.0 * (tooth.position - 0.5))
    side = 1.0 if tooth.side == "right" else -1.0
    x = 38 + side * 30 * np.sin(angle)
    y = 8 + 40 * np.cos(angle)
    z = 16 if tooth.arch == "upper" else 6
    return np.array([x, y, z])


def arch_labels(teeth, sizes: dict | None = None) -> np.ndarray:
    """``(K, J, I)`` uint8 label map with a cube per tooth number at its place on the arch."""
    labels = np.zeros(ARCH_SHAPE_KJI, dtype=np.uint8)
    for number in teeth:
        size = (sizes or {}).get(number, ARCH_CUBE_MM)
        i, j, k = (arch_centre_ijk(number) - size / 2).round().astype(int)
        labels[k:k + size, j:j + size, i:i + size] = number
    return labels


def add_volume(scene, shape_kji, ijk_to_ras=None, name="CBCT"):
    """A scalar volume node of zeros with the given grid."""
    import slicer
    from ToothMCLSegmentLib.VolumeConversion import vtkMatrixFromArray

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.zeros(shape_kji, dtype=np.int16))
    node.SetIJKToRASMatrix(vtkMatrixFromArray(np.eye(4) if ijk_to_ras is None else ijk_to_ras))
    return node


def load_model(scene, path):
    """A model node read from ``path`` with a model storage node, as Slicer loads a scan file."""
    node = scene.AddNewNodeByClass("vtkMRMLModelNode", Path(path).stem)
    storage = scene.AddNewNodeByClass("vtkMRMLModelStorageNode")
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(node), f"Slicer could not read {path}"
    return node


def save_and_reload(scene, folder):
    """The scene written to ``folder`` (each storable node's data through its storage node, then
    the MRML file) and read back into a new scene, as File > Save and File > Load Scene do."""
    import slicer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    for node in nodes:
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
    for node in nodes:
        storage = node.GetStorageNode() if node.IsA("vtkMRMLStorableNode") else None
        if storage is not None:
            storage.SetFileName(str(folder / f"{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"))
            assert storage.WriteData(node), f"could not write {node.GetName()}"
    scene.SetURL(str(folder / "scene.mrml"))
    assert scene.Commit(), "could not write the scene"
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(folder / "scene.mrml"))
    assert reloaded.Connect(), "could not read the scene back"
    return reloaded
