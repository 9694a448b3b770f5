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
from cogwork.api.tunejob import TUNEJOB_RESOURCE, TuneJob
from cogwork.controllers import runtime
from cogwork.plan.lifecycle import Event
from cogwork.plan.tunejob_katib_names import (
    EXPERIMENT_PLURAL,
    KATIB_GROUP,
    KATIB_VERSION,
    experiment_name,
)
from cogwork.plan.tunejob_observe import LABEL_TUNEJOB

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
                         index: ExperimentIndex | None) -> float | None:
    """One pass for a Katib-engine TuneJob; returns seconds until the next one (None: gone)."""
    from cogwork.plan import (
        tunejob_katib_reconcile as katib_status,  # Katib's API models: only once a job uses Katib
    )

    experiment, installed = await observe(namespace, job, index)
    now = datetime.now(UTC)
    actions = katib_status.reconcile(job, experiment, installed, now)
    try:
        applied = await runtime.apply(TUNEJOB_RESOURCE, namespace, name, body, actions)
    except kube.NotServed:
        actions = katib_status.reconcile(job, None, False, now)
        applied = await runtime.apply(TUNEJOB_RESOURCE, namespace, name, body, actions)
    except kube.Rejected as err:
        # A budget change Katib's webhook refused: the search goes on with the old one. (A
        # refused Experiment is any refused child: the Created condition says why.)
        actions.patch.clear()
        actions.create.clear()
        actions.events.append(Event("Warning", "BudgetNotApplied", str(err)[:1000]))
        applied = await runtime.apply(TUNEJOB_RESOURCE, namespace, name, body, actions)
    return runtime.pass_result(CONTROLLER, actions, applied)
