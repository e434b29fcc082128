"""Train SOFTooth (Li et al.) for intraoral scans through the training engine.

    python -m training.train_softooth --data EXPORT --out runs/ios_softooth_v1          # paper defaults
    torchrun --nproc_per_node 2 -m training.train_softooth --data EXPORT ...
    python -m training.train_softooth --config training/configs/softooth.yaml --set train.epochs=50

writes ``OUT/<name>.safetensors`` with its model card; ``toothmcl segment-ios --weights`` and the
Slicer module then run it like the Point Transformer (``ToothMCLCore.inference.softooth``).

Paper defaults (Sec. IV-A2; section ``train``, :class:`~training.engine.TrainConfig`): Adam
with lr 1e-3 (:meth:`SOFToothTask.optimizer`; no weight decay), batch 4, 400 epochs, early
stopping after 25 validations (one per epoch) without a lower validation loss (the validation
``score`` is minus the loss). The engine adds its warm-up and cosine decay of the learning rate,
the paper states none. Section ``softooth`` (:class:`SOFToothTrainConfig`): the SAM path (PRG)
is switched on from epoch 30 (0-based: the first 30 epochs train without it,
:meth:`SOFToothTask.on_epoch_start`); the network is the "paper" preset, scans are decimated
to 10,000 faces, and the SAM encoder is ViT-B.

Data. A Teeth3DS export (``toothmcl export-dataset``, read with
:func:`ToothMCLCore.io.dataset_reader.read_dataset`: its train and val splits), or synthetic
phantoms (``phantoms`` patients for training, ``val_phantoms`` more for validation, both jaws
each). Every scan goes through the inference pipeline's own preparation
(:func:`ToothMCLCore.inference.softooth.prepare_scan`): decimation with majority face labels,
canonical frame, 24-d features, occlusal rendering and frozen SAM features. This is done once
per scan, before the first epoch: in memory, or with ``cache_dir`` as one ``.npz`` per scan
(SAM features as float16), keyed by the scan's files (or phantom seed), the preparation
settings and the SAM weights, so a second run or another rank reuses it; under torchrun each
rank prepares its share and waits for the others. No augmentation: the SAM features belong to
the rendered view, which a moved scan would no longer match.

Inference threshold. The card's ``objectness_threshold`` is calibrated on the validation set:
of 0.2, 0.3, 0.4 and 0.5, the one with the best face-level mIoU at the saved epoch
(:func:`calibrated_threshold`; 0.5 without validation). Objectness learns the IoU of an
instance's mask with its tooth; a briefly trained model under-estimates it, and a fixed 0.5
would keep no tooth at all. A well-trained model's teeth have objectness near their IoU
(about 0.9) and the other queries near 0, so the choice then matters little.

Batches. Decimation lands within a few faces of the target, so the scans of a batch differ in
face count by a handful. :meth:`SOFToothTask.collate` brings every scan of a batch to the
smallest count by dropping randomly chosen faces (drawn with :func:`~training.engine.sample_rng`
from seed, epoch and scan), so no padding reaches the k-NN graph, the attention pooling or the
matching, which have no notion of a mask. Validation batches hold one scan and lose nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ToothMCLCore import fdi
from ToothMCLCore.config import ModelCard
from ToothMCLCore.errors import ConfigError, InvalidInputError
from ToothMCLCore.inference.softooth import SOFToothSettings, build_sam, prepare_scan
from ToothMCLCore.models.softooth import assign_instances

from .configuration import (
    add_config_arguments,
    config_from_dict,
    config_to_dict,
    load_config,
    merge,
    parse_overrides,
)
from .engine import Task, TrainConfig, fit, move_to, sample_rng

logger = logging.getLogger("training.softooth")

#: section ``train`` defaults from the paper (Sec. IV-A2)
PAPER_TRAIN = {"epochs": 400, "lr": 1e-3, "batch_size": 4, "early_stopping_patience": 25, "weight_decay": 0.0,
               "find_unused_parameters": True, "name": "ios_softooth_v1", "out_dir": "runs/ios_softooth_v1"}
_CACHE_TAG = "toothmcl-softooth-train-item-v1"
#: objectness thresholds tried on the validation set; the card gets the best (see calibrated_threshold)
OBJECTNESS_THRESHOLDS = (0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class SOFToothTrainConfig:
    """Section ``softooth``: model, data and preparation.

    Attributes:
        data: folder of a Teeth3DS export ("" for phantoms).
        phantoms, val_phantoms: synthetic patients (two jaws each) for training and validation,
            used when ``data`` is empty; seeds from ``phantom_first_seed`` on.
        phantom_resolution_mm: surface resolution of the phantoms.
        preset: network preset ("paper", or "tiny" for CPU tests).
        with_prg: build the PRG module (False: the paper's baseline without SAM).
        prg_start_epoch: first (0-based) epoch that runs PRG (paper: 30).
        target_faces, image_size, sam_model_type, sam_sha256, sam_tiny_img_size: the
            preparation, written into the card (:class:`~ToothMCLCore.inference.softooth.SOFToothSettings`).
        sam_checkpoint: path of the SAM checkpoint (its file name goes into the card).
        cache_dir: where prepared scans are kept ("" = in memory).
        version: version written into the card.
        centre_loss, pseudo_mask_loss: train with L_cent (Eq. 14) and L_pm (Eq. 15); off for
            the paper's ablations (Tables II-III).
        match_centre, match_order: the centre (Eq. 12) and order (Eq. 13) terms of FHM's
            matching; both off = the vanilla Hungarian matcher (Table IV).
        fold: cross-validation fold left out of training (an export with folds; -1 = none).
        fdi_order: number the teeth with the order prior at inference (written into the card,
            :class:`~ToothMCLCore.inference.softooth.SOFToothSettings`); off for "w/o FHM".
    The card's notes name every part that is off.
    """

    data: str = ""
    phantoms: int = 0
    val_phantoms: int = 2
    phantom_first_seed: int = 1000
    phantom_resolution_mm: float = 0.8
    preset: str = "paper"
    with_prg: bool = True
    prg_start_epoch: int = 30
    target_faces: int = 10_000
    image_size: int = 1024
    sam_model_type: str = "vit_b"
    sam_checkpoint: str = ""
    sam_sha256: str = ""
    sam_tiny_img_size: int = 256
    cache_dir: str = ""
    version: str = "1.0.0"
    centre_loss: bool = True
    pseudo_mask_loss: bool = True
    match_centre: bool = True
    match_order: bool = True
    fdi_order: bool = True
    fold: int = -1

    def __post_init__(self):
        if not self.data and self.phantoms < 1:
            raise ConfigError("give softooth.data (a Teeth3DS export) or softooth.phantoms >= 1")
        if self.prg_start_epoch < 0:
            raise ConfigError(f"prg_start_epoch must be >= 0 (got {self.prg_start_epoch})")

    @classmethod
    def from_dict(cls, data: dict) -> SOFToothTrainConfig:
        return config_from_dict(cls, data)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    def settings(self, sam_weights_id: str | None = None) -> SOFToothSettings:
        """The card's preparation settings (``sam_sha256`` = the checkpoint actually used)."""
        checkpoint = Path(self.sam_checkpoint).name if self.sam_checkpoint else ""
        sha = self.sam_sha256 or (sam_weights_id if checkpoint else "") or ""
        return SOFToothSettings(target_faces=self.target_faces, image_size=self.image_size,
                                sam_model_type=self.sam_model_type, sam_checkpoint=checkpoint, sam_sha256=sha,
                                sam_tiny_img_size=self.sam_tiny_img_size, fdi_order=self.fdi_order)

    def criterion(self):
        """The training loss with this config's ablation switches (paper weights otherwise)."""
        from ToothMCLCore.models.softooth import FHMConfig, SOFToothLoss

        defaults = SOFToothLoss()
        return SOFToothLoss(matcher=FHMConfig(use_centre=self.match_centre, use_order=self.match_order),
                            centre_weight=defaults.centre_weight if self.centre_loss else 0.0,
                            pseudo_mask_weight=defaults.pseudo_mask_weight if self.pseudo_mask_loss else 0.0)

    def ablations(self) -> list[str]:
        """What this config turns off of the paper's method, in the paper's words."""
        off = {"with_prg": "PRG", "centre_loss": "the centre loss L_cent", "pseudo_mask_loss": "the pseudo-mask loss L_pm",
               "match_centre": "FHM's centre term", "match_order": "FHM's order term",
               "fdi_order": "the order prior at inference"}
        return [text for name, text in off.items() if not getattr(self, name)]


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScanSource:
    """One scan to train on: a name, what identifies its content, and how to load it."""

    name: str
    identity: str
    load: object  # () -> (SurfaceMesh with labels, cleaned; jaw)


def phantom_sources(first_seed: int, patients: int, resolution_mm: float) -> list[ScanSource]:
    """Both jaws of synthetic patients ``first_seed ..``; every third one has missing teeth."""
    def loader(seed, jaw):
        def load():
            from ToothMCLCore.synthetic.ios import make_ios_phantom

            return make_ios_phantom(seed, jaw=jaw, resolution_mm=resolution_mm,
                                    missing=0.1 if seed % 3 == 0 else None), jaw
        return load

    return [ScanSource(f"phantom{seed}_{jaw}", f"phantom:{seed}:{jaw}:{resolution_mm}:missing3", loader(seed, jaw))
            for seed in range(first_seed, first_seed + patients) for jaw in fdi.JAWS]


def dataset_sources(folder, split: str, fold: int | None = None) -> list[ScanSource]:
    """The cases of one split of a Teeth3DS export (files checked against the manifest); with
    ``fold``, of that cross-validation fold (:meth:`~ToothMCLCore.io.dataset_reader.Dataset.split`)."""
    from ToothMCLCore.io.dataset_reader import read_dataset
    from ToothMCLCore.io.mesh import clean_mesh

    dataset = read_dataset(folder)  # every file checked against its SHA-256 in the manifest
    if dataset.modality != "ios":
        raise InvalidInputError(f"{folder} is a {dataset.format} ({dataset.modality}) export; SOFTooth trains on "
                                "a Teeth3DS export of intraoral scans")
    sha = {entry["path"]: entry["sha256"] for entry in dataset.manifest["files"]}

    def loader(case):
        def load():
            record = case.load()
            scan = clean_mesh(record.mesh.vertices_ras, record.mesh.faces, labels=record.labels,
                              source=str(case.paths["mesh"]))
            return scan.mesh, record.jaw
        return load

    def identity(case):
        return ":".join(sha[case.paths[role].relative_to(dataset.root).as_posix()] for role in ("mesh", "labels"))

    return [ScanSource(case.case_id, identity(case), loader(case)) for case in dataset.split(split, fold)]


class SOFToothScans(torch.utils.data.Dataset):
    """Prepared scans (see the module docstring); items are dicts of numpy arrays.

    Item: ``features`` (M, 24) float32, ``labels`` (M,) int64 class indices of ``ios_<jaw>``,
    ``sam`` (M, 256) float32 and ``visible`` (M,) bool (with PRG), ``jaw``, ``index``, ``epoch``.
    """

    def __init__(self, sources: list[ScanSource], settings: SOFToothSettings, sam=None, cache_dir=None):
        self.sources, self.settings, self.sam = sources, settings, sam
        self.sam_id = sam.weights_id if sam is not None else "no-sam"
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: list[dict | None] = [None] * len(sources)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sources)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def cache_path(self, i: int) -> Path | None:
        """The ``.npz`` of scan ``i`` in the cache (None without a cache)."""
        if self.cache_dir is None:
            return None
        text = json.dumps([_CACHE_TAG, self.sources[i].identity, self.settings.to_dict(), self.sam_id],
                          sort_keys=True)
        return self.cache_dir / f"{hashlib.sha256(text.encode()).hexdigest()}.npz"

    def prepare(self, indices=None) -> None:
        """Prepare (or find in the cache) the scans ``indices`` (default all)."""
        for i in range(len(self)) if indices is None else indices:
            if self.cache_dir is None or not self.cache_path(i).is_file():
                self._item(i)

    def release_encoder(self) -> None:
        """Drop the SAM encoder once everything is prepared (DataLoader workers need not copy it)."""
        self.sam = None

    def _item(self, i: int) -> dict:
        if self._memory[i] is not None:
            return self._memory[i]
        path = self.cache_path(i)
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {k: data[k] for k in data.files}
            except (OSError, ValueError) as exc:
                logger.warning("preparing %s again: cannot read %s (%s)", self.sources[i].name, path, exc)
        if self.sam is None and self.sam_id != "no-sam":
            raise RuntimeError(f"scan {self.sources[i].name} was not prepared before the SAM encoder was released")
        item = self._prepare_one(i)
        if path is not None:
            from ToothMCLCore.io.atomic import atomic_write_bytes

            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.savez(buffer, **{k: (v.astype(np.float16) if k == "sam" else v) for k, v in item.items()})
            atomic_write_bytes(path, buffer.getvalue())
        else:
            self._memory[i] = item
        return item

    def _prepare_one(self, i: int) -> dict:
        source = self.sources[i]
        mesh, jaw = source.load()
        prepared = prepare_scan(mesh, jaw, self.settings, self.sam)
        inp = prepared.input
        if inp.face_labels is None:
            raise InvalidInputError(f"scan {source.name} has no labels; SOFTooth trains on labelled scans")
        unknown = ~np.isin(inp.face_labels, (0, *fdi.teeth_of_jaw(jaw)))
        if unknown.any():
            logger.warning("%s: labels %s are not teeth of the %s jaw; trained as gingiva", source.name,
                           sorted(set(np.unique(inp.face_labels[unknown]).tolist())), jaw)
        item = {"features": inp.features, "jaw": np.asarray(jaw),
                "labels": fdi.fdi_to_class_index(inp.face_labels, f"ios_{jaw}", strict=False).astype(np.int64)}
        if prepared.sam_features is not None:
            item["sam"], item["visible"] = prepared.sam_features.astype(np.float32), prepared.visible
        logger.info("prepared %s: %d faces", source.name, inp.n_faces)
        return item

    def __getitem__(self, i: int) -> dict:
        item = dict(self._item(i))
        item["jaw"] = str(item["jaw"])
        if "sam" in item:
            item["sam"] = item["sam"].astype(np.float32)
        return {**item, "index": i, "epoch": self.epoch}


# ------------------------------------------------------------------------------------------------
# Task
# ------------------------------------------------------------------------------------------------

def _shard_and_wait(dataset: SOFToothScans) -> None:
    """Under torchrun with a disk cache each rank prepares every WORLD_SIZE-th scan, then all wait."""
    import torch.distributed as dist

    if dataset.cache_dir is not None and dist.is_available() and dist.is_initialized():
        dataset.prepare(range(dist.get_rank(), len(dataset), dist.get_world_size()))
        dist.barrier()
    dataset.prepare()


def calibrated_threshold(metrics: dict[str, float]) -> float:
    """The objectness threshold written into the card: of :data:`OBJECTNESS_THRESHOLDS`, the one
    with the best validation mIoU (``val_mIoU@t``; the higher threshold on a tie), 0.5 without
    validation. Objectness learns the IoU of an instance's mask with its tooth, which a model
    early in training under-estimates; a fixed 0.5 would then keep no tooth at all."""
    scores = {t: metrics.get(f"val_mIoU@{t}", math.nan) for t in OBJECTNESS_THRESHOLDS}
    scores = {t: v for t, v in scores.items() if math.isfinite(v)}
    return max(scores, key=lambda t: (scores[t], t)) if scores else SOFToothSettings.objectness_threshold


class SOFToothTask(Task):
    """SOFTooth on prepared scans: Eq. 14-15 loss after FHM matching, PRG from ``prg_start_epoch``.

    Args:
        config: the ``softooth`` section.
        seed: the run's seed (face subsets of the batches).
        name: registry name written into the card.
    """

    def __init__(self, config: SOFToothTrainConfig, seed: int = 0, name: str = "ios_softooth_v1"):
        self.config, self.seed, self.name = config, int(seed), name
        self.criterion = config.criterion()
        self.arch_args: dict = {"preset": config.preset, "with_prg": config.with_prg}
        if config.with_prg:
            from ToothMCLCore.models.sam_features import EMBED_DIM

            self.arch_args["sam_channels"] = EMBED_DIM
        self._sam_id: str | None = None

    def build_model(self):
        from ToothMCLCore.models import build_model

        return build_model("softooth", self.arch_args)

    def datasets(self):
        cfg = self.config
        sam = None
        if cfg.with_prg:
            sam = build_sam(cfg.settings(), "auto", cfg.sam_checkpoint or None)
            self._sam_id = sam.weights_id
        settings = cfg.settings(self._sam_id)
        if cfg.data:
            fold = None if cfg.fold < 0 else cfg.fold
            train, val = dataset_sources(cfg.data, "train", fold), dataset_sources(cfg.data, "val", fold)
        else:
            train = phantom_sources(cfg.phantom_first_seed, cfg.phantoms, cfg.phantom_resolution_mm)
            val = phantom_sources(cfg.phantom_first_seed + cfg.phantoms, cfg.val_phantoms, cfg.phantom_resolution_mm)
        sets = [SOFToothScans(s, settings, sam, cfg.cache_dir or None) for s in (train, val)]
        for dataset in sets:
            _shard_and_wait(dataset)
            dataset.release_encoder()
        logger.info("%d training and %d validation scans prepared", len(sets[0]), len(sets[1]))
        return sets[0], (sets[1] if len(sets[1]) else None)

    def collate(self, items: list[dict]) -> dict:
        m = min(len(it["features"]) for it in items)

        def cut(it, key):
            n = len(it["features"])
            if n == m:
                return torch.from_numpy(np.ascontiguousarray(it[key]))
            keep = np.sort(sample_rng(self.seed, it["epoch"], it["index"]).choice(n, m, replace=False))
            return torch.from_numpy(np.ascontiguousarray(it[key][keep]))

        batch = {key: torch.stack([cut(it, key) for it in items]) for key in ("features", "labels")}
        has_sam = all("sam" in it for it in items)
        batch["sam"] = torch.stack([cut(it, "sam") for it in items]) if has_sam else None
        batch["visible"] = torch.stack([cut(it, "visible") for it in items]) if has_sam else None
        batch["jaw"] = [it["jaw"] for it in items]
        return batch

    def _forward(self, model, batch):
        net = getattr(model, "module", model)
        if net.use_prg and batch["sam"] is None:
            raise ConfigError("PRG is on but the scans were prepared without SAM features")
        sam, visible = (batch["sam"], batch["visible"]) if net.use_prg else (None, None)
        return model(batch["features"], sam, visible)

    def loss(self, model, batch, epoch: int):
        parts = self.criterion(self._forward(model, batch), batch["labels"])
        logged = {k: float(parts[k].detach()) for k in ("cls", "mask", "objectness", "centre", "pseudo_mask")}
        return parts["total"], logged

    def on_epoch_start(self, model, epoch: int) -> None:
        net = getattr(model, "module", model)
        use = bool(self.config.with_prg and epoch >= self.config.prg_start_epoch)
        if use != net.use_prg:
            logger.info("epoch %d: PRG (SAM path) %s", epoch + 1, "on" if use else "off")
        net.use_prg = use

    def validate(self, model, loader, epoch: int) -> dict[str, float]:
        """Mean validation loss (``score`` = minus it, the paper's early-stopping criterion), and
        face-level OA and mIoU of the inference rule at each objectness threshold of
        :data:`OBJECTNESS_THRESHOLDS` (``OA@0.5``, ``mIoU@0.5``, ...)."""
        from ToothMCLCore.evaluation.ios_metrics import semantic_metrics
        from ToothMCLCore.models.softooth import faces_to_fdi

        device = next(model.parameters()).device
        settings = SOFToothSettings()
        losses: list[float] = []
        sums: dict[str, float] = {}
        for batch in loader:
            batch = move_to(batch, device)
            out = self._forward(model, batch)
            losses.append(float(self.criterion(out, batch["labels"])["total"]))
            for b, jaw in enumerate(batch["jaw"]):
                logits = [out[k][b].float().cpu().numpy() for k in
                          ("mask_logits", "class_logits", "objectness", "centres")]
                gt = fdi.class_index_to_fdi(batch["labels"][b].cpu().numpy(), f"ios_{jaw}")
                for t in OBJECTNESS_THRESHOLDS:
                    numbers = assign_instances(*logits, jaw, t, settings.mask_threshold, settings.duplicate_iou,
                                               settings.fdi_order)
                    sem = semantic_metrics(faces_to_fdi(logits[0], numbers, settings.mask_threshold), gt, jaw)
                    for key in ("OA", "mIoU"):
                        sums[f"{key}@{t}"] = sums.get(f"{key}@{t}", 0.0) + sem[key]
        mean_loss = float(np.mean(losses))
        return {"score": -mean_loss, "loss": mean_loss, **{k: v / len(losses) for k, v in sums.items()}}

    def model_card(self, model, metrics: dict[str, float]) -> ModelCard:
        net = getattr(model, "module", model)
        settings = self.config.settings(self._sam_id).to_dict()
        settings["use_prg"] = bool(net.use_prg)
        settings["objectness_threshold"] = calibrated_threshold(metrics)
        data = (f"Teeth3DS export {self.config.data}" if self.config.data else
                f"{self.config.phantoms} synthetic phantom patients (both jaws); not for clinical use")
        return ModelCard(
            name=self.name, version=self.config.version, task="ios_teeth", architecture="softooth",
            arch_args=dict(self.arch_args), class_scheme="ios", preprocess=settings, training_data=data,
            intended_use="tooth instance segmentation and FDI numbering of one jaw of an intraoral scan",
            notes=("SOFTooth (Li et al.): dual-stream graph encoder, PRG with frozen SAM occlusal-view features, "
                   "CMR, FHM matching; trained with training/train_softooth.py"
                   + (f". Ablation, without: {', '.join(self.config.ablations())}" if self.config.ablations() else "")),
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)})

    def optimizer(self, params, config: TrainConfig) -> torch.optim.Optimizer:
        """Adam (the paper's), with the config's learning rate and weight decay (paper: none)."""
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def _read_yaml(path) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"config {path} must be a mapping of sections train and softooth")
    return data


def load_configs(path=None, overrides: dict | None = None) -> tuple[TrainConfig, SOFToothTrainConfig]:
    """Paper defaults, then the YAML file, then ``overrides`` (``--set``)."""
    data = merge(merge({"train": dict(PAPER_TRAIN), "softooth": {}}, _read_yaml(path)), overrides or {})
    configs = load_config(None, {"train": TrainConfig, "softooth": SOFToothTrainConfig}, data)
    return configs["train"], configs["softooth"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(p)
    p.add_argument("--data", help="Teeth3DS export folder (= --set softooth.data=...)")
    p.add_argument("--out", help="output folder (= --set train.out_dir=...)")
    p.add_argument("--sam-checkpoint", help="SAM checkpoint (= --set softooth.sam_checkpoint=...)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    shortcuts = {"softooth": {k: v for k, v in (("data", args.data), ("sam_checkpoint", args.sam_checkpoint)) if v},
                 "train": {"out_dir": args.out} if args.out else {}}
    train, softooth = load_configs(args.config, merge(shortcuts, parse_overrides(args.overrides)))
    path = fit(SOFToothTask(softooth, seed=train.seed, name=train.name), train)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
