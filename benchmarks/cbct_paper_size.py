"""The paper-size SwinUNETR on 2 CPU cores: per-window options side by side, then a whole scan.

    python benchmarks/cbct_paper_size.py [--repeats 3] [--skip-scan] [--skip-compile] [--backend auto]

The demo CBCT model is small (feature size 12, 0.75 mm); the paper's is SwinUNETR with feature
size 48 and depths 2-2-2-2 (the released code also uses its v2 blocks), on 0.3 mm scans. Random
weights cost what trained ones cost.

1. One 96^3 window of that network, the same input, in the same run, best of ``--repeats``:
   fp32 (the baseline), bfloat16 autocast, channels-last memory (fp32 and bf16), ONNX Runtime
   fp32 (``--backend onnxruntime``, needs the ``onnx`` extra; export time printed apart), OpenVINO
   fp32 and bf16 (``--backend openvino``, the ``openvino`` extra; compile time printed apart) and
   ``torch.compile`` (time to compile printed apart).
2. A whole scan: a 400 x 400 x 250 phantom at 0.3 mm through ``toothmcl segment-cbct`` end to end
   (its own process: imports, read, ROI crop, windows over the dentition, clean-up, restore,
   write) with a paper-size card (0.3 mm, 96^3 windows, overlap 0.25, the demo ROI model), at
   ``--precision auto`` and ``--backend`` as given (default auto: OpenVINO where installed). The
   goal is 3 minutes on 2 cores.
   The baseline, plain MONAI sliding window over the whole volume in fp32 (overlap 0.5, as MONAI's
   SwinUNETR tutorials infer, and MONAI's default 0.25), would take 20-45 min here; it is
   *estimated* as its window count times the fp32 window time of part 1 (the pre- and
   post-processing it shares with ours are left out, which favours it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PAPER_ARCH = {"in_channels": 1, "out_channels": 34, "feature_size": 48, "depths": [2, 2, 2, 2],
              "num_heads": [3, 6, 12, 24], "use_v2": True}
WINDOW = (96, 96, 96)
SCAN_SHAPE = (400, 400, 250)  # I, J, K at 0.3 mm
SPACING_MM = 0.3


def time_window(net, x, repeats: int, precision: str = "fp32", channels_last: bool = False) -> float:
    import torch

    from ToothMCLCore.inference.device import autocast

    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    best = np.inf
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first run warms up
            start = time.perf_counter()
            with autocast("cpu", precision):
                net(x)
            best = min(best, time.perf_counter() - start)
    if channels_last:
        net.to(memory_format=torch.contiguous_format)
    return best


def time_exported(net, x, repeats: int) -> dict:
    """Best seconds of one window in ONNX Runtime and OpenVINO fp32 / bf16 from one exported graph
    (export and compile not counted: once per model and window size)."""
    import tempfile

    from ToothMCLCore.inference.onnx_backend import ONNXWindows

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = ONNXWindows(net, "paper_size_random", tuple(x.shape[2:]), cache=Path(tmp) / "onnx")
        print(f"  ONNX export and session: {time.perf_counter() - start:.1f} s (once per model and window size)")
        times = {"ONNX Runtime fp32": best_of(run, x, repeats)}
        for precision in ("fp32", "bf16"):
            times[f"OpenVINO {precision}"] = time_openvino(net, x, repeats, run.path.parent, precision)
    return times


def time_openvino(net, x, repeats: int, cache: Path, precision: str) -> float:
    """Best seconds of one window compiled by OpenVINO from the ONNX graph exported into ``cache``."""
    from ToothMCLCore.inference.onnx_backend import OpenVINOWindows

    start = time.perf_counter()
    run = OpenVINOWindows(net, "paper_size_random", tuple(x.shape[2:]), precision=precision, cache=cache)
    print(f"  OpenVINO {precision} compile: {time.perf_counter() - start:.1f} s (cached for later runs)")
    return best_of(run, x, repeats)


def best_of(run, x, repeats: int) -> float:
    """Best seconds of ``run(x)`` over ``repeats`` calls."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        best = min(best, time.perf_counter() - start)
    return best


def windows(shape, roi, overlap: float) -> int:
    n = 1
    for s, r in zip(shape, roi):
        step = max(int(r * (1 - overlap)), 1)
        n *= 1 if s <= r else int(np.ceil((s - r) / step)) + 1
    return n


def main(argv=None) -> int:
    import torch

    from ToothMCLCore.models.networks import build_swinunetr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-scan", action="store_true")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "openvino", "onnxruntime"),
                        help="what runs the whole scan's windows (part 2)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    net = build_swinunetr(**PAPER_ARCH).eval()
    params = sum(p.numel() for p in net.parameters()) / 1e6
    x = torch.randn(1, 1, *WINDOW)
    print(f"SwinUNETR feature size 48 ({params:.1f} M parameters), one {WINDOW} window, {torch.get_num_threads()} "
          "threads, best of", args.repeats)
    results = {"fp32 (baseline)": time_window(net, x, args.repeats)}
    results["bf16 autocast"] = time_window(net, x, args.repeats, "bf16")
    results["channels-last fp32"] = time_window(net, x, args.repeats, channels_last=True)
    results["channels-last bf16"] = time_window(net, x, args.repeats, "bf16", channels_last=True)
    results.update(time_exported(net, x, args.repeats))
    if not args.skip_compile:
        start = time.perf_counter()
        compiled = torch.compile(net)
        with torch.inference_mode():
            compiled(x)
        print(f"  torch.compile: first call (compiling) {time.perf_counter() - start:.1f} s")
        results["torch.compile fp32"] = time_window(compiled, x, args.repeats)
    base = results["fp32 (baseline)"]
    print(f"{'option':<24}{'s/window':>9}{'x fp32':>8}")
    for name, value in results.items():
        print(f"{name:<24}{value:>9.2f}{base / value:>8.2f}")

    full = windows(tuple(reversed(SCAN_SHAPE)), WINDOW, 0.5)
    lean = windows(tuple(reversed(SCAN_SHAPE)), WINDOW, 0.25)
    print(f"\nplain MONAI sliding window over the whole {SCAN_SHAPE} volume, overlap 0.5: {full} windows x "
          f"{base:.2f} s = about {full * base / 60:.0f} min in fp32 (estimate, network only); at MONAI's default "
          f"overlap 0.25: {lean} windows, about {lean * base / 60:.0f} min")
    if args.skip_scan:
        return 0
    seconds = run_scan(args.backend)
    print(f"toothmcl segment-cbct --backend {args.backend}, paper-size model, whole scan end to end: {seconds:.1f} s "
          f"({seconds / 60:.1f} min; goal 3 min); {full * base / seconds:.1f}x the estimated baseline "
          f"({lean * base / seconds:.1f}x at overlap 0.25)")
    return 0


def run_scan(backend: str = "auto") -> float:
    """Seconds of ``toothmcl segment-cbct`` on the paper-size phantom with a paper-size card."""
    import torch

    from ToothMCLCore.io.volume import write_volume
    from ToothMCLCore.models.checkpoint import ModelCard, read_card, save_checkpoint
    from ToothMCLCore.models.networks import build_swinunetr
    from ToothMCLCore.models.registry import resolve_weights
    from ToothMCLCore.synthetic import make_cbct_phantom

    demo, _ = resolve_weights("cbct_swinunetr_demo_v2")
    card = read_card(demo.with_suffix(".json")).to_dict()
    card.update({"name": "cbct_swinunetr_paper_size_random", "arch_args": dict(PAPER_ARCH),
                 "preprocess": dict(card["preprocess"], spacing_mm=SPACING_MM),
                 "sliding_window": dict(card["sliding_window"], roi_size=list(WINDOW), overlap=0.25,
                                        whole_crop_max_voxels=0),
                 "notes": "random weights of the paper's size, for benchmarks only", "metrics": {}})
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "paper_size.safetensors"
        net = build_swinunetr(**PAPER_ARCH).eval()
        saved = save_checkpoint(net, ModelCard.from_dict(card), weights)
        env = dict(os.environ, TOOTHMCL_CACHE=str(tmp / "cache"))
        from ToothMCLCore.inference.device import resolve_precision
        from ToothMCLCore.inference.onnx_backend import check_backend, window_runner

        ran = check_backend(backend, "cpu")
        if ran != "torch":  # export (and compile) happen once per model and window size: not part of a scan's time
            window_runner(ran, net, saved.sha256, WINDOW, precision=resolve_precision("auto", "cpu"),
                          cache=tmp / "cache" / "onnx")
        fov = tuple(s * SPACING_MM for s in SCAN_SHAPE)
        image, _ = make_cbct_phantom(3, spacing=SPACING_MM, field_of_view_mm=fov)
        write_volume(tmp / "scan.nii.gz", image)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ToothMCLCore.cli", "segment-cbct", str(tmp / "scan.nii.gz"), "-o",
                        str(tmp / "out.seg.nrrd"), "--weights", str(weights), "--device", "cpu", "-q", "--backend", backend],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        seconds = time.perf_counter() - start
        print(f"  phantom (K, J, I) {image.array.shape} at {SPACING_MM} mm")
    return seconds


if __name__ == "__main__":
    raise SystemExit(main())
