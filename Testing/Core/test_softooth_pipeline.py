"""SOFTooth as the second IOS model: predictor, model choice by card, segment-ios, bad input, training."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch

from ToothMCLCore import fdi
from ToothMCLCore.cli import main
from ToothMCLCore.config import ModelCard
from ToothMCLCore.errors import CancelledError, InvalidInputError, WeightsError
from ToothMCLCore.inference.ios import IOSPredictor, ios_predictor
from ToothMCLCore.inference.softooth import SOFToothPredictor, SOFToothSettings, largest_regions
from ToothMCLCore.io.mesh import read_mesh, write_mesh
from ToothMCLCore.io.teeth3ds import read_teeth3ds_json
from ToothMCLCore.models.softooth import assign_instances
from ToothMCLCore.types import SurfaceMesh

#: a tiny SOFTooth with PRG (SAM channels as every SAM encoder gives) on a small budget
TINY_ARCH = {"preset": "tiny", "sam_channels": 256}
TINY_PREPROCESS = {"target_faces": 800, "image_size": 128, "sam_model_type": "tiny", "sam_tiny_img_size": 128}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """SAM embeddings and checkpoints are looked up in a fresh cache, never the user's."""
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TOOTHMCL_SAM_CHECKPOINT", raising=False)


def _save(tmp_path_factory, name, arch, preprocess, seed=0):
    from ToothMCLCore.models import build_model
    from ToothMCLCore.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    card = ModelCard(name=name, version="0.0.1", task="ios_teeth", architecture="softooth", arch_args=arch,
                     class_scheme="ios", preprocess=preprocess)
    path = tmp_path_factory.mktemp("softooth") / f"{name}.safetensors"
    save_checkpoint(build_model("softooth", arch), card, path)
    return path


@pytest.fixture(scope="module")
def softooth_weights(tmp_path_factory):
    """Untrained tiny SOFTooth with PRG on the tiny SAM encoder, 800 faces, 128-pixel view."""
    return _save(tmp_path_factory, "ios_softooth_tiny_v1", TINY_ARCH, TINY_PREPROCESS)


@pytest.fixture(scope="module")
def predictor(softooth_weights):
    return SOFToothPredictor(weights=softooth_weights, device="cpu")


# ------------------------------------------------------------------------------------------------
# Predictor
# ------------------------------------------------------------------------------------------------

def test_bare_mesh_gets_a_label_per_vertex_of_its_jaw_and_provenance(ios_phantoms, predictor, softooth_weights):
    """A SurfaceMesh (as from Slicer): jaw found, one FDI of that jaw per vertex, instances in arch order."""
    from ToothMCLCore.models.checkpoint import card_path, read_card

    mesh = ios_phantoms["upper"]
    result = predictor.predict(SurfaceMesh(mesh.vertices_ras, mesh.faces))
    assert result.jaw == "upper" and len(result.labels) == len(result.instances) == mesh.n_vertices
    assert set(np.unique(result.labels)) <= {0} | set(fdi.teeth_of_jaw("upper"))
    teeth = sorted(fdi.present_teeth(np.unique(result.labels)), key=lambda n: fdi.tooth(n).arch_index)
    assert [int(np.unique(result.instances[result.labels == n])[0]) for n in teeth] == list(range(1, len(teeth) + 1))
    assert [t.fdi for t in result.teeth] == sorted(teeth)
    p = result.provenance
    assert p["model"] == "ios_softooth_tiny_v1" and p["model_sha256"] == read_card(card_path(softooth_weights)).sha256
    assert p["architecture"] == "softooth" and p["prg"] is True and len(p["sam_weights_sha256"]) == 64
    assert p["faces"] <= 800 and p["decimated_from_faces"] == len(mesh.faces)


def test_stages_are_reported_and_a_cancel_stops_between_them(ios_phantoms, predictor):
    """prepare, render, sam, segment, postprocess in order; a cancel during 'sam' raises before 'segment'."""
    stages, cancel = [], threading.Event()

    def progress(stage, fraction):
        stages.append(stage)
        if stage == "sam" and cancel_now[0]:
            cancel.set()

    cancel_now = [False]
    predictor.predict(ios_phantoms["lower"], "lower", progress=progress, cancel=cancel)
    assert stages == ["prepare", "render", "sam", "segment", "postprocess", "done"]
    stages.clear()
    cancel_now[0] = True
    with pytest.raises(CancelledError):
        predictor.predict(ios_phantoms["lower"], "lower", progress=progress, cancel=cancel)
    assert stages == ["prepare", "render", "sam"]


def test_objectness_decides_which_instances_are_teeth_and_order_numbers_them():
    """Objectness over 0.5 and a non-empty mask make a tooth; FDI numbers follow the arch, a weak
    third-molar class included; a duplicate and a low-objectness instance get no number."""
    teeth = [31, 32, 33, 34, 35, 36, 37, 38]               # left half of a lower arch
    n_faces = 10 * len(teeth) + 10
    q = len(teeth) + 2
    masks = np.full((q, n_faces), -10.0)
    for i in range(len(teeth)):
        masks[i, 10 * i:10 * i + 10] = 10.0
    masks[-2] = masks[3]                                   # duplicate of 34, lower objectness
    masks[-1, -10:] = 10.0                                 # a face patch of its own
    angle = np.linspace(0.2, 1.4, len(teeth))              # from the incisor backwards on the left
    centres = np.zeros((q, 3))
    centres[:len(teeth), 0] = -30 * np.sin(angle)
    centres[:len(teeth), 1] = 30 * np.cos(angle)
    classes = np.full((q, 17), -3.0)
    for i, t in enumerate(teeth):
        classes[i, fdi.fdi_to_class_index(t, "ios_lower")] = 2.0
    third = fdi.fdi_to_class_index(38, "ios_lower")
    classes[7, :] = -3.0
    classes[7, [0, third - 1, third]] = [1.0, -1.0, -1.2]  # "no tooth" likeliest, 37 over 38
    classes[-1, fdi.fdi_to_class_index(31, "ios_lower")] = 5.0  # a confident class, objectness too low
    objectness = np.r_[np.full(len(teeth), 3.0), 1.0, -1.0]
    numbers = assign_instances(masks, classes, objectness, centres, "lower")
    assert numbers[:len(teeth)].tolist() == teeth
    assert numbers[-2:].tolist() == [0, 0]


def test_each_tooth_keeps_its_largest_region():
    """Two separate patches labelled 11: the smaller becomes gingiva; a lone small tooth is dropped."""
    faces = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [10, 11, 12], [20, 21, 22]])
    labels = np.array([11, 11, 11, 11, 12])
    assert largest_regions(faces, labels).tolist() == [11, 11, 11, 0, 12]
    assert largest_regions(faces, labels, min_faces=2).tolist() == [11, 11, 11, 0, 0]


# ------------------------------------------------------------------------------------------------
# Model choice by card, CLI
# ------------------------------------------------------------------------------------------------

def test_factory_picks_the_predictor_by_the_cards_architecture(softooth_weights, tiny_ios_weights, caplog):
    """SOFTooth card -> SOFToothPredictor, Point Transformer card -> IOSPredictor; foreign options warn."""
    with caplog.at_level("WARNING"):
        assert isinstance(ios_predictor(weights=softooth_weights, device="cpu", passes=2), SOFToothPredictor)
    assert any("passes ignored" in r.message for r in caplog.records)
    assert isinstance(ios_predictor(weights=tiny_ios_weights, device="cpu", sam_checkpoint=None), IOSPredictor)
    with pytest.raises(WeightsError, match="not a SOFTooth"):
        SOFToothPredictor(weights=tiny_ios_weights, device="cpu")


@pytest.fixture
def scan_file(tmp_path, ios_phantoms):
    path = tmp_path / "P5_lower.ply"
    write_mesh(path, ios_phantoms["lower"])
    return path


def test_segment_ios_with_softooth_weights_writes_the_same_outputs(tmp_path, scan_file, softooth_weights, capsys):
    """Teeth3DS JSON with one label per vertex, labelled mesh and one STL per tooth, as with the PT."""
    out = tmp_path / "pred.json"
    code = main(["segment-ios", str(scan_file), "-o", str(out), "--weights", str(softooth_weights),
                 "--mesh-out", str(tmp_path / "labelled.vtp"), "--teeth-dir", str(tmp_path / "teeth"), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "lower jaw (decided by file name)" in printed and "teeth found" in printed
    assert "decimated from" in printed
    data = json.loads(out.read_text())
    assert list(data) == ["id_patient", "jaw", "labels", "instances"] and data["jaw"] == "lower"
    assert len(data["labels"]) == read_mesh(scan_file).n_file_vertices == len(data["instances"])
    assert set(data["labels"]) <= {0} | set(fdi.teeth_of_jaw("lower"))
    labelled = read_mesh(tmp_path / "labelled.vtp")
    assert labelled.mesh.labels is not None and len(labelled.mesh.labels) == labelled.mesh.n_vertices
    stls = sorted(p.name for p in (tmp_path / "teeth").iterdir())
    assert stls == [f"tooth_{t}.stl" for t in sorted(set(data["labels"]) - {0})]


def test_segment_ios_no_fdi_order_runs_the_ablation_and_says_so(tmp_path, scan_file, softooth_weights, caplog):
    """--no-fdi-order reaches the SOFTooth predictor (its provenance says so); on a Point Transformer
    model it is ignored with a warning, and --no-mirror on SOFTooth likewise."""
    from ToothMCLCore.inference.ios import ios_predictor

    predictor = ios_predictor(weights=softooth_weights, device="cpu", fdi_order=False, mirror=None)
    assert predictor.settings.fdi_order is False
    assert predictor.predict(read_mesh(scan_file), "lower").provenance["fdi_order"] is False
    assert ios_predictor(weights=softooth_weights, device="cpu").settings.fdi_order is True
    out = tmp_path / "pred.json"
    with caplog.at_level("WARNING"):
        assert main(["segment-ios", str(scan_file), "-o", str(out), "--weights", str(softooth_weights),
                     "--no-fdi-order", "--no-mirror", "-q"]) == 0
    assert "mirror ignored" in caplog.text
    with pytest.raises(InvalidInputError, match="a SOFTooth model is not it"):
        ios_predictor(weights=softooth_weights, device="cpu", paper_protocol=True)


def test_labels_follow_the_file_vertex_order_with_duplicates(tmp_path, ios_phantoms, softooth_weights):
    """Duplicated and unreferenced vertices still get one label each; duplicates share their original's."""
    mesh = ios_phantoms["upper"]
    v = np.vstack([mesh.vertices_ras, mesh.vertices_ras[:50], [[500.0, 500.0, 500.0]]])
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    path = tmp_path / "dup_upper.obj"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "dup.json"
    assert main(["segment-ios", str(path), "-o", str(out), "--weights", str(softooth_weights), "-q"]) == 0
    labels = read_teeth3ds_json(out).labels
    assert len(labels) == len(v)
    np.testing.assert_array_equal(labels[mesh.n_vertices:mesh.n_vertices + 50], labels[:50])


@pytest.mark.parametrize("kind", ["empty mesh", "NaN coordinates", "metres", "both jaws", "unknown format",
                                  "point cloud"])
def test_bad_scans_exit_nonzero_with_advice_and_no_output(tmp_path, ios_phantoms, softooth_weights, capsys, kind):
    """The Point Transformer's bad scans, and a point cloud (SOFTooth needs faces): one error line, no JSON."""
    from test_ios_pipeline import _bad_scans

    if kind == "point cloud":
        path = tmp_path / "cloud_lower.ply"
        write_mesh(path, SurfaceMesh(ios_phantoms["lower"].vertices_ras, np.zeros((0, 3), np.int64)))
    else:
        path = _bad_scans(tmp_path, ios_phantoms)[kind]
    out = tmp_path / "out.json"
    code = main(["segment-ios", str(path), "-o", str(out), "--weights", str(softooth_weights), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("toothmcl: error:")
    assert not out.exists()
    if kind == "point cloud":
        assert "triangle mesh" in err[0]


def test_missing_sam_checkpoint_is_named_and_a_card_without_prg_needs_none(tmp_path_factory, tmp_path, scan_file,
                                                                           ios_phantoms, capsys):
    """A ViT-B card without its checkpoint: one error naming where to put it; PRG off: no SAM at all."""
    vit = _save(tmp_path_factory, "ios_softooth_vitb_v1", TINY_ARCH, {**TINY_PREPROCESS, "sam_model_type": "vit_b"})
    out = tmp_path / "out.json"
    assert main(["segment-ios", str(scan_file), "-o", str(out), "--weights", str(vit), "-q"]) != 0
    err = capsys.readouterr().err
    assert "sam_vit_b_01ec64.pth" in err and "TOOTHMCL_SAM_CHECKPOINT" in err and not out.exists()
    plain = _save(tmp_path_factory, "ios_softooth_noprg_v1", {"preset": "tiny", "with_prg": False},
                  {**TINY_PREPROCESS, "sam_model_type": "vit_b"})
    result = SOFToothPredictor(weights=plain, device="cpu").predict(ios_phantoms["lower"], "lower")
    assert result.provenance["prg"] is False and result.provenance["sam_weights_sha256"] == ""
    assert len(result.labels) == ios_phantoms["lower"].n_vertices


# ------------------------------------------------------------------------------------------------
# Training through the engine
# ------------------------------------------------------------------------------------------------

def _train_config(tmp_path, **softooth):
    from training.train_softooth import load_configs

    return load_configs(None, {
        "train": {"epochs": 30, "lr": 3e-3, "batch_size": 2, "out_dir": str(tmp_path / "run"), "device": "cpu",
                  "name": "ios_softooth_tiny_v1"},
        "softooth": {"phantoms": 6, "val_phantoms": 1, "phantom_resolution_mm": 1.2, "preset": "tiny",
                     "prg_start_epoch": 2, "target_faces": 800, "image_size": 128, "sam_model_type": "tiny",
                     "sam_tiny_img_size": 128, **softooth}})


def test_paper_defaults_and_prg_switched_on_at_its_epoch():
    """Adam 1e-3, batch 4, 400 epochs, patience 25, PRG from epoch 30; on_epoch_start flips use_prg."""
    from training.train_softooth import SOFToothTask, load_configs

    train, cfg = load_configs(None, {"softooth": {"phantoms": 1, "preset": "tiny"}})
    assert (train.lr, train.batch_size, train.epochs, train.early_stopping_patience) == (1e-3, 4, 400, 25)
    assert cfg.prg_start_epoch == 30 and cfg.target_faces == 10_000 and cfg.sam_model_type == "vit_b"
    task = SOFToothTask(cfg)
    model = task.build_model()
    assert isinstance(task.optimizer(model.parameters(), train), torch.optim.Adam)
    task.on_epoch_start(model, 29)
    assert model.use_prg is False
    task.on_epoch_start(model, 30)
    assert model.use_prg is True


def test_ablation_switches_turn_off_the_papers_parts_and_the_card_says_which(tmp_path):
    """softooth.centre_loss / pseudo_mask_loss off: the total loses exactly lambda_cent L_cent and
    w_pm L_pm (Eq. 14-15); match_centre / match_order off: the vanilla matcher; fdi_order off goes
    into the card's settings; the card's notes list what was off (Tables II-IV)."""
    from training.train_softooth import SOFToothTask

    _, full = _train_config(tmp_path)
    _, ablated = _train_config(tmp_path, centre_loss=False, pseudo_mask_loss=False, match_centre=False,
                               match_order=False, fdi_order=False)
    full_task, ablated_task = SOFToothTask(full), SOFToothTask(ablated)
    assert not ablated_task.criterion.matcher.use_centre and not ablated_task.criterion.matcher.use_order
    assert full_task.criterion.matcher.use_centre and full_task.criterion.matcher.use_order
    torch.manual_seed(0)
    model = full_task.build_model()
    n = 60
    labels = torch.tensor(np.repeat([0, 1, 2, 3, 9, 10], 10))[None]
    outputs = model(torch.randn(1, n, 24), torch.randn(1, n, 256), torch.ones(1, n, dtype=torch.bool))
    half = SOFToothTask(_train_config(tmp_path, centre_loss=False, pseudo_mask_loss=False)[1]).criterion
    on, off = full_task.criterion(outputs, labels), half(outputs, labels)
    assert on["centre"].item() > 0 and on["pseudo_mask"].item() > 0
    assert off["total"].item() == pytest.approx(on["total"].item() - 0.5 * on["centre"].item()
                                                - 0.2 * on["pseudo_mask"].item(), rel=1e-5)
    card = ablated_task.model_card(model, {})
    assert card.preprocess["fdi_order"] is False
    for part in ("the centre loss L_cent", "the pseudo-mask loss L_pm", "FHM's centre term", "FHM's order term",
                 "the order prior at inference"):
        assert part in card.notes
    assert "Ablation" not in full_task.model_card(model, {}).notes


def test_collate_cuts_every_scan_to_the_smallest_face_count(tmp_path):
    """Scans of 5 and 7 faces batch as 5 faces each, labels following their faces, reproducibly."""
    from training.train_softooth import SOFToothTask

    _, cfg = _train_config(tmp_path)
    task = SOFToothTask(cfg, seed=3)

    def item(n, index):
        feats = np.arange(n * 24, dtype=np.float32).reshape(n, 24)
        return {"features": feats, "labels": np.arange(n), "sam": np.ones((n, 256), np.float32),
                "visible": np.ones(n, bool), "jaw": "lower", "index": index, "epoch": 0}

    batch = task.collate([item(5, 0), item(7, 1)])
    assert batch["features"].shape == (2, 5, 24) and batch["sam"].shape == (2, 5, 256)
    kept = batch["labels"][1]
    assert torch.equal(batch["features"][1, :, 0], kept.float() * 24)   # rows stay with their labels
    assert torch.equal(task.collate([item(5, 0), item(7, 1)])["labels"], batch["labels"])


def test_teeth3ds_export_gives_training_scans_with_face_classes(tmp_path):
    """A Teeth3DS export reads back as cleaned, labelled scans per split; prepared faces carry class indices."""
    from ToothMCLCore.io.dataset_layout import write_dataset
    from ToothMCLCore.io.dataset_records import IOSRecord
    from ToothMCLCore.synthetic.ios import make_ios_phantom
    from training.train_softooth import SOFToothScans, dataset_sources

    records = [IOSRecord(f"P{seed}_{jaw}", f"P{seed}", jaw, mesh, mesh.labels, mesh.instances)
               for seed in (1, 2) for jaw in fdi.JAWS
               for mesh in [make_ios_phantom(seed, jaw=jaw, resolution_mm=1.5)]]
    write_dataset(records, tmp_path / "export", "teeth3ds", split=(0.5, 0.5, 0.0))
    train, val = dataset_sources(tmp_path / "export", "train"), dataset_sources(tmp_path / "export", "val")
    assert len(train) == len(val) == 2 and {s.name[:2] for s in train}.isdisjoint({s.name[:2] for s in val})
    mesh, jaw = train[0].load()
    assert jaw in fdi.JAWS and mesh.labels is not None and len(mesh.labels) == mesh.n_vertices
    item = SOFToothScans(train, SOFToothSettings(target_faces=600))[1]
    assert item["features"].shape == (len(item["labels"]), 24) and "sam" not in item
    assert 10 <= len(np.unique(item["labels"])) <= 17 and item["labels"].max() <= 16


def test_softooth_fold_trains_on_the_other_folds_of_a_cross_validation_export(tmp_path):
    """softooth.fold k (an export with --folds): training and validation scans come from the other
    folds only; the scans of fold k are left for its test."""
    from ToothMCLCore.io.dataset_layout import write_dataset
    from ToothMCLCore.io.dataset_records import IOSRecord
    from ToothMCLCore.synthetic.ios import make_ios_phantom
    from training.train_softooth import dataset_sources

    records = [IOSRecord(f"P{seed}_{jaw}", f"P{seed}", jaw, mesh, mesh.labels, mesh.instances)
               for seed in (1, 2, 3) for jaw in fdi.JAWS
               for mesh in [make_ios_phantom(seed, jaw=jaw, resolution_mm=2.0)]]
    ds = write_dataset(records, tmp_path / "export", "teeth3ds", split=(1.0, 0.0, 0.0), folds=3)
    for k in range(3):
        held = {c.case_id for c in ds.split("test", k)}
        trained = {s.name for s in dataset_sources(tmp_path / "export", "train", k)}
        assert len(held) == 2 and len(trained) == 4 and held.isdisjoint(trained)
    _, cfg = _train_config(tmp_path, data=str(tmp_path / "export"), fold=5)
    assert cfg.fold == 5  # checked when the scans are read: fold 5 does not exist
    with pytest.raises(InvalidInputError, match="fold 5 does not exist"):
        dataset_sources(tmp_path / "export", "train", cfg.fold)


def _held_out_scores(weights, scans):
    from ToothMCLCore.evaluation.ios_metrics import evaluate_ios

    predictor = SOFToothPredictor(weights=weights, device="cpu")
    scores = []
    for mesh in scans:
        r = predictor.predict(mesh, mesh.jaw)
        m = evaluate_ios(r.labels, r.instances, mesh.labels, mesh.instances, mesh.vertices_ras, jaw=mesh.jaw)
        scores.append([m["OA"], m["mIoU"], m["mean_dice"], m["TSA"]])
    return dict(zip(("OA", "mIoU", "dice", "TSA"), np.mean(scores, axis=0)))


@pytest.mark.slow
def test_briefly_trained_model_beats_its_untrained_self_on_held_out_phantoms(tmp_path, monkeypatch):
    """fit() on 6 phantom patients (18 epochs of batch 1, PRG from epoch 6, scans cached on disk) writes a
    SOFTooth card; on 2 held-out patients it beats the same network untrained by a clear margin."""
    from ToothMCLCore.models.checkpoint import card_path, read_card, save_checkpoint
    from ToothMCLCore.synthetic.ios import make_ios_phantom
    from training import train_softooth
    from training.engine import fit

    train, cfg = _train_config(tmp_path, cache_dir=str(tmp_path / "prepared"), prg_start_epoch=6, target_faces=600)
    train = dataclasses.replace(train, epochs=18, lr=1e-2, batch_size=1)
    task = train_softooth.SOFToothTask(cfg, seed=train.seed, name=train.name)
    path = fit(task, train)
    card = read_card(card_path(path))
    assert card.architecture == "softooth" and card.preprocess["use_prg"] is True
    assert card.preprocess["objectness_threshold"] in train_softooth.OBJECTNESS_THRESHOLDS
    assert (tmp_path / "run" / "log.csv").is_file()
    assert len(list((tmp_path / "prepared").glob("*.npz"))) == 2 * (6 + 1)   # every scan prepared once

    monkeypatch.setattr(train_softooth, "prepare_scan", lambda *a, **k: pytest.fail("prepared again"))
    again, _ = task.datasets()
    assert again[0]["sam"].shape == (len(again[0]["features"]), 256)

    torch.manual_seed(train.seed)
    untrained = tmp_path / "untrained.safetensors"
    save_checkpoint(task.build_model(), card, untrained)
    held_out = [make_ios_phantom(seed, jaw=jaw, resolution_mm=1.0) for seed in (77, 78) for jaw in fdi.JAWS]
    trained_scores, untrained_scores = _held_out_scores(path, held_out), _held_out_scores(untrained, held_out)
    print("trained", trained_scores, "untrained", untrained_scores)
    assert trained_scores["mIoU"] > untrained_scores["mIoU"] + 0.1
    assert trained_scores["dice"] > untrained_scores["dice"] + 0.1
    assert trained_scores["OA"] > untrained_scores["OA"] + 0.3
    assert trained_scores["TSA"] > untrained_scores["TSA"] + 0.3          # teeth found, not all gingiva
