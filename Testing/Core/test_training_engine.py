"""The training engine on a toy regression task: configs, DDP equivalence, kill and resume.

The other processes are forked from the test process (torch is then already imported: a fresh
``python`` needs over 10 s here just to import torch and its optimizer machinery). They get the
environment torchrun gives its workers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT),
which is all the engine reads.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ToothMCLCore.config import ModelCard
from ToothMCLCore.errors import ConfigError
from training.engine import (
    Task,
    TrainConfig,
    cosine_with_warmup,
    fit,
    load_config,
    parse_overrides,
    sample_rng,
)

N_SAMPLES = 16
FORK = multiprocessing.get_context("fork")


class ToyDataset(torch.utils.data.Dataset):
    """y = x . w on 16 fixed points; x gets per-sample noise drawn from :func:`sample_rng`."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(123)
        self.x = rng.normal(size=(N_SAMPLES, 8)).astype(np.float32)
        self.y = (self.x @ rng.normal(size=8)).astype(np.float32)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return N_SAMPLES

    def __getitem__(self, i):
        noise = sample_rng(self.seed, self.epoch, i).normal(0, 0.05, size=8).astype(np.float32)
        return torch.from_numpy(self.x[i] + noise), torch.tensor(self.y[i])


class ToyTask(Task):
    def __init__(self, sleep: float = 0.0, validate: bool = True, dropout: float = 0.0):
        self.sleep, self.with_val, self.dropout, self.epochs_run = sleep, validate, dropout, []

    def build_model(self):
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(self.dropout),
                                   torch.nn.Linear(16, 1))

    def datasets(self):
        return ToyDataset(), (ToyDataset() if self.with_val else None)

    def on_epoch_start(self, model, epoch):
        self.epochs_run.append(epoch)

    def loss(self, model, batch, epoch):
        time.sleep(self.sleep)
        x, y = batch
        mse = torch.nn.functional.mse_loss(model(x)[:, 0], y)
        return mse, {"mse": float(mse.detach())}

    def validate(self, model, loader, epoch):
        errors = [float(((model(x)[:, 0] - y) ** 2).mean()) for x, y in loader]
        return {"mse": float(np.mean(errors)), "score": -float(np.mean(errors))}

    def model_card(self, model, metrics):
        return ModelCard(name="toy_mlp_v1", version="0.0.1", task="toy", architecture="toy", metrics=metrics)


def toy_config(out_dir, batch_size=4, epochs=4, **kw) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=3e-2, warmup_epochs=1, batch_size=batch_size, out_dir=str(out_dir),
                       device="cpu", name="toy", **kw)


def weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------

def test_given_unknown_key_config_loading_refuses_it(tmp_path):
    """An unknown key or section is an error naming it; YAML's string '1e-4' still reads as a float."""
    with pytest.raises(ConfigError, match="unknown TrainConfig keys \\['epoch'\\]"):
        TrainConfig.from_dict({"epoch": 3, "lr": 1e-3})
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\n  lr: 1e-4\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(path, {"train": TrainConfig})
    path.write_text("train:\n  epochs: 2\n  lr: 1e-4\nmystery:\n  a: 1\n")
    with pytest.raises(ConfigError, match="unknown config sections \\['mystery'\\]"):
        load_config(path, {"train": TrainConfig})
    path.write_text("train:\n  epochs: 2\n  lr: 1e-4\n")
    cfg = load_config(path, {"train": TrainConfig}, parse_overrides(["train.batch_size=3"]))["train"]
    assert cfg.lr == 1e-4 and cfg.batch_size == 3 and cfg.epochs == 2
    assert TrainConfig.from_yaml(path, overrides={"seed": 5}).seed == 5
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig.from_dict({"epochs": 2, "lr": 1e-3, "batch_size": 2.5})
    with pytest.raises(ConfigError, match="log must be one of"):
        TrainConfig.from_dict({"epochs": 2, "lr": 1e-3, "log": "wandb"})


def test_cosine_schedule_warms_up_then_decays_to_zero():
    """The factor rises linearly over the warm-up, peaks at 1 and ends near 0."""
    f = [cosine_with_warmup(s, 100, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in itertools.pairwise(f[:10])) and all(a >= b for a, b in itertools.pairwise(f[9:]))
    assert f[-1] < 1e-3


def test_fit_lowers_the_loss_and_writes_weights_card_log_and_checkpoint(tmp_path):
    """A short run lowers the validation error; weights, card (SHA-256), CSV log and last.ckpt exist."""
    from ToothMCLCore.models.checkpoint import read_card, sha256_of

    torch.set_num_threads(1)
    path = fit(ToyTask(), toy_config(tmp_path, epochs=6))
    assert path == tmp_path / "toy.safetensors"
    card = read_card(tmp_path / "toy.json")
    assert card.sha256 == sha256_of(path) and card.name == "toy_mlp_v1"
    rows = (tmp_path / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 7 and "train_loss" in header and "val_score" in header and "lr" in header
    val_mse = [float(r.split(",")[header.index("val_mse")]) for r in rows[1:]]
    assert val_mse[-1] < 0.5 * val_mse[0]
    assert card.metrics["val_score"] == pytest.approx(max(-v for v in val_mse), rel=1e-4)
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 6 and len(ckpt["rng"]) == 1


class WorseningTask(ToyTask):
    def validate(self, model, loader, epoch):
        return {"score": -float(epoch)}


def test_given_no_better_score_for_patience_validations_training_stops_and_keeps_the_best(tmp_path):
    """Patience 2: the score only worsens after epoch 1, so epochs 2-3 run and the epoch-1 model is kept."""
    from ToothMCLCore.models.checkpoint import read_card

    torch.set_num_threads(1)
    task = WorseningTask()
    fit(task, toy_config(tmp_path, epochs=10, early_stopping_patience=2))
    assert task.epochs_run == [0, 1, 2]
    assert read_card(tmp_path / "toy.json").metrics["epoch"] == 1
    task = WorseningTask()  # resuming a run that stopped early does not train on
    fit(task, toy_config(tmp_path, epochs=10, early_stopping_patience=2))
    assert task.epochs_run == []


def test_two_process_gloo_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    """2 gloo processes x batch 2 (torchrun's environment) end with the parameters of 1 x batch 4."""
    torch.set_num_threads(1)
    single = weights(fit(ToyTask(validate=False), toy_config(tmp_path / "one", batch_size=4, epochs=2)))
    port = free_port()
    workers = [FORK.Process(target=_ddp_worker, args=(rank, port, tmp_path / "two")) for rank in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    double = weights(tmp_path / "two" / "toy.safetensors")
    assert single.keys() == double.keys()
    for key in single:
        torch.testing.assert_close(double[key], single[key], atol=1e-6, rtol=1e-5)
    # and it really trained: the parameters moved away from the initial ones
    torch.manual_seed(0)
    assert any(not torch.allclose(single[k], v) for k, v in ToyTask().build_model().state_dict().items())


def test_given_a_run_killed_after_an_epoch_resume_continues_there_and_ends_like_an_uninterrupted_run(tmp_path):
    """SIGKILL after a checkpoint; the rerun starts at the saved epoch and ends identical (dropout: RNG restored)."""
    torch.set_num_threads(1)
    epochs = 5
    reference = weights(fit(ToyTask(dropout=0.2), toy_config(tmp_path / "ref", epochs=epochs)))

    out = tmp_path / "killed"
    proc = FORK.Process(target=_slow_worker, args=(out, epochs))
    proc.start()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.is_alive():
            if (out / "last.ckpt").is_file() and torch.load(out / "last.ckpt", weights_only=True)["epoch"] >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    saved = torch.load(out / "last.ckpt", weights_only=True)["epoch"]
    assert 1 <= saved < epochs

    task = ToyTask(dropout=0.2)
    resumed = weights(fit(task, toy_config(out, epochs=epochs)))
    assert task.epochs_run == list(range(saved, epochs))
    rows = (out / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, epochs + 1))
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], atol=1e-6, rtol=1e-5)


def _ddp_worker(rank: int, port: int, out: Path) -> None:
    """One of two processes, with the environment torchrun gives its workers."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    fit(ToyTask(validate=False), toy_config(out, batch_size=2, epochs=2))


def _slow_worker(out: Path, epochs: int) -> None:
    """A run slow enough (0.25 s a step) to be killed in the middle."""
    torch.set_num_threads(1)
    fit(ToyTask(sleep=0.25, dropout=0.2), toy_config(out, epochs=epochs))
