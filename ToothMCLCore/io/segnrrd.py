"""3D Slicer segmentation files (``.seg.nrrd``) with one named, coloured segment per tooth.

A ``.seg.nrrd`` is a NRRD label map with extra header fields (``Segment{n}_*``,
``Segmentation_*``) that tell Slicer each segment's name, colour, label value and terminology.
We write a single 3-D layer (teeth never overlap) whose label values are FDI numbers (99 for
metal; the label values of :mod:`ToothMCLCore.structures` for jaws, canals, sinuses, the airway
and restorations that some models segment too), on exactly the grid of the input volume, in the ``left-posterior-superior`` space that
Slicer itself writes. The format is documented at
https://slicer.readthedocs.io/en/latest/developer_guide/modules/segmentations.html

Arrays are indexed ``[k, j, i]``; :class:`Geometry` is RAS.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from .. import fdi, structures
from ..errors import InvalidInputError, ResourceLimitError
from ..types import LPS_TO_RAS, Geometry, Volume
from .atomic import atomic_path
from .labelmap import DEFAULT_MAX_BYTES, check_labelmap

logger = logging.getLogger(__name__)

#: terminology context of the segment types: SNOMED CT codes of DICOM CID 4018/4019/7157
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
TOOTH_CATEGORY = ("SCT", "85756007", "Tissue")
METAL_CATEGORY = ("SCT", "260787004", "Physical object")
METAL_TYPE = ("SCT", "27606000", "Dental prosthesis")  # DICOM CID 7157 device type
METAL_NAME = f"{fdi.METAL_LABEL} {fdi.label_name(fdi.METAL_LABEL)}"
#: prefix of provenance fields in the header: ``ToothMCL.model:=cbct_swinunetr_v1``
ATTRIBUTE_PREFIX = "ToothMCL."

_SNOMED_TO_FDI = {t.snomed_code: n for n, t in fdi.TEETH.items()}
_SNOMED_TO_FDI[METAL_TYPE[1]] = fdi.METAL_LABEL
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


def segment_name(value: int) -> str:
    """Segment name of a label value: ``"36 lower left first molar"``, ``"99 metal or ..."``,
    ``"left inferior alveolar canal"`` (a structure has no number: its value means nothing to a reader)."""
    if int(value) == fdi.METAL_LABEL:
        return METAL_NAME
    if structures.is_structure(value):
        return structures.structure(value).name
    return fdi.tooth(value).label


def terminology_entry(value: int) -> str:
    """Slicer ``TerminologyEntry`` string of a label value (SNOMED CT code of the tooth).

    Seven ``~``-separated fields: context, category, type, type modifier, anatomic context,
    anatomic region, anatomic region modifier; each code is ``scheme^value^meaning``.
    """
    modifier = ("", "", "")
    if int(value) == fdi.METAL_LABEL:
        category, kind = METAL_CATEGORY, METAL_TYPE
    elif structures.is_structure(value):
        s = structures.structure(value)
        category, kind, modifier = s.category, s.type, s.modifier or modifier
    else:
        t = fdi.tooth(value)
        category, kind = TOOTH_CATEGORY, ("SCT", t.snomed_code, t.snomed_meaning)
    return "~".join((TERMINOLOGY_CONTEXT, "^".join(category), "^".join(kind), "^".join(modifier),
                     ANATOMIC_CONTEXT, "^^", "^^"))


def _check_values(values) -> list[int]:
    values = sorted({int(v) for v in values})
    bad = [v for v in values if v != fdi.METAL_LABEL and not fdi.is_valid_fdi(v) and not structures.is_structure(v)]
    if bad:
        raise InvalidInputError(
            f"label values {bad[:10]} are not FDI tooth numbers, {fdi.METAL_LABEL} (metal) or structures "
            f"({', '.join(str(v) for v in sorted(structures.STRUCTURES))}); "
            "convert network class indices with fdi.class_index_to_fdi before writing"
        )
    return values


def write_seg_nrrd(
    path: str | os.PathLike,
    labels,
    geometry: Geometry | Volume,
    segments: list[int] | None = None,
    attributes: dict | None = None,
) -> Path:
    """Write a Slicer segmentation with one segment per tooth, atomically.

    Args:
        path: output ``.seg.nrrd`` path.
        labels: ``(K, J, I)`` integer array of FDI numbers, 0 background, 99 metal.
        geometry: RAS grid of the input volume (or the :class:`Volume`, whose shape must match).
        segments: label values to write as segments (also empty ones); voxels of other values
            become background. Default: every non-zero value present.
        attributes: provenance written as ``ToothMCL.<key>:=<value>`` header fields (e.g.
            model name, weights SHA-256, date); keys ``[A-Za-z0-9_.-]``, single-line ASCII values.

    Returns:
        the written path.

    Raises:
        InvalidInputError: labels do not fit the geometry, or hold values that are not FDI/99;
            bad attribute keys or values.
        OutputError: the folder does not exist or is not writable; nothing is left behind.
    """
    import nrrd

    arr, geom = check_labelmap(labels, geometry)
    present = _check_values(np.unique(arr[arr != 0]))
    if segments is None:
        values = present
    else:
        values = _check_values(segments)
        dropped = sorted(set(present) - set(values))
        if dropped:
            logger.info("seg.nrrd %s: label values %s not among segments; written as background",
                        path, dropped)
            arr = np.where(np.isin(arr, dropped), 0, arr)
    arr = arr.astype(np.uint8, copy=False)

    k, j, i = arr.shape
    header = {
        "space": "left-posterior-superior",
        # NRRD "space directions" lists one vector per file axis (i, j, k): rows, in LPS mm
        "space directions": (LPS_TO_RAS @ (geom.direction_ras * geom.spacing[None, :])).T,
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        "space origin": LPS_TO_RAS @ geom.origin_ras,
    }
    for n, value in enumerate(values):
        r, g, b = fdi.label_color(value)
        header.update({
            f"Segment{n}_Color": f"{r:.6g} {g:.6g} {b:.6g}",
            f"Segment{n}_ColorAutoGenerated": "0",
            # full extent for every segment: older Slicer crops a layer to its first segment's
            f"Segment{n}_Extent": f"0 {i - 1} 0 {j - 1} 0 {k - 1}",
            f"Segment{n}_ID": f"Segment_{value}",
            f"Segment{n}_LabelValue": str(value),
            f"Segment{n}_Layer": "0",
            f"Segment{n}_Name": segment_name(value),
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Tags": f"TerminologyEntry:{terminology_entry(value)}|",
        })
    header.update({
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_MasterRepresentation": "Binary labelmap",  # Slicer < 5.4
        "Segmentation_SourceRepresentation": "Binary labelmap",  # Slicer >= 5.4
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    })
    header.update(_attribute_fields(attributes or {}))

    with atomic_path(path) as tmp:
        nrrd.write(str(tmp), arr, header, index_order="C", compression_level=6)
    logger.info("wrote %s: %d segments %s, shape (K, J, I) %s",
                path, len(values), values, arr.shape)
    return Path(path)


def _attribute_fields(attributes: dict) -> dict[str, str]:
    fields = {}
    for key, value in attributes.items():
        key, text = str(key), str(value)
        if not _ATTRIBUTE_KEY.match(key):
            raise InvalidInputError(
                f"attribute key {key!r} must use only letters, digits, '_', '.', '-'; rename it"
            )
        if "\n" in text or "\r" in text or not text.isascii():
            raise InvalidInputError(
                f"attribute {key!r} must be single-line ASCII text (got {text[:40]!r}); "
                "encode it (e.g. as JSON with ensure_ascii=True) on one line"
            )
        fields[ATTRIBUTE_PREFIX + key] = text
    return fields


def read_seg_nrrd(
    path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES, strict: bool = True
) -> tuple[np.ndarray, Geometry, dict[int, str]]:
    """Read a Slicer segmentation as an FDI label map.

    Each segment's FDI number comes from the number its name starts with (``"36 ..."``), else
    from the SNOMED CT code of its terminology. Files saved by Slicer after editing may hold
    several layers (overlapping segments) and be cropped: the returned geometry is the file's
    own grid, which may be a sub-grid of the original volume.

    Args:
        path: a ``.seg.nrrd`` file.
        max_bytes: refuse files whose ``K * J * I * 4`` bytes exceed this.
        strict: if True, a segment whose FDI number cannot be found raises; if False it is
            dropped with a warning.

    Returns:
        ``(labels, geometry, names)``: ``(K, J, I) uint8`` FDI label map, RAS :class:`Geometry`,
        and ``{fdi: segment name}``.

    Raises:
        InvalidInputError: missing, unreadable or non-segmentation file; unknown segment.
        ResourceLimitError: the volume exceeds ``max_bytes``.
    """
    import nrrd

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"segmentation {p} does not exist; check the path")
    try:
        header = nrrd.read_header(str(p))
        sizes = [int(s) for s in header["sizes"]][-3:]
        if len(sizes) == 3 and int(np.prod(sizes, dtype=object)) * 4 > max_bytes:
            raise ResourceLimitError(
                f"{p.name} has {sizes[0]}x{sizes[1]}x{sizes[2]} voxels (limit {max_bytes} bytes "
                "as float32); crop or downsample the segmentation first"
            )
        voxels, header = nrrd.read(str(p), index_order="C")
    except ResourceLimitError:
        raise
    except Exception as exc:  # noqa: BLE001 (pynrrd raises NRRDError, ValueError, OSError, zlib.error, ...)
        raise InvalidInputError(
            f"{p} could not be read as a NRRD segmentation ({type(exc).__name__}: {exc}); "
            "save it again from Slicer as .seg.nrrd"
        ) from None
    if voxels.ndim not in (3, 4):
        raise InvalidInputError(
            f"{p.name} has {voxels.ndim} dimensions; expected a 3-D label map (or 4-D layers)"
        )
    geometry = _geometry_from_header(p, header)
    # C index order reverses every axis: a layered file (list, i, j, k) reads as (K, J, I, list)
    layers = np.moveaxis(voxels, -1, 0) if voxels.ndim == 4 else voxels[None]

    labels = np.zeros(layers.shape[1:], dtype=np.uint8)
    names: dict[int, str] = {}
    for seg in _segments(header):
        value = _segment_fdi(seg)
        if value is None:
            msg = (f"{p.name}: segment {seg.get('Name', seg.get('ID'))!r} has no FDI number; "
                   "rename it to start with the FDI number (e.g. '36 lower left first molar')")
            if strict:
                raise InvalidInputError(msg)
            logger.warning("%s; segment skipped", msg)
            continue
        mask = layers[int(seg.get("Layer", 0))] == int(seg.get("LabelValue", 1))
        if np.any(labels[mask] != 0):
            logger.warning("%s: segment %r overlaps other segments; it wins in the overlap",
                           p.name, seg.get("Name"))
        labels[mask] = value
        names.setdefault(value, seg.get("Name", segment_name(value)))
    return labels, geometry, names


def _geometry_from_header(path: Path, header: dict) -> Geometry:
    space = str(header.get("space", "")).lower()
    to_ras = {"left-posterior-superior": LPS_TO_RAS, "lps": LPS_TO_RAS,
              "right-anterior-superior": np.eye(3), "ras": np.eye(3)}.get(space)
    if to_ras is None or "space directions" not in header:
        raise InvalidInputError(
            f"{path.name} has no LPS/RAS space and space directions (space {space!r}); "
            "save it again from Slicer so that it carries its geometry"
        )
    directions = np.asarray(header["space directions"], dtype=np.float64)[-3:]  # rows: i, j, k
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    matrix = np.eye(4)
    matrix[:3, :3] = to_ras @ directions.T
    matrix[:3, 3] = to_ras @ origin
    return Geometry.from_ijk_to_ras(matrix)


def _segments(header: dict) -> list[dict[str, str]]:
    """Segment fields by index: ``[{"ID": ..., "Name": ..., "LabelValue": ..., ...}, ...]``."""
    found: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        m = re.match(r"^Segment(\d+)_(.+)$", key)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = str(value)
    return [found[n] for n in sorted(found)]


def _segment_fdi(seg: dict[str, str]) -> int | None:
    tags = [t.split(":", 1)[1] for t in seg.get("Tags", "").split("|") if t.startswith("TerminologyEntry:")]
    return label_value_of_segment(seg.get("Name", ""), tags[0] if tags else "")


def label_value_of_segment(name: str, terminology: str = "") -> int | None:
    """A segment's label value, or None: the FDI number (or 99) its name starts with, a
    structure's name (:mod:`ToothMCLCore.structures`), else the type code of its Slicer
    terminology entry (with the laterality modifier for a structure)."""
    m = re.match(r"^\s*(\d+)\b", name or "")
    if m and (fdi.is_valid_fdi(int(m.group(1))) or int(m.group(1)) == fdi.METAL_LABEL):
        return int(m.group(1))
    if (structure := structures.value_of_name(name or "")) is not None:
        return structure
    fields = (terminology or "").split("~")
    code = fields[2].split("^") if len(fields) > 2 else []
    modifier = fields[3].split("^") if len(fields) > 3 else []
    if len(code) > 1:
        if code[1] in _SNOMED_TO_FDI:
            return _SNOMED_TO_FDI[code[1]]
        return structures.value_of_code(code[1], modifier[1] if len(modifier) > 1 else "")
    return None
