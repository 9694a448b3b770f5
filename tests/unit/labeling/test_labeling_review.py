"""Review rounds: the human-label budget, per-round shards, and `review collect` (digits)."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cogwork_trainer.labeling import known, merge, prelabel, review
from cogwork_trainer.labeling.config import LabelConfig, LabelConfigError, parse
from cogwork_trainer.labeling.labelstudio import LabelStudio, merge_human_labels
from cogwork_trainer.labeling.learner import load_classifier
from cogwork_trainer.labeling.outputs import LabelRow, read_labels_table, write_labels_table
from cogwork_trainer.labeling.pool import Pool, load_pool
from fake_labelstudio import TOKEN, FakeLabelStudio

BATCH, BUDGET = 40, 60  # round 0 routes 40, round 1 only the 20 the budget has left


def config(out: Path, round_: int = 0, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pool": {"dataset": "digits"}, "modelVersion": "v1", "output": str(out),
        "seed": {"count": 300},
        "autoAccept": {"targetPrecision": "0.95", "confidence": "0.95",
                       "validation": {"humanBudget": 300}},
        "review": {"strategy": "margin", "batchSize": BATCH, "maxHumanLabels": BUDGET,
                   "maxRounds": 3},
        "labelErrors": {"enabled": False},
        "round": round_,
    }
    doc.update(overrides)
    return doc


def score_and_merge(cfg: LabelConfig, shards: int = 2) -> dict[str, Any]:
    model = load_classifier(cfg.scoring_model)
    pool = prelabel.open_pool(cfg, model.classes)
    for i in range(shards):
        prelabel.write_shard(cfg.output, prelabel.score_shard(pool, model, i, shards, 512,
                                                              cfg.model_version, cfg.round))
    return merge.run(cfg, shards)


def batch_ids(out: Path) -> list[str]:
    return [t["data"]["item_id"] for t in json.loads((out / "review-tasks.json").read_text())]


def human_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / known.HUMAN_LABELS_FILE, newline="") as f:
        return {row["item_id"]: row for row in csv.DictReader(f)}


def item_ids(pool: Pool, positions: Iterable[int]) -> set[str]:
    return {str(pool.ids[p]) for p in positions}


def dataset(path: Path) -> dict[str, str]:
    with np.load(path) as data:
        return dict(zip(data["ids"].tolist(), data["y"].tolist(), strict=True))


@pytest.fixture(scope="module")
def digits() -> Pool:
    return load_pool("digits")


@pytest.fixture(scope="module")
def round0(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Round 0 scored and merged (model fitted on the seeds), nothing collected yet."""
    out = tmp_path_factory.mktemp("rounds")
    cfg = parse(config(out))
    prelabel.fit_seed_model(cfg)
    return out, score_and_merge(cfg)


def test_review_settings_parse_and_are_validated(tmp_path: Path) -> None:
    cfg = parse(config(tmp_path))
    assert (cfg.max_human_labels, cfg.max_rounds) == (BUDGET, 3)
    assert cfg.human_budget_left(45) == 15 and cfg.human_budget_left(99) == 0
    unlimited = parse(config(tmp_path, review={"batchSize": 10}))
    assert (unlimited.max_human_labels, unlimited.max_rounds) == (None, 1)
    assert unlimited.human_budget_left(10_000) is None
    for bad, field in (({"maxRounds": 0}, "review.maxRounds"),
                       ({"maxHumanLabels": -1}, "review.maxHumanLabels"),
                       ({"maxHumanLabels": "lots"}, "review.maxHumanLabels")):
        with pytest.raises(LabelConfigError, match=field):
            parse(config(tmp_path, review=bad))


def test_shards_are_kept_per_round(tmp_path: Path) -> None:
    probs = {r: np.full((10, 3), r + 1, dtype=np.float32) / 3 for r in (0, 1)}
    for r in (0, 1):
        prelabel.write_shard(tmp_path, prelabel.Shard(0, 1, 0, 10, probs[r], 0.1, "v", r))
    assert prelabel.shard_path(tmp_path, 1, 0, 1) == (
        tmp_path / "shards" / "r1" / "probs-00000-of-00001.npz")
    for r in (0, 1):
        read, shards = prelabel.read_shards(tmp_path, 1, 10, r)
        np.testing.assert_array_equal(read, probs[r])
        assert shards[0].round == r
    with pytest.raises(FileNotFoundError, match="round 2"):
        prelabel.read_shards(tmp_path, 1, 10, 2)


@pytest.mark.parametrize(("budget", "reviewed", "routed"), [
    (None, 30, 50),  # no cap: the whole batch
    (60, 30, 30),  # 30 left
    (60, 60, 0),  # spent: nothing goes to people
    (60, 75, 0),  # overspent (labels beyond the batches) is still nothing, not negative
])
def test_review_batch_is_cut_to_the_budget_left(tmp_path: Path, digits: Pool,
                                                budget: int | None, reviewed: int,
                                                routed: int) -> None:
    review_cfg: dict[str, Any] = {"batchSize": 50}
    if budget is not None:
        review_cfg["maxHumanLabels"] = budget
    cfg = parse(config(tmp_path, review=review_cfg, seed={"count": 20},
                       autoAccept={"validation": {"humanBudget": 200}}))
    base = known.resolve(cfg, digits)
    # Review labels on items outside seed/validation; validation labels must not count.
    free = [p for p in range(len(digits)) if p not in base.all()]
    assert digits.truth is not None
    labels = known.KnownLabels(base.seed, base.validation,
                               {p: int(digits.truth[p]) for p in free[:reviewed]})
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=len(digits)).astype(np.float32)
    decision = merge.decide(cfg, digits, probs, labels)
    assert len(decision.review) == routed
    assert not set(decision.review.tolist()) & set(labels.positions().tolist())


def test_collect_with_the_demo_annotators(round0: tuple[Path, dict[str, Any]],
                                         digits: Pool) -> None:
    out, summary = round0
    assert summary["routedToReview"] == BATCH and summary["humanBudgetLeft"] == BUDGET
    cfg = parse(config(out))
    batch = batch_ids(out)
    before = known.resolve(cfg, digits)
    auto = {r.item_id: r.label for r in read_labels_table(out / "labels.csv")
            if r.source == "auto"}
    assert auto and before.human == {}

    collected = review.collect(cfg, 0, None)

    truth = {str(i): str(t) for i, t in zip(digits.ids.tolist(), digits.truth.tolist(),  # type: ignore[union-attr]
                                             strict=True)}
    rows = human_rows(out)
    assert sorted(rows) == sorted(batch)  # exactly the batch, answered correctly, in round 0
    assert all(row["label"] == truth[item] and row["round"] == "0" for item, row in rows.items())
    train = dataset(out / "train-r1.npz")
    seed, validation = item_ids(digits, before.seed), item_ids(digits, before.validation)
    assert not set(train) & validation  # validation labels stay held out
    assert set(train) == seed | set(batch) | set(auto)
    assert all(train[i] == truth[i] for i in seed | set(batch))
    assert all(train[i] == label for i, label in auto.items())
    assert collected == {"round": 0, "collected": BATCH, "skipped": 0,
                         "humanLabeled": 300 + BATCH, "humanBudgetLeft": BUDGET - BATCH,
                         "trainingItems": len(train), "trainingSet": "train-r1.npz"}

    # Idempotent: a second run (a restarted pod) writes the same files.
    human_text = (out / known.HUMAN_LABELS_FILE).read_text()
    assert review.collect(cfg, 0, None) == collected
    assert (out / known.HUMAN_LABELS_FILE).read_text() == human_text
    assert dataset(out / "train-r1.npz") == train

    # Round 1 rescored its own shards; only the 20 labels left in the budget go to people, and
    # the round-0 answers keep the round they came back in.
    cfg1 = parse(config(out, round_=1))
    summary1 = score_and_merge(cfg1)
    assert (out / "shards" / "r0").is_dir() and (out / "shards" / "r1").is_dir()
    assert summary1["routedToReview"] == BUDGET - BATCH
    assert summary1["humanBudgetLeft"] == BUDGET - BATCH
    assert not set(batch_ids(out)) & set(batch)
    table = {r.item_id: r for r in read_labels_table(out / "labels.csv")}
    assert all(table[i].source == "human" and table[i].round == 0 for i in batch)
    with pytest.raises(review.CollectError, match="round"):
        review.collect(cfg, 0, None)  # round 0's batch was replaced by round 1's


def small_round(out: Path, digits: Pool, batch_size: int = 5,
                **overrides: Any) -> tuple[LabelConfig, list[str], dict[str, str]]:
    """Round 0's files as its merge leaves them, without a model: a review batch and a labels
    table with a few auto labels (deliberately one wrong, as a model's can be)."""
    cfg = parse(config(out, seed={"count": 20}, autoAccept={"validation": {"humanBudget": 20}},
                       **overrides))
    labels = known.resolve(cfg, digits)
    assert digits.truth is not None
    free = [p for p in range(len(digits)) if p not in labels.all()]
    batch = [str(digits.ids[p]) for p in free[:batch_size]]
    auto = {str(digits.ids[p]): str(digits.truth[p]) for p in free[batch_size:batch_size + 8]}
    first = next(iter(auto))
    auto[first] = str((int(auto[first]) + 1) % 10)
    rows = [LabelRow(item, label, "auto", 0.99, "v1", 0) for item, label in auto.items()]
    # A stale auto label on a validation item (the validation set changed): never trained on.
    rows.append(LabelRow(str(digits.ids[next(iter(labels.validation))]), "0", "auto", 0.99,
                         "v1", 0))
    rows += [LabelRow(str(digits.ids[p]), str(c), "seed", None, "v1", 0)
             for p, c in labels.seed.items()]
    write_labels_table(out / "labels.csv", rows)
    tasks = [{"data": {"item_id": item, "round": 0}} for item in batch]
    (out / "review-tasks.json").write_text(json.dumps(tasks))
    return cfg, batch, auto


def test_a_persons_label_beats_the_auto_label(tmp_path: Path, digits: Pool) -> None:
    cfg, batch, auto = small_round(tmp_path, digits)
    item = next(iter(auto))  # the wrong auto label; a reviewer corrected it in Label Studio
    truth = str(digits.truth[digits.positions([item])[0]])  # type: ignore[index]
    merge_human_labels(tmp_path / known.HUMAN_LABELS_FILE, {item: truth}, 0)
    summary = review.collect(cfg, 0, None)
    train = dataset(tmp_path / "train-r1.npz")
    assert train[item] == truth != auto[item]
    assert not item_ids(digits, known.resolve(cfg, digits).validation) & set(train)
    assert set(auto) | set(batch) <= set(train)
    assert summary["collected"] == len(batch)
    assert summary["humanBudgetLeft"] == BUDGET - len(batch) - 1  # the correction counts


class PeopleMeanwhile:
    """collect's sleep: on its first nap, "people" annotate `answers` (None: skip the item) from
    another thread, as Label Studio's users would while the pod waits."""

    def __init__(self, studio: FakeLabelStudio, answers: dict[str, str | None]) -> None:
        self.naps: list[float] = []
        self.polled = threading.Event()
        self.studio, self.answers = studio, answers
        self.thread = threading.Thread(target=self.annotate, daemon=True)
        self.thread.start()

    def annotate(self) -> None:
        self.polled.wait(timeout=30)
        for item, label in self.answers.items():
            self.studio.annotate(item, label or "", cancelled=label is None)

    def __call__(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.polled.set()
        time.sleep(seconds)


def test_collect_polls_label_studio_until_the_batch_is_answered(
        tmp_path: Path, digits: Pool, studio: FakeLabelStudio) -> None:
    cfg, batch, _ = small_round(tmp_path, digits)
    client = LabelStudio(studio.url, TOKEN, 7)
    client.push(json.loads((tmp_path / "review-tasks.json").read_text()))
    client.push([{"data": {"item_id": "not-ours"}}])  # another job's task in the project
    truth = {i: str(digits.truth[p])  # type: ignore[index]
             for i, p in zip(batch, digits.positions(batch).tolist(), strict=True)}
    studio.annotate(batch[0], truth[batch[0]])
    studio.annotate(batch[1], truth[batch[1]])
    studio.annotate("not-ours", "cat")
    later: dict[str, str | None] = {batch[2]: truth[batch[2]], batch[3]: None,
                                    batch[4]: truth[batch[4]]}
    people = PeopleMeanwhile(studio, later)

    summary = review.collect(cfg, 0, client, poll_seconds=0.01, sleep=people)

    people.thread.join(timeout=30)
    assert people.naps and set(people.naps) == {0.01}  # it waited for the people
    labeled = [i for i in batch if later.get(i, "") is not None]
    assert {i: r["label"] for i, r in human_rows(tmp_path).items()} == {
        i: truth[i] for i in labeled}
    assert all(r["round"] == "0" for r in human_rows(tmp_path).values())
    assert summary["collected"] == 4 and summary["skipped"] == 1
    train = dataset(tmp_path / "train-r1.npz")
    assert set(labeled) <= set(train) and batch[3] not in train


def test_collect_refuses_labels_that_are_not_classes(tmp_path: Path, digits: Pool,
                                                     studio: FakeLabelStudio) -> None:
    cfg, batch, _ = small_round(tmp_path, digits, batch_size=1)
    client = LabelStudio(studio.url, TOKEN, 7)
    client.push(json.loads((tmp_path / "review-tasks.json").read_text()))
    studio.annotate(batch[0], "seven")
    with pytest.raises(review.CollectError, match=r"'seven'.*labeling config"):
        review.collect(cfg, 0, client, poll_seconds=0.01, sleep=lambda _: None)


def run_collect(monkeypatch: pytest.MonkeyPatch, doc: dict[str, Any],
                env: dict[str, str]) -> int:
    monkeypatch.setenv("COGWORK_LABELJOB", json.dumps(doc))
    for name in review.LABEL_STUDIO_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return review.main(["collect", "--round", "0", "--poll-seconds", "0.01",
                        "--summary-to", str(Path(doc["output"]) / "message")])


def test_exit_codes(tmp_path: Path, digits: Pool, monkeypatch: pytest.MonkeyPatch,
                    round0: tuple[Path, dict[str, Any]]) -> None:
    small_round(tmp_path, digits)
    doc = config(tmp_path, seed={"count": 20}, autoAccept={"validation": {"humanBudget": 20}})
    unreachable = {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": TOKEN,
                   "LABEL_STUDIO_PROJECT": "7"}
    assert run_collect(monkeypatch, doc, unreachable) == 3  # the operator retries
    assert run_collect(monkeypatch, doc, {"LABEL_STUDIO_API_KEY": TOKEN}) == 2  # no URL
    # A pool of your own and no Label Studio: nobody can answer (the CRD forbids it too).
    np.savez(tmp_path / "pool.npz", x=digits.x, id=digits.ids)
    own = {"pool": {"path": str(tmp_path / "pool.npz")}, "output": str(tmp_path),
           "model": {"path": str(round0[0] / "model.pt")}}
    assert run_collect(monkeypatch, own, {}) == 2
    assert not (tmp_path / "message").exists()
    assert run_collect(monkeypatch, doc, {}) == 0  # the demo's annotators answer
    message = (tmp_path / "message").read_text()
    assert len(message.encode()) <= 4096 and "\n" not in message
    assert json.loads(message)["trainingSet"] == "train-r1.npz"
