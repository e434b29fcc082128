"""Number an intraoral scan's teeth along its arch, with the teeth's known widths (ours, not the papers').

A point network numbers each vertex from what it sees around it, and on real scans it often
numbers a whole run of teeth one position off: on the MeshSegNet validation jaws ``ios_pt_real_v1``
gave truth 12-15 the numbers 13-16, or one label to two lower incisors, and the order-aware
assignment (:func:`~ToothMCLCore.postprocessing.assignment.assign_fdi`) keeps such a run in order
without moving it back. Yet a jaw's teeth follow one another along the arch, each about as wide as
its type (a lower central incisor about 5 mm, a lower first molar about 11 mm), and the scan
shows where one crown ends and the next begins. So after the tooth/gingiva cut we number the
teeth as one sequence along the arch:

1. **Arch coordinate** (:func:`arch_coordinate`). The tooth vertices are binned by their angle
   about a point 5 mm behind the most posterior tooth vertex, on the teeth's median x; the median
   position of each bin, smoothed and extended 6 mm past both ends, is the arch's centre line.
   Each vertex takes the arc length of its nearest centre-line point, increasing from the
   patient's right (x > 0 in the canonical frame) to the left, the order of
   :func:`~ToothMCLCore.fdi.teeth_of_jaw`, and its normal's component along the line there.
2. **A segmentation of that line into teeth** (:func:`fit_arch`). The line is cut into 0.5 mm
   bins; an exact dynamic programme chooses consecutive intervals, each one tooth in arch order
   (18 ... 11, 21 ... 28) or a gap, to maximise the sum of

   - ``NETWORK_WEIGHT`` x, over the tooth's bins, the mean log-probability that the network gives
     that tooth (among the jaw's teeth) at the bin's vertices, and ``-EMPTY_BIN_COST`` for a bin
     without vertices (a tooth is not empty space); on a whole arch (:func:`arch_turn`: its centre
     line turns by ``WHOLE_ARCH_TURN_DEG`` or more) the weight is ``WHOLE_ARCH_NETWORK_WEIGHT``;
   - the log-normal log-density of each tooth's width around its mean mesiodistal crown width
     (:data:`CROWN_WIDTH_MM`, Wheeler's table) times the jaw's scale, log-SD ``WIDTH_LOG_SD``;
   - ``BOUNDARY_WEIGHT`` x (evidence - ``BOUNDARY_OFFSET``) at each end of each tooth, the
     evidence (:func:`boundary_evidence`) being how sharply the normals turn from facing forward
     along the arch to facing back, as they do between two convex crowns;
   - ``-SKIP_COST`` for each tooth of positions 1-7 left out between two teeth found, less
     ``OPEN_SPACE_CREDIT`` per mm without any vertex in the gap between them (an open space pays
     for the tooth that is not there),
     ``-END_SKIP_COST`` for each left out beyond the first or last tooth found (a scan of part of
     the arch, unerupted second molars), ``-SKIP_COST_THIRD_MOLAR`` for an 8, and ``-GAP_COST``
     for each bin with tooth vertices that a gap covers (a bin without any is free, so an open
     extraction space costs nothing);

   the jaw's scale is searched over :data:`SCALES` with a log-normal prior (log-SD
   ``SCALE_LOG_SD``).
3. **Priors back onto the vertices** (:func:`number_along_arch`). Each tooth number keeps the
   network's probability inside its interval and loses it by ``exp(-d / FALLOFF_MM)`` at ``d``
   mm outside it (floor ``PROBABILITY_FLOOR``); the usual numbering and the random walk of
   :mod:`~ToothMCLCore.postprocessing.surface` then decide each vertex, so the boundaries still
   follow the scan's creases.

**How the constants were chosen**, with ``ios_pt_real_v1``'s probabilities (3 samplings with their
mirror images) and the rest of the pipeline as shipped, never on the test split: on the 48
training and 7 validation jaws of the MeshSegNet split (the training jaws count here because that
network numbers them no better than 0.81 / 0.87 mean per-tooth Dice on its own), on the same 55
jaws with both second molars removed (vertices and faces, the network run again: unerupted 7s),
with both first premolars removed (an open extraction space), and cut in half at the midline (a
scan of one side, the network's probabilities of the whole jaw). Mean per-tooth Dice, upper /
lower (the half arches: both jaws, validation / training):

=======================  ===============  ===============  ===============  ===============  =============
 post-processing          validation       training         7s removed       4s removed       half arches
=======================  ===============  ===============  ===============  ===============  =============
 without this module      0.666 / 0.831    0.815 / 0.866    0.764 / 0.840    0.766 / 0.823    0.734 / 0.824
 no boundary evidence     0.862 / 0.924    0.932 / 0.925    0.883 / 0.917    0.740 / 0.850    0.773 / 0.822
 one network weight 0.1   0.933 / 0.937    0.943 / 0.930    0.943 / 0.924    0.926 / 0.920    0.824 / 0.832
 as shipped               0.933 / 0.937    0.943 / 0.932    0.943 / 0.924    0.936 / 0.919    0.824 / 0.832
=======================  ===============  ===============  ===============  ===============  =============

- The widths are the textbook ones, not widths measured on our training labels: measured widths
  (the 3rd-97th percentile extent of each training tooth along the arch) did worse on the
  training and validation jaws (in an earlier version without boundary evidence: 0.919 / 0.925
  and 0.903 / 0.914 against 0.931 / 0.925 and 0.916 / 0.924), and a textbook table assumes
  nothing about one dataset.
- The network's weight is small (0.1; 0.2, 0.3 and 1 did worse on both sets): its errors come in
  runs, so its evidence per bin is far from independent. On a whole arch the order and the widths
  pin each tooth, and 0.05-0.08 did as well or better than 0.1 on every set of whole jaws (0.06:
  the jaws without their 4s 0.926 -> 0.936 upper); on part of an arch only the network can say
  which part it is, and there 0.1 stays (0.05-0.07 gave half arches 0.68-0.75). The two are
  told apart by how far the arch's centre line turns (:func:`arch_turn`): 125-180 degrees on the
  55 whole jaws with or without their 7s, under 115 on 95 % of their halves; a threshold anywhere in
  110-130 gave the same figures. Scans of the front of the arch (the same jaws cut 12-32 mm behind
  the incisors, turning 76-147 degrees) were numbered as well as with 0.1 throughout, or better
  (cut at 32 mm: validation 0.870 -> 0.937, training 0.936 -> 0.942).
- The boundary evidence averaged 0.71 at the training jaws' true boundaries between teeth and
  -0.13 elsewhere; ``BOUNDARY_OFFSET`` 0.3 lies between, so a boundary where the crowns show none
  costs (without it, every extra boundary paid, and half arches took teeth of the other side).
  Weights 4 and 8 were alike (within 0.002), 1 and 2 worse.
- ``SKIP_COST`` 8: with 20, a jaw with its premolars removed was numbered as if they were there
  (0.748 / 0.809, worse than without this module); 4-8 were alike, 12 lost 0.05 upper there.
  ``END_SKIP_COST`` 1 changed no full jaw and numbered half arches best (0 and 3 did worse).
  ``OPEN_SPACE_CREDIT`` 1 per mm (a 5 mm open space nearly pays a skip) raised the jaws with their
  premolars removed from 0.905 to 0.926 upper and changed no other set; it also stopped the demo's
  phantom, whose 25 is missing, from being numbered one position off across the whole arch.
- Third molars. ``ios_pt_real_v1`` saw two of them in training, so on a jaw whose 8s are erupted
  (the demo's phantom) it calls the last molar a 7 with confidence, and at ``NETWORK_WEIGHT`` 0.1
  the programme followed it on that side (the demo's upper 15-18 numbered 14-17). With the whole
  arch's weight the phantom is numbered right. A partly erupted 8 narrower than 0.4 of its width
  (two training jaws' 38 and 48, 3 mm along the arch) is still not an interval of its own, and
  the 7's number spreads onto it.
- Limits. The dataset has no jaw whose extraction space was closed: how such a jaw is numbered is
  not known (a limitation on the model card). Crowded teeth that overlap along the arch share one
  stretch of the line, and the programme gives it one tooth: on the test split a crowded lower 32
  was lost that way to its 33, and two more jaws each lost one tooth to a neighbour. The
  test-split figures are in :mod:`ToothMCLCore.inference.ios`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fdi

#: mean mesiodistal crown widths (mm) of the permanent teeth, positions 1-8 from the midline
#: (Wheeler's Dental Anatomy, Physiology and Occlusion, Nelson & Ash, table of crown measurements)
CROWN_WIDTH_MM = {
    "upper": (8.5, 6.5, 7.5, 7.0, 6.5, 10.0, 9.0, 8.5),
    "lower": (5.0, 5.5, 7.0, 7.0, 7.0, 11.0, 10.5, 10.0),
}
BIN_MM = 0.5
NETWORK_WEIGHT = 0.1
#: on a whole arch (its centre line turns at least WHOLE_ARCH_TURN_DEG: :func:`arch_turn`)
WHOLE_ARCH_NETWORK_WEIGHT = 0.06
WHOLE_ARCH_TURN_DEG = 120.0
WIDTH_LOG_SD = 0.1
#: a tooth's interval may be 0.4 to 2 times its scaled mean width
WIDTH_RANGE = (0.4, 2.0)
SKIP_COST = 8.0
SKIP_COST_THIRD_MOLAR = 0.5
#: per mm of open space (bins without vertices) in a gap, taken off the cost of the teeth it skips
OPEN_SPACE_CREDIT = 1.0
#: per tooth 1-7 left out beyond either end of the teeth found (a scan of part of the arch)
END_SKIP_COST = 1.0
GAP_COST = 0.6
#: per 0.5 mm bin without any tooth vertex inside a tooth's interval (a tooth is not empty space)
EMPTY_BIN_COST = 3.0
#: weight of the crowns' boundary evidence at each end of each tooth (:func:`boundary_evidence`)
BOUNDARY_WEIGHT = 4.0
BOUNDARY_WINDOW_BINS = 3
#: evidence below this counts against a boundary there (between the means at and away from boundaries)
BOUNDARY_OFFSET = 0.3
SCALES = tuple(np.round(np.arange(0.80, 1.301, 0.05), 2))
SCALE_LOG_SD = 0.1
PROBABILITY_FLOOR = 1e-3
FALLOFF_MM = 0.1
#: fewer tooth vertices than this: nothing to number along an arch
MIN_ARCH_VERTICES = 60
#: angular bins of the centre line, and the length it is extended past each end
CURVE_BINS = 48
CURVE_EXTENSION_MM = 6.0
CURVE_STEP_MM = 0.25


@dataclass(frozen=True)
class ArchFit:
    """The teeth found along one arch.

    Attributes:
        intervals: FDI number -> (start, end) arc length in mm of its interval, in arch order.
        scale: the jaw's width scale against :data:`CROWN_WIDTH_MM`.
        score: the programme's objective (higher is better).
    """

    intervals: dict
    scale: float
    score: float


def arch_coordinate(points: np.ndarray, tooth: np.ndarray, normals: np.ndarray | None = None):
    """Arc length in mm of each point along the arch of the ``tooth`` points (step 1 of the module docstring).

    Args:
        points: (N, 3) float canonical coordinates (x = patient's right, y = anterior).
        tooth: (N,) bool, the tooth vertices that define the arch (at least 3).
        normals: (N, 3) float unit normals in the same frame, or None.

    Returns:
        (N,) float arc length, increasing from the patient's right to the left; with ``normals``,
        ``(arc, along)``: ``along`` (N,) float is each normal's component along the arch there.
    """
    from scipy.spatial import cKDTree

    smooth = _centre_line(points, tooth)
    ends = []
    for end, inner in ((smooth[0], smooth[min(2, len(smooth) - 1)]), (smooth[-1], smooth[max(-3, -len(smooth))])):
        direction = end - inner
        ends.append(end + CURVE_EXTENSION_MM * direction / max(np.linalg.norm(direction), 1e-9))
    smooth = np.vstack([ends[0], smooth, ends[1]])
    knots = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(smooth, axis=0), axis=1))])
    fine = np.arange(0.0, knots[-1] + CURVE_STEP_MM, CURVE_STEP_MM)
    curve = np.stack([np.interp(fine, knots, smooth[:, 0]), np.interp(fine, knots, smooth[:, 1])], axis=1)
    _, nearest = cKDTree(curve).query(np.asarray(points, dtype=np.float64)[:, :2])
    if normals is None:
        return fine[nearest]
    tangent = np.gradient(curve, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    along = np.einsum("ij,ij->i", np.asarray(normals, dtype=np.float64)[:, :2], tangent[nearest])
    return fine[nearest], along


def _centre_line(points: np.ndarray, tooth: np.ndarray) -> np.ndarray:
    """(L, 2) float: the arch's centre line through the ``tooth`` points, from the patient's right
    to the left (step 1 of the module docstring), not yet extended."""
    xy = np.asarray(points, dtype=np.float64)[np.asarray(tooth, bool), :2]
    centre_x, behind = np.median(xy[:, 0]), xy[:, 1].min() - 5.0
    angle = np.arctan2(xy[:, 0] - centre_x, xy[:, 1] - behind)
    chunks = np.array_split(np.argsort(-angle), min(CURVE_BINS, max(3, len(xy) // 10)))
    line = np.array([np.median(xy[c], axis=0) for c in chunks if len(c)])
    smooth = line.copy()
    smooth[1:-1] = 0.25 * line[:-2] + 0.5 * line[1:-1] + 0.25 * line[2:]
    return smooth


def arch_turn(points: np.ndarray, tooth: np.ndarray) -> float:
    """Degrees the arch's centre line turns from one end to the other: the angle between its
    directions over its first and last sixth. A whole arch is U-shaped (125-180 degrees on the 55
    training and validation jaws, their 7s removed or not); one side of it turns about half as
    much (under 115 degrees for 95 % of those jaws cut at the midline)."""
    line = _centre_line(points, tooth)
    k = max(2, len(line) // 6)
    if len(line) <= k:
        return 0.0
    first, last = line[k] - line[0], line[-1] - line[-1 - k]
    cosine = first @ last / max(np.linalg.norm(first) * np.linalg.norm(last), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def boundary_evidence(bins: np.ndarray, along: np.ndarray, n_bins: int) -> np.ndarray:
    """(n_bins + 1,) float: how much each bin boundary looks like the gap between two crowns.

    A crown is convex, so along the arch its surface first faces back (normals against the arch's
    direction) and then forward; between two crowns the mean along-arch normal component drops
    from positive to negative. The evidence at boundary ``a`` is the mean component over the
    :data:`BOUNDARY_WINDOW_BINS` bins before ``a`` minus that over the bins from ``a`` on (a bin
    without vertices counts 0). On the 48 training jaws (their true tooth vertices) it averaged
    0.71 at the true boundaries between teeth and -0.13 elsewhere; above 0.3 it found 89 % of the
    boundaries, and 5 % of the other positions."""
    count = np.bincount(bins, minlength=n_bins)
    mean = np.bincount(bins, along, minlength=n_bins) / np.maximum(count, 1)
    padded = np.concatenate([np.zeros(BOUNDARY_WINDOW_BINS), mean, np.zeros(BOUNDARY_WINDOW_BINS)])
    cum = np.concatenate([[0.0], np.cumsum(padded)])
    a = np.arange(n_bins + 1) + BOUNDARY_WINDOW_BINS
    before = cum[a] - cum[a - BOUNDARY_WINDOW_BINS]
    after = cum[a + BOUNDARY_WINDOW_BINS] - cum[a]
    return (before - after) / BOUNDARY_WINDOW_BINS


def fit_arch(arc_mm: np.ndarray, log_probs: np.ndarray, jaw: str, along: np.ndarray | None = None,
             network_weight: float = NETWORK_WEIGHT) -> ArchFit:
    """The best sequence of teeth and gaps along one arch (step 2 of the module docstring).

    Args:
        arc_mm: (M,) float arc length of each tooth vertex (:func:`arch_coordinate`).
        log_probs: (M, 16) float log-probability of each of the jaw's teeth at each vertex, columns
            in the order of :func:`~ToothMCLCore.fdi.teeth_of_jaw` (right to left along the arch).
        jaw: ``"upper"`` or ``"lower"``.
        along: (M,) float normal component along the arch (:func:`arch_coordinate`), or None: no
            boundary evidence.
        network_weight: the weight of the network's log-probabilities (:data:`NETWORK_WEIGHT`, or
            :data:`WHOLE_ARCH_NETWORK_WEIGHT` on a whole arch).
    """
    teeth = fdi.teeth_of_jaw(jaw)
    width = np.array([CROWN_WIDTH_MM[jaw][abs(fdi.tooth(int(t)).arch_index) - 1] for t in teeth])
    third = np.array([t % 10 == 8 for t in teeth])
    start = float(np.min(arc_mm))
    n_bins = int(np.floor((np.max(arc_mm) - start) / BIN_MM)) + 1
    bins = np.minimum(((arc_mm - start) / BIN_MM).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    mean_log = np.zeros((n_bins, len(teeth)))
    np.add.at(mean_log, bins, log_probs)
    mean_log /= np.maximum(count, 1)[:, None]
    bin_score = network_weight * mean_log - EMPTY_BIN_COST * (count == 0)[:, None]
    cum_net = np.vstack([np.zeros(len(teeth)), np.cumsum(bin_score, axis=0)])
    cum_gap = GAP_COST * np.concatenate([[0.0], np.cumsum(count > 0)])
    cum_empty = np.concatenate([[0], np.cumsum(count == 0)])
    edge = np.zeros(n_bins + 1)
    if along is not None:
        edge = BOUNDARY_WEIGHT * (boundary_evidence(bins, along, n_bins) - BOUNDARY_OFFSET)
    best = None
    for scale in SCALES:
        fit = _programme(cum_net, cum_gap, cum_empty, edge, width * scale, third, start)
        score = fit[1] - 0.5 * (np.log(scale) / SCALE_LOG_SD) ** 2
        if best is None or score > best.score:
            best = ArchFit({int(teeth[j]): span for j, span in fit[0]}, float(scale), float(score))
    return best


def _programme(cum_net: np.ndarray, cum_gap: np.ndarray, cum_empty: np.ndarray, edge: np.ndarray,
               width_mm: np.ndarray, third: np.ndarray, start: float):
    """Exact segmental dynamic programme over bin boundaries 0..B: ([(column, (start, end) mm)], score).

    ``tooth[e, j]``: best score of bins [0, e) ending with tooth j's interval at e; ``gap[e, j]``:
    ending with a gap after tooth j (j = K: no tooth yet); ``enter[a, j]``: best score at a from
    which tooth j may begin (after a leading gap, or after an earlier tooth with those between skipped).
    """
    n_bins, k = cum_net.shape[0] - 1, cum_net.shape[1]
    skip_one = np.where(third, SKIP_COST_THIRD_MOLAR, SKIP_COST)
    cum_skip = np.concatenate([[0.0], np.cumsum(skip_one)])
    end_one = np.where(third, SKIP_COST_THIRD_MOLAR, END_SKIP_COST)
    cum_end = np.concatenate([[0.0], np.cumsum(end_one)])
    before = cum_end[:k]                       # teeth 0..j-1 left out when j is the first
    after = cum_end[k] - cum_end[1:]           # teeth j+1..K-1 left out when j is the last
    between = cum_skip[None, :k] - cum_skip[1:, None]   # [i, j]: teeth i+1..j-1 left out
    lo = np.maximum(1, np.floor(width_mm * WIDTH_RANGE[0] / BIN_MM)).astype(int)
    hi = np.ceil(width_mm * WIDTH_RANGE[1] / BIN_MM).astype(int)
    log_width = np.log(width_mm)
    neg = -np.inf
    tooth = np.full((n_bins + 1, k), neg)
    gap = np.full((n_bins + 1, k + 1), neg)
    enter = np.full((n_bins + 1, k), neg)
    tooth_from = np.zeros((n_bins + 1, k), int)
    gap_from = np.zeros((n_bins + 1, k), int)
    enter_from = np.full((n_bins + 1, k), -1)   # -1: first tooth; else the previous tooth's column
    enter_gap = np.zeros((n_bins + 1, k), bool)  # the previous tooth is followed by a gap
    upper = np.triu(np.ones((k, k), bool), 1)    # [i, j]: i before j
    best_gap_source = np.full(k, neg)            # running max over a of tooth[a, j] + cum_gap[a]
    best_gap_at = np.zeros(k, int)

    def open_at(a):
        lead = gap[a, k] - before
        # an open space (bins without vertices) in the gap pays for the teeth it skips
        empty_mm = BIN_MM * (cum_empty[a] - cum_empty[gap_from[a]])
        via_gap = gap[a, :k][:, None] - np.maximum(0.0, between - OPEN_SPACE_CREDIT * empty_mm[:, None])
        via_tooth = tooth[a][:, None] - between
        prev = np.where(upper, np.maximum(via_tooth, via_gap), neg)
        i = prev.argmax(axis=0)
        via = prev[i, np.arange(k)]
        take = via > lead
        enter[a] = np.where(take, via, lead)
        enter_from[a] = np.where(take, i, -1)
        enter_gap[a] = take & (via_gap[i, np.arange(k)] > via_tooth[i, np.arange(k)])

    # width penalty of every interval length d (in bins) for every tooth; -inf outside its range
    d = np.arange(hi.max() + 1)[:, None]
    with np.errstate(divide="ignore"):
        width_term = -0.5 * ((np.log(d * BIN_MM) - log_width[None, :]) / WIDTH_LOG_SD) ** 2
    width_term = np.where((d >= lo[None, :]) & (d <= hi[None, :]), width_term, neg)
    columns = np.arange(k)
    gap[0, k] = 0.0
    open_at(0)
    for e in range(1, n_bins + 1):
        a = e - d[: min(e, hi.max()) + 1]                      # interval starts, (D, 1)
        score = enter[a, columns] - cum_net[a, columns] + edge[a] + width_term[: len(a)]
        m = np.argmax(score, axis=0)
        tooth[e] = score[m, columns] + cum_net[e] + edge[e]
        tooth_from[e] = a[m, 0]
        better = tooth[e - 1] + cum_gap[e - 1] > best_gap_source
        best_gap_source = np.where(better, tooth[e - 1] + cum_gap[e - 1], best_gap_source)
        best_gap_at = np.where(better, e - 1, best_gap_at)
        gap[e, :k] = best_gap_source - cum_gap[e]
        gap_from[e] = best_gap_at
        gap[e, k] = -cum_gap[e]
        open_at(e)
    final = np.concatenate([tooth[n_bins] - after, gap[n_bins, :k] - after])
    if not np.isfinite(final.max()):
        return [], neg
    pick = int(np.argmax(final))
    j, in_gap, e = pick % k, pick >= k, n_bins
    spans = []
    while True:
        if in_gap:
            e = gap_from[e, j]
        a = tooth_from[e, j]
        spans.append((j, (start + a * BIN_MM, start + e * BIN_MM)))
        i = enter_from[a, j]
        if i < 0:
            break
        in_gap, j, e = bool(enter_gap[a, j]), int(i), a
    return spans[::-1], float(final[pick])


def number_along_arch(probs: np.ndarray, points: np.ndarray, tooth: np.ndarray, jaw: str,
                      normals: np.ndarray | None = None, scheme: str | None = None) -> np.ndarray:
    """``probs`` with each tooth number's probability confined to its interval along the arch.

    Args:
        probs: (N, C) float class probabilities per vertex (class 0 gingiva).
        points: (N, 3) float canonical coordinates.
        tooth: (N,) bool, the tooth vertices (the tooth/gingiva cut).
        jaw: ``"upper"`` or ``"lower"``.
        normals: (N, 3) float unit normals in the frame of ``points``, for the crowns' boundary
            evidence; None: the fit goes without it.
        scheme: the class scheme, default ``f"ios_{jaw}"``.

    Returns:
        (N, C) float, a copy; unchanged when fewer than :data:`MIN_ARCH_VERTICES` vertices are teeth.
    """
    tooth = np.asarray(tooth, bool)
    out = np.array(probs, dtype=np.float64, copy=True)
    if tooth.sum() < MIN_ARCH_VERTICES:
        return out
    teeth = fdi.teeth_of_jaw(jaw)
    cols = fdi.fdi_to_class_index(np.asarray(teeth), scheme or f"ios_{jaw}")
    if normals is None:
        arc, along = arch_coordinate(points, tooth), None
    else:
        arc, along = arch_coordinate(points, tooth, normals)
        along = along[tooth]
    share = out[tooth][:, cols]
    share /= np.maximum(share.sum(axis=1, keepdims=True), 1e-12)
    whole = arch_turn(points, tooth) >= WHOLE_ARCH_TURN_DEG
    fit = fit_arch(arc[tooth], np.log(np.clip(share, PROBABILITY_FLOOR, 1.0)), jaw, along,
                   WHOLE_ARCH_NETWORK_WEIGHT if whole else NETWORK_WEIGHT)
    weight = np.full((len(out), len(cols)), PROBABILITY_FLOOR)
    for j, number in enumerate(teeth):
        if int(number) in fit.intervals:
            a, b = fit.intervals[int(number)]
            outside = np.maximum(0.0, np.maximum(a - arc, arc - b))
            weight[:, j] = np.maximum(np.exp(-outside / FALLOFF_MM), PROBABILITY_FLOOR)
    out[:, cols] *= weight
    return out
