"""Score an IOS predictor on labelled scans: per scan, per jaw and per tooth (model cards, README).

Each scan is segmented as a user would segment it (the mesh read back from its file, the jaw
given), and compared with its labels on the vertices as stored:

- ``dice``: mean over the ground-truth teeth of the per-tooth Dice (:func:`.dice.dice_per_tooth`:
  a missed tooth scores 0, a tooth only in the prediction is listed, not averaged);
- ``tooth_vs_gingiva``: the fraction of vertices whose tooth/gingiva status is right (the
  3DTeethSeg'22 TSA, :func:`.ios_metrics.challenge_metrics`), with ``TLA`` (as exp(-TLA)) and
  ``TIR`` from the same code;
- ``mirrored``: ground-truth teeth whose vertices the prediction gives mostly to the tooth of the
  same position in the other quadrant (11 as 21, 36 as 46): the error a wrong left/right frame
  makes; ``renumbered``: those given mostly to any other tooth (mirrored ones included);
- ``seconds``: the predictor's wall time for the scan.

:func:`summarize` averages scans per jaw (``dice`` and the challenge metrics: mean over scans;
``mirrored``: total count), and per FDI tooth (mean Dice over the scans that have it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .. import fdi
from .dice import dice_per_tooth, false_positive_teeth, mean_dice


@dataclass
class ScanScore:
    """The scores of one scan (see the module docstring)."""

    case_id: str
    jaw: str
    n_vertices: int
    dice: float
    per_tooth: dict
    tooth_vs_gingiva: float
    TLA: float
    TIR: float
    mirrored: list = field(default_factory=list)
    renumbered: list = field(default_factory=list)
    extra_teeth: list = field(default_factory=list)
    seconds: float = 0.0


def majority_numbers(pred: np.ndarray, truth: np.ndarray) -> dict[int, int]:
    """For each ground-truth tooth, the tooth the prediction gives most of its vertices (0 if gingiva)."""
    out = {}
    for tooth in fdi.present_teeth(np.unique(truth)):
        values, counts = np.unique(pred[truth == tooth], return_counts=True)
        out[tooth] = int(values[np.argmax(counts)])
    return out


def score_scan(case_id: str, jaw: str, pred_labels, pred_instances, gt_labels, gt_instances, vertices,
               seconds: float = 0.0) -> ScanScore:
    """Scores of one scan; all arrays per vertex as stored, ``vertices`` (N, 3) mm."""
    from .ios_metrics import challenge_metrics

    pred = np.asarray(pred_labels).astype(np.int64)
    truth = np.asarray(gt_labels).astype(np.int64)
    per_tooth = dice_per_tooth(pred, truth)
    m = challenge_metrics(pred, pred_instances, truth, gt_instances, vertices)
    majority = majority_numbers(pred, truth)
    renumbered = sorted(t for t, p in majority.items() if p not in (0, t))
    mirrored = sorted(t for t, p in majority.items() if p == fdi.mirror(t))
    return ScanScore(case_id, jaw, len(truth), mean_dice(per_tooth), per_tooth, float(m["TSA"]), float(m["TLA"]),
                     float(m["TIR"]), mirrored, renumbered, false_positive_teeth(pred, truth), float(seconds))


def score_file(predictor, path, jaw: str, truth_labels, case_id: str | None = None,
               truth_instances=None) -> ScanScore:
    """Segment the scan file ``path`` as ``toothmcl segment-ios`` does (read with
    :func:`~ToothMCLCore.io.mesh.read_mesh`, the jaw given) and score it against ``truth_labels``
    (N_file,) FDI per vertex as stored, and ``truth_instances`` (one instance per tooth if None)."""
    from ..io.mesh import read_mesh
    from ..io.teeth3ds import instances_from_labels

    scan = read_mesh(path)
    start = time.perf_counter()
    result = predictor.predict(scan, jaw)
    elapsed = time.perf_counter() - start
    truth = np.asarray(truth_labels)
    instances = instances_from_labels(truth) if truth_instances is None else truth_instances
    vertices = scan.mesh.vertices_ras[np.maximum(scan.file_to_clean, 0)]
    return score_scan(case_id or str(path), jaw, result.labels, result.instances, truth, instances, vertices, elapsed)


def evaluate_cases(predictor, cases: Iterable, progress=None) -> list[ScanScore]:
    """Segment every dataset case (:class:`~ToothMCLCore.io.dataset_reader.DatasetCase` of an IOS
    export) with ``predictor`` and score it (:func:`score_file` on the exported mesh)."""
    cases = list(cases)
    scores = []
    for i, case in enumerate(cases):
        if progress:
            progress(case.case_id, i / max(len(cases), 1))
        record = case.load()
        scores.append(score_file(predictor, case.paths["mesh"], record.jaw, record.labels, case.case_id,
                                 record.instances))
    return scores


def score_meshsegnet(predictor, folder, patients: Iterable[str], progress=None) -> list[ScanScore]:
    """Score both jaws of each of ``patients`` in a folder of MeshSegNet scans (``<N>_up.vtp``,
    ``<N>_down.vtp``), the truth from :func:`~ToothMCLCore.io.public_datasets.meshsegnet.convert_scan`
    (a scan the converter leaves out is left out here too, as in training)."""
    from pathlib import Path

    from ..errors import InvalidInputError
    from ..io.public_datasets.meshsegnet import JAWS, convert_scan

    scores = []
    for patient in patients:
        for word, jaw in JAWS.items():
            path = Path(folder) / f"{patient}_{word}.vtp"
            if not path.is_file():
                raise InvalidInputError(f"{path} not found: give the folder of MeshSegNet's <N>_up.vtp / <N>_down.vtp")
            try:
                truth_scan, truth, _ = convert_scan(path, jaw)
            except InvalidInputError:
                continue
            if progress:
                progress(path.stem)
            scores.append(score_file(predictor, path, jaw, truth_scan.to_file_order(truth), path.stem))
    return scores


def summarize(scores: list[ScanScore]) -> dict:
    """Per jaw and overall means, per-tooth Dice, error counts (JSON-able; see the module docstring)."""
    def block(group: list[ScanScore]) -> dict:
        if not group:
            return {}
        return {"scans": len(group),
                "mean_dice": round(float(np.mean([s.dice for s in group])), 4),
                "min_scan_dice": round(float(np.min([s.dice for s in group])), 4),
                "tooth_vs_gingiva": round(float(np.mean([s.tooth_vs_gingiva for s in group])), 4),
                "exp_neg_TLA": round(float(np.mean([s.TLA for s in group])), 4),
                "TIR": round(float(np.mean([s.TIR for s in group])), 4),
                "mirrored_teeth": int(sum(len(s.mirrored) for s in group)),
                "renumbered_teeth": int(sum(len(s.renumbered) for s in group)),
                "seconds_per_scan": round(float(np.mean([s.seconds for s in group])), 2)}

    out = {"all": block(scores)}
    for jaw in fdi.JAWS:
        out[jaw] = block([s for s in scores if s.jaw == jaw])
    teeth: dict[int, list[float]] = {}
    for s in scores:
        for tooth, d in s.per_tooth.items():
            teeth.setdefault(int(tooth), []).append(d)
    out["per_tooth"] = {str(t): {"dice": round(float(np.mean(v)), 4), "scans": len(v)} for t, v in sorted(teeth.items())}
    out["per_scan"] = {s.case_id: {"dice": round(s.dice, 4), "tooth_vs_gingiva": round(s.tooth_vs_gingiva, 4),
                                   "exp_neg_TLA": round(s.TLA, 4), "TIR": round(s.TIR, 4), "mirrored": s.mirrored,
                                   "renumbered": s.renumbered}
                       for s in scores}
    return out


def format_summary(summary: dict, title: str = "") -> str:
    """The summary as a plain-text report: a row per jaw, then per-tooth Dice by quadrant."""
    lines = [title] if title else []
    lines.append(f"{'':<7} {'scans':>5} {'Dice':>6} {'min':>6} {'tooth/ging':>10} {'exp(-TLA)':>9} {'TIR':>6} "
                 f"{'mirrored':>8} {'renumb.':>7} {'s/scan':>6}")
    for key in ("upper", "lower", "all"):
        b = summary.get(key) or {}
        if b:
            lines.append(f"{key:<7} {b['scans']:>5} {b['mean_dice']:>6.3f} {b['min_scan_dice']:>6.3f} "
                         f"{b['tooth_vs_gingiva']:>10.3f} {b['exp_neg_TLA']:>9.3f} {b['TIR']:>6.3f} "
                         f"{b['mirrored_teeth']:>8} {b['renumbered_teeth']:>7} {b['seconds_per_scan']:>6.2f}")
    per_tooth = summary.get("per_tooth", {})
    for quadrant in (1, 2, 3, 4):
        row = [f"{t}:{per_tooth[str(t)]['dice']:.2f}" for t in range(quadrant * 10 + 1, quadrant * 10 + 9)
               if str(t) in per_tooth]
        if row:
            lines.append(f"  quadrant {quadrant}: " + " ".join(row))
    return "\n".join(lines)
