"""Datasets and the elastic data order.

The data order depends only on (seed, epoch, samples consumed, global batch), never on the world
size: every step consumes the same GLOBAL batch, and the world size only decides how that batch
is cut between ranks. So a job resumed on a different number of nodes continues the exact sample
sequence it would have seen without the restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # float32, normalized, shape (N, *input_shape)
    y_train: np.ndarray  # int64 class indices
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]  # class index -> label as text
    mean: np.ndarray  # normalization, shape input_shape: x_norm = (x - mean) / std
    std: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        bunch = load_digits()  # bundled with scikit-learn: no download
        return bunch.images.astype(np.float32), bunch.target
    if name.endswith(".npz"):
        with np.load(name, allow_pickle=False) as f:
            return np.asarray(f["x"], dtype=np.float32), np.asarray(f["y"])
    raise ValueError(f"unknown dataset {name!r}: 'digits' or a path ending in .npz")


def load_dataset(name: str, seed: int, test_fraction: float) -> Dataset:
    """Load, split (stratified, seeded) and normalize with statistics of the training part only."""
    x, labels = _raw(name)
    if len(x) != len(labels) or len(x) < 2:
        raise ValueError(f"dataset {name!r}: x and y must have the same length >= 2")
    classes, y = np.unique(labels, return_inverse=True)
    idx = np.arange(len(x))
    try:
        train_idx, test_idx = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=y)
    except ValueError:
        # A class with a single sample cannot be stratified; a plain seeded split still works.
        log.warning("dataset %s: stratified split impossible, using a random split", name)
        train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed)
    x_train, x_test = x[train_idx], x[test_idx]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std).astype(np.float32)  # constant pixels (digits' borders)
    return Dataset(
        x_train=((x_train - mean) / std).astype(np.float32),
        y_train=y[train_idx].astype(np.int64),
        x_test=((x_test - mean) / std).astype(np.float32),
        y_test=y[test_idx].astype(np.int64),
        classes=tuple(str(c) for c in classes),
        mean=mean.astype(np.float32),
        std=std,
    )


def steps_per_epoch(n: int, global_batch: int) -> int:
    """Incomplete last batches are dropped: every step has exactly `global_batch` samples."""
    return n // global_batch


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """One GLOBAL order per epoch, the same on every rank and for every world size."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def rank_bounds(global_batch: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of this rank's share of a global batch.

    When the batch does not divide evenly the first `global_batch % world` ranks take one
    sample more; the trainer scales each rank's summed loss by world/global_batch, so DDP's
    gradient average is still the mean over the whole global batch.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world {world}")
    base, extra = divmod(global_batch, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def global_batches(
    n: int, seed: int, epoch: int, samples_consumed: int, global_batch: int
) -> Iterator[np.ndarray]:
    """The remaining global batches of `epoch`, skipping what was consumed before a restart."""
    order = epoch_permutation(n, seed, epoch)
    for start in range(samples_consumed, n - global_batch + 1, global_batch):
        yield order[start : start + global_batch]


def batch_indices(
    order: np.ndarray, samples_consumed: int, global_batch: int, rank: int, world: int
) -> np.ndarray:
    """This rank's share of the global batch that starts `samples_consumed` into `order`."""
    lo, hi = rank_bounds(global_batch, rank, world)
    return order[samples_consumed : samples_consumed + global_batch][lo:hi]


def rank_batches(
    n: int, seed: int, epoch: int, samples_consumed: int, global_batch: int, rank: int, world: int
) -> Iterator[np.ndarray]:
    """This rank's slice of each remaining global batch of `epoch` (what the trainer iterates)."""
    order = epoch_permutation(n, seed, epoch)
    for start in range(samples_consumed, n - global_batch + 1, global_batch):
        yield batch_indices(order, start, global_batch, rank, world)
