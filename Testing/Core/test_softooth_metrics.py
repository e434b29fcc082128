"""SOFTooth's metrics (third-molar IoU, Table III confusion rates, Table IV centre error) by hand.

The scan (upper jaw): eight "teeth" of 4 vertices each, the corners (+-1, +-1, 0) of a square
around (x, 0, 0): 11 at x=0, 12 at 10, 14 at 20, 16 at 30, 17 at 40, 18 at 50, 21 at -10,
28 at -40; and 4 gingiva vertices (-60, -20, -5), (60, 20, 5), (0, +-10, 0) that make the
bounding box 120 x 40 x 10 mm, diagonal sqrt(16100) = 126.8858 mm.

The prediction: 11 and 21 are called 12; three of 14's four vertices are called 16 (the one
at offset (-1, -1) stays 14); 17's last two vertices (offset (+1, +-1)) are called 18; 18's
last vertex (offset (+1, +1)) is gingiva; 28 is called 27; everything else is right.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from ToothMCLCore.cli import main
from ToothMCLCore.evaluation.ios_metrics import evaluate_ios
from ToothMCLCore.evaluation.softooth_metrics import (
    assigned_labels,
    centre_error,
    pair_confusion,
    softooth_metrics,
    third_molar_iou,
)
from ToothMCLCore.io.teeth3ds import write_teeth3ds_json

SQUARE = np.array([[-1, -1, 0], [-1, 1, 0], [1, -1, 0], [1, 1, 0]], dtype=float)
TEETH_X = {11: 0, 12: 10, 14: 20, 16: 30, 17: 40, 18: 50, 21: -10, 28: -40}
VERTICES = np.vstack([SQUARE + [x, 0, 0] for x in TEETH_X.values()]
                     + [np.array([[-60, -20, -5], [60, 20, 5], [0, 10, 0], [0, -10, 0]], dtype=float)])
GT = np.r_[np.repeat(list(TEETH_X), 4), [0] * 4]
DIAGONAL = math.sqrt(120**2 + 40**2 + 10**2)


def _prediction():
    pred = GT.copy()
    pred[(GT == 11) | (GT == 21)] = 12
    pred[np.flatnonzero(GT == 14)[1:]] = 16
    pred[np.flatnonzero(GT == 17)[2:]] = 18
    pred[np.flatnonzero(GT == 18)[3]] = 0
    pred[GT == 28] = 27
    return pred


def test_third_molar_iou_by_hand():
    """18: 3 shared of 5 predicted + 4 true vertices -> 3/6; 28 never predicted -> 0; mean 0.25."""
    assert third_molar_iou(_prediction(), GT, "upper") == pytest.approx(0.25)
    assert third_molar_iou(GT, GT, "upper") == 1.0


def test_third_molar_iou_is_undefined_without_third_molars():
    """No third molar in prediction or ground truth: NaN, not a perfect score."""
    gt = np.where(np.isin(GT, (18, 28)), 0, GT)
    assert math.isnan(third_molar_iou(gt, gt, "upper"))


def test_each_ground_truth_tooth_is_assigned_its_majority_predicted_tooth():
    """Majority tooth label per ground-truth tooth; a 2-2 tie goes to the smaller number; all gingiva -> 0."""
    assigned = assigned_labels(_prediction(), GT)
    assert assigned == {11: 12, 12: 12, 14: 16, 16: 16, 17: 17, 18: 18, 21: 12, 28: 27}
    assert assigned_labels(np.zeros_like(GT), GT)[16] == 0


def test_pairwise_confusion_rates_by_hand():
    """cen_lat: 11->12 confused, 21->12 another quadrant -> 1/3; pre_mo: 14->16 -> 1/2; 2nd3rd: 28->27 -> 1/3."""
    rates = pair_confusion(_prediction(), GT)
    assert rates["pair_cen_lat"] == pytest.approx(1 / 3)
    assert rates["pair_pre_mo"] == pytest.approx(1 / 2)
    assert rates["pair_2nd3rd"] == pytest.approx(1 / 3)
    assert rates["pair_counts"]["pair_pre_mo"] == {"teeth": 2, "confused": 1}


def test_confusion_within_a_kind_or_a_missed_tooth_is_no_pair_confusion():
    """14 called 15 (both premolars) and 17 left as gingiva are not confusions; no teeth of a pair -> NaN."""
    pred = GT.copy()
    pred[GT == 14] = 15
    pred[GT == 17] = 0
    rates = pair_confusion(pred, GT)
    assert rates["pair_pre_mo"] == 0.0 and rates["pair_2nd3rd"] == 0.0
    assert math.isnan(pair_confusion(GT, np.where(np.isin(GT, (11, 12, 21)), 0, GT))["pair_cen_lat"])


def test_centre_error_by_hand():
    """L1 centre distances over the diagonal, for labels in both: 12, 14, 16, 17, 18."""
    err = centre_error(_prediction(), GT, VERTICES)
    # 12: predicted on 11, 12, 21 -> centre (0, 0, 0), true (10, 0, 0): L1 = 10
    # 14: one vertex (19, -1, 0) vs (20, 0, 0): 1 + 1 = 2
    # 16: 14's (19, 1), (21, -1), (21, 1) and 16's four: (181/7, 1/7) vs (30, 0): 29/7 + 1/7 = 30/7
    # 17: (39, 0) vs (40, 0): 1;  18: (41, +-1) and (49, +-1), (51, -1) -> (46.2, -0.2) vs (50, 0): 4
    expected = {12: 10, 14: 2, 16: 30 / 7, 17: 1, 18: 4}
    assert err["centre_error_per_tooth"] == pytest.approx({t: d / DIAGONAL for t, d in expected.items()})
    assert err["centre_error"] == pytest.approx(np.mean(list(expected.values())) / DIAGONAL)  # 0.033551
    assert centre_error(GT, GT, VERTICES)["centre_error"] == 0.0


def test_evaluate_ios_reports_the_softooth_metrics():
    """The single-scan metrics carry the new keys next to the existing ones."""
    m = evaluate_ios(_prediction(), None, GT, np.where(GT > 0, GT, 0), VERTICES, jaw="upper")
    expected = softooth_metrics(_prediction(), GT, VERTICES, "upper")
    for key in ("third_molar_IoU", "pair_2nd3rd", "pair_pre_mo", "pair_cen_lat", "centre_error"):
        assert m[key] == pytest.approx(expected[key]), key
    assert {"TSA", "OA", "mIoU", "per_tooth"} <= set(m)


def test_folder_report_has_the_softooth_metrics_per_case_and_in_percent(tmp_path, capsys):
    """evaluate-ios on folders: per_case.csv holds the fractions, summary.md the means in %."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    lines = [f"v {x:g} {y:g} {z:g}" for x, y, z in VERTICES]
    lines += [f"f {k + a} {k + b} {k + c}" for k in range(1, len(VERTICES), 4) for a, b, c in ((0, 1, 2), (1, 3, 2))]
    (gt_dir / "P1_upper.obj").write_text("\n".join(lines) + "\n")
    instances = np.where(GT > 0, GT, 0)
    write_teeth3ds_json(gt_dir / "P1_upper.json", GT, instances, "upper")
    write_teeth3ds_json(pred_dir / "P1_upper.json", _prediction(), np.where(_prediction() > 0, _prediction(), 0),
                        "upper")
    report = tmp_path / "report"
    assert main(["evaluate-ios", str(pred_dir), str(gt_dir), "-o", str(report), "-q"]) == 0
    with open(report / "per_case.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["pair_pre_mo"]) == pytest.approx(0.5)
    assert float(row["third_molar_IoU"]) == pytest.approx(0.25)
    assert float(row["centre_error"]) == pytest.approx(0.033551, abs=1e-6)
    summary = (report / "summary.md").read_text()
    line = next(x for x in summary.splitlines() if x.startswith("| confusion premolars"))
    assert "50.00" in line and "(%)" in line
    assert "## SOFTooth protocol: pooled over all jaws (%)" in summary
    header = next(x for x in summary.splitlines() if x.startswith("| method | OA | mIoU | BG | T1 |"))
    assert header.rstrip().endswith("T15 | T16 |")
    capsys.readouterr()
    single = ["evaluate-ios", str(pred_dir / "P1_upper.json"), str(gt_dir / "P1_upper.json"),
              "--mesh", str(gt_dir / "P1_upper.obj")]
    assert main(single) == 0
    assert json.loads(capsys.readouterr().out)["pair_counts"]["pair_cen_lat"] == {"teeth": 3, "confused": 1}


def test_set_level_figures_pool_the_jaws_counts_as_the_papers_tables_do():
    """Two jaws: T1 (11) IoU 2/4 in one, 0/2 in the other: pooled 2/6 = 33.3 %, not the per-jaw mean
    25 %; OA pools vertices (8 of 12 right); pair rates pool teeth (1 confused of 4 =
    25 %, not the mean 50 %); T8/T16 and BG are columns of their own."""
    from ToothMCLCore.evaluation.ios_metrics import pool_semantic, semantic_metrics

    gt_a = np.array([0] * 6 + [11] * 4)
    pred_a = np.array([0] * 6 + [11, 11, 0, 0])
    gt_b, pred_b = np.array([11, 11]), np.array([12, 12])
    counts = [semantic_metrics(pred_a, gt_a, "upper")["class_counts"],
              semantic_metrics(pred_b, gt_b, "upper")["class_counts"]]
    pairs = [{"pair_2nd3rd": {"teeth": 0, "confused": 0}, "pair_pre_mo": {"teeth": 2, "confused": 0},
              "pair_cen_lat": {"teeth": 3, "confused": 0}},
             {"pair_2nd3rd": {"teeth": 0, "confused": 0}, "pair_pre_mo": {"teeth": 0, "confused": 0},
              "pair_cen_lat": {"teeth": 1, "confused": 1}}]
    pooled = pool_semantic(counts, pairs)
    assert pooled["T1"] == pytest.approx(2 / 6)
    assert pooled["OA"] == pytest.approx(8 / 12)
    assert pooled["BG"] == pytest.approx(6 / 8)      # gingiva: 6 right, 2 predicted where it is not
    assert pooled["T2"] == 0.0                       # 12 predicted, never true
    assert math.isnan(pooled["T8"]) and math.isnan(pooled["T16"]) and math.isnan(pooled["third_molar_IoU"])
    assert pooled["mIoU"] == pytest.approx(np.mean([6 / 8, 2 / 6, 0.0]))
    assert pooled["pair_cen_lat"] == pytest.approx(0.25) and pooled["pair_pre_mo"] == 0.0
    assert math.isnan(pooled["pair_2nd3rd"])
