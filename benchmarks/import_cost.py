"""What a CBCT run pays to import MONAI: plain ``import monai`` vs :func:`ToothMCLCore.monai_import.import_monai`.

    python benchmarks/import_cost.py [--repeats 3]

Each variant runs in a fresh interpreter that has already imported what a CBCT run needs anyway
(torch, SciPy's ndimage, SimpleITK, nibabel), then imports MONAI and the two MONAI pieces we use
(SwinUNETR, the sliding-window inferer); the figure is the wall time of that last step, the
median over ``--repeats`` interpreters. The baseline is plain ``import monai`` in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

SETUP = "import time, torch, scipy.ndimage, SimpleITK, nibabel; t = time.perf_counter(); "
USE = ("from monai.networks.nets import SwinUNETR; from monai.inferers import sliding_window_inference; "
       "print(time.perf_counter() - t)")
VARIANTS = {
    "plain import monai (baseline)": SETUP + "import monai; " + USE,
    "ToothMCL import_monai": SETUP + "from ToothMCLCore.monai_import import import_monai; import_monai(); " + USE,
}


def seconds(code: str, repeats: int) -> float:
    runs = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
                  .stdout.strip()) for _ in range(repeats)]
    return statistics.median(runs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = {name: seconds(code, args.repeats) for name, code in VARIANTS.items()}
    base = results["plain import monai (baseline)"]
    print(f"{'variant':<32}{'seconds':>9}{'x faster':>10}")
    for name, value in results.items():
        print(f"{name:<32}{value:>9.2f}{base / value:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
