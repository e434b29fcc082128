"""Train the tooth-vs-gingiva boundary refiner of the real intraoral model, in one command.

    python -m training.train_boundary --data ../shared/data/meshsegnet --out runs/ios_boundary

The refiner (:mod:`ToothMCLCore.postprocessing.boundary`) re-decides the vertices next to the
boundary that the IOS pipeline settled; it learns from one IOS model's probabilities, so it is
trained for that model (``--model``, default the default IOS model, ``ios_pt_real_v2``: the mean of
two networks' probabilities, :class:`~ToothMCLCore.inference.ios.IOSPredictor`).

1. **Data**: MeshSegNet's scans converted and split by patient exactly as
   ``training/train_ios_real.py`` does (``OUT/export``, reused when there): the refiner trains on
   the same 48 training jaws as the network, chooses its epoch on the same 7 validation jaws,
   and never sees the 14 test jaws.
2. **Inputs**: every training and validation jaw is read back from its file as
   ``segment-ios`` reads it and run through the model's pipeline up to the settled labels
   (:meth:`~ToothMCLCore.inference.ios.IOSPredictor.network_probabilities` with the card's
   sampling, then :func:`~ToothMCLCore.inference.ios.settle_and_number`); the refiner's inputs
   are :func:`~ToothMCLCore.postprocessing.boundary.boundary_inputs`, its targets the truth's
   tooth-or-gingiva per vertex and per triangle (the labels as drawn, read from the scan in
   ``--data`` that the case was converted from).
3. **Training**: :class:`~ToothMCLCore.models.boundary_gnn.BoundaryGNN` (48 channels, 4 rounds),
   with a face head, binary cross-entropy on the band vertices (those it may change) plus on the
   triangles that touch the band (``--no-face-head``: the vertices only), each step on the jaw
   or (half the time) its mirror image (x -> -x, as inference averages the two), AdamW (lr 2e-3,
   weight decay 1e-4), one jaw per step, ``--epochs`` (120) epochs, seed 0; every 5 epochs the
   validation jaws' tooth-vs-gingiva accuracy with the band re-decided as inference does it
   (a band vertex follows the vote of its triangles), and the best epoch is
   kept. The feature normalisation is the training band's mean and spread, stored with the
   weights. ``--face-geometry``: the face head also reads its triangle's own shape and the
   maximum and minimum of its vertices' states
   (:class:`~ToothMCLCore.models.boundary_gnn.BoundaryGNN`; tried, not shipped: no better out of
   fold, :mod:`ToothMCLCore.postprocessing.boundary`). ``--seeds 0 1 2``: one refiner
   per seed, each choosing its own epoch, stored in one file whose logits are their mean
   (:class:`~ToothMCLCore.models.boundary_gnn.BoundaryBag`). The scans' median edge lengths on
   the training jaws, widened by :data:`EDGE_MARGIN` each way, become the range the refiner runs on.
4. **Card and check**: ``OUT/<name>.safetensors`` and its card (task ``ios_boundary``), then the
   validation split through the whole pipeline without and with the refiner (mean per-tooth
   Dice, tooth vs gingiva), written into the card. The test split is not read here: it is
   measured with the shipped model by ``training/train_ios_real.py --evaluate-only``.

``--out-of-fold K`` checks a recipe instead of training one (:func:`out_of_fold`): K folds by
patient over the training and validation jaws, each fold's jaws re-decided by a refiner trained on
the others (the first seed, ``--epochs`` epochs, no epoch chosen), written to
``OUT/out_of_fold.json``. The recipes compared in :mod:`ToothMCLCore.postprocessing.boundary`
("Where the refiner stands") were compared this way (``--out-of-fold 3 --epochs 60 --seeds 0``:
0.9721 / 0.9705 upper / lower, about 20 minutes on 2 cores; ``--layers 6`` for six rounds).

To ship it, copy ``OUT/<name>.safetensors`` and its ``.json`` into ``ToothMCLCore/weights/`` and
name it in the IOS model's card (``"boundary_model"``). ``OUT/registry.json`` holds its registry
entry (task ``ios_boundary``): with ``TOOTHMCL_REGISTRY`` pointing there, a card names it without
copying it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ToothMCLCore.postprocessing.boundary import mirror_edge_features

logger = logging.getLogger("training.boundary")

#: the refiner runs on scans whose median edge is within the training jaws' range widened by this fraction
EDGE_MARGIN = 0.1
#: epochs between two validations
VALIDATE_EVERY = 5


def scan_inputs(predictor, case, scan_file: Path) -> dict:
    """The refiner's inputs and targets for one dataset case, through ``predictor``'s pipeline;
    its triangles' labels come from ``scan_file``, the MeshSegNet scan it was converted from."""
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.inference.ios import settle_and_number
    from ToothMCLCore.inference.ios_common import prepare_scan_and_jaw
    from ToothMCLCore.io.mesh import read_mesh
    from ToothMCLCore.io.public_datasets.meshsegnet import face_tooth
    from ToothMCLCore.postprocessing.boundary import boundary_inputs, median_edge_mm
    from ToothMCLCore.postprocessing.surface import mesh_edges

    record = case.load()
    scan, jaw = prepare_scan_and_jaw(read_mesh(case.paths["mesh"]), record.jaw)
    net = predictor.network_probabilities(scan, jaw)
    if net.mapping is not None:
        raise InvalidInputError(f"{case.case_id} was decimated before segmentation; the refiner trains on scans "
                                "as stored: leave it out of the dataset")
    labels, _ = settle_and_number(net.mesh, net.normals, net.probs, net.points, jaw, net.point_normals)
    truth = np.asarray(record.labels)[scan.clean_to_file] > 0
    faces = np.asarray(net.mesh.faces, np.int64)
    drawn_faces, face_truth = face_tooth(scan_file)
    if not np.array_equal(drawn_faces, faces):
        raise InvalidInputError(f"{case.case_id}: the triangles of {scan_file} are not those of the converted scan; "
                                "convert the dataset again (delete OUT/export) from the same --data folder")
    edges = mesh_edges(faces)
    features, edge_index, edge_features, band = boundary_inputs(net.points, net.point_normals, net.mesh.faces,
                                                                 1.0 - net.probs[:, 0], labels > 0, edges)
    return {"case": case.case_id, "patient": case.patient_id, "features": features, "edge_index": edge_index,
            "edge_features": edge_features, "band": band, "tooth": labels > 0, "truth": truth, "faces": faces,
            "face_truth": face_truth, "face_band": band[faces].any(axis=1),
            "median_edge_mm": median_edge_mm(net.points, edges)}


def band_accuracy(model, scans: list[dict]) -> float:
    """Mean over ``scans`` of the tooth-vs-gingiva accuracy with the band re-decided by ``model``
    as inference re-decides it (:func:`~ToothMCLCore.postprocessing.boundary.decide_band`)."""
    from ToothMCLCore.postprocessing.boundary import decide_band

    model.eval()
    scores = [float(np.mean(decide_band(model, s["features"], s["edge_index"], s["edge_features"], s["band"],
                                        s["tooth"], s["faces"]) == s["truth"])) for s in scans]
    model.train()
    return float(np.mean(scores))


def _tensors(s: dict, mirror: bool = False):
    import torch

    edge_features = mirror_edge_features(s["edge_features"]) if mirror else s["edge_features"]
    return torch.from_numpy(s["features"]), torch.from_numpy(s["edge_index"]), torch.from_numpy(edge_features)


def _bce(logits, truth: np.ndarray):
    import torch

    return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(truth.astype(np.float32)))


def train(train_scans: list[dict], val_scans: list[dict], epochs: int = 120, hidden: int = 48, layers: int = 4,
          lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0, face_head: bool = True,
          face_geometry: bool = False):
    """(best model, its epoch, its validation accuracy, log rows) of step 3 (module docstring).
    Without ``val_scans`` nothing is chosen: the last epoch's model is returned (accuracy NaN)."""
    import copy

    import torch

    from ToothMCLCore.models.boundary_gnn import BoundaryGNN, face_shape
    from ToothMCLCore.postprocessing.boundary import FEATURES

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = BoundaryGNN(len(FEATURES), hidden, layers, face_head=face_head, face_geometry=face_geometry)
    band_features = torch.from_numpy(np.concatenate([s["features"][s["band"]] for s in train_scans]))
    model.set_normalisation(band_features.mean(0), band_features.std(0))
    if face_geometry:
        shapes = torch.cat([face_shape(*_tensors(s), torch.from_numpy(s["faces"]))[torch.from_numpy(s["face_band"])]
                            for s in train_scans])
        model.set_face_normalisation(shapes.mean(0), shapes.std(0))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    select = bool(val_scans)
    best = (band_accuracy(model, val_scans) if select else float("nan"), 0, copy.deepcopy(model.state_dict()))
    log = [(0, float("nan"), best[0])]
    for epoch in range(1, epochs + 1):
        losses = []
        for i in rng.permutation(len(train_scans)):
            s = train_scans[i]
            band = s["band"]
            # half the steps see the scan's mirror image: inference averages the two
            tensors = _tensors(s, mirror=rng.random() < 0.5)
            if face_head:
                face_logits, logits = model.face_logits(*tensors, torch.from_numpy(s["faces"]))
                loss = _bce(logits[torch.from_numpy(band)], s["truth"][band]) + _bce(
                    face_logits[torch.from_numpy(s["face_band"])], s["face_truth"][s["face_band"]])
            else:
                loss = _bce(model(*tensors)[torch.from_numpy(band)], s["truth"][band])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        if not select:
            log.append((epoch, float(np.mean(losses)), float("nan")))
            continue
        if epoch % VALIDATE_EVERY == 0 or epoch == epochs:
            accuracy = band_accuracy(model, val_scans)
            log.append((epoch, float(np.mean(losses)), accuracy))
            logger.info("epoch %d: loss %.4f, validation tooth vs gingiva %.4f", epoch, np.mean(losses), accuracy)
            if accuracy > best[0]:
                best = (accuracy, epoch, copy.deepcopy(model.state_dict()))
    if not select:
        model.eval()
        return model, epochs, float("nan"), log
    if best[1] == 0:
        logger.warning("no epoch beat the untrained refiner on the validation jaws: the untrained weights are "
                       "kept (the card says so); train for longer (--epochs) or check the data")
    model.load_state_dict(best[2])
    model.eval()
    return model, best[1], best[0], log


def out_of_fold(scans: list[dict], folds: int, seed: int = 0, **options) -> dict:
    """``--out-of-fold``: the recipe checked on every jaw by a refiner that never saw its patient.

    The jaws' patients are dealt into ``folds`` folds (a permutation seeded 0, patient ``i`` of it
    in fold ``i % folds``); for each fold a refiner is trained on the others' jaws with ``seed``
    and ``options`` (as :func:`train`, with no epoch chosen: the last one is kept) and re-decides
    the band of the fold's jaws. Choosing a recipe on all 55 training and validation jaws this way
    is less noisy than on the 7 validation jaws, and reads no test jaw.

    Returns:
        ``{"folds": [[patient ids]], "per_jaw": {case: tooth vs gingiva}, "upper": mean,
        "lower": mean}`` (a jaw type with no jaw has no mean).
    """
    patients = check_folds(folds, [s["patient"] for s in scans])
    order = np.random.default_rng(0).permutation(patients)
    fold_of = {patient: i % folds for i, patient in enumerate(order)}
    per_jaw = {}
    for k in range(folds):
        held_out = [s for s in scans if fold_of[s["patient"]] == k]
        model, *_ = train([s for s in scans if fold_of[s["patient"]] != k], [], seed=seed, **options)
        for s in held_out:
            per_jaw[s["case"]] = band_accuracy(model, [s])
        logger.info("fold %d of %d: %s", k + 1, folds, ", ".join(f"{s['case']} {per_jaw[s['case']]:.4f}"
                                                                 for s in held_out))
    result = {"folds": [sorted(p for p in patients if fold_of[p] == k) for k in range(folds)],
              "per_jaw": {case: round(value, 5) for case, value in sorted(per_jaw.items())}}
    for jaw in ("upper", "lower"):
        values = [value for case, value in per_jaw.items() if case.endswith(f"_{jaw}")]
        if values:
            result[jaw] = round(float(np.mean(values)), 5)
    return result


def check_folds(folds: int, patient_ids: list[str]) -> list[str]:
    """The sorted distinct ``patient_ids`` (one per jaw); raises InvalidInputError unless 2 <= ``folds`` <=
    their number."""
    from ToothMCLCore.errors import InvalidInputError

    patients = sorted(set(patient_ids))
    if not 2 <= folds <= len(patients):
        raise InvalidInputError(f"--out-of-fold {folds}: give 2 to {len(patients)} folds (one per patient at most)")
    return patients


def validation_figures(ios_weights: Path, refiner: Path, dataset) -> dict:
    """Step 4: the validation split through the whole pipeline without and with ``refiner``."""
    from .train_ios_real import evaluate

    figures = {}
    for key, options in (("settled", {"boundary": False}), ("refined", {"boundary_weights": refiner})):
        summary = evaluate(ios_weights, dataset, split="val", **options)
        figures[key] = {jaw: {k: summary[jaw][k] for k in ("scans", "mean_dice", "tooth_vs_gingiva")}
                        for jaw in ("upper", "lower")}
    return figures


def refiner_card(name: str, hidden: int, layers: int, epochs: int, ios_card, scans: dict, seeds: tuple,
                 best_epochs: list, accuracies: list, logs: list, bag_accuracy: float, face_head: bool = True,
                 face_geometry: bool = False):
    """The refiner's card (before its SHA-256): what it was trained for and on, the scans' edge range.
    ``best_epochs``, ``accuracies`` and ``logs`` have one entry per seed (:func:`train_bag`)."""
    from ToothMCLCore.config import ModelCard
    from ToothMCLCore.postprocessing.boundary import BAND_HOPS, FEATURES

    from .train_ios_real import LICENCE, SPLIT, SPLIT_SEED

    edges = [s["median_edge_mm"] for s in scans["train"]]
    edge_range = [round(min(edges) * (1 - EDGE_MARGIN), 3), round(max(edges) * (1 + EDGE_MARGIN), 3)]
    return ModelCard(
        name=name, version="1.0.0", task="ios_boundary", architecture="boundary_gnn",
        arch_args={"n_features": len(FEATURES), "hidden": hidden, "layers": layers, "face_head": face_head,
                   "face_geometry": face_geometry, "bag": len(seeds)},
        class_scheme="binary",
        preprocess={"band_hops": BAND_HOPS, "median_edge_mm": edge_range, "features": list(FEATURES)},
        training_data=(f"{len(scans['train'])} training jaws of real intraoral scans of MeshSegNet, licence {LICENCE}, "
                       f"split by patient as for the IOS model (fractions {list(SPLIT)}, seed {SPLIT_SEED}), "
                       f"as segmented by {ios_card.name} (SHA-256 {ios_card.sha256[:12]}"
                       + "".join(f", averaged with {m}" for m in ios_card.members) + "); epoch chosen on "
                       f"{len(scans['val'])} validation jaws; the test split never read"),
        intended_use=(f"Re-decides tooth or gingiva near the settled boundary of {ios_card.name}'s segmentation, on "
                      "scans whose median edge lies in preprocess.median_edge_mm. Research use, not a medical device."),
        notes=(_untrained(best_epochs, seeds)
               + f"BoundaryGNN, {epochs} epochs (best: {_listed(best_epochs)}), AdamW lr 2e-3, weight decay 1e-4, "
               f"seed {_listed(seeds)}; each step on the jaw or its mirror image; "
               + ("loss: binary cross-entropy on the band's vertices plus on the triangles that touch the band "
                  "(the labels as drawn); a band vertex follows the vote of its triangles; " if face_head else
                  "loss: binary cross-entropy on the band's vertices; ")
               + ("the face head also reads its triangle's shape and the max and min of its vertices' states; "
                  if face_geometry else "")
               + f"validation tooth vs gingiva with the band re-decided: {_listed(accuracies, '.4f')}"
               + (f"; the {len(seeds)} refiners' logits averaged: {bag_accuracy:.4f}." if len(seeds) > 1 else ".")),
        metrics={"training_log": _training_log(logs, seeds)},
    )


def _untrained(epochs, seeds) -> str:
    """The card's warning when a seed kept its untrained weights (best epoch 0), else ""."""
    untrained = [seed for seed, epoch in zip(seeds, epochs) if epoch == 0]
    if not untrained:
        return ""
    return f"UNTRAINED (seed {_listed(untrained)}): no epoch beat the untrained network on the validation jaws. "


def _listed(values, spec: str = "") -> str:
    """``values`` (one per seed) as "a" or "a, b, c"."""
    return ", ".join(format(v, spec) for v in values)


def _training_log(logs, seeds) -> list[dict]:
    """The card's training log: one row per validation, with its seed when several were trained."""
    return [{**({"seed": seed} if len(seeds) > 1 else {}), "epoch": e,
             "loss": None if np.isnan(loss) else round(loss, 5), "val_tooth_vs_gingiva": round(acc, 5)}
            for seed, log in zip(seeds, logs) for e, loss, acc in log]


def train_bag(train_scans: list[dict], val_scans: list[dict], seeds, **options):
    """(refiner, best epochs, validation accuracies, logs: one per seed, the refiner's validation
    accuracy): :func:`train` once per seed, each choosing its own epoch; several are averaged in a
    :class:`~ToothMCLCore.models.boundary_gnn.BoundaryBag`, one is returned as it is."""
    from ToothMCLCore.models.boundary_gnn import BoundaryBag

    models, best_epochs, accuracies, logs = zip(*(train(train_scans, val_scans, seed=seed, **options)
                                                  for seed in seeds))
    if len(models) == 1:
        return models[0], list(best_epochs), list(accuracies), list(logs), accuracies[0]
    bag = BoundaryBag(list(models))
    bag_accuracy = band_accuracy(bag, val_scans)
    bag.eval()  # band_accuracy leaves it in training mode
    return bag, list(best_epochs), list(accuracies), list(logs), bag_accuracy


def main(argv=None) -> int:
    from ToothMCLCore.inference.ios import DEFAULT_IOS_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of MeshSegNet's <N>_up.vtp / <N>_down.vtp")
    p.add_argument("--out", default="runs/ios_boundary", help="output folder (export/, the refiner and its card)")
    p.add_argument("--export", help="the converted dataset (default: OUT/export; made there when absent)")
    p.add_argument("--model", default=DEFAULT_IOS_MODEL, help="registry name of the IOS model (default: %(default)s)")
    p.add_argument("--weights", help="the IOS model's .safetensors file instead of --model")
    p.add_argument("--name", default="ios_boundary_real_v4", help="the refiner's name (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--hidden", type=int, default=48)
    p.add_argument("--layers", type=int, default=4, help="message-passing rounds (default: %(default)s)")
    p.add_argument("--no-face-head", action="store_true",
                   help="decide band vertices by their own logits, not by their triangles' vote (the first refiners)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train one refiner per seed and "
                   "average their logits (default: %(default)s)")
    p.add_argument("--face-geometry", action="store_true",
                   help="the face head also reads its triangle's shape and the max and min of its vertices' states")
    p.add_argument("--out-of-fold", type=int, default=0, metavar="K",
                   help="instead of training the refiner, check the recipe out of fold: K folds by patient over the "
                        "training and validation jaws, the first seed, --epochs with no epoch chosen; writes "
                        "OUT/out_of_fold.json and no weights")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training and validation jaws (a quick "
                                                        "check of the command; 0: all)")
    p.add_argument("--no-validation-figures", action="store_true",
                   help="skip step 4's whole-pipeline run on the validation split")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from ToothMCLCore.errors import InvalidInputError, ToothMCLError
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.io.public_datasets.meshsegnet import find_cases
    from ToothMCLCore.models.checkpoint import save_checkpoint, update_card
    from ToothMCLCore.models.registry import resolve_weights

    from .finetune import write_registry_entry
    from .train_ios_real import convert

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        export = Path(args.export) if args.export else out / "export"
        dataset = convert(Path(args.data), export)
        ios_weights = Path(args.weights) if args.weights else resolve_weights(args.model)[0]
        predictor = IOSPredictor(weights=ios_weights, device="cpu", boundary=False)
        limit = args.limit or None
        scan_files = {f"{patient}_{jaw}": path for patient, jaw, path in find_cases(Path(args.data))}
        if args.out_of_fold:
            check_folds(args.out_of_fold, [case.patient_id for split in ("train", "val")
                                           for case in dataset.split(split)[:limit]])
        scans = {}
        for split in ("train", "val"):
            scans[split] = []
            if not dataset.split(split):
                raise InvalidInputError(f"{export} has no {split} cases; the refiner needs both splits")
            for case in dataset.split(split)[:limit]:
                logger.info("%s: %s", split, case.case_id)
                if case.case_id not in scan_files:
                    raise InvalidInputError(f"{case.case_id} of {export} is not among the scans of "
                                            f"{args.data}; the refiner needs the scans the export was converted from")
                scans[split].append(scan_inputs(predictor, case, scan_files[case.case_id]))
        face_head = not args.no_face_head
        if args.face_geometry and not face_head:
            raise InvalidInputError("--face-geometry needs the face head: drop --no-face-head")
        seeds = tuple(dict.fromkeys(args.seeds))
        if args.out_of_fold:
            return _report_out_of_fold(out_of_fold(scans["train"] + scans["val"], args.out_of_fold, seeds[0],
                                                   epochs=args.epochs, hidden=args.hidden, layers=args.layers,
                                                   face_head=face_head, face_geometry=args.face_geometry), out)
        model, best_epochs, accuracies, logs, bag_accuracy = train_bag(
            scans["train"], scans["val"], seeds, epochs=args.epochs, hidden=args.hidden, layers=args.layers,
            face_head=face_head, face_geometry=args.face_geometry)
        card = refiner_card(args.name, args.hidden, args.layers, args.epochs, predictor.card, scans, seeds,
                            best_epochs, accuracies, logs, bag_accuracy, face_head, args.face_geometry)
        weights = out / f"{args.name}.safetensors"
        card = save_checkpoint(model, card, weights)
        registry, _ = write_registry_entry(weights)
        if not args.no_validation_figures:
            figures = validation_figures(ios_weights, weights, dataset)
            update_card(weights, metrics={**card.metrics, "validation_split": figures})
            for key, jaws in figures.items():
                print(f"validation, {key}: " + ", ".join(
                    f"{jaw} Dice {f['mean_dice']:.4f} tooth vs gingiva {f['tooth_vs_gingiva']:.4f}"
                    for jaw, f in jaws.items()))
    except ToothMCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"refiner (best epoch {_listed(best_epochs)}, validation tooth vs gingiva {_listed(accuracies, '.4f')}"
          + (f", averaged {bag_accuracy:.4f}" if len(seeds) > 1 else "") + f"): {weights}")
    print(f"registry entry: {registry} (name it in an IOS model card's boundary_model, with TOOTHMCL_REGISTRY={registry})")
    return 0


def _report_out_of_fold(result: dict, out: Path) -> int:
    from ToothMCLCore.io.atomic import atomic_write_text

    path = out / "out_of_fold.json"
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    print("out of fold, tooth vs gingiva with the band re-decided: " + ", ".join(
        f"{jaw} {result[jaw]:.4f}" for jaw in ("upper", "lower") if jaw in result)
          + f" ({len(result['per_jaw'])} jaws, {len(result['folds'])} folds by patient): {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
