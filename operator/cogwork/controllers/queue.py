"""Kueue's Workloads for our jobs (plan/kueue.py decides; this reads and writes them).

Shared by the kinds that run pods under a queue. A Workload's changes (admission, eviction) wake
the job's loop; everything else is read again on each pass, so a missed event only delays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import kopf

from cogwork import kube
from cogwork.api import contract
from cogwork.controllers import runtime
from cogwork.plan import kueue
from cogwork.plan.lifecycle import TERMINAL, Hold

log = logging.getLogger(__name__)
KUEUE_MISSING = "KueueNotInstalled"


@kopf.on.event(kueue.GROUP, kueue.VERSION, kueue.WORKLOADS,  # type: ignore[arg-type]
               labels={contract.LABEL_KIND: kopf.PRESENT, contract.LABEL_JOB_NAME: kopf.PRESENT})
async def workload_changed(namespace: str, labels: Mapping[str, str], **_: Any) -> None:
    # The job kind's controller loop is named after the kind (runtime.follow).
    runtime.wake(labels[contract.LABEL_KIND].lower(), namespace, labels[contract.LABEL_JOB_NAME])


def not_installed(queue: str) -> Hold:
    return Hold(KUEUE_MISSING, f"metadata.labels[{kueue.QUEUE_LABEL}]={queue}: Kueue is not "
                               f"installed ({kueue.WORKLOADS}.{kueue.API_VERSION} is not "
                               "served); the job waits for it")


async def workload(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The job's Workload; kube.NotServed when Kueue is not installed."""
    return await kube.get_namespaced_object(kueue.GROUP, kueue.VERSION, kueue.WORKLOADS,
                                            namespace, kueue.workload_name(kind, name))


async def create_workload(owner: Mapping[str, Any], kind: str, queue: str,
                          pod_sets: Sequence[kueue.PodSet]) -> dict[str, Any] | None:
    """Create the job's Workload (owned by it, so it goes with it) and read it back."""
    metadata = owner.get("metadata") or {}
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    labels = metadata.get("labels") or {}
    priority_class = labels.get(kueue.PRIORITY_LABEL)
    priority = None
    if priority_class:
        found = await kube.get_cluster_object(kueue.GROUP, kueue.VERSION,
                                              kueue.PRIORITY_CLASSES, priority_class)
        priority = int((found or {}).get("value") or 0)
    body = kueue.workload(kind, name, str(metadata.get("uid")), queue, pod_sets,
                          priority_class, priority,
                          active=not (owner.get("spec") or {}).get("suspend", False))
    kopf.adopt(body, owner=owner)  # type: ignore[arg-type]
    if await kube.create_namespaced_object(kueue.GROUP, kueue.VERSION, kueue.WORKLOADS,
                                           namespace, body):
        log.info("%s %s/%s: created Workload %s in LocalQueue %s", kind, namespace, name,
                 body["metadata"]["name"], queue)
    return await workload(kind, namespace, name)


async def admission(body: Mapping[str, Any], kind: str, queue: str, finished: bool,
                    pod_sets: Callable[[], Sequence[kueue.PodSet]]
                    ) -> tuple[kueue.Admission | Hold, dict[str, Any] | None]:
    """The job's Workload (created with `pod_sets()` on its first pass) and what it says; a
    Hold instead when Kueue is not installed."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    try:
        found = await workload(kind, namespace, name)
    except kube.NotServed:
        return not_installed(queue), None
    if found is None and not finished:
        found = await create_workload(body, kind, queue, pod_sets())
    return kueue.read_admission(queue, found), found


async def placement(flavor_names: Iterable[str]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """nodeSelector and tolerations of the admitted ResourceFlavors."""
    flavors = [f for n in flavor_names
               if (f := await kube.get_cluster_object(kueue.GROUP, kueue.VERSION,
                                                      kueue.RESOURCE_FLAVORS, n)) is not None]
    return kueue.flavor_placement(flavors)


async def settle(kind: str, namespace: str, name: str, found: Mapping[str, Any],
                 status: Mapping[str, Any], suspended: bool, pods_gone: bool) -> None:
    """After a pass of the job: the Workload follows it (Finished once the job ended, its quota
    handed back once an evicted job's pods are gone, spec.active = not spec.suspend)."""
    now = datetime.now(UTC)
    write = (kueue.GROUP, kueue.VERSION, kueue.WORKLOADS, namespace, found["metadata"]["name"])
    phase = status.get("phase")
    if phase in TERMINAL:
        ended: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == phase), {})
        patch = kueue.finished_status(found, phase == "Succeeded",
                                      str(ended.get("message") or phase), now)
        if patch is not None:
            await kube.patch_namespaced_object(*write, patch, subresource="status")
        return
    patch = kueue.requeue_status(found, pods_gone, now)
    if patch is not None and await kube.patch_namespaced_object(*write, patch,
                                                                 subresource="status"):
        log.info("%s %s/%s: evicted and stopped; Workload requeued", kind, namespace, name)
    if kueue.active_differs(found, suspended):
        await kube.patch_namespaced_object(*write, {"spec": {"active": not suspended}})
