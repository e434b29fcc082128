"""A tiny nnU-Net v2 results folder made with nnU-Net's own classes (tests of issue 14).

The plans follow nnU-Net v2's layout (nnU-Net's PlansManager reads them), the network is the one
nnU-Net builds from them (``get_network_from_plans``), and the checkpoint holds what
``nnUNetTrainer.save_checkpoint`` writes, NumPy floats in its log included.
"""

from __future__ import annotations

import json

import numpy as np
import torch

#: ToothFairy2's label table (dataset.json of the release): ids 0-48, teeth at their FDI numbers
_SIDES = {1: "Upper Right", 2: "Upper Left", 3: "Lower Left", 4: "Lower Right"}
_KINDS = ("Central Incisor", "Lateral Incisor", "Canine", "First Premolar", "Second Premolar", "First Molar",
          "Second Molar", "Third Molar (Wisdom Tooth)")
LABELS = {"background": 0, "Lower Jawbone": 1, "Upper Jawbone": 2, "Left Inferior Alveolar Canal": 3,
          "Right Inferior Alveolar Canal": 4, "Left Maxillary Sinus": 5, "Right Maxillary Sinus": 6, "Pharynx": 7,
          "Bridge": 8, "Crown": 9, "Implant": 10,
          **{f"{_SIDES[q]} {kind}": q * 10 + i + 1 for q in _SIDES for i, kind in enumerate(_KINDS)},
          **{f"NA{n}": v for n, v in enumerate((19, 20, 29, 30, 39, 40), start=1)}}
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


def plans_dict() -> dict:
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


def dataset_dict() -> dict:
    return {"channel_names": {"0": "CT"}, "labels": dict(LABELS), "numTraining": 2, "file_ending": ".mha"}


def reference_network(plans: dict, dataset: dict):
    """The network nnU-Net itself builds from these plans (its own PlansManager and builder)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = PlansManager(plans).get_configuration("3d_fullres")
    return get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                  configuration.network_arch_init_kwargs_req_import, 1, len(dataset["labels"]),
                                  allow_init=True, deep_supervision=False)


def checkpoint_dict(network, plans, dataset) -> dict:
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


def make_results_folder(parent, patch=(32, 32, 32), spacing=0.6, seed=0, favour: int | None = None,
                        dataset: dict | None = None, transpose=(0, 1, 2)):
    """``parent/Dataset999_ToyTeeth/nnUNetTrainer__nnUNetPlans__3d_fullres`` with fold_0 (random
    weights from ``seed``; with ``favour``, the output layer's bias makes that dataset class win
    everywhere, so the model finds exactly one tooth; ``dataset``: another dataset.json than
    ToothFairy2's); ``spacing``: one size or three in the network's (transposed) axis order, as
    plans.json stores it; ``transpose``: transpose_forward. Returns (folder, the network, eval mode)."""
    torch.manual_seed(seed)
    plans, dataset = plans_dict(), dataset or dataset_dict()
    plans["configurations"]["3d_fullres"]["patch_size"] = list(patch)
    plans["configurations"]["3d_fullres"]["spacing"] = [float(s) for s in np.broadcast_to(spacing, (3,))]
    plans["transpose_forward"] = list(transpose)
    plans["transpose_backward"] = [int(a) for a in np.argsort(transpose)]
    network = reference_network(plans, dataset)
    if favour is not None:
        with torch.no_grad():
            network.decoder.seg_layers[-1].bias[favour] += 50.0
    root = parent / "Dataset999_ToyTeeth" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (root / "fold_0").mkdir(parents=True)
    (root / "plans.json").write_text(json.dumps(plans))
    (root / "dataset.json").write_text(json.dumps(dataset))
    torch.save(checkpoint_dict(network, plans, dataset), root / "fold_0" / "checkpoint_final.pth")
    return root, network.eval()
