"""CorrectionStore: what a saved correction records, append-only revisions, and bad input refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3

import numpy as np
import pytest
import SimpleITK as sitk

from ToothMCLCore.corrections import CorrectionStore, CorrectionStoreError, CorruptStoreError, Revision
from ToothMCLCore.errors import InvalidInputError, ToothMCLError
from ToothMCLCore.io import write_volume
from ToothMCLCore.types import Geometry, Volume

GEOMETRY = Geometry([0.5, 0.5, 0.6], [-10.0, 20.0, 5.0], np.eye(3))
MODEL = {"model": "cbct_swinunetr_demo_v1", "model_version": "1.0.0", "model_sha256": "ab" * 32,
         "date": "2026-01-01T00:00:00+00:00"}


def _prediction() -> np.ndarray:
    """(6, 8, 10) uint8: teeth 44 and 45 side by side, one metal voxel."""
    labels = np.zeros((6, 8, 10), dtype=np.uint8)
    labels[1:4, 1:4, 1:4] = 44
    labels[1:4, 4:7, 1:4] = 45
    labels[4, 0, 0] = 99
    return labels


def _swapped(labels: np.ndarray) -> np.ndarray:
    out = labels.copy()
    out[labels == 44], out[labels == 45] = 45, 44
    return out


@pytest.fixture
def store(tmp_path):
    return CorrectionStore(tmp_path / "store", create=True)


@pytest.fixture
def input_file(tmp_path):
    """A CBCT file on GEOMETRY with the prediction's shape."""
    rng = np.random.default_rng(0)
    path = tmp_path / "case_017.nii.gz"
    write_volume(path, Volume(rng.normal(size=(6, 8, 10)).astype(np.float32), GEOMETRY))
    return path


def _save(store, **overrides):
    pred = _prediction()
    kwargs = {"case_id": "case_017", "prediction": pred, "corrected": _swapped(pred), "geometry": GEOMETRY,
              "model": MODEL, "annotator": "dr who", "note": "44/45 were swapped",
              "diff": [{"op": "swap", "from": 44, "to": 45, "voxels": 54}]}
    kwargs.update(overrides)
    return store.save(**kwargs)


def _nothing_written(store) -> bool:
    return store.cases() == [] and not any((store.root / "cases").iterdir()) \
        and not any((store.root / "tmp").iterdir())


def test_a_saved_correction_reads_back_with_labels_input_model_and_annotator(store, input_file):
    """Labels, input SHA-256 and copy, model, annotator, note, UTC time and both diffs come back."""
    pred = _prediction()
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    saved = _save(store, input_path=str(input_file))

    loaded = store.load("case_017")
    rev = loaded.revision
    assert isinstance(saved, Revision) and saved.revision == rev.revision == 1
    np.testing.assert_array_equal(loaded.prediction, pred)
    np.testing.assert_array_equal(loaded.corrected, _swapped(pred))
    assert loaded.prediction.dtype == np.uint8 and loaded.geometry.allclose(GEOMETRY)
    assert (rev.model_name, rev.model_version, rev.model_sha256) == ("cbct_swinunetr_demo_v1", "1.0.0", "ab" * 32)
    assert rev.model["date"] == MODEL["date"]
    assert (rev.annotator, rev.note) == ("dr who", "44/45 were swapped")
    assert before <= dt.datetime.fromisoformat(rev.created_utc) <= dt.datetime.now(dt.timezone.utc)
    assert rev.input_sha256 == hashlib.sha256(input_file.read_bytes()).hexdigest()
    assert (store.root / rev.input_copy).read_bytes() == input_file.read_bytes()
    assert rev.operations == [{"op": "swap", "from": 44, "to": 45, "voxels": 54}]
    changes = {(e["change"], e["from"], e["to"]) for e in rev.changed_teeth}
    assert changes == {("renumbered", 44, 45), ("renumbered", 45, 44)}


def test_cbct_labels_are_nifti_files_on_the_input_grid(store, input_file):
    """The stored corrected.nii.gz opens in any NIfTI reader on exactly the input's grid."""
    rev = _save(store, input_path=str(input_file))
    image = sitk.ReadImage(str(store.root / rev.folder / "corrected.nii.gz"))
    source = sitk.ReadImage(str(input_file))
    assert image.GetSize() == source.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), source.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(image.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), _swapped(_prediction()))


def test_saving_a_case_again_adds_a_revision_and_keeps_the_earlier_one(store):
    """Revision 2 does not touch revision 1: its labels and file bytes stay exactly as saved."""
    first = _save(store)
    files_before = {p.name: p.read_bytes() for p in (store.root / first.folder).iterdir()}
    corrected = _swapped(_prediction())
    corrected[corrected == 99] = 0
    second = _save(store, corrected=corrected, annotator="dr no", note="metal was noise")

    assert [r.revision for r in store.revisions("case_017")] == [1, 2] and second.revision == 2
    np.testing.assert_array_equal(store.load("case_017", revision=1).corrected, _swapped(_prediction()))
    np.testing.assert_array_equal(store.load("case_017").corrected, corrected)
    assert {p.name: p.read_bytes() for p in (store.root / first.folder).iterdir()} == files_before
    assert store.cases()[0].revisions == 2 and store.cases()[0].last_annotator == "dr no"


def test_the_index_refuses_to_change_or_delete_a_saved_revision(store):
    """Even a direct SQL UPDATE or DELETE on a revision row is refused by the index."""
    _save(store)
    with sqlite3.connect(store.root / "index.sqlite") as conn:
        with pytest.raises(sqlite3.IntegrityError, match="never changed"):
            conn.execute("UPDATE revisions SET annotator = 'someone else'")
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            conn.execute("DELETE FROM revisions")
    assert store.revision("case_017").annotator == "dr who"


def test_the_input_is_copied_once_per_case_and_content(store, input_file):
    """Three saves of one input keep a single copy; copy_input=False records only path and SHA-256."""
    first = _save(store, input_path=str(input_file))
    second = _save(store, input_path=str(input_file))
    third = _save(store, input_path=str(input_file), copy_input=False)
    assert first.input_copy == second.input_copy and third.input_copy == ""
    assert third.input_sha256 == first.input_sha256 and third.input_path == str(input_file)
    copies = list((store.root / first.input_copy).parent.parent.iterdir())
    assert len(copies) == 1


def test_a_volume_without_a_file_is_kept_in_the_store_once_and_exports(store, tmp_path):
    """A CBCT loaded from DICOM or made in memory (no input file, as 3D Slicer holds it) is saved
    with its voxels: the copy reads back with the same voxels and grid, a second save of the same
    volume keeps one copy, the caller's SHA-256 (of the voxels) is recorded, no temp file is left
    behind, and the case exports as training data."""
    from ToothMCLCore.corrections.export import export_store
    from ToothMCLCore.io import read_volume
    from ToothMCLCore.io.dataset_layout import read_dataset

    image = Volume(np.random.default_rng(3).normal(size=(6, 8, 10)).astype(np.float32), GEOMETRY)
    first = _save(store, input_sha256="cd" * 32, input_volume=image)
    second = _save(store, input_sha256="cd" * 32, input_volume=image)
    assert first.input_path == "" and first.input_sha256 == "cd" * 32
    assert first.input_copy and first.input_copy == second.input_copy
    copy = read_volume(store.root / first.input_copy)
    np.testing.assert_array_equal(copy.array, image.array)
    assert copy.geometry.allclose(GEOMETRY, atol=1e-5)
    assert not any((store.root / "tmp").iterdir())
    export_store(store, tmp_path / "Dataset303_Memory", "nnunet")
    (case,) = read_dataset(tmp_path / "Dataset303_Memory").cases
    np.testing.assert_array_equal(case.load().labels.array, _swapped(_prediction()))


def test_ios_labels_round_trip_per_vertex_with_the_vertices(store):
    """IOS corrections keep (N,) per-vertex labels and (N, 3) vertices; the diff counts vertices."""
    rng = np.random.default_rng(1)
    pred = np.array([0] * 20 + [36] * 15 + [37] * 15, dtype=np.int32)
    corr = pred.copy()
    corr[20:25] = 0
    vertices = rng.normal(size=(50, 3))
    rev = store.save("scan 3 lower", prediction=pred, corrected=corr, model={"model": "ios_pt_v1"},
                     annotator="ann", modality="ios", jaw="lower", vertices=vertices, input_path=None)
    loaded = store.load("scan 3 lower")
    np.testing.assert_array_equal(loaded.corrected, corr)
    np.testing.assert_allclose(loaded.vertices_ras, vertices)
    assert rev.unit == "vertices" and rev.jaw == "lower" and rev.shape == (50,)
    (edit,) = rev.changed_teeth
    assert edit["change"] == "boundary" and edit["before"] - edit["overlap"] == 5


def test_corrected_labels_of_another_shape_are_refused_and_nothing_is_written(store):
    """A correction on another grid than the prediction is refused before any file is written."""
    with pytest.raises(InvalidInputError, match=r"shape \(6, 8, 9\).*prediction has \(6, 8, 10\)"):
        _save(store, corrected=np.zeros((6, 8, 9), dtype=np.uint8))
    assert _nothing_written(store)


@pytest.mark.parametrize("value, match", [(19, r"\[19\].*not FDI"), (300, "0..300"), (-1, "-1..")])
def test_label_values_that_are_not_fdi_numbers_are_refused(store, value, match):
    """Values other than 0, FDI numbers and 99 are refused with a message naming them."""
    corrected = _prediction().astype(np.int32)
    corrected[0, 0, 0] = value
    with pytest.raises(InvalidInputError, match=match):
        _save(store, corrected=corrected)
    assert _nothing_written(store)


@pytest.mark.parametrize("overrides, match", [
    ({"annotator": "  "}, "annotator"),
    ({"model": {"model_version": "1"}}, "names no model"),
    ({"geometry": None}, "Geometry"),
    ({"corrected": _prediction().astype(np.float32) + 0.5}, "integer"),
    ({"input_sha256": "0" * 64, "input_path": "INPUT"}, "changed after it was segmented"),
    ({"input_path": "missing.nii.gz"}, "does not exist"),
    ({"modality": "ios"}, r"\(N,\) vertices"),
])
def test_inconsistent_saves_are_refused_with_a_message(store, input_file, overrides, match):
    """Missing annotator or model name, no geometry, fractional labels, a changed or missing input."""
    if overrides.get("input_path") == "INPUT":
        overrides["input_path"] = str(input_file)
    elif "input_path" in overrides:
        overrides["input_path"] = str(input_file.parent / overrides["input_path"])
    with pytest.raises(InvalidInputError, match=match):
        _save(store, **overrides)
    assert _nothing_written(store)


def test_labels_that_do_not_fit_the_input_image_are_refused(store, tmp_path):
    """Labels of (6, 8, 10) voxels saved for a (6, 8, 12) image are refused: wrong scan."""
    other = tmp_path / "other.nii.gz"
    write_volume(other, Volume(np.random.default_rng(2).normal(size=(6, 8, 12)).astype(np.float32), GEOMETRY))
    with pytest.raises(InvalidInputError, match="belong to another scan"):
        _save(store, input_path=str(other))
    assert _nothing_written(store)


def test_the_slicer_module_call_is_accepted(tmp_path):
    """SegmentationLogic.saveCorrection's exact call (string provenance, voxel SHA-256) saves revision 1."""
    store = CorrectionStore(tmp_path / "corrections", create=True)
    pred = _prediction()
    ijk_to_ras = np.diag([0.5, 0.5, 0.5, 1.0])
    ijk_to_ras[:3, 3] = [-10, 20, 5]
    rev = store.save(
        case_id="case 017", input_path="", input_sha256=hashlib.sha256(b"voxels").hexdigest(),
        prediction=pred, corrected=_swapped(pred), geometry=Geometry.from_ijk_to_ras(ijk_to_ras),
        model={k: str(v) for k, v in MODEL.items()}, annotator="Dr Who", note="",
        diff=[{"op": "swap", "from": 44, "to": 45, "voxels": 54}],
    )
    assert rev.revision == 1 and rev.input_copy == "" and rev.input_sha256 == hashlib.sha256(b"voxels").hexdigest()
    assert CorrectionStore(tmp_path / "corrections" / "index.sqlite").revision("case 017").annotator == "Dr Who"


def test_a_folder_that_is_not_a_store_is_refused_with_what_to_do(tmp_path):
    """Opening a plain folder or a missing path says it is no store; create=True refuses a full folder."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(CorrectionStoreError, match="is not a corrections store.*create"):
        CorrectionStore(tmp_path / "photos")
    with pytest.raises(CorrectionStoreError, match="no corrections store at"):
        CorrectionStore(tmp_path / "nowhere")
    with pytest.raises(CorrectionStoreError, match="not empty and not a corrections store"):
        CorrectionStore(tmp_path / "photos", create=True)
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["a.jpg"]
    assert not (tmp_path / "nowhere").exists()


def test_a_garbage_index_gives_an_error_that_points_to_check(store):
    """Garbage bytes in index.sqlite give a CorruptStoreError naming `toothmcl corrections check`."""
    _save(store)
    (store.root / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (store.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(CorruptStoreError, match="toothmcl corrections check .* --repair") as info:
        CorrectionStore(store.root)
    assert isinstance(info.value, ToothMCLError)


def test_unknown_cases_and_revisions_name_what_exists(store):
    """Asking for a missing case lists the cases; a missing revision gives the range."""
    _save(store)
    with pytest.raises(InvalidInputError, match="'case_99' is not in .*'case_017'"):
        store.load("case_99")
    with pytest.raises(InvalidInputError, match="revisions 1..1, not 5"):
        store.load("case_017", revision=5)
