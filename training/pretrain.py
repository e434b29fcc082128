"""ToothMCL multimodal contrastive pretraining of the CBCT and IOS encoders (paper, Methods).

    python -m training.pretrain --config training/configs/pretrain.yaml --data PAIRS --out runs/pretrain
    torchrun --nproc_per_node 4 -m training.pretrain --config training/configs/pretrain.yaml --data PAIRS
    python -m training.pretrain --config training/configs/pretrain_tiny.yaml --phantoms 3   # CPU demo

writes ``OUT/<name>.safetensors`` (the whole pretraining model, card architecture
``toothmcl_pretrain``) and the two encoders the fine-tuning loads:
``OUT/cbct_encoder.safetensors`` (the state dict of ``SwinUNETR.swinViT``) and
``OUT/ios_encoder.safetensors`` (of ``PointTransformerSeg.encoder``), each with a card that
names the architecture and arguments it fits. ``--pretrain-fraction 0.25`` trains on a seeded
quarter of the pairs (the paper's data-scaling ablation; smaller fractions are subsets of larger
ones).

Paired data (``--data PAIRS``), one folder per patient::

    PAIRS/<patient>/cbct.nii.gz        the CBCT (any format read_volume reads, or a DICOM folder "cbct/")
    PAIRS/<patient>/upper.stl          the scans (obj, stl, ply, vtp, vtk); at least one jaw
    PAIRS/<patient>/lower.stl
    PAIRS/<patient>/cbct_labels.nii.gz optional FDI label map (ground truth or predicted), any grid
    PAIRS/<patient>/registration.json  optional {"upper": 4x4, "lower": 4x4}: scan -> CBCT RAS (mm),
                                       for scans registered already (registration is then skipped)
    PAIRS/splits.json                  optional {"train": [patients], "val": [patients]}; default all train

Preparation (once per pair, cached under ``cache_dir``), as in the paper's "Data Preprocessing":
the CBCT is resampled trilinearly to ``spacing_mm`` (0.3 mm) in RAS, clipped to [0, 2500] and
normalised (:func:`~ToothMCLCore.preprocessing.cbct.preprocess_cbct`). Each scan is registered
rigidly into the CBCT frame (:func:`~ToothMCLCore.preprocessing.registration.register_ios_to_cbct`,
on the label map when the pair has one, else on the CBCT's tooth iso-surface); a pair whose scan
does not register is refused, logged with its name and the reason, and left out. Both jaws then
sit in the occlusion the CBCT shows: this is the paper's merging of the arches, done by the
registration to the CBCT instead of a registration model between the jaws. The ROI is the box of
the registered scans plus ``roi_margin_mm`` (the paper crops with a lightweight segmentation
model; on a pair the scans locate the teeth directly). ``points_per_jaw`` (24,000) points are
taken from each scan by farthest point sampling.

Patch-level augmentations (the paper applies augmentations "at the patch level" without listing
them; ours, per step): a random crop of ``crop_size`` voxels from the ROI (optionally turned by up
to ``cbct_rotation_rad``), intensity shift / scale and Gaussian noise
(:func:`training.datasets.augment_intensity`), and per jaw a random rotation, isotropic scale and
shift of the points. Every geometric change is tracked, so the token and patch correspondence is
exact whatever the augmentation. The released code crops 256 x 256 x 64 voxels (our default
``crop_size`` [64, 256, 256] in k, j, i) and rotates, scales and shifts the scans.

Labels are not needed (the paper's pretraining data are unlabelled). When a pair has them (and
``use_labels`` is true) they guide the registration and the intra-modal positives (Eq. 7); else
positives are neighbours (:mod:`ToothMCLCore.preprocessing.correspondence`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ToothMCLCore.config import ModelCard
from ToothMCLCore.errors import ConfigError, RegistrationError, ToothMCLError

from .cache import ArrayCache
from .configuration import (
    add_config_arguments,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_overrides,
)
from .engine import Task, TrainConfig, fit
from .pretrain_data import PairDataset, PairSource, collate_pairs, discover_pairs, phantom_pairs, prepare_all
from .pretrain_model import (
    ARCHITECTURE,
    build_pretrain_model,
    export_encoders,
    load_pretrain_model,
    retrieval_counts,
)

logger = logging.getLogger("training.pretrain")

#: the authors' released configuration: SwinUNETR feature size 48, v2 blocks
PAPER_CBCT_ARCH = {"in_channels": 1, "out_channels": 34, "feature_size": 48, "depths": [2, 2, 2, 2],
                   "num_heads": [3, 6, 12, 24], "use_v2": True}
PAPER_IOS_ARCH = {"in_channels": 6, "num_classes": 17, "planes": [32, 64, 128, 256, 512], "blocks": [2, 3, 4, 6, 3],
                  "strides": [1, 4, 4, 4, 4], "nsamples": [36, 24, 24, 24, 24]}


@dataclass(frozen=True)
class PretrainConfig:
    """What is pretrained, on what (the ``pretrain`` section of the YAML config).

    Attributes:
        spacing_mm: CBCT voxel size after preprocessing (paper: 0.3 mm).
        points_per_jaw: farthest-point samples per scan (paper: 24,000).
        coordinate_scale_mm: the IOS encoder sees canonical coordinates / this (as inference).
        roi_margin_mm: margin around the registered scans' box (the CBCT ROI).
        crop_size: CBCT crop (k, j, i) voxels per step.
        cbct_rotation_rad, intensity_augment: CBCT augmentations.
        ios_rotation_rad, ios_scale, ios_shift_mm: per-jaw point augmentations.
        use_labels: use label maps / scan labels when a pair has them.
        cbct_arch, ios_arch: builder arguments of the fine-tuning SwinUNETR / Point Transformer
            whose encoders are pretrained.
        cbct_stage, ios_stage: encoder stages whose tokens / patches are aligned.
        hidden_dim: shared dimension h of the projections; projection_hidden: 0 = linear heads.
        alpha, init_scale, init_bias, init_bias_local, reduction, negatives: :class:`training.losses.ToothMCLLoss`
            (reduction "mean" and b_l starting at 0: see that module for why);
            ``negatives`` "batch" (Eq. 4's mini-batch: the other scans' patches, of every rank
            under DDP, are negatives too) or "scan" (a scan's own patches only).
        correspondence, registration: overrides of CorrespondenceConfig / RegistrationConfig.
        registration_spacing_mm: grid of the CBCT iso-surface the scans are registered to when a
            pair has no label map (0 = ``spacing_mm``); registration wants 0.8 mm or finer, so set
            it when training on a coarser grid. A label map is used on its own grid.
        pretrain_fraction: share of the training pairs used (0 < f <= 1).
        cache_dir: prepared pairs; "auto" = OUT/cache, "" = in memory.
    """

    spacing_mm: float = 0.3
    points_per_jaw: int = 24_000
    coordinate_scale_mm: float = 50.0
    roi_margin_mm: float = 10.0
    crop_size: tuple = (64, 256, 256)
    cbct_rotation_rad: float = 0.0
    intensity_augment: bool = True
    ios_rotation_rad: float = 0.175
    ios_scale: tuple = (0.9, 1.1)
    ios_shift_mm: float = 2.0
    use_labels: bool = True
    cbct_arch: dict = field(default_factory=lambda: dict(PAPER_CBCT_ARCH))
    ios_arch: dict = field(default_factory=lambda: dict(PAPER_IOS_ARCH))
    cbct_stage: int = 4
    ios_stage: int = 4
    hidden_dim: int = 512
    projection_hidden: int = 0
    alpha: float = 0.5
    init_scale: float = 10.0
    init_bias: float = 10.0
    reduction: str = "mean"
    negatives: str = "batch"
    init_bias_local: float | None = 0.0
    correspondence: dict = field(default_factory=dict)
    registration: dict = field(default_factory=dict)
    registration_spacing_mm: float = 0.0
    pretrain_fraction: float = 1.0
    cache_dir: str = "auto"

    def __post_init__(self):
        if not 0.0 < self.pretrain_fraction <= 1.0:
            raise ConfigError(f"pretrain_fraction must be within (0, 1] (got {self.pretrain_fraction})")
        if len(self.crop_size) != 3 or any(int(s) < 8 for s in self.crop_size):
            raise ConfigError(f"crop_size must be 3 sizes of at least 8 voxels (got {self.crop_size})")
        if self.points_per_jaw < 64 or len(self.ios_scale) != 2:
            raise ConfigError("points_per_jaw must be at least 64 and ios_scale a (low, high) pair")

    @classmethod
    def from_dict(cls, data: dict) -> PretrainConfig:
        return config_from_dict(cls, data)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    def arch_args(self) -> dict:
        """``arch_args`` of the pretraining model card (and of :func:`build_pretrain_model`)."""
        return {"cbct_arch": dict(self.cbct_arch), "ios_arch": dict(self.ios_arch), "cbct_stage": self.cbct_stage,
                "ios_stage": self.ios_stage, "hidden_dim": self.hidden_dim,
                "projection_hidden": self.projection_hidden, "alpha": self.alpha, "init_scale": self.init_scale,
                "init_bias": self.init_bias, "init_bias_local": self.init_bias_local,
                "reduction": self.reduction, "negatives": self.negatives,
                "correspondence": dict(self.correspondence)}


def select_fraction(sources: list[PairSource], fraction: float, seed: int) -> list[PairSource]:
    """A seeded share of ``sources`` (at least one); a smaller fraction is a subset of a larger one."""
    order = np.random.default_rng([int(seed), 7]).permutation(len(sources))
    keep = max(1, math.ceil(round(fraction * len(sources), 6)))
    return [sources[i] for i in sorted(order[:keep])]


class PretrainTask(Task):
    """ToothMCL pretraining as an engine task (see the module docstring)."""

    def __init__(self, config: PretrainConfig, train: TrainConfig, train_pairs: list[PairSource],
                 val_pairs: list[PairSource] | None = None, description: str = ""):
        if not train_pairs:
            raise ConfigError("there are no training pairs; check --data (or --phantoms)")
        self.config, self.train = config, train
        self.train_pairs, self.val_pairs = list(train_pairs), list(val_pairs or [])
        self.description = description
        cache = config.cache_dir
        self.cache_dir = str(Path(train.out_dir) / "cache") if cache == "auto" else cache
        self.refused: list[tuple[str, str]] = []

    def build_model(self):
        return build_pretrain_model(**self.config.arch_args())

    def datasets(self):
        cache = ArrayCache(self.cache_dir or None)  # one cache object: in memory, preparing once is enough
        good_train, refused = prepare_all(self.train_pairs, self.config, cache)
        good_val, refused_val = prepare_all(self.val_pairs, self.config, cache)
        self.refused = refused + refused_val
        for name, reason in self.refused:
            logger.warning("left out pair %s: %s", name, reason)
        if not good_train:
            raise RegistrationError(f"every training pair was refused ({len(refused)}); first: {refused[0][1]}")
        train = PairDataset(good_train, self.config, self.train.seed, augment=True, cache_dir=cache)
        val = PairDataset(good_val, self.config, self.train.seed, augment=False, cache_dir=cache)
        return train, (val if len(val) else None)

    def collate(self, items):
        return collate_pairs(items)

    def loss(self, model, batch, epoch):
        out = model(batch)
        bare = getattr(model, "module", model)
        parts = {"cross": out.loss.cross, "intra_cbct": out.loss.intra_cbct, "intra_ios": out.loss.intra_ios}
        metrics = {k: float(v.detach()) for k, v in parts.items()}
        metrics["t_global"] = float(bare.criterion.t_global.detach())
        return out.loss.total, metrics

    def validate(self, model, loader, epoch):
        return evaluate(model, loader)

    def model_card(self, model, metrics) -> ModelCard:
        c = self.config
        return ModelCard(
            name=self.train.name, version="1.0.0", task="pretrain", architecture=ARCHITECTURE,
            arch_args=c.arch_args(), class_scheme="",
            preprocess={"spacing_mm": c.spacing_mm, "points_per_jaw": c.points_per_jaw,
                        "coordinate_scale_mm": c.coordinate_scale_mm, "crop_size": list(c.crop_size),
                        "roi_margin_mm": c.roi_margin_mm},
            training_data=(f"{len(self.train_pairs)} CBCT-IOS pairs (pretrain_fraction {c.pretrain_fraction}) "
                           f"{self.description}; {len(self.refused)} refused"),
            intended_use="ToothMCL pretraining: initialise the CBCT and IOS encoders for fine-tuning",
            notes=(f"{self.train.epochs} epochs, AdamW lr {self.train.lr}, weight decay {self.train.weight_decay}, "
                   f"cosine with {self.train.warmup_epochs} warm-up epochs, batch {self.train.batch_size} per "
                   f"process. Load with training.pretrain_model.load_pretrain_model; the encoders alone are "
                   f"cbct_encoder.safetensors / ios_encoder.safetensors beside this file."),
            metrics=metrics)


def evaluate(model, loader) -> dict[str, float]:
    """Mean losses and IOS -> CBCT retrieval (top-1 / top-5 and their chance levels) over ``loader``."""
    sums: dict[str, float] = {}
    n_batches = 0
    for batch in loader:
        out = model(batch)
        n_batches += 1
        for key in ("total", "cross", "intra_cbct", "intra_ios"):
            sums[key] = sums.get(key, 0.0) + float(getattr(out.loss, key))
        for b in range(out.cbct.shape[0]):
            for key, value in retrieval_counts(out.cbct[b], out.ios[b], out.z_cross[b]).items():
                sums[f"r_{key}"] = sums.get(f"r_{key}", 0.0) + value
    n = max(sums.get("r_n", 0.0), 1.0)
    metrics = {("loss" if k == "total" else k): sums[k] / max(n_batches, 1)
               for k in ("total", "cross", "intra_cbct", "intra_ios")}
    for key in ("top1", "top5", "chance_top1", "chance_top5"):
        metrics[key] = sums.get(f"r_{key}", 0.0) / n
    metrics["patches"] = sums.get("r_n", 0.0)
    metrics["score"] = metrics["top1"]
    return metrics


def run(config: PretrainConfig, train: TrainConfig, train_pairs, val_pairs=None, description: str = "") -> dict:
    """Pretrain, then (rank 0) export the encoders; returns the output paths."""
    train_pairs = select_fraction(train_pairs, config.pretrain_fraction, train.seed)
    last_ios_stage = len(config.ios_arch.get("planes", PAPER_IOS_ARCH["planes"])) - 1
    if (config.cbct_stage < 4 or config.ios_stage < last_ios_stage) and not train.find_unused_parameters:
        # the encoder stages after the aligned ones get no gradient: DDP must be told
        train = dataclasses.replace(train, find_unused_parameters=True)
    task = PretrainTask(config, train, train_pairs, val_pairs, description)
    path = fit(task, train)
    out = {"pretrain": path, "cbct_encoder": path.parent / "cbct_encoder.safetensors",
           "ios_encoder": path.parent / "ios_encoder.safetensors"}
    if int(os.environ.get("RANK", "0")) == 0:
        model, card = load_pretrain_model(path)
        export_encoders(model, card, path.parent)
        used = {"train": [p.pair_id for p in train_pairs], "val": [p.pair_id for p in val_pairs or []],
                "refused": [{"pair": n, "reason": r} for n, r in task.refused]}
        (path.parent / "pairs.json").write_text(json.dumps(used, indent=1) + "\n", encoding="utf-8")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder of paired CBCT and scans (layout in the module docstring)")
    src.add_argument("--phantoms", type=int, help="train on N synthetic phantom pairs instead (tests, demos)")
    p.add_argument("--val-phantoms", type=int, default=0, help="held-out phantom pairs for validation")
    p.add_argument("--pretrain-fraction", type=float, help="share of the training pairs (0.25, 0.5, 0.75, 1)")
    p.add_argument("--out", help="output folder (train.out_dir)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = parse_overrides(args.overrides)
    if args.out:
        overrides.setdefault("train", {})["out_dir"] = args.out
    if args.pretrain_fraction is not None:
        overrides.setdefault("pretrain", {})["pretrain_fraction"] = args.pretrain_fraction
    try:
        cfg = load_config(args.config, {"train": TrainConfig, "pretrain": PretrainConfig}, overrides)
        config, train = cfg["pretrain"], cfg["train"]
        if args.data:
            train_pairs, val_pairs = discover_pairs(args.data)
            description = f"from {args.data}"
        else:
            train_pairs = phantom_pairs(args.phantoms, spacing_mm=config.spacing_mm)
            val_pairs = phantom_pairs(args.val_phantoms, first_seed=1000, spacing_mm=config.spacing_mm)
            description = "synthetic phantoms (ToothMCLCore.synthetic), not for clinical use"
        out = run(config, train, train_pairs, val_pairs, description)
    except ToothMCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        for key, path in out.items():
            print(f"{key}: {path}")
    return 0


__all__ = ["PretrainConfig", "PretrainTask", "evaluate", "main", "run", "select_fraction"]

if __name__ == "__main__":
    raise SystemExit(main())
