"""Import MONAI without the integrations ToothMCL never uses: a CLI run pays ~1 s, not ~3-4 s.

``import monai`` imports every MONAI subpackage, and each of those tries its optional
integrations: torchvision (and with it torch._dynamo), matplotlib, pandas, scikit-learn,
Hugging Face, experiment trackers, ... whatever is installed. On 2 CPU cores, after torch,
SciPy and SimpleITK are loaded, that cost 2.9 s here; with those integrations kept out, 1.1 s.
MONAI has no switch for it, so :func:`import_monai` hides the packages below from the first
MONAI import only: MONAI's own ``optional_import`` then records them as absent (which only the
MONAI features that need them would notice; the network classes, losses and the sliding-window
inferer we use do not). Packages already imported are left alone, the import lock is held while
they are hidden (no other thread can see them missing), and they are importable again as soon
as MONAI is in: a later ``import matplotlib`` works as usual.

Every ToothMCL module that needs MONAI imports it through :func:`import_monai` (or after it).
"""

from __future__ import annotations

import sys

#: optional MONAI integrations kept out of the first MONAI import (top-level package names)
KEPT_OUT = ("torchvision", "matplotlib", "pandas", "sklearn", "huggingface_hub", "transformers", "triton",
            "tensorboard", "mlflow", "clearml", "wandb", "ignite", "cucim", "itk", "optuna", "pynvml", "zarr",
            "h5py", "lmdb", "openslide", "tifffile", "imagecodecs", "fire", "jsonschema")


def import_monai():
    """The ``monai`` package, imported once without :data:`KEPT_OUT` (module docstring)."""
    if "monai" in sys.modules:
        return sys.modules["monai"]
    import _imp

    _imp.acquire_lock()
    hidden = [name for name in KEPT_OUT if name not in sys.modules]
    try:
        for name in hidden:
            sys.modules[name] = None  # "import name" raises ImportError: MONAI treats it as not installed
        import monai

        return monai
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
        _imp.release_lock()
