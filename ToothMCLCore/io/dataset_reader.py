"""Read a dataset written by :func:`ToothMCLCore.io.dataset_layout.write_dataset`, every file checked.

The layouts are described in :mod:`ToothMCLCore.io.dataset_layout`. The training code reads
exports through :func:`read_dataset`::

    dataset = read_dataset("Dataset301_ToothMCL")       # checks manifest.json, SHA-256 of every file
    for case in dataset.split("train"):
        record = case.load()                           # CBCTRecord / IOSRecord, FDI label values
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..types import Geometry, SurfaceMesh, Volume
from .dataset_records import CBCTRecord, IOSRecord
from .dataset_split import SPLITS

#: format -> modality
FORMATS = {"nnunet": "cbct", "teeth3ds": "ios"}
MANIFEST, SPLITS_FILE, DATASET_JSON, NNUNET_SPLITS = "manifest.json", "splits.json", "dataset.json", "splits_final.json"
DATASET_FORMAT, DATASET_FORMAT_VERSION = "toothmcl-dataset", 1


@dataclass(frozen=True)
class DatasetCase:
    """One case of a dataset as listed in its manifest.

    Attributes:
        case_id, patient_id, split: as exported (split is "train", "val" or "test").
        modality: "cbct" or "ios"; jaw: "upper"/"lower" for IOS, None for CBCT.
        paths: absolute paths: ``{"image", "labels"}`` (CBCT) or ``{"mesh", "labels"}`` (IOS),
            and ``"interactions"`` when the case's labels were fixed with click tools.
        source, metadata: the record's, as kept in the manifest.
        label_values: class index -> label value of the CBCT label maps (None for IOS).
        fold: cross-validation fold of the case's patient (exported with ``folds``), else None.
    """

    case_id: str
    patient_id: str
    split: str
    modality: str
    paths: dict
    source: str = ""
    metadata: dict = field(default_factory=dict)
    jaw: str | None = None
    label_values: tuple | None = None
    fold: int | None = None

    def load(self) -> CBCTRecord | IOSRecord:
        """The case's arrays, with FDI label values (CBCT class indices mapped back)."""
        if self.modality == "cbct":
            image, geometry = _read_nifti(self.paths["image"])
            classes, _ = _read_nifti(self.paths["labels"])
            lut = np.asarray(self.label_values, dtype=np.uint8)
            if classes.min() < 0 or classes.max() >= len(lut):
                raise InvalidInputError(f"{self.paths['labels']} holds class {int(classes.max())}, outside the "
                                        f"{len(lut)} classes of dataset.json; export the dataset again")
            labels = lut[classes]
            return CBCTRecord(self.case_id, self.patient_id, Volume(image, geometry, source=str(self.paths["image"])),
                              Volume(labels, geometry, source=str(self.paths["labels"])), self.source,
                              dict(self.metadata))
        from .teeth3ds import read_teeth3ds_json

        vertices, faces = _read_obj(self.paths["mesh"])
        doc = read_teeth3ds_json(self.paths["labels"], n_vertices=len(vertices), jaw=self.jaw)
        mesh = SurfaceMesh(vertices, faces, jaw=self.jaw or "", source=str(self.paths["mesh"]))
        return IOSRecord(self.case_id, self.patient_id, doc.jaw, mesh, doc.labels, doc.instances, self.source,
                         dict(self.metadata))


    def interactions(self) -> list[dict]:
        """The click-tool interactions exported with the case (each click with its ``ras`` and its
        ``voxel_kji`` or ``vertex`` in this case; :mod:`~ToothMCLCore.io.dataset_layout`), [] if none."""
        path = self.paths.get("interactions")
        if path is None:
            return []
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{path} cannot be read as JSON ({exc}); export the dataset again") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("interactions"), list):
            raise InvalidInputError(f"{path} holds no list of interactions; export the dataset again")
        return doc["interactions"]


@dataclass(frozen=True)
class Dataset:
    """A dataset folder after :func:`read_dataset` checked it.

    Attributes:
        root: the folder. format: "nnunet" or "teeth3ds". modality: "cbct" or "ios".
        cases: every case, sorted by case id. manifest: the whole ``manifest.json``.
    """

    root: Path
    format: str
    modality: str
    cases: tuple
    manifest: dict

    @property
    def folds(self) -> int:
        """Number of cross-validation folds of the export (0: none)."""
        return int(self.manifest.get("split", {}).get("folds", 0) or 0)

    def split(self, name: str, fold: int | None = None) -> list[DatasetCase]:
        """The cases of one split ("train", "val" or "test").

        With ``fold`` k (an export with folds): "test" is every case of fold k, whatever its
        split; "train" and "val" are the train and val cases of the other folds (the
        exported test split is not trained on in any fold)."""
        if name not in SPLITS:
            raise InvalidInputError(f"split must be one of {', '.join(SPLITS)} (got {name!r})")
        if fold is None:
            return [c for c in self.cases if c.split == name]
        if not 0 <= int(fold) < self.folds:
            raise InvalidInputError(f"fold {fold} does not exist in {self.root}: "
                                    + (f"it has folds 0..{self.folds - 1}" if self.folds else
                                       "it was exported without folds (convert-dataset --folds K)"))
        if name == "test":
            return [c for c in self.cases if c.fold == int(fold)]
        return [c for c in self.cases if c.fold != int(fold) and c.split == name]

    def counts(self) -> dict[str, tuple[int, int]]:
        """split -> (cases, patients)."""
        out = {}
        for name in SPLITS:
            cases = self.split(name)
            out[name] = (len(cases), len({c.patient_id for c in cases}))
        return out


def read_dataset(folder, verify: bool = True) -> Dataset:
    """Read a dataset written by :func:`write_dataset` after checking it against its manifest.

    Args:
        folder: the dataset folder (OUT of the export).
        verify: also recompute every file's SHA-256 (sizes are always checked).

    Raises:
        InvalidInputError: no or unreadable manifest, a listed file missing (a case without its
            image, labels or mesh), changed (size or SHA-256), or a data file the manifest does
            not list; the message names the file.
    """
    root = Path(folder)
    manifest = _read_manifest(root)
    files = {entry["path"]: entry for entry in manifest["files"]}
    owner = {rel: case["case_id"] for case in manifest["cases"] for rel in case["files"].values()}
    for rel, entry in files.items():
        path = root / rel
        case = f" (of case {owner[rel]!r})" if rel in owner else ""
        if not path.is_file():
            partner = [p for c in manifest["cases"] if c["case_id"] == owner.get(rel) for p in c["files"].values()
                       if p != rel and (root / p).is_file()]
            pair = f"; {partner[0]} has lost its pair" if partner else ""
            raise InvalidInputError(f"{rel}{case} is missing from dataset {root}{pair}; restore it from a copy "
                                    "or export the dataset again")
        if path.stat().st_size != entry["size"] or (verify and sha256_file(path) != entry["sha256"]):
            raise InvalidInputError(f"{rel}{case} in dataset {root} changed after the export (its "
                                    f"{'size' if path.stat().st_size != entry['size'] else 'SHA-256'} differs "
                                    "from manifest.json); restore it or export the dataset again")
    stray = sorted(rel for rel in data_files(root) if rel not in files and rel != MANIFEST)
    if stray:
        raise InvalidInputError(f"{stray[0]} in dataset {root} is not listed in manifest.json"
                                f"{f' (nor are {len(stray) - 1} more)' if len(stray) > 1 else ''}, so it has no "
                                "checked pair; remove it, or export the dataset again with it")
    values = tuple(manifest["label_values"]) if manifest.get("label_values") else None
    cases = tuple(DatasetCase(c["case_id"], c["patient_id"], c["split"], manifest["modality"],
                              {role: root / rel for role, rel in c["files"].items()}, c.get("source", ""),
                              c.get("metadata", {}), c.get("jaw"), values, c.get("fold"))
                  for c in sorted(manifest["cases"], key=lambda c: c["case_id"]))
    return Dataset(root, manifest["layout"], manifest["modality"], cases, manifest)


def _read_manifest(root: Path) -> dict:
    if not root.is_dir():
        raise InvalidInputError(f"dataset folder {root} does not exist; check the path")
    path = root / MANIFEST
    if not path.is_file():
        raise InvalidInputError(f"{root} holds no {MANIFEST}, so it is not a dataset written by "
                                "`toothmcl export-dataset`; export it, or choose the export's folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        ok = manifest.get("format") == DATASET_FORMAT and FORMATS.get(manifest["layout"]) == manifest["modality"] \
            and all(isinstance(c["files"], dict) and c["split"] in SPLITS and c["case_id"] and c["patient_id"]
                    for c in manifest["cases"]) \
            and all({"path", "sha256", "size"} <= set(f) and _inside(f["path"]) for f in manifest["files"]) \
            and {rel for c in manifest["cases"] for rel in c["files"].values()} <= {f["path"] for f in manifest["files"]}
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise InvalidInputError(f"{path} is not a ToothMCL dataset manifest (damaged or of another tool); "
                                "export the dataset again")
    if int(manifest.get("format_version", 0)) > DATASET_FORMAT_VERSION:
        raise InvalidInputError(f"dataset {root} has format version {manifest['format_version']}, newer than "
                                f"this ToothMCL reads ({DATASET_FORMAT_VERSION}); update ToothMCL")
    return manifest


def _inside(rel: str) -> bool:
    """A relative path that stays inside the dataset folder."""
    path = Path(rel)
    return bool(rel) and not path.is_absolute() and not path.drive and ".." not in path.parts


def data_files(root: Path) -> list[str]:
    """Relative paths of the files under ``root``, hidden files and folders left out."""
    out = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        out += [(rel / n).as_posix() for n in names if not n.startswith(".")]
    return out


def _read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    from .volume import geometry_from_sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InvalidInputError(f"{path} cannot be read ({str(exc).strip().splitlines()[-1]}); "
                                "export the dataset again") from None
    return sitk.GetArrayFromImage(image), geometry_from_sitk(image)


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 3) float64 and faces (M, 3) int64 of an OBJ written by :func:`write_dataset`."""
    lines = Path(path).read_bytes().splitlines()
    try:
        v = np.array(b" ".join(ln[2:] for ln in lines if ln[:2] == b"v ").split(), dtype=np.float64)
        f = np.array(b" ".join(ln[2:] for ln in lines if ln[:2] == b"f ").split(), dtype=np.int64)
        return v.reshape(-1, 3), f.reshape(-1, 3) - 1
    except ValueError:
        raise InvalidInputError(f"{path} is not an OBJ written by the dataset export; export it again") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
