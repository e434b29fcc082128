"""Teeth3DS / 3DTeethSeg'22 label files: one JSON per scan, one entry per mesh vertex.

The format (https://github.com/abenhamadou/3DTeethSeg22_challenge, README "Data") is exactly::

    {"id_patient": "6X24ILNE", "jaw": "upper", "labels": [0, 0, 14, ...], "instances": [0, 0, 3, ...]}

``labels`` holds the FDI number of every vertex of the OBJ, in file order, 0 for gingiva;
``instances`` numbers the teeth (any positive ids, 0 for gingiva). Files are read strictly
(exactly these four keys) so that a label file of another format or another scan is refused
with a message instead of being silently misread. Writing is atomic and keeps the key order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import fdi
from ..errors import InvalidInputError
from .atomic import atomic_write_text

logger = logging.getLogger(__name__)

#: the keys of a Teeth3DS label file, in the order they are written
KEYS = ("id_patient", "jaw", "labels", "instances")


@dataclass(frozen=True)
class Teeth3DSLabels:
    """Per-vertex labels of one scan.

    Attributes:
        id_patient: patient id ("" when unknown).
        jaw: "upper" or "lower".
        labels: (N,) int32 FDI number per vertex, 0 = gingiva.
        instances: (N,) int32 tooth instance per vertex, 0 = gingiva.
    """

    id_patient: str
    jaw: str
    labels: np.ndarray
    instances: np.ndarray

    @property
    def n_vertices(self) -> int:
        return len(self.labels)


def _int_array(values, key: str, source: str) -> np.ndarray:
    try:
        arr = np.asarray(values) if isinstance(values, (list, tuple, np.ndarray)) else None
    except ValueError:  # ragged nested lists
        arr = None
    ok = arr is not None and arr.ndim == 1 and (
        arr.size == 0 or arr.dtype.kind in "iu"
        or (arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all()))
    if not ok:
        raise InvalidInputError(f"{source}: {key!r} must be a flat list of integers, one per vertex "
                                f"(got {type(values).__name__}"
                                f"{'' if arr is None else f' of {arr.dtype} with shape {arr.shape}'})")
    return arr.astype(np.int32)


def validate_labels(labels, instances, jaw: str, n_vertices: int | None = None,
                    source: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Check per-vertex labels and instances of one jaw; return them as (N,) int32 arrays.

    Raises:
        InvalidInputError: not integers, lengths that differ from each other or from
            ``n_vertices`` (both numbers given), unknown FDI values, teeth of the other jaw,
            negative instances.
    """
    if jaw not in fdi.JAWS:
        raise InvalidInputError(f"{source}: jaw must be 'upper' or 'lower' (got {jaw!r})")
    labels = _int_array(labels, "labels", source)
    instances = _int_array(instances, "instances", source)
    if len(labels) != len(instances):
        raise InvalidInputError(f"{source}: 'labels' has {len(labels)} entries but 'instances' has "
                                f"{len(instances)}; both need one entry per mesh vertex")
    if n_vertices is not None and len(labels) != n_vertices:
        raise InvalidInputError(f"{source} has {len(labels)} labels but the mesh has {n_vertices} vertices; "
                                "the labels belong to another scan, or the mesh was re-saved or cleaned")
    values = np.unique(labels)
    unknown = [int(v) for v in values if v != 0 and not fdi.is_valid_fdi(int(v))]
    if unknown:
        raise InvalidInputError(f"{source}: labels {unknown[:10]} are not FDI tooth numbers; use 0 for "
                                "gingiva and 11-48 (51-85 primary) for teeth")
    other = [int(v) for v in values if v != 0 and fdi.jaw_of(int(v)) != jaw]
    if other:
        raise InvalidInputError(f"{source}: labels {other[:10]} are teeth of the other jaw, but jaw is "
                                f"{jaw!r}; check the 'jaw' entry or the labels")
    if len(instances) and instances.min() < 0:
        raise InvalidInputError(f"{source}: instances must be >= 0 (0 = gingiva), got {int(instances.min())}")
    mixed = [int(i) for i in np.unique(instances[instances > 0])
             if len(np.unique(labels[instances == i])) > 1]
    if mixed:
        logger.warning("%s: instances %s carry more than one label", source, mixed[:10])
    return labels, instances


def read_teeth3ds_json(path, n_vertices: int | None = None, jaw: str | None = None) -> Teeth3DSLabels:
    """Read and validate a Teeth3DS label file.

    Args:
        path: the ``.json`` file.
        n_vertices: vertex count of the mesh, as stored in its file (``MeshReadResult.n_file_vertices``).
        jaw: the jaw the mesh is known to show; a file saying otherwise is refused.

    Raises:
        InvalidInputError: missing file, invalid JSON, keys other than exactly
            ``id_patient, jaw, labels, instances``, or anything :func:`validate_labels` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"label file {path} does not exist; check the path")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path.name} is not valid JSON ({exc}); is it a Teeth3DS label file?") from exc
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{path.name} must hold a JSON object with keys {list(KEYS)}")
    missing = [k for k in KEYS if k not in doc]
    extra = sorted(set(doc) - set(KEYS))
    if missing or extra:
        raise InvalidInputError(f"{path.name} is not a Teeth3DS label file: expected exactly the keys "
                                f"{list(KEYS)}, missing {missing}, unexpected {extra}")
    if jaw is not None and doc["jaw"] != jaw:
        raise InvalidInputError(f"{path.name} labels the {doc['jaw']!r} jaw but the mesh is the {jaw!r} jaw; "
                                "pair each scan with its own label file")
    labels, instances = validate_labels(doc["labels"], doc["instances"], doc["jaw"], n_vertices, path.name)
    return Teeth3DSLabels(str(doc["id_patient"]), doc["jaw"], labels, instances)


def write_teeth3ds_json(path, labels, instances, jaw: str, id_patient: str = "",
                        n_vertices: int | None = None) -> None:
    """Write a Teeth3DS label file atomically, keys in the order ``id_patient, jaw, labels, instances``.

    Args:
        labels: (N,) FDI per file vertex, 0 = gingiva. instances: (N,) ids, 0 = gingiva; None
            numbers the teeth with :func:`instances_from_labels`.
    """
    if instances is None:
        instances = instances_from_labels(labels)
    labels, instances = validate_labels(labels, instances, jaw, n_vertices, Path(path).name)
    doc = {"id_patient": str(id_patient), "jaw": jaw, "labels": labels.tolist(),
           "instances": instances.tolist()}
    atomic_write_text(path, json.dumps(doc))
    logger.info("wrote %s (%d vertices, %d teeth)", path, len(labels), len(fdi.present_teeth(np.unique(labels))))


def instances_from_labels(labels) -> np.ndarray:
    """(N,) int32 instance ids: one per FDI tooth, 1..n in arch order from the patient's right
    (upper before lower), 0 for gingiva."""
    labels = np.asarray(labels).astype(np.int64)
    teeth = sorted(fdi.present_teeth(np.unique(labels)), key=lambda t: (fdi.jaw_of(t) != "upper",
                                                                        fdi.tooth(t).arch_index))
    lut = np.zeros(int(max(labels.max(initial=0), 0)) + 1, dtype=np.int32)
    for i, t in enumerate(teeth, start=1):
        lut[t] = i
    return lut[np.clip(labels, 0, None)]
