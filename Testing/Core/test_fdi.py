"""The FDI table and the class-index mapping that everything else relies on."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.errors import InvalidInputError


def test_permanent_and_primary_tables_are_complete():
    """32 permanent and 20 primary teeth, each with its quadrant, arch, side and position."""
    assert len(fdi.PERMANENT_FDI) == 32 and len(fdi.PRIMARY_FDI) == 20
    t = fdi.tooth(36)
    assert (t.quadrant, t.arch, t.side, t.position, t.group_name) == (3, "lower", "left", 6, "first molar")
    assert fdi.tooth(11).name == "upper right central incisor"
    assert fdi.tooth(48).label == "48 lower right third molar"
    assert fdi.tooth(55).name == "upper right primary second molar" and fdi.tooth(55).primary


def test_groups_follow_the_papers_t1_to_t8():
    """Position n of every permanent quadrant is tooth group Tn."""
    for n in fdi.PERMANENT_FDI:
        assert fdi.tooth(n).group == n % 10
    assert fdi.TOOTH_GROUPS[0] == "central incisor" and fdi.TOOTH_GROUPS[7] == "third molar"


def test_snomed_codes_distinguish_every_tooth():
    """Upper/lower and left/right teeth carry different SNOMED CT codes (DICOM CID 4018/4019)."""
    codes = [fdi.tooth(n).snomed_code for n in fdi.PERMANENT_FDI + fdi.PRIMARY_FDI]
    assert len(set(codes)) == len(codes)
    assert fdi.tooth(11).snomed_code == "422653006"  # permanent maxillary right central incisor
    assert fdi.tooth(38).snomed_code == "74344005"   # mandibular left third molar


def test_colours_are_valid_and_distinct():
    """Every permanent tooth has its own display colour in [0, 1]."""
    colours = [fdi.tooth(n).color for n in fdi.PERMANENT_FDI]
    assert len(set(colours)) == 32
    assert all(0.0 <= c <= 1.0 for rgb in colours for c in rgb)


def test_cbct_class_mapping_round_trips():
    """34 CBCT channels: background, FDI 11..48 in quadrant order, metal as label 99."""
    assert fdi.num_classes("cbct") == 34
    idx = np.arange(34)
    labels = fdi.class_index_to_fdi(idx, "cbct")
    assert labels[0] == 0 and labels[1] == 11 and labels[8] == 18 and labels[9] == 21
    assert labels[32] == 48 and labels[33] == fdi.METAL_LABEL
    np.testing.assert_array_equal(fdi.fdi_to_class_index(labels, "cbct"), idx)


def test_ios_schemes_map_17_classes_per_jaw():
    """IOS: gingiva + 16 teeth, the right quadrant first, per jaw."""
    up = fdi.class_index_to_fdi(np.arange(17), "ios_upper")
    low = fdi.class_index_to_fdi(np.arange(17), "ios_lower")
    assert up[1] == 11 and up[9] == 21 and low[1] == 41 and low[9] == 31
    np.testing.assert_array_equal(fdi.fdi_to_class_index(low, "ios_lower"), np.arange(17))


def test_the_mirror_image_of_a_jaw_swaps_its_quadrants_position_by_position():
    """11 <-> 21, 36 <-> 46, 55 <-> 65; the class permutation of each scheme does the same to class
    indices and keeps background and metal; applying it twice changes nothing."""
    assert [fdi.mirror(t) for t in (11, 21, 36, 46, 55, 83)] == [21, 11, 46, 36, 65, 73]
    for scheme in fdi.SCHEMES:
        perm = fdi.mirror_permutation(scheme)
        labels = fdi.class_index_to_fdi(np.arange(fdi.num_classes(scheme)), scheme)
        mirrored = fdi.class_index_to_fdi(perm, scheme)
        assert [fdi.mirror(v) if fdi.is_valid_fdi(v) else v for v in labels] == mirrored.tolist()
        np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))
    with pytest.raises(InvalidInputError, match="not an FDI tooth number"):
        fdi.mirror(99)


def test_unknown_labels_and_numbers_are_refused():
    """A label value outside the table or a non-FDI number is an error that says what to do."""
    with pytest.raises(InvalidInputError, match="not part of the 'cbct' label table"):
        fdi.fdi_to_class_index(np.array([0, 11, 19]), "cbct")
    assert fdi.fdi_to_class_index(np.array([0, 11, 19]), "cbct", strict=False).tolist() == [0, 1, 0]
    with pytest.raises(InvalidInputError, match="not an FDI tooth number"):
        fdi.tooth(19)
    with pytest.raises(InvalidInputError, match="class index out of range"):
        fdi.class_index_to_fdi(np.array([34]), "cbct")


def test_teeth_of_jaw_are_in_arch_order():
    """From the patient's right third molar to the left third molar."""
    assert fdi.teeth_of_jaw("upper") == (18, 17, 16, 15, 14, 13, 12, 11, 21, 22, 23, 24, 25, 26, 27, 28)
    assert fdi.teeth_of_jaw("lower")[:2] == (48, 47) and fdi.teeth_of_jaw("lower")[-1] == 38
