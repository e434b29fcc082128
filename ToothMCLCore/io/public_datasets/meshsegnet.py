"""MeshSegNet's real intraoral scans (Lian et al., IEEE TMI 2020; 72 scans of 36 patients) -> :class:`IOSRecord`.

**Published layout** (``github.com/Wei546/MeshSegNet``, folder ``all_sample/``): ``<N>_up.vtp``
(upper jaw) and ``<N>_down.vtp`` (lower jaw) of patient N, VTK XML PolyData of about 10,000
triangles in mm, with a per-CELL (triangle) float array ``Label``. The repository also holds
mirrored ``*F_*`` copies (a mirror swaps the patient's sides, so their numbers would be wrong)
and byte-identical duplicates under other numbers: the converter reads only ``<N>_up|down.vtp``
names and leaves out a file whose bytes equal an earlier one's, saying so.

**Labels.** MeshSegNet's 15 classes: 0 gingiva, 1..14 the teeth from one second molar round
the arch to the other. The table (worked out from centroids, and in agreement with an
independent dataset using the same convention; the data README beside the scans):

=====  ============================================  ============================================
jaw    ids 1..7                                      ids 8..14
=====  ============================================  ============================================
upper  FDI 17, 16, ..., 11 (patient's right)          FDI 21, 22, ..., 27 (left)
lower  FDI 37, 36, ..., 31 (patient's left)           FDI 41, 42, ..., 47 (right)
=====  ============================================  ============================================

Every scan is checked against the table by its geometry before it is used
(:func:`number_teeth`), because some files do not follow it (``8_down`` and ``11_down`` carry
ids up to 16, ``29_down`` id 15, and four more are numbered over their present teeth only):

1. *Sides.* The patient's right is ``A x S``: S (superior) is minus the occlusal direction for
   an upper jaw and the occlusal direction for a lower one (:func:`~ToothMCLCore.io.mesh.occlusal_direction`,
   which depends only on the mesh, not on the file's frame), A (anterior) points from the
   midpoint of the two end teeth of the arch to the mean of all tooth centroids (the arch is
   a U open at the back). The lowest id must lie on the table's side (upper: right, lower:
   left); otherwise the scan or its labels are mirrored and the scan is left out.
2. *Midline.* Three cues locate the central incisors: the neighbouring pair of ids whose
   centroids are together the most anterior; the pair that straddles the apex of a parabola
   fitted to the tooth centroids in the occlusal plane (the parabola's axis is searched within
   +-0.4 rad of A); and the split around which the two halves of the arch mirror each other in
   depth (teeth paired outwards from it, :func:`_mirror_split`). The table puts the midline
   between ids 7 and 8. All three must agree, or the scan is left out: ``29_down`` (most anterior
   8/9, apex 9/10), and ``23_up`` and ``27_up``, whose teeth pair up in depth around one tooth
   (ids 6/8, 5/9, ...: a tooth sits on the axis of symmetry, as after the loss of a central
   incisor, so which quadrant it and its neighbours belong to cannot be told from the geometry;
   a previous version of this converter numbered them from ids 6/7, which tooth sizes and the
   arch's symmetry contradict). When the three agree on a pair that straddles 7.5, the table
   holds (missing ids stay missing teeth; an id beyond 14 is the eighth tooth of its quadrant).
   When they agree on another pair of consecutive ids, the scan was numbered over its present
   teeth only, and it is numbered outwards from that pair: ``8_down`` and ``11_down`` (ids 1 and
   16 are the third molars 38 and 48), ``16_down`` and ``20_down`` (no second molar on one or
   both sides: their molars are where the numbering from the midline puts them).
3. *Check.* Every tooth must then lie on its quadrant's side of the midline (by its centroid,
   at least :data:`SIDE_TOLERANCE_MM` across, as in the arch's order) and be at most the
   eighth of its quadrant; teeth further from the midline must not be more anterior than
   nearer ones by more than :data:`ORDER_TOLERANCE_MM` (crowded incisors overlap a little). A
   scan that fails is left out, and the converter says which tooth failed and how.

Per-vertex labels come from the per-face ids by the majority of the faces around each vertex
(:func:`~._common.vertex_votes`: a vertex tied between gingiva and a tooth joins the tooth, one
tied between two teeth joins the higher id), then the ids are mapped to FDI numbers as above.

**Patients**: ``<N>``; ``<N>_upper`` and ``<N>_lower`` share ``patient_id`` ``<N>``.
Licence: MIT (MeshSegNet, Lian & Wu); the provenance of the patients is not stated.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InvalidInputError
from ..dataset_records import IOSRecord
from ._common import integer_labels, ios_record, require_folder, vertex_votes

logger = logging.getLogger(__name__)

NAME = "MeshSegNet"
SOURCE = ("MeshSegNet 15-class convention (github.com/Wei546/MeshSegNet all_sample/, MIT); ids 1..14 = "
          "17..11, 21..27 (upper) / 37..31, 41..47 (lower), every scan checked by centroid and arch order")
LAYOUT = "<N>_up.vtp / <N>_down.vtp with a per-cell Label array, anywhere under ROOT"
#: the name's jaw word -> our jaw
JAWS = {"up": "upper", "down": "lower"}
#: the table's midline falls between ids 7 and 8
TABLE_MIDLINE = 7.5
#: quadrant of the low ids (< midline) and of the high ids, per jaw (the table)
QUADRANTS = {"upper": (1, 2), "lower": (3, 4)}
#: a tooth must lie at least this far on its side of the midline plane (mm); a central incisor's
#: centroid is about 4 mm from it
SIDE_TOLERANCE_MM = 1.0
#: a tooth further from the midline may be this much more anterior than a nearer one (mm)
ORDER_TOLERANCE_MM = 2.0
_SCAN = re.compile(r"^(?P<n>\d+)_(?P<jaw>up|down)\.vtp$", re.IGNORECASE)


@dataclass(frozen=True)
class Numbering:
    """How the ids of one scan became FDI numbers.

    Attributes:
        fdi: id -> FDI number, for every tooth id of the scan.
        rule: ``"table"`` or ``"midline"`` (numbered outwards from the central incisors).
        midline: the id position of the midline (7.5 for the table).
        note: one sentence for the log and the manifest.
    """

    fdi: dict
    rule: str
    midline: float
    note: str


def find_cases(root) -> list[tuple[str, str, Path]]:
    """``[(patient, jaw, vtp), ...]`` by patient number, upper first.

    Files with other names and byte-identical copies of an earlier scan are left out with a
    warning (the published folder holds both).

    Raises:
        InvalidInputError: no ``<N>_up.vtp`` / ``<N>_down.vtp`` under ``root``.
    """
    root = require_folder(root, NAME, LAYOUT)
    found, other = [], []
    for path in sorted(root.rglob("*.vtp")):
        match = _SCAN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group("n")), match.group("jaw").lower() != "up", path))
        elif path.is_file():
            other.append(path.name)
    if not found:
        raise InvalidInputError(f"{root}: no MeshSegNet scans (<N>_up.vtp, <N>_down.vtp) found; expected {LAYOUT}")
    if other:
        logger.warning("%s: left out %d .vtp files whose names are not <N>_up/<N>_down (mirrored *F_* copies "
                       "swap the patient's sides): %s", NAME, len(other), ", ".join(other[:5]))
    seen: dict[str, str] = {}
    cases = []
    for n, _, path in sorted(found):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            logger.warning("%s: left out %s, byte-identical to %s", NAME, path.name, seen[digest])
            continue
        seen[digest] = path.name
        jaw = JAWS[_SCAN.match(path.name).group("jaw").lower()]
        cases.append((str(n), jaw, path))
    return cases


def tooth_centroids(vertices: np.ndarray, faces: np.ndarray, face_ids: np.ndarray) -> dict[int, np.ndarray]:
    """Area-weighted centroid (3,) of the faces of every tooth id (> 0)."""
    corners = vertices[faces]
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    centres = corners.mean(axis=1)
    out = {}
    for tooth in np.unique(face_ids[face_ids > 0]):
        m = face_ids == tooth
        out[int(tooth)] = (centres[m] * areas[m, None]).sum(0) / max(float(areas[m].sum()), 1e-12)
    return out


def number_teeth(centroids: dict[int, np.ndarray], superior: np.ndarray | None, jaw: str,
                 name: str) -> Numbering:
    """FDI numbers of a scan's tooth ids from the table, checked and if need be fixed (module docstring).

    Args:
        centroids: tooth id -> (3,) centroid in mm, in any frame.
        superior: unit (3,) vector towards the patient's head, None if the mesh cannot tell.
        jaw: "upper" or "lower". name: the file, for messages.

    Raises:
        InvalidInputError: the scan cannot be numbered with confidence (the message says why);
            the converter leaves it out.
    """
    ids = sorted(centroids)
    if len(ids) < 3:
        raise InvalidInputError(f"{name}: only {len(ids)} labelled teeth, too few to check the numbering")
    if superior is None:
        raise InvalidInputError(f"{name}: the occlusal side cannot be told from the mesh (is it closed?)")
    c = np.stack([centroids[i] for i in ids])
    s = np.asarray(superior, np.float64) / np.linalg.norm(superior)
    anterior = c.mean(0) - 0.5 * (c[0] + c[-1])
    anterior -= (anterior @ s) * s
    if np.linalg.norm(anterior) < 1.0:
        raise InvalidInputError(f"{name}: the teeth do not form an arch (anterior direction undefined)")
    anterior /= np.linalg.norm(anterior)
    right = np.cross(anterior, s)
    low_quadrant, high_quadrant = QUADRANTS[jaw]
    low_on_right = jaw == "upper"
    if ((c[0] - c[-1]) @ right > 0) != low_on_right:
        raise InvalidInputError(
            f"{name}: id {ids[0]} lies on the patient's {'left' if low_on_right else 'right'}, the table puts it "
            f"on the {'right' if low_on_right else 'left'}: the scan or its labels are mirrored")
    anterior_pair = max(range(len(ids) - 1), key=lambda k: float((c[k] + c[k + 1]) @ anterior))
    apex_pair = _apex_pair(c, right, anterior)
    if apex_pair != anterior_pair:
        raise InvalidInputError(
            f"{name}: the central incisors cannot be located: the most anterior pair is ids "
            f"{ids[anterior_pair]}/{ids[anterior_pair + 1]}, the arch's apex lies between "
            + (f"ids {ids[apex_pair]}/{ids[apex_pair + 1]}" if apex_pair is not None else "no two teeth"))
    kind, k = _mirror_split(c @ anterior)
    if kind == "through":
        raise InvalidInputError(
            f"{name}: the teeth pair up in depth around id {ids[k]} (ids {ids[k - 1]}/{ids[k + 1]}, ...), so a tooth "
            f"sits on the arch's axis of symmetry while the most anterior pair is ids {ids[anterior_pair]}/"
            f"{ids[anterior_pair + 1]}: which quadrant each tooth belongs to cannot be told")
    if k != anterior_pair:
        raise InvalidInputError(
            f"{name}: the central incisors cannot be located: the most anterior pair is ids "
            f"{ids[anterior_pair]}/{ids[anterior_pair + 1]}, the teeth pair up in depth around ids {ids[k]}/{ids[k + 1]}")
    lo, hi = ids[anterior_pair], ids[anterior_pair + 1]
    if lo < TABLE_MIDLINE < hi:
        midline, rule = TABLE_MIDLINE, "table"
    elif hi == lo + 1:
        midline, rule = lo + 0.5, "midline"
    else:
        raise InvalidInputError(f"{name}: the central incisors seem to be ids {lo} and {hi}, with a gap between "
                                "them, so the numbering from the midline is ambiguous")
    numbers = {}
    for i in ids:
        position = round(abs(i - midline) + 0.5)
        if position > 8:
            raise InvalidInputError(f"{name}: id {i} would be tooth {position} of its quadrant (midline between "
                                    f"ids {lo} and {hi}); no quadrant has more than 8 teeth")
        numbers[i] = (low_quadrant if i < midline else high_quadrant) * 10 + position
    centre = 0.5 * (centroids[lo] + centroids[hi])
    side = {i: float((centroids[i] - centre) @ right) * (1 if (i < midline) == low_on_right else -1) for i in ids}
    wrong = [i for i in ids if side[i] < SIDE_TOLERANCE_MM]
    if wrong:
        raise InvalidInputError(
            f"{name}: ids {wrong} (FDI {[numbers[i] for i in wrong]}) do not lie on their quadrant's side of the "
            f"midline between ids {lo} and {hi}")
    for quadrant in (low_quadrant, high_quadrant):
        row = sorted((numbers[i] % 10, float(centroids[i] @ anterior), i) for i in ids if numbers[i] // 10 == quadrant)
        for (_, a_near, i_near), (_, a_far, i_far) in itertools.pairwise(row):
            if a_far > a_near + ORDER_TOLERANCE_MM:
                raise InvalidInputError(
                    f"{name}: id {i_far} (FDI {numbers[i_far]}) is {a_far - a_near:.1f} mm more anterior than id "
                    f"{i_near} (FDI {numbers[i_near]}), against the arch order")
    if rule == "table":
        note = "the table holds" + (f" (id {', '.join(str(i) for i in ids if i > 14)} is the eighth tooth of its "
                                    "quadrant)" if ids[-1] > 14 else "")
    else:
        note = (f"the central incisors are ids {lo} and {hi}, not 7 and 8 as in the table: numbered outwards from "
                f"them ({', '.join(f'{i}->{numbers[i]}' for i in (ids[0], ids[-1]))})")
    return Numbering(numbers, rule, midline, note)


def _mirror_split(depth: np.ndarray) -> tuple[str, int]:
    """Where the arch's left and right halves mirror each other best: ``("between", k)`` for the
    split between the ``k``-th and ``k+1``-th tooth (0-based, in id order) or ``("through", k)``
    for a split through the ``k``-th tooth.

    ``depth`` (n,) is each tooth's centroid along the anterior axis. Teeth are paired outwards
    from the split (the first of each side, then the second...), and the split whose pairs differ
    least in depth (mean absolute difference, mm) wins; only splits leaving at most two more teeth
    on one side than the other are tried (a split near an end pairs few teeth and would win by
    default)."""
    n = len(depth)
    candidates = []
    for k in range(n - 1):
        if abs((k + 1) - (n - k - 1)) <= 2:
            pairs = min(k + 1, n - k - 1)
            candidates.append((float(np.mean([abs(depth[k - j] - depth[k + 1 + j]) for j in range(pairs)])),
                               "between", k))
    for k in range(1, n - 1):
        if abs(k - (n - k - 1)) <= 2:
            pairs = min(k, n - k - 1)
            candidates.append((float(np.mean([abs(depth[k - 1 - j] - depth[k + 1 + j]) for j in range(pairs)])),
                               "through", k))
    _, kind, k = min(candidates)
    return kind, k


def _apex_pair(c: np.ndarray, right: np.ndarray, anterior: np.ndarray) -> int | None:
    """Index k of the neighbouring teeth ``k, k + 1`` on either side of the arch's apex, or None.

    The apex of the parabola ``a = p(r)`` fitted (least squares) to the centroids ``c`` (n, 3) in
    the occlusal-plane axes, rotated within +-0.4 rad to the best fit."""
    best = None
    for angle in np.linspace(-0.4, 0.4, 81):
        r_axis = np.cos(angle) * right + np.sin(angle) * anterior
        a_axis = -np.sin(angle) * right + np.cos(angle) * anterior
        r, a = c @ r_axis, c @ a_axis
        coef = np.polyfit(r, a, 2)
        residual = float(np.sum((np.polyval(coef, r) - a) ** 2))
        if coef[0] < 0 and (best is None or residual < best[0]):
            best = (residual, r, -coef[1] / (2 * coef[0]))
    if best is None:
        return None
    _, r, apex = best
    crossing = [k for k in range(len(r) - 1) if (r[k] - apex) * (r[k + 1] - apex) <= 0]
    return crossing[0] if crossing else None


def read_labelled(path, name: str):
    """``(MeshReadResult, (M,) int per-cell Label)`` of one MeshSegNet scan.

    Raises:
        InvalidInputError: unreadable file, no per-cell ``Label``, ids that are not whole numbers.
    """
    from ..mesh import read_mesh

    result = read_mesh(Path(path))
    if "Label" not in result.face_data:
        raise InvalidInputError(f"{name} has no per-cell Label array; MeshSegNet scans carry their labels as "
                                "cell data: use the labelled release")
    return result, integer_labels(result.face_data["Label"], name)


def convert_scan(path, jaw: str, name: str | None = None):
    """One MeshSegNet scan: ``(MeshReadResult, (N,) FDI per cleaned vertex, Numbering)``.

    Raises:
        InvalidInputError: unreadable file, no per-cell ``Label``, ids that are not whole
            numbers, or a numbering that cannot be checked (see :func:`number_teeth`).
    """
    from ..mesh import occlusal_direction

    name = name or Path(path).name
    result, face_ids = read_labelled(path, name)
    if face_ids.size and face_ids.max() > 16:
        raise InvalidInputError(f"{name}: Label values up to {int(face_ids.max())}; MeshSegNet uses 0..14 "
                                "(16 at most in its irregular files): is this a MeshSegNet scan?")
    mesh = result.mesh
    occlusal = occlusal_direction(mesh, result.normals)
    superior = None if occlusal is None else (-occlusal if jaw == "upper" else occlusal)
    numbering = number_teeth(tooth_centroids(mesh.vertices_ras, mesh.faces, face_ids), superior, jaw, name)
    table = np.zeros(17, np.int32)
    for i, number in numbering.fdi.items():
        table[i] = number
    votes = vertex_votes(mesh.n_vertices, mesh.faces, face_ids, 17)
    return result, table[votes], numbering


def face_tooth(path, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(faces (M, 3), (M,) bool tooth)`` of one MeshSegNet scan as :func:`~..mesh.read_mesh` reads
    it: the labels as drawn, per triangle (the boundary refiner trains on them,
    ``training/train_boundary.py``).

    Raises:
        InvalidInputError: as :func:`read_labelled`.
    """
    result, face_ids = read_labelled(path, name or Path(path).name)
    return np.asarray(result.mesh.faces, np.int64), face_ids > 0


def iter_meshsegnet(root, *, skip_unpaired: bool = False) -> Iterator[IOSRecord]:
    """Yield every MeshSegNet scan whose numbering checks out, with FDI labels per vertex.

    Args:
        root: the folder of ``<N>_up.vtp`` / ``<N>_down.vtp`` (searched recursively).
        skip_unpaired: accepted for the ``convert-dataset`` interface; a patient with one jaw
            only is kept anyway (each jaw is its own case).

    Yields:
        :class:`IOSRecord` per scan: ``case_id`` ``<N>_<jaw>``, ``patient_id`` ``<N>``; the manifest
        metadata says how the ids were numbered. Scans left out are logged with the reason.
    """
    del skip_unpaired
    left_out = []
    for patient, jaw, path in find_cases(root):
        try:
            result, labels, numbering = convert_scan(path, jaw)
        except InvalidInputError as exc:
            left_out.append(path.name)
            logger.warning("%s: left out %s", NAME, exc)
            continue
        if numbering.rule != "table" or max(numbering.fdi) > 14:
            logger.warning("%s: %s: %s", NAME, path.name, numbering.note)
        yield ios_record(f"{patient}_{jaw}", patient, jaw, result, labels, None, str(path),
                         {"dataset": NAME, "numbering": numbering.rule, "numbering_note": numbering.note,
                          "licence": "MIT (MeshSegNet, Lian & Wu)"})
    if left_out:
        logger.warning("%s: %d scans left out: %s", NAME, len(left_out), ", ".join(left_out))
