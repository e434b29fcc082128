"""``toothmcl export-dataset``: real corrections stores exported as nnU-Net / Teeth3DS datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ToothMCLCore import cli
from ToothMCLCore.corrections import CorrectionStore, CorrectionStoreError, Revision
from ToothMCLCore.corrections.export import export_store
from ToothMCLCore.errors import InvalidInputError, OutputError
from ToothMCLCore.io import write_volume
from ToothMCLCore.io.dataset_layout import read_dataset
from ToothMCLCore.io.mesh import write_mesh
from ToothMCLCore.types import Geometry, SurfaceMesh, Volume

GEOMETRY = Geometry([0.4, 0.5, 0.6], [-10.0, 20.0, 5.0], np.eye(3))
MODEL = {"model": "cbct_swinunetr_demo_v1", "model_version": "1.0.0"}


def _labels(seed: int) -> np.ndarray:
    """(8, 10, 12) uint8 FDI labels: 11 and 21, plus a seed-dependent 36 block."""
    labels = np.zeros((8, 10, 12), dtype=np.uint8)
    labels[1:3, 1:4, 1:4], labels[1:3, 5:8, 1:4] = 11, 21
    labels[4:6, 1 + seed % 3:4 + seed % 3, 5:9] = 36
    return labels


def _scan(folder, name: str, seed: int):
    """A CBCT file of (K, J, I) 8 x 10 x 12 voxels on GEOMETRY."""
    path = folder / f"{name}.nii.gz"
    write_volume(path, Volume(np.random.default_rng(seed).normal(size=(8, 10, 12)).astype(np.float32), GEOMETRY))
    return path


def _save_cbct(store, tmp_path, case_id: str, seed: int, annotator: str = "dr who", **kwargs):
    pred = _labels(seed)
    corrected = pred.copy()
    corrected[corrected == 11] = 12  # the correction the dataset must carry
    kwargs.setdefault("input_path", _scan(tmp_path, case_id, seed))
    return store.save(case_id, prediction=pred, corrected=corrected, geometry=GEOMETRY, model=MODEL,
                      annotator=annotator, **kwargs)


def _jaw_mesh(tmp_path, name: str) -> tuple:
    """An OBJ grid of 20 vertices / 24 triangles (40 x 30 mm) and its vertices."""
    x, y = np.meshgrid(np.linspace(0, 40, 5), np.linspace(0, 30, 4))
    vertices = np.stack([x.ravel(), y.ravel(), np.sin(x.ravel())], axis=1)
    quads = [(r * 5 + c, r * 5 + c + 1, (r + 1) * 5 + c, (r + 1) * 5 + c + 1) for r in range(3) for c in range(4)]
    faces = np.array([f for a, b, c, d in quads for f in ((a, b, d), (a, d, c))])
    path = tmp_path / f"{name}.obj"
    write_mesh(path, SurfaceMesh(vertices, faces))
    return path, vertices, faces


def _save_ios(store, tmp_path, case_id: str, jaw: str = "lower", **kwargs):
    path, vertices, _ = _jaw_mesh(tmp_path, case_id)
    teeth = (36, 46) if jaw == "lower" else (11, 21)
    labels = np.array([0] * 10 + [teeth[0]] * 5 + [teeth[1]] * 5, dtype=np.uint8)
    return store.save(case_id, input_path=path, prediction=labels, corrected=labels, model={"model": "ios_pt_v1"},
                      annotator="ann", modality="ios", jaw=jaw, vertices=vertices, **kwargs)


@pytest.fixture
def store(tmp_path):
    """CBCT: p1 scanned twice (two cases), p2, p3 and 'case 4' (unsafe id); one IOS case."""
    store = CorrectionStore(tmp_path / "store", create=True)
    _save_cbct(store, tmp_path, "p1_2024", 1, patient_id="P1")
    _save_cbct(store, tmp_path, "p1_2025", 2, patient_id="P1")
    _save_cbct(store, tmp_path, "p2", 3, patient_id="P2")
    _save_cbct(store, tmp_path, "p3", 4)
    _save_cbct(store, tmp_path, "case 4", 5, patient_id="P4")
    _save_ios(store, tmp_path, "ios_lower", patient_id="P1")
    return store


def _tree(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cbct_cases_export_as_nnunet_and_read_back_with_the_corrected_labels(store, tmp_path):
    """Every CBCT case comes back with its latest corrected labels, saved geometry and input voxels."""
    result = export_store(store.root, tmp_path / "Dataset301_Corr", "nnunet", seed=0)
    assert result.skipped == {"modality": ["ios_lower"]}
    dataset = read_dataset(tmp_path / "Dataset301_Corr")
    assert sorted(c.case_id for c in dataset.cases) == ["case_4", "p1_2024", "p1_2025", "p2", "p3"]
    for case in dataset.cases:
        record = case.load()
        store_id = case.metadata["store_case_id"]
        loaded = store.load(store_id)
        np.testing.assert_array_equal(record.labels.array, loaded.corrected)
        assert 12 in record.labels.array and 11 not in record.labels.array
        assert record.labels.geometry.allclose(GEOMETRY, atol=1e-5)
        np.testing.assert_allclose(record.image.array, np.random.default_rng(
            {"p1_2024": 1, "p1_2025": 2, "p2": 3, "p3": 4, "case 4": 5}[store_id]).normal(size=(8, 10, 12)),
            atol=1e-6)
        assert case.source == f"store:{store_id}@1" and case.metadata["annotator"] == "dr who"
    patients = {c.case_id: c.patient_id for c in dataset.cases}
    assert patients == {"p1_2024": "P1", "p1_2025": "P1", "p2": "P2", "p3": "p3", "case_4": "P4"}
    assert "input_path" not in json.dumps(dataset.manifest)


def test_exporting_a_store_twice_gives_identical_bytes(store, tmp_path):
    """Same store, split and seed: every file of the two exports is byte-identical."""
    export_store(store.root, tmp_path / "first", "nnunet", split="0.6,0.2,0.2", seed=5)
    export_store(store, tmp_path / "second", "nnunet", split="0.6,0.2,0.2", seed=5)
    assert _tree(tmp_path / "first") == _tree(tmp_path / "second")


def test_scans_of_one_patient_never_straddle_splits(store, tmp_path):
    """Whatever the seed, the two scans of P1 share a split; every split follows splits.json."""
    for seed in range(6):
        dataset = export_store(store, tmp_path / f"ds{seed}", "nnunet", split="0.4,0.3,0.3", seed=seed).dataset
        assert len({c.split for c in dataset.cases if c.patient_id == "P1"}) == 1
        splits = json.loads((dataset.root / "splits.json").read_text())
        assert all(c.case_id in splits[c.split] for c in dataset.cases)


def test_the_latest_revision_is_exported_or_the_latest_by_the_chosen_annotator(store, tmp_path):
    """A second revision by dr no replaces dr who's labels; --annotator 'dr who' brings them back."""
    corrected = _labels(3)
    corrected[corrected == 21] = 22
    store.save("p2", input_path=tmp_path / "p2.nii.gz", prediction=_labels(3), corrected=corrected,
               geometry=GEOMETRY, model=MODEL, annotator="dr no", patient_id="P2")
    latest = {c.case_id: c for c in export_store(store, tmp_path / "latest", "nnunet").dataset.cases}["p2"]
    assert 22 in latest.load().labels.array and latest.source == "store:p2@2"
    result = export_store(store, tmp_path / "who", "nnunet", annotator="dr who", cases=["p2", "p3"])
    assert [c.source for c in result.dataset.cases] == ["store:p2@1", "store:p3@1"]
    assert 12 in result.dataset.cases[0].load().labels.array
    result = export_store(store, tmp_path / "no", "nnunet", annotator="dr no")
    assert [c.case_id for c in result.dataset.cases] == ["p2"] and len(result.skipped["annotator"]) == 4


def test_ios_cases_export_in_teeth3ds_layout_with_the_input_faces(store, tmp_path):
    """The IOS case: <jaw>/<patient>/<case>.obj with the input mesh's faces, labels per vertex."""
    result = export_store(store, tmp_path / "ios", "teeth3ds")
    assert len(result.skipped["modality"]) == 5
    (case,) = result.dataset.cases
    assert case.paths["mesh"] == tmp_path / "ios" / "lower" / "P1" / "ios_lower.obj"
    record = case.load()
    _, vertices, faces = _jaw_mesh(tmp_path, "check")
    np.testing.assert_allclose(record.mesh.vertices_ras, vertices, atol=1e-6)
    np.testing.assert_array_equal(record.mesh.faces, faces)
    np.testing.assert_array_equal(record.labels, store.load("ios_lower").corrected)
    assert record.jaw == "lower" and record.instances.max() == 2 and record.patient_id == "P1"


def test_a_folder_that_is_not_a_store_is_refused_and_nothing_is_written(tmp_path):
    """A folder of other files: CorrectionStoreError, no OUT, the folder untouched."""
    folder = tmp_path / "not_a_store"
    folder.mkdir()
    (folder / "scan.nii.gz").write_bytes(b"data")
    with pytest.raises(CorrectionStoreError, match="not a corrections store"):
        export_store(folder, tmp_path / "out", "nnunet")
    assert not (tmp_path / "out").exists() and [p.name for p in folder.iterdir()] == ["scan.nii.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_store"]


def test_an_input_that_was_not_copied_and_is_gone_is_named_with_the_fix(store, tmp_path):
    """copy_input=False and the scan deleted: the error names the case and how to fix it; no OUT."""
    _save_cbct(store, tmp_path, "p9", 9, copy_input=False)
    (tmp_path / "p9.nii.gz").unlink()
    before = _tree(store.root)
    with pytest.raises(InvalidInputError, match=r"case 'p9' \(revision 1\).*is gone.*copy_input=True.*--cases"):
        export_store(store, tmp_path / "out", "nnunet")
    assert not (tmp_path / "out").exists() and _tree(store.root) == before
    assert len(export_store(store, tmp_path / "out", "nnunet", cases=["p2", "p3"]).dataset.cases) == 2


def test_an_original_input_that_changed_is_refused(store, tmp_path):
    """Not copied, and the file at the saved path now holds another scan: refused, not exported wrongly."""
    _save_cbct(store, tmp_path, "p8", 8, copy_input=False)
    _scan(tmp_path, "p8", 99)
    with pytest.raises(InvalidInputError, match="changed after the labels were saved"):
        export_store(store, tmp_path / "out", "nnunet")


def test_a_store_without_cases_of_the_format_says_which_format_to_use(tmp_path):
    """Only IOS cases and --format nnunet: InvalidInputError suggesting teeth3ds; nothing written."""
    store = CorrectionStore(tmp_path / "store", create=True)
    _save_ios(store, tmp_path, "ios_a")
    with pytest.raises(InvalidInputError, match="no CBCT case.*1 IOS cases.*--format teeth3ds"):
        export_store(store, tmp_path / "out", "nnunet")
    assert not (tmp_path / "out").exists()


def test_unknown_case_ids_are_refused(store, tmp_path):
    """--cases with a typo lists the unknown id."""
    with pytest.raises(InvalidInputError, match="p22"):
        export_store(store, tmp_path / "out", "nnunet", cases=["p2", "p22"])


def test_out_inside_the_store_is_refused_and_the_store_untouched(store, tmp_path):
    """Writing the dataset into the store (or replacing the store with --overwrite) is refused."""
    before = _tree(store.root)
    for out, overwrite in ((store.root / "export", False), (store.root, True), (tmp_path, True)):
        with pytest.raises(OutputError, match="corrections store"):
            export_store(store, out, "nnunet", overwrite=overwrite)
    assert _tree(store.root) == before


def test_patient_id_is_kept_with_the_revision_and_defaults_to_the_case_id(store):
    """save(patient_id=...) is read back; without one, and in older stores, it is the case id."""
    assert store.revision("p1_2025").patient_id == "P1" and store.revision("p3").patient_id == "p3"
    meta = json.loads((store.root / store.revision("p2").folder / "meta.json").read_text())
    assert meta["patient_id"] == "P2"
    older = store.revision("p2").to_dict()
    del older["patient_id"]
    assert Revision.from_dict(older).patient_id == "p2"
    with pytest.raises(InvalidInputError, match="patient id"):
        store.save("p5", prediction=_labels(0), corrected=_labels(0), geometry=GEOMETRY, model=MODEL,
                   annotator="x", patient_id="bad\nid")


# -- command line ------------------------------------------------------------------------------

def _main(monkeypatch, *argv) -> int:
    """``toothmcl`` main() as the console script runs it."""
    return cli.main([str(a) for a in argv])


def test_cli_exports_and_prints_splits_and_skipped_cases(store, tmp_path, monkeypatch, capsys):
    """Exit 0; the summary gives cases, patients per split and the skipped IOS case."""
    out = tmp_path / "Dataset301_Corr"
    assert _main(monkeypatch, "export-dataset", store.root, out, "--format", "nnunet", "--seed", "1") == 0
    text = capsys.readouterr().out
    assert "exported 5 CBCT cases of 4 patients" in text and "skipped 1 cases of the other modality" in text
    assert "--format teeth3ds" in text and (out / "manifest.json").is_file()


@pytest.mark.parametrize("args, code, message", [
    (["--split", "0.8,0.3"], 2, "three fractions"),
    (["--cases", "nope"], 2, "nope"),
])
def test_cli_exit_code_is_non_zero_on_bad_input(store, tmp_path, monkeypatch, capsys, args, code, message):
    """Bad options: the documented exit code, one line on stderr, no OUT."""
    out = tmp_path / "out"
    assert _main(monkeypatch, "export-dataset", store.root, out, "--format", "nnunet", *args) == code
    err = capsys.readouterr().err
    assert err.startswith("toothmcl: error:") and message in err and not out.exists()


def test_cli_refuses_a_non_store_and_a_non_empty_out(store, tmp_path, monkeypatch, capsys):
    """Not a store: exit 7; OUT holding other files: exit 6 and the files kept."""
    (tmp_path / "empty").mkdir()
    assert _main(monkeypatch, "export-dataset", tmp_path / "empty", tmp_path / "out", "--format", "nnunet") == 7
    assert "not a corrections store" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert _main(monkeypatch, "export-dataset", store.root, tmp_path / "busy", "--format", "nnunet") == 6
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("save_vertices", [True, False])
def test_ios_labels_in_file_order_keep_an_unreferenced_vertex_and_remap_faces(tmp_path, save_vertices):
    """A scan with a stray vertex (no face uses it): labels follow the file's 21 vertices, faces too."""
    path, vertices, faces = _jaw_mesh(tmp_path, "scan")
    stray = np.array([[20.0, 15.0, 0.1]])
    vertices = np.concatenate([stray, vertices])
    faces = faces + 1
    write_mesh(path, SurfaceMesh(vertices, faces))
    labels = np.array([0] + [0] * 10 + [36] * 5 + [46] * 5, dtype=np.uint8)
    store = CorrectionStore(tmp_path / "store", create=True)
    store.save("scan", input_path=path, prediction=labels, corrected=labels, model={"model": "ios_pt_v1"},
               annotator="ann", modality="ios", vertices=vertices if save_vertices else None)
    (case,) = export_store(store, tmp_path / "ios", "teeth3ds").dataset.cases
    record = case.load()
    assert record.jaw == "lower" and case.paths["mesh"].parent.name == "scan"
    np.testing.assert_array_equal(record.mesh.faces, faces)
    np.testing.assert_array_equal(record.labels, labels)
    np.testing.assert_allclose(record.mesh.vertices_ras[1:], vertices[1:], atol=1e-6)
    if save_vertices:
        np.testing.assert_allclose(record.mesh.vertices_ras[0], stray[0], atol=1e-6)


def test_click_interactions_are_exported_with_the_case_each_click_placed_in_it(tmp_path):
    """A CBCT case whose two merged teeth were split with two clicks (then renumbered in a second
    revision) and a scan painted with the brush: the export carries every interaction with the
    store revision it was saved in, and each click's voxel (CBCT) or nearest vertex (IOS) in the
    exported case, so a click model can be trained from them; a case fixed without clicks has none."""
    from ToothMCLCore.interactive.cbct_tools import split_tooth
    from ToothMCLCore.interactive.ios_tools import ScanGraph, brush

    store = CorrectionStore(tmp_path / "store", create=True)
    path = _scan(tmp_path, "c1", 1)
    labels = _labels(1)
    merged = np.where(labels == 21, 11, labels)

    def ras(k, j, i):
        return (GEOMETRY.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]

    image = Volume(np.zeros(labels.shape, np.float32), GEOMETRY)
    split, interaction = split_tooth(image, merged, ras(2, 2, 2), ras(2, 6, 2))
    store.save("c1", prediction=merged, corrected=split, geometry=GEOMETRY, model=MODEL, annotator="ann",
               input_path=path, diff=[interaction.to_operation()])
    store.save("c1", prediction=merged, corrected=np.where(split == 36, 37, split), geometry=GEOMETRY, model=MODEL,
               annotator="lead", input_path=path, diff=[{"op": "reassign", "from": 36, "to": 37}])
    _save_cbct(store, tmp_path, "c2", 2)

    cases = {c.case_id: c for c in export_store(store, tmp_path / "cbct", "nnunet", split=(1, 0, 0)).dataset.cases}
    (exported,) = cases["c1"].interactions()
    assert exported["tool"] == "split" and exported["revision"] == 1 and exported["annotator"] == "ann"
    assert [c["voxel_kji"] for c in exported["clicks"]] == [[2, 2, 2], [2, 6, 2]]
    assert sorted(exported["labels"]) == sorted(interaction.labels) and exported["voxels"] == interaction.changed
    assert cases["c2"].interactions() == [] and "interactions" not in cases["c2"].paths

    mesh_path, vertices, faces = _jaw_mesh(tmp_path, "scan")
    teeth = np.array([0] * 10 + [36] * 5 + [46] * 5)
    graph = ScanGraph(SurfaceMesh(vertices, faces, jaw="lower"), jaw="lower")
    painted, stroke = brush(graph, teeth, vertices[12] + [0.0, 0.0, 0.5], 36, radius_mm=1.0)
    store.save("scan", input_path=mesh_path, prediction=teeth, corrected=painted, model={"model": "ios_pt_v1"},
               annotator="ann", modality="ios", jaw="lower", vertices=vertices, diff=[stroke.to_operation()])
    (case,) = export_store(store, tmp_path / "ios", "teeth3ds").dataset.cases
    (exported,) = case.interactions()
    assert exported["tool"] == "brush" and exported["clicks"][0]["vertex"] == 12
    assert exported["clicks"][0]["distance_mm"] == pytest.approx(0.5, abs=1e-3)
    assert case.paths["interactions"].name == "scan.interactions.json"
