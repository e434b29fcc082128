"""Synthetic phantoms: determinism, anatomy in RAS, intensities, metal, CBCT-IOS pairing."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.fdi import METAL_LABEL, PERMANENT_FDI, tooth
from ToothMCLCore.synthetic import (
    make_cbct_phantom,
    make_ios_phantom,
    make_layout,
    make_phantom,
    phantom_grid,
)

FAST = {"spacing": 0.8}  # ~90 x 90 x 75 voxels, well under a second


def world_centroids(labels) -> dict[int, np.ndarray]:
    """RAS centroid (mm) of every label value of a label volume."""
    arr = labels.array
    k, j, i = np.nonzero(arr)
    ras = (labels.geometry.ijk_to_ras @ np.stack([i, j, k, np.ones_like(i)]))[:3].T
    values = arr[k, j, i]
    return {int(v): ras[values == v].mean(axis=0) for v in np.unique(values)}


def world_points(labels, value: int) -> np.ndarray:
    k, j, i = np.nonzero(labels.array == value)
    return (labels.geometry.ijk_to_ras @ np.stack([i, j, k, np.ones_like(i)]))[:3].T


@pytest.fixture(scope="module")
def full_case():
    """Seed 3 with all 32 teeth, CBCT at 0.8 mm and both scans at 0.8 mm."""
    return make_phantom(3, third_molars=True, ios_resolution_mm=0.8, **FAST)


def test_same_seed_gives_identical_phantom(full_case):
    """Two phantoms of one seed are identical voxel for voxel."""
    image, labels = make_cbct_phantom(3, third_molars=True, **FAST)
    np.testing.assert_array_equal(image.array, full_case.image.array)
    np.testing.assert_array_equal(labels.array, full_case.labels.array)
    assert labels.geometry.allclose(full_case.labels.geometry)


def test_different_seeds_give_different_phantoms(full_case):
    """Another seed moves and resizes the teeth."""
    _, labels = make_cbct_phantom(4, third_molars=True, **FAST)
    a, b = world_centroids(labels), world_centroids(full_case.labels)
    shift = max(np.linalg.norm(a[n] - b[n]) for n in PERMANENT_FDI)
    assert shift > 0.5


def test_labels_are_exactly_the_present_teeth(full_case):
    """With third molars present the label map holds the 32 permanent FDI numbers and 0."""
    values = set(np.unique(full_case.labels.array).tolist())
    assert values == {0, *PERMANENT_FDI}
    assert full_case.labels.array.dtype == np.uint8
    assert full_case.image.array.dtype == np.float32


def test_missing_teeth_are_absent_from_labels():
    """Missing teeth and absent third molars leave no voxels."""
    _, labels = make_cbct_phantom(5, missing=[11, 36], third_molars=False, **FAST)
    expected = {n for n in PERMANENT_FDI if n % 10 != 8} - {11, 36}
    assert set(np.unique(labels.array).tolist()) - {0} == expected


def test_missing_probability_drops_some_teeth():
    """A missing-tooth probability removes teeth, and the layout tells which."""
    layout = make_layout(6, missing=0.3, third_molars=True)
    _, labels = make_cbct_phantom(6, layout=layout, **FAST)
    assert 0 < len(layout.absent) < 32
    assert set(np.unique(labels.array).tolist()) - {0} == set(layout.fdi_numbers)


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique"])
def test_patient_right_teeth_have_larger_r_coordinate(orientation):
    """In RAS (+x = patient's right) quadrants 1 and 4 lie at larger x than 2 and 3."""
    _, labels = make_cbct_phantom(7, orientation=orientation, third_molars=True, **FAST)
    c = world_centroids(labels)
    for position in range(1, 9):
        assert c[10 + position][0] > c[20 + position][0]  # upper right vs upper left
        assert c[40 + position][0] > c[30 + position][0]  # lower right vs lower left
    assert min(c[n][0] for n in c if n // 10 in (1, 4)) > 0.0
    assert max(c[n][0] for n in c if n // 10 in (2, 3)) < 0.0


def test_orientation_changes_grid_not_anatomy():
    """RAS, LPS and oblique grids put every tooth at the same RAS position (within a voxel)."""
    results = {o: make_cbct_phantom(8, orientation=o, **FAST)[1] for o in ("RAS", "LPS", "oblique")}
    np.testing.assert_allclose(results["LPS"].geometry.direction_ras, np.diag([-1.0, -1.0, 1.0]))
    assert not np.allclose(results["oblique"].geometry.direction_ras, np.eye(3), atol=0.1)
    ref = world_centroids(results["RAS"])
    for name in ("LPS", "oblique"):
        other = world_centroids(results[name])
        assert set(other) == set(ref)
        for n in ref:
            assert np.linalg.norm(other[n] - ref[n]) < 0.8, (name, n)


def test_upper_teeth_are_superior_to_lower_teeth(full_case):
    """Every upper tooth voxel lies above every lower tooth voxel (the jaws never touch)."""
    upper = np.concatenate([world_points(full_case.labels, n) for n in PERMANENT_FDI if n < 30])
    lower = np.concatenate([world_points(full_case.labels, n) for n in PERMANENT_FDI if n > 30])
    assert upper[:, 2].min() > lower[:, 2].max()
    assert upper[:, 2].min() > 0.0 > lower[:, 2].max()


def _mean_near(volume, point_ras, radius_mm=1.0) -> float:
    ijk = (volume.geometry.ras_to_ijk @ np.append(point_ras, 1.0))[:3]
    r = np.ceil(radius_mm / volume.geometry.spacing).astype(int)
    i, j, k = np.rint(ijk).astype(int)
    return float(volume.array[k - r[2]:k + r[2] + 1, j - r[1]:j + r[1] + 1,
                              i - r[0]:i + r[0] + 1].mean())


def test_enamel_brighter_than_bone_brighter_than_soft_tissue():
    """Cusp enamel > mandibular bone > tongue, with the default noise and blur."""
    image, _ = make_cbct_phantom(9, spacing=0.4, third_molars=True)
    layout = make_layout(9, third_molars=True)
    cusps = []
    for n in (16, 26, 36, 46):  # 0.9 mm under a buccal cusp tip of each first molar
        t = layout.tooth(n)
        a, b, height = t.shape.md / 2.0, t.shape.bl / 2.0, t.shape.crown_height
        cusps.append(t.to_ras(np.array([0.5 * a, 0.5 * b, 0.96 * height - 0.9])))
    enamel = np.mean([_mean_near(image, p, 0.4) for p in cusps])
    incisor = layout.tooth(41)
    below_apex = incisor.cej_ras - incisor.axes_ras[:, 2] * (incisor.shape.root_length + 4.0)
    bone = _mean_near(image, below_apex, 1.0)
    tongue = _mean_near(image, np.array([0.0, incisor.cej_ras[1] - 25.0, -6.0]), 1.5)
    assert enamel > 2000.0
    assert 800.0 < bone < 1500.0
    assert 200.0 < tongue < 500.0
    assert enamel > bone + 500.0 > tongue + 500.0


def test_offset_shifts_every_intensity():
    """offset=-1000 gives the same image minus 1000 (scanners storing CBCT with an offset)."""
    plain, _ = make_cbct_phantom(10, **FAST)
    shifted, _ = make_cbct_phantom(10, offset=-1000.0, **FAST)
    np.testing.assert_allclose(shifted.array, plain.array - 1000.0, atol=1e-3)


def test_metal_option_labels_metal_and_saturates_intensity():
    """metal=True labels a crown shell 99, makes it the brightest tissue, keeps the tooth."""
    image, labels = make_cbct_phantom(11, metal=True, **FAST)
    metal = labels.array == METAL_LABEL
    assert metal.sum() > 20
    assert np.median(image.array[metal]) > 3500.0
    assert image.array[labels.array > 0].max() >= 3900.0
    for n in labels.metadata["metal_teeth"]:
        assert (labels.array == n).sum() > 50  # root and inner crown keep the FDI number
    plain, _ = make_cbct_phantom(11, **FAST)
    assert np.abs(image.array - plain.array)[~metal].max() > 200.0  # streaks outside the metal


def test_ios_jaws_carry_only_their_own_quadrants(full_case):
    """The upper scan has labels 1x/2x, the lower 3x/4x, each erupted tooth and gingiva."""
    up, lo = full_case.ios_upper, full_case.ios_lower
    assert set(np.unique(up.labels).tolist()) == {0, *(n for n in PERMANENT_FDI if n < 30)}
    assert set(np.unique(lo.labels).tolist()) == {0, *(n for n in PERMANENT_FDI if n > 30)}
    assert up.jaw == "upper" and lo.jaw == "lower"


def test_ios_tooth_labels_sit_on_the_cbct_crowns(full_case):
    """The IOS vertices of tooth n surround the crown of tooth n in the CBCT (same RAS frame)."""
    layout = full_case.layout
    for mesh in (full_case.ios_upper, full_case.ios_lower):
        for n in np.unique(mesh.labels[mesh.labels > 0]):
            t = layout.tooth(int(n))
            pts = world_points(full_case.labels, int(n))
            crown = pts[(pts - t.cej_ras) @ t.axes_ras[:, 2] > 0.0]
            ios_centroid = mesh.vertices_ras[mesh.labels == n].mean(axis=0)
            assert np.linalg.norm(ios_centroid - crown.mean(axis=0)) < 3.0, n


def test_ios_mesh_is_a_clean_labelled_surface(full_case):
    """Finite float64 vertices, int64 faces, per-vertex labels and instances, manifold edges."""
    mesh = full_case.ios_lower
    assert mesh.vertices_ras.dtype == np.float64 and np.isfinite(mesh.vertices_ras).all()
    assert mesh.faces.dtype == np.int64 and mesh.faces.shape[1] == 3
    assert mesh.faces.min() >= 0 and mesh.faces.max() < mesh.n_vertices
    assert mesh.labels.shape == mesh.instances.shape == (mesh.n_vertices,)
    assert set(np.unique(mesh.instances).tolist()) == set(range(17))
    assert np.array_equal(mesh.instances == 0, mesh.labels == 0)
    edges = np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() <= 2


def test_ios_default_resolution_gives_a_realistic_vertex_count():
    """At the default 0.4 mm a jaw has tens of thousands of vertices, not millions."""
    mesh = make_ios_phantom(12, "lower")
    assert 20_000 <= mesh.n_vertices <= 150_000


def test_impacted_third_molar_is_tilted_buried_and_not_scanned():
    """An impacted 38 is in the CBCT, tilted 60-90 degrees, below the crest, absent from the IOS."""
    layout = make_layout(13, impacted=[38], third_molars=False)
    t = layout.tooth(38)
    tilt = np.degrees(np.arccos(abs(t.axes_ras[2, 2])))
    assert 55.0 <= tilt <= 95.0
    assert t.points_ras(0.5)[:, 2].max() < layout.tooth(37).cej_ras[2]
    _, labels = make_cbct_phantom(13, layout=layout, **FAST)
    assert (labels.array == 38).sum() > 50
    mesh = make_ios_phantom(13, "lower", resolution_mm=0.8, layout=layout)
    assert 38 not in mesh.labels


def test_default_field_of_view_is_a_small_dental_scan():
    """The default grid is about 70 x 70 x 60 mm at 0.3 mm (about 234 x 234 x 200 voxels)."""
    geometry, shape = phantom_grid(make_layout(0))
    assert shape[0] == 200
    assert 230 <= shape[1] <= 250 and 230 <= shape[2] <= 250
    np.testing.assert_allclose(geometry.spacing, 0.3)


@pytest.mark.parametrize(
    "kwargs",
    [{"orientation": "XYZ"}, {"missing": [19]}, {"spacing": 0.0}, {"missing": [11], "impacted": [11]}],
)
def test_invalid_options_raise_a_clear_error(kwargs):
    """Bad orientations, FDI numbers and spacings raise InvalidInputError."""
    with pytest.raises(InvalidInputError):
        make_cbct_phantom(0, **{**FAST, **kwargs})


def test_fdi_side_convention_matches_ras():
    """Sanity of the convention the tests rely on: quadrant 1 is the patient's right."""
    assert tooth(11).side == "right" and tooth(21).side == "left"
