"""``toothmcl corrections list|show|diff|check``: look into a corrections store from a terminal.

:func:`add_corrections_parsers` adds the ``corrections`` command to the ``toothmcl`` parser.
Handlers print to stdout and return the exit code (0 fine, 1 ``check`` found something);
errors are :class:`~ToothMCLCore.errors.ToothMCLError` and become one line in ``main()``.
"""

from __future__ import annotations

import argparse
import json

from .. import fdi
from ..io.dataset_layout import FORMATS


def _store(path):
    from .store import CorrectionStore

    return CorrectionStore(path)


def _when(created_utc: str) -> str:
    return created_utc.replace("T", " ").replace("+00:00", " UTC")


def _label(value: int) -> str:
    return "background" if value == 0 else fdi.label_name(value)


def _operation(op: dict) -> str:
    """``swap 44 -> 45 (voxels=54)`` for an entry with op/from/to; a click tool's
    (:mod:`ToothMCLCore.interactive`) as ``add 36 (1 click: tooth at (x, y, z) mm, 145 vertices,
    <time>)``; else ``key=value ...``."""
    if op.get("op") == "interactive" and isinstance(op.get("clicks"), list):
        clicks = op["clicks"]
        where = "; ".join(f"{c.get('kind')} at ({', '.join(f'{x:.1f}' for x in c.get('ras', []))})" for c in clicks)
        numbers = " ".join(str(v) for v in op.get("labels", [op.get("label")]))
        unit = "vertices" if "vertices" in op else "voxels"
        return (f"{op.get('tool')} {numbers} ({len(clicks)} click{'s' if len(clicks) != 1 else ''}: {where} mm, "
                f"{op.get(unit, 0)} {unit} changed, {op.get('time_utc', '')})")
    rest = " ".join(f"{k}={v}" for k, v in op.items() if k not in ("op", "from", "to"))
    if {"op", "from", "to"} <= set(op):
        return f"{op['op']} {op['from']} -> {op['to']}" + (f" ({rest})" if rest else "")
    return " ".join(f"{k}={v}" for k, v in op.items())


def format_diff_table(entries: list[dict], unit: str) -> list[str]:
    """Lines of a per-tooth diff table: changed teeth one per row, unchanged ones summed up."""
    changed = [e for e in entries if e["change"] != "unchanged"]
    unchanged = [e["from"] for e in entries if e["change"] == "unchanged"]
    lines = []
    if changed:
        lines.append(f"{'from':>4} {'to':>4}  {'change':<10} {'before':>9} {'after':>9} {'gained':>8} "
                     f"{'lost':>8}  tooth")
        for e in changed:
            gained, lost = e["after"] - e["overlap"], e["before"] - e["overlap"]
            name = _label(e["from"]) if e["from"] else _label(e["to"])
            if e["from"] and e["to"] and e["from"] != e["to"]:
                name = f"{name} -> {_label(e['to'])}"
            lines.append(f"{e['from'] or '-':>4} {e['to'] or '-':>4}  {e['change']:<10} {e['before']:>9} "
                         f"{e['after']:>9} {gained:>8} {lost:>8}  {name}")
    else:
        lines.append("no tooth changed")
    if unchanged:
        lines.append(f"unchanged ({len(unchanged)}): {' '.join(str(v) for v in unchanged)}")
    return lines


def cmd_list(args) -> int:
    store = _store(args.store)
    cases = store.cases()
    if not cases:
        print(f"no corrections saved yet in {store.root}")
        return 0
    width = max(4, *(len(c.case_id) for c in cases))
    print(f"{'case':<{width}}  {'revisions':>9}  {'last annotator':<20}  {'last saved':<23}  modality")
    for c in cases:
        print(f"{c.case_id:<{width}}  {c.revisions:>9}  {c.last_annotator:<20}  "
              f"{_when(c.last_created_utc):<23}  {c.modality}")
    print(f"{len(cases)} cases, {sum(c.revisions for c in cases)} revisions in {store.root}")
    return 0


def cmd_show(args) -> int:
    store = _store(args.store)
    revisions = store.revisions(args.case)
    rev = store.revision(args.case, args.revision)
    if args.json:
        print(json.dumps(rev.to_dict(), indent=2))
        return 0
    print(f"{rev.case_id}, revision {rev.revision} of {revisions[-1].revision} ({rev.modality.upper()})")
    print(f"  saved        {_when(rev.created_utc)} by {rev.annotator}")
    if rev.note:
        print(f"  note         {rev.note}")
    version = f" {rev.model_version}" if rev.model_version else ""
    sha = f" (SHA-256 {rev.model_sha256[:12]})" if rev.model_sha256 else ""
    print(f"  model        {rev.model_name}{version}{sha}")
    if rev.input_path or rev.input_sha256:
        print(f"  input        {rev.input_path or '(not from a file)'}"
              f"{f' (SHA-256 {rev.input_sha256[:12]})' if rev.input_sha256 else ''}")
    if rev.input_copy:
        print(f"  input copy   {rev.input_copy}")
    shape = " x ".join(str(s) for s in rev.shape)
    grid = (f"(K, J, I) {shape} voxels, spacing {' x '.join(f'{s:g}' for s in rev.geometry.spacing)} mm"
            if rev.geometry is not None else f"{shape} vertices{f', {rev.jaw} jaw' if rev.jaw else ''}")
    print(f"  labels       {grid}")
    print(f"  folder       {rev.folder}")
    for i, op in enumerate(rev.operations):
        print(f"  {'operations' if i == 0 else '':<12} {_operation(op)}")
    print(f"per-tooth changes, prediction -> corrected ({rev.unit}):")
    for line in format_diff_table(rev.tooth_diff, rev.unit):
        print(f"  {line}")
    return 0


def cmd_diff(args) -> int:
    store = _store(args.store)
    entries = store.diff(args.case, args.from_revision, args.to_revision)
    unit = store.revision(args.case, args.to_revision).unit
    if args.json:
        print(json.dumps({"case_id": args.case, "from_revision": args.from_revision,
                          "to_revision": args.to_revision, "unit": unit, "changes": entries}, indent=2))
        return 0
    print(f"{args.case}: corrected labels of revision {args.from_revision} -> revision {args.to_revision} ({unit})")
    for line in format_diff_table(entries, unit):
        print(f"  {line}")
    return 0


def cmd_check(args) -> int:
    from .check import check_store

    report = check_store(args.store, repair=args.repair, verify_files=not args.quick)
    print(f"store {report.store}: {report.revisions} revisions indexed")
    for kind, items in (("problem", report.problems), ("leftover", report.leftovers),
                        ("in progress", report.in_progress), ("repaired", report.repaired)):
        for item in items:
            print(f"  {kind}: {item}")
    if report.ok:
        print("OK" + (" after repair" if report.repaired else ""))
        return 0
    hint = "; run again with --repair to remove leftovers" if report.leftovers else ""
    print(f"{len(report.problems)} problems, {len(report.leftovers)} leftovers{hint}")
    return 1


def add_corrections_parsers(subparsers) -> argparse.ArgumentParser:
    """Add ``corrections list|show|diff|check`` to the ``toothmcl`` sub-parsers; returns its parser."""
    c = subparsers.add_parser("corrections", help="list, show, compare and check saved corrections",
                              description="Look into a corrections store (a folder made when the first "
                                          "correction is saved).")
    sub = c.add_subparsers(dest="corrections_command", required=True, metavar="{list,show,diff,check}")

    p = sub.add_parser("list", help="one line per case: revisions, last annotator, last date, modality")
    p.add_argument("store", help="the store folder")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="metadata and per-tooth changes of one revision")
    p.add_argument("store", help="the store folder")
    p.add_argument("case", help="case id (see 'toothmcl corrections list')")
    p.add_argument("--revision", type=int, help="revision number (default: the latest)")
    p.add_argument("--json", action="store_true", help="print the revision's metadata as JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("diff", help="per-tooth changes between the corrected labels of two revisions")
    p.add_argument("store", help="the store folder")
    p.add_argument("case", help="case id")
    p.add_argument("--from", dest="from_revision", type=int, required=True, metavar="N")
    p.add_argument("--to", dest="to_revision", type=int, required=True, metavar="M")
    p.add_argument("--json", action="store_true", help="print the changes as JSON")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("check", help="find damage and leftovers of interrupted saves; --repair fixes what it can")
    p.add_argument("store", help="the store folder")
    p.add_argument("--repair", action="store_true",
                   help="remove leftovers; rebuild a damaged index from the revision folders")
    p.add_argument("--quick", action="store_true", help="do not recompute the files' SHA-256")
    p.set_defaults(func=cmd_check)
    return c


# -- export-dataset (the export itself lives in corrections.export) ---------------------------
def cmd_export_dataset(args) -> int:
    """Handler of ``toothmcl export-dataset``; prints what was written and skipped."""
    from ..io.dataset_split import SPLITS, parse_fractions
    from .export import SKIP_REASONS, export_store

    cases = [c for item in (args.cases or []) for c in item.split(",") if c] or None
    result = export_store(args.store, args.out, args.format, split=args.split, seed=args.seed,
                          overwrite=args.overwrite, cases=cases, annotator=args.annotator,
                          description=args.description)
    dataset = result.dataset
    counts = dataset.counts()
    layout = "nnU-Net v2" if dataset.format == "nnunet" else "Teeth3DS"
    n_patients = len({c.patient_id for c in dataset.cases})
    print(f"exported {len(dataset.cases)} {dataset.modality.upper()} cases of {n_patients} patients to "
          f"{dataset.root} ({layout} layout)")
    for name in SPLITS:
        print(f"  {name:<5} {counts[name][0]:>5} cases  {counts[name][1]:>5} patients")
    empty = [name for name, f in zip(SPLITS, parse_fractions(args.split)) if f > 0 and not counts[name][0]]
    if empty:
        print(f"  note: {' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty: {n_patients} patients "
              "are too few for the requested split (a patient is never divided between splits)")
    for reason, skipped in result.skipped.items():
        hint = f"; export them with --format {'teeth3ds' if dataset.format == 'nnunet' else 'nnunet'}" \
            if reason == "modality" else ""
        print(f"  skipped {len(skipped)} cases {SKIP_REASONS[reason]}{hint}")
    print(f"manifest with the SHA-256 of every file: {dataset.root / 'manifest.json'}")
    return 0


def add_export_parsers(subparsers) -> argparse.ArgumentParser:
    """Add ``export-dataset`` to the ``toothmcl`` sub-parsers; returns its parser."""
    p = subparsers.add_parser(
        "export-dataset", help="export the corrected cases of a store as a training dataset",
        description="Write the latest corrected revision of every case in a corrections store as a "
                    "training dataset: CBCT cases as an nnU-Net v2 dataset (--format nnunet), IOS cases in "
                    "the Teeth3DS layout (--format teeth3ds), with splits by patient and a manifest holding "
                    "the SHA-256 of every file. The store is only read.")
    p.add_argument("store", help="the corrections store folder")
    p.add_argument("out", help="the dataset folder to create (new or empty; for nnU-Net name it like "
                               "Dataset301_ToothMCL)")
    p.add_argument("--format", required=True, choices=tuple(FORMATS),
                   help="nnunet: CBCT cases; teeth3ds: intraoral-scan cases")
    p.add_argument("--split", default="0.8,0.1,0.1", metavar="TRAIN,VAL,TEST",
                   help="fractions of the cases per split, by patient (default: 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default: 0); same seed, same split")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export at OUT")
    p.add_argument("--cases", nargs="+", metavar="CASE", help="export only these case ids (space or comma separated)")
    p.add_argument("--annotator", help="per case, export the latest revision this annotator saved")
    p.add_argument("--description", default="", help="free text kept in dataset.json and the manifest")
    p.set_defaults(func=cmd_export_dataset)
    return p
