"""Train the demo IOS Point Transformer on synthetic intraoral scans, on a CPU.

    python -m training.train_ios_demo --out ToothMCLCore/weights

writes ``ios_pt_demo_v1`` (safetensors + model card, "trained on synthetic phantoms, not for
clinical use"). One network serves both jaws: each jaw is put in its canonical frame, where x is
the patient's right for both (see ``ToothMCLCore.preprocessing.ios``), and the 17 classes mean
the same quadrant positions in both jaws.

Differences from the paper, for a CPU (written into the card): 8,192 sampled points instead of
24,000, a narrower network (planes 32..128, one block per stage), AdamW lr 2e-3 with a one-cycle
schedule for a few hundred steps instead of 3e-4 for 150 epochs. Loss: point-wise
cross-entropy (paper). Augmentations: random rotation in (-0.5, 0.5) rad, shift, scaling (paper).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from ToothMCLCore import fdi
from ToothMCLCore.config import ModelCard
from ToothMCLCore.io.mesh import occlusal_direction, vertex_normals
from ToothMCLCore.models import build_model
from ToothMCLCore.models.checkpoint import save_checkpoint
from ToothMCLCore.preprocessing.ios import augment, canonical_frame, point_features, sample_points
from ToothMCLCore.synthetic.ios import make_ios_phantom

logger = logging.getLogger("training.ios_demo")

DEMO_NOTE = "trained on synthetic phantoms, not for clinical use"
ARCH = {"in_channels": 6, "num_classes": 17, "planes": [32, 64, 128, 128, 128], "blocks": [1, 1, 1, 1, 1],
        "strides": [1, 4, 4, 4, 4], "nsamples": [16, 16, 16, 16, 16]}
SCALE_MM = 50.0


def prepare_jaw(mesh, n_points: int, seed: int):
    """Canonical points (n, 3) mm, normals (n, 3), classes (n,) of one phantom jaw."""
    normals = vertex_normals(mesh)
    frame = canonical_frame(mesh.vertices_ras, occlusal_direction(mesh, normals), mesh.jaw)
    pts, nrm = frame.apply(mesh.vertices_ras), frame.apply_vectors(normals)
    idx = sample_points(pts, n_points, seed=seed)
    classes = fdi.fdi_to_class_index(mesh.labels[idx], f"ios_{mesh.jaw}")
    return pts[idx], nrm[idx], classes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="ToothMCLCore/weights")
    p.add_argument("--cases", type=int, default=12, help="phantoms (two jaws each)")
    p.add_argument("--points", type=int, default=8192)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="continue from these weights (.safetensors with card)")
    p.add_argument("--first-case", type=int, default=0, help="seed of the first training phantom")
    p.add_argument("--missing-every", type=int, default=3,
                   help="every Nth phantom has missing teeth (each tooth missing with probability 0.1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.monotonic()
    jaws = []
    for i in range(args.first_case, args.first_case + args.cases):
        for jaw in fdi.JAWS:
            mesh = make_ios_phantom(seed=i, jaw=jaw, resolution_mm=0.5,
                                    missing=None if i % args.missing_every else 0.1)
            jaws.append(prepare_jaw(mesh, args.points, seed=i))
    logger.info("prepared %d jaws in %.0fs", len(jaws), time.monotonic() - t0)

    if args.init:
        from ToothMCLCore.models.checkpoint import load_checkpoint

        net, _ = load_checkpoint(args.init)
    else:
        net = build_model("point_transformer", ARCH)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    for step in range(args.steps):
        batch = [jaws[int(rng.integers(len(jaws)))] for _ in range(args.batch)]
        pts, feats, ys = [], [], []
        for pt, nr, cl in batch:
            a, b = augment(pt, nr, rng)
            pts.append(a / SCALE_MM)
            feats.append(point_features(a, b, SCALE_MM))
            ys.append(cl)
        logits = net(torch.from_numpy(np.stack(pts).astype(np.float32)), torch.from_numpy(np.stack(feats)))
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(np.stack(ys)).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0 or step == args.steps - 1:
            logger.info("step %d/%d loss %.4f (%.0fs)", step + 1, args.steps, loss.item(), time.monotonic() - t0)
    net.eval()
    card = ModelCard(
        name="ios_pt_demo_v1", version="1.0.0", task="ios_teeth", architecture="point_transformer",
        arch_args=ARCH, class_scheme="ios", preprocess={"n_points": args.points, "coordinate_scale_mm": SCALE_MM},
        training_data=f"{args.cases} synthetic phantoms x 2 jaws (ToothMCLCore.synthetic.ios, seeds 0..{args.cases - 1})",
        intended_use=f"demo Point Transformer for both jaws: {DEMO_NOTE}",
        notes=(f"{args.points} FPS points, planes 32..128 with one block per stage, lr {args.lr} one-cycle, "
               f"{args.steps} steps of batch {args.batch}, so that it trains on a CPU; the paper uses "
               "24,000 points and the full network. Classes: 0 gingiva, 1-8 right quadrant, 9-16 left."),
    )
    save_checkpoint(net, card, Path(args.out) / "ios_pt_demo_v1.safetensors")
    logger.info("done in %.0fs", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
