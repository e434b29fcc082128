"""How long each CBCT click tool takes (the issue's budget: 2 s per click on 2 cores).

    python benchmarks/cbct_tools_speed.py [--spacing 0.3] [--paper-size]

A synthetic CBCT phantom (``make_cbct_phantom``, seed 21) at ``--spacing`` mm; each tool runs
on a damage made from the phantom's truth: split (36 and 37 merged, two clicks), refine (46
eroded by one voxel layer, one positive click), add (36 erased, one click: the shipped
``cbct_swinunetr_demo_v2`` on one window of its card's size around the click). The baseline,
measured in the same run, is what the user would otherwise do to get a missed tooth back: run
the whole segmentation again with the same model. With ``--paper-size`` the add also runs a
randomly initialised paper-size SwinUNETR (feature size 48, 0.3 mm, one 96^3 window as in
``cbct_paper_size.py``; same cost as trained weights), and again after it segmented the phantom,
when the add reads the window from that segmentation instead of running the network
(``ToothMCLCore.inference.cbct_cache``). "after a scene reload" is the first add of a new session:
the model loaded anew (built in the background, as the Slicer module does) and handed the kept
teeth as a saved scene stores them (uint8), the load counted. "x whole run" divides by the whole
segmentation with the same model. Phantom timings, not clinical figures. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

BUDGET_S = 2.0


def _inside(image, mask):
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    k, j, i = np.unravel_index(np.argmax(depth), mask.shape)
    return (image.geometry.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    from scipy import ndimage

    from ToothMCLCore.inference.cbct import CBCTPredictor
    from ToothMCLCore.interactive.cbct_tools import add_tooth, refine_tooth, split_tooth
    from ToothMCLCore.synthetic import make_cbct_phantom

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=0.3, help="phantom voxel size, mm (default 0.3)")
    parser.add_argument("--paper-size", action="store_true", help="also time the add with a paper-size SwinUNETR")
    args = parser.parse_args(argv)

    image, truth = make_cbct_phantom(21, spacing=args.spacing)
    truth = truth.array.astype(np.int64)
    print(f"phantom seed 21 at {args.spacing} mm: {image.array.shape[::-1]} voxels (i, j, k)")
    predictor = CBCTPredictor(device="cpu")
    _, whole = _timed(lambda: predictor.predict(image))
    print(f"baseline: the whole segmentation again with {predictor.card.name}: {whole:.2f} s")
    rows = []
    merged = np.where(truth == 37, 36, truth)
    in_36, in_37 = _inside(image, truth == 36), _inside(image, truth == 37)
    _, t = _timed(lambda: split_tooth(image, merged, in_36, in_37))
    rows.append(("split (2 clicks)", t, whole))
    eroded = np.where((truth == 46) & ~ndimage.binary_erosion(truth == 46), 0, truth)
    on_lost = _inside(image, (truth == 46) & (eroded != 46))
    _, t = _timed(lambda: refine_tooth(image, eroded, 46, positive=[on_lost]))
    rows.append(("refine (1 click)", t, whole))
    erased = np.where(truth == 36, 0, truth)
    click = _inside(image, truth == 36)
    _, t = _timed(lambda: add_tooth(image, erased, click, predictor))
    rows.append((f"add, {predictor.card.name}, segmentation kept (1 click)", t, whole))
    rows.append((f"add, {predictor.card.name}, after a scene reload",
                 _add_after_reload(image, erased, click, predictor), whole))
    fresh = CBCTPredictor(device="cpu")
    add_tooth(image, erased, click, fresh)  # the first call pays torch's one-off set-up
    _, t = _timed(lambda: add_tooth(image, erased, click, fresh))
    rows.append((f"add, {predictor.card.name}, network window (1 click)", t, whole))
    if args.paper_size:
        ran_torch, torch_seconds, _ = _paper_size_add(image, erased, click, "torch")
        ran, seconds, kept = _paper_size_add(image, erased, click, "auto", keep=True)
        paper = kept["whole"]  # the same network segments the whole phantom (with the auto backend)
        rows += [(f"add, paper-size SwinUNETR, {ran_torch} (1 click)", torch_seconds, paper),
                 (f"add, paper-size SwinUNETR, {ran} (1 click)", seconds, paper),
                 ("add, paper-size SwinUNETR, segmentation kept", kept["kept"], paper),
                 ("add, paper-size SwinUNETR, after a scene reload", kept["reload"], paper)]
    print(f"{'tool':<58}{'seconds':>9}{'x budget':>10}{'x whole run':>13}")
    for name, seconds, baseline in rows:
        print(f"{name:<58}{seconds:>9.2f}{seconds / BUDGET_S:>10.2f}{seconds / baseline:>13.3f}")
    print(f"budget {BUDGET_S:.0f} s per click on 2 cores; the add runs one window of the model's card size")
    return 0


def _add_after_reload(image, labels, click, segmented_by, weights=None) -> float:
    """Seconds of the first add of a new session: a predictor of ``segmented_by``'s weights loaded
    (built in the background) and handed its kept teeth through the uint8 arrays a saved scene
    holds, then the click."""
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.inference.cbct import CBCTPredictor
    from ToothMCLCore.inference.cbct_cache import SegmentedTeeth
    from ToothMCLCore.interactive.cbct_tools import add_tooth

    kept = segmented_by.segmented
    stored = kept.quantised()
    start = time.perf_counter()
    predictor = CBCTPredictor(weights=weights, device="cpu", load_in_background=True)
    predictor.keep(SegmentedTeeth.from_quantised(kept.key, kept.geometry, *stored, kept.model_sha256))
    try:
        _, record = add_tooth(image, labels, click, predictor)
        assert record.params["window"] == "segmentation", record.params
    except InvalidInputError:  # random weights may see no tooth: only the time counts here
        pass
    seconds = time.perf_counter() - start
    predictor.net  # noqa: B018 -- the background build ends before the next row
    return seconds


def _paper_size_add(image, labels, click, backend: str, keep: bool = False):
    """(the backend that ran, seconds of one add, with ``keep`` a dict of the seconds of the whole
    segmentation (``whole``), of one add after it (``kept``) and of the first add of a new session
    (``reload``), else None) with a random paper-size SwinUNETR (``cbct_paper_size``'s network and 96^3
    window at 0.3 mm) behind the predictor's window code; the first add, which exports and
    compiles the graph once per model, is not counted. ``keep`` segments the whole phantom first
    (minutes) to time the add that reads the kept segmentation."""
    import os
    import tempfile
    from pathlib import Path

    import torch
    from cbct_paper_size import PAPER_ARCH, SPACING_MM, WINDOW  # this folder's paper-size benchmark

    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.inference.cbct import CBCTPredictor
    from ToothMCLCore.interactive.cbct_tools import add_tooth
    from ToothMCLCore.models.checkpoint import ModelCard, read_card, save_checkpoint
    from ToothMCLCore.models.networks import build_swinunetr
    from ToothMCLCore.models.registry import resolve_weights

    demo, _ = resolve_weights("cbct_swinunetr_demo_v2")
    card = read_card(demo.with_suffix(".json")).to_dict()
    card.update({"name": "cbct_swinunetr_paper_size_random", "arch_args": dict(PAPER_ARCH), "roi_model": "",
                 "preprocess": dict(card["preprocess"], spacing_mm=SPACING_MM),
                 "sliding_window": dict(card["sliding_window"], roi_size=list(WINDOW)), "metrics": {}})
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "paper_size.safetensors"
        save_checkpoint(build_swinunetr(**PAPER_ARCH), ModelCard.from_dict(card), path)
        os.environ["TOOTHMCL_CACHE"] = str(Path(tmp) / "cache")  # the exported graph goes with the weights
        predictor = CBCTPredictor(weights=path, device="cpu", backend=backend)
        seconds = np.inf
        for _ in range(2):  # the first pays the one-off set-up (torch's, or the export and compile)
            start = time.perf_counter()
            try:
                add_tooth(image, labels, click, predictor)
            except InvalidInputError as exc:  # random weights may see no tooth: only the time counts here
                print(f"  (paper-size add refused, as random weights should be: {exc})")
            seconds = time.perf_counter() - start
        kept = None
        if keep:
            _, whole = _timed(lambda: predictor.predict(image))
            start = time.perf_counter()
            try:
                add_tooth(image, labels, click, predictor)
            except InvalidInputError:
                pass
            kept = {"whole": whole, "kept": time.perf_counter() - start,
                    "reload": _add_after_reload(image, labels, click, predictor, path)}
        return predictor.backend, seconds, kept


if __name__ == "__main__":
    raise SystemExit(main())
