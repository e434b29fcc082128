"""CBCT preprocessing: RAS reorientation, isotropic resampling, offset, clip and normalise."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore.config import CBCTPreprocessConfig
from ToothMCLCore.preprocessing.cbct import detect_intensity_offset, preprocess_cbct, resample_to_canonical
from ToothMCLCore.synthetic.cbct import make_cbct_phantom


def _world_centroid(volume, value):
    kji = np.argwhere(volume.array == value).mean(axis=0)
    return (volume.geometry.ijk_to_ras @ np.r_[kji[::-1], 1.0])[:3]


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique"])
def test_canonical_grid_is_ras_and_keeps_anatomy_in_place(orientation):
    """Whatever the scanner's orientation, tooth 36 stays at the same RAS position (< 1 voxel)."""
    _, labels = make_cbct_phantom(seed=3, spacing=0.8, orientation=orientation, noise_std=0)
    canonical = resample_to_canonical(labels, 0.8, is_label=True)
    np.testing.assert_allclose(canonical.geometry.direction_ras, np.eye(3))
    np.testing.assert_allclose(canonical.geometry.spacing, 0.8)
    np.testing.assert_allclose(_world_centroid(canonical, 36), _world_centroid(labels, 36), atol=0.8)
    # patient's left teeth lie at smaller R (x) than right teeth in the canonical array
    assert _world_centroid(canonical, 26)[0] < _world_centroid(canonical, 16)[0]


def test_axis_aligned_input_at_target_spacing_is_not_interpolated():
    """An LPS volume already at the target spacing is only flipped: voxel values are exact."""
    image, _ = make_cbct_phantom(seed=3, spacing=0.8, orientation="LPS")
    canonical = resample_to_canonical(image, 0.8)
    np.testing.assert_array_equal(np.sort(canonical.array.ravel()), np.sort(image.array.ravel()))


def test_resampling_to_finer_spacing_changes_the_grid():
    """0.8 mm input resampled to 0.4 mm has twice the voxels per axis over the same extent."""
    image, _ = make_cbct_phantom(seed=3, spacing=0.8, orientation="RAS")
    fine = resample_to_canonical(image, 0.4)
    ratio = np.array(fine.array.shape) / np.array(image.array.shape)
    np.testing.assert_allclose(ratio, 2.0, atol=0.05)


def test_offset_is_detected_for_hu_like_storage():
    """Air near -1000 gets +1000; air near 0 gets nothing; a configured offset wins."""
    image, _ = make_cbct_phantom(seed=3, spacing=0.8)
    config = CBCTPreprocessConfig()
    assert detect_intensity_offset(image.array, config) == 0.0
    assert detect_intensity_offset(image.array - 1000.0, config) == 1000.0
    assert detect_intensity_offset(image.array, CBCTPreprocessConfig(intensity_offset=-24.0)) == -24.0


def test_normalised_intensities_match_with_and_without_offset():
    """A scan stored with a -1000 offset is normalised to the same [0, 1] values."""
    plain, _ = make_cbct_phantom(seed=3, spacing=0.8)
    shifted, _ = make_cbct_phantom(seed=3, spacing=0.8, offset=-1000.0)
    a, info_a = preprocess_cbct(plain, CBCTPreprocessConfig(spacing_mm=0.8))
    b, info_b = preprocess_cbct(shifted, CBCTPreprocessConfig(spacing_mm=0.8))
    assert info_a["intensity_offset"] == 0.0 and info_b["intensity_offset"] == 1000.0
    np.testing.assert_allclose(a.array, b.array, atol=1e-4)
    assert a.array.min() >= 0.0 and a.array.max() <= 1.0 and a.array.dtype == np.float32


def test_clip_window_is_the_papers():
    """Values above 2500 saturate at 1 and below 0 at 0 (paper: clip [0, 2500], min-max)."""
    from ToothMCLCore.preprocessing.cbct import normalize_intensity

    out = normalize_intensity(np.array([-50.0, 0.0, 1250.0, 2500.0, 4000.0]), CBCTPreprocessConfig(), 0.0)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_volume_too_large_once_resampled_is_refused_before_allocating():
    """A coarse 1 mm scan of 1.2 m per side would need ~260 GiB at 0.3 mm: refused with advice."""
    from ToothMCLCore.errors import ResourceLimitError
    from ToothMCLCore.types import Geometry, Volume

    big = Volume(np.zeros((2, 2, 2), np.float32), Geometry((600.0, 600.0, 600.0), (0, 0, 0), np.eye(3)))
    with pytest.raises(ResourceLimitError, match="crop it to the jaws"):
        preprocess_cbct(big, CBCTPreprocessConfig())
