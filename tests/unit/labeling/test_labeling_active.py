"""Review-batch selection: each strategy picks what it promises, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
from cogwork_trainer.labeling.active import STRATEGIES, select_batch, uncertainty

PROBS = np.array([
    [0.98, 0.01, 0.01],  # 0: sure
    [0.50, 0.495, 0.005],  # 1: tiniest margin
    [0.34, 0.33, 0.33],  # 2: highest entropy, least confident
    [0.60, 0.40, 0.00],  # 3: medium margin, low entropy
    [0.70, 0.15, 0.15],  # 4
])


def test_uncertainty_scores_match_their_definitions() -> None:
    assert uncertainty(PROBS, "leastConfidence") == pytest.approx(1 - PROBS.max(axis=1))
    top = np.sort(PROBS, axis=1)
    assert uncertainty(PROBS, "margin") == pytest.approx(1 - (top[:, -1] - top[:, -2]))
    entropy = [-sum(p * np.log(p) for p in row if p > 0) for row in PROBS]
    assert uncertainty(PROBS, "entropy") == pytest.approx(entropy)


@pytest.mark.parametrize(("strategy", "expected"), [
    ("margin", [1, 2, 3]), ("entropy", [2, 4, 1]), ("leastConfidence", [2, 1, 3]),
])
def test_uncertainty_strategies_take_the_most_uncertain_first(strategy: str,
                                                               expected: list[int]) -> None:
    assert select_batch(strategy, PROBS, 3, seed=0).tolist() == expected  # type: ignore[arg-type]


def test_candidates_restrict_the_choice_and_k_is_capped() -> None:
    picked = select_batch("margin", PROBS, 10, seed=0, candidates=np.array([0, 3, 4]))
    assert sorted(picked.tolist()) == [0, 3, 4]
    assert select_batch("margin", PROBS, 0, seed=0).size == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_is_deterministic_per_seed_and_picks_distinct_items(strategy: str) -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=500)
    a = select_batch(strategy, probs, 40, seed=7)  # type: ignore[arg-type]
    b = select_batch(strategy, probs, 40, seed=7)  # type: ignore[arg-type]
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 40


def test_random_depends_on_the_seed() -> None:
    probs = np.full((1000, 2), 0.5)
    assert (select_batch("random", probs, 20, seed=1).tolist()
            != select_batch("random", probs, 20, seed=2).tolist())


def test_ties_are_broken_by_the_seed_not_by_position() -> None:
    probs = np.full((1000, 2), 0.5)  # every item equally uncertain
    picked = select_batch("margin", probs, 20, seed=3)
    assert picked.tolist() != list(range(20))


def test_coreset_covers_every_cluster_and_skips_covered_ones() -> None:
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.1, (50, 2)) for c in centers])
    cluster = np.repeat([0, 1, 2], 50)
    picked = select_batch("coreset", np.zeros((150, 2)), 3, seed=0, embeddings=points)
    assert sorted(cluster[picked].tolist()) == [0, 1, 2]
    # Cluster 0 already labeled: the first two picks go to the other clusters.
    picked = select_batch("coreset", np.zeros((150, 2)), 2, seed=0, embeddings=points,
                          labeled_embeddings=centers[:1])
    assert sorted(cluster[picked].tolist()) == [1, 2]


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        select_batch("mostFun", PROBS, 1, seed=0)  # type: ignore[arg-type]
