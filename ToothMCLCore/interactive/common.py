"""What every click tool shares: the record of an interaction and the numbering of new teeth."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from itertools import permutations

import numpy as np

from .. import fdi
from ..errors import InvalidInputError


@dataclass(frozen=True)
class Click:
    """One click: ``kind`` "tooth" / "positive" / "negative" / "brush", position in RAS mm."""

    kind: str
    ras: tuple[float, float, float]


@dataclass(frozen=True)
class Interaction:
    """What one tool did, for the saved correction's ``operations`` (:meth:`to_operation`).

    Attributes:
        tool: "add", "split", "refine" or "brush".
        clicks: the clicks, in order.
        label: the FDI number the tool gave (split: the first half's), 0 for gingiva/background.
        labels: every number the tool gave (split: both halves).
        changed: how many elements changed.
        time_utc: ISO 8601 UTC time.
        params: tool settings (radius, ...).
        unit: what ``changed`` counts: "vertices" (scans) or "voxels" (CBCT).
    """

    tool: str
    clicks: tuple[Click, ...]
    label: int
    labels: tuple[int, ...]
    changed: int
    time_utc: str
    params: dict = field(default_factory=dict)
    unit: str = "vertices"

    def to_operation(self) -> dict:
        """The JSON dict stored with the correction (``{"op": "interactive", "tool": ...}``)."""
        return {"op": "interactive", "tool": self.tool, "label": int(self.label),
                "labels": [int(v) for v in self.labels], self.unit: int(self.changed),
                "clicks": [{"kind": c.kind, "ras": [round(float(x), 3) for x in c.ras]} for c in self.clicks],
                "time_utc": self.time_utc, **dict(self.params)}


def record(tool: str, clicks, label: int, labels, changed: int, params: dict, unit: str = "vertices") -> Interaction:
    """An :class:`Interaction` stamped with the current UTC time."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return Interaction(tool, tuple(clicks), int(label), tuple(int(v) for v in labels), int(changed), now,
                       dict(params), unit)


def numbers_by_arch(jaw: str, kept: list[int], kept_centres, new_centres) -> list[int]:
    """Free FDI numbers of ``jaw`` for new teeth, from their place along the arch.

    The teeth that keep their numbers (``kept``, centres ``kept_centres``) and the new ones
    (``new_centres``) are ordered along the arch
    (:func:`~ToothMCLCore.postprocessing.assignment.arch_coordinate`; centres in a frame with x
    to the patient's right and y anterior). Among the free numbers, the choice keeps the arch
    order first (fewest pairs of teeth out of order), then skips no position (a new tooth next
    to its neighbour rather than a gap away), then lies nearest to where the spacing of the kept
    teeth puts each new one.

    Raises:
        InvalidInputError: fewer free numbers than new teeth.
    """
    from ..postprocessing.assignment import arch_coordinate

    centres = np.array(list(kept_centres) + list(new_centres), np.float64).reshape(-1, 3)
    along = arch_coordinate(centres)
    known_along, new_along = along[: len(kept)], along[len(kept):]
    known_index = np.array([fdi.tooth(t).arch_index for t in kept], np.float64)
    free = [t for t in fdi.teeth_of_jaw(jaw) if t not in kept]
    if len(free) < len(new_along):
        raise InvalidInputError(f"no free tooth number left in the {jaw} jaw for the new tooth; renumber first")
    expected = _expected_index(known_along, known_index, new_along)
    best, best_cost = None, (np.inf, np.inf, np.inf)
    order_all = np.r_[known_along, new_along]
    for combo in permutations(free, len(new_along)):
        idx = np.array([fdi.tooth(t).arch_index for t in combo], np.float64)
        ranked = np.r_[known_index, idx][np.argsort(order_all, kind="stable")]
        inversions = int(np.sum(np.triu(ranked[:, None] > ranked[None, :], 1)))
        scale = np.sort(_continuous(np.r_[known_index, idx]))
        gaps = float(np.sum(np.diff(scale) - 1.0))
        cost = (inversions, gaps, float(np.abs(_continuous(idx) - expected).sum()))
        if cost < best_cost:
            best, best_cost = list(combo), cost
    return best


def _continuous(index: np.ndarray) -> np.ndarray:
    """Arch indices -8..-1, 1..8 as a gap-free scale (-7.5..-0.5, 0.5..7.5)."""
    return np.where(index < 0, index + 0.5, index - 0.5)


def _expected_index(known_along: np.ndarray, known_index: np.ndarray, new_along: np.ndarray) -> np.ndarray:
    """Where on the gap-free arch scale (:func:`_continuous`) the position of each new tooth puts
    it, interpolated between the kept teeth (a straight-line fit beyond the last ones)."""
    if len(known_along) < 2:
        return np.zeros(len(new_along))
    order = np.argsort(known_along)
    scale = _continuous(known_index[order])
    inside = np.interp(new_along, known_along[order], scale, left=np.nan, right=np.nan)
    line = np.polyval(np.polyfit(known_along[order], scale, 1), new_along)
    return np.where(np.isnan(inside), line, inside)


def tooth_boundary_changes(labels: np.ndarray, proposed: np.ndarray, tooth: int, band: np.ndarray,
                           may_join: np.ndarray, grow: bool = True, shrink: bool = True) -> np.ndarray:
    """Where a boundary fix of ``tooth`` may write ``proposed`` labels: inside ``band``, an element
    leaves the tooth (when ``shrink``), or joins it (when ``grow``) where ``may_join`` allows (the
    gingiva / background, and another tooth only near a positive click placed on it). Other teeth's
    boundaries never move. The refine tools pass ``grow`` = there are positive clicks, ``shrink`` =
    there are negative ones: a click that says "the tooth reaches here" never takes anything away
    from it elsewhere (on real scans a positive click on a small incisor's lost rim shrank it, Dice
    0.53 -> 0.13, before this rule), and a negative one never adds."""
    joins = (proposed == tooth) & may_join if grow else np.zeros_like(band)
    leaves = (labels == tooth) & (proposed != tooth) if shrink else np.zeros_like(band)
    return band & (joins | leaves)
