"""The corrections store: every corrected segmentation, kept with the prediction it corrects.

An annotator corrects a ToothMCL segmentation (in 3D Slicer or elsewhere) and saves it here;
the store keeps the input, the model's prediction, the corrected labels, who corrected it,
when, with which model, and what changed per tooth, so that corrections can become training
data later. It is append-only: saving a case again adds a revision, nothing saved is ever
overwritten or deleted.

Usage::

    store = CorrectionStore("corrections", create=True)
    rev = store.save("case_017", input_path="case_017.nii.gz", prediction=pred, corrected=corr,
                     geometry=volume.geometry, model=result.provenance, annotator="dr who",
                     patient_id="P0042")     # optional; keeps a patient's scans in one dataset split
    store.revisions("case_017")              # [Revision(revision=1, ...), ...]
    data = store.load("case_017")            # latest: data.prediction, data.corrected, data.revision

On disk (a folder; paths inside are stored relative to it, so the folder can be moved)::

    STORE/
      toothmcl-corrections.json   marker: "this folder is a store" (format, version)
      index.sqlite                SQLite index in WAL mode (+ index.sqlite-wal, -shm while in use):
                                    cases(case_id, folder, modality, created_utc)
                                    revisions(case_id, revision, created_utc, annotator, metadata JSON)
      cases/<case folder>/        one folder per case (name derived from the case id, made unique)
        r0001/                    one folder per revision, never modified once in place
          meta.json               the revision's metadata (= the index row), with file SHA-256s
          prediction.nii.gz       CBCT: uint8 label maps on the input grid (RAS geometry kept)
          corrected.nii.gz
          labels.npz              IOS instead: prediction, corrected (N,) uint8; vertices_ras (N, 3)
        inputs/<sha256>/<name>    copy of the input file or DICOM folder, one per content
      tmp/<host>-<pid>-<id>/      saves in progress (ignored by readers); tmp/leftover-<id>/ set aside
      index.sqlite.damaged-<time>, damaged/   kept by `check --repair` after rebuilding a damaged index

``toothmcl export-dataset`` (:mod:`.export`) turns the latest revision of every case into a
training dataset (nnU-Net v2 for CBCT, Teeth3DS for IOS), split by ``Revision.patient_id``
(the case id for revisions saved without one, including all made before patient ids were kept).

CBCT labels are ``.nii.gz`` rather than ``.npz``: they carry their geometry, open as is in
Slicer, ITK-SNAP and nnU-Net-style training code, and label maps compress well with gzip.
IOS labels are ``.npz`` (compressed, loaded without pickle): exact per-vertex arrays, any jaw,
and the vertex positions alongside; Teeth3DS JSON is an export format, not the storage format.

Why a killed save leaves a valid store (crash safety):

1. Everything is validated first; an invalid save raises before writing anything.
2. The label files (and the input copy, unless the case already holds that content) are
   written into a new folder under ``tmp/`` and fsync'ed, folder included.
3. Under the store's SQLite write lock (``BEGIN IMMEDIATE``) the save chooses the revision
   number (1 + the highest committed one), writes and fsyncs ``meta.json``, renames the temp
   folder to ``cases/<case>/rNNNN`` (atomic on one file system), fsyncs the case folder, inserts
   the row and commits (``synchronous=FULL``: the commit is on disk when ``save`` returns).
4. A revision exists only when its row does. A process killed before step 3 leaves a folder in
   ``tmp/``; killed inside step 3 it leaves, at worst, a complete ``rNNNN`` folder without a row
   (the write lock dies with the process). Readers only follow rows, so they never see either.
   The next save of that case holds the lock, finds ``rNNNN`` without a row and sets it aside
   in ``tmp/``; ``check(repair=True)`` removes such leftovers (never a folder a row names).

Two processes saving at once serialise on the write lock (waiting up to ``busy_timeout_s``),
so they get distinct, consecutive revision numbers. SQLite's locking needs a local file
system: keep stores off network drives. A damaged index (``CorruptStoreError``) can be rebuilt
from the revision folders' ``meta.json`` with ``toothmcl corrections check STORE --repair``.
"""

from .errors import CorrectionStoreError, CorruptStoreError
from .records import CaseSummary, LoadedRevision, Revision
from .store import CorrectionStore

__all__ = [
    "CaseSummary",
    "CorrectionStore",
    "CorrectionStoreError",
    "CorruptStoreError",
    "LoadedRevision",
    "Revision",
]
