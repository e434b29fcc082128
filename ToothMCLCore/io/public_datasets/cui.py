"""Cui et al. 2022 (Nature Communications) released CBCT -> :class:`CBCTRecord` with FDI labels.

"A fully automatic AI system for tooth and alveolar bone segmentation from cone-beam CT
images", https://github.com/ErdanC/Tooth-and-alveolar-bone-segmentation-from-CBCT (the paper's
Table A1 links ErdaNC/..., the same repository). Its README says the authors released "partial
CBCT data (about 150 scans) with GT annotation", sent by e-mail after a registration form; an
earlier README version gave ~50 scans on Baidu Pan. No file list, folder layout or label table
is published with the data, so everything below was read from public code that loads the
released archive (``NC-release-data``); **it is not confirmed by the authors**.

**Layout** (read in github.com/yykzjh/PMFSNet-old ``my-code/analyse.py``, which pairs
``NC-release-data/image/*.nii.gz`` with ``NC-release-data/label/*.nii.gz`` by file name and opens
e.g. ``label/X2313838.nii.gz`` and ``label/1000813648_20180116.nii.gz``; the README of
github.com/yykzjh/PMFSNet lists the same names)::

    NC-release-data/
        image/<name>.nii.gz     the CBCT
        label/<name>.nii.gz     its tooth label map, same file name, same grid

``images/`` and ``labels/`` are accepted too. Names are either ``X<digits>`` or
``<patient number>_<YYYYMMDD>``; we take the part before ``_<8 digits>`` as the patient, so two
scans of one patient on different dates share ``patient_id`` (inferred from the names).

**Labels.** The repository's own code treats label values as tooth instance ids (it loops over
``np.unique(label)`` and renumbers them), PMFSNet binarises them (``label > 0``), and a public
re-implementation
(github.com/1DreamCollector/Tooth-and-alveolar-bone-segmentation-from-CBCT-main, readme) says
it first had to relabel the teeth so that "each tooth position has a fixed label value". So the
released values are most likely **instance ids without FDI meaning**. What the converter does
(``numbering``):

- ``"auto"`` (default): if every non-zero value of a label map is an FDI number (11..48,
  51..85) or 99, the values are kept as FDI (e.g. a copy relabelled to FDI, as the ToothMCL
  authors did: "Labels were standardized to conform to the FDI numbering system when
  necessary"); otherwise the case is **refused** with a message naming the values;
- ``"fdi"``: the same check, for datasets known to be FDI;
- ``"arch-order"``: values are instance ids; each tooth is numbered from its centre: the jaw
  from the largest height gap between tooth centres (superior = upper; the file's RAS
  orientation must be right), the side from the midline between the two most anterior
  teeth, the position by order along the arch from that midline (1 = central incisor). This
  is **approximate**: a missing tooth shifts the numbers of the teeth behind it, so use it
  only when an approximate numbering is acceptable (tooth-group statistics, pretraining) and
  check the result. The record's metadata says ``"numbering": "arch-order (approximate)"``.

No alveolar-bone labels were found in the release; any non-tooth value makes the case fail
the FDI check above.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ... import fdi
from ...errors import InvalidInputError
from ...types import Geometry, Volume
from ..dataset_records import CBCTRecord
from ._common import (
    check_same_grid,
    handle_unpaired,
    integer_labels,
    label_counts,
    read_label_volume,
    require_folder,
    safe_id,
)

logger = logging.getLogger(__name__)

NAME = "Cui"
SOURCE = ("no published label table; layout from github.com/yykzjh/PMFSNet-old my-code/analyse.py "
          "(NC-release-data/image, label), "
          "instance ids per github.com/ErdanC/Tooth-and-alveolar-bone-segmentation-from-CBCT code (unverified)")
LAYOUT = "image/<name>.nii.gz and label/<name>.nii.gz (the NC-release-data archive)"
NUMBERINGS = ("auto", "fdi", "arch-order")
#: minimum height gap (mm) between the upper and the lower tooth centres for arch-order numbering
MIN_JAW_GAP_MM = 3.0
_ENDINGS = (".nii.gz", ".nii")
_DATED = re.compile(r"^(?P<patient>.+?)_(?P<date>\d{8})$")


def patient_of(name: str) -> str:
    """Patient id from a case name: ``1000813648_20180116`` -> ``1000813648``; else the name."""
    match = _DATED.match(name)
    return match.group("patient") if match else name


def _stem(path: Path) -> str | None:
    for ending in _ENDINGS:
        if path.name.lower().endswith(ending):
            return path.name[: -len(ending)]
    return None


def _subfolder(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise InvalidInputError(f"{root} has no {names[0]}/ folder; expected {LAYOUT}; point ROOT at the "
                            "extracted NC-release-data folder")


def find_cases(root, skip_unpaired: bool = False) -> list[tuple[str, Path, Path]]:
    """``[(name, image, label), ...]`` in name order.

    Raises:
        InvalidInputError: missing folders, no pairs, or unpaired files (unless ``skip_unpaired``).
    """
    root = require_folder(root, NAME, LAYOUT)
    image_dir, label_dir = _subfolder(root, ("image", "images")), _subfolder(root, ("label", "labels"))
    images = {s: p for p in sorted(image_dir.iterdir()) if (s := _stem(p)) is not None}
    labels = {s: p for p in sorted(label_dir.iterdir()) if (s := _stem(p)) is not None}
    problems = [f"{image_dir.name}/{images[n].name} has no label in {label_dir.name}/" for n in images
                if n not in labels]
    problems += [f"{label_dir.name}/{labels[n].name} has no image in {image_dir.name}/" for n in labels
                 if n not in images]
    handle_unpaired(problems, NAME, skip_unpaired)
    cases = [(n, images[n], labels[n]) for n in sorted(images) if n in labels]
    if not cases:
        raise InvalidInputError(f"{root}: no image/label pairs (.nii.gz) found; expected {LAYOUT}")
    return cases


def _is_fdi_map(values) -> bool:
    return all(v == 0 or v == fdi.METAL_LABEL or fdi.is_valid_fdi(v) for v in values)


def tooth_centres(labels: np.ndarray, geometry: Geometry, ids) -> np.ndarray:
    """(N, 3) RAS centre (mm) of each id's voxels; ``labels`` is indexed ``[k, j, i]``."""
    from scipy import ndimage

    ids = [int(i) for i in ids]
    kji = np.asarray(ndimage.center_of_mass(np.ones(labels.shape, bool), labels, ids), dtype=np.float64)
    ijk1 = np.c_[kji[:, ::-1], np.ones(len(ids))]
    return (geometry.ijk_to_ras @ ijk1.T).T[:, :3]


def arch_order_numbers(centres_ras: np.ndarray, source: str = "labels") -> np.ndarray:
    """FDI number of each tooth from its centre alone (approximate; see the module docstring).

    Args:
        centres_ras: (N, 3) float tooth centres in RAS mm (x to the patient's right, y anterior,
            z superior), N >= 2, both jaws or one.

    Returns:
        (N,) int64 FDI numbers.

    Raises:
        InvalidInputError: the jaws cannot be told apart, or a side has more than 8 teeth.
    """
    c = np.asarray(centres_ras, dtype=np.float64)
    if len(c) < 2:
        raise InvalidInputError(f"{source}: {len(c)} tooth instance; arch-order numbering needs at least 2")
    order = np.argsort(c[:, 2])
    gaps = np.diff(c[order, 2])
    split = int(np.argmax(gaps))
    if gaps[split] < MIN_JAW_GAP_MM:
        raise InvalidInputError(
            f"{source}: the tooth centres do not fall into an upper and a lower row (largest height gap "
            f"{gaps[split]:.1f} mm < {MIN_JAW_GAP_MM:g} mm); check the volume orientation or number the teeth "
            "by hand"
        )
    out = np.zeros(len(c), dtype=np.int64)
    for jaw, members in (("lower", order[: split + 1]), ("upper", order[split + 1:])):
        pts = c[members]
        front = np.argsort(-pts[:, 1])[:2]
        midline = float(pts[front, 0].mean()) if len(pts) > 1 else float(pts[0, 0]) - 1e-6
        behind = pts[:, 1].min() - 0.1 * max(float(np.ptp(pts[:, 1])), 1.0)
        angle = np.arctan2(pts[:, 0] - midline, pts[:, 1] - behind)  # > 0 on the patient's right
        for right in (True, False):
            side = np.nonzero(angle > 0 if right else angle <= 0)[0]
            if len(side) > 8:
                raise InvalidInputError(
                    f"{source}: {len(side)} teeth on the {'right' if right else 'left'} of the {jaw} jaw; "
                    "arch-order numbering allows 8 per quadrant: check the labels"
                )
            quadrant = {("upper", True): 1, ("upper", False): 2, ("lower", False): 3, ("lower", True): 4}[
                (jaw, right)]
            ranked = side[np.argsort(np.abs(angle[side]))]
            out[members[ranked]] = quadrant * 10 + np.arange(1, len(ranked) + 1)
    return out


def convert_labels(labels: np.ndarray, geometry: Geometry, numbering: str = "auto",
                   source: str = "labels") -> tuple[np.ndarray, dict]:
    """Our FDI label map from one released label map; see the module docstring.

    Returns:
        ``(labels uint8 (K, J, I), info)``; ``info`` holds ``numbering`` and, for arch-order,
        ``instance_to_fdi``.
    """
    if numbering not in NUMBERINGS:
        raise InvalidInputError(f"numbering must be one of {', '.join(NUMBERINGS)} (got {numbering!r})")
    arr = integer_labels(labels, source)
    values = sorted(v for v in label_counts(arr) if v != 0)
    if numbering in ("auto", "fdi"):
        if _is_fdi_map(values):
            return arr.astype(np.uint8), {"numbering": "fdi"}
        raise InvalidInputError(
            f"{source}: label values {values[:12]}{'...' if len(values) > 12 else ''} are not FDI numbers; "
            "the Cui et al. release most likely stores tooth instance ids, which do not say which tooth "
            "each one is. Pass numbering=arch-order (CLI: --option numbering=arch-order) to number the "
            "teeth by their place along the arch (approximate), or relabel them to FDI in 3D Slicer"
        )
    ids = np.asarray(values, dtype=np.int64)
    numbers = arch_order_numbers(tooth_centres(arr, geometry, ids), source)
    lut = np.zeros(int(arr.max()) + 1, dtype=np.uint8)
    lut[ids] = numbers
    return lut[arr], {"numbering": "arch-order (approximate)",
                      "instance_to_fdi": {str(int(i)): int(n) for i, n in zip(ids, numbers)}}


def iter_cui(root, *, numbering: str = "auto", skip_unpaired: bool = False) -> Iterator[CBCTRecord]:
    """Yield every labelled case of the Cui et al. release with FDI labels.

    Args:
        root: the extracted ``NC-release-data`` folder (``image/`` and ``label/`` inside).
        numbering: ``"auto"`` (default), ``"fdi"`` or ``"arch-order"``; see the module docstring.
        skip_unpaired: leave out an image without a label (or the reverse) instead of raising.

    Yields:
        :class:`CBCTRecord` per case in name order; ``patient_id`` from the name (see above).

    Raises:
        InvalidInputError: layout problems (before the first case is read), unreadable files,
            a label map off its image grid, or instance ids with ``numbering="auto"``.
    """
    if numbering not in NUMBERINGS:
        raise InvalidInputError(f"numbering must be one of {', '.join(NUMBERINGS)} (got {numbering!r})")
    cases = find_cases(root, skip_unpaired)
    from ..volume import read_volume

    for name, image_path, label_path in cases:
        image = read_volume(image_path)
        labels = read_label_volume(label_path)
        check_same_grid(image, labels, label_path)
        mapped, info = convert_labels(labels.array, image.geometry, numbering, label_path.name)
        if info["numbering"] != "fdi":
            logger.warning("%s: %s numbered by arch order (approximate): %s", NAME, label_path.name,
                           info["instance_to_fdi"])
        teeth = fdi.present_teeth(np.nonzero(np.bincount(mapped.ravel()))[0])
        yield CBCTRecord(
            case_id=safe_id(name), patient_id=safe_id(patient_of(name)), image=image,
            labels=Volume(array=mapped, geometry=image.geometry, source=str(label_path)),
            source=str(label_path), metadata={"dataset": NAME, "case": name, "teeth": teeth, **info},
        )
