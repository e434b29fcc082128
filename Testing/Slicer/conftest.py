"""Fixtures for the ToothMCLSegment logic against a real MRML scene (slicer-core, no GUI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "ToothMCLSegment"
for path in (str(REPO), str(MODULE_DIR)):  # as in Slicer: the module folder is on sys.path
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture
def scene():
    """An empty MRML scene."""
    import slicer

    return slicer.vtkMRMLScene()


@pytest.fixture
def arch_teeth():
    """Lower left and right quadrants 31..37 and 41..47, upper 11..17 and 21..27."""
    return [q * 10 + p for q in (1, 2, 3, 4) for p in range(1, 8)]


@pytest.fixture
def arch_segmentation(scene, arch_teeth):
    """(segmentation node, its labels, the volume node) for the toy arch, made by the module."""
    from slicer_test_data import add_volume, arch_labels
    from ToothMCLSegmentLib.SegmentDisplay import createSegmentationNode

    labels = arch_labels(arch_teeth)
    volume = add_volume(scene, labels.shape)
    return createSegmentationNode(scene, labels, volume), labels, volume
