"""The table of teeth: one row per tooth segment (or per FDI number of a scan), with flags.

Flags point the annotator at results worth a second look:

- ``duplicate number``: two segments carry the same FDI number;
- ``out of arch order``: along the arch (``arch_coordinate`` of the centroids, per jaw) the tooth
  breaks the FDI order, i.e. it is missing from at least one longest run of teeth in FDI order
  (two swapped neighbours are both flagged; one misplaced tooth is flagged alone; segments with
  the same number side by side are not);
- ``very small``: below ``minSize`` (mm^3 for a segmentation, mm^2 for a scan);
- ``no FDI number``: a segment whose name does not start with an FDI number (e.g. added by hand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FLAG_DUPLICATE = "duplicate number"
FLAG_ORDER = "out of arch order"
FLAG_SMALL = "very small"
FLAG_NO_NUMBER = "no FDI number"
#: a tooth segment smaller than this (mm^3) is flagged; the smallest real tooth is several hundred
MIN_TOOTH_VOLUME_MM3 = 50.0
#: a tooth surface smaller than this (mm^2) is flagged
MIN_TOOTH_AREA_MM2 = 10.0


@dataclass
class ToothRow:
    """One row: FDI number (0 when unknown), name, size in ``unit``, centroid and flags."""

    fdi: int
    name: str
    size: float
    unit: str
    centroidRas: tuple[float, float, float]
    segmentId: str = ""
    flags: list[str] = field(default_factory=list)

    @property
    def flagText(self) -> str:
        return "; ".join(self.flags)


def inEveryLongestRun(sequence) -> list[bool]:
    """For each element: does it belong to every longest non-decreasing subsequence?

    Non-decreasing, so that two segments with the same number side by side (flagged as a
    duplicate already) do not also count as out of order.
    """
    values = list(sequence)
    n = len(values)
    ending = [1] * n  # longest increasing run ending at i
    starting = [1] * n  # longest increasing run starting at i
    for i in range(n):
        for j in range(i):
            if values[j] <= values[i]:
                ending[i] = max(ending[i], ending[j] + 1)
    for i in reversed(range(n)):
        for j in range(i + 1, n):
            if values[j] >= values[i]:
                starting[i] = max(starting[i], starting[j] + 1)
    longest = max(ending, default=0)
    onSome = [ending[i] + starting[i] - 1 == longest for i in range(n)]
    perLength: dict[int, int] = {}
    for i in range(n):
        if onSome[i]:
            perLength[ending[i]] = perLength.get(ending[i], 0) + 1
    return [onSome[i] and perLength[ending[i]] == 1 for i in range(n)]


def flagRows(rows: list[ToothRow], minSize: float) -> list[ToothRow]:
    """Set the flags of rows in place (see module docstring); returns the rows sorted by FDI."""
    from ToothMCLCore import fdi
    from ToothMCLCore.postprocessing.assignment import arch_coordinate

    for row in rows:
        row.flags = []
        if row.fdi == 0:
            row.flags.append(FLAG_NO_NUMBER)
    numbers = [row.fdi for row in rows if fdi.is_valid_fdi(row.fdi)]
    for row in rows:
        if fdi.is_valid_fdi(row.fdi) and numbers.count(row.fdi) > 1:
            row.flags.append(FLAG_DUPLICATE)
    for jaw in fdi.JAWS:
        teeth = [row for row in rows if fdi.is_valid_fdi(row.fdi) and fdi.tooth(row.fdi).arch == jaw
                 and np.all(np.isfinite(row.centroidRas))]
        if len(teeth) < 2:
            continue
        along = arch_coordinate(np.array([row.centroidRas for row in teeth]))
        byPosition = [teeth[i] for i in np.argsort(along, kind="stable")]
        ordered = inEveryLongestRun([fdi.tooth(row.fdi).arch_index for row in byPosition])
        for row, ok in zip(byPosition, ordered):
            if not ok:
                row.flags.append(FLAG_ORDER)
    for row in rows:
        if (row.fdi == 0 or fdi.is_valid_fdi(row.fdi)) and row.size < minSize:  # not metal nor structures
            row.flags.append(FLAG_SMALL)
    return sorted(rows, key=lambda row: (row.fdi == 0, row.fdi, row.segmentId))


def teethTableFromSegmentation(segmentationNode, minVolumeMm3: float = MIN_TOOTH_VOLUME_MM3) -> list[ToothRow]:
    """One row per segment of a segmentation: volume in mm^3 and centroid from its voxels."""
    from scipy import ndimage

    from .SegmentDisplay import fdiOfSegment, referenceGeometry, segmentLayers

    ijkToRas, _ = referenceGeometry(segmentationNode)
    voxelMm3 = float(abs(np.linalg.det(ijkToRas[:3, :3])))
    segmentation = segmentationNode.GetSegmentation()
    rows = []
    for layerArray, values in segmentLayers(segmentationNode):
        segmentIds = [sid for sid, value in values.items() if value > 0]
        labelValues = [values[sid] for sid in segmentIds]
        counts = np.bincount(layerArray.ravel().astype(np.int64), minlength=max(labelValues, default=0) + 1)
        with np.errstate(invalid="ignore", divide="ignore"):  # empty segments: NaN centroid
            centres = ndimage.center_of_mass(np.ones_like(layerArray, dtype=np.uint8), layerArray,
                                             labelValues) if labelValues else []
        for segmentId, value, centreKji in zip(segmentIds, labelValues, centres):
            segment = segmentation.GetSegment(segmentId)
            number = fdiOfSegment(segment) or 0
            ijk = np.array([centreKji[2], centreKji[1], centreKji[0], 1.0]) if counts[value] else np.full(4, np.nan)
            ras = ijkToRas @ ijk
            rows.append(ToothRow(number, segment.GetName(), float(counts[value]) * voxelMm3, "mm³",
                                 tuple(float(x) for x in ras[:3]), segmentId))
    return flagRows(rows, minVolumeMm3)


def teethTableFromModel(modelNode, minAreaMm2: float = MIN_TOOTH_AREA_MM2) -> list[ToothRow]:
    """One row per FDI number of a scan's ``FDI`` point array: surface area (mm^2) and centroid.

    Each triangle's area is shared equally by its three vertices.
    """
    import vtk
    from vtk.util import numpy_support

    from ToothMCLCore import fdi

    from .VertexLabels import vertexLabels

    labels = vertexLabels(modelNode)
    if labels is None:
        return []
    polyData = modelNode.GetPolyData()
    points = numpy_support.vtk_to_numpy(polyData.GetPoints().GetData()).astype(np.float64)
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputData(polyData)
    triangles.Update()
    polys = triangles.GetOutput().GetPolys()
    vertexArea = np.zeros(len(points))
    if polys.GetNumberOfCells():
        faces = numpy_support.vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
        a, b, c = points[faces[:, 0]], points[faces[:, 1]], points[faces[:, 2]]
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        np.add.at(vertexArea, faces.ravel(), np.repeat(area / 3.0, 3))
    rows = []
    for value in sorted({int(v) for v in np.unique(labels)} - {0}):
        mask = labels == value
        name = fdi.tooth(value).label if fdi.is_valid_fdi(value) else str(value)
        rows.append(ToothRow(value, name, float(vertexArea[mask].sum()), "mm²",
                             tuple(float(x) for x in points[mask].mean(axis=0))))
    return flagRows(rows, minAreaMm2)
