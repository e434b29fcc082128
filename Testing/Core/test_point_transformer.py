"""The Point Transformer in plain PyTorch: shapes, exact neighbours, a reusable encoder."""

from __future__ import annotations

import pytest
import torch

from ToothMCLCore.models import build_model
from ToothMCLCore.models.point_transformer import PointTransformerEncoder, knn

SMALL = {"planes": [16, 32, 32, 32, 32], "blocks": [1, 1, 1, 1, 1], "nsamples": [8, 8, 8, 8, 8]}


@pytest.mark.parametrize("k", [1, 5])
def test_knn_gives_the_true_nearest_neighbours_on_cpu_and_in_chunks(monkeypatch, k):
    """The CPU's k-d tree and the GPU's chunked search (run here on CPU tensors) both return the
    exact nearest neighbours, computed by brute force in float64; k is clipped to the support."""
    import ToothMCLCore.models.point_transformer as pt

    monkeypatch.setattr(pt, "_KNN_CHUNK", 37)
    g = torch.Generator().manual_seed(0)
    q, s = torch.rand(2, 100, 3, generator=g), torch.rand(2, 80, 3, generator=g)
    expected = torch.cdist(q.double(), s.double()).topk(k, largest=False).indices
    for idx in (knn(q, s, k), pt._knn_brute(q, s, k)):
        assert idx.shape == (2, 100, k) and idx.dtype == torch.int64
        assert torch.equal(torch.sort(idx, -1).values, torch.sort(expected, -1).values)
    assert knn(q, s[:, :3], 5).shape == (2, 100, 3)


@pytest.mark.parametrize("n,classes", [(512, 17), (1000, 5)])
def test_segmentation_output_has_one_row_of_logits_per_point(n, classes):
    """(B, N, 3) points and (B, N, 6) features give (B, N, classes) logits with gradients."""
    net = build_model("point_transformer", {**SMALL, "num_classes": classes})
    p, f = torch.rand(2, n, 3), torch.rand(2, n, 6)
    out = net(p, f)
    assert out.shape == (2, n, classes)
    out.mean().backward()
    assert all(prm.grad is not None for prm in net.parameters() if prm.requires_grad)


def test_encoder_is_usable_on_its_own():
    """The encoder alone gives five stages of points and features, 4x fewer points per stage."""
    enc = PointTransformerEncoder(6, SMALL["planes"], SMALL["blocks"], nsamples=SMALL["nsamples"])
    out = enc(torch.rand(1, 1024, 3), torch.rand(1, 1024, 6))
    assert [p.shape[1] for p in out.points] == [1024, 256, 64, 16, 4]
    assert [f.shape[-1] for f in out.features] == SMALL["planes"]


def test_default_configuration_is_the_authors():
    """Defaults: planes 32..512, blocks (2,3,4,6,3), strides (1,4,4,4,4), k (36,24,...)."""
    net = build_model("point_transformer", {})
    enc = net.encoder
    assert enc.planes == (32, 64, 128, 256, 512) and enc.nsamples == (36, 24, 24, 24, 24)
    assert [len(s) for s in enc.stages] == [2, 3, 4, 6, 3]
    assert [d.stride for d in enc.downs] == [1, 4, 4, 4, 4]
