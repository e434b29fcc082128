"""CBCT-token / IOS-patch correspondence (the z of Eq. 4 and Eq. 7) on phantoms, where the truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore.config import CBCTPreprocessConfig
from ToothMCLCore.errors import ConfigError, InvalidInputError
from ToothMCLCore.preprocessing.correspondence import (
    CorrespondenceConfig,
    build_correspondence,
    cross_modal_pairs,
    intra_pairs_from_labels,
    intra_pairs_from_proximity,
    ios_points_to_ras,
    labels_at_points,
    patch_labels,
    swin_stride,
    swin_token_grid,
    token_labels,
)
from ToothMCLCore.types import Geometry

SPACING = 0.8
N_POINTS = 2048
STAGE = 2  # Swin stride 8 (6.4 mm tokens at 0.8 mm); Point Transformer 2048 -> 128 patches per jaw


@pytest.fixture(scope="module")
def pair():
    """Seed 0: preprocessed CBCT crop + labels on it, and both jaws' stage-2 patches of a tiny
    Point Transformer encoder, with each patch's label from the scan's own vertex labels."""
    import torch

    from ToothMCLCore.io.mesh import occlusal_direction
    from ToothMCLCore.models.point_transformer import PointTransformerEncoder
    from ToothMCLCore.preprocessing.cbct import preprocess_cbct, resample_onto
    from ToothMCLCore.preprocessing.ios import canonical_frame, sample_points
    from ToothMCLCore.synthetic import make_cbct_phantom, make_ios_phantom

    image, labels = make_cbct_phantom(0, spacing=SPACING)
    crop, _ = preprocess_cbct(image, CBCTPreprocessConfig(spacing_mm=SPACING))
    labels_crop = resample_onto(labels, crop.geometry, crop.array.shape, is_label=True).array
    torch.manual_seed(0)
    encoder = PointTransformerEncoder(planes=(8, 8, 8, 8, 8), blocks=(1, 1, 1, 1, 1)).eval()
    centres, patch_lab = [], []
    for jaw in ("upper", "lower"):
        scan = make_ios_phantom(0, jaw, resolution_mm=1.0)
        frame = canonical_frame(scan.vertices_ras, occlusal_direction(scan), jaw)
        idx = sample_points(scan.vertices_ras, N_POINTS)
        network = frame.apply(scan.vertices_ras[idx]) / 50.0
        with torch.no_grad():
            out = encoder(torch.tensor(network[None], dtype=torch.float32), torch.zeros(1, len(idx), 6))
        # phantom scans are already in the CBCT's RAS frame: the registration is the identity
        ras = ios_points_to_ras(out.points[STAGE][0].double().numpy(), frame, np.eye(4))
        centres.append(ras)
        patch_lab.append(patch_labels(scan.vertices_ras[idx], scan.labels[idx], ras))
    return crop, labels, labels_crop, np.concatenate(centres), np.concatenate(patch_lab)


def test_token_grid_matches_monai_swin_stage_shapes():
    """For an odd-sized crop, every SwinViT stage's feature map has the grid's (D, H, W) and stride 2**(s+1)."""
    import torch

    from ToothMCLCore.models.networks import build_swinunetr

    net = build_swinunetr(feature_size=12, depths=(1, 1, 1, 1))
    crop_shape = (18, 21, 34)
    with torch.no_grad():
        hidden = net.swinViT(torch.zeros(1, 1, *crop_shape))
    geometry = Geometry(np.full(3, 0.3), np.zeros(3), np.eye(3))
    for stage, h in enumerate(hidden):
        grid = swin_token_grid(geometry, crop_shape, stage)
        assert grid.stride == swin_stride(stage) == 2 ** (stage + 1)
        assert tuple(h.shape[2:]) == grid.shape
        assert grid.n_tokens == h.flatten(2).shape[2]


def test_token_centres_are_box_centres_in_c_order_on_an_oblique_grid():
    """Token (a, b, c) is centred on voxel (k, j, i) = S * (a, b, c) + (S - 1) / 2 of any geometry."""
    from ToothMCLCore.synthetic import orientation_matrix

    geometry = Geometry([0.3, 0.4, 0.5], [10.0, -20.0, 5.0], orientation_matrix("oblique"))
    grid = swin_token_grid(geometry, (16, 24, 32), stage=1)  # stride 4 -> (4, 6, 8) tokens
    assert grid.shape == (4, 6, 8)
    centres = grid.centres_ras()
    for index, (a, b, c) in [(0, (0, 0, 0)), (1, (0, 0, 1)), (8, (0, 1, 0)), (191, (3, 5, 7))]:
        ijk = np.array([4 * c + 1.5, 4 * b + 1.5, 4 * a + 1.5, 1.0])
        assert np.allclose(centres[index], (geometry.ijk_to_ras @ ijk)[:3])
        assert np.allclose(grid.token_position(centres[index:index + 1])[0], (a, b, c))


def test_token_labels_take_the_majority_tooth_above_the_fraction():
    """A 2x2x2 token takes its most frequent tooth if teeth fill >= the fraction; metal is not a tooth."""
    lab = np.zeros((2, 2, 4), np.uint8)                  # two tokens along i (stride 2)
    lab[:, :, :2] = [[[11, 11], [11, 12]], [[12, 0], [0, 0]]]  # 11 x3, 12 x2, 0 x3
    lab[0, 0, 2] = 99                                    # second token: one metal voxel only
    assert token_labels(lab, 2, 0.1).tolist() == [11, 0]
    assert token_labels(lab, 2, 0.7).tolist() == [0, 0]  # 5 of 8 tooth voxels < 70 %


def test_ios_points_to_ras_undoes_scale_canonical_frame_and_registration():
    """Encoder coordinates of a moved scan map back onto the original vertices with the inverse move."""
    from ToothMCLCore.io.mesh import occlusal_direction
    from ToothMCLCore.preprocessing.ios import canonical_frame
    from ToothMCLCore.synthetic import make_ios_phantom
    from ToothMCLCore.types import SurfaceMesh

    scan = make_ios_phantom(1, "upper", resolution_mm=2.0)
    move = np.eye(4)
    move[:3, :3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    move[:3, 3] = [5.0, -3.0, 40.0]
    moved = SurfaceMesh(scan.vertices_ras @ move[:3, :3].T + move[:3, 3], scan.faces, jaw="upper")
    frame = canonical_frame(moved.vertices_ras, occlusal_direction(moved), "upper")
    network = frame.apply(moved.vertices_ras) / 50.0
    back = ios_points_to_ras(network, frame, np.linalg.inv(move))
    assert np.abs(back - scan.vertices_ras).max() < 1e-9


def test_cross_modal_pairs_hand_example_with_ignore_band_and_unmatched():
    """2x2x2 tokens of 2 mm: a centre's own token is its positive, a token 0.1 mm away is ignored."""
    grid = swin_token_grid(Geometry(np.ones(3), np.zeros(3), np.eye(3)), (4, 4, 4), stage=0)
    # token t = 4a + 2b + c spans RAS x in [2c - 0.5, 2c + 1.5] (likewise y with b, z with a)
    centres = np.array([[0.5, 0.5, 0.5],     # middle of token 0; 1 mm from tokens 1, 2, 4
                        [1.4, 0.5, 0.5],     # in token 0, 0.1 mm from token 1's box
                        [10.0, 10.0, 10.0]])  # outside the crop
    config = CorrespondenceConfig(ignore_margin_mm=0.5)
    pairs = cross_modal_pairs(grid, centres, config)
    assert pairs.z.shape == pairs.mask.shape == (8, 3)
    assert np.flatnonzero(pairs.z[:, 0]).tolist() == [0] and np.flatnonzero(pairs.z[:, 1]).tolist() == [0]
    assert not pairs.z[:, 2].any()
    assert np.flatnonzero(~pairs.mask).tolist() == [1 * 3 + 1]  # only (token 1, centre 2) is left out
    assert pairs.signs()[0, 0] == 1.0 and pairs.signs()[1, 0] == -1.0
    ignore = cross_modal_pairs(grid, centres, CorrespondenceConfig(ignore_margin_mm=0.5, unmatched="ignore"))
    assert not ignore.mask[1:].any() and not ignore.mask[:, 2].any()  # tokens 1..7, centre 3 have no match
    assert ignore.mask[0, :2].all()


def test_given_phantom_pair_matched_patches_sit_on_the_same_tooth(pair):
    """A tooth patch's positive token holds voxels of that very tooth (>= 95 %); one positive per patch in the crop."""
    crop, _, labels_crop, centres, ios_labels = pair
    grid = swin_token_grid(crop.geometry, crop.array.shape, STAGE)
    corr = build_correspondence(grid, centres, labels_crop, ios_labels)
    z = corr.cross.z
    assert z.shape == (grid.n_tokens, 2 * N_POINTS // 4**STAGE)
    inside = grid.inside_crop(centres)
    assert inside.mean() > 0.7
    assert (z.sum(axis=0) == inside).all()
    s = grid.stride
    same_tooth = []
    for i, j in zip(*np.nonzero(z)):
        if ios_labels[j] > 0:
            a, b, c = np.unravel_index(i, grid.shape)
            box = labels_crop[a * s:(a + 1) * s, b * s:(b + 1) * s, c * s:(c + 1) * s]
            same_tooth.append(bool((box == ios_labels[j]).any()))
    # the rare miss is a centre within a voxel of its token's face, the tooth just across it
    assert len(same_tooth) >= 20 and np.mean(same_tooth) >= 0.95
    # the matched token is where the centre is: within half a token diagonal of it
    i, j = np.nonzero(z)
    assert np.linalg.norm(corr.token_centres_ras[i] - centres[j], axis=1).max() <= np.sqrt(3) * 3.2 + 1e-6


def test_given_phantom_pair_intra_matrices_have_documented_shapes_and_meaning(pair):
    """CBCT (Nc, Nc) positives share a tooth label; IOS (Ni, Ni) also pairs gingiva; diagonals masked."""
    crop, _, labels_crop, centres, ios_labels = pair
    grid = swin_token_grid(crop.geometry, crop.array.shape, STAGE)
    corr = build_correspondence(grid, centres, labels_crop, ios_labels)
    nc, ni = grid.n_tokens, len(centres)
    assert corr.cbct.z.shape == corr.cbct.mask.shape == (nc, nc)
    assert corr.ios.z.shape == corr.ios.mask.shape == (ni, ni)
    for pairs in (corr.cbct, corr.ios):
        assert not np.diag(pairs.mask).any() and (pairs.z == pairs.z.T).all() and (pairs.mask == pairs.mask.T).all()
    t = corr.token_labels
    i, j = np.nonzero(corr.cbct.z)
    assert len(i) > 0 and (t[i] == t[j]).all() and (t[i] > 0).all()
    background = t == 0
    assert not corr.cbct.mask[np.ix_(background, background)].any()
    gingiva = np.flatnonzero(ios_labels == 0)
    assert corr.ios.z[gingiva[0], gingiva[1]]


def test_without_labels_intra_pairs_are_nearest_neighbours(pair):
    """No labels: a token's positives are its 6 face neighbours; every IOS patch has a near positive."""
    crop, _, _, centres, _ = pair
    grid = swin_token_grid(crop.geometry, crop.array.shape, STAGE)
    corr = build_correspondence(grid, centres)
    assert corr.token_labels is None and corr.ios_labels is None
    d, h, w = grid.shape
    interior = np.ravel_multi_index((d // 2, h // 2, w // 2), grid.shape)
    neighbours = {interior + o for o in (1, -1, w, -w, h * w, -h * w)}
    assert set(np.flatnonzero(corr.cbct.z[interior])) == neighbours
    assert (corr.ios.z.sum(axis=1) >= 1).mean() >= 0.97 and corr.ios.z.shape == (len(centres), len(centres))
    explicit = intra_pairs_from_proximity(centres, radius_mm=0.0)
    assert not explicit.z.any()


def test_intra_pairs_from_labels_cbct_versus_ios_background():
    """Labels [11, 11, 0, 0, 21]: 11-11 positive; 0-0 left out for CBCT, positive for IOS (gingiva)."""
    lab = np.array([11, 11, 0, 0, 21])
    cbct = intra_pairs_from_labels(lab, background_is_one_structure=False)
    ios = intra_pairs_from_labels(lab, background_is_one_structure=True)
    assert {tuple(p) for p in np.argwhere(cbct.z)} == {(0, 1), (1, 0)}
    assert not cbct.mask[2, 3] and cbct.mask[0, 2] and not cbct.mask[0, 0]
    assert {tuple(p) for p in np.argwhere(ios.z)} == {(0, 1), (1, 0), (2, 3), (3, 2)}
    assert ios.mask[2, 3] and not ios.mask[4, 4]


def test_labels_transferred_from_cbct_agree_with_the_scan_labels(pair):
    """An unlabelled scan's patches get the CBCT tooth within 1 mm: >= 90 % agree with the scan's own labels."""
    _, labels, _, centres, ios_labels = pair
    transferred = labels_at_points(labels, centres, max_distance_mm=1.0)
    assert (transferred == ios_labels).mean() >= 0.9
    assert set(np.unique(transferred)) <= set(np.unique(labels.array)) | {0}


def test_given_bad_inputs_raises():
    """A label crop of another shape, an unknown option or key, and a stage beyond 4 are refused."""
    grid = swin_token_grid(Geometry(np.ones(3), np.zeros(3), np.eye(3)), (8, 8, 8), stage=1)
    with pytest.raises(InvalidInputError, match="crop's shape"):
        build_correspondence(grid, np.zeros((2, 3)), labels_crop=np.zeros((4, 8, 8)))
    with pytest.raises(ConfigError, match="unmatched"):
        CorrespondenceConfig(unmatched="drop")
    with pytest.raises(ConfigError, match="unknown"):
        CorrespondenceConfig.from_dict({"radius_mm": 3.0})
    with pytest.raises(InvalidInputError, match="stage"):
        swin_stride(5)
