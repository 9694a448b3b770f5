"""Kopf wiring for Katib-engine TuneJobs: observe the Experiment, call the planner, apply.

The TuneJob daemon (controllers/tunejob.py) hands engine katib passes here. Experiments carry
the label cogwork.dev/tunejob; an index keeps them by (namespace, tunejob) and their events wake
the daemon. Kopf discovers resources once, at start-up: when Katib is installed after the
operator started, the index stays empty and each pass reads the Experiment instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from cogwork import kube
from cogwork.api.tunejob import TuneJob
from cogwork.controllers import runtime
from cogwork.plan.tunejob_trials import LABEL_TUNEJOB
from cogwork.tuning.katib_names import (
    EXPERIMENT_PLURAL,
    KATIB_GROUP,
    KATIB_VERSION,
    experiment_name,
)

CONTROLLER = "tunejob"
ExperimentIndex = kopf.Index[tuple[str, str], dict[str, Any]]


@kopf.index(KATIB_GROUP, KATIB_VERSION, EXPERIMENT_PLURAL,  # type: ignore[arg-type]
            labels={LABEL_TUNEJOB: kopf.PRESENT})
def tunejob_experiments(namespace: str, labels: dict[str, str], body: kopf.Body,
                        **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels.get(LABEL_TUNEJOB, "")): dict(body)}


@kopf.on.event(KATIB_GROUP, KATIB_VERSION, EXPERIMENT_PLURAL,  # type: ignore[arg-type]
               labels={LABEL_TUNEJOB: kopf.PRESENT})
async def experiment_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    runtime.wake(CONTROLLER, namespace, labels.get(LABEL_TUNEJOB, ""))


async def observe(namespace: str, job: TuneJob,
                  index: ExperimentIndex | None) -> tuple[dict[str, Any] | None, bool]:
    """The Experiment (None if absent) and whether Katib's CRD is served."""
    name = experiment_name(job)
    indexed: list[dict[str, Any]] = (list(index.get((namespace, job.metadata.name), []))
                                     if index is not None else [])
    for body in indexed:
        if (body.get("metadata") or {}).get("name") == name:
            return body, True
    try:
        found = await kube.get_namespaced_object(KATIB_GROUP, KATIB_VERSION,
                                                 EXPERIMENT_PLURAL, namespace, name)
    except kube.NotServed:
        return None, False
    return found, True


async def reconcile_once(namespace: str, name: str, body: dict[str, Any], job: TuneJob,
                         index: ExperimentIndex | None) -> float:
    """One pass for a Katib-engine TuneJob; returns seconds until the next one."""
    from cogwork.tuning import katib_status  # Katib's API models: only once a job uses Katib

    experiment, installed = await observe(namespace, job, index)
    now = datetime.now(UTC)
    actions = katib_status.reconcile(job, experiment, installed, now)
    try:
        await create_children(namespace, body, actions.create)
    except kube.NotServed:
        actions = katib_status.reconcile(job, None, False, now)
    except kube.Rejected as err:
        actions = katib_status.rejected(job, str(err), now)
    if actions.patch_experiment:
        try:
            await kube.patch_namespaced_object(KATIB_GROUP, KATIB_VERSION, EXPERIMENT_PLURAL,
                                               namespace, experiment_name(job),
                                               actions.patch_experiment)
        except kube.Rejected as err:
            actions.events.append(("Warning", "BudgetNotApplied", str(err)[:1000]))
    if runtime.status_changed(body.get("status") or {}, actions.status):
        await kube.patch_custom_status("tunejobs", namespace, name, actions.status)
    for kind, reason, message in actions.events:
        kopf.event(body, type=kind, reason=reason, message=message)  # type: ignore[arg-type]
    return actions.requeue_after


async def create_children(namespace: str, owner: dict[str, Any],
                          children: list[dict[str, Any]]) -> None:
    """Create in order (the template ConfigMap before the Experiment Katib validates against
    it); a 409 means a previous pass created it already."""
    for child in children:
        kopf.adopt(child, owner=owner)  # type: ignore[arg-type]
        if child["apiVersion"] == f"{KATIB_GROUP}/{KATIB_VERSION}":
            await kube.create_namespaced_object(KATIB_GROUP, KATIB_VERSION, EXPERIMENT_PLURAL,
                                                namespace, child)
        else:
            await kube.create(namespace, child)
