"""What the LabelJob planner reads of its pods: condensed observations and step summaries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cogwork.plan.pods import unschedulable_message


@dataclass(frozen=True)
class LabelPod:
    """What the state machine needs to know about one child pod."""

    name: str
    phase: str = "Pending"
    exit_code: int | None = None
    message: str | None = None  # termination message: a step's JSON summary or a log tail
    waiting_reason: str | None = None
    waiting_message: str | None = None
    finished_at: str | None = None
    deleting: bool = False
    unschedulable: str | None = None  # the scheduler's message while it cannot place the pod


def observe_pod(pod: Mapping[str, Any]) -> LabelPod:
    """Condense a Pod object (as the API returns it) into a LabelPod."""
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or [{}]
    state = statuses[0].get("state") or {}
    terminated, waiting = state.get("terminated") or {}, state.get("waiting") or {}
    exit_code = terminated.get("exitCode")
    return LabelPod(
        name=str(metadata.get("name", "")),
        phase=str(status.get("phase") or "Pending"),
        exit_code=int(exit_code) if exit_code is not None else None,
        message=terminated.get("message"),
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        finished_at=terminated.get("finishedAt"),
        deleting=metadata.get("deletionTimestamp") is not None,
        unschedulable=unschedulable_message(status),
    )


def parse_summary(message: str | None) -> dict[str, Any] | None:
    """A step's JSON summary from its termination message; None when it is not one."""
    try:
        doc = json.loads(message or "")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
