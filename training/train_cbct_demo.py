"""Train the demo CBCT models (ROI U-Net + small SwinUNETR) on synthetic phantoms, on a CPU.

    python -m training.train_cbct_demo --out ToothMCLCore/weights

takes about 35 minutes on 2 CPU cores and writes ``cbct_roi_demo_v1`` and
``cbct_swinunetr_demo_v1`` (1.0 mm; safetensors + model card). The default model,
``cbct_swinunetr_demo_v2`` (0.75 mm), continues it in two more runs of about 25 minutes each:

    python -m training.train_cbct_demo --out runs/v2a --skip-roi --spacing 0.75 --steps 150 \
        --lr 1e-3 --eval-every 50 --name cbct_swinunetr_demo_v2 \
        --init ToothMCLCore/weights/cbct_swinunetr_demo_v1.safetensors
    python -m training.train_cbct_demo --out ToothMCLCore/weights --skip-roi --spacing 0.75 \
        --steps 150 --lr 1e-3 --eval-every 50 --name cbct_swinunetr_demo_v2 --gaps --cases 16 \
        --init runs/v2a/cbct_swinunetr_demo_v2.safetensors

(``--skip-roi`` keeps the ROI model already in ``--out``; the second run needs it there.) Each
card's notes carry the notes of the checkpoint it continued from. The cards say "trained on
synthetic phantoms, not for clinical use". Every ``--eval-every`` steps a run prints the mean
Dice on a held-out phantom and saves the weights so far, so it can be stopped once it is good
enough.

Why 0.75 mm for the default: it is closer to the paper's 0.3 mm, gives better Dice on 0.3 mm
scans (less is lost restoring the labels), and the network is then the larger part of a run,
as it is for the paper's model; at 1.0 mm, importing MONAI and reading the scan took longer
than the network (see ``benchmarks/cbct_speed.py``).

What differs from the paper, and why (all written into the model card):
- voxel size 1.0 mm, then 0.75 mm, instead of 0.3 mm, and SwinUNETR feature size 12, depths (1, 1, 1, 1):
  a CPU could not train the full model in minutes. The inference pipeline is the same; only
  the card's numbers change. Restoring perfect 1.0 mm labels onto the 0.3 mm phantom already
  costs Dice (0.935 on the demo phantom, against 0.952 from 0.8 mm), a price paid for a crop
  small enough to train on whole.
- whole ROI crops: the teeth's box plus a random margin (what the ROI crop gives at
  inference), padded to multiples of 32, one crop per step; the card then segments a crop of
  up to a 128 mm cube (:func:`whole_crop_limit`) as one window. The network numbers a tooth
  from its place in the arch, so it must see the arch: random 64^3 crops (half an arch)
  collapsed to background.
- the output layer starts at the class priors and learns 5x faster than the rest
  (:func:`init_output_prior`): without it 800 steps gave held-out Dice 0.01.
- AdamW, learning rate 2e-3 with 5% linear warm-up then cosine decay (the paper: 3e-4 for 150
  epochs on a GPU); bfloat16 autocast on CPU, which is 1.5x faster here and the CPU analogue of
  the paper's AMP.
The loss is the paper's (Dice + cross-entropy; the Dice term over the teeth as nnU-Net computes
it) and augmentations keep the paper's rule: intensity shift, Gaussian noise, no flips.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from ToothMCLCore.config import CBCTPreprocessConfig, ModelCard, ROIConfig, SlidingWindowConfig
from ToothMCLCore.fdi import PERMANENT_FDI
from ToothMCLCore.models import build_model
from ToothMCLCore.models.checkpoint import save_checkpoint
from ToothMCLCore.synthetic.cbct import make_cbct_phantom

from .datasets import augment_intensity, expand_box, prepare_case, random_patch

logger = logging.getLogger("training.cbct_demo")

DEMO_NOTE = "trained on synthetic phantoms, not for clinical use"
TEETH_ARCH = {"in_channels": 1, "out_channels": 34, "feature_size": 12, "depths": [1, 1, 1, 1],
              "num_heads": [3, 6, 12, 24]}
#: one-window limit written into the card with --whole-crop, in mm^3: a 128 mm cube, 128^3 voxels
#: at 1.0 mm (a 1.0 mm dentition crop is ~96^3). Finer grids get the same physical limit, capped
#: at 160 x 160 x 128 voxels (3.3 M; SwinUNETR feature 12 peaks at 5.6 GB for that on a CPU).
WHOLE_CROP_MAX_MM3 = 128.0**3
WHOLE_CROP_VOXEL_CAP = 160 * 160 * 128


def whole_crop_limit(spacing_mm: float) -> int:
    """The card's ``whole_crop_max_voxels`` for a grid of ``spacing_mm``."""
    return min(round(WHOLE_CROP_MAX_MM3 / spacing_mm**3), WHOLE_CROP_VOXEL_CAP)

EVAL_SEED = 1000  # held-out phantom for the Dice printed during training (the demo uses 2024)
ROI_ARCH = {"in_channels": 1, "out_channels": 2, "features": [8, 16, 32, 64, 128, 8]}


#: teeth a training phantom may lack with ``--gaps``: not third molars (the generator already
#: draws those) and never 25, so that the demo phantom's gap stays unseen in training
GAP_TEETH = tuple(t for t in PERMANENT_FDI if t % 10 != 8 and t != 25)


def phantom_options(seed: int, gaps: bool = False) -> dict:
    """Variety across training phantoms: orientation, offset, metal, and with ``gaps`` one to
    three missing teeth (from :data:`GAP_TEETH`) in every odd-seeded phantom.

    Why gaps: a network that has only seen full arches numbers the teeth behind a gap as if
    the gap were not there (26 -> 27, 27 -> 28 on the demo phantom, which lacks 25), and the
    arch-order assignment cannot undo a shift that keeps the order. Missing teeth are common
    in the clinic, so the phantoms have them too.
    """
    rng = np.random.default_rng(10_000 + seed)
    options = {
        "orientation": ["RAS", "LPS", "oblique"][seed % 3],
        "offset": -1000.0 if rng.random() < 0.3 else 0.0,
        "metal": bool(rng.random() < 0.3),
    }
    if gaps and seed % 2 == 1:
        count = 1 + int(rng.integers(3))
        options["missing"] = tuple(sorted(int(t) for t in rng.choice(GAP_TEETH, count, replace=False)))
    return options


def _dice_ce(include_background: bool = False):
    """Dice + cross-entropy (paper). The Dice term is over the teeth only and over the whole
    batch, as nnU-Net computes it (``do_bg=False``, batch Dice): with 33 small foreground
    classes a background channel in the mean only dilutes their gradient."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=include_background,
                      batch=not include_background)


def class_frequencies(cases, n_classes: int, margin_voxels: int = 0) -> np.ndarray:
    """Fraction of each class inside the training phantoms' teeth boxes (grown by ``margin_voxels``),
    with +1 smoothing so that no class has probability 0."""
    counts = np.ones(n_classes)
    for case in cases:
        region = expand_box(case.teeth_box, case.image.shape, margin_voxels)
        counts += np.bincount(case.classes[region].ravel(), minlength=n_classes)[:n_classes]
    return counts / counts.sum()


def init_output_prior(net, frequencies: np.ndarray) -> None:
    """Start the output layer at the class priors: bias = log frequency (Lin et al. 2017).

    Why: with the default zero-mean bias the softmax starts uniform (1/34 per class). Adam moves
    a weight by about the learning rate per step, so reaching background ~0.9 against ~0.003
    per tooth (a logit gap of ~6) took the network hundreds of steps, and it then sat in a
    "every tooth is one class" minimum: held-out Dice 0.01 after 800 steps. Starting at the
    priors skips that phase: 0.84 after 100 steps on the same phantoms (measured at 2 mm).
    """
    import torch

    conv = net.out.conv.conv  # MONAI UnetOutBlock: a 1x1x1 convolution
    with torch.no_grad():
        conv.bias.copy_(torch.from_numpy(np.log(frequencies)).to(conv.bias))


def _param_groups(net, lr: float, head_lr_factor: float):
    """The output layer learns ``head_lr_factor`` times faster: its logits must spread by several
    units between 34 classes, the rest of the network only refines features."""
    head = [p for n, p in net.named_parameters() if n.startswith("out.")]
    rest = [p for n, p in net.named_parameters() if not n.startswith("out.")]
    if not head:
        return [{"params": rest, "lr": lr}]
    return [{"params": rest, "lr": lr}, {"params": head, "lr": lr * head_lr_factor}]


def arch_crop(case, rng, margin_voxels: int):
    """The teeth's box plus a random margin (what the ROI crop gives), zero-padded evenly on both
    sides to multiples of 32: exactly the single window inference runs on such a crop."""
    region = expand_box(case.teeth_box, case.image.shape, margin_voxels, rng)
    x, y = case.image[region], case.classes[region]
    pads = [(-s) % 32 for s in x.shape]
    widths = [(p // 2, p - p // 2) for p in pads]
    return np.pad(x, widths), np.pad(y, widths)


def _schedule(opt, steps: int, warmup_fraction: float = 0.05):
    """Linear warm-up then cosine decay to zero."""
    import math

    import torch

    warm = max(1, int(steps * warmup_fraction))

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def held_out_dice(net, case, patch, margin_voxels: int = 8) -> float:
    """Mean Dice over the teeth present in a held-out case, over its teeth box + a margin; ``patch``
    None means one window over the whole crop (as with ``whole_crop_max_voxels``)."""
    import torch
    from monai.inferers import sliding_window_inference

    from ToothMCLCore import fdi
    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice

    box = expand_box(case.teeth_box, case.image.shape, margin_voxels)
    x = torch.from_numpy(case.image[box].copy())[None, None]
    if patch is None:
        patch = tuple(-(-int(s) // 32) * 32 for s in x.shape[2:])
    was_training = net.training
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = sliding_window_inference(x, patch, 1, net, overlap=0.25, mode="gaussian")
    net.train(was_training)
    pred = fdi.class_index_to_fdi(logits[0].float().argmax(0).numpy(), "cbct")
    return mean_dice(dice_per_tooth(pred, fdi.class_index_to_fdi(case.classes[box], "cbct")))


def train_network(net, cases, patch, steps, lr, rng, log_every=20, margin_voxels=8, roi_crop=True, batch=2,
                  bf16=True, eval_case=None, eval_every=0, on_eval=None, whole_crop=False,
                  include_background=False, head_lr_factor=1.0):
    import torch

    opt = torch.optim.AdamW(_param_groups(net, lr, head_lr_factor), lr=lr, weight_decay=1e-5)
    sched = _schedule(opt, steps)
    loss_fn = _dice_ce(include_background)
    net.train()
    start = time.monotonic()
    for step in range(steps):
        case = cases[int(rng.integers(len(cases)))]
        if whole_crop:  # batch 1: crops differ in size
            xs, ys = zip(arch_crop(case, rng, margin_voxels))
        else:
            region = expand_box(case.teeth_box, case.image.shape, margin_voxels, rng) if roi_crop else None
            xs, ys = zip(*(random_patch(case, patch, rng, region) for _ in range(batch)))
        x = torch.from_numpy(np.stack([augment_intensity(a, rng) for a in xs]))[:, None]
        y = torch.from_numpy(np.stack(ys))[:, None]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            logger.info("step %d/%d loss %.4f (%.0fs)", step + 1, steps, loss.item(), time.monotonic() - start)
        if eval_case is not None and eval_every and ((step + 1) % eval_every == 0 or step == steps - 1):
            dice = held_out_dice(net, eval_case, None if whole_crop else patch, margin_voxels)
            logger.info("step %d held-out mean Dice %.3f", step + 1, dice)
            if on_eval is not None:
                on_eval(step + 1, dice)
    net.eval()
    return net


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="ToothMCLCore/weights", help="folder for the weights and cards")
    p.add_argument("--cases", type=int, default=10, help="training phantoms")
    p.add_argument("--steps", type=int, default=400, help="SwinUNETR iterations")
    p.add_argument("--roi-steps", type=int, default=150, help="ROI U-Net iterations")
    p.add_argument("--batch", type=int, default=1, help="SwinUNETR patches per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--head-lr-factor", type=float, default=5.0, help="learning-rate factor of the output layer")
    p.add_argument("--eval-every", type=int, default=100, help="held-out Dice and a checkpoint every N steps")
    p.add_argument("--spacing", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--init", help="continue from these SwinUNETR weights (.safetensors with card)")
    p.add_argument("--gaps", action="store_true",
                   help="odd-seeded training phantoms lack one to three teeth (see phantom_options)")
    p.add_argument("--name", default="cbct_swinunetr_demo_v1", help="name of the SwinUNETR checkpoint and card")
    p.add_argument("--skip-roi", action="store_true", help="keep the ROI model already in --out")
    p.add_argument("--patches", dest="whole_crop", action="store_false",
                   help="train on 64x96x96 patches inside the teeth box instead of whole ROI crops (teeth box + "
                        "random margin, which the card then segments as one window)")
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
        image, labels = make_cbct_phantom(seed=i, **phantom_options(i, args.gaps))
        teeth_cases.append(prepare_case(image, labels, teeth_pre, name=f"phantom{i}"))
        if not args.skip_roi:
            roi_cases.append(prepare_case(image, labels, roi_pre, name=f"phantom{i}", scheme="binary"))
    logger.info("prepared %d phantoms in %.0fs", args.cases, time.monotonic() - t0)

    if not args.skip_roi:
        roi_net = build_model("roi_unet", ROI_ARCH)
        train_network(roi_net, roi_cases, (48, 48, 48), args.roi_steps, 3e-3, rng, roi_crop=False,
                      include_background=True)
        roi_card = ModelCard(
            name="cbct_roi_demo_v1", version="1.0.0", task="cbct_roi", architecture="roi_unet",
            arch_args=ROI_ARCH, class_scheme="binary", preprocess=roi_pre.to_dict(),
            training_data=f"{args.cases} synthetic CBCT phantoms (ToothMCLCore.synthetic, seeds 0..{args.cases - 1})",
            intended_use=f"demo ROI model: {DEMO_NOTE}",
            notes="Finds the teeth on a 1.5 mm grid to crop before the fine model.",
        )
        save_checkpoint(roi_net, roi_card, out / "cbct_roi_demo_v1.safetensors")

    origin = ""
    if args.init:
        from ToothMCLCore.models.checkpoint import load_checkpoint

        net, init_card = load_checkpoint(args.init)
        origin = f"Continued from {init_card.name} (sha256 {init_card.sha256[:12]}), whose notes say: {init_card.notes}"
    else:
        net = build_model("swinunetr", TEETH_ARCH)
        init_output_prior(net, class_frequencies(teeth_cases, TEETH_ARCH["out_channels"]))
    patch = (64, 96, 96)
    card = ModelCard(
        name=args.name, version="1.0.0", task="cbct_teeth", architecture="swinunetr",
        arch_args=TEETH_ARCH, class_scheme="cbct", preprocess=teeth_pre.to_dict(),
        sliding_window=SlidingWindowConfig(roi_size=patch, overlap=0.25,
                                           whole_crop_max_voxels=whole_crop_limit(args.spacing) if args.whole_crop else 0).to_dict(),
        training_data=(f"{args.cases} synthetic CBCT phantoms (ToothMCLCore.synthetic, seeds 0..{args.cases - 1}"
                       + (", one to three missing teeth in the odd-seeded ones)" if args.gaps else ")")),
        intended_use=f"demo SwinUNETR: {DEMO_NOTE}",
        notes=(f"{args.spacing} mm grid, feature size 12, depths (1,1,1,1), {args.steps} steps of batch "
               f"{args.batch}, AdamW lr {args.lr} warm-up + cosine (output layer x{args.head_lr_factor:g}"
               + (", bias from the checkpoint continued" if args.init else ", bias started at the class priors")
               + "), Dice over the teeth + cross-entropy, bfloat16 autocast, "
               + ("whole ROI crops (teeth box + random margin) segmented as one window "
                  if args.whole_crop else "64x96x96 crops inside the teeth box ")
               + "so that it trains on a CPU; the paper's model uses 0.3 mm and 256x256x128 crops. "
               "Intensity offset: auto (+1000 when the 0.5th percentile is below -500). Labels: class 0 "
               "background, 1-32 FDI 11-48, 33 metal (label 99). " + origin).strip(),
        roi_model="cbct_roi_demo_v1",
    )
    image, labels = make_cbct_phantom(seed=EVAL_SEED, **phantom_options(EVAL_SEED))
    eval_case = prepare_case(image, labels, teeth_pre, name="held-out")

    def checkpoint(step, dice):
        metrics = {"held_out_mean_dice": round(dice, 4), "grid_mm": args.spacing, "steps": step}
        save_checkpoint(net, dataclasses.replace(card, metrics=metrics), out / f"{args.name}.safetensors")

    margin = round(ROIConfig().margin_mm / args.spacing)
    train_network(net, teeth_cases, patch, args.steps, args.lr, rng, batch=args.batch, margin_voxels=margin,
                  eval_case=eval_case, eval_every=args.eval_every, on_eval=checkpoint, whole_crop=args.whole_crop,
                  head_lr_factor=args.head_lr_factor)
    logger.info("done in %.0fs", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
