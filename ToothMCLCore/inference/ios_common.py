"""What both intraoral predictors share: the result types, preparing a scan and its jaw, and
the per-tooth summary (:mod:`.ios`, the Point Transformer, and :mod:`.softooth` import it; it
imports neither, so the two predictors' modules never import each other's internals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import fdi
from ..errors import InvalidInputError
from ..io.mesh import MeshReadResult, clean_mesh, detect_jaw
from ..types import SurfaceMesh


@dataclass
class IOSToothSummary:
    """One tooth found on the scan: FDI number, name, vertex count, surface area in mm^2."""

    fdi: int
    name: str
    vertices: int
    area_mm2: float


@dataclass
class IOSResult:
    """Output of the IOS predictors' ``predict`` (:class:`~.ios.IOSPredictor`, :class:`~.softooth.SOFToothPredictor`).

    Attributes:
        labels: (N_file,) int32 FDI per vertex of the file as stored (0 = gingiva).
        instances: (N_file,) int32 instance per vertex, 1..n from the patient's right, 0 gingiva.
        jaw: "upper" or "lower".
        teeth: one :class:`IOSToothSummary` per tooth.
        provenance: model, version, SHA-256, date, jaw rule, decimation.
        tooth_probability: (N_file,) float32 probability that each vertex is a tooth (1 minus the
            gingiva class), what the click tools (:mod:`ToothMCLCore.interactive.ios_tools`) use;
            None when the predictor does not give one.
    """

    labels: np.ndarray
    instances: np.ndarray
    jaw: str
    teeth: list[IOSToothSummary]
    provenance: dict = field(default_factory=dict)
    tooth_probability: np.ndarray | None = None


def prepare_scan_and_jaw(scan: MeshReadResult | SurfaceMesh, jaw: str | None) -> tuple[MeshReadResult, str]:
    """The cleaned scan and its jaw, shared by every IOS predictor.

    A bare :class:`SurfaceMesh` is cleaned; ``jaw`` None takes the scan's own jaw or decides
    from the geometry (:func:`ToothMCLCore.io.mesh.detect_jaw`).

    Raises:
        InvalidInputError: a jaw other than "upper" or "lower".
    """
    if isinstance(scan, SurfaceMesh):
        scan = clean_mesh(scan.vertices_ras, scan.faces, labels=scan.labels, source=scan.source)
    if jaw is None:
        jaw = scan.mesh.jaw or detect_jaw(scan.mesh.source, scan.mesh, None, normals=scan.normals)[0]
    if jaw not in fdi.JAWS:
        raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r})")
    return scan, jaw


def arch_instances(labels: np.ndarray) -> np.ndarray:
    """(N,) int32 instance ids 1..n of the teeth from the patient's right in arch order, 0 gingiva."""
    out = np.zeros(len(labels), np.int32)
    teeth = sorted(fdi.present_teeth(np.unique(labels)), key=lambda n: fdi.tooth(n).arch_index)
    for i, n in enumerate(teeth, start=1):
        out[labels == n] = i
    return out


def summarize_mesh(mesh: SurfaceMesh, labels: np.ndarray) -> list[IOSToothSummary]:
    """Per-tooth vertex counts and surface areas (faces whose three corners share the label)."""
    v, f = mesh.vertices_ras, mesh.faces
    areas = np.zeros(0)
    face_label = np.zeros(0, np.int64)
    if len(f):
        areas = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
        lf = labels[f]
        uniform = (lf[:, 0] == lf[:, 1]) & (lf[:, 1] == lf[:, 2])
        face_label = np.where(uniform, lf[:, 0], -1)
    out = []
    for n in fdi.present_teeth(np.unique(labels)):
        out.append(IOSToothSummary(n, fdi.tooth(n).name, int((labels == n).sum()),
                                   float(areas[face_label == n].sum()) if len(areas) else 0.0))
    return out
