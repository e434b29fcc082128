"""Run a prediction on a worker thread and let the GUI poll it, so Slicer never freezes.

The worker touches no MRML node and no Qt object: it receives numpy data, reports
``(stage, fraction)`` under a lock and stores the result or the exception. The widget polls
:meth:`SegmentationJob.poll` from a ``qt.QTimer`` in the GUI thread and builds the nodes there.
Cancel sets a ``threading.Event`` that the core checks between stages and sliding windows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: what the user reads for each stage the core reports
STAGE_LABELS = {
    "queued": "Waiting to start",
    "loading": "Loading the model",
    "preprocess": "Resampling and normalising",
    "crop": "Finding the teeth",
    "segment": "Segmenting",
    "postprocess": "Numbering the teeth",
    "restore": "Resampling to the input grid",
    "done": "Done",
}


def stageLabel(stage: str) -> str:
    return STAGE_LABELS.get(stage, stage.capitalize())


@dataclass(frozen=True)
class JobStatus:
    stage: str
    fraction: float
    done: bool


class SegmentationJob:
    """One prediction: ``work(progress, cancel) -> result`` run on a thread (or in place).

    Args:
        work: the computation; calls ``progress(stage, fraction)`` and honours ``cancel``.
        progress: optional extra callback, called from the thread that runs the work.
        cancel: event to use for cancelling (a new one by default).
        context: anything the GUI thread needs when the job is done (e.g. the input node).
    """

    def __init__(self, work: Callable[[Callable[[str, float], None], threading.Event], Any],
                 progress: Callable[[str, float], None] | None = None,
                 cancel: threading.Event | None = None, context: Any = None):
        self._work = work
        self._extraProgress = progress
        self.cancelEvent = cancel if cancel is not None else threading.Event()
        self.context = context
        self._lock = threading.Lock()
        self._stage, self._fraction = "queued", 0.0
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: Any = None
        self.error: BaseException | None = None

    def start(self) -> SegmentationJob:
        """Run the work on a daemon thread; returns immediately."""
        self._thread = threading.Thread(target=self._run, name="ToothMCLSegmentation", daemon=True)
        self._thread.start()
        return self

    def run(self) -> SegmentationJob:
        """Run the work in the calling thread (batch mode, tests)."""
        self._run()
        return self

    def cancel(self) -> None:
        self.cancelEvent.set()

    def poll(self) -> JobStatus:
        with self._lock:
            return JobStatus(self._stage, self._fraction, self._finished.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work finished; True if it did within ``timeout`` seconds."""
        return self._finished.wait(timeout)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def _progress(self, stage: str, fraction: float) -> None:
        with self._lock:
            self._stage, self._fraction = stage, float(fraction)
        if self._extraProgress is not None:
            self._extraProgress(stage, fraction)

    def _run(self) -> None:
        try:
            self.result = self._work(self._progress, self.cancelEvent)
        except Exception as exc:  # noqa: BLE001 (handed to the GUI thread, which shows or re-raises it)
            self.error = exc
        finally:
            self._finished.set()
