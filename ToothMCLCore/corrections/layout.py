"""The folders and marker file of a corrections store, shared by :mod:`.store` and :mod:`.check`.

Their own module so that the checker need not import the store (the store runs the checker).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from ..io.atomic import atomic_write_text
from .files import fsync_path
from .index import INDEX_NAME

MARKER_NAME = "toothmcl-corrections.json"
CASES_DIR, TMP_DIR, INPUTS_DIR = "cases", "tmp", "inputs"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_store(path: Path) -> bool:
    """True for a folder holding a store's marker file or index."""
    return path.is_dir() and ((path / MARKER_NAME).is_file() or (path / INDEX_NAME).is_file())


def resolve_store_path(path) -> Path:
    """The store folder of ``path`` (the folder itself, or the folder of its ``index.sqlite``)."""
    root = Path(path).expanduser()
    if root.is_file() and root.name == INDEX_NAME and is_store(root.parent):
        return root.parent
    return root


def not_a_store_message(root: Path) -> str:
    if not root.exists():
        return (f"no corrections store at {root}; check the path (a store is created, with "
                "CorrectionStore(path, create=True), when the first correction is saved)")
    if root.is_file():
        return (f"{root} is a file, not a corrections store (a folder holding {MARKER_NAME} and "
                f"{INDEX_NAME}); choose the store folder")
    return (f"{root} is not a corrections store (it holds no {MARKER_NAME} or {INDEX_NAME}); choose the "
            "store folder, or create a new store in a new or empty folder (create=True)")


def complete_layout(root: Path) -> None:
    """Create ``cases/``, ``tmp/`` and the marker file where missing (after the index exists)."""
    for sub in (CASES_DIR, TMP_DIR):
        (root / sub).mkdir(exist_ok=True)
    if not (root / MARKER_NAME).is_file():
        marker = {"format": "toothmcl-corrections", "version": 1,
                  "about": "ToothMCL corrections store; inspect with `toothmcl corrections list <this folder>`"}
        atomic_write_text(root / MARKER_NAME, json.dumps(marker, indent=2) + "\n")
    fsync_path(root)
