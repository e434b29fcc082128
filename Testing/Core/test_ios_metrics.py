"""IOS metrics on small hand-made scans whose answers are worked out in the comments.

The scan: two "teeth" of 8 vertices each, the corners of 2 mm cubes centred at (0, 0, 0)
(instance 1, FDI 11) and (10, 0, 0) (instance 2, FDI 12), and 4 gingiva vertices; 20 vertices.
The challenge's tooth size of either tooth is the per-axis vector
size_k = sqrt(sum over 8 corners of 1^2) = sqrt(8) = 2.8284 on every axis, ||size|| = sqrt(24).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.evaluation.ios_metrics import aggregate_challenge, challenge_metrics, evaluate_ios

CUBE = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
VERTICES = np.r_[CUBE, CUBE + [10, 0, 0], [[5, 10, 0], [5, -10, 0], [-5, 10, 0], [15, -10, 0]]]
GT_LABELS = np.r_[[11] * 8, [12] * 8, [0] * 4]
GT_INSTANCES = np.r_[[1] * 8, [2] * 8, [0] * 4]
GINGIVA_A = 16  # index of the gingiva vertex (5, 10, 0)


def test_perfect_prediction_scores_one():
    """A prediction equal to the ground truth scores 1 on every metric."""
    m = evaluate_ios(GT_LABELS, GT_INSTANCES, GT_LABELS, GT_INSTANCES, VERTICES)
    for key in ("TSA", "TLA", "TIR", "score", "OA", "mIoU"):
        assert m[key] == pytest.approx(1.0), key
    assert m["TLA_distance"] == 0.0
    assert m["per_tooth"] == {11: {"dice": 1.0, "iou": 1.0}, 12: {"dice": 1.0, "iou": 1.0}}


@pytest.fixture
def shifted():
    """Tooth 11 also grabs gingiva vertex (5, 10, 0); tooth 12 is found but called 13."""
    labels, instances = GT_LABELS.copy(), GT_INSTANCES.copy()
    labels[GINGIVA_A], instances[GINGIVA_A] = 11, 1
    labels[8:16] = 13
    return labels, instances


def test_challenge_metrics_by_hand(shifted):
    """TSA, TLA, TIR and score match the hand computation."""
    m = evaluate_ios(*shifted, GT_LABELS, GT_INSTANCES, VERTICES)
    # TSA: 1 of 20 vertices has the wrong tooth/gingiva status -> 19/20
    assert m["TSA"] == pytest.approx(0.95)
    # pred centroid of 11: (8 * (0,0,0) + (5,10,0)) / 9 = (5/9, 10/9, 0);
    # normalised distance = sqrt((5/9)^2 + (10/9)^2) / sqrt(8) = 1.242260 / 2.828427 = 0.439205;
    # tooth 12: distance 0. TLA = (0.439205 + 0) / 2 = 0.219603, exp(-TLA) = 0.802838
    assert m["TLA_distance"] == pytest.approx(0.219603, abs=1e-6)
    assert m["TLA"] == pytest.approx(0.802838, abs=1e-6)
    # TIR: 11 is within 0.5 with the right label, 12 has the wrong label -> 1/2
    assert m["TIR"] == pytest.approx(0.5)
    # score = (0.95 + 0.802838 + 0.5) / 3 = 0.750946
    assert m["score"] == pytest.approx(0.750946, abs=1e-6)


def test_overlap_metrics_by_hand(shifted):
    """OA, mIoU, per-tooth and per-group Dice/IoU match the hand computation."""
    m = evaluate_ios(*shifted, GT_LABELS, GT_INSTANCES, VERTICES)
    # OA: right labels on 8 (tooth 11) + 3 (gingiva) = 11 of 20
    assert m["OA"] == pytest.approx(0.55)
    # IoU gingiva 3/4, 11: 8/9, 12: 0/8 = 0, 13: 0/8 = 0 (predicted only); the other 13 classes
    # of the upper jaw are absent from both and left out: mIoU = (0.75 + 0.888889 + 0 + 0) / 4
    assert m["mIoU"] == pytest.approx((0.75 + 8 / 9) / 4)
    assert np.isnan(m["iou_per_class"][28])
    # Dice 11 = 2 * 8 / (9 + 8) = 16/17, IoU = 8/9; Dice 12 = 0
    assert m["per_tooth"][11] == {"dice": pytest.approx(16 / 17), "iou": pytest.approx(8 / 9)}
    assert m["per_tooth"][12]["dice"] == 0.0
    assert m["per_group"]["central incisor"]["dice"] == pytest.approx(16 / 17)
    assert m["per_group"]["lateral incisor"] == {"dice": 0.0, "iou": 0.0, "n_teeth": 1}
    assert m["false_positive_teeth"] == [13]
    assert m["jaw"] == "upper"


def test_missed_tooth_costs_tla_but_not_tir():
    """As in the challenge code, an unmatched GT tooth adds 5*||size|| to TLA and is left out of TIR."""
    labels, instances = GT_LABELS.copy(), GT_INSTANCES.copy()
    labels[8:16], instances[8:16] = 0, 0  # tooth 12 predicted as gingiva
    m = challenge_metrics(labels, instances, GT_LABELS, GT_INSTANCES, VERTICES)
    # TLA = (0 + 5 * sqrt(24)) / 2 = 12.247449; TIR = 1 identified / 1 pair; TSA = 12/20
    assert m["TLA_distance"] == pytest.approx(5 * math.sqrt(24) / 2)
    assert m["TLA"] == pytest.approx(math.exp(-12.247449), rel=1e-5)
    assert m["TIR"] == 1.0 and m["TSA"] == pytest.approx(0.6)
    assert m["score"] == pytest.approx((0.6 + math.exp(-12.247449) + 1.0) / 3, rel=1e-6)


def test_instance_with_two_labels_becomes_gingiva():
    """A predicted instance carrying two labels is scored as gingiva, as the challenge code does."""
    labels = GT_LABELS.copy()
    labels[0] = 21  # instance 1 now holds labels 11 and 21
    m = challenge_metrics(labels, GT_INSTANCES, GT_LABELS, GT_INSTANCES, VERTICES)
    # tooth 11's 8 vertices count as gingiva: TSA = 12/20; only tooth 12 is paired
    assert m["TSA"] == pytest.approx(0.6)
    assert m["n_pred_teeth"] == 1 and m["TIR"] == 1.0
    assert m["TLA_distance"] == pytest.approx(5 * math.sqrt(24) / 2)


def test_one_prediction_cannot_match_two_teeth():
    """Matching is one-to-one: a single predicted tooth pairs with the nearest GT tooth only."""
    labels = np.where(GT_LABELS == 11, 11, 0)
    instances = np.where(GT_LABELS == 11, 7, 0)
    m = challenge_metrics(labels, instances, GT_LABELS, GT_INSTANCES, VERTICES)
    assert [(g, p) for g, p, _ in m["pairs"]] == [(1, 7)]


def test_empty_prediction_and_empty_truth_do_not_crash():
    """No predicted tooth: every GT tooth is penalised, TIR 0. No GT tooth: TLA/TIR/score NaN."""
    zeros = np.zeros(len(VERTICES), int)
    m = challenge_metrics(zeros, zeros, GT_LABELS, GT_INSTANCES, VERTICES)
    # TLA = (5 sqrt(24) + 5 sqrt(24)) / 2 = 24.494897; TSA = 4/20
    assert m["TLA_distance"] == pytest.approx(5 * math.sqrt(24))
    assert m["TIR"] == 0.0 and m["TSA"] == pytest.approx(0.2)
    m = challenge_metrics(GT_LABELS, GT_INSTANCES, zeros, zeros, VERTICES)
    assert m["TSA"] == pytest.approx(0.2)
    assert np.isnan(m["TLA"]) and np.isnan(m["TIR"]) and np.isnan(m["score"])


def test_aggregate_is_mean_per_metric_then_mean_of_three(shifted):
    """The test-set score averages TSA, exp(-TLA), TIR over jaws, then the three means."""
    jaws = [challenge_metrics(*shifted, GT_LABELS, GT_INSTANCES, VERTICES),
            challenge_metrics(GT_LABELS, GT_INSTANCES, GT_LABELS, GT_INSTANCES, VERTICES)]
    agg = aggregate_challenge(jaws)
    # TSA (0.95 + 1)/2 = 0.975; TLA (0.802838 + 1)/2 = 0.901419; TIR (0.5 + 1)/2 = 0.75
    assert agg["TSA"] == pytest.approx(0.975)
    assert agg["TLA"] == pytest.approx(0.901419, abs=1e-6)
    assert agg["score"] == pytest.approx((0.975 + 0.901419 + 0.75) / 3, abs=1e-6)


def test_labels_without_instances_use_one_instance_per_tooth(shifted):
    """pred_instances=None numbers the predicted teeth by label and gives the same scores."""
    with_ids = evaluate_ios(*shifted, GT_LABELS, GT_INSTANCES, VERTICES)
    without = evaluate_ios(shifted[0], None, GT_LABELS, GT_INSTANCES, VERTICES)
    assert without["score"] == pytest.approx(with_ids["score"])


def test_bad_inputs_are_refused():
    """Wrong lengths, a GT instance with two labels, and GT of both jaws raise InvalidInputError."""
    with pytest.raises(InvalidInputError, match="has 19 entries but the mesh has 20 vertices"):
        evaluate_ios(GT_LABELS[:-1], None, GT_LABELS, GT_INSTANCES, VERTICES)
    mixed = GT_LABELS.copy()
    mixed[0] = 21
    with pytest.raises(InvalidInputError, match="ground-truth instance 1 carries labels"):
        evaluate_ios(GT_LABELS, GT_INSTANCES, mixed, GT_INSTANCES, VERTICES)
    both = np.where(GT_LABELS == 12, 41, GT_LABELS)
    with pytest.raises(InvalidInputError, match="both jaws"):
        evaluate_ios(both, GT_INSTANCES, both, GT_INSTANCES, VERTICES)
