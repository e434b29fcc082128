"""CBCT click tools on phantoms (no real dental CBCT with tooth labels is reachable from here)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from ToothMCLCore import fdi
from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.interactive.cbct_tools import split_tooth


@pytest.fixture(scope="module")
def phantom():
    from ToothMCLCore.synthetic import make_cbct_phantom

    image, truth = make_cbct_phantom(21, spacing=0.8)
    return image, truth.array.astype(np.int64)


def inside_point(image, mask: np.ndarray) -> np.ndarray:
    """RAS of the voxel deepest inside ``mask`` (a click in the middle of a tooth)."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]  # the image border is outside
    k, j, i = np.unravel_index(np.argmax(depth), mask.shape)
    return (image.geometry.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]


def merged(truth: np.ndarray, a: int, b: int) -> np.ndarray:
    """Teeth a and b as one segment, the gap between them filled as a model that merges them would."""
    both = np.isin(truth, [a, b])
    box = tuple(slice(max(int(i.min()) - 3, 0), int(i.max()) + 4) for i in np.nonzero(both))
    bridge = np.zeros_like(both)
    bridge[box] = ndimage.binary_closing(both[box], structure=np.ones((3, 3, 3)), iterations=1) & (truth[box] == 0)
    out = truth.copy()
    out[both | bridge] = a
    return out


def test_two_merged_neighbours_are_split_and_numbered_with_two_clicks(phantom):
    """For every pair of neighbouring teeth of the phantom, merged into one segment with the gap
    between them filled, one click in each gives both teeth back at Dice >= 0.9, each with its number."""
    image, truth = phantom
    scores = []
    for jaw in fdi.JAWS:
        teeth = [t for t in fdi.teeth_of_jaw(jaw) if np.any(truth == t)]
        for a, b in itertools.pairwise(teeth):
            if abs(fdi.tooth(a).arch_index - fdi.tooth(b).arch_index) > 1 and fdi.tooth(a).side == fdi.tooth(b).side:
                continue  # a tooth missing between them: not neighbours
            damaged = merged(truth, a, b)
            fixed, record = split_tooth(image, damaged, inside_point(image, truth == a), inside_point(image, truth == b))
            for t in (a, b):
                got, want = fixed == t, truth == t
                scores.append(2 * np.count_nonzero(got & want) / (np.count_nonzero(got) + np.count_nonzero(want)))
            assert sorted(record.labels) == sorted((a, b)) and record.unit == "voxels"
            assert record.to_operation()["voxels"] == np.count_nonzero(fixed != damaged)
            assert np.array_equal(fixed[~np.isin(damaged, [a])], damaged[~np.isin(damaged, [a])])
    assert len(scores) >= 40 and min(scores) >= 0.9, sorted(scores)[:5]


def test_bad_split_clicks_are_refused_and_change_nothing(phantom):
    """A click outside the image, on background, or in two different teeth gets a message saying
    what to do; the labels stay as they were."""
    image, truth = phantom
    before = truth.copy()
    in_11, in_21 = inside_point(image, truth == 11), inside_point(image, truth == 21)
    background = (image.geometry.ijk_to_ras @ np.array([0, 0, 0, 1.0]))[:3]
    outside = background - 50.0
    with pytest.raises(InvalidInputError, match="outside the image"):
        split_tooth(image, truth, outside, in_11)
    with pytest.raises(InvalidInputError, match="not on background"):
        split_tooth(image, truth, background, in_11)
    with pytest.raises(InvalidInputError, match="two different teeth"):
        split_tooth(image, truth, in_11, in_21)
    assert np.array_equal(truth, before)


def test_an_eroded_tooth_boundary_is_fixed_with_at_most_three_clicks():
    """Every tooth of another phantom loses its outer voxel layer (Dice about 0.70); refine clicks at
    the middle of the largest error (3 at most) bring >= 85 % of teeth back to Dice >= 0.9 (measured
    90 %, mean 0.96), and voxels far from the tooth never change."""
    from ToothMCLCore.interactive.cbct_tools import refine_tooth
    from ToothMCLCore.synthetic import make_cbct_phantom

    image, truth = make_cbct_phantom(5, spacing=0.8)
    truth = truth.array.astype(np.int64)
    scores = []
    for tooth in fdi.present_teeth(np.unique(truth)):
        mine = truth == tooth
        labels = np.where(mine & ~ndimage.binary_erosion(mine), 0, truth)
        far = ndimage.distance_transform_edt(~mine) > 8
        for _ in range(3):
            missed, extra = mine & (labels != tooth), ~mine & (labels == tooth)
            error = missed if missed.sum() >= extra.sum() else extra
            if error.sum() < 5:
                break
            parts, _ = ndimage.label(error)
            click = inside_point(image, parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1)
            before = labels
            labels, record = refine_tooth(image, labels, tooth, **{"positive" if error is missed else "negative": [click]})
            assert record.tool == "refine" and np.array_equal(labels[far], before[far])
        got = labels == tooth
        scores.append(2 * np.count_nonzero(got & mine) / (got.sum() + mine.sum()))
    scores = np.array(scores)
    assert len(scores) > 25 and np.mean(scores >= 0.9) >= 0.85 and scores.mean() >= 0.93, scores
