"""The table of teeth lists each tooth with its volume and flags the results worth a second look."""

from __future__ import annotations

import numpy as np
import pytest
from slicer_test_data import ARCH_CUBE_MM, add_volume, arch_centre_ijk, arch_labels


@pytest.fixture
def logic():
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    return SegmentationLogic()


def _flags(rows):
    return {(row.fdi, row.segmentId): row.flags for row in rows if row.flags}


def test_plausible_arch_has_no_flags_and_true_volumes(logic, arch_segmentation, arch_teeth):
    """A complete, well-ordered arch gives one unflagged row per tooth with its volume and centroid."""
    segmentation, _, _ = arch_segmentation
    rows = logic.teethTable(segmentation)

    assert [row.fdi for row in rows] == sorted(arch_teeth)
    assert _flags(rows) == {}
    row = next(r for r in rows if r.fdi == 36)
    assert row.name == "36 lower left first molar"
    assert row.size == pytest.approx(ARCH_CUBE_MM ** 3) and row.unit == "mm³"
    centre = arch_centre_ijk(36)
    np.testing.assert_allclose(row.centroidRas, np.round(centre - ARCH_CUBE_MM / 2) + (ARCH_CUBE_MM - 1) / 2)


def test_duplicate_number_is_flagged_on_both_segments(logic, arch_segmentation):
    """Renaming segment 35 to '34 ...' flags both segments that now carry 34, and nothing else."""
    segmentation, _, _ = arch_segmentation
    segmentation.GetSegmentation().GetSegment("Segment_35").SetName("34 lower left first premolar")

    flagged = _flags(logic.teethTable(segmentation))

    assert flagged == {(34, "Segment_34"): ["duplicate number"], (34, "Segment_35"): ["duplicate number"]}


def test_swapped_neighbours_are_flagged_out_of_arch_order(logic, arch_segmentation):
    """After 44 and 45 swap places, both are flagged out of arch order and the rest of the arch is not."""
    segmentation, _, _ = arch_segmentation
    logic.applyCorrection(segmentation, "swap", tooth=44, target=45)

    flagged = _flags(logic.teethTable(segmentation))

    assert flagged == {(44, "Segment_44"): ["out of arch order"], (45, "Segment_45"): ["out of arch order"]}


def test_one_misplaced_tooth_is_flagged_alone(logic, scene):
    """A tooth numbered 22 that sits where 27 belongs is the only one flagged out of order."""
    teeth = [21, 23, 24, 25, 26, 27]
    labels = arch_labels(teeth)
    labels[labels == 27] = 0
    moved = arch_labels([27])
    labels[moved == 27] = 22  # 22 at the place of 27, after 26
    segmentation = _segmentation(scene, labels)

    flagged = _flags(logic.teethTable(segmentation))

    assert flagged == {(22, "Segment_22"): ["out of arch order"]}


def test_very_small_segment_is_flagged(logic, scene):
    """A 2 mm cube labelled 47 (8 mm³) is flagged very small; full-size neighbours are not."""
    labels = arch_labels([45, 46, 47], sizes={47: 2})
    segmentation = _segmentation(scene, labels)

    rows = logic.teethTable(segmentation)

    assert _flags(rows) == {(47, "Segment_47"): ["very small"]}
    assert next(r for r in rows if r.fdi == 47).size == pytest.approx(8.0)


def test_segment_without_fdi_number_is_listed_and_flagged(logic, arch_segmentation):
    """A segment added by hand with no FDI number appears in the table, flagged, so it can be fixed."""
    segmentation, _, _ = arch_segmentation
    segmentation.GetSegmentation().AddEmptySegment("extra", "Segment_1")

    rows = logic.teethTable(segmentation)

    extra = [row for row in rows if row.segmentId == "extra"]
    assert len(extra) == 1 and extra[0].fdi == 0
    assert "no FDI number" in extra[0].flags


def test_phantom_ground_truth_is_not_flagged(logic, scene, small_phantom):
    """The true labels of the oblique CBCT phantom raise no flag: the checks do not cry wolf."""
    from ToothMCLSegmentLib.SegmentDisplay import createSegmentationNode
    from ToothMCLSegmentLib.VolumeConversion import addVolumeNode

    image, truth = small_phantom
    volume = addVolumeNode(scene, image, "phantom")
    segmentation = createSegmentationNode(scene, truth.array, volume)

    rows = logic.teethTable(segmentation)

    teeth = sorted(set(np.unique(truth.array).tolist()) - {0, 99})
    assert [row.fdi for row in rows if row.fdi != 99] == teeth
    assert _flags(rows) == {}


@pytest.mark.parametrize("sequence, expected", [
    ([1, 2, 3, 4], [True, True, True, True]),
    ([1, 2, 4, 3, 5], [True, True, False, False, True]),
    ([1, 2, 3, 5, 6, 7, 4], [True, True, True, True, True, True, False]),
])
def test_order_check_flags_only_the_teeth_that_break_the_run(sequence, expected):
    """The arch-order rule flags both teeth of a swap but only the one tooth that is misplaced."""
    from ToothMCLSegmentLib.TeethTable import inEveryLongestRun

    assert inEveryLongestRun(sequence) == expected


def _segmentation(scene, labels):
    from ToothMCLSegmentLib.SegmentDisplay import createSegmentationNode

    return createSegmentationNode(scene, labels, add_volume(scene, labels.shape))
