"""What the benchmark scripts share: timing stages and reading peak memory.

A script of this folder imports it as ``from timing import ...`` (the folder of a script run as
``python benchmarks/<name>.py`` is on ``sys.path``).
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager


class StageTimes(dict):
    """Seconds per named stage: ``with times.stage("render"): ...`` adds the block's wall time."""

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.values())


def peak_memory_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished child processes), MiB (Linux)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0
