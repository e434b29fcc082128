"""Intraoral-scan meshes: read OBJ, STL, PLY, VTP and legacy VTK; write labelled meshes.

**File order.** Labels are always delivered for the vertices *as stored in the file, in file
order* (the Teeth3DS / 3DTeethSeg'22 contract). OBJ and STL are parsed here (trimesh's OBJ
loader re-indexes vertices when a file has materials or texture coordinates, and returns an
empty mesh for a truncated STL), PLY goes through ``trimesh.load(..., process=False)``, VTP and
VTK through :mod:`.vtkfile` (vtk itself is never imported). Every scan read is cleaned
(:func:`~.mesh_clean.clean_mesh`: duplicates merged, degenerate faces and unused vertices
dropped, with the map back to the file); which jaw it is comes from :mod:`.jaw_geometry`. Both
are re-exported here. A bare point cloud (no faces) of at least :data:`MIN_POINT_CLOUD` points
is returned with empty faces.

**Units.** Scans are in millimetres (a jaw is 40-80 mm across). A bounding-box diagonal under
:data:`MIN_DIAGONAL_MM` or over :data:`MAX_DIAGONAL_MM` after applying ``units`` is refused with
the ``--units`` value that would fit.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .. import fdi
from ..errors import InvalidInputError, OutputError, ResourceLimitError, ToothMCLError
from ..types import SurfaceMesh
from .atomic import atomic_write_bytes, full_suffix
from .jaw_geometry import detect_jaw, jaw_from_file_name, looks_like_both_jaws, occlusal_direction
from .mesh_clean import (
    DECIMATE_ABOVE_FACES,
    MIN_POINT_CLOUD,
    MeshReadResult,
    clean_mesh,
    decimate,
    vertex_normals,
)
from .vtkfile import read_legacy_vtk, read_vtp, vtp_bytes

# readers and writers are here; cleaning is in .mesh_clean and the jaw's geometry in .jaw_geometry,
# re-exported so that ``from ToothMCLCore.io.mesh import clean_mesh`` keeps working
__all__ = ["DECIMATE_ABOVE_FACES", "MIN_POINT_CLOUD", "MeshReadResult", "clean_mesh", "decimate", "detect_jaw",
           "jaw_from_file_name", "label_colors", "looks_like_both_jaws", "occlusal_direction", "read_mesh",
           "vertex_normals", "write_mesh", "write_teeth_stls"]

logger = logging.getLogger(__name__)

READ_SUFFIXES = (".obj", ".stl", ".ply", ".vtp", ".vtk")
WRITE_SUFFIXES = (".ply", ".vtp", ".obj", ".stl")
UNITS_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 0.001}
MIN_DIAGONAL_MM, MAX_DIAGONAL_MM = 1.0, 2000.0
#: above this many faces the file is refused (ResourceLimitError)
MAX_FACES = 20_000_000
GINGIVA_COLOR = (0.94, 0.66, 0.70)
_FORMATS = "OBJ, STL, PLY, VTP or VTK"


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


def _ply_properties(raw) -> tuple:
    """Property names of a PLY element as trimesh keeps it (ASCII: a dict of arrays; binary: a
    structured array)."""
    if isinstance(raw, dict):
        return tuple(raw)
    return raw.dtype.names if raw is not None and getattr(raw, "dtype", None) is not None and raw.dtype.names else ()


def _read_ply(path: Path):
    """Vertices, triangles, vertex normals and ``FDI`` (when stored) and, as face data, the face
    colours ``rgb`` (M, 3) when every triangle has one (3D-IOSSeg stores its labels so)."""
    import trimesh

    geom = trimesh.load(path, file_type="ply", process=False)
    elements = geom.metadata.get("_ply_raw", {})
    raw = elements.get("vertex", {}).get("data")
    names = _ply_properties(raw)
    normals = (np.stack([np.asarray(raw[k]).ravel() for k in ("nx", "ny", "nz")], 1).astype(np.float64)
               if "nz" in names else None)
    labels = np.asarray(raw["FDI"]).ravel().astype(np.int32) if "FDI" in names else None
    faces = np.asarray(getattr(geom, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    face_data = {}
    face_raw = elements.get("face", {}).get("data")
    if all(c in _ply_properties(face_raw) for c in ("red", "green", "blue")):
        rgb = np.stack([np.asarray(face_raw[c]).reshape(-1) for c in ("red", "green", "blue")], 1).astype(np.int64)
        if len(rgb) == len(faces):  # polygons split into triangles have no colour each
            face_data["rgb"] = rgb
    return np.asarray(geom.vertices, dtype=np.float64).reshape(-1, 3), faces, normals, labels, face_data


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
