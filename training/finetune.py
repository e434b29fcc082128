"""Fine-tuning for CBCT (SwinUNETR) and IOS (Point Transformer) segmentation (paper, Methods).

    python -m training.finetune cbct --data EXPORT --init pretrained --encoder runs/pretrain/cbct_encoder.safetensors \\
        --config training/configs/finetune_cbct.yaml --out runs/cbct
    python -m training.finetune ios --data EXPORT --init scratch --config training/configs/finetune_ios.yaml
    torchrun --nproc_per_node 4 -m training.finetune cbct ...          # same command on 4 GPUs

``--data`` is a dataset folder in our layout (``toothmcl export-dataset`` from corrected cases,
``toothmcl convert-dataset`` from ToothFairy2 / Teeth3DS ...; read with
:func:`ToothMCLCore.io.dataset_layout.read_dataset`): its ``train`` split is trained on, its
``val`` split chooses the best epoch (mean per-tooth Dice). ``--init pretrained`` loads the
encoder written by ``training.pretrain`` into a fresh model (the decoder stays random, as in the
paper); ``--init scratch`` is the paper's "w/o pretraining" ablation. The loaded, missing and
unexpected tensors are logged, and a file of which no tensor fits is an error, as is an encoder
pretrained with other encoder arguments than the fine-tuning model's.

The output ``OUT/<name>.safetensors`` and its card (task, architecture, class scheme,
preprocessing, sliding window) are what ``toothmcl segment-cbct --weights`` /
``segment-ios --weights`` and the Slicer module load; ``OUT/registry.json`` holds its registry
entry, so that with ``TOOTHMCL_REGISTRY=OUT/registry.json`` they load it by name (``--model``).

CBCT (paper): SwinUNETR, Dice + cross-entropy (MONAI ``DiceCELoss``, background excluded from
the Dice as in the released code), AdamW 3e-4, weight decay 1e-5, cosine with warm-up, 150
epochs, batch 1, random crops of 256 x 256 x 128 (``crop_size`` [128, 256, 256] in k, j, i),
random intensity shift and Gaussian noise, rotations within (-0.5, 0.5) rad, and no flips. Crops
are drawn inside the teeth's box plus ``roi_margin_mm`` (what the ROI crop gives at inference),
centred on a tooth voxel with probability ``foreground_fraction``. Validation: sliding window
over that box, mean Dice over the teeth of each case. IOS (paper): Point Transformer, point-wise
cross-entropy, random shifts, rotations within (-0.5, 0.5) rad and scaling
(:func:`ToothMCLCore.preprocessing.ios.augment`); one network for both jaws in their canonical
frames (:mod:`ToothMCLCore.preprocessing.ios`), 17 classes.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ToothMCLCore.config import CBCTPreprocessConfig, ModelCard, SlidingWindowConfig
from ToothMCLCore.errors import ConfigError, ToothMCLError, WeightsError

from .configuration import (
    add_config_arguments,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_overrides,
)
from .engine import Task, TrainConfig, fit
from .finetune_data import CBCTCaseDataset, CBCTCropDataset, IOSJawDataset, cbct_validation, ios_validation
from .pretrain import PAPER_CBCT_ARCH, PAPER_IOS_ARCH
from .pretrain_model import CBCT_ENCODER_KEYS, IOS_ENCODER_KEYS, load_encoder

logger = logging.getLogger("training.finetune")
INITS = ("pretrained", "scratch")
#: how IOS training samples a jaw (:class:`training.finetune_data.IOSJawDataset`)
IOS_SAMPLINGS = ("fixed", "mesh")


@dataclass(frozen=True)
class CBCTFinetuneConfig:
    """The ``cbct`` section: model, crops, augmentations (defaults: the paper's)."""

    init: str = "pretrained"
    encoder: str = ""
    arch: dict = field(default_factory=lambda: dict(PAPER_CBCT_ARCH))
    preprocess: dict = field(default_factory=dict)
    crop_size: tuple = (128, 256, 256)
    foreground_fraction: float = 0.5
    roi_margin_mm: float = 8.0
    rotation_rad: float = 0.5
    intensity_augment: bool = True
    include_background: bool = False
    sw_overlap: float = 0.25
    roi_model: str = ""
    version: str = "1.0.0"
    cache_dir: str = "auto"
    max_val_cases: int = 0

    def __post_init__(self):
        _check_init(self.init)
        SlidingWindowConfig(roi_size=tuple(self.crop_size), overlap=self.sw_overlap)  # sizes divisible by 32

    @classmethod
    def from_dict(cls, data):
        return config_from_dict(cls, data)

    def to_dict(self):
        return config_to_dict(self)


@dataclass(frozen=True)
class IOSFinetuneConfig:
    """The ``ios`` section: model, point sampling, augmentations (defaults: the paper's).

    Options for real scans (ours; off by default): ``tilt_rad`` bounds rotations about x and y
    while ``rotation_rad`` then bounds the one about the occlusal axis; ``jitter_mm`` adds
    Gaussian noise (:func:`ToothMCLCore.preprocessing.ios.augment`); ``sampling: mesh`` samples
    the whole scan afresh at every step as inference does, and ``resolution_augment`` first
    decimates or subdivides it (:mod:`training.ios_sampling`); ``repeats`` visits each training
    jaw that many times per epoch; ``mirror`` is the probability that a step sees the jaw's
    mirror image (x -> -x, normals too) with every tooth renumbered as its mirror (11 <-> 21,
    :func:`ToothMCLCore.fdi.mirror_permutation`); ``arch_width`` (a range, or none) scales x alone,
    across the arch, by a factor drawn in it (a wider or narrower arch of the same teeth). A
    mirrored jaw is a plausible jaw (the arch is near-symmetric); the paper does not mirror, and
    with 50 real jaws it doubles what the network sees of each side.
    """

    init: str = "pretrained"
    encoder: str = ""
    arch: dict = field(default_factory=lambda: dict(PAPER_IOS_ARCH))
    n_points: int = 24_000
    coordinate_scale_mm: float = 50.0
    rotation_rad: float = 0.5
    shift_mm: float = 2.0
    scale: tuple = (0.9, 1.1)
    tilt_rad: float | None = None
    jitter_mm: float = 0.0
    sampling: str = "fixed"
    resolution_augment: bool = False
    repeats: int = 1
    mirror: float = 0.0
    arch_width: tuple | None = None
    version: str = "1.0.0"
    cache_dir: str = "auto"
    max_val_cases: int = 0

    def __post_init__(self):
        _check_init(self.init)
        if self.sampling not in IOS_SAMPLINGS:
            raise ConfigError(f"ios.sampling must be one of {IOS_SAMPLINGS} (got {self.sampling!r})")
        if self.resolution_augment and self.sampling != "mesh":
            raise ConfigError("ios.resolution_augment needs ios.sampling: mesh (it resamples the whole scan)")
        if self.repeats < 1:
            raise ConfigError(f"ios.repeats must be at least 1 (got {self.repeats})")
        if not 0.0 <= self.mirror <= 1.0:
            raise ConfigError(f"ios.mirror is a probability, 0 to 1 (got {self.mirror})")
        if self.arch_width is not None and not (len(self.arch_width) == 2
                                                and 0.5 <= self.arch_width[0] <= self.arch_width[1] <= 2.0):
            raise ConfigError(f"ios.arch_width is a range [low, high] within 0.5-2 (got {self.arch_width})")

    @classmethod
    def from_dict(cls, data):
        return config_from_dict(cls, data)

    def to_dict(self):
        return config_to_dict(self)


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS} (got {init!r})")


def _normalised(builder, args: dict, keys) -> dict:
    defaults = {k: p.default for k, p in inspect.signature(builder).parameters.items()}
    out = {}
    for k in keys:
        v = args.get(k, defaults.get(k))
        out[k] = tuple(v) if isinstance(v, (list, tuple)) else v
    return out


def load_pretrained_encoder(target, path, modality: str, arch: dict) -> dict:
    """Load the pretrained encoder at ``path`` into ``target`` (``model.swinViT`` / ``model.encoder``).

    Returns:
        ``{"encoder", "sha256", "loaded", "missing", "unexpected"}`` (also logged).

    Raises:
        ConfigError: the encoder was pretrained with other encoder arguments than ``arch``.
        WeightsError: no tensor of the file fits ``target``, or shapes differ.
    """
    from ToothMCLCore.models.networks import build_point_transformer, build_swinunetr

    if not path:
        raise ConfigError(f"init: pretrained needs the encoder: --encoder {modality}_encoder.safetensors "
                          "(written by training.pretrain), or use --init scratch")
    state, card = load_encoder(path, modality)
    builder, keys = (build_swinunetr, CBCT_ENCODER_KEYS) if modality == "cbct" else (build_point_transformer,
                                                                                      IOS_ENCODER_KEYS)
    want, have = _normalised(builder, arch, keys), _normalised(builder, card.arch_args, keys)
    diff = {k: (have[k], want[k]) for k in keys if have[k] != want[k]}
    if diff:
        raise ConfigError(f"the encoder {Path(path).name} was pretrained with other arguments than the fine-tuning "
                          f"model: {', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())}; use the "
                          f"encoder's arch_args {card.arch_args} in the {modality} section's arch")
    try:
        missing, unexpected = target.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit the {modality.upper()} encoder: {str(exc).splitlines()[0]}") from None
    loaded = len(state) - len(unexpected)
    if loaded == 0:
        raise WeightsError(f"no tensor of {path} fits the {modality.upper()} encoder (expected keys like "
                           f"{next(iter(target.state_dict()))!r}, got {next(iter(state))!r})")
    report = {"encoder": card.name, "sha256": card.sha256, "loaded": loaded, "missing": list(missing),
              "unexpected": list(unexpected)}
    logger.info("loaded %d pretrained tensors from %s into the %s encoder", loaded, path, modality.upper())
    if missing or unexpected:
        logger.warning("pretrained %s encoder: %d tensors missing (left random): %s; %d unexpected (ignored): %s",
                       modality.upper(), len(missing), missing[:5], len(unexpected), unexpected[:5])
    return report


class _FinetuneTask(Task):
    modality = ""

    def __init__(self, config, train: TrainConfig, data_dir, fold: int | None = None):
        from ToothMCLCore.io.dataset_layout import read_dataset

        self.config, self.train, self.data_dir, self.fold = config, train, Path(data_dir), fold
        dataset = read_dataset(data_dir, verify=False)
        if dataset.modality != self.modality:
            raise ConfigError(f"{data_dir} holds {dataset.modality.upper()} cases, not {self.modality.upper()}; "
                              f"fine-tune '{dataset.modality}' on it, or give a {self.modality.upper()} export")
        self.train_cases = dataset.split("train", fold)
        self.val_cases = dataset.split("val", fold)[: config.max_val_cases or None]
        if not self.train_cases:
            raise ConfigError(f"{data_dir} has no case in its train split"
                              + (f" outside fold {fold}" if fold is not None else ""))
        self.cache_dir = str(Path(train.out_dir) / "cache") if config.cache_dir == "auto" else config.cache_dir
        self.init_report: dict = {}

    def _init_encoder(self, target) -> None:
        if self.config.init == "pretrained":
            self.init_report = load_pretrained_encoder(target, self.config.encoder, self.modality, self.config.arch)

    def _init_note(self) -> str:
        if self.config.init == "scratch":
            return "Initialisation: from scratch (random)."
        r = self.init_report
        return (f"Initialisation: encoder {r.get('encoder')} (SHA-256 {r.get('sha256', '')[:12]}), "
                f"{r.get('loaded')} tensors loaded, {len(r.get('missing', []))} missing; decoder random.")

    def _training_note(self) -> str:
        t = self.train
        return (f"{t.epochs} epochs, AdamW lr {t.lr}, weight decay {t.weight_decay}, cosine with "
                f"{t.warmup_epochs} warm-up epochs, batch {t.batch_size} per process.")


class CBCTFinetuneTask(_FinetuneTask):
    """SwinUNETR fine-tuning on a CBCT dataset export."""

    modality = "cbct"

    def __init__(self, config: CBCTFinetuneConfig, train: TrainConfig, data_dir):
        super().__init__(config, train, data_dir)
        self.preprocess = CBCTPreprocessConfig.from_dict(dict(config.preprocess))
        from monai.losses import DiceCELoss

        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True, include_background=config.include_background)

    def build_model(self):
        from ToothMCLCore.models import build_model

        model = build_model("swinunetr", dict(self.config.arch))
        self._init_encoder(model.swinViT)
        return model

    def datasets(self):
        c = self.config
        train = CBCTCropDataset(self.train_cases, self.preprocess, c, self.train.seed, self.cache_dir)
        val = CBCTCaseDataset(self.val_cases, self.preprocess, c, self.cache_dir) if self.val_cases else None
        return train, val

    def loss(self, model, batch, epoch):
        x, y = batch
        loss = self.criterion(model(x).float(), y)
        return loss, {}

    def validate(self, model, loader, epoch):
        return cbct_validation(model, loader, self.config)

    def model_card(self, model, metrics) -> ModelCard:
        c = self.config
        return ModelCard(
            name=self.train.name, version=c.version, task="cbct_teeth", architecture="swinunetr",
            arch_args=dict(c.arch), class_scheme="cbct", preprocess=self.preprocess.to_dict(),
            sliding_window=SlidingWindowConfig(roi_size=tuple(c.crop_size), overlap=c.sw_overlap).to_dict(),
            training_data=f"{len(self.train_cases)} CBCT cases of {self.data_dir.name} (train split)",
            intended_use="CBCT tooth segmentation and FDI numbering (ToothMCL fine-tuning)",
            notes=(f"{self._init_note()} {self._training_note()} Crops {list(c.crop_size)} (k, j, i), rotations "
                   f"within +-{c.rotation_rad} rad, intensity shift and noise, no flips. Dice + cross-entropy. "
                   "Classes: 0 background, 1-32 FDI 11-48, 33 metal (label 99)."),
            roi_model=c.roi_model, metrics=metrics)


class IOSFinetuneTask(_FinetuneTask):
    """Point Transformer fine-tuning on an IOS dataset export (both jaws, one network)."""

    modality = "ios"

    def build_model(self):
        from ToothMCLCore.models import build_model

        model = build_model("point_transformer", dict(self.config.arch))
        self._init_encoder(model.encoder)
        return model

    def datasets(self):
        c = self.config
        train = IOSJawDataset(self.train_cases, c, self.train.seed, self.cache_dir, augment=True)
        val = IOSJawDataset(self.val_cases, c, self.train.seed, self.cache_dir, augment=False) if self.val_cases else None
        return train, val

    def loss(self, model, batch, epoch):
        import torch.nn.functional as F

        points, features, classes = batch
        logits = model(points, features)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), classes.reshape(-1)), {}

    def validate(self, model, loader, epoch):
        return ios_validation(model, loader)

    def model_card(self, model, metrics) -> ModelCard:
        c = self.config
        return ModelCard(
            name=self.train.name, version=c.version, task="ios_teeth", architecture="point_transformer",
            arch_args=dict(c.arch), class_scheme="ios",
            preprocess={"n_points": c.n_points, "coordinate_scale_mm": c.coordinate_scale_mm},
            training_data=f"{len(self.train_cases)} jaws of {self.data_dir.name} (train split)",
            intended_use="Intraoral-scan tooth segmentation, both jaws (ToothMCL fine-tuning)",
            notes=(f"{self._init_note()} {self._training_note()} {self._sampling_note()} Point-wise "
                   "cross-entropy. Classes: 0 gingiva, 1-8 right quadrant, 9-16 left (canonical frame)."),
            metrics=metrics)


    def _sampling_note(self) -> str:
        c = self.config
        if c.sampling == "mesh":
            sampled = (f"Every step samples the whole jaw as inference does (all vertices up to {c.n_points}, else "
                       f"{c.n_points} FPS points)" + (", after drawing the scan as stored, decimated or subdivided"
                                                       if c.resolution_augment else "") + ".")
        else:
            sampled = f"{c.n_points} FPS points per jaw, drawn once."
        rotation = (f"rotations within +-{c.rotation_rad} rad about the occlusal axis and +-{c.tilt_rad} rad about the "
                    "others" if c.tilt_rad is not None else f"rotations within +-{c.rotation_rad} rad")
        jitter = f", jitter {c.jitter_mm} mm" if c.jitter_mm else ""
        mirror = f", the mirror image (teeth renumbered) with probability {c.mirror}" if c.mirror else ""
        return f"{sampled} Augmentation: {rotation}, shifts +-{c.shift_mm} mm, scaling {list(c.scale)}{jitter}{mirror}."


TASKS = {"cbct": (CBCTFinetuneTask, CBCTFinetuneConfig), "ios": (IOSFinetuneTask, IOSFinetuneConfig)}


def write_registry_entry(weights_path) -> tuple[Path, str]:
    """Add the model to ``registry.json`` beside it (a ``$TOOTHMCL_REGISTRY`` file); returns (file, name).

    With ``TOOTHMCL_REGISTRY`` pointing there, the CLI and the Slicer module load the model by
    its name (``--model NAME``); publish it by replacing the ``file://`` URL with a download URL.
    """
    import json

    from ToothMCLCore.io.atomic import atomic_write_text
    from ToothMCLCore.models.checkpoint import card_path, read_card

    weights_path = Path(weights_path).resolve()
    card = read_card(card_path(weights_path))
    registry = weights_path.parent / "registry.json"
    entries = json.loads(registry.read_text(encoding="utf-8")) if registry.is_file() else {}
    entries[card.name] = {"url": weights_path.as_uri(), "sha256": card.sha256, "description": card.intended_use,
                          "task": card.task}
    atomic_write_text(registry, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return registry, card.name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modality", choices=sorted(TASKS))
    add_config_arguments(p)
    p.add_argument("--data", required=True, help="dataset export folder (read_dataset layout)")
    p.add_argument("--init", choices=INITS, help="pretrained encoder or from scratch (the paper's ablation)")
    p.add_argument("--encoder", help="cbct_encoder / ios_encoder .safetensors written by training.pretrain")
    p.add_argument("--out", help="output folder (train.out_dir)")
    p.add_argument("--fold", type=int, help="cross-validation: train on the other folds of an export with folds "
                                            "(convert-dataset --folds K), leaving fold FOLD to test")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = parse_overrides(args.overrides)
    section = overrides.setdefault(args.modality, {})
    if args.init:
        section["init"] = args.init
    if args.encoder:
        section["encoder"] = args.encoder
    if args.out:
        overrides.setdefault("train", {})["out_dir"] = args.out
    task_cls, config_cls = TASKS[args.modality]
    try:
        cfg = load_config(args.config, {"train": TrainConfig, args.modality: config_cls}, overrides)
        path = fit(task_cls(cfg[args.modality], cfg["train"], args.data, args.fold), cfg["train"])
    except ToothMCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        registry, name = write_registry_entry(path)
        print(f"weights: {path}")
        print(f"use it:  toothmcl segment-{args.modality} --weights {path} ...")
        print(f"or:      TOOTHMCL_REGISTRY={registry} toothmcl segment-{args.modality} --model {name} ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
