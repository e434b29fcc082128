"""Numbering corrections on a segmentation, each undoable and recorded for the provenance.

Operations (``tooth`` and ``target`` are FDI numbers; 99 is metal):

``reassign``  the segment of ``tooth`` becomes ``target`` (a number not in use)
``swap``      ``tooth`` and ``target`` exchange their voxels
``merge``     ``tooth`` is merged into ``target`` (a fragment into its tooth); ``tooth`` disappears
``delete``    ``tooth`` disappears
``renumber``  every tooth of ``quadrant`` moves ``step`` (+1 or -1) positions along the quadrant

Each operation is computed on the FDI label map of the segmentation (so edits made in the
Segment Editor in between are respected), written back with
:func:`SegmentDisplay.setToothLabels`, and recorded as diff entries
``{"op", "from", "to", "voxels"}`` plus the changed voxels, so that :meth:`undo` restores the
label map exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .SegmentDisplay import attributePrefix, labelsFromSegmentation, setToothLabels

OPERATIONS = ("reassign", "swap", "merge", "delete", "renumber")
#: node attribute (after the ``ToothMCL.`` prefix) holding the JSON list of diff entries
DIFF_ATTRIBUTE = "corrections"


@dataclass
class _Step:
    entries: list[dict]
    indices: np.ndarray  # (N,) int64 flat indices of changed voxels
    before: np.ndarray  # (N,) uint8
    after: np.ndarray  # (N,) uint8


def _present(counts: np.ndarray) -> list[int]:
    return [int(v) for v in np.nonzero(counts)[0] if v != 0]


def _requirePresent(counts: np.ndarray, *numbers: int) -> None:
    from ToothMCLCore.errors import InvalidInputError

    for number in numbers:
        if number is None or not (0 < int(number) < len(counts)) or counts[int(number)] == 0:
            raise InvalidInputError(
                f"tooth {number} is not in the segmentation; pick one of {_present(counts)}"
            )


def _asNumber(value):
    from ToothMCLCore.errors import InvalidInputError

    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{value!r} is not a tooth number; use an FDI number such as 36") from None


def correctedLabels(labels: np.ndarray, op: str, tooth=None, target=None, quadrant=None,
                    step=None) -> tuple[np.ndarray, list[dict]]:
    """Apply one operation to an FDI label map; returns the new map and its diff entries.

    Raises:
        InvalidInputError: unknown operation, absent tooth, invalid or already used target,
            a renumbering that leaves the quadrant.
    """
    from ToothMCLCore import fdi
    from ToothMCLCore.errors import InvalidInputError

    tooth, target = _asNumber(tooth), _asNumber(target)
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=256)
    lut = np.arange(256, dtype=np.uint8)
    if op == "reassign":
        _requirePresent(counts, tooth)
        if target is None or not fdi.is_valid_fdi(target):
            raise InvalidInputError(
                f"{target!r} is not an FDI tooth number; pick 11-48 (or 51-85 for primary teeth)")
        if counts[int(target)]:
            raise InvalidInputError(
                f"tooth {target} already exists; swap {tooth} and {target} or merge them instead")
        lut[tooth] = target
        entries = [{"op": op, "from": int(tooth), "to": int(target), "voxels": int(counts[tooth])}]
    elif op == "swap":
        _requirePresent(counts, tooth, target)
        if tooth == target:
            raise InvalidInputError(f"cannot swap tooth {tooth} with itself; select two different teeth")
        lut[tooth], lut[target] = target, tooth
        entries = [{"op": op, "from": int(tooth), "to": int(target),
                    "voxels": int(counts[tooth] + counts[target])}]
    elif op == "merge":
        _requirePresent(counts, tooth, target)
        if tooth == target:
            raise InvalidInputError(f"cannot merge tooth {tooth} into itself; select two different teeth")
        lut[tooth] = target
        entries = [{"op": op, "from": int(tooth), "to": int(target), "voxels": int(counts[tooth])}]
    elif op == "delete":
        _requirePresent(counts, tooth)
        lut[tooth] = 0
        entries = [{"op": op, "from": int(tooth), "to": 0, "voxels": int(counts[tooth])}]
    elif op == "renumber":
        entries = _renumber(counts, lut, quadrant, step)
    else:
        raise InvalidInputError(f"unknown correction {op!r}; use one of {', '.join(OPERATIONS)}")
    return lut[labels], entries


def _renumber(counts: np.ndarray, lut: np.ndarray, quadrant, step) -> list[dict]:
    from ToothMCLCore import fdi
    from ToothMCLCore.errors import InvalidInputError

    if step not in (-1, 1):
        raise InvalidInputError(f"a quadrant moves by +1 or -1 position (got {step!r})")
    if quadrant not in range(1, 9):
        raise InvalidInputError(f"quadrant must be 1..8 (got {quadrant!r})")
    teeth = [n for n in _present(counts) if fdi.is_valid_fdi(n) and n // 10 == quadrant]
    if not teeth:
        raise InvalidInputError(f"quadrant {quadrant} has no teeth to renumber")
    moved = [n + step for n in teeth]
    outside = [(a, b) for a, b in zip(teeth, moved) if not fdi.is_valid_fdi(b)]
    if outside:
        a, b = outside[0]
        raise InvalidInputError(
            f"renumbering quadrant {quadrant} by {step:+d} would turn {a} into {b}, which does not "
            f"exist; delete or reassign tooth {a} first"
        )
    entries = []
    for a, b in zip(teeth, moved):
        lut[a] = b
        entries.append({"op": "renumber", "from": a, "to": b, "voxels": int(counts[a])})
    return entries


class CorrectionCapture:
    """Applies corrections to segmentation nodes and keeps one undo stack per node."""

    def __init__(self):
        self._steps: dict[str, list[_Step]] = {}
        self._inherited: dict[str, list[dict]] = {}  # entries recorded before this session (not undoable)

    def apply(self, segmentationNode, op: str, tooth=None, target=None, quadrant=None, step=None) -> list[dict]:
        """Apply an operation (see module docstring); returns its diff entries."""
        labels, _ = labelsFromSegmentation(segmentationNode)
        corrected, entries = correctedLabels(labels, op, tooth, target, quadrant, step)
        indices = np.flatnonzero(labels != corrected)
        if segmentationNode.GetID() not in self._steps:
            self._inherited[segmentationNode.GetID()] = self.diff(segmentationNode)
        setToothLabels(segmentationNode, corrected)
        self._steps.setdefault(segmentationNode.GetID(), []).append(
            _Step(entries, indices, labels.ravel()[indices], corrected.ravel()[indices]))
        self._writeDiff(segmentationNode)
        return entries

    def canUndo(self, segmentationNode) -> bool:
        return bool(segmentationNode is not None and self._steps.get(segmentationNode.GetID()))

    def undo(self, segmentationNode) -> list[dict]:
        """Revert the last operation on this node; returns the entries it undid.

        Raises:
            InvalidInputError: nothing to undo.
        """
        from ToothMCLCore.errors import InvalidInputError

        steps = self._steps.get(segmentationNode.GetID())
        if not steps:
            raise InvalidInputError(f"there is no correction of {segmentationNode.GetName()} to undo")
        last = steps[-1]
        labels, _ = labelsFromSegmentation(segmentationNode)
        flat = labels.ravel()
        flat[last.indices] = last.before
        setToothLabels(segmentationNode, labels)
        steps.pop()
        self._writeDiff(segmentationNode)
        return last.entries

    def diff(self, segmentationNode) -> list[dict]:
        """Diff entries of all corrections applied to this node, oldest first.

        After a scene reload the undo stack is gone; the entries are then read back from the
        node attribute ``ToothMCL.corrections``.
        """
        steps = self._steps.get(segmentationNode.GetID())
        if steps is not None:
            inherited = self._inherited.get(segmentationNode.GetID(), [])
            return [dict(entry) for entry in inherited] + [dict(e) for s in steps for e in s.entries]
        text = segmentationNode.GetAttribute(attributePrefix() + DIFF_ATTRIBUTE)
        return json.loads(text) if text else []

    def forget(self, segmentationNode) -> None:
        """Drop the undo stack of a node (e.g. when the node is removed from the scene)."""
        self._steps.pop(segmentationNode.GetID(), None)
        self._inherited.pop(segmentationNode.GetID(), None)

    def _writeDiff(self, segmentationNode) -> None:
        segmentationNode.SetAttribute(attributePrefix() + DIFF_ATTRIBUTE,
                                      json.dumps(self.diff(segmentationNode), separators=(",", ":")))
