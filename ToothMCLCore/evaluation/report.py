"""The report folder of an evaluation, written atomically.

Contents (:data:`REPORT_FILES`): ``summary.md`` (tables of mean [95 % CI], paired t-tests,
the rules), ``per_case.csv`` (one row per case and method), ``per_tooth.csv`` (one row per case,
method and tooth), and three PNG figures from :mod:`.plots`. Everything is written into a
hidden temporary folder next to the destination, which is renamed into place only when every
file is complete: on any error no report folder appears (an existing one is left as it was).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .. import fdi
from ..errors import OutputError
from .ios_eval import IOS_METRICS, IOS_PERCENT_METRICS
from .results import (
    FALSE_POSITIVE,
    MISSED,
    Evaluation,
    SummaryRow,
    dice_rows,
    group_label,
    metric_rows,
    tooth_rows,
)
from .statistics import ALPHA, CONFIDENCE, format_p, significance_stars

SUMMARY, PER_CASE, PER_TOOTH = "summary.md", "per_case.csv", "per_tooth.csv"
BOXPLOT, GROUP_BARS, TOOTH_BARS = "dice_boxplot.png", "group_bars.png", "per_tooth_bars.png"
REPORT_FILES = (SUMMARY, PER_CASE, PER_TOOTH, BOXPLOT, GROUP_BARS, TOOTH_BARS)
_MODALITY = {"cbct": "CBCT", "ios": "IOS"}
_WORST = 5  # lowest-scoring cases listed in the summary


def check_destination(folder, overwrite: bool = False) -> Path:
    """Refuse a destination that cannot take a report, before any work is done.

    A missing folder is fine (its parent must exist); an existing one only with ``overwrite``
    and only if it holds nothing but report files, so that no other folder is ever replaced.

    Raises:
        OutputError: the parent folder is missing, the destination is a file, or an existing
            folder without ``overwrite`` or with files that are not part of a report.
    """
    dest = Path(folder)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"folder {parent} does not exist; create it first or choose another report folder")
    if dest.is_file():
        raise OutputError(f"{dest} is a file; give a folder for the report")
    if dest.exists():
        if not overwrite:
            raise OutputError(f"report folder {dest} already exists; choose another one or pass --overwrite")
        foreign = sorted(p.name for p in dest.iterdir() if p.name not in REPORT_FILES)
        if foreign or not (dest / SUMMARY).is_file():
            raise OutputError(f"{dest} is not a ToothMCL report folder (it holds "
                              f"{', '.join(foreign[:5]) if foreign else f'no {SUMMARY}'}); "
                              "--overwrite only replaces report folders: choose another folder")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"folder {parent} is not writable; choose another report folder")
    return dest


def write_report(evaluation: Evaluation, folder, overwrite: bool = False) -> Path:
    """Write the report folder atomically and return its path.

    Raises:
        OutputError: see :func:`check_destination`; or the disk is full / not writable.
    """
    from .plots import plot_dice_boxplot, plot_group_bars, plot_tooth_bars

    dest = check_destination(folder, overwrite)
    parent = dest.parent if str(dest.parent) else Path(".")
    tmp = parent / f".{dest.name}.tmp-{secrets.token_hex(4)}"
    os.mkdir(tmp)
    try:
        (tmp / SUMMARY).write_text(summary_markdown(evaluation), encoding="utf-8")
        (tmp / PER_CASE).write_text(per_case_csv(evaluation), encoding="utf-8")
        (tmp / PER_TOOTH).write_text(per_tooth_csv(evaluation), encoding="utf-8")
        plot_dice_boxplot(evaluation, tmp / BOXPLOT)
        plot_group_bars(evaluation, tmp / GROUP_BARS)
        plot_tooth_bars(evaluation, tmp / TOOTH_BARS)
        _move_into_place(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"could not write the report to {dest} ({exc}); check free disk space") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _move_into_place(tmp: Path, dest: Path) -> None:
    if not dest.exists():
        os.replace(tmp, dest)
        return
    old = dest.parent / f".{dest.name}.old-{secrets.token_hex(4)}"
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------------

def _num(value: float, digits: int = 6) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _group_column(group: int) -> str:
    return "dice_" + group_label(group).replace(" ", "_")


def per_case_csv(evaluation: Evaluation) -> str:
    """One row per case and method: Dice (0..1), tooth counts, group Dice, extra metrics, files."""
    metrics = evaluation.metric_names()
    groups = range(1, len(fdi.TOOTH_GROUPS) + 1)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["case", "method", "mean_dice", "n_truth_teeth", "n_missed", "n_false_positives",
                     "missed_teeth", "false_positive_teeth", *(_group_column(g) for g in groups), *metrics,
                     "prediction", "truth", "notes"])
    for case in evaluation.cases:
        for m in evaluation.methods:
            s = evaluation.score(case, m)
            writer.writerow([case, m, _num(s.mean_dice), len(s.counted), len(s.missed),
                             len(s.false_positives),
                             " ".join(map(str, s.missed)), " ".join(map(str, s.false_positives)),
                             *(_num(s.group_dice(g)) for g in groups),
                             *(_num(s.metrics.get(k, math.nan)) for k in metrics), s.prediction, s.truth,
                             "; ".join(s.notes)])
    return out.getvalue()


def per_tooth_csv(evaluation: Evaluation) -> str:
    """One row per case, method and tooth in the ground truth or the prediction."""
    unit = evaluation.unit
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["case", "method", "fdi", "tooth", "group", "group_name", "status", "dice",
                     f"truth_{unit}", f"pred_{unit}", f"overlap_{unit}"])
    for case in evaluation.cases:
        for m in evaluation.methods:
            for t in evaluation.score(case, m).teeth:
                tooth = fdi.tooth(t.fdi)
                writer.writerow([case, m, t.fdi, tooth.name, f"T{tooth.group}", tooth.group_name, t.status,
                                 _num(t.dice), t.truth_size, t.pred_size, t.overlap])
    return out.getvalue()


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------

def _p_cell(test) -> str:
    if not math.isfinite(test.p):
        return "-"
    return f"{format_p(test.p)} {significance_stars(test.p)}"


def _diff_cell(test, scale: float, digits: int) -> str:
    if test.n == 0 or not math.isfinite(test.mean_difference):
        return "-"
    d = f"{test.mean_difference * scale:+.{digits}f}"
    if not math.isfinite(test.low):
        return d
    return f"{d} [{test.low * scale:+.{digits}f}, {test.high * scale:+.{digits}f}]"


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|")


def _scale(key) -> tuple[float, int]:
    """(factor, decimals) of a row: Dice, OA, mIoU and the SOFTooth metrics in %, the challenge
    metrics as fractions."""
    if isinstance(key, str) and key != "overall" and key not in IOS_PERCENT_METRICS:
        return 1.0, 4
    return 100.0, 2


def _table(rows: list[SummaryRow], evaluation: Evaluation, first: str, false_positives: bool) -> list[str]:
    methods, ref = evaluation.methods, evaluation.reference
    head = [first, "n", *methods]
    for m in methods[1:]:
        head += [f"{m} − {ref}", f"p ({m} vs {ref})"]
    if false_positives:
        head += [f"false pos. ({m})" for m in methods]
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        scale, digits = _scale(r.key)
        cells = [r.label, str(r.stats[ref].n), *(r.stats[m].format(scale, digits) for m in methods)]
        for m in methods[1:]:
            cells += [_diff_cell(r.tests[m], scale, digits), _p_cell(r.tests[m])]
        if false_positives:
            cells += [str(r.false_positives.get(m, 0)) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _rules(evaluation: Evaluation) -> list[str]:
    unit = evaluation.unit
    where = ("voxels of the label maps" if evaluation.modality == "cbct"
             else "mesh vertices, in the order the scan file stores them")
    pct = round(CONFIDENCE * 100)
    dice = (f"- **Dice** of a tooth in a case: 2·|P ∩ G| / (|P| + |G|) over the {where} carrying its FDI "
            f"number (sizes in `{PER_TOOTH}` are {unit}). Summary tables and plots give Dice in %, the CSV "
            "files as 0..1.")
    teeth = ("- **Which teeth count:** a tooth in the ground truth counts; if the prediction misses it, "
             f"its Dice is 0 (status `{MISSED}`). A tooth only in the prediction is a *false positive* "
             f"(status `{FALSE_POSITIVE}`): listed in the CSV files and counted in the `false pos.` columns, "
             "but it has no Dice and is not in any Dice mean. A tooth absent from both is **not counted** "
             "(it is not scored as a perfect 1).")
    case = ("- **Per case:** overall Dice = mean over the case's ground-truth teeth; a group value (T1 "
            "central incisor … T8 third molar; primary teeth join the group of their kind) = mean over its "
            "ground-truth teeth of that group. A case without a ground-truth tooth of a row has no value "
            "there, so `n` (cases) differs between rows.")
    ci = (f"- **Mean [{pct}% CI]** across cases with Student's t: mean ± t({(1 + CONFIDENCE) / 2:.3f}, n−1)·"
          "sd/√n (sd with n−1). Not clipped at 100 %. With one case the interval is undefined: shown as "
          "`[n=1, no CI]`.")
    test = ("- **Paired t-test:** two-sided (`scipy.stats.ttest_rel`) of each method against the first, over "
            "the cases where both have a value (the same cases and teeth, as the rule above depends only on "
            "the ground truth); `B − A` is the mean paired difference (percentage points for Dice) with its "
            f"CI. Significance level {ALPHA} as in the ToothMCL paper; * p<0.05, ** p<0.01, *** p<0.001, "
            "**** p<0.0001, ns otherwise; `-` when undefined (fewer than 2 pairs, or the same difference in "
            "every case). Identical results give p = 1. No correction for multiple comparisons: across the "
            "group and tooth rows some p < 0.05 arise by chance.")
    labels = ("- **Label values** are FDI numbers (11–48, 51–85); other values (99 metal, jaw bone, canals, "
              "…) are not teeth and count as background.")
    pairing = ("- **Cases** pair by file name without format suffix and without a trailing `_0000`, `_pred` "
               "or `_prediction`; every case needs a ground truth and a prediction from every method.")
    return [dice, teeth, case, ci, test, labels, pairing]


def summary_markdown(evaluation: Evaluation) -> str:
    """The text of ``summary.md``."""
    methods, ref = evaluation.methods, evaluation.reference
    modality = _MODALITY.get(evaluation.modality, evaluation.modality)
    n_cases = len(evaluation.cases)
    lines = [f"# ToothMCL evaluation report: {modality}", "",
             f"- ground truth: `{evaluation.truth_dir}` ({n_cases} case{'s' if n_cases != 1 else ''})"]
    for m in methods:
        role = " (reference of the paired t-tests)" if m == ref and len(methods) > 1 else ""
        lines.append(f"- method **{m}**{role}: `{evaluation.method_dirs[m]}`")
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"- written {written} by toothmcl {_version()}", ""]

    rows = dice_rows(evaluation)
    lines += ["## Dice per tooth group (%)", "",
              (f"Mean [{round(CONFIDENCE * 100)}% CI] across cases; n = cases with a ground-truth tooth "
               "in that row."), "", *_table(rows, evaluation, "teeth", True), ""]
    if evaluation.modality == "ios":
        from .ios_eval import IOS_METRIC_LABELS

        labels = {k: v + (" (%)" if k in IOS_PERCENT_METRICS else "") for k, v in IOS_METRIC_LABELS.items()}
        metric = [r for r in metric_rows(evaluation, labels) if r.key != "TLA_distance"]
        lines += ["## 3DTeethSeg'22 and semantic metrics per jaw", "",
                  ("TSA, TLA (as exp(−TLA)), TIR and score as fractions like the challenge; OA and mIoU in "
                   "%. The mean score over jaws is the challenge's final score when every jaw has a "
                   "ground-truth tooth. SOFTooth's metrics in %: third-molar IoU (mean IoU of the jaw's two "
                   "third molars), the Table III pairwise confusion rates (ground-truth teeth of a pair "
                   "labelled as the pair's other kind in the same quadrant; lower is better) and the "
                   "Table IV normalised centre error (L1 distance of predicted and ground-truth tooth "
                   "centres over the bounding-box diagonal; lower is better). Here they are per-jaw values "
                   "averaged over the jaws that have one; the paper pools its counts over all jaws "
                   "(next section)."),
                  "", *_table(metric, evaluation, "metric", False), ""]
        lines += _pooled_ios(evaluation)
    lines += ["## Dice per FDI tooth (%)", "", *_table(tooth_rows(evaluation), evaluation, "tooth", True), ""]
    lines += _worst_cases(evaluation)
    lines += ["## How the numbers are made", "", *_rules(evaluation), ""]
    notes = list(evaluation.notes) + [f"{r.label}, {m} vs {ref}: {r.tests[m].note}" for r in rows
                                      for m in methods[1:] if r.tests[m].note and r.tests[m].n > 0]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    lines += ["## Figures", "",
              f"![Dice per case and method]({BOXPLOT})", "",
              f"![Dice per tooth group with 95% CI]({GROUP_BARS})", "",
              f"![Dice per FDI tooth with 95% CI]({TOOTH_BARS})", "",
              "## Files", "",
              (f"- `{PER_CASE}`: one row per case and method (mean Dice, group Dice, missed and "
               f"false-positive teeth{', IOS metrics' if evaluation.modality == 'ios' else ''}, the files "
               "compared)."),
              (f"- `{PER_TOOTH}`: one row per case, method and tooth (status `found`, `{MISSED}` or "
               f"`{FALSE_POSITIVE}`, Dice, sizes in {evaluation.unit})."), ""]
    return "\n".join(lines)


def _pooled_ios(evaluation: Evaluation) -> list[str]:
    """SOFTooth's Tables I and III pooled over all jaws of the set, per method (%)."""
    from .ios_eval import pooled_ios
    from .ios_metrics import POOLED_CLASS_NAMES

    pooled = pooled_ios(evaluation)
    if not any(pooled.values()):
        return []
    columns = ["OA", "mIoU", *POOLED_CLASS_NAMES.values()]
    pairs = ["third_molar_IoU", "pair_2nd3rd", "pair_pre_mo", "pair_cen_lat"]

    def cell(value):
        return "n/a" if math.isnan(value) else f"{100 * value:.2f}"

    lines = ["## SOFTooth protocol: pooled over all jaws (%)", "",
             ("As the paper's Tables I and III count them: every vertex of every jaw pooled before "
              "dividing (not a mean of per-jaw values). BG = gingiva; T1-T8 the patient's right "
              "quadrant from the central incisor to the third molar, T9-T16 the left, upper and lower "
              "jaws in the same class; T8 and T16 are the third molars, 3rd-molar IoU their mean; the "
              "confusion rates count the ground-truth teeth of each pair over all jaws (lower is "
              "better); n/a: no jaw has that class."), "",
             "| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {_md(m)} | " + " | ".join(cell(pooled[m][c]) for c in columns) + " |" for m in evaluation.methods]
    lines += ["", "| method | 3rd-molar IoU | 2nd vs 3rd molars | premolars vs 1st molars | central vs lateral |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {_md(m)} | " + " | ".join(cell(pooled[m][c]) for c in pairs) + " |" for m in evaluation.methods]
    return lines + [""]


def _worst_cases(evaluation: Evaluation) -> list[str]:
    ref = evaluation.reference
    scores = [evaluation.score(c, ref) for c in evaluation.cases]
    scores = sorted((s for s in scores if math.isfinite(s.mean_dice)), key=lambda s: s.mean_dice)[:_WORST]
    if not scores:
        return []
    lines = [f"## Lowest-scoring cases ({ref})", "", "| case | Dice (%) | missed teeth | false positives |",
             "|---|---|---|---|"]
    for s in scores:
        lines.append(f"| {s.case} | {s.mean_dice * 100:.2f} | {' '.join(map(str, s.missed)) or '-'} | "
                     f"{' '.join(map(str, s.false_positives)) or '-'} |")
    return lines + [""]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toothmcl")
    except PackageNotFoundError:
        return "(not installed)"


# ------------------------------------------------------------------------------------------------
# Console
# ------------------------------------------------------------------------------------------------

def console_summary(evaluation: Evaluation) -> list[str]:
    """A short fixed-width table for the terminal: overall and group Dice, IOS metrics, the tests."""
    methods, ref = evaluation.methods, evaluation.reference
    rows = dice_rows(evaluation)
    if evaluation.modality == "ios":
        rows += [r for r in metric_rows(evaluation, {k: k + (" (%)" if k in IOS_PERCENT_METRICS else "")
                                                     for k in IOS_METRICS})
                 if r.key != "TLA_distance"]
    table = [[r.label, str(r.stats[ref].n), *(r.stats[m].format(*_scale(r.key)) for m in methods),
              *(_p_cell(r.tests[m]) for m in methods[1:])] for r in rows]
    fp_row = ["false-positive teeth", "", *(str(rows[0].false_positives[m]) for m in methods)]
    if evaluation.modality == "ios":
        table.insert(len(fdi.TOOTH_GROUPS) + 1, fp_row)
    else:
        table.append(fp_row)
    head = [f"{_MODALITY.get(evaluation.modality, evaluation.modality)} Dice (%)", "n", *methods,
            *(f"p ({m} vs {ref})" for m in methods[1:])]
    widths = [max(len(row[i]) if i < len(row) else 0 for row in [head, *table]) for i in range(len(head))]
    lines = []
    for row in [head, *table]:
        cells = [c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.append(f"{len(evaluation.cases)} cases; mean [95% CI] across cases; teeth absent from both "
                 "prediction and ground truth are not counted")
    return lines
