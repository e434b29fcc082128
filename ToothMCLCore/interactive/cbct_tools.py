"""Click tools on a CBCT label map (issue 15, first of them): split two merged teeth.

The label map is ``(K, J, I)`` FDI values on the volume's grid, clicks are RAS points (Slicer
markups). A tool returns new labels (the input is never changed) and an
:class:`~.common.Interaction` for the saved correction (``unit="voxels"``).

**Split.** Two neighbouring teeth segmented as one are one blob with a waist where they touch.
The blob is divided by a compact marker watershed (scikit-image) seeded at the two clicks, on the
negated distance to the blob's surface (in mm, the voxel spacing honoured). Measured on the
phantom's 29 neighbour pairs with their contact widened (a closing of 3 voxels): a plain
watershed lost 7 pairs (the larger tooth's basin floods the smaller one: Dice down to 0.005);
with ``compactness`` 1 none is lost (the worst pairs 0.87-0.89, the filled gap counted as
error), and with the contact as the phantom has it every pair is at Dice >= 0.9. An intensity
term (the darker contact between crowns) made it worse: the dark pulp inside each tooth draws
the cut, and a random walker on intensity lost 16 pairs. Both halves are then numbered by arch
order among the teeth of their jaw (:func:`~.common.numbers_by_arch`, RAS centres: x towards
the patient's right, y anterior).

Not yet (issue 15): adding a missed tooth with the network on a window around a click, and
growing or shrinking a tooth towards clicks; the Slicer buttons.
"""

from __future__ import annotations

import numpy as np

from .. import fdi
from ..errors import InvalidInputError
from ..types import Volume
from .common import Click, Interaction, numbers_by_arch, record

#: skimage's watershed compactness: how much the distance from each click counts beside the depth
#: (see the module docstring)
COMPACTNESS = 1.0


def voxel_at(volume: Volume, ras) -> tuple[int, int, int]:
    """The ``(k, j, i)`` voxel under a RAS click.

    Raises:
        InvalidInputError: not a 3-D point, or outside the image.
    """
    p = np.asarray(ras, np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InvalidInputError(f"a click is a 3-D RAS point (got {ras!r})")
    ijk = (volume.geometry.ras_to_ijk @ np.r_[p, 1.0])[:3]
    i, j, k = (int(np.round(x)) for x in ijk)
    shape = volume.array.shape
    if not (0 <= k < shape[0] and 0 <= j < shape[1] and 0 <= i < shape[2]):
        raise InvalidInputError(f"the click at {np.round(p, 1).tolist()} mm is outside the image; click inside the "
                                "volume")
    return k, j, i


def split_tooth(volume: Volume, labels, first_ras, second_ras) -> tuple[np.ndarray, Interaction]:
    """Two teeth labelled as one: one click in each (module docstring).

    Args:
        volume: the CBCT (intensities; its geometry places the clicks).
        labels: ``(K, J, I)`` FDI label map on the volume's grid.
        first_ras, second_ras: a point inside each tooth.

    Raises:
        InvalidInputError: labels not on the volume's grid, a click outside the image, on
            background or metal, or the two clicks on different teeth or the same voxel.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    lab = np.asarray(labels)
    if lab.shape != volume.array.shape:
        raise InvalidInputError(f"labels have shape {lab.shape} but the volume {volume.array.shape}; use the label map "
                                "of this volume")
    a, b = voxel_at(volume, first_ras), voxel_at(volume, second_ras)
    tooth = int(lab[a])
    if tooth == 0 or not fdi.is_valid_fdi(tooth) or int(lab[b]) == 0:
        raise InvalidInputError("both clicks of a split must be inside the tooth to split, not on background or metal")
    if int(lab[b]) != tooth:
        raise InvalidInputError(f"the clicks are in two different teeth ({tooth} and {int(lab[b])}); click twice in the "
                                "one segment that holds two teeth")
    if a == b:
        raise InvalidInputError("the two clicks of a split hit the same voxel; click once in each tooth")
    mask_full = lab == tooth
    box = tuple(slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2) for idx in np.nonzero(mask_full))
    mask = mask_full[box]
    spacing = np.asarray(volume.geometry.spacing)[::-1]  # (k, j, i) order
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(int(x - s.start) for x, s in zip(a, box))] = 1
    markers[tuple(int(x - s.start) for x, s in zip(b, box))] = 2
    parts = watershed(-depth, markers, mask=mask, compactness=COMPACTNESS)
    halves = []
    for value in (1, 2):
        half = np.zeros(lab.shape, bool)
        half[box] = parts == value
        halves.append(half)
    jaw = fdi.jaw_of(tooth)
    kept = [int(t) for t in np.unique(lab) if t not in (0, tooth) and fdi.is_valid_fdi(int(t))
            and fdi.jaw_of(int(t)) == jaw]
    ijk_to_ras = volume.geometry.ijk_to_ras
    split = np.zeros(lab.shape, np.int32)
    split[halves[0]], split[halves[1]] = 1, 2
    kji = ndimage.center_of_mass(np.ones(lab.shape, np.uint8), lab, kept) + \
        ndimage.center_of_mass(np.ones(lab.shape, np.uint8), split, [1, 2])  # one pass per label map

    def ras(point_kji):
        return (ijk_to_ras @ np.array([point_kji[2], point_kji[1], point_kji[0], 1.0]))[:3]

    centres = [ras(c) for c in kji]
    numbers = numbers_by_arch(jaw, kept, centres[: len(kept)], centres[len(kept):])
    out = lab.copy()
    for half, number in zip(halves, numbers):
        out[half] = number
    clicks = [Click("tooth", tuple(map(float, first_ras))), Click("tooth", tuple(map(float, second_ras)))]
    return out, record("split", clicks, numbers[0], numbers, int(np.count_nonzero(out != lab)), {"from": tooth},
                       unit="voxels")
