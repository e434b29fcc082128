"""Per-case, per-tooth evaluation results and their aggregation across cases.

**Which teeth count** (the same rule as :mod:`.dice`, for CBCT voxels and IOS vertices):

- a tooth in the ground truth is counted; if the prediction misses it, its Dice is 0
  (status ``"missed"``);
- a tooth only in the prediction is a *false positive*: listed (status ``"false positive"``),
  counted per case, tooth and group, but it has no Dice and is not part of any Dice mean;
- a tooth in neither is not counted at all (it would otherwise score a meaningless 1).

**Per case** the overall Dice is the mean over its ground-truth teeth; a group value (T1
central incisor .. T8 third molar, :data:`ToothMCLCore.fdi.TOOTH_GROUPS`) is the mean over its
ground-truth teeth of that group. A case without a ground-truth tooth of a group has no value
for it, so each row of the report has its own number of cases ``n``. Means, 95 % confidence
intervals and paired t-tests are taken **across cases** (:mod:`.statistics`), the case being
the independent unit, so two methods are always compared on the same cases and teeth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .. import fdi
from ..errors import InvalidInputError
from .statistics import MeanCI, PairedTest, mean_ci, paired_t_test

FOUND, MISSED, FALSE_POSITIVE = "found", "missed", "false positive"


@dataclass(frozen=True)
class ToothScore:
    """One tooth of one case for one method.

    Attributes:
        fdi: FDI number.
        status: ``"found"`` (in both), ``"missed"`` (ground truth only, Dice 0) or
            ``"false positive"`` (prediction only, Dice NaN: not counted).
        dice: Dice in [0, 1], NaN for a false positive.
        truth_size, pred_size, overlap: voxels (CBCT) or vertices (IOS).
    """

    fdi: int
    status: str
    dice: float
    truth_size: int
    pred_size: int
    overlap: int

    @property
    def group(self) -> int:
        return fdi.tooth(self.fdi).group


@dataclass
class CaseScore:
    """Every tooth of one case for one method, plus modality-specific metrics.

    Attributes:
        case: case name (file name without suffixes).
        method: method name.
        teeth: one :class:`ToothScore` per tooth in the ground truth or the prediction.
        metrics: extra per-case metrics by name (IOS: ``TSA``, ``TLA``, ``TIR``, ``score``,
            ``OA``, ``mIoU``); empty for CBCT.
        prediction, truth: the files compared.
        notes: what the reader should know about this case (one sentence each).
        counts: what set-level (pooled) figures add up (IOS: ``"classes"``, the per-class
            intersections and unions of :func:`~.ios_metrics.semantic_metrics`; ``"pairs"``,
            the Table III counts); empty for CBCT.
    """

    case: str
    method: str
    teeth: tuple[ToothScore, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    prediction: str = ""
    truth: str = ""
    notes: tuple[str, ...] = ()
    counts: dict = field(default_factory=dict)

    @property
    def counted(self) -> dict[int, float]:
        """{fdi: Dice} of the ground-truth teeth."""
        return {t.fdi: t.dice for t in self.teeth if t.status != FALSE_POSITIVE}

    @property
    def false_positives(self) -> list[int]:
        return [t.fdi for t in self.teeth if t.status == FALSE_POSITIVE]

    @property
    def missed(self) -> list[int]:
        return [t.fdi for t in self.teeth if t.status == MISSED]

    @property
    def mean_dice(self) -> float:
        """Mean over the ground-truth teeth, NaN when the case has none."""
        values = list(self.counted.values())
        return float(np.mean(values)) if values else math.nan

    def group_dice(self, group: int) -> float:
        """Mean over the ground-truth teeth of group ``group`` (1..8), NaN when there are none."""
        values = [t.dice for t in self.teeth if t.status != FALSE_POSITIVE and t.group == group]
        return float(np.mean(values)) if values else math.nan


def tooth_scores(joint: np.ndarray, values: np.ndarray) -> tuple[ToothScore, ...]:
    """Tooth scores from a joint histogram of (truth, prediction) values.

    Args:
        joint: (V, V) int64 counts, ``joint[a, b]`` = elements with truth ``values[a]`` and
            prediction ``values[b]``.
        values: (V,) label value of each row/column; non-teeth (0, 99, ...) are ignored.
    """
    in_truth, in_pred = joint.sum(axis=1), joint.sum(axis=0)
    out = []
    for i, value in enumerate(values.tolist()):
        if not fdi.is_valid_fdi(value) or (in_truth[i] == 0 and in_pred[i] == 0):
            continue
        tp = int(joint[i, i])
        if in_truth[i] == 0:
            status, dice = FALSE_POSITIVE, math.nan
        else:
            status = FOUND if in_pred[i] > 0 else MISSED
            dice = 2.0 * tp / float(in_truth[i] + in_pred[i])
        out.append(ToothScore(int(value), status, dice, int(in_truth[i]), int(in_pred[i]), tp))
    return tuple(sorted(out, key=lambda t: t.fdi))


#: elements per slab when counting, to keep memory flat on 800^3 volumes
SLAB_ELEMENTS = 1 << 22
#: label value of every row/column of :func:`joint_histogram`: 0 = not a tooth, then FDI order
HISTOGRAM_VALUES = np.array([0, *sorted(fdi.TEETH)], dtype=np.int64)


def slabs(array: np.ndarray):
    """Consecutive pieces of ``array`` along axis 0, about :data:`SLAB_ELEMENTS` elements each."""
    step = max(1, SLAB_ELEMENTS // max(1, int(np.prod(array.shape[1:]))))
    for start in range(0, array.shape[0], step):
        yield array[start:start + step]


def joint_histogram(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(V, V) int64 counts of (truth, prediction) value pairs, values :data:`HISTOGRAM_VALUES`.

    Everything that is not an FDI tooth falls into value 0. Works on arrays of any shape
    (CBCT voxels, IOS vertices) in slabs, so memory stays flat.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction and truth differ in shape ({pred.shape} vs {truth.shape})")
    v = len(HISTOGRAM_VALUES)
    top = max(int(pred.max(initial=0)), int(truth.max(initial=0)), int(HISTOGRAM_VALUES[-1]))
    lut = np.zeros(top + 1, dtype=np.int32)
    lut[HISTOGRAM_VALUES[1:]] = np.arange(1, v, dtype=np.int32)
    joint = np.zeros(v * v, dtype=np.int64)
    if pred.ndim == 0 or pred.size == 0:
        return joint.reshape(v, v)
    pred, truth = pred.reshape(pred.shape[0], -1), truth.reshape(truth.shape[0], -1)
    for p, t in zip(slabs(pred), slabs(truth)):
        joint += np.bincount((lut[t] * v + lut[p]).ravel(), minlength=v * v)
    return joint.reshape(v, v)


def score_teeth(pred, truth) -> tuple[ToothScore, ...]:
    """:class:`ToothScore` of every tooth in ``truth`` or ``pred`` (label arrays of one shape)."""
    return tooth_scores(joint_histogram(pred, truth), HISTOGRAM_VALUES)


@dataclass
class Evaluation:
    """All cases of one evaluation run: one ground truth, one or more methods.

    Attributes:
        modality: ``"cbct"`` or ``"ios"``.
        methods: method names in column order; the first is the reference of the paired tests.
        method_dirs: {method: prediction folder}.
        truth_dir: ground-truth folder.
        scores: one :class:`CaseScore` per case and method.
        unit: what sizes count (``"voxels"`` or ``"vertices"``).
        notes: run-level remarks for the report (ignored label values, ...).
    """

    modality: str
    methods: tuple[str, ...]
    method_dirs: dict[str, str]
    truth_dir: str
    scores: list[CaseScore]
    unit: str
    notes: list[str] = field(default_factory=list)

    @cached_property
    def cases(self) -> list[str]:
        return sorted({s.case for s in self.scores})

    @property
    def reference(self) -> str:
        return self.methods[0]

    @cached_property
    def _by_case_method(self) -> dict[tuple[str, str], CaseScore]:
        return {(s.case, s.method): s for s in self.scores}

    def score(self, case: str, method: str) -> CaseScore:
        return self._by_case_method[(case, method)]

    def metric_names(self) -> list[str]:
        """Names of the extra per-case metrics, in first-seen order."""
        names: dict[str, None] = {}
        for s in self.scores:
            names.update(dict.fromkeys(s.metrics))
        return list(names)

    def per_case(self, method: str, row) -> np.ndarray:
        """(n_cases,) float64 value of every case (in :attr:`cases` order, NaN if none).

        ``row`` is ``"overall"``, ``("group", 1..8)``, ``("tooth", fdi)`` or a metric name.
        """
        out = np.full(len(self.cases), math.nan)
        for i, case in enumerate(self.cases):
            s = self.score(case, method)
            if row == "overall":
                out[i] = s.mean_dice
            elif isinstance(row, tuple) and row[0] == "group":
                out[i] = s.group_dice(row[1])
            elif isinstance(row, tuple) and row[0] == "tooth":
                out[i] = s.counted.get(row[1], math.nan)
            else:
                out[i] = s.metrics.get(row, math.nan)
        return out

    def teeth(self) -> list[int]:
        """FDI numbers in any ground truth or prediction, in FDI order."""
        return sorted({t.fdi for s in self.scores for t in s.teeth})

    def false_positive_count(self, method: str, row) -> int:
        """False-positive teeth of a method over all cases, for ``"overall"``, a group or a tooth."""
        n = 0
        for s in self.scores:
            if s.method != method:
                continue
            for t in s.false_positives:
                if (row == "overall" or (row[0] == "group" and fdi.tooth(t).group == row[1])
                        or (row[0] == "tooth" and t == row[1])):
                    n += 1
        return n


def check_has_teeth(evaluation: Evaluation) -> None:
    """Refuse a run without any ground-truth tooth; note the cases that have none."""
    if not any(s.counted for s in evaluation.scores):
        raise InvalidInputError(f"no ground-truth file in {evaluation.truth_dir} holds an FDI tooth label "
                                "(11-48, 51-85); are the labels FDI numbers? Convert class indices with "
                                "ToothMCLCore.fdi.class_index_to_fdi")
    empty = [c for c in evaluation.cases if not evaluation.score(c, evaluation.reference).counted]
    if empty:
        listed = ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else "")
        evaluation.notes.append(f"{len(empty)} case(s) have no ground-truth tooth and add only false "
                                f"positives: {listed}")


@dataclass(frozen=True)
class SummaryRow:
    """One row of a summary table: a statistic per method and a test per other method.

    Attributes:
        key: ``"overall"``, ``("group", g)``, ``("tooth", fdi)`` or a metric name.
        label: what the row is, for people: ``"T1 central incisor"``.
        stats: {method: :class:`MeanCI`}.
        tests: {other method: :class:`PairedTest` of other - reference}.
        false_positives: {method: false-positive teeth} (Dice rows only).
    """

    key: object
    label: str
    stats: dict[str, MeanCI]
    tests: dict[str, PairedTest]
    false_positives: dict[str, int]


def summarise(evaluation: Evaluation, key, label: str) -> SummaryRow:
    """Mean [CI] per method and the paired t-test of every other method against the first."""
    values = {m: evaluation.per_case(m, key) for m in evaluation.methods}
    ref = evaluation.reference
    tests = {m: paired_t_test(values[ref], values[m]) for m in evaluation.methods[1:]}
    fps = ({m: evaluation.false_positive_count(m, key) for m in evaluation.methods}
           if key == "overall" or isinstance(key, tuple) else {})
    return SummaryRow(key, label, {m: mean_ci(v) for m, v in values.items()}, tests, fps)


def group_label(group: int) -> str:
    return f"T{group} {fdi.TOOTH_GROUPS[group - 1]}"


def dice_rows(evaluation: Evaluation) -> list[SummaryRow]:
    """Overall Dice, then T1..T8 (groups without any ground-truth tooth included, n = 0)."""
    rows = [summarise(evaluation, "overall", "overall")]
    rows += [summarise(evaluation, ("group", g), group_label(g)) for g in range(1, len(fdi.TOOTH_GROUPS) + 1)]
    return rows


def tooth_rows(evaluation: Evaluation) -> list[SummaryRow]:
    """One row per FDI tooth present in any ground truth or prediction."""
    return [summarise(evaluation, ("tooth", t), f"{t} {fdi.tooth(t).name}") for t in evaluation.teeth()]


def metric_rows(evaluation: Evaluation, labels: dict[str, str]) -> list[SummaryRow]:
    """One row per extra metric (IOS), labelled by ``labels`` (default: the metric name)."""
    return [summarise(evaluation, name, labels.get(name, name)) for name in evaluation.metric_names()]
