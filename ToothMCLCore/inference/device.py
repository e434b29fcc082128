"""Device selection and mixed precision, one place for the CLI, the Slicer module and training."""

from __future__ import annotations

import contextlib
import logging

from ..errors import ConfigError

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto"):
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` without a GPU is an error."""
    import torch

    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {device!r}; use one of {DEVICES}")


def autocast(device) -> contextlib.AbstractContextManager:
    """Float16 autocast on CUDA (the paper trains with AMP); a no-op on CPU, so CPU runs are fp32."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
