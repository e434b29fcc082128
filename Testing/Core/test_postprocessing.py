"""Cleaning a CBCT prediction: islands, largest component, duplicated and swapped numbers."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.postprocessing.cbct import number_teeth
from ToothMCLCore.preprocessing.cbct import resample_to_canonical


@pytest.fixture(scope="module")
def truth(small_phantom):
    """The phantom's label map on its RAS-aligned canonical grid."""
    _, labels = small_phantom
    return resample_to_canonical(labels, 0.8, is_label=True)


def _probs_from_labels(labels: np.ndarray, confidence: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """One-hot-like probabilities of a label map, as a confident network would give."""
    classes = fdi.fdi_to_class_index(labels, "cbct")
    probs = np.full((34,) + labels.shape, (1 - confidence) / 33, dtype=np.float32)
    np.put_along_axis(probs, classes[None].astype(np.int64), confidence, axis=0)
    return classes.astype(np.uint8), probs


def _assert_same_teeth(out, truth):
    """Equal up to a few one-voxel islands that nearest-neighbour resampling leaves in the truth."""
    assert sorted(np.unique(out)) == sorted(np.unique(truth))
    assert (out != truth).sum() <= 0.001 * (truth > 0).sum()


def _relabel(labels, mapping):
    out = labels.copy()
    for src, dst in mapping.items():
        out[labels == src] = dst
    return out


def test_correct_prediction_is_kept(truth):
    """A prediction that is already right comes out unchanged."""
    classes, probs = _probs_from_labels(truth.array)
    out = number_teeth(classes, probs, truth.geometry)
    _assert_same_teeth(out, truth.array)


def test_swapped_neighbours_are_renumbered(truth):
    """13 and 14 predicted the other way round are put back in arch order."""
    classes, probs = _probs_from_labels(_relabel(truth.array, {13: 14, 14: 13, 36: 37, 37: 36}))
    out = number_teeth(classes, probs, truth.geometry)
    _assert_same_teeth(out, truth.array)


def test_left_right_swap_is_fixed(truth):
    """Canines and first molars predicted on the wrong side get their own side's numbers back."""
    classes, probs = _probs_from_labels(_relabel(truth.array, {13: 23, 23: 13, 36: 46, 46: 36}))
    out = number_teeth(classes, probs, truth.geometry)
    _assert_same_teeth(out, truth.array)


def test_duplicated_number_is_resolved(truth):
    """The left canine also predicted as '13' (13 twice, 23 never) becomes 23 again."""
    classes, probs = _probs_from_labels(_relabel(truth.array, {23: 13}))
    out = number_teeth(classes, probs, truth.geometry)
    _assert_same_teeth(out, truth.array)


def test_islands_are_dropped_and_largest_component_kept(truth):
    """A stray 5-voxel blob labelled 46 far from the tooth disappears; the tooth stays."""
    noisy = truth.array.copy()
    k, j, i = np.array(noisy.shape) // 2
    noisy[k:k + 1, j:j + 1, i:i + 5] = 46
    noisy[0, 0, 0] = 46
    classes, probs = _probs_from_labels(noisy)
    out = number_teeth(classes, probs, truth.geometry)
    assert out[0, 0, 0] == 0
    assert (out == 46).sum() == (truth.array == 46).sum()


def test_metal_is_kept_as_label_99(truth):
    """Metal components above the island size keep label 99."""
    with_metal = truth.array.copy()
    crown = truth.array == 16
    with_metal[crown] = fdi.METAL_LABEL
    classes, probs = _probs_from_labels(with_metal)
    out = number_teeth(classes, probs, truth.geometry)
    assert (out == fdi.METAL_LABEL).sum() == crown.sum()
