"""Structures other than teeth that a CBCT model may segment: jaws, canals, sinuses, the airway
and dental restorations. They are never tooth numbers.

Public CBCT tooth models trained on ToothFairy2/3 (nnU-Net results folders) also segment these;
ToothMCL keeps each as its own named segment with its own label value, colour and terminology,
next to the teeth (FDI 11..48) and metal (99) of our own models.

**Label values** are ToothFairy2/3's own ids: 1..10 and 103..105. No FDI number (11..48,
51..85) nor metal (99) is among them, so a label map can hold teeth and structures at once and a
ToothFairy2 label map reads the same way.

**Codes.** Each structure carries a DICOM-style coded category and type for Slicer's
terminology (``scheme^value^meaning``) and, for paired structures, a left/right modifier:

- SNOMED CT (``SCT``): anatomical structure 123037004, physical object 260787004, mandible
  91609006, maxilla 70925003, maxillary sinus 15924003, pharynx 54066008, implant 40388003,
  left 7771000, right 24028007.
- The inferior alveolar, incisive and lingual canals, a bridge and a crown have no SNOMED CT
  code we could confirm from a primary source when this was written; rather than guess a
  concept id, they carry codes of a private coding scheme, ``99TOOTHMCL`` (DICOM reserves
  designators starting with "99" for private schemes), whose meanings are spelled out. A
  segment is recognised on reading by its name first, so renaming a code later breaks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInputError

#: DICOM private coding scheme of the codes we could not confirm in SNOMED CT
PRIVATE_SCHEME = "99TOOTHMCL"
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
PHYSICAL_OBJECT = ("SCT", "260787004", "Physical object")
LEFT = ("SCT", "7771000", "Left")
RIGHT = ("SCT", "24028007", "Right")


@dataclass(frozen=True)
class Structure:
    """One non-tooth structure.

    Attributes:
        value: label value (ToothFairy2/3 id).
        name: segment name, e.g. "left inferior alveolar canal".
        category: coded category ``(scheme, value, meaning)``.
        type: coded type.
        modifier: coded laterality (:data:`LEFT` / :data:`RIGHT`) or None.
        color: display colour, (r, g, b) floats in [0, 1].
        restoration: True for bridges, crowns and implants (man-made, metal or ceramic).
    """

    value: int
    name: str
    category: tuple[str, str, str]
    type: tuple[str, str, str]
    modifier: tuple[str, str, str] | None
    color: tuple[float, float, float]
    restoration: bool = False


def _private(code: str, meaning: str) -> tuple[str, str, str]:
    return (PRIVATE_SCHEME, code, meaning)


_CANAL = _private("IAC", "Inferior alveolar canal")
_INCISIVE = _private("MIC", "Mandibular incisive canal")
_SINUS = ("SCT", "15924003", "Maxillary sinus")

#: label value -> structure
STRUCTURES: dict[int, Structure] = {s.value: s for s in (
    Structure(1, "lower jawbone", ANATOMICAL_STRUCTURE, ("SCT", "91609006", "Mandible"), None, (0.83, 0.63, 0.90)),
    Structure(2, "upper jawbone", ANATOMICAL_STRUCTURE, ("SCT", "70925003", "Maxilla"), None, (0.89, 0.87, 0.56)),
    Structure(3, "left inferior alveolar canal", ANATOMICAL_STRUCTURE, _CANAL, LEFT, (0.85, 0.40, 0.31)),
    Structure(4, "right inferior alveolar canal", ANATOMICAL_STRUCTURE, _CANAL, RIGHT, (0.95, 0.55, 0.20)),
    Structure(5, "left maxillary sinus", ANATOMICAL_STRUCTURE, _SINUS, LEFT, (0.40, 0.62, 0.90)),
    Structure(6, "right maxillary sinus", ANATOMICAL_STRUCTURE, _SINUS, RIGHT, (0.30, 0.78, 0.85)),
    Structure(7, "pharynx", ANATOMICAL_STRUCTURE, ("SCT", "54066008", "Pharynx"), None, (0.55, 0.80, 0.95)),
    Structure(8, "bridge", PHYSICAL_OBJECT, _private("BRIDGE", "Dental bridge"), None, (0.80, 0.80, 0.70), True),
    Structure(9, "crown", PHYSICAL_OBJECT, _private("CROWN", "Dental crown"), None, (0.90, 0.85, 0.60), True),
    Structure(10, "implant", PHYSICAL_OBJECT, ("SCT", "40388003", "Implant"), None, (0.65, 0.65, 0.72), True),
    Structure(103, "left mandibular incisive canal", ANATOMICAL_STRUCTURE, _INCISIVE, LEFT, (0.80, 0.35, 0.45)),
    Structure(104, "right mandibular incisive canal", ANATOMICAL_STRUCTURE, _INCISIVE, RIGHT, (0.90, 0.45, 0.55)),
    Structure(105, "lingual canal", ANATOMICAL_STRUCTURE, _private("LC", "Lingual canal"), None, (0.75, 0.30, 0.60)),
)}
_BY_NAME = {s.name: s.value for s in STRUCTURES.values()}
_BY_CODE = {(s.type[1], s.modifier[1] if s.modifier else ""): s.value for s in STRUCTURES.values()}


def is_structure(value: int) -> bool:
    """True for the label value of a non-tooth structure."""
    return int(value) in STRUCTURES


def structure(value: int) -> Structure:
    """The structure of a label value.

    Raises:
        InvalidInputError: ``value`` is not one (see :data:`STRUCTURES`).
    """
    try:
        return STRUCTURES[int(value)]
    except KeyError:
        raise InvalidInputError(f"{value} is not the label value of a structure (known: "
                                f"{sorted(STRUCTURES)})") from None


def value_of_name(name: str) -> int | None:
    """The label value of a structure's segment name (case and spacing ignored), or None."""
    return _BY_NAME.get(" ".join(str(name).lower().split()))


def value_of_code(type_code: str, modifier_code: str = "") -> int | None:
    """The label value of a coded type (and laterality modifier), or None."""
    return _BY_CODE.get((str(type_code), str(modifier_code or "")))
