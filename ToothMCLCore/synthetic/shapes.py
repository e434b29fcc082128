"""Analytic tooth shapes in a tooth's own frame: crown, roots and pulp as occupancy tests.

Local frame of one tooth (millimetres), origin at the centre of the cemento-enamel junction
(CEJ, where crown meets root):

- ``u`` mesiodistal, positive towards distal (away from the midline along the arch),
- ``v`` buccolingual, positive towards buccal / labial (out of the arch),
- ``h`` along the long axis, positive towards the occlusal surface (crown ``0 <= h``, roots
  ``h < 0``).

A crown is a stack of superellipse cross-sections whose half-widths follow a profile along
``h`` (narrow at the CEJ, widest at the height of contour, then tapering to a chisel edge for
incisors, a cusp tip for canines, two cusps for premolars, a four-cusp table for molars). A
root is a tapered elliptical cone with a rounded apex; multi-rooted teeth are the union of a
short root trunk and two or three diverging roots. Pulp is an ellipsoidal chamber plus one
thin canal per root. These are not anatomical models, only shapes whose widths, heights and
silhouettes are close enough to real teeth for segmentation tests and demo training.

All functions take ``u, v, h`` as broadcastable float arrays and return boolean arrays of the
broadcast shape; no function allocates more than a few temporaries of that shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: (cervical factor, height of contour, start of occlusal taper, width at occlusal end) of the
#: mesiodistal (a) and buccolingual (b) half-widths along the crown, per kind of tooth.
_PROFILES = {
    "incisor": ((0.70, 0.60, 0.90, 0.90), (0.90, 0.20, 0.25, 0.22)),
    "canine": ((0.72, 0.50, 0.55, 0.25), (0.88, 0.30, 0.45, 0.35)),
    "premolar": ((0.72, 0.45, 0.60, 0.70), (0.82, 0.40, 0.55, 0.65)),
    "molar": ((0.80, 0.40, 0.60, 0.80), (0.82, 0.35, 0.55, 0.75)),
}
#: superellipse exponent of the crown cross-section (2 = ellipse, 3 = rounded box)
_EXPONENT = {"incisor": 2, "canine": 2, "premolar": 2, "molar": 3}
#: pulp chamber ellipsoid: (centre h, semi-axis u, v, h) as fractions of (H, A, B, H)
_CHAMBER = {
    "incisor": (0.10, 0.22, 0.18, 0.45),
    "canine": (0.10, 0.22, 0.22, 0.45),
    "premolar": (0.10, 0.25, 0.30, 0.35),
    "molar": (0.12, 0.40, 0.40, 0.22),
}
#: enamel thickness (mm) at the occlusal end of the crown
ENAMEL_MM = {"incisor": 1.0, "canine": 1.2, "premolar": 1.4, "molar": 1.7}


def tooth_kind(position: int) -> str:
    """'incisor', 'canine', 'premolar' or 'molar' for an FDI position 1..8."""
    return ("incisor", "incisor", "canine", "premolar", "premolar", "molar", "molar", "molar")[
        position - 1
    ]


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _profile(t, cervical: float, contour: float, taper: float, end: float):
    """Width factor along the crown height ``t = h / H``: rises from ``cervical`` at the CEJ to
    1 at the height of contour, then falls to ``end`` at the occlusal end."""
    rise = cervical + (1.0 - cervical) * _smoothstep(t / contour)
    x = np.clip((t - taper) / (1.0 - taper), 0.0, 1.0)
    return rise * (1.0 - (1.0 - end) * x * x)


def _power(x, n: int):
    x = np.abs(x)
    return x * x if n == 2 else x * x * x


@dataclass(frozen=True)
class RootSpec:
    """One root (or the root trunk of a multi-rooted tooth) in the tooth frame.

    Attributes:
        top_uv: (u, v) of the root centreline at ``h = 0``, mm.
        apex_uv: (u, v) of the centreline at the apex, mm.
        length: apex at ``h = -length``, mm.
        radius_uv: half-widths along u and v at the top, mm.
        trunk: True for the common trunk of a multi-rooted tooth (it has no canal).
    """

    top_uv: tuple[float, float]
    apex_uv: tuple[float, float]
    length: float
    radius_uv: tuple[float, float]
    trunk: bool = False

    def evaluate(self, u, v, h):
        """Normalised radius and approximate distance to the root surface.

        Returns:
            rho: ``sqrt((du / ra)^2 + (dv / rb)^2)`` at the point's height, <= 1 inside the
                root, inf above its top; the canal is ``rho <= canal_rho``.
            distance: outside the root, the distance (mm) to its surface along the ray from
                the centreline (exact for circles, close for the mildly elliptic roots), and
                the distance to the apex beyond it.
        """
        s = -h / self.length
        f = (1.0 - 0.45 * s) * np.sqrt(np.clip(1.0 - s * s * s, 0.0, None))
        du = u - (self.top_uv[0] + (self.apex_uv[0] - self.top_uv[0]) * s)
        dv = v - (self.top_uv[1] + (self.apex_uv[1] - self.top_uv[1]) * s)
        ra = np.maximum(self.radius_uv[0] * f, 1e-3)
        rb = np.maximum(self.radius_uv[1] * f, 1e-3)
        radial = np.sqrt(du * du + dv * dv)
        rho = np.sqrt((du / ra) ** 2 + (dv / rb) ** 2)
        distance = radial * (1.0 - 1.0 / np.maximum(rho, 1e-6))
        beyond = np.maximum(s - 1.0, 0.0) * self.length
        distance = np.where(s > 1.0, np.sqrt(radial * radial + beyond * beyond), distance)
        rho = np.where((s < 0.0) | (s > 1.0), np.inf, rho)
        return rho, distance

    def mask(self, u, v, h):
        return self.evaluate(u, v, h)[0] <= 1.0

    @property
    def canal_rho(self) -> float:
        """Canal boundary as a normalised radius: 17 % of the root, at least 0.4 mm."""
        return max(0.17, 0.4 / min(self.radius_uv))


@dataclass
class ToothVoxels:
    """Tissues of one tooth at a set of points (boolean arrays of the points' shape).

    Attributes:
        solid: crown or root. crown: the anatomical crown (``h >= 0``). enamel: outer layer of
        the crown. pulp: chamber and canals. outside_mm: approximate distance (mm) from the
        tooth surface for points outside it (used for the periodontal ligament).
    """

    solid: np.ndarray
    crown: np.ndarray
    enamel: np.ndarray
    pulp: np.ndarray
    outside_mm: np.ndarray


@dataclass(frozen=True)
class ToothShape:
    """Size and shape of one tooth, independent of where it sits.

    Attributes:
        position: FDI position 1..8 (1 central incisor .. 8 third molar).
        arch: "upper" or "lower".
        md: mesiodistal crown width, mm (the widest point, where neighbours touch).
        bl: buccolingual crown width, mm.
        crown_height: CEJ to cusp tip or incisal edge, mm.
        roots: the roots, in the tooth frame.
    """

    position: int
    arch: str
    md: float
    bl: float
    crown_height: float
    roots: tuple[RootSpec, ...]

    @property
    def kind(self) -> str:
        return tooth_kind(self.position)

    @property
    def root_length(self) -> float:
        return max(r.length for r in self.roots)

    @property
    def enamel_mm(self) -> float:
        return ENAMEL_MM[self.kind]

    def extent(self, pad: float = 0.0) -> np.ndarray:
        """(2, 3) float64 local bounding box ``[[u0, v0, h0], [u1, v1, h1]]``, mm."""
        a, b = self.md / 2.0, self.bl / 2.0
        for r in self.roots:
            a = max(a, abs(r.top_uv[0]) + r.radius_uv[0], abs(r.apex_uv[0]) + r.radius_uv[0])
            b = max(b, abs(r.top_uv[1]) + r.radius_uv[1], abs(r.apex_uv[1]) + r.radius_uv[1])
        lo = np.array([-a, -b, -self.root_length]) - pad
        hi = np.array([a, b, self.crown_height]) + pad
        return np.stack([lo, hi])

    def _top(self, uu, vv):
        """Occlusal surface height as a fraction of the crown height; uu = u/A, vv = v/B."""
        kind = self.kind
        if kind == "incisor":
            return 1.0 - 0.06 * uu * uu
        if kind == "canine":
            return 1.0 - 0.30 * np.abs(uu) - 0.08 * vv * vv
        if kind == "premolar":
            return 1.0 - 0.08 * uu * uu - 0.15 * np.exp(-((vv / 0.3) ** 2))
        groove = np.exp(-((uu / 0.25) ** 2)) + np.exp(-((vv / 0.25) ** 2))
        return 1.0 - 0.09 * groove - 0.06 * (uu * uu + vv * vv)

    def crown_depth(self, u, v, h):
        """Depth (mm) below the crown's side and occlusal surfaces, negative outside.

        The side depth is measured along the ray from the long axis (exact for circular cross
        sections, slightly more than the true distance between the axes of an elongated one);
        the occlusal depth vertically. The CEJ plane ``h = 0`` is not a surface here.
        """
        a_half, b_half, height = self.md / 2.0, self.bl / 2.0, self.crown_height
        pa, pb = _PROFILES[self.kind]
        t = h / height
        a = a_half * _profile(t, *pa)
        b = b_half * _profile(t, *pb)
        n = _EXPONENT[self.kind]
        r = _power(u / a, n) + _power(v / b, n)
        rho = np.sqrt(r) if n == 2 else np.cbrt(r)
        radial = np.sqrt(u * u + v * v)
        side = np.where(radial > 1e-6, radial * (1.0 / np.maximum(rho, 1e-9) - 1.0),
                        np.minimum(a, b))
        top = height * self._top(u / a_half, v / b_half)
        return np.minimum(side, top - h)

    def crown_mask(self, u, v, h):
        """Inside the anatomical crown (enamel and the dentin under it), ``h >= 0``."""
        return (h >= 0.0) & (self.crown_depth(u, v, h) >= 0.0)

    def root_mask(self, u, v, h):
        """Inside any root (the trunk included), ``h < 0``."""
        inside = np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v), np.shape(h)), bool)
        for root in self.roots:
            inside |= root.mask(u, v, h)
        return inside & (h < 0.0)

    def _chamber(self, u, v, h):
        ch, ca, cb, chh = _CHAMBER[self.kind]
        du = u / (ca * self.md / 2.0)
        dv = v / (cb * self.bl / 2.0)
        dh = (h - ch * self.crown_height) / (chh * self.crown_height)
        return du * du + dv * dv + dh * dh <= 1.0

    def pulp_mask(self, u, v, h):
        """Inside the pulp chamber or a root canal (soft tissue inside the dentin)."""
        inside = self._chamber(u, v, h)
        for root in self.roots:
            if not root.trunk:
                rho, _ = root.evaluate(u, v, h)
                inside |= (rho <= root.canal_rho) & (h > -0.93 * root.length)
        return inside

    def voxels(self, u, v, h, pad: float = 1.0) -> ToothVoxels:
        """All tissues at once, for voxelisation. The crown is evaluated only where
        ``0 <= h <= H + pad`` and the roots only where ``-L - pad <= h < 0`` (points are
        gathered first), which halves the work on a tooth's bounding box."""
        shape = np.broadcast_shapes(np.shape(u), np.shape(v), np.shape(h))
        u, v, h = (np.broadcast_to(a, shape).ravel() for a in (u, v, h))
        crown = np.zeros(u.size, bool)
        enamel = np.zeros(u.size, bool)
        pulp = np.zeros(u.size, bool)
        outside = np.full(u.size, np.inf, np.float32)
        ci = np.flatnonzero((h >= 0.0) & (h <= self.crown_height + pad))
        cu, cv, ch = u[ci], v[ci], h[ci]
        depth = self.crown_depth(cu, cv, ch)
        inside = depth >= 0.0
        crown[ci] = inside
        enamel[ci] = inside & (depth <= self.enamel_thickness(ch))
        outside[ci] = -depth
        pulp[ci] = self._chamber(cu, cv, ch)
        solid = crown.copy()
        ri = np.flatnonzero((h < 0.0) & (h >= -(self.root_length + pad)))
        ru, rv, rh = u[ri], v[ri], h[ri]
        root = np.zeros(ri.size, bool)
        canal = self._chamber(ru, rv, rh)
        dist_min = np.full(ri.size, np.inf, np.float32)
        for r in self.roots:
            rho, dist = r.evaluate(ru, rv, rh)
            root |= rho <= 1.0
            np.minimum(dist_min, dist, out=dist_min)
            if not r.trunk:
                canal |= (rho <= r.canal_rho) & (rh > -0.93 * r.length)
        solid[ri] = root
        outside[ri] = dist_min
        pulp[ri] = canal
        pulp &= solid
        return ToothVoxels(*(a.reshape(shape) for a in (solid, crown, enamel, pulp, outside)))

    def enamel_thickness(self, h):
        """Enamel thickness (mm) at height ``h``: thin at the CEJ, full at the occlusal third."""
        t = np.asarray(h) / self.crown_height
        return self.enamel_mm * (0.15 + 0.85 * _smoothstep(t / 0.6))

    def local_grid_points(self, step: float, part: str = "tooth") -> np.ndarray:
        """(N, 3) float64 local (u, v, h) of grid points inside the tooth ("tooth") or crown
        (cached per shape: the layout poses each shape many times; do not modify)."""
        return _grid_points(self, float(step), part)

    def _grid_points(self, step: float, part: str) -> np.ndarray:
        lo, hi = self.extent()
        us, vs, hs = (np.arange(lo[d], hi[d] + step, step) for d in range(3))
        parts = [(hs[hs >= 0.0], self.crown_mask)]
        if part == "tooth":
            parts.append((hs[hs < 0.0], self.root_mask))
        out = []
        for h_axis, inside in parts:
            u, v, h = np.meshgrid(us, vs, h_axis, indexing="ij")
            keep = inside(u, v, h)
            out.append(np.stack([u[keep], v[keep], h[keep]], axis=1))
        return np.concatenate(out)


@functools.lru_cache(maxsize=512)
def _grid_points(shape: ToothShape, step: float, part: str) -> np.ndarray:
    points = shape._grid_points(step, part)
    points.flags.writeable = False
    return points


def build_roots(arch: str, position: int, md: float, bl: float, length: float) -> tuple:
    """Roots of a tooth: one for anterior teeth and premolars, two for the upper first premolar
    (buccal, palatal) and lower molars (mesial, distal), three for upper molars (two buccal,
    one palatal). Multi-rooted teeth get a rounded trunk a third of the root length long (the furcation
    lies at about a quarter of the root length)."""
    pa, pb = _PROFILES[tooth_kind(position)]
    ra, rb = pa[0] * md / 2.0, pb[0] * bl / 2.0
    a, b = md / 2.0, bl / 2.0
    single = RootSpec((0.0, 0.0), (0.06 * a, 0.0), length, (ra, rb))
    if arch == "upper" and position == 4:
        trunk = RootSpec((0.0, 0.0), (0.0, 0.0), 0.9 * length, (ra, rb), trunk=True)
        return (
            trunk,
            RootSpec((0.0, 0.35 * b), (0.0, 0.45 * b), length, (0.6 * ra, 0.45 * rb)),
            RootSpec((0.0, -0.35 * b), (0.0, -0.45 * b), 0.95 * length, (0.6 * ra, 0.45 * rb)),
        )
    if position >= 6 and arch == "upper":
        trunk = RootSpec((0.0, 0.0), (0.0, 0.0), 0.35 * length, (ra, rb), trunk=True)
        return (
            trunk,
            RootSpec((-0.35 * a, 0.35 * b), (-0.45 * a, 0.5 * b), 0.95 * length, (0.35 * ra, 0.35 * rb)),
            RootSpec((0.35 * a, 0.35 * b), (0.45 * a, 0.5 * b), 0.85 * length, (0.35 * ra, 0.35 * rb)),
            RootSpec((0.0, -0.35 * b), (0.0, -0.6 * b), length, (0.42 * ra, 0.40 * rb)),
        )
    if position >= 6:
        trunk = RootSpec((0.0, 0.0), (0.0, 0.0), 0.35 * length, (ra, rb), trunk=True)
        return (
            trunk,
            RootSpec((-0.4 * a, 0.0), (-0.45 * a, 0.0), length, (0.36 * ra, 0.8 * rb)),
            RootSpec((0.4 * a, 0.0), (0.55 * a, 0.0), 0.92 * length, (0.34 * ra, 0.75 * rb)),
        )
    return (single,)
