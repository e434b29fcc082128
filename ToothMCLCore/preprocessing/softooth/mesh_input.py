"""SOFTooth mesh input: a scan decimated to about 10,000 faces and the 24-d per-face features.

The paper (Sec. IV-A1) downsamples every scan to about 10,000 faces with MeshLab; we use the
same quadric edge collapse through ``fast-simplification`` (:func:`ToothMCLCore.io.mesh.decimate`).
Every face of the decimated mesh is a graph node of the network (Sec. III-B1).

Choices (the paper does not state them):

- **Labels onto faces.** Every input vertex is assigned to the decimated face whose centre is
  nearest (:attr:`SOFToothInput.vertex_to_face`). A face takes the *majority* FDI label (and
  instance) of the input vertices assigned to it; a face no input vertex chose (a small face
  between larger ones) takes the label of the input vertex nearest its centre.
- **Back to the scan.** ``per_face[vertex_to_face]`` gives every input vertex the value of
  its nearest decimated face centre (:meth:`SOFToothInput.to_vertices`); compose with
  :meth:`ToothMCLCore.io.mesh.MeshReadResult.to_file_order` for the file's vertex order.
- **Frame.** Features are in the canonical jaw frame of
  :func:`ToothMCLCore.preprocessing.ios.canonical_frame` (x patient's right, y anterior,
  z occlusal, for both jaws). That frame is a reflection for an upper jaw, so there the
  second and third corner of every face are swapped: triangles stay counter-clockwise seen
  from outside and cross-product normals keep pointing out of the tissue.
- **Features** ``(M, 24)`` float32, two blocks of 12 for the coordinate and normal streams:
  ``[centre, v0, v1, v2]`` canonical coordinates divided by ``scale_mm`` (50 mm, as the
  ToothMCL point features: a jaw spans about [-1, 1]), then ``[face normal, n0, n1, n2]``
  unit normals (the face normal is the normal at the face centre; n0..n2 are the
  area-weighted vertex normals of the decimated mesh). A fixed scale, unlike the per-scan
  z-scores of MeshSegNet/TSGCNet, keeps tooth sizes comparable across scans.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidInputError
from ...io.mesh import decimate, occlusal_direction, vertex_normals
from ...types import SurfaceMesh
from ..ios import COORDINATE_SCALE_MM, CanonicalFrame, canonical_frame

logger = logging.getLogger(__name__)

#: the paper's mesh resolution (Sec. IV-A1)
TARGET_FACES = 10_000
N_FEATURES = 24


@dataclass
class DecimatedScan:
    """A scan decimated for SOFTooth, still in the scan's own frame.

    Attributes:
        mesh: decimated :class:`SurfaceMesh` (RAS mm; per-vertex labels as carried by
            :func:`~ToothMCLCore.io.mesh.decimate`).
        vertex_to_face: (N,) int64 nearest decimated face (by centre) of every input vertex.
        face_labels: (M,) int32 majority FDI label per face (0 = gingiva), or None.
        face_instances: (M,) int32 majority instance per face (0 = gingiva), or None.
        n_input_faces: faces of the scan before decimation.
    """

    mesh: SurfaceMesh
    vertex_to_face: np.ndarray
    face_labels: np.ndarray | None
    face_instances: np.ndarray | None
    n_input_faces: int


@dataclass
class SOFToothInput:
    """One jaw ready for the SOFTooth network.

    Attributes:
        vertices_canonical: (V, 3) float64 decimated vertices in the canonical frame, mm.
        faces: (M, 3) int64, counter-clockwise seen from outside in the canonical frame.
        features: (M, 24) float32, see the module docstring.
        face_labels, face_instances: (M,) int32 or None.
        vertex_to_face: (N,) int64, see :class:`DecimatedScan`.
        frame: scan -> canonical map. jaw: "upper" or "lower".
        scale_mm: divisor of the coordinate features.
        n_input_faces: faces of the scan before decimation.
    """

    vertices_canonical: np.ndarray
    faces: np.ndarray
    features: np.ndarray
    face_labels: np.ndarray | None
    face_instances: np.ndarray | None
    vertex_to_face: np.ndarray
    frame: CanonicalFrame
    jaw: str
    scale_mm: float
    n_input_faces: int

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    @property
    def face_centres_canonical(self) -> np.ndarray:
        """(M, 3) float64 face centres in the canonical frame, mm."""
        return self.vertices_canonical[self.faces].mean(axis=1)

    def to_vertices(self, per_face: np.ndarray) -> np.ndarray:
        """(N, ...) values on the input scan's vertices from (M, ...) values on the faces."""
        values = np.asarray(per_face)
        if len(values) != self.n_faces:
            raise InvalidInputError(f"expected one value per decimated face ({self.n_faces}), "
                                    f"got {len(values)}")
        return values[self.vertex_to_face]


def _majority(groups: np.ndarray, values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent value per group (smallest value on a tie) and whether the group is non-empty."""
    classes, index = np.unique(values, return_inverse=True)
    counts = np.zeros((n_groups, len(classes)), np.int64)
    np.add.at(counts, (groups, index.ravel()), 1)
    return classes[counts.argmax(axis=1)], counts.sum(axis=1) > 0


def decimate_scan(mesh: SurfaceMesh, target_faces: int = TARGET_FACES) -> DecimatedScan:
    """Decimate to about ``target_faces`` faces and carry per-vertex labels onto the faces.

    Args:
        mesh: a cleaned scan (e.g. ``read_mesh(path).mesh``) with faces; ``labels`` and
            ``instances`` are carried when present.
        target_faces: about how many faces to keep (a scan with fewer is kept as it is).
    """
    from scipy.spatial import cKDTree

    if len(mesh.faces) == 0:
        raise InvalidInputError("SOFTooth works on faces and this scan is a point cloud; "
                                "export the scan as a triangle mesh")
    if target_faces < 100:
        raise InvalidInputError(f"target_faces must be at least 100 (got {target_faces})")
    small, _ = decimate(mesh, target_faces)
    centres = small.vertices_ras[small.faces].mean(axis=1)
    vertex_to_face = cKDTree(centres).query(mesh.vertices_ras)[1].astype(np.int64)
    nearest_input = None

    def carry(values):
        nonlocal nearest_input
        if values is None:
            return None
        values = np.asarray(values).astype(np.int32).ravel()
        out, filled = _majority(vertex_to_face, values, len(small.faces))
        if not filled.all():
            if nearest_input is None:
                nearest_input = cKDTree(mesh.vertices_ras).query(centres)[1]
            out[~filled] = values[nearest_input[~filled]]
        return out.astype(np.int32)

    logger.info("decimated from %d to %d faces", len(mesh.faces), len(small.faces))
    return DecimatedScan(small, vertex_to_face, carry(mesh.labels), carry(mesh.instances), len(mesh.faces))


def face_features(vertices: np.ndarray, faces: np.ndarray, scale_mm: float = COORDINATE_SCALE_MM,
                  normals: np.ndarray | None = None) -> np.ndarray:
    """(M, 24) float32 per-face features (layout in the module docstring).

    Args:
        vertices: (V, 3) float64 canonical coordinates, mm.
        faces: (M, 3) int64, counter-clockwise seen from outside.
        scale_mm: coordinates are divided by it.
        normals: optional (V, 3) vertex normals; default area-weighted from the faces.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if normals is None:
        normals = vertex_normals(SurfaceMesh(v, f))
    n = np.asarray(normals, np.float64)
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    corners = v[f]  # (M, 3, 3)
    fn = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
    coords = np.concatenate([corners.mean(axis=1), corners.reshape(-1, 9)], axis=1) / float(scale_mm)
    return np.concatenate([coords, fn, n[f].reshape(-1, 9)], axis=1).astype(np.float32)


def build_input(scan: DecimatedScan, jaw: str, occlusal: np.ndarray | None = None,
                scale_mm: float = COORDINATE_SCALE_MM) -> SOFToothInput:
    """Put a decimated scan in the canonical frame and compute its features.

    Args:
        scan: from :func:`decimate_scan`.
        jaw: "upper" or "lower".
        occlusal: (3,) occlusal direction in scan coordinates; default
            :func:`~ToothMCLCore.io.mesh.occlusal_direction` of the decimated mesh.
    """
    if jaw not in ("upper", "lower"):
        raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r})")
    mesh = scan.mesh
    if occlusal is None:
        occlusal = occlusal_direction(mesh)
    frame = canonical_frame(mesh.vertices_ras, occlusal, jaw)
    vertices = frame.apply(mesh.vertices_ras)
    faces = mesh.faces.astype(np.int64)
    if np.linalg.det(frame.rotation) < 0:  # a mirror turns the winding: restore it
        faces = faces[:, [0, 2, 1]]
    return SOFToothInput(vertices, faces, face_features(vertices, faces, scale_mm), scan.face_labels,
                         scan.face_instances, scan.vertex_to_face, frame, jaw, float(scale_mm),
                         scan.n_input_faces)


def prepare_softooth_input(mesh: SurfaceMesh, jaw: str | None = None, target_faces: int = TARGET_FACES,
                           occlusal: np.ndarray | None = None,
                           scale_mm: float = COORDINATE_SCALE_MM) -> SOFToothInput:
    """:func:`decimate_scan` then :func:`build_input`; ``jaw`` defaults to ``mesh.jaw``."""
    jaw = jaw or mesh.jaw
    if jaw not in ("upper", "lower"):
        raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r}); pass jaw= or set mesh.jaw")
    return build_input(decimate_scan(mesh, target_faces), jaw, occlusal, scale_mm)
