"""FDI (ISO 3950) tooth numbering: the single source of truth for tooth identity.

Everything that knows which tooth a number means asks this module: names, quadrants, arch
order, tooth groups (the ToothMCL paper's T1..T8), display colours, SNOMED CT codes for the
Slicer terminology, and the mapping between network class indices and FDI label values.

Class-index schemes (``class_index`` is a network output channel, never an FDI number):

``"cbct"`` (34 channels)
    0 background; 1..8 = FDI 11..18, 9..16 = 21..28, 17..24 = 31..38, 25..32 = 41..48;
    33 = metal / restoration. The ToothMCL paper says "up to 33 class labels for teeth, metal
    artifacts, and background"; we keep one channel per permanent tooth (32), one for metal and
    one for background, 34 in all. Metal is written with label value :data:`METAL_LABEL` (99):
    quadrant 9 does not exist in FDI, so 99 can never be mistaken for a tooth.
``"ios_upper"`` / ``"ios_lower"`` (17 channels)
    0 gingiva; 1..8 = FDI x1..x8 of the patient's right quadrant (1x upper, 4x lower);
    9..16 = the left quadrant (2x upper, 3x lower). This is the 17-class setting of the
    3DTeethSeg'22 challenge and of both papers.

SNOMED CT codes are those of DICOM CID 4018 (permanent) and CID 4019 (deciduous), which
distinguish maxillary from mandibular and left from right.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import structures
from .errors import InvalidInputError

#: label value used for metal / restorations in CBCT label maps (not an FDI number)
METAL_LABEL = 99
BACKGROUND_LABEL = 0

#: the paper's tooth groups T1..T8 (permanent position 1..8)
TOOTH_GROUPS = (
    "central incisor",
    "lateral incisor",
    "canine",
    "first premolar",
    "second premolar",
    "first molar",
    "second molar",
    "third molar",
)
_PRIMARY_GROUPS = ("central incisor", "lateral incisor", "canine", "first molar", "second molar")

_QUADRANTS = {
    1: ("upper", "right", False),
    2: ("upper", "left", False),
    3: ("lower", "left", False),
    4: ("lower", "right", False),
    5: ("upper", "right", True),
    6: ("upper", "left", True),
    7: ("lower", "left", True),
    8: ("lower", "right", True),
}

# DICOM CID 4018 / 4019 (SNOMED CT), keyed by FDI number.
_SNOMED = {
    18: 68085002, 17: 863902006, 16: 865995000, 15: 36492000, 14: 57826002, 13: 860767006,
    12: 424877001, 11: 422653006, 21: 424399000, 22: 423185002, 23: 860780009, 24: 61897005,
    25: 23226009, 26: 865988009, 27: 863901004, 28: 87704003, 38: 74344005, 37: 863898000,
    36: 866006002, 35: 24573005, 34: 2400006, 33: 860782001, 32: 423331005, 31: 425106001,
    41: 424575004, 42: 423937004, 43: 860785004, 44: 80140008, 45: 8873007, 46: 866005003,
    47: 863899008, 48: 38994002,
    51: 88824007, 52: 65624003, 53: 30618001, 54: 17505006, 55: 27855007,
    61: 51678005, 62: 43622005, 63: 73937000, 64: 45234009, 65: 51943008,
    71: 89552004, 72: 14770005, 73: 43281008, 74: 38896004, 75: 49330006,
    81: 67834006, 82: 22445006, 83: 6062009, 84: 58646007, 85: 61868007,
}

# One hue per position along the quadrant; quadrants differ in lightness and saturation so
# that neighbours across the midline and across the occlusal plane never share a colour.
_POSITION_HUES = (0.00, 0.08, 0.15, 0.30, 0.42, 0.55, 0.68, 0.80)
_QUADRANT_SV = {1: (0.75, 0.95), 2: (0.45, 1.00), 3: (0.75, 0.70), 4: (0.45, 0.80)}


@dataclass(frozen=True)
class Tooth:
    """One tooth of the FDI table.

    Attributes:
        fdi: FDI number, e.g. 36.
        name: "lower left first molar".
        quadrant: 1..8.
        arch: "upper" or "lower".
        side: the patient's "right" or "left".
        position: 1..8 counted from the midline.
        group: the paper's tooth group index 1..8 (T1 central incisor .. T8 third molar);
            for primary teeth the group of the permanent successor's kind (molars map to 6, 7).
        primary: True for deciduous teeth (quadrants 5..8).
        color: display colour, (r, g, b) floats in [0, 1].
        snomed_code: SNOMED CT concept id (DICOM CID 4018/4019).
        snomed_meaning: the concept's display text.
    """

    fdi: int
    name: str
    quadrant: int
    arch: str
    side: str
    position: int
    group: int
    primary: bool
    color: tuple[float, float, float]
    snomed_code: str
    snomed_meaning: str

    @property
    def group_name(self) -> str:
        return TOOTH_GROUPS[self.group - 1]

    @property
    def arch_index(self) -> int:
        """Signed position along the arch from the patient's right to left: -8..-1, 1..8."""
        return -self.position if self.side == "right" else self.position

    @property
    def label(self) -> str:
        """The segment name used everywhere: ``"36 lower left first molar"``."""
        return f"{self.fdi} {self.name}"


def _build_table() -> dict[int, Tooth]:
    table: dict[int, Tooth] = {}
    for quadrant, (arch, side, primary) in _QUADRANTS.items():
        groups = _PRIMARY_GROUPS if primary else TOOTH_GROUPS
        for position, kind in enumerate(groups, start=1):
            fdi = quadrant * 10 + position
            group = position if not primary else (position if position <= 3 else position + 2)
            base_q = quadrant - 4 if primary else quadrant
            s, v = _QUADRANT_SV[base_q]
            if primary:
                s *= 0.6
            color = colorsys.hsv_to_rgb(_POSITION_HUES[group - 1], s, v)
            jaw = "maxillary" if arch == "upper" else "mandibular"
            prefix = "Deciduous" if primary else ("Permanent" if arch == "upper" else "")
            meaning = " ".join(p for p in (prefix, jaw, side, kind, "tooth") if p)
            meaning = meaning[0].upper() + meaning[1:]
            table[fdi] = Tooth(
                fdi=fdi,
                name=f"{arch} {side} {'primary ' if primary else ''}{kind}",
                quadrant=quadrant,
                arch=arch,
                side=side,
                position=position,
                group=group,
                primary=primary,
                color=tuple(round(c, 4) for c in color),
                snomed_code=str(_SNOMED[fdi]),
                snomed_meaning=meaning,
            )
    return table


TEETH: dict[int, Tooth] = _build_table()
PERMANENT_FDI: tuple[int, ...] = tuple(
    q * 10 + p for q in (1, 2, 3, 4) for p in range(1, 9)
)
PRIMARY_FDI: tuple[int, ...] = tuple(q * 10 + p for q in (5, 6, 7, 8) for p in range(1, 6))
JAWS = ("upper", "lower")


def is_valid_fdi(number: int) -> bool:
    """True for a permanent or primary FDI number."""
    return int(number) in TEETH


def tooth(number: int) -> Tooth:
    """The :class:`Tooth` of an FDI number; unknown numbers raise :class:`InvalidInputError`."""
    try:
        return TEETH[int(number)]
    except (KeyError, ValueError, TypeError):
        raise InvalidInputError(
            f"{number!r} is not an FDI tooth number; use 11-18, 21-28, 31-38, 41-48 "
            "(or 51-85 for primary teeth)"
        ) from None


def teeth_of_jaw(jaw: str, primary: bool = False) -> tuple[int, ...]:
    """FDI numbers of one jaw in arch order, from the patient's right to left."""
    if jaw not in JAWS:
        raise InvalidInputError(f"jaw must be 'upper' or 'lower' (got {jaw!r})")
    pool = PRIMARY_FDI if primary else PERMANENT_FDI
    return tuple(sorted((n for n in pool if TEETH[n].arch == jaw), key=lambda n: TEETH[n].arch_index))


def jaw_of(number: int) -> str:
    return tooth(number).arch


_MIRROR_QUADRANT = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7}


def mirror(number: int) -> int:
    """The tooth of the same position in the other quadrant of the jaw (11 <-> 21, 36 <-> 46)."""
    quadrant, position = divmod(int(number), 10)
    if quadrant not in _MIRROR_QUADRANT:
        raise InvalidInputError(f"{number} is not an FDI tooth number")
    return _MIRROR_QUADRANT[quadrant] * 10 + position


# --------------------------------------------------------------------------------------------
# Class-index schemes. Nothing else in the project hard-codes these mappings.
# --------------------------------------------------------------------------------------------

def _scheme_labels(scheme: str) -> tuple[int, ...]:
    """Label value of every class index of a scheme, index order."""
    if scheme == "cbct":
        return (BACKGROUND_LABEL,) + PERMANENT_FDI + (METAL_LABEL,)
    if scheme in ("ios_upper", "ios_lower"):
        right, left = (1, 2) if scheme == "ios_upper" else (4, 3)
        return (0,) + tuple(right * 10 + p for p in range(1, 9)) + tuple(
            left * 10 + p for p in range(1, 9)
        )
    raise InvalidInputError(f"unknown class scheme {scheme!r}; use 'cbct', 'ios_upper' or 'ios_lower'")


SCHEMES = ("cbct", "ios_upper", "ios_lower")


def num_classes(scheme: str) -> int:
    """Number of network output channels of a scheme (34 for CBCT, 17 for IOS)."""
    return len(_scheme_labels(scheme))


def mirror_permutation(scheme: str) -> np.ndarray:
    """(C,) int64: class index -> index of the same class in the mirror image (x -> -x) of the
    jaw, where each tooth becomes its :func:`mirror`; background and metal stay. Index an
    array of classes with it, or the class axis of probabilities."""
    table = _scheme_labels(scheme)
    index = {v: i for i, v in enumerate(table)}
    return np.array([index[mirror(v)] if is_valid_fdi(v) else i for i, v in enumerate(table)], np.int64)


def class_index_to_fdi(class_index, scheme: str = "cbct") -> np.ndarray:
    """Map class indices (any integer array or scalar) to label values (FDI, 0, or 99).

    Raises:
        InvalidInputError: an index outside ``0 .. num_classes(scheme) - 1``.
    """
    lut = np.asarray(_scheme_labels(scheme), dtype=np.int32)
    idx = np.asarray(class_index)
    if idx.size and (idx.min() < 0 or idx.max() >= len(lut)):
        raise InvalidInputError(
            f"class index out of range for scheme {scheme!r} (0..{len(lut) - 1}, "
            f"got {int(idx.min())}..{int(idx.max())}); the weights do not match the label table"
        )
    return lut[idx]


def fdi_to_class_index(labels, scheme: str = "cbct", strict: bool = True) -> np.ndarray:
    """Map label values (FDI, 0 background/gingiva, 99 metal) to class indices.

    Args:
        labels: integer array or scalar of label values.
        scheme: class scheme.
        strict: if True, a value that the scheme does not know raises; if False it maps to 0
            (useful to train on datasets with extra structures such as jaw bone).
    """
    table = _scheme_labels(scheme)
    lut = np.full(256, -1, dtype=np.int64)
    for i, v in enumerate(table):
        lut[v] = i
    arr = np.asarray(labels).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InvalidInputError(
            f"label values must be in 0..255 (got {int(arr.min())}..{int(arr.max())}); "
            "is this a label map with FDI values?"
        )
    out = lut[arr]
    unknown = out < 0
    if unknown.any():
        if strict:
            bad = sorted(set(np.unique(arr[unknown]).tolist()))[:10]
            raise InvalidInputError(
                f"label values {bad} are not part of the {scheme!r} label table; "
                "convert the labels to FDI numbers (see ToothMCLCore.fdi)"
            )
        out = np.where(unknown, 0, out)
    return out


def label_name(value: int) -> str:
    """Human name of a label value: a tooth, metal, background, or a non-tooth structure
    (:mod:`ToothMCLCore.structures`)."""
    if value == METAL_LABEL:
        return "metal or restoration"
    if value == BACKGROUND_LABEL:
        return "background"
    if structures.is_structure(value):
        return structures.structure(value).name
    return tooth(value).name


def label_color(value: int) -> tuple[float, float, float]:
    if value == METAL_LABEL:
        return (0.75, 0.75, 0.78)
    if structures.is_structure(value):
        return structures.structure(value).color
    return tooth(value).color


def present_teeth(labels: Iterable[int]) -> list[int]:
    """Sorted FDI numbers among label values (background and metal dropped)."""
    return sorted({int(v) for v in labels if int(v) in TEETH})
