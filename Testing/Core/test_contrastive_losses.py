"""Contrastive losses (paper Eq. 4-9) against values worked out by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import ToothMCLLoss, cross_modal_sigmoid_loss, intra_modal_loss


def log_sigmoid(x: float) -> float:
    """log(1 / (1 + exp(-x)))."""
    return -math.log1p(math.exp(-x))


T, B = torch.tensor(2.0), torch.tensor(1.0)  # logit = 2 * similarity - 1

# CBCT c1 = (1, 0), c2 = (0, 1); IOS p1 = (1, 0), p2 = (0.6, 0.8): all unit length.
# dot products: c1.p1 = 1, c1.p2 = 0.6, c2.p1 = 0, c2.p2 = 0.8
# logits t c.p - b: [[1, 0.2], [-1, 0.6]]; z = [[+1, -1], [-1, +1]]
# log sigma(z * logit): [[ls(1), ls(-0.2)], [ls(1), ls(0.6)]]
CBCT = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
IOS = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
Z = torch.tensor([[[True, False], [False, True]]])
# = (0.31326 + 0.79814 + 0.31326 + 0.43749) / 2 = 0.93108
CROSS_2X2 = -(log_sigmoid(1.0) + log_sigmoid(-0.2) + log_sigmoid(1.0) + log_sigmoid(0.6)) / 2


def test_cross_modal_loss_matches_hand_computed_2x2():
    """Eq. 4 on two tokens and two patches: -(1/2) * sum of the four log-sigmoids."""
    loss = cross_modal_sigmoid_loss(CBCT, IOS, Z, T, B)
    assert loss.item() == pytest.approx(CROSS_2X2, abs=1e-6)
    assert CROSS_2X2 == pytest.approx(0.93108, abs=1e-5)


def test_cross_modal_loss_normalises_features_and_accepts_plus_minus_one():
    """Scaling a feature does not change Eq. 4 (normalised latents); z as +-1 equals z as bool."""
    loss = cross_modal_sigmoid_loss(CBCT * torch.tensor([[[3.0], [0.5]]]), IOS * 7.0, Z.float() * 2 - 1, T, B)
    assert loss.item() == pytest.approx(CROSS_2X2, abs=1e-6)


def test_cross_modal_loss_3x2_with_a_masked_row_and_pair():
    """A third, fully masked token leaves the 2x2 value unchanged; masking pair (2, 1) removes ls(1) from the sum."""
    cbct = torch.cat([CBCT, torch.tensor([[[5.0, -1.0]]])], dim=1)       # (1, 3, 2)
    z = torch.cat([Z, torch.tensor([[[True, False]]])], dim=1)           # (1, 3, 2)
    mask = torch.ones(1, 3, 2, dtype=torch.bool)
    mask[0, 2] = False
    assert cross_modal_sigmoid_loss(cbct, IOS, z, T, B, mask).item() == pytest.approx(CROSS_2X2, abs=1e-6)
    mask[0, 1, 0] = False  # c2-p1, whose term was ls(1); both rows still have pairs: |B| = 2
    expected = -(log_sigmoid(1.0) + log_sigmoid(-0.2) + log_sigmoid(0.6)) / 2
    assert cross_modal_sigmoid_loss(cbct, IOS, z, T, B, mask).item() == pytest.approx(expected, abs=1e-6)


def test_cross_modal_loss_averages_scans_and_a_fully_masked_scan_is_zero():
    """Batch of two scans: the second fully masked contributes 0 (mean of 0.93108 and 0)."""
    cbct, ios, z = CBCT.repeat(2, 1, 1), IOS.repeat(2, 1, 1), Z.repeat(2, 1, 1)
    mask = torch.ones(2, 2, 2, dtype=torch.bool)
    mask[1] = False
    assert cross_modal_sigmoid_loss(cbct, ios, z, T, B, mask).item() == pytest.approx(CROSS_2X2 / 2, abs=1e-6)


# Intra-modal, three patches of one scan: p1 = (1, 0), p2 = (1, 1) (cosine 0.70711 with both),
# p3 = (0, 1). Cosines a12 = a23 = 1/sqrt(2), a13 = 0. z: 1-2 similar, 1-3 and 2-3 not.
# A_ij = ls(z (2 a - 1)): A12 = ls(sqrt(2) - 1), A13 = ls(1), A23 = ls(1 - sqrt(2)); symmetric.
# Eq. 8, per column j the max over i != j:
#   j=1: max(A21, A31) = max(ls(0.41421), ls(1)) = ls(1)
#   j=2: max(A12, A32) = max(ls(0.41421), ls(-0.41421)) = ls(0.41421)
#   j=3: max(A13, A23) = max(ls(1), ls(-0.41421)) = ls(1)
# with ls(1) = -0.31326, ls(0.41421) = -0.50734, ls(-0.41421) = -0.92155:
# L = -(ls(1) + ls(0.41421) + ls(1)) / 3 = (0.31326 + 0.50734 + 0.31326) / 3 = 0.37795
FEATURES = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
Z_INTRA = torch.tensor([[[False, True, False], [True, False, False], [False, False, False]]])
R2 = math.sqrt(2.0) - 1.0
INTRA_MAX = -(log_sigmoid(1.0) + log_sigmoid(R2) + log_sigmoid(1.0)) / 3
INTRA_MEAN = -2 * (log_sigmoid(R2) + log_sigmoid(1.0) + log_sigmoid(-R2)) / 6


def test_intra_modal_loss_matches_hand_computed_max_over_i():
    """Eq. 6-8 on three patches: the average over j of the best pair i (diagonal excluded)."""
    loss = intra_modal_loss(FEATURES, Z_INTRA, T, B, reduction="max")
    assert loss.item() == pytest.approx(INTRA_MAX, abs=1e-6)
    assert INTRA_MAX == pytest.approx(0.37795, abs=1e-5)


def test_intra_modal_loss_mean_reduction_is_the_average_of_the_six_pairs():
    """reduction='mean' (released code, the default) averages A over the six off-diagonal pairs: 0.58072."""
    loss = intra_modal_loss(FEATURES, Z_INTRA, T, B)
    assert loss.item() == pytest.approx(INTRA_MEAN, abs=1e-6)
    assert INTRA_MEAN == pytest.approx(0.58072, abs=1e-5)  # (0.50734 + 0.31326 + 0.92155) / 3


def test_intra_modal_loss_masked_pairs_and_patches():
    """Masking pair 3-1 makes column 1's max A21 = ls(0.41421); a patch without pairs drops out."""
    mask = ~torch.eye(3, dtype=torch.bool)[None]
    mask[0, 2, 0] = False  # (i=3, j=1) out of the loss
    expected = -(log_sigmoid(R2) + log_sigmoid(R2) + log_sigmoid(1.0)) / 3
    assert intra_modal_loss(FEATURES, Z_INTRA, T, B, mask, "max").item() == pytest.approx(expected, abs=1e-6)
    only_12 = torch.zeros(1, 3, 3, dtype=torch.bool)
    only_12[0, 0, 1] = only_12[0, 1, 0] = True  # column 3 has no pair: average over 2 columns
    assert intra_modal_loss(FEATURES, Z_INTRA, T, B, only_12, "max").item() == pytest.approx(-log_sigmoid(R2),
                                                                                           abs=1e-6)
    for reduction in ("mean", "max", "max_positive"):
        none = torch.zeros(1, 3, 3, dtype=torch.bool)
        assert intra_modal_loss(FEATURES, Z_INTRA, T, B, none, reduction).item() == 0.0


def test_intra_modal_loss_max_over_positives_keeps_each_patchs_best_positive_pair():
    """reduction='max_positive': only 1-2 is positive, so columns 1 and 2 keep A21 = A12 = ls(0.41421)
    and column 3 (no positive) drops out: L = 0.50734."""
    loss = intra_modal_loss(FEATURES, Z_INTRA, T, B, reduction="max_positive")
    assert loss.item() == pytest.approx(-log_sigmoid(R2), abs=1e-6)
    assert -log_sigmoid(R2) == pytest.approx(0.50734, abs=1e-5)


def _gradient_norms(reduction: str, **init) -> tuple[float, float]:
    """|d L_intra / d features| and |d L_cross / d features| on random features at the start."""
    torch.manual_seed(0)
    loss_fn = ToothMCLLoss(reduction=reduction, **init)
    cbct = torch.randn(1, 64, 32, requires_grad=True)
    ios = torch.randn(1, 48, 32, requires_grad=True)
    z_cross = torch.zeros(1, 64, 48, dtype=torch.bool)
    z_cross[0, torch.arange(48), torch.arange(48)] = True
    groups_c, groups_i = torch.arange(64) % 8, torch.arange(48) % 8
    z_cbct = (groups_c[:, None] == groups_c[None])[None]
    z_ios = (groups_i[:, None] == groups_i[None])[None]
    out = loss_fn(cbct, ios, z_cross, z_cbct, z_ios)
    intra = torch.autograd.grad(out.intra_cbct + out.intra_ios, (cbct, ios), retain_graph=True)
    cross = torch.autograd.grad(loss_fn.alpha * out.cross, (cbct, ios))
    norm = lambda grads: float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
    return norm(intra), norm(cross)


@pytest.mark.parametrize("reduction", ["mean", "max_positive"])
def test_the_intra_modal_term_trains_as_much_as_the_cross_modal_one(reduction):
    """On random features at the start of training the default intra-modal loss (and the max over
    positives) pushes the features about as hard as the cross-modal loss (within 10x)."""
    intra, cross = _gradient_norms(reduction)
    assert 0.1 <= intra / cross <= 10.0, (intra, cross)


def test_eq8_as_printed_with_siglips_bias_gives_the_features_almost_no_gradient():
    """What issue 16 found: Eq. 8's max with b_l = 10 keeps an easy negative per patch, whose gradient is ~0."""
    intra, cross = _gradient_norms("max", init_bias_local=10.0)
    assert intra < 1e-3 * cross, (intra, cross)


def test_tooth_mcl_loss_is_eq9_and_starts_at_siglip_values():
    """Total = intra CBCT + intra IOS + alpha * cross; t starts at 10, b_g at +10 (SigLIP's -10 logit bias),
    b_l at 0 (decision at cosine 0, see training/losses.py), or at b_g with init_bias_local=None."""
    loss_fn = ToothMCLLoss(alpha=0.3)
    assert loss_fn.t_global.item() == pytest.approx(10.0) and loss_fn.t_local.item() == pytest.approx(10.0)
    assert loss_fn.b_global.item() == 10.0 and loss_fn.b_local.item() == 0.0
    assert ToothMCLLoss(init_bias_local=None).b_local.item() == 10.0
    z_cbct = torch.tensor([[[False, True], [True, False]]])
    out = loss_fn(CBCT, IOS, Z, z_cbct, z_cbct)
    assert out.total.item() == pytest.approx((out.intra_cbct + out.intra_ios + 0.3 * out.cross).item(), abs=1e-6)
    # cross at t = 10, b = 10: logits 10 c.p - 10 = [[0, -4], [-10, -2]]
    expected_cross = -(log_sigmoid(0.0) + log_sigmoid(4.0) + log_sigmoid(10.0) + log_sigmoid(-2.0)) / 2
    assert out.cross.item() == pytest.approx(expected_cross, abs=1e-5)


def test_gradients_reach_logit_scales_biases_and_features():
    """One backward pass gives finite, non-zero gradients to t_g, b_g, t_l, b_l and the features."""
    torch.manual_seed(0)
    loss_fn = ToothMCLLoss()
    cbct = torch.randn(2, 5, 8, requires_grad=True)
    ios = torch.randn(2, 4, 8, requires_grad=True)
    z_cross = torch.rand(2, 5, 4) > 0.7
    z_cbct, z_ios = torch.rand(2, 5, 5) > 0.5, torch.rand(2, 4, 4) > 0.5
    mask_cross = torch.ones(2, 5, 4, dtype=torch.bool)
    mask_cross[1, 4] = False  # a padding token of the second scan
    out = loss_fn(cbct, ios, z_cross, z_cbct, z_ios, mask_cross=mask_cross)
    out.total.backward()
    for name, p in loss_fn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().item() > 0, name
    assert torch.isfinite(cbct.grad).all() and cbct.grad.abs().sum() > 0
    assert cbct.grad[1, 4].abs().sum() > 0  # still in the intra-modal loss (its mask is separate)
    assert torch.isfinite(ios.grad).all() and ios.grad.abs().sum() > 0


def test_given_wrong_shapes_or_options_raises():
    """Mismatched z shapes, an unknown reduction or a negative alpha are refused with the shapes named."""
    with pytest.raises(ValueError, match=r"z must have shape \(1, 2, 2\)"):
        cross_modal_sigmoid_loss(CBCT, IOS, Z[:, :1], T, B)
    with pytest.raises(ValueError, match="reduction"):
        intra_modal_loss(FEATURES, Z_INTRA, T, B, reduction="sum")
    with pytest.raises(ValueError, match="alpha"):
        ToothMCLLoss(alpha=-1.0)
