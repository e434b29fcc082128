"""Statistics of evaluation results across cases, as the ToothMCL paper reports them.

The paper (section "Statistical Analysis") reports means with a 95 % confidence interval and
assesses significance with two-sided paired t-tests at the 0.01 level. Here:

- :func:`mean_ci`: mean over cases with the Student-t interval
  ``mean +- t(1 - alpha/2, n - 1) * sd / sqrt(n)`` (``sd`` with ``n - 1`` in the denominator).
  The interval is not clipped, so for a few cases it can pass 1 (100 % Dice). With one case
  it is undefined (NaN, and the ``note`` says why); with identical values it has zero width.
- :func:`paired_t_test`: ``scipy.stats.ttest_rel`` on the pairs where both values are defined,
  plus the mean difference and its t interval. Fewer than two pairs, or pairs whose
  differences are all equal, leave ``t`` and ``p`` undefined, except that identical results
  (every difference 0) give ``t = 0, p = 1``: nothing separates the methods.

NaN values (a case without a ground-truth tooth of that group) are dropped before anything
is computed; ``n`` counts the values used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: confidence level of every interval in the reports (the paper's 95 % CI)
CONFIDENCE = 0.95
#: significance level of the paired t-tests (the paper: "at the 0.01 level")
ALPHA = 0.01
#: asterisks as in the paper's figures: (upper bound of p, mark), checked in order
STARS = ((1e-4, "****"), (1e-3, "***"), (1e-2, "**"), (5e-2, "*"))


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values with its confidence interval ``[low, high]``.

    ``low``/``high`` are NaN when undefined (``n < 2``), ``mean`` is NaN when ``n == 0``;
    ``note`` then says why, else it is "".
    """

    mean: float
    low: float
    high: float
    n: int
    sd: float
    confidence: float = CONFIDENCE
    note: str = ""

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"93.38 [92.02, 94.73]"``, ``"93.38 [n=1, no CI]"`` or ``"-"`` (no value)."""
        if self.n == 0:
            return "-"
        mean = f"{self.mean * scale:.{digits}f}"
        if self.n < 2:
            return f"{mean} [n=1, no CI]"
        return f"{mean} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


@dataclass(frozen=True)
class PairedTest:
    """Two-sided paired t-test of ``b - a`` over ``n`` pairs.

    Attributes:
        n: pairs used (both values defined).
        mean_difference: mean of ``b - a``; ``low``/``high``: its confidence interval.
        t, p: t statistic (positive when ``b`` is larger) and two-sided p-value; NaN when
            undefined, with ``note`` saying why.
    """

    n: int
    mean_difference: float
    low: float
    high: float
    t: float
    p: float
    note: str = ""

    @property
    def significant(self) -> bool:
        """p below the paper's 0.01 level."""
        return bool(self.p < ALPHA)


def _clean(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def _t_critical(confidence: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def mean_ci(values, confidence: float = CONFIDENCE) -> MeanCI:
    """Mean and Student-t confidence interval of the finite entries of ``values``.

    Example: ``[0.8, 0.9, 1.0]`` has mean 0.9, sd 0.1 and ``t(0.975, 2) = 4.3027``, so the
    95 % interval is ``0.9 +- 4.3027 * 0.1 / sqrt(3) = [0.6516, 1.1484]``.
    """
    arr = _clean(values)
    n = len(arr)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, math.nan, confidence, "no case has a value")
    mean = float(arr.mean())
    if n == 1:
        return MeanCI(mean, math.nan, math.nan, 1, math.nan, confidence,
                      "one case only: the confidence interval is undefined")
    sd = float(arr.std(ddof=1))
    half = _t_critical(confidence, n - 1) * sd / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, sd, confidence)


def paired_t_test(a, b, confidence: float = CONFIDENCE) -> PairedTest:
    """Two-sided paired t-test of ``b`` against ``a`` (``scipy.stats.ttest_rel``).

    Args:
        a, b: equal-length sequences of per-case values of two methods, in the same case
            order; pairs where either value is NaN are dropped.

    Returns:
        :class:`PairedTest`; its ``t`` is positive when ``b`` scores higher.
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length ({a.size} vs {b.size})")
    keep = np.isfinite(a) & np.isfinite(b)
    d = b[keep] - a[keep]
    n = len(d)
    if n < 2:
        mean = float(d.mean()) if n else math.nan
        return PairedTest(n, mean, math.nan, math.nan, math.nan, math.nan,
                          f"{n} paired case{'s' if n != 1 else ''}: a t-test needs at least 2")
    diff_ci = mean_ci(d, confidence)
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        if abs(d[0]) <= 1e-12:
            return PairedTest(n, 0.0, 0.0, 0.0, 0.0, 1.0, "identical results in every paired case")
        return PairedTest(n, float(d[0]), float(d[0]), float(d[0]), math.nan, math.nan,
                          f"the difference is {d[0]:+.4g} in every case: no spread, the t-test is undefined")
    result = stats.ttest_rel(b[keep], a[keep])
    return PairedTest(n, diff_ci.mean, diff_ci.low, diff_ci.high, float(result.statistic),
                      float(result.pvalue))


def significance_stars(p: float) -> str:
    """``"****"`` (p < 0.0001) .. ``"*"`` (p < 0.05), ``"ns"`` otherwise, ``""`` for NaN."""
    if not np.isfinite(p):
        return ""
    for bound, mark in STARS:
        if p < bound:
            return mark
    return "ns"


def format_p(p: float) -> str:
    """``"<0.0001"``, ``"0.0032"``, ``"0.050"``, ``"0.410"`` or ``"-"`` when undefined."""
    if not np.isfinite(p):
        return "-"
    if p < 1e-4:
        return "<0.0001"
    return f"{p:.4f}" if p < 0.01 else f"{p:.3f}"
