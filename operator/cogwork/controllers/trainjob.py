"""Kopf wiring for TrainJob: observe, call the pure planner, apply its actions. Nothing else.

One daemon per TrainJob runs the reconcile loop. Pod changes wake it (through an in-memory
event, a cache only: each pass recomputes everything from the TrainJob and its pods), and it also
wakes on its own schedule, so a missed watch event delays a pass, never loses it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from cogwork import kube, metrics
from cogwork.api.common import GROUP, VERSION, is_condition_true
from cogwork.api.trainjob import TrainJob
from cogwork.controllers import runtime
from cogwork.plan.labeljob_refs import DataResolution, resolve_dataset, waiting_for_data_status
from cogwork.plan.trainjob import observe_pod
from cogwork.plan.trainjob_reconcile import Actions, reconcile

log = logging.getLogger(__name__)
KIND_LABEL = "cogwork.dev/kind"
JOB_LABEL = "cogwork.dev/job-name"
CONTROLLER = "trainjob"
STALE_RETRY_S = 0.3  # the watch delivers our own or a report's write within milliseconds
DATA_RECHECK_S = 5.0  # how often a TrainJob waiting for a LabelJob's dataset looks again


@kopf.index("pods", labels={KIND_LABEL: "TrainJob"})  # type: ignore[arg-type]
def trainjob_pods(namespace: str, labels: dict[str, str], body: kopf.Body,
                  **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Child pods by (namespace, job): what each pass observes, without listing the API."""
    return {(namespace, labels.get(JOB_LABEL, "")): dict(body)}


@kopf.on.event("pods", labels={KIND_LABEL: "TrainJob"})  # type: ignore[arg-type]
async def pod_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    runtime.wake(CONTROLLER, namespace, labels.get(JOB_LABEL, ""))


@kopf.on.event(GROUP, VERSION, "trainjobs")  # type: ignore[arg-type]
async def trainjob_changed(namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
    if runtime.spec_changed(body):
        runtime.wake(CONTROLLER, namespace, name)


@kopf.daemon(GROUP, VERSION, "trainjobs", cancellation_timeout=10.0)  # type: ignore[arg-type]
async def run_trainjob(namespace: str, name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                       trainjob_pods: kopf.Index[tuple[str, str], dict[str, Any]],
                       **_: Any) -> None:
    await runtime.run_daemon(CONTROLLER, namespace, name, stopped,
                             lambda: reconcile_once(namespace, name, body, trainjob_pods))


async def reconcile_once(namespace: str, name: str, body: kopf.Body,
                         index: kopf.Index[tuple[str, str], dict[str, Any]]) -> float | None:
    """One pass; returns seconds until the next one, or None when the job is gone."""
    snapshot = dict(body)
    try:
        job = TrainJob.model_validate(snapshot)
    except ValidationError as err:
        return await runtime.report_invalid("trainjobs", namespace, name, snapshot, err)
    data = await resolve_data(job, namespace)
    if data.waiting is not None:
        return await wait_for_data(namespace, name, snapshot, job, data.waiting)
    pods = [observe_pod(p) for p in index.get((namespace, name), [])]
    actions = reconcile(job, pods, datetime.now(UTC), runtime.render_settings(), data.location)
    if not await apply(namespace, name, snapshot, actions):
        metrics.RECONCILE_TOTAL.labels(CONTROLLER, "conflict").inc()
        return STALE_RETRY_S
    metrics.RECONCILE_TOTAL.labels(CONTROLLER, "ok").inc()
    return None if actions.delete_job else actions.requeue_after


async def resolve_data(job: TrainJob, namespace: str) -> DataResolution:
    """Read the LabelJob spec.data.fromLabelJob names; a finished TrainJob renders nothing."""
    data = job.spec.data
    if data is None or data.from_label_job is None or \
            any(is_condition_true(job.status.conditions, t) for t in ("Succeeded", "Failed")):
        return DataResolution()
    labeljob = await asyncio.to_thread(kube.get_custom, "labeljobs", namespace,
                                       data.from_label_job)
    return resolve_dataset(job, labeljob)


async def wait_for_data(namespace: str, name: str, body: dict[str, Any], job: TrainJob,
                        message: str) -> float:
    """Nothing starts before the data exists: say so in a condition and look again soon."""
    status = waiting_for_data_status(job, message, datetime.now(UTC))
    if runtime.status_changed(body.get("status") or {}, status):
        await asyncio.to_thread(kube.patch_custom_status, "trainjobs", namespace, name, status)
    return DATA_RECHECK_S


async def apply(namespace: str, name: str, body: dict[str, Any], actions: Actions) -> bool:
    """Carry out one pass's decisions; False when the status write found our view stale."""
    for child in actions.create:
        kopf.adopt(child, owner=body)  # type: ignore[arg-type]
        if await asyncio.to_thread(kube.create, namespace, child):
            metrics.POD_ACTIONS.labels("create").inc()
    for pod, pod_annotations in actions.annotate_pods.items():
        await asyncio.to_thread(kube.patch_pod_annotations, namespace, pod, pod_annotations)
    for pod in actions.delete_pods:
        if await asyncio.to_thread(kube.delete_pod, namespace, pod):
            metrics.POD_ACTIONS.labels("delete").inc()
    if runtime.status_changed(body.get("status") or {}, actions.status):
        # Optimistic concurrency: restarts and activeNodes are counted from the status this
        # pass read, so a write based on a stale view (our previous write or a progress report
        # not yet in the watch cache) is refused and the pass is redone on a fresh view.
        version = body.get("metadata", {}).get("resourceVersion")
        try:
            await asyncio.to_thread(kube.patch_custom_status, "trainjobs", namespace, name,
                                    actions.status, version)
        except kube.Conflict:
            log.debug("%s/%s changed under this pass; redoing it", namespace, name)
            return False
    for event in actions.events:
        kopf.event(body, type=event.type, reason=event.reason,  # type: ignore[arg-type]
                   message=event.message)
    if actions.delete_job:
        kopf.info(body, reason="TTLExpired",  # type: ignore[arg-type]
                  message="spec.ttlSecondsAfterFinished passed")
        await asyncio.to_thread(kube.delete_custom, "trainjobs", namespace, name)
    return True
