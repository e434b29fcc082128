"""The shared anatomical layout of a synthetic dentition: arches, teeth, their poses.

One :class:`DentalLayout` per seed is the truth both phantoms are drawn from: the CBCT phantom
(:mod:`.cbct`) voxelises it, the intraoral-scan phantom (:mod:`.ios`) meshes the visible part
of it, so the two are registered by construction.

Patient frame: RAS millimetres, as everywhere in ToothMCL: ``+x`` is the patient's **right**
(quadrants 1 and 4 have ``x > 0``), ``+y`` anterior, ``+z`` superior. The occlusal plane is
``z = 0``; upper crowns point down (``-z``) to ``z = +gap / 2``, lower crowns point up to
``z = -gap / 2``, so the jaws never touch (a slightly open bite, as with a bite block). The
midline is ``x = 0``; the central incisors' CEJs sit near ``y = +25``.

Arch curve: a quarter ellipse from the midline to the premolar-molar region, continued by a
straight line that diverges a little (real arches are U-shaped rather than parabolic). Teeth
are placed along it by arc length, each after its mesial neighbour, using its extent along the
arch tangent in its tilted and rotated pose (at least the nominal mesiodistal width) plus a
0.3 mm gap, so neighbours nearly touch but never interpenetrate. A missing tooth keeps its
place (its slot): neighbours do not drift, and the other teeth of a seed do not move when
teeth are removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..fdi import PERMANENT_FDI, tooth
from .shapes import ToothShape, build_roots

#: Mean crown mesiodistal width, buccolingual width, crown height and root length (mm) per
#: (arch, FDI position), after Wheeler's tables. Roots are shortened by ROOT_LENGTH_FACTOR so
#: that a whole dentition fits a 60 mm high field of view.
TOOTH_DIMENSIONS = {
    ("upper", 1): (8.5, 7.0, 10.5, 13.0),
    ("upper", 2): (6.5, 6.0, 9.0, 13.0),
    ("upper", 3): (7.5, 8.0, 10.0, 17.0),
    ("upper", 4): (7.0, 9.0, 8.5, 14.0),
    ("upper", 5): (6.8, 9.0, 8.0, 14.0),
    ("upper", 6): (10.0, 11.0, 7.5, 12.5),
    ("upper", 7): (9.0, 11.0, 7.0, 11.5),
    ("upper", 8): (8.5, 10.0, 6.5, 11.0),
    ("lower", 1): (5.3, 5.8, 9.0, 12.5),
    ("lower", 2): (5.8, 6.2, 9.5, 14.0),
    ("lower", 3): (7.0, 7.5, 11.0, 16.0),
    ("lower", 4): (7.0, 7.5, 8.5, 14.0),
    ("lower", 5): (7.0, 8.0, 8.0, 14.5),
    ("lower", 6): (11.0, 10.5, 7.5, 14.0),
    ("lower", 7): (10.5, 10.0, 7.0, 13.0),
    ("lower", 8): (10.0, 9.5, 7.0, 11.0),
}
ROOT_LENGTH_FACTOR = 0.85
#: crown torque (deg, + = crown towards buccal) and mesial angulation (deg) per position
_TORQUE = {"upper": (14, 10, 6, 2, 2, 0, 0, 0), "lower": (6, 6, 3, 0, -2, -4, -5, -5)}
_ANGULATION = {"upper": (4, 7, 8, 3, 3, 2, 2, 2), "lower": (2, 2, 5, 2, 2, 2, 2, 2)}
#: nominal arch: ellipse half-width, depth, divergence of the straight tail (rad), y of midline
_ARCH = {"upper": (27.5, 31.0, 0.20, 25.0), "lower": (25.5, 29.5, 0.20, 22.5)}
_CONTACT_GAP_MM = 0.3


@dataclass(frozen=True, eq=False)
class ArchCurve:
    """Right half of one arch in the axial plane; the left half is its mirror ``x -> -x``.

    Attributes:
        points_xy: (P, 2) float64 RAS (x, y), from the midline (x = 0) distally, x >= 0.
        arc_mm: (P,) float64 arc length of each point from the midline.
    """

    points_xy: np.ndarray
    arc_mm: np.ndarray

    def point(self, arc_mm: float, side: str) -> np.ndarray:
        """(2,) float64 RAS (x, y) at an arc length from the midline on the patient's side."""
        x = np.interp(arc_mm, self.arc_mm, self.points_xy[:, 0])
        y = np.interp(arc_mm, self.arc_mm, self.points_xy[:, 1])
        return np.array([x if side == "right" else -x, y])

    def distal(self, arc_mm: float, side: str) -> np.ndarray:
        """(2,) unit tangent pointing distally (away from the midline)."""
        d = self.point(arc_mm + 0.05, side) - self.point(max(arc_mm - 0.05, 0.0), side)
        return d / np.linalg.norm(d)

    def buccal(self, arc_mm: float, side: str) -> np.ndarray:
        """(2,) unit normal pointing out of the arch (buccal / labial)."""
        t = self.distal(arc_mm, side)
        return np.array([-t[1], t[0]]) if side == "right" else np.array([t[1], -t[0]])

    def polyline(self, step: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both halves as one polyline, left end to right end.

        Returns:
            points_xy (Q, 2) float64, signed arc (Q,) float64 (negative on the patient's left),
            buccal normals (Q, 2) float64.
        """
        s = np.arange(0.0, self.arc_mm[-1], step)
        right = np.stack([np.interp(s, self.arc_mm, self.points_xy[:, k]) for k in (0, 1)], 1)
        tangent = np.gradient(right, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        normal_r = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
        left = right[1:][::-1] * [-1.0, 1.0]
        normal_l = normal_r[1:][::-1] * [-1.0, 1.0]
        return (
            np.concatenate([left, right]),
            np.concatenate([-s[1:][::-1], s]),
            np.concatenate([normal_l, normal_r]),
        )


def make_arch(half_width: float, depth: float, divergence: float, y_front: float,
              tail_mm: float = 90.0) -> ArchCurve:
    """Quarter ellipse ``(a sin t, y_front - b (1 - cos t))`` up to ``t = pi/2 - divergence``,
    then a straight tail of ``tail_mm`` along the end tangent."""
    t = np.linspace(0.0, np.pi / 2 - divergence, 3000)
    pts = np.stack([half_width * np.sin(t), y_front - depth * (1.0 - np.cos(t))], axis=1)
    tangent = np.array([half_width * np.cos(t[-1]), -depth * np.sin(t[-1])])
    tangent /= np.linalg.norm(tangent)
    tail = pts[-1] + np.linspace(0.0, tail_mm, 900)[1:, None] * tangent
    pts = np.concatenate([pts, tail])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    return ArchCurve(pts, arc)


@dataclass(frozen=True, eq=False)
class PlacedTooth:
    """One tooth slot of the layout: its shape and where it sits.

    Attributes:
        fdi: FDI number.
        shape: size and shape (:class:`~.shapes.ToothShape`).
        cej_ras: (3,) float64 RAS position of the CEJ centre (origin of the tooth frame), mm.
        axes_ras: (3, 3) float64, columns are the RAS unit vectors of the tooth frame: u
            (distal), v (buccal), w (occlusal, from root to crown tip).
        arc_mm: arc length of the slot from the midline along its arch.
        present: False for a missing tooth (the slot still shapes bone and gingiva).
        impacted: True for an impacted tooth (tilted, below the bone crest, not erupted).
    """

    fdi: int
    shape: ToothShape
    cej_ras: np.ndarray
    axes_ras: np.ndarray
    arc_mm: float
    present: bool = True
    impacted: bool = False

    @property
    def jaw(self) -> str:
        return tooth(self.fdi).arch

    @property
    def side(self) -> str:
        return tooth(self.fdi).side

    @property
    def position(self) -> int:
        return tooth(self.fdi).position

    @property
    def center_ras(self) -> np.ndarray:
        """(3,) float64 midpoint of the tooth along its long axis."""
        w = self.axes_ras[:, 2]
        return self.cej_ras + w * (self.shape.crown_height - self.shape.root_length) / 2.0

    @property
    def crown_center_ras(self) -> np.ndarray:
        """(3,) float64 middle of the crown on the long axis."""
        return self.cej_ras + self.axes_ras[:, 2] * self.shape.crown_height / 2.0

    def to_local(self, points_ras: np.ndarray) -> np.ndarray:
        """(N, 3) local (u, v, h) of (N, 3) RAS points."""
        return (np.asarray(points_ras, dtype=np.float64) - self.cej_ras) @ self.axes_ras

    def to_ras(self, points_local: np.ndarray) -> np.ndarray:
        return np.asarray(points_local) @ self.axes_ras.T + self.cej_ras

    def contains(self, points_ras: np.ndarray, part: str = "tooth") -> np.ndarray:
        """(N,) bool: inside the tooth ("tooth"), its crown ("crown") or root ("root")."""
        u, v, h = self.to_local(points_ras).T
        if part == "crown":
            return self.shape.crown_mask(u, v, h)
        if part == "root":
            return self.shape.root_mask(u, v, h)
        return self.shape.crown_mask(u, v, h) | self.shape.root_mask(u, v, h)

    def points_ras(self, step: float = 0.5, part: str = "tooth") -> np.ndarray:
        """(N, 3) float64 RAS grid points inside the tooth or its crown (``step`` mm apart)."""
        return self.to_ras(self.shape.local_grid_points(step, part))

    def bounds_ras(self, pad: float = 0.0) -> np.ndarray:
        """(2, 3) float64 RAS bounding box of the local bounding box's corners."""
        ext = self.shape.extent(pad)
        corners = np.array([[ext[a, 0], ext[b, 1], ext[c, 2]]
                            for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        pts = self.to_ras(corners)
        return np.stack([pts.min(0), pts.max(0)])


@dataclass(frozen=True, eq=False)
class DentalLayout:
    """The shared truth of one synthetic patient.

    Attributes:
        seed: the seed it was made from.
        slots: all 32 permanent tooth slots in FDI order, present or not.
        arches: {"upper": ArchCurve, "lower": ArchCurve} through the CEJ centres.
        occlusal_gap_mm: vertical gap between upper and lower cusp tips.
    """

    seed: int
    slots: tuple[PlacedTooth, ...]
    arches: dict
    occlusal_gap_mm: float

    @property
    def teeth(self) -> tuple[PlacedTooth, ...]:
        """Present teeth (erupted or impacted) in FDI order."""
        return tuple(t for t in self.slots if t.present)

    @property
    def fdi_numbers(self) -> tuple[int, ...]:
        return tuple(t.fdi for t in self.teeth)

    @property
    def absent(self) -> tuple[int, ...]:
        return tuple(t.fdi for t in self.slots if not t.present)

    @property
    def impacted(self) -> tuple[int, ...]:
        return tuple(t.fdi for t in self.teeth if t.impacted)

    def tooth(self, fdi: int) -> PlacedTooth:
        for t in self.slots:
            if t.fdi == fdi:
                return t
        raise InvalidInputError(f"{fdi} is not a permanent FDI tooth number (11-48)")

    def jaw_teeth(self, jaw: str, erupted_only: bool = False) -> tuple[PlacedTooth, ...]:
        """Present teeth of one jaw in FDI order (optionally without impacted teeth)."""
        return tuple(t for t in self.teeth
                     if t.jaw == jaw and not (erupted_only and t.impacted))

    @property
    def centers_ras(self) -> dict[int, np.ndarray]:
        return {t.fdi: t.center_ras for t in self.teeth}

    def bounds_ras(self, pad: float = 0.0) -> np.ndarray:
        """(2, 3) float64 RAS bounding box of all present teeth (from their points)."""
        pts = np.concatenate([t.points_ras(1.0) for t in self.teeth])
        return np.stack([pts.min(0) - pad, pts.max(0) + pad])


def _fdi_set(values: Iterable[int], what: str) -> set[int]:
    if isinstance(values, (bool, str)) or not hasattr(values, "__iter__"):
        raise InvalidInputError(
            f"{what} must be None, a probability or a list of FDI numbers (got {values!r})"
        )
    out = set()
    for v in values:
        n = tooth(v).fdi
        if n not in PERMANENT_FDI:
            raise InvalidInputError(f"{what} must list permanent teeth 11-48 (got {n})")
        out.add(n)
    return out


def _probability(value, what: str) -> float:
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise InvalidInputError(f"{what} probability must be in [0, 1] (got {value!r})")
    return p


def _frame(distal2: np.ndarray, buccal2: np.ndarray, jaw: str, torque: float,
           angulation: float, rotation: float) -> np.ndarray:
    """(3, 3) columns u, v, w of a tooth frame from its arch tangent and tilts (degrees)."""
    d = np.array([distal2[0], distal2[1], 0.0])
    b = np.array([buccal2[0], buccal2[1], 0.0])
    w = np.array([0.0, 0.0, -1.0 if jaw == "upper" else 1.0])
    tq, an = np.radians(torque), np.radians(angulation)
    w = w * np.cos(tq) * np.cos(an) + b * np.sin(tq) - d * np.sin(an)
    w /= np.linalg.norm(w)
    u = d - (d @ w) * w
    u /= np.linalg.norm(u)
    v = b - (b @ w) * w - (b @ u) * u
    v /= np.linalg.norm(v)
    r = np.radians(rotation)
    u, v = np.cos(r) * u + np.sin(r) * v, -np.sin(r) * u + np.cos(r) * v
    return np.stack([u, v, w], axis=1)


def make_layout(seed: int, *, missing=None, impacted=None, third_molars=None) -> DentalLayout:
    """Draw the dentition of one synthetic patient.

    Args:
        seed: any non-negative integer; the same seed gives the same layout.
        missing: None (no missing teeth), an iterable of FDI numbers, or a probability with
            which each tooth other than a third molar is missing.
        impacted: None/False (none), True (one third molar, mostly a lower one), a probability
            per present third molar, or an iterable of FDI numbers (these are made present).
            An impacted tooth is tilted 60-90 degrees mesially and sunk below the bone crest.
        third_molars: None (each present with probability 0.6, drawn from the seed), True, False,
            or a probability.

    Per-seed variation: arch width and depth +-8 %, tooth size +-6 % (a patient factor times a
    small per-tooth factor), root length +-7 %, rotation about the long axis (sd 4 deg), tilts
    (sd 2.5 deg), bite opening 1.0-2.5 mm. Options never change the random draws of the
    others: a seed keeps its arches and tooth sizes whatever teeth are missing.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer (got {seed!r})")
    rng = np.random.default_rng([int(seed), 7])
    scale_w, scale_d = rng.uniform(0.92, 1.08, 2)
    gap = rng.uniform(1.0, 2.5)
    patient_size = rng.uniform(0.95, 1.05)
    draws = {n: rng.uniform(-1.0, 1.0, 8) for n in PERMANENT_FDI}
    normal = {n: np.clip(rng.normal(0.0, 1.0, 3), -2.5, 2.5) for n in PERMANENT_FDI}
    third_draws = {n: rng.uniform() for n in (18, 28, 38, 48)}
    missing_draws = {n: rng.uniform() for n in PERMANENT_FDI}
    impacted_draws = {n: rng.uniform(0.0, 1.0, 3) for n in (18, 28, 38, 48)}
    impacted_pick = rng.uniform()

    present = {n: True for n in PERMANENT_FDI}
    if third_molars is None or not isinstance(third_molars, bool):
        p = 0.6 if third_molars is None else _probability(third_molars, "third_molars")
        for n, d in third_draws.items():
            present[n] = d < p
    else:
        for n in third_draws:
            present[n] = third_molars
    if missing is None or missing is False:
        missing_set = set()
    elif isinstance(missing, (float, int)) and not isinstance(missing, bool):
        p = _probability(missing, "missing")
        missing_set = {n for n in PERMANENT_FDI if n % 10 != 8 and missing_draws[n] < p}
    else:
        missing_set = _fdi_set(missing, "missing")
    if impacted is None or impacted is False:
        impacted_set = set()
    elif impacted is True:
        order = (38, 48, 28, 18) if impacted_pick < 0.7 else (28, 18, 38, 48)
        impacted_set = {order[int(impacted_pick * 1000) % 2]}
    elif isinstance(impacted, (float, int)):
        p = _probability(impacted, "impacted")
        impacted_set = {n for n in (18, 28, 38, 48) if present[n] and impacted_draws[n][0] < p}
    else:
        impacted_set = _fdi_set(impacted, "impacted")
    clash = impacted_set & missing_set
    if clash:
        raise InvalidInputError(
            f"teeth {sorted(clash)} are listed both as missing and as impacted; pick one"
        )
    for n in impacted_set:
        present[n] = True
    for n in missing_set:
        present[n] = False

    arches = {}
    for jaw, (a, b, div, y0) in _ARCH.items():
        arches[jaw] = make_arch(a * scale_w, b * scale_d, div, y0 * scale_d)

    slots = []
    for n in PERMANENT_FDI:
        info = tooth(n)
        jaw, pos = info.arch, info.position
        md, bl, ch, rl = TOOTH_DIMENSIONS[(jaw, pos)]
        r = draws[n]
        size = patient_size * (1.0 + 0.015 * r[0])
        md, bl, ch = md * size, bl * size, ch * size
        rl = rl * ROOT_LENGTH_FACTOR * size * (1.0 + 0.07 * r[1])
        shape = ToothShape(pos, jaw, md, bl, ch, build_roots(jaw, pos, md, bl, rl))
        slots.append((n, shape))

    placed = {}
    for jaw in ("upper", "lower"):
        for side in ("right", "left"):
            quadrant = sorted(((n, s) for n, s in slots
                               if tooth(n).arch == jaw and tooth(n).side == side),
                              key=lambda item: item[1].position)
            arc = _CONTACT_GAP_MM / 2.0
            for n, shape in quadrant:
                tilts = (_TORQUE[jaw][shape.position - 1] + 2.5 * normal[n][0],
                         _ANGULATION[jaw][shape.position - 1] + 2.5 * normal[n][1],
                         4.0 * normal[n][2])
                lift = gap / 2.0 + 0.15 * (1.0 + draws[n][2])
                # Tilts and rotations widen a tooth along the arch: measure its extent along
                # the arch tangent in its pose and place it so that it clears the previous one.
                # Slots are placed whether present or not, so missing teeth never move others.
                centre = arc + shape.md / 2.0
                t = _place(n, shape, arches[jaw], side, centre, tilts, lift, present[n])
                tangent = np.append(arches[jaw].distal(centre, side), 0.0)
                along = (t.to_ras(shape.local_grid_points(0.4)) - t.cej_ras) @ tangent
                centre = arc + max(shape.md / 2.0, 0.2 - along.min())  # 0.2: half a grid step
                t = _place(n, shape, arches[jaw], side, centre, tilts, lift, present[n])
                placed[n] = t
                arc = centre + max(shape.md / 2.0, along.max() + 0.2) + _CONTACT_GAP_MM
    for n in sorted(impacted_set):
        placed[n] = _impact(placed, n, arches[tooth(n).arch], impacted_draws[n])
    layout = DentalLayout(int(seed), tuple(placed[n] for n in PERMANENT_FDI), arches, gap)
    return layout


def _place(fdi: int, shape: ToothShape, arch: ArchCurve, side: str, arc_mm: float,
           tilts: tuple[float, float, float], lift: float, present: bool) -> PlacedTooth:
    """A tooth at an arc position, tilted (torque, angulation, rotation in degrees), its cusp
    tip ``lift`` mm from the bite plane (upper teeth above it, lower below)."""
    jaw = shape.arch
    axes = _frame(arch.distal(arc_mm, side), arch.buccal(arc_mm, side), jaw, *tilts)
    xy = arch.point(arc_mm, side)
    t = PlacedTooth(fdi, shape, np.array([xy[0], xy[1], 0.0]), axes, arc_mm, present)
    z = t.to_ras(shape.local_grid_points(0.4, "crown"))[:, 2]
    dz = lift - z.min() if jaw == "upper" else -lift - z.max()
    return PlacedTooth(fdi, shape, t.cej_ras + [0.0, 0.0, dz], axes, arc_mm, present)


def _impact(placed: dict, fdi: int, arch: ArchCurve, draw: np.ndarray) -> PlacedTooth:
    """Tilt a tooth 60-90 degrees mesially about its bucco-lingual axis, sink it below the bone
    crest of its mesial neighbour and push it distally until it touches no other tooth."""
    t = placed[fdi]
    info = tooth(fdi)
    tilt = np.radians(60.0 + 30.0 * draw[1])
    u, v, w = t.axes_ras.T
    w_new = np.cos(tilt) * w - np.sin(tilt) * u
    u_new = np.sin(tilt) * w + np.cos(tilt) * u
    axes = np.stack([u_new, v, w_new], axis=1)
    up = np.array([0.0, 0.0, -1.0 if info.arch == "upper" else 1.0])  # occlusal direction
    neighbours = [p for n, p in placed.items()
                  if p.present and n != fdi and tooth(n).arch == info.arch
                  and np.linalg.norm(p.cej_ras - t.cej_ras) < 30.0]
    mesial = placed.get(fdi - 1, t)
    crest = mesial.cej_ras @ up - 2.0 - 1.5 * draw[2]
    arc = t.arc_mm + 1.0
    cej = t.cej_ras.copy()
    for _ in range(80):
        xy = arch.point(arc, info.side)
        cand = PlacedTooth(fdi, t.shape, np.array([xy[0], xy[1], cej[2]]), axes, arc,
                           True, True)
        pts = cand.points_ras(0.6)
        top = (pts @ up).max()
        if top > crest:
            cej = cej - up * (top - crest)
            continue
        if not any(n.contains(pts).any() for n in neighbours):
            return cand
        arc += 0.5
    return cand
