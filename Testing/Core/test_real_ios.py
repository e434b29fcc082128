"""The shipped intraoral model on real scans of its test split (patients it never saw).

These are the project's real-data tests: they fail if the weights, the canonical frame, the
sampling or the post-processing regress on real scans. They read MeshSegNet's scans from
``../shared/data/meshsegnet`` (the ``meshsegnet_dir`` fixture) and segment every test jaw (14
jaws of 8 patients, about 30 s) as ``toothmcl segment-ios`` does, with the default model and its
card's sampling passes: the same scans and the same pipeline as the figures in the card.

Floors. The issue's targets are mean per-tooth Dice 0.90 per jaw, tooth vs gingiva 0.97 and no
tooth numbered as its mirror. The default ``ios_pt_real_v2`` (its network's probabilities averaged
with ``ios_pt_real_v1``'s) with its card's sampling (3 passes, each with its mirror image), the
surface refinement, the numbering along the arch (:mod:`ToothMCLCore.postprocessing.arch_order`) and
its boundary refiner ``ios_boundary_real_v4`` (:mod:`ToothMCLCore.postprocessing.boundary`, three
refiners averaged) gives on the test split Dice 0.967 upper and 0.944 lower, tooth vs gingiva
0.976 / 0.965 and no mirrored tooth (with the single refiner ``ios_boundary_real_v3`` before it:
0.965 / 0.942 and 0.974 / 0.963): the Dice and mirror targets are met, tooth vs gingiva on the
upper jaws but not yet on the lower. ``ios_pt_real_v1`` alone with ``ios_boundary_real_v2`` gave
0.965 / 0.938 and 0.976 / 0.962 (it would pass these floors too: its lower Dice is 0.014 above
them); v1 without the boundary refiner 0.945 / 0.918 and 0.958 / 0.947 (lower tooth vs gingiva below
these floors); with one network weight for whole and partial arches the upper Dice was 0.888 (one
wide arch, 26_upper, at 0.58), without the arch numbering 0.713 / 0.824, without the surface
refinement too 0.670 / 0.783 and 0.928 / 0.920: all fall below these floors. The floors below
are the card's figures less :data:`MARGIN`, which covers float differences between CPUs and
thread counts (the farthest point sampling inside the network makes a few vertices change label
when its inputs move in the last bit), not a change of model; raise them with every better model
until they reach the targets.
"""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.inference.ios import DEFAULT_IOS_MODEL

#: ios_pt_real_v2 on the test split (its card), per jaw
MEASURED = {"upper": {"dice": 0.967, "tooth_vs_gingiva": 0.976}, "lower": {"dice": 0.944, "tooth_vs_gingiva": 0.965}}
MEASURED_MIRRORED = 0
#: allowance for numerical differences between machines (see the module docstring)
MARGIN = 0.02


@pytest.fixture(scope="module")
def predictor():
    from ToothMCLCore.inference.ios import IOSPredictor

    return IOSPredictor(device="cpu")


@pytest.fixture(scope="module")
def test_patients(predictor):
    return predictor.card.metrics["split_patients"]["test"]


@pytest.fixture(scope="module")
def scores(predictor, test_patients, meshsegnet_dir):
    """Both jaws of every test patient, labels from the converter, segmented from their files."""
    from ToothMCLCore.evaluation.ios_split import score_meshsegnet

    return score_meshsegnet(predictor, meshsegnet_dir, test_patients)


def test_the_default_intraoral_model_is_the_real_one(predictor):
    """segment-ios, the demo and the Slicer module load ios_pt_real_v2, trained on real scans, with
    ios_pt_real_v1 averaged in; both, and the phantom model, stay available by name."""
    from ToothMCLCore.models.registry import load_registry

    assert DEFAULT_IOS_MODEL == "ios_pt_real_v2" == predictor.card.name
    assert list(predictor.card.members) == ["ios_pt_real_v1"] and len(predictor.member_nets) == 1
    for card in (predictor.card, *predictor.member_cards):
        assert "MeshSegNet" in card.training_data and "MIT" in card.training_data
        assert card.metrics["split_patients"] == predictor.card.metrics["split_patients"]  # one split for both
    assert predictor.passes == predictor.card.preprocess["sampling_passes"] == 3
    assert predictor.mirror is predictor.card.preprocess["mirror_passes"] is True
    assert {"ios_pt_real_v1", "ios_pt_real_v2", "ios_pt_demo_v1"} <= set(load_registry())


def test_toothmcl_models_says_which_model_is_the_default(capsys):
    """``toothmcl models`` marks the model segment-ios uses without --model, and only that one."""
    from ToothMCLCore.cli import main

    assert main(["models"]) == 0
    marked = [line.split()[0] for line in capsys.readouterr().out.splitlines()
              if line.endswith("(the default for intraoral scans)")]
    assert marked == [DEFAULT_IOS_MODEL]


def test_the_test_patients_are_the_converters_test_split(test_patients, meshsegnet_dir):
    """The card's test patients are those convert-dataset puts in the test split (0.7/0.1/0.2, seed
    0), so the scans scored here were never trained on nor used to choose the weights."""
    from ToothMCLCore.io.dataset_split import assign_splits

    splits = assign_splits({str(n): 2 for n in range(1, 37)} | {"23": 1, "27": 1, "29": 1}, (0.7, 0.1, 0.2), seed=0)
    assert sorted(test_patients, key=int) == sorted((p for p, s in splits.items() if s == "test"), key=int)
    assert len(test_patients) >= 6


def test_every_test_patient_is_scored(scores, test_patients):
    """Both jaws of the 8 test patients, less the scans the converter leaves out (23_up, 27_up)."""
    assert len(scores) == 14
    assert {s.case_id.split("_")[0] for s in scores} == set(test_patients)


@pytest.mark.parametrize("jaw", ["upper", "lower"])
def test_real_test_scans_keep_the_measured_dice_and_tooth_vs_gingiva(scores, jaw):
    """Mean per-tooth Dice and tooth-vs-gingiva accuracy of each jaw's test scans stay at the card's
    figures (less the margin): a regression of the model, the frame or the pipeline fails here."""
    group = [s for s in scores if s.jaw == jaw]
    dice = float(np.mean([s.dice for s in group]))
    tsa = float(np.mean([s.tooth_vs_gingiva for s in group]))
    assert dice >= MEASURED[jaw]["dice"] - MARGIN, [(s.case_id, round(s.dice, 3)) for s in group]
    assert tsa >= MEASURED[jaw]["tooth_vs_gingiva"] - MARGIN, [(s.case_id, round(s.tooth_vs_gingiva, 3))
                                                               for s in group]


def test_the_card_reports_what_the_pipeline_measures(scores, predictor):
    """The card's test-split figures are those these scans give now (within the margin)."""
    from ToothMCLCore.evaluation.ios_split import summarize

    card = predictor.card.metrics["test_split"]
    now = summarize(scores)
    for jaw in ("upper", "lower"):
        assert abs(now[jaw]["mean_dice"] - card[jaw]["mean_dice"]) <= MARGIN
        assert round(card[jaw]["mean_dice"], 3) == MEASURED[jaw]["dice"] and card[jaw]["scans"] == now[jaw]["scans"]


def test_few_real_teeth_are_numbered_as_their_mirror(scores):
    """No tooth is numbered as its mirror (1x as 2x, 3x as 4x): the target, met with the mirror pass."""
    mirrored = [(s.case_id, s.mirrored) for s in scores if s.mirrored]
    assert sum(len(m) for _, m in mirrored) <= MEASURED_MIRRORED, mirrored


def test_segment_ios_reads_a_real_vtp_and_takes_the_jaw_from_its_name(meshsegnet_dir, test_patients, tmp_path,
                                                                      capsys):
    """``toothmcl segment-ios 3_up.vtp`` decides "upper" from the name and writes one label per vertex."""
    from ToothMCLCore.cli import main
    from ToothMCLCore.io.teeth3ds import read_teeth3ds_json

    path = meshsegnet_dir / f"{test_patients[0]}_up.vtp"
    assert main(["segment-ios", str(path), "-o", str(tmp_path / "out.json"), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "upper jaw (decided by file name)" in printed
    doc = read_teeth3ds_json(tmp_path / "out.json")
    assert doc.jaw == "upper" and len(doc.labels) > 3000
    assert set(np.unique(doc.labels)) - {0} <= {q * 10 + p for q in (1, 2) for p in range(1, 9)}
    assert len(set(np.unique(doc.labels)) - {0}) >= 10


def test_a_mirrored_patient_gets_the_mirrored_numbers(meshsegnet_dir, test_patients):
    """With the mirror pass a real jaw and its mirror image (x -> -x, faces turned) are numbered as
    mirrors of each other on every vertex (11 where the other had 21): a left/right decision that
    depends on the side the network looked from is gone. Without it the networks' own numbers
    disagree on more than a twentieth of the vertices (measured on 12_up: 10 % for the default
    ensemble, 17 % for ios_pt_real_v1 alone); the refinement, with its numbering along the arch,
    takes most of that back (1.6 % left), the mirror pass the rest (0.08 % left)."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.io.mesh import read_mesh
    from ToothMCLCore.types import SurfaceMesh

    mesh = read_mesh(meshsegnet_dir / f"{test_patients[0]}_up.vtp").mesh
    scan = SurfaceMesh(mesh.vertices_ras, mesh.faces)
    image = SurfaceMesh(mesh.vertices_ras * [-1.0, 1.0, 1.0], mesh.faces[:, ::-1].copy())
    agreement = {}
    for mirror, refine in ((True, True), (False, True), (False, False)):
        predictor = IOSPredictor(device="cpu", passes=1, mirror=mirror, refine=refine)
        labels = predictor.predict(scan, "upper").labels
        back = np.array([fdi.mirror(v) if v else 0 for v in predictor.predict(image, "upper").labels])
        agreement[mirror, refine] = float(np.mean(labels == back))
    assert agreement[True, True] >= 0.995, agreement
    assert agreement[True, True] > agreement[False, True] > agreement[False, False], agreement
    assert agreement[False, False] < 0.95, agreement
