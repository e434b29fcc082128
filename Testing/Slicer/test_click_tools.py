"""The click tools in the module logic: a real scan in a real MRML scene, clicks as markups points."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def labelled(meshsegnet_dir):
    """A real test-split lower jaw, loaded as Slicer loads a .vtp and segmented by the module logic."""
    import slicer
    from slicer_test_data import load_model
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.VertexLabels import vertexLabels

    scene = slicer.vtkMRMLScene()
    path = meshsegnet_dir / "12_down.vtp"
    node = load_model(scene, path)
    logic = SegmentationLogic()
    logic.segmentModel(node, device="cpu")
    return scene, node, logic, vertexLabels(node)


def _points(scene, *positions):
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    for p in positions:
        markups.AddControlPoint(*[float(x) for x in p])
    return markups


def _centre(node, mask):
    from ToothMCLSegmentLib.VertexLabels import modelPointsWorld

    points = modelPointsWorld(node)[mask]
    return points[np.argmin(np.linalg.norm(points - points.mean(axis=0), axis=1))]


def test_a_tooth_deleted_by_mistake_comes_back_with_one_click_undoably_and_the_click_is_saved(labelled, tmp_path):
    """After segmenting, the scan carries the model's tooth probability; a tooth deleted by mistake
    is added back by one click (same number, >= 90 % of its vertices), the diff records the click in
    RAS, undo restores, and a saved correction holds the click."""
    from ToothMCLSegmentLib.ClickTools import toothProbability
    from ToothMCLSegmentLib.VertexLabels import vertexLabels

    from ToothMCLCore import fdi
    from ToothMCLCore.corrections.store import CorrectionStore

    scene, node, logic, segmented = labelled
    assert toothProbability(node).shape == segmented.shape
    tooth = fdi.present_teeth(np.unique(segmented))[3]
    capture = logic.corrections
    capture.apply(node, "delete", tooth=tooth)
    click = _centre(node, segmented == tooth)
    entries = logic.applyClickTool(node, "add", _points(scene, click))  # what the panel's Apply clicks calls
    labels = vertexLabels(node)
    back = labels == tooth
    assert 2 * np.sum(back & (segmented == tooth)) / (back.sum() + (segmented == tooth).sum()) >= 0.9
    assert entries[0]["op"] == "interactive" and entries[0]["tool"] == "add" and entries[0]["label"] == tooth
    assert np.allclose(entries[0]["clicks"][0]["ras"], click, atol=1e-3)
    assert capture.diff(node)[-1] == entries[0]
    store = CorrectionStore(tmp_path / "store", create=True)
    store.save("12_down", prediction=segmented.astype(np.uint8), corrected=labels.astype(np.uint8),
               model={"model": "ios_pt_real_v1"}, modality="ios", jaw="lower", annotator="test",
               diff=capture.diff(node))
    assert store.revision("12_down").operations[-1]["clicks"] == entries[0]["clicks"]
    capture.undo(node)
    assert not np.any(vertexLabels(node) == tooth)
    capture.undo(node)
    assert np.array_equal(vertexLabels(node), segmented)


def test_wrong_clicks_get_a_message_and_change_nothing(labelled):
    """A split with one click, a split across two teeth, a click in the air, no points placed: each is
    refused with what to do, and the labels stay as they were."""
    from ToothMCLSegmentLib.VertexLabels import modelPointsWorld, vertexLabels

    from ToothMCLCore import fdi
    from ToothMCLCore.errors import InvalidInputError

    scene, node, logic, _ = labelled
    before = vertexLabels(node)
    a, b = fdi.present_teeth(np.unique(before))[:2]
    capture = logic.corrections
    with pytest.raises(InvalidInputError, match="one click on each of the two teeth"):
        capture.applyClickTool(node, "split", _points(scene, _centre(node, before == a)))
    with pytest.raises(InvalidInputError, match="two different teeth"):
        capture.applyClickTool(node, "split", _points(scene, _centre(node, before == a), _centre(node, before == b)))
    with pytest.raises(InvalidInputError, match="click on the scan's surface"):
        capture.applyClickTool(node, "brush", _points(scene, modelPointsWorld(node).max(axis=0) + 30.0), value=0)
    with pytest.raises(InvalidInputError, match="place the click points first"):
        capture.applyClickTool(node, "add", scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode"))
    assert np.array_equal(vertexLabels(node), before)


def test_two_merged_teeth_of_a_cbct_segmentation_are_split_with_two_points(scene, small_phantom):
    """A segmentation of an oblique phantom CBCT in which 36 and 37 are one segment: two points, one in
    each, give both teeth back (Dice >= 0.9) as their own segments; undo restores; a tooth that lost
    its outer layer grows back with one point; a tool that only works on scans is refused with what
    to use instead."""
    from scipy import ndimage
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.SegmentDisplay import (
        createSegmentationNode,
        labelsFromSegmentation,
        setToothLabels,
    )
    from ToothMCLSegmentLib.VolumeConversion import addVolumeNode

    from ToothMCLCore.errors import InvalidInputError

    image, truth = small_phantom
    truth = truth.array
    merged = np.where(truth == 37, 36, truth).astype(np.uint8)
    volume = addVolumeNode(scene, image, "phantom CBCT")
    segmentation = createSegmentationNode(scene, merged, volume)

    def inside(mask):
        k, j, i = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)
        return (image.geometry.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]

    logic = SegmentationLogic()
    entries = logic.applyClickTool(segmentation, "split", _points(scene, inside(truth == 36), inside(truth == 37)))
    labels, _ = labelsFromSegmentation(segmentation)
    for tooth in (36, 37):
        got, want = labels == tooth, truth == tooth
        assert 2 * np.sum(got & want) / (got.sum() + want.sum()) >= 0.9, tooth
    assert entries[0]["tool"] == "split" and sorted(entries[0]["labels"]) == [36, 37] and entries[0]["voxels"] > 0
    logic.undoCorrection(segmentation)
    assert np.array_equal(labelsFromSegmentation(segmentation)[0], merged)
    # a tooth that lost its outer layer grows back towards a click on what it lost
    eroded = np.where((truth == 46) & ~ndimage.binary_erosion(truth == 46), 0, merged).astype(np.uint8)
    logic.corrections.forget(segmentation)
    setToothLabels(segmentation, eroded)
    lost = (truth == 46) & (eroded != 46)
    entries = logic.applyClickTool(segmentation, "refine", _points(scene, inside(lost)), tooth=46)
    grown = labelsFromSegmentation(segmentation)[0] == 46
    assert entries[0]["tool"] == "refine" and 2 * np.sum(grown & (truth == 46)) / (grown.sum() + (truth == 46).sum()) >= 0.9
    with pytest.raises(InvalidInputError, match="works on intraoral scans for now"):
        logic.applyClickTool(segmentation, "brush", _points(scene, inside(truth == 36)), value=0)


def test_a_tooth_deleted_from_a_cbct_segmentation_is_added_back_with_one_point(scene, small_phantom, tmp_path):
    """The module segments an oblique phantom CBCT with its default model; a tooth deleted by
    mistake comes back with one point: the model that made the segmentation gives the tooth around
    the point, the tooth takes its number back by arch order (Dice >= 0.85 against the truth), undo
    restores, and the point is in the saved diff. The window around the point is read from the
    network's teeth kept with the segmentation, by the logic that segmented and by a new session on
    the scene saved and read back (no network window), whose boundary fix follows them too; a
    segmentation without them runs the model its provenance names. A segmentation that names no
    model gets a message saying to segment first."""
    from scipy import ndimage
    from slicer_test_data import save_and_reload
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.SegmentDisplay import (
        KEPT_CLASS_ROLE,
        KEPT_PROBABILITY_ROLE,
        createSegmentationNode,
        getProvenance,
        labelsFromSegmentation,
        setToothLabels,
    )
    from ToothMCLSegmentLib.VolumeConversion import addVolumeNode

    from ToothMCLCore.errors import InvalidInputError

    image, truth = small_phantom
    truth = truth.array
    volume = addVolumeNode(scene, image, "phantom CBCT")
    logic = SegmentationLogic()
    segmentation = logic.segmentVolume(volume, device="cpu")

    def inside(mask):
        k, j, i = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)
        return (image.geometry.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]

    reloaded = save_and_reload(scene, tmp_path / "scene")
    again = reloaded.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    stripped = save_and_reload(scene, tmp_path / "stripped")  # the same, its kept teeth then removed
    without = stripped.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    for role in (KEPT_PROBABILITY_ROLE, KEPT_CLASS_ROLE):
        stripped.RemoveNode(without.GetNodeReference(role))
    for current, node, window in ((logic, segmentation, "segmentation"),
                                  (SegmentationLogic(), again, "segmentation"),
                                  (SegmentationLogic(), without, "network")):
        current.applyCorrection(node, "delete", tooth=36)
        deleted = labelsFromSegmentation(node)[0]
        assert not np.any(deleted == 36)
        entries = current.applyClickTool(node, "add", _points(node.GetScene(), inside(truth == 36)))
        labels = labelsFromSegmentation(node)[0]
        got, want = labels == 36, truth == 36
        assert entries[0]["tool"] == "add" and entries[0]["labels"] == [36] and entries[0]["voxels"] == got.sum()
        assert entries[0]["window"] == window
        assert 2 * np.sum(got & want) / (got.sum() + want.sum()) >= 0.85
        assert np.array_equal(labels[deleted != 0], deleted[deleted != 0])
        assert any(e.get("tool") == "add" for e in current.correctionDiff(node))
        current.undoCorrection(node)
        assert np.array_equal(labelsFromSegmentation(node)[0], deleted)
        current.undoCorrection(node)  # the delete
    # a boundary fix on the reloaded scene follows the kept teeth too, without a network window
    whole = labelsFromSegmentation(again)[0]
    eroded = np.where((whole == 46) & ~ndimage.binary_erosion(whole == 46), 0, whole).astype(np.uint8)
    fresh = SegmentationLogic()
    setToothLabels(again, eroded)
    entries = fresh.applyClickTool(again, "refine", _points(reloaded, inside((whole == 46) & (eroded != 46))), tooth=46)
    grown, want = labelsFromSegmentation(again)[0] == 46, whole == 46
    assert entries[0]["window"] == "segmentation" and entries[0]["model"] == getProvenance(again)["model"]
    assert 2 * np.sum(grown & want) / (grown.sum() + want.sum()) >= 0.9
    bare = createSegmentationNode(scene, np.where(truth == 36, 0, truth).astype(np.uint8), volume)
    with pytest.raises(InvalidInputError, match="segment the volume with a model first"):
        SegmentationLogic().applyClickTool(bare, "add", _points(scene, inside(truth == 36)))


def test_the_sam_prompt_without_a_checkpoint_says_where_to_put_one(labelled, monkeypatch, tmp_path):
    """No SAM checkpoint in $TOOTHMCL_SAM_CHECKPOINT or the cache: the SAM tool says how to give one
    and the scan's labels do not change."""
    from ToothMCLSegmentLib import ClickTools
    from ToothMCLSegmentLib.VertexLabels import vertexLabels

    from ToothMCLCore.errors import InvalidInputError

    scene, node, logic, before = labelled
    monkeypatch.delenv("TOOTHMCL_SAM_CHECKPOINT", raising=False)
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path))
    monkeypatch.setattr(ClickTools, "_sam", [])
    gingiva = _centre(node, vertexLabels(node) == 0)
    with pytest.raises(InvalidInputError, match="SAM checkpoint"):
        logic.applyClickTool(node, "sam", _points(scene, gingiva))
    assert np.array_equal(vertexLabels(node), before)


def test_a_deleted_segmentation_takes_its_hidden_working_volumes_with_it(scene, small_phantom):
    """The module keeps, hidden beside a CBCT segmentation, the network's label map and its kept
    teeth (tens of MB on a real scan); deleting the segmentation deletes them, so they are not
    saved with every later scene, and leaves everything else where it was."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.SegmentDisplay import HIDDEN_ROLES
    from ToothMCLSegmentLib.VolumeConversion import addVolumeNode

    image, _ = small_phantom
    volume = addVolumeNode(scene, image, "phantom CBCT")
    logic = SegmentationLogic()
    first = logic.segmentVolume(volume, device="cpu")
    second = logic.segmentVolume(volume, device="cpu")
    hidden = {role: first.GetNodeReference(role).GetID() for role in HIDDEN_ROLES}
    kept = {role: second.GetNodeReference(role).GetID() for role in HIDDEN_ROLES}
    assert len(set(hidden.values()) | set(kept.values())) == 2 * len(HIDDEN_ROLES)
    scene.RemoveNode(first)
    assert all(scene.GetNodeByID(node) is None for node in hidden.values())
    assert all(scene.GetNodeByID(node) is not None for node in kept.values())
    assert scene.GetNodeByID(volume.GetID()) is not None and second.GetScene() is scene
