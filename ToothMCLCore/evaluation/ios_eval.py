"""Evaluate folders of Teeth3DS label files against ground truth, one jaw scan per case.

Prediction and ground-truth ``.json`` files pair by case name (:mod:`.pairing`), e.g.
``01A6GW4A_lower.json`` with ``01A6GW4A_lower_pred.json``. Each case also needs its scan: a
mesh (``.obj``, ``.ply``, ``.stl``, ``.vtp``, ``.vtk``) with the same case name, searched in
``mesh_dir`` (default: the ground-truth folder, as Teeth3DS ships ``<id>_<jaw>.obj`` next to
``<id>_<jaw>.json``). Every case gets the metrics of :func:`.ios_metrics.evaluate_ios` (TSA,
exp(-TLA), TIR, the 3DTeethSeg'22 score, OA, mIoU, and SOFTooth's third-molar IoU, pairwise
confusion rates and normalised centre error of :mod:`.softooth_metrics`) and per-tooth Dice on
the vertices as stored in the file, with the tooth rules of :mod:`.results`. Every per-case
value is averaged across cases in the report; the SOFTooth paper pools its confusion counts
over the test set instead (a case without a tooth of a pair has no value and is left out).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInputError
from .pairing import IOS_LABEL_SUFFIXES, find_cases, pair_cases
from .results import CaseScore, Evaluation, check_has_teeth, score_teeth

#: scan formats looked for in the mesh folder
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".vtp", ".vtk")
#: per-case metrics taken from evaluate_ios, in report order (``TLA`` holds exp(-TLA))
IOS_METRICS = ("TSA", "TLA", "TIR", "score", "OA", "mIoU", "TLA_distance", "third_molar_IoU", "pair_2nd3rd",
               "pair_pre_mo", "pair_cen_lat", "centre_error")
#: of those, the ones the report prints in % (the others as fractions, like the challenge)
IOS_PERCENT_METRICS = ("OA", "mIoU", "third_molar_IoU", "pair_2nd3rd", "pair_pre_mo", "pair_cen_lat",
                       "centre_error")
#: how the report names them
IOS_METRIC_LABELS = {
    "TSA": "TSA (tooth segmentation accuracy)",
    "TLA": "TLA as exp(-TLA) (tooth localisation)",
    "TIR": "TIR (tooth identification rate)",
    "score": "3DTeethSeg'22 score (mean of the three)",
    "OA": "OA (vertex accuracy)",
    "mIoU": "mIoU (17 classes of the jaw)",
    "TLA_distance": "TLA distance (before exp(-x))",
    "third_molar_IoU": "third-molar IoU (SOFTooth)",
    "pair_2nd3rd": "confusion 2nd vs 3rd molars (SOFTooth Table III)",
    "pair_pre_mo": "confusion premolars vs 1st molars (Table III)",
    "pair_cen_lat": "confusion central vs lateral incisors (Table III)",
    "centre_error": "normalised centre error (SOFTooth Table IV)",
}


def on_decimated_faces(scan, target_faces: int, *per_vertex):
    """The SOFTooth protocol's counting units: the faces of the scan decimated to about
    ``target_faces`` (the paper's 10,000, as MeshLab does it; here fast-simplification).

    Each decimated face takes the values of the cleaned scan vertex nearest its centroid (a
    face of the decimated mesh lies on the original surface to within its edge length, so the
    nearest vertex is on the same tooth except along a boundary). Prediction and ground truth
    are carried the same way, so both are scored on the same faces.

    Args:
        scan: :class:`~ToothMCLCore.io.mesh.MeshReadResult` the labels belong to.
        target_faces: face count after decimation; a scan with fewer faces is used as is.
        per_vertex: arrays with one value per *file* vertex (labels, instances).

    Returns:
        (centroids (F, 3), arrays with one value per face, in the order given).
    """
    import numpy as np
    from scipy.spatial import cKDTree

    from ..io.mesh import decimate

    mesh, _ = decimate(scan.mesh, int(target_faces))
    centroids = mesh.vertices_ras[mesh.faces].mean(axis=1)
    nearest = cKDTree(scan.mesh.vertices_ras).query(centroids)[1]
    return (centroids, *(np.asarray(values)[scan.clean_to_file[nearest]] for values in per_vertex))


def scoring_units(scan, vertices, pred, gt, faces: int | None = None) -> tuple:
    """(points, pred labels, pred instances, gt labels, gt instances) to score: the file's vertices,
    or with ``faces`` the faces of the decimated scan (:func:`on_decimated_faces`)."""
    if faces:
        return on_decimated_faces(scan, faces, pred.labels, pred.instances, gt.labels, gt.instances)
    return vertices, pred.labels, pred.instances, gt.labels, gt.instances


def evaluate_ios_folders(truth_dir, prediction_dirs: dict[str, str | os.PathLike], mesh_dir=None,
                         progress=None, faces: int | None = None) -> Evaluation:
    """Per-case IOS metrics and per-tooth Dice of every method against the ground truth.

    Args:
        truth_dir: folder of ground-truth Teeth3DS ``.json`` files.
        prediction_dirs: {method name: folder of predicted ``.json`` files}; the first method is
            the reference of the paired t-tests.
        mesh_dir: folder of the scans (default ``truth_dir``).
        progress: optional ``callable(stage: str, fraction: float)``.
        faces: score on the faces of each scan decimated to about this many (SOFTooth's
            protocol: 10,000; :func:`on_decimated_faces`) instead of on the file's vertices.

    Raises:
        InvalidInputError: unpaired cases, a case without scan, label files that do not fit
            their scan, or no ground-truth tooth in any case.
    """
    from ..io.mesh import read_mesh
    from ..io.teeth3ds import read_teeth3ds_json
    from .ios_metrics import evaluate_ios

    pairs = pair_cases(truth_dir, prediction_dirs, IOS_LABEL_SUFFIXES)
    mesh_dir = truth_dir if mesh_dir is None else mesh_dir
    meshes = find_cases(mesh_dir, MESH_SUFFIXES, "scan")
    no_mesh = [case for case, _, _ in pairs if case not in meshes]
    if no_mesh:
        listed = ", ".join(no_mesh[:10]) + (" ..." if len(no_mesh) > 10 else "")
        raise InvalidInputError(f"{len(no_mesh)} case(s) have no scan ({', '.join(MESH_SUFFIXES)}) with the "
                                f"same name in {mesh_dir}: {listed}; pass the folder of the scans with "
                                "--mesh")
    scores = []
    steps = len(pairs) * len(prediction_dirs)
    for i, (case, truth_path, preds) in enumerate(pairs):
        scan = read_mesh(meshes[case])
        n = scan.n_file_vertices
        vertices = scan.mesh.vertices_ras[scan.file_to_clean.clip(0)]
        gt = read_teeth3ds_json(truth_path, n_vertices=n)
        for j, (method, pred_path) in enumerate(preds.items()):
            if progress:
                progress("evaluating", (i * len(preds) + j) / steps)
            pred = read_teeth3ds_json(pred_path, n_vertices=n, jaw=gt.jaw)
            points, pred_labels, pred_instances, gt_labels, gt_instances = scoring_units(scan, vertices, pred, gt, faces)
            m = evaluate_ios(pred_labels, pred_instances, gt_labels, gt_instances, points, jaw=gt.jaw)
            scores.append(CaseScore(case, method, score_teeth(pred_labels, gt_labels),
                                    {k: float(m[k]) for k in IOS_METRICS}, str(pred_path), str(truth_path),
                                    counts={"classes": m["class_counts"], "pairs": m["pair_counts"]}))
    if progress:
        progress("evaluating", 1.0)
    dirs = {m: str(Path(d).resolve()) for m, d in prediction_dirs.items()}
    evaluation = Evaluation("ios", tuple(prediction_dirs), dirs, str(Path(truth_dir).resolve()), scores,
                            f"faces of the scans decimated to about {faces}" if faces else "vertices")
    check_has_teeth(evaluation)
    return evaluation


def pooled_ios(evaluation: Evaluation) -> dict[str, dict]:
    """{method: :func:`~.ios_metrics.pool_semantic` over all its jaws}: SOFTooth's Table I
    (OA, mIoU, BG and T1-T16 IoU) and Table III (pair rates) pooled over the set."""
    from .ios_metrics import pool_semantic

    out = {}
    for method in evaluation.methods:
        mine = [s for s in evaluation.scores if s.method == method and s.counts]
        out[method] = pool_semantic([s.counts["classes"] for s in mine], [s.counts["pairs"] for s in mine])
    return out
