"""Fine-tuning from a pretrained encoder and from scratch, on tiny phantom dataset exports (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ToothMCLCore.errors import ConfigError, WeightsError
from ToothMCLCore.io.dataset_layout import write_dataset
from ToothMCLCore.io.dataset_records import CBCTRecord, IOSRecord
from ToothMCLCore.models.registry import load_registry
from training.configuration import load_config
from training.engine import TrainConfig, fit
from training.finetune import CBCTFinetuneConfig, CBCTFinetuneTask, IOSFinetuneConfig, IOSFinetuneTask, main
from training.pretrain import PretrainConfig
from training.pretrain_model import build_pretrain_model, export_encoders

CONFIGS = "training/configs"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Encoders exported from an (untrained) tiny pretraining model: the files training.pretrain writes."""
    from ToothMCLCore.config import ModelCard

    cfg = load_config(f"{CONFIGS}/pretrain_tiny.yaml", {"train": TrainConfig, "pretrain": PretrainConfig})["pretrain"]
    torch.manual_seed(123)
    model = build_pretrain_model(**cfg.arch_args())
    card = ModelCard(name="toothmcl_pretrain_test", version="0.0.1", task="pretrain", architecture="toothmcl_pretrain",
                     arch_args=cfg.arch_args())
    out = tmp_path_factory.mktemp("pretrain")
    cbct_path, ios_path = export_encoders(model, card, out)
    return {"cbct": cbct_path, "ios": ios_path, "model": model}


@pytest.fixture(scope="module")
def cbct_export(tmp_path_factory):
    """Three 2 mm phantom CBCTs of three patients: two train, one val."""
    from ToothMCLCore.synthetic import make_cbct_phantom

    records = []
    for seed in range(3):
        image, labels = make_cbct_phantom(seed, spacing=2.0)
        records.append(CBCTRecord(f"case{seed}", f"p{seed}", image, labels, source="phantom"))
    out = tmp_path_factory.mktemp("cbct") / "export"
    write_dataset(records, out, "nnunet", split=(0.6, 0.4, 0.0), seed=1)
    return out


@pytest.fixture(scope="module")
def ios_export(tmp_path_factory):
    """Both jaws of three phantom patients (1 mm meshes) in the Teeth3DS layout."""
    from ToothMCLCore.synthetic import make_ios_phantom

    records = []
    for seed in range(3):
        for jaw in ("upper", "lower"):
            mesh = make_ios_phantom(seed, jaw, resolution_mm=1.0)
            records.append(IOSRecord(f"p{seed}_{jaw}", f"p{seed}", jaw, mesh, mesh.labels, mesh.instances))
    out = tmp_path_factory.mktemp("ios") / "export"
    write_dataset(records, out, "teeth3ds", split=(0.6, 0.4, 0.0), seed=1)
    return out


def configs(path, section, cls, out_dir, cache_dir, **values):
    overrides = {"train": {"out_dir": str(out_dir)}, section: {"cache_dir": str(cache_dir), **values}}
    c = load_config(f"{CONFIGS}/{path}", {"train": TrainConfig, section: cls}, overrides)
    return c[section], c["train"]


def test_given_pretrained_init_the_cbct_encoder_tensors_are_those_of_the_file(encoders, cbct_export, tmp_path):
    """Every swinViT tensor of the fine-tuning SwinUNETR equals the pretrained encoder's; scratch differs."""
    from safetensors.torch import load_file

    cfg, train = configs("finetune_cbct_tiny.yaml", "cbct", CBCTFinetuneConfig, tmp_path, tmp_path / "cache",
                         encoder=str(encoders["cbct"]))
    task = CBCTFinetuneTask(cfg, train, cbct_export)
    model = task.build_model()
    stored = load_file(str(encoders["cbct"]))
    assert set(stored) == set(model.swinViT.state_dict())
    for key, value in model.swinViT.state_dict().items():
        assert torch.equal(value, stored[key]), key
    assert task.init_report["loaded"] == len(stored) and not task.init_report["missing"]
    scratch = CBCTFinetuneTask(configs("finetune_cbct_tiny.yaml", "cbct", CBCTFinetuneConfig, tmp_path,
                                       tmp_path / "cache", init="scratch")[0], train, cbct_export).build_model()
    weights = [k for k in stored if k.endswith("weight") and stored[k].dim() > 1]
    assert not any(torch.equal(scratch.swinViT.state_dict()[k], stored[k]) for k in weights)


def test_given_pretrained_init_the_ios_encoder_tensors_are_those_of_the_file(encoders, ios_export, tmp_path):
    """The Point Transformer's encoder is the pretrained one; its decoder is freshly initialised."""
    cfg, train = configs("finetune_ios_tiny.yaml", "ios", IOSFinetuneConfig, tmp_path, tmp_path / "cache",
                         encoder=str(encoders["ios"]))
    model = IOSFinetuneTask(cfg, train, ios_export).build_model()
    pretrained = encoders["model"].ios_encoder.state_dict()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, pretrained[key]), key


def test_given_an_encoder_that_does_not_fit_fine_tuning_refuses_it(encoders, cbct_export, ios_export, tmp_path):
    """Other encoder arguments, the other modality's encoder, or no encoder at all: a clear error."""
    cfg, train = configs("finetune_cbct_tiny.yaml", "cbct", CBCTFinetuneConfig, tmp_path, tmp_path / "c",
                         encoder=str(encoders["cbct"]),
                         arch={"in_channels": 1, "out_channels": 34, "feature_size": 24, "depths": [1, 1, 1, 1]})
    with pytest.raises(ConfigError, match="feature_size 12 vs 24"):
        CBCTFinetuneTask(cfg, train, cbct_export).build_model()
    cfg, train = configs("finetune_cbct_tiny.yaml", "cbct", CBCTFinetuneConfig, tmp_path, tmp_path / "c",
                         encoder=str(encoders["ios"]))
    with pytest.raises(WeightsError, match="not a CBCT encoder"):
        CBCTFinetuneTask(cfg, train, cbct_export).build_model()
    cfg, train = configs("finetune_cbct_tiny.yaml", "cbct", CBCTFinetuneConfig, tmp_path, tmp_path / "c")
    with pytest.raises(ConfigError, match="--encoder"):
        CBCTFinetuneTask(cfg, train, cbct_export).build_model()
    with pytest.raises(ConfigError, match="holds IOS cases, not CBCT"):
        CBCTFinetuneTask(cfg, train, ios_export)


@pytest.mark.parametrize("init", ["pretrained", "scratch"])
def test_cbct_fine_tuning_runs_an_epoch_and_writes_weights_the_pipeline_loads(init, encoders, cbct_export,
                                                                               tmp_path_factory):
    """One epoch from either init; the card is a cbct_teeth SwinUNETR that CBCTPredictor accepts."""
    from ToothMCLCore.inference.cbct import CBCTPredictor

    out = tmp_path_factory.mktemp(f"cbct_{init}")
    cfg, train = configs("finetune_cbct_tiny.yaml", "cbct", CBCTFinetuneConfig, out,
                         cbct_export.parent / "cache", init=init, encoder=str(encoders["cbct"]))
    path = fit(CBCTFinetuneTask(cfg, train, cbct_export), train)
    predictor = CBCTPredictor(weights=path, device="cpu", use_roi=False)
    card = predictor.card
    assert card.task == "cbct_teeth" and card.class_scheme == "cbct" and card.preprocess["spacing_mm"] == 2.0
    assert 0.0 <= card.metrics["val_dice"] <= 1.0 and card.metrics["epoch"] == 1
    assert ("encoder toothmcl_pretrain_test_cbct_encoder" in card.notes) == (init == "pretrained")
    assert predictor.sw_config.roi_size == (32, 32, 64)


def test_ios_fine_tuning_from_the_cli_runs_an_epoch_and_writes_weights_the_pipeline_loads(encoders, ios_export,
                                                                                         tmp_path, capsys,
                                                                                         monkeypatch):
    """``python -m training.finetune ios`` trains an epoch; IOSPredictor loads it by name and segments a jaw."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.synthetic import make_ios_phantom

    code = main(["ios", "--data", str(ios_export), "--init", "pretrained", "--encoder", str(encoders["ios"]),
                 "--config", f"{CONFIGS}/finetune_ios_tiny.yaml", "--out", str(tmp_path),
                 "--set", f"ios.cache_dir={ios_export.parent / 'cache'}"])
    assert code == 0
    path = tmp_path / "ios_pt_tiny_v1.safetensors"
    assert f"weights: {path}" in capsys.readouterr().out
    monkeypatch.setenv("TOOTHMCL_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "model_cache"))
    assert load_registry()["ios_pt_tiny_v1"].task == "ios_teeth"  # known before any download
    predictor = IOSPredictor(model="ios_pt_tiny_v1", device="cpu", passes=1)
    assert predictor.n_points == 1024 and predictor.card.task == "ios_teeth"
    assert predictor.card.sha256 == IOSPredictor(weights=path, device="cpu").card.sha256
    result = predictor.predict(make_ios_phantom(5, "lower", resolution_mm=1.0))
    assert result.labels.shape == (make_ios_phantom(5, "lower", resolution_mm=1.0).n_vertices,)
    assert np.isin(np.unique(result.labels), [0, *range(31, 39), *range(41, 49)]).all()


def test_given_mesh_sampling_each_step_sees_the_jaw_at_a_new_resolution(ios_export, tmp_path):
    """sampling: mesh + resolution_augment: the same training jaw comes back with different point counts
    (decimated, as stored, subdivided) and its epoch repeats; validation takes the scan
    as stored, the same every time; the card says how the jaws were sampled."""
    config, train = configs("finetune_ios_tiny.yaml", "ios", IOSFinetuneConfig, tmp_path, tmp_path / "cache",
                            init="scratch", sampling="mesh", resolution_augment=True, repeats=3, tilt_rad=0.1,
                            jitter_mm=0.05, n_points=200_000)  # above every version's vertex count
    task = IOSFinetuneTask(config, train, ios_export)
    training, validation = task.datasets()
    assert len(training) == 3 * len(task.train_cases)
    sizes = set()
    for epoch in range(4):
        training.set_epoch(epoch)
        points, features, classes = training[0]
        assert points.shape[0] == features.shape[0] == classes.shape[0] <= config.n_points
        sizes.add(points.shape[0])
    assert len(sizes) >= 2
    a, b = validation[0], validation[0]
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    notes = task.model_card(task.build_model(), {}).notes
    assert "samples the whole jaw as inference does" in notes and "decimated or subdivided" in notes
    assert "+-0.1 rad about the others" in notes and "jitter 0.05 mm" in notes


def test_given_mirror_a_step_sees_the_jaw_mirrored_with_each_tooth_renumbered_as_its_mirror(ios_export, tmp_path):
    """ios.mirror: 1 gives every training step the mirror image of its jaw (x -> -x, normals too) and
    renumbers its teeth (11 <-> 21), so each tooth class still lies on its own side of the midline;
    the card says so; a probability outside 0..1 is refused."""
    from ToothMCLCore import fdi

    fixed = {"init": "scratch", "sampling": "mesh", "rotation_rad": 0.0, "tilt_rad": 0.0, "shift_mm": 0.0,
             "scale": (1.0, 1.0), "n_points": 200_000}
    plain_cfg, train = configs("finetune_ios_tiny.yaml", "ios", IOSFinetuneConfig, tmp_path, tmp_path / "cache", **fixed)
    mirror_cfg, _ = configs("finetune_ios_tiny.yaml", "ios", IOSFinetuneConfig, tmp_path, tmp_path / "cache",
                            mirror=1.0, **fixed)
    plain, _ = IOSFinetuneTask(plain_cfg, train, ios_export).datasets()
    task = IOSFinetuneTask(mirror_cfg, train, ios_export)
    mirrored, _ = task.datasets()
    (p0, f0, k0), (p1, f1, k1) = plain[0], mirrored[0]
    # same vertices, the mirror image: x and the normal's x change sign, y and z stay
    order0, order1 = np.lexsort(p0.numpy().T[::-1]), np.lexsort((p1.numpy() * [-1, 1, 1]).T[::-1])
    np.testing.assert_allclose(p1.numpy()[order1] * [-1, 1, 1], p0.numpy()[order0], atol=1e-5)
    np.testing.assert_allclose(f1.numpy()[order1][:, 3], -f0.numpy()[order0][:, 3], atol=1e-5)
    perm = fdi.mirror_permutation("ios_lower")  # the same for both jaws: classes 1-8 right, 9-16 left
    np.testing.assert_array_equal(k1.numpy()[order1], perm[k0.numpy()[order0]])
    assert (p1.numpy()[(k1.numpy() >= 1) & (k1.numpy() <= 8), 0] > 0).mean() > 0.9  # the right quadrant stays at +x
    assert "mirror image (teeth renumbered) with probability 1.0" in task.model_card(task.build_model(), {}).notes
    with pytest.raises(ConfigError, match="ios.mirror is a probability"):
        IOSFinetuneConfig(init="scratch", mirror=1.5)


def test_fine_tuning_with_a_fold_trains_on_the_other_folds_only(ios_export, tmp_path):
    """finetune --fold k on an export with folds: no training or validation jaw of fold k's patients."""
    from ToothMCLCore.io.dataset_reader import read_dataset

    source = read_dataset(ios_export)
    records = [case.load() for case in source.cases]
    folded = tmp_path / "folded"
    ds = write_dataset(records, folded, "teeth3ds", split=(0.6, 0.4, 0.0), seed=1, folds=3)
    config, train = configs("finetune_ios_tiny.yaml", "ios", IOSFinetuneConfig, tmp_path, tmp_path / "cache",
                            init="scratch")
    for k in range(3):
        task = IOSFinetuneTask(config, train, folded, fold=k)
        held = {c.patient_id for c in ds.split("test", k)}
        used = {c.patient_id for c in task.train_cases + task.val_cases}
        assert held and used and held.isdisjoint(used)
