"""Converters from the public datasets of the ToothMCL paper (Table A1) to our records.

Each converter is ``iter_<dataset>(root, **options)``: it finds the cases in the dataset's
published folder layout, checks the layout before reading anything (missing or ambiguous files
raise :class:`~ToothMCLCore.errors.InvalidInputError` naming them, unless
``skip_unpaired=True``), reads each case with our readers, maps the dataset's label ids to ours
(FDI numbers, 0 background/gingiva, 99 metal/restoration) and yields a
:class:`~ToothMCLCore.io.dataset_records.CBCTRecord` or
:class:`~ToothMCLCore.io.dataset_records.IOSRecord` whose ``patient_id`` keeps a patient's scans
together in a split. :func:`ToothMCLCore.io.dataset_layout.write_dataset` writes them out;
``toothmcl convert-dataset`` does both.

Each module's docstring gives the layout, the label mapping, and where both were read;
``CONVERTERS[name].source`` says it in one line. Verified against public sources: ToothFairy2
(label table), Teeth3DS (format). From the dataset's own preprocessing code: TADPM. Checked scan
by scan against its geometry: MeshSegNet (ids in arch order, numbered from the midline). Inferred,
not confirmed by the authors: Cui et al. (layout and labels), 3D-IOSSeg (colour -> tooth).

Importing this package is cheap: readers and heavy dependencies load when a converter runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import cui, iosseg, meshsegnet, tadpm, teeth3ds, toothfairy2
from .cui import iter_cui
from .iosseg import iter_iosseg
from .meshsegnet import iter_meshsegnet
from .tadpm import iter_tadpm
from .teeth3ds import iter_teeth3ds
from .toothfairy2 import iter_toothfairy2


class Converter(NamedTuple):
    """One registry entry: ``(function, modality, description, source)``."""

    function: Callable
    modality: str  # "cbct" or "ios"
    description: str
    source: str


#: dataset name (as typed on the command line) -> converter
CONVERTERS: dict[str, Converter] = {
    "toothfairy2": Converter(iter_toothfairy2, "cbct",
                             f"ToothFairy2/3 CBCT (480 cases): {toothfairy2.LAYOUT}", toothfairy2.SOURCE),
    "cui": Converter(iter_cui, "cbct", f"Cui et al. 2022 CBCT (~150 cases): {cui.LAYOUT}", cui.SOURCE),
    "teeth3ds": Converter(iter_teeth3ds, "ios", f"Teeth3DS/3DTeethSeg'22 (1,800 scans): {teeth3ds.LAYOUT}",
                          teeth3ds.SOURCE),
    "tadpm": Converter(iter_tadpm, "ios", f"TADPM orthodontic pairs (2,120 models): {tadpm.LAYOUT}",
                       tadpm.SOURCE),
    "3d-iosseg": Converter(iter_iosseg, "ios", f"3D-IOSSeg (180 scans): {iosseg.LAYOUT}", iosseg.SOURCE),
    "meshsegnet": Converter(iter_meshsegnet, "ios", f"MeshSegNet real scans (72 scans of 36 patients): "
                            f"{meshsegnet.LAYOUT}", meshsegnet.SOURCE),
}

__all__ = ["CONVERTERS", "Converter", "iter_cui", "iter_iosseg", "iter_meshsegnet", "iter_tadpm", "iter_teeth3ds",
           "iter_toothfairy2"]
