"""Volume geometry: the IJK-to-RAS matrix and the checks on the header it comes from."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.types import Geometry


def test_ijk_to_ras_places_voxels_with_spacing_direction_and_origin():
    """Voxel (1, 2, 3) of a rotated, anisotropic grid lands where the matrix says."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    g = Geometry((0.3, 0.4, 0.5), (10.0, -5.0, 2.0), rot)
    expected = np.array([10.0, -5.0, 2.0]) + rot @ (np.array([1, 2, 3]) * [0.3, 0.4, 0.5])
    np.testing.assert_allclose((g.ijk_to_ras @ [1, 2, 3, 1])[:3], expected)
    assert Geometry.from_ijk_to_ras(g.ijk_to_ras).allclose(g)


@pytest.mark.parametrize("direction", [
    [[1, 0.2, 0], [0, 1, 0], [0, 0, 1]],        # sheared, determinant 1
    [[2, 0, 0], [0, 0.5, 0], [0, 0, 1]],        # scaled axes, determinant 1
])
def test_sheared_or_scaled_directions_are_refused(direction):
    """A direction matrix that is not orthonormal is a broken header, even with det = 1."""
    with pytest.raises(InvalidInputError, match="not orthonormal"):
        Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), direction)


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (-0.3, 0.3, 0.3), (np.nan, 0.3, 0.3)])
def test_non_positive_or_nan_spacing_is_refused(spacing):
    """Spacing must be positive and finite."""
    with pytest.raises(InvalidInputError, match="spacing"):
        Geometry(spacing, (0.0, 0.0, 0.0), np.eye(3))
