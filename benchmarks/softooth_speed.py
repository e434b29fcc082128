"""SOFTooth speed benchmark: time per jaw, split by stage, on CPU by default.

    python benchmarks/softooth_speed.py [--sam-checkpoint PATH] [--model-type vit_b]
    python benchmarks/softooth_speed.py --tiny --image-size 256 --resolution-mm 0.8   # quick check

For each jaw it makes a phantom scan (``--resolution-mm`` 0.3 gives about 100k vertices) and
times decimation to ``--target-faces`` faces with label transfer, the 24-d face features in
the canonical frame, the occlusal rendering (ray casting) with the face <-> pixel maps, the
frozen SAM image encoder (cache disabled: the cost of a first visit), and the per-face
bilinear sampling, the SOFTooth network (the paper's size) and the numbering (objectness,
order-aware assignment, faces to FDI); it prints seconds and each stage's share of the jaw's
total. Without ``--sam-checkpoint`` the ViT is built by segment-anything with
``checkpoint=None`` (random weights), and the network is randomly initialised too: the same
architectures, hence the same cost. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time

from timing import StageTimes, peak_memory_mib

STAGES = ("decimate", "features", "render", "sam", "sample", "network", "number")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sam-checkpoint", help="SAM checkpoint (.pth); default: random weights, same cost")
    p.add_argument("--sha256", help="SHA-256 of the checkpoint if it is not the official one")
    p.add_argument("--model-type", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    p.add_argument("--tiny", action="store_true", help="the tiny random test encoder instead of a ViT")
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--target-faces", type=int, default=10_000)
    p.add_argument("--resolution-mm", type=float, default=0.3, help="phantom grid step (0.3 = ~100k vertices)")
    p.add_argument("--jaws", nargs="+", default=["upper", "lower"], choices=("upper", "lower"))
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from ToothMCLCore.inference.softooth import PreparedScan, SOFToothSettings, number_faces, run_network
    from ToothMCLCore.models import build_model
    from ToothMCLCore.models.sam_features import EMBED_DIM, SAMFeatureExtractor, sample_embedding
    from ToothMCLCore.preprocessing.softooth import build_input, decimate_scan, render_occlusal
    from ToothMCLCore.synthetic.ios import make_ios_phantom

    model_type = "tiny" if args.tiny else args.model_type
    t0 = time.perf_counter()
    extractor = SAMFeatureExtractor(None if args.tiny else args.sam_checkpoint, model_type, sha256=args.sha256,
                                    device=args.device, allow_random_init=True, use_cache=False)
    t_build = time.perf_counter() - t0
    torch.manual_seed(0)
    net = build_model("softooth", {"preset": "tiny", "sam_channels": EMBED_DIM} if args.tiny else {"preset": "paper"})
    net = net.eval().to(extractor.device)
    # one-time costs (imports, Embree set-up) outside the timed stages; no encoder forward
    tetra = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    render_occlusal(tetra, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]), image_size=16)
    extractor.preprocess(np.zeros((16, 16, 3), np.uint8))
    if args.tiny:
        weights = "tiny random test encoder (not SAM: its time says nothing about SAM's)"
    elif args.sam_checkpoint:
        weights = f"SAM {model_type} from {args.sam_checkpoint} (SHA-256 {extractor.weights_id[:12]}...)"
    else:
        weights = (f"SAM {model_type} randomly initialised by segment-anything (checkpoint=None): "
                   "same architecture, same cost as the trained weights")
    print(f"encoder: {weights}; built in {t_build:.1f} s on {extractor.device}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"image {args.image_size} x {args.image_size} -> encoder input {extractor.img_size}, "
          f"embedding {EMBED_DIM}x{extractor.embedding_hw[0]}x{extractor.embedding_hw[1]}; "
          f"target {args.target_faces} faces")
    head = f"{'jaw':<6}{'vertices':>9}{'faces':>7}" + "".join(f"{s:>16}" for s in STAGES) + f"{'total':>9}"
    print(head)
    for jaw in args.jaws:
        mesh = make_ios_phantom(11, jaw=jaw, resolution_mm=args.resolution_mm)
        times = StageTimes()
        with times.stage("decimate"):
            scan = decimate_scan(mesh, args.target_faces)
        with times.stage("features"):
            inp = build_input(scan, jaw)
        with times.stage("render"):
            view = render_occlusal(inp.vertices_canonical, inp.faces, image_size=args.image_size)
        with times.stage("sam"):
            embedding = extractor.embed(view.image)
        with times.stage("sample"):
            yx = torch.as_tensor(np.asarray(view.face_pixel_yx, np.float32))[None]
            feats = sample_embedding(torch.from_numpy(embedding)[None], yx, view.image_hw)[0].numpy()
        assert feats.shape == (inp.n_faces, EMBED_DIM)
        with times.stage("network"):
            outputs = run_network(net, PreparedScan(inp, feats.astype(np.float32), view.face_visible),
                                  extractor.device)
        with times.stage("number"):
            number_faces(outputs, inp.faces, jaw, SOFToothSettings())
        total = times.total
        cells = "".join(f"{times[s]:>9.2f}s ({100 * times[s] / total:>2.0f}%)" for s in STAGES)
        print(f"{jaw:<6}{mesh.n_vertices:>9}{inp.n_faces:>7}{cells}{total:>8.2f}s"
              f"   ({view.face_visible.mean():.0%} faces visible)")
    print(f"peak resident memory: {peak_memory_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
