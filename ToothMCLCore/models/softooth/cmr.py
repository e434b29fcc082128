"""Center-Guided Mask Refinement (SOFTooth Section III-C, Eq. 7-10).

From per-face features F (B, N, C) and face positions (B, N, 3):

1. Attention slots (Eq. 7-8): ``A = sigmoid(Linear(F))`` gives K = 120 maps over the faces;
   normalised over the faces they pool K instance descriptors ``F_inst = A F``.
2. Instance decoder with a bottleneck K -> Q = 30: a learned linear mix over the slot axis
   plus a learned query embedding gives Q queries, refined by transformer decoder layers
   (self-attention among queries, cross-attention to the K slots, MLP). The paper names the
   bottleneck but not its form; the query self-attention lets queries settle which of them
   explains which tooth, as one-to-one matching asks.
3. Three heads per query: a dynamic mask kernel (C_mask weights and a bias) applied to
   per-face mask features gives mask logits (B, Q, N); class logits (B, Q, num_classes);
   an objectness logit (B, Q).
4. Mask-derived centres: the faces whose mask probability exceeds the threshold (0.5) are
   the instance; its centre is their centroid, and the face nearest to it is the refined
   centre face (the paper's "refined instance center"). We weight the centroid by the mask
   probabilities of those faces, so that the centre loss (Eq. 10) has a gradient (the
   paper's plain centroid of a binarised mask has none); an instance with no face above the
   threshold falls back to the probability-weighted centroid of all faces.
5. Class-consistent pseudo-masks (Eq. 9): :func:`pseudo_masks` gives each instance the
   ground-truth mask of the label found at its centre face (empty when that label is the
   gingiva, 0: the gingiva is no instance). The loss module applies Eq. 9.

Class logits are read with a sigmoid (the paper's S_cls = sigma(L)); channel 0 is "no tooth"
and channels 1..16 follow the 17-class IOS scheme of ``ToothMCLCore.fdi`` (``ios_upper`` /
``ios_lower``), so a class index maps to an FDI number with ``fdi.class_index_to_fdi``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mask_centres(mask_logits: torch.Tensor, positions: torch.Tensor, threshold: float = 0.5):
    """Centres of instance masks (item 4 of the module docstring).

    Args:
        mask_logits: (B, Q, N) float.
        positions: (B, N, 3) float face centres.
        threshold: probability above which a face belongs to the instance.

    Returns:
        centres (B, Q, 3) float (differentiable w.r.t. the logits), and centre faces (B, Q)
        int64, the index of the face nearest to each centre.
    """
    prob = torch.sigmoid(mask_logits)
    active = (prob > threshold).to(prob.dtype)
    weights = prob * active
    empty = weights.sum(-1, keepdim=True) <= 0
    weights = torch.where(empty, prob, weights)
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    centres = weights @ positions                                          # (B, Q, 3)
    with torch.no_grad():
        centre_faces = torch.cdist(centres.float(), positions.float()).argmin(dim=-1)
    return centres, centre_faces


def pseudo_masks(centre_faces: torch.Tensor, face_labels: torch.Tensor) -> torch.Tensor:
    """Class-consistent pseudo-masks M_cls (Eq. 9), (B, Q, N) float in {0, 1}.

    Args:
        centre_faces: (B, Q) int64 index of each instance's centre face.
        face_labels: (B, N) int64 ground-truth class index per face (0 gingiva).
    """
    centre_label = torch.gather(face_labels, 1, centre_faces)                  # (B, Q)
    same = face_labels[:, None, :] == centre_label[:, :, None]
    return (same & (centre_label[:, :, None] > 0)).to(torch.float32)


class CenterGuidedMaskRefinement(nn.Module):
    """Slots -> queries -> dynamic mask kernels, classes, objectness and mask centres.

    Args:
        feature_channels: C, width of the per-face features (paper: 128).
        num_classes: class channels (17: "no tooth" + 16 teeth of the jaw).
        num_slots: K attention slots (paper: 120).
        num_queries: Q instance queries (paper: 30).
        decoder_layers: transformer decoder layers refining the queries.
        num_heads: attention heads of the decoder.
        mask_channels: width of the mask features and kernels.
        mask_threshold: probability that binarises masks (paper: 0.5).

    ``forward(features (B, N, C), positions (B, N, 3))`` returns a dict with ``mask_logits``
    (B, Q, N), ``class_logits`` (B, Q, num_classes), ``objectness`` (B, Q) logits,
    ``centres`` (B, Q, 3) and ``centre_faces`` (B, Q) int64.
    """

    def __init__(self, feature_channels: int = 128, num_classes: int = 17, num_slots: int = 120,
                 num_queries: int = 30, decoder_layers: int = 2, num_heads: int = 8, mask_channels: int = 128,
                 mask_threshold: float = 0.5):
        super().__init__()
        c = feature_channels
        self.num_queries, self.mask_threshold = num_queries, mask_threshold
        self.slots = nn.Linear(c, num_slots)                                 # Eq. 7 (shared 1x1 conv)
        self.bottleneck = nn.Linear(num_slots, num_queries)                  # K -> Q over the slot axis
        self.query_embed = nn.Parameter(torch.randn(num_queries, c) * 0.02)
        self.decoder = nn.ModuleList(
            nn.TransformerDecoderLayer(c, num_heads, dim_feedforward=2 * c, dropout=0.0, batch_first=True,
                                       norm_first=True)
            for _ in range(decoder_layers)
        )
        self.query_norm = nn.LayerNorm(c)
        self.kernel_head = nn.Sequential(nn.Linear(c, c), nn.LeakyReLU(0.2), nn.Linear(c, mask_channels + 1))
        self.class_head = nn.Linear(c, num_classes)
        self.objectness_head = nn.Linear(c, 1)
        self.mask_features = nn.Sequential(
            nn.Linear(c, c), nn.LayerNorm(c), nn.LeakyReLU(0.2), nn.Linear(c, mask_channels)
        )
        # rare-positive prior of sigmoid classifiers (RetinaNet): start at p = 0.01
        nn.init.constant_(self.class_head.bias, -math.log(99.0))

    def forward(self, features: torch.Tensor, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        attn = torch.sigmoid(self.slots(features)).transpose(1, 2)            # (B, K, N)
        pooled = (attn / attn.sum(-1, keepdim=True).clamp_min(1e-6)) @ features  # (B, K, C)  Eq. 8
        queries = self.bottleneck(pooled.transpose(1, 2)).transpose(1, 2) + self.query_embed  # (B, Q, C)
        for layer in self.decoder:
            queries = layer(queries, pooled)
        queries = self.query_norm(queries)
        kernels = self.kernel_head(queries)                                   # (B, Q, C_mask + 1)
        mask_feats = self.mask_features(features)                             # (B, N, C_mask)
        mask_logits = kernels[..., :-1] @ mask_feats.transpose(1, 2) + kernels[..., -1:]
        centres, centre_faces = mask_centres(mask_logits, positions, self.mask_threshold)
        return {
            "mask_logits": mask_logits,
            "class_logits": self.class_head(queries),
            "objectness": self.objectness_head(queries).squeeze(-1),
            "centres": centres,
            "centre_faces": centre_faces,
        }
