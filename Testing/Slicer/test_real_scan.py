"""The module on a real intraoral scan: loaded as Slicer loads a .vtp, numbered with the default model.

A clinician opens ``N_down.vtp`` in Slicer, selects it and clicks Segment with the model choice
left on "Automatic". The scan is one of the default model's test patients (MeshSegNet, never
trained on); its labels come from the converter.
"""

from __future__ import annotations

import numpy as np

#: floor of the mean per-tooth Dice on this scan: the card's 0.856 for 12_lower (the first test
#: patient's lower jaw, segmented from its file) less the margin of Testing/Core/test_real_ios.py
DICE_FLOOR = 0.83


def test_a_real_scan_opened_in_slicer_is_numbered_by_the_default_model(scene, meshsegnet_dir):
    """Every vertex gets an FDI number of the lower jaw; the teeth agree with the labels; the
    provenance names the default (real-scan) model and the jaw rule that decided."""
    import slicer
    from slicer_test_data import load_model
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic
    from ToothMCLSegmentLib.SegmentDisplay import getProvenance
    from ToothMCLSegmentLib.VertexLabels import vertexLabels

    from ToothMCLCore import fdi
    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice
    from ToothMCLCore.inference.ios import DEFAULT_IOS_MODEL
    from ToothMCLCore.io.public_datasets.meshsegnet import convert_scan
    from ToothMCLCore.models.checkpoint import card_path, read_card
    from ToothMCLCore.models.registry import resolve_weights

    card = read_card(card_path(resolve_weights(DEFAULT_IOS_MODEL)[0]))
    patient = card.metrics["split_patients"]["test"][0]
    path = meshsegnet_dir / f"{patient}_down.vtp"
    node = load_model(scene, path)

    logic = SegmentationLogic()
    assert logic.segmentModel(node, device="cpu") is node
    labels = vertexLabels(node)
    truth_scan, truth, _ = convert_scan(path, "lower")
    expected = truth_scan.to_file_order(truth)
    assert labels.shape == expected.shape
    assert set(np.unique(labels)) - {0} <= set(fdi.teeth_of_jaw("lower"))
    assert mean_dice(dice_per_tooth(labels, expected)) >= DICE_FLOOR
    provenance = getProvenance(node)
    assert provenance["model"] == DEFAULT_IOS_MODEL == logic.defaultModel(node)
    assert provenance["jaw"] == "lower"
    slicer.util.arrayFromModelPoints(node)  # still a valid model
