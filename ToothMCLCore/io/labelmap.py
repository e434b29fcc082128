"""What every label-map reader and writer checks (:mod:`.volume` and :mod:`.segnrrd` both use it).

Its own module so that the two formats' modules need not import each other: :mod:`.volume`
hands ``.seg.nrrd`` files to :mod:`.segnrrd`, which needs only these checks.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from ..types import Geometry, Volume

#: default memory budget of one volume as float32 (4 GiB)
DEFAULT_MAX_BYTES = 4 * 1024**3


def check_labelmap(labels, reference: Geometry | Volume) -> tuple[np.ndarray, Geometry]:
    """Validate a label map against its reference grid.

    Args:
        labels: ``(K, J, I)`` integer (or bool, or integral float) array of label values >= 0.
        reference: the :class:`Geometry` to write it on, or a :class:`Volume` whose shape the
            labels must also match.

    Returns:
        ``(labels, geometry)``: labels as ``uint8`` if ``max <= 255`` else ``uint16``.

    Raises:
        InvalidInputError: wrong dimension or shape, negative, fractional or > 65535 values.
    """
    arr = np.asarray(labels)
    geometry = reference.geometry if isinstance(reference, Volume) else reference
    if not isinstance(geometry, Geometry):
        raise InvalidInputError(
            f"reference must be a Geometry or a Volume (got {type(reference).__name__}); "
            "pass the geometry of the input volume"
        )
    if arr.ndim != 3:
        raise InvalidInputError(
            f"label map must be 3-D (K, J, I) (got shape {arr.shape}); pass the full volume labels"
        )
    if isinstance(reference, Volume) and arr.shape != reference.array.shape:
        raise InvalidInputError(
            f"label map shape {arr.shape} differs from the reference volume "
            f"{reference.array.shape}; resample the labels onto the input volume grid first"
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        numeric = np.issubdtype(arr.dtype, np.number)
        if not numeric or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InvalidInputError(
                f"label map must hold integer label values (got dtype {arr.dtype} with fractional "
                "or non-finite values); round or argmax the network output first"
            )
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise InvalidInputError(
            f"label values must be in 0..65535 (got {lo}..{hi}); use FDI numbers, "
            "0 for background, 99 for metal"
        )
    return arr.astype(np.uint8 if hi <= 255 else np.uint16, copy=False), geometry
