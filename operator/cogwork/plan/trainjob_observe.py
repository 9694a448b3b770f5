"""Reading observed state, purely: pod dicts -> observations, failures -> actions,
conditions -> phase. The controller decides with these; none of them does I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cogwork_sdk import contract as pod_contract

from cogwork.api import contract
from cogwork.api.trainjob_spec import FailureAction, FailurePolicy, FailureRule
from cogwork.plan.pods import unschedulable_message

DISRUPTION_TARGET = "DisruptionTarget"  # set by eviction, preemption, taint manager, node GC
# Pod-level reasons that mean "the platform took the pod away", not "the program failed".
PLATFORM_REASONS = frozenset({"Evicted", "Preempting", "NodeLost", "Shutdown", "Terminated",
                              "NodeShutdown", "UnexpectedAdmissionError", "OutOfcpu",
                              "OutOfmemory"})
SIGNAL_EXIT_CODES = 128  # >= 128: killed by a signal (OOM kill 137, SIGTERM 143)


@dataclass(frozen=True)
class PodObservation:
    """What the controller needs to know about one child pod."""

    name: str
    role: str  # contract.ROLE_WORKER or contract.ROLE_RDZV
    index: int | None = None  # node index of a worker
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed | Unknown
    exit_code: int | None = None  # of the pod's main container, once terminated
    reason: str | None = None  # pod reason (Evicted) or container reason (OOMKilled, Error)
    conditions: frozenset[str] = frozenset()  # condition types whose status is True
    deleting: bool = False  # deletionTimestamp set
    ready: bool = False
    created: str | None = None  # creationTimestamp (RFC 3339 compares as text)
    annotations: Mapping[str, str] = field(default_factory=dict)
    message: str | None = None  # the main container's termination message, if it wrote one
    unschedulable: str | None = None  # the scheduler's message while it cannot place the pod


def _terminated(pod_status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The main (first) container's termination record, current or last; a failed init
    container's (the launcher) when the main container never ran."""
    statuses = pod_status.get("containerStatuses") or []
    for init in pod_status.get("initContainerStatuses") or []:
        record = (init.get("state") or {}).get("terminated") or {}
        if record.get("exitCode"):
            return record
    if not statuses:
        return {}
    state = statuses[0].get("state") or {}
    last = statuses[0].get("lastState") or {}
    return state.get("terminated") or last.get("terminated") or {}


def observe_pod(pod: Mapping[str, Any]) -> PodObservation:
    """Condense a Pod object (as the API returns it) into a PodObservation."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    status = pod.get("status") or {}
    index_label = labels.get(contract.LABEL_NODE_INDEX)
    terminated = _terminated(status)
    true_conditions = frozenset(c.get("type", "") for c in status.get("conditions") or []
                                if c.get("status") == "True")
    exit_code = terminated.get("exitCode")
    return PodObservation(
        name=metadata.get("name", ""),
        role=labels.get(contract.LABEL_ROLE, contract.ROLE_WORKER),
        index=int(index_label) if index_label and index_label.isdigit() else None,
        phase=status.get("phase") or "Pending",
        exit_code=int(exit_code) if exit_code is not None else None,
        reason=status.get("reason") or terminated.get("reason"),
        conditions=true_conditions,
        deleting=metadata.get("deletionTimestamp") is not None,
        ready="Ready" in true_conditions,
        created=metadata.get("creationTimestamp"),
        annotations=dict(metadata.get("annotations") or {}),
        unschedulable=unschedulable_message(status),
        message=(str(terminated.get("message")).strip()[:1024] or None)
        if terminated.get("message") else None,
    )


def _matches(rule: FailureRule, pod: PodObservation) -> bool:
    if rule.on_pod_conditions is not None:
        return any(c in pod.conditions for c in rule.on_pod_conditions)
    if rule.on_exit_codes is not None and pod.exit_code is not None:
        listed = pod.exit_code in rule.on_exit_codes.values
        return listed if rule.on_exit_codes.operator == "In" else not listed
    return False


def default_action(pod: PodObservation) -> FailureAction:
    """Without a matching rule: the platform's doing or a signal is retryable, a program's own
    non-zero exit is not (as in PyTorchJob v1)."""
    if DISRUPTION_TARGET in pod.conditions or pod.reason in PLATFORM_REASONS:
        return FailureAction.RESTART_NODE
    if pod.exit_code is None or pod.exit_code >= SIGNAL_EXIT_CODES:
        return FailureAction.RESTART_NODE  # lost without a trace, or killed by a signal
    if pod.exit_code == 0:
        return FailureAction.IGNORE
    return FailureAction.FAIL_JOB  # a bug, or a diverged run (EXIT_NON_FINITE_LOSS)


def diverged(pod: PodObservation) -> bool:
    """The pod's ranks stopped on a NaN or infinite loss (failOnNonFiniteLoss)."""
    return pod.exit_code == pod_contract.EXIT_NON_FINITE_LOSS


def classify_failure(policy: FailurePolicy, pod: PodObservation) -> FailureAction:
    """The action for one failed pod: the first matching rule, else `default_action`.

    Whether the action still fits in backoffLimit is the caller's call (it knows the count).
    """
    for rule in policy.rules:
        if _matches(rule, pod):
            return rule.action
    return default_action(pod)


