"""nnU-Net v2 results folders read safely: the network nnU-Net would build, its weights, no code run."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from ToothMCLCore.errors import WeightsError
from ToothMCLCore.models import nnunet

pytestmark = pytest.mark.usefixtures("one_thread")

#: a small ToothFairy2-style label table: background, two structures, a crown, four teeth
LABELS = {"background": 0, "Lower Jawbone": 1, "Left Maxillary Sinus": 5, "Crown": 9,
          "Upper Right Central Incisor": 11, "Upper Left Central Incisor": 21, "Lower Left First Molar": 36,
          "Lower Right Third Molar (Wisdom Tooth)": 48}
ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16],
                    "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 3,
                    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [1, 1, 1],
                    "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _plans() -> dict:
    """A 3d_fullres plan in nnU-Net v2's layout (the fields PlansManager reads)."""
    return {
        "dataset_name": "Dataset999_ToyTeeth", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [0.6, 0.6, 0.6], "original_median_shape_after_transp": [40, 48, 48],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [32, 32, 32], "median_image_size_in_voxels": [40, 48, 48],
            "spacing": [0.6, 0.6, 0.6], "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": ARCH, "batch_dice": False}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"max": 3000.0, "mean": 1400.0, "median": 1350.0,
                                                              "min": -500.0, "percentile_00_5": 200.0,
                                                              "percentile_99_5": 2900.0, "std": 450.0}},
    }


def _dataset() -> dict:
    return {"channel_names": {"0": "CT"}, "labels": dict(LABELS), "numTraining": 2, "file_ending": ".mha"}


def _reference_network(plans: dict, dataset: dict):
    """The network nnU-Net itself builds from these plans (its own PlansManager and builder)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = PlansManager(plans).get_configuration("3d_fullres")
    return get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                  configuration.network_arch_init_kwargs_req_import, 1, len(dataset["labels"]),
                                  allow_init=True, deep_supervision=False)


def _checkpoint(network, plans, dataset) -> dict:
    """What nnUNetTrainer.save_checkpoint writes (NumPy floats in its log included)."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    return {"network_weights": network.state_dict(), "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.41)], "ema_fg_dice": [np.float64(0.4)],
                        "train_losses": [np.float32(-0.3)], "epoch_start_timestamps": [1.7e9]},
            "_best_ema": np.float64(0.4), "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset,
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)}


@pytest.fixture
def results(tmp_path):
    """A results folder with fold_0, made with nnU-Net's own classes; returns (folder, reference net)."""
    torch.manual_seed(0)
    plans, dataset = _plans(), _dataset()
    network = _reference_network(plans, dataset)
    root = tmp_path / "Dataset999_ToyTeeth" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (root / "fold_0").mkdir(parents=True)
    (root / "plans.json").write_text(json.dumps(plans))
    (root / "dataset.json").write_text(json.dumps(dataset))
    torch.save(_checkpoint(network, plans, dataset), root / "fold_0" / "checkpoint_final.pth")
    return root, network.eval()


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
    root, _ = results
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    doc = torch.load(root / "fold_0" / "checkpoint_final.pth", weights_only=False)
    doc["logging"]["note"] = Payload()
    torch.save(doc, root / "fold_0" / "checkpoint_final.pth", pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(WeightsError, match="never unpickles code"):
        nnunet.load_network(nnunet.read_results_folder(root))
    assert not marker.exists()


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
    dataset = _dataset()
    dataset["labels"]["teeth"] = [11, 21]
    (root / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(WeightsError, match="region-based"):
        nnunet.read_results_folder(root)
    (root / "dataset.json").write_text(json.dumps(_dataset()))
    plans = _plans()
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32]
    (root / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(WeightsError, match="do not fit the network"):
        nnunet.load_network(nnunet.read_results_folder(root))
    (root / "plans.json").unlink()
    with pytest.raises(WeightsError, match="plans.json is missing"):
        nnunet.read_results_folder(root)


def test_toothfairy2_labels_become_fdi_numbers_and_unknown_labels_are_refused():
    """Tooth names -> FDI, Crown -> 99 (restoration), jaws and sinuses -> 0; a foreign label is refused."""
    table = nnunet.label_values(_dataset())
    assert {table[i] for i in (11, 21, 36, 48)} == {11, 21, 36, 48}
    assert table[9] == 99 and table[1] == table[5] == table[0] == 0
    foreign = _dataset()
    foreign["labels"]["liver"] = 60
    with pytest.raises(WeightsError, match="'liver'"):
        nnunet.label_values(foreign)
