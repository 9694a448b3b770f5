"""What `cogwork run` prints: progress lines parsed from the workers' logs, the final evaluation.

The trainer prints each report as `COGWORK_PROGRESS {json}` when it has no endpoint; the JSON is
the body it would POST to the operator, so it is parsed with the operator's own model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cogwork_sdk import contract as pod_contract
from pydantic import ValidationError

from cogwork.plan.progress import ProgressReport

PROGRESS_PREFIX = pod_contract.PROGRESS_PREFIX


def parse_report(line: str) -> ProgressReport | None:
    """The report on a log line, or None for any other line (or a garbled report)."""
    _, sep, payload = line.partition(PROGRESS_PREFIX)
    if not sep:
        return None
    try:
        return ProgressReport.model_validate(json.loads(payload))
    except (ValueError, ValidationError):
        return None


def _duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def progress_line(report: ProgressReport) -> str:
    """One human line per report, e.g. `step 120/264 45% epoch 5 loss 0.12 ETA 0m04s`."""
    if report.event == "resumed":
        return f"resumed from checkpoint at step {report.resumed_from_step}"
    if report.event == "checkpoint":
        return f"checkpoint saved at step {report.checkpoint_step}"
    if report.event == "stopped":
        return f"stopped at step {report.step} (checkpoint {report.checkpoint_step})"
    parts = []
    if report.step is not None:  # a script's stdout metrics may report epochs only
        total = f"/{report.total_steps}" if report.total_steps is not None else ""
        parts.append(f"step {report.step}{total}")
    if report.progress_percentage is not None:
        parts.append(f"{report.progress_percentage:3d}%")
    if report.epoch is not None:
        parts.append(f"epoch {report.epoch}")
    for metric in report.metrics[:6]:  # the built-in task's loss, val_accuracy, parameters
        parts.append(f"{metric.name} {metric.value}")
    if report.samples_per_second is not None:
        parts.append(f"{report.samples_per_second:.0f} samples/s")
    if report.estimated_remaining_seconds is not None and report.event == "progress":
        parts.append(f"ETA {_duration(report.estimated_remaining_seconds)}")
    if report.event == "completed":
        parts.append("completed")
    return "  ".join(parts)


def _matrix(rows: Sequence[Sequence[int]], classes: Sequence[str]) -> list[str]:
    corner = "true\\pred"
    label_width = max(len(corner), *(len(c) for c in classes))
    width = max(3, *(len(str(v)) for row in rows for v in row), *(len(c) for c in classes))
    lines = [corner.rjust(label_width) + " " + " ".join(c.rjust(width) for c in classes)]
    for label, row in zip(classes, rows, strict=False):
        cells = " ".join(str(v).rjust(width) for v in row)
        lines.append(label.rjust(label_width) + " " + cells)
    return lines


def evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    """Accuracy, macro F1 and the confusion matrix of the trainer's final evaluation."""
    lines = []
    if "accuracy" in evaluation:
        lines.append(f"accuracy  {float(evaluation['accuracy']):.4f}")
    if "macroF1" in evaluation:
        lines.append(f"macro F1  {float(evaluation['macroF1']):.4f}")
    if "samples" in evaluation:
        lines.append(f"samples   {evaluation['samples']}")
    matrix = evaluation.get("confusionMatrix")
    if matrix:
        classes = [str(c) for c in evaluation.get("classes") or range(len(matrix))]
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        lines.extend(_matrix(matrix, classes))
    return lines
