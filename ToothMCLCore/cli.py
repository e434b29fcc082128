"""The ``toothmcl`` command line.

Subcommands: ``demo``, ``segment-cbct``, ``segment-ios``, ``evaluate-cbct``, ``evaluate-ios``,
``corrections``, ``export-dataset``, ``convert-dataset``, ``models``. Every :class:`ToothMCLError` becomes one
line on stderr and its exit code; no output file is left behind on failure (writers are
atomic and run only after the segmentation succeeded).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .console import Progress, print_teeth_table, write_cbct_labels
from .errors import OutputError, ToothMCLError

logger = logging.getLogger("toothmcl")

CBCT_OUTPUT_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")


def _check_output(path: str, suffixes: tuple[str, ...]) -> Path:
    from .io.atomic import full_suffix

    out = Path(path)
    if full_suffix(out) not in suffixes:
        raise OutputError(f"output {out.name} must end in one of {', '.join(suffixes)}")
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        raise OutputError(f"output folder {out.parent} does not exist; create it first")
    return out


def cmd_segment_cbct(args) -> int:
    from .inference.cbct import CBCTPredictor
    from .io import read_volume

    out = _check_output(args.output, CBCT_OUTPUT_SUFFIXES)
    # The networks build (torch and MONAI imports included) while the scan is read and
    # preprocessed; a bad --weights or --model still fails here, before the scan is read.
    from .errors import InvalidInputError
    from .inference.cbct_nnunet import cbct_predictor, is_nnunet_model, is_results_folder

    if is_results_folder(args.weights) or (args.model and is_nnunet_model(args.model)):  # nnU-Net v2
        if args.paper_protocol:
            raise InvalidInputError("--paper-protocol runs the ToothMCL paper's pipeline; drop it for an nnU-Net model")
        if args.backend not in ("auto", "torch"):
            raise InvalidInputError(f"--backend {args.backend} runs ToothMCL's SwinUNETR models; drop it for an "
                                    "nnU-Net model")
        predictor = cbct_predictor(weights=args.weights, model=args.model, device=args.device,
                                   precision=args.precision)
    else:
        predictor = CBCTPredictor(weights=args.weights, model=args.model, device=args.device,
                                  load_in_background=True, paper_protocol=args.paper_protocol,
                                  precision=args.precision, backend=args.backend)
    volume = read_volume(args.input)
    result = predictor.predict(volume, progress=Progress(enabled=not args.quiet))
    if predictor.device.type == "cpu":
        logger.info("ran on CPU; a GPU is much faster for full-resolution models")
    write_cbct_labels(out, result)
    print_teeth_table(result.teeth)
    if result.provenance.get("structures"):
        print(f"other structures: {result.provenance['structures']}")
    print(f"wrote {out}")
    return 0


IOS_MESH_SUFFIXES = (".ply", ".vtp")


def load_scan(path, units: str, jaw: str | None):
    """Read a scan, refuse a two-jaw scan, and decide the jaw; logs which rule decided."""
    from .errors import InvalidInputError
    from .io.mesh import detect_jaw, looks_like_both_jaws, read_mesh

    scan = read_mesh(path, units=units)
    if looks_like_both_jaws(scan.mesh):
        raise InvalidInputError(
            f"{Path(path).name} seems to hold both jaws; export the upper and the lower scan as "
            "separate files and segment each"
        )
    jaw, rule = detect_jaw(path, scan.mesh, jaw, normals=scan.normals)
    return scan, jaw, rule


def cmd_segment_ios(args) -> int:
    from .inference.ios import ios_predictor
    from .io.mesh import write_mesh, write_teeth_stls
    from .io.teeth3ds import write_teeth3ds_json

    out = _check_output(args.output, (".json",))
    mesh_out = _check_output(args.mesh_out, IOS_MESH_SUFFIXES) if args.mesh_out else None
    scan, jaw, rule = load_scan(args.input, args.units, args.jaw)
    print(f"{Path(args.input).name}: {scan.n_file_vertices} vertices, {jaw} jaw (decided by {rule})")
    for note in scan.notes:
        print(f"  {note}")
    predictor = ios_predictor(weights=args.weights, model=args.model, device=args.device, passes=args.passes,
                              mirror=args.mirror, sam_checkpoint=args.sam_checkpoint, fdi_order=args.fdi_order,
                              paper_protocol=args.paper_protocol or None, refine=args.refine)
    result = predictor.predict(scan, jaw, progress=Progress(enabled=not args.quiet))
    if result.provenance.get("decimated_from_faces"):
        to = f" to {result.provenance['faces']}" if result.provenance.get("faces") else ""
        print(f"  decimated from {result.provenance['decimated_from_faces']}{to} faces before segmenting")
    clean_labels = result.labels[scan.clean_to_file]
    if mesh_out is not None:
        write_mesh(mesh_out, scan.mesh, vertex_labels=clean_labels)
    if args.teeth_dir:
        folder = Path(args.teeth_dir)
        folder.mkdir(parents=True, exist_ok=True)
        write_teeth_stls(folder, scan.mesh, clean_labels)
    write_teeth3ds_json(out, result.labels, result.instances, jaw, id_patient=Path(args.input).stem.split("_")[0],
                        n_vertices=scan.n_file_vertices)
    print(f"{'FDI':>4}  {'tooth':<34} {'vertices':>9} {'area mm2':>9}")
    for t in result.teeth:
        print(f"{t.fdi:>4}  {t.name:<34} {t.vertices:>9} {t.area_mm2:>9.1f}")
    print(f"{len(result.teeth)} teeth found")
    print(f"wrote {out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(out_dir=Path(args.out), device=args.device, seed=args.seed,
                    progress=Progress(enabled=not args.quiet))


def cmd_models(args) -> int:
    from .inference.cbct import DEFAULT_CBCT_MODEL
    from .inference.ios import DEFAULT_IOS_MODEL
    from .models.registry import load_registry

    defaults = {DEFAULT_CBCT_MODEL: " (the default for CBCT)", DEFAULT_IOS_MODEL: " (the default for intraoral scans)"}
    for name, entry in sorted(load_registry().items()):
        kind = " (nnU-Net v2)" if entry.format == "nnunetv2" else ""
        if entry.task == "ios_boundary":
            kind = " (boundary refiner: runs inside the IOS model whose card names it, not with --model)"
        print(f"{name:<28} {entry.sha256[:12]}  {entry.description}{kind}{defaults.get(name, '')}")
    return 0


def _add_model_options(parser) -> None:
    """--model / --weights (exclusive), --device and --quiet, shared by the segment commands."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--model", help="registry name (see 'toothmcl models')")
    g.add_argument("--weights", help="path to a .safetensors file with its .json card, or (segment-cbct) an "
                                     "nnU-Net v2 results folder <Trainer>__<Plans>__<configuration>")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--paper-protocol", action="store_true",
                        help="the ToothMCL paper's pipeline only, to compare with its tables: most probable class "
                             "per voxel / vertex, one point sampling, no clean-up or order-aware numbering (ours)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toothmcl", description="Segment and number teeth (FDI) in CBCT volumes and intraoral scans.")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment-cbct", help="segment the teeth of a CBCT volume")
    s.add_argument("input", help="NIfTI, NRRD, MHA file or DICOM series folder")
    s.add_argument("-o", "--output", required=True, help="OUTPUT.seg.nrrd or OUTPUT.nii.gz")
    _add_model_options(s)
    s.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="CPU arithmetic of the network: auto = bfloat16 where the CPU has bf16 instructions (about "
                        "twice as fast, labels within 0.01 %% of fp32 on the demo phantom), else fp32; a GPU uses fp16")
    s.add_argument("--backend", default="auto", choices=("auto", "torch", "openvino", "onnxruntime"),
                   help="what runs the network's windows on CPU: auto = OpenVINO where it is installed, else PyTorch; "
                        "openvino (in --precision, 3.8x PyTorch bf16 for the paper-size model; pip install -e "
                        "\".[openvino]\"), onnxruntime (fp32, 1.5x PyTorch fp32; pip install -e \".[onnx]\"), torch. "
                        "The first run of a model with an exported-graph backend exports it (about 25 s for the "
                        "paper-size model); a GPU always runs PyTorch")
    s.set_defaults(func=cmd_segment_cbct)

    i = sub.add_parser("segment-ios", help="segment the teeth of an intraoral scan (one jaw)")
    i.add_argument("input", help="OBJ, STL, PLY, VTP or VTK mesh of one jaw")
    i.add_argument("-o", "--output", required=True, help="Teeth3DS label file OUTPUT.json")
    i.add_argument("--jaw", choices=("upper", "lower"), help="default: from the file name, else the geometry")
    i.add_argument("--units", default="mm", choices=("mm", "cm", "m", "um"), help="units of the file")
    i.add_argument("--mesh-out", help="also write the mesh with a per-vertex FDI array (.ply or .vtp)")
    i.add_argument("--teeth-dir", help="also write one STL per tooth into this folder")
    i.add_argument("--passes", type=int,
                   help="Point Transformer models: point samplings averaged (default: the model card's, else 6; "
                        "1 = the paper's single sampling, about 6x faster in the network)")
    i.add_argument("--mirror", action=argparse.BooleanOptionalAction,
                   help="Point Transformer models: also segment each sample's mirror image and average (default: "
                        "the model card's; --no-mirror is the paper's way)")
    i.add_argument("--refine", action=argparse.BooleanOptionalAction,
                   help="Point Transformer models: settle tooth boundaries on the surface (a graph cut along "
                        "concave creases, the teeth numbered in sequence along the arch, then a random walk "
                        "between teeth) before numbering, and re-decide tooth or gingiva next to the boundary "
                        "with the card's learned refiner (default: on; --no-refine gives the network's own "
                        "boundaries and numbers)")
    i.add_argument("--fdi-order", action=argparse.BooleanOptionalAction,
                   help="SOFTooth models: number teeth with the arch-order prior (default: the card's, on); "
                        "--no-fdi-order numbers by class probabilities alone (the paper's ablation)")
    i.add_argument("--sam-checkpoint", metavar="PATH",
                   help="SOFTooth models with PRG: the SAM image-encoder checkpoint (default: "
                        "$TOOTHMCL_SAM_CHECKPOINT, else the ToothMCL cache)")
    _add_model_options(i)
    i.set_defaults(func=cmd_segment_ios)

    from .evaluation.cli import add_evaluation_parsers

    add_evaluation_parsers(sub)

    from .corrections.cli import add_corrections_parsers, add_export_parsers
    from .io.public_datasets.cli import add_convert_parsers

    add_corrections_parsers(sub)
    add_export_parsers(sub)
    add_convert_parsers(sub)

    d = sub.add_parser("demo", help="segment a synthetic phantom with the demo weights and print Dice")
    d.add_argument("--out", default="toothmcl-demo", help="output folder (default: ./toothmcl-demo)")
    d.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    d.add_argument("--seed", type=int, default=2024, help="phantom seed (not used in training)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("models", help="list the named models")
    m.set_defaults(func=cmd_models)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ToothMCLError as exc:
        print(f"toothmcl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("toothmcl: interrupted; nothing was written", file=sys.stderr)
        return 130
    except MemoryError:
        print("toothmcl: error: out of memory; crop or downsample the volume first", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
