"""Overlap metrics between label maps (CBCT voxels or IOS vertices).

Rule for absent teeth: a tooth counts only if it is in the ground truth. A tooth present in
the ground truth and missing in the prediction scores 0; a tooth in neither is *not* counted
(it would otherwise score a meaningless perfect 1); a tooth only in the prediction is a false
positive, reported separately and not part of the mean.
"""

from __future__ import annotations

import numpy as np

from .. import fdi


def dice_per_tooth(pred: np.ndarray, truth: np.ndarray) -> dict[int, float]:
    """Dice of every FDI tooth present in ``truth``.

    Args:
        pred, truth: integer label arrays of the same shape with FDI values.

    Returns:
        {fdi: dice} for the teeth of ``truth``, sorted by FDI number.
    """
    pred = np.asarray(pred).ravel().astype(np.int64)
    truth = np.asarray(truth).ravel().astype(np.int64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction and truth differ in size ({pred.size} vs {truth.size})")
    n = int(max(pred.max(initial=0), truth.max(initial=0))) + 1
    joint = np.bincount(truth * n + pred, minlength=n * n).reshape(n, n)
    tp = np.diag(joint)
    in_truth, in_pred = joint.sum(axis=1), joint.sum(axis=0)
    out = {}
    for t in fdi.present_teeth(np.nonzero(in_truth)[0]):
        out[t] = float(2.0 * tp[t] / (in_truth[t] + in_pred[t]))
    return out


def false_positive_teeth(pred: np.ndarray, truth: np.ndarray) -> list[int]:
    """FDI numbers predicted but absent from the ground truth."""
    return sorted(set(fdi.present_teeth(np.unique(pred))) - set(fdi.present_teeth(np.unique(truth))))


def mean_dice(per_tooth: dict[int, float]) -> float:
    """Mean over the ground-truth teeth (NaN when there are none)."""
    return float(np.mean(list(per_tooth.values()))) if per_tooth else float("nan")
