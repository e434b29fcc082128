"""SOFTooth's dual-stream geometry encoder (Section III-B1), in plain PyTorch.

Per face a 24-d feature (``ToothMCLCore.preprocessing.softooth.face_features``: centre and
three corners, then face normal and three vertex normals) is split into a 12-d coordinate
stream and a 12-d normal stream. Each stream is aligned by a learnable feature transform
module (FTM: a PointNet-style network predicting a 12 x 12 matrix, identity plus a learned
correction), then passes three stages of k-NN graph blocks with attentive aggregation
(Eq. 1)::

    e_ij = phi([p_i - p_j, p_j]),  alpha_ij = softmax_j(e_ij),  g_i = sum_j alpha_ij psi(p_j).

The outputs of the three stages are concatenated (multi-scale context) and projected per
stream; the two streams are fused channel-wise (concatenated) and re-weighted by point-wise
self-attention (a sigmoid weight per face and channel computed from the face's own fused
feature, as in TSGCNet's feature-wise attention), and an MLP gives the 128-d per-face feature
F_3d.

Choices where the paper is silent:

- **Graph.** One k-NN graph (k = 32) on the face centres (input columns 0..2), shared by both
  streams and all three stages; the face itself is one of its neighbours. A dynamic graph
  rebuilt in feature space at every stage costs an N x N distance matrix per stage and
  sample; the centres give the surface neighbourhood directly.
- **phi and psi.** "Shared 1 x 1 convolutions": phi is a linear layer on the 2C-d edge
  feature followed by LayerNorm and LeakyReLU (with a purely linear phi the p_i part would
  cancel in the softmax over j, leaving no edge attention); psi is linear + LayerNorm +
  LeakyReLU. The attention is channel-wise (one softmax over neighbours per output channel).
- **Memory.** phi's linear part is evaluated as ``W_d p_i + (W_n - W_d) p_j + b`` (W = [W_d |
  W_n]), identical to applying it to the concatenated edge feature but with (N, k, C_out)
  instead of (N, k, 2 C_in) intermediates, and the neighbourhood is processed in chunks of
  faces. Neighbour search is the chunked ``torch.cdist`` + ``topk`` of the Point Transformer.
- **Normalisation.** LayerNorm rather than BatchNorm: batches are small (the paper: 4 scans)
  and every face of a scan is correlated, so batch statistics are poor.
- **Widths.** Stage widths 64, 128, 256 and 512 per stream after fusion of the stages (as
  TSGCNet), an MLP 1024 -> 512 -> 256 -> 128.

Shapes: input ``(B, N, 24)`` float32, output ``(B, N, out_channels)`` float32.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as fn
from torch import nn

from ...errors import InvalidInputError
from ..point_transformer import gather, knn

#: faces per chunk of the attentive aggregation, bounding memory to chunk x k x C floats
_GRAPH_CHUNK = 2048
_SLOPE = 0.2


def _mlp(channels: tuple[int, ...], last_activation: bool = True) -> nn.Sequential:
    """Point-wise MLP (Linear, LayerNorm, LeakyReLU) over the last dimension."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(channels)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(channels) - 2:
            layers += [nn.LayerNorm(b), nn.LeakyReLU(_SLOPE)]
    return nn.Sequential(*layers)


class FeatureTransform(nn.Module):
    """FTM: predicts a (C, C) matrix from the whole scan and applies it to every face.

    Input and output ``(B, N, C)``; the matrix is the identity plus a learned correction.
    """

    def __init__(self, channels: int = 12, hidden: tuple[int, ...] = (64, 128, 256)):
        super().__init__()
        self.channels = channels
        self.local = _mlp((channels, *hidden))
        self.head = nn.Sequential(
            nn.Linear(hidden[-1], hidden[-1] // 2), nn.LeakyReLU(_SLOPE), nn.Linear(hidden[-1] // 2, channels ** 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.local(x).max(dim=1).values                                 # (B, hidden)
        eye = torch.eye(self.channels, device=x.device, dtype=x.dtype)
        transform = eye + self.head(g).view(-1, self.channels, self.channels)
        return torch.bmm(x, transform)


class GraphAttentionBlock(nn.Module):
    """One k-NN graph stage with attentive aggregation (SOFTooth Eq. 1).

    Args:
        in_channels, out_channels: C_in and C_out.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.phi = nn.Linear(2 * in_channels, out_channels)   # on [p_i - p_j, p_j]
        self.phi_act = nn.Sequential(nn.LayerNorm(out_channels), nn.LeakyReLU(_SLOPE))
        self.psi = _mlp((in_channels, out_channels))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """x ``(B, N, C_in)``, idx ``(B, N, k)`` neighbour indices -> ``(B, N, C_out)``."""
        c = x.shape[-1]
        w_d, w_n = self.phi.weight[:, :c], self.phi.weight[:, c:]
        centre = fn.linear(x, w_d, self.phi.bias)          # W_d p_i + b
        neighbour = fn.linear(x, w_n - w_d)                # (W_n - W_d) p_j
        values = self.psi(x)
        out = []
        for start in range(0, x.shape[1], _GRAPH_CHUNK):
            ij = idx[:, start:start + _GRAPH_CHUNK]                               # (B, n, k)
            e = self.phi_act(centre[:, start:start + _GRAPH_CHUNK, None] + gather(neighbour, ij))
            alpha = torch.softmax(e, dim=2)                                       # over neighbours
            out.append((alpha * gather(values, ij)).sum(dim=2))
        return torch.cat(out, dim=1)


class GeometryStream(nn.Module):
    """FTM + three graph stages + projection of the concatenated stage outputs."""

    def __init__(self, in_channels: int, stage_channels: tuple[int, ...], out_channels: int,
                 ftm_channels: tuple[int, ...]):
        super().__init__()
        self.ftm = FeatureTransform(in_channels, ftm_channels)
        widths = (in_channels, *stage_channels)
        self.stages = nn.ModuleList(GraphAttentionBlock(a, b) for a, b in itertools.pairwise(widths))
        self.project = _mlp((sum(stage_channels), out_channels))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = self.ftm(x)
        outs = []
        for stage in self.stages:
            x = stage(x, idx)
            outs.append(x)
        return self.project(torch.cat(outs, dim=-1))


class DualStreamEncoder(nn.Module):
    """Coordinate and normal streams, channel-wise fusion, point-wise self-attention.

    Args:
        in_channels: per-face input size (24: 12 coordinate + 12 normal values).
        k: neighbours of the face-centre graph (paper: 32).
        stage_channels: widths of the three graph stages of each stream.
        stream_channels: width of each stream after its stages are concatenated.
        head_channels: hidden widths of the MLP after fusion.
        out_channels: per-face feature size (paper: 128).
        ftm_channels: hidden widths of the feature transform modules.

    Input ``(B, N, in_channels)``; output ``(B, N, out_channels)``.
    """

    def __init__(self, in_channels: int = 24, k: int = 32, stage_channels: tuple[int, ...] = (64, 128, 256),
                 stream_channels: int = 512, head_channels: tuple[int, ...] = (512, 256),
                 out_channels: int = 128, ftm_channels: tuple[int, ...] = (64, 128, 256)):
        super().__init__()
        if in_channels % 2:
            raise InvalidInputError(f"in_channels must be even: coordinate and normal halves (got {in_channels})")
        self.k, self.half = k, in_channels // 2
        self.out_channels = out_channels
        self.coord = GeometryStream(self.half, tuple(stage_channels), stream_channels, tuple(ftm_channels))
        self.normal = GeometryStream(self.half, tuple(stage_channels), stream_channels, tuple(ftm_channels))
        self.attention = nn.Linear(2 * stream_channels, 2 * stream_channels)
        self.head = nn.Sequential(_mlp((2 * stream_channels, *head_channels)), nn.Linear(head_channels[-1], out_channels),
                                  nn.LayerNorm(out_channels))

    def forward(self, face_features: torch.Tensor) -> torch.Tensor:
        if face_features.dim() != 3 or face_features.shape[-1] != 2 * self.half:
            raise InvalidInputError(
                f"face features must be (B, N, {2 * self.half}) (got {tuple(face_features.shape)}); "
                "build them with ToothMCLCore.preprocessing.softooth.face_features"
            )
        idx = knn(face_features[..., :3], face_features[..., :3], self.k)    # (B, N, k)
        coord = self.coord(face_features[..., :self.half], idx)
        normal = self.normal(face_features[..., self.half:], idx)
        fused = torch.cat([coord, normal], dim=-1)                           # channel-wise fusion
        fused = fused * torch.sigmoid(self.attention(fused))                 # point-wise attention
        return self.head(fused)
