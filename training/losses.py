"""Contrastive losses of the ToothMCL pretraining (paper Eq. 4-9).

Notation: ``c_i`` CBCT token features, ``p_j`` IOS patch features, ``z_ij`` = +1 for positives
and -1 for negatives (:mod:`ToothMCLCore.preprocessing.correspondence` builds them, with a mask
of the pairs that enter the loss), ``t`` a logit scale and ``b`` a bias. ``log sigma`` is the
log-sigmoid; ``log(1 / (1 + exp(-x))) = log sigma(x)``.

Eq. 4 (cross-modal, sigmoid contrastive as in SigLIP)::

    L_cross = -1/|B| sum_i sum_j log( 1 / (1 + exp(z_ij (-t_g c_i . p_j + b_g))) )
            = -1/|B| sum_i sum_j log sigma( z_ij (t_g c_i . p_j - b_g) )

with ``c_i``, ``p_j`` L2-normalised ("normalized latent representations"). Note the paper's sign
of the bias: the logit is ``t c.p - b``, so SigLIP's bias -10 is ``b = +10`` here.

The paper sums over the mini-batch ``B`` of paired patches, so a token's negatives are the
patches of every pair of the batch. ``negatives="batch"`` (the default) does that: a token ``i``
of scan ``m`` is paired with the patches of its own scan as the correspondence says (``z``,
``mask``), and with every valid patch ``k`` of every other scan ``n`` of the batch as a negative
(``z = -1``); under DDP, in training mode, the other ranks' scans belong to the batch too (their
patches are gathered with their gradients). Positives exist only within a scan; padding tokens
and patches stay out. Our CBCT tokens (Nc) and IOS patches (Ni) differ in number where the paper
pairs ``|B|`` patches one to one, so ``|B_m|`` is the number of tokens of scan ``m`` with at
least one pair in their own scan (only those tokens see other scans' patches), and a batch of
``M`` scans averages its scans::

    L_cross = 1/M sum_m -1/|B_m| sum_{i in m} ( sum_j mask_ij log sigma( z_ij (t c_i . p_j - b) )
                                               + sum_{n != m} sum_{k in n} log sigma( -(t c_i . p_k - b) ) )

This is Eq. 4 exactly for one scan (and z the identity on ``|B|`` pairs). Normalising each scan
by its own tokens, rather than the batch by all of them, keeps a scan's weight independent of
how many of its tokens have a pair, and makes a DDP rank's loss the mean over its scans: the
mean over ranks, whose gradient DDP's averaging follows, is then the loss of the same global
batch in one process (ranks hold equal batches, as the engine's sampler gives them). A rank's
patch features get the gradient of every rank's loss (the sum over ranks, ``W`` times that of
the mean); DDP divides the parameters' gradients by ``W``. ``negatives="scan"`` keeps each
scan's own patches only.

Eq. 6-8 (intra-modal, one modality)::

    a_ij = p_i . p_j / (|p_i| |p_j|)                       (6)
    A_ij = log sigma( z_ij (t_l a_ij - b_l) )              (7)
    L_intra = -1/|B| sum_m 1/w sum_j max_i A_ij            (8)

``m`` runs over the scans of the batch, ``j`` over a scan's ``w`` patches and ``i`` over the
patches paired with ``j`` (never ``j`` itself: ``a_jj = 1`` always). Eq. 8 as printed also sums
over an ``n`` that its summand does not depend on; we read that as a typo.

Reduction (``reduction``; default ``"mean"``, a choice, see why):

- ``"max"``: Eq. 8 as printed, the max over every pair ``i``. ``A_ij`` is a log-likelihood, so
  the max keeps, for every patch, the pair the model already explains best, and only that pair
  gets a gradient. With the SigLIP initialisation (logit bias -10) that pair is always an easy
  negative (``A ~ -5e-5``): on random features the term is 1e-5 with a gradient a million times
  smaller than the cross-modal one's, so as printed Eq. 8 does not train. Kept to reproduce
  the text, never the default.
- ``"max_positive"``: Eq. 8 with the max over the *positive* pairs of ``j`` only (``z_ij = +1``;
  a patch without one drops out): every patch is pulled towards its most similar positive
  partner, a multiple-instance reading under which the max trains. Negatives get no gradient
  from this term (the cross-modal term still has them).
- ``"mean"``: every pair alike, positives and negatives, which is what the authors' released
  code does by default (its max is an option it calls "hard negative", off by default). The
  default: it is the authors' own training loss and it trains both terms of Eq. 7.

Measured (issue 16). Feature gradient of the intra term over that of ``alpha`` x the cross term,
random features at the start (``Testing/Core/test_contrastive_losses.py``): ``"max"`` 7e-6 with
SigLIP's ``b_l = 10``, 0.14 with our ``b_l = 0`` (below); ``"mean"`` 0.43; ``"max_positive"``
0.73. Tiny phantom pretraining (``training/configs/pretrain_tiny.yaml``, 3 pairs, 12 epochs;
held-out IOS patch -> CBCT token retrieval among 64 tokens, chance top-1 0.016, top-5 0.078):
``"max"`` with ``b_l = 10`` 0.081 / 0.22 (its intra terms stay near 0: they do not train), with
``b_l = 0`` 0.093 / 0.38; ``"mean"`` with ``b_l = 0`` 0.105 / 0.30; ``"max_positive"`` 0.012 /
0.13: pulling every patch to its nearest positive and pushing nothing apart collapses the
features (both intra losses reach 0). ``"mean"`` stays the default: it is the authors' own loss
and trains positives and negatives alike, where the max over all pairs optimises, per patch,
only the pair already explained best (on three phantom pairs the two are within noise).

Eq. 9: ``L_total = L_intra + alpha L_cross`` with ``L_intra`` the sum of the CBCT and the IOS
intra-modal losses (the released code adds both, with alpha = 0.5).

Initialisation. The paper gives none; the released code starts at ``t = 512**-0.5`` (about
0.044) and ``b = 0`` with one (t, b) for all three losses, which keeps every logit within
+-0.05 at the start. We follow SigLIP instead (Zhai et al. 2023), which was tuned for this loss
with many more negatives than positives: ``t = exp(t')`` with ``t' = log 10``, and a logit bias
of -10 (``b = +10`` in the paper's sign) for the cross-modal (t_g, b_g), where each token has one
positive among all the patches. The intra-modal (t_l, b_l) starts at ``t_l = 10`` and
``b_l = 0`` (``init_bias_local``), the released code's bias: here positives are common (every
patch of the same tooth, all of the gingiva), and with ``b_l = t_l = 10`` the decision threshold
``t_l a = b_l`` sits at cosine 1, which no positive pair can pass. The mean reduction then pulls
every positive pair together while negatives feel almost nothing until their cosine nears 1: the
features collapse (measured: IOS intra loss stuck at ln 2, mean pairwise cosine 0.998, retrieval
top-1 0.023). With ``b_l = 0`` the threshold is at cosine 0; ``b_l = 5`` (cosine 0.5) retrieved as
well (top-1 0.105, top-5 0.36). ``t`` is capped at 100 (CLIP's cap) so the logits cannot blow up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: CLIP's cap on the logit scale
MAX_LOGIT_SCALE = 100.0
#: where Eq. 4 takes a token's negatives from: the whole batch (paper) or its own scan
NEGATIVES = ("batch", "scan")
#: Eq. 8's reductions over the pairs of a patch (module docstring)
REDUCTIONS = ("mean", "max", "max_positive")


def _signs(z: torch.Tensor) -> torch.Tensor:
    """z as +1 / -1 floats from a bool or +-1 (0 counts as negative) tensor."""
    return torch.where(z > 0, 1.0, -1.0) if z.dtype != torch.bool else torch.where(z, 1.0, -1.0)


def _check(name: str, tensor: torch.Tensor, shape: tuple) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (got {tuple(tensor.shape)})")


def cross_modal_sigmoid_loss(cbct: torch.Tensor, ios: torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                             b: torch.Tensor, mask: torch.Tensor | None = None, negatives: str = "batch",
                             ios_valid: torch.Tensor | None = None, across_ranks: bool = False) -> torch.Tensor:
    """Eq. 4: sigmoid contrastive loss between CBCT tokens and IOS patches.

    Args:
        cbct: (B, Nc, h) float CBCT token features (normalised here).
        ios: (B, Ni, h) float IOS patch features (normalised here).
        z: (B, Nc, Ni) bool (True = matched) or +-1.
        t, b: scalar tensors, the logit scale t_g (> 0) and bias b_g.
        mask: (B, Nc, Ni) bool, pairs in the loss (None = all). Padding tokens / patches of
            a batch of unequal scans are masked out.
        negatives: "batch" (every valid patch of the other scans is a negative of a scan's
            tokens, as in the paper) or "scan" (a scan's own patches only).
        ios_valid: (B, Ni) bool, the patches that are not padding, which "batch" hands to the
            other scans; None = the patches with at least one pair in ``mask``.
        across_ranks: with "batch" and a process group of more than one rank, the patches of
            every rank are negatives too (a collective: every rank must call it).

    Returns:
        Scalar: mean over the scans ``m`` of ``-1/|B_m|`` times the sum of the scan's terms
        (module docstring), ``|B_m|`` = the scan's tokens with at least one pair in ``mask``;
        scans with no pair count as 0.
    """
    bsz, nc, _ = cbct.shape
    ni = ios.shape[1]
    _check("z", z, (bsz, nc, ni))
    mask = torch.ones(bsz, nc, ni, dtype=torch.bool, device=cbct.device) if mask is None else mask.bool()
    _check("mask", mask, (bsz, nc, ni))
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES} (got {negatives!r})")
    c, p = F.normalize(cbct, dim=-1), F.normalize(ios, dim=-1)
    logits = t * torch.einsum("bih,bjh->bij", c, p) - b
    terms = (F.logsigmoid(_signs(z) * logits) * mask).sum(dim=(1, 2))
    rows = mask.any(dim=2)  # (B, Nc) tokens in the loss
    if negatives == "batch":
        valid = mask.any(dim=1) if ios_valid is None else ios_valid.bool()
        _check("ios_valid", valid, (bsz, ni))
        others, other_valid, owner = _batch_patches(p, valid, across_ranks)
        scan = torch.arange(bsz, device=cbct.device)
        keep = rows[:, :, None] & (other_valid[None, :] & (owner[None, :] != scan[:, None]))[:, None, :]
        other_logits = t * torch.einsum("bih,nh->bin", c, others) - b  # (B, Nc, N), all z = -1
        terms = terms + (F.logsigmoid(-other_logits) * keep).sum(dim=(1, 2))
    return -(terms / rows.sum(dim=1).clamp_min(1)).mean()


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _batch_patches(p: torch.Tensor, valid: torch.Tensor,
                   across_ranks: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The patches of the batch, of every rank with ``across_ranks``: (N, h) features, (N,) bool
    valid, (N,) long index of the local scan they belong to (-1 for other ranks' scans)."""
    bsz, ni, h = p.shape
    owner = torch.arange(bsz, device=p.device)[:, None].expand(bsz, ni)
    world = _world_size() if across_ranks else 1
    if world == 1:
        return p.reshape(-1, h), valid.reshape(-1), owner.reshape(-1)
    import torch.distributed as dist

    sizes = [torch.zeros(2, dtype=torch.long, device=p.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([bsz, ni], device=p.device))
    b_max, n_max = (int(v) for v in torch.stack(sizes).amax(dim=0))
    p = F.pad(p, (0, 0, 0, n_max - ni, 0, b_max - bsz))  # ranks may hold unequal patch counts
    padded = torch.zeros(b_max, n_max, dtype=torch.uint8, device=p.device)
    padded[:bsz, :ni] = valid
    valids = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(valids, padded)
    feats = _AllGatherWithGrad.apply(p)  # (W, b_max, n_max, h)
    owners = torch.full((world, b_max, n_max), -1, dtype=torch.long, device=p.device)
    owners[dist.get_rank(), :bsz, :ni] = owner
    return feats.reshape(-1, h), torch.stack(valids).reshape(-1).bool(), owners.reshape(-1)


class _AllGatherWithGrad(torch.autograd.Function):
    """(W, ...) stack of every rank's tensor; the backward hands each rank the sum over ranks of
    the gradient of its slice.

    ``torch.distributed.nn.functional.all_gather`` does the same but is deprecated in torch 2.14
    (a FutureWarning per call, pointing to the private ``_functional_collectives``); this one uses
    only the public ``all_gather`` and ``all_reduce``, which every backend has (gloo has no
    ``reduce_scatter``).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor.contiguous())
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def intra_modal_loss(features: torch.Tensor, z: torch.Tensor, t: torch.Tensor, b: torch.Tensor,
                     mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Eq. 6-8: intra-modal loss of one modality.

    Args:
        features: (B, w, h) float patch features of one modality.
        z: (B, w, w) bool or +-1, ``z_ij`` = patches i and j show similar anatomy.
        t, b: scalar tensors, t_l (> 0) and b_l.
        mask: (B, w, w) bool, pairs in the loss; None = every pair except i = j.
        reduction: "mean" (all pairs alike, the released code's default), "max" (Eq. 8 as
            printed: per patch j the best pair i, averaged over the patches j that have a
            pair) or "max_positive" (the same over j's positive pairs only); see the module
            docstring for why "mean" is the default.

    Returns:
        Scalar, averaged over the scans of the batch (a scan with no pair counts as 0).
    """
    bsz, w, _ = features.shape
    _check("z", z, (bsz, w, w))
    if mask is None:
        mask = ~torch.eye(w, dtype=torch.bool, device=features.device).expand(bsz, w, w)
    mask = mask.bool()
    _check("mask", mask, (bsz, w, w))
    f = F.normalize(features, dim=-1)
    a = torch.einsum("bih,bjh->bij", f, f)                       # Eq. 6
    big_a = F.logsigmoid(_signs(z) * (t * a - b))                # Eq. 7
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS} (got {reduction!r})")
    if reduction == "mean":
        per_scan = (big_a * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1)
    else:
        if reduction == "max_positive":
            mask = mask & (_signs(z) > 0)
        best = big_a.masked_fill(~mask, float("-inf")).max(dim=1).values  # (B, w): max over i
        has_pair = mask.any(dim=1)
        per_scan = torch.where(has_pair, best, 0.0).sum(dim=1) / has_pair.sum(dim=1).clamp_min(1)
    return -per_scan.mean()


@dataclass
class ToothMCLLossOutput:
    """The total loss (Eq. 9) and its parts, each a scalar tensor."""

    total: torch.Tensor
    cross: torch.Tensor
    intra_cbct: torch.Tensor
    intra_ios: torch.Tensor


class ToothMCLLoss(nn.Module):
    """Eq. 9 with the learnable logit scales and biases of Eq. 4 and Eq. 7.

    Args:
        alpha: weight of the cross-modal loss (released code: 0.5; the paper gives no value).
        init_scale: initial t_g and t_l (stored as log t); SigLIP's 10.
        init_bias: initial b_g (and b_l unless ``init_bias_local`` is given) in the paper's sign
            (logit = t c.p - b); SigLIP's logit bias -10 is +10 here.
        init_bias_local: initial b_l (module docstring: 0, not SigLIP's 10); None = ``init_bias``.
        reduction: "mean" (default), "max" or "max_positive" for Eq. 8 (see :func:`intra_modal_loss`).
        negatives: Eq. 4's negatives, "batch" (the paper's mini-batch) or "scan" (see
            :func:`cross_modal_sigmoid_loss`).

    Parameters: ``log_t_global``, ``b_global`` (cross-modal), ``log_t_local``, ``b_local``
    (intra-modal, shared by both modalities as in the paper).

    With ``negatives="batch"`` in training mode under an initialised process group, the
    cross-modal loss gathers the patches of every rank, so every rank must call it once per
    step (DDP training does). In eval mode it stays on the rank's own batch: the engine
    validates unequal shards per rank, where a collective would wait forever.
    """

    def __init__(self, alpha: float = 0.5, init_scale: float = 10.0, init_bias: float = 10.0,
                 reduction: str = "mean", negatives: str = "batch", init_bias_local: float | None = 0.0):
        super().__init__()
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0 (got {alpha})")
        if not 0 < init_scale <= MAX_LOGIT_SCALE:
            raise ValueError(f"init_scale must be within (0, {MAX_LOGIT_SCALE}] (got {init_scale})")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS} (got {reduction!r})")
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES} (got {negatives!r})")
        self.alpha, self.reduction, self.negatives = float(alpha), reduction, negatives
        self.log_t_global = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.b_global = nn.Parameter(torch.tensor(float(init_bias)))
        self.log_t_local = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.b_local = nn.Parameter(torch.tensor(float(init_bias if init_bias_local is None else init_bias_local)))

    @property
    def t_global(self) -> torch.Tensor:
        return self.log_t_global.exp().clamp(max=MAX_LOGIT_SCALE)

    @property
    def t_local(self) -> torch.Tensor:
        return self.log_t_local.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, cbct: torch.Tensor, ios: torch.Tensor, z_cross: torch.Tensor, z_cbct: torch.Tensor,
                z_ios: torch.Tensor, mask_cross: torch.Tensor | None = None,
                mask_cbct: torch.Tensor | None = None, mask_ios: torch.Tensor | None = None,
                ios_valid: torch.Tensor | None = None) -> ToothMCLLossOutput:
        """Args: cbct (B, Nc, h), ios (B, Ni, h); z / mask (B, Nc, Ni), (B, Nc, Nc), (B, Ni, Ni);
        ios_valid (B, Ni) bool, the patches that are not padding (see :func:`cross_modal_sigmoid_loss`)."""
        cross = cross_modal_sigmoid_loss(cbct, ios, z_cross, self.t_global, self.b_global, mask_cross,
                                         self.negatives, ios_valid, across_ranks=self.training)
        intra_cbct = intra_modal_loss(cbct, z_cbct, self.t_local, self.b_local, mask_cbct, self.reduction)
        intra_ios = intra_modal_loss(ios, z_ios, self.t_local, self.b_local, mask_ios, self.reduction)
        total = intra_cbct + intra_ios + self.alpha * cross
        return ToothMCLLossOutput(total, cross, intra_cbct, intra_ios)
