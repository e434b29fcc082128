"""Real processes: concurrent saves get distinct revisions; a save killed with SIGKILL leaves a valid store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ToothMCLCore.corrections import CorrectionStore
from ToothMCLCore.types import Geometry

REPO = Path(__file__).resolve().parents[2]
GEOMETRY = Geometry([0.5, 0.5, 0.5], [0.0, 0.0, 0.0], np.eye(3))

# Run in a child: wait for GO, then save COUNT corrections whose tooth 11 sits at x = WORKER.
# A short pause inside the write lock makes the writers of all children overlap for sure.
SAVE_SCRIPT = """
import json, sys, time
from pathlib import Path
import numpy as np
from ToothMCLCore.corrections import CorrectionStore, store as store_module
from ToothMCLCore.types import Geometry

store_path, case, worker, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
insert = store_module.Index.insert
def slow_insert(conn, meta):
    time.sleep(0.05)
    insert(conn, meta)
store_module.Index.insert = staticmethod(slow_insert)
store = CorrectionStore(store_path)
pred = np.zeros((4, 5, 6), dtype=np.uint8)
pred[0, 0, worker] = 11
corrected = pred.copy()
corrected[1, 1, 1] = 21
while not go.exists():
    time.sleep(0.005)
numbers, spans = [], []
for i in range(count):
    start = time.time()
    numbers.append(store.save(case, prediction=pred, corrected=corrected, model={"model": "m"},
                              geometry=Geometry([0.5] * 3, [0] * 3, np.eye(3)), annotator=f"worker {worker}",
                              note=f"{worker}-{i}").revision)
    spans.append((start, time.time()))
print(json.dumps({"revisions": numbers, "spans": spans}))
"""

# Run in a child: save once, but stop for good at STAGE (after writing the label files into
# tmp/, or inside the write lock after the revision folder was renamed into place) and tell
# the parent through READY, which then kills it with SIGKILL.
KILLED_SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np
from ToothMCLCore.corrections import CorrectionStore, store as store_module
from ToothMCLCore.types import Geometry

store_path, stage, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
def hang(*args):
    ready.write_text("ready")
    time.sleep(120)
if stage == "writing":
    write = store_module.write_label_files
    def write_then_hang(*args):
        names = write(*args)
        hang()
        return names
    store_module.write_label_files = write_then_hang
else:
    store_module.Index.insert = staticmethod(hang)
labels = np.zeros((4, 5, 6), dtype=np.uint8)
labels[1:3, 1:3, 1:3] = 36
CorrectionStore(store_path).save("case_1", prediction=labels, corrected=labels, model={"model": "m"},
                                 geometry=Geometry([0.5] * 3, [0] * 3, np.eye(3)), annotator="doomed")
"""


def _child_env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _labels(value: int = 36) -> np.ndarray:
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = value
    return labels


def test_processes_saving_at_the_same_time_all_succeed_with_distinct_revisions(tmp_path):
    """Three processes save the same case and one another case at once: revisions 1..6 and 1..2."""
    store = CorrectionStore(tmp_path / "store", create=True)
    go = tmp_path / "go"
    jobs = [("shared", 0), ("shared", 1), ("shared", 2), ("other", 3)]
    procs = [subprocess.Popen([sys.executable, "-c", SAVE_SCRIPT, str(store.root), case, str(worker), "2", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
             for case, worker in jobs]
    time.sleep(0.5)
    go.write_text("go")
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outputs]

    results = [json.loads(out) for out, _ in outputs]
    numbers = [r["revisions"] for r in results]
    spans = [(worker, a, b) for worker, r in enumerate(results) for a, b in r["spans"]]
    assert any(w1 != w2 and a1 < b2 and a2 < b1 for w1, a1, b1 in spans for w2, a2, b2 in spans), \
        "the saves did not overlap in time"
    assert sorted(n for nums in numbers[:3] for n in nums) == [1, 2, 3, 4, 5, 6]
    assert numbers[3] == [1, 2]
    shared = store.revisions("shared")
    assert sorted(r.note for r in shared) == sorted(f"{w}-{i}" for w in range(3) for i in range(2))
    for rev in shared:  # every revision holds the labels its own process saved
        worker = int(rev.note.split("-")[0])
        assert store.load("shared", rev.revision).prediction[0, 0, worker] == 11
    assert store.check().ok


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("stage", ["writing", "committing"])
def test_a_save_killed_midway_leaves_a_valid_store(tmp_path, stage):
    """After SIGKILL while writing files or while holding the lock, only complete revisions are listed."""
    store = CorrectionStore(tmp_path / "store", create=True)
    store.save("case_1", prediction=_labels(), corrected=_labels(), geometry=GEOMETRY, model={"model": "m"},
               annotator="first")
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(store.root), stage, str(ready)],
                            stderr=subprocess.PIPE, text=True, env=_child_env())
    deadline = time.monotonic() + 90
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the child never reached the pause"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    reopened = CorrectionStore(store.root)
    assert [(r.revision, r.annotator) for r in reopened.revisions("case_1")] == [(1, "first")]
    if stage == "committing":  # the renamed folder is there, but without its row it is no revision
        assert (store.root / "cases" / "case_1" / "r0002" / "meta.json").is_file()
    before_repair = reopened.check()
    assert before_repair.leftovers and not before_repair.problems

    rev = reopened.save("case_1", prediction=_labels(), corrected=_labels(37), geometry=GEOMETRY,
                        model={"model": "m"}, annotator="second")
    assert rev.revision == 2
    np.testing.assert_array_equal(reopened.load("case_1").corrected, _labels(37))
    report = reopened.check(repair=True)
    assert report.ok and report.repaired
    assert list((store.root / "tmp").iterdir()) == []
    assert [r.annotator for r in reopened.revisions("case_1")] == ["first", "second"]
