"""``--backend onnxruntime``: the CBCT windows run in ONNX Runtime, with the labels PyTorch gives."""

from __future__ import annotations

import sys

import numpy as np
import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnx_runtime_windows_give_the_labels_pytorch_gives_and_the_graph_is_exported_once(small_phantom, cache):
    """The shipped demo model over overlapping windows (not one whole-crop window): ONNX Runtime's
    labels equal PyTorch fp32's on >= 99.9 % of the voxels (same Dice against the truth), the
    provenance says which backend ran,
    the exported graph is cached under $TOOTHMCL_CACHE/onnx and a second predictor reuses it."""
    from ToothMCLCore.inference.cbct import CBCTPredictor

    image, truth = small_phantom
    torch_run = CBCTPredictor(device="cpu", whole_crop_max_voxels=0, precision="fp32").predict(image)
    first = CBCTPredictor(device="cpu", whole_crop_max_voxels=0, backend="onnxruntime")
    onnx_run = first.predict(image)
    assert first._onnx.exported and first._onnx.path.parent == cache / "onnx" and first._onnx.path.is_file()
    assert np.mean(onnx_run.labels.array == torch_run.labels.array) >= 0.999
    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice

    scores = [mean_dice(dice_per_tooth(run.labels.array, truth.array)) for run in (torch_run, onnx_run)]
    assert abs(scores[0] - scores[1]) <= 0.002, scores  # the same segmentation quality
    assert onnx_run.provenance["backend"] == "onnxruntime" and onnx_run.provenance["precision"] == "fp32"
    assert torch_run.provenance["backend"] == "torch"
    again = CBCTPredictor(device="cpu", whole_crop_max_voxels=0, backend="onnxruntime")
    np.testing.assert_array_equal(again.predict(image).labels.array, onnx_run.labels.array)
    assert not again._onnx.exported


def test_a_crop_run_as_one_window_stays_in_pytorch(small_phantom, cache):
    """With the card's whole-crop window (a new size for every scan) nothing is exported."""
    from ToothMCLCore.inference.cbct import CBCTPredictor

    result = CBCTPredictor(device="cpu", backend="onnxruntime").predict(small_phantom[0])
    assert result.provenance["backend"] == "torch" and not (cache / "onnx").exists()


def test_the_backend_is_refused_where_it_cannot_run(monkeypatch, tmp_path, capsys):
    """Without ONNX Runtime installed, on a GPU, or with an nnU-Net model the option says what to do."""
    from ToothMCLCore.cli import main
    from ToothMCLCore.errors import ConfigError, WeightsError
    from ToothMCLCore.inference.cbct import CBCTPredictor

    with pytest.raises(ConfigError, match="runs on CPU"):
        CBCTPredictor(device="cuda", backend="onnxruntime")
    with pytest.raises(ConfigError, match="backend must be one of"):
        CBCTPredictor(device="cpu", backend="tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed: import fails
    with pytest.raises(WeightsError, match=r"pip install -e \"\.\[onnx\]\""):
        CBCTPredictor(device="cpu", backend="onnxruntime")
    out = tmp_path / "out.nii.gz"
    assert main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--backend", "onnxruntime"]) != 0
    assert "onnx" in capsys.readouterr().err and not out.exists()
