"""Sharded pre-labeling and the merge, end to end on digits (in-process, no cluster)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cogwork_trainer.labeling import known, merge, prelabel
from cogwork_trainer.labeling.config import LabelConfigError, parse
from cogwork_trainer.labeling.known import HUMAN_LABELS_FILE
from cogwork_trainer.labeling.learner import load_classifier
from cogwork_trainer.labeling.outputs import read_labels_table
from cogwork_trainer.labeling.pool import load_pool, shard_bounds, write_labels


def config(out: Path, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pool": {"dataset": "digits"}, "modelVersion": "v1", "output": str(out),
        "seed": {"count": 400},
        "autoAccept": {"targetPrecision": "0.95", "confidence": "0.95",
                       "validation": {"humanBudget": 400}},
        "review": {"strategy": "margin", "batchSize": 50},
        "labelErrors": {"enabled": True, "folds": 3},
    }
    doc.update(overrides)
    return doc


def run_job(doc: dict[str, Any], shards: int = 3) -> dict[str, Any]:
    cfg = parse(doc)
    prelabel.fit_seed_model(cfg)
    model = load_classifier(cfg.scoring_model)
    pool = prelabel.open_pool(cfg, model.classes)
    for i in range(shards):
        prelabel.write_shard(cfg.output, prelabel.score_shard(pool, model, i, shards, 256, "v1",
                                                              cfg.round))
    return merge.run(cfg, shards)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("labeljob")
    return out, run_job(config(out))


def test_shards_tile_the_pool() -> None:
    bounds = [shard_bounds(10, i, 3) for i in range(3)]
    assert bounds == [(0, 4), (4, 7), (7, 10)]
    with pytest.raises(ValueError):
        shard_bounds(10, 3, 3)


def test_summary_counts_add_up(job: tuple[Path, dict[str, Any]]) -> None:
    _, summary = job
    assert summary["total"] == summary["predicted"] == 1797
    assert summary["seedLabeled"] == 400 and summary["humanLabeled"] == 400
    assert summary["certified"] is True and summary["threshold"] is not None
    assert summary["lowerBound"] >= 0.95
    assert summary["autoAccepted"] > 500  # a usable share of the 997 unlabeled items
    assert summary["routedToReview"] == 50
    assert summary["coverage"] == pytest.approx(summary["autoAccepted"] / 1797)
    assert summary["itemsPerSecond"] > 0


def test_labels_table_sources_and_auto_label_quality(job: tuple[Path, dict[str, Any]]) -> None:
    out, summary = job
    rows = read_labels_table(out / "labels.csv")
    sources = [r.source for r in rows]
    assert sources.count("seed") == 400 and sources.count("human") == 400
    assert sources.count("auto") == summary["autoAccepted"]
    assert len({r.item_id for r in rows}) == len(rows)  # each item labeled once
    pool = load_pool("digits")
    truth = dict(zip(pool.ids.tolist(), pool.truth.tolist(), strict=True))  # type: ignore[union-attr]
    auto = [r for r in rows if r.source == "auto"]
    precision = np.mean([int(r.label) == truth[r.item_id] for r in auto])
    assert precision >= 0.95
    assert all(r.confidence is not None and r.confidence >= summary["threshold"] for r in auto)
    assert all(r.model_version == "v1" and r.round == 0 for r in rows)
    with np.load(out / "dataset.npz") as data:  # a TrainJob can train on it (spec.data.path)
        assert data["x"].shape == (len(rows), 8, 8) and len(data["y"]) == len(rows)


def test_review_batch_is_label_studio_tasks_of_unlabeled_items(
        job: tuple[Path, dict[str, Any]]) -> None:
    out, summary = job
    tasks = json.loads((out / "review-tasks.json").read_text())
    labeled = {r.item_id for r in read_labels_table(out / "labels.csv")}
    assert len(tasks) == 50
    for task in tasks:
        assert task["data"]["item_id"] not in labeled
        assert task["data"]["image"].startswith("data:image/png;base64,")
        prediction = task["predictions"][0]
        assert prediction["model_version"] == "v1"
        assert prediction["score"] < summary["threshold"]  # only items not auto-accepted
        assert prediction["result"][0]["value"]["choices"][0] in [str(c) for c in range(10)]
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert np.median(scores) < 0.9  # margin sends doubtful items, not random ones


def test_issues_and_calibration_are_written(job: tuple[Path, dict[str, Any]]) -> None:
    out, summary = job
    with open(out / "label-issues.csv", newline="") as f:
        issues = list(csv.DictReader(f))
    assert len(issues) == summary["flaggedErrors"]
    curve = json.loads((out / "calibration.json").read_text())
    assert curve and {"threshold", "coverage", "precision", "lowerBound",
                      "poolCoverage"} <= set(curve[0])


def test_uncertifiable_target_accepts_nothing(tmp_path: Path) -> None:
    doc = config(tmp_path, seed={"count": 300}, labelErrors={"enabled": False},
                 autoAccept={"targetPrecision": "0.999", "confidence": "0.95",
                             "validation": {"humanBudget": 100}})
    summary = run_job(doc, shards=2)
    assert summary["certified"] is False and summary["autoAccepted"] == 0
    assert summary["threshold"] is None and "at least" in summary["reason"]
    rows = read_labels_table(tmp_path / "labels.csv")
    assert not [r for r in rows if r.source == "auto"]


def test_human_labels_from_review_join_the_table(tmp_path: Path) -> None:
    pool = load_pool("digits")
    assert pool.truth is not None
    doc = config(tmp_path, labelErrors={"enabled": False}, round=1)
    labels = known.resolve(parse(doc), pool)
    # Reviewed: 5 unlabeled items, one seed item (corrected to a wrong class on purpose: the
    # reviewer wins) and one validation item (stays a held-out validation label).
    unlabeled = [p for p in range(len(pool)) if p not in labels.all()][:5]
    seed_item, val_item = next(iter(labels.seed)), next(iter(labels.validation))
    reviewed = {str(pool.ids[p]): int(pool.truth[p]) for p in [*unlabeled, val_item]}
    reviewed[str(pool.ids[seed_item])] = (int(pool.truth[seed_item]) + 1) % 10
    write_labels(tmp_path / HUMAN_LABELS_FILE, reviewed, pool.classes)
    summary = run_job(doc, shards=1)
    assert summary["humanLabeled"] == 400 + 6 and summary["seedLabeled"] == 399
    rows = {r.item_id: r for r in read_labels_table(tmp_path / "labels.csv")}
    assert len(rows) == sum(1 for _ in read_labels_table(tmp_path / "labels.csv"))
    for item, cls in reviewed.items():
        assert rows[item].source == "human" and rows[item].label == str(cls)
        assert rows[item].round == 1


def test_a_missing_shard_stops_the_merge(tmp_path: Path) -> None:
    cfg = parse(config(tmp_path))
    with pytest.raises(FileNotFoundError, match="shard 0 of 2 of round 0"):
        merge.run(cfg, 2)


@pytest.mark.parametrize(("change", "message"), [
    ({"review": {"strategy": "vibes"}}, "review.strategy"),
    ({"pool": {}}, "pool"),
    ({"autoAccept": {"targetPrecision": "1.2"}}, "targetPrecision"),
    ({"pool": {"path": "x.npz"}}, "bundled dataset"),
])
def test_bad_configuration_names_the_field(tmp_path: Path, change: dict[str, Any],
                                           message: str) -> None:
    with pytest.raises(LabelConfigError, match=message):
        parse(config(tmp_path, **change))
