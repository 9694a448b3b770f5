"""Pure translation of a trainer's progress report into a TrainJob status patch.

Metric history is thinned to a few points so status stays small however long a job runs
(Katib's Suggestion objects outgrew etcd's limit by keeping everything).
"""

from __future__ import annotations

from typing import Any

from cogwork_sdk import contract as pod_contract
from pydantic import BaseModel, ConfigDict, Field

MAX_HISTORY_POINTS = 10


class MetricValue(BaseModel):
    name: str = Field(max_length=63)
    value: str = Field(max_length=32)


class ProgressReport(BaseModel):
    """What rank 0 POSTs (Kubeflow trainerStatus shape + step/epoch); see docs/pod-contract.md."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    event: str = Field(default=pod_contract.EVENT_PROGRESS,
                       pattern=f"^({'|'.join(pod_contract.REPORT_EVENTS)})$")
    progress_percentage: int | None = Field(default=None, alias="progressPercentage", ge=0, le=100)
    estimated_remaining_seconds: int | None = Field(
        default=None, alias="estimatedRemainingSeconds", ge=0
    )
    step: int | None = Field(default=None, ge=0)
    total_steps: int | None = Field(default=None, alias="totalSteps", ge=0)
    epoch: int | None = Field(default=None, ge=0)
    samples_per_second: float | None = Field(default=None, alias="samplesPerSecond", ge=0)
    metrics: list[MetricValue] = Field(default_factory=list, max_length=32)
    resumed_from_step: int | None = Field(default=None, alias="resumedFromStep", ge=0)
    checkpoint_step: int | None = Field(default=None, alias="checkpointStep", ge=0)
    checkpoint_request: str | None = Field(default=None, alias="checkpointRequest", max_length=63)
    evaluation: dict[str, Any] | None = None


def thin(points: list[dict[str, Any]], limit: int = MAX_HISTORY_POINTS) -> list[dict[str, Any]]:
    """Keep the first and last points and an even spread between them."""
    if len(points) <= limit:
        return points
    last = len(points) - 1
    picks = sorted({round(i * last / (limit - 1)) for i in range(limit)})
    return [points[i] for i in picks]


def status_patch(status: dict[str, Any], report: ProgressReport, now: str) -> dict[str, Any]:
    """The merge patch for `status` that records `report` received at time `now` (RFC 3339)."""
    patch: dict[str, Any] = {}
    progress: dict[str, Any] = {"updateTime": now}
    for key, value in (
        ("step", report.step),
        ("totalSteps", report.total_steps),
        ("epoch", report.epoch),
        ("progressPercentage", report.progress_percentage),
        ("estimatedRemainingSeconds", report.estimated_remaining_seconds),
        ("samplesPerSecond", None if report.samples_per_second is None
         else round(report.samples_per_second, 1)),
    ):
        if value is not None:
            progress[key] = value
    if report.event == pod_contract.EVENT_RESUMED and report.resumed_from_step is not None:
        progress["resumedFromStep"] = report.resumed_from_step
        progress["resumedAt"] = now
    if report.event == pod_contract.EVENT_COMPLETED:
        progress["progressPercentage"] = 100
        progress["estimatedRemainingSeconds"] = 0
    patch["progress"] = progress

    if report.metrics:
        latest = [m.model_dump() for m in report.metrics]
        history = list((status.get("metrics") or {}).get("history") or [])
        point: dict[str, Any] = {"step": report.step or 0,
                                 "values": {m.name: m.value for m in report.metrics}}
        if report.epoch is not None:
            point["epoch"] = report.epoch  # scripts may report epochs without steps
        if history and (history[-1].get("step"), history[-1].get("epoch")) == (
                point["step"], point.get("epoch")):
            history[-1] = point
        else:
            history.append(point)
        patch["metrics"] = {"latest": latest, "history": thin(history)}

    if report.checkpoint_step is not None:
        patch["lastCheckpointStep"] = report.checkpoint_step
    request = status.get("checkpointRequest") or {}
    if report.checkpoint_request and report.checkpoint_request == request.get("token"):
        patch["checkpointRequest"] = {"token": request["token"], "acknowledged": True}
    if report.evaluation is not None:
        patch["evaluation"] = report.evaluation
    return patch
