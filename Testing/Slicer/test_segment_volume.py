"""Segmenting a CBCT volume node gives one named, coloured, coded segment per tooth on the input grid.

The tiny untrained model runs once for the whole module (about half a minute on two CPU cores).
"""

from __future__ import annotations

import datetime
import threading

import numpy as np
import pytest


@pytest.fixture(scope="module")
def segmented(small_phantom, tiny_weights):
    """(logic, volume node, segmentation node, progress stages, scene) after one segmentVolume call."""
    import slicer
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.VolumeConversion import addVolumeNode

    scene = slicer.vtkMRMLScene()
    image, _ = small_phantom
    volume = addVolumeNode(scene, image, "phantom CBCT")
    logic = SegmentationLogic()
    stages = []
    segmentation = logic.segmentVolume(volume, weights=tiny_weights, device="cpu",
                                       progress=lambda stage, fraction: stages.append((stage, fraction)))
    return logic, volume, segmentation, stages, scene  # the scene must outlive its nodes' use


def _segments(segmentation):
    seg = segmentation.GetSegmentation()
    return [seg.GetSegment(seg.GetNthSegmentID(i)) for i in range(seg.GetNumberOfSegments())]


def test_one_segment_per_tooth_named_and_valued_by_fdi(segmented):
    """Each segment is named '<FDI> <name>', has label value = FDI and the FDI colour; voxels hold FDI values."""
    from ToothMCLSegmentLib.SegmentDisplay import labelsFromSegmentation
    from ToothMCLSegmentLib.VolumeConversion import arrayFromImage

    from ToothMCLCore import fdi
    from ToothMCLCore.io.segnrrd import segment_name

    _, _, segmentation, _, _ = segmented
    segments = _segments(segmentation)
    labels, _ = labelsFromSegmentation(segmentation)
    present = sorted(set(np.unique(labels).tolist()) - {0})
    assert present and [s.GetLabelValue() for s in segments] == present
    for segment in segments:
        value = segment.GetLabelValue()
        assert segment.GetName() == segment_name(value)
        if value != fdi.METAL_LABEL:
            assert segment.GetName() == fdi.tooth(value).label
        np.testing.assert_allclose(segment.GetColor(), fdi.label_color(value), atol=1e-6)
    layer = segmentation.GetSegmentation().GetLayerDataObject(0)
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    assert set(np.unique(arrayFromImage(layer)).tolist()) == {0, *present}


def test_terminology_carries_the_snomed_code_of_each_tooth(segmented):
    """Each tooth segment's terminology entry holds its SNOMED CT code, as Slicer's terminology expects."""
    from ToothMCLCore import fdi
    from ToothMCLCore.io.segnrrd import terminology_entry

    _, _, segmentation, _, _ = segmented
    for segment in _segments(segmentation):
        value = segment.GetLabelValue()
        assert segment.GetTerminology() == terminology_entry(value)
        if value != fdi.METAL_LABEL:
            assert f"SCT^{fdi.tooth(value).snomed_code}^{fdi.tooth(value).snomed_meaning}" in segment.GetTerminology()


def test_reference_geometry_is_the_input_volume_grid(segmented):
    """The segmentation's reference geometry is exactly the oblique input volume's grid."""
    import slicer
    from ToothMCLSegmentLib.SegmentDisplay import referenceGeometry
    from ToothMCLSegmentLib.VolumeConversion import ijkToRasOfVolumeNode

    _, volume, segmentation, _, _ = segmented
    ijk_to_ras, shape = referenceGeometry(segmentation)
    np.testing.assert_allclose(ijk_to_ras, ijkToRasOfVolumeNode(volume), atol=1e-6)
    assert shape == slicer.util.arrayFromVolume(volume).shape
    assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is volume


def test_provenance_is_stored_as_node_attributes(segmented, tiny_weights):
    """Model name, version, weights SHA-256 and date are node attributes ToothMCL.<key>."""
    from ToothMCLCore.models.checkpoint import sha256_of

    _, volume, segmentation, _, _ = segmented
    assert segmentation.GetAttribute("ToothMCL.model") == "cbct_swinunetr_tiny_v1"
    assert segmentation.GetAttribute("ToothMCL.model_version") == "0.0.1"
    assert segmentation.GetAttribute("ToothMCL.model_sha256") == sha256_of(tiny_weights)
    assert segmentation.GetAttribute("ToothMCL.input") == volume.GetName()
    date = datetime.datetime.fromisoformat(segmentation.GetAttribute("ToothMCL.date"))
    assert abs((datetime.datetime.now(datetime.timezone.utc) - date).total_seconds()) < 3600


def test_progress_reports_named_stages_in_order(segmented):
    """Progress goes through the named stages in order, with fractions that never go back."""
    _, _, _, stages, _ = segmented
    names = [stage for stage, _ in stages]
    order = ["loading", "preprocess", "crop", "segment", "postprocess", "restore", "done"]
    assert [name for name in dict.fromkeys(names)] == order
    fractions = [fraction for _, fraction in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_saved_seg_nrrd_reads_back_as_the_fdi_label_map(segmented, tmp_path):
    """Saving the node as .seg.nrrd gives a file whose voxels are FDI numbers, equal to the prediction."""
    import nrrd
    from ToothMCLSegmentLib.SegmentDisplay import labelsFromSegmentation, predictionLabels
    from ToothMCLSegmentLib.VolumeConversion import volumeFromNode

    from ToothMCLCore.io.segnrrd import read_seg_nrrd

    _, volume, segmentation, _, _ = segmented
    path = tmp_path / "teeth.seg.nrrd"
    storage = segmentation.GetScene().AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation)

    labels, geometry, names = read_seg_nrrd(path)
    expected, _ = labelsFromSegmentation(segmentation)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(predictionLabels(segmentation), expected)
    assert geometry.allclose(volumeFromNode(volume).geometry)
    raw, _ = nrrd.read(str(path), index_order="C")
    assert set(np.unique(raw).tolist()) == set(np.unique(expected).tolist())
    assert all(name.startswith(f"{value} ") for value, name in names.items())


def test_background_run_leaves_the_caller_free_and_cancel_adds_nothing(small_phantom, tiny_weights, scene):
    """startSegmentation returns while the worker runs; Cancel stops it and no segmentation is added."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.VolumeConversion import addVolumeNode

    from ToothMCLCore.errors import CancelledError

    image, _ = small_phantom
    volume = addVolumeNode(scene, image, "phantom CBCT")
    gate, reached = threading.Event(), threading.Event()

    def hold_at_first_stage(stage, fraction):
        reached.set()
        assert gate.wait(60)

    job = SegmentationLogic().startSegmentation(volume, weights=tiny_weights, device="cpu",
                                                progress=hold_at_first_stage)
    assert reached.wait(60)
    status = job.poll()  # the calling (GUI) thread keeps working while the worker is busy
    assert not status.done and status.stage == "loading"
    job.cancel()
    gate.set()
    assert job.wait(120)
    assert job.poll().done
    with pytest.raises(CancelledError):
        SegmentationLogic().finishSegmentation(job)
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


def test_an_nnunet_results_folder_runs_through_the_module_logic(small_phantom, tmp_path):
    """The module's logic takes an nnU-Net v2 results folder as its weights, like segment-cbct: a model
    that finds only ToothFairy2's class 36 gives one segment, named as our FDI 36, with the folder's
    checkpoint SHA-256 in the provenance; a correction made on it is saved traceable to that model
    and exported as training data with the corrected labels."""
    import slicer
    from nnunet_models import make_results_folder
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.VolumeConversion import addVolumeNode

    from ToothMCLCore.models.checkpoint import sha256_of

    root, _ = make_results_folder(tmp_path, spacing=1.0, favour=36)  # dataset class 36 = lower left first molar
    scene = slicer.vtkMRMLScene()
    image, _ = small_phantom
    volume = addVolumeNode(scene, image, "phantom CBCT")
    logic = SegmentationLogic()
    segmentation = logic.segmentVolume(volume, weights=root, device="cpu")
    names = [s.GetName() for s in _segments(segmentation)]
    assert names == ["36 lower left first molar"], names
    checkpoint_sha = sha256_of(root / "fold_0" / "checkpoint_final.pth")
    assert segmentation.GetAttribute("ToothMCL.model_sha256") == checkpoint_sha

    # the corrections, the store and the export work on it as on any other model's result
    from ToothMCLCore.corrections import CorrectionStore
    from ToothMCLCore.corrections.export import export_store
    from ToothMCLCore.io.dataset_layout import read_dataset

    logic.applyCorrection(segmentation, "reassign", tooth=36, target=37)
    logic.saveCorrection(segmentation, tmp_path / "store", "dr who", "36 was 37", patient_id="P1")
    saved = CorrectionStore(tmp_path / "store").load(volume.GetName())
    assert saved.revision.model_sha256 == checkpoint_sha and saved.revision.model_name == root.parent.name
    assert 37 in saved.corrected and 36 not in saved.corrected and 36 in saved.prediction
    export_store(tmp_path / "store", tmp_path / "Dataset302_Corrected", "nnunet")
    (case,) = read_dataset(tmp_path / "Dataset302_Corrected").cases
    np.testing.assert_array_equal(case.load().labels.array, saved.corrected)


def test_a_structure_an_nnunet_model_finds_is_its_own_segment_not_a_tooth(small_phantom, tmp_path):
    """A model that finds only ToothFairy2's upper jawbone gives one segment named so, coded as the
    maxilla, read back as that structure and kept out of the teeth checks (no "very small" flag, no FDI)."""
    import slicer
    from nnunet_models import make_results_folder
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.SegmentDisplay import labelsFromSegmentation
    from ToothMCLSegmentLib.TeethTable import teethTableFromSegmentation
    from ToothMCLSegmentLib.VolumeConversion import addVolumeNode

    root, _ = make_results_folder(tmp_path, spacing=1.0, favour=2)  # dataset class 2 = Upper Jawbone
    scene = slicer.vtkMRMLScene()
    image, _ = small_phantom
    volume = addVolumeNode(scene, image, "phantom CBCT")
    segmentation = SegmentationLogic().segmentVolume(volume, weights=root, device="cpu")
    segments = _segments(segmentation)
    assert [s.GetName() for s in segments] == ["upper jawbone"]
    assert "SCT^70925003^Maxilla" in segments[0].GetTerminology()
    labels, _ = labelsFromSegmentation(segmentation)
    assert set(np.unique(labels).tolist()) == {0, 2}
    (row,) = teethTableFromSegmentation(segmentation, minVolumeMm3=1e12)
    assert row.fdi == 2 and row.flags == []
