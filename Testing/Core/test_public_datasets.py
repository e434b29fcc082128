"""Converters of the public datasets (ToothMCL Table A1) on tiny files in each published layout."""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import struct

import numpy as np
import pytest

from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.io.dataset_records import CBCTRecord, IOSRecord
from ToothMCLCore.io.public_datasets import (
    CONVERTERS,
    iter_cui,
    iter_iosseg,
    iter_tadpm,
    iter_teeth3ds,
    iter_toothfairy2,
)
from ToothMCLCore.io.public_datasets.iosseg import LOWER_PALETTE, UPPER_PALETTE
from ToothMCLCore.types import Geometry

# ------------------------------------------------------------------------------------------------
# File writers that mimic the published files
# ------------------------------------------------------------------------------------------------

SHAPE = (12, 14, 16)  # (K, J, I)
_ROT = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about S
GEOMETRY = Geometry([0.4, 0.45, 0.5], [10.0, -20.0, 5.0], _ROT)


def _write_image(path, array, geometry=GEOMETRY):
    import SimpleITK as sitk

    from ToothMCLCore.io.volume import sitk_image

    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk_image(array, geometry), str(path), useCompression=True)


def _cbct(seed=0):
    return np.random.default_rng(seed).normal(500, 200, SHAPE).astype(np.int16)


def _grid(nx=20, ny=20, step=2.0, z=0.0):
    """Vertices (nx*ny, 3) and counter-clockwise faces of a flat grid."""
    xs, ys = np.meshgrid(np.arange(nx) * step, np.arange(ny) * step, indexing="xy")
    vertices = np.c_[xs.ravel(), ys.ravel(), np.full(nx * ny, z)]
    faces = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            a = j * nx + i
            faces += [(a, a + 1, a + nx + 1), (a, a + nx + 1, a + nx)]
    return vertices, np.array(faces)


def _write_obj(path, vertices, faces):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def _write_stl(path, vertices, faces):
    path.parent.mkdir(parents=True, exist_ok=True)
    tri = vertices[faces].astype(np.float32)
    rec = np.zeros(len(faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = tri
    path.write_bytes(b"binary stl".ljust(80, b" ") + struct.pack("<I", len(faces)) + rec.tobytes())


def _write_colored_ply(path, vertices, faces, colors, binary=False):
    """PLY as Fast-TGCN writes it: vertex x y z nx ny nz, face indices + red green blue alpha."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment VCGLIB generated",
              f"element vertex {len(vertices)}"] + [f"property float {c}" for c in ("x", "y", "z", "nx", "ny", "nz")]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header += [f"property uchar {c}" for c in ("red", "green", "blue", "alpha")] + ["end_header"]
    normals = np.zeros_like(vertices)
    if not binary:
        body = [" ".join(f"{v:.5f}" for v in (*p, *n)) for p, n in zip(vertices, normals)]
        body += [f"3 {a} {b} {c} {r} {g} {bl} 255" for (a, b, c), (r, g, bl) in zip(faces, colors)]
        path.write_text("\n".join(header + body) + "\n")
        return
    vrec = np.zeros(len(vertices), dtype=[("p", "<f4", 6)])
    vrec["p"] = np.c_[vertices, normals]
    frec = np.zeros(len(faces), dtype=[("n", "u1"), ("v", "<i4", 3), ("c", "u1", 4)])
    frec["n"], frec["v"], frec["c"] = 3, faces, np.c_[colors, np.full(len(faces), 255)]
    path.write_bytes(("\n".join(header) + "\n").encode() + vrec.tobytes() + frec.tobytes())


# ------------------------------------------------------------------------------------------------
# ToothFairy2: nnU-Net v2 Dataset112_ToothFairy2, ids from the release's dataset.json
# ------------------------------------------------------------------------------------------------

_SIDES = {1: "Upper Right", 2: "Upper Left", 3: "Lower Left", 4: "Lower Right"}
_KINDS = ("Central Incisor", "Lateral Incisor", "Canine", "First Premolar", "Second Premolar", "First Molar",
          "Second Molar", "Third Molar (Wisdom Tooth)")


def _toothfairy2_labels():
    """The ``labels`` of the release's dataset.json (42 classes + NA1..NA6 placeholders)."""
    labels = {"background": 0, "Lower Jawbone": 1, "Upper Jawbone": 2, "Left Inferior Alveolar Canal": 3,
              "Right Inferior Alveolar Canal": 4, "Left Maxillary Sinus": 5, "Right Maxillary Sinus": 6,
              "Pharynx": 7, "Bridge": 8, "Crown": 9, "Implant": 10}
    na = iter(range(1, 7))
    for q in (1, 2, 3, 4):
        for p, kind in enumerate(_KINDS, start=1):
            labels[f"{_SIDES[q]} {kind}"] = q * 10 + p
        if q < 4:
            labels[f"NA{next(na)}"], labels[f"NA{next(na)}"] = q * 10 + 9, q * 10 + 10
    return labels


def _toothfairy2(tmp_path, labels_json=None, cases=("ToothFairy2F_001", "ToothFairy2P_002"), blocks=None):
    folder = tmp_path / "Dataset112_ToothFairy2"
    folder.mkdir(parents=True)
    doc = {"channel_names": {"0": "CBCT"}, "labels": labels_json or _toothfairy2_labels(),
           "numTraining": len(cases), "file_ending": ".mha"}
    (folder / "dataset.json").write_text(json.dumps(doc))
    blocks = blocks or {1: (0, 0, 0), 3: (2, 0, 0), 7: (4, 0, 0), 9: (6, 0, 0), 10: (8, 0, 0),
                        11: (0, 4, 4), 18: (2, 4, 4), 21: (4, 4, 4), 38: (6, 8, 8), 41: (8, 8, 8)}
    for n, case in enumerate(cases):
        lab = np.zeros(SHAPE, np.uint8)
        for value, (k, j, i) in blocks.items():
            lab[k:k + 2, j:j + 2, i:i + 2] = value
        _write_image(folder / "imagesTr" / f"{case}_0000.mha", _cbct(n))
        _write_image(folder / "labelsTr" / f"{case}.mha", lab)
    return folder


def test_toothfairy2_published_ids_become_fdi_restorations_metal_and_anatomy_background(tmp_path):
    """Teeth keep their FDI id, Crown/Implant become 99, jawbone/canal/pharynx become 0; geometry kept."""
    _toothfairy2(tmp_path)
    records = list(iter_toothfairy2(tmp_path))  # the folder holding Dataset112_ToothFairy2
    assert [r.case_id for r in records] == ["ToothFairy2F_001", "ToothFairy2P_002"]
    assert [r.patient_id for r in records] == ["ToothFairy2F_001", "ToothFairy2P_002"]
    rec = records[0]
    assert isinstance(rec, CBCTRecord)
    lab = rec.labels.array
    for source_id, (k, j, i), expected in ((1, (0, 0, 0), 0), (3, (2, 0, 0), 0), (7, (4, 0, 0), 0),
                                           (9, (6, 0, 0), 99), (10, (8, 0, 0), 99), (11, (0, 4, 4), 11),
                                           (18, (2, 4, 4), 18), (21, (4, 4, 4), 21), (38, (6, 8, 8), 38),
                                           (41, (8, 8, 8), 41)):
        assert lab[k, j, i] == expected, f"published id {source_id} should become {expected}"
    assert set(np.unique(lab)) == {0, 11, 18, 21, 38, 41, 99}
    assert rec.image.array.shape == lab.shape == SHAPE
    assert rec.image.geometry.allclose(GEOMETRY) and rec.labels.geometry.allclose(GEOMETRY)
    assert rec.metadata["teeth"] == [11, 18, 21, 38, 41] and rec.metadata["cohort"] == "F"
    assert "Pharynx" in rec.metadata["to_background"]


def test_toothfairy3_pulp_joins_its_tooth_and_restorations_can_be_background(tmp_path):
    """A ToothFairy3 pulp (id 111) becomes tooth 11, the lingual canal 0, a bridge 0 on request."""
    labels = {**_toothfairy2_labels(), "Lingual Canal": 105, "Upper Right Central Incisor Pulp": 111}
    _toothfairy2(tmp_path, labels, cases=("ToothFairy3F_001",), blocks={111: (0, 0, 0), 105: (4, 4, 4),
                                                                         8: (8, 8, 8), 11: (2, 0, 0)})
    (rec,) = iter_toothfairy2(tmp_path / "Dataset112_ToothFairy2", restorations="background")
    assert rec.labels.array[0, 0, 0] == 11 and rec.labels.array[2, 0, 0] == 11
    assert rec.labels.array[4, 4, 4] == 0 and rec.labels.array[8, 8, 8] == 0


def test_toothfairy2_bad_layouts_and_labels_name_the_file(tmp_path):
    """Unpaired files, undeclared ids, a shape mismatch and an unknown structure each give a clear error."""
    folder = _toothfairy2(tmp_path / "a")
    (folder / "labelsTr" / "ToothFairy2P_002.mha").unlink()
    with pytest.raises(InvalidInputError, match=r"ToothFairy2P_002_0000\.mha has no label.*--skip-unpaired"):
        list(iter_toothfairy2(folder))
    assert [r.case_id for r in iter_toothfairy2(folder, skip_unpaired=True)] == ["ToothFairy2F_001"]

    folder = _toothfairy2(tmp_path / "b", cases=("ToothFairy2F_001",), blocks={55: (0, 0, 0)})
    with pytest.raises(InvalidInputError, match=r"ToothFairy2F_001\.mha: label ids \[55\] are not in"):
        list(iter_toothfairy2(folder))

    folder = _toothfairy2(tmp_path / "c", cases=("ToothFairy2F_001",))
    _write_image(folder / "labelsTr" / "ToothFairy2F_001.mha", np.zeros((12, 14, 15), np.uint8))
    with pytest.raises(InvalidInputError, match=r"ToothFairy2F_001\.mha: label map shape .* differs"):
        list(iter_toothfairy2(folder))

    folder = _toothfairy2(tmp_path / "d", {**_toothfairy2_labels(), "Hyoid Bone": 60}, cases=("X_001",))
    with pytest.raises(InvalidInputError, match="'Hyoid Bone' \\(60\\)"):
        list(iter_toothfairy2(folder))
    with pytest.raises(InvalidInputError, match="no dataset.json"):
        list(iter_toothfairy2(tmp_path / "d" / "Dataset112_ToothFairy2" / "imagesTr"))


# ------------------------------------------------------------------------------------------------
# Cui et al.: NC-release-data/image/<name>.nii.gz + label/<name>.nii.gz
# ------------------------------------------------------------------------------------------------

RAS3 = Geometry([3.0, 3.0, 3.0], [-22.5, -19.5, -16.5], np.eye(3))


def _arch_teeth():
    """Voxel (k, j, i) and FDI of 12 teeth: 3 per quadrant on an arch, upper 18 mm above lower."""
    out = []
    for jaw, z, quads in (("upper", 7.5, (1, 2)), ("lower", -10.5, (4, 3))):
        for quadrant, sign in zip(quads, (1, -1)):  # right side is +x in RAS
            for p in (1, 2, 3):
                theta = (p - 0.5) * 0.35
                x, y = sign * 18 * np.sin(theta), 18 * np.cos(theta) - 6
                ijk = np.rint((np.array([x, y, z]) - RAS3.origin_ras) / 3.0).astype(int)
                out.append(((ijk[2], ijk[1], ijk[0]), quadrant * 10 + p))
    return out


def _cui(tmp_path, names, label_arrays, geometry=RAS3):
    root = tmp_path / "NC-release-data"
    for n, (name, lab) in enumerate(zip(names, label_arrays)):
        _write_image(root / "image" / f"{name}.nii.gz", _cbct(n), geometry)
        _write_image(root / "label" / f"{name}.nii.gz", lab, geometry)
    return root


def test_cui_fdi_labels_are_kept_and_dated_scans_of_one_patient_share_the_patient(tmp_path):
    """FDI-valued label maps pass unchanged; <patient>_<YYYYMMDD> names group a patient's scans."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:3, 1:3, 1:3], lab[5:7, 5:7, 5:7] = 11, 36
    names = ("1000813648_20180116", "1000813648_20190301", "X2313838")
    root = _cui(tmp_path, names, [lab] * 3, GEOMETRY)
    records = list(iter_cui(root))
    assert [r.case_id for r in records] == list(names)
    assert [r.patient_id for r in records] == ["1000813648", "1000813648", "X2313838"]
    assert np.array_equal(records[0].labels.array, lab)
    assert records[0].labels.geometry.allclose(GEOMETRY) and records[0].metadata["numbering"] == "fdi"


def test_cui_instance_ids_are_refused_unless_numbered_by_arch_order(tmp_path):
    """Instance ids without tooth meaning raise by default; arch-order numbering gives the FDI by position."""
    teeth = _arch_teeth()
    ids = np.random.default_rng(3).permutation(len(teeth)) + 1
    lab = np.zeros(SHAPE, np.uint8)
    for inst, ((k, j, i), _) in zip(ids, teeth):
        lab[k, j, i] = inst
    root = _cui(tmp_path, ["X0001"], [lab])
    with pytest.raises(InvalidInputError, match=r"X0001\.nii\.gz: label values .* not FDI.*numbering=arch-order"):
        list(iter_cui(root))
    (rec,) = iter_cui(root, numbering="arch-order")
    for (k, j, i), expected in teeth:
        assert rec.labels.array[k, j, i] == expected
    assert rec.metadata["numbering"].startswith("arch-order")


def test_cui_arch_order_numbers_a_phantom_dentition_on_an_oblique_grid():
    """Shuffled instance ids of a synthetic dentition get back their FDI numbers from anatomy alone."""
    from ToothMCLCore.io.public_datasets.cui import convert_labels
    from ToothMCLCore.synthetic.cbct import make_cbct_phantom

    _, truth = make_cbct_phantom(2, spacing=2.0, orientation="oblique", noise_std=0, blur_mm=0)
    teeth = [int(v) for v in np.unique(truth.array) if 0 < v < 99]
    instances = np.zeros(truth.array.shape, np.uint8)
    for tooth, inst in zip(teeth, np.random.default_rng(0).permutation(len(teeth)) + 1):
        instances[truth.array == tooth] = inst
    numbered, info = convert_labels(instances, truth.geometry, "arch-order")
    assert len(teeth) == 32 and np.array_equal(numbered, np.where(truth.array == 99, 0, truth.array))
    assert len(info["instance_to_fdi"]) == 32


def test_cui_unpaired_files_and_missing_folders_are_reported(tmp_path):
    """An image without its label, and a root without label/, raise with the file and the fix."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[0, 0, 0] = 11
    root = _cui(tmp_path, ["A_20200101", "B"], [lab, lab])
    (root / "label" / "B.nii.gz").unlink()
    with pytest.raises(InvalidInputError, match=r"image/B\.nii\.gz has no label"):
        list(iter_cui(root))
    assert [r.case_id for r in iter_cui(root, skip_unpaired=True)] == ["A_20200101"]
    shutil.rmtree(root / "label")
    with pytest.raises(InvalidInputError, match="no label/ folder"):
        list(iter_cui(root))


# ------------------------------------------------------------------------------------------------
# Teeth3DS: data_part_N/<jaw>/<ID>/<ID>_<jaw>.obj + .json (FDI per vertex)
# ------------------------------------------------------------------------------------------------

def _teeth3ds_scan(folder, patient, jaw, json_folder=None, teeth=(11, 21), extra_vertex=True):
    vertices, faces = _grid()
    left = teeth[0] if jaw == "upper" else teeth[0] + 20
    right = teeth[1] if jaw == "upper" else teeth[1] + 20
    labels = np.where(vertices[:, 0] < 10, left, np.where(vertices[:, 0] < 20, right, 0))
    instances = np.where(labels == left, 1, np.where(labels == right, 2, 0))
    if extra_vertex:  # an unused copy of vertex 0: merged when the mesh is cleaned
        vertices = np.vstack([vertices, vertices[:1]])
        labels, instances = np.r_[labels, labels[0]], np.r_[instances, instances[0]]
    _write_obj(folder / f"{patient}_{jaw}.obj", vertices, faces)
    doc = {"id_patient": patient, "jaw": jaw, "labels": labels.tolist(), "instances": instances.tolist()}
    target = json_folder or folder
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{patient}_{jaw}.json").write_text(json.dumps(doc))
    return labels[:400]


def test_teeth3ds_both_jaws_of_a_patient_share_it_and_fdi_labels_follow_the_cleaned_mesh(tmp_path):
    """Data parts are searched recursively; labels stay FDI, one per cleaned vertex; jaws share the ID."""
    expected = _teeth3ds_scan(tmp_path / "data_part_1" / "upper" / "0EAKT1CU", "0EAKT1CU", "upper")
    _teeth3ds_scan(tmp_path / "data_part_3" / "lower" / "0EAKT1CU", "0EAKT1CU", "lower")
    # challenge layout: labels in a separate tree
    _teeth3ds_scan(tmp_path / "3D_scans_per_patient_obj_files" / "patient1", "patient1", "upper",
                   json_folder=tmp_path / "ground-truth_labels_instances" / "patient1")
    records = list(iter_teeth3ds(tmp_path))
    assert [(r.case_id, r.patient_id, r.jaw) for r in records] == [
        ("0EAKT1CU_upper", "0EAKT1CU", "upper"), ("0EAKT1CU_lower", "0EAKT1CU", "lower"),
        ("patient1_upper", "patient1", "upper")]
    rec = records[0]
    assert isinstance(rec, IOSRecord)
    assert rec.metadata["n_file_vertices"] == 401 and rec.mesh.n_vertices == 400
    assert np.allclose(rec.mesh.vertices_ras, _grid()[0]) and len(rec.mesh.faces) == len(_grid()[1])
    assert np.array_equal(rec.labels, expected) and np.array_equal(rec.mesh.labels, expected)
    assert set(np.unique(records[1].labels)) == {0, 31, 41}
    assert set(np.unique(rec.instances)) == {0, 1, 2}


def test_teeth3ds_missing_or_wrong_label_files_are_refused(tmp_path):
    """A scan without JSON, a JSON of another vertex count and teeth of the other jaw raise."""
    folder = tmp_path / "upper" / "AAA"
    _teeth3ds_scan(folder, "AAA", "upper")
    _write_obj(tmp_path / "upper" / "BBB" / "BBB_upper.obj", *_grid())
    with pytest.raises(InvalidInputError, match=r"BBB_upper\.obj has no label file BBB_upper\.json"):
        list(iter_teeth3ds(tmp_path))
    assert [r.case_id for r in iter_teeth3ds(tmp_path, skip_unpaired=True)] == ["AAA_upper"]

    _teeth3ds_scan(folder, "AAA", "upper", extra_vertex=False)  # JSON now has 400 entries, OBJ 400: fine
    doc = json.loads((folder / "AAA_upper.json").read_text())
    doc["labels"] = doc["labels"][:-1]
    doc["instances"] = doc["instances"][:-1]
    (folder / "AAA_upper.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="AAA_upper.json"):
        list(iter_teeth3ds(tmp_path, skip_unpaired=True))

    _teeth3ds_scan(folder, "AAA", "upper", teeth=(31, 21))
    with pytest.raises(InvalidInputError, match="AAA_upper.json"):
        list(iter_teeth3ds(tmp_path, skip_unpaired=True))


# ------------------------------------------------------------------------------------------------
# TADPM: <patient>/{ori,final}/ with U/L STL and <jaw>_pred_landmarks.json
# ------------------------------------------------------------------------------------------------

def _tadpm_model(folder, stem, jaw, teeth, extra_keys=None, offset=0.0):
    vertices, faces = _grid(z=0.0 if jaw == "upper" else -12.0)
    _write_stl(folder / f"{stem}{'U' if jaw == 'upper' else 'L'}.stl", vertices, faces)
    seg = {str(t): {"vertices": (vertices[vertices[:, 0] // 10 == n] + [0.0, 0.0, offset]).tolist()}
           for n, t in enumerate(teeth)}
    seg.update(extra_keys or {})
    doc = {"segmentation": seg, "landmarks": {"11": {"cusp": [0, 0, 0]}}}
    (folder / f"{jaw}_pred_landmarks.json").write_text(json.dumps(doc))
    return vertices


def _tadpm(root, patients=("C01", "C02"), stages=("ori", "final")):
    for patient in patients:
        for stage in stages:
            folder = root / patient / stage
            folder.mkdir(parents=True)
            _tadpm_model(folder, patient, "upper", (11, 21))
            _tadpm_model(folder, patient, "lower", (31, 41))


def test_tadpm_point_lists_label_the_nearest_vertices_and_pre_post_models_share_the_patient(tmp_path):
    """Listed tooth points label their vertices with the key's FDI; ori and final of a patient share it."""
    _tadpm(tmp_path)
    records = list(iter_tadpm(tmp_path))
    assert [r.case_id for r in records] == [f"{p}_{s}_{j}" for p in ("C01", "C02") for s in ("ori", "final")
                                            for j in ("upper", "lower")]
    assert {r.patient_id for r in records[:4]} == {"C01"} and {r.patient_id for r in records[4:]} == {"C02"}
    rec = records[0]
    x = rec.mesh.vertices_ras[:, 0]
    assert np.all(rec.labels[x < 10] == 11) and np.all(rec.labels[(x >= 10) & (x < 20)] == 21)
    assert np.all(rec.labels[x >= 20] == 0)
    assert set(np.unique(records[1].labels)) == {0, 31, 41} and records[1].jaw == "lower"
    assert [r.metadata["stage"] for r in iter_tadpm(tmp_path, stages="ori")] == ["ori"] * 4


@pytest.mark.parametrize("stem, jaw", [("C01U", "upper"), ("C01L", "lower"), ("UL01_U", "upper"),
                                       ("UL01-L", "lower"), ("upper_pred_landmarks", "upper"),
                                       ("Mandible", "lower"), ("UL01", None), ("scan", None)])
def test_jaw_is_read_from_tadpm_style_file_names(stem, jaw):
    """Words, a lone U/L token or a final capital name the jaw; a name with both letters does not."""
    from ToothMCLCore.io.public_datasets._common import jaw_from_name

    assert jaw_from_name(stem) == jaw


def test_tadpm_bad_files_are_refused(tmp_path):
    """A missing final/ folder, a non-FDI key and label points off the mesh raise with the file name."""
    _tadpm(tmp_path / "a", patients=("C01",), stages=("ori",))
    with pytest.raises(InvalidInputError, match="C01/ has no final/ folder"):
        list(iter_tadpm(tmp_path / "a"))
    assert len(list(iter_tadpm(tmp_path / "a", skip_unpaired=True))) == 2

    folder = tmp_path / "b" / "C01" / "ori"
    folder.mkdir(parents=True)
    _tadpm_model(folder, "C01", "upper", (11,), extra_keys={"gum": {"vertices": []}})
    _tadpm_model(folder, "C01", "lower", (31,), offset=3.0)
    with pytest.raises(InvalidInputError, match=r"upper_pred_landmarks\.json: segmentation keys \['gum'\]"):
        list(iter_tadpm(tmp_path / "b", stages="ori"))
    _tadpm_model(folder, "C01", "upper", (11,))
    with pytest.raises(InvalidInputError, match=r"lower_pred_landmarks\.json: its tooth points lie 3\.00 mm"):
        list(iter_tadpm(tmp_path / "b", stages="ori"))


# ------------------------------------------------------------------------------------------------
# 3D-IOSSeg: <Index>_U.ply / <Index>_L.ply, labels as face colours
# ------------------------------------------------------------------------------------------------

@functools.cache
def _phantom(jaw):
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    return make_ios_phantom(1, jaw=jaw, resolution_mm=2.5)


def _palette_colors(mesh, jaw, first_half=(1, 2)):
    """Face colours from the phantom's FDI labels, palette halves = the given quadrants (upper)."""
    palette = UPPER_PALETTE if jaw == "upper" else LOWER_PALETTE
    if jaw == "lower":
        first_half = (first_half[0] + 2, first_half[1] + 2)
    face_fdi = np.max(mesh.labels[mesh.faces], axis=1)  # a face touching a tooth belongs to it
    colors = np.full((len(face_fdi), 3), 255, dtype=np.int64)
    for n, quadrant in enumerate(first_half):
        for p in range(1, 9):
            colors[face_fdi == quadrant * 10 + p] = palette[n * 8 + p - 1]
    return colors


def _centroids(vertices, labels):
    return {int(t): vertices[labels == t].mean(0) for t in np.unique(labels) if t > 0}


def _check_same_teeth(rec, vertices, truth, tol=1.5):
    got, want = _centroids(rec.mesh.vertices_ras, rec.labels), _centroids(vertices, truth)
    assert set(got) == set(want)
    for t in want:
        assert np.linalg.norm(got[t] - want[t]) < tol, f"tooth {t} moved"


def test_iosseg_palette_colours_become_fdi_and_jaws_of_an_index_share_the_patient(tmp_path):
    """Upper and lower palettes map to the right FDI teeth; 007_U and 007_L are one patient."""
    up, low = _phantom("upper"), _phantom("lower")
    _write_colored_ply(tmp_path / "train-U" / "007_U.ply", up.vertices_ras, up.faces, _palette_colors(up, "upper"))
    _write_colored_ply(tmp_path / "train-L" / "007_L.ply", low.vertices_ras, low.faces,
                       _palette_colors(low, "lower"), binary=True)
    records = list(iter_iosseg(tmp_path))
    assert [(r.case_id, r.patient_id, r.jaw) for r in records] == [("007_upper", "007", "upper"),
                                                                  ("007_lower", "007", "lower")]
    _check_same_teeth(records[0], up.vertices_ras, up.labels)
    _check_same_teeth(records[1], low.vertices_ras, low.labels)
    assert records[0].metadata["sides"] == "geometry"
    assert np.mean(records[0].labels == up.labels) > 0.9


def test_iosseg_sides_come_from_geometry_in_any_frame(tmp_path):
    """First palette half on the patient's left -> 2x teeth; a rotated scan gives the same labels."""
    up = _phantom("upper")
    colors = _palette_colors(up, "upper", first_half=(2, 1))  # palette order opposite to FDI order
    _write_colored_ply(tmp_path / "a" / "001_U.ply", up.vertices_ras, up.faces, colors)
    (rec,) = iter_iosseg(tmp_path / "a")
    _check_same_teeth(rec, up.vertices_ras, up.labels)
    assert rec.metadata["sides"] == "geometry" and rec.metadata["first_palette_half"] == "left"
    (palette_only,) = iter_iosseg(tmp_path / "a", sides="palette")
    swapped = np.where(up.labels > 0, np.where(up.labels < 20, up.labels + 10, up.labels - 10), 0)
    _check_same_teeth(palette_only, up.vertices_ras, swapped)

    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a rotation, not a mirror
    _write_colored_ply(tmp_path / "b" / "001_U.ply", up.vertices_ras @ q.T + 40.0, up.faces, colors)
    (rotated,) = iter_iosseg(tmp_path / "b")
    assert np.array_equal(rotated.labels, rec.labels)


def test_iosseg_foreign_colours_names_and_duplicates_are_refused(tmp_path):
    """Unknown colours, the other jaw's palette, unparsable names and duplicate scans raise."""
    vertices, faces = _grid()
    colors = np.full((len(faces), 3), 255)
    colors[:4] = (1, 2, 3)
    _write_colored_ply(tmp_path / "a" / "001_U.ply", vertices, faces, colors)
    with pytest.raises(InvalidInputError, match=r"001_U\.ply: face colours RGB\(1, 2, 3\) on 4 faces"):
        list(iter_iosseg(tmp_path / "a"))
    (rec,) = iter_iosseg(tmp_path / "a", unknown_colors="gingiva")
    assert not rec.labels.any()

    colors[:4] = LOWER_PALETTE[0]
    _write_colored_ply(tmp_path / "b" / "001_U.ply", vertices, faces, colors)
    with pytest.raises(InvalidInputError, match="lower jaw's palette"):
        list(iter_iosseg(tmp_path / "b"))

    _write_colored_ply(tmp_path / "c" / "train" / "002_L.ply", vertices, faces, np.full((len(faces), 3), 255))
    _write_colored_ply(tmp_path / "c" / "downsampled" / "002_L.ply", vertices, faces, np.full((len(faces), 3), 255))
    _write_colored_ply(tmp_path / "c" / "scan.ply", vertices, faces, np.full((len(faces), 3), 255))
    with pytest.raises(InvalidInputError, match=r"scan\.ply is not named.*002_L\.ply found 2 times"):
        list(iter_iosseg(tmp_path / "c"))


def test_iosseg_reads_scans_as_every_scan_is_read(tmp_path):
    """The converter reads through read_mesh: a PLY without face colours is refused with advice, one
    in metres is refused with advice that fits convert-dataset, and the face colours reach the
    cleaned mesh's faces."""
    from ToothMCLCore.io.mesh import read_mesh, write_mesh
    from ToothMCLCore.types import SurfaceMesh

    vertices, faces = _grid()
    (tmp_path / "a").mkdir()
    write_mesh(tmp_path / "a" / "003_U.ply", SurfaceMesh(vertices, faces))
    with pytest.raises(InvalidInputError, match="003_U.ply has no colour per triangle"):
        list(iter_iosseg(tmp_path / "a"))
    colors = np.full((len(faces), 3), 255)
    _write_colored_ply(tmp_path / "b" / "004_U.ply", vertices / 1000.0, faces, colors)
    with pytest.raises(InvalidInputError, match="published in millimetres") as refused:
        list(iter_iosseg(tmp_path / "b"))
    assert "--units" not in str(refused.value)  # convert-dataset has no such option
    colors[:5] = UPPER_PALETTE[0]
    _write_colored_ply(tmp_path / "c" / "005_U.ply", vertices, faces, colors)
    scan = read_mesh(tmp_path / "c" / "005_U.ply")
    assert scan.face_data["rgb"].shape == (len(scan.mesh.faces), 3)
    assert (scan.face_data["rgb"] == UPPER_PALETTE[0]).all(axis=1).sum() == 5


# ------------------------------------------------------------------------------------------------
# Registry and command line
# ------------------------------------------------------------------------------------------------

def test_registry_lists_the_five_table_a1_datasets_and_meshsegnet():
    """Each entry is (function, modality, description, source) with a source to cite."""
    assert list(CONVERTERS) == ["toothfairy2", "cui", "teeth3ds", "tadpm", "3d-iosseg", "meshsegnet"]
    for function, modality, description, source in CONVERTERS.values():
        assert callable(function) and modality in ("cbct", "ios") and description and source


def _parser():
    from ToothMCLCore.io.public_datasets.cli import add_convert_parsers

    p = argparse.ArgumentParser(prog="toothmcl")
    add_convert_parsers(p.add_subparsers(dest="command", required=True))
    return p


def test_convert_dataset_command_writes_a_dataset_training_can_read(tmp_path, capsys):
    """`toothmcl convert-dataset` writes an nnU-Net layout; options reach the converter; --limit stops early."""
    from ToothMCLCore import cli
    from ToothMCLCore.io.dataset_layout import read_dataset

    _toothfairy2(tmp_path, cases=("ToothFairy2F_001", "ToothFairy2F_002"), blocks={9: (0, 0, 0)})
    out = tmp_path / "out"
    code = cli.main(["convert-dataset", "toothfairy2", str(tmp_path), str(out), "--split", "0.5,0.5,0",
                     "--seed", "7", "--limit", "1", "--option", "restorations=background"])
    assert code == 0
    assert "converted 1 toothfairy2 cases" in capsys.readouterr().out
    dataset = read_dataset(out)
    assert [c.case_id for c in dataset.cases] == ["ToothFairy2F_001"]
    record = dataset.cases[0].load()
    assert not record.labels.array.any()  # the crown became background, not metal
    assert "dataset.json of the release" in (out / "dataset.json").read_text()


def test_convert_dataset_command_refuses_bad_options_and_splits(tmp_path):
    """An option the converter lacks names the valid ones; a bad split is an argparse error."""
    args = _parser().parse_args(["convert-dataset", "cui", str(tmp_path), str(tmp_path / "o"),
                                 "--option", "sides=palette"])
    with pytest.raises(InvalidInputError, match="numbering='auto'"):
        args.func(args)
    with pytest.raises(SystemExit):
        _parser().parse_args(["convert-dataset", "cui", "a", "b", "--split", "0.8,0.3,0.1"])


def test_convert_teeth3ds_with_the_official_test_list_and_three_folds(tmp_path, capsys):
    """convert-dataset teeth3ds --test-list private-testing-set.txt --folds 3: the listed scans'
    patients are the test split (a list entry may carry a suffix, comments are ignored), the
    printout says so, and an empty list is refused with advice."""
    from ToothMCLCore.cli import main
    from ToothMCLCore.io.dataset_reader import read_dataset

    root = tmp_path / "teeth3ds"
    for patient in ("AAA", "BBB", "CCC", "DDD"):
        for jaw in ("upper", "lower"):
            _teeth3ds_scan(root / jaw / patient, patient, jaw)
    listed = tmp_path / "private-testing-set.txt"
    listed.write_text("# official test scans\nBBB_lower.obj\nBBB_upper\n\nZZZ_upper\n")
    out = tmp_path / "out"
    assert main(["convert-dataset", "teeth3ds", str(root), str(out), "--test-list", str(listed), "--folds", "3",
                 "--split", "0.7,0.3,0"]) == 0
    printed = capsys.readouterr().out
    assert "test from 1 list(s)" in printed and "3 folds" in printed and "test 2 cases of 1 patients" in printed
    assert "1 listed test case(s) are not in" in printed
    ds = read_dataset(out)
    assert {c.case_id for c in ds.split("test")} == {"BBB_upper", "BBB_lower"}
    assert ds.folds == 3 and {c.fold for c in ds.cases} == {0, 1, 2}
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    assert main(["convert-dataset", "teeth3ds", str(root), str(tmp_path / "out2"), "--test-list", str(empty)]) != 0
    assert "lists no case" in capsys.readouterr().err and not (tmp_path / "out2").exists()
