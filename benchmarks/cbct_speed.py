"""CBCT speed benchmark: ``toothmcl segment-cbct`` against plain MONAI sliding-window inference.

    python benchmarks/cbct_speed.py [--model NAME | --weights PATH] [--device cpu]

Builds a realistic-size phantom (about 400 x 400 x 250 voxels at 0.3 mm, a 120 x 120 x 75 mm
field of view), then times in the same run and with the same weights:

(a) ``toothmcl segment-cbct`` end to end (read, preprocess, ROI crop, sliding window with the
    card's overlap, post-processing, restore, write);
(b) the baseline: the same preprocessing, then MONAI ``sliding_window_inference`` over the
    *whole* volume with overlap 0.5, fp32, no crop, argmax, resampled back.

Each variant runs in its own process so that its peak resident memory is its own. It prints
both times, their ratio, both peaks and both mean Dice scores against the phantom's truth. This
is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

FOV_MM = (120.0, 120.0, 75.0)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_toothmcl(args, image_path, out_path, queue):
    from ToothMCLCore.cli import main

    argv = ["segment-cbct", str(image_path), "-o", str(out_path), "-q", "--device", args.device]
    argv += ["--weights", args.weights] if args.weights else ["--model", args.model]
    start = time.perf_counter()
    code = main(argv)
    queue.put({"seconds": time.perf_counter() - start, "peak_mb": _peak_mb(), "code": code})


def run_baseline(args, image_path, out_path, queue):
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

    start = time.perf_counter()
    device = resolve_device(args.device)
    net, card = _load(args.weights, args.model, device)
    volume = read_volume(image_path)
    canonical, _ = preprocess_cbct(volume, CBCTPreprocessConfig.from_dict(card.preprocess))
    roi = SlidingWindowConfig.from_dict(card.sliding_window).roi_size
    x = torch.from_numpy(canonical.array)[None, None]
    with torch.inference_mode():
        logits = sliding_window_inference(x, roi, 1, net, overlap=0.5, mode="gaussian",
                                          sw_device=device, device=torch.device("cpu"))
    classes = logits[0].argmax(0).numpy()
    labels = fdi.class_index_to_fdi(classes, "cbct").astype(np.uint8)
    restored = resample_onto(Volume(labels, canonical.geometry), volume.geometry, volume.array.shape,
                             is_label=True)
    write_labelmap(out_path, restored.array, volume)
    queue.put({"seconds": time.perf_counter() - start, "peak_mb": _peak_mb(), "code": 0})


def _in_process(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=args + (queue,))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default="cbct_swinunetr_demo_v1")
    g.add_argument("--weights")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=4242)
    args = p.parse_args(argv)

    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice
    from ToothMCLCore.io import read_volume, write_volume
    from ToothMCLCore.synthetic.cbct import make_cbct_phantom

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image, truth = make_cbct_phantom(seed=args.seed, field_of_view_mm=FOV_MM, metal=True)
        image_path = tmp / "phantom.nii.gz"
        write_volume(image_path, image)
        print(f"phantom: {image.array.shape[::-1]} voxels (i, j, k) at "
              f"{image.geometry.spacing[0]:.1f} mm, {image.array.nbytes / 2**20:.0f} MiB")
        results = {}
        for name, target in (("toothmcl", run_toothmcl), ("baseline", run_baseline)):
            out = tmp / f"{name}.nii.gz"
            res = _in_process(target, args, image_path, out)
            if res["code"] != 0:
                print(f"{name} failed with exit code {res['code']}")
                return 1
            pred = read_volume(out).array
            res["dice"] = mean_dice(dice_per_tooth(pred, truth.array))
            results[name] = res
            print(f"{name:<9} {res['seconds']:8.1f} s   peak {res['peak_mb']:7.0f} MiB   "
                  f"mean Dice {res['dice']:.3f}")
        a, b = results["toothmcl"], results["baseline"]
        print(f"speed-up (baseline time / toothmcl time): {b['seconds'] / a['seconds']:.2f}x (target >= 3x)")
        print(f"peak memory ratio (toothmcl / baseline): {a['peak_mb'] / b['peak_mb']:.2f}")
        print(f"Dice difference (toothmcl - baseline): {a['dice'] - b['dice']:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
