"""Train/val/test splits by patient: deterministic from a seed, never one patient in two splits.

Rule (:func:`assign_splits`): patients are placed one by one, those with the most cases first,
then in the order of ``SHA-256("<seed>:<patient id>")``. Each joins the split where its cases
bring the case counts closest (sum of absolute differences) to ``fraction * total cases``; ties
go to the split furthest below its target (relative to it), then to train, val, test. Big
patients first leave the small ones to fill the gaps, so the counts end up as close to the
fractions as whole patients allow. The hash order, unlike ``random.shuffle``, is the same on
every Python version and platform, and adding a patient does not reorder the others.

Small datasets: a split gets a patient only when that brings the counts closer to the
fractions, so with 0.8/0.1/0.1 one or two single-scan patients all land in train (val and test
are empty) and a 10-patient dataset splits 8/1/1. Ask for e.g. ``0.5,0.5,0`` to hold a patient
out of two.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

from ..errors import InvalidInputError

SPLITS = ("train", "val", "test")


def parse_fractions(value) -> tuple[float, float, float]:
    """Split fractions from ``"0.8,0.1,0.1"`` or a 3-sequence; they must be >= 0 and sum to 1.

    Raises:
        InvalidInputError: not three numbers, negative, or a sum other than 1.
    """
    parts = value.split(",") if isinstance(value, str) else value
    try:
        fractions = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        fractions = ()
    if len(fractions) != 3 or not all(math.isfinite(f) and f >= 0 for f in fractions):
        raise InvalidInputError(
            f"split must be three fractions train,val,test >= 0 (got {value!r}); e.g. 0.8,0.1,0.1"
        )
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise InvalidInputError(
            f"split fractions must sum to 1 (got {value!r}, sum {sum(fractions):g}); e.g. 0.8,0.1,0.1"
        )
    return fractions  # type: ignore[return-value]


def patient_order(cases_per_patient: Mapping[str, int], seed: int) -> list[str]:
    """Patient ids in the order :func:`assign_splits` places them (most cases first, then seeded)."""
    def key(patient: str) -> tuple[int, str, str]:
        digest = hashlib.sha256(f"{int(seed)}:{patient}".encode()).hexdigest()
        return -cases_per_patient[patient], digest, patient

    return sorted(cases_per_patient, key=key)


def assign_splits(cases_per_patient: Mapping[str, int], fractions: Sequence[float],
                  seed: int = 0) -> dict[str, str]:
    """The split (``"train"``, ``"val"`` or ``"test"``) of every patient.

    Args:
        cases_per_patient: patient id -> number of cases (scans) of that patient.
        fractions: train, val, test fractions of the cases (see :func:`parse_fractions`).
        seed: any integer; the same seed and patients give the same splits.
    """
    fractions = parse_fractions(fractions)
    total = sum(cases_per_patient.values())
    targets = [f * total for f in fractions]
    counts = [0, 0, 0]
    assignment = {}
    for patient in patient_order(cases_per_patient, seed):
        n = cases_per_patient[patient]

        def rank(i: int, n: int = n) -> tuple[float, float, int]:
            distance = sum(abs(t - c - (n if j == i else 0)) for j, (t, c) in enumerate(zip(targets, counts)))
            below = (targets[i] - counts[i]) / targets[i] if targets[i] > 0 else -math.inf
            return round(distance, 9), -round(below, 9), i  # round: float noise is no tie-break

        best = min(range(3), key=rank)
        counts[best] += n
        assignment[patient] = SPLITS[best]
    return assignment


def assign_splits_with_test(cases_per_patient: Mapping[str, int], test_patients, fractions: Sequence[float],
                            seed: int = 0) -> dict[str, str]:
    """Splits with a given test set (e.g. a benchmark's official test list): ``test_patients`` are
    "test"; the others are split into train and val by :func:`assign_splits` with the train and
    val fractions rescaled to sum to 1 (the test fraction is not used)."""
    train, val, _ = parse_fractions(fractions)
    if train + val <= 0:
        raise InvalidInputError("with a given test list the train and val fractions cannot both be 0; e.g. 0.9,0.1,0")
    test = {str(p) for p in test_patients}
    rest = {p: n for p, n in cases_per_patient.items() if p not in test}
    out = assign_splits(rest, (train / (train + val), val / (train + val), 0.0), seed) if rest else {}
    out.update({p: "test" for p in cases_per_patient if p in test})
    return out


def assign_folds(cases_per_patient: Mapping[str, int], folds: int, seed: int = 0) -> dict[str, int]:
    """Fold 0..``folds``-1 of every patient for cross-validation, whole patients only.

    Patients are placed in :func:`patient_order` (most cases first, then seeded), each into the
    fold with the fewest cases so far (ties: the lowest fold), so folds differ by at most one
    patient's cases.

    Raises:
        InvalidInputError: fewer than 2 folds, or more folds than patients.
    """
    folds = int(folds)
    if folds < 2:
        raise InvalidInputError(f"cross-validation needs at least 2 folds (got {folds})")
    if folds > len(cases_per_patient):
        raise InvalidInputError(f"{folds} folds need at least {folds} patients (there are {len(cases_per_patient)})")
    sizes = [0] * folds
    out = {}
    for patient in patient_order(cases_per_patient, seed):
        k = min(range(folds), key=lambda i: (sizes[i], i))
        sizes[k] += cases_per_patient[patient]
        out[patient] = k
    return out
