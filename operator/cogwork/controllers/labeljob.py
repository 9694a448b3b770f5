"""Kopf wiring for LabelJob: observe pods, resolve the model reference, call the planner, apply.

One loop per LabelJob (`runtime.follow`: no Kopf daemon, so no finalizer) runs the passes. Child
pods carry cogwork.dev/kind=LabelJob; a cache fed by their watch keeps them by (namespace, job)
(`pod_cache`), and their events wake the loop, which also wakes on its own timer. Each pass
recomputes everything from the LabelJob, its pods and (for spec.model.fromTrainJob) the
TrainJob, plus, with review rounds, the TrainJobs it created to retrain the model (labelled
cogwork.dev/labeljob=<job>; their changes wake it).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from cogwork import kube
from cogwork.api import contract
from cogwork.api.common import GROUP, VERSION
from cogwork.api.labeljob import LABELJOB_RESOURCE, LabelJob
from cogwork.api.trainjob import TRAINJOB_RESOURCE
from cogwork.controllers import queue, runtime
from cogwork.controllers.pod_cache import PodCache
from cogwork.plan import kueue, labeljob_queue
from cogwork.plan.labeljob_observe import LabelPod, observe_pod
from cogwork.plan.labeljob_reconcile import Retraining, reconcile
from cogwork.plan.labeljob_refs import ModelResolution, resolve_model
from cogwork.plan.labeljob_rounds import LABEL_LABELJOB, retrain_round
from cogwork.plan.lifecycle import TERMINAL, Hold, is_finished

log = logging.getLogger(__name__)
CONTROLLER = "labeljob"


# Child pods by (namespace, job), condensed.
PODS = PodCache[LabelPod]("LabelJob", observe_pod)


@kopf.on.event("pods", labels={contract.LABEL_KIND: "LabelJob"})
async def labeljob_pod_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
    namespace, job = PODS.update(body, deleted=type == "DELETED")
    runtime.wake(CONTROLLER, namespace, job)


@kopf.on.event(GROUP, VERSION, LABELJOB_RESOURCE.plural)  # type: ignore[arg-type]
async def labeljob_changed(type: str | None, namespace: str, name: str, body: kopf.Body,
                           **_: Any) -> None:
    runtime.object_event(CONTROLLER, type, namespace, name, body,
                         lambda latest: runtime.validated_pass(
                             LABELJOB_RESOURCE, LabelJob, namespace, name, latest,
                             lambda snapshot, job: reconcile_once(namespace, name, snapshot, job)))


@kopf.on.event(GROUP, VERSION, TRAINJOB_RESOURCE.plural,  # type: ignore[arg-type]
               labels={LABEL_LABELJOB: kopf.PRESENT})
async def retrain_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    runtime.wake(CONTROLLER, namespace, labels.get(LABEL_LABELJOB, ""))


async def resolve(job: LabelJob, namespace: str) -> tuple[ModelResolution, Retraining]:
    """Read what spec.model.fromTrainJob names and, with review rounds, the retrain TrainJobs;
    a finished LabelJob needs nothing."""
    if is_finished(job.status.conditions):
        return ModelResolution(), Retraining()  # not consulted once the job finished
    trainjob = None
    if job.spec.model.from_train_job:
        trainjob = await kube.get_custom(TRAINJOB_RESOURCE.plural, namespace,
                                         job.spec.model.from_train_job)
    retrains: dict[int, dict[str, Any]] = {}
    if job.spec.review.max_rounds > 1:
        listed = await kube.list_custom(TRAINJOB_RESOURCE.plural, namespace,
                                        f"{LABEL_LABELJOB}={job.metadata.name}")
        for item in listed:
            round_ = retrain_round(job, item["metadata"]["name"])
            if round_ is not None:
                retrains[round_] = item
    return resolve_model(job, trainjob), Retraining(trainjob, retrains)


async def reconcile_once(namespace: str, name: str, snapshot: dict[str, Any], job: LabelJob
                         ) -> float | None:
    """One pass; returns seconds until the next one, or None when the job is gone."""
    pods = PODS.get(namespace, name)
    model, retraining = await resolve(job, namespace)
    hold, workload = await queued(snapshot, job, model)
    actions = reconcile(job, pods, model, datetime.now(UTC), runtime.render_settings(),
                        retraining, hold)
    if model.kept is not None and job.status.model_from is None:
        actions.status.set(model_from=model.kept)  # a deleted TrainJob cannot move it now
    applied = await runtime.apply(LABELJOB_RESOURCE, namespace, name, snapshot, actions)
    if applied and workload is not None:
        await queue.settle("LabelJob", namespace, name, workload,
                           {**(snapshot.get("status") or {}), **actions.status.wire()},
                           job.spec.suspend,
                           pods_gone=all(p.phase in TERMINAL for p in pods))
    return runtime.pass_result(CONTROLLER, actions, applied)


async def queued(body: dict[str, Any], job: LabelJob, model: ModelResolution
                 ) -> tuple[Hold | None, dict[str, Any] | None]:
    """Kueue's say (metadata.labels names a LocalQueue), once the model is known (the pods'
    shape depends on it; until then the job waits for its model and runs nothing anyway)."""
    queue_name = kueue.queue_name(job.metadata.labels)
    ref = model.model
    if queue_name is None or ref is None:
        return None, None
    admission, found = await queue.admission(
        body, "LabelJob", queue_name, is_finished(job.status.conditions),
        lambda: labeljob_queue.pod_sets(job, ref, runtime.render_settings()))
    if isinstance(admission, Hold):
        return admission, None
    return kueue.hold(admission), found

