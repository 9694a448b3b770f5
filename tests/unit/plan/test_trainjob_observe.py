"""Observations of pods, failure classification and the derived phase."""

from __future__ import annotations

from typing import Any

import pytest
from cogwork.api.common import Condition
from cogwork.api.trainjob_spec import FailureAction, FailurePolicy
from cogwork.plan.lifecycle import derive_phase
from cogwork.plan.trainjob_observe import (
    PodObservation,
    classify_failure,
    diverged,
    observe_pod,
)
from cogwork_sdk.contract import EXIT_NON_FINITE_LOSS

DEFAULTS = FailurePolicy()


def failed(exit_code: int | None = None, reason: str | None = None,
           conditions: tuple[str, ...] = ()) -> PodObservation:
    return PodObservation(name="digits-node-0", role="worker", index=0, phase="Failed",
                          exit_code=exit_code, reason=reason, conditions=frozenset(conditions))


@pytest.mark.parametrize(("pod", "action"), [
    (failed(1, "Error"), FailureAction.FAIL_JOB),  # a bug in the program: do not retry
    (failed(2, "Error"), FailureAction.FAIL_JOB),
    (failed(137, "OOMKilled"), FailureAction.RESTART_NODE),  # signals are retryable
    (failed(143, "Error"), FailureAction.RESTART_NODE),
    (failed(None, "Evicted"), FailureAction.RESTART_NODE),
    (failed(1, "Error", ("DisruptionTarget",)), FailureAction.RESTART_NODE),
    (failed(None, None), FailureAction.RESTART_NODE),  # lost without a trace
    (failed(0, "Completed"), FailureAction.IGNORE),
], ids=lambda v: str(v) if isinstance(v, FailureAction) else f"{v.exit_code}/{v.reason}")
def test_default_classification(pod: PodObservation, action: FailureAction) -> None:
    assert classify_failure(DEFAULTS, pod) is action


def test_rules_come_first_in_order() -> None:
    policy = FailurePolicy.model_validate({"rules": [
        {"action": "Ignore", "onPodConditions": ["DisruptionTarget"]},
        {"action": "RestartJob", "onExitCodes": {"operator": "In", "values": [3, 4]}},
        {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [3, 4, 137]}},
    ]})
    assert classify_failure(policy, failed(137, conditions=("DisruptionTarget",))) is \
        FailureAction.IGNORE
    assert classify_failure(policy, failed(4)) is FailureAction.RESTART_JOB
    assert classify_failure(policy, failed(139)) is FailureAction.FAIL_JOB
    assert classify_failure(policy, failed(137)) is FailureAction.RESTART_NODE  # default
    assert classify_failure(policy, failed(None, "Evicted")) is FailureAction.RESTART_NODE


def pod_dict(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "digits-node-2", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"cogwork.dev/role": "worker", "cogwork.dev/node-index": "2"},
                         "annotations": {"cogwork.dev/stop": "true"}},
            "status": status}


def test_observe_failed_pod() -> None:
    pod = observe_pod(pod_dict(phase="Failed", containerStatuses=[
        {"name": "trainer", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]))
    assert (pod.name, pod.role, pod.index, pod.phase) == ("digits-node-2", "worker", 2, "Failed")
    assert (pod.exit_code, pod.reason, pod.deleting) == (137, "OOMKilled", False)
    assert pod.created == "2026-01-01T00:00:00Z"
    assert pod.annotations == {"cogwork.dev/stop": "true"}


def test_observe_evicted_running_and_deleting_pods() -> None:
    evicted = observe_pod(pod_dict(phase="Failed", reason="Evicted", conditions=[
        {"type": "DisruptionTarget", "status": "True"}, {"type": "Ready", "status": "False"}]))
    assert evicted.reason == "Evicted" and evicted.conditions == {"DisruptionTarget"}
    assert evicted.exit_code is None and not evicted.ready
    running = observe_pod(pod_dict(phase="Running",
                                   conditions=[{"type": "Ready", "status": "True"}]))
    assert running.ready and running.exit_code is None
    doc = pod_dict(phase="Running")
    doc["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    assert observe_pod(doc).deleting
    store = observe_pod({"metadata": {"name": "digits-rdzv",
                                      "labels": {"cogwork.dev/role": "rdzv"}}})
    assert (store.role, store.index, store.phase) == ("rdzv", None, "Pending")


def cond(condition_type: str, status: str = "True") -> Condition:
    return Condition(type=condition_type, status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(("conditions", "phase"), [
    ([], "Pending"),
    ([cond("Created")], "Pending"),
    ([cond("Created"), cond("Running")], "Running"),
    ([cond("Running"), cond("Restarting")], "Restarting"),
    ([cond("Running", "False"), cond("Suspended")], "Suspended"),
    ([cond("Running"), cond("Succeeded")], "Succeeded"),
    ([cond("Succeeded", "False"), cond("Failed")], "Failed"),
    ([cond("Running"), cond("Restarting", "False")], "Running"),
])
def test_derive_phase(conditions: list[Condition], phase: str) -> None:
    assert derive_phase(conditions) == phase


def test_observe_diverged_pod_keeps_its_termination_message() -> None:
    pod = observe_pod(pod_dict(phase="Failed", containerStatuses=[
        {"name": "trainer", "state": {"terminated": {
            "exitCode": EXIT_NON_FINITE_LOSS, "reason": "Error",
            "message": "non-finite loss nan at step 3 (epoch 0)\n"}}}]))
    assert pod.exit_code == EXIT_NON_FINITE_LOSS and diverged(pod)
    assert pod.message == "non-finite loss nan at step 3 (epoch 0)"
    # Without a rule it is FailJob; a rule naming the code still decides.
    assert classify_failure(DEFAULTS, pod) is FailureAction.FAIL_JOB
    retry = FailurePolicy.model_validate({"rules": [{"action": "RestartJob", "onExitCodes": {
        "operator": "In", "values": [EXIT_NON_FINITE_LOSS]}}]})
    assert classify_failure(retry, pod) is FailureAction.RESTART_JOB
    assert not diverged(failed(1, "Error"))
