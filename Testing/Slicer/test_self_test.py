"""The module's "Reload and Test" self-test runs its checks on a real MRML scene and passes."""

from __future__ import annotations

import pytest


@pytest.fixture
def app_scene(monkeypatch):
    """slicer.mrmlScene as the Slicer application provides it (slicer-core has none of its own)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    return scene


def test_module_self_test_passes_on_a_real_scene(app_scene):
    """ToothMCLSegmentTest.runTest segments a phantom scan with the shipped model, corrects, saves, undoes."""
    import ToothMCLSegment

    ToothMCLSegment.ToothMCLSegmentTest().runTest()
    assert app_scene.GetNodesByClass("vtkMRMLModelNode").GetNumberOfItems() == 1  # the last check's scan


def test_self_test_check_fails_loudly_when_undo_is_broken(app_scene, monkeypatch):
    """A check that finds a wrong result raises AssertionError with what went wrong."""
    from ToothMCLSegmentLib.CorrectionCapture import CorrectionCapture
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.SelfTest import checkCorrectionsOnALabelMap

    monkeypatch.setattr(CorrectionCapture, "undo", lambda self, node: [])
    with pytest.raises(AssertionError, match="undo did not restore"):
        checkCorrectionsOnALabelMap(app_scene, SegmentationLogic())
