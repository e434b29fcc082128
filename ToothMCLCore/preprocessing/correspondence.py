"""Which CBCT tokens and IOS patches show the same anatomy: the z matrices of Eq. 4 and Eq. 7.

The ToothMCL paper sets z_ij = 1 for "matched CBCT and IOS patch pairs" (Eq. 4) and, within a
modality, for patches that "depict similar anatomical structures" (Eq. 7), -1 otherwise, without
saying how either is decided. The authors' released pretraining code takes the i-th image token
and the i-th point patch as the only positives (an index coincidence, no geometry) and builds the
intra-modal positives from a label tensor. Here both come from the registered geometry.

Patches.

- A **CBCT token** is one position of the Swin encoder's feature map at the aligned stage. In
  MONAI's ``SwinTransformer`` the patch embedding has stride 2 and each of the four stages ends
  with a patch merging (stride 2, padding odd sizes at the end), so ``hidden_states_out[s]`` has
  stride ``S = 2 * 2**s`` and ``ceil(n / S)`` positions per axis (checked against MONAI in the
  tests). Token ``(a, b, c)`` of a crop indexed ``[k, j, i]`` covers voxels
  ``[a S, (a + 1) S) x [b S, ...) x [c S, ...)``; its centre is voxel ``a S + (S - 1) / 2``, mapped
  to RAS by the crop's geometry. Tokens are numbered in C order over the (D, H, W) feature map,
  as ``x.flatten(2)`` or einops ``"b c d h w -> b c (d h w)"`` give them. The authors align stage
  4 (stride 32: 9.6 mm at 0.3 mm voxels, 768 channels at feature size 48).
- An **IOS patch** is one point of the Point Transformer encoder at the aligned stage: a
  farthest-point-sampling centre whose feature pools its nearest points of the stage before
  (:class:`~ToothMCLCore.models.point_transformer.TransitionDown`). We place it at its centre,
  and its points are the input points closer to it than to any other centre of that stage
  (its Voronoi cell), which is what its label is taken from. The encoder's farthest point
  sampling starts at a random point, so the centres -- and these matrices -- must be built
  from the ``EncoderOutput.points`` of each forward pass, not once per scan.

Cross-modal z (``Nc x Ni``). ``z_ij = 1`` when IOS centre j, mapped into CBCT RAS by the
registration, lies inside token i's box (grown by ``match_margin_mm``, 0 by default), and inside
the crop. So every IOS patch in the crop has exactly one positive, the token whose voxels
contain its centre. Pairs with centre j outside that box but within ``ignore_margin_mm`` (2 mm)
of token i's box are left out of the loss: such a patch's points straddle two tokens, and
calling the second token a negative would be label noise (likewise a centre beyond the crop's
edge but inside the zero padding of an edge token). All other pairs are negatives.
Tokens with no IOS centre (roots, bone, air) and IOS patches outside the crop have no
positive; by default (``unmatched="negative"``) their rows and columns stay in the loss as
negatives -- no token shows a patch the crop cut off, and no scan patch shows a root --
``unmatched="ignore"`` leaves them out.

Intra-modal z (``n x n``, one modality). From labels when available: a CBCT token's label is
the FDI tooth with most voxels in its box when teeth fill at least ``min_tooth_fraction`` (10 %)
of the box, else 0; an IOS patch's label is the majority label of its Voronoi cell (0 =
gingiva), from the scan's labels or, for an unlabelled scan, transferred from the CBCT label map
through the registration (:func:`labels_at_points`). ``z_ij = 1`` when i != j carry the same
tooth, and for the IOS also when both are gingiva (one tissue). CBCT background (air, bone,
soft tissue together) is not one structure: background-background pairs are left out, while
tooth-background pairs are negatives. Metal (99) counts as background, as it is not a tooth
identity. Without labels: ``z_ij = 1`` when the centres are closer than a factor times the median
nearest-centre distance -- 1.2 for tokens (a token and its six face neighbours), 1.5 for scan
patches (FPS spacing is irregular: at 1.5 about 99 % of phantom patches have a positive, 4
on average; at 1.2 one in seven has none). This is a locality prior in the spirit of the released
code's index-window mask, and a weak one: on our phantoms 64 % of these IOS positives lie on
the same tooth (or both on gingiva). Labels are better whenever they can be had. The diagonal (a patch with itself, cosine 1 always) is never in the loss.

Every matrix comes with a boolean ``mask`` of the pairs that enter the loss
(:mod:`training.losses` takes both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fdi
from ..config import config_from_dict, config_to_dict
from ..errors import ConfigError, InvalidInputError
from ..types import Geometry, Volume
from .ios import COORDINATE_SCALE_MM, CanonicalFrame

#: stride of the patch embedding of MONAI's SwinUNETR (``patch_size``)
SWIN_PATCH_SIZE = 2


@dataclass(frozen=True)
class CorrespondenceConfig:
    """How the z matrices are built (see the module docstring).

    Attributes:
        match_margin_mm: the token box is grown by this much on every side for positives.
        ignore_margin_mm: pairs with the centre this close to (but outside) the match box are
            left out of the loss.
        unmatched: "negative" keeps tokens / patches without a counterpart as negatives,
            "ignore" leaves them out.
        min_tooth_fraction: share of a token's voxels that must be tooth for it to take a label.
        proximity_factor_cbct, proximity_factor_ios: without labels, positives are closer than
            this times the median nearest-centre distance.
        ios_label_distance_mm: an IOS centre takes the CBCT tooth label within this distance.
    """

    match_margin_mm: float = 0.0
    ignore_margin_mm: float = 2.0
    unmatched: str = "negative"
    min_tooth_fraction: float = 0.1
    proximity_factor_cbct: float = 1.2
    proximity_factor_ios: float = 1.5
    ios_label_distance_mm: float = 1.0

    def __post_init__(self):
        if self.unmatched not in ("negative", "ignore"):
            raise ConfigError(f"unmatched must be 'negative' or 'ignore' (got {self.unmatched!r})")
        if self.match_margin_mm < 0 or self.ignore_margin_mm < 0:
            raise ConfigError("match_margin_mm and ignore_margin_mm must be >= 0")
        if not 0.0 < self.min_tooth_fraction <= 1.0:
            raise ConfigError(f"min_tooth_fraction must be within (0, 1] (got {self.min_tooth_fraction})")
        if not min(self.proximity_factor_cbct, self.proximity_factor_ios) > 1.0:
            raise ConfigError("proximity factors must exceed 1 (got "
                              f"{self.proximity_factor_cbct}, {self.proximity_factor_ios})")

    from_dict = classmethod(config_from_dict)
    to_dict = config_to_dict


# ------------------------------------------------------------------------------------------------
# CBCT tokens
# ------------------------------------------------------------------------------------------------

def swin_stride(stage: int, patch_size: int = SWIN_PATCH_SIZE) -> int:
    """Voxel stride of ``hidden_states_out[stage]`` of MONAI's SwinViT (stage 0..4)."""
    if not 0 <= int(stage) <= 4:
        raise InvalidInputError(f"Swin stage must be 0..4 (got {stage})")
    return int(patch_size) * 2 ** int(stage)


@dataclass(frozen=True)
class TokenGrid:
    """Token centres of one Swin stage on a crop.

    Attributes:
        geometry: a :class:`Geometry` whose voxels are the tokens (spacing = stride x voxel).
        shape: (D', H', W') token counts along the crop's (k, j, i) axes.
        stride: voxels per token along each axis.
        crop_geometry, crop_shape: the network input crop (K, J, I).
    """

    geometry: Geometry
    shape: tuple
    stride: int
    crop_geometry: Geometry
    crop_shape: tuple

    @property
    def n_tokens(self) -> int:
        return int(np.prod(self.shape))

    def centres_ras(self) -> np.ndarray:
        """(Nc, 3) float64 RAS centres in token order (C order over (D', H', W'))."""
        k, j, i = np.meshgrid(*(np.arange(n) for n in self.shape), indexing="ij")
        ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(np.float64)
        m = self.geometry.ijk_to_ras
        return ijk @ m[:3, :3].T + m[:3, 3]

    def token_position(self, points_ras: np.ndarray) -> np.ndarray:
        """(N, 3) float64 continuous token coordinates (k, j, i order) of RAS points; token
        ``t`` spans ``t - 0.5 .. t + 0.5`` along each axis."""
        m = self.geometry.ras_to_ijk
        ijk = np.asarray(points_ras, np.float64) @ m[:3, :3].T + m[:3, 3]
        return ijk[:, ::-1]

    def inside_crop(self, points_ras: np.ndarray) -> np.ndarray:
        """(N,) bool: the point lies within the crop's voxels (not in the encoder's padding)."""
        m = self.crop_geometry.ras_to_ijk
        kji = (np.asarray(points_ras, np.float64) @ m[:3, :3].T + m[:3, 3])[:, ::-1]
        return np.all((kji >= -0.5) & (kji <= np.asarray(self.crop_shape) - 0.5), axis=1)


def swin_token_grid(crop_geometry: Geometry, crop_shape, stage: int = 4,
                    patch_size: int = SWIN_PATCH_SIZE) -> TokenGrid:
    """The token grid of Swin stage ``stage`` for a crop (K, J, I) on ``crop_geometry``."""
    stride = swin_stride(stage, patch_size)
    shape = tuple(int(np.ceil(n / stride)) for n in crop_shape)
    spacing = crop_geometry.spacing * stride
    origin = crop_geometry.origin_ras + crop_geometry.direction_ras @ (crop_geometry.spacing * (stride - 1) / 2.0)
    return TokenGrid(Geometry(spacing, origin, crop_geometry.direction_ras), shape, stride, crop_geometry,
                     tuple(int(n) for n in crop_shape))


def token_labels(labels_crop: np.ndarray, stride: int, min_tooth_fraction: float = 0.1) -> np.ndarray:
    """(Nc,) int64 FDI label of every token of a (K, J, I) label crop (0 = no tooth), token order.

    The tooth with most voxels in the token's box when teeth (valid FDI numbers; metal is not
    one) fill at least ``min_tooth_fraction`` of the box (the encoder's padding counts as
    background), else 0.
    """
    lab = np.asarray(labels_crop)
    shape = tuple(int(np.ceil(n / stride)) for n in lab.shape)
    padded = np.zeros([n * stride for n in shape], lab.dtype)
    padded[: lab.shape[0], : lab.shape[1], : lab.shape[2]] = lab
    values, inverse = np.unique(padded, return_inverse=True)
    is_tooth = np.array([fdi.is_valid_fdi(int(v)) for v in values])
    d, h, w = shape
    token = np.arange(d * h * w).reshape(shape)
    token = np.repeat(np.repeat(np.repeat(token, stride, 0), stride, 1), stride, 2)
    counts = np.bincount(token.ravel() * len(values) + inverse.ravel(),
                         minlength=d * h * w * len(values)).reshape(-1, len(values))
    counts[:, ~is_tooth] = 0
    best = counts.argmax(axis=1)
    enough = counts.sum(axis=1) >= min_tooth_fraction * stride**3
    return np.where(enough, values[best], 0).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# IOS patches
# ------------------------------------------------------------------------------------------------

def ios_points_to_ras(points_network: np.ndarray, frame: CanonicalFrame, matrix: np.ndarray,
                      scale_mm: float = COORDINATE_SCALE_MM) -> np.ndarray:
    """(N, 3) float64 CBCT RAS of points the IOS encoder saw.

    The encoder sees canonical coordinates divided by ``scale_mm``
    (:func:`~ToothMCLCore.preprocessing.ios.point_features`); ``frame`` brought the scan into
    the canonical frame and ``matrix`` (a :class:`.registration.RegistrationResult`'s) maps scan
    coordinates to CBCT RAS.
    """
    canonical = np.asarray(points_network, np.float64) * scale_mm
    scan = canonical @ frame.rotation + frame.origin  # rotation is orthonormal: inverse = transpose
    m = np.asarray(matrix, np.float64)
    return scan @ m[:3, :3].T + m[:3, 3]


def patch_labels(points: np.ndarray, point_labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(M,) int64 majority label of each centre's Voronoi cell among ``points`` (same frame)."""
    from scipy.spatial import cKDTree

    point_labels = np.asarray(point_labels, np.int64)
    _, owner = cKDTree(np.asarray(centres, np.float64)).query(np.asarray(points, np.float64))
    values, inverse = np.unique(point_labels, return_inverse=True)
    counts = np.bincount(owner * len(values) + inverse, minlength=len(centres) * len(values))
    counts = counts.reshape(len(centres), len(values))
    out = values[counts.argmax(axis=1)]
    empty = counts.sum(axis=1) == 0  # a centre that owns no point takes its nearest point's label
    if empty.any():
        _, nearest = cKDTree(np.asarray(points, np.float64)).query(np.asarray(centres)[empty])
        out[empty] = point_labels[nearest]
    return out.astype(np.int64)


def labels_at_points(labels: Volume, points_ras: np.ndarray, max_distance_mm: float = 1.0) -> np.ndarray:
    """(N,) int64 FDI tooth of the CBCT label map nearest each point within ``max_distance_mm``,
    0 otherwise (for a registered scan: its gingiva). Metal does not count as a tooth."""
    from scipy import ndimage

    pts = np.asarray(points_ras, np.float64)
    lab = np.asarray(labels.array)
    tooth_values = [v for v in np.unique(lab) if fdi.is_valid_fdi(int(v))]
    out = np.zeros(len(pts), np.int64)
    if not tooth_values or len(pts) == 0:
        return out
    m = labels.geometry.ras_to_ijk
    kji = (pts @ m[:3, :3].T + m[:3, 3])[:, ::-1]
    reach = np.ceil(max_distance_mm / labels.geometry.spacing[::-1]).astype(int) + 1
    lo = np.maximum(np.floor(kji.min(axis=0)).astype(int) - reach, 0)
    hi = np.minimum(np.ceil(kji.max(axis=0)).astype(int) + reach + 1, lab.shape)
    if np.any(hi <= lo):
        return out
    sub = lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    tooth = np.isin(sub, tooth_values)
    if not tooth.any():
        return out
    nearest = ndimage.distance_transform_edt(~tooth, sampling=labels.geometry.spacing[::-1],
                                             return_distances=False, return_indices=True)
    idx = np.clip(np.rint(kji - lo).astype(int), 0, np.array(sub.shape) - 1)
    at = tuple(idx[:, a] for a in range(3))
    # the tooth voxel nearest the point's voxel, and the point's own distance to its centre
    voxel = np.stack([nearest[a][at] for a in range(3)], axis=1)
    d = np.linalg.norm((voxel + lo - kji) * labels.geometry.spacing[::-1], axis=1)
    ok = d <= max_distance_mm + 1e-9
    out[ok] = sub[tuple(voxel[ok, a] for a in range(3))]
    return out


# ------------------------------------------------------------------------------------------------
# z matrices
# ------------------------------------------------------------------------------------------------

@dataclass
class Pairs:
    """Targets of a contrastive loss.

    Attributes:
        z: (R, C) bool, True for positives (z = +1 in the paper), False for negatives (-1).
        mask: (R, C) bool, True for the pairs that enter the loss.
    """

    z: np.ndarray
    mask: np.ndarray

    def signs(self) -> np.ndarray:
        """(R, C) float32 z in {+1, -1} as the paper writes it (masked pairs included)."""
        return np.where(self.z, 1.0, -1.0).astype(np.float32)


def cross_modal_pairs(grid: TokenGrid, ios_centres_ras: np.ndarray,
                      config: CorrespondenceConfig | None = None) -> Pairs:
    """Cross-modal z (Nc, Ni) between the tokens of ``grid`` and IOS centres in CBCT RAS."""
    config = config or CorrespondenceConfig()
    centres = np.asarray(ios_centres_ras, np.float64).reshape(-1, 3)
    pos = grid.token_position(centres)  # (Ni, 3) continuous token coordinates, k j i
    token_mm = grid.geometry.spacing[::-1]  # token size along k, j, i
    inside = grid.inside_crop(centres)
    # per axis, distance (mm) from the centre to each token's box, 0 inside
    gaps = []
    for axis, n in enumerate(grid.shape):
        t = np.arange(n)[:, None]
        gaps.append(np.maximum(np.abs(pos[None, :, axis] - t) - 0.5, 0.0) * token_mm[axis])  # (n, Ni)
    d, h, w = grid.shape
    gap = np.sqrt(gaps[0][:, None, None, :] ** 2 + gaps[1][None, :, None, :] ** 2
                  + gaps[2][None, None, :, :] ** 2).reshape(d * h * w, -1)  # (Nc, Ni)
    z = (gap <= config.match_margin_mm) & inside[None, :]
    # near the box but not in it; also a centre in the encoder's padding beyond the crop's edge
    ambiguous = ~z & (gap <= config.match_margin_mm + config.ignore_margin_mm)
    mask = ~ambiguous
    if config.unmatched == "ignore":
        mask &= z.any(axis=1, keepdims=True) & z.any(axis=0, keepdims=True)
    return Pairs(z, mask)


def intra_pairs_from_labels(labels: np.ndarray, background_is_one_structure: bool) -> Pairs:
    """Intra-modal z (n, n) from patch labels (0 = not a tooth); the diagonal is masked.

    Args:
        labels: (n,) FDI tooth of each patch, 0 for gingiva / background.
        background_is_one_structure: True for IOS (0 = gingiva: background pairs are
            positives), False for CBCT (0 = air, bone, soft tissue: background pairs are left
            out).
    """
    lab = np.asarray(labels, np.int64)
    tooth = lab > 0
    same = lab[:, None] == lab[None, :]
    off_diagonal = ~np.eye(len(lab), dtype=bool)
    if background_is_one_structure:
        return Pairs(same & off_diagonal, off_diagonal)
    z = same & tooth[:, None] & tooth[None, :] & off_diagonal
    return Pairs(z, off_diagonal & (tooth[:, None] | tooth[None, :]))


def intra_pairs_from_proximity(centres: np.ndarray, factor: float = 1.2, radius_mm: float | None = None) -> Pairs:
    """Intra-modal z (n, n) without labels: centres closer than ``radius_mm`` (default ``factor``
    times the median nearest-centre distance) are positives; the diagonal is masked."""
    from scipy.spatial.distance import cdist

    c = np.asarray(centres, np.float64).reshape(-1, 3)
    d = cdist(c, c)
    off_diagonal = ~np.eye(len(c), dtype=bool)
    if radius_mm is None:
        nearest = np.where(off_diagonal, d, np.inf).min(axis=1) if len(c) > 1 else np.zeros(1)
        radius_mm = factor * float(np.median(nearest))
    return Pairs((d <= radius_mm) & off_diagonal, off_diagonal)


@dataclass
class PatchCorrespondence:
    """Everything the two losses need for one CBCT-IOS pair.

    Attributes:
        cross: (Nc, Ni) cross-modal pairs (Eq. 4).
        cbct: (Nc, Nc) and ios: (Ni, Ni) intra-modal pairs (Eq. 7).
        token_centres_ras: (Nc, 3), ios_centres_ras: (Ni, 3) float64.
        token_labels: (Nc,), ios_labels: (Ni,) int64 FDI / 0, or None when not known.
    """

    cross: Pairs
    cbct: Pairs
    ios: Pairs
    token_centres_ras: np.ndarray
    ios_centres_ras: np.ndarray
    token_labels: np.ndarray | None = None
    ios_labels: np.ndarray | None = None


def build_correspondence(grid: TokenGrid, ios_centres_ras: np.ndarray, labels_crop: np.ndarray | None = None,
                         ios_labels: np.ndarray | None = None,
                         config: CorrespondenceConfig | None = None) -> PatchCorrespondence:
    """All z matrices of one pair (see the module docstring for the definitions).

    Args:
        grid: tokens of the aligned Swin stage (:func:`swin_token_grid`).
        ios_centres_ras: (Ni, 3) IOS patch centres in CBCT RAS (:func:`ios_points_to_ras`).
        labels_crop: (K, J, I) FDI label map of the crop (ground truth or predicted), or None.
        ios_labels: (Ni,) patch labels (:func:`patch_labels`, :func:`labels_at_points`), or None.
    """
    config = config or CorrespondenceConfig()
    centres = np.asarray(ios_centres_ras, np.float64).reshape(-1, 3)
    tokens = grid.centres_ras()
    t_labels = None
    if labels_crop is not None:
        if tuple(np.shape(labels_crop)) != grid.crop_shape:
            raise InvalidInputError(f"labels_crop must have the crop's shape {grid.crop_shape} "
                                    f"(got {np.shape(labels_crop)}); crop the label map like the image")
        t_labels = token_labels(labels_crop, grid.stride, config.min_tooth_fraction)
        cbct = intra_pairs_from_labels(t_labels, background_is_one_structure=False)
    else:
        cbct = intra_pairs_from_proximity(tokens, config.proximity_factor_cbct)
    if ios_labels is not None:
        ios_labels = np.asarray(ios_labels, np.int64)
        if ios_labels.shape != (len(centres),):
            raise InvalidInputError(f"ios_labels must have one label per centre ({len(centres)}, got "
                                    f"{ios_labels.shape})")
        ios = intra_pairs_from_labels(ios_labels, background_is_one_structure=True)
    else:
        ios = intra_pairs_from_proximity(centres, config.proximity_factor_ios)
    return PatchCorrespondence(cross_modal_pairs(grid, centres, config), cbct, ios, tokens, centres,
                               t_labels, ios_labels)
