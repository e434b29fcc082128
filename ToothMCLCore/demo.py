"""``toothmcl demo``: segment a synthetic phantom that no model was trained on, and score it.

The phantom (seed 2024 by default; the CBCT demo weights were trained on other seeds) is
segmented with the default models: the CBCT demo model (trained on phantoms) and the intraoral
model trained on real scans, whose real test-split figures are printed beside its phantom Dice.
The phantom is written next to the results so that a user can open both in 3D Slicer:

    toothmcl-demo/phantom_cbct.nii.gz          the CBCT-like input
    toothmcl-demo/phantom_cbct_truth.seg.nrrd  its ground-truth teeth
    toothmcl-demo/phantom_cbct_pred.seg.nrrd   ToothMCL's segmentation (open over the input)
    toothmcl-demo/phantom_upper.ply, phantom_lower.ply              the intraoral scans
    toothmcl-demo/phantom_{upper,lower}_truth.json / _pred.json      Teeth3DS labels
    toothmcl-demo/phantom_{upper,lower}_pred.ply                     scans with an FDI array
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from . import fdi

logger = logging.getLogger(__name__)

#: the demo phantom: held out from training, with a metal crown and a missing tooth
DEMO_PHANTOM = {"metal": True, "missing": (25,), "orientation": "oblique"}


def run_demo(out_dir: Path, device: str = "auto", seed: int = 2024, progress=None,
             stream=None) -> int:
    """Generate, segment, write and score the demo case; returns the exit code (0)."""
    stream = stream or sys.stdout
    from .console import print_teeth_table, write_cbct_labels
    from .evaluation.dice import dice_per_tooth, false_positive_teeth, mean_dice
    from .inference.cbct import CBCTPredictor
    from .io import write_seg_nrrd, write_volume
    from .synthetic import make_cbct_phantom

    out_dir.mkdir(parents=True, exist_ok=True)
    stream.write(f"generating CBCT phantom (seed {seed}) ...\n")
    image, truth = make_cbct_phantom(seed=seed, **DEMO_PHANTOM)
    write_volume(out_dir / "phantom_cbct.nii.gz", image)
    write_seg_nrrd(out_dir / "phantom_cbct_truth.seg.nrrd", truth.array, truth)

    predictor = CBCTPredictor(device=device)
    stream.write(f"segmenting with {predictor.card.name} on {predictor.device} "
                 f"({predictor.card.intended_use}) ...\n")
    start = time.monotonic()
    result = predictor.predict(image, progress=progress)
    elapsed = time.monotonic() - start
    write_cbct_labels(out_dir / "phantom_cbct_pred.seg.nrrd", result)
    print_teeth_table(result.teeth, stream)

    scores = dice_per_tooth(result.labels.array, truth.array)
    stream.write("\nper-tooth Dice against the phantom's truth:\n")
    for number, d in scores.items():
        stream.write(f"  {number:>3} {fdi.tooth(number).name:<34} {d:.3f}\n")
    extra = false_positive_teeth(result.labels.array, truth.array)
    if extra:
        stream.write(f"  teeth predicted but absent: {extra}\n")
    stream.write(f"CBCT mean Dice over {len(scores)} present teeth: {mean_dice(scores):.3f} "
                 f"({elapsed:.1f} s)\n")
    run_ios_demo(out_dir, device, seed, stream)
    stream.write(f"outputs in {out_dir}/\n")
    return 0


def run_ios_demo(out_dir: Path, device: str, seed: int, stream) -> None:
    """Segment the phantom's upper and lower scans and print per-tooth Dice for each jaw."""
    from .evaluation.dice import dice_per_tooth, mean_dice
    from .inference.ios import IOSPredictor
    from .io.mesh import read_mesh, write_mesh
    from .io.teeth3ds import write_teeth3ds_json
    from .synthetic.ios import make_ios_phantom

    predictor = IOSPredictor(device=device)
    stream.write(f"\nsegmenting the intraoral scans with {predictor.card.name} ...\n")
    real = real_scan_figures(predictor.card)
    if real:
        stream.write(real + "\n")
    for jaw in ("upper", "lower"):
        truth = make_ios_phantom(seed, jaw=jaw, missing=DEMO_PHANTOM["missing"])
        scan_path = out_dir / f"phantom_{jaw}.ply"
        write_mesh(scan_path, truth)
        write_teeth3ds_json(out_dir / f"phantom_{jaw}_truth.json", truth.labels, truth.instances, jaw,
                            id_patient="phantom", n_vertices=truth.n_vertices)
        scan = read_mesh(scan_path)
        start = time.monotonic()
        result = predictor.predict(scan, jaw)
        elapsed = time.monotonic() - start
        write_teeth3ds_json(out_dir / f"phantom_{jaw}_pred.json", result.labels, result.instances, jaw,
                            id_patient="phantom", n_vertices=scan.n_file_vertices)
        write_mesh(out_dir / f"phantom_{jaw}_pred.ply", scan.mesh, vertex_labels=result.labels[scan.clean_to_file])
        scores = dice_per_tooth(result.labels, truth.labels)
        stream.write(f"{jaw} jaw, per-tooth Dice: "
                     + " ".join(f"{n}:{d:.2f}" for n, d in scores.items()) + "\n")
        stream.write(f"IOS {jaw} mean Dice over {len(scores)} present teeth: {mean_dice(scores):.3f} "
                     f"({elapsed:.1f} s)\n")


def real_scan_figures(card) -> str:
    """One line with the figures a model card records on real scans (its test split), or ""."""
    split = (card.metrics or {}).get("test_split") or {}
    upper, lower = split.get("upper") or {}, split.get("lower") or {}
    if not (upper and lower):
        return ""
    return (f"{card.name} was trained on real scans; on {upper['scans'] + lower['scans']} real test jaws of patients "
            f"it never saw: mean per-tooth Dice {upper['mean_dice']:.3f} upper / {lower['mean_dice']:.3f} lower, "
            f"tooth vs gingiva {upper['tooth_vs_gingiva']:.3f} / {lower['tooth_vs_gingiva']:.3f} (a phantom is not "
            "a real scan: its Dice below says less)")
