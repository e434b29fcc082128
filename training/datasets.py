"""Training data for the CBCT models, prepared with the core's own preprocessing.

A case is prepared exactly as inference prepares a volume (``preprocess_cbct``: RAS,
isotropic spacing, offset, clip, normalise), and its labels are resampled with nearest
neighbour onto the same grid and mapped to class indices through ``ToothMCLCore.fdi``. So the
network never sees data that inference would prepare differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ToothMCLCore import fdi
from ToothMCLCore.config import CBCTPreprocessConfig
from ToothMCLCore.preprocessing.cbct import preprocess_cbct, resample_onto
from ToothMCLCore.types import Volume


@dataclass
class PreparedCase:
    """One case on the canonical grid.

    Attributes:
        image: (K, J, I) float32 in [0, 1].
        classes: (K, J, I) int64 class indices of the ``cbct`` scheme.
        teeth_box: slices of the teeth's bounding box (what the ROI crop would give).
        name: identifier for logs.
    """

    image: np.ndarray
    classes: np.ndarray
    teeth_box: tuple
    name: str


def prepare_case(image: Volume, labels: Volume, config: CBCTPreprocessConfig, name: str = "",
                 scheme: str = "cbct") -> PreparedCase:
    canonical, _ = preprocess_cbct(image, config)
    lab = resample_onto(labels, canonical.geometry, canonical.array.shape, is_label=True).array
    if scheme == "binary":
        classes = (np.isin(lab, fdi.PERMANENT_FDI + fdi.PRIMARY_FDI)).astype(np.int64)
    else:
        classes = fdi.fdi_to_class_index(lab, scheme, strict=False)
    idx = np.nonzero(classes)
    if len(idx[0]) == 0:
        box = tuple(slice(0, s) for s in classes.shape)
    else:
        box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in idx)
    return PreparedCase(canonical.array, classes, box, name)


def expand_box(box, shape, margin_voxels: int, rng: np.random.Generator | None = None):
    """Grow a box by a margin (randomised by up to +-50% when ``rng`` is given)."""
    out = []
    for sl, size in zip(box, shape):
        lo_m = hi_m = margin_voxels
        if rng is not None:
            lo_m = int(margin_voxels * rng.uniform(0.5, 1.5))
            hi_m = int(margin_voxels * rng.uniform(0.5, 1.5))
        out.append(slice(max(0, sl.start - lo_m), min(size, sl.stop + hi_m)))
    return tuple(out)


def random_patch(case: PreparedCase, size: tuple[int, int, int], rng: np.random.Generator,
                 region: tuple | None = None, foreground_fraction: float = 0.8):
    """A random ``size`` patch (zero-padded where the volume is smaller) and its classes.

    With probability ``foreground_fraction`` the patch is centred on a random foreground
    voxel (as MONAI's RandCropByPosNegLabel does), else anywhere in ``region``.
    """
    region = region or tuple(slice(0, s) for s in case.image.shape)
    img = case.image[region]
    cls = case.classes[region]
    if rng.random() < foreground_fraction and cls.any():
        fg = np.flatnonzero(cls)
        centre = np.unravel_index(fg[rng.integers(len(fg))], cls.shape)
    else:
        centre = tuple(int(rng.integers(s)) for s in cls.shape)
    x = np.zeros(size, dtype=np.float32)
    y = np.zeros(size, dtype=np.int64)
    src, dst = [], []
    for c, s, n in zip(centre, size, cls.shape):
        start = int(c) - s // 2
        a, b = max(start, 0), min(start + s, n)
        src.append(slice(a, b))
        dst.append(slice(a - start, b - start))
    x[tuple(dst)] = img[tuple(src)]
    y[tuple(dst)] = cls[tuple(src)]
    return x, y


def augment_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paper augmentations that keep anatomy: random intensity shift and Gaussian noise.

    No flips, ever: a flip turns left teeth into right teeth.
    """
    x = x + np.float32(rng.uniform(-0.05, 0.05))
    x = x * np.float32(rng.uniform(0.9, 1.1))
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.03), size=x.shape).astype(np.float32)
    return x.astype(np.float32)
