"""Metrics of intraoral-scan segmentation on mesh vertices, including the 3DTeethSeg'22 score.

**Overlap metrics.** Per-tooth Dice comes from :func:`.dice.dice_per_tooth` (a tooth counts
when it is in the ground truth; teeth only in the prediction are listed in
``false_positive_teeth``); IoU = Dice / (2 - Dice). A group (T1 central incisor .. T8 third
molar) reports the mean over its ground-truth teeth. ``OA`` is the fraction of vertices whose
FDI label equals the ground truth. ``mIoU`` averages the IoU of the 17 classes of the jaw's
``ios_upper``/``ios_lower`` scheme (gingiva + 16 tooth positions); a class absent from both
prediction and ground truth has no IoU and is left out of the mean, a class present in only
one of them scores 0. Predicted labels outside the jaw's 17 classes count as wrong.

**SOFTooth metrics** (third-molar IoU, the pairwise confusion rates of its Table III and the
normalised centre error of its Table IV) are defined in :mod:`.softooth_metrics`.

**3DTeethSeg'22 metrics**, computed as the challenge's public evaluation code does, read in
``github.com/abenhamadou/3DTeethSeg22_challenge``, file ``evaluation/evaluation.py`` (commit
d03b8c644239980bbc779c6cb58b42fb02204916; functions ``calculate_metrics``,
``calculate_jaw_TSA/TLA/TIR`` and the ``__main__`` block):

1. A predicted instance whose vertices carry more than one label becomes gingiva (label and
   instance 0) before anything else. Ground-truth instances must carry one label.
2. Centroids are plain vertex means (on the same mesh for prediction and ground truth). The
   "tooth size" of a ground-truth tooth is the per-axis vector
   ``size_k = sqrt(sum_i (p_ik - c_k)^2)`` summed (not averaged) over its vertices.
3. Ground-truth and predicted instances are paired one-to-one by the Hungarian algorithm
   (``scipy.optimize.linear_sum_assignment``) on centroid distances, instances in ascending id
   order.
4. ``TLA`` of a jaw: mean over ground-truth teeth of ``|| (c_gt - c_pred) / size ||`` (division
   per axis) for a paired tooth, ``5 * ||size||`` for an unpaired one. The challenge reports
   ``exp(-TLA)``.
5. ``TSA`` of a jaw: ``sklearn.metrics.f1_score(gt != 0, pred != 0, average="micro")`` on
   instances, which for single-label data equals the fraction of vertices whose tooth/gingiva
   status is right.
6. ``TIR`` of a jaw: fraction of *pairs* whose normalised distance (as in TLA) is < 0.5 and
   whose labels are equal.
7. Over a test set each of ``TSA``, ``exp(-TLA)``, ``TIR`` is averaged over jaws and the score
   is the mean of the three (:func:`aggregate_challenge`). The per-jaw ``score`` of
   :func:`evaluate_ios` is the same mean for one jaw. As in the challenge's ``metrics.json``,
   the key ``TLA`` holds ``exp(-TLA)``; the raw mean distance is ``TLA_distance``.

Where that code differs from its README ("Evaluation / Metrics") and the paper's wording:

- TSA: described as "the average F1-score over all instances of teeth point clouds"; the code
  ignores instances and labels and scores the binary tooth-vs-gingiva mask with micro-F1
  (= vertex accuracy, gingiva included).
- TLA normalisation: described as "normalized by the size of the corresponding GT tooth"; the
  code divides per axis by a size vector that grows with the square root of the tooth's
  vertex count, so normalised distances are small and depend on mesh resolution.
- TLA matching: described as "the closest localized teeth centroid"; the code uses a
  one-to-one assignment, so two ground-truth teeth never share a prediction.
- TLA penalty: described as "a nominal penalty of 5 per GT tooth"; the code adds
  ``5 * ||size||`` (in the size vector's units, typically tens to hundreds) for every
  unpaired ground-truth tooth, so one missed tooth drives ``exp(-TLA)`` to about 0. A scan
  with no output at all scores 0 on all three metrics.
- TLA averaging: described as a mean over "all gathered GT teeth in the two testing sets";
  the code averages per jaw and then averages ``exp(-TLA)`` over jaws.
- TIR: described as relative to "all GT teeth"; the code divides by the number of pairs
  (``min(#GT, #predicted)``), so a missed tooth does not lower TIR when the other teeth are
  right. The 0.5 threshold ("half of the GT tooth size") is applied to the normalised distance
  of point 4; with a few thousand vertices per tooth it accepts centroid errors of tens of mm,
  so on real scans TIR is in effect the label accuracy of the pairs.
- The README does not say that multi-label predicted instances become gingiva (point 1).

Cases where the challenge code fails and what this module does instead: no predicted tooth
(``cdist`` raises on an empty list, aborting the evaluation): every ground-truth tooth is
unpaired (TLA penalty as above) and TIR = 0, which is what the code's own error handlers would
give per metric. No ground-truth tooth (``cdist`` raises too): TLA, TIR and score are NaN.
An exception inside the code's TLA computation yields ``exp(-0) = 1``; this module has no such
path.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from .. import fdi
from ..errors import InvalidInputError
from .dice import dice_per_tooth, false_positive_teeth
from .softooth_metrics import softooth_metrics

logger = logging.getLogger(__name__)

#: a matched tooth is identified when its normalised centroid distance is below this
TIR_THRESHOLD = 0.5
#: normalised-distance penalty factor for an unmatched ground-truth tooth
TLA_MISS_FACTOR = 5.0


def _as_int(values, name: str, n: int | None) -> np.ndarray:
    arr = np.asarray(values).astype(np.int64).ravel()
    if n is not None and len(arr) != n:
        raise InvalidInputError(f"{name} has {len(arr)} entries but the mesh has {n} vertices")
    return arr


def challenge_metrics(pred_labels, pred_instances, gt_labels, gt_instances, vertices) -> dict:
    """TSA, TLA, TIR and score of one jaw, as the 3DTeethSeg'22 evaluation computes them.

    Args:
        pred_labels, pred_instances, gt_labels, gt_instances: (N,) integer arrays per vertex
            (FDI labels, instance ids; 0 = gingiva).
        vertices: (N, 3) float vertex positions of the scan, in file order.

    Returns:
        ``{"TSA", "TLA" (= exp(-TLA_distance)), "TLA_distance", "TIR", "score", "n_gt_teeth",
        "n_pred_teeth", "pairs": [(gt_instance, pred_instance, normalised distance)]}``.
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    n = len(vertices)
    gt_lab, gt_ins = _as_int(gt_labels, "gt_labels", n), _as_int(gt_instances, "gt_instances", n)
    pr_lab, pr_ins = _as_int(pred_labels, "pred_labels", n).copy(), _as_int(pred_instances, "pred_instances", n).copy()

    preds = {}  # instance -> (label, centroid)
    for inst in np.unique(pr_ins[pr_ins != 0]):
        mask = pr_ins == inst
        labs = np.unique(pr_lab[mask])
        if len(labs) == 1:
            preds[int(inst)] = (int(labs[0]), vertices[mask].mean(axis=0))
        else:
            pr_lab[mask], pr_ins[mask] = 0, 0
    gts = {}  # instance -> (label, centroid, size vector)
    for inst in np.unique(gt_ins[gt_ins != 0]):
        mask = gt_ins == inst
        labs = np.unique(gt_lab[mask])
        if len(labs) != 1:
            raise InvalidInputError(f"ground-truth instance {int(inst)} carries labels {labs.tolist()}; "
                                    "every ground-truth tooth instance needs exactly one FDI label")
        pts = vertices[mask]
        centroid = pts.mean(axis=0)
        gts[int(inst)] = (int(labs[0]), centroid, np.sqrt(((centroid - pts) ** 2).sum(axis=0)))

    tsa = float(np.mean((gt_ins != 0) == (pr_ins != 0))) if n else float("nan")
    out = {"TSA": tsa, "n_gt_teeth": len(gts), "n_pred_teeth": len(preds), "pairs": []}
    if not gts:
        logger.warning("no ground-truth tooth: TLA, TIR and the challenge score are undefined")
        return {**out, "TLA": float("nan"), "TLA_distance": float("nan"), "TIR": float("nan"),
                "score": float("nan")}
    gt_ids, pred_ids = list(gts), list(preds)
    pairs = {}
    if preds:
        cost = cdist(np.array([gts[i][1] for i in gt_ids]), np.array([preds[j][1] for j in pred_ids]))
        rows, cols = linear_sum_assignment(cost)
        pairs = {gt_ids[r]: pred_ids[c] for r, c in zip(rows, cols)}
    total, identified = 0.0, 0
    with np.errstate(divide="ignore", invalid="ignore"):  # a one-vertex tooth has size 0, as upstream
        for g, (label, centroid, size) in gts.items():
            if g not in pairs:
                total += TLA_MISS_FACTOR * float(np.linalg.norm(size))
                continue
            p_label, p_centroid = preds[pairs[g]]
            dist = float(np.linalg.norm((centroid - p_centroid) / size))
            total += dist
            identified += int(dist < TIR_THRESHOLD and label == p_label)
            out["pairs"].append((g, pairs[g], dist))
    tla = total / len(gts)
    tir = identified / len(pairs) if pairs else 0.0
    exp_tla = float(np.exp(-tla))
    return {**out, "TLA": exp_tla, "TLA_distance": tla, "TIR": tir, "score": (tsa + exp_tla + tir) / 3.0}


def aggregate_challenge(per_jaw: list[dict]) -> dict:
    """Test-set metrics from :func:`challenge_metrics` of every jaw: mean TSA, mean exp(-TLA),
    mean TIR and their mean, the challenge's final score. A jaw whose prediction is missing
    should be passed as ``{"TSA": 0, "TLA": 0, "TIR": 0}``, as the challenge counts it."""
    if not per_jaw:
        raise InvalidInputError("no jaw to aggregate; evaluate at least one scan")
    means = {k: float(np.mean([float(m[k]) for m in per_jaw])) for k in ("TSA", "TLA", "TIR")}
    return {**means, "score": (means["TSA"] + means["TLA"] + means["TIR"]) / 3.0, "n_jaws": len(per_jaw)}


def _jaw_of_labels(gt: np.ndarray, pred: np.ndarray) -> str:
    for arr in (gt, pred):
        arches = [fdi.jaw_of(t) for t in fdi.present_teeth(np.unique(arr))]
        if arches:
            if arr is gt and len(set(arches)) > 1:
                raise InvalidInputError("the ground truth holds teeth of both jaws; evaluate one jaw at a time")
            return max(set(arches), key=arches.count)
    return "upper"  # no tooth anywhere: only the gingiva class is scored, either scheme does


def semantic_metrics(pred_labels, gt_labels, jaw: str) -> dict:
    """OA, mIoU and per-class IoU over the 17 classes of ``ios_<jaw>`` (see module docstring).

    Returns:
        ``{"OA": float, "mIoU": float, "iou_per_class": {label value: IoU or NaN},
        "class_counts": {"correct", "total", "inter_<k>", "union_<k>"}}``: the counts behind
        them, ``k`` the class index (0 gingiva, 1-8 the patient's right quadrant, 9-16 the
        left), which :func:`pool_semantic` adds up over a set of jaws.
    """
    pred = np.asarray(pred_labels).astype(np.int64).ravel()
    gt = np.asarray(gt_labels).astype(np.int64).ravel()
    if pred.shape != gt.shape:
        raise InvalidInputError(f"prediction has {pred.size} labels, ground truth {gt.size}")
    classes = fdi.class_index_to_fdi(np.arange(fdi.num_classes(f"ios_{jaw}")), f"ios_{jaw}")
    ious = {}
    counts = {"correct": float(np.sum(pred == gt)), "total": float(gt.size)}
    for k, c in enumerate(classes.tolist()):
        p, g = pred == c, gt == c
        union, inter = int((p | g).sum()), int((p & g).sum())
        ious[c] = float(inter / union) if union else float("nan")
        counts[f"inter_{k}"], counts[f"union_{k}"] = float(inter), float(union)
    valid = [v for v in ious.values() if not np.isnan(v)]
    return {"OA": float(np.mean(pred == gt)) if gt.size else float("nan"),
            "mIoU": float(np.mean(valid)) if valid else float("nan"), "iou_per_class": ious,
            "class_counts": counts}


#: SOFTooth's Table I columns: class index -> name (T1..T8 one quadrant from the central incisor,
#: T9..T16 the other; both jaws pool into the same 17 classes, as in the 3DTeethSeg'22 formulation)
POOLED_CLASS_NAMES = {0: "BG", **{k: f"T{k}" for k in range(1, 17)}}


def pool_semantic(per_jaw_counts: list[dict], pair_counts: list[dict] | None = None) -> dict:
    """SOFTooth's set-level figures from per-jaw counts (:func:`semantic_metrics`'s
    ``class_counts``, :func:`~.softooth_metrics.pair_confusion`'s ``pair_counts``).

    Pooled, not averaged per jaw, as the paper's tables are: ``OA`` = correct vertices over all
    vertices; the IoU of each class = its intersections over its unions summed over the jaws
    (``BG``, ``T1`` .. ``T16``: T1-T8 the patient's right quadrant, central incisor to third
    molar, T9-T16 the left; upper and lower jaws pool into the same class), NaN for a class
    that no jaw has; ``mIoU`` their mean (Table I); ``T8`` and ``T16`` the third molars' IoU
    (Table I; Table II's "3rd molars IoU" is their mean, ``third_molar_IoU``); each Table III
    pair rate = confused teeth over counted teeth of all jaws.
    """
    total = {}
    for counts in per_jaw_counts:
        for key, value in counts.items():
            total[key] = total.get(key, 0.0) + float(value)
    out = {"OA": total["correct"] / total["total"] if total.get("total") else float("nan")}
    ious = {}
    for k, name in POOLED_CLASS_NAMES.items():
        union = total.get(f"union_{k}", 0.0)
        ious[name] = total.get(f"inter_{k}", 0.0) / union if union else float("nan")
    valid = [v for v in ious.values() if not np.isnan(v)]
    out["mIoU"] = float(np.mean(valid)) if valid else float("nan")
    out.update(ious)
    molars = [ious[n] for n in ("T8", "T16") if not np.isnan(ious[n])]
    out["third_molar_IoU"] = float(np.mean(molars)) if molars else float("nan")
    for name in ("pair_2nd3rd", "pair_pre_mo", "pair_cen_lat"):
        teeth = sum(c[name]["teeth"] for c in pair_counts or [])
        confused = sum(c[name]["confused"] for c in pair_counts or [])
        out[name] = confused / teeth if teeth else float("nan")
    return out


def evaluate_ios(pred_labels, pred_instances, gt_labels, gt_instances, vertices, jaw: str | None = None) -> dict:
    """All metrics of one jaw scan, on the vertices as stored in the mesh file.

    Args:
        pred_labels, gt_labels: (N,) FDI label per vertex, 0 = gingiva.
        pred_instances: (N,) instance ids, or None to use one instance per predicted FDI label.
        gt_instances: (N,) ground-truth instance ids.
        vertices: (N, 3) vertex positions (mm).
        jaw: "upper"/"lower"; default: the jaw of the ground-truth teeth.

    Returns:
        dict with ``TSA``, ``TLA`` (= exp(-TLA_distance)), ``TLA_distance``, ``TIR``, ``score``
        (3DTeethSeg'22), ``OA``, ``mIoU``, ``iou_per_class``, ``per_tooth``
        ({fdi: {"dice", "iou"}}), ``mean_dice``, ``per_group`` ({group name: {"dice", "iou",
        "n_teeth"}}), ``false_positive_teeth``, ``jaw``, ``n_gt_teeth``, ``n_pred_teeth``, ``pairs``,
        and SOFTooth's ``third_molar_IoU``, ``pair_2nd3rd``, ``pair_pre_mo``, ``pair_cen_lat``
        (Table III confusion rates), ``pair_counts``, ``centre_error`` (Table IV) and
        ``centre_error_per_tooth`` (:mod:`.softooth_metrics`).
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    n = len(vertices)
    gt = _as_int(gt_labels, "gt_labels", n)
    pred = _as_int(pred_labels, "pred_labels", n)
    if pred_instances is None:
        pred_instances = np.where(pred > 0, pred, 0)
    jaw = jaw or _jaw_of_labels(gt, pred)
    if jaw not in fdi.JAWS:
        raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r})")
    out = challenge_metrics(pred, pred_instances, gt, gt_instances, vertices)
    out.update(semantic_metrics(pred, gt, jaw), jaw=jaw)
    dice = dice_per_tooth(pred, gt)
    out["per_tooth"] = {t: {"dice": d, "iou": d / (2.0 - d)} for t, d in dice.items()}
    out["mean_dice"] = float(np.mean(list(dice.values()))) if dice else float("nan")
    groups: dict[str, list] = {}
    for t, d in dice.items():
        groups.setdefault(fdi.tooth(t).group_name, []).append(d)
    out["per_group"] = {name: {"dice": float(np.mean(ds)), "iou": float(np.mean([d / (2.0 - d) for d in ds])),
                               "n_teeth": len(ds)}
                        for name in fdi.TOOTH_GROUPS if (ds := groups.get(name))}
    out["false_positive_teeth"] = false_positive_teeth(pred, gt)
    out.update(softooth_metrics(pred, gt, vertices, jaw))
    return out
