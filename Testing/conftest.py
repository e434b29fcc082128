"""Shared fixtures: tiny phantoms and tiny weights, made once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# Whatever the suite caches (downloaded weights, exported ONNX graphs, OpenVINO blobs) goes to a
# folder of its own, never into the user's ~/.cache/toothmcl; tests that need a cache of their own
# still set TOOTHMCL_CACHE themselves.
if "TOOTHMCL_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["TOOTHMCL_CACHE"] = tempfile.mkdtemp(prefix="toothmcl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["TOOTHMCL_CACHE"], ignore_errors=True)

TINY_ARCH = {"in_channels": 1, "out_channels": 34, "feature_size": 12, "depths": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny tensors run faster on one thread than on two fighting a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_phantom():
    """A coarse (0.8 mm, oblique) CBCT phantom and its labels: fast to make and to segment."""
    from ToothMCLCore.synthetic.cbct import make_cbct_phantom

    return make_cbct_phantom(seed=7, spacing=0.8, orientation="oblique")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Untrained SwinUNETR weights (fixed seed) with a card at 0.8 mm, for pipeline tests."""
    import torch

    from ToothMCLCore.config import CBCTPreprocessConfig, ModelCard, SlidingWindowConfig
    from ToothMCLCore.models import build_model
    from ToothMCLCore.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = build_model("swinunetr", TINY_ARCH)
    card = ModelCard(
        name="cbct_swinunetr_tiny_v1", version="0.0.1", task="cbct_teeth", architecture="swinunetr",
        arch_args=TINY_ARCH, preprocess=CBCTPreprocessConfig(spacing_mm=0.8).to_dict(),
        sliding_window=SlidingWindowConfig(roi_size=(64, 64, 64)).to_dict(),
    )
    path = tmp_path_factory.mktemp("weights") / "cbct_swinunetr_tiny_v1.safetensors"
    save_checkpoint(net, card, path)
    return path


@pytest.fixture
def misfit_weights(tiny_weights, tmp_path):
    """The tiny weights with a card claiming feature size 24: the checksum passes, the tensors
    do not fit the architecture."""
    import json
    import shutil

    from ToothMCLCore.models.checkpoint import card_path

    bad = tmp_path / tiny_weights.name
    shutil.copy(tiny_weights, bad)
    card = json.loads(card_path(tiny_weights).read_text())
    card["arch_args"]["feature_size"] = 24
    card_path(bad).write_text(json.dumps(card))
    return bad


TINY_PT_ARCH = {"planes": [16, 32, 32, 32, 32], "blocks": [1, 1, 1, 1, 1], "nsamples": [8, 8, 8, 8, 8]}


@pytest.fixture(scope="session")
def tiny_ios_weights(tmp_path_factory):
    """Untrained small Point Transformer (fixed seed) sampling 2,048 points, for pipeline tests."""
    import torch

    from ToothMCLCore.config import ModelCard
    from ToothMCLCore.models import build_model
    from ToothMCLCore.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = build_model("point_transformer", TINY_PT_ARCH)
    card = ModelCard(name="ios_pt_tiny_v1", version="0.0.1", task="ios_teeth", architecture="point_transformer",
                     arch_args=TINY_PT_ARCH, class_scheme="ios", preprocess={"n_points": 2048})
    path = tmp_path_factory.mktemp("ios_weights") / "ios_pt_tiny_v1.safetensors"
    save_checkpoint(net, card, path)
    return path


@pytest.fixture(scope="session")
def ios_phantoms():
    """Coarse (0.8 mm) upper and lower phantom scans of one patient, with FDI labels."""
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    return {jaw: make_ios_phantom(5, jaw=jaw, resolution_mm=0.8) for jaw in ("upper", "lower")}


#: the real labelled scans beside the checkout (../shared/data/meshsegnet, see its README), or $TOOTHMCL_MESHSEGNET
MESHSEGNET_DIR = os.environ.get("TOOTHMCL_MESHSEGNET") or str(
    __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "meshsegnet")


@pytest.fixture(scope="session")
def meshsegnet_dir():
    """The folder of MeshSegNet's 72 real scans. Missing data fails the test (it is never skipped):
    CI and every development machine have it beside the checkout."""
    from pathlib import Path

    folder = Path(MESHSEGNET_DIR)
    if not (folder / "1_up.vtp").is_file():
        pytest.fail(f"the real scans are not in {folder}; put MeshSegNet's <N>_up/down.vtp there (see "
                    "../shared/data/meshsegnet/README.md) or set TOOTHMCL_MESHSEGNET to their folder")
    return folder
