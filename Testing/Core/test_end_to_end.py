"""End to end with the shipped demo weights: registry, ROI crop, IOS teeth, the demo command
and its Dice targets (mean over present teeth >= 0.85 for the CBCT and for each scan)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.synthetic.cbct import make_cbct_phantom


@pytest.fixture(scope="module")
def predictor():
    from ToothMCLCore.inference.cbct import CBCTPredictor

    return CBCTPredictor(device="cpu")  # the default registry model: the bundled demo weights


def test_shipped_demo_weights_are_registered_with_cards(predictor):
    """The default model is the bundled demo SwinUNETR, with its ROI model, marked not clinical."""
    assert predictor.card.name == "cbct_swinunetr_demo_v2"
    assert predictor.roi_card is not None and predictor.roi_card.name == "cbct_roi_demo_v1"
    assert "not for clinical use" in predictor.card.intended_use
    assert len(predictor.card.sha256) == 64


@pytest.mark.parametrize("seed,options", [
    (101, {"orientation": "LPS"}),
    (102, {"orientation": "oblique", "offset": -1000.0, "missing": (14, 36)}),
])
def test_shipped_roi_model_crops_to_the_whole_dentition(predictor, seed, options):
    """On held-out phantoms the bundled ROI model's box holds every tooth voxel and cuts the volume."""
    from ToothMCLCore.preprocessing.cbct import preprocess_cbct, resample_to_canonical

    image, truth = make_cbct_phantom(seed=seed, spacing=0.8, field_of_view_mm=(120, 120, 90), **options)
    canonical, _ = preprocess_cbct(image, predictor.preprocess_config)
    box, rule = predictor._crop_box(canonical)
    assert rule == "roi-model"
    labels = resample_to_canonical(truth, predictor.preprocess_config.spacing_mm, is_label=True).array
    teeth = fdi.fdi_to_class_index(labels, "cbct", strict=False) > 0
    assert teeth[box].sum() == teeth.sum()
    assert np.prod([b.stop - b.start for b in box]) < 0.6 * labels.size


@pytest.mark.slow
def test_toothmcl_demo_prints_dice_and_writes_slicer_files(tmp_path, capsys):
    """``toothmcl demo`` writes the phantom, its truth and the prediction, and reports per-tooth Dice, and
    for the intraoral model trained on real scans its figures on real scans."""
    import slicerio

    from ToothMCLCore.cli import main
    from ToothMCLCore.models.checkpoint import read_card
    from ToothMCLCore.models.registry import resolve_weights

    assert main(["demo", "--out", str(tmp_path), "-q", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"CBCT mean Dice over (\d+) present teeth: ([0-9.]+)", out)
    assert match and int(match.group(1)) >= 28, out  # the demo phantom has 31 or 32 teeth less 25
    assert float(match.group(2)) >= 0.85, out  # the target for the shipped demo weights
    # the intraoral model is the real-scan one: its real test figures are printed beside the phantom's Dice,
    # which is low (a phantom is not a real scan) but not nil
    assert "segmenting the intraoral scans with ios_pt_real_v2" in out
    split = read_card(resolve_weights("ios_pt_real_v2")[0].with_suffix(".json")).metrics["test_split"]
    figures = (f"Dice {split['upper']['mean_dice']:.3f} upper / {split['lower']['mean_dice']:.3f} lower, tooth vs "
               f"gingiva {split['upper']['tooth_vs_gingiva']:.3f} / {split['lower']['tooth_vs_gingiva']:.3f}")
    assert re.search(r"ios_pt_real_v2 was trained on real scans; on 14 real test jaws .* " + re.escape(figures), out), out
    for jaw in ("upper", "lower"):
        ios = re.search(rf"IOS {jaw} mean Dice over (\d+) present teeth: ([0-9.]+)", out)
        assert ios and int(ios.group(1)) >= 13 and float(ios.group(2)) >= 0.25, out
    for name in ("phantom_cbct.nii.gz", "phantom_cbct_truth.seg.nrrd", "phantom_cbct_pred.seg.nrrd",
                 "phantom_upper.ply", "phantom_lower_pred.json", "phantom_lower_pred.ply"):
        assert (tmp_path / name).is_file()
    seg = slicerio.read_segmentation(str(tmp_path / "phantom_cbct_pred.seg.nrrd"))
    assert {s["labelValue"] for s in seg["segments"]} <= set(fdi.TEETH) | {fdi.METAL_LABEL}


@pytest.mark.parametrize("jaw", ["upper", "lower"])
def test_phantom_ios_weights_separate_teeth_from_gingiva_on_a_held_out_scan(tmp_path, jaw):
    """The phantom model, still available by name, on a phantom scan never seen in training, with a
    missing tooth: >= 90 % of vertices right on tooth vs gingiva, and only teeth of its jaw."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.io.mesh import read_mesh, write_mesh
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    truth = make_ios_phantom(103, jaw=jaw, resolution_mm=0.5, missing=(15, 45))
    path = tmp_path / f"held_out_{jaw}.ply"
    write_mesh(path, truth)
    result = IOSPredictor(model="ios_pt_demo_v1", device="cpu").predict(read_mesh(path), jaw)
    assert ((result.labels > 0) == (truth.labels > 0)).mean() >= 0.90
    assert set(np.unique(result.labels)) <= {0} | set(fdi.teeth_of_jaw(jaw))
    assert len(result.teeth) >= 10


def test_paper_protocol_keeps_the_networks_argmax_without_our_clean_up(predictor, monkeypatch):
    """CBCTPredictor(paper_protocol=True): every voxel keeps its most probable class (the paper's
    output); the connected-component clean-up and the order-aware numbering (ours) do not run, so
    islands the default pipeline removes stay; the provenance says which protocol ran."""
    from ToothMCLCore.inference import cbct
    from ToothMCLCore.inference.cbct import CBCTPredictor

    image, _ = make_cbct_phantom(seed=103, spacing=0.8, field_of_view_mm=(120, 120, 90))
    ours = predictor.predict(image)
    monkeypatch.setattr(cbct, "number_teeth", lambda *a: pytest.fail("the paper protocol cleans nothing"))
    paper = CBCTPredictor(device="cpu", paper_protocol=True).predict(image)
    assert paper.provenance["paper_protocol"] and not ours.provenance["paper_protocol"]
    assert paper.labels.array.shape == ours.labels.array.shape
    # the clean-up only removes or renumbers: every voxel our pipeline calls tooth is tooth in the argmax
    assert np.all(paper.labels.array[ours.labels.array > 0] > 0)
    assert (paper.labels.array > 0).sum() >= (ours.labels.array > 0).sum()
