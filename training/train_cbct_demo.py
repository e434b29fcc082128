"""Train the demo CBCT models (ROI U-Net + small SwinUNETR) on synthetic phantoms, on a CPU.

    python -m training.train_cbct_demo --out ToothMCLCore/weights

takes about 30 minutes on 2 CPU cores and writes ``cbct_roi_demo_v1`` and
``cbct_swinunetr_demo_v1`` (safetensors + model card). The cards say "trained on synthetic
phantoms, not for clinical use".

What differs from the paper, and why (all written into the model card):
- voxel size 0.8 mm instead of 0.3 mm and SwinUNETR feature size 12, depths (1, 1, 1, 1):
  a CPU could not train the full model in minutes. The inference pipeline is the same; only
  the card's numbers change.
- AdamW learning rate 2e-3 (one-cycle) for several hundred iterations of batch 1 instead of 3e-4 for 150 epochs.
- random 64^3 crops instead of 256x256x128.
The loss is the paper's (Dice + cross-entropy) and augmentations keep the paper's rule: intensity
shift, Gaussian noise, random crops, no flips.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from ToothMCLCore.config import CBCTPreprocessConfig, ModelCard, SlidingWindowConfig
from ToothMCLCore.models import build_model
from ToothMCLCore.models.checkpoint import save_checkpoint
from ToothMCLCore.synthetic.cbct import make_cbct_phantom

from .datasets import augment_intensity, expand_box, prepare_case, random_patch

logger = logging.getLogger("training.cbct_demo")

DEMO_NOTE = "trained on synthetic phantoms, not for clinical use"
TEETH_ARCH = {"in_channels": 1, "out_channels": 34, "feature_size": 12, "depths": [1, 1, 1, 1],
              "num_heads": [3, 6, 12, 24]}
ROI_ARCH = {"in_channels": 1, "out_channels": 2, "features": [8, 16, 32, 64, 128, 8]}


def phantom_options(seed: int) -> dict:
    """Variety across training phantoms: orientation, offset, metal, missing teeth."""
    rng = np.random.default_rng(10_000 + seed)
    return {
        "orientation": ["RAS", "LPS", "oblique"][seed % 3],
        "offset": -1000.0 if rng.random() < 0.3 else 0.0,
        "metal": bool(rng.random() < 0.3),
    }


def _dice_ce():
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=True)


def train_network(net, cases, patch, steps, lr, rng, log_every=20, margin_voxels=8, roi_crop=True, batch=2):
    import torch

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = _dice_ce()
    net.train()
    start = time.monotonic()
    for step in range(steps):
        case = cases[int(rng.integers(len(cases)))]
        region = expand_box(case.teeth_box, case.image.shape, margin_voxels, rng) if roi_crop else None
        xs, ys = zip(*(random_patch(case, patch, rng, region) for _ in range(batch)))
        x = torch.from_numpy(np.stack([augment_intensity(a, rng) for a in xs]))[:, None]
        y = torch.from_numpy(np.stack(ys))[:, None]
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            logger.info("step %d/%d loss %.4f (%.0fs)", step + 1, steps, loss.item(), time.monotonic() - start)
    net.eval()
    return net


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="ToothMCLCore/weights", help="folder for the weights and cards")
    p.add_argument("--cases", type=int, default=10, help="training phantoms")
    p.add_argument("--steps", type=int, default=800, help="SwinUNETR iterations")
    p.add_argument("--roi-steps", type=int, default=150, help="ROI U-Net iterations")
    p.add_argument("--batch", type=int, default=1, help="SwinUNETR patches per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--spacing", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--init", help="continue from these SwinUNETR weights (.safetensors with card)")
    p.add_argument("--skip-roi", action="store_true", help="keep the ROI model already in --out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    teeth_pre = CBCTPreprocessConfig(spacing_mm=args.spacing)
    roi_pre = CBCTPreprocessConfig(spacing_mm=1.5)
    teeth_cases, roi_cases = [], []
    t0 = time.monotonic()
    for i in range(args.cases):
        image, labels = make_cbct_phantom(seed=i, **phantom_options(i))
        teeth_cases.append(prepare_case(image, labels, teeth_pre, name=f"phantom{i}"))
        if not args.skip_roi:
            roi_cases.append(prepare_case(image, labels, roi_pre, name=f"phantom{i}", scheme="binary"))
    logger.info("prepared %d phantoms in %.0fs", args.cases, time.monotonic() - t0)

    if not args.skip_roi:
        roi_net = build_model("roi_unet", ROI_ARCH)
        train_network(roi_net, roi_cases, (48, 48, 48), args.roi_steps, 3e-3, rng, roi_crop=False)
        roi_card = ModelCard(
            name="cbct_roi_demo_v1", version="1.0.0", task="cbct_roi", architecture="roi_unet",
            arch_args=ROI_ARCH, class_scheme="binary", preprocess=roi_pre.to_dict(),
            training_data=f"{args.cases} synthetic CBCT phantoms (ToothMCLCore.synthetic, seeds 0..{args.cases - 1})",
            intended_use=f"demo ROI model: {DEMO_NOTE}",
            notes="Finds the teeth on a 1.5 mm grid to crop before the fine model.",
        )
        save_checkpoint(roi_net, roi_card, out / "cbct_roi_demo_v1.safetensors")

    if args.init:
        from ToothMCLCore.models.checkpoint import load_checkpoint

        net, _ = load_checkpoint(args.init)
    else:
        net = build_model("swinunetr", TEETH_ARCH)
    train_network(net, teeth_cases, (64, 64, 64), args.steps, args.lr, rng, batch=args.batch)
    card = ModelCard(
        name="cbct_swinunetr_demo_v1", version="1.0.0", task="cbct_teeth", architecture="swinunetr",
        arch_args=TEETH_ARCH, class_scheme="cbct", preprocess=teeth_pre.to_dict(),
        sliding_window=SlidingWindowConfig(roi_size=(64, 64, 64), overlap=0.25).to_dict(),
        training_data=f"{args.cases} synthetic CBCT phantoms (ToothMCLCore.synthetic, seeds 0..{args.cases - 1})",
        intended_use=f"demo SwinUNETR: {DEMO_NOTE}",
        notes=("0.8 mm grid, feature size 12, depths (1,1,1,1), lr 2e-3, 64^3 crops so that it trains on a "
               "CPU; the paper's model uses 0.3 mm and 256x256x128 crops. Intensity offset: auto "
               "(+1000 when the 0.5th percentile is below -500). Labels: class 0 background, 1-32 FDI "
               "11-48, 33 metal (label 99)."),
        roi_model="cbct_roi_demo_v1",
    )
    save_checkpoint(net, card, out / "cbct_swinunetr_demo_v1.safetensors")
    logger.info("done in %.0fs", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
