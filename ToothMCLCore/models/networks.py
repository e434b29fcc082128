"""Builders of the CBCT networks: SwinUNETR (teeth) and a small U-Net (region of interest).

Both come from MONAI; we only choose their arguments. Shapes: input ``(B, 1, D, H, W)`` float32
in [0, 1], output ``(B, C, D, H, W)`` logits, with D, H, W divisible by 32 for SwinUNETR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError


def build_swinunetr(
    in_channels: int = 1,
    out_channels: int = 34,
    feature_size: int = 48,
    depths: tuple[int, ...] = (2, 2, 2, 2),
    num_heads: tuple[int, ...] = (3, 6, 12, 24),
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    dropout_path_rate: float = 0.0,
    use_checkpoint: bool = False,
    use_v2: bool = False,
):
    """MONAI SwinUNETR for 34-channel CBCT tooth segmentation.

    The paper does not state the feature size; 48 is the size of the original SwinUNETR
    (Hatamizadeh et al. 2022) and of the public SwinUNETR self-supervised weights that ToothMCL
    compares against, so it is our default. The demo weights use 12 to train on a CPU.

    Input ``(B, in_channels, D, H, W)``, D/H/W divisible by 32; output ``(B, out_channels, D, H, W)``.
    """
    from ..monai_import import import_monai

    import_monai()  # without the integrations we never use: ~2 s less per run
    from monai.networks.nets import SwinUNETR

    if feature_size % 12:
        raise ConfigError(f"SwinUNETR feature_size must be a multiple of 12 (got {feature_size})")
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
        dropout_path_rate=dropout_path_rate,
        use_checkpoint=use_checkpoint,
        use_v2=use_v2,
        spatial_dims=3,
    )


def build_roi_unet(
    in_channels: int = 1,
    out_channels: int = 2,
    features: tuple[int, ...] = (8, 16, 32, 64, 128, 8),
):
    """Lightweight MONAI BasicUNet that finds the teeth (background / tooth) at coarse spacing.

    The paper crops "with a lightweight segmentation model" without naming it; a 6-level
    BasicUNet with 8..128 channels (~0.5 M parameters) runs on a 1.5 mm grid in well under a
    second on a CPU, which is all a bounding box needs.
    """
    from ..monai_import import import_monai

    import_monai()  # without the integrations we never use: ~2 s less per run
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, features=tuple(features)
    )


def build_point_transformer(in_channels: int = 6, num_classes: int = 17,
                            planes=(32, 64, 128, 256, 512), blocks=(2, 3, 4, 6, 3),
                            strides=(1, 4, 4, 4, 4), nsamples=(36, 24, 24, 24, 24),
                            share_planes: int = 8, decoder_blocks: int = 1):
    """Point Transformer U-Net for IOS (see ``ToothMCLCore.models.point_transformer``)."""
    from .point_transformer import PointTransformerSeg

    return PointTransformerSeg(in_channels, num_classes, tuple(planes), tuple(blocks), tuple(strides),
                               tuple(nsamples), share_planes, decoder_blocks)


def build_softooth(preset: str = "paper", **overrides):
    """SOFTooth IOS instance network (see ``ToothMCLCore.models.softooth``); presets "paper", "tiny"."""
    from .softooth.network import build_softooth as build

    return build(preset, **overrides)


def build_boundary_gnn(n_features: int = 18, hidden: int = 48, layers: int = 3, face_head: bool = False,
                       face_geometry: bool = False, bag: int = 1):
    """Tooth-vs-gingiva boundary refiner on an IOS mesh (see ``ToothMCLCore.models.boundary_gnn``);
    with ``bag`` > 1, that many refiners whose logits are averaged (``BoundaryBag``)."""
    from .boundary_gnn import BoundaryBag, BoundaryGNN

    if int(bag) < 1:
        raise ValueError(f"bag must be at least 1 (got {bag})")
    if int(bag) == 1:
        return BoundaryGNN(n_features, hidden, layers, face_head, face_geometry)
    return BoundaryBag([BoundaryGNN(n_features, hidden, layers, face_head, face_geometry) for _ in range(int(bag))])


ARCHITECTURES: dict[str, Callable[..., Any]] = {
    "swinunetr": build_swinunetr,
    "roi_unet": build_roi_unet,
    "point_transformer": build_point_transformer,
    "softooth": build_softooth,
    "boundary_gnn": build_boundary_gnn,
}


def build_model(architecture: str, arch_args: dict | None = None):
    """Build a network from a model card's ``architecture`` and ``arch_args``."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
        ) from None
    try:
        return builder(**(arch_args or {}))
    except TypeError as exc:
        raise ConfigError(f"invalid arguments for {architecture!r}: {exc}") from None
