"""kstatus conditions (Ready/Reconciling/Stalled) as the planners write them, pass by pass.

The decision table is the one sigs.k8s.io/cli-utils kstatus applies to custom resources:
Stalled=True -> Failed, Reconciling=True -> InProgress, otherwise Current when Ready=True.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cogwork.api.common import Condition
from cogwork.plan.lifecycle import with_kstatus
from cogwork.plan.tunejob_reconcile import EngineDecision, reconcile
from test_trainjob_reconcile import NOW, advance, job, pod, running_pods, step

sys.path.insert(0, str(Path(__file__).parents[1] / "tuning"))
from tuning_helpers import trial, tunejob


def kstatus(status: dict[str, Any]) -> dict[str, str]:
    """{type: status} for the three kstatus types, and the generation each was computed at."""
    out = {c["type"]: c["status"] for c in status["conditions"]
           if c["type"] in ("Ready", "Reconciling", "Stalled")}
    gens = {c["observedGeneration"] for c in status["conditions"]
            if c["type"] in ("Ready", "Reconciling", "Stalled")}
    assert gens == {status["observedGeneration"]}
    return out


IN_PROGRESS = {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
CURRENT = {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
FAILED = {"Ready": "False", "Reconciling": "False", "Stalled": "True"}


def test_trainjob_in_progress_until_it_succeeds() -> None:
    created = step(job(), [])
    assert kstatus(created.status) == IN_PROGRESS
    running = step(job(), running_pods())
    assert running.status["phase"] == "Running" and kstatus(running.status) == IN_PROGRESS
    done = step(job({"activeNodes": [0, 1]}),
                [pod("rdzv"), pod("worker", 0, "Succeeded"), pod("worker", 1, "Succeeded")])
    assert kstatus(done.status) == CURRENT
    # Sticky on later passes too, and no rewrite: the same conditions come back.
    later = step(advance(job({"activeNodes": [0, 1]}), done), [])
    assert later.status["conditions"] == done.status["conditions"]


def test_trainjob_failure_stalls_with_the_failure_reason() -> None:
    pods = [pod("rdzv"), pod("worker", 0), pod("worker", 1, "Failed", exit_code=2,
                                                 reason="Error")]
    actions = step(job({"activeNodes": [0, 1]}), pods)
    assert kstatus(actions.status) == FAILED
    stalled = next(c for c in actions.status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ExitCode2" and "exited with code 2" in stalled["message"]


def test_suspended_trainjob_is_in_progress() -> None:
    actions = step(job(suspend=True), running_pods())
    assert actions.status["phase"] == "Suspended" and kstatus(actions.status) == IN_PROGRESS


def test_tunejob_conditions_follow_the_search() -> None:
    running = reconcile(tunejob(), [trial(0, "RUNNING")], EngineDecision(), NOW)
    assert running.status["phase"] == "Running" and kstatus(running.status) == IN_PROGRESS
    done = reconcile(tunejob(budget={"maxTrials": 1, "parallelTrials": 1}),
                     [trial(0, "COMPLETE", 0.9)], EngineDecision(), NOW)
    assert done.status["phase"] == "Succeeded" and kstatus(done.status) == CURRENT
    broken = reconcile(tunejob(), [], EngineDecision(error="no such sampler"), NOW)
    assert kstatus(broken.status) == FAILED


def test_transition_time_moves_only_when_status_flips() -> None:
    first = with_kstatus([], "Running", 1, NOW)
    later = NOW.replace(hour=13)
    again = with_kstatus(first, "Running", 2, later)
    assert [c.last_transition_time for c in again] == [c.last_transition_time for c in first]
    assert {c.observed_generation for c in again} == {2}
    done = with_kstatus(again, "Succeeded", 2, later)
    ready = next(c for c in done if c.type == "Ready")
    assert ready.status == "True" and ready.last_transition_time == "2026-11-23T13:00:00Z"


def test_own_conditions_are_kept_in_order() -> None:
    ours = [Condition(type="Created", status="True", reason="Created")]
    out = with_kstatus(ours, "Pending", 1, NOW)
    assert [c.type for c in out] == ["Created", "Ready", "Reconciling", "Stalled"]
