"""The learned tooth-vs-gingiva boundary refiner (ToothMCLCore.postprocessing.boundary) on real scans."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from ToothMCLCore.errors import WeightsError
from ToothMCLCore.postprocessing.boundary import (
    BAND_HOPS,
    FEATURES,
    boundary_inputs,
    check_refiner_card,
    decide_band,
    drop_slivers,
    face_vote,
    grow_numbers,
    keep_every_tooth,
)
from ToothMCLCore.postprocessing.surface import mesh_edges

#: test patients (of the card's test split) whose two jaws are segmented with and without the refiner
PATIENTS = ("12", "16")


#: one sampling pass (with its mirror) instead of the card's three keeps this module quick; the card's
#: sampling with the refiner is what Testing/Core/test_real_ios.py holds to the card's figures
FAST = {"device": "cpu", "passes": 1, "mirror": True}


@pytest.fixture(scope="module")
def predictors():
    from ToothMCLCore.inference.ios import IOSPredictor

    return {"refined": IOSPredictor(**FAST), "settled": IOSPredictor(**FAST, boundary=False)}


@pytest.fixture(scope="module")
def real_scans(meshsegnet_dir):
    """Both jaws of :data:`PATIENTS`: (scan as segment-ios reads it, jaw, truth per file vertex)."""
    from ToothMCLCore.io.mesh import read_mesh
    from ToothMCLCore.io.public_datasets.meshsegnet import JAWS, convert_scan

    scans = {}
    for patient in PATIENTS:
        for word, jaw in JAWS.items():
            path = meshsegnet_dir / f"{patient}_{word}.vtp"
            truth_scan, truth, _ = convert_scan(path, jaw)
            scans[f"{patient}_{jaw}"] = (read_mesh(path), jaw, np.asarray(truth_scan.to_file_order(truth)))
    return scans


@pytest.fixture(scope="module")
def segmented(predictors, real_scans):
    return {case: {key: p.predict(scan, jaw) for key, p in predictors.items()}
            for case, (scan, jaw, _) in real_scans.items()}


def test_the_default_model_names_its_refiner(predictors):
    """The default model's card names the shipped refiner, trained for it (on its ensemble's
    probabilities), and segment-ios loads it."""
    refined, settled = predictors["refined"], predictors["settled"]
    assert refined.card.boundary_model == refined.boundary_card.name == "ios_boundary_real_v4"
    assert all(member in refined.boundary_card.training_data for member in refined.card.members)
    assert refined.boundary_card.task == "ios_boundary"
    assert refined.card.name in refined.boundary_card.training_data
    assert settled.boundary_net is None


def test_real_boundaries_move_towards_the_truth_and_no_tooth_is_lost(segmented, real_scans):
    """On four real test jaws the refiner raises tooth vs gingiva on average and on no jaw lowers
    it by more than 0.003; every tooth the settled labels had is still there."""
    gains = {}
    for case, results in segmented.items():
        truth = real_scans[case][2] > 0
        before, after = results["settled"], results["refined"]
        assert after.provenance["boundary_refined"] is True and after.provenance["boundary_model"]
        assert before.provenance["boundary_refined"] is False
        gains[case] = float(np.mean((after.labels > 0) == truth) - np.mean((before.labels > 0) == truth))
        assert set(np.unique(after.labels)) == set(np.unique(before.labels)), case
    assert np.mean(list(gains.values())) >= 0.004, gains
    assert min(gains.values()) >= -0.003, gains


def test_only_vertices_near_the_boundary_change_and_they_take_a_neighbours_number(segmented, real_scans, predictors):
    """A vertex farther from the settled boundary than the refiner's band keeps its label; a vertex
    that became tooth touches a vertex of the tooth whose number it carries (no number jumps a gap)."""
    band_hops = predictors["refined"].boundary_card.preprocess["band_hops"]
    for case, results in segmented.items():
        scan = real_scans[case][0]
        before, after = results["settled"].labels, results["refined"].labels
        clean_before, clean_after = before[scan.clean_to_file], after[scan.clean_to_file]
        edges = mesh_edges(scan.mesh.faces)
        _, _, _, band = boundary_inputs(scan.mesh.vertices_ras, scan.normals, scan.mesh.faces,
                                        np.full(len(clean_before), 0.5), clean_before > 0, edges, band_hops)
        changed = clean_before != clean_after
        assert changed.any() and not (changed & ~band).any(), case
        grown = np.flatnonzero((clean_before == 0) & (clean_after > 0))
        assert len(grown), case
        touching = {int(v): set() for v in grown}
        for a, b in edges:
            for x, y in ((a, b), (b, a)):
                if x in touching:
                    touching[x].add(int(clean_after[y]))
        assert all(clean_after[v] in touching[v] for v in grown), case


def test_a_denser_scan_than_the_refiner_knows_is_left_as_settled(predictors, real_scans):
    """A real scan subdivided to half its edge length is outside the refiner's range: it is left
    as the surface refinement settled it, and the provenance says the refiner did not run."""
    import trimesh

    from ToothMCLCore.types import SurfaceMesh

    scan, jaw, _ = real_scans["12_upper"]
    vertices, faces = trimesh.remesh.subdivide(scan.mesh.vertices_ras, scan.mesh.faces)
    dense = SurfaceMesh(vertices, faces)
    refined = predictors["refined"].predict(dense, jaw)
    assert refined.provenance["boundary_refined"] is False
    assert refined.provenance["boundary_model"] == "ios_boundary_real_v4"
    np.testing.assert_array_equal(refined.labels, predictors["settled"].predict(dense, jaw).labels)


def test_the_inputs_mark_the_band_around_the_boundary(real_scans):
    """Hops are 0 on vertices with a neighbour on the other side, grow by one per ring, carry the
    side's sign, and the band is every vertex within BAND_HOPS of the boundary."""
    scan, _, truth = real_scans["16_lower"]
    tooth = truth[scan.clean_to_file] > 0
    edges = mesh_edges(scan.mesh.faces)
    features, edge_index, edge_features, band = boundary_inputs(
        scan.mesh.vertices_ras, scan.normals, scan.mesh.faces, np.where(tooth, 0.9, 0.1), tooth, edges)
    assert features.shape == (len(tooth), len(FEATURES)) and np.isfinite(features).all()
    assert edge_index.shape == (2, 2 * len(edges)) and np.isfinite(edge_features).all()
    hops = features[:, FEATURES.index("hops")]
    on_boundary = np.zeros(len(tooth), bool)
    differ = tooth[edges[:, 0]] != tooth[edges[:, 1]]
    on_boundary[edges[differ].ravel()] = True
    np.testing.assert_array_equal(hops == 0, on_boundary)
    assert (hops[tooth & ~on_boundary] > 0).all() and (hops[~tooth & ~on_boundary] < 0).all()
    ring = np.abs(hops)
    assert (np.abs(ring[edges[:, 0]] - ring[edges[:, 1]]) <= 1).all()
    np.testing.assert_array_equal(band, ring <= BAND_HOPS)
    assert 0.1 < band.mean() < 0.7


def test_a_triangle_reads_the_same_shape_on_a_scan_and_its_mirror_image(real_scans):
    """The face head's triangle shape (edge creases, normal cosines, occlusal tilt, area) is the same
    for a real jaw and its mirror image (x -> -x, triangles wound the other way), so a mirrored
    patient gets mirrored decisions; and it is the triangle's own: the area matches its corners."""
    import torch

    from ToothMCLCore.models.boundary_gnn import face_shape

    scan, _, truth = real_scans["12_upper"]
    tooth = truth[scan.clean_to_file] > 0
    points, normals, faces = scan.mesh.vertices_ras, scan.normals, np.asarray(scan.mesh.faces)
    flip = np.array([-1.0, 1.0, 1.0])
    shapes = []
    for v, n, f in ((points, normals, faces), (points * flip, normals * flip, faces[:, ::-1].copy())):
        features, edge_index, edge_features, _ = boundary_inputs(v, n, f, np.where(tooth, 0.8, 0.2), tooth)
        shapes.append(face_shape(*(torch.from_numpy(x) for x in (features, edge_index, edge_features, f))).numpy())
    np.testing.assert_allclose(shapes[0], shapes[1], atol=1e-5)
    corners = points[faces]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    np.testing.assert_allclose(shapes[0][:, -1], area, rtol=1e-4, atol=1e-6)
    assert (np.abs(shapes[0][:, -2]) <= 1 + 1e-6).all() and (np.diff(shapes[0][:, :3], axis=1) >= 0).all()


def test_a_refiner_card_naming_members_is_refused():
    """A refiner's bag lives in one weights file; a card naming members (which no code would read) is refused."""
    from ToothMCLCore.models.checkpoint import read_card
    from ToothMCLCore.models.registry import resolve_weights

    card = read_card(resolve_weights("ios_boundary_real_v4")[0].with_suffix(".json"))
    bad = card.to_dict()
    bad["members"] = ["ios_boundary_real_v2"]
    with pytest.raises(WeightsError, match="remove members"):
        check_refiner_card(type(card).from_dict(bad))


def _path_weights(lengths):
    """A path 0-1-...-n with the given edge lengths, as inverse-length weights."""
    n = len(lengths) + 1
    a, b = np.arange(n - 1), np.arange(1, n)
    w = 1.0 / np.asarray(lengths, float)
    return sparse.coo_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(n, n)).tocsr()


def test_a_new_tooth_vertex_takes_the_number_of_the_nearer_tooth_and_numbers_never_jump_a_gap():
    """On a path 11-11-x-12-12 vertex x takes 12, the nearer neighbour, and its instance; on a mirrored
    path it takes 11; a new tooth vertex two gingiva vertices away from any tooth stays gingiva
    after one round and is reached through its new neighbour in the next."""
    labels = np.array([11, 11, 0, 12, 12])
    instances = np.array([3, 3, 0, 4, 4])
    number, instance = grow_numbers(_path_weights([1, 1.0, 0.5, 1]), labels, instances, np.array([2]), 1)
    assert number.tolist() == [12] and instance.tolist() == [4]
    number, _ = grow_numbers(_path_weights([1, 0.5, 1.0, 1]), labels, instances, np.array([2]), 1)
    assert number.tolist() == [11]
    chain = np.array([21, 0, 0, 0])
    assert grow_numbers(_path_weights([1, 1, 1]), chain, chain * 0 + 7, np.array([2]), 3)[0].tolist() == [0]
    grown, grown_instances = grow_numbers(_path_weights([1, 1, 1]), chain, np.array([7, 0, 0, 0]), np.array([1, 2]), 1)
    assert grown.tolist() == [21, 0] and grown_instances.tolist() == [7, 0]
    assert grow_numbers(_path_weights([1, 1, 1]), chain, np.array([7, 0, 0, 0]), np.array([1, 2]), 2)[0].tolist() == [21, 21]


def test_a_sliver_cut_off_a_tooth_takes_the_tooth_it_touches_or_becomes_gingiva():
    """On a path 11-11-11-0-11-12-0-11, all in the band, the 11 cut off beside a 12 becomes 12 (with
    its instance), the lone 11 among gingiva becomes gingiva, and the tooth's main piece keeps its
    number."""
    labels = np.array([11, 11, 11, 0, 11, 12, 0, 11])
    instances = np.array([1, 1, 1, 0, 1, 2, 0, 1])
    edges = np.stack([np.arange(7), np.arange(1, 8)], axis=1)
    new_labels, new_instances = drop_slivers(edges, _path_weights([1] * 7), labels, instances, np.ones(8, bool), 4)
    assert new_labels.tolist() == [11, 11, 11, 0, 12, 12, 0, 0]
    assert new_instances.tolist() == [1, 1, 1, 0, 2, 2, 0, 0]
    assert labels.tolist() == [11, 11, 11, 0, 11, 12, 0, 11]  # the caller's arrays are left as they were


def test_a_tooth_the_refiner_cut_through_keeps_both_pieces():
    """A piece reaching beyond the band is not a sliver (the refiner cut through the tooth, most
    often through a papilla between two crowns): both pieces keep their number."""
    labels = np.array([11, 11, 0, 11, 11, 0, 12, 12])
    band = np.array([False, True, True, True, False, True, True, False])
    edges = np.stack([np.arange(7), np.arange(1, 8)], axis=1)
    new_labels, _ = drop_slivers(edges, _path_weights([1] * 7), labels, (labels > 0) * 3, band, 4)
    assert new_labels.tolist() == labels.tolist()


def test_a_tooth_the_refiner_would_mostly_remove_is_kept():
    """A tooth left with under half its vertices gets them all back; one that lost a rim keeps the loss."""
    before = np.array([11, 11, 11, 11, 12, 12, 12, 12, 0])
    after = np.array([11, 0, 0, 0, 12, 12, 12, 0, 0])
    labels, instances = keep_every_tooth(after.copy(), (after > 0) * 5, before, (before > 0) * 5)
    assert labels.tolist() == [11, 11, 11, 11, 12, 12, 12, 0, 0] and instances[:4].tolist() == [5] * 4


def _fan(n_faces: int):
    """Vertex 0 at the centre of ``n_faces`` triangles (0, i, i+1) around it; vertex ``n_faces + 1`` in none."""
    return np.array([[0, i, i % n_faces + 1] for i in range(1, n_faces + 1)])


def test_a_vertex_is_tooth_when_at_least_half_of_its_triangles_are():
    """As the labels' rule gives a vertex its triangles' majority (a tie to the tooth): 3 of 6 tooth
    triangles make the centre tooth, 2 of 6 leave it gingiva; a vertex in no triangle is not tooth."""
    faces = _fan(6)
    three = face_vote(faces, np.array([1, 1, 1, 0, 0, 0], bool), 8)
    two = face_vote(faces, np.array([1, 1, 0, 0, 0, 0], bool), 8)
    assert three[0] and not two[0]
    assert three[[1, 2, 3]].all() and not three[[5, 6]].any() and not three[7]
    assert not face_vote(faces, np.ones(6, bool), 8)[7]


def test_band_vertices_follow_their_triangles_and_the_rest_keep_their_labels():
    """With a face head, a band vertex takes its triangles' vote even where its own logit says
    otherwise; a band vertex in no triangle follows its own logit; outside the band nothing moves."""
    import torch

    from ToothMCLCore.models.boundary_gnn import BoundaryGNN

    model = BoundaryGNN(len(FEATURES), 8, 1, face_head=True).eval()
    with torch.no_grad():
        for head, bias in ((model.head, 1.0), (model.face_head[-1], -1.0)):  # vertices say tooth, triangles gingiva
            head.weight.zero_()
            head.bias.fill_(bias)
    faces = _fan(6)
    count = 9  # vertex 7 is in the band, 8 outside it, neither in a triangle
    features = np.zeros((count, len(FEATURES)), np.float32)
    edge_index = np.array([[0, 1], [1, 0]])
    edge_features = np.zeros((2, 6), np.float32)
    band = np.array([True] * 8 + [False])
    tooth = np.array([True, False, True, False, True, False, True, True, True])
    decided = decide_band(model, features, edge_index, edge_features, band, tooth, faces)
    assert decided.tolist() == [False] * 7 + [True, True]
    without_faces = decide_band(model, features, edge_index, edge_features, band, ~tooth, None)
    assert without_faces.tolist() == [True] * 8 + [False]


def test_a_refiner_card_for_other_inputs_is_refused():
    """A refiner whose card lists other features, a band the hops cannot count, or no edge range is refused."""
    from ToothMCLCore.models.checkpoint import read_card
    from ToothMCLCore.models.registry import resolve_weights

    card = read_card(resolve_weights("ios_boundary_real_v4")[0].with_suffix(".json"))
    check_refiner_card(card)
    for change in ({"features": list(reversed(FEATURES))}, {"band_hops": 4}, {"median_edge_mm": None}):
        bad = card.to_dict()
        bad["preprocess"] = {**bad["preprocess"], **change}
        with pytest.raises(WeightsError):
            check_refiner_card(type(card).from_dict(bad))


def test_toothmcl_models_says_the_refiner_runs_inside_its_model(capsys):
    """``toothmcl models`` lists the bundled refiners and says they are not models to segment with."""
    from ToothMCLCore.cli import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("ios_boundary_real_v2", "ios_boundary_real_v4"):
        line = next(x for x in lines if x.startswith(name))
        assert "runs inside the IOS model whose card names it" in line


def test_a_file_that_is_not_a_refiner_is_refused(tiny_ios_weights):
    """Passing an IOS segmentation model as the refiner fails with what it is."""
    from ToothMCLCore.inference.ios import IOSPredictor

    with pytest.raises(WeightsError, match="not a tooth-vs-gingiva boundary refiner"):
        IOSPredictor(device="cpu", boundary_weights=tiny_ios_weights)


def test_train_boundary_writes_a_refiner_the_predictor_runs(meshsegnet_dir, tmp_path, real_scans):
    """``python -m training.train_boundary`` (one jaw each, two epochs, as a quick check) writes a
    refiner and its card that IOSPredictor loads and runs on a real scan."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.models.checkpoint import read_card
    from ToothMCLCore.models.registry import load_registry
    from training.train_boundary import main

    out = tmp_path / "run"
    assert main(["--data", str(meshsegnet_dir), "--out", str(out), "--limit", "1", "--epochs", "2", "--hidden", "8",
                 "--seeds", "0", "--no-validation-figures", "--name", "ios_boundary_check_v1"]) == 0
    weights = out / "ios_boundary_check_v1.safetensors"
    card = read_card(weights.with_suffix(".json"))
    assert card.task == "ios_boundary" and card.preprocess["median_edge_mm"][0] < card.preprocess["median_edge_mm"][1]
    assert [row["epoch"] for row in card.metrics["training_log"]] == [0, 2]
    assert card.arch_args["face_head"] is True and card.arch_args["bag"] == 1 and "triangles" in card.notes
    entry = load_registry(out / "registry.json")["ios_boundary_check_v1"]  # by name, known as a refiner
    assert entry.task == "ios_boundary" and entry.sha256 == card.sha256
    scan, jaw, _ = real_scans["12_lower"]
    result = IOSPredictor(**FAST, boundary_weights=weights).predict(scan, jaw)
    assert result.provenance["boundary_model"] == "ios_boundary_check_v1"


def test_train_boundary_averages_one_refiner_per_seed(meshsegnet_dir, tmp_path, real_scans):
    """``--seeds 0 1 --face-geometry`` trains two refiners whose logits the shipped file averages:
    the card says so, the log has both seeds, and the predictor's decisions are those of the mean."""
    import torch

    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.inference.ios_common import prepare_scan_and_jaw
    from ToothMCLCore.models.boundary_gnn import BoundaryBag
    from ToothMCLCore.models.checkpoint import read_card
    from training.train_boundary import main

    out = tmp_path / "bag"
    assert main(["--data", str(meshsegnet_dir), "--out", str(out), "--limit", "1", "--epochs", "2", "--hidden", "8",
                 "--seeds", "0", "1", "--face-geometry", "--no-validation-figures",
                 "--name", "ios_boundary_bag_v1"]) == 0
    weights = out / "ios_boundary_bag_v1.safetensors"
    card = read_card(weights.with_suffix(".json"))
    assert card.arch_args["bag"] == 2 and card.arch_args["face_geometry"] is True
    assert sorted({row["seed"] for row in card.metrics["training_log"]}) == [0, 1]
    assert "seed 0, 1" in card.notes and "averaged" in card.notes and "triangle's shape" in card.notes
    predictor = IOSPredictor(**FAST, boundary_weights=weights)
    bag = predictor.boundary_net
    assert isinstance(bag, BoundaryBag) and len(bag.members) == 2
    scan, jaw, _ = real_scans["16_upper"]
    net = predictor.network_probabilities(*prepare_scan_and_jaw(scan, jaw))
    faces = np.asarray(net.mesh.faces)
    tooth = net.probs[:, 0] < 0.5
    features, edge_index, edge_features, _ = boundary_inputs(net.points, net.point_normals, faces,
                                                             1.0 - net.probs[:, 0], tooth)
    x = [torch.from_numpy(a) for a in (features, edge_index, edge_features, faces)]
    with torch.no_grad():
        mean = sum(m.face_logits(*x)[0] for m in bag.members) / 2
        np.testing.assert_allclose(bag.face_logits(*x)[0].numpy(), mean.numpy(), rtol=1e-5, atol=1e-5)
    result = predictor.predict(scan, jaw)
    assert result.provenance["boundary_model"] == "ios_boundary_bag_v1"


def test_train_boundary_checks_a_recipe_out_of_fold_without_writing_a_refiner(meshsegnet_dir, tmp_path, capsys):
    """``--out-of-fold 2`` re-decides every training and validation jaw with a refiner that never
    saw its patient, writes the per-jaw figures and no weights; more folds than patients is refused."""
    import json

    from training.train_boundary import main
    from training.train_ios_real import convert

    out = tmp_path / "oof"
    quick = ["--data", str(meshsegnet_dir), "--out", str(out), "--limit", "2", "--epochs", "1", "--hidden", "8",
             "--seeds", "0"]
    assert main([*quick, "--out-of-fold", "9"]) == 1  # refused before any jaw is segmented
    assert "give 2 to" in capsys.readouterr().err and not (out / "out_of_fold.json").exists()
    assert main([*quick, "--out-of-fold", "2"]) == 0
    result = json.loads((out / "out_of_fold.json").read_text())
    jaws = set(result["per_jaw"])
    dataset = convert(meshsegnet_dir, out / "export")  # the export the command made, reused
    patients = {case.patient_id for split in ("train", "val") for case in dataset.split(split) if case.case_id in jaws}
    assert len(jaws) == 4 and all(0.5 < value <= 1.0 for value in result["per_jaw"].values())
    assert sorted(p for fold in result["folds"] for p in fold) == sorted(patients) and all(result["folds"])
    for jaw in ("upper", "lower"):
        values = [v for case, v in result["per_jaw"].items() if case.endswith(jaw)]
        assert result[jaw] == pytest.approx(np.mean(values), abs=1e-5)
    assert "out of fold, tooth vs gingiva" in capsys.readouterr().out
    assert not list(out.glob("*.safetensors"))
