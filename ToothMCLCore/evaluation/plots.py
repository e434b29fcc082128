"""PNG figures of an evaluation, after the ToothMCL paper's Fig. 2 and Fig. 4.

- :func:`plot_dice_boxplot`: one box of per-case Dice per method, every case as a dot, and
  the paired t-test of each method against the first as a bracket with asterisks (Fig. 2a/4a).
- :func:`plot_group_bars`: mean Dice per tooth group T1..T8 (and all teeth) per method, error
  bars = 95 % confidence interval across cases (Fig. 2b/4b).
- :func:`plot_tooth_bars`: the same per FDI tooth, laid out as a dental chart (patient's right
  on the left of the picture, as seen from the front).

matplotlib is imported inside the functions and used through ``matplotlib.figure.Figure``
with its Agg canvas, so no window opens and pyplot's global state is left alone.
"""

from __future__ import annotations

import numpy as np

from .. import fdi
from ..errors import ToothMCLError
from .results import Evaluation, SummaryRow, dice_rows, summarise
from .statistics import format_p, significance_stars

DPI = 150
_MODALITY = {"cbct": "CBCT", "ios": "IOS"}


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ToothMCLError("the report plots need matplotlib; install it with "
                            "'pip install matplotlib'") from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_dice_boxplot(evaluation: Evaluation, path) -> None:
    """Box plot of per-case Dice (%) per method with paired-test brackets; saved as PNG."""
    methods = evaluation.methods
    data = [evaluation.per_case(m, "overall") * 100.0 for m in methods]
    data = [d[np.isfinite(d)] for d in data]
    fig = _figure(max(4.0, 1.5 * len(methods) + 2.5), 4.8)
    ax = fig.add_subplot()
    colors = _colors(len(methods))
    positions = np.arange(1, len(methods) + 1)
    boxes = ax.boxplot(data, positions=positions, widths=0.5, showfliers=False, patch_artist=True,
                       medianprops={"color": "black", "linewidth": 1.5})
    for patch, color in zip(boxes["boxes"], colors):
        patch.set_facecolor((*color[:3], 0.35))
        patch.set_edgecolor(color)
    rng = np.random.default_rng(0)
    for x, d, color in zip(positions, data, colors):
        ax.scatter(x + rng.uniform(-0.12, 0.12, len(d)), d, s=14, color=color, edgecolor="black",
                   linewidth=0.4, zorder=3)
        if len(d):
            ax.scatter([x], [d.mean()], marker="D", s=28, color="white", edgecolor="black", zorder=4)
    values = np.concatenate([d for d in data if len(d)]) if any(len(d) for d in data) else np.array([0.0])
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 2.0)
    row = summarise(evaluation, "overall", "overall")
    for k, m in enumerate(methods[1:], start=1):
        test = row.tests[m]
        y = hi + span * (0.06 + 0.11 * (k - 1))
        ax.plot([1, 1, k + 1, k + 1], [y - span * 0.02, y, y, y - span * 0.02], color="black", linewidth=0.8)
        p = format_p(test.p)
        if p == "-":
            text = "no test"
        else:
            text = f"{significance_stars(test.p)}  p {'< 0.0001' if p.startswith('<') else '= ' + p}"
        ax.text((k + 2) / 2, y + span * 0.01, text, ha="center", va="bottom", fontsize=8)
    top = hi + span * (0.06 + 0.11 * max(0, len(methods) - 1)) + span * 0.04
    ax.set_ylim(lo - span * 0.08, top)
    ax.set_xticks(positions, [f"{m}\n(n={len(d)})" for m, d in zip(methods, data)])
    ax.set_ylabel("Dice (%) per case")
    ax.set_title(f"{_MODALITY.get(evaluation.modality, evaluation.modality)}: Dice per case\n"
                 "(mean over its ground-truth teeth)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    legend = "dots: cases, \u25c7 mean, box: quartiles and median, whiskers: 1.5 IQR"
    if len(methods) > 1:
        legend += (f"\ntwo-sided paired t-test against {methods[0]}:\n* p<0.05, ** p<0.01, *** p<0.001, "
                   "**** p<0.0001, ns not significant")
    ax.set_xlabel(legend, fontsize=7, color="0.3")
    fig.savefig(path)


def _dice_ylim(rows: list[SummaryRow], methods) -> tuple[float, float]:
    """Y range in %: just above 100 (Dice cannot pass it; longer CI whiskers are cut and marked),
    from 0, or from a round number below every mean and interval when all of them are >= 50."""
    lows = [r.stats[m].low if np.isfinite(r.stats[m].low) else r.stats[m].mean for r in rows for m in methods]
    lows = [v * 100.0 for v in lows if np.isfinite(v)]
    bottom = 0.0 if not lows or min(lows) < 50 else 10.0 * np.floor(min(lows) / 10.0 - 0.5)
    return bottom, 100.0 + 0.04 * (100.0 - bottom)


def _bars(ax, rows: list[SummaryRow], methods, colors, labels, ylabel: str) -> None:
    """Grouped bars of mean Dice (%) with 95 % CI error bars, one bar per method per row."""
    bottom, top = _dice_ylim(rows, methods)
    x = np.arange(len(rows))
    width = 0.8 / len(methods)
    cut_x: list[float] = []
    for k, (m, color) in enumerate(zip(methods, colors)):
        xs = x + (k - (len(methods) - 1) / 2) * width
        means = np.array([r.stats[m].mean for r in rows]) * 100.0
        low = np.array([r.stats[m].low for r in rows]) * 100.0
        high = np.array([r.stats[m].high for r in rows]) * 100.0
        err = np.vstack([means - low, high - means])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(xs, np.nan_to_num(means, nan=bottom) - bottom, width * 0.92, bottom=bottom, color=color,
               label=m, yerr=err, capsize=2 if len(rows) > 12 else 3,
               error_kw={"elinewidth": 0.9, "ecolor": "black"})
        cut = np.isfinite(high) & (high > top)
        cut_x.extend(xs[cut].tolist())
    if cut_x:
        ax.scatter(cut_x, np.full(len(cut_x), top - 0.4 * (top - 100.0)), marker="^", s=14, color="black",
                   zorder=4, clip_on=False, label="CI runs above the axis")
    for xi, r in zip(x, rows):
        if all(r.stats[m].n == 0 for m in methods):
            ax.text(xi, bottom + 0.02 * (top - bottom), "no data", ha="center", va="bottom", fontsize=7,
                    color="0.45", rotation=90)
    ax.set_ylim(bottom, top)
    ax.set_xticks(x, labels)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_ylabel(ylabel + (f"\n(axis starts at {bottom:.0f})" if bottom > 0 else ""))


def _legend(ax) -> None:
    """Legend right of the axes: methods first, then the marker of cut intervals."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "CI runs above the axis")
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def plot_group_bars(evaluation: Evaluation, path) -> None:
    """Mean Dice (%) per tooth group with 95 % CI error bars per method; saved as PNG."""
    rows = dice_rows(evaluation)
    methods = evaluation.methods
    labels = ["all\nteeth" if r.key == "overall" else r.label.replace(" ", "\n", 1).replace(" ", "\n")
              for r in rows]
    labels = [f"{lab}\nn={r.stats[methods[0]].n}" for lab, r in zip(labels, rows)]
    fig = _figure(max(8.0, 0.45 * len(rows) * len(methods) + 5.0), 4.8)
    ax = fig.add_subplot()
    _bars(ax, rows, methods, _colors(len(methods)), labels, "Dice (%), mean with 95% CI")
    ax.axvline(0.5, color="0.5", linewidth=0.8)
    ax.set_title(f"{_MODALITY.get(evaluation.modality, evaluation.modality)}: Dice per tooth group "
                 "(n = cases with that group in the ground truth)", fontsize=10)
    _legend(ax)
    fig.savefig(path)


def plot_tooth_bars(evaluation: Evaluation, path) -> None:
    """Mean Dice (%) per FDI tooth with 95 % CI, upper and lower jaw as a dental chart; PNG."""
    present = set(evaluation.teeth())
    methods = evaluation.methods
    jaws = []
    for jaw in fdi.JAWS:
        chart = [t for t in (*fdi.teeth_of_jaw(jaw), *fdi.teeth_of_jaw(jaw, primary=True))
                 if not fdi.tooth(t).primary or t in present]
        if present & set(chart):
            jaws.append((jaw, chart))
    fig = _figure(max(9.0, 0.32 * 16 * len(methods) + 4.0), 3.4 * len(jaws) + 0.6)
    axes = fig.subplots(len(jaws), 1, squeeze=False)[:, 0]
    colors = _colors(len(methods))
    for ax, (jaw, chart) in zip(axes, jaws):
        rows = [summarise(evaluation, ("tooth", t), str(t)) for t in chart]
        labels = [f"{t}\nn={r.stats[methods[0]].n}" for t, r in zip(chart, rows)]
        _bars(ax, rows, methods, colors, labels, "Dice (%)")
        n_right = sum(1 for t in chart if fdi.tooth(t).side == "right" and not fdi.tooth(t).primary)
        ax.axvline(n_right - 0.5, color="0.4", linestyle="--", linewidth=0.8)
        ax.set_title(f"{jaw} jaw (patient's right on the left)", fontsize=9, loc="left")
    _legend(axes[0])
    fig.suptitle(f"{_MODALITY.get(evaluation.modality, evaluation.modality)}: Dice per FDI tooth, mean with "
                 "95% CI (n = cases with that tooth in the ground truth)", fontsize=10)
    fig.savefig(path)
