"""``toothmcl export-dataset``: the corrected cases of a store as a training dataset.

The latest revision of every case (or the latest one an ``annotator`` saved) becomes one
record (:mod:`ToothMCLCore.io.dataset_records`) and :func:`~ToothMCLCore.io.dataset_layout.write_dataset`
writes them in our layout: CBCT cases as an nnU-Net v2 dataset (``--format nnunet``), IOS cases
in the Teeth3DS layout (``--format teeth3ds``). A store holding both is exported one modality
at a time; the cases of the other one are skipped and counted.

Where the arrays come from:

* CBCT: the image is the input copy kept in the store (or, when the input was not copied, the
  original file at its saved path, if it still has its saved SHA-256); the labels are the
  corrected labels, and both are written on the geometry saved with them.
* IOS: the corrected per-vertex labels, the vertex positions saved with them (else the input
  mesh's), and the faces of the input mesh (the copy, or the original file). Labels may follow
  the input file's vertex order or the cleaned mesh's (:func:`ToothMCLCore.io.mesh.read_mesh`);
  the vertex count tells which. Instances number the teeth (``instances_from_labels``).

Case ids become file-name-safe ids (``case 17`` -> ``case_17``, made unique); the store's id,
revision, annotator, save time, model and input SHA-256 go into the manifest (never the input
path, which may hold a patient name). The click-tool interactions saved in the case's revisions
(up to the exported one) are exported with it, each click placed in the exported image or mesh
(:mod:`~ToothMCLCore.io.dataset_layout`). Every input is found and checked before anything is
written, so a missing one fails in seconds, and the store is only read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import fdi
from ..errors import InvalidInputError, OutputError
from ..io.dataset_layout import FORMATS, Dataset, check_destination, write_dataset
from ..io.dataset_records import CBCTRecord, IOSRecord
from ..io.dataset_split import parse_fractions
from ..types import SurfaceMesh, Volume
from .errors import CorruptStoreError
from .files import folder_name, sha256_file
from .records import Revision

logger = logging.getLogger(__name__)

#: why a case of the store was not exported -> the CLI's wording
SKIP_REASONS = {"modality": "of the other modality", "annotator": "never saved by the chosen annotator"}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_store` wrote and left out.

    Attributes:
        dataset: the written dataset (:class:`~ToothMCLCore.io.dataset_reader.Dataset`).
        skipped: reason (a key of :data:`SKIP_REASONS`) -> store case ids not exported.
    """

    dataset: Dataset
    skipped: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """One case to export: its revision, the input to read and the id it gets in the dataset."""

    revision: Revision
    input_path: Path
    dataset_id: str


def export_store(store, out, format: str, split=(0.8, 0.1, 0.1), seed: int = 0, overwrite: bool = False,
                 cases=None, annotator: str | None = None, description: str = "") -> ExportResult:
    """Export the latest corrections of a store as a dataset (see the module docstring).

    Args:
        store: a :class:`~ToothMCLCore.corrections.CorrectionStore` or its folder.
        out: the dataset folder to create (outside the store).
        format: ``"nnunet"`` (exports the CBCT cases) or ``"teeth3ds"`` (the IOS cases).
        split, seed, overwrite, description: as for :func:`~ToothMCLCore.io.dataset_layout.write_dataset`.
        cases: only these store case ids (default: all).
        annotator: export, per case, the latest revision this annotator saved (cases they never
            saved are skipped); default: the latest revision, whoever saved it.

    Raises:
        CorrectionStoreError: ``store`` is not a corrections store (nothing is written).
        InvalidInputError: unknown case ids, no case to export, an input that is gone or changed.
        OutputError: ``out`` is in the store, or not a new/empty folder (see ``write_dataset``).
    """
    from .store import CorrectionStore

    if format not in FORMATS:
        raise InvalidInputError(f"format must be 'nnunet' (CBCT) or 'teeth3ds' (IOS) (got {format!r})")
    fractions = parse_fractions(split)
    store = store if isinstance(store, CorrectionStore) else CorrectionStore(store)
    out = Path(os.path.abspath(out))
    _check_outside(store.root, out)
    check_destination(out, overwrite)
    revisions, skipped = select_revisions(store, FORMATS[format], cases, annotator)
    plans = _plans(store, revisions)
    records = (_record(store, plan) for plan in plans)
    dataset = write_dataset(records, out, format, fractions, seed, overwrite, description)
    return ExportResult(dataset, skipped)


def select_revisions(store, modality: str, cases=None, annotator: str | None = None):
    """``(revisions to export, skipped)``: one revision per case of ``modality``, sorted by case id.

    Raises:
        InvalidInputError: a case id of ``cases`` is not in the store, or nothing is left to export.
    """
    summaries = store.cases()
    known = {s.case_id for s in summaries}
    if cases:
        unknown = [c for c in cases if c not in known]
        if unknown:
            raise InvalidInputError(f"cases {unknown[:10]} are not in corrections store {store.root}; see "
                                    f"`toothmcl corrections list {store.root}`")
        summaries = [s for s in summaries if s.case_id in set(cases)]
    chosen, skipped = [], {reason: [] for reason in SKIP_REASONS}
    for summary in summaries:
        if summary.modality != modality:
            skipped["modality"].append(summary.case_id)
            continue
        revisions = store.revisions(summary.case_id)
        if annotator:
            revisions = [r for r in revisions if r.annotator == annotator]
            if not revisions:
                skipped["annotator"].append(summary.case_id)
                continue
        chosen.append(revisions[-1])
    if not chosen:
        other = "teeth3ds" if modality == "cbct" else "nnunet"
        detail = f"{len(skipped['modality'])} {('IOS' if modality == 'cbct' else 'CBCT')} cases" \
            + (f", {len(skipped['annotator'])} cases without a revision by {annotator!r}" if annotator else "")
        raise InvalidInputError(f"corrections store {store.root} has no {modality.upper()} case to export "
                                f"({detail}); nothing was written"
                                + (f"; export the other modality with --format {other}"
                                   if skipped["modality"] else ""))
    return chosen, {k: v for k, v in skipped.items() if v}


def _check_outside(root: Path, out: Path) -> None:
    store, target = root.resolve(), out.resolve()
    if target == store or store in target.parents or target in store.parents:
        raise OutputError(f"{out} is inside (or holds) the corrections store {root}; write the dataset to a "
                          "folder outside the store")


def _plans(store, revisions: list[Revision]) -> list[_Plan]:
    """Find and check every input, and give every case a dataset id, before anything is written."""
    plans, problems, used = [], [], set()
    for rev in revisions:
        base = dataset_id = folder_name(rev.case_id)
        n = 2
        while dataset_id.lower() in used:
            dataset_id, n = f"{base}-{n}", n + 1
        used.add(dataset_id.lower())
        try:
            plans.append(_Plan(rev, _input_of(store, rev), dataset_id))
        except InvalidInputError as exc:
            problems.append(str(exc))
    if problems:
        more = f" ({len(problems) - 1} more cases have the same kind of problem)" if len(problems) > 1 else ""
        raise InvalidInputError(f"{problems[0]}{more}; nothing was written")
    return plans


def _input_of(store, rev: Revision) -> Path:
    """The input to read for a revision: the copy in the store, else the unchanged original."""
    name = f"case {rev.case_id!r} (revision {rev.revision})"
    if rev.input_copy:
        path = store.root / rev.input_copy
        if not path.exists():
            raise CorruptStoreError(f"{name}: its input copy {rev.input_copy} is missing from the store; run "
                                    f"`toothmcl corrections check {store.root}`")
        return path
    fix = "save the case again with its input copied in (copy_input=True), or leave it out with --cases"
    if not rev.input_path:
        raise InvalidInputError(f"{name} was saved without its input scan (no path, no copy in the store), so "
                                f"there is nothing to pair the labels with; {fix}")
    path = Path(rev.input_path)
    if not path.exists():
        raise InvalidInputError(f"{name}: its input {path} was not copied into the store and is gone; put "
                                f"the scan back at that path, or {fix}")
    if path.is_file() and rev.input_sha256 and sha256_file(path) != rev.input_sha256:
        raise InvalidInputError(f"{name}: its input {path} changed after the labels were saved (SHA-256 "
                                f"differs); put the original scan back, or {fix}")
    return path


def _metadata(rev: Revision) -> dict:
    return {"store_case_id": rev.case_id, "revision": rev.revision, "annotator": rev.annotator,
            "created_utc": rev.created_utc, "model_name": rev.model_name, "model_version": rev.model_version,
            "input_sha256": rev.input_sha256}


def _interactions(store, rev: Revision) -> list[dict]:
    """The click-tool interactions saved in the case's revisions up to ``rev``, oldest first, each
    with the ``revision`` (and its annotator) it was saved in."""
    out = []
    for earlier in store.revisions(rev.case_id):
        if earlier.revision > rev.revision:
            break
        for op in earlier.operations:
            if isinstance(op, dict) and op.get("op") == "interactive":
                out.append({**op, "revision": earlier.revision, "annotator": earlier.annotator})
    return out


def _record(store, plan: _Plan) -> CBCTRecord | IOSRecord:
    rev = plan.revision
    loaded = store.load(rev.case_id, rev.revision)
    source = f"store:{rev.case_id}@{rev.revision}"
    interactions = _interactions(store, rev)
    if rev.modality == "cbct":
        from ..io.volume import read_volume

        volume = read_volume(plan.input_path)
        if volume.array.shape != loaded.corrected.shape:
            raise InvalidInputError(f"case {rev.case_id!r}: the input {plan.input_path.name} has shape (K, J, I) "
                                    f"{volume.array.shape} but the labels {loaded.corrected.shape}; the input is "
                                    "not the scan that was corrected: leave the case out with --cases")
        if not volume.geometry.allclose(rev.geometry, atol=1e-3):
            logger.warning("case %s: the input's header geometry differs from the one saved with the labels; "
                           "both are exported on the saved one", rev.case_id)
        image = Volume(volume.array, rev.geometry, source=str(plan.input_path))
        labels = Volume(loaded.corrected, rev.geometry)
        return CBCTRecord(plan.dataset_id, rev.patient_id, image, labels, source, _metadata(rev), interactions)
    mesh = _ios_mesh(rev, loaded.corrected, loaded.vertices_ras, plan.input_path)
    jaw = rev.jaw or _jaw_from_labels(rev, loaded.corrected)
    from ..io.teeth3ds import instances_from_labels

    return IOSRecord(plan.dataset_id, rev.patient_id, jaw, mesh, loaded.corrected.astype(np.int32),
                     instances_from_labels(loaded.corrected), source, _metadata(rev), interactions)


def _ios_mesh(rev: Revision, labels: np.ndarray, vertices, path: Path) -> SurfaceMesh:
    """The mesh the labels follow: saved vertices (or the input's) and the input's faces."""
    from ..io.mesh import read_mesh

    scan = read_mesh(path)
    n = len(labels)
    if n == scan.n_file_vertices:  # file order; an unreferenced file vertex sits at its nearest kept one
        faces = scan.clean_to_file[scan.mesh.faces]
        derived = scan.mesh.vertices_ras[np.maximum(scan.file_to_clean, 0)]
        exact = scan.clean_to_file[np.maximum(scan.file_to_clean, 0)] == np.arange(n)
    elif n == scan.mesh.n_vertices:  # the cleaned mesh's order
        faces, derived, exact = scan.mesh.faces, scan.mesh.vertices_ras, np.ones(n, dtype=bool)
    else:
        raise InvalidInputError(
            f"case {rev.case_id!r}: {n} labels but the input mesh {path.name} has {scan.n_file_vertices} vertices "
            f"({scan.mesh.n_vertices} after cleaning); the labels belong to another mesh: leave the case out")
    if vertices is None:
        return SurfaceMesh(derived, faces, jaw=rev.jaw or "")
    gap = float(np.max(np.abs(vertices[exact] - derived[exact]), initial=0.0))
    if gap > 1e-3:
        raise InvalidInputError(
            f"case {rev.case_id!r}: the vertices saved with the labels are up to {gap:.3g} mm away from the input "
            f"mesh {path.name}'s; the labels follow another version of the mesh (or other units): leave it out")
    return SurfaceMesh(np.asarray(vertices, dtype=np.float64), faces, jaw=rev.jaw or "")


def _jaw_from_labels(rev: Revision, labels: np.ndarray) -> str:
    jaws = {fdi.jaw_of(t) for t in fdi.present_teeth(np.unique(labels))}
    if len(jaws) != 1:
        found = "no tooth" if not jaws else "teeth of both jaws"
        raise InvalidInputError(f"case {rev.case_id!r} was saved without its jaw and its labels hold {found}; "
                                "save it again with jaw='upper' or 'lower', or leave it out with --cases")
    return jaws.pop()

