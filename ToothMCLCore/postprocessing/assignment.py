"""FDI order-aware assignment: one implementation for CBCT, IOS and SOFTooth.

The core is SOFTooth's FDI Order-Aware Hungarian Matching (Eq. 11-13, Algorithm 1): a
similarity matrix between predicted instances and candidate teeth is lowered by a centre
penalty (Eq. 12) and by an anatomical order penalty (Eq. 13),

    C_ord(i, l) = C(i, l) - lambda_ord * max(|r_i - t_l| - delta_ord, 0),

where ``r_i`` is the normalised rank of instance i along the arch and ``t_l`` the normalised
canonical position of tooth l, then ``scipy.optimize.linear_sum_assignment`` maximises the
total similarity (the paper negates similarities into costs; so do we).

At inference time (no ground truth) we reuse it to fix duplicated and swapped FDI numbers:
the similarity is the instance's mean class probability, and the candidate teeth are the 16 of
its jaw. One choice the paper leaves open is how to place ``t_l`` when teeth are missing: ranks
``r_i`` of, say, 12 instances cannot be compared with positions of all 16 teeth. We first solve
the assignment on probabilities alone to estimate *which* teeth are present, then place ``t_l``
by the rank of tooth l among those present (absent teeth interpolated between neighbours), and
solve again with the order penalty. Swaps and duplicates keep the set of present teeth roughly
right, so the second solve puts them back in arch order; missing teeth no longer shift ranks.

The second choice is the scale of the penalty. The paper's delta_ord = 0.15 (2.25 of 16 tooth
positions) suits training, where the targets are ground truth and the prior only has to veto
implausible matches. After prediction the most common numbering error is two neighbours
swapped, one position apart, which that tolerance accepts. At inference ``assign_fdi``
therefore measures the discrepancy in tooth positions, ``|r_i - t_l| * (n - 1)`` for n present
teeth, with a tolerance of half a position and the paper's lambda = 4 per position: a
consistent numbering costs nothing, and moving an instance one position out of order costs 2,
more than any class probability can gain (similarities are probabilities, at most 1).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .. import fdi

#: SOFTooth defaults (Section III-D)
LAMBDA_ORDER, DELTA_ORDER = 4.0, 0.15
LAMBDA_CENTRE, DELTA_DRIFT = 0.5, 0.10
#: after prediction, a further connected region of one class is a second tooth (a duplicated
#: number) when it holds at least this share of the largest region AND its centre lies at least
#: this far from the largest region's centre; otherwise it is a fragment or an island. The
#: distance rule matters: a weak network splits one tooth into several same-class fragments a
#: few mm apart, and counting each as a tooth wrecks the numbering; a real duplicate (the left
#: canine also called "13") lies across the arch, tens of mm away. 12 mm is more than one molar.
SECOND_INSTANCE_SHARE = 0.25
SECOND_INSTANCE_MIN_DISTANCE_MM = 12.0


def is_second_instance(size: int, largest_size: int, centre: np.ndarray, largest_centre: np.ndarray) -> bool:
    """Whether a further same-class region is a second tooth (see the constants above)."""
    far = float(np.linalg.norm(np.asarray(centre) - np.asarray(largest_centre))) >= SECOND_INSTANCE_MIN_DISTANCE_MM
    return size >= SECOND_INSTANCE_SHARE * largest_size and far


def order_penalised_similarity(
    similarity: np.ndarray,
    instance_rank: np.ndarray,
    target_rank: np.ndarray,
    lambda_order: float = LAMBDA_ORDER,
    delta_order: float = DELTA_ORDER,
    instance_centres: np.ndarray | None = None,
    target_centres: np.ndarray | None = None,
    scene_size: float | None = None,
    lambda_centre: float = LAMBDA_CENTRE,
    delta_drift: float = DELTA_DRIFT,
) -> np.ndarray:
    """SOFTooth Eq. 12-13: similarity lowered by centre-drift and FDI-order penalties.

    Args:
        similarity: (N, L) float, base similarity C in [0, 1] (Eq. 11 or class probability).
        instance_rank: (N,) float in [0, 1], normalised rank of each instance along the arch.
        target_rank: (L,) float in [0, 1], normalised canonical position of each target tooth.
        instance_centres, target_centres: optional (N, 3) and (L, 3) centres for Eq. 12.
        scene_size: S_scene, e.g. the bounding-box diagonal (required with centres).

    Returns:
        (N, L) float64 order-aware similarity C_ord.
    """
    c = np.asarray(similarity, dtype=np.float64).copy()
    if instance_centres is not None and target_centres is not None:
        if not scene_size:
            raise ValueError("scene_size is required with centres")
        dist = np.abs(instance_centres[:, None, :] - target_centres[None, :, :]).sum(-1)
        c -= lambda_centre * np.maximum(dist / scene_size - delta_drift, 0.0)
    gap = np.abs(np.asarray(instance_rank)[:, None] - np.asarray(target_rank)[None, :])
    c -= lambda_order * np.maximum(gap - delta_order, 0.0)
    return c


def hungarian(similarity: np.ndarray) -> np.ndarray:
    """Maximum-similarity one-to-one assignment; (N,) column per row, -1 where unassigned."""
    rows, cols = linear_sum_assignment(-np.asarray(similarity, dtype=np.float64))
    out = np.full(similarity.shape[0], -1, dtype=np.int64)
    out[rows] = cols
    return out


def normalised_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value among all, scaled to [0, 1] (0.5 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) <= 1:
        return np.full(len(values), 0.5)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks / (len(values) - 1)


def arch_coordinate(centres_ras: np.ndarray, reference_ras: np.ndarray | None = None) -> np.ndarray:
    """Position of tooth centres along the arch, increasing from the patient's right to left.

    Works in an RAS-aligned frame (x to the patient's right, y anterior): the arch opens
    posteriorly, so the angle of each centre around a point behind the incisors and level with
    the last molars orders the teeth; right teeth (larger x) come first.

    Args:
        centres_ras: (N, 3) float, instance centres in RAS mm.
        reference_ras: optional (M, 3) float centres that place the pivot point (default: the
            centres themselves). Pass the same reference to compare two sets of centres, e.g.
            predicted instances against ground-truth teeth.

    Returns:
        (N,) float, the angle in radians (only the order matters).
    """
    c = np.asarray(centres_ras, dtype=np.float64)
    if len(c) == 0:
        return np.zeros(0)
    ref = c if reference_ras is None or len(reference_ras) == 0 else np.asarray(reference_ras, np.float64)
    cx = 0.5 * (ref[:, 0].min() + ref[:, 0].max())
    cy = ref[:, 1].min() - 0.1 * max(np.ptp(ref[:, 1]), 1.0)
    return -np.arctan2(c[:, 0] - cx, c[:, 1] - cy)


def assign_fdi(
    probabilities: np.ndarray,
    centres_ras: np.ndarray,
    candidate_fdi: tuple[int, ...] | list[int],
    lambda_order: float = LAMBDA_ORDER,
    delta_order: float = 0.5,
) -> np.ndarray:
    """Give each instance of one jaw a distinct FDI number that respects the arch order.

    Args:
        probabilities: (N, L) float, mean class probability of each instance for each
            candidate tooth (columns follow ``candidate_fdi``).
        centres_ras: (N, 3) float, instance centres in an RAS-aligned frame.
        candidate_fdi: L FDI numbers of one jaw (e.g. ``fdi.teeth_of_jaw("upper")``).
        lambda_order: weight of the order prior per tooth position (paper: 4).
        delta_order: tolerance in tooth positions (default half a position, see above).

    Returns:
        (N,) int64 FDI number per instance, 0 for instances left without a tooth (more
        instances than candidates: the least likely ones).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    n = p.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    candidates = np.asarray(candidate_fdi, dtype=np.int64)
    arch_pos = np.array([fdi.tooth(int(t)).arch_index for t in candidates], dtype=np.float64)
    # canonical positions -8..-1, 1..8 -> 0..15
    canon = np.where(arch_pos < 0, arch_pos + 8, arch_pos + 7)

    first = hungarian(p)
    present = sorted({int(canon[c]) for c in first if c >= 0})
    target_rank = _ranks_among_present(canon, present)
    instance_rank = normalised_rank(arch_coordinate(centres_ras))
    steps = max(len(present) - 1, 1)  # ranks in tooth positions
    sim = order_penalised_similarity(p, instance_rank * steps, target_rank * steps, lambda_order,
                                     delta_order)
    second = hungarian(sim)
    return np.where(second >= 0, candidates[np.clip(second, 0, None)], 0)


def _ranks_among_present(canon: np.ndarray, present: list[int]) -> np.ndarray:
    """Normalised rank of each canonical position among the present ones (interpolated)."""
    if len(present) <= 1:
        return np.full(len(canon), 0.5)
    xs = np.asarray(present, dtype=np.float64)
    ys = np.arange(len(present), dtype=np.float64) / (len(present) - 1)
    slope_lo = (ys[1] - ys[0]) / (xs[1] - xs[0])
    slope_hi = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    out = np.interp(canon, xs, ys)
    out = np.where(canon < xs[0], ys[0] - (xs[0] - canon) * slope_lo, out)
    out = np.where(canon > xs[-1], ys[-1] + (canon - xs[-1]) * slope_hi, out)
    return out
