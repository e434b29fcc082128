"""Correcting an intraoral scan in the module: numbering tools, region relabel, undo, tooth models, save."""

from __future__ import annotations

import numpy as np
import pytest
import vtk


@pytest.fixture
def labelled_scan(scene):
    """A 9x13 grid surface as a lower-jaw scan: x<-2 is tooth 36, -2<=x<2 tooth 37, x>=2 gingiva.

    The module's state after segmentModel: FDI array, stored prediction, provenance.
    """
    from ToothMCLSegmentLib.SegmentDisplay import setProvenance
    from ToothMCLSegmentLib.VertexLabels import applyVertexLabels, storeVertexPrediction

    plane = vtk.vtkPlaneSource()
    plane.SetOrigin(-6, -4, 0)
    plane.SetPoint1(6, -4, 0)
    plane.SetPoint2(-6, 4, 0)
    plane.SetResolution(12, 8)
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputConnection(plane.GetOutputPort())
    triangles.Update()
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "patient7_lower")
    model.SetAndObservePolyData(triangles.GetOutput())
    x = np.array([triangles.GetOutput().GetPoint(i)[0] for i in range(triangles.GetOutput().GetNumberOfPoints())])
    labels = np.where(x < -2, 36, np.where(x < 2, 37, 0)).astype(np.int32)
    applyVertexLabels(model, labels)
    storeVertexPrediction(model, labels)
    setProvenance(model, {"model": "ios_pt_demo_v1", "model_version": "1.0.0", "model_sha256": "cd" * 32,
                          "jaw": "lower"})
    return model, labels


def _fdi(model):
    import slicer

    return np.array(slicer.util.arrayFromModelPointData(model, "FDI"))


def test_numbering_tools_work_on_a_scan_and_undo_restores_it(labelled_scan):
    """Swap, reassign and quadrant renumbering change the scan's per-vertex FDI; undo restores it exactly."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    logic = SegmentationLogic()
    model, labels = labelled_scan
    entries = logic.applyCorrection(model, "swap", tooth=36, target=37)
    assert entries == [{"op": "swap", "from": 36, "to": 37, "vertices": int((labels > 0).sum())}]
    swapped = _fdi(model)
    assert (swapped[labels == 36] == 37).all() and (swapped[labels == 37] == 36).all()
    logic.applyCorrection(model, "renumber", quadrant=3, step=1)
    assert set(np.unique(_fdi(model))) == {0, 37, 38}

    logic.undoCorrection(model)
    logic.undoCorrection(model)
    np.testing.assert_array_equal(_fdi(model), labels)
    assert not logic.canUndoCorrection(model)


def test_vertices_in_a_rotated_roi_are_the_ones_slicer_calls_inside(scene, labelled_scan):
    """verticesInROI agrees with vtkMRMLMarkupsROINode.IsPointInROIWorld for a rotated box, vertex by vertex."""
    import slicer
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    model, _ = labelled_scan
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetSize(5.0, 3.0, 2.0)
    matrix = vtk.vtkMatrix4x4()
    rotation = vtk.vtkTransform()
    rotation.Translate(1.0, 0.5, 0.0)
    rotation.RotateZ(35)
    rotation.GetMatrix(matrix)
    roi.GetObjectToNodeMatrix().DeepCopy(matrix)
    points = slicer.util.arrayFromModelPoints(model)

    inside = SegmentationLogic().verticesInROI(model, roi)

    expected = [i for i, p in enumerate(points) if roi.IsPointInROIWorld(p)]
    assert 3 < len(expected) < len(points) // 2
    assert inside.tolist() == expected


def test_relabel_region_gives_the_vertices_a_new_label_and_records_what_they_were(scene, labelled_scan):
    """Relabelling the vertices in a box turns them into tooth 38; the diff says how many came from each label."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    logic = SegmentationLogic()
    model, labels = labelled_scan
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(2.0, 0.0, 0.0)
    roi.SetSize(2.5, 20.0, 2.0)  # x in [0.75, 3.25]: a column of 37 (x=1) and two of gingiva (x=2, 3)
    region = logic.verticesInROI(model, roi)

    entries = logic.relabelVertices(model, region, 38)

    after = _fdi(model)
    assert (after[region] == 38).all()
    outside = np.setdiff1d(np.arange(len(labels)), region)
    np.testing.assert_array_equal(after[outside], labels[outside])
    assert entries == [
        {"op": "relabel", "from": 0, "to": 38, "vertices": int((labels[region] == 0).sum())},
        {"op": "relabel", "from": 37, "to": 38, "vertices": int((labels[region] == 37).sum())},
    ]
    assert logic.correctionDiff(model) == entries
    logic.undoCorrection(model)
    np.testing.assert_array_equal(_fdi(model), labels)


def test_relabel_region_refuses_what_would_do_nothing_or_harm(scene, labelled_scan, arch_segmentation):
    """An empty box, a non-FDI label and a CBCT segmentation are refused with a message; labels stay."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.errors import InvalidInputError

    logic = SegmentationLogic()
    model, labels = labelled_scan
    far = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    far.SetCenter(100.0, 100.0, 100.0)
    far.SetSize(1.0, 1.0, 1.0)
    with pytest.raises(InvalidInputError, match="no vertex is selected"):
        logic.relabelVertices(model, logic.verticesInROI(model, far), 38)
    with pytest.raises(InvalidInputError, match="not a label for scan vertices"):
        logic.relabelVertices(model, [0, 1], 19)
    with pytest.raises(InvalidInputError, match="needs an intraoral scan"):
        logic.relabelVertices(arch_segmentation[0], [0, 1], 36)
    with pytest.raises(InvalidInputError, match="select a markups ROI"):
        logic.verticesInROI(model, None)
    np.testing.assert_array_equal(_fdi(model), labels)


def test_saving_a_scan_correction_stores_an_ios_revision(labelled_scan, tmp_path):
    """The store gets modality ios, the jaw, the vertices, the untouched prediction, the correction and the diff."""
    import slicer
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.corrections import CorrectionStore

    logic = SegmentationLogic()
    model, labels = labelled_scan
    logic.applyCorrection(model, "reassign", tooth=37, target=35)

    revision = logic.saveCorrection(model, tmp_path / "store", "Dr Lee", "37 was 35", patient_id="patient7")

    loaded = CorrectionStore(tmp_path / "store").load("patient7_lower")
    assert revision.revision == 1 and loaded.revision.modality == "ios" and loaded.revision.jaw == "lower"
    np.testing.assert_array_equal(loaded.prediction, labels)
    np.testing.assert_array_equal(loaded.corrected, np.where(labels == 37, 35, labels))
    np.testing.assert_allclose(loaded.vertices_ras, slicer.util.arrayFromModelPoints(model))
    assert loaded.revision.operations == [{"op": "reassign", "from": 37, "to": 35,
                                           "vertices": int((labels == 37).sum())}]
    assert loaded.revision.model_name == "ios_pt_demo_v1"


def test_saving_a_scan_without_a_stored_prediction_is_refused(scene, labelled_scan, tmp_path):
    """A scan labelled by hand (no ToothMCL prediction) cannot be saved as a correction; nothing is created."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.errors import InvalidInputError

    model, _ = labelled_scan
    model.GetPolyData().GetPointData().RemoveArray("FDI prediction")
    with pytest.raises(InvalidInputError, match="no stored prediction"):
        SegmentationLogic().saveCorrection(model, tmp_path / "store", "Dr Lee", patient_id="patient7")
    assert not (tmp_path / "store").exists()


def test_tooth_models_are_one_per_tooth_named_and_coloured(scene, labelled_scan):
    """Two teeth give two models named by FDI, coloured from the FDI table; making them again replaces them."""
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore import fdi

    logic = SegmentationLogic()
    model, _ = labelled_scan
    first = logic.createToothModels(model)
    teeth = logic.createToothModels(model)

    assert [t.GetName() for t in teeth] == [fdi.tooth(36).label, fdi.tooth(37).label]
    assert scene.GetNodesByClass("vtkMRMLModelNode").GetNumberOfItems() == 3  # the scan + 2 teeth
    assert all(t.GetScene() is None for t in first)
    for tooth, number in zip(teeth, (36, 37)):
        assert tooth.GetAttribute("ToothMCL.fdi") == str(number)
        np.testing.assert_allclose(tooth.GetDisplayNode().GetColor(), fdi.label_color(number))
        ids = tooth.GetPolyData().GetPointData().GetArray("FDI")
        assert {ids.GetValue(i) for i in range(ids.GetNumberOfTuples())} == {number}
        assert tooth.GetPolyData().GetNumberOfCells() > 0


def test_segmenting_a_scan_keeps_the_prediction_through_corrections(scene, ios_phantoms, tiny_ios_weights):
    """After segmentModel the prediction is kept; a correction changes FDI but not the prediction."""
    import slicer
    from test_vertex_labels import _model_from_mesh
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.VertexLabels import vertexPrediction

    logic = SegmentationLogic()
    model = _model_from_mesh(scene, ios_phantoms["lower"], "phantom lower")
    logic.segmentModel(model, weights=tiny_ios_weights, device="cpu")
    predicted = np.array(slicer.util.arrayFromModelPointData(model, "FDI"))
    teeth = sorted(int(v) for v in np.unique(predicted) if v)
    assert teeth, "the tiny model found no tooth"
    logic.applyCorrection(model, "delete", tooth=teeth[0])

    np.testing.assert_array_equal(vertexPrediction(model), predicted)
    assert not (_fdi(model) == teeth[0]).any()


def test_panel_says_which_pipeline_runs_and_roughly_how_long(scene, labelled_scan):
    """A volume reads as the CBCT pipeline and a model as the scan pipeline, each with the model that
    will run (its kind's default unless one is chosen) and a time that grows with size."""
    from slicer_test_data import add_volume
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    logic = SegmentationLogic()
    model, _ = labelled_scan
    small = add_volume(scene, (50, 60, 70))
    large = add_volume(scene, (250, 400, 400))

    scan_text = logic.pipelineSummary(model, cuda=False)
    assert scan_text.startswith("Intraoral scan (117 vertices)") and scan_text.endswith("on the CPU")
    assert f"with {logic.defaultModel(model)};" in scan_text
    cbct_cpu = logic.pipelineSummary(large, cuda=False)
    assert cbct_cpu.startswith("CBCT volume (40 M voxels): one segment per tooth with cbct_swinunetr_demo_v2; about ")
    assert "with ios_pt_demo_v1;" in logic.pipelineSummary(model, cuda=False, model="ios_pt_demo_v1")

    def seconds(text):
        amount, unit = text.rsplit("about ", 1)[1].split()[:2]
        return float(amount) * (60 if unit == "min" else 1)

    assert seconds(cbct_cpu) > seconds(logic.pipelineSummary(small, cuda=False))
    assert seconds(logic.pipelineSummary(large, cuda=True)) < seconds(cbct_cpu)
    assert logic.pipelineSummary(None) == ""


def test_automatic_model_choice_takes_each_inputs_own_default(scene, labelled_scan):
    """With no model chosen, a scan runs the default intraoral model and a volume the CBCT one, so a
    clinician who loads either and clicks Segment never gets a model of the other modality; the
    boundary refiner, which cannot segment on its own, is not offered."""
    from slicer_test_data import add_volume
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore.inference.cbct import DEFAULT_CBCT_MODEL
    from ToothMCLCore.inference.ios import DEFAULT_IOS_MODEL
    from ToothMCLCore.models.checkpoint import read_card
    from ToothMCLCore.models.registry import resolve_weights

    logic = SegmentationLogic()
    model, _ = labelled_scan
    volume = add_volume(scene, (20, 20, 20))
    assert logic.defaultModel(model) == DEFAULT_IOS_MODEL and logic.defaultModel(volume) == DEFAULT_CBCT_MODEL
    assert {logic.defaultModel(model), logic.defaultModel(volume)} <= set(logic.availableModels())
    # the refiners run inside the models whose cards name them, not alone
    assert not {"ios_boundary_real_v2", "ios_boundary_real_v4"} & set(logic.availableModels())
    tasks = {kind: read_card(resolve_weights(name)[0].with_suffix(".json")).task
             for kind, name in logic.defaultModels().items()}
    assert tasks == {"scan": "ios_teeth", "volume": "cbct_teeth"}
