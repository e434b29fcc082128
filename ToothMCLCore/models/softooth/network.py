"""SOFTooth: dual-stream encoder -> (PRG) -> CMR, one network for IOS tooth instances.

``SOFTooth.forward(face_features, sam_features=None, visible=None)``:

- ``face_features`` (B, N, 24) float32, ``preprocessing.softooth.face_features`` of N faces
  per scan (the paper decimates to about 10,000 faces) in the canonical jaw frame (x the
  patient's right, y anterior, z occlusal); columns 0..2 are the face centres.
- ``sam_features`` (B, N, C_sam) float32, the frozen SAM occlusal-view embedding sampled at
  each face's pixel; needed when ``use_prg`` is on.
- ``visible`` (B, N) bool, faces seen in the occlusal view (default: all).

Returns a dict:

- ``mask_logits`` (B, Q, N), ``class_logits`` (B, Q, C), ``objectness`` (B, Q) logits,
- ``centres`` (B, Q, 3) mask-derived centres, ``centre_faces`` (B, Q) int64 (see ``cmr``),
- ``face_centres`` (B, N, 3) and ``features`` (B, N, 128) (fused when PRG ran),
- with PRG only: ``gate`` (B, N) and ``guidance`` (B, N) (M_p of Eq. 4).

PRG needs predicted instance centres (its centre-guided weights, Eq. 4) before the CMR that
predicts them. The paper leaves the order open; we run CMR twice with the same weights: a
first pass on F_3d, without gradients, whose refined centre faces (weighted by objectness) feed
PRG, and the final pass on F_fused. ``use_prg`` can be switched at any time (the paper starts
the SAM path at epoch 30); without PRG the CMR runs once on F_3d.

``SOFTOOTH_PRESETS`` holds the paper's configuration (``"paper"``, the constructor defaults)
and a ``"tiny"`` one for tests and CPU demos; ``build_softooth`` is the registry builder.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError, InvalidInputError
from .cmr import CenterGuidedMaskRefinement
from .encoder import DualStreamEncoder
from .prg import PointwiseResidualGating


class SOFTooth(nn.Module):
    """SOFTooth network (paper defaults).

    Args:
        in_channels: per-face input size (24).
        num_classes: class channels, "no tooth" + 16 teeth (17).
        k: neighbours of the encoder's face graph (32).
        stage_channels, stream_channels, head_channels, ftm_channels: encoder widths
            (see ``encoder.DualStreamEncoder``).
        feature_channels: per-face feature size (128).
        with_prg: build the PRG module (False gives the paper's baseline without SAM).
        sam_channels: SAM embedding width (256).
        prg_hidden: hidden width of PRG's gate and projection.
        tau: PRG injection scale.
        guidance_sigma: width of PRG's centre-guided Gaussian weights (input units).
        guidance_dims: position coordinates used by those weights (2: the occlusal plane).
        num_slots: K attention slots (120).
        num_queries: Q instance queries (30).
        decoder_layers, num_heads: CMR's query decoder.
        mask_channels: width of the dynamic mask kernels.
        mask_threshold: mask binarisation threshold (0.5).
    """

    def __init__(self, in_channels: int = 24, num_classes: int = 17, k: int = 32,
                 stage_channels: tuple[int, ...] = (64, 128, 256), stream_channels: int = 512,
                 head_channels: tuple[int, ...] = (512, 256), ftm_channels: tuple[int, ...] = (64, 128, 256),
                 feature_channels: int = 128, with_prg: bool = True, sam_channels: int = 256,
                 prg_hidden: int = 128, tau: float = 1.0, guidance_sigma: float = 0.1, guidance_dims: int = 2,
                 num_slots: int = 120, num_queries: int = 30, decoder_layers: int = 2, num_heads: int = 8,
                 mask_channels: int = 128, mask_threshold: float = 0.5):
        super().__init__()
        if guidance_dims not in (2, 3):
            raise ConfigError(f"guidance_dims must be 2 (occlusal plane) or 3 (got {guidance_dims})")
        self.num_classes, self.num_queries = num_classes, num_queries
        self.guidance_dims = guidance_dims
        self.encoder = DualStreamEncoder(in_channels, k, tuple(stage_channels), stream_channels,
                                         tuple(head_channels), feature_channels, tuple(ftm_channels))
        self.prg = (PointwiseResidualGating(feature_channels, sam_channels, prg_hidden, tau, guidance_sigma)
                    if with_prg else None)
        #: run PRG in ``forward`` (switch on after the warm-up; requires ``with_prg``)
        self.use_prg = with_prg
        self.cmr = CenterGuidedMaskRefinement(feature_channels, num_classes, num_slots, num_queries,
                                              decoder_layers, num_heads, mask_channels, mask_threshold)

    def forward(self, face_features: torch.Tensor, sam_features: torch.Tensor | None = None,
                visible: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features = self.encoder(face_features)                                # (B, N, C)
        positions = face_features[..., :3]
        extra: dict[str, torch.Tensor] = {}
        if self.use_prg:
            if self.prg is None:
                raise ConfigError("use_prg is on but this SOFTooth was built with with_prg=False")
            if sam_features is None:
                raise InvalidInputError(
                    "PRG is on but no SAM features were given; pass the per-face occlusal-view "
                    "SAM embedding (B, N, C_sam) or set model.use_prg = False"
                )
            with torch.no_grad():
                coarse = self.cmr(features, positions)
                centre_pos = torch.gather(positions, 1, coarse["centre_faces"][..., None].expand(-1, -1, 3))
                weights = torch.sigmoid(coarse["objectness"])
            d = self.guidance_dims
            features, gate, guidance = self.prg(features, sam_features, visible, positions[..., :d],
                                                centre_pos[..., :d], weights)
            extra = {"gate": gate, "guidance": guidance}
        out = self.cmr(features, positions)
        out.update(face_centres=positions, features=features, **extra)
        return out


#: constructor arguments of named configurations (``"paper"`` = the defaults)
SOFTOOTH_PRESETS: dict[str, dict] = {
    "paper": {},
    "tiny": {
        "k": 8, "stage_channels": (16, 16, 32), "stream_channels": 32, "head_channels": (32,),
        "ftm_channels": (16, 32), "feature_channels": 32, "sam_channels": 16, "prg_hidden": 16,
        "num_slots": 32, "num_queries": 20, "decoder_layers": 1, "num_heads": 2, "mask_channels": 32,
    },
}


def build_softooth(preset: str = "paper", **overrides) -> SOFTooth:
    """SOFTooth from a named preset (``SOFTOOTH_PRESETS``) with constructor overrides."""
    try:
        args = dict(SOFTOOTH_PRESETS[preset])
    except KeyError:
        raise ConfigError(f"unknown SOFTooth preset {preset!r}; known: {sorted(SOFTOOTH_PRESETS)}") from None
    args.update(overrides)
    return SOFTooth(**args)
