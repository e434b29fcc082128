"""Axial-plane maps of the tissues around the teeth (bone, gingiva), shared by CBCT and IOS.

Jaw bone and gingiva follow the arch: each is described by the signed distance ``sd`` of a
point's (x, y) to the arch curve through the CEJ centres (positive buccal, negative lingual /
palatal) and by quantities interpolated along the arch from the tooth slots next to it
(half-width of the teeth, CEJ height, apex height). These are computed once on a 2-D raster
of the axial plane and looked up per voxel by nearest pixel, which is far cheaper than
evaluating distances to a curve for millions of voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .geometry import DentalLayout


@dataclass
class JawSample:
    """Per-point values of one jaw's maps (arrays of the broadcast shape of x and y).

    Attributes:
        sd: signed distance to the arch curve in the axial plane, mm (+ buccal).
        arc: signed arc length of the nearest curve point (+ patient right), mm.
        half_bl: half buccolingual width of the nearby teeth, mm.
        cej_z: z of the nearby CEJ centres, mm.
        apex_z: z of the nearby root apices, mm.
        posterior: 1.0 from the premolars distally, else 0.0.
    """

    sd: np.ndarray
    arc: np.ndarray
    half_bl: np.ndarray
    cej_z: np.ndarray
    apex_z: np.ndarray
    posterior: np.ndarray


class ArchMaps:
    """Rasters of :class:`JawSample` quantities over an axial rectangle.

    Args:
        layout: the dentition.
        bounds_xy: (2, 2) float64 ``[[x0, y0], [x1, y1]]`` RAS mm to cover.
        resolution_mm: pixel size; lookups are nearest-pixel, so errors are at most half of it.
    """

    _FIELDS = ("sd", "arc", "half_bl", "cej_z", "apex_z", "posterior")

    def __init__(self, layout: DentalLayout, bounds_xy: np.ndarray, resolution_mm: float = 0.25):
        bounds_xy = np.asarray(bounds_xy, dtype=np.float64)
        self.res = float(resolution_mm)
        self.x0, self.y0 = bounds_xy[0]
        self.nx = int(np.ceil((bounds_xy[1, 0] - self.x0) / self.res)) + 1
        self.ny = int(np.ceil((bounds_xy[1, 1] - self.y0) / self.res)) + 1
        xs = self.x0 + self.res * np.arange(self.nx)
        ys = self.y0 + self.res * np.arange(self.ny)
        gx, gy = np.meshgrid(xs, ys)  # (ny, nx)
        pixels = np.stack([gx.ravel(), gy.ravel()], axis=1)
        self.maps: dict[str, dict[str, np.ndarray]] = {}
        for jaw in ("upper", "lower"):
            points, arc, normals = layout.arches[jaw].polyline(min(0.1, self.res / 2.0))
            idx = self._nearest(points).ravel()
            diff = pixels - points[idx]
            dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            sd = dist * np.sign(np.einsum("ij,ij->i", diff, normals[idx]))
            near_arc = arc[idx]
            knots = sorted(
                (t for t in layout.slots if t.jaw == jaw and not t.impacted),
                key=lambda t: t.arc_mm if t.side == "right" else -t.arc_mm,
            )
            knot_arc = np.array([t.arc_mm if t.side == "right" else -t.arc_mm for t in knots])
            half_bl = np.array([t.shape.bl / 2.0 for t in knots])
            cej_z = np.array([t.cej_ras[2] for t in knots])
            apex_z = np.array([(t.cej_ras - t.axes_ras[:, 2] * t.shape.root_length)[2]
                               for t in knots])
            first_premolar = np.array([t.arc_mm - t.shape.md / 2.0 for t in knots
                                       if t.position == 4]).mean()
            fields = {
                "sd": sd,
                "arc": near_arc,
                "half_bl": np.interp(near_arc, knot_arc, half_bl),
                "cej_z": np.interp(near_arc, knot_arc, cej_z),
                "apex_z": np.interp(near_arc, knot_arc, apex_z),
                "posterior": (np.abs(near_arc) >= first_premolar).astype(np.float64),
            }
            maps = {k: v.reshape(self.ny, self.nx).astype(np.float32) for k, v in fields.items()}
            # Left and right teeth differ, so values interpolated from the nearest arch point
            # jump across the midline of the palate; a 1.5 mm blur makes them continuous.
            for k in ("half_bl", "cej_z", "apex_z"):
                maps[k] = ndimage.gaussian_filter(maps[k], 1.5 / self.res, mode="nearest")
            self.maps[jaw] = maps

    def _nearest(self, points: np.ndarray) -> np.ndarray:
        """(ny, nx) index of the curve point nearest to each pixel: the points are burnt into
        the raster and a Euclidean distance transform finds the nearest burnt pixel (a few ms,
        where a k-d tree query of every pixel takes most of a second)."""
        ix = np.rint((points[:, 0] - self.x0) / self.res).astype(np.intp)
        iy = np.rint((points[:, 1] - self.y0) / self.res).astype(np.intp)
        keep = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        owner = np.full((self.ny, self.nx), -1, np.intp)
        owner[iy[keep], ix[keep]] = np.flatnonzero(keep)
        if not keep.any():  # the curve misses the raster: fall back to the slow exact query
            return cKDTree(points).query(np.stack(np.meshgrid(
                self.x0 + self.res * np.arange(self.nx),
                self.y0 + self.res * np.arange(self.ny)), -1).reshape(-1, 2))[1].reshape(
                self.ny, self.nx)
        _, (ny_idx, nx_idx) = ndimage.distance_transform_edt(owner < 0, return_indices=True)
        return owner[ny_idx, nx_idx]

    def index(self, x, y) -> np.ndarray:
        """Flat nearest-pixel index of RAS (x, y) (broadcast shape), for :meth:`take`."""
        ix = np.rint((np.asarray(x, dtype=np.float32) - self.x0) / self.res)
        iy = np.rint((np.asarray(y, dtype=np.float32) - self.y0) / self.res)
        ix = np.clip(ix, 0, self.nx - 1).astype(np.int32)
        iy = np.clip(iy, 0, self.ny - 1).astype(np.int32)
        return iy * np.int32(self.nx) + ix

    def take(self, jaw: str, name: str, index: np.ndarray) -> np.ndarray:
        """Nearest-pixel values of one map at a flat :meth:`index` (error <= half a pixel)."""
        return np.take(self.maps[jaw][name].ravel(), index)

    def sample(self, jaw: str, x, y, smooth: bool = False) -> JawSample:
        """All maps of a jaw at RAS (x, y); x and y broadcast against each other.

        Nearest pixel by default; ``smooth=True`` interpolates bilinearly (4 look-ups, for
        surfaces that must not show the pixel steps, such as the palate of the intraoral scan).
        """
        if not smooth:
            index = self.index(x, y)
            return JawSample(**{k: self.take(jaw, k, index) for k in self._FIELDS})
        maps = self.maps[jaw]
        fx = np.clip((np.asarray(x, dtype=np.float32) - self.x0) / self.res, 0, self.nx - 1.001)
        fy = np.clip((np.asarray(y, dtype=np.float32) - self.y0) / self.res, 0, self.ny - 1.001)
        ix, iy = np.floor(fx).astype(np.intp), np.floor(fy).astype(np.intp)
        wx, wy = fx - ix, fy - iy
        out = {}
        for k in self._FIELDS:
            a = maps[k]
            out[k] = ((a[iy, ix] * (1 - wx) + a[iy, ix + 1] * wx) * (1 - wy)
                      + (a[iy + 1, ix] * (1 - wx) + a[iy + 1, ix + 1] * wx) * wy)
        return JawSample(**out)
