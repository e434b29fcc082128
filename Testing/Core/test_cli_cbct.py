"""``toothmcl segment-cbct``: outputs in the input geometry, progress, and bad input refused."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import SimpleITK as sitk

from ToothMCLCore.cli import main
from ToothMCLCore.errors import CancelledError
from ToothMCLCore.inference.cbct import CBCTPredictor
from ToothMCLCore.io import read_volume, write_volume


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory, small_phantom):
    image, _ = small_phantom
    path = tmp_path_factory.mktemp("input") / "phantom.nii.gz"
    write_volume(path, image)
    return path


def test_segment_cbct_writes_seg_nrrd_on_the_input_grid(tmp_path, phantom_file, tiny_weights, capsys):
    """The .seg.nrrd lies exactly on the input's oblique grid and Slicer's reader sees FDI segments."""
    import slicerio

    out = tmp_path / "teeth.seg.nrrd"
    code = main(["segment-cbct", str(phantom_file), "-o", str(out), "--weights", str(tiny_weights),
                 "--device", "cpu"])
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "teeth found" in printed and f"wrote {out}" in printed
    source = read_volume(phantom_file)
    labels = sitk.ReadImage(str(out))
    assert labels.GetSize() == tuple(reversed(source.array.shape))
    np.testing.assert_allclose(labels.GetDirection(), sitk.ReadImage(str(phantom_file)).GetDirection(), atol=1e-6)
    np.testing.assert_allclose(labels.GetOrigin(), sitk.ReadImage(str(phantom_file)).GetOrigin(), atol=1e-4)
    seg = slicerio.read_segmentation(str(out))
    for segment in seg["segments"]:
        number = int(segment["name"].split()[0])
        assert segment["labelValue"] == number


def test_segment_cbct_writes_nifti_label_values(tmp_path, phantom_file, tiny_weights):
    """A .nii.gz output holds FDI values (or 0/99) and the input's shape."""
    out = tmp_path / "teeth.nii.gz"
    assert main(["segment-cbct", str(phantom_file), "-o", str(out), "--weights", str(tiny_weights), "-q"]) == 0
    labels = read_volume(out) if False else sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    allowed = {0, 99} | {q * 10 + p for q in (1, 2, 3, 4) for p in range(1, 9)}
    assert set(np.unique(labels).tolist()) <= allowed
    assert labels.shape == read_volume(phantom_file).array.shape


def test_progress_reports_named_stages_and_cancel_stops_everything(small_phantom, tiny_weights):
    """Stages arrive in order; a cancel during segmentation raises and nothing is returned."""
    image, _ = small_phantom
    predictor = CBCTPredictor(weights=tiny_weights, device="cpu")
    seen = []
    predictor.predict(image, progress=lambda stage, f: seen.append((stage, f)))
    stages = [s for s, _ in seen]
    assert stages[0] == "preprocess" and stages[-1] == "done"
    assert {"crop", "segment", "postprocess", "restore"} <= set(stages)
    assert [f for _, f in seen] == sorted(f for _, f in seen)

    cancel = threading.Event()

    def cancel_when_segmenting(stage, fraction):
        if stage == "segment":
            cancel.set()

    with pytest.raises(CancelledError):
        predictor.predict(image, progress=cancel_when_segmenting, cancel=cancel)


def _bad_inputs(tmp):
    """(name, path) of files a user might pass by mistake."""
    files = {}
    (tmp / "notes.nrrd").write_text("this is not an image\n")
    files["text named .nrrd"] = tmp / "notes.nrrd"
    img = sitk.GetImageFromArray(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    sitk.WriteImage(img, str(tmp / "full.nii.gz"))
    data = (tmp / "full.nii.gz").read_bytes()
    (tmp / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    files["truncated"] = tmp / "truncated.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((30, 30), np.float32)), str(tmp / "flat.nrrd"))
    files["2-D"] = tmp / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 10, 10, 10), np.float32)), str(tmp / "four.nii.gz"))
    files["4-D"] = tmp / "four.nii.gz"
    rgb = sitk.GetImageFromArray(np.ones((10, 10, 10, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp / "rgb.nrrd"))
    files["RGB"] = tmp / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((10, 10, 10), 7, np.float32)), str(tmp / "constant.nrrd"))
    files["constant"] = tmp / "constant.nrrd"
    nan = np.ones((10, 10, 10), np.float32)
    nan[5, 5, 5] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(tmp / "nan.nrrd"))
    files["NaN"] = tmp / "nan.nrrd"
    metres = sitk.GetImageFromArray(np.random.default_rng(0).random((10, 10, 10)).astype(np.float32))
    metres.SetSpacing((0.0003, 0.0003, 0.0003))
    sitk.WriteImage(metres, str(tmp / "metres.nrrd"))
    files["spacing in metres"] = tmp / "metres.nrrd"
    (tmp / "huge.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 3000 3000 3000\n"
                                    b"encoding: raw\nspacings: 0.3 0.3 0.3\n\n")
    files["too large"] = tmp / "huge.nrrd"
    files["missing"] = tmp / "nowhere.nii.gz"
    return files


BAD = ["text named .nrrd", "truncated", "2-D", "4-D", "RGB", "constant", "NaN", "spacing in metres",
       "too large", "missing"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_exits_nonzero_with_one_line_and_no_output(tmp_path, tiny_weights, capsys, kind):
    """Every bad input: exit code > 0, a single 'toothmcl: error:' line, no output file."""
    path = _bad_inputs(tmp_path)[kind]
    out = tmp_path / "out" / "teeth.seg.nrrd"
    out.parent.mkdir()
    code = main(["segment-cbct", str(path), "-o", str(out), "--weights", str(tiny_weights)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("toothmcl: error:")
    assert list(out.parent.iterdir()) == []


def test_unknown_output_format_is_refused_before_any_work(tmp_path, phantom_file, capsys):
    """-o teeth.png fails at once, naming the formats that work."""
    code = main(["segment-cbct", str(phantom_file), "-o", str(tmp_path / "teeth.png")])
    assert code != 0 and ".seg.nrrd" in capsys.readouterr().err
    assert not (tmp_path / "teeth.png").exists()


def test_missing_weights_leave_no_output(tmp_path, phantom_file, capsys):
    """A wrong --weights path fails with advice and writes nothing."""
    out = tmp_path / "teeth.seg.nrrd"
    code = main(["segment-cbct", str(phantom_file), "-o", str(out), "--weights", str(tmp_path / "no.safetensors")])
    assert code != 0 and "not found" in capsys.readouterr().err
    assert not out.exists()


def test_networks_built_in_the_background_give_the_same_labels(small_phantom, tiny_weights):
    """The command line builds the networks while the scan is read and preprocessed: same result."""
    image, _ = small_phantom
    at_once = CBCTPredictor(weights=tiny_weights, device="cpu").predict(image)
    background = CBCTPredictor(weights=tiny_weights, device="cpu", load_in_background=True).predict(image)
    np.testing.assert_array_equal(background.labels.array, at_once.labels.array)
    assert [t.fdi for t in background.teeth] == [t.fdi for t in at_once.teeth]


def test_weights_that_fail_to_build_in_the_background_leave_no_output(tmp_path, phantom_file, misfit_weights,
                                                                      capsys):
    """A card whose architecture does not fit its tensors passes the checksum, fails while the scan is
    being read, and the command still ends with one error line, a non-zero code and no file."""
    out = tmp_path / "teeth.seg.nrrd"
    code = main(["segment-cbct", str(phantom_file), "-o", str(out), "--weights", str(misfit_weights),
                 "--device", "cpu", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and not out.exists()
    assert len(err) == 1 and "do not fit architecture" in err[0]


@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
def test_restored_labels_follow_the_truth_at_least_as_well_as_label_gaussian_resampling(orientation):
    """Labels restored from a 0.8 mm crop onto a 0.4 mm scan match the truth as well as SimpleITK's
    label-Gaussian resampling does, clearly better than nearest neighbour, and stay inside the crop."""
    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice
    from ToothMCLCore.inference.cbct import _sub_geometry, restore_labels
    from ToothMCLCore.preprocessing.cbct import resample_onto, resample_to_canonical
    from ToothMCLCore.synthetic.cbct import make_cbct_phantom
    from ToothMCLCore.types import Volume

    _, labels = make_cbct_phantom(seed=4, spacing=0.4, orientation=orientation, field_of_view_mm=(90, 90, 70))
    canonical = resample_to_canonical(labels, 0.8, is_label=True)
    teeth = np.nonzero(canonical.array)
    box = tuple(slice(max(int(a.min()) - 6, 0), int(a.max()) + 7) for a in teeth)
    crop, crop_geom = canonical.array[box], _sub_geometry(canonical.geometry, box)

    def score(pred):
        return mean_dice(dice_per_tooth(pred, labels.array))

    restored = restore_labels(crop, crop_geom, labels)
    gaussian = resample_onto(Volume(crop, crop_geom), labels.geometry, labels.array.shape, is_label=True,
                             smooth_labels=True).array
    nearest = resample_onto(Volume(crop, crop_geom), labels.geometry, labels.array.shape, is_label=True).array
    assert score(restored) >= score(gaussian) - 0.003
    assert score(restored) >= score(nearest) + 0.01
    assert set(np.unique(restored)) == set(np.unique(crop))

    corner = tuple(slice(s // 4, 3 * s // 4) for s in canonical.array.shape)  # a crop that cuts teeth
    part = restore_labels(canonical.array[corner], _sub_geometry(canonical.geometry, corner), labels)
    ras = labels.geometry.ijk_to_ras @ np.vstack([np.array(np.nonzero(part))[::-1], np.ones(int(part.astype(bool).sum()))])
    inside = (canonical.geometry.ras_to_ijk @ ras)[:3]
    lo = np.array([s.start for s in corner][::-1]) - 1.5
    hi = np.array([s.stop for s in corner][::-1]) + 0.5
    assert part.any() and np.all((inside.T >= lo) & (inside.T <= hi))


def test_a_small_crop_can_be_segmented_in_one_window(small_phantom, tiny_weights):
    """With whole_crop_max_voxels set, the network runs once over the whole crop; otherwise in windows."""
    from ToothMCLCore.inference.cbct import CBCTPredictor
    from ToothMCLCore.types import Volume

    image, _ = small_phantom
    image = Volume(image.array[:70, :70, :90].copy(), image.geometry)  # a corner: a few windows
    calls = {}
    for limit in (0, 10_000_000):
        predictor = CBCTPredictor(weights=tiny_weights, device="cpu", use_roi=False, whole_crop_max_voxels=limit,
                                  backend="torch")  # the PyTorch network's calls are what is counted
        forward = predictor.net.forward
        shapes = []
        predictor.net.forward = lambda x, f=forward, s=shapes: (s.append(tuple(x.shape[2:])), f(x))[1]
        result = predictor.predict(image)
        calls[limit] = shapes
        assert result.labels.array.shape == image.array.shape
    assert len(calls[0]) > 1 and all(s == (64, 64, 64) for s in calls[0])
    assert len(calls[10_000_000]) == 1 and all(n % 32 == 0 and n >= 64 for n in calls[10_000_000][0])


def test_bf16_on_cpu_gives_the_fp32_labels_and_says_which_ran(tmp_path):
    """--precision bf16 (auto's choice on CPUs with bf16 instructions) and fp32 number the demo phantom's
    teeth the same (>= 99.9 % of voxels), each file records its precision; an unknown one is refused."""
    import nrrd

    from ToothMCLCore.synthetic import make_cbct_phantom

    image, _ = make_cbct_phantom(11, spacing=0.6)
    write_volume(tmp_path / "scan.nii.gz", image)
    labels = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.seg.nrrd"
        assert main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--device", "cpu",
                     "--precision", precision, "-q"]) == 0
        labels[precision], header = nrrd.read(str(out))
        assert header["ToothMCL.precision"] == precision
    assert len(np.unique(labels["fp32"])) > 20
    assert np.mean(labels["fp32"] == labels["bf16"]) >= 0.999
    with pytest.raises(SystemExit):
        main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "x.seg.nrrd"), "--precision", "fp8"])
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_precision_names_resolve_per_device_and_a_wrong_one_is_refused():
    """CUDA always runs fp16 AMP; on CPU auto follows the hardware's bf16 support; other names are refused."""
    from ToothMCLCore.errors import ConfigError
    from ToothMCLCore.inference.device import cpu_has_native_bf16, resolve_precision

    assert resolve_precision("bf16", "cuda") == resolve_precision("fp32", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("FP32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match="unknown precision"):
        CBCTPredictor(device="cpu", precision="half")
