"""Per-tooth differences between two label arrays of one scan (prediction vs correction).

Both arrays hold label values (FDI numbers, 0 background or gingiva, 99 metal) for the same
voxels (CBCT, ``(K, J, I)``) or vertices (IOS, ``(N,)``). The comparison is a contingency table
``overlap[a, b]`` = number of elements labelled ``a`` before and ``b`` after, from which every
label region gets one entry:

``unchanged``   same number, same elements
``boundary``    same number, some elements gained or lost (an edited outline)
``renumbered``  the region mostly (plurality of its elements) carries another number now
``merged``      the region mostly became part of a region that another one mostly became too
``split``       a new number made mostly of elements of a region that kept its own number
``added``       a new number made mostly of background
``removed``     the region mostly became background

Each entry is a dict ``{"change", "from", "to", "before", "after", "overlap"}``: ``from`` and
``to`` are label values (0 where there is no region), ``before`` the elements labelled ``from``
before, ``after`` the elements labelled ``to`` after, ``overlap`` those labelled ``from`` before
and ``to`` after; so ``before - overlap`` elements were lost and ``after - overlap`` gained.
"""

from __future__ import annotations

import numpy as np

CHANGES = ("unchanged", "boundary", "renumbered", "merged", "split", "added", "removed")
_N_LABELS = 256
_CHUNK = 1 << 22  # elements per bincount call: bounds the int64 temporaries to ~32 MiB


def label_counts(labels: np.ndarray) -> np.ndarray:
    """(256,) int64 number of elements of each label value of a uint8 array (any shape)."""
    flat = np.asarray(labels, dtype=np.uint8).reshape(-1)
    counts = np.zeros(_N_LABELS, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        counts += np.bincount(flat[start:start + _CHUNK], minlength=_N_LABELS)
    return counts


def contingency(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(256, 256) int64 table: ``[a, b]`` = elements labelled ``a`` in ``before`` and ``b`` in ``after``.

    Args:
        before, after: uint8 label arrays of the same shape.
    """
    b = np.asarray(before, dtype=np.uint8).reshape(-1)
    a = np.asarray(after, dtype=np.uint8).reshape(-1)
    table = np.zeros(_N_LABELS * _N_LABELS, dtype=np.int64)
    for start in range(0, b.size, _CHUNK):
        codes = b[start:start + _CHUNK].astype(np.uint16) * _N_LABELS + a[start:start + _CHUNK]
        table += np.bincount(codes, minlength=_N_LABELS * _N_LABELS)
    return table.reshape(_N_LABELS, _N_LABELS)


def _entry(change: str, src: int, dst: int, table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> dict:
    return {"change": change, "from": int(src), "to": int(dst),
            "before": int(rows[src]) if src else 0, "after": int(cols[dst]) if dst else 0,
            "overlap": int(table[src, dst]) if src and dst else 0}


def tooth_diff(before: np.ndarray, after: np.ndarray) -> list[dict]:
    """Per-region changes from ``before`` to ``after`` (see the module docstring).

    Args:
        before, after: uint8 label arrays of the same shape (voxels or vertices).

    Returns:
        one dict per label region of either array (0 excluded), sorted by label value.
    """
    table = contingency(before, after)
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    sources = [v for v in range(1, _N_LABELS) if rows[v]]
    # where each region of `before` went: the plurality label, its own number winning ties
    target = {}
    for a in sources:
        row = table[a]
        best = int(np.argmax(row))
        target[a] = a if row[a] == row[best] else best
    # a region of `after` reached by several: the one contributing most elements owns it
    owner: dict[int, int] = {}
    for a, b in target.items():
        if b and (b not in owner or (table[a, b], a == b) > (table[owner[b], b], owner[b] == b)):
            owner[b] = a
    entries = []
    for a, b in target.items():
        if b == 0:
            entries.append(_entry("removed", a, 0, table, rows, cols))
        elif owner[b] != a:
            entries.append(_entry("merged", a, b, table, rows, cols))
        elif a != b:
            entries.append(_entry("renumbered", a, b, table, rows, cols))
        else:
            same = table[a, a] == rows[a] == cols[a]
            entries.append(_entry("unchanged" if same else "boundary", a, a, table, rows, cols))
    for b in range(1, _N_LABELS):
        if cols[b] and b not in owner:
            col = table[:, b]
            src = int(np.argmax(col))
            if src:
                entries.append(_entry("split", src, b, table, rows, cols))
            else:
                entries.append(_entry("added", 0, b, table, rows, cols))
    entries.sort(key=lambda e: (e["from"] or e["to"], e["to"]))
    return entries


def changed(entries: list[dict]) -> list[dict]:
    """The entries that are not ``unchanged``."""
    return [e for e in entries if e["change"] != "unchanged"]
