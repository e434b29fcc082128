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
    assert card["sliding_window"]["whole_crop_max_voxels"] == 64**3  # the 128 mm cube at 2 mm
    assert card["metrics"]["steps"] == 2 and 0.0 <= card["metrics"]["held_out_mean_dice"] <= 1.0
    predictor = CBCTPredictor(weights=tmp_path / "cbct_swinunetr_demo_v1.safetensors", device="cpu",
                              roi_weights=tmp_path / "cbct_roi_demo_v1.safetensors")
    image, _ = make_cbct_phantom(seed=7, spacing=1.0)
    result = predictor.predict(image)
    assert result.labels.array.shape == image.array.shape
    assert result.provenance["model_sha256"] == card["sha256"]

    # the shipped model's second step: continue on a finer grid, with gaps, under a new name
    code = train_cbct_demo.main(["--out", str(tmp_path), "--cases", "2", "--steps", "2", "--skip-roi",
                                 "--spacing", "1.5", "--eval-every", "2", "--gaps", "--name", "next_v2",
                                 "--init", str(tmp_path / "cbct_swinunetr_demo_v1.safetensors")])
    assert code == 0
    follow = json.loads((tmp_path / "next_v2.json").read_text())
    assert follow["name"] == "next_v2" and follow["preprocess"]["spacing_mm"] == 1.5
    assert f"Continued from cbct_swinunetr_demo_v1 (sha256 {card['sha256'][:12]})" in follow["notes"]
    assert "missing teeth" in follow["training_data"]
    assert CBCTPredictor(weights=tmp_path / "next_v2.safetensors", device="cpu",
                         roi_weights=tmp_path / "cbct_roi_demo_v1.safetensors").card.name == "next_v2"


def test_gaps_take_teeth_out_of_odd_phantoms_but_never_25():
    """With --gaps every odd-seeded phantom lacks one to three teeth, never a third molar (the
    generator draws those) nor 25 (the demo's gap stays unseen); the phantom really lacks them."""
    from ToothMCLCore.synthetic.cbct import make_cbct_phantom

    drawn = set()
    for seed in range(40):
        options = train_cbct_demo.phantom_options(seed, gaps=True)
        assert train_cbct_demo.phantom_options(seed) == {k: v for k, v in options.items() if k != "missing"}
        if seed % 2 == 0:
            assert "missing" not in options
            continue
        assert 1 <= len(options["missing"]) <= 3
        drawn |= set(options["missing"])
    assert 25 not in drawn and not any(t % 10 == 8 for t in drawn) and len(drawn) > 10
    options = train_cbct_demo.phantom_options(3, gaps=True)
    _, labels = make_cbct_phantom(seed=3, spacing=0.8, **options)
    assert not set(options["missing"]) & set(np.unique(labels.array).tolist())


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
