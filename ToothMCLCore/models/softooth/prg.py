"""Point-wise Residual Gating (SOFTooth Section III-B2, Eq. 4-6).

Per-face SAM embeddings e_p of the occlusal view (sampled at each face's pixel, Eq. 2-3, by
the rendering side; the SAM encoder is frozen and has no weights here) are projected to the
3D feature width and injected through a gated residual::

    M_p    = A({w_kp})                                  (Eq. 4)
    F_2d   = tau * g([F_3d || e_p || M_p]) (.) e_3d     (Eq. 5)
    F_fused = F_3d + F_2d                               (Eq. 6)

with e_3d = proj(e_p), g a two-layer point-wise network ending in a sigmoid (one gate per
face), and w_kp centre-guided Gaussian weights of the predicted instance centres.

Choices where the paper is silent:

- **Hidden faces.** The paper maps every face to an occlusal-view pixel and says nothing about
  faces hidden from that view (undercuts, lingual walls under a cusp), which would sample the
  embedding of whatever surface covers them. Faces marked not visible get no SAM contribution:
  their e_p is zeroed before the gate and their F_2d is zero, so F_fused = F_3d there.
- **Gaussian weights.** w_kp = s_k exp(-|x_p - c_k|^2 / (2 sigma^2)) with x_p, c_k the face and
  instance-centre positions in the occlusal plane (the first two canonical coordinates: under
  an orthographic occlusal view the pixel distance is this distance times the pixel size) and
  s_k the instance's objectness, so that empty queries do not highlight anything. sigma
  defaults to 0.1 input units (5 mm at the 50 mm coordinate scale, about half a molar).
- **Aggregation A.** The maximum over instances: "faces spatially close to *any* predicted
  instance center".
- **Normalisation.** SAM embeddings have their own scale; e_p passes a LayerNorm before it
  enters the gate and the projection.
- **tau and the gate's start.** tau is a fixed scalar (default 1.0). The gate's last bias
  starts at -2 (gate about 0.12), so switching PRG on after the warm-up (paper: epoch 30)
  perturbs the trained features gently.

Shapes: features ``(B, N, C)``, SAM features ``(B, N, C_sam)``, visibility ``(B, N)`` bool,
face positions ``(B, N, D)``, centres ``(B, Q, D)``, centre weights ``(B, Q)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InvalidInputError


def guidance_weights(face_positions: torch.Tensor, centre_positions: torch.Tensor, sigma: float,
                     centre_weights: torch.Tensor | None = None) -> torch.Tensor:
    """M_p of Eq. 4: the largest Gaussian weight of any instance centre at each face.

    Args:
        face_positions: (B, N, D) float.
        centre_positions: (B, Q, D) float.
        sigma: Gaussian width, in the units of the positions.
        centre_weights: optional (B, Q) float in [0, 1] scaling each instance's map.

    Returns:
        (B, N) float in [0, 1] (0 when Q = 0).
    """
    b, n = face_positions.shape[:2]
    if centre_positions.shape[1] == 0:
        return face_positions.new_zeros(b, n)
    d2 = torch.cdist(face_positions.float(), centre_positions.float()).square()        # (B, N, Q)
    w = torch.exp(-d2 / (2.0 * sigma ** 2))
    if centre_weights is not None:
        w = w * centre_weights[:, None, :].float()
    return w.max(dim=-1).values.to(face_positions.dtype)


class PointwiseResidualGating(nn.Module):
    """Gated residual injection of per-face SAM features into per-face 3D features.

    Args:
        feature_channels: C, width of F_3d (paper: 128).
        sam_channels: C_sam, width of the SAM embedding (paper: 256).
        hidden_channels: hidden width of the gate and of the projection.
        tau: scale of the injection (0 switches it off).
        sigma: width of the centre-guided Gaussian weights.

    ``forward`` returns ``(F_fused (B, N, C), gate (B, N), guidance M_p (B, N))``.
    """

    def __init__(self, feature_channels: int = 128, sam_channels: int = 256, hidden_channels: int = 128,
                 tau: float = 1.0, sigma: float = 0.1):
        super().__init__()
        self.tau, self.sigma = float(tau), float(sigma)
        self.sam_channels = sam_channels
        self.sam_norm = nn.LayerNorm(sam_channels)
        self.project = nn.Sequential(
            nn.Linear(sam_channels, hidden_channels), nn.LayerNorm(hidden_channels), nn.LeakyReLU(0.2),
            nn.Linear(hidden_channels, feature_channels),
        )
        self.gate = nn.Sequential(
            nn.Linear(feature_channels + sam_channels + 1, hidden_channels), nn.LeakyReLU(0.2),
            nn.Linear(hidden_channels, 1),
        )
        nn.init.constant_(self.gate[-1].bias, -2.0)

    def forward(self, features: torch.Tensor, sam_features: torch.Tensor, visible: torch.Tensor | None,
                face_positions: torch.Tensor, centre_positions: torch.Tensor,
                centre_weights: torch.Tensor | None = None):
        b, n, _ = features.shape
        if sam_features.shape[:2] != (b, n) or sam_features.shape[-1] != self.sam_channels:
            raise InvalidInputError(
                f"SAM features must be (B, N, {self.sam_channels}) = ({b}, {n}, {self.sam_channels}) "
                f"(got {tuple(sam_features.shape)}); sample the embedding at every face"
            )
        if visible is None:
            visible = torch.ones(b, n, dtype=torch.bool, device=features.device)
        elif visible.shape != (b, n):
            raise InvalidInputError(f"visibility must be (B, N) = ({b}, {n}) (got {tuple(visible.shape)})")
        vis = visible.to(features.dtype).unsqueeze(-1)                             # (B, N, 1)
        e_p = self.sam_norm(sam_features.to(features.dtype)) * vis
        m_p = guidance_weights(face_positions, centre_positions, self.sigma, centre_weights)
        gate = torch.sigmoid(self.gate(torch.cat([features, e_p, m_p.unsqueeze(-1)], dim=-1)))  # (B, N, 1)
        injected = self.tau * gate * self.project(e_p) * vis
        return features + injected, gate.squeeze(-1), m_p
