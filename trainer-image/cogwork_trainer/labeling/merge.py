"""The final step: merge the probability shards and decide every item's fate.

    python -m cogwork_trainer.labeling.merge --shard-count N

certify a threshold on the validation labels -> auto-accept what clears it -> route the most
useful of the rest to review -> look for wrong labels among people's labels -> write the outputs
and `summary.json` (the operator copies it into status).

Reads round `round`'s shards (`shards/r<round>/`). The review batch never exceeds what is left of
`review.maxHumanLabels` after the labels earlier rounds brought back (`human-labels.csv`; seed
and validation labels do not count); the summary's `humanBudgetLeft` is that remainder, the
budget this round's batch was drawn from (null: unlimited).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import cli, known, outputs
from .active import select_batch
from .certify import (
    Certification,
    accept_mask,
    calibration_curve,
    certify_per_class,
    certify_threshold,
)
from .config import LabelConfig, LabelConfigError, from_env
from .label_errors import LabelIssue, out_of_sample_probs, rank_label_issues
from .pool import Pool
from .prelabel import Shard, read_shards, scored_pool

log = logging.getLogger("cogwork_trainer.labeling")


@dataclass(frozen=True)
class Decision:
    """What the merge decided, before anything is written."""

    probs: np.ndarray
    certification: Certification | dict[int, Certification]
    accepted: np.ndarray  # bool per pool item
    review: np.ndarray  # pool positions, most useful first
    issues: list[LabelIssue]
    calibration: list[dict[str, float]]


def certify(cfg: LabelConfig, probs: np.ndarray, labels: known.KnownLabels
            ) -> Certification | dict[int, Certification]:
    positions = np.asarray(list(labels.validation), dtype=np.int64)
    truth = np.asarray(list(labels.validation.values()), dtype=np.int64)
    val = probs[positions] if len(positions) else np.zeros((0, probs.shape[1]))
    scores, predicted = val.max(axis=1), val.argmax(axis=1)
    correct = predicted == truth
    if cfg.per_class:
        return certify_per_class(scores, predicted, correct, probs.shape[1],
                                 cfg.target_precision, cfg.confidence)
    return certify_threshold(scores, correct, cfg.target_precision, cfg.confidence)


def review_batch_size(cfg: LabelConfig, labels: known.KnownLabels) -> int:
    """The batch size, cut to the review budget that earlier rounds left."""
    left = cfg.human_budget_left(len(labels.human))
    return cfg.review_batch if left is None else min(cfg.review_batch, left)


def decide(cfg: LabelConfig, pool: Pool, probs: np.ndarray, labels: known.KnownLabels) -> Decision:
    scores, predicted = probs.max(axis=1), probs.argmax(axis=1)
    certification = certify(cfg, probs, labels)
    labeled = np.zeros(len(pool), dtype=bool)
    labeled[labels.positions()] = True
    accepted = accept_mask(scores, predicted, certification) & ~labeled
    candidates = np.flatnonzero(~accepted & ~labeled)
    review = select_batch(cfg.strategy, probs, review_batch_size(cfg, labels),
                          cfg.random_seed + cfg.round,
                          candidates=candidates,
                          labeled_embeddings=probs[labeled] if cfg.strategy == "coreset" else None)
    issues: list[LabelIssue] = []
    people = labels.all()
    if cfg.label_errors and len(people) >= 2 * cfg.folds:
        positions = np.asarray(list(people), dtype=np.int64)
        given = np.asarray(list(people.values()), dtype=np.int64)
        oos = out_of_sample_probs(pool.x[positions], given, len(pool.classes), folds=cfg.folds,
                                  seed=cfg.random_seed, workers=cfg.fold_workers)
        issues = rank_label_issues(pool.ids[positions].tolist(), given, oos, pool.classes)
    val_pos = np.asarray(list(labels.validation), dtype=np.int64)
    val_truth = np.asarray(list(labels.validation.values()), dtype=np.int64)
    curve = calibration_curve(scores[val_pos], predicted[val_pos] == val_truth, cfg.confidence,
                              pool_scores=scores) if len(val_pos) else []
    return Decision(probs, certification, accepted, review, issues, curve)


def _certification_summary(cert: Certification | dict[int, Certification]) -> dict[str, Any]:
    if isinstance(cert, Certification):
        return {"certified": cert.certified, "threshold": cert.threshold,
                "lowerBound": cert.lower_bound, "reason": cert.reason}
    certified = {str(c): v for c, v in cert.items() if v.certified}
    return {
        "certified": bool(certified),
        "threshold": None,
        "lowerBound": min((v.lower_bound for v in cert.values() if v.certified), default=0.0),
        "perClass": {str(c): {"threshold": v.threshold, "lowerBound": v.lower_bound}
                     for c, v in cert.items()},
        "reason": f"{len(certified)} of {len(cert)} classes certified",
    }


def write_outputs(cfg: LabelConfig, pool: Pool, labels: known.KnownLabels, decision: Decision,
                  shards: list[Shard]) -> dict[str, Any]:
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    scores = decision.probs.max(axis=1)
    predicted = decision.probs.argmax(axis=1)
    rows = [outputs.LabelRow(str(pool.ids[p]), pool.classes[c], "seed", None, cfg.model_version,
                             cfg.round) for p, c in labels.seed.items()]
    rows += [outputs.LabelRow(str(pool.ids[p]), pool.classes[c], "human", None, cfg.model_version,
                              cfg.round) for p, c in labels.validation.items()]
    rows += [outputs.LabelRow(str(pool.ids[p]), pool.classes[c], "human", None, cfg.model_version,
                              labels.human_round.get(p, cfg.round))
             for p, c in labels.human.items()]
    rows += [outputs.LabelRow(str(pool.ids[p]), pool.classes[predicted[p]], "auto",
                              float(scores[p]), cfg.model_version, cfg.round)
             for p in np.flatnonzero(decision.accepted)]
    outputs.write_labels_table(out / "labels.csv", rows)
    positions = pool.positions([r.item_id for r in rows])
    outputs.write_dataset(out / "dataset.npz", pool.x[positions], [r.label for r in rows],
                          [r.item_id for r in rows])
    tasks = [outputs.review_task(str(pool.ids[p]), pool.x[p], decision.probs[p], pool.classes,
                                 cfg.model_version, cfg.round) for p in decision.review]
    outputs.write_json(out / "review-tasks.json", tasks)
    outputs.write_issues(out / "label-issues.csv", decision.issues)
    outputs.write_json(out / "calibration.json", decision.calibration)
    scoring = sum(s.seconds for s in shards)
    summary = {
        "total": len(pool),
        "predicted": int(sum(s.stop - s.start for s in shards)),
        "autoAccepted": int(decision.accepted.sum()),
        "routedToReview": len(decision.review),
        "humanLabeled": len(labels.validation) + len(labels.human),
        "humanBudgetLeft": cfg.human_budget_left(len(labels.human)),
        "seedLabeled": len(labels.seed),
        "flaggedErrors": len(decision.issues),
        "coverage": float(decision.accepted.sum() / len(pool)) if len(pool) else 0.0,
        "itemsPerSecond": float(len(pool) / scoring) if scoring > 0 else None,
        "round": cfg.round,
        "modelVersion": cfg.model_version,
        **_certification_summary(decision.certification),
    }
    outputs.write_json(out / "summary.json", summary)
    return summary


def run(cfg: LabelConfig, shard_count: int) -> dict[str, Any]:
    pool = scored_pool(cfg, cfg.round)
    probs, shards = read_shards(cfg.output, shard_count, len(pool), cfg.round)
    if probs.shape[1] != len(pool.classes):
        raise ValueError(f"the model predicts {probs.shape[1]} classes, the pool has "
                         f"{len(pool.classes)}")
    labels = known.resolve(cfg, pool)
    return write_outputs(cfg, pool, labels, decide(cfg, pool, probs, labels), shards)


TERMINATION_MESSAGE_LIMIT = 4096  # what a kubelet keeps of a termination message


def compact_summary(summary: dict[str, Any]) -> str:
    """The summary as one JSON line that fits a termination message: the operator reads it from
    the pod's status, never from the volume. Per-class detail goes first when it does not fit."""
    text = json.dumps(summary, separators=(",", ":"))
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        text = json.dumps({k: v for k, v in summary.items() if k != "perClass"},
                          separators=(",", ":"))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = cli.step_parser("cogwork_trainer.labeling.merge")
    parser.add_argument("--shard-count", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        summary = run(from_env(), args.shard_count)
    except (LabelConfigError, ValueError, OSError) as e:
        log.error("cannot merge: %s", e)
        return 2
    log.info("merged: %s", {k: v for k, v in summary.items() if k != "perClass"})
    if args.summary_to:
        Path(args.summary_to).write_text(compact_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
