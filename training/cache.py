"""A disk cache of prepared training arrays, shared by processes and read memory-mapped.

Preparing a case (resampling a CBCT to 0.3 mm, registering a scan, sampling 24,000 points) takes
seconds; an epoch over thousands of cases cannot redo it. Each prepared case is one folder
``ROOT/<key>/`` of ``.npy`` files and a ``meta.json``, written into a temporary folder and
renamed into place, so several DataLoader workers or torchrun ranks may prepare the same case
at once: one rename wins, the others are discarded, and a reader never sees half a case. Arrays
are read with ``mmap_mode="r"``: a worker touches only the voxels of its crop.

The key names what the arrays were made from and how (:func:`cache_key`): a new preprocessing
setting or a changed input file gives a new key, never a stale array. Delete ROOT to free it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

META = "meta.json"


def cache_key(name: str, *parts) -> str:
    """``<name>-<12 hex>``: ``name`` made file-name safe and a hash of ``parts`` (JSON-able)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name))[:80] or "case"
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{safe}-{digest}"


def file_stamp(path) -> list:
    """Identity of an input file (or folder) for a cache key: path, size and modification time."""
    p = Path(path)
    if p.is_dir():
        return [str(p.resolve()), sorted(file_stamp(c) for c in p.iterdir() if c.is_file())]
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


class ArrayCache:
    """Prepared arrays by key, on disk under ``root`` (or in memory when ``root`` is None)."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root else None
        self._memory: dict[str, tuple[dict, dict]] = {}

    def get(self, key: str, build: Callable[[], tuple[dict[str, np.ndarray], dict]]) -> tuple[dict, dict]:
        """``(arrays, meta)`` of ``key``, built by ``build()`` (arrays by name, JSON-able meta) once."""
        if self.root is None:
            if key not in self._memory:
                self._memory[key] = build()
            return self._memory[key]
        folder = self.root / key
        if not (folder / META).is_file():
            arrays, meta = build()
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{key}.{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                for name, arr in arrays.items():
                    np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
                (tmp / META).write_text(json.dumps({"arrays": sorted(arrays), "meta": meta}), encoding="utf-8")
                os.replace(tmp, folder)
            except OSError:
                if not (folder / META).is_file():
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        info = json.loads((folder / META).read_text(encoding="utf-8"))
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in info["arrays"]}
        return arrays, info["meta"]
