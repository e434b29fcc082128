"""IOS pipeline: canonical frame, label transfer, FDI order fix, segment-ios and evaluate-ios."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.cli import main
from ToothMCLCore.inference.ios import number_vertices, transfer_probabilities
from ToothMCLCore.io.mesh import occlusal_direction, read_mesh, write_mesh
from ToothMCLCore.io.teeth3ds import read_teeth3ds_json, write_teeth3ds_json
from ToothMCLCore.preprocessing.ios import canonical_frame


@pytest.mark.parametrize("jaw", ["upper", "lower"])
def test_canonical_frame_puts_right_teeth_at_positive_x_incisors_front_crowns_up(ios_phantoms, jaw):
    """Both jaws: patient's right at +x, incisors at +y, crowns above the gingiva (+z)."""
    mesh = ios_phantoms[jaw]
    frame = canonical_frame(mesh.vertices_ras, occlusal_direction(mesh), jaw)
    c = frame.apply(mesh.vertices_ras)
    q_right = 1 if jaw == "upper" else 4
    right = (mesh.labels // 10 == q_right) & (mesh.labels > 0)
    incisors = mesh.labels % 10 == 1
    molars = mesh.labels % 10 == 6
    assert c[right, 0].mean() > 10 and c[(mesh.labels > 0) & ~right, 0].mean() < -10
    assert c[incisors, 1].mean() > c[molars, 1].mean() + 15
    assert c[mesh.labels > 0, 2].mean() > c[mesh.labels == 0, 2].mean()


def _one_hot(mesh, labels, jaw, confidence=0.9):
    classes = fdi.fdi_to_class_index(labels, f"ios_{jaw}")
    p = np.full((len(labels), 17), (1 - confidence) / 16)
    p[np.arange(len(labels)), classes] = confidence
    return p


@pytest.mark.parametrize("jaw", ["upper", "lower"])
def test_swapped_and_mirrored_teeth_are_renumbered_on_the_mesh(ios_phantoms, jaw):
    """Neighbours swapped and a canine on the wrong side come back to their FDI numbers."""
    mesh = ios_phantoms[jaw]
    q1, q2 = (1, 2) if jaw == "upper" else (4, 3)
    wrong = mesh.labels.copy()
    for a, b in ((q1 * 10 + 4, q1 * 10 + 5), (q1 * 10 + 3, q2 * 10 + 3)):
        wrong[mesh.labels == a], wrong[mesh.labels == b] = b, a
    frame = canonical_frame(mesh.vertices_ras, occlusal_direction(mesh), jaw)
    labels, instances = number_vertices(mesh, _one_hot(mesh, wrong, jaw), frame.apply(mesh.vertices_ras), jaw)
    assert (labels == mesh.labels).mean() > 0.995
    teeth = sorted(fdi.present_teeth(np.unique(mesh.labels)), key=lambda n: fdi.tooth(n).arch_index)
    # instances run 1..n from the patient's right in arch order
    firsts = [int(np.median(instances[mesh.labels == n])) for n in teeth]
    assert firsts == list(range(1, len(teeth) + 1))


def test_label_transfer_gives_every_vertex_its_nearest_samples_label():
    """Soft 3-NN transfer reproduces the label of a sampled point at its own position."""
    rng = np.random.default_rng(0)
    sampled = rng.random((200, 3)) * 10
    probs = np.eye(17)[rng.integers(0, 17, 200)]
    out = transfer_probabilities(sampled, probs, sampled + 1e-4)
    assert (out.argmax(1) == probs.argmax(1)).all()


@pytest.fixture
def scan_file(tmp_path, ios_phantoms):
    path = tmp_path / "P5_lower.ply"
    write_mesh(path, ios_phantoms["lower"])
    return path


def test_segment_ios_writes_teeth3ds_json_mesh_and_teeth(tmp_path, scan_file, tiny_ios_weights, capsys):
    """JSON with exactly the Teeth3DS keys, one label per vertex, plus labelled mesh and STLs."""
    out = tmp_path / "pred.json"
    code = main(["segment-ios", str(scan_file), "-o", str(out), "--weights", str(tiny_ios_weights),
                 "--mesh-out", str(tmp_path / "labelled.vtp"), "--teeth-dir", str(tmp_path / "teeth"), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "lower jaw (decided by file name)" in printed and "teeth found" in printed
    data = json.loads(out.read_text())
    assert list(data) == ["id_patient", "jaw", "labels", "instances"]
    assert data["jaw"] == "lower" and data["id_patient"] == "P5"
    n = read_mesh(scan_file).n_file_vertices
    assert len(data["labels"]) == n == len(data["instances"])
    assert set(data["labels"]) <= {0} | set(fdi.teeth_of_jaw("lower"))
    labelled = read_mesh(tmp_path / "labelled.vtp")
    assert labelled.mesh.labels is not None and len(labelled.mesh.labels) == labelled.mesh.n_vertices
    stls = sorted(p.name for p in (tmp_path / "teeth").iterdir())
    assert stls == [f"tooth_{t}.stl" for t in sorted(set(data["labels"]) - {0})]


def test_labels_follow_the_file_vertex_order_with_duplicates(tmp_path, ios_phantoms, tiny_ios_weights):
    """A file with duplicated and unreferenced vertices still gets one label per stored vertex."""
    mesh = ios_phantoms["upper"]
    v = np.vstack([mesh.vertices_ras, mesh.vertices_ras[:50], [[500.0, 500.0, 500.0]]])
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    path = tmp_path / "dup_upper.obj"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "dup.json"
    assert main(["segment-ios", str(path), "-o", str(out), "--weights", str(tiny_ios_weights), "-q"]) == 0
    labels = read_teeth3ds_json(out).labels
    assert len(labels) == len(v)
    np.testing.assert_array_equal(labels[mesh.n_vertices:mesh.n_vertices + 50], labels[:50])


def test_evaluate_ios_prints_the_challenge_metrics(tmp_path, scan_file, ios_phantoms, capsys):
    """A perfect prediction scores 1 on TSA, TLA, TIR, score, OA and mIoU."""
    mesh = ios_phantoms["lower"]
    gt = tmp_path / "gt.json"
    write_teeth3ds_json(gt, mesh.labels, mesh.instances, "lower", n_vertices=mesh.n_vertices)
    assert main(["evaluate-ios", str(gt), str(gt), "--mesh", str(scan_file)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("TSA", "TLA", "TIR", "score", "OA", "mIoU"):
        assert metrics[key] == pytest.approx(1.0), key
    assert set(map(int, metrics["per_tooth"])) == set(fdi.present_teeth(np.unique(mesh.labels)))


def test_label_file_of_the_wrong_length_is_refused(tmp_path, scan_file, ios_phantoms, capsys):
    """evaluate-ios with labels for another mesh: a clear error naming both counts."""
    mesh = ios_phantoms["lower"]
    gt = tmp_path / "gt.json"
    write_teeth3ds_json(gt, mesh.labels[:-5], mesh.instances[:-5], "lower")
    code = main(["evaluate-ios", str(gt), str(gt), "--mesh", str(scan_file)])
    err = capsys.readouterr().err
    assert code != 0 and str(mesh.n_vertices) in err and str(mesh.n_vertices - 5) in err


def _bad_scans(tmp, ios_phantoms):
    files = {}
    (tmp / "empty.obj").write_text("# nothing\n")
    files["empty mesh"] = tmp / "empty.obj"
    mesh = ios_phantoms["lower"]
    v = mesh.vertices_ras.copy()
    v[3] = np.nan
    (tmp / "nan_lower.obj").write_text("\n".join([f"v {a} {b} {c}" for a, b, c in v] +
                                                 [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]))
    files["NaN coordinates"] = tmp / "nan_lower.obj"
    metres = tmp / "metres_lower.ply"
    from ToothMCLCore.types import SurfaceMesh

    write_mesh(metres, SurfaceMesh(mesh.vertices_ras / 1000.0, mesh.faces))
    files["metres"] = metres
    both = SurfaceMesh(np.vstack([ios_phantoms["upper"].vertices_ras, mesh.vertices_ras]),
                       np.vstack([ios_phantoms["upper"].faces, mesh.faces + ios_phantoms["upper"].n_vertices]))
    write_mesh(tmp / "both_lower.ply", both)
    files["both jaws"] = tmp / "both_lower.ply"
    (tmp / "few_lower.xyz").write_text("1 2 3\n")
    files["unknown format"] = tmp / "few_lower.xyz"
    return files


@pytest.mark.parametrize("kind", ["empty mesh", "NaN coordinates", "metres", "both jaws", "unknown format"])
def test_bad_scans_exit_nonzero_with_advice_and_no_output(tmp_path, ios_phantoms, tiny_ios_weights, capsys, kind):
    """Each bad scan: non-zero exit, one 'toothmcl: error:' line, no JSON written."""
    path = _bad_scans(tmp_path, ios_phantoms)[kind]
    out = tmp_path / "out.json"
    code = main(["segment-ios", str(path), "-o", str(out), "--weights", str(tiny_ios_weights), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("toothmcl: error:")
    assert not out.exists()


def test_predictor_accepts_a_bare_mesh_and_finds_its_jaw(ios_phantoms, tiny_ios_weights):
    """A SurfaceMesh without file (as from a Slicer model node) is cleaned and its jaw detected."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.types import SurfaceMesh

    mesh = ios_phantoms["upper"]
    bare = SurfaceMesh(mesh.vertices_ras, mesh.faces)
    result = IOSPredictor(weights=tiny_ios_weights, device="cpu").predict(bare)
    assert result.jaw == "upper" and len(result.labels) == mesh.n_vertices
    assert set(np.unique(result.labels)) <= {0} | set(fdi.teeth_of_jaw("upper"))


def test_several_samplings_average_the_probabilities_of_single_ones(ios_phantoms, tiny_ios_weights, monkeypatch):
    """passes=3 labels the scan from the mean of three different samplings' probability maps, and says so."""
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.inference import ios

    mesh = ios_phantoms["lower"]
    per_pass, numbered_with, samples = [], [], []
    transfer, numbered, sample = ios.transfer_probabilities, ios.number_vertices, ios.sample_points
    monkeypatch.setattr(ios, "transfer_probabilities", lambda *a: (per_pass.append(transfer(*a)), per_pass[-1])[1])
    monkeypatch.setattr(ios, "number_vertices", lambda m, probs, *a: (numbered_with.append(probs), numbered(m, probs, *a))[1])
    monkeypatch.setattr(ios, "sample_points", lambda *a, **k: (samples.append(sample(*a, **k)), samples[-1])[1])
    # refine=False: the numbering then sees the averaged probabilities themselves
    result = ios.IOSPredictor(weights=tiny_ios_weights, device="cpu", passes=3, refine=False).predict(mesh, "lower", seed=5)
    single = ios.IOSPredictor(weights=tiny_ios_weights, device="cpu", passes=1, refine=False).predict(mesh, "lower", seed=5)

    assert len(per_pass) == 4 and len(numbered_with) == 2
    np.testing.assert_allclose(numbered_with[0], np.mean(per_pass[:3], axis=0), atol=1e-9)
    assert not np.array_equal(samples[0], samples[1]) and not np.array_equal(samples[1], samples[2])
    assert result.provenance["sampling_passes"] == 3 and single.provenance["sampling_passes"] == 1
    assert len(result.labels) == mesh.n_vertices
    with pytest.raises(InvalidInputError, match="passes must be at least 1"):
        ios.IOSPredictor(weights=tiny_ios_weights, device="cpu", passes=0)


def test_given_a_card_with_sampling_passes_the_predictor_samples_as_the_model_was_measured(tiny_ios_weights,
                                                                                            tmp_path):
    """A card's preprocess "sampling_passes" is the default; passes= overrides it; no card value: 6."""
    import json
    import shutil

    from ToothMCLCore.inference.ios import DEFAULT_PASSES, IOSPredictor
    from ToothMCLCore.models.checkpoint import card_path

    weights = tmp_path / "ios_pt_tiny_v1.safetensors"
    shutil.copy(tiny_ios_weights, weights)
    card = json.loads(card_path(tiny_ios_weights).read_text())
    card["preprocess"]["sampling_passes"] = 2
    card_path(weights).write_text(json.dumps(card))
    assert IOSPredictor(weights=weights, device="cpu").passes == 2
    assert IOSPredictor(weights=weights, device="cpu", passes=4).passes == 4
    assert IOSPredictor(weights=tiny_ios_weights, device="cpu").passes == DEFAULT_PASSES == 6


def _publish_networks(tmp_path, monkeypatch, tiny_ios_weights, members, **preprocess):
    """Differently initialised tiny Point Transformers published in a ``$TOOTHMCL_REGISTRY``
    file (file:// URLs): ``members`` maps each name to the names its own card lists as members.
    Returns {name: weights path}."""
    import torch

    from ToothMCLCore.config import ModelCard
    from ToothMCLCore.models import build_model
    from ToothMCLCore.models.checkpoint import card_path, save_checkpoint, sha256_of

    arch = json.loads(card_path(tiny_ios_weights).read_text())["arch_args"]
    server = tmp_path / "server"
    server.mkdir()
    paths, entries = {}, {}
    for seed, (name, its_members) in enumerate(members.items(), start=1):
        torch.manual_seed(seed)
        paths[name] = server / f"{name}.safetensors"
        card = ModelCard(name=name, version="0.0.1", task="ios_teeth", architecture="point_transformer",
                         arch_args=arch, class_scheme="ios", preprocess={"n_points": 2048, **preprocess},
                         members=list(its_members))
        save_checkpoint(build_model("point_transformer", arch), card, paths[name])
        entries[name] = {"url": paths[name].as_uri(), "sha256": sha256_of(paths[name]), "task": "ios_teeth"}
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps(entries))
    monkeypatch.setenv("TOOTHMCL_REGISTRY", str(registry))
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "cache"))
    return paths


def _with_members(tmp_path, tiny_ios_weights, members):
    """A copy of the tiny weights whose card names ``members``."""
    from ToothMCLCore.models.checkpoint import card_path

    ensemble = tmp_path / "ios_pt_tiny_v1.safetensors"
    ensemble.write_bytes(tiny_ios_weights.read_bytes())
    card_path(ensemble).write_text(json.dumps({**json.loads(card_path(tiny_ios_weights).read_text()),
                                               "members": list(members)}))
    return ensemble


def _publish_second_network(tmp_path, monkeypatch, tiny_ios_weights, **preprocess):
    """A differently initialised tiny Point Transformer published as ``ios_pt_tiny_b_v1``, and a
    copy of the tiny weights whose card names it as an ensemble member. Returns (ensemble
    weights, member weights)."""
    member = _publish_networks(tmp_path, monkeypatch, tiny_ios_weights, {"ios_pt_tiny_b_v1": ()},
                               **preprocess)["ios_pt_tiny_b_v1"]
    return _with_members(tmp_path, tiny_ios_weights, ["ios_pt_tiny_b_v1"]), member


def test_a_card_naming_members_averages_their_probabilities(tmp_path, monkeypatch, ios_phantoms, tiny_ios_weights):
    """A card with ``members`` segments with the mean of its own network's and each member's class
    probabilities on the same sampled points (an ensemble), and the result's provenance names each
    member with its version and SHA-256, so a saved prediction says which weights made it."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.inference.ios_common import prepare_scan_and_jaw
    from ToothMCLCore.models.checkpoint import sha256_of

    ensemble, member = _publish_second_network(tmp_path, monkeypatch, tiny_ios_weights)
    scan, jaw = prepare_scan_and_jaw(ios_phantoms["lower"], "lower")
    both = IOSPredictor(weights=ensemble, device="cpu", passes=2, mirror=True)
    alone = [IOSPredictor(weights=w, device="cpu", passes=2, mirror=True) for w in (tiny_ios_weights, member)]
    probs = [p.network_probabilities(scan, jaw).probs for p in (both, *alone)]
    np.testing.assert_allclose(probs[0], (probs[1] + probs[2]) / 2, atol=1e-5)
    assert np.abs(probs[1] - probs[2]).max() > 0.01  # two different networks, so the mean is not either one

    result = both.predict(ios_phantoms["lower"], "lower")
    assert result.provenance["ensemble_members"] == f"ios_pt_tiny_b_v1 0.0.1 {sha256_of(member)}"
    assert alone[0].predict(ios_phantoms["lower"], "lower").provenance["ensemble_members"] == ""


def test_a_member_that_is_itself_an_ensemble_counts_each_network_once(tmp_path, monkeypatch, ios_phantoms,
                                                                       tiny_ios_weights):
    """A card naming b and c, where b's own card names c, averages three networks, each once (not
    c twice); a card naming b without c is refused with what to add, since b alone would silently
    drop the network b was trained beside; so is a card naming a network twice, or itself."""
    from ToothMCLCore.errors import WeightsError
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.inference.ios_common import prepare_scan_and_jaw

    paths = _publish_networks(tmp_path, monkeypatch, tiny_ios_weights,
                              {"ios_pt_tiny_b_v1": ["ios_pt_tiny_c_v1"], "ios_pt_tiny_c_v1": ()})
    scan, jaw = prepare_scan_and_jaw(ios_phantoms["lower"], "lower")
    three = IOSPredictor(weights=_with_members(tmp_path, tiny_ios_weights, ["ios_pt_tiny_b_v1", "ios_pt_tiny_c_v1"]),
                         device="cpu", passes=1)
    singles = [IOSPredictor(weights=tiny_ios_weights, device="cpu", passes=1),
               IOSPredictor(weights=paths["ios_pt_tiny_c_v1"], device="cpu", passes=1)]
    b_alone = IOSPredictor(weights=paths["ios_pt_tiny_b_v1"], device="cpu", passes=1)  # b's own card: b and c
    main, c, b_and_c = (p.network_probabilities(scan, jaw).probs for p in (*singles, b_alone))
    b = 2 * b_and_c - c
    np.testing.assert_allclose(three.network_probabilities(scan, jaw).probs, (main + b + c) / 3, atol=1e-5)
    assert len(three.member_nets) == 2

    with pytest.raises(WeightsError, match="name ios_pt_tiny_c_v1 in ios_pt_tiny_v1's members too"):
        IOSPredictor(weights=_with_members(tmp_path, tiny_ios_weights, ["ios_pt_tiny_b_v1"]), device="cpu")
    for twice in (["ios_pt_tiny_c_v1", "ios_pt_tiny_c_v1"], ["ios_pt_tiny_v1", "ios_pt_tiny_c_v1"]):
        with pytest.raises(WeightsError, match="name a network twice or the card's own network"):
            IOSPredictor(weights=_with_members(tmp_path, tiny_ios_weights, twice), device="cpu")


def test_a_member_that_samples_differently_is_refused(tmp_path, monkeypatch, tiny_ios_weights):
    """Members run on the main network's sampled points, so a member trained on another point
    count is refused when the predictor is made, with what to fix."""
    from ToothMCLCore.errors import WeightsError
    from ToothMCLCore.inference.ios import IOSPredictor

    ensemble, _ = _publish_second_network(tmp_path, monkeypatch, tiny_ios_weights, n_points=4096)
    with pytest.raises(WeightsError, match="n_points differ .* fix one of the two cards"):
        IOSPredictor(weights=ensemble, device="cpu")


def test_the_same_scan_gets_the_same_labels_every_time(ios_phantoms, tiny_ios_weights):
    """Segmenting a scan twice gives identical labels and probabilities: no sampling inside the
    network starts at a random point (fpsample's default), so a clinician re-running a scan, or
    an annotator comparing with the saved prediction, sees no spurious changes."""
    from ToothMCLCore.inference import ios

    predictor = ios.IOSPredictor(weights=tiny_ios_weights, device="cpu", passes=2)
    first = predictor.predict(ios_phantoms["lower"], "lower")
    second = predictor.predict(ios_phantoms["lower"], "lower")
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.instances, second.instances)


def test_large_mesh_is_decimated_and_still_labelled_per_file_vertex(tmp_path, ios_phantoms, tiny_ios_weights,
                                                                     monkeypatch, caplog):
    """Above the face budget the scan is decimated first (and says so); labels still cover every vertex."""
    import ToothMCLCore.inference.ios as ios_module

    monkeypatch.setattr(ios_module, "DECIMATE_ABOVE_FACES", 10_000)
    monkeypatch.setattr(ios_module, "DECIMATE_TO_FACES", 5_000)
    mesh = ios_phantoms["lower"]
    path = tmp_path / "big_lower.ply"
    write_mesh(path, mesh)
    out = tmp_path / "big.json"
    with caplog.at_level("WARNING"):
        assert main(["segment-ios", str(path), "-o", str(out), "--weights", str(tiny_ios_weights), "-q"]) == 0
    assert any("decimated the scan" in r.message for r in caplog.records)
    assert len(read_teeth3ds_json(out).labels) == mesh.n_vertices


def test_point_cloud_without_faces_is_segmented(tmp_path, ios_phantoms, tiny_ios_weights):
    """A scan exported as bare points (no faces) still gets one label per point."""
    from ToothMCLCore.types import SurfaceMesh

    mesh = ios_phantoms["lower"]
    path = tmp_path / "cloud_lower.ply"
    write_mesh(path, SurfaceMesh(mesh.vertices_ras, np.zeros((0, 3), np.int64)))
    out = tmp_path / "cloud.json"
    assert main(["segment-ios", str(path), "-o", str(out), "--weights", str(tiny_ios_weights), "-q"]) == 0
    assert len(read_teeth3ds_json(out).labels) == mesh.n_vertices


def test_paper_protocol_labels_each_vertex_by_its_most_probable_class_from_one_sampling(ios_phantoms, tiny_ios_weights,
                                                                                        monkeypatch, tmp_path,
                                                                                        capsys):
    """--paper-protocol: one sampling, no mirror, and every vertex takes the FDI number of its most
    probable class (our region clean-up and order-aware numbering are skipped); the provenance says
    so; asking for more passes or the mirror with it is refused with advice."""
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.inference import ios

    mesh = ios_phantoms["lower"]
    per_pass = []
    transfer = ios.transfer_probabilities
    monkeypatch.setattr(ios, "transfer_probabilities", lambda *a: (per_pass.append(transfer(*a)), per_pass[-1])[1])
    monkeypatch.setattr(ios, "number_vertices", lambda *a: pytest.fail("the paper protocol numbers no regions"))
    result = ios.IOSPredictor(weights=tiny_ios_weights, device="cpu", paper_protocol=True).predict(mesh, "lower")
    assert len(per_pass) == 1
    expected = fdi.class_index_to_fdi(per_pass[0].argmax(axis=1), "ios_lower")
    np.testing.assert_array_equal(result.labels, expected)
    assert result.provenance["paper_protocol"] and result.provenance["sampling_passes"] == 1
    assert not result.provenance["mirror_passes"]
    teeth = sorted(set(expected) - {0}, key=lambda t: fdi.tooth(t).arch_index)
    assert [int(np.unique(result.instances[result.labels == t])[0]) for t in teeth] == list(range(1, len(teeth) + 1))
    for options in ({"passes": 3}, {"mirror": True}):
        with pytest.raises(InvalidInputError, match="paper's protocol samples once"):
            ios.IOSPredictor(weights=tiny_ios_weights, device="cpu", paper_protocol=True, **options)
    path = tmp_path / "P_lower.ply"
    write_mesh(path, mesh)
    assert main(["segment-ios", str(path), "-o", str(tmp_path / "out.json"), "--weights", str(tiny_ios_weights),
                 "--paper-protocol", "--passes", "2", "-q"]) != 0
    assert "paper's protocol samples once" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
