"""CorrectionStore: save, list and load corrected segmentations, append-only and crash-safe.

See the package docstring (:mod:`ToothMCLCore.corrections`) for the layout on disk and why a
killed save leaves a valid store.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..errors import InvalidInputError
from ..io.atomic import atomic_write_text
from . import files as fs
from .diff import tooth_diff
from .errors import CorrectionStoreError, CorruptStoreError
from .files import (
    META_FILE,
    fsync_path,
    fsync_tree,
    new_temp_folder,
    remove_tree,
    sha256_file,
    stored_input_entry,
    write_label_files,
)
from .index import INDEX_NAME, Index, damaged_message
from .layout import (
    CASES_DIR,
    INPUTS_DIR,
    MARKER_NAME,
    TMP_DIR,
    complete_layout,
    is_store,
    not_a_store_message,
    resolve_store_path,
    utc_now,
)
from .records import (
    CaseSummary,
    LoadedRevision,
    Revision,
    check_case_id,
    check_geometry,
    check_input_shape,
    check_labels,
    check_modality,
    check_model,
    check_operations,
    check_patient_id,
    check_vertices,
)

logger = logging.getLogger(__name__)

#: the file a CBCT given as a volume (no input file) is kept as in the store
INPUT_VOLUME_NAME = "input.nii.gz"


class CorrectionStore:
    """An append-only store of corrected segmentations (a folder; layout in the package docstring).

    Args:
        path: the store folder (or its ``index.sqlite``).
        create: make a new store if ``path`` is missing or an empty folder; an existing store is
            opened as is.
        busy_timeout_s: how long a call waits while another process writes.

    Raises:
        CorrectionStoreError: ``path`` is not a store (and ``create`` is False, or the folder
            holds other files), or it was made by a newer ToothMCL.
        CorruptStoreError: the index is damaged or missing; ``toothmcl corrections check --repair``.
    """

    def __init__(self, path, create: bool = False, busy_timeout_s: float = 30.0):
        self.root = resolve_store_path(path)
        self.index = Index(self.root, busy_timeout_s)
        if (self.root / MARKER_NAME).is_file() and not self.index.path.is_file():
            raise CorruptStoreError(damaged_message(self.root, f"{INDEX_NAME} is missing"))
        if not is_store(self.root):
            if not create or (self.root.exists() and (self.root.is_file() or any(self.root.iterdir()))):
                message = not_a_store_message(self.root)
                if create and self.root.is_dir():
                    message = f"{self.root} is not empty and not a corrections store; choose a new or empty folder"
                raise CorrectionStoreError(message)
            self._create()
        self.index.validate()

    def __repr__(self) -> str:
        return f"CorrectionStore({str(self.root)!r})"

    def _create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CorrectionStoreError(f"cannot create corrections store {self.root} ({exc}); "
                                       "choose a writable folder") from None
        self.index.create(utc_now())  # first file of a new store, so that is_store() holds from here on
        complete_layout(self.root)
        logger.info("created corrections store %s", self.root)

    # -- saving -----------------------------------------------------------------------------
    def save(self, case_id, input_path=None, input_sha256=None, prediction=None, corrected=None,
             geometry=None, model=None, annotator: str = "", note: str = "", diff=None,
             copy_input: bool = True, modality: str = "cbct", jaw: str | None = None,
             vertices=None, patient_id: str | None = None, input_volume=None) -> Revision:
        """Save a corrected segmentation as the next revision of a case.

        Args:
            case_id: the case (one input scan), e.g. ``"case_017"``.
            input_path: the image (CBCT file or DICOM folder) or mesh (IOS) that was segmented;
                None or "" when it was not loaded from a file.
            input_sha256: its SHA-256; checked against the file when the file exists, computed
                when not given.
            prediction: the model's labels, ``(K, J, I)`` (CBCT) or ``(N,)`` (IOS) integers:
                FDI numbers, 0 background/gingiva, 99 metal (CBCT only).
            corrected: the corrected labels, same shape.
            geometry: :class:`~ToothMCLCore.types.Geometry` of the CBCT labels (the input grid);
                None for IOS.
            model: the prediction's provenance: ``model`` (name), ``model_version``,
                ``model_sha256``, and anything else (kept whole).
            annotator: who corrected it (required); note: free text.
            diff: the annotator's operations, e.g. ``[{"op": "swap", "from": 44, "to": 45, ...}]``.
            copy_input: copy the input file or folder into the store (once per case and content).
            modality: ``"cbct"`` or ``"ios"``; jaw: ``"upper"``/``"lower"``/None (IOS only).
            vertices: ``(N, 3)`` vertex positions of the IOS mesh, stored with the labels.
            patient_id: the patient the scan belongs to (default: the case id), so that a
                dataset exported from the store never splits one patient's scans between
                training and test. Kept with the revision (``Revision.patient_id``).
            input_volume: for a CBCT with no ``input_path`` (a volume loaded from DICOM or made in
                memory, as 3D Slicer holds them): its :class:`~ToothMCLCore.types.Volume`, kept as
                the case's input copy (:data:`INPUT_VOLUME_NAME`) so that the case can be exported
                as training data; ``input_sha256`` (e.g. of its voxels) is recorded as given.

        Returns:
            the :class:`Revision` saved (numbered after every revision committed before it).

        Raises:
            InvalidInputError: anything above is missing or inconsistent; nothing is written.
            CorrectionStoreError: the store stayed busy longer than ``busy_timeout_s``.
        """
        case_id = check_case_id(case_id)
        patient_id = check_patient_id(patient_id, case_id)
        modality, jaw = check_modality(modality, jaw)
        pred = check_labels("prediction", prediction, modality, jaw)
        corr = check_labels("corrected", corrected, modality, jaw)
        if pred.shape != corr.shape:
            raise InvalidInputError(
                f"corrected labels have shape {corr.shape} but the prediction has {pred.shape}; "
                f"save the correction on the prediction's {'voxel grid' if modality == 'cbct' else 'vertices'}"
            )
        geometry = check_geometry(geometry, modality)
        if modality == "cbct" and vertices is not None:
            raise InvalidInputError("vertices belong to IOS labels; pass vertices=None for CBCT")
        vertices = check_vertices(vertices, pred.shape[0]) if modality == "ios" else None
        model_dict, model_name, model_version, model_sha256 = check_model(model)
        annotator = str(annotator or "").strip()
        if not annotator:
            raise InvalidInputError("annotator is empty; give the name of who corrected the labels")
        operations = check_operations(diff)
        staging = None
        if input_volume is not None and not input_path and copy_input and modality == "cbct":
            staging = self._write_input(input_volume)
        try:
            if staging is not None:
                source = staging / INPUT_VOLUME_NAME
                copy_sha = fs.sha256_of_input(source)
                input_sha256 = str(input_sha256 or "").strip().lower() or copy_sha
            else:
                source, input_sha256, copy_sha = self._check_input(input_path, input_sha256, copy_input)
            if modality == "cbct" and source is not None:
                check_input_shape(source, pred.shape, geometry, logger)
            meta = {
                "case_id": case_id, "patient_id": patient_id, "modality": modality, "annotator": annotator, "note": str(note or ""),
                "model_name": model_name, "model_version": model_version, "model_sha256": model_sha256,
                "model": model_dict, "input_path": str(input_path or ""), "input_sha256": input_sha256,
                "shape": list(pred.shape), "geometry": geometry.to_dict() if geometry is not None else None,
                "jaw": jaw, "unit": "voxels" if modality == "cbct" else "vertices",
                "tooth_diff": tooth_diff(pred, corr), "operations": operations,
            }
            (self.root / TMP_DIR).mkdir(exist_ok=True)
            tmp = new_temp_folder(self.root / TMP_DIR)
            try:
                names = write_label_files(tmp, modality, pred, corr, geometry, vertices)
                meta["files"] = {name: sha256_file(tmp / name) for name in names}
                staged = None
                if copy_sha and not self._input_stored(case_id, copy_sha):
                    staged = fs.copy_input(source, tmp, copy_sha)
                fsync_tree(tmp)
                with self.index.write() as conn:
                    self._commit(conn, tmp, meta, source, staged, copy_sha)
            except BaseException:
                remove_tree(tmp)
                raise
            logger.info("saved %s revision %d (%d teeth changed) in %s", case_id, meta["revision"],
                        sum(e["change"] != "unchanged" for e in meta["tooth_diff"]), meta["folder"])
            return Revision.from_dict(meta)
        finally:
            if staging is not None:
                remove_tree(staging)

    def _write_input(self, volume) -> Path:
        """A staging folder in the store's temp folder holding ``volume`` as :data:`INPUT_VOLUME_NAME`."""
        from ..io.volume import write_volume

        (self.root / TMP_DIR).mkdir(exist_ok=True)
        folder = new_temp_folder(self.root / TMP_DIR)
        try:
            write_volume(folder / INPUT_VOLUME_NAME, volume)
        except BaseException:
            remove_tree(folder)
            raise
        return folder

    def _commit(self, conn, tmp: Path, meta: dict, source, staged, copy_sha) -> None:
        """Under the write lock: number the revision, move its folder into place, insert its row."""
        folder = self._case_folder(conn, meta["case_id"], meta["modality"])
        case_dir = self.root / CASES_DIR / folder
        case_dir.mkdir(parents=True, exist_ok=True)
        number = conn.execute("SELECT COALESCE(MAX(revision), 0) + 1 FROM revisions WHERE case_id = ?",
                              (meta["case_id"],)).fetchone()[0]
        meta["input_copy"] = self._place_input(case_dir, tmp, source, staged, copy_sha) if copy_sha else ""
        dest = case_dir / fs.revision_folder(number)
        meta.update(revision=number, created_utc=utc_now(), folder=dest.relative_to(self.root).as_posix())
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=1))
        fsync_path(tmp)
        if dest.exists():  # left by a save killed between its rename and its commit: not a revision
            self._set_aside(dest)
        os.rename(tmp, dest)
        fsync_path(case_dir)
        try:
            Index.insert(conn, meta)
        except BaseException:
            os.rename(dest, tmp)  # still under the lock: nobody has seen it
            raise

    def _set_aside(self, path: Path) -> None:
        """Move an uncommitted leftover into ``tmp/`` (removed there by ``check --repair``)."""
        aside = fs.new_leftover_folder(self.root / TMP_DIR)
        os.rename(path, aside / path.name)
        logger.warning("moved uncommitted leftover %s aside to %s", path, aside)

    def _case_folder(self, conn, case_id: str, modality: str) -> str:
        row = conn.execute("SELECT folder, modality FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is not None:
            if row[1] != modality:
                raise InvalidInputError(
                    f"case {case_id!r} holds {row[1].upper()} corrections; save {modality.upper()} "
                    "labels under another case id"
                )
            return row[0]
        base = candidate = fs.folder_name(case_id)
        suffix = 2
        while conn.execute("SELECT 1 FROM cases WHERE folder = ?", (candidate,)).fetchone():
            candidate, suffix = f"{base}-{suffix}", suffix + 1
        conn.execute("INSERT INTO cases (case_id, folder, modality, created_utc) VALUES (?, ?, ?, ?)",
                     (case_id, candidate, modality, utc_now()))
        return candidate

    def _check_input(self, input_path, input_sha256, copy: bool) -> tuple[Path | None, str, str]:
        """``(existing input path or None, SHA-256 to record, SHA-256 of the copy or "")``."""
        given = str(input_sha256 or "").strip().lower()
        if not input_path:
            return None, given, ""
        source = Path(input_path)
        if not source.exists():
            if copy:
                raise InvalidInputError(
                    f"input {source} does not exist, so it cannot be copied into the store; restore "
                    "it, or save with copy_input=False to record only its path and SHA-256"
                )
            return None, given, ""
        actual = fs.sha256_of_input(source)
        if given and given != actual:
            if source.is_file():
                raise InvalidInputError(
                    f"{source.name} has SHA-256 {actual[:12]}... but input_sha256 is {given[:12]}...; "
                    "the file changed after it was segmented: segment it again, or pass the file that was"
                )
            logger.info("input folder %s: keeping the caller's SHA-256 (of its voxels)", source)
        return source, given or actual, actual if copy else ""

    def _input_stored(self, case_id: str, copy_sha: str) -> bool:
        with self.index.read() as conn:
            row = conn.execute("SELECT folder FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return row is not None and stored_input_entry(
            self.root / CASES_DIR / row[0] / INPUTS_DIR / copy_sha) is not None

    def _place_input(self, case_dir: Path, tmp: Path, source, staged, copy_sha: str) -> str:
        """Path (relative to the store) of the case's copy of the input; moves ``staged`` there."""
        target = case_dir / INPUTS_DIR / copy_sha
        if stored_input_entry(target) is None:
            staged = staged or fs.copy_input(source, tmp, copy_sha)
            target.parent.mkdir(exist_ok=True)
            if target.exists():
                self._set_aside(target)
            os.rename(staged, target)
            fsync_path(target.parent)
        elif staged is not None:
            remove_tree(staged)  # another save stored the same content meanwhile
        return stored_input_entry(target).relative_to(self.root).as_posix()

    # -- reading ----------------------------------------------------------------------------
    def cases(self) -> list[CaseSummary]:
        """Every case with at least one revision, sorted by case id."""
        query = """
            SELECT c.case_id, c.modality,
                   (SELECT COUNT(*) FROM revisions r WHERE r.case_id = c.case_id),
                   (SELECT annotator FROM revisions r WHERE r.case_id = c.case_id ORDER BY revision DESC LIMIT 1),
                   (SELECT created_utc FROM revisions r WHERE r.case_id = c.case_id ORDER BY revision DESC LIMIT 1)
            FROM cases c ORDER BY c.case_id"""
        with self.index.read() as conn:
            rows = conn.execute(query).fetchall()
        return [CaseSummary(*row) for row in rows if row[2]]

    def revisions(self, case_id) -> list[Revision]:
        """All revisions of a case, oldest first.

        Raises:
            InvalidInputError: the store has no such case.
        """
        with self.index.read() as conn:
            rows = conn.execute("SELECT metadata FROM revisions WHERE case_id = ? ORDER BY revision",
                                (str(case_id),)).fetchall()
        if not rows:
            raise self._unknown_case(case_id)
        return [self._revision(row[0]) for row in rows]

    def revision(self, case_id, revision: int | None = None) -> Revision:
        """Metadata of one revision (the latest when ``revision`` is None)."""
        revisions = self.revisions(case_id)
        if revision is None:
            return revisions[-1]
        for rev in revisions:
            if rev.revision == int(revision):
                return rev
        raise InvalidInputError(
            f"case {case_id!r} has revisions {revisions[0].revision}..{revisions[-1].revision}, "
            f"not {revision}; see `toothmcl corrections show STORE {case_id}`"
        )

    def load(self, case_id, revision: int | None = None) -> LoadedRevision:
        """Labels and metadata of one revision (the latest when ``revision`` is None).

        Returns:
            :class:`LoadedRevision`: ``prediction`` and ``corrected`` as ``(K, J, I)`` or ``(N,)`` uint8.
        """
        rev = self.revision(case_id, revision)
        pred, corr, vertices = fs.read_label_files(self.root / rev.folder, rev.modality, rev.shape)
        return LoadedRevision(revision=rev, prediction=pred, corrected=corr, vertices_ras=vertices)

    def diff(self, case_id, from_revision: int, to_revision: int) -> list[dict]:
        """Per-tooth changes between the corrected labels of two revisions (see :mod:`.diff`)."""
        a, b = self.load(case_id, from_revision), self.load(case_id, to_revision)
        if a.corrected.shape != b.corrected.shape:
            raise InvalidInputError(
                f"revisions {from_revision} and {to_revision} of {case_id!r} label different grids "
                f"({a.corrected.shape} vs {b.corrected.shape}); compare revisions of the same input"
            )
        return tooth_diff(a.corrected, b.corrected)

    def check(self, repair: bool = False, verify_files: bool = True):
        """Check the store (see :func:`ToothMCLCore.corrections.check.check_store`)."""
        from .check import check_store

        return check_store(self.root, repair=repair, verify_files=verify_files)

    def _revision(self, metadata: str) -> Revision:
        try:
            return Revision.from_dict(json.loads(metadata))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptStoreError(damaged_message(self.root, f"unreadable revision record: {exc}")) from None

    def _unknown_case(self, case_id) -> InvalidInputError:
        known = [c.case_id for c in self.cases()]
        listed = ", ".join(repr(c) for c in known[:10]) + (", ..." if len(known) > 10 else "")
        return InvalidInputError(
            f"case {str(case_id)!r} is not in corrections store {self.root} "
            f"({'cases: ' + listed if known else 'it is empty'}); see `toothmcl corrections list {self.root}`"
        )

