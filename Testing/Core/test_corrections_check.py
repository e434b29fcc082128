"""check / repair: damage is reported, leftovers removed, a garbage index rebuilt from the folders."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ToothMCLCore.corrections import CorrectionStore, CorruptStoreError
from ToothMCLCore.corrections.check import check_store
from ToothMCLCore.corrections.files import new_temp_folder
from ToothMCLCore.types import Geometry

GEOMETRY = Geometry([0.5, 0.5, 0.5], [1.0, 2.0, 3.0], np.eye(3))


def _labels(value: int) -> np.ndarray:
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1:3, 1:4, 2:5] = value
    return labels


@pytest.fixture
def store(tmp_path):
    """A store with case_a (2 revisions, one with its input copied) and case_b (1 revision)."""
    store = CorrectionStore(tmp_path / "store", create=True)
    source = tmp_path / "scan.raw"
    source.write_bytes(b"raw scanner export")
    for case, corrected in (("case_a", 36), ("case_a", 37), ("case_b", 46)):
        store.save(case, prediction=_labels(36 if case == "case_a" else 46), corrected=_labels(corrected),
                   geometry=GEOMETRY, model={"model": "m", "model_version": "1"}, annotator="ann",
                   input_path=str(source) if case == "case_b" else None)
    return store


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_healthy_store_checks_ok(store):
    """A store with only complete saves is OK, with every revision counted."""
    report = store.check()
    assert report.ok and report.revisions == 3 and not report.repaired


def test_a_changed_label_file_is_reported_and_not_repaired_away(store):
    """A label file edited behind the store's back is a problem naming case, revision and file."""
    rev = store.revision("case_a", 1)
    path = store.root / rev.folder / "corrected.nii.gz"
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    report = store.check(repair=True)
    assert not report.ok
    assert any("case_a revision 1: corrected.nii.gz changed" in p for p in report.problems)
    assert path.exists() and [r.revision for r in store.revisions("case_a")] == [1, 2]


def test_repair_removes_leftovers_but_not_a_save_in_progress(store):
    """Dead temp folders and unindexed revision folders go; a running save's temp folder stays."""
    dead = new_temp_folder(store.root / "tmp")
    host, _pid, suffix = dead.name.split("-")
    dead = dead.rename(dead.with_name(f"{host}-{_dead_pid()}-{suffix}"))
    (dead / "prediction.nii.gz").write_bytes(b"half")
    running = new_temp_folder(store.root / "tmp")  # this process: still alive
    orphan = store.root / "cases" / "case_a" / "r0003"
    orphan.mkdir()
    (orphan / "meta.json").write_text("{}")

    report = store.check()
    assert len(report.leftovers) == 2 and len(report.in_progress) == 1 and not report.ok
    report = store.check(repair=True)
    assert report.ok and len(report.repaired) == 2
    assert not dead.exists() and not orphan.exists() and running.exists()
    assert [r.revision for r in store.revisions("case_a")] == [1, 2]


def test_repair_rebuilds_a_garbage_index_from_the_revision_folders(store):
    """After garbage overwrites index.sqlite, --repair restores every revision and saving goes on."""
    before = {case: [r.to_dict() for r in store.revisions(case)] for case in ("case_a", "case_b")}
    for suffix in ("-wal", "-shm"):
        (store.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    (store.root / "index.sqlite").write_bytes(b"\x00garbage" * 512)
    with pytest.raises(CorruptStoreError):
        CorrectionStore(store.root)

    report = check_store(store.root)
    assert not report.ok and "3 revision folders can be re-indexed with --repair" in report.problems[0]
    report = check_store(store.root, repair=True)
    assert report.revisions == 3 and not report.problems

    reopened = CorrectionStore(store.root)
    assert {case: [r.to_dict() for r in reopened.revisions(case)] for case in before} == before
    assert list(store.root.glob("index.sqlite.damaged-*"))
    assert reopened.save("case_a", prediction=_labels(36), corrected=_labels(38), geometry=GEOMETRY,
                         model={"model": "m"}, annotator="ann").revision == 3
    assert reopened.check().ok


def test_a_missing_index_of_a_store_is_damage_not_a_new_store(store):
    """A store whose index was deleted is refused (not silently emptied), even with create=True."""
    for suffix in ("", "-wal", "-shm"):
        (store.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(CorruptStoreError, match="index.sqlite is missing"):
        CorrectionStore(store.root, create=True)
    assert check_store(store.root, repair=True).revisions == 3


def test_a_rebuild_keeps_a_folder_it_cannot_index_under_damaged(store):
    """A revision folder with a garbled meta.json is moved to damaged/ during a rebuild, not lost."""
    broken = store.root / store.revision("case_a", 2).folder
    (broken / "meta.json").write_text("{not json")
    (store.root / "index.sqlite").write_bytes(b"garbage" * 600)
    report = check_store(store.root, repair=True)
    assert report.revisions == 2 and any("moved to damaged/case_a-r0002-" in p for p in report.problems)
    (kept,) = (store.root / "damaged").iterdir()
    assert (kept / "corrected.nii.gz").is_file()
    assert [r.revision for r in CorrectionStore(store.root).revisions("case_a")] == [1]
    assert check_store(store.root, repair=True).repaired == []
