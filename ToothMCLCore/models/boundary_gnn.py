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
#: per-triangle shape inputs of a ``face_geometry`` face head: its three edges' convexities and normal
#: cosines (each sorted), its normal's occlusal component, its area (:func:`face_shape`)
FACE_FEATURES = 8


def face_shape(features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor,
               faces: torch.Tensor) -> torch.Tensor:
    """(M, :data:`FACE_FEATURES`) the triangles' own shape, read from the edge inputs.

    Each triangle's edges are looked up among ``edge_index`` (every mesh edge is there both ways).
    The normal's occlusal component is the cross product of two edge vectors, signed as the mean
    of the three vertex normals' (so the mesh's winding, and the mirror image, do not change it).
    Every column is the same for a scan and its mirror image.
    """
    from ..postprocessing.boundary import FEATURES

    count = len(features)
    key = edge_index[0] * count + edge_index[1]
    order = torch.argsort(key)
    sorted_key = key[order]

    def lookup(a, b):
        found = torch.searchsorted(sorted_key, a * count + b).clamp(max=len(sorted_key) - 1)
        return order[found]

    f0, f1, f2 = faces[:, 0], faces[:, 1], faces[:, 2]
    rows = torch.stack([lookup(f0, f1), lookup(f1, f2), lookup(f2, f0)], dim=1)  # (M, 3)
    e = edge_features[rows]  # (M, 3, 6)
    convexity = torch.sort(e[..., 4], dim=1).values
    cosine = torch.sort(e[..., 5], dim=1).values
    vectors = e[..., :3] * e[..., 3:4]
    cross = torch.linalg.cross(vectors[:, 0], -vectors[:, 2], dim=1)
    norm = torch.linalg.vector_norm(cross, dim=1)
    side = torch.where(features[faces, FEATURES.index("normal_occlusal")].mean(1) >= 0, 1.0, -1.0)
    occlusal = side * cross[:, 2].abs() / norm.clamp(min=1e-12)
    return torch.cat([convexity, cosine, occlusal[:, None], (0.5 * norm)[:, None]], dim=1)


class BoundaryGNN(nn.Module):
    """Mean-aggregation message passing with residual updates (module docstring).

    Args:
        n_features: per-vertex inputs F (:data:`ToothMCLCore.postprocessing.boundary.FEATURES`).
        hidden: channels per vertex.
        layers: message-passing rounds (each reaches one ring further).
        face_head: also classify triangles (:meth:`face_logits`).
        face_geometry: the face head reads the mean, the maximum and the minimum of its three
            vertices' states and the triangle's own shape (:func:`face_shape`, normalised by the
            training triangles' mean and spread), instead of the mean of the states alone.
    """

    def __init__(self, n_features: int = 18, hidden: int = 48, layers: int = 3, face_head: bool = False,
                 face_geometry: bool = False):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.embed = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.messages = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden + EDGE_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(layers))
        self.updates = nn.ModuleList(nn.Linear(2 * hidden, hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, 1)
        if face_geometry and not face_head:
            raise ValueError("face_geometry needs face_head=True")
        self.face_geometry = face_geometry
        face_inputs = 3 * hidden + FACE_FEATURES if face_geometry else hidden
        self.face_head = (nn.Sequential(nn.Linear(face_inputs, hidden), nn.ReLU(), nn.Linear(hidden, 1))
                          if face_head else None)
        if face_geometry:
            self.register_buffer("face_mean", torch.zeros(FACE_FEATURES))
            self.register_buffer("face_std", torch.ones(FACE_FEATURES))

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training features' per-column mean and spread (a zero spread counts as 1)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def set_face_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training triangles' :func:`face_shape` mean and spread (``face_geometry`` only)."""
        self.face_mean.copy_(mean)
        self.face_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor) -> torch.Tensor:
        return self.head(self._states(features, edge_index, edge_features)).squeeze(1)

    def face_logits(self, features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor,
                    faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """((M,) triangle logits, (N,) vertex logits); needs ``face_head``."""
        if self.face_head is None:
            raise ValueError("this BoundaryGNN has no face head (face_head=False)")
        h = self._states(features, edge_index, edge_features)
        corners = h[faces]
        if self.face_geometry:
            shape = (face_shape(features, edge_index, edge_features, faces) - self.face_mean) / self.face_std
            inputs = torch.cat([corners.mean(1), corners.amax(1), corners.amin(1), shape], dim=1)
        else:
            inputs = corners.mean(1)
        return self.face_head(inputs).squeeze(1), self.head(h).squeeze(1)

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


class BoundaryBag(nn.Module):
    """Several :class:`BoundaryGNN` of one recipe trained with different seeds; their logits are averaged.

    One refiner's choice of epoch on seven validation jaws is partly luck; the mean of a few
    seeds' refiners is steadier and, on the validation jaws, beat each of them (see
    :mod:`ToothMCLCore.postprocessing.boundary`). Kept in one weights file (``members.<i>.``).
    """

    def __init__(self, members: list[BoundaryGNN]):
        super().__init__()
        if not members:
            raise ValueError("a BoundaryBag needs at least one member")
        if len({(m.face_head is None, m.face_geometry) for m in members}) > 1:
            raise ValueError("the members of a BoundaryBag must share their heads")
        self.members = nn.ModuleList(members)

    @property
    def face_head(self):
        return self.members[0].face_head

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(features, edge_index, edge_features) for m in self.members]).mean(0)

    def face_logits(self, features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor,
                    faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m.face_logits(features, edge_index, edge_features, faces) for m in self.members]
        return torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)
