"""``--backend openvino`` / ``onnxruntime`` / ``auto``: the CBCT windows run from the exported
graph, with the labels PyTorch gives."""

from __future__ import annotations

import sys

import numpy as np
import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def torch_labels(small_phantom):
    """PyTorch fp32's result over overlapping card-size windows: the reference of the other backends."""
    from ToothMCLCore.inference.cbct import CBCTPredictor

    return CBCTPredictor(device="cpu", whole_crop_max_voxels=0, precision="fp32", backend="torch").predict(small_phantom[0])


def test_onnx_runtime_windows_give_the_labels_pytorch_gives_and_the_graph_is_exported_once(small_phantom, cache,
                                                                                            torch_labels):
    """The shipped demo model over overlapping windows (not one whole-crop window): ONNX Runtime's
    labels equal PyTorch fp32's on >= 99.9 % of the voxels (same Dice against the truth), the
    provenance says which backend ran,
    the exported graph is cached under $TOOTHMCL_CACHE/onnx and a second predictor reuses it."""
    from ToothMCLCore.inference.cbct import CBCTPredictor

    image, truth = small_phantom
    torch_run = torch_labels
    first = CBCTPredictor(device="cpu", whole_crop_max_voxels=0, backend="onnxruntime")
    onnx_run = first.predict(image)
    assert first._runner.exported and first._runner.path.parent == cache / "onnx" and first._runner.path.is_file()
    assert np.mean(onnx_run.labels.array == torch_run.labels.array) >= 0.999
    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice

    scores = [mean_dice(dice_per_tooth(run.labels.array, truth.array)) for run in (torch_run, onnx_run)]
    assert abs(scores[0] - scores[1]) <= 0.002, scores  # the same segmentation quality
    assert onnx_run.provenance["backend"] == "onnxruntime" and onnx_run.provenance["precision"] == "fp32"
    assert torch_run.provenance["backend"] == "torch"
    again = CBCTPredictor(device="cpu", whole_crop_max_voxels=0, backend="onnxruntime")
    np.testing.assert_array_equal(again.predict(image).labels.array, onnx_run.labels.array)
    assert not again._runner.exported


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_windows_give_the_labels_pytorch_gives(small_phantom, cache, precision, torch_labels):
    """OpenVINO runs the windows in the precision asked for: fp32 labels equal PyTorch fp32's on
    >= 99.9 % of the voxels, bf16 (its fast path) on >= 99.5 %, and both segment as well (Dice
    against the truth within 0.005); the compiled graph is kept under $TOOTHMCL_CACHE/openvino and
    the provenance says what ran."""
    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice
    from ToothMCLCore.inference.cbct import CBCTPredictor

    image, truth = small_phantom
    torch_run = torch_labels
    predictor = CBCTPredictor(device="cpu", whole_crop_max_voxels=0, precision=precision, backend="openvino")
    run = predictor.predict(image)
    assert run.provenance["backend"] == "openvino" and run.provenance["precision"] == precision
    assert np.mean(run.labels.array == torch_run.labels.array) >= (0.999 if precision == "fp32" else 0.995)
    scores = [mean_dice(dice_per_tooth(r.labels.array, truth.array)) for r in (torch_run, run)]
    assert abs(scores[0] - scores[1]) <= 0.005, scores
    assert any((cache / "openvino").iterdir())  # the compiled blob, read by the next run instead of compiling


def test_auto_runs_openvino_on_cpu_when_installed_and_pytorch_otherwise(small_phantom, cache, monkeypatch):
    """The default backend: OpenVINO where it is installed (card-size windows), PyTorch without it,
    and PyTorch for a crop run as one window (a new graph size per scan is never exported)."""
    from ToothMCLCore.inference.cbct import CBCTPredictor

    assert CBCTPredictor(device="cpu", whole_crop_max_voxels=0).backend == "openvino"
    assert CBCTPredictor(device="cpu").predict(small_phantom[0]).provenance["backend"] == "torch"  # whole-crop card
    assert not (cache / "onnx").exists()
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert CBCTPredictor(device="cpu", whole_crop_max_voxels=0).backend == "torch"


def test_a_crop_run_as_one_window_stays_in_pytorch(small_phantom, cache):
    """With the card's whole-crop window (a new size for every scan) nothing is exported."""
    from ToothMCLCore.inference.cbct import CBCTPredictor

    result = CBCTPredictor(device="cpu", backend="onnxruntime").predict(small_phantom[0])
    assert result.provenance["backend"] == "torch" and not (cache / "onnx").exists()


def test_the_backend_is_refused_where_it_cannot_run(monkeypatch, tmp_path, capsys):
    """Without the runtime installed, or on a GPU, the option says what to do."""
    from ToothMCLCore.cli import main
    from ToothMCLCore.errors import ConfigError, WeightsError
    from ToothMCLCore.inference.cbct import CBCTPredictor

    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(ConfigError, match="runs on CPU"):
            CBCTPredictor(device="cuda", backend=backend)
    with pytest.raises(ConfigError, match="backend must be one of"):
        CBCTPredictor(device="cpu", backend="tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed: import fails
    with pytest.raises(WeightsError, match=r"pip install -e \"\.\[onnx\]\""):
        CBCTPredictor(device="cpu", backend="onnxruntime")
    out = tmp_path / "out.nii.gz"
    assert main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--backend", "onnxruntime"]) != 0
    assert "onnx" in capsys.readouterr().err and not out.exists()
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(WeightsError, match=r"pip install -e \"\.\[openvino\]\""):
        CBCTPredictor(device="cpu", backend="openvino")
