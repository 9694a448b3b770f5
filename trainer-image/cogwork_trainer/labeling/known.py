"""Labels people gave: seed labels, held-out validation labels, and review rounds.

Seed labels may train the model; validation labels never do (they certify it, and a bound
computed on training items would be optimistic). For bundled demo datasets the "people" are the
hidden ground truth, drawn in a seeded order: seed items first, then validation items.

`human-labels.csv` (item_id,label[,round]) accumulates what the review rounds brought back
(review.py collect, labelstudio.py pull); `round` is the round an item's label came back in,
empty in files written before rounds existed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import LabelConfig
from .pool import Pool, read_labels

HUMAN_LABELS_FILE = "human-labels.csv"  # what review rounds brought back (Label Studio)


@dataclass(frozen=True)
class KnownLabels:
    seed: dict[int, int]  # pool position -> class index
    validation: dict[int, int]
    human: dict[int, int]  # from review rounds
    human_round: dict[int, int] = field(default_factory=dict)  # round each came back in, if known

    def positions(self) -> np.ndarray:
        return np.asarray(sorted({*self.seed, *self.validation, *self.human}), dtype=np.int64)

    def training(self) -> dict[int, int]:
        """What a model may learn from: seeds and reviewed items, never validation items."""
        return {**self.seed, **self.human}

    def all(self) -> dict[int, int]:
        return {**self.seed, **self.human, **self.validation}


def _from_file(pool: Pool, path: str | Path) -> dict[int, int]:
    labels = read_labels(path, pool.classes)
    positions = pool.positions(list(labels))
    return dict(zip(positions.tolist(), labels.values(), strict=True))


def read_human_rounds(path: Path) -> dict[str, int]:
    """item_id -> the review round its label came back in (items without one are left out)."""
    with open(path, newline="") as f:
        return {row["item_id"]: int(row["round"]) for row in csv.DictReader(f)
                if (row.get("round") or "").strip()}


def resolve(cfg: LabelConfig, pool: Pool) -> KnownLabels:
    seed: dict[int, int] = {}
    validation: dict[int, int] = {}
    if cfg.seed_count or cfg.validation_budget:
        if pool.truth is None:
            raise ValueError("seed.count / humanBudget need a bundled dataset")
        if cfg.seed_count + cfg.validation_budget > len(pool):
            raise ValueError(f"seed.count + humanBudget exceed the pool of {len(pool)} items")
        order = np.random.default_rng([cfg.random_seed, 7]).permutation(len(pool)).tolist()
        seed = {p: int(pool.truth[p]) for p in order[:cfg.seed_count]}
        validation = {p: int(pool.truth[p])
                      for p in order[cfg.seed_count:cfg.seed_count + cfg.validation_budget]}
    if cfg.seed_path:
        seed.update(_from_file(pool, cfg.seed_path))
    if cfg.validation_path:
        validation.update(_from_file(pool, cfg.validation_path))
    overlap = set(seed) & set(validation)
    if overlap:
        raise ValueError(f"{len(overlap)} item(s) are both seed and validation labels: "
                         "validation labels must be held out")
    human_file = cfg.out / HUMAN_LABELS_FILE
    human: dict[int, int] = {}
    human_round: dict[int, int] = {}
    if human_file.is_file():
        human = _from_file(pool, human_file)
        rounds = read_human_rounds(human_file)
        human_round = dict(zip(pool.positions(list(rounds)).tolist(), rounds.values(),
                               strict=True))
    for pos in set(human) & set(validation):  # a reviewed validation item stays held out
        del human[pos]
    for pos in set(human) & set(seed):  # a reviewer's correction of a seed label wins
        del seed[pos]
    return KnownLabels(seed=seed, validation=validation, human=human,
                       human_round={p: r for p, r in human_round.items() if p in human})
