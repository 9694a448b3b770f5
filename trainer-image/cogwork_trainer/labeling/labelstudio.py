"""Label Studio hand-off over its documented REST API (https://api.labelstud.io).

    python -m cogwork_trainer.labeling.labelstudio push   # review-tasks.json -> project
    python -m cogwork_trainer.labeling.labelstudio pull   # annotations -> human-labels.csv

Why not label-studio-sdk: 2.1.2 requires urllib3 >= 2 and numpy < 2.3, while our pins hold
urllib3 < 1.27 (torchx 0.7) and numpy 2.4.6; the three endpoints we need are small and stable:

    GET  /api/tasks?project=<id>&page=<n>&page_size=<m>   {"tasks": [...], "total": N}
    POST /api/projects/<id>/import                         [task, ...] -> {"task_count": n}
    GET  /api/projects/<id>/export?exportType=JSON         [task with annotations, ...]

Pushing is idempotent on `data.item_id`: tasks already in the project are skipped, so a
restarted pod (or a second round) never duplicates work for the annotators. Imports go in chunks
(Label Studio's ML backends time out on big batches; one request per task is slow). Review rounds
wait for a batch's annotations with `review.py collect`, which uses this client.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogwork_sdk.files import replace_atomically

from .known import HUMAN_LABELS_FILE
from .outputs import FROM_NAME

log = logging.getLogger("cogwork_trainer.labeling")


class LabelStudioError(RuntimeError):
    """Label Studio refused or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class Annotations:
    labels: dict[str, str]  # item_id -> label of its latest completed (not skipped) annotation
    skipped: set[str]  # items annotated only by skipping: people looked and gave no label


class LabelStudio:
    def __init__(self, url: str, token: str, project: int, *, timeout_s: float = 30.0,
                 page_size: int = 500) -> None:
        self.base = url.rstrip("/")
        self.token = token
        self.project = project
        self.timeout_s = timeout_s
        self.page_size = page_size

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base}{path}", data=data, method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace")
            hint = " (check the API token in the Secret)" if e.code in (401, 403) else ""
            raise LabelStudioError(f"{method} {path}: HTTP {e.code}{hint}: {detail}") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise LabelStudioError(f"{method} {path}: cannot reach {self.base}: {e}") from e
        return json.loads(raw) if raw else None

    def tasks(self) -> Iterator[dict[str, Any]]:
        """Every task of the project, page by page."""
        seen, page = 0, 1
        while True:
            try:
                body = self._request("GET", f"/api/tasks?project={self.project}&page={page}"
                                            f"&page_size={self.page_size}")
            except LabelStudioError as e:
                if "HTTP 404" in str(e) and page > 1:  # asked past the last page
                    return
                raise
            batch = body.get("tasks", []) if isinstance(body, dict) else body
            yield from batch
            seen += len(batch)
            total = body.get("total") if isinstance(body, dict) else None
            if not batch or (total is not None and seen >= total):
                return
            page += 1

    def existing_item_ids(self) -> set[str]:
        return {str(t["data"]["item_id"]) for t in self.tasks()
                if isinstance(t.get("data"), dict) and "item_id" in t["data"]}

    def push(self, tasks: Sequence[dict[str, Any]], chunk_size: int = 200) -> int:
        """Import the tasks not yet in the project; returns how many were imported."""
        present = self.existing_item_ids()
        new = [t for t in tasks if str(t["data"]["item_id"]) not in present]
        for start in range(0, len(new), chunk_size):
            self._request("POST", f"/api/projects/{self.project}/import",
                          new[start:start + chunk_size])
        log.info("label studio project %d: imported %d task(s), %d already there",
                 self.project, len(new), len(tasks) - len(new))
        return len(new)

    def annotation_state(self) -> Annotations:
        """Every task's outcome so far, from one export."""
        exported = self._request("GET", f"/api/projects/{self.project}/export?exportType=JSON")
        labels: dict[str, str] = {}
        skipped: set[str] = set()
        for task in exported or []:
            item = (task.get("data") or {}).get("item_id")
            given = task.get("annotations") or []
            done = [a for a in given if not a.get("was_cancelled")]
            if item is None or not given:
                continue
            if not done:
                skipped.add(str(item))
                continue
            latest = max(done, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0))
            for result in latest.get("result") or []:
                choices = (result.get("value") or {}).get("choices") or []
                if result.get("from_name") == FROM_NAME and choices:
                    labels[str(item)] = str(choices[0])
        return Annotations(labels, skipped)

    def annotations(self) -> dict[str, str]:
        """item_id -> the label of its latest completed (not skipped) annotation."""
        return self.annotation_state().labels


def merge_human_labels(path: Path, fresh: dict[str, str], round_: int | None = None) -> int:
    """Add annotations to human-labels.csv (a later annotation of an item wins); returns how
    many items it holds. A new or changed label is stamped with `round_` (empty: unknown); an
    unchanged one keeps the round it first came back in, so re-running a round changes nothing."""
    current: dict[str, tuple[str, str]] = {}
    if path.is_file():
        with open(path, newline="") as f:
            current = {row["item_id"]: (row["label"], row.get("round") or "")
                       for row in csv.DictReader(f)}
    stamp = "" if round_ is None else str(round_)
    for item, label in fresh.items():
        if current.get(item, ("", ""))[0] != label:
            current[item] = (label, stamp)
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["item_id", "label", "round"])
            writer.writerows((item, label, r) for item, (label, r) in sorted(current.items()))

    replace_atomically(path, write)
    return len(current)


def from_env() -> LabelStudio:
    missing = [n for n in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_PROJECT")
               if not os.environ.get(n)]
    if missing:
        raise LabelStudioError(f"not configured: {', '.join(missing)} unset")
    return LabelStudio(os.environ["LABEL_STUDIO_URL"], os.environ["LABEL_STUDIO_API_KEY"],
                       int(os.environ["LABEL_STUDIO_PROJECT"]))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m cogwork_trainer.labeling.labelstudio")
    parser.add_argument("step", choices=["push", "pull"])
    parser.add_argument("--output", default=os.environ.get("COGWORK_LABEL_OUTPUT", "."))
    args = parser.parse_args(argv)
    out = Path(args.output)
    try:
        client = from_env()
        if args.step == "push":
            client.push(json.loads((out / "review-tasks.json").read_text()))
        else:
            total = merge_human_labels(out / HUMAN_LABELS_FILE, client.annotations())
            log.info("%d human label(s) in %s", total, out / HUMAN_LABELS_FILE)
    except LabelStudioError as e:
        log.error("%s", e)
        return 3  # distinct from bad configuration (2): the operator retries these
    return 0


if __name__ == "__main__":
    sys.exit(main())
