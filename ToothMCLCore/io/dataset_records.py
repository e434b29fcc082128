"""One labelled case on its way into a training set, whatever it came from.

The corrections store (``toothmcl export-dataset``) and the public-dataset converters
(``toothmcl convert-dataset``) both produce these records, and one writer
(:mod:`ToothMCLCore.io.dataset_layout`) turns them into our dataset layout. So a corrected case
and a converted ToothFairy2 case land on disk in exactly the same form, and the training code
reads both the same way.

Labels are always our values: FDI numbers (11..48, 51..85), 0 background (CBCT) or gingiva
(IOS), 99 metal/restoration (CBCT only). A record with anything else is a converter bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..types import SurfaceMesh, Volume


@dataclass
class CBCTRecord:
    """A CBCT volume and its FDI label map on the same grid.

    Attributes:
        case_id: unique within the dataset, file-name safe (``[A-Za-z0-9_.-]``).
        patient_id: the patient; splits never separate two cases of one patient.
        image: the CBCT intensities (HU or scanner units), geometry in RAS.
        labels: FDI label map with exactly ``image``'s shape and geometry.
        source: where it came from (a path, ``store:case@revision``), for the manifest.
        metadata: anything else worth keeping (kept in the manifest, JSON-serialisable).
        interactions: the annotator's click-tool interactions that led to these labels (the
            ``{"op": "interactive", ...}`` operations of the store's revisions, each with its
            ``revision``), written beside the case (:mod:`~ToothMCLCore.io.dataset_layout`).
    """

    case_id: str
    patient_id: str
    image: Volume
    labels: Volume
    source: str = ""
    metadata: dict = field(default_factory=dict)
    interactions: list = field(default_factory=list)


@dataclass
class IOSRecord:
    """One jaw of an intraoral scan with per-vertex FDI labels and instances.

    Attributes:
        case_id: unique within the dataset, file-name safe; the Teeth3DS habit is
            ``<patient>_<jaw>``.
        patient_id: the patient; both jaws of a patient always fall in the same split.
        jaw: ``"upper"`` or ``"lower"``.
        mesh: vertices (mm, RAS) and faces, in the file order the labels follow.
        labels: ``(N,)`` int FDI per vertex, 0 = gingiva.
        instances: ``(N,)`` int instance per vertex, 0 = gingiva.
        source, metadata, interactions: as for :class:`CBCTRecord`.
    """

    case_id: str
    patient_id: str
    jaw: str
    mesh: SurfaceMesh
    labels: object
    instances: object
    source: str = ""
    metadata: dict = field(default_factory=dict)
    interactions: list = field(default_factory=list)
