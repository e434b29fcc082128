"""The ToothMCL pretraining network, its retrieval check, and the encoders it hands on.

:class:`PretrainModel` holds

- the CBCT encoder: the ``swinViT`` of a MONAI ``SwinUNETR`` built by
  :func:`ToothMCLCore.models.networks.build_swinunetr` from ``cbct_arch``, so its state dict
  loads as is into ``SwinUNETR(**cbct_arch).swinViT`` for fine-tuning;
- the IOS encoder: :class:`~ToothMCLCore.models.point_transformer.PointTransformerEncoder` with
  the encoder arguments of ``ios_arch`` (the arguments of ``build_point_transformer``), so it
  loads into ``PointTransformerSeg(**ios_arch).encoder``. One encoder serves both jaws, each in
  its canonical frame (:mod:`ToothMCLCore.preprocessing.ios`), as fine-tuning and inference see
  them; the authors' released code has one encoder per jaw, our IOS model serves both jaws;
- projection heads to the shared dimension ``h`` (``hidden_dim``): a linear map per modality
  as in the released code (``projection_hidden > 0`` inserts a hidden layer with GELU);
- :class:`training.losses.ToothMCLLoss` (Eq. 4-9) with its learnable scales and biases; with
  ``negatives="batch"`` a scan's tokens also take the patches of the batch's other scans (of
  every rank under DDP) as negatives.

Tokens are the positions of Swin stage ``cbct_stage`` (``hidden_states_out[stage]``, stride
``2 * 2**stage`` voxels; the authors use stage 4) and patches the points of Point Transformer
stage ``ios_stage`` (the authors: the last). Which token and patch match is decided per step
from the geometry (:mod:`ToothMCLCore.preprocessing.correspondence`): the encoder's farthest
point sampling differs from step to step, so the z matrices are built inside ``forward`` from
the patch centres it returns, mapped back to CBCT RAS through the augmentation and the
registration (each batch item carries that 4 x 4 map).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ToothMCLCore.config import ModelCard
from ToothMCLCore.errors import ConfigError, WeightsError
from ToothMCLCore.models.point_transformer import PointTransformerEncoder
from ToothMCLCore.preprocessing.correspondence import (
    CorrespondenceConfig,
    build_correspondence,
    patch_labels,
    swin_token_grid,
)
from ToothMCLCore.types import Geometry

from .losses import ToothMCLLoss, ToothMCLLossOutput

logger = logging.getLogger(__name__)

ARCHITECTURE = "toothmcl_pretrain"
#: keys of ``build_point_transformer`` that shape its encoder
IOS_ENCODER_KEYS = ("in_channels", "planes", "blocks", "strides", "nsamples", "share_planes")
#: keys of ``build_swinunetr`` that shape its swinViT
CBCT_ENCODER_KEYS = ("in_channels", "feature_size", "depths", "num_heads", "use_v2")


def _head(c_in: int, h: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(c_in, h)
    return nn.Sequential(nn.Linear(c_in, hidden), nn.GELU(), nn.Linear(hidden, h))


@dataclass
class PretrainOutput:
    """A forward pass: the losses and what the retrieval check needs.

    Attributes:
        loss: :class:`~training.losses.ToothMCLLossOutput` (total = Eq. 9).
        cbct: (B, Nc, h) projected token features. ios: (B, Ni, h) patch features of both jaws,
            zero-padded to the longest item.
        z_cross, mask_cross: (B, Nc, Ni) bool cross-modal positives and pairs in the loss.
    """

    loss: ToothMCLLossOutput
    cbct: torch.Tensor
    ios: torch.Tensor
    z_cross: torch.Tensor
    mask_cross: torch.Tensor


class PretrainModel(nn.Module):
    """Both encoders, both projections and the loss; ``forward(batch)`` returns :class:`PretrainOutput`.

    Args: see :func:`build_pretrain_model` (the model card's ``arch_args``).
    """

    def __init__(self, cbct_arch: dict, ios_arch: dict, cbct_stage: int = 4, ios_stage: int = 4,
                 hidden_dim: int = 512, projection_hidden: int = 0, alpha: float = 0.5, init_scale: float = 10.0,
                 init_bias: float = 10.0, reduction: str = "mean", negatives: str = "batch",
                 correspondence: dict | None = None, init_bias_local: float | None = 0.0):
        super().__init__()
        from ToothMCLCore.models.networks import build_swinunetr

        self.cbct_arch, self.ios_arch = dict(cbct_arch), dict(ios_arch)
        self.cbct_stage, self.ios_stage = int(cbct_stage), int(ios_stage)
        self.cbct_encoder = build_swinunetr(**self.cbct_arch).swinViT
        enc_args = {k: v for k, v in self.ios_arch.items() if k in IOS_ENCODER_KEYS}
        self.ios_encoder = PointTransformerEncoder(**{k: tuple(v) if isinstance(v, list) else v
                                                      for k, v in enc_args.items()})
        n_ios = len(self.ios_encoder.planes)
        if not 0 <= self.cbct_stage <= 4 or not 0 <= self.ios_stage < n_ios:
            raise ConfigError(f"cbct_stage must be 0..4 and ios_stage 0..{n_ios - 1} "
                              f"(got {cbct_stage}, {ios_stage})")
        c_cbct = int(self.cbct_arch.get("feature_size", 48)) * 2 ** self.cbct_stage
        c_ios = self.ios_encoder.planes[self.ios_stage]
        self.cbct_projection = _head(c_cbct, hidden_dim, projection_hidden)
        self.ios_projection = _head(c_ios, hidden_dim, projection_hidden)
        self.criterion = ToothMCLLoss(alpha=alpha, init_scale=init_scale, init_bias=init_bias,
                                      init_bias_local=init_bias_local, reduction=reduction,
                                      negatives=negatives)
        self.correspondence = CorrespondenceConfig.from_dict(dict(correspondence or {}))

    # -- encoders ---------------------------------------------------------------------------
    def encode_cbct(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, K, J, I) -> (B, Nc, h) token features, tokens in C order over the stage's grid."""
        hidden = self.cbct_encoder(image, True)[self.cbct_stage]  # SwinUNETR's normalize=True
        return self.cbct_projection(hidden.flatten(2).transpose(1, 2))

    def encode_ios(self, points: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, n, 3), (M, n, 6) jaws -> ((M, Ni, h) patch features, (M, Ni, 3) patch centres)."""
        out = self.ios_encoder(points, features)
        return self.ios_projection(out.features[self.ios_stage]), out.points[self.ios_stage]

    # -- forward ------------------------------------------------------------------------------
    def forward(self, batch: dict) -> PretrainOutput:
        cbct = self.encode_cbct(batch["cbct"])
        ios_all, centres_all = self.encode_ios(batch["ios_points"], batch["ios_features"])
        items = batch["items"]
        centres_np = centres_all.detach().float().cpu().numpy()
        feats, pairs = [], []
        for b, item in enumerate(items):
            rows = item["jaw_rows"]
            centres_ras = [_apply(item["net_to_ras"][j], centres_np[r]) for j, r in enumerate(rows)]
            labels = None
            if item["point_labels"] is not None:
                labels = np.concatenate([patch_labels(item["points_ras"][j], item["point_labels"][j], c)
                                         for j, c in enumerate(centres_ras)])
            grid = swin_token_grid(Geometry.from_ijk_to_ras(item["crop_ijk_to_ras"]), item["crop_shape"],
                                   stage=self.cbct_stage)
            if grid.n_tokens != cbct.shape[1]:
                raise ConfigError(f"the Swin encoder gave {cbct.shape[1]} tokens for a crop of {item['crop_shape']} "
                                  f"but the correspondence expects {grid.n_tokens}")
            pairs.append(build_correspondence(grid, np.concatenate(centres_ras), item["labels_crop"], labels,
                                              self.correspondence))
            feats.append(torch.cat([ios_all[r] for r in rows]))
        n_max = max(f.shape[0] for f in feats)
        dev = cbct.device
        ios = torch.stack([nn.functional.pad(f, (0, 0, 0, n_max - f.shape[0])) for f in feats])
        n_patches = torch.tensor([f.shape[0] for f in feats], device=dev)
        ios_valid = torch.arange(n_max, device=dev)[None, :] < n_patches[:, None]  # (B, n_max): not padding

        def padded(get, n_rows: int, square: bool):
            out = np.zeros((len(pairs), n_rows, n_max), bool)
            for b, p in enumerate(pairs):
                a = get(p)
                out[b, : a.shape[0], : a.shape[1]] = a
            out = torch.from_numpy(out).to(dev)
            return out if not square else out[:, :n_max, :n_max]

        z_cross = padded(lambda p: p.cross.z, cbct.shape[1], False)
        m_cross = padded(lambda p: p.cross.mask, cbct.shape[1], False)
        z_ios, m_ios = padded(lambda p: p.ios.z, n_max, True), padded(lambda p: p.ios.mask, n_max, True)
        z_cbct = torch.from_numpy(np.stack([p.cbct.z for p in pairs])).to(dev)
        m_cbct = torch.from_numpy(np.stack([p.cbct.mask for p in pairs])).to(dev)
        loss = self.criterion(cbct.float(), ios.float(), z_cross, z_cbct, z_ios, m_cross, m_cbct, m_ios, ios_valid)
        return PretrainOutput(loss, cbct, ios, z_cross, m_cross)


def _apply(matrix, points: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, np.float64)
    return np.asarray(points, np.float64) @ m[:3, :3].T + m[:3, 3]


def build_pretrain_model(**arch_args) -> PretrainModel:
    """:class:`PretrainModel` from a card's ``arch_args`` (unknown arguments are an error)."""
    try:
        return PretrainModel(**arch_args)
    except TypeError as exc:
        raise ConfigError(f"invalid {ARCHITECTURE} arguments: {exc}") from None


# ------------------------------------------------------------------------------------------------
# Retrieval: does an IOS patch find its CBCT token?
# ------------------------------------------------------------------------------------------------

def retrieval_counts(cbct: torch.Tensor, ios: torch.Tensor, z_cross: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Top-k retrieval of the matching token for every IOS patch that has exactly one.

    Args: one item: cbct (Nc, h), ios (Ni, h), z_cross (Nc, Ni) bool.

    Returns:
        ``{"n": patches counted, "top1": hits, "top5": hits, "chance_top1": expected hits of a
        random ranking, ...}`` -- sums, to be divided by ``n`` over a data set.
    """
    one = z_cross.sum(dim=0) == 1
    out = {"n": float(one.sum())}
    if not one.any():
        return {**out, **{f"top{k}": 0.0 for k in ks}, **{f"chance_top{k}": 0.0 for k in ks}}
    sim = nn.functional.normalize(ios[one].float(), dim=-1) @ nn.functional.normalize(cbct.float(), dim=-1).T
    target = z_cross[:, one].float().argmax(dim=0)  # (n,)
    rank = (sim > sim.gather(1, target[:, None])).sum(dim=1)  # 0 = best
    nc = cbct.shape[0]
    for k in ks:
        out[f"top{k}"] = float((rank < k).sum())
        out[f"chance_top{k}"] = out["n"] * min(k, nc) / nc
    return out


# ------------------------------------------------------------------------------------------------
# Loading a pretraining checkpoint, exporting and loading encoders
# ------------------------------------------------------------------------------------------------

def _read_checked(path) -> tuple[dict, ModelCard]:
    from safetensors.torch import load_file

    from ToothMCLCore.models.checkpoint import card_path, read_card, sha256_of

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found; give the .safetensors written by training.pretrain")
    card = read_card(card_path(path))
    digest = sha256_of(path)
    if card.sha256 and card.sha256.lower() != digest:
        raise WeightsError(f"SHA-256 of {path.name} is {digest} but its card says {card.sha256}; the file is corrupt")
    return load_file(str(path)), card


def load_pretrain_model(path) -> tuple[PretrainModel, ModelCard]:
    """The pretraining model of ``path`` (its card must say architecture ``toothmcl_pretrain``)."""
    state, card = _read_checked(path)
    if card.architecture != ARCHITECTURE:
        raise WeightsError(f"{path} is a {card.architecture!r} checkpoint, not a {ARCHITECTURE!r} one")
    model = build_pretrain_model(**card.arch_args)
    model.load_state_dict(state, strict=True)
    return model.eval(), card


def export_encoders(model: PretrainModel, card: ModelCard, out_dir) -> tuple[Path, Path]:
    """Write ``cbct_encoder.safetensors`` and ``ios_encoder.safetensors`` (with cards) to ``out_dir``.

    The CBCT file is the state dict of ``SwinUNETR(**card arch_args).swinViT``, the IOS file that
    of ``PointTransformerSeg(**arch_args).encoder``; their cards name that architecture and its
    arguments, so ``training.finetune`` can check that they fit before loading them.
    """
    from ToothMCLCore.models.checkpoint import save_checkpoint

    out_dir = Path(out_dir)
    common = {"version": card.version, "training_data": card.training_data, "metrics": card.metrics,
              "preprocess": card.preprocess, "class_scheme": ""}
    cbct_card = ModelCard(
        name=f"{card.name}_cbct_encoder", task="cbct_encoder", architecture="swinunetr",
        arch_args=dict(model.cbct_arch),
        intended_use="initialise the encoder of a SwinUNETR for fine-tuning (training.finetune cbct --init pretrained)",
        notes=("State dict of SwinUNETR(**arch_args).swinViT (MONAI): load it with "
               f"model.swinViT.load_state_dict(...). ToothMCL pretraining {card.name}, token stage "
               f"{model.cbct_stage}."), **common)
    ios_card = ModelCard(
        name=f"{card.name}_ios_encoder", task="ios_encoder", architecture="point_transformer",
        arch_args=dict(model.ios_arch),
        intended_use="initialise the encoder of a Point Transformer for fine-tuning (training.finetune ios)",
        notes=("State dict of PointTransformerSeg(**arch_args).encoder: load it with "
               f"model.encoder.load_state_dict(...). ToothMCL pretraining {card.name}, patch stage "
               f"{model.ios_stage}."), **common)
    cbct_path, ios_path = out_dir / "cbct_encoder.safetensors", out_dir / "ios_encoder.safetensors"
    save_checkpoint(model.cbct_encoder, cbct_card, cbct_path)
    save_checkpoint(model.ios_encoder, ios_card, ios_path)
    return cbct_path, ios_path


def load_encoder(path, modality: str) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """The encoder state dict of ``modality`` ("cbct" / "ios") and its card.

    ``path`` is an exported encoder (``cbct_encoder.safetensors``) or a whole pretraining
    checkpoint, from which the encoder's tensors are taken.
    """
    if modality not in ("cbct", "ios"):
        raise ConfigError(f"modality must be 'cbct' or 'ios' (got {modality!r})")
    state, card = _read_checked(path)
    if card.architecture == ARCHITECTURE:
        prefix = f"{modality}_encoder."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        arch = card.arch_args[f"{modality}_arch"]
        card = ModelCard.from_dict({**card.to_dict(), "task": f"{modality}_encoder", "arch_args": dict(arch),
                                    "architecture": "swinunetr" if modality == "cbct" else "point_transformer"})
    elif card.task != f"{modality}_encoder":
        raise WeightsError(f"{path} holds a {card.task!r} model, not a {modality.upper()} encoder; give the "
                           f"{modality}_encoder.safetensors written by training.pretrain")
    if not state:
        raise WeightsError(f"{path} holds no {modality.upper()} encoder tensors")
    return state, card
