"""Frozen SAM image encoder for SOFTooth's PRG: occlusal-view embedding and per-face features.

The paper passes the rendered occlusal view through a frozen SAM encoder (``E_2d``, 256 x 64 x
64) and bilinearly samples it at every face's pixel (Eq. 2-3). This module does that:

- **Encoder.** segment-anything's ViT-B/L/H image encoder, built with ``checkpoint=None`` and
  filled with our own ``torch.load(..., weights_only=True)``: segment-anything's builder calls
  torch.load on the file without the weights-only flag and so relies on the torch version's default to
  refuse pickled code. A SAM checkpoint is a plain state dict, so nothing is lost. The file's
  SHA-256 must equal ``sha256`` or, by default, the published one of the official checkpoint
  (:data:`SAM_SHA256`). The encoder is frozen (``requires_grad_(False)``, eval mode) and run
  under ``torch.inference_mode``; what it returns is numpy, so no autograd graph reaches it.
- **Preprocessing** as ``SamPredictor.set_image``: ``ResizeLongestSide`` to the encoder's
  input size, SAM's pixel mean/std, zero padding to a square. Our renders are square, so
  nothing is padded and the embedding covers the whole image.
- **Sampling** (:func:`sample_embedding`). ``align_corners=True`` (default) is Eq. 3:
  ``x~ = x (W'-1)/(W-1)``, the first and last pixel centres on the first and last embedding
  cell. ``align_corners=False`` is the patch geometry (cell j covers pixels 16j..16j+15); the
  two differ by less than half a cell (8 pixels at 1024). Outside the grid the border value.
- **Cache.** The embedding of a scan is computed once: ``$TOOTHMCL_CACHE/sam/<key>.npy``
  (:func:`ToothMCLCore.models.registry.cache_dir`), ``key`` = SHA-256 of a format tag, the
  model type, the weights' SHA-256 and the image's shape and bytes. Written atomically as
  ``.npy`` and read with ``allow_pickle=False``; an unreadable entry is recomputed. A randomly
  initialised ViT (benchmarks only, ``allow_random_init=True``) is never cached.
- ``model_type="tiny"``: a small random-weight convolutional encoder with the same interface
  (RGB image -> 256 x H/16 x W/16, fixed seed) so tests need no ViT checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InvalidInputError, OutputError, WeightsError
from ..io.atomic import atomic_write_bytes
from .checkpoint import sha256_of
from .registry import cache_dir

logger = logging.getLogger(__name__)

MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "tiny")
#: SHA-256 of the official checkpoints (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth)
SAM_SHA256 = {
    "vit_b": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    "vit_l": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    "vit_h": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
}
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
EMBED_DIM = 256
PATCH = 16
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
_CACHE_TAG = b"toothmcl-softooth-sam-embedding-v1"


class TinySAMEncoder(nn.Module):
    """Random-weight stand-in for SAM's image encoder, for tests and quick benchmarks.

    Input ``(B, 3, img_size, img_size)`` float32 normalised as SAM; output
    ``(B, 256, img_size / 16, img_size / 16)``. Weights drawn from ``seed``, so they are the
    same in every process.
    """

    def __init__(self, img_size: int = 256, seed: int = 0):
        super().__init__()
        if img_size % PATCH:
            raise ConfigError(f"tiny encoder img_size must be a multiple of {PATCH} (got {img_size})")
        self.img_size = int(img_size)
        self.net = nn.Sequential(nn.Conv2d(3, 32, 4, stride=4), nn.GELU(), nn.Conv2d(32, EMBED_DIM, 4, stride=4))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def sample_embedding(embedding: torch.Tensor, face_pixel_yx: torch.Tensor, image_hw: tuple[int, int],
                     align_corners: bool = True) -> torch.Tensor:
    """Bilinear samples of an image embedding at face pixels (Eq. 3).

    Args:
        embedding: (B, C, H', W') float, covering the whole (H, W) image.
        face_pixel_yx: (B, M, 2) ``(row, col)`` in image pixels, pixel centres at integers.
        image_hw: (H, W) of the rendered image.
        align_corners: True = Eq. 3 (see the module docstring), False = patch geometry.

    Returns:
        (B, M, C), same dtype as ``embedding``; differentiable in ``embedding``.
    """
    h, w = image_hw
    yx = face_pixel_yx.to(embedding.dtype)
    if align_corners:
        gy, gx = 2.0 * yx[..., 0] / (h - 1) - 1.0, 2.0 * yx[..., 1] / (w - 1) - 1.0
    else:
        gy, gx = (2.0 * yx[..., 0] + 1.0) / h - 1.0, (2.0 * yx[..., 1] + 1.0) / w - 1.0
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(2)  # (B, M, 1, 2), x first
    out = torch.nn.functional.grid_sample(embedding, grid, mode="bilinear", padding_mode="border",
                                          align_corners=align_corners)
    return out[..., 0].transpose(1, 2)


def _read_state_dict(path: Path, expected_sha256: str, what: str) -> tuple[dict, str]:
    """A state dict from a checked file, loaded without unpickling code."""
    if not path.is_file():
        raise WeightsError(f"SAM checkpoint {path} not found; download it from {SAM_URL} or check the path")
    digest = sha256_of(path)
    if digest != expected_sha256.lower():
        raise WeightsError(f"SHA-256 of {path.name} is {digest} but {what} is {expected_sha256}; the file "
                           "is corrupt or not that checkpoint: download it again, or pass sha256= for "
                           "a checkpoint you trust")
    try:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError, SafetensorError...
        raise WeightsError(f"cannot read {path.name} as a PyTorch state dict ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); download it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path.name} is not a plain state dict of tensors; expected a SAM checkpoint")
    return state, digest


def _tensor_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_image_encoder(model_type: str = "vit_b", checkpoint_path=None, sha256: str | None = None,
                        allow_random_init: bool = False, tiny_img_size: int = 256):
    """The frozen image encoder and the identity of its weights.

    Returns:
        (encoder ``nn.Module`` with an ``img_size`` attribute, in eval mode and frozen;
        weights id: the checkpoint's SHA-256, the tiny encoder's tensor digest, or None for a
        randomly initialised ViT).

    Raises:
        ConfigError: unknown model type. WeightsError: missing or unreadable checkpoint,
            checksum mismatch, or tensors that do not fit the architecture.
    """
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type must be one of {MODEL_TYPES} (got {model_type!r})")
    state, weights_id = None, None
    if checkpoint_path is not None:
        expected = sha256 or SAM_SHA256.get(model_type)
        if not expected:
            raise WeightsError(f"pass sha256= for a {model_type!r} checkpoint (no published checksum)")
        what = "the given sha256" if sha256 else f"the published SHA-256 of the official SAM {model_type}"
        state, weights_id = _read_state_dict(Path(checkpoint_path), expected, what)
    elif model_type != "tiny" and not allow_random_init:
        raise WeightsError(f"SAM {model_type} needs its checkpoint (checkpoint_path=...); download "
                           f"{SAM_URL}sam_{model_type}_*.pth (see segment-anything's README)")
    if model_type == "tiny":
        encoder = TinySAMEncoder(tiny_img_size)
        target = encoder
    else:
        from segment_anything import sam_model_registry

        target = sam_model_registry[model_type](checkpoint=None)
        encoder = target.image_encoder
    if state is not None:
        try:
            target.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{Path(checkpoint_path).name} does not fit SAM {model_type}: "
                               f"{str(exc).splitlines()[0]}; check model_type") from None
    elif model_type == "tiny":
        weights_id = _tensor_digest(encoder)
    encoder.requires_grad_(False)
    encoder.eval()
    return encoder, weights_id


def build_sam(model_type: str = "vit_b", checkpoint_path=None, sha256: str | None = None,
              tiny_img_size: int = 256):
    """The whole SAM (image encoder, prompt encoder, mask decoder), frozen, for click prompts
    (:mod:`ToothMCLCore.interactive.sam_tools`), and the identity of its weights.

    ``vit_b``/``vit_l``/``vit_h`` need the official checkpoint (read as :func:`build_image_encoder`
    reads it: weights only, SHA-256 checked). ``"tiny"``: :class:`TinySAMEncoder` with a small
    prompt encoder and mask decoder (one transformer layer) drawn from a fixed seed, for tests:
    it runs the whole prompt path, its masks mean nothing.

    Raises:
        ConfigError: unknown model type. WeightsError: a ViT without its checkpoint, or as
            :func:`build_image_encoder`.
    """
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type must be one of {MODEL_TYPES} (got {model_type!r})")
    if model_type == "tiny":
        encoder, _ = build_image_encoder("tiny", tiny_img_size=tiny_img_size)
        side = encoder.img_size // PATCH
        torch.manual_seed(0)
        sam = Sam(encoder, PromptEncoder(embed_dim=EMBED_DIM, image_embedding_size=(side, side),
                                         input_image_size=(encoder.img_size, encoder.img_size), mask_in_chans=16),
                  MaskDecoder(num_multimask_outputs=3, transformer_dim=EMBED_DIM, iou_head_depth=3,
                              iou_head_hidden_dim=64,
                              transformer=TwoWayTransformer(depth=1, embedding_dim=EMBED_DIM, mlp_dim=256, num_heads=8)),
                  pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD))
        weights_id = _tensor_digest(sam)
    else:
        if checkpoint_path is None:
            raise WeightsError(f"SAM {model_type} needs its checkpoint for click prompts; download "
                               f"{SAM_URL}sam_{model_type}_*.pth (see segment-anything's README)")
        from segment_anything import sam_model_registry

        expected = sha256 or SAM_SHA256[model_type]
        what = "the given sha256" if sha256 else f"the published SHA-256 of the official SAM {model_type}"
        state, weights_id = _read_state_dict(Path(checkpoint_path), expected, what)
        sam = sam_model_registry[model_type](checkpoint=None)
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{Path(checkpoint_path).name} does not fit SAM {model_type}: "
                               f"{str(exc).splitlines()[0]}; check model_type") from None
    sam.requires_grad_(False)
    sam.eval()
    return sam, weights_id


class SAMFeatureExtractor:
    """Frozen SAM embeddings of occlusal views and their per-face samples (cached on disk).

    Args:
        checkpoint_path: SAM checkpoint (``.pth`` state dict or ``.safetensors``); None for
            ``"tiny"`` or, with ``allow_random_init``, a randomly initialised ViT (benchmarks).
        model_type: "vit_b", "vit_l", "vit_h" or "tiny".
        sha256: expected SHA-256 of the checkpoint; default the official one for the type.
        device: "auto", "cpu" or "cuda".
        use_cache: read and write embeddings under ``cache_root``.
        cache_root: default ``cache_dir() / "sam"`` (``$TOOTHMCL_CACHE``).
        tiny_img_size: input size of the tiny encoder (embedding ``tiny_img_size / 16``).
        encoder: ``(module, weights id)`` of an encoder already built (then the checkpoint
            arguments are not used).

    Attributes:
        encoder_calls: how many times the encoder ran (cache misses).
    """

    def __init__(self, checkpoint_path=None, model_type: str = "vit_b", sha256: str | None = None,
                 device: str = "auto", *, allow_random_init: bool = False, use_cache: bool = True,
                 cache_root: str | os.PathLike | None = None, tiny_img_size: int = 256, encoder=None):
        from ..inference.device import resolve_device

        self.model_type = model_type
        self.device = resolve_device(device)
        if encoder is not None:  # (module, weights id) already built, e.g. :func:`build_sam`'s
            encoder, self.weights_id = encoder
        else:
            encoder, self.weights_id = build_image_encoder(model_type, checkpoint_path, sha256, allow_random_init,
                                                           tiny_img_size)
        self.encoder = encoder.to(self.device)
        self.img_size = int(encoder.img_size)
        self.use_cache = use_cache
        self._cache_root = Path(cache_root) if cache_root is not None else None
        self._mean = torch.tensor(PIXEL_MEAN, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(PIXEL_STD, device=self.device).view(3, 1, 1)
        self.encoder_calls = 0

    @property
    def embedding_hw(self) -> tuple[int, int]:
        return self.img_size // PATCH, self.img_size // PATCH

    @property
    def cache_root(self) -> Path:
        return self._cache_root if self._cache_root is not None else cache_dir() / "sam"

    def cache_key(self, image: np.ndarray) -> str | None:
        """Hex SHA-256 naming the cache entry of ``image``; None when this encoder is not cached."""
        if not self.use_cache or self.weights_id is None:
            return None
        h = hashlib.sha256(_CACHE_TAG)
        for part in (self.model_type, self.weights_id, "x".join(map(str, image.shape))):
            h.update(part.encode() + b"\0")
        h.update(np.ascontiguousarray(image).tobytes())
        return h.hexdigest()

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S) float32 encoder input from an (H, W, 3) uint8 RGB image, as SamPredictor."""
        from segment_anything.utils.transforms import ResizeLongestSide

        resized = ResizeLongestSide(self.img_size).apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).float()
        x = (x - self._mean) / self._std
        h, w = x.shape[-2:]
        return torch.nn.functional.pad(x, (0, self.img_size - w, 0, self.img_size - h))[None]

    def embed(self, image: np.ndarray) -> np.ndarray:
        """(256, S/16, S/16) float32 embedding of a square (H, W, 3) uint8 RGB image, cached."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.shape[0] != image.shape[1]:
            raise InvalidInputError(f"expected a square (H, H, 3) uint8 RGB image (got {image.shape} "
                                    f"{image.dtype}); render it with render_occlusal")
        key = self.cache_key(image)
        path = self.cache_root / f"{key}.npy" if key else None
        want = (EMBED_DIM, *self.embedding_hw)
        if path is not None and path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.shape == want and cached.dtype == np.float32:
                    return cached
                logger.warning("ignoring cached SAM embedding %s of shape %s", path, cached.shape)
            except (OSError, ValueError) as exc:
                logger.warning("ignoring unreadable cached SAM embedding %s (%s)", path, exc)
        with torch.inference_mode():
            out = self.encoder(self.preprocess(image))[0].float().cpu().numpy()
        self.encoder_calls += 1
        if path is not None:
            buffer = io.BytesIO()
            np.save(buffer, out, allow_pickle=False)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, buffer.getvalue())
            except (OSError, OutputError) as exc:  # a full or read-only cache must not stop segmentation
                logger.warning("cannot cache the SAM embedding at %s (%s)", path, exc)
        return out

    def face_features(self, image: np.ndarray, face_pixel_yx: np.ndarray,
                      align_corners: bool = True) -> np.ndarray:
        """(M, 256) float32 embedding of ``image`` sampled at (M, 2) ``(row, col)`` face pixels."""
        emb = torch.from_numpy(self.embed(image))[None]
        yx = torch.as_tensor(np.asarray(face_pixel_yx, np.float32).reshape(1, -1, 2))
        return sample_embedding(emb, yx, image.shape[:2], align_corners)[0].numpy()

    def __call__(self, view, align_corners: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per-face SAM features of an :class:`~ToothMCLCore.preprocessing.softooth.OcclusalView`.

        Returns:
            ((M, 256) float32 features, (M,) bool visibility, see the occlusal module).
        """
        return self.face_features(view.image, view.face_pixel_yx, align_corners), view.face_visible.copy()
