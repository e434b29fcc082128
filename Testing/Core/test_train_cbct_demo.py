"""The documented demo-training command writes weights the CBCT predictor loads and runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training import train_cbct_demo


@pytest.mark.slow
def test_demo_training_command_writes_loadable_weights_and_cards(tmp_path):
    """A few steps on a coarse grid: both models and cards appear, with the held-out Dice and
    the one-window setting, and the predictor segments a phantom with them."""
    from ToothMCLCore.inference.cbct import CBCTPredictor
    from ToothMCLCore.synthetic.cbct import make_cbct_phantom

    torch.set_num_threads(1)
    code = train_cbct_demo.main(["--out", str(tmp_path), "--cases", "1", "--steps", "2", "--roi-steps", "2",
                                 "--spacing", "2.0", "--eval-every", "2"])
    assert code == 0
    card = json.loads((tmp_path / "cbct_swinunetr_demo_v1.json").read_text())
    assert "not for clinical use" in card["intended_use"]
    assert card["preprocess"]["spacing_mm"] == 2.0
    assert card["sliding_window"]["whole_crop_max_voxels"] == train_cbct_demo.WHOLE_CROP_MAX_VOXELS
    assert card["metrics"]["steps"] == 2 and 0.0 <= card["metrics"]["held_out_mean_dice"] <= 1.0
    predictor = CBCTPredictor(weights=tmp_path / "cbct_swinunetr_demo_v1.safetensors", device="cpu",
                              roi_weights=tmp_path / "cbct_roi_demo_v1.safetensors")
    image, _ = make_cbct_phantom(seed=7, spacing=1.0)
    result = predictor.predict(image)
    assert result.labels.array.shape == image.array.shape
    assert result.provenance["model_sha256"] == card["sha256"]


def test_output_layer_starts_at_the_class_priors():
    """Before any step, the network's mean class probabilities over an input are the priors it
    was started at (background dominant), not a uniform 1/34."""
    from ToothMCLCore.models import build_model

    torch.manual_seed(0)
    net = build_model("swinunetr", train_cbct_demo.TEETH_ARCH).eval()
    freq = np.full(34, 0.003)
    freq[0] = 1.0 - freq[1:].sum()
    train_cbct_demo.init_output_prior(net, freq)
    with torch.no_grad():
        probs = torch.softmax(net(torch.rand(1, 1, 64, 64, 64)), dim=1).mean(dim=(0, 2, 3, 4)).numpy()
    assert probs[0] > 0.8
    assert probs[1:].max() < 0.02
