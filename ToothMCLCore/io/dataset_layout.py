"""Our training-dataset layout: write it from records, read it back with every file checked.

Two layouts, one per modality, each with ``splits.json`` and ``manifest.json``:

``format="nnunet"`` (CBCT, :class:`~ToothMCLCore.io.dataset_records.CBCTRecord`), an nnU-Net v2
raw dataset that MONAI's ``load_decathlon_datalist`` also reads::

    OUT/
      imagesTr/<case>_0000.nii.gz   train and val images (nnU-Net: one channel, "0000")
      labelsTr/<case>.nii.gz        their label maps (uint8 class indices, see below)
      imagesTs/, labelsTs/          the test split, held out of imagesTr so that nnU-Net
                                    cannot train on it by accident
      dataset.json                  channel_names, labels, numTraining (train + val),
                                    file_ending; MONAI lists "training" (train), "validation"
                                    (val), "test"; toothmcl_label_values (see below)
      splits_final.json             nnU-Net's one-fold [{"train": [...], "val": [...]}]; copy it
                                    to nnUNet_preprocessed/<dataset>/ to train on our split
      splits.json, manifest.json

``format="teeth3ds"`` (IOS, :class:`~ToothMCLCore.io.dataset_records.IOSRecord`), the
folder structure of the Teeth3DS / 3DTeethSeg'22 release (``lower/<id>/<id>_lower.obj``),
so loaders written for the release read it as is::

    OUT/<jaw>/<patient>/<case>.obj    the mesh, vertices in label order ("v x y z" to 1e-6 mm)
    OUT/<jaw>/<patient>/<case>.json   {"id_patient", "jaw", "labels", "instances"} (FDI values)
    OUT/splits.json, OUT/manifest.json

Label values (CBCT). nnU-Net v2 refuses label tables that are not consecutive (0, 1, 2, ...;
``verify_dataset_integrity``), and FDI numbers are not. So label maps hold the class indices
of :func:`ToothMCLCore.fdi.fdi_to_class_index` scheme ``"cbct"``: 0 background, 1..32 the
permanent teeth 11..48, 33 metal (99) -- the output channels of our CBCT networks, the same in
every export, so datasets can be merged. ``dataset.json`` lists all 34 classes by name
(``"36 lower left first molar": 22``) and records the way back in ``toothmcl_label_values``
(class index -> label value); :meth:`DatasetCase.load` returns FDI values. Primary teeth have no
class in that scheme: a CBCT record holding them is refused (nothing is dropped silently). The
non-tooth structures of :mod:`ToothMCLCore.structures` (jaws, canals, ... that an nnU-Net model
segments) are exported as background, with a log line per case: our CBCT networks do not
learn them, and the teeth of such a case are still good training data.
The channel is named ``"CBCT"``: nnU-Net then z-scores each image (its ``"CT"`` normalisation
assumes calibrated Hounsfield units, which CBCT scanners do not give).

Interactions. A case whose labels were fixed with the click tools
(:mod:`ToothMCLCore.interactive`) carries them in one more file, ``interactions/<case>.json``
(CBCT) or ``<jaw>/<patient>/<case>.interactions.json`` (IOS): ``{"case_id", "modality",
"interactions": [...]}``, each interaction as the store saved it (tool, label(s), time, settings,
the store ``revision`` it was saved in) with every click's ``ras`` (mm) and where it falls in the
exported case: ``voxel_kji`` of the exported image (CBCT; null outside it), or the nearest
``vertex`` of the exported mesh and its ``distance_mm`` (IOS). That is what a click-trained model
is fine-tuned from; :meth:`DatasetCase.interactions` reads it back.

``splits.json`` is ``{"train": [...], "val": [...], "test": [...]}`` (case ids); splits are by
patient (:mod:`ToothMCLCore.io.dataset_split`). ``manifest.json`` holds every other file's
relative path, SHA-256 and size, each case's patient, split, source and metadata, the tool
version, the fractions and the seed.

Reproducible: the same records, split and seed give the same bytes. JSON has sorted keys (the
Teeth3DS label files keep the release's key order), no file holds a time, and ``.nii.gz`` is
written as plain NIfTI by SimpleITK and gzipped here with mtime 0, no file name and level 6,
so the bytes do not depend on SimpleITK's zlib build (the same SimpleITK, zlib and ToothMCL
give the same bytes; a new ToothMCL version changes ``manifest.json``).

Read an export back with :func:`~ToothMCLCore.io.dataset_reader.read_dataset` (also importable
from here): it checks the manifest (every file present, same size and SHA-256, no unlisted
data file) and loads cases with FDI label values.

No partial output: everything is written into ``.<OUT>.partial-<id>/`` next to OUT and renamed
to OUT at the end. An existing non-empty OUT is refused unless ``overwrite`` is set, and even
then only an earlier export (a folder holding our ``manifest.json``) is replaced: it is renamed
to ``.<OUT>.old-<id>/``, the new export renamed to OUT, and the old one removed (a crash between
the two renames leaves the old export in ``.<OUT>.old-<id>/``, never a half-written OUT). A
killed export leaves only a ``.<OUT>.partial-<id>/`` folder, which can be deleted.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import __version__, fdi, structures
from ..errors import InvalidInputError, OutputError
from ..types import Geometry, SurfaceMesh
from .dataset_reader import (
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    DATASET_JSON,
    FORMATS,
    MANIFEST,
    NNUNET_SPLITS,
    SPLITS_FILE,
    Dataset,
    DatasetCase,
    data_files,
    read_dataset,
    sha256_file,
)
from .dataset_records import CBCTRecord, IOSRecord
from .dataset_split import SPLITS, assign_folds, assign_splits, assign_splits_with_test, parse_fractions

logger = logging.getLogger(__name__)

CLASS_SCHEME = "cbct"
CHANNEL_NAME = "CBCT"
_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,149}")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def write_dataset(records: Iterable[CBCTRecord | IOSRecord], out, format: str, split=(0.8, 0.1, 0.1),
                  seed: int = 0, overwrite: bool = False, description: str = "", test_cases=None,
                  folds: int = 0) -> Dataset:
    """Write records as a dataset folder in our layout (see the module docstring).

    Args:
        records: CBCT records for ``"nnunet"``, IOS records for ``"teeth3ds"``; any iterable,
            consumed once, one record in memory at a time.
        out: the dataset folder to create.
        format: ``"nnunet"`` or ``"teeth3ds"``.
        split: train, val, test fractions of the cases (``"0.8,0.1,0.1"`` or a 3-sequence).
        seed: split seed (:func:`~ToothMCLCore.io.dataset_split.assign_splits`).
        overwrite: replace an earlier export at ``out``.
        description: free text for ``dataset.json`` and the manifest.
        test_cases: case ids of a given test set (a benchmark's official list): their patients
            are the test split, the others are split into train and val by ``split``'s train
            and val fractions (:func:`~ToothMCLCore.io.dataset_split.assign_splits_with_test`).
        folds: with 2 or more, every case also gets the cross-validation fold of its patient
            (:func:`~ToothMCLCore.io.dataset_split.assign_folds`), written as ``fold`` in the
            manifest; :meth:`~ToothMCLCore.io.dataset_reader.Dataset.split` with ``fold=k`` then
            tests on fold k.

    Returns:
        the written :class:`Dataset`.

    Raises:
        InvalidInputError: a record of the other modality, duplicate or unsafe case ids,
            labels that do not fit the image or mesh, label values outside the tables, no records.
        OutputError: ``out`` exists and is not empty (without ``overwrite``), or holds
            something other than an earlier export, or cannot be written. Nothing is left at
            ``out`` on any error; an existing export there stays as it was.
    """
    if format not in FORMATS:
        raise InvalidInputError(f"format must be 'nnunet' (CBCT) or 'teeth3ds' (IOS) (got {format!r})")
    fractions = parse_fractions(split)
    out = Path(os.path.abspath(out))  # "." and ".." resolved, symlinks not followed
    check_destination(out, overwrite)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        entries, seen = [], {}
        for record in records:
            entry = _write_record(staging, record, format, seen)
            entries.append(entry)
            logger.info("exported %s (%d so far)", entry["case_id"], len(entries))
        if not entries:
            raise InvalidInputError(f"there are no cases to export to {out}; nothing was written")
        _finish(staging, entries, format, fractions, int(seed), description, test_cases, int(folds))
        _fsync_tree(staging)
        check_destination(out, overwrite)  # again: another process may have written there meanwhile
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote dataset %s (%d cases)", out, len(entries))
    return read_dataset(out, verify=False)


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that cannot be created or replaced (see :func:`write_dataset`)."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"folder {parent} does not exist; create it first, or choose another output folder")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"folder {parent} is not writable; choose another output folder")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise OutputError(f"{out} exists and is not a folder; choose a new folder for the dataset")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise OutputError(f"{out} exists and is not empty; choose a new folder, or pass --overwrite to "
                          "replace an earlier export")
    try:
        ours = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("format") == DATASET_FORMAT
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        ours = False
    if not ours:
        raise OutputError(f"refusing to replace {out}: it is not a dataset export (it holds no ToothMCL "
                          f"{MANIFEST}); choose another folder, or empty this one yourself")


def _write_record(staging: Path, record, format: str, seen: dict) -> dict:
    """Write one record's files into ``staging``; returns its manifest entry (split not yet known)."""
    want = CBCTRecord if format == "nnunet" else IOSRecord
    if not isinstance(record, want):
        kind = {CBCTRecord: "a CBCT", IOSRecord: "an IOS"}.get(type(record), f"a {type(record).__name__}")
        raise InvalidInputError(f"format {format!r} takes {FORMATS[format].upper()} records but got {kind} "
                                f"record ({getattr(record, 'case_id', '?')!r}); export "
                                f"{'intraoral scans with format teeth3ds' if format == 'nnunet' else 'CBCT with format nnunet'}")
    case_id, patient_id = str(record.case_id), str(record.patient_id or "").strip()
    if not _CASE_ID.fullmatch(case_id):
        raise InvalidInputError(f"case id {case_id!r} is not file-name safe; use 1-150 letters, digits, '_', "
                                "'.' or '-', starting with a letter or digit")
    if case_id.lower() in seen:
        raise InvalidInputError(f"case id {case_id!r} is used twice (sources {seen[case_id.lower()]!r} and "
                                f"{record.source or '?'!r}); case ids must be unique, ignoring upper/lower case")
    seen[case_id.lower()] = record.source or "?"
    if not patient_id:
        raise InvalidInputError(f"case {case_id!r} has no patient id; give one (the case id if unknown)")
    entry = {"case_id": case_id, "patient_id": patient_id, "source": str(record.source or ""),
             "metadata": _json_safe(record.metadata, f"metadata of case {case_id!r}")}
    if format == "nnunet":
        entry.update(_write_cbct(staging, record, case_id))
    else:
        entry.update(_write_ios(staging, record, case_id, patient_id))
    if record.interactions:
        entry["files"]["interactions"] = _write_interactions(staging, record, case_id, format, entry["files"])
        entry["interactions"] = len(record.interactions)
    return entry


def _write_interactions(staging: Path, record, case_id: str, format: str, files: dict) -> str:
    """The case's click-tool interactions with each click placed in the exported case (module
    docstring); returns the file's path relative to ``staging``."""
    interactions = _json_safe(list(record.interactions), f"interactions of case {case_id!r}")
    if format == "nnunet":
        to_ijk = record.image.geometry.ras_to_ijk
        shape = np.asarray(record.image.array.shape)

        def place(ras):
            ijk = np.round((to_ijk @ np.r_[np.asarray(ras, np.float64), 1.0])[:3]).astype(int)
            kji = ijk[::-1]
            return {"voxel_kji": [int(v) for v in kji] if np.all((kji >= 0) & (kji < shape)) else None}
        rel = f"interactions/{case_id}.json"
    else:
        from scipy.spatial import cKDTree

        tree = cKDTree(np.asarray(record.mesh.vertices_ras, np.float64))

        def place(ras):
            distance, vertex = tree.query(np.asarray(ras, np.float64))
            return {"vertex": int(vertex), "distance_mm": round(float(distance), 3)}
        rel = files["labels"][: -len(".json")] + ".interactions.json"
    for interaction in interactions:
        clicks = interaction.get("clicks") if isinstance(interaction, dict) else None
        if not isinstance(clicks, list):
            raise InvalidInputError(f"case {case_id!r}: an interaction without a list of clicks ({interaction!r})")
        for click in clicks:
            ras = click.get("ras") if isinstance(click, dict) else None
            if not (isinstance(ras, list) and len(ras) == 3 and np.all(np.isfinite(np.asarray(ras, np.float64)))):
                raise InvalidInputError(f"case {case_id!r}: a click without a finite RAS position ({click!r})")
            click.update(place(ras))
    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
    _write_json(staging / rel, {"case_id": case_id, "modality": FORMATS[format], "interactions": interactions})
    return rel


def _write_cbct(staging: Path, record: CBCTRecord, case_id: str) -> dict:
    image, labels = record.image, record.labels
    arr = np.asarray(image.array)
    if arr.ndim != 3 or np.asarray(labels.array).shape != arr.shape:
        raise InvalidInputError(f"case {case_id!r}: image shape {arr.shape} and label shape "
                                f"{np.asarray(labels.array).shape} must be the same 3-D (K, J, I) grid")
    if not image.geometry.allclose(labels.geometry, atol=1e-3):
        raise InvalidInputError(f"case {case_id!r}: the labels lie on another grid than the image (origin, "
                                "spacing or direction differ); resample the labels onto the image first")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"case {case_id!r}: the image has NaN or infinite voxels; replace them first")
        arr = arr.astype(np.float32, copy=False)
    elif arr.dtype.kind not in "iu":
        raise InvalidInputError(f"case {case_id!r}: image dtype {arr.dtype} is not a number type")
    classes = _class_indices(np.asarray(labels.array), case_id)
    rel_image, rel_labels = f"imagesTr/{case_id}_0000.nii.gz", f"labelsTr/{case_id}.nii.gz"
    _write_nifti_gz(staging / rel_image, arr, image.geometry)
    _write_nifti_gz(staging / rel_labels, classes, image.geometry)
    return {"files": {"image": rel_image, "labels": rel_labels}, "shape": list(arr.shape),
            "spacing": image.geometry.spacing.tolist(), "image_dtype": str(arr.dtype),
            "labels_present": [int(v) for v in fdi.class_index_to_fdi(_present(classes), CLASS_SCHEME)]}


def _present(labels: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a non-negative integer array (bincount: no sort of the volume)."""
    if labels.dtype.kind in "iu" and labels.size and 0 <= labels.min() and labels.max() < 65536:
        return np.flatnonzero(np.bincount(labels.ravel()))
    return np.unique(labels)


def _class_indices(labels: np.ndarray, case_id: str) -> np.ndarray:
    """``(K, J, I) uint8`` class indices (scheme "cbct") of an FDI label map, or InvalidInputError."""
    if labels.dtype == bool or labels.dtype.kind not in "iuf":
        raise InvalidInputError(f"case {case_id!r}: labels must be integer FDI values (got dtype {labels.dtype})")
    values = _present(labels)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        raise InvalidInputError(f"case {case_id!r}: labels hold fractional or non-finite values; "
                                "round or argmax them to FDI numbers first")
    table = [int(v) for v in fdi.class_index_to_fdi(np.arange(fdi.num_classes(CLASS_SCHEME)), CLASS_SCHEME)]
    bad = [v for v in values.tolist() if v not in table and not structures.is_structure(int(v))]
    if bad:
        raise InvalidInputError(
            f"case {case_id!r}: label values {[int(v) if float(v).is_integer() else v for v in bad[:10]]} have "
            "no class in the nnU-Net label table (0, permanent teeth 11-48, 99 metal); primary teeth "
            "cannot be exported to it: relabel them or leave the case out")
    dropped = [structures.structure(int(v)).name for v in values.tolist() if structures.is_structure(int(v))]
    if dropped:
        logger.info("case %s: %s exported as background (our CBCT classes are teeth and metal)",
                    case_id, ", ".join(dropped))
    lut = np.zeros(256, dtype=np.uint8)  # structures (jaws, canals, ...) -> 0
    lut[table] = np.arange(len(table), dtype=np.uint8)
    if labels.dtype.kind == "f" or labels.dtype.itemsize > 2:
        labels = labels.astype(np.uint8)  # every value is in the table, so 0..99
    return lut[labels]


def _write_ios(staging: Path, record: IOSRecord, case_id: str, patient_id: str) -> dict:
    from .mesh import write_mesh
    from .teeth3ds import instances_from_labels, validate_labels, write_teeth3ds_json

    if record.jaw not in fdi.JAWS:
        raise InvalidInputError(f"case {case_id!r}: jaw must be 'upper' or 'lower' (got {record.jaw!r})")
    vertices = np.asarray(record.mesh.vertices_ras, dtype=np.float64)
    faces = np.asarray(record.mesh.faces if record.mesh.faces is not None else np.zeros((0, 3)), dtype=np.int64)
    faces = faces.reshape(-1, 3)
    if vertices.ndim != 2 or vertices.shape[1:] != (3,) or not len(vertices) or not np.all(np.isfinite(vertices)):
        raise InvalidInputError(f"case {case_id!r}: mesh vertices must be a finite, non-empty (N, 3) array "
                                f"(got shape {vertices.shape})")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InvalidInputError(f"case {case_id!r}: mesh faces refer to vertices outside 0..{len(vertices) - 1}")
    instances = instances_from_labels(record.labels) if record.instances is None else record.instances
    labels, instances = validate_labels(record.labels, instances, record.jaw, len(vertices), f"case {case_id!r}")
    folder = staging / record.jaw / _safe_name(patient_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_mesh(folder / f"{case_id}.obj", SurfaceMesh(vertices, faces, jaw=record.jaw))
    write_teeth3ds_json(folder / f"{case_id}.json", labels, instances, record.jaw, id_patient=patient_id,
                        n_vertices=len(vertices))
    rel = folder.relative_to(staging).as_posix()
    return {"files": {"mesh": f"{rel}/{case_id}.obj", "labels": f"{rel}/{case_id}.json"}, "jaw": record.jaw,
            "n_vertices": len(vertices), "n_faces": len(faces),
            "labels_present": [int(v) for v in np.unique(labels)]}


def _finish(staging: Path, entries: list, format: str, fractions, seed: int, description: str,
            test_cases=None, folds: int = 0):
    """Assign splits (and folds), move the test split (nnU-Net), write the JSON files and the manifest."""
    per_patient: dict[str, int] = {}
    for e in entries:
        per_patient[e["patient_id"]] = per_patient.get(e["patient_id"], 0) + 1
    if test_cases is not None:
        listed = set(test_cases)
        unknown = sorted(listed - {e["case_id"] for e in entries})
        if len(unknown) == len(listed):
            raise InvalidInputError(f"no case of the test list is in this export (e.g. {unknown[0]!r}); check that "
                                    "the list belongs to this dataset (its entries are case ids such as <ID>_<jaw>)")
        if unknown:
            logger.warning("%d case(s) of the test list are not in the export (first: %s)", len(unknown), unknown[0])
        test_patients = {e["patient_id"] for e in entries if e["case_id"] in listed}
        patient_split = assign_splits_with_test(per_patient, test_patients, fractions, seed)
    else:
        patient_split = assign_splits(per_patient, fractions, seed)
    patient_fold = assign_folds(per_patient, folds, seed) if folds else {}
    entries.sort(key=lambda e: e["case_id"])
    for e in entries:
        e["split"] = patient_split[e["patient_id"]]
        if folds:
            e["fold"] = patient_fold[e["patient_id"]]
        if format == "nnunet" and e["split"] == "test":
            for role, rel in e["files"].items():
                new = rel.replace("Tr/", "Ts/", 1)
                (staging / new).parent.mkdir(exist_ok=True)
                os.rename(staging / rel, staging / new)
                e["files"][role] = new
    splits = {s: [e["case_id"] for e in entries if e["split"] == s] for s in SPLITS}
    _write_json(staging / SPLITS_FILE, splits)
    label_values = None
    if format == "nnunet":
        label_values = [int(v) for v in fdi.class_index_to_fdi(np.arange(fdi.num_classes(CLASS_SCHEME)),
                                                                CLASS_SCHEME)]
        _write_json(staging / NNUNET_SPLITS, [{"train": splits["train"], "val": splits["val"]}])
        _write_json(staging / DATASET_JSON, _dataset_json(entries, label_values, description))
    manifest = {
        "format": DATASET_FORMAT, "format_version": DATASET_FORMAT_VERSION, "layout": format,
        "modality": FORMATS[format], "tool": {"name": "ToothMCL", "version": __version__},
        "description": str(description or ""), "label_values": label_values,
        "split": {"fractions": dict(zip(SPLITS, fractions)), "seed": seed, "by": "patient",
                  "test": "given list" if test_cases is not None else "fraction", "folds": folds,
                  "counts": {s: {"cases": len(splits[s]),
                                 "patients": len({e["patient_id"] for e in entries if e["split"] == s})}
                             for s in SPLITS}},
        "cases": entries,
        "files": [{"path": rel, "sha256": sha256_file(staging / rel), "size": (staging / rel).stat().st_size}
                  for rel in sorted(data_files(staging))],
    }
    _write_json(staging / MANIFEST, manifest)


def _dataset_json(entries: list, label_values: list, description: str) -> dict:
    """nnU-Net v2 keys, MONAI datalist keys, and our class table (no folder name: same bytes anywhere)."""
    names = {v: "background" if v == 0 else (fdi.label_name(v) if v == fdi.METAL_LABEL else fdi.tooth(v).label)
             for v in label_values}
    listed = {s: [{"image": f"./{e['files']['image']}", "label": f"./{e['files']['labels']}"}
                  for e in entries if e["split"] == s] for s in SPLITS}
    return {
        "channel_names": {"0": CHANNEL_NAME},
        "labels": {names[v]: i for i, v in enumerate(label_values)},
        "numTraining": len(listed["train"]) + len(listed["val"]),
        "file_ending": ".nii.gz",
        "description": str(description or ""),
        "training": listed["train"], "validation": listed["val"], "test": listed["test"],
        "numTest": len(listed["test"]),
        "toothmcl_class_scheme": CLASS_SCHEME,
        "toothmcl_label_values": label_values,
    }


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def _write_nifti_gz(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    """Plain NIfTI by SimpleITK, gzipped here with mtime 0 and no name (byte-reproducible)."""
    import SimpleITK as sitk

    from .volume import sitk_image

    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.name[: -len(".gz")])
    try:
        sitk.WriteImage(sitk_image(array, geometry), str(raw), useCompression=False)
        with open(raw, "rb") as src, open(path, "wb") as dst, \
                gzip.GzipFile(filename="", mode="wb", fileobj=dst, compresslevel=6, mtime=0) as gz:
            shutil.copyfileobj(src, gz, 1 << 22)
    except (RuntimeError, OSError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise OutputError(f"could not write {path.name} ({detail}); check free disk space") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            raw.unlink()


def _write_json(path: Path, obj) -> None:
    text = json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False)
    path.write_bytes((text + "\n").encode("ascii"))


def _json_safe(value, what: str):
    def default(v):
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        raise TypeError(type(v).__name__)

    try:
        return json.loads(json.dumps(value if value is not None else {}, default=default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} cannot be stored as JSON ({exc}); keep to numbers, strings, "
                                "lists and dicts") from None


def _safe_name(text: str) -> str:
    """A folder name for a patient id (ids that differ only in unsafe characters share it)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).lstrip(".")[:100] or "patient"


def _fsync_tree(folder: Path) -> None:
    """Flush every file (and, on POSIX, folder) so the rename cannot land before the data."""
    for dirpath, _dirs, names in os.walk(folder, topdown=False):
        for name in names:
            fd = os.open(Path(dirpath) / name, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if os.name != "nt":
            fd = os.open(dirpath, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(out, old)
    try:
        os.rename(staging, out)
    except OSError as exc:
        if old is not None:
            os.rename(old, out)
        raise OutputError(f"could not move the new dataset into {out} ({exc}); nothing was changed there") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["FORMATS", "Dataset", "DatasetCase", "check_destination", "read_dataset", "write_dataset"]
