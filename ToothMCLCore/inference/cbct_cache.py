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

The kept teeth also outlive the predictor: :meth:`SegmentedTeeth.quantised` gives them as two
uint8 arrays (the probability in steps of 1/255, the class), which the Slicer module stores with
the segmentation in hidden volume nodes, saved with the scene; after the scene is read back,
:meth:`SegmentedTeeth.from_quantised` rebuilds them and
:meth:`~.cbct.CBCTPredictor.keep` hands them to a newly loaded predictor, so that the first click
of a new session reads the segmentation too (0.54 s for the paper-size model, its loading
counted, against 2.6 s for a network window). 1/255 is far finer than anything the tools compare the probability with (the
add tool's 0.5 threshold, the refine walk's weights).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .. import fdi
from ..errors import InvalidInputError
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
    """A digest of ``volume``'s voxels and grid: which scan a kept result belongs to. The grid
    counts to a nanometre: a scene saved and read back returns the voxels bit for bit but the
    IJK-to-RAS matrix only to about 1e-14 mm."""
    digest = hashlib.blake2b(digest_size=16)
    array = np.ascontiguousarray(volume.array)
    digest.update(repr((array.shape, array.dtype.str)).encode())
    digest.update(np.rint(np.asarray(volume.geometry.ijk_to_ras, np.float64) * 1e6).astype(np.int64).tobytes())
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
        model_sha256: the SHA-256 of the weights that made it (a predictor keeps only its own).
    """

    key: str
    geometry: Geometry
    tooth_probability: np.ndarray
    tooth_class: np.ndarray
    model_sha256: str = ""

    @classmethod
    def from_probabilities(cls, volume: Volume, geometry: Geometry, probs: np.ndarray,
                           model_sha256: str = "") -> SegmentedTeeth:
        """From (C, K, J, I) class probabilities on the crop ``geometry`` of ``volume``."""
        tooth, index = teeth_of(probs)
        return cls(volume_key(volume), geometry, tooth.astype(np.float16), index, model_sha256)

    def quantised(self) -> tuple[np.ndarray, np.ndarray]:
        """(tooth probability in 1/255 steps, tooth class), both (K, J, I) uint8: what a saved
        scene keeps (module docstring)."""
        probability = np.rint(np.clip(self.tooth_probability.astype(np.float32), 0.0, 1.0) * 255.0)
        return probability.astype(np.uint8), self.tooth_class

    @classmethod
    def from_quantised(cls, key: str, geometry: Geometry, probability, tooth_class,
                       model_sha256: str = "") -> SegmentedTeeth:
        """The kept teeth back from :meth:`quantised`'s arrays on the crop ``geometry``.

        Raises:
            InvalidInputError: the two arrays differ in shape or are not 3-D uint8.
        """
        probability, tooth_class = np.asarray(probability), np.asarray(tooth_class)
        if probability.ndim != 3 or probability.shape != tooth_class.shape or probability.dtype != np.uint8 \
                or tooth_class.dtype != np.uint8:
            raise InvalidInputError(f"the kept teeth need two 3-D uint8 arrays of one shape (got {probability.shape} "
                                    f"{probability.dtype} and {tooth_class.shape} {tooth_class.dtype}); segment the "
                                    "volume again to rebuild them")
        tooth = (probability.astype(np.float32) / 255.0).astype(np.float16)
        return cls(str(key), geometry, tooth, np.ascontiguousarray(tooth_class), str(model_sha256))

    def serves(self, volume: Volume, centre_ras) -> bool:
        """Whether a window centred on ``centre_ras`` of ``volume`` can be read from here: the same
        volume (by digest), the centre inside the crop."""
        at = (self.geometry.ras_to_ijk @ np.r_[np.asarray(centre_ras, np.float64).reshape(3), 1.0])[:3]
        if np.any(at < -0.5) or np.any(at > np.asarray(self.tooth_probability.shape[::-1]) - 0.5):
            return False
        return volume_key(volume) == self.key
