"""Synthetic dental CBCT: an image and its FDI label map, drawn from a :class:`DentalLayout`.

Intensity model (before blur, noise and ``offset``; each tissue value varies by +-4 % per seed):

=========================  =========  ============================================
tissue                     value      where
=========================  =========  ============================================
air                        0          outside the face, bite gap, 2.5 mm under the palate,
                                      nasal cavity, maxillary sinuses
soft tissue                350        lips, cheeks, tongue, gingiva
periodontal ligament       450        0.25 mm around roots inside bone
pulp (chamber and canals)  420        inside dentin
cancellous bone            1000       maxilla and mandible (horseshoe slabs, palate),
                                      with a trabecular texture (sd ~50, ~1.2 mm grain)
cortical bone              1380       outer 1.3 mm of the bone, lamina dura around roots
dentin                     1750       crown and root
enamel                     2350       outer 1.0-1.7 mm of the crown, thinning to the CEJ
metal (optional)           4000       1.6 mm shell of one or two crowns, plus streaks
=========================  =========  ============================================

Then a Gaussian blur (``blur_mm`` = sigma), additive Gaussian noise (``noise_std``), clipping to
[0, 4000] (metal saturates, as on many scanners) and finally ``+ offset``.

Metal streaks: bright and dark lines radiating from each metal crown in the world axial plane
(the scanner's rotation plane for an upright patient), within the crown's height, fading over
about 25 mm, plus a dark band joining two metal crowns (photon starvation between them).

Voxel work per tooth is done in the tooth's own bounding box; bone and soft tissue are looked
up from axial-plane maps (:mod:`.anatomy`), so an axis-aligned grid costs 2-D work per slice.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..errors import InvalidInputError
from ..fdi import METAL_LABEL
from ..types import Geometry, Volume
from .anatomy import ArchMaps
from .geometry import DentalLayout, make_layout

logger = logging.getLogger(__name__)

INTENSITY = {
    "air": 0.0, "soft": 350.0, "pdl": 450.0, "pulp": 420.0, "cancellous": 1000.0,
    "cortical": 1380.0, "dentin": 1750.0, "enamel": 2350.0, "metal": 4000.0,
}
MAX_INTENSITY = 4000.0
DEFAULT_FOV_MM = (70.0, 70.0, 60.0)
_AXIS_LETTERS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0),
                 "S": (2, 1.0), "I": (2, -1.0)}


def orientation_matrix(orientation) -> np.ndarray:
    """(3, 3) float64 direction matrix (columns: RAS directions of i, j, k) of an orientation.

    Args:
        orientation: a three-letter code naming where each voxel axis points ("RAS" identity,
            "LPS" = diag(-1, -1, 1), "PIR", ...), "oblique" (RAS rotated 15 degrees about S and
            then 12 degrees about R, a tilted head), or a (3, 3) rotation matrix.
    """
    if isinstance(orientation, str):
        code = orientation.upper()
        if code == "OBLIQUE":
            a, b = np.radians(15.0), np.radians(12.0)
            rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
            rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
            return rz @ rx
        if len(code) == 3 and all(c in _AXIS_LETTERS for c in code):
            m = np.zeros((3, 3))
            for col, c in enumerate(code):
                row, sign = _AXIS_LETTERS[c]
                m[row, col] = sign
            if abs(abs(np.linalg.det(m)) - 1.0) < 1e-6:
                return m
        raise InvalidInputError(
            f"orientation must be a code such as 'RAS' or 'LPS' (one of R/L, A/P, S/I each), "
            f"'oblique', or a 3x3 rotation matrix (got {orientation!r})"
        )
    m = np.asarray(orientation, dtype=np.float64)
    if m.shape != (3, 3) or not np.allclose(m.T @ m, np.eye(3), atol=1e-6):
        raise InvalidInputError(f"orientation matrix must be a 3x3 rotation (got {m.tolist()})")
    return m


def phantom_grid(layout: DentalLayout, spacing=(0.3, 0.3, 0.3), field_of_view_mm=None,
                 orientation="RAS", margin_mm: float = 3.0) -> tuple[Geometry, tuple[int, int, int]]:
    """Voxel grid centred on the dentition: its geometry and array shape ``(K, J, I)``.

    Args:
        spacing: voxel size along i, j, k (mm); a scalar means isotropic.
        field_of_view_mm: extent (mm) along the patient's R-L, A-P and S-I axes (each voxel
            axis takes the extent of the patient axis it is closest to). None means 70 x 70 x 60
            enlarged where needed so every tooth lies at least ``margin_mm`` inside; an explicit
            value is used as given (teeth outside it are cut, as in a small-FOV scan).
        orientation: see :func:`orientation_matrix`.

    Returns:
        ``(geometry, shape_kji)``: the RAS :class:`~ToothMCLCore.types.Geometry` and the array
        shape ``(K, J, I)``.
    """
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
    if np.any(~np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InvalidInputError(f"spacing must be positive (got {spacing.tolist()} mm)")
    direction = orientation_matrix(orientation)
    dominant = np.argmax(np.abs(direction), axis=0)
    points = np.concatenate([t.points_ras(1.0) for t in layout.teeth])
    centre = (points.min(axis=0) + points.max(axis=0)) / 2.0
    if field_of_view_mm is None:
        fov = np.asarray(DEFAULT_FOV_MM)[dominant]
        need = 2.0 * (np.abs((points - centre) @ direction).max(axis=0) + margin_mm)
        fov = np.maximum(fov, need)
    else:
        fov = np.broadcast_to(np.asarray(field_of_view_mm, dtype=np.float64), (3,))[dominant]
        if np.any(fov <= 0):
            raise InvalidInputError(f"field_of_view_mm must be positive (got {field_of_view_mm})")
    n = np.maximum(np.ceil(fov / spacing - 1e-6).astype(int), 2)
    origin = centre - direction @ (spacing * (n - 1) / 2.0)
    return Geometry(spacing, origin, direction), (int(n[2]), int(n[1]), int(n[0]))


def _coords(geometry: Geometry, kr: range, jr: range, ir: range):
    """RAS x, y, z of the voxel centres of a box, as broadcastable float32 arrays: a coordinate
    that does not depend on a voxel axis has length 1 along it, so an axis-aligned grid gives
    2-D work per slice instead of 3-D."""
    m = geometry.ijk_to_ras
    idx = [np.arange(r.start, r.stop, dtype=np.float64) for r in (ir, jr, kr)]
    shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
    out = []
    for row in range(3):
        c = np.full((1, 1, 1), m[row, 3])
        for col in range(3):
            if abs(m[row, col]) > 1e-12:
                c = c + m[row, col] * idx[col].reshape(shapes[col])
        out.append(c.astype(np.float32))
    return out


def _background(x, y, z, maps: ArchMaps, value: dict, gap: float):
    """Intensity and bone mask of jaw bone, soft tissue and air at broadcastable (x, y, z)."""
    shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    index = maps.index(x, y)
    sd_u, hb_u, cej_u = (maps.take("upper", k, index) for k in ("sd", "half_bl", "cej_z"))
    sd_l, hb_l, cej_l = (maps.take("lower", k, index) for k in ("sd", "half_bl", "cej_z"))
    img = np.full(shape, value["soft"], np.float32)
    # outside the lips and cheeks (about 10 mm beyond the teeth): air
    face = np.minimum(sd_u - hb_u, sd_l - hb_l) < 10.0
    img[~np.broadcast_to(face, shape)] = value["air"]
    # the open bite, and a thin layer of air between tongue and palate
    depth_u = z - (cej_u + 1.5)
    vault = cej_u + 1.5 + 11.0 * (1.0 - np.exp(np.minimum(sd_u, 0.0) / 6.0))
    bite = (np.abs(z) <= gap / 2.0 + 0.4) & (sd_l < hb_l + 1.0) & face
    palatal_air = (sd_u < -hb_u) & (z > vault - 3.0) & (z < vault - 0.5)
    img[np.broadcast_to(bite | palatal_air, shape)] = value["air"]

    width_u = hb_u + 1.2 + 0.25 * np.clip(depth_u, 0.0, 16.0)
    alveolar_u = (depth_u >= 0.0) & (np.abs(sd_u) <= width_u)
    palate = (sd_u < 0.0) & (z >= vault) & (z <= vault + 3.5)
    margin_u = np.minimum(width_u - np.abs(sd_u), depth_u)
    depth_l = (cej_l - 1.5) - z
    width_l = hb_l + 1.2 + 0.3 * np.clip(depth_l, 0.0, 12.0)
    mandible = (depth_l >= 0.0) & (np.abs(sd_l) <= width_l)
    margin_l = np.minimum(width_l - np.abs(sd_l), depth_l)
    bone = np.broadcast_to(alveolar_u | palate | mandible, shape).copy()
    cortical = (alveolar_u & (margin_u < 1.3)) | palate | (mandible & (margin_l < 1.3))
    img[bone] = value["cancellous"]
    img[np.broadcast_to(cortical, shape) & bone] = value["cortical"]

    # nasal cavity above the palate, maxillary sinuses above the molar apices
    post_u, apex_u = maps.take("upper", "posterior", index), maps.take("upper", "apex_z", index)
    nasal = (sd_u < 0.0) & (z > vault + 3.5) & ~alveolar_u
    sinus_floor = apex_u + 2.5
    sinus = (post_u > 0) & alveolar_u & (z > sinus_floor) & (np.abs(sd_u) < width_u - 1.5)
    sinus_rim = (post_u > 0) & alveolar_u & (z > sinus_floor - 1.2) & ~sinus
    img[np.broadcast_to(sinus_rim, shape)] = value["cortical"]
    air = np.broadcast_to(nasal | sinus, shape)
    img[air] = value["air"]
    bone &= ~air
    # mandibular canal under the premolar and molar roots
    post_l, apex_l = maps.take("lower", "posterior", index), maps.take("lower", "apex_z", index)
    r2 = (sd_l + 0.5) ** 2 + (z - (apex_l - 3.0)) ** 2
    canal_wall = (post_l > 0) & mandible & (r2 <= 2.0 ** 2)
    canal = canal_wall & (r2 <= 1.4 ** 2)
    img[np.broadcast_to(canal_wall, shape)] = value["cortical"]
    img[np.broadcast_to(canal, shape)] = value["soft"]
    return img, bone


def _smooth_noise(shape, spacing_kji, cell_mm: float, rng) -> np.ndarray:
    """(K, J, I) float32 noise with unit-ish standard deviation and features about ``cell_mm``
    across: Gaussian noise on a coarse grid, linearly interpolated one axis at a time (about
    ten times cheaper than ``ndimage.zoom``)."""
    coarse_shape = [int(np.ceil(n * s / cell_mm)) + 2 for n, s in zip(shape, spacing_kji)]
    field = rng.standard_normal(coarse_shape, dtype=np.float32)
    for axis, (n, s) in enumerate(zip(shape, spacing_kji)):
        pos = np.arange(n) * s / cell_mm
        i0 = np.floor(pos).astype(np.intp)
        w = (pos - i0).astype(np.float32)
        bshape = [1, 1, 1]
        bshape[axis] = n
        w = w.reshape(bshape)
        field = np.take(field, i0, axis=axis) * (1 - w) + np.take(field, i0 + 1, axis=axis) * w
    return field


def _tooth_box(geometry: Geometry, shape_kji, tooth, pad: float):
    """Index ranges (k, j, i) of the voxels around a tooth, or None if it is outside the grid."""
    ext = tooth.shape.extent(pad)
    corners = np.array([[ext[a, 0], ext[b, 1], ext[c, 2]]
                        for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    ras = tooth.to_ras(corners)
    ijk = (geometry.ras_to_ijk @ np.c_[ras, np.ones(8)].T)[:3].T
    lo = np.maximum(np.floor(ijk.min(0)).astype(int), 0)
    hi = np.minimum(np.ceil(ijk.max(0)).astype(int) + 1, np.array(shape_kji[::-1]))
    if np.any(hi <= lo):
        return None
    return range(lo[2], hi[2]), range(lo[1], hi[1]), range(lo[0], hi[0])


def _draw_teeth(image, labels, bone, geometry: Geometry, layout: DentalLayout, value: dict,
                metal_teeth) -> None:
    """Write dentin, enamel, pulp, PDL, lamina dura and optional metal of every present tooth.

    A voxel claimed by a tooth is never re-claimed by a later one (teeth are disjoint by
    construction up to voxel rounding). Enamel is the part of the crown within the enamel
    thickness of its surface; the approximate distance outside the tooth gives the PDL
    (0.25 mm) and lamina dura (0.25-0.75 mm) shells, drawn only inside bone.
    """
    m = geometry.ijk_to_ras
    for t in layout.teeth:
        box = _tooth_box(geometry, labels.shape, t, pad=1.0)
        if box is None:
            continue
        kr, jr, ir = box
        lin = t.axes_ras.T @ m[:3, :3]
        off = t.axes_ras.T @ (m[:3, 3] - t.cej_ras)
        idx = (np.arange(ir.start, ir.stop)[None, None, :],
               np.arange(jr.start, jr.stop)[:, None][None],
               np.arange(kr.start, kr.stop)[:, None, None])
        u, v, h = (
            (off[r] + lin[r, 0] * idx[0] + lin[r, 1] * idx[1] + lin[r, 2] * idx[2]).astype(
                np.float32)
            for r in range(3)
        )
        vox = t.shape.voxels(u, v, h)
        if not vox.solid.any():
            continue
        sl = (slice(kr.start, kr.stop), slice(jr.start, jr.stop), slice(ir.start, ir.stop))
        lab, img, bn = labels[sl], image[sl], bone[sl]
        free = lab == 0
        own = vox.solid & free
        tissue = np.where(vox.pulp, value["pulp"], value["dentin"])
        tissue = np.where(vox.enamel, value["enamel"], tissue)
        img[own] = tissue[own]
        lab[own] = t.fdi
        if t.fdi in metal_teeth:
            depth = t.shape.crown_depth(u, v, h)
            metal = own & vox.crown & (depth <= 1.6) & (h >= 0.3)
            img[metal] = value["metal"]
            lab[metal] = METAL_LABEL
        around = free & ~vox.solid & bn
        img[around & (vox.outside_mm <= 0.25)] = value["pdl"]
        img[around & (vox.outside_mm > 0.25) & (vox.outside_mm <= 0.75)] = value["cortical"]


def _pick_metal(layout: DentalLayout, metal, rng) -> tuple[int, ...]:
    if metal is None or metal is False or (isinstance(metal, int) and metal == 0):
        return ()
    candidates = [t.fdi for t in layout.teeth if not t.impacted and 4 <= t.position <= 7]
    if isinstance(metal, (bool, int, np.integer)):
        count = (1 + int(rng.uniform() < 0.5)) if metal is True else int(metal)
        if count < 0:
            raise InvalidInputError(f"metal must be a bool, a count or FDI numbers (got {metal})")
        return tuple(sorted(int(n) for n in rng.permutation(candidates)[:count]))
    chosen = tuple(sorted(int(n) for n in metal))
    absent = [n for n in chosen if n not in layout.fdi_numbers]
    if absent:
        raise InvalidInputError(
            f"metal crowns requested on teeth {absent} that are not present; "
            f"choose among {list(layout.fdi_numbers)}"
        )
    return chosen


def _streak_field(x, y, z, sources):
    """Streak intensity at broadcastable RAS (x, y, z) for the metal ``sources``."""
    field = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.float32)
    for centre, zmin, zmax, angles, amps in sources:
        window = np.clip(z - zmin + 1.0, 0, 1) * np.clip(zmax + 1.0 - z, 0, 1)
        dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
        fade = np.exp(-np.sqrt(dx * dx + dy * dy) / 25.0)
        lines = 0.0
        for a, amp in zip(angles, amps):
            perp = dx * np.float32(np.sin(a)) - dy * np.float32(np.cos(a))
            lines = lines + np.float32(amp) * np.exp(-(perp / 0.4) ** 2)
        field += window * fade * lines
    if len(sources) >= 2:  # photon starvation between two metal crowns: a dark band
        (c0, z0a, z0b, _, _), (c1, z1a, z1b, _, _) = sources[:2]
        d = (c1 - c0)[:2]
        length = max(float(np.linalg.norm(d)), 1e-6)
        d = d / length
        dx, dy = x - np.float32(c0[0]), y - np.float32(c0[1])
        along = (dx * d[0] + dy * d[1]) / length
        perp = dx * d[1] - dy * d[0]
        window = np.clip(z - max(z0a, z1a) + 1.0, 0, 1) * np.clip(min(z0b, z1b) + 1.0 - z, 0, 1)
        inside = np.exp(-np.maximum(np.abs(along - 0.5) - 0.5, 0.0) * length / 10.0)
        field += window * inside * np.float32(-600.0) * np.exp(-(perp / 1.2) ** 2)
    return field


def _add_streaks(image, geometry: Geometry, layout: DentalLayout, metal_teeth, rng,
                 chunk: int = 32) -> None:
    """Bright and dark lines radiating from each metal crown in the world axial plane."""
    sources = []
    for n in metal_teeth:
        pts = layout.tooth(n).points_ras(0.5, "crown")
        angles = rng.uniform(0.0, np.pi, 10)
        amps = rng.choice([-1.0, 1.0], 10) * rng.uniform(250.0, 700.0, 10)
        sources.append((pts.mean(0), pts[:, 2].min(), pts[:, 2].max(), angles, amps))
    if not sources:
        return
    z_lo = min(s[1] for s in sources) - 1.0
    z_hi = max(s[2] for s in sources) + 1.0
    K, J, I = image.shape
    for k0 in range(0, K, chunk):
        kr = range(k0, min(k0 + chunk, K))
        x, y, z = _coords(geometry, kr, range(J), range(I))
        full = np.broadcast_shapes(x.shape, y.shape, z.shape)
        if x.shape != full or y.shape != full:  # axis-aligned: cheap 2-D x 1-D broadcasting
            image[k0:kr.stop] += _streak_field(x, y, z, sources)
            continue
        zf = np.broadcast_to(z, full).reshape(-1)
        sel = np.flatnonzero((zf >= z_lo) & (zf <= z_hi))  # oblique: only the slab near metal
        if sel.size:
            view = image[k0:kr.stop].reshape(-1)
            view[sel] += _streak_field(x.reshape(-1)[sel], y.reshape(-1)[sel], zf[sel], sources)


def make_cbct_phantom(seed: int = 0, *, spacing=(0.3, 0.3, 0.3), field_of_view_mm=None,
                      orientation="RAS", offset: float = 0.0, metal=False,
                      noise_std: float = 40.0, blur_mm: float = 0.35, missing=None,
                      impacted=None, third_molars=None,
                      layout: DentalLayout | None = None) -> tuple[Volume, Volume]:
    """A synthetic dental CBCT and its tooth label map.

    Args:
        seed: non-negative integer; the same arguments always give the same volumes.
        spacing: voxel size along i, j, k in mm (scalar = isotropic). 0.3 gives about
            234 x 234 x 200 voxels; 0.8 a tiny phantom for fast tests.
        field_of_view_mm: see :func:`phantom_grid` (default about 70 x 70 x 60 mm).
        orientation: "RAS", "LPS", any three-letter code, "oblique" or a 3x3 rotation. The
            anatomy is at the same RAS position whatever the orientation; only the voxel grid
            changes.
        offset: added to every voxel at the end (e.g. -1000 for scanners that store CBCT with
            an offset).
        metal: False, True (one or two premolar/molar crowns), a count, or FDI numbers.
        noise_std: standard deviation of the additive Gaussian noise.
        blur_mm: sigma of the Gaussian blur in mm (0 = none).
        missing, impacted, third_molars: passed to :func:`make_layout` (ignored if ``layout``
            is given).
        layout: draw this layout instead of making one from the seed.

    Returns:
        ``(image, labels)``: image (K, J, I) float32 on the intensity model of this module;
        labels (K, J, I) uint8 with the FDI number of each tooth voxel (crown and root, pulp
        included), :data:`~ToothMCLCore.fdi.METAL_LABEL` (99) where a metal crown is, 0
        elsewhere. Both share one :class:`~ToothMCLCore.types.Geometry`; metadata holds the
        seed, present / impacted / metal teeth and the tissue values used.
    """
    if layout is None:
        layout = make_layout(seed, missing=missing, impacted=impacted, third_molars=third_molars)
    seed = int(layout.seed)
    geometry, shape = phantom_grid(layout, spacing, field_of_view_mm, orientation)
    jitter = np.random.default_rng([seed, 11]).uniform(-0.04, 0.04, len(INTENSITY))
    value = {k: v if k in ("air", "metal") else v * (1.0 + j)
             for (k, v), j in zip(INTENSITY.items(), jitter)}
    metal_teeth = _pick_metal(layout, metal, np.random.default_rng([seed, 12]))

    corners = np.array([[a, b, c] for a in (0, shape[2] - 1) for b in (0, shape[1] - 1)
                        for c in (0, shape[0] - 1)], dtype=np.float64)
    ras = (geometry.ijk_to_ras @ np.c_[corners, np.ones(8)].T)[:3].T
    res = min(0.25, float(geometry.spacing.min()) / 2.0)
    maps = ArchMaps(layout, np.stack([ras.min(0)[:2] - 1.0, ras.max(0)[:2] + 1.0]), res)
    image = np.empty(shape, np.float32)
    bone = np.empty(shape, bool)

    chunk = 32
    for k0 in range(0, shape[0], chunk):
        kr = range(k0, min(k0 + chunk, shape[0]))
        x, y, z = _coords(geometry, kr, range(shape[1]), range(shape[2]))
        image[k0:kr.stop], bone[k0:kr.stop] = _background(x, y, z, maps, value,
                                                           layout.occlusal_gap_mm)
    texture = _smooth_noise(shape, geometry.spacing[::-1], 1.2, np.random.default_rng([seed, 15]))
    texture *= np.float32(90.0)
    texture *= bone
    image += texture
    del texture
    labels = np.zeros(shape, np.uint8)
    _draw_teeth(image, labels, bone, geometry, layout, value, metal_teeth)
    if metal_teeth:
        _add_streaks(image, geometry, layout, metal_teeth, np.random.default_rng([seed, 13]))
    if blur_mm > 0:
        image = ndimage.gaussian_filter(image, sigma=blur_mm / geometry.spacing[::-1],
                                        truncate=3.0)
    if noise_std > 0:
        noise = np.random.default_rng([seed, 14]).standard_normal(shape, dtype=np.float32)
        noise *= np.float32(noise_std)
        image += noise
    np.clip(image, 0.0, MAX_INTENSITY, out=image)
    if offset:
        image += np.float32(offset)
    meta = {
        "seed": seed,
        "teeth": list(layout.fdi_numbers),
        "impacted": list(layout.impacted),
        "metal_teeth": list(metal_teeth),
        "intensity": {k: round(float(v), 1) for k, v in value.items()},
        "offset": float(offset),
    }
    logger.debug("synthetic CBCT seed %d: %s voxels, %d teeth, metal on %s", seed, shape,
                 len(layout.teeth), list(metal_teeth))
    source = f"synthetic CBCT phantom (seed {seed})"
    return (Volume(image, geometry, source, dict(meta)),
            Volume(labels, geometry, source + " labels", dict(meta)))
