"""Pods the scheduler cannot place: the job's Scheduled condition quotes the scheduler, one
Warning event when it starts, True again once every pod is placed; the deadline ends a wait
that lasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cogwork.api.trainjob import TrainJob
from cogwork.plan import labeljob_observe, trainjob_observe
from cogwork.plan.lifecycle import Actions
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_reconcile import reconcile

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SETTINGS = RenderSettings(report_base_url="https://10.0.0.1:8443")
NO_MEMORY = ("0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are "
             "available: 1 No preemption victims found for incoming pod.")


def job(status: dict[str, Any] | None = None, **spec: Any) -> TrainJob:
    return TrainJob.model_validate({
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "big", "namespace": "ml", "uid": "u-1", "generation": 1,
                     "creationTimestamp": "2026-12-03T11:59:00Z"},
        "spec": {"task": {"name": "image-classification"}, "data": {"dataset": "digits"},
                 "nodes": {"min": 1, "max": 1}, **spec},
        "status": status or {}})


def pod(name: str, role: str, phase: str = "Running", scheduler: str | None = None
        ) -> dict[str, Any]:
    labels = {"cogwork.dev/job-name": "big", "cogwork.dev/kind": "TrainJob",
              "cogwork.dev/role": role}
    if role == "worker":
        labels["cogwork.dev/node-index"] = "0"
    conditions = [] if scheduler is None else [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": scheduler}]
    return {"metadata": {"name": name, "labels": labels,
                         "creationTimestamp": "2026-12-03T11:59:10Z"},
            "status": {"phase": phase, "conditions": conditions}}


def cond(actions: Actions, kind: str) -> dict[str, Any]:
    return next((c for c in actions.status["conditions"] if c["type"] == kind), {})


def advance(j: TrainJob, actions: Actions) -> TrainJob:
    body = j.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["status"] = {k: v for k, v in {**body.get("status", {}), **actions.status}.items()
                      if v is not None}
    return TrainJob.model_validate(body)


def test_observers_read_the_schedulers_message() -> None:
    waiting = pod("big-node-0", "worker", "Pending", NO_MEMORY)
    assert trainjob_observe.observe_pod(waiting).unschedulable == NO_MEMORY
    assert labeljob_observe.observe_pod(waiting).unschedulable == NO_MEMORY
    assert trainjob_observe.observe_pod(pod("big-rdzv", "rdzv")).unschedulable is None


def test_an_unschedulable_worker_is_a_condition_then_clears() -> None:
    pods = [pod("big-rdzv", "rdzv"), pod("big-node-0", "worker", "Pending", NO_MEMORY)]
    first = reconcile(job(), [trainjob_observe.observe_pod(p) for p in pods], NOW, SETTINGS)
    scheduled = cond(first, "Scheduled")
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
    assert scheduled["message"] == f"pod big-node-0 cannot be scheduled: {NO_MEMORY}"
    assert [e.reason for e in first.events].count("Unschedulable") == 1
    assert first.status["phase"] == "Pending"

    # Still waiting: the same condition, no second event (no status write, no event storm).
    j = advance(job(), first)
    again = reconcile(j, [trainjob_observe.observe_pod(p) for p in pods],
                      NOW + timedelta(seconds=30), SETTINGS)
    assert cond(again, "Scheduled") == scheduled
    assert "Unschedulable" not in [e.reason for e in again.events]

    placed = [pod("big-rdzv", "rdzv"), pod("big-node-0", "worker", "Running")]
    later = reconcile(advance(j, again), [trainjob_observe.observe_pod(p) for p in placed],
                      NOW + timedelta(seconds=60), SETTINGS)
    assert cond(later, "Scheduled")["status"] == "True"


def test_a_job_whose_pods_fit_carries_no_scheduled_condition() -> None:
    pods = [pod("big-rdzv", "rdzv"), pod("big-node-0", "worker")]
    actions = reconcile(job(), [trainjob_observe.observe_pod(p) for p in pods], NOW, SETTINGS)
    assert cond(actions, "Scheduled") == {}


def test_pre_running_deadline_ends_a_job_that_is_never_scheduled() -> None:
    pods = [trainjob_observe.observe_pod(p) for p in
            (pod("big-rdzv", "rdzv"), pod("big-node-0", "worker", "Pending", NO_MEMORY))]
    j = job(preRunningDeadlineSeconds=120)
    j = advance(j, reconcile(j, pods, NOW, SETTINGS))
    ended = reconcile(j, pods, NOW + timedelta(minutes=5), SETTINGS)
    failed = cond(ended, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "PreRunningDeadlineExceeded"
    assert cond(ended, "Scheduled")["status"] == "False"  # why it never ran stays readable
