"""Saving a correction from the Slicer module into a real corrections store."""

from __future__ import annotations

import hashlib

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


def test_save_correction_stores_prediction_correction_and_diff(predicted, tmp_path):
    """Saving writes a revision holding the untouched prediction, the correction, model and diff."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.corrections import CorrectionStore

    logic = SegmentationLogic()
    segmentation, labels, _ = predicted
    logic.applyCorrection(segmentation, "swap", tooth=44, target=45)
    store_path = tmp_path / "corrections"

    revision = logic.saveCorrection(segmentation, store_path, " Dr Who ", "44/45 were swapped", patient_id=" P017 ")

    assert logic.correctionStoreStatus()[0]
    loaded = CorrectionStore(store_path).load("case 017")
    assert loaded.revision.revision == revision.revision == 1
    np.testing.assert_array_equal(loaded.prediction, labels)
    expected = labels.copy()
    expected[labels == 44], expected[labels == 45] = 45, 44
    np.testing.assert_array_equal(loaded.corrected, expected)
    np.testing.assert_allclose(loaded.geometry.spacing, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(loaded.geometry.origin_ras, [-10, 20, 5])
    rev = loaded.revision
    assert rev.annotator == "Dr Who" and rev.note == "44/45 were swapped" and rev.patient_id == "P017"
    assert rev.model_name == "cbct_swinunetr_demo_v1" and rev.model_sha256 == "ab" * 32
    voxels = np.ascontiguousarray(np.zeros(labels.shape, dtype=np.int16)).tobytes()
    assert rev.input_sha256 == hashlib.sha256(voxels).hexdigest()
    assert rev.operations == [{"op": "swap", "from": 44, "to": 45,
                               "voxels": int(((labels == 44) | (labels == 45)).sum())}]
    assert {d["change"] for d in rev.tooth_diff if d["from"] in (44, 45)} == {"renumbered"}


def test_saving_again_adds_a_revision_and_keeps_the_first(predicted, tmp_path):
    """A second save of the same case is revision 2; revision 1 stays readable as it was."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.corrections import CorrectionStore

    logic = SegmentationLogic()
    segmentation, labels, _ = predicted
    store_path = tmp_path / "corrections"
    logic.saveCorrection(segmentation, store_path, "a", "as predicted", patient_id="P017")
    logic.applyCorrection(segmentation, "delete", tooth=44)
    logic.saveCorrection(segmentation, store_path, "b", "44 removed", patient_id="P017")
    store = CorrectionStore(store_path)
    assert [r.revision for r in store.revisions("case 017")] == [1, 2]
    np.testing.assert_array_equal(store.load("case 017", revision=1).corrected, labels)
    assert not (store.load("case 017", revision=2).corrected == 44).any()


def test_save_correction_needs_an_annotator(predicted, tmp_path):
    """Saving without an annotator name is refused before anything reaches the store."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.errors import InvalidInputError

    segmentation, _, _ = predicted

    with pytest.raises(InvalidInputError, match="annotator"):
        SegmentationLogic().saveCorrection(segmentation, tmp_path / "corrections", "  ", "")
    assert not (tmp_path / "corrections").exists()


def test_saving_needs_the_patient_and_takes_it_from_dicom(predicted, tmp_path):
    """Without a patient ID saving is refused with advice and no store is made (a case id in its
    place would put the two jaws of one patient in different splits); a volume loaded from DICOM
    gives its patient ID (subject hierarchy ``DICOM.PatientID``), which the field shows."""
    import slicer
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.errors import InvalidInputError

    logic = SegmentationLogic()
    segmentation, _, volume = predicted
    with pytest.raises(InvalidInputError, match="enter the patient ID"):
        logic.saveCorrection(segmentation, tmp_path / "corrections", "Dr Who", patient_id="  ")
    assert not (tmp_path / "corrections").exists()
    assert logic.patientIdOf(segmentation) == ""

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(volume.GetScene())
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Anonymous")
    sh.SetItemAttribute(patient, "DICOM.PatientID", "PAT-0042")
    sh.CreateItem(sh.CreateStudyItem(patient, "CBCT study"), volume)
    assert logic.patientIdOf(segmentation) == "PAT-0042" and logic.inputNodeOf(segmentation) is volume
    revision = logic.saveCorrection(segmentation, tmp_path / "corrections", "Dr Who")
    assert revision.patient_id == "PAT-0042"
