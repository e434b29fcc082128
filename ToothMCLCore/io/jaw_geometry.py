"""Which jaw a scan is, and its occlusal direction: from the file name, else the geometry; and
whether a scan holds both jaws.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import fdi
from ..errors import InvalidInputError
from ..types import SurfaceMesh

_JAW_TOKENS = {"u": "upper", "l": "lower", "up": "upper", "down": "lower"}  # plus tokens starting with
# upper/maxill/lower/mandib; "up"/"down" are MeshSegNet's (``12_up.vtp``)


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
