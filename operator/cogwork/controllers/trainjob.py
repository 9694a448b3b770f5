"""Kopf wiring for TrainJob: observe, call the pure planner, apply its actions. Nothing else.

One loop per TrainJob (`runtime.follow`, started by the job's watch events; no Kopf daemon, so
no finalizer) runs the reconcile passes. Pod changes wake it (through an in-memory
event, a cache only: each pass recomputes everything from the TrainJob and its pods), and it also
wakes on its own schedule, so a missed watch event delays a pass, never loses it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from cogwork import kube
from cogwork.api import contract
from cogwork.api.common import GROUP, VERSION, TunedFrom, to_wire
from cogwork.api.labeljob import LABELJOB_RESOURCE
from cogwork.api.trainjob import TRAINJOB_RESOURCE, TrainJob, TrainJobSpec
from cogwork.api.tunejob import TUNEJOB_RESOURCE
from cogwork.controllers import queue, runtime
from cogwork.controllers.pod_cache import PodCache
from cogwork.plan import kueue, trainjob_queue
from cogwork.plan.labeljob_refs import WAITING_FOR_DATA, DataResolution, resolve_dataset
from cogwork.plan.lifecycle import Event, Hold, is_finished
from cogwork.plan.torchx_app import DataLocation
from cogwork.plan.trainjob_observe import PodObservation, observe_pod
from cogwork.plan.trainjob_reconcile import reconcile
from cogwork.plan.trainjob_render import expected_pod_names, job_labels
from cogwork.plan.tunejob_refs import (
    REFERENCE_FAILED,
    WAITING_FOR_PARAMETERS,
    TunedResolution,
    describe,
    resolve_tuned,
    tuned_spec,
)

log = logging.getLogger(__name__)
CONTROLLER = "trainjob"
PLURAL = TRAINJOB_RESOURCE.plural


# Child pods by (namespace, job): condensed observations, not pod bodies (a few KB each).
PODS = PodCache[PodObservation]("TrainJob", observe_pod)


@kopf.on.event("pods", labels={contract.LABEL_KIND: "TrainJob"})
async def pod_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
    namespace, job = PODS.update(body, deleted=type == "DELETED")
    runtime.wake(CONTROLLER, namespace, job)


@kopf.on.event(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
async def trainjob_changed(type: str | None, namespace: str, name: str, body: kopf.Body,
                           **_: Any) -> None:
    runtime.object_event(CONTROLLER, type, namespace, name, body,
                         lambda latest: runtime.validated_pass(
                             TRAINJOB_RESOURCE, TrainJob, namespace, name, latest,
                             lambda snapshot, job: reconcile_once(namespace, name, snapshot, job)))


async def reconcile_once(namespace: str, name: str, snapshot: dict[str, Any], job: TrainJob
                         ) -> float | None:
    """One pass; returns seconds until the next one, or None when the job is gone."""
    tuned = await resolve_parameters(job, namespace)
    if tuned.failed is not None:
        return await fail_on_reference(namespace, name, snapshot, job, tuned.failed)
    if tuned.waiting is not None:
        return await runtime.report_waiting(TRAINJOB_RESOURCE, namespace, name, snapshot, job,
                                            WAITING_FOR_PARAMETERS, tuned.waiting)
    effective = job
    if tuned.tuned is not None:
        try:
            effective = with_tuned(job, tuned.tuned)
        except ValidationError as err:
            return await fail_on_reference(namespace, name, snapshot, job,
                                           f"spec.fromTuneJob={job.spec.from_tune_job}: "
                                           f"{runtime.invalid_message(err)}")
    data = await resolve_data(effective, namespace)
    if data.failed is not None:
        return await fail_on_reference(namespace, name, snapshot, job, data.failed)
    if data.waiting is not None:
        return await runtime.report_waiting(TRAINJOB_RESOURCE, namespace, name, snapshot, job,
                                            WAITING_FOR_DATA, data.waiting)
    queue_name, hold, workload = kueue.queue_name(job.metadata.labels), None, None
    if queue_name is not None:
        effective, hold, workload = await queued(snapshot, effective, data.location, queue_name)
    pods = await observed_pods(namespace, name, effective)
    actions = reconcile(effective, pods, datetime.now(UTC), runtime.render_settings(),
                        data.location, data.gone, hold)
    if data.kept is not None and job.status.data_from is None:
        actions.status.set(data_from=data.kept)  # a deleted LabelJob cannot move it now
    if tuned.tuned is not None and job.status.tuned_from is None:
        actions.status.set(tuned_from=tuned.tuned)  # from now on the job never reads it again
        actions.events.append(Event("Normal", "ParametersResolved", describe(tuned.tuned)))
    applied = await runtime.apply(TRAINJOB_RESOURCE, namespace, name, snapshot, actions,
                                  groups=store_then_workers)
    if applied and workload is not None:
        await queue.settle("TrainJob", namespace, name, workload,
                           {**(snapshot.get("status") or {}), **actions.status.wire()},
                           job.spec.suspend, pods_gone=not pods)
    return runtime.pass_result(CONTROLLER, actions, applied)


async def queued(body: dict[str, Any], job: TrainJob, resolved_data: DataLocation | None,
                 queue_name: str) -> tuple[TrainJob, Hold | None, dict[str, Any] | None]:
    """Kueue's say on this pass (metadata.labels names a LocalQueue): the job as admitted, what
    holds it suspended until then, and its Workload (created on the first pass)."""
    admission, found = await queue.admission(
        body, "TrainJob", queue_name, is_finished(job.status.conditions),
        lambda: trainjob_queue.pod_sets(job, runtime.render_settings(), resolved_data))
    if isinstance(admission, Hold):
        return job, admission, None
    if admission.admitted:
        selector, tolerations = await queue.placement(
            admission.flavors.get(trainjob_queue.WORKERS_POD_SET, ()))
        job = trainjob_queue.admitted_job(job, admission, selector, tolerations)
    return job, kueue.hold(admission), found


async def resolve_parameters(job: TrainJob, namespace: str) -> TunedResolution:
    """spec.fromTuneJob: kept in status once resolved; read from the TuneJob until then."""
    source = job.spec.from_tune_job
    if source is None:
        return TunedResolution()
    if job.status.tuned_from is not None:
        return TunedResolution(job.status.tuned_from)
    if is_finished(job.status.conditions):
        return TunedResolution()
    tunejob = await kube.get_custom(TUNEJOB_RESOURCE.plural, namespace, source)
    return resolve_tuned(f"spec.fromTuneJob={source}", ("TrainJob", job.metadata.name), tunejob)


def with_tuned(job: TrainJob, tuned: TunedFrom) -> TrainJob:
    """The job as it runs: its spec with the tuned values written in (ValidationError if a
    value does not fit this job's field)."""
    spec = TrainJobSpec.model_validate(tuned_spec(to_wire(job.spec), tuned))
    return job.model_copy(update={"spec": spec})


async def observed_pods(namespace: str, name: str, job: TrainJob) -> list[PodObservation]:
    """The job's pods from the watch cache, unless it lacks one the status says exists: then
    from the API. The watch may not have delivered a pod this operator just created, and the
    planner would read a missing pod as a lost one (a restart that never happened)."""
    pods = PODS.get(namespace, name)
    if expected_pod_names(job) <= {pod.name for pod in pods}:
        return pods
    selector = ",".join(f"{k}={v}" for k, v in job_labels(job).items())
    return [observe_pod(pod) for pod in await kube.list_pods(namespace, selector)]


async def resolve_data(job: TrainJob, namespace: str) -> DataResolution:
    """Read the LabelJob spec.data.fromLabelJob names; a finished TrainJob renders nothing."""
    data = job.spec.data
    if data is None or data.from_label_job is None or is_finished(job.status.conditions):
        return DataResolution()
    labeljob = await kube.get_custom(LABELJOB_RESOURCE.plural, namespace, data.from_label_job)
    return resolve_dataset(job, labeljob)


async def fail_on_reference(namespace: str, name: str, body: dict[str, Any], job: TrainJob,
                            message: str) -> float:
    """A reference that can never resolve (it failed, a cycle) fails the job, naming it."""
    return await runtime.report_failed(TRAINJOB_RESOURCE, namespace, name, body,
                                       REFERENCE_FAILED, message, job.status.conditions)


def store_then_workers(children: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The Service, claim and store pod first, then the workers, each group at once: two round
    trips for a new job instead of one per child. Workers mount the claim, and a store created
    after a worker would mark that worker's failure as the store's (see check_failures)."""
    def is_worker(child: dict[str, Any]) -> bool:
        role = (child["metadata"].get("labels") or {}).get(contract.LABEL_ROLE)
        return bool(child["kind"] == "Pod" and role == contract.ROLE_WORKER)

    return [[c for c in children if not is_worker(c)], [c for c in children if is_worker(c)]]
