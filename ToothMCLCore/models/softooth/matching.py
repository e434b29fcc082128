"""FDI Order-Aware Hungarian Matching (SOFTooth Section III-D, Eq. 11-13, Algorithm 1).

Training: predictions are matched one-to-one to ground-truth teeth by maximising

    C(i, l)      = S_mask(i, l)^alpha * S_cls(i, l)^beta                        (Eq. 11)
    C_cent(i, l) = C - lambda_cent * max(|c_i - c_l|_1 / S_scene - delta_drift, 0)  (Eq. 12)
    C_ord(i, l)  = C_cent - lambda_ord * max(|r_i - t_l| - delta_ord, 0)          (Eq. 13)

with S_mask the soft Dice of sigma(P_i) and T_l (smoothing 1, as the Dice loss), S_cls =
sigma(L_i)[y_l], S_scene the bounding-box diagonal of the scan. Eq. 12-13 and the Hungarian
solver are those of ``ToothMCLCore.postprocessing.assignment`` (shared with CBCT and the IOS
post-processing).

Ranks. The paper ranks the predicted centres along the arch among themselves (r) and maps
the ground-truth teeth to their canonical FDI positions (t). With Q = 30 queries of which
about half are "no object" and sit anywhere, a prediction's rank among the predictions says
little about the tooth it covers, and with missing teeth ranks of the teeth present no longer
line up with canonical positions. We measure both on the ground truth's own scale: t_l is the
normalised rank of tooth l among the teeth present (by canonical arch position), and r_i is
the t of the ground-truth tooth found at prediction i's place along the arch: its arch
coordinate (``assignment.arch_coordinate``, pivot fixed by the ground-truth centres) is
located among the teeth's arch coordinates and t interpolated piecewise linearly between the
two neighbouring teeth (extrapolated beyond the last ones). |r_i - t_l| is then the number
of teeth between prediction and tooth along the arch, over L - 1; missing teeth shift
nothing, and a prediction on a tooth has r = t of that tooth even if the scan's frame is
mirrored or its labels are out of arch order. The arch coordinate is an angle around a point
behind the arch rather than the paper's x projection, which cannot order second and third
molars (they differ in y, not x).

Inference: :func:`assign_instances` turns the Q predicted instances of one jaw into FDI numbers
without a fixed confidence cut on the class (the paper's point against THISNet): an instance is
a tooth candidate when its mask is not empty and its objectness is over the threshold (the
model card's ``objectness_threshold``, 0.5 by default), whatever its class confidence;
of two candidates whose masks overlap (IoU >= 0.5) the one with lower objectness goes; the
candidates then get distinct numbers in arch order from ``assignment.assign_fdi`` (the same
order-aware similarity and Hungarian solver, on class probabilities; see its docstring for
the present-teeth ranks and the per-position tolerance). Third molars therefore stay as long
as their instance exists, however unsure its class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ... import fdi
from ...config import config_from_dict, config_to_dict
from ...errors import ConfigError, InvalidInputError
from ...postprocessing.assignment import (
    DELTA_DRIFT,
    DELTA_ORDER,
    LAMBDA_CENTRE,
    LAMBDA_ORDER,
    arch_coordinate,
    assign_fdi,
    hungarian,
    normalised_rank,
    order_penalised_similarity,
)


@dataclass(frozen=True)
class FHMConfig:
    """Weights of the matching (paper defaults); ``use_centre`` / ``use_order`` for ablations.

    Attributes:
        alpha, beta: exponents of mask Dice and class probability (Eq. 11: 0.8, 0.2).
        lambda_centre, delta_drift: centre penalty (Eq. 12: 0.5, 0.10 of the scene diagonal).
        lambda_order, delta_order: order penalty (Eq. 13: 4, 0.15).
        use_centre, use_order: apply Eq. 12 / Eq. 13 (False, False is the vanilla matcher).
    """

    alpha: float = 0.8
    beta: float = 0.2
    lambda_centre: float = LAMBDA_CENTRE
    delta_drift: float = DELTA_DRIFT
    lambda_order: float = LAMBDA_ORDER
    delta_order: float = DELTA_ORDER
    use_centre: bool = True
    use_order: bool = True

    def __post_init__(self):
        for name in ("alpha", "beta", "lambda_centre", "delta_drift", "lambda_order", "delta_order"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"FHMConfig.{name} must be >= 0 (got {getattr(self, name)})")

    from_dict = classmethod(config_from_dict)
    to_dict = config_to_dict


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def dice_similarity(mask_logits, gt_masks, smooth: float = 1.0) -> np.ndarray:
    """S_mask: (Q, L) soft Dice between sigma(mask_logits) (Q, N) and binary gt_masks (L, N)."""
    p, t = _sigmoid(_np(mask_logits)), _np(gt_masks)
    inter = p @ t.T
    return (2.0 * inter + smooth) / (p.sum(1)[:, None] + t.sum(1)[None, :] + smooth)


def class_similarity(class_logits, gt_classes) -> np.ndarray:
    """S_cls: (Q, L) sigma(class_logits) (Q, C) at each tooth's class index (L,)."""
    return _sigmoid(_np(class_logits))[:, np.asarray(_np(gt_classes), dtype=np.int64)]


def canonical_position(class_index) -> np.ndarray:
    """(L,) float position 0..15 along the arch (patient's right third molar first) of IOS
    tooth classes 1..16 (the same for both jaws' schemes)."""
    numbers = fdi.class_index_to_fdi(np.asarray(class_index, dtype=np.int64), "ios_lower")
    arch = np.array([fdi.tooth(int(n)).arch_index for n in np.atleast_1d(numbers)], dtype=np.float64)
    return np.where(arch < 0, arch + 8, arch + 7)


def order_ranks(pred_centres, gt_centres, gt_classes) -> tuple[np.ndarray, np.ndarray]:
    """r (Q,) and t (L,) of Eq. 13 on the ground truth's scale (see the module docstring)."""
    pc, gc = _np(pred_centres), _np(gt_centres)
    n_gt = len(gc)
    if n_gt <= 1:
        return np.full(len(pc), 0.5), np.full(n_gt, 0.5)
    t = normalised_rank(canonical_position(gt_classes))
    a_gt = arch_coordinate(gc, reference_ras=gc)
    a_pr = arch_coordinate(pc, reference_ras=gc)
    order = np.argsort(a_gt, kind="stable")
    xp, fp = a_gt[order], t[order]
    r = np.interp(a_pr, xp, fp)
    lo_slope = (fp[1] - fp[0]) / max(xp[1] - xp[0], 1e-9)
    hi_slope = (fp[-1] - fp[-2]) / max(xp[-1] - xp[-2], 1e-9)
    r = np.where(a_pr < xp[0], fp[0] - (xp[0] - a_pr) * lo_slope, r)
    r = np.where(a_pr > xp[-1], fp[-1] + (a_pr - xp[-1]) * hi_slope, r)
    return r, t


def fhm_similarity(mask_logits, class_logits, centres, gt_masks, gt_classes, gt_centres, scene_size: float,
                   config: FHMConfig | None = None) -> np.ndarray:
    """C_ord (Q, L) of Eq. 11-13.

    Args:
        mask_logits: (Q, N) predicted mask logits P.
        class_logits: (Q, C) predicted class logits L.
        centres: (Q, 3) mask-derived predicted centres.
        gt_masks: (L, N) binary ground-truth masks T.
        gt_classes: (L,) int class index of each tooth (1..16).
        gt_centres: (L, 3) class-mean ground-truth centres.
        scene_size: S_scene, the bounding-box diagonal (same units as the centres).
        config: weights (paper defaults when None).
    """
    cfg = config or FHMConfig()
    base = dice_similarity(mask_logits, gt_masks) ** cfg.alpha * class_similarity(class_logits, gt_classes) ** cfg.beta
    r, t = order_ranks(centres, gt_centres, gt_classes)
    with_centre = cfg.use_centre and len(base)
    return order_penalised_similarity(
        base, r, t, cfg.lambda_order if cfg.use_order else 0.0, cfg.delta_order,
        instance_centres=_np(centres) if with_centre else None,
        target_centres=_np(gt_centres) if with_centre else None,
        scene_size=scene_size if with_centre else None,
        lambda_centre=cfg.lambda_centre, delta_drift=cfg.delta_drift,
    )


def fhm_match(mask_logits, class_logits, centres, gt_masks, gt_classes, gt_centres, scene_size: float,
              config: FHMConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1: one-to-one matching of predictions to ground-truth teeth.

    Arguments as :func:`fhm_similarity`. Returns ``(prediction indices, tooth indices)``, two
    int64 arrays of min(Q, L) matched pairs, ordered by prediction.
    """
    if len(_np(gt_classes)) == 0 or len(_np(class_logits)) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sim = fhm_similarity(mask_logits, class_logits, centres, gt_masks, gt_classes, gt_centres, scene_size, config)
    cols = hungarian(sim)
    rows = np.flatnonzero(cols >= 0)
    return rows.astype(np.int64), cols[rows].astype(np.int64)


def assign_instances(mask_logits, class_logits, objectness, centres, jaw: str, objectness_threshold: float = 0.5,
                     mask_threshold: float = 0.5, duplicate_iou: float = 0.5, fdi_order: bool = True) -> np.ndarray:
    """FDI number of each predicted instance of one jaw, 0 for "not a tooth" (inference).

    Args:
        mask_logits: (Q, N) float.
        class_logits: (Q, 17) float, channel 0 "no tooth", 1..16 the ``ios_<jaw>`` scheme.
        objectness: (Q,) float logits.
        centres: (Q, 3) float in the canonical frame (x to the patient's right, y anterior).
        jaw: "upper" or "lower".
        objectness_threshold: sigmoid(objectness) above which an instance is a tooth.
        mask_threshold: mask binarisation (paper: 0.5).
        duplicate_iou: masks overlapping at least this much are one instance.
        fdi_order: number the teeth with the order prior (FHM's Eq. 13 at inference, via
            :func:`~ToothMCLCore.postprocessing.assignment.assign_fdi`); False numbers them by a
            plain Hungarian assignment on the class probabilities alone (the ablation "w/o FHM").

    Returns:
        (Q,) int64 distinct FDI numbers of the jaw, 0 for "not a tooth" (see the module
        docstring for the rules).
    """
    if jaw not in fdi.JAWS:
        raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r})")
    masks = _sigmoid(_np(mask_logits)) > mask_threshold
    prob = _sigmoid(_np(class_logits))
    obj = _np(objectness)
    out = np.zeros(len(prob), dtype=np.int64)
    candidate = masks.any(axis=1) & (_sigmoid(obj) > objectness_threshold)
    kept: list[int] = []
    for q in sorted(np.flatnonzero(candidate), key=lambda i: -obj[i]):
        inter = (masks[kept] & masks[q]).sum(axis=1)
        union = (masks[kept] | masks[q]).sum(axis=1)
        if not np.any(inter >= duplicate_iou * union):
            kept.append(int(q))
    if not kept:
        return out
    teeth = fdi.class_index_to_fdi(np.arange(1, prob.shape[1]), f"ios_{jaw}")
    out[kept] = assign_fdi(prob[kept, 1:], _np(centres)[kept], tuple(int(t) for t in teeth),
                           lambda_order=LAMBDA_ORDER if fdi_order else 0.0)
    return out


def faces_to_fdi(mask_logits, instance_fdi, mask_threshold: float = 0.5) -> np.ndarray:
    """(N,) int64 FDI number per face: the numbered instance with the most probable mask there,
    0 (gingiva) where no numbered instance exceeds the threshold."""
    prob = _sigmoid(_np(mask_logits))
    numbers = np.asarray(instance_fdi, dtype=np.int64)
    prob = np.where((numbers > 0)[:, None], prob, 0.0)
    if not len(prob):
        return np.zeros(prob.shape[1], np.int64)
    best = prob.argmax(axis=0)
    return np.where(prob.max(axis=0) > mask_threshold, numbers[best], 0)
