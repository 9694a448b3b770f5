"""Label-error detection: folds never see their own items; cleanlab finds injected noise."""

from __future__ import annotations

import numpy as np
import pytest
from cogwork_trainer.labeling.label_errors import (
    fold_splits,
    out_of_sample_probs,
    rank_label_issues,
)
from sklearn.datasets import load_digits


def leak_check(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int,
               seed: int) -> np.ndarray:
    """A fake model that fails if a test item is among its training items (x holds item ids)."""
    assert not set(x_train[:, 0].tolist()) & set(x_test[:, 0].tolist())
    probs = np.zeros((len(x_test), num_classes), dtype=np.float32)
    probs[:, seed % num_classes] = 1.0  # records which fold scored the item
    return probs


def test_folds_partition_the_items() -> None:
    y = np.repeat(np.arange(4), 10)
    splits = fold_splits(y, 5, seed=0)
    tested = np.concatenate([test for _, test in splits])
    assert sorted(tested.tolist()) == list(range(40))
    for train, test in splits:
        assert not set(train.tolist()) & set(test.tolist())
        assert np.bincount(y[test]).tolist() == [2, 2, 2, 2]  # stratified
    rare = np.r_[np.zeros(20, int), [1]]  # a class with fewer items than folds
    assert sorted(np.concatenate([t for _, t in fold_splits(rare, 5, 0)]).tolist()) == list(
        range(21))


@pytest.mark.parametrize("workers", [1, 2])
def test_every_item_is_scored_by_a_model_that_never_saw_it(workers: int) -> None:
    x = np.arange(60, dtype=np.float32)[:, None]
    y = np.arange(60) % 3
    probs = out_of_sample_probs(x, y, 5, folds=4, seed=10, workers=workers, fit_predict=leak_check)
    assert probs.shape == (60, 5)
    assert sorted(set(probs.argmax(axis=1).tolist())) == [0, 1, 2, 3]  # 4 folds, seeds 10..13


def test_too_few_items_for_the_folds_is_an_error() -> None:
    with pytest.raises(ValueError, match="folds"):
        out_of_sample_probs(np.zeros((3, 1)), np.zeros(3, int), 2, folds=5)


def test_finds_injected_label_noise_on_digits() -> None:
    digits = load_digits()
    rng = np.random.default_rng(0)
    keep = rng.permutation(len(digits.target))[:700]
    x, y = digits.images[keep].astype(np.float32), digits.target[keep].copy()
    flipped = rng.choice(len(y), 70, replace=False)
    y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    probs = out_of_sample_probs(x, y, 10, folds=4, seed=0)
    ids = [f"item-{i}" for i in range(len(y))]
    issues = rank_label_issues(ids, y, probs, [str(c) for c in range(10)])
    found = {int(i.item_id.split("-")[1]) for i in issues}
    precision = len(found & set(flipped.tolist())) / max(1, len(found))
    recall = len(found & set(flipped.tolist())) / len(flipped)
    assert precision >= 0.5 and recall >= 0.8, (precision, recall)
    # Confident learning is more precise than flagging every disagreement with the model.
    disagree = set(np.flatnonzero(probs.argmax(axis=1) != y).tolist())
    naive_precision = len(disagree & set(flipped.tolist())) / len(disagree)
    assert precision > naive_precision
    assert [i.rank for i in issues] == list(range(1, len(issues) + 1))
    top = issues[0]
    assert top.given_label == str(y[int(top.item_id.split("-")[1])])
    assert top.suggested_label != top.given_label and 0 <= top.quality < 0.5
