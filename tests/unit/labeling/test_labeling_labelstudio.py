"""The Label Studio hand-off against a fake server that follows the documented endpoints."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cogwork_trainer.labeling.labelstudio import LabelStudio, LabelStudioError, merge_human_labels
from cogwork_trainer.labeling.outputs import review_task
from fake_labelstudio import TOKEN, FakeLabelStudio


def tasks(n: int, start: int = 0) -> list[dict[str, Any]]:
    probs = np.array([0.1, 0.7, 0.2])
    return [review_task(f"item-{i}", np.zeros((2, 2)), probs, ["a", "b", "c"], "v3", 0)
            for i in range(start, start + n)]


def test_push_imports_in_chunks_with_predictions(studio: FakeLabelStudio) -> None:
    client = LabelStudio(studio.url, TOKEN, 7, page_size=4)
    assert client.push(tasks(10), chunk_size=4) == 10
    assert studio.import_calls == 3
    prediction = studio.tasks[0]["predictions"][0]
    assert prediction["model_version"] == "v3" and prediction["score"] == pytest.approx(0.7)
    assert prediction["result"][0]["value"] == {"choices": ["b"]}


def test_push_is_idempotent_on_item_id(studio: FakeLabelStudio) -> None:
    client = LabelStudio(studio.url, TOKEN, 7, page_size=3)  # several pages to list
    client.push(tasks(7))
    assert client.push(tasks(10)) == 3  # items 0..6 exist already
    assert client.push(tasks(10)) == 0
    assert sorted(t["data"]["item_id"] for t in studio.tasks) == sorted(
        f"item-{i}" for i in range(10))


def test_annotations_come_back_latest_wins_skips_ignored(studio: FakeLabelStudio,
                                                          tmp_path: Path) -> None:
    client = LabelStudio(studio.url, TOKEN, 7)
    client.push(tasks(4))
    studio.annotate("item-0", "a")
    studio.annotate("item-1", "b", updated_at="2026-01-01T00:00:00Z")
    studio.annotate("item-1", "c", updated_at="2026-01-02T00:00:00Z")  # corrected later
    studio.annotate("item-2", "a", cancelled=True)  # skipped by the annotator
    labels = client.annotations()
    assert labels == {"item-0": "a", "item-1": "c"}
    path = tmp_path / "human-labels.csv"
    assert merge_human_labels(path, labels) == 2
    assert merge_human_labels(path, {"item-3": "b", "item-0": "b"}) == 3
    with open(path, newline="") as f:
        assert {r["item_id"]: r["label"] for r in csv.DictReader(f)} == {
            "item-0": "b", "item-1": "c", "item-3": "b"}


def test_bad_token_and_unreachable_server_are_clear_errors(studio: FakeLabelStudio) -> None:
    with pytest.raises(LabelStudioError, match=r"HTTP 401.*API token"):
        LabelStudio(studio.url, "wrong", 7).push(tasks(1))
    with pytest.raises(LabelStudioError, match="cannot reach"):
        LabelStudio("http://127.0.0.1:9", TOKEN, 7, timeout_s=2).annotations()


def test_skipped_tasks_are_answered_without_a_label(studio: FakeLabelStudio) -> None:
    client = LabelStudio(studio.url, TOKEN, 7)
    client.push(tasks(3))
    studio.annotate("item-0", "a", cancelled=True)  # skipped only
    studio.annotate("item-1", "b", cancelled=True)
    studio.annotate("item-1", "c")  # skipped once, labeled later
    state = client.annotation_state()
    assert state.labels == {"item-1": "c"} and state.skipped == {"item-0"}


def test_human_labels_keep_the_round_they_came_back_in(tmp_path: Path) -> None:
    path = tmp_path / "human-labels.csv"
    path.write_text("item_id,label\nold,a\n")  # written before rounds existed
    merge_human_labels(path, {"x": "a", "y": "b"}, 0)
    merge_human_labels(path, {"x": "a", "y": "c", "z": "b"}, 1)  # y corrected in round 1
    merge_human_labels(path, {"x": "a"}, None)  # a plain `pull` knows no round
    with open(path, newline="") as f:
        assert {r["item_id"]: (r["label"], r["round"]) for r in csv.DictReader(f)} == {
            "old": ("a", ""), "x": ("a", "0"), "y": ("c", "1"), "z": ("b", "1")}
