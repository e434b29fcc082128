"""A small graph network on an intraoral scan's mesh that re-decides tooth or gingiva near the boundary.

Ours, not the papers' (:mod:`ToothMCLCore.postprocessing.boundary` says why and what it gets).
It reads per-vertex features (the segmentation network's tooth probability, the settled labels
around the vertex, the surface's local shape) and, over ``layers`` rounds, the mean message of
its mesh neighbours along each edge (edge direction, length, crease and normal agreement), and
gives one tooth-vs-gingiva logit per vertex. With ``face_head`` it also gives one per triangle,
from the mean of its three vertices' states: the labels are drawn on triangles, and a vertex's
label is the vote of the triangles around it (see
:func:`~ToothMCLCore.postprocessing.boundary.face_vote`).

Message passing is written out in plain PyTorch (``scatter_add_`` of the edge messages): a few
rounds of mean aggregation are a few lines, and a graph library (PyTorch Geometric, DGL) would
be a heavy compiled dependency for them.

Shapes: ``features`` (N, F) float32 raw (the network normalises them with the training set's
mean and spread, stored as buffers with the weights), ``edge_index`` (2, E) int64 directed
source -> target pairs (each mesh edge both ways), ``edge_features`` (E, 6) float32; returns
(N,) float32 logits, positive for tooth. :meth:`BoundaryGNN.face_logits` also takes ``faces``
(M, 3) int64 and returns (M,) triangle logits with the vertex logits.
"""

from __future__ import annotations

import torch
from torch import nn

#: per-edge inputs: unit direction (3), length in mm, convexity (1/mm), cosine between the normals
EDGE_FEATURES = 6


class BoundaryGNN(nn.Module):
    """Mean-aggregation message passing with residual updates (module docstring).

    Args:
        n_features: per-vertex inputs F (:data:`ToothMCLCore.postprocessing.boundary.FEATURES`).
        hidden: channels per vertex.
        layers: message-passing rounds (each reaches one ring further).
        face_head: also classify triangles (:meth:`face_logits`).
    """

    def __init__(self, n_features: int = 18, hidden: int = 48, layers: int = 3, face_head: bool = False):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.embed = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.messages = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden + EDGE_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(layers))
        self.updates = nn.ModuleList(nn.Linear(2 * hidden, hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, 1)
        self.face_head = (nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)) if face_head
                          else None)

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training features' per-column mean and spread (a zero spread counts as 1)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor) -> torch.Tensor:
        return self.head(self._states(features, edge_index, edge_features)).squeeze(1)

    def face_logits(self, features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor,
                    faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """((M,) triangle logits, (N,) vertex logits); needs ``face_head``."""
        if self.face_head is None:
            raise ValueError("this BoundaryGNN has no face head (face_head=False)")
        h = self._states(features, edge_index, edge_features)
        return self.face_head(h[faces].mean(1)).squeeze(1), self.head(h).squeeze(1)

    def _states(self, features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.embed((features - self.feature_mean) / self.feature_std))
        source, target = edge_index[0], edge_index[1]
        degree = torch.bincount(target, minlength=len(h)).clamp(min=1).to(h.dtype)[:, None]
        # scatter_add_ with the index spread over the channels: 9x faster than index_add_ on the CPU
        into = target[:, None].expand(-1, h.shape[1])
        for message, update in zip(self.messages, self.updates):
            m = message(torch.cat([h[source], h[target], edge_features], dim=1))
            mean = torch.zeros_like(h).scatter_add_(0, into, m) / degree
            h = h + torch.relu(update(torch.cat([h, mean], dim=1)))
        return h
