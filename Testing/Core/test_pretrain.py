"""ToothMCL pretraining on phantom pairs: learning happens, correspondence is exact, pairs register."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from ToothMCLCore.errors import ConfigError
from training.configuration import load_config
from training.distributed import seed_all
from training.engine import TrainConfig
from training.pretrain import PretrainConfig, evaluate, main, select_fraction
from training.pretrain_data import (
    PairDataset,
    _prep_key,
    collate_pairs,
    discover_pairs,
    phantom_pairs,
    prepare_all,
    prepare_pair,
)
from training.pretrain_model import build_pretrain_model, load_encoder, load_pretrain_model

TINY = "training/configs/pretrain_tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


def tiny_config(**values) -> PretrainConfig:
    return load_config(TINY, {"train": TrainConfig, "pretrain": PretrainConfig}, {"pretrain": values})["pretrain"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The CLI on 3 phantom pairs + 1 held-out pair: 12 epochs of 3 steps (about 40 s on 2 cores)."""
    out = tmp_path_factory.mktemp("pretrain")
    cache = out / "cache"
    code = main(["--config", TINY, "--phantoms", "3", "--val-phantoms", "1", "--out", str(out),
                 "--set", f"pretrain.cache_dir={cache}"])
    assert code == 0
    config = tiny_config(cache_dir=str(cache))
    return {"out": out, "config": config, "log": list(csv.DictReader(open(out / "log.csv")))}


def retrieval(model, sources, config) -> dict:
    """Losses and retrieval on unaugmented, centred crops of ``sources``."""
    prepare_all(sources, config, config.cache_dir)
    data = PairDataset(sources, config, seed=0, augment=False, cache_dir=config.cache_dir)
    with torch.no_grad():
        return evaluate(model.eval(), [collate_pairs([data[i]]) for i in range(len(data))])


def test_pretraining_lowers_the_total_loss(run):
    """The epoch-mean training loss falls by over a third, and so does the loss on fixed crops."""
    losses = [float(r["train_loss"]) for r in run["log"]]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.65 * losses[0]
    seed_all([0])
    untrained = build_pretrain_model(**run["config"].arch_args())
    trained, _ = load_pretrain_model(run["out"] / "toothmcl_pretrain_tiny_v1.safetensors")
    pairs = phantom_pairs(3, spacing_mm=2.0)
    assert retrieval(trained, pairs, run["config"])["loss"] < 0.6 * retrieval(untrained, pairs, run["config"])["loss"]


def test_after_pretraining_scan_patches_find_their_cbct_token_far_above_chance(run):
    """IOS patch -> CBCT token retrieval (64 tokens) beats chance 3x (top-1) and 2x (top-5), also held out."""
    trained, card = load_pretrain_model(run["out"] / "toothmcl_pretrain_tiny_v1.safetensors")
    seed_all([0])
    untrained = build_pretrain_model(**run["config"].arch_args())
    for sources in (phantom_pairs(3, spacing_mm=2.0), phantom_pairs(1, first_seed=1000, spacing_mm=2.0)):
        before, after = retrieval(untrained, sources, run["config"]), retrieval(trained, sources, run["config"])
        assert after["patches"] > 50 and after["chance_top1"] == pytest.approx(1 / 64)
        assert after["top1"] > 3 * after["chance_top1"] and after["top5"] > 2 * after["chance_top5"], after
        assert after["top1"] > 2 * before["top1"] and after["top5"] > 1.5 * before["top5"]
    # validation on the held-out pair chose the best epoch, and its card says so
    assert card.metrics["val_top1"] == pytest.approx(max(float(r["val_top1"]) for r in run["log"]), abs=1e-6)


def test_exported_encoders_load_as_is_into_the_fine_tuning_networks(run):
    """cbct_encoder -> SwinUNETR.swinViT and ios_encoder -> PointTransformerSeg.encoder, strictly, same tensors."""
    from ToothMCLCore.models import build_model

    trained, _ = load_pretrain_model(run["out"] / "toothmcl_pretrain_tiny_v1.safetensors")
    for modality, part, attr in (("cbct", trained.cbct_encoder, "swinViT"), ("ios", trained.ios_encoder, "encoder")):
        state, card = load_encoder(run["out"] / f"{modality}_encoder.safetensors", modality)
        network = build_model(card.architecture, card.arch_args)
        getattr(network, attr).load_state_dict(state, strict=True)
        for key, value in part.state_dict().items():
            assert torch.equal(getattr(network, attr).state_dict()[key], value)
        whole, _ = load_encoder(run["out"] / "toothmcl_pretrain_tiny_v1.safetensors", modality)
        assert whole.keys() == state.keys()
    used = json.loads((run["out"] / "pairs.json").read_text())
    assert used["train"] == ["phantom0000", "phantom0001", "phantom0002"] and used["val"] == ["phantom1000"]


def test_augmented_items_keep_scan_points_and_cbct_voxels_where_they_are_in_ras(run):
    """Through crop, rotation, scaling and shifts, every network input maps back to its RAS place."""
    from ToothMCLCore.types import Geometry

    config = tiny_config(cache_dir=run["config"].cache_dir, cbct_rotation_rad=0.4, ios_rotation_rad=0.5)
    data = PairDataset(phantom_pairs(1, spacing_mm=2.0), config, seed=3, augment=True, cache_dir=config.cache_dir)
    data.set_epoch(2)
    item = data[0]
    meta = item["meta"]
    for j in range(item["ios_points"].shape[0]):
        m = meta["net_to_ras"][j]
        back = item["ios_points"][j].double().numpy() @ m[:3, :3].T + m[:3, 3]
        assert np.abs(back - meta["points_ras"][j]).max() < 1e-3
    # the rotated label crop agrees with the cached label map looked up through the crop's geometry
    source = data.sources[0]
    prepared, prep_meta = data._cache.get(_prep_key(source, config), lambda: prepare_pair(source, config))
    roi = Geometry.from_ijk_to_ras(np.asarray(prep_meta["roi_ijk_to_ras"]))
    crop = Geometry.from_ijk_to_ras(meta["crop_ijk_to_ras"])
    kji = np.argwhere(meta["labels_crop"] > 0)
    ras = kji[:, ::-1] @ crop.ijk_to_ras[:3, :3].T + crop.ijk_to_ras[:3, 3]
    src = np.rint((ras @ roi.ras_to_ijk[:3, :3].T + roi.ras_to_ijk[:3, 3])[:, ::-1]).astype(int)
    assert len(kji) > 100
    assert np.mean(prepared["labels"][tuple(src.T)] == meta["labels_crop"][tuple(kji.T)]) > 0.99


def test_given_scans_in_their_own_frame_they_are_registered_and_a_mismatched_pair_is_refused_by_name(tmp_path):
    """Folder layout: P1's moved scan lands on its teeth (< 0.3 mm); P2 (another patient's scan) is left out."""
    import dataclasses

    from scipy.spatial import cKDTree

    from ToothMCLCore.io.mesh import write_mesh
    from ToothMCLCore.io.volume import write_labelmap, write_volume
    from ToothMCLCore.synthetic import make_cbct_phantom, make_ios_phantom

    image, labels = make_cbct_phantom(0, spacing=0.8)
    truth = make_ios_phantom(0, "upper", resolution_mm=1.0)
    move = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])
    for name, scan in (("P1", truth), ("P2", make_ios_phantom(1, "upper", resolution_mm=1.0))):
        folder = tmp_path / "pairs" / name
        folder.mkdir(parents=True)
        write_volume(folder / "cbct.nii.gz", image)
        write_labelmap(folder / "cbct_labels.nii.gz", labels.array, labels.geometry)
        write_mesh(folder / "upper.ply", dataclasses.replace(scan, vertices_ras=scan.vertices_ras @ move.T + 9.0))
    train, val = discover_pairs(tmp_path / "pairs")
    assert [p.pair_id for p in train] == ["P1", "P2"] and val == []
    config = tiny_config(cache_dir=str(tmp_path / "cache"))
    accepted, refused = prepare_all(train, config, config.cache_dir)
    assert [p.pair_id for p in accepted] == ["P1"]
    assert [name for name, _ in refused] == ["P2"] and "pair P2, upper scan does not register" in refused[0][1]
    data = PairDataset(accepted, config, seed=0, augment=False, cache_dir=config.cache_dir)
    points = data[0]["meta"]["points_ras"][0]
    distance, _ = cKDTree(truth.vertices_ras).query(points)
    assert np.median(distance) < 0.3 and data[0]["ios_points"].shape == (1, 1024, 3)


def test_pretrain_fraction_takes_nested_seeded_subsets_and_configs_refuse_unknown_keys():
    """0.25 of 8 pairs is 2 of those 0.5 takes, the same every time; a typo in the config is an error."""
    pairs = phantom_pairs(8)
    sizes = {f: [p.pair_id for p in select_fraction(pairs, f, seed=0)] for f in (0.25, 0.5, 0.75, 1.0)}
    assert [len(v) for v in sizes.values()] == [2, 4, 6, 8]
    assert set(sizes[0.25]) <= set(sizes[0.5]) <= set(sizes[0.75])
    assert select_fraction(pairs, 0.5, seed=0) == select_fraction(pairs, 0.5, seed=0)
    with pytest.raises(ConfigError, match="pretrain_fraction"):
        tiny_config(pretrain_fraction=0.0)
    with pytest.raises(ConfigError, match="unknown PretrainConfig keys \\['spacing'\\]"):
        tiny_config(spacing=0.3)
