"""Training on real scans: per-step resolution, inference-like sampling, tilt/jitter augmentation, config."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore.errors import ConfigError
from ToothMCLCore.preprocessing.ios import augment
from training.finetune import IOSFinetuneConfig
from training.ios_sampling import resample_jaw, sample_like_inference, subdivide


@pytest.fixture(scope="module")
def jaw():
    """A 1 mm phantom lower jaw as class indices (0 gingiva, 1..16 teeth) in its canonical frame."""
    from ToothMCLCore import fdi
    from ToothMCLCore.synthetic import make_ios_phantom

    mesh = make_ios_phantom(3, "lower", resolution_mm=1.0)
    classes = fdi.fdi_to_class_index(mesh.labels, "ios_lower", strict=False).astype(np.int64)
    return mesh.vertices_ras, mesh.faces, classes


def test_subdivision_keeps_the_original_vertices_and_labels_new_ones_from_their_ends(jaw):
    """One level quadruples the faces; old vertices keep their class; a midpoint between gingiva and a
    tooth joins the tooth, one between two vertices of a class keeps it."""
    v, f, cl = jaw
    v2, f2, cl2 = subdivide(v, f, cl, levels=1)
    assert len(f2) == 4 * len(f)
    np.testing.assert_array_equal(v2[: len(v)], v)
    np.testing.assert_array_equal(cl2[: len(v)], cl)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    midpoints = (v[edges[:, 0]] + v[edges[:, 1]]) / 2
    from scipy.spatial import cKDTree

    _, nearest = cKDTree(v2).query(midpoints)
    a, b = cl[edges[:, 0]], cl[edges[:, 1]]
    same = a == b
    np.testing.assert_array_equal(cl2[nearest[same]], a[same])
    mixed = (a == 0) != (b == 0)
    np.testing.assert_array_equal(cl2[nearest[mixed]], np.maximum(a, b)[mixed])


@pytest.mark.parametrize("version,vertex_range", [("native", (1.0, 1.0)), ("decimated", (0.35, 0.95)),
                                                  ("subdivided", (3.5, 17.0))])
def test_each_resolution_version_has_its_size_and_keeps_the_teeth_where_they_are(jaw, version, vertex_range):
    """native = the scan, decimated = fewer vertices, subdivided = 4-16x: every tooth keeps its place
    (the centroid of each class moves by less than 0.5 mm) and is sampled to at most n_points."""
    v, f, cl = jaw
    rng = np.random.default_rng(0)
    big = 10 ** 6
    pts, nrm, classes, drawn = resample_jaw(v, f, cl, big, rng, choices=((version, 1.0),))
    assert drawn == version
    assert vertex_range[0] * len(v) <= len(pts) <= vertex_range[1] * len(v)
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-5)
    for k in np.unique(cl)[1:]:
        assert np.linalg.norm(pts[classes == k].mean(0) - v[cl == k].mean(0)) < 0.5, k
    sampled, _, _, _ = resample_jaw(v, f, cl, 500, np.random.default_rng(1), choices=((version, 1.0),))
    assert len(sampled) == 500


def test_sampling_like_inference_keeps_every_point_of_a_small_scan_and_spreads_a_large_one():
    """Up to n_points all points (permuted); above, n distinct points that cover the scan."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 50, (3000, 3))
    assert sorted(sample_like_inference(pts, 5000, rng).tolist()) == list(range(3000))
    idx = sample_like_inference(pts, 300, rng)
    assert len(np.unique(idx)) == 300
    from scipy.spatial import cKDTree

    gap, _ = cKDTree(pts[idx]).query(pts)
    assert gap.max() < 8.0  # a random subset of 300 leaves holes of ~10 mm


def test_tilted_augmentation_rotates_about_the_occlusal_axis_more_than_it_tilts():
    """With tilt set, the occlusal axis (z) moves by at most the tilt, and no draw mirrors the scan."""
    pts = np.random.default_rng(0).normal(size=(200, 3))
    normals = np.tile([0.0, 0.0, 1.0], (200, 1))
    tilts, spins = [], []
    for seed in range(200):
        out, n = augment(pts, normals, np.random.default_rng(seed), max_angle=0.5, shift_mm=0.0, scale=(1, 1),
                         tilt=0.1)
        tilts.append(np.arccos(np.clip(n[0, 2], -1, 1)))
        r, *_ = np.linalg.lstsq(pts, out, rcond=None)
        assert np.linalg.det(r) > 0
        spins.append(abs(np.arctan2(r[0, 1], r[0, 0])))
    assert max(tilts) <= 0.1 * np.sqrt(2) + 1e-6
    assert max(spins) > 0.4


def test_jitter_moves_points_by_about_its_size_and_no_more_than_three_times_it():
    """jitter_mm = 0.1: every coordinate moves by at most 0.3 mm, typically 0.1."""
    pts = np.zeros((5000, 3))
    out, _ = augment(pts, np.tile([0, 0, 1.0], (5000, 1)), np.random.default_rng(0), max_angle=0.0, shift_mm=0.0,
                     scale=(1, 1), tilt=0.0, jitter_mm=0.1)
    assert np.abs(out).max() <= 0.3 + 1e-9
    assert 0.08 < out.std() < 0.12


def test_paper_augmentation_is_unchanged_without_the_real_scan_options():
    """Without tilt and jitter the same draws give the same scan as before (the paper's augmentation)."""
    pts = np.random.default_rng(1).normal(size=(50, 3))
    nrm = np.tile([0, 0, 1.0], (50, 1))
    a, _ = augment(pts, nrm, np.random.default_rng(5))
    b, _ = augment(pts, nrm, np.random.default_rng(5), tilt=None, jitter_mm=0.0)
    np.testing.assert_array_equal(a, b)


def test_arch_width_widens_the_arch_across_only_and_keeps_the_normals_on_the_surface():
    """width (1.2, 1.2) on a plane x + z = 0: x grows 1.2x, y and z stay; the normals stay unit and
    perpendicular to the widened plane (inverse transpose), and without it the draws are unchanged."""
    rng = np.random.default_rng(2)
    xy = rng.normal(size=(100, 2)) * 10
    pts = np.stack([xy[:, 0], xy[:, 1], -xy[:, 0]], axis=1)
    nrm = np.tile([1.0, 0.0, 1.0], (100, 1)) / np.sqrt(2)
    out, n = augment(pts, nrm, np.random.default_rng(0), max_angle=0.0, shift_mm=0.0, scale=(1, 1), tilt=0.0,
                     width=(1.2, 1.2))
    np.testing.assert_allclose(out, pts * [1.2, 1, 1], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)
    np.testing.assert_allclose(np.einsum("ij,ij->i", out - out[:1], n), 0.0, atol=1e-9)
    plain, _ = augment(pts, nrm, np.random.default_rng(0), max_angle=0.3, tilt=0.1)
    same, _ = augment(pts, nrm, np.random.default_rng(0), max_angle=0.3, tilt=0.1, width=None)
    np.testing.assert_array_equal(plain, same)


@pytest.mark.parametrize("values,message", [({"sampling": "poisson"}, "ios.sampling"),
                                            ({"resolution_augment": True}, "needs ios.sampling: mesh"),
                                            ({"sampling": "mesh", "repeats": 0}, "ios.repeats"),
                                            ({"arch_width": [1.2, 0.9]}, "ios.arch_width")])
def test_inconsistent_sampling_settings_are_refused(values, message):
    """A config that cannot run says which key to fix."""
    base = {"arch": {}, "n_points": 1024}
    with pytest.raises(ConfigError, match=message):
        IOSFinetuneConfig.from_dict({**base, **values})
