"""Occlusal-view rendering for SOFTooth's PRG module, with a face <-> pixel map (Eq. 2).

The paper renders "an occlusal-view RGB image" where "the camera looks at the mesh centroid
from above the occlusal plane" (Sec. III-B2). Our choices:

- **Camera.** Orthographic (no perspective: a face's pixel does not depend on its height), in
  the canonical jaw frame of :func:`ToothMCLCore.preprocessing.ios.canonical_frame`, where +z
  is the occlusal direction for *both* jaws. The camera sits above the highest point and
  looks along **-z**, one ray per pixel centre, so the cusps face the viewer for an upper and
  a lower jaw alike. Image rows run from anterior (row 0, largest y) to posterior, columns
  from the patient's left to the patient's right (x grows with the column). For an upper jaw
  the canonical frame is a mirror, so its image is the mirror image of an intraoral photo;
  both jaws then look alike (incisors at the top, patient's right on the image right).
- **Framing.** Square image, ``image_size`` pixels (1024 = SAM's input, so SAM's resizing is
  the identity). The view is centred on the centre of the jaw's x-y bounding box and fits
  its larger side with a 5 % margin on each side, unless ``field_of_view_mm`` fixes the
  width (same tooth size in pixels for every scan).
- **Shading.** Ray casting with trimesh and Embree (``embreex``) gives the first face hit by
  every pixel ray (-1 for none). Grey Lambert shading with a head-on light,
  ``ambient + (1 - ambient) * max(n_z, 0)``, from vertex normals interpolated at the hit point
  (smooth shading); background black. Three equal uint8 channels, as SAM expects RGB.
- **Face -> pixel** (Eq. 2). A face's position is its centre projected into the image,
  ``(row, col)`` in pixels with pixel centres at integers. A face is **visible** when at least
  one pixel ray hits it first. A visible face whose centre pixel sees another face (a slanted
  face, or one half covered) is moved to the pixel seeing it that is nearest to its projected
  centre, so the pixel of every visible face sees that face.
- **Hidden faces** (no pixel sees them: occluded, e.g. under a bulging crown, or thinner
  than a pixel seen edge-on) keep their projected centre, i.e. the feature of the surface
  the camera sees right above them (usually the same tooth); a centre falling on the
  background moves to the nearest pixel that sees the jaw. ``face_visible`` is False for
  them so the network can gate the 2D prior off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidInputError
from ...io.mesh import vertex_normals
from ...types import SurfaceMesh

logger = logging.getLogger(__name__)

#: SAM's input resolution
IMAGE_SIZE = 1024
AMBIENT = 0.15
MARGIN = 0.05


@dataclass
class OcclusalView:
    """An occlusal rendering and its face <-> pixel maps.

    Attributes:
        image: (H, W, 3) uint8 shaded grey image (RGB, equal channels).
        pixel_face: (H, W) int64 face seen by each pixel, -1 for background.
        face_pixel_yx: (M, 2) float64 ``(row, col)`` of each face in pixels (pixel centres at
            integers), the ``C_map`` of Eq. 2.
        face_visible: (M,) bool, at least one pixel sees the face (then
            ``pixel_face[face_pixel_ij] == face``).
        centre_xy: (2,) float64 canonical x, y (mm) of the image centre.
        mm_per_pixel: pixel size.
    """

    image: np.ndarray
    pixel_face: np.ndarray
    face_pixel_yx: np.ndarray
    face_visible: np.ndarray
    centre_xy: np.ndarray
    mm_per_pixel: float

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.pixel_face.shape[0]), int(self.pixel_face.shape[1])

    @property
    def face_pixel_ij(self) -> np.ndarray:
        """(M, 2) int64 pixel containing each face's position."""
        h, w = self.image_hw
        ij = np.rint(self.face_pixel_yx).astype(np.int64)
        return np.stack([np.clip(ij[:, 0], 0, h - 1), np.clip(ij[:, 1], 0, w - 1)], axis=1)

    def project(self, points_canonical: np.ndarray) -> np.ndarray:
        """(K, 2) float64 ``(row, col)`` of canonical points (mm) in this image."""
        return _project(np.asarray(points_canonical, np.float64), self.centre_xy, self.mm_per_pixel,
                        self.image_hw)


def _project(points: np.ndarray, centre_xy: np.ndarray, mpp: float, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    col = (points[:, 0] - centre_xy[0]) / mpp + (w - 1) / 2.0
    row = (h - 1) / 2.0 - (points[:, 1] - centre_xy[1]) / mpp
    return np.stack([row, col], axis=1)


def cast_rays_down(vertices: np.ndarray, faces: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """(K,) int64 first face hit by a ray going down -z through each (x, y), -1 for none."""
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if not trimesh.ray.has_embree:
        logger.warning("embreex is not installed: ray casting falls back to trimesh's slow "
                       "pure-Python intersector; pip install embreex")
    top = float(vertices[:, 2].max()) + 1.0 + 0.01 * float(np.ptp(vertices[:, 2]))
    origins = np.column_stack([points_xy, np.full(len(points_xy), top)])
    directions = np.broadcast_to(np.array([0.0, 0.0, -1.0]), origins.shape)
    return np.asarray(mesh.ray.intersects_first(origins, np.ascontiguousarray(directions)), np.int64)


def _shade(vertices, faces, normals, pixel_face, pixel_xy, ambient) -> np.ndarray:
    """(H, W) float64 intensity in [0, 1]: Lambert with normals interpolated at the hit."""
    hit = np.nonzero(pixel_face.ravel() >= 0)[0]
    f = faces[pixel_face.ravel()[hit]]
    a, b, c = (vertices[f[:, k], :2] for k in range(3))
    p = pixel_xy[hit]
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    denom = d00 * d11 - d01 * d01
    ok = np.abs(denom) > 1e-12 * np.maximum(d00 * d11, 1e-30)
    denom = np.where(ok, denom, 1.0)
    bv = np.where(ok, (d11 * d20 - d01 * d21) / denom, 1.0 / 3.0)
    bw = np.where(ok, (d00 * d21 - d01 * d20) / denom, 1.0 / 3.0)
    bary = np.clip(np.stack([1.0 - bv - bw, bv, bw], axis=1), 0.0, 1.0)
    bary /= np.maximum(bary.sum(1, keepdims=True), 1e-12)
    n = np.einsum("kc,kcd->kd", bary, normals[f])
    nz = n[:, 2] / np.maximum(np.linalg.norm(n, axis=1), 1e-12)
    out = np.zeros(pixel_face.size)
    out[hit] = ambient + (1.0 - ambient) * np.clip(nz, 0.0, 1.0)
    return out.reshape(pixel_face.shape)


def _face_positions(pixel_face: np.ndarray, projected: np.ndarray, n_faces: int):
    """Face positions and visibility as in the module docstring."""
    h, w = pixel_face.shape
    flat = pixel_face.ravel()
    seen_idx = np.nonzero(flat >= 0)[0]
    seen_face = flat[seen_idx]
    visible = np.zeros(n_faces, bool)
    visible[seen_face] = True
    ij = np.rint(projected).astype(np.int64)
    ij[:, 0] = np.clip(ij[:, 0], 0, h - 1)
    ij[:, 1] = np.clip(ij[:, 1], 0, w - 1)
    centre_sees = pixel_face[ij[:, 0], ij[:, 1]]
    pos = projected.copy()
    move = visible & (centre_sees != np.arange(n_faces))
    if move.any():  # nearest pixel that sees the face
        rows, cols = np.divmod(seen_idx, w)
        d2 = (rows - projected[seen_face, 0]) ** 2 + (cols - projected[seen_face, 1]) ** 2
        order = np.lexsort((d2, seen_face))
        first = np.r_[True, seen_face[order][1:] != seen_face[order][:-1]]
        best = np.empty(n_faces, np.int64)
        best[seen_face[order][first]] = seen_idx[order][first]
        r, c = np.divmod(best[move], w)
        pos[move] = np.stack([r, c], axis=1)
    snap = ~visible & (centre_sees < 0)
    if snap.any():  # hidden face whose centre falls on the background: nearest jaw pixel
        from scipy.ndimage import distance_transform_edt

        _, (near_r, near_c) = distance_transform_edt(pixel_face < 0, return_indices=True)
        pos[snap] = np.stack([near_r[ij[snap, 0], ij[snap, 1]], near_c[ij[snap, 0], ij[snap, 1]]], axis=1)
    return pos, visible


def render_occlusal(vertices_canonical: np.ndarray, faces: np.ndarray, image_size: int = IMAGE_SIZE,
                    field_of_view_mm: float | None = None, normals: np.ndarray | None = None,
                    ambient: float = AMBIENT) -> OcclusalView:
    """Render the occlusal view of a jaw in the canonical frame (see the module docstring).

    Args:
        vertices_canonical: (V, 3) float64 mm, +z occlusal (e.g.
            :attr:`~.mesh_input.SOFToothInput.vertices_canonical`).
        faces: (M, 3) int64, counter-clockwise seen from outside.
        image_size: width and height in pixels (SAM: 1024; small values for tests).
        field_of_view_mm: image width in mm; None fits the jaw.
        normals: (V, 3) vertex normals for shading; default area-weighted from the faces.
        ambient: intensity of a surface seen edge-on, in [0, 1).

    Raises:
        InvalidInputError: no faces, a size under 16 pixels, or a view that sees nothing.
    """
    v = np.asarray(vertices_canonical, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise InvalidInputError("cannot render a mesh without faces; export the scan as a triangle mesh")
    if int(image_size) < 16:
        raise InvalidInputError(f"image_size must be at least 16 pixels (got {image_size})")
    size = int(image_size)
    used = v[np.unique(f)]
    lo, hi = used[:, :2].min(0), used[:, :2].max(0)
    centre_xy = (lo + hi) / 2.0
    width = float(field_of_view_mm) if field_of_view_mm else float((hi - lo).max()) * (1.0 + 2 * MARGIN)
    if not width > 0:
        raise InvalidInputError("the mesh has no extent in the occlusal plane; is it a jaw?")
    mpp = width / size
    grid = (np.arange(size) - (size - 1) / 2.0) * mpp
    xs = centre_xy[0] + grid
    ys = centre_xy[1] - grid
    pixel_xy = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)
    pixel_face = cast_rays_down(v, f, pixel_xy).reshape(size, size)
    if not (pixel_face >= 0).any():
        raise InvalidInputError("the occlusal view sees no face of the mesh; check field_of_view_mm")
    if normals is None:
        normals = vertex_normals(SurfaceMesh(v, f))
    intensity = _shade(v, f, np.asarray(normals, np.float64), pixel_face, pixel_xy, float(ambient))
    grey = np.round(intensity * 255.0).astype(np.uint8)
    centres = v[f].mean(axis=1)
    projected = _project(centres, centre_xy, mpp, (size, size))
    pos, visible = _face_positions(pixel_face, projected, len(f))
    logger.debug("occlusal view %dx%d, %.3f mm/px, %d of %d faces visible", size, size, mpp,
                 int(visible.sum()), len(f))
    return OcclusalView(np.repeat(grey[:, :, None], 3, axis=2), pixel_face, pos, visible, centre_xy, mpp)
