"""TADPM orthodontic dataset (1,060 pre/post-treatment pairs, 435 patients) -> :class:`IOSRecord`.

The dataset of "Automatic tooth arrangement with joint features of point and mesh
representations via diffusion probabilistic models" (Lei et al., CAGD 2024;
https://github.com/lcshhh/TADPM, given on request under a data use agreement; also described in
Wang et al., "A 3D dental model dataset with pre/post-orthodontic treatment for automatic tooth
alignment", Sci Data 11, 1277, 2024). The repository publishes no description of the files;
**the layout below is the one its own preprocessing script reads**,
``data_preprocess/get_mesh.py`` (commit 92967a6, ``get_labels``/``__main__``); the data use
agreement and the Sci Data data records were not readable here::

    <root>/<patient>/ori/     pre-treatment: upper and lower STL + one label JSON per jaw
    <root>/<patient>/final/   post-treatment (the planned set-up), same files

- meshes: the STL whose name holds ``U`` (else ``upper``) is the upper jaw, ``L`` (``lower``) the
  lower jaw (the script globs ``*U*.stl`` / ``*L*.stl``, then ``*upper*.stl`` / ``*lower*.stl``);
- labels: ``upper_pred_landmarks.json`` / ``lower_pred_landmarks.json`` (else ``*U*.json`` /
  ``*L*.json``) holding ``{"segmentation": {"<FDI>": {"vertices": [[x, y, z], ...]}, ...}}``:
  for every tooth, keyed by its FDI number as a string (the script reads keys ``"11"``..``"28"``
  for the upper and ``"31"``..``"48"`` for the lower jaw), the coordinates of the mesh vertices
  that belong to it.

**Our mapping**: every listed point labels its nearest mesh vertex (the script's
``mesh.closest_point``) with the key's FDI number; all other vertices are gingiva (0). Keys are
FDI numbers already. Keys of the other jaw are ignored as the script ignores them (logged);
``"0"`` is gingiva; any other key is refused. Label points farther than
:data:`MAX_POINT_DISTANCE_MM` from the mesh (95th percentile) mean the label file belongs to
another mesh and are refused.

**Patients**: the ``<patient>`` folder; its ``ori`` and ``final`` models (both jaws) share
``patient_id`` so a split never puts a patient's set-up in test and its scan in train.
``case_id`` is ``<patient>_<ori|final>_<jaw>``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ... import fdi
from ...errors import InvalidInputError
from ..dataset_records import IOSRecord
from ._common import handle_unpaired, ios_record, jaw_from_name, require_folder

logger = logging.getLogger(__name__)

NAME = "TADPM"
SOURCE = "github.com/lcshhh/TADPM data_preprocess/get_mesh.py (layout, JSON 'segmentation' keyed by FDI)"
LAYOUT = "<patient>/ori/ and <patient>/final/ each with upper/lower STL and <jaw>_pred_landmarks.json"
STAGES = ("ori", "final")
#: 95th percentile of label-point to mesh distances above which a label file is refused (mm)
MAX_POINT_DISTANCE_MM = 0.5


def _by_jaw(paths: list[Path]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {"upper": [], "lower": []}
    for path in paths:
        jaw = jaw_from_name(path.stem)
        if jaw:
            out[jaw].append(path)
    return out


def _label_files(folder: Path) -> dict[str, list[Path]]:
    named = {jaw: folder / f"{jaw}_pred_landmarks.json" for jaw in ("upper", "lower")}
    found = _by_jaw(sorted(p for p in folder.iterdir() if p.suffix.lower() == ".json"))
    return {jaw: [named[jaw]] if named[jaw].is_file() else found[jaw] for jaw in named}


def find_cases(root, stages=STAGES, skip_unpaired: bool = False) -> list[tuple[str, str, str, Path, Path]]:
    """``[(patient, stage, jaw, stl, json), ...]`` in patient, stage, jaw order.

    Raises:
        InvalidInputError: no patient folders, unknown stages, or missing/ambiguous files
            (unless ``skip_unpaired``).
    """
    root = require_folder(root, NAME, LAYOUT)
    stages = tuple(stages)
    if not stages or any(s not in STAGES for s in stages):
        raise InvalidInputError(f"stages must be among {STAGES} (got {stages!r})")
    patients = sorted(d for d in root.iterdir() if d.is_dir() and any((d / s).is_dir() for s in STAGES))
    if not patients:
        raise InvalidInputError(f"{root}: no patient folder with ori/ or final/ inside; expected {LAYOUT}")
    cases, problems = [], []
    for patient in patients:
        for stage in stages:
            folder = patient / stage
            if not folder.is_dir():
                problems.append(f"{patient.name}/ has no {stage}/ folder")
                continue
            meshes = _by_jaw(sorted(p for p in folder.iterdir() if p.suffix.lower() == ".stl"))
            labels = _label_files(folder)
            for jaw in ("upper", "lower"):
                where = f"{patient.name}/{stage}"
                if len(meshes[jaw]) != 1 or len(labels[jaw]) != 1:
                    problems.append(f"{where} has {len(meshes[jaw])} {jaw} STL and {len(labels[jaw])} {jaw} "
                                    "label files (expected one each)")
                    continue
                cases.append((patient.name, stage, jaw, meshes[jaw][0], labels[jaw][0]))
    handle_unpaired(problems, NAME, skip_unpaired)
    return cases


def vertex_labels(vertices_ras: np.ndarray, label_path, jaw: str) -> tuple[np.ndarray, dict]:
    """Per-vertex FDI labels of a mesh from a TADPM label file; see the module docstring.

    Args:
        vertices_ras: (N, 3) mesh vertices in the file's coordinates (mm).

    Returns:
        ``((N,) int32 labels, info)``; info holds the label-point distances and ignored keys.
    """
    from scipy.spatial import cKDTree

    label_path = Path(label_path)
    try:
        doc = json.loads(label_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{label_path} is not valid JSON ({exc}); restore it from the download") from None
    seg = doc.get("segmentation") if isinstance(doc, dict) else None
    if not isinstance(seg, dict):
        raise InvalidInputError(f"{label_path.name} has no 'segmentation' object; expected the TADPM label "
                                'file {"segmentation": {"<FDI>": {"vertices": [[x, y, z], ...]}}}')
    tree = cKDTree(vertices_ras)
    labels = np.zeros(len(vertices_ras), dtype=np.int32)
    distances, other_jaw, unknown = [], [], []
    for key, entry in seg.items():
        tooth = int(key) if str(key).strip().isdigit() else -1
        if tooth == 0:
            continue
        if not fdi.is_valid_fdi(tooth):
            unknown.append(str(key))
            continue
        if fdi.jaw_of(tooth) != jaw:
            other_jaw.append(tooth)
            continue
        points = entry.get("vertices") if isinstance(entry, dict) else None
        try:
            points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{label_path.name}: tooth {key} has no list of [x, y, z] 'vertices'; "
                                    "is this a TADPM label file?") from None
        if len(points):
            dist, index = tree.query(points)
            labels[index] = tooth
            distances.append(dist)
    if unknown:
        raise InvalidInputError(f"{label_path.name}: segmentation keys {unknown[:8]} are not FDI tooth numbers; "
                                "expected keys '11'..'48' (0 for gingiva); is this a TADPM label file?")
    if other_jaw:
        logger.warning("%s: %s lists teeth %s of the other jaw; ignored as in TADPM's get_mesh.py", NAME,
                       label_path.name, sorted(other_jaw))
    all_dist = np.concatenate(distances) if distances else np.zeros(0)
    p95 = float(np.percentile(all_dist, 95)) if len(all_dist) else 0.0
    if p95 > MAX_POINT_DISTANCE_MM:
        raise InvalidInputError(
            f"{label_path.name}: its tooth points lie {p95:.2f} mm from the mesh (95th percentile, limit "
            f"{MAX_POINT_DISTANCE_MM} mm); the label file belongs to another mesh or jaw: check the pairing"
        )
    return labels, {"label_point_distance_p95_mm": round(p95, 4), "ignored_other_jaw": sorted(other_jaw)}


def iter_tadpm(root, *, stages=STAGES, skip_unpaired: bool = False) -> Iterator[IOSRecord]:
    """Yield every labelled TADPM jaw model (pre- and post-treatment) with FDI labels.

    Args:
        root: the folder holding one folder per patient.
        stages: which models to convert: ``("ori", "final")`` (default), or one of them
            (CLI: ``--option stages=ori``).
        skip_unpaired: leave out jaws whose mesh or label file is missing or ambiguous.

    Yields:
        :class:`IOSRecord` per jaw model; ``patient_id`` the patient folder.

    Raises:
        InvalidInputError: layout problems (before the first model is read), unreadable files,
            label files that do not fit their mesh.
    """
    if isinstance(stages, str):
        stages = tuple(s.strip() for s in stages.split(",") if s.strip())
    from ..mesh import read_mesh

    for patient, stage, jaw, stl, label_path in find_cases(root, stages, skip_unpaired):
        result = read_mesh(stl)
        labels, info = vertex_labels(result.mesh.vertices_ras, label_path, jaw)
        yield ios_record(f"{patient}_{stage}_{jaw}", patient, jaw, result, labels, None, str(stl),
                         {"dataset": NAME, "stage": stage, "label_file": str(label_path), **info})
