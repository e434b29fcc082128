"""``toothmcl evaluate-cbct`` and ``toothmcl evaluate-ios``: evaluation reports from a terminal.

:func:`add_evaluation_parsers` adds both commands to the ``toothmcl`` parser.

- ``evaluate-cbct PRED_DIR GT_DIR [-o REPORT] [--name NAME] [--compare NAME=DIR ...]``: Dice per
  FDI tooth and tooth group with 95 % confidence intervals and paired t-tests, written as a
  report folder (:mod:`.report`); a short table goes to stdout.
- ``evaluate-ios PRED GT --mesh MESH``: one scan; prints every metric as JSON (unchanged).
  ``evaluate-ios PRED_DIR GT_DIR [--mesh MESH_DIR] [-o REPORT] ...``: the report of a folder of
  scans, as for CBCT plus the 3DTeethSeg'22 metrics, OA, mIoU and SOFTooth's third-molar IoU,
  pairwise confusion rates and normalised centre error (:mod:`.softooth_metrics`).

Handlers return 0; every failure is a :class:`~ToothMCLCore.errors.ToothMCLError` that
``main()`` turns into one line on stderr and a non-zero exit code, and then no report folder
exists (it is written to a temporary folder and renamed at the end).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InvalidInputError

DEFAULT_REPORT = "toothmcl-report"


def _method(text: str) -> tuple[str, str]:
    """``NAME=PRED_DIR`` of ``--compare``."""
    name, sep, folder = text.partition("=")
    if not sep or not name.strip() or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=PRED_DIR (got {text!r}), "
                                         "e.g. --compare baseline=preds/unet")
    return name.strip(), folder


def _methods(args) -> dict[str, str]:
    """{method name: prediction folder}, the positional PRED_DIR first."""
    first = args.name or Path(args.prediction).resolve().name or "prediction"
    methods = {first: args.prediction}
    for name, folder in args.compare:
        if name in methods:
            raise InvalidInputError(f"method name {name!r} is used twice; give each prediction folder its "
                                    "own name (--name for PRED_DIR, NAME= for --compare)")
        methods[name] = folder
    return methods


def _progress(args):
    from ..console import Progress

    return Progress(enabled=not args.quiet)


def _report(args, evaluation) -> int:
    from .report import console_summary, write_report

    dest = write_report(evaluation, args.output or DEFAULT_REPORT, overwrite=args.overwrite)
    for line in console_summary(evaluation):
        print(line)
    print(f"wrote {dest} (summary.md, per_case.csv, per_tooth.csv and three PNG plots)")
    return 0


def cmd_evaluate_cbct(args) -> int:
    from .cbct_eval import evaluate_cbct_folders
    from .report import check_destination

    methods = _methods(args)
    check_destination(args.output or DEFAULT_REPORT, args.overwrite)
    evaluation = evaluate_cbct_folders(args.truth, methods, progress=_progress(args))
    return _report(args, evaluation)


def cmd_evaluate_ios(args) -> int:
    if args.faces is not None and args.faces < 100:
        raise InvalidInputError(f"--faces must be at least 100 (got {args.faces}); the SOFTooth protocol uses 10000")
    pred, truth = Path(args.prediction), Path(args.truth)
    if pred.is_dir() or truth.is_dir():
        if not (pred.is_dir() and truth.is_dir()):
            kinds = ["folder" if p.is_dir() else "file" for p in (pred, truth)]
            raise InvalidInputError(f"give two label files or two folders (got {kinds[0]} {pred} and "
                                    f"{kinds[1]} {truth})")
        from .ios_eval import evaluate_ios_folders
        from .report import check_destination

        methods = _methods(args)
        check_destination(args.output or DEFAULT_REPORT, args.overwrite)
        evaluation = evaluate_ios_folders(truth, methods, mesh_dir=args.mesh, progress=_progress(args),
                                          faces=args.faces)
        return _report(args, evaluation)
    options = (("-o", args.output), ("--name", args.name), ("--compare", args.compare),
               ("--overwrite", args.overwrite))
    used = [flag for flag, value in options if value]
    if used:
        raise InvalidInputError(f"{', '.join(used)} apply to folders only; with single files evaluate-ios "
                                "prints JSON (give PRED_DIR GT_DIR for a report)")
    if not args.mesh:
        raise InvalidInputError("--mesh is required with single files: give the scan both label files "
                                "belong to")
    return _evaluate_one_scan(args.prediction, args.truth, args.mesh, args.faces)


def _evaluate_one_scan(prediction, truth, mesh, faces: int | None = None) -> int:
    """The single-scan mode: every metric of :func:`.ios_metrics.evaluate_ios` as JSON on stdout."""
    from ..io.mesh import read_mesh
    from ..io.teeth3ds import read_teeth3ds_json
    from .ios_metrics import evaluate_ios

    scan = read_mesh(mesh)
    vertices = scan.mesh.vertices_ras[scan.file_to_clean.clip(0)]
    gt = read_teeth3ds_json(truth, n_vertices=scan.n_file_vertices)
    pred = read_teeth3ds_json(prediction, n_vertices=scan.n_file_vertices, jaw=gt.jaw)
    from .ios_eval import scoring_units

    points, pred_labels, pred_instances, gt_labels, gt_instances = scoring_units(scan, vertices, pred, gt, faces)
    metrics = evaluate_ios(pred_labels, pred_instances, gt_labels, gt_instances, points, jaw=gt.jaw)
    print(json.dumps(metrics, indent=2, default=_json_default))
    return 0


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _add_report_options(parser) -> None:
    parser.add_argument("-o", "--output", metavar="REPORT",
                        help=f"report folder to create (default: ./{DEFAULT_REPORT}); its parent must exist")
    parser.add_argument("--name", help="method name of PRED_DIR in the report (default: the folder's name)")
    parser.add_argument("--compare", action="append", type=_method, default=[], metavar="NAME=PRED_DIR",
                        help="another method's predictions; repeat for more. Each is compared with PRED_DIR "
                             "by a two-sided paired t-test")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_evaluation_parsers(subparsers) -> None:
    """Add ``evaluate-cbct`` and ``evaluate-ios`` to the ``toothmcl`` sub-parsers."""
    c = subparsers.add_parser(
        "evaluate-cbct", help="Dice per FDI tooth and tooth group of CBCT label maps: a report folder",
        description="Compare predicted CBCT label maps with ground truth, case by case (files pair by name; "
                    "a trailing _0000, _pred or _prediction is ignored). Writes summary.md, per_case.csv, "
                    "per_tooth.csv and PNG plots: Dice per tooth and group with 95%% confidence intervals "
                    "across cases, and two-sided paired t-tests between methods.")
    c.add_argument("prediction", metavar="PRED_DIR", help="folder of predicted label maps "
                   "(.seg.nrrd, .nii.gz, .nii, .nrrd, .mha)")
    c.add_argument("truth", metavar="GT_DIR", help="folder of ground-truth label maps (FDI numbers)")
    _add_report_options(c)
    c.set_defaults(func=cmd_evaluate_cbct)

    i = subparsers.add_parser(
        "evaluate-ios", help="3DTeethSeg'22 metrics, OA, mIoU, SOFTooth's third-molar IoU, confusion rates "
                             "and centre error, per-tooth Dice: JSON for one scan, a report folder for folders",
        description="With two Teeth3DS label files and --mesh: print every metric of that scan as JSON. "
                    "With two folders: evaluate every case (files pair by name) and write a report folder "
                    "as evaluate-cbct does, plus TSA, TLA, TIR, score, OA, mIoU, third-molar IoU, the pairwise "
                    "confusion rates (2nd vs 3rd molars, premolars vs 1st molars, central vs lateral "
                    "incisors) and the normalised centre error of SOFTooth's Tables III-IV per jaw.")
    i.add_argument("prediction", metavar="PRED", help="predicted Teeth3DS JSON, or a folder of them")
    i.add_argument("truth", metavar="GT", help="ground-truth Teeth3DS JSON, or a folder of them")
    i.add_argument("--mesh", help="the scan both files label; with folders, the folder of the scans "
                                  "(default: GT, where Teeth3DS keeps them)")
    i.add_argument("--faces", type=int, metavar="N",
                   help="score on the faces of each scan decimated to about N (SOFTooth's protocol: 10000) "
                        "instead of on the vertices of the file")
    _add_report_options(i)
    i.set_defaults(func=cmd_evaluate_ios)
