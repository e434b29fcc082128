"""Data types shared by I/O, preprocessing, inference and the Slicer module.

Axis order: every volume array is indexed ``[k, j, i]`` (slowest axis first), as SimpleITK's
``GetArrayFromImage`` and Slicer's ``arrayFromVolume`` return it. The geometry maps voxel
indices ``(i, j, k)`` (fastest axis first) to patient coordinates in RAS millimetres through
``ijk_to_ras``; spacing, origin and direction are always explicit, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInputError

# LPS (DICOM/ITK) <-> RAS (Slicer, NIfTI world): flip the first two axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume in RAS millimetres.

    Attributes:
        spacing: (3,) float64, voxel size along i, j, k in mm.
        origin_ras: (3,) float64, RAS position of voxel (0, 0, 0) centre.
        direction_ras: (3, 3) float64, columns are the unit RAS directions of i, j, k.
    """

    spacing: np.ndarray
    origin_ras: np.ndarray
    direction_ras: np.ndarray

    def __post_init__(self):
        spacing = np.asarray(self.spacing, dtype=np.float64).reshape(3)
        origin = np.asarray(self.origin_ras, dtype=np.float64).reshape(3)
        direction = np.asarray(self.direction_ras, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InvalidInputError(
                f"voxel spacing must be positive and finite (got {spacing.tolist()} mm); "
                "fix the file header"
            )
        if not np.all(np.isfinite(origin)) or not np.all(np.isfinite(direction)):
            raise InvalidInputError("volume origin or direction is not finite; fix the file header")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
            raise InvalidInputError(
                "volume direction matrix is not orthonormal (sheared or scaled axes: "
                f"{np.round(direction, 4).tolist()}); fix the file header"
            )
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin_ras", origin)
        object.__setattr__(self, "direction_ras", direction)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """(4, 4) float64 homogeneous matrix: RAS = M @ (i, j, k, 1)."""
        m = np.eye(4)
        m[:3, :3] = self.direction_ras * self.spacing[None, :]
        m[:3, 3] = self.origin_ras
        return m

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray) -> Geometry:
        m = np.asarray(matrix, dtype=np.float64)
        spacing = np.linalg.norm(m[:3, :3], axis=0)
        if np.any(spacing <= 0):
            raise InvalidInputError("IJK-to-RAS matrix has a zero column; fix the volume geometry")
        return cls(spacing, m[:3, 3], m[:3, :3] / spacing[None, :])

    def allclose(self, other: Geometry, atol: float = 1e-4) -> bool:
        return bool(np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=atol))

    def to_dict(self) -> dict:
        return {
            "spacing": self.spacing.tolist(),
            "origin_ras": self.origin_ras.tolist(),
            "direction_ras": self.direction_ras.tolist(),
        }


@dataclass
class Volume:
    """A scalar volume: an array indexed ``[k, j, i]`` and its :class:`Geometry`.

    Attributes:
        array: (K, J, I) array, any numeric dtype.
        geometry: voxel grid in RAS.
        source: where it came from (path or description), for messages and provenance.
    """

    array: np.ndarray
    geometry: Geometry
    source: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def shape_kji(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        return self.geometry.spacing

    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.geometry.spacing))


@dataclass
class SurfaceMesh:
    """A triangle surface (an intraoral scan) in RAS millimetres.

    Attributes:
        vertices_ras: (N, 3) float64 vertex positions.
        faces: (M, 3) int64 vertex indices (may be empty for a bare point cloud).
        labels: optional (N,) int32 FDI label per vertex, 0 = gingiva.
        instances: optional (N,) int32 instance id per vertex, 0 = gingiva.
        jaw: "upper", "lower" or "" when unknown.
        source: where it came from, for messages and provenance.
    """

    vertices_ras: np.ndarray
    faces: np.ndarray
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None
    jaw: str = ""
    source: str = ""

    @property
    def n_vertices(self) -> int:
        return len(self.vertices_ras)
