"""Cleaning a scan as read, and decimating it: what inference sees, and the map back to the file.

**Cleaning** (never rejecting): exact duplicate vertices are merged, faces with a repeated or
zero-area corner are dropped, then vertices no face uses are dropped. The cleaned mesh is what
inference sees; :attr:`MeshReadResult.file_to_clean` maps every file vertex to a cleaned one, so
``result.to_file_order(per_vertex)`` expands any per-vertex output back to the file. A file
vertex that was dropped as unreferenced takes the value of its *nearest* cleaned vertex (a
stray vertex next to a tooth is part of that tooth); one whose coordinates are not finite has
``file_to_clean == -1`` and gets the ``fill`` value (0 = gingiva). Non-finite coordinates used
by a face are an error. Reading the files is :mod:`.mesh`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..types import SurfaceMesh

logger = logging.getLogger(__name__)

#: meshes above this many faces are flagged (:attr:`MeshReadResult.needs_decimation`)
DECIMATE_ABOVE_FACES = 1_000_000
#: a bare point cloud (no faces) needs at least this many points
MIN_POINT_CLOUD = 1000


@dataclass
class MeshReadResult:
    """A scan as read, cleaned, and the map back to the file's vertices.

    Attributes:
        mesh: cleaned :class:`SurfaceMesh` in mm; ``labels`` holds the file's per-vertex ``FDI``
            array (PLY/VTP/VTK written by :func:`write_mesh`) when there is one, else None.
        normals: (N, 3) float64 unit vertex normals of the cleaned mesh (from the file when it
            has them for every vertex, else area-weighted face normals; zeros for a point cloud
            stored without normals).
        file_to_clean: (N_file,) int64 cleaned vertex of every file vertex, -1 for a dropped
            non-finite vertex.
        clean_to_file: (N,) int64 first file vertex of every cleaned vertex.
        n_file_faces: number of triangles in the file (after splitting polygons).
        needs_decimation: more than :data:`DECIMATE_ABOVE_FACES` faces; call :func:`decimate`.
        notes: what cleaning changed, one sentence each (also logged).
        face_data: per-face arrays of the file (VTP/VTK cell data, e.g. a per-triangle
            ``Label``), one value or row per face of the cleaned ``mesh.faces``.
    """

    mesh: SurfaceMesh
    normals: np.ndarray
    file_to_clean: np.ndarray
    clean_to_file: np.ndarray
    n_file_faces: int
    needs_decimation: bool
    notes: tuple[str, ...] = ()
    face_data: dict = field(default_factory=dict)

    @property
    def n_file_vertices(self) -> int:
        return len(self.file_to_clean)

    def to_file_order(self, per_vertex: np.ndarray, fill=0) -> np.ndarray:
        """Expand (N, ...) values on the cleaned mesh to (N_file, ...) in file order."""
        values = np.asarray(per_vertex)
        if len(values) != self.mesh.n_vertices:
            raise InvalidInputError(f"expected one value per cleaned vertex ({self.mesh.n_vertices}), "
                                    f"got {len(values)}")
        out = values[np.maximum(self.file_to_clean, 0)]
        out[self.file_to_clean < 0] = fill
        return out


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, normals=None, labels=None,
               source: str = "", face_data: dict | None = None) -> MeshReadResult:
    """Merge duplicates, drop degenerate faces and unreferenced or non-finite vertices.

    Args:
        vertices: (N_file, 3) float64 in mm. faces: (M, 3) int64 indices into ``vertices``.
        normals: optional (N_file, 3) per-vertex normals. labels: optional (N_file,) FDI values.
        face_data: optional per-face arrays, (M, ...) each; they keep the rows of the faces kept.
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    name = Path(source).name or "mesh"
    finite = np.isfinite(vertices).all(axis=1)
    if len(faces) and not finite[faces].all():
        bad = np.unique(faces[~finite[faces].all(axis=1)])
        bad = bad[~finite[bad]]
        raise InvalidInputError(f"{name}: {len(bad)} vertices used by faces have NaN or infinite "
                                f"coordinates (file vertices {bad[:5].tolist()}...); repair the scan")
    notes = []
    if not finite.all():
        notes.append(f"dropped {int((~finite).sum())} unused vertices with non-finite coordinates")
    # 1. merge exact duplicates; cleaned order = order of first occurrence in the file
    keep = np.nonzero(finite)[0]
    _, first, inverse = np.unique(vertices[keep], axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    merged_of = np.full(len(vertices), -1, dtype=np.int64)
    merged_of[keep] = rank[inverse.ravel()]
    rep = keep[first[order]]  # file index of each merged vertex
    if len(rep) < len(keep):
        notes.append(f"merged {len(keep) - len(rep)} duplicate vertices")
    # 2. degenerate faces
    tri = merged_of[faces]
    pts = vertices[rep]
    area2 = np.linalg.norm(np.cross(pts[tri[:, 1]] - pts[tri[:, 0]], pts[tri[:, 2]] - pts[tri[:, 0]]), axis=1)
    scale = float(np.ptp(pts, axis=0).max()) if len(pts) else 1.0
    good = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
    good &= area2 > 1e-12 * scale**2
    if (~good).any():
        notes.append(f"dropped {int((~good).sum())} degenerate faces")
    tri = tri[good]
    if len(faces) and not len(tri):
        raise InvalidInputError(f"{name}: all {len(faces)} faces are degenerate; export the scan again")
    # 3. unreferenced vertices (a point cloud keeps all of them)
    used = np.ones(len(rep), bool)
    if len(tri):
        used = np.zeros(len(rep), bool)
        used[tri.ravel()] = True
    if not len(tri) and len(rep) < MIN_POINT_CLOUD:
        raise InvalidInputError(f"{name} has no faces and only {len(rep)} points (a point cloud needs "
                                f"at least {MIN_POINT_CLOUD}); export the scan as a triangle mesh")
    new_index = np.cumsum(used) - 1
    clean_to_file = rep[used]
    file_to_clean = np.where(merged_of >= 0, new_index[np.maximum(merged_of, 0)], -1)
    stray = (merged_of >= 0) & ~used[np.maximum(merged_of, 0)]
    if stray.any():
        from scipy.spatial import cKDTree

        notes.append(f"dropped {int(stray.sum())} vertices no face uses (they take the label of the "
                     "nearest kept vertex)")
        file_to_clean[stray] = cKDTree(vertices[clean_to_file]).query(vertices[stray])[1]
    faces_clean = new_index[tri]
    mesh = SurfaceMesh(vertices[clean_to_file].copy(), faces_clean, source=source,
                       labels=None if labels is None else np.asarray(labels, np.int32)[clean_to_file])
    vn = None if normals is None else np.asarray(normals, np.float64)[clean_to_file]
    if vn is None or not np.isfinite(vn).all() or (np.linalg.norm(vn, axis=1) < 1e-12).any():
        vn = vertex_normals(mesh)
    n_faces = len(faces_clean)
    kept_face_data = {name: np.asarray(values)[good] for name, values in (face_data or {}).items()
                      if len(values) == len(faces)}
    return MeshReadResult(mesh, vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12),
                          file_to_clean.astype(np.int64), clean_to_file.astype(np.int64), len(faces),
                          n_faces > DECIMATE_ABOVE_FACES, tuple(notes), kept_face_data)


def vertex_normals(mesh: SurfaceMesh) -> np.ndarray:
    """(N, 3) float64 area-weighted unit vertex normals; zeros for a point cloud."""
    v, f = mesh.vertices_ras, mesh.faces
    out = np.zeros_like(v)
    if len(f):
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        for k in range(3):
            np.add.at(out, f[:, k], fn)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def decimate(mesh: SurfaceMesh, target_faces: int) -> tuple[SurfaceMesh, np.ndarray]:
    """Quadric decimation to about ``target_faces`` triangles (fast-simplification).

    Returns:
        (decimated mesh, mapping): mapping is (N,) int64, the nearest decimated vertex of each
        input vertex, so ``decimated_values[mapping]`` brings results back to ``mesh`` (nearer
        than following the edge collapses, which drift by several mm). Labels and instances,
        when present, are those of each decimated vertex's nearest input vertex. The caller
        logs "decimated from N to M faces".
    """
    import fast_simplification
    from scipy.spatial import cKDTree

    if len(mesh.faces) <= target_faces:
        return mesh, np.arange(mesh.n_vertices, dtype=np.int64)
    pts, tris = fast_simplification.simplify(mesh.vertices_ras, mesh.faces.astype(np.int32),
                                             target_count=int(target_faces))
    pts = np.asarray(pts, np.float64)
    mapping = cKDTree(pts).query(mesh.vertices_ras)[1].astype(np.int64)
    source = cKDTree(mesh.vertices_ras).query(pts)[1]

    def carry(values):
        return None if values is None else np.asarray(values)[source]

    out = SurfaceMesh(pts, np.asarray(tris, np.int64), carry(mesh.labels), carry(mesh.instances), mesh.jaw,
                      mesh.source)
    return out, mapping
