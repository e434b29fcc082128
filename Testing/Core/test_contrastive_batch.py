"""Eq. 4's negatives from the whole mini-batch: other scans, padding, and other DDP ranks (gloo)."""

from __future__ import annotations

import math
import time

import pytest
import torch

from training.losses import ToothMCLLoss, cross_modal_sigmoid_loss
from training.pretrain import PretrainConfig


def log_sigmoid(x: float) -> float:
    """log(1 / (1 + exp(-x)))."""
    return -math.log1p(math.exp(-x))


T, B = torch.tensor(2.0), torch.tensor(1.0)  # logit = 2 * similarity - 1; a negative's term is ls(1 - 2 s)

# Scan 1 (as in test_contrastive_losses): c1 = (1, 0), c2 = (0, 1); p1 = (1, 0), p2 = (0.6, 0.8);
# z = [[+1, -1], [-1, +1]]; own terms ls(1), ls(-0.2), ls(1), ls(0.6); |B_1| = 2.
# Scan 2: token d1 = (0, 1) and a padding token d2; patch q1 = (0, 1) and a padding patch q2 = (1, 0)
# (not zero, so that it would change the value if it counted); z(d1, q1) = +1, d1.q1 = 1: own
# term ls(1); |B_2| = 1 (d2 has no pair).
# Other scans' patches, all negatives:
#   c1.q1 = 0 -> ls(1), c2.q1 = 1 -> ls(-1)           (scan 1's tokens; q2 is padding)
#   d1.p1 = 0 -> ls(1), d1.p2 = 0.8 -> ls(-0.6)      (scan 2's token d1; d2 is padding)
# with ls(1) = -0.31326, ls(-0.2) = -0.79814, ls(0.6) = -0.43749, ls(-1) = -1.31326, ls(-0.6) = -1.03749:
#   scan 1: -(3 ls(1) + ls(-0.2) + ls(0.6) + ls(-1)) / 2 = 3.48867 / 2 = 1.74434
#   scan 2: -(2 ls(1) + ls(-0.6)) / 1 = 1.66401
#   batch: (1.74434 + 1.66401) / 2 = 1.70417
# negatives="scan" (own patches only): scan 1 = 0.93108, scan 2 = 0.31326, mean 0.62217.
CBCT = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
IOS = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [1.0, 0.0]]])
Z = torch.tensor([[[True, False], [False, True]], [[True, False], [False, False]]])
MASK = torch.tensor([[[True, True], [True, True]], [[True, False], [False, False]]])
VALID = torch.tensor([[True, True], [True, False]])
SCAN_1 = -(3 * log_sigmoid(1.0) + log_sigmoid(-0.2) + log_sigmoid(0.6) + log_sigmoid(-1.0)) / 2
SCAN_2 = -(2 * log_sigmoid(1.0) + log_sigmoid(-0.6))
BATCH = (SCAN_1 + SCAN_2) / 2
PER_SCAN = (-(2 * log_sigmoid(1.0) + log_sigmoid(-0.2) + log_sigmoid(0.6)) / 2 - log_sigmoid(1.0)) / 2


def test_batch_negatives_match_hand_computed_two_scan_batch_without_the_padding():
    """Each scan's tokens also take the other scan's real patches as negatives (1.70417); padding never counts."""
    assert BATCH == pytest.approx(1.70417, abs=1e-5)
    loss = cross_modal_sigmoid_loss(CBCT, IOS, Z, T, B, MASK, ios_valid=VALID)
    assert loss.item() == pytest.approx(BATCH, abs=1e-6)
    # without ios_valid the patches that have a pair in their own scan are the real ones: q2 has none
    assert cross_modal_sigmoid_loss(CBCT, IOS, Z, T, B, MASK).item() == pytest.approx(BATCH, abs=1e-6)
    # had q2 counted, scan 1 would gain c1.q2 = 1 -> ls(-1) and c2.q2 = 0 -> ls(1)
    counted = cross_modal_sigmoid_loss(CBCT, IOS, Z, T, B, MASK, ios_valid=torch.ones(2, 2, dtype=torch.bool))
    expected = BATCH - (log_sigmoid(-1.0) + log_sigmoid(1.0)) / 2 / 2
    assert counted.item() == pytest.approx(expected, abs=1e-6)


def test_scan_negatives_reproduce_the_per_scan_loss_and_one_scan_is_eq4_either_way():
    """negatives='scan' is the mean of the scans' own losses (0.62217); one scan alone is Eq. 4 either way."""
    assert PER_SCAN == pytest.approx(0.62217, abs=1e-5)
    loss = cross_modal_sigmoid_loss(CBCT, IOS, Z, T, B, MASK, negatives="scan")
    assert loss.item() == pytest.approx(PER_SCAN, abs=1e-6)
    scans = [(CBCT[i:i + 1], IOS[i:i + 1], Z[i:i + 1], T, B, MASK[i:i + 1]) for i in (0, 1)]
    alone = [cross_modal_sigmoid_loss(*scan).item() for scan in scans]
    assert loss.item() == pytest.approx((alone[0] + alone[1]) / 2, abs=1e-6)
    for scan, value in zip(scans, alone):
        assert cross_modal_sigmoid_loss(*scan, negatives="scan").item() == pytest.approx(value, abs=1e-7)


def test_tooth_mcl_loss_and_pretrain_config_take_batch_negatives_by_default():
    """ToothMCLLoss and PretrainConfig default to the paper's batch negatives; 'scan' is the per-scan loss."""
    z_intra = torch.zeros(2, 2, 2, dtype=torch.bool)
    for negatives, expected in (("batch", BATCH), ("scan", PER_SCAN)):
        loss_fn = ToothMCLLoss(init_scale=2.0, init_bias=1.0, negatives=negatives)
        out = loss_fn(CBCT, IOS, Z, z_intra, z_intra, mask_cross=MASK, ios_valid=VALID)
        assert out.cross.item() == pytest.approx(expected, abs=1e-5)
    assert ToothMCLLoss().negatives == "batch"
    assert PretrainConfig().arch_args()["negatives"] == "batch"
    assert PretrainConfig(negatives="scan").arch_args()["negatives"] == "scan"
    with pytest.raises(ValueError, match="negatives must be one of"):
        ToothMCLLoss(negatives="rank")
    with pytest.raises(ValueError, match=r"ios_valid must have shape \(2, 2\)"):
        cross_modal_sigmoid_loss(CBCT, IOS, Z, T, B, MASK, ios_valid=VALID[:, :1])


# ------------------------------------------------------------------------------------------------
# Two gloo processes, one scan each, against one process with both scans
# ------------------------------------------------------------------------------------------------

def _rank_scans() -> list[tuple[torch.Tensor, ...]]:
    """Scan 0: 4 tokens (the last without pairs), 3 patches; scan 1: 4 tokens, 5 patches, the last padding."""
    g = torch.Generator().manual_seed(0)
    scans = []
    for ni in (3, 5):
        cbct, ios = torch.randn(1, 4, 8, generator=g), torch.randn(1, ni, 8, generator=g)
        z = torch.rand(1, 4, ni, generator=g) > 0.6
        mask, valid = torch.ones(1, 4, ni, dtype=torch.bool), torch.ones(1, ni, dtype=torch.bool)
        scans.append((cbct, ios, z, mask, valid))
    scans[0][3][0, 3] = False
    scans[1][3][0, :, 4] = False
    scans[1][4][0, 4] = False
    return scans


def _rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One rank of two: its scan's cross-modal loss in training and eval mode, and its features' gradients."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        cbct, ios, z, mask, valid = _rank_scans()[rank]
        cbct.requires_grad_(True)
        ios.requires_grad_(True)
        loss_fn = ToothMCLLoss(init_scale=2.0, init_bias=1.0)
        ni = ios.shape[1]
        z_cbct, z_ios = torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(1, ni, ni, dtype=torch.bool)
        cross = loss_fn(cbct, ios, z, z_cbct, z_ios, mask_cross=mask, ios_valid=valid).cross
        grad_cbct, grad_ios = torch.autograd.grad(cross, [cbct, ios])
        with torch.no_grad():
            evaluated = loss_fn.eval()(cbct, ios, z, z_cbct, z_ios, mask_cross=mask, ios_valid=valid).cross
        torch.save({"loss": cross.detach(), "cbct": grad_cbct, "ios": grad_ios, "eval": evaluated},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_see_each_others_patches_and_match_one_process_with_both_scans(tmp_path):
    """Rank r's loss is scan r's term of the 2-scan loss; its features' gradients are twice that loss's (a mean)."""
    import torch.multiprocessing as mp

    context = mp.spawn(_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two gloo processes did not finish within 120 s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    # one process, both scans, scan 0 padded to 5 patches (padding: no pair, not valid)
    scans = _rank_scans()
    cbct = torch.cat([s[0] for s in scans]).requires_grad_(True)
    pad = torch.nn.functional.pad
    ios = torch.cat([pad(s[1], (0, 0, 0, 5 - s[1].shape[1])) for s in scans]).requires_grad_(True)
    z, mask, valid = (torch.cat([pad(s[i], (0, 5 - s[1].shape[1])) for s in scans]) for i in (2, 3, 4))
    reference = ToothMCLLoss(init_scale=2.0, init_bias=1.0)
    t, b = reference.t_global.detach(), reference.b_global.detach()
    single = cross_modal_sigmoid_loss(cbct, ios, z, t, b, mask, ios_valid=valid)
    grad_cbct, grad_ios = torch.autograd.grad(single, [cbct, ios])
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(single.item(), abs=1e-6)
    for r in (0, 1):
        # scan r's term: the batch loss with only scan r's tokens in it is half of it (the other
        # scan counts 0), while the other scan's patches stay negatives through ``valid``
        alone = mask.clone()
        alone[1 - r] = False
        term = 2 * cross_modal_sigmoid_loss(cbct.detach(), ios.detach(), z, t, b, alone, ios_valid=valid)
        assert ranks[r]["loss"].item() == pytest.approx(term.item(), abs=1e-6)
        # a rank's features get the gradient of both ranks' losses: 2 x that of their mean
        ni = scans[r][1].shape[1]
        torch.testing.assert_close(ranks[r]["cbct"], 2 * grad_cbct[r:r + 1], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ranks[r]["ios"], 2 * grad_ios[r:r + 1, :ni], atol=1e-6, rtol=1e-5)
        # evaluation stays on the rank (no collective): its scan alone, without the other's negatives
        c_r, p_r, z_r, mask_r, valid_r = scans[r]
        own = cross_modal_sigmoid_loss(c_r, p_r, z_r, t, b, mask_r, ios_valid=valid_r)
        assert ranks[r]["eval"].item() == pytest.approx(own.item(), abs=1e-6)
        assert abs(ranks[r]["loss"].item() - own.item()) > 0.05  # the other rank's negatives do count
