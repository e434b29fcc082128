"""Helpers the public-dataset converters share: file pairing, label tables, grids, jaws, votes."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...errors import InvalidInputError
from ...types import Volume

logger = logging.getLogger(__name__)

#: characters allowed in a case id (see :class:`~ToothMCLCore.io.dataset_records.CBCTRecord`)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: grids closer than this (mm, entries of the IJK-to-RAS matrix) are the same grid
GRID_ATOL_MM = 1e-3


def safe_id(text: str) -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9_.-]`` replaced by ``-``."""
    out = _UNSAFE.sub("-", str(text)).strip("-.")
    return out or "case"


def require_folder(path, dataset: str, expected: str) -> Path:
    """``path`` as a Path if it is a folder, else InvalidInputError naming the expected layout."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise InvalidInputError(f"{dataset} root {path} {what}; expected a folder holding {expected}")
    return path


def handle_unpaired(problems: list[str], dataset: str, skip: bool) -> None:
    """Raise for cases with a missing or ambiguous file, or log them when ``skip`` is set.

    Args:
        problems: one sentence per case, e.g. ``"imagesTr/X_0000.mha has no label labelsTr/X.mha"``.
    """
    if not problems:
        return
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    if skip:
        logger.warning("%s: leaving out %d incomplete cases: %s", dataset, len(problems), shown)
        return
    raise InvalidInputError(
        f"{dataset}: {len(problems)} cases are incomplete: {shown}; restore the missing files from the "
        "download, or pass --skip-unpaired (skip_unpaired=True) to leave these cases out"
    )


def integer_labels(array: np.ndarray, source: str) -> np.ndarray:
    """A label array as int64, refusing fractional, non-finite or negative values."""
    arr = np.asarray(array)
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == bool:
            return arr.astype(np.int64)
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InvalidInputError(
                f"{source}: label values must be whole numbers (got dtype {arr.dtype} with fractional "
                "or non-finite values); is this an image rather than a label map?"
            )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise InvalidInputError(f"{source}: label values must be >= 0 (found {int(arr.min())}); "
                                "is this an image rather than a label map?")
    return arr


def label_counts(labels: np.ndarray) -> dict[int, int]:
    """``{label value: voxel count}`` of the values present in a non-negative int64 array."""
    counts = np.bincount(labels.ravel()) if labels.size else np.zeros(1, np.int64)
    return {int(v): int(counts[v]) for v in np.nonzero(counts)[0]}


def apply_label_table(labels: np.ndarray, table: Mapping[int, int], source: str, dataset: str,
                      hint: str) -> tuple[np.ndarray, dict[int, int]]:
    """Map dataset label ids to our values (FDI, 0, 99) through ``table``.

    Args:
        labels: integer label array of any shape (see :func:`integer_labels`).
        table: dataset id -> our value, for every id the dataset defines.
        source: the file, for messages. dataset: its name. hint: where the table comes from.

    Returns:
        ``(mapped, counts)``: ``mapped`` uint8 with ``labels``' shape; ``counts`` the voxel (or
        vertex) count of every dataset id present.

    Raises:
        InvalidInputError: an id the table does not define.
    """
    labels = integer_labels(labels, source)
    counts = label_counts(labels)
    unknown = sorted(v for v in counts if v not in table)
    if unknown:
        raise InvalidInputError(
            f"{source}: label ids {unknown[:10]} are not in the {dataset} label table ({hint}); the file "
            f"is not a {dataset} label map or the release changed its labels: check the file, or convert "
            "its labels to FDI numbers yourself"
        )
    lut = np.zeros(max(counts) + 1, dtype=np.uint8)
    for key, value in table.items():
        if 0 <= key < len(lut):
            lut[key] = value
    return lut[labels], counts


def read_label_volume(path) -> Volume:
    """Read a label map with its RAS geometry, accepting what :func:`read_volume` refuses.

    :func:`~ToothMCLCore.io.volume.read_volume` rejects constant volumes (a sensible check for a
    CBCT), but a published label map may hold background only (a case without teeth). Labels
    keep the file's integer dtype.

    Raises:
        InvalidInputError: missing, unreadable, or not a 3-D scalar image.
    """
    import SimpleITK as sitk

    from ..volume import geometry_from_sitk

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"label file {path} does not exist; check the path")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"{path} could not be read as a label map ({detail}); the file may be "
                                "truncated or corrupt: copy or extract it again") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidInputError(
            f"{path.name} is a {image.GetDimension()}-D image with {image.GetNumberOfComponentsPerPixel()} "
            "components per voxel; expected a 3-D label map; check that this is the label file"
        )
    array = sitk.GetArrayFromImage(image)
    return Volume(array=array, geometry=geometry_from_sitk(image), source=str(path),
                  metadata={"format": path.suffix.lstrip(".")})


def check_same_grid(image: Volume, labels: Volume, label_path) -> None:
    """Refuse a label map whose shape or geometry differs from its image."""
    name = Path(label_path).name
    if labels.array.shape != image.array.shape:
        raise InvalidInputError(
            f"{name}: label map shape (K, J, I) {labels.array.shape} differs from its image "
            f"{image.array.shape} ({Path(image.source).name}); the files are not a pair: check the "
            "download, or resample the labels onto the image grid"
        )
    if not image.geometry.allclose(labels.geometry, atol=GRID_ATOL_MM):
        raise InvalidInputError(
            f"{name}: label map geometry (spacing {np.round(labels.geometry.spacing, 4).tolist()}, origin "
            f"{np.round(labels.geometry.origin_ras, 3).tolist()}) differs from its image "
            f"({np.round(image.geometry.spacing, 4).tolist()}, {np.round(image.geometry.origin_ras, 3).tolist()}); "
            "the files are not a pair: check the download, or resample the labels onto the image grid"
        )


def jaw_from_name(stem: str) -> str | None:
    """``"upper"``, ``"lower"`` or None from a file name without extension.

    Words first (``upper``/``maxilla``, ``lower``/``mandible``, any case), then a lone ``U`` or
    ``L`` token (``007_U``, ``UL01-L``), then a capital ``U``/``L`` ending the name (``PatientL``),
    then a name holding exactly one of the two capitals.
    """
    low = stem.lower()
    words = [jaw for jaw, keys in (("upper", ("upper", "maxill")), ("lower", ("lower", "mandib")))
             if any(k in low for k in keys)]
    if len(words) == 1:
        return words[0]
    if words:
        return None
    letter = {"U": "upper", "L": "lower"}
    for token in reversed(re.split(r"[^A-Za-z0-9]+", stem)):
        if token in letter:
            return letter[token]
    if stem[-1:] in letter:
        return letter[stem[-1:]]
    has_u, has_l = "U" in stem, "L" in stem
    if has_u != has_l:
        return "upper" if has_u else "lower"
    return None


def ios_record(case_id: str, patient_id: str, jaw: str, result, labels, instances=None, source: str = "",
               metadata: dict | None = None):
    """An :class:`IOSRecord` from a read mesh and labels on its *cleaned* vertices.

    Args:
        result: :class:`~ToothMCLCore.io.mesh.MeshReadResult` of the scan.
        labels: (N,) FDI per cleaned vertex (``result.mesh``), 0 = gingiva.
        instances: (N,) instance ids, or None to number the teeth in arch order.

    Raises:
        InvalidInputError: values that are not FDI numbers, or teeth of the other jaw.
    """
    from ...types import SurfaceMesh
    from ..dataset_records import IOSRecord
    from ..teeth3ds import instances_from_labels, validate_labels

    labels = np.asarray(labels, dtype=np.int32)
    if instances is None:
        instances = instances_from_labels(labels)
    labels, instances = validate_labels(labels, instances, jaw, result.mesh.n_vertices, Path(source).name)
    mesh = SurfaceMesh(result.mesh.vertices_ras, result.mesh.faces, labels, instances, jaw, source)
    meta = {"n_file_vertices": int(result.n_file_vertices), "n_vertices": int(mesh.n_vertices),
            "cleaning": list(result.notes),
            "teeth": [int(t) for t in np.unique(labels) if t > 0], **(metadata or {})}
    return IOSRecord(case_id=safe_id(case_id), patient_id=safe_id(patient_id), jaw=jaw, mesh=mesh,
                     labels=labels, instances=instances, source=source, metadata=meta)


def vertex_votes(n_vertices: int, faces: np.ndarray, face_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-vertex label by majority of the incident faces; ties go to the higher class index.

    Args:
        faces: (M, 3) int vertex indices. face_labels: (M,) int class index in ``0..n_classes-1``
            (index 0 should be gingiva, so a vertex on a tooth border tied between gingiva and
            a tooth joins the tooth).

    Returns:
        (n_vertices,) int64 class index; vertices no face uses get 0.
    """
    votes = np.zeros((n_vertices, n_classes), dtype=np.int64)
    for k in range(3):
        np.add.at(votes, (faces[:, k], face_labels), 1)
    return (n_classes - 1) - np.argmax(votes[:, ::-1], axis=1)
