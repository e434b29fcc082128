"""Saving a correction: a clear message until the store exists, and the documented call once it does."""

from __future__ import annotations

import hashlib
import sys
import types
from typing import ClassVar

import numpy as np
import pytest


@pytest.fixture
def predicted(scene, arch_teeth):
    """A segmentation as segmentVolume leaves it: stored prediction and provenance attributes."""
    from slicer_test_data import add_volume, arch_labels
    from ToothMCLSegmentLib.SegmentDisplay import createSegmentationNode, storePrediction

    labels = arch_labels(arch_teeth)
    ijk_to_ras = np.diag([0.5, 0.5, 0.5, 1.0])
    ijk_to_ras[:3, 3] = [-10, 20, 5]
    volume = add_volume(scene, labels.shape, ijk_to_ras, name="case 017")
    provenance = {"model": "cbct_swinunetr_demo_v1", "model_version": "1.0.0",
                  "model_sha256": "ab" * 32, "date": "2026-01-01T00:00:00+00:00"}
    segmentation = createSegmentationNode(scene, labels, volume, provenance=provenance)
    storePrediction(segmentation, labels)
    return segmentation, labels, volume


class RecordingStore:
    """Stands in for ToothMCLCore.corrections.CorrectionStore (issue 5): records each save."""

    saved: ClassVar[list] = []

    def __init__(self, path):
        self.path = path

    def save(self, **record):
        RecordingStore.saved.append((self.path, record))
        return len(RecordingStore.saved)


def test_without_the_store_saving_says_it_is_not_installed_yet(predicted, monkeypatch, tmp_path):
    """Before issue 5, Save correction raises a ToothMCLError saying the store is not installed yet."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.errors import ToothMCLError

    monkeypatch.setitem(sys.modules, "ToothMCLCore.corrections", None)
    logic = SegmentationLogic()
    segmentation, _, _ = predicted

    with pytest.raises(ToothMCLError, match="corrections store .* not installed yet"):
        logic.saveCorrection(segmentation, tmp_path / "corrections.sqlite", "dr who", "")
    available, message = logic.correctionStoreStatus()
    assert not available and "not installed yet" in message
    assert not list(tmp_path.iterdir())


def test_save_correction_hands_prediction_correction_and_diff_to_the_store(predicted, monkeypatch, tmp_path):
    """Saving passes the untouched prediction, the corrected labels, the grid, model, diff and annotator."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    module = types.ModuleType("ToothMCLCore.corrections")
    module.CorrectionStore = RecordingStore
    monkeypatch.setitem(sys.modules, "ToothMCLCore.corrections", module)
    RecordingStore.saved.clear()
    logic = SegmentationLogic()
    segmentation, labels, _ = predicted
    logic.applyCorrection(segmentation, "swap", tooth=44, target=45)
    store_path = tmp_path / "corrections.sqlite"

    result = logic.saveCorrection(segmentation, store_path, " Dr Who ", "44/45 were swapped")

    assert result == 1 and logic.correctionStoreStatus()[0]
    path, record = RecordingStore.saved[0]
    assert path == store_path
    assert record["case_id"] == "case 017" and record["input_path"] == ""
    voxels = np.ascontiguousarray(np.zeros(labels.shape, dtype=np.int16)).tobytes()
    assert record["input_sha256"] == hashlib.sha256(voxels).hexdigest()
    np.testing.assert_array_equal(record["prediction"], labels)
    expected = labels.copy()
    expected[labels == 44], expected[labels == 45] = 45, 44
    np.testing.assert_array_equal(record["corrected"], expected)
    np.testing.assert_allclose(record["geometry"].spacing, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(record["geometry"].origin_ras, [-10, 20, 5])
    assert record["model"]["model"] == "cbct_swinunetr_demo_v1"
    assert record["model"]["model_sha256"] == "ab" * 32
    assert record["diff"] == [{"op": "swap", "from": 44, "to": 45,
                               "voxels": int(((labels == 44) | (labels == 45)).sum())}]
    assert record["annotator"] == "Dr Who" and record["note"] == "44/45 were swapped"


def test_save_correction_needs_an_annotator(predicted, monkeypatch, tmp_path):
    """Saving without an annotator name is refused before anything reaches the store."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.errors import InvalidInputError

    module = types.ModuleType("ToothMCLCore.corrections")
    module.CorrectionStore = RecordingStore
    monkeypatch.setitem(sys.modules, "ToothMCLCore.corrections", module)
    RecordingStore.saved.clear()
    segmentation, _, _ = predicted

    with pytest.raises(InvalidInputError, match="annotator"):
        SegmentationLogic().saveCorrection(segmentation, tmp_path / "c.sqlite", "  ", "")
    assert RecordingStore.saved == []
