"""Random CBCT crops, optionally rotated, and the geometry that goes with them.

A crop is the grid of ``size`` voxels (k, j, i) centred on a point of the source array and
turned by a rotation about that point. Source and crop have the same isotropic spacing (the
canonical grid of :func:`~ToothMCLCore.preprocessing.cbct.preprocess_cbct`), so the rotation
is a plain rotation of voxel coordinates. :func:`crop_geometry` gives the crop's RAS geometry,
which is what the pretraining needs to find the tokens a scan patch falls in; fine-tuning only
needs the voxels.

The paper's fine-tuning rotations are "within (-0.5, 0.5) radians"; we draw one angle per axis
(:func:`random_rotation`). A rotation is never a mirror (no flips: a flip turns left teeth into
right teeth).
"""

from __future__ import annotations

import numpy as np

from ToothMCLCore.types import Geometry

#: permutes (k, j, i) and (i, j, k) voxel coordinates, homogeneous
_SWAP = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def rotation_kji(angles) -> np.ndarray:
    """(3, 3) rotation of (k, j, i) voxel coordinates by ``angles`` (radians) about k, j, i in turn."""
    out = np.eye(3)
    for axis, a in enumerate(np.asarray(angles, np.float64).reshape(3)):
        c, s = np.cos(a), np.sin(a)
        p, q = [b for b in range(3) if b != axis]
        r = np.eye(3)
        r[p, p], r[p, q], r[q, p], r[q, q] = c, -s, s, c
        out = r @ out
    return out


def random_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A rotation with one angle per axis drawn in (-max_angle, max_angle); identity for 0."""
    if max_angle <= 0:
        return np.eye(3)
    return rotation_kji(rng.uniform(-max_angle, max_angle, size=3))


def crop_affine(centre_kji, size, rotation: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) map from crop voxel (k, j, i) to source voxel (k, j, i).

    Voxel ``(size - 1) / 2`` of the crop lands on ``centre_kji``; the crop's axes are the
    source's turned by ``rotation`` (None: not turned). A crop that is not turned is snapped to
    the source's voxels (its centre moves by up to half a voxel), so that it is a plain copy:
    no interpolation blurs the image or shifts the labels.
    """
    r = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
    half = (np.asarray(size, np.float64) - 1.0) / 2.0
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = np.asarray(centre_kji, np.float64) - r @ half
    if np.allclose(r, np.eye(3)):
        m[:3, 3] = np.round(m[:3, 3])
    return m


def sample_crop(array: np.ndarray, affine: np.ndarray, size, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """The crop of ``array`` (K, J, I) described by ``affine`` (:func:`crop_affine`), shape ``size``.

    Outside the source it is ``cval``. Without rotation and with whole-voxel offsets it is a
    copy of a slice (exact, fast); otherwise linear (``order=1``, images) or nearest
    (``order=0``, labels) interpolation.
    """
    size = tuple(int(s) for s in size)
    r, t = affine[:3, :3], affine[:3, 3]
    if np.allclose(r, np.eye(3)) and np.allclose(t, np.round(t)):
        start = np.round(t).astype(int)
        out = np.full(size, cval, dtype=array.dtype)
        src, dst = [], []
        for s0, n, total in zip(start, size, array.shape):
            a, b = max(s0, 0), min(s0 + n, total)
            if b <= a:
                return out
            src.append(slice(a, b))
            dst.append(slice(a - s0, b - s0))
        out[tuple(dst)] = array[tuple(src)]
        return out
    from scipy import ndimage

    return ndimage.affine_transform(np.asarray(array), r, offset=t, output_shape=size, order=order,
                                    mode="constant", cval=cval, prefilter=False)


def crop_geometry(source: Geometry, affine: np.ndarray) -> Geometry:
    """RAS geometry of a crop of a volume on ``source`` (``affine`` from :func:`crop_affine`)."""
    return Geometry.from_ijk_to_ras(source.ijk_to_ras @ _SWAP @ affine @ _SWAP)


def random_centre(rng: np.random.Generator, region: tuple[slice, ...], size, shape) -> np.ndarray:
    """(3,) float64 crop centre (k, j, i) so that a crop of ``size`` lies inside ``region``.

    Along an axis where the region is smaller than the crop, the crop is centred on the
    region, shifted by up to half the difference (the rest is padding).
    """
    centre = []
    for sl, n, total in zip(region, size, shape):
        lo, hi = sl.start or 0, total if sl.stop is None else sl.stop
        length = hi - lo
        if length >= n:
            start = lo + int(rng.integers(0, length - n + 1))
        else:
            slack = n - length
            start = lo - slack // 2 + int(rng.integers(-(slack // 2), slack // 2 + 1))
        centre.append(start + (n - 1) / 2.0)
    return np.asarray(centre, np.float64)
