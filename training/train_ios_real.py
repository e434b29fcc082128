"""Train, evaluate and card a real intraoral model (``ios_pt_real_v1``, ``ios_pt_real_v2``), in one command.

    python -m training.train_ios_real --data ../shared/data/meshsegnet --out runs/ios_real

1. **Convert** MeshSegNet's 72 real scans (``toothmcl convert-dataset meshsegnet``: per-face
   labels to FDI per vertex, every scan's numbering checked by centroid and arch order; 69 are
   kept) into ``OUT/export``, split by patient with fractions 0.7/0.1/0.2 and seed 0: 24
   patients train (48 jaws), 4 validate (they pick the best epoch), 8 are the test split (14
   jaws), never trained on nor used to choose anything. An existing ``OUT/export`` is reused
   (its manifest is checked).
2. **Train** a Point Transformer from scratch with ``training/configs/ios_meshsegnet.yaml``
   (the paper's network made smaller for a 2-core CPU; the config marks every departure from
   the paper; ``--config training/configs/ios_meshsegnet_v2.yaml`` trains the larger network of
   ``ios_pt_real_v2``) through ``training.finetune`` (the shared engine: ``OUT/last.ckpt`` after
   every epoch; run the same command again to resume after an interruption, and
   ``--set train.epochs=N`` to go on for longer). ``--members NAME`` then names trained networks
   in the card whose probabilities are averaged with the new one's (an ensemble); the steps
   below measure the ensemble.
3. **Choose** the test-time sampling on the *validation* split: 6 farthest-point samplings, or
   3 each with its mirror image (the same cost; :data:`SAMPLINGS`), whichever gives the better
   mean per-tooth Dice there (``--passes`` / ``--mirror`` fix it instead).
4. **Evaluate** the best weights on the test split with the full pipeline
   (:class:`ToothMCLCore.inference.ios.IOSPredictor` with the chosen sampling, the scan read back
   from its file as ``segment-ios`` reads it), print the per-jaw and per-tooth table
   (:mod:`ToothMCLCore.evaluation.ios_split`), and write the figures, the split, the sampling and
   the limitations into the model card ``OUT/<name>.json`` (the config's ``train.name``).

To ship the result, copy ``OUT/<name>.safetensors`` and its ``.json`` card into
``ToothMCLCore/weights/``. ``--evaluate-only`` re-runs steps 3-4 on existing weights.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("training.ios_real")

CONFIG = Path(__file__).parent / "configs" / "ios_meshsegnet.yaml"
#: where the card's notes on the test split begin (an evaluation replaces what follows)
NOTES_MARK = " Test split ("
SPLIT = (0.7, 0.1, 0.2)
SPLIT_SEED = 0
LICENCE = "MIT (MeshSegNet, Lian & Wu; github.com/Wei546/MeshSegNet, all_sample/)"
LIMITATIONS = (
    "Limitations: trained and tested on 36 patients from one public source (MeshSegNet; the patients' provenance "
    "is not stated); the scans are decimated to about 10,000 triangles (about 5,000 vertices), so the figures are "
    "for such scans: denser scans are sampled down to the card's point count and were not measured against labels; "
    "third molars are labelled on two training scans only (38 and 48), so an x8 is rarely recognised; primary "
    "teeth are not supported; the teeth are numbered along the arch with textbook crown widths "
    "(ToothMCLCore.postprocessing.arch_order), tried with teeth removed (their spaces left open) but never on a jaw "
    "whose extraction space was closed, where the teeth may be numbered one position off; the numbering of four "
    "scans was repaired from their geometry and three scans were left out (see "
    "ToothMCLCore.io.public_datasets.meshsegnet); {network}. Research use; not a medical device."
)
def network_limitation(card, member_cards=()) -> str:
    """How the card's network (and each ensemble member's) departs from the paper's, for the
    card's limitations: sizes, neighbours and points, which a CPU forced. The paper's network is
    the Point Transformer's defaults (the ToothMCL authors' IOS configuration)."""
    import inspect

    from ToothMCLCore.models.point_transformer import PointTransformerSeg

    defaults = inspect.signature(PointTransformerSeg).parameters
    paper = {k: list(defaults[k].default) for k in ("planes", "blocks", "nsamples")}

    def one(c) -> str:
        args = {k: list(c.arch_args.get(k, v)) for k, v in paper.items()}
        diff = [f"{k} {args[k]}, not {v}" for k, v in paper.items() if args[k] != v]
        shape = "; ".join(diff) if diff else "the paper's size"
        return f"{c.name} ({shape})"

    points = int(card.preprocess["n_points"])
    if not member_cards:
        return (f"the network departs from the paper's, {one(card)}, and saw {points:,} points, not 24,000, so that "
                "it trains on a 2-core CPU")
    return (f"{len(member_cards) + 1} networks' probabilities are averaged, each departing from the paper's network, "
            + " and ".join(one(c) for c in (card, *member_cards))
            + f", and they saw {points:,} points, not 24,000, so that they train on a 2-core CPU")


def convert(data: Path, export: Path):
    """``export`` read back if it is there, else converted from ``data`` (MeshSegNet scans)."""
    from ToothMCLCore.io.dataset_layout import read_dataset, write_dataset
    from ToothMCLCore.io.public_datasets import CONVERTERS

    if (export / "manifest.json").is_file():
        logger.info("reusing the converted dataset %s", export)
        return read_dataset(export)
    converter = CONVERTERS["meshsegnet"]
    return write_dataset(converter.function(data), export, format="teeth3ds", split=SPLIT, seed=SPLIT_SEED,
                         description=f"MeshSegNet from {data}: {converter.description}. Labels: {converter.source}")


#: test-time sampling settings tried on the validation split, at about the same cost: (passes, mirror)
SAMPLINGS = ((6, False), (3, True))


def evaluate(weights: Path, dataset, passes: int | None = None, device: str = "cpu", mirror: bool | None = None,
             split: str = "test", **options) -> dict:
    """The summary (:func:`ToothMCLCore.evaluation.ios_split.summarize`) of one split; ``options``
    go to :class:`~ToothMCLCore.inference.ios.IOSPredictor` (e.g. ``boundary=False``)."""
    from ToothMCLCore.evaluation.ios_split import evaluate_cases, summarize
    from ToothMCLCore.inference.ios import IOSPredictor

    kwargs = {"passes": passes} if passes else {}
    predictor = IOSPredictor(weights=weights, device=device, mirror=mirror, **kwargs, **options)
    scores = evaluate_cases(predictor, dataset.split(split),
                            progress=lambda case, f: logger.info("evaluating %s (%.0f %%)", case, 100 * f))
    summary = summarize(scores)
    summary["sampling_passes"], summary["mirror_passes"] = predictor.passes, predictor.mirror
    summary["surface_refinement"] = predictor.refine
    summary["boundary_model"] = predictor.boundary_card.name if predictor.boundary_card else ""
    return summary


def choose_sampling(weights: Path, dataset, device: str = "cpu") -> tuple[int, bool]:
    """(passes, mirror) of :data:`SAMPLINGS` with the best mean per-tooth Dice over the upper and
    lower jaws of the *validation* split (the test split chooses nothing)."""
    best = None
    for passes, mirror in SAMPLINGS:
        s = evaluate(weights, dataset, passes, device, mirror, split="val")
        score = (s["upper"]["mean_dice"] + s["lower"]["mean_dice"]) / 2
        logger.info("validation: %d passes%s: mean Dice %.4f", passes, " + mirror" if mirror else "", score)
        if best is None or score > best[0]:
            best = (score, passes, mirror)
    return best[1], best[2]


def write_card(weights: Path, dataset, summary: dict) -> None:
    """Put the data, split, test figures and limitations into the card beside ``weights``."""
    from ToothMCLCore.models.checkpoint import card_path, read_card, sha256_of, update_card
    from ToothMCLCore.models.registry import resolve_weights

    card = read_card(card_path(weights))
    if card.sha256 and card.sha256 != sha256_of(weights):
        raise SystemExit(f"{card_path(weights)} does not describe {weights} (SHA-256 differs)")
    patients = {split: sorted({c.patient_id for c in dataset.split(split)}, key=_natural)
                for split in ("train", "val", "test")}
    counts = dataset.counts()
    left_out = sorted(set(_all_scans()) - {Path(c.source).name for c in dataset.cases})
    a, up, low = summary["all"], summary["upper"], summary["lower"]
    data = {}
    data["training_data"] = (
        f"Real intraoral scans of MeshSegNet, licence {LICENCE}: {len(dataset.cases)} of 72 scans of 36 patients"
        + (f" ({', '.join(left_out)} left out: their numbering could not be checked)" if left_out else "")
        + f"; split by patient (fractions {list(SPLIT)}, seed {SPLIT_SEED}): train {counts['train'][1]} patients "
        f"({counts['train'][0]} jaws), val {counts['val'][1]} ({counts['val'][0]}), test {counts['test'][1]} "
        f"({counts['test'][0]}), test patients {patients['test']}")
    data["intended_use"] = ("Intraoral-scan tooth segmentation and FDI numbering of permanent teeth, upper and lower "
                            "jaws" + "".join(f", averaged with {m}" for m in card.members)
                            + ". Research use, not a medical device.")
    data["notes"] = (
        f"{card.notes.split(NOTES_MARK)[0].rstrip()}{NOTES_MARK}{a['scans']} jaws, {summary['sampling_passes']} sampling passes"
        f"{' with a mirror pass each' if summary.get('mirror_passes') else ''}"
        + (", boundaries settled on the surface, teeth numbered along the arch"
           if summary.get("surface_refinement") else "")
        + (f", tooth vs gingiva re-decided next to the boundary by {summary['boundary_model']}"
           if summary.get("boundary_model") else "")
        + "): mean per-tooth "
        f"Dice {up['mean_dice']:.3f} upper / {low['mean_dice']:.3f} lower, tooth vs gingiva (TSA) "
        f"{up['tooth_vs_gingiva']:.3f} / {low['tooth_vs_gingiva']:.3f}, exp(-TLA) {a['exp_neg_TLA']:.3f}, TIR "
        f"{a['TIR']:.3f}, {a['mirrored_teeth']} teeth numbered as their mirror. "
        + LIMITATIONS.format(network=network_limitation(card, [read_card(card_path(resolve_weights(m)[0]))
                                                               for m in card.members])))
    data["metrics"] = {"test_split": summary, "split_patients": patients}
    data["preprocess"] = {**card.preprocess, "sampling_passes": summary["sampling_passes"],
                          "mirror_passes": bool(summary.get("mirror_passes", False))}
    update_card(weights, **data)


def _natural(text: str):
    return (0, int(text)) if str(text).isdigit() else (1, str(text))


def _all_scans() -> list[str]:
    return [f"{n}_{jaw}.vtp" for n in range(1, 37) for jaw in ("up", "down")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of MeshSegNet's <N>_up.vtp / <N>_down.vtp")
    p.add_argument("--out", default="runs/ios_real", help="output folder (export/, weights, last.ckpt, log.csv)")
    p.add_argument("--export", help="the converted dataset (default: OUT/export; made there when absent)")
    p.add_argument("--config", default=str(CONFIG), help="training config (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=200 (repeatable)")
    p.add_argument("--evaluate-only", action="store_true", help="skip training; evaluate OUT's weights")
    p.add_argument("--passes", type=int, help="sampling passes for the evaluation (default: chosen on the validation "
                                             "split among (6, no mirror) and (3, mirror))")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction,
                   help="mirror pass for the evaluation (default: chosen on the validation split with --passes)")
    p.add_argument("--members", nargs="+", metavar="NAME",
                   help="registry names of trained networks whose probabilities are averaged with the new one's "
                        "(written into its card's 'members' before the sampling is chosen and the test split read)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from ToothMCLCore.errors import ToothMCLError
    from ToothMCLCore.evaluation.ios_split import format_summary
    from ToothMCLCore.models.checkpoint import update_card

    from .finetune import main as finetune_main

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    try:
        export = Path(args.export) if args.export else out / "export"
        dataset = convert(Path(args.data), export)
        if not args.evaluate_only:
            code = finetune_main(["ios", "--data", str(export), "--config", args.config, "--out", str(out),
                                  *[x for o in args.overrides for x in ("--set", o)]])
            if code:
                return code
        from .engine import TrainConfig, load_config, parse_overrides
        from .finetune import IOSFinetuneConfig

        sections = {"train": TrainConfig, "ios": IOSFinetuneConfig}
        name = load_config(args.config, sections, parse_overrides(args.overrides))["train"].name
        weights = out / f"{name}.safetensors"
        if args.members is not None:  # the pipeline then averages their probabilities with this network's
            update_card(weights, members=list(args.members))
        passes, mirror = args.passes, args.mirror
        if passes is None and mirror is None:
            passes, mirror = choose_sampling(weights, dataset)
        summary = evaluate(weights, dataset, passes, mirror=mirror)
        write_card(weights, dataset, summary)
    except ToothMCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary, f"{name} on the test split of {export}:"))
    print(f"card with the test figures: {weights.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
