"""ToothFairy2 (MICCAI 2024 challenge, 480 labelled CBCT) -> :class:`CBCTRecord` with FDI labels.

**Published layout** (nnU-Net v2 raw dataset, as downloaded from
https://ditto.ing.unimore.it/toothfairy2/ and described in the README of
https://github.com/AImageLab-zip/ToothFairy2-Benchmark, "Data Preparation")::

    Dataset112_ToothFairy2/
        dataset.json                        labels (name -> id), file_ending ".mha", channel_names
        imagesTr/ToothFairy2F_001_0000.mha  the CBCT (channel 0)
        labelsTr/ToothFairy2F_001.mha       the label map on the same grid
        ...                                 cases ToothFairy2F_nnn and ToothFairy2P_nnn (two cohorts)

``root`` may be that folder or the folder holding it. Case names were read in public code that
loads the release (e.g. ``labelsTr/ToothFairy2P_001.mha``, ``imagesTr/ToothFairy2F_001_0000.mha``).

**Label ids** (``dataset.json`` of the release; the same table is copied in the benchmark's
``evaluation/Dataset119_ToothFairy2/evaluation.py`` "Labels as specified in the dataset.json
file", with placeholders ``NA1``..``NA6`` at 19, 20, 29, 30, 39, 40)::

    0 background         1 Lower Jawbone                  2 Upper Jawbone
    3 Left Inferior Alveolar Canal    4 Right Inferior Alveolar Canal
    5 Left Maxillary Sinus            6 Right Maxillary Sinus      7 Pharynx
    8 Bridge             9 Crown                          10 Implant
    11..18 Upper Right Central Incisor .. Upper Right Third Molar (Wisdom Tooth)
    21..28 Upper Left ..., 31..38 Lower Left ..., 41..48 Lower Right ...

The tooth ids *are* FDI numbers. The ToothFairy3 release (MICCAI 2025) adds
``103 Left Mandibular Incisive Canal``, ``104 Right Mandibular Incisive Canal``,
``105 Lingual Canal`` and a pulp label per tooth, ``1xy "<tooth> Pulp"`` (111..148).

**Our mapping**, made from the *names* in the ``dataset.json`` found next to the data (so a
renumbered release still converts right, and an unknown name is refused):

- each tooth name -> its FDI number (from the name; equal to the id in the release);
- ``<tooth> Pulp`` -> that tooth's FDI number (our tooth label includes its pulp);
- ``Bridge``, ``Crown``, ``Implant`` -> 99 "metal/restoration" (``restorations="metal"``, the
  default) or 0 (``restorations="background"``). They are dental restorations, the class our
  CBCT models call metal; the tooth a crown sits on keeps its own FDI label;
- jawbones, inferior alveolar canals, maxillary sinuses, pharynx (and the ToothFairy3 incisive
  and lingual canals), ``background`` and the ``NA`` placeholders -> 0: we segment teeth only.

**Patients.** The release has no patient key besides the case name; every case is taken as its
own patient (``patient_id == case_id``). Whether one person appears in both cohorts (F and P) is
not stated anywhere we could read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ... import fdi, structures
from ...errors import InvalidInputError
from ...types import Volume
from ..dataset_records import CBCTRecord
from ._common import (
    apply_label_table,
    check_same_grid,
    handle_unpaired,
    read_label_volume,
    require_folder,
    safe_id,
)

logger = logging.getLogger(__name__)

NAME = "ToothFairy2"
SOURCE = ("dataset.json of the release (https://ditto.ing.unimore.it/toothfairy2/); table copied in "
          "github.com/AImageLab-zip/ToothFairy2-Benchmark evaluation/Dataset119_ToothFairy2/evaluation.py")
LAYOUT = "dataset.json, imagesTr/<case>_0000.mha and labelsTr/<case>.mha (nnU-Net v2 Dataset112_ToothFairy2)"

_POSITIONS = ("central incisor", "lateral incisor", "canine", "first premolar", "second premolar",
              "first molar", "second molar", "third molar")
_QUADRANTS = {("upper", "right"): 1, ("upper", "left"): 2, ("lower", "left"): 3, ("lower", "right"): 4}
_TOOTH = re.compile(r"^(upper|lower) (left|right) (" + "|".join(_POSITIONS) + r")(?: \(wisdom tooth\))?( pulp)?$")
_RESTORATIONS = ("bridge", "crown", "implant")
_BACKGROUND = ("background", "lower jawbone", "upper jawbone", "left inferior alveolar canal",
               "right inferior alveolar canal", "left maxillary sinus", "right maxillary sinus", "pharynx",
               "left mandibular incisive canal", "right mandibular incisive canal", "lingual canal")
_PLACEHOLDER = re.compile(r"^na\d*$")


def label_table(labels: dict, restorations: str = "metal", source: str = "dataset.json",
                keep_structures: bool = False) -> dict[int, int]:
    """Dataset id -> our value for the ``labels`` entry of a ToothFairy2/3 ``dataset.json``.

    With ``keep_structures`` every non-tooth structure (jaws, canals, sinuses, pharynx, bridge,
    crown, implant) keeps a label value of its own (:mod:`ToothMCLCore.structures`), whatever
    ``restorations`` says: what a model's output becomes. Without it they follow the module
    docstring: what training data for our 34-class CBCT models becomes.

    Raises:
        InvalidInputError: a name this converter does not know, or a region (list) label.
    """
    if restorations not in ("metal", "background"):
        raise InvalidInputError(f"restorations must be 'metal' or 'background' (got {restorations!r})")
    if not isinstance(labels, dict) or not labels:
        raise InvalidInputError(f"{source}: 'labels' must map label names to ids; is this the "
                                "dataset.json of ToothFairy2?")
    table, unknown = {}, []
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{source}: label {name!r} has id {value!r}; expected one integer per "
                                    "name (region labels are not ToothFairy2's layout)")
        key = " ".join(str(name).lower().split())
        match = _TOOTH.match(key)
        if keep_structures and (structure := structures.value_of_name(key)) is not None:
            table[value] = structure
        elif match:
            jaw, side, kind = match.group(1), match.group(2), match.group(3)
            table[value] = _QUADRANTS[(jaw, side)] * 10 + _POSITIONS.index(kind) + 1
        elif key in _RESTORATIONS:
            table[value] = fdi.METAL_LABEL if restorations == "metal" else 0
        elif key in _BACKGROUND or _PLACEHOLDER.match(key):
            table[value] = 0
        else:
            unknown.append(f"{name!r} ({value})")
    if unknown:
        raise InvalidInputError(
            f"{source}: labels {', '.join(unknown[:8])} are not ToothFairy2/ToothFairy3 structures this "
            "converter knows; check that this is the dataset.json of the release"
        )
    return table


def _dataset_folder(root: Path) -> Path:
    if (root / "dataset.json").is_file():
        return root
    found = sorted(d for d in root.iterdir()
                   if d.is_dir() and (d / "dataset.json").is_file() and "toothfairy" in d.name.lower())
    if len(found) == 1:
        return found[0]
    names = ", ".join(d.name for d in found) or "none"
    raise InvalidInputError(
        f"{root} holds no dataset.json (expected the nnU-Net folder Dataset112_ToothFairy2 with "
        f"{LAYOUT}; ToothFairy2 folders found inside: {names}); point ROOT at the extracted dataset folder"
    )


def _read_dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid JSON ({exc}); restore it from the download") from None
    if not isinstance(doc, dict) or "labels" not in doc:
        raise InvalidInputError(f"{path} has no 'labels' entry; restore the dataset.json of the release")
    channels = doc.get("channel_names", doc.get("modality", {"0": "CBCT"}))
    if isinstance(channels, dict) and len(channels) != 1:
        raise InvalidInputError(f"{path}: expected one image channel (CBCT), found {len(channels)}: "
                                f"{sorted(channels.values())}; this is not the ToothFairy2 release")
    return doc


def find_cases(root, skip_unpaired: bool = False) -> tuple[Path, dict, list[tuple[str, Path, Path]]]:
    """Locate the cases: ``(dataset folder, dataset.json, [(case, image, label), ...])``.

    Raises:
        InvalidInputError: no dataset.json, missing folders, unpaired files (unless
            ``skip_unpaired``), or images with more than one channel.
    """
    folder = _dataset_folder(require_folder(root, NAME, LAYOUT))
    doc = _read_dataset_json(folder)
    ending = str(doc.get("file_ending", ".mha"))
    for sub in ("imagesTr", "labelsTr"):
        if not (folder / sub).is_dir():
            raise InvalidInputError(f"{folder} has no {sub}/ folder; expected {LAYOUT}; extract the whole "
                                    "download")
    images, extra_channels = {}, []
    for path in sorted((folder / "imagesTr").glob(f"*{ending}")):
        stem = path.name[: -len(ending)]
        if stem.endswith("_0000"):
            images[stem[:-5]] = path
        else:
            extra_channels.append(path.name)
    if extra_channels:
        raise InvalidInputError(f"{folder / 'imagesTr'} holds files that are not channel 0 "
                                f"({', '.join(extra_channels[:3])}); ToothFairy2 has one CBCT channel per case")
    labels = {path.name[: -len(ending)]: path for path in sorted((folder / "labelsTr").glob(f"*{ending}"))}
    problems = [f"imagesTr/{images[c].name} has no label labelsTr/{c}{ending}" for c in images if c not in labels]
    problems += [f"labelsTr/{labels[c].name} has no image imagesTr/{c}_0000{ending}" for c in labels
                 if c not in images]
    handle_unpaired(problems, NAME, skip_unpaired)
    cases = [(c, images[c], labels[c]) for c in sorted(images) if c in labels]
    if not cases:
        raise InvalidInputError(f"{folder}: no image/label pairs with ending {ending!r} in imagesTr/ and "
                                f"labelsTr/; expected {LAYOUT}")
    expected = doc.get("numTraining")
    if isinstance(expected, int) and expected != len(cases):
        logger.warning("%s: dataset.json announces %d training cases, %d pairs found", folder, expected,
                       len(cases))
    return folder, doc, cases


def iter_toothfairy2(root, *, restorations: str = "metal", skip_unpaired: bool = False) -> Iterator[CBCTRecord]:
    """Yield every labelled ToothFairy2 (or ToothFairy3) case with FDI labels.

    Args:
        root: the ``Dataset112_ToothFairy2`` folder (or the folder holding it).
        restorations: ``"metal"`` (default) maps Bridge, Crown and Implant to 99, ``"background"``
            to 0.
        skip_unpaired: leave out an image without a label (or the reverse) instead of raising.

    Yields:
        :class:`CBCTRecord` per case, in case-name order; ``patient_id`` is the case name.

    Raises:
        InvalidInputError: layout problems (raised before the first case is read), unreadable
            files, a label map not on its image's grid, or a label id missing from dataset.json.
    """
    folder, doc, cases = find_cases(root, skip_unpaired)
    table = label_table(doc["labels"], restorations, str(folder / "dataset.json"))
    names = {int(v): str(k) for k, v in doc["labels"].items()}
    from ..volume import read_volume

    for case, image_path, label_path in cases:
        image = read_volume(image_path)
        labels = read_label_volume(label_path)
        check_same_grid(image, labels, label_path)
        mapped, counts = apply_label_table(labels.array, table, label_path.name, NAME,
                                           f"the labels of {folder.name}/dataset.json")
        teeth = fdi.present_teeth(table[v] for v in counts)
        if not teeth:
            logger.warning("%s: %s has no tooth label", NAME, label_path.name)
        cohort = re.match(r"^ToothFairy\d*([A-Za-z])_", case)
        metadata = {
            "dataset": NAME, "case": case, "cohort": cohort.group(1) if cohort else "",
            "teeth": teeth,
            "restoration_voxels": int(sum(n for v, n in counts.items() if table[v] == fdi.METAL_LABEL)),
            "to_background": sorted(names.get(v, str(v)) for v in counts if table[v] == 0 and v != 0),
        }
        yield CBCTRecord(
            case_id=safe_id(case), patient_id=safe_id(case), image=image,
            labels=Volume(array=mapped.astype(np.uint8), geometry=image.geometry, source=str(label_path)),
            source=str(label_path), metadata=metadata,
        )
