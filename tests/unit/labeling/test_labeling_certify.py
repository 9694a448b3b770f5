"""Certified auto-accept: exact Clopper-Pearson bounds, the fixed-sequence scan, calibration."""

from __future__ import annotations

import numpy as np
import pytest
from cogwork_trainer.labeling.certify import (
    accept_mask,
    calibration_curve,
    certify_per_class,
    certify_threshold,
    clopper_pearson_lower,
    min_items_to_certify,
    start_items,
)
from scipy.stats import binom, binomtest


@pytest.mark.parametrize(("k", "n"), [(1, 1), (9, 10), (95, 100), (480, 500), (59, 59)])
def test_lower_bound_is_the_exact_one_sided_clopper_pearson(k: int, n: int) -> None:
    bound = clopper_pearson_lower(k, n, 0.95)
    # Defining property: at p = bound, seeing >= k successes has probability 1 - confidence.
    assert binom.sf(k - 1, n, bound) == pytest.approx(0.05, rel=1e-6)
    # A one-sided 95% bound is the lower end of a two-sided 90% exact interval.
    assert bound == pytest.approx(binomtest(k, n).proportion_ci(0.90, "exact").low, rel=1e-9)


def test_lower_bound_edges() -> None:
    assert clopper_pearson_lower(0, 10, 0.95) == 0.0
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson_lower(11, 10, 0.95)
    with pytest.raises(ValueError, match="confidence"):
        clopper_pearson_lower(1, 1, 1.0)


def test_min_items_is_where_a_perfect_record_first_certifies() -> None:
    needed = min_items_to_certify(0.95, 0.95)
    assert clopper_pearson_lower(needed, needed, 0.95) >= 0.95
    assert clopper_pearson_lower(needed - 1, needed - 1, 0.95) < 0.95
    assert certify_threshold(np.linspace(1, 0.5, needed - 1), np.ones(needed - 1, bool),
                             0.95, 0.95).certified is False
    assert certify_threshold(np.linspace(1, 0.5, needed), np.ones(needed, bool),
                             0.95, 0.95).certified is True


def test_picks_the_lowest_threshold_that_still_certifies() -> None:
    scores = np.linspace(0.999, 0.5, 400)
    correct = np.r_[np.ones(300, bool), np.zeros(100, bool)]  # errors only below item 300
    cert = certify_threshold(scores, correct, 0.95, 0.95)
    assert cert.certified and cert.threshold is not None
    n = int((scores >= cert.threshold).sum())
    k = int(correct[scores >= cert.threshold].sum())
    assert cert.lower_bound == pytest.approx(clopper_pearson_lower(k, n, 0.95))
    assert cert.lower_bound >= 0.95 and cert.validation_items == n and n > 300
    # One item lower would no longer certify: it is the lowest.
    n2 = n + 1
    assert clopper_pearson_lower(int(correct[:n2].sum()), n2, 0.95) < 0.95


def test_scan_stops_at_the_first_failure_even_if_a_lower_threshold_would_pass() -> None:
    # 400 right, 60 wrong, then 5,000 right: the cumulative bound dips below the target in the
    # wrong block and recovers further down; a scan that kept going would accept all of it.
    correct = np.r_[np.ones(400, bool), np.zeros(60, bool), np.ones(5000, bool)]
    scores = np.linspace(0.9999, 0.3, len(correct))
    assert clopper_pearson_lower(int(correct.sum()), len(correct), 0.95) >= 0.95
    cert = certify_threshold(scores, correct, 0.95, 0.95)
    assert cert.certified and cert.threshold is not None
    assert cert.threshold >= scores[460]  # never below the failing block
    assert 400 <= cert.validation_items <= 460


def test_one_early_error_does_not_end_the_scan() -> None:
    """The scan starts where a few errors are affordable, not at the first 59 items."""
    correct = np.ones(400, bool)
    correct[[38, 150, 390]] = False
    cert = certify_threshold(np.linspace(1, 0.5, 400), correct, 0.95, 0.95)
    assert cert.certified and cert.validation_items == 400
    assert start_items(0.95, 0.95, 400) > min_items_to_certify(0.95, 0.95)
    assert start_items(0.95, 0.95, 100) == 100  # scarce labels: one test on all of them


def test_uncertifiable_target_accepts_nothing_and_says_why() -> None:
    rng = np.random.default_rng(0)
    scores, correct = rng.random(100), np.ones(100, bool)  # even all correct
    cert = certify_threshold(scores, correct, 0.999, 0.95)
    assert not cert.certified and cert.threshold is None and cert.validation_items == 0
    assert "at least" in cert.reason and "0.999" in cert.reason
    assert not accept_mask(rng.random(50), np.zeros(50, int), cert).any()


def test_not_certified_reports_the_best_bound_reached() -> None:
    correct = np.r_[np.zeros(5, bool), np.ones(195, bool)]  # wrong at the very top
    cert = certify_threshold(np.linspace(1, 0, 200), correct, 0.97, 0.95)
    assert cert.tested == 1  # the first threshold with enough items already fails
    assert not cert.certified and cert.threshold is None
    assert cert.lower_bound == pytest.approx(clopper_pearson_lower(195, 200, 0.95))


def test_tied_scores_are_accepted_or_refused_together() -> None:
    scores = np.r_[np.full(300, 0.99), np.full(300, 0.8)]
    correct = np.r_[np.ones(300, bool), np.ones(270, bool), np.zeros(30, bool)]
    cert = certify_threshold(scores, correct, 0.95, 0.95)
    assert cert.threshold == 0.99 and cert.validation_items == 300


def test_false_certification_rate_stays_within_the_error_budget() -> None:
    """Every item is correct with probability exactly the target (the null's boundary): a
    sound procedure certifies in at most ~alpha of the runs despite scanning many thresholds."""
    rng = np.random.default_rng(1)
    runs, alpha = 300, 0.1
    wins = 0
    for _ in range(runs):
        correct = rng.random(400) < 0.95
        wins += certify_threshold(rng.random(400), correct, 0.95, 1 - alpha).certified
    assert wins / runs <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)


def test_per_class_thresholds_split_the_error_budget() -> None:
    rng = np.random.default_rng(2)
    predicted = np.repeat([0, 1], [300, 1500])
    scores = rng.random(1800)
    correct = np.ones(1800, bool)
    low = np.flatnonzero((predicted == 1) & (scores < 0.5))
    correct[low] = rng.random(len(low)) < 0.5  # class 1 is unreliable below 0.5
    per_class = certify_per_class(scores, predicted, correct, 2, 0.95, 0.95)
    assert per_class[0].certified and per_class[0].threshold == scores[:300].min() < 0.2
    assert per_class[1].certified and per_class[1].threshold is not None
    assert per_class[1].threshold > 0.4
    # Bonferroni: each class is certified at confidence 1 - 0.05 / 2.
    k = int(correct[:300].sum())
    assert per_class[0].lower_bound == pytest.approx(clopper_pearson_lower(k, 300, 0.975))
    mask = accept_mask(np.array([0.2, 0.2, 0.99]), np.array([0, 1, 1]), per_class)
    assert mask.tolist() == [True, False, True]


def test_calibration_curve_trades_precision_for_coverage() -> None:
    scores = np.linspace(1, 0, 100)
    correct = np.r_[np.ones(50, bool), np.arange(50) % 2 == 0]
    curve = calibration_curve(scores, correct, 0.95, pool_scores=np.linspace(1, 0, 1000),
                              max_points=20)
    assert 2 <= len(curve) <= 20
    coverage = [p["coverage"] for p in curve]
    assert coverage == sorted(coverage) and coverage[-1] == 1.0
    assert curve[0]["precision"] == 1.0 and curve[-1]["precision"] == pytest.approx(0.75)
    assert all(p["lowerBound"] <= p["precision"] for p in curve)
    assert curve[-1]["poolCoverage"] == 1.0 and 0 < curve[0]["poolCoverage"] < 0.05
