"""Teeth3DS / Teeth3DS+ (3DTeethSeg'22, 1,800 scans of 900 patients) -> :class:`IOSRecord`.

**Published layout** (https://osf.io/xctdy/, README "Data" and "Download" of
https://github.com/abenhamadou/3DTeethSeg22_challenge: the dataset "is structured under 6 data
parts ... merge them to a same folder architecture"; the part zips ``data_part_1.zip`` ..
``data_part_7.zip`` and the glob ``<part>/<jaw>/<ID>/<ID>_<jaw>.obj`` with the label file next to
the mesh are in ``torch_geometric/datasets/teeth3ds.py`` of PyTorch Geometric)::

    <root>/[data_part_N/]{upper,lower}/<ID>/<ID>_upper.obj   one jaw, one OBJ
                                            <ID>_upper.json  its labels

The converter searches ``root`` recursively for ``<ID>_upper.obj`` / ``<ID>_lower.obj`` and
takes the label file ``<ID>_<jaw>.json`` from the same folder, or from anywhere under ``root``
(the challenge release kept labels in a separate ``ground-truth_labels_instances`` tree).

**Labels** (same README): ``{"id_patient": "6X24ILNE", "jaw": "upper", "labels": [...],
"instances": [...]}``, one entry per OBJ vertex in file order; "The labels are provided in the
FDI numbering system", 0 = gingiva. They are our values already: the converter only checks them
(:func:`~ToothMCLCore.io.teeth3ds.read_teeth3ds_json`: one value per vertex, FDI numbers of the
file's jaw) and carries labels and instances onto the cleaned mesh (duplicate vertices merged,
:func:`~ToothMCLCore.io.mesh.read_mesh`).

**Patients.** ``<ID>`` is the patient: both jaws of one ID share ``patient_id`` (the two files of
a patient carry the same ``id_patient``; a label file whose ``id_patient`` differs from its folder
is logged and kept under the folder's ID).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from ...errors import InvalidInputError
from ..dataset_records import IOSRecord
from ._common import handle_unpaired, ios_record, require_folder

logger = logging.getLogger(__name__)

NAME = "Teeth3DS"
SOURCE = ("README of github.com/abenhamadou/3DTeethSeg22_challenge (JSON id_patient/jaw/labels/instances, "
          "FDI); folder layout from pytorch_geometric torch_geometric/datasets/teeth3ds.py")
LAYOUT = "{upper,lower}/<ID>/<ID>_<jaw>.obj with <ID>_<jaw>.json (possibly inside data_part_N/ folders)"
_SCAN = re.compile(r"^(?P<id>.+)_(?P<jaw>upper|lower)\.(?P<ext>obj|json)$")


def find_cases(root, skip_unpaired: bool = False) -> list[tuple[str, str, Path, Path]]:
    """``[(ID, jaw, obj, json), ...]`` sorted by ID then jaw (upper first).

    Raises:
        InvalidInputError: no scans, a scan or label file found twice, or a scan without labels
            (or labels without a scan) unless ``skip_unpaired``.
    """
    root = require_folder(root, NAME, LAYOUT)
    meshes: dict[tuple[str, str], list[Path]] = {}
    jsons: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(root.rglob("*")):
        match = _SCAN.match(path.name)
        if match and path.is_file():
            key = (match.group("id"), match.group("jaw"))
            (meshes if match.group("ext") == "obj" else jsons).setdefault(key, []).append(path)
    if not meshes:
        raise InvalidInputError(f"{root}: no <ID>_upper.obj or <ID>_lower.obj found; expected {LAYOUT}")
    problems = []
    for kind, found in (("scan", meshes), ("label file", jsons)):
        problems += [f"{kind} {key[0]}_{key[1]} found {len(p)} times ({', '.join(str(x.relative_to(root)) for x in p[:3])})"
                     for key, p in found.items() if len(p) > 1]
    cases = []
    for key in sorted(meshes, key=lambda k: (k[0], k[1] != "upper")):
        obj = meshes[key][0]
        candidates = jsons.get(key, [])
        beside = [j for j in candidates if j.parent == obj.parent]
        label = beside[0] if beside else (candidates[0] if len(candidates) == 1 else None)
        if not candidates:
            problems.append(f"{obj.relative_to(root)} has no label file {key[0]}_{key[1]}.json")
        elif label is not None and len(meshes[key]) == 1:
            cases.append((key[0], key[1], obj, label))
    problems += [f"label file {p[0].relative_to(root)} has no scan {k[0]}_{k[1]}.obj" for k, p in jsons.items()
                 if k not in meshes]
    handle_unpaired(problems, NAME, skip_unpaired)
    return cases


def iter_teeth3ds(root, *, skip_unpaired: bool = False) -> Iterator[IOSRecord]:
    """Yield every labelled Teeth3DS scan (one record per jaw) with its FDI labels.

    Args:
        root: the folder where the data parts were extracted (searched recursively).
        skip_unpaired: leave out scans without a label file (the test scans of Teeth3DS+ have
            none) instead of raising.

    Yields:
        :class:`IOSRecord` per scan: ``case_id`` ``<ID>_<jaw>``, ``patient_id`` ``<ID>``.

    Raises:
        InvalidInputError: layout problems (before the first scan is read), unreadable meshes,
            label files that do not fit their mesh (vertex count, jaw, non-FDI values).
    """
    from ..mesh import read_mesh
    from ..teeth3ds import read_teeth3ds_json

    for patient, jaw, obj, label_path in find_cases(root, skip_unpaired):
        result = read_mesh(obj)
        doc = read_teeth3ds_json(label_path, n_vertices=result.n_file_vertices, jaw=jaw)
        if doc.id_patient and doc.id_patient != patient:
            logger.warning("%s: %s says id_patient %r; keeping the folder's ID %r", NAME, label_path.name,
                           doc.id_patient, patient)
        yield ios_record(
            f"{patient}_{jaw}", patient, jaw, result, doc.labels[result.clean_to_file],
            doc.instances[result.clean_to_file], str(obj),
            {"dataset": NAME, "id_patient": doc.id_patient, "label_file": str(label_path)},
        )
