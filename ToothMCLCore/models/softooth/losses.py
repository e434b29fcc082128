"""SOFTooth training objective (Eq. 9-10, 14-15).

    L_main = L_cls + 2 L_m + L_obj + lambda_cent L_cent          (Eq. 14)
    L      = L_main + w_pm L_pm,  w_pm = 0.2                     (Eq. 15)

after FHM matching (``matching.fhm_match``) of the Q predictions to the L ground-truth teeth of
each scan. Ground truth is one class index per face (``face_labels`` (B, N) int64, the 17-class
IOS scheme, 0 gingiva); each tooth class present is one instance, and its centre is the mean
of its face centres ("class-mean ground-truth centre").

Choices where the paper is silent:

- **L_cls.** Sigmoid focal loss (alpha 0.25, gamma 2, RetinaNet's) on all Q x C logits; a
  matched query's target is its tooth's class, an unmatched query's is channel 0 ("no tooth");
  the sum is divided by the number of ground-truth teeth in the batch (at least 1).
- **L_m.** Dice (smoothing 1) + BCE (mean over faces) per matched pair, averaged over pairs.
- **L_obj.** BCE of the objectness logit with the IoU of the binarised (0.5) predicted mask and
  the matched tooth's mask as soft target (no gradient through the IoU), 0 for unmatched
  queries; averaged over all queries.
- **L_cent.** Smooth L1 on the centre difference divided by the scene diagonal (so the loss
  does not depend on the coordinate unit; Table IV reports centre errors the same way),
  beta = 0.01 (1 % of the diagonal, about 1 mm), summed over x, y, z and averaged over pairs.
  lambda_cent = 0.5, the value the paper gives for the lambda_cent of Eq. 12.
- **L_pm.** BCE of all Q mask logits against their class-consistent pseudo-masks
  (``cmr.pseudo_masks``), averaged over queries and faces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as fn
from torch import nn

from ...errors import InvalidInputError
from .cmr import pseudo_masks
from .matching import FHMConfig, fhm_match


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss -alpha_t (1 - p_t)^gamma log p_t of sigmoid logits (same shape)."""
    p = torch.sigmoid(logits)
    ce = fn.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """(M,) 1 - soft Dice of sigmoid(mask_logits) (M, N) and binary targets (M, N)."""
    p = torch.sigmoid(mask_logits)
    return 1 - (2 * (p * targets).sum(-1) + smooth) / (p.sum(-1) + targets.sum(-1) + smooth)


def ground_truth_instances(face_labels: torch.Tensor, positions: torch.Tensor):
    """Instances of one scan: classes (L,) int64, masks (L, N) float, class-mean centres (L, 3).

    Args:
        face_labels: (N,) int64 class index per face (0 gingiva).
        positions: (N, 3) float face centres.
    """
    classes = torch.unique(face_labels)
    classes = classes[classes > 0]
    masks = (face_labels[None, :] == classes[:, None]).to(positions.dtype)
    centres = (masks @ positions) / masks.sum(-1, keepdim=True).clamp_min(1)
    return classes, masks, centres


class SOFToothLoss(nn.Module):
    """Matching and Eq. 14-15. ``forward(outputs, face_labels)`` returns a dict of scalars.

    Args:
        matcher: FHM weights (``FHMConfig``; paper defaults).
        focal_alpha, focal_gamma: focal loss of the classes.
        mask_weight: weight of L_m (2).
        objectness_weight: weight of L_obj (1).
        centre_weight: lambda_cent of Eq. 14 (0.5); 0 disables L_cent (the paper's baseline).
        centre_beta: Smooth L1 beta, a fraction of the scene diagonal.
        pseudo_mask_weight: w_pm of Eq. 15 (0.2); 0 disables L_pm.
        mask_threshold: binarisation for the IoU targets (0.5).

    ``outputs`` is the dict of :class:`~.network.SOFTooth` (``mask_logits``, ``class_logits``,
    ``objectness``, ``centres``, ``centre_faces``, ``face_centres``); ``face_labels`` is (B, N)
    int64. The result holds ``total`` and the parts ``cls``, ``mask`` (= ``dice`` + ``bce``),
    ``objectness``, ``centre``, ``pseudo_mask`` (unweighted) and ``matched`` (pairs, a count).
    """

    def __init__(self, matcher: FHMConfig | None = None, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 mask_weight: float = 2.0, objectness_weight: float = 1.0, centre_weight: float = 0.5,
                 centre_beta: float = 0.01, pseudo_mask_weight: float = 0.2, mask_threshold: float = 0.5):
        super().__init__()
        self.matcher = matcher or FHMConfig()
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.mask_weight, self.objectness_weight = mask_weight, objectness_weight
        self.centre_weight, self.centre_beta = centre_weight, centre_beta
        self.pseudo_mask_weight, self.mask_threshold = pseudo_mask_weight, mask_threshold

    def forward(self, outputs: dict[str, torch.Tensor], face_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        masks_logits, cls_logits = outputs["mask_logits"], outputs["class_logits"]
        obj_logits, centres, positions = outputs["objectness"], outputs["centres"], outputs["face_centres"]
        b, _q, n = masks_logits.shape
        if face_labels.shape != (b, n):
            raise InvalidInputError(f"face_labels must be (B, N) = ({b}, {n}) (got {tuple(face_labels.shape)})")
        face_labels = face_labels.long()
        cls_target = torch.zeros_like(cls_logits)
        cls_target[..., 0] = 1.0
        obj_target = torch.zeros_like(obj_logits)
        pred_masks, gt_masks, pred_centres, gt_centres = [], [], [], []
        n_gt = n_matched = 0
        for i in range(b):
            classes, masks, gt_c = ground_truth_instances(face_labels[i], positions[i])
            n_gt += len(classes)
            if not len(classes):
                continue
            pos = positions[i].detach()
            scene = float(torch.linalg.norm(pos.max(0).values - pos.min(0).values)) or 1.0
            rows, cols = fhm_match(masks_logits[i], cls_logits[i], centres[i], masks, classes, gt_c, scene,
                                   self.matcher)
            rows_t = torch.as_tensor(rows, device=cls_logits.device)
            cols_t = torch.as_tensor(cols, device=cls_logits.device)
            n_matched += len(rows)
            cls_target[i, rows_t] = 0.0
            cls_target[i, rows_t, classes[cols_t]] = 1.0
            with torch.no_grad():
                binary = (torch.sigmoid(masks_logits[i, rows_t]) > self.mask_threshold).to(masks.dtype)
                inter = (binary * masks[cols_t]).sum(-1)
                union = (binary + masks[cols_t]).clamp(max=1).sum(-1)
                obj_target[i, rows_t] = inter / union.clamp_min(1)
            pred_masks.append(masks_logits[i, rows_t])
            gt_masks.append(masks[cols_t])
            pred_centres.append(centres[i, rows_t] / scene)
            gt_centres.append(gt_c[cols_t] / scene)

        zero = masks_logits.sum() * 0.0
        loss_cls = sigmoid_focal_loss(cls_logits, cls_target, self.focal_alpha, self.focal_gamma).sum() / max(n_gt, 1)
        loss_obj = fn.binary_cross_entropy_with_logits(obj_logits, obj_target)
        if pred_masks:
            pm, gm = torch.cat(pred_masks), torch.cat(gt_masks)
            loss_dice = dice_loss(pm, gm).mean()
            loss_bce = fn.binary_cross_entropy_with_logits(pm, gm)
            diff = torch.cat(pred_centres) - torch.cat(gt_centres)
            loss_centre = fn.smooth_l1_loss(diff, torch.zeros_like(diff), beta=self.centre_beta,
                                            reduction="none").sum(-1).mean()
        else:
            loss_dice = loss_bce = loss_centre = zero
        if self.pseudo_mask_weight:
            target = pseudo_masks(outputs["centre_faces"], face_labels).to(masks_logits.dtype)
            loss_pm = fn.binary_cross_entropy_with_logits(masks_logits, target)
        else:
            loss_pm = zero
        loss_mask = loss_dice + loss_bce
        total = (loss_cls + self.mask_weight * loss_mask + self.objectness_weight * loss_obj
                 + self.centre_weight * loss_centre + self.pseudo_mask_weight * loss_pm)
        return {
            "total": total, "cls": loss_cls, "mask": loss_mask, "dice": loss_dice, "bce": loss_bce,
            "objectness": loss_obj, "centre": loss_centre, "pseudo_mask": loss_pm,
            "matched": torch.tensor(float(n_matched)),
        }
