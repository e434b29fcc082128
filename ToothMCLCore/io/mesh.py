"""Intraoral-scan meshes: read OBJ, STL, PLY, VTP and legacy VTK; clean; write labelled meshes.

**File order.** Labels are always delivered for the vertices *as stored in the file, in file
order* (the Teeth3DS / 3DTeethSeg'22 contract). OBJ and STL are parsed here (trimesh's OBJ
loader re-indexes vertices when a file has materials or texture coordinates, and returns an
empty mesh for a truncated STL), PLY goes through ``trimesh.load(..., process=False)``, VTP and
VTK through the small readers at the end of this module (vtk itself is never imported).

**Cleaning** (never rejecting): exact duplicate vertices are merged, faces with a repeated or
zero-area corner are dropped, then vertices no face uses are dropped. The cleaned mesh is what
inference sees; :attr:`MeshReadResult.file_to_clean` maps every file vertex to a cleaned one, so
``result.to_file_order(per_vertex)`` expands any per-vertex output back to the file. A file
vertex that was dropped as unreferenced takes the value of its *nearest* cleaned vertex (a
stray vertex next to a tooth is part of that tooth); one whose coordinates are not finite has
``file_to_clean == -1`` and gets the ``fill`` value (0 = gingiva). Non-finite coordinates used
by a face are an error. A bare point cloud (no faces) of at least :data:`MIN_POINT_CLOUD`
points is returned with empty faces.

**Units.** Scans are in millimetres (a jaw is 40-80 mm across). A bounding-box diagonal under
:data:`MIN_DIAGONAL_MM` or over :data:`MAX_DIAGONAL_MM` after applying ``units`` is refused with
the ``--units`` value that would fit.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import fdi
from ..errors import InvalidInputError, OutputError, ResourceLimitError, ToothMCLError
from ..types import SurfaceMesh
from .atomic import atomic_write_bytes, full_suffix
from .vtkfile import read_legacy_vtk, read_vtp, vtp_bytes

logger = logging.getLogger(__name__)

READ_SUFFIXES = (".obj", ".stl", ".ply", ".vtp", ".vtk")
WRITE_SUFFIXES = (".ply", ".vtp", ".obj", ".stl")
UNITS_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 0.001}
MIN_DIAGONAL_MM, MAX_DIAGONAL_MM = 1.0, 2000.0
#: a mesh without faces is accepted as a point cloud from this many points on
MIN_POINT_CLOUD = 1000
#: above this many faces the caller should :func:`decimate` before inference
DECIMATE_ABOVE_FACES = 1_000_000
#: above this many faces the file is refused (ResourceLimitError)
MAX_FACES = 20_000_000
GINGIVA_COLOR = (0.94, 0.66, 0.70)
_FORMATS = "OBJ, STL, PLY, VTP or VTK"
_JAW_TOKENS = {"u": "upper", "l": "lower", "up": "upper", "down": "lower"}  # plus tokens starting with
# upper/maxill/lower/mandib; "up"/"down" are MeshSegNet's (``12_up.vtp``)


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


# ------------------------------------------------------------------------------------------------
# Parsers: each returns vertices (N, 3) float64, faces (M, 3) int64, normals or None, labels or None,
# and per-face arrays (VTP/VTK cell data; empty for the other formats)
# ------------------------------------------------------------------------------------------------

def _read_obj(data: bytes):
    lines = data.splitlines()
    try:  # fast path: "v x y z" and triangles "f a b c" / "f a/t/n ...", positive indices
        vl = [ln[2:] for ln in lines if ln[:2] == b"v "]
        fl = [ln[2:] for ln in lines if ln[:2] == b"f "]
        padded = b"\n" + data
        if not any(t in padded for t in (b"\n ", b"\n\t", b"\nv\t", b"\nf\t")):
            v = np.array(b" ".join(vl).split(), dtype=np.float64).reshape(len(vl), -1)[:, :3]
            f = np.array(re.sub(rb"/\S*", b"", b" ".join(fl)).split(), dtype=np.int64).reshape(len(fl), 3)
            nl = [ln[3:] for ln in lines if ln[:3] == b"vn "]
            vn = np.array(b" ".join(nl).split(), dtype=np.float64).reshape(-1, 3) if len(nl) == len(v) else None
            if len(f) == 0 or f.min() > 0:
                return v.reshape(-1, 3), f - 1, vn, None, {}
    except ValueError:
        pass
    verts, normals, faces = [], [], []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == b"v":
            verts.append(parts[1:4])
        elif parts[0] == b"vn":
            normals.append(parts[1:4])
        elif parts[0] == b"f":
            idx = [int(p.split(b"/")[0]) for p in parts[1:]]
            idx = [i - 1 if i > 0 else len(verts) + i if i < 0 else -(2**62) for i in idx]
            faces.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1))
    vertices = np.array(verts, dtype=np.float64).reshape(-1, 3)
    normals_arr = np.array(normals, dtype=np.float64).reshape(-1, 3) if len(normals) == len(verts) else None
    return vertices, np.array(faces, dtype=np.int64).reshape(-1, 3), normals_arr, None, {}


def _read_stl(data: bytes):
    if len(data) >= 84:
        count = int(np.frombuffer(data, "<u4", 1, 80)[0])
        if len(data) == 84 + 50 * count:
            rec = np.frombuffer(data, [("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")], count, 84)
            return rec["v"].reshape(-1, 3).astype(np.float64), np.arange(3 * count).reshape(-1, 3), None, None, {}
    if not data.lstrip().startswith(b"solid"):
        raise ValueError(f"not an ASCII STL and the binary size ({len(data)} bytes) does not match "
                         "its triangle count (truncated file?)")
    if b"endsolid" not in data:
        raise ValueError("ASCII STL without 'endsolid' (truncated file?)")
    coords = re.findall(rb"vertex\s+(\S+)\s+(\S+)\s+(\S+)", data)
    if len(coords) % 3:
        raise ValueError(f"{len(coords)} vertices is not a whole number of triangles")
    vertices = np.array(coords, dtype=np.float64).reshape(-1, 3)
    return vertices, np.arange(len(vertices)).reshape(-1, 3), None, None, {}


def _read_ply(path: Path):
    import trimesh

    geom = trimesh.load(path, file_type="ply", process=False)
    raw = geom.metadata.get("_ply_raw", {}).get("vertex", {}).get("data")
    if isinstance(raw, dict):  # ASCII PLY: trimesh gives one array per property
        names = tuple(raw)
    else:  # binary PLY: one structured array
        names = raw.dtype.names if raw is not None and raw.dtype.names else ()
    normals = (np.stack([np.asarray(raw[k]).ravel() for k in ("nx", "ny", "nz")], 1).astype(np.float64)
               if "nz" in names else None)
    labels = np.asarray(raw["FDI"]).ravel().astype(np.int32) if "FDI" in names else None
    faces = np.asarray(getattr(geom, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    return np.asarray(geom.vertices, dtype=np.float64).reshape(-1, 3), faces, normals, labels, {}


def _declared_faces(path: Path, suffix: str) -> int:
    """Face count announced by a binary STL or PLY header, read before loading (0 if unknown)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if suffix == ".stl" and len(head) >= 84:
        count = int(np.frombuffer(head, "<u4", 1, 80)[0])
        return count if path.stat().st_size == 84 + 50 * count else 0
    match = re.search(rb"element\s+face\s+(\d+)", head) if suffix == ".ply" else None
    return int(match.group(1)) if match else 0


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

def read_mesh(path, units: str = "mm") -> MeshReadResult:
    """Read and clean an intraoral scan; see the module docstring for the rules.

    Args:
        path: .obj, .stl, .ply, .vtp or .vtk (legacy POLYDATA) file.
        units: unit of the file's coordinates, one of ``mm`` (default), ``cm``, ``m``, ``um``;
            the result is always in mm.

    Raises:
        InvalidInputError: missing, unknown, corrupt or empty file, too few points, non-finite
            coordinates used by faces, implausible size for the given units.
        ResourceLimitError: more than :data:`MAX_FACES` faces.
    """
    path = Path(path)
    if units not in UNITS_TO_MM:
        raise InvalidInputError(f"units must be one of {sorted(UNITS_TO_MM)} (got {units!r})")
    if not path.is_file():
        raise InvalidInputError(f"mesh file {path} does not exist; check the path")
    suffix = full_suffix(path)
    if suffix not in READ_SUFFIXES:
        raise InvalidInputError(f"{path.name}: unknown mesh format {suffix or '(no extension)'!r}; "
                                f"export the scan as {_FORMATS}")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"{path.name} is empty (0 bytes); export the scan again")
    declared = _declared_faces(path, suffix)
    if declared > MAX_FACES:
        raise ResourceLimitError(f"{path.name} has {declared:,} faces (limit {MAX_FACES:,}); "
                                 "decimate it in your scanner software or MeshLab first")
    try:
        if suffix == ".ply":
            vertices, faces, normals, labels, face_data = _read_ply(path)
        else:
            reader = {".obj": _read_obj, ".stl": _read_stl, ".vtp": read_vtp, ".vtk": read_legacy_vtk}[suffix]
            vertices, faces, normals, labels, face_data = reader(path.read_bytes())
    except ToothMCLError:
        raise
    except Exception as exc:  # every parser failure means a corrupt or truncated file
        raise InvalidInputError(f"cannot read {path.name} as {suffix[1:].upper()} ({exc}); the file is "
                                "corrupt or truncated: export the scan again") from exc
    if len(vertices) == 0:
        raise InvalidInputError(f"{path.name} contains no vertices; export the scan again")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InvalidInputError(f"{path.name}: faces refer to vertices outside 1..{len(vertices)}; "
                                "the file is corrupt, export the scan again")
    if len(faces) > MAX_FACES:
        raise ResourceLimitError(f"{path.name} has {len(faces):,} faces (limit {MAX_FACES:,}); "
                                 "decimate it in your scanner software or MeshLab first")
    if labels is not None and len(labels) != len(vertices):
        logger.warning("%s: ignoring an FDI array of %d values for %d vertices", path.name, len(labels),
                       len(vertices))
        labels = None
    normals = normals if normals is not None and normals.shape == vertices.shape else None
    result = clean_mesh(vertices * UNITS_TO_MM[units], faces, normals=normals, labels=labels,
                        source=str(path), face_data=face_data)
    _check_units(result.mesh.vertices_ras, units, path.name)
    for note in result.notes:
        logger.info("%s: %s", path.name, note)
    return result


def _check_units(vertices: np.ndarray, units: str, name: str) -> None:
    diagonal = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    if MIN_DIAGONAL_MM <= diagonal <= MAX_DIAGONAL_MM:
        return
    in_file_units = diagonal / UNITS_TO_MM[units]
    fits = [u for u, f in UNITS_TO_MM.items() if 10.0 <= in_file_units * f <= 300.0 and u != units]
    names = {"m": "metres", "um": "microns", "cm": "centimetres", "mm": "millimetres"}
    advice = (f"the file seems to be in {names[fits[0]]}: pass --units {fits[0]}" if fits
              else "check that it is an intraoral scan (a jaw is 40-80 mm across)")
    raise InvalidInputError(f"{name} is {diagonal:.4g} mm across when read in {names[units]}, "
                            f"expected {MIN_DIAGONAL_MM:g}-{MAX_DIAGONAL_MM:g} mm; {advice}")


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


# ------------------------------------------------------------------------------------------------
# Size, both jaws, jaw
# ------------------------------------------------------------------------------------------------

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


def _thin_axis(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return np.linalg.eigh(centred.T @ centred)[1][:, 0]


def looks_like_both_jaws(mesh: SurfaceMesh, gap_mm: float = 2.0, min_fraction: float = 0.2) -> bool:
    """True when the scan seems to hold an upper and a lower jaw (the caller refuses it).

    Two tests: (a) the two largest connected components each hold at least ``min_fraction`` of
    the vertices and their centroids are more than 5 mm apart along the first one's thinnest
    principal axis (stacked, not side by side); (b) the projection of all vertices on the
    thinnest principal axis has an empty gap wider than ``gap_mm`` with at least
    ``min_fraction`` of the vertices on either side.
    """
    v = mesh.vertices_ras
    if len(v) < 8:
        return False
    if len(mesh.faces):
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        f = mesh.faces
        edges = coo_matrix((np.ones(2 * len(f)), (np.r_[f[:, 0], f[:, 1]], np.r_[f[:, 1], f[:, 2]])),
                           shape=(len(v), len(v)))
        _, comp = connected_components(edges, directed=False)
        sizes = np.bincount(comp)
        big = np.argsort(sizes)[::-1][:2]
        if len(big) == 2 and sizes[big[1]] >= min_fraction * len(v):
            a, b = v[comp == big[0]], v[comp == big[1]]
            if abs((a.mean(0) - b.mean(0)) @ _thin_axis(a)) > 5.0:
                return True
    h = np.sort(v @ _thin_axis(v))
    gaps = np.diff(h)
    k = int(np.argmax(gaps))
    lo = k + 1
    return bool(gaps[k] > gap_mm and min(lo, len(h) - lo) >= min_fraction * len(h))


def occlusal_direction(mesh: SurfaceMesh, normals: np.ndarray | None = None) -> np.ndarray | None:
    """Unit (3,) vector from the gingival base towards the cusps, or None when unclear.

    A scan is open at its gingival base, so the area-weighted sum of its outward face normals
    equals minus the vector area of that missing base: it points where the crowns stick out.
    This assumes outward-facing triangles (counter-clockwise seen from outside), which scanners
    and our writers produce. It must hold at least 5 % of the total area. A point cloud with
    per-vertex ``normals`` uses their mean; without normals, the skewness of the heights along
    the thinnest principal axis (the long tail points to the base; |skewness| >= 0.05).
    """
    v, f = mesh.vertices_ras, mesh.faces
    if len(f):
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        total = np.linalg.norm(fn, axis=1).sum()
        s = fn.sum(axis=0)
        return s / np.linalg.norm(s) if np.linalg.norm(s) >= 0.05 * total else None
    if normals is not None and len(normals):
        s = np.asarray(normals, np.float64).mean(axis=0)
        return s / np.linalg.norm(s) if np.linalg.norm(s) >= 0.05 else None
    axis = _thin_axis(v)
    h = (v - v.mean(axis=0)) @ axis
    skew = float((h**3).mean() / max((h**2).mean(), 1e-12) ** 1.5)
    return -np.sign(skew) * axis if abs(skew) >= 0.05 else None


def jaw_from_file_name(path) -> str | None:
    """"upper"/"lower" from name tokens (``_upper``, ``_l``, ``_up``, ``_down``, ``maxilla``...), None if
    absent or both."""
    name = re.sub(r"\.(obj|stl|ply|vtp|vtk|json)$", "", Path(str(path)).name.lower())
    tokens = re.split(r"[^a-z0-9]+", name)
    found = {_JAW_TOKENS[t] for t in tokens if t in _JAW_TOKENS}
    found |= {j for t in tokens for p, j in (("upper", "upper"), ("lower", "lower"), ("maxill", "upper"),
                                              ("mandib", "lower")) if t.startswith(p)}
    return found.pop() if len(found) == 1 else None


def detect_jaw(path, mesh: SurfaceMesh, jaw: str | None = None,
               normals: np.ndarray | None = None) -> tuple[str, str]:
    """Decide which jaw a scan shows and say how: ``(jaw, rule)``.

    Rules, first that answers wins: ``"argument"`` (``jaw`` given); ``"file name"`` (a token of
    the name, e.g. Teeth3DS ``0EAKT1CU_upper.obj``); ``"file header"`` (an OBJ whose first line is
    ``# upper`` / ``# lower``, as on the 3DTeethSeg'22 evaluation platform); ``"geometry"``: the
    :func:`occlusal_direction` in the file's frame, assuming +z points to the patient's head (RAS
    and the Teeth3DS frame): crowns pointing to -z = upper jaw, to +z = lower jaw. The direction
    must be within 60 degrees of z.

    Raises:
        InvalidInputError: ``jaw`` is not upper/lower, or no rule can decide.
    """
    if jaw is not None:
        if jaw not in fdi.JAWS:
            raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r})")
        return jaw, "argument"
    if path is not None:
        found = jaw_from_file_name(path)
        if found:
            return found, "file name"
        if str(path).lower().endswith(".obj") and Path(path).is_file():
            with open(path, "rb") as fh:
                first = fh.readline(256).strip().lstrip(b"#").strip().lower()
            if first in (b"upper", b"lower"):
                return first.decode(), "file header"
    direction = occlusal_direction(mesh, normals)
    if direction is not None and abs(direction[2]) >= 0.5:
        return ("upper" if direction[2] < 0 else "lower"), "geometry"
    raise InvalidInputError(f"cannot tell whether {Path(str(path or mesh.source)).name or 'the scan'} is "
                            "an upper or a lower jaw (no hint in the file name and the crowns do not "
                            "point along z); pass --jaw upper or --jaw lower")


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def label_colors(labels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 display colours: FDI colours of :mod:`ToothMCLCore.fdi`, gingiva pink."""
    labels = np.asarray(labels).astype(np.int64)
    values, inverse = np.unique(labels, return_inverse=True)
    table = np.array([GINGIVA_COLOR if v == 0 else fdi.label_color(int(v)) for v in values]).reshape(-1, 3)
    return np.round(table * 255).astype(np.uint8)[inverse.ravel()]


def write_mesh(path, mesh: SurfaceMesh, vertex_labels=None, colors=None) -> None:
    """Write a scan atomically; the format follows the extension.

    ``.ply``: binary, float32 coordinates, per-vertex ``red/green/blue`` and an ``int FDI``
    property. ``.vtp``: VTK XML (float64 points) with point-data arrays ``FDI`` (Int32) and ``RGB``
    (UInt8 x 3, the active scalars). ``.obj`` (6 decimals) / ``.stl`` (binary, float32): geometry
    only. Vertices are written in ``mesh`` order (STL stores three corners per triangle).

    Args:
        vertex_labels: optional (N,) FDI per vertex (default ``mesh.labels``); 0 = gingiva.
        colors: optional (N, 3) uint8 or floats in [0, 1]; default: colours of the labels.

    Raises:
        OutputError: unknown extension, STL of a point cloud, unwritable folder.
        InvalidInputError: labels or colours that do not fit the mesh, unknown FDI values.
    """
    path = Path(path)
    suffix = full_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise OutputError(f"cannot write {path.name}: use one of {', '.join(WRITE_SUFFIXES)}")
    v, f, n = np.asarray(mesh.vertices_ras, np.float64), np.asarray(mesh.faces, np.int64), mesh.n_vertices
    labels = mesh.labels if vertex_labels is None else vertex_labels
    if labels is not None:
        labels = np.asarray(labels).astype(np.int32).ravel()
        if len(labels) != n:
            raise InvalidInputError(f"got {len(labels)} labels for a mesh of {n} vertices")
    if colors is None and labels is not None:
        colors = label_colors(labels)
    if colors is not None:
        colors = np.asarray(colors)
        colors = colors if colors.dtype == np.uint8 else np.round(np.clip(colors, 0, 1) * 255).astype(np.uint8)
        if colors.shape != (n, 3):
            raise InvalidInputError(f"colors must have shape ({n}, 3) (got {colors.shape})")
    if suffix == ".stl":
        if not len(f):
            raise OutputError(f"cannot write {path.name}: STL needs faces and this mesh is a point cloud")
        rec = np.zeros(len(f), [("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
        rec["v"] = v[f]
        rec["n"] = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        rec["n"] /= np.maximum(np.linalg.norm(rec["n"], axis=1, keepdims=True), 1e-12)
        data = b"ToothMCL".ljust(80, b" ") + np.uint32(len(f)).tobytes() + rec.tobytes()
    elif suffix == ".obj":
        lines = [f"# ToothMCL {mesh.jaw}".rstrip()]
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
        lines += [f"f {a} {b} {c}" for a, b, c in f + 1]
        data = ("\n".join(lines) + "\n").encode()
    elif suffix == ".ply":
        props = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
        props += [("red", "u1"), ("green", "u1"), ("blue", "u1")] if colors is not None else []
        props += [("FDI", "<i4")] if labels is not None else []
        vert = np.zeros(n, props)
        vert["x"], vert["y"], vert["z"] = v.T
        if colors is not None:
            vert["red"], vert["green"], vert["blue"] = colors.T
        if labels is not None:
            vert["FDI"] = labels
        kinds = {"<f4": "float", "u1": "uchar", "<i4": "int"}
        header = ["ply", "format binary_little_endian 1.0", "comment ToothMCL: FDI = tooth number, 0 = gingiva",
                  f"element vertex {n}", *(f"property {kinds[t]} {k}" for k, t in props),
                  f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
        face = np.zeros(len(f), [("k", "u1"), ("i", "<i4", (3,))])
        face["k"], face["i"] = 3, f
        data = ("\n".join(header) + "\n").encode() + vert.tobytes() + face.tobytes()
    else:
        point_data = {} if labels is None else {"FDI": labels}
        if colors is not None:
            point_data["RGB"] = colors
        data = vtp_bytes(v, f, point_data, active="RGB" if colors is not None else None)
    atomic_write_bytes(path, data)
    logger.info("wrote %s (%d vertices, %d faces)", path, n, len(f))


def write_teeth_stls(folder, mesh: SurfaceMesh, labels) -> list[Path]:
    """One STL per tooth, ``tooth_<FDI>.stl``, in ``folder`` (created if missing).

    A face belongs to the label most of its corners carry (the first corner's label on a
    three-way tie), so neighbouring tooth files share no triangle and leave no gap.

    Returns:
        The written paths, in FDI order.
    """
    folder = Path(folder)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if len(labels) != mesh.n_vertices:
        raise InvalidInputError(f"got {len(labels)} labels for a mesh of {mesh.n_vertices} vertices")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder} ({exc}); choose another folder") from exc
    corner = labels[mesh.faces]
    face_label = np.where(corner[:, 1] == corner[:, 2], corner[:, 1], corner[:, 0])
    written = []
    for tooth in fdi.present_teeth(np.unique(face_label)):
        sub = mesh.faces[face_label == tooth]
        used, sub = np.unique(sub, return_inverse=True)
        out = folder / f"tooth_{tooth}.stl"
        write_mesh(out, SurfaceMesh(mesh.vertices_ras[used], sub.reshape(-1, 3)))
        written.append(out)
    return written
