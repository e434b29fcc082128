"""IOS -> CBCT rigid registration on phantoms, whose scans and CBCT share one RAS frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ToothMCLCore.config import CBCTPreprocessConfig
from ToothMCLCore.errors import ConfigError, InvalidInputError, RegistrationError
from ToothMCLCore.fdi import teeth_of_jaw
from ToothMCLCore.preprocessing.cbct import preprocess_cbct
from ToothMCLCore.preprocessing.registration import (
    RegistrationConfig,
    crown_vertices,
    register_ios_to_cbct,
)
from ToothMCLCore.synthetic import make_cbct_phantom, make_ios_phantom
from ToothMCLCore.types import SurfaceMesh, Volume

SPACING = 0.8
IOS_RES = 1.0


@pytest.fixture(scope="module")
def cbct():
    """Seed 0: preprocessed 0.8 mm CBCT (values in [0, 1]) and its FDI label map."""
    image, labels = make_cbct_phantom(0, spacing=SPACING)
    pre, _ = preprocess_cbct(image, CBCTPreprocessConfig(spacing_mm=SPACING))
    return pre, labels


def rigid(degrees: float, axis, shift_mm) -> np.ndarray:
    """(4, 4) rotation by ``degrees`` about ``axis`` through (0, 0, 0), then a shift."""
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * axis).as_matrix()
    m[:3, 3] = shift_mm
    return m


def moved(mesh: SurfaceMesh, matrix: np.ndarray, labels=True, jaw=True, source="moved scan") -> SurfaceMesh:
    v = mesh.vertices_ras @ matrix[:3, :3].T + matrix[:3, 3]
    return SurfaceMesh(v, mesh.faces, mesh.labels if labels else None, None, mesh.jaw if jaw else "", source)


def recovery_error(result, applied: np.ndarray, truth: SurfaceMesh) -> tuple[float, float]:
    """(rotation error in degrees, largest crown-vertex displacement in mm) of result o applied."""
    m = result.matrix @ applied
    angle = np.degrees(np.arccos(np.clip((np.trace(m[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)))
    crowns = truth.vertices_ras[truth.labels > 0]
    return float(angle), float(np.linalg.norm(crowns @ m[:3, :3].T + m[:3, 3] - crowns, axis=1).max())


# 20 degrees about an oblique axis through the dentition's middle, and 15 mm
MOVE = rigid(20.0, (0.3, 1.0, 0.4), np.array([12.0, -6.0, 6.7]))


def test_given_labelled_scan_and_tooth_labels_recovers_the_transform(cbct):
    """A labelled upper scan moved by 20 deg + 15 mm comes back within 0.5 mm and 1 deg."""
    _, labels = cbct
    truth = make_ios_phantom(0, "upper", resolution_mm=IOS_RES)
    scan = moved(truth, MOVE)
    result = register_ios_to_cbct(scan, None, labels)
    angle, shift = recovery_error(result, MOVE, truth)
    assert angle < 1.0 and shift < 0.5
    assert result.converged and result.crown_source == "labels"
    assert result.residual_median_mm < 0.2 and result.inlier_fraction > 0.95
    assert result.method.startswith("labels:upper teeth")
    crowns = truth.labels > 0
    assert np.abs(result.apply(scan.vertices_ras[crowns]) - truth.vertices_ras[crowns]).max() < 0.5


def test_given_unlabelled_scan_of_unknown_jaw_on_iso_surface_recovers_the_transform(cbct):
    """Without scan labels, jaw or CBCT labels (occlusal band onto the 0.6 iso-surface) it still works."""
    image, _ = cbct
    truth = make_ios_phantom(0, "lower", resolution_mm=IOS_RES)
    scan = moved(truth, MOVE, labels=False, jaw=False)
    result = register_ios_to_cbct(scan, image)
    angle, shift = recovery_error(result, MOVE, truth)
    assert angle < 1.0 and shift < 0.5
    assert result.crown_source == "occlusal band" and result.method.startswith("iso-surface 0.6")
    assert np.isnan(result.occlusal_angle_deg)  # jaw unknown: no orientation check


def test_given_scan_of_another_patient_refuses_and_names_the_scan(cbct):
    """Seed 4's upper scan does not fit seed 0's teeth: RegistrationError naming the scan."""
    _, labels = cbct
    scan = moved(make_ios_phantom(4, "upper", resolution_mm=IOS_RES), MOVE, source="patient4_upper.ply")
    with pytest.raises(RegistrationError, match="patient4_upper.ply does not register"):
        register_ios_to_cbct(scan, None, labels)


def test_given_label_map_without_the_scans_jaw_refuses_at_once(cbct):
    """An upper scan against a label map of lower teeth only is refused before any fitting."""
    _, labels = cbct
    lower_only = np.where(np.isin(labels.array, teeth_of_jaw("upper")), 0, labels.array)
    scan = moved(make_ios_phantom(0, "upper", resolution_mm=IOS_RES), MOVE, source="u.stl")
    with pytest.raises(RegistrationError, match="u.stl: .*no upper-jaw tooth"):
        register_ios_to_cbct(scan, None, Volume(lower_only, labels.geometry, "lower only"))


def test_given_cbct_without_the_scans_jaw_iso_surface_reports_a_failed_fit():
    """An upper scan onto a CBCT whose upper teeth are missing fails the thresholds (check=False reports)."""
    image, _ = make_cbct_phantom(0, spacing=SPACING, missing=list(teeth_of_jaw("upper")))
    pre, _ = preprocess_cbct(image, CBCTPreprocessConfig(spacing_mm=SPACING))
    scan = moved(make_ios_phantom(0, "upper", resolution_mm=IOS_RES), MOVE)
    config = RegistrationConfig()
    result = register_ios_to_cbct(scan, pre, check=False)
    assert result.residual_median_mm > config.max_median_mm
    assert result.inlier_fraction < config.min_inlier_fraction


def test_given_random_blob_refuses():
    """A lumpy ellipsoid is not a dental scan: RegistrationError."""
    import trimesh

    _, labels = make_cbct_phantom(1, spacing=SPACING)
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=20.0)
    rng = np.random.default_rng(0)
    v = sphere.vertices * (1.0 + 0.15 * rng.standard_normal((len(sphere.vertices), 1))) * [1.4, 1.0, 0.5]
    blob = SurfaceMesh(v + [0.0, 5.0, 10.0], np.asarray(sphere.faces), jaw="upper", source="blob.ply")
    with pytest.raises(RegistrationError, match="blob.ply"):
        register_ios_to_cbct(blob, None, labels)


def test_given_raw_cbct_asks_for_preprocessing():
    """Intensities outside [0, 1] mean the CBCT was not preprocessed: InvalidInputError says so."""
    image, _ = make_cbct_phantom(0, spacing=1.5)
    scan = make_ios_phantom(0, "lower", resolution_mm=2.0)
    with pytest.raises(InvalidInputError, match="preprocess_cbct"):
        register_ios_to_cbct(scan, image)


def test_crown_band_of_unlabelled_scan_is_mostly_crowns():
    """The occlusal band picks crown vertices (>= 90 %) and most of them (>= 70 %) on both jaws."""
    for jaw in ("upper", "lower"):
        scan = make_ios_phantom(3, jaw, resolution_mm=IOS_RES)
        band, how = crown_vertices(dataclasses.replace(scan, labels=None))
        truth = scan.labels > 0
        assert how == "occlusal band"
        assert truth[band].mean() >= 0.9 and band[truth].mean() >= 0.7


def test_config_rejects_unknown_keys_and_bad_values():
    """RegistrationConfig.from_dict refuses unknown keys; out-of-range values raise ConfigError."""
    assert RegistrationConfig.from_dict({"max_median_mm": 0.4}).max_median_mm == 0.4
    with pytest.raises(ConfigError, match="unknown"):
        RegistrationConfig.from_dict({"max_residual": 1.0})
    with pytest.raises(ConfigError, match="trim_fraction"):
        RegistrationConfig(trim_fraction=0.1)
