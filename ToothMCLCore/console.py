"""What the commands print and write for a person at a terminal: the progress bar, the table of
teeth found, a CBCT result file. Shared by :mod:`.cli`, :mod:`.demo` and the evaluation commands
(its own module, so that none of them imports another command's module for it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


class Progress:
    """A one-line progress bar on a terminal; stage changes only when not a terminal."""

    def __init__(self, stream=None, enabled: bool = True):
        stream = stream or sys.stderr
        self.stream, self.enabled = stream, enabled
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_stage = None
        self.start = time.monotonic()

    def __call__(self, stage: str, fraction: float):
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        if self.tty:
            width = 30
            filled = round(width * fraction)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {fraction * 100:5.1f}% {stage:<12} {elapsed:6.1f}s")
            if fraction >= 1.0:
                self.stream.write("\n")
            self.stream.flush()
        elif stage != self.last_stage:
            self.stream.write(f"{stage}... ({elapsed:.1f}s)\n")
            self.stream.flush()
        self.last_stage = stage


def write_cbct_labels(path: Path, result) -> None:
    """Write a CBCT result as ``.seg.nrrd`` (segments + provenance) or a plain label map."""
    from .io import write_labelmap, write_seg_nrrd
    from .io.atomic import full_suffix

    if full_suffix(path) == ".seg.nrrd":
        write_seg_nrrd(path, result.labels.array, result.labels, attributes={
            k: str(v) for k, v in result.provenance.items()})
    else:
        write_labelmap(path, result.labels.array, result.labels)


def print_teeth_table(teeth, stream=None) -> None:
    stream = stream or sys.stdout
    stream.write(f"{'FDI':>4}  {'tooth':<34} {'volume mm3':>11}\n")
    for t in teeth:
        stream.write(f"{t.fdi:>4}  {t.name:<34} {t.volume_mm3:>11.1f}\n")
    stream.write(f"{len(teeth)} teeth found\n")
