"""write_dataset / read_dataset: nnU-Net v2 and Teeth3DS layouts, reproducible bytes, splits, checks."""

from __future__ import annotations

import gzip
import hashlib
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from ToothMCLCore import fdi
from ToothMCLCore.errors import InvalidInputError, OutputError
from ToothMCLCore.io.dataset_layout import read_dataset, write_dataset
from ToothMCLCore.io.dataset_records import CBCTRecord, IOSRecord
from ToothMCLCore.io.dataset_split import assign_splits, parse_fractions
from ToothMCLCore.io.mesh import read_mesh
from ToothMCLCore.io.teeth3ds import read_teeth3ds_json
from ToothMCLCore.types import Geometry, SurfaceMesh, Volume

_C, _S = math.cos(math.radians(30)), math.sin(math.radians(30))
GEOMETRY = Geometry([0.4, 0.5, 0.6], [-10.0, 20.0, 5.0], [[_C, -_S, 0], [_S, _C, 0], [0, 0, 1]])


def _cbct(case_id: str, patient_id: str, seed: int = 0) -> CBCTRecord:
    """A 12 x 10 x 8 (I, J, K) int16 volume with teeth 11, 21, 36, 48 and metal (99)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(-1000, 3000, size=(8, 10, 12)).astype(np.int16)
    labels = np.zeros((8, 10, 12), dtype=np.uint8)
    labels[1:3, 1:4, 1:4], labels[1:3, 5:8, 1:4], labels[4:6, 1:4, 5:9], labels[7, 9, 11] = 11, 21, 36, 99
    labels[5:7, 6:9, 8:11] = 48
    return CBCTRecord(case_id, patient_id, Volume(image, GEOMETRY), Volume(labels, GEOMETRY),
                      source=f"test:{case_id}", metadata={"seed": np.int64(seed)})


def _ios(case_id: str, patient_id: str, jaw: str = "upper", seed: int = 0) -> IOSRecord:
    """A 5 x 4 vertex grid (24 triangles, 40 x 30 mm) with two teeth of ``jaw``."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, 40, 5), np.linspace(0, 30, 4))
    vertices = np.stack([x.ravel(), y.ravel(), rng.normal(size=20)], axis=1)
    quads = [(r * 5 + c, r * 5 + c + 1, (r + 1) * 5 + c, (r + 1) * 5 + c + 1) for r in range(3) for c in range(4)]
    faces = np.array([f for a, b, c, d in quads for f in ((a, b, d), (a, d, c))])
    teeth = (11, 21) if jaw == "upper" else (36, 46)
    labels = np.array([0] * 10 + [teeth[0]] * 5 + [teeth[1]] * 5)
    instances = np.array([0] * 10 + [1] * 5 + [2] * 5)
    return IOSRecord(case_id, patient_id, jaw, SurfaceMesh(vertices, faces), labels, instances,
                     source=f"test:{case_id}")


def _files(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cbct_records():
    return [_cbct("p1_a", "p1", 1), _cbct("p1_b", "p1", 2), _cbct("p2", "p2", 3), _cbct("p3", "p3", 4),
            _cbct("p4", "p4", 5)]


def test_exporting_the_same_records_twice_gives_identical_bytes(tmp_path):
    """Two exports of the same records into differently named folders are byte-identical."""
    for fmt, records in (("nnunet", _cbct_records), ("teeth3ds", lambda: [_ios("a_upper", "a"),
                                                                        _ios("a_lower", "a", "lower", 1)])):
        write_dataset(records(), tmp_path / f"{fmt}_first", fmt, split="0.5,0.25,0.25", seed=3)
        write_dataset(iter(records()), tmp_path / f"{fmt}_second", fmt, split="0.5,0.25,0.25", seed=3)
        first, second = _files(tmp_path / f"{fmt}_first"), _files(tmp_path / f"{fmt}_second")
        assert first.keys() == second.keys() and first == second


def test_nifti_files_are_gzipped_without_a_time_stamp(tmp_path):
    """Every .nii.gz has gzip mtime 0 and no file name, so the bytes do not depend on when or where."""
    write_dataset(_cbct_records(), tmp_path / "ds", "nnunet")
    gz = sorted((tmp_path / "ds").rglob("*.nii.gz"))
    assert len(gz) == 10
    for path in gz:
        head = path.read_bytes()[:10]
        assert head[:3] == b"\x1f\x8b\x08" and head[3] & 0x08 == 0 and head[4:8] == b"\0\0\0\0"


def test_nnunet_layout_has_the_files_and_dataset_json_nnunet_v2_expects(tmp_path):
    """imagesTr/<case>_0000, labelsTr/<case>, consecutive labels 0..33, numTraining = imagesTr cases."""
    ds = write_dataset(_cbct_records(), tmp_path / "Dataset301_Test", "nnunet", split=(0.6, 0.2, 0.2), seed=1)
    root = ds.root
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CBCT"} and meta["file_ending"] == ".nii.gz"
    assert sorted(meta["labels"].values()) == list(range(34))
    assert meta["labels"]["background"] == 0 and meta["labels"]["36 lower left first molar"] == 22
    assert meta["toothmcl_label_values"][22] == 36 and meta["toothmcl_label_values"][33] == 99
    images = sorted(p.name for p in (root / "imagesTr").iterdir())
    labels = sorted(p.name for p in (root / "labelsTr").iterdir())
    assert meta["numTraining"] == len(images) == len(labels) == len(ds.split("train")) + len(ds.split("val"))
    assert images == [f"{c.case_id}_0000.nii.gz" for c in ds.cases if c.split != "test"]
    assert labels == [f"{c.case_id}.nii.gz" for c in ds.cases if c.split != "test"]
    test_ids = [c.case_id for c in ds.split("test")]
    assert test_ids and sorted(p.name for p in (root / "imagesTs").iterdir()) == [f"{c}_0000.nii.gz" for c in test_ids]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / labels[0])))
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= set(range(34)) and 22 in seg and 33 in seg
    splits = json.loads((root / "splits.json").read_text())
    assert splits == {s: [c.case_id for c in ds.split(s)] for s in ("train", "val", "test")}
    assert json.loads((root / "splits_final.json").read_text()) == [{"train": splits["train"], "val": splits["val"]}]
    assert meta["training"][0] == {"image": f"./imagesTr/{splits['train'][0]}_0000.nii.gz",
                                   "label": f"./labelsTr/{splits['train'][0]}.nii.gz"}


def test_cbct_round_trip_gives_back_fdi_labels_image_and_geometry(tmp_path):
    """read_dataset + load: the same image voxels, FDI labels (not class indices) and oblique geometry."""
    ds = write_dataset(_cbct_records(), tmp_path / "ds", "nnunet")
    originals = {r.case_id: r for r in _cbct_records()}
    assert {c.case_id for c in read_dataset(tmp_path / "ds").cases} == set(originals)
    for case in read_dataset(tmp_path / "ds").cases:
        record, original = case.load(), originals[case.case_id]
        np.testing.assert_array_equal(record.labels.array, original.labels.array)
        np.testing.assert_array_equal(record.image.array, original.image.array)
        assert record.image.array.dtype == np.int16
        assert record.labels.geometry.allclose(GEOMETRY, atol=1e-5) and record.image.geometry.allclose(GEOMETRY, 1e-5)
        assert (record.patient_id, record.source, record.metadata) == (original.patient_id, original.source,
                                                                        {"seed": int(original.metadata["seed"])})
    assert ds.manifest["cases"][0]["labels_present"] == [0, 11, 21, 36, 48, 99]


def test_teeth3ds_layout_follows_the_release_and_reads_back(tmp_path):
    """<jaw>/<patient>/<case>.obj + .json with exactly the release keys; labels follow the OBJ vertices."""
    records = [_ios("X1_upper", "X1"), _ios("X1_lower", "X1", "lower", 1), _ios("Y2_upper", "Y2", seed=2)]
    write_dataset(records, tmp_path / "ios", "teeth3ds", split=(1, 0, 0))
    root = tmp_path / "ios"
    assert (root / "lower" / "X1" / "X1_lower.obj").is_file() and (root / "upper" / "Y2" / "Y2_upper.json").is_file()
    doc = json.loads((root / "upper" / "X1" / "X1_upper.json").read_text())
    assert list(doc) == ["id_patient", "jaw", "labels", "instances"] and doc["id_patient"] == "X1"
    scan = read_mesh(root / "upper" / "X1" / "X1_upper.obj")  # how a loader of the release reads it
    labels = read_teeth3ds_json(root / "upper" / "X1" / "X1_upper.json", n_vertices=scan.n_file_vertices)
    np.testing.assert_array_equal(labels.labels, records[0].labels)
    for case in read_dataset(root).cases:
        loaded, original = case.load(), next(r for r in records if r.case_id == case.case_id)
        np.testing.assert_allclose(loaded.mesh.vertices_ras, original.mesh.vertices_ras, atol=1e-6)
        np.testing.assert_array_equal(loaded.mesh.faces, original.mesh.faces)
        np.testing.assert_array_equal(loaded.labels, original.labels)
        np.testing.assert_array_equal(loaded.instances, original.instances)
        assert (loaded.jaw, loaded.patient_id, case.split) == (original.jaw, original.patient_id, "train")


def test_manifest_lists_every_file_with_its_sha256_size_and_the_cases_sources(tmp_path):
    """Every file but the manifest is listed with a matching SHA-256 and size; cases keep source and split."""
    ds = write_dataset(_cbct_records(), tmp_path / "ds", "nnunet", seed=7)
    manifest = json.loads((ds.root / "manifest.json").read_text())
    on_disk = {p.relative_to(ds.root).as_posix() for p in ds.root.rglob("*") if p.is_file()} - {"manifest.json"}
    assert {f["path"] for f in manifest["files"]} == on_disk
    for entry in manifest["files"]:
        data = (ds.root / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    assert manifest["split"]["seed"] == 7 and manifest["tool"]["name"] == "ToothMCL" and manifest["tool"]["version"]
    assert {c["case_id"]: c["source"] for c in manifest["cases"]}["p2"] == "test:p2"
    assert "created" not in json.dumps(manifest) and "time" not in json.dumps(manifest)


def test_patients_never_straddle_splits_and_split_sizes_follow_the_fractions():
    """30 patients with 1-3 scans: one split per patient, case counts within a patient of the targets."""
    rng = np.random.default_rng(0)
    per_patient = {f"P{i:03d}": int(rng.integers(1, 4)) for i in range(30)}
    total = sum(per_patient.values())
    for seed in range(5):
        assignment = assign_splits(per_patient, (0.7, 0.15, 0.15), seed)
        assert set(assignment) == set(per_patient)
        for name, fraction in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
            cases = sum(n for p, n in per_patient.items() if assignment[p] == name)
            assert abs(cases - fraction * total) <= 3
    assert assign_splits(per_patient, (0.7, 0.15, 0.15), 1) == assign_splits(dict(reversed(per_patient.items())),
                                                                               (0.7, 0.15, 0.15), 1)
    assert assign_splits(per_patient, (0.7, 0.15, 0.15), 1) != assign_splits(per_patient, (0.7, 0.15, 0.15), 2)


def test_both_cases_of_a_patient_share_a_split_in_the_written_dataset(tmp_path):
    """Exported cases of one patient (two scans of p1, two jaws of a patient) carry one split."""
    for seed in range(4):
        ds = write_dataset(_cbct_records(), tmp_path / f"ds{seed}", "nnunet", split="0.4,0.3,0.3", seed=seed)
        assert len({c.split for c in ds.cases if c.patient_id == "p1"}) == 1
        assert sum(ds.counts()[s][0] for s in ("train", "val", "test")) == 5


def test_tiny_datasets_put_everything_in_train_unless_asked_otherwise():
    """One or two patients at 0.8/0.1/0.1 all go to train; 0.5/0.5/0 holds one of two out."""
    assert assign_splits({"a": 1}, (0.8, 0.1, 0.1)) == {"a": "train"}
    assert assign_splits({"a": 1, "b": 1}, (0.8, 0.1, 0.1)) == {"a": "train", "b": "train"}
    assert sorted(assign_splits({"a": 1, "b": 1}, (0.5, 0.5, 0.0)).values()) == ["train", "val"]
    assert sorted(assign_splits({f"p{i}": 1 for i in range(10)}, (0.8, 0.1, 0.1)).values()).count("train") == 8


@pytest.mark.parametrize("bad", ["0.8,0.1", "0.8,0.3,0.1", "a,b,c", "-0.2,0.6,0.6"])
def test_bad_split_fractions_are_refused(bad):
    """Not three fractions summing to 1: InvalidInputError that shows an example."""
    with pytest.raises(InvalidInputError, match="0.8,0.1,0.1"):
        parse_fractions(bad)


def test_read_dataset_names_a_missing_label_file(tmp_path):
    """Deleting a label file: read_dataset says which file is gone and which image lost its pair."""
    write_dataset(_cbct_records(), tmp_path / "ds", "nnunet", split=(1, 0, 0))
    (tmp_path / "ds" / "labelsTr" / "p2.nii.gz").unlink()
    with pytest.raises(InvalidInputError, match=r"labelsTr/p2\.nii\.gz.*missing.*imagesTr/p2_0000\.nii\.gz"):
        read_dataset(tmp_path / "ds")


def test_read_dataset_names_a_changed_file_and_an_unlisted_one(tmp_path):
    """A modified mesh fails the SHA-256 check; an extra image without a label is refused by name."""
    write_dataset([_ios("a_upper", "a")], tmp_path / "ios", "teeth3ds")
    obj = tmp_path / "ios" / "upper" / "a" / "a_upper.obj"
    obj.write_bytes(obj.read_bytes().replace(b"v 0.000000", b"v 0.000001", 1))
    with pytest.raises(InvalidInputError, match=r"upper/a/a_upper\.obj.*changed"):
        read_dataset(tmp_path / "ios")
    write_dataset(_cbct_records(), tmp_path / "ds", "nnunet", split=(1, 0, 0))
    (tmp_path / "ds" / "imagesTr" / "extra_0000.nii.gz").write_bytes(b"not listed")
    with pytest.raises(InvalidInputError, match=r"imagesTr/extra_0000\.nii\.gz.*not listed"):
        read_dataset(tmp_path / "ds")


def test_read_dataset_refuses_a_folder_without_manifest(tmp_path):
    """A plain folder is not mistaken for an export."""
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidInputError, match="manifest.json"):
        read_dataset(tmp_path / "plain")


def test_structures_of_an_nnunet_model_are_exported_as_background_and_the_teeth_kept(tmp_path, caplog):
    """A case segmented by a ToothFairy2 model (jaw and canal beside the teeth) exports: the structures
    become background (our CBCT classes are teeth and metal), the teeth are unchanged, and the log says so."""
    record = _cbct("jaw", "j")
    teeth = record.labels.array.copy()
    record.labels.array[0] = 1  # lower jawbone
    record.labels.array[7, 0:3, 0:3] = 3  # left inferior alveolar canal
    with caplog.at_level("INFO"):
        write_dataset([record] + _cbct_records()[:2], tmp_path / "ds", "nnunet")
    loaded = next(c for c in read_dataset(tmp_path / "ds").cases if c.case_id == "jaw").load()
    expected = np.where(np.isin(record.labels.array, [1, 3]), 0, teeth)
    np.testing.assert_array_equal(loaded.labels.array, expected)
    assert "lower jawbone, left inferior alveolar canal exported as background" in caplog.text


def test_a_bad_record_midway_leaves_no_output_at_all(tmp_path):
    """Primary teeth in the third CBCT record: the error names the case; no OUT and no temp folder remain."""
    bad = _cbct("child", "c")
    bad.labels.array[0, 0, 0] = 55

    def records():
        yield from _cbct_records()[:2]
        yield bad

    with pytest.raises(InvalidInputError, match=r"'child'.*\[55\].*primary teeth"):
        write_dataset(records(), tmp_path / "ds", "nnunet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("record, match", [
    (_ios("a_upper", "a"), "takes CBCT records but got an IOS record"),
    (_cbct("bad id/with slash", "a"), "not file-name safe"),
])
def test_records_that_do_not_fit_the_format_are_refused(tmp_path, record, match):
    """An IOS record for nnunet or an unsafe case id: InvalidInputError, nothing written."""
    with pytest.raises(InvalidInputError, match=match):
        write_dataset([record], tmp_path / "ds", "nnunet")
    assert not (tmp_path / "ds").exists()


def test_duplicate_case_ids_are_refused_ignoring_case(tmp_path):
    """Two records 'Case1' and 'case1' would collide on case-insensitive file systems."""
    with pytest.raises(InvalidInputError, match="used twice"):
        write_dataset([_cbct("Case1", "a"), _cbct("case1", "b")], tmp_path / "ds", "nnunet")


def test_labels_on_another_grid_than_the_image_are_refused(tmp_path):
    """Labels shifted by 1 mm against the image: the error says to resample."""
    record = _cbct("a", "a")
    record.labels.geometry = Geometry(GEOMETRY.spacing, GEOMETRY.origin_ras + 1.0, GEOMETRY.direction_ras)
    with pytest.raises(InvalidInputError, match="another grid"):
        write_dataset([record], tmp_path / "ds", "nnunet")


def test_a_non_empty_out_is_refused_unless_overwrite_replaces_an_earlier_export(tmp_path):
    """Existing files are kept; --overwrite replaces an export but never a folder of other files."""
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(OutputError):
            write_dataset(_cbct_records(), other, "nnunet", overwrite=overwrite)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]

    write_dataset(_cbct_records(), tmp_path / "ds", "nnunet")
    with pytest.raises(OutputError, match="--overwrite"):
        write_dataset([_cbct("new", "n")], tmp_path / "ds", "nnunet")
    assert len(read_dataset(tmp_path / "ds").cases) == 5
    ds = write_dataset([_cbct("new", "n")], tmp_path / "ds", "nnunet", overwrite=True)
    assert [c.case_id for c in read_dataset(ds.root).cases] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "mine"]


def test_an_empty_out_folder_is_used(tmp_path):
    """An existing empty folder is not 'non-empty': the export goes there."""
    (tmp_path / "ds").mkdir()
    assert len(write_dataset([_cbct("a", "a")], tmp_path / "ds", "nnunet").cases) == 1


def test_ios_labels_of_the_other_jaw_are_refused(tmp_path):
    """An upper scan labelled 36: the Teeth3DS check names the case."""
    record = _ios("a_upper", "a")
    record.labels[-1] = 36
    with pytest.raises(InvalidInputError, match="a_upper.*other jaw"):
        write_dataset([record], tmp_path / "ios", "teeth3ds")


def test_gzip_payload_is_the_plain_nifti(tmp_path):
    """The .nii.gz decompresses to a NIfTI-1 file (348-byte header) SimpleITK reads as the same labels."""
    write_dataset([_cbct("a", "a")], tmp_path / "ds", "nnunet")
    raw = gzip.decompress((tmp_path / "ds" / "labelsTr" / "a.nii.gz").read_bytes())
    assert int.from_bytes(raw[:4], "little") == 348
    expected = fdi.fdi_to_class_index(_cbct("a", "a").labels.array, "cbct")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ds" / "labelsTr" / "a.nii.gz")))
    np.testing.assert_array_equal(seg, expected)


def test_folds_hold_whole_patients_balance_the_cases_and_repeat_with_the_seed():
    """3 folds of 10 patients (one with 3 scans): every patient in one fold, case counts within one
    patient's cases of each other, the same folds for the same seed, 1 fold or too many refused."""
    from ToothMCLCore.io.dataset_split import assign_folds

    patients = {f"p{i}": 2 for i in range(9)} | {"big": 3}
    folds = assign_folds(patients, 3, seed=4)
    assert set(folds) == set(patients) and set(folds.values()) == {0, 1, 2}
    sizes = [sum(n for p, n in patients.items() if folds[p] == k) for k in range(3)]
    assert sum(sizes) == 21 and max(sizes) - min(sizes) <= 3
    assert assign_folds(patients, 3, seed=4) == folds
    with pytest.raises(InvalidInputError, match="at least 2 folds"):
        assign_folds(patients, 1)
    with pytest.raises(InvalidInputError, match="11 folds need at least 11 patients"):
        assign_folds(patients, 11)


def test_a_given_test_list_and_cross_validation_folds_reach_the_reader(tmp_path):
    """Listed test cases put their patient (both jaws) in test, the rest is train/val; with folds,
    split(name, fold=k) tests on fold k and trains on the other folds' train cases only."""
    records = [_ios(f"P{i}_{jaw}", f"P{i}", jaw, seed=i) for i in range(8) for jaw in ("upper", "lower")]
    ds = write_dataset(records, tmp_path / "ds", "teeth3ds", split=(0.75, 0.25, 0.0), test_cases={"P3_upper",
                       "P6_lower"}, folds=3)
    back = read_dataset(tmp_path / "ds")
    assert {c.case_id for c in back.split("test")} == {"P3_upper", "P3_lower", "P6_upper", "P6_lower"}
    assert {c.patient_id for c in back.split("train")} | {c.patient_id for c in back.split("val")} == {
        f"P{i}" for i in (0, 1, 2, 4, 5, 7)}
    assert back.split("val") and back.manifest["split"]["test"] == "given list"
    assert back.folds == 3 == ds.folds
    for k in range(3):
        test = back.split("test", fold=k)
        train = back.split("train", fold=k)
        assert test and all(c.fold == k for c in test)
        assert {c.patient_id for c in test}.isdisjoint({c.patient_id for c in train})
        assert all(c.split == "train" and c.fold != k for c in train)
    assert sorted(c.case_id for k in range(3) for c in back.split("test", fold=k)) == sorted(r.case_id for r in records)
    with pytest.raises(InvalidInputError, match="fold 3 does not exist"):
        back.split("test", fold=3)
    plain = write_dataset(records, tmp_path / "plain", "teeth3ds")
    with pytest.raises(InvalidInputError, match="exported without folds"):
        plain.split("train", fold=0)
    with pytest.raises(InvalidInputError, match="no case of the test list is in this export"):
        write_dataset(records, tmp_path / "foreign", "teeth3ds", test_cases={"ZZZ_upper"})
    assert not (tmp_path / "foreign").exists()
