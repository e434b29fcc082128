"""``check``: find damage and leftovers in a store; with ``repair``, remove leftovers and rebuild
a damaged index from the revision folders.

What it looks at:

* the index: readable SQLite, our format, ``PRAGMA quick_check``;
* every indexed revision: its folder, ``meta.json`` and label files exist and match the
  SHA-256 recorded at save time (and the input copy matches its SHA-256 folder name);
* leftovers: folders in ``tmp/`` whose process is gone (a save that was killed, or an
  uncommitted folder set aside), and revision or case folders that no index row names (a
  save killed between moving its folder into place and committing its row).

Repair never touches anything an index row names. It removes leftovers under the store's write
lock (so a save in progress is never mistaken for one) and leaves temp folders whose process
still runs. A damaged index is renamed to ``index.sqlite.damaged-<UTC time>`` (kept, not deleted)
and a new one is built from every revision folder's ``meta.json`` (including a complete folder
whose save was killed between its rename and its commit); run it while no one else uses the store.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CorrectionStoreError, CorruptStoreError
from .files import META_FILE, remove_tree, revision_number, sha256_file, sha256_of_input, temp_owner_alive
from .index import INDEX_NAME, Index
from .layout import (
    CASES_DIR,
    TMP_DIR,
    complete_layout,
    is_store,
    not_a_store_message,
    resolve_store_path,
    utc_now,
)
from .records import Revision

logger = logging.getLogger(__name__)

#: where a rebuild puts revision folders it cannot index (never removed automatically)
DAMAGED_DIR = "damaged"


@dataclass
class CheckReport:
    """Outcome of :func:`check_store`.

    Attributes:
        store: the store folder.
        revisions: number of indexed revisions (after a rebuild: restored ones).
        problems: damage that repair cannot undo (missing or changed files) or did not fix.
        leftovers: harmless remains of interrupted saves (removed by ``repair``).
        in_progress: temp folders of saves still running (never removed).
        repaired: what ``repair`` did.
    """

    store: Path
    revisions: int = 0
    problems: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is damaged and no leftover remains."""
        return not self.problems and not self.leftovers


def check_store(path, repair: bool = False, verify_files: bool = True) -> CheckReport:
    """Check a store folder, also one whose index is damaged; see the module docstring.

    Args:
        path: the store folder.
        repair: remove leftovers; rebuild a damaged or missing index.
        verify_files: recompute the SHA-256 of every label file and input copy (reads everything).

    Raises:
        CorrectionStoreError: ``path`` is not a store.
    """
    root = resolve_store_path(path)
    if not is_store(root):
        raise CorrectionStoreError(not_a_store_message(root))
    report = CheckReport(store=root)
    index = Index(root)
    damage = _index_damage(index)
    if damage:
        if not repair:
            found = len(_revision_folders(root))
            report.problems.append(f"{damage}; {found} revision folders can be re-indexed with --repair")
            return report
        report.revisions = rebuild_index(root, report, verify_files)
        return report
    with index.read() as conn:
        rows = [json.loads(r[0]) for r in conn.execute("SELECT metadata FROM revisions").fetchall()]
    report.revisions = len(rows)
    if verify_files:
        for meta in rows:
            report.problems.extend(_verify_revision(root, meta))
    with index.write() as conn:  # no save sits between its rename and its commit while we look
        named = {r[0] for r in conn.execute("SELECT folder FROM cases").fetchall()}
        _find_leftovers(root, named, {m["folder"] for m in rows}, report, repair)
    return report


def _index_damage(index: Index) -> str:
    """"" for a healthy index, else what is wrong with it."""
    if not index.path.is_file():
        return f"{INDEX_NAME} is missing"
    try:
        index.validate()
        with index.read() as conn:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
    except CorruptStoreError as exc:
        return f"the index is damaged: {exc.detail or exc}"
    return "" if result == "ok" else f"the index is damaged: {result}"


def _verify_revision(root: Path, meta: dict) -> list[str]:
    name = f"{meta['case_id']} revision {meta['revision']}"
    folder = root / meta["folder"]
    if not (folder / META_FILE).is_file():
        return [f"{name}: folder {meta['folder']} or its {META_FILE} is missing; restore it from a backup"]
    problems = []
    for file, digest in meta.get("files", {}).items():
        path = folder / file
        if not path.is_file():
            problems.append(f"{name}: {file} is missing; restore it from a backup")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: {file} changed after it was saved (SHA-256 differs); restore it from a backup")
    if meta.get("input_copy"):
        copy = root / meta["input_copy"]
        if not copy.exists():
            problems.append(f"{name}: the input copy {meta['input_copy']} is missing")
        elif sha256_of_input(copy) != copy.parent.name:
            problems.append(f"{name}: the input copy {meta['input_copy']} changed after it was saved")
    return problems


def _find_leftovers(root: Path, case_folders: set[str], revision_folders: set[str], report: CheckReport,
                    repair: bool) -> None:
    leftovers: list[Path] = []
    tmp = root / TMP_DIR
    for entry in sorted(tmp.iterdir()) if tmp.is_dir() else []:
        if entry.is_dir() and temp_owner_alive(entry):
            report.in_progress.append(f"{TMP_DIR}/{entry.name}: a save still running; left alone")
        else:
            leftovers.append(entry)
    cases = root / CASES_DIR
    for case_dir in sorted(cases.iterdir()) if cases.is_dir() else []:
        if case_dir.name not in case_folders:
            leftovers.append(case_dir)
            continue
        for entry in sorted(case_dir.iterdir()):
            rel = entry.relative_to(root).as_posix()
            if revision_number(entry.name) is not None and rel not in revision_folders:
                leftovers.append(entry)
    for entry in leftovers:
        rel = entry.relative_to(root).as_posix()
        if repair:
            remove_tree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
            report.repaired.append(f"removed {rel} (left by an interrupted save)")
        else:
            report.leftovers.append(f"{rel}: left by an interrupted save; --repair removes it")


def _revision_folders(root: Path) -> list[Path]:
    cases = root / CASES_DIR
    return sorted(p for p in cases.glob("*/r*") if p.is_dir() and revision_number(p.name) is not None
                  ) if cases.is_dir() else []


def rebuild_index(root: Path, report: CheckReport, verify_files: bool = True) -> int:
    """Set the damaged index aside and index every revision folder again from its ``meta.json``.

    A folder with damaged files is indexed anyway (and reported: loading it will fail, nothing
    is lost); one that cannot be indexed (no readable ``meta.json``, or clashing with another)
    is moved to ``damaged/`` so that no later repair takes it for a leftover.

    Returns:
        the number of revisions restored.
    """
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", "-wal", "-shm"):
        old = root / (INDEX_NAME + suffix)
        if old.exists():
            kept = root / f"{INDEX_NAME}.damaged-{stamp}{suffix}"
            os.replace(old, kept)
            if not suffix:
                report.repaired.append(f"kept the damaged index as {kept.name}")
    index = Index(root)
    index.create(utc_now())
    complete_layout(root)
    restored, folder_of, case_of, keys = 0, {}, {}, set()
    with index.write() as conn:
        for folder in _revision_folders(root):
            rel, case_folder = folder.relative_to(root).as_posix(), folder.parent.name
            try:
                meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
                meta["folder"] = rel
                key = (Revision.from_dict(meta).case_id, int(meta["revision"]))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                _move_to_damaged(root, folder, stamp, f"no readable {META_FILE} ({exc})", report)
                continue
            if (folder_of.setdefault(key[0], case_folder) != case_folder
                    or case_of.setdefault(case_folder, key[0]) != key[0] or key in keys):
                _move_to_damaged(root, folder, stamp, f"{key[0]} revision {key[1]} is also elsewhere", report)
                continue
            keys.add(key)
            if verify_files:
                report.problems.extend(_verify_revision(root, meta))
            conn.execute("INSERT OR IGNORE INTO cases (case_id, folder, modality, created_utc) VALUES (?, ?, ?, ?)",
                         (key[0], case_folder, meta["modality"], meta["created_utc"]))
            Index.insert(conn, meta)
            restored += 1
    report.repaired.append(f"rebuilt the index: {restored} revisions restored from their folders")
    logger.warning("rebuilt the index of %s: %d revisions restored", root, restored)
    return restored


def _move_to_damaged(root: Path, folder: Path, stamp: str, why: str, report: CheckReport) -> None:
    target = root / DAMAGED_DIR / f"{folder.parent.name}-{folder.name}-{stamp}"
    target.parent.mkdir(exist_ok=True)
    os.rename(folder, target)
    report.problems.append(f"{folder.relative_to(root).as_posix()}: {why}; not re-indexed, moved to "
                           f"{target.relative_to(root).as_posix()}")
