"""Intraoral-scan preprocessing as in the ToothMCL paper: canonical frame, FPS, features.

Canonical frame (the paper: "standardize formats and ensure consistent anatomical
orientation"; the details are ours):

- origin at the centroid of the vertices;
- ``z`` = the occlusal direction (from the gingival base toward the cusps,
  :func:`ToothMCLCore.io.mesh.occlusal_direction`; when it cannot be told, the thinnest
  principal axis with the sign pointing away from the heavier tail);
- ``y`` = anterior: the in-plane principal axis along which the arch is deepest, signed so
  that the narrow (incisor) end is positive -- the arch is a U that opens posteriorly;
- ``x`` = the patient's right, for both jaws. For a lower jaw (occlusal = superior) that is
  ``y x z`` and the frame is a rotation. For an upper jaw (occlusal = inferior) ``y x z`` is
  the patient's left, so x is negated: the frame is a reflection, applied to every upper jaw
  alike, never at random. Our choice: the paper trains one network per jaw; with both jaws in
  this frame, class k means the same quadrant position in both (the 17-class schemes of
  ``ToothMCLCore.fdi``), so one network can serve both jaws, and the FDI order assignment can
  read the patient's right-to-left order from x directly.

Then farthest point sampling of 24,000 points per jaw (``fpsample``), and per-point input
features = canonical coordinates divided by ``coordinate_scale_mm`` (50 mm: a jaw then spans
about [-1, 1]; the paper does not state a scale) and unit normals, 6 values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

N_POINTS = 24_000
COORDINATE_SCALE_MM = 50.0
#: the canonical frame's mirror image (x -> -x: the patient's right and left swap); multiply points or normals
MIRROR_X = np.array([-1.0, 1.0, 1.0])


@dataclass
class CanonicalFrame:
    """Rigid map from scan coordinates to the canonical jaw frame.

    Attributes:
        origin: (3,) float64 centroid in scan coordinates.
        rotation: (3, 3) float64, rows are the canonical x, y, z axes in scan coordinates.
    """

    origin: np.ndarray
    rotation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) - self.origin) @ self.rotation.T

    def apply_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float64) @ self.rotation.T


def canonical_frame(vertices: np.ndarray, occlusal: np.ndarray | None, jaw: str) -> CanonicalFrame:
    """The canonical frame of one jaw (see the module docstring).

    Args:
        vertices: (N, 3) float64 scan vertices in mm.
        occlusal: (3,) unit occlusal direction, or None to estimate it from the shape.
        jaw: "upper" (x negated, see above) or "lower".
    """
    v = np.asarray(vertices, np.float64)
    if len(v) < 10:
        raise InvalidInputError(f"a jaw needs at least 10 points to be oriented (got {len(v)})")
    origin = v.mean(axis=0)
    centred = v - origin
    _, _, axes = np.linalg.svd(centred - centred.mean(0), full_matrices=False)
    if occlusal is None:
        z = axes[2]
        h = centred @ z
        skew = float((h**3).mean())
        z = -z if skew > 0 else z
    else:
        z = np.asarray(occlusal, np.float64)
        z = z / np.linalg.norm(z)
    # in-plane axes: principal axes of the points projected on the occlusal plane
    flat = centred - np.outer(centred @ z, z)
    _, _, pa = np.linalg.svd(flat, full_matrices=False)
    first, second = pa[0], pa[1]
    # the arch: width along one axis, depth along the other; the depth axis is the one whose
    # ends differ most in width (narrow incisor end vs wide molar end)
    y, _ = _depth_axis(flat, first, second)
    y = y - (y @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    if jaw == "upper":
        x = -x
    return CanonicalFrame(origin=origin, rotation=np.stack([x, y, z]))


def _depth_axis(flat: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(anterior unit vector, the other in-plane axis): anterior end = narrowest end of the U."""
    best = None
    for depth, width in ((a, b), (b, a)):
        d, w = flat @ depth, flat @ width
        lo, hi = np.quantile(d, [0.15, 0.85])
        w_lo = np.ptp(w[d <= lo]) if (d <= lo).any() else 0.0
        w_hi = np.ptp(w[d >= hi]) if (d >= hi).any() else 0.0
        contrast = abs(w_hi - w_lo) / max(np.ptp(w), 1e-9)
        anterior = depth if w_hi < w_lo else -depth
        if best is None or contrast > best[0]:
            best = (contrast, anterior, width)
    return best[1], best[2]


def sample_points(points: np.ndarray, n: int = N_POINTS, seed: int = 0) -> np.ndarray:
    """(n,) int64 indices chosen by farthest point sampling (all points, shuffled, if fewer).

    Uses ``fpsample`` (a maintained C++ implementation; hand-written FPS in Python would take
    seconds for 24,000 of 100,000 points). The start point is fixed by ``seed``.
    """
    import fpsample

    pts = np.ascontiguousarray(points, dtype=np.float32)
    if len(pts) <= n:
        return np.random.default_rng(seed).permutation(len(pts)).astype(np.int64)
    start = int(np.random.default_rng(seed).integers(len(pts)))
    idx = fpsample.bucket_fps_kdline_sampling(pts, n, h=7, start_idx=start)
    return np.asarray(idx, dtype=np.int64)


def point_features(points_canonical: np.ndarray, normals_canonical: np.ndarray,
                   scale_mm: float = COORDINATE_SCALE_MM) -> np.ndarray:
    """(N, 6) float32 network input: scaled canonical coordinates and unit normals."""
    n = np.asarray(normals_canonical, np.float64)
    norms = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(norms > 0, n / np.maximum(norms, 1e-12), 0.0)
    return np.concatenate([np.asarray(points_canonical) / scale_mm, n], axis=1).astype(np.float32)


def augment(points: np.ndarray, normals: np.ndarray, rng: np.random.Generator,
            max_angle: float = 0.5, shift_mm: float = 2.0, scale: tuple[float, float] = (0.9, 1.1),
            tilt: float | None = None, jitter_mm: float = 0.0, width: tuple[float, float] | None = None):
    """Paper augmentations: random rotation in (-0.5, 0.5) rad, shift, and scaling.

    The rotation is about each axis by an angle drawn in (-max_angle, max_angle); the scale is
    isotropic (an anisotropic scale would distort tooth proportions). Never a mirror.

    Real scans (ours, for training on them): with ``tilt`` set, ``max_angle`` bounds the rotation
    about the occlusal axis (z) only and ``tilt`` the rotations about x and y (a scan's occlusal
    plane is known to a few degrees, its rotation in that plane less well); ``jitter_mm`` adds
    Gaussian noise of that standard deviation (clipped at 3 sigma) to every coordinate; ``width``
    (a range) scales x alone, across the arch, by a factor drawn in it: real arches differ in width
    more than in length (one test jaw is 64 mm across its second molars, another 49 mm), and an
    isotropic scale cannot make a wide arch of normal-sized teeth (the front teeth, which lie
    across x, do widen with it). The normals get the inverse transpose, renormalised. With the defaults the draws, and so the results, are those of the
    paper's version.
    """
    if tilt is None:
        angles = rng.uniform(-max_angle, max_angle, size=3)
    else:
        angles = rng.uniform(-1.0, 1.0, size=3) * np.array([tilt, tilt, max_angle])
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    r = rz @ ry @ rx
    s = rng.uniform(*scale)
    t = rng.uniform(-shift_mm, shift_mm, size=3)
    out = (points @ r.T) * s + t
    if jitter_mm > 0:
        out = out + np.clip(rng.normal(0.0, jitter_mm, size=out.shape), -3 * jitter_mm, 3 * jitter_mm)
    normals = normals @ r.T
    if width is not None:
        w = rng.uniform(*width)
        out = out * np.array([w, 1.0, 1.0])
        normals = normals * np.array([1.0 / w, 1.0, 1.0])
        normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return out, normals
