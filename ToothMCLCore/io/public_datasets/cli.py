"""``toothmcl convert-dataset NAME ROOT OUT``: a public dataset in its published layout -> ours.

:func:`add_convert_parsers` adds the command to the ``toothmcl`` parser. The handler prints a
one-line summary and returns 0; problems are :class:`~ToothMCLCore.errors.ToothMCLError` and
become one line and an exit code in ``main()``. CBCT datasets are written in the ``nnunet``
format, intraoral scans in the ``teeth3ds`` format of
:func:`ToothMCLCore.io.dataset_layout.write_dataset`.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import math

from ...errors import InvalidInputError
from . import CONVERTERS

#: output format of :func:`write_dataset` per modality
FORMATS = {"cbct": "nnunet", "ios": "teeth3ds"}


def parse_split(value: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1); three fractions >= 0 that sum to 1."""
    try:
        parts = tuple(float(p) for p in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"expected three fractions train,val,test >= 0 summing to 1, e.g. "
                                         f"0.8,0.1,0.1 (got {value!r})")
    return parts  # type: ignore[return-value]


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number (got {value!r})")
    return n


def converter_options(function) -> dict[str, object]:
    """Keyword options of a converter and their defaults (``skip_unpaired`` excluded)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "skip_unpaired"}


def parse_options(pairs: list[str], name: str) -> dict[str, object]:
    """``["numbering=arch-order"]`` -> ``{"numbering": "arch-order"}`` for converter ``name``.

    Raises:
        InvalidInputError: not ``KEY=VALUE``, or a key the converter does not take.
    """
    allowed = converter_options(CONVERTERS[name].function)
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in allowed:
            known = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
            raise InvalidInputError(f"--option {pair!r} is not an option of {name} (its options and defaults: "
                                    f"{known}); write --option KEY=VALUE")
        default = allowed[key]
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise InvalidInputError(f"--option {key} takes true or false (got {value!r})")
            out[key] = value.lower() in ("true", "1", "yes")
        else:
            out[key] = value.strip()
    return out


class _Counting:
    """Iterate over records and count them."""

    def __init__(self, records):
        self.records, self.count = records, 0

    def __iter__(self):
        for record in self.records:
            self.count += 1
            yield record


def cmd_convert_dataset(args) -> int:
    from ToothMCLCore.io.dataset_layout import write_dataset

    converter = CONVERTERS[args.name]
    options = parse_options(args.option, args.name)
    records = converter.function(args.root, skip_unpaired=args.skip_unpaired, **options)
    if args.limit:
        records = itertools.islice(records, args.limit)
    counted = _Counting(records)
    fmt = FORMATS[converter.modality]
    description = f"{args.name} from {args.root}: {converter.description}. Labels: {converter.source}"
    test_cases = read_case_list(args.test_list) if args.test_list else None
    dataset = write_dataset(counted, args.out, format=fmt, split=args.split, seed=args.seed,
                            overwrite=args.overwrite, description=description, test_cases=test_cases,
                            folds=args.folds)
    split = ",".join(f"{f:g}" for f in args.split)
    how = f"test from {len(args.test_list)} list(s)" if test_cases is not None else f"split {split}"
    folds = f", {args.folds} folds" if args.folds else ""
    print(f"converted {counted.count} {args.name} cases into {args.out} ({fmt} layout, {how}, seed {args.seed}"
          f"{folds})")
    counts = dataset.counts()
    print("  " + ", ".join(f"{name} {c} cases of {p} patients" for name, (c, p) in counts.items()))
    if test_cases is not None:
        missing = len(test_cases - {c.case_id for c in dataset.cases})
        if missing:
            print(f"  {missing} listed test case(s) are not in {args.root}")
    return 0


def read_case_list(paths) -> set[str]:
    """Case ids of text files, one per line (blank lines and ``#`` comments ignored; a trailing
    mesh or label suffix is dropped, so ``0EJBIPTC_upper.obj`` is ``0EJBIPTC_upper``).

    Raises:
        InvalidInputError: a file that cannot be read, or lists nothing.
    """
    from pathlib import Path

    out: set[str] = set()
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read the case list {path}: {exc}; give a text file of case ids, one "
                                    "per line") from None
        names = [line.split("#")[0].strip() for line in text.splitlines()]
        names = [n.rsplit(".", 1)[0] if n.lower().endswith((".obj", ".json", ".ply", ".stl", ".vtp")) else n
                 for n in names if n]
        if not names:
            raise InvalidInputError(f"the case list {path} lists no case; give a text file of case ids, one per line")
        out.update(names)
    return out


def _epilog() -> str:
    lines = ["datasets (NAME: layout; options; where the label mapping was read):"]
    for name, conv in CONVERTERS.items():
        options = ", ".join(f"{k}={v if not isinstance(v, tuple) else ','.join(v)}"
                            for k, v in converter_options(conv.function).items())
        lines.append(f"  {name} ({conv.modality}): {conv.description}")
        if options:
            lines.append(f"      options: {options}")
        lines.append(f"      labels: {conv.source}")
    return "\n".join(lines)


def add_convert_parsers(subparsers) -> argparse.ArgumentParser:
    """Add ``convert-dataset`` to the ``toothmcl`` sub-parsers; returns its parser."""
    p = subparsers.add_parser(
        "convert-dataset", help="convert a public dataset (ToothFairy2, Cui, Teeth3DS, TADPM, 3D-IOSSeg, MeshSegNet)",
        description="Read a public dataset in its published layout, map its labels to FDI numbers "
                    "(0 background/gingiva, 99 metal/restoration) and write it in our training layout, "
                    "split by patient.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(CONVERTERS), metavar="NAME", help=", ".join(CONVERTERS))
    p.add_argument("root", metavar="ROOT", help="the dataset as downloaded and extracted")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--split", type=parse_split, default=(0.8, 0.1, 0.1), metavar="TRAIN,VAL,TEST",
                   help="case fractions per split, patients never shared (default 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--limit", type=_positive, metavar="N", help="convert only the first N cases")
    p.add_argument("--skip-unpaired", action="store_true",
                   help="leave out cases with a missing or ambiguous file instead of stopping")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a converter option (see below), repeatable")
    p.add_argument("--test-list", action="append", default=[], metavar="FILE",
                   help="a given test set: a text file of case ids, one per line (e.g. the 3DTeethSeg'22 "
                        "challenge's private-testing-set.txt: <ID>_<jaw>), repeatable; their patients are the "
                        "test split and --split's train and val fractions divide the rest")
    p.add_argument("--folds", type=_positive, default=0, metavar="K",
                   help="also give every patient a cross-validation fold 0..K-1 (e.g. 3, as SOFTooth's Table I); "
                        "training with --fold k then tests on fold k")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=cmd_convert_dataset)
    return p
