"""The Point Transformer's neighbour search on the CPU: k-d tree vs chunked ``cdist`` + ``topk``.

    python benchmarks/knn_speed.py [--model NAME] [--repeats 3]

On 8,192 points of a lower phantom jaw (what the IOS models sample), in the canonical frame,
this times one forward pass of each network of the model (the default IOS model and its
ensemble members) with :func:`ToothMCLCore.models.point_transformer.knn` as shipped (a k-d tree
on the CPU) and with the brute-force search the GPU uses (the baseline, run on the CPU in the
same process), the median of ``--repeats``, and prints the ratio. It also checks that both
searches give the same neighbours and how far the class probabilities move. A benchmark, not a
test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="registry name (default: the default IOS model)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    import ToothMCLCore.models.point_transformer as pt
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.inference.ios_common import prepare_scan_and_jaw
    from ToothMCLCore.io.mesh import occlusal_direction
    from ToothMCLCore.preprocessing.ios import canonical_frame, point_features, sample_points
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    predictor = IOSPredictor(model=args.model, device="cpu", boundary=False)
    scan, jaw = prepare_scan_and_jaw(make_ios_phantom(11, jaw="lower", resolution_mm=0.3), "lower")
    frame = canonical_frame(scan.mesh.vertices_ras, occlusal_direction(scan.mesh, scan.normals), jaw)
    points, normals = frame.apply(scan.mesh.vertices_ras), frame.apply_vectors(scan.normals)
    idx = sample_points(points, predictor.n_points, seed=0)
    xyz = torch.from_numpy((points[idx] / predictor.scale_mm).astype(np.float32))[None]
    feats = torch.from_numpy(point_features(points[idx], normals[idx], predictor.scale_mm))[None]

    tree, brute = pt.knn(xyz, xyz, 16), pt._knn_brute(xyz, xyz, 16)
    same = (tree.sort(-1).values == brute.sort(-1).values).all(-1).float().mean().item()
    print(f"{len(idx):,} points, {torch.get_num_threads()} threads; same 16 neighbours on {100 * same:.2f} % of "
          "the points (the rest are ties or cdist's rounding)")
    print(f"{'network':<18}{'brute (s)':>10}{'tree (s)':>10}{'speed-up':>10}{'max |dp|':>10}")
    shipped = pt.knn
    nets = [(predictor.card.name, predictor.net)] + [(c.name, n) for c, n in zip(predictor.member_cards,
                                                                                 predictor.member_nets)]
    for name, net in nets:
        times, probs = {}, {}
        for label, search in (("brute", lambda q, s, k: pt._knn_brute(q, s, min(k, s.shape[1]))), ("tree", shipped)):
            pt.knn = search
            runs = []
            try:
                for _ in range(args.repeats):
                    with torch.inference_mode():
                        start = time.perf_counter()
                        probs[label] = torch.softmax(net(xyz, feats)[0], -1)
                        runs.append(time.perf_counter() - start)
            finally:
                pt.knn = shipped
            times[label] = statistics.median(runs)
        moved = (probs["tree"] - probs["brute"]).abs().max().item()
        print(f"{name:<18}{times['brute']:>10.3f}{times['tree']:>10.3f}{times['brute'] / times['tree']:>9.1f}x"
              f"{moved:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
