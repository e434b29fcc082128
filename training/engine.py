"""A small training engine: one loop that runs on a CPU, one GPU or many GPUs (torchrun).

A :class:`Task` says *what* is trained (model, data, loss, validation, model card); :func:`fit`
says *how*: the same call runs as a single process or under ``torchrun``::

    python -m training.finetune cbct --data EXPORT ...                       # one process
    torchrun --nproc_per_node 4 -m training.finetune cbct --data EXPORT ...  # 4 GPUs

Distributed. ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` come from the environment (torchrun
sets them). With ``WORLD_SIZE > 1`` the process group starts with NCCL on CUDA and gloo on the
CPU, the model is wrapped in ``DistributedDataParallel`` and a ``DistributedSampler`` (seeded
with ``seed``, reshuffled every epoch) gives each rank its share. ``batch_size`` is per process:
the global batch is ``batch_size * WORLD_SIZE``. A single process uses the same sampler with
one replica, so one process with batch 4 and two with batch 2 see the same samples in the same
steps, and (the loss being a mean over the batch) take the same steps. Datasets that draw
random augmentations should draw them from :func:`sample_rng` (seeded by seed, epoch and sample
index, never by rank) so that this holds for them too; the engine calls a dataset's
``set_epoch(epoch)`` when it has one.

Precision. On CUDA with ``amp: true``: float16 autocast and a ``GradScaler`` (the paper trains
with AMP). On the CPU, float32 (no autocast): CPU runs are for tests and small experiments.

Schedule. ``lr`` warms up linearly from ``lr / warmup_steps`` for ``warmup_epochs`` epochs, then
follows a half cosine to 0 at the end of the last epoch, updated every optimizer step (the
paper: "cosine learning rate schedule with warmup").

Checkpoints and resume. After every epoch rank 0 writes ``out_dir/last.ckpt`` atomically (a
temporary file renamed into place, so a kill never leaves half a checkpoint): model, optimizer,
scheduler and scaler states, the epoch count, the best score, the early-stopping counter, the
config, and the RNG states (torch, CUDA, numpy, Python) of *every* rank. It holds only tensors
and plain containers, written with ``torch.save`` and read with ``torch.load(weights_only=True)``
(nothing in it can run code). With ``resume: true`` a run whose ``last.ckpt`` exists continues
after its last completed epoch; with the same world size it then ends with the parameters an
uninterrupted run ends with. The CSV log is cut back to that epoch.

Outputs. Rank 0 writes ``out_dir/log.csv`` (one row per epoch: learning rate, mean training
metrics, validation metrics, seconds; also TensorBoard scalars under ``out_dir/tensorboard``
with ``log: tensorboard`` when the ``tensorboard`` package is installed) and the model as
``out_dir/<name>.safetensors`` with its :class:`~ToothMCLCore.config.ModelCard` beside it
(:func:`ToothMCLCore.models.checkpoint.save_checkpoint`). With a validation set that is the
best model by the validation ``"score"`` (higher is better; rewritten whenever it improves, and
used for early stopping), without one the model after the last epoch. The pipelines load it
with ``--weights out_dir/<name>.safetensors``, or by name after a registry entry is added.

Validation runs on every rank over its share of the validation set (every ``WORLD_SIZE``-th
item); the metrics are averaged over the ranks weighted by their number of items, which is
exact for means over cases.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ToothMCLCore.config import ModelCard
from ToothMCLCore.errors import ConfigError

from .configuration import config_from_dict, config_to_dict, load_config, parse_overrides
from .distributed import (
    Context,
    barrier,
    gather,
    rng_state,
    seed_all,
    set_rng_state,
    start,
)

__all__ = ["Task", "TrainConfig", "cosine_with_warmup", "fit", "load_config", "move_to", "parse_overrides",
           "sample_rng"]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
LOG_FILE = "log.csv"
LOGS = ("csv", "tensorboard")
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`fit` trains (see the module docstring).

    Attributes:
        epochs: passes over the training set.
        lr: peak learning rate (after warm-up).
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length, in epochs (fractions allowed).
        batch_size: samples per step *per process*.
        amp: float16 autocast + GradScaler on CUDA (ignored on the CPU).
        seed: seeds model initialisation, data order and augmentations.
        out_dir: folder of ``last.ckpt``, ``log.csv`` and ``<name>.safetensors``.
        resume: continue from ``out_dir/last.ckpt`` when it exists.
        log: ``"csv"`` or ``"tensorboard"`` (CSV as well).
        early_stopping_patience: stop after this many validations without a better score.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; under torchrun
            each process takes GPU ``LOCAL_RANK``.
        grad_clip: clip the gradient norm to this value (None: no clipping).
        num_workers: DataLoader worker processes per rank.
        name: file name (and registry name) of the output model.
        find_unused_parameters: passed to DistributedDataParallel (for models with branches
            that some steps do not use).
        val_every: validate every this many epochs (and after the last one).
    """

    epochs: int
    lr: float
    weight_decay: float = 1e-5
    warmup_epochs: float = 1.0
    batch_size: int = 1
    amp: bool = True
    seed: int = 0
    out_dir: str = "runs/model"
    resume: bool = True
    log: str = "csv"
    early_stopping_patience: int | None = None
    device: str = "auto"
    grad_clip: float | None = None
    num_workers: int = 0
    name: str = "model"
    find_unused_parameters: bool = False
    val_every: int = 1

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ConfigError("epochs, batch_size and val_every must be at least 1 "
                              f"(got {self.epochs}, {self.batch_size}, {self.val_every})")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ConfigError(f"lr must be > 0, weight_decay and warmup_epochs >= 0 (got {self.lr}, "
                              f"{self.weight_decay}, {self.warmup_epochs})")
        if self.log not in LOGS:
            raise ConfigError(f"log must be one of {LOGS} (got {self.log!r})")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"early_stopping_patience must be at least 1 or null (got {self.early_stopping_patience})")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0 (got {self.num_workers})")
        if not self.name or "/" in self.name or "\\" in self.name:
            raise ConfigError(f"name must be a plain file name (got {self.name!r})")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return config_from_dict(cls, data)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_yaml(cls, path, section: str = "train", overrides: dict | None = None) -> TrainConfig:
        """The ``section`` mapping of a YAML file (other sections are ignored), with ``overrides``."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        values = data.get(section) if isinstance(data, dict) else None
        if not isinstance(values, dict):
            raise ConfigError(f"config {path} has no {section!r} section")
        return cls.from_dict({**values, **(overrides or {})})


# ------------------------------------------------------------------------------------------------
# Task
# ------------------------------------------------------------------------------------------------

class Task:
    """What is trained. Subclass it and override the methods that raise NotImplementedError.

    ``loss`` receives the model as :func:`fit` runs it (wrapped in DistributedDataParallel
    under torchrun): call ``model(...)`` so that gradients are synchronised; the other methods
    receive the bare model.
    """

    def build_model(self) -> nn.Module:
        """A fresh model (called once per process, after seeding)."""
        raise NotImplementedError

    def datasets(self):
        """``(train Dataset, validation Dataset or None)``."""
        raise NotImplementedError

    def collate(self, items: list):
        """Stack dataset items into a batch (default: torch's ``default_collate``)."""
        return torch.utils.data.default_collate(items)

    def loss(self, model: nn.Module, batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """``(scalar loss, metrics to log)``; the loss must be a mean over the batch."""
        raise NotImplementedError

    def validate(self, model: nn.Module, loader, epoch: int) -> dict[str, float]:
        """Metrics over ``loader`` (batches of one item, on the model's device, this rank's share of
        the validation set; called in eval mode under ``torch.no_grad``); ``"score"`` is
        higher-is-better."""
        raise NotImplementedError

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Hook called before every epoch (0-based), e.g. to switch a branch on."""

    def model_card(self, model: nn.Module, metrics: dict[str, float]) -> ModelCard:
        """The card written beside the output weights."""
        raise NotImplementedError

    def optimizer(self, params, config: TrainConfig) -> torch.optim.Optimizer:
        """AdamW with the config's learning rate and weight decay (the paper's optimizer)."""
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one sample in one epoch: the same on any rank and world size."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor of optimizer step ``step`` (0-based): linear warm-up, half cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def move_to(batch, device):
    """Tensors of a (nested) batch moved to ``device``; everything else left as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class _OnDevice:
    """A DataLoader whose batches arrive on ``device`` (what ``Task.validate`` iterates over)."""

    def __init__(self, loader, device):
        self.loader, self.device, self.dataset = loader, device, loader.dataset

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        return (move_to(batch, self.device) for batch in self.loader)


def _weighted_mean(parts: list[tuple[dict, float]]) -> dict[str, float]:
    total = sum(w for _, w in parts)
    keys = sorted({k for m, w in parts if w > 0 for k in m})
    return {k: sum(float(m.get(k, 0.0)) * w for m, w in parts if w > 0) / total for k in keys} if total else {}


# ------------------------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------------------------

class _MetricLog:
    """log.csv (wide: one row per epoch, columns grow as new metrics appear) and TensorBoard."""

    def __init__(self, out_dir: Path, kind: str, keep_epochs: int):
        self.path = out_dir / LOG_FILE
        self.rows: list[dict] = []
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh) if r.get("epoch") and int(r["epoch"]) <= keep_epochs]
        self._write()
        self.tb = None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                logger.warning("log: tensorboard needs the tensorboard package (pip install tensorboard); "
                               "writing %s only", self.path)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._write()
        if self.tb is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["epoch"])
            self.tb.flush()

    def _write(self) -> None:
        from ToothMCLCore.io.atomic import atomic_write_text

        columns = list(dict.fromkeys(k for r in self.rows for k in r)) or ["epoch"]
        lines = [",".join(columns)]
        for r in self.rows:
            lines.append(",".join(_csv_value(r.get(c, "")) for c in columns))
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _csv_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ------------------------------------------------------------------------------------------------
# fit
# ------------------------------------------------------------------------------------------------

def fit(task: Task, config: TrainConfig) -> Path:
    """Train ``task`` as ``config`` says; returns ``out_dir/<name>.safetensors`` (card beside it).

    Runs as one process, or as one of ``WORLD_SIZE`` processes under torchrun (see the module
    docstring). Every process returns the same path once rank 0 has written it.
    """
    ctx = start(config)
    try:
        return _fit(task, config, ctx)
    finally:
        if ctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _fit(task: Task, config: TrainConfig, ctx: Context) -> Path:
    from torch.utils.data import DataLoader, Subset
    from torch.utils.data.distributed import DistributedSampler

    from ToothMCLCore.io.atomic import atomic_path
    from ToothMCLCore.models.checkpoint import save_checkpoint

    out_dir = Path(config.out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    barrier(ctx)
    final_path = out_dir / f"{config.name}.safetensors"
    last_path = out_dir / LAST_CHECKPOINT

    seed_all([config.seed])  # the same initial model on every rank
    model = task.build_model().to(ctx.device)
    train_set, val_set = task.datasets()
    if len(train_set) == 0:
        raise ConfigError("the training set is empty; check the data folder and its train split")
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    cuda = ctx.device.type == "cuda"
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        collate_fn=task.collate, pin_memory=cuda)
    val_loader = None
    if val_set is not None and len(val_set):
        shard = Subset(val_set, list(range(ctx.rank, len(val_set), ctx.world_size)))
        val_loader = _OnDevice(DataLoader(shard, batch_size=1, shuffle=False, num_workers=config.num_workers,
                                          collate_fn=task.collate, pin_memory=cuda), ctx.device)

    optimizer = task.optimizer(model.parameters(), config)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, total_steps, warmup_steps))
    use_amp = bool(config.amp and cuda)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best_score, since_best = 0, -math.inf, 0
    last_metrics: dict[str, float] = {}
    resumed_rng = False
    if config.resume and last_path.is_file():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{last_path} was written by another version of the engine; move it away to start over")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_score, since_best = int(ckpt["epoch"]), float(ckpt["best_score"]), int(ckpt["since_best"])
        last_metrics = dict(ckpt["metrics"])
        if len(ckpt["rng"]) == ctx.world_size:
            set_rng_state(ckpt["rng"][ctx.rank])
            resumed_rng = True
        else:
            logger.warning("%s was written by %d processes, this run has %d: random draws will differ from an "
                           "uninterrupted run", last_path, len(ckpt["rng"]), ctx.world_size)
        if ctx.is_main:
            logger.info("resuming from %s after epoch %d of %d", last_path, start_epoch, config.epochs)
    if not resumed_rng:
        seed_all([config.seed, ctx.rank, start_epoch])

    train_model = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[ctx.device.index] if cuda else None,
                                              find_unused_parameters=config.find_unused_parameters)
    log = _MetricLog(out_dir, config.log, start_epoch) if ctx.is_main else None
    patience = config.early_stopping_patience

    for epoch in range(start_epoch, config.epochs):
        if patience and since_best >= patience:  # a resumed run that had stopped early
            break
        t0 = time.monotonic()
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        task.on_epoch_start(model, epoch)
        train_model.train()
        sums: dict[str, float] = {}
        for step, batch in enumerate(loader):
            batch = move_to(batch, ctx.device)
            with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=use_amp):
                loss, metrics = task.loss(train_model, batch, epoch)
            if not torch.isfinite(loss.detach()).all():
                raise FloatingPointError(f"the loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                         "lower the learning rate or check the data")
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            for key, value in {"loss": float(loss.detach()), **metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        n_steps = max(1, steps_per_epoch)
        train_metrics = _weighted_mean(gather(ctx, ({k: v / n_steps for k, v in sums.items()}, 1.0)))

        val_metrics: dict[str, float] = {}
        if val_loader is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            model.eval()
            with torch.no_grad():
                local = task.validate(model, val_loader, epoch) if len(val_loader.dataset) else {}
            model.train()
            val_metrics = _weighted_mean(gather(ctx, (local, float(len(val_loader.dataset)))))
            if "score" not in val_metrics:
                raise ConfigError(f"{type(task).__name__}.validate must return a 'score' (got {sorted(val_metrics)})")
            score = val_metrics["score"]
            if score > best_score:  # NaN never improves
                best_score, since_best = score, 0
                if ctx.is_main:
                    card_metrics = {"epoch": epoch + 1, **{f"val_{k}": round(v, 6) for k, v in val_metrics.items()}}
                    save_checkpoint(model, task.model_card(model, card_metrics), final_path)
            else:
                since_best += 1

        last_metrics = {"epoch": epoch + 1, **{f"train_{k}": round(v, 6) for k, v in train_metrics.items()},
                        **{f"val_{k}": round(v, 6) for k, v in val_metrics.items()}}
        rng_states = gather(ctx, rng_state())
        if ctx.is_main:
            log.add({**last_metrics, "lr": scheduler.get_last_lr()[0], "seconds": round(time.monotonic() - t0, 2)})
            ckpt = {"format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "best_score": float(best_score), "since_best": since_best,
                    "rng": rng_states, "world_size": ctx.world_size, "metrics": last_metrics,
                    "config": config.to_dict()}
            with atomic_path(last_path) as tmp:
                torch.save(ckpt, tmp)
            logger.info("epoch %d/%d %s", epoch + 1, config.epochs,
                        " ".join(f"{k} {v:.4g}" for k, v in last_metrics.items() if k != "epoch"))
        barrier(ctx)
        if patience and since_best >= patience and ctx.is_main:
            logger.info("early stopping: no better score in %d validations", since_best)

    if ctx.is_main:
        if log is not None:
            log.close()
        if (val_loader is None and start_epoch < config.epochs) or not final_path.is_file():
            if val_loader is not None:
                logger.warning("no validation score was finite; writing the last model to %s", final_path)
            save_checkpoint(model, task.model_card(model, last_metrics), final_path)
    barrier(ctx)
    return final_path
