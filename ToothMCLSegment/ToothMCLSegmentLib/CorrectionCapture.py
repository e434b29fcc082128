"""Numbering corrections on a segmentation, each undoable and recorded for the provenance.

Operations (``tooth`` and ``target`` are FDI numbers; 99 is metal):

``reassign``  the segment of ``tooth`` becomes ``target`` (a number not in use)
``swap``      ``tooth`` and ``target`` exchange their voxels
``merge``     ``tooth`` is merged into ``target`` (a fragment into its tooth); ``tooth`` disappears
``delete``    ``tooth`` disappears
``renumber``  every tooth of ``quadrant`` moves ``step`` (+1 or -1) positions along the quadrant
``relabel``   (scans) the selected vertices get label ``target`` (an FDI number, or 0 = gingiva)
click tools   add, split, refine, brush from markups clicks on scans; split, refine on CBCT segmentations
              (:meth:`CorrectionCapture.applyClickTool`); their entry is ``{"op": "interactive", "tool", "clicks", ...}``

The subject is a segmentation node (CBCT) or a labelled scan (a model node with the per-vertex
``FDI`` array). Each operation is computed on the current labels (so edits made in the Segment
Editor in between are respected), written back, and recorded as diff entries
``{"op", "from", "to", "voxels"}`` (``"vertices"`` for scans) plus the changed elements, so
that :meth:`undo` restores the labels exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .SegmentDisplay import attributePrefix, labelsFromSegmentation, setToothLabels
from .VertexLabels import setVertexLabels, vertexLabels

OPERATIONS = ("reassign", "swap", "merge", "delete", "renumber")
#: node attribute (after the ``ToothMCL.`` prefix) holding the JSON list of diff entries
DIFF_ATTRIBUTE = "corrections"


@dataclass
class _Step:
    entries: list[dict]
    indices: np.ndarray  # (N,) int64 flat indices of changed voxels
    before: np.ndarray  # (N,) label values
    after: np.ndarray  # (N,) label values


def isScan(node) -> bool:
    """True for a model node (an intraoral scan with per-vertex labels)."""
    return node is not None and node.IsA("vtkMRMLModelNode")


def currentLabels(node) -> np.ndarray:
    """The subject's labels: the segmentation's FDI label map, or the scan's per-vertex ``FDI``."""
    if isScan(node):
        labels = vertexLabels(node)
        if labels is None:
            from ToothMCLCore.errors import InvalidInputError

            raise InvalidInputError(f"{node.GetName()} has no FDI labels; segment the scan first")
        return labels
    return labelsFromSegmentation(node)[0]


def _writeLabels(node, labels: np.ndarray) -> None:
    if isScan(node):
        setVertexLabels(node, labels)
    else:
        setToothLabels(node, labels)


def _perElement(entries: list[dict], node) -> list[dict]:
    if not isScan(node):
        return entries
    return [{("vertices" if k == "voxels" else k): v for k, v in e.items()} for e in entries]


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


def _clicks(markupsNode) -> list:
    """The world positions of a point list's points; none for no list (a placed-but-empty list is
    refused by :func:`.ClickTools.clickPoints` with what to do)."""
    from .ClickTools import clickPoints

    return clickPoints(markupsNode) if markupsNode is not None else []


class CorrectionCapture:
    """Applies corrections to segmentation nodes and keeps one undo stack per node."""

    def __init__(self):
        self._steps: dict[str, list[_Step]] = {}
        self._inherited: dict[str, list[dict]] = {}  # entries recorded before this session (not undoable)

    def apply(self, segmentationNode, op: str, tooth=None, target=None, quadrant=None, step=None) -> list[dict]:
        """Apply an operation (see module docstring) to a segmentation or a labelled scan."""
        labels = currentLabels(segmentationNode)
        if labels.max(initial=0) > 255:
            from ToothMCLCore.errors import InvalidInputError

            raise InvalidInputError(f"{segmentationNode.GetName()} holds label values above 255, which are "
                                    "not FDI numbers; relabel them first")
        corrected, entries = correctedLabels(labels, op, tooth, target, quadrant, step)
        return self._record(segmentationNode, labels, corrected.astype(labels.dtype),
                            _perElement(entries, segmentationNode))

    def relabelVertices(self, scanNode, vertexIndices, target) -> list[dict]:
        """Give the vertices ``vertexIndices`` of a labelled scan the label ``target`` (FDI or 0).

        Returns one diff entry per label the vertices had (``{"op": "relabel", "from", "to",
        "vertices"}``); an empty selection is an error, so that nothing silent happens.
        """
        from ToothMCLCore import fdi
        from ToothMCLCore.errors import InvalidInputError

        if not isScan(scanNode):
            raise InvalidInputError("relabelling vertices needs an intraoral scan; for a CBCT segmentation "
                                    "use the Segment Editor")
        target = _asNumber(target)
        if target is None or (target != 0 and not fdi.is_valid_fdi(target)):
            raise InvalidInputError(f"{target!r} is not a label for scan vertices; use 0 (gingiva) or an FDI "
                                    "number such as 36")
        labels = currentLabels(scanNode)
        indices = np.unique(np.asarray(vertexIndices, dtype=np.int64).ravel())
        if indices.size == 0:
            raise InvalidInputError("no vertex is selected; place the ROI box around the vertices to relabel")
        if indices[0] < 0 or indices[-1] >= labels.size:
            raise InvalidInputError(f"vertex indices must lie in 0..{labels.size - 1}; select vertices of this scan")
        corrected = labels.copy()
        corrected[indices] = target
        old, counts = np.unique(labels[indices], return_counts=True)
        entries = [{"op": "relabel", "from": int(a), "to": int(target), "vertices": int(c)}
                   for a, c in zip(old, counts) if int(a) != target]
        if not entries:
            raise InvalidInputError(f"the selected vertices already have label {target}; nothing to change")
        return self._record(scanNode, labels, corrected, entries)

    def applyClickTool(self, scanNode, tool: str, markupsNode, tooth=None, value=None, negativeNode=None,
                       radiusMm: float | None = None, model=None) -> list[dict]:
        """Fix a labelled scan with clicks (:mod:`.ClickTools`): ``add`` a missed tooth, ``split``
        two merged teeth, ``refine`` a tooth's boundary (``markupsNode`` positive clicks,
        ``negativeNode`` negative ones) or ``brush`` a ``value``; on a CBCT segmentation,
        ``add`` (one point; ``model`` the loaded CBCT predictor runs around it), ``split`` (one
        point in each tooth) and ``refine``. Undoable; the diff entry is the interaction (tool,
        clicks in RAS, numbers, time), saved with the correction.

        Raises:
            InvalidInputError: not a labelled scan, no clicks, or what the tool refuses (a click
                off the scan, on gingiva for a split, no model answer for an add); nothing changes.
        """
        from ToothMCLCore.errors import InvalidInputError

        from .ClickTools import runTool

        if scanNode is not None and not isScan(scanNode):
            return self._applyVolumeClickTool(scanNode, tool, markupsNode, tooth, negativeNode, model)
        if scanNode is None:
            raise InvalidInputError("select the segmentation or the labelled scan to fix")
        labels = currentLabels(scanNode)
        clicks, negative = _clicks(markupsNode), _clicks(negativeNode)
        corrected, interaction = runTool(scanNode, labels.astype(np.int64), tool, clicks, tooth=tooth, value=value,
                                         negative=negative, radiusMm=radiusMm)
        if not np.any(corrected != labels):
            raise InvalidInputError(f"the {tool} tool changed nothing here; place the clicks elsewhere")
        return self._record(scanNode, labels, corrected.astype(labels.dtype), [interaction.to_operation()])

    def _applyVolumeClickTool(self, segmentationNode, tool: str, markupsNode, tooth=None,
                              negativeNode=None, model=None) -> list[dict]:
        """A CBCT segmentation: ``add`` a missed tooth (one point, ``model`` run around it), ``split``
        two merged teeth (one point in each) or ``refine`` a tooth's boundary
        (:mod:`ToothMCLCore.interactive.cbct_tools`, on its input volume's voxels)."""
        from ToothMCLCore.errors import InvalidInputError
        from ToothMCLCore.interactive.cbct_tools import add_tooth, refine_tooth, split_tooth

        from .SegmentDisplay import INPUT_ROLE
        from .VolumeConversion import volumeFromNode

        if tool not in ("add", "split", "refine"):
            raise InvalidInputError(f"on a CBCT segmentation the click tools add a missed tooth, split two merged teeth "
                                    f"or move a tooth's boundary; {tool!r} works on intraoral scans for now (use the "
                                    "Segment Editor)")
        clicks, negative = _clicks(markupsNode), _clicks(negativeNode)
        if tool == "split" and len(clicks) != 2:
            raise InvalidInputError(f"the split tool takes one click in each of the two teeth (2); {len(clicks)} placed")
        if tool == "add" and len(clicks) != 1:
            raise InvalidInputError(f"the add tool takes one click in the missed tooth; {len(clicks)} placed")
        if tool == "refine" and tooth is None:
            raise InvalidInputError("say which tooth to refine (select it in the table)")
        volumeNode = segmentationNode.GetNodeReference(INPUT_ROLE)
        if volumeNode is None:
            raise InvalidInputError(f"{segmentationNode.GetName()} does not name the CBCT it was made from; segment the "
                                    "volume with this module to split its teeth")
        labels, ijkToRas = labelsFromSegmentation(segmentationNode)
        volume = volumeFromNode(volumeNode)
        if volume.array.shape != labels.shape or not np.allclose(volume.geometry.ijk_to_ras, ijkToRas, atol=1e-4):
            raise InvalidInputError("the segmentation no longer lies on its CBCT's grid; split the teeth in the Segment "
                                    "Editor")
        if tool == "add":
            corrected, interaction = add_tooth(volume, labels, clicks[0], model)
        elif tool == "split":
            corrected, interaction = split_tooth(volume, labels, clicks[0], clicks[1])
        else:
            corrected, interaction = refine_tooth(volume, labels, int(tooth), positive=clicks, negative=negative,
                                                  model=model)
        if not np.any(corrected != labels):
            raise InvalidInputError(f"the {tool} tool changed nothing here; place the clicks elsewhere")
        return self._record(segmentationNode, labels, corrected.astype(labels.dtype), [interaction.to_operation()])

    def _record(self, node, labels, corrected, entries) -> list[dict]:
        indices = np.flatnonzero(labels.ravel() != corrected.ravel())
        if node.GetID() not in self._steps:
            self._inherited[node.GetID()] = self.diff(node)
        _writeLabels(node, corrected)
        self._steps.setdefault(node.GetID(), []).append(
            _Step(entries, indices, labels.ravel()[indices], corrected.ravel()[indices]))
        self._writeDiff(node)
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
        labels = currentLabels(segmentationNode)
        flat = labels.ravel()
        flat[last.indices] = last.before
        _writeLabels(segmentationNode, labels)
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
