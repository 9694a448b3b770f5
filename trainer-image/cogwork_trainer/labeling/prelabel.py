"""Pre-labeling: fit a model on the seed labels (if none is given) and score the pool in shards.

    python -m cogwork_trainer.labeling.prelabel fit               # -> $output/model.pt
    python -m cogwork_trainer.labeling.prelabel score [--shard-index I --shard-count N]

The model is a cogwork model.pt (a TrainJob's, or the one `fit` wrote) or the user's own
(user_model.py: a TorchScript file, a torch.export program, or `package.module:function`). With
an entrypoint this module runs in the user's image, copied there by install_scorer.py: what it
imports must stay numpy, torch and the standard library.

Under torchrun each pod is one rank: shard index/count default to RANK/WORLD_SIZE, so the
operator shards the pool with the TrainJob pod contract and nothing else. A shard is written
once, atomically, as `$output/shards/r<round>/probs-<i>-of-<n>.npz`; re-running a shard
overwrites it with the same content, so a restarted pod is harmless. Each review round has its
own directory: round r+1 scores with a retrained model and must never read round r's shards.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from cogwork_sdk.files import replace_atomically

from . import cli, known
from .config import LabelConfig, LabelConfigError, from_env
from .learner import Classifier, fit_classifier, load_classifier
from .pool import Pool, load_pool, shard_bounds
from .user_model import load_user_model

log = logging.getLogger("cogwork_trainer.labeling")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    start: int  # pool positions [start, stop)
    stop: int
    probs: np.ndarray  # float32, (stop - start, classes)
    seconds: float  # scoring time only (not model loading)
    model_version: str
    round: int = 0  # the review round it was scored for (its directory)

    @property
    def items_per_second(self) -> float:
        return (self.stop - self.start) / self.seconds if self.seconds > 0 else 0.0


class Scorer(Protocol):
    """A cogwork Classifier or a user's model (user_model.UserModel)."""

    def predict_proba(self, x_raw: np.ndarray, batch_size: int = ...) -> np.ndarray: ...


def shard_path(output: str | Path, round_: int, index: int, count: int) -> Path:
    return Path(output) / "shards" / f"r{round_}" / f"probs-{index:05d}-of-{count:05d}.npz"


def open_pool(cfg: LabelConfig, classes: tuple[str, ...] | None = None,
              count_classes: Callable[[np.ndarray], int] | None = None) -> Pool:
    return load_pool(cfg.pool_dataset, cfg.pool_path, cfg.id_field, classes, count_classes)


def load_scorer(cfg: LabelConfig) -> tuple[Scorer, Pool]:
    """The model the shards are scored with, and the pool with the label set it scores: a
    cogwork model's class names (a pool's own win), or for a user's model the pool's, else
    spec.model.classes, else "0".."k-1" for its k outputs."""
    if not cfg.user_model:
        model = load_classifier(cfg.scoring_model)
        return model, open_pool(cfg, model.classes)
    user = load_user_model(cfg)
    pool = open_pool(cfg, cfg.model_classes, count_classes=user.count_outputs)
    if cfg.model_classes and pool.classes != cfg.model_classes:
        log.warning("the pool's `classes` array %s replaces spec.model.classes",
                    list(pool.classes)[:10])
    return user.with_classes(pool.classes), pool


def scored_pool(cfg: LabelConfig, round_: int) -> Pool:
    """The pool with the label set round `round_` was scored with (for merge and collect, which
    never load a user's model: its class count comes from the round's shards)."""
    if cfg.pool_path is None:  # a bundled dataset names its classes
        return open_pool(cfg)
    if not cfg.user_model:  # a path pool may carry no class names: the model's are the set
        return open_pool(cfg, load_classifier(cfg.scoring_model).classes)
    return open_pool(cfg, cfg.model_classes,
                     count_classes=lambda _x: shard_outputs(cfg.output, round_))


def shard_outputs(output: str | Path, round_: int) -> int:
    """Classes per item in round `round_`'s shards (any one of them)."""
    found = sorted((Path(output) / "shards" / f"r{round_}").glob("probs-*-of-*.npz"))
    if not found:
        raise FileNotFoundError(f"no probability shards of round {round_} in {output}")
    with np.load(found[0], allow_pickle=False) as f:
        return int(f["probs"].shape[1])


def fit_seed_model(cfg: LabelConfig) -> Classifier:
    """The demo path without a TrainJob: train on seed (and reviewed) labels, save model.pt."""
    pool = open_pool(cfg)
    labels = known.resolve(cfg, pool).training()
    if not labels:
        raise LabelConfigError("no model given and no seed labels to fit one on")
    positions = np.asarray(list(labels), dtype=np.int64)
    model = fit_classifier(pool.x[positions], np.asarray(list(labels.values())), pool.classes,
                           cfg.random_seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    model.save(cfg.out / "model.pt")
    return model


def score_shard(pool: Pool, model: Scorer, index: int, count: int, batch_size: int,
                model_version: str, round_: int = 0) -> Shard:
    start, stop = shard_bounds(len(pool), index, count)
    t0 = time.perf_counter()
    probs = model.predict_proba(pool.x[start:stop], batch_size=batch_size)
    return Shard(index, count, start, stop, probs, time.perf_counter() - t0, model_version,
                 round_)


def write_shard(output: str | Path, shard: Shard) -> Path:
    path = shard_path(output, shard.round, shard.index, shard.count)
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez adds .npz to a name that does not end in it.
    return replace_atomically(path, lambda tmp: np.savez(
        tmp, start=shard.start, stop=shard.stop, probs=shard.probs, seconds=shard.seconds,
        model_version=shard.model_version, round=shard.round), suffix=".tmp.npz")


def read_shards(output: str | Path, count: int, pool_size: int, round_: int = 0
                ) -> tuple[np.ndarray, list[Shard]]:
    """Every shard of round `round_`'s run of `count`, checked to tile the pool exactly;
    (probs, shards)."""
    shards = []
    for index in range(count):
        path = shard_path(output, round_, index, count)
        if not path.is_file():
            raise FileNotFoundError(f"shard {index} of {count} of round {round_} is missing: "
                                    f"{path}")
        with np.load(path, allow_pickle=False) as f:
            shards.append(Shard(index, count, int(f["start"]), int(f["stop"]),
                                np.asarray(f["probs"]), float(f["seconds"]),
                                str(f["model_version"]), round_))
    expected = [shard_bounds(pool_size, i, count) for i in range(count)]
    if [(s.start, s.stop) for s in shards] != expected:
        raise ValueError("shards do not tile the pool (pool changed between scoring and merge?)")
    return np.concatenate([s.probs for s in shards]), shards


def _rank_default(name: str, fallback: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else fallback


def main(argv: list[str] | None = None) -> int:
    parser = cli.step_parser("cogwork_trainer.labeling.prelabel",
                                 "score: the shard's counts (progress for the operator)")
    parser.add_argument("step", choices=["fit", "score"])
    parser.add_argument("--shard-index", type=int, default=_rank_default("RANK", 0))
    parser.add_argument("--shard-count", type=int, default=_rank_default("WORLD_SIZE", 1))
    args = parser.parse_args(argv)
    try:
        cfg = from_env()
        if args.step == "fit":
            fit_seed_model(cfg)
            log.info("fitted a model on the seed labels: %s", cfg.out / "model.pt")
            return 0
        model, pool = load_scorer(cfg)
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        shard = score_shard(pool, model, args.shard_index, args.shard_count,
                            cfg.inference_batch, cfg.model_version, cfg.round)
    except (LabelConfigError, ValueError, OSError) as e:  # retrying cannot fix these
        log.error("cannot pre-label: %s", e)
        return 2
    path = write_shard(cfg.output, shard)
    log.info("round %d shard %d/%d: %d items in %.2fs (%.0f items/s) -> %s", shard.round,
             shard.index, shard.count, shard.stop - shard.start, shard.seconds,
             shard.items_per_second, path)
    if args.summary_to:
        Path(args.summary_to).write_text(json.dumps({
            "round": shard.round, "shard": shard.index, "shards": shard.count,
            "items": shard.stop - shard.start, "total": len(pool),
            "seconds": round(shard.seconds, 6)}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
