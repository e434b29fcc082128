"""The same nnU-Net v2 weights through ToothMCL and through nnU-Net's own predictor: time, memory, agreement.

    python benchmarks/cbct_nnunet_speed.py [--features 32 64 128 256 320] [--patch 96] [--spacing 0.4]

A results folder is built with nnU-Net's own classes (``Testing/nnunet_models.py``: plans in
nnU-Net v2's layout, the network from ``get_network_from_plans``, the checkpoint as
``nnUNetTrainer.save_checkpoint`` writes it), then trained briefly on phantom CBCTs
(``--train-steps``, cross-entropy, our loop, not nnU-Net's trainer): a fresh network's labels
change from voxel to voxel, so any two resamplings disagree; a trained one answers in regions,
as a real model does, and the comparison then says whether the pipelines agree. The default network is nnU-Net's usual 3d_fullres shape (5 stages, 2 convolutions each,
32-320 features, 0.6 mm, patch 96^3); a CBCT phantom at ``--spacing`` (0.4 mm: nnU-Net
resamples it to 0.6 and back, as on a real scan) is stored as .mha, the format ToothFairy2's
images have, and read by each side with its own reader.

Each side runs in its own process (peak memory is the process's ``ru_maxrss``), both without
test-time mirroring, one fold, step 0.5, Gaussian weighting:

- ``nnUNetPredictor.predict_single_npy_array`` (CPU, ``perform_everything_on_device=False``);
- ``NNUNetCBCTPredictor.predict`` (ToothMCL).

Agreement: per class, the Dice between nnU-Net's labels (mapped to ToothMCL's label values) and
ToothMCL's labels *before* its FDI clean-up (the network's most probable class per voxel, on the
input grid), averaged over the classes either side finds. Random weights make the flattest
probabilities there are, the hardest case for agreement. ToothMCL's final labels (after the
clean-up, which is ours) are compared too, for information.

A benchmark, not a test: the issue's goal is >= 2x faster on 2 CPU cores at Dice >= 0.99.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_folder(parent: Path, features, patch: int, spacing: float, train_steps: int = 0) -> Path:
    import torch

    sys.path.insert(0, str(ROOT / "Testing"))
    import nnunet_models as nm

    n = len(features)
    arch = json.loads(json.dumps(nm.ARCH))
    arch["arch_kwargs"].update({
        "n_stages": n, "features_per_stage": list(features), "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1)})
    nm.ARCH.clear()
    nm.ARCH.update(arch)
    root, network = nm.make_results_folder(parent, patch=(patch,) * 3, spacing=spacing)
    if train_steps:
        train_briefly(network, root, spacing, train_steps)
    plans, dataset = json.loads((root / "plans.json").read_text()), json.loads((root / "dataset.json").read_text())
    torch.save(nm.checkpoint_dict(network, plans, dataset), root / "fold_0" / "checkpoint_final.pth")
    return root


def train_briefly(network, root: Path, spacing: float, steps: int, crop: int = 64, seed: int = 0) -> None:
    """A few hundred Adam steps of cross-entropy on phantom CBCTs at the plan's spacing (teeth at
    their ToothFairy2 ids = FDI numbers, everything else background), inputs normalised as the
    plans say: enough for the network to answer in smooth regions, as a trained model does, so
    that the two pipelines' labels can be compared after resampling. Prints the loss."""
    import torch

    from ToothMCLCore import fdi
    from ToothMCLCore.inference.cbct_nnunet import NNUNetCBCTPredictor
    from ToothMCLCore.synthetic import make_cbct_phantom

    normalise = NNUNetCBCTPredictor(root, device="cpu", precision="fp32")
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(3):
        image, truth = make_cbct_phantom(100 + k, spacing=spacing)
        x = normalise.normalize(normalise.to_network_array(image.array))
        y = normalise.to_network_array(np.where(np.isin(truth.array, fdi.PERMANENT_FDI), truth.array, 0)).astype(np.int64)
        cases.append((x, y))
    network.train()
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    for step in range(steps):
        x, y = cases[step % len(cases)]
        teeth = np.argwhere(y > 0)
        centre = teeth[rng.integers(len(teeth))] if rng.random() < 0.7 else [rng.integers(s) for s in y.shape]
        lo = [int(np.clip(c - crop // 2, 0, max(s - crop, 0))) for c, s in zip(centre, y.shape)]
        box = tuple(slice(a, a + crop) for a in lo)
        xb = torch.from_numpy(np.ascontiguousarray(x[box]))[None, None]
        yb = torch.from_numpy(np.ascontiguousarray(y[box]))[None]
        loss = torch.nn.functional.cross_entropy(network(xb), yb)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"  training step {step:4d} loss {loss.item():.3f}", flush=True)
    network.eval()


def run_ours(folder: str, image: str, out: str, precision: str = "auto") -> dict:
    from ToothMCLCore.inference.cbct import restore_labels
    from ToothMCLCore.inference.cbct_nnunet import NNUNetCBCTPredictor
    from ToothMCLCore.io.volume import read_volume

    start = time.perf_counter()
    predictor = NNUNetCBCTPredictor(folder, device="cpu", precision=precision)
    volume = read_volume(image)
    result = predictor.predict(volume)
    seconds = time.perf_counter() - start
    # the network's own answer on the input grid, before our clean-up (for the agreement)
    canonical, probs = predictor.probabilities(volume)
    values = np.concatenate([np.asarray(_cbct_values()), np.asarray(predictor.structure_values, np.int64)])
    raw = restore_labels(values[probs.argmax(axis=0)].astype(np.uint8), canonical.geometry, volume)
    np.savez_compressed(out, final=result.labels.array, raw=raw)
    return {"seconds": seconds, "precision": predictor.precision}


def _cbct_values():
    from ToothMCLCore import fdi

    return fdi.class_index_to_fdi(np.arange(fdi.num_classes("cbct")), "cbct")


def run_theirs(folder: str, image: str, out: str, precision: str = "") -> dict:
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    start = time.perf_counter()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(folder, use_folds=(0,))
    img, props = SimpleITKIO().read_images([image])
    seg = predictor.predict_single_npy_array(img, props, None, None, False)
    seconds = time.perf_counter() - start
    np.savez_compressed(out, seg=np.asarray(seg))
    return {"seconds": seconds}


def dice_agreement(a: np.ndarray, b: np.ndarray, min_voxels: int = 1000) -> tuple[float, float]:
    """(mean Dice over the labels either side gives at least ``min_voxels`` voxels, the same weighted
    by those voxel counts): what a reader sees of each tooth, without specks deciding the mean."""
    scores, weights = [], []
    for v in sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist()) - {0}):
        x, y = a == v, b == v
        n = np.count_nonzero(x) + np.count_nonzero(y)
        if max(np.count_nonzero(x), np.count_nonzero(y)) >= min_voxels:
            scores.append(2.0 * np.count_nonzero(x & y) / n)
            weights.append(n)
    if not scores:
        return 1.0, 1.0
    return float(np.mean(scores)), float(np.average(scores, weights=weights))


def child(args) -> int:
    runner = {"ours": run_ours, "theirs": run_theirs}[args.child]
    out = runner(args.folder, args.image, args.out, args.precision)
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[32, 64, 128, 256, 320])
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--plan-spacing", type=float, default=0.6)
    parser.add_argument("--spacing", type=float, default=0.4, help="spacing of the phantom scan (mm)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="ToothMCL's CPU precision")
    parser.add_argument("--child", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from ToothMCLCore.io.volume import read_volume, write_volume
    from ToothMCLCore.models.nnunet import label_values, read_results_folder
    from ToothMCLCore.synthetic import make_cbct_phantom

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = build_folder(tmp / "models", args.features, args.patch, args.plan_spacing, args.train_steps)
        image, _ = make_cbct_phantom(7, spacing=args.spacing, orientation="LPS")
        write_volume(tmp / "scan_0000.mha", image)
        shape = read_volume(tmp / "scan_0000.mha").array.shape
        print(f"phantom {shape[2]} x {shape[1]} x {shape[0]} voxels at {args.spacing} mm; nnU-Net plan "
              f"{args.plan_spacing} mm, patch {args.patch}^3, features {args.features}; 2 processes, one after the other")
        results = {}
        for side in ("theirs", "ours"):
            out = tmp / f"{side}.npz"
            proc = subprocess.run([sys.executable, __file__, "--child", side, "--folder", str(folder),
                                   "--image", str(tmp / "scan_0000.mha"), "--out", str(out),
                                   "--precision", args.precision],
                                  capture_output=True, text=True, check=True)
            results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[side]["arrays"] = dict(np.load(out))
        table = label_values(read_results_folder(folder).dataset)
        lut = np.zeros(max(table) + 1, np.uint8)
        for cls, value in table.items():
            lut[cls] = value
        theirs = lut[results["theirs"]["arrays"]["seg"]]
        ours = results["ours"]["arrays"]
        print(f"{'':<34}{'seconds':>9}{'peak MiB':>10}")
        for side, name in (("theirs", "nnUNetPredictor (baseline)"),
                           ("ours", f"ToothMCL ({results['ours']['precision']})")):
            print(f"{name:<34}{results[side]['seconds']:>9.1f}{results[side]['peak_mib']:>10.0f}")
        speedup = results["theirs"]["seconds"] / results["ours"]["seconds"]
        print(f"speed-up {speedup:.2f}x (goal 2x); peak memory "
              f"{results['ours']['peak_mib'] / results['theirs']['peak_mib']:.2f}x nnU-Net's")
        if not args.train_steps:
            print("untrained network (--train-steps 0): labels change from voxel to voxel, so the agreement below "
                  "says nothing; train it to judge agreement")
        raw, final = dice_agreement(ours["raw"], theirs), dice_agreement(ours["final"], theirs)
        print(f"agreement, network labels before our clean-up: mean Dice {raw[0]:.4f} (size-weighted {raw[1]:.4f}) "
              f"over labels of >= 1000 voxels, voxels equal {np.mean(ours['raw'] == theirs):.4f} (goal Dice 0.99)")
        print(f"agreement, our final labels (after the FDI clean-up, ours): mean Dice {final[0]:.4f} "
              f"(size-weighted {final[1]:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
