"""Reading volumes and writing label maps: RAS geometry kept, bad input refused, writes atomic."""

from __future__ import annotations

import gzip
import logging
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from ToothMCLCore.errors import InvalidInputError, OutputError, ResourceLimitError
from ToothMCLCore.io import read_volume, write_labelmap, write_volume
from ToothMCLCore.io import volume as volume_module
from ToothMCLCore.types import LPS_TO_RAS, Geometry, Volume

SHAPE_KJI = (6, 7, 8)


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
    ry = np.array([[cc, 0, sc], [0, 1, 0], [-sc, 0, cc]])
    return rz @ rx @ ry


@pytest.fixture
def oblique() -> Geometry:
    """Anisotropic, rotated about three axes, off-origin."""
    return Geometry((0.3, 0.4, 0.5), (12.5, -30.25, 47.0), _rotation(0.3, 0.2, -0.4))


@pytest.fixture
def phantom(oblique) -> Volume:
    array = ((np.arange(np.prod(SHAPE_KJI)).reshape(SHAPE_KJI) * 37) % 2001 - 1000).astype(np.int16)
    return Volume(array=array, geometry=oblique)


def _write_sitk(path, array, spacing=(0.5, 0.5, 0.5), **kwargs):
    image = sitk.GetImageFromArray(array, **kwargs)
    image.SetSpacing(spacing[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path


def _write_dicom_series(folder, volume: Volume, series_uid="1.2.826.0.1.3680043.2.1125.1"):
    """One DICOM file per slice, each carrying its own oblique position and orientation."""
    folder.mkdir(exist_ok=True)
    image = volume_module.sitk_image(volume.array, volume.geometry)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        one = image[:, :, k : k + 1]  # stays 3-D so that the oblique direction is kept
        for tag, value in (("0020|000e", series_uid), ("0008|0060", "CT"),
                           ("0020|0013", str(k + 1)), ("0008|0018", f"{series_uid}.{k + 1}")):
            one.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-4:]}_{k:03d}.dcm"))
        writer.Execute(one)
    return folder


def _no_leftovers(folder, keep=()):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep) == []


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_volume_roundtrip_keeps_oblique_geometry_and_values(tmp_path, phantom, suffix):
    """An oblique anisotropic volume written and read back has the same RAS grid and voxels."""
    path = write_volume(tmp_path / f"cbct{suffix}", phantom)
    back = read_volume(path)
    assert back.array.shape == SHAPE_KJI
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, phantom.array)
    np.testing.assert_allclose(back.geometry.ijk_to_ras, phantom.geometry.ijk_to_ras, atol=1e-5)
    assert back.metadata["format"] == suffix.lstrip(".")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_labelmap_roundtrip_is_exact_and_uint8(tmp_path, phantom, suffix):
    """A label map comes back with identical labels (uint8) on the reference grid."""
    labels = np.zeros(SHAPE_KJI, dtype=np.int64)
    labels[1:4, 2:5, 3:7] = 36
    labels[0, 0, 0] = 99
    write_labelmap(tmp_path / f"seg{suffix}", labels, phantom)
    back = read_volume(tmp_path / f"seg{suffix}")
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels)
    assert back.geometry.allclose(phantom.geometry, atol=1e-5)


def test_labelmap_above_255_is_written_as_uint16(tmp_path, oblique):
    """Label values beyond 255 survive (uint16) instead of wrapping around."""
    labels = np.zeros(SHAPE_KJI, dtype=np.int32)
    labels[2, 3, 4] = 300
    write_labelmap(tmp_path / "big.nrrd", labels, oblique)
    back = read_volume(tmp_path / "big.nrrd")
    assert back.array.dtype == np.uint16 and back.array[2, 3, 4] == 300


def test_dicom_series_folder_roundtrip_keeps_oblique_geometry(tmp_path, phantom):
    """A DICOM series folder reads as one volume on the same oblique RAS grid."""
    folder = _write_dicom_series(tmp_path / "dicom", phantom)
    back = read_volume(folder)
    assert back.metadata["format"] == "dicom" and back.metadata["n_files"] == SHAPE_KJI[0]
    np.testing.assert_array_equal(back.array, phantom.array)
    np.testing.assert_allclose(back.geometry.ijk_to_ras, phantom.geometry.ijk_to_ras, atol=1e-4)


def test_dicom_folder_with_two_series_reads_the_largest_and_logs_it(tmp_path, phantom, caplog):
    """With a scout and a scan in one folder, the scan is read and the choice logged."""
    folder = _write_dicom_series(tmp_path / "dicom", phantom, series_uid="1.2.3.4.1111")
    scout = Volume(phantom.array[:3], phantom.geometry)
    _write_dicom_series(folder, scout, series_uid="1.2.3.4.2222")
    with caplog.at_level(logging.WARNING, logger="ToothMCLCore.io.volume"):
        back = read_volume(folder)
    assert back.array.shape == SHAPE_KJI
    assert back.metadata["series_uid"] == "1.2.3.4.1111"
    assert "2 DICOM series" in caplog.text and "1.2.3.4.2222" in caplog.text


def test_lps_origin_in_file_becomes_ras(tmp_path):
    """An ITK/LPS origin (-10, -20, 30) is reported in RAS as (10, 20, 30)."""
    image = sitk.GetImageFromArray(np.arange(64, dtype=np.int16).reshape(4, 4, 4))
    image.SetOrigin((-10.0, -20.0, 30.0))
    image.SetSpacing((0.5, 0.5, 0.5))
    sitk.WriteImage(image, str(tmp_path / "lps.nii.gz"))
    volume = read_volume(tmp_path / "lps.nii.gz")
    np.testing.assert_allclose(volume.geometry.origin_ras, [10.0, 20.0, 30.0])
    np.testing.assert_allclose(volume.geometry.direction_ras, LPS_TO_RAS)


def test_written_nifti_stores_ras_world_coordinates(tmp_path):
    """A NIfTI written at RAS origin (10, 20, 30) holds qoffset (10, 20, 30)."""
    geometry = Geometry((0.5, 0.5, 0.5), (10.0, 20.0, 30.0), np.eye(3))
    write_volume(tmp_path / "ras.nii.gz", Volume(np.arange(64.0).reshape(4, 4, 4), geometry))
    with gzip.open(tmp_path / "ras.nii.gz", "rb") as fh:
        header = fh.read(348)
    qoffset = struct.unpack("<3f", header[268:280])
    np.testing.assert_allclose(qoffset, [10.0, 20.0, 30.0])


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------

def test_missing_path_is_refused(tmp_path):
    """A path that does not exist raises InvalidInputError naming it."""
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")


def test_unknown_extension_is_refused(tmp_path):
    """A .png is refused as an unknown format with the list of accepted ones."""
    _write_sitk(tmp_path / "slice.png", np.arange(16, dtype=np.uint8).reshape(4, 4))
    with pytest.raises(InvalidInputError, match="unknown image format '.png'"):
        read_volume(tmp_path / "slice.png")


def test_text_file_named_nrrd_is_refused(tmp_path):
    """A text file renamed .nrrd raises InvalidInputError, not SimpleITK's RuntimeError."""
    (tmp_path / "notes.nrrd").write_text("patient notes, not an image\n")
    with pytest.raises(InvalidInputError, match="could not be read as an image"):
        read_volume(tmp_path / "notes.nrrd")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file_is_refused(tmp_path, suffix):
    """A file cut short (interrupted copy) is refused instead of read with missing voxels."""
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 3000, size=(20, 30, 40)).astype(np.int16)
    path = _write_sitk(tmp_path / f"cbct{suffix}", array)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(InvalidInputError, match="truncated|could not be read"):
        read_volume(path)


def test_2d_image_is_refused(tmp_path):
    """A single 2-D slice is refused with a hint to load the whole series."""
    _write_sitk(tmp_path / "slice.nrrd", np.arange(16, dtype=np.int16).reshape(4, 4))
    with pytest.raises(InvalidInputError, match="2-D image.*whole DICOM series"):
        read_volume(tmp_path / "slice.nrrd")


def test_single_slice_3d_image_is_refused(tmp_path):
    """A 3-D file that is one slice thick is refused as not a volume."""
    _write_sitk(tmp_path / "thin.nrrd", np.arange(16, dtype=np.int16).reshape(1, 4, 4))
    with pytest.raises(InvalidInputError, match="single slice"):
        read_volume(tmp_path / "thin.nrrd")


def test_4d_image_is_refused(tmp_path):
    """A 4-D image (several time points) is refused."""
    image = sitk.Image([4, 5, 6, 3], sitk.sitkFloat32)
    sitk.WriteImage(image, str(tmp_path / "dyn.nii.gz"))
    with pytest.raises(InvalidInputError, match="4-D image"):
        read_volume(tmp_path / "dyn.nii.gz")


def test_4d_image_with_one_time_point_is_read_as_3d(tmp_path):
    """A 4-D file holding a single 3-D volume is accepted as that volume."""
    array = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(array)]), str(tmp_path / "one.nii.gz"))
    np.testing.assert_array_equal(read_volume(tmp_path / "one.nii.gz").array, array)


def test_rgb_image_is_refused(tmp_path):
    """An RGB volume (3 components per voxel) is refused."""
    image = sitk.Image([4, 5, 6], sitk.sitkVectorUInt8, 3)
    sitk.WriteImage(image, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InvalidInputError, match="3 components per voxel"):
        read_volume(tmp_path / "rgb.nrrd")


def test_empty_image_is_refused(tmp_path):
    """A header declaring zero voxels along an axis is refused."""
    (tmp_path / "empty.nrrd").write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 0 4 4\nencoding: raw\nendian: little\n\n"
    )
    with pytest.raises(InvalidInputError):
        read_volume(tmp_path / "empty.nrrd")


def test_constant_volume_is_refused(tmp_path):
    """A volume with the same value everywhere is refused (blank export)."""
    _write_sitk(tmp_path / "blank.nii.gz", np.full((4, 5, 6), -1000, dtype=np.int16))
    with pytest.raises(InvalidInputError, match="same value"):
        read_volume(tmp_path / "blank.nii.gz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels_are_refused(tmp_path, bad):
    """NaN or inf voxels are refused with their count."""
    array = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    array[1, 2, 3] = bad
    _write_sitk(tmp_path / "nan.nrrd", array)
    with pytest.raises(InvalidInputError, match="1 NaN or infinite"):
        read_volume(tmp_path / "nan.nrrd")


@pytest.mark.parametrize("spacing", [(0.0003, 0.0003, 0.0003), (300.0, 300.0, 300.0)])
def test_absurd_spacing_is_refused_as_wrong_units(tmp_path, spacing):
    """Spacing in metres or micrometres is refused as a units mistake."""
    _write_sitk(tmp_path / "units.mha", np.arange(120, dtype=np.int16).reshape(4, 5, 6), spacing)
    with pytest.raises(InvalidInputError, match="wrong units"):
        read_volume(tmp_path / "units.mha")


def test_volume_above_memory_limit_is_refused(tmp_path, phantom):
    """A volume larger than max_bytes raises ResourceLimitError advising to crop."""
    write_volume(tmp_path / "cbct.nrrd", phantom)
    with pytest.raises(ResourceLimitError, match="crop"):
        read_volume(tmp_path / "cbct.nrrd", max_bytes=1000)


def test_memory_limit_is_checked_from_header_before_reading_voxels(tmp_path):
    """A header declaring 32 GiB is refused for size, without trying to read its (absent) voxels."""
    (tmp_path / "huge.nrrd").write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nsizes: 2000 2000 2000\nencoding: raw\n"
        b"endian: little\nspacings: 0.2 0.2 0.2\n\n"
    )
    with pytest.raises(ResourceLimitError, match="2000x2000x2000"):
        read_volume(tmp_path / "huge.nrrd")


def test_folder_without_dicom_is_refused(tmp_path):
    """A folder with no DICOM series raises InvalidInputError."""
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InvalidInputError, match="no DICOM series"):
        read_volume(tmp_path)


# ------------------------------------------------------------------------------------------
# writing: errors and atomicity
# ------------------------------------------------------------------------------------------

def test_unknown_output_extension_raises_output_error_and_leaves_nothing(tmp_path, phantom):
    """Writing to .png raises OutputError and creates no file (not even a temporary one)."""
    with pytest.raises(OutputError, match="unknown output format"):
        write_labelmap(tmp_path / "seg.png", np.zeros(SHAPE_KJI, np.uint8), phantom)
    with pytest.raises(OutputError):
        write_volume(tmp_path / "cbct.seg.nrrd", phantom)
    assert _no_leftovers(tmp_path)


def test_wrong_shape_labels_raise_and_keep_existing_file(tmp_path, phantom):
    """Labels whose shape differs from the reference raise and leave the old output untouched."""
    target = tmp_path / "seg.nii.gz"
    write_labelmap(target, np.ones(SHAPE_KJI, np.uint8), phantom)
    before = target.read_bytes()
    with pytest.raises(InvalidInputError, match="differs from the reference"):
        write_labelmap(target, np.ones((5, 7, 8), np.uint8), phantom)
    with pytest.raises(InvalidInputError, match="must be 3-D"):
        write_labelmap(target, np.ones((7, 8), np.uint8), phantom.geometry)
    assert target.read_bytes() == before
    assert _no_leftovers(tmp_path, keep={"seg.nii.gz"})


@pytest.mark.parametrize("labels", [np.full(SHAPE_KJI, -1), np.full(SHAPE_KJI, 1.5)])
def test_invalid_label_values_are_refused(tmp_path, oblique, labels):
    """Negative or fractional label values are refused instead of silently cast."""
    with pytest.raises(InvalidInputError, match="label"):
        write_labelmap(tmp_path / "seg.nrrd", labels, oblique)
    assert _no_leftovers(tmp_path)


def test_write_failing_midway_leaves_no_partial_file(tmp_path, phantom, monkeypatch):
    """A writer dying half-way leaves no partial output nor temp file, and keeps the old one."""
    target = tmp_path / "seg.nrrd"
    write_labelmap(target, np.ones(SHAPE_KJI, np.uint8), phantom)
    before = target.read_bytes()

    def dying_write(image, path, useCompression=False):
        with open(path, "wb") as fh:
            fh.write(b"NRRD0004\npartial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", dying_write)
    with pytest.raises(OutputError, match="disk full"):
        write_labelmap(target, np.zeros(SHAPE_KJI, np.uint8), phantom)
    assert target.read_bytes() == before
    assert _no_leftovers(tmp_path, keep={"seg.nrrd"})


def test_labelmap_to_seg_nrrd_reads_back_as_fdi_labels(tmp_path, phantom):
    """write_labelmap(.seg.nrrd) then read_volume gives the same FDI label map and geometry."""
    labels = np.zeros(SHAPE_KJI, np.uint8)
    labels[2:4, 1:3, 1:5] = 21
    write_labelmap(tmp_path / "seg.seg.nrrd", labels, phantom)
    back = read_volume(tmp_path / "seg.seg.nrrd")
    np.testing.assert_array_equal(back.array, labels)
    assert back.geometry.allclose(phantom.geometry, atol=1e-9)
    assert back.metadata["segment_names"] == {21: "21 upper left central incisor"}


def test_written_files_get_normal_permissions_not_private_ones(tmp_path, phantom):
    """Atomic writes must not leave outputs readable by their owner only (mkstemp's 0600)."""
    import os

    out = tmp_path / "labels.nii.gz"
    write_labelmap(out, np.zeros(phantom.array.shape, np.uint8), phantom)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
