"""Numbering along the arch (ToothMCLCore.postprocessing.arch_order) on arches of known teeth.

Each arch here is a U-shaped band of points in the canonical frame, the teeth laid along it with
the textbook widths times a scale; the "network" probabilities are made up per test. The real
scans' figures are in test_real_ios.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.postprocessing.arch_order import (
    CROWN_WIDTH_MM,
    MIN_ARCH_VERTICES,
    WHOLE_ARCH_TURN_DEG,
    arch_coordinate,
    arch_turn,
    fit_arch,
    number_along_arch,
)


def _arch(jaw, present, scale=1.05, seed=0, per_mm=12):
    """(points (N, 3), normals (N, 3), truth FDI (N,)) of a jaw whose teeth ``present`` lie along a
    U-shaped parabola (50 mm between the molars, 40 mm deep, as a real arch), each in a band 8 mm
    across, their normals those of convex crowns (facing back along the arch at a tooth's start,
    forward at its end, with noise); a tooth of the jaw that is not present leaves its space empty."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(29, -29, 4001)
    curve = np.stack([xs, 40 * (1 - (xs / 25) ** 2)], axis=1)
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    teeth = [t for t in fdi.teeth_of_jaw(jaw) if t % 10 != 8 or t in present]
    widths = [CROWN_WIDTH_MM[jaw][t % 10 - 1] * scale for t in teeth]
    start = arc[-1] / 2 - sum(widths[:teeth.index(11 if jaw == "upper" else 41) + 1])
    points, normals, truth = [], [], []
    for tooth, width in zip(teeth, widths):
        if tooth in present:
            n = int(width * per_mm * 8)
            s = rng.uniform(start + 0.2, start + width - 0.2, n)
            xy = np.stack([np.interp(s, arc, curve[:, 0]), np.interp(s, arc, curve[:, 1])], axis=1)
            normal = np.stack([80 * xy[:, 0] / 625, np.ones(n)], 1)
            normal /= np.linalg.norm(normal, axis=1, keepdims=True)
            xy = xy + normal * rng.uniform(-4, 4, (n, 1))
            points.append(np.column_stack([xy, rng.uniform(0, 6, n)]))
            tangent = np.stack([-np.ones(n), 80 * xy[:, 0] / 625], 1)
            tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
            along = np.clip(1.4 * ((s - start) / width - 0.5) + rng.normal(0, 0.2, n), -0.9, 0.9)
            normals.append(np.column_stack([along[:, None] * tangent, np.sqrt(1 - along ** 2)]))
            truth.append(np.full(n, tooth))
        start += width
    return np.concatenate(points), np.concatenate(normals), np.concatenate(truth)


def _probs(jaw, numbers, sure=0.7, seed=1):
    """(N, 17) probabilities giving each point its number in ``numbers`` with probability ``sure``."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.0, 1.0, (len(numbers), 17))
    probs[:, 0] = 0.0
    probs /= probs.sum(axis=1, keepdims=True) / (1 - sure)
    probs[np.arange(len(numbers)), fdi.fdi_to_class_index(np.asarray(numbers), f"ios_{jaw}")] += sure
    return probs


def _numbers(probs, jaw):
    return fdi.class_index_to_fdi(probs.argmax(axis=1), f"ios_{jaw}")


def _misnumbered(numbers, truth):
    """The teeth of ``truth`` whose points mostly carry another number."""
    wrong = []
    for tooth in np.unique(truth):
        values, counts = np.unique(numbers[truth == tooth], return_counts=True)
        if values[counts.argmax()] != tooth:
            wrong.append(int(tooth))
    return wrong


FULL = {"upper": [t for t in fdi.teeth_of_jaw("upper") if t % 10 != 8],
        "lower": [t for t in fdi.teeth_of_jaw("lower") if t % 10 != 8]}


@pytest.mark.parametrize("jaw", ["upper", "lower"])
def test_a_run_of_teeth_numbered_one_off_gets_its_own_numbers_back(jaw):
    """The network numbers four neighbours one position off (12-15 as 13-16, the real scans' most
    common error): along the arch each tooth's width and place give the right numbers back (where
    each boundary falls exactly is left to the surface walk that follows)."""
    points, normals, truth = _arch(jaw, FULL[jaw])
    quadrant = 10 if jaw == "upper" else 40
    shifted = np.where((truth > quadrant + 1) & (truth < quadrant + 6), truth + 1, truth)
    probs = _probs(jaw, shifted)
    assert len(_misnumbered(_numbers(probs, jaw), truth)) == 4
    fixed = _numbers(number_along_arch(probs, points, np.ones(len(points), bool), jaw, normals), jaw)
    assert _misnumbered(fixed, truth) == []
    assert np.mean(fixed == truth) >= 0.8


def test_the_fit_finds_every_tooth_in_order_and_the_jaws_scale():
    """A full lower arch of teeth 5 % wider than the textbook: 14 intervals in arch order, no
    overlaps, scale 1.05."""
    points, _, truth = _arch("lower", FULL["lower"], scale=1.05)
    arc = arch_coordinate(points, np.ones(len(points), bool))
    probs = _probs("lower", truth)
    cols = fdi.fdi_to_class_index(np.asarray(fdi.teeth_of_jaw("lower")), "ios_lower")
    fit = fit_arch(arc, np.log(probs[:, cols] / probs[:, cols].sum(1, keepdims=True)), "lower")
    assert list(fit.intervals) == FULL["lower"]
    spans = list(fit.intervals.values())
    assert all(a < b <= c for (a, b), (c, _) in itertools.pairwise(spans))
    assert fit.scale == pytest.approx(1.05, abs=0.051)


def test_arc_length_runs_from_the_patients_right_to_the_left():
    """Right molars (x > 0 in the canonical frame) come first, left molars last, as teeth_of_jaw."""
    points, _, truth = _arch("upper", FULL["upper"])
    arc = arch_coordinate(points, np.ones(len(points), bool))
    medians = [np.median(arc[truth == t]) for t in FULL["upper"]]
    assert medians == sorted(medians)


def test_an_open_extraction_space_is_a_gap_not_a_shift():
    """With 14 extracted and its space left open, 15-17 keep their numbers and nobody is called 14."""
    present = [t for t in FULL["upper"] if t != 14]
    points, normals, truth = _arch("upper", present)
    probs = _probs("upper", truth, sure=0.4)
    fixed = _numbers(number_along_arch(probs, points, np.ones(len(points), bool), "upper", normals), "upper")
    assert 14 not in set(fixed)
    assert _misnumbered(fixed, truth) == [] and np.mean(fixed == truth) >= 0.97


def test_a_third_molar_is_numbered_8_without_moving_the_others():
    """An erupted 48 is numbered 48 and 41-47 keep theirs (the network sure of nothing more than 40 %)."""
    points, normals, truth = _arch("lower", FULL["lower"] + [48])
    fixed = _numbers(number_along_arch(_probs("lower", truth, sure=0.4), points, np.ones(len(points), bool),
                                       "lower", normals), "lower")
    assert np.mean(fixed[truth == 48] == 48) >= 0.9
    assert _misnumbered(fixed, truth) == [] and np.mean(fixed == truth) >= 0.97


def test_erupted_third_molars_the_network_calls_7s_are_numbered_8_on_a_whole_arch():
    """Both 8s erupted, and the network (which saw two 8s in training) calls the right side's
    15-18 14-17 with confidence, as it does on the demo's phantom: on a whole arch the order and
    the widths outweigh it, and every tooth gets its own number back."""
    present = FULL["upper"] + [18, 28]
    points, normals, truth = _arch("upper", present)
    called = np.where((truth >= 15) & (truth <= 18), truth - 1, truth)
    probs = _probs("upper", called, sure=0.8)
    assert len(_misnumbered(_numbers(probs, "upper"), truth)) == 4
    fixed = _numbers(number_along_arch(probs, points, np.ones(len(points), bool), "upper", normals), "upper")
    assert _misnumbered(fixed, truth) == [] and np.mean(fixed == truth) >= 0.95


def test_a_whole_arch_turns_like_a_u_and_one_side_of_it_half_as_much():
    """The centre line of a whole arch turns by more than WHOLE_ARCH_TURN_DEG (the network then
    counts for less), that of one quadrant by less."""
    points, _, truth = _arch("lower", FULL["lower"])
    assert arch_turn(points, np.ones(len(points), bool)) > WHOLE_ARCH_TURN_DEG + 15
    quadrant = truth > 40
    assert arch_turn(points[quadrant], np.ones(quadrant.sum(), bool)) < WHOLE_ARCH_TURN_DEG - 15


def test_a_scan_of_one_quadrant_keeps_that_quadrants_numbers():
    """A scan of the right upper quadrant only (11-17): the fit does not stretch a whole arch over it."""
    present = [t for t in FULL["upper"] if t < 20]
    points, normals, truth = _arch("upper", present)
    fixed = _numbers(number_along_arch(_probs("upper", truth, sure=0.5), points, np.ones(len(points), bool),
                                       "upper", normals), "upper")
    assert _misnumbered(fixed, truth) == [] and np.mean(fixed == truth) >= 0.95


def test_too_few_tooth_vertices_leave_the_probabilities_as_they_are():
    """Under MIN_ARCH_VERTICES tooth vertices there is no arch to fit: the probabilities come back unchanged."""
    points, _, truth = _arch("upper", FULL["upper"])
    probs = _probs("upper", truth)
    tooth = np.zeros(len(points), bool)
    tooth[: MIN_ARCH_VERTICES - 1] = True
    np.testing.assert_array_equal(number_along_arch(probs, points, tooth, "upper"), probs)


def test_the_boundary_evidence_peaks_between_crowns():
    """Where one convex crown ends and the next begins, the along-arch normal drops: the evidence
    there is high, and low inside the crowns."""
    from ToothMCLCore.postprocessing.arch_order import BIN_MM, boundary_evidence

    points, normals, truth = _arch("lower", FULL["lower"])
    arc, along = arch_coordinate(points, np.ones(len(points), bool), normals)
    bins = ((arc - arc.min()) / BIN_MM).astype(int)
    evidence = boundary_evidence(bins, along, bins.max() + 1)
    ends = [np.quantile(arc[truth == t], 0.99) for t in FULL["lower"][:-1]]
    at = np.round((np.array(ends) - arc.min()) / BIN_MM).astype(int)
    inside = [np.round((np.median(arc[truth == t]) - arc.min()) / BIN_MM).astype(int) for t in FULL["lower"]]
    assert np.mean([evidence[max(0, a - 1): a + 2].max() for a in at]) > 0.5
    assert np.mean(evidence[inside]) < 0.1
