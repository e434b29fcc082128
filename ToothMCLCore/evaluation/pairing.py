"""Pair prediction files with ground-truth files by case name.

A file's *case name* is its name without the format suffix (``.seg.nrrd``, ``.nii.gz``, ...)
and without one trailing :data:`TOLERATED_SUFFIXES` entry, so ``case_007_0000.nii.gz`` (nnU-Net
image naming) and ``case_007_pred.seg.nrrd`` both pair with ``case_007.nii.gz``. Folders are
searched recursively (Teeth3DS keeps each patient in its own folder); hidden files and folders
are skipped. Every ground-truth case needs exactly one prediction per method and every
prediction a ground truth: anything else is an error that names the unmatched cases, so that
a report never silently covers fewer cases than the user thinks.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInputError
from ..io.atomic import full_suffix

#: trailing parts of a file name that are not part of the case name (one is removed)
TOLERATED_SUFFIXES = ("_0000", "_pred", "_prediction")
#: label-map formats of CBCT evaluation
CBCT_LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")
#: Teeth3DS label files of IOS evaluation
IOS_LABEL_SUFFIXES = (".json",)

_SHOW = 10  # names listed in a message


def case_name(path: str | os.PathLike) -> str:
    """``case_007`` for ``case_007_0000.nii.gz``, ``case_007_pred.seg.nrrd`` or ``case_007.mha``."""
    name = Path(path).name
    stem = name[: len(name) - len(full_suffix(name))]
    for tail in TOLERATED_SUFFIXES:
        if stem.endswith(tail) and len(stem) > len(tail):
            return stem[: -len(tail)]
    return stem


def _names(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def find_cases(folder: str | os.PathLike, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """{case name: file} of every file under ``folder`` whose full suffix is in ``suffixes``.

    Raises:
        InvalidInputError: the folder does not exist, holds no such file, or two files share
            a case name.
    """
    root = Path(folder).resolve()
    if not root.is_dir():
        hint = "give the folder, not a file" if root.is_file() else "check the path"
        raise InvalidInputError(f"{what} folder {root} does not exist or is not a folder; {hint}")
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or full_suffix(name) not in suffixes:
                continue
            found.setdefault(case_name(name), []).append(Path(dirpath) / name)
    if not found:
        raise InvalidInputError(f"{what} folder {root} holds no {' / '.join(suffixes)} file; "
                                "choose the folder with the label files")
    clashes = {c: ps for c, ps in found.items() if len(ps) > 1}
    if clashes:
        case, paths = min(clashes.items())
        listed = ", ".join(str(p.relative_to(root)) for p in paths)
        raise InvalidInputError(f"{what} folder {root} has {len(clashes)} case name(s) with more than one "
                                f"file, e.g. {case!r}: {listed}; keep one file per case (names are compared "
                                f"without format suffix and without {', '.join(TOLERATED_SUFFIXES)})")
    return {c: ps[0] for c, ps in found.items()}


def pair_cases(truth_dir, prediction_dirs: dict[str, str | os.PathLike],
               suffixes: tuple[str, ...]) -> list[tuple[str, Path, dict[str, Path]]]:
    """Pair every ground-truth case with one prediction file per method.

    Args:
        truth_dir: folder of ground-truth label files.
        prediction_dirs: {method name: folder of its predictions}.
        suffixes: label-file suffixes to look for.

    Returns:
        ``[(case, truth file, {method: prediction file})]`` sorted by case name.

    Raises:
        InvalidInputError: a case without prediction or without ground truth (all named).
    """
    truth = find_cases(truth_dir, suffixes, "ground-truth")
    preds = {m: find_cases(d, suffixes, f"prediction ({m})") for m, d in prediction_dirs.items()}
    problems = []
    for method, files in preds.items():
        no_pred, no_truth = set(truth) - set(files), set(files) - set(truth)
        where = f"{method} ({prediction_dirs[method]})"
        if no_pred:
            problems.append(f"{len(no_pred)} ground-truth case(s) have no prediction in {where}: "
                            f"{_names(no_pred)}")
        if no_truth:
            problems.append(f"{len(no_truth)} prediction(s) in {where} have no ground truth in "
                            f"{truth_dir}: {_names(no_truth)}")
    if problems:
        raise InvalidInputError("; ".join(problems) + "; every case needs a ground truth and a prediction "
                                f"with the same name (ignoring {', '.join(TOLERATED_SUFFIXES)}); "
                                "add the missing files or evaluate folders that hold matching cases")
    return [(c, truth[c], {m: preds[m][c] for m in preds}) for c in sorted(truth)]
