"""SOFTooth input: decimation and labels, 24-d face features, occlusal view, frozen SAM features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ToothMCLCore.errors import WeightsError
from ToothMCLCore.models.sam_features import SAMFeatureExtractor, TinySAMEncoder, sample_embedding
from ToothMCLCore.preprocessing.softooth import (
    decimate_scan,
    face_features,
    prepare_softooth_input,
    render_occlusal,
)
from ToothMCLCore.synthetic import make_ios_phantom


@pytest.fixture(scope="module")
def lower():
    """Synthetic lower jaw, about 16 k vertices, FDI labels."""
    return make_ios_phantom(3, "lower", resolution_mm=0.8)


@pytest.fixture(scope="module")
def prepared(lower):
    return prepare_softooth_input(lower, target_faces=3000)


@pytest.fixture(scope="module")
def view(prepared):
    return render_occlusal(prepared.vertices_canonical, prepared.faces, image_size=160)


@pytest.fixture()
def tiny(tmp_path):
    return SAMFeatureExtractor(None, "tiny", device="cpu", cache_root=tmp_path / "sam", tiny_img_size=128)


# ------------------------------------------------------------------------------------------------
# Decimation, labels, features
# ------------------------------------------------------------------------------------------------

def test_decimation_gives_about_target_faces_with_majority_labels(lower):
    """Decimation keeps about the asked face count; each face takes its vertices' majority label."""
    scan = decimate_scan(lower, target_faces=3000)
    assert 2700 <= len(scan.mesh.faces) <= 3300
    assert scan.n_input_faces == len(lower.faces)
    rng = np.random.default_rng(0)
    checked = 0
    for face in rng.choice(len(scan.mesh.faces), 300, replace=False):
        members = lower.labels[scan.vertex_to_face == face]
        if len(members):
            values, counts = np.unique(members, return_counts=True)
            assert scan.face_labels[face] == values[counts.argmax()]
            checked += 1
    assert checked > 200
    assert set(np.unique(scan.face_labels)) == set(np.unique(lower.labels))
    assert set(np.unique(scan.face_instances)) == set(np.unique(lower.instances))


def test_mapping_back_covers_every_original_vertex(lower, prepared):
    """Every input vertex gets a nearby decimated face; labels survive the round trip."""
    v2f = prepared.vertex_to_face
    assert v2f.shape == (lower.n_vertices,)
    assert v2f.min() >= 0 and v2f.max() < prepared.n_faces
    centres = prepared.frame.apply(lower.vertices_ras)
    gap = np.linalg.norm(centres - prepared.face_centres_canonical[v2f], axis=1)
    corner = np.linalg.norm(prepared.vertices_canonical[prepared.faces]
                            - prepared.face_centres_canonical[:, None], axis=2).max(1)
    assert (gap <= corner[v2f] + 1.0).mean() > 0.99  # within the reach of its face, give or take 1 mm
    assert gap.max() < 6.0
    back = prepared.to_vertices(prepared.face_labels)
    assert back.shape == (lower.n_vertices,)
    assert (back == lower.labels).mean() > 0.95


def test_face_features_on_two_triangles():
    """Two hand-made triangles: centre, corners (scaled), face and area-weighted vertex normals."""
    v = np.array([[0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, 0, -1]], float)
    f = np.array([[0, 1, 2], [0, 3, 1]])  # normals +z and +x, equal areas
    feats = face_features(v, f, scale_mm=10.0)
    assert feats.shape == (2, 24) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[0, 0:3], v[f[0]].mean(0) / 10.0, atol=1e-7)
    np.testing.assert_allclose(feats[0, 3:12], v[f[0]].ravel() / 10.0, atol=1e-7)
    np.testing.assert_allclose(feats[1, 3:12], v[f[1]].ravel() / 10.0, atol=1e-7)
    np.testing.assert_allclose(feats[0, 12:15], [0, 0, 1], atol=1e-7)
    np.testing.assert_allclose(feats[1, 12:15], [1, 0, 0], atol=1e-7)
    edge = np.array([1, 0, 1]) / np.sqrt(2)
    np.testing.assert_allclose(feats[0, 15:24], np.r_[edge, edge, [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(feats[1, 15:24], np.r_[edge, [1, 0, 0], edge], atol=1e-6)


@pytest.mark.parametrize("jaw", ["upper", "lower"])
def test_canonical_faces_point_out_and_occlusal_up(jaw):
    """In the canonical frame both jaws' triangles face outwards and the crowns point to +z."""
    inp = prepare_softooth_input(make_ios_phantom(5, jaw, resolution_mm=1.0), target_faces=2000)
    v = inp.vertices_canonical[inp.faces]
    area_normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert area_normals.sum(0)[2] > 0.2 * np.linalg.norm(area_normals, axis=1).sum()
    np.testing.assert_allclose(inp.features[:, 12:15].sum(0) / inp.n_faces,
                               (area_normals / np.linalg.norm(area_normals, axis=1, keepdims=True)).mean(0),
                               atol=1e-5)
    assert np.abs(inp.features[:, :12]).max() < 1.5  # 50 mm scale: a jaw within about [-1, 1]


# ------------------------------------------------------------------------------------------------
# Occlusal rendering
# ------------------------------------------------------------------------------------------------

def test_every_visible_face_maps_to_a_pixel_whose_ray_hits_it(prepared, view):
    """A visible face's pixel sees that very face; most faces of a jaw are visible from above."""
    assert view.image.shape == (160, 160, 3) and view.image.dtype == np.uint8
    vis = np.nonzero(view.face_visible)[0]
    ij = view.face_pixel_ij
    np.testing.assert_array_equal(view.pixel_face[ij[vis, 0], ij[vis, 1]], vis)
    assert view.face_visible.mean() > 0.6
    hidden = ~view.face_visible
    assert (view.pixel_face[ij[hidden, 0], ij[hidden, 1]] >= 0).all()  # hidden faces sample the jaw


def test_face_hidden_under_another_is_flagged():
    """A small triangle under a large one is hidden; it samples the occluder right above it."""
    v = np.array([[-5, -5, 1], [5, -5, 1], [0, 5, 1], [-1, -1, 0], [1, -1, 0], [0, 1, 0]], float)
    f = np.array([[0, 1, 2], [3, 4, 5]])
    view = render_occlusal(v, f, image_size=64)
    assert view.face_visible.tolist() == [True, False]
    np.testing.assert_allclose(view.face_pixel_yx[1], view.project(v[3:].mean(0, keepdims=True))[0])
    i, j = view.face_pixel_ij[1]
    assert view.pixel_face[i, j] == 0
    assert not (view.pixel_face == 1).any()


def test_image_is_brightest_where_the_surface_faces_the_viewer():
    """A dome is brightest at its top, dark at its rim; the background stays black."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    view = render_occlusal(np.asarray(sphere.vertices), np.asarray(sphere.faces), image_size=96)
    grey = view.image[..., 0].astype(float)
    assert (view.image[..., 0] == view.image[..., 2]).all()
    assert (grey[view.pixel_face < 0] == 0).all()
    seen = view.pixel_face >= 0
    nz = np.asarray(sphere.face_normals)[view.pixel_face[seen], 2]
    assert np.corrcoef(nz, grey[seen])[0, 1] > 0.95
    top = np.unravel_index(np.argmax(np.where(seen, grey, -1)), grey.shape)
    assert np.hypot(top[0] - 47.5, top[1] - 47.5) < 4
    assert grey[seen][nz > 0.95].min() > grey[seen][nz < 0.3].max()


@pytest.mark.parametrize("jaw, anterior, right, left", [("lower", (31, 41), 46, 36), ("upper", (11, 21), 16, 26)])
def test_view_has_incisors_on_top_and_patient_right_on_the_right(jaw, anterior, right, left):
    """Both jaws look alike: incisors in the top rows, the patient's right first molar on the right."""
    inp = prepare_softooth_input(make_ios_phantom(2, jaw, resolution_mm=1.0), target_faces=2000)
    view = render_occlusal(inp.vertices_canonical, inp.faces, image_size=64)
    yx = view.face_pixel_yx
    rows = {t: yx[inp.face_labels == t, 0].mean() for t in (*anterior, right, left)}
    assert max(rows[t] for t in anterior) < min(rows[right], rows[left])
    assert yx[inp.face_labels == right, 1].mean() > yx[inp.face_labels == left, 1].mean()


# ------------------------------------------------------------------------------------------------
# SAM features
# ------------------------------------------------------------------------------------------------

def test_sampling_constant_and_gradient_embeddings():
    """Bilinear sampling returns the known value: constant, and a ramp under both conventions."""
    const = torch.full((1, 256, 4, 4), 2.5)
    yx = torch.tensor([[[0.0, 0.0], [63.0, 63.0], [10.3, 40.7]]])
    np.testing.assert_allclose(sample_embedding(const, yx, (64, 64)).numpy(), 2.5)
    i, j = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    ramp = (j + 10 * i).expand(1, 3, 4, 4)
    got = sample_embedding(ramp, torch.tensor([[[0.0, 0.0], [63.0, 63.0], [21.0, 42.0]]]), (64, 64))
    np.testing.assert_allclose(got[0, :, 0].numpy(), [0.0, 33.0, 12.0], atol=1e-5)  # Eq. 3
    got = sample_embedding(ramp, torch.tensor([[[8.0, 24.0], [0.0, 0.0]]]), (64, 64), align_corners=False)
    np.testing.assert_allclose(got[0, :, 1].numpy(), [1.34375, 0.0], atol=1e-5)  # patch centres, border


def test_extractor_samples_the_cell_under_each_face_pixel(tiny, view):
    """Pixels on cell centres give that cell's embedding; one feature row and flag per face."""
    image = np.zeros((128, 128, 3), np.uint8)
    image[30:90, 20:100] = 200
    emb = tiny.embed(image)
    assert emb.shape == (256, 8, 8) and emb.dtype == np.float32
    scale = 127 / 7
    yx = np.array([[0, 0], [3 * scale, 5 * scale], [127, 127]])
    got = tiny.face_features(image, yx)
    np.testing.assert_allclose(got, emb[:, [0, 3, 7], [0, 5, 7]].T, rtol=1e-5, atol=1e-5)
    feats, visible = tiny(view)
    assert feats.shape == (len(view.face_visible), 256) and feats.dtype == np.float32
    np.testing.assert_array_equal(visible, view.face_visible)


def test_embedding_is_cached_on_disk_and_not_recomputed(tmp_path, monkeypatch, view):
    """The second request for one image reads the cache; a new image or model runs the encoder."""
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path))
    calls = []
    first = SAMFeatureExtractor(None, "tiny", device="cpu", tiny_img_size=128)
    first.encoder.register_forward_hook(lambda *a: calls.append(1))
    a = first.embed(view.image)
    b = first.embed(view.image)
    assert len(calls) == 1 and first.encoder_calls == 1
    np.testing.assert_array_equal(a, b)
    files = list((tmp_path / "sam").glob("*.npy"))
    assert [p.stem for p in files] == [first.cache_key(view.image)]
    np.testing.assert_array_equal(np.load(files[0], allow_pickle=False), a)
    second = SAMFeatureExtractor(None, "tiny", device="cpu", tiny_img_size=128)
    np.testing.assert_array_equal(second.embed(view.image), a)
    assert second.encoder_calls == 0
    second.embed(255 - view.image)
    assert second.encoder_calls == 1
    other = SAMFeatureExtractor(None, "tiny", device="cpu", tiny_img_size=128, use_cache=False)
    other.embed(view.image)
    assert other.encoder_calls == 1 and len(list((tmp_path / "sam").glob("*.npy"))) == 2


def test_checkpoint_with_wrong_sha256_is_refused(tmp_path):
    """A file that is not the official checkpoint, or not the given SHA-256, is never loaded."""
    from ToothMCLCore.models.checkpoint import sha256_of

    fake = tmp_path / "sam_vit_b_01ec64.pth"
    fake.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="published SHA-256 of the official SAM vit_b"):
        SAMFeatureExtractor(fake, "vit_b", device="cpu")
    with pytest.raises(WeightsError, match="given sha256"):
        SAMFeatureExtractor(fake, "vit_l", sha256="0" * 64, device="cpu")
    with pytest.raises(WeightsError, match="cannot read"):
        SAMFeatureExtractor(fake, "vit_b", sha256=sha256_of(fake), device="cpu")
    with pytest.raises(WeightsError, match="needs its checkpoint"):
        SAMFeatureExtractor(None, "vit_b", device="cpu")


def test_checkpoint_loads_tensors_only(tmp_path):
    """A state dict loads with weights_only (same embedding); a pickle of other objects is refused."""
    from ToothMCLCore.models.checkpoint import sha256_of

    good = tmp_path / "tiny.pth"
    torch.save(TinySAMEncoder(128).state_dict(), good)
    loaded = SAMFeatureExtractor(good, "tiny", sha256=sha256_of(good), device="cpu", use_cache=False,
                                 tiny_img_size=128)
    fresh = SAMFeatureExtractor(None, "tiny", device="cpu", use_cache=False, tiny_img_size=128)
    image = np.full((64, 64, 3), 90, np.uint8)
    np.testing.assert_array_equal(loaded.embed(image), fresh.embed(image))
    assert loaded.weights_id == sha256_of(good)
    bad = tmp_path / "bad.pth"
    torch.save({"net.0.weight": torch.zeros(1), "where": tmp_path}, bad)
    with pytest.raises(WeightsError, match="cannot read"):
        SAMFeatureExtractor(bad, "tiny", sha256=sha256_of(bad), device="cpu")


def test_no_gradient_reaches_the_frozen_encoder(tiny, view):
    """Training on the sampled features leaves the encoder frozen, in eval mode, without grads."""
    feats, _ = tiny(view)
    head = torch.nn.Linear(256, 1)
    loss = head(torch.from_numpy(feats)).square().mean()
    loss.backward()
    assert head.weight.grad is not None
    assert not tiny.encoder.training
    assert all(not p.requires_grad and p.grad is None for p in tiny.encoder.parameters())
