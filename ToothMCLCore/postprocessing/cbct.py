"""Turn a CBCT network's class probabilities into a clean FDI label map.

1. ``argmax`` gives a class per voxel.
2. For every tooth class, its connected components (26-connectivity) become *instances*: the
   largest always; a further component only if it is a second tooth wrongly given the same
   number (:func:`~ToothMCLCore.postprocessing.assignment.is_second_instance`: large, and far
   across the arch). Other components are islands or fragments and are dropped -- this is
   "keep the largest connected component per tooth".
3. Each instance gets its jaw from the probability mass of upper vs lower classes, and its
   final FDI number from :func:`~ToothMCLCore.postprocessing.assignment.assign_fdi`, which
   resolves duplicated and left/right-swapped numbers in arch order.
4. Metal keeps its label (:data:`~ToothMCLCore.fdi.METAL_LABEL`) where it forms components
   larger than the island threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .. import fdi
from ..config import PostprocessConfig
from ..types import Geometry
from .assignment import assign_fdi, is_second_instance

logger = logging.getLogger(__name__)

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass
class Instance:
    """One connected tooth candidate.

    Attributes:
        slices: bounding box of the component in the array.
        mask: boolean mask inside ``slices``.
        voxels: number of voxels.
        class_index: the network class it was predicted as.
        centre_ras: (3,) float64 centroid in RAS mm.
        probabilities: (C,) float64 mean class probabilities over its voxels.
    """

    slices: tuple
    mask: np.ndarray
    voxels: int
    class_index: int
    centre_ras: np.ndarray
    probabilities: np.ndarray


def find_instances(class_map: np.ndarray, probs: np.ndarray, geometry: Geometry,
                   min_voxels: int, scheme: str = "cbct") -> list[Instance]:
    """Connected tooth components of every tooth class.

    Args:
        class_map: (K, J, I) integer class indices.
        probs: (C, K, J, I) float class probabilities (softmax).
        geometry: grid of ``class_map``.
        min_voxels: islands smaller than this are dropped.
    """
    labels_of = fdi.class_index_to_fdi(np.arange(fdi.num_classes(scheme)), scheme)
    instances: list[Instance] = []
    objects = ndimage.find_objects(class_map.astype(np.int32))
    m = geometry.ijk_to_ras
    for class_index, box in enumerate(objects, start=1):  # find_objects: entry n-1 is label n
        if box is None or not fdi.is_valid_fdi(int(labels_of[class_index])):
            continue
        sub = class_map[box] == class_index
        comp, n = ndimage.label(sub, structure=_STRUCTURE)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        largest = sizes[order[0]]
        first_centre = None
        for rank, idx in enumerate(order):
            size = int(sizes[idx])
            if size < min_voxels:
                break
            cmask = comp == idx + 1
            cbox = ndimage.find_objects(cmask.astype(np.int8))[0]
            local = cmask[cbox]
            full = tuple(slice(b.start + c.start, b.start + c.stop) for b, c in zip(box, cbox))
            kk, jj, ii = np.nonzero(local)
            centre_kji = np.array([kk.mean() + full[0].start, jj.mean() + full[1].start,
                                   ii.mean() + full[2].start])
            centre = (m @ np.array([centre_kji[2], centre_kji[1], centre_kji[0], 1.0]))[:3]
            if rank == 0:
                first_centre = centre
            elif not is_second_instance(size, largest, centre, first_centre):
                continue
            p = probs[(slice(None),) + full][:, local].astype(np.float64).mean(axis=1)
            instances.append(Instance(full, local, size, class_index, centre, p))
    return instances


def number_teeth(class_map: np.ndarray, probs: np.ndarray, geometry: Geometry,
                 config: PostprocessConfig | None = None) -> np.ndarray:
    """Clean label map with FDI values (and metal), same shape as ``class_map``.

    Args:
        class_map: (K, J, I) integer class indices (``cbct`` scheme).
        probs: (34, K, J, I) float probabilities.
        geometry: RAS-aligned grid of the arrays (arch order needs RAS axes).

    Returns:
        (K, J, I) uint8 label map: 0 background, FDI numbers, 99 metal.
    """
    config = config or PostprocessConfig()
    voxel_mm3 = float(np.prod(geometry.spacing))
    min_voxels = max(1, round(config.min_tooth_volume_mm3 / voxel_mm3))
    instances = find_instances(class_map, probs, geometry, min_voxels)
    out = np.zeros(class_map.shape, dtype=np.uint8)

    for jaw in fdi.JAWS:
        candidates = fdi.teeth_of_jaw(jaw)
        cols = fdi.fdi_to_class_index(np.asarray(candidates), "cbct")
        other = fdi.fdi_to_class_index(np.asarray(fdi.teeth_of_jaw("lower" if jaw == "upper" else "upper")), "cbct")
        members = [inst for inst in instances
                   if inst.probabilities[cols].sum() >= inst.probabilities[other].sum()]
        if not members:
            continue
        p = np.stack([inst.probabilities[cols] for inst in members])
        centres = np.stack([inst.centre_ras for inst in members])
        numbers = assign_fdi(p, centres, candidates, config.lambda_order, config.delta_order)
        for inst, number in zip(members, numbers):
            if number == 0:
                logger.info("dropped a %d-voxel component: more instances than teeth in the %s jaw",
                            inst.voxels, jaw)
                continue
            if fdi.class_index_to_fdi(inst.class_index) != number:
                logger.info("renumbered a tooth predicted as %d to %d (arch order)",
                            int(fdi.class_index_to_fdi(inst.class_index)), int(number))
            region = out[inst.slices]
            region[inst.mask] = number

    metal_index = int(fdi.fdi_to_class_index(fdi.METAL_LABEL, "cbct"))
    metal = class_map == metal_index
    if metal.any():
        comp, _ = ndimage.label(metal, structure=_STRUCTURE)
        sizes = np.bincount(comp.ravel())
        keep = sizes >= min_voxels
        keep[0] = False
        out[keep[comp]] = fdi.METAL_LABEL
    return out
