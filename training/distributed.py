"""Process context for the training engine: torchrun environment, process group, RNG states.

Read by :func:`training.engine.fit`; kept apart so the loop stays readable. ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` come from the environment (torchrun sets them); the process
group uses NCCL on CUDA and gloo on the CPU. RNG states are plain tensors and containers, so a
checkpoint holding them loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from ToothMCLCore.errors import ConfigError


@dataclass
class Context:
    """This process: its rank, the world size, its device, and whether it started the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(config) -> Context:
    """This process's context from the torchrun environment; starts the process group when
    ``WORLD_SIZE > 1`` (``config``: a TrainConfig, for its ``device``)."""
    import datetime

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    name = config.device.lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was requested but no CUDA GPU is available; use device: cpu or auto")
        device = torch.device("cuda", local) if name == "cuda" else torch.device(name)
        torch.cuda.set_device(device)
    elif name == "cpu":
        device = torch.device("cpu")
    else:
        raise ConfigError(f"unknown device {config.device!r}; use auto, cpu or cuda")
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # long enough for ranks that wait while others prepare data or validate a larger share
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=60))
        owns = True
    return Context(rank, world, local, device, owns)


def seed_all(seed_sequence) -> None:
    """Seed Python's, numpy's and torch's global generators from a numpy ``SeedSequence`` entropy."""
    state = np.random.SeedSequence(seed_sequence).generate_state(4)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed(int(state[2]) | (int(state[3]) << 32))


def rng_state() -> dict:
    """The global RNG states of this process (torch, CUDA, numpy, Python) as tensors and plain types."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(py_state), "gauss": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def gather(ctx: Context, obj) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    """Wait for every rank (nothing in a single process)."""
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()
