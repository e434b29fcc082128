"""Atomic writes: a reader never sees a half-written output, a failed write leaves nothing.

Every writer in ToothMCL writes to a temporary file in the destination folder and renames it
into place (``os.replace`` is atomic on POSIX and Windows when both are on one file system).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError


def full_suffix(path: str | os.PathLike) -> str:
    """Lower-case multi-part suffix that names the format: ``.seg.nrrd``, ``.nii.gz``, ``.stl``."""
    name = Path(path).name.lower()
    for suffix in (".seg.nrrd", ".nii.gz", ".vtk.gz"):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary name keeps the full suffix of ``path`` so that format-sniffing writers
    (SimpleITK, trimesh) pick the right format. On any exception the temporary file is removed
    and ``path`` is untouched.

    Raises:
        OutputError: the destination folder does not exist or is not writable.
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable; choose another path")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{full_suffix(dest)}", dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600), and some writers (safetensors) replace it with a private
        # one: outputs get the permissions any new file would get, set on the file the writer left
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
