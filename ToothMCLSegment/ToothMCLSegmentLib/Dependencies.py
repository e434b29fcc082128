"""Python packages the module needs, checked without importing them, installed only when asked.

Nothing here runs at import. ``missingPackages`` uses ``importlib.util.find_spec`` (fast, does
not import torch). ``ensureDependencies`` asks the user first, then installs torch through the
PyTorch extension's ``PyTorchUtils`` when it is present (it picks the CUDA build that matches the
driver) and with pip otherwise, and the other packages with ``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

CORE_PACKAGE = "ToothMCLCore"
TORCH_REQUIREMENT = ">=2.1"
#: import name -> pip requirement, for CBCT segmentation (IOS adds its own with its pipeline)
REQUIREMENTS = {
    "torch": "torch" + TORCH_REQUIREMENT,
    "monai": "monai>=1.5",
    "einops": "einops>=0.7",
    "safetensors": "safetensors>=0.4",
    "scipy": "scipy>=1.12",
    "SimpleITK": "SimpleITK>=2.3",
}


def isImportable(name: str) -> bool:
    """True if ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missingPackages(requirements: dict[str, str] | None = None) -> list[str]:
    """Import names of the required packages that are not installed."""
    return [name for name in (requirements or REQUIREMENTS) if not isImportable(name)]


def hasPyTorchExtension() -> bool:
    return isImportable("PyTorchUtils")


def installTorchWithExtensionOrPip() -> None:
    """Install torch: via the PyTorch extension when present, else ``pip install torch``."""
    import slicer

    if hasPyTorchExtension():
        import PyTorchUtils

        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise RuntimeError("the PyTorch extension did not install torch")
    else:
        slicer.util.pip_install(REQUIREMENTS["torch"])


def pipInstall(requirements: list[str]) -> None:
    import slicer

    slicer.util.pip_install(" ".join(requirements))


def ensureDependencies(confirm: Callable[[str], bool] | None,
                       requirements: dict[str, str] | None = None,
                       installTorch: Callable[[], None] = installTorchWithExtensionOrPip,
                       install: Callable[[list[str]], None] = pipInstall) -> list[str]:
    """Make sure the required packages are importable; returns the import names installed.

    Args:
        confirm: asks the user, gets the message, returns True to install. None (batch mode)
            never installs: missing packages raise.
        requirements: import name -> pip requirement (default :data:`REQUIREMENTS`).
        installTorch, install: installers (the defaults use the PyTorch extension and pip).

    Raises:
        ImportError: ToothMCLCore itself is missing (a broken extension install).
        ToothMCLError: packages are missing and the user declined, or installing failed.
    """
    if not isImportable(CORE_PACKAGE):
        raise ImportError(
            f"{CORE_PACKAGE} is not installed next to the ToothMCLSegment module; reinstall the "
            "ToothMCL extension (or pip install -e . in a source checkout)"
        )
    from ToothMCLCore.errors import ToothMCLError

    requirements = requirements or REQUIREMENTS
    missing = missingPackages(requirements)
    if not missing:
        return []
    specs = [requirements[name] for name in missing]
    if confirm is None:
        raise ToothMCLError(
            f"tooth segmentation needs {', '.join(specs)}, which are not installed; open the ToothMCL "
            "Segment module in 3D Slicer to install them, or run slicer.util.pip_install(...)"
        )
    message = (f"Tooth segmentation needs these Python packages: {', '.join(specs)}.\n\n"
               + ("PyTorch is large (about 1-3 GB) and may take several minutes to download. "
                  if "torch" in missing else "")
               + "Install them now?")
    if not confirm(message):
        raise ToothMCLError(
            f"{', '.join(specs)} not installed; tooth segmentation cannot run without them. "
            "Click 'Segment teeth' again and accept the installation"
        )
    try:
        if "torch" in missing:
            logger.info("installing torch")
            installTorch()
        others = [requirements[name] for name in missing if name != "torch"]
        if others:
            logger.info("installing %s", others)
            install(others)
    except Exception as exc:
        raise ToothMCLError(
            f"installing {', '.join(specs)} failed ({exc}); check the network connection, restart "
            "3D Slicer and try again"
        ) from exc
    importlib.invalidate_caches()
    still = missingPackages({name: requirements[name] for name in missing})
    if still:
        raise ToothMCLError(
            f"{', '.join(still)} still cannot be imported after installing; restart 3D Slicer and try again"
        )
    return missing
