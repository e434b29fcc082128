"""SOFTooth network: encoder, PRG, CMR, the whole model, and a one-scan overfit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ToothMCLCore.errors import ConfigError, InvalidInputError
from ToothMCLCore.models import build_model
from ToothMCLCore.models.softooth import SOFToothLoss, build_softooth
from ToothMCLCore.models.softooth.cmr import mask_centres, pseudo_masks
from ToothMCLCore.models.softooth.encoder import GraphAttentionBlock
from ToothMCLCore.models.softooth.prg import PointwiseResidualGating, guidance_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


def _scan(b=2, n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 24, generator=g)
    x[..., 12:] = torch.nn.functional.normalize(x[..., 12:].view(b, n, 4, 3), dim=-1).view(b, n, 12)
    return x


def test_graph_block_equals_eq1_on_concatenated_edges(monkeypatch):
    """The memory-saving evaluation equals phi([p_i - p_j, p_j]) literally, in any chunking."""
    import ToothMCLCore.models.softooth.encoder as enc

    torch.manual_seed(0)
    block = GraphAttentionBlock(5, 7)
    x = torch.randn(2, 40, 5)
    idx = torch.randint(0, 40, (2, 40, 6))
    batch = torch.arange(2)[:, None, None]
    pj = x[batch, idx]
    edge = torch.cat([x[:, :, None] - pj, pj], dim=-1)
    alpha = torch.softmax(block.phi_act(block.phi(edge)), dim=2)
    expected = (alpha * block.psi(pj)).sum(2)
    monkeypatch.setattr(enc, "_GRAPH_CHUNK", 9)
    torch.testing.assert_close(block(x, idx), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prg", [False, True])
def test_tiny_model_output_shapes(prg):
    """2 scans x 500 faces give (B, Q, N) masks, (B, Q, 17) classes, (B, Q) objectness, centres."""
    net = build_softooth("tiny", with_prg=prg)
    q = net.num_queries
    out = net(_scan(), torch.randn(2, 500, 16) if prg else None)
    assert out["mask_logits"].shape == (2, q, 500)
    assert out["class_logits"].shape == (2, q, 17)
    assert out["objectness"].shape == (2, q)
    assert out["centres"].shape == (2, q, 3) and out["centre_faces"].shape == (2, q)
    assert out["features"].shape == (2, 500, 32)
    assert ("gate" in out) is prg and ("guidance" in out) is prg


def test_gradients_reach_every_trainable_parameter():
    """With PRG on, the training loss reaches every weight; the SAM features get no gradient."""
    torch.manual_seed(0)
    net = build_softooth("tiny")
    sam = torch.randn(2, 500, 16)
    out = net(_scan(), sam, torch.rand(2, 500) > 0.3)
    labels = torch.randint(0, 17, (2, 500), generator=torch.Generator().manual_seed(1))
    SOFToothLoss()(out, labels)["total"].backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert sam.grad is None


def test_paper_configuration_and_registry():
    """'softooth' is registered; the paper preset has K = 120 slots, Q = 30 queries, k = 32, 128-d."""
    net = build_model("softooth", {})
    assert net.cmr.slots.out_features == 120 and net.num_queries == 30
    assert net.encoder.k == 32 and net.encoder.out_channels == 128
    assert net.prg.sam_channels == 256
    with pytest.raises(ConfigError, match="preset"):
        build_model("softooth", {"preset": "huge"})


def test_prg_switch_requires_sam_features():
    """PRG on without SAM features is an error that says what to pass; off needs none."""
    net = build_softooth("tiny")
    with pytest.raises(InvalidInputError, match="SAM"):
        net(_scan(1, 50))
    net.use_prg = False
    assert net(_scan(1, 50))["mask_logits"].shape[-1] == 50


def _prg_inputs(tau=1.0):
    torch.manual_seed(0)
    prg = PointwiseResidualGating(feature_channels=8, sam_channels=6, hidden_channels=8, tau=tau)
    f = torch.randn(1, 30, 8, requires_grad=True)
    s = torch.randn(1, 30, 6)
    pos = torch.rand(1, 30, 2)
    return prg, f, s, pos, pos[:, :3]


def test_prg_gradients_reach_the_gate_but_not_the_frozen_sam_features():
    """The gate and projection learn; a SAM tensor without grad is neither touched nor changed."""
    prg, f, s, pos, centres = _prg_inputs()
    s_before = s.clone()
    fused, gate, _ = prg(f, s, None, pos, centres)
    fused.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prg.gate.parameters())
    assert all(p.grad.abs().sum() > 0 for p in prg.project.parameters())
    assert f.grad is not None and s.grad is None and torch.equal(s, s_before)
    assert gate.shape == (1, 30) and ((gate > 0) & (gate < 1)).all()


def test_prg_with_tau_zero_or_closed_gate_returns_the_features():
    """tau = 0, or a gate that is shut, leaves F_fused = F_3d exactly."""
    prg, f, s, pos, centres = _prg_inputs(tau=0.0)
    assert torch.equal(prg(f, s, None, pos, centres)[0], f)
    prg, f, s, pos, centres = _prg_inputs()
    with torch.no_grad():
        prg.gate[-1].bias.fill_(-1e4)
    assert torch.equal(prg(f, s, None, pos, centres)[0], f)


def test_prg_hidden_faces_get_no_sam_contribution():
    """Faces hidden in the occlusal view keep their 3D features; visible ones change."""
    prg, f, s, pos, centres = _prg_inputs()
    visible = torch.zeros(1, 30, dtype=torch.bool)
    visible[0, ::2] = True
    fused = prg(f, s, visible, pos, centres)[0]
    assert torch.equal(fused[0, 1::2], f[0, 1::2])
    assert not torch.isclose(fused[0, ::2], f[0, ::2]).all(dim=-1).any()


def test_guidance_weight_is_the_nearest_weighted_gaussian():
    """M_p is 1 on a centre, exp(-1/2) one sigma away, and ignores centres of weight 0."""
    faces = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]]])
    centres = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
    m = guidance_weights(faces, centres, sigma=0.1, centre_weights=torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(m, torch.tensor([[1.0, float(np.exp(-0.5)), 0.0]]))


def test_mask_centres_are_centroids_of_binarised_masks():
    """A mask gives the centroid of its faces and the nearest face; an empty mask falls back."""
    pos = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [4.0, 0, 0], [10.0, 0, 0]]])
    logits = torch.tensor([[[20.0, 20.0, -20.0, -20.0], [-20.0, -20.0, -20.0, -20.0]]])
    centres, faces = mask_centres(logits, pos)
    torch.testing.assert_close(centres[0, 0], torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(centres[0, 1], torch.tensor([4.0, 0, 0]))  # mean of all faces
    assert faces[0, 1] == 2


def test_pseudo_mask_is_the_label_at_the_centre_face():
    """An instance centred on a tooth gets that tooth's whole mask; on the gingiva, none."""
    labels = torch.tensor([[0, 5, 5, 6, 0, 5]])
    m = pseudo_masks(torch.tensor([[2, 4, 3]]), labels)
    torch.testing.assert_close(m[0], torch.tensor([[0, 1, 1, 0, 0, 1.0], [0.0] * 6, [0, 0, 0, 1.0, 0, 0]]))


@pytest.fixture(scope="module")
def phantom_scan():
    """A coarse lower-jaw phantom decimated to about 600 faces, with per-face class indices."""
    from ToothMCLCore import fdi
    from ToothMCLCore.preprocessing.softooth import prepare_softooth_input
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    inp = prepare_softooth_input(make_ios_phantom(3, jaw="lower", resolution_mm=1.5), target_faces=600)
    labels = fdi.fdi_to_class_index(inp.face_labels, "ios_lower")
    return torch.from_numpy(inp.features)[None], torch.from_numpy(labels)[None]


def test_tiny_model_overfits_one_phantom_scan(phantom_scan):
    """60 Adam steps on one scan cut the loss by more than half, masks and classes included."""
    x, labels = phantom_scan
    assert len(labels.unique()) >= 13                              # gingiva and a dozen teeth
    torch.manual_seed(0)
    net, criterion = build_softooth("tiny", with_prg=False), SOFToothLoss()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        loss = criterion(net(x), labels)
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in loss.items()})
    first, last = history[0], history[-5:]
    assert np.mean([h["total"] for h in last]) < 0.5 * first["total"]
    assert np.mean([h["mask"] for h in last]) < 0.7 * first["mask"]
    assert np.mean([h["cls"] for h in last]) < 0.4 * first["cls"]
