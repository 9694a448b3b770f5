"""Between review rounds: bring people's labels back and write the next round's training set.

    python -m cogwork_trainer.labeling.review collect --round R [--summary-to PATH]
                                                      [--poll-seconds S]

Round R's merge wrote `review-tasks.json` (its review batch). `collect` waits until every item
of that batch has an answer, then writes `train-r<R+1>.npz`, what the operator's TrainJob trains
round R+1's model on; rescoring the pool with that model is round R+1.

Who answers:
  - Label Studio, when LABEL_STUDIO_API_KEY is set (with LABEL_STUDIO_URL and
    LABEL_STUDIO_PROJECT): annotations are merged into `human-labels.csv` on every poll and the
    step waits, polling, until each batch item is labeled or skipped. People take hours; a
    restarted pod starts over harmlessly. Label Studio errors exit 3 (the operator retries).
  - else a bundled dataset's hidden labels (the demo's annotators, as for seed.count).
  - else nobody: exit 2 (the CRD forbids this combination; checked again here).

The training set is the seed labels + every review label so far + round R's auto-accepted
labels, minus every validation item: those certify the next model, and a bound computed on
items it trained on would be optimistic. A person's label wins over an auto label. Running the
step twice gives the same files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import cli, known, outputs
from .config import LabelConfig, LabelConfigError, from_env
from .labelstudio import Annotations, LabelStudio, LabelStudioError, merge_human_labels
from .pool import Pool
from .prelabel import scored_pool

log = logging.getLogger("cogwork_trainer.labeling")

TASKS_FILE = "review-tasks.json"
LABELS_TABLE = "labels.csv"
POLL_SECONDS = 30.0
LABEL_STUDIO_ENV = ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_PROJECT")


class CollectError(ValueError):
    """The round's files or configuration are unusable; retrying cannot help (exit 2)."""


def training_set_name(round_: int) -> str:
    """The file round `round_`'s model trains on (written by round `round_ - 1`'s collect)."""
    return f"train-r{round_}.npz"


def review_batch(out: Path, round_: int) -> list[str]:
    """Item ids of round `round_`'s review batch, checked to be that round's."""
    path = out / TASKS_FILE
    if not path.is_file():
        raise CollectError(f"{path} is missing: round {round_}'s merge has not run")
    tasks = json.loads(path.read_text())
    rounds = {int(t["data"].get("round", round_)) for t in tasks}
    if rounds - {round_}:
        # A later merge overwrote the file: this round's batch is gone, and collecting the
        # wrong batch would feed one round's labels to another.
        raise CollectError(f"{path} holds the review batch of round(s) {sorted(rounds)}, "
                           f"not round {round_}")
    return [str(t["data"]["item_id"]) for t in tasks]


def label_studio_from_env(env: Mapping[str, str]) -> LabelStudio | None:
    """The Label Studio client when an API key is given; None: nobody is configured."""
    if not env.get("LABEL_STUDIO_API_KEY"):
        return None
    missing = [name for name in LABEL_STUDIO_ENV if not env.get(name)]
    if missing:
        raise CollectError(f"LABEL_STUDIO_API_KEY is set but {', '.join(missing)} is not")
    try:
        project = int(env["LABEL_STUDIO_PROJECT"])
    except ValueError as e:
        raise CollectError(f"LABEL_STUDIO_PROJECT: expected a project id, got "
                           f"{env['LABEL_STUDIO_PROJECT']!r}") from e
    return LabelStudio(env["LABEL_STUDIO_URL"], env["LABEL_STUDIO_API_KEY"], project)


def _pool_labels(pool: Pool, state: Annotations) -> dict[str, str]:
    """The annotations of this pool's items (a project may hold others), checked against the
    class names: a label merge cannot read would break every later round."""
    ids = set(pool.ids.tolist())
    classes = set(pool.classes)
    ours = {item: label for item, label in state.labels.items() if item in ids}
    wrong = {item: label for item, label in ours.items() if label not in classes}
    if wrong:
        item, label = next(iter(sorted(wrong.items())))
        raise CollectError(f"{len(wrong)} annotation(s) are not one of the classes "
                           f"{list(pool.classes)}, e.g. {label!r} on {item}: check the Label "
                           "Studio project's labeling config")
    return ours


def wait_for_label_studio(client: LabelStudio, pool: Pool, out: Path, batch: list[str],
                          round_: int, poll_seconds: float,
                          sleep: Callable[[float], None] = time.sleep) -> Annotations:
    """Poll until every batch item is labeled or skipped, saving what came back each time."""
    wanted = set(batch)
    while True:
        state = client.annotation_state()
        merge_human_labels(out / known.HUMAN_LABELS_FILE, _pool_labels(pool, state), round_)
        answered = wanted & (set(state.labels) | state.skipped)
        if len(answered) == len(wanted):
            return state
        log.info("round %d: %d of %d annotated; next look in %gs", round_, len(answered),
                 len(wanted), poll_seconds)
        sleep(poll_seconds)


def answer_from_hidden_labels(pool: Pool, out: Path, batch: list[str], round_: int) -> None:
    """The demo's annotators: a bundled dataset's ground truth answers for the batch."""
    truth = pool.truth
    if truth is None:
        raise CollectError("only a bundled dataset's hidden labels can answer for people")
    positions = pool.positions(batch).tolist()
    merge_human_labels(out / known.HUMAN_LABELS_FILE,
                       {item: pool.classes[int(truth[p])]
                        for item, p in zip(batch, positions, strict=True)}, round_)


def training_labels(cfg: LabelConfig, pool: Pool, labels: known.KnownLabels,
                    round_: int) -> dict[int, int]:
    """Pool position -> class for the next model: round `round_`'s auto labels, overruled by
    seed and review labels, never a validation item."""
    table = cfg.out / LABELS_TABLE
    if not table.is_file():
        raise CollectError(f"{table} is missing: round {round_}'s merge has not run")
    auto = [r for r in outputs.read_labels_table(table) if r.source == "auto"]
    stale = {r.round for r in auto} - {round_}
    if stale:
        raise CollectError(f"{table} holds auto labels of round(s) {sorted(stale)}, "
                           f"not round {round_}")
    index = {c: i for i, c in enumerate(pool.classes)}
    positions = pool.positions([r.item_id for r in auto]).tolist()
    train = {p: index[r.label] for p, r in zip(positions, auto, strict=True)}
    train.update(labels.training())
    for p in labels.validation:
        train.pop(p, None)
    return train


def collect(cfg: LabelConfig, round_: int, client: LabelStudio | None,
            poll_seconds: float = POLL_SECONDS,
            sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Bring back round `round_`'s review labels, write `train-r<round_+1>.npz`; the summary."""
    if round_ < 0:
        raise CollectError(f"--round: must be >= 0, got {round_}")
    out = cfg.out
    pool = scored_pool(cfg, round_)
    batch = review_batch(out, round_)
    pool.positions(batch)  # every task names an item of this pool, or the files are mixed up
    skipped: set[str] = set()
    if client is not None:
        skipped = wait_for_label_studio(client, pool, out, batch, round_, poll_seconds,
                                        sleep).skipped
    elif pool.truth is not None:
        answer_from_hidden_labels(pool, out, batch, round_)
    else:
        raise CollectError("nobody can answer the review batch: set LABEL_STUDIO_URL, "
                           "LABEL_STUDIO_API_KEY and LABEL_STUDIO_PROJECT (spec.sink."
                           "labelStudio), or use a bundled dataset whose labels answer")
    labels = known.resolve(cfg, pool)
    reviewed = {str(pool.ids[p]) for p in labels.human}
    train = training_labels(cfg, pool, labels, round_)
    positions = sorted(train)
    name = training_set_name(round_ + 1)
    outputs.write_dataset(out / name, pool.x[np.asarray(positions, dtype=np.int64)],
                          [pool.classes[train[p]] for p in positions],
                          [str(pool.ids[p]) for p in positions])
    return {
        "round": round_,
        "collected": sum(1 for item in batch if item in reviewed),
        "skipped": len(skipped & set(batch)),
        "humanLabeled": len(labels.validation) + len(labels.human),
        "humanBudgetLeft": cfg.human_budget_left(len(labels.human)),
        "trainingItems": len(positions),
        "trainingSet": name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = cli.step_parser("cogwork_trainer.labeling.review")
    parser.add_argument("step", choices=["collect"])
    parser.add_argument("--round", type=int, required=True, dest="round_",
                        help="the round whose review batch to collect (0-based)")
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS)
    args = parser.parse_args(argv)
    try:
        summary = collect(from_env(), args.round_, label_studio_from_env(os.environ),
                          args.poll_seconds)
    except LabelStudioError as e:
        log.error("%s", e)
        return 3  # Label Studio down or refusing: the operator retries
    except (LabelConfigError, ValueError, OSError) as e:  # CollectError is a ValueError
        log.error("cannot collect round %d: %s", args.round_, e)
        return 2
    log.info("collected: %s", summary)
    if args.summary_to:
        Path(args.summary_to).write_text(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
