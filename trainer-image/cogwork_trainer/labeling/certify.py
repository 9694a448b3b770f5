"""Certified auto-accept: the lowest score threshold whose precision is provably >= a target.

"Provably" means: on held-out human labels, the one-sided Clopper-Pearson lower confidence bound
on the precision of the items scored at or above the threshold meets the target. If no threshold
can be certified with the labels at hand we say so, with the best bound seen, and the caller
accepts nothing: it never falls back to a weaker threshold.

Multiple testing: trying many thresholds and keeping any one that passes would inflate the error
rate (each test has a `1 - confidence` chance of a false pass). We test thresholds as a FIXED
SEQUENCE, from high scores downward, and stop at the first failure: a fixed-sequence procedure
controls the family-wise error at `1 - confidence` without any correction, because a false
acceptance at threshold t requires every test before it to have passed. The sequence is ordered
by scores alone, never by correctness. It starts at the first threshold with enough items to
pass at a plausible error rate (half the one the target tolerates): above it a single early
error would end the scan before it reached thresholds with enough data (measured: one wrong item
among the top 59 of 400 validation labels left a 0.973-certifiable model with nothing).
Per-class thresholds split the error budget across classes (Bonferroni), so every class's
guarantee holds at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta


def clopper_pearson_lower(successes: int, trials: int, confidence: float) -> float:
    """One-sided (lower) Clopper-Pearson bound: P(p >= bound) >= confidence."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if successes == 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, successes, trials - successes + 1))


def min_items_to_certify(target: float, confidence: float) -> int:
    """Fewest validation items that could certify `target` (all of them correct).

    With n of n correct the bound is (1 - confidence) ** (1 / n).
    """
    if not 0 < target < 1:
        raise ValueError(f"target precision must be in (0, 1), got {target}")
    return math.ceil(math.log(1.0 - confidence) / math.log(target) - 1e-12)


def start_items(target: float, confidence: float, total: int) -> int:
    """Validation items above the first threshold tested (chosen before looking at correctness).

    The fewest items at which a precision halfway between the target and 1 would certify,
    but no more than there are (then the one test covers every validation item).
    """
    needed = min_items_to_certify(target, confidence)
    if total <= needed:
        return needed
    n = np.arange(needed, total + 1)
    k = np.floor(n * (1.0 + target) / 2.0)
    passing = np.flatnonzero(_lower_bounds(k, n, confidence) >= target)
    return int(n[passing[0]]) if len(passing) else total


@dataclass(frozen=True)
class Certification:
    """Outcome of the threshold scan on one set of validation items."""

    certified: bool
    threshold: float | None  # accept items with score >= threshold; None: accept nothing
    lower_bound: float  # at `threshold` if certified, else the best bound of any threshold
    precision: float | None  # validation precision at or above `threshold`
    validation_items: int  # validation items at or above `threshold` (0 if not certified)
    validation_total: int
    tested: int  # thresholds tested in the fixed sequence
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cut_points(scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distinct thresholds, highest first, with the items and correct items at or above each."""
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order].astype(np.int64)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    n = np.arange(1, len(s) + 1)[last_of_tie]
    k = np.cumsum(c)[last_of_tie]
    return s[last_of_tie], n, k


def _lower_bounds(k: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """`clopper_pearson_lower` over arrays (0 where nothing is correct)."""
    safe_k = np.maximum(k, 1)
    return np.where(k > 0, beta.ppf(1.0 - confidence, safe_k, n - safe_k + 1), 0.0)


def certify_threshold(
    scores: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    target_precision: float,
    confidence: float,
) -> Certification:
    """The lowest threshold whose precision lower bound meets the target (fixed-sequence scan)."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    if s.shape != c.shape or s.ndim != 1:
        raise ValueError("scores and correct must be 1-D arrays of the same length")
    total = len(s)
    needed = min_items_to_certify(target_precision, confidence)
    if total < needed:
        return Certification(False, None, 0.0, None, 0, total, 0,
                             f"{total} validation labels cannot certify precision "
                             f"{target_precision} at confidence {confidence}: at least {needed} "
                             "are needed even if every prediction is correct")
    thresholds, n, k = _cut_points(s, c)
    bounds = _lower_bounds(k, n, confidence)
    best = float(bounds.max())
    chosen: int | None = None
    tested = 0
    first = start_items(target_precision, confidence, total)
    for i in np.flatnonzero(n >= first):
        tested += 1
        if bounds[i] < target_precision:
            break  # fixed sequence: the first failure ends the scan
        chosen = int(i)
    if chosen is None:
        return Certification(False, None, best, None, 0, total, tested,
                             f"no threshold certifies precision {target_precision} at confidence "
                             f"{confidence}; best lower bound reached {best:.4f} on {total} "
                             "validation labels")
    return Certification(
        True, float(thresholds[chosen]), float(bounds[chosen]), float(k[chosen] / n[chosen]),
        int(n[chosen]), total, tested,
        f"precision >= {bounds[chosen]:.4f} with confidence {confidence} on "
        f"{int(n[chosen])} of {total} validation labels")


def certify_per_class(
    scores: np.ndarray,
    predicted: np.ndarray,
    correct: np.ndarray,
    num_classes: int,
    target_precision: float,
    confidence: float,
) -> dict[int, Certification]:
    """One threshold per predicted class; Bonferroni over the classes that have validation items."""
    present = [cls for cls in range(num_classes) if np.any(predicted == cls)]
    adjusted = 1.0 - (1.0 - confidence) / max(1, len(present))
    out = {}
    for cls in range(num_classes):
        mask = predicted == cls
        out[cls] = certify_threshold(scores[mask], correct[mask], target_precision, adjusted)
    return out


def accept_mask(
    scores: np.ndarray, predicted: np.ndarray,
    certification: Certification | dict[int, Certification],
) -> np.ndarray:
    """Which items to auto-accept; nothing where the certification failed."""
    if isinstance(certification, Certification):
        if certification.threshold is None:
            return np.zeros(len(scores), dtype=bool)
        return scores >= certification.threshold
    mask = np.zeros(len(scores), dtype=bool)
    for cls, cert in certification.items():
        if cert.threshold is not None:
            mask |= (predicted == cls) & (scores >= cert.threshold)
    return mask


def calibration_curve(
    scores: np.ndarray,
    correct: np.ndarray,
    confidence: float,
    pool_scores: np.ndarray | None = None,
    max_points: int = 50,
) -> list[dict[str, float]]:
    """Precision vs coverage over thresholds (highest first), thinned to `max_points`.

    coverage: fraction of validation items at or above the threshold; poolCoverage: fraction of
    the pool it would auto-accept (what a user trades precision for).
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    if len(s) == 0:
        return []
    thresholds, n, k = _cut_points(s, c)
    keep = np.unique(np.linspace(0, len(thresholds) - 1, min(max_points, len(thresholds)))
                     .round().astype(int))
    bounds = _lower_bounds(k, n, confidence)
    pool_sorted = np.sort(pool_scores) if pool_scores is not None else None
    points = []
    for i in keep:
        point = {
            "threshold": float(thresholds[i]),
            "coverage": float(n[i] / len(s)),
            "precision": float(k[i] / n[i]),
            "lowerBound": float(bounds[i]),
        }
        if pool_sorted is not None and len(pool_sorted):
            at_or_above = len(pool_sorted) - np.searchsorted(pool_sorted, thresholds[i], "left")
            point["poolCoverage"] = float(at_or_above / len(pool_sorted))
        points.append(point)
    return points
