"""The LabelJob's output files, written atomically so a reader never sees half of one.

    labels.csv           item_id,label,source,confidence,model_version,round
    dataset.npz          x, y (label text), ids: the labeled items, a TrainJob's spec.data.path
    review-tasks.json    the review batch as Label Studio tasks with predictions
    label-issues.csv     rank,item_id,given_label,suggested_label,quality
    calibration.json     precision vs coverage over thresholds
    summary.json         counts, threshold, certified bound (what status shows)
"""

from __future__ import annotations

import base64
import csv
import json
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from cogwork_sdk.files import replace_atomically

from .label_errors import LabelIssue

Source = Literal["seed", "human", "auto"]
LABEL_COLUMNS = ("item_id", "label", "source", "confidence", "model_version", "round")
# The Label Studio labeling config these tasks assume (documented in docs/labeljob.md).
FROM_NAME, TO_NAME = "label", "image"


@dataclass(frozen=True)
class LabelRow:
    item_id: str
    label: str
    source: Source
    confidence: float | None  # the model's score for auto labels; empty for people's labels
    model_version: str
    round: int


def _replace(path: Path, write: Any) -> None:
    replace_atomically(path, write)


def write_labels_table(path: Path, rows: Iterable[LabelRow]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(LABEL_COLUMNS)
            for r in rows:
                conf = "" if r.confidence is None else f"{r.confidence:.6f}"
                out.writerow([r.item_id, r.label, r.source, conf, r.model_version, r.round])
    _replace(path, write)


def read_labels_table(path: Path) -> list[LabelRow]:
    with open(path, newline="") as f:
        return [LabelRow(r["item_id"], r["label"], r["source"],  # type: ignore[arg-type]
                         float(r["confidence"]) if r["confidence"] else None,
                         r["model_version"], int(r["round"])) for r in csv.DictReader(f)]


def write_dataset(path: Path, x: np.ndarray, labels: Sequence[str], ids: Sequence[str]) -> None:
    """The labeled items in the TrainJob data format (.npz with x and y)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, x=x, y=np.asarray(labels), ids=np.asarray(ids))
    _replace(path, write)


def write_json(path: Path, doc: Any) -> None:
    _replace(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n"))


def write_issues(path: Path, issues: Iterable[LabelIssue]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["rank", "item_id", "given_label", "suggested_label", "quality"])
            for i in issues:
                out.writerow([i.rank, i.item_id, i.given_label, i.suggested_label,
                              f"{i.quality:.6f}"])
    _replace(path, write)


def png_data_uri(image: np.ndarray) -> str:
    """A grayscale PNG of a 2-D sample as a data: URI, so reviewers see the item itself."""
    a = np.asarray(image, dtype=np.float64)
    span = a.max() - a.min()
    pixels = np.zeros_like(a) if span == 0 else (a - a.min()) / span
    raw = b"".join(b"\x00" + bytes(row) for row in (255 - pixels * 255).astype(np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", a.shape[1], a.shape[0], 8, 0, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
           + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def review_task(item_id: str, sample: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                model_version: str, round_: int) -> dict[str, Any]:
    """One Label Studio task: the item and the model's guess as a pre-annotation."""
    best = int(np.argmax(probs))
    data: dict[str, Any] = {"item_id": item_id, "round": round_}
    if sample.ndim == 2:
        data[TO_NAME] = png_data_uri(sample)
    return {
        "data": data,
        "predictions": [{
            "model_version": model_version,
            "score": float(probs[best]),
            "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                        "value": {"choices": [classes[best]]}}],
        }],
    }
