"""Per-tooth diff: each kind of correction an annotator makes is named as such, with counts."""

from __future__ import annotations

import numpy as np

from ToothMCLCore.corrections.diff import tooth_diff


def _labels(*runs):
    """(N,) uint8 labels from (value, count) runs."""
    return np.concatenate([np.full(n, v, dtype=np.uint8) for v, n in runs])


def _by_change(entries):
    return {(e["change"], e["from"], e["to"]): e for e in entries}


def test_swapped_teeth_are_two_renumberings():
    """Swapping 44 and 45 reads as 44 -> 45 and 45 -> 44, the other teeth unchanged."""
    before = _labels((0, 10), (44, 5), (45, 7), (46, 3))
    after = before.copy()
    after[before == 44], after[before == 45] = 45, 44
    entries = _by_change(tooth_diff(before, after))
    assert set(entries) == {("renumbered", 44, 45), ("renumbered", 45, 44), ("unchanged", 46, 46)}
    assert entries[("renumbered", 44, 45)]["before"] == 5 and entries[("renumbered", 44, 45)]["overlap"] == 5


def test_a_tooth_that_mostly_became_another_number_is_renumbered_with_its_edits():
    """A 36 that became 37 while 2 voxels were trimmed is renumbered 36 -> 37 with 2 lost."""
    before = _labels((0, 4), (36, 10))
    after = _labels((0, 6), (37, 8))
    (entry,) = tooth_diff(before, after)
    assert entry["change"] == "renumbered" and (entry["from"], entry["to"]) == (36, 37)
    assert entry["before"] - entry["overlap"] == 2 and entry["after"] - entry["overlap"] == 0


def test_added_removed_and_boundary_edits_are_counted():
    """A deleted 18, a painted 28 and a grown 11 are removed, added and boundary with counts."""
    before = _labels((0, 10), (18, 4), (11, 6))
    after = _labels((28, 3), (0, 11), (11, 6))
    after[9] = 11  # one background voxel joins 11
    entries = _by_change(tooth_diff(before, after))
    assert entries[("removed", 18, 0)]["before"] == 4
    assert entries[("added", 0, 28)]["after"] == 3
    grown = entries[("boundary", 11, 11)]
    assert (grown["after"] - grown["overlap"], grown["before"] - grown["overlap"]) == (1, 0)


def test_a_fragment_merged_into_its_tooth_and_a_split_are_named():
    """A fragment labelled 47 merged into 46 is 'merged'; a 21 cut out of a fused 11 is 'split'."""
    before = _labels((46, 20), (47, 3), (11, 12))
    after = _labels((46, 23), (11, 7), (21, 5))
    entries = _by_change(tooth_diff(before, after))
    assert ("merged", 47, 46) in entries and ("unchanged", 46, 46) not in entries
    assert entries[("split", 11, 21)]["after"] == 5
    assert entries[("boundary", 11, 11)]["before"] == 12


def test_identical_labels_give_only_unchanged_entries():
    """Saving an untouched prediction records every tooth as unchanged, metal included."""
    labels = np.zeros((3, 4, 5), dtype=np.uint8)
    labels[0, :2] = 31
    labels[2, 3] = 99
    entries = tooth_diff(labels, labels.copy())
    assert [(e["change"], e["from"]) for e in entries] == [("unchanged", 31), ("unchanged", 99)]
