"""Numbering corrections change the segmentation as an annotator expects; undo restores it exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _state(segmentation):
    """Everything a user sees of the teeth: the FDI label map and each segment's identity."""
    from ToothMCLSegmentLib.SegmentDisplay import labelsFromSegmentation

    labels, _ = labelsFromSegmentation(segmentation)
    seg = segmentation.GetSegmentation()
    segments = []
    for index in range(seg.GetNumberOfSegments()):
        segment_id = seg.GetNthSegmentID(index)
        s = seg.GetSegment(segment_id)
        segments.append((segment_id, s.GetName(), tuple(round(c, 4) for c in s.GetColor()),
                         s.GetLabelValue(), s.GetTerminology()))
    return labels, segments


def _segment_of(segmentation, number):
    from ToothMCLSegmentLib.SegmentDisplay import toothSegments

    ids = [sid for sid, value in toothSegments(segmentation) if value == number]
    return segmentation.GetSegmentation().GetSegment(ids[0]) if len(ids) == 1 else None


@pytest.fixture
def logic():
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    return SegmentationLogic()


def _assert_undo_restores(logic, segmentation, before):
    logic.undoCorrection(segmentation)
    labels, segments = _state(segmentation)
    np.testing.assert_array_equal(labels, before[0])
    assert segments == before[1]


def test_reassign_gives_the_tooth_a_new_number_name_colour_and_code(logic, arch_segmentation):
    """Reassigning 36 to 38 moves its voxels to a segment named, coloured and coded as 38; undo restores 36."""
    from ToothMCLCore import fdi

    segmentation, labels, _ = arch_segmentation
    before = _state(segmentation)

    entries = logic.applyCorrection(segmentation, "reassign", tooth=36, target=38)

    after, _ = _state(segmentation)
    np.testing.assert_array_equal(after == 38, labels == 36)
    assert not (after == 36).any()
    segment = _segment_of(segmentation, 38)
    assert segment.GetName() == "38 lower left third molar"
    assert segment.GetLabelValue() == 38
    np.testing.assert_allclose(segment.GetColor(), fdi.tooth(38).color, atol=1e-6)
    assert fdi.tooth(38).snomed_code in segment.GetTerminology()
    assert _segment_of(segmentation, 36) is None
    assert entries == [{"op": "reassign", "from": 36, "to": 38, "voxels": int((labels == 36).sum())}]
    _assert_undo_restores(logic, segmentation, before)


def test_reassign_to_a_number_in_use_is_refused(logic, arch_segmentation):
    """Reassigning onto an existing tooth is refused with advice to swap or merge, and nothing changes."""
    from ToothMCLCore.errors import InvalidInputError

    segmentation, labels, _ = arch_segmentation
    with pytest.raises(InvalidInputError, match="swap .* or merge"):
        logic.applyCorrection(segmentation, "reassign", tooth=36, target=37)
    np.testing.assert_array_equal(_state(segmentation)[0], labels)
    assert not logic.canUndoCorrection(segmentation)


def test_swap_exchanges_two_teeth_and_undo_restores_them(logic, arch_segmentation):
    """Swapping 34 and 35 exchanges their voxels while each segment keeps its number; undo swaps back."""
    segmentation, labels, _ = arch_segmentation
    before = _state(segmentation)

    logic.applyCorrection(segmentation, "swap", tooth=34, target=35)

    after, segments = _state(segmentation)
    np.testing.assert_array_equal(after == 35, labels == 34)
    np.testing.assert_array_equal(after == 34, labels == 35)
    assert [s[1] for s in segments] == [s[1] for s in before[1]]
    _assert_undo_restores(logic, segmentation, before)


def test_merge_moves_a_fragment_into_its_tooth(logic, scene):
    """Merging a stray fragment (labelled 45) into 44 leaves one segment 44 holding both."""
    from slicer_test_data import add_volume, arch_labels
    from ToothMCLSegmentLib.SegmentDisplay import createSegmentationNode

    labels = arch_labels([43, 44])
    labels[2:4, 2:4, 2:4] = 45  # a fragment far from any tooth
    segmentation = createSegmentationNode(scene, labels, add_volume(scene, labels.shape))
    before = _state(segmentation)

    entries = logic.applyCorrection(segmentation, "merge", tooth=45, target=44)

    after, segments = _state(segmentation)
    np.testing.assert_array_equal(after == 44, (labels == 44) | (labels == 45))
    assert [s[1] for s in segments] == ["43 lower right canine", "44 lower right first premolar"]
    assert entries[0] == {"op": "merge", "from": 45, "to": 44, "voxels": 8}
    _assert_undo_restores(logic, segmentation, before)


def test_delete_removes_the_segment_and_its_voxels(logic, arch_segmentation):
    """Deleting 21 removes its segment and voxels and leaves every other tooth untouched."""
    segmentation, labels, _ = arch_segmentation
    before = _state(segmentation)

    logic.applyCorrection(segmentation, "delete", tooth=21)

    after, _ = _state(segmentation)
    np.testing.assert_array_equal(after, np.where(labels == 21, 0, labels))
    assert _segment_of(segmentation, 21) is None
    _assert_undo_restores(logic, segmentation, before)


def test_renumber_quadrant_shifts_every_tooth_by_one(logic, arch_segmentation):
    """Renumbering quadrant 3 by +1 turns 31..37 into 32..38 without touching other quadrants."""
    segmentation, labels, _ = arch_segmentation
    before = _state(segmentation)

    entries = logic.applyCorrection(segmentation, "renumber", quadrant=3, step=1)

    after, _ = _state(segmentation)
    quadrant3 = (labels >= 31) & (labels <= 37)
    np.testing.assert_array_equal(after[quadrant3], labels[quadrant3] + 1)
    np.testing.assert_array_equal(after[~quadrant3], labels[~quadrant3])
    assert [(e["from"], e["to"]) for e in entries] == [(n, n + 1) for n in range(31, 38)]
    assert _segment_of(segmentation, 38).GetName() == "38 lower left third molar"
    _assert_undo_restores(logic, segmentation, before)


def test_renumber_that_leaves_the_quadrant_is_refused(logic, arch_segmentation):
    """Renumbering quadrant 1 by -1 would turn 11 into 10: refused with a message naming the tooth."""
    from ToothMCLCore.errors import InvalidInputError

    segmentation, labels, _ = arch_segmentation
    with pytest.raises(InvalidInputError, match="turn 11 into 10"):
        logic.applyCorrection(segmentation, "renumber", quadrant=1, step=-1)
    np.testing.assert_array_equal(_state(segmentation)[0], labels)


def test_undo_steps_back_one_correction_at_a_time(logic, arch_segmentation):
    """Two corrections then two undos give back the original segmentation; a third undo says so."""
    from ToothMCLCore.errors import InvalidInputError

    segmentation, _, _ = arch_segmentation
    original = _state(segmentation)
    logic.applyCorrection(segmentation, "swap", tooth=11, target=12)
    after_swap = _state(segmentation)
    logic.applyCorrection(segmentation, "delete", tooth=27)

    logic.undoCorrection(segmentation)
    np.testing.assert_array_equal(_state(segmentation)[0], after_swap[0])
    logic.undoCorrection(segmentation)
    np.testing.assert_array_equal(_state(segmentation)[0], original[0])
    assert _state(segmentation)[1] == original[1]
    with pytest.raises(InvalidInputError, match="no correction .* to undo"):
        logic.undoCorrection(segmentation)


def test_diff_entries_are_kept_on_the_node_for_the_provenance(logic, arch_segmentation):
    """Each correction is recorded as {op, from, to, voxels} in ToothMCL.corrections; undo drops its entry."""
    segmentation, labels, _ = arch_segmentation
    logic.applyCorrection(segmentation, "swap", tooth=11, target=12)
    logic.applyCorrection(segmentation, "delete", tooth=27)

    stored = json.loads(segmentation.GetAttribute("ToothMCL.corrections"))
    assert stored == logic.correctionDiff(segmentation)
    assert [e["op"] for e in stored] == ["swap", "delete"]
    assert stored[1] == {"op": "delete", "from": 27, "to": 0, "voxels": int((labels == 27).sum())}
    logic.undoCorrection(segmentation)
    assert [e["op"] for e in json.loads(segmentation.GetAttribute("ToothMCL.corrections"))] == ["swap"]


def test_a_segment_that_is_not_a_tooth_survives_corrections(logic, arch_segmentation):
    """A segment added by hand (e.g. a bone mark) keeps its voxels through corrections and undo."""
    import slicer
    from ToothMCLSegmentLib.SegmentDisplay import segmentLayers

    segmentation, labels, _ = arch_segmentation
    seg = segmentation.GetSegmentation()
    bone_id = seg.AddEmptySegment("mandible", "mandible")
    mask = np.zeros_like(labels)
    mask[0:3, 10:20, 10:20] = 1
    from ToothMCLSegmentLib.VolumeConversion import orientedImageFromLabels

    image = orientedImageFromLabels(mask, np.eye(4))
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation, bone_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    logic.applyCorrection(segmentation, "reassign", tooth=17, target=18)
    logic.undoCorrection(segmentation)

    found = [layer == values[bone_id] for layer, values in segmentLayers(segmentation) if bone_id in values]
    assert len(found) == 1
    np.testing.assert_array_equal(found[0], mask.astype(bool))
    other_layers_values = set()
    for layer, values in segmentLayers(segmentation):
        other_layers_values |= set(np.unique(layer).tolist()) - {0} - set(values.values())
    assert not other_layers_values  # no voxels left without a segment


def test_edits_made_in_the_segment_editor_are_kept_by_the_next_correction(logic, arch_segmentation):
    """Voxels painted onto 36 by hand follow 36 through a swap with 37, and undo keeps them as 36."""
    import slicer
    from ToothMCLSegmentLib.SegmentDisplay import labelsFromSegmentation
    from ToothMCLSegmentLib.VolumeConversion import orientedImageFromLabels

    segmentation, labels, _ = arch_segmentation
    painted = np.zeros_like(labels)
    painted[0:2, 0:2, 0:2] = 1  # a stroke far from every tooth, added to 36
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        orientedImageFromLabels((painted > 0) | (labels == 36), np.eye(4)), segmentation, "Segment_36",
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    edited, _ = labelsFromSegmentation(segmentation)
    assert (edited[painted > 0] == 36).all()

    logic.applyCorrection(segmentation, "swap", tooth=36, target=37)
    swapped, _ = labelsFromSegmentation(segmentation)
    assert (swapped[painted > 0] == 37).all()
    logic.undoCorrection(segmentation)
    np.testing.assert_array_equal(labelsFromSegmentation(segmentation)[0], edited)
