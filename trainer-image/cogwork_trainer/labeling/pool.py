"""The unlabeled pool, its shards, and the label files that refer to its items by id."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUNDLED = ("digits",)


@dataclass(frozen=True)
class Pool:
    ids: np.ndarray  # str item ids, unique
    x: np.ndarray  # float32 raw samples, shape (N, *sample_shape)
    classes: tuple[str, ...]  # class index -> label text
    # Ground truth, only for bundled demo datasets: it answers for the "humans" of a demo
    # (seed labels, validation labels, review rounds). Never used for model decisions.
    truth: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, item_ids: list[str]) -> np.ndarray:
        index = {item: pos for pos, item in enumerate(self.ids.tolist())}
        missing = [i for i in item_ids if i not in index]
        if missing:
            raise ValueError(f"{len(missing)} label(s) name items not in the pool, e.g. "
                             f"{missing[:3]}")
        return np.asarray([index[i] for i in item_ids], dtype=np.int64)


def load_pool(dataset: str | None = None, path: str | None = None, id_field: str = "id",
              classes: tuple[str, ...] | None = None,
              count_classes: Callable[[np.ndarray], int] | None = None) -> Pool:
    """A bundled dataset by name, or an .npz with array `x` (and `id_field`, else row numbers).

    classes: the label set (from the model) for pools that carry none.
    count_classes: when neither names the classes (a user's model that names none), how many
    there are given the samples (the model's outputs); they are "0".."k-1" then.
    """
    if dataset == "digits":
        from sklearn.datasets import load_digits  # late: a path pool never pays for sklearn

        bunch = load_digits()  # bundled with scikit-learn: no download
        ids = np.asarray([f"digits-{i:04d}" for i in range(len(bunch.target))])
        return Pool(ids=ids, x=bunch.images.astype(np.float32),
                    classes=tuple(str(c) for c in range(10)), truth=bunch.target.astype(np.int64))
    if dataset is not None:
        raise ValueError(f"unknown bundled dataset {dataset!r}: one of {', '.join(BUNDLED)}")
    if path is None:
        raise ValueError("the pool needs a bundled dataset or a path")
    with np.load(path, allow_pickle=False) as f:
        x = np.asarray(f["x"], dtype=np.float32)
        ids = (np.asarray(f[id_field]).astype(str) if id_field in f.files
               else np.asarray([str(i) for i in range(len(x))]))
        pool_classes = tuple(str(c) for c in f["classes"]) if "classes" in f.files else None
    if len(ids) != len(x):
        raise ValueError(f"{path}: {id_field} has {len(ids)} entries for {len(x)} samples")
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"{path}: item ids in {id_field!r} are not unique")
    chosen = pool_classes or classes
    if chosen is None and count_classes is not None:
        chosen = tuple(str(c) for c in range(count_classes(x)))
    if chosen is None:
        raise ValueError(f"{path}: no `classes` array and no model to take them from")
    return Pool(ids=ids, x=x, classes=chosen)


def shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count`: contiguous, sizes differ by at most one."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def read_labels(path: str | Path, classes: tuple[str, ...]) -> dict[str, int]:
    """item_id -> class index from a CSV with columns item_id,label (extra columns ignored)."""
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, int] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            label = row["label"]
            if label not in index:
                raise ValueError(f"{path}: label {label!r} of item {row['item_id']} is not one "
                                 f"of the classes {list(classes)}")
            out[row["item_id"]] = index[label]
    return out


def write_labels(path: str | Path, labels: dict[str, int], classes: tuple[str, ...]) -> None:
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "label"])
        for item, cls in labels.items():
            writer.writerow([item, classes[cls]])
    tmp.replace(path)
