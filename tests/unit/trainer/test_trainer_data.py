from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from cogwork_trainer.data import (
    epoch_permutation,
    global_batches,
    load_dataset,
    rank_batches,
    rank_bounds,
    steps_per_epoch,
)


@pytest.mark.parametrize(("g", "world"), [(64, 1), (64, 2), (64, 3), (7, 2), (5, 5), (3, 4)])
def test_rank_bounds_tile_the_global_batch(g: int, world: int) -> None:
    bounds = [rank_bounds(g, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == g
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_world_size_trains_on_the_same_global_batches(world: int) -> None:
    n, g, seed = 1437, 64, 5
    for epoch in range(2):
        single = list(rank_batches(n, seed, epoch, 0, g, 0, 1))
        per_rank = [list(rank_batches(n, seed, epoch, 0, g, r, world)) for r in range(world)]
        assert len(single) == steps_per_epoch(n, g) == 22
        for step, batch in enumerate(single):
            joined = np.concatenate([per_rank[r][step] for r in range(world)])
            np.testing.assert_array_equal(joined, batch)  # same samples, same step
        # no sample twice within an epoch
        everything = np.concatenate(single)
        assert len(set(everything.tolist())) == len(everything) == 22 * g


def test_resume_skips_consumed_samples_whatever_the_new_world_size() -> None:
    n, g, seed, epoch = 1437, 64, 0, 3
    full = list(global_batches(n, seed, epoch, 0, g))
    resumed_w1 = list(rank_batches(n, seed, epoch, 7 * g, g, 0, 1))
    assert len(resumed_w1) == len(full) - 7
    for a, b in zip(resumed_w1, full[7:], strict=True):
        np.testing.assert_array_equal(a, b)
    resumed_w2 = [list(rank_batches(n, seed, epoch, 7 * g, g, r, 2)) for r in range(2)]
    for step, b in enumerate(full[7:]):
        np.testing.assert_array_equal(np.concatenate([resumed_w2[0][step], resumed_w2[1][step]]), b)


def test_epoch_order_is_deterministic_and_changes_per_epoch() -> None:
    np.testing.assert_array_equal(epoch_permutation(100, 1, 2), epoch_permutation(100, 1, 2))
    assert not np.array_equal(epoch_permutation(100, 1, 2), epoch_permutation(100, 1, 3))
    assert not np.array_equal(epoch_permutation(100, 1, 2), epoch_permutation(100, 2, 2))


def test_digits_split_is_stratified_seeded_and_normalized() -> None:
    ds = load_dataset("digits", seed=0, test_fraction=0.2)
    assert ds.x_train.shape == (1437, 8, 8) and ds.x_test.shape == (360, 8, 8)
    assert ds.classes == tuple(str(i) for i in range(10))
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # ~18 per class * 2, stratified
    assert abs(float(ds.x_train.mean())) < 1e-4
    again = load_dataset("digits", seed=0, test_fraction=0.2)
    np.testing.assert_array_equal(ds.y_test, again.y_test)
    other = load_dataset("digits", seed=1, test_fraction=0.2)
    assert not np.array_equal(ds.y_test, other.y_test)


def test_npz_dataset_with_text_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    y = np.array(["cat", "dog"] * 20)
    np.savez(tmp_path / "labels.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "labels.npz"), seed=0, test_fraction=0.25)
    assert ds.classes == ("cat", "dog")
    assert ds.x_train.shape == (30, 16) and ds.x_test.shape == (10, 16)
    assert np.bincount(ds.y_test).tolist() == [5, 5]
