"""What the last segmentation of a CBCT saw, kept for the click tools (ours, not the papers').

The add and refine click tools need the network's tooth probability on a window around the click
(:mod:`ToothMCLCore.interactive.cbct_tools`). Running the network there costs one window: 2.2 s
for the paper-size SwinUNETR on 2 CPU cores with OpenVINO bf16, over the issue's 2 s per click.
But the segmentation the user is correcting already ran the network over the whole crop, so the
predictor keeps, from its last :meth:`~.cbct.CBCTPredictor.predict`, each crop voxel's tooth
probability (all tooth classes together, float16) and most probable tooth class (uint8): 3 bytes
per voxel (30 MB for a 250 x 250 x 160 crop), not the 34 float32 probabilities (136 bytes). A
click on the same volume (same voxels and grid, by digest) inside that crop reads the window from
there: the sliding window's blended probabilities, the same the segmentation was made from, in
about 0.1 s. Outside the crop the segmentation saw no teeth (the ROI step's judgement), so the
window reads 0 there; a click outside the crop, or on another volume, runs the network as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .. import fdi
from ..types import Geometry, Volume


def tooth_classes() -> np.ndarray:
    """Class indices of the ``"cbct"`` scheme that are teeth (not background, not metal)."""
    classes = np.arange(1, fdi.num_classes("cbct"))
    return classes[[fdi.is_valid_fdi(int(v)) for v in fdi.class_index_to_fdi(classes, "cbct")]]


def teeth_of(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tooth probability (all tooth classes together) float32, most probable tooth class uint8) of
    (C, ...) class probabilities; the tooth classes are read as one view, not copied."""
    classes = tooth_classes()
    lo, hi = int(classes[0]), int(classes[-1]) + 1
    contiguous = hi - lo == len(classes)
    teeth = probs[lo:hi] if contiguous else probs[classes]
    best = teeth.argmax(axis=0)
    index = best + lo if contiguous else classes[best]
    return teeth.sum(axis=0, dtype=np.float32), index.astype(np.uint8)


def volume_key(volume: Volume) -> str:
    """A digest of ``volume``'s voxels and grid: which scan a kept result belongs to."""
    digest = hashlib.blake2b(digest_size=16)
    array = np.ascontiguousarray(volume.array)
    digest.update(repr((array.shape, array.dtype.str)).encode())
    digest.update(np.asarray(volume.geometry.ijk_to_ras, np.float64).tobytes())
    digest.update(array.view(np.uint8).reshape(-1))
    return digest.hexdigest()


@dataclass(frozen=True)
class SegmentedTeeth:
    """The network's teeth on one segmentation's crop (module docstring).

    Attributes:
        key: :func:`volume_key` of the segmented volume.
        geometry: the crop's grid.
        tooth_probability: (K, J, I) float16, all tooth classes together.
        tooth_class: (K, J, I) uint8, the most probable tooth class (a ``"cbct"`` class index).
    """

    key: str
    geometry: Geometry
    tooth_probability: np.ndarray
    tooth_class: np.ndarray

    @classmethod
    def from_probabilities(cls, volume: Volume, geometry: Geometry, probs: np.ndarray) -> SegmentedTeeth:
        """From (C, K, J, I) class probabilities on the crop ``geometry`` of ``volume``."""
        tooth, index = teeth_of(probs)
        return cls(volume_key(volume), geometry, tooth.astype(np.float16), index)

    def serves(self, volume: Volume, centre_ras) -> bool:
        """Whether a window centred on ``centre_ras`` of ``volume`` can be read from here: the same
        volume (by digest), the centre inside the crop."""
        at = (self.geometry.ras_to_ijk @ np.r_[np.asarray(centre_ras, np.float64).reshape(3), 1.0])[:3]
        if np.any(at < -0.5) or np.any(at > np.asarray(self.tooth_probability.shape[::-1]) - 0.5):
            return False
        return volume_key(volume) == self.key
