"""Active learning: which items humans should label next.

Uncertainty strategies rank items by how unsure the model is (ties broken by a seeded shuffle,
so a batch is reproducible); `coreset` picks a batch that covers the feature space (greedy
k-center), which avoids spending a whole batch on near-duplicates of one confusing item.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Strategy = Literal["margin", "entropy", "leastConfidence", "random", "coreset"]
STRATEGIES: tuple[Strategy, ...] = ("margin", "entropy", "leastConfidence", "random", "coreset")


def uncertainty(probs: np.ndarray, strategy: Strategy) -> np.ndarray:
    """Higher = more uncertain, one value per row of class probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    if strategy == "leastConfidence":
        return np.asarray(1.0 - p.max(axis=1), dtype=np.float64)
    if strategy == "margin":
        top2 = np.partition(p, -2, axis=1)[:, -2:] if p.shape[1] > 1 else np.c_[0 * p, p]
        return np.asarray(1.0 - (top2[:, 1] - top2[:, 0]), dtype=np.float64)
    if strategy == "entropy":
        return np.asarray(-np.sum(np.where(p > 0, p * np.log(np.clip(p, 1e-300, None)), 0.0),
                                  axis=1), dtype=np.float64)
    raise ValueError(f"{strategy!r} is not an uncertainty strategy")


def _k_center(features: np.ndarray, k: int, rng: np.random.Generator,
              labeled_features: np.ndarray | None) -> np.ndarray:
    """Greedy k-center: repeatedly take the item farthest from everything chosen or labeled."""
    x = np.asarray(features, dtype=np.float64)
    min_dist = np.full(len(x), np.inf)
    if labeled_features is not None and len(labeled_features):
        for start in range(0, len(labeled_features), 1024):  # bounded memory: n x 1024 at most
            block = np.asarray(labeled_features[start:start + 1024], dtype=np.float64)
            d = ((x[:, None, :] - block[None, :, :]) ** 2).sum(axis=2).min(axis=1)
            min_dist = np.minimum(min_dist, d)
        first = int(np.argmax(min_dist))
    else:
        first = int(rng.integers(len(x)))
    chosen = [first]
    min_dist = np.minimum(min_dist, ((x - x[first]) ** 2).sum(axis=1))
    while len(chosen) < k:
        nxt = int(np.argmax(min_dist))
        chosen.append(nxt)
        min_dist = np.minimum(min_dist, ((x - x[nxt]) ** 2).sum(axis=1))
    return np.asarray(chosen, dtype=np.int64)


def select_batch(
    strategy: Strategy,
    probs: np.ndarray,
    k: int,
    seed: int,
    *,
    candidates: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    labeled_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Row indices (into `probs`) of the next `k` items to label, most useful first.

    candidates: rows allowed (default all); coreset uses `embeddings` (default: the
    probabilities) and treats `labeled_embeddings` as already covered.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    pool = np.arange(len(probs)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    k = min(k, len(pool))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return np.sort(rng.choice(pool, size=k, replace=False))
    if strategy == "coreset":
        feats = probs if embeddings is None else embeddings
        return np.asarray(pool[_k_center(np.asarray(feats)[pool], k, rng, labeled_embeddings)])
    scores = uncertainty(np.asarray(probs)[pool], strategy)
    tiebreak = rng.permutation(len(pool))
    order = np.lexsort((tiebreak, -scores))  # last key is primary: most uncertain first
    return pool[order[:k]]
