"""Files of a revision folder: label files, the input copy, checksums, fsync and temp folders."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from ..types import Geometry
from .errors import CorruptStoreError

logger = logging.getLogger(__name__)

CBCT_FILES = ("prediction.nii.gz", "corrected.nii.gz")
IOS_FILE = "labels.npz"
META_FILE = "meta.json"
INPUT_DIR = "input"
LEFTOVER_PREFIX = "leftover-"
#: temp folders older than this are stale even when their owner cannot be asked (other host, Windows)
STALE_AFTER_S = 3600.0
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


# -- durability -------------------------------------------------------------------------------

def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (POSIX only; Windows cannot open folders)."""
    if path.is_dir():
        if os.name == "nt":
            return
        fd = os.open(path, os.O_RDONLY)
    else:  # Windows flushes only handles open for writing; POSIX needs no write access
        fd = os.open(path, (os.O_RDWR | os.O_BINARY) if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder``, children first, ``folder`` last."""
    for dirpath, _dirs, names in os.walk(folder, topdown=False):
        for name in names:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


# -- checksums --------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(folder: Path) -> str:
    """SHA-256 of a folder (e.g. a DICOM series): of its sorted relative file names and contents."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return h.hexdigest()


def sha256_of_input(path: Path) -> str:
    return sha256_tree(path) if path.is_dir() else sha256_file(path)


# -- names ------------------------------------------------------------------------------------

def folder_name(case_id: str) -> str:
    """A file-system-safe folder name for a case id (uniqueness is the index's job)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._-")[:60].strip("._-") or "case"
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = f"case_{name}"
    return name


def revision_folder(revision: int) -> str:
    return f"r{revision:04d}"


def revision_number(name: str) -> int | None:
    m = re.fullmatch(r"r(\d{4,})", name)
    return int(m.group(1)) if m else None


def new_temp_folder(tmp_root: Path) -> Path:
    """A fresh folder ``<host>-<pid>-<random>`` under the store's ``tmp/``."""
    host = re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:30] or "host"
    folder = tmp_root / f"{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=False)
    return folder


def new_leftover_folder(tmp_root: Path) -> Path:
    """A fresh folder ``leftover-<random>`` under ``tmp/`` for uncommitted remains set aside."""
    folder = tmp_root / f"{LEFTOVER_PREFIX}{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=False)
    return folder


def temp_owner_alive(folder: Path) -> bool:
    """Whether the process that made a temp folder may still be writing into it.

    Set-aside leftovers have no owner. A folder of this host whose process id is gone is dead
    at once (POSIX); otherwise a folder untouched for :data:`STALE_AFTER_S` is taken as dead.
    """
    if folder.name.startswith(LEFTOVER_PREFIX):
        return False
    m = re.fullmatch(r"([A-Za-z0-9]*)-(\d+)-[0-9a-f]+", folder.name)
    host = re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:30] or "host"
    if m and m.group(1) == host and os.name == "posix":
        pid = int(m.group(2))
        if pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)  # signal 0 only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        age = time.time() - max(p.stat().st_mtime for p in [folder, *folder.rglob("*")])
    except OSError:
        return False
    return age < STALE_AFTER_S


# -- label files ------------------------------------------------------------------------------

def write_label_files(folder: Path, modality: str, prediction: np.ndarray, corrected: np.ndarray,
                      geometry: Geometry | None, vertices_ras: np.ndarray | None) -> list[str]:
    """Write the label files of a revision into ``folder``; returns their names.

    CBCT: ``prediction.nii.gz`` and ``corrected.nii.gz``, uint8 label maps on ``geometry``.
    IOS: ``labels.npz`` with ``prediction`` and ``corrected`` ``(N,) uint8`` and, when given,
    ``vertices_ras`` ``(N, 3) float64``.
    """
    if modality == "cbct":
        from ..io.volume import write_labelmap

        for name, labels in zip(CBCT_FILES, (prediction, corrected)):
            write_labelmap(folder / name, labels, geometry)
        return list(CBCT_FILES)
    arrays = {"prediction": prediction, "corrected": corrected}
    if vertices_ras is not None:
        arrays["vertices_ras"] = vertices_ras
    with open(folder / IOS_FILE, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return [IOS_FILE]


def read_label_files(folder: Path, modality: str, shape: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(prediction, corrected, vertices_ras or None)`` of a revision folder.

    Raises:
        CorruptStoreError: a file is missing, unreadable, or holds another shape than recorded.
    """
    try:
        if modality == "cbct":
            import SimpleITK as sitk

            pred, corr = (sitk.GetArrayFromImage(sitk.ReadImage(str(folder / n))) for n in CBCT_FILES)
            vertices = None
        else:
            with np.load(folder / IOS_FILE, allow_pickle=False) as npz:
                pred, corr = npz["prediction"], npz["corrected"]
                vertices = npz["vertices_ras"] if "vertices_ras" in npz.files else None
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CorruptStoreError(
            f"labels of {folder} cannot be read ({detail}); run `toothmcl corrections check` on the store"
        ) from None
    if pred.shape != tuple(shape) or corr.shape != tuple(shape):
        raise CorruptStoreError(
            f"labels of {folder} have shape {pred.shape}/{corr.shape}, the index says {tuple(shape)}; "
            "run `toothmcl corrections check` on the store"
        )
    return pred.astype(np.uint8, copy=False), corr.astype(np.uint8, copy=False), vertices


# -- input copy -------------------------------------------------------------------------------

def copy_input(source: Path, folder: Path, expected_sha256: str) -> Path:
    """Copy an input file or folder into ``folder/input/``; verify the copy's SHA-256.

    Returns:
        the staged ``input`` folder (holding one entry named like ``source``).
    """
    staged = folder / INPUT_DIR
    staged.mkdir()
    target = staged / source.name
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)
    if sha256_of_input(target) != expected_sha256:
        from ..errors import InvalidInputError

        raise InvalidInputError(
            f"{source} changed while it was being copied into the store; save again once it is stable"
        )
    return staged


def stored_input_entry(inputs_dir: Path) -> Path | None:
    """The single file or folder inside a stored ``inputs/<sha256>`` folder, if any."""
    entries = [p for p in inputs_dir.iterdir()] if inputs_dir.is_dir() else []
    return entries[0] if len(entries) == 1 else None


def remove_tree(path: Path) -> None:
    """Remove a temp or orphan folder; logs instead of failing (the store stays valid either way)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove %s (%s); `toothmcl corrections check --repair` will", path, exc)
