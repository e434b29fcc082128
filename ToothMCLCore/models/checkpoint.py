"""Checkpoints: safetensors weights plus a JSON model card, never a pickle.

A checkpoint is two files side by side: ``NAME.safetensors`` (tensors only, nothing that can
run code when loaded) and ``NAME.json`` (a :class:`~ToothMCLCore.config.ModelCard`). Loading
checks the weights' SHA-256 against the card, rebuilds the network from the card's builder
name and arguments, and loads the tensors strictly (a missing or extra key is an error).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..config import ModelCard
from ..errors import ConfigError, WeightsError
from ..io.atomic import atomic_path, atomic_write_text
from .networks import build_model

logger = logging.getLogger(__name__)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def card_path(weights_path: str | os.PathLike) -> Path:
    """The model card that belongs to a weights file: same name, ``.json``."""
    p = Path(weights_path)
    return p.with_name(p.name[: -len(".safetensors")] + ".json") if p.name.endswith(".safetensors") else p.with_suffix(".json")


def save_checkpoint(model, card: ModelCard, weights_path: str | os.PathLike) -> ModelCard:
    """Write ``model``'s state dict as safetensors and its card (with the SHA-256) as JSON.

    Returns:
        The card as written (``sha256`` filled in).
    """
    from safetensors.torch import save_file

    weights_path = Path(weights_path)
    if not weights_path.name.endswith(".safetensors"):
        raise ConfigError(f"weights file must end in .safetensors (got {weights_path.name})")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"name": card.name, "version": card.version})
    digest = sha256_of(weights_path)
    card_dict = card.to_dict()
    card_dict["sha256"] = digest
    written = ModelCard.from_dict(card_dict)
    atomic_write_text(card_path(weights_path), json.dumps(written.to_dict(), indent=2) + "\n")
    return written


def update_card(weights_path: str | os.PathLike, **fields) -> ModelCard:
    """Replace ``fields`` of the card beside ``weights_path`` (e.g. ``boundary_model=...``, figures in
    ``metrics``) and write it back atomically; the weights and their SHA-256 stay as they are.

    Returns:
        The card as written.
    """
    data = read_card(card_path(weights_path)).to_dict()
    data.update(fields)
    written = ModelCard.from_dict(data)
    atomic_write_text(card_path(weights_path), json.dumps(written.to_dict(), indent=2) + "\n")
    return written


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read a model card JSON; a missing or malformed card raises :class:`WeightsError`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"model card {path} not found; every .safetensors file needs its .json card beside it"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"model card {path} is not valid JSON ({exc}); re-download the model") from None
    try:
        return ModelCard.from_dict(data)
    except ConfigError as exc:
        raise WeightsError(f"model card {path} is invalid: {exc}") from None


def verify_checkpoint(weights_path: str | os.PathLike, expected_sha256: str | None = None) -> ModelCard:
    """Check a checkpoint without building its network: file, suffix, card and SHA-256.

    This is cheap (no torch, no MONAI), so callers can refuse a bad checkpoint at once and
    build the network later, or in the background.

    Args:
        weights_path: ``.safetensors`` file with its ``.json`` card beside it.
        expected_sha256: if given (from a registry entry), must match too.

    Returns:
        The checkpoint's :class:`ModelCard`.

    Raises:
        WeightsError: missing file, not safetensors, missing or invalid card, checksum mismatch.
    """
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise WeightsError(f"weights file {weights_path} not found; check the path or use --model NAME")
    if not weights_path.name.endswith(".safetensors"):
        raise WeightsError(
            f"{weights_path.name} is not a .safetensors file; ToothMCL never loads pickled "
            "checkpoints -- convert it with training/convert_checkpoint.py on a trusted machine"
        )
    card = read_card(card_path(weights_path))
    digest = sha256_of(weights_path)
    for label, want in (("model card", card.sha256), ("registry", expected_sha256)):
        if want and want.lower() != digest:
            raise WeightsError(
                f"SHA-256 of {weights_path.name} is {digest} but the {label} says {want}; "
                "the file is corrupt or not the published one: delete it and download it again"
            )
    return card


def build_checkpoint(weights_path: str | os.PathLike, card: ModelCard, device="cpu"):
    """Rebuild the network of a checkpoint that :func:`verify_checkpoint` accepted.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        WeightsError: a corrupt file, or tensors that do not fit the card's architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path = Path(weights_path)
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {weights_path}: {exc}; download the weights again") from None
    model = build_model(card.architecture, card.arch_args)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(
            f"weights {weights_path.name} do not fit architecture {card.architecture!r} "
            f"{card.arch_args}: {first}"
        ) from None
    model.eval()
    logger.info("loaded %s v%s (%s)", card.name, card.version, card.sha256[:12] or "card without SHA-256")
    return model.to(device)


def load_checkpoint(weights_path: str | os.PathLike, device="cpu", expected_sha256: str | None = None):
    """Rebuild a network from ``weights_path`` and its card; verify the SHA-256 first.

    Args:
        weights_path: ``.safetensors`` file with its ``.json`` card beside it.
        device: torch device to load onto.
        expected_sha256: if given (from a registry entry), must match too.

    Returns:
        (model in eval mode on ``device``, :class:`ModelCard`).

    Raises:
        WeightsError: missing file, checksum mismatch, corrupt file, or tensors that do not fit
            the architecture.
    """
    card = verify_checkpoint(weights_path, expected_sha256)
    return build_checkpoint(weights_path, card, device), card
