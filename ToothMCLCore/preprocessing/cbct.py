"""CBCT preprocessing as in the ToothMCL paper (Methods, Data Preprocessing).

Steps: reorient to RAS and resample to isotropic spacing in one interpolation (trilinear for
images, nearest for labels), clip to [0, 2500] and divide by 2500 to [0, 1]. The paper says
"clipped to [0, 2500] HU and min-max normalised each volume"; we divide by the window's fixed
width instead of each volume's own range (a clipped scan with air and enamel spans the whole
window anyway; a fixed divisor keeps a scan without air at the same scale). The stored offset
detected before clipping (:class:`~ToothMCLCore.config.CBCTPreprocessConfig`, ours) makes the
window [-1000, 1500] HU on scans stored in HU with air at -1000.

Resampling uses SimpleITK's multi-threaded ``Resample`` rather than hand-written code: it
handles oblique directions exactly and is fast on large volumes. When the input grid already
is the target grid up to axis flips and permutations (the common case of a 0.3 mm scan), the
array is only transposed and flipped: no interpolation, bit-exact.

The canonical grid has ``direction_ras = identity``: voxel index i grows toward the patient's
Right, j toward Anterior, k toward Superior (RAS+, as in 3D Slicer and NIfTI world space).
"""

from __future__ import annotations

import logging

import numpy as np

from ..config import CBCTPreprocessConfig
from ..errors import InvalidInputError, ResourceLimitError
from ..types import Geometry, Volume

logger = logging.getLogger(__name__)

#: largest canonical (resampled) volume preprocessing will allocate, float32 bytes
MAX_CANONICAL_BYTES = 4 * 1024**3

#: an input this many times finer than the target is first smoothed (anti-aliasing) - never,
#: for the paper's 0.25 -> 0.3 mm; only for very fine micro-CT-like inputs.
_ANTIALIAS_RATIO = 2.0


def canonical_geometry(geometry: Geometry, shape_kji, spacing_mm) -> tuple[Geometry, tuple]:
    """RAS-aligned grid at ``spacing_mm`` (one size, or three along R, A, S: i, j, k) covering the
    whole input volume.

    The returned geometry has ``direction_ras = identity``: voxel index i grows along +R
    (world x), j along +A, k along +S. Its origin is the RAS minimum corner of the input's
    voxel centres, so every input voxel centre lies inside the new grid.

    Returns:
        (geometry, shape_kji) of the canonical grid.
    """
    k, j, i = shape_kji
    corners = np.array(
        [[a, b, c, 1.0] for a in (0, i - 1) for b in (0, j - 1) for c in (0, k - 1)]
    )
    ras = (geometry.ijk_to_ras @ corners.T).T[:, :3]
    lo, hi = ras.min(axis=0), ras.max(axis=0)
    spacing = np.broadcast_to(np.asarray(spacing_mm, np.float64), (3,))
    size_ijk = np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1
    out = Geometry(spacing.copy(), lo, np.eye(3))
    return out, (int(size_ijk[2]), int(size_ijk[1]), int(size_ijk[0]))


def _axis_permutation(direction: np.ndarray) -> tuple[list[int], list[bool]] | None:
    """If ``direction`` is a signed permutation, the input axis of each RAS axis and its flip."""
    rounded = np.round(direction)
    if not np.allclose(direction, rounded, atol=1e-5):
        return None
    perm, flip = [], []
    for world_axis in range(3):
        row = rounded[world_axis]
        src = int(np.argmax(np.abs(row)))
        perm.append(src)
        flip.append(bool(row[src] < 0))
    if sorted(perm) != [0, 1, 2]:
        return None
    return perm, flip


def resample_to_canonical(volume: Volume, spacing_mm, is_label: bool = False) -> Volume:
    """Reorient to RAS and resample to ``spacing_mm`` in a single interpolation.

    Args:
        volume: input volume, any orientation.
        spacing_mm: target voxel size: one (isotropic, our models) or three along R, A, S (an
            nnU-Net model with anisotropic plans).
        is_label: nearest-neighbour interpolation (labels) instead of trilinear (images).

    Returns:
        Volume on :func:`canonical_geometry`, float32 for images, the input dtype for labels.
    """
    geom = volume.geometry
    target, shape = canonical_geometry(geom, volume.array.shape, spacing_mm)
    axes = _axis_permutation(geom.direction_ras)
    if axes is not None and np.allclose(np.asarray(geom.spacing)[axes[0]], target.spacing, rtol=1e-4):
        perm, flip = axes  # world axis w is input axis perm[w]: a transpose and flips, no interpolation
        arr = volume.array
        # array axes are (k, j, i) -> input ijk axis a is array axis 2 - a
        kji_axes = [2 - perm[2], 2 - perm[1], 2 - perm[0]]
        arr = np.transpose(arr, kji_axes)
        flips = [flip[2], flip[1], flip[0]]
        for ax, f in enumerate(flips):
            if f:
                arr = np.flip(arr, axis=ax)
        arr = np.ascontiguousarray(arr if is_label else arr.astype(np.float32, copy=False))
        if arr.shape == shape:
            return Volume(arr, target, volume.source, dict(volume.metadata))
    return resample_onto(volume, target, shape, is_label=is_label)


def resample_onto(volume: Volume, geometry: Geometry, shape_kji, is_label: bool = False,
                  smooth_labels: bool = False) -> Volume:
    """Resample ``volume`` onto an arbitrary grid (SimpleITK).

    Args:
        volume: source volume.
        geometry, shape_kji: destination grid.
        is_label: nearest neighbour (or label-Gaussian with ``smooth_labels``) instead of linear.
        smooth_labels: use SimpleITK's label-Gaussian interpolator, which gives smooth label
            boundaries when going from a coarse to a finer grid.
    """
    import SimpleITK as sitk

    from ..io.volume import sitk_image

    src = volume.array
    if not is_label:
        src = src.astype(np.float32, copy=False)
    elif src.dtype not in (np.uint8, np.uint16, np.int16, np.int32):
        src = src.astype(np.int32)
    image = sitk_image(src, volume.geometry)
    reference = sitk_image(np.zeros((1, 1, 1), dtype=np.uint8), geometry)
    f = sitk.ResampleImageFilter()
    f.SetSize([int(shape_kji[2]), int(shape_kji[1]), int(shape_kji[0])])
    f.SetOutputSpacing(reference.GetSpacing())
    f.SetOutputOrigin(reference.GetOrigin())
    f.SetOutputDirection(reference.GetDirection())
    f.SetDefaultPixelValue(0.0 if is_label else float(np.min(src)))
    if is_label:
        f.SetInterpolator(sitk.sitkLabelGaussian if smooth_labels else sitk.sitkNearestNeighbor)
    else:
        f.SetInterpolator(sitk.sitkLinear)
        ratio = float(np.min(geometry.spacing) / np.min(volume.geometry.spacing))
        if ratio > _ANTIALIAS_RATIO:
            sigma = [0.5 * s for s in geometry.spacing]
            image = sitk.SmoothingRecursiveGaussian(image, sigma)
    out = f.Execute(image)
    arr = sitk.GetArrayFromImage(out)
    return Volume(arr, geometry, volume.source, dict(volume.metadata))


def detect_intensity_offset(array: np.ndarray, config: CBCTPreprocessConfig) -> float:
    """Offset to add to stored intensities so that air sits near 0 (see the config docstring)."""
    if not isinstance(config.intensity_offset, str):
        return float(config.intensity_offset)
    sample = array.ravel()
    if sample.size > 2_000_000:
        sample = sample[:: sample.size // 2_000_000]
    low = float(np.percentile(sample, 0.5))
    offset = 1000.0 if low < -500.0 else 0.0
    logger.info("intensity offset: 0.5th percentile %.0f -> adding %.0f", low, offset)
    return offset


def normalize_intensity(array: np.ndarray, config: CBCTPreprocessConfig, offset: float) -> np.ndarray:
    """Clip ``array + offset`` to [clip_min, clip_max] and scale to [0, 1], float32."""
    out = array.astype(np.float32, copy=True)
    if offset:
        out += np.float32(offset)
    np.clip(out, config.clip_min, config.clip_max, out=out)
    out -= np.float32(config.clip_min)
    out /= np.float32(config.clip_max - config.clip_min)
    return out


def preprocess_cbct(volume: Volume, config: CBCTPreprocessConfig) -> tuple[Volume, dict]:
    """Full CBCT preprocessing: RAS + isotropic resampling, offset, clip, normalise.

    Returns:
        (canonical volume with float32 values in [0, 1], info dict with the offset used and
        the canonical geometry) -- the info goes into the output's provenance.
    """
    if volume.array.ndim != 3:
        raise InvalidInputError(f"volume must be 3-D (got shape {volume.array.shape}); load a single CBCT series")
    _, shape = canonical_geometry(volume.geometry, volume.array.shape, config.spacing_mm)
    need = int(np.prod(shape, dtype=np.int64)) * 4
    if need > MAX_CANONICAL_BYTES:
        raise ResourceLimitError(
            f"resampled to {config.spacing_mm} mm this volume would be {shape[2]}x{shape[1]}x{shape[0]} "
            f"voxels ({need / 2**30:.1f} GiB); crop it to the jaws (or to at most about "
            f"{(MAX_CANONICAL_BYTES / 4) ** (1 / 3) * config.spacing_mm:.0f} mm per side) first"
        )
    offset = detect_intensity_offset(volume.array, config)
    canonical = resample_to_canonical(volume, config.spacing_mm, is_label=False)
    canonical.array = normalize_intensity(canonical.array, config, offset)
    return canonical, {"intensity_offset": offset, "spacing_mm": config.spacing_mm}
