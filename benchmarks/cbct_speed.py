"""CBCT speed benchmark: ``toothmcl segment-cbct`` against plain MONAI sliding-window inference.

    python benchmarks/cbct_speed.py [--model NAME | --weights PATH] [--device cpu]

Builds a realistic-size phantom (about 400 x 400 x 250 voxels at 0.3 mm, a 120 x 120 x 75 mm
field of view), then times in the same run and with the same weights:

(a) ``toothmcl segment-cbct`` end to end (read, preprocess, ROI crop, one window over the crop
    or a sliding window with the card's overlap, post-processing, restore, write);
(b) the baseline: a script that reads the scan and preprocesses it exactly as (a) does, then
    runs MONAI ``sliding_window_inference`` over the *whole* volume with overlap 0.5, fp32, no
    crop, takes the argmax, resamples it back and writes it.

Each variant is its own process, timed from its start to its exit, because that is what a
user waits for: both pay the same Python, torch and MONAI imports (5-9 s for MONAI alone on
two cores). Timing only the work after the imports would flatter whichever variant hides
them. Peak resident memory is each process's own. The script prints both times, their
ratio, both peaks, both mean Dice scores against the phantom's truth, and each variant's
stages. This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ToothMCLCore.inference.cbct import DEFAULT_CBCT_MODEL

FOV_MM = (120.0, 120.0, 75.0)
BASELINE_OVERLAP = 0.5


def run_baseline(weights, model, device, image_path, out_path) -> None:
    """Variant (b), run as ``cbct_speed.py --baseline-child``; prints its stages as JSON."""
    start = time.perf_counter()
    stages = {}

    def lap(name):
        nonlocal start
        now = time.perf_counter()
        stages[name] = round(now - start, 2)
        start = now

    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from ToothMCLCore import fdi
    from ToothMCLCore.config import CBCTPreprocessConfig, SlidingWindowConfig
    from ToothMCLCore.inference.cbct import _load
    from ToothMCLCore.inference.device import resolve_device
    from ToothMCLCore.io import read_volume, write_labelmap
    from ToothMCLCore.preprocessing.cbct import preprocess_cbct, resample_onto
    from ToothMCLCore.types import Volume

    lap("imports")
    device = resolve_device(device)
    net, card = _load(weights, model, device)
    lap("load model")
    volume = read_volume(image_path)
    canonical, _ = preprocess_cbct(volume, CBCTPreprocessConfig.from_dict(card.preprocess))
    lap("read + preprocess")
    roi = SlidingWindowConfig.from_dict(card.sliding_window).roi_size
    x = torch.from_numpy(canonical.array)[None, None]
    with torch.inference_mode():
        logits = sliding_window_inference(x, roi, 1, net, overlap=BASELINE_OVERLAP, mode="gaussian",
                                          sw_device=device, device=torch.device("cpu"))
    classes = logits[0].argmax(0).numpy()
    lap("sliding window")
    labels = fdi.class_index_to_fdi(classes, "cbct").astype(np.uint8)
    restored = resample_onto(Volume(labels, canonical.geometry), volume.geometry, volume.array.shape,
                             is_label=True)
    write_labelmap(out_path, restored.array, volume)
    lap("restore + write")
    print(json.dumps(stages))


def _timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` to its exit; wall seconds, its own peak RSS, exit code, and what it printed."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024.0, "code": proc.returncode,
            "output": log.read_text()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default=DEFAULT_CBCT_MODEL)
    g.add_argument("--weights")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--baseline-child", nargs=2, metavar=("IMAGE", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.baseline_child:
        run_baseline(args.weights, None if args.weights else args.model, args.device, *args.baseline_child)
        return 0

    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice
    from ToothMCLCore.io import read_volume, write_volume
    from ToothMCLCore.synthetic.cbct import make_cbct_phantom

    weights = ["--weights", args.weights] if args.weights else ["--model", args.model]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image, truth = make_cbct_phantom(seed=args.seed, field_of_view_mm=FOV_MM, metal=True)
        image_path = tmp / "phantom.nii.gz"
        write_volume(image_path, image)
        print(f"phantom: {image.array.shape[::-1]} voxels (i, j, k) at "
              f"{image.geometry.spacing[0]:.1f} mm, {image.array.nbytes / 2**20:.0f} MiB")
        commands = {
            "toothmcl": [sys.executable, "-m", "ToothMCLCore.cli", "segment-cbct", str(image_path),
                         "-o", str(tmp / "toothmcl.nii.gz"), "--device", args.device, *weights],
            "baseline": [sys.executable, str(Path(__file__).resolve()), "--device", args.device, *weights,
                         "--baseline-child", str(image_path), str(tmp / "baseline.nii.gz")],
        }
        results = {}
        for name, cmd in commands.items():
            res = _timed(cmd, tmp / f"{name}.log")
            if res["code"] != 0:
                print(f"{name} failed with exit code {res['code']}:\n{res['output']}")
                return 1
            pred = read_volume(tmp / f"{name}.nii.gz").array
            res["dice"] = mean_dice(dice_per_tooth(pred, truth.array))
            results[name] = res
            print(f"{name:<9} {res['seconds']:8.1f} s   peak {res['peak_mb']:7.0f} MiB   "
                  f"mean Dice {res['dice']:.3f}")
            print("          stages: " + _stages(name, res["output"]))
        a, b = results["toothmcl"], results["baseline"]
        print(f"speed-up (baseline time / toothmcl time): {b['seconds'] / a['seconds']:.2f}x (target >= 3x)")
        print(f"peak memory ratio (toothmcl / baseline): {a['peak_mb'] / b['peak_mb']:.2f}")
        print(f"Dice difference (toothmcl - baseline): {a['dice'] - b['dice']:+.3f}")
    return 0


def _stages(name: str, output: str) -> str:
    """The stage times a variant printed: the CLI's progress lines, the baseline's JSON."""
    if name == "baseline":
        stages = json.loads(output.strip().splitlines()[-1])
        return ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
    marks = [line for line in output.splitlines() if line.endswith("s)") and "... (" in line]
    return ", ".join(m.replace("... (", " at ").rstrip(")") for m in marks)


if __name__ == "__main__":
    sys.exit(main())
