"""What a saved correction holds, and the checks every save passes before anything is written."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import fdi, structures
from ..errors import InvalidInputError
from ..types import Geometry
from .diff import label_counts

MODALITIES = ("cbct", "ios")
#: keys of the model dict that name the model, its version and its SHA-256, first match wins
MODEL_KEYS = {"name": ("model", "name", "model_name"), "version": ("model_version", "version"),
              "sha256": ("model_sha256", "sha256")}
MAX_CASE_ID = 200


@dataclass(frozen=True)
class Revision:
    """Metadata of one saved revision of a case (what the index row and ``meta.json`` hold).

    Attributes:
        case_id: the case (one input scan), as given to :meth:`CorrectionStore.save`.
        revision: 1, 2, ... in the order the saves committed.
        modality: ``"cbct"`` (labels ``(K, J, I)`` voxels) or ``"ios"`` (labels ``(N,)`` vertices).
        created_utc: ISO 8601 UTC time of the save, e.g. ``"2026-01-01T12:00:00+00:00"``.
        annotator, note: who corrected it, free text.
        model_name, model_version, model_sha256: the model that made the prediction.
        model: the whole model/provenance dict given to ``save`` (JSON types).
        input_path: the input's path as given ("" when none); input_sha256: its SHA-256 ("" if unknown).
        input_copy: the copy of the input inside the store, relative to the store ("" if not copied).
        shape: ``(K, J, I)`` for CBCT, ``(N,)`` for IOS.
        geometry: RAS voxel grid of the labels (CBCT), None for IOS.
        jaw: ``"upper"``/``"lower"`` for IOS when known, else None.
        unit: ``"voxels"`` or ``"vertices"``: what the counts of ``tooth_diff`` count.
        tooth_diff: per-tooth changes prediction -> corrected, computed by the store
            (see :mod:`ToothMCLCore.corrections.diff`).
        operations: the annotator's operations as the caller recorded them (its ``diff``).
        files: file name in the revision folder -> SHA-256, checked by ``check``.
        folder: the revision folder, relative to the store.
        patient_id: the patient the scan belongs to (dataset splits keep a patient's cases
            together); the case id when the save gave none, and in stores written before
            patient ids were kept.
    """

    case_id: str
    revision: int
    modality: str
    created_utc: str
    annotator: str
    note: str
    model_name: str
    model_version: str
    model_sha256: str
    model: dict
    input_path: str
    input_sha256: str
    input_copy: str
    shape: tuple
    geometry: Geometry | None
    jaw: str | None
    unit: str
    tooth_diff: list = field(default_factory=list)
    operations: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    folder: str = ""
    patient_id: str = ""

    def to_dict(self) -> dict:
        """JSON-serialisable dict (geometry as ``Geometry.to_dict()``, shape as a list)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["shape"] = list(self.shape)
        d["geometry"] = self.geometry.to_dict() if self.geometry is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Revision:
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        d["geometry"] = Geometry(**d["geometry"]) if d.get("geometry") else None
        d["patient_id"] = d.get("patient_id") or d["case_id"]  # stores older than patient ids
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    @property
    def changed_teeth(self) -> list[dict]:
        """Entries of :attr:`tooth_diff` that are not ``unchanged``."""
        return [e for e in self.tooth_diff if e["change"] != "unchanged"]


@dataclass(frozen=True)
class LoadedRevision:
    """A revision with its label arrays.

    Attributes:
        revision: its :class:`Revision` metadata.
        prediction: the model's labels, ``(K, J, I)`` uint8 (CBCT) or ``(N,)`` uint8 (IOS).
        corrected: the corrected labels, same shape and dtype.
        vertices_ras: ``(N, 3)`` float64 vertex positions when saved with the IOS labels, else None.
    """

    revision: Revision
    prediction: np.ndarray
    corrected: np.ndarray
    vertices_ras: np.ndarray | None = None

    @property
    def geometry(self) -> Geometry | None:
        return self.revision.geometry


@dataclass(frozen=True)
class CaseSummary:
    """One line of :meth:`CorrectionStore.cases`."""

    case_id: str
    modality: str
    revisions: int
    last_annotator: str
    last_created_utc: str


def to_json_types(value):
    """``value`` with numpy scalars/arrays, paths and other objects turned into JSON types."""
    return json.loads(json.dumps(value, default=_json_default, allow_nan=False))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def check_case_id(case_id) -> str:
    text = str(case_id if case_id is not None else "").strip()
    if not text or len(text) > MAX_CASE_ID or any(ord(c) < 32 for c in text):
        raise InvalidInputError(
            f"case id must be 1-{MAX_CASE_ID} printable characters (got {case_id!r}); "
            "use the input scan's name, e.g. 'case_017'"
        )
    return text


def check_patient_id(patient_id, case_id: str) -> str:
    """The patient id to keep: ``patient_id`` checked like a case id, or ``case_id`` when None/""."""
    if patient_id is None or (isinstance(patient_id, str) and not patient_id.strip()):
        return case_id
    text = str(patient_id).strip()
    if len(text) > MAX_CASE_ID or any(ord(c) < 32 for c in text):
        raise InvalidInputError(
            f"patient id must be 1-{MAX_CASE_ID} printable characters (got {patient_id!r}); "
            "use the pseudonymised patient number, e.g. 'P0042', or leave it out"
        )
    return text


def check_labels(name: str, labels, modality: str, jaw: str | None) -> np.ndarray:
    """Validate one label array; returns it as uint8 (values are at most 99).

    Raises:
        InvalidInputError: missing, wrong dimension, not integers, or values that are not
            0, an FDI number, or (CBCT only) 99 for metal; IOS teeth of the other jaw.
    """
    want = "(K, J, I) voxels" if modality == "cbct" else "(N,) vertices"
    if labels is None:
        raise InvalidInputError(f"{name} labels are missing; pass a {want} array of FDI label values")
    arr = np.asarray(labels)
    if arr.ndim != (3 if modality == "cbct" else 1) or arr.size == 0:
        raise InvalidInputError(
            f"{name} labels must be a non-empty {want} array for {modality.upper()} "
            f"(got shape {arr.shape}); pass the full label {'map' if modality == 'cbct' else 'array'}"
        )
    if arr.dtype.kind not in "iu":
        ok = arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr)))
        if not ok:
            raise InvalidInputError(
                f"{name} labels must be integer label values (got dtype {arr.dtype}); "
                "round or argmax the network output first"
            )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 255:
        raise InvalidInputError(
            f"{name} labels hold values {lo}..{hi}; expected 0, FDI tooth numbers"
            f"{' and 99 (metal)' if modality == 'cbct' else ''}"
        )
    arr = arr.astype(np.uint8)
    present = np.nonzero(label_counts(arr))[0].tolist()
    allowed = set(fdi.TEETH) | {0} | ({fdi.METAL_LABEL, *structures.STRUCTURES} if modality == "cbct" else set())
    bad = [v for v in present if v not in allowed]
    if bad:
        raise InvalidInputError(
            f"{name} labels hold values {bad[:10]} that are not FDI tooth numbers; expected 0 "
            f"(background), 11-48 or 51-85 (teeth)"
            f"{', 99 (metal), the values of ToothMCLCore.structures' if modality == 'cbct' else ''}; "
            "convert the labels to FDI numbers (see ToothMCLCore.fdi)"
        )
    if jaw is not None:
        other = [v for v in present if v in fdi.TEETH and fdi.jaw_of(v) != jaw]
        if other:
            raise InvalidInputError(
                f"{name} labels hold teeth {other[:10]} of the other jaw, but jaw is {jaw!r}; "
                "check the jaw or the labels"
            )
    return arr


def check_model(model) -> tuple[dict, str, str, str]:
    """``(model dict in JSON types, name, version, sha256)``; a model needs at least a name."""
    if not isinstance(model, Mapping):
        raise InvalidInputError(
            f"model must be a dict describing the model that made the prediction (got "
            f"{type(model).__name__}); pass e.g. {{'model': 'cbct_swinunetr_v1', 'model_version': "
            "'1.0.0', 'model_sha256': '...'}} (the prediction's provenance)"
        )
    clean = to_json_types(dict(model))
    found = {k: next((str(clean[key]) for key in keys if clean.get(key) not in (None, "")), "")
             for k, keys in MODEL_KEYS.items()}
    if not found["name"]:
        raise InvalidInputError(
            f"model dict names no model (keys {sorted(clean)}); add 'model': '<registry name>' "
            "(the prediction's provenance has it)"
        )
    return clean, found["name"], found["version"], found["sha256"]


def check_operations(diff) -> list:
    """The caller's diff (list of dicts, e.g. ``{"op", "from", "to", "voxels"}``) in JSON types."""
    if diff is None:
        return []
    if not isinstance(diff, (list, tuple)) or not all(isinstance(e, Mapping) for e in diff):
        raise InvalidInputError(
            f"diff must be a list of dicts, one per correction operation (got {type(diff).__name__}); "
            "pass e.g. [{'op': 'swap', 'from': 44, 'to': 45}] or None"
        )
    return to_json_types([dict(e) for e in diff])


def check_vertices(vertices, n: int) -> np.ndarray | None:
    """``(N, 3)`` float64 finite vertex positions matching ``n`` labels, or None."""
    if vertices is None:
        return None
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape != (n, 3) or not np.all(np.isfinite(v)):
        raise InvalidInputError(
            f"vertices must be a finite (N, 3) array with one row per label (N = {n}, got shape "
            f"{v.shape}); pass the mesh's vertex positions in file order"
        )
    return v


def check_geometry(geometry, modality: str) -> Geometry | None:
    if modality == "ios":
        if geometry is not None:
            raise InvalidInputError("IOS labels are per vertex and have no voxel geometry; pass geometry=None")
        return None
    if not isinstance(geometry, Geometry):
        raise InvalidInputError(
            f"CBCT labels need the input volume's Geometry (got {type(geometry).__name__}); pass "
            "geometry=volume.geometry (or Geometry.from_ijk_to_ras(matrix))"
        )
    return geometry


def check_modality(modality, jaw) -> tuple[str, str | None]:
    if modality not in MODALITIES:
        raise InvalidInputError(f"modality must be 'cbct' or 'ios' (got {modality!r})")
    if jaw is not None and (modality == "cbct" or jaw not in fdi.JAWS):
        raise InvalidInputError(
            f"jaw must be None for CBCT and 'upper', 'lower' or None for IOS (got {jaw!r} for {modality})"
        )
    return modality, jaw


def check_input_shape(input_path: Path, shape: tuple, geometry: Geometry, logger) -> None:
    """Refuse CBCT labels whose shape differs from the input image (header read only)."""
    from ..io.atomic import full_suffix
    from ..io.volume import READ_SUFFIXES, geometry_from_sitk

    if not input_path.is_file() or full_suffix(input_path) not in READ_SUFFIXES:
        return
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(input_path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        logger.debug("could not read the header of %s; shape not checked", input_path)
        return
    if reader.GetDimension() != 3:
        return
    size_kji = tuple(reversed(reader.GetSize()))
    if size_kji != tuple(shape):
        raise InvalidInputError(
            f"labels have shape (K, J, I) {tuple(shape)} but the input {input_path.name} has {size_kji}; "
            "the labels belong to another scan, or were resampled: save labels on the input grid"
        )
    direction = np.asarray(reader.GetDirection()).reshape(3, 3)
    if np.allclose(direction.T @ direction, np.eye(3), atol=1e-3) and all(
            s > 0 and math.isfinite(s) for s in reader.GetSpacing()):
        image_geometry = geometry_from_sitk(reader)
        if not image_geometry.allclose(geometry, atol=1e-3):
            logger.warning("the geometry given for %s differs from its file header; the given one is stored",
                           input_path.name)
