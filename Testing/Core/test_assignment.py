"""FDI order-aware assignment (SOFTooth Eq. 13 + Hungarian), shared by CBCT and IOS."""

from __future__ import annotations

import numpy as np

from ToothMCLCore import fdi
from ToothMCLCore.postprocessing.assignment import (
    arch_coordinate,
    assign_fdi,
    hungarian,
    order_penalised_similarity,
)


def _arch_centres(n_per_side=8, right_first=True):
    """Centres of teeth on a parabolic arch in RAS (x to the patient's right), right to left."""
    s = np.linspace(-1, 1, 2 * n_per_side)
    x = -25 * s if right_first else 25 * s
    y = 30 - 30 * s**2
    return np.c_[x, y, np.zeros_like(x)]


def test_order_penalty_matches_hand_computation():
    """C_ord = C - lambda * max(|r - t| - delta, 0) with the paper's lambda 4, delta 0.15."""
    c = np.array([[0.9, 0.1], [0.2, 0.8]])
    out = order_penalised_similarity(c, np.array([0.0, 1.0]), np.array([0.0, 0.5]))
    # pair (0,1): |0-0.5|-0.15 = 0.35 -> 0.1-1.4; pair (1,0): 1-0.15 -> 0.2-3.4; (1,1): 0.35 -> 0.8-1.4
    np.testing.assert_allclose(out, [[0.9, 0.1 - 1.4], [0.2 - 3.4, 0.8 - 1.4]])


def test_centre_penalty_matches_hand_computation():
    """Eq. 12: lambda_cent * max(L1 distance / scene - delta_drift, 0)."""
    c = np.array([[1.0]])
    out = order_penalised_similarity(c, np.array([0.5]), np.array([0.5]), instance_centres=np.array([[0, 0, 0.0]]),
                                     target_centres=np.array([[3.0, 1.0, 0.0]]), scene_size=10.0)
    np.testing.assert_allclose(out, [[1.0 - 0.5 * (0.4 - 0.1)]])


def test_arch_coordinate_orders_right_to_left():
    """Right third molar first, left third molar last, whatever the input order."""
    centres = _arch_centres()
    perm = np.random.default_rng(0).permutation(16)
    coord = arch_coordinate(centres[perm])
    np.testing.assert_array_equal(np.argsort(coord), np.argsort(perm))


def test_swapped_numbers_are_put_back_in_arch_order():
    """The network calls 13 '14' and 14 '13' with confidence; the order prior swaps them back."""
    teeth = fdi.teeth_of_jaw("upper")
    p = np.eye(16) * 0.8 + 0.2 / 16
    i13, i14 = teeth.index(13), teeth.index(14)
    p[[i13, i14]] = p[[i14, i13]]
    assert [teeth[j] for j in hungarian(p)][i13] == 14  # probabilities alone keep the swap
    np.testing.assert_array_equal(assign_fdi(p, _arch_centres(), teeth), teeth)


def test_duplicated_number_is_resolved():
    """Two instances both most likely 11 (one really 21): each gets its own number in order."""
    teeth = fdi.teeth_of_jaw("upper")
    p = np.eye(16) * 0.8 + 0.2 / 16
    i11, i21 = teeth.index(11), teeth.index(21)
    p[i21] = p[i11]
    np.testing.assert_array_equal(assign_fdi(p, _arch_centres(), teeth), teeth)


def test_left_right_mirror_is_fixed():
    """A whole arch predicted mirrored (left called right) comes back in patient order."""
    teeth = fdi.teeth_of_jaw("lower")
    p = (np.eye(16) * 0.6 + 0.4 / 16)[::-1]
    p = 0.5 * p + 0.5 * (np.eye(16) * 0.6 + 0.4 / 16)  # ambiguous between mirror and truth
    np.testing.assert_array_equal(assign_fdi(p, _arch_centres(), teeth), teeth)


def test_missing_teeth_do_not_shift_numbers():
    """With 14, 24 and 26 missing, the remaining teeth keep their own numbers."""
    teeth = list(fdi.teeth_of_jaw("upper"))
    keep = [i for i, t in enumerate(teeth) if t not in (14, 24, 26)]
    p = (np.eye(16) * 0.7 + 0.3 / 16)[keep]
    centres = _arch_centres()[keep]
    np.testing.assert_array_equal(assign_fdi(p, centres, teeth), [teeth[i] for i in keep])
