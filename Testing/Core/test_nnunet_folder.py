"""nnU-Net v2 results folders read safely: the network nnU-Net would build, its weights, no code run."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from nnunet_models import checkpoint_dict, dataset_dict, make_results_folder, plans_dict

from ToothMCLCore.errors import WeightsError
from ToothMCLCore.models import nnunet

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture
def results(tmp_path):
    """A results folder with fold_0, made with nnU-Net's own classes; returns (folder, reference net)."""
    return make_results_folder(tmp_path)


def test_the_network_and_weights_are_those_nnunet_builds(results):
    """load_network gives nnU-Net's own network for the plans, with the fold's weights: the same
    output on the same input; the configuration comes from the folder name."""
    root, reference = results
    folder = nnunet.read_results_folder(root)
    assert folder.configuration == "3d_fullres" and set(folder.checkpoints) == {"0"}
    network, doc = nnunet.load_network(folder)
    assert type(network) is type(reference) and doc["trainer_name"] == "nnUNetTrainer"
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(network(x), reference(x))


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(results, tmp_path):
    """A pickle whose loading calls a function (the classic malicious checkpoint) is refused with a
    message that says why; the function never ran."""
    root, network = results
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    doc = checkpoint_dict(network, plans_dict(), dataset_dict())  # what the fixture wrote, rebuilt
    doc["logging"]["note"] = Payload()
    torch.save(doc, root / "fold_0" / "checkpoint_final.pth", pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(WeightsError, match="never unpickles code"):
        nnunet.load_network(nnunet.read_results_folder(root))
    assert not marker.exists()


def test_a_checkpoint_written_under_numpy_1_loads(results):
    """nnU-Net's log holds NumPy floats, pickled under the name the writing NumPy used; most public
    models were trained under NumPy 1 (numpy.core...), so that name must load as data too."""
    import zipfile

    root, _ = results
    path = root / "fold_0" / "checkpoint_final.pth"
    with zipfile.ZipFile(path) as zin:
        entries = {name: zin.read(name) for name in zin.namelist()}
    pickled = next(name for name in entries if name.endswith("data.pkl"))
    assert b"numpy._core.multiarray\nscalar" in entries[pickled]  # written by this NumPy 2
    entries[pickled] = entries[pickled].replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name, data in entries.items():
            zout.writestr(name, data)
    _, doc = nnunet.load_network(nnunet.read_results_folder(root))
    assert doc["_best_ema"] == pytest.approx(0.4)


@pytest.mark.parametrize("field,value,match", [
    ("network_class_name", "os.system", "not a class of dynamic_network_architectures"),
    ("network_class_name", "dynamic_network_architectures.architectures.unet.NoSuchUNet", "is not a torch.nn.Module"),
    ("conv_op", "builtins.eval", "not a class of torch.nn"),
])
def test_plans_naming_classes_outside_the_allowed_libraries_are_refused(results, field, value, match):
    """The network class must come from dynamic_network_architectures, the layer classes from torch.nn:
    nnU-Net's pydoc.locate would import and call whatever the plans name."""
    root, _ = results
    plans = json.loads((root / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    if field == "network_class_name":
        arch[field] = value
    else:
        arch["arch_kwargs"][field] = value
    (root / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(WeightsError, match=match):
        nnunet.load_network(nnunet.read_results_folder(root))


def test_malformed_folders_are_refused_with_what_to_do(results, tmp_path):
    """No folder, a missing file, no fold, a region-based model, a foreign folder name, weights of
    another network: each a WeightsError that names the problem."""
    root, _ = results
    with pytest.raises(WeightsError, match="is not a folder"):
        nnunet.read_results_folder(tmp_path / "nowhere")
    with pytest.raises(WeightsError, match="fold_3"):
        nnunet.read_results_folder(root, folds=[3])
    with pytest.raises(WeightsError, match="checkpoint_best.pth"):
        nnunet.read_results_folder(root, checkpoint="checkpoint_best.pth")
    renamed = root.parent / "my_model"
    root.rename(renamed)
    with pytest.raises(WeightsError, match="folder name should end in __<configuration>"):
        nnunet.read_results_folder(renamed)
    renamed.rename(root)
    dataset = dataset_dict()
    dataset["labels"]["teeth"] = [11, 21]
    (root / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(WeightsError, match="region-based"):
        nnunet.read_results_folder(root)
    (root / "dataset.json").write_text(json.dumps(dataset_dict()))
    plans = plans_dict()
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32]
    (root / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(WeightsError, match="do not fit the network"):
        nnunet.load_network(nnunet.read_results_folder(root))
    (root / "plans.json").unlink()
    with pytest.raises(WeightsError, match="plans.json is missing"):
        nnunet.read_results_folder(root)


def test_toothfairy2_labels_become_fdi_numbers_and_unknown_labels_are_refused():
    """Tooth names -> FDI; jaws, canals, sinuses, crowns keep values of their own, never tooth numbers;
    a foreign label is refused."""
    table = nnunet.label_values(dataset_dict())
    assert all(table[t] == t for t in (11, 21, 36, 48)) and len(table) == 49
    assert [table[i] for i in range(1, 11)] == list(range(1, 11))  # ToothFairy2's own ids, none an FDI number
    assert table[0] == table[19] == 0
    foreign = dataset_dict()
    foreign["labels"]["liver"] = 49
    with pytest.raises(WeightsError, match="'liver'"):
        nnunet.label_values(foreign)


def test_a_model_trained_by_nnunet_on_our_export_runs_with_our_label_table(tmp_path, capsys):
    """nnU-Net trained on a dataset ToothMCL exported (its dataset.json, toothmcl_label_values included,
    is what the results folder holds): class index 22 is FDI 36 by our table, so a model that finds
    class 22 gives tooth 36; a table that does not fit its labels is refused."""
    from ToothMCLCore import fdi
    from ToothMCLCore.cli import main
    from ToothMCLCore.io import read_seg_nrrd
    from ToothMCLCore.io.dataset_layout import write_dataset
    from ToothMCLCore.io.dataset_records import CBCTRecord
    from ToothMCLCore.io.volume import write_volume
    from ToothMCLCore.synthetic import make_cbct_phantom

    image, truth = make_cbct_phantom(4, spacing=2.0)
    write_dataset([CBCTRecord(f"case{k}", f"p{k}", image, truth, source="phantom") for k in range(3)],
                  tmp_path / "export", "nnunet")
    exported = json.loads((tmp_path / "export" / "dataset.json").read_text())
    molar = int(fdi.fdi_to_class_index(36, "cbct"))
    assert exported["toothmcl_label_values"][molar] == 36
    root, _ = make_results_folder(tmp_path / "models", spacing=1.0, favour=molar, dataset=exported)
    scan, _ = make_cbct_phantom(5, spacing=1.3)
    write_volume(tmp_path / "scan.nii.gz", scan)
    out = tmp_path / "pred.seg.nrrd"
    assert main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--weights", str(root), "-q"]) == 0
    assert "36  lower left first molar" in capsys.readouterr().out
    assert set(np.unique(read_seg_nrrd(out)[0]).tolist()) <= {0, 36}
    broken = dict(exported, toothmcl_label_values=exported["toothmcl_label_values"][:-1])
    with pytest.raises(WeightsError, match="does not fit its labels"):
        nnunet.label_values(broken)


@pytest.mark.parametrize("spacing_ijk, transpose", [((1.0, 1.0, 1.0), (0, 1, 2)), ((1.6, 1.2, 1.0), (2, 0, 1))],
                         ids=["isotropic", "anisotropic-transposed"])
def test_our_pipeline_gives_what_nnunets_own_predictor_gives(tmp_path, spacing_ijk, transpose):
    """On a phantom CBCT stored as nnU-Net's training images are (.mha, LPS), at the plans' spacing,
    our predictor's class probabilities, summed into our classes, match nnUNetPredictor's (no
    mirroring either side): orientation, transposition, spacing, normalisation and window positions
    are nnU-Net's, also for anisotropic plans whose transpose_forward puts the coarsest axis first
    (as nnU-Net's planner does). Measured with random weights (flat probabilities, the hardest
    case): 99.9 % of the voxels take the same class, mean probability difference 0.0003; what is
    left comes from blending probabilities (ours) rather than logits. (With MONAI's window
    positions it was 96.5 %.)"""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from ToothMCLCore.inference.cbct_nnunet import NNUNetCBCTPredictor
    from ToothMCLCore.io.volume import read_volume, write_volume
    from ToothMCLCore.synthetic import make_cbct_phantom

    zyx = np.array(spacing_ijk)[::-1]  # nnU-Net's array axes of an LPS-stored image are z, y, x
    root, _ = make_results_folder(tmp_path, spacing=zyx[list(transpose)], transpose=transpose)
    image, _ = make_cbct_phantom(3, spacing=spacing_ijk, orientation="LPS")
    write_volume(tmp_path / "case_0000.mha", image)
    ours = NNUNetCBCTPredictor(root, device="cpu", precision="fp32")  # nnU-Net's own CPU precision
    np.testing.assert_allclose(ours.spacing_ras, spacing_ijk)
    _, probs = ours.probabilities(read_volume(tmp_path / "case_0000.mha"))

    theirs = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                             perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    theirs.initialize_from_trained_model_folder(str(root), use_folds=(0,))
    img, props = SimpleITKIO().read_images([str(tmp_path / "case_0000.mha")])
    _, nn_probs = theirs.predict_single_npy_array(img, props, None, None, True)
    summed = np.zeros((probs.shape[0],) + nn_probs.shape[1:], np.float32)
    np.add.at(summed, ours.class_map, nn_probs)
    summed = summed[:, :, ::-1, ::-1]  # nnU-Net's LPS array order -> our RAS grid
    assert summed.shape == probs.shape
    same = summed.argmax(0) == probs.argmax(0)
    assert same.mean() >= 0.99, same.mean()
    assert np.abs(summed - probs).mean() < 0.002


def test_segment_cbct_runs_a_results_folder_end_to_end(tmp_path, capsys):
    """segment-cbct --weights FOLDER writes a Slicer segmentation on the input grid: a model that finds
    ToothFairy2's class 48 everywhere gives FDI 48 on every voxel, with the folder format and its
    checkpoint's SHA-256 as provenance; a results folder with --paper-protocol is refused."""
    from ToothMCLCore.cli import main
    from ToothMCLCore.io import read_seg_nrrd
    from ToothMCLCore.io.volume import write_volume
    from ToothMCLCore.models.checkpoint import sha256_of
    from ToothMCLCore.synthetic import make_cbct_phantom

    root, _ = make_results_folder(tmp_path, spacing=1.0, favour=48)  # the model finds ToothFairy2's class 48
    image, _ = make_cbct_phantom(4, spacing=1.3)
    write_volume(tmp_path / "scan.nii.gz", image)
    out = tmp_path / "pred.seg.nrrd"
    assert main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--weights", str(root), "-q"]) == 0
    assert "teeth found" in capsys.readouterr().out
    import nrrd

    labels, _, _ = read_seg_nrrd(out)
    assert labels.shape == image.array.shape
    # FDI 48 everywhere but the outermost voxels, which the soft resampling back to the grid leaves background
    assert set(np.unique(labels).tolist()) <= {0, 48} and (labels[2:-2, 2:-2, 2:-2] == 48).all()
    header = nrrd.read_header(str(out))
    assert header["ToothMCL.model_sha256"] == sha256_of(root / "fold_0" / "checkpoint_final.pth")
    assert header["ToothMCL.model_format"] == "nnU-Net v2 results folder"
    assert main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "x.seg.nrrd"), "--weights",
                 str(root), "--paper-protocol", "-q"]) != 0
    assert "drop it for an nnU-Net model" in capsys.readouterr().err


def test_structures_of_a_toothfairy2_model_become_their_own_named_coded_segments(tmp_path, capsys):
    """A model that finds the left inferior alveolar canal: segment-cbct writes a segment of that name
    with its coded type and laterality, never a tooth number; it reads back as the same structure,
    also when only its terminology is left (a renamed segment)."""
    import nrrd

    from ToothMCLCore.cli import main
    from ToothMCLCore.io import read_seg_nrrd
    from ToothMCLCore.io.volume import write_volume
    from ToothMCLCore.synthetic import make_cbct_phantom

    root, _ = make_results_folder(tmp_path, spacing=1.0, favour=3)  # "Left Inferior Alveolar Canal"
    image, _ = make_cbct_phantom(4, spacing=1.3)
    write_volume(tmp_path / "scan.nii.gz", image)
    out = tmp_path / "pred.seg.nrrd"
    assert main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--weights", str(root), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "0 teeth found" in printed and "other structures: left inferior alveolar canal" in printed
    header = nrrd.read_header(str(out))
    assert header["Segment0_Name"] == "left inferior alveolar canal"
    assert "Inferior alveolar canal~SCT^7771000^Left~" in header["Segment0_Tags"]
    labels, _, names = read_seg_nrrd(out)
    assert set(np.unique(labels).tolist()) == {0, 3} and names == {3: "left inferior alveolar canal"}
    # a user renames the segment: its terminology still says which structure it is
    data, header = nrrd.read(str(out), index_order="C")
    header["Segment0_Name"] = "nerve"
    nrrd.write(str(tmp_path / "renamed.seg.nrrd"), data, header, index_order="C")
    assert set(np.unique(read_seg_nrrd(tmp_path / "renamed.seg.nrrd")[0]).tolist()) == {0, 3}


def test_a_registered_results_folder_runs_by_name_and_its_checkpoint_is_checked(tmp_path, monkeypatch, capsys):
    """A registry entry with format nnunetv2 names a results folder (in place, file://) or a .zip of
    it (unpacked once into the cache): segment-cbct --model NAME runs it and 'toothmcl models'
    lists it; a checkpoint or dataset.json that is not the registered one, an entry without the JSON
    files' hashes, or an archive member that would land outside the cache, is refused."""
    import zipfile

    from ToothMCLCore.cli import main
    from ToothMCLCore.io.volume import write_volume
    from ToothMCLCore.models.checkpoint import sha256_of
    from ToothMCLCore.models.registry import resolve_results_folder
    from ToothMCLCore.synthetic import make_cbct_phantom

    root, _ = make_results_folder(tmp_path / "models", spacing=1.0, favour=21)
    digest = sha256_of(root / "fold_0" / "checkpoint_final.pth")
    archive = tmp_path / "toy.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in root.rglob("*"):
            zf.write(path, path.relative_to(root.parent.parent))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escaped.txt", "x")
    jsons = {"dataset_sha256": sha256_of(root / "dataset.json"), "plans_sha256": sha256_of(root / "plans.json")}
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({
        "toy_nnunet": {"url": root.as_uri(), "sha256": digest, "format": "nnunetv2", "description": "toy", **jsons},
        "toy_zip": {"url": archive.as_uri(), "sha256": digest, "format": "nnunetv2", **jsons},
        "toy_wrong": {"url": root.as_uri(), "sha256": "0" * 64, "format": "nnunetv2", **jsons},
        "toy_evil": {"url": evil.as_uri(), "sha256": digest, "format": "nnunetv2", **jsons}}))
    monkeypatch.setenv("TOOTHMCL_REGISTRY", str(registry))
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "cache"))

    assert resolve_results_folder("toy_nnunet") == (root, "0")
    # the same checkpoint with another dataset.json (teeth renumbered) is not the registered model
    original = (root / "dataset.json").read_text()
    swapped = json.loads(original)
    swapped["labels"]["Upper Left Central Incisor"], swapped["labels"]["Upper Right Central Incisor"] = 11, 21
    (root / "dataset.json").write_text(json.dumps(swapped))
    with pytest.raises(WeightsError, match=r"dataset.json has SHA-256 .* not the registered model"):
        resolve_results_folder("toy_nnunet")
    (root / "dataset.json").write_text(original)
    # an entry without the hashes of the two JSON files is refused with what to add
    (tmp_path / "partial.json").write_text(json.dumps({"toy": {"url": root.as_uri(), "sha256": digest,
                                                               "format": "nnunetv2"}}))
    with pytest.raises(WeightsError, match="needs 'dataset_sha256' and 'plans_sha256'"):
        resolve_results_folder("toy", tmp_path / "partial.json")
    unpacked, _ = resolve_results_folder("toy_zip")
    assert unpacked.is_relative_to(tmp_path / "cache") and (unpacked / "plans.json").is_file()
    (unpacked / "fold_0" / "checkpoint_final.pth").write_bytes(b"damaged")  # a damaged cached copy
    with pytest.raises(WeightsError, match="cached copy was removed"):
        resolve_results_folder("toy_zip")
    assert resolve_results_folder("toy_zip")[0] == unpacked  # downloaded afresh
    with pytest.raises(WeightsError, match="not the registered model"):
        resolve_results_folder("toy_wrong")
    with pytest.raises(WeightsError, match="a path outside its folder"):
        resolve_results_folder("toy_evil")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "cache" / "toy_evil").exists()

    image, _ = make_cbct_phantom(4, spacing=1.3)
    write_volume(tmp_path / "scan.nii.gz", image)
    assert main(["segment-cbct", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "out.nii.gz"),
                 "--model", "toy_zip", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "21  upper left central incisor" in printed and "1 teeth found" in printed
    assert main(["models"]) == 0
    assert "toy_nnunet" in capsys.readouterr().out


def test_a_volume_too_large_for_its_class_probabilities_is_refused_before_any_work(tmp_path, monkeypatch):
    """nnU-Net models run on the whole volume: a volume whose probabilities would not fit the budget
    gets a ResourceLimitError with advice, before it is resampled."""
    from ToothMCLCore.errors import ResourceLimitError
    from ToothMCLCore.inference import cbct_nnunet
    from ToothMCLCore.synthetic import make_cbct_phantom

    root, _ = make_results_folder(tmp_path, spacing=1.0)
    predictor = cbct_nnunet.NNUNetCBCTPredictor(root, device="cpu")
    monkeypatch.setattr(cbct_nnunet, "MAX_PROBABILITY_BYTES", 1024**2)
    monkeypatch.setattr(cbct_nnunet, "resample_to_canonical", lambda *a: pytest.fail("resampled anyway"))
    image, _ = make_cbct_phantom(4, spacing=1.3)
    with pytest.raises(ResourceLimitError, match="crop the scan to the teeth"):
        predictor.predict(image)


def test_the_add_click_tool_runs_an_nnunet_model_on_one_patch_around_the_click(tmp_path):
    """An nnU-Net model (one that finds ToothFairy2's class 48 everywhere) adds a missed tooth at a
    click: one patch of the plans' size at the plans' spacing, centred on the click, its tooth region
    added to the unlabelled voxels only, and the model named in the interaction."""
    from ToothMCLCore.inference.cbct_nnunet import NNUNetCBCTPredictor
    from ToothMCLCore.interactive.cbct_tools import add_tooth
    from ToothMCLCore.synthetic import make_cbct_phantom

    root, _ = make_results_folder(tmp_path, patch=(32, 32, 32), spacing=1.0, favour=48)
    image, truth = make_cbct_phantom(4, spacing=1.3)
    labels = np.where(truth.array == 46, 0, truth.array).astype(np.int64)
    model = NNUNetCBCTPredictor(root, device="cpu")
    k, j, i = (int(np.mean(a)) for a in np.nonzero(truth.array == 46))
    click = (image.geometry.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]
    geometry, probs = model.window_probabilities(image, click)
    assert probs.shape[1:] == (32, 32, 32) and np.allclose(geometry.spacing, 1.0)
    np.testing.assert_allclose((geometry.ijk_to_ras @ np.array([15.5, 15.5, 15.5, 1.0]))[:3], click, atol=1e-6)
    added, record = add_tooth(image, labels, click, model)
    changed = added != labels
    assert changed[k, j, i] and np.all(labels[changed] == 0) and record.params["model"] == model.name
    assert record.label == 46  # the free lower-right number between 45 and 47, by arch order
