"""Read CBCT volumes and write label maps, with the full RAS geometry kept.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``; ``.seg.nrrd`` read as an FDI
label map), MetaImage (``.mha``, ``.mhd``), a single DICOM file (``.dcm``) and a folder holding a
DICOM series. SimpleITK works in LPS; everything this module returns or accepts is RAS
(:data:`ToothMCLCore.types.LPS_TO_RAS` flips the first two axes). Arrays are indexed ``[k, j, i]``.

Every check that only needs the header (dimension, components, size, spacing) runs before the
voxels are read, so a 40 GB file is refused in milliseconds.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import struct
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, OutputError, ResourceLimitError
from ..types import LPS_TO_RAS, Geometry, Volume
from .atomic import atomic_path, full_suffix
from .labelmap import DEFAULT_MAX_BYTES, check_labelmap

logger = logging.getLogger(__name__)

#: voxel sizes outside this range (mm) are almost surely a unit error in the header
MIN_SPACING_MM, MAX_SPACING_MM = 0.01, 5.0

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".seg.nrrd", ".mha", ".mhd", ".dcm")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
_FORMATS = "NIfTI (.nii.gz), NRRD, MetaImage (.mha) or a DICOM series folder"


# ---------------------------------------------------------------------------------------------
# Geometry conversion
# ---------------------------------------------------------------------------------------------

def geometry_from_sitk(image) -> Geometry:
    """RAS :class:`Geometry` of a 3-D SimpleITK image (whose geometry is LPS)."""
    direction_lps = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return Geometry(
        spacing=np.asarray(image.GetSpacing(), dtype=np.float64),
        origin_ras=LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64),
        direction_ras=LPS_TO_RAS @ direction_lps,
    )


def sitk_image(array: np.ndarray, geometry: Geometry):
    """SimpleITK image of a ``(K, J, I)`` array placed on ``geometry`` (converted to LPS)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in geometry.spacing])
    image.SetOrigin([float(v) for v in LPS_TO_RAS @ geometry.origin_ras])
    image.SetDirection([float(v) for v in (LPS_TO_RAS @ geometry.direction_ras).ravel()])
    return image


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def read_volume(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> Volume:
    """Read a 3-D scalar volume and its RAS geometry.

    Args:
        path: an image file, or a folder holding a DICOM series (with several series, the one
            with the most files is read and the choice is logged).
        max_bytes: refuse volumes whose ``K * J * I * 4`` bytes (float32) exceed this.

    Returns:
        :class:`Volume` with ``array`` ``(K, J, I)`` in the file's pixel dtype (``uint8`` FDI
        values for ``.seg.nrrd``) and ``metadata["format"]``.

    Raises:
        InvalidInputError: missing path, unknown format, unreadable/truncated file, not a 3-D
            scalar volume, empty, constant, NaN/inf voxels or implausible voxel spacing.
        ResourceLimitError: the volume exceeds ``max_bytes``.
    """
    import SimpleITK as sitk

    p = Path(path)
    if not p.exists():
        raise InvalidInputError(
            f"input {p} does not exist; check the path (expected an image file or a DICOM folder)"
        )
    if p.is_dir():
        reader, header, metadata = _dicom_series_reader(p)
    else:
        suffix = full_suffix(p)
        if suffix == ".seg.nrrd":
            from .segnrrd import read_seg_nrrd

            labels, geometry, names = read_seg_nrrd(p, max_bytes=max_bytes)
            metadata = {"format": "seg.nrrd", "segment_names": names}
            return Volume(array=labels, geometry=geometry, source=str(p), metadata=metadata)
        if suffix not in READ_SUFFIXES:
            raise InvalidInputError(
                f"{p.name}: unknown image format {suffix or '(no extension)'!r} (expected one of "
                f"{', '.join(READ_SUFFIXES)} or a DICOM folder); export it as {_FORMATS}"
            )
        reader = _file_reader(p)
        header = _header(reader)
        metadata = {"format": suffix.lstrip(".")}

    image = _execute_checked(reader, p, header, metadata["format"], max_bytes)
    array = sitk.GetArrayFromImage(image)
    geometry = geometry_from_sitk(image)
    _check_spacing(p, geometry.spacing)
    _check_values(p, array)
    logger.info("read %s: shape (K, J, I) %s, spacing %s mm, dtype %s",
                p, array.shape, np.round(geometry.spacing, 4).tolist(), array.dtype)
    return Volume(array=array, geometry=geometry, source=str(p), metadata=metadata)


def read_image_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
    """One image file as a 3-D ``SimpleITK.Image``, after the checks every reader of ours needs:
    readable header, 3-D scalar of sane size and spacing, a complete NIfTI stream, and a 4-D file
    with one time point reduced to 3-D. The voxel values are not checked (a label map may be all
    background; :func:`read_volume` checks them for images).

    Raises:
        InvalidInputError, ResourceLimitError: as :func:`read_volume` for the header and file.
    """
    p = Path(path)
    reader = _file_reader(p)
    return _execute_checked(reader, p, _header(reader), full_suffix(p).lstrip("."), max_bytes)


def _file_reader(p: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _unreadable(p, exc) from None
    return reader


def _execute_checked(reader, p: Path, header: tuple, fmt: str, max_bytes: int):
    import SimpleITK as sitk

    _check_header(p, *header, max_bytes)
    if fmt in ("nii", "nii.gz"):
        _check_nifti_complete(p)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _unreadable(p, exc) from None
    if image.GetDimension() == 4:  # a 4-D file with a single time point
        size = list(image.GetSize())
        image = sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
    return image


def _unreadable(path: Path, exc: RuntimeError) -> InvalidInputError:
    """InvalidInputError for a SimpleITK read failure, keeping its most telling line."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.startswith(("Exception thrown", "Reason:"))]
    detail = lines[-1] if lines else type(exc).__name__
    detail = re.sub(r"^.*ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", detail, flags=re.IGNORECASE)
    return InvalidInputError(
        f"{path} could not be read as an image ({detail}); expected {_FORMATS}; the file may be "
        "of another kind, truncated or corrupt: copy or export it again"
    )


def _dicom_series_reader(folder: Path):
    """Series reader for the largest DICOM series of ``folder`` and a reader of its header."""
    import SimpleITK as sitk

    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        series_ids = ()
    if not series_ids:
        raise InvalidInputError(
            f"folder {folder} holds no DICOM series; choose the folder that directly contains "
            "the .dcm files of the scan, or give an image file"
        )
    get_files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames
    files = {sid: get_files(str(folder), sid) for sid in series_ids}
    chosen = max(series_ids, key=lambda sid: len(files[sid]))
    if len(series_ids) > 1:
        logger.warning(
            "folder %s holds %d DICOM series; reading %s (%d files, the largest); others: %s",
            folder, len(series_ids), chosen, len(files[chosen]),
            ", ".join(f"{sid} ({len(files[sid])} files)" for sid in series_ids if sid != chosen),
        )
    first = sitk.ImageFileReader()
    first.SetFileName(files[chosen][0])
    try:
        first.ReadImageInformation()
    except RuntimeError as exc:
        raise _unreadable(Path(files[chosen][0]), exc) from None
    n_files = len(files[chosen])
    size = list(first.GetSize())
    if n_files > 1:  # one slice per file; the slice spacing is known once positions are read
        header = (3, size[:2] + [n_files], first.GetNumberOfComponents(), first.GetSpacing()[:2])
    else:
        header = _header(first)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[chosen])
    return reader, header, {"format": "dicom", "series_uid": chosen, "n_files": n_files}


def _header(reader) -> tuple:
    """(dimension, size, components, spacing) of a reader after ReadImageInformation."""
    return (reader.GetDimension(), list(reader.GetSize()), reader.GetNumberOfComponents(),
            reader.GetSpacing())


def _check_header(path: Path, dim: int, size: list[int], components: int, spacing, max_bytes: int):
    """Refuse what is not a 3-D scalar volume of sane size and spacing, before reading voxels."""
    if components > 1:
        raise InvalidInputError(
            f"{path.name} has {components} components per voxel (an RGB or vector image); "
            "expected a scalar (grey-value) CBCT volume; load the original CBCT export"
        )
    if dim == 4 and size[3] == 1:
        dim, size, spacing = 3, size[:3], spacing[:3]
    if dim != 3:
        hint = ("select the folder that holds the whole DICOM series" if dim == 2
                else "extract a single 3-D volume (one time point / channel) first")
        raise InvalidInputError(
            f"{path.name} is a {dim}-D image (size {size}); expected a 3-D volume; {hint}"
        )
    if any(s == 0 for s in size):
        raise InvalidInputError(
            f"{path.name} is empty (size {size}); expected a 3-D volume with voxels; re-export it"
        )
    if any(s == 1 for s in size):
        raise InvalidInputError(
            f"{path.name} has a single slice along one axis (size {size}); expected a 3-D volume; "
            "select the folder that holds the whole DICOM series"
        )
    n_bytes = int(np.prod([int(s) for s in size], dtype=object)) * 4
    if n_bytes > max_bytes:
        raise ResourceLimitError(
            f"{path.name} has {size[0]}x{size[1]}x{size[2]} voxels ({n_bytes / 1024**3:.2f} GiB "
            f"as float32, limit {max_bytes / 1024**3:.2f} GiB); crop to the jaws or downsample "
            "it first"
        )
    _check_spacing(path, spacing)


def _check_spacing(path: Path, spacing):
    spacing = [round(float(s), 6) for s in spacing]
    if any(not (MIN_SPACING_MM <= s <= MAX_SPACING_MM) for s in spacing):
        raise InvalidInputError(
            f"{path.name} has voxel spacing {spacing} mm; expected {MIN_SPACING_MM}-"
            f"{MAX_SPACING_MM} mm per voxel for CBCT; this looks like wrong units (m or um "
            "instead of mm): fix the spacing in the file header"
        )


def _check_values(path: Path, array: np.ndarray):
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        n_bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InvalidInputError(
            f"{path.name} has {n_bad} NaN or infinite voxels; expected finite intensities; "
            "re-export the volume or replace them (e.g. with the minimum intensity)"
        )
    lo, hi = array.min(), array.max()
    if lo == hi:
        raise InvalidInputError(
            f"{path.name} has the same value ({lo}) in every voxel; expected a CBCT with varying "
            "intensities; check that the right file or series was exported"
        )


def _check_nifti_complete(path: Path):
    """Raise if a NIfTI file holds fewer voxel bytes than its header declares.

    ITK's NIfTI reader fills a truncated file with zeros without complaint, so we check the
    sizes ourselves: the file size of ``.nii``; the gzip trailer (uncompressed size modulo 2**32)
    of ``.nii.gz``, falling back to decompressing the whole stream when the trailer disagrees.
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            head = fh.read(540)
        expected = _nifti_expected_bytes(head)
        if expected is None:
            return
        if not gz:
            actual = path.stat().st_size
        else:
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                trailer = struct.unpack("<I", fh.read(4))[0]
            if trailer == expected % 2**32:
                return
            actual = 0
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    actual += len(chunk)
    except (OSError, EOFError, struct.error) as exc:
        raise InvalidInputError(
            f"{path} is truncated or corrupt ({exc}); copy or export it again"
        ) from None
    if actual < expected:
        raise InvalidInputError(
            f"{path} is truncated: its header declares {expected} bytes but it holds {actual}; "
            "copy or export it again"
        )


def _nifti_expected_bytes(head: bytes) -> int | None:
    """Header bytes + voxel bytes declared by a NIfTI-1/2 header, or None if not parseable."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            dims = struct.unpack(endian + "8q", head[16:80])
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            offset = struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    n_voxels = int(np.prod([max(int(d), 1) for d in dims[1 : dims[0] + 1]], dtype=object))
    return max(offset, 348) + n_voxels * bitpix // 8


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def write_labelmap(path: str | os.PathLike, labels, reference: Geometry | Volume) -> Path:
    """Write a label map on the reference grid, atomically.

    Args:
        path: ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha`` (compressed, ``uint8``/``uint16``) or
            ``.seg.nrrd`` (a 3D Slicer segmentation with one named segment per FDI value).
        labels: ``(K, J, I)`` integer array of label values (FDI numbers, 0, 99).
        reference: :class:`Geometry` of the input volume, or the :class:`Volume` itself.

    Returns:
        the written path.

    Raises:
        InvalidInputError: labels do not fit the reference (see :func:`check_labelmap`).
        OutputError: unknown extension or unwritable folder; nothing is left behind.
    """
    suffix = full_suffix(path)
    if suffix == ".seg.nrrd":
        from .segnrrd import write_seg_nrrd

        return write_seg_nrrd(path, labels, reference)
    _check_write_suffix(path, suffix, allow_seg=True)
    arr, geometry = check_labelmap(labels, reference)
    return _write_sitk(path, arr, geometry)


def write_volume(path: str | os.PathLike, volume: Volume) -> Path:
    """Write an intensity volume as ``float32`` (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``).

    Atomic: on any error nothing is left at ``path`` (an existing file stays as it was).

    Raises:
        InvalidInputError: ``volume.array`` is not 3-D.
        OutputError: unknown extension or unwritable folder; nothing is left behind.
    """
    _check_write_suffix(path, full_suffix(path), allow_seg=False)
    arr = np.asarray(volume.array)
    if arr.ndim != 3:
        raise InvalidInputError(
            f"volume must be 3-D (K, J, I) (got shape {arr.shape}); pass a single volume"
        )
    return _write_sitk(path, arr.astype(np.float32, copy=False), volume.geometry)


def _check_write_suffix(path, suffix: str, allow_seg: bool):
    if suffix not in WRITE_SUFFIXES:
        allowed = ", ".join(WRITE_SUFFIXES + ((".seg.nrrd",) if allow_seg else ()))
        raise OutputError(
            f"cannot write {Path(path).name}: unknown output format "
            f"{suffix or '(no extension)'!r}; use one of {allowed}"
        )


def _write_sitk(path, array: np.ndarray, geometry: Geometry) -> Path:
    import SimpleITK as sitk

    image = sitk_image(array, geometry)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()[-1]
            raise OutputError(f"could not write {path} ({detail}); check free disk space") from None
    logger.info("wrote %s: shape (K, J, I) %s, dtype %s", path, array.shape, array.dtype)
    return Path(path)
