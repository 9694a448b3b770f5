"""Label-error detection: cleanlab on OUT-OF-SAMPLE probabilities.

cleanlab's confident learning is only sound when each item's probabilities come from a model
that never saw that item's label (a model that memorized a wrong label is confident in it), so
we fit K models on K-1 folds each and score the held-out fold. Folds are independent and run in
parallel processes. Ranking uses cleanlab's batched LabelInspector, which streams over the items
and so does not blow up memory with many classes (cleanlab issue #53).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], np.ndarray]


def fold_splits(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold when every class has at least `folds` items, plain K-fold otherwise."""
    counts = np.bincount(y)
    splitter: StratifiedKFold | KFold
    if counts[counts > 0].min() >= folds:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y)]


def out_of_sample_probs(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    workers: int = 1,
    fit_predict: FitPredict | None = None,
) -> np.ndarray:
    """Probabilities for every item from a model trained without it (K-fold).

    fit_predict defaults to the learner's MLP. workers > 1 runs folds in separate processes
    (spawned: forking a process that already used torch's thread pools can deadlock);
    `fit_predict` must then be a module-level function.
    """
    if fit_predict is None:
        from .learner import fit_predict_proba  # late: torch only where models are trained

        fit_predict = fit_predict_proba
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if len(y) < folds:
        raise ValueError(f"{len(y)} labeled items cannot be split into {folds} folds")
    y = np.asarray(y, dtype=np.int64)
    splits = fold_splits(y, folds, seed)
    jobs = [(x[train], y[train], x[test], num_classes, seed + i)
            for i, (train, test) in enumerate(splits)]
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, folds), mp_context=context) as pool:
            results = list(pool.map(fit_predict, *zip(*jobs, strict=True)))
    else:
        results = [fit_predict(*job) for job in jobs]
    probs = np.zeros((len(y), num_classes), dtype=np.float32)
    for (_, test), fold_probs in zip(splits, results, strict=True):
        probs[test] = fold_probs
    return probs


@dataclass(frozen=True)
class LabelIssue:
    item_id: str
    given_label: str
    suggested_label: str
    quality: float  # cleanlab's self-confidence label quality: lower = more likely wrong
    rank: int  # 1 = most likely wrong

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_issue_indices(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices cleanlab flags as likely mislabeled, most likely first."""
    from cleanlab.experimental.label_issues_batched import find_label_issues_batched

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(find_label_issues_batched(labels=labels, pred_probs=probs, n_jobs=1,
                                                verbose=False), dtype=np.int64)


def label_quality(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Self-confidence: the out-of-sample probability of the given label."""
    return np.asarray(np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels],
                      dtype=np.float64)


def rank_label_issues(
    item_ids: Sequence[str], labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> list[LabelIssue]:
    """The flagged items as a ranked table (item, given label, suggested label, quality)."""
    labels = np.asarray(labels, dtype=np.int64)
    flagged = find_issue_indices(labels, probs)
    quality = label_quality(labels, probs)
    suggested = np.asarray(probs).argmax(axis=1)
    return [LabelIssue(item_id=str(item_ids[i]), given_label=classes[labels[i]],
                       suggested_label=classes[suggested[i]], quality=float(quality[i]),
                       rank=rank)
            for rank, i in enumerate(flagged, start=1)]
