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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from cogwork import kube, metrics
from cogwork.api import contract
from cogwork.api.common import GROUP, VERSION, is_condition_true
from cogwork.api.labeljob import LabelJob
from cogwork.controllers import runtime
from cogwork.controllers.pod_cache import PodCache
from cogwork.plan.labeljob import (
    TERMINAL,
    Actions,
    LabelPod,
    Retraining,
    observe_pod,
    reconcile,
)
from cogwork.plan.labeljob_refs import ModelResolution, resolve_model
from cogwork.plan.labeljob_rounds import LABEL_LABELJOB, retrain_round

log = logging.getLogger(__name__)
CONTROLLER = "labeljob"


# Child pods by (namespace, job), condensed.
PODS = PodCache[LabelPod]("LabelJob", observe_pod)


@kopf.on.event("pods", labels={contract.LABEL_KIND: "LabelJob"})
async def labeljob_pod_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
    namespace, job = PODS.update(body, deleted=type == "DELETED")
    runtime.wake(CONTROLLER, namespace, job)


@kopf.on.event(GROUP, VERSION, "labeljobs")  # type: ignore[arg-type]
async def labeljob_changed(type: str | None, namespace: str, name: str, body: kopf.Body,
                           **_: Any) -> None:
    runtime.object_event(CONTROLLER, type, namespace, name, body,
                         lambda latest: reconcile_once(namespace, name, latest))


@kopf.on.event(GROUP, VERSION, "trainjobs",  # type: ignore[arg-type]
               labels={LABEL_LABELJOB: kopf.PRESENT})
async def retrain_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    runtime.wake(CONTROLLER, namespace, labels.get(LABEL_LABELJOB, ""))


async def resolve(job: LabelJob, namespace: str) -> tuple[ModelResolution, Retraining]:
    """Read what spec.model.fromTrainJob names and, with review rounds, the retrain TrainJobs;
    a finished LabelJob needs nothing."""
    if any(is_condition_true(job.status.conditions, t) for t in TERMINAL):
        return ModelResolution(), Retraining()  # not consulted once the job finished
    trainjob = None
    if job.spec.model.from_train_job:
        trainjob = await kube.get_custom("trainjobs", namespace, job.spec.model.from_train_job)
    retrains: dict[int, dict[str, Any]] = {}
    if job.spec.review.max_rounds > 1:
        listed = await kube.list_custom("trainjobs", namespace,
                                        f"{LABEL_LABELJOB}={job.metadata.name}")
        for item in listed:
            round_ = retrain_round(job, item["metadata"]["name"])
            if round_ is not None:
                retrains[round_] = item
    return resolve_model(job, trainjob), Retraining(trainjob, retrains)


async def reconcile_once(namespace: str, name: str, body: Mapping[str, Any]) -> float | None:
    """One pass; returns seconds until the next one, or None when the job is gone."""
    snapshot = dict(body)
    try:
        job = LabelJob.model_validate(snapshot)
    except ValidationError as err:
        return await runtime.report_invalid("labeljobs", namespace, name, snapshot, err)
    pods = PODS.get(namespace, name)
    model, retraining = await resolve(job, namespace)
    actions = reconcile(job, pods, model, datetime.now(UTC), runtime.render_settings(),
                        retraining)
    await apply(namespace, name, snapshot, actions)
    metrics.RECONCILE_TOTAL.labels(CONTROLLER, "ok").inc()
    return None if actions.delete_job else actions.requeue_after


async def apply(namespace: str, name: str, body: dict[str, Any], actions: Actions) -> None:
    await runtime.create_children(namespace, body, ([child] for child in actions.create))
    for pod in actions.delete_pods:
        if await kube.delete_pod(namespace, pod):
            metrics.POD_ACTIONS.labels("delete").inc()
    if runtime.status_changed(body.get("status") or {}, actions.status):
        await kube.patch_custom_status("labeljobs", namespace, name, actions.status)
    for kind, reason, message in actions.events:
        kopf.event(body, type=kind, reason=reason, message=message)  # type: ignore[arg-type]
    if actions.delete_job:
        kopf.info(body, reason="TTLExpired",  # type: ignore[arg-type]
                  message="spec.ttlSecondsAfterFinished passed")
        await kube.delete_custom("labeljobs", namespace, name)
