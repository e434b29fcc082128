"""The geometry under :mod:`.registration`: a tooth surface with its closest-point queries, and
the trimmed point-to-point and point-to-plane ICP steps.

:mod:`.registration` holds what decides: the configuration, the search over initial alignments,
and the checks that accept or refuse a pair. See its docstring for the method and its figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class ToothSurface:
    """Triangle surface of the CBCT teeth in RAS, with what ICP needs.

    Attributes:
        vertices_ras: (M, 3) float64. faces: (F, 3) int64. normals: (M, 3) float64 unit.
        description: how it was extracted, for messages.
    """

    vertices_ras: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    description: str

    def __post_init__(self):
        from scipy.spatial import cKDTree

        self.tree = cKDTree(self.vertices_ras)
        self._vertex_faces = None

    def distances(self, points: np.ndarray) -> np.ndarray:
        """(N,) float64 distance of each point to the closest point of the surface.

        Exact over the triangles around each point's nearest vertex (the closest triangle is
        one of them unless the mesh is much coarser than the distances involved).
        """
        import trimesh

        points = np.asarray(points, np.float64)
        d_vertex, nearest = self.tree.query(points)
        if len(self.faces) == 0:
            return d_vertex
        if self._vertex_faces is None:
            mesh = trimesh.Trimesh(self.vertices_ras, self.faces, process=False)
            self._vertex_faces = np.asarray(mesh.vertex_faces)
        around = self._vertex_faces[nearest]  # (N, k) padded with -1
        rows, cols = np.nonzero(around >= 0)
        if rows.size == 0:
            return d_vertex
        tri = self.vertices_ras[self.faces[around[rows, cols]]]
        closest = trimesh.triangles.closest_point(tri, points[rows])
        d = np.linalg.norm(closest - points[rows], axis=1)
        out = d_vertex.copy()
        np.minimum.at(out, rows, d)
        return out


# ------------------------------------------------------------------------------------------------
# ICP
# ------------------------------------------------------------------------------------------------

def trim(d: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) bool: the distances ``d`` within their ``fraction`` quantile (all of them at 1)."""
    return d <= np.quantile(d, fraction) if fraction < 1.0 else np.ones(len(d), bool)


def icp_point_to_point(src, target, tree, r, t, iterations: int, config, reach_mm: float):
    """Trimmed point-to-point ICP (Kabsch via trimesh); returns (r, t, trimmed RMS).

    Pairs farther than ``reach_mm`` are dropped (and keep far-off candidates cheap: a k-d tree
    query with a bound stops early). The score is the RMS of the closest ``trim_fraction`` of
    all points, infinite when fewer than that many found a partner.
    """
    from trimesh.registration import procrustes

    for _ in range(iterations):
        moved = src @ r.T + t
        d, idx = tree.query(moved, distance_upper_bound=reach_mm)
        found = np.isfinite(d)
        if found.sum() < 10:
            return r, t, np.inf
        keep = found & (d <= np.quantile(d[found], config.trim_fraction))
        m, _, _ = procrustes(moved[keep], target[idx[keep]], reflection=False, scale=False, return_cost=True)
        r, t = m[:3, :3] @ r, m[:3, :3] @ t + m[:3, 3]
        if np.abs(m[:3, 3]).max() < 0.02 and np.abs(m[:3, :3] - np.eye(3)).max() < 2e-4:
            break
    d, _ = tree.query(src @ r.T + t, distance_upper_bound=reach_mm)
    d = np.sort(d)[: max(1, int(config.trim_fraction * len(d)))]
    return r, t, float(np.sqrt(np.mean(d**2)))


def skew_exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrix of the rotation vector ``w`` (Rodrigues)."""
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = w / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def icp_point_to_plane(src, surface: ToothSurface, r, t, config):
    """Trimmed point-to-plane ICP; returns (r, t, trimmed RMS, converged)."""
    converged = False
    for _ in range(config.max_iterations):
        moved = src @ r.T + t
        d, idx = surface.tree.query(moved)
        keep = trim(d, config.trim_fraction)
        p, q, n = moved[keep], surface.vertices_ras[idx[keep]], surface.normals[idx[keep]]
        if len(p) < 6:
            break
        c = p.mean(axis=0)
        a = np.concatenate([np.cross(p - c, n), n], axis=1)
        b = -np.einsum("ij,ij->i", p - q, n)
        x = np.linalg.solve(a.T @ a + 1e-6 * np.eye(6), a.T @ b)
        dr = skew_exp(x[:3])
        r, t = dr @ r, dr @ (t - c) + c + x[3:]
        step = np.linalg.norm(x[:3]) * np.sqrt(np.mean(np.sum((p - c) ** 2, axis=1))) + np.linalg.norm(x[3:])
        if step < config.tolerance_mm:
            converged = True
            break
    d, _ = surface.tree.query(src @ r.T + t)
    d = d[trim(d, config.trim_fraction)]
    return r, t, float(np.sqrt(np.mean(d**2))), converged


def subsample(points: np.ndarray, n: int, rng) -> np.ndarray:
    """At most ``n`` of ``points``, drawn without replacement by ``rng`` (all of them if fewer)."""
    if len(points) <= n:
        return points
    return points[rng.choice(len(points), n, replace=False)]
