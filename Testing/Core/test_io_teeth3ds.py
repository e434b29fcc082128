"""Teeth3DS / 3DTeethSeg'22 label files: exact keys, one entry per file vertex, one jaw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.io.teeth3ds import (
    KEYS,
    instances_from_labels,
    read_teeth3ds_json,
    write_teeth3ds_json,
)

LABELS = [0, 0, 14, 11, 11, 0, 21, 26, 26, 0]
INSTANCES = [0, 0, 3, 1, 1, 0, 2, 4, 4, 0]


def _write_doc(path, **overrides):
    doc = {"id_patient": "6X24ILNE", "jaw": "upper", "labels": LABELS, "instances": INSTANCES}
    doc.update(overrides)
    path.write_text(json.dumps(doc))
    return path


def test_written_file_has_exactly_the_challenge_keys_in_order(tmp_path):
    """The file holds id_patient, jaw, labels, instances (in that order) and reads back equal."""
    path = tmp_path / "6X24ILNE_upper.json"
    write_teeth3ds_json(path, LABELS, INSTANCES, "upper", id_patient="6X24ILNE", n_vertices=10)
    doc = json.loads(path.read_text())
    assert tuple(doc) == KEYS == ("id_patient", "jaw", "labels", "instances")
    assert doc["labels"] == LABELS and doc["instances"] == INSTANCES
    back = read_teeth3ds_json(path, n_vertices=10, jaw="upper")
    assert back.id_patient == "6X24ILNE" and back.jaw == "upper"
    assert back.labels.dtype == np.int32 and back.labels.tolist() == LABELS
    assert back.instances.tolist() == INSTANCES


def test_challenge_example_reads(tmp_path):
    """A file as shown in the challenge README (lower jaw, FDI 3x/4x) is accepted."""
    labels = [0, 0, 44, 33, 34, 0, 0, 45, 0, 41, 0, 0, 37, 0, 34, 45, 0, 31, 36]
    path = _write_doc(tmp_path / "x.json", jaw="lower", labels=labels, instances=[int(v > 0) for v in labels])
    assert read_teeth3ds_json(path).n_vertices == len(labels)


@pytest.mark.parametrize("doc_change,message", [
    ({"instances": None}, r"missing \['instances'\]"),
    ({"mesh": [1, 2]}, r"unexpected \['mesh'\]"),
])
def test_wrong_keys_are_refused(tmp_path, doc_change, message):
    """A file with a missing or an extra key is not taken for a Teeth3DS label file."""
    doc = {"id_patient": "", "jaw": "upper", "labels": LABELS, "instances": INSTANCES, **doc_change}
    doc = {k: v for k, v in doc.items() if v is not None}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match=message):
        read_teeth3ds_json(tmp_path / "bad.json")


def test_label_count_mismatch_gives_both_numbers(tmp_path):
    """Labels of another scan are refused, saying how many labels and how many vertices."""
    path = _write_doc(tmp_path / "a.json")
    with pytest.raises(InvalidInputError, match="has 10 labels but the mesh has 12 vertices"):
        read_teeth3ds_json(path, n_vertices=12)
    path = _write_doc(tmp_path / "b.json", instances=INSTANCES[:-1])
    with pytest.raises(InvalidInputError, match="'labels' has 10 entries but 'instances' has 9"):
        read_teeth3ds_json(path)


def test_teeth_of_the_other_jaw_are_refused(tmp_path):
    """Lower-jaw FDI numbers in an 'upper' file are refused and named."""
    path = _write_doc(tmp_path / "a.json", labels=[0, 31, 32] + LABELS[3:])
    with pytest.raises(InvalidInputError, match=r"labels \[31, 32\] are teeth of the other jaw"):
        read_teeth3ds_json(path)


def test_file_of_the_other_jaw_than_the_mesh_is_refused(tmp_path):
    """An upper-jaw label file paired with a lower-jaw mesh is refused."""
    path = _write_doc(tmp_path / "a.json")
    with pytest.raises(InvalidInputError, match="labels the 'upper' jaw but the mesh is the 'lower' jaw"):
        read_teeth3ds_json(path, jaw="lower")


@pytest.mark.parametrize("labels,message", [
    ([0, 19] + LABELS[2:], r"labels \[19\] are not FDI"),
    ([0, 99] + LABELS[2:], r"labels \[99\] are not FDI"),
    ([0, "11"] + LABELS[2:], "flat list of integers"),
    ([0, 11.5] + LABELS[2:], "flat list of integers"),
])
def test_unknown_or_non_integer_labels_are_refused(tmp_path, labels, message):
    """Values that are not FDI tooth numbers (or not integers) are refused."""
    path = _write_doc(tmp_path / "a.json", labels=labels)
    with pytest.raises(InvalidInputError, match=message):
        read_teeth3ds_json(path)


def test_unreadable_files_are_refused(tmp_path):
    """A missing file, invalid JSON, a bad jaw or a JSON list get a clear message."""
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_teeth3ds_json(tmp_path / "none.json")
    (tmp_path / "broken.json").write_text('{"id_patient": "x", "jaw": ')
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        read_teeth3ds_json(tmp_path / "broken.json")
    with pytest.raises(InvalidInputError, match="jaw must be 'upper' or 'lower'"):
        read_teeth3ds_json(_write_doc(tmp_path / "jaw.json", jaw="both"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match="JSON object"):
        read_teeth3ds_json(tmp_path / "list.json")


def test_refused_write_leaves_no_file(tmp_path):
    """Writing labels that do not fit the mesh raises and creates nothing."""
    path = tmp_path / "out.json"
    with pytest.raises(InvalidInputError, match="has 10 labels but the mesh has 11 vertices"):
        write_teeth3ds_json(path, LABELS, INSTANCES, "upper", n_vertices=11)
    assert list(tmp_path.iterdir()) == []


def test_instances_default_to_one_per_tooth_in_arch_order(tmp_path):
    """Without instances, teeth are numbered 1..n from the patient's right; gingiva stays 0."""
    # arch order from the patient's right: 14, 11 | 21, 26
    assert instances_from_labels(LABELS).tolist() == [0, 0, 1, 2, 2, 0, 3, 4, 4, 0]
    path = tmp_path / "auto.json"
    write_teeth3ds_json(path, LABELS, None, "upper")
    assert json.loads(path.read_text())["instances"] == [0, 0, 1, 2, 2, 0, 3, 4, 4, 0]
