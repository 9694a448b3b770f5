"""Kueue's Workload for a job, and what its admission means for the job (pure).

A job labelled `kueue.x-k8s.io/queue-name` runs only once Kueue admits it. Kueue has no built-in
support for our kinds, so the operator does for them what Kueue's jobframework does for a Job
(Kueue runs with `integrations.externalFrameworks` naming our kinds): it creates one Workload
per job, owned by it, whose PodSets are every pod the job runs (a TrainJob: the rendezvous
store and `nodes.max` workers with `minCount = nodes.min`, so Kueue admits the gang whole or
not at all, and an elastic job with the count it fits); it keeps the job's pods away until
the Workload is admitted; it runs the job with the admitted count, node labels and tolerations;
on eviction it stops the pods, then hands the quota back (clears the admission, `Requeued`);
once the job finished it marks the Workload Finished. docs/kueue.md says why this and not
Kueue's pod groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cogwork.api import contract
from cogwork.api.common import rfc3339
from cogwork.plan.lifecycle import Hold

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"  # the storage version in Kueue v0.17 (v1beta1 goes through conversion)
API_VERSION = f"{GROUP}/{VERSION}"
WORKLOADS = "workloads"
RESOURCE_FLAVORS = "resourceflavors"
PRIORITY_CLASSES = "workloadpriorityclasses"
QUEUE_LABEL = f"{GROUP}/queue-name"
PRIORITY_LABEL = f"{GROUP}/priority-class"  # a WorkloadPriorityClass, as on a Job
JOB_UID_LABEL = f"{GROUP}/job-uid"
# Labels a job's children inherit so that they queue where it does (TuneJob trials).
INHERITED_LABELS = (QUEUE_LABEL, PRIORITY_LABEL)
QUEUED = "Queued"  # the Suspended condition's reason while Kueue has not admitted the job
EVICTED = "Evicted"


def queue_name(labels: Mapping[str, str] | None) -> str | None:
    return (labels or {}).get(QUEUE_LABEL) or None


def inherited_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """The queue labels of a parent (a TuneJob) its children (trials) carry too."""
    return {k: v for k, v in (labels or {}).items() if k in INHERITED_LABELS}


def workload_name(kind: str, name: str) -> str:
    return f"{kind.lower()}-{name}"


@dataclass(frozen=True)
class PodSet:
    name: str
    count: int
    template: Mapping[str, Any]  # a pod as the job renders it
    min_count: int | None = None


def workload(kind: str, name: str, uid: str, queue: str, pod_sets: Sequence[PodSet],
             priority_class: str | None = None, priority: int | None = None,
             active: bool = True) -> dict[str, Any]:
    """The Workload of job `kind/name` (the caller makes the job its controller owner)."""
    spec: dict[str, Any] = {
        "queueName": queue,
        "active": active,
        "podSets": [_pod_set(p) for p in pod_sets],
    }
    if priority_class is not None:
        spec["priorityClassRef"] = {"group": GROUP, "kind": "WorkloadPriorityClass",
                                    "name": priority_class}
        if priority is not None:
            spec["priority"] = priority
    return {"apiVersion": API_VERSION, "kind": "Workload",
            "metadata": {"name": workload_name(kind, name),
                         "labels": {contract.LABEL_JOB_NAME: name, contract.LABEL_KIND: kind,
                                    JOB_UID_LABEL: uid}},
            "spec": spec}


def _pod_set(pod_set: PodSet) -> dict[str, Any]:
    pod = pod_set.template
    # Only what Kueue reads and what a PodTemplateSpec holds: the pod's labels and spec.
    template = {"metadata": {"labels": dict((pod.get("metadata") or {}).get("labels") or {})},
                "spec": dict(pod.get("spec") or {})}
    out: dict[str, Any] = {"name": pod_set.name, "count": pod_set.count, "template": template}
    if pod_set.min_count is not None and pod_set.min_count < pod_set.count:
        out["minCount"] = pod_set.min_count
    return out


@dataclass(frozen=True)
class Admission:
    """What the Workload says about the job: exactly one of admitted, evicted or waiting."""

    admitted: bool = False
    evicted: str | None = None  # Kueue's reason and message while it takes the quota back
    waiting: str | None = None  # why the job waits (Kueue's message, or no Workload yet)
    counts: Mapping[str, int] = field(default_factory=dict)  # pod set -> admitted count
    flavors: Mapping[str, Sequence[str]] = field(default_factory=dict)  # pod set -> flavors
    cluster_queue: str | None = None
    finished: bool = False
    requeue: bool = False  # evicted and done with its pods: hand the quota back


def _conditions(workload: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in (workload.get("status") or {}).get("conditions") or []}


def read_admission(queue: str, workload: Mapping[str, Any] | None) -> Admission:
    """The job's standing in `queue` as its Workload (None: not created yet) says."""
    if workload is None:
        return Admission(waiting=f"queued in LocalQueue {queue}: creating its Workload")
    conditions = _conditions(workload)
    status = workload.get("status") or {}
    admission = status.get("admission") or {}
    finished = (conditions.get("Finished") or {}).get("status") == "True"
    evicted = conditions.get("Evicted") or {}
    if evicted.get("status") == "True" and admission:
        why = f"{evicted.get('reason', EVICTED)}: {evicted.get('message', '')}".rstrip(": ")
        return Admission(evicted=f"evicted by Kueue from ClusterQueue "
                                 f"{admission.get('clusterQueue')}: {why}",
                         cluster_queue=admission.get("clusterQueue"), finished=finished)
    if (conditions.get("Admitted") or {}).get("status") == "True" and admission:
        assignments = admission.get("podSetAssignments") or []
        return Admission(
            admitted=True, cluster_queue=admission.get("clusterQueue"), finished=finished,
            counts={a["name"]: int(a.get("count") or 0) for a in assignments},
            flavors={a["name"]: sorted(set((a.get("flavors") or {}).values()))
                     for a in assignments})
    reserved = conditions.get("QuotaReserved") or {}
    why = reserved.get("message") or "waiting for Kueue to admit it"
    return Admission(waiting=f"queued in LocalQueue {queue}: {why}", finished=finished)


def requeue_status(workload: Mapping[str, Any], pods_gone: bool, now: datetime
                   ) -> dict[str, Any] | None:
    """After an eviction, once the job's pods are gone: the Workload's status giving the quota
    back and queueing it again (what Kueue's jobframework writes for its own Jobs); None while
    pods remain or nothing is to be done. Sent with the Workload's resourceVersion."""
    conditions = _conditions(workload)
    evicted = conditions.get("Evicted") or {}
    if not pods_gone or evicted.get("status") != "True" or \
            not (workload.get("status") or {}).get("admission"):
        return None
    stamp = rfc3339(now)
    generation = (workload.get("metadata") or {}).get("generation")
    reason = str(evicted.get("reason") or EVICTED)
    updates = {
        "QuotaReserved": ("False", "Pending", f"evicted ({reason}): queued again"),
        "Admitted": ("False", "NoReservation", "the job's pods stopped after its eviction"),
        "Requeued": ("True", reason, f"requeued after {reason}"),
    }
    out = [c for c in (workload.get("status") or {}).get("conditions") or []
           if c.get("type") not in updates]
    for kind, (state, why, message) in updates.items():
        before = conditions.get(kind) or {}
        out.append({"type": kind, "status": state, "reason": why, "message": message,
                    "observedGeneration": generation,
                    "lastTransitionTime": before.get("lastTransitionTime")
                    if before.get("status") == state else stamp})
    return _status_write(workload, {"admission": None, "conditions": out})


def finished_status(workload: Mapping[str, Any], succeeded: bool, message: str, now: datetime
                    ) -> dict[str, Any] | None:
    """The Workload's Finished condition once the job ended (Kueue frees the quota); None if it
    is set already."""
    if (_conditions(workload).get("Finished") or {}).get("status") == "True":
        return None
    conditions = [c for c in (workload.get("status") or {}).get("conditions") or []
                  if c.get("type") != "Finished"]
    conditions.append({"type": "Finished", "status": "True",
                       "reason": "Succeeded" if succeeded else "Failed",
                       "message": message[:1000], "lastTransitionTime": rfc3339(now),
                       "observedGeneration": (workload.get("metadata") or {}).get("generation")})
    return _status_write(workload, {"conditions": conditions})


def _status_write(workload: Mapping[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """A status patch that Kueue's newer writes win over: it carries the resourceVersion read."""
    return {"metadata": {"resourceVersion": (workload.get("metadata") or {})
                         .get("resourceVersion")}, "status": status}


def flavor_placement(flavors: Sequence[Mapping[str, Any]]
                     ) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(nodeSelector, tolerations) the admitted ResourceFlavors give the pods."""
    selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    for flavor in flavors:
        spec = flavor.get("spec") or {}
        selector.update(spec.get("nodeLabels") or {})
        tolerations.extend(t for t in spec.get("tolerations") or [] if t not in tolerations)
    return selector, tolerations


def active_differs(workload: Mapping[str, Any], suspended: bool) -> bool:
    """spec.suspend of the job is the Workload's spec.active (a suspended job holds no quota)."""
    return bool((workload.get("spec") or {}).get("active", True)) == suspended



def hold(admission: Admission) -> Hold | None:
    """Why the job's pods must not run yet (or any more); None once admitted."""
    if admission.admitted:
        return None
    if admission.evicted is not None:
        return Hold(EVICTED, admission.evicted, evicted=True)
    return Hold(QUEUED, admission.waiting or "queued")
