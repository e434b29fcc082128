"""The SOFTooth paper's minority-class and tooth-identity metrics of one IOS scan.

Li et al., "SOFTooth", Sec. IV-A3 and IV-C (Tables I-IV). Like OA and mIoU of
:mod:`.ios_metrics` they are computed on the vertices of the scan as the file stores them;
the paper counts the faces of scans decimated to about 10,000 faces, so the numbers are
comparable in kind, not to the last digit. Labels are FDI numbers (0 = gingiva); only
permanent teeth take part (the 17-class IOS scheme has no primary teeth).

- ``third_molar_IoU`` (Table II "3rd Molars IoU", Table I T8/T16): the mean of the class IoU
  ``TP / (TP + FP + FN)`` of the jaw's two third molars (18 and 28, or 38 and 48). A third
  molar absent from both prediction and ground truth is left out, as in mIoU; one present in
  only one of them scores 0. NaN when neither third molar appears anywhere.
- Pairwise confusion rates (Table III), "the percentage of teeth in a given pair that are
  assigned to the wrong class within that pair". The pairs are of tooth kinds within one
  quadrant: ``pair_2nd3rd`` second molar (7) vs third molar (8); ``pair_pre_mo`` premolars
  (4, 5) vs first molar (6); ``pair_cen_lat`` central (1) vs lateral incisor (2). Every
  ground-truth tooth of a pair's kinds counts once. It is *assigned* the tooth label that the
  prediction gives most of its vertices (gingiva ignored; on a tie the smaller FDI number). It
  is *confused* when that label is of the pair's other kind in the same quadrant: 17 called
  18 is, 14 called 15 is not (both premolars), 17 called 27 is not (another quadrant), nor is
  a tooth the prediction leaves as gingiva (a miss, not a confusion). Rate = confused /
  counted, a fraction (the paper prints %), NaN without any tooth of the pair. The paper
  pools the counts over a test set; the counts per scan are in ``pair_counts`` for that.
- ``centre_error`` (Table IV), "the L1 distance between the predicted and class-mean
  ground-truth centers, divided by the diagonal length of the dental model bounding box":
  for every tooth label present in both prediction and ground truth, the L1 norm
  ``|x| + |y| + |z|`` of the difference between the mean of the vertices the prediction labels
  with it and the mean of those the ground truth labels with it, divided by the diagonal of
  the bounding box of all vertices; averaged over those labels, a fraction (the paper's
  0.58 % is 0.0058). NaN when no label is in both. A label the prediction gives to two
  separate regions has one centre between them and is penalised accordingly.
"""

from __future__ import annotations

import math

import numpy as np

from .. import fdi
from ..errors import InvalidInputError

#: Table III: name -> (positions of one kind, positions of the other), within one quadrant
CONFUSION_PAIRS = {
    "pair_2nd3rd": ((7,), (8,)),
    "pair_pre_mo": ((4, 5), (6,)),
    "pair_cen_lat": ((1,), (2,)),
}


def _labels(values, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values).astype(np.int64).ravel()
    if n is not None and len(arr) != n:
        raise InvalidInputError(f"{name} has {len(arr)} entries but the mesh has {n} vertices")
    return arr


def _permanent(labels) -> list[int]:
    return [t for t in fdi.present_teeth(np.unique(labels)) if not fdi.tooth(t).primary]


def third_molar_iou(pred_labels, gt_labels, jaw: str) -> float:
    """Mean IoU of the jaw's two third molars (see the module docstring); NaN if neither appears."""
    pred = _labels(pred_labels, "pred_labels")
    gt = _labels(gt_labels, "gt_labels", len(pred))
    if jaw not in fdi.JAWS:
        raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r})")
    ious = []
    for t in (18, 28) if jaw == "upper" else (38, 48):
        p, g = pred == t, gt == t
        union = int((p | g).sum())
        if union:
            ious.append(float((p & g).sum()) / union)
    return float(np.mean(ious)) if ious else math.nan


def assigned_labels(pred_labels, gt_labels) -> dict[int, int]:
    """{ground-truth tooth: the tooth label the prediction gives most of its vertices, 0 if none}."""
    pred = _labels(pred_labels, "pred_labels")
    gt = _labels(gt_labels, "gt_labels", len(pred))
    out = {}
    for t in _permanent(gt):
        covered = pred[(gt == t) & (pred > 0)]
        if not len(covered):
            out[t] = 0
            continue
        values, counts = np.unique(covered, return_counts=True)
        out[t] = int(values[np.argmax(counts)])  # np.unique sorts: a tie goes to the smaller number
    return out


def pair_confusion(pred_labels, gt_labels) -> dict:
    """Table III rates (see the module docstring).

    Returns:
        ``{"pair_2nd3rd": rate, "pair_pre_mo": rate, "pair_cen_lat": rate,
        "pair_counts": {name: {"teeth": counted, "confused": confused}}}``, rates in [0, 1] or NaN.
    """
    assigned = assigned_labels(pred_labels, gt_labels)
    out: dict = {"pair_counts": {}}
    for name, (kind_a, kind_b) in CONFUSION_PAIRS.items():
        counted = confused = 0
        for t, a in assigned.items():
            pos = t % 10
            if pos not in kind_a + kind_b:
                continue
            counted += 1
            other = kind_b if pos in kind_a else kind_a
            confused += int(a > 0 and a // 10 == t // 10 and a % 10 in other)
        out[name] = confused / counted if counted else math.nan
        out["pair_counts"][name] = {"teeth": counted, "confused": confused}
    return out


def centre_error(pred_labels, gt_labels, vertices) -> dict:
    """Table IV normalised centre error (see the module docstring).

    Args:
        pred_labels, gt_labels: (N,) FDI label per vertex.
        vertices: (N, 3) float vertex positions.

    Returns:
        ``{"centre_error": mean over labels in both (NaN if none), "centre_error_per_tooth":
        {fdi: error}}``, errors as fractions of the bounding-box diagonal.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    pred, gt = _labels(pred_labels, "pred_labels", len(v)), _labels(gt_labels, "gt_labels", len(v))
    diagonal = float(np.linalg.norm(v.max(axis=0) - v.min(axis=0))) if len(v) else 0.0
    per_tooth = {}
    if diagonal > 0:
        for t in sorted(set(_permanent(pred)) & set(_permanent(gt))):
            d = v[pred == t].mean(axis=0) - v[gt == t].mean(axis=0)
            per_tooth[t] = float(np.abs(d).sum() / diagonal)
    mean = float(np.mean(list(per_tooth.values()))) if per_tooth else math.nan
    return {"centre_error": mean, "centre_error_per_tooth": per_tooth}


def softooth_metrics(pred_labels, gt_labels, vertices, jaw: str) -> dict:
    """All of the above for one jaw scan: ``third_molar_IoU``, the three pair rates,
    ``pair_counts``, ``centre_error`` and ``centre_error_per_tooth``."""
    return {"third_molar_IoU": third_molar_iou(pred_labels, gt_labels, jaw),
            **pair_confusion(pred_labels, gt_labels), **centre_error(pred_labels, gt_labels, vertices)}
