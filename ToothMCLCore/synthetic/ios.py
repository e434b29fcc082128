"""Synthetic intraoral scan: the visible surface of one jaw, registered with the CBCT phantom.

The mesh is the boundary of ``erupted crowns U gingiva`` of one jaw of a
:class:`~.geometry.DentalLayout`, so an IOS and a CBCT of the same seed (and the same layout
options) are in the same RAS frame, as after a perfect IOS-to-CBCT registration.

Choices:

- **Gum line.** The free gingival margin covers the cervical 1 mm of every crown (healthy
  gingiva sits 0.5-2 mm coronal to the CEJ) and rises 2.5 mm further between neighbouring
  teeth (interdental papillae). Crown surface below it is hidden, so it is not part of the
  mesh: only what an intraoral scanner can see is meshed.
- **Gingiva.** A band along the arch whose half-width grows from the crown's cervical width
  (+0.6 mm) by 0.35 mm per mm away from the gum line, i.e. a sloping alveolar ridge covered
  by mucosa. The upper jaw also has the palate, a vault rising about 10 mm above the gum
  line. Missing teeth leave the ridge at gum-line height; impacted teeth are not visible.
- **Open base.** The solid is cut by the grid's last slab (10-12 mm beyond the CEJs); the
  cut produces no triangles, so the mesh is open there like a real scan, and manifold.
- **Meshing.** A soft occupancy ``clip(0.5 + d / resolution_mm, 0, 1)`` of the approximate
  signed distance ``d`` to crowns and gingiva (their maximum) is smoothed with a Gaussian of
  0.5 voxel and meshed with marching cubes at level 0.5, which puts the surface between
  grid points (no voxel terraces); components with fewer than 1 % of the faces are dropped.
- **Labels.** A vertex takes the label of the nearest solid voxel: the tooth's FDI number
  for crown voxels above the gum line, 0 (gingiva) otherwise. Instances number the teeth
  1..n from the patient's right to left (FDI arch order), 0 for gingiva.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import InvalidInputError
from ..fdi import teeth_of_jaw
from ..types import SurfaceMesh
from .anatomy import ArchMaps
from .geometry import DentalLayout, make_layout

logger = logging.getLogger(__name__)

GUM_COVER_MM = 1.0
PAPILLA_MM = 2.5


def _papilla(arc: np.ndarray, teeth) -> np.ndarray:
    """Papilla height factor in [0, 1] at signed arc positions: 1 at the contact point of two
    present neighbours, falling off over about 1.2 mm."""
    signed = sorted((t.arc_mm if t.side == "right" else -t.arc_mm, t.shape.md) for t in teeth)
    contacts = [
        (a0 + m0 / 2.0 + a1 - m1 / 2.0) / 2.0
        for (a0, m0), (a1, m1) in itertools.pairwise(signed)
        if (a1 - m1 / 2.0) - (a0 + m0 / 2.0) < 1.0
    ]
    if not contacts:
        return np.zeros_like(arc)
    c = np.asarray(contacts, dtype=np.float32)
    pos = np.searchsorted(c, arc)
    lo = c[np.clip(pos - 1, 0, len(c) - 1)]
    hi = c[np.clip(pos, 0, len(c) - 1)]
    d = np.minimum(np.abs(arc - lo), np.abs(arc - hi))
    return np.exp(-((d / 1.2) ** 2))


def _components_filter(faces: np.ndarray, n_vertices: int, min_fraction: float) -> np.ndarray:
    """Boolean mask of faces in connected components holding at least ``min_fraction``."""
    if len(faces) == 0:
        return np.zeros(0, bool)
    rows = np.repeat(np.arange(len(faces)), 3)
    incidence = coo_matrix((np.ones(rows.size), (rows, faces.ravel())),
                           shape=(len(faces), n_vertices)).tocsr()
    adjacency = incidence.T @ incidence
    _, comp = connected_components(adjacency, directed=False)
    face_comp = comp[faces[:, 0]]
    counts = np.bincount(face_comp)
    return counts[face_comp] >= min_fraction * len(faces)


def make_ios_phantom(seed: int = 0, jaw: str = "upper", *, resolution_mm: float = 0.4,
                     missing=None, impacted=None, third_molars=None,
                     layout: DentalLayout | None = None) -> SurfaceMesh:
    """A synthetic intraoral scan of one jaw in the CBCT phantom's RAS frame.

    Args:
        seed: non-negative integer; with the same layout options as
            :func:`~.cbct.make_cbct_phantom` it shows the same teeth in the same place.
        jaw: "upper" or "lower".
        resolution_mm: grid step of the surface extraction. 0.4 mm gives roughly 60-100 k
            vertices for a full upper jaw (palate included); 0.8 mm a quick ~20 k test mesh.
        missing, impacted, third_molars: passed to :func:`make_layout` (ignored with ``layout``).
        layout: mesh this layout instead of making one from the seed.

    Returns:
        :class:`~ToothMCLCore.types.SurfaceMesh`: vertices (N, 3) float64 RAS mm, faces
        (M, 3) int64 (counter-clockwise seen from outside: normals point out of the tissue), labels (N,) int32 FDI or 0 for
        gingiva, instances (N,) int32 (1..n per tooth from the patient's right to left, 0
        gingiva), ``jaw`` set.
    """
    from skimage.measure import marching_cubes

    if jaw not in ("upper", "lower"):
        raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r})")
    if not resolution_mm > 0:
        raise InvalidInputError(f"resolution_mm must be positive (got {resolution_mm})")
    if layout is None:
        layout = make_layout(seed, missing=missing, impacted=impacted, third_molars=third_molars)
    teeth = layout.jaw_teeth(jaw, erupted_only=True)
    occlusal = -1.0 if jaw == "upper" else 1.0  # z direction towards the bite plane
    res = float(resolution_mm)

    slots = [t for t in layout.slots if t.jaw == jaw and not t.impacted]
    cej = np.array([t.cej_ras[2] for t in slots])
    crown_pts = np.concatenate([t.points_ras(1.0, "crown") for t in slots])
    lo_xy = crown_pts[:, :2].min(0) - 8.0
    hi_xy = crown_pts[:, :2].max(0) + 8.0
    tip = crown_pts[:, 2].min() if jaw == "upper" else crown_pts[:, 2].max()
    base = cej.max() + 12.0 if jaw == "upper" else cej.min() - 10.0
    z_lo, z_hi = min(tip, base), max(tip, base)
    z_lo, z_hi = (z_lo - 1.0, z_hi) if jaw == "upper" else (z_lo, z_hi + 1.0)
    origin = np.array([lo_xy[0], lo_xy[1], z_lo])
    shape = tuple(int(np.ceil((hi - lo) / res)) + 1
                  for lo, hi in zip(origin, [hi_xy[0], hi_xy[1], z_hi]))
    xs = (origin[0] + res * np.arange(shape[0])).astype(np.float32)[:, None, None]
    ys = (origin[1] + res * np.arange(shape[1])).astype(np.float32)[None, :, None]
    zs = (origin[2] + res * np.arange(shape[2])).astype(np.float32)[None, None, :]

    # Occupancy as a soft field: 0.5 + (approximate signed distance) / res, clipped to [0, 1].
    # Marching cubes then places the surface with sub-voxel accuracy (no terraces on gently
    # sloping gingiva), and ``field >= 0.5`` is the solid used for labels.
    maps = ArchMaps(layout, np.stack([lo_xy - 1.0, hi_xy + 1.0]), min(res / 2.0, 0.25))
    m = maps.sample(jaw, xs, ys, smooth=True)  # arrays of shape (nx, ny, 1)
    near_teeth = np.clip(1.5 - np.abs(m.sd) / (m.half_bl + 2.0), 0.0, 1.0)  # not in the palate
    gum = m.cej_z + occlusal * (GUM_COVER_MM + PAPILLA_MM * _papilla(m.arc, teeth) * near_teeth)
    depth = (zs - gum) * -occlusal  # mm away from the gum line towards the base
    width = 0.8 * m.half_bl + 0.6 + 0.35 * np.clip(depth, 0.0, 10.0)
    gingiva = np.minimum(depth, width - np.abs(m.sd))
    if jaw == "upper":
        vault = gum - occlusal * (0.5 + 10.0 * (1.0 - np.exp(np.minimum(m.sd, 0.0) / 7.0)))
        gingiva = np.maximum(gingiva, np.minimum(-m.sd, (zs - vault) * -occlusal))
    gingiva = np.clip(0.5 + gingiva / res, 0.0, 1.0).astype(np.float32)
    field = gingiva.copy()
    labels = np.where(gingiva >= 0.5, 0, -1).astype(np.int16)
    for t in teeth:
        b = t.bounds_ras(0.5)
        lo_i = np.maximum(np.floor((b[0] - origin) / res).astype(int), 0)
        hi_i = np.minimum(np.ceil((b[1] - origin) / res).astype(int) + 1, shape)
        sl = tuple(slice(a, c) for a, c in zip(lo_i, hi_i))
        gx, gy, gz = np.meshgrid(xs[sl[0], 0, 0], ys[0, sl[1], 0], zs[0, 0, sl[2]],
                                 indexing="ij")
        u, v, h = t.to_local(np.stack([gx, gy, gz], -1).reshape(-1, 3)).T
        depth_c = np.where(h >= 0.0, t.shape.crown_depth(u, v, h), -res).reshape(gx.shape)
        crown = np.clip(0.5 + depth_c / res, 0.0, 1.0)
        np.maximum(field[sl], crown, out=field[sl])
        sub = labels[sl]
        sub[(crown >= 0.5) & (sub < 0)] = t.fdi

    solid = labels >= 0
    if not solid.any():
        raise InvalidInputError(f"the {jaw} jaw of this layout has no visible surface")
    field = ndimage.gaussian_filter(field, 0.5, mode="nearest")
    verts, faces, _, _ = marching_cubes(field, level=0.5, spacing=(res, res, res),
                                        allow_degenerate=False)
    faces = faces[:, ::-1]  # skimage winds normals towards higher field, i.e. into the solid
    keep = _components_filter(faces, len(verts), 0.01)
    faces = faces[keep]
    used = np.unique(faces)
    remap = np.full(len(verts), -1, np.int64)
    remap[used] = np.arange(used.size)
    verts, faces = verts[used], remap[faces]

    # nearest solid voxel label per vertex
    _, nearest = ndimage.distance_transform_edt(~solid, return_indices=True)
    ijk = np.clip(np.rint(verts / res).astype(np.intp), 0, np.array(shape) - 1)
    ni, nj, nk = (nearest[d][ijk[:, 0], ijk[:, 1], ijk[:, 2]] for d in range(3))
    vertex_labels = labels[ni, nj, nk].astype(np.int32)
    order = [n for n in teeth_of_jaw(jaw) if n in {t.fdi for t in teeth}]
    lut = np.zeros(100, np.int32)
    lut[order] = np.arange(1, len(order) + 1)
    instances = lut[vertex_labels]

    vertices_ras = verts.astype(np.float64) + origin
    logger.debug("synthetic IOS seed %d %s: %d vertices, %d faces", layout.seed, jaw,
                 len(vertices_ras), len(faces))
    return SurfaceMesh(
        vertices_ras=vertices_ras,
        faces=faces.astype(np.int64),
        labels=vertex_labels,
        instances=instances.astype(np.int32),
        jaw=jaw,
        source=f"synthetic IOS phantom (seed {layout.seed}, {jaw} jaw)",
    )
