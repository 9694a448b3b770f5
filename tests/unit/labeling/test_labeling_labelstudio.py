"""The Label Studio hand-off against a fake server that follows the documented endpoints."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from cogwork_trainer.labeling.labelstudio import LabelStudio, LabelStudioError, merge_human_labels
from cogwork_trainer.labeling.outputs import review_task

TOKEN = "secret-token"


class FakeLabelStudio:
    """One project (id 7): tasks list (paged), bulk import, JSON export; Token auth."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []
        self.import_calls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Token {TOKEN}":
                    self.reply(401, {"detail": "Invalid token."})
                    return False
                return True

            def do_GET(self) -> None:
                if not self.authorized():
                    return
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/api/tasks" and query["project"] == ["7"]:
                    page, size = int(query["page"][0]), int(query["page_size"][0])
                    chunk = server.tasks[(page - 1) * size:page * size]
                    if page > 1 and not chunk:
                        self.reply(404, {"detail": "Invalid page."})
                    else:
                        self.reply(200, {"tasks": chunk, "total": len(server.tasks)})
                elif url.path == "/api/projects/7/export" and query["exportType"] == ["JSON"]:
                    self.reply(200, server.tasks)
                else:
                    self.reply(404, {"detail": "Not found."})

            def do_POST(self) -> None:
                if not self.authorized():
                    return
                if self.path != "/api/projects/7/import":
                    self.reply(404, {"detail": "Not found."})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.import_calls += 1
                for task in body:
                    server.tasks.append({"id": len(server.tasks) + 1, "annotations": [], **task})
                self.reply(201, {"task_count": len(body), "annotation_count": 0,
                                 "prediction_count": len(body)})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def annotate(self, item_id: str, label: str, *, cancelled: bool = False,
                 updated_at: str = "2026-01-01T00:00:00Z") -> None:
        task = next(t for t in self.tasks if t["data"]["item_id"] == item_id)
        task["annotations"].append({
            "id": len(task["annotations"]) + 1, "was_cancelled": cancelled,
            "updated_at": updated_at,
            "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                        "value": {"choices": [label]}}]})


@pytest.fixture
def studio() -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio()
    thread = threading.Thread(target=fake.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()


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
