"""The MeshSegNet converter and the canonical jaw frame, on the 72 real scans beside the checkout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.io.public_datasets import meshsegnet

#: scans whose ids do not follow the table, and how the converter numbers their two end ids
REPAIRED = {"8_down": (38, 48), "11_down": (38, 48), "16_down": (36, 46), "20_down": (36, 47)}
#: scans left out, and a phrase of the reason each is given
LEFT_OUT = {"23_up": "pair up in depth around id 7", "27_up": "pair up in depth around id 7",
            "29_down": "central incisors cannot be located"}


@pytest.fixture(scope="module")
def converted(meshsegnet_dir):
    """Every scan through convert_scan: {name: (result, labels, numbering) or the error}."""
    out = {}
    for _, jaw, path in meshsegnet.find_cases(meshsegnet_dir):
        try:
            out[path.stem] = meshsegnet.convert_scan(path, jaw)
        except InvalidInputError as exc:
            out[path.stem] = exc
    return out


def test_all_72_scans_are_found(converted):
    """Every <N>_up/<N>_down of the 36 patients is a case."""
    assert sorted(converted) == sorted(f"{n}_{j}" for n in range(1, 37) for j in ("up", "down"))


def test_regular_scans_follow_the_table(converted):
    """A scan with the table's midline gets the README's table: id 1 -> 17 (upper) / 37 (lower), id 14 -> 27 / 47."""
    for name, value in converted.items():
        if name in REPAIRED or isinstance(value, Exception):
            continue
        _, _, numbering = value
        assert numbering.rule == "table", name
        expect = {"up": {1: 17, 7: 11, 8: 21, 14: 27}, "down": {1: 37, 7: 31, 8: 41, 14: 47}}[name.split("_")[1]]
        assert {i: numbering.fdi[i] for i in expect if i in numbering.fdi} == \
            {i: n for i, n in expect.items() if i in numbering.fdi}, name


def test_scans_numbered_over_their_present_teeth_are_renumbered_from_the_midline(converted):
    """8_down and 11_down hold third molars (ids 1 and 16); 16_down and 20_down have their central
    incisors at ids 6/7: all are numbered outwards from the central incisors."""
    for name, (first, last) in REPAIRED.items():
        _, labels, numbering = converted[name]
        ids = sorted(numbering.fdi)
        assert numbering.rule == "midline", name
        assert (numbering.fdi[ids[0]], numbering.fdi[ids[-1]]) == (first, last), name
        assert len(set(numbering.fdi.values())) == len(ids), name  # no number twice
        assert set(np.unique(labels)) - {0} == set(numbering.fdi.values()), name


def test_scans_whose_midline_cannot_be_located_are_left_out_with_the_reason(converted):
    """29_down (the most anterior pair and the arch's apex disagree), 23_up and 27_up (a tooth on
    the axis of symmetry, so its quadrant is unknown) are refused, and the message says why."""
    refused = {n: str(v) for n, v in converted.items() if isinstance(v, Exception)}
    assert sorted(refused) == sorted(LEFT_OUT)
    for name, reason in LEFT_OUT.items():
        assert isinstance(converted[name], InvalidInputError) and reason in refused[name], refused[name]
    assert "8/9" in refused["29_down"]


def test_given_a_mirror_symmetric_arch_the_midline_is_between_the_mirrored_halves():
    """Depths that pair up around the 3rd/4th tooth split there; around one tooth, through it."""
    assert meshsegnet._mirror_split(np.array([0.0, 10, 18, 20, 18, 10, 0])) == ("through", 3)
    assert meshsegnet._mirror_split(np.array([0.0, 10, 18, 20, 20, 18, 10, 0])) == ("between", 3)
    assert meshsegnet._mirror_split(np.array([-5.0, 0, 10, 18, 20, 20, 18, 10])) == ("between", 4)


def test_vertex_labels_come_from_the_majority_of_the_faces_around_each_vertex(converted):
    """A vertex whose faces are all one tooth carries that tooth; gingiva faces give gingiva."""
    result, labels, numbering = converted["1_up"]
    ids = meshsegnet.integer_labels(result.face_data["Label"], "1_up")
    table = np.zeros(17, np.int64)
    for i, n in numbering.fdi.items():
        table[i] = n
    per_face = table[ids]
    corners = result.mesh.faces
    inside = np.ones(result.mesh.n_vertices, bool)  # vertices whose faces all share one label
    for k in range(3):
        np.logical_and.at(inside, corners[:, k], per_face == labels[corners[:, k]])
    used = np.zeros(result.mesh.n_vertices, bool)
    used[corners.ravel()] = True
    assert inside[used].mean() > 0.7  # most vertices are not on a border
    assert (labels[corners[:, 0]][per_face == 11] == 11).mean() > 0.85


def test_convert_dataset_writes_the_scans_split_by_patient_and_says_what_it_changed(meshsegnet_dir, tmp_path, capsys,
                                                                                    caplog):
    """``toothmcl convert-dataset meshsegnet`` on three patients: both jaws of a patient share a split,
    the manifest records the numbering rule, the left-out scan is named on the console."""
    import shutil

    from ToothMCLCore.cli import main
    from ToothMCLCore.io.dataset_reader import read_dataset

    root = tmp_path / "msn"
    root.mkdir()
    for name in ("8_up", "8_down", "29_up", "29_down", "12_up", "12_down"):
        shutil.copy(meshsegnet_dir / f"{name}.vtp", root / f"{name}.vtp")
    (root / "8F_up.vtp").write_bytes((root / "8_up.vtp").read_bytes())  # a mirrored copy's name
    assert main(["convert-dataset", "meshsegnet", str(root), str(tmp_path / "out"), "--split", "0.34,0.33,0.33"]) == 0
    assert "converted 5 meshsegnet cases" in capsys.readouterr().out
    logged = caplog.text
    assert "left out 29_down.vtp" in logged and "8F_up.vtp" in logged and "8_down.vtp: the central incisors" in logged
    dataset = read_dataset(tmp_path / "out")
    by_patient = {}
    for case in dataset.cases:
        by_patient.setdefault(case.patient_id, set()).add(case.split)
    assert sorted(by_patient) == ["12", "29", "8"] and all(len(s) == 1 for s in by_patient.values())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    rules = {c["case_id"]: c["metadata"]["numbering"] for c in manifest["cases"]}
    assert rules == {"12_lower": "table", "12_upper": "table", "29_upper": "table", "8_lower": "midline",
                     "8_upper": "table"}
    record = dataset.cases[[c.case_id for c in dataset.cases].index("8_lower")].load()
    assert {38, 48} <= set(np.unique(record.labels))


def test_a_scan_without_cell_labels_is_refused(tmp_path, meshsegnet_dir):
    """A VTP with no per-cell Label (e.g. exported without labels) is refused with what to do."""
    from ToothMCLCore.io.mesh import read_mesh, write_mesh

    scan = read_mesh(meshsegnet_dir / "1_up.vtp")
    write_mesh(tmp_path / "1_up.vtp", scan.mesh)
    with pytest.raises(InvalidInputError, match="no per-cell Label"):
        meshsegnet.convert_scan(tmp_path / "1_up.vtp", "upper")


#: the scans left out, read by eye from their centroids: ids on the patient's right and left (the
#: tooth on the midline is on neither), the front (incisors) and the back (molars)
LEFT_OUT_LAYOUT = {
    "23_up": (range(1, 7), range(8, 15), (6, 7, 8), (1, 2, 13, 14)),
    "27_up": (range(1, 7), range(8, 14), (6, 7, 8), (1, 2, 12, 13)),
    "29_down": (range(10, 16), range(4, 8), (7, 8, 9), (13, 14)),
}


def _sides_and_rows(value, name):
    """{raw id: (side, row)} from the converted numbering (side +1 = patient's right; row
    "front" = FDI 1-2, "back" = FDI 6-8) or, for a scan left out, from :data:`LEFT_OUT_LAYOUT`."""
    if not isinstance(value, Exception):
        return {i: (1 if n // 10 in (1, 4) else -1, "front" if n % 10 <= 2 else "back" if n % 10 >= 6 else "")
                for i, n in value[2].fdi.items()}
    right, left, front, back = LEFT_OUT_LAYOUT[name]
    out = {i: (0, "") for i in range(1, 17)}
    out.update({i: (1, out[i][1]) for i in right})
    out.update({i: (-1, out[i][1]) for i in left})
    out.update({i: (out[i][0], "front") for i in front})
    out.update({i: (out[i][0], "back") for i in back})
    return out


def test_canonical_frame_is_right_on_every_real_scan(meshsegnet_dir, converted):
    """On all 72 scans (in three different file frames), the canonical frame puts the crowns up
    (+z), the incisors forward (+y) and the patient's right teeth at +x, as the labels say."""
    from ToothMCLCore.io.mesh import occlusal_direction, read_mesh
    from ToothMCLCore.preprocessing.ios import canonical_frame

    checked = 0
    for _, jaw, path in meshsegnet.find_cases(meshsegnet_dir):
        scan = read_mesh(path)
        ids = meshsegnet.integer_labels(scan.face_data["Label"], path.name)
        frame = canonical_frame(scan.mesh.vertices_ras, occlusal_direction(scan.mesh, scan.normals), jaw)
        centres = frame.apply(scan.mesh.vertices_ras[scan.mesh.faces].mean(axis=1))
        info = _sides_and_rows(converted[path.stem], path.stem)
        right = np.isin(ids, [i for i, (s, _) in info.items() if s > 0])
        left = np.isin(ids, [i for i, (s, _) in info.items() if s < 0])
        front = np.isin(ids, [i for i, (_, r) in info.items() if r == "front"])
        back = np.isin(ids, [i for i, (_, r) in info.items() if r == "back"])
        assert centres[right, 0].mean() > 5 and centres[left, 0].mean() < -5, path.name
        assert centres[front, 1].mean() > centres[back, 1].mean() + 10, path.name
        assert centres[ids > 0, 2].mean() > centres[ids == 0, 2].mean(), path.name
        checked += 1
    assert checked == 72
