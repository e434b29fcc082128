"""The module segments an intraoral scan node with SOFTooth weights, as it does with the Point Transformer."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def softooth_weights(tmp_path_factory):
    """Untrained tiny SOFTooth with PRG on the tiny SAM encoder (800 faces, 128-pixel view)."""
    import torch

    from ToothMCLCore.config import ModelCard
    from ToothMCLCore.models import build_model
    from ToothMCLCore.models.checkpoint import save_checkpoint

    arch = {"preset": "tiny", "sam_channels": 256}
    torch.manual_seed(0)
    card = ModelCard(name="ios_softooth_tiny_v1", version="0.0.1", task="ios_teeth", architecture="softooth",
                     arch_args=arch, class_scheme="ios",
                     preprocess={"target_faces": 800, "image_size": 128, "sam_model_type": "tiny",
                                 "sam_tiny_img_size": 128})
    path = tmp_path_factory.mktemp("softooth") / "ios_softooth_tiny_v1.safetensors"
    save_checkpoint(build_model("softooth", arch), card, path)
    return path


@pytest.fixture
def one_thread(tmp_path, monkeypatch):
    """One torch thread (a busy 2-core machine) and a private cache for the SAM embeddings."""
    import torch

    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_scan_node_is_segmented_with_softooth_weights(scene, ios_phantoms, softooth_weights, tiny_ios_weights,
                                                      one_thread):
    """SOFTooth weights label every vertex with upper teeth or gingiva; the provenance names the model.
    The same logic then segments with Point Transformer weights (the predictor follows the weights)."""
    import slicer
    from test_vertex_labels import _model_from_mesh
    from ToothMCLSegmentLib.SegmentationLogic import SegmentationLogic

    from ToothMCLCore import fdi

    mesh = ios_phantoms["upper"]
    model = _model_from_mesh(scene, mesh, "phantom scan")
    logic = SegmentationLogic()
    stages = []
    logic.segmentModel(model, weights=softooth_weights, device="cpu", progress=lambda s, f: stages.append(s))
    labels = slicer.util.arrayFromModelPointData(model, "FDI")
    assert len(labels) == mesh.n_vertices
    assert set(np.unique(labels).tolist()) <= {0} | set(fdi.teeth_of_jaw("upper"))
    assert model.GetAttribute("ToothMCL.jaw") == "upper"
    assert model.GetAttribute("ToothMCL.architecture") == "softooth"
    assert model.GetAttribute("ToothMCL.model") == "ios_softooth_tiny_v1"
    assert {"render", "sam", "segment"} <= set(stages)

    logic.segmentModel(model, weights=tiny_ios_weights, device="cpu")
    assert model.GetAttribute("ToothMCL.model") == "ios_pt_tiny_v1"
