"""SOFTooth (Li et al.): IOS tooth instance segmentation with frozen-SAM semantics and FDI order.

- ``encoder``: dual-stream k-NN graph encoder (Section III-B1).
- ``prg``: Point-wise Residual Gating of SAM features (III-B2).
- ``cmr``: Center-Guided Mask Refinement (III-C).
- ``network``: :class:`SOFTooth`, presets and the registry builder.
- ``matching``: FDI Order-Aware Hungarian Matching, training and inference (III-D).
- ``losses``: the training objective (Eq. 14-15).

The per-face input (24-d features of a scan decimated to about 10,000 faces, canonical frame)
and the occlusal-view SAM features come from ``ToothMCLCore.preprocessing.softooth`` and
``ToothMCLCore.models.sam_features``. Importing this package imports torch; nothing else
happens at import time.
"""

from __future__ import annotations

from .losses import SOFToothLoss
from .matching import FHMConfig, assign_instances, faces_to_fdi, fhm_match, fhm_similarity
from .network import SOFTOOTH_PRESETS, SOFTooth, build_softooth

__all__ = [
    "SOFTOOTH_PRESETS",
    "FHMConfig",
    "SOFTooth",
    "SOFToothLoss",
    "assign_instances",
    "build_softooth",
    "faces_to_fdi",
    "fhm_match",
    "fhm_similarity",
]
