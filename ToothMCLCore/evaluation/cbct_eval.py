"""Evaluate folders of CBCT label maps against ground truth: Dice per case and FDI tooth.

Files are paired by case name (:mod:`.pairing`): ``.seg.nrrd``, ``.nii.gz``, ``.nii``,
``.nrrd``, ``.mha``. Label values are FDI numbers; other non-zero values (metal 99, or jaw
bone, canals and sinuses in datasets such as ToothFairy2) are not teeth and count as
background; the report lists them.

**Grids.** Prediction and ground truth must lie on the same voxel grid: same shape
``(K, J, I)``, spacing within :data:`SPACING_RTOL`, direction within :data:`DIRECTION_ATOL`
and origin within :data:`ORIGIN_TOL_VOXELS` of a voxel. One exception: a ``.seg.nrrd`` saved
by 3D Slicer may be cropped to its segments, so when either file is a ``.seg.nrrd`` on the
same lattice (spacing and direction equal, origins a whole number of voxels apart, boxes
overlapping), both are placed on the union of their boxes with background outside the file,
and the report's notes say so.

**Which files are label maps.** Integer values (or floats that are all whole numbers),
none negative, at most :data:`MAX_DISTINCT_VALUES` distinct values: a CBCT image, a
probability map or a distance map is refused with a message that says which rule it broke.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import fdi
from ..errors import InvalidInputError
from ..io.atomic import full_suffix
from ..io.volume import DEFAULT_MAX_BYTES
from ..types import Geometry
from .pairing import CBCT_LABEL_SUFFIXES, pair_cases
from .results import CaseScore, Evaluation, check_has_teeth, score_teeth, slabs

logger = logging.getLogger(__name__)

#: relative tolerance on voxel spacing between prediction and ground truth
SPACING_RTOL = 1e-4
#: tolerance on the direction cosines
DIRECTION_ATOL = 1e-4
#: tolerance on the origin, in voxels (of the smallest spacing)
ORIGIN_TOL_VOXELS = 0.01
#: a tooth label map holds a few dozen values at most (52 FDI numbers, 0, 99, a few others)
MAX_DISTINCT_VALUES = 100


@dataclass
class LabelMap:
    """A label map as read for evaluation.

    Attributes:
        array: (K, J, I) uint8 or uint16 label values.
        geometry: RAS grid of the file.
        path: the file.
        may_be_cropped: True for ``.seg.nrrd`` (Slicer may save a sub-box of the grid).
        other_values: non-zero values that are not FDI teeth (treated as background).
    """

    array: np.ndarray
    geometry: Geometry
    path: Path
    may_be_cropped: bool
    other_values: tuple[int, ...]


def _not_a_label_map(path: Path, why: str) -> InvalidInputError:
    return InvalidInputError(f"{path} is not a label map: {why}; expected integer FDI tooth numbers "
                             "(0 background) on the CBCT grid; is this the CBCT image or a probability map?")


def _check_label_values(path: Path, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The array as uint8/uint16 (no copy when it already is) and its distinct values.

    Raises:
        InvalidInputError: what is not a label map (see the module docstring).
    """
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise _not_a_label_map(path, f"its voxels are of type {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise _not_a_label_map(path, "it holds NaN or infinite values")
        frac = array != np.round(array)
        if frac.any():
            raise _not_a_label_map(path, f"it holds fractional values (e.g. {float(array[frac][0]):.4g})")
    lo, hi = (array.min(), array.max()) if array.size else (0, 0)
    if lo < 0:
        raise _not_a_label_map(path, f"it holds negative values (minimum {lo:g})")
    if hi > 65535:
        raise _not_a_label_map(path, f"it holds values up to {hi:g} (FDI numbers are at most 85)")
    out = array.astype(np.uint8 if hi <= 255 else np.uint16, copy=False)
    counts = np.zeros(int(hi) + 1, dtype=np.int64)
    for slab in slabs(out):
        counts += np.bincount(slab.ravel(), minlength=len(counts))
    distinct = int(np.count_nonzero(counts))
    if distinct > MAX_DISTINCT_VALUES:
        raise _not_a_label_map(path, f"it holds {distinct} distinct values (a tooth label map has at most "
                                     f"{MAX_DISTINCT_VALUES})")
    return out, np.flatnonzero(counts)


def read_label_map(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> LabelMap:
    """Read a label map for evaluation (an all-background map is fine, unlike a CBCT image).

    Raises:
        InvalidInputError: missing, unreadable or truncated file; not 3-D; not a label map.
        ResourceLimitError: the volume exceeds ``max_bytes`` as float32.
    """
    from ..io.volume import geometry_from_sitk, read_image_file

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"label file {p} does not exist; check the path")
    suffix = full_suffix(p)
    if suffix == ".seg.nrrd":
        from ..io.segnrrd import read_seg_nrrd

        array, geometry, _ = read_seg_nrrd(p, max_bytes=max_bytes)
    else:
        import SimpleITK as sitk

        image = read_image_file(p, max_bytes)
        array, geometry = sitk.GetArrayFromImage(image), geometry_from_sitk(image)
    array, present = _check_label_values(p, array)
    other = tuple(int(v) for v in present if v != 0 and not fdi.is_valid_fdi(int(v)))
    return LabelMap(array, geometry, p, suffix == ".seg.nrrd", other)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in np.ravel(values)) + ")"


def _grid_differences(pred: LabelMap, truth: LabelMap) -> dict[str, str]:
    """{"shape"|"spacing"|"direction"|"origin": what differs}; empty when the grids match."""
    gp, gt = pred.geometry, truth.geometry
    diffs = {}
    if pred.array.shape != truth.array.shape:
        diffs["shape"] = f"shape (K, J, I) {pred.array.shape} vs {truth.array.shape}"
    if not np.allclose(gp.spacing, gt.spacing, rtol=SPACING_RTOL, atol=0):
        diffs["spacing"] = f"spacing {_fmt(gp.spacing)} vs {_fmt(gt.spacing)} mm"
    if not np.allclose(gp.direction_ras, gt.direction_ras, rtol=0, atol=DIRECTION_ATOL):
        diffs["direction"] = f"direction {_fmt(gp.direction_ras)} vs {_fmt(gt.direction_ras)}"
    if np.max(np.abs(gp.origin_ras - gt.origin_ras)) > ORIGIN_TOL_VOXELS * gt.spacing.min():
        diffs["origin"] = f"origin (RAS) {_fmt(gp.origin_ras)} vs {_fmt(gt.origin_ras)} mm"
    return diffs


def align(pred: LabelMap, truth: LabelMap, case: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The two arrays on one grid, and a note ("" unless a ``.seg.nrrd`` sub-box was placed).

    Raises:
        InvalidInputError: the grids differ (and are not a ``.seg.nrrd`` sub-box case).
    """
    diffs = _grid_differences(pred, truth)
    if not diffs:
        return pred.array, truth.array, ""
    same_lattice = "spacing" not in diffs and "direction" not in diffs
    if same_lattice and (pred.may_be_cropped or truth.may_be_cropped):
        ijk = (truth.geometry.ras_to_ijk @ np.r_[pred.geometry.origin_ras, 1.0])[:3]
        offset_ijk = np.round(ijk)
        off = offset_ijk[::-1].astype(int)  # (k, j, i) of the prediction's first voxel on the truth grid
        overlap = np.all(np.maximum(0, off) < np.minimum(truth.array.shape, off + np.array(pred.array.shape)))
        if overlap and np.all(np.abs(ijk - offset_ijk) <= ORIGIN_TOL_VOXELS):
            lo = np.minimum(0, off)
            hi = np.maximum(truth.array.shape, off + np.array(pred.array.shape))
            shape = tuple(int(v) for v in hi - lo)
            out = []
            for arr, start in ((pred.array, off - lo), (truth.array, -lo)):
                full = np.zeros(shape, dtype=np.uint16)
                full[tuple(slice(int(s), int(s) + n) for s, n in zip(start, arr.shape))] = arr
                out.append(full)
            which = "prediction" if pred.may_be_cropped else "ground truth"
            note = (f"the {which} .seg.nrrd covers another box of the same voxel lattice; voxels outside a "
                    "file count as background")
            return out[0], out[1], note
    raise InvalidInputError(f"{case}: prediction {pred.path.name} and ground truth {truth.path.name} are "
                            f"not on the same voxel grid ({'; '.join(diffs.values())}); resample the "
                            "prediction onto the grid of the ground truth (the CBCT both were made from) "
                            "before evaluating")


def evaluate_cbct_folders(truth_dir, prediction_dirs: dict[str, str | os.PathLike],
                          progress=None) -> Evaluation:
    """Dice per case and FDI tooth of every method's predictions against the ground truth.

    Args:
        truth_dir: folder of ground-truth label maps.
        prediction_dirs: {method name: folder of predicted label maps}, in report column order
            (the first method is the reference of the paired t-tests).
        progress: optional ``callable(stage: str, fraction: float)``.

    Raises:
        InvalidInputError: unpaired cases, unreadable files, files that are not label maps,
            grids that differ, or no ground-truth tooth in any case.
    """
    pairs = pair_cases(truth_dir, prediction_dirs, CBCT_LABEL_SUFFIXES)
    scores, boxed = [], []
    other: dict[str, dict[int, set]] = {}
    steps = len(pairs) * len(prediction_dirs)
    for i, (case, truth_path, preds) in enumerate(pairs):
        truth = read_label_map(truth_path)
        for value in truth.other_values:
            other.setdefault("ground truth", {}).setdefault(value, set()).add(case)
        for j, (method, pred_path) in enumerate(preds.items()):
            if progress:
                progress("evaluating", (i * len(preds) + j) / steps)
            pred = read_label_map(pred_path)
            for value in pred.other_values:
                other.setdefault(method, {}).setdefault(value, set()).add(case)
            p, t, note = align(pred, truth, case)
            case_notes = (note,) if note else ()
            if note:
                boxed.append(f"{case} ({method})")
            scores.append(CaseScore(case, method, score_teeth(p, t), {},
                                    str(pred_path), str(truth_path), case_notes))
    if progress:
        progress("evaluating", 1.0)
    dirs = {m: str(Path(d).resolve()) for m, d in prediction_dirs.items()}
    evaluation = Evaluation("cbct", tuple(prediction_dirs), dirs, str(Path(truth_dir).resolve()), scores,
                            "voxels")
    if boxed:
        evaluation.notes.append(f"{len(boxed)} pair(s) had a .seg.nrrd covering another box of the same "
                                "voxel lattice; both were placed on the union of the boxes, background "
                                f"outside a file: {', '.join(boxed[:10])}{' ...' if len(boxed) > 10 else ''}")
    check_has_teeth(evaluation)
    evaluation.notes.extend(other_value_notes(other))
    return evaluation


def other_value_notes(other: dict[str, dict[int, set]]) -> list[str]:
    """One sentence per source listing its non-tooth label values and in how many cases."""
    out = []
    for source, values in other.items():
        listed = ", ".join(f"{v} ({fdi.label_name(v) if v == fdi.METAL_LABEL else 'not FDI'}, "
                           f"{len(cases)} case{'s' if len(cases) != 1 else ''})"
                           for v, cases in sorted(values.items()))
        out.append(f"{source}: label values that are not teeth, counted as background: {listed}")
    return out
