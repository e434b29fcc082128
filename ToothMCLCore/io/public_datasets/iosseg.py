"""3D-IOSSeg (Li et al., Comput. Biol. Med. 168, 107821, 2024; 180 scans of 90 patients) -> :class:`IOSRecord`.

Release: https://github.com/MIVRC/Fast-TGCN-Pytorch-main (the paper's Table A1 link) and
https://github.com/MIVRC/Fast-TGCN; the data itself behind https://reurl.cc/0vjLXY (not readable
here). What was read:

- the dataset README (a copy of "3D-IOSSeg Dataset" found in a public repository): 3Shape
  Trios scans, one PLY per jaw "that consist of a header, a list of vertex, and a list of face
  ... vertex data (spatial coordinates and normal vectors) and mesh data (vertex numbers and
  color labels)"; 32 tooth categories; training set 60 patients (120 files), test set 30
  patients (60 files); files named "Index_L/U"; an original and a downsampled version exist;
- ``dataloader.py`` of Fast-TGCN (commit ca77ee1): vertex ``x y z nx ny nz``; face
  ``vertex_indices`` + ``red green blue`` (+ ``alpha``); the class of a face is the index of its
  colour in a 33-colour table, and public forks show the table is two palettes of 16: the upper
  jaw's (red 255,0,0; yellow 255,255,0; ...), the lower jaw's (255,48,48; 0,191,255; ...), and
  white 255,255,255 shared by both jaws (gingiva). Files look like ``061_L.ply``, ``007_U.ply``
  in ``train``/``test`` folders (or ``train-U``, ``train-L`` ...).

**Which colour is which tooth is published nowhere we could read.** What we assume (and why):

- each palette lists one quadrant from the central incisor (1) to the third molar (8), then
  the other quadrant: the authors' 14-tooth variant of the loader drops exactly palette entries
  8 and 16 of both jaws, i.e. the third molars;
- which quadrant comes first is decided per scan from the geometry (``sides="geometry"``,
  default): the occlusal direction of the scan, the incisor-to-molar direction of the labelled
  teeth and the handedness of 3-D space tell the patient's right from left whatever the scan's
  coordinate frame (only a mirrored scan would fool it). When the geometry cannot decide (a
  scan without incisors or molars, or no clear occlusal side), FDI order is used: upper palette
  = 11..18 then 21..28, lower = 31..38 then 41..48 (``sides="palette"`` always uses it).

So the tooth *groups* (incisor .. third molar) follow from the evidence above, the *sides* from
geometry; the mapping as a whole is **unverified** against the dataset authors. Per-face labels
become per-vertex labels by the majority of the faces around each vertex (a vertex on a tooth
border tied between gingiva and a tooth joins the tooth).

**Patients**: ``<Index>``; ``<Index>_U`` and ``<Index>_L`` share ``patient_id``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...errors import InvalidInputError
from ..dataset_records import IOSRecord
from ._common import handle_unpaired, ios_record, require_folder, vertex_votes

logger = logging.getLogger(__name__)

NAME = "3D-IOSSeg"
SOURCE = ("Fast-TGCN dataloader.py colour table (github.com/MIVRC/Fast-TGCN-Pytorch-main) and the 3D-IOSSeg "
          "README; colour -> FDI not published: positions inferred, sides from geometry (unverified)")
LAYOUT = "<Index>_U.ply / <Index>_L.ply (face colours = labels), anywhere under ROOT"

#: face colours of the upper jaw's 16 teeth, then the lower jaw's, as in Fast-TGCN's loader
UPPER_PALETTE = ((255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255), (0, 0, 255), (255, 0, 255),
                 (30, 144, 255), (0, 255, 127), (127, 255, 0), (255, 246, 143), (60, 179, 113),
                 (255, 106, 106), (131, 111, 255), (255, 211, 155), (255, 99, 71), (155, 48, 255))
LOWER_PALETTE = ((255, 48, 48), (0, 191, 255), (255, 165, 0), (202, 255, 112), (200, 255, 255),
                 (255, 228, 255), (255, 155, 255), (255, 69, 0), (139, 0, 0), (144, 238, 144),
                 (0, 139, 139), (0, 0, 139), (139, 0, 139), (255, 105, 180), (230, 230, 250),
                 (255, 228, 181))
GINGIVA_COLOR = (255, 255, 255)
#: quadrants of the first and second palette half in FDI order (``sides="palette"``)
PALETTE_QUADRANTS = {"upper": (1, 2), "lower": (3, 4)}
#: the geometry decides the sides only when the two halves lie this far apart across the midline (mm)
MIN_SIDE_SEPARATION_MM = 2.0
_SCAN = re.compile(r"^(?P<index>.+)_(?P<jaw>[LU])\.ply$", re.IGNORECASE)


def find_cases(root, skip_unpaired: bool = False) -> list[tuple[str, str, Path]]:
    """``[(index, jaw, ply), ...]`` by index, upper first.

    Raises:
        InvalidInputError: no scans, PLY files whose name does not give the jaw, or a scan found
            twice (unless ``skip_unpaired``).
    """
    root = require_folder(root, NAME, LAYOUT)
    found: dict[tuple[str, str], list[Path]] = {}
    problems = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() != ".ply" or not path.is_file():
            continue
        match = _SCAN.match(path.name)
        if not match:
            problems.append(f"{path.relative_to(root)} is not named <Index>_U.ply or <Index>_L.ply")
            continue
        jaw = "upper" if match.group("jaw").upper() == "U" else "lower"
        found.setdefault((match.group("index"), jaw), []).append(path)
    problems += [f"{k[0]}_{k[1][0].upper()}.ply found {len(p)} times ({', '.join(str(x.relative_to(root)) for x in p[:3])}): "
                 "keep one copy (point ROOT at the original or at the downsampled version)"
                 for k, p in found.items() if len(p) > 1]
    if not found:
        raise InvalidInputError(f"{root}: no <Index>_U.ply or <Index>_L.ply found; expected {LAYOUT}")
    handle_unpaired(problems, NAME, skip_unpaired)
    return [(k[0], k[1], p[0]) for k, p in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] != "upper"))
            if len(p) == 1]


def _rgb(code) -> tuple[int, int, int]:
    code = int(code)
    return code // 65536, code // 256 % 256, code % 256


def face_classes(colors: np.ndarray, jaw: str, source: str, unknown_colors: str = "error") -> np.ndarray:
    """(M,) class per face: 0 gingiva (white), 1..16 the jaw's palette entries in order.

    Raises:
        InvalidInputError: colours of the other jaw's palette, or unknown colours (unless
            ``unknown_colors="gingiva"``).
    """
    palette = UPPER_PALETTE if jaw == "upper" else LOWER_PALETTE
    other = LOWER_PALETTE if jaw == "upper" else UPPER_PALETTE
    key = colors[:, 0] * 65536 + colors[:, 1] * 256 + colors[:, 2]
    codes = {c[0] * 65536 + c[1] * 256 + c[2]: i for i, c in enumerate((GINGIVA_COLOR,) + palette)}
    other_codes = {c[0] * 65536 + c[1] * 256 + c[2] for c in other}
    out = np.zeros(len(key), dtype=np.int64)
    values, inverse = np.unique(key, return_inverse=True)
    unknown = []
    for n, value in enumerate(values):
        if int(value) in codes:
            out[inverse == n] = codes[int(value)]
        elif int(value) in other_codes and unknown_colors == "error":
            raise InvalidInputError(
                f"{source}: faces coloured RGB{_rgb(value)} "
                f"belong to the {'lower' if jaw == 'upper' else 'upper'} jaw's palette but the file name says "
                f"{jaw} jaw; check the _U/_L suffix of the file"
            )
        else:
            unknown.append((*_rgb(value), int(np.sum(inverse == n))))
    if unknown and unknown_colors == "error":
        shown = ", ".join(f"RGB{c[:3]} on {c[3]} faces" for c in unknown[:5])
        raise InvalidInputError(f"{source}: face colours {shown} are not 3D-IOSSeg label colours; pass "
                                "unknown_colors=gingiva (CLI: --option unknown_colors=gingiva) to count them as "
                                "gingiva, or check the file")
    if unknown:
        logger.warning("%s: %s: %d faces with unknown colours counted as gingiva", NAME, source,
                       sum(c[3] for c in unknown))
    return out


def _superior(mesh, normals, jaw: str) -> np.ndarray | None:
    from ..mesh import occlusal_direction

    occlusal = occlusal_direction(mesh, normals)
    if occlusal is None:
        return None
    return -occlusal if jaw == "upper" else occlusal


def first_half_is_right(vertices: np.ndarray, classes: np.ndarray, superior: np.ndarray | None) -> bool | None:
    """Whether palette entries 1..8 lie on the patient's right, from geometry; None if unclear.

    Args:
        vertices: (N, 3) mm. classes: (N,) palette class per vertex (0 gingiva, 1..16).
        superior: unit vector towards the patient's head (None: undecided).
    """
    if superior is None:
        return None
    position = (classes - 1) % 8 + 1
    teeth = classes > 0
    front, back = teeth & (position <= 2), teeth & (position >= 6)
    if not front.any() or not back.any():
        return None
    anterior = vertices[front].mean(0) - vertices[back].mean(0)
    right = np.cross(anterior, superior)  # RAS is right-handed: R = A x S
    norm = np.linalg.norm(right)
    if norm < 1e-9:
        return None
    right /= norm
    first, second = teeth & (classes <= 8), teeth & (classes > 8)
    if first.any() and second.any():
        score = (vertices[first].mean(0) - vertices[second].mean(0)) @ right
    else:
        half = first if first.any() else second
        score = (vertices[half].mean(0) - vertices.mean(0)) @ right * (1 if first.any() else -1)
    if abs(score) < MIN_SIDE_SEPARATION_MM:
        return None
    return bool(score > 0)


def class_to_fdi(jaw: str, first_is_right: bool) -> np.ndarray:
    """(17,) FDI of each class: 0 gingiva, then the two palette halves' quadrants."""
    right, left = {"upper": (1, 2), "lower": (4, 3)}[jaw]
    q1, q2 = (right, left) if first_is_right else (left, right)
    return np.array([0] + [q1 * 10 + p for p in range(1, 9)] + [q2 * 10 + p for p in range(1, 9)], dtype=np.int32)


def convert_scan(path, jaw: str, sides: str = "geometry", unknown_colors: str = "error"):
    """Read one 3D-IOSSeg PLY: ``(MeshReadResult, (N,) FDI labels on the cleaned mesh, info)``.

    The scan is read as every scan is (:func:`~ToothMCLCore.io.mesh.read_mesh`: cleaned, units
    checked); its face colours come with it, one per cleaned triangle, and every vertex takes
    the majority class of its faces.

    Raises:
        InvalidInputError: an unreadable or foreign file, no colour per triangle, or an unknown colour.
    """
    from ..mesh import read_mesh

    path = Path(path)
    try:
        result = read_mesh(path)
    except InvalidInputError as exc:
        if "--units" not in str(exc):
            raise
        # read_mesh's advice is segment-ios's option; a dataset is converted as published, in mm
        raise InvalidInputError(f"{str(exc).split('; ')[0]}; 3D-IOSSeg scans are published in millimetres, so this "
                                "file is not one of them as released: scale it to millimetres or leave it out") from None
    colors = result.face_data.get("rgb")
    if colors is None:
        raise InvalidInputError(f"{path.name} has no colour per triangle (face red, green, blue); 3D-IOSSeg stores "
                                "its labels as face colours of a triangle mesh: use the labelled release")
    classes = vertex_votes(result.mesh.n_vertices, result.mesh.faces,
                           face_classes(colors, jaw, path.name, unknown_colors), 17)
    decided = None
    if sides == "geometry":
        decided = first_half_is_right(result.mesh.vertices_ras, classes,
                                      _superior(result.mesh, result.normals, jaw))
    first_is_right = decided if decided is not None else jaw == "upper"  # FDI order: 11.. / 31.. first
    how = ("geometry" if decided is not None else
           "palette order" + (" (geometry undecided)" if sides == "geometry" else ""))
    labels = class_to_fdi(jaw, first_is_right)[classes]
    return result, labels, {"sides": how, "first_palette_half": "right" if first_is_right else "left"}


def iter_iosseg(root, *, sides: str = "geometry", unknown_colors: str = "error",
                skip_unpaired: bool = False) -> Iterator[IOSRecord]:
    """Yield every 3D-IOSSeg scan with FDI labels (mapping partly unverified: see above).

    Args:
        root: folder holding the PLY files (searched recursively, e.g. ``train/`` and ``test/``).
        sides: ``"geometry"`` (default) or ``"palette"``; how to tell right from left.
        unknown_colors: ``"error"`` (default) or ``"gingiva"`` for faces of other colours.
        skip_unpaired: leave out PLY files with unexpected names or found twice.

    Yields:
        :class:`IOSRecord` per scan: ``case_id`` ``<Index>_<jaw>``, ``patient_id`` ``<Index>``.
    """
    if sides not in ("geometry", "palette"):
        raise InvalidInputError(f"sides must be 'geometry' or 'palette' (got {sides!r})")
    if unknown_colors not in ("error", "gingiva"):
        raise InvalidInputError(f"unknown_colors must be 'error' or 'gingiva' (got {unknown_colors!r})")
    for index, jaw, path in find_cases(root, skip_unpaired):
        result, labels, info = convert_scan(path, jaw, sides, unknown_colors)
        if info["sides"] != "geometry":
            logger.warning("%s: %s: sides from %s", NAME, path.name, info["sides"])
        yield ios_record(f"{index}_{jaw}", index, jaw, result, labels, None, str(path),
                         {"dataset": NAME, "mapping": "unverified (see ToothMCLCore.io.public_datasets.iosseg)",
                          **info})
