"""Rigid registration of an intraoral scan onto its CBCT: scan coordinates -> CBCT RAS.

The contrastive pretraining pairs CBCT tokens and IOS patches that cover the same anatomy, so
both must be in one frame. An intraoral scan lives in the scanner's own frame; this module finds
the rigid map (rotation and translation, never a scale or a mirror) that puts its crowns onto
the teeth of the CBCT.

CBCT surface (the fixed side):

- with ``tooth_labels`` (a label map of the teeth, ground truth or predicted): the boundary of
  the teeth, marching cubes (scikit-image) at level 0.5 of the tooth mask smoothed with a
  Gaussian of 0.5 voxel. When the scan's jaw is known, only the teeth of that jaw (FDI
  quadrants 1-2 / 5-6 upper, 3-4 / 7-8 lower) and metal (label 99) are used; a label map with
  no tooth of that jaw is refused at once.
- without labels: the iso-surface of the *preprocessed* CBCT (:func:`.cbct.preprocess_cbct`:
  values in [0, 1], 1 = 2500) at ``iso_threshold`` = 0.6, i.e. 1500 on the paper's [0, 2500]
  window: between cortical bone (1380 on our phantoms) and dentin (1750) / enamel (2350), so it
  outlines the teeth and little else. Grey values of clinical scanners vary: check the
  threshold on a few real scans, or pass predicted tooth labels instead. Bright components
  smaller than ``min_component_mm3`` (noise, streaks) are dropped.

Scan side (the moving points): the crown vertices -- labels > 0 when the scan carries tooth
labels (ground truth or predicted by the IOS model); otherwise an occlusal band, the vertices
within 6 mm of the highest point around them (:func:`crown_vertices`), which are crowns and a
little interdental gingiva. Gingiva further down has no CBCT counterpart and would pull the
fit; what is left of it is handled by trimming (below).

Initial alignment. A CBCT after preprocessing is in RAS and the patient sits upright, so the
anatomical frame of the scan (:func:`.ios.canonical_frame`: x right, y anterior, z occlusal) says
how the scan must be turned: occlusal = superior for a lower jaw, inferior for an upper one.
That frame can be wrong by 180 degrees about the occlusal axis (a U read backwards) and the head
may be tilted in the scanner, so we try both anterior directions, pitches of -20, 0 and +20
degrees, both jaws when the scan's jaw is unknown, and shifts of -10..10 mm along S (the crowns
sit above or below the middle of the CBCT teeth, which include the roots): 30 candidates (60
for an unknown jaw). They run trimmed point-to-point ICP on 1,500 crown points (the Kabsch step
is ``trimesh.registration.procrustes``) by successive halving -- all of them 4 iterations, the
better third 8, the better third of those up to 25 -- and the 4 best are refined; the
refinement with the lowest median crown distance wins. Principal axes are not used to start:
the CBCT tooth surface of both jaws with their roots is about as tall as the arch is deep, so
its principal axes need not be the arch's, and the crowns of a curved arch put the centroid
of a scan away from that of the teeth.

Refinement: trimmed point-to-plane ICP (each iteration keeps the closest ``trim_fraction`` of
the pairs, solves the linearised 6x6 least squares about the centroid, and applies the exact
rotation). We do not use ``trimesh.registration.icp``: it is point-to-point, pairs every point
(no trimming, so gingiva without counterpart biases the result) and slides slowly along smooth
surfaces; point-to-plane on the CBCT mesh's normals converges in a few iterations.

Quality and refusal. Distances are from each crown vertex to the closest point of the CBCT
surface (exact over the triangles around the nearest vertex). We report their RMS and median and
the fraction of crown vertices within ``inlier_distance_mm`` (0.5 mm). A pair is refused
(:class:`~ToothMCLCore.errors.RegistrationError`, naming the scan) when the median exceeds
``max_median_mm`` (0.3 mm), the inlier fraction is below ``min_inlier_fraction`` (0.8), or the
registered occlusal direction of a scan of known jaw is more than ``max_occlusal_angle_deg``
(60 degrees) from where that jaw's crowns point (inferior for upper, superior for lower: an
upper scan laid upside down on lower teeth). The RMS is reported but is not a criterion: one
tooth on the scan and not in the CBCT (extracted, outside the field of view) inflates it to
over 1 mm without any misregistration.

Measured on our phantoms (0.8 mm CBCT, 1 mm scans, scan moved by 20 degrees and 15 mm; every
combination of labelled / unlabelled scan, known / unknown jaw, label-map / iso-surface CBCT):
the transform is recovered within 0.13 mm and 0.08 degrees; the median distance is 0.09-0.13 mm
with 99 % inliers, and 0.10-0.14 mm with 88-92 % inliers when the CBCT lacks two molars the scan
has. Scans of other phantom patients give medians of 0.23-1.08 mm with 26-81 % inliers, the
opposing jaw 0.66-0.85 mm with 32-39 %: refused, except that the upper jaws of seeds 0 and 2 are
so alike (0.23 mm, 79-81 %) that they sit at the thresholds. A residual cannot prove that two
dentitions belong to one person; pairing by patient identifier stays the first safeguard.
The thresholds are set from these phantoms; check them on the first real pairs
(``check=False`` returns the numbers without raising).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .. import fdi
from ..config import config_from_dict, config_to_dict
from ..errors import ConfigError, InvalidInputError, RegistrationError
from ..types import SurfaceMesh, Volume
from .registration_icp import ToothSurface, icp_point_to_plane, icp_point_to_point, subsample

logger = logging.getLogger(__name__)


_S = np.array([0.0, 0.0, 1.0])
#: pairs farther apart are ignored by the initial-alignment search (mm)
_COARSE_REACH_MM = 12.0
#: initial-alignment candidates refined with point-to-plane ICP
_REFINED = 4


@dataclass(frozen=True)
class RegistrationConfig:
    """Settings of :func:`register_ios_to_cbct` (see the module docstring for the reasons).

    Attributes:
        iso_threshold: preprocessed intensity of the tooth iso-surface when no labels are given.
        min_component_mm3: bright components smaller than this are not part of that surface.
        crown_band_mm, crown_radius_mm, crown_max_depth_mm: the crowns of a scan without tooth
            labels (:func:`crown_vertices`).
        trim_fraction: fraction of closest pairs every ICP iteration keeps.
        coarse_points, coarse_iterations: size of the initial-alignment search per candidate.
        fine_points, max_iterations, tolerance_mm: refinement; it has converged when an
            iteration moves the points by less than ``tolerance_mm``.
        pitch_search_deg, shift_search_mm: initial rotations about R and shifts along S tried.
        inlier_distance_mm: a crown vertex this close to the CBCT surface is an inlier.
        max_median_mm, min_inlier_fraction, max_occlusal_angle_deg: refusal thresholds.
        seed: seed of the point subsampling (the result is deterministic).
    """

    iso_threshold: float = 0.6
    min_component_mm3: float = 10.0
    crown_band_mm: float = 6.0
    crown_radius_mm: float = 8.0
    crown_max_depth_mm: float = 12.0
    trim_fraction: float = 0.85
    coarse_points: int = 1500
    coarse_iterations: int = 25
    fine_points: int = 6000
    max_iterations: int = 60
    tolerance_mm: float = 1e-3
    pitch_search_deg: tuple = (-20.0, 0.0, 20.0)
    shift_search_mm: tuple = (-10.0, -5.0, 0.0, 5.0, 10.0)
    inlier_distance_mm: float = 0.5
    max_median_mm: float = 0.3
    min_inlier_fraction: float = 0.8
    max_occlusal_angle_deg: float = 60.0
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.iso_threshold < 1.0:
            raise ConfigError(f"iso_threshold is a normalised intensity in (0, 1) (got {self.iso_threshold})")
        if not 0.3 <= self.trim_fraction <= 1.0:
            raise ConfigError(f"trim_fraction must be within 0.3..1 (got {self.trim_fraction})")
        if not 0.0 <= self.min_inlier_fraction <= 1.0:
            raise ConfigError(f"min_inlier_fraction must be within 0..1 (got {self.min_inlier_fraction})")
        for name in ("crown_band_mm", "crown_radius_mm", "crown_max_depth_mm", "inlier_distance_mm",
                     "max_median_mm", "tolerance_mm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive (got {getattr(self, name)})")
        if min(self.coarse_points, self.fine_points, self.max_iterations, self.coarse_iterations) < 1:
            raise ConfigError("point counts and iteration counts must be at least 1")

    from_dict = classmethod(config_from_dict)
    to_dict = config_to_dict


@dataclass
class RegistrationResult:
    """A registered scan.

    Attributes:
        matrix: (4, 4) float64 homogeneous rigid map, scan coordinates -> CBCT RAS (mm).
        residual_mm: RMS distance of the crown vertices to the CBCT tooth surface.
        residual_median_mm: median of the same distances.
        inlier_fraction: fraction of crown vertices within ``inlier_distance_mm`` of it.
        converged: the refinement stopped on the tolerance, not on the iteration limit.
        method: what was registered onto what, e.g. ``"labels:upper teeth + trimmed ICP"``.
        n_crown_vertices: scan vertices the residual is measured over.
        crown_source: ``"labels"`` (scan tooth labels) or ``"occlusal band"``.
        occlusal_angle_deg: angle between the registered occlusal direction and the direction
            the scan's jaw points to (NaN when the jaw is unknown).
    """

    matrix: np.ndarray
    residual_mm: float
    residual_median_mm: float
    inlier_fraction: float
    converged: bool
    method: str
    n_crown_vertices: int = 0
    crown_source: str = ""
    occlusal_angle_deg: float = float("nan")

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) float64 scan points -> CBCT RAS."""
        p = np.asarray(points, np.float64)
        return p @ self.matrix[:3, :3].T + self.matrix[:3, 3]


# ------------------------------------------------------------------------------------------------
# CBCT side
# ------------------------------------------------------------------------------------------------

def _surface_from_field(field: np.ndarray, level: float, volume_geometry, description: str) -> ToothSurface:
    """Marching cubes of a (K, J, I) field inside the box where it reaches ``level``."""
    import trimesh
    from skimage.measure import marching_cubes

    inside = np.nonzero(field >= level)
    if len(inside[0]) == 0:
        raise RegistrationError(f"the CBCT has no tooth surface ({description}): nothing reaches the level")
    lo = np.maximum([a.min() - 2 for a in inside], 0)
    hi = np.minimum([a.max() + 3 for a in inside], field.shape)
    sub = field[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    verts, faces, _, _ = marching_cubes(sub, level=level, allow_degenerate=False)
    idx_ijk = (verts + lo)[:, ::-1]  # array axes are (k, j, i)
    ras = idx_ijk @ volume_geometry.ijk_to_ras[:3, :3].T + volume_geometry.ijk_to_ras[:3, 3]
    mesh = trimesh.Trimesh(ras, faces, process=False)
    normals = np.asarray(mesh.vertex_normals, np.float64)
    return ToothSurface(ras, np.asarray(faces, np.int64), normals, description)


def cbct_tooth_surface(cbct: Volume | None, tooth_labels: Volume | None = None, jaw: str = "",
                       config: RegistrationConfig | None = None) -> ToothSurface:
    """The CBCT tooth surface registration aligns to (see the module docstring).

    Args:
        cbct: preprocessed CBCT (values in [0, 1]); may be None when ``tooth_labels`` is given.
        tooth_labels: FDI label map (0 background, 99 metal) on any grid, or None.
        jaw: "upper" / "lower" keeps the teeth of that jaw only (labels path); "" keeps all.
    """
    from scipy import ndimage

    config = config or RegistrationConfig()
    if tooth_labels is not None:
        lab = np.asarray(tooth_labels.array)
        if jaw in fdi.JAWS:
            keep = list(fdi.teeth_of_jaw(jaw)) + list(fdi.teeth_of_jaw(jaw, primary=True))
            mask = np.isin(lab, keep)
            if not mask.any():
                present = sorted(int(v) for v in np.unique(lab) if v)
                article = "an" if jaw == "upper" else "a"
                raise RegistrationError(
                    f"the CBCT label map ({tooth_labels.source or 'no name'}) has no {jaw}-jaw tooth "
                    f"(labels {present}); {article} {jaw}-jaw scan cannot be registered to it -- pair "
                    "the scan with a CBCT that shows that jaw")
            mask |= lab == fdi.METAL_LABEL
            what = f"labels:{jaw} teeth"
        else:
            mask = lab > 0
            what = "labels:all teeth"
        field = ndimage.gaussian_filter(mask.astype(np.float32), 0.5)
        return _surface_from_field(field, 0.5, tooth_labels.geometry, what)
    if cbct is None:
        raise InvalidInputError("register_ios_to_cbct needs a CBCT volume or a tooth label map")
    arr = np.asarray(cbct.array, np.float32)
    if arr.ndim != 3 or float(arr.min()) < -1e-3 or float(arr.max()) > 1.0 + 1e-3:
        raise InvalidInputError(
            f"the CBCT must be preprocessed (3-D, values in [0, 1]; got shape {arr.shape}, range "
            f"[{arr.min():.4g}, {arr.max():.4g}]); run preprocess_cbct on it first, or pass tooth_labels")
    bright = arr >= config.iso_threshold
    comp, n = ndimage.label(bright)
    if n == 0:
        raise RegistrationError(
            f"no voxel of the CBCT ({cbct.source or 'no name'}) reaches the tooth threshold {config.iso_threshold} "
            f"(= {config.iso_threshold * 2500:.0f} on the [0, 2500] window); check the intensity offset")
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    min_voxels = config.min_component_mm3 / cbct.voxel_volume_mm3()
    keep = sizes >= min_voxels
    near = ndimage.binary_dilation(keep[comp], iterations=2)
    field = np.where(near, arr, 0.0).astype(np.float32)
    return _surface_from_field(field, config.iso_threshold, cbct.geometry, f"iso-surface {config.iso_threshold:g}")


# ------------------------------------------------------------------------------------------------
# Scan side
# ------------------------------------------------------------------------------------------------

def crown_vertices(mesh: SurfaceMesh, config: RegistrationConfig | None = None) -> tuple[np.ndarray, str]:
    """(N,) bool mask of the scan's crown vertices and how it was found.

    "labels": the scan's tooth labels (> 0). Otherwise "occlusal band": heights ``h`` along the
    occlusal direction; a vertex is crown when it lies within ``crown_band_mm`` of the highest
    vertex within ``crown_radius_mm`` of it across the occlusal plane (so the band follows the
    curve of the occlusal surface instead of collecting the incisors of a curved arch) and
    within ``crown_max_depth_mm`` of the scan's occlusal extreme (99.5th percentile of ``h``;
    this leaves out the palate and the floor of the mouth). On our phantoms 92-99 % of these
    vertices are crown and they hold 75-90 % of the crown vertices. "all vertices" when the
    occlusal direction cannot be told.
    """
    from scipy import ndimage

    from ..io.mesh import occlusal_direction

    config = config or RegistrationConfig()
    if mesh.labels is not None and len(mesh.labels) == mesh.n_vertices and (np.asarray(mesh.labels) > 0).any():
        return np.asarray(mesh.labels) > 0, "labels"
    occ = occlusal_direction(mesh)
    if occ is None:
        return np.ones(mesh.n_vertices, bool), "all vertices"
    v = mesh.vertices_ras
    h = v @ occ
    # in-plane coordinates on a 1 mm grid; highest vertex per cell, then a disc maximum filter
    e1 = np.cross(occ, [1.0, 0.0, 0.0] if abs(occ[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    uv = np.stack([v @ e1, v @ np.cross(occ, e1)], axis=1)
    cell = np.floor(uv - uv.min(axis=0)).astype(np.intp)
    grid = np.full(cell.max(axis=0) + 1, -np.inf)
    np.maximum.at(grid, (cell[:, 0], cell[:, 1]), h)
    r = int(np.ceil(config.crown_radius_mm))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    local_max = ndimage.maximum_filter(grid, footprint=xx**2 + yy**2 <= config.crown_radius_mm**2,
                                       mode="constant", cval=-np.inf)
    top = np.quantile(h, 0.995)
    crown = (h >= local_max[cell[:, 0], cell[:, 1]] - config.crown_band_mm) & (h >= top - config.crown_max_depth_mm)
    return crown, "occlusal band"


def _rotation_about(axis: int, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _initial_rotations(mesh: SurfaceMesh, occlusal, config: RegistrationConfig) -> list[np.ndarray]:
    """Rotations scan -> RAS from the scan's anatomical frame, with the ambiguities tried."""
    from .ios import canonical_frame

    jaws = [mesh.jaw] if mesh.jaw in fdi.JAWS else list(fdi.JAWS)
    out = []
    for jaw in jaws:
        frame = canonical_frame(mesh.vertices_ras, occlusal, jaw)
        # canonical (x right, y anterior, z occlusal) -> RAS: z = -S for an upper jaw, whose
        # canonical frame is a reflection (see ios.py): the product is a proper rotation
        base = (np.diag([1.0, 1.0, -1.0]) if jaw == "upper" else np.eye(3)) @ frame.rotation
        for turn in (0.0, 180.0):
            for pitch in config.pitch_search_deg:
                out.append(_rotation_about(0, pitch) @ _rotation_about(2, turn) @ base)
    return out


def register_ios_to_cbct(mesh: SurfaceMesh, cbct: Volume | None, tooth_labels: Volume | None = None,
                         config: RegistrationConfig | None = None, *, check: bool = True,
                         name: str | None = None) -> RegistrationResult:
    """Rigidly register an intraoral scan onto the teeth of its CBCT.

    Args:
        mesh: the scan, vertices (N, 3) in its own frame (mm); ``jaw`` and ``labels`` are used
            when set (see the module docstring).
        cbct: the CBCT as :func:`~ToothMCLCore.preprocessing.cbct.preprocess_cbct` returns it
            (values in [0, 1]); only read when ``tooth_labels`` is None.
        tooth_labels: FDI label map of the teeth (any grid), ground truth or predicted.
        config: thresholds and search sizes (:class:`RegistrationConfig`).
        check: raise :class:`RegistrationError` when the pair is refused; False returns the
            result anyway (for a report of all pairs).
        name: the scan's name in messages (default ``mesh.source``).

    Returns:
        :class:`RegistrationResult`; ``result.matrix`` maps scan coordinates to CBCT RAS.

    Raises:
        RegistrationError: the scan does not register (thresholds in the module docstring).
    """
    from scipy.spatial import cKDTree

    from ..io.mesh import occlusal_direction

    config = config or RegistrationConfig()
    name = name or mesh.source or "the intraoral scan"
    v = np.asarray(mesh.vertices_ras, np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 100:
        raise InvalidInputError(f"{name}: a scan needs at least 100 vertices (N, 3) (got shape {v.shape})")
    try:
        surface = cbct_tooth_surface(cbct, tooth_labels, mesh.jaw, config)
    except RegistrationError as exc:
        raise RegistrationError(f"{name}: {exc}") from None
    crowns, crown_source = crown_vertices(mesh, config)
    occlusal = occlusal_direction(mesh)
    rng = np.random.default_rng(config.seed)
    src = v[crowns]
    if len(src) < 50:
        raise RegistrationError(f"{name}: only {len(src)} crown vertices ({crown_source}); cannot register")
    coarse_src = subsample(src, config.coarse_points, rng)
    coarse_target = subsample(surface.vertices_ras, 30_000, rng)
    coarse_tree = cKDTree(coarse_target)
    target_centre = surface.vertices_ras.mean(axis=0)
    candidates = []  # [score, r, t]
    for r0 in _initial_rotations(mesh, occlusal, config):
        for shift in config.shift_search_mm:
            candidates.append([np.inf, r0, target_centre + shift * _S - r0 @ coarse_src.mean(axis=0)])
    # successive halving: all candidates a few iterations, the better third further, ...
    rounds = (4, 8, config.coarse_iterations)
    for i, iterations in enumerate(rounds):
        for c in candidates:
            c[1], c[2], c[0] = icp_point_to_point(coarse_src, coarse_target, coarse_tree, c[1], c[2],
                                                   iterations, config, _COARSE_REACH_MM)
        candidates.sort(key=lambda c: c[0])
        keep = _REFINED if i == len(rounds) - 1 else max(_REFINED, len(candidates) // 3)
        candidates = [c for c in candidates[:keep] if np.isfinite(c[0])]
    if not candidates:
        raise RegistrationError(f"{name}: no initial alignment brings the crowns near the CBCT teeth "
                                f"({surface.description}); check that scan and CBCT show the same jaw")
    fine_src = subsample(src, config.fine_points, rng)
    best = None
    for _, r, t in candidates:
        r, t, _, converged = icp_point_to_plane(fine_src, surface, r, t, config)
        score = float(np.median(surface.distances(fine_src @ r.T + t)))
        if best is None or score < best[0]:
            best = (score, r, t, converged)
    _, r, t, converged = best
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = r, t

    d = surface.distances(src @ r.T + t)
    angle = float("nan")
    if occlusal is not None and mesh.jaw in fdi.JAWS:
        expected = -_S if mesh.jaw == "upper" else _S
        angle = float(np.degrees(np.arccos(np.clip((r @ occlusal) @ expected, -1.0, 1.0))))
    result = RegistrationResult(
        matrix=matrix, residual_mm=float(np.sqrt(np.mean(d**2))), residual_median_mm=float(np.median(d)),
        inlier_fraction=float(np.mean(d <= config.inlier_distance_mm)), converged=converged,
        method=f"{surface.description} + trimmed ICP", n_crown_vertices=len(src),
        crown_source=crown_source, occlusal_angle_deg=angle,
    )
    logger.info("registered %s: median %.3f mm, RMS %.3f mm, inliers %.1f %%, %s", name,
                result.residual_median_mm, result.residual_mm, 100 * result.inlier_fraction, result.method)
    if check:
        _check(result, config, name, mesh.jaw)
    return result


def _check(result: RegistrationResult, config: RegistrationConfig, name: str, jaw: str) -> None:
    problems = []
    if result.residual_median_mm > config.max_median_mm:
        problems.append(f"median distance {result.residual_median_mm:.2f} mm > {config.max_median_mm} mm")
    if result.inlier_fraction < config.min_inlier_fraction:
        problems.append(f"only {100 * result.inlier_fraction:.0f} % of the crown vertices within "
                        f"{config.inlier_distance_mm} mm (need {100 * config.min_inlier_fraction:.0f} %)")
    if result.occlusal_angle_deg > config.max_occlusal_angle_deg:
        problems.append(f"the {jaw}-jaw crowns end up pointing {result.occlusal_angle_deg:.0f} degrees away from "
                        f"{'inferior' if jaw == 'upper' else 'superior'}")
    if problems:
        raise RegistrationError(
            f"{name} does not register onto the CBCT teeth ({result.method}): {'; '.join(problems)}. "
            "Check that scan and CBCT are of the same patient and jaw; leave this pair out of pretraining")
