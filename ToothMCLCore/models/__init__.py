"""Network builders, checkpoints and the model registry.

``ARCHITECTURES`` is a plain dict of builder functions (as segment-anything's ``build_sam``
registry): a model card names its builder and the builder's keyword arguments, so a checkpoint
never needs pickled code to be rebuilt.
"""

from __future__ import annotations

from .networks import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "build_model"]
