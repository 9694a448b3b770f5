"""Status writes a new TrainJob costs: the pass that creates the children writes status once,
and the pass that then sees them Pending finds nothing to change (each write is an API call
and wakes every watcher; see bench/operator_throughput.py)."""

from __future__ import annotations

from datetime import timedelta

from cogwork.controllers.runtime import status_changed
from test_trainjob_reconcile import NOW, advance, cond, job, pod, step


def test_second_pass_of_a_new_job_writes_nothing() -> None:
    first = step(job(), [])
    assert first.status["replicas"] == 2  # the two workers it creates
    seen = advance(job(), first)
    pending = [pod("rdzv", phase="Pending"), pod("worker", 0, phase="Pending"),
               pod("worker", 1, phase="Pending")]
    second = step(seen, pending, NOW + timedelta(seconds=1))
    current = seen.model_dump(mode="json", by_alias=True, exclude_none=True)["status"]
    assert second.create == []
    assert not status_changed(current, second.status)


def test_replicas_count_only_workers_that_exist_or_are_created() -> None:
    # Worker 1 is missing: this pass creates it; the store pod is not a replica.
    actions = step(job({"activeNodes": [0]}), [pod("rdzv"), pod("worker", 0)])
    assert [c["metadata"]["name"] for c in actions.create if c["kind"] == "Pod"] == \
        ["digits-node-1"]
    assert actions.status["replicas"] == 2
    assert actions.status["readyReplicas"] == 1


def test_resumed_reason_only_after_a_real_suspension() -> None:
    first = step(job(), [])
    assert cond(first, "Suspended")["reason"] == "NotSuspended"
    again = step(advance(job(), first), [])
    assert cond(again, "Suspended")["reason"] == "NotSuspended"
    suspended = step(job(suspend=True), [])
    resumed = step(advance(job(), suspended), [])
    assert cond(resumed, "Suspended")["reason"] == "Resumed"
    assert [e.reason for e in resumed.events if e.reason == "Resumed"] == ["Resumed"]
