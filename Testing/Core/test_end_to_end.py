"""End to end with the shipped demo weights: held-out phantoms, the demo command, the registry."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice
from ToothMCLCore.synthetic.cbct import make_cbct_phantom


@pytest.fixture(scope="module")
def predictor():
    from ToothMCLCore.inference.cbct import CBCTPredictor

    return CBCTPredictor(device="cpu")  # the default registry model: the bundled demo weights


def test_shipped_demo_weights_are_registered_with_cards(predictor):
    """The default model is the bundled demo SwinUNETR, with its ROI model, marked not clinical."""
    assert predictor.card.name == "cbct_swinunetr_demo_v1"
    assert predictor.roi_card is not None and predictor.roi_card.name == "cbct_roi_demo_v1"
    assert "not for clinical use" in predictor.card.intended_use
    assert len(predictor.card.sha256) == 64


@pytest.mark.parametrize("seed,options", [
    (101, {"orientation": "LPS"}),
    (102, {"orientation": "oblique", "offset": -1000.0, "missing": (14, 36)}),
])
def test_demo_weights_segment_held_out_phantoms(predictor, seed, options):
    """Phantoms never seen in training: every present tooth found, mean Dice >= 0.85."""
    image, truth = make_cbct_phantom(seed=seed, spacing=0.8, **options)
    result = predictor.predict(image)
    scores = dice_per_tooth(result.labels.array, truth.array)
    assert mean_dice(scores) >= 0.85, scores
    present = set(fdi.present_teeth(np.unique(truth.array)))
    found = {t.fdi for t in result.teeth}
    assert present <= found | {n for n, d in scores.items() if d < 0.5} and len(found - present) <= 1
    for missing in options.get("missing", ()):
        assert missing not in found


@pytest.mark.slow
def test_toothmcl_demo_prints_dice_and_writes_slicer_files(tmp_path, capsys):
    """``toothmcl demo`` writes the phantom, its truth and the prediction, and reports Dice >= 0.85."""
    import slicerio

    from ToothMCLCore.cli import main

    assert main(["demo", "--out", str(tmp_path), "-q", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"CBCT mean Dice over (\d+) present teeth: ([0-9.]+)", out)
    assert match and float(match.group(2)) >= 0.85, out
    for name in ("phantom_cbct.nii.gz", "phantom_cbct_truth.seg.nrrd", "phantom_cbct_pred.seg.nrrd"):
        assert (tmp_path / name).is_file()
    seg = slicerio.read_segmentation(str(tmp_path / "phantom_cbct_pred.seg.nrrd"))
    assert {s["labelValue"] for s in seg["segments"]} <= set(fdi.TEETH) | {fdi.METAL_LABEL}


@pytest.mark.parametrize("jaw", ["upper", "lower"])
def test_demo_ios_weights_segment_a_held_out_scan(tmp_path, jaw):
    """A phantom scan never seen in training: mean per-tooth Dice >= 0.85 on the file's vertices."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.io.mesh import read_mesh, write_mesh
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    truth = make_ios_phantom(103, jaw=jaw, resolution_mm=0.5, missing=(15, 45))
    path = tmp_path / f"held_out_{jaw}.ply"
    write_mesh(path, truth)
    result = IOSPredictor(device="cpu").predict(read_mesh(path), jaw)
    scores = dice_per_tooth(result.labels, truth.labels)
    assert mean_dice(scores) >= 0.85, scores
    assert 15 not in result.labels and 45 not in result.labels
