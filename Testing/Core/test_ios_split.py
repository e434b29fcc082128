"""Scoring a predictor on labelled scans: mirrored and renumbered teeth, per-jaw and per-tooth summaries."""

from __future__ import annotations

import numpy as np

from ToothMCLCore import fdi
from ToothMCLCore.evaluation.ios_split import format_summary, score_scan, summarize
from ToothMCLCore.io.teeth3ds import instances_from_labels


def _jaw():
    """A 60-vertex row of teeth 11, 21, 12, 22 (10 vertices each) and 20 gingiva vertices."""
    truth = np.repeat([11, 21, 12, 22, 0, 0], 10)
    vertices = np.stack([np.arange(60.0), np.zeros(60), np.zeros(60)], axis=1)
    return truth, vertices


def test_mirror_swaps_the_quadrant_and_keeps_the_position():
    """11 <-> 21, 36 <-> 46, 55 <-> 65, 73 <-> 83."""
    assert [fdi.mirror(t) for t in (11, 21, 36, 46, 55, 73)] == [21, 11, 46, 36, 65, 83]


def test_given_left_and_right_swapped_the_score_names_the_mirrored_teeth():
    """Numbering 11 as 21 and 21 as 11 counts both as mirrored (and renumbered); 12 as 13 only renumbered."""
    truth, vertices = _jaw()
    pred = truth.copy()
    pred[truth == 11], pred[truth == 21], pred[truth == 12] = 21, 11, 13
    s = score_scan("p1_upper", "upper", pred, instances_from_labels(pred), truth, instances_from_labels(truth), vertices)
    assert s.mirrored == [11, 21] and s.renumbered == [11, 12, 21]
    assert s.per_tooth[22] == 1.0 and s.per_tooth[11] == 0.0
    assert s.tooth_vs_gingiva == 1.0 and s.dice == 0.25


def test_summary_averages_scans_per_jaw_and_dice_per_tooth():
    """Two upper scans (Dice 1 and 0.25) and a lower one: per-jaw means, mirrored totals, per-tooth means,
    and each scan's own figures."""
    truth, vertices = _jaw()
    swapped = truth.copy()
    swapped[truth == 11], swapped[truth == 21], swapped[truth == 12] = 21, 11, 13
    lower_truth = np.where(truth > 0, truth + 20, 0)
    inst = instances_from_labels
    scores = [score_scan("a", "upper", truth, inst(truth), truth, inst(truth), vertices),
              score_scan("b", "upper", swapped, inst(swapped), truth, inst(truth), vertices),
              score_scan("c", "lower", lower_truth, inst(lower_truth), lower_truth, inst(lower_truth), vertices)]
    summary = summarize(scores)
    assert summary["upper"]["scans"] == 2 and summary["upper"]["mean_dice"] == 0.625
    assert summary["upper"]["mirrored_teeth"] == 2 and summary["lower"]["mirrored_teeth"] == 0
    assert summary["all"]["scans"] == 3
    assert summary["per_tooth"]["11"] == {"dice": 0.5, "scans": 2} and summary["per_tooth"]["31"]["dice"] == 1.0
    # each scan's record names what went wrong with it, TLA included (a lost tooth shows there)
    assert summary["per_scan"]["b"]["mirrored"] == [11, 21] and summary["per_scan"]["b"]["dice"] == 0.25
    np.testing.assert_array_equal([summary["per_scan"][s.case_id]["exp_neg_TLA"] for s in scores],
                                  [round(s.TLA, 4) for s in scores])  # NaN on this 1-D toy jaw
    text = format_summary(summary, "title")
    assert text.splitlines()[0] == "title"
    assert any(line.startswith("upper") and " 0.625 " in line for line in text.splitlines())
    assert "quadrant 1: 11:0.50 12:0.50" in text
