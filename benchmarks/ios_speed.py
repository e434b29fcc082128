"""IOS speed benchmark: time per jaw, split by stage, for ~100k- and ~300k-vertex scans.

    python benchmarks/ios_speed.py [--model NAME | --weights PATH] [--device cpu]

For each size it writes a phantom scan to a PLY file, then times reading (and cleaning),
preparation (canonical frame + farthest point sampling), the network and label transfer
(summed over the predictor's sampling passes),
post-processing and writing the Teeth3DS JSON, and prints peak resident memory. The target
is under 10 s end to end for 100k vertices on 2 CPU cores. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

from timing import peak_memory_mib

#: phantom resolution (mm) giving about 100k and 300k vertices
SIZES = {"100k": 0.30, "300k": 0.17}


def stage_seconds(start: float, marks) -> dict[str, float]:
    """Seconds per stage from the predictor's ``(stage, time)`` reports, summed over repeats:
    each sampling pass reports "segment" and "transfer" again ("transfer" then includes the
    next pass's farthest point sampling); "prepare" runs from ``start`` to the first report."""
    spent: dict[str, float] = {}
    stamps = [("prepare", start)] + [m for m in marks if m[0] != "prepare"]
    for (stage, t), (_, t_next) in itertools.pairwise(stamps):
        spent[stage] = spent.get(stage, 0.0) + t_next - t
    return spent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help="registry name (default: the default IOS model)")
    g.add_argument("--weights")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)

    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.io.mesh import read_mesh, write_mesh
    from ToothMCLCore.io.teeth3ds import write_teeth3ds_json
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    predictor = IOSPredictor(weights=args.weights, model=None if args.weights else args.model, device=args.device)
    print(f"model {predictor.card.name}, {predictor.n_points} points, device {predictor.device}")
    header = f"{'scan':<6}{'vertices':>9}{'read':>7}{'prepare':>9}{'network':>9}{'transfer':>10}{'post':>7}{'write':>7}{'total':>8}"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for name, resolution in SIZES.items():
            path = Path(tmp) / f"bench_{name}_lower.ply"
            write_mesh(path, make_ios_phantom(11, jaw="lower", resolution_mm=resolution))
            marks = []
            t0 = time.perf_counter()
            scan = read_mesh(path)
            t_read = time.perf_counter() - t0
            t1 = time.perf_counter()
            result = predictor.predict(scan, "lower",
                                       progress=lambda s, f, marks=marks: marks.append((s, time.perf_counter())))
            t2 = time.perf_counter()
            spent = stage_seconds(t1, marks)
            write_teeth3ds_json(Path(tmp) / f"{name}.json", result.labels, result.instances, "lower",
                                n_vertices=scan.n_file_vertices)
            t_write = time.perf_counter() - t2
            prep, net, transfer, post = (spent.get(s, 0.0) for s in ("prepare", "segment", "transfer", "postprocess"))
            total = time.perf_counter() - t0
            print(f"{name:<6}{scan.n_file_vertices:>9}{t_read:>7.2f}{prep:>9.2f}{net:>9.2f}{transfer:>10.2f}"
                  f"{post:>7.2f}{t_write:>7.2f}{total:>8.2f}")
    print(f"peak resident memory: {peak_memory_mib():.0f} MiB; target: 100k vertices in < 10 s end to end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
