"""Retrain the default intraoral model and everything it names, in one command.

    python -m training.retrain_ios_real --data ../shared/data/meshsegnet --out runs/ios_real_all

The default IOS model ``ios_pt_real_v2`` averages two networks and re-decides the boundary with
a refiner trained on their mean; ``ios_pt_real_v1`` (a member) has its own refiner for use
alone. This runs the four trainings in order, on one converted dataset (``OUT/export``, split
by patient as ``training/train_ios_real.py`` does), each followed by its test-split evaluation:

1. ``v1``: ``ios_pt_real_v1`` (``training/configs/ios_meshsegnet.yaml``) in ``OUT/v1``;
2. ``v1_boundary``: its refiner ``ios_boundary_real_v2`` (``training/train_boundary.py``) in
   ``OUT/v1_boundary``, named in v1's card, then v1 measured again with it;
3. ``v2``: ``ios_pt_real_v2`` (``training/configs/ios_meshsegnet_v2.yaml``, the paper's widths
   and depths) in ``OUT/v2``, its card naming the v1 of step 1 as a member;
4. ``v2_boundary``: the refiner ``ios_boundary_real_v4`` trained on the two networks' mean
   (three seeds, their logits averaged), named in v2's card, then v2 measured again with it.

``OUT/registry.json`` lists the four (``TOOTHMCL_REGISTRY=OUT/registry.json`` makes them the
models of those names; ``OUT/cache`` is their download cache during the run, so that weights of
the same name elsewhere never stand in). A finished step is recorded in ``OUT/steps.json`` and
skipped when the command is run again; an interrupted training resumes from its
``last.ckpt``. To ship, copy the four ``.safetensors`` files and their ``.json`` cards into
``ToothMCLCore/weights/``. About 4 hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("training.retrain_ios_real")

CONFIGS = Path(__file__).parent / "configs"
#: (step and output folder, network name, training config, ensemble members, refiner name, refiner options)
NETWORKS = (
    ("v1", "ios_pt_real_v1", CONFIGS / "ios_meshsegnet.yaml", (), "ios_boundary_real_v2", ("--seeds", "0")),
    ("v2", "ios_pt_real_v2", CONFIGS / "ios_meshsegnet_v2.yaml", ("ios_pt_real_v1",), "ios_boundary_real_v4",
     ("--seeds", "0", "1", "2")),
)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_json(path: Path, data: dict) -> None:
    from ToothMCLCore.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _publish(registry: Path, folder: Path) -> None:
    """Add the entries of ``folder/registry.json`` (written beside new weights) to ``registry``."""
    _write_json(registry, {**_read_json(registry), **_read_json(folder / "registry.json")})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of MeshSegNet's <N>_up.vtp / <N>_down.vtp")
    p.add_argument("--out", default="runs/ios_real_all", help="output folder (default: %(default)s)")
    for step, *_ in NETWORKS:
        p.add_argument(f"--{step}-set", dest=f"{step}_overrides", action="append", default=[],
                       metavar="SECTION.KEY=VALUE", help=f"override one value of {step}'s training config (repeatable)")
    p.add_argument("--boundary-epochs", type=int, default=120, help="the refiners' epochs (default: %(default)s)")
    p.add_argument("--limit", type=int, default=0,
                   help="the refiners learn from the first N training and validation jaws only (a quick check)")
    p.add_argument("--passes", type=int, help="sampling passes of every evaluation (default: chosen on validation)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction,
                   help="mirror pass of every evaluation (default: chosen on the validation split)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with _environment(TOOTHMCL_REGISTRY=str(out / "registry.json"), TOOTHMCL_CACHE=str(out / "cache")):
        return _retrain(args, out)


@contextlib.contextmanager
def _environment(**values):
    """Environment variables set for the block, restored after it (the command may run in-process)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _retrain(args, out: Path) -> int:
    """The steps of the module docstring, in ``out``, with the registry and cache already set."""
    from ToothMCLCore.models.checkpoint import update_card

    from . import train_boundary, train_ios_real

    registry, steps_file = out / "registry.json", out / "steps.json"
    _write_json(registry, _read_json(registry))  # $TOOTHMCL_REGISTRY must name a readable file from the start
    common = ["--data", str(args.data), "--export", str(out / "export")]
    sampling = ([f"--passes={args.passes}"] if args.passes else []) + (
        [] if args.mirror is None else ["--mirror" if args.mirror else "--no-mirror"])

    def run(step: str, function, arguments: list[str]) -> bool:
        done = _read_json(steps_file)
        if done.get(step):
            logger.info("%s: done in an earlier run, skipped", step)
            return True
        logger.info("%s: starting", step)
        if function(arguments) != 0:
            print(f"error: step {step} failed; fix what it said and run the same command again (finished steps "
                  f"are kept in {steps_file})", file=sys.stderr)
            return False
        _write_json(steps_file, {**_read_json(steps_file), step: True})
        return True

    for step, name, config, members, refiner, refiner_options in NETWORKS:
        folder = out / step
        weights = folder / f"{name}.safetensors"
        train = [*common, "--out", str(folder), "--config", str(config), "--set", f"train.name={name}",
                 *[x for o in getattr(args, f"{step}_overrides") for x in ("--set", o)], *sampling]
        if members:
            train += ["--members", *members]
        if not run(step, train_ios_real.main, train):
            return 1
        _publish(registry, folder)
        boundary = out / f"{step}_boundary"

        def refine(arguments, weights=weights, boundary=boundary, refiner=refiner, train=train):
            code = train_boundary.main(arguments)
            if code == 0:
                _publish(registry, boundary)
                update_card(weights, boundary_model=refiner)
                code = train_ios_real.main([*train, "--evaluate-only"])
            return code

        if not run(f"{step}_boundary", refine, [*common, "--out", str(boundary), "--weights", str(weights),
                                                 "--name", refiner, "--epochs", str(args.boundary_epochs),
                                                 *refiner_options,
                                                 *(["--limit", str(args.limit)] if args.limit else [])]):
            return 1
    print(f"retrained: {', '.join(sorted(_read_json(registry)))}; registry {registry} (TOOTHMCL_REGISTRY={registry} "
          "uses them by name; copy the .safetensors files and their cards into ToothMCLCore/weights/ to ship)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
